// Memory of the release balancerd around idle keep-alive client connections, read as a
// user would read it: VmRSS from /proc/PID/status. 3,000 clients each make one request
// through HTTP mode to nginx and then stay connected, idle; the issue's targets are that
// such a connection costs at most half of what it costs in haproxy (1.2 KiB, so 0.6 KiB),
// and that the memory comes back when they close, wave after wave.
//
// Every reading waits for a condition first: the stats page's frontend `current` counter
// must show the connections open (or gone) before RSS is read. The clients make their
// requests one after another, so balancerd needs one server connection, reused from its
// idle pool: what is measured is the client side.

import Foundation
import Glibc
import TestSupport
import XCTest

final class IdleMemoryTests: XCTestCase {
    private static let connections = 3_000

    /// RSS with 3,000 idle keep-alive connections open, and after they close.
    func testIdleKeepAliveConnectionsCostLittleAndTheirMemoryComesBack() throws {
        let proxy = try startMeasuredBalancer()
        // Warm-up: loops, pools, log buffers and the first pages of every table are in the
        // baseline, not in the figure per connection.
        try openIdleConnections(proxy, count: 300).forEach { $0.close() }
        try waitForFrontendCurrent(proxy, 0)
        let baseline = try residentSetBytes(pid: proxy.balancer.pid)

        let open = try openIdleConnections(proxy, count: Self.connections)
        try waitForFrontendCurrent(proxy, Self.connections)
        let withOpen = try residentSetBytes(pid: proxy.balancer.pid)
        open.forEach { $0.close() }
        try waitForFrontendCurrent(proxy, 0)
        let afterClose = try residentSetBytes(pid: proxy.balancer.pid)

        let perConnection = Double(withOpen - baseline) / Double(Self.connections)
        print("IdleMemoryTests: RSS baseline \(kib(baseline)) KiB, with \(Self.connections) idle connections \(kib(withOpen)) KiB (\(String(format: "%.2f", perConnection / 1024)) KiB each), after they closed \(kib(afterClose)) KiB")

        // Given back: within 4 MiB of the baseline. What a correct implementation may keep
        // is bounded and small: tables indexed by fd (the event loop's owner table, the
        // epoll event array) grown to 3,000 entries of a few dozen bytes (well under 1 MiB),
        // a pool below its high-water mark, and malloc's free lists. Buffers kept for the
        // 3,000 connections (at 18 KiB each, as today) would be ~54 MiB; a 10% bound on a
        // ~20 MB baseline (2 MiB) would leave too little room for malloc's own slack.
        let bound = 4 << 20
        XCTAssertLessThanOrEqual(
            afterClose, baseline + bound,
            "RSS after the \(Self.connections) connections closed is \(kib(afterClose - baseline)) KiB above the baseline (\(kib(baseline)) KiB); bound 4096 KiB"
        )
        // The issue's target: at most half of haproxy's 1.2 KiB per idle connection.
        XCTAssertLessThanOrEqual(
            perConnection, 0.6 * 1024,
            "an idle keep-alive connection costs \(String(format: "%.2f", perConnection / 1024)) KiB of RSS; target 0.6 KiB (half of haproxy's 1.2 KiB)"
        )
    }

    /// 10 waves of 3,000 idle connections, each wave closed before the next: RSS after the
    /// 10th is within 10% of RSS after the 1st.
    func testRSSIsFlatAcrossTenWavesOfIdleConnections() throws {
        let proxy = try startMeasuredBalancer()
        var afterWave: [Int] = []
        var withOpen: [Int] = []
        for wave in 1...10 {
            let open = try openIdleConnections(proxy, count: Self.connections)
            try waitForFrontendCurrent(proxy, Self.connections)
            withOpen.append(try residentSetBytes(pid: proxy.balancer.pid))
            open.forEach { $0.close() }
            try waitForFrontendCurrent(proxy, 0)
            afterWave.append(try residentSetBytes(pid: proxy.balancer.pid))
            print("IdleMemoryTests: wave \(wave): RSS with \(Self.connections) open \(kib(withOpen.last!)) KiB, after closing \(kib(afterWave.last!)) KiB")
        }
        let first = afterWave[0]
        let last = afterWave[9]
        XCTAssertLessThanOrEqual(
            Double(last), Double(first) * 1.10,
            "RSS after wave 10 is \(kib(last)) KiB, after wave 1 \(kib(first)) KiB (+\(String(format: "%.1f", 100 * Double(last - first) / Double(first)))%); all waves (KiB): \(afterWave.map(kib))"
        )
    }

    // MARK: helpers

    private struct MeasuredProxy {
        let balancer: BalancerdProcess
        let port: UInt16
        let statsPort: UInt16
    }

    /// The release balancerd (the binary whose memory users see), one loop thread, HTTP mode
    /// in front of nginx, timeouts long enough that no idle connection is closed by
    /// balancerd while the test runs, no access log (3,000 lines a wave say nothing here).
    private func startMeasuredBalancer() throws -> MeasuredProxy {
        // 3,000 client sockets in this process; the limit is usually higher already.
        let limit = raiseOpenFileLimit(to: 20_000)
        XCTAssertGreaterThan(limit, Self.connections + 200, "open-file limit \(limit) is too low for \(Self.connections) connections")
        let binary = try releaseBalancerdPath()
        let nginx = try NginxServer(name: "web")
        addTeardownBlock { nginx.stop() }
        let config = try TempConfigFile("""
            global
                nbthread 1
                maxconn 10000

            defaults
                mode http
                timeout connect 1s
                timeout client 5m
                timeout server 5m
                timeout http-keep-alive 5m

            listen main
                bind 127.0.0.1:0
                server web \(nginx.address)

            listen stats
                bind 127.0.0.1:0
                stats enable
                stats uri /

            """)
        addTeardownBlock { config.directory.remove() }
        let balancer = supervise(try BalancerdProcess(arguments: ["--config", config.path, "--quiet"], binary: binary), stopTimeout: 5)
        let port = try balancer.port()
        return MeasuredProxy(balancer: balancer, port: port, statsPort: try balancer.statsPort())
    }

    /// `count` client connections, each with one answered keep-alive request, left open.
    private func openIdleConnections(_ proxy: MeasuredProxy, count: Int) throws -> [HTTPClientConnection] {
        var open: [HTTPClientConnection] = []
        open.reserveCapacity(count)
        do {
            for _ in 0..<count {
                let connection = try HTTPClientConnection(port: proxy.port)
                open.append(connection)
                try connection.send("GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")
                let response = try connection.readResponse()
                guard response.status == 200, response.bodyText == "web\n" else {
                    throw TestSupportError("connection \(open.count): \(response)")
                }
            }
        } catch {
            open.forEach { $0.close() }
            XCTFail("opening idle connection \(open.count) of \(count): \(error)\n\(tail(proxy.balancer))")
            throw error
        }
        return open
    }

    /// Waits until the stats page shows `count` open client connections on the frontend.
    private func waitForFrontendCurrent(_ proxy: MeasuredProxy, _ count: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        var last: StatsPage?
        let reached = waitUntil(timeout: 20) {
            last = try? StatsPage.fetch(port: proxy.statsPort)
            return last?.frontends["main"]?.current == count
        }
        guard reached else {
            XCTFail("frontend main never showed current \(count); last page:\n\(last?.text ?? "none")\n\(tail(proxy.balancer))", file: file, line: line)
            throw TestSupportError("frontend current not reached")
        }
    }
}

private func kib(_ bytes: Int) -> Int { bytes / 1024 }
