// Attaches discovery sources to a proxy: one thread per source, and every whole set a
// source produces published into the proxy as that backend's new table. The proxy never
// learns where a set came from (a set equal to the current table publishes nothing).
//
// balancerd uses this for `discovery consul|etcd` lines and the --consul/--etcd flags; a
// program that embeds the Balancer library uses it the same way:
//
//     let proxy = try Proxy(configuration: configuration, options: ProxyOptions(threads: 2, quiet: false))
//     let discovery = try DiscoveryRunner(configuration: configuration)   // or DiscoveryRunner(sources:)
//     discovery.start(publishingInto: proxy)
//     discovery.waitForFirstAnswers(timeout: .seconds(3))
//     proxy.start()
//     …
//     discovery.stop()
//     proxy.shutdown(grace: .seconds(10))
//
// Threads: the methods are for the embedder's control thread. Each source blocks a thread
// of its own (`LoopThread`) and publishes from it; `Proxy.publish` serialises publishers.
public import Balancer
import Foundation
import Synchronization

public final class DiscoveryRunner: Sendable {
    /// A source and the backend whose servers it provides.
    public typealias Attachment = (backend: String, source: any BackendSource)

    private let entries: [Attachment]
    private let log: @Sendable (String) -> Void
    private let threads = Mutex<[LoopThread]>([])
    /// Backends that have received at least one set.
    private let answered = Mutex<Set<String>>([])

    /// Sources chosen by the caller: for each, the name of the proxy backend it feeds. Any
    /// `BackendSource` works (`ConsulSource`, `EtcdSource` or one of the embedder's own).
    /// `log` receives one line per applied or rejected set (stderr by default).
    public init(sources: [Attachment], log: @escaping @Sendable (String) -> Void = { ControlLog.line($0) }) {
        self.entries = sources
        self.log = log
    }

    /// One source per backend of `configuration` that names one (`BackendConfig.discovery`:
    /// a `discovery consul|etcd` line or the --consul/--etcd flags). Without an explicit
    /// token, Consul gets `$CONSUL_HTTP_TOKEN`, as every Consul client does. Throws when a
    /// source's URL does not parse.
    public convenience init(configuration: Configuration,
                            log: @escaping @Sendable (String) -> Void = { ControlLog.line($0) }) throws {
        var sources: [Attachment] = []
        for backend in configuration.backends {
            guard let discovery = backend.discovery else { continue }
            switch discovery {
            case .consul(let url, let service, let tag, let datacenter, let token):
                let environmentToken = ProcessInfo.processInfo.environment["CONSUL_HTTP_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
                let options = ConsulSource.Options(url: url, service: service, tag: tag, datacenter: datacenter,
                                                   token: token ?? environmentToken)
                sources.append((backend.name, try ConsulSource(options: options)))
            case .etcd(let url, let prefix):
                sources.append((backend.name, try EtcdSource(options: EtcdSource.Options(url: url, prefix: prefix))))
            }
        }
        self.init(sources: sources, log: log)
    }

    /// True when there is no source: nothing to start or wait for.
    public var isEmpty: Bool { entries.isEmpty }

    /// Runs every source on its own thread, publishing each set into `proxy` (before or
    /// after `proxy.start()`). Call once: a source runs once.
    public func start(publishingInto proxy: Proxy) {
        for (backend, source) in entries {
            let status = proxy.discoveryStatus(backend: backend)
            status?.attach(source: source.description)
            let thread = LoopThread(name: "discovery") { [self] in
                source.run(update: { set in
                    status?.recordUpdate()
                    do {
                        let generation = try proxy.publish(backend: backend, set: set)
                        self.answered.withLock { _ = $0.insert(backend) }
                        if let generation {
                            let servers = set.servers.map { "\($0.name)@\($0.address)/w\($0.weight)" }.joined(separator: ",")
                            self.log("balancerd: backend \(backend) updated from \(source.description): \(set.servers.count) server(s) generation=\(generation) servers=\(servers)")
                        }
                    } catch {
                        self.log("balancerd: backend \(backend): set from \(source.description) not applied: \(error); keeping the previous table")
                    }
                }, report: { event in
                    switch event {
                    case .answered: status?.recordSuccess()
                    case .failed(let message): status?.recordError(message)
                    }
                })
            }
            threads.withLock { $0.append(thread) }
        }
    }

    /// Waits until every source has answered once, or `timeout` passed. Starting to accept
    /// before that would answer the first clients with 503 for no reason. Returns the
    /// backends still without an answer (each also logged); they keep the servers of the
    /// configuration until their source answers.
    @discardableResult
    public func waitForFirstAnswers(timeout: Duration) -> [String] {
        let backends = Set(entries.map(\.backend))
        let deadline = Posix.monotonicNanoseconds() + timeout.nanoseconds
        while Posix.monotonicNanoseconds() < deadline {
            if answered.withLock({ $0.count }) >= backends.count { return [] }
            Posix.sleep(milliseconds: 5)
        }
        let missing = backends.subtracting(answered.withLock { $0 }).sorted()
        for backend in missing {
            log("balancerd: backend \(backend): no answer from its discovery source yet; starting with the servers of the configuration (if any)")
        }
        return missing
    }

    /// `configuration` with each discovered backend's servers replaced by one answer of
    /// its source (what `balancerd export-haproxy` prints). A source that does not answer
    /// in time leaves the backend's configured servers, with a line to `log` saying so.
    public static func snapshot(_ configuration: Configuration, timeout: Duration,
                                log: @escaping @Sendable (String) -> Void = { ControlLog.line($0) }) -> Configuration {
        guard let runner = try? DiscoveryRunner(configuration: configuration, log: log), !runner.isEmpty else { return configuration }
        let sets = Mutex<[String: BackendSet]>([:])
        for (backend, source) in runner.entries {
            let thread = LoopThread(name: "snapshot") {
                source.run { set in
                    sets.withLock { $0[backend] = $0[backend] ?? set }
                    source.stop()
                }
            }
            runner.threads.withLock { $0.append(thread) }
        }
        let deadline = Posix.monotonicNanoseconds() + timeout.nanoseconds
        while Posix.monotonicNanoseconds() < deadline && sets.withLock({ $0.count }) < runner.entries.count {
            Posix.sleep(milliseconds: 5)
        }
        runner.stop()
        var result = configuration
        let answers = sets.withLock { $0 }
        for i in result.backends.indices where result.backends[i].discovery != nil {
            if let set = answers[result.backends[i].name] {
                result.backends[i].servers = set.servers
            } else {
                log("balancerd: backend \(result.backends[i].name): no answer from its discovery source within \(DurationParser.format(timeout)); exporting the configured servers")
            }
        }
        return result
    }

    /// Stops every source and waits for their threads. The proxy keeps the last tables.
    public func stop() {
        for (_, source) in entries { source.stop() }
        let threads = self.threads.withLock { $0 }
        for thread in threads { thread.join() }
    }
}
