// Reads the haproxy.cfg subset balancerd implements into a `Configuration`.
//
// Why haproxy's format: the people moving to balancerd already have a haproxy.cfg, often
// one rendered by consul-template, and should be able to point balancerd at it unchanged.
//
// The rule for the subset: a keyword either means in balancerd what it means in haproxy,
// or it is an error naming the keyword. Silently skipping a keyword we do not implement
// would let a file "load" and then forward traffic differently from haproxy. The only
// exceptions are short, explicit lists of keywords that cannot change where traffic goes
// (logging, process management, TLS defaults with no TLS listener); each list says why.
//
// Error keyword convention (tests rely on it): the keyword is the directive as written,
// up to the word that names what is wrong:
//   - a plain directive or its value:     `bind`, `server`, `mode`, `balance`, `retries`
//   - a directive with a sub-keyword:     `option httpchk`, `no option redispatch`,
//                                         `timeout connect`, `stats socket`
//   - a parameter after an address:       `weight`, `inter`, `ssl` (bind or server)
//   - a section header or its checks:     `frontend`, `backend`, `listen`, `defaults`,
//                                         `global`, `from`
//   - tokenizer problems (quotes, `\`):   the line's first word
// Line numbers are 1-based; line 0 means "the file as a whole" (unreadable file, keyword
// `file`; no frontend at all, keyword `frontend`).

import Glibc

public enum HAProxyParser {
    /// Parses configuration text. `file` is only used to label errors.
    public static func parse(_ text: String, file: String) throws(ConfigurationError) -> Configuration {
        var parser = Parser(file: file)
        var lineNumber = 0
        for line in lines(of: text) {
            lineNumber += 1
            let words = try tokenize(line, file: file, line: lineNumber)
            guard !words.isEmpty else { continue }
            try parser.handle(words, line: lineNumber)
        }
        return try parser.finish()
    }

    /// Reads and parses a file. An unreadable or non-UTF-8 file is a `ConfigurationError`
    /// at line 0 with keyword `file`.
    public static func load(path: String) throws(ConfigurationError) -> Configuration {
        try parse(readFile(path), file: path)
    }

    // MARK: - Reading the file

    // This is the one blocking file read balancerd does, once, before any event loop
    // exists. The System layer wraps non-blocking sockets for the loops; stdio is the
    // simplest correct tool for a one-shot read, and keeps Foundation out of the module.
    static func readFile(_ path: String) throws(ConfigurationError) -> String {
        func failure(_ what: String) -> ConfigurationError {
            ConfigurationError(file: path, line: 0, keyword: "file", message: "\(what): \(String(cString: strerror(errno)))")
        }
        guard let stream = fopen(path, "rb") else { throw failure("cannot open") }
        defer { fclose(stream) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, stream) }
            bytes.append(contentsOf: chunk[..<count])
            if count < chunk.count {
                // A short read is either the end of the file or an error (EISDIR for a
                // directory, EIO); only ferror tells them apart.
                if ferror(stream) != 0 { throw failure("cannot read") }
                break
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigurationError(file: path, line: 0, keyword: "file", message: "not valid UTF-8 text")
        }
        return text
    }

    // MARK: - Lines and words

    /// Splits on LF and drops a trailing CR, so files edited on Windows parse too. Works on
    /// scalars because "\r\n" is a single `Character` and would hide the line break.
    static func lines(of text: String) -> [Substring.UnicodeScalarView] {
        text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.last == "\r" ? line.dropLast() : line
        }
    }

    /// haproxy's word rules, minimally: blanks separate words; `#` starts a comment unless
    /// quoted or escaped; `\` escapes the next character outside single quotes; `"..."` and
    /// `'...'` group (single quotes are fully literal) and join adjacent text, so `a"b c"`
    /// is one word `ab c`. haproxy's `${VAR}` expansion inside double quotes is not done:
    /// the text stays literal, and a name or address containing it will be rejected later.
    static func tokenize(_ line: Substring.UnicodeScalarView, file: String, line number: Int) throws(ConfigurationError) -> [String] {
        enum Quote { case none, single, double }
        var words: [String] = []
        var current = String.UnicodeScalarView()
        var inWord = false
        var quote = Quote.none
        var iterator = line.makeIterator()

        func failure(_ message: String) -> ConfigurationError {
            let keyword = words.first ?? (current.isEmpty ? "\\" : String(current))
            return ConfigurationError(file: file, line: number, keyword: keyword, message: message)
        }

        scan: while let scalar = iterator.next() {
            switch quote {
            case .single:
                if scalar == "'" { quote = .none } else { current.append(scalar) }
            case .double:
                if scalar == "\"" {
                    quote = .none
                } else if scalar == "\\" {
                    guard let escaped = iterator.next() else { throw failure("unterminated double quote") }
                    current.append(escaped)
                } else {
                    current.append(scalar)
                }
            case .none:
                switch scalar {
                case " ", "\t", "\r", "\u{0B}", "\u{0C}":
                    if inWord {
                        words.append(String(current))
                        current = String.UnicodeScalarView()
                        inWord = false
                    }
                case "#":
                    break scan
                case "\\":
                    guard let escaped = iterator.next() else { throw failure("backslash at end of line") }
                    current.append(escaped)
                    inWord = true
                case "'":
                    quote = .single
                    inWord = true
                case "\"":
                    quote = .double
                    inWord = true
                default:
                    current.append(scalar)
                    inWord = true
                }
            }
        }
        switch quote {
        case .none: break
        case .single: throw failure("unterminated single quote")
        case .double: throw failure("unterminated double quote")
        }
        if inWord { words.append(String(current)) }
        return words
    }
}

// MARK: - Addresses

// Nested in HAProxyParser so these generic names cannot clash with the socket layer's.
extension HAProxyParser {
    /// A server address (`HOST:PORT`, `[IPv6]:PORT`) in haproxy's syntax, for sources that
    /// read addresses from elsewhere (etcd values). Nil when it does not parse.
    public static func serverAddress(_ text: String) -> HostPort? {
        try? AddressSyntax.parse(text, isBind: false)
    }

    /// Why an address did not parse; the caller adds file/line or the CLI flag.
    public struct AddressError: Error, Sendable, Equatable {
        public var message: String
    }

    /// `HOST:PORT` as haproxy writes it, shared by `bind`, `server` and the CLI flags.
    public enum AddressSyntax {
        /// Accepts `1.2.3.4:80`, `host.example:80`, `[::1]:80`, and haproxy's unbracketed IPv6
        /// where the *last* colon starts the port (`:::80`, `::1:8080`), with an optional
        /// `ipv4@`/`ipv6@` prefix. For a bind, `*` or an empty host (`:80`) means every IPv4
        /// address and is stored as `0.0.0.0`, and port 0 (an ephemeral port, used by tests)
        /// is allowed; a server needs a host and a port in 1...65535.
        public static func parse(_ text: String, isBind: Bool) throws(AddressError) -> HostPort {
            var rest = Substring(text)
            if let at = rest.firstIndex(of: "@") {
                let family = rest[..<at]
                guard family == "ipv4" || family == "ipv6" else {
                    throw AddressError(message: "address family '\(family)@' is not supported (only ipv4@ and ipv6@)")
                }
                rest = rest[rest.index(after: at)...]
            }
            if rest.hasPrefix("/") {
                throw AddressError(message: "UNIX socket addresses are not supported: '\(text)'")
            }

            let host: Substring
            let portText: Substring
            if rest.hasPrefix("[") {
                guard let close = rest.firstIndex(of: "]") else {
                    throw AddressError(message: "missing ']' in '\(text)'")
                }
                host = rest[rest.index(after: rest.startIndex)..<close]
                let afterBracket = rest[rest.index(after: close)...]
                guard afterBracket.hasPrefix(":") else {
                    throw AddressError(message: "missing port in '\(text)' (expected [ADDRESS]:PORT)")
                }
                portText = afterBracket.dropFirst()
                guard host.contains(":") else {
                    throw AddressError(message: "brackets are only for IPv6 addresses: '\(text)'")
                }
            } else {
                guard let colon = rest.lastIndex(of: ":") else {
                    throw AddressError(message: "missing port in '\(text)' (expected HOST:PORT)")
                }
                host = rest[..<colon]
                portText = rest[rest.index(after: colon)...]
            }

            guard !portText.isEmpty else { throw AddressError(message: "missing port in '\(text)' (expected HOST:PORT)") }
            if portText.contains("-") {
                throw AddressError(message: "port ranges are not supported: '\(text)'")
            }
            let lowest = isBind ? 0 : 1
            guard HAProxyParser.isDecimal(portText), let port = Int(portText), port >= lowest, port <= 65_535 else {
                throw AddressError(message: "invalid port '\(portText)' in '\(text)' (expected \(lowest)...65535)")
            }

            var hostName = String(host)
            if hostName.isEmpty || hostName == "*" {
                guard isBind else { throw AddressError(message: "missing host in '\(text)'") }
                hostName = "0.0.0.0"
            }
            // Letters, digits, '.', '-', '_' cover host names and IPv4; ':' and '%' (zone id,
            // `fe80::1%eth0`) cover IPv6. Anything else is a typo or an unexpanded template.
            guard hostName.unicodeScalars.allSatisfy(HAProxyParser.isHostCharacter) else {
                throw AddressError(message: "invalid host '\(hostName)' in '\(text)'")
            }
            return HostPort(host: hostName, port: UInt16(port))
        }
    }
}

extension HAProxyParser {
    /// Non-empty and ASCII digits only. `Int("+5")` and `Int("-0")` parse, but a sign in
    /// a count, port or weight is always a typo, and `Character.isNumber` accepts digits
    /// of every script.
    public static func isDecimal(_ text: some StringProtocol) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    fileprivate static func isHostCharacter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", ".", "-", "_", ":", "%": true
        default: false
        }
    }
}

// MARK: - The parser

// All parser types are nested (and private) so names like `Proxy` stay free for the
// runtime in Sources/Balancer/Proxy.
extension HAProxyParser {
    /// The settings a `defaults` section hands to the proxies after it. A proxy starts from a
    /// copy and overrides what it sets, which is exactly haproxy's inheritance.
    private struct ProxySettings {
        var mode: ProxyMode = .tcp  // haproxy's default mode
        var timeouts = Timeouts()
        var retries = 3
        var redispatch = true  // balancerd's default (haproxy's is off); see BackendConfig
        var allBackups = false
        var forwardFor = false
        var defaultBackend: (name: String, line: Int)? = nil
        var server = ServerParameters()
    }

    /// Everything a `server` or `default-server` line can set.
    private struct ServerParameters {
        var weight = 1
        var backup = false
        var check = false
        // Kept even without `check`, as haproxy does, so a later `check` (or a server
        // inheriting `default-server inter 5s`) picks them up.
        var health = HealthCheckConfig()
    }

    private enum SectionKind: String {
        case global, defaults, frontend, backend, listen

        /// Client-facing keywords (`bind`, `timeout client`) are valid here.
        var isFrontSide: Bool { self == .defaults || self == .frontend || self == .listen }
        /// Server-facing keywords (`server`, `retries`, `timeout connect`) are valid here.
        var isBackSide: Bool { self == .defaults || self == .backend || self == .listen }
    }

    private struct Proxy {
        let kind: SectionKind
        let name: String
        let line: Int
        var settings: ProxySettings
        var binds: [HostPort] = []
        var servers: [ServerConfig] = []
        var serverLines: [String: Int] = [:]
        var discovery: DiscoveryConfig?
        /// `stats enable` seen: this section is the stats listener, not a proxy.
        var statsEnabled = false
        var statsURI: String?
    }

    private struct Parser {
        let file: String
        var global = GlobalSettings()
        /// What the next proxy inherits: the last `defaults` section, or built-ins before any.
        var inherited = ProxySettings()
        var namedDefaults: [String: (settings: ProxySettings, line: Int)] = [:]
        var frontendNames: [String: Int] = [:]
        var backendNames: [String: Int] = [:]
        var proxies: [Proxy] = []

        /// The section being read.
        var section: SectionKind? = nil
        var defaultsName: String? = nil
        var defaults = ProxySettings()
        var proxy: Proxy? = nil

        init(file: String) {
            self.file = file
        }

        func error(_ line: Int, _ keyword: String, _ message: String) -> ConfigurationError {
            ConfigurationError(file: file, line: line, keyword: keyword, message: message)
        }

        // MARK: Dispatch

        mutating func handle(_ words: [String], line: Int) throws(ConfigurationError) {
            let keyword = words[0]
            if let kind = SectionKind(rawValue: keyword) {
                try openSection(kind, words, line: line)
                return
            }
            if Self.unsupportedSections.contains(keyword) {
                throw error(line, keyword, "'\(keyword)' sections are not supported by balancerd")
            }
            switch section {
            case nil:
                throw error(line, keyword, "unknown keyword '\(keyword)' outside any section (expected global, defaults, frontend, backend or listen)")
            case .global:
                try handleGlobal(words, line: line)
            case .defaults:
                // Passing `&defaults` to a method of `self` would overlap two accesses to
                // `self`; work on a copy and store it back.
                var current = defaults
                defer { defaults = current }
                try handleProxyKeyword(words, line: line, kind: .defaults, label: "defaults section", settings: &current)
            case .frontend, .backend, .listen:
                // Same as above for the proxy being read.
                var current = proxy!
                defer { proxy = current }
                try handleProxyLine(words, line: line, proxy: &current)
            }
        }

        // MARK: Sections

        mutating func closeSection() {
            switch section {
            case .defaults:
                inherited = defaults
                if let name = defaultsName { namedDefaults[name] = (defaults, namedDefaults[name]?.line ?? 0) }
            case .frontend, .backend, .listen:
                if let proxy { proxies.append(proxy) }
            case .global, nil:
                break
            }
            section = nil
            proxy = nil
            defaultsName = nil
        }

        mutating func openSection(_ kind: SectionKind, _ words: [String], line: Int) throws(ConfigurationError) {
            closeSection()
            let keyword = kind.rawValue
            var arguments = words.dropFirst()

            if kind == .global {
                guard arguments.isEmpty else { throw error(line, keyword, "'global' takes no arguments") }
                section = .global
                return
            }

            // Optional (defaults) or required (proxies) name, then optional `from DEFAULTS`.
            var name: String? = nil
            if let first = arguments.first, first != "from" {
                name = first
                arguments = arguments.dropFirst()
            }
            var base: ProxySettings? = nil
            if let first = arguments.first, first == "from" {
                guard arguments.count >= 2 else { throw error(line, "from", "'from' needs the name of a defaults section") }
                let source = arguments[arguments.index(after: arguments.startIndex)]
                guard let named = namedDefaults[source] else {
                    throw error(line, "from", "no defaults section named '\(source)' before this line")
                }
                base = named.settings
                arguments = arguments.dropFirst(2)
            }
            if let extra = arguments.first {
                throw error(line, keyword, "unexpected argument '\(extra)' after the section name"
                    + (kind == .defaults ? "" : " (addresses go on a 'bind' line)"))
            }
            if let name, !Self.isValidName(name) {
                throw error(line, keyword, "invalid name '\(name)' (letters, digits, '-', '_', '.' and ':' only)")
            }

            if kind == .defaults {
                if let name {
                    if let previous = namedDefaults[name] {
                        throw error(line, keyword, "duplicate defaults section '\(name)' (first at line \(previous.line))")
                    }
                    namedDefaults[name] = (ProxySettings(), line)
                }
                // haproxy: a new defaults section starts from scratch, not from the previous one.
                defaults = base ?? ProxySettings()
                defaultsName = name
                section = .defaults
                return
            }

            guard let name else { throw error(line, keyword, "missing \(keyword) name") }
            // A frontend and a backend may share a name (a common haproxy idiom); a listen
            // section is both, so it collides with either.
            if kind.isFrontSide, let previous = frontendNames[name] {
                throw error(line, keyword, "duplicate name '\(name)': a frontend or listen section with this name is at line \(previous)")
            }
            if kind.isBackSide, let previous = backendNames[name] {
                throw error(line, keyword, "duplicate name '\(name)': a backend or listen section with this name is at line \(previous)")
            }
            if kind.isFrontSide { frontendNames[name] = line }
            if kind.isBackSide { backendNames[name] = line }
            proxy = Proxy(kind: kind, name: name, line: line, settings: base ?? inherited)
            section = kind
        }

        static func isValidName(_ name: String) -> Bool {
            !name.isEmpty && name.unicodeScalars.allSatisfy { scalar in
                switch scalar {
                case "a"..."z", "A"..."Z", "0"..."9", "-", "_", ".", ":": true
                default: false
                }
            }
        }

        /// Sections haproxy has and balancerd does not; named so the error says "not
        /// supported" rather than "unknown".
        static let unsupportedSections: Set<String> = [
            "userlist", "peers", "resolvers", "mailers", "program", "http-errors", "ring", "cache",
            "fcgi-app", "crt-store", "traces", "log-forward",
        ]

        // MARK: global

        /// Accepted and ignored in `global`. None of them changes where traffic goes:
        /// - `daemon`, `pidfile`: balancerd runs in the foreground under a service manager,
        ///   which does the detaching and tracks the pid.
        /// - `user`, `group`, `uid`, `gid`, `chroot`: balancerd does NOT drop privileges or
        ///   chroot; the service manager must start it as the right user. They are accepted
        ///   because nearly every haproxy.cfg has them.
        /// - `log`, `log-send-hostname`: balancerd logs to stderr.
        /// - `ca-base`, `crt-base`, `ssl-default-*`, `tune.ssl.default-dh-param`: TLS
        ///   defaults; they do nothing without an `ssl` bind or server, and those are errors.
        /// - `ulimit-n`: balancerd raises its own descriptor limit.
        /// - `stats socket`, `stats timeout` (handled below): haproxy's admin socket.
        static let ignoredGlobalKeywords: Set<String> = [
            "daemon", "pidfile", "user", "group", "uid", "gid", "chroot", "log", "log-send-hostname",
            "ca-base", "crt-base", "ssl-default-bind-ciphers", "ssl-default-bind-options",
            "ssl-default-bind-ciphersuites", "ssl-default-server-ciphers", "ssl-default-server-options",
            "ssl-default-server-ciphersuites", "tune.ssl.default-dh-param", "ulimit-n",
        ]

        mutating func handleGlobal(_ words: [String], line: Int) throws(ConfigurationError) {
            let keyword = words[0]
            switch keyword {
            case "maxconn":
                global.maxConnections = try integer(words, line: line, keyword: keyword, in: 1...Int.max)
            case "nbthread":
                global.threads = try integer(words, line: line, keyword: keyword, in: 1...1024)
            case "stats":
                let sub = words.count > 1 ? words[1] : ""
                switch sub {
                case "socket":
                    break
                case "timeout":
                    _ = try duration(Array(words.dropFirst()), line: line, keyword: "stats timeout")
                default:
                    throw error(line, sub.isEmpty ? "stats" : "stats \(sub)", "only 'stats socket' and 'stats timeout' are accepted in global (and ignored)")
                }
            case _ where Self.ignoredGlobalKeywords.contains(keyword):
                break
            default:
                throw error(line, keyword, "unknown or unsupported keyword '\(keyword)' in global section")
            }
        }

        // MARK: frontend / backend / listen

        func handleProxyLine(_ words: [String], line: Int, proxy: inout Proxy) throws(ConfigurationError) {
            let keyword = words[0]
            let label = "\(proxy.kind.rawValue) '\(proxy.name)'"
            switch keyword {
            case "bind":
                guard proxy.kind.isFrontSide else { throw misplaced(line, keyword, proxy.kind) }
                guard words.count >= 2 else { throw error(line, keyword, "missing address (expected bind HOST:PORT)") }
                if words.count > 2 {
                    let parameter = words[2]
                    throw error(line, parameter, parameter == "ssl"
                        ? "TLS is not supported by balancerd ('ssl' on a bind line)"
                        : "bind parameter '\(parameter)' is not supported")
                }
                for element in words[1].split(separator: ",", omittingEmptySubsequences: false) {
                    guard !element.isEmpty else { throw error(line, keyword, "empty address in list '\(words[1])'") }
                    do throws(AddressError) {
                        proxy.binds.append(try AddressSyntax.parse(String(element), isBind: true))
                    } catch {
                        throw self.error(line, keyword, error.message)
                    }
                }
            case "server":
                guard proxy.kind.isBackSide else { throw misplaced(line, keyword, proxy.kind) }
                guard words.count >= 3 else { throw error(line, keyword, "expected server NAME HOST:PORT [parameters]") }
                let name = words[1]
                guard Self.isValidName(name) else {
                    throw error(line, keyword, "invalid server name '\(name)' (letters, digits, '-', '_', '.' and ':' only)")
                }
                if let previous = proxy.serverLines[name] {
                    throw error(line, keyword, "duplicate server name '\(name)' in \(label) (first at line \(previous))")
                }
                let address: HostPort
                do throws(AddressError) {
                    address = try AddressSyntax.parse(words[2], isBind: false)
                } catch {
                    throw self.error(line, keyword, error.message)
                }
                var parameters = proxy.settings.server
                try serverParameters(words[3...], line: line, into: &parameters)
                proxy.servers.append(ServerConfig(
                    name: name, address: address, weight: parameters.weight, backup: parameters.backup,
                    check: parameters.check ? parameters.health : nil))
                proxy.serverLines[name] = line
            case "stats" where proxy.kind == .listen || proxy.kind == .frontend:
                // haproxy's stats page idiom: `listen stats / bind :8404 / stats enable /
                // stats uri /`. balancerd serves its own page and /haproxy.cfg there.
                guard words.count >= 2 else { throw error(line, keyword, "'stats' needs a keyword (enable, uri)") }
                switch words[1] {
                case "enable":
                    proxy.statsEnabled = true
                case "uri":
                    guard words.count == 3, words[2].hasPrefix("/") else {
                        throw error(line, "stats uri", "expected 'stats uri /PATH'")
                    }
                    proxy.statsURI = words[2]
                case "refresh", "show-legends", "show-node", "hide-version", "show-desc":
                    break   // presentation options of haproxy's page: accepted, ignored
                default:
                    throw error(line, "stats \(words[1])", "'stats \(words[1])' is not supported (enable and uri are)")
                }
            case "discovery":
                guard proxy.kind.isBackSide else { throw misplaced(line, keyword, proxy.kind) }
                guard proxy.discovery == nil else { throw error(line, keyword, "only one discovery source per backend") }
                proxy.discovery = try discovery(words, line: line)
            default:
                try handleProxyKeyword(words, line: line, kind: proxy.kind, label: label, settings: &proxy.settings)
            }
        }

        /// balancerd's extension for discovery sources, one line in a backend:
        ///   discovery consul URL service NAME [tag TAG] [dc DC] [token TOKEN]
        ///   discovery etcd URL prefix PREFIX
        /// haproxy has no equivalent (its nearest is server-template with DNS resolvers),
        /// so the exporter writes the servers the source currently has instead.
        func discovery(_ words: [String], line: Int) throws(ConfigurationError) -> DiscoveryConfig {
            guard words.count >= 3 else {
                throw error(line, "discovery", "expected 'discovery consul URL service NAME ...' or 'discovery etcd URL prefix PREFIX'")
            }
            let kind = words[1], url = words[2]
            guard url.hasPrefix("http://") else {
                throw error(line, "discovery \(kind)", "URL must start with http:// (got '\(url)')")
            }
            var options: [String: String] = [:]
            var i = 3
            while i < words.count {
                let key = words[i]
                guard i + 1 < words.count else { throw error(line, key, "'\(key)' needs a value") }
                guard options[key] == nil else { throw error(line, key, "'\(key)' given twice") }
                options[key] = words[i + 1]
                i += 2
            }
            switch kind {
            case "consul":
                for key in options.keys where !["service", "tag", "dc", "token"].contains(key) {
                    throw error(line, key, "unknown consul parameter '\(key)' (expected service, tag, dc, token)")
                }
                guard let service = options["service"] else { throw error(line, "discovery consul", "missing 'service NAME'") }
                return .consul(url: url, service: service, tag: options["tag"], datacenter: options["dc"], token: options["token"])
            case "etcd":
                for key in options.keys where key != "prefix" {
                    throw error(line, key, "unknown etcd parameter '\(key)' (expected prefix)")
                }
                guard let prefix = options["prefix"], !prefix.isEmpty else { throw error(line, "discovery etcd", "missing 'prefix PREFIX'") }
                return .etcd(url: url, prefix: prefix)
            default:
                throw error(line, "discovery \(kind)", "unknown discovery source '\(kind)' (expected consul or etcd)")
            }
        }

        /// Keywords that `defaults` shares with the proxy sections.
        func handleProxyKeyword(_ words: [String], line: Int, kind: SectionKind, label: String,
                                settings: inout ProxySettings) throws(ConfigurationError) {
            let keyword = words[0]
            switch keyword {
            case "mode":
                try arguments(words, count: 1, line: line, keyword: keyword)
                switch words[1] {
                case "tcp": settings.mode = .tcp
                case "http": settings.mode = .http
                case "health": throw error(line, keyword, "'mode health' is not supported (use tcp or http)")
                default: throw error(line, keyword, "unknown mode '\(words[1])' (expected tcp or http)")
                }

            case "timeout":
                try timeout(words, line: line, kind: kind, settings: &settings)

            case "retries":
                guard kind.isBackSide else { throw misplaced(line, keyword, kind) }
                settings.retries = try integer(words, line: line, keyword: keyword, in: 0...Int.max)

            case "balance":
                guard kind.isBackSide else { throw misplaced(line, keyword, kind) }
                guard words.count >= 2 else { throw error(line, keyword, "missing algorithm (expected 'balance roundrobin')") }
                guard words[1] == BalanceAlgorithm.roundRobin.rawValue else {
                    throw error(line, keyword, "unsupported balance algorithm '\(words[1])' (only roundrobin is supported)")
                }
                try arguments(words, count: 1, line: line, keyword: keyword)

            case "default_backend":
                guard kind == .defaults || kind == .frontend else {
                    throw error(line, keyword, kind == .listen
                        ? "'default_backend' is not allowed in a listen section: a listen section forwards to its own servers"
                        : "'default_backend' is not allowed in a backend section")
                }
                try arguments(words, count: 1, line: line, keyword: keyword)
                settings.defaultBackend = (words[1], line)

            case "default-server":
                guard kind.isBackSide else { throw misplaced(line, keyword, kind) }
                try serverParameters(words[1...], line: line, into: &settings.server)

            case "maxconn":
                // Accepted and ignored: the global maxconn is the one limit balancerd enforces.
                guard kind.isFrontSide else { throw misplaced(line, keyword, kind) }
                _ = try integer(words, line: line, keyword: keyword, in: 0...Int.max)

            case "log":
                // Accepted and ignored (`log global`, `log 127.0.0.1 local0`): balancerd logs to stderr.
                break

            case "option":
                try option(words, line: line, enable: true, kind: kind, settings: &settings)

            case "no":
                guard words.count >= 2 else { throw error(line, keyword, "'no' needs a keyword") }
                switch words[1] {
                case "option":
                    try option(Array(words.dropFirst()), line: line, enable: false, kind: kind, settings: &settings)
                case "log":
                    break  // ignored like `log`
                default:
                    throw error(line, "no \(words[1])", "'no' is only supported before 'option' and 'log'")
                }

            case "bind", "server":
                throw misplaced(line, keyword, kind)

            case _ where Self.unsupportedProxyKeywords.contains(keyword):
                throw error(line, keyword, "'\(keyword)' is not supported by balancerd")

            default:
                throw error(line, keyword, "unknown keyword '\(keyword)' in \(label)")
            }
        }

        /// haproxy keywords people commonly have that balancerd does not implement; listed so
        /// the error says "not supported" instead of suggesting a typo.
        static let unsupportedProxyKeywords: Set<String> = [
            "acl", "use_backend", "use-server", "http-request", "http-response", "http-after-response",
            "tcp-request", "tcp-response", "stick-table", "stick", "cookie", "errorfile", "errorloc",
            "redirect", "compression", "http-check", "tcp-check", "capture", "monitor-uri", "stats",
            "hash-type", "fullconn", "server-template", "rate-limit", "unique-id-format", "log-format",
            "http-reuse", "source", "dispatch", "disabled", "enabled", "description", "id",
        ]

        func misplaced(_ line: Int, _ keyword: String, _ kind: SectionKind) -> ConfigurationError {
            let article = kind == .defaults ? "a defaults" : (kind == .listen ? "a listen" : "a \(kind.rawValue)")
            return error(line, keyword, "'\(keyword)' is not allowed in \(article) section")
        }

        // MARK: timeout / option

        func timeout(_ words: [String], line: Int, kind: SectionKind, settings: inout ProxySettings) throws(ConfigurationError) {
            guard words.count >= 2 else { throw error(line, "timeout", "missing timeout name (e.g. 'timeout connect 5s')") }
            let name = words[1]
            let keyword = "timeout \(name)"
            let frontSide: Set<String> = ["client", "http-request", "http-keep-alive", "client-fin"]
            let backSide: Set<String> = ["connect", "server", "queue", "check", "tunnel", "server-fin"]
            if frontSide.contains(name) {
                guard kind.isFrontSide else {
                    throw error(line, keyword, "'\(keyword)' applies to the client side; set it in a frontend, listen or defaults section")
                }
            } else if backSide.contains(name) {
                guard kind.isBackSide else {
                    throw error(line, keyword, "'\(keyword)' applies to the server side; set it in a backend, listen or defaults section")
                }
            } else {
                throw error(line, keyword, "unknown timeout '\(name)'")
            }
            let value = try duration(Array(words.dropFirst()), line: line, keyword: keyword)
            switch name {
            case "client": settings.timeouts.client = value
            case "http-request": settings.timeouts.httpRequest = value
            case "http-keep-alive": settings.timeouts.httpKeepAlive = value
            case "connect": settings.timeouts.connect = value
            case "server": settings.timeouts.server = value
            default:
                // queue, check, tunnel, client-fin, server-fin: accepted (the value is still
                // checked) and ignored. balancerd has no server queue, checks time out at the
                // check interval, and there is no half-closed or tunnel timer apart from
                // client/server; configs carry these almost always, so rejecting them would
                // reject nearly every real file.
                break
            }
        }

        func option(_ words: [String], line: Int, enable: Bool, kind: SectionKind,
                    settings: inout ProxySettings) throws(ConfigurationError) {
            let prefix = enable ? "" : "no "
            guard words.count >= 2 else { throw error(line, "\(prefix)option", "missing option name") }
            let name = words[1]
            let keyword = "\(prefix)option \(name)"
            func noArguments() throws(ConfigurationError) {
                if words.count > 2 { throw error(line, keyword, "arguments to '\(keyword)' are not supported") }
            }
            switch name {
            case "redispatch":
                guard kind.isBackSide else { throw misplaced(line, keyword, kind) }
                try noArguments()
                settings.redispatch = enable
            case "allbackups":
                guard kind.isBackSide else { throw misplaced(line, keyword, kind) }
                try noArguments()
                settings.allBackups = enable
            case "forwardfor":
                try noArguments()
                settings.forwardFor = enable
            case "httplog", "tcplog", "dontlognull", "http-server-close", "http-keep-alive":
                // Accepted and ignored. The log options only shape haproxy's log lines;
                // http-server-close and http-keep-alive choose haproxy's connection mode, and
                // balancerd's HTTP mode always keeps client connections alive.
                break
            case "httpchk", "tcp-check", "ssl-hello-chk", "mysql-check", "pgsql-check", "redis-check",
                 "smtpchk", "ldap-check", "spop-check":
                throw error(line, keyword, "'option \(name)' is not supported: health checks are TCP connects ('check' on a server line)")
            default:
                throw error(line, keyword, "unknown or unsupported option '\(name)'")
            }
        }

        // MARK: server parameters

        func serverParameters(_ words: ArraySlice<String>, line: Int, into parameters: inout ServerParameters) throws(ConfigurationError) {
            var index = words.startIndex
            func value(for keyword: String) throws(ConfigurationError) -> String {
                let next = words.index(after: index)
                guard next < words.endIndex else { throw error(line, keyword, "'\(keyword)' needs a value") }
                index = next
                return words[next]
            }
            while index < words.endIndex {
                let keyword = words[index]
                switch keyword {
                case "weight":
                    parameters.weight = try integer(try value(for: keyword), line: line, keyword: keyword, in: 0...256)
                case "backup":
                    parameters.backup = true
                case "no-backup":
                    parameters.backup = false
                case "check":
                    parameters.check = true
                case "no-check":
                    parameters.check = false
                case "inter":
                    let text = try value(for: keyword)
                    guard let interval = DurationParser.parse(text), interval > .zero else {
                        throw error(line, keyword, "invalid interval '\(text)' (a duration above zero, e.g. 2s or 500ms)")
                    }
                    parameters.health.interval = interval
                case "rise":
                    parameters.health.rise = try integer(try value(for: keyword), line: line, keyword: keyword, in: 1...Int.max)
                case "fall":
                    parameters.health.fall = try integer(try value(for: keyword), line: line, keyword: keyword, in: 1...Int.max)
                case "maxconn":
                    // Accepted and ignored: balancerd has no per-server queue to enforce it with.
                    _ = try integer(try value(for: keyword), line: line, keyword: keyword, in: 0...Int.max)
                case "ssl":
                    throw error(line, keyword, "TLS to servers is not supported by balancerd ('ssl' on a server line)")
                default:
                    throw error(line, keyword, "unknown or unsupported server parameter '\(keyword)'")
                }
                index = words.index(after: index)
            }
        }

        // MARK: values

        func arguments(_ words: [String], count: Int, line: Int, keyword: String) throws(ConfigurationError) {
            if words.count - 1 < count {
                throw error(line, keyword, count == 1 ? "'\(keyword)' needs a value" : "'\(keyword)' needs \(count) values")
            }
            if words.count - 1 > count {
                throw error(line, keyword, "unexpected argument '\(words[count + 1])'")
            }
        }

        /// `KEYWORD N` with exactly one argument.
        func integer(_ words: [String], line: Int, keyword: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
            try arguments(words, count: 1, line: line, keyword: keyword)
            return try integer(words[1], line: line, keyword: keyword, in: range)
        }

        func integer(_ text: String, line: Int, keyword: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
            guard HAProxyParser.isDecimal(text), let value = Int(text), range.contains(value) else {
                let expected = range.upperBound == Int.max
                    ? "an integer of at least \(range.lowerBound)"
                    : "an integer from \(range.lowerBound) to \(range.upperBound)"
                throw error(line, keyword, "invalid value '\(text)' (expected \(expected))")
            }
            return value
        }

        /// `KEYWORD D` with exactly one argument (`words[0]` is whatever precedes the value).
        func duration(_ words: [String], line: Int, keyword: String) throws(ConfigurationError) -> Duration {
            try arguments(words, count: 1, line: line, keyword: keyword)
            guard let value = DurationParser.parse(words[1]) else {
                throw error(line, keyword, "invalid duration '\(words[1])' (e.g. 200ms, 5s, 2m; a bare number is milliseconds)")
            }
            return value
        }

        // MARK: Resolution

        /// Ends the file: links frontends to backends and checks what only the whole file shows.
        mutating func finish() throws(ConfigurationError) -> Configuration {
            closeSection()
            var stats: StatsConfig?
            for proxy in proxies where proxy.statsEnabled {
                let keyword = proxy.kind.rawValue
                guard stats == nil else { throw error(proxy.line, keyword, "only one stats section is supported") }
                guard proxy.binds.count == 1 else {
                    throw error(proxy.line, keyword, "stats section '\(proxy.name)' needs exactly one 'bind' line")
                }
                guard proxy.servers.isEmpty, proxy.settings.defaultBackend == nil || proxy.kind == .listen else {
                    throw error(proxy.line, keyword, "stats section '\(proxy.name)' cannot also forward to servers")
                }
                stats = StatsConfig(name: proxy.name, bind: proxy.binds[0], uri: proxy.statsURI ?? "/")
            }
            let proxies = self.proxies.filter { !$0.statsEnabled }
            var backends: [BackendConfig] = []
            var backendIndex: [String: (config: BackendConfig, forwardFor: Bool)] = [:]
            for proxy in proxies where proxy.kind.isBackSide {
                let settings = proxy.settings
                let backend = BackendConfig(
                    name: proxy.name, mode: settings.mode, balance: .roundRobin, servers: proxy.servers,
                    timeouts: settings.timeouts, retries: settings.retries, redispatch: settings.redispatch,
                    allBackups: settings.allBackups, discovery: proxy.discovery)
                backends.append(backend)
                backendIndex[proxy.name] = (backend, settings.forwardFor)
            }

            var frontends: [Frontend] = []
            for proxy in proxies where proxy.kind.isFrontSide {
                let keyword = proxy.kind.rawValue
                guard !proxy.binds.isEmpty else {
                    throw error(proxy.line, keyword, "\(keyword) '\(proxy.name)' has no 'bind' line")
                }
                let target: (name: String, line: Int)
                if proxy.kind == .listen {
                    target = (proxy.name, proxy.line)
                } else if let configured = proxy.settings.defaultBackend {
                    target = configured
                } else {
                    throw error(proxy.line, keyword, "frontend '\(proxy.name)' has no 'default_backend'")
                }
                guard let backend = backendIndex[target.name] else {
                    throw error(target.line, "default_backend", "no backend or listen section named '\(target.name)'")
                }
                // haproxy refuses a frontend and backend of different modes: HTTP parsing on
                // one side and raw bytes on the other cannot be stitched together.
                guard backend.config.mode == proxy.settings.mode else {
                    throw error(target.line, "default_backend",
                                "frontend '\(proxy.name)' is in \(proxy.settings.mode.rawValue) mode but backend '\(target.name)' is in \(backend.config.mode.rawValue) mode")
                }
                frontends.append(Frontend(
                    name: proxy.name, binds: proxy.binds, mode: proxy.settings.mode, defaultBackend: target.name,
                    timeouts: proxy.settings.timeouts,
                    // As in haproxy, `option forwardfor` on either side adds the header.
                    forwardFor: proxy.settings.forwardFor || backend.forwardFor))
            }
            guard !frontends.isEmpty else {
                throw error(0, "frontend", "no frontend or listen section")
            }
            return Configuration(global: global, frontends: frontends, backends: backends, stats: stats)
        }
    }
}
