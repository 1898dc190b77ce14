// The shell around TCPSessionStateMachine: sockets, the two relays, timers and the log
// line. Loop thread only.
//
// TLS (an `ssl` bind): the handshake runs first, bounded by `timeout client`; only then
// is a server chosen, as haproxy creates the stream after the handshake. A handshake
// that fails closes the connection quietly (no log line, as in HTTP mode). The relays
// then read and write the client through TLS, with buffers (no splice).
//
// TLS to servers (`server ... ssl`): the server socket goes through `serverTLS`. Its
// handshake is part of connecting, as haproxy counts it: the machine hears `connected`
// only once it is over, so `timeout connect` bounds each attempt's TCP connect and
// handshake together, and a handshake that fails (a certificate that does not verify, a
// server that does not speak TLS) is a failed connect: retries, redispatch, the server's
// error counters and `SC` in the log. Both sides may be TLS at once; either one rules out
// splice.
//
// Sides in epoll data words: 0 is the client; the server alternates between 1 and 2 on
// each connect attempt, so a late event for a socket abandoned by a retry is
// recognisable and ignored.
final class TCPSession: EventHandler, ProxySession {
    var registration = EventLoop.Registration.none
    var deadline: Int64 = 0
    var filedDeadline: Int64 = 0

    unowned let worker: ProxyWorker
    let frontend: FrontendRuntime
    let clientFD: CInt
    let peer: SocketAddress
    /// The table the session was assigned from; kept so a server removed by a newer
    /// table still has its object while this connection finishes.
    var table: BackendTable
    var server: Server?
    private var backend: BackendCounters { worker.backendCounters[frontend.backendIndex] }
    /// The server's and backend's `current`/`total` while connected.
    var serverUse = ServerUse()
    var serverFD: CInt = -1
    var serverSide = 1
    var machine: TCPSessionStateMachine
    var up = Relay()     // client -> server
    var down = Relay()   // server -> client
    var retries = 0
    /// Whether EPOLLOUT is in the interest set of each socket (see updateInterest).
    var clientWatchesOutput = false
    var serverWatchesOutput = false
    /// The client's TLS, on an `ssl` bind.
    let tls: TLSConnection?
    /// The handshake's last step waits for the client socket to become writable.
    var handshakeWaitsWritable = false
    /// The server's TLS, towards an `ssl` server; made once its TCP connect succeeded.
    var serverTLS: TLSConnection?

    let acceptedAt: Int64
    let acceptedWall: Int64
    var connectStartedAt: Int64 = 0
    var connectedAt: Int64 = -1
    var lastClientIO: Int64
    var lastServerIO: Int64
    var clientTimeout: Int64
    var serverTimeout: Int64 = 0

    /// Bytes a relay may move per wake-up before others get a turn (fairness).
    static let budget = 256 * 1024

    init(worker: ProxyWorker, client: CInt, peer: SocketAddress, frontend: FrontendRuntime, table: BackendTable,
         tls: TLSConnection? = nil, now: Int64) {
        self.worker = worker
        self.tls = tls
        self.clientFD = client
        self.peer = peer
        self.frontend = frontend
        self.table = table
        self.machine = TCPSessionStateMachine(retries: table.settings.retries, redispatch: table.settings.redispatch)
        self.acceptedAt = now
        self.acceptedWall = Posix.wallClockMilliseconds()
        self.lastClientIO = now
        self.lastServerIO = now
        self.clientTimeout = frontend.clientTimeout
    }

    // MARK: life cycle

    func start(loop: EventLoop) {
        loop.register(self)
        do {
            // No EPOLLOUT until a write would block: with edge triggering every ACK that
            // frees send-buffer space would otherwise wake the loop for nothing.
            try loop.watch(clientFD, side: 0, events: [.readable, .readHangup], for: self)
        } catch {
            perform(machine.ioFailed(.client), loop: loop)
            return
        }
        if let tls {
            deadline = acceptedAt + clientTimeout
            loop.scheduleDeadline(for: self)
            handshake(tls, loop: loop)
            return
        }
        perform(machine.start(), loop: loop)
    }

    /// One step of the client's handshake; the session starts when it completes.
    private func handshake(_ tls: TLSConnection, loop: EventLoop) {
        let outcome = tls.handshake()
        switch outcome {
        case .processed:
            handshakeWaitsWritable = false
            deadline = 0
            perform(machine.start(), loop: loop)
        case .wantRead, .wantWrite:
            let wantsWrite = outcome == .wantWrite
            if wantsWrite != handshakeWaitsWritable {
                handshakeWaitsWritable = wantsWrite
                try? loop.rewatch(clientFD, side: 0, events: wantsWrite ? [.readable, .readHangup, .writable] : [.readable, .readHangup], for: self)
            }
        case .closed, .failed:
            abandon(loop: loop)
        }
    }

    /// Closes a connection whose handshake did not complete: not a session yet.
    private func abandon(loop: EventLoop) {
        deadline = 0
        Posix.abortOnClose(clientFD)
        Posix.close(clientFD)
        worker.connectionClosed(frontend: frontend, loop: loop)
        loop.deregister(self)
    }

    private func perform(_ action: TCPSessionStateMachine.Action, loop: EventLoop) {
        switch action {
        case .none:
            break
        case .connect(let avoiding):
            connect(avoiding: avoiding, loop: loop)
        case .reconnectSame(let index):
            connect(to: index, loop: loop)
        case .startRelaying:
            startRelaying(loop: loop)
        case .shutdownWrite(let side):
            // Half-close: the other direction keeps flowing until it ends too.
            (side == .client ? tls : serverTLS)?.shutdown()
            Posix.shutdown(side == .server ? serverFD : clientFD, .write)
        case .close(let termination):
            finish(termination, abort: false, loop: loop)
        case .abort(let termination):
            finish(termination, abort: true, loop: loop)
        }
    }

    // MARK: connecting

    private func connect(avoiding: Int?, loop: EventLoop) {
        guard let index = table.pick(avoiding: avoiding, now: loop.now) else {
            perform(machine.noServer(), loop: loop)
            return
        }
        connect(to: index, loop: loop)
    }

    private func connect(to index: Int, loop: EventLoop) {
        if serverFD >= 0 {
            // A failed attempt: drop its socket (and its TLS) before the next one.
            Posix.close(serverFD)
            serverFD = -1
            serverTLS = nil
        }
        let server = table.servers[index]
        let previous = self.server
        self.server = server
        machine.connecting(to: index)
        SessionStats.attempting(machine.attempts, next: server, previous: previous, backend: backend, loop: loop)
        retries = machine.attempts - 1
        connectStartedAt = loop.now
        serverSide = serverSide == 1 ? 2 : 1
        let fd: CInt
        let connected: Bool
        do {
            (fd, connected) = try Socket.connect(to: server.address, spare: &worker.spare)
        } catch {
            SessionStats.connectFailed(server, backend: backend, loop: loop)
            perform(machine.connectFailed(timedOut: false), loop: loop)
            return
        }
        serverFD = fd
        do {
            // EPOLLOUT here reports the end of the non-blocking connect.
            try loop.watch(fd, side: serverSide, events: [.readable, .writable, .readHangup], for: self)
            serverWatchesOutput = true
        } catch {
            perform(machine.connectFailed(timedOut: false), loop: loop)
            return
        }
        // A TLS server's handshake is bounded by the same timeout, even when the TCP
        // connect completed at once.
        if !connected || server.tls != nil {
            deadline = loop.now + table.settings.connectTimeout
            loop.scheduleDeadline(for: self)
        }
        if connected { socketConnected(loop: loop) }
    }

    /// The TCP connection is up: a plain server is connected, a TLS one starts its
    /// handshake.
    private func socketConnected(loop: EventLoop) {
        guard let context = server?.tls else {
            connectSucceeded(loop: loop)
            return
        }
        guard let tls = TLSConnection(client: context, serverName: server?.config.tls?.serverName, fd: serverFD) else {
            connectFailed(loop: loop)
            return
        }
        serverTLS = tls
        serverHandshake(tls, loop: loop)
    }

    /// One step of the server handshake. The socket is watched for both directions
    /// while connecting, so either readiness calls this again.
    private func serverHandshake(_ tls: TLSConnection, loop: EventLoop) {
        switch tls.handshake() {
        case .processed: connectSucceeded(loop: loop)
        case .wantRead, .wantWrite: break
        case .closed, .failed: connectFailed(loop: loop)
        }
    }

    private func connectFailed(loop: EventLoop) {
        if let server { SessionStats.connectFailed(server, backend: backend, loop: loop) }
        perform(machine.connectFailed(timedOut: false), loop: loop)
    }

    private func connectSucceeded(loop: EventLoop) {
        guard let server else { return }
        server.health.recordConnectSuccess()
        serverUse.begin(server, backend: worker.backendCounters[frontend.backendIndex])
        connectedAt = loop.now
        serverTimeout = table.settings.serverTimeout
        perform(machine.connected(), loop: loop)
    }

    private func startRelaying(loop: EventLoop) {
        up.source = clientFD
        up.destination = serverFD
        down.source = serverFD
        down.destination = clientFD
        let splice = worker.splice && tls == nil && serverTLS == nil
        if splice, let pipe = worker.pool.takePipe() { up.pipe = pipe } else { up.buffer = worker.pool.takeBuffer() }
        if splice, let pipe = worker.pool.takePipe() { down.pipe = pipe } else { down.buffer = worker.pool.takeBuffer() }
        up.sourceTLS = tls
        down.destinationTLS = tls
        up.destinationTLS = serverTLS
        down.sourceTLS = serverTLS
        lastClientIO = loop.now
        lastServerIO = loop.now
        relay(loop: loop)
    }

    // MARK: events

    func ready(_ events: Epoll.Events, side: Int, loop: EventLoop) {
        let input = !events.isDisjoint(with: [.readable, .readHangup, .hangup, .error])
        let output = !events.isDisjoint(with: [.writable, .hangup, .error])
        if side == 0 {
            if let tls, !tls.handshakeDone {
                handshake(tls, loop: loop)
                return
            }
            // TLS may wait for either direction of the socket, whatever it was asked to
            // do: any event makes both relays try again.
            if input || (output && tls != nil) { up.sourceReadable = true }
            if output || (input && tls != nil) { down.destinationWritable = true }
            if case .connecting = machine.state {
                // Bytes or a FIN from the client wait for the server connection; only a
                // dead client (reset) ends the session now.
                if events.contains(.error) || (events.contains(.hangup) && !events.contains(.readable)) {
                    perform(machine.clientAbortedWhileConnecting(), loop: loop)
                }
                return
            }
        } else {
            guard side == serverSide else { return }   // an abandoned attempt's socket
            if case .connecting = machine.state {
                guard output || input else { return }
                if let serverTLS {
                    serverHandshake(serverTLS, loop: loop)
                } else if Posix.pendingError(serverFD) != nil {
                    connectFailed(loop: loop)
                } else {
                    socketConnected(loop: loop)
                }
                return
            }
            // As on the client side: TLS may wait for either direction.
            if input || (output && serverTLS != nil) { down.sourceReadable = true }
            if output || (input && serverTLS != nil) { up.destinationWritable = true }
        }
        if case .established = machine.state { relay(loop: loop) }
    }

    func resume(loop: EventLoop) {
        if case .established = machine.state { relay(loop: loop) }
    }

    func deadlineReached(loop: EventLoop) {
        if let tls, !tls.handshakeDone {
            abandon(loop: loop)
            return
        }
        switch machine.state {
        case .connecting:
            deadline = 0
            if let server { SessionStats.connectFailed(server, backend: backend, loop: loop) }
            perform(machine.connectFailed(timedOut: true), loop: loop)
        case .established:
            let clientExpiry = lastClientIO + clientTimeout
            let side: TCPSessionStateMachine.Side = clientExpiry <= loop.now ? .client : .server
            perform(machine.timedOut(side), loop: loop)
        case .closed:
            deadline = 0
        }
    }

    /// Called when the process stops and the grace period is over.
    func kill(loop: EventLoop) {
        if let tls, !tls.handshakeDone { return abandon(loop: loop) }
        perform(machine.killed(), loop: loop)
    }

    // MARK: relaying

    private func relay(loop: EventLoop) {
        let upRead = up.bytesRead, upWritten = up.bytesWritten
        let downRead = down.bytesRead, downWritten = down.bytesWritten

        let upOutcome = up.finished ? .finished : up.pump(budget: TCPSession.budget)
        let downOutcome = down.finished ? .finished : down.pump(budget: TCPSession.budget)

        if up.bytesRead != upRead || down.bytesWritten != downWritten { lastClientIO = loop.now }
        if up.bytesWritten != upWritten || down.bytesRead != downRead { lastServerIO = loop.now }

        switch upOutcome {
        case .sourceFailed: return perform(machine.ioFailed(.client), loop: loop)
        case .destinationFailed: return perform(machine.ioFailed(.server), loop: loop)
        default: break
        }
        switch downOutcome {
        case .sourceFailed: return perform(machine.ioFailed(.server), loop: loop)
        case .destinationFailed: return perform(machine.ioFailed(.client), loop: loop)
        default: break
        }
        if case .finished = upOutcome, !machine.clientFinished {
            perform(machine.sourceFinished(.client), loop: loop)
        }
        if case .finished = downOutcome, !machine.serverFinished {
            perform(machine.sourceFinished(.server), loop: loop)
        }
        if case .closed = machine.state { return }

        if case .budgetExhausted = upOutcome { loop.runAgain(self) } else if case .budgetExhausted = downOutcome { loop.runAgain(self) }
        updateInterest(loop: loop)
        deadline = min(lastClientIO + clientTimeout, lastServerIO + serverTimeout)
        loop.scheduleDeadline(for: self)
    }

    /// Subscribes to EPOLLOUT only on a socket whose writes would block while bytes wait
    /// for it (haproxy does the same): one epoll_ctl when backpressure starts and one
    /// when it ends, instead of a wake-up per ACK.
    private func updateInterest(loop: EventLoop) {
        let clientNeeds = (down.pending > 0 && !down.destinationWritable) || up.tlsWaitsWritable
        if clientNeeds != clientWatchesOutput {
            clientWatchesOutput = clientNeeds
            try? loop.rewatch(clientFD, side: 0, events: clientNeeds ? [.readable, .readHangup, .writable] : [.readable, .readHangup], for: self)
        }
        let serverNeeds = (up.pending > 0 && !up.destinationWritable) || down.tlsWaitsWritable
        if serverNeeds != serverWatchesOutput {
            serverWatchesOutput = serverNeeds
            try? loop.rewatch(serverFD, side: serverSide, events: serverNeeds ? [.readable, .readHangup, .writable] : [.readable, .readHangup], for: self)
        }
    }

    // MARK: ending

    private func finish(_ termination: TerminationState, abort: Bool, loop: EventLoop) {
        deadline = 0
        if abort {
            Posix.abortOnClose(clientFD)
            if serverFD >= 0 { Posix.abortOnClose(serverFD) }
        }
        if !abort {
            tls?.shutdown()
            serverTLS?.shutdown()
        }
        Posix.close(clientFD)
        if serverFD >= 0 { Posix.close(serverFD) }
        up.returnResources(to: worker.pool)
        down.returnResources(to: worker.pool)
        // Log first: haproxy's counters in the line include the connection being logged.
        worker.sessionEnded(self, termination: termination, loop: loop)
        serverUse.end(server, backend: worker.backendCounters[frontend.backendIndex])
        loop.deregister(self)
    }
}
