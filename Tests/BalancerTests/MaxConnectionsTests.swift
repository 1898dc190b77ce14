import XCTest
@testable import Balancer

/// maxconn from the open-file limit, as haproxy 2.6's compute_ideal_maxconn with splicing
/// (maxconn = 2 * (limit - reserved) / 5, at least 100), and the pipe budget that keeps
/// splice pipes from taking the descriptors accept needs.
final class MaxConnectionsTests: XCTestCase {
    func testDerivedMaxconnFollowsHAProxysRule() {
        // This machine's hard limit: 2 * 19744 / 5.
        XCTAssertEqual(MaxConnections.derived(openFileLimit: 20_000), 7_897)
        XCTAssertEqual(MaxConnections.derived(openFileLimit: 1_024), 307)
        XCTAssertEqual(MaxConnections.derived(openFileLimit: 1_048_576), 419_328)
        // DEFAULT_MAXCONN is the floor, as in haproxy, even when the limit is tiny.
        XCTAssertEqual(MaxConnections.derived(openFileLimit: 300), 100)
        XCTAssertEqual(MaxConnections.derived(openFileLimit: 0), 100)
    }

    func testDerivedMaxconnAndItsPipesFitTheLimit() {
        for limit in [512, 1_024, 4_096, 20_000, 65_536, 1_048_576] {
            let maxconn = MaxConnections.derived(openFileLimit: limit)
            let pipes = MaxConnections.pipes(for: maxconn, openFileLimit: limit)
            XCTAssertEqual(pipes, maxconn / 4, "limit \(limit): haproxy's maxpipes")
            XCTAssertLessThanOrEqual(MaxConnections.descriptors(for: maxconn) + 2 * pipes, limit, "limit \(limit)")
        }
    }

    func testPipesGiveWayToAMaxconnSetTooHigh() {
        // The case: maxconn 10000 on a 20000 limit. Connections need 20256
        // descriptors; no pipe may take one of them.
        XCTAssertEqual(MaxConnections.pipes(for: 10_000, openFileLimit: 20_000), 0)
        XCTAssertEqual(MaxConnections.pipes(for: 9_000, openFileLimit: 20_000), (20_000 - 18_256) / 2)
        XCTAssertEqual(MaxConnections.pipes(for: 100, openFileLimit: 20_000), 25)
    }

    /// A pool refuses pipes beyond the process budget (the caller copies through a
    /// buffer instead), and a closed pipe gives its room back.
    func testTransferPoolsShareThePipeBudget() throws {
        let budget = PipeBudget(limit: 3)
        let first = TransferPool(budget: budget)
        let second = TransferPool(budget: budget)
        let a = try XCTUnwrap(first.takePipe())
        let b = try XCTUnwrap(first.takePipe())
        let c = try XCTUnwrap(second.takePipe())
        XCTAssertNil(second.takePipe(), "the budget is spent")
        XCTAssertNil(first.takePipe(), "the budget is spent")
        XCTAssertEqual(budget.count, 3)

        // An empty pipe goes back to its pool and stays open: it still counts, and the
        // pool lends it again without asking the budget.
        first.give(a, empty: true)
        XCTAssertEqual(budget.count, 3)
        let again = try XCTUnwrap(first.takePipe())
        XCTAssertEqual(again.read, a.read)

        // A pipe with bytes left in it is closed: its room is free for another pool.
        second.give(c, empty: false)
        XCTAssertEqual(budget.count, 2)
        let d = try XCTUnwrap(second.takePipe())
        XCTAssertEqual(budget.count, 3)

        first.give(again, empty: false)
        first.give(b, empty: false)
        second.give(d, empty: false)
        XCTAssertEqual(budget.count, 0)
    }
}
