// HTTPS frontends against real clients: curl and openssl s_client negotiate with the real
// balancerd over loopback, with certificates made by `openssl req` for each test. SNI
// picks the certificate; versions follow ssl-min-ver; a SIGHUP swaps certificates under a
// running download; hostile clients fail alone; real haproxy accepts the export.

import Foundation
import Glibc
import TestSupport
import XCTest

final class TLSTests: XCTestCase {
    // MARK: certificates and clients

    /// A self-signed certificate for `name` (CN and subjectAltName), key and chain in one
    /// PEM, as haproxy's `crt` wants it. Returns the PEM's path; `NAME.crt` is the
    /// certificate alone (the CA file for curl).
    @discardableResult
    private func makeCertificate(_ name: String, in dir: TempDirectory, as file: String? = nil) throws -> String {
        let key = dir.file("\(name).key"), crt = dir.file("\(name).crt")
        let result = try runProcess(Self.tool("openssl"), [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(name)",
            "-addext", "subjectAltName=DNS:\(name)", "-days", "2", "-keyout", key, "-out", crt,
        ], timeout: 30)
        XCTAssertEqual(result.exitCode, 0, result.allText)
        let pem = readTextFile(crt) + readTextFile(key)
        return try dir.write(pem, to: file ?? "\(name).pem")
    }

    /// The subject of `pem`'s certificate as curl and `openssl x509` print it ("CN = NAME").
    private func subject(of pem: String) throws -> String {
        let result = try runProcess(Self.tool("openssl"), ["x509", "-noout", "-subject", "-in", pem])
        XCTAssertEqual(result.exitCode, 0, result.allText)
        return String(result.stdoutText.dropFirst("subject=".count)).trimmingCharacters(in: .whitespaces)
    }

    private static func tool(_ name: String) throws -> String {
        for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] where access("\(dir)/\(name)", X_OK) == 0 {
            return "\(dir)/\(name)"
        }
        throw TestSupportError("\(name) is not installed (the TLS tests drive the real client)")
    }

    /// curl over TLS to `name` (resolved to 127.0.0.1:port): the status, body and the
    /// subject of the certificate the server presented.
    private func curl(_ name: String, port: UInt16, path: String = "/", caFile: String? = nil,
                      extra: [String] = []) throws -> (status: String, body: String, subject: String, result: ProcessResult) {
        let marker = "\n--curl-info--"
        var arguments = ["-sS", "--max-time", "10", "--resolve", "\(name):\(port):127.0.0.1",
                         "--write-out", "\(marker)%{http_code}\n%{certs}"]
        arguments += caFile.map { ["--cacert", $0] } ?? ["-k"]
        arguments += extra + ["https://\(name):\(port)\(path)"]
        let result = try runProcess(Self.tool("curl"), arguments, timeout: 20)
        let text = result.stdoutText
        guard let range = text.range(of: marker) else { return ("", "", "", result) }
        let info = text[range.upperBound...].split(separator: "\n", omittingEmptySubsequences: false)
        let subject = info.first { $0.hasPrefix("Subject:") }.map { String($0.dropFirst("Subject:".count)) } ?? ""
        return (info.first.map(String.init) ?? "", String(text[..<range.lowerBound]), subject, result)
    }

    /// s_client says which protocol it negotiated in its session block ("Protocol  :"),
    /// or, for TLS 1.3 (whose session may not be printed before stdin ends), in the "New,"
    /// line (which otherwise names the cipher's version, not the connection's).
    /// A failed handshake prints a session block too, with the version tried and no cipher.
    private func negotiated(_ result: ProcessResult, _ version: String) -> Bool {
        guard !result.allText.contains("Cipher is (NONE)") else { return false }
        return result.allText.contains("Protocol  : \(version)")
            || (version == "TLSv1.3" && result.allText.contains("New, TLSv1.3, Cipher is"))
    }

    private func sClient(port: UInt16, _ options: [String]) throws -> ProcessResult {
        // s_client reads stdin: an empty file makes it end the session after the handshake.
        try runProcess("/bin/sh", ["-c", "exec \(try Self.tool("openssl")) s_client -connect 127.0.0.1:\(port) \(options.joined(separator: " ")) </dev/null"], timeout: 20)
    }

    // MARK: tests

    /// `--listen --tls-cert A --tls-cert B`: SNI picks B's certificate for B's name, A's for
    /// A's and for an unknown name; curl verifies each against its own CA file; the server
    /// sees `X-Forwarded-Proto: https`, and a client's own value is replaced.
    func testSNIPicksTheCertificateAndTheServerSeesHTTPS() throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let a = try makeCertificate("alpha.test", in: dir)
        let b = try makeCertificate("beta.test", in: dir)
        let backend = try HTTPTestServer(name: "web")
        defer { backend.stop() }
        let (balancer, port) = try startBalancer(["--listen", "127.0.0.1:0", "--tls-cert", a, "--tls-cert", b,
                                                  "--server", backend.address])

        let beta = try curl("beta.test", port: port, caFile: dir.file("beta.test.crt"),
                            extra: ["-H", "X-Forwarded-Proto: http"])
        XCTAssertEqual(beta.status, "200", "\(beta.result.allText)\n\(tail(balancer))")
        XCTAssertEqual(beta.body, "web")
        XCTAssertEqual(beta.subject, try subject(of: b))
        let alpha = try curl("alpha.test", port: port, caFile: dir.file("alpha.test.crt"))
        XCTAssertEqual(alpha.status, "200", alpha.result.allText)
        XCTAssertEqual(alpha.subject, try subject(of: a))
        let unknown = try curl("gamma.test", port: port)
        XCTAssertEqual(unknown.status, "200", unknown.result.allText)
        XCTAssertEqual(unknown.subject, try subject(of: a), "no certificate names gamma.test: the first is the default")
        // The wrong CA for the name: the certificate really is beta's, not alpha's.
        let wrong = try curl("beta.test", port: port, caFile: dir.file("alpha.test.crt"))
        XCTAssertNotEqual(wrong.result.exitCode, 0, "curl accepted beta.test's certificate with alpha's CA")

        let requests = backend.completeRequests
        XCTAssertEqual(requests.count, 3)
        for request in requests {
            XCTAssertEqual(request.values("X-Forwarded-Proto"), ["https"], request.head)
        }
    }

    /// A config file: `ssl-default-bind-options ssl-min-ver TLSv1.2` makes TLS 1.1 fail
    /// while 1.2 and 1.3 negotiate (a bind without it, with the same weak-cipher settings,
    /// shows that TLS 1.1 would work otherwise); a plain bind redirects to https unless
    /// ssl_fc; ssl_fc_sni routes; and real haproxy accepts the export with the same PEMs.
    /// A client that reads an HTTP/1.0 response to its end can resume its TLS session on
    /// the next connection: balancerd ends each connection with close_notify (a bare FIN is
    /// an error to OpenSSL, which then drops the session). `openssl s_time -reuse` prints
    /// `r` for every connection that resumed. Both ways of resuming are tried: session
    /// tickets (the default; the client carries the session), and with `no-tls-tickets`
    /// OpenSSL's session cache (which balancerd keeps only then).
    func testSessionsResumeAfterAConnectionCloseResponse() throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let pem = try makeCertificate("resume.test", in: dir)
        let backend = try HTTPTestServer(name: "web")
        defer { backend.stop() }
        let ticketPort = try freePort()
        let config = try TempConfigFile("""
            defaults
                mode http
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend main
                bind 127.0.0.1:\(ticketPort) ssl crt \(pem)
                default_backend web
            frontend cache
                bind 127.0.0.1:0 ssl crt \(pem) no-tls-tickets
                default_backend web
            backend web
                server web \(backend.address)
            """)
        let (balancer, _) = try startBalancer(["--config", config.path])
        let cachePort = try balancer.port(frontend: "cache")
        for (name, port) in [("tickets", ticketPort), ("session cache", cachePort)] {
            let run = try runProcess("/usr/bin/openssl", ["s_time", "-connect", "127.0.0.1:\(port)", "-reuse", "-www", "/",
                                                          "-time", "1"], timeout: 20)
            // The progress line: one mark per connection, `r` resumed, `*` a full handshake.
            let marks = run.stdout.filter { !$0.isEmpty && $0.allSatisfy { $0 == "r" || $0 == "*" } }.joined()
            let resumed = marks.filter { $0 == "r" }.count
            XCTAssertGreaterThan(marks.count, 10, "\(name): \(run.allText)\n\(tail(balancer))")
            XCTAssertGreaterThan(resumed, marks.count - 2, "\(name): \(resumed) of \(marks.count) connections resumed\n\(run.allText)")
        }
    }

    func testVersionsRedirectSNIRoutingAndExport() throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let site = try makeCertificate("site.test", in: dir)
        let api = try makeCertificate("api.test", in: dir)
        let web = try HTTPTestServer(name: "web")
        let apiServer = try HTTPTestServer(name: "api")
        defer { web.stop(); apiServer.stop() }
        let (plainPort, strictPort, loosePort) = (try freePort(), try freePort(), try freePort())
        // SECLEVEL=0 lets TLS 1.1's ciphers through OpenSSL's default security level, on
        // both ends, so that only ssl-min-ver stands in the way on the strict bind.
        let config = try TempConfigFile("""
            global
                crt-base \(dir.path)
                ssl-default-bind-ciphers DEFAULT@SECLEVEL=0
                ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
            defaults
                mode http
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend main
                bind 127.0.0.1:\(plainPort)
                bind 127.0.0.1:\(strictPort) ssl crt site.test.pem crt api.test.pem alpn h2,http/1.1
                http-request redirect scheme https unless { ssl_fc }
                use_backend api if { ssl_fc_sni -i api.test }
                default_backend web
            frontend loose
                bind 127.0.0.1:\(loosePort) ssl crt \(site) ssl-min-ver TLSv1.0
                default_backend web
            backend web
                server web \(web.address)
            backend api
                server api \(apiServer.address)
            """)
        let (balancer, _) = try startBalancer(["--config", config.path])
        _ = try balancer.port(frontend: "loose")

        let redirect = try httpGet(port: plainPort, path: "/x")
        XCTAssertTrue(redirect.status.hasPrefix("HTTP/1.1 302"), "\(redirect.status)\n\(tail(balancer))")
        XCTAssertEqual(try curl("site.test", port: strictPort, path: "/x").body, "web")
        let routed = try curl("API.test", port: strictPort, caFile: dir.file("api.test.crt"))
        XCTAssertEqual(routed.body, "api", routed.result.allText)
        XCTAssertEqual(routed.subject, try subject(of: api))

        for (version, text) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
            let result = try sClient(port: strictPort, [version, "-servername", "site.test"])
            XCTAssertEqual(result.exitCode, 0, result.allText)
            XCTAssertTrue(negotiated(result, text), result.allText)
        }
        let weak = ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "site.test"]
        let loose = try sClient(port: loosePort, weak)
        XCTAssertTrue(negotiated(loose, "TLSv1.1"), "TLS 1.1 should work where allowed:\n\(loose.allText)")
        let refused = try sClient(port: strictPort, weak)
        XCTAssertNotEqual(refused.exitCode, 0, refused.allText)
        XCTAssertFalse(negotiated(refused, "TLSv1.1"), refused.allText)

        // The export: every TLS setting on the bind; haproxy -c reads it with the same PEMs.
        let exported = try BalancerdProcess.run(["export-haproxy", "--config", config.path])
        XCTAssertEqual(exported.exitCode, 0, exported.allText)
        XCTAssertTrue(exported.stdoutText.contains("bind 127.0.0.1:\(strictPort) ssl crt \(site) crt \(api) alpn h2,http/1.1 ciphers DEFAULT@SECLEVEL=0 ssl-min-ver TLSv1.2 no-tls-tickets"),
                      exported.stdoutText)
        let file = try dir.write(exported.stdoutText + "\n", to: "exported.cfg")
        let check = try HAProxyProcess.check(configPath: file)
        XCTAssertEqual(check.exitCode, 0, "haproxy -c refused the export:\n\(check.allText)\n\(exported.stdoutText)")
    }

    /// A download over TLS runs while the certificate file is replaced and SIGHUP sent:
    /// it completes intact, and the next handshake shows the new certificate. Then a
    /// broken PEM on SIGHUP is reported with its file, and the certificate stays.
    func testCertificateReloadKeepsTheDownloadAndABrokenPEMKeepsTheOld() throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let pem = try makeCertificate("old.test", in: dir, as: "site.pem")
        let oldSubject = try subject(of: pem)
        let backend = try HTTPTestServer(name: "web")
        defer { backend.stop() }
        let (balancer, port) = try startBalancer(["--listen", "127.0.0.1:0", "--tls-cert", pem, "--server", backend.address])
        XCTAssertEqual(try curl("any.test", port: port).subject, oldSubject)
        // The next certificate is made before the download starts: key generation is the
        // slow step, and it must not eat the time the download has to outlast the reloads.
        let next = try makeCertificate("new.test", in: dir, as: "next.pem")
        let newSubject = try subject(of: next)
        XCTAssertNotEqual(newSubject, oldSubject)

        // ~9 MB at 1.5 MB/s: about 6 s, still running after the reloads below.
        let size = 9_000_000
        let output = dir.file("download")
        let download = Process()
        download.executableURL = URL(fileURLWithPath: try Self.tool("curl"))
        download.arguments = ["-sS", "-k", "--max-time", "60", "--limit-rate", "1500k", "-o", output,
                              "--resolve", "any.test:\(port):127.0.0.1", "https://any.test:\(port)/bytes/\(size)"]
        try download.run()
        defer { if download.isRunning { download.terminate() } }
        let started = Deadline(secondsFromNow: 10)
        while (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0 == 0 && !started.hasPassed {
            sleepSeconds(0.02)
        }
        XCTAssertTrue(download.isRunning, "the download should still be running")

        XCTAssertEqual(rename(next, pem), 0, "rename next.pem over site.pem")
        var before = balancer.lineCount
        balancer.signal(SIGHUP)
        XCTAssertNotNil(balancer.waitForLine(containing: "balancerd: reloaded certificates", after: before, timeout: 10), tail(balancer))
        XCTAssertEqual(try curl("any.test", port: port).subject, newSubject, "a new handshake after the reload")

        try dir.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n", to: "site.pem")
        before = balancer.lineCount
        balancer.signal(SIGHUP)
        let warning = balancer.waitForLine(containing: "keeping the previous certificates", after: before, timeout: 10)
        XCTAssertNotNil(warning, tail(balancer))
        XCTAssertTrue(warning?.contains(pem) == true, "the warning names the file: \(warning ?? "")")
        XCTAssertEqual(try curl("any.test", port: port).subject, newSubject, "the broken PEM must not replace the certificate")

        XCTAssertTrue(download.isRunning, "the download should have outlasted both reloads")
        download.waitUntilExit()
        XCTAssertEqual(download.terminationStatus, 0)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
        XCTAssertEqual(bytes.count, size)
        XCTAssertTrue(bytes == HTTPTestServer.pattern(count: size), "the download's bytes differ from what the server sent")
    }

    /// On one loop: garbage bytes, a ClientHello record that stops halfway, a silent
    /// connection and a plaintext HTTP request to the TLS port each fail alone (closed by
    /// the server, the half handshake at `timeout http-request`), while a good client is
    /// served the whole time.
    func testHostileClientsFailAlone() throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let pem = try makeCertificate("site.test", in: dir)
        let backend = try HTTPTestServer(name: "web")
        defer { backend.stop() }
        let port = try freePort()
        let config = try TempConfigFile("""
            global
                nbthread 1
            defaults
                mode http
                timeout client 30s
                timeout http-request 2s
            frontend main
                bind 127.0.0.1:\(port) ssl crt \(pem)
                default_backend web
            backend web
                server web \(backend.address)
            """)
        let (balancer, _) = try startBalancer(["--config", config.path])

        let garbage = try TCPClient(port: port)
        try garbage.send(Array(repeating: 0x5A, count: 2000))
        let plaintext = try TCPClient(port: port)
        try plaintext.send("GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        // A handshake record header announcing 512 bytes, then 60 of them.
        let half = try TCPClient(port: port)
        try half.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + Array(repeating: 0x11, count: 60))
        let silent = try TCPClient(port: port)
        let openedAt = monotonicSeconds()

        XCTAssertEqual(try curl("site.test", port: port).body, "web", tail(balancer))
        XCTAssertTrue(closedByServer(garbage, within: 5), "the garbage connection was not closed")
        XCTAssertTrue(closedByServer(plaintext, within: 5), "the plaintext connection was not closed")
        XCTAssertEqual(try curl("site.test", port: port).body, "web", "served while the half handshake waits")
        XCTAssertTrue(closedByServer(half, within: 8), "the half handshake was not closed at timeout http-request")
        XCTAssertTrue(closedByServer(silent, within: 8), "the silent connection was not closed")
        XCTAssertGreaterThanOrEqual(monotonicSeconds() - openedAt, 1.5, "the half handshake was closed before its timeout")
        XCTAssertEqual(try curl("site.test", port: port).body, "web")
        XCTAssertEqual(backend.receivedHeads.count, 3, "only the good client's requests reach the server")
    }

    /// Reads until the server closes (EOF or reset); TLS alerts before that are fine.
    private func closedByServer(_ client: TCPClient, within seconds: Double) -> Bool {
        let deadline = Deadline(secondsFromNow: seconds)
        while !deadline.hasPassed {
            switch client.read(max: 4096, timeout: 0.2) {
            case .eof, .error: return true
            case .data, .timeout: continue
            }
        }
        return false
    }

    // MARK: idle memory

    /// The client of the idle-memory test: Python's ssl module (OpenSSL), one process
    /// holding `count` TLS connections, each after one answered keep-alive request; it
    /// prints `ready` and then keeps them open until its stdin closes.
    private static let idleClient = """
        import socket, ssl, sys
        port, count = int(sys.argv[1]), int(sys.argv[2])
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conns = []
        for i in range(count):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="site.test")
            s.sendall(b"GET / HTTP/1.1\\r\\nHost: site.test\\r\\n\\r\\n")
            data = b""
            while not (b"\\r\\n\\r\\n" in data and data.endswith(b"web")):
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit("connection %d closed: %r" % (i, data))
                data += chunk
            conns.append(s)
        print("ready", flush=True)
        sys.stdin.read()
        """

    /// 1,000 idle HTTPS keep-alive connections on the release binary: each costs at most
    /// 24 KiB of RSS (measured: about 9-14 KiB, OpenSSL's state and session with
    /// SSL_MODE_RELEASE_BUFFERS; the two record buffers an idle connection would otherwise
    /// keep are 34 KiB on their own), and the memory comes back once they close.
    func testIdleTLSConnectionsHoldNoRecordBuffers() throws {
        let count = 1_000
        let dir = try TempDirectory()
        defer { dir.remove() }
        let pem = try makeCertificate("site.test", in: dir)
        let script = try dir.write(Self.idleClient, to: "idle_client.py")
        let backend = try HTTPTestServer(name: "web")
        defer { backend.stop() }
        let config = try TempConfigFile("""
            global
                nbthread 1
                maxconn 10000
            defaults
                mode http
                timeout client 5m
                timeout http-keep-alive 5m
            listen main
                bind 127.0.0.1:0 ssl crt \(pem)
                server web \(backend.address)
            listen stats
                bind 127.0.0.1:0
                stats enable
                stats uri /
            """)
        let balancer = supervise(try BalancerdProcess(arguments: ["--config", config.path, "--quiet"], binary: try releaseBalancerdPath()), stopTimeout: 5)
        let port = try balancer.port()
        let statsPort = try balancer.statsPort()
        func current() -> Int? { (try? StatsPage.fetch(port: statsPort))?.frontends["main"]?.current }

        func openIdle(_ count: Int) throws -> Process {
            let client = Process()
            client.executableURL = URL(fileURLWithPath: try Self.tool("python3"))
            client.arguments = [script, "\(port)", "\(count)"]
            let output = Pipe()
            client.standardOutput = output
            client.standardInput = Pipe()
            try client.run()
            // Until the line is whole (a pipe may deliver it in pieces) or the client ended.
            var line = Data()
            while !line.contains(UInt8(ascii: "\n")) {
                let piece = output.fileHandleForReading.availableData
                if piece.isEmpty { break }
                line += piece
            }
            XCTAssertEqual(String(decoding: line, as: UTF8.self), "ready\n", tail(balancer))
            return client
        }
        func close(_ client: Process) {
            (client.standardInput as? Pipe)?.fileHandleForWriting.closeFile()
            client.waitUntilExit()
        }

        // Warm-up: the loop's pools and OpenSSL's per-thread state are in the baseline.
        close(try openIdle(50))
        XCTAssertTrue(waitUntil(timeout: 10) { current() == 0 })
        let baseline = try residentSetBytes(pid: balancer.pid)
        let client = try openIdle(count)
        defer { if client.isRunning { client.terminate() } }
        XCTAssertTrue(waitUntil(timeout: 10) { current() == count }, "frontend current never reached \(count)")
        let withOpen = try residentSetBytes(pid: balancer.pid)
        close(client)
        XCTAssertTrue(waitUntil(timeout: 10) { current() == 0 })
        // The pool's sweep trims the heap once a second after TLS connections closed.
        let bound = 4 << 20
        var afterClose = Int.max
        _ = waitUntil(timeout: 5) {
            afterClose = (try? residentSetBytes(pid: balancer.pid)) ?? Int.max
            return afterClose <= baseline + bound
        }
        let perConnection = Double(withOpen - baseline) / Double(count)
        print("TLSTests: RSS baseline \(baseline / 1024) KiB, with \(count) idle TLS connections \(withOpen / 1024) KiB (\(String(format: "%.2f", perConnection / 1024)) KiB each), after they closed \(afterClose / 1024) KiB")
        XCTAssertLessThanOrEqual(perConnection, 24 * 1024, "an idle TLS connection costs \(Int(perConnection)) bytes of RSS; bound 24 KiB")
        XCTAssertLessThanOrEqual(afterClose, baseline + bound, "RSS did not come back after the TLS connections closed")
    }
}
