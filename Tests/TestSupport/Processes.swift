// Child processes for tests: the real balancerd, nginx, one-shot CLI runs. Spawned with
// posix_spawn (no Foundation.Process, which reaps children on a thread of its own), with
// default signal dispositions and an empty signal mask, so the child sees SIGPIPE, SIGHUP
// and SIGTERM exactly as it would from a shell. Only the pid we spawned is ever signalled.

import Foundation
import Glibc

/// Output lines of a child, filled by reader threads and read by the test thread.
final class LineBuffer: @unchecked Sendable {
    enum Stream: Sendable { case stdout, stderr }

    private let condition = NSCondition()
    private var entries: [(stream: Stream, text: String)] = []

    func append(_ text: String, from stream: Stream) {
        condition.lock()
        entries.append((stream, text))
        condition.broadcast()
        condition.unlock()
    }

    func lines(_ stream: Stream? = nil) -> [String] {
        condition.lock()
        defer { condition.unlock() }
        return entries.filter { stream == nil || $0.stream == stream }.map(\.text)
    }

    var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return entries.count
    }

    /// The first line at index >= `start` that satisfies `predicate`, waiting up to `timeout`.
    func wait(from start: Int, timeout: Double, stopEarly: () -> Bool, _ predicate: (String) -> Bool) -> (index: Int, line: String)? {
        let deadline = Deadline(secondsFromNow: timeout)
        var next = start
        condition.lock()
        defer { condition.unlock() }
        while true {
            while next < entries.count {
                if predicate(entries[next].text) { return (next, entries[next].text) }
                next += 1
            }
            if deadline.hasPassed || stopEarly() { return nil }
            // Short waits so `stopEarly` (has the child exited?) is checked often.
            _ = condition.wait(until: Date(timeIntervalSinceNow: min(deadline.remainingSeconds, 0.05)))
        }
    }
}

/// A pipe whose read end is drained into a `LineBuffer` by a thread of its own.
private func startReader(fd: Int32, stream: LineBuffer.Stream, into buffer: LineBuffer) -> JoinableThread {
    JoinableThread(name: "ts-output") {
        var partial: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            partial += chunk[0..<n]
            while let nl = partial.firstIndex(of: UInt8(ascii: "\n")) {
                buffer.append(String(decoding: partial[..<nl], as: UTF8.self), from: stream)
                partial.removeSubrange(...nl)
            }
        }
        if !partial.isEmpty { buffer.append(String(decoding: partial, as: UTF8.self), from: stream) }
        close(fd)
    }
}

private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

private let addCloseFromAction: AddCloseFrom? = {
    guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(symbol, to: AddCloseFrom.self)
}()

/// A spawned child with stdout and stderr captured line by line.
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    let executable: String
    let output = LineBuffer()
    private let readers: [JoinableThread]
    // nil while running; the raw wait status once reaped.
    private let status = Protected<Int32?>(nil)

    /// `environment` adds to (or overrides) this process's environment for the child only,
    /// e.g. `LD_PRELOAD`; the test process's own environment is never changed.
    init(executable: String, arguments: [String], environment: [String: String] = [:]) throws {
        self.executable = executable
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        // Glibc does not export pipe2 to Swift: pipe + FD_CLOEXEC. The window in which
        // another spawn could inherit them is closed by closefrom(3) in the child below.
        guard pipe(&outPipe) == 0 else { throw SocketError("pipe") }
        guard pipe(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw SocketError("pipe")
        }
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        // The child gets 0, 1, 2 and nothing else: no test server listener or connection
        // leaks into it (a leaked listener would keep a "stopped" backend reachable).
        // Glibc (2.34+) has posix_spawn_file_actions_addclosefrom_np but the Swift module
        // does not export it, so it is looked up at run time.
        if let addCloseFrom = addCloseFromAction {
            _ = addCloseFrom(&actions, 3)
        }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attr, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGPIPE, SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        // nil: inherit `environ` as it is. Otherwise a copy with the additions.
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.isEmpty ? nil
            : ProcessInfo.processInfo.environment.merging(environment) { _, added in added }
                .map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp?.forEach { free($0) } }
        var childPID: pid_t = 0
        let rc = envp.map { posix_spawn(&childPID, executable, &actions, &attr, argv, $0) }
            ?? posix_spawn(&childPID, executable, &actions, &attr, argv, environ)
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0]); close(errPipe[0])
            throw TestSupportError("cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        pid = childPID
        readers = [
            startReader(fd: outPipe[0], stream: .stdout, into: output),
            startReader(fd: errPipe[0], stream: .stderr, into: output),
        ]
    }

    /// Reaps the child if it has exited. Returns the raw wait status.
    func poll() -> Int32? {
        status.withLock { status in
            if status != nil { return status }
            var raw: Int32 = 0
            let rc = waitpid(pid, &raw, WNOHANG)
            if rc == pid { status = raw }
            return status
        }
    }

    var hasExited: Bool { poll() != nil }

    /// Waits for exit; returns the exit code (128+N if killed by signal N), nil on timeout.
    /// Once it returns non-nil, all of the child's output is in `output`.
    func waitForExit(timeout: Double) -> Int32? {
        guard waitUntil(timeout: timeout, { poll() != nil }), let raw = poll() else { return nil }
        // The pipes reach EOF when the child (and anything it spawned) is gone.
        readers.forEach { $0.join() }
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }

    /// Sends `sig` to this child only; does nothing once it has been reaped.
    func signal(_ sig: Int32) {
        status.withLock { status in
            // Checked under the lock that `poll` reaps under, so the pid cannot be reused.
            if status == nil { _ = kill(pid, sig) }
        }
    }

    /// `sig`, then SIGKILL if it has not exited after `timeout`. Returns the exit code.
    @discardableResult
    func stop(signal sig: Int32 = SIGTERM, timeout: Double = 5) -> Int32 {
        if let code = (hasExited ? waitForExit(timeout: 0) : nil) { return code }
        signal(sig)
        if let code = waitForExit(timeout: timeout) { return code }
        signal(SIGKILL)
        return waitForExit(timeout: 30) ?? -1
    }

    deinit {
        if poll() == nil {
            signal(SIGKILL)
            _ = waitForExit(timeout: 10)
        }
    }
}

extension ChildProcess {
    /// Waits until `port` on 127.0.0.1 accepts a connection while this child runs: true
    /// when it does, false when the child exited or `timeout` seconds went by.
    func listens(on port: UInt16, timeout: Double) -> Bool {
        let up = waitUntil(timeout: timeout) {
            if self.hasExited { return true }
            guard let fd = try? connectTCP(port: port, timeout: 1) else { return false }
            close(fd)
            return true
        }
        return up && !hasExited
    }

    /// The port a test server announces with one line, `prefix` then the port, once it
    /// listens. A server that exits or stays silent for `timeout` seconds is killed, and
    /// the error quotes what it printed.
    func announcedPort(after prefix: String, server: String, timeout: Double = 10) throws -> UInt16 {
        guard let found = output.wait(from: 0, timeout: timeout, stopEarly: { self.hasExited }, { $0.hasPrefix(prefix) }),
              let port = UInt16(found.line.dropFirst(prefix.count)) else {
            stop(signal: SIGKILL, timeout: 2)
            throw TestSupportError("\(server) did not start:\n\(output.lines().joined(separator: "\n"))")
        }
        return port
    }
}

/// What a one-shot run of a program produced.
public struct ProcessResult: Sendable {
    public let exitCode: Int32
    public let stdout: [String]
    public let stderr: [String]

    public var stdoutText: String { stdout.joined(separator: "\n") }
    public var stderrText: String { stderr.joined(separator: "\n") }
    /// Both streams; each in order, stdout first.
    public var allText: String { (stdout + stderr).joined(separator: "\n") }
}

/// Runs `executable arguments` to completion (killed after `timeout`, which throws).
public func runProcess(_ executable: String, _ arguments: [String], timeout: Double = 10) throws -> ProcessResult {
    let child = try ChildProcess(executable: executable, arguments: arguments)
    guard let code = child.waitForExit(timeout: timeout) else {
        child.stop(signal: SIGKILL)
        throw TestSupportError("\(executable) \(arguments.joined(separator: " ")) did not exit within \(timeout)s")
    }
    return ProcessResult(exitCode: code, stdout: child.output.lines(.stdout), stderr: child.output.lines(.stderr))
}

/// The directory of the running executable (the .xctest bundle binary under XCTest on Linux).
func executableDirectory() -> String? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return nil }
    let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let slash = path.lastIndex(of: "/") else { return nil }
    return String(path[..<slash])
}

/// The address of a frontend as printed in balancerd's startup line.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let port: UInt16

    public var description: String { "\(host):\(port)" }
}

/// The real balancerd binary, running. Its stdout and stderr are captured continuously.
///
/// Assumes the startup contract: one stderr line per frontend bind,
/// `balancerd: listening frontend=NAME addr=HOST:PORT mode=... threads=N backend=NAME servers=...`.
public final class BalancerdProcess: @unchecked Sendable {
    private let child: ChildProcess
    public let arguments: [String]
    public var pid: Int32 { child.pid }

    /// `$BALANCERD_BIN` if set, else `balancerd` next to the running test executable
    /// (`.build/<config>/balancerdPackageTests.xctest` → `.build/<config>/balancerd`).
    public static func binaryPath() throws -> String {
        if let path = ProcessInfo.processInfo.environment["BALANCERD_BIN"], !path.isEmpty {
            guard access(path, X_OK) == 0 else {
                throw TestSupportError("BALANCERD_BIN=\(path) is not an executable file")
            }
            return path
        }
        guard let dir = executableDirectory() else {
            throw TestSupportError("cannot read /proc/self/exe to find the balancerd binary; set BALANCERD_BIN")
        }
        let path = dir + "/balancerd"
        guard access(path, X_OK) == 0 else {
            throw TestSupportError("balancerd binary not found at \(path): build it first (swift build) or set BALANCERD_BIN")
        }
        return path
    }

    /// Starts `balancerd arguments`. Does not wait for anything; see `listenAddress`.
    /// `environment` is added to the inherited one (e.g. `LD_PRELOAD` for a malloc counter).
    public init(arguments: [String], binary: String? = nil, environment: [String: String] = [:]) throws {
        self.arguments = arguments
        child = try ChildProcess(executable: try binary ?? Self.binaryPath(), arguments: arguments, environment: environment)
    }

    /// Runs balancerd to completion (for `--help`, `check`, bad flags).
    public static func run(_ arguments: [String], timeout: Double = 10) throws -> ProcessResult {
        try runProcess(try binaryPath(), arguments, timeout: timeout)
    }

    /// Snapshot of every output line so far (stdout and stderr, in arrival order).
    public var lines: [String] { child.output.lines() }
    public var stderrLines: [String] { child.output.lines(.stderr) }
    public var stdoutLines: [String] { child.output.lines(.stdout) }
    /// How many lines have arrived; pass it as `after` to wait only for newer lines.
    public var lineCount: Int { child.output.count }

    /// The first line (from index `after` on) containing `substring`, waiting up to `timeout`.
    /// Returns nil on timeout or if the process exits without printing it.
    public func waitForLine(containing substring: String, after: Int = 0, timeout: Double = 5) -> String? {
        Watchdog.note("a balancerd line containing '\(substring)'")
        return waitForIndexedLine(after: after, timeout: timeout) { $0.contains(substring) }?.line
    }

    /// Same as `waitForLine(containing:)`; kept for callers that think of it as a match.
    public func waitForLine(matching substring: String, after: Int = 0, timeout: Double = 5) -> String? {
        waitForLine(containing: substring, after: after, timeout: timeout)
    }

    /// The first line (from index `after` on) satisfying `predicate`, waiting up to `timeout`.
    public func waitForLine(after: Int = 0, timeout: Double = 5, where predicate: (String) -> Bool) -> String? {
        Watchdog.note("a line from balancerd pid \(pid) (after line \(after)) matching a predicate")
        return waitForIndexedLine(after: after, timeout: timeout, where: predicate)?.line
    }

    /// Like `waitForLine`, also returning the line's index (pass index+1 as `after` next time).
    public func waitForIndexedLine(after: Int = 0, timeout: Double = 5, where predicate: (String) -> Bool) -> (index: Int, line: String)? {
        let found = child.output.wait(from: after, timeout: timeout, stopEarly: { child.hasExited }, predicate)
        if found == nil && child.hasExited {
            // Exited: the readers may still be delivering the last lines.
            _ = child.waitForExit(timeout: 2)
            return child.output.wait(from: after, timeout: 0, stopEarly: { true }, predicate)
        }
        return found
    }

    /// The address of frontend `frontend` from its startup line. Throws (with everything the
    /// process printed) if the line does not come within `timeout` or the process exits.
    public func listenAddress(frontend: String = "main", timeout: Double = 10) throws -> ListenAddress {
        let prefix = "balancerd: listening frontend=\(frontend) "
        guard let line = waitForLine(containing: prefix, timeout: timeout) else {
            let state = child.hasExited ? "exited with \(child.waitForExit(timeout: 1).map(String.init) ?? "?")" : "still running"
            throw TestSupportError("""
                balancerd printed no '\(prefix)…' line within \(timeout)s (\(state)). Output:
                \(lines.joined(separator: "\n"))
                """)
        }
        guard let field = line.split(separator: " ").first(where: { $0.hasPrefix("addr=") }) else {
            throw TestSupportError("no addr= field in startup line: \(line)")
        }
        let value = field.dropFirst("addr=".count)
        guard let colon = value.lastIndex(of: ":"), let port = UInt16(value[value.index(after: colon)...]) else {
            throw TestSupportError("cannot parse addr= in startup line: \(line)")
        }
        var host = String(value[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return ListenAddress(host: host, port: port)
    }

    /// The port of frontend `frontend` (see `listenAddress`).
    public func port(frontend: String = "main", timeout: Double = 10) throws -> UInt16 {
        try listenAddress(frontend: frontend, timeout: timeout).port
    }

    /// Sends `sig` (SIGHUP, SIGTERM, …) to this process only.
    public func signal(_ sig: Int32) {
        child.signal(sig)
    }

    public var isRunning: Bool { !child.hasExited }

    /// Waits for exit: the exit code (128+N if killed by signal N), or nil on timeout.
    public func waitForExit(timeout: Double) -> Int32? {
        child.waitForExit(timeout: timeout)
    }

    /// SIGTERM, then SIGKILL after `timeout`. Returns the exit code. Safe to call repeatedly.
    @discardableResult
    public func stop(timeout: Double = 5) -> Int32 {
        child.stop(signal: SIGTERM, timeout: timeout)
    }

    /// SIGKILL, waiting for the exit.
    public func kill() {
        child.stop(signal: SIGKILL, timeout: 10)
    }

    /// All output so far, for failure messages.
    public var outputText: String { lines.joined(separator: "\n") }
}
