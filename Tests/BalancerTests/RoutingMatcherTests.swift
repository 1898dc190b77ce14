import TestSupport
import XCTest
@testable import Balancer

/// The matcher: haproxy's string matches and the discovered-route order, as a table of
/// cases, and as a property against a naive implementation written from the manual.
final class RoutingMatcherTests: XCTestCase {
    /// Runs `body` with a RequestView over `method host path` (host nil: no Host field).
    private func withRequest<R>(method: String = "GET", host: String?, path: String?, source: String = "127.0.0.1",
                                _ body: (RequestView) -> R) -> R {
        let text = Array((method + "\u{0}" + (host ?? "") + "\u{0}" + (path ?? "")).utf8)
        return text.withUnsafeBytes { bytes in
            let m = method.utf8.count
            let h = (host?.utf8.count ?? 0)
            let pathStart = m + 1 + h + 1
            let view = RequestView(
                bytes: bytes, method: 0..<m, methodKind: HTTPMethod(method),
                host: host == nil ? nil : (m + 1)..<(m + 1 + h),
                path: path == nil ? nil : UnsafeRawBufferPointer(rebasing: bytes[pathStart..<bytes.count]),
                source: IPPattern.address(of: SocketAddress(numericHost: source, port: 1)!))
            return body(view)
        }
    }

    private func matches(_ test: ACLTest, method: String = "GET", host: String? = nil, path: String? = nil,
                         source: String = "127.0.0.1") -> Bool {
        let compiled = CompiledTest(test)
        return withRequest(method: method, host: host, path: path, source: source) { compiled.matches($0) }
    }

    func testStringMatchesTable() {
        let t = ACLTest.init(criterion:ignoreCase:explicitMatch:values:)
        // (test, host, path, expected)
        let cases: [(ACLTest, String?, String?, Bool)] = [
            (t(.host, true, nil, ["api.example.com"]), "API.example.com", nil, true),
            (t(.host, false, nil, ["api.example.com"]), "API.example.com", nil, false),
            // hdr(host) is the whole value: the port is part of it.
            (t(.host, true, nil, ["api.example.com"]), "api.example.com:8080", nil, false),
            (t(.host, true, nil, ["api.example.com"]), "api.example.com.", nil, false),
            (t(.requestHost, true, nil, ["a.com"]), "b.com, a.com", nil, true),
            (t(.hostBegins, true, nil, ["api."]), "api.example.com", nil, true),
            (t(.hostEnds, true, nil, [".example.com"]), "x.example.com:80", nil, false),
            (t(.hostDomain, true, nil, ["example.com"]), "www.example.com:80", nil, true),
            (t(.hostDomain, true, nil, ["example"]), "www.example.com", nil, true),
            (t(.hostDomain, true, nil, ["ample"]), "www.example.com", nil, false),
            (t(.hostDomain, true, nil, [".www."]), "www.example.com", nil, true),
            (t(.host, true, .domain, ["dc-eu.example:80"]), "http://www1.dc-eu.example.com:80/blah", nil, false),
            (t(.path, false, nil, ["/a"]), nil, "/a", true),
            (t(.path, false, nil, ["/a"]), nil, "/A", false),
            (t(.path, true, nil, ["/a"]), nil, "/A", true),
            (t(.pathBegins, false, nil, ["/api"]), nil, "/apix", true),
            (t(.pathEnds, false, nil, [".png"]), nil, "/x/logo.png", true),
            (t(.pathDirectory, false, nil, ["images/png"]), nil, "/images/png/logo/32x32.png", true),
            (t(.pathDirectory, false, nil, ["png"]), nil, "/images/png/logo/32x32.png", true),
            (t(.pathDirectory, false, nil, ["32x32"]), nil, "/images/png/logo/32x32.png", false),
            (t(.pathDirectory, false, nil, ["/logo/32x32.png"]), nil, "/images/png/logo/32x32.png", true),
            (t(.pathDirectory, false, nil, ["/"]), nil, "/", false),
            (t(.pathBegins, false, .substring, ["pi"]), nil, "/api", true),
            (t(.path, false, nil, ["/a"]), nil, nil, false),
            (t(.host, false, nil, ["a"]), nil, "/", false),
        ]
        for (i, (test, host, path, expected)) in cases.enumerated() {
            XCTAssertEqual(matches(test, host: host, path: path), expected, "case \(i): \(test) host \(host ?? "-") path \(path ?? "-")")
        }
    }

    func testMethodSourceAndTLS() {
        XCTAssertTrue(matches(ACLTest(criterion: .method, values: ["GET", "HEAD"]), method: "HEAD"))
        XCTAssertFalse(matches(ACLTest(criterion: .method, values: ["GET"]), method: "POST"))
        // A known method is compared as the method, never as text: -i does not make "get" GET.
        XCTAssertFalse(matches(ACLTest(criterion: .method, ignoreCase: true, values: ["get"]), method: "GET"))
        XCTAssertTrue(matches(ACLTest(criterion: .method, values: ["PURGE"]), method: "PURGE"))
        XCTAssertTrue(matches(ACLTest(criterion: .method, ignoreCase: true, values: ["purge"]), method: "PURGE"))
        XCTAssertFalse(matches(ACLTest(criterion: .method, values: ["purge"]), method: "PURGE"))
        XCTAssertTrue(matches(ACLTest(criterion: .source, values: ["127.0.0.0/8"]), source: "127.0.0.1"))
        XCTAssertFalse(matches(ACLTest(criterion: .source, values: ["10.0.0.0/8"]), source: "127.0.0.1"))
        XCTAssertTrue(matches(ACLTest(criterion: .source, values: ["::1"]), source: "::1"))
        XCTAssertTrue(matches(ACLTest(criterion: .source, values: ["2001:db8::/32"]), source: "2001:db8::7"))
        XCTAssertTrue(matches(ACLTest(criterion: .source, values: ["10.1.0.0/16"]), source: "::ffff:10.1.2.3"))
        XCTAssertTrue(matches(ACLTest(criterion: .source, values: ["0.0.0.0/0"]), source: "192.0.2.1"))
        XCTAssertFalse(matches(ACLTest(criterion: .source, values: ["0.0.0.0/0"]), source: "2001:db8::1"))
        XCTAssertFalse(matches(ACLTest(criterion: .tls, values: []), source: "127.0.0.1"))
    }

    func testTLSCriteria() {
        func check(_ test: ACLTest, tls: Bool, serverName: String?) -> Bool {
            let compiled = CompiledTest(test)
            return withRequest(host: "h", path: "/") { plain in
                var view = plain
                view.tls = tls
                guard let serverName else { return compiled.matches(view) }
                return Array(serverName.utf8).withUnsafeBytes { name in
                    view.serverName = name
                    return compiled.matches(view)
                }
            }
        }
        XCTAssertTrue(check(ACLTest(criterion: .tls, values: []), tls: true, serverName: nil))
        XCTAssertFalse(check(ACLTest(criterion: .tls, values: []), tls: false, serverName: nil))
        let sni = ACLTest.init(criterion:ignoreCase:explicitMatch:values:)
        XCTAssertTrue(check(sni(.tlsServerName, false, nil, ["api.example.com"]), tls: true, serverName: "api.example.com"))
        XCTAssertFalse(check(sni(.tlsServerName, false, nil, ["api.example.com"]), tls: true, serverName: "API.example.com"))
        XCTAssertTrue(check(sni(.tlsServerName, true, nil, ["api.example.com"]), tls: true, serverName: "API.example.com"))
        XCTAssertTrue(check(sni(.tlsServerName, true, .ends, [".example.com"]), tls: true, serverName: "www.example.com"))
        XCTAssertFalse(check(sni(.tlsServerName, false, nil, ["api.example.com"]), tls: true, serverName: nil),
                       "no SNI matches nothing")
        XCTAssertFalse(check(sni(.tlsServerName, false, nil, ["api.example.com"]), tls: false, serverName: nil))
    }

    // MARK: discovered routes

    private func route(_ host: String?, _ prefix: String, _ service: String) -> ServiceRoute {
        ServiceRoute(host: host, pathPrefix: prefix, service: service)
    }

    private func table(_ routes: [ServiceRoute]) -> (RoutingTable, [String]) {
        let services = Array(Set(routes.map(\.service))).sorted()
        let table = RoutingTable(generation: 1, routing: FrontendRouting(), routes: routes, defaultBackend: -1,
                                 backendIndex: { services.firstIndex(of: $0) })
        return (table, services)
    }

    private func pick(_ table: (RoutingTable, [String]), host: String?, path: String) -> String? {
        withRequest(host: host, path: path) { view in table.0.findRoute(view).map { table.1[$0.backend] } }
    }

    func testRouteOrderTable() {
        let t = table([
            route("api.example.com", "/", "api-root"),
            route("api.example.com", "/v1", "api-v1"),
            route("api.example.com", "/v1/admin", "api-admin"),
            route("*.example.com", "/", "wild"),
            route("*.a.example.com", "/x", "wild-a"),
            route(nil, "/static", "static"),
            route(nil, "/", "fallback"),
        ])
        XCTAssertEqual(pick(t, host: "api.example.com", path: "/v1/admin/users"), "api-admin")
        XCTAssertEqual(pick(t, host: "API.Example.COM:8443", path: "/v1/x"), "api-v1")
        XCTAssertEqual(pick(t, host: "api.example.com.", path: "/other"), "api-root")
        XCTAssertEqual(pick(t, host: "www.example.com", path: "/static/a.css"), "wild")
        XCTAssertEqual(pick(t, host: "b.a.example.com", path: "/x/1"), "wild-a")
        XCTAssertEqual(pick(t, host: "b.a.example.com", path: "/y"), "wild")
        XCTAssertEqual(pick(t, host: "example.com", path: "/static/a.css"), "static")
        XCTAssertEqual(pick(t, host: nil, path: "/z"), "fallback")
        let noFallback = table([route("a.test", "/p", "a")])
        XCTAssertNil(pick(noFallback, host: "a.test", path: "/q"))
        XCTAssertNil(pick(noFallback, host: "b.test", path: "/p"))
    }

    /// The reference: every candidate in the documented order, written the slow way.
    private func naive(_ routes: [ServiceRoute], host: String?, path: String) -> String? {
        var bare = host?.lowercased() ?? ""
        if let colon = bare.lastIndex(of: ":"), bare[bare.index(after: colon)...].allSatisfy(\.isNumber) {
            bare = String(bare[..<colon])
        }
        if bare.hasSuffix(".") { bare.removeLast() }
        func first(_ candidates: [ServiceRoute]) -> String? {
            var seen = Set<String>()
            let unique = candidates.filter { seen.insert($0.pathPrefix).inserted }
            return unique.sorted { $0.pathPrefix.count > $1.pathPrefix.count }.first { path.hasPrefix($0.pathPrefix) }?.service
        }
        if host != nil && !bare.isEmpty {
            if let hit = first(routes.filter { $0.host?.lowercased() == bare }) { return hit }
            let wild = Dictionary(grouping: routes.filter { $0.host?.hasPrefix("*.") == true }) { String($0.host!.lowercased().dropFirst(1)) }
            for suffix in wild.keys.sorted(by: { $0.count > $1.count }) where bare.hasSuffix(suffix) {
                if let hit = first(wild[suffix]!) { return hit }
            }
        }
        return first(routes.filter { $0.host == nil })
    }

    func testRoutesAgainstNaiveReference() {
        var rng = SeededGenerator(seed: 0x5EED_0A11)   // seeded: a failure reproduces
        let labels = ["a", "b", "api", "x"]
        let segments = ["", "/", "/v", "/v1", "/v1/", "/v1/x", "/w"]
        for round in 0..<300 {
            var routes: [ServiceRoute] = []
            for i in 0..<Int.random(in: 1...8, using: &rng) {
                let host: String? = switch Int.random(in: 0..<3, using: &rng) {
                case 0: nil
                case 1: labels.randomElement(using: &rng)! + "." + labels.randomElement(using: &rng)! + ".test"
                default: "*." + labels.randomElement(using: &rng)! + ".test"
                }
                var prefix = segments.randomElement(using: &rng)!
                if prefix.isEmpty { prefix = "/" }
                // Services are unique per route, so a different pick shows.
                routes.append(route(host, prefix, "s\(i)"))
            }
            let t = table(routes)
            for _ in 0..<20 {
                var host: String? = (0..<Int.random(in: 1...3, using: &rng)).map { _ in labels.randomElement(using: &rng)! }
                    .joined(separator: ".") + ".test"
                if Bool.random(using: &rng) { host = host!.uppercased() }
                if Bool.random(using: &rng) { host! += "." }
                if Bool.random(using: &rng) { host! += ":8080" }
                if Int.random(in: 0..<6, using: &rng) == 0 { host = nil }
                let path = segments.randomElement(using: &rng)! + (Bool.random(using: &rng) ? "z" : "")
                let expected = naive(routes, host: host, path: path)
                XCTAssertEqual(pick(t, host: host, path: path), expected,
                               "round \(round): \(routes) host \(host ?? "-") path \(path)")
            }
        }
    }

    /// haproxy's `-m dir`/`-m dom` written as "some run of whole words equals the pattern
    /// without its outer delimiters", against the scanning implementation.
    func testWordMatchesAgainstNaiveReference() {
        var rng = SeededGenerator(seed: 0x5EED_0A11)   // seeded: a failure reproduces
        let pieces = ["a", "b", "ab", ".", "/", ":", "?", "A"]
        for _ in 0..<3000 {
            let domain = Bool.random(using: &rng)
            let sample = (0..<Int.random(in: 0...6, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
            let pattern = (0..<Int.random(in: 1...4, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
            let ignoreCase = Bool.random(using: &rng)
            let delimiters: Set<Character> = domain ? [".", "/", ":", "?"] : ["/"]
            var trimmed = Substring(pattern)
            while let f = trimmed.first, delimiters.contains(f) { trimmed.removeFirst() }
            while let l = trimmed.last, delimiters.contains(l) { trimmed.removeLast() }
            let s = Array(ignoreCase ? sample.lowercased() : sample)
            let p = Array(ignoreCase ? trimmed.lowercased() : String(trimmed))
            var expected = false
            if !p.isEmpty && p.count <= s.count {
                for start in 0...(s.count - p.count) {
                    let startOK = start == 0 || delimiters.contains(s[start - 1])
                    let end = start + p.count
                    let endOK = end == s.count || delimiters.contains(s[end])
                    if startOK && endOK && Array(s[start..<end]) == p && !delimiters.contains(s[start]) { expected = true }
                }
            }
            let test = ACLTest(criterion: .path, ignoreCase: ignoreCase, explicitMatch: domain ? .domain : .directory, values: [pattern])
            XCTAssertEqual(matches(test, path: sample), expected, "sample '\(sample)' pattern '\(pattern)' dom \(domain) -i \(ignoreCase)")
        }
    }
}
