// systemd's notification protocol (sd_notify(3)), for `Type=notify` units: one datagram
// of `KEY=VALUE` lines to the socket named by $NOTIFY_SOCKET. Without that variable (not
// run by systemd) every call does nothing.
//
// What balancerd says, and why:
// - `READY=1` once it listens, so `systemctl start` returns when clients can connect;
// - `RELOADING=1` … `READY=1` around a SIGHUP re-read;
// - `MAINPID=<pid>` when a new process took the listeners (a `reload` or `-x`): systemd
//   then follows the new process, and the old one's exit is no longer the service's end.
//   The old process says it, while it is still the main one, so the unit's default
//   `NotifyAccess=main` accepts it;
// - `STOPPING=1` when it stops, unless it handed over (it is no longer the main process).
import Balancer
import Glibc

enum SystemdNotify {
    static let socket: String? = getenv("NOTIFY_SOCKET").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }

    static func send(_ lines: String...) {
        guard let socket else { return }
        do {
            try UnixSocket.sendDatagram(Array(lines.joined(separator: "\n").utf8), to: socket)
        } catch {
            ControlLog.line("balancerd: warning: cannot notify systemd at \(socket): \(error)")
        }
    }
}
