// TLS towards servers in TCP mode (`mode tcp` with `server ... ssl`): balancerd is a TLS
// client of the server and relays the client's bytes through it, plain or TLS on the
// client side. The backends are TLSEchoServer (Python's ssl over Debian's libssl): echo
// servers that report the SNI they saw, how many bytes came and how the stream ended,
// name-stamping servers, and a server that never answers the handshake.
//
// haproxy 2.6 on the same situations (measured with `mode tcp`, `retries 1`,
// `timeout connect 1s`): a server that stalls its handshake is a connect timeout
// (`sC`, each attempt bounded by `timeout connect`: Tt 2003 for two attempts); a
// certificate that does not verify, or a server that is not TLS, is a refused connect
// (`SC`, Tc -1, retried as a refused SYN would be).

import Foundation
import Glibc
import TestSupport
import XCTest

final class TLSTCPServerTests: XCTestCase {
    /// A tcplog line: `%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq`.
    private struct LogLine: CustomStringConvertible {
        let text: String
        let clientPort: UInt16
        let frontend: String
        let server: String
        let connect: Int
        let total: Int
        let bytes: Int
        let termination: String
        /// `%rc`; a leading `+` (a redispatch) is kept.
        let retries: String
        var description: String { text }
    }

    private let logPattern = try! Regex(
        #"^127\.0\.0\.1:(\d+) \[[^\]]+\] (\S+) \S+/(\S+) -?\d+/(-?\d+)/(\d+) (\d+) (\S\S) \d+/\d+/\d+/\d+/(\+?\d+) \d+/\d+$"#)

    private func logLines(_ balancer: BalancerdProcess, frontend: String) -> [LogLine] {
        balancer.stderrLines.compactMap { text in
            guard let m = text.wholeMatch(of: logPattern) else { return nil }
            let f = (1..<m.output.count).map { m.output[$0].substring.map(String.init) ?? "" }
            guard f[1] == frontend else { return nil }
            return LogLine(text: text, clientPort: UInt16(f[0]) ?? 0, frontend: f[1], server: f[2], connect: Int(f[3]) ?? -2,
                           total: Int(f[4]) ?? -1, bytes: Int(f[5]) ?? -1, termination: f[6], retries: f[7])
        }
    }

    /// Waits until `frontend` logged `count` lines, and returns them.
    private func waitForLogLines(_ balancer: BalancerdProcess, frontend: String, count: Int,
                                 file: StaticString = #filePath, line: UInt = #line) throws -> [LogLine] {
        guard waitUntil(timeout: 15, { logLines(balancer, frontend: frontend).count >= count }) else {
            XCTFail("expected \(count) log lines of \(frontend)\n\(tail(balancer))", file: file, line: line)
            throw TestSupportError("log lines missing")
        }
        return logLines(balancer, frontend: frontend)
    }

    /// A client in Python that sends `total` bytes (a varying pattern) while reading what
    /// comes back, through plain TCP or (with `sni`) TLS, without verifying the proxy's
    /// certificate. A plain client half-closes once everything is sent and reads to EOF; a
    /// TLS client reads `total` bytes back and closes. Prints
    /// `RECEIVED DIGESTS-MATCH eof|open plain|TLSVERSION`.
    private func echoClient(port: UInt16, total: Int, sni: String? = nil) throws -> ProcessResult {
        let script = #"""
            import hashlib, select, socket, ssl, sys
            port, total, sni = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            tls = sni != "-"
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s = ctx.wrap_socket(s, server_hostname=sni)
            s.setblocking(False)
            block = bytes(range(256)) * 256
            sent, got = hashlib.sha256(), hashlib.sha256()
            n = received = 0
            pending = b""
            half_closed = eof = False
            while not eof:
                want_write = n < total or pending
                r, w, _ = select.select([s], [s] if want_write else [], [], 30)
                if not r and not w:
                    break
                if w:
                    if not pending and n < total:
                        pending = bytes([n // len(block) % 251]) + block[1 : min(len(block), total - n)]
                    try:
                        k = s.send(pending)
                        sent.update(pending[:k]); n += k; pending = pending[k:]
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        pass
                if not tls and n == total and not pending and not half_closed:
                    s.shutdown(socket.SHUT_WR)
                    half_closed = True
                while True:
                    try:
                        data = s.recv(1 << 16)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        break
                    if not data:
                        eof = True
                        break
                    got.update(data); received += len(data)
                if tls and received >= total:
                    break
            print(received, sent.hexdigest() == got.hexdigest(), "eof" if eof else "open", s.version() if tls else "plain")
            """#
        return try runProcess("/usr/bin/env", ["python3", "-c", script, String(port), String(total), sni ?? "-"], timeout: 120)
    }

    private func start(_ server: TLSEchoServer) -> TLSEchoServer {
        addTeardownBlock { server.stop() }
        return server
    }

    // MARK: - Data

    /// A plain client, balancerd, an `ssl verify none` echo server: 32 MiB go through both
    /// ways intact (SHA-256 of what was sent and what came back). The client half-closes
    /// once it sent everything; the server gets a close_notify then, echoes the rest and
    /// ends its side, and the client reads to EOF.
    func testPlainClientToTLSServerCarries32MiBBothWaysAndHalfCloses() throws {
        let certificates = try TLSCertificates()
        let echo = start(try TLSEchoServer(name: "echo", certificate: try certificates.selfSigned("echo.test")))
        let config = try TempConfigFile("""
            defaults
                mode tcp
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            listen main
                bind 127.0.0.1:0
                server echo \(echo.address) ssl verify none
            """)
        let (balancer, port) = try startBalancer(["--config", config.path])
        let total = 32 << 20
        let result = try echoClient(port: port, total: total)
        XCTAssertEqual(result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines), "\(total) True eof plain",
                       "\(result.allText)\n\(tail(balancer))\n\(echo.outputText)")

        XCTAssertTrue(waitUntil(timeout: 10) { echo.finished.count == 1 }, echo.outputText)
        XCTAssertEqual(echo.finished.first, .init(serverName: "-", protocolVersion: "TLSv1.3", received: total, end: "close_notify"),
                       "no sni configured; the client's FIN reached the server as close_notify\n\(echo.outputText)")
        let logged = try waitForLogLines(balancer, frontend: "main", count: 1)
        XCTAssertEqual(logged.first?.server, "echo")
        XCTAssertEqual(logged.first?.termination, "--", "\(logged)")
        XCTAssertEqual(logged.first?.bytes, total, "bytes from the server, as plaintext: \(logged)")
    }

    /// `bind ... ssl crt` and `server ... ssl verify required ca-file ... sni str(NAME)`:
    /// TLS on both sides, the server's certificate verified against the CA and its name,
    /// the server sees the SNI, and 16 MiB come back intact.
    func testTLSOnBothSidesVerifiesTheServerAndSendsSNI() throws {
        let certificates = try TLSCertificates()
        let authority = try certificates.authority()
        let front = try certificates.selfSigned("front.test")
        let echo = start(try TLSEchoServer(name: "echo", certificate: try certificates.issue("echo.test", by: authority)))
        let config = try TempConfigFile("""
            defaults
                mode tcp
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend main
                bind 127.0.0.1:0 ssl crt \(front.pemPath)
                default_backend echo
            backend echo
                server echo \(echo.address) ssl verify required ca-file \(authority.certificatePath) sni str(echo.test)
            """)
        let (balancer, port) = try startBalancer(["--config", config.path])
        let total = 16 << 20
        let result = try echoClient(port: port, total: total, sni: "front.test")
        XCTAssertEqual(result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines), "\(total) True open TLSv1.3",
                       "\(result.allText)\n\(tail(balancer))\n\(echo.outputText)")

        XCTAssertTrue(waitUntil(timeout: 10) { echo.finished.count == 1 }, echo.outputText)
        XCTAssertEqual(echo.finished.first, .init(serverName: "echo.test", protocolVersion: "TLSv1.3", received: total, end: "close_notify"),
                       echo.outputText)
        let logged = try waitForLogLines(balancer, frontend: "main", count: 1)
        XCTAssertEqual(logged.first?.server, "echo")
        XCTAssertEqual(logged.first?.termination, "--", "\(logged)")
    }

    // MARK: - Failures

    /// A server whose certificate the CA file does not vouch for: its handshake fails, which
    /// is a failed connect. With `no option redispatch` the retry goes to it again, and the
    /// client's connection closes without a byte, logged `SC` with Tc -1 and one retry,
    /// counted as two connection errors of that server; the other server keeps serving.
    /// With `option redispatch` the retry goes to the good server and every client is served.
    /// A server that does not speak TLS at all fails the same way.
    func testAServerThatFailsVerificationIsAFailedConnect() throws {
        let certificates = try TLSCertificates()
        let authority = try certificates.authority()
        let stranger = try certificates.authority("another CA")
        let good = start(try TLSEchoServer(name: "good", certificate: try certificates.issue("good.test", by: authority), behaviour: .stamp))
        let bad = start(try TLSEchoServer(name: "bad", certificate: try certificates.issue("bad.test", by: authority), behaviour: .stamp))
        let plain = try XCTUnwrap(try startStampServers(["plain"]).first)
        let servers = """
                balance roundrobin
                server good \(good.address) ssl verify required ca-file \(authority.certificatePath) sni str(good.test)
                server bad \(bad.address) ssl verify required ca-file \(stranger.certificatePath) sni str(bad.test)
            """
        let config = try TempConfigFile("""
            global
                nbthread 1
            defaults
                mode tcp
                timeout connect 5s
                timeout client 10s
                timeout server 10s
                retries 1
            listen main
                bind 127.0.0.1:0
                no option redispatch
            \(servers)
            listen redispatched
                bind 127.0.0.1:0
                option redispatch
            \(servers)
            listen plain
                bind 127.0.0.1:0
                retries 0
                server plain \(plain.address) ssl verify none
            listen stats
                bind 127.0.0.1:0
                stats enable
                stats uri /
            """)
        let (balancer, port) = try startBalancer(["--config", config.path])
        let redispatchedPort = try balancer.port(frontend: "redispatched")
        let plainPort = try balancer.port(frontend: "plain")
        let statsPort = try balancer.statsPort()

        var received: [UInt16: String] = [:]
        for _ in 0..<4 {
            let client = try TCPClient(port: port)
            let clientPort = try XCTUnwrap(client.localPort)
            received[clientPort] = String(decoding: try client.readAll(timeout: 10), as: UTF8.self)
            client.close()
        }
        let lines = try waitForLogLines(balancer, frontend: "main", count: 4)
        let failed = lines.filter { $0.server == "bad" }
        // Two picks of a rotation over two servers reach `bad` (nothing failed yet then).
        XCTAssertFalse(failed.isEmpty, "\(lines)")
        for line in lines {
            if line.server == "bad" {
                XCTAssertEqual(received[line.clientPort], "", "closed without data: \(line)")
                XCTAssertEqual(line.termination, "SC", "\(line)")
                XCTAssertEqual(line.retries, "1", "\(line)")
                XCTAssertEqual(line.connect, -1, "\(line)")
            } else {
                XCTAssertEqual(line.server, "good")
                XCTAssertEqual(received[line.clientPort], "good\n", "\(line)")
                XCTAssertEqual(line.termination, "--", "\(line)")
            }
        }
        XCTAssertTrue(waitUntil(timeout: 10) { bad.failedHandshakes.count == 2 * failed.count },
                      "every attempt at bad failed its handshake:\n\(bad.outputText)")
        XCTAssertTrue(bad.finished.isEmpty, bad.outputText)

        // haproxy's counters: two connection errors per failed client, one retry.
        let (status, csv) = try httpGet(port: statsPort, path: "/;csv")
        XCTAssertEqual(status, "HTTP/1.1 200 OK")
        let rows = csv.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let header = try XCTUnwrap(rows.first).map { $0.replacingOccurrences(of: "# ", with: "") }
        func column(_ proxy: String, _ server: String, _ name: String) -> String? {
            guard let at = header.firstIndex(of: name),
                  let row = rows.first(where: { $0.count > at && $0[0] == proxy && $0[1] == server }) else { return nil }
            return row[at]
        }
        XCTAssertEqual(column("main", "bad", "econ"), "\(2 * failed.count)", csv)
        XCTAssertEqual(column("main", "bad", "wretr"), "\(failed.count)", csv)
        XCTAssertEqual(column("main", "good", "econ"), "0", csv)

        for i in 0..<4 {
            XCTAssertEqual(try fetchName(port: redispatchedPort, timeout: 10), "good", "client \(i) of redispatched\n\(tail(balancer))")
        }
        let redispatched = try waitForLogLines(balancer, frontend: "redispatched", count: 4)
        XCTAssertEqual(redispatched.map(\.server), ["good", "good", "good", "good"], "\(redispatched)")
        XCTAssertEqual(redispatched.map(\.termination), ["--", "--", "--", "--"], "\(redispatched)")

        // The plain server's `plain\n` is no TLS record: the handshake fails at once.
        let client = try TCPClient(port: plainPort)
        XCTAssertEqual(try client.readAll(timeout: 10), [], "closed without data")
        client.close()
        let refused = try XCTUnwrap(try waitForLogLines(balancer, frontend: "plain", count: 1).first)
        XCTAssertEqual([refused.server, refused.termination, refused.retries], ["plain", "SC", "0"], "\(refused)")
    }

    /// A server that accepts the TCP connection and never answers the ClientHello: each
    /// attempt ends at `timeout connect` (two attempts with `retries 1`), the client's
    /// connection closes without data, and the line says `sC`. Meanwhile the same loop
    /// (`nbthread 1`) serves another client through another TLS server.
    func testAServerThatStallsItsHandshakeTimesOutLikeAConnect() throws {
        let certificates = try TLSCertificates()
        let certificate = try certificates.selfSigned("server.test")
        let stall = start(try TLSEchoServer(name: "stall", certificate: certificate, behaviour: .stall))
        let good = start(try TLSEchoServer(name: "good", certificate: certificate, behaviour: .stamp))
        let config = try TempConfigFile("""
            global
                nbthread 1
            defaults
                mode tcp
                timeout connect 3s
                timeout client 30s
                timeout server 30s
                retries 1
            listen main
                bind 127.0.0.1:0
                server stall \(stall.address) ssl verify none
            listen other
                bind 127.0.0.1:0
                server good \(good.address) ssl verify none
            """)
        let (balancer, port) = try startBalancer(["--config", config.path])
        let otherPort = try balancer.port(frontend: "other")

        // The client sends nothing: bytes it sent would be unread when the session gives
        // up, and the kernel would answer the close with a reset instead of a FIN.
        let waiting = try TCPClient(port: port)
        defer { waiting.close() }
        XCTAssertTrue(waitUntil(timeout: 10) { stall.stalledConnections == 1 }, "\(stall.outputText)\n\(tail(balancer))")
        // The handshake with `stall` is pending; another session on the loop goes on.
        XCTAssertEqual(try fetchName(port: otherPort, timeout: 5), "good", tail(balancer))
        XCTAssertTrue(logLines(balancer, frontend: "main").isEmpty, "the stalled session was still waiting: \(tail(balancer))")

        XCTAssertEqual(try waiting.readAll(timeout: 30), [], "closed without data")
        let line = try XCTUnwrap(try waitForLogLines(balancer, frontend: "main", count: 1).first)
        XCTAssertEqual(line.server, "stall")
        XCTAssertEqual(line.termination, "sC", "\(line)")
        XCTAssertEqual(line.retries, "1", "\(line)")
        XCTAssertEqual(line.connect, -1, "\(line)")
        XCTAssertGreaterThanOrEqual(line.total, 6000, "two attempts, each waiting `timeout connect`: \(line)")
        XCTAssertEqual(stall.stalledConnections, 2, stall.outputText)
    }

    // MARK: - Balancing, check and export

    /// Three name-stamping TLS servers in round robin: `balancerd check` accepts the file,
    /// the export writes `ssl verify none` on each server line and `haproxy -c` accepts it,
    /// and haproxy and balancerd, on the same file and the same servers, rotate the same
    /// cycle (balance-rr.vtc, over TLS).
    func testRoundRobinOverTLSServersRotatesAsHAProxy() throws {
        let certificates = try TLSCertificates()
        let certificate = try certificates.selfSigned("server.test")
        let servers = try ["s1", "s2", "s3"].map { start(try TLSEchoServer(name: $0, certificate: certificate, behaviour: .stamp)) }
        let directory = try TempDirectory(prefix: "balancerd-tls-tcp")
        addTeardownBlock { directory.remove() }
        let haproxyPort = try freePort()
        func config(bind: String) -> String {
            """
            global
                maxconn 2000
            defaults
                mode tcp
                timeout connect 5s
                timeout client 10s
                timeout server 10s
            listen main
                bind \(bind)
                balance roundrobin
            \(servers.map { "    server \($0.name) \($0.address) ssl verify none" }.joined(separator: "\n"))

            """
        }
        let balancerInput = try directory.write(config(bind: "127.0.0.1:0"), to: "balancerd.cfg")
        let haproxyInput = try directory.write(config(bind: "127.0.0.1:\(haproxyPort)"), to: "haproxy-input.cfg")

        let check = try BalancerdProcess.run(["check", "--config", balancerInput])
        XCTAssertEqual(check.exitCode, 0, check.allText)
        let export = try BalancerdProcess.run(["export-haproxy", "--config", haproxyInput])
        XCTAssertEqual(export.exitCode, 0, export.allText)
        let lines = export.stdoutText.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        XCTAssertTrue(lines.contains("mode tcp"), export.stdoutText)
        for server in servers {
            XCTAssertTrue(lines.contains { $0.hasPrefix("server \(server.name) \(server.address)") && $0.hasSuffix(" ssl verify none") },
                          export.stdoutText)
        }
        let exported = try directory.write(export.stdoutText + "\n", to: "haproxy.cfg")
        let haproxyCheck = try HAProxyProcess.check(configPath: exported)
        XCTAssertEqual(haproxyCheck.exitCode, 0, "haproxy -c refused the export:\n\(haproxyCheck.allText)\n\(export.stdoutText)")

        let haproxy = try HAProxyProcess(configPath: exported, port: haproxyPort)
        addTeardownBlock { haproxy.stop() }
        let (balancer, port) = try startBalancer(["--config", balancerInput])
        var seen: [String: [String]] = [:]
        for (name, port) in [("haproxy", haproxyPort), ("balancerd", port)] {
            seen[name] = try (0..<9).map { i in
                do {
                    return try fetchName(port: port, timeout: 5)
                } catch {
                    XCTFail("\(name), connection \(i + 1): \(error)\nhaproxy:\n\(haproxy.outputText)\n\(tail(balancer))")
                    throw error
                }
            }
        }
        let h = try XCTUnwrap(seen["haproxy"]), b = try XCTUnwrap(seen["balancerd"])
        let cycle = Array(h.prefix(3))
        XCTAssertEqual(Set(cycle), ["s1", "s2", "s3"], "haproxy: \(h)")
        assertRotation(h, of: cycle)
        assertRotation(b, of: cycle)
        // Every connection completed a TLS handshake at its server: three per server and
        // proxy (HAProxyProcess's readiness probe, forwarded too, may add one).
        XCTAssertTrue(waitUntil(timeout: 10) { servers.allSatisfy { $0.finished.count >= 6 } },
                      servers.map(\.outputText).joined(separator: "\n"))
    }
}
