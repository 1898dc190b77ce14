// The soak in CI: Benchmarks/soak for 60 seconds against the release balancerd (the
// binary users run; a stale one fails the test, as in IdleMemoryTests). The script runs
// the mixed traffic (keep-alive and close requests, bodies both ways, two upgrade
// tunnels, Consul churn every 3 s, a backend SIGKILLed and restarted at 30 s), samples
// balancerd's RSS, open fds and CPU every 10 s, and exits 1 when RSS grew more than 10%
// after the warm-up, when the fds do not come back to their count before the traffic,
// or when a request failed that should not have. Its own summary says which.

import Foundation
import TestSupport
import XCTest

final class SoakTests: XCTestCase {
    func testSixtySecondSoakStaysFlatAndLosesNothing() throws {
        let binary = try releaseBalancerdPath()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Benchmarks/soak").path
        // 60 s of traffic, then at most 30 s for the fds to settle and a few seconds to
        // start and stop: 150 s is a hang, not a slow machine.
        let result = try runProcess(script, ["--seconds", "60", "--balancerd", binary], timeout: 150)
        let summary = result.stdout.filter { !$0.hasPrefix("soak: ") || !$0.contains(" s  RSS ") }
        print(summary.joined(separator: "\n"))
        XCTAssertEqual(result.exitCode, 0, "Benchmarks/soak failed:\n\(result.allText)")
        XCTAssertTrue(result.stdout.contains("soak: PASSED"), "no verdict from Benchmarks/soak:\n\(result.allText)")
        // The script ran what it says: requests went through, and the kill happened.
        let counts = result.stdout.first { $0.contains("Consul changes") } ?? ""
        XCTAssertTrue(counts.contains("1 SIGKILLs"), "expected one backend killed in 60 s: \(counts)")
    }
}
