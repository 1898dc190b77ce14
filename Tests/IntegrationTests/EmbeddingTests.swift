// The embedding example of README.md: the README shows exactly Examples/Embedded/main.swift,
// and that program, built by SwiftPM, balances real requests.
import Foundation
import Glibc
import TestSupport
import XCTest

final class EmbeddingTests: XCTestCase {
    func testReadmeShowsTheExampleAsItIs() throws {
        let example = try String(contentsOfFile: packageRoot() + "/Examples/Embedded/main.swift", encoding: .utf8)
        let shown = try readmeCodeBlock("swift", under: "## Embedding")
        XCTAssertEqual(shown, example, "README.md's embedding example and Examples/Embedded/main.swift differ: copy the file into the README")
    }

    func testTheExampleBalancesRequestsAcrossItsTwoServers() throws {
        let servers = try ["s1", "s2"].map { name in
            let server = try HTTPStampServer(name: name)
            addTeardownBlock { server.stop() }
            return server
        }
        let example = supervise(try BalancerdProcess(arguments: ["0", String(servers[0].port), String(servers[1].port)],
                                                     binary: try builtExecutablePath("EmbeddedExample")))

        guard let line = example.waitForLine(containing: "balancing ", timeout: 10) else {
            return XCTFail("the example printed no 'balancing …' line\n\(example.outputText)")
        }
        // "balancing 127.0.0.1:PORT over s1 and s2"
        guard let address = line.split(separator: " ").dropFirst().first, let colon = address.lastIndex(of: ":"),
              let port = UInt16(address[address.index(after: colon)...]) else {
            return XCTFail("cannot read the port from '\(line)'")
        }

        var bodies: [String] = []
        for _ in 0..<4 {
            let (status, body) = try httpGet(port: port)
            XCTAssertEqual(status, "HTTP/1.1 200 OK")
            bodies.append(body)
        }
        assertRotation(bodies, of: ["s1", "s2"])
        XCTAssertEqual(servers.map(\.requestCount), [2, 2])

        // The access log went to the default sink, stderr: one httplog line per request.
        let logged = waitUntil(timeout: 5) {
            example.stderrLines.filter { $0.contains(" web servers/s") && $0.contains("\"GET / HTTP/1.1\"") }.count == 4
        }
        XCTAssertTrue(logged, "expected 4 access log lines on stderr\n\(example.outputText)")
    }
}
