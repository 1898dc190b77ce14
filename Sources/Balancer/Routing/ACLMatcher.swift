// ACL tests compiled for the request path: patterns as bytes, compared in place against
// the ranges the head parser recorded. Nothing here allocates; a test is a loop over its
// patterns. The comparisons follow haproxy 2.6's src/pattern.c (`pat_match_*`,
// `match_word`) and src/http_fetch.c, checked against the real binary by
// RoutingParityTests.

/// What the ACLs of one request look at: byte ranges of the parsed head, and the client.
struct RequestView {
    var bytes: UnsafeRawBufferPointer
    var method: Range<Int>
    var methodKind: HTTPMethod
    /// The Host field's value (nil: no Host field).
    var host: Range<Int>?
    /// The path: from the first "/" of the target (after any scheme and authority) to
    /// before the "?". nil when the target has no path (`*`).
    var path: UnsafeRawBufferPointer?
    /// The client's address, IPv4 as an IPv4-mapped IPv6 address.
    var source: IPPattern.Address
    /// The request came in over TLS (`ssl_fc`).
    var tls = false
    /// The TLS client's server name (`ssl_fc_sni`), nil without TLS or SNI.
    var serverName: UnsafeRawBufferPointer? = nil
}

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `::1`), held as 128 bits: IPv4 networks are
/// IPv4-mapped, so an IPv4 pattern matches an IPv4 client whatever socket family it came
/// in on, as haproxy does.
public struct IPPattern: Sendable, Equatable {
    public struct Address: Sendable, Equatable {
        var high: UInt64
        var low: UInt64
    }

    var network: Address
    var mask: Address

    /// `ADDRESS[/PREFIX]`; nil when it is not one.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = SocketAddress(numericHost: String(parts[0]), port: 0) else { return nil }
        let bits: Int
        let isV4: Bool
        if case .v4 = address { isV4 = true } else { isV4 = false }
        if parts.count == 2 {
            guard let n = Int(parts[1]), n >= 0, n <= (isV4 ? 32 : 128) else { return nil }
            bits = isV4 ? n + 96 : n
        } else {
            bits = 128
        }
        let full = IPPattern.address(of: address)
        let mask = Address(high: bits >= 64 ? .max : (bits == 0 ? 0 : ~(UInt64.max >> UInt64(bits))),
                           low: bits <= 64 ? 0 : (bits == 128 ? .max : ~(UInt64.max >> UInt64(bits - 64))))
        self.mask = mask
        self.network = Address(high: full.high & mask.high, low: full.low & mask.low)
    }

    @inline(__always)
    func contains(_ a: Address) -> Bool {
        a.high & mask.high == network.high && a.low & mask.low == network.low
    }

    static func address(of address: SocketAddress) -> Address {
        switch address {
        case .v4(let a):
            let v4 = UInt64(UInt32(bigEndian: a.sin_addr.s_addr))
            return Address(high: 0, low: 0x0000_FFFF_0000_0000 | v4)
        case .v6(var a):
            return withUnsafeBytes(of: &a.sin6_addr) { raw in
                var high: UInt64 = 0, low: UInt64 = 0
                for i in 0..<8 { high = high << 8 | UInt64(raw[i]) }
                for i in 8..<16 { low = low << 8 | UInt64(raw[i]) }
                return Address(high: high, low: low)
            }
        }
    }
}

/// One compiled `acl` line or `{ }` test.
struct CompiledTest: Sendable {
    let criterion: ACLCriterion
    let match: ACLMatch
    let ignoreCase: Bool
    /// String patterns (hosts, paths, methods).
    let patterns: [[UInt8]]
    /// `method` patterns: the known method each names, or `.other` (compared as text).
    let methods: [HTTPMethod]
    let networks: [IPPattern]

    init(_ test: ACLTest) {
        criterion = test.criterion
        match = test.match
        ignoreCase = test.ignoreCase
        patterns = test.values.map { Array($0.utf8) }
        methods = test.values.map { CompiledTest.haproxyMethod($0) }
        networks = test.criterion == .source ? test.values.compactMap(IPPattern.init) : []
    }

    /// haproxy knows these eight by name (case-sensitive); any other method, PATCH
    /// included, is compared as text.
    static func haproxyMethod(_ name: String) -> HTTPMethod {
        switch name {
        case "GET": .get
        case "HEAD": .head
        case "POST": .post
        case "PUT": .put
        case "DELETE": .delete
        case "OPTIONS": .options
        case "TRACE": .trace
        case "CONNECT": .connect
        default: .other
        }
    }

    func matches(_ request: RequestView) -> Bool {
        switch criterion {
        case .tls:
            return request.tls
        case .tlsServerName:
            guard let name = request.serverName else { return false }
            return anyPattern(name, 0..<name.count)
        case .source:
            for network in networks where network.contains(request.source) { return true }
            return false
        case .method:
            let sampleKnown = request.methodKind != .patch && request.methodKind != .other
            for (i, method) in methods.enumerated() {
                if method != .other {
                    if sampleKnown && method == request.methodKind { return true }
                } else if !sampleKnown {
                    let found = patterns[i].withUnsafeBytes { p in
                        Self.compare(request.bytes, request.method, p, .exact, ignoreCase)
                    }
                    if found { return true }
                }
            }
            return false
        case .path, .pathBegins, .pathEnds, .pathDirectory:
            guard let path = request.path else { return false }
            return anyPattern(path, 0..<path.count)
        case .host, .requestHost, .hostBegins, .hostEnds, .hostDomain:
            guard let host = request.host else { return false }
            // req.hdr() splits a field at commas, and an ACL tries every value.
            var found = false
            HTTPSyntax.forEachListElement(request.bytes, host) { value in
                found = anyPattern(request.bytes, value)
                return !found
            }
            return found
        }
    }

    @inline(__always)
    private func anyPattern(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        for pattern in patterns {
            let hit = pattern.withUnsafeBytes { Self.compare(bytes, range, $0, match, ignoreCase) }
            if hit { return true }
        }
        return false
    }

    /// haproxy's string matches of `pattern` against `bytes[range]`.
    static func compare(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ pattern: UnsafeRawBufferPointer,
                        _ match: ACLMatch, _ ignoreCase: Bool) -> Bool {
        let n = pattern.count
        switch match {
        case .exact:
            return range.count == n && equal(bytes, range.lowerBound, pattern, 0, n, ignoreCase)
        case .begins:
            return range.count >= n && equal(bytes, range.lowerBound, pattern, 0, n, ignoreCase)
        case .ends:
            return range.count >= n && equal(bytes, range.upperBound - n, pattern, 0, n, ignoreCase)
        case .substring:
            guard range.count >= n else { return false }
            var start = range.lowerBound
            while start + n <= range.upperBound {
                if equal(bytes, start, pattern, 0, n, ignoreCase) { return true }
                start += 1
            }
            return false
        case .directory:
            return word(bytes, range, pattern, ignoreCase, domain: false)
        case .domain:
            return word(bytes, range, pattern, ignoreCase, domain: true)
        }
    }

    @inline(__always)
    static func equal(_ a: UnsafeRawBufferPointer, _ at: Int, _ b: UnsafeRawBufferPointer, _ from: Int, _ count: Int,
                      _ ignoreCase: Bool) -> Bool {
        var i = 0
        if ignoreCase {
            while i < count {
                if HTTPSyntax.lowercased(a[at + i]) != HTTPSyntax.lowercased(b[from + i]) { return false }
                i += 1
            }
        } else {
            while i < count {
                if a[at + i] != b[from + i] { return false }
                i += 1
            }
        }
        return true
    }

    @inline(__always)
    static func isDelimiter(_ byte: UInt8, domain: Bool) -> Bool {
        byte == UInt8(ascii: "/") || (domain && (byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "?")))
    }

    /// `match_word` of haproxy: the pattern, without its leading and trailing delimiters,
    /// found where a word starts and followed by a delimiter or the end.
    static func word(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ pattern: UnsafeRawBufferPointer,
                     _ ignoreCase: Bool, domain: Bool) -> Bool {
        var ps = 0
        var pl = pattern.count
        while pl > 0 && isDelimiter(pattern[ps], domain: domain) { ps += 1; pl -= 1 }
        while pl > 0 && isDelimiter(pattern[ps + pl - 1], domain: domain) { pl -= 1 }
        guard pl > 0, pl <= range.count else { return false }
        let end = range.upperBound - pl
        var mayMatch = true
        var c = range.lowerBound
        while c <= end {
            if isDelimiter(bytes[c], domain: domain) {
                mayMatch = true
            } else if mayMatch {
                if equal(bytes, c, pattern, ps, pl, ignoreCase)
                    && (c == end || isDelimiter(bytes[c + pl], domain: domain)) {
                    return true
                }
                mayMatch = false
            }
            c += 1
        }
        return false
    }
}

/// A condition with every name resolved to an index in the table's `acls`.
struct CompiledCondition: Sendable {
    struct Term: Sendable {
        let acl: Int
        let negated: Bool
    }

    let unless: Bool
    let alternatives: [[Term]]

    func holds(_ request: RequestView, acls: [[CompiledTest]]) -> Bool {
        var any = false
        for alternative in alternatives {
            var all = true
            for term in alternative {
                var hit = false
                for test in acls[term.acl] where test.matches(request) {
                    hit = true
                    break
                }
                if hit == term.negated {
                    all = false
                    break
                }
            }
            if all {
                any = true
                break
            }
        }
        return any != unless
    }
}
