// An HTTP/1.1 backend that holds every request until the test opens its gate: the way to
// keep a known number of requests in flight at a proxy (for the `current` counters) without
// guessing with delays. Keep-alive as HTTPStampServer: 200 with body `name`, Content-Length.

import Foundation
import Glibc

public final class GatedHTTPServer: @unchecked Sendable {
    public let name: String
    public let port: UInt16
    private let core: ServerCore
    private let gate: Gate

    /// Open/closed and the counts, under one condition so waiters wake on every change.
    final class Gate: @unchecked Sendable {
        let condition = NSCondition()
        var open = false
        var stopped = false
        var waiting = 0
        var answered = 0

        func locked<R>(_ body: () -> R) -> R {
            condition.lock()
            defer { condition.unlock() }
            return body()
        }
    }

    public init(name: String) throws {
        self.name = name
        let gate = Gate()
        self.gate = gate
        let body = Array(name.utf8)
        core = try ServerCore(label: "gated \(name)") { fd in
            GatedHTTPServer.serve(fd: fd, name: name, body: body, gate: gate)
        }
        port = core.port
    }

    public var address: String { "127.0.0.1:\(port)" }
    public var acceptedCount: Int { core.acceptedCount }
    /// Requests received in full and held at the gate right now.
    public var waitingCount: Int { gate.locked { gate.waiting } }
    /// Requests answered so far.
    public var answeredCount: Int { gate.locked { gate.answered } }

    /// Answers every held request, and every later one at once.
    public func release() {
        gate.locked {
            gate.open = true
            gate.condition.broadcast()
        }
    }

    public func stop() {
        gate.locked {
            gate.stopped = true
            gate.condition.broadcast()
        }
        core.stop()
    }

    deinit { stop() }

    private static func serve(fd: Int32, name: String, body: [UInt8], gate: Gate) {
        var buffer: [UInt8] = []
        let terminator: [UInt8] = [13, 10, 13, 10]
        while true {
            var headEnd: Int?
            while true {
                headEnd = buffer.firstRange(of: terminator)?.upperBound
                if headEnd != nil { break }
                guard buffer.count < 64 << 10, case .data(let chunk) = readOnce(fd, max: 16384, timeout: nil) else { return }
                buffer += chunk
            }
            let head = String(decoding: buffer[..<headEnd!], as: UTF8.self).lowercased()
            buffer.removeSubrange(..<headEnd!)
            var contentLength = 0
            var close = false
            for line in head.split(separator: "\r\n") {
                if line.hasPrefix("content-length:") { contentLength = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0 }
                if line.hasPrefix("connection:") && line.contains("close") { close = true }
            }
            while buffer.count < contentLength {
                guard case .data(let chunk) = readOnce(fd, max: 16384, timeout: nil) else { return }
                buffer += chunk
            }
            buffer.removeSubrange(..<contentLength)

            let proceed = gate.locked { () -> Bool in
                gate.waiting += 1
                gate.condition.broadcast()
                while !gate.open && !gate.stopped { gate.condition.wait() }
                gate.waiting -= 1
                return !gate.stopped
            }
            guard proceed else { return }
            let response = Array("HTTP/1.1 200 OK\r\nX-Server: \(name)\r\nContent-Length: \(body.count)\r\n\(close ? "Connection: close\r\n" : "")\r\n".utf8) + body
            guard (try? response.withUnsafeBytes({ try sendAll(fd, $0) })) != nil else { return }
            gate.locked { gate.answered += 1 }
            if close {
                _ = shutdown(fd, Int32(SHUT_WR))
                return
            }
        }
    }
}
