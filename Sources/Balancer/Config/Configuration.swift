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

    public init(name: String = "stats", bind: HostPort, uri: String = "/") {
        self.name = name
        self.bind = bind
        self.uri = uri
    }
}

/// `global` section settings.
public struct GlobalSettings: Sendable, Equatable {
    /// Concurrent client connections across all threads (haproxy `maxconn`).
    public var maxConnections: Int = 10_000
    /// Number of event-loop threads; nil means one per core (`nbthread`).
    public var threads: Int? = nil

    public init(maxConnections: Int = 10_000, threads: Int? = nil) {
        self.maxConnections = maxConnections
        self.threads = threads
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

    public init(name: String, binds: [HostPort], mode: ProxyMode, defaultBackend: String,
                timeouts: Timeouts = Timeouts(), forwardFor: Bool = false) {
        self.name = name
        self.binds = binds
        self.mode = mode
        self.defaultBackend = defaultBackend
        self.timeouts = timeouts
        self.forwardFor = forwardFor
    }
}

public enum BalanceAlgorithm: String, Sendable, Equatable {
    case roundRobin = "roundrobin"
}

/// Active health check parameters of one server (`check inter D rise N fall N`).
public struct HealthCheckConfig: Sendable, Equatable {
    public var interval: Duration = .seconds(2)
    public var rise: Int = 2
    public var fall: Int = 3

    public init(interval: Duration = .seconds(2), rise: Int = 2, fall: Int = 3) {
        self.interval = interval
        self.rise = rise
        self.fall = fall
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

    public init(name: String, address: HostPort, weight: Int = 1, backup: Bool = false, check: HealthCheckConfig? = nil) {
        self.name = name
        self.address = address
        self.weight = weight
        self.backup = backup
        self.check = check
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

    public init(name: String, mode: ProxyMode, balance: BalanceAlgorithm = .roundRobin, servers: [ServerConfig] = [],
                timeouts: Timeouts = Timeouts(), retries: Int = 3, redispatch: Bool = true, allBackups: Bool = false,
                discovery: DiscoveryConfig? = nil) {
        self.name = name
        self.mode = mode
        self.balance = balance
        self.servers = servers
        self.timeouts = timeouts
        self.retries = retries
        self.redispatch = redispatch
        self.allBackups = allBackups
        self.discovery = discovery
    }
}

/// A discovery source for a backend: its servers follow Consul or etcd instead of (or
/// after) the `server` lines of the file.
public enum DiscoveryConfig: Sendable, Equatable {
    /// Consul's health API: the passing instances of `service` (with `tag`, in `datacenter`).
    case consul(url: String, service: String, tag: String?, datacenter: String?, token: String?)
    /// etcd v3 (JSON gateway): every key under `prefix` holds `host:port` (registrator's layout).
    case etcd(url: String, prefix: String)
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
