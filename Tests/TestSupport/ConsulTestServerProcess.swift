// The Consul API test server (Tests/ConsulTestServer/consul_test_server.py) as a child
// process of the integration tests, and the one-shot HTTP request that drives it (and
// etcd's JSON gateway). TestSupport does not depend on the Discovery module, so the request
// is written on a raw socket here and read with HTTPClientConnection's RFC 9112 framing.
// Only the pid we spawned is ever signalled.

import Foundation
import Glibc

/// One HTTP/1.1 request on a fresh connection with `Connection: close`; returns the whole
/// response. Throws if the connection fails or the response does not arrive in `timeout`.
public func sendHTTPRequest(port: UInt16, method: String, target: String, headers: [(name: String, value: String)] = [],
                            body: [UInt8] = [], timeout: Double = 10) throws -> HTTPResponse {
    let connection = try HTTPClientConnection(port: port, connectTimeout: timeout)
    defer { connection.close() }
    var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
    for header in headers { head += "\(header.name): \(header.value)\r\n" }
    if !body.isEmpty || method == "POST" || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
    head += "\r\n"
    try connection.send(Array(head.utf8) + body)
    return try connection.readResponse(method: method, timeout: timeout)
}

/// A JSON object as bytes, for request bodies.
public func jsonBytes(_ object: [String: Any]) throws -> [UInt8] {
    Array(try JSONSerialization.data(withJSONObject: object))
}

/// A response body parsed as a JSON object; throws (with the body) if it is not one.
public func jsonObject(_ response: HTTPResponse) throws -> [String: Any] {
    guard let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] else {
        throw TestSupportError("not a JSON object: \(response)")
    }
    return object
}

/// The Python Consul test server, listening on 127.0.0.1:<port it picked>.
public final class ConsulTestServerProcess: @unchecked Sendable {
    public let port: UInt16
    /// The ACL token the server was started with (sent on every /v1/ request made here).
    public let token: String?
    private let child: ChildProcess

    public var url: String { "http://127.0.0.1:\(port)" }

    /// …/Tests/TestSupport/ConsulTestServerProcess.swift → …/Tests/ConsulTestServer/consul_test_server.py
    public static var scriptPath: String {
        let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        return tests.appendingPathComponent("ConsulTestServer/consul_test_server.py").path
    }

    /// Starts the server and waits for its one startup line,
    /// `consul-test-server listening on 127.0.0.1:PORT`.
    public init(token: String? = nil, dc: String = "dc1") throws {
        var arguments = ["python3", Self.scriptPath, "--port", "0", "--dc", dc]
        if let token { arguments += ["--token", token] }
        self.token = token
        // /usr/bin/env finds python3 on PATH (a pyenv shim or /usr/bin) and execs it, so
        // the pid we hold is the server's own.
        let child = try ChildProcess(executable: "/usr/bin/env", arguments: arguments)
        self.child = child
        port = try child.announcedPort(after: "consul-test-server listening on 127.0.0.1:", server: "the Consul test server")
    }

    /// Everything the server printed, for failure messages.
    public var outputText: String { child.output.lines().joined(separator: "\n") }

    /// SIGTERM to our pid (SIGKILL after 2 s).
    public func stop() { child.stop(signal: SIGTERM, timeout: 2) }

    deinit { stop() }

    /// A request to the server; throws unless the answer has status `expect`.
    @discardableResult
    public func request(_ method: String, _ target: String, json: [String: Any]? = nil, expect: Int = 200) throws -> HTTPResponse {
        var headers: [(name: String, value: String)] = []
        if let token, target.hasPrefix("/v1/") { headers.append(("X-Consul-Token", token)) }
        let body = try json.map(jsonBytes) ?? []
        if !body.isEmpty { headers.append(("Content-Type", "application/json")) }
        let response = try sendHTTPRequest(port: port, method: method, target: target, headers: headers, body: body)
        guard response.status == expect else {
            throw TestSupportError("consul test server: \(method) \(target): \(response)")
        }
        return response
    }

    /// Registers instance `id` of service `name` at address:port. With `ttl`, it gets a TTL
    /// check (check ID `service:<id>`) that starts in `status`.
    public func register(id: String, name: String = "web", address: String = "127.0.0.1", port: UInt16,
                         tags: [String] = [], ttl: String? = "1h", status: String = "passing") throws {
        var body: [String: Any] = ["ID": id, "Name": name, "Address": address, "Port": Int(port), "Tags": tags]
        if let ttl { body["Check"] = ["TTL": ttl, "Status": status] }
        try request("PUT", "/v1/agent/service/register", json: body)
    }

    public func deregister(_ id: String) throws { try request("PUT", "/v1/agent/service/deregister/\(id)") }

    /// `verb` is pass, warn or fail; the check is the instance's TTL check.
    public func check(_ verb: String, instance id: String) throws { try request("PUT", "/v1/agent/check/\(verb)/service:\(id)") }

    public func spuriousWakeup(service: String = "web") throws { try request("PUT", "/test/spurious-wakeup?service=\(service)") }
    public func resetIndex(to index: Int) throws { try request("PUT", "/test/reset-index?to=\(index)") }
    /// `mode` is 500, close or hang; seconds 0 ends an outage.
    public func outage(_ mode: String, seconds: Double) throws { try request("PUT", "/test/outage?mode=\(mode)&seconds=\(seconds)") }

    /// `?stale` reads freeze and report `agoMilliseconds` + the time since as
    /// X-Consul-LastContact (`lost`), or follow the leader again.
    public func followerLosesContact(agoMilliseconds: Int, knownLeader: Bool = true) throws {
        try request("PUT", "/test/follower?contact=lost&ago=\(agoMilliseconds)&known-leader=\(knownLeader)")
    }
    public func followerRegainsContact() throws { try request("PUT", "/test/follower?contact=ok") }

    /// `/test/requests`: Total, Stale, ByPath {path: n}, ByClient {token or "anonymous": n}.
    public func requests() throws -> [String: Any] { try jsonObject(try request("GET", "/test/requests")) }

    /// `/test/stats`: HealthQueries, BlockingQueries, CatalogQueries, Index, Outage.
    public func stats() throws -> [String: Any] { try jsonObject(try request("GET", "/test/stats")) }

    /// How many /v1/health/ queries the server has answered or is holding.
    public func healthQueries() throws -> Int { (try stats()["HealthQueries"] as? NSNumber)?.intValue ?? -1 }

    /// The current global index.
    public func index() throws -> Int { (try stats()["Index"] as? NSNumber)?.intValue ?? -1 }
}
