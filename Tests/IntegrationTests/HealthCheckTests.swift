// Active health checks, end to end: the real balancerd checks real servers on loopback,
// and the tests assert what a user sees, the traffic a server gets and the log lines in
// haproxy's words. Every wait is on a condition; the bounds come from haproxy's rules
// (DOWN after `fall` failed checks, UP after `rise` passed ones) plus slack for a loaded
// machine.

import Foundation
import Glibc
import TestSupport
import XCTest

final class HealthCheckTests: XCTestCase {
    private let inter = 0.2
    /// haproxy's defaults with `check`, which `--check-interval` uses.
    private let rise = 2.0, fall = 3.0
    private let slack = 3.0

    private func startStatusServers(_ names: [String]) throws -> [StatusHTTPServer] {
        try names.map { name in
            let server = try StatusHTTPServer(name: name)
            addTeardownBlock { server.stop() }
            return server
        }
    }

    /// Waits until `server` got `count` more requests (checks) than it had.
    private func waitForChecks(_ server: StatusHTTPServer, count: Int, timeout: Double = 5) -> Bool {
        let start = server.heads.count
        return waitUntil(timeout: timeout) { server.heads.count >= start + count }
    }

    private func lines(_ balancer: BalancerdProcess, containing text: String) -> [String] {
        balancer.lines.filter { $0.contains(text) }
    }

    /// `--check-interval 200ms --check-http /health`: a server whose checks answer 500 goes
    /// DOWN after `fall` checks and gets no traffic; answering 200 again, it comes back UP
    /// after `rise` checks and is served again. Each flip is logged once, word for word as
    /// haproxy 2.6 logs it.
    func testHTTPCheckTakesA500ServerOutAndBringsItBack() throws {
        let servers = try startStatusServers(["s1", "s2"])
        let (balancer, port) = try startBalancer(["--listen", "127.0.0.1:0", "--mode", "http", "--threads", "2",
                                                   "--server", servers[0].address, "--server", servers[1].address,
                                                   "--check-interval", "200ms", "--check-http", "/health"])
        // Two passed checks put s2 at full health, so the fall count below is haproxy's.
        XCTAssertTrue(waitForChecks(servers[1], count: 2), "s2 is not being checked\n\(tail(balancer))")
        let check = try XCTUnwrap(servers[1].heads.first { $0.hasPrefix("GET /health ") })
        XCTAssertEqual(check, "GET /health HTTP/1.1\r\nHost: \(servers[1].address)\r\nConnection: close")
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["s1", "s2"])

        servers[1].answer(500)
        let failedAt = monotonicSeconds()
        let down = try XCTUnwrap(balancer.waitForLine(containing: "Server main/s2 is DOWN", timeout: fall * inter + slack),
                                 "s2 not DOWN within fall × inter\n\(tail(balancer))")
        print("health: s2 answers 500 → DOWN after \(milliseconds(monotonicSeconds() - failedAt)) ms")
        XCTAssertTrue(down.hasPrefix("Server main/s2 is DOWN, reason: Layer7 wrong status, code: 500, info: \"Internal Server Error\", check duration: "), down)
        XCTAssertTrue(down.hasSuffix("ms. 1 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue."), down)
        let names = try servedNames(port: port, count: 10, balancer: balancer)
        XCTAssertEqual(Set(names), ["s1"], "a DOWN server got traffic: \(names)")

        servers[1].answer(200)
        let passedAt = monotonicSeconds()
        let up = try XCTUnwrap(balancer.waitForLine(containing: "Server main/s2 is UP", timeout: rise * inter + slack),
                               "s2 not UP within rise × inter\n\(tail(balancer))")
        print("health: s2 answers 200 → UP after \(milliseconds(monotonicSeconds() - passedAt)) ms")
        XCTAssertTrue(up.hasPrefix("Server main/s2 is UP, reason: Layer7 check passed, code: 200, check duration: "), up)
        XCTAssertTrue(up.hasSuffix("ms. 2 active and 0 backup servers online. 0 sessions requeued, 0 total in queue."), up)
        XCTAssertNotNil(waitUntilServed("s2", port: port, timeout: 2), "s2 UP but not served\n\(tail(balancer))")
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["s1", "s2"])

        XCTAssertEqual(lines(balancer, containing: "Server main/s2 is DOWN").count, 1, tail(balancer))
        XCTAssertEqual(lines(balancer, containing: "Server main/s2 is UP").count, 1, tail(balancer))
        XCTAssertTrue(lines(balancer, containing: "Server main/s1 is").isEmpty, tail(balancer))
    }

    /// The seed's consul-template line, from a config file, as haproxy reads it:
    /// `option httpchk HEAD / HTTP/1.1\r\nHost:localhost` sends that request, and with
    /// `http-check expect status 200` a 302 is a failure (haproxy's default would pass it).
    func testSeedHTTPCheckLineFromAConfigFile() throws {
        let servers = try startStatusServers(["s1", "s2"])
        let directory = try TempDirectory()
        addTeardownBlock { directory.remove() }
        let config = try directory.write("""
            defaults
                mode http
                timeout connect 1s
                timeout client 5s
                timeout server 5s

            listen main
                bind 127.0.0.1:0
                option httpchk HEAD / HTTP/1.1\\r\\nHost:localhost
                http-check expect status 200
                default-server check inter 200ms rise 2 fall 2
                server s1 \(servers[0].address)
                server s2 \(servers[1].address)

            """, to: "seed.cfg")
        let (balancer, port) = try startBalancer(["--config", config])
        XCTAssertTrue(waitForChecks(servers[1], count: 2), "s2 is not being checked\n\(tail(balancer))")
        let check = try XCTUnwrap(servers[1].heads.first { $0.hasPrefix("HEAD / ") })
        XCTAssertEqual(check.lowercased(), "head / http/1.1\r\nhost: localhost\r\nconnection: close", check)
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["s1", "s2"])

        servers[1].answer(302)
        let down = try XCTUnwrap(balancer.waitForLine(containing: "Server main/s2 is DOWN", timeout: 2 * inter + slack),
                                 "s2 not DOWN on a 302 with expect status 200\n\(tail(balancer))")
        XCTAssertTrue(down.hasPrefix("Server main/s2 is DOWN, reason: Layer7 wrong status, code: 302"), down)
        let names = try servedNames(port: port, count: 8, balancer: balancer)
        XCTAssertEqual(Set(names), ["s1"], "a DOWN server got traffic: \(names)")
    }

    /// A TCP check (`--check-interval` alone) against a port nobody listens on: DOWN with
    /// haproxy's "Layer4 connection problem", and only the live server is used.
    func testTCPCheckAgainstAClosedPort() throws {
        let live = try startStampServers(["s1"])
        let closed = try freePort()
        let (balancer, port) = try startBalancer(flagArguments(servers: [live[0].address, "127.0.0.1:\(closed)"],
                                                               extra: ["--check-interval", "200ms"]))
        let down = try XCTUnwrap(balancer.waitForLine(containing: "Server main/s2 is DOWN", timeout: fall * inter + slack),
                                 "the closed port never went DOWN\n\(tail(balancer))")
        XCTAssertTrue(down.hasPrefix("Server main/s2 is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: "), down)
        XCTAssertTrue(down.hasSuffix("ms. 1 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue."), down)
        XCTAssertEqual(try fetchNames(port: port, count: 6, balancer: balancer), Array(repeating: "s1", count: 6))
        XCTAssertTrue(lines(balancer, containing: "Server main/s1 is").isEmpty, "s1 passes its TCP checks\n\(tail(balancer))")
    }

    /// The last server going DOWN also says the backend has nothing left, as haproxy does.
    func testLastServerDownSaysTheBackendHasNoServer() throws {
        let servers = try startStatusServers(["s1"])
        servers[0].answer(503)
        let (balancer, port) = try startBalancer(["--listen", "127.0.0.1:0", "--mode", "http", "--server", servers[0].address,
                                                  "--check-interval", "200ms", "--check-http", "/"])
        let down = try XCTUnwrap(balancer.waitForLine(containing: "Server main/s1 is DOWN", timeout: fall * inter + slack), tail(balancer))
        XCTAssertTrue(down.contains("reason: Layer7 wrong status, code: 503, info: \"Service Unavailable\""), down)
        XCTAssertTrue(down.contains("0 active and 0 backup servers left."), down)
        XCTAssertNotNil(balancer.waitForLine(containing: "backend main has no server available!", timeout: 2), tail(balancer))
        XCTAssertEqual(try clientRequest(port: port).status, 503, "no server left: balancerd answers 503 itself")
    }

    /// Consul says every instance is passing; the active check says s2 is not. s2 gets no
    /// traffic, and a Consul update that re-lists it keeps its check state: no new DOWN
    /// line, no traffic, until its own checks pass again.
    func testConsulPassingButCheckDownGetsNoTraffic() throws {
        let consul = try ConsulTestServerProcess()
        addTeardownBlock { consul.stop() }
        let servers = try startStatusServers(["s1", "s2", "s3"])
        for server in servers.prefix(2) { try consul.register(id: server.name, port: server.port) }
        let (balancer, port) = try startBalancer(["--listen", "127.0.0.1:0", "--mode", "http", "--threads", "2",
                                                  "--consul", consul.url, "--service", "web",
                                                  "--check-interval", "200ms", "--check-http", "/"])
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)
        XCTAssertTrue(waitForChecks(servers[1], count: 2), "discovered s2 is not checked\n\(tail(balancer))")

        servers[1].answer(500)
        let down = try XCTUnwrap(balancer.waitForLine(containing: "Server main/s2 is DOWN", timeout: fall * inter + slack), tail(balancer))
        XCTAssertTrue(down.contains("reason: Layer7 wrong status, code: 500"), down)
        XCTAssertEqual(Set(try servedNames(port: port, count: 8, balancer: balancer)), ["s1"])

        // A discovery update that lists s2 again (with a new s3): a new table, same s2.
        let before = balancer.lineCount
        try consul.register(id: "s3", port: servers[2].port)
        XCTAssertNotNil(waitForUpdate(balancer, servers: ["s1", "s2", "s3"], after: before, timeout: 5), tail(balancer))
        XCTAssertNotNil(waitUntilServed("s3", port: port, timeout: 3), "s3 never served\n\(tail(balancer))")
        XCTAssertTrue(waitForChecks(servers[1], count: 3), "s2 no longer checked after the update\n\(tail(balancer))")
        let names = try servedNames(port: port, count: 12, balancer: balancer)
        XCTAssertFalse(names.contains("s2"), "Consul's re-listing put a checked-DOWN server back: \(names)")
        XCTAssertEqual(Set(names), ["s1", "s3"], "\(names)")
        XCTAssertEqual(lines(balancer, containing: "Server main/s2 is").count, 1, "the update reset s2's check\n\(tail(balancer))")

        servers[1].answer(200)
        XCTAssertNotNil(balancer.waitForLine(containing: "Server main/s2 is UP", timeout: rise * inter + slack), tail(balancer))
        XCTAssertNotNil(waitUntilServed("s2", port: port, timeout: 2), "s2 UP but not served\n\(tail(balancer))")
    }
}
