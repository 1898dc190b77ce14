// The published, immutable table of one backend, and the only code that knows which
// algorithm picks a server (haproxy's assign_server()). Connection code asks
// `table.pick(avoiding:now:)` and sees nothing but the server it was handed.

/// Settings a connection needs from its backend, in the units the loop uses.
public struct BackendSettings: Sendable {
    public var connectTimeout: Int64   // ns
    public var serverTimeout: Int64    // ns
    public var retries: Int
    public var redispatch: Bool
    /// `errorfile`s, for the errors balancerd answers once this backend is chosen.
    public var errorFiles: [ErrorFile]

    public init(_ config: BackendConfig) {
        connectTimeout = config.timeouts.connect.nanoseconds
        serverTimeout = config.timeouts.server.nanoseconds
        retries = config.retries
        redispatch = config.redispatch
        errorFiles = config.errorFiles
    }
}

extension Duration {
    /// Whole nanoseconds, saturating (a timeout of years is "never" in practice).
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (ns, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max / 2 }
        return ns + attoseconds / 1_000_000_000
    }

    public var milliseconds: Int64 { nanoseconds / 1_000_000 }
}

public final class BackendTable: Sendable {
    /// Increases by one with every table published for this backend.
    public let generation: UInt64
    public let name: String
    public let settings: BackendSettings
    public let servers: [Server]
    private let primaries: RoundRobinSelector
    private let backups: RoundRobinSelector
    /// Without `option allbackups` haproxy only ever uses the first usable backup.
    private let backupOrder: [Int]
    private let allBackups: Bool

    public init(generation: UInt64, config: BackendConfig, servers: [Server]) {
        self.generation = generation
        self.name = config.name
        self.settings = BackendSettings(config)
        self.servers = servers
        self.allBackups = config.allBackups
        // Effective weights: the operator's and slow start's changes reach the schedule
        // by a new table (Proxy.reweigh), never by arithmetic per pick.
        let weights = servers.map { $0.health.effectiveWeight(configured: $0.weight) }
        let primaryWeights = servers.indices.map { servers[$0].isBackup ? 0 : weights[$0] }
        let backupWeights = servers.indices.map { servers[$0].isBackup ? weights[$0] : 0 }
        self.primaries = RoundRobinSelector(order: WeightedRoundRobin.schedule(weights: primaryWeights))
        self.backups = RoundRobinSelector(order: WeightedRoundRobin.schedule(weights: backupWeights))
        self.backupOrder = servers.indices.filter { servers[$0].isBackup && weights[$0] > 0 }
    }

    /// The server for a new connection (or a retry, avoiding the one that just failed).
    /// Backups are used only when no primary is usable. Nil means nothing is usable.
    ///
    /// "Usable" is strict first: up by check and not being passed over after a failed
    /// connect. Passive hold-down is only a hint, so when it leaves nothing, a server that
    /// checks still call up is tried rather than refusing the client.
    @inline(__always)
    public func pick(avoiding: Int? = nil, now: Int64) -> Int? {
        let servers = self.servers
        let preferred = { (i: Int) in servers[i].health.isUsable(now: now) }
        let acceptable = { (i: Int) in servers[i].health.isAcceptable }
        let primary = primaries.next(avoiding: avoiding, preferred: preferred, acceptable: acceptable)
        if let primary, primary.exact { return primary.index }
        let backup = pickBackup(avoiding: avoiding, preferred: preferred, acceptable: acceptable)
        if let backup, backup.exact { return backup.index }
        return primary?.index ?? backup?.index
    }

    @inline(__always)
    private func pickBackup(avoiding: Int?, preferred: (Int) -> Bool, acceptable: (Int) -> Bool) -> RoundRobinSelector.Candidate? {
        if allBackups {
            return backups.next(avoiding: avoiding, preferred: preferred, acceptable: acceptable)
        }
        // Without `option allbackups`, haproxy uses the first usable backup only.
        var fallback: RoundRobinSelector.Candidate?
        for index in backupOrder {
            if preferred(index) {
                if index != avoiding { return .init(index: index, exact: true) }
                if fallback == nil || !fallback!.exact { fallback = .init(index: index, exact: false) }
            } else if acceptable(index), fallback == nil {
                fallback = .init(index: index, exact: false)
            }
        }
        return fallback
    }
}
