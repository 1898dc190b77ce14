// The configuration model: plain values, no parsing and no I/O.
//
// haproxy keeps its type headers (`*-t.h`) apart from the code that fills them; we do
// the same so the parser, the CLI and (later) the exporter all meet on these types.
// Every value here is already resolved: `defaults` have been applied and durations are
// `Duration`s, so the runtime never needs to know which source a setting came from.

/// The whole daemon configuration: one or more frontends, each pointing at a backend.
public struct Configuration: Sendable, Equatable {
    public var global: GlobalSettings
    public var frontends: [Frontend]
    public var backends: [BackendConfig]
    /// The stats listener (haproxy's `listen stats` with `stats enable`, or `--stats`).
    public var stats: StatsConfig?

    public init(global: GlobalSettings = GlobalSettings(), frontends: [Frontend] = [], backends: [BackendConfig] = [],
                stats: StatsConfig? = nil) {
        self.global = global
        self.frontends = frontends
        self.backends = backends
        self.stats = stats
    }

    /// The same configuration with the settings a section inherits but never uses set to
    /// their defaults: a frontend's connect/server timeouts, a backend's client-side
    /// timeouts. Two configurations that behave the same are then equal, whatever
    /// `defaults` sections they were written with (used by the export round trip).
    public func normalized() -> Configuration {
        var copy = self
        let plain = Timeouts()
        for i in copy.frontends.indices {
            copy.frontends[i].timeouts.connect = plain.connect
            copy.frontends[i].timeouts.server = plain.server
        }
        for i in copy.backends.indices {
            copy.backends[i].timeouts.client = plain.client
            copy.backends[i].timeouts.httpRequest = plain.httpRequest
            copy.backends[i].timeouts.httpKeepAlive = plain.httpKeepAlive
        }
        return copy
    }

    /// The backend a frontend forwards to, by name.
    public func backend(named name: String) -> BackendConfig? {
        backends.first { $0.name == name }
    }
}

/// Where the stats page and the live `/haproxy.cfg` export are served.
public struct StatsConfig: Sendable, Equatable {
    public var name: String
    public var bind: HostPort
    /// The stats page's path (`stats uri`); `/haproxy.cfg` is served next to it.
    public var uri: String
    /// `stats refresh D`: the page reloads itself this often (nil: balancerd's default).
    public var refresh: Duration?
    /// `stats auth USER:PASS` lines. With any, admin actions over HTTP need one of them
    /// (HTTP Basic); without, they are taken from loopback clients only.
    public var credentials: [StatsCredential]
    /// `stats admin if ...` seen: the page offers admin actions (drain, maint, ready,
    /// weight). Who may use them is decided by `credentials` and the client's address.
    public var admin: Bool

    public init(name: String = "stats", bind: HostPort, uri: String = "/", refresh: Duration? = nil,
                credentials: [StatsCredential] = [], admin: Bool = false) {
        self.name = name
        self.bind = bind
        self.uri = uri
        self.refresh = refresh
        self.credentials = credentials
        self.admin = admin
    }
}

/// One `stats auth USER:PASS` line.
public struct StatsCredential: Sendable, Equatable {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }
}

/// haproxy's `stats socket PATH [mode OCTAL] [level user|operator|admin]` (global), or
/// `--stats-socket PATH`: the Runtime API's unix socket.
public struct RuntimeSocketConfig: Sendable, Equatable {
    public enum Level: String, Sendable, Equatable, CaseIterable {
        case user, `operator`, admin
    }

    public var path: String
    /// Permission bits of the socket file (`mode 660`); nil leaves the umask's.
    public var mode: UInt32?
    /// What the socket lets a client do (`level`). The default is haproxy's for a socket
    /// line without `level`; the parser sets it.
    public var level: Level
    /// `expose-fd listeners`: the socket hands the listening sockets to a new balancerd
    /// started with `-x PATH` (`_getsocks`), which then tells this one to stop. Only at
    /// level admin: whoever holds the listeners can accept every client.
    public var exposeFDListeners: Bool

    public init(path: String, mode: UInt32? = nil, level: Level, exposeFDListeners: Bool = false) {
        self.path = path
        self.mode = mode
        self.level = level
        self.exposeFDListeners = exposeFDListeners
    }
}

/// `global` section settings.
public struct GlobalSettings: Sendable, Equatable {
    /// Concurrent client connections across all threads (haproxy `maxconn`), as the user
    /// set it. nil: derived from the open-file limit when the proxy starts, as haproxy
    /// does (see `MaxConnections`), and not written by the export.
    public var maxConnections: Int? = nil
    /// Number of event-loop threads; nil means one per core (`nbthread`).
    public var threads: Int? = nil
    /// The Runtime API socket (`stats socket` in global, or `--stats-socket`).
    public var statsSocket: RuntimeSocketConfig? = nil

    public init(maxConnections: Int? = nil, threads: Int? = nil, statsSocket: RuntimeSocketConfig? = nil) {
        self.maxConnections = maxConnections
        self.threads = threads
        self.statsSocket = statsSocket
    }
}

public enum ProxyMode: String, Sendable, Equatable, CaseIterable {
    case tcp
    case http
}

/// Every timeout the proxy knows. Defaults follow the issue: connect 5 s, client and
/// server inactivity 50 s. The HTTP ones are used by HTTP mode only.
public struct Timeouts: Sendable, Equatable {
    public var connect: Duration = .seconds(5)
    public var client: Duration = .seconds(50)
    public var server: Duration = .seconds(50)
    public var httpRequest: Duration = .seconds(10)
    public var httpKeepAlive: Duration = .seconds(10)

    public init() {}
}

/// Host and port as written in the configuration (`bind`, `server`). Resolution to a
/// socket address happens when the configuration is applied, not while parsing.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    /// A literal IPv4/IPv6 address or a host name. `"*"`/`""` in a bind means all addresses.
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

public struct Frontend: Sendable, Equatable {
    public var name: String
    public var binds: [HostPort]
    public var mode: ProxyMode
    public var defaultBackend: String
    /// Only `client` (and the http-* ones) apply on the frontend side.
    public var timeouts: Timeouts
    /// haproxy `option forwardfor` (HTTP mode).
    public var forwardFor: Bool
    /// `errorfile CODE PATH` in this frontend (or its defaults): used for the errors that
    /// happen before a backend is chosen (400, 408), and for any status the backend has
    /// no file for.
    public var errorFiles: [ErrorFile]
    /// balancerd extension, `discovery consul URL routes` (or --routes-from-tags): routes
    /// by host and path from the tags of every Consul service (see RouteDiscoveryConfig).
    public var routes: RouteDiscoveryConfig? = nil
    /// `acl`, `http-request` and `use_backend` lines (HTTP mode only).
    public var routing: FrontendRouting
    /// The binds that terminate TLS (`ssl crt ...`), by address; a bind not here is plain.
    public var tls: [HostPort: TLSBindConfig] = [:]

    public init(name: String, binds: [HostPort], mode: ProxyMode, defaultBackend: String,
                timeouts: Timeouts = Timeouts(), forwardFor: Bool = false, errorFiles: [ErrorFile] = [],
                routing: FrontendRouting = FrontendRouting()) {
        self.routing = routing
        self.name = name
        self.binds = binds
        self.mode = mode
        self.defaultBackend = defaultBackend
        self.timeouts = timeouts
        self.forwardFor = forwardFor
        self.errorFiles = errorFiles
    }
}

public enum BalanceAlgorithm: String, Sendable, Equatable {
    case roundRobin = "roundrobin"
}

/// Active health check parameters of one server (`check inter D fastinter D downinter D
/// rise N fall N`). What a check sends is the backend's (`BackendHealthCheck`).
public struct HealthCheckConfig: Sendable, Equatable {
    public var interval: Duration = .seconds(2)
    public var rise: Int = 2
    public var fall: Int = 3
    /// `fastinter`: the interval while a server is between states (UP but failing, or
    /// DOWN but passing). nil: `interval`.
    public var fastInterval: Duration? = nil
    /// `downinter`: the interval while a server is DOWN. nil: `interval`.
    public var downInterval: Duration? = nil

    public init(interval: Duration = .seconds(2), rise: Int = 2, fall: Int = 3,
                fastInterval: Duration? = nil, downInterval: Duration? = nil) {
        self.interval = interval
        self.rise = rise
        self.fall = fall
        self.fastInterval = fastInterval
        self.downInterval = downInterval
    }
}

/// What a backend's checks do beyond the TCP connect: `option httpchk`, `http-check send`,
/// `http-check expect` and `timeout check`.
public struct BackendHealthCheck: Sendable, Equatable {
    /// nil: a check is a TCP connect (layer 4). Otherwise an HTTP request (layer 7).
    public var http: HTTPCheck?
    /// `timeout check`: once connected, how long the reply may take. nil: haproxy's rule,
    /// `inter` bounds the whole check. The connect itself is bounded by
    /// min(`timeout connect`, `inter`).
    public var timeout: Duration?

    public init(http: HTTPCheck? = nil, timeout: Duration? = nil) {
        self.http = http
        self.timeout = timeout
    }
}

/// An HTTP health check request and what its response must show.
public struct HTTPCheck: Sendable, Equatable {
    /// haproxy's defaults for a bare `option httpchk`: `OPTIONS / HTTP/1.0`.
    public var method: String = "OPTIONS"
    public var uri: String = "/"
    public var version: String = "HTTP/1.0"
    /// Header fields, in order: from `\r\n`-separated text after the version in
    /// `option httpchk` (the old idiom: `HTTP/1.1\r\nHost:localhost`) and from
    /// `http-check send hdr NAME VALUE`.
    public var headers: [HTTPCheckHeader] = []
    /// `http-check send body TEXT`.
    public var body: String? = nil
    /// `http-check expect ...`; nil: any 2xx or 3xx status passes (haproxy's default).
    public var expect: HTTPCheckExpect? = nil
    /// Send `Host: <the checked server's HOST:PORT>` when `headers` have no Host: what
    /// `--check-http` asks for, since one backend-wide header cannot name each server
    /// (discovered ones included). haproxy has no such setting; a file never sets it.
    public var hostFromServerAddress: Bool = false

    public init(method: String = "OPTIONS", uri: String = "/", version: String = "HTTP/1.0",
                headers: [HTTPCheckHeader] = [], body: String? = nil, expect: HTTPCheckExpect? = nil,
                hostFromServerAddress: Bool = false) {
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers
        self.body = body
        self.expect = expect
        self.hostFromServerAddress = hostFromServerAddress
    }
}

public struct HTTPCheckHeader: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// `http-check expect [!] status CODES` or `http-check expect [!] rstatus REGEX`.
public enum HTTPCheckExpect: Sendable, Equatable {
    /// Codes as haproxy reads them: a comma-separated list of codes and ranges
    /// (`200,301-303`), kept as ranges.
    case status([ClosedRange<Int>], negated: Bool)
    /// A regular expression matched against the status code's three digits.
    case statusRegex(String, negated: Bool)
}

/// A file's bytes served as the whole response for a status (`errorfile CODE PATH`):
/// read when the configuration is loaded, as haproxy does, so a missing file is a
/// configuration error and not a surprise at the first 503.
public struct ErrorFile: Sendable, Equatable {
    public var status: Int
    public var path: String
    /// The file as written: a status line, header fields, an empty line and a body.
    public var response: [UInt8]

    public init(status: Int, path: String, response: [UInt8]) {
        self.status = status
        self.path = path
        self.response = response
    }
}

public struct ServerConfig: Sendable, Equatable {
    public var name: String
    public var address: HostPort
    /// 0...256 as in haproxy; 0 means "no new traffic".
    public var weight: Int
    public var backup: Bool
    /// nil when the server line has no `check`.
    public var check: HealthCheckConfig?
    /// `slowstart D`: after the server comes back UP, its weight ramps from almost
    /// nothing to `weight` over this time.
    public var slowStart: Duration?
    /// `ssl ...`: the connection to the server is TLS. nil: plain TCP.
    public var tls: TLSServerConfig?
    /// The TLS of the health checks, nil for plain TCP checks: haproxy's `check-ssl`,
    /// `no-check-ssl` and `check-sni`, resolved. By default checks go the way traffic goes
    /// (TLS for an `ssl` server), with the server's `verify` and `ca-file`, and without SNI:
    /// haproxy 2.6 sends none for checks unless `check-sni` names one (`serverName`); the
    /// `sni` of traffic is not used. haproxy has one `verify`/`ca-file` per server, so the
    /// export writes those of `tls` when both are set. The initialisers set it; assigning
    /// `tls` later leaves it as it was.
    public var checkTLS: TLSServerConfig?

    /// `checkTLS` defaults to haproxy's: `tls` without its server name.
    public init(name: String, address: HostPort, weight: Int = 1, backup: Bool = false, check: HealthCheckConfig? = nil,
                slowStart: Duration? = nil, tls: TLSServerConfig? = nil) {
        self.name = name
        self.address = address
        self.weight = weight
        self.backup = backup
        self.check = check
        self.slowStart = slowStart
        self.tls = tls
        self.checkTLS = tls.map { TLSServerConfig(verify: $0.verify, caFile: $0.caFile) }
    }

    /// A server whose checks use `checkTLS` (nil: plain checks), whatever its traffic uses.
    public init(name: String, address: HostPort, weight: Int = 1, backup: Bool = false, check: HealthCheckConfig? = nil,
                slowStart: Duration? = nil, tls: TLSServerConfig? = nil, checkTLS: TLSServerConfig?) {
        self.init(name: name, address: address, weight: weight, backup: backup, check: check, slowStart: slowStart, tls: tls)
        self.checkTLS = checkTLS
    }
}

public struct BackendConfig: Sendable, Equatable {
    public var name: String
    public var mode: ProxyMode
    public var balance: BalanceAlgorithm
    public var servers: [ServerConfig]
    /// `connect` and `server` apply on the backend side.
    public var timeouts: Timeouts
    /// Extra connection attempts after the first fails (haproxy `retries`, default 3).
    public var retries: Int
    /// `option redispatch`: a retry may go to another server.
    public var redispatch: Bool
    /// `option allbackups`: use every backup server, not just the first.
    public var allBackups: Bool
    /// Where the server list comes from when it is not (only) the `server` lines: a
    /// balancerd extension, `discovery consul|etcd ...` (see DiscoveryConfig).
    public var discovery: DiscoveryConfig?
    /// What this backend's checks send and expect (`option httpchk`, `http-check`,
    /// `timeout check`). Which servers are checked, and how often, is per server.
    public var healthCheck: BackendHealthCheck
    /// Check parameters for servers that arrive without any: servers from discovery, or
    /// every server with `--check-interval`. A file's `default-server check ...` in a
    /// discovered backend sets it too. nil: such servers are not checked.
    public var defaultCheck: HealthCheckConfig?
    /// `errorfile CODE PATH` in this backend (or its defaults): used for the errors that
    /// happen once this backend is chosen (502, 503, 504).
    public var errorFiles: [ErrorFile]

    public init(name: String, mode: ProxyMode, balance: BalanceAlgorithm = .roundRobin, servers: [ServerConfig] = [],
                timeouts: Timeouts = Timeouts(), retries: Int = 3, redispatch: Bool = true, allBackups: Bool = false,
                discovery: DiscoveryConfig? = nil, healthCheck: BackendHealthCheck = BackendHealthCheck(),
                defaultCheck: HealthCheckConfig? = nil, errorFiles: [ErrorFile] = []) {
        self.name = name
        self.mode = mode
        self.balance = balance
        self.servers = servers
        self.timeouts = timeouts
        self.retries = retries
        self.redispatch = redispatch
        self.allBackups = allBackups
        self.discovery = discovery
        self.healthCheck = healthCheck
        self.defaultCheck = defaultCheck
        self.errorFiles = errorFiles
    }
}

/// A discovery source for a backend: its servers follow Consul or etcd instead of (or
/// after) the `server` lines of the file.
public enum DiscoveryConfig: Sendable, Equatable {
    /// Consul's health API: the passing instances of `service` (with `tag`, in `datacenter`).
    case consul(url: String, service: String, tag: String?, datacenter: String?, token: String?, stale: Bool = false)
    /// etcd v3 (JSON gateway): every key under `prefix` holds `host:port` (registrator's layout).
    case etcd(url: String, prefix: String)
}

/// Where a frontend's discovered routes come from: every service in Consul's catalog with
/// a tag starting with `tagPrefix` (fabio's `urlprefix-host/path`), routed to its passing
/// instances.
public struct RouteDiscoveryConfig: Sendable, Equatable {
    /// `http://host:port[/prefix]` of a Consul agent.
    public var url: String
    public var tagPrefix: String
    /// Reads with `?stale`: any Consul server answers, not only the leader.
    public var stale: Bool
    /// ACL token; nil: `$CONSUL_HTTP_TOKEN`, as every Consul client does.
    public var token: String?
    public var datacenter: String?

    public init(url: String, tagPrefix: String = "urlprefix-", stale: Bool = false, token: String? = nil, datacenter: String? = nil) {
        self.url = url
        self.tagPrefix = tagPrefix
        self.stale = stale
        self.token = token
        self.datacenter = datacenter
    }
}

/// Error raised for a bad configuration file: always names the file, the line and the
/// keyword, so the message can be acted on without opening a debugger.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var keyword: String
    public var message: String

    public init(file: String, line: Int, keyword: String, message: String) {
        self.file = file
        self.line = line
        self.keyword = keyword
        self.message = message
    }

    public var description: String {
        "\(file):\(line): '\(keyword)': \(message)"
    }
}
