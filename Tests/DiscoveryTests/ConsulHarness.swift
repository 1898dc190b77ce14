// The Consul test server (Tests/ConsulTestServer/consul_test_server.py) as a child process,
// and a ConsulSource running on a thread of its own with every published set recorded.
import Balancer
import Discovery
import Foundation
import TestSupport

/// The Python Consul test server. TestSupport's process wrapper (`BalancerdProcess`, run
/// with `python3` as its binary) captures its output and signals only its pid.
final class ConsulTestServer: @unchecked Sendable {
    let process: BalancerdProcess
    let port: UInt16
    let token: String?
    var url: String { "http://127.0.0.1:\(port)" }

    static var scriptPath: String {
        // …/Tests/DiscoveryTests/ConsulHarness.swift → …/Tests/ConsulTestServer/consul_test_server.py
        let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        return tests.appendingPathComponent("ConsulTestServer/consul_test_server.py").path
    }

    init(token: String? = nil, dc: String = "dc1", nodeAddress: String? = nil) throws {
        var arguments = ["python3", Self.scriptPath, "--port", "0", "--dc", dc]
        if let token { arguments += ["--token", token] }
        if let nodeAddress { arguments += ["--node-address", nodeAddress] }
        self.token = token
        // /usr/bin/env finds python3 on PATH (a pyenv shim or /usr/bin) and execs it, so
        // the pid is the server's.
        process = try BalancerdProcess(arguments: arguments, binary: "/usr/bin/env")
        let prefix = "consul-test-server listening on 127.0.0.1:"
        guard let line = process.waitForLine(containing: prefix, timeout: 10),
              let port = UInt16(line.dropFirst(prefix.count)) else {
            process.kill()
            throw TestSupportError("the Consul test server did not start:\n\(process.outputText)")
        }
        self.port = port
    }

    deinit { process.stop(timeout: 2) }

    /// A control-plane request to the server; fails the caller on a non-200 answer.
    @discardableResult
    func request(_ method: String, _ target: String, json: Any? = nil, expect: Int = 200) throws -> Discovery.HTTPResponse {
        let client = HTTPClient(url: HTTPURL(host: "127.0.0.1", port: port))
        var headers: [(name: String, value: String)] = []
        if let token, target.hasPrefix("/v1/") { headers.append(("X-Consul-Token", token)) }
        var body: [UInt8] = []
        if let json { body = Array(try JSONSerialization.data(withJSONObject: json)) }
        let response = try client.send(HTTPRequest(method: method, target: target, headers: headers, body: body), timeout: .seconds(10))
        guard response.status == expect else {
            throw TestSupportError("\(method) \(target): HTTP \(response.status) \(response.bodyText)")
        }
        return response
    }

    /// Registers an instance on node1. `status` nil leaves the TTL check at Consul's initial
    /// `critical`; `ttl` nil registers no check at all.
    func register(id: String, name: String = "web", port: Int, address: String = "", tags: [String] = [],
                  weight: Int? = nil, ttl: String? = "1h", status: String? = "passing") throws {
        var body: [String: Any] = ["ID": id, "Name": name, "Port": port, "Address": address, "Tags": tags]
        if let weight { body["Weights"] = ["Passing": weight, "Warning": 1] }
        if let ttl {
            var check: [String: Any] = ["TTL": ttl]
            if let status { check["Status"] = status }
            body["Check"] = check
        }
        try request("PUT", "/v1/agent/service/register", json: body)
    }

    func deregister(_ id: String) throws { try request("PUT", "/v1/agent/service/deregister/\(id)") }
    func check(_ verb: String, _ id: String) throws { try request("PUT", "/v1/agent/check/\(verb)/service:\(id)") }
    func spuriousWakeup(_ service: String = "web") throws { try request("PUT", "/test/spurious-wakeup?service=\(service)") }
    func resetIndex(to index: Int) throws { try request("PUT", "/test/reset-index?to=\(index)") }
    func outage(_ mode: String, seconds: Double) throws { try request("PUT", "/test/outage?mode=\(mode)&seconds=\(seconds)") }
    func nodeCheck(_ status: String) throws { try request("PUT", "/test/node-check?status=\(status)") }
    /// The follower that `?stale` reads reach loses contact with the leader (its answers
    /// freeze, X-Consul-LastContact = `agoMilliseconds` + the time since), or regains it.
    func followerLosesContact(agoMilliseconds: Int, knownLeader: Bool = true) throws {
        try request("PUT", "/test/follower?contact=lost&ago=\(agoMilliseconds)&known-leader=\(knownLeader)")
    }
    func followerRegainsContact() throws { try request("PUT", "/test/follower?contact=ok") }

    struct Requests: Decodable {
        var Total: Int
        var Stale: Int
        var ByPath: [String: Int]
        var ByClient: [String: Int]
    }

    /// Every /v1/ request the server counted, by path and by client token.
    func requests() throws -> Requests {
        try JSONDecoder().decode(Requests.self, from: Data(try request("GET", "/test/requests").body))
    }

    struct Stats: Decodable {
        var HealthQueries: Int
        var BlockingQueries: Int
        var Index: Int
    }

    func stats() throws -> Stats {
        try JSONDecoder().decode(Stats.self, from: Data(try request("GET", "/test/stats").body))
    }

    /// `GET /v1/health/service/...` as a plain client sees it.
    func health(_ query: String) throws -> Discovery.HTTPResponse {
        let client = HTTPClient(url: HTTPURL(host: "127.0.0.1", port: port))
        var headers: [(name: String, value: String)] = []
        if let token { headers.append(("X-Consul-Token", token)) }
        return try client.get("/v1/health/service/\(query)", headers: headers, timeout: .seconds(30))
    }
}

/// Every set a source published, with its arrival time, and every log line.
final class Published: @unchecked Sendable {
    private let condition = NSCondition()
    private var entries: [(time: Double, set: BackendSet)] = []
    private var logLines: [String] = []

    func add(_ set: BackendSet) {
        condition.lock()
        entries.append((monotonicSeconds(), set))
        condition.broadcast()
        condition.unlock()
    }

    func log(_ line: String) {
        condition.lock()
        logLines.append(line)
        condition.broadcast()
        condition.unlock()
    }

    var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return entries.count
    }

    var sets: [BackendSet] {
        condition.lock()
        defer { condition.unlock() }
        return entries.map(\.set)
    }

    var lines: [String] {
        condition.lock()
        defer { condition.unlock() }
        return logLines
    }

    /// The first set published at position >= `after` that satisfies `predicate`, with the
    /// time it arrived; nil after `timeout`.
    func wait(after: Int = 0, timeout: Double = 5, _ predicate: (BackendSet) -> Bool) -> (index: Int, time: Double, set: BackendSet)? {
        let deadline = Deadline(secondsFromNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        var next = after
        while true {
            while next < entries.count {
                if predicate(entries[next].set) { return (next, entries[next].time, entries[next].set) }
                next += 1
            }
            if deadline.hasPassed { return nil }
            _ = condition.wait(until: Date(timeIntervalSinceNow: min(deadline.remainingSeconds, 0.05)))
        }
    }

    func waitForLog(timeout: Double = 5, _ predicate: (String) -> Bool) -> String? {
        let deadline = Deadline(secondsFromNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let line = logLines.first(where: predicate) { return line }
            if deadline.hasPassed { return nil }
            _ = condition.wait(until: Date(timeIntervalSinceNow: min(deadline.remainingSeconds, 0.05)))
        }
    }
}

/// A ConsulSource running on its own thread.
final class RunningSource {
    let source: ConsulSource
    let published = Published()
    private let thread: JoinableThread

    init(server: ConsulTestServer, service: String = "web", tag: String? = nil, datacenter: String? = nil,
         token: String? = nil, wait: Duration = .seconds(3), configure: (inout ConsulSource.Options) -> Void = { _ in }) throws {
        var options = ConsulSource.Options(url: server.url, service: service, tag: tag, datacenter: datacenter, token: token)
        options.wait = wait
        options.timeoutMargin = .milliseconds(700)
        let published = self.published
        options.log = { published.log($0) }
        configure(&options)
        let source = try ConsulSource(options: options)
        self.source = source
        thread = JoinableThread(name: "ts-consul") {
            source.run { published.add($0) }
        }
    }

    /// Stops the source; returns how long `run` took to return.
    @discardableResult
    func stop() -> Double {
        let start = monotonicSeconds()
        source.stop()
        thread.join()
        return monotonicSeconds() - start
    }

    deinit { stop() }
}

/// A RoutePublisher that records every set, as the proxy would receive them.
final class RecordingPublisher: RoutePublisher, @unchecked Sendable {
    private let condition = NSCondition()
    private var entries: [(frontend: String, set: RouteSet)] = []

    func publishRoutes(_ set: RouteSet, frontend: String) throws {
        condition.lock()
        entries.append((frontend, set))
        condition.broadcast()
        condition.unlock()
    }

    var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return entries.count
    }

    var sets: [RouteSet] {
        condition.lock()
        defer { condition.unlock() }
        return entries.map(\.set)
    }

    var last: RouteSet? { sets.last }

    /// The first set published at position >= `after` that satisfies `predicate`.
    func wait(after: Int = 0, timeout: Double = 5, _ predicate: (RouteSet) -> Bool) -> (index: Int, set: RouteSet)? {
        let deadline = Deadline(secondsFromNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        var next = after
        while true {
            while next < entries.count {
                if predicate(entries[next].set) { return (next, entries[next].set) }
                next += 1
            }
            if deadline.hasPassed { return nil }
            _ = condition.wait(until: Date(timeIntervalSinceNow: min(deadline.remainingSeconds, 0.05)))
        }
    }
}

/// A ConsulRoutes source running on its own thread, publishing into a RecordingPublisher.
final class RunningRoutes {
    let source: ConsulRoutes
    let publisher = RecordingPublisher()
    let logs = Published()
    private let thread: JoinableThread

    init(server: ConsulTestServer, token: String? = nil, wait: Duration = .seconds(3),
         configure: (inout ConsulRoutes.Options) -> Void = { _ in }) throws {
        var options = ConsulRoutes.Options(url: server.url, token: token ?? server.token)
        options.wait = wait
        options.timeoutMargin = .milliseconds(700)
        let logs = self.logs
        options.log = { logs.log($0) }
        configure(&options)
        let source = try ConsulRoutes(options: options)
        self.source = source
        let publisher = self.publisher
        thread = JoinableThread(name: "ts-routes") {
            source.run(publish: { try? publisher.publishRoutes($0, frontend: "main") })
        }
    }

    @discardableResult
    func stop() -> Double {
        let start = monotonicSeconds()
        source.stop()
        thread.join()
        return monotonicSeconds() - start
    }

    deinit { stop() }
}

extension RouteSet {
    /// `host/path→backend` for each route, in the set's order: short to compare and print.
    var table: [String] { routes.map { "\($0.host ?? "")\($0.pathPrefix)→\($0.service)" } }
    /// Backend → its servers' addresses.
    var addresses: [String: [String]] { services.mapValues { $0.servers.map(\.address.description) } }
}

extension BackendSet {
    var names: [String] { servers.map(\.name) }
    var addresses: [String] { servers.map(\.address.description) }
}
