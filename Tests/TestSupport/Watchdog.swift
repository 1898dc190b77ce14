// A per-test time limit. Every wait of the harness is bounded, but a test that blocks
// somewhere unbounded (a join, a read without a timeout, a server thread that never
// returns because balancerd crashed half-way through an exchange) would otherwise hang the
// whole suite with no word of which test or what it waited for.
//
// When the limit passes, the watchdog prints which test ran over and what it said it was
// waiting for last, then runs the test's unblock actions (the harness registers "SIGKILL
// the balancerd I started": every socket to it then ends, so blocked reads return and the
// test fails on its own, with the watchdog's message added by its teardown). If the test
// still has not finished `grace` seconds later, nothing in-process can free it: the
// watchdog prints the message again and ends the test process, so the run fails instead of
// hanging.
//
// Threading: one timer thread per armed watchdog; every field is behind `state`'s lock.

import Glibc

public final class Watchdog: @unchecked Sendable {
    public let label: String
    public let limit: Double
    public let grace: Double

    private struct State {
        var waitingFor: String?
        var unblockActions: [@Sendable () -> Void] = []
        var firedMessage: String?
        var finished = false
    }

    private let state = Protected(State())
    private let wake = WatchdogTimer()
    private var thread: JoinableThread?
    /// What happens when the grace period is over too: by default the message on stderr
    /// and `exit(1)`; a test of the watchdog itself passes something it can observe.
    private let giveUp: @Sendable (String) -> Void

    /// The watchdog of the test running now (tests run one at a time): harness waits
    /// report what they are waiting for to it.
    private static let currentWatchdog = Protected<Watchdog?>(nil)
    public static var current: Watchdog? { currentWatchdog.snapshot }

    /// Starts the timer. `label` names the test in the message.
    public init(label: String, limit: Double, grace: Double = 10,
                giveUp: @escaping @Sendable (String) -> Void = Watchdog.exitProcess) {
        self.label = label
        self.limit = limit
        self.grace = grace
        self.giveUp = giveUp
        Watchdog.currentWatchdog.withLock { $0 = self }
        thread = JoinableThread(name: "ts-watchdog") { [self] in watch() }
    }

    /// Prints `message` and ends the test process with status 1.
    public static let exitProcess: @Sendable (String) -> Void = { message in
        writeToStandardError("\n\(message)\nwatchdog: ending the test process so that the run fails instead of hanging\n")
        exit(1)
    }

    /// Records what the test waits for now (the message names the last one).
    public func note(_ waitingFor: String) {
        state.withLock { $0.waitingFor = waitingFor }
    }

    /// Reports `waitingFor` to the current test's watchdog, if any.
    public static func note(_ waitingFor: String) {
        current?.note(waitingFor)
    }

    /// `action` runs (on the watchdog's thread) when the limit passes: something that makes
    /// the test's blocked calls return, such as killing a process it talks to.
    public func onFire(_ action: @escaping @Sendable () -> Void) {
        state.withLock { $0.unblockActions.append(action) }
    }

    /// The message, once the limit has passed.
    public var firedMessage: String? { state.withLock { $0.firedMessage } }

    /// Stops the timer (the test finished). Returns the message if the limit had passed.
    @discardableResult
    public func cancel() -> String? {
        let message = state.withLock { s -> String? in
            s.finished = true
            return s.firedMessage
        }
        wake.signal()
        thread?.join()
        thread = nil
        Watchdog.currentWatchdog.withLock { if $0 === self { $0 = nil } }
        return message
    }

    private func watch() {
        guard !wake.wait(seconds: limit) else { return }
        let (message, actions) = state.withLock { s -> (String?, [@Sendable () -> Void]) in
            guard !s.finished else { return (nil, []) }
            let text = "watchdog: \(label) still running after \(Self.format(limit)) s; it was waiting for: \(s.waitingFor ?? "nothing it reported")"
            s.firedMessage = text
            return (text, s.unblockActions)
        }
        guard let message else { return }
        writeToStandardError("\n\(message)\n")
        actions.forEach { $0() }
        guard !wake.wait(seconds: grace) else { return }
        if state.withLock({ $0.finished }) { return }
        giveUp(message)
    }

    private static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }

    deinit {
        if thread != nil { cancel() }
    }
}

/// write(2) on fd 2: unbuffered, and no shared `stderr` FILE to reach from Swift 6.
private func writeToStandardError(_ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { write(2, $0.baseAddress!, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        bytes = bytes.dropFirst(n)
    }
}

/// A one-shot wake-up for the watchdog's thread.
private final class WatchdogTimer: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var signalled = false

    init() {
        pthread_mutex_init(&mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(&condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    func signal() {
        pthread_mutex_lock(&mutex)
        signalled = true
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
    }

    /// True if signalled within `seconds`, false when they passed.
    func wait(seconds: Double) -> Bool {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let total = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) + Int64(max(0, seconds) * 1e9)
        var until = timespec(tv_sec: Int(total / 1_000_000_000), tv_nsec: Int(total % 1_000_000_000))
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while !signalled {
            if pthread_cond_timedwait(&condition, &mutex, &until) == ETIMEDOUT { return signalled }
        }
        return true
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }
}
