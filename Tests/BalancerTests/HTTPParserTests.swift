import XCTest
@testable import Balancer

final class HTTPParserTests: XCTestCase {
    // MARK: helpers

    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// Parses all at once, then byte by byte and in a few chunk sizes, and checks that the
    /// outcomes agree: the incremental scan must not depend on how the bytes arrive.
    private func parse(
        _ input: [UInt8], kind: HTTPHeadParser.Kind = .request, limits: HTTPHeadParser.Limits = .init(),
        file: StaticString = #filePath, line: UInt = #line
    ) -> HTTPHeadParser.Outcome {
        var parser = HTTPHeadParser(kind: kind, limits: limits)
        let whole = input.withUnsafeBytes { parser.parse($0) }
        for chunk in [1, 2, 3, 7, 64] {
            var incremental = HTTPHeadParser(kind: kind, limits: limits)
            var outcome = HTTPHeadParser.Outcome.needMore
            var end = 0
            while true {
                end = min(end + chunk, input.count)
                outcome = input[..<end].withUnsafeBytes { incremental.parse($0) }
                if case .needMore = outcome, end < input.count { continue }
                break
            }
            XCTAssertEqual(outcome, whole, "chunks of \(chunk)", file: file, line: line)
        }
        return whole
    }

    private func parse(
        _ text: String, kind: HTTPHeadParser.Kind = .request, file: StaticString = #filePath, line: UInt = #line
    ) -> HTTPHeadParser.Outcome {
        parse(bytes(text), kind: kind, file: file, line: line)
    }

    private func head(
        _ text: String, kind: HTTPHeadParser.Kind = .request, file: StaticString = #filePath, line: UInt = #line
    ) -> HTTPHead? {
        let outcome = parse(text, kind: kind, file: file, line: line)
        guard case .complete(let head) = outcome else {
            XCTFail("expected a complete head, got \(outcome)", file: file, line: line)
            return nil
        }
        return head
    }

    private func assertInvalid(
        _ text: String, _ error: HTTPParseError, kind: HTTPHeadParser.Kind = .request,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(parse(text, kind: kind, file: file, line: line), .invalid(error), file: file, line: line)
    }

    private func string(_ text: String, _ range: Range<Int>) -> String {
        String(decoding: bytes(text)[range], as: UTF8.self)
    }

    private func fieldNames(_ head: HTTPHead, _ text: String) -> [String] {
        head.fields.map { string(text, $0.name) }
    }

    // MARK: character classes

    func testTokenCharactersMatchRFC9110() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for b in 0...255 {
            XCTAssertEqual(HTTPSyntax.isTokenChar(UInt8(b)), tchar.contains(UInt8(b)), "byte \(b)")
        }
    }

    // MARK: good requests

    func testGetWithHost() throws {
        let text = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n"
        let head = try XCTUnwrap(head(text))
        XCTAssertEqual(head.method, .get)
        XCTAssertEqual(string(text, head.methodRange), "GET")
        XCTAssertEqual(string(text, head.target), "/index.html?q=1")
        XCTAssertEqual(head.version, .http11)
        XCTAssertEqual(string(text, try XCTUnwrap(head.hostRange)), "example.com")
        XCTAssertEqual(head.framing, BodyFraming.none)
        XCTAssertTrue(head.keepAlive)
        XCTAssertFalse(head.expectContinue)
        XCTAssertFalse(head.upgrade)
        XCTAssertEqual(head.length, text.utf8.count)
        XCTAssertEqual(head.start, 0)
        XCTAssertEqual(string(text, head.startLine), "GET /index.html?q=1 HTTP/1.1")
        XCTAssertEqual(fieldNames(head, text), ["Host", "User-Agent"])
        XCTAssertEqual(head.hopByHop, [])
    }

    func testFieldValuesAreTrimmedOfOWS() throws {
        let text = "GET / HTTP/1.1\r\nHost:example.com\r\nX-A: \t a b \t\r\nX-Empty:\r\nX-Spaces:   \r\n\r\n"
        let head = try XCTUnwrap(head(text))
        XCTAssertEqual(head.fields.map { string(text, $0.value) }, ["example.com", "a b", "", ""])
    }

    func testObsTextIsAllowedInValues() throws {
        let input: [UInt8] = bytes("GET / HTTP/1.1\r\nHost: h\r\nX-A: caf") + [0xC3, 0xA9] + bytes("\r\n\r\n")
        guard case .complete(let head) = parse(input) else { return XCTFail() }
        XCTAssertEqual(head.fields[1].value.count, 5)
    }

    func testPostWithContentLengthLeavesTheBody() throws {
        let text = "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET"
        let head = try XCTUnwrap(head(text))
        XCTAssertEqual(head.method, .post)
        XCTAssertEqual(head.framing, .contentLength(5))
        XCTAssertEqual(string(text, head.length..<(head.length + 5)), "hello")
        XCTAssertTrue(head.contentLengthIsCanonical)
    }

    func testContentLengthZero() throws {
        let head = try XCTUnwrap(head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"))
        XCTAssertEqual(head.framing, .contentLength(0))
    }

    func testChunkedRequest() throws {
        let text = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"
        let head = try XCTUnwrap(head(text))
        XCTAssertEqual(head.framing, .chunked)
        XCTAssertEqual(head.hopByHop, [2])  // Trailer
        var decoder = ChunkedDecoder()
        let body = Array(text.utf8[text.utf8.index(text.utf8.startIndex, offsetBy: head.length)...])
        XCTAssertEqual(body.withUnsafeBytes { decoder.consume($0) }, .complete(consumed: body.count))
    }

    func testTransferEncodingIgnoresEmptyListElements() throws {
        let head = try XCTUnwrap(head("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked,\r\n\r\n"))
        XCTAssertEqual(head.framing, .chunked)
    }

    func testIdenticalContentLengthsAreMerged() throws {
        let list = try XCTUnwrap(head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"))
        XCTAssertEqual(list.framing, .contentLength(5))
        XCTAssertFalse(list.contentLengthIsCanonical)
        let twice = try XCTUnwrap(head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"))
        XCTAssertEqual(twice.framing, .contentLength(5))
        XCTAssertFalse(twice.contentLengthIsCanonical)
    }

    func testKeepAliveDefaults() throws {
        XCTAssertEqual(head("GET / HTTP/1.1\r\nHost: h\r\n\r\n")?.keepAlive, true)
        XCTAssertEqual(head("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")?.keepAlive, false)
        XCTAssertEqual(head("GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n")?.keepAlive, false)
        XCTAssertEqual(head("GET / HTTP/1.0\r\n\r\n")?.keepAlive, false)
        XCTAssertEqual(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")?.keepAlive, true)
        XCTAssertEqual(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nConnection: close\r\n\r\n")?.keepAlive, false)
    }

    func testHTTP10KeepAliveRequest() throws {
        let text = "GET / HTTP/1.0\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"
        let head = try XCTUnwrap(head(text))
        XCTAssertEqual(head.version, .http10)
        XCTAssertNil(head.hostRange)
        XCTAssertTrue(head.keepAlive)
        XCTAssertEqual(head.hopByHop, [0, 1])
    }

    func testPipelinedRequestsAreParsedOneAtATime() throws {
        let text = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HT"
        let input = bytes(text)
        var parser = HTTPHeadParser(kind: .request)
        guard case .complete(let first) = input.withUnsafeBytes({ parser.parse($0) }) else { return XCTFail() }
        XCTAssertEqual(string(text, first.target), "/a")
        XCTAssertEqual(first.length, 28)
        // The caller hands the rest, from the next head's start, after a reset.
        parser.reset()
        let rest = Array(input[first.length...])
        guard case .complete(let second) = rest.withUnsafeBytes({ parser.parse($0) }) else { return XCTFail() }
        XCTAssertEqual(String(decoding: rest[second.target], as: UTF8.self), "/b")
        parser.reset()
        let last = Array(rest[second.length...])
        XCTAssertEqual(last.withUnsafeBytes { parser.parse($0) }, .needMore)
    }

    func testCompleteOutcomeIsRepeatedUntilReset() {
        let input = bytes("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        var parser = HTTPHeadParser(kind: .request)
        let first = input.withUnsafeBytes { parser.parse($0) }
        XCTAssertEqual(input.withUnsafeBytes { parser.parse($0) }, first)
        parser.reset()
        XCTAssertEqual(input.withUnsafeBytes { parser.parse($0) }, first)
    }

    func testExpectContinue() throws {
        XCTAssertEqual(head("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n")?.expectContinue, true)
        XCTAssertEqual(head("PUT / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n")?.expectContinue, false)
        // RFC 9110 §10.1.1: ignored in HTTP/1.0.
        XCTAssertEqual(head("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")?.expectContinue, false)
    }

    func testWebSocketUpgrade() throws {
        let text = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n"
        let head = try XCTUnwrap(head(text))
        XCTAssertTrue(head.upgrade)
        XCTAssertEqual(head.hopByHop, [1, 2])
        // Upgrade without the Connection option, or in HTTP/1.0, is not an upgrade.
        XCTAssertEqual(self.head("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")?.upgrade, false)
        XCTAssertEqual(self.head("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n")?.upgrade, false)
        XCTAssertEqual(self.head("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")?.upgrade, false)
    }

    func testHopByHopFieldsAndConnectionTokens() throws {
        let text = "GET / HTTP/1.1\r\nHost: h\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\n"
            + "Connection: x-drop, , X-Other\r\nX-Other: 2\r\nX-Keep: 3\r\nx-drop: 4\r\n\r\n"
        let head = try XCTUnwrap(head(text))
        XCTAssertEqual(head.hopByHop, [1, 2, 3, 4, 5, 6, 8])
        XCTAssertTrue(head.keepAlive)
    }

    func testConnectionCannotDropFramingOrHost() throws {
        // "Connection: content-length" must not make us strip the framing of a body.
        let text = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: content-length, host, Transfer-Encoding\r\n\r\nabc"
        let head = try XCTUnwrap(head(text))
        XCTAssertEqual(head.hopByHop, [2])
    }

    func testLeadingEmptyLinesAreSkipped() throws {
        let text = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"
        let head = try XCTUnwrap(head(text))
        XCTAssertEqual(head.start, 4)
        XCTAssertEqual(head.length, text.utf8.count)
        XCTAssertEqual(string(text, head.methodRange), "GET")
        XCTAssertEqual(parse("\r\n\r\n"), .needMore)
    }

    func testMethods() {
        let cases: [(String, HTTPMethod, Bool)] = [
            ("GET", .get, true), ("HEAD", .head, true), ("POST", .post, false), ("PUT", .put, true),
            ("DELETE", .delete, true), ("OPTIONS", .options, true), ("PATCH", .patch, false),
            ("TRACE", .trace, true), ("PROPFIND", .other, false), ("get", .other, false),
        ]
        for (name, method, idempotent) in cases {
            let outcome = parse("\(name) / HTTP/1.1\r\nHost: h\r\n\r\n")
            guard case .complete(let head) = outcome else { XCTFail("\(name): \(outcome)"); continue }
            XCTAssertEqual(head.method, method, name)
            XCTAssertEqual(head.method.isIdempotent, idempotent, name)
        }
        XCTAssertFalse(HTTPMethod.connect.isIdempotent)
    }

    func testNeedMore() {
        XCTAssertEqual(parse(""), .needMore)
        XCTAssertEqual(parse("GET / HTTP/1.1\r\nHost: h\r\n"), .needMore)
        XCTAssertEqual(parse("GET / HTTP/1.1\r\nHost: h\r\n\r"), .needMore)
        XCTAssertEqual(parse("HTTP/1.1 200 OK\r\n", kind: .response), .needMore)
    }

    // MARK: rejected requests

    func testBadRequestLine() {
        for line in [
            "GET  / HTTP/1.1", "GET /  HTTP/1.1", " GET / HTTP/1.1", "GET / HTTP/1.1 ", "GET /", "GET / ",
            "G(T / HTTP/1.1", "GET /a\u{7F} HTTP/1.1", "GET /\u{1} HTTP/1.1", "GET /é HTTP/1.1", "GET\t/ HTTP/1.1",
            "GET / http/1.1", "GET / FOO", "PRI * HTTP/2.0",
        ] {
            assertInvalid("\(line)\r\nHost: h\r\n\r\n", .badRequestLine)
        }
        // The HTTP/2 preface as a client sends it.
        assertInvalid("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", .badRequestLine)
    }

    func testBadVersion() {
        for version in ["HTTP/1.2", "HTTP/2.0", "HTTP/1.10", "HTTP/0.9", "HTTP/", "HTTP/1.1x"] {
            assertInvalid("GET / \(version)\r\nHost: h\r\n\r\n", .badVersion)
        }
    }

    func testBareLineEndings() {
        assertInvalid("GET / HTTP/1.1\nHost: h\r\n\r\n", .bareLineFeed)
        assertInvalid("GET / HTTP/1.1\r\nHost: h\n\r\n", .bareLineFeed)
        assertInvalid("GET / HTTP/1.1\r\nHost: h\r\n\n", .bareLineFeed)
        assertInvalid("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", .bareLineFeed)
        assertInvalid("GET / HTTP/1.1\r\nX: a\rb\r\nHost: h\r\n\r\n", .bareCarriageReturn)
        assertInvalid("GET / HTTP/1.1\r\r\nHost: h\r\n\r\n", .bareCarriageReturn)
        assertInvalid("GET / HTTP/1.1\r\nHost: h\r\n\r\r\n", .bareCarriageReturn)
    }

    func testBadFieldName() {
        for line in ["Fo(o: x", ": x", "Foo", "Fo o: x", "X-\u{1}: y", "Fo\"o: x"] {
            assertInvalid("GET / HTTP/1.1\r\nHost: h\r\n\(line)\r\n\r\n", .badFieldName)
        }
    }

    func testSpaceBeforeColon() {
        assertInvalid("GET / HTTP/1.1\r\nHost : h\r\n\r\n", .spaceBeforeColon)
        assertInvalid("GET / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 5\r\n\r\n", .spaceBeforeColon)
    }

    func testBadFieldValue() {
        for value in ["a\u{0}b", "a\u{1}b", "\u{7F}", "a\u{1B}[0m"] {
            assertInvalid("GET / HTTP/1.1\r\nHost: h\r\nX: \(value)\r\n\r\n", .badFieldValue)
        }
    }

    func testObsFold() {
        assertInvalid("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", .obsFold)
        assertInvalid("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", .obsFold)
    }

    func testBadContentLength() {
        for value in ["+5", "-1", "5a", "", " ", "1,,1", "1,", "0x5", "5 5", "99999999999999999999", "4611686018427387905",
                      "18446744073709551621", "9223372036854775808"] {
            assertInvalid("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \(value)\r\n\r\n", .badContentLength)
        }
        // 2^62 itself is still accepted.
        XCTAssertEqual(head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4611686018427387904\r\n\r\n")?.framing,
                       .contentLength(1 << 62))
    }

    func testConflictingContentLength() {
        assertInvalid("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", .conflictingContentLength)
        assertInvalid("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", .conflictingContentLength)
        assertInvalid("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 05x\r\n\r\n", .badContentLength, kind: .response)
    }

    func testContentLengthWithTransferEncoding() {
        assertInvalid("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                      .contentLengthWithTransferEncoding)
        assertInvalid("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                      .contentLengthWithTransferEncoding)
        assertInvalid("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                      .contentLengthWithTransferEncoding, kind: .response)
    }

    func testBadTransferEncoding() {
        for value in ["gzip", "identity", "chunked, chunked", "chunked, gzip", "gzip, chunked", "", " , ", "chunked;q=1", "chunkedx"] {
            assertInvalid("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \(value)\r\n\r\n", .badTransferEncoding)
        }
        assertInvalid("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                      .badTransferEncoding)
        assertInvalid("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                      .badTransferEncoding)
        // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
        assertInvalid("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .badTransferEncoding)
        assertInvalid("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", .badTransferEncoding, kind: .response)
        assertInvalid("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", .badTransferEncoding, kind: .response)
    }

    func testHost() {
        assertInvalid("GET / HTTP/1.1\r\n\r\n", .missingHost)
        assertInvalid("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", .conflictingHost)
        // Identical duplicates too, as haproxy does: there is no reason to send two.
        assertInvalid("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", .conflictingHost)
        XCTAssertNotNil(head("GET / HTTP/1.1\r\nHost:\r\n\r\n")?.hostRange)
    }

    func testConnectIsRejected() {
        assertInvalid("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", .connectNotSupported)
        XCTAssertEqual(HTTPParseError.connectNotSupported.requestErrorResponse, .methodNotAllowed)
    }

    func testErrorStatusMapping() {
        XCTAssertEqual(HTTPParseError.headTooLarge.requestErrorResponse.status, 431)
        XCTAssertEqual(HTTPParseError.tooManyFields.requestErrorResponse.status, 431)
        XCTAssertEqual(HTTPParseError.obsFold.requestErrorResponse.status, 400)
        XCTAssertEqual(HTTPParseError.connectNotSupported.requestErrorResponse.status, 405)
    }

    // MARK: limits

    func testHeadSizeLimit() {
        let prefix = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: "
        let suffix = "\r\n\r\n"
        let exact = prefix + String(repeating: "a", count: 16 * 1024 - prefix.utf8.count - suffix.utf8.count) + suffix
        XCTAssertEqual(exact.utf8.count, 16 * 1024)
        if case .complete(let head) = parse(exact) { XCTAssertEqual(head.length, 16 * 1024) } else { XCTFail() }
        let over = prefix + String(repeating: "a", count: 16 * 1024 - prefix.utf8.count - suffix.utf8.count + 1) + suffix
        assertInvalid(over, .headTooLarge)
        // No end of head in 16 KiB at all.
        assertInvalid(prefix + String(repeating: "a", count: 16 * 1024), .headTooLarge)
        XCTAssertEqual(parse(prefix + String(repeating: "a", count: 16 * 1024 - 1 - prefix.utf8.count)), .needMore)
        // Leading empty lines count towards the limit.
        assertInvalid(String(repeating: "\r\n", count: 8 * 1024) + "GET / HTTP/1.1\r\nHost: h\r\n\r\n", .headTooLarge)
    }

    func testFieldCountLimit() {
        func request(fields: Int) -> String {
            "GET / HTTP/1.1\r\nHost: h\r\n" + (1..<fields).map { "X-\($0): v\r\n" }.joined() + "\r\n"
        }
        XCTAssertEqual(head(request(fields: 100))?.fields.count, 100)
        assertInvalid(request(fields: 101), .tooManyFields)
        var parser = HTTPHeadParser(kind: .request, limits: .init(maxHeadBytes: 100, maxFields: 1))
        let input = bytes("GET / HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n")
        XCTAssertEqual(input.withUnsafeBytes { parser.parse($0) }, .invalid(.tooManyFields))
    }

    func testInvalidOutcomeIsRepeated() {
        var parser = HTTPHeadParser(kind: .request)
        let input = bytes("GET / HTTP/1.1\nHost: h\r\n\r\n")
        XCTAssertEqual(input.withUnsafeBytes { parser.parse($0) }, .invalid(.bareLineFeed))
        XCTAssertEqual(input.withUnsafeBytes { parser.parse($0) }, .invalid(.bareLineFeed))
    }

    // MARK: responses

    func testResponse() throws {
        let text = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
        let head = try XCTUnwrap(head(text, kind: .response))
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(string(text, head.reason), "OK")
        XCTAssertEqual(head.version, .http11)
        XCTAssertEqual(head.framing, .contentLength(2))
        XCTAssertTrue(head.keepAlive)
        XCTAssertEqual(head.responseFraming(requestMethod: .get), .contentLength(2))
        XCTAssertEqual(head.responseFraming(requestMethod: .head), BodyFraming.none)
        XCTAssertNil(head.hostRange)
    }

    func testResponseReasons() throws {
        XCTAssertEqual(head("HTTP/1.1 200 \r\n\r\n", kind: .response)?.reason.count, 0)
        XCTAssertEqual(head("HTTP/1.1 200\r\n\r\n", kind: .response)?.status, 200)
        XCTAssertEqual(head("HTTP/1.1 404 Not  Found\t\r\n\r\n", kind: .response)?.reason.count, 11)
        // Host means nothing in a response, duplicates included.
        XCTAssertEqual(head("HTTP/1.1 200 OK\r\nHost: a\r\nHost: b\r\n\r\n", kind: .response)?.hostRange, nil)
    }

    func testBadStatusLine() {
        for line in ["HTTP/1.1 20 OK", "HTTP/1.1 099 Low", "HTTP/1.1 600 High", "HTTP/1.1 200x", "HTTP/1.1  200 OK",
                     "FOO 200 OK", "HTTP/1.1 200 O\u{1}K", "HTTP/1.1", "HTTP/1.1 ", "http/1.1 200 OK"] {
            assertInvalid("\(line)\r\n\r\n", .badStatusLine, kind: .response)
        }
        assertInvalid("HTTP/2.0 200 OK\r\n\r\n", .badVersion, kind: .response)
        assertInvalid("HTTP/1.2 200 OK\r\n\r\n", .badVersion, kind: .response)
        // A response may not start with an empty line.
        assertInvalid("\r\nHTTP/1.1 200 OK\r\n\r\n", .badStatusLine, kind: .response)
    }

    func testResponseFraming() throws {
        let chunked = try XCTUnwrap(head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", kind: .response))
        XCTAssertEqual(chunked.responseFraming(requestMethod: .get), .chunked)
        XCTAssertEqual(chunked.responseFraming(requestMethod: .head), BodyFraming.none)

        let untilClose = try XCTUnwrap(head("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", kind: .response))
        XCTAssertEqual(untilClose.framing, .untilClose)
        XCTAssertEqual(untilClose.responseFraming(requestMethod: .get), .untilClose)

        for status in ["100 Continue", "103 Early Hints", "204 No Content", "304 Not Modified"] {
            let head = try XCTUnwrap(head("HTTP/1.1 \(status)\r\nContent-Length: 10\r\n\r\n", kind: .response))
            XCTAssertEqual(head.responseFraming(requestMethod: .get), BodyFraming.none, status)
        }
        XCTAssertEqual(head("HTTP/1.1 100 Continue\r\n\r\n", kind: .response)?.isInformational, true)
        XCTAssertEqual(head("HTTP/1.1 101 Switching Protocols\r\n\r\n", kind: .response)?.isInformational, false)
        XCTAssertEqual(HTTPHead.responseFraming(status: 200, requestMethod: .connect, messageFraming: .untilClose), BodyFraming.none)
        XCTAssertEqual(HTTPHead.responseFraming(status: 407, requestMethod: .connect, messageFraming: .contentLength(3)),
                       .contentLength(3))
    }

    func testResponseUpgradeAndKeepAlive() throws {
        let upgrade = try XCTUnwrap(head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", kind: .response))
        XCTAssertTrue(upgrade.upgrade)
        XCTAssertEqual(upgrade.hopByHop, [0, 1])
        XCTAssertEqual(head("HTTP/1.0 200 OK\r\n\r\n", kind: .response)?.keepAlive, false)
        XCTAssertEqual(head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", kind: .response)?.keepAlive, true)
        XCTAssertEqual(head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", kind: .response)?.keepAlive, false)
    }

    // MARK: incremental parsing

    /// Every split of a set of heads, good and bad, gives the outcome of parsing it whole.
    func testEverySplitPointGivesTheSameOutcome() {
        let samples = [
            "GET / HTTP/1.1\r\nHost: h\r\nConnection: x, close\r\nX: 1\r\n\r\nbody",
            "\r\n\r\nPOST / HTTP/1.0\r\nContent-Length: 3, 3\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\n\n",
            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n",
        ]
        for sample in samples {
            for kind in [HTTPHeadParser.Kind.request, .response] {
                let input = bytes(sample)
                var whole = HTTPHeadParser(kind: kind)
                let expected = input.withUnsafeBytes { whole.parse($0) }
                for split in 0...input.count {
                    var parser = HTTPHeadParser(kind: kind)
                    var outcome = input[..<split].withUnsafeBytes { parser.parse($0) }
                    if case .needMore = outcome { outcome = input.withUnsafeBytes { parser.parse($0) } }
                    XCTAssertEqual(outcome, expected, "\(sample.debugDescription) split at \(split)")
                }
            }
        }
    }

    /// A parser reused for many heads keeps its storage, and gives each the same result
    /// as a fresh one.
    func testReusedParserMatchesFreshParser() {
        let samples = [
            "GET /a HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nConnection: a\r\n\r\n",
            "GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /c HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
            "GET /d HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n",
        ]
        var reused = HTTPHeadParser(kind: .request)
        for sample in samples + samples {
            let input = bytes(sample)
            var fresh = HTTPHeadParser(kind: .request)
            reused.reset()
            XCTAssertEqual(input.withUnsafeBytes { reused.parse($0) }, input.withUnsafeBytes { fresh.parse($0) })
        }
    }

    /// A head kept across reset() and the next parse keeps its own fields: the parser
    /// shares storage with it, and must not write into it.
    func testHeldHeadSurvivesTheNextParse() throws {
        let firstText = "GET /a HTTP/1.1\r\nHost: h\r\nConnection: x\r\nX: 1\r\n\r\n"
        let secondText = "GET /b HTTP/1.1\r\nHost: i\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
        var parser = HTTPHeadParser(kind: .request)
        guard case .complete(let first) = bytes(firstText).withUnsafeBytes({ parser.parse($0) }) else { return XCTFail() }
        parser.reset()
        guard case .complete(let second) = bytes(secondText).withUnsafeBytes({ parser.parse($0) }) else { return XCTFail() }
        XCTAssertEqual(fieldNames(first, firstText), ["Host", "Connection", "X"])
        XCTAssertEqual(first.hopByHop, [1, 2])
        XCTAssertEqual(fieldNames(second, secondText), ["Host", "A", "B", "C"])
        XCTAssertEqual(second.hopByHop, [])
    }

    // MARK: canned responses

    func testErrorResponsesParseAndHaveExactLengths() throws {
        for response in ErrorResponse.allCases {
            let input = response.bytes
            var parser = HTTPHeadParser(kind: .response)
            guard case .complete(let head) = input.withUnsafeBytes({ parser.parse($0) }) else {
                XCTFail("\(response) does not parse")
                continue
            }
            XCTAssertEqual(head.status, response.status)
            XCTAssertEqual(head.framing, .contentLength(input.count - head.length), "\(response)")
            XCTAssertFalse(head.keepAlive)
        }
    }

    func testServiceUnavailableIsHAProxys() {
        let expected = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 107\r\ncache-control: no-cache\r\n"
            + "content-type: text/html\r\nconnection: close\r\n\r\n<html><body><h1>503 Service Unavailable</h1>\n"
            + "No server is available to handle this request.\n</body></html>\n"
        XCTAssertEqual(String(decoding: ErrorResponse.serviceUnavailable.bytes, as: UTF8.self), expected)
        XCTAssertTrue(String(decoding: ErrorResponse.badRequest.bytes, as: UTF8.self)
            .hasPrefix("HTTP/1.1 400 Bad request\r\ncontent-length: 90\r\n"))
        XCTAssertTrue(String(decoding: ErrorResponse.gatewayTimeout.bytes, as: UTF8.self)
            .hasPrefix("HTTP/1.1 504 Gateway Time-out\r\ncontent-length: 92\r\n"))
        XCTAssertTrue(String(decoding: ErrorResponse.badGateway.bytes, as: UTF8.self)
            .hasPrefix("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 107\r\n"))
        XCTAssertTrue(String(decoding: ErrorResponse.requestTimeout.bytes, as: UTF8.self)
            .hasPrefix("HTTP/1.1 408 Request Time-out\r\ncontent-length: 110\r\n"))
    }
}
