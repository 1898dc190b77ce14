// Health checks towards `ssl` servers go over TLS, as haproxy's do: the real balancerd
// checks TLSTestServer backends (Python's ssl over Debian's libssl), plain servers declared
// `ssl`, and a listener that never answers, from one haproxy.cfg; the tests assert the log
// lines, the traffic and `show stat` (through socat, as an operator reads it). The last
// test runs Debian's haproxy 2.6 on the same file beside balancerd and compares every
// server's state and check result.
//
// All checks use `inter 500ms rise 1 fall 2`: a server starts UP and its first check decides
// (haproxy's new server falls at its first failure), so every wait below is bounded by one
// interval plus slack; once a server passed, one check slowed by a loaded machine beyond
// `inter` does not flip it.

import Foundation
import Glibc
import TestSupport
import XCTest

final class TLSHealthCheckTests: XCTestCase {
    /// Every server of the lab, and what its check must end as: `show stat`'s status and
    /// check_status (haproxy 2.6 gives the same, see the parity test).
    static let expected: [String: (status: String, check: String)] = [
        // option httpchk through TLS.
        "web/one": ("UP", "L7OK"), "web/two": ("UP", "L7OK"),
        "web/failing": ("DOWN", "L7STS"),
        "web/plain": ("DOWN", "L6TOUT"),
        // A TCP check on an ssl server is a handshake.
        "tcpchk/tls": ("UP", "L6OK"),
        "tcpchk/garbage": ("DOWN", "L6RSP"),
        "tcpchk/silent": ("DOWN", "L6TOUT"),
        "tcpchk/cleartext": ("UP", "L4OK"),
        // verify required.
        "verify/rightca": ("UP", "L7OK"), "verify/wrongca": ("DOWN", "L6RSP"),
        "verify/rightname": ("UP", "L7OK"), "verify/wrongname": ("DOWN", "L6RSP"),
        "verify/trafficsni": ("UP", "L7OK"),
        // check-ssl / no-check-ssl.
        "nocheck/plainchecks": ("UP", "L7OK"), "nocheck/tlschecks": ("DOWN", "L6TOUT"),
        "nocheck/forced": ("UP", "L7OK"),
    ]

    /// The servers and the configuration around them.
    final class Lab {
        let authority: TLSAuthority
        let stranger: TLSAuthority
        let one, two, failing: TLSTestServer
        let plain: HTTPStampServer
        let garbage: NameStampServer
        let silentFD: Int32
        let silentPort: UInt16
        let plainChecks, tlsChecks: StatusHTTPServer
        private let certificates: TLSCertificates

        init() throws {
            certificates = try TLSCertificates()
            authority = try certificates.authority()
            stranger = try certificates.authority("another CA")
            let leaf = try certificates.issue("right.test", by: authority)
            one = try TLSTestServer(name: "one", certificate: leaf)
            two = try TLSTestServer(name: "two", certificate: leaf)
            failing = try TLSTestServer(name: "failing", certificate: leaf, status: 500)
            plain = try HTTPStampServer(name: "plain")
            garbage = try NameStampServer(name: "garbage")
            // Accepts nothing: the kernel completes the TCP handshake and the TLS one waits.
            // The backlog outlasts every check of a test (each leaves one queued connection).
            (silentFD, silentPort) = try makeLoopbackListener(backlog: 4096)
            plainChecks = try StatusHTTPServer(name: "plainchecks")
            tlsChecks = try StatusHTTPServer(name: "tlschecks")
        }

        func stop() {
            for server in [one, two, failing] { server.stop() }
            plain.stop()
            garbage.stop()
            plainChecks.stop()
            tlsChecks.stop()
            close(silentFD)
            certificates.directory.remove()
        }

        /// The whole file, listening on `ports` (web, tcpchk, verify, nocheck) with the
        /// Runtime API on `socket`.
        func config(ports: [UInt16], socket: String) -> String {
            let ca = authority.certificatePath
            return """
                global
                    stats socket \(socket) level admin
                defaults
                    mode http
                    timeout connect 1s
                    timeout client 5s
                    timeout server 5s
                    default-server check inter 500ms rise 1 fall 2

                listen web
                    bind 127.0.0.1:\(ports[0])
                    option httpchk GET /health
                    server one \(one.address) ssl verify required ca-file \(ca)
                    server two \(two.address) ssl verify required ca-file \(ca)
                    server failing \(failing.address) ssl verify none
                    server plain \(plain.address) ssl verify none

                listen tcpchk
                    bind 127.0.0.1:\(ports[1])
                    server tls \(one.address) ssl verify none
                    server garbage \(garbage.address) ssl verify none
                    server silent 127.0.0.1:\(silentPort) ssl verify none
                    server cleartext \(garbage.address)

                listen verify
                    bind 127.0.0.1:\(ports[2])
                    option httpchk GET /health
                    server rightca \(one.address) ssl verify required ca-file \(ca)
                    server wrongca \(one.address) ssl verify required ca-file \(stranger.certificatePath)
                    server rightname \(one.address) ssl verify required ca-file \(ca) check-sni right.test
                    server wrongname \(one.address) ssl verify required ca-file \(ca) check-sni wrong.test
                    server trafficsni \(one.address) ssl verify required ca-file \(ca) sni str(wrong.test)

                listen nocheck
                    bind 127.0.0.1:\(ports[3])
                    option httpchk GET /health
                    server plainchecks \(plainChecks.address) ssl verify none no-check-ssl
                    server tlschecks \(tlsChecks.address) ssl verify none
                    server forced \(one.address) check-ssl verify none

                """
        }
    }

    private func startLab() throws -> Lab {
        let lab = try Lab()
        addTeardownBlock { lab.stop() }
        return lab
    }

    /// balancerd on the lab's file; the web frontend's port and the socket path.
    private func startBalancer(_ lab: Lab) throws -> (BalancerdProcess, UInt16, String) {
        let directory = try TempDirectory(prefix: "balancerd-tlscheck")
        addTeardownBlock { directory.remove() }
        let socket = directory.file("admin.sock")
        let ports = try (0..<4).map { _ in try freePort() }
        let config = try directory.write(lab.config(ports: ports, socket: socket), to: "haproxy.cfg")
        let (balancer, port) = try startBalancer(["--config", config], frontend: "web")
        XCTAssertNotNil(balancer.waitForLine(containing: "runtime API on unix socket \(socket)", timeout: 10), tail(balancer))
        return (balancer, port, socket)
    }

    // MARK: show stat through socat

    /// `show stat` rows keyed "proxy/server", each a column → value map; a check in
    /// progress (haproxy's "* " prefix) reads as its last result, and its row gets
    /// "in_progress" (haproxy then shows check_code 0).
    private func showStat(_ path: String) throws -> [String: [String: String]] {
        let result = try runProcess("/bin/sh", ["-c", "echo 'show stat' | socat stdio unix-connect:\(path)"], timeout: 10)
        guard result.exitCode == 0, let header = result.stdout.first, header.hasPrefix("# ") else {
            throw TestSupportError("show stat on \(path) failed:\n\(result.allText)")
        }
        let columns = header.dropFirst(2).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        var rows: [String: [String: String]] = [:]
        for line in result.stdout.dropFirst() where !line.isEmpty {
            var row: [String: String] = [:]
            for (name, value) in zip(columns, line.split(separator: ",", omittingEmptySubsequences: false)) where !name.isEmpty {
                row[name] = value.hasPrefix("* ") ? String(value.dropFirst(2)) : String(value)
                if name == "check_status" && value.hasPrefix("* ") { row["in_progress"] = "1" }
            }
            rows["\(row["pxname"] ?? "")/\(row["svname"] ?? "")"] = row
        }
        return rows
    }

    /// "status check_status" of every lab server.
    private func states(_ rows: [String: [String: String]]) -> [String: String] {
        var states: [String: String] = [:]
        for key in Self.expected.keys { states[key] = "\(rows[key]?["status"] ?? "-") \(rows[key]?["check_status"] ?? "-")" }
        return states
    }

    private var expectedStates: [String: String] { Self.expected.mapValues { "\($0.status) \($0.check)" } }

    /// Polls `show stat` until every server shows its expected state (or `timeout`); the
    /// rows last read.
    private func waitForExpectedStates(_ socket: String, timeout: Double = 8) throws -> [String: [String: String]] {
        var rows = try showStat(socket)
        _ = waitUntil(timeout: timeout) {
            rows = (try? showStat(socket)) ?? rows
            return states(rows) == expectedStates
        }
        return rows
    }

    private func assertStates(_ rows: [String: [String: String]], _ who: String, file: StaticString = #filePath, line: UInt = #line) {
        let got = states(rows)
        for key in Self.expected.keys.sorted() where got[key] != expectedStates[key] {
            XCTFail("\(who): \(key) is '\(got[key] ?? "-")', expected '\(expectedStates[key]!)'", file: file, line: line)
        }
    }

    // MARK: tests

    /// `option httpchk` through TLS: the TLS servers answering 200 are UP and share the
    /// traffic; the one answering 500 goes DOWN with haproxy's line; a plain HTTP server
    /// declared `ssl` never completes a handshake (it waits for a request head that the
    /// ClientHello is not) and goes DOWN at layer 6, without a request reaching it.
    func testHTTPCheckThroughTLS() throws {
        let lab = try startLab()
        let (balancer, port, socket) = try startBalancer(lab)
        let failing = try XCTUnwrap(balancer.waitForLine(containing: "Server web/failing is DOWN", timeout: 5), tail(balancer))
        XCTAssertTrue(failing.hasPrefix("Server web/failing is DOWN, reason: Layer7 wrong status, code: 500, info: \"Internal Server Error\", check duration: "),
                      failing)
        let plain = try XCTUnwrap(balancer.waitForLine(containing: "Server web/plain is DOWN", timeout: 5), tail(balancer))
        XCTAssertTrue(plain.hasPrefix("Server web/plain is DOWN, reason: Layer6 timeout, check duration: "), plain)
        XCTAssertTrue(balancer.lines.filter { $0.contains("Server web/one is") || $0.contains("Server web/two is") }.isEmpty,
                      "the TLS servers pass their checks\n\(tail(balancer))")

        assertRotation(try servedNames(port: port, count: 8, balancer: balancer), of: ["one", "two"])
        XCTAssertEqual(lab.plain.requestCount, 0, "the plain server got a request")
        XCTAssertFalse(balancer.lines.contains { $0.contains(" web web/plain ") || $0.contains(" web web/failing ") },
                       "a DOWN server got traffic\n\(tail(balancer))")

        let rows = try waitForExpectedStates(socket)
        assertStates(rows, "balancerd")
        XCTAssertEqual(rows["web/one"]?["check_code"], "200")
        XCTAssertEqual(rows["web/failing"]?["check_desc"], "Layer7 wrong status")
        XCTAssertEqual(rows["web/plain"]?["check_desc"], "Layer6 timeout")
    }

    /// Without `option httpchk`, the check of an `ssl` server is the TLS handshake: L6OK
    /// when it completes; a server that answers bytes that are not TLS is L6RSP "SSL
    /// handshake failure", one that never answers L6TOUT. The same non-TLS server checked
    /// without `ssl` passes at layer 4: a port that is open proves no more than that.
    func testTCPCheckOfAnSSLServerIsTheHandshake() throws {
        let lab = try startLab()
        let (balancer, _, socket) = try startBalancer(lab)
        let garbage = try XCTUnwrap(balancer.waitForLine(containing: "Server tcpchk/garbage is DOWN", timeout: 5), tail(balancer))
        XCTAssertTrue(garbage.hasPrefix("Server tcpchk/garbage is DOWN, reason: Layer6 invalid response, info: \"SSL handshake failure\", check duration: "),
                      garbage)
        let silent = try XCTUnwrap(balancer.waitForLine(containing: "Server tcpchk/silent is DOWN", timeout: 5), tail(balancer))
        XCTAssertTrue(silent.hasPrefix("Server tcpchk/silent is DOWN, reason: Layer6 timeout, check duration: "), silent)

        let rows = try waitForExpectedStates(socket)
        assertStates(rows, "balancerd")
        XCTAssertEqual(rows["tcpchk/tls"]?["check_desc"], "Layer6 check passed")
        XCTAssertEqual(rows["tcpchk/cleartext"]?["check_desc"], "Layer4 check passed")
        XCTAssertEqual(rows["tcpchk/garbage"]?["check_desc"], "Layer6 invalid response")
        XCTAssertTrue(balancer.lines.filter { $0.contains("Server tcpchk/tls is") || $0.contains("Server tcpchk/cleartext is") }.isEmpty,
                      tail(balancer))
    }

    /// `verify required ca-file`: the check verifies the server's certificate as traffic
    /// does. A CA that did not sign it fails the check at layer 6; the right one passes.
    /// `check-sni` is sent and, under verify required, must be a name of the certificate
    /// (haproxy's words for a mismatch); the traffic's `sni` is not used for checks
    /// (haproxy 2.6 sends none), so its wrong name does not fail them.
    func testVerifyRequiredChecksTheCertificate() throws {
        let lab = try startLab()
        let (balancer, _, socket) = try startBalancer(lab)
        let wrongCA = try XCTUnwrap(balancer.waitForLine(containing: "Server verify/wrongca is DOWN", timeout: 5), tail(balancer))
        XCTAssertTrue(wrongCA.hasPrefix("Server verify/wrongca is DOWN, reason: Layer6 invalid response, info: \"SSL handshake failure\", check duration: "),
                      wrongCA)
        let wrongName = try XCTUnwrap(balancer.waitForLine(containing: "Server verify/wrongname is DOWN", timeout: 5), tail(balancer))
        XCTAssertTrue(wrongName.hasPrefix("Server verify/wrongname is DOWN, reason: Layer6 invalid response, info: \"Server presented an SSL certificate different from the expected one\", check duration: "),
                      wrongName)
        let rows = try waitForExpectedStates(socket)
        assertStates(rows, "balancerd")
        for name in ["rightca", "rightname", "trafficsni"] {
            XCTAssertFalse(balancer.lines.contains { $0.contains("Server verify/\(name) is") }, "\(name) failed a check\n\(tail(balancer))")
        }
    }

    /// `no-check-ssl` on an `ssl` server checks it in clear text: the plain HTTP server
    /// behind it sees the check's request as written and stays UP (balancerd has no check
    /// `port`, so here the traffic itself, TLS towards a plain server, would fail; the line
    /// shows the keyword, not a setup to copy). The same server kind without it gets a
    /// ClientHello and no request. `check-ssl` checks a server over TLS that traffic
    /// reaches in clear.
    func testNoCheckSSLAndCheckSSL() throws {
        let lab = try startLab()
        let (balancer, _, socket) = try startBalancer(lab)
        let rows = try waitForExpectedStates(socket)
        assertStates(rows, "balancerd")
        XCTAssertTrue(waitUntil(timeout: 3) { !lab.plainChecks.heads.isEmpty }, "no check reached plainchecks\n\(tail(balancer))")
        let head = try XCTUnwrap(lab.plainChecks.heads.first)
        XCTAssertEqual(head, "GET /health HTTP/1.0\r\nConnection: close", "the clear-text check as sent")
        XCTAssertTrue(lab.tlsChecks.heads.isEmpty, "a TLS check reached tlschecks as a request: \(lab.tlsChecks.heads)")
        let tlsChecks = try XCTUnwrap(balancer.waitForLine(containing: "Server nocheck/tlschecks is DOWN", timeout: 5), tail(balancer))
        XCTAssertTrue(tlsChecks.contains("reason: Layer6 timeout"), tlsChecks)
        XCTAssertFalse(balancer.lines.contains { $0.contains("Server nocheck/forced is") || $0.contains("Server nocheck/plainchecks is") },
                       tail(balancer))
    }

    /// `balancerd export-haproxy` writes the check keywords back (`check-sni`,
    /// `no-check-ssl`, `check-ssl` with the server's verify and ca-file), and haproxy -c
    /// accepts the export.
    func testExportKeepsTheCheckKeywordsAndHAProxyAcceptsIt() throws {
        let lab = try startLab()
        let directory = try TempDirectory(prefix: "balancerd-tlscheck-export")
        addTeardownBlock { directory.remove() }
        let ports = try (0..<4).map { _ in try freePort() }
        let config = try directory.write(lab.config(ports: ports, socket: directory.file("admin.sock")), to: "haproxy.cfg")
        let exported = try BalancerdProcess.run(["export-haproxy", "--config", config])
        XCTAssertEqual(exported.exitCode, 0, exported.allText)
        let lines = exported.stdoutText.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        func line(_ server: String) -> String { lines.first { $0.hasPrefix("server \(server) ") } ?? "" }
        let ca = lab.authority.certificatePath
        XCTAssertTrue(line("rightname").hasSuffix(" ssl verify required ca-file \(ca) check-sni right.test"), exported.stdoutText)
        XCTAssertTrue(line("trafficsni").hasSuffix(" ssl verify required ca-file \(ca) sni str(wrong.test)"), exported.stdoutText)
        XCTAssertTrue(line("plainchecks").hasSuffix(" ssl verify none no-check-ssl"), exported.stdoutText)
        XCTAssertTrue(line("forced").hasSuffix(" check-ssl verify none"), exported.stdoutText)
        XCTAssertTrue(line("cleartext").hasSuffix(" rise 1 fall 2"), "no TLS word on a plain server: \(line("cleartext"))")
        let file = try directory.write(exported.stdoutText + "\n", to: "exported.cfg")
        let check = try HAProxyProcess.check(configPath: file)
        XCTAssertEqual(check.exitCode, 0, "haproxy -c refused the export:\n\(check.allText)\n\(exported.stdoutText)")
    }

    /// Parity: Debian's haproxy 2.6 on the same file (its own ports and socket) beside
    /// balancerd. Every server ends in the same state with the same check result and code,
    /// and each DOWN line says the same up to the check's duration.
    func testSameStatesAsHAProxy() throws {
        let lab = try startLab()
        let (balancer, _, socket) = try startBalancer(lab)

        let directory = try TempDirectory(prefix: "haproxy-tlscheck")
        addTeardownBlock { directory.remove() }
        let haproxySocket = directory.file("haproxy.sock")
        let ports = try (0..<4).map { _ in try freePort() }
        let haproxyConfig = try directory.write(lab.config(ports: ports, socket: haproxySocket), to: "haproxy.cfg")
        let check = try HAProxyProcess.check(configPath: haproxyConfig)
        XCTAssertEqual(check.exitCode, 0, "haproxy -c refused the file:\n\(check.allText)")
        let haproxy = try HAProxyProcess(configPath: haproxyConfig, port: ports[0])
        addTeardownBlock { haproxy.stop() }

        let ours = try waitForExpectedStates(socket)
        let theirs = try waitForExpectedStates(haproxySocket)
        assertStates(theirs, "haproxy")
        assertStates(ours, "balancerd")
        // Each server's code and description, read while neither has a check running.
        var compared: [String: (ours: String, theirs: String)] = [:]
        _ = waitUntil(timeout: 5) {
            guard let a = try? showStat(socket), let b = try? showStat(haproxySocket) else { return false }
            for key in Self.expected.keys where compared[key] == nil {
                guard let mine = a[key], let other = b[key], mine["in_progress"] == nil, other["in_progress"] == nil else { continue }
                compared[key] = ("\(mine["check_code"] ?? "-") \(mine["check_desc"] ?? "-")",
                                 "\(other["check_code"] ?? "-") \(other["check_desc"] ?? "-")")
            }
            return compared.count == Self.expected.count
        }
        for key in Self.expected.keys.sorted() {
            let pair = try XCTUnwrap(compared[key], "\(key): never read outside a running check")
            XCTAssertEqual(pair.ours, pair.theirs, "check_code and check_desc of \(key)")
        }

        // haproxy prints `[WARNING]  (pid) : Server web/failing is DOWN, reason: ...`.
        for (key, value) in Self.expected where value.status == "DOWN" {
            let prefix = "Server \(key) is DOWN"
            let mine = try XCTUnwrap(balancer.waitForLine(containing: prefix, timeout: 5), tail(balancer))
            XCTAssertTrue(waitUntil(timeout: 5) { haproxy.outputText.contains(prefix) }, haproxy.outputText)
            let line = haproxy.outputText.split(separator: "\n").first { $0.contains(prefix) }.map(String.init) ?? ""
            func reason(_ text: String) -> String {
                guard let start = text.range(of: prefix), let end = text.range(of: ", check duration:") else { return text }
                return String(text[start.lowerBound..<end.lowerBound])
            }
            XCTAssertEqual(reason(mine), reason(line), "balancerd and haproxy say different things about \(key)")
        }
    }
}
