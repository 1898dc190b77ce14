// Backends that fail in the middle of an exchange, through the real balancerd and, on the
// same configuration, through the real haproxy: what the client sees (status, bytes, the
// close), the termination state each logs (haproxy's %tsc), and that the other servers of
// the same process keep serving while the fault lasts.
//
// The configuration has two proxies: `listen main` in front of the faulty server, and
// `listen good` in front of two healthy ones, which a second client keeps using meanwhile.

import Foundation
import Glibc
import TestSupport
import XCTest

/// What one client saw of one exchange with a faulty server behind a proxy.
struct FaultObservation: Equatable, CustomStringConvertible {
    /// The status of the response head, nil if no complete head arrived.
    var status: Int?
    /// Body bytes received after the head.
    var bodyBytes: Int
    /// The connection ended (EOF or reset) within the observation's limit.
    var closed: Bool
    /// The termination state of the proxy's log line for the exchange (`SD--`, `sH--`, …).
    var termination: String?
    /// Seconds from the request to the close.
    var elapsed: Double

    var description: String {
        "status \(status.map(String.init) ?? "none"), \(bodyBytes) body bytes, \(closed ? "closed" : "still open") after \(String(format: "%.2f", elapsed)) s, logged \(termination ?? "nothing")"
    }
}

/// A value shared with a helper thread.
final class LockedValue<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}

/// The fields of an httplog or tcplog line that the fault tests compare: `%b/%s`, the
/// status (httplog only) and the termination state.
struct ProxyLogLine {
    var backendServer: String
    var status: Int?
    var termination: String

    /// httplog: `%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc …`;
    /// tcplog: `%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts …`.
    init?(_ line: String, http: Bool) {
        let fields = line.split(separator: " ")
        guard fields.count > (http ? 9 : 6), fields[0].hasPrefix("127.0.0.1:"), fields[1].hasPrefix("["), fields[3].contains("/") else { return nil }
        backendServer = String(fields[3])
        status = http ? Int(fields[5]) : nil
        termination = String(fields[http ? 9 : 6])
        guard termination.count == (http ? 4 : 2) else { return nil }
    }
}

final class BackendFaultTests: XCTestCase {
    // MARK: the two proxies on one configuration

    /// `main` → the faulty server, `good` → the healthy ones; logs to stdout for haproxy.
    func faultConfig(mode: String, mainBind: String, goodBind: String, fault: String, good: [String], settings: [String]) -> String {
        var text = """
            global
                log stdout format raw local0

            defaults
                mode \(mode)
                log global
                option \(mode == "http" ? "httplog" : "tcplog")
                timeout connect 1s
                timeout client 30s
                timeout server 30s

            """
        for line in settings { text += "    \(line)\n" }
        text += "\nlisten main\n    bind \(mainBind)\n    server fault \(fault)\n"
        text += "\nlisten good\n    bind \(goodBind)\n"
        for (i, address) in good.enumerated() { text += "    server ok\(i + 1) \(address)\n" }
        return text
    }

    /// One exchange on a fresh connection: `request`, then raw reads until the close or
    /// `limit` seconds. The log line is the one for server `fault` from `logLines`.
    static func observe(port: UInt16, request: String, http: Bool, limit: Double, logLines: @escaping () -> [String]) throws -> FaultObservation {
        let client = try TCPClient(port: port)
        defer { client.close() }
        let start = monotonicSeconds()
        try client.send(request)
        var received: [UInt8] = []
        var closed = false
        let deadline = Deadline(secondsFromNow: limit)
        reading: while !deadline.hasPassed {
            switch client.read(max: 1 << 16, timeout: min(deadline.remainingSeconds, 0.5)) {
            case .data(let chunk): received += chunk
            case .eof, .error: closed = true; break reading
            case .timeout: continue
            }
        }
        let elapsed = monotonicSeconds() - start
        var status: Int?
        var bodyBytes = received.count
        if http, let end = received.firstRange(of: Array("\r\n\r\n".utf8)) {
            let statusLine = String(decoding: received[..<end.lowerBound], as: UTF8.self).split(separator: "\r\n").first ?? ""
            status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) }
            bodyBytes = received.count - end.upperBound
        }
        var termination: String?
        waitUntil(timeout: 3) {
            termination = logLines().compactMap { ProxyLogLine($0, http: http) }.first { $0.backendServer == "main/fault" }?.termination
            return termination != nil
        }
        return FaultObservation(status: status, bodyBytes: bodyBytes, closed: closed, termination: termination, elapsed: elapsed)
    }

    /// Runs `fault` behind balancerd (while a second client keeps requesting from `good`,
    /// asserting every answer) and behind haproxy, and returns both observations.
    func compareWithHAProxy(mode: String = "http", fault: FaultHTTPServer.Fault, settings: [String],
                            request: String = getRequest("/", extra: "Connection: close\r\n"),
                            limit: Double = 6, file: StaticString = #filePath, line: UInt = #line) throws -> (balancerd: FaultObservation, haproxy: FaultObservation) {
        let http = mode == "http"
        let faulty = try FaultHTTPServer(name: "fault", fault: fault)
        addTeardownBlock { faulty.stop() }
        let good = try startHTTPServers(["ok1", "ok2"])
        let directory = try TempDirectory()
        addTeardownBlock { directory.remove() }

        // balancerd, with the good frontend served meanwhile.
        let ours = try directory.write(faultConfig(mode: mode, mainBind: "127.0.0.1:0", goodBind: "127.0.0.1:0", fault: faulty.address,
                                                   good: good.map(\.address), settings: settings), to: "balancerd.cfg")
        let (balancer, port) = try startBalancer(["--config", ours])
        let goodPort = try balancer.port(frontend: "good")
        let outcome = LockedValue<Result<FaultObservation, any Error>?>(nil)
        let exchange = JoinableThread(name: "ts-fault") {
            let result = Result { try Self.observe(port: port, request: request, http: http, limit: limit, logLines: { balancer.stderrLines }) }
            outcome.withLock { $0 = result }
        }
        var served: [String: Int] = [:]
        var failures: [String] = []
        repeat {
            do {
                let response = try sendHTTPRequest(port: goodPort, method: "GET", target: "/", timeout: 3)
                if response.status == 200 { served[response.bodyText, default: 0] += 1 } else { failures.append("\(response.status)") }
            } catch {
                failures.append("\(error)")
            }
            sleepSeconds(0.05)
        } while outcome.withLock({ $0 == nil })
        exchange.join()
        let ourObservation = try XCTUnwrap(outcome.withLock { $0 }).get()
        XCTAssertEqual(failures, [], "the other servers failed while the fault lasted\n\(tail(balancer))", file: file, line: line)
        XCTAssertEqual(Set(served.keys), ["ok1", "ok2"], "the other servers while the fault lasted: \(served)", file: file, line: line)

        // haproxy on the same configuration (its ports chosen here: it cannot report port 0).
        let (mainPort, goodHAPort) = (try freePort(), try freePort())
        let theirs = try directory.write(faultConfig(mode: mode, mainBind: "127.0.0.1:\(mainPort)", goodBind: "127.0.0.1:\(goodHAPort)",
                                                     fault: faulty.address, good: good.map(\.address), settings: settings), to: "haproxy.cfg")
        let haproxy = try HAProxyProcess(configPath: theirs, port: mainPort)
        addTeardownBlock { haproxy.stop() }
        let reference = try Self.observe(port: mainPort, request: request, http: http, limit: limit,
                                    logLines: { haproxy.outputText.split(separator: "\n").map(String.init) })
        print("\(name): balancerd \(ourObservation); haproxy \(reference)")
        return (ourObservation, reference)
    }

    // MARK: HTTP

    /// The server sends the head and 1000 bytes of a 100000-byte body, then resets. The
    /// client has its 200 and the 1000 bytes, then the close; both log SD--.
    func testHTTPServerResetMidResponse() throws {
        let (ours, theirs) = try compareWithHAProxy(fault: .resetMidResponse(sent: 1000, length: 100_000), settings: [])
        XCTAssertEqual(ours.status, 200, "\(ours)")
        XCTAssertEqual(ours.bodyBytes, 1000, "\(ours)")
        XCTAssertTrue(ours.closed, "\(ours)")
        XCTAssertLessThan(ours.elapsed, 3, "the client was not cut off promptly: \(ours)")
        XCTAssertEqual(ours.termination, "SD--", "\(ours)")
        XCTAssertEqual(ours.status, theirs.status, "haproxy: \(theirs)")
        XCTAssertEqual(ours.termination, theirs.termination, "haproxy: \(theirs)")
    }

    /// The server sends a head announcing 1000 bytes and then nothing: after `timeout
    /// server` (1 s) the client, which has the 200 head, is cut off; both log sD--.
    func testHTTPServerStopsAfterTheResponseHead() throws {
        let (ours, theirs) = try compareWithHAProxy(fault: .stopAfterHead(length: 1000), settings: ["timeout server 1s"])
        XCTAssertEqual(ours.status, 200, "\(ours)")
        XCTAssertEqual(ours.bodyBytes, 0, "\(ours)")
        XCTAssertTrue(ours.closed, "the client was never cut off: \(ours)")
        XCTAssertGreaterThanOrEqual(ours.elapsed, 0.9, "cut off before timeout server: \(ours)")
        XCTAssertEqual(ours.termination, "sD--", "\(ours)")
        XCTAssertEqual(ours.status, theirs.status, "haproxy: \(theirs)")
        XCTAssertEqual(ours.termination, theirs.termination, "haproxy: \(theirs)")
    }

    /// The server accepts and never reads: 504 after `timeout server`, logged sH--.
    func testHTTPServerThatNeverReads() throws {
        let (ours, theirs) = try compareWithHAProxy(fault: .neverRead, settings: ["timeout server 1s"])
        XCTAssertEqual(ours.status, 504, "\(ours)")
        XCTAssertTrue(ours.closed, "\(ours)")
        XCTAssertGreaterThanOrEqual(ours.elapsed, 0.9, "\(ours)")
        XCTAssertEqual(ours.termination, "sH--", "\(ours)")
        XCTAssertEqual(ours.status, theirs.status, "haproxy: \(theirs)")
        XCTAssertEqual(ours.termination, theirs.termination, "haproxy: \(theirs)")
    }

    /// The body comes one byte a second, `timeout server` is 1.5 s: the timeout runs
    /// between bytes, not over the whole response, so the 3-byte body (3 s) arrives whole.
    func testHTTPServerAnsweringOneByteASecondWithinTimeoutServer() throws {
        let body = Array("abc".utf8)
        let (ours, theirs) = try compareWithHAProxy(
            fault: .trickle(head: FaultHTTPServer.head(name: "fault", length: body.count), body: body, interval: 1),
            settings: ["timeout server 1500ms"], limit: 8)
        XCTAssertEqual(ours.status, 200, "\(ours)")
        XCTAssertEqual(ours.bodyBytes, body.count, "\(ours)")
        XCTAssertGreaterThan(ours.elapsed, 2.5, "the body cannot have come faster than the server sent it: \(ours)")
        XCTAssertTrue(ours.closed, "\(ours)")
        XCTAssertEqual(ours.termination, "----", "\(ours)")
        XCTAssertEqual(ours.status, theirs.status, "haproxy: \(theirs)")
        XCTAssertEqual(ours.bodyBytes, theirs.bodyBytes, "haproxy: \(theirs)")
        XCTAssertEqual(ours.termination, theirs.termination, "haproxy: \(theirs)")
    }

    /// One byte a second against `timeout server 400ms`: the client has the head and the
    /// first byte, then the close; both log sD--.
    func testHTTPServerAnsweringOneByteASecondPastTimeoutServer() throws {
        let body = Array("slow".utf8)
        let (ours, theirs) = try compareWithHAProxy(
            fault: .trickle(head: FaultHTTPServer.head(name: "fault", length: body.count), body: body, interval: 1),
            settings: ["timeout server 400ms"], limit: 6)
        XCTAssertEqual(ours.status, 200, "\(ours)")
        XCTAssertLessThan(ours.bodyBytes, body.count, "\(ours)")
        XCTAssertTrue(ours.closed, "\(ours)")
        XCTAssertEqual(ours.termination, "sD--", "\(ours)")
        XCTAssertEqual(ours.status, theirs.status, "haproxy: \(theirs)")
        XCTAssertEqual(ours.termination, theirs.termination, "haproxy: \(theirs)")
    }

    // MARK: TCP

    /// TCP: the server sends 1000 bytes (a head and part of a body, to the proxy only
    /// bytes) and resets: the client has the bytes and then the close, as through haproxy.
    /// balancerd logs SD, the manual's code for a server abort in the data phase.
    func testTCPServerResetMidResponse() throws {
        let (ours, theirs) = try compareWithHAProxy(mode: "tcp", fault: .resetMidResponse(sent: 1000, length: 100_000), settings: [])
        XCTAssertEqual(ours.bodyBytes, FaultHTTPServer.head(name: "fault", length: 100_000).count + 1000, "\(ours)")
        XCTAssertTrue(ours.closed, "\(ours)")
        XCTAssertEqual(ours.termination, "SD", "\(ours)")
        // The client sees the same; haproxy 2.6 logs this one CC (see PARITY.md).
        XCTAssertEqual(ours.bodyBytes, theirs.bodyBytes, "haproxy: \(theirs)")
        XCTAssertEqual(ours.closed, theirs.closed, "haproxy: \(theirs)")
    }

    /// TCP: the server accepts and never reads nor writes: `timeout server` ends it, as
    /// in haproxy; balancerd logs sD, the manual's code for a server timeout in the data phase.
    func testTCPServerThatNeverReads() throws {
        let (ours, theirs) = try compareWithHAProxy(mode: "tcp", fault: .neverRead, settings: ["timeout server 1s"])
        XCTAssertEqual(ours.bodyBytes, 0, "\(ours)")
        XCTAssertTrue(ours.closed, "\(ours)")
        XCTAssertGreaterThanOrEqual(ours.elapsed, 0.9, "\(ours)")
        XCTAssertEqual(ours.termination, "sD", "\(ours)")
        // The client sees the same; haproxy 2.6 logs this one -- (see PARITY.md).
        XCTAssertEqual(ours.bodyBytes, theirs.bodyBytes, "haproxy: \(theirs)")
        XCTAssertEqual(ours.closed, theirs.closed, "haproxy: \(theirs)")
    }

    // MARK: a frozen server

    /// A server frozen with SIGSTOP: its kernel still completes connects and takes the
    /// request, so the client waits `timeout server` (1 s) and gets a 504 (sH--). Then the
    /// server is held down passively: the next requests all go to the other server at once,
    /// none waits on the frozen one again.
    func testFrozenServerGives504ThenIsPassedOver() throws {
        let frozen = try ServerProcess.pythonHTTPServer()
        addTeardownBlock { frozen.stop() }
        let good = try startHTTPServers(["ok1"])
        let (balancer, port) = try startHTTPBalancer(config: httpConfig(
            servers: [("frozen", frozen.address), ("ok1", good[0].address)], settings: ["timeout server 1s"]))
        // Both answer before the freeze.
        let before = try (0..<4).map { _ in try sendHTTPRequest(port: port, method: "GET", target: "/", timeout: 5) }
        XCTAssertEqual(before.map(\.status), [200, 200, 200, 200], tail(balancer))

        frozen.signal(SIGSTOP)
        var statuses: [Int] = []
        var sawTimeout = false
        // Round robin sends one of the first two requests to the frozen server.
        for _ in 0..<2 where !sawTimeout {
            let start = monotonicSeconds()
            let response = try sendHTTPRequest(port: port, method: "GET", target: "/", timeout: 5)
            statuses.append(response.status)
            if response.status == 504 {
                sawTimeout = true
                XCTAssertGreaterThanOrEqual(monotonicSeconds() - start, 0.9, "504 before timeout server")
            }
        }
        XCTAssertTrue(sawTimeout, "no 504 from the frozen server: \(statuses)\n\(tail(balancer))")
        XCTAssertTrue(waitUntil(timeout: 3) { httpLogLines(balancer).contains { $0.server == "frozen" && $0.status == 504 && $0.termination == "sH--" } },
                      "no 504 sH-- line for the frozen server\n\(tail(balancer))")

        // Held down: the next six go to ok1, each at once.
        for i in 0..<6 {
            let start = monotonicSeconds()
            let response = try sendHTTPRequest(port: port, method: "GET", target: "/", timeout: 5)
            XCTAssertEqual(response.status, 200, "request \(i + 1) after the 504: \(response)\n\(tail(balancer))")
            XCTAssertEqual(response.bodyText, "ok1", "request \(i + 1) after the 504 went to the frozen server")
            XCTAssertLessThan(monotonicSeconds() - start, 0.9, "request \(i + 1) waited on the frozen server")
        }
        frozen.signal(SIGCONT)
    }
}
