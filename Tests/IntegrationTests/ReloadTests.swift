// SIGHUP reloads the configuration file: under load without a single failed connection,
// and a broken file is reported (file, line, keyword) while the old table keeps serving.

import Foundation
import Glibc
import TestSupport
import XCTest

final class ReloadTests: XCTestCase {
    /// Sequential connections at ~100/s for ~3 s while the file changes from {a,b} to {c,d}
    /// and SIGHUP is sent: no connection fails, and once the daemon says `reloaded` every
    /// connection reaches c or d.
    func testSIGHUPUnderLoadSwitchesServersWithoutErrors() throws {
        let servers = try startStampServers(["a", "b", "c", "d"])
        // A fixed port, so the test does not depend on how an ephemeral bind is kept.
        let bind = "127.0.0.1:\(try freePort())"
        let config = try TempConfigFile(listenConfig(bind: bind, servers: Array(servers[0..<2])))
        let (balancer, port) = try startBalancer(["--config", config.path])

        struct Attempt {
            let start: Double
            let end: Double
            let outcome: Result<String, any Error>
        }
        let attempts = Protected<[Attempt]>([])
        let running = Protected(true)
        let load = JoinableThread {
            while running.value {
                let start = monotonicSeconds()
                let outcome = Result { try fetchName(port: port, timeout: 3) }
                attempts.mutate { $0.append(Attempt(start: start, end: monotonicSeconds(), outcome: outcome)) }
                sleepSeconds(0.01)
            }
        }
        defer {
            running.set(false)
            load.join()
        }

        sleepSeconds(1)
        try config.rewrite(listenConfig(bind: bind, servers: Array(servers[2..<4])))
        let before = balancer.lineCount
        let signalledAt = monotonicSeconds()
        balancer.signal(SIGHUP)
        let reloaded = balancer.waitForLine(containing: "balancerd: reloaded", after: before, timeout: 5)
        let reloadedAt = monotonicSeconds()
        XCTAssertNotNil(reloaded, "no 'balancerd: reloaded' line after SIGHUP\n\(tail(balancer))")
        sleepSeconds(max(0, signalledAt + 2 - monotonicSeconds()))
        running.set(false)
        load.join()

        let all = attempts.value
        let failures = all.compactMap { attempt -> String? in
            if case .failure(let error) = attempt.outcome { return "\(error)" }
            return nil
        }
        XCTAssertEqual(failures.count, 0, "\(failures.count) of \(all.count) connections failed, e.g. \(failures.prefix(3))\n\(tail(balancer))")
        XCTAssertGreaterThanOrEqual(all.count, 100, "the load loop made too few connections to mean anything")

        func names(_ filter: (Attempt) -> Bool) -> [String] {
            all.filter(filter).compactMap { try? $0.outcome.get() }
        }
        let early = names { $0.end < signalledAt }
        let late = names { $0.start > reloadedAt }
        XCTAssertEqual(Set(early), ["a", "b"], "before SIGHUP: \(tally(early))")
        XCTAssertGreaterThanOrEqual(late.count, 20, "too few connections after the reload")
        XCTAssertEqual(Set(late), ["c", "d"], "after 'reloaded': \(tally(late))")
    }

    /// A broken file on SIGHUP: `reload failed: FILE:LINE: 'KEYWORD': …` and the old servers
    /// keep serving. A later good file still reloads.
    func testSIGHUPWithBrokenFileKeepsOldServers() throws {
        let servers = try startStampServers(["a", "b", "c", "d"])
        let bind = "127.0.0.1:\(try freePort())"
        let good = listenConfig(bind: bind, servers: Array(servers[0..<2]))
        let config = try TempConfigFile(good)
        let (balancer, port) = try startBalancer(["--config", config.path])
        assertRotation(try fetchNames(port: port, count: 4, balancer: balancer), of: ["a", "b"])

        // An unknown keyword appended as the last line of the `listen` section.
        var lines = good.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        lines.append("    frobnicate yes")
        let badLine = lines.count
        try config.rewrite(lines.joined(separator: "\n") + "\n")

        let before = balancer.lineCount
        balancer.signal(SIGHUP)
        let failed = balancer.waitForLine(containing: "balancerd: reload failed:", after: before, timeout: 5)
        XCTAssertNotNil(failed, "no 'reload failed' line\n\(tail(balancer))")
        if let failed {
            XCTAssertTrue(failed.contains("\(config.path):\(badLine): 'frobnicate'"), "the error must name file, line and keyword: \(failed)")
        }
        XCTAssertFalse(balancer.lines[before...].contains { $0.contains("balancerd: reloaded") }, "a broken file was reported as reloaded")
        XCTAssertTrue(balancer.isRunning, "balancerd exited on a broken reload\n\(tail(balancer))")
        assertRotation(try fetchNames(port: port, count: 4, balancer: balancer), of: ["a", "b"])

        // The failed attempt must not wedge reloading.
        try config.rewrite(listenConfig(bind: bind, servers: Array(servers[2..<4])))
        let again = balancer.lineCount
        balancer.signal(SIGHUP)
        XCTAssertNotNil(balancer.waitForLine(containing: "balancerd: reloaded", after: again, timeout: 5), tail(balancer))
        assertRotation(try fetchNames(port: port, count: 4, balancer: balancer), of: ["c", "d"])
    }
}

final class MaxconnTests: XCTestCase {
    /// `global maxconn 2`: with 4 clients, the backends never see more than 2 at once; the
    /// other 2 wait, and are served once 2 clients leave.
    func testGlobalMaxconnLimitsConcurrentConnections() throws {
        let gauge = ConcurrencyGauge()
        let servers = try startStampServers(["h1", "h2"], holdOpen: true, sharedGauge: gauge)
        let config = try TempConfigFile(listenConfig(servers: servers, maxconn: 2))
        let (balancer, port) = try startBalancer(["--config", config.path])

        let first = try (0..<2).map { _ in try TCPClient(port: port) }
        for client in first {
            let name = try client.readLine(timeout: 5)
            XCTAssertNotNil(name, "one of the first two clients got no name\n\(tail(balancer))")
        }
        let waiting = try (0..<2).map { _ in try TCPClient(port: port) }
        for client in waiting {
            XCTAssertNil(try? client.readLine(timeout: 0.5), "a third connection was served with maxconn 2")
        }
        XCTAssertEqual(gauge.total, 2, "backends accepted more than maxconn connections")
        XCTAssertLessThanOrEqual(gauge.max, 2)

        first.forEach { $0.close() }
        for client in waiting {
            let name = try client.readLine(timeout: 5)
            XCTAssertNotNil(name, "a queued client was not served after others left\n\(tail(balancer))")
            if let name { XCTAssertTrue(["h1", "h2"].contains(name), name) }
        }
        XCTAssertEqual(gauge.total, 4)
        XCTAssertLessThanOrEqual(gauge.max, 2, "backends saw \(gauge.max) concurrent connections with maxconn 2")
        waiting.forEach { $0.close() }
    }
}
