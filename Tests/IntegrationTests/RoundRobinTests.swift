// The shape of haproxy's reg-tests/balance/balance-rr.vtc: backends that stamp their name,
// the real binary in between, and an assertion on the order the names come back in.

import Foundation
import TestSupport
import XCTest

final class RoundRobinTests: XCTestCase {
    /// Equal weights: sequential connections go s1→s2→s3→s1… (starting anywhere).
    func testEqualWeightsRotateStrictly() throws {
        let servers = try startStampServers(["s1", "s2", "s3"])
        let (balancer, port) = try startBalancer(flagArguments(servers: servers.map(\.address)))

        let names = try fetchNames(port: port, count: 9, balancer: balancer)

        assertRotation(names, of: ["s1", "s2", "s3"])
        XCTAssertEqual(tally(names), ["s1": 3, "s2": 3, "s3": 3])
        for (a, b) in zip(names, names.dropFirst()) {
            XCTAssertNotEqual(a, b, "same server twice in a row: \(names)")
        }
        XCTAssertEqual(servers.map(\.acceptedCount), [3, 3, 3])
    }

    /// The startup line names the frontend, its real address and the server table.
    func testStartupLineDescribesTheTable() throws {
        let servers = try startStampServers(["s1", "s2"])
        let balancer = supervise(try BalancerdProcess(arguments: flagArguments(servers: [servers[0].address, servers[1].address + ",weight=3"], extra: ["--threads", "2"])))
        let address = try balancer.listenAddress(frontend: "main")
        XCTAssertEqual(address.host, "127.0.0.1")
        XCTAssertNotEqual(address.port, 0, "addr= must show the port actually bound, not :0")

        let line = try XCTUnwrap(balancer.waitForLine(containing: "balancerd: listening frontend=main "))
        XCTAssertEqual(
            line,
            "balancerd: listening frontend=main addr=127.0.0.1:\(address.port) mode=tcp threads=2 backend=main "
                + "servers=s1@\(servers[0].address)/w1,s2@\(servers[1].address)/w3"
        )
        XCTAssertEqual(try fetchName(port: address.port).isEmpty, false)
    }

    /// Weights 1:3 are interleaved smoothly: exactly 10/30 over 40 connections, the heavy
    /// server never more than 3 in a row, the light one never twice in a row.
    func testWeightsOneToThreeInterleave() throws {
        try assertOneToThreeSplit(extraArguments: [])
    }

    /// The same with two event-loop threads: there is one shared rotation.
    func testWeightsOneToThreeInterleaveWithTwoThreads() throws {
        try assertOneToThreeSplit(extraArguments: ["--threads", "2"])
    }

    private func assertOneToThreeSplit(extraArguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let servers = try startStampServers(["light", "heavy"])
        let (balancer, port) = try startBalancer(flagArguments(
            servers: [servers[0].address + ",weight=1", servers[1].address + ",weight=3"],
            extra: extraArguments
        ))
        let names = try fetchNames(port: port, count: 40, balancer: balancer)
            .map { $0 == "light" ? "L" : $0 == "heavy" ? "H" : $0 }
        let sequence = names.joined()

        XCTAssertEqual(tally(names), ["L": 10, "H": 30], sequence, file: file, line: line)
        XCTAssertLessThanOrEqual(longestRun(of: "H", in: names), 3, "heavy server bunched: \(sequence)", file: file, line: line)
        XCTAssertEqual(longestRun(of: "L", in: names), 1, "light server twice in a row: \(sequence)", file: file, line: line)
    }

    /// Each connection is logged in haproxy's tcplog format, naming the client port the
    /// client really used, the server it really reached and the bytes it was sent.
    func testConnectionsAreLoggedInTCPLogFormat() throws {
        let servers = try startStampServers(["s1", "s2", "s3"])
        let (balancer, port) = try startBalancer(flagArguments(servers: servers.map(\.address)))

        var seen: [UInt16: String] = [:]  // client port → name received
        for _ in 0..<6 {
            let client = try TCPClient(port: port)
            let clientPort = try XCTUnwrap(client.localPort)
            let name = String(decoding: try client.readAll(timeout: 5), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            client.close()
            seen[clientPort] = name
        }

        // %ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq
        let pattern = try Regex(
            #"^127\.0\.0\.1:(\d+) \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}\.\d{3}\] main main/(\S+) -?\d+/-?\d+/\d+ (\d+) -- \d+/\d+/\d+/\d+/\d+ \d+/\d+$"#
        )
        XCTAssertTrue(
            waitUntil(timeout: 5) { balancer.lines.filter { $0.wholeMatch(of: pattern) != nil }.count >= 6 },
            "expected 6 tcplog lines\n\(tail(balancer))"
        )
        for line in balancer.lines {
            guard let match = line.wholeMatch(of: pattern) else { continue }
            let clientPort = UInt16(String(match.output[1].substring!))!
            let server = String(match.output[2].substring!)
            let bytes = Int(String(match.output[3].substring!))!
            XCTAssertEqual(seen[clientPort], server, "log line names a client port or server the client did not see: \(line)")
            XCTAssertEqual(bytes, 3, "%B must count the 3 bytes 'sN\\n' sent to the client: \(line)")
        }
    }

    /// `--quiet` suppresses the per-connection lines but not the startup line.
    func testQuietSuppressesConnectionLog() throws {
        let servers = try startStampServers(["s1"])
        let (balancer, port) = try startBalancer(flagArguments(servers: servers.map(\.address), extra: ["--quiet"]))
        _ = try fetchNames(port: port, count: 3, balancer: balancer)
        sleepSeconds(0.3)
        let logLines = balancer.lines.filter { $0.contains(" main main/s1 ") }
        XCTAssertEqual(logLines, [], "--quiet still logged connections")
    }

    /// A server that refuses connections is skipped (retry on the next server): every client
    /// is served, and only by the live servers.
    func testRefusedServerIsSkipped() throws {
        let servers = try startStampServers(["s1", "s2", "s3"])
        let (balancer, port) = try startBalancer(flagArguments(servers: servers.map(\.address)))
        servers[1].stop()  // listener closed: connect(2) to it is refused from now on

        let names = try fetchNames(port: port, count: 30, balancer: balancer)

        XCTAssertFalse(names.contains("s2"), "a stopped server was reached?! \(names)")
        XCTAssertEqual(Set(names), ["s1", "s3"], "\(names)")
        let counts = tally(names)
        XCTAssertGreaterThanOrEqual(counts["s1", default: 0], 5, "\(counts)")
        XCTAssertGreaterThanOrEqual(counts["s3", default: 0], 5, "\(counts)")
    }

    /// `backup` servers are used only when no primary server is available. The primaries
    /// have fast health checks, so this holds whether the daemon learns of their death from
    /// checks or from refused connects.
    func testBackupServerOnlyWhenPrimariesAreDown() throws {
        let servers = try startStampServers(["p1", "p2", "b1"])
        let check = "check inter 100ms rise 1 fall 1"
        let config = try TempConfigFile(listenConfig(servers: [
            ("p1", servers[0].address, check), ("p2", servers[1].address, check), ("b1", servers[2].address, "backup"),
        ]))
        let (balancer, port) = try startBalancer(["--config", config.path])

        let before = try fetchNames(port: port, count: 6, balancer: balancer)
        XCTAssertEqual(Set(before), ["p1", "p2"], "backup used while primaries are up: \(before)")

        servers[0].stop()
        servers[1].stop()
        XCTAssertTrue(
            waitUntil(timeout: 3) { (try? fetchName(port: port, timeout: 2)) == "b1" },
            "backup never served with both primaries down\n\(tail(balancer))"
        )
        let after = try fetchNames(port: port, count: 4, balancer: balancer)
        XCTAssertEqual(after, ["b1", "b1", "b1", "b1"])
    }
}
