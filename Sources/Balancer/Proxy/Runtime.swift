// Shared, thread-safe runtime objects: what all loops see of the process, a frontend
// and a backend. Counters are relaxed atomics: they feed logs and stats, nothing waits
// on them, and an increment per connection is far below the cost of the accept.
public import Synchronization

public final class ProxyShared: Sendable {
    public let maxConnections: Int
    /// Client connections open in the whole process (haproxy `%ac`).
    public let active = Atomic<Int>(0)
    public let quiet: Bool
    /// Splice pipes open in the process, against haproxy's maxpipes.
    let pipes: PipeBudget

    init(maxConnections: Int, quiet: Bool,
         maxPipes: Int? = nil) {
        self.maxConnections = maxConnections
        self.quiet = quiet
        self.pipes = PipeBudget(limit: maxPipes ?? MaxConnections.pipes(for: maxConnections, openFileLimit: MaxConnections.openFileLimit()))
    }

    /// Takes a connection slot if one is free (global maxconn). Never lets the count pass
    /// the limit, even with every loop accepting at once.
    @inline(__always)
    func reserveSlot() -> Bool {
        let before = active.wrappingAdd(1, ordering: .relaxed).oldValue
        if before < maxConnections { return true }
        active.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    @inline(__always)
    func releaseSlot() {
        active.wrappingSubtract(1, ordering: .relaxed)
    }
}

/// How many pipes the whole process may hold open (haproxy's maxpipes), shared by every
/// loop's TransferPool. Pipes are optional, connections are not: the budget keeps pipe
/// descriptors from taking the ones accept needs for maxconn connections (see
/// MaxConnections.pipes). Touched only when a pipe is created or closed, not when a
/// pooled one is reused.
final class PipeBudget: Sendable {
    let limit: Int
    private let open = Atomic<Int>(0)

    init(limit: Int) {
        self.limit = limit
    }

    var count: Int { open.load(ordering: .relaxed) }

    /// Takes room for one pipe if the budget has some.
    func reserve() -> Bool {
        let before = open.wrappingAdd(1, ordering: .relaxed).oldValue
        if before < limit { return true }
        open.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    func release() {
        open.wrappingSubtract(1, ordering: .relaxed)
    }
}

/// One version of a frontend's settings, as the sessions it accepted use them. A reload
/// that changes a frontend makes a new one (at a new index) instead of changing this one:
/// connections accepted before keep the settings they started with, new ones get the new.
public final class FrontendRuntime: Sendable {
    /// Its slot in the proxy's and the loops' per-frontend arrays. Slots are never reused,
    /// so a session of a frontend removed or changed by a reload still finds its routing
    /// and settings there (released when the last such session ends).
    public let index: Int
    public let config: Frontend
    let nameBytes: [UInt8]
    public let backendIndex: Int
    /// Where an HTTP request that no rule or route matched goes: the default backend, or
    /// -1 (404) for a frontend that routes from Consul tags and whose default backend has no
    /// servers of its own (fabio's behaviour: an unknown route is not found, not 503).
    public let fallbackBackend: Int
    let clientTimeout: Int64
    /// Shared by every version of the frontend of that name: a reload that changes its
    /// settings keeps its counts.
    public let counters: FrontendCounters

    init(index: Int, config: Frontend, backendIndex: Int, fallbackBackend: Int, counters: FrontendCounters) {
        self.counters = counters
        self.index = index
        self.config = config
        self.nameBytes = Array(config.name.utf8)
        self.backendIndex = backendIndex
        self.fallbackBackend = fallbackBackend
        self.clientTimeout = config.timeouts.client.nanoseconds
    }
}

/// Counters of a frontend that outlive its versions (see FrontendRuntime).
public final class FrontendCounters: Sendable {
    public let current = Atomic<Int>(0)
    public let total = Atomic<Int>(0)
    /// The most connections it had at once (haproxy `smax`).
    public let maxCurrent = Atomic<Int>(0)
    public let stats: StatCounters

    init(loops: Int) {
        self.stats = StatCounters(loops: loops)
    }
}

/// Counters of a backend that outlive its table generations.
public final class BackendCounters: Sendable {
    public let name: String
    let nameBytes: [UInt8]
    public let current = Atomic<Int>(0)
    public let total = Atomic<Int>(0)
    /// The most connections it had at once (haproxy `smax`).
    public let maxCurrent = Atomic<Int>(0)
    public let stats: StatCounters
    /// What its discovery source (if any) has done lately.
    public let discovery = DiscoveryStatus()

    init(name: String, loops: Int) {
        self.stats = StatCounters(loops: loops)
        self.name = name
        self.nameBytes = Array(name.utf8)
    }
}

extension Atomic where Value == Int {
    /// Raises this maximum to `value` if it is higher (haproxy's `smax`). Called per new
    /// connection, not per request; the loop only runs again when another thread raised
    /// the maximum in between.
    @inline(__always)
    func raiseMaximum(to value: Int) {
        var seen = load(ordering: .relaxed)
        while value > seen {
            let (exchanged, original) = compareExchange(expected: seen, desired: value, ordering: .relaxed)
            if exchanged { return }
            seen = original
        }
    }
}
