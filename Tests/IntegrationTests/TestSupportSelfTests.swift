import Foundation
import Glibc
import TestSupport
import XCTest

final class SupportSelfTests: XCTestCase {
    func testNameStampStampsAndCounts() throws {
        let s = try NameStampServer(name: "s1")
        defer { s.stop() }
        XCTAssertEqual(try fetchName(port: s.port), "s1")
        XCTAssertEqual(try fetchName(port: s.port), "s1")
        XCTAssertEqual(s.acceptedCount, 2)
    }

    func testStopRefusesAndJoins() throws {
        let s = try NameStampServer(name: "x", holdOpen: true)
        let c = try TCPClient(port: s.port)
        XCTAssertEqual(try c.readLine(), "x")
        XCTAssertTrue(waitUntil(timeout: 2) { s.currentConnections == 1 })
        let t0 = monotonicSeconds()
        s.stop()
        XCTAssertLessThan(monotonicSeconds() - t0, 1)
        // The held connection was cut.
        XCTAssertEqual(c.read(timeout: 2), .eof)
        XCTAssertThrowsError(try connectTCP(port: s.port)) { error in
            XCTAssertTrue((error as? SocketError)?.isConnectionRefused ?? false, "\(error)")
        }
        s.stop()
    }

    func testHoldOpenCountsConcurrency() throws {
        let gauge = ConcurrencyGauge()
        let a = try NameStampServer(name: "a", holdOpen: true, sharedGauge: gauge)
        let b = try NameStampServer(name: "b", holdOpen: true, sharedGauge: gauge)
        defer { a.stop(); b.stop() }
        let clients = try [a.port, a.port, b.port].map { try TCPClient(port: $0) }
        XCTAssertEqual(try clients.map { try $0.readLine() }, ["a", "a", "b"])
        XCTAssertEqual(gauge.current, 3)
        clients[0].close()
        XCTAssertTrue(waitUntil(timeout: 2) { gauge.current == 2 })
        XCTAssertEqual(gauge.max, 3)
        XCTAssertEqual(a.maxConcurrentConnections, 2)
        XCTAssertEqual(b.maxConcurrentConnections, 1)
    }

    func testEcho16MiBWithHalfClose() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let payload = randomBytes(count: 16 << 20)
        let client = try TCPClient(port: echo.port)
        let writer = JoinableThread {
            var offset = 0
            while offset < payload.count {
                let end = min(offset + 100_000, payload.count)
                try? client.send(payload[offset..<end])
                offset = end
            }
            client.shutdownWrite()
        }
        let received = try client.readAll(timeout: 20)
        writer.join()
        XCTAssertEqual(received.count, payload.count)
        XCTAssertTrue(received == payload)
        XCTAssertEqual(echo.bytesEchoed, payload.count)
    }

    func testHTTPStampKeepAlive() throws {
        let http = try HTTPStampServer(name: "web1")
        defer { http.stop() }
        let c = try TCPClient(port: http.port)
        for _ in 0..<3 {
            try c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            XCTAssertEqual(try c.readLine(), "HTTP/1.1 200 OK")
            var length = -1
            while let line = try c.readLine(), !line.isEmpty {
                if line.lowercased().hasPrefix("content-length:") { length = Int(line.split(separator: " ")[1])! }
            }
            XCTAssertEqual(length, 4)
            guard case .data(let body) = c.read(max: length, timeout: 2) else { return XCTFail("no body") }
            XCTAssertEqual(String(decoding: body, as: UTF8.self), "web1")
        }
        try c.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let rest = String(decoding: try c.readAll(timeout: 2), as: UTF8.self)
        XCTAssertTrue(rest.hasSuffix("\r\n\r\nweb1"), rest)
        XCTAssertTrue(rest.contains("Connection: close"), rest)
        XCTAssertEqual(http.requestCount, 4)
        XCTAssertEqual(http.acceptedCount, 1)
    }

    func testNginxStartStop() throws {
        let n = try NginxServer(name: "n1", bigFileBytes: 1 << 20)
        let c = try TCPClient(port: n.port)
        try c.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let text = String(decoding: try c.readAll(timeout: 5), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 200"), text)
        XCTAssertTrue(text.hasSuffix("\r\n\r\nn1\n"), text)
        let big = try TCPClient(port: n.port)
        try big.send("GET /big.bin HTTP/1.0\r\n\r\n")
        let response = try big.readAll(timeout: 5)
        let body = Array(response[(response.firstRange(of: Array("\r\n\r\n".utf8))!.upperBound)...])
        XCTAssertTrue(body == n.bigFileContents)
        XCTAssertEqual(body.count, 1 << 20)
        let pid = n.pid
        n.stop()
        XCTAssertEqual(kill(pid, 0), -1, "nginx still running")
        XCTAssertThrowsError(try connectTCP(port: n.port))
    }

    func testRunProcessAndLines() throws {
        let r = try runProcess("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        XCTAssertEqual(r.exitCode, 3)
        XCTAssertEqual(r.stdout, ["out"])
        XCTAssertEqual(r.stderr, ["err"])
        let p = try BalancerdProcess(arguments: ["-c", "trap 'echo bye; exit 0' TERM; echo 'balancerd: listening frontend=main addr=127.0.0.1:4242 mode=tcp' >&2; while :; do sleep 0.05; done"], binary: "/bin/sh")
        XCTAssertEqual(try p.listenAddress().port, 4242)
        XCTAssertTrue(p.isRunning)
        XCTAssertEqual(p.stop(), 0)
        XCTAssertEqual(p.lines.last, "bye")
        XCTAssertEqual(p.stop(), 0)
    }

    func testStopLeavesNoThreadsBehind() throws {
        func threadCount() -> Int { runningThreadNames().count }
        let before = threadCount()
        let stamp = try NameStampServer(name: "t", holdOpen: true)
        let echo = try EchoServer()
        let http = try HTTPStampServer(name: "h")
        let held = try (0..<5).map { _ in try TCPClient(port: stamp.port) }
        let echoing = try TCPClient(port: echo.port)
        try echoing.send("x")
        let keepAlive = try TCPClient(port: http.port)
        try keepAlive.send("GET / HTTP/1.1\r\n\r\n")
        XCTAssertNotNil(try keepAlive.readLine())
        XCTAssertTrue(waitUntil(timeout: 2) { stamp.currentConnections == 5 })
        XCTAssertGreaterThan(threadCount(), before + 7)
        stamp.stop()
        echo.stop()
        http.stop()
        XCTAssertEqual(threadCount(), before, "server threads survived stop(): \(runningThreadNames())")
        _ = held
    }

    /// The TLS helpers end to end: curl trusts the self-signed certificate (and, for the
    /// CA-signed one, only its authority) against the TLS test server, which stamps its name
    /// and the SNI it saw; s_client and x509 read the same names from the wire and the file.
    func testTLSCertificatesAgainstTLSTestServer() throws {
        let certs = try TLSCertificates()
        let selfSigned = try certs.selfSigned("a.tls.test", alternativeNames: ["www.a.tls.test", "127.0.0.1"])
        let names = try TLSCertificates.names(ofPEM: selfSigned.pemPath)
        XCTAssertEqual(names.commonName, "a.tls.test")
        XCTAssertEqual(names.dnsNames, ["a.tls.test", "www.a.tls.test"])
        XCTAssertEqual(names.ipAddresses, ["127.0.0.1"])
        let authority = try certs.authority()
        let leaf = try certs.issue("b.tls.test", by: authority, key: .ecdsaP256)
        XCTAssertEqual(leaf.trustPath, authority.certificatePath)

        let a = try TLSTestServer(name: "tls-a", certificate: selfSigned)
        let b = try TLSTestServer(name: "tls-b", certificate: leaf)
        defer { a.stop(); b.stop() }

        // `-D -`: the head (CRLF lines) then the body, on stdout.
        func curl(_ host: String, _ server: TLSTestServer, trusting trust: String) throws -> (exitCode: Int32, lines: [String], text: String) {
            let r = try runProcess("/usr/bin/curl", ["-sS", "-D", "-", "--max-time", "10", "--cacert", trust,
                                             "--resolve", "\(host):\(server.port):127.0.0.1", "https://\(host):\(server.port)/"])
            return (r.exitCode, r.stdout.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }, r.allText)
        }
        let fromA = try curl("www.a.tls.test", a, trusting: selfSigned.trustPath)
        XCTAssertEqual(fromA.exitCode, 0, fromA.text)
        XCTAssertEqual(fromA.lines.last, "tls-a", fromA.text)
        XCTAssertTrue(fromA.lines.contains("X-TLS-SNI: www.a.tls.test"), fromA.text)
        XCTAssertTrue(fromA.lines.contains("X-TLS-Protocol: TLSv1.3"), fromA.text)

        let fromB = try curl("b.tls.test", b, trusting: authority.certificatePath)
        XCTAssertEqual(fromB.exitCode, 0, fromB.text)
        XCTAssertEqual(fromB.lines.last, "tls-b", fromB.text)
        // curl's 60: the peer's certificate cannot be verified with the given CA.
        let untrusted = try curl("b.tls.test", b, trusting: selfSigned.trustPath)
        XCTAssertEqual(untrusted.exitCode, 60, untrusted.text)

        let tls12 = try TLSCertificates.handshake(port: a.port, serverName: "a.tls.test", alpn: ["http/1.1"],
                                                  extraArguments: ["-tls1_2"])
        XCTAssertEqual(tls12.protocolVersion, "TLSv1.2")
        XCTAssertEqual(tls12.alpn, "http/1.1")
        XCTAssertEqual(tls12.names, names)
        let tls13 = try TLSCertificates.handshake(port: b.port, serverName: nil)
        XCTAssertEqual(tls13.protocolVersion, "TLSv1.3")
        XCTAssertNil(tls13.alpn)
        XCTAssertEqual(tls13.names.commonName, "b.tls.test")
        XCTAssertThrowsError(try TLSCertificates.handshake(port: a.port, serverName: nil, extraArguments: ["-tls1_1"]))
    }

    func testTempConfig() throws {
        let f = try TempConfigFile("a\n")
        try f.rewrite("b\n")
        XCTAssertEqual(readTextFile(f.path), "b\n")
        let dir = f.directory.path
        f.directory.remove()
        XCTAssertNotEqual(access(dir, F_OK), 0)
    }
}
