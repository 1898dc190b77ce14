// Parity with the real haproxy: each test exports the run's haproxy.cfg with
// `balancerd export-haproxy --config FILE`, checks it with `haproxy -c -f`, starts haproxy on
// it and balancerd on the same file (only the bind port differs, since both run at once) in
// front of the same name-stamping backends, sends both the same requests and compares what
// the clients saw. Benchmarks/parity.py does the same at more length and writes PARITY.md.
//
// The files set `global maxconn 2000`: haproxy refuses to start when it cannot raise its fd
// limit to about 2 x maxconn, and the default (10000) needs more than the usual hard limit.
// haproxy missing is a failure ("haproxy not installed; run .ci/run"), never a skip.

import Foundation
import Glibc
import TestSupport
import XCTest

final class ParityTests: XCTestCase {
    private struct Pair {
        let haproxy: HAProxyProcess
        let balancer: BalancerdProcess
        let balancerPort: UInt16
        var haproxyPort: UInt16 { haproxy.port }
        /// Both outputs, for failure messages.
        var output: String { "haproxy:\n\(haproxy.outputText)\n\(tail(balancer))" }
    }

    /// A `listen main` file with `{bind}` for the address; `servers` are (name, address, options).
    private func parityConfig(mode: String = "http", servers: [(String, String, String)]) -> String {
        var text = """
            global
                maxconn 2000

            defaults
                mode \(mode)
                timeout connect 1s
                timeout client 10s
                timeout server 10s
                retries 3
                option redispatch

            listen main
                bind {bind}
                balance roundrobin

            """
        for (name, address, options) in servers {
            text += "    server \(name) \(address)\(options.isEmpty ? "" : " " + options)\n"
        }
        return text
    }

    private func temporaryDirectory() throws -> TempDirectory {
        let directory = try TempDirectory(prefix: "balancerd-parity")
        addTeardownBlock { directory.remove() }
        return directory
    }

    /// `balancerd export-haproxy arguments`, checked by `haproxy -c -f`; returns the file's path.
    private func exportChecked(_ arguments: [String], into directory: TempDirectory, name: String,
                               file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let export = try BalancerdProcess.run(["export-haproxy"] + arguments)
        guard export.exitCode == 0 else {
            XCTFail("export-haproxy \(arguments) exited \(export.exitCode): \(export.allText)", file: file, line: line)
            throw TestSupportError("export failed")
        }
        let path = try directory.write(export.stdoutText + "\n", to: name)
        let check = try HAProxyProcess.check(configPath: path)
        guard check.exitCode == 0 else {
            XCTFail("haproxy -c -f rejects the export of \(arguments) (exit \(check.exitCode)):\n\(check.allText)\n--- file:\n\(export.stdoutText)",
                    file: file, line: line)
            throw TestSupportError("haproxy -c failed")
        }
        return path
    }

    /// haproxy on the export of `config` (bound to a free port) and balancerd on `config`.
    private func startPair(_ config: String) throws -> Pair {
        let directory = try temporaryDirectory()
        let port = try freePort()
        let haproxyInput = try directory.write(config.replacingOccurrences(of: "{bind}", with: "127.0.0.1:\(port)"), to: "haproxy-input.cfg")
        let balancerInput = try directory.write(config.replacingOccurrences(of: "{bind}", with: "127.0.0.1:0"), to: "balancerd.cfg")
        let exported = try exportChecked(["--config", haproxyInput], into: directory, name: "haproxy.cfg")
        let haproxy = try HAProxyProcess(configPath: exported, port: port)
        addTeardownBlock { haproxy.stop() }
        let (balancer, balancerPort) = try startBalancer(["--quiet", "--config", balancerInput])
        return Pair(haproxy: haproxy, balancer: balancer, balancerPort: balancerPort)
    }

    /// The names stamped on `count` answers: each on a new connection, or all on one
    /// keep-alive connection. A non-200 answer shows as `<status>`.
    private func names(port: UInt16, count: Int, keepAlive: Bool = false) throws -> [String] {
        var names: [String] = []
        let shared: HTTPClientConnection? = keepAlive ? try HTTPClientConnection(port: port) : nil
        defer { shared?.close() }
        for _ in 0..<count {
            let connection = try shared ?? HTTPClientConnection(port: port)
            try connection.send(getRequest("/", extra: keepAlive ? "" : "Connection: close\r\n"))
            let response = try connection.readResponse(timeout: 5)
            names.append(response.status == 200 ? response.bodyText : "<\(response.status)>")
            if !keepAlive { connection.close() }
        }
        return names
    }

    /// The status of the first answer to `raw` on a new connection; 0 if none came.
    private func status(port: UInt16, _ raw: String) throws -> Int {
        let connection = try HTTPClientConnection(port: port)
        defer { connection.close() }
        try? connection.send(raw)
        return (try? connection.readResponseIfAny(timeout: 3))??.status ?? 0
    }

    // MARK: - Balancing

    func testEqualWeightsRotateTheSameCycleAsHAProxy() throws {
        let servers = try startHTTPServers(["s1", "s2", "s3"])
        let pair = try startPair(parityConfig(servers: servers.map { ($0.name, $0.address, "") }))
        for keepAlive in [false, true] {
            let h = try names(port: pair.haproxyPort, count: 12, keepAlive: keepAlive)
            let b = try names(port: pair.balancerPort, count: 12, keepAlive: keepAlive)
            let cycle = Array(h.prefix(3))
            XCTAssertEqual(Set(cycle), ["s1", "s2", "s3"], "haproxy, keepAlive \(keepAlive): \(h)")
            assertRotation(h, of: cycle)
            assertRotation(b, of: cycle)  // the same cycle, starting anywhere in it
        }
    }

    /// The same split over 100 requests (exact counts) and the heavy server bunched no more
    /// than haproxy bunches it.
    private func assertSameSplit(weights: [Int], file: StaticString = #filePath, line: UInt = #line) throws {
        let servers = try startHTTPServers(weights.indices.map { "s\($0 + 1)" })
        let pair = try startPair(parityConfig(servers: zip(servers, weights).map { ($0.name, $0.address, "weight \($1)") }))
        let h = try names(port: pair.haproxyPort, count: 100)
        let b = try names(port: pair.balancerPort, count: 100)
        let total = weights.reduce(0, +)
        let expected = Dictionary(uniqueKeysWithValues: zip(servers.map(\.name), weights.map { 100 * $0 / total }))
        XCTAssertEqual(tally(h), expected, "haproxy's split", file: file, line: line)
        XCTAssertEqual(tally(b), tally(h), "balancerd's split differs from haproxy's", file: file, line: line)
        let heavy = servers.last!.name
        XCTAssertLessThanOrEqual(
            longestRun(of: heavy, in: b), longestRun(of: heavy, in: h),
            "balancerd bunches \(heavy) more than haproxy:\nhaproxy   \(h.prefix(20))\nbalancerd \(b.prefix(20))",
            file: file, line: line)
    }

    func testWeights1To3SplitAsHAProxy() throws {
        try assertSameSplit(weights: [1, 3])
    }

    func testWeights2To3To5SplitAsHAProxy() throws {
        try assertSameSplit(weights: [2, 3, 5])
    }

    func testBackupServesOnlyWhenEveryPrimaryIsDown() throws {
        let primaries = try startHTTPServers(["s1", "s2"])
        let spare = try startHTTPServers(["b1"])[0]
        let check = "check inter 200ms fall 1 rise 1"
        let pair = try startPair(parityConfig(servers: [
            ("s1", primaries[0].address, check), ("s2", primaries[1].address, check), ("b1", spare.address, "backup " + check),
        ]))
        sleepSeconds(0.5)  // a couple of check rounds
        let hUp = try names(port: pair.haproxyPort, count: 8)
        let bUp = try names(port: pair.balancerPort, count: 8)
        XCTAssertEqual(tally(hUp), ["s1": 4, "s2": 4], "haproxy with both primaries up")
        XCTAssertEqual(tally(bUp), tally(hUp), "balancerd with both primaries up\n\(pair.output)")

        primaries.forEach { $0.stop() }
        // fall 1 at 200ms: both notice within a round or two; wait until haproxy serves the backup.
        XCTAssertTrue(waitUntil(timeout: 5) { (try? self.names(port: pair.haproxyPort, count: 1)) == ["b1"] }, "haproxy never used b1")
        sleepSeconds(0.4)
        let hDown = try names(port: pair.haproxyPort, count: 6)
        let bDown = try names(port: pair.balancerPort, count: 6)
        XCTAssertEqual(hDown, Array(repeating: "b1", count: 6), "haproxy with every primary down")
        XCTAssertEqual(bDown, hDown, "balancerd with every primary down\n\(pair.output)")
    }

    func testAllServersDownAnswer503AsHAProxy() throws {
        // Nothing listens on these ports: every connect is refused.
        let ports = try [freePort(), freePort()]
        let pair = try startPair(parityConfig(servers: [("s1", "127.0.0.1:\(ports[0])", ""), ("s2", "127.0.0.1:\(ports[1])", "")]))
        for port in [pair.haproxyPort, pair.balancerPort] {
            let connection = try connectHTTP(port)
            try connection.send(getRequest("/", extra: "Connection: close\r\n"))
            XCTAssertEqual(try connection.readResponse(timeout: 10).status, 503, "port \(port)\n\(pair.output)")
        }
    }

    // MARK: - Malformed requests

    private static let host = "Host: parity.test\r\n"
    private static let post = "POST / HTTP/1.1\r\n\(host)"

    /// Both answer 400.
    private static let agreed: [(String, String)] = [
        ("request line without version", "GET /\r\n\(host)\r\n"),
        ("request line with extra word", "GET / HTTP/1.1 extra\r\n\(host)\r\n"),
        ("bad version", "GET / FOO/1.1\r\n\(host)\r\n"),
        ("non-token char in method", "G(T / HTTP/1.1\r\n\(host)\r\n"),
        ("space before colon", "GET / HTTP/1.1\r\nHost : parity.test\r\n\r\n"),
        ("non-token char in field name", "GET / HTTP/1.1\r\n\(host)X(Bad): 1\r\n\r\n"),
        ("bare CR in a value", "GET / HTTP/1.1\r\n\(host)X-A: a\rb\r\n\r\n"),
        ("Content-Length: abc", post + "Content-Length: abc\r\n\r\n"),
        ("Content-Length: -1", post + "Content-Length: -1\r\n\r\n"),
        ("two differing Content-Length", post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("overflowing Content-Length", post + "Content-Length: 99999999999999999999999\r\n\r\n"),
        ("bad chunk size", post + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("Transfer-Encoding: gzip", post + "Transfer-Encoding: gzip\r\n\r\nhello"),
        ("two different Host", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
    ]

    /// Where balancerd differs on purpose: (case, request, haproxy 2.6's status, balancerd's).
    private static let intendedDifferences: [(String, String, Int, Int)] = [
        ("101 header fields (431: a size limit)",
         "GET / HTTP/1.1\r\n\(host)" + (1...101).map { "X-F\($0): v\r\n" }.joined() + "\r\n", 400, 431),
        ("head over 16 KiB (431)", "GET / HTTP/1.1\r\n\(host)X-Big: \(String(repeating: "a", count: 17 * 1024))\r\n\r\n", 400, 431),
        ("Content-Length with Transfer-Encoding", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 200, 400),
        ("Transfer-Encoding with Content-Length", post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 200, 400),
        ("obs-fold continuation line", "GET / HTTP/1.1\r\n\(host)X-A: a\r\n b\r\n\r\n", 200, 400),
        ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 200, 400),
        ("NUL in a value", "GET / HTTP/1.1\r\n\(host)X-A: a\0b\r\n\r\n", 200, 400),
        ("request line with double space", "GET  / HTTP/1.1\r\n\(host)\r\n", 200, 400),
    ]

    func testMalformedRequestStatusesMatchHAProxyExceptWhereIntended() throws {
        let server = try startHTTPServers(["s1"])[0]
        let pair = try startPair(parityConfig(servers: [("s1", server.address, "")]))
        var failures: [String] = []
        for (what, raw) in Self.agreed {
            let h = try status(port: pair.haproxyPort, raw)
            let b = try status(port: pair.balancerPort, raw)
            if h != 400 || b != 400 { failures.append("\(what): haproxy \(h), balancerd \(b) (want 400 from both)") }
        }
        for (what, raw, wantH, wantB) in Self.intendedDifferences {
            let h = try status(port: pair.haproxyPort, raw)
            let b = try status(port: pair.balancerPort, raw)
            if (h, b) != (wantH, wantB) { failures.append("\(what): haproxy \(h), balancerd \(b) (want \(wantH), \(wantB))") }
        }
        XCTAssertEqual(failures, [], "\n" + failures.joined(separator: "\n") + "\n\(pair.output)")
        // A good request after the corpus, on both: neither is stuck.
        XCTAssertEqual(try names(port: pair.haproxyPort, count: 1), ["s1"])
        XCTAssertEqual(try names(port: pair.balancerPort, count: 1), ["s1"])
    }

    // MARK: - Export

    func testHAProxyAcceptsEveryExport() throws {
        let directory = try temporaryDirectory()
        let weights = [0, 1, 2, 100, 255, 256]
        var multi = """
            global
                maxconn 2000

            defaults
                mode http
                timeout connect 1s
                timeout client 10s
                timeout server 10s

            frontend web
                bind 127.0.0.1:18181
                bind 127.0.0.1:18182
                default_backend app

            frontend db
                bind 127.0.0.1:18183
                mode tcp
                default_backend pg

            backend app
                balance roundrobin

            """
        for (i, weight) in weights.enumerated() {
            multi += "    server a\(i) 127.0.0.1:\(9100 + i) weight \(weight)\(i % 2 == 0 ? " check" : " check inter 500ms rise 2 fall 3")\n"
        }
        multi += "    server ab 127.0.0.1:9199 backup check\n    option allbackups\n"
        multi += "\nbackend pg\n    mode tcp\n    timeout server 1m\n    retries 1\n    no option redispatch\n"
        multi += "    server p1 127.0.0.1:9201\n    server p2 127.0.0.1:9202 backup\n"
        let tcpListen = parityConfig(mode: "tcp", servers: [("s1", "127.0.0.1:9301", ""), ("s2", "127.0.0.1:9302", "weight 3 backup")])
            .replacingOccurrences(of: "{bind}", with: "127.0.0.1:18184")
        let configs = [
            "multi.cfg": multi,
            "tcp-listen.cfg": tcpListen,
        ]
        for (name, text) in configs.sorted(by: { $0.key < $1.key }) {
            let path = try directory.write(text, to: name)
            XCTAssertNoThrow(try exportChecked(["--config", path], into: directory, name: "export-" + name), name)
        }
        let flagRuns: [[String]] = [
            ["--listen", "127.0.0.1:18185", "--server", "127.0.0.1:9401", "--server", "127.0.0.1:9402,weight=3"],
            ["--mode", "tcp", "--listen", "127.0.0.1:18186", "--server", "127.0.0.1:9501,weight=0",
             "--server", "127.0.0.1:9502,weight=256", "--server", "127.0.0.1:9503,backup"],
        ]
        for (i, flags) in flagRuns.enumerated() {
            XCTAssertNoThrow(try exportChecked(flags, into: directory, name: "export-flags-\(i).cfg"), "\(flags)")
        }
    }
}
