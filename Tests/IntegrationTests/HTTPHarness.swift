// Shared pieces of the HTTP-mode integration tests: HTTPTestServer backends, balancerd in
// http mode (from flags or from a haproxy-syntax file), and the httplog line format.

import Foundation
import Glibc
import TestSupport
import XCTest

extension XCTestCase {
    /// HTTPTestServers named `names` (all in `mode`), stopped when the test ends.
    func startHTTPServers(_ names: [String], mode: HTTPTestServer.Mode = .respond) throws -> [HTTPTestServer] {
        try names.map { name in
            let server = try HTTPTestServer(name: name, mode: mode)
            addTeardownBlock { server.stop() }
            return server
        }
    }

    /// `balancerd --mode http --listen 127.0.0.1:0 --server A --server B …` (servers s1, s2, …).
    func startHTTPBalancer(servers: [String], extra: [String] = []) throws -> (BalancerdProcess, UInt16) {
        try startBalancer(["--mode", "http", "--listen", "127.0.0.1:0"] + servers.flatMap { ["--server", $0] } + extra)
    }

    /// balancerd with `httpConfig(…)` written to a temp file.
    func startHTTPBalancer(config text: String) throws -> (BalancerdProcess, UInt16) {
        let config = try TempConfigFile(text)
        addTeardownBlock { config.directory.remove() }
        return try startBalancer(["--config", config.path])
    }

    /// A fresh client connection to `port`, closed when the test ends.
    func connectHTTP(_ port: UInt16) throws -> HTTPClientConnection {
        let connection = try HTTPClientConnection(port: port)
        addTeardownBlock { connection.close() }
        return connection
    }
}

/// A haproxy-syntax `mode http` configuration with one `listen main` section. `settings`
/// go into `defaults` after the default timeouts (a later `timeout server` wins).
func httpConfig(servers: [(name: String, address: String)], settings: [String] = []) -> String {
    var text = """
        defaults
            mode http
            option forwardfor
            timeout connect 1s
            timeout client 30s
            timeout server 30s

        """
    for line in settings { text += "    \(line)\n" }
    text += "\nlisten main\n    bind 127.0.0.1:0\n"
    for server in servers { text += "    server \(server.name) \(server.address)\n" }
    return text
}

/// `GET path` with a Host header (and any extra header lines, each ending in CRLF).
func getRequest(_ path: String = "/", extra: String = "") -> String {
    "GET \(path) HTTP/1.1\r\nHost: test.local\r\n\(extra)\r\n"
}

/// An httplog line: `%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc
/// %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r`. Captures: client port, server, status, bytes,
/// termination state, request line.
func httpLogPattern() -> Regex<(Substring, Substring, Substring, Substring, Substring, Substring, Substring)> {
    try! Regex(
        #"^127\.0\.0\.1:(\d+) \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}\.\d{3}\] main main/(\S+) -?\d+/-?\d+/-?\d+/-?\d+/\d+ (\d{3}) (\d+) - - (\S{4}) \d+/\d+/\d+/\d+/\d+ \d+/\d+ "(.*)"$"#
    )
}

struct HTTPLogLine {
    let clientPort: UInt16
    let server: String
    let status: Int
    let bytes: Int
    let termination: String
    let request: String
}

/// Every httplog line balancerd has printed so far.
func httpLogLines(_ balancer: BalancerdProcess) -> [HTTPLogLine] {
    let pattern = httpLogPattern()
    return balancer.stderrLines.compactMap { line in
        guard let m = line.wholeMatch(of: pattern) else { return nil }
        return HTTPLogLine(
            clientPort: UInt16(m.output.1)!, server: String(m.output.2), status: Int(m.output.3)!,
            bytes: Int(m.output.4)!, termination: String(m.output.5), request: String(m.output.6)
        )
    }
}

/// Printable bytes, for failure messages.
func show(_ text: String) -> String {
    text.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n")
        .replacingOccurrences(of: "\0", with: "\\0")
}
