// Blocking loopback sockets for tests. Every socket is created close-on-exec so a spawned
// balancerd or nginx never inherits (and so keeps open) a test server's listener, and every
// send uses MSG_NOSIGNAL so a peer that went away is an error, not a SIGPIPE.

import Glibc

/// The errno of a failed socket call, with the call's name.
public struct SocketError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32

    /// Captures the current errno.
    public init(_ call: String) {
        self.call = call
        self.errno = Glibc.errno
    }

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }

    public var isConnectionRefused: Bool { errno == ECONNREFUSED }
}

let loopbackHost = "127.0.0.1"

func loopbackAddress(port: UInt16, host: String = loopbackHost) throws -> sockaddr_in {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
        throw TestSupportError("not an IPv4 address: \(host)")
    }
    return addr
}

func makeTCPSocket() throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SocketError("socket") }
    return fd
}

func setIntOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
    var v = value
    _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
}

/// Sets SO_RCVTIMEO (or SO_SNDTIMEO, which also bounds connect(2) on Linux). 0 means forever,
/// so a zero request is rounded up to 1 ms.
func setTimeout(_ fd: Int32, option: Int32, seconds: Double) {
    let s = max(seconds, 0.001)
    var tv = timeval(tv_sec: Int(s), tv_usec: Int((s - Double(Int(s))) * 1e6))
    _ = setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
}

func boundPort(_ fd: Int32) throws -> UInt16 {
    var addr = sockaddr_in()
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let rc = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    guard rc == 0 else { throw SocketError("getsockname") }
    return UInt16(bigEndian: addr.sin_port)
}

/// A listening socket on 127.0.0.1 and the port it got (0 asks the kernel for a free one).
public func makeLoopbackListener(port: UInt16 = 0, backlog: Int32 = 128) throws -> (fd: Int32, port: UInt16) {
    let fd = try makeTCPSocket()
    setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
    var addr = try loopbackAddress(port: port)
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else {
        let e = SocketError("bind 127.0.0.1:\(port)")
        close(fd)
        throw e
    }
    guard listen(fd, backlog) == 0 else {
        let e = SocketError("listen")
        close(fd)
        throw e
    }
    do {
        return (fd, try boundPort(fd))
    } catch {
        close(fd)
        throw error
    }
}

/// A port that was free a moment ago (bind 0, read it back, close). For programs such as
/// nginx that must be told a port; there is a small window in which someone else can take it.
public func freePort() throws -> UInt16 {
    let (fd, port) = try makeLoopbackListener(backlog: 1)
    close(fd)
    return port
}

/// Connects to host:port and returns the fd (the caller closes it). `timeout` bounds the
/// connect itself and, since SO_SNDTIMEO stays set, every later send: a peer that stops
/// reading makes a send fail after `timeout` instead of hanging the test. A refused
/// connection throws a `SocketError` with `isConnectionRefused`.
public func connectTCP(port: UInt16, host: String = "127.0.0.1", timeout: Double = 5) throws -> Int32 {
    let fd = try makeTCPSocket()
    setTimeout(fd, option: SO_SNDTIMEO, seconds: timeout)
    var addr = try loopbackAddress(port: port, host: host)
    while true {
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc == 0 { break }
        if errno == EINTR { continue }
        let e = SocketError("connect \(host):\(port)")
        close(fd)
        throw e
    }
    setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    return fd
}

/// Writes all of `bytes`, retrying short writes. Throws on any error (EPIPE, ECONNRESET,
/// a send timeout shows as EAGAIN).
func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws {
    var sent = 0
    while sent < bytes.count {
        let n = Glibc.send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
        if n < 0 {
            if errno == EINTR { continue }
            throw SocketError("send")
        }
        sent += n
    }
}

/// The outcome of one read.
public enum ReadResult: Equatable, Sendable {
    case data([UInt8])
    case eof
    case timeout
    case error(Int32)
}

func readOnce(_ fd: Int32, max: Int, timeout: Double?) -> ReadResult {
    if let timeout { setTimeout(fd, option: SO_RCVTIMEO, seconds: timeout) }
    var buffer = [UInt8](repeating: 0, count: max)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, max, 0) }
        if n > 0 { return .data(Array(buffer[0..<n])) }
        if n == 0 { return .eof }
        if errno == EINTR { continue }
        if errno == EAGAIN || errno == EWOULDBLOCK { return .timeout }
        return .error(errno)
    }
}

/// A blocking TCP client with bounded reads. `send` may run on one thread while reads run on
/// another (one writer and one reader at a time); `close()` is idempotent.
public final class TCPClient: @unchecked Sendable {
    public let port: UInt16
    private let fdState: Protected<Int32>
    // Bytes read past a newline by `readLine`, handed out first by the next read. Reader-only.
    private var pending: [UInt8] = []

    public init(port: UInt16, host: String = "127.0.0.1", connectTimeout: Double = 5) throws {
        self.port = port
        fdState = Protected(try connectTCP(port: port, host: host, timeout: connectTimeout))
    }

    /// The client's own port (what a proxy logs as the client port, `%cp`).
    public var localPort: UInt16? {
        let fd = fdState.snapshot
        return fd >= 0 ? try? boundPort(fd) : nil
    }

    /// The descriptor, or -1 after `close()`.
    public var fd: Int32 { fdState.snapshot }

    private func openFD() throws -> Int32 {
        let fd = fdState.snapshot
        guard fd >= 0 else { throw TestSupportError("TCPClient to port \(port) is closed") }
        return fd
    }

    public func send(_ bytes: [UInt8]) throws {
        let fd = try openFD()
        try bytes.withUnsafeBytes { try sendAll(fd, $0) }
    }

    public func send(_ bytes: ArraySlice<UInt8>) throws {
        let fd = try openFD()
        try bytes.withUnsafeBytes { try sendAll(fd, $0) }
    }

    public func send(_ text: String) throws {
        try send(Array(text.utf8))
    }

    /// Half-close: the peer reads EOF, we can still read.
    public func shutdownWrite() {
        let fd = fdState.snapshot
        if fd >= 0 { _ = shutdown(fd, Int32(SHUT_WR)) }
    }

    /// One read of at most `max` bytes, waiting at most `timeout` seconds.
    public func read(max: Int = 65536, timeout: Double = 5) -> ReadResult {
        if !pending.isEmpty {
            let chunk = Array(pending.prefix(max))
            pending.removeFirst(chunk.count)
            return .data(chunk)
        }
        guard let fd = try? openFD() else { return .error(EBADF) }
        return readOnce(fd, max: max, timeout: timeout)
    }

    /// Everything until EOF. Throws if `timeout` passes first (with how much had arrived),
    /// on a read error (e.g. ECONNRESET), or if more than `limit` bytes arrive.
    public func readAll(timeout: Double = 10, limit: Int = 256 << 20) throws -> [UInt8] {
        Watchdog.note("EOF from port \(port) (TCPClient.readAll)")
        let deadline = Deadline(secondsFromNow: timeout)
        var result = pending
        pending = []
        while true {
            let remaining = deadline.remainingSeconds
            if remaining <= 0 {
                throw TestSupportError("readAll from port \(port): no EOF within \(timeout)s (got \(result.count) bytes)")
            }
            switch read(max: 1 << 16, timeout: remaining) {
            case .data(let chunk):
                result += chunk
                if result.count > limit {
                    throw TestSupportError("readAll from port \(port): more than \(limit) bytes")
                }
            case .eof:
                return result
            case .timeout:
                continue
            case .error(let e):
                throw SocketError("recv after \(result.count) bytes from port \(port)", errno: e)
            }
        }
    }

    /// Reads up to and including the next "\n" and returns the line without it (and without
    /// a trailing "\r"). Returns nil on EOF before a newline or on timeout; throws on error.
    public func readLine(timeout: Double = 5) throws -> String? {
        let deadline = Deadline(secondsFromNow: timeout)
        var buffer = pending
        pending = []
        while true {
            if let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                pending = Array(buffer[(nl + 1)...])
                var line = Array(buffer[..<nl])
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            let remaining = deadline.remainingSeconds
            if remaining <= 0 {
                pending = buffer
                return nil
            }
            guard let fd = try? openFD() else { return nil }
            switch readOnce(fd, max: 4096, timeout: remaining) {
            case .data(let chunk): buffer += chunk
            case .eof:
                pending = buffer
                return nil
            case .timeout: continue
            case .error(let e): throw SocketError("recv from port \(port)", errno: e)
            }
        }
    }

    public func close() {
        fdState.withLock { fd in
            if fd >= 0 {
                Glibc.close(fd)
                fd = -1
            }
        }
    }

    deinit {
        close()
    }
}

/// Connects, reads until EOF and returns the trimmed text: what a name-stamping backend
/// sends, as seen through the proxy. Throws if the connection fails, times out, or ends
/// without any byte (a proxy that accepted but could not reach a server).
public func fetchName(port: UInt16, host: String = "127.0.0.1", timeout: Double = 5) throws -> String {
    let client = try TCPClient(port: port, host: host, connectTimeout: timeout)
    defer { client.close() }
    let bytes = try client.readAll(timeout: timeout)
    let text = String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
    guard !text.isEmpty else {
        throw TestSupportError("connection to port \(port) closed without a name")
    }
    return text
}

extension String {
    func trimmingWhitespace() -> String {
        // Character.isWhitespace also covers "\r\n", which is a single Character.
        guard let start = firstIndex(where: { !$0.isWhitespace }), let end = lastIndex(where: { !$0.isWhitespace }) else {
            return ""
        }
        return String(self[start...end])
    }
}
