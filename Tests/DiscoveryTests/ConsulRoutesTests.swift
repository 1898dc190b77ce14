// ConsulRoutes against the Consul test server: routes appear, move and disappear with
// the catalog and the checks; unsupported tags are logged once; stale reads that are too
// old go to the leader; and several balancerd reading one Consul converge on one table.
// Each test starts its own server.
import Balancer
@testable import Discovery
import Foundation
import TestSupport
import XCTest

final class ConsulRoutesTests: XCTestCase {
    func testRoutesAppearMoveAndDisappear() throws {
        let server = try ConsulTestServer()
        try server.register(id: "api-1", name: "api", port: 9001, tags: ["urlprefix-api.example.com/v1", "v1"])
        try server.register(id: "db-1", name: "db", port: 5432, tags: ["primary"])
        let running = try RunningRoutes(server: server)

        // The first set has the tagged service and nothing else.
        let first = try XCTUnwrap(running.publisher.wait { !$0.routes.isEmpty }, "\(running.logs.lines)")
        XCTAssertEqual(first.index, 0, "the first set waits for the first answer of every routed service")
        XCTAssertEqual(first.set.table, ["api.example.com/v1→api"])
        XCTAssertEqual(first.set.addresses, ["api": ["127.0.0.1:9001"]])

        // A second instance joins the backend.
        try server.register(id: "api-2", name: "api", port: 9002, tags: ["urlprefix-api.example.com/v1"])
        var seen = try XCTUnwrap(running.publisher.wait(after: first.index + 1) { $0.addresses["api"]?.count == 2 })
        XCTAssertEqual(seen.set.table, ["api.example.com/v1→api"])

        // An instance failing its check leaves; the route stays with the other one.
        try server.check("fail", "api-1")
        seen = try XCTUnwrap(running.publisher.wait(after: seen.index + 1) { $0.addresses["api"] == ["127.0.0.1:9002"] })

        // A new service with a tag gets its route, with its options.
        try server.register(id: "web-1", name: "web", port: 8080, tags: ["urlprefix-/static strip=/static"])
        seen = try XCTUnwrap(running.publisher.wait(after: seen.index + 1) { $0.table.contains("/static→web") })
        XCTAssertEqual(seen.set.routes.first { $0.service == "web" }?.strip, "/static")
        XCTAssertEqual(seen.set.table, ["/static→web", "api.example.com/v1→api"], "routes without a host come first in the set's order")

        // The tag goes: the route goes, and so does the service's query.
        try server.register(id: "web-1", name: "web", port: 8080, tags: ["static"])
        seen = try XCTUnwrap(running.publisher.wait(after: seen.index + 1) { !$0.table.contains("/static→web") })
        XCTAssertEqual(seen.set.table, ["api.example.com/v1→api"])
        XCTAssertNil(seen.set.services["web"])

        // The last passing instance goes: no route, no backend.
        try server.check("fail", "api-2")
        seen = try XCTUnwrap(running.publisher.wait(after: seen.index + 1) { $0.routes.isEmpty })
        XCTAssertEqual(seen.set, RouteSet())

        // It passes again: the route is back.
        try server.check("pass", "api-1")
        XCTAssertNotNil(running.publisher.wait(after: seen.index + 1) { $0.addresses["api"] == ["127.0.0.1:9001"] })

        // Every set published differed from the one before (an unchanged set is never sent).
        let sets = running.publisher.sets
        for i in sets.indices.dropFirst() { XCTAssertNotEqual(sets[i], sets[i - 1], "set \(i)") }
        // The untagged service was never asked about.
        XCTAssertNil(try server.requests().ByPath["/v1/health/service/db"])
    }

    func testUnsupportedTagIsLoggedOnceAndSkipped() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", name: "web", port: 8001, tags: ["urlprefix-/ok", "urlprefix-:3306 proto=tcp"])
        try server.register(id: "db-1", name: "db", port: 5432, tags: ["urlprefix-db.example.com/ proto=https"])
        let running = try RunningRoutes(server: server)

        let first = try XCTUnwrap(running.publisher.wait { !$0.routes.isEmpty }, "\(running.logs.lines)")
        XCTAssertEqual(first.set.table, ["/ok→web"], "the service keeps its supported route")
        // More answers that carry the same tags: a new instance, an idempotent write.
        try server.register(id: "web-2", name: "web", port: 8002, tags: ["urlprefix-/ok", "urlprefix-:3306 proto=tcp"])
        let second = try XCTUnwrap(running.publisher.wait(after: first.index + 1) { $0.addresses["web"]?.count == 2 })
        try server.spuriousWakeup("web")
        try server.register(id: "web-3", name: "web", port: 8003, tags: ["urlprefix-/ok"])
        XCTAssertNotNil(running.publisher.wait(after: second.index + 1) { $0.addresses["web"]?.count == 3 })

        let lines = running.logs.lines
        XCTAssertEqual(lines.filter { $0.contains("'urlprefix-:3306 proto=tcp' skipped") }.count, 1, "\(lines)")
        XCTAssertEqual(lines.filter { $0.contains("service db: tag 'urlprefix-db.example.com/ proto=https' skipped: option 'proto=https' is not supported") }.count,
                       1, "\(lines)")
        XCTAssertNil(try server.requests().ByPath["/v1/health/service/db"], "a service with no usable route tag costs no query")
    }

    /// consul-template's max_stale: with `stale`, an answer from a server that lost the
    /// leader more than `maxStale` ago is asked again of the leader. A source that trusts
    /// any stale answer (maxStale nil) shows what the bound prevents.
    func testStaleAnswersTooOldAreAskedOfTheLeader() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", name: "web", port: 8001, tags: ["urlprefix-/"])
        let bounded = try RunningRoutes(server: server, token: "bounded", wait: .seconds(1)) {
            $0.stale = true
            $0.maxStale = .seconds(2)
        }
        let trusting = try RunningRoutes(server: server, token: "trusting", wait: .seconds(1)) {
            $0.stale = true
            $0.maxStale = nil
        }
        let backend = try RunningSource(server: server, service: "web", wait: .seconds(1)) {
            $0.stale = true
            $0.token = "backend"
        }
        for running in [bounded, trusting] {
            XCTAssertNotNil(running.publisher.wait { $0.addresses["web"]?.count == 1 }, "\(running.logs.lines)")
        }
        XCTAssertNotNil(backend.published.wait { $0.servers.count == 1 })
        XCTAssertGreaterThan(try server.requests().Stale, 0, "the sources read with ?stale")

        // The follower the stale reads reach has not heard from the leader for 5 s.
        try server.followerLosesContact(agoMilliseconds: 5000)
        try server.register(id: "web-2", name: "web", port: 8002, tags: ["urlprefix-/"])
        let seen = bounded.publisher.wait(timeout: 8) { $0.addresses["web"]?.count == 2 }
        XCTAssertNotNil(seen, "bounded: \(bounded.logs.lines)")
        XCTAssertNotNil(backend.published.wait(timeout: 8) { $0.servers.count == 2 }, "ConsulSource: \(backend.published.lines)")
        XCTAssertNotNil(bounded.logs.waitForLog { $0.contains("behind the leader (max 2s); asking the leader") }, "\(bounded.logs.lines)")
        // The trusting source can only see the frozen follower.
        XCTAssertEqual(trusting.publisher.last?.addresses["web"], ["127.0.0.1:8001"])
        XCTAssertTrue(trusting.logs.lines.filter { $0.contains("asking the leader") }.isEmpty)

        // Contact regained: the trusting source catches up too.
        try server.followerRegainsContact()
        XCTAssertNotNil(trusting.publisher.wait { $0.addresses["web"]?.count == 2 })
    }

    /// A follower with no leader (X-Consul-KnownLeader: false) and old data: the leader
    /// retry is said in the log, with what the follower knows.
    func testStaleAnswerWithoutKnownLeaderIsLogged() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", name: "web", port: 8001, tags: ["urlprefix-/"])
        try server.followerLosesContact(agoMilliseconds: 9000, knownLeader: false)
        let running = try RunningRoutes(server: server, wait: .seconds(1)) { $0.stale = true }
        XCTAssertNotNil(running.publisher.wait { $0.addresses["web"]?.count == 1 })
        let line = running.logs.waitForLog { $0.contains("asking the leader") }
        XCTAssertTrue(line?.contains("the server knows no leader") ?? false, line ?? "\(running.logs.lines)")
    }

    /// Many balancerd, one Consul: three route sources (as three balancerd would run them)
    /// through a burst of 50 registrations and deregistrations end on the same table, the
    /// one the final catalog describes. Then the Consul requests of a quiet period are
    /// counted per client (each sends its own token; the server checks none).
    func testThreeInstancesConvergeAndStayQuiet() throws {
        let server = try ConsulTestServer()
        let wait = Duration.seconds(2)
        let instances = try ["balancerd-1", "balancerd-2", "balancerd-3"].map { name in
            try RunningRoutes(server: server, token: name, wait: wait)
        }
        for running in instances { XCTAssertNotNil(running.publisher.wait { _ in true }, "\(running.logs.lines)") }

        var generator = SeededGenerator(seed: 10)
        var registered: [String: (service: String, port: Int)] = [:]
        for step in 0..<50 {
            if registered.count > 3 && Int.random(in: 0..<3, using: &generator) == 0 {
                let id = registered.keys.sorted()[Int.random(in: 0..<registered.count, using: &generator)]
                try server.deregister(id)
                registered[id] = nil
            } else {
                let service = "svc\(Int.random(in: 0..<8, using: &generator))"
                let id = "\(service)-\(step)"
                let port = 10_000 + step
                try server.register(id: id, name: service, port: port,
                                    tags: ["urlprefix-\(service).example.com/", "urlprefix-/\(service) strip=/\(service)"])
                registered[id] = (service, port)
            }
        }
        // What the final catalog says the table is.
        var expected: [String: [String]] = [:]
        for (_, instance) in registered { expected[instance.service, default: []].append("127.0.0.1:\(instance.port)") }
        expected = expected.mapValues { $0.sorted() }
        let expectedTable = expected.keys.flatMap { ["/\($0)→\($0)", "\($0).example.com/→\($0)"] }
            .sorted { $0.hasPrefix("/") != $1.hasPrefix("/") ? $0.hasPrefix("/") : $0 < $1 }

        let converged = waitUntil(timeout: 20) {
            instances.allSatisfy { running in
                guard let last = running.publisher.last else { return false }
                return last.table == expectedTable && last.addresses.mapValues { $0.sorted() } == expected
            }
        }
        XCTAssertTrue(converged, "expected \(expectedTable) \(expected); got \(instances.map { $0.publisher.last?.table ?? [] })")
        let finals = instances.compactMap { $0.publisher.last }
        XCTAssertEqual(finals.count, 3)
        XCTAssertEqual(finals[0], finals[1])
        XCTAssertEqual(finals[1], finals[2])
        print("convergence: sets published per instance: \(instances.map { $0.publisher.count })")

        // The quiet period: no writes, every query blocks for `wait` and is asked again.
        let quiet = 10.0
        let before = try server.requests().ByClient
        let start = monotonicSeconds()
        _ = waitUntil(timeout: quiet) { false }
        let after = try server.requests().ByClient
        let elapsed = monotonicSeconds() - start
        let watches = 1 + expected.count  // the catalog and one per routed service
        for running in instances {
            let token = running.source.options.token!
            let made = (after[token] ?? 0) - (before[token] ?? 0)
            // Each watch asks once per wait (Consul adds up to wait/16 of jitter): at most
            // one more per watch for the period's edges.
            let most = watches * (Int(elapsed / wait.seconds) + 1)
            XCTAssertGreaterThan(made, 0, token)
            XCTAssertLessThanOrEqual(made, most, "\(token): \(made) requests in \(elapsed) s")
            print("quiet period: \(token) made \(made) Consul requests in \(String(format: "%.1f", elapsed)) s with \(watches) watches, wait \(wait)")
        }
    }
}

extension ConsulRoutesTests {
    /// The runner as balancerd uses it: a frontend's `routes` become a route source whose
    /// sets reach the RoutePublisher under that frontend's name.
    func testRunnerStartsRouteSourcesOfTheConfiguration() throws {
        let server = try ConsulTestServer()
        try server.register(id: "web-1", name: "web", port: 8001, tags: ["route-web.example.com/"])
        var frontend = Frontend(name: "www", binds: [HostPort(host: "127.0.0.1", port: 0)], mode: .http, defaultBackend: "main")
        frontend.routes = RouteDiscoveryConfig(url: server.url, tagPrefix: "route-", stale: true, token: "from-config")
        let configuration = Configuration(frontends: [frontend], backends: [BackendConfig(name: "main", mode: .http)])
        let lines = Published()
        let runner = try DiscoveryRunner(configuration: configuration, log: { lines.log($0) })
        XCTAssertTrue(runner.hasRoutes)
        XCTAssertFalse(runner.isEmpty)
        let publisher = RecordingPublisher()
        runner.startRoutes(publishingInto: publisher)
        addTeardownBlock { runner.stop() }
        XCTAssertEqual(runner.waitForFirstAnswers(timeout: .seconds(5)), [], "\(lines.lines)")
        XCTAssertEqual(publisher.last?.table, ["web.example.com/→web"])
        XCTAssertNotNil(lines.waitForLog { $0.contains("frontend www routes updated from consul") && $0.contains("1 route(s)") },
                        "\(lines.lines)")
        let requests = try server.requests()
        XCTAssertGreaterThan(requests.ByClient["from-config"] ?? 0, 0, "the token of the configuration is sent")
        XCTAssertEqual(requests.Stale, requests.Total - requests.ByPath.filter { $0.key.hasPrefix("/v1/agent/") }.values.reduce(0, +),
                       "every read is stale")

        // The snapshot export-haproxy takes.
        let snapshot = try DiscoveryRunner.snapshot(of: configuration, timeout: .seconds(5))
        XCTAssertEqual(snapshot.routes["www"]?.table, ["web.example.com/→web"])
    }
}

extension Duration {
    fileprivate var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
