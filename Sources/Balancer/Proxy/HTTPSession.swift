// One client connection in HTTP mode: the shell around HTTPConnectionStateMachine.
// Requests are parsed, balanced one by one over the servers (haproxy's http-keep-alive
// mode), and answered in order. Loop thread only.
//
// This file moves bytes, arms timers and carries out the machine's actions; it decides
// nothing itself. The parsers (HTTPHeadParser, BodyProgress) say what the bytes mean, the
// machine says what to do about it. `advance` runs every step that can make progress
// until none can (the sockets are edge-triggered, so readiness is remembered in flags,
// set by epoll and cleared by EAGAIN).
//
// Memory: buffers are borrowed from the loop's pool only while bytes wait in them and
// given back when they are empty, so a connection between requests holds nothing but
// this object. Heads are parsed by the loop's parsers (their field arrays are reused by
// every connection of the loop); a head that arrived in pieces is parsed again from its
// start when the next piece comes, which costs a rescan of at most `maxHeadBytes` and
// saves keeping parser state per connection.
//
// Ordering: while a request is being served the client socket is not read beyond that
// request's body, so pipelined requests wait in `clientIn` and are answered in order.
//
// TLS (a bind with `ssl`): the client side goes through `tls`. The handshake runs first,
// bounded by the request timeout from the accept (and `timeout client` when shorter); a
// handshake that fails (garbage, plaintext HTTP, a client that stops halfway) closes this
// connection only, quietly, as haproxy does. Bodies never splice to or from a TLS client:
// the bytes must pass through the record layer.
//
// TLS to servers (`server ... ssl`): the server socket goes through `serverTLS`. Its
// handshake is part of connecting: the machine hears `connected` only once it is over,
// so `timeout connect` bounds it, and a refused certificate is a failed connect (SC in
// the log, retries, passive health) like a refused SYN. An idle pooled connection keeps
// its TLS state, so reusing it costs no handshake. No splice on those either.
final class HTTPSession: EventHandler, ProxySession {
    var registration = EventLoop.Registration.none
    var deadline: Int64 = 0
    var filedDeadline: Int64 = 0

    typealias Phase = HTTPConnectionStateMachine.Phase

    // The worker owns the loop, which owns every session: it outlives them, so the
    // reference needs no reference counting (unowned(unsafe) skips the checks `unowned`
    // makes on every access).
    unowned(unsafe) let worker: ProxyWorker
    let frontend: FrontendRuntime
    /// Closed when the session is freed, right after `close` deregisters it.
    let client: FileDescriptor
    var clientFD: CInt { client.rawValue }
    let peer: SocketAddress
    var machine: HTTPConnectionStateMachine
    var phase: Phase { machine.phase }
    private var closed = false

    // Client side.
    var clientIn = ByteBuffer.unallocated
    var clientOut = ByteBuffer.unallocated
    var clientReadable = true
    var clientWritable = true
    var clientEOF = false
    var clientShutdown = false
    var clientWatchesOutput = false
    var clientHangupSeen = false
    /// The client's TLS, on an `ssl` bind.
    let tls: TLSConnection?
    /// The last TLS operation waits for the socket to become writable (a read or the
    /// handshake can need that too, not only a write).
    var tlsWaitsWritable = false
    private var holdWrites = false
    private var writesQueued = false

    // Server side. The socket is watched through the loop's owner table (side 1), so a
    // late event for a socket the session let go of goes to its new owner or nowhere.
    var serverFD: CInt = -1
    var serverUse = ServerUse()
    /// The backend of the current exchange (routing picks it per request); the frontend's
    /// default between exchanges.
    var backendIndex: Int { exchange?.backendIndex ?? frontend.backendIndex }
    var backend: BackendCounters { worker.backendCounters[backendIndex] }
    var serverIn = ByteBuffer.unallocated
    var serverOut = ByteBuffer.unallocated
    /// Bytes of `serverOut` already written. They are kept while the request may still be
    /// replayed on another server; `serverOut` is trimmed once it cannot.
    var serverReadable = true
    var serverWritable = true
    var serverEOF = false
    var serverShutdown = false
    var serverWatchesOutput = false
    var serverHangupSeen = false
    /// The server connection's TLS (`server ... ssl`); nil for plain TCP.
    var serverTLS: TLSConnection?
    /// The last TLS operation on the server socket waits for it to become writable.
    var serverTLSWaitsWritable = false

    // The current exchange. Its framing state, request line and body pipes live in an
    // HTTPExchangeState borrowed from the loop for the exchange only.
    var exchange: HTTPExchangeState?

    // What belongs to one exchange lives in its state, not in every idle connection.
    /// The table the current request is balanced on (the loop's current one when idle).
    var table: BackendTable {
        get { exchange?.table ?? worker.tables[backendIndex] }
        set { exchange!.table = newValue }
    }
    /// The server of the current attempt.
    var server: Server? {
        get { exchange?.server }
        set { exchange!.server = newValue }
    }
    /// Bytes of `serverOut` already written. They are kept while the request may still be
    /// replayed on another server; `serverOut` is trimmed once it cannot.
    var serverOutSent: Int {
        get { exchange?.serverOutSent ?? 0 }
        set {
            if let exchange { exchange.serverOutSent = newValue } else { precondition(newValue == 0) }
        }
    }
    /// %B of the log line.
    var bytesToClient: Int {
        get { exchange?.bytesToClient ?? 0 }
        set {
            if let exchange { exchange.bytesToClient = newValue } else { precondition(newValue == 0) }
        }
    }
    /// Set when a step changed the session in a way earlier steps of the same round did
    /// not see (a new server connection): `advance` then runs another round.
    var stateChanged = false
    /// Bytes read from the client since the last exchange was counted (haproxy `bin`).
    private var clientBytesUncounted = 0

    /// Backpressure: stop reading a side while this much waits for the other.
    static let highWater = 64 * 1024
    static let readChunk = 16 * 1024

    init(worker: ProxyWorker, client: CInt, peer: SocketAddress, frontend: FrontendRuntime, tls: TLSConnection? = nil,
         now: Int64) {
        self.worker = worker
        self.tls = tls
        self.client = FileDescriptor(adopting: client)
        self.peer = peer
        self.frontend = frontend
        self.machine = HTTPConnectionStateMachine(settings: worker.httpSettings[frontend.index][frontend.backendIndex], now: now)
    }

    // MARK: life cycle

    func start(loop: EventLoop) {
        loop.register(self)
        do {
            try loop.watch(clientFD, side: 0, events: [.readable, .readHangup], for: self)
        } catch {
            close(abort: false, loop: loop)
            return
        }
        advance(loop: loop)
    }

    func softStop(loop: EventLoop) {
        perform(machine.softStop(), loop: loop)
    }

    func kill(loop: EventLoop) {
        perform(machine.killed(clientInputPending: !clientIn.isEmpty), loop: loop)
    }

    // MARK: actions

    private func perform(_ action: HTTPConnectionStateMachine.Action, loop: EventLoop) {
        switch action {
        case .none, .startTunnel:
            break
        case .connect(let avoiding):
            dropServer(reusable: false, loop: loop)
            guard let index = table.pick(avoiding: avoiding, now: loop.now) else {
                perform(machine.noServer(now: loop.now), loop: loop)
                return
            }
            connect(to: index, loop: loop)
        case .reconnect(let index):
            connect(to: index, loop: loop)
        case .respond(let error):
            respond(error, loop: loop)
        case .respondPrepared:
            respond(nil, loop: loop)
        case .finishExchange(let reuseServer, let keepAlive):
            log(loop: loop)
            dropServer(reusable: reuseServer && serverIn.isEmpty && !serverEOF, loop: loop)
            if keepAlive {
                endExchange()
                bytesToClient = 0
                machine.readyForNextRequest(now: loop.now)
                releaseEmptyBuffers()
            } else {
                close(abort: false, loop: loop)
            }
        case .close(let log, let abort):
            if log { self.log(loop: loop) }
            close(abort: abort, loop: loop)
        }
    }

    // MARK: events

    func ready(_ events: Epoll.Events, side: Int, loop: EventLoop) {
        let input = !events.isDisjoint(with: [.readable, .readHangup, .hangup, .error])
        let output = !events.isDisjoint(with: [.writable, .hangup, .error])
        // A FIN that arrived before this event was collected shows up as RDHUP in it; a
        // later one raises a new event. So once RDHUP is seen, a short read no longer
        // proves the socket drained (the EOF may still be queued behind the data).
        let hangup = !events.isDisjoint(with: [.readHangup, .hangup, .error])
        if side == 0 {
            if input { clientReadable = true; exchange?.up.sourceReadable = true }
            if output { clientWritable = true; exchange?.down.destinationWritable = true }
            if hangup { clientHangupSeen = true }
        } else {
            guard serverFD >= 0 else { return }
            if machine.connecting {
                guard input || output else { return }
                if let serverTLS {
                    serverHandshake(serverTLS, loop: loop)
                } else if let _ = Posix.pendingError(serverFD) {
                    connectFailed(timedOut: false, loop: loop)
                } else {
                    socketConnected(loop: loop)
                }
            } else {
                if input { serverReadable = true; exchange?.down.sourceReadable = true }
                if output { serverWritable = true; exchange?.up.destinationWritable = true }
                if hangup { serverHangupSeen = true }
            }
        }
        // Writes wait for the end of the event batch: every session reads and parses
        // first, then all of them write (runDeferred). A server or client then gets a
        // burst of messages and wakes once for them, instead of once per message.
        holdWrites = true
        advance(loop: loop)
        holdWrites = false
        if !closed && !writesQueued && writesHeld {
            writesQueued = true
            loop.runAgain(self)
        }
    }

    /// Output that a write could take now, left for the end of the batch.
    private var writesHeld: Bool {
        (serverWritable && serverOut.readableCount > serverOutSent) || (clientWritable && !clientOut.isEmpty)
    }

    func resume(loop: EventLoop) {
        if writesQueued {
            // The held writes, client first: bytes already taken from the server reach
            // the client before anything read next (a reset, an EOF) can end the session.
            writesQueued = false
            _ = flushClient(loop: loop)
            if closed { return }
            _ = flushServer(loop: loop)
            if closed { return }
        }
        advance(loop: loop)
    }

    func deadlineReached(loop: EventLoop) {
        guard !closed else { return }
        if let tls, !tls.handshakeDone, loop.now >= machine.acceptedAt + machine.timeouts.client {
            perform(.close(log: false, abort: true), loop: loop)
            return
        }
        if machine.phase == .exchanging && machine.connecting
            && loop.now >= machine.connectStartedAt + machine.timeouts.connect {
            if let server { SessionStats.connectFailed(server, backend: backend, loop: loop) }
        }
        let action = machine.timerFired(now: loop.now, clientInputPending: !clientIn.isEmpty,
                                        clientOutputPending: clientOutputPending, serverReadPaused: serverReadPaused)
        if case .respond(.gatewayTimeout) = action, let server { server.health.recordResponseTimeout(now: loop.now) }
        perform(action, loop: loop)
        if !closed { advance(loop: loop) }
    }

    // MARK: the progress loop

    private func advance(loop: EventLoop) {
        var rounds = 0
        var progress = true
        while progress && !closed {
            rounds += 1
            if rounds > 64 {
                // Fairness: a connection with a lot to move yields to the others.
                loop.runAgain(self)
                break
            }
            progress = false
            if let tls, !tls.handshakeDone {
                // Nothing moves before the handshake is over.
                if !handshake(tls, loop: loop) { break }
                progress = true
                continue
            }
            if readClient(loop: loop) { progress = true }
            if closed { return }
            if handleClientInput(loop: loop) { progress = true }
            if closed { return }
            if flushServer(loop: loop) { progress = true }
            if closed { return }
            if readServer(loop: loop) { progress = true }
            if closed { return }
            if handleServerInput(loop: loop) { progress = true }
            if closed { return }
            if flushClient(loop: loop) { progress = true }
            if closed { return }
            if pumpSplice(loop: loop) { progress = true }
            if closed { return }
            if finishIfDone(loop: loop) { progress = true }
            // Held output goes first: reading on (a FIN, an error) could end the session
            // before the bytes already received are passed on, in the order they came.
            if holdWrites && writesHeld { break }
            if stateChanged {
                // A retry attached a new server connection in the middle of this round,
                // after the step that would have sent it the request: go round again.
                stateChanged = false
                progress = true
            }
        }
        guard !closed else { return }
        releaseEmptyBuffers()
        updateInterest(loop: loop)
        deadline = machine.deadline(clientInputPending: !clientIn.isEmpty, clientOutputPending: clientOutputPending,
                                    serverReadPaused: serverReadPaused)
        if let tls, !tls.handshakeDone { deadline = min(deadline, machine.acceptedAt + machine.timeouts.client) }
        loop.scheduleDeadline(for: self)
    }

    // MARK: TLS

    /// One step of the handshake; true when it completed.
    private func handshake(_ tls: TLSConnection, loop: EventLoop) -> Bool {
        switch tls.handshake() {
        case .processed:
            tlsWaitsWritable = false
            return true
        case .wantRead:
            clientReadable = false
            tlsWaitsWritable = false
        case .wantWrite:
            clientWritable = false
            tlsWaitsWritable = true
        case .closed, .failed:
            // Not a request: nothing to log, nobody to answer in HTTP.
            perform(.close(log: false, abort: true), loop: loop)
        }
        return false
    }

    /// Ends the client's output: close_notify on TLS, then a FIN.
    private func shutdownClientOutput() {
        tls?.shutdown()
        Posix.shutdown(clientFD, .write)
        clientShutdown = true
    }

    /// Reads from the client through the socket or TLS; nil when it must wait.
    private func clientReceive(_ target: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int? {
        guard let tls else {
            switch try Posix.read(clientFD, target) {
            case .wouldBlock:
                clientReadable = false
                return nil
            case .processed(let n):
                // A short read emptied the socket's queue; edge-triggered epoll reports the
                // next bytes that arrive, so there is no need to learn it from an EAGAIN.
                if n > 0 && n < target.count && !clientHangupSeen { clientReadable = false }
                return n
            }
        }
        // A short SSL_read proves nothing (the rest of a record may be buffered in
        // OpenSSL); the TLS connection knows when the socket itself came back short.
        switch tls.read(into: target) {
        case .processed(let n):
            if tls.socketDrained && !clientHangupSeen { clientReadable = false }
            return n
        case .wantRead:
            clientReadable = false
            return nil
        case .wantWrite:
            clientWritable = false
            tlsWaitsWritable = true
            return nil
        case .closed:
            return 0
        case .failed:
            throw SystemError("SSL_read", .connectionReset)
        }
    }

    /// Writes to the client through the socket or TLS; nil when it must wait.
    private func clientSend(_ bytes: UnsafeRawBufferPointer) throws(SystemError) -> Int? {
        guard let tls else {
            switch try Posix.write(clientFD, bytes) {
            case .wouldBlock:
                clientWritable = false
                return nil
            case .processed(let n):
                return n
            }
        }
        switch tls.write(bytes) {
        case .processed(let n):
            tlsWaitsWritable = false
            return n
        case .wantWrite:
            clientWritable = false
            tlsWaitsWritable = true
            return nil
        case .wantRead:
            clientReadable = false
            return nil
        case .closed, .failed:
            throw SystemError("SSL_write", .brokenPipe)
        }
    }

    /// Reads from the server through the socket or TLS; nil when it must wait.
    private func serverReceive(_ target: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int? {
        guard let serverTLS else {
            switch try Posix.read(serverFD, target) {
            case .wouldBlock:
                serverReadable = false
                return nil
            case .processed(let n):
                if n > 0 && n < target.count && !serverHangupSeen { serverReadable = false }   // drained (see clientReceive)
                return n
            }
        }
        switch serverTLS.read(into: target) {
        case .processed(let n):
            if serverTLS.socketDrained && !serverHangupSeen { serverReadable = false }
            return n
        case .wantRead:
            serverReadable = false
            return nil
        case .wantWrite:
            serverWritable = false
            serverTLSWaitsWritable = true
            return nil
        case .closed:
            return 0
        case .failed:
            throw SystemError("SSL_read", .connectionReset)
        }
    }

    /// Writes to the server through the socket or TLS; nil when it must wait.
    private func serverSend(_ bytes: UnsafeRawBufferPointer) throws(SystemError) -> Int? {
        guard let serverTLS else {
            switch try Posix.write(serverFD, bytes) {
            case .wouldBlock:
                serverWritable = false
                return nil
            case .processed(let n):
                return n
            }
        }
        switch serverTLS.write(bytes) {
        case .processed(let n):
            serverTLSWaitsWritable = false
            return n
        case .wantWrite:
            serverWritable = false
            serverTLSWaitsWritable = true
            return nil
        case .wantRead:
            serverReadable = false
            return nil
        case .closed, .failed:
            throw SystemError("SSL_write", .brokenPipe)
        }
    }

    /// Ends the server's input side of the exchange: close_notify on TLS, then a FIN.
    private func shutdownServerOutput() {
        serverTLS?.shutdown()
        Posix.shutdown(serverFD, .write)
        serverShutdown = true
    }

    /// Gives back every buffer that holds nothing: between requests a connection keeps
    /// no memory but this object.
    private func releaseEmptyBuffers() {
        let pool = worker.pool
        if clientIn.isEmpty { pool.giveBack(&clientIn) }
        if clientOut.isEmpty { pool.giveBack(&clientOut) }
        if serverIn.isEmpty { pool.giveBack(&serverIn) }
        if serverOut.isEmpty { pool.giveBack(&serverOut) }
    }

    /// Borrows the exchange state (framing, request line, body pipes) from the loop.
    @discardableResult
    private func beginExchange() -> HTTPExchangeState {
        if let exchange { return exchange }
        let x = worker.takeExchangeState()
        x.backendIndex = frontend.backendIndex
        exchange = x
        return x
    }

    /// Gives the exchange state back, with its request line buffer and any pipe.
    private func endExchange() {
        guard let x = exchange else { return }
        exchange = nil
        x.up.returnResources(to: worker.pool)
        x.down.returnResources(to: worker.pool)
        x.up = Relay()
        x.down = Relay()
        x.requestBody = .done
        x.responseBody = .done
        x.table = nil
        x.backendIndex = 0
        x.server = nil
        x.serverOutSent = 0
        x.bytesToClient = 0
        worker.giveExchangeState(x)
    }

    static func redirectStatus(_ routing: RoutingTable, rule: Int?, route: CompiledRoute?) -> Int {
        if let rule, case .redirect(let r, _) = routing.requestRules[rule].action { return r.code }
        return route?.redirectStatus ?? 302
    }

    /// A body is moving through a pipe, in either direction.
    private var splicing: Bool {
        guard let x = exchange else { return false }
        return x.upActive || x.downActive
    }

    // MARK: client input

    private func wantsClientInput() -> Bool {
        switch phase {
        case .awaitingRequest:
            return clientIn.readableCount <= worker.httpLimits.maxHeadBytes
        case .exchanging:
            return !machine.request.bodyComplete && !splicing
                && serverOut.readableCount - serverOutSent < HTTPSession.highWater
        case .tunnel:
            return serverOut.readableCount < HTTPSession.highWater && !splicing
        case .lingering:
            return true
        case .closed:
            return false
        }
    }

    private func readClient(loop: EventLoop) -> Bool {
        guard clientReadable, !clientEOF, wantsClientInput() else { return false }
        let lingering = phase == .lingering
        let target: UnsafeMutableRawBufferPointer
        if lingering {
            // Read and dropped: the loop's scratch space, no buffer borrowed.
            target = worker.readScratch
        } else {
            worker.pool.borrow(&clientIn)
            target = UnsafeMutableRawBufferPointer(rebasing: clientIn.writable(atLeast: HTTPSession.readChunk).prefix(HTTPSession.readChunk))
        }
        do {
            switch try clientReceive(target) {
            case nil:
                return false
            case 0:
                clientEOF = true
                return true
            case let n?:
                if !lingering {
                    clientBytesUncounted &+= n
                    clientIn.didWrite(n)
                    machine.clientRead(now: loop.now)
                }
                return true
            }
        } catch {
            clientEOF = true
            perform(machine.clientFailed(), loop: loop)
            return false
        }
    }

    private func handleClientInput(loop: EventLoop) -> Bool {
        switch phase {
        case .awaitingRequest:
            // A request's head and the start of its body leave in one write to the server.
            guard parseRequest(loop: loop) else { return false }
            if phase == .exchanging { _ = moveRequestBody(loop: loop) }
            return true
        case .exchanging:
            return moveRequestBody(loop: loop)
        case .tunnel:
            var progress = false
            if !clientIn.isEmpty {
                pass(clientIn.readableCount, from: &clientIn, to: &serverOut)
                progress = true
            }
            if clientEOF && serverOut.readableCount == serverOutSent && !serverShutdown && serverFD >= 0 {
                shutdownServerOutput()
                progress = true
            }
            return progress
        case .lingering:
            // The client's FIN may arrive (and be read) before the error response is
            // written: the close waits until that response has left (finishIfDone).
            if clientEOF && clientOut.isEmpty { perform(machine.clientEOF(headPending: false, now: loop.now), loop: loop) }
            return false
        case .closed:
            return false
        }
    }

    private func parseRequest(loop: EventLoop) -> Bool {
        if clientIn.isEmpty {
            // The client is done: the normal end of a keep-alive connection.
            if clientEOF { perform(machine.clientEOF(headPending: false, now: loop.now), loop: loop) }
            return false
        }
        worker.requestParser.reset()
        switch worker.requestParser.parse(clientIn.readable) {
        case .needMore:
            if clientEOF {
                // The client went away in the middle of a head.
                setBadRequestLine()
                perform(machine.clientEOF(headPending: true, now: loop.now), loop: loop)
            }
            return false
        case .invalid(let error):
            setBadRequestLine()
            perform(machine.requestInvalid(error, now: loop.now), loop: loop)
            return false
        case .complete(let head):
            startExchange(head, loop: loop)
            return true
        }
    }

    private func setBadRequestLine() {
        let x = beginExchange()
        x.requestLine.removeAll(keepingCapacity: true)
        let text: StaticString = "<BADREQ>"
        text.withUTF8Buffer { x.requestLine.append(contentsOf: $0) }
    }

    private func startExchange(_ head: HTTPHead, loop: EventLoop) {
        // Each request is routed and balanced on the tables current now: a reload or a
        // discovery update applies from the next request of an open keep-alive connection.
        let x = beginExchange()
        var request = HTTPExchangePolicy.Request(head: head)
        x.requestBody = BodyProgress(head.framing)
        x.responseBody = .done
        request.bodyComplete = x.requestBody.isDone
        let bytes = clientIn.readable
        // The request line, for the log (after any empty lines the parser skipped).
        x.requestLine.removeAll(keepingCapacity: true)
        x.requestLine.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[head.startLine]))

        let routing = worker.routing[frontend.index]
        var chosen = frontend.backendIndex
        var edits: RequestEdits? = nil
        if !routing.trivial {
            let pathRange = RoutingTable.pathRange(bytes, head.target)
            var view = RequestView(bytes: bytes, method: head.methodRange, methodKind: head.method, host: head.hostRange,
                                   path: pathRange.map { UnsafeRawBufferPointer(rebasing: bytes[$0]) },
                                   source: IPPattern.address(of: peer), tls: tls != nil)
            let answer: (status: Int, error: ErrorResponse?, termination: TerminationState)
            let decision = tls.map { tls in
                tls.withServerName { name in
                    view.serverName = name
                    return routing.decide(view, scratch: worker.routingScratch)
                }
            } ?? routing.decide(view, scratch: worker.routingScratch)
            switch decision {
            case .backend(let index):
                chosen = index
                let decided = RequestEdits(table: routing, scratch: worker.routingScratch, pathRange: pathRange)
                if !decided.isEmpty { edits = decided }
                answer = (0, nil, .normal)
            case .deny(let error):
                answer = (error.status, error, .make("P", "R"))
            case .notFound:
                answer = (404, .notFound, .make("P", "R"))
            case .redirect(let rule):
                worker.scratch.removeAll(keepingCapacity: true)
                routing.writeRedirect(rule: rule, route: nil, bytes: bytes, head: head, pathRange: pathRange, into: &worker.scratch)
                answer = (Self.redirectStatus(routing, rule: rule, route: nil), nil, .make("L", "R"))
            case .routeRedirect(let route):
                worker.scratch.removeAll(keepingCapacity: true)
                routing.writeRedirect(rule: nil, route: route, bytes: bytes, head: head, pathRange: pathRange, into: &worker.scratch)
                answer = (route.redirectStatus, nil, .make("L", "R"))
            }
            if answer.status != 0 {
                x.table = worker.tables[chosen]
                x.backendIndex = chosen
                clientIn.consume(head.length)
                bytesToClient = 0
                perform(machine.requestAnswered(request, status: answer.status, error: answer.error,
                                                termination: answer.termination, now: loop.now), loop: loop)
                return
            }
        }
        x.backendIndex = chosen
        x.table = worker.tables[chosen]
        machine.settings = worker.httpSettings[frontend.index][chosen]

        worker.peerText.removeAll(keepingCapacity: true)
        if frontend.config.forwardFor { peer.withNumericHost { worker.peerText.append(contentsOf: $0) } }
        HTTPHeadWriter.writeRequest(head, from: bytes, clientAddress: worker.peerText,
                                    forwardFor: frontend.config.forwardFor, keepAliveToServer: true,
                                    edits: edits, forwardedProtoHTTPS: tls != nil, into: &worker.scratch)
        // The request waits in `serverOut` until its response starts (for a replay): a
        // request that is all here and small waits in a small buffer.
        serverOutSent = 0
        worker.pool.giveBack(&serverOut)   // (empty) whatever size the last request needed
        do {
            let bodyHere = bytes.count - head.length
            let whole: Int? = switch head.framing {
            case .none: 0
            case .contentLength(let n) where n <= bodyHere: n
            default: nil
            }
            if let whole, worker.scratch.count + whole <= TransferPool.smallBufferSize {
                worker.pool.borrowSmall(&serverOut)
            } else {
                worker.pool.borrow(&serverOut)
            }
        }
        serverOut.clear()
        worker.scratch.withUnsafeBytes { serverOut.append($0) }
        worker.scratch.removeAll(keepingCapacity: true)
        clientIn.consume(head.length)
        bytesToClient = 0
        perform(machine.requestHead(request, now: loop.now), loop: loop)
    }

    private func moveRequestBody(loop: EventLoop) -> Bool {
        guard phase == .exchanging, !machine.request.bodyComplete, !splicing, let x = exchange else { return false }
        if clientIn.isEmpty {
            if clientEOF {
                // The client closed before sending its whole body.
                perform(machine.clientEOF(headPending: false, now: loop.now), loop: loop)
            }
            return startRequestSplice(loop: loop)
        }
        switch x.requestBody.take(from: clientIn.readable) {
        case .invalid:
            perform(machine.requestBodyInvalid(now: loop.now), loop: loop)
            return false
        case .body(let count, let done):
            pass(count, from: &clientIn, to: &serverOut)
            machine.requestBody(count: count, complete: done, bufferedRequestBytes: serverOut.readableCount)
            return count > 0 || done
        }
    }

    // MARK: connecting

    private func connect(to index: Int, loop: EventLoop) {
        dropServer(reusable: false, loop: loop)
        stateChanged = true
        let server = table.servers[index]
        SessionStats.attempting(machine.attempts + 1, next: server, previous: self.server, backend: backend, loop: loop)
        self.server = server
        serverReadable = true
        serverWritable = true
        serverHangupSeen = false
        serverEOF = false
        serverShutdown = false
        serverIn.clear()
        serverOutSent = 0
        if let (fd, tls) = worker.idlePool.take(backend: backendIndex, table: table, server: index) {
            serverFD = fd
            serverTLS = tls
            loop.setOwner(fd, to: self, side: 1)
            serverWatchesOutput = false
            machine.connectStarted(server: index, reused: true, now: loop.now)
            serverUse.begin(server, backend: backend)
            return
        }
        machine.connectStarted(server: index, reused: false, now: loop.now)
        do {
            let (fd, connected) = try Socket.connect(to: server.address, spare: &worker.spare)
            serverFD = fd
            // Server sockets go through the loop's owner table: they move between this
            // session and the idle pool on every request, without an epoll_ctl.
            try loop.watchOwned(fd, events: [.readable, .writable, .readHangup], owner: self, side: 1)
            serverWatchesOutput = true
            if connected { socketConnected(loop: loop) }
        } catch {
            connectFailed(timedOut: false, loop: loop)
        }
    }

    /// The TCP connection is up: a plain server is connected, a TLS one starts its
    /// handshake.
    private func socketConnected(loop: EventLoop) {
        guard let context = server?.tls else {
            connectSucceeded(loop: loop)
            return
        }
        guard let tls = TLSConnection(client: context, serverName: server?.config.tls?.serverName, fd: serverFD) else {
            connectFailed(timedOut: false, loop: loop)
            return
        }
        serverTLS = tls
        serverHandshake(tls, loop: loop)
    }

    /// One step of the server handshake: connected once it completes, a failed connect
    /// when it fails (a certificate that does not verify, a server that is not TLS).
    private func serverHandshake(_ tls: TLSConnection, loop: EventLoop) {
        switch tls.handshake() {
        case .processed:
            serverTLSWaitsWritable = false
            connectSucceeded(loop: loop)
        case .wantRead:
            serverTLSWaitsWritable = false
        case .wantWrite:
            serverTLSWaitsWritable = true
        case .closed, .failed:
            connectFailed(timedOut: false, loop: loop)
        }
    }

    private func connectSucceeded(loop: EventLoop) {
        machine.connected(now: loop.now)
        guard let server else { return }
        server.health.recordConnectSuccess()
        serverUse.begin(server, backend: backend)
    }

    private func connectFailed(timedOut: Bool, loop: EventLoop) {
        if let server { SessionStats.connectFailed(server, backend: backend, loop: loop) }
        dropServer(reusable: false, loop: loop)
        perform(machine.connectFailed(timedOut: timedOut, now: loop.now), loop: loop)
    }

    /// Lets go of the server connection: back to the idle pool when it can carry another
    /// request, closed otherwise.
    private func dropServer(reusable: Bool, loop: EventLoop) {
        guard serverFD >= 0 else { return }
        serverUse.end(server, backend: backend)
        if reusable, machine.server >= 0 {
            worker.idlePool.give(serverFD, tls: serverTLS, backend: backendIndex, table: table, server: machine.server,
                                 watchingOutput: serverWatchesOutput)
        } else {
            serverTLS?.shutdown()
            loop.releaseOwned(serverFD)
            Posix.close(serverFD)
        }
        serverTLS = nil
        serverTLSWaitsWritable = false
        serverFD = -1
        serverWatchesOutput = false
    }

    // MARK: server output

    private func flushServer(loop: EventLoop) -> Bool {
        guard !holdWrites, serverFD >= 0, !machine.connecting, serverWritable else { return false }
        let pending = serverOut.readableCount - serverOutSent
        guard pending > 0 else { return false }
        let bytes = UnsafeRawBufferPointer(rebasing: serverOut.readable[serverOutSent...])
        do {
            switch try serverSend(bytes) {
            case nil:
                return false
            case let n?:
                serverOutSent += n
                machine.serverWritten(now: loop.now)
                if !machine.request.replayable || machine.responseStarted || phase == .tunnel {
                    // Nobody will ask for these bytes again: free the space.
                    serverOut.consume(serverOutSent)
                    serverOutSent = 0
                }
                return true
            }
        } catch {
            serverFailed(loop: loop)
            return false
        }
    }

    // MARK: server input

    /// Bytes for the client wait to be written: in `clientOut`, or in the body relay's pipe
    /// or buffer. Either way `timeout client` runs; without the relay's part, a client that
    /// stopped reading a spliced body held its server connection forever (the server side
    /// is paused, so `timeout server` does not run either).
    private var clientOutputPending: Bool {
        !clientOut.isEmpty || (exchange.map { $0.downActive && $0.down.pending > 0 } ?? false)
    }

    /// Reading the server stopped because the client has not taken what was read.
    private var serverReadPaused: Bool {
        clientOut.readableCount >= HTTPSession.highWater
            || (exchange.map { $0.downActive && $0.down.pending > 0 && !$0.down.destinationWritable } ?? false)
    }

    private func wantsServerInput() -> Bool {
        guard serverFD >= 0, !machine.connecting, !serverEOF else { return false }
        switch phase {
        case .exchanging:
            return !machine.responseComplete && clientOut.readableCount < HTTPSession.highWater
                && exchange?.downActive != true
        case .tunnel: return clientOut.readableCount < HTTPSession.highWater && !splicing
        default: return false
        }
    }

    private func readServer(loop: EventLoop) -> Bool {
        guard serverReadable, wantsServerInput() else { return false }
        worker.pool.borrow(&serverIn)
        let target = serverIn.writable(atLeast: HTTPSession.readChunk)
        do {
            switch try serverReceive(target) {
            case nil:
                return false
            case 0:
                serverEOF = true
                return true
            case let n?:
                serverIn.didWrite(n)
                machine.serverRead(now: loop.now)
                return true
            }
        } catch {
            serverFailed(loop: loop)
            return false
        }
    }

    /// The server connection broke (reset, or closed before the response was complete).
    private func serverFailed(loop: EventLoop) {
        if phase == .exchanging && !machine.responseStarted && !machine.serverReused, let server {
            SessionStats.connectFailed(server, backend: backend, loop: loop)
        }
        dropServer(reusable: false, loop: loop)
        perform(machine.serverFailed(now: loop.now), loop: loop)
    }

    private func handleServerInput(loop: EventLoop) -> Bool {
        switch phase {
        case .tunnel:
            var progress = false
            if !serverIn.isEmpty {
                bytesToClient += serverIn.readableCount
                pass(serverIn.readableCount, from: &serverIn, to: &clientOut)
                progress = true
            }
            if serverEOF && clientOut.isEmpty && !clientShutdown {
                shutdownClientOutput()
                progress = true
            }
            if clientShutdown && serverShutdown && serverEOF && clientEOF {
                perform(machine.tunnelFinished(), loop: loop)
            }
            return progress
        case .exchanging:
            // Head and body in one go, so that a small response leaves in one write to
            // the client instead of one for the head and one for the body.
            var progress = false
            while phase == .exchanging && !machine.responseComplete && (serverFD >= 0 || !serverIn.isEmpty) {
                let step = machine.responseHeadDone ? moveResponseBody(loop: loop) : parseResponse(loop: loop)
                if !step { break }
                progress = true
            }
            return progress
        default:
            return false
        }
    }

    private func parseResponse(loop: EventLoop) -> Bool {
        if serverIn.isEmpty {
            if serverEOF { serverFailed(loop: loop) }
            return false
        }
        worker.responseParser.reset()
        switch worker.responseParser.parse(serverIn.readable) {
        case .needMore:
            if serverEOF {
                dropServer(reusable: false, loop: loop)
                perform(machine.responseHeadTruncated(now: loop.now), loop: loop)
            }
            return false
        case .invalid:
            dropServer(reusable: false, loop: loop)
            perform(machine.responseInvalid(now: loop.now), loop: loop)
            return false
        case .complete(let head):
            return startResponse(head, loop: loop)
        }
    }

    private func startResponse(_ head: HTTPHead, loop: EventLoop) -> Bool {
        let bytes = serverIn.readable
        let request = machine.request
        if head.status >= 100 && head.status < 200 && head.status != 101 {
            // Interim response (100 Continue, 103 Early Hints): pass it on, then wait for
            // the final one. HTTP/1.0 clients do not know 1xx (RFC 9110 §15.2): drop it.
            if request.version == .http11 {
                HTTPHeadWriter.writeResponse(head, from: bytes, requestVersion: request.version,
                                             keepAliveToClient: true, into: &worker.scratch)
                appendScratchToClient()
            }
            serverIn.consume(head.length)
            machine.interimResponse()
            return true
        }
        let framing = head.responseFraming(requestMethod: request.method)
        let action = machine.responseHead(status: head.status, framing: framing, serverKeepAlive: head.keepAlive, now: loop.now)
        if case .respond = action {
            dropServer(reusable: false, loop: loop)
            perform(action, loop: loop)
            return false
        }
        HTTPHeadWriter.writeResponse(head, from: bytes, requestVersion: request.version,
                                     keepAliveToClient: head.status == 101 || machine.keepAliveToClient,
                                     into: &worker.scratch)
        appendScratchToClient()
        serverIn.consume(head.length)
        exchange?.responseBody = head.status == 101 ? .done : BodyProgress(framing)
        // The request cannot be replayed once a response has begun: drop replay state
        // (after a 101, from here on it is a byte stream).
        serverOut.consume(serverOutSent)
        serverOutSent = 0
        return true
    }

    private func moveResponseBody(loop: EventLoop) -> Bool {
        guard !machine.responseComplete, let x = exchange else { return false }
        if serverIn.isEmpty {
            if serverEOF {
                if case .untilClose = x.responseBody {
                    machine.responseBodyComplete(byClose: true)
                    return true
                }
                // Truncated: the server closed inside a framed body.
                perform(machine.responseTruncated(), loop: loop)
            }
            return false
        }
        switch x.responseBody.take(from: serverIn.readable) {
        case .invalid:
            perform(machine.responseBodyInvalid(), loop: loop)
            return false
        case .body(let count, let done):
            if count > 0 {
                bytesToClient += count
                pass(count, from: &serverIn, to: &clientOut)
                machine.responseForwarded()
            }
            if done { machine.responseBodyComplete(byClose: false) }
            return count > 0 || done
        }
    }

    /// Moves `count` bytes from the front of one of the session's buffers to the end of
    /// another, without copying them when it can (`ByteBuffer.transfer`). The pool's
    /// rules hold: the destination is borrowed only to copy into, and what a swap left
    /// in the source (an empty buffer, perhaps a small one) goes back to the pool, since
    /// the next read borrows a full-size buffer. A 1 GiB download over TLS spent about 5%
    /// of balancerd's CPU in the copy this saves.
    private func pass(_ count: Int, from source: inout ByteBuffer, to destination: inout ByteBuffer) {
        guard count > 0 else { return }
        if !destination.isEmpty || count < source.readableCount { worker.pool.borrow(&destination) }
        if destination.transfer(count, from: &source) { worker.pool.giveBack(&source) }
    }

    private func appendToClient(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        worker.pool.borrow(&clientOut)
        clientOut.append(bytes)
        bytesToClient += bytes.count
        machine.responseForwarded()
    }

    private func appendScratchToClient() {
        worker.scratch.withUnsafeBytes { appendToClient($0) }
        worker.scratch.removeAll(keepingCapacity: true)
    }

    // MARK: client output

    private func flushClient(loop: EventLoop) -> Bool {
        guard !holdWrites, clientWritable, !clientOut.isEmpty else { return false }
        do {
            switch try clientSend(clientOut.readable) {
            case nil:
                return false
            case let n?:
                clientOut.consume(n)
                machine.clientWritten(now: loop.now)
                return true
            }
        } catch {
            perform(machine.clientFailed(), loop: loop)
            return false
        }
    }

    // MARK: spliced bodies

    /// Starts moving the rest of a large Content-Length request body, or of a large chunk,
    /// with splice(2), once everything before it went to the server.
    private func startRequestSplice(loop: EventLoop) -> Bool {
        guard worker.splice, tls == nil, serverTLS == nil, phase == .exchanging, let x = exchange, !x.upActive, clientIn.isEmpty, !clientEOF,
              case let count = x.requestBody.spliceableBytes, count >= worker.spliceThreshold,
              serverFD >= 0, !machine.connecting, serverOut.readableCount == serverOutSent,
              let pipe = worker.pool.takePipe() else { return false }
        x.up = Relay(from: clientFD, to: serverFD, pipe: pipe, limit: count,
                     sourceReadable: clientReadable, destinationWritable: serverWritable)
        x.upActive = true
        // What goes through the pipe is not kept: the request can no longer be replayed.
        machine.requestBody(count: 0, complete: false, bufferedRequestBytes: .max)
        return true
    }

    /// Starts moving the rest of a large Content-Length response body, or of a large
    /// chunk, with splice(2), once everything before it went to the client.
    private func startResponseSplice() -> Bool {
        guard worker.splice, tls == nil, serverTLS == nil, phase == .exchanging, machine.responseHeadDone, !machine.responseComplete,
              let x = exchange, !x.downActive, serverIn.isEmpty, clientOut.isEmpty, serverFD >= 0, !serverEOF,
              case let count = x.responseBody.spliceableBytes, count >= worker.spliceThreshold,
              let pipe = worker.pool.takePipe() else { return false }
        x.down = Relay(from: serverFD, to: clientFD, pipe: pipe, limit: count,
                       sourceReadable: serverReadable, destinationWritable: clientWritable)
        x.downActive = true
        return true
    }

    /// After a 101, once the bytes that came with the heads are delivered, the tunnel is
    /// two relays through pipes, as in TCP mode. Without pipes it stays on the buffers.
    private func startTunnelSplice() -> Bool {
        guard worker.splice, tls == nil, serverTLS == nil, phase == .tunnel, let x = exchange, !x.upActive, !x.downActive, serverFD >= 0,
              clientIn.isEmpty, serverIn.isEmpty, clientOut.isEmpty, serverOut.readableCount == serverOutSent,
              !clientEOF, !serverEOF, !clientShutdown, !serverShutdown,
              let upPipe = worker.pool.takePipe() else { return false }
        guard let downPipe = worker.pool.takePipe() else {
            worker.pool.give(upPipe, empty: true)
            return false
        }
        x.up = Relay(from: clientFD, to: serverFD, pipe: upPipe, limit: .max,
                     sourceReadable: clientReadable, destinationWritable: serverWritable)
        x.down = Relay(from: serverFD, to: clientFD, pipe: downPipe, limit: .max,
                       sourceReadable: serverReadable, destinationWritable: clientWritable)
        x.upActive = true
        x.downActive = true
        return true
    }

    /// One direction of a spliced tunnel reached EOF and delivered everything: pass the
    /// FIN on (half-close); the tunnel ends when both did.
    private func tunnelDirectionFinished(up: Bool, loop: EventLoop) {
        if up {
            clientEOF = true
            shutdownServerOutput()
        } else {
            serverEOF = true
            shutdownClientOutput()
        }
        if clientShutdown && serverShutdown { perform(machine.tunnelFinished(), loop: loop) }
    }

    private func pumpSplice(loop: EventLoop) -> Bool {
        var progress = startResponseSplice()
        if startTunnelSplice() { progress = true }
        guard let x = exchange else { return progress }
        if x.upActive {
            let read = x.up.bytesRead, written = x.up.bytesWritten
            let outcome = x.up.pump(budget: TCPSession.budget)
            if x.up.bytesRead != read {
                clientBytesUncounted &+= x.up.bytesRead - read
                machine.clientRead(now: loop.now)
            }
            if x.up.bytesWritten != written { machine.serverWritten(now: loop.now); progress = true }
            clientReadable = x.up.sourceReadable
            serverWritable = x.up.destinationWritable
            switch outcome {
            case .sourceFailed:
                perform(machine.clientFailed(), loop: loop)
                return false
            case .destinationFailed:
                serverFailed(loop: loop)
                return false
            case .finished where phase == .tunnel:
                if !serverShutdown { tunnelDirectionFinished(up: true, loop: loop); progress = true }
                if closed { return false }
            case .finished:
                if x.up.endedEarly {
                    clientEOF = true
                    perform(machine.clientEOF(headPending: false, now: loop.now), loop: loop)
                    return false
                }
                x.requestBody.spliced(x.up.bytesRead)
                machine.requestBody(count: x.up.bytesRead, complete: x.requestBody.isDone, bufferedRequestBytes: .max)
                x.up.returnResources(to: worker.pool)
                x.upActive = false
                progress = true
            case .budgetExhausted:
                loop.runAgain(self)
            case .idle:
                break
            }
        }
        guard x.downActive, exchange === x else { return progress }
        let read = x.down.bytesRead, written = x.down.bytesWritten
        let outcome = x.down.pump(budget: TCPSession.budget)
        if x.down.bytesRead != read { machine.serverRead(now: loop.now) }
        if x.down.bytesWritten != written {
            bytesToClient += x.down.bytesWritten - written
            machine.clientWritten(now: loop.now)
            machine.responseForwarded()
            progress = true
        }
        serverReadable = x.down.sourceReadable
        clientWritable = x.down.destinationWritable
        switch outcome {
        case .sourceFailed:
            serverFailed(loop: loop)
            return false
        case .destinationFailed:
            perform(machine.clientFailed(), loop: loop)
            return false
        case .finished where phase == .tunnel:
            if !clientShutdown { tunnelDirectionFinished(up: false, loop: loop); progress = true }
        case .finished:
            if x.down.endedEarly {
                serverEOF = true
                perform(machine.responseTruncated(), loop: loop)
                return false
            }
            // A Content-Length body is over; a chunk's data is, and its CRLF and the next
            // size line come through the buffers.
            x.responseBody.spliced(x.down.bytesRead)
            if x.responseBody.isDone { machine.responseBodyComplete(byClose: false) }
            x.down.returnResources(to: worker.pool)
            x.downActive = false
            progress = true
        case .budgetExhausted:
            loop.runAgain(self)
        case .idle:
            break
        }
        return progress
    }

    // MARK: ends of exchanges

    private func finishIfDone(loop: EventLoop) -> Bool {
        switch phase {
        case .lingering:
            if clientOut.isEmpty && !clientShutdown {
                shutdownClientOutput()
                // The client had already closed its side: nothing is left to drain.
                if clientEOF { perform(machine.clientEOF(headPending: false, now: loop.now), loop: loop) }
            }
            return false
        case .exchanging:
            guard machine.responseComplete, clientOut.isEmpty, !splicing else { return false }
            perform(machine.exchangeFlushed(clientEOF: clientEOF, now: loop.now), loop: loop)
            // A pipelined request may already be waiting in clientIn.
            return phase == .awaitingRequest
        default:
            return false
        }
    }

    /// Sends a canned error (the machine checked that nothing was sent to the client
    /// yet), logs it, then lingers: the client's input is read and dropped until it
    /// closes or the linger time is over.
    /// `error` nil: the response a routing rule prepared in the loop's scratch (a redirect).
    private func respond(_ error: ErrorResponse?, loop: EventLoop) {
        dropServer(reusable: false, loop: loop)
        worker.pool.borrow(&clientOut)
        clientOut.clear()
        if let error {
            let bytes = machine.settings.errorPages[error]
            bytes.withUnsafeBytes { clientOut.append($0) }
            beginExchange().bytesToClient = bytes.count
        } else {
            worker.scratch.withUnsafeBytes { clientOut.append($0) }
            beginExchange().bytesToClient = worker.scratch.count
            worker.scratch.removeAll(keepingCapacity: true)
        }
        log(loop: loop)
        endExchange()
        clientIn.clear()
        serverIn.clear()
        serverOut.clear()
        serverOutSent = 0
        advance(loop: loop)
    }

    private func close(abort: Bool, loop: EventLoop) {
        guard !closed else { return }
        closed = true
        deadline = 0
        dropServer(reusable: false, loop: loop)
        endExchange()
        if abort { client.resetOnClose() } else { tls?.shutdown() }
        // The descriptor itself closes when the session is freed: deregistering drops the
        // loop's reference, and the caller's is the last.
        let pool = worker.pool
        pool.giveBack(&clientIn)
        pool.giveBack(&clientOut)
        pool.giveBack(&serverIn)
        pool.giveBack(&serverOut)
        if tls != nil { pool.noteFreed(bytes: TLSConnection.estimatedIdleBytes) }
        worker.connectionClosed(frontend: frontend, loop: loop)
        loop.deregister(self)
    }

    // MARK: interest

    private func updateInterest(loop: EventLoop) {
        var clientNeeds = (!clientOut.isEmpty || tlsWaitsWritable) && !clientWritable
        var serverNeeds = machine.connecting || ((serverOut.readableCount > serverOutSent || serverTLSWaitsWritable) && !serverWritable)
        if let x = exchange {
            if x.downActive && x.down.pending > 0 && !x.down.destinationWritable { clientNeeds = true }
            if x.upActive && x.up.pending > 0 && !x.up.destinationWritable { serverNeeds = true }
        }
        if clientNeeds != clientWatchesOutput {
            clientWatchesOutput = clientNeeds
            try? loop.rewatch(clientFD, side: 0, events: clientNeeds ? [.readable, .readHangup, .writable] : [.readable, .readHangup], for: self)
        }
        guard serverFD >= 0 else { return }
        if serverNeeds != serverWatchesOutput {
            serverWatchesOutput = serverNeeds
            try? loop.modifyOwned(serverFD, events: serverNeeds ? [.readable, .readHangup, .writable] : [.readable, .readHangup])
        }
    }

    // MARK: log

    private func log(loop: EventLoop) {
        let m = machine
        let start = m.firstByteAt > 0 ? m.firstByteAt : m.exchangeStartedAt
        let timings = AccessLog.HTTPTimings(
            request: m.headCompleteAt >= start && m.headCompleteAt > 0 ? Int((m.headCompleteAt - start) / 1_000_000) : -1,
            connect: m.connectedAt >= 0 ? Int((m.connectedAt - m.connectStartedAt) / 1_000_000) : -1,
            response: m.responseHeadAt >= 0 && m.connectedAt >= 0 ? Int((m.responseHeadAt - m.connectedAt) / 1_000_000) : -1,
            total: Int((loop.now - start) / 1_000_000))
        // The date of the request's first byte, from the wall clock now and the monotonic
        // time since then (one clock read per log line, none per request).
        SessionStats.ended(SessionRecord(
            frontend: frontend, backend: backend, server: m.server >= 0 ? server : nil, status: m.status,
            bytesIn: clientBytesUncounted, bytesOut: bytesToClient, connectMilliseconds: timings.connect,
            responseMilliseconds: timings.response, totalMilliseconds: timings.total, termination: m.termination), loop: loop)
        clientBytesUncounted = 0
        guard !worker.shared.quiet else { return }
        let wall = Posix.wallClockMilliseconds() - (loop.now - start) / 1_000_000
        let context = AccessLogContext(peer: peer, wallMilliseconds: wall,
                                       frontend: frontend, backend: backend,
                                       server: m.server >= 0 ? server : nil, termination: m.termination,
                                       retries: max(0, m.attempts - 1))
        AccessLog.http(context, timings: timings, status: m.status, bytes: bytesToClient,
                       active: worker.shared.active.load(ordering: .relaxed), requestLine: exchange?.requestLine ?? [],
                       into: worker.log)
    }
}

/// What a connection needs only while an exchange is in flight: the framing state of
/// both bodies, the request line for the log, and a relay per direction for bodies that
/// move through a pipe. Borrowed from the loop for the exchange and given back after it
/// (haproxy's split of connection and stream), so the many idle connections of a
/// keep-alive client population do not carry it.
final class HTTPExchangeState {
    var requestBody = BodyProgress.done
    var responseBody = BodyProgress.done
    /// The backend routing chose for this exchange (index in the loop's arrays).
    var backendIndex = 0
    var table: BackendTable?
    var server: Server?
    var serverOutSent = 0
    var bytesToClient = 0
    /// Kept with its capacity from exchange to exchange (states are pooled), so it costs
    /// an allocation only for a request line longer than any before.
    var requestLine: [UInt8] = {
        var line: [UInt8] = []
        line.reserveCapacity(256)
        return line
    }()
    /// Client to server (request body).
    var up = Relay()
    var upActive = false
    /// Server to client (response body).
    var down = Relay()
    var downActive = false
}
