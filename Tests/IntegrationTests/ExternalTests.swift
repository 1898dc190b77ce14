// The command line as a user meets it, and a real-world backend (Debian's nginx).

import Foundation
import Glibc
import TestSupport
import XCTest

final class NginxBackendTests: XCTestCase {
    /// Two nginx instances behind balancerd in tcp mode: `GET /` with `Connection: close`
    /// alternates between them.
    func testRequestsAlternateBetweenTwoNginx() throws {
        let n1 = try NginxServer(name: "n1")
        let n2 = try NginxServer(name: "n2")
        addTeardownBlock {
            n1.stop()
            n2.stop()
        }
        let (balancer, port) = try startBalancer(flagArguments(servers: [n1.address, n2.address]))

        var bodies: [String] = []
        for i in 0..<6 {
            do {
                let (status, body) = try httpGet(port: port)
                XCTAssertTrue(status.hasPrefix("HTTP/1.1 200"), status)
                bodies.append(body)
            } catch {
                XCTFail("request \(i + 1) failed: \(error)\n\(tail(balancer))\nn1: \(n1.errorLog)\nn2: \(n2.errorLog)")
                return
            }
        }
        assertRotation(bodies, of: ["n1", "n2"])
    }
}

final class CommandLineTests: XCTestCase {
    func testHelpPrintsUsageAndExitsZero() throws {
        let result = try BalancerdProcess.run(["--help"])
        XCTAssertEqual(result.exitCode, 0, result.allText)
        XCTAssertTrue(result.allText.contains("--listen"), "usage does not mention --listen: \(result.allText)")
        XCTAssertTrue(result.allText.contains("--server"), result.allText)
    }

    func testVersionExitsZero() throws {
        let result = try BalancerdProcess.run(["--version"])
        XCTAssertEqual(result.exitCode, 0, result.allText)
        XCTAssertFalse(result.allText.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "--version printed nothing")
    }

    func testUnknownFlagExitsTwoWithErrorAndUsage() throws {
        let result = try BalancerdProcess.run(["--frobnicate"])
        XCTAssertEqual(result.exitCode, 2, result.allText)
        let errorLines = result.stderr.filter { $0.contains("--frobnicate") }
        XCTAssertEqual(errorLines.count, 1, "one line naming the bad flag: \(result.stderrText)")
        XCTAssertTrue(result.stderrText.contains("--listen"), "usage on stderr: \(result.stderrText)")
    }

    func testMissingServerValueExitsTwo() throws {
        let result = try BalancerdProcess.run(["--listen", "127.0.0.1:0", "--server"])
        XCTAssertEqual(result.exitCode, 2, result.allText)
    }

    func testCheckAcceptsGoodFileAndRejectsBrokenFile() throws {
        let good = try TempConfigFile(listenConfig(servers: [
            ("s1", "127.0.0.1:9001", ""), ("s2", "127.0.0.1:9002", "weight 3"), ("s3", "127.0.0.1:9003", "backup check inter 2s rise 2 fall 3"),
        ]))
        let ok = try BalancerdProcess.run(["check", "--config", good.path])
        XCTAssertEqual(ok.exitCode, 0, ok.allText)

        let broken = try TempConfigFile("""
            defaults
                mode tcp

            listen main
                bind 127.0.0.1:0
                frobnicate yes
                server s1 127.0.0.1:9001

            """)
        let bad = try BalancerdProcess.run(["check", "--config", broken.path])
        XCTAssertEqual(bad.exitCode, 1, bad.allText)
        XCTAssertTrue(bad.stderrText.contains("\(broken.path):6: 'frobnicate'"), "error must name file, line, keyword: \(bad.stderrText)")
    }

    func testCheckRejectsBadServerWeight() throws {
        let broken = try TempConfigFile("""
            listen main
                bind 127.0.0.1:0
                server s1 127.0.0.1:9001 weight banana

            """)
        let bad = try BalancerdProcess.run(["check", "--config", broken.path])
        XCTAssertEqual(bad.exitCode, 1, bad.allText)
        // The keyword may be reported as the directive or as the option within it.
        XCTAssertTrue(
            bad.stderrText.contains("\(broken.path):3: 'server'") || bad.stderrText.contains("\(broken.path):3: 'weight'"),
            "error must name file, line, keyword: \(bad.stderrText)"
        )
    }
}
