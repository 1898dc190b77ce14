import XCTest
@testable import Balancer

final class ChunkedDecoderTests: XCTestCase {
    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    private func consume(_ input: [UInt8], limits: ChunkedDecoder.Limits = .init()) -> ChunkedOutcome {
        var decoder = ChunkedDecoder(limits: limits)
        return input.withUnsafeBytes { decoder.consume($0) }
    }

    /// Feeds `input` in pieces ending at `cuts` and returns the outcome with `consumed`
    /// counted from the start of the whole input, to compare with one call.
    private func consume(_ input: [UInt8], cuts: [Int], limits: ChunkedDecoder.Limits = .init()) -> ChunkedOutcome {
        var decoder = ChunkedDecoder(limits: limits)
        var start = 0
        for end in cuts + [input.count] where end >= start {
            let outcome = input[start..<end].withUnsafeBytes { decoder.consume($0) }
            switch outcome {
            case .needMore: start = end
            case .complete(let consumed): return .complete(consumed: start + consumed)
            case .invalid: return outcome
            }
        }
        return .needMore
    }

    // MARK: good bodies

    func testSimpleBody() {
        let body = bytes("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        XCTAssertEqual(consume(body), .complete(consumed: body.count))
    }

    func testBodyFollowedByNextMessage() {
        let body = bytes("3\r\nabc\r\n0\r\n\r\n")
        XCTAssertEqual(consume(body + bytes("GET / HTTP/1.1\r\n")), .complete(consumed: body.count))
    }

    func testHexSizesAnyCase() {
        let data = String(repeating: "x", count: 0x1A)
        for size in ["1a", "1A", "001a"] {
            let body = bytes("\(size)\r\n\(data)\r\n0000\r\n\r\n")
            XCTAssertEqual(consume(body + bytes("next")), .complete(consumed: body.count), size)
        }
    }

    func testExtensions() {
        for line in ["5;name", "5;name=value", "5 ;name=value", "5\t; a = b ;c", "5;q=\"quoted; \\\"still\\\" \"", "5 "] {
            let body = bytes("\(line)\r\nhello\r\n0;last\r\n\r\n")
            XCTAssertEqual(consume(body), .complete(consumed: body.count), line)
        }
    }

    func testTrailers() {
        let body = bytes("5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\nX-Tab:\tv \r\n\r\n")
        XCTAssertEqual(consume(body), .complete(consumed: body.count))
    }

    func testNeedMore() {
        XCTAssertEqual(consume(bytes("")), .needMore)
        XCTAssertEqual(consume(bytes("5\r\nhel")), .needMore)
        XCTAssertEqual(consume(bytes("5\r\nhello\r\n0\r\n")), .needMore)
        XCTAssertEqual(consume(bytes("5\r\nhello\r\n0\r\nX: y\r\n")), .needMore)
    }

    func testLargeChunkIsSkippedInOneStep() {
        var decoder = ChunkedDecoder()
        XCTAssertEqual(bytes("100000\r\n").withUnsafeBytes { decoder.consume($0) }, .needMore)
        let data = [UInt8](repeating: 0x41, count: 0x100000)
        XCTAssertEqual(data.withUnsafeBytes { decoder.consume($0) }, .needMore)
        XCTAssertEqual(bytes("\r\n0\r\n\r\nrest").withUnsafeBytes { decoder.consume($0) }, .complete(consumed: 7))
        XCTAssertTrue(decoder.isComplete)
        XCTAssertEqual(bytes("more").withUnsafeBytes { decoder.consume($0) }, .complete(consumed: 0))
        decoder.reset()
        XCTAssertFalse(decoder.isComplete)
        XCTAssertEqual(bytes("0\r\n\r\n").withUnsafeBytes { decoder.consume($0) }, .complete(consumed: 5))
    }

    // MARK: bad bodies

    func testBadChunkSize() {
        for body in ["g\r\n", "\r\n", ";ext\r\n", " 5\r\n", "-5\r\n", "+5\r\n", "5x\r\n", "0x5\r\n", "5 x\r\n", "5\r5"] {
            XCTAssertEqual(consume(bytes(body)), .invalid(body == "5\r5" ? .missingCRLF : .badChunkSize), body.debugDescription)
        }
    }

    func testChunkSizeOverflow() {
        XCTAssertEqual(consume(bytes("4000000000000001\r\n")), .invalid(.chunkSizeTooLarge))
        XCTAssertEqual(consume(bytes("ffffffffffffffffffff\r\n")), .invalid(.chunkSizeTooLarge))
        // Would wrap to a small number if the check came after the multiplication.
        XCTAssertEqual(consume(bytes("10000000000000005\r\n")), .invalid(.chunkSizeTooLarge))
        // 2^62 itself is accepted, and leading zeros do not count.
        XCTAssertEqual(consume(bytes("00000000000000000004000000000000000\r\n")), .needMore)
    }

    func testBadChunkExtension() {
        for line in ["5;a\u{1}", "5;\u{7F}", "5;a=\"\u{0}\"", "5;a=\"x\\\u{1}\"", "5;a@b", "5;a=\"x"] {
            XCTAssertEqual(consume(bytes("\(line)\r\nhello\r\n0\r\n\r\n")), .invalid(.badChunkExtension), line.debugDescription)
        }
        // A quoted string cannot hide a line end.
        XCTAssertEqual(consume(bytes("5;a=\"\r\n\"\r\nhello\r\n0\r\n\r\n")), .invalid(.badChunkExtension))
    }

    func testChunkLineLimit() {
        let limits = ChunkedDecoder.Limits(maxChunkLineBytes: 16, maxTrailerBytes: 64)
        // 16 bytes of size line, counting its CR, is the most.
        XCTAssertEqual(consume(bytes("5;aaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n"), limits: limits), .complete(consumed: 29))
        XCTAssertEqual(consume(bytes("5;aaaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n"), limits: limits), .invalid(.chunkLineTooLong))
        XCTAssertEqual(consume(bytes("5;" + String(repeating: "a", count: 5000))), .invalid(.chunkLineTooLong))
    }

    func testMissingCRLFAfterData() {
        XCTAssertEqual(consume(bytes("5\r\nhelloX\r\n0\r\n\r\n")), .invalid(.missingCRLF))
        XCTAssertEqual(consume(bytes("5\r\nhello\rX0\r\n\r\n")), .invalid(.missingCRLF))
        XCTAssertEqual(consume(bytes("5\r\nhello\r\n0\r\n\rX")), .invalid(.missingCRLF))
        XCTAssertEqual(consume(bytes("5\r\nhello\r\n0\r\nX: y\rZ")), .invalid(.missingCRLF))
    }

    func testBareLineFeed() {
        for body in ["5\nhello\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n", "5\r\nhello\r\n0\n\r\n", "5;a\nhello",
                     "5\r\nhello\r\n0\r\n\n", "5\r\nhello\r\n0\r\nX: y\n\r\n", "5\r\nhello\r\n0\r\nX\n"] {
            XCTAssertEqual(consume(bytes(body)), .invalid(.bareLineFeed), body.debugDescription)
        }
    }

    func testBadTrailers() {
        for trailer in [" X: y", "\tX: y", "X : y", "X", ": y", "X: a\u{0}b", "X(: y", "X: \u{7F}"] {
            XCTAssertEqual(consume(bytes("0\r\n\(trailer)\r\n\r\n")), .invalid(.badTrailer), trailer.debugDescription)
        }
    }

    func testTrailerLimit() {
        let limits = ChunkedDecoder.Limits(maxChunkLineBytes: 16, maxTrailerBytes: 12)
        // "X: 12345\r\n\r\n" is 12 bytes: the final CRLF counts too.
        XCTAssertEqual(consume(bytes("0\r\nX: 12345\r\n\r\n"), limits: limits), .complete(consumed: 15))
        XCTAssertEqual(consume(bytes("0\r\nX: 123456\r\n\r\n"), limits: limits), .invalid(.trailerTooLarge))
        XCTAssertEqual(consume(bytes("0\r\n" + String(repeating: "X: y\r\n", count: 3000) + "\r\n")), .invalid(.trailerTooLarge))
    }

    func testInvalidIsSticky() {
        var decoder = ChunkedDecoder()
        XCTAssertEqual(bytes("z").withUnsafeBytes { decoder.consume($0) }, .invalid(.badChunkSize))
        XCTAssertEqual(bytes("0\r\n\r\n").withUnsafeBytes { decoder.consume($0) }, .invalid(.badChunkSize))
        XCTAssertEqual([UInt8]().withUnsafeBytes { decoder.consume($0) }, .invalid(.badChunkSize))
    }

    // MARK: incremental decoding

    private let samples = [
        "5\r\nhello\r\n0\r\n\r\nNEXT",
        "3;a=\"b\\\"c\"\r\nabc\r\n1 \r\nd\r\n0\r\nT: v\r\nU:\r\n\r\n",
        "A\r\n0123456789\r\n0\r\n\r\n",
        "5\r\nhelloX",
        "5\r\nhello\r\n0\r\nT : v\r\n\r\n",
        "5\nhello",
        "5;\u{1}\r\n",
        "0\r\n\r",
        "2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n0\r\n\r\n",
        "1\r\n\n\r\n0\r\n\r\n",
        "0;x=\"y\"\r\nA:\tb\r\n\r\nGET",
    ]

    /// Every way to cut a sample in two or three pieces gives the outcome of one call.
    func testEverySplitGivesTheSameOutcome() {
        for sample in samples {
            let input = bytes(sample)
            let expected = consume(input)
            for a in 0...input.count {
                XCTAssertEqual(consume(input, cuts: [a]), expected, "\(sample.debugDescription) cut at \(a)")
                for b in a...input.count {
                    XCTAssertEqual(consume(input, cuts: [a, b]), expected, "\(sample.debugDescription) cut at \(a), \(b)")
                }
            }
            XCTAssertEqual(consume(input, cuts: Array(0...input.count)), expected, "\(sample.debugDescription) byte by byte")
        }
    }
}
