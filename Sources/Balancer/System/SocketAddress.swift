// IPv4/IPv6 socket addresses as a value type, and name resolution (configuration time
// only: getaddrinfo blocks, so it never runs on a loop thread).
import CBalancerShims
public import Glibc

public enum SocketAddress: Sendable, Hashable, CustomStringConvertible {
    case v4(sockaddr_in)
    case v6(sockaddr_in6)

    init(storage: sockaddr_storage) {
        var storage = storage
        switch CInt(storage.ss_family) {
        case AF_INET6:
            self = withUnsafeBytes(of: &storage) { .v6($0.load(as: sockaddr_in6.self)) }
        default:
            self = withUnsafeBytes(of: &storage) { .v4($0.load(as: sockaddr_in.self)) }
        }
    }

    /// A numeric address only: `127.0.0.1`, `::1`. Returns nil for anything else.
    public init?(numericHost host: String, port: UInt16) {
        var v4 = sockaddr_in()
        if inet_pton(AF_INET, host, &v4.sin_addr) == 1 {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            self = .v4(v4)
            return
        }
        var v6 = sockaddr_in6()
        if inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            self = .v6(v6)
            return
        }
        return nil
    }

    /// Resolves a host (numeric, a name, or `*`/empty for "any IPv4 address").
    /// Blocking: call at configuration time only.
    public static func resolve(host: String, port: UInt16) throws(ResolutionError) -> SocketAddress {
        let host = (host == "*" || host.isEmpty) ? "0.0.0.0" : host
        if let numeric = SocketAddress(numericHost: host, port: port) { return numeric }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &list)
        guard rc == 0, let first = list else {
            let reason = rc == 0 ? "no address" : String(cString: gai_strerror(rc))
            throw ResolutionError(host: host, reason: reason)
        }
        defer { freeaddrinfo(list) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        var fallback: SocketAddress?
        while let e = entry {
            if let sa = e.pointee.ai_addr {
                switch e.pointee.ai_family {
                case AF_INET:
                    var v4 = UnsafeRawPointer(sa).load(as: sockaddr_in.self)
                    v4.sin_port = port.bigEndian
                    return .v4(v4)   // prefer IPv4, as haproxy's resolver does by default
                case AF_INET6 where fallback == nil:
                    var v6 = UnsafeRawPointer(sa).load(as: sockaddr_in6.self)
                    v6.sin6_port = port.bigEndian
                    fallback = .v6(v6)
                default: break
                }
            }
            entry = e.pointee.ai_next
        }
        if let fallback { return fallback }
        throw ResolutionError(host: host, reason: "no IPv4 or IPv6 address")
    }

    public var family: CInt {
        switch self {
        case .v4: AF_INET
        case .v6: AF_INET6
        }
    }

    public var port: UInt16 {
        switch self {
        case .v4(let a): UInt16(bigEndian: a.sin_port)
        case .v6(let a): UInt16(bigEndian: a.sin6_port)
        }
    }

    /// The numeric host, without the port.
    public var host: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch self {
        case .v4(var a):
            _ = inet_ntop(AF_INET, &a.sin_addr, &buffer, socklen_t(buffer.count))
        case .v6(var a):
            _ = inet_ntop(AF_INET6, &a.sin6_addr, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String {
        switch self {
        case .v4: "\(host):\(port)"
        case .v6: "[\(host)]:\(port)"
        }
    }

    @inline(__always)
    func withSockAddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        switch self {
        case .v4(var a):
            return try withUnsafePointer(to: &a) { (p) throws(E) -> R in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in
                    try body(sa, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .v6(var a):
            return try withUnsafePointer(to: &a) { (p) throws(E) -> R in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in
                    try body(sa, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }

    // sockaddr_in is a C struct without Hashable; compare the bytes that matter.
    public static func == (lhs: SocketAddress, rhs: SocketAddress) -> Bool {
        lhs.family == rhs.family && lhs.port == rhs.port && lhs.host == rhs.host
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(family)
        hasher.combine(port)
        hasher.combine(host)
    }
}

public struct ResolutionError: Error, Sendable, CustomStringConvertible {
    public var host: String
    public var reason: String
    public var description: String { "cannot resolve '\(host)': \(reason)" }
}

extension SocketAddress {
    /// Calls `body` with the numeric host (`1.2.3.4`, `::1`) as bytes, formatted on the
    /// stack: for log lines and X-Forwarded-For, which must not allocate per request.
    public func withNumericHost<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        var text = (Int64(0), Int64(0), Int64(0), Int64(0), Int64(0), Int64(0), Int64(0), Int64(0))  // 64 bytes
        return withUnsafeMutableBytes(of: &text) { raw in
            let out = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            var length = 0
            switch self {
            case .v4(let a):
                // By hand: glibc's inet_ntop formats IPv4 with sprintf, which showed in
                // the per-request profile (X-Forwarded-For, log lines).
                withUnsafeBytes(of: a.sin_addr.s_addr) { octets in
                    for (i, octet) in octets.enumerated() {
                        if i > 0 { raw[length] = UInt8(ascii: "."); length += 1 }
                        if octet >= 100 { raw[length] = UInt8(ascii: "0") + octet / 100; length += 1 }
                        if octet >= 10 { raw[length] = UInt8(ascii: "0") + octet / 10 % 10; length += 1 }
                        raw[length] = UInt8(ascii: "0") + octet % 10
                        length += 1
                    }
                }
            case .v6(var a):
                _ = inet_ntop(AF_INET6, &a.sin6_addr, out, 64)
                while length < 64 && raw[length] != 0 { length += 1 }
            }
            return body(UnsafeRawBufferPointer(rebasing: raw[0..<length]))
        }
    }
}
