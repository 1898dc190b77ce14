// Shared pieces of the integration tests: start backends and the real balancerd with
// automatic cleanup, fetch names, and describe what went wrong with the daemon's output.

import Foundation
import Glibc
import TestSupport
import XCTest

extension XCTestCase {
    /// Name-stamping backends, stopped when the test ends.
    func startStampServers(_ names: [String], holdOpen: Bool = false, sharedGauge: ConcurrencyGauge? = nil) throws -> [NameStampServer] {
        try names.map { name in
            let server = try NameStampServer(name: name, holdOpen: holdOpen, sharedGauge: sharedGauge)
            addTeardownBlock { server.stop() }
            return server
        }
    }

    /// Starts balancerd with `arguments`, waits for the `main` frontend's startup line and
    /// returns the process and the port it listens on. Stopped (SIGTERM, then SIGKILL) when
    /// the test ends.
    func startBalancer(_ arguments: [String], frontend: String = "main") throws -> (BalancerdProcess, UInt16) {
        let balancer = supervise(try BalancerdProcess(arguments: arguments))
        let port = try balancer.port(frontend: frontend)
        return (balancer, port)
    }

    /// A balancerd the test started: stopped (SIGTERM, then SIGKILL after `stopTimeout`)
    /// when the test ends, and under the test's watchdog. A test stuck on a balancerd
    /// that crashed or wedged: killing it ends every connection to it, so the test's
    /// blocked reads return and it fails on its own instead of holding CI until its limit.
    @discardableResult
    func supervise(_ balancer: BalancerdProcess, stopTimeout: Double = 3) -> BalancerdProcess {
        let watchdog = armWatchdog()
        addTeardownBlock { balancer.stop(timeout: stopTimeout) }
        watchdog.onFire { balancer.kill() }
        return balancer
    }

    /// The time limit of the running test (see TestSupport's Watchdog), armed by the first
    /// call in a test: `$BALANCERD_TEST_TIME_LIMIT` seconds, 180 by default. Its teardown
    /// fails the test with the watchdog's message (which test, what it waited for) if the
    /// limit passed.
    @discardableResult
    func armWatchdog() -> Watchdog {
        if let current = Watchdog.current, current.label == name { return current }
        let limit = ProcessInfo.processInfo.environment["BALANCERD_TEST_TIME_LIMIT"].flatMap(Double.init) ?? 180
        let watchdog = Watchdog(label: name, limit: limit)
        addTeardownBlock {
            if let message = watchdog.cancel() { XCTFail(message) }
        }
        return watchdog
    }

    /// `--listen 127.0.0.1:0 --mode tcp --server A --server B …` (servers s1, s2, … in order).
    func flagArguments(servers: [String], extra: [String] = []) -> [String] {
        ["--listen", "127.0.0.1:0", "--mode", "tcp"] + servers.flatMap { ["--server", $0] } + extra
    }

    /// `count` sequential connections, each returning the name its backend stamped.
    func fetchNames(port: UInt16, count: Int, balancer: BalancerdProcess, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        var names: [String] = []
        for i in 0..<count {
            do {
                names.append(try fetchName(port: port, timeout: 5))
            } catch {
                XCTFail("connection \(i + 1) of \(count) failed: \(error)\n\(tail(balancer))", file: file, line: line)
                throw error
            }
        }
        return names
    }
}

/// The last lines balancerd printed, for failure messages.
func tail(_ balancer: BalancerdProcess, _ count: Int = 40) -> String {
    "balancerd output (last \(count) lines):\n" + balancer.lines.suffix(count).joined(separator: "\n")
}

/// A haproxy-syntax configuration with one `listen main` section.
func listenConfig(bind: String = "127.0.0.1:0", servers: [(name: String, address: String, options: String)], maxconn: Int? = nil) -> String {
    var text = ""
    if let maxconn {
        text += "global\n    maxconn \(maxconn)\n"
    }
    text += """
        defaults
            mode tcp
            timeout connect 1s
            timeout client 30s
            timeout server 30s

        listen main
            bind \(bind)

        """
    for server in servers {
        text += "    server \(server.name) \(server.address)\(server.options.isEmpty ? "" : " " + server.options)\n"
    }
    return text
}

func listenConfig(bind: String = "127.0.0.1:0", servers: [NameStampServer], maxconn: Int? = nil) -> String {
    listenConfig(bind: bind, servers: servers.map { ($0.name, $0.address, "") }, maxconn: maxconn)
}

/// The longest run of consecutive `name` in `names`.
func longestRun(of name: String, in names: [String]) -> Int {
    var best = 0
    var current = 0
    for n in names {
        current = n == name ? current + 1 : 0
        best = max(best, current)
    }
    return best
}

/// How many times each name occurs.
func tally(_ names: [String]) -> [String: Int] {
    names.reduce(into: [:]) { $0[$1, default: 0] += 1 }
}

/// Asserts `names` is `cycle` repeated, starting anywhere in the cycle (s2,s3,s1,s2,…).
func assertRotation(_ names: [String], of cycle: [String], file: StaticString = #filePath, line: UInt = #line) {
    guard let first = names.first, let offset = cycle.firstIndex(of: first) else {
        return XCTFail("\(names) does not start with one of \(cycle)", file: file, line: line)
    }
    let expected = (0..<names.count).map { cycle[(offset + $0) % cycle.count] }
    XCTAssertEqual(names, expected, "not a strict rotation of \(cycle)", file: file, line: line)
}

/// True if a fresh connection through the proxy at `port` gets its bytes echoed back: the
/// proxy accepted it and forwarded it. A refused, reset or unanswered connection is false.
func newConnectionIsServed(port: UInt16) -> Bool {
    guard let client = try? TCPClient(port: port, connectTimeout: 0.5) else { return false }
    defer { client.close() }
    guard (try? client.send("ping\n")) != nil else { return false }
    client.shutdownWrite()
    guard let reply = try? client.readAll(timeout: 0.5) else { return false }
    return reply == Array("ping\n".utf8)
}

/// Sends an HTTP/1.1 `GET /` with `Connection: close` and returns (status line, trimmed body).
func httpGet(port: UInt16, path: String = "/", timeout: Double = 5) throws -> (status: String, body: String) {
    let client = try TCPClient(port: port, connectTimeout: timeout)
    defer { client.close() }
    try client.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    let response = try client.readAll(timeout: timeout)
    guard let headEnd = response.firstRange(of: Array("\r\n\r\n".utf8)) else {
        throw TestSupportError("no complete HTTP head in \(response.count) bytes: \(String(decoding: response, as: UTF8.self))")
    }
    let head = String(decoding: response[..<headEnd.lowerBound], as: UTF8.self)
    let body = String(decoding: response[headEnd.upperBound...], as: UTF8.self)
    let status = head.split(separator: "\r\n").first.map(String.init) ?? ""
    return (status, body.trimmingCharacters(in: .whitespacesAndNewlines))
}
