// A client that keeps sending while a process is replaced under it (HandoverTests,
// SystemdUpgradeTests): every failed request or reset is kept, with what it was.

import Foundation
import Glibc
import Synchronization
import TestSupport

/// A client that keeps sending: keep-alive connections (reconnecting after a
/// `Connection: close`) and one new connection per request, until told to stop.
final class RequestLoad: @unchecked Sendable {
    let port: UInt16
    let done = Atomic<Bool>(false)
    let served = Atomic<Int>(0)
    let failures = Mutex<[String]>([])
    private var threads: [JoinableThread] = []

    init(port: UInt16, keepAlive: Int, fresh: Int) {
        self.port = port
        for i in 0..<keepAlive { threads.append(JoinableThread(name: "ts-ka-\(i)") { self.keepAliveLoop() }) }
        for i in 0..<fresh { threads.append(JoinableThread(name: "ts-new-\(i)") { self.freshLoop() }) }
    }

    private func fail(_ message: String) { failures.withLock { $0.append(message) } }

    private func keepAliveLoop() {
        var connection: HTTPClientConnection?
        var count = 0
        // Bounded in count as well as by the test's stop.
        while !done.load(ordering: .acquiring) && count < 20_000 {
            count += 1
            do {
                if connection == nil { connection = try HTTPClientConnection(port: port) }
                try connection!.send(getRequest("/ka"))
                let response = try connection!.readResponse()
                guard response.status == 200 else { fail("keep-alive: status \(response.status)"); continue }
                served.add(1, ordering: .relaxed)
                if response.header("Connection")?.lowercased() == "close" {
                    let end = rawRead(connection!.fd, timeout: 5)
                    if end != .eof { fail("keep-alive: \(end) instead of a clean close after Connection: close") }
                    connection!.close()
                    connection = nil
                }
            } catch {
                fail("keep-alive request \(count): \(error)")
                connection?.close()
                connection = nil
            }
        }
        connection?.close()
    }

    private func freshLoop() {
        var count = 0
        while !done.load(ordering: .acquiring) && count < 20_000 {
            count += 1
            do {
                let connection = try HTTPClientConnection(port: port)
                defer { connection.close() }
                try connection.send(getRequest("/new", extra: "Connection: close\r\n"))
                let response = try connection.readResponse()
                guard response.status == 200 else { fail("new connection: status \(response.status)"); continue }
                served.add(1, ordering: .relaxed)
            } catch {
                fail("new connection \(count): \(error)")
            }
        }
    }

    /// Waits until `count` more requests were served (or `timeout` seconds passed).
    func waitForMore(_ count: Int, timeout: Double = 20) -> Bool {
        let target = served.load(ordering: .relaxed) + count
        let deadline = Deadline(secondsFromNow: timeout)
        while served.load(ordering: .relaxed) < target {
            if deadline.remainingSeconds <= 0 { return false }
            usleep(5_000)
        }
        return true
    }

    func stop() {
        done.store(true, ordering: .releasing)
        for thread in threads { thread.join() }
    }
}

/// One read straight from the socket: data, EOF, or the error (ECONNRESET for a reset).
func rawRead(_ fd: Int32, timeout: Double) -> ReadResult {
    var byte: UInt8 = 0
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&p, 1, Int32(timeout * 1000)) == 1 else { return .timeout }
    let n = recv(fd, &byte, 1, Int32(MSG_DONTWAIT))
    if n > 0 { return .data([byte]) }
    if n == 0 { return .eof }
    return .error(errno)
}
