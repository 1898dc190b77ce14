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

    public init() {}

    /// How long a server whose connect just failed is passed over. Short, so a server
    /// that restarts is back quickly; long enough that a burst of new connections does
    /// not all pay the failed-connect round trip first.
    public static let passiveHoldDown: Int64 = 2_000_000_000

    @inline(__always)
    public func isUsable(now: Int64) -> Bool {
        checkedUp.load(ordering: .relaxed) && passiveDownUntil.load(ordering: .relaxed) <= now
    }

    /// A connect to this server failed (refused, unreachable or timed out).
    public func recordConnectFailure(now: Int64) {
        failedConnects.add(1, ordering: .relaxed)
        consecutiveFailures.add(1, ordering: .relaxed)
        passiveDownUntil.store(now + ServerHealth.passiveHoldDown, ordering: .relaxed)
    }

    public func recordConnectSuccess() {
        if consecutiveFailures.load(ordering: .relaxed) != 0 {
            consecutiveFailures.store(0, ordering: .relaxed)
            passiveDownUntil.store(0, ordering: .relaxed)
        }
    }
}

/// One server of a published table. Immutable apart from its shared health.
public final class Server: Sendable {
    public let name: String
    public let address: SocketAddress
    public let config: ServerConfig
    public let health: ServerHealth
    let nameBytes: [UInt8]

    public init(config: ServerConfig, address: SocketAddress, health: ServerHealth) {
        self.name = config.name
        self.nameBytes = Array(config.name.utf8)
        self.address = address
        self.config = config
        self.health = health
    }

    public var weight: Int { config.weight }
    public var isBackup: Bool { config.backup }
}
