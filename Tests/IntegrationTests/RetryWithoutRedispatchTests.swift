// `retries 2` with `no option redispatch`, the first-picked server refusing connections.
// haproxy's documented meaning (configuration.txt, `retries` and `option redispatch`):
// `retries` is the number of times a connection attempt is retried *on a server* when it is
// refused or times out; only `option redispatch` allows a retry to go to another server.
// Without it the request stays with the server it was assigned: 3 attempts there, then a
// connection failure. haproxy 2.6 on this very configuration answers 503 and logs
// `main main/dead 0/0/-1/-1/2003 503 217 - - SC-- 1/1/0/0/2 0/0 "GET / HTTP/1.1"`.
// TCP mode and HTTP mode must try the same servers.
//
// Two servers, `dead` (a port nothing listens on) and `live`, in rotation, two requests:
// one of them is assigned `dead` (a rotation over two servers reaches it within two picks,
// and nothing has failed yet to pass it over), the other `live`.

import Foundation
import Glibc
import TestSupport
import XCTest

final class RetryWithoutRedispatchTests: XCTestCase {
    /// What one request saw: the server and retry count from its log line, the termination
    /// state, and what reached the client.
    private struct Outcome: Equatable, CustomStringConvertible {
        let server: String
        let retries: Int
        let termination: String
        let served: Bool
        var description: String { "\(server) retries=\(retries) \(termination) served=\(served)" }
    }

    func testTCPRetriesTheSameServer() throws {
        let outcomes = try tcpOutcomes()
        assertRetriedOnTheSameServer(outcomes, mode: "tcp")
    }

    func testHTTPRetriesTheSameServer() throws {
        let outcomes = try httpOutcomes()
        assertRetriedOnTheSameServer(outcomes, mode: "http")
    }

    func testTCPAndHTTPTryTheSameServers() throws {
        let tcp = try tcpOutcomes()
        let http = try httpOutcomes()
        XCTAssertEqual(
            http.sorted { $0.server < $1.server }, tcp.sorted { $0.server < $1.server },
            "TCP and HTTP modes tried different servers, or counted retries differently"
        )
    }

    /// One request went to `dead`: 2 retries there, refused (`SC`), the client not served;
    /// the other to `live` at the first attempt.
    private func assertRetriedOnTheSameServer(_ outcomes: [Outcome], mode: String, file: StaticString = #filePath, line: UInt = #line) {
        print("RetryWithoutRedispatchTests: \(mode): \(outcomes)")
        XCTAssertEqual(
            outcomes.sorted { $0.server < $1.server },
            [
                Outcome(server: "dead", retries: 2, termination: "SC", served: false),
                Outcome(server: "live", retries: 0, termination: "--", served: true),
            ],
            "\(mode) mode with `retries 2` and `no option redispatch`", file: file, line: line
        )
    }

    private func config(mode: String, live: String, deadPort: UInt16) -> String {
        """
        global
            nbthread 1

        defaults
            mode \(mode)
            timeout connect 1s
            timeout client 10s
            timeout server 10s
            retries 2
            no option redispatch

        listen main
            bind 127.0.0.1:0
            balance roundrobin
            server dead 127.0.0.1:\(deadPort)
            server live \(live)

        """
    }

    private func tcpOutcomes() throws -> [Outcome] {
        let live = try NameStampServer(name: "live")
        addTeardownBlock { live.stop() }
        let deadPort = try freePort()
        let file = try TempConfigFile(config(mode: "tcp", live: live.address, deadPort: deadPort))
        addTeardownBlock { file.directory.remove() }
        let (balancer, port) = try startBalancer(["--config", file.path])

        var received: [UInt16: String] = [:]
        for _ in 0..<2 {
            let client = try TCPClient(port: port)
            let clientPort = try XCTUnwrap(client.localPort)
            // A client that was not served sees the connection closed with no byte.
            received[clientPort] = (try? client.readAll(timeout: 10)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            client.close()
        }
        // tcplog: %ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq
        let pattern = try Regex(#"^127\.0\.0\.1:(\d+) \[[^\]]+\] main main/(\S+) -?\d+/-?\d+/\d+ \d+ (\S\S) \d+/\d+/\d+/\d+/\+?(\d+) \d+/\d+$"#)
        let lines = try waitForLogLines(balancer, pattern: pattern, count: 2)
        XCTAssertEqual(live.acceptedCount, lines.filter { $0.server == "live" }.count, "connections that reached live vs. log lines naming it\n\(tail(balancer))")
        return lines.map { line in
            Outcome(server: line.server, retries: line.retries, termination: line.termination, served: received[line.clientPort] == "live\n")
        }
    }

    private func httpOutcomes() throws -> [Outcome] {
        let live = try HTTPTestServer(name: "live")
        addTeardownBlock { live.stop() }
        let deadPort = try freePort()
        let (balancer, port) = try startHTTPBalancer(config: config(mode: "http", live: live.address, deadPort: deadPort))

        var statuses: [UInt16: Int] = [:]
        for _ in 0..<2 {
            let connection = try HTTPClientConnection(port: port)
            let clientPort = try XCTUnwrap(connection.localPort)
            try connection.send("GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n")
            let response = try connection.readResponse(timeout: 10)
            statuses[clientPort] = response.status
            if response.status == 200 { XCTAssertEqual(response.bodyText, "live") }
            connection.close()
        }
        // httplog: … %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r
        let pattern = try Regex(#"^127\.0\.0\.1:(\d+) \[[^\]]+\] main main/(\S+) -?\d+/-?\d+/-?\d+/-?\d+/\d+ (-?\d+) \d+ - - (\S\S)\S\S \d+/\d+/\d+/\d+/\+?(\d+) \d+/\d+ ".*"$"#)
        let lines = try waitForLogLines(balancer, pattern: pattern, count: 2)
        XCTAssertEqual(live.completeRequests.count, lines.filter { $0.server == "live" }.count, "requests that reached live vs. log lines naming it\n\(tail(balancer))")
        for line in lines {
            XCTAssertEqual(line.status, statuses[line.clientPort], "the log's status is not what the client saw")
            // haproxy answers a request it could not connect for with 503.
            if line.server == "dead" { XCTAssertEqual(statuses[line.clientPort], 503, "status for the request that failed on dead") }
        }
        return lines.map { line in
            Outcome(server: line.server, retries: line.retries, termination: line.termination, served: statuses[line.clientPort] == 200)
        }
    }

    private struct LogLine {
        let clientPort: UInt16
        let server: String
        let status: Int?
        let termination: String
        let retries: Int
    }

    /// Waits for `count` log lines matching `pattern` (captures: client port, server,
    /// [status,] termination, retries) and returns them.
    private func waitForLogLines(_ balancer: BalancerdProcess, pattern: Regex<AnyRegexOutput>, count: Int) throws -> [LogLine] {
        func parse() -> [LogLine] {
            balancer.stderrLines.compactMap { text in
                guard let m = text.wholeMatch(of: pattern) else { return nil }
                let fields = (1..<m.output.count).map { m.output[$0].substring.map(String.init) ?? "" }
                let hasStatus = fields.count == 5
                return LogLine(
                    clientPort: UInt16(fields[0]) ?? 0, server: fields[1], status: hasStatus ? Int(fields[2]) : nil,
                    termination: fields[hasStatus ? 3 : 2], retries: Int(fields[hasStatus ? 4 : 3]) ?? -1
                )
            }
        }
        guard waitUntil(timeout: 10, { parse().count >= count }) else {
            XCTFail("expected \(count) log lines\n\(tail(balancer))")
            throw TestSupportError("log lines missing")
        }
        return parse()
    }
}
