// Routes from Consul tags, as fabio makes them: every service in the catalog with a tag
// like `urlprefix-api.example.com/v1` gets that route, to its passing instances.
//
//  - One blocking query on `/v1/catalog/services` (service → tags, healthy or not) says
//    which services carry a route tag.
//  - Each such service gets a blocking query of its own on
//    `/v1/health/service/NAME?passing` (one thread and one connection each: HTTP/1.1
//    cannot wait on two answers at once), started when the tag appears and stopped when
//    it goes.
//  - Every change of either produces a whole RouteSet (never a diff), published only when
//    it differs from the last one. A service whose last passing instance went, or whose
//    tag went, simply is not in the next set; the publisher swaps tables, nothing restarts.
//  - Errors keep the last good answers of that query (ConsulWatch), so a failing
//    service query never drops the routes the others still have.
//
// Instances of one service may carry different route tags (a rolling deploy adding
// `/v2`): a route goes only to the instances carrying its tag. When that is all of the
// service's routed instances the backend is named after the service, otherwise after the
// service and the route (`web_api.example.com_v2`).
//
// Threading: `run` blocks its thread (the catalog query) and starts one thread per
// service; `publish` is called from any of them, one call at a time. `stop` may be called
// from any thread (`publish` too) and returns at once; `run` returns after every thread
// has ended.
public import Balancer
import Foundation
import Synchronization

public final class ConsulRoutes: Sendable {
    public struct Options: Sendable {
        /// `http://host:port[/prefix]` of a Consul agent.
        public var url: String
        /// fabio's default; a tag is `PREFIX[host]/path[ options]`.
        public var tagPrefix: String = "urlprefix-"
        public var datacenter: String?
        /// ACL token, sent as `X-Consul-Token` (never logged).
        public var token: String?
        /// `?stale` on every query (see ConsulWatch).
        public var stale = false
        /// With `stale`: answers older than this are asked again of the leader.
        public var maxStale: Duration? = .seconds(2)
        /// How long each blocking query may wait (Consul caps it at 10 min).
        public var wait: Duration = .seconds(300)
        public var minimumInterval: Duration = .milliseconds(10)
        public var timeoutMargin: Duration = .seconds(5)
        public var connectTimeout: Duration = .seconds(3)
        public var backoffBase: Duration = .milliseconds(100)
        public var backoffCap: Duration = .seconds(5)
        /// At start, the first set waits until every routed service has answered once, or
        /// this long: publishing after the catalog alone would answer 404 for a moment.
        public var firstAnswerGrace: Duration = .seconds(3)
        public var log: @Sendable (String) -> Void = { ControlLog.line($0) }

        public init(url: String, tagPrefix: String = "urlprefix-", datacenter: String? = nil, token: String? = nil, stale: Bool = false) {
            self.url = url
            self.tagPrefix = tagPrefix
            self.datacenter = datacenter
            self.token = token
            self.stale = stale
        }

        var readSettings: ConsulReadSettings {
            ConsulReadSettings(datacenter: datacenter, token: token, stale: stale, maxStale: maxStale, wait: wait,
                               minimumInterval: minimumInterval, timeoutMargin: timeoutMargin, connectTimeout: connectTimeout,
                               backoffBase: backoffBase, backoffCap: backoffCap, log: log)
        }
    }

    public let options: Options
    public let url: HTTPURL
    private let stopSignal = StopSignal()
    private let state = Mutex(State())

    /// Everything the threads share; always under `state`.
    private struct State {
        /// Routed services and their query's stop signal and thread.
        var watches: [String: (signal: StopSignal, thread: LoopThread?)] = [:]
        /// The last passing instances of each routed service that has answered.
        var health: [String: [HealthEntry]] = [:]
        /// `service\ttag` of every unsupported tag already logged.
        var logged: Set<String> = []
        /// Route conflicts already logged (`host/path`).
        var loggedConflicts: Set<String> = []
        var last: RouteSet?
        /// False until the first set went out (see Options.firstAnswerGrace).
        var started = false
    }

    public init(options: Options) throws(HTTPClientError) {
        self.options = options
        self.url = try HTTPURL(parsing: options.url)
    }

    public var description: String {
        var text = "consul \(url) routes from tags \(options.tagPrefix)"
        if let dc = options.datacenter { text += " dc \(dc)" }
        if options.stale { text += " stale" }
        return text
    }

    /// Safe from inside `publish` (it takes no lock): the catalog query ends within
    /// milliseconds, and `run` then ends every service query.
    public func stop() {
        stopSignal.trigger()
    }

    /// Runs until `stop()`, calling `publish` with every new whole set. `report` hears how
    /// each query went (the catalog's and every service's).
    public func run(publish: @escaping @Sendable (RouteSet) -> Void, report: @escaping @Sendable (SourceEvent) -> Void = { _ in }) {
        let catalog = ConsulWatch(url: url, path: "/v1/catalog/services", settings: options.readSettings,
                                  stopSignal: stopSignal, description: description)
        var lastServices: Set<String>?
        catalog.run(report: report) { body throws(ConsulError) in
            let services = try ConsulSource.decode([String: [String]].self, body)
            let routed = self.routedServices(services)
            guard routed != lastServices else { return }
            lastServices = routed
            self.follow(routed, publish: publish, report: report)
        }
        // Stopped: end every service query.
        let threads = state.withLock { state in
            let threads = state.watches.values.compactMap(\.thread)
            for watch in state.watches.values { watch.signal.trigger() }
            return threads
        }
        for thread in threads { thread.join() }
    }

    /// The services with at least one usable route tag. Unusable ones are logged here
    /// (once per service and tag), so a service with only those costs no query.
    private func routedServices(_ catalog: [String: [String]]) -> Set<String> {
        var routed: Set<String> = []
        for (service, tags) in catalog {
            for tag in tags {
                switch URLPrefixTag.parse(tag, prefix: options.tagPrefix) {
                case .success: routed.insert(service)
                case .failure(let problem): logUnsupported(service: service, tag: tag, problem)
                case nil: break
                }
            }
        }
        return routed
    }

    private func logUnsupported(service: String, tag: String, _ problem: URLPrefixTag.Unsupported) {
        let first = state.withLock { $0.logged.insert(service + "\t" + tag).inserted }
        if first {
            options.log("balancerd: consul: service \(service): tag '\(tag)' skipped: \(problem.reason)")
        }
    }

    /// Starts a query for each newly routed service, ends those of services no longer routed.
    private func follow(_ routed: Set<String>, publish: @escaping @Sendable (RouteSet) -> Void,
                        report: @escaping @Sendable (SourceEvent) -> Void) {
        let (added, removed) = state.withLock { state -> ([String: StopSignal], [(StopSignal, LoopThread?)]) in
            var added: [String: StopSignal] = [:]
            for service in routed where state.watches[service] == nil {
                let signal = StopSignal()
                added[service] = signal
                state.watches[service] = (signal, nil)
            }
            var removed: [(StopSignal, LoopThread?)] = []
            for service in state.watches.keys where !routed.contains(service) {
                removed.append(state.watches.removeValue(forKey: service)!)
                state.health[service] = nil
            }
            return (added, removed)
        }
        for (signal, thread) in removed {
            signal.trigger()
            thread?.join()
        }
        for (service, signal) in added.sorted(by: { $0.key < $1.key }) {
            let thread = LoopThread(name: "consul-route") { [self] in
                watchService(service, signal: signal, publish: publish, report: report)
            }
            state.withLock { $0.watches[service]?.thread = thread }
        }
        let started = state.withLock { $0.started }
        if !started {
            // The first set: give every routed service its first answer (or the grace).
            let deadline = Posix.monotonicNanoseconds() + options.firstAnswerGrace.nanoseconds
            while Posix.monotonicNanoseconds() < deadline && !stopSignal.isTriggered {
                if state.withLock({ state in state.watches.keys.allSatisfy { state.health[$0] != nil } }) { break }
                _ = stopSignal.sleep(for: .milliseconds(5))
            }
            state.withLock { $0.started = true }
        }
        republish(publish)
    }

    private func watchService(_ service: String, signal: StopSignal, publish: @escaping @Sendable (RouteSet) -> Void,
                              report: @escaping @Sendable (SourceEvent) -> Void) {
        let watch = ConsulWatch(url: url, path: "/v1/health/service/\(ConsulSource.percentEncoded(service))",
                                leading: ["passing"], settings: options.readSettings, stopSignal: signal,
                                description: "\(description) service \(service)")
        var last: [HealthEntry]?
        watch.run(report: report) { body throws(ConsulError) in
            let entries = try ConsulSource.decode([HealthEntry].self, body)
            guard entries != last else { return }
            last = entries
            let current = state.withLock { state in
                guard state.watches[service] != nil else { return false }
                state.health[service] = entries
                return state.started
            }
            if current { republish(publish) }
        }
    }

    /// Builds the whole set from the last answers and publishes it if it changed. One
    /// caller at a time (the lock is held across `publish`), so sets go out in order.
    private func republish(_ publish: @Sendable (RouteSet) -> Void) {
        state.withLock { state in
            let built = Self.routeSet(health: state.health, prefix: options.tagPrefix)
            for (service, tag, problem) in built.unsupported where state.logged.insert(service + "\t" + tag).inserted {
                options.log("balancerd: consul: service \(service): tag '\(tag)' skipped: \(problem.reason)")
            }
            for conflict in built.conflicts where state.loggedConflicts.insert(conflict.route).inserted {
                options.log("balancerd: consul: route \(conflict.route) is claimed by \(conflict.backends.joined(separator: " and ")); \(conflict.backends[0]) gets it")
            }
            guard built.set != state.last else { return }
            state.last = built.set
            publish(built.set)
        }
    }

    // MARK: building the set (pure)

    struct Built {
        var set: RouteSet
        var unsupported: [(service: String, tag: String, problem: URLPrefixTag.Unsupported)]
        /// `host/path` claimed by more than one backend; the first (by name) keeps it.
        var conflicts: [(route: String, backends: [String])]
    }

    /// The routes and backends of the passing instances of each service. Deterministic:
    /// the same answers give the same set, whatever order Consul listed them in, so every
    /// balancerd reading the same Consul builds the same table.
    static func routeSet(health: [String: [HealthEntry]], prefix: String) -> Built {
        var unsupported: [(service: String, tag: String, problem: URLPrefixTag.Unsupported)] = []
        var candidates: [ServiceRoute] = []
        var services: [String: BackendSet] = [:]
        for (service, entries) in health.sorted(by: { $0.key < $1.key }) {
            // Each instance's routes, from its own tags.
            var routesOf: [[URLPrefixTag.Route]] = []
            for entry in entries {
                var routes: [URLPrefixTag.Route] = []
                for tag in entry.service.tags ?? [] {
                    switch URLPrefixTag.parse(tag, prefix: prefix) {
                    case .success(let route): routes.append(route)
                    case .failure(let problem): unsupported.append((service, tag, problem))
                    case nil: break
                    }
                }
                routesOf.append(routes)
            }
            let routed = entries.indices.filter { !routesOf[$0].isEmpty }
            let distinct = Set(routesOf.joined()).sorted { ($0.host ?? "", $0.pathPrefix) < ($1.host ?? "", $1.pathPrefix) }
            let base = ServerName.sanitized(service, fallback: "service")
            for route in distinct {
                let carrying = routed.filter { routesOf[$0].contains(route) }
                let backend = carrying.count == routed.count
                    ? base : base + "_" + ServerName.sanitized((route.host ?? "") + route.pathPrefix, fallback: "route")
                if services[backend] == nil {
                    let set = ConsulSource.backendSet(from: carrying.map { entries[$0] }).set
                    guard !set.servers.isEmpty else { continue }  // no usable address: no route
                    services[backend] = set
                }
                candidates.append(route.route(to: backend))
            }
        }
        // One backend per host and path: the first by name wins, the rest are reported.
        candidates.sort { ($0.host ?? "", $0.pathPrefix, $0.service) < ($1.host ?? "", $1.pathPrefix, $1.service) }
        var routes: [ServiceRoute] = []
        var conflicts: [(route: String, backends: [String])] = []
        for route in candidates {
            if let previous = routes.last, previous.host == route.host, previous.pathPrefix == route.pathPrefix {
                let key = (route.host ?? "") + route.pathPrefix
                if let i = conflicts.firstIndex(where: { $0.route == key }) {
                    conflicts[i].backends.append(route.service)
                } else {
                    conflicts.append((key, [previous.service, route.service]))
                }
                continue
            }
            routes.append(route)
        }
        // Backends that lost every route to a conflict are not published.
        let used = Set(routes.map(\.service))
        services = services.filter { used.contains($0.key) }
        return Built(set: RouteSet(routes: routes, services: services), unsupported: unsupported, conflicts: conflicts)
    }
}
