// HTTPMessageReader without sockets: `fill` hands out a script of bytes in the pieces a
// test chooses, so every way a message can be split across reads is reachable.
import XCTest
@testable import Balancer

final class HTTPMessageReaderTests: XCTestCase {

    /// A byte source that gives `bytes` in pieces of at most `piece` bytes (all that fits
    /// when nil), then end of stream.
    private final class Script {
        let bytes: [UInt8]
        let piece: Int?
        var offset = 0
        var calls = 0

        init(_ text: String, piece: Int? = nil) {
            bytes = Array(text.utf8)
            self.piece = piece
        }

        func fill(_ space: UnsafeMutableRawBufferPointer) -> Int {
            calls += 1
            let count = min(space.count, bytes.count - offset, piece ?? .max)
            space.copyBytes(from: bytes[offset..<(offset + count)])
            offset += count
            return count
        }
    }

    private func readHead(_ reader: HTTPMessageReader, _ script: Script) -> HTTPMessageReader.HeadOutcome {
        reader.readHead { (space) throws(Never) -> Int in script.fill(space) }
    }

    /// Reads a body and returns the outcome and the payload, pieces joined.
    private func readBody(
        _ reader: HTTPMessageReader, _ script: Script, _ framing: BodyFraming, stopAfter: Int = .max
    ) -> (HTTPMessageReader.BodyOutcome, String) {
        var payload: [UInt8] = []
        let outcome = reader.readBody(framing, fill: { (space) throws(Never) -> Int in script.fill(space) }) { piece in
            payload += piece
            return payload.count < stopAfter
        }
        return (outcome, String(decoding: payload, as: UTF8.self))
    }

    private func head(_ outcome: HTTPMessageReader.HeadOutcome, file: StaticString = #filePath, line: UInt = #line) -> HTTPHead? {
        guard case .head(let head) = outcome else {
            XCTFail("expected a head, got \(outcome)", file: file, line: line)
            return nil
        }
        return head
    }

    func testResponseSplitAtEveryPieceSizeGivesTheSameHeadAndPayload() throws {
        let text = "HTTP/1.1 200 OK\r\nX-Consul-Index: 42\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
            + "HTTP/1.1 204 No Content\r\n\r\n"
        for piece in [1, 2, 3, 7, 16, 1000] {
            let script = Script(text, piece: piece)
            let reader = HTTPMessageReader(kind: .response, capacity: 8)
            let first = try XCTUnwrap(head(readHead(reader, script)), "piece \(piece)")
            XCTAssertEqual(first.status, 200)
            XCTAssertEqual(first.fields.map { reader.text($0.name) }, ["X-Consul-Index", "Transfer-Encoding"])
            XCTAssertEqual(reader.text(first.fields[0].value), "42")
            XCTAssertEqual(reader.text(first.reason), "OK")
            let (outcome, payload) = readBody(reader, script, first.framing)
            XCTAssertEqual(outcome, .complete, "piece \(piece)")
            XCTAssertEqual(payload, "hello, world", "piece \(piece)")

            // The next message starts right after the last chunk's trailers.
            let second = try XCTUnwrap(head(readHead(reader, script)), "piece \(piece)")
            XCTAssertEqual(second.status, 204)
            XCTAssertEqual(readHead(reader, script), .closed)
        }
    }

    func testContentLengthBodyAndWhatFollowsIt() throws {
        let script = Script("POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        let reader = HTTPMessageReader(kind: .request)
        let first = try XCTUnwrap(head(readHead(reader, script)))
        XCTAssertEqual(first.method, .post)
        XCTAssertEqual(reader.text(first.target), "/echo")
        XCTAssertEqual(readBody(reader, script, first.framing).1, "abcde")
        let second = try XCTUnwrap(head(readHead(reader, script)))
        XCTAssertEqual(second.method, .get)
        XCTAssertEqual(reader.bufferedCount, 0)
    }

    func testHeadLongerThanTheBufferGrowsIt() throws {
        let value = String(repeating: "v", count: 40_000)
        let script = Script("HTTP/1.1 200 OK\r\nX-Long: \(value)\r\nContent-Length: 2\r\n\r\nok", piece: 1000)
        let reader = HTTPMessageReader(kind: .response, limits: .init(maxHeadBytes: 64 << 10), capacity: 1024)
        let parsed = try XCTUnwrap(head(readHead(reader, script)))
        XCTAssertEqual(reader.text(parsed.fields[0].value), value)
        XCTAssertEqual(readBody(reader, script, parsed.framing).1, "ok")
    }

    func testHeadAboveTheLimitIsRefused() {
        let script = Script("HTTP/1.1 200 OK\r\nX-Long: \(String(repeating: "v", count: 5000))\r\n\r\n", piece: 100)
        let reader = HTTPMessageReader(kind: .response, limits: .init(maxHeadBytes: 4096), capacity: 512)
        XCTAssertEqual(readHead(reader, script), .invalid(.headTooLarge))
        XCTAssertLessThan(script.offset, 4096 * 2, "reading stops near the limit")
    }

    func testBadHeadsAreTheParsersVerdicts() {
        let cases: [(String, HTTPParseError)] = [
            ("HELLO\r\n\r\n", .badStatusLine),
            ("HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", .obsFold),
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", .conflictingContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", .contentLengthWithTransferEncoding),
            ("HTTP/1.1 200 OK\nX: y\n\n", .bareLineFeed),
        ]
        for (text, error) in cases {
            XCTAssertEqual(readHead(HTTPMessageReader(kind: .response), Script(text, piece: 3)), .invalid(error), text)
        }
    }

    func testStreamEndingEarly() throws {
        XCTAssertEqual(readHead(HTTPMessageReader(kind: .response), Script("")), .closed)
        XCTAssertEqual(readHead(HTTPMessageReader(kind: .response), Script("HTTP/1.1 200 OK\r\nContent-")), .closed)

        for (text, payload) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "abc"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "ab"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", "ab"),
        ] {
            let script = Script(text)
            let reader = HTTPMessageReader(kind: .response)
            let parsed = try XCTUnwrap(head(readHead(reader, script)))
            let (outcome, received) = readBody(reader, script, parsed.framing)
            XCTAssertEqual(outcome, .truncated, text)
            XCTAssertEqual(received, payload, text)
        }
    }

    func testBodyUntilCloseEndsWithTheStream() throws {
        let script = Script("HTTP/1.0 200 OK\r\n\r\nall of it", piece: 4)
        let reader = HTTPMessageReader(kind: .response)
        let parsed = try XCTUnwrap(head(readHead(reader, script)))
        XCTAssertEqual(parsed.framing, .untilClose)
        let (outcome, payload) = readBody(reader, script, parsed.framing)
        XCTAssertEqual(outcome, .complete)
        XCTAssertEqual(payload, "all of it")
    }

    func testMalformedChunkedBody() throws {
        for (body, failure) in [("zz\r\n", ChunkedDecoder.Failure.badChunkSize), ("3\r\nabcX", .missingCRLF)] {
            let script = Script("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            let reader = HTTPMessageReader(kind: .response)
            let parsed = try XCTUnwrap(head(readHead(reader, script)))
            XCTAssertEqual(readBody(reader, script, parsed.framing).0, .invalid(failure), body)
        }
    }

    func testSinkStopsTheBody() throws {
        for framing in ["Content-Length: 12", "Transfer-Encoding: chunked"] {
            let body = framing.hasPrefix("C") ? "line1\nline2\n" : "6\r\nline1\n\r\n6\r\nline2\n\r\n0\r\n\r\n"
            let script = Script("HTTP/1.1 200 OK\r\n\(framing)\r\n\r\n\(body)", piece: 6)
            let reader = HTTPMessageReader(kind: .response)
            let parsed = try XCTUnwrap(head(readHead(reader, script)))
            let (outcome, payload) = readBody(reader, script, parsed.framing, stopAfter: 6)
            XCTAssertEqual(outcome, .stopped, framing)
            // The sink sees what arrived with the piece that crossed its limit, no more.
            XCTAssertTrue(payload.hasPrefix("line1\n") && payload.count < 12, "\(framing): \(payload.debugDescription)")
            XCTAssertLessThan(script.offset, script.bytes.count, "\(framing): reading stopped")
        }
    }

    func testSinkErrorIsThrownAsIs() throws {
        struct Full: Error {}
        let script = Script("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        let reader = HTTPMessageReader(kind: .response)
        let parsed = try XCTUnwrap(head(reader.readHead { (space) throws(Full) -> Int in script.fill(space) }))
        XCTAssertThrowsError(try reader.readBody(parsed.framing, fill: { (space) throws(Full) -> Int in script.fill(space) }) {
            (_) throws(Full) -> Bool in throw Full()
        }) { XCTAssertTrue($0 is Full) }
    }

    /// The payload ChunkedDecoder hands out is the same whatever the split of its input.
    func testChunkedPayloadAtEverySplitPoint() {
        let body = Array("4\r\nWiki\r\n5;x=y\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\n".utf8)
        for cut in 0...body.count {
            var decoder = ChunkedDecoder()
            var payload: [UInt8] = []
            var outcomes: [ChunkedOutcome] = []
            for part in [body[..<cut], body[cut...]] {
                part.withUnsafeBytes { raw in
                    outcomes.append(decoder.consume(raw) { payload += raw[$0] })
                }
            }
            XCTAssertEqual(String(decoding: payload, as: UTF8.self), "Wikipedia in\r\n\r\nchunks.", "cut at \(cut)")
            XCTAssertEqual(outcomes.last, .complete(consumed: body.count - cut), "cut at \(cut)")
        }
    }
}
