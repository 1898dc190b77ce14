// The proxy as the daemon sees it: build it from a Configuration, start its loops,
// publish new backend sets into it, and stop it gracefully.
//
// Threads: `Proxy`'s methods are called from the control thread (main). Loops are only
// reached through `EventLoop.execute`. Publishing is serialised by `publishLock`, which
// is never taken by a loop.
import Synchronization

public struct ProxyOptions: Sendable {
    public var threads: Int
    public var quiet: Bool
    /// One SO_REUSEPORT listener per loop (true), or a single listener socket whose
    /// accepts are shared by all loops (false). See Benchmarks/README.md.
    public var reusePort: Bool
    /// Move bytes with splice(2) through pipes (zero copy) rather than through buffers.
    public var splice: Bool
    /// Where the access log lines go (stderr by default); see `LogSink`.
    public var logSink: LogSink
    /// HTTP mode: a body (or chunk) with at least this many bytes left after what was
    /// read with its head moves with splice(2); see Benchmarks/README.md for why 16 KiB.
    public var spliceThreshold = 16 * 1024

    /// Listening sockets handed over by the balancerd this one replaces (`-x`, see
    /// Handover.swift). Each one whose local address is one of the binds is used instead
    /// of binding; the proxy owns them all from `init` on and closes the ones it does not use.
    public var inheritedListeners: [CInt] = []

    public init(threads: Int, quiet: Bool, reusePort: Bool = true, splice: Bool = true, logSink: LogSink = .standardError) {
        self.threads = threads
        self.quiet = quiet
        self.reusePort = reusePort
        self.splice = splice
        self.logSink = logSink
    }
}

public struct ProxyError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// One bind of one frontend version (its slot): the key of its listening sockets.
struct ListenerSocketKey: Hashable, Sendable {
    let slot: Int
    let bind: HostPort
}

/// A bound frontend address, as reported after start-up (the real port when 0 was asked).
public struct BoundAddress: Sendable {
    public var frontend: String
    public var address: SocketAddress
}

public final class Proxy: @unchecked Sendable {
    public let options: ProxyOptions
    /// The configuration the proxy started with. Frontends and backend settings live in
    /// `PublishState`, since reloads and sources change them (`liveConfiguration()`).
    public let configuration: Configuration
    let shared: ProxyShared
    /// The frontends serving now, in the file's order (a removed or replaced version may
    /// still have sessions: `PublishState.frontends` keeps every slot).
    var frontends: [FrontendRuntime] { publishLock.withLock { s in s.live.compactMap { s.frontends[$0] } } }
    /// Every backend's counters, by index. Grows when publishRoutes creates a backend.
    var backendCounters: [BackendCounters] { publishLock.withLock { $0.counters } }
    private(set) var workers: [ProxyWorker] = []
    private var threads: [LoopThread] = []
    let publishLock = Mutex<PublishState>(PublishState())
    /// Per frontend slot, the TLS context of each `ssl` bind, as the listeners have it now.
    /// Replaced whole by reloadCertificates, grown by reload (control thread).
    let tlsContexts: Mutex<[[HostPort: TLSContext]]>
    /// The active health checks, run on the loops (HealthCheck.swift).
    private(set) var healthChecks: HealthChecks!
    /// Every listening address now; reload adds and removes entries (control thread).
    public internal(set) var boundAddresses: [BoundAddress] = []
    /// Of `options.inheritedListeners`: how many sockets the binds took over, and the
    /// addresses of those no bind wanted (closed), for the start-up log.
    public private(set) var inheritedAdopted = 0
    public private(set) var inheritedUnused: [String] = []
    /// Every listening socket of every loop, by the frontend slot and bind it serves, for
    /// a handover (`_getsocks`); nil once the loops were told to stop accepting, since
    /// they close them then. The control thread updates it before it asks a loop to open
    /// or close a listener (reload), and the lock keeps a handover from sending a
    /// descriptor a loop is closing.
    let exportableListeners = Mutex<[ListenerSocketKey: [CInt]]?>(nil)
    private var started = false
    /// When the proxy was built (monotonic ns, and wall-clock ms): uptime and lastchg.
    let startedAt = Posix.monotonicNanoseconds()
    let startedWall = Posix.wallClockMilliseconds()

    struct PublishState {
        var tables: [BackendTable] = []
        var backendConfigs: [BackendConfig] = []
        var generation: UInt64 = 0
        var healthRegistry: [String: ServerHealth] = [:]
        /// Backend counters, by index: the backend arrays only grow, so an index stays valid.
        var counters: [BackendCounters] = []
        /// Every frontend version by slot (FrontendRuntime.index); slots only grow, as the
        /// loops' per-frontend arrays do. `live` lists the slots serving now, in file order.
        /// A slot a reload retired is nil here (its sessions hold their version; the loops
        /// release theirs when the last one ends: ProxyWorker.retire).
        var frontends: [FrontendRuntime?] = []
        var live: [Int] = []
        /// Per frontend slot: its routing table and the routes discovery last published.
        var routing: [RoutingTable] = []
        var routes: [[ServiceRoute]] = []
        /// Backends publishRoutes created (named after their service).
        var routedBackends: Set<String> = []
    }

    /// Table generations published since start (for stats and logs).
    public var generation: UInt64 { publishLock.withLock { $0.generation } }

    public init(configuration: Configuration, options: ProxyOptions) throws {
        self.configuration = configuration
        self.options = options
        self.shared = ProxyShared(maxConnections: configuration.global.maxConnections ?? MaxConnections.derived(), quiet: options.quiet)
        let loops = max(1, options.threads)
        var frontends: [FrontendRuntime] = []
        for (i, frontend) in configuration.frontends.enumerated() {
            guard let backendIndex = configuration.backends.firstIndex(where: { $0.name == frontend.defaultBackend }) else {
                throw ProxyError("frontend '\(frontend.name)': no backend named '\(frontend.defaultBackend)'")
            }
            let fallback = configuration.backends[backendIndex]
            let routesOnly = frontend.routes != nil && fallback.servers.isEmpty && fallback.discovery == nil
            frontends.append(FrontendRuntime(index: i, config: frontend, backendIndex: backendIndex,
                                             fallbackBackend: routesOnly ? -1 : backendIndex,
                                             counters: FrontendCounters(loops: loops)))
        }
        self.tlsContexts = Mutex(try configuration.frontends.map(Proxy.tlsContexts(of:)))
        let counters = configuration.backends.map { BackendCounters(name: $0.name, loops: loops) }
        let backendNames = Dictionary(configuration.backends.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        let routing = frontends.map { f in
            RoutingTable(generation: 1, routing: f.config.routing, routes: [], defaultBackend: f.fallbackBackend,
                         backendIndex: { backendNames[$0] })
        }

        var initial: [BackendTable] = []
        try publishLock.withLock { state in
            for backend in configuration.backends {
                state.generation += 1
                initial.append(try Proxy.buildTable(backend, set: BackendSet(servers: backend.servers),
                                                    generation: state.generation, registry: &state.healthRegistry,
                                                    loops: loops))
            }
            state.tables = initial
            state.backendConfigs = configuration.backends
            state.counters = counters
            state.frontends = frontends
            state.live = Array(frontends.indices)
            state.routing = routing
            state.routes = frontends.map { _ in [] }
        }

        for index in 0..<max(1, options.threads) {
            let loop = try EventLoop(index: index)
            workers.append(ProxyWorker(loop: loop, shared: shared, frontends: frontends,
                                       backendCounters: counters, tables: initial, routing: routing, splice: options.splice,
                                       spliceThreshold: options.spliceThreshold))
            workers[index].log.sink = options.logSink
        }
        try bindListeners()
        healthChecks = HealthChecks(loops: workers.map(\.loop)) { [weak self] in self?.reweigh(backend: $0) }
        healthChecks.watch(Array(zip(configuration.backends, initial)))
    }

    /// The TLS context of each `ssl` bind of `frontend`, its certificates loaded. Throws
    /// for the first bind (in the order of their addresses) whose certificates do not load,
    /// naming the frontend, the bind, the file and OpenSSL's reason. Blocking (reads files).
    public static func tlsContexts(of frontend: Frontend) throws(ProxyError) -> [HostPort: TLSContext] {
        var contexts: [HostPort: TLSContext] = [:]
        for (bind, config) in frontend.tls.sorted(by: { $0.key.description < $1.key.description }) {
            do {
                contexts[bind] = try TLSContext(config)
            } catch {
                throw ProxyError("frontend '\(frontend.name)', bind \(bind): \(error)")
            }
        }
        return contexts
    }

    /// Resolves a backend set into a table. Blocking (name resolution): control thread only.
    static func buildTable(_ config: BackendConfig, set: BackendSet, generation: UInt64,
                           registry: inout [String: ServerHealth], loops: Int) throws -> BackendTable {
        var servers: [Server] = []
        let contexts: [TLSClientContext?]
        do throws(TLSError) {
            // Traffic and checks in one call: a check verifying as traffic does shares its context.
            contexts = try TLSClientContext.contexts(for: set.servers.map(\.tls) + set.servers.map(\.checkTLS))
        } catch {
            throw ProxyError("backend '\(config.name)': ca-file \(error)")
        }
        for (i, server) in set.servers.enumerated() {
            let (tls, checkTLS) = (contexts[i], contexts[set.servers.count + i])
            let address: SocketAddress
            do {
                address = try SocketAddress.resolve(host: server.address.host, port: server.address.port)
            } catch {
                throw ProxyError("backend '\(config.name)', server '\(server.name)': \(error)")
            }
            // Health follows the server across tables: same backend, name and address.
            let key = "\(config.name)/\(server.name)/\(address)"
            let health = registry[key] ?? ServerHealth(loops: loops)
            registry[key] = health
            servers.append(Server(config: server, address: address, health: health, tls: tls, checkTLS: checkTLS))
        }
        var pruned: [String: ServerHealth] = [:]
        for (key, value) in registry where !key.hasPrefix("\(config.name)/") { pruned[key] = value }
        for server in servers { pruned["\(config.name)/\(server.name)/\(server.address)"] = server.health }
        registry = pruned
        return BackendTable(generation: generation, config: config, servers: servers)
    }

    private func bindListeners() throws {
        // The inherited sockets by the address they listen on. The old process had one
        // per loop and bind (SO_REUSEPORT), so an address may come several times.
        var inherited: [SocketAddress: [CInt]] = [:]
        var inheritedOrder: [SocketAddress] = []
        for fd in options.inheritedListeners {
            guard let address = try? Posix.localAddress(fd) else {
                inheritedUnused.append("fd \(fd) (no address)")
                Posix.close(fd)
                continue
            }
            if inherited[address] == nil { inheritedOrder.append(address) }
            inherited[address, default: []].append(fd)
        }
        var exported: [ListenerSocketKey: [CInt]] = [:]
        defer {
            // Whatever no bind took (a bind removed from the file, or a failure above).
            for address in inheritedOrder {
                for fd in inherited[address] ?? [] {
                    inheritedUnused.append(address.description)
                    Posix.close(fd)
                }
            }
            exportableListeners.withLock { $0 = exported }
        }
        for frontend in frontends {
            for bind in frontend.config.binds {
                let tls = tlsContexts.withLock { $0[frontend.index][bind] }
                var address: SocketAddress
                do {
                    address = try SocketAddress.resolve(host: bind.host, port: bind.port)
                } catch {
                    throw ProxyError("frontend '\(frontend.config.name)', bind \(bind): \(error)")
                }
                let key = ListenerSocketKey(slot: frontend.index, bind: bind)
                do {
                    if let sockets = inherited.removeValue(forKey: address), !sockets.isEmpty {
                        // Every inherited socket must be watched: connections the kernel
                        // queued on one that nobody accepts from would be lost. More sockets
                        // than loops: some loops watch several. Fewer: loops share one, as
                        // in the single-listener mode.
                        for i in 0..<max(sockets.count, workers.count) {
                            let fd = i < sockets.count ? sockets[i] : try Posix.duplicate(sockets[i % sockets.count])
                            try workers[i % workers.count].adopt(listenerFD: fd, frontend: frontend, bind: bind, tls: tls)
                            exported[key, default: []].append(fd)
                        }
                        inheritedAdopted += sockets.count
                    } else {
                        // One SO_REUSEPORT socket per loop, or one socket every loop
                        // watches (the kernel wakes one or more, accept4 decides who
                        // gets each connection).
                        let opened = try openListenerSockets(on: address)
                        address = opened.address
                        for (worker, fd) in zip(workers, opened.fds) {
                            try worker.adopt(listenerFD: fd, frontend: frontend, bind: bind, tls: tls)
                            exported[key, default: []].append(fd)
                        }
                    }
                } catch {
                    throw ProxyError("frontend '\(frontend.config.name)', bind \(bind): \(error)")
                }
                boundAddresses.append(BoundAddress(frontend: frontend.config.name, address: address))
            }
        }
    }

    /// Starts one thread per loop. Also sets SIGPIPE to ignored unless the process chose a
    /// disposition of its own (see `Posix.ignoreBrokenPipe`): splice(2) raises it.
    public func start() {
        Posix.ignoreBrokenPipe()
        started = true
        for worker in workers {
            let loop = worker.loop
            threads.append(LoopThread(name: "balancerd-\(loop.index)") { loop.run() })
        }
    }

    /// Publishes `set` as the new server list of backend `name`. An identical set does
    /// nothing. Control thread; blocking (resolution), never called by a loop.
    /// Returns the new table generation, or nil when nothing changed.
    @discardableResult
    public func publish(backend name: String, set: BackendSet, config: BackendConfig? = nil) throws -> UInt64? {
        guard let index = backendCounters.firstIndex(where: { $0.name == name }) else {
            throw ProxyError("no backend named '\(name)'")
        }
        let table: BackendTable? = try publishLock.withLock { state in
            let current = state.tables[index]
            let backendConfig = config ?? state.backendConfigs[index]
            // An identical set (and settings) changes nothing: no new generation.
            if current.servers.map(\.config) == set.servers && backendConfig == state.backendConfigs[index] { return nil }
            let table = try Proxy.buildTable(backendConfig, set: set, generation: state.generation + 1,
                                             registry: &state.healthRegistry, loops: workers.count)
            state.generation += 1
            state.backendConfigs[index] = backendConfig
            state.tables[index] = table
            return table
        }
        guard let table else { return nil }
        // Hand the table to every loop, and wait (briefly) until each has it, so that when
        // this returns, every new connection is balanced over the new set. Waiting here
        // costs the control thread one loop iteration, never a loop anything.
        let applied = Atomic<Int>(0)
        for worker in workers {
            worker.loop.execute {
                // Two publishers (a discovery source and a reload) may race to the task
                // queue; generations are global and increasing, so the newest table wins
                // whatever order the tasks arrive in.
                worker.install(table, backend: index)
                applied.add(1, ordering: .releasing)
            }
        }
        if started {
            let deadline = Posix.monotonicNanoseconds() + 1_000_000_000
            while applied.load(ordering: .acquiring) < workers.count && Posix.monotonicNanoseconds() < deadline {
                Posix.sleep(milliseconds: 1)
            }
        }
        healthChecks.watch(publishLock.withLock { Array(zip($0.backendConfigs, $0.tables)) })
        return table.generation
    }

    /// Republishes backend `name` with the same servers after a change of effective
    /// weight (the operator's weight or state, slow start): a new table generation whose
    /// schedule uses the new weights. Any thread, loops included: it does not wait for the
    /// loops to take the table (a loop waiting on itself would never return).
    public func reweigh(backend name: String) {
        guard let index = backendCounters.firstIndex(where: { $0.name == name }) else { return }
        let table: BackendTable = publishLock.withLock { state in
            let current = state.tables[index]
            state.generation += 1
            let table = BackendTable(generation: state.generation, config: state.backendConfigs[index], servers: current.servers)
            state.tables[index] = table
            return table
        }
        for worker in workers {
            worker.loop.execute { worker.install(table, backend: index) }
        }
    }

    /// Applies a re-read configuration (SIGHUP). Established connections are untouched:
    /// they keep the frontend settings they were accepted with and the server they have.
    /// - Backends: settings and servers change in place; a new backend is created.
    /// - Frontends (FrontendReload.swift): new binds open, removed ones close (their
    ///   connections finish), a changed frontend's new settings apply to new connections.
    /// All or nothing up to the backends: a bind that cannot open (port in use), a
    /// certificate that cannot load or a server name that does not resolve throws, and
    /// then nothing is applied, as haproxy keeps its old process when the new one cannot
    /// bind. (A backend `ca-file` that fails to load is only found while publishing: the
    /// backends before it are applied, the frontends are not.) Control thread only;
    /// reloads never run at once.
    /// Returns what opened and closed, and warnings for the parts that were not applied.
    public func reload(_ new: Configuration) throws -> ReloadReport {
        var report = ReloadReport()
        // Everything that can fail first: names resolve, sockets open, certificates load.
        let plan = try prepareFrontends(new, report: &report)
        do {
            for backend in new.backends {
                for server in backend.servers {
                    do {
                        _ = try SocketAddress.resolve(host: server.address.host, port: server.address.port)
                    } catch {
                        throw ProxyError("backend '\(backend.name)', server '\(server.name)': \(error)")
                    }
                }
            }
            for backend in new.backends {
                if let index = backendCounters.firstIndex(where: { $0.name == backend.name }) {
                    var set = BackendSet(servers: backend.servers)
                    if backend.discovery != nil {
                        // A discovered backend keeps the servers its source last published; the
                        // file only changes its settings. A changed source needs a restart.
                        set = BackendSet(servers: tables[index].servers.map(\.config))
                        let started = configuration.backends.first { $0.name == backend.name }?.discovery
                        if backend.discovery != started {
                            report.warnings.append("backend '\(backend.name)': discovery source changes need a restart")
                        }
                    }
                    try publish(backend: backend.name, set: set, config: backend)
                } else {
                    try addBackend(backend)
                    report.addedBackends.append(backend.name)
                    if backend.discovery != nil {
                        report.warnings.append("backend '\(backend.name)': its discovery source starts with a restart; serving the file's servers")
                    }
                }
            }
        } catch {
            plan.abandon()
            throw error
        }
        let fresh = installFrontends(plan, report: &report)
        report.warnings += reloadCertificates(new, skipping: fresh)
        return report
    }

    /// Creates backend `config` (a reload found it new): a table, counters, and its place
    /// in every loop's arrays, the way publishRoutes creates one. Control thread.
    private func addBackend(_ config: BackendConfig) throws {
        let loops = workers.count
        let (tables, counters) = try publishLock.withLock { state in
            state.generation += 1
            let table = try Proxy.buildTable(config, set: BackendSet(servers: config.servers), generation: state.generation,
                                             registry: &state.healthRegistry, loops: loops)
            state.tables.append(table)
            state.backendConfigs.append(config)
            state.counters.append(BackendCounters(name: config.name, loops: loops))
            return (state.tables, state.counters)
        }
        handOut { worker in worker.addBackends(tables: tables, counters: counters) }
        healthChecks.watch(publishLock.withLock { Array(zip($0.backendConfigs, $0.tables)) })
    }

    /// The configuration as it runs now: backend settings from the last reload, servers
    /// from the last published tables (discovery included). What /haproxy.cfg exports.
    public func liveConfiguration() -> Configuration {
        var live = configuration
        let (configs, tables, routing, frontends) = publishLock.withLock { s in
            (s.backendConfigs, s.tables, s.routing, s.live.compactMap { s.frontends[$0] })
        }
        // Discovered routes follow the file's use_backend rules, as they are evaluated.
        live.frontends = frontends.map { frontend in
            var config = frontend.config
            config.routing.useBackend += RoutingTable.exportRules(routing[frontend.index].routesInOrder)
            return config
        }
        let backends = zip(configs, tables).map { config, table in
            var backend = config
            backend.servers = table.servers.map(\.config)
            return backend
        }
        // The file's backends in their order, then the ones routes created, by name: they
        // were created in the order their services showed up, which differs from instance
        // to instance, and N balancerd on one Consul should export the same file.
        let fromFile = configuration.backends.count
        live.backends = Array(backends.prefix(fromFile)) + backends.dropFirst(fromFile).sorted { $0.name < $1.name }
        return live
    }

    /// Loads the certificates of every `ssl` bind again, with the TLS settings `new`
    /// gives that bind (a bind `new` no longer has keeps its context), and hands the new
    /// contexts to the loops: handshakes from now on use them, established connections
    /// keep theirs. A bind whose certificates fail to load keeps its old context; the
    /// returned messages name the bind, the file and OpenSSL's reason. `skipping`: the
    /// frontend slots a reload just made, whose certificates are fresh. Control thread;
    /// blocking (reads files).
    @discardableResult
    public func reloadCertificates(_ new: Configuration) -> [String] {
        reloadCertificates(new, skipping: [])
    }

    func reloadCertificates(_ new: Configuration, skipping: Set<Int>) -> [String] {
        var warnings: [String] = []
        var changed: [(Int, [HostPort: TLSContext])] = []
        for frontend in frontends where !frontend.config.tls.isEmpty && !skipping.contains(frontend.index) {
            let settings = new.frontends.first { $0.name == frontend.config.name }?.tls ?? [:]
            var fresh: [HostPort: TLSContext] = [:]
            for bind in frontend.config.tls.keys {
                guard let config = settings[bind] else {
                    warnings.append("frontend '\(frontend.config.name)', bind \(bind): no longer 'ssl' in the file; keeping its certificates (a restart applies it)")
                    continue
                }
                do {
                    fresh[bind] = try TLSContext(config)
                } catch {
                    warnings.append("frontend '\(frontend.config.name)', bind \(bind): keeping the previous certificates: \(error)")
                }
            }
            guard !fresh.isEmpty else { continue }
            tlsContexts.withLock { $0[frontend.index].merge(fresh) { _, new in new } }
            changed.append((frontend.index, fresh))
        }
        if !changed.isEmpty {
            let installed = changed
            handOut { worker in
                for (index, contexts) in installed { worker.installTLS(contexts, frontend: index) }
            }
        }
        return warnings
    }

    /// The subjects of the certificates bind `bind` of frontend `name` serves now (the
    /// first is the default), for logs and tests.
    public func certificateSubjects(frontend name: String, bind: HostPort) -> [String] {
        guard let f = frontends.first(where: { $0.config.name == name })?.index else { return [] }
        return tlsContexts.withLock { $0[f][bind]?.subjects ?? [] }
    }

    /// Hands every loop the backend arrays as they are now (grown by publishRoutes) and
    /// waits until each has them, like `publish`. The arrays only grow, so a loop appends
    /// what it lacks, whatever order two such tasks arrive in.
    func handOut(_ work: @escaping @Sendable (ProxyWorker) -> Void) {
        let applied = Atomic<Int>(0)
        for worker in workers {
            worker.loop.execute {
                work(worker)
                applied.add(1, ordering: .releasing)
            }
        }
        guard started else { return }
        let deadline = Posix.monotonicNanoseconds() + 1_000_000_000
        while applied.load(ordering: .acquiring) < workers.count && Posix.monotonicNanoseconds() < deadline {
            Posix.sleep(milliseconds: 1)
        }
    }

    /// The discovered routes of frontend `name` now, in matching order.
    public func routes(frontend name: String) -> [ServiceRoute] {
        guard let f = frontends.first(where: { $0.config.name == name })?.index else { return [] }
        return publishLock.withLock { $0.routing[f].routesInOrder }
    }

    /// Tables, the backend settings they were built with, and the generation, read at once.
    func publishedState() -> (tables: [BackendTable], configs: [BackendConfig], generation: UInt64) {
        publishLock.withLock { ($0.tables, $0.backendConfigs, $0.generation) }
    }

    /// The number of event loops.
    public var workerCount: Int { workers.count }

    /// The current table of each backend (control thread view).
    public var tables: [BackendTable] { publishLock.withLock { $0.tables } }

    public var activeConnections: Int { shared.active.load(ordering: .relaxed) }

    /// Liveness: true when every event loop runs a task within `timeout` (a loop stuck in
    /// a handler, or stopped, does not). Control threads only: it waits.
    public func loopsAnswer(within timeout: Duration) -> Bool {
        let answered = Atomic<Int>(0)
        for worker in workers { worker.loop.execute { answered.add(1, ordering: .releasing) } }
        let deadline = Posix.monotonicNanoseconds() + timeout.nanoseconds
        while answered.load(ordering: .acquiring) < workers.count {
            if Posix.monotonicNanoseconds() >= deadline { return false }
            Posix.sleep(milliseconds: 1)
        }
        return true
    }

    /// Runs `body` with every listening socket of every loop (a handover sends them),
    /// while no loop can close them. nil once the proxy stopped accepting. Any thread.
    public func withListenerSockets<R: Sendable>(_ body: ([CInt]) -> R) -> R? {
        exportableListeners.withLock { sockets -> R? in
            guard let sockets else { return nil }
            // In any order: the receiver groups them by the address they listen on.
            return body(sockets.values.flatMap { $0 })
        }
    }

    /// Graceful stop: close the listeners, wait up to `grace` for open connections to
    /// finish, then cut the rest and stop the loops. Blocks the calling thread.
    ///
    /// Closing a listener after a handover only drops this process's reference: the new
    /// process holds the same sockets, so their accept queues live on. Open HTTP
    /// connections answer their next request with `Connection: close`; idle ones are
    /// never closed under a client that may be sending (haproxy's
    /// `option idle-close-on-response`): they end at `timeout http-keep-alive`, or at the
    /// end of `grace`.
    public func shutdown(grace: Duration) {
        exportableListeners.withLock { $0 = nil }
        healthChecks.stop()
        let closed = Atomic<Int>(0)
        for worker in workers {
            worker.loop.execute {
                worker.stopAccepting()
                closed.add(1, ordering: .relaxed)
            }
        }
        let start = Posix.monotonicNanoseconds()
        let limit = grace.nanoseconds
        while closed.load(ordering: .relaxed) < workers.count || shared.active.load(ordering: .relaxed) > 0 {
            if Posix.monotonicNanoseconds() - start >= limit { break }
            Posix.sleep(milliseconds: 20)
        }
        for worker in workers {
            worker.loop.execute { worker.killSessions() }
            worker.loop.stop()
        }
        for thread in threads { thread.join() }
        threads.removeAll()
    }
}

