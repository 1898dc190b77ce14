// The configs users already have (issue 9), run through the real binaries: every file of
// Tests/Fixtures/haproxy-corpus passes `balancerd check` and `haproxy -c`, and so does its
// export; haproxy STARTS on exports made from plain flags and with a maxconn (the
// descriptor limit of this machine once made it refuse); balancerd starts with no
// descriptor warning; and `errorfile`s are what clients get.
import Foundation
import Glibc
import TestSupport
import XCTest

final class ConfigCorpusTests: XCTestCase {
    private static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/haproxy-corpus").path

    /// Each corpus file and the summary `balancerd check` prints for it.
    private static let expected: [(file: String, summary: String)] = [
        ("debian-default.cfg", "configuration is valid (0 frontend(s), 0 backend(s), 0 server(s))"),
        ("seed-consul-template.cfg", "configuration is valid (1 frontend(s), 1 backend(s), 2 server(s))"),
        ("hashicorp-example.cfg", "configuration is valid (1 frontend(s), 1 backend(s), 3 server(s))"),
        ("stats-admin.cfg", "configuration is valid (1 frontend(s), 1 backend(s), 2 server(s))"),
        ("multi-backend-httpcheck.cfg", "configuration is valid (3 frontend(s), 3 backend(s), 6 server(s))"),
    ]

    private func temporaryDirectory() throws -> TempDirectory {
        let directory = try TempDirectory(prefix: "balancerd-corpus")
        addTeardownBlock { directory.remove() }
        return directory
    }

    func testCorpusIsListedCompletely() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).filter { $0.hasSuffix(".cfg") }.sorted()
        XCTAssertEqual(files, Self.expected.map(\.file).sorted(), "every corpus file has an expected summary")
    }

    func testBalancerdAndHAProxyAcceptEveryCorpusFile() throws {
        let directory = try temporaryDirectory()
        for (name, summary) in Self.expected {
            let path = "\(Self.corpus)/\(name)"
            let check = try BalancerdProcess.run(["check", "--config", path])
            XCTAssertEqual(check.exitCode, 0, "\(name): \(check.allText)")
            XCTAssertEqual(check.stdout, ["\(path): \(summary)"], name)

            let reference = try HAProxyProcess.check(configPath: path)
            XCTAssertEqual(reference.exitCode, 0, "haproxy -c -f \(name): \(reference.allText)")
            XCTAssertTrue(reference.allText.contains("Configuration file is valid"), reference.allText)

            // What balancerd makes of it is real haproxy syntax too.
            let export = try BalancerdProcess.run(["export-haproxy", "--config", path])
            XCTAssertEqual(export.exitCode, 0, "\(name): \(export.allText)")
            let exported = try directory.write(export.stdoutText + "\n", to: "export-\(name)")
            let exportCheck = try HAProxyProcess.check(configPath: exported)
            XCTAssertEqual(exportCheck.exitCode, 0, "haproxy -c on the export of \(name): \(exportCheck.allText)\n\(export.stdoutText)")
        }
    }

    /// Debian's default file has no frontend: balancerd says so and stops, instead of
    /// idling like haproxy.
    func testRunningAFileWithoutFrontendSaysSo() throws {
        let path = "\(Self.corpus)/debian-default.cfg"
        let run = try BalancerdProcess.run(["--config", path])
        XCTAssertEqual(run.exitCode, 1, run.allText)
        XCTAssertTrue(run.stderrText.contains("\(path) has no frontend or listen section: nothing to listen on"), run.allText)
    }

    // MARK: maxconn follows the machine

    private func startedHAProxy(onExportOf arguments: [String], directory: TempDirectory, port: UInt16) throws -> String {
        let export = try BalancerdProcess.run(["export-haproxy"] + arguments)
        XCTAssertEqual(export.exitCode, 0, export.allText)
        let path = try directory.write(export.stdoutText + "\n", to: "haproxy-\(port).cfg")
        let haproxy = try HAProxyProcess(configPath: path, port: port)
        addTeardownBlock { haproxy.stop() }
        let name = try fetchName(port: port)
        XCTAssertFalse(haproxy.outputText.contains("ALERT"), haproxy.outputText)
        haproxy.stop()
        return name + "\n" + export.stdoutText
    }

    func testHAProxyStartsOnTheExportOfPlainFlags() throws {
        let directory = try temporaryDirectory()
        let server = try startStampServers(["only"])[0]
        let port = try freePort()
        let result = try startedHAProxy(
            onExportOf: ["--listen", "127.0.0.1:\(port)", "--mode", "tcp", "--server", "127.0.0.1:\(server.port)"],
            directory: directory, port: port)
        XCTAssertTrue(result.hasPrefix("only\n"), result)
        XCTAssertFalse(result.contains("maxconn"), "a derived maxconn belongs to this machine, not to the export:\n\(result)")
    }

    func testHAProxyStartsOnTheExportOfAConfigWithMaxconn() throws {
        let directory = try temporaryDirectory()
        let server = try startStampServers(["only"])[0]
        let port = try freePort()
        let config = try directory.write("""
            global
                maxconn 2000
            defaults
                mode tcp
                timeout connect 2s
                timeout client 10s
                timeout server 10s
            frontend main
                bind 127.0.0.1:\(port)
                default_backend main
            backend main
                server s1 127.0.0.1:\(server.port)
            """, to: "maxconn.cfg")
        let result = try startedHAProxy(onExportOf: ["--config", config], directory: directory, port: port)
        XCTAssertTrue(result.hasPrefix("only\n"), result)
        XCTAssertTrue(result.contains("\n    maxconn 2000\n"), result)
    }

    /// On a machine whose open-file limit is the default, balancerd derives its maxconn
    /// and starts without a word about descriptors.
    func testBalancerdStartsWithoutADescriptorWarning() throws {
        let server = try startStampServers(["only"])[0]
        for arguments in [["--listen", "127.0.0.1:0", "--server", "127.0.0.1:\(server.port)"],
                          ["--demo", "--listen", "127.0.0.1:0"]] {
            let balancer = supervise(try BalancerdProcess(arguments: arguments))
            _ = try balancer.port()
            XCTAssertEqual(balancer.stderrLines.filter { $0.contains("warning") || $0.contains("limit") }, [],
                           "\(arguments): \(balancer.lines.joined(separator: "\n"))")
            XCTAssertEqual(balancer.stop(timeout: 3), 0)
        }
    }

    // MARK: errorfile

    func testErrorFilesAreSentAsWritten() throws {
        let directory = try temporaryDirectory()
        let e400 = "HTTP/1.0 400 Bad request\r\nCache-Control: no-cache\r\nContent-Type: text/plain\r\n\r\nfrom the 400 file\n"
        let e503 = "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nX-From: errorfile\r\n\r\nfrom the 503 file\n"
        let file400 = try directory.write(e400, to: "400.http")
        let file503 = try directory.write(e503, to: "503.http")
        // A frontend-only 503 file must lose to the backend's.
        let decoy = try directory.write("HTTP/1.0 503 Wrong\r\n\r\nfrontend's\n", to: "decoy.http")
        let config = try directory.write("""
            defaults
                mode http
                timeout connect 1s
                timeout client 5s
                timeout server 5s
                errorfile 400 \(file400)
            frontend main
                bind 127.0.0.1:0
                errorfile 503 \(decoy)
                default_backend empty
            backend empty
                errorfile 503 \(file503)
            """, to: "errorfiles.cfg")
        let (_, port) = try startBalancer(["--config", config])

        // No server at all: 503, the backend's file byte for byte, then the close.
        let client = try TCPClient(port: port)
        try client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        client.shutdownWrite()
        XCTAssertEqual(String(decoding: try client.readAll(), as: UTF8.self), e503)

        // A request that does not parse: the 400 file.
        let malformed = try TCPClient(port: port)
        try malformed.send("GET / HTTP/1.1\r\nHost x\r\n\r\n")
        malformed.shutdownWrite()
        XCTAssertEqual(String(decoding: try malformed.readAll(), as: UTF8.self), e400)
    }
}
