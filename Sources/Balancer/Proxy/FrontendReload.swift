// Frontends on reload (SIGHUP): added, removed and changed frontends apply live, without a
// restart and without the handover.
//
// A frontend's settings are an immutable FrontendRuntime that its sessions hold. A reload
// never changes one: a changed frontend gets a new version in a new slot, new connections
// get it, and connections accepted before keep the version they started with (timeouts,
// routing, mode, default backend, certificates) until they end. So every frontend setting
// applies live (mode, binds, default_backend, timeouts, acl/http-request/use_backend,
// forwardfor, errorfile, ssl certificates); maxconn is the process's (global), and global
// settings and discovery sources are read at start only. Slots are never reused, so
// the loops' per-slot arrays stay valid for those sessions. What a replaced or removed
// version holds (its configuration, compiled routing and session settings) goes once its
// last connection ends, loop by loop (ProxyWorker.retire): a frontend of 3,000 host rules
// left 2 MiB behind per reload before, and RSS now stays flat (FrontendVersionMemoryTests).
//
// Listening sockets follow the binds, not the versions: a bind the new file still has
// keeps its socket (and whatever the kernel queued on it), and only the frontend version
// its new connections get changes. Binds no frontend has any more close; their sessions
// carry on. New binds open on every loop before anything changes, so a bind that cannot
// open (port in use) refuses the whole reload with nothing applied: what haproxy does,
// whose new process fails to bind and leaves the old one serving.
//
// Threads: control thread only (Proxy.reload). The loops get the changes in one task each.

/// What a reload did, for its log line.
public struct ReloadReport: Sendable {
    /// What was not applied, and why.
    public var warnings: [String] = []
    /// Frontends by name: new ones, ones gone, and ones whose new settings apply to new
    /// connections.
    public var addedFrontends: [String] = []
    public var removedFrontends: [String] = []
    public var changedFrontends: [String] = []
    public var addedBackends: [String] = []
    /// Listeners, as `frontend@address`.
    public var opened: [String] = []
    public var closed: [String] = []

    public init() {}

    /// One line's worth: what opened and closed, or that frontends did not change.
    public var summary: String {
        var parts: [String] = []
        func add(_ label: String, _ names: [String]) {
            if !names.isEmpty { parts.append("\(label) \(names.joined(separator: ","))") }
        }
        add("opened", opened)
        add("closed", closed)
        add("frontends added", addedFrontends)
        add("frontends removed", removedFrontends)
        add("frontends changed", changedFrontends)
        add("backends added", addedBackends)
        return parts.isEmpty ? "frontends unchanged" : parts.joined(separator: "; ")
    }
}

/// A reload's listener changes as one loop applies them (ProxyWorker.applyListeners).
enum ListenerChange {
    struct Opened: Sendable {
        let fd: CInt
        let frontend: FrontendRuntime
        let bind: HostPort
        let tls: TLSContext?
    }

    struct Retargeted: Sendable {
        let fromSlot: Int
        let bind: HostPort
        let frontend: FrontendRuntime
        let tls: TLSContext?
    }

    struct Closed: Sendable {
        let slot: Int
        let bind: HostPort
    }
}

/// A reload's frontend changes, checked and with their sockets open, before anything
/// changed. Either installed (Proxy.installFrontends) or abandoned.
struct FrontendPlan {
    enum Entry {
        /// Unchanged (certificates aside: reloadCertificates loads them again).
        case kept(FrontendRuntime)
        /// New, or changed: a new version, with its certificates loaded.
        case fresh(Frontend, previous: FrontendRuntime?, tls: [HostPort: TLSContext])
    }

    /// In the new file's order.
    var entries: [Entry] = []
    /// New sockets: one per loop, by loop index.
    var opened: [(frontend: String, bind: HostPort, address: SocketAddress, fds: [CInt])] = []
    /// Binds whose socket stays, for the new version of `to` (its own frontend, changed,
    /// or another frontend the bind moved to).
    var retargeted: [(from: FrontendRuntime, bind: HostPort, to: String)] = []
    /// Binds no frontend has any more.
    var closed: [(from: FrontendRuntime, bind: HostPort)] = []

    /// Closes the sockets opened for a reload that is not applied.
    func abandon() {
        for socket in opened {
            for fd in socket.fds { Posix.close(fd) }
        }
    }
}

extension Proxy {
    /// Which listening socket a bind is: its address, except that each `:0` bind (an
    /// ephemeral port) belongs to its frontend.
    private struct ListenerKey: Hashable {
        let bind: HostPort
        let owner: String?

        init(_ bind: HostPort, frontend: String) {
            self.bind = bind
            self.owner = bind.port == 0 ? frontend : nil
        }
    }

    /// True when `a` and `b` differ at most in the certificates of the same `ssl` binds,
    /// which reloadCertificates applies in place.
    static func sameButCertificates(_ a: Frontend, _ b: Frontend) -> Bool {
        guard Set(a.tls.keys) == Set(b.tls.keys) else { return false }
        var a = a, b = b
        a.tls = [:]
        b.tls = [:]
        return a == b
    }

    /// Works out what `new` changes in the frontends, loads the certificates of new
    /// versions and opens the new binds on every loop. Throws, with nothing changed and
    /// every socket it opened closed, when a default backend is missing, a certificate
    /// does not load or a bind does not open; the error names the frontend and the bind.
    func prepareFrontends(_ new: Configuration, report: inout ReloadReport) throws -> FrontendPlan {
        let current = frontends
        let byName = Dictionary(current.map { ($0.config.name, $0) }, uniquingKeysWith: { a, _ in a })
        let backendNames = Set(publishLock.withLock { $0.backendConfigs.map(\.name) }).union(new.backends.map(\.name))
        var plan = FrontendPlan()
        var listening: [ListenerKey: (FrontendRuntime, HostPort)] = [:]
        for frontend in current {
            for bind in frontend.config.binds { listening[ListenerKey(bind, frontend: frontend.config.name)] = (frontend, bind) }
        }
        // An unchanged frontend keeps its binds; no other frontend takes them over.
        for config in new.frontends {
            if let old = byName[config.name], Proxy.sameButCertificates(old.config, config) {
                for bind in config.binds { listening[ListenerKey(bind, frontend: config.name)] = nil }
            }
        }
        do {
            for config in new.frontends {
                let previous = byName[config.name]
                if let previous, Proxy.sameButCertificates(previous.config, config) {
                    plan.entries.append(.kept(previous))
                    continue
                }
                guard backendNames.contains(config.defaultBackend) else {
                    throw ProxyError("frontend '\(config.name)': no backend named '\(config.defaultBackend)'")
                }
                let tls = try Proxy.tlsContexts(of: config)
                for bind in config.binds {
                    if let (owner, ownerBind) = listening.removeValue(forKey: ListenerKey(bind, frontend: config.name)) {
                        plan.retargeted.append((owner, ownerBind, config.name))
                    } else {
                        do {
                            let (address, fds) = try openListenerSockets(on: SocketAddress.resolve(host: bind.host, port: bind.port))
                            plan.opened.append((config.name, bind, address, fds))
                        } catch {
                            throw ProxyError("frontend '\(config.name)', bind \(bind): \(error)")
                        }
                    }
                }
                plan.entries.append(.fresh(config, previous: previous, tls: tls))
                if previous == nil { report.addedFrontends.append(config.name) } else { report.changedFrontends.append(config.name) }
                if config.routes != nil && config.routes != previous?.config.routes {
                    report.warnings.append("frontend '\(config.name)': route discovery ('discovery … routes') starts with a restart; it keeps the routes it has")
                }
            }
        } catch {
            plan.abandon()
            throw error
        }
        plan.closed = listening.values.map { (from: $0.0, bind: $0.1) }
            .sorted { ($0.from.index, $0.bind.description) < ($1.from.index, $1.bind.description) }
        let newNames = Set(new.frontends.map(\.name))
        report.removedFrontends = current.map(\.config.name).filter { !newNames.contains($0) }
        return plan
    }

    /// Opens a listening socket on `address` for every loop: one SO_REUSEPORT socket per
    /// loop (the first fixes an ephemeral port), or one socket shared by all (duplicated
    /// per loop). Returns the address as bound and the sockets by loop index; on failure
    /// closes what it opened. Start-up (bindListeners) and reload open binds this way.
    func openListenerSockets(on address: SocketAddress) throws -> (address: SocketAddress, fds: [CInt]) {
        var address = address
        var fds: [CInt] = []
        do {
            if options.reusePort {
                for _ in workers {
                    let fd = try Socket.listen(on: address, reusePort: true)
                    fds.append(fd)
                    if address.port == 0 { address = try Posix.localAddress(fd) }
                }
            } else {
                let fd = try Socket.listen(on: address, reusePort: false)
                fds.append(fd)
                address = try Posix.localAddress(fd)
                for _ in workers.dropFirst() { fds.append(try Posix.duplicate(fd)) }
            }
            return (address, fds)
        } catch {
            for fd in fds { Posix.close(fd) }
            throw error
        }
    }

    /// Makes `plan` the frontends: new versions take new slots, and every loop gets them
    /// and its listener changes in one task (and this waits for it, as publish does).
    /// Returns the slots it made, whose certificates are fresh.
    func installFrontends(_ plan: FrontendPlan, report: inout ReloadReport) -> Set<Int> {
        let loops = workers.count
        let (all, routing, made) = publishLock.withLock { state in
            let names = Dictionary(state.backendConfigs.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
            var made: [String: FrontendRuntime] = [:]
            var live: [Int] = []
            for entry in plan.entries {
                switch entry {
                case .kept(let frontend):
                    live.append(frontend.index)
                case .fresh(let config, let previous, _):
                    // prepareFrontends checked the name, and backends are never removed.
                    let backendIndex = names[config.defaultBackend] ?? 0
                    let fallback = state.backendConfigs[backendIndex]
                    let routesOnly = config.routes != nil && fallback.servers.isEmpty && fallback.discovery == nil
                    let frontend = FrontendRuntime(index: state.frontends.count, config: config, backendIndex: backendIndex,
                                                   fallbackBackend: routesOnly ? -1 : backendIndex,
                                                   counters: previous?.counters ?? FrontendCounters(loops: loops))
                    // Discovered routes carry over to the new version (publishRoutes finds
                    // it by name under this lock from now on).
                    let routes = previous.map { state.routes[$0.index] } ?? []
                    let generation = previous.map { state.routing[$0.index].generation + 1 } ?? 1
                    state.frontends.append(frontend)
                    state.routing.append(RoutingTable(generation: generation, routing: config.routing, routes: routes,
                                                      defaultBackend: frontend.fallbackBackend, backendIndex: { names[$0] }))
                    state.routes.append(routes)
                    made[config.name] = frontend
                    live.append(frontend.index)
                }
            }
            state.live = live
            return (state.frontends, state.routing, made)
        }
        var contexts: [String: [HostPort: TLSContext]] = [:]
        for case .fresh(let config, _, let tls) in plan.entries { contexts[config.name] = tls }
        // Versions replaced or removed now. The loops release what they hold of them once
        // their last connection ends (ProxyWorker.retire); the publish state needs none of
        // it from now on (discovery publishes to live versions only).
        let retired = publishLock.withLock { state in
            let retired = all.indices.filter { state.frontends[$0] != nil && !state.live.contains($0) }
            for slot in retired {
                state.frontends[slot] = nil
                state.routing[slot] = RoutingTable.released
                state.routes[slot] = []
            }
            return retired
        }
        tlsContexts.withLock { byFrontend in
            while byFrontend.count < all.count { byFrontend.append([:]) }
            for (name, tls) in contexts { if let frontend = made[name] { byFrontend[frontend.index] = tls } }
            // Sessions hold their own connection's context; a retired slot needs none.
            for slot in retired { byFrontend[slot] = [:] }
        }

        var opened = [[ListenerChange.Opened]](repeating: [], count: loops)
        for socket in plan.opened {
            guard let frontend = made[socket.frontend] else { continue }
            for (loop, fd) in socket.fds.enumerated() where loop < loops {
                opened[loop].append(.init(fd: fd, frontend: frontend, bind: socket.bind, tls: contexts[socket.frontend]?[socket.bind]))
            }
        }
        let retargeted = plan.retargeted.compactMap { change -> ListenerChange.Retargeted? in
            guard let frontend = made[change.to] else { return nil }
            return .init(fromSlot: change.from.index, bind: change.bind, frontend: frontend, tls: contexts[change.to]?[change.bind])
        }
        let closed = plan.closed.map { ListenerChange.Closed(slot: $0.from.index, bind: $0.bind) }
        // A handover must see the sockets as the loops will have them: closed ones leave
        // the list before a loop can close them, opened ones join it.
        exportableListeners.withLock { exportable in
            guard var sockets = exportable else { return }
            for change in closed { sockets[ListenerSocketKey(slot: change.slot, bind: change.bind)] = nil }
            for change in retargeted {
                let from = ListenerSocketKey(slot: change.fromSlot, bind: change.bind)
                if let fds = sockets.removeValue(forKey: from) {
                    sockets[ListenerSocketKey(slot: change.frontend.index, bind: change.bind)] = fds
                }
            }
            for loop in opened {
                for change in loop {
                    sockets[ListenerSocketKey(slot: change.frontend.index, bind: change.bind), default: []].append(change.fd)
                }
            }
            exportable = sockets
        }
        if !made.isEmpty || !closed.isEmpty {
            let (frontends, tables, byLoop) = (all, routing, opened)
            handOut { worker in
                worker.addFrontends(frontends, routing: tables)
                worker.applyListeners(opened: byLoop[worker.loop.index], retargeted: retargeted, closed: closed)
                worker.retire(retired)
            }
        }

        // The listening addresses, for the log line and `boundAddresses`.
        for change in plan.closed {
            let name = change.from.config.name
            let gone = boundAddresses.indices.filter {
                boundAddresses[$0].frontend == name && Proxy.bound(boundAddresses[$0].address, is: change.bind, of: change.from.config)
            }
            for index in gone { report.closed.append("\(name)@\(boundAddresses[index].address)") }
            if gone.isEmpty { report.closed.append("\(name)@\(change.bind)") }
            boundAddresses = boundAddresses.indices.filter { !gone.contains($0) }.map { boundAddresses[$0] }
        }
        for change in plan.retargeted where change.from.config.name != change.to {
            for index in boundAddresses.indices where boundAddresses[index].frontend == change.from.config.name
                && Proxy.bound(boundAddresses[index].address, is: change.bind, of: change.from.config) {
                boundAddresses[index].frontend = change.to
            }
        }
        for socket in plan.opened {
            boundAddresses.append(BoundAddress(frontend: socket.frontend, address: socket.address))
            report.opened.append("\(socket.frontend)@\(socket.address)")
        }
        return Set(made.values.map(\.index))
    }

    /// Whether `address` (as bound) is bind `bind` of `frontend`: same host, and the same
    /// port, or for `:0` a port none of the frontend's other binds names.
    private static func bound(_ address: SocketAddress, is bind: HostPort, of frontend: Frontend) -> Bool {
        if let resolved = try? SocketAddress.resolve(host: bind.host, port: bind.port), resolved.host != address.host {
            return false
        }
        if bind.port != 0 { return address.port == bind.port }
        return !frontend.binds.contains { $0.port != 0 && $0.port == address.port }
    }
}
