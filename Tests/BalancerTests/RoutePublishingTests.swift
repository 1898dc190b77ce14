// publishRoutes end to end, in this process: a real Proxy on loopback in front of
// name-stamping HTTP servers. Routes appear (with a backend created for their service),
// move to other servers, and disappear; a request in flight keeps its server; stats list
// the new backend; the live export routes like balancerd, checked on the real haproxy.
import Foundation
import Glibc
import TestSupport
import XCTest
@testable import Balancer

final class RoutePublishingTests: XCTestCase {
    private func servers(_ names: [String]) throws -> [HTTPTestServer] {
        try names.map { name in
            let server = try HTTPTestServer(name: name)
            addTeardownBlock { server.stop() }
            return server
        }
    }

    private func config(_ server: HTTPTestServer) -> ServerConfig {
        ServerConfig(name: server.name, address: HostPort(host: "127.0.0.1", port: server.port))
    }

    /// The name of the server that answered `GET path` with `Host: host` (or `<status>`).
    private func pick(_ port: UInt16, host: String, path: String) throws -> String {
        let connection = try HTTPClientConnection(port: port)
        defer { connection.close() }
        try connection.send("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n")
        let response = try connection.readResponse(timeout: 5)
        return response.status == 200 ? response.bodyText : "<\(response.status)>"
    }

    func testRoutesAppearMoveAndDisappear() throws {
        let s = try servers(["web", "a1", "a2", "d1"])
        let port = try freePort()
        let configuration = Configuration(
            frontends: [Frontend(name: "main", binds: [HostPort(host: "127.0.0.1", port: port)], mode: .http, defaultBackend: "web")],
            backends: [BackendConfig(name: "web", mode: .http, servers: [config(s[0])])])
        let proxy = try Proxy(configuration: configuration, options: ProxyOptions(threads: 2, quiet: true))
        addTeardownBlock { proxy.shutdown(grace: .zero) }
        proxy.start()
        XCTAssertEqual(try pick(port, host: "api.test", path: "/v1/x"), "web")

        // Appear: two services, one by host and path, one by path only.
        let first = RouteSet(routes: [
            ServiceRoute(host: "api.test", pathPrefix: "/v1", service: "api"),
            ServiceRoute(host: nil, pathPrefix: "/docs", service: "docs", strip: "/docs"),
            ServiceRoute(host: "ghost.test", pathPrefix: "/", service: "ghost"),   // no servers: no route
        ], services: ["api": BackendSet(servers: [config(s[1])]), "docs": BackendSet(servers: [config(s[3])])])
        try proxy.publishRoutes(first, frontend: "main")
        XCTAssertEqual(try pick(port, host: "api.test", path: "/v1/x"), "a1")
        XCTAssertEqual(try pick(port, host: "API.test:80", path: "/v1"), "a1")
        XCTAssertEqual(try pick(port, host: "api.test", path: "/v2"), "web")
        XCTAssertEqual(try pick(port, host: "other.test", path: "/docs/intro"), "d1")
        XCTAssertEqual(s[3].completeRequests.last?.target, "/intro", "strip=/docs")
        XCTAssertEqual(try pick(port, host: "ghost.test", path: "/"), "web")
        let names = proxy.statsSnapshot(version: "test").backends.map(\.name)
        XCTAssertEqual(names, ["web", "api", "docs"])
        XCTAssertEqual(proxy.routes(frontend: "main").map(\.service), ["api", "docs"])

        // The live export: haproxy -c accepts it, and haproxy running it routes the same.
        let directory = try TempDirectory(prefix: "balancerd-routes")
        addTeardownBlock { directory.remove() }
        let haproxyPort = try freePort()
        var live = proxy.liveConfiguration()
        live.global.maxConnections = 2000
        live.frontends[0].binds = [HostPort(host: "127.0.0.1", port: haproxyPort)]
        let text = HAProxyWriter.write(live)
        XCTAssertTrue(text.contains("use_backend api if { hdr(host) -i api.test api.test. } { path_beg /v1 } || { hdr_beg(host) -i api.test: api.test.: } { path_beg /v1 }"), text)
        let path = try directory.write(text, to: "live.cfg")
        let check = try HAProxyProcess.check(configPath: path)
        XCTAssertEqual(check.exitCode, 0, check.allText + "\n" + text)
        let haproxy = try HAProxyProcess(configPath: path, port: haproxyPort)
        addTeardownBlock { haproxy.stop() }
        for (host, path) in [("api.test", "/v1/x"), ("API.TEST.:8080", "/v1"), ("api.test", "/v"), ("x.test", "/docs"), ("x.test", "/doc")] {
            // strip= is not exported, so compare who answered, not the target.
            XCTAssertEqual(try pick(haproxyPort, host: host, path: path), try pick(port, host: host, path: path), "\(host)\(path)\n\(text)")
        }

        // Move: api's servers change. A request already on a1 finishes on a1.
        let slow = try HTTPClientConnection(port: port)
        defer { slow.close() }
        try slow.send("GET /v1/slow?delay=600 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        XCTAssertTrue(waitUntil(timeout: 5) { s[1].receivedHeads.contains { $0.contains("/v1/slow") } })
        var moved = first
        moved.services["api"] = BackendSet(servers: [config(s[2])])
        try proxy.publishRoutes(moved, frontend: "main")
        XCTAssertEqual(try pick(port, host: "api.test", path: "/v1/x"), "a2")
        let slowResponse = try slow.readResponse(timeout: 5)
        XCTAssertEqual(slowResponse.bodyText, "a1", "the request in flight kept its server")

        // Disappear: api's route goes; its backend stays, empty.
        try proxy.publishRoutes(RouteSet(routes: [first.routes[1]], services: ["docs": first.services["docs"]!]), frontend: "main")
        XCTAssertEqual(try pick(port, host: "api.test", path: "/v1/x"), "web")
        XCTAssertEqual(try pick(port, host: "api.test", path: "/docs/a"), "d1")
        let api = proxy.statsSnapshot(version: "test").backends.first { $0.name == "api" }
        XCTAssertEqual(api?.servers.count, 0)
        XCTAssertFalse(HAProxyWriter.write(proxy.liveConfiguration()).contains("use_backend api"))
    }

    func testATCPFrontendRefusesRoutes() throws {
        let configuration = Configuration(
            frontends: [Frontend(name: "main", binds: [HostPort(host: "127.0.0.1", port: 0)], mode: .tcp, defaultBackend: "b")],
            backends: [BackendConfig(name: "b", mode: .tcp)])
        let proxy = try Proxy(configuration: configuration, options: ProxyOptions(threads: 1, quiet: true))
        addTeardownBlock { proxy.shutdown(grace: .zero) }
        XCTAssertThrowsError(try proxy.publishRoutes(RouteSet(), frontend: "main"))
        XCTAssertThrowsError(try proxy.publishRoutes(RouteSet(), frontend: "nope"))
    }
}
