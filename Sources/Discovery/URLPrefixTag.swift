// fabio's route tags, which Consul users already write on their services:
//
//     urlprefix-api.example.com/v1          host and path prefix
//     urlprefix-/static strip=/static       any host; the prefix is removed before forwarding
//     urlprefix-old.example.com/ redirect=301,https://new.example.com$path
//
// The tag is the prefix, then `host/path` up to the first blank, then options separated
// by blanks (fabio's `parseURLPrefixTag` and `routecmd`). A pure function: the route
// source decides what to do with a tag it cannot use (log it once, skip it, keep the
// service's other routes).
public import Balancer

public enum URLPrefixTag {
    /// What one route tag asks for; the service is the one carrying the tag.
    public struct Route: Sendable, Equatable, Hashable {
        public var host: String?
        public var pathPrefix: String
        public var strip: String?
        public var redirect: RouteRedirect?

        public init(host: String?, pathPrefix: String, strip: String? = nil, redirect: RouteRedirect? = nil) {
            self.host = host
            self.pathPrefix = pathPrefix
            self.strip = strip
            self.redirect = redirect
        }

        public func route(to service: String) -> ServiceRoute {
            ServiceRoute(host: host, pathPrefix: pathPrefix, service: service, strip: strip, redirect: redirect)
        }
    }

    /// A tag with the prefix that balancerd cannot turn into a route; `reason` says why,
    /// for the one log line it gets.
    public struct Unsupported: Error, Sendable, Equatable, CustomStringConvertible {
        public var reason: String
        public init(_ reason: String) { self.reason = reason }
        public var description: String { reason }
    }

    /// nil when `tag` does not start with `prefix` (an ordinary tag, nothing to say about
    /// it); otherwise the route, or why there is none. Like fabio, blanks around the tag
    /// are ignored and the prefix is case-sensitive.
    public static func parse(_ tag: String, prefix: String) -> Result<Route, Unsupported>? {
        let trimmed = tag.trimmingBlanks
        guard !prefix.isEmpty, trimmed.hasPrefix(prefix) else { return nil }
        let fields = trimmed.dropFirst(prefix.count).split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard let target = fields.first else { return .failure(Unsupported("no host/path after the prefix")) }
        do throws(Unsupported) {
            var route = try Self.target(target)
            try Self.apply(options: fields.dropFirst(), to: &route)
            return .success(route)
        } catch {
            return .failure(error)
        }
    }

    /// `host/path`, `/path` or `host/`.
    private static func target(_ text: Substring) throws(Unsupported) -> Route {
        if text.hasPrefix(":") {
            throw Unsupported("TCP routes (urlprefix-:PORT) are not supported")
        }
        guard let slash = text.firstIndex(of: "/") else {
            throw Unsupported("'\(text)' has no '/' (write host/, host/path or /path)")
        }
        if text.contains("$") {
            // fabio expands $VAR from its own environment; a route that depends on the
            // balancer's environment would differ between balancerd instances.
            throw Unsupported("variables ($NAME) are not expanded")
        }
        let path = String(text[slash...])
        if path.contains(where: { $0 == "?" || $0 == "#" }) {
            throw Unsupported("a path prefix cannot contain '?' or '#'")
        }
        return Route(host: try host(text[..<slash]), pathPrefix: path)
    }

    /// Lowercased, without a trailing dot; nil for none. `*.example.com` is kept as written.
    static func host(_ raw: Substring) throws(Unsupported) -> String? {
        if raw.isEmpty { return nil }
        var host = raw.lowercased()
        if host.hasSuffix(".") { host.removeLast() }
        if host.contains(":") {
            throw Unsupported("host '\(raw)' has a port (routes match the host name only)")
        }
        var labels = host[...]
        if labels.hasPrefix("*.") { labels = labels.dropFirst(2) }
        let valid = !labels.isEmpty && !labels.hasPrefix(".") && !labels.contains("..")
            && labels.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") }
        guard valid else {
            throw Unsupported("'\(raw)' is not a host name (letters, digits, '-', '.', and '*.' only at the start)")
        }
        return host
    }

    private static func apply(options: ArraySlice<Substring>, to route: inout Route) throws(Unsupported) {
        var seen: Set<Substring> = []
        for option in options {
            let key = option.split(separator: "=", maxSplits: 1).first ?? option
            guard seen.insert(key).inserted else { throw Unsupported("option '\(key)' given twice") }
            if option.hasPrefix("strip=") {
                let prefix = option.dropFirst("strip=".count)
                guard prefix.hasPrefix("/") else { throw Unsupported("strip=\(prefix): the prefix must start with '/'") }
                route.strip = String(prefix)
            } else if option.hasPrefix("redirect=") {
                route.redirect = try redirect(option.dropFirst("redirect=".count))
            } else if option == "proto=http" {
                continue  // fabio's default: plain HTTP to the instance
            } else {
                throw Unsupported("option '\(option)' is not supported (balancerd knows strip= and redirect=)")
            }
        }
    }

    /// `CODE,URL`, CODE from 300 to 399 as fabio requires.
    private static func redirect(_ value: Substring) throws(Unsupported) -> RouteRedirect {
        guard let comma = value.firstIndex(of: ","),
              let code = Int(value[..<comma]), value[..<comma].allSatisfy(\.isASCII), (300...399).contains(code) else {
            throw Unsupported("redirect=\(value): expected redirect=CODE,URL with CODE from 300 to 399")
        }
        let location = value[value.index(after: comma)...]
        guard !location.isEmpty else { throw Unsupported("redirect=\(value): no URL after the code") }
        return RouteRedirect(status: code, location: String(location))
    }
}

extension String {
    fileprivate var trimmingBlanks: Substring {
        var text = self[...]
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}
