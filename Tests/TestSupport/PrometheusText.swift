// A reader of the Prometheus text exposition format (0.0.4), enough to check balancerd's
// /metrics and haproxy's exporter by value: `# HELP`/`# TYPE` lines, and samples
// `name{label="value",…} number` with the format's escapes in label values. It refuses
// what it does not understand, so a malformed exposition fails the test that reads it.

import Foundation

public struct PrometheusText: Sendable {
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    /// Family name → type ("counter", "gauge", …), from `# TYPE`.
    public private(set) var types: [String: String] = [:]
    public private(set) var help: [String: String] = [:]
    public private(set) var samples: [Sample] = []
    public let text: String

    public init(_ text: String) throws {
        self.text = text
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            if line.hasPrefix("# TYPE ") || line.hasPrefix("# HELP ") {
                let words = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
                guard words.count >= 3 else { throw TestSupportError("line \(number + 1): bad comment: \(line)") }
                if words[1] == "TYPE" {
                    guard words.count == 4 else { throw TestSupportError("line \(number + 1): bad TYPE: \(line)") }
                    types[String(words[2])] = String(words[3])
                } else {
                    help[String(words[2])] = words.count == 4 ? String(words[3]) : ""
                }
                continue
            }
            if line.hasPrefix("#") { continue }
            samples.append(try Self.parseSample(line, number: number + 1))
        }
    }

    private static func parseSample(_ line: String, number: Int) throws -> Sample {
        let chars = Array(line)
        var i = 0
        var name = ""
        while i < chars.count, chars[i] != "{", chars[i] != " " { name.append(chars[i]); i += 1 }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }) else {
            throw TestSupportError("line \(number): bad metric name in: \(line)")
        }
        var labels: [String: String] = [:]
        if i < chars.count, chars[i] == "{" {
            i += 1
            while i < chars.count, chars[i] != "}" {
                var key = ""
                while i < chars.count, chars[i] != "=" { key.append(chars[i]); i += 1 }
                guard i + 1 < chars.count, chars[i + 1] == "\"" else { throw TestSupportError("line \(number): bad label in: \(line)") }
                i += 2
                var value = ""
                while i < chars.count, chars[i] != "\"" {
                    if chars[i] == "\\", i + 1 < chars.count {
                        i += 1
                        value.append(chars[i] == "n" ? "\n" : chars[i])
                    } else {
                        value.append(chars[i])
                    }
                    i += 1
                }
                guard i < chars.count else { throw TestSupportError("line \(number): unterminated label value in: \(line)") }
                i += 1
                labels[key.trimmingCharacters(in: .whitespaces)] = value
                if i < chars.count, chars[i] == "," { i += 1 }
            }
            guard i < chars.count else { throw TestSupportError("line \(number): unterminated labels in: \(line)") }
            i += 1
        }
        let rest = String(chars[i...]).trimmingCharacters(in: .whitespaces).split(separator: " ")
        guard let first = rest.first else { throw TestSupportError("line \(number): no value in: \(line)") }
        let value: Double
        switch first {
        case "NaN": value = .nan
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        default:
            guard let parsed = Double(first) else { throw TestSupportError("line \(number): bad value '\(first)' in: \(line)") }
            value = parsed
        }
        return Sample(name: name, labels: labels, value: value)
    }

    /// The family a sample belongs to (its name; this format's counters carry `_total` in
    /// the family name, as haproxy and balancerd write them).
    public var families: Set<String> { Set(samples.map(\.name)) }

    /// The label names used by `family`'s samples.
    public func labelNames(_ family: String) -> Set<String> {
        Set(samples.filter { $0.name == family }.flatMap(\.labels.keys))
    }

    /// The value of the one sample of `name` with exactly these labels; nil if none.
    public func value(_ name: String, _ labels: [String: String]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }
}
