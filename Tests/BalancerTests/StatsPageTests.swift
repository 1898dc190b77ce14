// The stats listener in this process, with configurations built in code (`stats auth` and
// `stats admin`): the admin rules over real HTTP on loopback, a drain from the page that
// stops new traffic, the page in headless Chromium, and the pure formatters (CSV columns,
// escaping, the admin form).
import Foundation
import Glibc
import TestSupport
import XCTest
@testable import Balancer

final class StatsPageTests: XCTestCase {
    private struct Running {
        let proxy: Proxy
        let stats: StatsServer
        let port: UInt16
        var statsPort: UInt16 { stats.address.port }
    }

    private func startServers(_ names: [String]) throws -> [HTTPStampServer] {
        try names.map { name in
            let server = try HTTPStampServer(name: name)
            addTeardownBlock { server.stop() }
            return server
        }
    }

    /// An HTTP proxy "web" over `servers` with a stats listener configured by `stats`.
    private func start(_ servers: [ServerConfig], stats: StatsConfig) throws -> Running {
        let configuration = Configuration(
            frontends: [Frontend(name: "web", binds: [HostPort(host: "127.0.0.1", port: 0)], mode: .http, defaultBackend: "web")],
            backends: [BackendConfig(name: "web", mode: .http, servers: servers)], stats: stats)
        let proxy = try Proxy(configuration: configuration, options: ProxyOptions(threads: 1, quiet: true))
        proxy.start()
        addTeardownBlock { proxy.shutdown(grace: .zero) }
        let server = try StatsServer(proxy: proxy, config: stats, version: "test")
        server.start()
        addTeardownBlock { server.stop() }
        return Running(proxy: proxy, stats: server, port: try XCTUnwrap(proxy.boundAddresses.first).address.port)
    }

    private func config(_ servers: [HTTPStampServer]) -> [ServerConfig] {
        servers.map { ServerConfig(name: $0.name, address: HostPort(host: "127.0.0.1", port: $0.port)) }
    }

    private func request(_ port: UInt16, _ method: String, _ target: String, body: String = "", headers: [String] = []) throws -> HTTPResponse {
        let connection = try HTTPClientConnection(port: port)
        defer { connection.close() }
        var head = "\(method) \(target) HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n"
        for header in headers { head += header + "\r\n" }
        if method == "POST" { head += "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: \(body.utf8.count)\r\n" }
        try connection.send(head + "\r\n" + body)
        return try connection.readResponse(method: method, timeout: 5)
    }

    private func names(_ port: UInt16, count: Int) throws -> [String] {
        try (0..<count).map { _ in
            let response = try request(port, "GET", "/")
            XCTAssertEqual(response.status, 200)
            return response.bodyText.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    private func basic(_ user: String, _ password: String) -> String {
        "Authorization: Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    // MARK: admin over HTTP

    func testDrainFromTheLoopbackPageStopsNewTrafficWithoutCredentials() throws {
        let servers = try startServers(["s1", "s2"])
        let running = try start(config(servers), stats: StatsConfig(bind: HostPort(host: "127.0.0.1", port: 0), admin: true))
        XCTAssertEqual(Set(try names(running.port, count: 4)), ["s1", "s2"])

        let page = try request(running.statsPort, "GET", "/")
        XCTAssertTrue(page.bodyText.contains("<option value=\"drain\">"), "admin on: the page offers actions")

        let answer = try request(running.statsPort, "POST", "/", body: "s=s1&action=drain&b=web")
        XCTAssertEqual(answer.status, 303)
        XCTAssertEqual(answer.header("Location"), "/;st=DONE")
        XCTAssertEqual(running.proxy.tables[0].servers[0].health.adminState, .drain)
        // The table is republished to the loop by a task: wait for it, then nothing new reaches s1.
        let before = servers[0].requestCount
        XCTAssertTrue(waitUntil(timeout: 5) { (try? self.names(running.port, count: 2)) == ["s2", "s2"] })
        XCTAssertEqual(try names(running.port, count: 6), Array(repeating: "s2", count: 6))
        XCTAssertEqual(servers[0].requestCount, before)
        let csv = try request(running.statsPort, "GET", "/;csv").bodyText
        XCTAssertTrue(csv.contains("\nweb,s1,"), csv)
        XCTAssertTrue(csv.split(separator: "\n").contains { $0.hasPrefix("web,s1,") && $0.contains(",DRAIN,") }, csv)

        XCTAssertEqual(try request(running.statsPort, "POST", "/", body: "s=s1&action=ready&b=web").header("Location"), "/;st=DONE")
        XCTAssertTrue(waitUntil(timeout: 5) { (try? self.names(running.port, count: 4)).map(Set.init) == ["s1", "s2"] })
        XCTAssertEqual(try request(running.statsPort, "POST", "/", body: "s=s9&action=maint&b=web").header("Location"), "/;st=ERRP")
        XCTAssertEqual(try request(running.statsPort, "POST", "/", body: "s=s1&action=explode&b=web").header("Location"), "/;st=ERRP")
        XCTAssertEqual(try request(running.statsPort, "POST", "/", body: "s=s2&action=weight&weight=7&b=web").header("Location"), "/;st=DONE")
        XCTAssertEqual(running.proxy.tables[0].servers[1].health.operatorWeight.load(ordering: .relaxed), 7)
    }

    func testWithoutAdminThePageOffersNoActionsAndRefusesThem() throws {
        let servers = try startServers(["s1"])
        let running = try start(config(servers), stats: StatsConfig(bind: HostPort(host: "127.0.0.1", port: 0)))
        XCTAssertFalse(try request(running.statsPort, "GET", "/").bodyText.contains("<form"))
        XCTAssertEqual(try request(running.statsPort, "POST", "/", body: "s=s1&action=maint&b=web").header("Location"), "/;st=DENY")
        XCTAssertEqual(running.proxy.tables[0].servers[0].health.adminState, .ready)
    }

    func testStatsAuthGuardsThePageAndTheActions() throws {
        let servers = try startServers(["s1", "s2"])
        let stats = StatsConfig(bind: HostPort(host: "127.0.0.1", port: 0), credentials: [StatsCredential(user: "admin", password: "s3cret")], admin: true)
        let running = try start(config(servers), stats: stats)

        for target in ["/", "/;csv", "/haproxy.cfg"] {
            let anonymous = try request(running.statsPort, "GET", target)
            XCTAssertEqual(anonymous.status, 401, target)
            XCTAssertEqual(anonymous.header("WWW-Authenticate"), "Basic realm=\"HAProxy Statistics\"")
            XCTAssertEqual(try request(running.statsPort, "GET", target, headers: [basic("admin", "wrong")]).status, 401, target)
            XCTAssertEqual(try request(running.statsPort, "GET", target, headers: [basic("admin", "s3cret")]).status, 200, target)
        }
        // Liveness and metrics stay open, as haproxy's exporter is not behind `stats auth`.
        XCTAssertEqual(try request(running.statsPort, "GET", "/healthz").status, 200)
        XCTAssertEqual(try request(running.statsPort, "GET", "/metrics").status, 200)

        // Loopback is not enough once credentials are configured.
        let refused = try request(running.statsPort, "POST", "/", body: "s=s1&action=maint&b=web")
        XCTAssertEqual(refused.status, 401)
        XCTAssertEqual(running.proxy.tables[0].servers[0].health.adminState, .ready)
        let accepted = try request(running.statsPort, "POST", "/", body: "s=s1&action=maint&b=web", headers: [basic("admin", "s3cret")])
        XCTAssertEqual(accepted.status, 303)
        XCTAssertEqual(accepted.header("Location"), "/;st=DONE")
        XCTAssertEqual(running.proxy.tables[0].servers[0].health.adminState, .maint)
        let page = try request(running.statsPort, "GET", "/;st=DONE", headers: [basic("admin", "s3cret")])
        XCTAssertTrue(page.bodyText.contains("Action processed successfully."), page.bodyText)
        XCTAssertTrue(page.bodyText.contains("<tr class=\"maintain\" data-server=\"s1\">"), page.bodyText)
    }

    func testAdminRules() throws {
        let local = try XCTUnwrap(SocketAddress(numericHost: "127.0.0.1", port: 5000))
        let remote = try XCTUnwrap(SocketAddress(numericHost: "10.1.2.3", port: 5000))
        let post = { (peer: SocketAddress, fields: [(name: String, value: String)]) in
            ControlHTTPServer.Request(method: .post, target: "/", peer: peer, fields: fields, body: [])
        }
        let open = StatsConfig(bind: HostPort(host: "127.0.0.1", port: 0), admin: true)
        XCTAssertEqual(StatsAdmin.adminAccess(post(local, []), config: open), .allowed)
        XCTAssertEqual(StatsAdmin.adminAccess(post(remote, []), config: open), .denied)
        XCTAssertEqual(StatsAdmin.viewAccess(post(remote, []), config: open), .allowed)
        var off = open
        off.admin = false
        XCTAssertEqual(StatsAdmin.adminAccess(post(local, []), config: off), .denied)
        var guarded = open
        guarded.credentials = [StatsCredential(user: "u", password: "p:q")]
        let good = [(name: "authorization", value: "Basic " + Data("u:p:q".utf8).base64EncodedString())]
        XCTAssertEqual(StatsAdmin.adminAccess(post(remote, good), config: guarded), .allowed)
        XCTAssertEqual(StatsAdmin.adminAccess(post(local, []), config: guarded), .needsCredentials)
        XCTAssertEqual(StatsAdmin.viewAccess(post(local, []), config: guarded), .needsCredentials)

        XCTAssertEqual(StatsAdmin.parseForm(Array("s=web+1&s=a%2Fb&action=drain&b=my%20backend".utf8)),
                       StatsAdmin.Action(backend: "my backend", servers: ["web 1", "a/b"], kind: .state(.drain)))
        XCTAssertEqual(StatsAdmin.parseForm(Array("s=x&action=weight&weight=12&b=w".utf8))?.kind, .weight(12))
        XCTAssertNil(StatsAdmin.parseForm(Array("s=x&action=weight&weight=999&b=w".utf8)))
        XCTAssertNil(StatsAdmin.parseForm(Array("s=x&action=drain".utf8)))
        XCTAssertNil(StatsAdmin.parseForm(Array("s=%zz&action=drain&b=w".utf8)))
    }

    // MARK: formatters

    func testCSVRowsHaveHAProxysColumns() throws {
        let servers = try startServers(["s1", "s2"])
        let running = try start(config(servers) + [ServerConfig(name: "b1", address: HostPort(host: "127.0.0.1", port: 1), backup: true)],
                                stats: StatsConfig(bind: HostPort(host: "127.0.0.1", port: 0)))
        _ = try names(running.port, count: 2)
        let csv = StatCSV.text(running.proxy.statsSnapshot(version: "test"))
        let lines = csv.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(String(lines[0]), try String(contentsOfFile: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/haproxy-2.6-show-stat-header.txt").path, encoding: .utf8)
            .trimmingCharacters(in: .newlines), "the header is haproxy 2.6's")
        XCTAssertEqual(lines.map { $0.prefix { $0 != "," } + "," + $0.split(separator: ",").dropFirst().prefix(1).joined() }.dropFirst().filter { !$0.isEmpty && $0 != "," },
                       ["web,FRONTEND", "web,s1", "web,s2", "web,b1", "web,BACKEND"])
        // As haproxy serves `/;csv`: every row ends with a comma and a newline, no empty line
        // after the last (the Runtime API adds its own, as haproxy's CLI does).
        XCTAssertTrue(csv.hasSuffix(",\n") && !csv.hasSuffix("\n\n"), "rows end with a comma")
        let width = lines[0].split(separator: ",", omittingEmptySubsequences: false).count
        for line in lines.dropFirst() where !line.isEmpty {
            XCTAssertEqual(line.split(separator: ",", omittingEmptySubsequences: false).count, width, String(line))
        }
    }

    func testThePageEscapesNames() throws {
        let servers = try startServers(["s1"])
        let running = try start([ServerConfig(name: "<b>\"x\"&y", address: HostPort(host: "127.0.0.1", port: servers[0].port))],
                                stats: StatsConfig(bind: HostPort(host: "127.0.0.1", port: 0), admin: true))
        let html = StatsHTML.render(running.proxy.statsSnapshot(version: "<v>"), .init(uri: "/", refreshSeconds: 3, admin: true))
        XCTAssertFalse(html.contains("<b>\"x\""), html)
        XCTAssertTrue(html.contains("&lt;b&gt;&quot;x&quot;&amp;y"), html)
        XCTAssertTrue(html.contains("balancerd &lt;v&gt;"), html)
        XCTAssertTrue(html.contains("content=\"3\""), html)
    }

    // MARK: the page in a browser

    /// Debian's chromium; throws (the test fails, never skips) when it is missing.
    private func chromium() throws -> String {
        let candidates: [String] = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        guard let path = candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw TestSupportError("chromium not installed; run .ci/run")
        }
        return path
    }

    func testThePageInHeadlessChromiumListsEveryServerWithItsState() throws {
        let servers = try startServers(["web-1", "web-2", "web-3", "web-4"])
        var configs = config(servers)
        // Checked, but not within the test (the check results below are set by hand).
        let slowCheck = HealthCheckConfig(interval: .seconds(3600))
        configs[0].check = slowCheck
        configs[3].check = slowCheck
        configs.append(ServerConfig(name: "spare", address: HostPort(host: "127.0.0.1", port: servers[0].port), backup: true))
        let running = try start(configs, stats: StatsConfig(bind: HostPort(host: "127.0.0.1", port: 0), refresh: .seconds(10), admin: true))
        _ = try names(running.port, count: 7)
        let health = running.proxy.tables[0].servers.map(\.health)
        health[1].adminRaw.store(AdminState.drain.rawValue, ordering: .relaxed)
        health[2].adminRaw.store(AdminState.maint.rawValue, ordering: .relaxed)
        health[0].checkHealth.store(4, ordering: .relaxed)
        health[0].checkStatusRaw.store(CheckStatus.l7ok.rawValue, ordering: .relaxed)
        health[0].checkCode.store(200, ordering: .relaxed)
        health[0].checkDurationMilliseconds.store(1, ordering: .relaxed)
        health[3].checkedUp.store(false, ordering: .relaxed)
        health[3].checkHealth.store(0, ordering: .relaxed)
        health[3].checkStatusRaw.store(CheckStatus.l4connection.rawValue, ordering: .relaxed)
        health[3].checkFailures.store(3, ordering: .relaxed)

        let output = try TempDirectory(prefix: "balancerd-chromium")
        addTeardownBlock { output.remove() }
        let url = "http://127.0.0.1:\(running.statsPort)/"
        let common = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                      "--user-data-dir=\(output.file("profile"))"]
        let dom = try runProcess(try chromium(), common + ["--dump-dom", url], timeout: 60)
        XCTAssertEqual(dom.exitCode, 0, dom.allText)
        let text = dom.stdoutText
        let expected = ["web-1": ("active_up", "UP"), "web-2": ("active_draining", "DRAIN"),
                        "web-3": ("maintain", "MAINT"), "web-4": ("active_down", "DOWN"), "spare": ("backup_no_check", "no check")]
        for (name, (cssClass, state)) in expected {
            let row = #/<tr class="([a-z_]+)" data-server="([^"]+)">(.*?)</tr>/#
            let match = text.matches(of: row).first { $0.output.2 == name }
            XCTAssertEqual(match.map { String($0.output.1) }, cssClass, "\(name) in:\n\(text)")
            XCTAssertEqual(match.map { String($0.output.3).contains("<td class=\"state\">\(state)</td>") }, true, "\(name) state")
        }

        // The screenshot the README shows: regenerate with BALANCERD_STATS_SCREENSHOT=docs/stats-page.png.
        let shot = ProcessInfo.processInfo.environment["BALANCERD_STATS_SCREENSHOT"].flatMap { $0.isEmpty ? nil : $0 } ?? output.file("page.png")
        let result = try runProcess(try chromium(), common + ["--hide-scrollbars", "--screenshot=\(shot)", "--window-size=1366,900", url], timeout: 60)
        XCTAssertEqual(result.exitCode, 0, result.allText)
        let png = try Data(contentsOf: URL(fileURLWithPath: shot))
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "a PNG")
        XCTAssertGreaterThan(png.count, 10_000)
    }
}
