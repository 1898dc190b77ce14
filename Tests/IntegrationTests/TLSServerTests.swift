// TLS towards servers (`server ... ssl`): balancerd terminates the client's TLS and
// re-encrypts to TLSTestServer backends (Python's ssl over Debian's libssl), which stamp
// their name, the SNI they saw, and how many requests their connection carried.

import Foundation
import Glibc
import TestSupport
import XCTest

final class TLSServerTests: XCTestCase {
    /// One response of a keep-alive series, as curl printed it.
    struct Response {
        var status: String
        var headers: [String: String]
        var body: String
    }

    /// curl over TLS to balancerd, `count` requests on one client connection (`-k`: the
    /// client side is not what this file tests); the responses in order.
    private func curlSeries(port: UInt16, count: Int) throws -> (responses: [Response], result: ProcessResult) {
        var arguments = ["-sSk", "--max-time", "20", "-D", "-"]
        for i in 0..<count { arguments.append("https://127.0.0.1:\(port)/r\(i)") }
        let result = try runProcess("/usr/bin/curl", arguments, timeout: 30)
        // The bodies (a server's name) carry no newline: each response starts where the
        // next status line does.
        let parts = result.stdoutText.components(separatedBy: "HTTP/1.1 ").dropFirst()
        let responses = parts.map { part -> Response in
            let split = part.components(separatedBy: "\r\n\r\n")
            let lines = split[0].components(separatedBy: "\r\n")
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            return Response(status: lines[0], headers: headers, body: split.dropFirst().joined(separator: "\r\n\r\n"))
        }
        return (responses, result)
    }

    /// Two TLS backends, one self-signed (`verify none`), one signed by a CA balancerd
    /// trusts (`verify required ca-file`, `sni str(...)`): requests alternate between
    /// them, each saw the SNI configured for it (none for the first), the second request
    /// to each rode the connection of the first (keep-alive towards TLS servers), and a
    /// backend whose certificate the CA file does not vouch for fails the connect: 503
    /// after the retries, logged with SC.
    func testReEncryptionVerifiesSNIAndKeepAlive() throws {
        let certificates = try TLSCertificates()
        let authority = try certificates.authority()
        let stranger = try certificates.authority("another CA")
        let front = try certificates.selfSigned("front.test")
        let one = try TLSTestServer(name: "one", certificate: try certificates.selfSigned("one.test"))
        let two = try TLSTestServer(name: "two", certificate: try certificates.issue("two.test", by: authority))
        defer { one.stop(); two.stop() }
        let (port, wrongPort) = (try freePort(), try freePort())
        let config = try TempConfigFile("""
            defaults
                mode http
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend main
                bind 127.0.0.1:\(port) ssl crt \(front.pemPath)
                default_backend pair
            frontend wrong
                bind 127.0.0.1:\(wrongPort) ssl crt \(front.pemPath)
                default_backend untrusted
            backend pair
                balance roundrobin
                server one \(one.address) ssl verify none
                server two \(two.address) ssl verify required ca-file \(authority.certificatePath) sni str(two.test)
            backend untrusted
                retries 2
                server two \(two.address) ssl verify required ca-file \(stranger.certificatePath) sni str(two.test)
            """)
        let (balancer, _) = try startBalancer(["--config", config.path])

        let (responses, result) = try curlSeries(port: port, count: 4)
        XCTAssertEqual(responses.map(\.body), ["one", "two", "one", "two"],
                       "\(result.allText)\n\(tail(balancer))\n\(one.outputText)\n\(two.outputText)")
        guard responses.count == 4 else { return }
        XCTAssertTrue(responses.allSatisfy { $0.status.hasPrefix("200") }, result.stdoutText)
        XCTAssertEqual(responses.map { $0.headers["x-tls-sni"] }, ["-", "two.test", "-", "two.test"])
        XCTAssertEqual(responses.map { $0.headers["x-connection-request"] }, ["1", "1", "2", "2"],
                       "the second request to each server reuses its TLS connection")

        let refused = try curlSeries(port: wrongPort, count: 1)
        XCTAssertEqual(refused.responses.first?.status.hasPrefix("503"), true, refused.result.allText)
        // haproxy's line: `wrong untrusted/two Tq/Tw/Tc/Tr/Tt 503 BYTES - - SC-- ... RETRIES/0`.
        let logged = balancer.waitForLine(containing: " wrong untrusted/two ") ?? ""
        XCTAssertTrue(logged.contains(" 503 ") && logged.contains(" SC-- "), "\(logged)\n\(tail(balancer))")
        XCTAssertTrue(logged.hasSuffix("/2 0/0 \"GET /r0 HTTP/1.1\""), "two retries after the first refusal: \(logged)")
    }
}

extension TLSServerTests {
    /// The export writes `ssl verify ... ca-file ... sni str(...)` on server lines, and
    /// real haproxy accepts it with the same CA file; a `verify required` server without a
    /// ca-file is refused by balancerd as haproxy -c refuses it.
    func testServerSSLExportsAndVerifyNeedsACAFile() throws {
        let certificates = try TLSCertificates()
        let authority = try certificates.authority()
        let dir = try TempDirectory()
        defer { dir.remove() }
        let config = try TempConfigFile("""
            defaults
                mode http
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend main
                bind 127.0.0.1:\(try freePort())
                default_backend pair
            backend pair
                default-server ssl verify none
                server one 127.0.0.1:\(try freePort())
                server two 127.0.0.1:\(try freePort()) verify required ca-file \(authority.certificatePath) sni str(two.test)
                server plain 127.0.0.1:\(try freePort()) no-ssl
            """)
        let exported = try BalancerdProcess.run(["export-haproxy", "--config", config.path])
        XCTAssertEqual(exported.exitCode, 0, exported.allText)
        let lines = exported.stdoutText.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        XCTAssertTrue(lines.contains { $0.hasPrefix("server one ") && $0.hasSuffix(" ssl verify none") }, exported.stdoutText)
        XCTAssertTrue(lines.contains { $0.hasPrefix("server two ") && $0.hasSuffix(" ssl verify required ca-file \(authority.certificatePath) sni str(two.test)") },
                      exported.stdoutText)
        XCTAssertTrue(lines.contains { $0.hasPrefix("server plain ") && !$0.contains("ssl") }, exported.stdoutText)
        let file = try dir.write(exported.stdoutText + "\n", to: "exported.cfg")
        let check = try HAProxyProcess.check(configPath: file)
        XCTAssertEqual(check.exitCode, 0, "haproxy -c refused the export:\n\(check.allText)\n\(exported.stdoutText)")

        let unverifiable = try dir.write("""
            defaults
                mode http
            backend b
                server s 127.0.0.1:\(try freePort()) ssl

            """, to: "unverifiable.cfg")
        let refused = try BalancerdProcess.run(["check", "--config", unverifiable])
        XCTAssertNotEqual(refused.exitCode, 0, refused.allText)
        XCTAssertTrue(refused.allText.contains("ca-file"), refused.allText)
        XCTAssertNotEqual(try HAProxyProcess.check(configPath: unverifiable).exitCode, 0, "haproxy -c refuses it too")
    }
}

extension TLSServerTests {
    /// TCP mode with `ssl` on the bind: balancerd terminates TLS and the echo server gets
    /// plain bytes. A Python ssl client sends 64 MiB while reading the echo, and both
    /// directions arrive intact (SHA-256 of what was sent and what came back).
    func testTCPModeTerminatesTLSAndCarries64MiBBothWays() throws {
        let certificates = try TLSCertificates()
        let front = try certificates.selfSigned("front.test")
        let echo = try EchoServer()
        defer { echo.stop() }
        let port = try freePort()
        let config = try TempConfigFile("""
            defaults
                mode tcp
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend main
                bind 127.0.0.1:\(port) ssl crt \(front.pemPath)
                default_backend echo
            backend echo
                server echo 127.0.0.1:\(echo.port)
            """)
        let (balancer, _) = try startBalancer(["--config", config.path])
        // One thread (OpenSSL forbids reading and writing one connection from two at
        // once): non-blocking, sending while the echo comes back.
        let script = #"""
            import hashlib, select, socket, ssl, sys
            port, total = int(sys.argv[1]), 64 << 20
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="front.test")
            s.setblocking(False)
            block = bytes(range(256)) * 256
            sent, got = hashlib.sha256(), hashlib.sha256()
            n = received = 0
            pending = b""
            while received < total:
                want_write = n < total or pending
                r, w, _ = select.select([s], [s] if want_write else [], [], 30)
                if not r and not w:
                    break
                if w or pending:
                    if not pending and n < total:
                        pending = bytes([n // len(block) % 251]) + block[1 : min(len(block), total - n)]
                    try:
                        k = s.send(pending)
                        sent.update(pending[:k]); n += k; pending = pending[k:]
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                while True:
                    try:
                        data = s.recv(1 << 16)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        break
                    if not data:
                        received = -1 if received < total else received
                        break
                    got.update(data); received += len(data)
                if received < 0:
                    break
            print(s.version(), received, sent.hexdigest() == got.hexdigest())
            """#
        let result = try runProcess("/usr/bin/env", ["python3", "-c", script, String(port)], timeout: 120)
        XCTAssertEqual(result.exitCode, 0, "\(result.allText)\n\(tail(balancer))")
        XCTAssertEqual(result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines), "TLSv1.3 \(64 << 20) True",
                       "\(result.allText)\n\(tail(balancer))")
    }
}
