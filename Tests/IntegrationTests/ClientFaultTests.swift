// Clients that misbehave: one that reads a large response one byte a second. balancerd
// must not buffer the response for it (backpressure: it stops reading the server, so its
// memory stays bounded; RSS is a resource count, asserted, not a timing), and the server
// connection must be released by the timeouts (`timeout client`: no write to the client
// makes progress), while other clients are served as usual.

import Foundation
import Glibc
import TestSupport
import XCTest

final class ClientFaultTests: XCTestCase {
    /// Four clients ask for 64 MiB each and read one byte a second: if balancerd buffered
    /// what the server sends, it would grow by 256 MiB. It grows by little, cuts each client
    /// off after `timeout client` (2 s) without write progress (cD--), and closes the server
    /// connections, while another client gets its answers throughout.
    func testSlowReadersOfLargeResponsesKeepMemoryBoundedAndAreCutOffByTimeoutClient() throws {
        let length = 64 << 20
        let large = try FaultHTTPServer(name: "large", fault: .large(length: length))
        addTeardownBlock { large.stop() }
        let good = try startHTTPServers(["ok1"])
        let config = """
            defaults
                mode http
                timeout connect 1s
                timeout client 2s
                timeout server 30s

            listen main
                bind 127.0.0.1:0
                server large \(large.address)

            listen good
                bind 127.0.0.1:0
                server ok1 \(good[0].address)
            """
        let (balancer, port) = try startHTTPBalancer(config: config)
        let goodPort = try balancer.port(frontend: "good")
        // Warm up both frontends, then take the baseline.
        XCTAssertEqual(try sendHTTPRequest(port: goodPort, method: "GET", target: "/").status, 200)
        let baseline = try residentSetBytes(pid: balancer.pid)

        let clients = try (0..<4).map { _ in try TCPClient(port: port) }
        defer { clients.forEach { $0.close() } }
        for client in clients {
            // A small receive buffer, as a slow client on a real network has.
            setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, [Int32(16 << 10)], socklen_t(MemoryLayout<Int32>.size))
            try client.send(getRequest("/large"))
        }
        var peak = baseline
        var received = [Int](repeating: 0, count: clients.count)
        var closed = [Bool](repeating: false, count: clients.count)
        var goodAnswers = 0
        var goodFailures: [String] = []
        let start = monotonicSeconds()
        // One byte a second from each, until balancerd has cut each off (or 8 s, far past
        // the 2 s). The client learns of it only once it has read what its socket holds.
        let cutOff = { httpLogLines(balancer).filter { $0.server == "large" }.count == clients.count }
        while !cutOff() && monotonicSeconds() - start < 8 {
            for (i, client) in clients.enumerated() where !closed[i] {
                switch client.read(max: 1, timeout: 0.01) {
                case .data(let bytes): received[i] += bytes.count
                case .eof, .error: closed[i] = true
                case .timeout: break
                }
            }
            peak = max(peak, try residentSetBytes(pid: balancer.pid))
            do {
                let response = try sendHTTPRequest(port: goodPort, method: "GET", target: "/", timeout: 3)
                if response.status == 200 && response.bodyText == "ok1" { goodAnswers += 1 } else { goodFailures.append("\(response)") }
            } catch {
                goodFailures.append("\(error)")
            }
            sleepSeconds(1)
        }
        let growth = peak - baseline
        print("slow readers: RSS \(baseline >> 10) KiB → peak \(peak >> 10) KiB (+\(growth >> 10) KiB) for 4 × \(length >> 20) MiB; server sent \(large.bytesSent >> 20) MiB; slow clients had read \(received) bytes when balancerd cut them off")
        XCTAssertLessThan(growth, 32 << 20, "balancerd buffered the responses for its slow readers\n\(tail(balancer))")
        XCTAssertLessThan(large.bytesSent, 4 * length / 2, "the server was not held back by the slow readers")
        XCTAssertTrue(cutOff(), "slow readers not cut off by timeout client (2 s)\n\(tail(balancer))")
        XCTAssertGreaterThan(monotonicSeconds() - start, 1.9, "cut off before timeout client")
        // What each client can still read ends well short of the 64 MiB: the close is real.
        for (i, client) in clients.enumerated() where !closed[i] {
            var rest = 0
            drain: while true {
                switch client.read(max: 1 << 16, timeout: 3) {
                case .data(let bytes): rest += bytes.count
                case .eof, .error: closed[i] = true; break drain
                case .timeout: break drain
                }
            }
            received[i] += rest
        }
        XCTAssertEqual(closed, [true, true, true, true], "slow readers' connections still open: \(received) bytes read")
        XCTAssertTrue(received.allSatisfy { $0 < length }, "\(received)")
        XCTAssertEqual(goodFailures, [], "the other frontend failed meanwhile\n\(tail(balancer))")
        XCTAssertGreaterThan(goodAnswers, 1)

        // Each logged as a client timeout in the data phase, and the server side let go.
        XCTAssertTrue(waitUntil(timeout: 3) { httpLogLines(balancer).filter { $0.server == "large" }.count == 4 }, tail(balancer))
        XCTAssertEqual(httpLogLines(balancer).filter { $0.server == "large" }.map(\.termination), ["cD--", "cD--", "cD--", "cD--"], tail(balancer))
        XCTAssertEqual(httpLogLines(balancer).filter { $0.server == "large" }.map(\.status), [200, 200, 200, 200])
        XCTAssertTrue(waitUntil(timeout: 5) { large.openConnections == 0 }, "server connections still open: \(large.openConnections)")
    }
}
