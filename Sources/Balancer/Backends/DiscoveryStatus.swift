// What the discovery of one backend has done lately: sets received, errors, when it last
// heard from its source. The proxy keeps one per backend (whether or not anything feeds
// it); the discovery runner writes it from the source's thread, the stats listener reads
// it. The proxy itself never looks at it: it only sees tables (STYLE 8).
public import Synchronization

public final class DiscoveryStatus: Sendable {
    /// Whole sets received from the source (each one offered to `Proxy.publish`).
    public let updates = Atomic<Int>(0)
    /// Failed queries of the source (each logged or counted by the source).
    public let errors = Atomic<Int>(0)
    /// Wall-clock ms of the last successful answer (a set, or "nothing changed"), 0: never.
    public let lastSuccessMilliseconds = Atomic<Int64>(0)
    /// Wall-clock ms of the last failed query, 0: never.
    public let lastErrorMilliseconds = Atomic<Int64>(0)
    private let texts = Mutex<(source: String?, lastError: String?)>((nil, nil))

    public init() {}

    /// The source feeding this backend, as its `description` reads (`consul URL service web`).
    public func attach(source: String) {
        texts.withLock { $0.source = source }
    }

    /// The source answered with a whole set.
    public func recordUpdate() {
        updates.add(1, ordering: .relaxed)
        recordSuccess()
    }

    /// The source answered, with or without a change.
    public func recordSuccess() {
        lastSuccessMilliseconds.store(Posix.wallClockMilliseconds(), ordering: .relaxed)
    }

    public func recordError(_ message: String) {
        errors.add(1, ordering: .relaxed)
        lastErrorMilliseconds.store(Posix.wallClockMilliseconds(), ordering: .relaxed)
        texts.withLock { $0.lastError = message }
    }

    /// One reading, for the stats page and /metrics.
    public var reading: DiscoveryReading? {
        let (source, lastError) = texts.withLock { $0 }
        guard let source else { return nil }
        return DiscoveryReading(source: source, updates: updates.load(ordering: .relaxed), errors: errors.load(ordering: .relaxed),
                                lastSuccessMilliseconds: lastSuccessMilliseconds.load(ordering: .relaxed),
                                lastErrorMilliseconds: lastErrorMilliseconds.load(ordering: .relaxed), lastError: lastError)
    }
}

/// A DiscoveryStatus as read at one moment.
public struct DiscoveryReading: Sendable, Equatable {
    public var source: String
    public var updates: Int
    public var errors: Int
    /// Wall-clock ms, 0: never.
    public var lastSuccessMilliseconds: Int64
    public var lastErrorMilliseconds: Int64
    public var lastError: String?
}

extension Proxy {
    /// The discovery status of backend `name`, nil if there is no such backend.
    public func discoveryStatus(backend name: String) -> DiscoveryStatus? {
        backendCounters.first { $0.name == name }?.discovery
    }
}
