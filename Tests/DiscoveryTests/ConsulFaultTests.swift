// Consul answers that are wrong in one way each, from the Consul test server's fault modes:
// 500s, a body that is not JSON, a body cut short, an answer slower than the read timeout,
// and an X-Consul-Index of 0. For each: nothing is published while the fault lasts (the
// last good table stays in force), the reason is logged in one line however many queries
// fail, and the first good answer afterwards is applied (with the change made meanwhile).

import Balancer
import Discovery
import Foundation
import TestSupport
import XCTest

final class ConsulFaultTests: XCTestCase {
    func testConsul500s() throws { try checkFault("500", seconds: 2, reason: "HTTP 500: rpc error: No cluster leader") }
    func testConsulAnswerThatIsNotJSON() throws { try checkFault("badjson", seconds: 2, reason: "not the JSON expected") }
    func testConsulAnswerCutShort() throws { try checkFault("truncated", seconds: 2, reason: "incomplete response") }
    /// Held for 5 s, against a read timeout of 1.76 s for a blocking query (wait 1 s → 1.06 s +
    /// the 0.7 s margin). The query under way times out at about 1.7 s; its retry arrives
    /// within 0.1 s, times out at about 3.5 s, and the next one arrives within 0.2 s more
    /// (the backoff doubles). Queries are counted 0.3 s before the end: at 4 s (as this
    /// test once held it) the second retry landed 0.1 s before the count at best, and
    /// after it on a slow CI machine; at 5 s it has a second to spare.
    func testConsulAnswerSlowerThanTheReadTimeout() throws { try checkFault("slow", seconds: 5, reason: "no response within") }
    /// Consul's blocking-query rules: an index must be > 0; a 0 is a bug of the server (or
    /// of something in between), and trusting it would turn the loop into a busy one. The
    /// answer is not used, and the next query after a good one is a blocking one again.
    func testConsulIndexOfZero() throws { try checkFault("index0", seconds: 2, reason: "X-Consul-Index") }

    /// web-1 is published; then `mode` for `seconds`, during which web-2 registers. Nothing
    /// is published during the fault, one line gives the reason (containing `reason`),
    /// at least two queries failed, and [web-1, web-2] comes once the fault ends.
    func checkFault(_ mode: String, seconds: Double, reason: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", port: 8001)
        let running = try RunningSource(server: server, wait: .seconds(1))
        defer { running.stop() }
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1"] }, "no first table", file: file, line: line)
        sleepSeconds(0.1)   // the source is now in a blocking query
        let queriesBefore = try server.stats().HealthQueries

        try server.outage(mode, seconds: seconds)
        try server.register(id: "web-2", port: 8002)   // the agent takes it; reads are faulty
        let faultEnd = monotonicSeconds() + seconds
        sleepSeconds(seconds - 0.3)
        let queriesDuring = try server.stats().HealthQueries - queriesBefore
        XCTAssertEqual(running.published.sets.map(\.names), [["web-1"]],
                       "\(mode): something was published during the fault", file: file, line: line)
        let failureLines = running.published.lines.filter { $0.contains("keeping the last good table") }
        XCTAssertEqual(failureLines.count, 1, "\(mode): one line for the fault, not one per failed query (\(queriesDuring) queries): \(running.published.lines)", file: file, line: line)
        XCTAssertTrue(failureLines.first?.contains(reason) ?? false, "\(mode): the line should say why (\(reason)): \(failureLines)", file: file, line: line)
        XCTAssertGreaterThanOrEqual(queriesDuring, 2, "\(mode): the source should have retried during the fault", file: file, line: line)
        print("consul \(mode): \(queriesDuring) queries during the fault; \(failureLines.first ?? "no line")")

        let recovered = running.published.wait(timeout: 10) { $0.names == ["web-1", "web-2"] }
        XCTAssertNotNil(recovered, "\(mode): the first good answer after the fault was not applied: \(running.published.lines)", file: file, line: line)
        if let recovered {
            XCTAssertGreaterThan(recovered.time, faultEnd - 0.3, "\(mode): applied during the fault", file: file, line: line)
        }
        XCTAssertEqual(running.published.count, 2, "\(mode): \(running.published.sets.map(\.names))", file: file, line: line)
        XCTAssertNotNil(running.published.waitForLog(timeout: 2) { $0.contains("answering again") }, "\(mode): \(running.published.lines)", file: file, line: line)
        XCTAssertEqual(running.published.lines.filter { $0.contains("keeping the last good table") }.count, 1,
                       "\(mode): \(running.published.lines)", file: file, line: line)
    }
}
