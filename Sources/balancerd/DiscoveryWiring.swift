// Starts one discovery source per backend that has one, and turns every set a source
// produces into a published table. The proxy never learns where a set came from.
import Balancer
import Discovery
import Glibc
import Synchronization

final class DiscoveryRunner: Sendable {
    private let entries: [(backend: String, source: any BackendSource)]
    private let threads = Mutex<[LoopThread]>([])
    /// Backends that have received at least one set.
    private let answered = Mutex<Set<String>>([])

    init(configuration: Configuration) throws {
        var entries: [(String, any BackendSource)] = []
        for backend in configuration.backends {
            guard let discovery = backend.discovery else { continue }
            switch discovery {
            case .consul(let url, let service, let tag, let datacenter, let token):
                // The token comes from the flag or the file, else from the environment, as
                // every Consul client does.
                let environmentToken = getenv("CONSUL_HTTP_TOKEN").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
                let options = ConsulSource.Options(url: url, service: service, tag: tag, datacenter: datacenter,
                                                   token: token ?? environmentToken)
                entries.append((backend.name, try ConsulSource(options: options)))
            case .etcd(let url, let prefix):
                entries.append((backend.name, try EtcdSource(options: EtcdSource.Options(url: url, prefix: prefix))))
            }
        }
        self.entries = entries
    }

    var isEmpty: Bool { entries.isEmpty }

    /// Runs every source on its own thread, publishing into `proxy`.
    func start(publishingInto proxy: Proxy) {
        for (backend, source) in entries {
            let thread = LoopThread(name: "discovery") { [self] in
                source.run { set in
                    do {
                        let generation = try proxy.publish(backend: backend, set: set)
                        self.answered.withLock { _ = $0.insert(backend) }
                        if let generation {
                            let servers = set.servers.map { "\($0.name)@\($0.address)/w\($0.weight)" }.joined(separator: ",")
                            ControlLog.line("balancerd: backend \(backend) updated from \(source.description): \(set.servers.count) server(s) generation=\(generation) servers=\(servers)")
                        }
                    } catch {
                        ControlLog.line("balancerd: backend \(backend): set from \(source.description) not applied: \(error); keeping the previous table")
                    }
                }
            }
            threads.withLock { $0.append(thread) }
        }
    }

    /// Waits until every source has answered once, or `timeout` passed. Starting to accept
    /// before that would answer the first clients with 503 for no reason.
    func waitForFirstAnswers(timeout: Duration) {
        let deadline = Posix.monotonicNanoseconds() + timeout.nanoseconds
        while Posix.monotonicNanoseconds() < deadline {
            if answered.withLock({ $0.count }) >= Set(entries.map(\.backend)).count { return }
            Posix.sleep(milliseconds: 5)
        }
        let missing = Set(entries.map(\.backend)).subtracting(answered.withLock { $0 })
        for backend in missing.sorted() {
            ControlLog.line("balancerd: backend \(backend): no answer from its discovery source yet; starting with the servers of the configuration (if any)")
        }
    }

    /// `configuration` with each discovered backend's servers replaced by one answer of
    /// its source (export-haproxy). A source that does not answer in time leaves the
    /// backend's configured servers, with a line on stderr saying so.
    static func snapshot(_ configuration: Configuration, timeout: Duration) -> Configuration {
        guard let runner = try? DiscoveryRunner(configuration: configuration), !runner.isEmpty else { return configuration }
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
                ControlLog.line("balancerd: backend \(result.backends[i].name): no answer from its discovery source within \(DurationParser.format(timeout)); exporting the configured servers")
            }
        }
        return result
    }

    func stop() {
        for (_, source) in entries { source.stop() }
        let threads = self.threads.withLock { $0 }
        for thread in threads { thread.join() }
    }
}
