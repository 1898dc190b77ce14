// Small concurrency primitives for the test helpers: a locked box, a joinable thread and
// deadlines. Blocking threads are fine here: the helpers exist to be obviously correct,
// not fast, and every blocking call they make has a timeout or is woken by `stop()`.

import Foundation
import Glibc

/// An error from a test helper. The message is written for the person reading a failed test.
public struct TestSupportError: Error, CustomStringConvertible, Sendable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// A value guarded by a lock. All access goes through `withLock`.
final class Protected<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()

    init(_ value: Value) {
        self.value = value
    }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }

    var snapshot: Value { withLock { $0 } }
}

private final class ThreadBody {
    let run: () -> Void

    init(_ run: @escaping () -> Void) {
        self.run = run
    }
}

/// A pthread that can be joined, so a server's `stop()` can prove that none of its threads
/// outlives it (Foundation's `Thread` cannot be joined).
public final class JoinableThread: @unchecked Sendable {
    private var tid = pthread_t()
    // `finished` is set by the thread itself as its very last action; `joined` by the joiner.
    private let state = Protected((finished: false, joined: false))

    /// Starts `body` on a new thread. `name` (15 bytes at most are kept) shows in
    /// /proc/self/task/*/comm and in debuggers; every TestSupport thread's name starts "ts-".
    public init(name: String = "ts-thread", _ body: @escaping @Sendable () -> Void) {
        let box = ThreadBody { [state] in
            setCurrentThreadName(name)
            body()
            state.withLock { $0.finished = true }
        }
        let context = Unmanaged.passRetained(box).toOpaque()
        let rc = pthread_create(&tid, nil, { raw in
            let box = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
            box.run()
            return nil
        }, context)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    /// True once the body has returned (the thread may still be a few instructions from exit).
    public var isFinished: Bool { state.withLock { $0.finished } }

    /// Waits for the thread to exit. Calling it again, or from several threads, is harmless.
    public func join() {
        let shouldJoin = state.withLock { s -> Bool in
            if s.joined { return false }
            s.joined = true
            return true
        }
        if shouldJoin {
            pthread_join(tid, nil)
        }
    }
}

/// Names the calling thread (Glibc does not export pthread_setname_np to Swift).
private func setCurrentThreadName(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
    close(fd)
}

/// Names of this process's threads whose name starts with `prefix` (TestSupport's own
/// threads are all named "ts-…"), to check that nothing outlives a `stop()`.
public func runningThreadNames(prefix: String = "ts-") -> [String] {
    guard let dir = opendir("/proc/self/task") else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard tid.first?.isNumber == true else { continue }
        let comm = readSmallFile("/proc/self/task/\(tid)/comm").trimmingWhitespace()
        if comm.hasPrefix(prefix) { names.append(comm) }
    }
    return names
}

private func readSmallFile(_ path: String) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 256)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
    return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
}

/// A point in time on the monotonic clock, for loops with a bounded wait.
public struct Deadline: Sendable {
    public let uptimeNanoseconds: UInt64

    public init(secondsFromNow seconds: Double) {
        uptimeNanoseconds = Deadline.nowNanoseconds() &+ UInt64(max(0, seconds) * 1e9)
    }

    public var remainingSeconds: Double {
        let now = Deadline.nowNanoseconds()
        return now >= uptimeNanoseconds ? 0 : Double(uptimeNanoseconds - now) / 1e9
    }

    public var hasPassed: Bool { remainingSeconds <= 0 }

    static func nowNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// Seconds on the monotonic clock, for recording when something happened.
public func monotonicSeconds() -> Double {
    Double(Deadline.nowNanoseconds()) / 1e9
}

/// Sleeps the calling thread.
public func sleepSeconds(_ seconds: Double) {
    guard seconds > 0 else { return }
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
    var remaining = timespec()
    while nanosleep(&request, &remaining) == -1 && errno == EINTR {
        request = remaining
    }
}

/// Polls `condition` every 10 ms until it is true or `timeout` passes. Returns the last result.
/// The caller's place is what the test's watchdog reports if the test hangs.
@discardableResult
public func waitUntil(timeout: Double, file: StaticString = #fileID, line: UInt = #line, _ condition: () -> Bool) -> Bool {
    Watchdog.note("a condition at \(file):\(line) (waitUntil, timeout \(timeout) s)")
    let deadline = Deadline(secondsFromNow: timeout)
    while true {
        if condition() { return true }
        if deadline.hasPassed { return false }
        sleepSeconds(0.01)
    }
}

/// `count` bytes from /dev/urandom.
public func randomBytes(count: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
    precondition(fd >= 0, "cannot open /dev/urandom")
    defer { close(fd) }
    var filled = 0
    bytes.withUnsafeMutableBytes { buf in
        while filled < count {
            let n = read(fd, buf.baseAddress! + filled, count - filled)
            if n < 0 && errno == EINTR { continue }
            precondition(n > 0, "read /dev/urandom failed")
            filled += n
        }
    }
    return bytes
}
