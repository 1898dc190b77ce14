import Foundation
import TestSupport
import XCTest
@testable import Balancer

/// The export round trip: parse, export, parse again gives the same model, as a
/// property over generated configurations (seeded, so a failure is reproducible).
final class HAProxyWriterTests: XCTestCase {
    typealias Seeded = SeededGenerator

    private func duration(_ rng: inout Seeded) -> String {
        ["100ms", "250ms", "1s", "5s", "30s", "50s", "2m", "1h", "5000", "1500"].randomElement(using: &rng)!
    }

    private func address(_ rng: inout Seeded, bind: Bool) -> String {
        let port = Int.random(in: 1...65535, using: &rng)
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: return bind ? "*:\(port)" : "10.0.\(Int.random(in: 0...255, using: &rng)).\(Int.random(in: 1...254, using: &rng)):\(port)"
        case 1: return "[::1]:\(port)"
        case 2: return "ipv6@fe80::\(Int.random(in: 1...999, using: &rng)):\(port)"
        case 3: return bind ? ":\(port)" : "db-\(Int.random(in: 1...9, using: &rng)).example:\(port)"
        default: return "127.0.0.\(Int.random(in: 1...254, using: &rng)):\(port)"
        }
    }

    private func serverLines(_ rng: inout Seeded, count: Int) -> [String] {
        (0..<count).map { i in
            var line = "server s\(i)-\(Int.random(in: 0...99, using: &rng)) \(address(&rng, bind: false))"
            if Bool.random(using: &rng) { line += " weight \(Int.random(in: 0...256, using: &rng))" }
            if Int.random(in: 0..<4, using: &rng) == 0 { line += " backup" }
            if Bool.random(using: &rng) {
                line += " check"
                if Bool.random(using: &rng) { line += " inter \(duration(&rng))" }
                if Int.random(in: 0..<3, using: &rng) == 0 { line += " fastinter \(duration(&rng))" }
                if Int.random(in: 0..<3, using: &rng) == 0 { line += " downinter \(duration(&rng))" }
                if Bool.random(using: &rng) { line += " rise \(Int.random(in: 1...5, using: &rng))" }
                if Bool.random(using: &rng) { line += " fall \(Int.random(in: 1...5, using: &rng))" }
            }
            if Int.random(in: 0..<4, using: &rng) == 0 { line += " slowstart \(duration(&rng))" }
            return "    " + line
        }
    }

    /// Two error files on disk, written once per test: `errorfile` reads them at parse time.
    private var errorFileDirectory = ""

    override func setUpWithError() throws {
        errorFileDirectory = NSTemporaryDirectory() + "balancerd-writer-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: errorFileDirectory + "/with space", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: errorFileDirectory + "/503.http",
                                       contents: Data("HTTP/1.0 503 Busy\r\n\r\nbusy\n".utf8))
        FileManager.default.createFile(atPath: errorFileDirectory + "/with space/400.http",
                                       contents: Data("HTTP/1.0 400 No\r\n\r\nno\n".utf8))
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: errorFileDirectory)
    }

    private func errorFileLines(_ rng: inout Seeded) -> [String] {
        var lines: [String] = []
        if Bool.random(using: &rng) { lines.append("    errorfile 503 \(errorFileDirectory)/503.http") }
        if Int.random(in: 0..<3, using: &rng) == 0 { lines.append("    errorfile 400 '\(errorFileDirectory)/with space/400.http'") }
        return lines
    }

    /// `option httpchk` in its forms, `http-check send/expect` with words that need
    /// quoting on the way out, `timeout check`.
    private func checkLines(_ rng: inout Seeded) -> [String] {
        var lines: [String] = []
        if Int.random(in: 0..<3, using: &rng) == 0 { lines.append("    timeout check \(duration(&rng))") }
        guard Bool.random(using: &rng) else { return lines }
        switch Int.random(in: 0..<5, using: &rng) {
        case 0: lines.append("    option httpchk")
        case 1: lines.append("    option httpchk /health")
        case 2: lines.append("    option httpchk GET /health")
        case 3: lines.append(#"    option httpchk HEAD / HTTP/1.1\r\nHost:localhost"#)
        default: lines.append(#"    option httpchk GET /a?b=c HTTP/1.1\r\nHost:\ x\r\nX-Y:z"#)
        }
        if Bool.random(using: &rng) {
            var send = "    http-check send"
            if Bool.random(using: &rng) { send += " meth POST" }
            if Bool.random(using: &rng) { send += " hdr Host \"a b\" hdr X-Quote 'say \"hi\" $HOME #1'" }
            if Bool.random(using: &rng) { send += #" body "{\"ok\":true}\r\n""# }
            lines.append(send)
        }
        switch Int.random(in: 0..<5, using: &rng) {
        case 0: lines.append("    http-check expect status 200")
        case 1: lines.append("    http-check expect ! status 500-599,404")
        case 2: lines.append(#"    http-check expect rstatus ^2\d\d$"#)
        case 3: lines.append("    http-check expect ! rstatus '^(5|4)'")
        default: break
        }
        return lines
    }

    /// A random valid haproxy.cfg in the supported subset, with one defaults section.
    private func generate(_ rng: inout Seeded) -> String {
        var lines = ["global"]
        if Bool.random(using: &rng) { lines.append("    maxconn \(Int.random(in: 1...50000, using: &rng))") }
        switch Int.random(in: 0..<3, using: &rng) {
        case 0: lines.append("    stats socket /run/balancerd.sock mode 660 level admin expose-fd listeners")
        case 1: lines.append("    stats socket '/tmp/a b.sock'")
        default: break
        }
        if Bool.random(using: &rng) { lines.append("    nbthread \(Int.random(in: 1...8, using: &rng))") }
        let mode = Bool.random(using: &rng) ? "http" : "tcp"
        lines += ["defaults", "    mode \(mode)"]
        for name in ["connect", "client", "server", "http-request", "http-keep-alive"] where Bool.random(using: &rng) {
            lines.append("    timeout \(name) \(duration(&rng))")
        }
        if Bool.random(using: &rng) { lines.append("    retries \(Int.random(in: 0...5, using: &rng))") }
        if Bool.random(using: &rng) { lines.append(Bool.random(using: &rng) ? "    option redispatch" : "    no option redispatch") }
        if Bool.random(using: &rng) { lines.append("    option forwardfor") }

        let pairs = Int.random(in: 1...3, using: &rng)
        for p in 0..<pairs {
            let servers = serverLines(&rng, count: Int.random(in: 0...5, using: &rng))
            var backendSettings: [String] = []
            if Bool.random(using: &rng) { backendSettings.append("    timeout connect \(duration(&rng))") }
            if Bool.random(using: &rng) { backendSettings.append("    timeout server \(duration(&rng))") }
            if Bool.random(using: &rng) { backendSettings.append("    retries \(Int.random(in: 0...5, using: &rng))") }
            if Bool.random(using: &rng) { backendSettings.append(Bool.random(using: &rng) ? "    option redispatch" : "    no option redispatch") }
            if Bool.random(using: &rng) { backendSettings.append("    option allbackups") }
            backendSettings += checkLines(&rng) + errorFileLines(&rng)
            var frontSettings: [String] = []
            for _ in 0..<Int.random(in: 1...2, using: &rng) { frontSettings.append("    bind \(address(&rng, bind: true))") }
            if Bool.random(using: &rng) { frontSettings.append("    timeout client \(duration(&rng))") }
            if Bool.random(using: &rng) { frontSettings.append("    timeout http-request \(duration(&rng))") }
            if Bool.random(using: &rng) { frontSettings.append("    option forwardfor") }
            frontSettings += errorFileLines(&rng)
            if Bool.random(using: &rng) {
                lines.append("listen app\(p)")
                lines += frontSettings + ["    balance roundrobin"] + backendSettings + servers
            } else {
                lines += ["frontend fe\(p)"] + frontSettings + ["    default_backend be\(p)"]
                lines += ["backend be\(p)", "    balance roundrobin"] + backendSettings + servers
            }
        }
        if Bool.random(using: &rng) {
            lines += ["listen stats", "    mode http", "    bind 127.0.0.1:\(Int.random(in: 1024...65535, using: &rng))", "    stats enable"]
            if Bool.random(using: &rng) { lines.append("    stats uri /haproxy?stats") }
            if Bool.random(using: &rng) { lines.append("    stats refresh \(duration(&rng))") }
            for user in ["admin", "ops"] where Bool.random(using: &rng) { lines.append("    stats auth \(user):\"p w#d\"") }
            if Bool.random(using: &rng) { lines.append("    stats admin if LOCALHOST") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func testParseExportParseGivesTheSameModel() throws {
        var rng = Seeded(seed: 0xBA1A_4CE5)
        for iteration in 0..<400 {
            let text = generate(&rng)
            let first: Configuration
            do {
                first = try HAProxyParser.parse(text, file: "generated.cfg")
            } catch {
                return XCTFail("iteration \(iteration): the generator made an invalid file: \(error)\n\(text)")
            }
            let exported = HAProxyWriter.write(first)
            let second: Configuration
            do {
                second = try HAProxyParser.parse(exported, file: "exported.cfg")
            } catch {
                return XCTFail("iteration \(iteration): the export does not parse: \(error)\n\(exported)")
            }
            XCTAssertEqual(second.normalized(), first.normalized(), "iteration \(iteration)\n--- input\n\(text)\n--- export\n\(exported)")
            // Exporting the re-parsed model again is a fixed point.
            XCTAssertEqual(HAProxyWriter.write(second), exported, "iteration \(iteration)")
        }
    }

    /// What the writer turns each new field into (the round trip above proves they parse
    /// back; the integration tests run haproxy -c on exports).
    func testHealthChecksStatsAndErrorFilesAreWritten() {
        var backend = BackendConfig(name: "web", mode: .http, servers: [
            ServerConfig(name: "a", address: HostPort(host: "10.0.0.1", port: 80),
                         check: HealthCheckConfig(interval: .seconds(3), rise: 2, fall: 3, fastInterval: .seconds(1), downInterval: .seconds(10)),
                         slowStart: .seconds(30)),
            ServerConfig(name: "b", address: HostPort(host: "10.0.0.2", port: 80)),
        ])
        backend.healthCheck = BackendHealthCheck(
            http: HTTPCheck(method: "HEAD", uri: "/", version: "HTTP/1.1", headers: [HTTPCheckHeader(name: "Host", value: "local host")],
                            expect: .status([200...299, 301...301], negated: true)),
            timeout: .seconds(2))
        // Servers without checks of their own get the backend's (discovered servers,
        // --check-interval): haproxy needs them on the server line.
        backend.defaultCheck = HealthCheckConfig(interval: .seconds(5))
        backend.errorFiles = [ErrorFile(status: 503, path: "/etc/haproxy/errors/503.http", response: [1])]
        var model = Configuration(
            frontends: [Frontend(name: "main", binds: [HostPort(host: "0.0.0.0", port: 80)], mode: .http, defaultBackend: "web",
                                 errorFiles: [ErrorFile(status: 400, path: "/e/my 400.http", response: [1])])],
            backends: [backend],
            stats: StatsConfig(bind: HostPort(host: "127.0.0.1", port: 8404), refresh: .seconds(10),
                               credentials: [StatsCredential(user: "admin", password: "pw")], admin: true))
        model.global.statsSocket = RuntimeSocketConfig(path: "/run/b.sock", mode: 0o660, level: .operator)
        let exported = HAProxyWriter.write(model)
        for expected in [
            "    stats socket /run/b.sock mode 660 level operator",
            "    errorfile 400 \"/e/my 400.http\"",
            "    stats refresh 10s", "    stats auth admin:pw", "    stats admin if TRUE",
            "    option httpchk HEAD / HTTP/1.1",
            "    http-check send hdr Host \"local host\"",
            "    http-check expect ! status 200-299,301",
            "    timeout check 2s",
            "    errorfile 503 /etc/haproxy/errors/503.http",
            "    server a 10.0.0.1:80 weight 1 check inter 3s fastinter 1s downinter 10s rise 2 fall 3 slowstart 30s",
            "    server b 10.0.0.2:80 weight 1 check inter 5s rise 2 fall 3",
        ] {
            XCTAssertTrue(exported.contains(expected + "\n"), "missing '\(expected)' in\n\(exported)")
        }
        XCTAssertFalse(exported.contains("maxconn"), "maxconn is written only when the user set it")
    }

    func testDiscoveredBackendsExportTheirServersWithoutTheToken() {
        var model = Configuration(
            frontends: [Frontend(name: "main", binds: [HostPort(host: "0.0.0.0", port: 80)], mode: .http, defaultBackend: "main")],
            backends: [BackendConfig(name: "main", mode: .http,
                                     servers: [ServerConfig(name: "web-1", address: HostPort(host: "10.1.0.5", port: 8080), weight: 5)],
                                     discovery: .consul(url: "http://consul:8500", service: "web", tag: nil, datacenter: nil, token: "secret"))])
        model.global.maxConnections = 500
        let exported = HAProxyWriter.write(model)
        XCTAssertTrue(exported.contains("server web-1 10.1.0.5:8080 weight 5"), exported)
        XCTAssertTrue(exported.contains("# servers as consul http://consul:8500 service web listed them"), exported)
        XCTAssertFalse(exported.contains("secret"), exported)
    }
}
