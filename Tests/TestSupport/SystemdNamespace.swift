// A real systemd (Debian's, version 252), run as the init of a PID and mount namespace of
// the test's own, so that a unit file runs exactly as it would on a server: Type=notify,
// ExecReload, MAINPID, RuntimeDirectory. It shares the machine's network (the test's
// clients reach its services on 127.0.0.1) and nothing else it could change:
//
// - /run is a new tmpfs: systemd's sockets and the units the test writes live there;
// - the machine's unit and generator directories are covered by empty tmpfs mounts,
//   so nothing of the machine's starts: no sysinit.target with its tmpfiles (Debian's
//   would empty /tmp), no fstab generator, no nginx or haproxy;
// - it gets a cgroup v2 directory of its own (and a cgroup namespace rooted there), as
//   on a Debian 12 host, which uses the unified hierarchy: on the legacy hierarchy in a
//   container systemd cannot see a cgroup go empty, and stops differently;
// - `container=` tells systemd it is in a container, which skips what it does to a whole
//   machine at boot.
//
// The namespaces end with systemd: `stop` kills it (by pid, the one this helper started),
// the kernel then kills every process in its PID namespace, and the cgroup directories
// go.
import Foundation
import Glibc

public final class SystemdNamespace: @unchecked Sendable {
    private let child: ChildProcess
    /// systemd's pid, as this (the test's) PID namespace sees it.
    public let pid: Int32
    /// The namespace's /run, seen from outside through systemd's root.
    public var runDirectory: String { "/proc/\(pid)/root/run" }

    public static let systemdPath = "/usr/lib/systemd/systemd"

    /// The targets every service's default dependencies name, empty here.
    private static let emptyTargets = ["sysinit", "basic", "shutdown", "network", "network-online",
                                       "multi-user", "balancerd-test"]

    /// The cgroup v2 directory the namespace lives in (its cgroup namespace's root).
    public let cgroup: String

    public init(timeout: Double = 30) throws {
        let hierarchy = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].first {
            FileManager.default.fileExists(atPath: "\($0)/cgroup.controllers")
        }
        guard let hierarchy else { throw TestSupportError("no cgroup v2 hierarchy at /sys/fs/cgroup(/unified)") }
        var inner = """
            set -e
            umount -l /sys/fs/cgroup
            mount -t cgroup2 cgroup2 /sys/fs/cgroup
            mount -t tmpfs tmpfs /run
            mount -t tmpfs tmpfs /etc/systemd/system
            mount -t tmpfs tmpfs /usr/lib/systemd/system
            mount -t tmpfs tmpfs /usr/lib/systemd/system-generators
            mkdir -p /run/systemd/system

            """
        for target in Self.emptyTargets {
            inner += "printf '[Unit]\\nDescription=%s (empty, test namespace)\\n' \(target) > /run/systemd/system/\(target).target\n"
        }
        inner += "printf '[Unit]\\nDescription=system slice (test namespace)\\n' > /run/systemd/system/system.slice\n"
        inner += "export container=balancerd-test\n"
        inner += "exec \(Self.systemdPath) --system --unit=balancerd-test.target --log-target=console --log-level=notice\n"
        // The shell moves itself into a new cgroup, then becomes unshare (same pid).
        let outer = """
            set -e
            cg=\(hierarchy)/balancerd-test-$$
            mkdir "$cg"
            echo $$ > "$cg/cgroup.procs"
            exec /usr/bin/unshare --cgroup --pid --fork --mount --uts --mount-proc /bin/sh -c "$1"
            """
        let child = try ChildProcess(executable: "/bin/sh", arguments: ["-c", outer, "sh", inner])
        cgroup = "\(hierarchy)/balancerd-test-\(child.pid)"
        self.child = child
        // unshare forks systemd as its only child. Until the shell has become unshare, its
        // children are the shell's own (mkdir), which come and go: they are not it.
        var found: Int32?
        _ = waitUntil(timeout: 10) {
            if child.hasExited { return true }
            let command = (try? String(contentsOfFile: "/proc/\(child.pid)/comm", encoding: .utf8)) ?? ""
            guard command == "unshare\n" else { return false }
            let children = (try? String(contentsOfFile: "/proc/\(child.pid)/task/\(child.pid)/children", encoding: .utf8)) ?? ""
            found = children.split(separator: " ").first.flatMap { Int32($0) }
            return found != nil
        }
        guard let found else {
            child.stop(signal: SIGKILL, timeout: 5)
            throw TestSupportError("systemd did not start in a namespace:\n\(child.output.lines().joined(separator: "\n"))")
        }
        pid = found
        var state = ""
        let up = waitUntil(timeout: timeout) {
            state = (try? self.systemctl(["is-system-running"]))?.allText ?? ""
            return state == "running" || state == "degraded"
        }
        guard up else {
            let output = child.output.lines().joined(separator: "\n")
            stop()
            throw TestSupportError("systemd did not come up (is-system-running: '\(state)'):\n\(output)")
        }
    }

    /// A command inside the namespaces (systemd's mounts and PIDs).
    public func run(_ executable: String, _ arguments: [String], timeout: Double = 60) throws -> ProcessResult {
        try runProcess("/usr/bin/nsenter", ["-t", String(pid), "-m", "-p", "--", executable] + arguments, timeout: timeout)
    }

    public func systemctl(_ arguments: [String], timeout: Double = 60) throws -> ProcessResult {
        try run("/usr/bin/systemctl", ["--no-pager"] + arguments, timeout: timeout)
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    public func property(_ name: String, of unit: String) throws -> String {
        try systemctl(["show", "-p", name, "--value", unit]).stdoutText
    }

    /// Writes a unit file (or a drop-in, with a "NAME.service.d/FILE.conf" name) into the
    /// namespace's /run/systemd/system and has systemd read it.
    public func install(_ text: String, as name: String) throws {
        let path = "\(runDirectory)/systemd/system/\(name)"
        let directory = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let reload = try systemctl(["daemon-reload"])
        guard reload.exitCode == 0 else { throw TestSupportError("daemon-reload: \(reload.allText)") }
    }

    /// Ends systemd, and with it every process of its namespace.
    public func stop() {
        // While unshare runs, it has not reaped systemd, so the pid is still systemd's.
        if !child.hasExited { _ = kill(pid, SIGKILL) }
        child.stop(signal: SIGKILL, timeout: 10)
        // Every process of the cgroup was in the PID namespace, so none should be left;
        // cgroup.kill makes sure before the directories go, deepest first.
        guard FileManager.default.fileExists(atPath: cgroup) else { return }
        try? "1".write(toFile: "\(cgroup)/cgroup.kill", atomically: false, encoding: .utf8)
        _ = waitUntil(timeout: 10) {
            let below = (FileManager.default.subpaths(atPath: self.cgroup) ?? [])
                .map { "\(self.cgroup)/\($0)" }
                .filter { path in
                    var isDirectory: ObjCBool = false
                    return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
                }
                .sorted { $0.count > $1.count }
            for directory in below + [self.cgroup] { _ = rmdir(directory) }
            return !FileManager.default.fileExists(atPath: self.cgroup)
        }
    }

    deinit { stop() }
}
