// Lines and words of a haproxy.cfg, with haproxy's quoting and escaping rules
// (haproxy 2.6, `parse_line` in src/tools.c), so a word means here what it means to
// haproxy: `option httpchk HEAD / HTTP/1.1\r\nHost:localhost` carries a real CR LF, and
// `rstatus ^2\d\d` keeps its backslash for the regex.

extension HAProxyParser {
    /// Splits on LF and drops a trailing CR, so files edited on Windows parse too. Works on
    /// scalars because "\r\n" is a single `Character` and would hide the line break.
    static func lines(of text: String) -> [Substring.UnicodeScalarView] {
        text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.last == "\r" ? line.dropLast() : line
        }
    }

    /// haproxy's word rules:
    /// - blanks separate words; `#` starts a comment unless quoted or escaped;
    /// - `"..."` and `'...'` group and join adjacent text (`a"b c"` is one word `ab c`);
    ///   inside single quotes everything is literal;
    /// - outside single quotes a backslash escapes: `\ ` `\\` `\#` `\'` `\"` give the
    ///   character, `\r` `\n` `\t` give CR, LF, TAB, `\xHH` gives that (ASCII) byte, and any
    ///   other pair is kept as written, backslash included (`\d` stays `\d`, for regexes);
    ///   `\$` drops its backslash only inside double quotes, as haproxy does.
    /// haproxy's `${VAR}` expansion inside double quotes is not done: the text stays
    /// literal, and a name or address containing it will be rejected later.
    static func tokenize(_ line: Substring.UnicodeScalarView, file: String, line number: Int) throws(ConfigurationError) -> [String] {
        enum Quote { case none, single, double }
        var words: [String] = []
        var current = String.UnicodeScalarView()
        var inWord = false
        var quote = Quote.none
        let scalars = Array(line)
        var index = 0

        func failure(_ message: String) -> ConfigurationError {
            let keyword = words.first ?? (current.isEmpty ? "\\" : String(current))
            return ConfigurationError(file: file, line: number, keyword: keyword, message: message)
        }
        func hexValue(_ scalar: Unicode.Scalar) -> UInt32? {
            switch scalar {
            case "0"..."9": scalar.value - 48
            case "a"..."f": scalar.value - 87
            case "A"..."F": scalar.value - 55
            default: nil
            }
        }

        /// The escape starting at `scalars[index]` (a backslash): appends what it stands
        /// for and moves `index` past it.
        func escape() throws(ConfigurationError) {
            guard index + 1 < scalars.count else {
                throw failure(quote == .double ? "unterminated double quote" : "backslash at end of line")
            }
            let next = scalars[index + 1]
            switch next {
            case " ", "\\", "#", "'", "\"":
                current.append(next)
                index += 2
            case "r": current.append("\r"); index += 2
            case "n": current.append("\n"); index += 2
            case "t": current.append("\t"); index += 2
            case "$" where quote == .double:
                current.append(next)
                index += 2
            case "x":
                guard index + 3 < scalars.count, let high = hexValue(scalars[index + 2]),
                      let low = hexValue(scalars[index + 3]) else {
                    throw failure("invalid or incomplete '\\x' escape (expected two hex digits)")
                }
                let value = high * 16 + low
                guard value < 0x80, let scalar = Unicode.Scalar(value) else {
                    throw failure("'\\x' escape above 7f: only ASCII bytes are supported")
                }
                current.append(scalar)
                index += 4
            default:
                // Not an escape sequence: the backslash stays, the next character is
                // read normally.
                current.append("\\")
                index += 1
            }
        }

        scan: while index < scalars.count {
            let scalar = scalars[index]
            switch quote {
            case .single:
                if scalar == "'" { quote = .none } else { current.append(scalar) }
                index += 1
            case .double:
                if scalar == "\"" {
                    quote = .none
                    index += 1
                } else if scalar == "\\" {
                    try escape()
                } else {
                    current.append(scalar)
                    index += 1
                }
            case .none:
                switch scalar {
                case " ", "\t", "\r", "\u{0B}", "\u{0C}":
                    if inWord {
                        words.append(String(current))
                        current = String.UnicodeScalarView()
                        inWord = false
                    }
                    index += 1
                case "#":
                    break scan
                case "\\":
                    inWord = true
                    try escape()
                case "'":
                    quote = .single
                    inWord = true
                    index += 1
                case "\"":
                    quote = .double
                    inWord = true
                    index += 1
                default:
                    current.append(scalar)
                    inWord = true
                    index += 1
                }
            }
        }
        switch quote {
        case .none: break
        case .single: throw failure("unterminated single quote")
        case .double: throw failure("unterminated double quote")
        }
        if inWord { words.append(String(current)) }
        return words
    }
}

/// What went wrong in a line's grammar (ACLs, TLS options), and the word that names it:
/// the parser turns it into a ConfigurationError with the file and the line.
struct KeywordFailure: Error {
    var keyword: String
    var message: String

    init(_ keyword: String, _ message: String) {
        self.keyword = keyword
        self.message = message
    }
}
