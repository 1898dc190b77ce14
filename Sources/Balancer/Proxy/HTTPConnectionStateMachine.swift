// The decisions of one HTTP-mode client connection, as a value with no I/O (hummingbird's
// HTTPConnectionStateHandler pattern, and TCPSessionStateMachine's twin). HTTPSession is
// the shell: it moves bytes, parses, and reports what happened here; it gets back the one
// thing to do next. Which request may be retried and where, which error a client sees,
// which timeout fired and what it means, whether a connection is kept alive: all of it is
// decided here and unit-tested with a manual clock (HTTPConnectionStateMachineTests).
//
// Times are monotonic nanoseconds handed in by the caller; the machine never reads a clock.

/// Timeouts of an HTTP session, in ns.
public struct HTTPTimeouts: Sendable, Equatable {
    public var connect: Int64
    public var client: Int64
    public var server: Int64
    public var httpRequest: Int64
    public var httpKeepAlive: Int64

    public init(connect: Int64, client: Int64, server: Int64, httpRequest: Int64, httpKeepAlive: Int64) {
        self.connect = connect
        self.client = client
        self.server = server
        self.httpRequest = httpRequest
        self.httpKeepAlive = httpKeepAlive
    }

    init(frontend: Frontend, backend: BackendSettings) {
        self.init(connect: backend.connectTimeout, client: frontend.timeouts.client.nanoseconds,
                  server: backend.serverTimeout, httpRequest: frontend.timeouts.httpRequest.nanoseconds,
                  httpKeepAlive: frontend.timeouts.httpKeepAlive.nanoseconds)
    }
}

/// What every connection of a frontend shares: its timeouts and its backend's retry
/// rules. One object per frontend and table, referenced by each connection instead of
/// copied into it (an idle connection's size is the memory it costs).
final class HTTPSessionSettings: Sendable {
    let timeouts: HTTPTimeouts
    let retry: RetryPolicy
    /// What each canned error sends (`errorfile`).
    let errorPages: ErrorPages

    init(timeouts: HTTPTimeouts, retry: RetryPolicy, errorPages: ErrorPages = .standard) {
        self.timeouts = timeouts
        self.retry = retry
        self.errorPages = errorPages
    }

    convenience init(frontend: Frontend, backend: BackendSettings) {
        self.init(timeouts: HTTPTimeouts(frontend: frontend, backend: backend),
                  retry: RetryPolicy(retries: backend.retries, redispatch: backend.redispatch),
                  errorPages: ErrorPages(frontend: frontend.errorFiles, backend: backend.errorFiles))
    }
}

struct HTTPConnectionStateMachine {
    enum Phase: Equatable {
        /// Waiting for (the rest of) a request head.
        case awaitingRequest
        /// A request is being forwarded and its response relayed.
        case exchanging
        /// After a 101 Switching Protocols: raw bytes both ways.
        case tunnel
        /// An error response is being flushed; the client's input is read and dropped for
        /// a moment, so that closing does not reset the connection before the client has
        /// read the response.
        case lingering
        case closed
    }

    enum Action: Equatable {
        case none
        /// Close any server connection, ask the balancer for a server (avoiding one) and
        /// connect to it, or take an idle connection to it.
        case connect(avoiding: Int?)
        /// Close any server connection and connect to the same server again.
        case reconnect(server: Int)
        /// Close the server connection, log, send this canned response, then linger.
        case respond(ErrorResponse)
        /// A routing rule answered the request itself (a redirect): close the server
        /// connection, log, send the response the shell prepared, then linger.
        case respondPrepared
        /// The 101 went to the client: from now on bytes flow both ways unparsed.
        case startTunnel
        /// Log the exchange, give the server connection back to the idle pool when
        /// `reuseServer` (else close it), then wait for the next request (`keepAlive`) or
        /// close the client connection.
        case finishExchange(reuseServer: Bool, keepAlive: Bool)
        /// Close everything; write the log line first when `log`, reset when `abort`.
        case close(log: Bool, abort: Bool)
    }

    /// The chosen backend's settings: the frontend's default backend until routing picks
    /// one for an exchange (`requestHead(_:settings:now:)`).
    var settings: HTTPSessionSettings
    var timeouts: HTTPTimeouts { settings.timeouts }
    var retry: RetryPolicy { settings.retry }

    private(set) var phase = Phase.awaitingRequest
    private(set) var request = HTTPExchangePolicy.Request()
    // Narrow integers: this struct is part of every idle connection.
    /// Attempts at sending the current request, counted from 1.
    var attempts: Int { Int(attemptCount) }
    private var attemptCount: Int32 = 0
    /// The server (index in the session's table) of the current attempt, -1 for none.
    var server: Int { Int(serverIndex) }
    private var serverIndex: Int32 = -1
    private(set) var serverReused = false
    private(set) var connecting = false
    /// A byte of the response arrived from the server: the request can no longer be sent
    /// elsewhere.
    private(set) var responseStarted = false
    private(set) var responseHeadDone = false
    private(set) var responseComplete = false
    /// A byte of the response was handed to the client: an error can no longer be shown.
    private(set) var responseToClientStarted = false
    var status: Int { Int(statusCode) }
    private var statusCode: Int16 = 0
    private(set) var keepAliveToClient = false
    private(set) var serverReusable = false
    private(set) var termination = TerminationState.normal
    var requestCount: Int { Int(requests) }
    private var requests: Int32 = 0
    /// The process is stopping (`softStop`): every response from now on closes.
    private(set) var stopping = false

    // Clocks of the current exchange (haproxy's %TR/%Tc/%Tr/%Ta come from these).
    let acceptedAt: Int64
    /// The accept, or the end of the previous exchange.
    private(set) var exchangeStartedAt: Int64
    /// First byte of the current request head; 0 before it.
    private(set) var firstByteAt: Int64 = 0
    private(set) var headCompleteAt: Int64 = 0
    private(set) var connectStartedAt: Int64 = 0
    private(set) var connectedAt: Int64 = -1
    private(set) var responseHeadAt: Int64 = -1
    private(set) var lastClientIO: Int64
    private(set) var lastServerIO: Int64
    private(set) var lingerUntil: Int64 = 0

    init(timeouts: HTTPTimeouts, retry: RetryPolicy, now: Int64) {
        self.init(settings: HTTPSessionSettings(timeouts: timeouts, retry: retry), now: now)
    }

    init(settings: HTTPSessionSettings, now: Int64) {
        self.settings = settings
        self.acceptedAt = now
        self.exchangeStartedAt = now
        self.lastClientIO = now
        self.lastServerIO = now
    }

    // MARK: client side

    mutating func clientRead(now: Int64) {
        if phase == .awaitingRequest && firstByteAt == 0 { firstByteAt = now }
        lastClientIO = now
    }

    mutating func clientWritten(now: Int64) { lastClientIO = now }

    /// A complete request head was parsed. `request.bodyComplete` says whether a body follows.
    mutating func requestHead(_ request: HTTPExchangePolicy.Request, now: Int64) -> Action {
        guard phase == .awaitingRequest else { return .none }
        requests &+= 1
        headCompleteAt = now
        if firstByteAt == 0 { firstByteAt = now }
        self.request = request
        phase = .exchanging
        attemptCount = 0
        serverIndex = -1
        statusCode = 0
        responseStarted = false
        responseHeadDone = false
        responseComplete = false
        responseToClientStarted = false
        connectedAt = -1
        responseHeadAt = -1
        termination = .normal
        lastServerIO = now
        return .connect(avoiding: nil)
    }

    /// A routing rule answers the request without a server: a deny or a missing route
    /// (`error`), or a redirect (`error` nil: the shell prepared the response). The
    /// connection closes after it, as after any response balancerd writes itself.
    mutating func requestAnswered(_ request: HTTPExchangePolicy.Request, status: Int, error: ErrorResponse?,
                                  termination: TerminationState, now: Int64) -> Action {
        guard phase == .awaitingRequest else { return .none }
        requests &+= 1
        headCompleteAt = now
        if firstByteAt == 0 { firstByteAt = now }
        self.request = request
        phase = .exchanging
        serverIndex = -1
        guard let error else {
            self.termination = termination
            statusCode = Int16(status)
            phase = .lingering
            lingerUntil = now + HTTPExchangePolicy.linger
            return .respondPrepared
        }
        return fail(error, termination, now: now)
    }

    /// The request head broke a rule of RFC 9112 or a limit.
    mutating func requestInvalid(_ error: HTTPParseError, now: Int64) -> Action {
        fail(error.requestErrorResponse, .make("P", "R"), now: now)
    }

    /// `count` more bytes of the request body are on their way to the server.
    mutating func requestBody(count: Int, complete: Bool, bufferedRequestBytes: Int) {
        request.bodyBytes += count
        if complete { request.bodyComplete = true }
        if bufferedRequestBytes > HTTPExchangePolicy.replayLimit { request.replayable = false }
    }

    /// The request body could not be read (bad chunk framing).
    mutating func requestBodyInvalid(now: Int64) -> Action {
        fail(.badRequest, .make("P", "D"), now: now)
    }

    /// The client's end of the stream: EOF, with `headPending` when part of a head had
    /// arrived. Before a request it is the normal end of a keep-alive connection.
    mutating func clientEOF(headPending: Bool, now: Int64) -> Action {
        switch phase {
        case .awaitingRequest:
            if headPending {
                termination = .make("C", "R")
                return closeNow(log: true, abort: false)
            }
            return closeNow(log: false, abort: false)
        case .exchanging:
            // A body cut short; a complete request may still get its response (the
            // client only half-closed).
            if !request.bodyComplete { return abortExchange(.make("C", "D")) }
            return .none
        case .lingering:
            return closeNow(log: false, abort: false)
        case .tunnel, .closed:
            return .none
        }
    }

    /// Reading from or writing to the client failed (reset, broken pipe).
    mutating func clientFailed() -> Action {
        switch phase {
        case .lingering: return closeNow(log: false, abort: false)
        case .closed: return .none
        default: return abortExchange(.make("C", phase == .awaitingRequest ? "R" : "D"))
        }
    }

    // MARK: server side

    /// The shell started an attempt on `server`: a new connection, or an idle one
    /// (`reused`), which counts as connected at once.
    mutating func connectStarted(server: Int, reused: Bool, now: Int64) {
        attemptCount += 1
        serverIndex = Int32(server)
        serverReused = reused
        responseStarted = false
        connectStartedAt = now
        if reused {
            connecting = false
            connectedAt = now
        } else {
            connecting = true
        }
    }

    /// The balancer has no usable server.
    mutating func noServer(now: Int64) -> Action {
        fail(.serviceUnavailable, .make("S", "C"), now: now)
    }

    mutating func connected(now: Int64) {
        connecting = false
        connectedAt = now
        lastServerIO = now
    }

    /// The connect was refused, unreachable, or did not finish within `timeout connect`.
    /// Nothing reached a server, so any method may be tried again.
    mutating func connectFailed(timedOut: Bool, now: Int64) -> Action {
        connecting = false
        switch retry.afterFailure(attempt: attempts, server: server) {
        case .anotherServer(let avoiding): return .connect(avoiding: avoiding)
        case .sameServer(let index): return .reconnect(server: index)
        case .giveUp: return fail(.serviceUnavailable, timedOut ? .make("s", "C") : .make("S", "C"), now: now)
        }
    }

    mutating func serverWritten(now: Int64) { lastServerIO = now }

    mutating func serverRead(now: Int64) {
        if phase == .exchanging { responseStarted = true }
        lastServerIO = now
    }

    /// The server connection broke (reset, or closed before the response was complete).
    mutating func serverFailed(now: Int64) -> Action {
        switch phase {
        case .tunnel:
            return abortExchange(.make("S", "D"))
        case .exchanging:
            break
        default:
            return .none
        }
        if !responseStarted {
            // Nothing came back. The method is idempotent and the whole request is still
            // buffered: send it again (haproxy's `retry-on conn-failure empty-response`).
            // An idle connection that the server had closed (the keep-alive race) says
            // nothing against the server: a new connection to it gets the request.
            let reused = serverReused
            guard HTTPExchangePolicy.mayResend(request, attempts: attempts, retries: retry.retries, reusedConnection: reused) else {
                return fail(.badGateway, .make("S", "H"), now: now)
            }
            if reused {
                // The race is not the server's failure: the new connection is not one
                // more attempt against `retries` either.
                attemptCount -= 1
                return .reconnect(server: server)
            }
            switch retry.afterFailure(attempt: attempts, server: server) {
            case .anotherServer(let avoiding): return .connect(avoiding: avoiding)
            case .sameServer(let index): return .reconnect(server: index)
            case .giveUp: return fail(.badGateway, .make("S", "H"), now: now)
            }
        }
        if !responseHeadDone { return fail(.badGateway, .make("S", "H"), now: now) }
        // Part of the response was already sent: all that is left is to cut the client off.
        return abortExchange(.make("S", "D"))
    }

    /// A 1xx other than 101 went by (forwarded to HTTP/1.1 clients by the shell).
    mutating func interimResponse() {}

    /// The final response head arrived.
    mutating func responseHead(status: Int, framing: BodyFraming, serverKeepAlive: Bool, now: Int64) -> Action {
        guard phase == .exchanging else { return .none }
        responseHeadAt = now
        statusCode = Int16(clamping: status)
        if status == 101 {
            guard request.upgrade else { return fail(.badGateway, .make("P", "H"), now: now) }
            responseHeadDone = true
            phase = .tunnel
            return .startTunnel
        }
        keepAliveToClient = HTTPExchangePolicy.keepAliveToClient(request: request, responseFraming: framing, stopping: stopping)
        serverReusable = serverKeepAlive && framing != .untilClose
        responseHeadDone = true
        if case .none = framing { responseComplete = true }
        if case .contentLength(0) = framing { responseComplete = true }
        return .none
    }

    /// The response head could not be parsed.
    mutating func responseInvalid(now: Int64) -> Action {
        fail(.badGateway, .make("P", "H"), now: now)
    }

    /// The server closed before the end of its response head.
    mutating func responseHeadTruncated(now: Int64) -> Action {
        fail(.badGateway, .make("S", "H"), now: now)
    }

    mutating func responseBodyInvalid() -> Action { abortExchange(.make("P", "D")) }

    /// The server closed inside a framed body.
    mutating func responseTruncated() -> Action { abortExchange(.make("S", "D")) }

    /// The end of the response body; `byClose` for a body delimited by the server's close.
    mutating func responseBodyComplete(byClose: Bool) {
        responseComplete = true
        if byClose { serverReusable = false }
    }

    /// Bytes of the response were handed to the client side.
    mutating func responseForwarded() { responseToClientStarted = true }

    /// The response is complete and all of it was written to the client.
    mutating func exchangeFlushed(clientEOF: Bool, now: Int64) -> Action {
        guard phase == .exchanging, responseComplete else { return .none }
        if !request.bodyComplete {
            // The server answered before the body was all sent (a 413, a redirect): the
            // rest is still coming and the connection cannot carry another request.
            keepAliveToClient = false
            serverReusable = false
        }
        let keepAlive = keepAliveToClient && !clientEOF
        if !keepAlive { phase = .closed }
        // The exchange's state stays readable until `readyForNextRequest`, for the log.
        return .finishExchange(reuseServer: serverReusable, keepAlive: keepAlive)
    }

    /// After `.finishExchange(keepAlive: true)` was carried out (and logged): wait for the
    /// next request on the same connection.
    mutating func readyForNextRequest(now: Int64) {
        guard phase == .exchanging else { return }
        phase = .awaitingRequest
        exchangeStartedAt = now
        resetExchange()
    }

    /// Both directions of a tunnel ended.
    mutating func tunnelFinished() -> Action { closeNow(log: true, abort: false) }

    // MARK: time

    /// When the shell should call `timerFired`.
    ///
    /// `serverReadPaused`: the shell stopped reading the server because the client has
    /// not taken what was read (backpressure).
    func deadline(clientInputPending: Bool, clientOutputPending: Bool, serverReadPaused: Bool = false) -> Int64 {
        switch phase {
        case .awaitingRequest:
            if !clientInputPending && requestCount > 0 {
                return exchangeStartedAt + timeouts.httpKeepAlive
            }
            // The whole head must arrive within `timeout http-request`, counted from the
            // accept for a first request and from its first byte afterwards.
            return (requestCount == 0 ? acceptedAt : max(firstByteAt, exchangeStartedAt)) + timeouts.httpRequest
        case .exchanging:
            if connecting { return connectStartedAt + timeouts.connect }
            // `timeout server` runs only while we wait on the server: not once its whole
            // response is in, nor while we stopped reading it because the client is slow
            // to take what we have (haproxy arms a side's timeout only while it may read).
            var next = responseComplete || serverReadPaused ? Int64.max : lastServerIO + timeouts.server
            if !request.bodyComplete || clientOutputPending {
                next = min(next, lastClientIO + timeouts.client)
            }
            return next == .max ? 0 : next
        case .tunnel:
            return min(lastClientIO + timeouts.client, lastServerIO + timeouts.server)
        case .lingering:
            return lingerUntil
        case .closed:
            return 0
        }
    }

    mutating func timerFired(now: Int64, clientInputPending: Bool, clientOutputPending: Bool,
                             serverReadPaused: Bool = false) -> Action {
        switch phase {
        case .awaitingRequest:
            guard now >= deadline(clientInputPending: clientInputPending, clientOutputPending: false) else { return .none }
            if !clientInputPending {
                // An idle keep-alive connection, or one that never said anything: close
                // quietly, as haproxy does.
                return closeNow(log: false, abort: false)
            }
            // Slowloris defence: the head did not arrive within `timeout http-request`.
            return fail(.requestTimeout, .make("c", "R"), now: now)
        case .exchanging:
            if connecting {
                if now >= connectStartedAt + timeouts.connect { return connectFailed(timedOut: true, now: now) }
                return .none
            }
            if !responseHeadDone && server >= 0 && now >= lastServerIO + timeouts.server {
                return fail(.gatewayTimeout, .make("s", "H"), now: now)
            }
            if now >= lastClientIO + timeouts.client && (!request.bodyComplete || clientOutputPending) {
                return abortExchange(.make("c", "D"))
            }
            if now >= lastServerIO + timeouts.server && server >= 0 && !responseComplete && !serverReadPaused {
                return abortExchange(.make("s", "D"))
            }
            return .none
        case .tunnel:
            let clientExpired = now >= lastClientIO + timeouts.client
            guard clientExpired || now >= lastServerIO + timeouts.server else { return .none }
            return abortExchange(.make(clientExpired ? "c" : "s", "D"))
        case .lingering:
            return now >= lingerUntil ? closeNow(log: false, abort: false) : .none
        case .closed:
            return .none
        }
    }

    // MARK: stopping

    /// Soft stop (SIGTERM, or the end of a handover): the process no longer accepts.
    /// Nothing closes now. A connection waiting for its next request may have a client
    /// sending it at this very moment: a close would cross it, and the client would see a
    /// reset for a request it had every right to send. So, as haproxy's
    /// `option idle-close-on-response`: the next response says `Connection: close` and
    /// the connection closes after it; one that stays idle ends at
    /// `timeout http-keep-alive` (the usual deadline) or when the grace period is over
    /// (`killed`), whichever comes first.
    mutating func softStop() -> Action {
        stopping = true
        return .none
    }

    /// The grace period is over. A connection idle between requests is closed quietly
    /// (FIN, as its keep-alive timeout would); anything under way is cut (RST).
    mutating func killed(clientInputPending: Bool = false) -> Action {
        guard phase != .closed else { return .none }
        if phase == .awaitingRequest && !clientInputPending {
            termination = .make("K", "R")
            return closeNow(log: false, abort: false)
        }
        // haproxy's second letter: where the session was when it was killed.
        let where_: Character
        switch phase {
        case .awaitingRequest: where_ = "R"
        case .exchanging where connecting: where_ = "C"
        case .exchanging where !responseHeadDone: where_ = "H"
        default: where_ = "D"
        }
        termination = .make("K", where_)
        return closeNow(log: phase == .exchanging || phase == .tunnel, abort: true)
    }

    // MARK: outcomes

    /// Answers with a canned error if nothing was sent to the client yet, else cuts the
    /// client off.
    private mutating func fail(_ error: ErrorResponse, _ termination: TerminationState, now: Int64) -> Action {
        self.termination = termination
        connecting = false
        if responseToClientStarted { return closeNow(log: true, abort: true) }
        statusCode = Int16(error.status)
        phase = .lingering
        lingerUntil = now + HTTPExchangePolicy.linger
        return .respond(error)
    }

    /// Ends the exchange without an answer (a side failed mid-stream).
    private mutating func abortExchange(_ termination: TerminationState) -> Action {
        self.termination = termination
        return closeNow(log: phase == .exchanging || phase == .tunnel, abort: true)
    }

    private mutating func closeNow(log: Bool, abort: Bool) -> Action {
        guard phase != .closed else { return .none }
        phase = .closed
        return .close(log: log, abort: abort)
    }

    /// Forgets the exchange that just ended, so that an error or a log line for the next
    /// request on this connection never shows the previous one's server, status or times.
    private mutating func resetExchange() {
        firstByteAt = 0
        headCompleteAt = 0
        connectedAt = -1
        responseHeadAt = -1
        statusCode = 0
        responseToClientStarted = false
        responseStarted = false
        responseHeadDone = false
        responseComplete = false
        serverIndex = -1
        attemptCount = 0
        termination = .normal
    }
}
