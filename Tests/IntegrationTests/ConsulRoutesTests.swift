// Routes from Consul tags with the real binary: services announce `urlprefix-` tags in the
// Consul API test server, balancerd routes by host and path with no file to edit and no
// restart, and three balancerd against one Consul agree on the table they export.

import Foundation
import Glibc
import TestSupport
import XCTest

final class ConsulRoutesTests: XCTestCase {
    private func startConsul() throws -> ConsulTestServerProcess {
        let consul = try ConsulTestServerProcess()
        addTeardownBlock { consul.stop() }
        return consul
    }

    private func stamp(_ name: String) throws -> HTTPStampServer {
        let server = try HTTPStampServer(name: name)
        addTeardownBlock { server.stop() }
        return server
    }

    /// One request on a fresh connection: (status, body).
    private func get(_ port: UInt16, host: String, path: String) throws -> (Int, String) {
        let connection = try HTTPClientConnection(port: port)
        defer { connection.close() }
        try connection.send("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n")
        let response = try connection.readResponse(timeout: 5)
        return (response.status, response.bodyText)
    }

    /// Waits until `host` + `path` answers `body` (or, with nil, a 404).
    private func waitForRoute(_ port: UInt16, host: String, path: String, body: String?, timeout: Double = 5) -> Bool {
        waitUntil(timeout: timeout) {
            guard let (status, text) = try? self.get(port, host: host, path: path) else { return false }
            return body.map { status == 200 && text == $0 } ?? (status == 404)
        }
    }

    private func routesArguments(_ consul: ConsulTestServerProcess, extra: [String] = []) -> [String] {
        ["--listen", "127.0.0.1:0", "--threads", "2", "--consul", consul.url, "--routes-from-tags"] + extra
    }

    /// Routes appear with their tags, requests go by host first and longest prefix, an
    /// unknown route is a 404 in haproxy's format, a service that loses its tag or its last
    /// passing instance loses its route, and nothing restarts.
    func testRoutesFollowTheTagsOfEveryService() throws {
        let consul = try startConsul()
        let api = try stamp("api"), apiV2 = try stamp("api-v2"), site = try stamp("site")
        try consul.register(id: "api-1", name: "api", port: api.port, tags: ["urlprefix-api.example.com/"])
        try consul.register(id: "site-1", name: "site", port: site.port, tags: ["urlprefix-/"])
        let (balancer, port) = try startBalancer(routesArguments(consul))

        XCTAssertTrue(waitForRoute(port, host: "api.example.com", path: "/users", body: "api"), tail(balancer))
        XCTAssertEqual(try get(port, host: "API.Example.COM:8080", path: "/x").1, "api", "host match ignores case and port")
        let hostless = try get(port, host: "www.example.com", path: "/")
        XCTAssertTrue(hostless == (200, "site"), "hostless route: \(hostless)")

        // A second service takes a longer prefix of the same host: it wins there only.
        try consul.register(id: "v2-1", name: "api-v2", port: apiV2.port, tags: ["urlprefix-api.example.com/v2"])
        XCTAssertTrue(waitForRoute(port, host: "api.example.com", path: "/v2/users", body: "api-v2"), tail(balancer))
        XCTAssertEqual(try get(port, host: "api.example.com", path: "/v1/users").1, "api")

        // The hostless route goes: an unknown host is then not found.
        try consul.deregister("site-1")
        XCTAssertTrue(waitForRoute(port, host: "www.example.com", path: "/", body: nil), tail(balancer))
        let connection = try HTTPClientConnection(port: port)
        try connection.send("GET / HTTP/1.1\r\nHost: nowhere\r\nConnection: close\r\n\r\n")
        let notFound = try connection.readResponse(timeout: 5)
        connection.close()
        XCTAssertEqual(notFound.status, 404)
        XCTAssertTrue(notFound.bodyText.contains("<h1>404 Not Found</h1>"), notFound.bodyText)

        // The longer prefix's only instance stops passing: /v2 falls back to the api route.
        try consul.check("fail", instance: "v2-1")
        XCTAssertTrue(waitForRoute(port, host: "api.example.com", path: "/v2/users", body: "api"), tail(balancer))
        XCTAssertFalse(tail(balancer, 200).contains("balancerd: stopping"), "balancerd restarted")
    }

    /// `export-haproxy --consul URL --routes-from-tags`: one snapshot of the routes as ACLs
    /// and use_backend lines that real haproxy accepts.
    func testExportWritesTheRoutesAsUseBackendRules() throws {
        let consul = try startConsul()
        let api = try stamp("api")
        try consul.register(id: "api-1", name: "api", port: api.port, tags: ["urlprefix-api.example.com/v1"])
        let arguments = ["--listen", "127.0.0.1:\(try freePort())", "--consul", consul.url, "--routes-from-tags"]
        let export = try BalancerdProcess.run(["export-haproxy"] + arguments)
        XCTAssertEqual(export.exitCode, 0, export.allText)
        let text = export.stdoutText
        XCTAssertTrue(text.contains("use_backend api if"), text)
        XCTAssertTrue(text.contains("path_beg /v1"), text)
        XCTAssertTrue(text.contains("127.0.0.1:\(api.port)"), text)
        let directory = try TempDirectory()
        defer { directory.remove() }
        let path = try directory.write(text + "\n", to: "export.cfg")
        let check = try HAProxyProcess.check(configPath: path)
        XCTAssertEqual(check.exitCode, 0, check.allText)
    }

    /// Three balancerd against one Consul: after a burst of 50 registrations and
    /// deregistrations, all three export the same routing table at /haproxy.cfg.
    func testThreeInstancesConvergeOnTheSameTable() throws {
        let consul = try startConsul()
        let backends = try (0..<5).map { try stamp("svc\($0)") }
        var balancers: [(BalancerdProcess, UInt16)] = []
        for i in 0..<3 {
            let balancer = supervise(try BalancerdProcess(arguments: routesArguments(consul, extra: ["--stats", "127.0.0.1:0", "--consul-token", "instance-\(i)"]) + ["--quiet"]))
            balancers.append((balancer, try balancer.statsPort()))
        }
        // The burst: 50 changes over 5 services and 10 instance ids, seeded so it repeats.
        var generator = SeededGenerator(seed: 10)
        var registered = Set<String>()
        for _ in 0..<50 {
            let service = Int(generator.next() % 5), slot = Int(generator.next() % 2)
            let id = "svc\(service)-\(slot)"
            if registered.contains(id) && generator.next() % 2 == 0 {
                try consul.deregister(id)
                registered.remove(id)
            } else {
                try consul.register(id: id, name: "svc\(service)", port: backends[service].port,
                                    tags: ["urlprefix-svc\(service).example.com/"])
                registered.insert(id)
            }
        }
        // What every instance must end with: a route per service that still has an instance.
        let expectedServices = Set(registered.map { String($0.prefix { $0 != "-" }) })
        var exports: [String] = []
        let converged = waitUntil(timeout: 15) {
            exports = balancers.compactMap { (balancer, statsPort) in
                try? self.getText(statsPort, "/haproxy.cfg").split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.contains(" bind ") }
                    .joined(separator: "\n")
            }
            guard exports.count == 3, Set(exports).count == 1 else { return false }
            return expectedServices.allSatisfy { exports[0].contains("use_backend \($0) if") }
                && (0..<5).map { "svc\($0)" }.filter { !expectedServices.contains($0) }.allSatisfy { !exports[0].contains("use_backend \($0) if") }
        }
        XCTAssertTrue(converged, "the three exports differ or miss services \(expectedServices.sorted()):\n" + exports.joined(separator: "\n----\n"))
        for (service, server) in backends.enumerated() where expectedServices.contains("svc\(service)") {
            XCTAssertEqual(try get(balancers[0].0.port(frontend: "main"), host: "svc\(service).example.com", path: "/").1, server.name)
        }
    }

    private func getText(_ port: UInt16, _ path: String) throws -> String {
        let connection = try HTTPClientConnection(port: port)
        defer { connection.close() }
        try connection.send("GET \(path) HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n\r\n")
        let response = try connection.readResponse(timeout: 5)
        guard response.status == 200 else { throw TestSupportError("GET \(path): \(response.status)") }
        return response.bodyText
    }
}
