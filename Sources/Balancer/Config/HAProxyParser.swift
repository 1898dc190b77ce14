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
//                                         `timeout connect`, `stats socket`, `http-check expect`
//   - `errorfile` for its code or its file
//   - a parameter after an address:       `weight`, `inter`, `ssl` (bind or server)
//   - an option of a line:                `mode`/`level` (stats socket), `hdr` (http-check send)
//   - a section header or its checks:     `frontend`, `backend`, `listen`, `defaults`,
//                                         `global`, `from`
//   - tokenizer problems (quotes, `\`):   the line's first word
// Line numbers are 1-based; line 0 means "the file as a whole" (unreadable file, keyword
// `file`).

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
        let bytes: [UInt8]
        switch readBytes(path) {
        case .success(let read): bytes = read
        case .failure(let failure): throw ConfigurationError(file: path, line: 0, keyword: "file", message: failure.message)
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigurationError(file: path, line: 0, keyword: "file", message: "not valid UTF-8 text")
        }
        return text
    }

    struct ReadFailure: Error {
        var message: String
    }

    /// A whole file's bytes (the configuration, an errorfile), or why it could not be read.
    static func readBytes(_ path: String) -> Result<[UInt8], ReadFailure> {
        func failure(_ what: String) -> ReadFailure {
            ReadFailure(message: "\(what): \(String(cString: strerror(errno)))")
        }
        guard let stream = fopen(path, "rb") else { return .failure(failure("cannot open")) }
        defer { fclose(stream) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, stream) }
            bytes.append(contentsOf: chunk[..<count])
            if count < chunk.count {
                // A short read is either the end of the file or an error (EISDIR for a
                // directory, EIO); only ferror tells them apart.
                if ferror(stream) != 0 { return .failure(failure("cannot read")) }
                break
            }
        }
        return .success(bytes)
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
        /// `errorfile` lines, one per status (a later line for the same status replaces it).
        var errorFiles: [ErrorFile] = []
        var checks = CheckSettings()
    }

    /// `option httpchk`, `http-check send/expect` and `timeout check`, kept apart until the
    /// section ends because haproxy combines them whatever their order.
    private struct CheckSettings {
        /// `option httpchk [[METHOD] URI [VERSION[\r\nHEADERS]]]`; nil: TCP checks.
        var httpchk: HTTPCheck?
        var sendMethod: String?
        var sendURI: String?
        var sendVersion: String?
        /// `http-check send hdr`: when any, they replace the headers of `option httpchk`'s
        /// version string (what haproxy 2.6 sends).
        var sendHeaders: [HTTPCheckHeader] = []
        var sendBody: String?
        var expect: (value: HTTPCheckExpect, line: Int)?
        var timeout: Duration?

        /// The backend's check. http-check rules without `option httpchk` are ignored, as
        /// haproxy does (with a warning): its checks stay TCP connects.
        var resolved: BackendHealthCheck {
            guard var http = httpchk else { return BackendHealthCheck(http: nil, timeout: timeout) }
            if let sendMethod { http.method = sendMethod }
            if let sendURI { http.uri = sendURI }
            if let sendVersion { http.version = sendVersion }
            if !sendHeaders.isEmpty { http.headers = sendHeaders }
            if let sendBody { http.body = sendBody }
            http.expect = expect?.value
            return BackendHealthCheck(http: http, timeout: timeout)
        }
    }

    /// Everything a `server` or `default-server` line can set.
    private struct ServerParameters {
        var weight = 1
        var backup = false
        var check = false
        // Kept even without `check`, as haproxy does, so a later `check` (or a server
        // inheriting `default-server inter 5s`) picks them up.
        var health = HealthCheckConfig()
        var slowStart: Duration? = nil
        /// `ssl` and its companions; `verify`, `ca-file` and `sni` are kept without `ssl`
        /// too (haproxy does), for a later `ssl` to pick them up.
        var ssl = false
        var tls = TLSServerConfig()
        /// `check-ssl` (true), `no-check-ssl` (false); nil: checks follow `ssl`.
        var checkSSL: Bool? = nil
        /// `check-sni NAME`.
        var checkServerName: String? = nil

        /// haproxy's init_srv_check(): without `check-ssl`/`no-check-ssl`, checks use TLS
        /// when traffic does (balancerd has no check `port`/`addr`, which would turn that
        /// off); TLS checks verify as traffic does and send `check-sni` only.
        var checkTLS: TLSServerConfig? {
            guard checkSSL ?? ssl else { return nil }
            return TLSServerConfig(verify: tls.verify, caFile: tls.caFile, serverName: checkServerName)
        }
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
        /// What `ssl` binds said about TLS (the `global` defaults are applied at the end).
        var tls: [HostPort: BindTLSWords] = [:]
        var servers: [ServerConfig] = []
        var serverLines: [String: Int] = [:]
        var discovery: DiscoveryConfig?
        /// `stats enable` seen: this section is the stats listener, not a proxy.
        var statsEnabled = false
        var statsURI: String?
        var statsRefresh: Duration?
        var statsCredentials: [StatsCredential] = []
        var statsAdmin = false
        /// `acl`, `use_backend`, `http-request` lines, and the lines they came from.
        var routing = FrontendRouting()
        /// Where each ACL name is in `routing.acls`, and the names a condition may use: a
        /// section of thousands of rules would otherwise search (and build a set of) every
        /// name once per line, quadratic in the rules (3,000 host rules took 1.2 s to parse).
        var aclIndex: [String: Int] = [:]
        var routingLines: [Int] = []
        /// `discovery consul URL routes ...` (frontend side) and its line.
        var routes: (config: RouteDiscoveryConfig, line: Int)?
        var useBackendLines: [Int] = []
    }

    private struct Parser {
        let file: String
        var global = GlobalSettings()
        /// `ssl-default-bind-*` and `crt-base` of `global`.
        var tlsDefaults = TLSBindDefaults()
        var crtBase: String?
        /// `ca-base` of `global`: prefixes a relative `ca-file`.
        var caBase: String?
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
                // Same as above for the proxy being read. Moved out, not copied: with
                // `proxy` still holding them, its arrays would be copied whole by every
                // append, which made a section of thousands of rules quadratic.
                var current = proxy!
                proxy = nil
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
        /// - `ssl-default-server-*`, `tune.ssl.default-dh-param`: TLS settings towards
        ///   servers (balancerd uses OpenSSL's defaults there), or for DH key exchanges
        ///   OpenSSL 3 no longer needs them for. (`ssl-default-bind-*`, `crt-base` and
        ///   `ca-base` are handled below.)
        /// - `ulimit-n`: balancerd raises its own descriptor limit.
        /// - `stats socket`, `stats timeout` (handled below): haproxy's admin socket.
        static let ignoredGlobalKeywords: Set<String> = [
            "daemon", "pidfile", "user", "group", "uid", "gid", "chroot", "log", "log-send-hostname",
            "ssl-default-server-ciphers", "ssl-default-server-options",
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
                    guard global.statsSocket == nil else {
                        throw error(line, "stats socket", "only one 'stats socket' is supported")
                    }
                    global.statsSocket = try statsSocket(words, line: line)
                case "timeout":
                    _ = try duration(Array(words.dropFirst()), line: line, keyword: "stats timeout")
                default:
                    throw error(line, sub.isEmpty ? "stats" : "stats \(sub)", "only 'stats socket' and 'stats timeout' are accepted in global")
                }
            case "ca-base":
                try arguments(words, count: 1, line: line, keyword: keyword)
                caBase = words[1]
            case "ssl-default-bind-ciphers", "ssl-default-bind-ciphersuites", "crt-base":
                guard words.count == 2 else { throw error(line, keyword, "expected '\(keyword) VALUE'") }
                switch keyword {
                case "ssl-default-bind-ciphers": tlsDefaults.ciphers = words[1]
                case "ssl-default-bind-ciphersuites": tlsDefaults.ciphersuites = words[1]
                default: crtBase = words[1]
                }
            case "ssl-default-bind-options":
                do throws(HAProxyTLSSyntax.Failure) {
                    tlsDefaults.options = try HAProxyTLSSyntax.defaultOptions(words.dropFirst())
                } catch {
                    throw self.error(line, error.keyword, error.message)
                }
            case _ where Self.ignoredGlobalKeywords.contains(keyword):
                break
            default:
                throw error(line, keyword, "unknown or unsupported keyword '\(keyword)' in global section")
            }
        }

        /// `stats socket PATH [mode OCTAL] [level user|operator|admin] [BIND OPTIONS]`: the
        /// Runtime API's unix socket. Without `level` the socket is `operator`, haproxy's
        /// default (cli.c sets ACCESS_LVL_OPER before reading the options). The bind
        /// options that only concern haproxy's process model or ownership (`expose-fd
        /// listeners` for seamless reloads, `user`, `group`, `uid`, `gid`, `process`,
        /// `thread`, `name`) are accepted and have no effect here.
        func statsSocket(_ words: [String], line: Int) throws(ConfigurationError) -> RuntimeSocketConfig {
            let keyword = "stats socket"
            guard words.count >= 3 else { throw error(line, keyword, "missing socket path (expected 'stats socket PATH')") }
            var path = words[2]
            if path.hasPrefix("unix@") { path.removeFirst("unix@".count) }
            guard !path.isEmpty, !path.contains("@"), !path.contains(":") else {
                throw error(line, keyword, "only UNIX socket paths are supported, not '\(words[2])'")
            }
            var socket = RuntimeSocketConfig(path: path, level: .operator)
            var i = 3
            while i < words.count {
                let option = words[i]
                let valued: Set<String> = ["mode", "level", "expose-fd", "user", "group", "uid", "gid", "process", "thread", "name"]
                guard valued.contains(option) else {
                    throw error(line, option, "unsupported 'stats socket' option '\(option)' (expected mode, level, expose-fd, user, group, uid, gid, process, thread, name)")
                }
                guard i + 1 < words.count else { throw error(line, option, "'\(option)' needs a value") }
                let value = words[i + 1]
                switch option {
                case "mode":
                    guard let bits = UInt32(value, radix: 8), bits <= 0o7777 else {
                        throw error(line, option, "invalid mode '\(value)' (expected octal permission bits, e.g. 660)")
                    }
                    socket.mode = bits
                case "level":
                    guard let level = RuntimeSocketConfig.Level(rawValue: value) else {
                        throw error(line, option, "invalid level '\(value)' (expected user, operator or admin)")
                    }
                    socket.level = level
                case "expose-fd":
                    // haproxy knows one kind: the listeners (its own error text).
                    guard value == "listeners" else {
                        throw error(line, option, "'expose-fd' only supports 'listeners' (got '\(value)')")
                    }
                    socket.exposeFDListeners = true
                default:
                    break
                }
                i += 2
            }
            return socket
        }

        // MARK: frontend / backend / listen

        func handleProxyLine(_ words: [String], line: Int, proxy: inout Proxy) throws(ConfigurationError) {
            let keyword = words[0]
            let label = "\(proxy.kind.rawValue) '\(proxy.name)'"
            switch keyword {
            case "bind":
                guard proxy.kind.isFrontSide else { throw misplaced(line, keyword, proxy.kind) }
                guard words.count >= 2 else { throw error(line, keyword, "missing address (expected bind HOST:PORT)") }
                var tls = BindTLSWords()
                do throws(HAProxyTLSSyntax.Failure) {
                    tls = try HAProxyTLSSyntax.bindParameters(words.dropFirst(2), crtBase: crtBase)
                } catch {
                    throw self.error(line, error.keyword, error.message)
                }
                for element in words[1].split(separator: ",", omittingEmptySubsequences: false) {
                    guard !element.isEmpty else { throw error(line, keyword, "empty address in list '\(words[1])'") }
                    do throws(AddressError) {
                        let bind = try AddressSyntax.parse(String(element), isBind: true)
                        proxy.binds.append(bind)
                        if tls.ssl { proxy.tls[bind] = tls }
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
                let checkTLS = parameters.checkTLS
                if (parameters.ssl || checkTLS != nil) && parameters.tls.verify == .required && parameters.tls.caFile == nil {
                    // haproxy -c refuses it too (for `check-ssl` as for `ssl`): verifying
                    // against no authority fails every connection.
                    let word = parameters.ssl ? "ssl" : "check-ssl"
                    throw error(line, keyword, "server '\(name)': '\(word)' verifies the server's certificate by default ('verify required') and needs a 'ca-file'; write 'verify none' to skip verification")
                }
                proxy.servers.append(ServerConfig(
                    name: name, address: address, weight: parameters.weight, backup: parameters.backup,
                    check: parameters.check ? parameters.health : nil, slowStart: parameters.slowStart,
                    tls: parameters.ssl ? parameters.tls : nil, checkTLS: checkTLS))
                proxy.serverLines[name] = line
            case "stats" where proxy.kind == .listen || proxy.kind == .frontend:
                // haproxy's stats page idiom: `listen stats / bind :8404 / stats enable /
                // stats uri /`. balancerd serves its own page and /haproxy.cfg there.
                guard words.count >= 2 else { throw error(line, keyword, "'stats' needs a keyword (enable, uri, refresh, auth, admin)") }
                switch words[1] {
                case "enable":
                    proxy.statsEnabled = true
                case "uri":
                    guard words.count == 3, words[2].hasPrefix("/") else {
                        throw error(line, "stats uri", "expected 'stats uri /PATH'")
                    }
                    proxy.statsURI = words[2]
                case "refresh":
                    proxy.statsRefresh = try duration(Array(words.dropFirst()), line: line, keyword: "stats refresh")
                case "auth":
                    guard words.count == 3, let colon = words[2].firstIndex(of: ":"), colon != words[2].startIndex else {
                        throw error(line, "stats auth", "expected 'stats auth USER:PASSWORD'")
                    }
                    let user = String(words[2][..<colon])
                    let password = String(words[2][words[2].index(after: colon)...])
                    proxy.statsCredentials.append(StatsCredential(user: user, password: password))
                case "admin":
                    // haproxy's `stats admin if|unless CONDITION`. The condition is recorded
                    // as "admin actions are offered" and NOT evaluated: balancerd has no ACL
                    // engine. Who may act is decided instead by a fixed rule: clients on
                    // loopback, or any client with one of the `stats auth` credentials.
                    guard words.count >= 4, words[2] == "if" || words[2] == "unless" else {
                        throw error(line, "stats admin", "expected 'stats admin if CONDITION'")
                    }
                    proxy.statsAdmin = true
                case "realm":
                    // The text of the Basic authentication prompt: presentation only.
                    guard words.count >= 3 else { throw error(line, "stats realm", "'stats realm' needs a value") }
                case "show-legends", "show-node", "hide-version", "show-desc":
                    break   // presentation options of haproxy's page: accepted, ignored
                default:
                    throw error(line, "stats \(words[1])", "'stats \(words[1])' is not supported (enable, uri, refresh, auth, admin and realm are)")
                }
            case "discovery" where words.count >= 4 && words[1] == "consul" && words[3] == "routes":
                // balancerd extension: this frontend routes by host and path from the tags of
                // every Consul service (fabio's urlprefix-), see RouteDiscoveryConfig.
                guard proxy.kind == .frontend || proxy.kind == .listen else { throw misplaced(line, "discovery consul ... routes", proxy.kind) }
                guard proxy.routes == nil else { throw error(line, keyword, "only one route source per frontend") }
                proxy.routes = (try routeDiscovery(words, line: line), line)
            case "discovery":
                guard proxy.kind.isBackSide else { throw misplaced(line, keyword, proxy.kind) }
                guard proxy.discovery == nil else { throw error(line, keyword, "only one discovery source per backend") }
                proxy.discovery = try discovery(words, line: line)
            case "acl", "use_backend", "http-request":
                guard proxy.kind == .frontend || proxy.kind == .listen else { throw misplaced(line, keyword, proxy.kind) }
                try routingLine(words, line: line, proxy: &proxy)
            default:
                try handleProxyKeyword(words, line: line, kind: proxy.kind, label: label, settings: &proxy.settings)
            }
        }

        /// `acl`, `use_backend` and `http-request` (HAProxyACLParser.swift has the grammar).
        func routingLine(_ words: [String], line: Int, proxy: inout Proxy) throws(ConfigurationError) {
            proxy.routingLines.append(line)
            do throws(ACLGrammar.Failure) {
                switch words[0] {
                case "acl":
                    guard words.count >= 3 else { throw ACLGrammar.Failure("acl", "expected acl NAME CRITERION [FLAGS] VALUE...") }
                    let name = words[1]
                    guard Self.isValidName(name) else {
                        throw ACLGrammar.Failure("acl", "invalid ACL name '\(name)' (letters, digits, '-', '_', '.' and ':' only)")
                    }
                    let test = try ACLGrammar.test(words[2...], keyword: "acl")
                    if let i = proxy.aclIndex[name] {
                        proxy.routing.acls[i].tests.append(test)   // same name: ORed, as in haproxy
                    } else {
                        proxy.aclIndex[name] = proxy.routing.acls.count
                        proxy.routing.acls.append(ACL(name: name, tests: [test]))
                    }
                case "use_backend":
                    proxy.routing.useBackend.append(try ACLGrammar.useBackend(words, known: proxy.aclIndex))
                    proxy.useBackendLines.append(line)
                default:
                    proxy.routing.requestRules.append(try ACLGrammar.httpRequest(words, known: proxy.aclIndex))
                }
            } catch {
                throw self.error(line, error.keyword, error.message)
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
            var stale = false
            var i = 3
            while i < words.count {
                let key = words[i]
                if key == "stale" && kind == "consul" {
                    // `?stale` reads: any Consul server answers (see ConsulReadPolicy).
                    guard !stale else { throw error(line, key, "'\(key)' given twice") }
                    stale = true
                    i += 1
                    continue
                }
                guard i + 1 < words.count else { throw error(line, key, "'\(key)' needs a value") }
                guard options[key] == nil else { throw error(line, key, "'\(key)' given twice") }
                options[key] = words[i + 1]
                i += 2
            }
            switch kind {
            case "consul":
                for key in options.keys where !["service", "tag", "dc", "token"].contains(key) {
                    throw error(line, key, "unknown consul parameter '\(key)' (expected service, tag, dc, token, stale)")
                }
                guard let service = options["service"] else { throw error(line, "discovery consul", "missing 'service NAME'") }
                return .consul(url: url, service: service, tag: options["tag"], datacenter: options["dc"], token: options["token"],
                               stale: stale)
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

        /// `discovery consul URL routes [tag-prefix P] [stale] [dc DC] [token T]`.
        func routeDiscovery(_ words: [String], line: Int) throws(ConfigurationError) -> RouteDiscoveryConfig {
            let url = words[2]
            guard url.hasPrefix("http://") else {
                throw error(line, "discovery consul", "URL must start with http:// (got '\(url)')")
            }
            var config = RouteDiscoveryConfig(url: url)
            var seen = Set<String>()
            var i = 4
            while i < words.count {
                let key = words[i]
                guard seen.insert(key).inserted else { throw error(line, key, "'\(key)' given twice") }
                if key == "stale" {
                    config.stale = true
                    i += 1
                    continue
                }
                guard ["tag-prefix", "dc", "token"].contains(key) else {
                    throw error(line, key, "unknown routes parameter '\(key)' (expected tag-prefix, stale, dc, token)")
                }
                guard i + 1 < words.count, !words[i + 1].isEmpty else { throw error(line, key, "'\(key)' needs a value") }
                switch key {
                case "tag-prefix": config.tagPrefix = words[i + 1]
                case "dc": config.datacenter = words[i + 1]
                default: config.token = words[i + 1]
                }
                i += 2
            }
            return config
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

            case "errorfile":
                try arguments(words, count: 2, line: line, keyword: keyword)
                let error = try errorFile(status: words[1], path: words[2], line: line)
                settings.errorFiles.removeAll { $0.status == error.status }
                settings.errorFiles.append(error)

            case "http-check":
                guard kind.isBackSide else { throw misplaced(line, keyword, kind) }
                try httpCheck(words, line: line, checks: &settings.checks)

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

            case "bind", "server", "acl", "use_backend", "http-request":
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
            "use-server", "http-response", "http-after-response",
            "tcp-request", "tcp-response", "stick-table", "stick", "cookie", "errorloc", "errorloc302",
            "errorloc303", "errorfiles", "redirect", "compression", "tcp-check", "capture", "monitor-uri", "stats",
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
            case "check": settings.checks.timeout = value
            default:
                // queue, tunnel, client-fin, server-fin: accepted (the value is still
                // checked) and ignored. balancerd has no server queue, and there is no
                // half-closed or tunnel timer apart from client/server; configs carry these
                // almost always, so rejecting them would reject nearly every real file.
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
            case "httpchk":
                guard kind.isBackSide else { throw misplaced(line, keyword, kind) }
                guard enable else {
                    settings.checks.httpchk = nil
                    try noArguments()
                    return
                }
                settings.checks.httpchk = try httpchk(Array(words.dropFirst(2)), line: line)
            case "tcp-check", "ssl-hello-chk", "mysql-check", "pgsql-check", "redis-check",
                 "smtpchk", "ldap-check", "spop-check", "external-check":
                throw error(line, keyword, "'option \(name)' is not supported: health checks are TCP connects or HTTP requests ('option httpchk')")
            default:
                throw error(line, keyword, "unknown or unsupported option '\(name)'")
            }
        }

        // MARK: health checks and error files

        /// `option httpchk`, `option httpchk URI`, `option httpchk METHOD URI`, `option
        /// httpchk METHOD URI VERSION`. The version may carry header lines after a CR LF
        /// (written `\r\n` in the file; the tokenizer has made them real), and a body after
        /// an empty line: the pre-2.2 idiom, which haproxy 2.6 still sends as such.
        func httpchk(_ arguments: [String], line: Int) throws(ConfigurationError) -> HTTPCheck {
            let keyword = "option httpchk"
            var check = HTTPCheck()
            switch arguments.count {
            case 0: break
            case 1: check.uri = arguments[0]
            case 2, 3:
                check.method = arguments[0]
                check.uri = arguments[1]
            default:
                throw error(line, keyword, "too many arguments (expected [METHOD] URI [VERSION])")
            }
            guard check.method.utf8.allSatisfy(HTTPSyntax.isTokenChar), !check.method.isEmpty else {
                throw error(line, keyword, "invalid method '\(check.method)'")
            }
            guard !check.uri.isEmpty, !check.uri.contains(where: { $0 == "\r" || $0 == "\n" }) else {
                throw error(line, keyword, "invalid URI '\(check.uri)'")
            }
            guard arguments.count == 3 else { return check }

            let lines = Self.splitCRLF(arguments[2])
            check.version = lines[0]
            guard check.version.hasPrefix("HTTP/"), !check.version.contains(where: \.isWhitespace) else {
                throw error(line, keyword, "invalid HTTP version '\(check.version)' (e.g. HTTP/1.1)")
            }
            var index = 1
            while index < lines.count, !lines[index].isEmpty {
                let field = lines[index]
                guard let colon = field.firstIndex(of: ":"), colon != field.startIndex,
                      field[..<colon].utf8.allSatisfy(HTTPSyntax.isTokenChar) else {
                    throw error(line, keyword, "invalid header line '\(field)' after the version (expected NAME:VALUE)")
                }
                let value = field[field.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
                check.headers.append(HTTPCheckHeader(name: String(field[..<colon]), value: String(value)))
                index += 1
            }
            if index + 1 < lines.count {
                let body = lines[(index + 1)...].joined(separator: "\r\n")
                if !body.isEmpty { check.body = body }
            }
            return check
        }

        /// Splits on CR LF. Works on scalars because "\r\n" is a single `Character`.
        static func splitCRLF(_ text: String) -> [String] {
            var lines: [String] = []
            var current = String.UnicodeScalarView()
            var scalars = text.unicodeScalars.makeIterator()
            var pendingCR = false
            while let scalar = scalars.next() {
                if pendingCR {
                    pendingCR = false
                    if scalar == "\n" {
                        lines.append(String(current))
                        current = String.UnicodeScalarView()
                        continue
                    }
                    current.append("\r")
                }
                if scalar == "\r" { pendingCR = true } else { current.append(scalar) }
            }
            if pendingCR { current.append("\r") }
            lines.append(String(current))
            return lines
        }

        /// `http-check send ...` and `http-check expect ...`; other http-check rules
        /// (connect, set-var, comment) are errors.
        func httpCheck(_ words: [String], line: Int, checks: inout CheckSettings) throws(ConfigurationError) {
            guard words.count >= 2 else { throw error(line, "http-check", "'http-check' needs a rule (send or expect)") }
            let rule = words[1]
            let keyword = "http-check \(rule)"
            switch rule {
            case "send":
                var i = 2
                while i < words.count {
                    let option = words[i]
                    func value(_ offset: Int = 1) throws(ConfigurationError) -> String {
                        guard i + offset < words.count else { throw error(line, option, "'\(option)' needs a value") }
                        return words[i + offset]
                    }
                    switch option {
                    case "meth":
                        let method = try value()
                        guard !method.isEmpty, method.utf8.allSatisfy(HTTPSyntax.isTokenChar) else {
                            throw error(line, option, "invalid method '\(method)'")
                        }
                        checks.sendMethod = method
                        i += 2
                    case "uri":
                        checks.sendURI = try value()
                        i += 2
                    case "ver":
                        let version = try value()
                        guard version.hasPrefix("HTTP/") else { throw error(line, option, "invalid HTTP version '\(version)'") }
                        checks.sendVersion = version
                        i += 2
                    case "hdr":
                        let name = try value(1)
                        let fieldValue = try value(2)
                        guard !name.isEmpty, name.utf8.allSatisfy(HTTPSyntax.isTokenChar) else {
                            throw error(line, option, "invalid header name '\(name)'")
                        }
                        checks.sendHeaders.append(HTTPCheckHeader(name: name, value: fieldValue))
                        i += 3
                    case "body":
                        checks.sendBody = try value()
                        i += 2
                    case "comment":
                        _ = try value()
                        i += 2
                    case "uri-lf", "body-lf":
                        throw error(line, option, "'\(option)' (a log-format) is not supported; use '\(option.dropLast(3))'")
                    default:
                        throw error(line, option, "unknown 'http-check send' option '\(option)' (expected meth, uri, ver, hdr, body)")
                    }
                }
            case "expect":
                if let previous = checks.expect {
                    throw error(line, keyword, "only one 'http-check expect' per backend is supported (first at line \(previous.line))")
                }
                var i = 2
                var negated = false
                if i < words.count, words[i] == "!" {
                    negated = true
                    i += 1
                }
                guard i + 1 < words.count else {
                    throw error(line, keyword, "expected 'http-check expect [!] status CODES' or '... rstatus REGEX'")
                }
                let matcher = words[i], pattern = words[i + 1]
                if i + 2 < words.count { throw error(line, keyword, "unexpected argument '\(words[i + 2])'") }
                switch matcher {
                case "status":
                    var ranges: [ClosedRange<Int>] = []
                    for element in pattern.split(separator: ",", omittingEmptySubsequences: false) {
                        let bounds = element.split(separator: "-", omittingEmptySubsequences: false)
                        guard bounds.count <= 2, bounds.allSatisfy({ HAProxyParser.isDecimal($0) && $0.count <= 3 }),
                              let low = Int(bounds[0]), let high = Int(bounds[bounds.count - 1]), low <= high else {
                            throw error(line, keyword, "invalid status list '\(pattern)' (e.g. 200 or 200-299,301)")
                        }
                        ranges.append(low...high)
                    }
                    checks.expect = (.status(ranges, negated: negated), line)
                case "rstatus":
                    do {
                        _ = try Regex(pattern)
                    } catch {
                        throw self.error(line, keyword, "invalid regular expression '\(pattern)': \(error)")
                    }
                    checks.expect = (.statusRegex(pattern, negated: negated), line)
                case "string", "rstring", "hdr", "fhdr", "custom", "min-recv", "comment", "ok-status", "error-status",
                     "tout-status", "on-success", "on-error", "status-code":
                    throw error(line, keyword, "'http-check expect \(matcher)' is not supported (status and rstatus are)")
                default:
                    throw error(line, keyword, "unknown matcher '\(matcher)' (expected status or rstatus)")
                }
            case "connect", "set-var", "unset-var", "comment", "disable-on-404", "send-state":
                throw error(line, keyword, "'\(keyword)' is not supported (send and expect are)")
            default:
                throw error(line, keyword, "unknown http-check rule '\(rule)' (expected send or expect)")
            }
        }

        /// `errorfile CODE PATH`: the file is read now, as haproxy does, so a missing file
        /// stops the load instead of surprising the first client that gets the error. A
        /// relative path is relative to the working directory, as in haproxy.
        func errorFile(status text: String, path: String, line: Int) throws(ConfigurationError) -> ErrorFile {
            guard HAProxyParser.isDecimal(text), let status = Int(text), Self.errorFileStatuses.contains(status) else {
                throw error(line, "errorfile", "status code '\(text)' not handled (haproxy allows \(Self.errorFileStatuses.sorted().map(String.init).joined(separator: ", ")))")
            }
            switch HAProxyParser.readBytes(path) {
            case .success(let bytes):
                guard !bytes.isEmpty else { throw error(line, "errorfile", "'\(path)' is empty") }
                return ErrorFile(status: status, path: path, response: bytes)
            case .failure(let failure):
                throw error(line, "errorfile", "'\(path)': \(failure.message)")
            }
        }

        /// The statuses haproxy 2.6 accepts in `errorfile` (its http_err_codes).
        static let errorFileStatuses: Set<Int> = [200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429,
                                                  500, 501, 502, 503, 504]

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
                case "fastinter", "downinter":
                    let text = try value(for: keyword)
                    guard let interval = DurationParser.parse(text), interval > .zero else {
                        throw error(line, keyword, "invalid interval '\(text)' (a duration above zero, e.g. 2s or 500ms)")
                    }
                    if keyword == "fastinter" { parameters.health.fastInterval = interval } else { parameters.health.downInterval = interval }
                case "slowstart":
                    let text = try value(for: keyword)
                    guard let time = DurationParser.parse(text) else {
                        throw error(line, keyword, "invalid duration '\(text)' (e.g. 30s; 0 turns slow start off)")
                    }
                    parameters.slowStart = time == .zero ? nil : time
                case "rise":
                    parameters.health.rise = try integer(try value(for: keyword), line: line, keyword: keyword, in: 1...Int.max)
                case "fall":
                    parameters.health.fall = try integer(try value(for: keyword), line: line, keyword: keyword, in: 1...Int.max)
                case "maxconn":
                    // Accepted and ignored: balancerd has no per-server queue to enforce it with.
                    _ = try integer(try value(for: keyword), line: line, keyword: keyword, in: 0...Int.max)
                case "ssl":
                    parameters.ssl = true
                case "no-ssl":
                    parameters.ssl = false
                case "verify":
                    let text = try value(for: keyword)
                    guard let verify = TLSServerVerify(rawValue: text) else {
                        throw error(line, keyword, "invalid value '\(text)' (expected 'none' or 'required')")
                    }
                    parameters.tls.verify = verify
                case "ca-file":
                    var path = try value(for: keyword)
                    if let caBase, !path.hasPrefix("/") { path = caBase + "/" + path }
                    parameters.tls.caFile = path
                case "sni":
                    // haproxy takes a sample expression; balancerd sends a fixed name.
                    let text = try value(for: keyword)
                    guard text.hasPrefix("str("), text.hasSuffix(")"), text.count > 5 else {
                        throw error(line, keyword, "unsupported 'sni' expression '\(text)' (balancerd supports str(NAME))")
                    }
                    parameters.tls.serverName = String(text.dropFirst(4).dropLast())
                case "check-ssl":
                    parameters.checkSSL = true
                case "no-check-ssl":
                    parameters.checkSSL = false
                case "check-sni":
                    // haproxy takes a plain string here, not a sample expression: a
                    // `str(...)` copied from `sni` would go out as those very bytes.
                    let text = try value(for: keyword)
                    guard !text.isEmpty, text.utf8.count <= 255, !text.contains("("), !text.contains(where: \.isWhitespace) else {
                        throw error(line, keyword, "invalid server name '\(text)' (check-sni takes a plain host name such as www.example.com, not an expression)")
                    }
                    parameters.checkServerName = text
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
                guard proxy.tls.isEmpty else {
                    throw error(proxy.line, keyword, "stats section '\(proxy.name)': the stats page is served without TLS ('ssl' on its bind)")
                }
                guard proxy.servers.isEmpty, proxy.settings.defaultBackend == nil || proxy.kind == .listen else {
                    throw error(proxy.line, keyword, "stats section '\(proxy.name)' cannot also forward to servers")
                }
                stats = StatsConfig(name: proxy.name, bind: proxy.binds[0], uri: proxy.statsURI ?? "/",
                                    refresh: proxy.statsRefresh, credentials: proxy.statsCredentials, admin: proxy.statsAdmin)
            }
            let proxies = self.proxies.filter { !$0.statsEnabled }
            var backends: [BackendConfig] = []
            var backendIndex: [String: (config: BackendConfig, forwardFor: Bool)] = [:]
            for proxy in proxies where proxy.kind.isBackSide {
                let settings = proxy.settings
                let backend = BackendConfig(
                    name: proxy.name, mode: settings.mode, balance: .roundRobin, servers: proxy.servers,
                    timeouts: settings.timeouts, retries: settings.retries, redispatch: settings.redispatch,
                    allBackups: settings.allBackups, discovery: proxy.discovery,
                    healthCheck: settings.checks.resolved,
                    // Servers from discovery have no line of their own: `default-server
                    // check ...` is what they get.
                    defaultCheck: proxy.discovery != nil && settings.server.check ? settings.server.health : nil,
                    errorFiles: settings.errorFiles)
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
                if let routes = proxy.routes, proxy.settings.mode != .http {
                    throw error(routes.line, "discovery consul ... routes", "routes by host and path need 'mode http' in \(keyword) '\(proxy.name)'")
                }
                if let first = proxy.routingLines.first, proxy.settings.mode != .http {
                    throw error(first, keyword, "acl, use_backend and http-request need 'mode http' in \(keyword) '\(proxy.name)'")
                }
                for (rule, line) in zip(proxy.routing.useBackend, proxy.useBackendLines) {
                    guard let target = backendIndex[rule.backend] else {
                        throw error(line, "use_backend", "no backend or listen section named '\(rule.backend)'")
                    }
                    guard target.config.mode == .http else {
                        throw error(line, "use_backend", "backend '\(rule.backend)' is in \(target.config.mode.rawValue) mode, not http")
                    }
                }
                frontends.append(Frontend(
                    name: proxy.name, binds: proxy.binds, mode: proxy.settings.mode, defaultBackend: target.name,
                    timeouts: proxy.settings.timeouts,
                    // As in haproxy, `option forwardfor` on either side adds the header.
                    forwardFor: proxy.settings.forwardFor || backend.forwardFor,
                    errorFiles: proxy.settings.errorFiles, routing: proxy.routing))
                frontends[frontends.count - 1].routes = proxy.routes?.config
                frontends[frontends.count - 1].tls = proxy.tls.mapValues { $0.resolved(tlsDefaults) }
            }
            // No frontend is valid, as for haproxy (Debian's default haproxy.cfg has none):
            // such a file checks and exports, and `balancerd --config` says it has nothing
            // to listen on.
            return Configuration(global: global, frontends: frontends, backends: backends, stats: stats)
        }
    }
}
