// The `current` counters of the stats page while requests are in flight. Backends that
// hold every request until the test releases them (GatedHTTPServer) keep a known number of
// requests open, so the page is read at a moment whose right answer is known.
//
// The meaning is haproxy's: a backend's and a server's `current` count the streams using
// them. In TCP mode a stream is the connection; in HTTP mode it is a request, from the
// moment it is sent to a server until its response is over, so an idle keep-alive client
// between requests counts on the frontend (an open connection) but on no backend or server.

import Foundation
import Glibc
import TestSupport
import XCTest

final class CurrentCounterTests: XCTestCase {
    private static let inFlight = 6

    /// 6 requests held at two servers: backend current 6, each server's current is the
    /// number held there; once answered, both return to 0 while the clients stay connected.
    func testHTTPCountersFollowRequestsInFlight() throws {
        let servers = try ["g1", "g2"].map { name in
            let server = try GatedHTTPServer(name: name)
            addTeardownBlock { server.stop() }
            return server
        }
        let (balancer, port) = try startHTTPBalancer(servers: servers.map(\.address), extra: ["--stats", "127.0.0.1:0"])
        let statsPort = try balancer.statsPort()

        let clients = try (0..<Self.inFlight).map { _ in try connectHTTP(port) }
        for client in clients { try client.send("GET / HTTP/1.1\r\nHost: test.local\r\n\r\n") }
        let held = waitUntil(timeout: 5) { servers.map(\.waitingCount).reduce(0, +) == Self.inFlight }
        XCTAssertTrue(held, "requests held at the servers: \(servers.map(\.waitingCount))\n\(tail(balancer))")

        let during = try StatsPage.fetch(port: statsPort)
        print("CurrentCounterTests: HTTP, \(Self.inFlight) requests held (g1 \(servers[0].waitingCount), g2 \(servers[1].waitingCount)):\n\(during.text)")
        XCTAssertEqual(during.frontends["main"]?.current, Self.inFlight, "frontend current\n\(during)")
        XCTAssertEqual(during.backends["main"]?.current, Self.inFlight, "backend current with \(Self.inFlight) requests in flight\n\(during)")
        let serverCurrents = ["s1", "s2"].map { during.servers["main"]?[$0]?.current ?? -1 }
        XCTAssertEqual(serverCurrents.reduce(0, +), Self.inFlight, "servers' current should sum to \(Self.inFlight)\n\(during)")
        XCTAssertEqual(serverCurrents, servers.map(\.waitingCount), "each server's current is the number of requests it holds\n\(during)")

        servers.forEach { $0.release() }
        for (index, client) in clients.enumerated() {
            let response = try client.readResponse()
            XCTAssertEqual(response.status, 200, "client \(index): \(response)")
        }

        // Answered; the client connections stay open and idle.
        var after: StatsPage?
        let drained = waitUntil(timeout: 5) {
            after = try? StatsPage.fetch(port: statsPort)
            return after?.backends["main"]?.current == 0 && after?.servers["main"]?.values.allSatisfy({ $0.current == 0 }) == true
        }
        XCTAssertTrue(drained, "backend and server current did not return to 0 after the responses:\n\(after?.text ?? "no page")")
        XCTAssertEqual(after?.frontends["main"]?.current, Self.inFlight, "frontend current with \(Self.inFlight) idle client connections\n\(after?.text ?? "")")
        XCTAssertEqual(after?.backends["main"]?.total, Self.inFlight, "backend total\n\(after?.text ?? "")")

        clients.forEach { $0.close() }
        var closed: StatsPage?
        XCTAssertTrue(
            waitUntil(timeout: 5) {
                closed = try? StatsPage.fetch(port: statsPort)
                return closed?.frontends["main"]?.current == 0
            },
            "frontend current after the clients closed:\n\(closed?.text ?? "no page")"
        )
    }

    /// The same reading in TCP mode, where the counters already work: it shows the page is
    /// read right, and it is the behaviour HTTP mode must match.
    func testTCPCountersFollowConnectionsInFlight() throws {
        let servers = try startStampServers(["s1", "s2"], holdOpen: true)
        let (balancer, port) = try startBalancer(flagArguments(servers: servers.map(\.address), extra: ["--stats", "127.0.0.1:0"]))
        let statsPort = try balancer.statsPort()

        let clients = try (0..<Self.inFlight).map { _ in try TCPClient(port: port) }
        defer { clients.forEach { $0.close() } }
        for client in clients { XCTAssertNotNil(try client.readLine(), "no name stamped\n\(tail(balancer))") }
        XCTAssertTrue(waitUntil(timeout: 5) { servers.map(\.currentConnections).reduce(0, +) == Self.inFlight })

        let during = try StatsPage.fetch(port: statsPort)
        XCTAssertEqual(during.backends["main"]?.current, Self.inFlight, "\(during)")
        let serverCurrents = ["s1", "s2"].map { during.servers["main"]?[$0]?.current ?? -1 }
        XCTAssertEqual(serverCurrents, servers.map(\.currentConnections), "\(during)")

        clients.forEach { $0.close() }
        var after: StatsPage?
        XCTAssertTrue(
            waitUntil(timeout: 5) {
                after = try? StatsPage.fetch(port: statsPort)
                return after?.backends["main"]?.current == 0 && after?.servers["main"]?.values.allSatisfy({ $0.current == 0 }) == true
            },
            "TCP counters did not return to 0:\n\(after?.text ?? "no page")"
        )
    }
}
