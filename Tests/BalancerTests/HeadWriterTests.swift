import XCTest
@testable import Balancer

final class HeadWriterTests: XCTestCase {
    private let client = Array("192.0.2.7".utf8)

    private func parsed(_ text: String, kind: HTTPHeadParser.Kind, file: StaticString = #filePath, line: UInt = #line) -> HTTPHead? {
        var parser = HTTPHeadParser(kind: kind)
        let outcome = Array(text.utf8).withUnsafeBytes { parser.parse($0) }
        guard case .complete(let head) = outcome else {
            XCTFail("expected a complete head, got \(outcome)", file: file, line: line)
            return nil
        }
        return head
    }

    private func request(
        _ text: String, forwardFor: Bool = true, keepAlive: Bool = true, file: StaticString = #filePath, line: UInt = #line
    ) -> String {
        guard let head = parsed(text, kind: .request, file: file, line: line) else { return "" }
        var output: [UInt8] = []
        Array(text.utf8).withUnsafeBytes { input in
            HTTPHeadWriter.writeRequest(head, from: input, clientAddress: client, forwardFor: forwardFor,
                                        keepAliveToServer: keepAlive, into: &output)
        }
        assertReparses(output, as: head, kind: .request, file: file, line: line)
        return String(decoding: output, as: UTF8.self)
    }

    private func response(
        _ text: String, requestVersion: HTTPVersion = .http11, keepAlive: Bool = true,
        file: StaticString = #filePath, line: UInt = #line
    ) -> String {
        guard let head = parsed(text, kind: .response, file: file, line: line) else { return "" }
        var output: [UInt8] = []
        Array(text.utf8).withUnsafeBytes { input in
            HTTPHeadWriter.writeResponse(head, from: input, requestVersion: requestVersion, keepAliveToClient: keepAlive, into: &output)
        }
        assertReparses(output, as: head, kind: .response, file: file, line: line)
        return String(decoding: output, as: UTF8.self)
    }

    /// What we write must itself be a valid head with the same meaning.
    private func assertReparses(_ output: [UInt8], as original: HTTPHead, kind: HTTPHeadParser.Kind, file: StaticString, line: UInt) {
        var parser = HTTPHeadParser(kind: kind)
        guard case .complete(let head) = output.withUnsafeBytes({ parser.parse($0) }) else {
            return XCTFail("the written head does not parse", file: file, line: line)
        }
        XCTAssertEqual(head.length, output.count, file: file, line: line)
        XCTAssertEqual(head.method, original.method, file: file, line: line)
        XCTAssertEqual(head.status, original.status, file: file, line: line)
        XCTAssertEqual(head.framing, original.framing, file: file, line: line)
        XCTAssertEqual(head.upgrade, original.upgrade, file: file, line: line)
        XCTAssertTrue(head.contentLengthIsCanonical, file: file, line: line)
    }

    // MARK: requests

    func testRequestWithForwardedFor() {
        XCTAssertEqual(
            request("GET /x?y HTTP/1.1\r\nHost: example.com\r\nAccept:  */*  \r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"),
            "GET /x?y HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n")
        XCTAssertEqual(request("GET / HTTP/1.1\r\nHost: h\r\n\r\n", forwardFor: false), "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    func testHopByHopFieldsAreDropped() {
        let text = "POST /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n"
            + "TE: trailers\r\nTrailer: X-Sum\r\nProxy-Connection: keep-alive\r\nX-Secret: 1\r\nUpgrade: h2c\r\n"
            + "Transfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n"
        XCTAssertEqual(
            request(text, forwardFor: false),
            "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n")
    }

    func testConnectionCloseToServer() {
        XCTAssertEqual(
            request("GET / HTTP/1.1\r\nHost: h\r\n\r\n", forwardFor: false, keepAlive: false),
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        XCTAssertEqual(
            request("GET / HTTP/1.0\r\n\r\n", forwardFor: false, keepAlive: false),
            "GET / HTTP/1.0\r\nConnection: close\r\n\r\n")
    }

    func testHTTP10KeepAliveToServer() {
        XCTAssertEqual(
            request("GET / HTTP/1.0\r\nConnection: keep-alive\r\nKeep-Alive: 300\r\n\r\n"),
            "GET / HTTP/1.0\r\nX-Forwarded-For: 192.0.2.7\r\nConnection: keep-alive\r\n\r\n")
    }

    func testUpgradeRequestKeepsUpgrade() {
        let text = "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
            + "Sec-WebSocket-Key: k\r\n\r\n"
        XCTAssertEqual(
            request(text, keepAlive: false),
            "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n"
                + "X-Forwarded-For: 192.0.2.7\r\nConnection: upgrade\r\n\r\n")
        // Without the Connection option, Upgrade is just a hop-by-hop field.
        XCTAssertEqual(
            request("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", forwardFor: false),
            "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    func testContentLengthListIsSentAsOneValue() {
        XCTAssertEqual(
            request("POST / HTTP/1.1\r\nContent-Length: 7, 7\r\nHost: h\r\ncontent-length: 7\r\n\r\n", forwardFor: false),
            "POST / HTTP/1.1\r\nContent-Length: 7\r\nHost: h\r\n\r\n")
        XCTAssertEqual(
            request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0012\r\n\r\n", forwardFor: false),
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0012\r\n\r\n")
    }

    func testLeadingEmptyLinesAreNotForwarded() {
        XCTAssertEqual(request("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", forwardFor: false), "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    func testOutputIsAppendedTo() throws {
        let text = "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
        let head = try XCTUnwrap(parsed(text, kind: .request))
        var output = Array("previous".utf8)
        output.reserveCapacity(1024)
        Array(text.utf8).withUnsafeBytes { input in
            HTTPHeadWriter.writeRequest(head, from: input, clientAddress: client, forwardFor: false, keepAliveToServer: true, into: &output)
        }
        XCTAssertEqual(String(decoding: output, as: UTF8.self), "previousGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    // MARK: responses

    func testResponseKeepAlive() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n\r\n"
        XCTAssertEqual(response(text), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        XCTAssertEqual(response(text, requestVersion: .http10),
                       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n")
        XCTAssertEqual(response(text, keepAlive: false), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
        // An HTTP/1.0 status line needs the keep-alive option even for an HTTP/1.1 client.
        XCTAssertEqual(response("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n"),
                       "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n")
    }

    func testResponseStatusLineIsVerbatim() {
        XCTAssertEqual(response("HTTP/1.0 404 Not  Found \r\nServer: s\r\n\r\n", keepAlive: false),
                       "HTTP/1.0 404 Not  Found \r\nServer: s\r\nConnection: close\r\n\r\n")
        XCTAssertEqual(response("HTTP/1.1 204\r\n\r\n"), "HTTP/1.1 204\r\n\r\n")
    }

    func testSwitchingProtocols() {
        XCTAssertEqual(
            response("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n",
                     keepAlive: false),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nConnection: upgrade\r\n\r\n")
    }

    func testResponseDropsFieldsNamedByConnection() {
        XCTAssertEqual(
            response("HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    }

    func testDecimalWriter() {
        for value in [0, 7, 10, 99, 100, 12345, 1 << 62] {
            var output: [UInt8] = []
            HTTPSyntax.appendDecimal(value, to: &output)
            XCTAssertEqual(String(decoding: output, as: UTF8.self), String(value))
        }
    }
}
