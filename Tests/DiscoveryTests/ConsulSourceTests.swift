// ConsulSource against the Consul test server: what balancerd's table does as instances
// come, go, fail checks, and as Consul misbehaves (index resets, spurious wake-ups,
// outages). Each test starts its own server, so none depends on another's state.
import Balancer
@testable import Discovery
import Foundation
import TestSupport
import XCTest

final class ConsulSourceTests: XCTestCase {
    // MARK: discovery

    func testInstancesRegisteredBeforeStartArePublishedSortedByName() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-2", port: 8002)
        try server.register(id: "web-1", port: 8001)
        try server.register(id: "other", name: "api", port: 9000)
        let running = try RunningSource(server: server)

        let first = try XCTUnwrap(running.published.wait { _ in true })
        XCTAssertEqual(first.set.names, ["web-1", "web-2"])
        XCTAssertEqual(first.set.addresses, ["127.0.0.1:8001", "127.0.0.1:8002"])
        XCTAssertEqual(first.set.servers.map(\.weight), [1, 1])
        XCTAssertLessThan(running.stop(), 1.0)
        XCTAssertEqual(running.published.count, 1)
    }

    /// The time from a registration to the published set: the blocking query returns at
    /// once and, after a quiet period, the next query is not delayed by the rate limit.
    func testInstanceRegisteredAfterStartIsPublishedQuickly() throws {
        let server = try ConsulTestServer()
        let running = try RunningSource(server: server, wait: .seconds(10))
        let empty = try XCTUnwrap(running.published.wait { _ in true })
        XCTAssertEqual(empty.set.servers, [], "an empty service is a real (empty) answer")

        var latencies: [Double] = []
        for i in 1...15 {
            sleepSeconds(0.05)   // let the source settle into its blocking query
            let before = running.published.count
            let start = monotonicSeconds()
            try server.register(id: "web-\(i)", port: 8000 + i)
            let seen = try XCTUnwrap(running.published.wait(after: before) { $0.names.contains("web-\(i)") },
                                     "registration \(i) was not published")
            latencies.append((seen.time - start) * 1000)
            XCTAssertEqual(seen.set.servers.count, i)
        }
        latencies.sort()
        let median = latencies[latencies.count / 2]
        print("consul register → published: median \(String(format: "%.1f", median)) ms, max \(String(format: "%.1f", latencies.last!)) ms over \(latencies.count)")
        XCTAssertLessThan(median, 20, "median update latency \(median) ms; all: \(latencies)")
    }

    func testFailingTTLCheckRemovesInstance() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", port: 8001)
        try server.register(id: "web-2", port: 8002, ttl: "600ms")
        let running = try RunningSource(server: server)
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1", "web-2"] })
        // Nobody updates web-2's TTL check: it turns critical and leaves the table.
        XCTAssertNotNil(running.published.wait(timeout: 5) { $0.names == ["web-1"] })
        // An explicit fail does the same for web-1; a pass brings it back.
        try server.check("fail", "web-1")
        XCTAssertNotNil(running.published.wait { $0.servers.isEmpty })
        try server.check("pass", "web-1")
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1"] })
    }

    func testCheckStartsCriticalUntilItPasses() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", port: 8001, status: nil)   // TTL checks start critical
        let running = try RunningSource(server: server)
        XCTAssertEqual(running.published.wait { _ in true }?.set.servers, [])
        try server.check("pass", "web-1")
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1"] })
    }

    func testWarningIsNotPassing() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", port: 8001)
        try server.register(id: "web-2", port: 8002)
        let running = try RunningSource(server: server)
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1", "web-2"] })
        try server.check("warn", "web-2")
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1"] })
        try server.check("pass", "web-2")
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1", "web-2"] })
        // The node check (serfHealth) counts for every instance on the node.
        try server.nodeCheck("warning")
        XCTAssertNotNil(running.published.wait { $0.servers.isEmpty })
        try server.nodeCheck("passing")
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1", "web-2"] })
    }

    func testTagFilter() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-a", port: 8001, tags: ["primary", "v2"])
        try server.register(id: "web-b", port: 8002, tags: ["secondary"])
        let running = try RunningSource(server: server, tag: "primary")
        XCTAssertNotNil(running.published.wait { $0.names == ["web-a"] })
        // Changes to an instance the filter drops move the index but not the set.
        let before = try server.stats().HealthQueries
        try server.check("fail", "web-b")
        try server.check("pass", "web-b")
        XCTAssertTrue(waitUntil(timeout: 3) { ((try? server.stats().HealthQueries) ?? 0) >= before + 2 })
        sleepSeconds(0.1)
        XCTAssertEqual(running.published.count, 1, "\(running.published.sets)")
        try server.register(id: "web-c", port: 8003, tags: ["PRIMARY"])   // Consul's tag match ignores case
        XCTAssertNotNil(running.published.wait { $0.names == ["web-a", "web-c"] })
    }

    func testSpuriousWakeupsPublishNothing() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", port: 8001)
        let running = try RunningSource(server: server)
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1"] })
        sleepSeconds(0.05)
        let before = try server.stats()
        for _ in 1...5 {
            try server.spuriousWakeup()
            sleepSeconds(0.05)
        }
        // Every wake-up was answered and followed by a new blocking query...
        XCTAssertTrue(waitUntil(timeout: 3) { ((try? server.stats().BlockingQueries) ?? 0) >= before.BlockingQueries + 5 })
        // ...and none published anything.
        XCTAssertEqual(running.published.count, 1)
        try server.register(id: "web-2", port: 8002)
        XCTAssertNotNil(running.published.wait { $0.names == ["web-1", "web-2"] })
        XCTAssertEqual(running.published.count, 2)
    }

    /// Sustained churn: every change wakes the blocking query at once, yet the minimum
    /// interval keeps the query rate bounded, and the end state is always published.
    func testChurnIsRateLimitedAndTheLastStateArrives() throws {
        let server = try ConsulTestServer()
        let running = try RunningSource(server: server, configure: { $0.minimumInterval = .milliseconds(20) })
        XCTAssertNotNil(running.published.wait { _ in true })
        let before = try server.stats().HealthQueries
        let start = monotonicSeconds()
        for i in 1...150 { try server.register(id: "web-\(i)", port: 8000 + i) }
        XCTAssertNotNil(running.published.wait(timeout: 5) { $0.servers.count == 150 })
        let elapsed = monotonicSeconds() - start
        let queries = try server.stats().HealthQueries - before
        // At most one query per 20 ms (plus the one in flight when the churn began).
        XCTAssertLessThanOrEqual(Double(queries), elapsed / 0.020 + 2, "\(queries) queries in \(elapsed) s")
        XCTAssertLessThan(running.published.count, 150, "changes in a burst are batched")
    }

    func testIndexResetIsFollowed() throws {
        let server = try ConsulTestServer()
        for i in 1...20 { try server.register(id: "web-\(i)", port: 8000 + i) }
        let running = try RunningSource(server: server)
        XCTAssertNotNil(running.published.wait { $0.servers.count == 20 })
        XCTAssertGreaterThan(try server.stats().Index, 20)
        sleepSeconds(0.05)

        // The index goes back to 2: the blocked query answers with a lower index, the
        // source resets, and changes at indexes below the old one are still seen.
        try server.resetIndex(to: 2)
        try server.deregister("web-20")
        XCTAssertNotNil(running.published.wait { $0.servers.count == 19 })
        for i in 21...23 {
            try server.register(id: "web-\(i)", port: 8000 + i)
            XCTAssertNotNil(running.published.wait { $0.names.contains("web-\(i)") }, "update \(i) after the reset")
        }
        XCTAssertLessThan(try server.stats().Index, 20, "the test must have run below the old index")
        // And the source blocks again rather than spinning.
        let queries = try server.stats().HealthQueries
        sleepSeconds(0.5)
        XCTAssertLessThanOrEqual(try server.stats().HealthQueries, queries + 1)
    }

    func testDeregisteringEverythingPublishesEmptySet() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", port: 8001)
        try server.register(id: "web-2", port: 8002)
        let running = try RunningSource(server: server)
        XCTAssertNotNil(running.published.wait { $0.servers.count == 2 })
        try server.deregister("web-1")
        XCTAssertNotNil(running.published.wait { $0.names == ["web-2"] })
        try server.deregister("web-2")
        XCTAssertNotNil(running.published.wait { $0.servers.isEmpty }, "the last deregistration must wake the query")
        try server.register(id: "web-3", port: 8003)
        XCTAssertNotNil(running.published.wait { $0.names == ["web-3"] })
    }

    // MARK: addresses, weights, names

    func testServiceAddressFallsBackToNodeAddressAndWeightsAreClamped() throws {
        let server = try ConsulTestServer(nodeAddress: "127.0.0.9")
        try server.register(id: "plain", port: 8001)
        try server.register(id: "own-address", port: 8002, address: "10.1.2.3", weight: 5)
        try server.register(id: "heavy", port: 8003, address: "::1", weight: 1000)
        try server.register(id: "web/4 ü", port: 8004)
        try server.register(id: "no-port", port: 0)
        let running = try RunningSource(server: server)
        let set = try XCTUnwrap(running.published.wait { _ in true }?.set)
        XCTAssertEqual(set.servers, [
            ServerConfig(name: "heavy", address: HostPort(host: "::1", port: 8003), weight: 256),
            ServerConfig(name: "own-address", address: HostPort(host: "10.1.2.3", port: 8002), weight: 5),
            ServerConfig(name: "plain", address: HostPort(host: "127.0.0.9", port: 8001), weight: 1),
            ServerConfig(name: "web_4__", address: HostPort(host: "127.0.0.9", port: 8004), weight: 1),
        ])
        XCTAssertNotNil(running.published.waitForLog { $0.contains("no-port") })
    }

    func testNamesAreStableAndUnique() {
        func entry(_ id: String, node: String, port: Int) -> HealthEntry {
            HealthEntry(node: .init(node: node, address: "10.0.0.1"),
                        service: .init(id: id, service: "web", address: "", port: port, weights: nil))
        }
        let entries = [entry("web", node: "b", port: 2), entry("web", node: "a", port: 1), entry("x y", node: "a", port: 3),
                       entry("x_y", node: "a", port: 4)]
        let forward = ConsulSource.backendSet(from: entries).set
        let backward = ConsulSource.backendSet(from: entries.reversed()).set
        XCTAssertEqual(forward, backward, "Consul's answer order must not change the set")
        XCTAssertEqual(forward.names, ["web_a", "web_b", "x_y", "x_y_2"])
        XCTAssertEqual(forward.servers.map(\.address.port), [1, 2, 3, 4])
    }

    // MARK: errors

    /// For each kind of outage: nothing is published while it lasts (above all no empty
    /// set), the failure is logged, and the change made meanwhile arrives once it ends.
    /// The hang outage outlasts the source's read timeout (wait 1 s → 1.06 s + 0.7 s), so
    /// the timeout path runs; a shorter hang is simply waited out.
    func testOutagesPublishNothingAndRecoveryResumesUpdates() throws {
        for (mode, seconds, wait) in [("500", 1.5, 2), ("close", 1.5, 2), ("hang", 2.5, 1)] {
            let server = try ConsulTestServer()
            try server.register(id: "web-1", port: 8001)
            let running = try RunningSource(server: server, wait: .seconds(wait))
            XCTAssertNotNil(running.published.wait { $0.names == ["web-1"] }, mode)
            sleepSeconds(0.05)

            try server.outage(mode, seconds: seconds)
            try server.register(id: "web-2", port: 8002)   // the agent accepts it; reads fail
            sleepSeconds(seconds - 0.3)
            XCTAssertEqual(running.published.count, 1, "\(mode): nothing may be published during the outage: \(running.published.sets)")
            let failure = running.published.waitForLog(timeout: 3) { $0.contains("keeping the last good table") }
            XCTAssertNotNil(failure, "\(mode): \(running.published.lines)")
            print("\(mode) outage: \(failure ?? "-")")

            let recovered = running.published.wait(timeout: 10) { $0.names == ["web-1", "web-2"] }
            XCTAssertNotNil(recovered, "\(mode): no update after the outage; log: \(running.published.lines)")
            XCTAssertEqual(running.published.count, 2, "\(mode): \(running.published.sets)")
            XCTAssertNotNil(running.published.waitForLog(timeout: 2) { $0.contains("answering again") }, mode)
            XCTAssertLessThan(running.stop(), 1.0, mode)
        }
    }

    func testUnreachableAgentPublishesNothingAndStopsPromptly() throws {
        let port = try freePort()
        let running = try RunningSource(server: try ConsulTestServer(), configure: { $0.url = "http://127.0.0.1:\(port)" })
        let line = running.published.waitForLog { $0.contains("failed") }
        XCTAssertNotNil(line)
        XCTAssertTrue(line?.contains("Connection refused") ?? false, line ?? "")
        sleepSeconds(0.5)
        XCTAssertEqual(running.published.count, 0)
        // Failures are reported, but not once per retry.
        XCTAssertEqual(running.published.lines.filter { $0.contains("failed") }.count, 1, "\(running.published.lines)")
        XCTAssertLessThan(running.stop(), 1.0)
    }

    func testUnknownDatacenterIsAnError() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", port: 8001)
        let running = try RunningSource(server: server, datacenter: "nowhere")
        let line = running.published.waitForLog { $0.contains("failed") }
        XCTAssertTrue(line?.contains("HTTP 500: No path to datacenter") ?? false, line ?? "no log line")
        XCTAssertEqual(running.published.count, 0)
        running.stop()
        let right = try RunningSource(server: server, datacenter: "dc1")
        XCTAssertNotNil(right.published.wait { $0.names == ["web-1"] })
    }

    func testACLTokenIsRequired() throws {
        let server = try ConsulTestServer(token: "s3cret")
        try server.register(id: "web-1", port: 8001)
        let anonymous = try RunningSource(server: server)
        let line = anonymous.published.waitForLog { $0.contains("failed") }
        XCTAssertTrue(line?.contains("HTTP 403: Permission denied") ?? false, line ?? "no log line")
        let wrong = try RunningSource(server: server, token: "guess")
        let wrongLine = wrong.published.waitForLog { $0.contains("failed") }
        XCTAssertTrue(wrongLine?.contains("HTTP 403: ACL not found") ?? false, wrongLine ?? "no log line")
        XCTAssertFalse(wrongLine?.contains("guess") ?? true, "the token must not be logged")

        let right = try RunningSource(server: server, token: "s3cret")
        XCTAssertNotNil(right.published.wait { $0.names == ["web-1"] })
        XCTAssertEqual(anonymous.published.count, 0)
        XCTAssertEqual(wrong.published.count, 0)
    }

    func testStopEndsALongBlockingQueryPromptly() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", port: 8001)
        let running = try RunningSource(server: server, wait: .seconds(300))
        XCTAssertNotNil(running.published.wait { _ in true })
        sleepSeconds(0.1)
        XCTAssertLessThan(running.stop(), 0.5)
    }

    // MARK: what the test server answers (the facts the source relies on)

    func testServerAnswerShapeAndHeaders() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", port: 8001, tags: ["a"])
        let response = try server.health("web?passing")
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.header("Content-Type"), "application/json")
        XCTAssertEqual(response.header("X-Consul-KnownLeader"), "true")
        XCTAssertEqual(response.header("X-Consul-LastContact"), "0")
        let index = try XCTUnwrap(UInt64(response.header("X-Consul-Index") ?? ""))
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]])
        XCTAssertEqual(json.count, 1)
        let checks = try XCTUnwrap(json[0]["Checks"] as? [[String: Any]])
        XCTAssertEqual(Set(checks.compactMap { $0["CheckID"] as? String }), ["serfHealth", "service:web-1"])
        let service = try XCTUnwrap(json[0]["Service"] as? [String: Any])
        XCTAssertEqual(service["Address"] as? String, "")
        XCTAssertEqual((service["Weights"] as? [String: Int])?["Passing"], 1)

        // A blocking query at the current index times out after wait (plus up to wait/16)
        // with the same index.
        let start = monotonicSeconds()
        let blocked = try server.health("web?passing&index=\(index)&wait=300ms")
        let waited = monotonicSeconds() - start
        XCTAssertEqual(blocked.header("X-Consul-Index"), String(index))
        XCTAssertGreaterThanOrEqual(waited, 0.29)
        XCTAssertLessThan(waited, 1.0)
        // Deregistering the last instance still moves the index forward.
        try server.deregister("web-1")
        let emptied = try server.health("web?passing&index=\(index)&wait=5s")
        XCTAssertEqual(emptied.bodyText, "[]")
        XCTAssertGreaterThan(UInt64(emptied.header("X-Consul-Index") ?? "") ?? 0, index)
    }
}

/// The rules that are pure functions.
final class ConsulRulesTests: XCTestCase {
    func testIndexRules() {
        XCTAssertEqual(ConsulIndex.next(previous: 0, received: 7), 7, "first answer")
        XCTAssertEqual(ConsulIndex.next(previous: 7, received: 7), 7, "timeout: same index, ask again")
        XCTAssertEqual(ConsulIndex.next(previous: 7, received: 9), 9)
        XCTAssertEqual(ConsulIndex.next(previous: 9, received: 3), 1, "backwards: reset (and 0 is sent as 1)")
        XCTAssertEqual(ConsulIndex.next(previous: 0, received: 0), 1, "0 is never sent after the first call")
        XCTAssertEqual(ConsulIndex.next(previous: 5, received: 0), 1)
        XCTAssertEqual(ConsulIndex.next(previous: 1, received: 3), 3, "after a reset, follow the new index")
    }

    func testRateLimit() {
        let min = Duration.milliseconds(10)
        XCTAssertEqual(ConsulSource.pause(sinceLastCall: .seconds(30), minimumInterval: min, jitter: .milliseconds(4)), .zero,
                       "after a quiet period the next query goes out at once")
        XCTAssertEqual(ConsulSource.pause(sinceLastCall: .milliseconds(10), minimumInterval: min, jitter: .zero), .zero)
        XCTAssertEqual(ConsulSource.pause(sinceLastCall: .milliseconds(3), minimumInterval: min, jitter: .milliseconds(4)),
                       .milliseconds(11))
    }

    func testQueryTarget() throws {
        var options = ConsulSource.Options(url: "http://127.0.0.1:8500/consul/", service: "web app", tag: "v1&x", datacenter: "dc2")
        options.wait = .seconds(300)
        let source = try ConsulSource(options: options)
        XCTAssertEqual(source.target(index: 0), "/v1/health/service/web%20app?passing&tag=v1%26x&dc=dc2")
        XCTAssertEqual(source.target(index: 42), "/v1/health/service/web%20app?passing&index=42&wait=300s&tag=v1%26x&dc=dc2")
        XCTAssertEqual(source.url.pathPrefix, "/consul")
        XCTAssertEqual(source.description, "consul http://127.0.0.1:8500/consul service web app tag v1&x dc dc2")
    }

    func testFailureReportIsRateLimited() {
        var report = FailureReport()
        XCTAssertEqual(report.failed("refused", now: 0), "refused")
        XCTAssertNil(report.failed("refused", now: 1_000_000_000))
        XCTAssertEqual(report.failed("HTTP 500", now: 2_000_000_000), "HTTP 500 (3 failures in a row)")
        XCTAssertNil(report.failed("HTTP 500", now: 3_000_000_000))
        XCTAssertNotNil(report.failed("HTTP 500", now: 40_000_000_000))
        XCTAssertEqual(report.succeeded(), 5)
        XCTAssertNil(report.succeeded())
    }
}
