// HTTP mode, hostile input (request smuggling and parser-confusion classes): every one is
// answered 400 (or 431 where the head is too big), the connection is closed, and the request
// never reaches a server. The server records every head it receives, so "never reaches" is
// checked, not assumed.

import Foundation
import Glibc
import TestSupport
import XCTest

final class HTTPHostileRequestTests: XCTestCase {
    private static let host = "Host: test.local\r\n"

    /// Hostile heads: (what, raw request, accepted statuses).
    private static let cases: [(String, String, Set<Int>)] = {
        let post = "POST / HTTP/1.1\r\n\(host)"
        var cases: [(String, String, Set<Int>)] = [
            ("Content-Length and Transfer-Encoding", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [400]),
            ("Transfer-Encoding and Content-Length", post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", [400]),
            ("two differing Content-Length", post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", [400]),
            ("differing Content-Length list", post + "Content-Length: 5, 6\r\n\r\nhello!", [400]),
            ("empty Content-Length", post + "Content-Length: \r\n\r\n", [400]),
            ("negative Content-Length", post + "Content-Length: -1\r\n\r\n", [400]),
            ("non-digit Content-Length", post + "Content-Length: abc\r\n\r\n", [400]),
            ("signed Content-Length", post + "Content-Length: +5\r\n\r\nhello", [400]),
            ("hex Content-Length", post + "Content-Length: 0x5\r\n\r\nhello", [400]),
            ("overflowing Content-Length", post + "Content-Length: 99999999999999999999999\r\n\r\n", [400]),
            ("Transfer-Encoding: chunked, gzip", post + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", [400]),
            ("Transfer-Encoding: chunked, chunked", post + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", [400]),
            ("Transfer-Encoding chunked twice", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [400]),
            ("Transfer-Encoding: gzip", post + "Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n", [400]),
            ("Transfer-Encoding: identity", post + "Transfer-Encoding: identity\r\n\r\n", [400]),
            ("Transfer-Encoding: gzip, chunked", post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", [400]),
            ("whitespace before colon (Host)", "GET / HTTP/1.1\r\nHost : test.local\r\n\r\n", [400]),
            ("whitespace before colon (Content-Length)", post + "Content-Length : 5\r\n\r\nhello", [400]),
            ("non-token char in field name", "GET / HTTP/1.1\r\n\(host)X(Bad): 1\r\n\r\n", [400]),
            ("space inside field name", "GET / HTTP/1.1\r\n\(host)X Bad: 1\r\n\r\n", [400]),
            ("NUL in a value", "GET / HTTP/1.1\r\n\(host)X-A: a\0b\r\n\r\n", [400]),
            ("bare CR in a value", "GET / HTTP/1.1\r\n\(host)X-A: a\rb\r\n\r\n", [400]),
            ("bare LF in a value", "GET / HTTP/1.1\r\n\(host)X-A: a\nb\r\n\r\n", [400]),
            ("obs-fold continuation line", "GET / HTTP/1.1\r\n\(host)X-A: a\r\n b\r\n\r\n", [400]),
            ("request line without version", "GET /\r\n\(host)\r\n", [400]),
            ("request line with double space", "GET  / HTTP/1.1\r\n\(host)\r\n", [400]),
            ("request line with extra word", "GET / HTTP/1.1 extra\r\n\(host)\r\n", [400]),
            ("request line with bad version", "GET / FOO/1.1\r\n\(host)\r\n", [400]),
            ("method with a non-token char", "G(T / HTTP/1.1\r\n\(host)\r\n", [400]),
            ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", [400]),
            ("two different Host", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", [400]),
        ]
        let manyFields = (1...101).map { "X-F\($0): v\r\n" }.joined()
        cases.append(("101 header fields", "GET / HTTP/1.1\r\n\(host)\(manyFields)\r\n", [400, 431]))
        let bigField = "X-Big: " + String(repeating: "a", count: 17 * 1024) + "\r\n"
        cases.append(("head over 16 KiB", "GET / HTTP/1.1\r\n\(host)\(bigField)\r\n", [431, 400]))
        return cases
    }()

    func testHostileHeadsGet400AndNeverReachAServer() throws {
        let servers = try startHTTPServers(["s1", "s2"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))

        var failures: [String] = []
        for (what, raw, statuses) in Self.cases {
            let connection = try connectHTTP(port)
            defer { connection.close() }
            do {
                try connection.send(raw)
                guard let response = try connection.readResponseIfAny(timeout: 3) else {
                    failures.append("\(what): connection closed without a response (want \(statuses.sorted()))")
                    continue
                }
                if !statuses.contains(response.status) {
                    failures.append("\(what): got \(response.statusLine) (want \(statuses.sorted())) for \(show(raw).prefix(160))")
                    continue
                }
                if response.header("Connection")?.lowercased() != "close" {
                    failures.append("\(what): \(response.status) without 'connection: close': \(response)")
                }
                if !connection.waitForClose(timeout: 2) {
                    failures.append("\(what): connection not closed after the \(response.status)")
                }
            } catch {
                failures.append("\(what): \(error)")
            }
        }
        sleepSeconds(0.2)  // anything forwarded late would be recorded by now
        let reached = servers.flatMap(\.receivedHeads)
        XCTAssertEqual(failures, [], "\n" + failures.joined(separator: "\n"))
        XCTAssertEqual(reached.map(show), [], "hostile requests reached a server")
        XCTAssertTrue(balancer.isRunning, "balancerd died\n\(tail(balancer))")

        // The access log: every one of them is a 400/431, and a malformed request line is
        // logged as <BADREQ> with termination state PR--.
        let log = httpLogLines(balancer)
        XCTAssertEqual(log.filter { $0.status == 200 }.count, 0)
        XCTAssertTrue(
            log.contains { $0.status == 400 && $0.request == "<BADREQ>" && $0.termination == "PR--" },
            "no 400 logged as \"<BADREQ>\" with PR--\n\(tail(balancer))"
        )
    }

    /// Chunked bodies with a bad or overflowing chunk size. The head is valid and may already
    /// have been forwarded, so what is asserted is: the client gets a 400 or a close (never a
    /// 200), the connection does end, and no server ever sees a *complete* request.
    func testBadChunkSizesNeverCompleteARequest() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let head = "POST /echo HTTP/1.1\r\n\(Self.host)Transfer-Encoding: chunked\r\n\r\n"
        let bodies = [
            ("non-hex chunk size", "zz\r\nhello\r\n0\r\n\r\n"),
            ("empty chunk size", "\r\nhello\r\n0\r\n\r\n"),
            ("overflowing chunk size", "FFFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"),
            ("negative chunk size", "-5\r\nhello\r\n0\r\n\r\n"),
            ("chunk data longer than its size", "3\r\nhello\r\n0\r\n\r\n"),
        ]
        var failures: [String] = []
        for (what, body) in bodies {
            let connection = try connectHTTP(port)
            defer { connection.close() }
            do {
                try connection.send(head + body)
                if let response = try connection.readResponseIfAny(timeout: 3), response.status != 400 {
                    failures.append("\(what): got \(response) (want 400 or a close)")
                }
                if !connection.waitForClose(timeout: 3) {
                    failures.append("\(what): connection not closed")
                }
            } catch {
                failures.append("\(what): \(error)")
            }
        }
        sleepSeconds(0.2)
        XCTAssertEqual(failures, [], "\n" + failures.joined(separator: "\n"))
        XCTAssertEqual(servers[0].completeRequests.map { show($0.head) + " body=\($0.body.count)" }, [], "a request with a bad chunk completed at the server")
        XCTAssertTrue(balancer.isRunning, "balancerd died\n\(tail(balancer))")
    }

    /// A hostile request pipelined behind two good ones: the good ones are answered in order,
    /// then 400 and the close; the hostile one never reaches a server.
    func testHostileRequestPipelinedAfterGoodOnes() throws {
        let servers = try startHTTPServers(["s1"])
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address))
        let connection = try connectHTTP(port)
        try connection.send(
            getRequest("/good1") + getRequest("/good2")
                + "POST /evil HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        var responses: [String] = []
        do {
            for expected in ["/good1", "/good2"] {
                let response = try connection.readResponse()
                responses.append(response.statusLine)
                XCTAssertEqual(response.header("X-Path"), expected, "\(response)")
            }
            let last = try connection.readResponse()
            XCTAssertEqual(last.status, 400, "\(last)")
        } catch {
            return XCTFail("after \(responses): \(error)\nserver saw: \(servers[0].receivedHeads.map(show))\n\(tail(balancer))")
        }
        XCTAssertTrue(connection.waitForClose(timeout: 2), "connection not closed after the 400")
        sleepSeconds(0.2)
        XCTAssertEqual(servers[0].receivedHeads.filter { $0.contains("/evil") }.map(show), [])
        XCTAssertEqual(servers[0].completeRequests.map(\.target), ["/good1", "/good2"])
    }
}
