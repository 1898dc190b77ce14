// What every discovery source (Consul, etcd, the config file) is to the daemon: a
// producer of whole, immutable backend sets. The proxy core never learns where a set
// came from; the daemon passes each one to `Proxy.publish`, which ignores a set equal
// to the current one.
public import Balancer

public protocol BackendSource: Sendable {
    /// For logs: `consul http://127.0.0.1:8500 service web`.
    var description: String { get }

    /// Runs until `stop()`, calling `update` with every new whole set. It must never call
    /// `update` with an empty set because the source failed: on errors it keeps quiet,
    /// so the last good table stays in force.
    func run(update: @escaping @Sendable (BackendSet) -> Void)

    /// `run(update:)`, also telling `report` how each query went, for the stats page and
    /// /metrics (balancerd_discovery_*). A source that does not implement it reports
    /// nothing beyond its sets.
    func run(update: @escaping @Sendable (BackendSet) -> Void, report: @escaping @Sendable (SourceEvent) -> Void)

    func stop()
}

/// How one query of a source went.
public enum SourceEvent: Sendable {
    /// It answered (the set may be unchanged, and then `update` is not called).
    case answered
    /// It failed; the source keeps its last set and tries again.
    case failed(String)
}

extension BackendSource {
    public func run(update: @escaping @Sendable (BackendSet) -> Void, report: @escaping @Sendable (SourceEvent) -> Void) {
        run(update: update)
    }
}
