// HTTP mode, the edges of the contract: limits just inside the bounds, lenient-but-valid
// input, HTTP/1.0 keep-alive, stale pooled server connections, keep-alive timeouts, and the
// frontend/backend config form.

import Foundation
import Glibc
import TestSupport
import XCTest

final class HTTPEdgeTests: XCTestCase {
    /// Just inside the limits: 100 header fields, a 15 KiB head, identical duplicate
    /// Content-Length, `Transfer-Encoding: Chunked` in another case. All are served, and the
    /// connection stays usable.
    func testValidEdgeRequestsAreServed() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        let fields99 = (1...99).map { "X-F\($0): v\r\n" }.joined()  // + Host = 100 fields
        let bigField = "X-Big: " + String(repeating: "b", count: 15 * 1024) + "\r\n"
        let cases: [(String, String, String)] = [
            ("100 header fields", getRequest("/fields", extra: fields99), ""),
            ("15 KiB head", getRequest("/big", extra: bigField), ""),
            ("identical Content-Length twice", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "hello"),
            ("Transfer-Encoding: Chunked", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "hello"),
            ("Content-Length: 0 POST", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", ""),
        ]
        for (what, request, echoed) in cases {
            try connection.send(request)
            do {
                let response = try connection.readResponse()
                XCTAssertEqual(response.status, 200, "\(what): \(response)")
                if !echoed.isEmpty { XCTAssertEqual(response.bodyText, echoed, what) }
            } catch {
                return XCTFail("\(what): \(error)\n\(tail(balancer))")
            }
        }
        XCTAssertEqual(servers[0].completeRequests.count, cases.count)
    }

    /// HTTP/1.0 with `Connection: keep-alive`: the connection stays open for a second request.
    func testHTTP10KeepAliveClient() throws {
        let servers = try startHTTPServers(["s1", "s2"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        var names: [String] = []
        for i in 1...2 {
            try connection.send("GET /ka\(i) HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            do {
                let response = try connection.readResponse()
                XCTAssertEqual(response.status, 200, "\(response)")
                XCTAssertFalse(response.isCloseDelimited, "an HTTP/1.0 keep-alive response needs a length: \(response)")
                names.append(response.bodyText)
            } catch {
                return XCTFail("HTTP/1.0 keep-alive request \(i): \(error)\n\(tail(balancer))")
            }
        }
        assertRotation(names, of: ["s1", "s2"])
    }

    /// A client's own X-Forwarded-For is kept and ours follows it.
    func testForwardedForIsAppended() throws {
        let servers = try startHTTPServers(["s1"])
        let (_, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)
        try connection.send(getRequest("/xff", extra: "X-Forwarded-For: 10.0.0.1\r\n"))
        XCTAssertEqual(try connection.readResponse().status, 200)
        let request = try XCTUnwrap(servers[0].completeRequests.last)
        XCTAssertEqual(request.values("X-Forwarded-For"), ["10.0.0.1", "127.0.0.1"], show(request.head))
    }

    /// A client that half-closes right after its request still gets the response.
    func testResponseAfterClientHalfClose() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)
        try connection.send(getRequest("/half?delay=100"))
        connection.shutdownWrite()
        do {
            let response = try connection.readResponse()
            XCTAssertEqual(response.status, 200, "\(response)")
            XCTAssertEqual(response.bodyText, "s1")
        } catch {
            XCTFail("no response after the client's half-close: \(error)\n\(tail(balancer))")
        }
    }

    /// The server closes every connection after one response (no `Connection: close`, as
    /// when its keep-alive timeout is short). Pooled connections go stale, but no client
    /// sees it: GETs and POSTs 100 ms apart all get 200.
    func testStalePooledServerConnectionsAreNotUsed() throws {
        let servers = try startHTTPServers(["s1"], mode: .respondOnce)
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        for i in 1...6 {
            let request = i % 2 == 0
                ? "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\npost"
                : getRequest("/get\(i)")
            try connection.send(request)
            do {
                let response = try connection.readResponse()
                XCTAssertEqual(response.status, 200, "request \(i) (\(i % 2 == 0 ? "POST" : "GET")): \(response)\n\(tail(balancer))")
            } catch {
                return XCTFail("request \(i): \(error)\n\(tail(balancer))")
            }
            sleepSeconds(0.1)
        }
        XCTAssertEqual(servers[0].completeRequests.count, 6)
    }

    /// `timeout http-keep-alive 1s`: an idle keep-alive client connection is closed after
    /// about a second, without a response.
    func testIdleKeepAliveConnectionClosedAfterTimeout() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(config: httpConfig(
            servers: [("s1", servers[0].address)], settings: ["timeout http-keep-alive 1s", "timeout http-request 5s"]
        ))
        let connection = try connectHTTP(port)
        try connection.send(getRequest("/first"))
        XCTAssertEqual(try connection.readResponse().status, 200)
        let idleStart = monotonicSeconds()
        XCTAssertFalse(connection.waitForClose(timeout: 0.7), "closed well before timeout http-keep-alive")
        XCTAssertTrue(connection.waitForClose(timeout: 2.5), "idle keep-alive connection still open after 3 s\n\(tail(balancer))")
        let idle = monotonicSeconds() - idleStart
        XCTAssertLessThan(idle, 3.3)
    }

    /// `frontend` + `backend` form, weights 1:2, balanced per request on one connection.
    func testFrontendBackendWeightsPerRequest() throws {
        let servers = try startHTTPServers(["light", "heavy"])
        let (balancer, port) = try startHTTPBalancer(config: """
            defaults
                mode http
                timeout connect 1s
                timeout client 10s
                timeout server 10s

            frontend main
                bind 127.0.0.1:0
                default_backend app

            backend app
                server light \(servers[0].address) weight 1
                server heavy \(servers[1].address) weight 2

            """)
        let connection = try connectHTTP(port)
        var names: [String] = []
        for i in 1...9 {
            try connection.send(getRequest("/w\(i)"))
            do {
                names.append(try connection.readResponse().bodyText)
            } catch {
                return XCTFail("request \(i): \(error)\n\(tail(balancer))")
            }
        }
        XCTAssertEqual(tally(names), ["light": 3, "heavy": 6], "\(names)")
        XCTAssertEqual(longestRun(of: "light", in: names), 1, "\(names)")
    }

    /// Framing decides where a request ends, not what the bytes look like: a POST whose
    /// Content-Length body is itself a request, and a chunked POST, pipelined with GETs in
    /// one write. The server sees exactly the three real requests; the body's "request"
    /// arrives as a body.
    func testBodiesThatLookLikeRequestsStayBodies() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)

        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        let chunkedSmuggled = "\(String(smuggled.utf8.count, radix: 16))\r\n\(smuggled)\r\n0\r\n\r\n"
        try connection.send(
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: \(smuggled.utf8.count)\r\n\r\n\(smuggled)"
                + "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\(chunkedSmuggled)"
                + getRequest("/real")
        )
        do {
            let first = try connection.readResponse()
            let second = try connection.readResponse()
            let third = try connection.readResponse()
            XCTAssertEqual(first.bodyText, smuggled)
            XCTAssertEqual(second.bodyText, smuggled)
            XCTAssertEqual(third.header("X-Path"), "/real")
        } catch {
            return XCTFail("\(error)\n\(tail(balancer))")
        }
        XCTAssertEqual(servers[0].completeRequests.map(\.target), ["/echo", "/echo", "/real"], servers[0].receivedHeads.map(show).joined(separator: "\n"))
    }

    /// A request body that trickles in (head first, then the body in pieces 100 ms apart)
    /// arrives whole.
    func testSlowRequestBodyArrivesWhole() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)
        try connection.send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 15\r\n\r\n")
        for piece in ["hello", " slow", " body"] {
            sleepSeconds(0.1)
            try connection.send(piece)
        }
        do {
            let response = try connection.readResponse()
            XCTAssertEqual(response.bodyText, "hello slow body")
        } catch {
            XCTFail("\(error)\n\(tail(balancer))")
        }
    }

    /// 40 clients at once on 4 event loops, 15 keep-alive requests each: every response
    /// answers its own request (no mix-up between pooled server connections), and the
    /// shared rotation splits the 600 requests evenly over 3 servers.
    func testConcurrentKeepAliveClientsGetTheirOwnResponses() throws {
        let servers = try startHTTPServers(["s1", "s2", "s3"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address), extra: ["--threads", "4", "--quiet"])

        let problems = Protected<[String]>([])
        let counts = Protected<[String: Int]>([:])
        let threads = (0..<40).map { client in
            JoinableThread {
                do {
                    let connection = try HTTPClientConnection(port: port)
                    defer { connection.close() }
                    for i in 0..<15 {
                        let path = "/c\(client)/r\(i)"
                        try connection.send(getRequest(path))
                        let response = try connection.readResponse(timeout: 10)
                        if response.status != 200 || response.header("X-Path") != path {
                            problems.mutate { $0.append("client \(client) asked \(path), got \(response)") }
                        }
                        counts.mutate { $0[response.bodyText, default: 0] += 1 }
                    }
                } catch {
                    problems.mutate { $0.append("client \(client): \(error)") }
                }
            }
        }
        threads.forEach { $0.join() }
        XCTAssertEqual(problems.value, [], "\(problems.value.count) problems\n\(tail(balancer))")
        let split = counts.value
        print("concurrent keep-alive split: \(split.sorted { $0.key < $1.key })")
        XCTAssertEqual(split.values.reduce(0, +), 600)
        for name in ["s1", "s2", "s3"] {
            XCTAssertEqual(Double(split[name, default: 0]), 200, accuracy: 3, "uneven split \(split)")
        }
    }
}
