// Bytes through the proxy: a large echo with half-close, and a transfer that must survive
// SIGTERM (graceful drain).

import Foundation
import Glibc
import TestSupport
import XCTest

final class TransferTests: XCTestCase {
    /// 16 MiB of random bytes out and back through an echo backend; the client half-closes
    /// after sending and must get every byte back, then EOF.
    func testSixteenMiBEchoArrivesIntactAfterHalfClose() throws {
        let echo = try EchoServer()
        addTeardownBlock { echo.stop() }
        let (balancer, port) = try startBalancer(flagArguments(servers: [echo.address]))

        let payload = randomBytes(count: 16 << 20)
        let client = try TCPClient(port: port)
        let writeError = Protected<String?>(nil)
        // Write on another thread while this one reads, or both sides' buffers fill and stall.
        let writer = JoinableThread {
            var offset = 0
            do {
                while offset < payload.count {
                    let end = min(offset + 256 << 10, payload.count)
                    try client.send(payload[offset..<end])
                    offset = end
                }
            } catch {
                writeError.set("send failed after \(offset) bytes: \(error)")
            }
            client.shutdownWrite()
        }
        let received: [UInt8]
        do {
            received = try client.readAll(timeout: 15)
        } catch {
            writer.join()
            XCTFail("\(error)\n\(tail(balancer))")
            return
        }
        writer.join()
        client.close()

        XCTAssertNil(writeError.value)
        XCTAssertEqual(received.count, payload.count, "byte count differs")
        if received != payload {
            let firstDifference = zip(received, payload).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            XCTFail("echoed bytes differ from the sent bytes, first at offset \(firstDifference.map(String.init) ?? "end")")
        }
    }

    /// SIGTERM while a slow transfer is in flight: the transfer completes intact, new
    /// connections are no longer served, and the daemon exits 0 once the transfer is done.
    func testSIGTERMLetsAnInFlightTransferFinish() throws {
        let echo = try EchoServer()
        addTeardownBlock { echo.stop() }
        let (balancer, port) = try startBalancer(flagArguments(servers: [echo.address], extra: ["--grace", "10s"]))

        // 8 MiB in 64 chunks of 128 KiB, 30 ms apart: about 2 s on the wire.
        let payload = randomBytes(count: 8 << 20)
        let chunk = 128 << 10
        let client = try TCPClient(port: port)
        let writeError = Protected<String?>(nil)
        let writer = JoinableThread {
            var offset = 0
            do {
                while offset < payload.count {
                    try client.send(payload[offset..<(offset + chunk)])
                    offset += chunk
                    sleepSeconds(0.03)
                }
            } catch {
                writeError.set("send failed after \(offset) bytes: \(error)")
            }
            client.shutdownWrite()
        }
        let result = Protected<Result<[UInt8], any Error>?>(nil)
        let reader = JoinableThread {
            let outcome = Result { try client.readAll(timeout: 15) }
            result.set(outcome)
        }
        defer {
            writer.join()
            reader.join()
            client.close()
        }

        XCTAssertTrue(waitUntil(timeout: 5) { echo.bytesEchoed >= 1 << 20 }, "transfer did not start\n\(tail(balancer))")
        balancer.signal(SIGTERM)
        XCTAssertLessThan(echo.bytesEchoed, payload.count / 2, "the transfer was nearly over before SIGTERM: the test proves nothing")

        // The daemon stops accepting promptly; from then on no new connection is served.
        XCTAssertTrue(
            waitUntil(timeout: 1) { !newConnectionIsServed(port: port) },
            "new connections still served 1 s after SIGTERM\n\(tail(balancer))"
        )
        XCTAssertTrue(balancer.isRunning, "balancerd exited with a transfer in flight\n\(tail(balancer))")
        XCTAssertFalse(newConnectionIsServed(port: port), "a connection was served after SIGTERM")

        writer.join()
        reader.join()
        XCTAssertNil(writeError.value)
        switch result.value {
        case .success(let received)?:
            XCTAssertEqual(received.count, payload.count, "byte count differs")
            XCTAssertTrue(received == payload, "echoed bytes differ from the sent bytes")
        case .failure(let error)?:
            XCTFail("in-flight transfer broken by SIGTERM: \(error)\n\(tail(balancer))")
        case nil:
            XCTFail("reader produced no result")
        }

        // Nothing left to drain: exit well within the grace period, with status 0.
        let code = balancer.waitForExit(timeout: 5)
        XCTAssertEqual(code, 0, "exit status after SIGTERM\n\(tail(balancer))")
    }

    /// SIGTERM with nothing in flight: the daemon exits 0 promptly.
    func testSIGTERMWhenIdleExitsZero() throws {
        let servers = try startStampServers(["s1"])
        let (balancer, port) = try startBalancer(flagArguments(servers: servers.map(\.address)))
        XCTAssertEqual(try fetchName(port: port), "s1")
        balancer.signal(SIGTERM)
        XCTAssertEqual(balancer.waitForExit(timeout: 3), 0, tail(balancer))
    }
}

/// A value set on one thread and read on another.
final class Protected<Value>: @unchecked Sendable {
    private var stored: Value
    private let lock = NSLock()

    init(_ value: Value) {
        stored = value
    }

    var value: Value {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }

    func set(_ value: Value) {
        lock.lock()
        stored = value
        lock.unlock()
    }

    func mutate(_ body: (inout Value) -> Void) {
        lock.lock()
        body(&stored)
        lock.unlock()
    }
}
