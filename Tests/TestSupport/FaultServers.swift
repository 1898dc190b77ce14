// Backends that misbehave on purpose, for the fault tests: each reads one request head (or
// nothing) and then does one bad thing. And any program run as a server in a process of
// its own, for the faults only a process can have (SIGSTOP).

import Glibc

public final class FaultHTTPServer: @unchecked Sendable {
    public enum Fault: Sendable {
        /// Sends the head and `sent` bytes of a `Content-Length: length` body, then resets
        /// the connection (SO_LINGER 0).
        case resetMidResponse(sent: Int, length: Int)
        /// Sends a head announcing `Content-Length: length`, then nothing; keeps the
        /// connection until the peer closes it.
        case stopAfterHead(length: Int)
        /// Accepts and never reads a byte; keeps the connection until the peer closes it.
        case neverRead
        /// Reads the request head, sends `head` at once, then `body` one byte every
        /// `interval` seconds, and closes.
        case trickle(head: [UInt8], body: [UInt8], interval: Double)
        /// Reads the request head, answers with a `Content-Length: length` body of
        /// `HTTPTestServer.pattern`, as fast as the peer takes it.
        case large(length: Int)
    }

    public let name: String
    public let port: UInt16
    private let core: ServerCore
    private let bodyBytes = Protected(0)

    public init(name: String, fault: Fault) throws {
        self.name = name
        let sentCounter = bodyBytes
        core = try ServerCore(label: "fault \(name)") { fd in
            FaultHTTPServer.serve(fd: fd, name: name, fault: fault, sent: sentCounter)
        }
        port = core.port
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var acceptedCount: Int { core.acceptedCount }
    /// Connections open right now.
    public var openConnections: Int { core.openConnectionCount }
    /// Bytes written so far (heads and bodies, all connections).
    public var bytesSent: Int { bodyBytes.snapshot }

    public func stop() { core.stop() }

    deinit { core.stop() }

    /// The head of a 200 with `Content-Length: length`.
    public static func head(name: String, length: Int) -> [UInt8] {
        Array("HTTP/1.1 200 OK\r\nX-Server: \(name)\r\nContent-Length: \(length)\r\n\r\n".utf8)
    }

    private static func readHead(_ fd: Int32) -> Bool {
        var buffer: [UInt8] = []
        while buffer.firstRange(of: [13, 10, 13, 10]) == nil {
            guard case .data(let chunk) = readOnce(fd, max: 16384, timeout: nil) else { return false }
            buffer += chunk
        }
        return true
    }

    /// Blocks without reading until the peer closes (or `stop()` shuts the socket down).
    private static func waitForPeerClose(_ fd: Int32) {
        var p = pollfd(fd: fd, events: 0x2000 /* POLLRDHUP, which Glibc does not export to Swift */, revents: 0)
        while true {
            let n = poll(&p, 1, -1)
            if n < 0 && errno == EINTR { continue }
            return
        }
    }

    private static func send(_ fd: Int32, _ bytes: [UInt8], _ sent: Protected<Int>) -> Bool {
        guard (try? bytes.withUnsafeBytes({ try sendAll(fd, $0) })) != nil else { return false }
        sent.withLock { $0 += bytes.count }
        return true
    }

    private static func serve(fd: Int32, name: String, fault: Fault, sent: Protected<Int>) {
        switch fault {
        case .neverRead:
            waitForPeerClose(fd)
        case .resetMidResponse(let count, let length):
            guard readHead(fd) else { return }
            guard send(fd, head(name: name, length: length) + HTTPTestServer.pattern(count: count), sent) else { return }
            // Let the bytes leave before the reset, so the proxy sees data, then RST.
            sleepSeconds(0.1)
            var hard = linger(l_onoff: 1, l_linger: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
        case .stopAfterHead(let length):
            guard readHead(fd), send(fd, head(name: name, length: length), sent) else { return }
            waitForPeerClose(fd)
        case .trickle(let head, let body, let interval):
            guard readHead(fd), send(fd, head, sent) else { return }
            for byte in body {
                sleepSeconds(interval)
                guard send(fd, [byte], sent) else { return }
            }
            _ = shutdown(fd, Int32(SHUT_WR))
        case .large(let length):
            guard readHead(fd), send(fd, head(name: name, length: length), sent) else { return }
            let block = HTTPTestServer.pattern(count: 1 << 16)
            var left = length
            while left > 0 {
                let n = min(left, block.count)
                guard send(fd, Array(block[..<n]), sent) else { return }
                left -= n
            }
        }
    }
}

/// A program serving on a port, in a process of its own (`python3 -m http.server PORT`):
/// for faults that need a process, such as being frozen with SIGSTOP. Only the pid we
/// spawned is ever signalled.
public final class ServerProcess: @unchecked Sendable {
    public let port: UInt16
    private let child: ChildProcess

    /// Runs `executable arguments` and waits until `port` accepts connections.
    public init(executable: String, arguments: [String], port: UInt16, timeout: Double = 10) throws {
        self.port = port
        child = try ChildProcess(executable: executable, arguments: arguments)
        if !child.listens(on: port, timeout: timeout) {
            let code = child.stop(signal: SIGKILL, timeout: 1)
            throw TestSupportError("\(executable) \(arguments.joined(separator: " ")) did not listen on port \(port) (exit \(code)): \(child.output.lines().joined(separator: "\n"))")
        }
    }

    /// Python's http.server on 127.0.0.1 at a free port: `GET /` answers 200 with a listing.
    public static func pythonHTTPServer(directory: String = "/") throws -> ServerProcess {
        let port = try freePort()
        return try ServerProcess(executable: "/usr/bin/env",
                                 arguments: ["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", directory, String(port)],
                                 port: port)
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var pid: Int32 { child.pid }

    /// SIGSTOP, SIGCONT, … to this process only.
    public func signal(_ sig: Int32) { child.signal(sig) }

    /// SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, then SIGKILL.
    @discardableResult
    public func stop(timeout: Double = 5) -> Int32 {
        child.signal(SIGCONT)
        return child.stop(signal: SIGTERM, timeout: timeout)
    }

    deinit {
        child.signal(SIGCONT)
    }
}
