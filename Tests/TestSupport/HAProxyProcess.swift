// Debian's haproxy as the reference the parity tests compare balancerd with. Run in the
// foreground (`-db`, no master process), so the pid we spawn is the one serving and the only
// one we ever signal.

import Glibc

public final class HAProxyProcess: @unchecked Sendable {
    /// The port of the (first) bind line: the caller chose it, haproxy has no port 0 report.
    public let port: UInt16
    public let configPath: String
    private let child: ChildProcess

    /// /usr/sbin/haproxy, else `haproxy` on PATH. Throws (so the test fails, never skips)
    /// if it is not installed.
    public static func executablePath() throws -> String {
        var candidates = ["/usr/sbin/haproxy"]
        if let path = getenv("PATH").map({ String(cString: $0) }) {
            candidates += path.split(separator: ":").map { "\($0)/haproxy" }
        }
        guard let found = candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw TestSupportError("haproxy not installed; run .ci/run")
        }
        return found
    }

    /// `haproxy -c -f path`: exit code 0 and "Configuration file is valid" when accepted.
    public static func check(configPath: String, timeout: Double = 10) throws -> ProcessResult {
        try runProcess(try executablePath(), ["-c", "-f", configPath], timeout: timeout)
    }

    /// `haproxy -f configPath -db`; waits until `port` accepts connections. Throws with
    /// everything haproxy printed if it exits or does not listen within `timeout`.
    public init(configPath: String, port: UInt16, timeout: Double = 10) throws {
        self.configPath = configPath
        self.port = port
        child = try ChildProcess(executable: try Self.executablePath(), arguments: ["-f", configPath, "-db"])
        if !child.listens(on: port, timeout: timeout) {
            let code = child.stop(signal: SIGKILL, timeout: 1)
            throw TestSupportError("""
                haproxy -f \(configPath) -db did not listen on 127.0.0.1:\(port) (exit \(code)). Output:
                \(child.output.lines().joined(separator: "\n"))
                """)
        }
    }

    public var pid: Int32 { child.pid }
    public var outputText: String { child.output.lines().joined(separator: "\n") }

    /// SIGTERM (haproxy's hard stop), then SIGKILL after `timeout`. Safe to call repeatedly.
    @discardableResult
    public func stop(timeout: Double = 5) -> Int32 {
        child.stop(signal: SIGTERM, timeout: timeout)
    }

    deinit { child.stop(signal: SIGKILL, timeout: 5) }
}
