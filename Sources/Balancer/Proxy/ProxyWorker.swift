// Everything one event loop owns for proxying: its listeners, its own reference to each
// backend's current table, its pools and its log buffer. Loop thread only, except the
// `execute` hops done by Proxy.
final class ProxyWorker: @unchecked Sendable {
    let loop: EventLoop
    let shared: ProxyShared
    let frontends: [FrontendRuntime]
    let backendCounters: [BackendCounters]
    /// This loop's view of each backend's current table. Replaced by a task posted from
    /// the publishing thread, so reading it per connection takes no lock and no atomic.
    var tables: [BackendTable]
    var listeners: [Listener] = []
    let pool = TransferPool()
    let log = LogBuffer()
    /// Forward through pipes with splice(2) (true) or through buffers (false).
    let splice: Bool
    private var lastShortageLog: Int64 = 0
    /// HTTP mode: idle keep-alive connections to servers, per server.
    let idlePool: IdlePool
    let httpLimits: HTTPHeadParser.Limits
    /// Scratch space for rewriting heads; reused by every session of the loop.
    var scratch: [UInt8] = []
    /// The process is shutting down: HTTP responses say `Connection: close`.
    var stopping = false

    init(loop: EventLoop, shared: ProxyShared, frontends: [FrontendRuntime], backendCounters: [BackendCounters],
         tables: [BackendTable], splice: Bool, httpLimits: HTTPHeadParser.Limits = .init()) {
        self.loop = loop
        self.splice = splice
        self.httpLimits = httpLimits
        self.idlePool = IdlePool(loop: loop)
        scratch.reserveCapacity(4096)
        self.shared = shared
        self.frontends = frontends
        self.backendCounters = backendCounters
        self.tables = tables
        loop.endOfIteration = { [unowned self] in self.log.flush() }
        idlePool.attach()
    }

    /// Registers the listening sockets created for this loop.
    func adopt(listenerFD fd: CInt, frontend: FrontendRuntime) throws(SystemError) {
        let listener = Listener(fd: fd, frontend: frontend, worker: self)
        loop.register(listener)
        try loop.watch(fd, side: 0, events: [.readable], for: listener)
        listeners.append(listener)
    }

    func startSession(client: CInt, peer: SocketAddress, frontend: FrontendRuntime) {
        // Nagle would hold back the tail of every response we relay until the client's
        // delayed ACK (40 ms): the client already chose its segment sizes.
        Socket.setNoDelay(client)
        frontend.current.add(1, ordering: .relaxed)
        frontend.total.add(1, ordering: .relaxed)
        switch frontend.config.mode {
        case .tcp:
            let session = TCPSession(worker: self, client: client, peer: peer, frontend: frontend,
                                     table: tables[frontend.backendIndex], now: loop.now)
            session.start(loop: loop)
        case .http:
            let session = HTTPSession(worker: self, client: client, peer: peer, frontend: frontend,
                                      table: tables[frontend.backendIndex], now: loop.now)
            session.start(loop: loop)
        }
    }

    /// An HTTP session closed (it logs its own requests).
    func httpSessionEnded(_ session: HTTPSession, loop: EventLoop) {
        session.frontend.current.wrappingSubtract(1, ordering: .relaxed)
        releaseSlot(loop: loop)
    }

    func sessionEnded(_ session: TCPSession, termination: TerminationState, loop: EventLoop) {
        if !shared.quiet { logConnection(session, termination: termination, loop: loop) }
        session.frontend.current.wrappingSubtract(1, ordering: .relaxed)
        releaseSlot(loop: loop)
    }

    private func releaseSlot(loop: EventLoop) {
        shared.releaseSlot()
        // A slot is free again: a listener paused on maxconn can take the next client now.
        for listener in listeners where listener.paused {
            loop.runAgain(listener)
        }
    }

    /// Stops accepting: closes this loop's listeners. Open sessions carry on; HTTP
    /// sessions close their client connection after the response in flight.
    func stopAccepting() {
        stopping = true
        for listener in listeners { listener.close(loop: loop) }
        listeners.removeAll()
        var idle: [HTTPSession] = []
        loop.forEachHandler { handler in
            if let session = handler as? HTTPSession { idle.append(session) }
        }
        for session in idle { session.closeIfIdle(loop: loop) }
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

    /// haproxy tcplog: `%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq`
    private func logConnection(_ s: TCPSession, termination: TerminationState, loop: EventLoop) {
        let log = self.log
        log.append(s.peer)
        log.append(UInt8(ascii: " "))
        log.appendDate(wallMilliseconds: s.acceptedWall)
        log.append(UInt8(ascii: " "))
        log.append(s.frontend.nameBytes)
        log.append(UInt8(ascii: " "))
        log.append(backendCounters[s.frontend.backendIndex].nameBytes)
        log.append(UInt8(ascii: "/"))
        if let server = s.server { log.append(server.nameBytes) } else { log.append("<NOSRV>" as StaticString) }
        log.append(" 0/" as StaticString)
        if s.connectedAt >= 0 {
            log.append(Int((s.connectedAt - s.connectStartedAt) / 1_000_000))
        } else {
            log.append(-1)
        }
        log.append(UInt8(ascii: "/"))
        log.append(Int((loop.now - s.acceptedAt) / 1_000_000))
        log.append(UInt8(ascii: " "))
        log.append(s.down.bytesWritten)
        log.append(UInt8(ascii: " "))
        log.append(termination.cause)
        log.append(termination.phase)
        log.append(UInt8(ascii: " "))
        log.append(shared.active.load(ordering: .relaxed))
        log.append(UInt8(ascii: "/"))
        log.append(s.frontend.current.load(ordering: .relaxed))
        log.append(UInt8(ascii: "/"))
        log.append(backendCounters[s.frontend.backendIndex].current.load(ordering: .relaxed))
        log.append(UInt8(ascii: "/"))
        log.append(s.server?.health.current.load(ordering: .relaxed) ?? 0)
        log.append(UInt8(ascii: "/"))
        log.append(s.retries)
        log.append(" 0/0" as StaticString)
        log.endLine()
    }
}
