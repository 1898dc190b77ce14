import XCTest
@testable import Balancer

// HTTPConnectionStateMachine without sockets: a manual clock (plain nanoseconds that the
// test advances) and the events HTTPSession reports, in the order it reports them. Heads
// are built by the real HTTPHeadParser from real bytes, as the shell builds them, so the
// method, version, keep-alive, upgrade and framing the machine sees are the parser's.

private let second: Int64 = 1_000_000_000

/// Distinct values, so that a deadline names the timeout it came from.
private let timeouts = HTTPTimeouts(connect: 2 * second, client: 10 * second, server: 20 * second,
                                    httpRequest: 5 * second, httpKeepAlive: 3 * second)

/// One client connection, driven the way HTTPSession drives its machine.
private struct Connection {
    var m: HTTPConnectionStateMachine
    /// The manual clock. It starts far from 0: the machine uses 0 for "no first byte yet".
    var now: Int64 = 1_000 * second

    init(retries: Int = 3, redispatch: Bool = true, timeouts: HTTPTimeouts = timeouts) {
        m = HTTPConnectionStateMachine(timeouts: timeouts, retry: RetryPolicy(retries: retries, redispatch: redispatch),
                                       now: now)
    }

    mutating func advance(_ ns: Int64) { now += ns }

    func deadline(input: Bool = false, output: Bool = false) -> Int64 {
        m.deadline(clientInputPending: input, clientOutputPending: output)
    }

    /// The loop's timer: moves the clock to `at` and reports it.
    mutating func fire(at: Int64, input: Bool = false, output: Bool = false) -> HTTPConnectionStateMachine.Action {
        now = at
        return m.timerFired(now: now, clientInputPending: input, clientOutputPending: output)
    }

    /// Bytes arrived from the client (readClient).
    mutating func clientBytes() { m.clientRead(now: now) }

    /// A whole request head arrived in one read: readClient, then parseRequest and
    /// startExchange.
    mutating func request(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> HTTPConnectionStateMachine.Action {
        m.clientRead(now: now)
        guard case .complete(let head) = parse(text, .request) else {
            XCTFail("not a complete request head: \(text)", file: file, line: line)
            return .none
        }
        var request = HTTPExchangePolicy.Request(head: head)
        request.bodyComplete = BodyProgress(head.framing).isDone
        return m.requestHead(request, now: now)
    }

    /// An attempt on `server` (connect(to:)): a new connection that completes at once,
    /// or an idle one from the pool; then the request goes out (flushServer).
    mutating func attach(_ server: Int, reused: Bool = false) {
        m.connectStarted(server: server, reused: reused, now: now)
        if !reused { m.connected(now: now) }
        m.serverWritten(now: now)
    }

    /// A response head arrived from the server (readServer, then parseResponse and
    /// startResponse): an interim one is passed on to an HTTP/1.1 client, a final one is
    /// reported and, unless it is refused, written for the client.
    mutating func responseHead(_ text: String, stopping: Bool = false,
                               file: StaticString = #filePath, line: UInt = #line) -> HTTPConnectionStateMachine.Action {
        m.serverRead(now: now)
        guard case .complete(let head) = parse(text, .response) else {
            XCTFail("not a complete response head: \(text)", file: file, line: line)
            return .none
        }
        if head.isInformational {
            if m.request.version == .http11 { m.responseForwarded() }
            m.interimResponse()
            return .none
        }
        // The process stopping: the shell has told every session (softStop) by then.
        if stopping { _ = m.softStop() }
        let action = m.responseHead(status: head.status, framing: head.responseFraming(requestMethod: m.request.method),
                                    serverKeepAlive: head.keepAlive, now: now)
        if case .respond = action { return action }
        m.responseForwarded()
        return action
    }

    /// Body bytes of the response arrived and were put out for the client (moveResponseBody).
    mutating func responseBody(complete: Bool, byClose: Bool = false) {
        m.serverRead(now: now)
        m.responseForwarded()
        if complete { m.responseBodyComplete(byClose: byClose) }
    }

    /// The client took everything (flushClient), then finishIfDone.
    mutating func flushed(clientEOF: Bool = false) -> HTTPConnectionStateMachine.Action {
        m.clientWritten(now: now)
        return m.exchangeFlushed(clientEOF: clientEOF, now: now)
    }

    /// A whole keep-alive exchange of a GET with a small response, served by `server`.
    mutating func exchange(server: Int = 0, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(request("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), .connect(avoiding: nil), file: file, line: line)
        attach(server)
        XCTAssertEqual(responseHead("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"), .none, file: file, line: line)
        responseBody(complete: true)
        XCTAssertEqual(flushed(), .finishExchange(reuseServer: true, keepAlive: true), file: file, line: line)
        m.readyForNextRequest(now: now)
    }
}

private func parse(_ text: String, _ kind: HTTPHeadParser.Kind, limits: HTTPHeadParser.Limits = .init()) -> HTTPHeadParser.Outcome {
    var parser = HTTPHeadParser(kind: kind, limits: limits)
    return Array(text.utf8).withUnsafeBytes { parser.parse($0) }
}

private func parseError(_ text: String, limits: HTTPHeadParser.Limits = .init(),
                        file: StaticString = #filePath, line: UInt = #line) -> HTTPParseError {
    guard case .invalid(let error) = parse(text, .request, limits: limits) else {
        XCTFail("the parser accepted \(text.debugDescription)", file: file, line: line)
        return .badRequestLine
    }
    return error
}

final class HTTPConnectionStateMachineTests: XCTestCase {
    typealias Action = HTTPConnectionStateMachine.Action

    // MARK: timeout http-request and http-keep-alive

    func testFirstRequestHeadMustArriveWithinHTTPRequestTimeoutCountedFromAccept() {
        var c = Connection()
        let accepted = c.now
        c.advance(4 * second)
        c.clientBytes()   // "GET / HT": slowloris sends a few bytes and waits
        XCTAssertEqual(c.deadline(input: true), accepted + timeouts.httpRequest, "counted from the accept, not the first byte")
        XCTAssertEqual(c.fire(at: accepted + timeouts.httpRequest - 1, input: true), .none)
        XCTAssertEqual(c.m.phase, .awaitingRequest)
        XCTAssertEqual(c.fire(at: accepted + timeouts.httpRequest, input: true), .respond(.requestTimeout))
        XCTAssertEqual(c.m.status, 408)
        XCTAssertEqual(c.m.termination.description, "cR")
        XCTAssertEqual(c.m.phase, .lingering)
    }

    func testConnectionThatNeverSendsAnythingClosesQuietlyAtHTTPRequestTimeout() {
        var c = Connection()
        XCTAssertEqual(c.deadline(), c.now + timeouts.httpRequest)
        XCTAssertEqual(c.fire(at: c.now + timeouts.httpRequest), .close(log: false, abort: false))
        XCTAssertEqual(c.m.termination.description, "--")
        XCTAssertEqual(c.m.phase, .closed)
        XCTAssertEqual(c.deadline(), 0, "a closed connection has no timer")
    }

    func testIdleKeepAliveConnectionClosesQuietlyAfterHTTPKeepAlive() {
        var c = Connection()
        c.exchange()
        let idleSince = c.now
        XCTAssertEqual(c.m.phase, .awaitingRequest)
        XCTAssertEqual(c.deadline(), idleSince + timeouts.httpKeepAlive)
        XCTAssertEqual(c.fire(at: idleSince + timeouts.httpKeepAlive - 1), .none)
        XCTAssertEqual(c.fire(at: idleSince + timeouts.httpKeepAlive), .close(log: false, abort: false))
        XCTAssertEqual(c.m.phase, .closed)
    }

    func testLaterRequestHeadIsTimedFromItsFirstByte() {
        var c = Connection()
        c.exchange()
        let idleSince = c.now
        c.advance(2 * second)   // within http-keep-alive
        c.clientBytes()
        let firstByte = c.now
        XCTAssertEqual(c.deadline(input: true), firstByte + timeouts.httpRequest)
        XCTAssertGreaterThan(c.deadline(input: true), idleSince + timeouts.httpKeepAlive,
                             "a request that started is no longer held to http-keep-alive")
        XCTAssertEqual(c.fire(at: idleSince + timeouts.httpKeepAlive, input: true), .none)
        XCTAssertEqual(c.fire(at: firstByte + timeouts.httpRequest, input: true), .respond(.requestTimeout))
        XCTAssertEqual(c.m.termination.description, "cR")
        XCTAssertEqual(c.m.status, 408)
    }

    func testPipelinedRequestAlreadyBufferedIsTimedFromTheEndOfThePreviousExchange() {
        var c = Connection()
        c.exchange()
        // The next head was read along with the previous request: no read reports it.
        XCTAssertEqual(c.deadline(input: true), c.now + timeouts.httpRequest)
    }

    // MARK: timeout connect, server, client

    func testConnectTimeoutIsRetriedThenAnswered503sC() {
        var c = Connection(retries: 1, redispatch: true)
        XCTAssertEqual(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), .connect(avoiding: nil))
        c.m.connectStarted(server: 0, reused: false, now: c.now)
        let started = c.now
        XCTAssertTrue(c.m.connecting)
        XCTAssertEqual(c.deadline(), started + timeouts.connect, "only the connect timeout runs while connecting")
        XCTAssertEqual(c.fire(at: started + timeouts.connect - 1), .none)
        XCTAssertEqual(c.fire(at: started + timeouts.connect), .connect(avoiding: 0))
        XCTAssertFalse(c.m.connecting)

        c.m.connectStarted(server: 1, reused: false, now: c.now)
        XCTAssertEqual(c.deadline(), c.now + timeouts.connect)
        XCTAssertEqual(c.fire(at: c.now + timeouts.connect), .respond(.serviceUnavailable))
        XCTAssertEqual(c.m.status, 503)
        XCTAssertEqual(c.m.termination.description, "sC")
        XCTAssertEqual(c.m.attempts, 2)
        XCTAssertEqual(c.m.phase, .lingering)
    }

    func testServerTimeoutBeforeTheResponseHeadIs504sH() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.advance(second)
        c.attach(0)
        let sent = c.now
        XCTAssertEqual(c.deadline(), sent + timeouts.server, "a complete request waits on the server only")
        XCTAssertEqual(c.fire(at: sent + timeouts.server - 1), .none)
        XCTAssertEqual(c.fire(at: sent + timeouts.server), .respond(.gatewayTimeout))
        XCTAssertEqual(c.m.status, 504)
        XCTAssertEqual(c.m.termination.description, "sH")
    }

    func testServerTimeoutDuringTheResponseBodyAbortssD() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"), .none)
        c.advance(second)
        c.responseBody(complete: false)
        let lastRead = c.now
        c.m.clientWritten(now: c.now)   // the client keeps up
        XCTAssertEqual(c.deadline(), lastRead + timeouts.server)
        XCTAssertEqual(c.fire(at: lastRead + timeouts.server - 1), .none)
        XCTAssertEqual(c.fire(at: lastRead + timeouts.server), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "sD")
        XCTAssertEqual(c.m.status, 200, "the log shows the status the client already has")
    }

    func testClientTimeoutWhileTheRequestBodyIsSentAbortscD() {
        var c = Connection()
        XCTAssertEqual(c.request("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"), .connect(avoiding: nil))
        XCTAssertFalse(c.m.request.bodyComplete)
        c.attach(0)
        c.advance(second)
        c.clientBytes()
        c.m.requestBody(count: 40, complete: false, bufferedRequestBytes: 90)
        c.m.serverWritten(now: c.now)
        let lastClientRead = c.now
        XCTAssertEqual(c.deadline(), lastClientRead + timeouts.client)
        XCTAssertEqual(c.fire(at: lastClientRead + timeouts.client - 1), .none)
        XCTAssertEqual(c.fire(at: lastClientRead + timeouts.client), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "cD")
    }

    func testClientTimeoutWhileResponseOutputIsPendingAbortscD() {
        var c = Connection()
        _ = c.request("GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"), .none)
        c.m.clientWritten(now: c.now)
        let lastWrite = c.now
        c.advance(5 * second)
        c.responseBody(complete: false)   // the server keeps sending, the client stopped reading
        XCTAssertEqual(c.deadline(output: true), lastWrite + timeouts.client)
        XCTAssertEqual(c.deadline(output: false), c.now + timeouts.server,
                       "without pending output the client is not waited on")
        XCTAssertEqual(c.fire(at: lastWrite + timeouts.client, output: true), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "cD")
    }

    /// A complete response waits only on the client: the server has nothing left to do, so
    /// `timeout server` must not run out on it, and a client that stops reading is a client
    /// timeout (haproxy: cD after `timeout client`). Typical configurations use the same
    /// value for both timeouts.
    func testSlowClientAfterACompleteResponseIsAClientTimeout() {
        let same = HTTPTimeouts(connect: 2 * second, client: 10 * second, server: 10 * second,
                                httpRequest: 5 * second, httpKeepAlive: 3 * second)
        var c = Connection(timeouts: same)
        _ = c.request("GET /page HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n"), .none)
        c.responseBody(complete: true)   // the whole response is in clientOut
        let serverDone = c.now
        c.advance(3 * second)
        c.m.clientWritten(now: c.now)   // the client reads a part, then stalls: no exchangeFlushed
        let lastWrite = c.now
        XCTAssertEqual(c.deadline(output: true), lastWrite + same.client)
        XCTAssertEqual(c.fire(at: serverDone + same.server, output: true), .none,
                       "the server finished its response: timeout server does not apply")
        XCTAssertEqual(c.m.phase, .exchanging)
        XCTAssertEqual(c.fire(at: lastWrite + same.client, output: true), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "cD")
    }

    // MARK: tunnel timeouts

    private func tunnel() -> Connection {
        var c = Connection()
        XCTAssertEqual(c.request("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
                       .connect(avoiding: nil))
        XCTAssertTrue(c.m.request.upgrade)
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
                       .startTunnel)
        return c
    }

    func testTunnelClientTimeoutAbortscD() {
        var c = tunnel()
        let start = c.now
        c.advance(8 * second)
        c.m.serverRead(now: c.now)   // the server talks, nothing moves to or from the client
        XCTAssertEqual(c.deadline(), start + timeouts.client)
        XCTAssertEqual(c.fire(at: start + timeouts.client - 1), .none)
        XCTAssertEqual(c.fire(at: start + timeouts.client), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "cD")
    }

    func testTunnelServerTimeoutAbortssD() {
        var c = tunnel()
        let start = c.now
        for _ in 0..<4 {   // the client talks every 6 s; the server never answers
            c.advance(6 * second)
            c.clientBytes()
        }
        XCTAssertEqual(c.deadline(), start + timeouts.server)
        XCTAssertEqual(c.fire(at: start + timeouts.server - 1), .none)
        XCTAssertEqual(c.fire(at: start + timeouts.server), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "sD")
    }

    // MARK: linger

    func testLingerAfterAnErrorEndsWithAQuietClose() {
        var c = Connection()
        let error = parseError("GET / HTTP/1.1\r\n\r\n")
        XCTAssertEqual(c.m.requestInvalid(error, now: c.now), .respond(.badRequest))
        let answered = c.now
        XCTAssertEqual(c.m.phase, .lingering)
        XCTAssertEqual(c.deadline(), answered + HTTPExchangePolicy.linger)
        XCTAssertEqual(c.fire(at: answered + HTTPExchangePolicy.linger - 1), .none)
        XCTAssertEqual(c.fire(at: answered + HTTPExchangePolicy.linger), .close(log: false, abort: false),
                       "the error was logged when it was sent")
        XCTAssertEqual(c.m.phase, .closed)
    }

    func testLingerEndsWhenTheClientCloses() {
        var c = Connection()
        XCTAssertEqual(c.m.requestInvalid(parseError("GET / HTTP/1.1\r\n\r\n"), now: c.now), .respond(.badRequest))
        XCTAssertEqual(c.m.clientEOF(headPending: false, now: c.now), .close(log: false, abort: false))
        XCTAssertEqual(c.m.termination.description, "PR", "the linger does not change what was logged")

        var d = Connection()
        XCTAssertEqual(d.m.requestInvalid(parseError("GET / HTTP/1.1\r\n\r\n"), now: d.now), .respond(.badRequest))
        XCTAssertEqual(d.m.clientFailed(), .close(log: false, abort: false))
    }

    // MARK: retries

    func testConnectFailuresRetryAnyMethodOnAnotherServerWithRedispatch() {
        var c = Connection(retries: 2, redispatch: true)
        XCTAssertEqual(c.request("POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"), .connect(avoiding: nil))
        for server in 0..<2 {
            c.m.connectStarted(server: server, reused: false, now: c.now)
            XCTAssertEqual(c.m.connectFailed(timedOut: false, now: c.now), .connect(avoiding: server),
                           "nothing reached a server: even a POST is tried again, elsewhere")
        }
        c.m.connectStarted(server: 2, reused: false, now: c.now)
        XCTAssertEqual(c.m.connectFailed(timedOut: false, now: c.now), .respond(.serviceUnavailable))
        XCTAssertEqual(c.m.attempts, 3, "retries 2: three attempts in all")
        XCTAssertEqual(c.m.termination.description, "SC")
        XCTAssertEqual(c.m.status, 503)
    }

    func testWithoutRedispatchConnectRetriesStayOnTheSameServer() {
        var c = Connection(retries: 2, redispatch: false)
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        for _ in 0..<2 {
            c.m.connectStarted(server: 3, reused: false, now: c.now)
            XCTAssertEqual(c.m.connectFailed(timedOut: false, now: c.now), .reconnect(server: 3))
        }
        c.m.connectStarted(server: 3, reused: false, now: c.now)
        XCTAssertEqual(c.m.connectFailed(timedOut: false, now: c.now), .respond(.serviceUnavailable))
        XCTAssertEqual(c.m.termination.description, "SC")
    }

    func testNoServerAtAllIs503SC() {
        var c = Connection()
        XCTAssertEqual(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), .connect(avoiding: nil))
        XCTAssertEqual(c.m.noServer(now: c.now), .respond(.serviceUnavailable))
        XCTAssertEqual(c.m.status, 503)
        XCTAssertEqual(c.m.termination.description, "SC")
        XCTAssertEqual(c.m.attempts, 0)
        XCTAssertEqual(c.m.phase, .lingering)
    }

    func testEmptyResponseOnAFreshConnectionResendsAnIdempotentRequest() {
        var c = Connection(retries: 1, redispatch: true)
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.m.serverFailed(now: c.now), .connect(avoiding: 0))
        c.attach(1)
        XCTAssertEqual(c.m.serverFailed(now: c.now), .respond(.badGateway), "retries spent")
        XCTAssertEqual(c.m.termination.description, "SH")
        XCTAssertEqual(c.m.status, 502)

        var same = Connection(retries: 1, redispatch: false)
        _ = same.request("DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n")
        same.attach(5)
        XCTAssertEqual(same.m.serverFailed(now: same.now), .reconnect(server: 5))
    }

    func testEmptyResponseToAPOSTIs502SH() {
        var c = Connection(retries: 3, redispatch: true)
        _ = c.request("POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
        c.attach(0)
        c.m.requestBody(count: 3, complete: true, bufferedRequestBytes: 60)
        XCTAssertEqual(c.m.serverFailed(now: c.now), .respond(.badGateway), "the server may have acted on it")
        XCTAssertEqual(c.m.termination.description, "SH")
        XCTAssertEqual(c.m.attempts, 1)
    }

    func testEmptyResponseToARequestTooLargeToReplayIs502SH() {
        var c = Connection(retries: 3, redispatch: true)
        _ = c.request("PUT /file HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        c.attach(0)
        c.m.requestBody(count: 20_000, complete: false, bufferedRequestBytes: HTTPExchangePolicy.replayLimit + 1)
        XCTAssertFalse(c.m.request.replayable)
        XCTAssertEqual(c.m.serverFailed(now: c.now), .respond(.badGateway))
        XCTAssertEqual(c.m.termination.description, "SH")
    }

    func testKeepAliveRaceOnAReusedConnectionReconnectsToTheSameServerWithoutSpendingARetry() {
        // retries 0: a fresh connection that fails empty gets no second chance...
        var fresh = Connection(retries: 0, redispatch: true)
        _ = fresh.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        fresh.attach(2)
        XCTAssertEqual(fresh.m.serverFailed(now: fresh.now), .respond(.badGateway))

        // ...but an idle connection the server had closed says nothing against the server.
        var c = Connection(retries: 0, redispatch: true)
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(2, reused: true)
        XCTAssertTrue(c.m.serverReused)
        XCTAssertFalse(c.m.connecting, "an idle connection counts as connected at once")
        XCTAssertEqual(c.m.serverFailed(now: c.now), .reconnect(server: 2), "the same server, even with redispatch")
        c.attach(2)
        XCTAssertEqual(c.m.attempts, 1, "the race is not an attempt against retries")
        XCTAssertEqual(c.m.serverFailed(now: c.now), .respond(.badGateway), "only one extra attempt")
        XCTAssertEqual(c.m.termination.description, "SH")
    }

    func testConnectRefusedAfterAKeepAliveRaceStillGetsItsRetry() {
        var c = Connection(retries: 1, redispatch: false)
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(1, reused: true)
        XCTAssertEqual(c.m.serverFailed(now: c.now), .reconnect(server: 1))
        c.m.connectStarted(server: 1, reused: false, now: c.now)
        XCTAssertEqual(c.m.connectFailed(timedOut: false, now: c.now), .reconnect(server: 1),
                       "retries 1: the refused connect is the first attempt, so one retry is left")
        c.m.connectStarted(server: 1, reused: false, now: c.now)
        XCTAssertEqual(c.m.connectFailed(timedOut: false, now: c.now), .respond(.serviceUnavailable))
        XCTAssertEqual(c.m.termination.description, "SC")
    }

    func testKeepAliveRaceStillObeysTheMethodRule() {
        var c = Connection(retries: 3, redispatch: true)
        _ = c.request("POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        XCTAssertTrue(c.m.request.bodyComplete)
        c.attach(1, reused: true)
        XCTAssertEqual(c.m.serverFailed(now: c.now), .respond(.badGateway))
        XCTAssertEqual(c.m.termination.description, "SH")
    }

    func testServerFailingAfterTheResponseStartedIsNeverRetried() {
        // A part of the head came back: 502 SH, although GET could be resent.
        var c = Connection(retries: 3, redispatch: true)
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        c.m.serverRead(now: c.now)   // "HTTP/1.1 2"
        XCTAssertTrue(c.m.responseStarted)
        XCTAssertEqual(c.m.serverFailed(now: c.now), .respond(.badGateway))
        XCTAssertEqual(c.m.termination.description, "SH")
        XCTAssertEqual(c.m.attempts, 1)

        // The head went to the client: only the abort is left.
        var d = Connection(retries: 3, redispatch: true)
        _ = d.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        d.attach(0)
        XCTAssertEqual(d.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"), .none)
        d.responseBody(complete: false)
        XCTAssertEqual(d.m.serverFailed(now: d.now), .close(log: true, abort: true))
        XCTAssertEqual(d.m.termination.description, "SD")
        XCTAssertEqual(d.m.status, 200)
    }

    // MARK: pipelining order

    func testTheNextRequestStartsAFreshExchange() {
        var c = Connection(retries: 3, redispatch: true)
        XCTAssertEqual(c.request("GET /a HTTP/1.1\r\nHost: a\r\n\r\n"), .connect(avoiding: nil))
        c.m.connectStarted(server: 0, reused: false, now: c.now)
        XCTAssertEqual(c.m.connectFailed(timedOut: false, now: c.now), .connect(avoiding: 0))
        c.attach(1)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), .none)
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: true, keepAlive: true))
        // Still readable for the log line that the shell writes now.
        XCTAssertEqual(c.m.status, 200)
        XCTAssertEqual(c.m.attempts, 2)
        XCTAssertEqual(c.m.server, 1)
        XCTAssertEqual(c.m.phase, .exchanging)

        c.advance(second)
        c.m.readyForNextRequest(now: c.now)
        XCTAssertEqual(c.m.phase, .awaitingRequest)
        XCTAssertEqual(c.m.status, 0)
        XCTAssertEqual(c.m.attempts, 0)
        XCTAssertEqual(c.m.server, -1)
        XCTAssertEqual(c.m.termination, .normal)
        XCTAssertEqual(c.m.exchangeStartedAt, c.now)
        XCTAssertEqual(c.m.requestCount, 1)

        XCTAssertEqual(c.request("DELETE /b HTTP/1.1\r\nHost: a\r\n\r\n"), .connect(avoiding: nil),
                       "a new request is balanced afresh, avoiding nothing")
        XCTAssertEqual(c.m.requestCount, 2)
        XCTAssertEqual(c.m.request.method, .delete)
        XCTAssertFalse(c.m.responseStarted)
        XCTAssertFalse(c.m.responseHeadDone)
        XCTAssertFalse(c.m.responseComplete)
        XCTAssertFalse(c.m.responseToClientStarted)
        c.attach(2)
        XCTAssertEqual(c.m.attempts, 1)
        XCTAssertEqual(c.m.server, 2)
        // A failure now is about this request alone: a canned answer is still possible.
        XCTAssertEqual(c.fire(at: c.now + timeouts.server), .respond(.gatewayTimeout))
        XCTAssertEqual(c.m.termination.description, "sH")
    }

    func testARequestHeadWhileExchangingIsIgnored() {
        var c = Connection()
        _ = c.request("GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.request("POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n"), .none)
        XCTAssertEqual(c.m.requestCount, 1)
        XCTAssertEqual(c.m.request.method, .get)
        XCTAssertEqual(c.m.attempts, 1)
        XCTAssertEqual(c.m.server, 0)
    }

    func testTheExchangeIsNotFinishedBeforeTheResponseIsComplete() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.flushed(), .none, "no response yet")
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), .none)
        XCTAssertFalse(c.m.responseComplete)
        XCTAssertEqual(c.flushed(), .none, "the body is still coming")
        c.responseBody(complete: true)
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: true, keepAlive: true))
    }

    func testResponsesWithoutABodyCompleteWithTheirHead() {
        for (method, response) in [("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"),
                                   ("GET", "HTTP/1.1 204 No Content\r\n\r\n"),
                                   ("GET", "HTTP/1.1 304 Not Modified\r\n\r\n"),
                                   ("GET", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")] {
            var c = Connection()
            _ = c.request("\(method) / HTTP/1.1\r\nHost: a\r\n\r\n")
            c.attach(0)
            XCTAssertEqual(c.responseHead(response), .none)
            XCTAssertTrue(c.m.responseComplete, "\(method) \(response.debugDescription)")
            XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: true, keepAlive: true))
        }
    }

    // MARK: 100-continue

    func testInterimResponseDoesNotCompleteTheExchange() {
        var c = Connection()
        _ = c.request("POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 100 Continue\r\n\r\n"), .none)
        XCTAssertEqual(c.m.phase, .exchanging)
        XCTAssertEqual(c.m.status, 0)
        XCTAssertFalse(c.m.responseHeadDone)
        XCTAssertFalse(c.m.responseComplete)
        XCTAssertTrue(c.m.responseStarted, "after a 100 the request can no longer be sent elsewhere")
        XCTAssertEqual(c.flushed(), .none)

        c.advance(second)
        c.clientBytes()
        c.m.requestBody(count: 5, complete: true, bufferedRequestBytes: 80)
        c.m.serverWritten(now: c.now)
        XCTAssertEqual(c.responseHead("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"), .none)
        XCTAssertEqual(c.m.status, 201)
        XCTAssertTrue(c.m.responseComplete)
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: true, keepAlive: true))
    }

    func testAFailureAfterAForwardedInterimResponseClosesInsteadOfAnswering() {
        var c = Connection()
        _ = c.request("POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 100 Continue\r\n\r\n"), .none)
        XCTAssertTrue(c.m.responseToClientStarted)
        c.m.requestBody(count: 5, complete: true, bufferedRequestBytes: 80)
        // No final response in time: a 504 would be read as the answer's continuation.
        XCTAssertEqual(c.fire(at: c.now + timeouts.server), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "sH")
        XCTAssertEqual(c.m.phase, .closed)

        var d = Connection()
        _ = d.request("POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        d.attach(0)
        _ = d.responseHead("HTTP/1.1 100 Continue\r\n\r\n")
        XCTAssertEqual(d.m.serverFailed(now: d.now), .close(log: true, abort: true))
        XCTAssertEqual(d.m.termination.description, "SH")
    }

    // MARK: upgrade

    func testA101ToAnUpgradeRequestStartsATunnel() {
        var c = tunnel()
        XCTAssertEqual(c.m.phase, .tunnel)
        XCTAssertEqual(c.m.status, 101)
        XCTAssertEqual(c.deadline(), c.now + timeouts.client)
        XCTAssertEqual(c.m.clientEOF(headPending: false, now: c.now), .none, "a half-close travels through the tunnel")
        XCTAssertEqual(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), .none, "bytes in a tunnel are no requests")
        XCTAssertEqual(c.m.tunnelFinished(), .close(log: true, abort: false))
        XCTAssertEqual(c.m.termination.description, "--")
        XCTAssertEqual(c.m.phase, .closed)
    }

    func testATunnelSideThatFailsAbortsTheOther() {
        var c = tunnel()
        XCTAssertEqual(c.m.serverFailed(now: c.now), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "SD")

        var d = tunnel()
        XCTAssertEqual(d.m.clientFailed(), .close(log: true, abort: true))
        XCTAssertEqual(d.m.termination.description, "CD")
    }

    func testA101WithoutAnUpgradeRequestIs502PH() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        XCTAssertFalse(c.m.request.upgrade)
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
                       .respond(.badGateway))
        XCTAssertEqual(c.m.status, 502)
        XCTAssertEqual(c.m.termination.description, "PH")
        XCTAssertEqual(c.m.phase, .lingering)
    }

    func testAnUpgradeRequestIsNeverResent() {
        var c = Connection(retries: 3, redispatch: true)
        _ = c.request("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.m.serverFailed(now: c.now), .respond(.badGateway))
        XCTAssertEqual(c.m.termination.description, "SH")
    }

    // MARK: error statuses

    func testInvalidRequestHeadsAreAnsweredWithTheirStatusAndPR() {
        let cases: [(String, HTTPHeadParser.Limits, ErrorResponse)] = [
            ("GET / HTTP/1.1\r\n\r\n", .init(), .badRequest),                                    // no Host
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", .init(), .badRequest),
            ("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", .init(), .methodNotAllowed),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + String(repeating: "x", count: 200), .init(maxHeadBytes: 64), .headerFieldsTooLarge),
            ("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", .init(maxFields: 2), .headerFieldsTooLarge),
        ]
        for (text, limits, expected) in cases {
            var c = Connection()
            c.clientBytes()
            let action = c.m.requestInvalid(parseError(text, limits: limits), now: c.now)
            XCTAssertEqual(action, .respond(expected), text.debugDescription)
            XCTAssertEqual(c.m.status, expected.status)
            XCTAssertEqual(c.m.termination.description, "PR")
            XCTAssertEqual(c.m.phase, .lingering)
        }
        XCTAssertEqual([400, 405, 431], [ErrorResponse.badRequest, .methodNotAllowed, .headerFieldsTooLarge].map(\.status))
    }

    func testABadChunkedRequestBodyIs400PD() {
        var c = Connection()
        _ = c.request("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.attach(0)
        var body = BodyProgress(.chunked)
        let step = Array("zz\r\nhello\r\n".utf8).withUnsafeBytes { body.take(from: $0) }
        guard case .invalid = step else { return XCTFail("the decoder accepted a bad chunk size") }
        XCTAssertEqual(c.m.requestBodyInvalid(now: c.now), .respond(.badRequest))
        XCTAssertEqual(c.m.status, 400)
        XCTAssertEqual(c.m.termination.description, "PD")
    }

    func testBadResponsesAre502() {
        var invalid = Connection()
        _ = invalid.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        invalid.attach(0)
        invalid.m.serverRead(now: invalid.now)
        XCTAssertEqual(invalid.m.responseInvalid(now: invalid.now), .respond(.badGateway))
        XCTAssertEqual(invalid.m.termination.description, "PH")

        var truncated = Connection()
        _ = truncated.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        truncated.attach(0)
        truncated.m.serverRead(now: truncated.now)
        XCTAssertEqual(truncated.m.responseHeadTruncated(now: truncated.now), .respond(.badGateway))
        XCTAssertEqual(truncated.m.termination.description, "SH")
        XCTAssertEqual(truncated.m.status, 502)
    }

    func testBadResponseBodiesAbortAfterTheHeadWentOut() {
        var cut = Connection()
        _ = cut.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        cut.attach(0)
        _ = cut.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        XCTAssertEqual(cut.m.responseTruncated(), .close(log: true, abort: true))
        XCTAssertEqual(cut.m.termination.description, "SD")

        var bad = Connection()
        _ = bad.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        bad.attach(0)
        _ = bad.responseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        XCTAssertEqual(bad.m.responseBodyInvalid(), .close(log: true, abort: true))
        XCTAssertEqual(bad.m.termination.description, "PD")
        XCTAssertEqual(bad.m.status, 200)
    }

    func testOnceTheResponseWasForwardedAFailureClosesInsteadOfAnswering() {
        // The server answered early (before the request body was all sent), then the rest
        // of the client's body turned out to be invalid: the client already has a status.
        var c = Connection()
        _ = c.request("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\n\r\n"), .none)
        XCTAssertTrue(c.m.responseToClientStarted)
        XCTAssertEqual(c.m.requestBodyInvalid(now: c.now), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "PD")
        XCTAssertEqual(c.m.status, 413, "the log keeps the status the client saw")
        XCTAssertEqual(c.m.phase, .closed)
        XCTAssertEqual(c.m.clientEOF(headPending: false, now: c.now), .none, "closed: later events do nothing")
        XCTAssertEqual(c.fire(at: c.now + 100 * second), .none)
    }

    func testEveryCannedStatusButTheInternalErrorIsProducedByTheMachine() {
        var produced = Set<Int>()
        func record(_ action: Action) {
            if case .respond(let e) = action { produced.insert(e.status) }
        }
        var a = Connection()
        record(a.m.requestInvalid(.badRequestLine, now: a.now))
        var b = Connection()
        record(b.m.requestInvalid(.connectNotSupported, now: b.now))
        var c = Connection()
        c.clientBytes()
        record(c.fire(at: c.now + timeouts.httpRequest, input: true))
        var d = Connection()
        record(d.m.requestInvalid(.headTooLarge, now: d.now))
        var e = Connection()
        _ = e.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        record(e.m.responseInvalid(now: e.now))
        var f = Connection()
        _ = f.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        record(f.m.noServer(now: f.now))
        var g = Connection()
        _ = g.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        g.attach(0)
        record(g.fire(at: g.now + timeouts.server))
        // Routing's own answers: a deny, and no route in a routes-only frontend.
        for error in [ErrorResponse.forbidden, .notFound] {
            var r = Connection()
            record(r.m.requestAnswered(HTTPExchangePolicy.Request(), status: error.status, error: error,
                                       termination: .make("P", "R"), now: r.now))
        }
        XCTAssertEqual(produced, Set(ErrorResponse.allCases.map(\.status)).subtracting([500]))
    }

    func testARoutingRuleAnswersWithoutAServerAndThenLingers() {
        var c = Connection()
        c.m.clientRead(now: c.now)
        let action = c.m.requestAnswered(HTTPExchangePolicy.Request(), status: 301, error: nil,
                                         termination: .make("L", "R"), now: c.now)
        XCTAssertEqual(action, .respondPrepared)
        XCTAssertEqual(c.m.status, 301)
        XCTAssertEqual(c.m.termination.description, "LR")
        XCTAssertEqual(c.m.phase, .lingering)
        XCTAssertEqual(c.m.server, -1, "no server was involved")
        XCTAssertEqual(c.m.requestCount, 1)
        XCTAssertEqual(c.m.requestAnswered(HTTPExchangePolicy.Request(), status: 302, error: nil,
                                           termination: .make("L", "R"), now: c.now), .none, "only between requests")
    }

    // MARK: keep-alive decisions

    func testHTTP10ClosesUnlessItAsksForKeepAlive() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.0\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), .none)
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: true, keepAlive: false))
        XCTAssertEqual(c.m.phase, .closed)

        var k = Connection()
        _ = k.request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        k.attach(0)
        XCTAssertEqual(k.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), .none)
        XCTAssertEqual(k.flushed(), .finishExchange(reuseServer: true, keepAlive: true))
    }

    func testAClientAskingForCloseIsClosed() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        c.attach(0)
        _ = c.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: true, keepAlive: false))
    }

    func testStoppingClosesAfterTheResponse() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", stopping: true), .none)
        XCTAssertFalse(c.m.keepAliveToClient)
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: true, keepAlive: false))
        XCTAssertEqual(c.m.phase, .closed)
    }

    func testABodyDelimitedByCloseEndsBothConnections() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\n\r\n"), .none)
        XCTAssertFalse(c.m.keepAliveToClient)
        XCTAssertFalse(c.m.serverReusable)
        c.responseBody(complete: false)
        XCTAssertEqual(c.flushed(), .none)
        c.m.responseBodyComplete(byClose: true)
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: false, keepAlive: false))
        XCTAssertEqual(c.m.termination.description, "--")
    }

    func testAServerSayingCloseIsNotReusedButTheClientStays() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"), .none)
        c.responseBody(complete: true)
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: false, keepAlive: true))
    }

    func testAResponseBeforeTheWholeRequestBodyEndsBothConnections() {
        var c = Connection()
        _ = c.request("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        c.attach(0)
        c.m.requestBody(count: 100, complete: false, bufferedRequestBytes: 150)
        XCTAssertEqual(c.responseHead("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"), .none)
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: false, keepAlive: false))
        XCTAssertEqual(c.m.phase, .closed)
    }

    // MARK: the client's end of the stream

    func testClientEOFBetweenRequestsIsAQuietClose() {
        var c = Connection()
        c.exchange()
        XCTAssertEqual(c.m.clientEOF(headPending: false, now: c.now), .close(log: false, abort: false))
        XCTAssertEqual(c.m.termination.description, "--")
    }

    func testClientEOFInTheMiddleOfAHeadIsLoggedCR() {
        var c = Connection()
        c.exchange()
        c.clientBytes()
        XCTAssertEqual(c.m.clientEOF(headPending: true, now: c.now), .close(log: true, abort: false))
        XCTAssertEqual(c.m.termination.description, "CR")
    }

    func testClientEOFInTheMiddleOfTheBodyAbortsCD() {
        var c = Connection()
        _ = c.request("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        c.attach(0)
        c.m.requestBody(count: 10, complete: false, bufferedRequestBytes: 60)
        XCTAssertEqual(c.m.clientEOF(headPending: false, now: c.now), .close(log: true, abort: true))
        XCTAssertEqual(c.m.termination.description, "CD")
    }

    func testAClientThatHalfClosesAfterItsRequestStillGetsTheResponse() {
        var c = Connection()
        _ = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        c.attach(0)
        XCTAssertEqual(c.m.clientEOF(headPending: false, now: c.now), .none)
        XCTAssertEqual(c.m.phase, .exchanging)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), .none)
        XCTAssertEqual(c.flushed(clientEOF: true), .finishExchange(reuseServer: true, keepAlive: false))
        XCTAssertEqual(c.m.phase, .closed)
    }

    func testAClientResetNamesThePhase() {
        var idle = Connection()
        XCTAssertEqual(idle.m.clientFailed(), .close(log: false, abort: true))
        XCTAssertEqual(idle.m.termination.description, "CR")

        var busy = Connection()
        _ = busy.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        busy.attach(0)
        XCTAssertEqual(busy.m.clientFailed(), .close(log: true, abort: true))
        XCTAssertEqual(busy.m.termination.description, "CD")
    }

    // MARK: stopping

    func testKilledNamesThePhaseAndLogsOnlyAnExchangeOrATunnel() {
        var idle = Connection()
        XCTAssertEqual(idle.m.killed(), .close(log: false, abort: false), "idle: closed quietly, as a keep-alive timeout would")
        XCTAssertEqual(idle.m.termination.description, "KR")
        XCTAssertEqual(idle.m.killed(), .none, "already closed")

        var arriving = Connection()
        arriving.exchange()
        arriving.clientBytes()
        XCTAssertEqual(arriving.m.killed(clientInputPending: true), .close(log: false, abort: true), "part of a head is in: cut")
        XCTAssertEqual(arriving.m.termination.description, "KR")

        var busy = Connection()
        _ = busy.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        busy.attach(0)
        XCTAssertEqual(busy.m.killed(), .close(log: true, abort: true))
        XCTAssertEqual(busy.m.termination.description, "KH", "waiting for the response head")

        var connecting = Connection()
        _ = connecting.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        connecting.m.connectStarted(server: 0, reused: false, now: connecting.now)
        XCTAssertEqual(connecting.m.killed(), .close(log: true, abort: true))
        XCTAssertEqual(connecting.m.termination.description, "KC", "waiting for the connect")

        var body = Connection()
        _ = body.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        body.attach(0)
        body.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        XCTAssertEqual(body.m.killed(), .close(log: true, abort: true))
        XCTAssertEqual(body.m.termination.description, "KD", "in the response body")

        var t = tunnel()
        XCTAssertEqual(t.m.killed(), .close(log: true, abort: true))
        XCTAssertEqual(t.m.termination.description, "KD")

        var lingering = Connection()
        _ = lingering.m.requestInvalid(.badRequestLine, now: lingering.now)
        XCTAssertEqual(lingering.m.killed(), .close(log: false, abort: true), "the error was logged when it was sent")
    }

    /// haproxy's `option idle-close-on-response`: a soft stop closes nothing under a
    /// client that may be sending; the next response closes the connection.
    func testSoftStopKeepsAnIdleConnectionAndClosesAfterTheNextResponse() {
        var c = Connection()
        c.exchange()
        let keepAliveEnd = c.deadline()
        XCTAssertEqual(keepAliveEnd, c.now + timeouts.httpKeepAlive)
        c.advance(second)
        XCTAssertEqual(c.m.softStop(), .none, "the idle connection stays open")
        XCTAssertEqual(c.m.phase, .awaitingRequest)
        XCTAssertEqual(c.deadline(), keepAliveEnd, "its keep-alive deadline is unchanged")

        // The client sends its next request after the stop began: served in full, with
        // `Connection: close`, then closed (FIN, not RST).
        XCTAssertEqual(c.request("GET /after HTTP/1.1\r\nHost: a\r\n\r\n"), .connect(avoiding: nil))
        c.attach(0)
        XCTAssertEqual(c.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"), .none)
        XCTAssertFalse(c.m.keepAliveToClient, "the response says Connection: close")
        c.responseBody(complete: true)
        XCTAssertEqual(c.flushed(), .finishExchange(reuseServer: true, keepAlive: false))
        XCTAssertEqual(c.m.phase, .closed)
    }

    func testSoftStopLetsAnIdleConnectionEndAtItsKeepAliveTimeout() {
        var c = Connection()
        c.exchange()
        let keepAliveEnd = c.deadline()
        XCTAssertEqual(c.m.softStop(), .none)
        XCTAssertEqual(c.fire(at: keepAliveEnd - 1), .none, "not before its keep-alive timeout")
        XCTAssertEqual(c.m.phase, .awaitingRequest)
        XCTAssertEqual(c.fire(at: keepAliveEnd), .close(log: false, abort: false), "quietly at its keep-alive timeout")

        // The grace period can end first: a quiet close too.
        var g = Connection()
        g.exchange()
        XCTAssertEqual(g.m.softStop(), .none)
        g.advance(second)
        XCTAssertEqual(g.m.killed(), .close(log: false, abort: false))
    }

    func testSoftStopLeavesExchangesTunnelsAndErrorsAlone() {
        var busy = Connection()
        _ = busy.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        busy.attach(0)
        XCTAssertEqual(busy.m.softStop(), .none)
        XCTAssertEqual(busy.m.phase, .exchanging)
        XCTAssertEqual(busy.responseHead("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), .none)
        XCTAssertEqual(busy.flushed(), .finishExchange(reuseServer: true, keepAlive: false),
                       "the response in flight when the stop began closes the connection")

        var t = tunnel()
        XCTAssertEqual(t.m.softStop(), .none)
        XCTAssertEqual(t.m.phase, .tunnel)

        var lingering = Connection()
        _ = lingering.m.requestInvalid(.badRequestLine, now: lingering.now)
        XCTAssertEqual(lingering.m.softStop(), .none)
        XCTAssertEqual(lingering.m.phase, .lingering)
    }
}
