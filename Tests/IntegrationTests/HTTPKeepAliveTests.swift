// HTTP mode, the balance-rr.vtc shape per request: backends stamp their name, every request
// on one client keep-alive connection is balanced on its own, and the rotation is asserted.

import Foundation
import Glibc
import TestSupport
import XCTest

final class HTTPKeepAliveTests: XCTestCase {
    /// 6 requests on one client connection alternate s1, s2, s1, …; the client connection
    /// is never closed, the log shows one client port for all 6, and the server connections
    /// are reused (one per server).
    func testKeepAliveRequestsAlternateAcrossTwoServers() throws {
        try assertKeepAliveRotation(names: ["s1", "s2"])
    }

    func testKeepAliveRequestsRotateAcrossThreeServers() throws {
        try assertKeepAliveRotation(names: ["s1", "s2", "s3"])
    }

    private func assertKeepAliveRotation(names serverNames: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let servers = try startHTTPServers(serverNames)
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)
        let clientPort = try XCTUnwrap(connection.localPort)

        var names: [String] = []
        for i in 1...6 {
            try connection.send(getRequest("/r\(i)"))
            let response: HTTPResponse
            do {
                response = try connection.readResponse()
            } catch {
                XCTFail("request \(i) on the keep-alive connection: \(error)\n\(tail(balancer))", file: file, line: line)
                return
            }
            XCTAssertEqual(response.status, 200, "\(response)", file: file, line: line)
            XCTAssertEqual(response.header("X-Path"), "/r\(i)", "\(response)", file: file, line: line)
            names.append(response.bodyText)
        }
        XCTAssertFalse(connection.waitForClose(timeout: 0.2), "balancerd closed the keep-alive connection", file: file, line: line)
        assertRotation(names, of: serverNames, file: file, line: line)

        // One client connection: every log line names the same client port, in request order.
        XCTAssertTrue(waitUntil(timeout: 3) { httpLogLines(balancer).count >= 6 }, "expected 6 httplog lines\n\(tail(balancer))", file: file, line: line)
        let log = httpLogLines(balancer)
        XCTAssertEqual(log.map(\.clientPort), Array(repeating: clientPort, count: 6), tail(balancer), file: file, line: line)
        XCTAssertEqual(log.map(\.server), names, "log names other servers than the responses did", file: file, line: line)
        XCTAssertEqual(log.map(\.request), (1...6).map { "GET /r\($0) HTTP/1.1" }, file: file, line: line)
        XCTAssertEqual(log.map(\.status), Array(repeating: 200, count: 6), file: file, line: line)

        // Server side: each server got 6/n requests over a single, reused connection.
        XCTAssertEqual(servers.map { $0.completeRequests.count }, Array(repeating: 6 / serverNames.count, count: serverNames.count), file: file, line: line)
        XCTAssertEqual(servers.map(\.acceptedCount), Array(repeating: 1, count: serverNames.count), "server connections were not reused from the idle pool", file: file, line: line)
    }

    /// 5 requests in one write: 5 responses, in request order, although the servers answer
    /// the odd ones late (a proxy that relays responses as they come would reorder them).
    func testPipelinedRequestsAreAnsweredInOrder() throws {
        let servers = try startHTTPServers(["s1", "s2"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        let paths = ["/p1?delay=300", "/p2", "/p3?delay=200", "/p4", "/p5?delay=100"]
        try connection.send(paths.map { getRequest($0) }.joined())

        var names: [String] = []
        for (i, path) in paths.enumerated() {
            let response: HTTPResponse
            do {
                response = try connection.readResponse(timeout: 5)
            } catch {
                XCTFail("pipelined response \(i + 1) of 5: \(error)\n\(tail(balancer))")
                return
            }
            XCTAssertEqual(response.status, 200, "\(response)")
            XCTAssertEqual(response.header("X-Path"), path, "response \(i + 1) out of order: \(response)")
            names.append(response.bodyText)
        }
        assertRotation(names, of: ["s1", "s2"])
        XCTAssertFalse(connection.waitForClose(timeout: 0.2), "connection closed after pipelined requests")
        // Still usable afterwards.
        try connection.send(getRequest("/after"))
        XCTAssertEqual(try connection.readResponse().header("X-Path"), "/after")
    }

    /// Debian's nginx as the servers: one keep-alive connection alternates n1, n2, n1, …
    func testKeepAliveAlternatesAcrossTwoNginx() throws {
        let n1 = try NginxServer(name: "n1")
        let n2 = try NginxServer(name: "n2")
        addTeardownBlock {
            n1.stop()
            n2.stop()
        }
        let (balancer, port) = try startHTTPBalancer(servers: [n1.address, n2.address])
        let connection = try connectHTTP(port)

        var bodies: [String] = []
        for i in 1...6 {
            try connection.send(getRequest("/"))
            do {
                let response = try connection.readResponse()
                XCTAssertEqual(response.status, 200, "\(response)")
                bodies.append(response.bodyText.trimmingCharacters(in: .whitespacesAndNewlines))
            } catch {
                XCTFail("request \(i): \(error)\n\(tail(balancer))\nn1: \(n1.errorLog)\nn2: \(n2.errorLog)")
                return
            }
        }
        assertRotation(bodies, of: ["n1", "n2"])
        XCTAssertFalse(connection.waitForClose(timeout: 0.2), "balancerd closed the keep-alive connection")
    }

    /// An HTTP/1.0 request without keep-alive gets its response and then the close;
    /// X-Forwarded-For: 127.0.0.1 reached the server.
    func testHTTP10ClientGetsResponseThenClose() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        try connection.send("GET /old HTTP/1.0\r\n\r\n")
        let response = try connection.readResponse()
        XCTAssertEqual(response.status, 200, "\(response)")
        XCTAssertEqual(response.bodyText, "s1")
        XCTAssertTrue(connection.waitForClose(timeout: 2), "HTTP/1.0 connection without keep-alive left open\n\(tail(balancer))")

        let request = try XCTUnwrap(servers[0].completeRequests.last, "the server got no request")
        XCTAssertEqual(request.target, "/old")
        XCTAssertEqual(request.values("X-Forwarded-For"), ["127.0.0.1"], show(request.head))
    }

    /// Hop-by-hop fields of the request (Connection and what it names, Keep-Alive,
    /// Proxy-Connection, TE, Trailer, Upgrade outside an upgrade) never reach the server; an
    /// ordinary field does.
    func testHopByHopRequestHeadersAreNotForwarded() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        try connection.send(getRequest("/hop", extra: """
            Connection: X-Secret, keep-alive\r
            X-Secret: 1\r
            Keep-Alive: timeout=5\r
            Proxy-Connection: keep-alive\r
            TE: trailers\r
            Trailer: X-Late\r
            Upgrade: h2c\r
            X-Normal: yes\r

            """))
        let response = try connection.readResponse()
        XCTAssertEqual(response.status, 200, "\(response)\n\(tail(balancer))")

        let request = try XCTUnwrap(servers[0].completeRequests.last, "the server got no request")
        let head = show(request.head)
        XCTAssertEqual(request.values("X-Normal"), ["yes"], head)
        for field in ["X-Secret", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade"] {
            XCTAssertEqual(request.values(field), [], "hop-by-hop field \(field) reached the server: \(head)")
        }
        XCTAssertFalse(request.values("Connection").joined().lowercased().contains("x-secret"), "Connection: X-Secret forwarded: \(head)")
        XCTAssertFalse(connection.waitForClose(timeout: 0.2), "connection closed after the request")
    }

    /// The same for a response: the client does not see the server's hop-by-hop fields.
    func testHopByHopResponseHeadersAreNotForwarded() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        try connection.send(getRequest("/hop-response"))
        let response = try connection.readResponse()
        XCTAssertEqual(response.status, 200, "\(response)\n\(tail(balancer))")
        XCTAssertEqual(response.header("X-Resp-Normal"), "yes", "\(response)")
        for field in ["X-Resp-Secret", "Keep-Alive", "Proxy-Connection"] {
            XCTAssertEqual(response.values(field), [], "hop-by-hop field \(field) reached the client: \(response)")
        }
        XCTAssertFalse(response.values("Connection").joined().lowercased().contains("x-resp-secret"), "\(response)")
        XCTAssertEqual(response.bodyText, "s1")
    }
}
