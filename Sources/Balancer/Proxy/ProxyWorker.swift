// Everything one event loop owns for proxying: its listeners, its own reference to each
// backend's current table, its pools and its log buffer. Loop thread only, except the
// `execute` hops done by Proxy.
final class ProxyWorker: @unchecked Sendable {
    let loop: EventLoop
    let shared: ProxyShared
    /// Every frontend version by slot (FrontendRuntime.index), retired ones included while
    /// their sessions run. Grows (by a task) when a reload adds or changes one; a retired
    /// version's entry becomes nil once its last session on this loop ends (release).
    private(set) var frontends: [FrontendRuntime?]
    /// Per slot: the client connections of that version open on this loop.
    private var sessionsBySlot: [Int]
    /// Slots a reload retired that still have sessions here: released when the last ends.
    private var retiring: Set<Int> = []
    /// Counters per backend; grows (by a task) when publishRoutes creates a backend.
    private(set) var backendCounters: [BackendCounters]
    /// This loop's view of each backend's current table. Replaced by a task posted from
    /// the publishing thread, so reading it per connection takes no lock and no atomic.
    var tables: [BackendTable]
    /// Per frontend: the routing table requests are decided with (swapped like `tables`).
    private(set) var routing: [RoutingTable]
    /// Routing tables that reached this loop before the frontend slot they are for.
    private var earlyRouting: [Int: RoutingTable] = [:]
    /// Where a decision writes its request edits; reused by every request of the loop.
    let routingScratch: RoutingScratch
    var listeners: [Listener] = []
    let pool: TransferPool
    let log = LogBuffer()
    /// Forward through pipes with splice(2) (true) or through buffers (false).
    let splice: Bool
    /// Bodies with at least this much left move through a pipe (HTTPSession).
    let spliceThreshold: Int
    private var lastShortageLog: Int64 = 0
    /// Held while accepting, given up to a server connect that finds no descriptor.
    var spare = SpareDescriptor()
    /// HTTP mode: idle keep-alive connections to servers, per server.
    let idlePool: IdlePool
    let httpLimits: HTTPHeadParser.Limits
    /// Scratch space for rewriting heads; reused by every session of the loop.
    var scratch: [UInt8] = []
    /// The client's address as text, for X-Forwarded-For; refilled per request.
    var peerText: [UInt8] = []
    /// Where input that is read only to be dropped goes (a lingering connection).
    let readScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 16)
    /// The loop's head parsers. A session parses a head in one call from its start, so
    /// one parser per loop serves every connection, and the field arrays it fills are
    /// reused from head to head instead of being kept by each connection.
    var requestParser: HTTPHeadParser
    var responseParser: HTTPHeadParser
    /// Wakes the loop to give back pooled memory a burst left behind.
    private let sweeper: PoolSweeper
    /// Exchange state for HTTP sessions, reused across sessions.
    private var exchangeStates: [HTTPExchangeState] = []
    /// As many as the pool keeps large buffers: exchanges in flight at once.
    static let exchangeStatesKept = 128
    /// [frontend][backend]: the timeouts and retry rules an exchange of that frontend
    /// routed to that backend uses; a column is rebuilt when its backend's table changes.
    private(set) var httpSettings: [[HTTPSessionSettings]]

    init(loop: EventLoop, shared: ProxyShared, frontends: [FrontendRuntime], backendCounters: [BackendCounters],
         tables: [BackendTable], routing: [RoutingTable], splice: Bool, spliceThreshold: Int = 16 * 1024,
         httpLimits: HTTPHeadParser.Limits = .init()) {
        self.spliceThreshold = spliceThreshold
        self.loop = loop
        self.pool = TransferPool(budget: shared.pipes)
        self.sweeper = PoolSweeper(pool: pool)
        self.splice = splice
        self.httpLimits = httpLimits
        self.requestParser = HTTPHeadParser(kind: .request, limits: httpLimits)
        self.httpSettings = frontends.map { f in tables.map { HTTPSessionSettings(frontend: f.config, backend: $0.settings) } }
        self.routing = routing
        self.routingScratch = RoutingScratch(capacity: httpLimits.maxHeadBytes)
        self.responseParser = HTTPHeadParser(kind: .response)
        peerText.reserveCapacity(64)
        self.idlePool = IdlePool(loop: loop, tables: tables)
        scratch.reserveCapacity(4096)
        self.shared = shared
        self.frontends = frontends
        self.sessionsBySlot = frontends.map { _ in 0 }
        self.backendCounters = backendCounters
        self.tables = tables
        loop.endOfIteration = { [unowned self] in
            self.log.flush()
            self.sweeper.armIfNeeded(loop: self.loop)
        }
        idlePool.attach()
        loop.register(sweeper)
    }

    deinit {
        readScratch.deallocate()
    }

    /// Makes `table` this loop's current table of backend `index` (from a task posted by
    /// the publishing thread). Idle server connections follow their servers.
    func install(_ table: BackendTable, backend index: Int) {
        // A backend publishRoutes just created reaches this loop by addBackends, which
        // was posted first; until then there is nothing to replace.
        guard index < tables.count, table.generation > tables[index].generation else { return }
        tables[index] = table
        idlePool.tableChanged(backend: index, to: table)
        for case let frontend? in frontends {
            httpSettings[frontend.index][index] = HTTPSessionSettings(frontend: frontend.config, backend: table.settings)
        }
    }

    /// Takes the backends this loop does not have yet from the proxy's grown arrays (a
    /// task from publishRoutes). The arrays only grow, so whichever of two such tasks
    /// comes first, the loop ends up with every backend, each at its index.
    func addBackends(tables all: [BackendTable], counters: [BackendCounters]) {
        guard all.count > tables.count else { return }
        for index in tables.count..<all.count {
            tables.append(all[index])
            backendCounters.append(counters[index])
            idlePool.addBackend(all[index])
            for case let frontend? in frontends {
                httpSettings[frontend.index].append(HTTPSessionSettings(frontend: frontend.config, backend: all[index].settings))
            }
        }
    }

    /// Makes `table` the routing of frontend `index` (a task from publishRoutes).
    func installRouting(_ table: RoutingTable, frontend index: Int) {
        guard index < routing.count else {
            // A slot a reload made, whose addFrontends task is still queued behind this
            // one: keep the table for it.
            if table.generation > earlyRouting[index]?.generation ?? 0 { earlyRouting[index] = table }
            return
        }
        guard table.generation > routing[index].generation else { return }
        routing[index] = table
    }

    /// Takes the frontend slots this loop does not have yet (a task from Proxy.reload),
    /// with their routing tables and session settings. Slots only grow, as backends do.
    func addFrontends(_ all: [FrontendRuntime?], routing tables: [RoutingTable]) {
        guard all.count > frontends.count else { return }
        for index in frontends.count..<all.count {
            frontends.append(all[index])
            sessionsBySlot.append(0)
            let early = earlyRouting.removeValue(forKey: index)
            routing.append(early.map { $0.generation > tables[index].generation ? $0 : tables[index] } ?? tables[index])
            httpSettings.append(all[index].map { f in self.tables.map { HTTPSessionSettings(frontend: f.config, backend: $0.settings) } } ?? [])
        }
    }

    /// Frontend versions a reload replaced or removed (a task from Proxy.reload, after
    /// the listener changes, so no listener of this loop gives them connections any more).
    /// Each is released here at once, or when its last session on this loop ends: a
    /// version's configuration, compiled routing and session settings are kept only while
    /// a connection may still use them, so that reload after reload does not pile them up.
    func retire(_ slots: [Int]) {
        for slot in slots where slot < frontends.count && frontends[slot] != nil {
            if sessionsBySlot[slot] == 0 { release(slot) } else { retiring.insert(slot) }
        }
    }

    /// The slot itself stays (slots are never reused, so indexes held elsewhere stay
    /// valid); what it held goes.
    private func release(_ slot: Int) {
        retiring.remove(slot)
        frontends[slot] = nil
        routing[slot] = RoutingTable.released
        httpSettings[slot] = []
        earlyRouting[slot] = nil
    }

    /// Applies a reload's listener changes on this loop, in one task so that a connection
    /// is accepted either before all of them or after (loop thread; from Proxy.reload).
    /// - `opened`: new sockets for this loop, registered here.
    /// - `retargeted`: a bind kept by a changed frontend keeps its socket (and its accept
    ///   queue); only what new connections get changes.
    /// - `closed`: binds no frontend has any more. Their sessions carry on.
    func applyListeners(opened: [ListenerChange.Opened], retargeted: [ListenerChange.Retargeted],
                        closed: [ListenerChange.Closed]) {
        for change in retargeted {
            for listener in listeners where listener.frontend.index == change.fromSlot && listener.bind == change.bind {
                listener.frontend = change.frontend
                listener.tls = change.tls
            }
        }
        for change in closed {
            for listener in listeners where listener.frontend.index == change.slot && listener.bind == change.bind {
                // Serve what the kernel already queued (one batch) before the queue goes.
                listener.acceptBatch(loop: loop)
                listener.close(loop: loop)
            }
        }
        listeners.removeAll { $0.closed }
        for change in opened {
            do {
                try adopt(listenerFD: change.fd, frontend: change.frontend, bind: change.bind, tls: change.tls)
            } catch {
                Posix.close(change.fd)
                ControlLog.line("balancerd: frontend '\(change.frontend.config.name)', bind \(change.bind): loop \(loop.index) cannot watch its listener: \(error)")
            }
        }
    }

    func takeExchangeState() -> HTTPExchangeState {
        exchangeStates.popLast() ?? HTTPExchangeState()
    }

    func giveExchangeState(_ state: HTTPExchangeState) {
        state.upActive = false
        state.downActive = false
        if exchangeStates.count < ProxyWorker.exchangeStatesKept { exchangeStates.append(state) }
    }

    /// Registers the listening sockets created for this loop.
    func adopt(listenerFD fd: CInt, frontend: FrontendRuntime, bind: HostPort, tls: TLSContext?) throws(SystemError) {
        let listener = Listener(fd: fd, frontend: frontend, bind: bind, tls: tls, worker: self)
        loop.register(listener)
        try loop.watch(fd, side: 0, events: [.readable], for: listener)
        listeners.append(listener)
    }

    func startSession(client: CInt, peer: SocketAddress, frontend: FrontendRuntime, tls context: TLSContext? = nil) {
        // TCP_NODELAY comes from the listener (see Socket.listen).
        var tls: TLSConnection? = nil
        if let context {
            tls = TLSConnection(context: context, fd: client)
            if tls == nil {
                // OpenSSL could not make the connection's state (out of memory): refuse
                // this client, keep the others.
                Posix.close(client)
                shared.releaseSlot()
                return
            }
        }
        frontend.counters.maxCurrent.raiseMaximum(to: frontend.counters.current.add(1, ordering: .relaxed).newValue)
        frontend.counters.total.add(1, ordering: .relaxed)
        sessionsBySlot[frontend.index] += 1
        switch frontend.config.mode {
        case .tcp:
            let session = TCPSession(worker: self, client: client, peer: peer, frontend: frontend,
                                     table: tables[frontend.backendIndex], tls: tls, now: loop.now)
            session.start(loop: loop)
        case .http:
            let session = HTTPSession(worker: self, client: client, peer: peer, frontend: frontend, tls: tls, now: loop.now)
            session.start(loop: loop)
        }
    }

    /// A client connection of `frontend` closed: its count and its maxconn slot are given
    /// back. HTTP sessions log their own requests; a TCP connection whose TLS handshake
    /// failed never was a session (no log line, as in HTTP mode).
    func connectionClosed(frontend: FrontendRuntime, loop: EventLoop) {
        frontend.counters.current.wrappingSubtract(1, ordering: .relaxed)
        sessionsBySlot[frontend.index] -= 1
        if sessionsBySlot[frontend.index] == 0 && retiring.contains(frontend.index) { release(frontend.index) }
        releaseSlot(loop: loop)
    }

    func sessionEnded(_ session: TCPSession, termination: TerminationState, loop: EventLoop) {
        SessionStats.ended(SessionRecord(
            frontend: session.frontend, backend: backendCounters[session.frontend.backendIndex], server: session.server,
            status: nil, bytesIn: session.up.bytesWritten, bytesOut: session.down.bytesWritten,
            connectMilliseconds: session.connectedAt >= 0 ? Int((session.connectedAt - session.connectStartedAt) / 1_000_000) : -1,
            responseMilliseconds: -1, totalMilliseconds: Int((loop.now - session.acceptedAt) / 1_000_000),
            termination: termination), loop: loop)
        if !shared.quiet { logConnection(session, termination: termination, loop: loop) }
        connectionClosed(frontend: session.frontend, loop: loop)
    }

    private func releaseSlot(loop: EventLoop) {
        shared.releaseSlot()
        // A slot is free again: a listener paused on maxconn can take the next client now.
        for listener in listeners where listener.paused {
            loop.runAgain(listener)
        }
    }

    /// Makes `contexts` (by bind address) the TLS contexts of this loop's listeners of
    /// frontend `index` (a task from Proxy.reloadCertificates). Established connections
    /// keep theirs.
    func installTLS(_ contexts: [HostPort: TLSContext], frontend index: Int) {
        for listener in listeners where listener.frontend.index == index {
            if let context = contexts[listener.bind] { listener.tls = context }
        }
    }

    /// Stops accepting: closes this loop's listeners (after a handover, only this
    /// process's references: the sockets and their queues live on in the new process).
    /// Open sessions carry on; HTTP sessions answer their next request with
    /// `Connection: close`, and idle ones stay open until their keep-alive timeout or
    /// the end of the grace period (HTTPConnectionStateMachine.softStop).
    func stopAccepting() {
        for listener in listeners { listener.close(loop: loop) }
        listeners.removeAll()
        var sessions: [HTTPSession] = []
        loop.forEachHandler { handler in
            if let session = handler as? HTTPSession { sessions.append(session) }
        }
        for session in sessions { session.softStop(loop: loop) }
    }

    /// Ends every open session now (after the shutdown grace period).
    func killSessions() {
        var sessions: [any ProxySession] = []
        loop.forEachHandler { handler in
            if let session = handler as? any ProxySession { sessions.append(session) }
        }
        for session in sessions { session.kill(loop: loop) }
        idlePool.closeAll()
    }

    func noteResourceShortage(_ error: SystemError) {
        // Once a second at most: a shortage tends to last, and logging every accept
        // failure would make it worse.
        if loop.now - lastShortageLog > 1_000_000_000 {
            lastShortageLog = loop.now
            ControlLog.line("balancerd: accept paused: \(error)")
        }
    }

    private func logConnection(_ s: TCPSession, termination: TerminationState, loop: EventLoop) {
        let context = AccessLogContext(peer: s.peer, wallMilliseconds: s.acceptedWall, frontend: s.frontend,
                                       backend: backendCounters[s.frontend.backendIndex], server: s.server,
                                       termination: termination, retries: s.retries)
        AccessLog.tcp(context, connectMilliseconds: s.connectedAt >= 0 ? Int((s.connectedAt - s.connectStartedAt) / 1_000_000) : -1,
                      totalMilliseconds: Int((loop.now - s.acceptedAt) / 1_000_000), bytes: s.down.bytesWritten,
                      active: shared.active.load(ordering: .relaxed), into: log)
    }
}

/// A timer for TransferPool.sweep: armed while the pool has something to give back, so an
/// idle loop (blocked in epoll_wait) still returns a burst's memory.
final class PoolSweeper: EventHandler {
    var registration = EventLoop.Registration.none
    var deadline: Int64 = 0
    var filedDeadline: Int64 = 0
    /// The worker owns both the pool and this sweeper.
    private unowned let pool: TransferPool

    init(pool: TransferPool) {
        self.pool = pool
    }

    /// Called at the end of every loop iteration: a flag test unless a sweep is due.
    func armIfNeeded(loop: EventLoop) {
        guard deadline == 0, pool.needsSweep else { return }
        deadline = loop.now + TransferPool.sweepInterval
        loop.scheduleDeadline(for: self)
    }

    func deadlineReached(loop: EventLoop) {
        deadline = 0
        pool.sweep()
        armIfNeeded(loop: loop)
    }

    func ready(_ events: Epoll.Events, side: Int, loop: EventLoop) {}
    func resume(loop: EventLoop) {}
}
