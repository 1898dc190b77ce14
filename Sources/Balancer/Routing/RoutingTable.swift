// A frontend's routing, compiled: its ACLs, http-request rules and use_backend rules from
// the file, the routes discovery published, and the default backend. Immutable; a new
// one is built on the control thread and handed to every loop by a task, exactly as a
// BackendTable is (ProxyWorker.installRouting), so a request reads it with no lock.
//
// The order of a decision (`decide`):
//   1. http-request rules, in file order: deny and redirect answer, set-header,
//      del-header and replace-path edit the request and go on;
//   2. use_backend rules, in file order;
//   3. discovered routes: the exact host, then wildcard hosts (the longest suffix first),
//      then routes with no host; within each, the longest path prefix;
//   4. default_backend; none (a routes-only frontend): 404.

/// A discovered route with its backend resolved.
struct CompiledRoute: Sendable {
    let prefix: [UInt8]
    let backend: Int
    let strip: [UInt8]?
    /// 0: no redirect.
    let redirectStatus: Int
    let redirectLocation: [UInt8]
    let route: ServiceRoute
}

/// Hosts to route lists, looked up with the request's Host bytes in place: an
/// open-addressed table of FNV-1a hashes over the lowercased bytes, so a lookup is one
/// hash and (usually) one comparison, whatever the number of hosts.
struct HostIndex: Sendable {
    private let slots: [Int32]
    let keys: [[UInt8]]
    let routes: [[CompiledRoute]]

    init(_ byHost: [(host: String, routes: [CompiledRoute])]) {
        keys = byHost.map { Array($0.host.utf8) }
        routes = byHost.map(\.routes)
        var capacity = 8
        while capacity < keys.count * 2 { capacity *= 2 }
        var slots = [Int32](repeating: -1, count: keys.isEmpty ? 0 : capacity)
        for (i, key) in keys.enumerated() {
            var slot = key.withUnsafeBytes { Int(HostIndex.hash($0, 0..<$0.count) & UInt64(capacity - 1)) }
            while slots[slot] >= 0 { slot = (slot + 1) & (capacity - 1) }
            slots[slot] = Int32(i)
        }
        self.slots = slots
    }

    @inline(__always)
    static func hash(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in range {
            h = (h ^ UInt64(HTTPSyntax.lowercased(bytes[i]))) &* 0x100_0000_01b3
        }
        return h
    }

    /// The routes of the host `bytes[range]` (compared without regard to case).
    func lookup(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard !slots.isEmpty else { return nil }
        let mask = slots.count - 1
        var slot = Int(HostIndex.hash(bytes, range) & UInt64(mask))
        while true {
            let entry = Int(slots[slot])
            if entry < 0 { return nil }
            let same = keys[entry].withUnsafeBytes { key in
                key.count == range.count && CompiledTest.equal(bytes, range.lowerBound, key, 0, key.count, true)
            }
            if same { return entry }
            slot = (slot + 1) & mask
        }
    }
}

/// What an http-request rule does, with its text as bytes.
struct CompiledRequestRule: Sendable {
    enum Action: Sendable {
        case deny(ErrorResponse)
        case redirect(RedirectRule, value: [UInt8])
        case setHeader(name: [UInt8], value: [UInt8])
        case deleteHeader(name: [UInt8])
        case replacePath(prefix: [UInt8], tail: PathRewrite.Tail, insert: [UInt8])
    }

    let action: Action
    let condition: CompiledCondition?
}

enum RoutingDecision {
    case backend(Int)
    case deny(ErrorResponse)
    /// An http-request redirect rule (its index in `requestRules`).
    case redirect(rule: Int)
    /// A discovered route's `redirect=`.
    case routeRedirect(CompiledRoute)
    /// Nothing matched and there is no default backend.
    case notFound
}

/// Per-loop scratch space for one decision: the request edits decided so far. Reused
/// for every request, so deciding allocates nothing once it has grown.
final class RoutingScratch {
    /// Indices of the applied set-header/del-header rules, in order.
    var headerRules: [Int] = []
    /// The path after replace-path or a route's strip, when `pathRewritten`.
    let path: UnsafeMutableRawBufferPointer
    var pathLength = 0
    var pathRewritten = false

    init(capacity: Int) {
        headerRules.reserveCapacity(16)
        path = .allocate(byteCount: capacity, alignment: 1)
    }

    deinit { path.deallocate() }

    func reset() {
        headerRules.removeAll(keepingCapacity: true)
        pathLength = 0
        pathRewritten = false
    }

    /// Replaces the path with `insert` + `rest` (`rest` may point into `path` itself).
    func rewritePath(insert: [UInt8], rest: UnsafeRawBufferPointer) {
        let total = insert.count + rest.count
        guard total <= path.count else { return }
        // Move the rest first: it may overlap the destination.
        if rest.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: path[insert.count..<total]).copyMemory(from: rest)
        }
        insert.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: path[0..<insert.count]).copyMemory(from: $0) }
        pathLength = total
        pathRewritten = true
    }

    var rewrittenPath: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: path[0..<pathLength]) }
}

public final class RoutingTable: Sendable {
    let generation: UInt64
    let acls: [[CompiledTest]]
    let requestRules: [CompiledRequestRule]
    let useBackend: [(backend: Int, condition: CompiledCondition?)]
    let exact: HostIndex
    let wildcard: HostIndex
    let hostless: [CompiledRoute]
    /// -1: none.
    let defaultBackend: Int
    /// The discovered routes, in matching order (for the export).
    let routesInOrder: [ServiceRoute]
    /// Nothing to evaluate: every request goes to the default backend.
    let trivial: Bool

    /// What the slot of a frontend version that a reload retired holds once its last
    /// connection ended (ProxyWorker.release, Proxy.installFrontends): nothing.
    static let released = RoutingTable(generation: 0, routing: FrontendRouting(), routes: [], defaultBackend: -1,
                                       backendIndex: { _ in nil })

    /// `backendIndex` resolves backend names; the parser and `publishRoutes` made sure
    /// every name resolves.
    init(generation: UInt64, routing: FrontendRouting, routes: [ServiceRoute], defaultBackend: Int,
         backendIndex: (String) -> Int?) {
        self.generation = generation
        self.defaultBackend = defaultBackend
        var acls: [[CompiledTest]] = []
        var names: [String: Int] = [:]
        for acl in routing.acls {
            names[acl.name] = acls.count
            acls.append(acl.tests.map(CompiledTest.init))
        }
        func compile(_ condition: ACLCondition?) -> CompiledCondition? {
            guard let condition else { return nil }
            return CompiledCondition(unless: condition.unless, alternatives: condition.alternatives.map { terms in
                terms.map { term in
                    switch term.operand {
                    case .named(let name):
                        return CompiledCondition.Term(acl: names[name] ?? 0, negated: term.negated)
                    case .anonymous(let test):
                        acls.append([CompiledTest(test)])
                        return CompiledCondition.Term(acl: acls.count - 1, negated: term.negated)
                    }
                }
            })
        }
        var rules: [CompiledRequestRule] = []
        for rule in routing.requestRules {
            let action: CompiledRequestRule.Action = switch rule.action {
            case .deny(let status): .deny(ErrorResponse.allCases.first { $0.status == status } ?? .forbidden)
            case .redirect(let r): .redirect(r, value: Array(r.value.utf8))
            case .setHeader(let name, let value): .setHeader(name: Array(name.utf8), value: Array(value.utf8))
            case .deleteHeader(let name): .deleteHeader(name: Array(name.utf8))
            case .replacePath(let p): .replacePath(prefix: Array(p.prefix.utf8), tail: p.tail, insert: Array(p.insert.utf8))
            }
            rules.append(CompiledRequestRule(action: action, condition: compile(rule.condition)))
        }
        requestRules = rules
        useBackend = routing.useBackend.compactMap { rule in
            guard let index = backendIndex(rule.backend) else { return nil }
            return (index, compile(rule.condition))
        }
        self.acls = acls

        // Discovered routes: longest prefix first within a host; a (host, prefix) pair
        // seen twice keeps its first route.
        func compiled(_ route: ServiceRoute) -> CompiledRoute? {
            guard let backend = backendIndex(route.service) else { return nil }
            return CompiledRoute(prefix: Array(route.pathPrefix.utf8), backend: backend, strip: route.strip.map { Array($0.utf8) },
                                 redirectStatus: route.redirect?.status ?? 0,
                                 redirectLocation: Array((route.redirect?.location ?? "").utf8), route: route)
        }
        func ordered(_ list: [ServiceRoute]) -> [CompiledRoute] {
            var seen = Set<String>()
            return list.sorted { $0.pathPrefix.utf8.count > $1.pathPrefix.utf8.count }
                .filter { seen.insert($0.pathPrefix).inserted }
                .compactMap(compiled)
        }
        var exactHosts: [String: [ServiceRoute]] = [:]
        var wildHosts: [String: [ServiceRoute]] = [:]
        var noHost: [ServiceRoute] = []
        for route in routes {
            guard let host = route.host?.lowercased() else {
                noHost.append(route)
                continue
            }
            if host.hasPrefix("*.") {
                wildHosts[String(host.dropFirst(2)), default: []].append(route)
            } else {
                exactHosts[host, default: []].append(route)
            }
        }
        let exactList = exactHosts.keys.sorted().map { (host: $0, routes: ordered(exactHosts[$0]!)) }
        // Longest suffix first: the most specific wildcard is tried first.
        let wildList = wildHosts.keys.sorted { $0.utf8.count != $1.utf8.count ? $0.utf8.count > $1.utf8.count : $0 < $1 }
            .map { (host: $0, routes: ordered(wildHosts[$0]!)) }
        exact = HostIndex(exactList)
        wildcard = HostIndex(wildList)
        hostless = ordered(noHost)
        routesInOrder = (exactList + wildList).flatMap { $0.routes.map(\.route) } + hostless.map(\.route)
        trivial = acls.isEmpty && rules.isEmpty && useBackend.isEmpty && routes.isEmpty && defaultBackend >= 0
    }

    /// Decides where `request` goes, recording edits in `scratch` (reset first).
    func decide(_ request: RequestView, scratch: RoutingScratch) -> RoutingDecision {
        scratch.reset()
        var request = request
        for (i, rule) in requestRules.enumerated() {
            if let condition = rule.condition, !condition.holds(request, acls: acls) { continue }
            switch rule.action {
            case .deny(let error):
                return .deny(error)
            case .redirect:
                return .redirect(rule: i)
            case .setHeader, .deleteHeader:
                scratch.headerRules.append(i)
            case .replacePath(let prefix, let tail, let insert):
                guard let path = request.path, let rest = PathMatch.strip(prefix, tail: tail, from: path) else { continue }
                scratch.rewritePath(insert: insert, rest: UnsafeRawBufferPointer(rebasing: path[rest]))
                request.path = scratch.rewrittenPath
            }
        }
        for rule in useBackend {
            if rule.condition?.holds(request, acls: acls) ?? true { return .backend(rule.backend) }
        }
        if let route = findRoute(request) {
            if route.redirectStatus != 0 { return .routeRedirect(route) }
            if let strip = route.strip, let path = request.path,
               let rest = PathMatch.strip(strip, tail: .any, from: path) {
                scratch.rewritePath(insert: [], rest: UnsafeRawBufferPointer(rebasing: path[rest]))
            }
            return .backend(route.backend)
        }
        return defaultBackend >= 0 ? .backend(defaultBackend) : .notFound
    }

    /// The discovered route for `request`, in the documented order.
    func findRoute(_ request: RequestView) -> CompiledRoute? {
        guard !routesInOrder.isEmpty, let path = request.path else { return nil }
        if let hostRange = request.host {
            let host = RoutingTable.bareHost(request.bytes, hostRange)
            if !host.isEmpty {
                if let entry = exact.lookup(request.bytes, host), let route = Self.longest(exact.routes[entry], path) {
                    return route
                }
                var i = host.lowerBound
                while i < host.upperBound {
                    if request.bytes[i] == UInt8(ascii: ".") {
                        if let entry = wildcard.lookup(request.bytes, (i + 1)..<host.upperBound),
                           let route = Self.longest(wildcard.routes[entry], path) {
                            return route
                        }
                    }
                    i += 1
                }
            }
        }
        return Self.longest(hostless, path)
    }

    @inline(__always)
    static func longest(_ routes: [CompiledRoute], _ path: UnsafeRawBufferPointer) -> CompiledRoute? {
        for route in routes {
            let hit = route.prefix.withUnsafeBytes { p in
                path.count >= p.count && CompiledTest.equal(path, 0, p, 0, p.count, false)
            }
            if hit { return route }
        }
        return nil
    }

    /// The Host value without its port and a trailing dot: what route hosts are written as.
    static func bareHost(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Range<Int> {
        var upper = range.upperBound
        if range.count > 0 && bytes[range.lowerBound] != UInt8(ascii: "[") {
            var i = upper - 1
            while i >= range.lowerBound && bytes[i] >= UInt8(ascii: "0") && bytes[i] <= UInt8(ascii: "9") { i -= 1 }
            if i >= range.lowerBound && bytes[i] == UInt8(ascii: ":") { upper = i }
        } else if range.count > 0 {
            var i = range.lowerBound
            while i < upper && bytes[i] != UInt8(ascii: "]") { i += 1 }
            if i < upper { upper = i + 1 }
        }
        if upper > range.lowerBound && bytes[upper - 1] == UInt8(ascii: ".") { upper -= 1 }
        return range.lowerBound..<upper
    }
}

enum PathMatch {
    /// Where the rest of `path` starts once `prefix` is taken off, under `tail`'s rule;
    /// nil when the path does not match. For `.slash` the rest keeps its slash.
    static func strip(_ prefix: [UInt8], tail: PathRewrite.Tail, from path: UnsafeRawBufferPointer) -> Range<Int>? {
        let n = prefix.count
        let starts = prefix.withUnsafeBytes { p in path.count >= n && CompiledTest.equal(path, 0, p, 0, n, false) }
        guard starts else { return nil }
        switch tail {
        case .any:
            return n..<path.count
        case .slash:
            return path.count > n && path[n] == UInt8(ascii: "/") ? n..<path.count : nil
        case .optionalSlash:
            return path.count == n || path[n] == UInt8(ascii: "/") ? n..<path.count : nil
        }
    }
}

extension RoutingTable {
    /// Discovered routes as haproxy `use_backend` rules, in matching order, so the export
    /// routes as balancerd does. haproxy's `hdr(host)` sees the port and a trailing dot
    /// that route hosts leave out, so each host is matched with and without them:
    ///   exact `H`:    `{ hdr(host) -i H H. } || { hdr_beg(host) -i H: H.: }`
    ///   wildcard `*.S`: `{ hdr_end(host) -i .S .S. } || { hdr(host) -m sub -i .S: .S.: }`
    /// each ANDed with `{ path_beg PREFIX }`. A route's strip= and redirect= are not
    /// exported (README, Routing).
    static func exportRules(_ routes: [ServiceRoute]) -> [UseBackendRule] {
        routes.map { route in
            let path = ACLTerm(.anonymous(ACLTest(criterion: .pathBegins, values: [route.pathPrefix])))
            guard let host = route.host?.lowercased() else {
                return UseBackendRule(backend: route.service, condition: ACLCondition(alternatives: [[path]]))
            }
            let bare: ACLTerm, ported: ACLTerm
            if host.hasPrefix("*.") {
                let suffix = String(host.dropFirst(1))
                bare = ACLTerm(.anonymous(ACLTest(criterion: .hostEnds, ignoreCase: true, values: [suffix, suffix + "."])))
                ported = ACLTerm(.anonymous(ACLTest(criterion: .host, ignoreCase: true, explicitMatch: .substring,
                                                    values: [suffix + ":", suffix + ".:"])))
            } else {
                bare = ACLTerm(.anonymous(ACLTest(criterion: .host, ignoreCase: true, values: [host, host + "."])))
                ported = ACLTerm(.anonymous(ACLTest(criterion: .hostBegins, ignoreCase: true, values: [host + ":", host + ".:"])))
            }
            return UseBackendRule(backend: route.service, condition: ACLCondition(alternatives: [[bare, path], [ported, path]]))
        }
    }
}
