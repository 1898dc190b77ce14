// The real balancerd following the Consul API test server (Tests/ConsulTestServer), shaped
// like haproxy's balance-rr.vtc: backends that stamp their name, the real binary, and
// assertions on what a client gets — which servers answer, in what rotation, and 503 when
// there are none. Each change is made through the Consul API, and the time from the API
// call returning to the first client request that sees the change is printed.
//
// The helpers at the bottom (client requests, waits, `updated` log lines) are shared with
// DiscoveryEtcdTests.

import Foundation
import Glibc
import TestSupport
import XCTest

final class DiscoveryConsulTests: XCTestCase {
    // MARK: helpers

    func startConsul(token: String? = nil) throws -> ConsulTestServerProcess {
        let consul = try ConsulTestServerProcess(token: token)
        addTeardownBlock { consul.stop() }
        return consul
    }

    /// HTTP stamp servers (body = name) registered in Consul as instances of `web` with the
    /// same IDs, so the name a client reads is the server name balancerd logs.
    func startRegistered(_ names: [String], in consul: ConsulTestServerProcess, tags: [String] = []) throws -> [String: HTTPStampServer] {
        var servers: [String: HTTPStampServer] = [:]
        for name in names {
            let server = try startHTTPStampServer(name)
            try consul.register(id: name, port: server.port, tags: tags)
            servers[name] = server
        }
        return servers
    }

    func consulArguments(_ consul: ConsulTestServerProcess, mode: String = "http", extra: [String] = []) -> [String] {
        ["--listen", "127.0.0.1:0", "--mode", mode, "--threads", "2", "--consul", consul.url, "--service", "web"] + extra
    }

    // MARK: stale reads (--consul-stale)

    /// The real binary with --consul-stale reads with ?stale; with the follower 5 s behind
    /// the leader (more than --consul-max-stale 1s), its answer is asked again of the
    /// leader, which has the instance the follower has not seen.
    func testConsulStaleReadsAreBoundedByMaxStale() throws {
        let consul = try startConsul()
        _ = try startRegistered(["s1"], in: consul)
        try consul.followerLosesContact(agoMilliseconds: 5000)
        _ = try startRegistered(["s2"], in: consul)
        let (balancer, _) = try startBalancer(consulArguments(consul, extra: ["--consul-stale", "--consul-max-stale", "1s"]))
        XCTAssertNotNil(waitForUpdate(balancer, servers: ["s1", "s2"], timeout: 5), tail(balancer))
        XCTAssertTrue(tail(balancer).contains("behind the leader (max 1s); asking the leader"), tail(balancer))
        XCTAssertGreaterThan((try consul.requests()["Stale"] as? NSNumber)?.intValue ?? 0, 0, "no ?stale read")
    }

    // MARK: 1. what is registered before the start

    /// Three instances registered before balancerd starts: its first table has all three
    /// and the requests go s1, s2, s3, s1, …
    func testInstancesRegisteredBeforeStartAreServedInRotation() throws {
        let consul = try startConsul()
        let servers = try startRegistered(["s1", "s2", "s3"], in: consul)
        let (balancer, port) = try startBalancer(consulArguments(consul))

        // No settling time: once balancerd says it has the table, clients get it.
        let update = try XCTUnwrap(waitForUpdate(balancer, servers: ["s1", "s2", "s3"], timeout: 5), "no table with s1, s2, s3\n\(tail(balancer))")
        XCTAssertTrue(update.contains("updated from consul http://127.0.0.1:\(consul.port)"), update)
        XCTAssertTrue(update.contains(" service web: 3 server(s) generation="), update)
        for name in ["s1", "s2", "s3"] {
            XCTAssertTrue(update.contains("\(name)@127.0.0.1:\(servers[name]!.port)/w1"), "\(name) missing from \(update)")
        }
        assertRotation(try servedNames(port: port, count: 9, balancer: balancer), of: ["s1", "s2", "s3"])
    }

    /// A client that connects while balancerd waits for Consul's first answer (held here by
    /// a 1 s outage) sits in the listen backlog; it must be answered from the first table,
    /// which is in place before balancerd accepts anything.
    func testClientQueuedDuringStartupIsServedByFirstTable() throws {
        let consul = try startConsul()
        _ = try startRegistered(["s1", "s2"], in: consul)
        try consul.outage("hang", seconds: 1)
        let (balancer, port) = try startBalancer(consulArguments(consul))
        let connection = try connectHTTP(port)
        try connection.send(getRequest())
        let response = try connection.readResponse(timeout: 8)
        XCTAssertNotNil(waitForUpdate(balancer, servers: ["s1", "s2"], timeout: 1), tail(balancer))
        XCTAssertEqual(response.status, 200, "\(response)\n\(tail(balancer))")
        XCTAssertTrue(["s1", "s2"].contains(response.bodyText), response.bodyText)
    }

    /// The same in TCP mode with NameStampServer backends: every connection goes to the next one.
    func testTCPModeServesConsulInstancesInRotation() throws {
        let consul = try startConsul()
        let stamps = try startStampServers(["n1", "n2"])
        for stamp in stamps { try consul.register(id: stamp.name, port: stamp.port) }
        let (balancer, port) = try startBalancer(consulArguments(consul, mode: "tcp", extra: ["--quiet"]))
        XCTAssertNotNil(waitForUpdate(balancer, servers: ["n1", "n2"], timeout: 5), tail(balancer))
        XCTAssertTrue(waitUntil(timeout: 2) { (try? fetchName(port: port)) != nil }, tail(balancer))
        assertRotation(try fetchNames(port: port, count: 6, balancer: balancer), of: ["n1", "n2"])

        try consul.deregister("n1")
        XCTAssertNotNil(waitForUpdate(balancer, servers: ["n2"], timeout: 5), tail(balancer))
        XCTAssertEqual(try fetchNames(port: port, count: 4, balancer: balancer), ["n2", "n2", "n2", "n2"])
    }

    // MARK: 2. registered after the start

    func testInstanceRegisteredAfterStartIsServedQuickly() throws {
        let consul = try startConsul()
        _ = try startRegistered(["s1", "s2"], in: consul)
        let (balancer, port) = try startBalancer(consulArguments(consul))
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)
        assertRotation(try servedNames(port: port, count: 4, balancer: balancer), of: ["s1", "s2"])
        let linesBefore = balancer.lineCount

        let s3 = try startHTTPStampServer("s3")
        try consul.register(id: "s3", port: s3.port)
        let latency = try XCTUnwrap(waitUntilServed("s3", port: port, timeout: 5), "s3 not served within 5 s\n\(tail(balancer))")
        print("consul: register s3 → first response from s3: \(milliseconds(latency)) ms")
        XCTAssertLessThan(latency, 1.0, "a blocking query should see a registration at once")
        XCTAssertNotNil(balancer.waitForLine(containing: "3 server(s)", after: linesBefore, timeout: 1), tail(balancer))
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["s1", "s2", "s3"])
    }

    // MARK: 3. health checks

    func testFailingCheckRemovesServerAndPassingBringsItBack() throws {
        let consul = try startConsul()
        _ = try startRegistered(["s1", "s2"], in: consul)
        let (balancer, port) = try startBalancer(consulArguments(consul))
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)

        try consul.check("fail", instance: "s2")
        let gone = try XCTUnwrap(waitUntilNotServed("s2", port: port, timeout: 5), "s2 still served after its check failed\n\(tail(balancer))")
        print("consul: check of s2 fails → s2 no longer served after \(milliseconds(gone)) ms")
        XCTAssertNotNil(waitForUpdate(balancer, servers: ["s1"], timeout: 1), tail(balancer))
        XCTAssertEqual(try servedNames(port: port, count: 4, balancer: balancer), ["s1", "s1", "s1", "s1"])

        try consul.check("pass", instance: "s2")
        let back = try XCTUnwrap(waitUntilServed("s2", port: port, timeout: 5), "s2 not served again after its check passed\n\(tail(balancer))")
        print("consul: check of s2 passes → s2 served again after \(milliseconds(back)) ms")
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["s1", "s2"])
    }

    // MARK: 4. tag filter

    func testTagFilterServesOnlyTaggedInstances() throws {
        let consul = try startConsul()
        _ = try startRegistered(["blue1"], in: consul, tags: ["blue"])
        _ = try startRegistered(["green1"], in: consul, tags: ["green"])
        _ = try startRegistered(["blue2"], in: consul, tags: ["canary", "blue"])
        let (balancer, port) = try startBalancer(consulArguments(consul, extra: ["--tag", "blue"]))
        try waitForFirstTable(balancer, servers: ["blue1", "blue2"], port: port)
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["blue1", "blue2"])

        // An untagged-for-us registration changes nothing; a tagged one is followed.
        _ = try startRegistered(["green2"], in: consul, tags: ["green"])
        _ = try startRegistered(["blue3"], in: consul, tags: ["blue"])
        XCTAssertNotNil(waitUntilServed("blue3", port: port, timeout: 5), "blue3 not served\n\(tail(balancer))")
        let names = try servedNames(port: port, count: 9, balancer: balancer)
        assertRotation(names, of: ["blue1", "blue2", "blue3"])
        for line in updateLines(balancer) {
            XCTAssertFalse(line.contains("green"), "an instance without the tag reached the table: \(line)")
        }
    }

    // MARK: 5. spurious wake-ups

    func testSpuriousWakeupsChangeNothing() throws {
        let consul = try startConsul()
        _ = try startRegistered(["s1", "s2"], in: consul)
        let (balancer, port) = try startBalancer(consulArguments(consul))
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)
        let updatesBefore = updateLines(balancer).count
        let queriesBefore = try consul.healthQueries()

        for _ in 0..<3 {
            try consul.spuriousWakeup()
            sleepSeconds(0.1)
        }
        // balancerd did wake up and ask again (else this test would prove nothing)…
        XCTAssertTrue(waitUntil(timeout: 3) { ((try? consul.healthQueries()) ?? 0) >= queriesBefore + 3 },
                      "balancerd did not re-query after the wake-ups: \(queriesBefore) → \((try? consul.healthQueries()) ?? -1)")
        sleepSeconds(0.2)
        // …and neither its table nor the traffic changed.
        XCTAssertEqual(updateLines(balancer).count, updatesBefore, "a wake-up with the same data printed a new table:\n\(tail(balancer))")
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["s1", "s2"])
    }

    // MARK: 6. index reset

    func testIndexResetStillFollowsLaterRegistrations() throws {
        let consul = try startConsul()
        _ = try startRegistered(["s1", "s2"], in: consul)
        let (balancer, port) = try startBalancer(consulArguments(consul))
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)
        // Move the index well above where it will be reset to.
        for _ in 0..<5 { try consul.spuriousWakeup() }
        let high = try consul.index()

        try consul.resetIndex(to: 1)
        XCTAssertLessThan(try consul.index(), high)
        sleepSeconds(0.2)   // balancerd sees the lower index
        let s3 = try startHTTPStampServer("s3")
        try consul.register(id: "s3", port: s3.port)
        let latency = try XCTUnwrap(waitUntilServed("s3", port: port, timeout: 5),
                                    "a registration after the index reset was not followed\n\(tail(balancer))")
        print("consul: after an index reset, register s3 → served after \(milliseconds(latency)) ms")
        XCTAssertLessThan(latency, 1.0)

        try consul.deregister("s1")
        XCTAssertNotNil(waitUntilNotServed("s1", port: port, timeout: 5), "s1 still served after deregistration\n\(tail(balancer))")
        assertRotation(try servedNames(port: port, count: 4, balancer: balancer), of: ["s2", "s3"])
    }

    // MARK: 7. outages

    func testOutageWith500KeepsServingLastGoodTable() throws { try checkOutage(mode: "500") }
    func testOutageWithClosedConnectionsKeepsServingLastGoodTable() throws { try checkOutage(mode: "close") }
    func testOutageWithHangingQueriesKeepsServingLastGoodTable() throws { try checkOutage(mode: "hang") }

    /// A 2 s outage of /v1/health: every client request during it still gets 200 from s1
    /// or s2, balancerd says it keeps the last good table, and a registration after the
    /// outage is followed.
    func checkOutage(mode: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let consul = try startConsul()
        _ = try startRegistered(["s1", "s2"], in: consul)
        let (balancer, port) = try startBalancer(consulArguments(consul))
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)
        let updatesBefore = updateLines(balancer).count
        let linesBefore = balancer.lineCount

        let outageSeconds = 2.0
        try consul.outage(mode, seconds: outageSeconds)
        let outageEnd = monotonicSeconds() + outageSeconds
        let traffic = runTraffic(port: port, until: outageEnd + 0.3)
        print("consul outage \(mode): \(traffic.total) requests during the outage, \(traffic.failures.count) failed")
        XCTAssertGreaterThan(traffic.total, 20, "too few requests to say anything", file: file, line: line)
        XCTAssertEqual(traffic.failures, [], "requests failed during the \(mode) outage\n\(tail(balancer))", file: file, line: line)
        XCTAssertEqual(Set(traffic.bodies.keys), ["s1", "s2"], "during the outage: \(traffic.bodies)", file: file, line: line)
        XCTAssertEqual(updateLines(balancer).count, updatesBefore, "the table changed during the outage\n\(tail(balancer))", file: file, line: line)
        // A hanging query ends when the outage does, its connection closed unanswered: the
        // client retries that at once on a fresh connection (a stale keep-alive, as far as
        // it can tell), which succeeds, so there is nothing to report.
        if mode != "hang" {
            XCTAssertNotNil(balancer.waitForLine(after: linesBefore, timeout: 3) { $0.hasPrefix("balancerd: consul: ") && $0.contains("keeping the last good table") },
                            "no 'keeping the last good table' line for the \(mode) outage\n\(tail(balancer))", file: file, line: line)
        }

        let s3 = try startHTTPStampServer("s3")
        try consul.register(id: "s3", port: s3.port)
        let latency = try XCTUnwrap(waitUntilServed("s3", port: port, timeout: 8),
                                    "a registration after the \(mode) outage was not followed\n\(tail(balancer))", file: file, line: line)
        print("consul outage \(mode): register s3 after the outage → served after \(milliseconds(latency)) ms")
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["s1", "s2", "s3"], file: file, line: line)
    }

    // MARK: 8. nothing registered

    func testEverythingDeregisteredGives503() throws {
        let consul = try startConsul()
        _ = try startRegistered(["s1", "s2"], in: consul)
        let (balancer, port) = try startBalancer(consulArguments(consul))
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)

        try consul.deregister("s1")
        try consul.deregister("s2")
        XCTAssertNotNil(waitForUpdate(balancer, servers: [], timeout: 5), "no empty table\n\(tail(balancer))")
        for _ in 0..<3 {
            XCTAssertEqual(try clientRequest(port: port).status, 503, tail(balancer))
        }

        // And back: one registration is enough.
        _ = try startRegistered(["s4"], in: consul)
        XCTAssertNotNil(waitUntilServed("s4", port: port, timeout: 5), tail(balancer))
        XCTAssertEqual(try servedNames(port: port, count: 3, balancer: balancer), ["s4", "s4", "s4"])
    }

    // MARK: 9. ACL token

    static let token = "acl-7f3e9c1d-token"

    func testACLTokenFromFlagIsServed() throws {
        let consul = try startConsul(token: Self.token)
        _ = try startRegistered(["s1", "s2"], in: consul)
        let (balancer, port) = try startBalancer(consulArguments(consul, extra: ["--consul-token", Self.token]))
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)
        assertRotation(try servedNames(port: port, count: 4, balancer: balancer), of: ["s1", "s2"])
        XCTAssertFalse(balancer.outputText.contains(Self.token), "the token was logged:\n\(tail(balancer))")
    }

    func testACLTokenFromEnvironmentIsServed() throws {
        let consul = try startConsul(token: Self.token)
        _ = try startRegistered(["s1", "s2"], in: consul)
        // /usr/bin/env sets the variable and execs balancerd: the pid is balancerd's.
        let balancer = supervise(try BalancerdProcess(arguments: ["CONSUL_HTTP_TOKEN=\(Self.token)", try BalancerdProcess.binaryPath()] + consulArguments(consul),
                                                      binary: "/usr/bin/env"))
        let port = try balancer.port()
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)
        assertRotation(try servedNames(port: port, count: 4, balancer: balancer), of: ["s1", "s2"])
        XCTAssertFalse(balancer.outputText.contains(Self.token), "the token was logged:\n\(tail(balancer))")
    }

    func testACLTokenFromConfigFileIsServed() throws {
        let consul = try startConsul(token: Self.token)
        _ = try startRegistered(["s1", "s2"], in: consul)
        let config = try TempConfigFile("""
            defaults
                mode http
                timeout connect 1s
                timeout client 30s
                timeout server 30s

            listen main
                bind 127.0.0.1:0
                discovery consul \(consul.url) service web token \(Self.token)

            """)
        addTeardownBlock { config.directory.remove() }
        let (balancer, port) = try startBalancer(["--config", config.path, "--threads", "2"])
        try waitForFirstTable(balancer, servers: ["s1", "s2"], port: port)
        assertRotation(try servedNames(port: port, count: 4, balancer: balancer), of: ["s1", "s2"])
    }

    /// Without the token Consul answers 403: balancerd says so and serves nothing (503).
    func testWithoutACLTokenLogsErrorAndServesNothing() throws {
        let consul = try startConsul(token: Self.token)
        _ = try startRegistered(["s1", "s2"], in: consul)
        // Without the environment's token either, should the test runner have one.
        let balancer = supervise(try BalancerdProcess(arguments: ["-u", "CONSUL_HTTP_TOKEN", try BalancerdProcess.binaryPath()] + consulArguments(consul),
                                                      binary: "/usr/bin/env"))
        let port = try balancer.port()
        let error = balancer.waitForLine(timeout: 5) { $0.hasPrefix("balancerd: consul: ") && $0.contains("403") }
        XCTAssertNotNil(error, "no consul error line\n\(tail(balancer))")
        // balancerd waits up to 3 s for a first answer before it accepts.
        XCTAssertEqual(try clientRequest(port: port, timeout: 8).status, 503, tail(balancer))
        XCTAssertEqual(updateLines(balancer).filter { !$0.contains(": 0 server(s)") }, [], "a table without the token?")
    }
}

// MARK: - shared by the discovery integration tests

extension XCTestCase {
    /// An HTTP stamp server (every answer's body is `name`), stopped when the test ends.
    func startHTTPStampServer(_ name: String) throws -> HTTPStampServer {
        let server = try HTTPStampServer(name: name)
        addTeardownBlock { server.stop() }
        return server
    }

    /// `count` requests, each on a fresh connection; every one must be a 200, and the
    /// bodies (server names) are returned in order.
    func servedNames(port: UInt16, count: Int, balancer: BalancerdProcess, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        var names: [String] = []
        for i in 0..<count {
            let response = try clientRequest(port: port)
            guard response.status == 200 else {
                XCTFail("request \(i + 1) of \(count): \(response.status) \(response.body)\n\(tail(balancer))", file: file, line: line)
                throw TestSupportError("request failed")
            }
            names.append(response.body)
        }
        return names
    }
}

/// One `GET /` with `Connection: close` on a fresh connection: the status and trimmed body.
func clientRequest(port: UInt16, timeout: Double = 3) throws -> (status: Int, body: String) {
    let (statusLine, body) = try httpGet(port: port, timeout: timeout)
    let parts = statusLine.split(separator: " ")
    guard parts.count >= 2, let status = Int(parts[1]) else { throw TestSupportError("bad status line: \(statusLine)") }
    return (status, body)
}

/// Requests until one is answered by `name`; the seconds that took, nil after `timeout`.
func waitUntilServed(_ name: String, port: UInt16, timeout: Double) -> Double? {
    let start = monotonicSeconds()
    let served = waitUntil(timeout: timeout) { (try? clientRequest(port: port))?.body == name }
    return served ? monotonicSeconds() - start : nil
}

/// Requests until `window` in a row succeed and none is answered by `name`; the seconds
/// until the first of them, nil after `timeout`.
func waitUntilNotServed(_ name: String, port: UInt16, timeout: Double, window: Int = 6) -> Double? {
    let start = monotonicSeconds()
    var run = 0
    var runStart = start
    let done = waitUntil(timeout: timeout) {
        guard let response = try? clientRequest(port: port), response.status == 200, response.body != name else {
            run = 0
            return false
        }
        if run == 0 { runStart = monotonicSeconds() }
        run += 1
        return run >= window
    }
    return done ? runStart - start : nil
}

/// What continuous client traffic saw.
struct TrafficResult {
    var total = 0
    /// Body → count, for 200 answers.
    var bodies: [String: Int] = [:]
    /// Anything else: a status other than 200, or an error.
    var failures: [String] = []
}

/// Fresh-connection requests back to back until `end` (monotonic seconds).
func runTraffic(port: UInt16, until end: Double) -> TrafficResult {
    var result = TrafficResult()
    while monotonicSeconds() < end {
        result.total += 1
        do {
            let response = try clientRequest(port: port)
            if response.status == 200 {
                result.bodies[response.body, default: 0] += 1
            } else {
                result.failures.append("\(response.status) \(response.body.prefix(60))")
            }
        } catch {
            result.failures.append("\(error)")
        }
        sleepSeconds(0.01)
    }
    return result
}

/// Every `balancerd: backend main updated from …` line so far.
func updateLines(_ balancer: BalancerdProcess) -> [String] {
    balancer.lines.filter { $0.hasPrefix("balancerd: backend main updated from ") }
}

/// The server names of an `updated` line's `servers=NAME@HOST:PORT/wW,…` field.
func serverNames(inUpdate line: String) -> [String] {
    guard let field = line.split(separator: " ").last(where: { $0.hasPrefix("servers=") }) else { return [] }
    return field.dropFirst("servers=".count).split(separator: ",").map { String($0.prefix { $0 != "@" }) }
}

/// Waits for the `updated` line with exactly `names`, then until a request is answered
/// 200 (see testClientQueuedDuringStartupIsServedByFirstTable for why that can lag).
func waitForFirstTable(_ balancer: BalancerdProcess, servers names: [String], port: UInt16,
                       file: StaticString = #filePath, line: UInt = #line) throws {
    guard waitForUpdate(balancer, servers: names, timeout: 5) != nil else {
        XCTFail("no table with \(names)\n\(tail(balancer))", file: file, line: line)
        throw TestSupportError("no table")
    }
    guard waitUntil(timeout: 2, { (try? clientRequest(port: port))?.status == 200 }) else {
        XCTFail("the table with \(names) serves nothing\n\(tail(balancer))", file: file, line: line)
        throw TestSupportError("not served")
    }
}

/// Waits for an `updated` line whose servers are exactly `names` (any order).
func waitForUpdate(_ balancer: BalancerdProcess, servers names: [String], after: Int = 0, timeout: Double) -> String? {
    balancer.waitForLine(after: after, timeout: timeout) {
        $0.hasPrefix("balancerd: backend main updated from ") && Set(serverNames(inUpdate: $0)) == Set(names)
            && $0.contains(": \(names.count) server(s) ")
    }
}

func milliseconds(_ seconds: Double) -> String { String(format: "%.1f", seconds * 1000) }
