// Discovery's HTTP client against TestSupport's scriptable HTTP server: framing,
// keep-alive, timeouts, streaming and cancellation.
import Balancer
@testable import Discovery
import TestSupport
import XCTest

final class HTTPClientTests: XCTestCase {
    func testURLParsing() throws {
        let plain = try HTTPURL(parsing: "http://127.0.0.1:8500")
        XCTAssertEqual(plain, HTTPURL(host: "127.0.0.1", port: 8500))
        XCTAssertEqual(try HTTPURL(parsing: "HTTP://consul.local/").port, 80)
        XCTAssertEqual(try HTTPURL(parsing: "http://[::1]:8500/a/b/").pathPrefix, "/a/b")
        XCTAssertEqual(try HTTPURL(parsing: "http://[::1]:8500").host, "::1")
        XCTAssertEqual(try HTTPURL(parsing: "http://[::1]:8500/x").description, "http://[::1]:8500/x")
        for bad in ["https://h:1", "h:1", "http://:1", "http://h:0", "http://h:99999", "http://h:1/?q", "http://u@h:1"] {
            XCTAssertThrowsError(try HTTPURL(parsing: bad), bad) { error in
                XCTAssertTrue("\(error)".contains(bad), "\(error)")
            }
        }
    }

    func testContentLengthChunkedAndKeepAlive() throws {
        let server = try HTTPTestServer(name: "s1")
        defer { server.stop() }
        let client = HTTPClient(url: HTTPURL(host: "127.0.0.1", port: server.port))
        let plain = try client.get("/hello", timeout: .seconds(5))
        XCTAssertEqual(plain.status, 200)
        XCTAssertEqual(plain.bodyText, "s1")
        XCTAssertEqual(plain.header("x-path"), "/hello")

        let chunked = try client.get("/bytes/100000", timeout: .seconds(5))
        XCTAssertEqual(chunked.body, HTTPTestServer.pattern(count: 100000))

        let echoed = try client.put("/echo", body: Array("ping".utf8), timeout: .seconds(5))
        XCTAssertEqual(echoed.bodyText, "ping")
        let none = try client.get("/status/204", timeout: .seconds(5))
        XCTAssertEqual(none.status, 204)
        XCTAssertEqual(server.acceptedCount, 1, "one kept-alive connection for every request")

        let untilClose = try client.get("/close-delimited", timeout: .seconds(5))
        XCTAssertEqual(untilClose.status, 200)
        XCTAssertFalse(untilClose.body.isEmpty)
        XCTAssertEqual(try client.get("/again", timeout: .seconds(5)).bodyText, "s1")
        XCTAssertEqual(server.acceptedCount, 2)
    }

    func testStaleKeptAliveConnectionIsRetriedOnce() throws {
        let server = try HTTPTestServer(name: "once", mode: .respondOnce)
        defer { server.stop() }
        let client = HTTPClient(url: HTTPURL(host: "127.0.0.1", port: server.port))
        for _ in 1...3 {
            XCTAssertEqual(try client.get("/", timeout: .seconds(5)).bodyText, "once")
            sleepSeconds(0.02)   // let the server's close arrive
        }
        XCTAssertEqual(server.acceptedCount, 3)
    }

    func testTimeoutsAndErrorsSayWhatFailed() throws {
        let silent = try HTTPTestServer(name: "silent", mode: .neverAnswer)
        defer { silent.stop() }
        let client = HTTPClient(url: HTTPURL(host: "127.0.0.1", port: silent.port))
        let start = monotonicSeconds()
        XCTAssertThrowsError(try client.get("/", timeout: .milliseconds(300))) { error in
            XCTAssertEqual("\(error)", "no response within 300ms")
        }
        XCTAssertLessThan(monotonicSeconds() - start, 1.0)

        let closing = try HTTPTestServer(name: "closing", mode: .closeAfterHead)
        defer { closing.stop() }
        XCTAssertThrowsError(try HTTPClient(url: HTTPURL(host: "127.0.0.1", port: closing.port)).get("/", timeout: .seconds(2))) { error in
            XCTAssertEqual("\(error)", "connection closed by the server without a response")
        }

        let garbage = try HTTPTestServer(name: "garbage", mode: .reply(Array("HELLO\r\n\r\n".utf8)))
        defer { garbage.stop() }
        XCTAssertThrowsError(try HTTPClient(url: HTTPURL(host: "127.0.0.1", port: garbage.port)).get("/", timeout: .seconds(2))) { error in
            XCTAssertTrue("\(error)".hasPrefix("malformed response: status line"), "\(error)")
        }

        let port = try freePort()
        XCTAssertThrowsError(try HTTPClient(url: HTTPURL(host: "127.0.0.1", port: port)).get("/", timeout: .seconds(2))) { error in
            XCTAssertEqual("\(error)", "connect to 127.0.0.1:\(port): Connection refused")
        }
    }

    /// Sends `response` from a server that then closes, and returns what `get` made of it.
    private func getReply(_ response: String) throws -> Discovery.HTTPResponse {
        let server = try HTTPTestServer(name: "reply", mode: .reply(Array(response.utf8)))
        defer { server.stop() }
        return try HTTPClient(url: HTTPURL(host: "127.0.0.1", port: server.port)).get("/", timeout: .seconds(2))
    }

    private func assertGetFails(_ response: String, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try getReply(response), file: file, line: line) { error in
            XCTAssertEqual("\(error)", message, file: file, line: line)
        }
    }

    func testChunkedBodyWithExtensionsAndTrailersIsDecoded() throws {
        let response = try getReply("HTTP/1.1 200 OK\r\nX-Consul-Index: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "2;name=\"a;b\"\r\n[{\r\n0A \r\n\"ID\":\"w1\"}\r\n1\r\n]\r\n0\r\nX-Trailer: yes\r\n\r\n")
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.header("x-consul-index"), "7")
        XCTAssertEqual(response.bodyText, "[{\"ID\":\"w1\"}]")
    }

    func testInterimResponsesAreSkipped() throws {
        let response = try getReply("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.head.reason, "OK")
        XCTAssertEqual(response.bodyText, "ok")
    }

    func testBadHeadsAreRefusedWithTheReason() {
        assertGetFails("HTTP/2 200\r\n\r\n", "malformed response: status line 'HTTP/2 200'")
        assertGetFails("HTTP/1.1 20 OK\r\n\r\n", "malformed response: status line 'HTTP/1.1 20 OK'")
        assertGetFails("HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n", "malformed response: head: obsFold")
        assertGetFails("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                       "malformed response: head: conflictingContentLength")
        assertGetFails("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
                       "malformed response: head: contentLengthWithTransferEncoding")
        assertGetFails("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "malformed response: head: badTransferEncoding")
        assertGetFails("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed response: head: badContentLength")
        assertGetFails("HTTP/1.1 200 OK\r\nX-Big: \(String(repeating: "x", count: 70_000))\r\n\r\n",
                       "malformed response: head larger than 65536 bytes")
    }

    func testTruncatedAndMalformedBodies() {
        let lengthHead = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        assertGetFails(lengthHead + "abc", "connection closed by the server after \(lengthHead.utf8.count + 3) bytes of an incomplete response")
        let chunkedHead = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for cut in ["5\r\nab", "5\r\nabcde\r\n", "5\r\nabcde\r\n0\r\n"] {
            assertGetFails(chunkedHead + cut,
                           "connection closed by the server after \((chunkedHead + cut).utf8.count) bytes of an incomplete response")
        }
        let cutHead = "HTTP/1.1 200 OK\r\nContent-"
        assertGetFails(cutHead, "connection closed by the server after \(cutHead.utf8.count) bytes of an incomplete response")
        assertGetFails(chunkedHead + "zz\r\n", "malformed response: chunked body: badChunkSize")
        assertGetFails(chunkedHead + "2\r\nabc\r\n", "malformed response: chunked body: missingCRLF")
    }

    func testBodyLargerThanTheLimitIsRefused() throws {
        let server = try HTTPTestServer(name: "big")
        defer { server.stop() }
        let client = HTTPClient(url: HTTPURL(host: "127.0.0.1", port: server.port))
        client.maximumBodySize = 50_000
        XCTAssertThrowsError(try client.get("/bytes/100000", timeout: .seconds(5))) { error in
            XCTAssertEqual("\(error)", "response larger than 50000 bytes")
        }
        XCTAssertEqual(try client.get("/bytes/40000", timeout: .seconds(5)).body, HTTPTestServer.pattern(count: 40000),
                       "the client recovers on a new connection")
    }

    func testStreamDeliversLinesAcrossChunks() throws {
        let server = try HTTPTestServer(name: "stream")
        defer { server.stop() }
        let client = HTTPClient(url: HTTPURL(host: "127.0.0.1", port: server.port))
        let text = (1...500).map { "{\"event\":\($0)}" }.joined(separator: "\r\n") + "\nlast"
        var lines: [String] = []
        let head = try client.stream(HTTPRequest(method: "POST", target: "/echo-chunked", body: Array(text.utf8)), idleTimeout: .seconds(5)) {
            lines.append(String(decoding: $0, as: UTF8.self))
            return true
        }
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.header("Transfer-Encoding"), "chunked")
        XCTAssertEqual(lines, (1...500).map { "{\"event\":\($0)}" } + ["last"])

        // Stopping early closes the connection (the rest of the body is unread).
        var taken = 0
        try client.stream(HTTPRequest(method: "POST", target: "/echo-chunked", body: Array(text.utf8)), idleTimeout: .seconds(5)) { _ in
            taken += 1
            return taken < 3
        }
        XCTAssertEqual(taken, 3)
        XCTAssertEqual(try client.get("/after", timeout: .seconds(5)).bodyText, "stream")

        XCTAssertThrowsError(try client.stream(HTTPRequest(method: "GET", target: "/status/503"), idleTimeout: .seconds(5)) { _ in true }) { error in
            XCTAssertTrue("\(error)".hasPrefix("HTTP 503"), "\(error)")
        }
    }

    func testStopSignalCancelsAWaitingRequest() throws {
        let silent = try HTTPTestServer(name: "silent", mode: .neverAnswer)
        defer { silent.stop() }
        let stop = StopSignal()
        let client = HTTPClient(url: HTTPURL(host: "127.0.0.1", port: silent.port), stopSignal: stop)
        let trigger = JoinableThread(name: "ts-stopper") {
            sleepSeconds(0.2)
            stop.trigger()
        }
        defer { trigger.join() }
        let start = monotonicSeconds()
        XCTAssertThrowsError(try client.stream(HTTPRequest(method: "GET", target: "/watch"), idleTimeout: .seconds(60)) { _ in true }) { error in
            XCTAssertEqual("\(error)", "cancelled")
        }
        XCTAssertLessThan(monotonicSeconds() - start, 1.0)
        XCTAssertFalse(stop.sleep(for: .seconds(10)), "a triggered signal ends every later wait at once")
    }
}
