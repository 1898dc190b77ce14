// ACL routing on the real binary, and the same file on the real haproxy: one config with
// host, path, method and src ACLs, `||`, `!`, `unless`, redirects, deny, replace-path and
// set/del-header, in front of name-stamping backends (one per backend, named after it).
// A corpus of requests goes to both; every answer (the backend's name, or the status and
// Location) and what the backend received (its target, X-Routed, X-Drop) must agree.

import Foundation
import Glibc
import TestSupport
import XCTest

final class RoutingParityTests: XCTestCase {
    static let backends = ["web", "api", "admin", "static", "shop", "v1", "upload"]

    static func config(servers: [HTTPTestServer]) -> String {
        var text = #"""
            global
                maxconn 2000

            defaults
                mode http
                timeout connect 1s
                timeout client 10s
                timeout server 10s

            frontend main
                bind {bind}
                acl host_api hdr(host) -i api.example.com
                acl host_api req.hdr(host) -i api.example.com:8080
                acl api_path path_beg /api
                acl is_post method POST
                acl local src 127.0.0.0/8 ::1
                acl static path_end .css .js
                acl admin path_dir admin
                acl shop hdr_dom(host) -i shop
                acl v1 path -i /v1
                acl beg_www hdr_beg(host) -i www.
                acl end_io hdr_end(host) -i .io
                http-request deny if { path_beg /secret }
                http-request deny deny_status 404 if { path /gone }
                http-request redirect location /new code 301 if { path /old }
                http-request redirect prefix https://new.example.com if { hdr(host) -i old.example.com }
                http-request redirect scheme https code 308 if { path_beg /tls } !{ ssl_fc }
                http-request set-header X-Routed yes if api_path
                http-request del-header X-Drop
                http-request replace-path ^/api(/.*)?$ \1 if api_path
                use_backend api if host_api || { hdr(host) -i api.internal }
                use_backend admin if admin local
                use_backend static if static !is_post
                use_backend shop if shop || beg_www end_io
                use_backend v1 if v1
                use_backend upload unless !is_post
                default_backend web

            """#
        for server in servers {
            text += "\nbackend \(server.name)\n    server \(server.name) \(server.address)\n"
        }
        return text
    }

    static let hosts = [
        "api.example.com", "API.Example.COM", "api.example.com:8080", "api.example.com.", "api.example.com:9090",
        "api.internal", "shop.example.com", "www.shop.io:80", "www.other.io", "old.example.com", "other.test",
        "x.shop", "www.example.com",
    ]
    static let paths = [
        "/", "/api", "/api/users?x=1", "/apix", "/a/../api/x", "/api%2Fx", "/admin/x", "/x/admin", "/x/admins",
        "/style.css", "/style.css?v=1", "/v1", "/V1", "/v1?q", "/secret/a", "/gone", "/old", "/old?q=2",
        "/static/../admin/", "/tls/x?y", "/%61pi/x",
    ]

    /// The corpus: every path on a few hosts, every host on a few paths, and some POSTs.
    static var corpus: [(method: String, host: String, path: String)] {
        var requests: [(String, String, String)] = []
        for path in paths {
            for host in ["api.example.com:8080", "www.shop.io:80", "other.test"] { requests.append(("GET", host, path)) }
        }
        for host in hosts {
            for path in ["/", "/api/v", "/x.js"] { requests.append(("GET", host, path)) }
        }
        for (host, path) in [("other.test", "/"), ("other.test", "/x.css"), ("api.example.com", "/"), ("other.test", "/api/up")] {
            requests.append(("POST", host, path))
        }
        return requests
    }

    /// What a client and the backend saw: the backend's name (or the status and Location),
    /// and the target, X-Routed and X-Drop the backend received.
    private func outcome(port: UInt16, servers: [HTTPTestServer], _ request: (method: String, host: String, path: String)) throws -> String {
        let before = servers.map(\.completeRequests.count)
        let connection = try HTTPClientConnection(port: port)
        defer { connection.close() }
        let body = request.method == "POST" ? "Content-Length: 0\r\n" : ""
        try connection.send("\(request.method) \(request.path) HTTP/1.1\r\nHost: \(request.host)\r\nX-Drop: 1\r\n\(body)Connection: close\r\n\r\n")
        let response = try connection.readResponse(method: request.method, timeout: 5)
        guard response.status == 200 else {
            return "<\(response.status)> \(response.header("location") ?? "")"
        }
        // The backend that answered is the one whose record grew.
        var seen = "?"
        for (i, server) in servers.enumerated() where server.completeRequests.count > before[i] {
            let received = server.completeRequests.last!
            seen = "target \(received.target) routed \(received.header("x-routed") ?? "-") drop \(received.header("x-drop") ?? "-")"
        }
        return "\(response.bodyText) \(seen)"
    }

    func testCorpusPicksTheSameBackendAsHAProxy() throws {
        let servers = try startHTTPServers(Self.backends)
        let config = Self.config(servers: servers)
        let directory = try TempDirectory(prefix: "balancerd-routing")
        addTeardownBlock { directory.remove() }
        let port = try freePort()
        let haproxyInput = try directory.write(config.replacingOccurrences(of: "{bind}", with: "127.0.0.1:\(port)"), to: "in.cfg")
        let balancerInput = try directory.write(config.replacingOccurrences(of: "{bind}", with: "127.0.0.1:0"), to: "b.cfg")
        // haproxy runs balancerd's export of the file, so the export is tested too.
        let export = try BalancerdProcess.run(["export-haproxy", "--config", haproxyInput])
        XCTAssertEqual(export.exitCode, 0, export.allText)
        XCTAssertTrue(export.stdoutText.contains("use_backend upload unless !is_post"), export.stdoutText)
        let exported = try directory.write(export.stdoutText + "\n", to: "haproxy.cfg")
        let check = try HAProxyProcess.check(configPath: exported)
        XCTAssertEqual(check.exitCode, 0, "haproxy -c rejects the export:\n\(check.allText)\n\(export.stdoutText)")
        let haproxy = try HAProxyProcess(configPath: exported, port: port)
        addTeardownBlock { haproxy.stop() }
        let (balancer, balancerPort) = try startBalancer(["--quiet", "--config", balancerInput])

        let corpus = Self.corpus
        XCTAssertGreaterThanOrEqual(corpus.count, 60)
        var differences: [String] = []
        var picks: [String: String] = [:]
        for request in corpus {
            let h = try outcome(port: port, servers: servers, request)
            let b = try outcome(port: balancerPort, servers: servers, request)
            picks["\(request.method) \(request.host) \(request.path)"] = b
            if h != b { differences.append("\(request.method) \(request.host) \(request.path)\n  haproxy   \(h)\n  balancerd \(b)") }
        }
        XCTAssertEqual(differences, [], "balancerd and haproxy disagree:\n\(differences.joined(separator: "\n"))\n\(tail(balancer))")

        // And the routing is the one the file asks for (so agreeing is not agreeing on nothing).
        XCTAssertEqual(picks["GET api.example.com:8080 /"], "api target / routed - drop -")
        XCTAssertEqual(picks["GET api.example.com:8080 /api/users?x=1"], "api target /users?x=1 routed yes drop -")
        // `^/api(/.*)?$ \1` leaves nothing of `/api`: haproxy 2.6 sends an empty target,
        // and so does balancerd (PARITY.md, Routing).
        XCTAssertEqual(picks["GET other.test /api"], "web target  routed yes drop -")
        XCTAssertEqual(picks["GET other.test /admin/x"], "admin target /admin/x routed - drop -")
        XCTAssertEqual(picks["GET other.test /x/admins"], "web target /x/admins routed - drop -")
        XCTAssertEqual(picks["GET other.test /style.css?v=1"], "static target /style.css?v=1 routed - drop -")
        XCTAssertEqual(picks["POST other.test /x.css"], "upload target /x.css routed - drop -")
        XCTAssertEqual(picks["GET www.shop.io:80 /"], "shop target / routed - drop -")
        XCTAssertEqual(picks["GET other.test /V1"], "v1 target /V1 routed - drop -")
        XCTAssertEqual(picks["GET other.test /secret/a"], "<403> ")
        XCTAssertEqual(picks["GET other.test /gone"], "<404> ")
        XCTAssertEqual(picks["GET other.test /old"], "<301> /new")
        XCTAssertEqual(picks["GET old.example.com /"], "<302> https://new.example.com/")
        XCTAssertEqual(picks["GET other.test /tls/x?y"], "<308> https://other.test/tls/x?y")
        XCTAssertEqual(picks["GET api.example.com:9090 /"], "web target / routed - drop -")
    }
}
