// The command-line contract of balancerd. It belongs to the executable, not to the
// Balancer library: an embedder builds a `Configuration` in code and never sees flags.
// main.swift only calls `parse`, prints `usage` or a `UsageError`, and asks for
// `configuration()`; keeping the rules here lets them be unit-tested (`@testable import
// balancerd`) without starting a process.
//
//   balancerd [--config FILE] [--listen HOST:PORT] [--mode http|tcp] [--server HOST:PORT[,weight=N]]...
//             [--threads N] [--grace DURATION] [--quiet]
//   balancerd check --config FILE
//   balancerd --help | --version
//
// plus `--demo`, which starts built-in demo backends (the daemon does that; here it is
// only a flag).
import Balancer
import Discovery

/// A command line that cannot be run. `message` is one line, meant to be printed after
/// "balancerd: " and followed by a hint to use --help.
struct UsageError: Error, Sendable, Equatable, CustomStringConvertible {
    var message: String

    init(message: String) {
        self.message = message
    }

    var description: String { message }
}

struct CommandLineOptions: Sendable, Equatable {
    enum Command: Sendable, Equatable {
        /// Start the proxy.
        case run
        /// Parse and validate `--config`, then exit (status 0 when it is valid).
        case check
        /// Print the haproxy.cfg for what a run with the same options would do.
        case exportHAProxy
        /// `reload SOCKET`: ask the balancerd whose Runtime API socket that is to start its
        /// successor (Successor.swift), and wait for the outcome. systemd's ExecReload.
        case reload(socket: String)
        case help
        case version
    }

    var command: Command
    var configPath: String?
    /// nil when `--listen` was not given; `configuration()` then uses 0.0.0.0:80.
    var listen: HostPort?
    /// `--tls-cert PEM`, repeatable: the `--listen` address terminates TLS with these
    /// certificates (the first is the default, SNI picks among them), ALPN http/1.1.
    var tlsCertificates: [String] = []
    /// nil when `--mode` was not given; `configuration()` then uses `defaultMode`.
    var mode: ProxyMode?
    /// From `--server`, in order, named s1, s2, ...
    var servers: [ServerConfig]
    /// `--threads`; overrides `nbthread` from the file.
    var threads: Int?
    /// `--consul URL --service NAME [--tag TAG] [--dc DC] [--consul-token TOKEN]` or
    /// `--etcd URL --etcd-prefix PREFIX`: the servers follow a discovery source.
    var discovery: DiscoveryConfig?
    /// `--consul URL --routes-from-tags [--tag-prefix P]`: frontend "main" routes by host
    /// and path from the tags of every Consul service.
    var routes: RouteDiscoveryConfig?
    /// `--consul-stale`: every Consul query reads with `?stale`.
    var consulStale = false
    /// `--consul-max-stale D`: stale answers older than this are asked of the leader.
    var consulMaxStale: Duration = CommandLineOptions.defaultConsulMaxStale
    /// `--stats HOST:PORT`: the stats page and the live /haproxy.cfg.
    var stats: HostPort?
    /// `--check-interval DURATION`: active checks for every server, discovered ones too.
    var checkInterval: Duration?
    /// `--check-http PATH`: those checks are `GET PATH HTTP/1.1` expecting 2xx or 3xx.
    var checkHTTP: String?
    /// `--stats-socket PATH`: the Runtime API on a unix socket, at level admin.
    var statsSocket: String?
    /// `-x PATH` / `--takeover PATH` (haproxy's `-x`): take the listening sockets of the
    /// balancerd whose Runtime API socket is PATH, then tell it to stop (Handover.swift).
    var takeover: String?
    /// The raw discovery flags, assembled into `discovery` after the scan.
    private var consulURL: String?, consulService: String?, consulTag: String?, consulDC: String?, consulToken: String?
    private var routesFromTags = false, tagPrefix: String?, consulMaxStaleGiven = false
    private var etcdURL: String?, etcdPrefix: String?
    /// How long a graceful stop waits for open connections (`--grace`).
    var grace: Duration
    var quiet: Bool
    var demo: Bool

    /// The mode used when neither `--mode` nor a config file says otherwise: HTTP, as
    /// balancerd usually sits on port 80 in front of web servers.
    static let defaultMode: ProxyMode = .http
    static let defaultListen = HostPort(host: "0.0.0.0", port: 80)
    static let defaultGrace: Duration = .seconds(10)
    /// consul-template's max_stale idea; 2 s is 40 times what Consul calls the usual lag
    /// of a follower (50 ms), and far below a blocking wait.
    static let defaultConsulMaxStale: Duration = .seconds(2)

    init(command: Command = .run, configPath: String? = nil, listen: HostPort? = nil, mode: ProxyMode? = nil,
                servers: [ServerConfig] = [], threads: Int? = nil, grace: Duration = CommandLineOptions.defaultGrace,
                quiet: Bool = false, demo: Bool = false) {
        self.command = command
        self.configPath = configPath
        self.listen = listen
        self.mode = mode
        self.servers = servers
        self.threads = threads
        self.grace = grace
        self.quiet = quiet
        self.demo = demo
    }

    static let usage: String = """
        usage: balancerd [--config FILE] [--listen HOST:PORT [--tls-cert PEM]...] [--mode http|tcp] [--server HOST:PORT[,weight=N]]...
                         [--threads N] [--grace DURATION] [--quiet]
                         [--consul URL --service NAME [--tag TAG] [--dc DC] [--consul-token TOKEN]]
                         [--consul URL --routes-from-tags [--tag-prefix PREFIX]] [--consul-stale [--consul-max-stale D]]
                         [--etcd URL --etcd-prefix PREFIX] [--stats HOST:PORT] [--stats-socket PATH]
                         [--check-interval DURATION] [--check-http PATH] [-x|--takeover PATH]
               balancerd check --config FILE
               balancerd export-haproxy [the options of a run]
               balancerd reload SOCKET
               balancerd --help | --version

          --config FILE        read a haproxy.cfg (supported subset); cannot be combined with --listen/--server/--mode
          --listen HOST:PORT   address to accept clients on (default 0.0.0.0:80; *:PORT and [::]:PORT work)
          --tls-cert PEM       terminate TLS on --listen with this PEM (certificate chain and key; a directory
                               of PEMs works too); repeat for more certificates, chosen by SNI, the first
                               by default. TLS 1.2 and up, ALPN http/1.1, reloaded on SIGHUP
          --mode http|tcp      proxy mode (default http)
          --server HOST:PORT[,weight=N][,backup]
                               a backend server; repeat for more (named s1, s2, ... in order; weight 0-256, default 1)
          --threads N          event-loop threads, 1-1024 (default: one per CPU core); overrides nbthread
          --grace DURATION     how long a graceful stop waits for open connections (default 10s;
                               e.g. 500ms, 30s, 2m; a bare number is milliseconds, as in haproxy)
          --quiet              no per-connection / per-request log lines
          --stats HOST:PORT    serve the stats page at / and the live table as /haproxy.cfg
          --check-interval DURATION
                               check every server (discovered ones too) this often, as haproxy's
                               `check inter DURATION` with rise 2 fall 3; without --check-http a check is a TCP connect
          --check-http PATH    checks are `GET PATH HTTP/1.1` (Host: the server's HOST:PORT) and pass on 2xx or 3xx;
                               alone, it checks every 2s
          --stats-socket PATH  haproxy's Runtime API on a unix socket, level admin (show stat, set server ...),
                               with expose-fd listeners (a new balancerd takes over with -x PATH)
          -x, --takeover PATH  take the listening sockets of the balancerd whose Runtime API socket is PATH
                               ('stats socket PATH level admin expose-fd listeners'), start on them, then
                               tell it to stop: it finishes its connections within its --grace and exits 0.
                               Without the sockets (no such socket, or refused) balancerd exits 1, as haproxy does
          --consul URL         follow the passing instances of --service in Consul (blocking queries)
          --service NAME       the Consul service to follow
          --tag TAG            only instances with this tag
          --dc DC              the Consul datacenter to ask
          --consul-token TOKEN ACL token (default: $CONSUL_HTTP_TOKEN), sent as X-Consul-Token
          --routes-from-tags   route by host and path from the tags of every Consul service (fabio's
                               urlprefix-host/path, urlprefix-/path strip=/path, redirect=CODE,URL), each to
                               its passing instances; unmatched requests go to --server (if any)
          --tag-prefix PREFIX  the route tag prefix (default urlprefix-)
          --consul-stale       read with ?stale: any Consul server answers, not only the leader
          --consul-max-stale D with --consul-stale, ask the leader again when the answering server is more than D
                               behind it (X-Consul-LastContact; default 2s)
          --etcd URL           follow an etcd v3 prefix (JSON gateway), registrator's layout: PREFIX<ID> = host:port
          --etcd-prefix PREFIX the key prefix to follow
          --demo               start built-in demo backends and balance across them
          check                validate --config FILE and exit (status 0 when valid)
          export-haproxy       print the haproxy.cfg for a run with the same options (with --consul/--etcd:
                               one snapshot of the source)
          reload SOCKET        replace the running balancerd whose Runtime API socket is SOCKET (level admin,
                               expose-fd listeners) by a new process of the binary at its path, with its
                               arguments: it re-reads the file and takes the listeners; exit 0 once it has,
                               1 if it failed (the running one keeps serving). Also: SIGUSR2
          --help               print this help
          --version            print the version

        Flags take their value as --flag VALUE or --flag=VALUE.
        """

    /// Parses the arguments after argv[0]. `--help` and `--version` win over everything
    /// after a successful scan, so `balancerd --server x:1 --help` prints help.
    static func parse(_ arguments: [String]) throws(UsageError) -> CommandLineOptions {
        var options = CommandLineOptions()
        var help = false
        var version = false
        var seen: Set<String> = []  // flags that may appear once
        var used: [String] = []  // every flag, in order, for the `check` rule
        var remaining = arguments[...]

        if remaining.first == "reload" {
            guard remaining.count == 2, let socket = remaining.last, !socket.hasPrefix("-") else {
                throw UsageError(message: "reload takes one argument: the Runtime API socket of the running balancerd (reload /run/balancerd/admin.sock)")
            }
            options.command = .reload(socket: socket)
            return options
        }
        if remaining.first == "check" {
            options.command = .check
            remaining = remaining.dropFirst()
        } else if remaining.first == "export-haproxy" {
            options.command = .exportHAProxy
            remaining = remaining.dropFirst()
        }

        while var argument = remaining.popFirst() {
            // haproxy's one-letter spelling, kept for operators who type it by habit.
            if argument == "-x" { argument = "--takeover" }
            guard argument.hasPrefix("--") else {
                throw UsageError(message: "unexpected argument '\(argument)'" + (argument == "check" ? " ('check' must come first)" : ""))
            }
            let flag: String
            var inlineValue: String? = nil
            if let equals = argument.firstIndex(of: "=") {
                flag = String(argument[..<equals])
                inlineValue = String(argument[argument.index(after: equals)...])
            } else {
                flag = argument
            }
            used.append(flag)

            /// The flag's value: after `=`, or the next argument unless that is another flag.
            func value() throws(UsageError) -> String {
                if let inlineValue {
                    guard !inlineValue.isEmpty else { throw UsageError(message: "\(flag) needs a value") }
                    return inlineValue
                }
                guard let next = remaining.first, !next.hasPrefix("--") else {
                    throw UsageError(message: "\(flag) needs a value")
                }
                remaining = remaining.dropFirst()
                return next
            }
            func noValue() throws(UsageError) {
                if inlineValue != nil { throw UsageError(message: "\(flag) takes no value") }
            }
            func once() throws(UsageError) {
                guard seen.insert(flag).inserted else { throw UsageError(message: "\(flag) given more than once") }
            }

            switch flag {
            case "--config":
                try once()
                options.configPath = try value()
            case "--listen":
                try once()
                let text = try value()
                do throws(HAProxyParser.AddressError) {
                    options.listen = try HAProxyParser.AddressSyntax.parse(text, isBind: true)
                } catch {
                    throw UsageError(message: "--listen: \(error.message)")
                }
            case "--tls-cert":
                options.tlsCertificates.append(try value())
            case "--mode":
                try once()
                let text = try value()
                guard let mode = ProxyMode(rawValue: text) else {
                    throw UsageError(message: "--mode: expected http or tcp, got '\(text)'")
                }
                options.mode = mode
            case "--server":
                let text = try value()
                options.servers.append(try server(text, name: "s\(options.servers.count + 1)"))
            case "--threads":
                try once()
                let text = try value()
                guard HAProxyParser.isDecimal(text), let threads = Int(text), (1...1024).contains(threads) else {
                    throw UsageError(message: "--threads: expected an integer from 1 to 1024, got '\(text)'")
                }
                options.threads = threads
            case "--grace":
                try once()
                let text = try value()
                guard let grace = DurationParser.parse(text) else {
                    throw UsageError(message: "--grace: invalid duration '\(text)' (e.g. 500ms, 10s, 2m)")
                }
                options.grace = grace
            case "--quiet":
                try noValue()
                options.quiet = true
            case "--stats":
                try once()
                let text = try value()
                do throws(HAProxyParser.AddressError) {
                    options.stats = try HAProxyParser.AddressSyntax.parse(text, isBind: true)
                } catch {
                    throw UsageError(message: "--stats: \(error.message)")
                }
            case "--check-interval":
                try once()
                let text = try value()
                guard let interval = DurationParser.parse(text), interval > .zero else {
                    throw UsageError(message: "--check-interval: invalid duration '\(text)' (e.g. 500ms, 2s, 1m)")
                }
                options.checkInterval = interval
            case "--check-http":
                try once()
                let path = try value()
                guard path.hasPrefix("/"), !path.contains(where: { $0 == " " || $0.isNewline }) else {
                    throw UsageError(message: "--check-http: expected a path starting with '/' and without spaces, got '\(path)'")
                }
                options.checkHTTP = path
            case "--stats-socket":
                try once()
                options.statsSocket = try value()
            case "--takeover":
                try once()
                options.takeover = try value()
            case "--consul":
                try once()
                options.consulURL = try value()
            case "--service":
                try once()
                options.consulService = try value()
            case "--tag":
                try once()
                options.consulTag = try value()
            case "--dc":
                try once()
                options.consulDC = try value()
            case "--consul-token":
                try once()
                options.consulToken = try value()
            case "--routes-from-tags":
                try noValue()
                options.routesFromTags = true
            case "--tag-prefix":
                try once()
                let prefix = try value()
                guard !prefix.contains(where: { $0 == " " || $0 == "\t" }) else {
                    throw UsageError(message: "--tag-prefix: a prefix cannot contain blanks, got '\(prefix)'")
                }
                options.tagPrefix = prefix
            case "--consul-stale":
                try noValue()
                options.consulStale = true
            case "--consul-max-stale":
                try once()
                let text = try value()
                guard let bound = DurationParser.parse(text), bound > .zero else {
                    throw UsageError(message: "--consul-max-stale: invalid duration '\(text)' (e.g. 500ms, 2s)")
                }
                options.consulMaxStale = bound
                options.consulMaxStaleGiven = true
            case "--etcd":
                try once()
                options.etcdURL = try value()
            case "--etcd-prefix":
                try once()
                options.etcdPrefix = try value()
            case "--demo":
                try noValue()
                options.demo = true
            case "--help":
                try noValue()
                help = true
            case "--version":
                try noValue()
                version = true
            default:
                throw UsageError(message: "unknown option '\(flag)' (see --help)")
            }
        }

        if help {
            options.command = .help
            return options
        }
        if version {
            options.command = .version
            return options
        }
        try options.assembleDiscovery()
        try options.validate(flags: used)
        return options
    }

    /// Turns the discovery flags into one `DiscoveryConfig`, or says what is missing.
    private mutating func assembleDiscovery() throws(UsageError) {
        if let url = consulURL {
            guard etcdURL == nil else { throw UsageError(message: "--consul and --etcd cannot be combined") }
            guard url.hasPrefix("http://") else { throw UsageError(message: "--consul: URL must start with http:// (got '\(url)')") }
            if let service = consulService {
                discovery = .consul(url: url, service: service, tag: consulTag, datacenter: consulDC, token: consulToken)
            } else if !routesFromTags {
                throw UsageError(message: "--consul needs --service NAME or --routes-from-tags")
            } else if consulTag != nil {
                throw UsageError(message: "--tag needs --service NAME (route tags are chosen with --tag-prefix)")
            }
            if routesFromTags {
                routes = RouteDiscoveryConfig(url: url, tagPrefix: tagPrefix ?? "urlprefix-", stale: consulStale,
                                              token: consulToken, datacenter: consulDC)
            }
        } else if consulService != nil || consulTag != nil || consulDC != nil || consulToken != nil {
            throw UsageError(message: "--service, --tag, --dc and --consul-token need --consul URL")
        } else if routesFromTags {
            throw UsageError(message: "--routes-from-tags needs --consul URL")
        } else if consulStale && configPath == nil {
            throw UsageError(message: "--consul-stale needs --consul URL (or --config FILE with discovery consul lines)")
        }
        if tagPrefix != nil && !routesFromTags {
            throw UsageError(message: "--tag-prefix needs --routes-from-tags")
        }
        if consulMaxStaleGiven && !consulStale {
            throw UsageError(message: "--consul-max-stale needs --consul-stale (only stale reads can be behind the leader)")
        }
        if let url = etcdURL {
            guard url.hasPrefix("http://") else { throw UsageError(message: "--etcd: URL must start with http:// (got '\(url)')") }
            guard let prefix = etcdPrefix, !prefix.isEmpty else { throw UsageError(message: "--etcd needs --etcd-prefix PREFIX") }
            discovery = .etcd(url: url, prefix: prefix)
        } else if etcdPrefix != nil {
            throw UsageError(message: "--etcd-prefix needs --etcd URL")
        }
    }

    /// How every Consul query reads (--consul-stale, --consul-max-stale).
    var consulReadPolicy: ConsulReadPolicy {
        ConsulReadPolicy(stale: consulStale, maxStale: consulMaxStale)
    }

    /// The rules that involve more than one flag.
    private func validate(flags: [String]) throws(UsageError) {
        if configPath != nil {
            if listen != nil || !servers.isEmpty || mode != nil || discovery != nil || routes != nil || !tlsCertificates.isEmpty {
                throw UsageError(message: "--config cannot be combined with --listen/--server/--mode/--consul/--etcd; put them in the file")
            }
            if checkInterval != nil || checkHTTP != nil {
                throw UsageError(message: "--check-interval and --check-http cannot be combined with --config; use `check` and `option httpchk` in the file")
            }
            if demo {
                throw UsageError(message: "--demo cannot be combined with --config; the demo brings its own servers")
            }
        }
        switch command {
        case .check:
            guard configPath != nil else { throw UsageError(message: "check needs --config FILE") }
            if let other = flags.first(where: { $0 != "--config" }) {
                throw UsageError(message: "check takes only --config FILE, not \(other)")
            }
        case .run, .exportHAProxy:
            if command == .exportHAProxy && takeover != nil {
                throw UsageError(message: "export-haproxy cannot take listeners over (-x/--takeover); it only prints a file")
            }
            if command == .exportHAProxy && demo {
                throw UsageError(message: "export-haproxy cannot export --demo (its servers exist only while it runs)")
            }
            if !tlsCertificates.isEmpty && mode == .tcp {
                throw UsageError(message: "--tls-cert works in HTTP mode only")
            }
            if !tlsCertificates.isEmpty && listen == nil {
                throw UsageError(message: "--tls-cert needs --listen HOST:PORT (the address that terminates TLS)")
            }
            if routes != nil && mode == .tcp {
                throw UsageError(message: "--routes-from-tags routes HTTP requests; it cannot be combined with --mode tcp")
            }
            if configPath == nil && servers.isEmpty && !demo && discovery == nil && routes == nil {
                throw UsageError(message: "no servers: give --server HOST:PORT, --consul URL, --etcd URL or --config FILE")
            }
        case .help, .version, .reload:
            break
        }
    }

    /// `HOST:PORT[,weight=N][,backup]`.
    private static func server(_ text: String, name: String) throws(UsageError) -> ServerConfig {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        let address: HostPort
        do throws(HAProxyParser.AddressError) {
            address = try HAProxyParser.AddressSyntax.parse(String(parts[0]), isBind: false)
        } catch {
            throw UsageError(message: "--server: \(error.message)")
        }
        var server = ServerConfig(name: name, address: address)
        var seen: Set<Substring> = []
        for part in parts.dropFirst() {
            let key = part.split(separator: "=", maxSplits: 1).first ?? part
            guard seen.insert(key).inserted else {
                throw UsageError(message: "--server: '\(key)' given more than once in '\(text)'")
            }
            if part == "backup" {
                server.backup = true
            } else if part.hasPrefix("weight=") {
                let weight = part.dropFirst("weight=".count)
                guard HAProxyParser.isDecimal(weight), let value = Int(weight), (0...256).contains(value) else {
                    throw UsageError(message: "--server: weight must be an integer from 0 to 256, got '\(weight)'")
                }
                server.weight = value
            } else {
                throw UsageError(message: "--server: unknown option '\(part)' in '\(text)' (expected weight=N or backup)")
            }
        }
        return server
    }

    /// The configuration a run (or `check`) uses. With `--config` it is the file's, with
    /// `--threads` overriding `nbthread`; errors are `ConfigurationError`s from the parser.
    /// Otherwise it is built from the flags: one frontend "main" on `--listen` (default
    /// 0.0.0.0:80) forwarding to one backend "main" with the `--server` list and default
    /// timeouts. With `--demo` and no `--server`, backend "main" has no servers: the
    /// daemon starts the demo backends and fills them in.
    func configuration() throws(ConfigurationError) -> Configuration {
        var configuration: Configuration
        if let configPath {
            configuration = try HAProxyParser.load(path: configPath)
        } else {
            let mode = mode ?? Self.defaultMode
            var frontend = Frontend(name: "main", binds: [listen ?? Self.defaultListen], mode: mode, defaultBackend: "main",
                                    // From flags, HTTP mode adds X-Forwarded-For (haproxy's `option
                                    // forwardfor`): servers behind a balancer nearly always want the
                                    // client address. A config file says it explicitly, as in haproxy.
                                    forwardFor: mode == .http)
            frontend.routes = routes
            if !tlsCertificates.isEmpty {
                // What Debian's haproxy.cfg and Mozilla's "intermediate" profile ask for.
                var tls = TLSBindConfig(certificates: tlsCertificates, alpn: ["http/1.1"])
                tls.options.minVersion = .tls12
                frontend.tls[frontend.binds[0]] = tls
            }
            configuration = Configuration(
                frontends: [frontend],
                backends: [BackendConfig(name: "main", mode: mode, servers: servers, discovery: discovery)])
            if checkInterval != nil || checkHTTP != nil {
                // haproxy's `check` defaults (inter 2s, rise 2, fall 3), with the interval asked.
                let check = HealthCheckConfig(interval: checkInterval ?? HealthCheckConfig().interval)
                configuration.backends[0].defaultCheck = check
                for i in configuration.backends[0].servers.indices { configuration.backends[0].servers[i].check = check }
                if let checkHTTP {
                    configuration.backends[0].healthCheck.http = HTTPCheck(method: "GET", uri: checkHTTP, version: "HTTP/1.1",
                                                                           hostFromServerAddress: true)
                }
            }
        }
        if let threads {
            configuration.global.threads = threads
        }
        if let stats {
            configuration.stats = StatsConfig(bind: stats)
        }
        if let statsSocket {
            // admin: the flag exists to drain and disable servers (haproxy's own default,
            // operator, may only look). It exposes the listeners too: without a file there
            // is no other way to ask for it, and only admin may take them anyway.
            configuration.global.statsSocket = RuntimeSocketConfig(path: statsSocket, level: .admin, exposeFDListeners: true)
        }
        return configuration
    }
}
