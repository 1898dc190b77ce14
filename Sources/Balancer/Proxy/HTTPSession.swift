// One client connection in HTTP mode: requests are parsed, balanced one by one over the
// servers (haproxy's http-keep-alive mode), and answered in order. Loop thread only.
//
// The session is a shell around pure parts: HTTPHeadParser and ChunkedDecoder decide
// what the bytes mean, HTTPExchangePolicy decides retries, keep-alive and errors, and
// this file only moves bytes and timers. `advance` runs every step that can make progress
// until none can (the sockets are edge-triggered, so readiness is remembered in flags,
// set by epoll and cleared by EAGAIN).
//
// Ordering: while a request is being served the client socket is not read beyond that
// request's body, so pipelined requests wait in `clientIn` and are answered in order.
final class HTTPSession: EventHandler, ProxySession {
    var registration = EventLoop.Registration.none
    var deadline: Int64 = 0
    var filedDeadline: Int64 = 0

    enum Phase: Equatable {
        /// Waiting for (the rest of) a request head.
        case awaitingRequest
        /// A request is being forwarded and its response relayed.
        case exchanging
        /// After a 101 Switching Protocols: raw bytes both ways.
        case tunnel
        /// An error response is being flushed; the client's input is drained and dropped
        /// for a moment so that closing does not reset the connection before the client
        /// has read the response.
        case lingering
        case closed
    }

    unowned let worker: ProxyWorker
    let frontend: FrontendRuntime
    let clientFD: CInt
    let peer: SocketAddress
    /// The client's IP as text, for X-Forwarded-For (made once per connection).
    let peerIP: [UInt8]
    var table: BackendTable
    var phase = Phase.awaitingRequest

    // Client side.
    var clientIn: ByteBuffer
    var clientOut: ByteBuffer
    var clientReadable = true
    var clientWritable = true
    var clientEOF = false
    var clientShutdown = false
    var clientWatchesOutput = false
    var clientHangupSeen = false

    // Server side. The socket is watched through the loop's owner table (side 1), so a
    // late event for a socket the session let go of goes to its new owner or nowhere.
    var serverFD: CInt = -1
    var server: Server?
    var serverIndex = -1
    var serverReused = false
    var connecting = false
    var serverIn: ByteBuffer
    var serverOut: ByteBuffer
    /// Bytes of `serverOut` already written. They are kept while the request may still be
    /// replayed on another server; `serverOut` is trimmed once it cannot.
    var serverOutSent = 0
    var serverReadable = true
    var serverWritable = true
    var serverEOF = false
    var serverShutdown = false
    var serverWatchesOutput = false
    var serverHangupSeen = false

    // The current exchange.
    var requestParser: HTTPHeadParser
    var responseParser = HTTPHeadParser(kind: .response)
    var request = HTTPExchangePolicy.Request()
    var requestBody = BodyProgress.done
    var responseBody = BodyProgress.done
    var responseStarted = false      // a byte of the response arrived from the server
    var responseHeadDone = false
    var responseComplete = false
    var responseToClientStarted = false
    var status = 0
    var keepAliveToClient = false
    var serverReusable = false
    var attempts = 0
    var requestCount = 0
    /// Set when a step changed the session in a way earlier steps of the same round did
    /// not see (a new server connection): `advance` then runs another round.
    var stateChanged = false
    var requestLine: [UInt8] = []
    var bytesToClient = 0
    var termination = TerminationState.normal

    // Timers (monotonic ns).
    let acceptedAt: Int64
    var exchangeStartedAt: Int64      // accept, or the end of the previous exchange
    var firstByteAt: Int64 = 0        // first byte of the current request head
    var headCompleteAt: Int64 = 0
    var connectStartedAt: Int64 = 0
    var connectedAt: Int64 = -1
    var responseHeadAt: Int64 = -1
    var lastClientIO: Int64
    var lastServerIO: Int64
    var lingerUntil: Int64 = 0
    var requestWall: Int64

    let timeouts: HTTPTimeouts

    /// Backpressure: stop reading a side while this much waits for the other.
    static let highWater = 64 * 1024
    static let readChunk = 16 * 1024

    init(worker: ProxyWorker, client: CInt, peer: SocketAddress, frontend: FrontendRuntime, table: BackendTable, now: Int64) {
        self.worker = worker
        self.clientFD = client
        self.peer = peer
        self.peerIP = Array(peer.host.utf8)
        self.frontend = frontend
        self.table = table
        self.acceptedAt = now
        self.exchangeStartedAt = now
        self.lastClientIO = now
        self.lastServerIO = now
        self.requestWall = Posix.wallClockMilliseconds()
        self.timeouts = HTTPTimeouts(frontend: frontend.config, backend: table.settings)
        self.requestParser = HTTPHeadParser(kind: .request, limits: worker.httpLimits)
        self.clientIn = worker.pool.takeByteBuffer()
        self.clientOut = worker.pool.takeByteBuffer()
        self.serverIn = worker.pool.takeByteBuffer()
        self.serverOut = worker.pool.takeByteBuffer()
        requestLine.reserveCapacity(128)
    }

    // MARK: life cycle

    func start(loop: EventLoop) {
        loop.register(self)
        do {
            try loop.watch(clientFD, side: 0, events: [.readable, .readHangup], for: self)
        } catch {
            close(loop: loop)
            return
        }
        advance(loop: loop)
    }

    /// Soft stop: a connection waiting for its next request is closed now, since it
    /// would only keep the process alive through the grace period for nothing.
    func closeIfIdle(loop: EventLoop) {
        if phase == .awaitingRequest && clientIn.isEmpty { close(loop: loop) }
    }

    func kill(loop: EventLoop) {
        guard phase != .closed else { return }
        termination = .make("K", phase == .awaitingRequest ? "R" : "D")
        if phase == .exchanging || phase == .tunnel { log(loop: loop) }
        close(loop: loop, abort: true)
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
            if input { clientReadable = true }
            if output { clientWritable = true }
            if hangup { clientHangupSeen = true }
        } else {
            guard serverFD >= 0 else { return }
            if connecting {
                guard input || output else { return }
                if let _ = Posix.pendingError(serverFD) {
                    connectFailed(timedOut: false, loop: loop)
                } else {
                    connectSucceeded(loop: loop)
                }
            } else {
                if input { serverReadable = true }
                if output { serverWritable = true }
                if hangup { serverHangupSeen = true }
            }
        }
        advance(loop: loop)
    }

    func resume(loop: EventLoop) {
        advance(loop: loop)
    }

    func deadlineReached(loop: EventLoop) {
        guard phase != .closed else { return }
        let now = loop.now
        switch phase {
        case .awaitingRequest:
            if clientIn.isEmpty {
                // An idle keep-alive connection (or one that never said anything): close
                // quietly, as haproxy does.
                close(loop: loop)
            } else {
                // Slowloris defence: the head did not arrive within `timeout http-request`.
                fail(.requestTimeout, termination: .make("c", "R"), loop: loop)
            }
        case .exchanging:
            if connecting {
                if now >= connectStartedAt + timeouts.connect {
                    connectFailed(timedOut: true, loop: loop)
                }
            } else if !responseHeadDone && serverFD >= 0 && now >= lastServerIO + timeouts.server {
                fail(.gatewayTimeout, termination: .make("s", "H"), loop: loop)
            } else if now >= lastClientIO + timeouts.client && (!request.bodyComplete || !clientOut.isEmpty) {
                abortExchange(.make("c", "D"), loop: loop)
            } else if now >= lastServerIO + timeouts.server && serverFD >= 0 {
                abortExchange(.make("s", "D"), loop: loop)
            }
        case .tunnel:
            let side: Character = now >= lastClientIO + timeouts.client ? "c" : "s"
            abortExchange(.make(side, "D"), loop: loop)
        case .lingering:
            close(loop: loop)
        case .closed:
            break
        }
        if phase != .closed { advance(loop: loop) }
    }

    // MARK: the progress loop

    private func advance(loop: EventLoop) {
        var rounds = 0
        var progress = true
        while progress && phase != .closed {
            rounds += 1
            if rounds > 64 {
                // Fairness: a connection with a lot to move yields to the others.
                loop.runAgain(self)
                break
            }
            progress = false
            if readClient(loop: loop) { progress = true }
            if phase == .closed { return }
            if handleClientInput(loop: loop) { progress = true }
            if phase == .closed { return }
            if flushServer(loop: loop) { progress = true }
            if phase == .closed { return }
            if readServer(loop: loop) { progress = true }
            if phase == .closed { return }
            if handleServerInput(loop: loop) { progress = true }
            if phase == .closed { return }
            if flushClient(loop: loop) { progress = true }
            if phase == .closed { return }
            if finishIfDone(loop: loop) { progress = true }
            if stateChanged {
                // A retry attached a new server connection in the middle of this round,
                // after the step that would have sent it the request: go round again.
                stateChanged = false
                progress = true
            }
        }
        guard phase != .closed else { return }
        updateInterest(loop: loop)
        updateDeadline(loop: loop)
    }

    // MARK: client input

    private func wantsClientInput() -> Bool {
        switch phase {
        case .awaitingRequest:
            return clientIn.readableCount <= worker.httpLimits.maxHeadBytes
        case .exchanging:
            return !request.bodyComplete && serverOut.readableCount - serverOutSent < HTTPSession.highWater
        case .tunnel:
            return serverOut.readableCount < HTTPSession.highWater
        case .lingering:
            return true
        case .closed:
            return false
        }
    }

    private func readClient(loop: EventLoop) -> Bool {
        guard clientReadable, !clientEOF, wantsClientInput() else { return false }
        if phase == .lingering {
            clientIn.clear()
        }
        let target = clientIn.writable(atLeast: HTTPSession.readChunk)
        do {
            switch try Posix.read(clientFD, UnsafeMutableRawBufferPointer(rebasing: target.prefix(HTTPSession.readChunk))) {
            case .wouldBlock:
                clientReadable = false
                return false
            case .processed(0):
                clientEOF = true
                return true
            case .processed(let n):
                if phase == .awaitingRequest && clientIn.isEmpty && firstByteAt == 0 { firstByteAt = loop.now }
                // A short read emptied the socket's queue; edge-triggered epoll reports the
                // next bytes that arrive, so there is no need to learn it from an EAGAIN.
                if n < HTTPSession.readChunk && !clientHangupSeen { clientReadable = false }
                clientIn.didWrite(n)
                lastClientIO = loop.now
                return true
            }
        } catch {
            clientEOF = true
            if phase == .lingering { close(loop: loop); return false }
            abortExchange(.make("C", phase == .awaitingRequest ? "R" : "D"), loop: loop)
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
                serverOut.append(clientIn.readable)
                clientIn.consume(clientIn.readableCount)
                progress = true
            }
            if clientEOF && serverOut.readableCount == serverOutSent && !serverShutdown && serverFD >= 0 {
                Posix.shutdown(serverFD, .write)
                serverShutdown = true
                progress = true
            }
            return progress
        case .lingering:
            if clientEOF { close(loop: loop) }
            return false
        case .closed:
            return false
        }
    }

    private func parseRequest(loop: EventLoop) -> Bool {
        if clientIn.isEmpty {
            if clientEOF { close(loop: loop) }   // the client is done: a normal end of keep-alive
            return false
        }
        switch requestParser.parse(clientIn.readable) {
        case .needMore:
            if clientEOF {
                // The client went away in the middle of a head.
                termination = .make("C", "R")
                setBadRequestLine()
                log(loop: loop)
                close(loop: loop)
            }
            return false
        case .invalid(let error):
            setBadRequestLine()
            fail(error.requestErrorResponse, termination: .make("P", "R"), loop: loop)
            return false
        case .complete(let head):
            startExchange(head, loop: loop)
            return true
        }
    }

    private func setBadRequestLine() {
        requestLine.removeAll(keepingCapacity: true)
        requestLine.append(contentsOf: "<BADREQ>".utf8)
    }

    private func startExchange(_ head: HTTPHead, loop: EventLoop) {
        requestCount += 1
        headCompleteAt = loop.now
        // Each request is balanced on the table current now: a reload or a discovery
        // update applies from the next request of an open keep-alive connection.
        table = worker.tables[frontend.backendIndex]
        if firstByteAt == 0 { firstByteAt = loop.now }
        requestWall = Posix.wallClockMilliseconds()
        request = HTTPExchangePolicy.Request(head: head)
        requestBody = BodyProgress(head.framing)
        request.bodyComplete = requestBody.isDone
        // The request line, for the log (after any empty lines the parser skipped).
        requestLine.removeAll(keepingCapacity: true)
        let bytes = clientIn.readable
        requestLine.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[head.startLine]))

        serverOut.clear()
        serverOutSent = 0
        HTTPHeadWriter.writeRequest(head, from: bytes, clientAddress: peerIP,
                                forwardFor: frontend.config.forwardFor, keepAliveToServer: true,
                                into: &worker.scratch)
        serverOut.append(worker.scratch)
        worker.scratch.removeAll(keepingCapacity: true)
        clientIn.consume(head.length)
        requestParser.reset()
        phase = .exchanging
        attempts = 0
        status = 0
        responseStarted = false
        responseHeadDone = false
        responseComplete = false
        responseToClientStarted = false
        bytesToClient = 0
        connectedAt = -1
        responseHeadAt = -1
        termination = .normal
        lastServerIO = loop.now
        connectNext(avoiding: nil, loop: loop)
    }

    private func moveRequestBody(loop: EventLoop) -> Bool {
        guard !request.bodyComplete, !clientIn.isEmpty else {
            if !request.bodyComplete && clientEOF {
                // The client closed before sending its whole body.
                abortExchange(.make("C", "D"), loop: loop)
            }
            return false
        }
        switch requestBody.take(from: clientIn.readable) {
        case .invalid:
            fail(.badRequest, termination: .make("P", "D"), loop: loop)
            return false
        case .body(let count, let done):
            serverOut.append(UnsafeRawBufferPointer(rebasing: clientIn.readable.prefix(count)))
            clientIn.consume(count)
            request.bodyBytes += count
            if done { request.bodyComplete = true }
            if serverOut.readableCount > HTTPExchangePolicy.replayLimit { request.replayable = false }
            return count > 0 || done
        }
    }

    // MARK: connecting

    private func connectNext(avoiding: Int?, loop: EventLoop) {
        guard let index = table.pick(avoiding: avoiding, now: loop.now) else {
            fail(.serviceUnavailable, termination: .make("S", "C"), loop: loop)
            return
        }
        attempts += 1
        stateChanged = true
        let server = table.servers[index]
        self.server = server
        serverIndex = index
        serverReadable = true
        serverWritable = true
        serverHangupSeen = false
        serverEOF = false
        serverShutdown = false
        serverIn.clear()
        serverOutSent = 0
        responseParser.reset()
        connectStartedAt = loop.now
        if let fd = worker.idlePool.take(for: server) {
            serverFD = fd
            serverReused = true
            connecting = false
            loop.setOwner(fd, to: self, side: 1)
            serverWatchesOutput = false
            connectedAt = loop.now
            countServerUse()
            return
        }
        serverReused = false
        do {
            let (fd, connected) = try Socket.connect(to: server.address)
            serverFD = fd
            // Server sockets go through the loop's owner table: they move between this
            // session and the idle pool on every request, without an epoll_ctl.
            try loop.watchOwned(fd, events: [.readable, .writable, .readHangup], owner: self, side: 1)
            serverWatchesOutput = true
            if connected {
                connectSucceeded(loop: loop)
            } else {
                connecting = true
            }
        } catch {
            connectFailed(timedOut: false, loop: loop)
        }
    }

    private func connectSucceeded(loop: EventLoop) {
        connecting = false
        connectedAt = loop.now
        lastServerIO = loop.now
        server?.health.recordConnectSuccess()
        countServerUse()
    }

    /// A request was handed to a server connection, new or pooled: the totals of the
    /// server and of its backend (stats page) count it.
    private func countServerUse() {
        server?.health.total.add(1, ordering: .relaxed)
        worker.backendCounters[frontend.backendIndex].total.add(1, ordering: .relaxed)
    }

    private func connectFailed(timedOut: Bool, loop: EventLoop) {
        connecting = false
        server?.health.recordConnectFailure(now: loop.now)
        dropServer(reusable: false, loop: loop)
        // Nothing reached a server: any method may go elsewhere.
        if HTTPExchangePolicy.mayRetryConnect(attempts: attempts, retries: table.settings.retries) {
            connectNext(avoiding: table.settings.redispatch ? serverIndex : nil, loop: loop)
        } else {
            fail(.serviceUnavailable, termination: timedOut ? .make("s", "C") : .make("S", "C"), loop: loop)
        }
    }

    /// Lets go of the server connection: back to the idle pool when it can carry another
    /// request, closed otherwise.
    private func dropServer(reusable: Bool, loop: EventLoop) {
        guard serverFD >= 0 else { return }
        if reusable, let server {
            worker.idlePool.give(serverFD, server: server, watchingOutput: serverWatchesOutput)
        } else {
            loop.releaseOwned(serverFD)
            Posix.close(serverFD)
        }
        serverFD = -1
        serverWatchesOutput = false
        connecting = false
    }

    // MARK: server output

    private func flushServer(loop: EventLoop) -> Bool {
        guard serverFD >= 0, !connecting, serverWritable else { return false }
        let pending = serverOut.readableCount - serverOutSent
        guard pending > 0 else { return false }
        let bytes = UnsafeRawBufferPointer(rebasing: serverOut.readable[serverOutSent...])
        do {
            switch try Posix.write(serverFD, bytes) {
            case .wouldBlock:
                serverWritable = false
                return false
            case .processed(let n):
                serverOutSent += n
                lastServerIO = loop.now
                if !request.replayable || responseStarted || phase == .tunnel {
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

    private func wantsServerInput() -> Bool {
        guard serverFD >= 0, !connecting, !serverEOF else { return false }
        switch phase {
        case .exchanging: return !responseComplete && clientOut.readableCount < HTTPSession.highWater
        case .tunnel: return clientOut.readableCount < HTTPSession.highWater
        default: return false
        }
    }

    private func readServer(loop: EventLoop) -> Bool {
        guard serverReadable, wantsServerInput() else { return false }
        let target = serverIn.writable(atLeast: HTTPSession.readChunk)
        do {
            switch try Posix.read(serverFD, target) {
            case .wouldBlock:
                serverReadable = false
                return false
            case .processed(0):
                serverEOF = true
                return true
            case .processed(let n):
                if n < target.count && !serverHangupSeen { serverReadable = false }   // drained (see readClient)
                serverIn.didWrite(n)
                responseStarted = true
                lastServerIO = loop.now
                return true
            }
        } catch {
            serverFailed(loop: loop)
            return false
        }
    }

    /// The server connection broke (reset, or closed before the response was complete).
    private func serverFailed(loop: EventLoop) {
        guard phase == .exchanging else {
            if phase == .tunnel { abortExchange(.make("S", "D"), loop: loop) }
            return
        }
        if !responseStarted {
            let reused = serverReused
            dropServer(reusable: false, loop: loop)
            if !reused { server?.health.recordConnectFailure(now: loop.now) }
            if HTTPExchangePolicy.mayResend(request, attempts: attempts, retries: table.settings.retries, reusedConnection: reused) {
                // Nothing came back, the method is idempotent and the whole request is
                // still in `serverOut`: send it again elsewhere (haproxy's
                // `retry-on conn-failure empty-response`).
                connectNext(avoiding: (reused || !table.settings.redispatch) ? nil : serverIndex, loop: loop)
            } else {
                fail(.badGateway, termination: .make("S", "H"), loop: loop)
            }
            return
        }
        if !responseHeadDone {
            fail(.badGateway, termination: .make("S", "H"), loop: loop)
        } else {
            // Part of the response was already sent: all we can do is cut the client off.
            abortExchange(.make("S", "D"), loop: loop)
        }
    }

    private func handleServerInput(loop: EventLoop) -> Bool {
        switch phase {
        case .tunnel:
            var progress = false
            if !serverIn.isEmpty {
                clientOut.append(serverIn.readable)
                serverIn.consume(serverIn.readableCount)
                progress = true
            }
            if serverEOF && clientOut.isEmpty && !clientShutdown {
                Posix.shutdown(clientFD, .write)
                clientShutdown = true
                progress = true
            }
            if clientShutdown && serverShutdown && serverEOF && clientEOF {
                log(loop: loop)
                close(loop: loop)
            }
            return progress
        case .exchanging:
            // Head and body in one go, so that a small response leaves in one write to
            // the client instead of one for the head and one for the body.
            var progress = false
            while phase == .exchanging && !responseComplete && (serverFD >= 0 || !serverIn.isEmpty) {
                let step = responseHeadDone ? moveResponseBody(loop: loop) : parseResponse(loop: loop)
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
        switch responseParser.parse(serverIn.readable) {
        case .needMore:
            if serverEOF { fail(.badGateway, termination: .make("S", "H"), loop: loop) }
            return false
        case .invalid:
            fail(.badGateway, termination: .make("P", "H"), loop: loop)
            return false
        case .complete(let head):
            return startResponse(head, loop: loop)
        }
    }

    private func startResponse(_ head: HTTPHead, loop: EventLoop) -> Bool {
        let bytes = serverIn.readable
        if head.status >= 100 && head.status < 200 && head.status != 101 {
            // Interim response (100 Continue, 103 Early Hints): pass it on, then wait for
            // the final one. HTTP/1.0 clients do not know 1xx (RFC 9110 §15.2): drop it.
            if request.version == .http11 {
                HTTPHeadWriter.writeResponse(head, from: bytes, requestVersion: request.version,
                                             keepAliveToClient: true, into: &worker.scratch)
                appendToClient(worker.scratch)
                worker.scratch.removeAll(keepingCapacity: true)
            }
            serverIn.consume(head.length)
            responseParser.reset()
            return true
        }
        responseHeadAt = loop.now
        status = head.status
        if head.status == 101 {
            guard request.upgrade else {
                fail(.badGateway, termination: .make("P", "H"), loop: loop)
                return false
            }
            HTTPHeadWriter.writeResponse(head, from: bytes, requestVersion: request.version,
                                     keepAliveToClient: true, into: &worker.scratch)
            appendToClient(worker.scratch)
            worker.scratch.removeAll(keepingCapacity: true)
            serverIn.consume(head.length)
            responseHeadDone = true
            phase = .tunnel
            // Drop replay state: from here on it is a byte stream.
            serverOut.consume(serverOutSent)
            serverOutSent = 0
            return true
        }
        let framing = head.responseFraming(requestMethod: request.method)
        keepAliveToClient = HTTPExchangePolicy.keepAliveToClient(request: request, responseFraming: framing,
                                                                 stopping: worker.stopping)
        serverReusable = head.keepAlive && framing != .untilClose
        HTTPHeadWriter.writeResponse(head, from: bytes, requestVersion: request.version,
                                 keepAliveToClient: keepAliveToClient, into: &worker.scratch)
        appendToClient(worker.scratch)
        worker.scratch.removeAll(keepingCapacity: true)
        serverIn.consume(head.length)
        responseParser.reset()
        responseHeadDone = true
        responseBody = BodyProgress(framing)
        responseComplete = responseBody.isDone
        // The request cannot be replayed once a response has begun.
        serverOut.consume(serverOutSent)
        serverOutSent = 0
        return true
    }

    private func moveResponseBody(loop: EventLoop) -> Bool {
        guard !responseComplete else { return false }
        if serverIn.isEmpty {
            if serverEOF {
                if case .untilClose = responseBody {
                    responseComplete = true
                    serverReusable = false
                    return true
                }
                // Truncated: the server closed inside a framed body.
                abortExchange(.make("S", "D"), loop: loop)
            }
            return false
        }
        switch responseBody.take(from: serverIn.readable) {
        case .invalid:
            abortExchange(.make("P", "D"), loop: loop)
            return false
        case .body(let count, let done):
            appendToClient(UnsafeRawBufferPointer(rebasing: serverIn.readable.prefix(count)))
            serverIn.consume(count)
            if done { responseComplete = true }
            return count > 0 || done
        }
    }

    private func appendToClient(_ bytes: UnsafeRawBufferPointer) {
        clientOut.append(bytes)
        bytesToClient += bytes.count
        responseToClientStarted = true
    }

    private func appendToClient(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { appendToClient($0) }
    }

    // MARK: client output

    private func flushClient(loop: EventLoop) -> Bool {
        guard clientWritable, !clientOut.isEmpty else { return false }
        do {
            switch try Posix.write(clientFD, clientOut.readable) {
            case .wouldBlock:
                clientWritable = false
                return false
            case .processed(let n):
                clientOut.consume(n)
                lastClientIO = loop.now
                return true
            }
        } catch {
            if phase == .lingering { close(loop: loop); return false }
            abortExchange(.make("C", "D"), loop: loop)
            return false
        }
    }

    // MARK: ends of exchanges

    private func finishIfDone(loop: EventLoop) -> Bool {
        switch phase {
        case .lingering:
            if clientOut.isEmpty && !clientShutdown {
                Posix.shutdown(clientFD, .write)
                clientShutdown = true
            }
            return false
        case .exchanging:
            guard responseComplete, clientOut.isEmpty else { return false }
            if !request.bodyComplete {
                // The server answered before the body was all sent (a 413, a redirect):
                // the rest of the body is still coming and the connection cannot carry
                // another request reliably.
                keepAliveToClient = false
                serverReusable = false
            }
            log(loop: loop)
            dropServer(reusable: serverReusable && serverIn.isEmpty && !serverEOF, loop: loop)
            if keepAliveToClient && !clientEOF {
                phase = .awaitingRequest
                exchangeStartedAt = loop.now
                resetExchange()
                return true   // a pipelined request may already be waiting in clientIn
            }
            close(loop: loop)
            return false
        default:
            return false
        }
    }

    /// Forgets the exchange that just ended, so that an error or a log line for the next
    /// request on this connection never shows the previous one's server, status or bytes.
    private func resetExchange() {
        firstByteAt = 0
        headCompleteAt = 0
        connectedAt = -1
        responseHeadAt = -1
        status = 0
        bytesToClient = 0
        responseToClientStarted = false
        responseStarted = false
        responseHeadDone = false
        responseComplete = false
        server = nil
        serverIndex = -1
        attempts = 0
        termination = .normal
        requestLine.removeAll(keepingCapacity: true)
    }

    /// Answers with a canned error (if nothing was sent to the client yet), then closes.
    private func fail(_ error: ErrorResponse, termination: TerminationState, loop: EventLoop) {
        self.termination = termination
        dropServer(reusable: false, loop: loop)
        guard !responseToClientStarted else {
            log(loop: loop)
            close(loop: loop, abort: true)
            return
        }
        status = error.status
        clientOut.clear()
        clientOut.append(error.bytes)
        bytesToClient = error.bytes.count
        log(loop: loop)
        phase = .lingering
        lingerUntil = loop.now + HTTPExchangePolicy.linger
        clientIn.clear()
        advance(loop: loop)
    }

    /// Ends the exchange without an answer (a side failed mid-stream).
    private func abortExchange(_ termination: TerminationState, loop: EventLoop) {
        self.termination = termination
        if phase == .exchanging || phase == .tunnel { log(loop: loop) }
        close(loop: loop, abort: true)
    }

    private func close(loop: EventLoop, abort: Bool = false) {
        guard phase != .closed else { return }
        phase = .closed
        deadline = 0
        dropServer(reusable: false, loop: loop)
        if abort { Posix.abortOnClose(clientFD) }
        Posix.close(clientFD)
        worker.pool.give(clientIn)
        worker.pool.give(clientOut)
        worker.pool.give(serverIn)
        worker.pool.give(serverOut)
        worker.httpSessionEnded(self, loop: loop)
        loop.deregister(self)
    }

    // MARK: interest and timers

    private func updateInterest(loop: EventLoop) {
        let clientNeeds = !clientOut.isEmpty && !clientWritable
        if clientNeeds != clientWatchesOutput {
            clientWatchesOutput = clientNeeds
            try? loop.rewatch(clientFD, side: 0, events: clientNeeds ? [.readable, .readHangup, .writable] : [.readable, .readHangup], for: self)
        }
        guard serverFD >= 0 else { return }
        let serverNeeds = connecting || (serverOut.readableCount > serverOutSent && !serverWritable)
        if serverNeeds != serverWatchesOutput {
            serverWatchesOutput = serverNeeds
            try? loop.modifyOwned(serverFD, events: serverNeeds ? [.readable, .readHangup, .writable] : [.readable, .readHangup])
        }
    }

    private func updateDeadline(loop: EventLoop) {
        switch phase {
        case .awaitingRequest:
            if clientIn.isEmpty && requestCount > 0 {
                deadline = exchangeStartedAt + timeouts.httpKeepAlive
            } else {
                // The whole head must arrive within `timeout http-request`, counted from
                // the accept for a first request and from its first byte afterwards.
                deadline = (requestCount == 0 ? acceptedAt : max(firstByteAt, exchangeStartedAt)) + timeouts.httpRequest
            }
        case .exchanging:
            if connecting {
                deadline = connectStartedAt + timeouts.connect
            } else {
                var next = lastServerIO + timeouts.server
                if !request.bodyComplete || !clientOut.isEmpty {
                    next = min(next, lastClientIO + timeouts.client)
                }
                deadline = next
            }
        case .tunnel:
            deadline = min(lastClientIO + timeouts.client, lastServerIO + timeouts.server)
        case .lingering:
            deadline = lingerUntil
        case .closed:
            deadline = 0
        }
        loop.scheduleDeadline(for: self)
    }

    // MARK: log

    /// haproxy httplog: `%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc
    /// %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r`
    private func log(loop: EventLoop) {
        guard !worker.shared.quiet else { return }
        let log = worker.log
        let now = loop.now
        let start = firstByteAt > 0 ? firstByteAt : exchangeStartedAt
        log.append(peer)
        log.append(UInt8(ascii: " "))
        log.appendDate(wallMilliseconds: requestWall)
        log.append(UInt8(ascii: " "))
        log.append(frontend.nameBytes)
        log.append(UInt8(ascii: " "))
        log.append(worker.backendCounters[frontend.backendIndex].nameBytes)
        log.append(UInt8(ascii: "/"))
        if let server { log.append(server.nameBytes) } else { log.append("<NOSRV>" as StaticString) }
        log.append(UInt8(ascii: " "))
        log.append(headCompleteAt >= start && headCompleteAt > 0 ? Int((headCompleteAt - start) / 1_000_000) : -1)
        log.append("/0/" as StaticString)
        log.append(connectedAt >= 0 ? Int((connectedAt - connectStartedAt) / 1_000_000) : -1)
        log.append(UInt8(ascii: "/"))
        log.append(responseHeadAt >= 0 && connectedAt >= 0 ? Int((responseHeadAt - connectedAt) / 1_000_000) : -1)
        log.append(UInt8(ascii: "/"))
        log.append(Int((now - start) / 1_000_000))
        log.append(UInt8(ascii: " "))
        log.append(status == 0 ? -1 : status)
        log.append(UInt8(ascii: " "))
        log.append(bytesToClient)
        log.append(" - - " as StaticString)
        log.append(termination.cause)
        log.append(termination.phase)
        log.append("-- " as StaticString)
        log.append(worker.shared.active.load(ordering: .relaxed))
        log.append(UInt8(ascii: "/"))
        log.append(frontend.current.load(ordering: .relaxed))
        log.append(UInt8(ascii: "/"))
        log.append(worker.backendCounters[frontend.backendIndex].current.load(ordering: .relaxed))
        log.append(UInt8(ascii: "/"))
        log.append(server?.health.current.load(ordering: .relaxed) ?? 0)
        log.append(UInt8(ascii: "/"))
        log.append(max(0, attempts - 1))
        log.append(" 0/0 \"" as StaticString)
        log.append(requestLine)
        log.append(UInt8(ascii: "\""))
        log.endLine()
    }
}

/// Timeouts of an HTTP session, in ns.
struct HTTPTimeouts {
    var connect: Int64
    var client: Int64
    var server: Int64
    var httpRequest: Int64
    var httpKeepAlive: Int64

    init(frontend: Frontend, backend: BackendSettings) {
        connect = backend.connectTimeout
        server = backend.serverTimeout
        client = frontend.timeouts.client.nanoseconds
        httpRequest = frontend.timeouts.httpRequest.nanoseconds
        httpKeepAlive = frontend.timeouts.httpKeepAlive.nanoseconds
    }
}
