// How a RouteSet reaches the loops: backends for the services it names (created the
// first time a service is seen, emptied when it is gone), then a new routing table for
// the frontend, each handed to every loop by a task (the way backend tables travel).
// Nothing on the request path takes a lock: a loop sees the old arrays or the new ones.
//
// A service that disappears loses its routes and its servers; a connection already
// talking to one of them keeps its server, since the session holds the table it picked
// the server from.

extension Proxy: RoutePublisher {
    /// Replaces the discovered routes of `frontend`. Control thread or a source's thread;
    /// blocking (server names are resolved), never a loop.
    public func publishRoutes(_ set: RouteSet, frontend name: String) throws {
        guard let frontend = frontends.first(where: { $0.config.name == name }) else {
            throw ProxyError("no frontend named '\(name)'")
        }
        guard frontend.config.mode == .http else {
            throw ProxyError("frontend '\(name)' is in tcp mode: routes by host and path need mode http")
        }
        // Only services with servers get routes (RouteSet's contract).
        let routes = set.routes.filter { set.services[$0.service] != nil }
        let wanted = Set(routes.map(\.service))
        let loops = workerCount

        // 1. New backends, under the lock so two publishers cannot both create one.
        let grown: (tables: [BackendTable], counters: [BackendCounters])? = try publishLock.withLock { state in
            var created = false
            for service in wanted.sorted() where !state.backendConfigs.contains(where: { $0.name == service }) {
                var config = frontend.backendIndex >= 0 ? state.backendConfigs[frontend.backendIndex] : BackendConfig(name: service, mode: .http)
                config.name = service
                config.mode = .http
                config.servers = []
                config.discovery = nil
                state.generation += 1
                let table = try Proxy.buildTable(config, set: BackendSet(servers: []), generation: state.generation,
                                                 registry: &state.healthRegistry, loops: loops)
                state.tables.append(table)
                state.backendConfigs.append(config)
                state.counters.append(BackendCounters(name: service, loops: loops))
                state.routedBackends.insert(service)
                created = true
            }
            return created ? (state.tables, state.counters) : nil
        }
        if let grown {
            handOut { worker in worker.addBackends(tables: grown.tables, counters: grown.counters) }
        }

        // 2. Servers: every routed backend follows its service; one whose service is gone
        // is emptied. A backend of the file that shares a service's name keeps its own.
        let routed = publishLock.withLock { $0.routedBackends }
        for service in routed.sorted() {
            try publish(backend: service, set: set.services[service] ?? BackendSet(servers: []))
        }

        // 3. The routing table, of the frontend's version serving now: a reload may have
        // replaced it since (it carries the routes over under this same lock).
        let installed: (RoutingTable, Int)? = publishLock.withLock { state in
            guard let f = state.live.first(where: { state.frontends[$0]?.config.name == name }),
                  let frontend = state.frontends[f] else { return nil }
            guard state.routes[f] != routes else { return nil }
            let names = Dictionary(state.backendConfigs.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
            let table = RoutingTable(generation: state.routing[f].generation + 1, routing: frontend.config.routing,
                                     routes: routes, defaultBackend: frontend.fallbackBackend, backendIndex: { names[$0] })
            state.routes[f] = routes
            state.routing[f] = table
            return (table, f)
        }
        if let (table, f) = installed {
            handOut { worker in worker.installRouting(table, frontend: f) }
        }
    }
}

extension Configuration {
    /// This configuration with `set` routed on frontend `name`, as `balancerd export-haproxy`
    /// writes one snapshot of a route source: a backend per routed service (the settings of
    /// the frontend's default backend, the service's servers) and a `use_backend` rule per
    /// route after the file's own, in the order the router tries them. The same rules
    /// `/haproxy.cfg` writes for a running proxy.
    public func applyingRoutes(_ set: RouteSet, frontend name: String) -> Configuration {
        guard let f = frontends.firstIndex(where: { $0.name == name }) else { return self }
        var result = self
        let routes = set.routes.filter { set.services[$0.service] != nil }
        let template = backend(named: frontends[f].defaultBackend) ?? BackendConfig(name: name, mode: .http)
        for service in Set(routes.map(\.service)).sorted() {
            guard let servers = set.services[service]?.servers else { continue }
            if let existing = result.backends.firstIndex(where: { $0.name == service }) {
                // A file backend of the same name: the route source feeds it (publishRoutes).
                if result.backends[existing].discovery == nil { result.backends[existing].servers = servers }
                continue
            }
            var config = template
            config.name = service
            config.mode = .http
            config.servers = servers
            config.discovery = nil
            result.backends.append(config)
        }
        let order = RoutingTable(generation: 0, routing: FrontendRouting(), routes: routes, defaultBackend: -1,
                                 backendIndex: { _ in 0 }).routesInOrder
        result.frontends[f].routing.useBackend += RoutingTable.exportRules(order)
        return result
    }
}
