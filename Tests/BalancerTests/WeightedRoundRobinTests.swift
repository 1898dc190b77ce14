import XCTest
@testable import Balancer

final class WeightedRoundRobinTests: XCTestCase {
    private func server(_ name: String, weight: Int = 1, backup: Bool = false) -> Server {
        Server(config: ServerConfig(name: name, address: HostPort(host: "127.0.0.1", port: 1), weight: weight, backup: backup),
               address: SocketAddress(numericHost: "127.0.0.1", port: 1)!, health: ServerHealth())
    }

    private func table(_ servers: [Server], allBackups: Bool = false) -> BackendTable {
        var config = BackendConfig(name: "be", mode: .tcp)
        config.allBackups = allBackups
        return BackendTable(generation: 1, config: config, servers: servers)
    }

    private func picks(_ table: BackendTable, _ count: Int, now: Int64 = 0) -> [String] {
        (0..<count).map { _ in table.pick(now: now).map { table.servers[$0].name } ?? "-" }
    }

    /// Longest run of the same name, counting across the cycle boundary.
    private func longestRun(of name: String, in sequence: [String]) -> Int {
        var longest = 0, run = 0
        for element in sequence + sequence {
            run = element == name ? run + 1 : 0
            longest = max(longest, run)
        }
        return longest
    }

    func testEqualWeightsRotateStrictly() {
        let t = table([server("s1"), server("s2"), server("s3")])
        XCTAssertEqual(picks(t, 7), ["s1", "s2", "s3", "s1", "s2", "s3", "s1"])
    }

    func testOneToThreeSplitWithoutBunching() {
        let t = table([server("a", weight: 1), server("b", weight: 3)])
        let sequence = picks(t, 400)
        XCTAssertEqual(sequence.filter { $0 == "a" }.count, 100)
        XCTAssertEqual(sequence.filter { $0 == "b" }.count, 300)
        XCTAssertEqual(longestRun(of: "a", in: sequence), 1)
        XCTAssertLessThanOrEqual(longestRun(of: "b", in: sequence), 3)
    }

    func testTwoThreeFiveSplitInterleaves() {
        let t = table([server("a", weight: 2), server("b", weight: 3), server("c", weight: 5)])
        let sequence = picks(t, 1000)
        XCTAssertEqual(sequence.filter { $0 == "a" }.count, 200)
        XCTAssertEqual(sequence.filter { $0 == "b" }.count, 300)
        XCTAssertEqual(sequence.filter { $0 == "c" }.count, 500)
        // c has half the turns: it must alternate, never twice in a row (as haproxy does).
        XCTAssertEqual(longestRun(of: "c", in: sequence), 1)
        XCTAssertEqual(longestRun(of: "a", in: sequence), 1)
        XCTAssertEqual(longestRun(of: "b", in: sequence), 1)
        // Within every window of 10, each server gets exactly its weight.
        for start in stride(from: 0, to: 1000, by: 10) {
            let window = sequence[start..<start + 10]
            XCTAssertEqual(window.filter { $0 == "c" }.count, 5)
        }
    }

    func testScheduleReducesByGCD() {
        XCTAssertEqual(WeightedRoundRobin.schedule(weights: [100, 200]).count, 3)
        XCTAssertEqual(WeightedRoundRobin.schedule(weights: [256, 256, 256]).count, 3)
    }

    func testWeightZeroGetsNoTraffic() {
        let t = table([server("a", weight: 0), server("b"), server("c")])
        XCTAssertFalse(picks(t, 50).contains("a"))
    }

    func testBackupOnlyWhenNoPrimaryIsUsable() {
        let s1 = server("s1"), s2 = server("s2"), b1 = server("b1", backup: true), b2 = server("b2", backup: true)
        let t = table([s1, s2, b1, b2])
        XCTAssertEqual(Set(picks(t, 20)), ["s1", "s2"])
        s1.health.checkedUp.store(false, ordering: .relaxed)
        XCTAssertEqual(Set(picks(t, 20)), ["s2"])
        s2.health.checkedUp.store(false, ordering: .relaxed)
        // haproxy without `option allbackups`: only the first backup is used.
        XCTAssertEqual(Set(picks(t, 20)), ["b1"])
        b1.health.checkedUp.store(false, ordering: .relaxed)
        XCTAssertEqual(Set(picks(t, 20)), ["b2"])
        b2.health.checkedUp.store(false, ordering: .relaxed)
        XCTAssertEqual(Set(picks(t, 5)), ["-"])
        s1.health.checkedUp.store(true, ordering: .relaxed)
        XCTAssertEqual(Set(picks(t, 5)), ["s1"])
    }

    func testAllBackupsRotatesAcrossBackups() {
        let s1 = server("s1"), b1 = server("b1", backup: true), b2 = server("b2", backup: true)
        let t = table([s1, b1, b2], allBackups: true)
        s1.health.checkedUp.store(false, ordering: .relaxed)
        XCTAssertEqual(picks(t, 4), ["b1", "b2", "b1", "b2"])
    }

    func testDownServerIsSkippedWithoutBunching() {
        let s1 = server("s1"), s2 = server("s2"), s3 = server("s3")
        let t = table([s1, s2, s3])
        s2.health.checkedUp.store(false, ordering: .relaxed)
        let sequence = picks(t, 12)
        XCTAssertFalse(sequence.contains("s2"))
        XCTAssertEqual(longestRun(of: "s1", in: sequence), 1, "\(sequence)")
        XCTAssertEqual(longestRun(of: "s3", in: sequence), 1, "\(sequence)")
    }

    func testRetryAvoidsTheFailedServer() {
        let t = table([server("s1"), server("s2"), server("s3")])
        for avoid in 0..<3 {
            for _ in 0..<6 { XCTAssertNotEqual(t.pick(avoiding: avoid, now: 0), avoid) }
        }
        // ...unless it is the only one left.
        let single = table([server("only")])
        XCTAssertEqual(single.pick(avoiding: 0, now: 0), 0)
    }

    func testPassiveHoldDownPassesOverAFailingServerForAWhile() {
        let s1 = server("s1"), s2 = server("s2")
        let t = table([s1, s2])
        s1.health.recordConnectFailure(now: 1_000)
        XCTAssertEqual(Set(picks(t, 6, now: 2_000)), ["s2"])
        // After the hold-down it is tried again.
        XCTAssertEqual(Set(picks(t, 6, now: 1_000 + ServerHealth.passiveHoldDown)), ["s1", "s2"])
        // When every server is held down, they are tried anyway rather than refusing.
        s2.health.recordConnectFailure(now: 1_000)
        XCTAssertEqual(Set(picks(t, 6, now: 2_000)), ["s1", "s2"])
    }
}
