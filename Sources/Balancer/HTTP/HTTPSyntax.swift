// Byte-level character classes and comparisons shared by the parser, the chunked decoder
// and the writer. Everything works on raw bytes: header names are ASCII by grammar, and
// going through String would both allocate and accept things the grammar does not.

enum HTTPSyntax {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let sp: UInt8 = 0x20
    static let htab: UInt8 = 0x09
    static let colon: UInt8 = 0x3A
    static let comma: UInt8 = 0x2C
    static let semicolon: UInt8 = 0x3B

    // RFC 9110 §5.6.2 tchar as two 64-bit masks (bytes 0-63 and 64-127), so a lookup is a
    // shift and no table load. Checked against the RFC's list in HTTPParserTests.
    private static let tcharLow: UInt64 = 0x03FF_6CFA_0000_0000
    private static let tcharHigh: UInt64 = 0x57FF_FFFF_C7FF_FFFE

    @inline(__always)
    static func isTokenChar(_ b: UInt8) -> Bool {
        if b < 64 { return (tcharLow >> UInt64(b)) & 1 == 1 }
        if b < 128 { return (tcharHigh >> UInt64(b &- 64)) & 1 == 1 }
        return false
    }

    @inline(__always)
    static func isWhitespace(_ b: UInt8) -> Bool { b == sp || b == htab }

    /// RFC 9110 field-vchar / SP / HTAB: anything but CTLs other than HTAB and DEL.
    /// obs-text (0x80-0xFF) is allowed, as the RFC requires recipients to.
    @inline(__always)
    static func isFieldValueChar(_ b: UInt8) -> Bool { (b >= 0x20 && b != 0x7F) || b == htab }

    @inline(__always)
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    @inline(__always)
    static func hexValue(_ b: UInt8) -> Int? {
        switch b {
        case 0x30...0x39: Int(b &- 0x30)
        case 0x41...0x46: Int(b &- 0x41 &+ 10)
        case 0x61...0x66: Int(b &- 0x61 &+ 10)
        default: nil
        }
    }

    @inline(__always)
    static func lowercased(_ b: UInt8) -> UInt8 { (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b }

    /// Exact comparison of `bytes[range]` with an ASCII literal.
    static func equals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ literal: StaticString) -> Bool {
        guard range.count == literal.utf8CodeUnitCount else { return false }
        let l = literal.utf8Start
        var i = 0
        while i < range.count {
            if bytes[range.lowerBound &+ i] != l[i] { return false }
            i &+= 1
        }
        return true
    }

    /// Case-insensitive comparison with a literal that must be written in lowercase.
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercaseLiteral: StaticString) -> Bool {
        guard range.count == lowercaseLiteral.utf8CodeUnitCount else { return false }
        let l = lowercaseLiteral.utf8Start
        var i = 0
        while i < range.count {
            if lowercased(bytes[range.lowerBound &+ i]) != l[i] { return false }
            i &+= 1
        }
        return true
    }

    /// Case-insensitive comparison of two ranges of the same buffer.
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        var i = 0
        while i < a.count {
            if lowercased(bytes[a.lowerBound &+ i]) != lowercased(bytes[b.lowerBound &+ i]) { return false }
            i &+= 1
        }
        return true
    }

    /// Range without leading and trailing SP/HTAB.
    static func trimmed(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper && isWhitespace(bytes[lower]) { lower &+= 1 }
        while upper > lower && isWhitespace(bytes[upper &- 1]) { upper &-= 1 }
        return lower..<upper
    }

    /// Calls `body` with each element of a comma-separated list (RFC 9110 §5.6.1), trimmed
    /// of OWS. Empty elements are passed too, so that each caller decides: the RFC says to
    /// ignore them in lists, but Content-Length is not really a list and rejects them.
    /// Stops early and returns false when `body` does.
    @discardableResult
    static func forEachListElement(
        _ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ body: (Range<Int>) -> Bool
    ) -> Bool {
        var elementStart = range.lowerBound
        var i = range.lowerBound
        while i < range.upperBound {
            if bytes[i] == comma {
                if !body(trimmed(bytes, elementStart..<i)) { return false }
                elementStart = i &+ 1
            }
            i &+= 1
        }
        return body(trimmed(bytes, elementStart..<range.upperBound))
    }

    /// Appends `bytes[range]` to `output`.
    @inline(__always)
    static func append(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, to output: inout [UInt8]) {
        output.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[range]))
    }

    @inline(__always)
    static func append(_ literal: StaticString, to output: inout [UInt8]) {
        output.append(contentsOf: UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// Appends the decimal digits of a non-negative integer without going through String.
    static func appendDecimal(_ value: Int, to output: inout [UInt8]) {
        precondition(value >= 0)
        var divisor = 1
        while value / divisor >= 10 { divisor &*= 10 }
        while divisor > 0 {
            output.append(UInt8(truncatingIfNeeded: 0x30 &+ (value / divisor) % 10))
            divisor /= 10
        }
    }
}
