// The real balancerd following the Consul test server while it answers wrongly (see
// DiscoveryTests/ConsulFaultTests for the source on its own): a body that is not JSON, a
// body cut short, an X-Consul-Index of 0. Client traffic keeps flowing to the servers of
// the last good table, with not one failed request; balancerd says why in one line; and a
// registration made during the fault is served once it ends. (500s, closed connections
// and hanging queries are DiscoveryConsulTests' outage tests. An answer slower than the
// read timeout needs balancerd's read timeout, 5 minutes past the 300 s wait, and is
// tested on the source with a short wait.)

import Foundation
import Glibc
import TestSupport
import XCTest

final class ConsulFaultTrafficTests: XCTestCase {
    func testAnswerThatIsNotJSONKeepsTrafficOnTheLastGoodTable() throws { try checkTraffic(during: "badjson") }
    func testAnswerCutShortKeepsTrafficOnTheLastGoodTable() throws { try checkTraffic(during: "truncated") }
    func testIndexOfZeroKeepsTrafficOnTheLastGoodTable() throws { try checkTraffic(during: "index0") }

    func checkTraffic(during mode: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let consul = try ConsulTestServerProcess()
        addTeardownBlock { consul.stop() }
        for name in ["s1", "s2"] {
            try consul.register(id: name, port: try startHTTPStampServer(name).port)
        }
        let (balancer, port) = try startBalancer(["--listen", "127.0.0.1:0", "--mode", "http", "--threads", "2",
                                                  "--consul", consul.url, "--service", "web"])
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)
        let updatesBefore = updateLines(balancer).count
        let linesBefore = balancer.lineCount

        let seconds = 2.0
        try consul.outage(mode, seconds: seconds)
        try consul.register(id: "s3", port: try startHTTPStampServer("s3").port)
        let traffic = runTraffic(port: port, until: monotonicSeconds() + seconds)
        print("consul \(mode): \(traffic.total) requests during the fault, \(traffic.failures.count) failed: \(traffic.bodies)")
        XCTAssertGreaterThan(traffic.total, 20, "too few requests to say anything", file: file, line: line)
        XCTAssertEqual(traffic.failures, [], "requests failed during the \(mode) fault\n\(tail(balancer))", file: file, line: line)
        XCTAssertEqual(Set(traffic.bodies.keys), ["s1", "s2"], "during the fault: \(traffic.bodies)", file: file, line: line)
        XCTAssertEqual(updateLines(balancer).count, updatesBefore, "the table changed during the fault\n\(tail(balancer))", file: file, line: line)
        let reasons = balancer.lines[linesBefore...].filter { $0.hasPrefix("balancerd: consul: ") && $0.contains("keeping the last good table") }
        XCTAssertEqual(reasons.count, 1, "one line for the \(mode) fault\n\(tail(balancer))", file: file, line: line)

        XCTAssertNotNil(waitUntilServed("s3", port: port, timeout: 8), "the registration made during the fault was not followed\n\(tail(balancer))", file: file, line: line)
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["s1", "s2", "s3"], file: file, line: line)
        XCTAssertNotNil(balancer.waitForLine(after: linesBefore, timeout: 2) { $0.contains("answering again") }, tail(balancer), file: file, line: line)
    }
}
