// Frontends added, removed and changed by SIGHUP apply live, in the real binary: a new
// frontend serves at once, a removed one refuses new connections while the ones it
// accepted finish (a request held by a slow backend, an idle keep-alive connection), and
// the other frontends serve throughout. A bind that cannot open refuses the reload.

import Foundation
import Glibc
import TestSupport
import XCTest

/// The X-Server of a `Connection: close` GET to `port`.
private func served(_ port: UInt16) throws -> String {
    let connection = try HTTPClientConnection(port: port, connectTimeout: 2)
    defer { connection.close() }
    try connection.send("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    let response = try connection.readResponse(timeout: 5)
    guard response.status == 200 else { throw TestSupportError("status \(response.status) from port \(port)") }
    return response.header("X-Server") ?? "?"
}

final class LiveFrontendTests: XCTestCase {
    /// One frontend section: `binds` on 127.0.0.1, http mode, `default_backend`, and any
    /// extra lines.
    private func frontend(_ name: String, ports: [UInt16], backend: String, lines: [String] = []) -> String {
        var text = "frontend \(name)\n"
        for port in ports { text += "    bind 127.0.0.1:\(port)\n" }
        for line in lines { text += "    \(line)\n" }
        return text + "    default_backend \(backend)\n\n"
    }

    private func backend(_ name: String, servers: [(String, String)]) -> String {
        "backend \(name)\n" + servers.map { "    server \($0.0) \($0.1)\n" }.joined() + "\n"
    }

    private func config(_ sections: [String]) -> String {
        """
        defaults
            mode http
            timeout connect 1s
            timeout client 30s
            timeout server 30s
            timeout http-keep-alive 30s


        """ + sections.joined()
    }

    private func socketPath() throws -> String {
        let directory = try TempDirectory(prefix: "balancerd-live")
        addTeardownBlock { directory.remove() }
        return directory.file("admin.sock")
    }

    /// Sends SIGHUP and returns the `reloaded` (or `reload failed`) line it caused.
    private func reload(_ balancer: BalancerdProcess, file: StaticString = #filePath, line: UInt = #line) -> String {
        let before = balancer.lineCount
        balancer.signal(SIGHUP)
        let answer = balancer.waitForLine(after: before, timeout: 10) {
            $0.contains("balancerd: reloaded") || $0.contains("balancerd: reload failed")
        }
        XCTAssertNotNil(answer, "no reload line after SIGHUP\n\(tail(balancer))", file: file, line: line)
        return answer ?? ""
    }

    /// True when nothing accepts a connection on `port` any more.
    private func refuses(_ port: UInt16) -> Bool {
        do {
            let fd = try connectTCP(port: port, timeout: 1)
            close(fd)
            return false
        } catch {
            return true
        }
    }

    /// A client that loops on `ports` (one request per connection) until stopped, and
    /// counts what failed.
    private final class Traffic: @unchecked Sendable {
        let failures = Protected<[String]>([])
        let served = Protected(0)
        private let running = Protected(true)
        private var thread: JoinableThread?

        init(ports: [UInt16], request: @escaping @Sendable (UInt16) throws -> String) {
            thread = JoinableThread { [self] in
                while running.value {
                    for port in ports {
                        do {
                            _ = try request(port)
                            served.mutate { $0 += 1 }
                        } catch {
                            failures.mutate { $0.append("port \(port): \(error)") }
                        }
                    }
                }
            }
        }

        /// Waits until `count` more requests were served than now (false on timeout).
        func serves(_ count: Int, timeout: Double = 10) -> Bool {
            let target = served.value + count
            let deadline = monotonicSeconds() + timeout
            while served.value < target {
                if monotonicSeconds() > deadline { return false }
                usleep(2_000)
            }
            return true
        }

        func stop() {
            running.set(false)
            thread?.join()
            thread = nil
        }
    }

    private func metricsText(_ statsPort: UInt16) throws -> String {
        let connection = try HTTPClientConnection(port: statsPort)
        defer { connection.close() }
        try connection.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return try connection.readResponse(timeout: 5).bodyText
    }

    /// Whether /metrics has a frontend sample of `name`.
    private func listsFrontend(_ name: String, metrics: String) -> Bool {
        metrics.split(separator: "\n").contains { $0.hasPrefix("haproxy_frontend_connections_total{") && $0.contains("proxy=\"\(name)\"") }
    }

    /// The proxy names (`pxname`) of the FRONTEND rows of `show stat`, through socat.
    private func showStatFrontends(_ path: String) throws -> [String] {
        let result = try runProcess("/bin/sh", ["-c", "echo 'show stat' | socat stdio unix-connect:\(path)"], timeout: 10)
        XCTAssertEqual(result.exitCode, 0, result.allText)
        return result.stdout.filter { $0.split(separator: ",").dropFirst().first == "FRONTEND" }
            .compactMap { $0.split(separator: ",").first.map(String.init) }
    }

    /// The proxy names of the FRONTEND rows of the stats page's CSV.
    private func csvFrontends(_ statsPort: UInt16) throws -> [String] {
        let (_, csv) = try httpGet(port: statsPort, path: "/;csv")
        return csv.split(separator: "\n").filter { $0.split(separator: ",").dropFirst().first == "FRONTEND" }
            .compactMap { $0.split(separator: ",").first.map(String.init) }
    }

    /// Adds a frontend, then removes one: the new one serves at once; the removed one's
    /// port refuses, while a request held by a slow backend and an idle keep-alive
    /// connection it accepted complete; `main` serves throughout; stats, `show stat` and
    /// /metrics follow.
    func testAddAndRemoveFrontendsLive() throws {
        let a = try startHTTPServers(["a"])[0]
        let gated = try GatedHTTPServer(name: "gated")
        addTeardownBlock { gated.stop() }
        let (mainPort, oldPort, addedPort) = (try freePort(), try freePort(), try freePort())
        let sections = [
            backend("be_a", servers: [("a", a.address)]),
            backend("be_gated", servers: [("gated", gated.address)]),
            frontend("main", ports: [mainPort], backend: "be_a"),
        ]
        let old = frontend("old", ports: [oldPort], backend: "be_a", lines: ["acl slow path_beg /slow", "use_backend be_gated if slow"])
        let file = try TempConfigFile(config(sections + [old]))
        addTeardownBlock { file.directory.remove() }
        let socket = try socketPath()
        let (balancer, port) = try startBalancer(["--config", file.path, "--stats", "127.0.0.1:0", "--stats-socket", socket, "--quiet"])
        XCTAssertEqual(port, mainPort)
        let statsPort = try balancer.statsPort()
        XCTAssertNotNil(balancer.waitForLine(containing: "balancerd: runtime API on unix socket", timeout: 10), tail(balancer))
        XCTAssertEqual(try served(oldPort), "a")
        XCTAssertEqual(try showStatFrontends(socket), ["main", "old"])

        let traffic = Traffic(ports: [mainPort]) { try served($0) }
        defer { traffic.stop() }
        XCTAssertTrue(traffic.serves(5), "the client on `main` is not served\n\(tail(balancer))")

        // Add `added` (a new backend too).
        let b = try startHTTPServers(["b"])[0]
        let added = frontend("added", ports: [addedPort], backend: "be_b")
        try file.rewrite(config(sections + [old, added, backend("be_b", servers: [("b", b.address)])]))
        let first = reload(balancer)
        XCTAssertTrue(first.contains("balancerd: reloaded"), first)
        XCTAssertTrue(first.contains("opened added@127.0.0.1:\(addedPort)"), first)
        XCTAssertTrue(first.contains("frontends added added"), first)
        XCTAssertFalse(first.contains("closed"), first)
        XCTAssertEqual(try served(addedPort), "b", "the new frontend does not serve right after 'reloaded'")
        XCTAssertEqual(try showStatFrontends(socket), ["main", "old", "added"])
        XCTAssertEqual(try csvFrontends(statsPort), ["main", "old", "added"])
        XCTAssertTrue(try listsFrontend("added", metrics: metricsText(statsPort)))
        let onAdded = Traffic(ports: [addedPort]) { try served($0) }
        defer { onAdded.stop() }
        XCTAssertTrue(onAdded.serves(5), "the client on `added` is not served\n\(tail(balancer))")

        // On `old`: a request the gated backend holds, and an idle keep-alive connection.
        let inFlight = try connectHTTP(oldPort)
        try inFlight.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        let keepAlive = try connectHTTP(oldPort)
        try keepAlive.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        XCTAssertEqual(try keepAlive.readResponse().header("X-Server"), "a")
        let deadline = monotonicSeconds() + 5
        while gated.waitingCount < 1 && monotonicSeconds() < deadline { usleep(5_000) }
        XCTAssertEqual(gated.waitingCount, 1, "the slow request did not reach its backend\n\(tail(balancer))")

        // Remove `old`.
        try file.rewrite(config(sections + [added, backend("be_b", servers: [("b", b.address)])]))
        let second = reload(balancer)
        XCTAssertTrue(second.contains("balancerd: reloaded"), second)
        XCTAssertTrue(second.contains("closed old@127.0.0.1:\(oldPort)"), second)
        XCTAssertTrue(second.contains("frontends removed old"), second)
        XCTAssertFalse(second.contains("opened"), second)
        XCTAssertTrue(refuses(oldPort), "the removed frontend's port still accepts")
        XCTAssertEqual(try served(addedPort), "b")

        gated.release()
        let slow = try inFlight.readResponse(timeout: 5)
        XCTAssertEqual(slow.status, 200)
        XCTAssertEqual(slow.bodyText, "gated")
        try keepAlive.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        let again = try keepAlive.readResponse(timeout: 5)
        XCTAssertEqual(again.status, 200, "the keep-alive connection of the removed frontend did not finish")
        XCTAssertEqual(again.header("X-Server"), "a")

        XCTAssertEqual(try showStatFrontends(socket), ["main", "added"])
        XCTAssertEqual(try csvFrontends(statsPort), ["main", "added"])
        let metrics = try metricsText(statsPort)
        XCTAssertTrue(listsFrontend("added", metrics: metrics), metrics)
        XCTAssertFalse(listsFrontend("old", metrics: metrics), "/metrics still lists the removed frontend")

        XCTAssertTrue(traffic.serves(5) && onAdded.serves(5), "the other frontends stopped serving after the reloads\n\(tail(balancer))")
        traffic.stop()
        onAdded.stop()
        let failures = traffic.failures.value + onAdded.failures.value
        XCTAssertEqual(failures.count, 0, "\(failures.count) requests to `main` and `added` failed, e.g. \(failures.prefix(3))\n\(tail(balancer))")
        XCTAssertTrue(balancer.isRunning)
    }

    /// A bind added to a frontend serves at once; a bind removed refuses while the
    /// connection it accepted finishes, and the bind that stays keeps serving.
    func testAddAndRemoveBindOfAFrontend() throws {
        let a = try startHTTPServers(["a"])[0]
        let (first, second) = (try freePort(), try freePort())
        let be = backend("be_a", servers: [("a", a.address)])
        let file = try TempConfigFile(config([be, frontend("main", ports: [first], backend: "be_a")]))
        addTeardownBlock { file.directory.remove() }
        let (balancer, _) = try startBalancer(["--config", file.path, "--quiet"])

        try file.rewrite(config([be, frontend("main", ports: [first, second], backend: "be_a")]))
        let added = reload(balancer)
        XCTAssertTrue(added.contains("opened main@127.0.0.1:\(second)"), added)
        XCTAssertTrue(added.contains("frontends changed main"), added)
        XCTAssertEqual(try served(second), "a")
        XCTAssertEqual(try served(first), "a")

        let traffic = Traffic(ports: [second]) { try served($0) }
        defer { traffic.stop() }
        XCTAssertTrue(traffic.serves(5), tail(balancer))
        let keepAlive = try connectHTTP(first)
        try keepAlive.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        XCTAssertEqual(try keepAlive.readResponse().status, 200)

        try file.rewrite(config([be, frontend("main", ports: [second], backend: "be_a")]))
        let removed = reload(balancer)
        XCTAssertTrue(removed.contains("closed main@127.0.0.1:\(first)"), removed)
        XCTAssertFalse(removed.contains("opened"), removed)
        XCTAssertTrue(refuses(first), "the removed bind still accepts")
        try keepAlive.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        XCTAssertEqual(try keepAlive.readResponse(timeout: 5).status, 200, "the connection of the removed bind did not finish")

        XCTAssertTrue(traffic.serves(5), "the bind that stays stopped serving\n\(tail(balancer))")
        traffic.stop()
        XCTAssertEqual(traffic.failures.value.count, 0, "\(traffic.failures.value.prefix(3))\n\(tail(balancer))")
    }

    /// A changed frontend (another default backend) on a bind it keeps: new connections
    /// get the new settings, a keep-alive connection accepted before keeps the ones it
    /// started with.
    func testChangedFrontendAppliesToNewConnections() throws {
        let servers = try startHTTPServers(["a", "b"])
        let port = try freePort()
        let backends = backend("be_a", servers: [("a", servers[0].address)]) + backend("be_b", servers: [("b", servers[1].address)])
        let file = try TempConfigFile(config([backends, frontend("main", ports: [port], backend: "be_a")]))
        addTeardownBlock { file.directory.remove() }
        let (balancer, _) = try startBalancer(["--config", file.path, "--quiet"])
        let before = try connectHTTP(port)
        try before.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        XCTAssertEqual(try before.readResponse().header("X-Server"), "a")

        try file.rewrite(config([backends, frontend("main", ports: [port], backend: "be_b")]))
        let line = reload(balancer)
        XCTAssertTrue(line.contains("frontends changed main"), line)
        XCTAssertFalse(line.contains("opened") || line.contains("closed"), "a kept bind must keep its socket: \(line)")
        XCTAssertEqual(try served(port), "b")
        try before.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        XCTAssertEqual(try before.readResponse().header("X-Server"), "a", "a connection accepted before the reload changed settings")
    }

    /// A new bind on a port another socket holds: the reload fails naming the frontend and
    /// the address, nothing of it applies (not even its backend change), and the process
    /// keeps serving. Once the port is free, the same file reloads.
    func testBindOnPortInUseRefusesTheReload() throws {
        let servers = try startHTTPServers(["a", "b"])
        let mainPort = try freePort()
        let (holder, busyPort) = try makeLoopbackListener()
        var held = true
        defer { if held { close(holder) } }
        let original = config([backend("be", servers: [("a", servers[0].address)]), frontend("main", ports: [mainPort], backend: "be")])
        let file = try TempConfigFile(original)
        addTeardownBlock { file.directory.remove() }
        let (balancer, _) = try startBalancer(["--config", file.path, "--quiet"])
        XCTAssertEqual(try served(mainPort), "a")

        let wanted = config([backend("be", servers: [("b", servers[1].address)]), frontend("main", ports: [mainPort], backend: "be"),
                             frontend("extra", ports: [busyPort], backend: "be")])
        try file.rewrite(wanted)
        let failed = reload(balancer)
        XCTAssertTrue(failed.contains("balancerd: reload failed: frontend 'extra', bind 127.0.0.1:\(busyPort)"), failed)
        XCTAssertTrue(failed.contains("nothing applied"), failed)
        XCTAssertTrue(balancer.isRunning)
        XCTAssertEqual(try served(mainPort), "a", "a refused reload changed the backend")

        close(holder)
        held = false
        let applied = reload(balancer)
        XCTAssertTrue(applied.contains("opened extra@127.0.0.1:\(busyPort)"), applied)
        XCTAssertEqual(try served(busyPort), "b")
        XCTAssertEqual(try served(mainPort), "b")
    }
}
