// Zero-downtime handover (-x / --takeover and `expose-fd listeners`) and the graceful
// stop, with real processes: balancerd, HTTPTestServer backends, and clients that watch
// for any failed request or reset.

import Balancer
import Foundation
import Glibc
import Synchronization
import TestSupport
import XCTest

final class HandoverTests: XCTestCase {
    private var directory: TempDirectory!
    private var socketPath: String { directory.file("admin.sock") }

    override func setUpWithError() throws {
        directory = try TempDirectory(prefix: "balancerd-handover")
        let directory = directory!
        addTeardownBlock { directory.remove() }
    }

    /// `global` with the Runtime API socket, then an HTTP `listen main` on `port`.
    private func config(port: UInt16, servers: [HTTPTestServer], socket: String = "level admin expose-fd listeners",
                        maxconn: Int? = nil, keepAlive: String = "30s") -> String {
        var text = "global\n    stats socket \(socketPath) \(socket)\n"
        if let maxconn { text += "    maxconn \(maxconn)\n" }
        text += """
            defaults
                mode http
                timeout connect 1s
                timeout client 30s
                timeout server 30s
                timeout http-keep-alive \(keepAlive)

            listen main
                bind 127.0.0.1:\(port)

            """
        for server in servers { text += "    server \(server.name) \(server.address)\n" }
        return text
    }

    /// Starts balancerd with `arguments` and waits until it listens (and, with `-x`, until
    /// it told the old process to stop). Stopped when the test ends.
    private func start(_ arguments: [String], takeover: Bool = false, environment: [String: String] = [:]) throws -> BalancerdProcess {
        let balancer = supervise(try BalancerdProcess(arguments: arguments, environment: environment))
        _ = try balancer.port()
        if takeover {
            guard balancer.waitForLine(containing: "balancerd: handover done", timeout: 15) != nil else {
                throw TestSupportError("no handover line:\n\(balancer.outputText)")
            }
        }
        return balancer
    }

    // MARK: under load

    func testTwoHandoversUnderLoadLoseNoRequest() throws {
        let servers = try startHTTPServers(["s1", "s2"])
        let port = try freePort()
        let file = try directory.write(config(port: port, servers: servers), to: "balancerd.cfg")
        let arguments = ["--config", file, "--grace", "20s"]

        let first = try start(arguments + ["--threads", "2"])
        let load = RequestLoad(port: port, keepAlive: 3, fresh: 2)
        var stopped = false
        defer { if !stopped { load.stop() } }
        XCTAssertTrue(load.waitForMore(300), "the load did not get going\n\(tail(first))")

        // old → new: the new one runs one loop fewer, so one loop watches two sockets.
        let second = try start(arguments + ["--threads", "1", "-x", socketPath], takeover: true)
        XCTAssertTrue(load.waitForMore(300), "no requests after the first handover\n\(tail(second))")
        XCTAssertEqual(first.waitForExit(timeout: 25), 0, "the first process exits 0 within its grace\n\(tail(first))")

        // new → newer, with more loops than sockets: loops share.
        let third = try start(arguments + ["--threads", "3", "--takeover", socketPath], takeover: true)
        XCTAssertTrue(load.waitForMore(300), "no requests after the second handover\n\(tail(third))")
        XCTAssertEqual(second.waitForExit(timeout: 25), 0, "the second process exits 0 within its grace\n\(tail(second))")
        XCTAssertTrue(load.waitForMore(300), "no requests once the third process is alone\n\(tail(third))")
        load.stop()
        stopped = true

        let failures = load.failures.withLock { $0 }
        XCTAssertEqual(failures, [], "\(failures.count) failed of \(load.served.load(ordering: .relaxed)) requests")
        // Each process served some of them (its own access log says so).
        for (name, process) in [("first", first), ("second", second), ("third", third)] {
            XCTAssertGreaterThan(httpLogLines(process).count, 0, "the \(name) process served nothing\n\(tail(process))")
        }
        XCTAssertNotNil(second.waitForLine(containing: "took 2 listening socket(s) from pid \(first.pid)"), tail(second))
        XCTAssertNotNil(third.waitForLine(containing: "from pid \(second.pid)"), tail(third))
        XCTAssertNotNil(first.waitForLine(containing: "stopping on handover"), tail(first))
        XCTAssertEqual(third.stop(timeout: 25), 0)
    }

    /// The shared-listener layout (one listener that every loop watches,
    /// BALANCERD_LISTENER=shared) hands over to the per-loop one (a SO_REUSEPORT listener
    /// per loop) and back, under load.
    func testHandoverBetweenSharedAndPerLoopListenersLosesNoRequest() throws {
        let servers = try startHTTPServers(["s1", "s2"])
        let port = try freePort()
        let file = try directory.write(config(port: port, servers: servers), to: "balancerd.cfg")
        let arguments = ["--config", file, "--grace", "20s", "--threads", "2"]
        let shared = ["BALANCERD_LISTENER": "shared"]

        let first = try start(arguments, environment: shared)
        let load = RequestLoad(port: port, keepAlive: 3, fresh: 2)
        var stopped = false
        defer { if !stopped { load.stop() } }
        XCTAssertTrue(load.waitForMore(300), "the load did not get going\n\(tail(first))")

        let second = try start(arguments + ["-x", socketPath], takeover: true)
        XCTAssertTrue(load.waitForMore(300), "no requests after shared → per-loop\n\(tail(second))")
        XCTAssertEqual(first.waitForExit(timeout: 25), 0, tail(first))
        XCTAssertNotNil(second.waitForLine(containing: "listening socket(s) from pid \(first.pid)"), tail(second))

        let third = try start(arguments + ["-x", socketPath], takeover: true, environment: shared)
        XCTAssertTrue(load.waitForMore(300), "no requests after per-loop → shared\n\(tail(third))")
        XCTAssertEqual(second.waitForExit(timeout: 25), 0, tail(second))
        XCTAssertNotNil(third.waitForLine(containing: "listening socket(s) from pid \(second.pid)"), tail(third))
        XCTAssertTrue(load.waitForMore(300), "no requests once the third process is alone\n\(tail(third))")
        load.stop()
        stopped = true

        let failures = load.failures.withLock { $0 }
        XCTAssertEqual(failures, [], "\(failures.count) failed of \(load.served.load(ordering: .relaxed)) requests")
        XCTAssertEqual(third.stop(timeout: 25), 0)
    }

    /// `balancerd reload SOCKET`, the Runtime API's `reload` (through socat) and SIGUSR2:
    /// the running process starts the binary at its own path again, with its arguments and
    /// `-x SOCKET`. A successor that fails is reported with its exit status, and the old
    /// process serves on; one that works takes the listeners, and the answer comes once it
    /// has.
    func testReloadStartsTheBinaryAtItsPathAgainAndReportsAFailure() throws {
        let servers = try startHTTPServers(["s1"])
        let port = try freePort()
        let file = try directory.write(config(port: port, servers: servers), to: "balancerd.cfg")
        let binary = directory.file("balancerd")
        try FileManager.default.copyItem(atPath: try BalancerdProcess.binaryPath(), toPath: binary)
        let first = try BalancerdProcess(arguments: ["--config", file, "--grace", "5s"], binary: binary)
        armWatchdog().onFire { first.kill() }   // its own teardown below stops it after its successors
        _ = try first.port()
        // The successors are the first process's children, and later orphans: stopped by
        // the pids they announce.
        let successors = Mutex<[Int32]>([])
        addTeardownBlock {
            let pids = successors.withLock { $0 }
            for pid in pids where !processGone(pid) { _ = kill(pid, SIGTERM) }
            _ = waitUntil(timeout: 10) { pids.allSatisfy(processGone) }
            first.stop(timeout: 3)
        }
        func get(_ path: String) throws -> Int {
            let connection = try HTTPClientConnection(port: port)
            defer { connection.close() }
            try connection.send(getRequest(path, extra: "Connection: close\r\n"))
            return try connection.readResponse().status
        }

        // A binary that cannot start: the reload fails, nothing changes.
        XCTAssertEqual(rename(binary, binary + ".real"), 0)
        try writeFile(binary, "#!/bin/sh\nexit 3\n")
        XCTAssertEqual(chmod(binary, 0o755), 0)
        let failed = try BalancerdProcess.run(["reload", socketPath], timeout: 60)
        XCTAssertEqual(failed.exitCode, 1, failed.allText)
        XCTAssertTrue(failed.allText.contains("exited with status 3"), failed.allText)
        XCTAssertTrue(failed.allText.contains("pid \(first.pid) keeps serving"), failed.allText)
        XCTAssertTrue(first.isRunning)
        XCTAssertEqual(try get("/after-failure"), 200)

        // The real binary back: the reload works and names the new process. Asked with
        // socat as the README shows, to see the Runtime API's answer as a script does.
        XCTAssertEqual(rename(binary + ".real", binary), 0)
        let worked = try runProcess("/bin/sh", ["-c", "echo reload | socat -t 60 \(socketPath) -"], timeout: 60)
        XCTAssertEqual(worked.exitCode, 0, worked.allText)
        XCTAssertEqual(worked.stdout.prefix(2), ["Success=1", "--"], worked.allText)
        let second = try XCTUnwrap(worked.stdoutText.firstMatch(of: /pid (\d+) took the listeners/).flatMap { Int32($0.1) },
                                   worked.allText)
        successors.withLock { $0.append(second) }
        XCTAssertTrue(waitUntil(timeout: 15) { !first.isRunning }, "the old process exits after the handover\n\(first.outputText)")
        XCTAssertEqual(try get("/after-reload"), 200)

        // SIGUSR2 does the same, without anyone waiting for an answer. The successors
        // write to the first process's output, which they inherited.
        XCTAssertEqual(kill(second, SIGUSR2), 0)
        var third: Int32?
        XCTAssertTrue(waitUntil(timeout: 30) {
            third = first.lines.lazy.compactMap { $0.firstMatch(of: /reload: pid (\d+) took the listeners/).flatMap { Int32($0.1) } }
                .first { $0 != second }
            return third != nil
        }, "no successor after SIGUSR2\n\(first.outputText)")
        if let third { successors.withLock { $0.append(third) } }
        XCTAssertTrue(waitUntil(timeout: 15) { processGone(second) }, "the second process exits after the handover\n\(first.outputText)")
        XCTAssertEqual(try get("/after-usr2"), 200)
    }

    /// A handover after a live reload sends the sockets the loops listen on now: the bind
    /// a SIGHUP opened goes, the one it closed does not (the new process would otherwise
    /// get a descriptor the old one had closed, or miss a listener).
    func testHandoverAfterAReloadSendsTheListenersOfNow() throws {
        let servers = try startHTTPServers(["s1"])
        let (port, removed, added) = (try freePort(), try freePort(), try freePort())
        func file(extra: UInt16) -> String {
            config(port: port, servers: servers) + "\nfrontend extra\n    bind 127.0.0.1:\(extra)\n    default_backend main\n"
        }
        let path = try directory.write(file(extra: removed), to: "balancerd.cfg")
        let first = try start(["--config", path, "--threads", "2"])
        XCTAssertTrue(try httpGet(port: removed).status.hasPrefix("HTTP/1.1 200"), tail(first))

        _ = try directory.write(file(extra: added), to: "balancerd.cfg")
        let before = first.lineCount
        first.signal(SIGHUP)
        let reloaded = first.waitForLine(containing: "balancerd: reloaded", after: before, timeout: 10)
        XCTAssertNotNil(reloaded, tail(first))
        XCTAssertTrue(try httpGet(port: added).status.hasPrefix("HTTP/1.1 200"), tail(first))

        let second = try start(["--config", path, "--threads", "2", "-x", socketPath], takeover: true)
        // Two binds, one socket per loop each; nothing stale, nothing left over.
        XCTAssertNotNil(second.waitForLine(containing: "took 4 listening socket(s) from pid \(first.pid)"), tail(second))
        XCTAssertNil(second.outputText.range(of: "inherited socket(s) that no bind uses"), tail(second))
        XCTAssertEqual(first.waitForExit(timeout: 25), 0, tail(first))
        for p in [port, added] {
            XCTAssertTrue(try httpGet(port: p).status.hasPrefix("HTTP/1.1 200"), "port \(p) after the handover\n\(tail(second))")
        }
        XCTAssertThrowsError(try httpGet(port: removed, timeout: 2), "the bind the reload removed stays closed")
    }

    // MARK: the accept queue

    func testConnectionsQueuedInTheKernelAreServedAfterTheHandover() throws {
        let servers = try startHTTPServers(["s1"])
        let port = try freePort()
        // The old process may hold 2 connections: it stops accepting while they stay open,
        // and everything else waits in the listening sockets' queues.
        let old = try start(["--config", try directory.write(config(port: port, servers: servers, maxconn: 2), to: "old.cfg"),
                             "--grace", "20s", "--threads", "2"])
        let held = try (0..<2).map { _ in try connectHTTP(port) }
        for connection in held {
            try connection.send(getRequest("/held"))
            XCTAssertEqual(try connection.readResponse().status, 200)
        }
        let queued = try (0..<40).map { i -> HTTPClientConnection in
            let connection = try connectHTTP(port)
            try connection.send(getRequest("/queued/\(i)", extra: "Connection: close\r\n"))
            return connection
        }
        // Nobody accepts them: no response comes while the old process is full.
        XCTAssertFalse(queued[0].isReadable)
        XCTAssertEqual(httpLogLines(old).count, 2, tail(old))

        let new = try start(["--config", try directory.write(config(port: port, servers: servers), to: "new.cfg"),
                             "--grace", "20s", "--threads", "1", "-x", socketPath], takeover: true)
        for (i, connection) in queued.enumerated() {
            let response = try connection.readResponse(timeout: 10)
            XCTAssertEqual(response.status, 200, "queued connection \(i)")
            XCTAssertEqual(rawRead(connection.fd, timeout: 5), .eof, "queued connection \(i) closes cleanly after its response")
        }
        // Every one of them in the new process's log (lines reach the pipe in batches).
        let queuedLogged = { httpLogLines(new).filter { $0.request.contains("/queued/") }.count }
        let deadline = Deadline(secondsFromNow: 10)
        while queuedLogged() < 40 && deadline.remainingSeconds > 0 { usleep(10_000) }
        XCTAssertEqual(queuedLogged(), 40, tail(new))

        // The connections the old process still holds: their next request is answered,
        // with Connection: close, and the old process then exits 0.
        for connection in held {
            try connection.send(getRequest("/held"))
            let response = try connection.readResponse()
            XCTAssertEqual(response.status, 200)
            XCTAssertEqual(response.header("Connection")?.lowercased(), "close")
            XCTAssertEqual(rawRead(connection.fd, timeout: 5), .eof)
        }
        XCTAssertEqual(old.waitForExit(timeout: 10), 0, tail(old))
    }

    // MARK: keep-alive connections while stopping

    /// An idle keep-alive connection that sends after the stop began is served, with
    /// `Connection: close`, then closed cleanly; one that stays idle is closed at its
    /// keep-alive timeout, not at once.
    private func checkIdleConnections(stop: (BalancerdProcess, UInt16, String) throws -> Void,
                                      file: StaticString = #filePath, line: UInt = #line) throws {
        let servers = try startHTTPServers(["s1"])
        let port = try freePort()
        let cfg = try directory.write(config(port: port, servers: servers, keepAlive: "3s"), to: "idle.cfg")
        let balancer = try start(["--config", cfg, "--grace", "30s"])
        let active = try connectHTTP(port)
        let idle = try connectHTTP(port)
        for connection in [active, idle] {
            try connection.send(getRequest("/first"))
            XCTAssertEqual(try connection.readResponse().status, 200, file: file, line: line)
        }
        let stopBegan = Date()
        try stop(balancer, port, cfg)
        XCTAssertNotNil(balancer.waitForLine(containing: "balancerd: stopping on", timeout: 10), tail(balancer), file: file, line: line)

        XCTAssertFalse(active.waitForClose(timeout: 0.3), "an idle connection is not closed at once", file: file, line: line)
        try active.send(getRequest("/after-stop"))
        let response = try active.readResponse()
        XCTAssertEqual(response.status, 200, file: file, line: line)
        XCTAssertEqual(response.header("Connection")?.lowercased(), "close", file: file, line: line)
        XCTAssertEqual(rawRead(active.fd, timeout: 5), .eof, "closed cleanly after the response (not reset)", file: file, line: line)

        XCTAssertEqual(rawRead(idle.fd, timeout: 10), .eof, "the idle connection closes cleanly at its keep-alive timeout",
                       file: file, line: line)
        XCTAssertGreaterThan(Date().timeIntervalSince(stopBegan), 1.5, "not closed at once", file: file, line: line)
        XCTAssertEqual(balancer.waitForExit(timeout: 15), 0, tail(balancer), file: file, line: line)
        XCTAssertLessThan(Date().timeIntervalSince(stopBegan), 25, "it ended with its connections, before the grace", file: file, line: line)
    }

    func testSIGTERMKeepsIdleKeepAliveConnectionsUntilTheirTimeout() throws {
        try checkIdleConnections { balancer, _, _ in balancer.signal(SIGTERM) }
    }

    func testHandoverKeepsIdleKeepAliveConnectionsUntilTheirTimeout() throws {
        try checkIdleConnections { _, _, cfg in
            _ = try self.start(["--config", cfg, "--grace", "30s", "-x", self.socketPath], takeover: true)
        }
    }

    /// The grace period ends before the keep-alive timeout: the idle connection is closed
    /// then, cleanly.
    func testGraceEndClosesAnIdleConnectionWithoutAReset() throws {
        let servers = try startHTTPServers(["s1"])
        let port = try freePort()
        let balancer = try start(["--config", try directory.write(config(port: port, servers: servers, keepAlive: "60s"), to: "g.cfg"),
                                  "--grace", "1s"])
        let idle = try connectHTTP(port)
        try idle.send(getRequest("/first"))
        XCTAssertEqual(try idle.readResponse().status, 200)
        balancer.signal(SIGTERM)
        XCTAssertEqual(rawRead(idle.fd, timeout: 10), .eof, "a clean close at the end of the grace, not a reset\n\(tail(balancer))")
        XCTAssertEqual(balancer.waitForExit(timeout: 10), 0, tail(balancer))
    }

    // MARK: refusals

    func testTakeoverWithoutASocketExitsOneNamingThePath() throws {
        let servers = try startHTTPServers(["s1"])
        let port = try freePort()
        let cfg = try directory.write(config(port: port, servers: servers), to: "a.cfg")
        let missing = directory.file("nobody.sock")
        let result = try BalancerdProcess.run(["--config", cfg, "-x", missing], timeout: 10)
        XCTAssertEqual(result.exitCode, 1, result.allText)
        XCTAssertTrue(result.allText.contains("-x \(missing): cannot take the listeners from \(missing)"), result.allText)
        XCTAssertFalse(result.allText.contains("balancerd: listening"), "it does not bind: \(result.allText)")
    }

    func testTakeoverFromASocketWithoutExposeFDExitsOneAndTheOldOneServesOn() throws {
        let servers = try startHTTPServers(["s1"])
        for (socket, reason) in [("level admin", "does not expose the listeners (its 'stats socket' line needs 'expose-fd listeners')"),
                                 ("level operator expose-fd listeners", "Permission denied")] {
            let port = try freePort()
            let cfg = try directory.write(config(port: port, servers: servers, socket: socket), to: "b.cfg")
            let old = try start(["--config", cfg])
            let result = try BalancerdProcess.run(["--config", cfg, "-x", socketPath], timeout: 15)
            XCTAssertEqual(result.exitCode, 1, result.allText)
            XCTAssertTrue(result.allText.contains("-x \(socketPath): \(socketPath) refused to hand over its listeners: _getsocks: \(socketPath) \(reason)")
                          || result.allText.contains("-x \(socketPath): \(socketPath) refused to hand over its listeners: \(reason)"), result.allText)
            XCTAssertTrue(old.isRunning)
            XCTAssertEqual(try httpGet(port: port).status, "HTTP/1.1 200 OK", "the old process still serves\n\(tail(old))")
            XCTAssertEqual(old.stop(timeout: 10), 0)
        }
    }

    // MARK: configuration

    func testExposeFDListenersRoundTripsAndHAProxyAcceptsTheExport() throws {
        let text = """
            global
                stats socket \(socketPath) mode 600 level admin expose-fd listeners

            frontend main
                bind 127.0.0.1:8080
                default_backend web

            backend web
                server s1 127.0.0.1:9000

            """
        let parsed = try HAProxyParser.parse(text, file: "handover.cfg")
        XCTAssertEqual(parsed.global.statsSocket, RuntimeSocketConfig(path: socketPath, mode: 0o600, level: .admin, exposeFDListeners: true))
        let exported = HAProxyWriter.write(parsed)
        XCTAssertTrue(exported.contains("stats socket \(socketPath) mode 600 level admin expose-fd listeners"), exported)
        XCTAssertEqual(try HAProxyParser.parse(exported, file: "exported.cfg").global, parsed.global)
        let path = try directory.write(exported, to: "exported.cfg")
        let check = try HAProxyProcess.check(configPath: path)
        XCTAssertEqual(check.exitCode, 0, "haproxy -c rejects the export:\n\(check.allText)\n\(exported)")
    }
}

/// Whether `pid` has exited: no such process, or a zombie nobody reaped yet (a process
/// whose parent exited is reaped by whoever adopts it, not by the test).
private func processGone(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return true }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    guard let close = stat.lastIndex(of: ")") else { return true }
    return stat[close...].dropFirst(2).first == "Z"
}
