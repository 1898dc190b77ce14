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
// Route sources (`ConsulRoutes`, from a frontend's `discovery consul URL routes` line or
// --routes-from-tags) publish whole RouteSets into a `RoutePublisher` the same way:
//
//     discovery.startRoutes(publishingInto: proxy)
//
// Threads: the methods are for the embedder's control thread. Each source blocks a thread
// of its own (`LoopThread`) and publishes from it; `Proxy.publish` serialises publishers.
public import Balancer
import Foundation
import Synchronization

/// How every Consul query of a runner reads, beyond what each source's configuration says
/// (balancerd's --consul-stale and --consul-max-stale).
public struct ConsulReadPolicy: Sendable, Equatable {
    /// `?stale` on every Consul query (a route source's own `stale` also turns it on).
    public var stale: Bool
    /// Stale answers older than this are asked again of the leader; nil: never.
    public var maxStale: Duration?

    public init(stale: Bool = false, maxStale: Duration? = .seconds(2)) {
        self.stale = stale
        self.maxStale = maxStale
    }
}

public final class DiscoveryRunner: Sendable {
    /// A source and the backend whose servers it provides.
    public typealias Attachment = (backend: String, source: any BackendSource)
    /// A route source and the frontend whose discovered routes it provides.
    public typealias RouteAttachment = (frontend: String, source: ConsulRoutes)

    private let entries: [Attachment]
    private let routeEntries: [RouteAttachment]
    private let log: @Sendable (String) -> Void
    private let threads = Mutex<[LoopThread]>([])
    /// Backends that have received at least one set.
    private let answered = Mutex<Set<String>>([])
    /// Frontends whose route source has published at least once.
    private let routesAnswered = Mutex<Set<String>>([])
    private let routesStarted = Atomic<Bool>(false)

    /// Sources chosen by the caller: for each, the name of the proxy backend it feeds. Any
    /// `BackendSource` works (`ConsulSource`, `EtcdSource` or one of the embedder's own).
    /// `routes`: route sources, each with the frontend it routes for.
    /// `log` receives one line per applied or rejected set (stderr by default).
    public init(sources: [Attachment], routes: [RouteAttachment] = [],
                log: @escaping @Sendable (String) -> Void = { ControlLog.line($0) }) {
        self.entries = sources
        self.routeEntries = routes
        self.log = log
    }

    /// One source per backend of `configuration` that names one (`BackendConfig.discovery`:
    /// a `discovery consul|etcd` line or the --consul/--etcd flags). Without an explicit
    /// token, Consul gets `$CONSUL_HTTP_TOKEN`, as every Consul client does. Throws when a
    /// source's URL does not parse. Every frontend with `routes` (`discovery consul URL
    /// routes`, --routes-from-tags) gets a route source. `consul` applies to every Consul
    /// query.
    public convenience init(configuration: Configuration, consul: ConsulReadPolicy = ConsulReadPolicy(),
                            log: @escaping @Sendable (String) -> Void = { ControlLog.line($0) }) throws {
        let environmentToken = ProcessInfo.processInfo.environment["CONSUL_HTTP_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        var sources: [Attachment] = []
        for backend in configuration.backends {
            guard let discovery = backend.discovery else { continue }
            switch discovery {
            case .consul(let url, let service, let tag, let datacenter, let token, let stale):
                var options = ConsulSource.Options(url: url, service: service, tag: tag, datacenter: datacenter,
                                                   token: token ?? environmentToken)
                options.stale = stale || consul.stale
                options.maxStale = consul.maxStale
                options.log = log
                sources.append((backend.name, try ConsulSource(options: options)))
            case .etcd(let url, let prefix):
                sources.append((backend.name, try EtcdSource(options: EtcdSource.Options(url: url, prefix: prefix))))
            }
        }
        var routes: [RouteAttachment] = []
        for frontend in configuration.frontends {
            guard let config = frontend.routes else { continue }
            var options = ConsulRoutes.Options(url: config.url, tagPrefix: config.tagPrefix, datacenter: config.datacenter,
                                               token: config.token ?? environmentToken, stale: config.stale || consul.stale)
            options.maxStale = consul.maxStale
            options.log = log
            routes.append((frontend.name, try ConsulRoutes(options: options)))
        }
        self.init(sources: sources, routes: routes, log: log)
    }

    /// True when there is no source: nothing to start or wait for.
    public var isEmpty: Bool { entries.isEmpty && routeEntries.isEmpty }

    /// True when some frontend's routes come from a route source (`startRoutes`).
    public var hasRoutes: Bool { !routeEntries.isEmpty }

    /// Runs every route source on its own thread, publishing each whole RouteSet into
    /// `publisher` for its frontend. Call once: a source runs once.
    public func startRoutes(publishingInto publisher: any RoutePublisher) {
        routesStarted.store(true, ordering: .releasing)
        for (frontend, source) in routeEntries {
            let thread = LoopThread(name: "consul-routes") { [self] in
                source.run(publish: { set in
                    do {
                        try publisher.publishRoutes(set, frontend: frontend)
                        self.routesAnswered.withLock { _ = $0.insert(frontend) }
                        let servers = set.services.values.reduce(0) { $0 + $1.servers.count }
                        self.log("balancerd: frontend \(frontend) routes updated from \(source.description): \(set.routes.count) route(s) to \(set.services.count) service(s), \(servers) server(s)")
                    } catch {
                        self.log("balancerd: frontend \(frontend): routes from \(source.description) not applied: \(error); keeping the previous routes")
                    }
                })
            }
            threads.withLock { $0.append(thread) }
        }
    }

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
    /// Route sources count too (only those started with `startRoutes`), as `frontend NAME`.
    public func waitForFirstAnswers(timeout: Duration) -> [String] {
        let backends = Set(entries.map(\.backend))
        let frontends = Set(routeEntries.map(\.frontend))
        let routesStarted = self.routesStarted.load(ordering: .acquiring)
        let deadline = Posix.monotonicNanoseconds() + timeout.nanoseconds
        func complete() -> Bool {
            answered.withLock { $0.count } >= backends.count
                && (!routesStarted || routesAnswered.withLock { $0.count } >= frontends.count)
        }
        while Posix.monotonicNanoseconds() < deadline {
            if complete() { return [] }
            Posix.sleep(milliseconds: 5)
        }
        let missing = backends.subtracting(answered.withLock { $0 }).sorted()
        for backend in missing {
            log("balancerd: backend \(backend): no answer from its discovery source yet; starting with the servers of the configuration (if any)")
        }
        var missingFrontends: [String] = []
        if routesStarted {
            missingFrontends = frontends.subtracting(routesAnswered.withLock { $0 }).sorted()
            for frontend in missingFrontends {
                log("balancerd: frontend \(frontend): no answer from its route source yet; starting without discovered routes")
            }
        }
        return missing + missingFrontends.map { "frontend \($0)" }
    }

    /// One answer of every source of `configuration`, all asked at once (what
    /// `balancerd export-haproxy` prints): the configuration with each discovered backend's
    /// servers replaced by its source's first set, and the first RouteSet of each frontend
    /// with a route source. A source that does not answer within `timeout` leaves the
    /// configured servers, or no discovered routes, with a line to `log` saying so.
    public static func snapshot(of configuration: Configuration, consul: ConsulReadPolicy = ConsulReadPolicy(),
                                timeout: Duration, log: @escaping @Sendable (String) -> Void = { ControlLog.line($0) })
        throws -> (configuration: Configuration, routes: [String: RouteSet]) {
        let runner = try DiscoveryRunner(configuration: configuration, consul: consul, log: log)
        let sets = Mutex<[String: BackendSet]>([:])
        let routeSets = Mutex<[String: RouteSet]>([:])
        for (backend, source) in runner.entries {
            let thread = LoopThread(name: "snapshot") {
                source.run { set in
                    sets.withLock { $0[backend] = $0[backend] ?? set }
                    source.stop()
                }
            }
            runner.threads.withLock { $0.append(thread) }
        }
        for (frontend, source) in runner.routeEntries {
            let thread = LoopThread(name: "snapshot") {
                source.run(publish: { set in
                    routeSets.withLock { $0[frontend] = $0[frontend] ?? set }
                    source.stop()
                })
            }
            runner.threads.withLock { $0.append(thread) }
        }
        let deadline = Posix.monotonicNanoseconds() + timeout.nanoseconds
        while Posix.monotonicNanoseconds() < deadline
            && (sets.withLock({ $0.count }) < runner.entries.count || routeSets.withLock({ $0.count }) < runner.routeEntries.count) {
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
        let routes = routeSets.withLock { $0 }
        for (frontend, _) in runner.routeEntries where routes[frontend] == nil {
            log("balancerd: frontend \(frontend): no answer from its route source within \(DurationParser.format(timeout)); exporting no discovered routes")
        }
        return (result, routes)
    }

    /// `snapshot(of:)`'s configuration alone; a source whose URL does not parse leaves the
    /// configuration as it is.
    public static func snapshot(_ configuration: Configuration, consul: ConsulReadPolicy = ConsulReadPolicy(), timeout: Duration,
                                log: @escaping @Sendable (String) -> Void = { ControlLog.line($0) }) -> Configuration {
        (try? snapshot(of: configuration, consul: consul, timeout: timeout, log: log))?.configuration ?? configuration
    }

    /// Stops every source and waits for their threads. The proxy keeps the last tables.
    public func stop() {
        for (_, source) in entries { source.stop() }
        for (_, source) in routeEntries { source.stop() }
        let threads = self.threads.withLock { $0 }
        for thread in threads { thread.join() }
    }
}
