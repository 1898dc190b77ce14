// The per-test watchdog (TestSupport/Watchdog.swift) with short limits: it fires, names the
// test and what it waited for, frees a read that would block forever, and gives up (ends
// the process, here replaced by a closure the test observes) when nothing frees the test.

import Foundation
import Glibc
import TestSupport
import XCTest

final class WatchdogTests: XCTestCase {
    /// What the watchdog's last resort was called with, instead of exit(1).
    private final class GiveUpRecord: @unchecked Sendable {
        private let lock = NSLock()
        private var messages: [String] = []
        func record(_ message: String) { lock.lock(); messages.append(message); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return messages }
    }

    /// A read with no timeout on a server that never answers would hang forever. The
    /// watchdog fires after 0.3 s, stops the server (its unblock action), the read returns
    /// EOF, and the message names the test and the wait.
    func testWatchdogFreesABlockedReadAndNamesTheWait() throws {
        let server = try EchoServer()   // silent until spoken to
        addTeardownBlock { server.stop() }
        let gaveUp = GiveUpRecord()
        let watchdog = Watchdog(label: "WatchdogTests.blockedRead", limit: 0.3, grace: 5, giveUp: { gaveUp.record($0) })
        watchdog.onFire { server.stop() }
        let client = try TCPClient(port: server.port)
        defer { client.close() }
        let start = monotonicSeconds()
        // readAll reports its wait to the current watchdog; 60 s stands for "forever".
        let outcome = Result { try client.readAll(timeout: 60) }
        let elapsed = monotonicSeconds() - start
        let message = watchdog.cancel()

        XCTAssertLessThan(elapsed, 10, "the blocked read was not freed by the watchdog")
        XCTAssertEqual(try outcome.get(), [], "the read should end with EOF once the server is stopped")
        let text = try XCTUnwrap(message, "the watchdog did not fire")
        XCTAssertTrue(text.contains("WatchdogTests.blockedRead"), text)
        XCTAssertTrue(text.contains("0.3 s"), text)
        XCTAssertTrue(text.contains("EOF from port \(server.port)"), "the message should say what the test waited for: \(text)")
        XCTAssertEqual(gaveUp.all, [], "the test finished within the grace period: no last resort")
    }

    /// Nothing frees the test (its unblock action does nothing useful): once the grace
    /// period is over too, the last resort runs with the message.
    func testWatchdogGivesUpWhenTheTestStaysStuck() {
        let gaveUp = GiveUpRecord()
        let watchdog = Watchdog(label: "WatchdogTests.stuck", limit: 0.2, grace: 0.2, giveUp: { gaveUp.record($0) })
        watchdog.note("a sleep that nothing interrupts")
        XCTAssertTrue(waitUntil(timeout: 5) { !gaveUp.all.isEmpty }, "the watchdog never gave up")
        let message = watchdog.cancel()
        XCTAssertEqual(gaveUp.all.count, 1)
        XCTAssertEqual(gaveUp.all.first, message)
        XCTAssertTrue(message?.contains("WatchdogTests.stuck still running after 0.2 s") ?? false, message ?? "nil")
    }

    /// A test that finishes in time: no message, no last resort.
    func testWatchdogCancelledInTimeStaysQuiet() {
        let gaveUp = GiveUpRecord()
        let watchdog = Watchdog(label: "WatchdogTests.quick", limit: 0.5, grace: 0.1, giveUp: { gaveUp.record($0) })
        XCTAssertNil(watchdog.cancel())
        sleepSeconds(0.7)
        XCTAssertEqual(gaveUp.all, [])
        XCTAssertNil(watchdog.firedMessage)
    }
}
