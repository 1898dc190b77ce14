// HTTP mode, errors as the client sees them (haproxy style: status, short HTML body,
// `connection: close`, then the close) and as the access log records them: 503 with no
// server alive, 504 from a silent server, 502 from a broken one, 408 for slowloris, and the
// retry rule (a GET that met a closed connection is resent elsewhere, a POST never is).

import Foundation
import Glibc
import TestSupport
import XCTest

final class HTTPErrorTests: XCTestCase {
    /// Sends `request` on a fresh connection and returns the response, after asserting it is
    /// an error in haproxy's style followed by the close.
    private func expectError(
        _ status: Int, port: UInt16, request: String = getRequest("/"), within seconds: Double = 5,
        balancer: BalancerdProcess, file: StaticString = #filePath, line: UInt = #line
    ) throws -> (HTTPResponse, Double)? {
        let connection = try connectHTTP(port)
        let start = monotonicSeconds()
        try connection.send(request)
        let response: HTTPResponse
        do {
            response = try connection.readResponse(timeout: seconds)
        } catch {
            XCTFail("expected \(status): \(error)\n\(tail(balancer))", file: file, line: line)
            return nil
        }
        let elapsed = monotonicSeconds() - start
        XCTAssertEqual(response.status, status, "\(response)\n\(tail(balancer))", file: file, line: line)
        XCTAssertEqual(response.header("Connection")?.lowercased(), "close", "\(response)", file: file, line: line)
        XCTAssertTrue(response.bodyText.contains("<html>"), "expected a short HTML body: \(response)", file: file, line: line)
        XCTAssertTrue(connection.waitForClose(timeout: 2), "connection not closed after the \(status)", file: file, line: line)
        return (response, elapsed)
    }

    /// The termination state of the first log line with `status`, waiting for it.
    private func loggedTermination(_ status: Int, _ balancer: BalancerdProcess) -> String? {
        var found: String?
        waitUntil(timeout: 3) {
            found = httpLogLines(balancer).first { $0.status == status }?.termination
            return found != nil
        }
        return found
    }

    /// Both servers refuse connections: 503, logged with termination state SC--.
    func testNoServerAliveGives503() throws {
        let (balancer, port) = try startHTTPBalancer(servers: ["127.0.0.1:\(try freePort())", "127.0.0.1:\(try freePort())"])
        guard try expectError(503, port: port, balancer: balancer) != nil else { return }
        XCTAssertEqual(loggedTermination(503, balancer), "SC--", tail(balancer))
    }

    /// A client that sends its request and at once closes its side (shutdown(SHUT_WR), as
    /// `nc -q` and many scripts do) still gets the whole error response: the FIN may be read
    /// before the response is written, and the close must wait for the response. One in a
    /// few hundred lost it before; 300 tries make a regression show.
    func testHalfClosedClientStillGetsItsErrorResponse() throws {
        let (balancer, port) = try startHTTPBalancer(servers: ["127.0.0.1:\(try freePort())"])
        var lost = 0
        for _ in 0..<300 {
            let client = try TCPClient(port: port)
            try client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            client.shutdownWrite()
            let response = String(decoding: try client.readAll(timeout: 5), as: UTF8.self)
            if !response.hasPrefix("HTTP/1.1 503 ") { lost += 1 }
        }
        XCTAssertEqual(lost, 0, "half-closed clients that got no 503\n\(tail(balancer))")
    }

    /// A server that accepts and reads but never answers: 504 after `timeout server 1s`,
    /// logged sH--.
    func testSilentServerGives504AfterTimeoutServer() throws {
        let servers = try startHTTPServers(["silent"], mode: .neverAnswer)
        let (balancer, port) = try startHTTPBalancer(config: httpConfig(
            servers: [("silent", servers[0].address)], settings: ["timeout server 1s"]
        ))
        guard let (_, elapsed) = try expectError(504, port: port, within: 6, balancer: balancer) else { return }
        XCTAssertGreaterThanOrEqual(elapsed, 0.9, "504 before timeout server (1s) ran out")
        XCTAssertLessThan(elapsed, 3.5, "504 long after timeout server (1s)")
        XCTAssertEqual(servers[0].receivedHeads.count, 1, "the silent server should have received the request once")
        XCTAssertEqual(loggedTermination(504, balancer), "sH--", tail(balancer))
    }

    /// A server that answers `HELLO\r\n\r\n`: 502, logged PH-- or SH--.
    func testGarbageResponseGives502() throws {
        let servers = try startHTTPServers(["garbage"], mode: .reply(Array("HELLO\r\n\r\n".utf8)))
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        guard try expectError(502, port: port, balancer: balancer) != nil else { return }
        let termination = loggedTermination(502, balancer)
        XCTAssertTrue(["PH--", "SH--"].contains(termination ?? ""), "termination \(termination ?? "none")\n\(tail(balancer))")
    }

    /// A server that sends half a response head and closes: 502, logged PH-- or SH--.
    func testHalfResponseHeadGives502() throws {
        let servers = try startHTTPServers(["half"], mode: .reply(Array("HTTP/1.1 200 OK\r\nContent-Le".utf8)))
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        guard try expectError(502, port: port, balancer: balancer) != nil else { return }
        let termination = loggedTermination(502, balancer)
        XCTAssertTrue(["PH--", "SH--"].contains(termination ?? ""), "termination \(termination ?? "none")\n\(tail(balancer))")
    }

    /// A server that closes in the middle of a Content-Length body: the client gets what was
    /// sent and then the close (promptly, not at some timeout).
    func testServerAbortMidBodyClosesClientConnection() throws {
        let servers = try startHTTPServers(["abort"], mode: .reply(Array("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".utf8)))
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)
        try connection.send(getRequest("/"))
        let start = monotonicSeconds()
        var received: [UInt8] = []
        while monotonicSeconds() - start < 3 {
            let bytes = connection.readRaw(timeout: 0.2)
            if bytes.isEmpty && connection.sawClose { break }
            received += bytes
        }
        let text = String(decoding: received, as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200") && text.hasSuffix("short"), "client saw \(show(text))\n\(tail(balancer))")
        XCTAssertTrue(connection.sawClose, "client connection still open 3 s after the server aborted mid-body")
        XCTAssertLessThan(monotonicSeconds() - start, 2.5)
    }

    /// A "closer" server reads the request head and closes without a byte (what a keep-alive
    /// race looks like to a proxy). GETs are retried on the other server: 10 requests on one
    /// client connection all get 200 from `normal`.
    func testGetMeetingAClosedConnectionIsRetriedElsewhere() throws {
        let closer = try startHTTPServers(["closer"], mode: .closeAfterHead)[0]
        let normal = try startHTTPServers(["normal"])[0]
        let (balancer, port) = try startHTTPBalancer(servers: [closer.address, normal.address])
        let connection = try connectHTTP(port)

        for i in 1...10 {
            try connection.send(getRequest("/get\(i)"))
            do {
                let response = try connection.readResponse()
                XCTAssertEqual(response.status, 200, "GET \(i): \(response)\n\(tail(balancer))")
                XCTAssertEqual(response.bodyText, "normal", "GET \(i): \(response)")
            } catch {
                return XCTFail("GET \(i): \(error)\n\(tail(balancer))")
            }
        }
        XCTAssertGreaterThan(closer.receivedHeads.count, 0, "the closer was never tried, so nothing was retried")
        XCTAssertEqual(normal.completeRequests.map(\.target), (1...10).map { "/get\($0)" })
    }

    /// A POST that met the closer must not be resent (it may have had effects): with the
    /// closer as the only server and `retries 3`, the client gets 502 and the closer saw the
    /// request exactly once.
    func testPostMeetingAClosedConnectionIsNotResent() throws {
        let closer = try startHTTPServers(["closer"], mode: .closeAfterHead)[0]
        let (balancer, port) = try startHTTPBalancer(config: httpConfig(servers: [("closer", closer.address)], settings: ["retries 3"]))

        let post = "POST /order HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n\r\nhello"
        guard try expectError(502, port: port, request: post, balancer: balancer) != nil else {
            return XCTFail("closer saw \(closer.receivedHeads.count) heads")
        }
        sleepSeconds(0.3)
        XCTAssertEqual(closer.receivedHeads.count, 1, "the POST was resent: \(closer.receivedHeads.map(show))")
    }

    /// The same with a normal server next to the closer: every POST either got 200 from
    /// `normal` or 502, and no POST reached a server twice or reached both.
    func testPostIsNeverSentToTwoServers() throws {
        let closer = try startHTTPServers(["closer"], mode: .closeAfterHead)[0]
        let normal = try startHTTPServers(["normal"])[0]
        let (balancer, port) = try startHTTPBalancer(servers: [closer.address, normal.address])

        var statuses: [String: Int] = [:]
        for i in 1...6 {
            let connection = try connectHTTP(port)
            try connection.send("POST /post\(i) HTTP/1.1\r\nHost: test.local\r\nContent-Length: 2\r\n\r\nhi")
            do {
                statuses["/post\(i)"] = try connection.readResponse().status
            } catch {
                return XCTFail("POST \(i): \(error)\n\(tail(balancer))")
            }
            connection.close()
        }
        sleepSeconds(0.3)
        let atCloser = closer.receivedHeads.compactMap { $0.split(separator: " ").dropFirst().first.map(String.init) }
        let atNormal = normal.receivedHeads.compactMap { $0.split(separator: " ").dropFirst().first.map(String.init) }
        print("POST statuses \(statuses.sorted { $0.key < $1.key }), closer saw \(atCloser), normal saw \(atNormal)")
        XCTAssertEqual(Set(statuses.values).subtracting([200, 502]), [], "\(statuses)")
        XCTAssertEqual(atCloser.count, Set(atCloser).count, "a POST was sent to the closer twice: \(atCloser)")
        XCTAssertEqual(Set(atCloser).intersection(atNormal), [], "a POST was sent to both servers")
        XCTAssertEqual(Set(atNormal), Set(statuses.filter { $0.value == 200 }.keys), "the 200s are not exactly the POSTs normal saw")
        XCTAssertEqual(Set(atCloser), Set(statuses.filter { $0.value == 502 }.keys), "the 502s are not exactly the POSTs the closer saw")
    }

    /// Slowloris: 200 connections send their head one byte a second. With
    /// `timeout http-request 2s` each gets 408 at the timeout, then the close; meanwhile a
    /// normal client is served promptly.
    func testSlowlorisGets408WhileNormalClientIsServed() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(config: httpConfig(
            servers: [("s1", servers[0].address)], settings: ["timeout http-request 2s"]
        ))
        let slowHead = Array(getRequest("/slow").utf8)
        let slow = try (0..<200).map { _ in try connectHTTP(port) }
        let fds = slow.map(\.fd)
        let start = monotonicSeconds()

        // One byte a second on every connection that has nothing to read yet.
        let stop = Protected(false)
        let sender = JoinableThread {
            var index = 0
            while !stop.value && index < slowHead.count {
                for fd in fds where !pollReadable([fd], timeout: 0).contains(0) {
                    _ = Glibc.send(fd, [slowHead[index]], 1, Int32(MSG_NOSIGNAL))
                }
                index += 1
                for _ in 0..<20 where !stop.value { sleepSeconds(0.05) }
            }
        }
        defer {
            stop.set(true)
            sender.join()
        }

        // A normal client, while all 200 are pending.
        sleepSeconds(0.5)
        let normal = try connectHTTP(port)
        let requestStart = monotonicSeconds()
        try normal.send(getRequest("/normal"))
        let response = try normal.readResponse(timeout: 5)
        let latency = monotonicSeconds() - requestStart
        print("slowloris: normal request served in \(Int(latency * 1000)) ms while 200 slow heads were pending")
        XCTAssertEqual(response.status, 200, "\(response)")
        XCTAssertEqual(response.header("X-Path"), "/normal")
        XCTAssertLessThan(latency, 1.0, "normal client starved by slowloris")

        // Nothing for the slow ones before the timeout.
        sleepSeconds(max(0, 1.3 - (monotonicSeconds() - start)))
        XCTAssertEqual(pollReadable(fds, timeout: 0), [], "slow connections answered or closed long before timeout http-request 2s")

        // All 200 become readable by about the timeout.
        var arrival = [Double?](repeating: nil, count: fds.count)
        let deadline = Deadline(secondsFromNow: 6)
        while arrival.contains(where: { $0 == nil }) && !deadline.hasPassed {
            let pending = fds.indices.filter { arrival[$0] == nil }
            for i in pollReadable(pending.map { fds[$0] }, timeout: 50) {
                arrival[pending[i]] = monotonicSeconds() - start
            }
        }
        stop.set(true)
        sender.join()
        let times = arrival.compactMap { $0 }
        print("slowloris: \(times.count)/200 answered, first at \(String(format: "%.2f", times.min() ?? -1)) s, last at \(String(format: "%.2f", times.max() ?? -1)) s")
        XCTAssertEqual(times.count, 200, "some slow connections got nothing within 6 s\n\(tail(balancer))")
        XCTAssertGreaterThanOrEqual(times.min() ?? 0, 1.8, "408 before timeout http-request (2s)")

        // Everything has arrived by now (or is reported missing above): short, shared bounds.
        var failures: [String] = []
        let readDeadline = Deadline(secondsFromNow: 4)
        for (i, connection) in slow.enumerated() where arrival[i] != nil {
            let bound = min(0.5, max(readDeadline.remainingSeconds, 0.01))
            do {
                let response = try connection.readResponse(timeout: bound)
                if response.status != 408 { failures.append("#\(i): \(response.statusLine)") }
                if !connection.waitForClose(timeout: bound) { failures.append("#\(i): not closed after the 408") }
            } catch {
                failures.append("#\(i): \(error)")
            }
        }
        XCTAssertEqual(failures, [], "\(failures.count) of 200 slow connections: \(failures.prefix(10))")
        XCTAssertEqual(servers[0].receivedHeads.filter { $0.contains("/slow") }, [], "a slow head reached the server")
        XCTAssertTrue(
            waitUntil(timeout: 3) { httpLogLines(balancer).filter { $0.status == 408 && $0.termination == "cR--" }.count == 200 },
            "expected 200 log lines with 408 cR--, got \(httpLogLines(balancer).filter { $0.status == 408 }.map(\.termination).prefix(5))…"
        )
    }
}

/// The same errors on a client connection that has already carried a good request: the
/// error response must still be sent (not a reset), and logged with its own status.
final class HTTPErrorAfterKeepAliveTests: XCTestCase {
    private func firstGoodRequest(_ connection: HTTPClientConnection, balancer: BalancerdProcess) throws {
        try connection.send(getRequest("/good"))
        let response = try connection.readResponse()
        XCTAssertEqual(response.status, 200, "\(response)\n\(tail(balancer))")
    }

    /// A bad request (space before the colon) after a good one, not pipelined: 400, close.
    func testBadRequestAfterGoodOneGets400() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)
        try firstGoodRequest(connection, balancer: balancer)

        try connection.send("GET /bad HTTP/1.1\r\nHost : a\r\n\r\n")
        do {
            let response = try connection.readResponse()
            XCTAssertEqual(response.status, 400, "\(response)")
        } catch {
            XCTFail("bad request on a reused connection: \(error)\n\(tail(balancer))")
        }
        XCTAssertTrue(connection.waitForClose(timeout: 2))
        XCTAssertEqual(servers[0].receivedHeads.filter { $0.contains("/bad") }.map(show), [])
        XCTAssertTrue(waitUntil(timeout: 2) { httpLogLines(balancer).contains { $0.request == "<BADREQ>" } }, tail(balancer))
        let bad = httpLogLines(balancer).filter { $0.request == "<BADREQ>" }
        XCTAssertEqual(bad.map(\.status), [400], "the <BADREQ> line must log 400, not the previous request's status\n\(tail(balancer))")
        XCTAssertFalse(bad.contains { $0.server == "s1" }, "the <BADREQ> line names the previous request's server\n\(tail(balancer))")
    }

    /// A head that stalls after a good request: 408 at `timeout http-request`, then close.
    func testStalledHeadAfterGoodOneGets408() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(config: httpConfig(
            servers: [("s1", servers[0].address)], settings: ["timeout http-request 1s", "timeout http-keep-alive 5s"]
        ))
        let connection = try connectHTTP(port)
        try firstGoodRequest(connection, balancer: balancer)

        try connection.send("GET /stall HT")
        do {
            let response = try connection.readResponse(timeout: 4)
            XCTAssertEqual(response.status, 408, "\(response)")
        } catch {
            XCTFail("stalled head on a reused connection: \(error)\n\(tail(balancer))")
        }
        XCTAssertTrue(connection.waitForClose(timeout: 2))
        XCTAssertTrue(waitUntil(timeout: 2) { httpLogLines(balancer).contains { $0.status == 408 && $0.termination == "cR--" } }, tail(balancer))
    }

    /// The second request on a connection meets a server too slow for `timeout server 1s`: 504.
    func testServerTimeoutOnSecondRequestGets504() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(config: httpConfig(
            servers: [("s1", servers[0].address)], settings: ["timeout server 1s"]
        ))
        let connection = try connectHTTP(port)
        try firstGoodRequest(connection, balancer: balancer)

        try connection.send(getRequest("/slow?delay=2000"))
        do {
            let response = try connection.readResponse(timeout: 4)
            XCTAssertEqual(response.status, 504, "\(response)")
        } catch {
            XCTFail("slow server on a reused connection: \(error)\n\(tail(balancer))")
        }
        XCTAssertTrue(connection.waitForClose(timeout: 2))
        XCTAssertTrue(waitUntil(timeout: 2) { httpLogLines(balancer).contains { $0.status == 504 && $0.termination == "sH--" } }, tail(balancer))
    }
}

/// Indices of `fds` that are readable (data, EOF or error) within `timeout` milliseconds.
func pollReadable(_ fds: [Int32], timeout: Int32) -> [Int] {
    var entries = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    let n = poll(&entries, nfds_t(entries.count), timeout)
    guard n > 0 else { return [] }
    return entries.indices.filter { entries[$0].revents != 0 }
}

final class HTTPKeepAliveRaceTests: XCTestCase {
    /// The keep-alive race on a pooled connection, retried onto another *pooled*
    /// connection: the retry must send the request at once. (A retry that attached an idle
    /// connection used to wait for an event that never came, until the client gave up.)
    func testRetryFromARacedPooledConnectionOntoAnotherPooledOneIsImmediate() throws {
        let racer = try HTTPTestServer(name: "racer", mode: .dropSecondRequest)
        let steady = try HTTPTestServer(name: "steady")
        defer { racer.stop(); steady.stop() }
        let (balancer, port) = try startHTTPBalancer(servers: [racer.address, steady.address], extra: ["--threads", "1"])
        defer { balancer.stop() }
        let connection = try connectHTTP(port)
        // Warm both pools: one request to each server, answered, connections parked.
        for _ in 0..<2 {
            try connection.send(getRequest("/warm"))
            XCTAssertEqual(try connection.readResponse().status, 200)
        }
        // The racer now drops the next request on its pooled connection; the retry goes
        // to the steady server's pooled connection and must be answered promptly.
        for i in 0..<4 {
            let start = monotonicSeconds()
            try connection.send(getRequest("/after-race-\(i)"))
            let response = try connection.readResponse()
            let elapsed = monotonicSeconds() - start
            XCTAssertEqual(response.status, 200, "\(response)\n\(tail(balancer))")
            XCTAssertLessThan(elapsed, 1.0, "request \(i) took \(elapsed) s\n\(tail(balancer))")
        }
    }
}
