// `balancerd reload SOCKET`: the client half of the Runtime API's `reload`, for systemd's
// ExecReload (which must wait for the outcome, and fail when the new process did). It is
// `echo reload | socat SOCKET -` without needing socat.
import Balancer
import Glibc

enum ReloadCommand {
    /// Sends `reload`, prints what came back after the `--` line, and returns the exit
    /// status: 0 for `Success=1`, 1 otherwise.
    static func run(socket: String) -> Int32 {
        let fd: CInt
        do {
            // Longer than the running process waits for its successor (Successor.timeout).
            fd = try UnixSocket.connect(path: socket, timeout: .seconds(100))
        } catch {
            ControlLog.line("balancerd: reload: cannot connect to \(socket): \(error)")
            return 1
        }
        defer { Posix.close(fd) }
        let request = Array("reload\n".utf8)
        guard request.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == request.count else {
            ControlLog.line("balancerd: reload: cannot write to \(socket): \(Errno(rawValue: errno))")
            return 1
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 { answer += buffer[..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 {
                ControlLog.line("balancerd: reload: no answer from \(socket): \(Errno(rawValue: errno))")
                return 1
            }
            break
        }
        let text = String(decoding: answer, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let status = lines.first.map(String.init) ?? ""
        if let separator = lines.firstIndex(of: "--") { lines.removeSubrange(...separator) }
        let message = lines.joined(separator: "\n").trimmingTrailingNewlines
        if status == "Success=1" {
            if !message.isEmpty { print(message) }
            return 0
        }
        ControlLog.line(message.isEmpty ? "balancerd: reload: unexpected answer from \(socket): \(text)" : message)
        return 1
    }
}

private extension String {
    var trimmingTrailingNewlines: String {
        var text = self
        while text.hasSuffix("\n") { text.removeLast() }
        return text
    }
}
