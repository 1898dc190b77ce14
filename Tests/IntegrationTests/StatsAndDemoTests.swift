// The small HTTP servers beside the proxy, through the real binary: the stats listener
// (`--stats`: the page and the live /haproxy.cfg) and the `--demo` backends. Both read
// requests with the proxy's own parser, so malformed input gets the proxy's clear 4xx.

import Foundation
import TestSupport
import XCTest

final class StatsAndDemoTests: XCTestCase {
    /// Starts balancerd with a stats listener; returns the process and the stats port.
    private func startWithStats(servers: [NameStampServer]) throws -> (BalancerdProcess, UInt16) {
        let (balancer, _) = try startBalancer(flagArguments(servers: servers.map(\.address), extra: ["--stats", "127.0.0.1:0"]))
        let line = try XCTUnwrap(balancer.waitForLine(containing: "balancerd: stats on http://", timeout: 10), tail(balancer))
        // "balancerd: stats on http://127.0.0.1:PORT/ (live haproxy.cfg at /haproxy.cfg)"
        let address = try XCTUnwrap(line.split(separator: " ").first { $0.hasPrefix("http://") }, line)
        let port = try XCTUnwrap(address.dropFirst("http://".count).split(separator: "/").first?.split(separator: ":").last.flatMap { UInt16($0) }, line)
        return (balancer, port)
    }

    /// Starts balancerd with `--demo`; returns the process, the proxy's port and the ports
    /// of the two demo backends.
    private func startDemo() throws -> (BalancerdProcess, UInt16, [UInt16]) {
        let (balancer, port) = try startBalancer(["--demo", "--listen", "127.0.0.1:0"])
        // "balancerd demo: two built-in backends on 127.0.0.1:P1 and 127.0.0.1:P2."
        let line = try XCTUnwrap(balancer.waitForLine(containing: "balancerd demo: two built-in backends on", timeout: 10), tail(balancer))
        let ports = line.split(separator: " ").filter { $0.hasPrefix("127.0.0.1:") }.compactMap {
            UInt16($0.dropFirst("127.0.0.1:".count).trimmingCharacters(in: CharacterSet(charactersIn: ".")))
        }
        XCTAssertEqual(ports.count, 2, line)
        return (balancer, port, ports)
    }

    /// Sends `raw` on a new connection and reads one response. With `expectClose`, checks
    /// that the server closes the connection then (both servers answer one request per
    /// connection; the proxy in front of the demo may keep its client connection).
    private func exchange(
        port: UInt16, _ raw: String, method: String = "GET", expectClose: Bool = true,
        file: StaticString = #filePath, line: UInt = #line
    ) throws -> HTTPResponse {
        let connection = try HTTPClientConnection(port: port)
        defer { connection.close() }
        try connection.send(raw)
        let response = try connection.readResponse(method: method, timeout: 5)
        if expectClose {
            XCTAssertTrue(connection.waitForClose(timeout: 5), "the server keeps the connection open after: \(raw.prefix(60))",
                          file: file, line: line)
        }
        return response
    }

    func testStatsPageAndLiveConfiguration() throws {
        let servers = try startStampServers(["s1", "s2"])
        let (balancer, port) = try startWithStats(servers: servers)

        let page = try exchange(port: port, "GET / HTTP/1.1\r\nHost: stats\r\n\r\n")
        XCTAssertEqual(page.status, 200, "\(page)\n\(tail(balancer))")
        XCTAssertEqual(page.header("Content-Type"), "text/html; charset=utf-8")
        XCTAssertEqual(page.header("Cache-Control"), "no-cache")
        XCTAssertTrue(page.bodyText.hasPrefix("<!DOCTYPE html>"), page.bodyText)
        XCTAssertTrue(page.bodyText.contains("<meta http-equiv=\"refresh\" content=\"5\">"), page.bodyText)
        for server in servers {
            XCTAssertTrue(page.bodyText.contains("data-server=\"\(server.name)\""), page.bodyText)
            XCTAssertTrue(page.bodyText.contains(server.address), page.bodyText)
        }

        for target in ["/haproxy.cfg", "/haproxy.cfg?fresh=1"] {
            let exported = try exchange(port: port, "GET \(target) HTTP/1.1\r\nHost: stats\r\n\r\n")
            XCTAssertEqual(exported.status, 200, target)
            XCTAssertTrue(exported.bodyText.contains("haproxy.cfg of the live table, exported by balancerd"), exported.bodyText)
            for server in servers {
                XCTAssertTrue(exported.bodyText.contains("server \(server.name) \(server.address)"), exported.bodyText)
            }
        }

        // HTTP/1.0 and a body on a GET (read and dropped) are fine too.
        let old = try exchange(port: port, "GET / HTTP/1.0\r\n\r\n")
        XCTAssertEqual(old.status, 200)
        let withBody = try exchange(port: port, "GET / HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        XCTAssertEqual(withBody.status, 200)
        XCTAssertTrue(withBody.bodyText.contains("<caption><span class=\"px\">main</span>"), withBody.bodyText)

        let head = try exchange(port: port, "HEAD /haproxy.cfg HTTP/1.1\r\nHost: stats\r\n\r\n", method: "HEAD")
        XCTAssertEqual(head.status, 200)
        XCTAssertGreaterThan(Int(head.header("Content-Length") ?? "") ?? 0, 0, "HEAD carries the GET's length")
        XCTAssertEqual(head.body, [])

        let missing = try exchange(port: port, "GET /nope HTTP/1.1\r\nHost: stats\r\n\r\n")
        XCTAssertEqual(missing.status, 404)
        XCTAssertEqual(missing.bodyText, "not found: try /, /;csv, /metrics, /healthz or /haproxy.cfg\n")

        // Without `stats admin` a posted action is refused, the way haproxy refuses it.
        let post = try exchange(port: port, "POST / HTTP/1.1\r\nHost: stats\r\nContent-Length: 24\r\n\r\ns=s1&action=maint&b=main")
        XCTAssertEqual(post.status, 303)
        XCTAssertEqual(post.header("Location"), "/;st=DENY")
        let put = try exchange(port: port, "PUT / HTTP/1.1\r\nHost: stats\r\nContent-Length: 4\r\n\r\nabcd")
        XCTAssertEqual(put.status, 405)
        XCTAssertEqual(put.header("Allow"), "GET, HEAD")
    }

    func testDemoBackendsAnswerThroughTheProxyInRotation() throws {
        let (balancer, port, backends) = try startDemo()
        let names = try (1...6).map { _ in
            let response = try exchange(port: port, "GET / HTTP/1.1\r\nHost: demo\r\n\r\n", expectClose: false)
            XCTAssertEqual(response.status, 200, tail(balancer))
            XCTAssertEqual(response.header("Content-Type"), "text/plain")
            return response.bodyText
        }
        let expected = backends.enumerated().map { "Hello from demo backend \($0 + 1) (127.0.0.1:\($1))\n" }
        assertRotation(names, of: expected)

        // Any method, any target; a body is read first, in either framing.
        for request in [
            "POST /x?y HTTP/1.1\r\nHost: demo\r\nContent-Length: 5\r\n\r\nhello",
            "PUT / HTTP/1.1\r\nHost: demo\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n",
        ] {
            let response = try exchange(port: backends[0], request)
            XCTAssertEqual(response.status, 200, request)
            XCTAssertEqual(response.bodyText, expected[0], request)
        }
        let head = try exchange(port: backends[1], "HEAD / HTTP/1.1\r\nHost: demo\r\n\r\n", method: "HEAD")
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.header("Content-Length"), "\(expected[1].utf8.count)")
        XCTAssertEqual(head.body, [])
    }

    /// Malformed requests get the proxy's own canned 4xx from both servers.
    func testMalformedRequestsGetAClear4xx() throws {
        let (_, statsPort) = try startWithStats(servers: try startStampServers(["s1"]))
        let (_, _, backends) = try startDemo()
        let cases: [(request: String, status: Int)] = [
            ("GARBAGE\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),   // no Host
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: a\n\n", 400),
            ("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
            ("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "x", count: 20_000))\r\n\r\n", 431),
        ]
        for port in [statsPort, backends[0]] {
            for (request, status) in cases {
                let response = try exchange(port: port, request)
                XCTAssertEqual(response.status, status, "port \(port): \(request.prefix(80))")
                XCTAssertEqual(response.header("Connection"), "close")
            }
        }
    }

    /// A request that starts and stalls gets 408 once the server's 2 s are up.
    func testStalledRequestGets408() throws {
        let (_, statsPort) = try startWithStats(servers: try startStampServers(["s1"]))
        let (_, _, backends) = try startDemo()
        for port in [statsPort, backends[0]] {
            let connection = try HTTPClientConnection(port: port)
            defer { connection.close() }
            try connection.send("GET / HTTP/1.1\r\nHost: a\r\n")
            let response = try connection.readResponse(timeout: 10)
            XCTAssertEqual(response.status, 408, "port \(port)")
            XCTAssertTrue(connection.waitForClose(timeout: 5))
        }
    }
}
