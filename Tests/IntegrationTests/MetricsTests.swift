// /metrics and /;csv of the real binary: exact counts after known traffic, and parity with
// haproxy's own Prometheus exporter (Debian's haproxy 2.6) on the exported configuration,
// with the same traffic against the same nginx backends.

import Foundation
import TestSupport
import XCTest

final class MetricsTests: XCTestCase {
    private func startNginx(_ names: [String]) throws -> [NginxServer] {
        try names.map { name in
            let server = try NginxServer(name: name)
            addTeardownBlock { server.stop() }
            return server
        }
    }

    /// A plain HTTP/1.1 GET with `Connection: close`; returns the status code and how many
    /// bytes were sent and received.
    private func get(port: UInt16, path: String) throws -> (status: Int, sent: Int, received: Int) {
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        let client = try TCPClient(port: port, connectTimeout: 5)
        defer { client.close() }
        try client.send(request)
        let response = try client.readAll(timeout: 5)
        let statusLine = String(decoding: response.prefix(12), as: UTF8.self)
        guard let code = Int(statusLine.dropFirst(9).prefix(3)) else { throw TestSupportError("no status in \(statusLine)") }
        return (code, request.utf8.count, response.count)
    }

    /// GET /metrics, read with a client that understands chunked bodies (haproxy's
    /// exporter streams its answer).
    private func metrics(port: UInt16) throws -> PrometheusText {
        let connection = try HTTPClientConnection(port: port)
        defer { connection.close() }
        try connection.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        let response = try connection.readResponse(timeout: 5)
        guard response.status == 200 else { throw TestSupportError("/metrics answered \(response.status)") }
        return try PrometheusText(response.bodyText)
    }

    func testMetricsCountExactlyWhatWasSent() throws {
        let servers = try startNginx(["n1", "n2"])
        let (balancer, port) = try startBalancer(["--listen", "127.0.0.1:0", "--mode", "http", "--threads", "1",
                                                  "--server", servers[0].address, "--server", "\(servers[1].address),weight=3",
                                                  "--stats", "127.0.0.1:0", "--quiet"])
        let statsPort = try balancer.statsPort()

        // 8 requests: 4 answered 200 and 4 answered 404; with weights 1 and 3, s1 gets 2.
        var sent = 0, received = 0
        for path in ["/", "/", "/", "/", "/nope", "/nope", "/nope", "/nope"] {
            let result = try get(port: port, path: path)
            XCTAssertEqual(result.status, path == "/" ? 200 : 404)
            sent += result.sent
            received += result.received
        }
        var m = try metrics(port: statsPort)
        XCTAssertTrue(waitUntil(timeout: 5) {
            m = (try? metrics(port: statsPort)) ?? m
            return m.value("haproxy_frontend_http_requests_total", ["proxy": "main"]) == 8
                && m.value("haproxy_frontend_current_sessions", ["proxy": "main"]) == 0
        }, m.text)

        XCTAssertEqual(m.types["haproxy_frontend_http_requests_total"], "counter")
        XCTAssertEqual(m.types["haproxy_server_status"], "gauge")
        XCTAssertEqual(m.types["haproxy_server_http_responses_total"], "counter")
        let front = ["proxy": "main"]
        XCTAssertEqual(m.value("haproxy_frontend_sessions_total", front), 8)
        XCTAssertEqual(m.value("haproxy_frontend_max_sessions", front), 1)
        XCTAssertEqual(m.value("haproxy_frontend_bytes_in_total", front), Double(sent))
        XCTAssertEqual(m.value("haproxy_frontend_bytes_out_total", front), Double(received))
        XCTAssertEqual(m.value("haproxy_frontend_http_responses_total", ["proxy": "main", "code": "2xx"]), 4)
        XCTAssertEqual(m.value("haproxy_frontend_http_responses_total", ["proxy": "main", "code": "4xx"]), 4)
        XCTAssertEqual(m.value("haproxy_frontend_http_responses_total", ["proxy": "main", "code": "5xx"]), 0)
        XCTAssertEqual(m.value("haproxy_backend_http_requests_total", front), 8)
        XCTAssertEqual(m.value("haproxy_backend_bytes_out_total", front), Double(received))
        XCTAssertEqual(m.value("haproxy_backend_active_servers", front), 2)
        XCTAssertEqual(m.value("haproxy_backend_weight", front), 4)
        XCTAssertEqual(m.value("haproxy_backend_status", ["proxy": "main", "state": "UP"]), 1)

        var perServer: [String: Double] = [:]
        for (server, weight) in [("s1", 1.0), ("s2", 3.0)] {
            let labels = ["proxy": "main", "server": server]
            XCTAssertEqual(m.value("haproxy_server_weight", labels), weight)
            XCTAssertEqual(m.value("haproxy_server_status", labels.merging(["state": "UP"]) { $1 }), 1)
            XCTAssertEqual(m.value("haproxy_server_status", labels.merging(["state": "DOWN"]) { $1 }), 0)
            XCTAssertEqual(m.value("haproxy_server_current_sessions", labels), 0)
            let ok = try XCTUnwrap(m.value("haproxy_server_http_responses_total", labels.merging(["code": "2xx"]) { $1 }))
            let missing = try XCTUnwrap(m.value("haproxy_server_http_responses_total", labels.merging(["code": "4xx"]) { $1 }))
            XCTAssertEqual(m.value("haproxy_server_sessions_total", labels), ok + missing)
            perServer[server] = ok + missing
        }
        XCTAssertEqual(perServer, ["s1": 2, "s2": 6], m.text)

        // The CSV carries the same counts, in haproxy's columns.
        let (csvStatus, csv) = try httpGet(port: statsPort, path: "/;csv")
        XCTAssertEqual(csvStatus, "HTTP/1.1 200 OK")
        let rows = csv.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let header = try XCTUnwrap(rows.first).map { $0.replacingOccurrences(of: "# ", with: "") }
        func column(_ svname: String, _ name: String) -> String? {
            guard let at = header.firstIndex(of: name), let row = rows.first(where: { $0.count > 1 && $0[1] == svname }) else { return nil }
            return row[at]
        }
        XCTAssertEqual(column("FRONTEND", "req_tot"), "8")
        XCTAssertEqual(column("FRONTEND", "hrsp_4xx"), "4")
        XCTAssertEqual(column("s2", "stot"), "6")
        XCTAssertEqual(column("s1", "status"), "no check")
        XCTAssertEqual(column("BACKEND", "bout"), "\(received)")
        XCTAssertEqual(try httpGet(port: statsPort, path: "/?stats;csv").body, csv)
    }

    func testMetricsMatchHAProxysExporter() throws {
        let servers = try startNginx(["n1", "n2"])
        let config = try TempConfigFile("""
            global
                nbthread 1
            defaults
                mode http
                timeout connect 2s
                timeout client 10s
                timeout server 10s
            listen web
                bind 127.0.0.1:0
                balance roundrobin
                server s1 \(servers[0].address)
                server s2 \(servers[1].address) weight 2
                server s3 127.0.0.1:\(try freePort()) backup

            """)
        let (balancer, port) = try startBalancer(["--config", config.path, "--stats", "127.0.0.1:0", "--quiet"], frontend: "web")
        let statsPort = try balancer.statsPort()

        // haproxy runs the export of the same configuration, on its own port, with its
        // exporter on another.
        let export = try BalancerdProcess.run(["export-haproxy", "--config", config.path])
        XCTAssertEqual(export.exitCode, 0, export.allText)
        let haproxyPort = try freePort(), exporterPort = try freePort()
        let exported = export.stdoutText.replacingOccurrences(of: "bind 127.0.0.1:0", with: "bind 127.0.0.1:\(haproxyPort)")
        XCTAssertNotEqual(exported, export.stdoutText, "no 'bind 127.0.0.1:0' in the export:\n\(export.stdoutText)")
        let haproxyConfig = try TempConfigFile(exported + """

            frontend exporter
                mode http
                bind 127.0.0.1:\(exporterPort)
                http-request use-service prometheus-exporter if { path /metrics }

            """, name: "haproxy.cfg")
        let haproxy = try HAProxyProcess(configPath: haproxyConfig.path, port: exporterPort)
        addTeardownBlock { haproxy.stop() }

        for target in [port, haproxyPort] {
            for path in ["/", "/", "/", "/nope", "/nope", "/nope"] {
                XCTAssertEqual(try get(port: target, path: path).status, path == "/" ? 200 : 404)
            }
        }
        var ours = try metrics(port: statsPort)
        XCTAssertTrue(waitUntil(timeout: 5) {
            ours = (try? metrics(port: statsPort)) ?? ours
            return ours.value("haproxy_frontend_http_requests_total", ["proxy": "web"]) == 6
        }, ours.text)
        var theirs = try metrics(port: exporterPort)
        XCTAssertTrue(waitUntil(timeout: 5) {
            theirs = (try? metrics(port: exporterPort)) ?? theirs
            return theirs.value("haproxy_frontend_http_requests_total", ["proxy": "web"]) == 6
        }, theirs.text)

        // Every haproxy_* family we write exists there, with the same type and labels.
        let families = ours.families.filter { $0.hasPrefix("haproxy_") }
        XCTAssertGreaterThanOrEqual(families.count, 60)
        for family in families.sorted() {
            XCTAssertTrue(theirs.families.contains(family), "haproxy has no \(family)")
            XCTAssertEqual(ours.types[family], theirs.types[family], "type of \(family)")
            XCTAssertEqual(ours.help[family], theirs.help[family], "HELP of \(family)")
            XCTAssertEqual(ours.labelNames(family), theirs.labelNames(family), "labels of \(family)")
        }
        // The per-server responses are the same.
        for server in ["s1", "s2", "s3"] {
            for code in ["1xx", "2xx", "3xx", "4xx", "5xx", "other"] {
                let labels = ["proxy": "web", "server": server, "code": code]
                XCTAssertEqual(ours.value("haproxy_server_http_responses_total", labels),
                               theirs.value("haproxy_server_http_responses_total", labels), "\(server) \(code)")
            }
            let labels = ["proxy": "web", "server": server]
            XCTAssertEqual(ours.value("haproxy_server_sessions_total", labels), theirs.value("haproxy_server_sessions_total", labels), server)
            XCTAssertEqual(ours.value("haproxy_server_weight", labels), theirs.value("haproxy_server_weight", labels), server)
        }
        for family in ["haproxy_frontend_http_responses_total", "haproxy_backend_http_responses_total"] {
            for code in ["2xx", "4xx"] {
                XCTAssertEqual(ours.value(family, ["proxy": "web", "code": code]), theirs.value(family, ["proxy": "web", "code": code]), family)
            }
        }
    }

    func testHealthz() throws {
        let servers = try startNginx(["n1"])
        let (balancer, _) = try startBalancer(["--listen", "127.0.0.1:0", "--mode", "http", "--server", servers[0].address,
                                               "--stats", "127.0.0.1:0", "--threads", "2"])
        let (status, body) = try httpGet(port: try balancer.statsPort(), path: "/healthz")
        XCTAssertEqual(status, "HTTP/1.1 200 OK")
        XCTAssertEqual(body, "ok: 2 event loop(s) answering")
    }
}
