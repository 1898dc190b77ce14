import XCTest
@testable import Balancer

final class DurationParserTests: XCTestCase {
    func testUnits() {
        XCTAssertEqual(DurationParser.parse("100us"), .microseconds(100))
        XCTAssertEqual(DurationParser.parse("200ms"), .milliseconds(200))
        XCTAssertEqual(DurationParser.parse("5s"), .seconds(5))
        XCTAssertEqual(DurationParser.parse("2m"), .seconds(120))
        XCTAssertEqual(DurationParser.parse("1h"), .seconds(3_600))
        XCTAssertEqual(DurationParser.parse("1d"), .seconds(86_400))
    }

    func testBareNumberIsMilliseconds() {
        // haproxy's default unit for timeouts; consul-template files write `timeout connect 5000`.
        XCTAssertEqual(DurationParser.parse("5000"), .seconds(5))
        XCTAssertEqual(DurationParser.parse("1"), .milliseconds(1))
        XCTAssertEqual(DurationParser.parse("0"), .zero)
        XCTAssertEqual(DurationParser.parse("0s"), .zero)
        XCTAssertEqual(DurationParser.parse("007s"), .seconds(7))
    }

    func testRejectsMalformed() {
        for text in ["", " ", "-5s", "+5s", "5 s", " 5s", "5s ", "s", "ms", "5x", "5S", "5MS", "1.5s", "5sec",
                     "5mn", "5ss", "0x10", "5s5", "١٢s"] {
            XCTAssertNil(DurationParser.parse(text), "'\(text)' should be rejected")
        }
    }

    func testRejectsOverflow() {
        XCTAssertNil(DurationParser.parse("99999999999999999999"))
        XCTAssertNil(DurationParser.parse("9223372036854775807ms"))
        XCTAssertNil(DurationParser.parse("200000000d"))
        // The largest value that still fits in Int64 microseconds.
        XCTAssertEqual(DurationParser.parse("9223372036854775807us"), .microseconds(Int64.max))
    }

    func testFormatPicksLargestExactUnit() {
        XCTAssertEqual(DurationParser.format(.seconds(5)), "5s")
        XCTAssertEqual(DurationParser.format(.milliseconds(200)), "200ms")
        XCTAssertEqual(DurationParser.format(.seconds(120)), "2m")
        XCTAssertEqual(DurationParser.format(.seconds(90)), "90s")
        XCTAssertEqual(DurationParser.format(.milliseconds(1_500)), "1500ms")
        XCTAssertEqual(DurationParser.format(.seconds(3_600)), "1h")
        XCTAssertEqual(DurationParser.format(.seconds(5_400)), "90m")
        XCTAssertEqual(DurationParser.format(.seconds(86_400 * 2)), "2d")
        XCTAssertEqual(DurationParser.format(.microseconds(100)), "100us")
        XCTAssertEqual(DurationParser.format(.microseconds(1_001)), "1001us")
        XCTAssertEqual(DurationParser.format(.zero), "0s")
    }

    func testFormatRoundsSubMicrosecondUpAndKeepsSign() {
        XCTAssertEqual(DurationParser.format(.nanoseconds(1)), "1us")
        XCTAssertEqual(DurationParser.format(.nanoseconds(1_500)), "2us")
        XCTAssertEqual(DurationParser.format(.seconds(-5)), "-5s")
        XCTAssertNil(DurationParser.parse(DurationParser.format(.seconds(-5))))
    }

    func testRoundTrip() {
        let values: [Duration] = [.microseconds(1), .milliseconds(1), .milliseconds(999), .seconds(1), .seconds(59),
                                  .seconds(61), .seconds(3_599), .seconds(86_400), .seconds(86_401), .microseconds(Int64.max)]
        for value in values {
            let text = DurationParser.format(value)
            XCTAssertEqual(DurationParser.parse(text), value, "round trip of \(text)")
        }
    }
}
