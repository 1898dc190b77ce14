// Durations as haproxy writes them: an unsigned integer followed by a unit.
//
// haproxy's `parse_time_err()` knows `us`, `ms`, `s`, `m`, `h` and `d`, and a bare number
// means milliseconds, which is how consul-template era files spell their timeouts
// (`timeout connect 5000`). We accept exactly that grammar and nothing looser (no sign,
// no fraction, no space before the unit, no upper-case units): a file balancerd accepts
// should still load in haproxy, and the exporter's output must load in both.

/// Parses and prints haproxy durations (`200ms`, `5s`, `2m`, `1h`, `1d`, `100us`, `5000`).
public enum DurationParser {
    /// Microseconds per unit, largest first so `format` can pick the largest exact unit.
    /// Microseconds are the finest unit haproxy has, so they are our exact base.
    static let units: [(suffix: String, microseconds: Int64)] = [
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ]

    /// Parses a duration; a bare number is milliseconds (haproxy's default unit for
    /// timeouts). Returns nil for an empty, negative, fractional or unknown-unit value,
    /// and for one too large to count in microseconds as an `Int64` (about 292,000 years;
    /// anything that large is a typo, not a timeout).
    public static func parse(_ text: String) -> Duration? {
        var value: Int64 = 0
        var digits = 0
        let scalars = text.unicodeScalars
        var index = scalars.startIndex
        while index != scalars.endIndex, let digit = decimalDigit(scalars[index]) {
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = shifted.addingReportingOverflow(digit)
            if overflow1 || overflow2 { return nil }
            value = sum
            digits += 1
            index = scalars.index(after: index)
        }
        guard digits > 0 else { return nil }

        let suffix = String(scalars[index...])
        let perUnit: Int64
        if suffix.isEmpty {
            perUnit = 1_000
        } else if let unit = units.first(where: { $0.suffix == suffix }) {
            perUnit = unit.microseconds
        } else {
            return nil
        }
        let (micros, overflow) = value.multipliedReportingOverflow(by: perUnit)
        if overflow { return nil }
        return .microseconds(micros)
    }

    /// The shortest exact haproxy spelling: the largest unit that divides the value, so
    /// 120 s prints as `2m` and 90 s as `90s` (haproxy has no compound form like `1m30s`).
    ///
    /// Zero prints as `0s` rather than a bare `0`, because a bare number reads as
    /// milliseconds only to someone who knows haproxy. Below one microsecond nothing is
    /// exact, so the value is rounded *up* to whole microseconds: a tiny timeout must not
    /// turn into `0`, which haproxy reads as "no timeout". A negative value keeps its
    /// sign; `parse` refuses it, so an exported file with one fails loudly on reload
    /// instead of silently meaning something else.
    public static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        var total = Int128(seconds) * 1_000_000_000_000_000_000 + Int128(attoseconds)
        let negative = total < 0
        if negative { total = -total }
        let attosecondsPerMicrosecond: Int128 = 1_000_000_000_000
        var micros = total / attosecondsPerMicrosecond
        if total % attosecondsPerMicrosecond != 0 { micros += 1 }
        let sign = negative ? "-" : ""
        if micros == 0 { return "0s" }
        for unit in units where micros % Int128(unit.microseconds) == 0 {
            return "\(sign)\(micros / Int128(unit.microseconds))\(unit.suffix)"
        }
        // Unreachable: the last unit is 1 µs, which divides everything.
        return "\(sign)\(micros)us"
    }

    private static func decimalDigit(_ scalar: Unicode.Scalar) -> Int64? {
        guard scalar.value >= 48, scalar.value <= 57 else { return nil }
        return Int64(scalar.value - 48)
    }
}
