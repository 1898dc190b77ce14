// Backend sets: the immutable values that configuration and discovery produce, and the
// runtime view of one server.
//
// A `BackendSet` is what a source says the servers are, whole (never a diff, as in
// pingora's ServiceDiscovery). The proxy turns it into a `BackendTable` (Selector.swift)
// and publishes that to every loop.
public import Synchronization

/// The servers of one backend, as a source sees them right now.
public struct BackendSet: Sendable, Equatable {
    public var servers: [ServerConfig]

    public init(servers: [ServerConfig]) {
        self.servers = servers
    }
}

/// Health and counters of one server, shared by every table generation that contains
/// the same server (same backend, name and address), so a reload or a discovery update
/// keeps what was learnt about it. All fields are atomics: loops read them per pick.
public final class ServerHealth: Sendable {
    /// Active check verdict (haproxy's UP/DOWN), changed only by the health checker.
    public let checkedUp = Atomic<Bool>(true)
    /// Until when (monotonic ns) passive observation passes over this server.
    public let passiveDownUntil = Atomic<Int64>(0)
    /// Connect failures in a row, reset by a success.
    public let consecutiveFailures = Atomic<Int>(0)
    /// Current and total connections: for the stats page and log lines.
    public let current = Atomic<Int>(0)
    public let total = Atomic<Int>(0)
    public let failedConnects = Atomic<Int>(0)
    /// The most connections it had at once (haproxy `smax`).
    public let maxCurrent = Atomic<Int>(0)
    /// haproxy's cumulative counters (bytes, requests, responses, errors, times), per loop.
    public let stats: StatCounters

    /// The operator's state (Runtime API `set server ... state`, `disable/enable server`,
    /// the stats page), a raw `AdminState`. Lives here, not in the table, so that it
    /// survives discovery updates for as long as the server exists.
    public let adminRaw = Atomic<UInt8>(AdminState.ready.rawValue)
    /// The operator's weight (`set server B/S weight N`), or -1 for the configured one.
    public let operatorWeight = Atomic<Int>(-1)
    /// Slow start: the share of its weight the server gets now, in per mille (1000 =
    /// all of it). Set by the health checker while a server that came back ramps up.
    public let rampPerMille = Atomic<Int>(1000)

    // What the active checks learnt, for the stats page, `show stat` and /metrics. Written
    // by the checker only; readers may see one field of a check before another.
    /// The last check's result (haproxy `check_status`), a raw `CheckStatus`.
    public let checkStatusRaw = Atomic<UInt8>(CheckStatus.unknown.rawValue)
    /// The last layer-7 check's HTTP status (haproxy `check_code`), 0 if none.
    public let checkCode = Atomic<Int>(0)
    /// How long the last check took, in ms (haproxy `check_duration`), -1 if none.
    public let checkDurationMilliseconds = Atomic<Int>(-1)
    /// Failed checks (haproxy `chkfail`), and UP-to-DOWN transitions (`chkdown`).
    public let checkFailures = Atomic<Int>(0)
    public let downTransitions = Atomic<Int>(0)
    /// When the server last changed state, monotonic ns (haproxy `lastchg`), 0: never.
    public let lastChange = Atomic<Int64>(0)
    /// Time spent DOWN before the current DOWN period, ns (haproxy `downtime` is this plus
    /// the current period, see `downtime(now:)`).
    public let downtimeBefore = Atomic<Int64>(0)
    /// haproxy's `check_health` counter and the `rise`/`fall` it runs between: UP while
    /// health >= rise; "UP 2/3" and "DOWN 1/2" in the status column come from it.
    public let checkHealth = Atomic<Int>(0)

    /// `loops`: the number of event loops that count into `stats`.
    public init(loops: Int = 1) {
        stats = StatCounters(loops: loops)
    }

    public var checkStatus: CheckStatus {
        CheckStatus(rawValue: checkStatusRaw.load(ordering: .relaxed)) ?? .unknown
    }

    public var adminState: AdminState {
        AdminState(rawValue: adminRaw.load(ordering: .relaxed)) ?? .ready
    }

    /// The weight the balancer uses now: the operator's or the configured one, scaled by
    /// slow start. A server with any weight keeps at least 1 while ramping, as haproxy's
    /// eweight does, so that it is tried at all.
    public func effectiveWeight(configured: Int) -> Int {
        let chosen = operatorWeight.load(ordering: .relaxed)
        let base = chosen >= 0 ? chosen : configured
        let ramp = rampPerMille.load(ordering: .relaxed)
        guard base > 0, ramp < 1000 else { return base }
        return max(1, base * ramp / 1000)
    }

    /// How long a server whose connect just failed is passed over. Short, so a server
    /// that restarts is back quickly; long enough that a burst of new connections does
    /// not all pay the failed-connect round trip first.
    public static let passiveHoldDown: Int64 = 2_000_000_000

    /// New traffic may go here: up by check, not drained or in maintenance, and not
    /// passed over after a failed connect.
    @inline(__always)
    public func isUsable(now: Int64) -> Bool {
        isAcceptable && passiveDownUntil.load(ordering: .relaxed) <= now
    }

    /// Up by check and ready by the operator: what a pick falls back to when passive
    /// hold-down leaves nothing.
    @inline(__always)
    public var isAcceptable: Bool {
        checkedUp.load(ordering: .relaxed) && adminRaw.load(ordering: .relaxed) == AdminState.ready.rawValue
    }

    /// A connect to this server failed (refused, unreachable or timed out).
    public func recordConnectFailure(now: Int64) {
        failedConnects.add(1, ordering: .relaxed)
        consecutiveFailures.add(1, ordering: .relaxed)
        passiveDownUntil.store(now + ServerHealth.passiveHoldDown, ordering: .relaxed)
    }

    /// The server took the request and then said nothing for `timeout server` (a 504): a
    /// frozen process (SIGSTOP, a stuck event loop) whose kernel still completes every
    /// connect. Passed over like a failed connect, so the next requests do not each wait a
    /// whole `timeout server` on it. A connect that succeeds does not lift this: such a
    /// server's connects always do.
    public func recordResponseTimeout(now: Int64) {
        passiveDownUntil.store(now + ServerHealth.passiveHoldDown, ordering: .relaxed)
    }

    public func recordConnectSuccess() {
        if consecutiveFailures.load(ordering: .relaxed) != 0 {
            consecutiveFailures.store(0, ordering: .relaxed)
            passiveDownUntil.store(0, ordering: .relaxed)
        }
    }
}

/// haproxy's check results (`check_status`), as its stats show them.
public enum CheckStatus: UInt8, Sendable, CaseIterable {
    case unknown = 0, initializing, socketError, l4ok, l4timeout, l4connection, l7ok, l7timeout, l7response, l7status
    /// The TLS handshake of a check (`ssl`, `check-ssl`): passed, timed out, failed.
    case l6ok, l6timeout, l6response

    /// The text of haproxy's `check_status` column.
    public var text: String {
        switch self {
        case .unknown: "UNK"
        case .initializing: "INI"
        case .socketError: "SOCKERR"
        case .l4ok: "L4OK"
        case .l4timeout: "L4TOUT"
        case .l4connection: "L4CON"
        case .l7ok: "L7OK"
        case .l7timeout: "L7TOUT"
        case .l7response: "L7RSP"
        case .l7status: "L7STS"
        case .l6ok: "L6OK"
        case .l6timeout: "L6TOUT"
        case .l6response: "L6RSP"
        }
    }

    /// haproxy's description of it (get_check_status_description(), check_statuses[]):
    /// the text after "reason: " in the log and the `check_desc` column.
    public var description: String {
        switch self {
        case .unknown: "Unknown"
        case .initializing: "Initializing"
        case .socketError: "Socket error"
        case .l4ok: "Layer4 check passed"
        case .l4timeout: "Layer4 timeout"
        case .l4connection: "Layer4 connection problem"
        case .l7ok: "Layer7 check passed"
        case .l7timeout: "Layer7 timeout"
        case .l7response: "Layer7 invalid response"
        case .l7status: "Layer7 wrong status"
        case .l6ok: "Layer6 check passed"
        case .l6timeout: "Layer6 timeout"
        case .l6response: "Layer6 invalid response"
        }
    }

    /// Statuses at or after haproxy's HCHK_STATUS_L57DATA carry an HTTP code in the log.
    var hasCode: Bool { self == .l7ok || self == .l7status }

    /// haproxy's numeric `srv_check_status` in `show servers state` (enum healthcheck_status).
    var haproxyCode: Int {
        switch self {
        case .unknown: 0
        case .initializing: 1
        case .socketError: 5
        case .l4ok: 6
        case .l4timeout: 7
        case .l4connection: 8
        case .l7timeout: 12
        case .l7response: 13
        case .l7ok: 15
        case .l7status: 17
        case .l6ok: 9
        case .l6timeout: 10
        case .l6response: 11
        }
    }
}

/// haproxy's administrative server states (`set server B/S state ...`).
public enum AdminState: UInt8, Sendable, CaseIterable {
    /// Takes traffic when its checks say so.
    case ready = 0
    /// No new traffic; what is in flight finishes; checks go on.
    case drain = 1
    /// Maintenance: no traffic and no checks.
    case maint = 2
}

/// One server of a published table. Immutable apart from its shared health.
public final class Server: Sendable {
    public let name: String
    public let address: SocketAddress
    public let config: ServerConfig
    public let health: ServerHealth
    /// The TLS client context of an `ssl` server (shared with the servers that verify
    /// the same way); nil for plain TCP.
    public let tls: TLSClientContext?
    /// The context of its health checks when they use TLS (`config.checkTLS`), usually
    /// the same object as `tls`; nil for plain checks.
    public let checkTLS: TLSClientContext?
    let nameBytes: [UInt8]

    public init(config: ServerConfig, address: SocketAddress, health: ServerHealth, tls: TLSClientContext? = nil,
                checkTLS: TLSClientContext? = nil) {
        self.tls = tls
        self.checkTLS = checkTLS
        self.name = config.name
        self.nameBytes = Array(config.name.utf8)
        self.address = address
        self.config = config
        self.health = health
    }

    public var weight: Int { config.weight }
    public var isBackup: Bool { config.backup }

    /// How many of `servers` take new traffic now (up by check, ready, with weight),
    /// primaries and backups: the "N active and M backup servers" of haproxy's state
    /// change lines, from checks and from the operator alike.
    static func takingTraffic(_ servers: [Server]) -> (active: Int, backup: Int) {
        var active = 0, backup = 0
        for server in servers where server.health.isAcceptable && server.health.effectiveWeight(configured: server.weight) > 0 {
            if server.isBackup { backup += 1 } else { active += 1 }
        }
        return (active, backup)
    }
}
