// Loopback stub servers: the backends of the integration tests, as in haproxy's
// reg-tests (servers that stamp their own name). Each accepted connection gets its own
// thread; `stop()` wakes every blocked call with shutdown(2), joins every thread and only
// then closes the listener, so once it returns the port refuses connections and no thread
// of the server is left running.

import Glibc

/// The listener, the accept thread and the per-connection threads shared by every server.
///
/// Locking: `state` guards the set of open connection fds. A connection fd is closed only
/// while holding the lock and removed from the set at the same moment, so `stop()` (which
/// shuts down every fd in the set under the lock) can never touch a closed, reused number.
final class ServerCore: @unchecked Sendable {
    let label: String
    let listenFD: Int32
    let port: UInt16
    private let handler: @Sendable (Int32) -> Void

    private struct State {
        var stopped = false
        var nextID = 0
        var connections: [Int: Int32] = [:]
        var threads: [JoinableThread] = []
        var accepted = 0
    }

    private let state = Protected(State())
    private let stopLock = Protected(false)
    private var acceptThread: JoinableThread?

    /// `handler` runs on a thread of its own for each accepted connection; the fd is closed
    /// when it returns. It must return once the fd is shut down.
    init(label: String, handler: @escaping @Sendable (Int32) -> Void) throws {
        self.label = label
        (listenFD, port) = try makeLoopbackListener()
        self.handler = handler
        acceptThread = JoinableThread(name: "ts-accept") { [self] in acceptLoop() }
    }

    var acceptedCount: Int { state.withLock { $0.accepted } }
    var openConnectionCount: Int { state.withLock { $0.connections.count } }
    var isStopped: Bool { state.withLock { $0.stopped } }

    private func acceptLoop() {
        while true {
            // Glibc does not export accept4 to Swift; children are spawned with
            // closefrom(3) anyway, FD_CLOEXEC is belt and braces.
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if state.withLock({ $0.stopped }) { return }
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM {
                    sleepSeconds(0.01)
                    continue
                }
                return
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let id: Int? = state.withLock { s in
                if s.stopped {
                    close(fd)
                    return nil
                }
                s.accepted += 1
                s.nextID += 1
                s.connections[s.nextID] = fd
                // Reap threads that have finished so a long test does not pile up zombies.
                let (done, running) = (s.threads.filter(\.isFinished), s.threads.filter { !$0.isFinished })
                s.threads = running
                done.forEach { $0.join() }
                return s.nextID
            }
            guard let id else { return }
            let thread = JoinableThread(name: "ts-conn") { [self] in
                handler(fd)
                state.withLock { s in
                    if let fd = s.connections.removeValue(forKey: id) { close(fd) }
                }
            }
            state.withLock { $0.threads.append(thread) }
        }
    }

    /// Closes the listener and every connection, and joins every thread. Idempotent;
    /// concurrent callers all return after the server is fully stopped.
    func stop() {
        stopLock.withLock { alreadyStopped in
            if alreadyStopped { return }
            alreadyStopped = true
            state.withLock { s in
                s.stopped = true
                for fd in s.connections.values { _ = shutdown(fd, Int32(SHUT_RDWR)) }
            }
            // On Linux shutdown(2) on a listening socket wakes a blocked accept(2) (EINVAL)
            // and takes the socket out of the listening state.
            _ = shutdown(listenFD, Int32(SHUT_RDWR))
            acceptThread?.join()
            close(listenFD)
            let threads = state.withLock { s -> [JoinableThread] in
                // Connections accepted between the first sweep and the accept thread's exit.
                for fd in s.connections.values { _ = shutdown(fd, Int32(SHUT_RDWR)) }
                return s.threads
            }
            threads.forEach { $0.join() }
        }
    }
}

/// Counts connections that are open right now and the most ever open at once. One gauge can
/// be shared by several servers to measure the concurrency a proxy allows in total.
public final class ConcurrencyGauge: @unchecked Sendable {
    private let state = Protected((current: 0, max: 0, total: 0))

    public init() {}

    public func enter() {
        state.withLock { s in
            s.current += 1
            s.total += 1
            s.max = Swift.max(s.max, s.current)
        }
    }

    public func leave() {
        state.withLock { $0.current -= 1 }
    }

    public var current: Int { state.withLock { $0.current } }
    public var max: Int { state.withLock { $0.max } }
    public var total: Int { state.withLock { $0.total } }
}

/// Writes `name + "\n"` on every accepted connection. By default it then closes (like a vtc
/// server stamping its name); with `holdOpen` it keeps the connection open until the peer
/// closes it, counting how many are open at once (for maxconn tests).
public final class NameStampServer: @unchecked Sendable {
    public let name: String
    public let holdOpen: Bool
    public let port: UInt16
    /// This server's own concurrency; `sharedGauge` (if any) sees the same events.
    public let gauge = ConcurrencyGauge()
    private let core: ServerCore

    public init(name: String, holdOpen: Bool = false, sharedGauge: ConcurrencyGauge? = nil) throws {
        self.name = name
        self.holdOpen = holdOpen
        let stamp = Array((name + "\n").utf8)
        let gauge = self.gauge
        core = try ServerCore(label: "stamp \(name)") { fd in
            gauge.enter()
            sharedGauge?.enter()
            defer {
                gauge.leave()
                sharedGauge?.leave()
            }
            guard (try? stamp.withUnsafeBytes({ try sendAll(fd, $0) })) != nil else { return }
            if holdOpen {
                // Keep the connection until the peer closes it (or stop() shuts it down);
                // whatever the peer sends is read and dropped.
                while true {
                    switch readOnce(fd, max: 4096, timeout: nil) {
                    case .data: continue
                    default: return
                    }
                }
            } else {
                _ = shutdown(fd, Int32(SHUT_WR))
            }
        }
        port = core.port
    }

    /// "127.0.0.1:PORT", as written after `--server` or `server NAME`.
    public var address: String { "127.0.0.1:\(port)" }
    /// Connections accepted so far.
    public var acceptedCount: Int { core.acceptedCount }
    /// Connections open right now.
    public var currentConnections: Int { gauge.current }
    /// The most connections this server ever had open at once.
    public var maxConcurrentConnections: Int { gauge.max }

    /// Closes the listener (later connects are refused) and every connection; joins all threads.
    public func stop() { core.stop() }
    /// The same as `stop()`: the connections are cut, nothing is said to the peers.
    public func kill() { core.stop() }

    deinit { core.stop() }
}

/// Echoes every byte back. On EOF from the peer it shuts down its write side once everything
/// read has been echoed (half-close aware), then closes.
public final class EchoServer: @unchecked Sendable {
    public let port: UInt16
    private let core: ServerCore
    private let bytes = Protected(0)

    public init() throws {
        let bytes = self.bytes
        core = try ServerCore(label: "echo") { fd in
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
                if n > 0 {
                    let ok = (try? buffer.withUnsafeBytes { try sendAll(fd, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) != nil
                    if !ok { return }
                    bytes.withLock { $0 += n }
                } else if n == 0 {
                    _ = shutdown(fd, Int32(SHUT_WR))
                    return
                } else if errno != EINTR {
                    return
                }
            }
        }
        port = core.port
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var acceptedCount: Int { core.acceptedCount }
    /// Bytes echoed back so far, over all connections.
    public var bytesEchoed: Int { bytes.snapshot }

    public func stop() { core.stop() }
    public func kill() { core.stop() }

    deinit { core.stop() }
}

/// A minimal HTTP/1.1 server: every request gets `200 OK` with the body `name`, with
/// Content-Length. Keep-alive is honoured (HTTP/1.1 default, `Connection: close` ends it,
/// HTTP/1.0 closes unless `Connection: keep-alive`). A request body (Content-Length) is read
/// and dropped; chunked request bodies are not supported.
public final class HTTPStampServer: @unchecked Sendable {
    public let name: String
    public let port: UInt16
    private let core: ServerCore
    private let requests = Protected(0)

    public init(name: String) throws {
        self.name = name
        let requests = self.requests
        core = try ServerCore(label: "http \(name)") { fd in
            HTTPStampServer.serve(fd: fd, body: Array(name.utf8), requests: requests)
        }
        port = core.port
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var acceptedCount: Int { core.acceptedCount }
    /// Requests answered so far, over all connections.
    public var requestCount: Int { requests.snapshot }

    public func stop() { core.stop() }
    public func kill() { core.stop() }

    deinit { core.stop() }

    private static func serve(fd: Int32, body: [UInt8], requests: Protected<Int>) {
        var buffer: [UInt8] = []
        let terminator: [UInt8] = Array("\r\n\r\n".utf8)
        while true {
            // Read one request head.
            var headEnd: Int?
            while headEnd == nil {
                headEnd = buffer.firstRange(of: terminator)?.upperBound
                if headEnd != nil { break }
                guard buffer.count < 64 << 10 else { return }
                switch readOnce(fd, max: 16384, timeout: nil) {
                case .data(let chunk): buffer += chunk
                default: return
                }
            }
            let head = String(decoding: buffer[..<headEnd!], as: UTF8.self)
            buffer.removeFirst(headEnd!)
            let lines = head.split(separator: "\r\n", omittingEmptySubsequences: true)
            guard let requestLine = lines.first else { return }
            let isHTTP10 = requestLine.hasSuffix("HTTP/1.0")
            var contentLength = 0
            var connectionTokens: [String] = []
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let field = line[..<colon].lowercased()
                let value = String(line[line.index(after: colon)...]).trimmingWhitespace()
                if field == "content-length" { contentLength = Int(value) ?? 0 }
                if field == "connection" {
                    connectionTokens += value.lowercased().split(separator: ",").map { String($0).trimmingWhitespace() }
                }
            }
            // Skip the request body.
            while buffer.count < contentLength {
                switch readOnce(fd, max: 16384, timeout: nil) {
                case .data(let chunk): buffer += chunk
                default: return
                }
            }
            buffer.removeFirst(contentLength)
            let keepAlive = isHTTP10 ? connectionTokens.contains("keep-alive") : !connectionTokens.contains("close")
            var response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.count)\r\n"
            response += keepAlive ? (isHTTP10 ? "Connection: keep-alive\r\n" : "") : "Connection: close\r\n"
            response += "\r\n"
            let bytes = Array(response.utf8) + (requestLine.hasPrefix("HEAD ") ? [] : body)
            requests.withLock { $0 += 1 }
            guard (try? bytes.withUnsafeBytes({ try sendAll(fd, $0) })) != nil else { return }
            if !keepAlive {
                _ = shutdown(fd, Int32(SHUT_WR))
                return
            }
        }
    }
}
