// The stats listener's admin rules as a haproxy user writes them, in the config file the
// real binary reads: `stats auth` guards the page and the actions, `stats admin if TRUE`
// turns the actions on, and an action changes what clients see.

import Foundation
import TestSupport
import XCTest

final class StatsAdminConfigTests: XCTestCase {
    private func post(_ port: UInt16, _ body: String, credentials: String? = nil) throws -> HTTPResponse {
        let connection = try HTTPClientConnection(port: port)
        defer { connection.close() }
        var head = "POST / HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n"
        head += "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: \(body.utf8.count)\r\n"
        if let credentials { head += "Authorization: Basic " + Data(credentials.utf8).base64EncodedString() + "\r\n" }
        try connection.send(head + "\r\n" + body)
        return try connection.readResponse(method: "POST", timeout: 5)
    }

    private func served(_ port: UInt16, count: Int) throws -> [String] {
        try (0..<count).map { _ in
            let connection = try HTTPClientConnection(port: port)
            defer { connection.close() }
            try connection.send("GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            return try connection.readResponse(timeout: 5).bodyText
        }
    }

    func testStatsAuthAndAdminFromTheConfigFile() throws {
        let servers = try ["s1", "s2"].map { try HTTPStampServer(name: $0) }
        defer { servers.forEach { $0.stop() } }
        let directory = try TempDirectory()
        defer { directory.remove() }
        let config = try directory.write("""
            defaults
                mode http
                timeout connect 1s
                timeout client 5s
                timeout server 5s

            listen main
                bind 127.0.0.1:0
                server s1 \(servers[0].address)
                server s2 \(servers[1].address)

            listen stats
                bind 127.0.0.1:0
                stats enable
                stats uri /
                stats auth admin:s3cret
                stats admin if TRUE

            """, to: "stats.cfg")
        let balancer = supervise(try BalancerdProcess(arguments: ["--config", config]))
        let port = try balancer.port(frontend: "main")
        let statsPort = try balancer.statsPort()
        XCTAssertEqual(Set(try served(port, count: 4)), ["s1", "s2"])

        let anonymous = try post(statsPort, "s=s1&action=maint&b=main")
        XCTAssertEqual(anonymous.status, 401, anonymous.bodyText)
        XCTAssertEqual(Set(try served(port, count: 4)), ["s1", "s2"], "a refused action changed the rotation")

        let accepted = try post(statsPort, "s=s1&action=maint&b=main", credentials: "admin:s3cret")
        XCTAssertEqual(accepted.status, 303, accepted.bodyText)
        XCTAssertEqual(accepted.header("Location"), "/;st=DONE")
        XCTAssertEqual(Set(try served(port, count: 6)), ["s2"], "a server in maintenance got traffic")
        XCTAssertNotNil(balancer.waitForLine(containing: "Server main/s1 is going DOWN for maintenance. 1 active and 0 backup servers left."),
                        tail(balancer))

        XCTAssertEqual(try post(statsPort, "s=s1&action=ready&b=main", credentials: "admin:s3cret").status, 303)
        XCTAssertEqual(Set(try served(port, count: 4)), ["s1", "s2"])
        XCTAssertNotNil(balancer.waitForLine(containing: "Server main/s1 is UP/READY (leaving forced maintenance)."), tail(balancer))
    }
}
