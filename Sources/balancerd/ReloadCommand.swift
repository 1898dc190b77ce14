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
        var answer: [UInt8] = []
        do {
            try UnixSocket.send(fd, bytes: Array("reload\n".utf8))
            // The server closes the connection after its answer.
            while case let part = try UnixSocket.receive(fd, count: 4096).bytes, !part.isEmpty {
                answer += part
            }
        } catch {
            ControlLog.line("balancerd: reload: no answer from \(socket): \(error)")
            return 1
        }
        let text = String(decoding: answer, as: UTF8.self)
        var lines = text.split(separator: "\n")
        let status = lines.first.map(String.init) ?? ""
        if let separator = lines.firstIndex(of: "--") { lines.removeSubrange(...separator) }
        let message = lines.joined(separator: "\n")
        if status == "Success=1" {
            if !message.isEmpty { print(message) }
            return 0
        }
        ControlLog.line(message.isEmpty ? "balancerd: reload: unexpected answer from \(socket): \(text)" : message)
        return 1
    }
}
