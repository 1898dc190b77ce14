// The grammar of haproxy's `acl`, `use_backend` and `http-request` lines, for the subset
// balancerd runs (see RoutingConfig.swift for what each value means). Kept apart from
// HAProxyParser, which calls it per line and turns a `Failure` into a ConfigurationError
// with the file and line.
//
// The rule of the parser holds here too: a fetch, flag, action or option balancerd does
// not implement is an error naming it, never a line that loads and then routes
// differently from haproxy.

enum ACLGrammar {
    typealias Failure = KeywordFailure

    static let supportedCriteria = ACLCriterion.allCases.map(\.rawValue).joined(separator: ", ")

    /// `CRITERION [-i] [-m METHOD] [--] VALUE...`: the rest of an `acl NAME` line, or the
    /// inside of `{ }`.
    static func test(_ words: ArraySlice<String>, keyword: String) throws(Failure) -> ACLTest {
        guard let first = words.first else { throw Failure(keyword, "missing criterion (one of \(supportedCriteria))") }
        guard let criterion = ACLCriterion(rawValue: first) else {
            throw Failure(first, "fetch '\(first)' is not supported by balancerd (supported: \(supportedCriteria))")
        }
        var test = ACLTest(criterion: criterion, values: [])
        var rest = words.dropFirst()
        flags: while let flag = rest.first, flag.hasPrefix("-") {
            rest = rest.dropFirst()
            switch flag {
            case "-i":
                test.ignoreCase = true
            case "--":
                break flags
            case "-m":
                guard let name = rest.first else { throw Failure("-m", "missing match method after '-m'") }
                rest = rest.dropFirst()
                guard let match = ACLMatch(rawValue: name) else {
                    throw Failure("-m", name == "reg"
                        ? "regex matching ('-m reg') is not supported by balancerd"
                        : "match method '\(name)' is not supported (str, beg, end, sub, dir or dom)")
                }
                // haproxy lets `-m` replace a derivative's match (`path_beg -m sub` is a
                // substring match); on method, src and ssl_fc balancerd refuses it.
                guard criterion.isString else {
                    throw Failure("-m", "'-m' cannot be used with '\(criterion.rawValue)'")
                }
                test.explicitMatch = match
            case "-f", "-n", "-u", "-M":
                throw Failure(flag, "ACL flag '\(flag)' is not supported by balancerd")
            default:
                throw Failure(flag, "unknown ACL flag '\(flag)' (balancerd supports -i, -m and --)")
            }
        }
        test.values = Array(rest)
        switch criterion {
        case .tls:
            if let extra = test.values.first { throw Failure(first, "'ssl_fc' is a boolean and takes no value (got '\(extra)')") }
        case .source:
            for value in test.values where IPPattern(value) == nil {
                throw Failure(first, "invalid address '\(value)' (an IPv4 or IPv6 address, optionally /PREFIX)")
            }
        default:
            break
        }
        return test
    }

    /// `[!]NAME`, `[!]{ TEST }`, `||`/`or`: the words after `if` or `unless`. Names must
    /// be defined above the line, as haproxy requires: `known` maps the ACLs defined so
    /// far to their place in the section's list (only the names count here).
    static func condition(_ words: ArraySlice<String>, unless: Bool, known: [String: Int]) throws(Failure) -> ACLCondition {
        let keyword = unless ? "unless" : "if"
        var alternatives: [[ACLTerm]] = [[]]
        var i = words.startIndex
        var negated = false
        while i < words.endIndex {
            var word = Substring(words[i])
            i += 1
            if word == "||" || word == "or" {
                guard !negated, !alternatives[alternatives.count - 1].isEmpty else {
                    throw Failure(String(word), "'\(word)' needs a condition on both sides")
                }
                alternatives.append([])
                continue
            }
            while word.hasPrefix("!") {
                negated.toggle()
                word = word.dropFirst()
            }
            if word.isEmpty { continue }   // `! name`: the name is the next word
            if word == "{" {
                guard let close = words[i...].firstIndex(of: "}") else { throw Failure("{", "'{' without a matching '}'") }
                let test = try test(words[i..<close], keyword: "{")
                alternatives[alternatives.count - 1].append(ACLTerm(.anonymous(test), negated: negated))
                i = close + 1
            } else if word == "}" {
                throw Failure("}", "'}' without a matching '{'")
            } else {
                let name = String(word)
                guard known[name] != nil else {
                    throw Failure(name, "no ACL named '\(name)' above this line")
                }
                alternatives[alternatives.count - 1].append(ACLTerm(.named(name), negated: negated))
            }
            negated = false
        }
        guard !negated, !alternatives[alternatives.count - 1].isEmpty else {
            throw Failure(keyword, "'\(keyword)' needs a condition after it")
        }
        return ACLCondition(unless: unless, alternatives: alternatives)
    }

    /// Splits `ARGS... [if|unless COND]` at the first `if`/`unless`.
    static func split(_ words: ArraySlice<String>, known: [String: Int]) throws(Failure) -> (ArraySlice<String>, ACLCondition?) {
        guard let at = words.firstIndex(where: { $0 == "if" || $0 == "unless" }) else { return (words, nil) }
        let condition = try condition(words[(at + 1)...], unless: words[at] == "unless", known: known)
        return (words[..<at], condition)
    }

    /// `use_backend NAME [if|unless COND]`.
    static func useBackend(_ words: [String], known: [String: Int]) throws(Failure) -> UseBackendRule {
        let (arguments, condition) = try split(words.dropFirst(), known: known)
        guard let name = arguments.first else { throw Failure("use_backend", "missing backend name") }
        if name.contains("%[") {
            throw Failure("use_backend", "dynamic backend names ('\(name)') are not supported by balancerd")
        }
        if let extra = arguments.dropFirst().first {
            throw Failure("use_backend", "unexpected '\(extra)' after the backend name (expected 'if' or 'unless')")
        }
        return UseBackendRule(backend: name, condition: condition)
    }

    /// Status codes a deny may answer with: those balancerd has haproxy's page for.
    static let denyStatuses: Set<Int> = Set(ErrorResponse.allCases.map(\.status))
    static let redirectCodes: Set<Int> = [301, 302, 303, 307, 308]

    /// `http-request ACTION ARGS... [if|unless COND]`.
    static func httpRequest(_ words: [String], known: [String: Int]) throws(Failure) -> HTTPRequestRule {
        guard words.count >= 2 else { throw Failure("http-request", "missing action") }
        let action = words[1]
        let keyword = "http-request \(action)"
        let (arguments, condition) = try split(words.dropFirst(2), known: known)
        var args = Array(arguments)
        func literal(_ text: String, _ what: String) throws(Failure) -> String {
            if text.contains("%") {
                throw Failure(keyword, "\(what) '\(text)' has '%': log-format values are not supported by balancerd, only literal text")
            }
            return text
        }
        func noMore() throws(Failure) {
            if let extra = args.first { throw Failure(keyword, "unexpected '\(extra)' (expected 'if' or 'unless')") }
        }
        switch action {
        case "deny":
            var status = 403
            while let option = args.first {
                args.removeFirst()
                switch option {
                case "deny_status":
                    guard let text = args.first, let code = Int(text), denyStatuses.contains(code) else {
                        throw Failure("deny_status", "expected one of \(denyStatuses.sorted().map(String.init).joined(separator: ", "))")
                    }
                    args.removeFirst()
                    status = code
                default:
                    throw Failure(keyword, "option '\(option)' is not supported (only deny_status)")
                }
            }
            return HTTPRequestRule(action: .deny(status: status), condition: condition)
        case "redirect":
            guard let kindWord = args.first, let kind = RedirectRule.Kind(rawValue: kindWord) else {
                throw Failure(keyword, "expected 'location', 'prefix' or 'scheme'")
            }
            guard args.count >= 2 else { throw Failure(keyword, "missing value after '\(kindWord)'") }
            var rule = RedirectRule(kind: kind, value: try literal(args[1], kindWord))
            args.removeFirst(2)
            while let option = args.first {
                args.removeFirst()
                switch option {
                case "code":
                    guard let text = args.first, let code = Int(text), redirectCodes.contains(code) else {
                        throw Failure("code", "expected 301, 302, 303, 307 or 308")
                    }
                    args.removeFirst()
                    rule.code = code
                case "drop-query":
                    rule.dropQuery = true
                default:
                    throw Failure(keyword, "option '\(option)' is not supported (code and drop-query are)")
                }
            }
            return HTTPRequestRule(action: .redirect(rule), condition: condition)
        case "set-header":
            guard args.count >= 2 else { throw Failure(keyword, "expected a header name and a value") }
            guard HTTPToken.isToken(args[0]) else { throw Failure(keyword, "invalid header name '\(args[0])'") }
            let rule = HTTPRequestRule(action: .setHeader(name: args[0], value: try literal(args[1], "value")), condition: condition)
            args.removeFirst(2)
            try noMore()
            return rule
        case "del-header":
            guard let name = args.first else { throw Failure(keyword, "expected a header name") }
            guard HTTPToken.isToken(name) else { throw Failure(keyword, "invalid header name '\(name)'") }
            args.removeFirst()
            try noMore()
            return HTTPRequestRule(action: .deleteHeader(name: name), condition: condition)
        case "replace-path":
            guard args.count >= 2 else { throw Failure(keyword, "expected a regex and a replacement") }
            let rewrite: PathRewrite
            do throws(PathRewrite.Unsupported) {
                rewrite = try PathRewrite.parse(regex: args[0], replacement: args[1])
            } catch {
                throw Failure(keyword, error.message)
            }
            args.removeFirst(2)
            try noMore()
            return HTTPRequestRule(action: .replacePath(rewrite), condition: condition)
        default:
            throw Failure(keyword, "http-request action '\(action)' is not supported by balancerd "
                + "(deny, redirect, set-header, del-header and replace-path are)")
        }
    }
}

enum HTTPToken {
    /// RFC 9110 token characters.
    static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"): true
            default: "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
        }
    }
}

extension PathRewrite {
    struct Unsupported: Error {
        var message: String
    }

    /// Accepts exactly the regexes that strip (or swap) a literal prefix, so no regex
    /// engine runs per request:
    ///
    ///     ^LITERAL(.*)        INSERT\1   any path starting with LITERAL
    ///     ^LITERAL(/.*)       INSERT\1   LITERAL then "/"; \1 keeps the slash
    ///     ^LITERAL(/.*)?$     INSERT\1   LITERAL alone, or LITERAL then "/"
    ///
    /// (a `$` may end the first two as well). LITERAL may escape punctuation with `\`
    /// (`\.`); INSERT is literal text. Anything else is refused with a message that says
    /// a general regex is not supported.
    static func parse(regex: String, replacement: String) throws(Unsupported) -> PathRewrite {
        let shapes = "only '^PREFIX(.*)', '^PREFIX(/.*)' or '^PREFIX(/.*)?$' with 'TEXT\\1' are supported: "
            + "a literal prefix, no general regex"
        var scalars = Substring(regex)
        guard scalars.first == "^" else {
            throw Unsupported(message: "regex '\(regex)' is not anchored with '^'; \(shapes)")
        }
        scalars = scalars.dropFirst()
        var prefix = ""
        while let c = scalars.first, c != "(" {
            scalars = scalars.dropFirst()
            if c == "\\" {
                guard let next = scalars.first, next.isPunctuation || next.isSymbol else {
                    throw Unsupported(message: "regex '\(regex)' uses a character class ('\\\(scalars.first.map(String.init) ?? "")'); \(shapes)")
                }
                prefix.append(next)
                scalars = scalars.dropFirst()
            } else if ".[]*+?{}|^$)".contains(c) {
                throw Unsupported(message: "regex '\(regex)' uses '\(c)' outside the final group; \(shapes)")
            } else {
                prefix.append(c)
            }
        }
        let tail: Tail
        if scalars.hasPrefix("(.*)") {
            tail = .any
            scalars = scalars.dropFirst(4)
        } else if scalars.hasPrefix("(/.*)?") {
            tail = .optionalSlash
            scalars = scalars.dropFirst(6)
            guard scalars == "$" else { throw Unsupported(message: "regex '\(regex)': '(/.*)?' must end the regex with '$'; \(shapes)") }
        } else if scalars.hasPrefix("(/.*)") {
            tail = .slash
            scalars = scalars.dropFirst(5)
        } else {
            throw Unsupported(message: "regex '\(regex)' is a general regex; \(shapes)")
        }
        if scalars == "$" { scalars = scalars.dropFirst() }
        guard scalars.isEmpty else { throw Unsupported(message: "regex '\(regex)' goes on after its group; \(shapes)") }
        guard replacement.hasSuffix("\\1") else {
            throw Unsupported(message: "replacement '\(replacement)' must end with '\\1'; \(shapes)")
        }
        let insert = String(replacement.dropLast(2))
        guard !insert.contains("\\"), !insert.contains("%") else {
            throw Unsupported(message: "replacement '\(replacement)' must be literal text then '\\1'; \(shapes)")
        }
        return PathRewrite(regex: regex, replacement: replacement, prefix: prefix, tail: tail, insert: insert)
    }
}
