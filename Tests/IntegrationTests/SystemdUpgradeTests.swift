// The README's systemd unit, as written there, run by a real systemd (SystemdNamespace):
// `systemctl start` returns once balancerd listens (Type=notify, READY=1), and `systemctl
// reload` replaces the process under load without a failed request, over plain HTTP and
// TLS: a binary replaced on disk, then a file with a new bind, then a broken file that
// the reload refuses. systemd follows each new process (MAINPID) and the unit ends clean.
//
// Only two paths of the unit change: the binary and the file are the test's.
import Foundation
import Glibc
import Synchronization
import TestSupport
import XCTest

final class SystemdUpgradeTests: XCTestCase {
    private func config(port: UInt16, tlsPort: UInt16, pem: String, servers: [HTTPTestServer], extraPort: UInt16? = nil) -> String {
        var text = """
            global
                stats socket /run/balancerd/admin.sock mode 600 level admin expose-fd listeners

            defaults
                mode http
                timeout connect 1s
                timeout client 30s
                timeout server 30s
                timeout http-keep-alive 30s

            listen main
                bind 127.0.0.1:\(port)
                bind 127.0.0.1:\(tlsPort) ssl crt \(pem) alpn http/1.1

            """
        if let extraPort { text += "    bind 127.0.0.1:\(extraPort)\n" }
        for server in servers { text += "    server \(server.name) \(server.address)\n" }
        return text
    }

    /// Fresh TLS connections from curl, five requests on each (kept alive, reconnecting
    /// after a `Connection: close`), until told to stop: every status that is not 200
    /// and every curl error is a failure.
    private final class TLSLoad: @unchecked Sendable {
        let done = Atomic<Bool>(false)
        let served = Atomic<Int>(0)
        let failures = Mutex<[String]>([])
        private var thread: JoinableThread?

        init(port: UInt16, name: String, trust: String) {
            let url = "https://\(name):\(port)/tls"
            thread = JoinableThread(name: "ts-tls-load") { [self] in
                var runs = 0
                while !done.load(ordering: .acquiring) && runs < 2_000 {
                    runs += 1
                    do {
                        let result = try runProcess("/usr/bin/curl", ["-sS", "--max-time", "10", "--cacert", trust,
                                                                      "--resolve", "\(name):\(port):127.0.0.1",
                                                                      "-w", "%{http_code}\\n"]
                                                    + Array(repeating: ["-o", "/dev/null", url], count: 5).flatMap { $0 }, timeout: 20)
                        let codes = result.stdout.filter { !$0.isEmpty }
                        served.add(codes.filter { $0 == "200" }.count, ordering: .relaxed)
                        if result.exitCode != 0 || codes != Array(repeating: "200", count: 5) {
                            failures.withLock { $0.append("curl exit \(result.exitCode), codes \(codes): \(result.stderrText)") }
                        }
                    } catch {
                        failures.withLock { $0.append("curl: \(error)") }
                    }
                }
            }
        }

        func stop() {
            done.store(true, ordering: .releasing)
            thread?.join()
        }
    }

    func testTheReadmeUnitReloadsUnderLoadWithoutAFailedRequest() throws {
        guard FileManager.default.isExecutableFile(atPath: SystemdNamespace.systemdPath) else {
            XCTFail("\(SystemdNamespace.systemdPath) is missing: .ci/run installs Debian's systemd")
            return
        }
        let directory = try TempDirectory(prefix: "balancerd-systemd")
        addTeardownBlock { directory.remove() }
        let servers = try startHTTPServers(["s1", "s2"])
        let (port, tlsPort, extraPort) = (try freePort(), try freePort(), try freePort())
        let certificates = try TLSCertificates()
        addTeardownBlock { certificates.directory.remove() }
        let certificate = try certificates.selfSigned("upgrade.test")

        // The "installed" binary and file, at the two paths the unit names.
        let installed = directory.file("balancerd")
        let built = try BalancerdProcess.binaryPath()
        try FileManager.default.copyItem(atPath: built, toPath: installed)
        let file = try directory.write(config(port: port, tlsPort: tlsPort, pem: certificate.pemPath, servers: servers), to: "balancerd.cfg")
        let log = directory.file("balancerd.log")
        let unit = try readmeCodeBlock("ini", under: "## Upgrades without a dropped connection")
            .replacingOccurrences(of: "/usr/local/bin/balancerd", with: installed)
            .replacingOccurrences(of: "/etc/balancerd/balancerd.cfg", with: file)
        XCTAssertTrue(unit.contains("Type=notify") && unit.contains("ExecReload="), unit)

        let systemd = try SystemdNamespace()
        addTeardownBlock { systemd.stop() }
        func logText() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        func state() -> String {
            let names = ["ActiveState", "SubState", "MainPID", "Result", "NRestarts"]
            return names.map { "\($0)=\((try? systemd.property($0, of: "balancerd")) ?? "?")" }.joined(separator: " ")
        }
        try systemd.install(unit, as: "balancerd.service")
        // No journald in the namespace: the service's output goes to a file.
        try systemd.install("[Service]\nStandardOutput=append:\(log)\nStandardError=inherit\n", as: "balancerd.service.d/output.conf")

        let start = try systemd.systemctl(["start", "balancerd"])
        XCTAssertEqual(start.exitCode, 0, "systemctl start: \(start.allText)\n\(logText())")
        // Type=notify: start returned after READY=1, so the port accepts already.
        XCTAssertEqual(try systemd.property("ActiveState", of: "balancerd"), "active", state())
        let probe = try HTTPClientConnection(port: port)
        try probe.send(getRequest("/probe", extra: "Connection: close\r\n"))
        XCTAssertEqual(try probe.readResponse().status, 200)
        probe.close()
        var mainPID = try systemd.property("MainPID", of: "balancerd")

        let load = RequestLoad(port: port, keepAlive: 3, fresh: 2)
        let tls = TLSLoad(port: tlsPort, name: "upgrade.test", trust: certificate.trustPath)
        var stopped = false
        defer { if !stopped { load.stop(); tls.stop() } }
        XCTAssertTrue(load.waitForMore(300), "the load did not get going\n\(state())\n\(logText())")

        func reload(_ what: String, expectSuccess: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws {
            let before = mainPID
            let served = tls.served.load(ordering: .relaxed)
            let result = try systemd.systemctl(["reload", "balancerd"], timeout: 120)
            mainPID = try systemd.property("MainPID", of: "balancerd")
            if expectSuccess {
                XCTAssertEqual(result.exitCode, 0, "\(what): systemctl reload: \(result.allText)\n\(state())\n\(logText())", file: file, line: line)
                XCTAssertNotEqual(mainPID, before, "\(what): systemd follows the new process\n\(state())", file: file, line: line)
            } else {
                XCTAssertNotEqual(result.exitCode, 0, "\(what): the reload must fail\n\(state())", file: file, line: line)
                XCTAssertEqual(mainPID, before, "\(what): the running process stays\n\(state())", file: file, line: line)
            }
            XCTAssertEqual(try systemd.property("ActiveState", of: "balancerd"), "active", "\(what)\n\(state())", file: file, line: line)
            XCTAssertTrue(load.waitForMore(300), "\(what): no requests after the reload\n\(state())\n\(logText())", file: file, line: line)
            XCTAssertTrue(waitUntil(timeout: 30) { tls.served.load(ordering: .relaxed) >= served + 20 },
                          "\(what): no TLS requests after the reload\n\(logText())", file: file, line: line)
        }

        // 1. A binary upgrade as a package manager does it: a new file renamed over the
        //    old path. The new main process runs the new file (its inode).
        try FileManager.default.copyItem(atPath: built, toPath: installed + ".new")
        XCTAssertEqual(rename(installed + ".new", installed), 0)
        let newInode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: installed)[.systemFileNumber] as? UInt64)
        try reload("binary upgrade")
        let exe = try systemd.run("/usr/bin/stat", ["-L", "-c", "%i", "/proc/\(mainPID)/exe"])
        XCTAssertEqual(exe.stdoutText, String(newInode), "the new process runs the new binary: \(exe.allText)")

        // 2. A new bind: applied by the next process.
        _ = try directory.write(config(port: port, tlsPort: tlsPort, pem: certificate.pemPath, servers: servers, extraPort: extraPort),
                                to: "balancerd.cfg")
        try reload("a new bind")
        let extra = try HTTPClientConnection(port: extraPort)
        try extra.send(getRequest("/extra", extra: "Connection: close\r\n"))
        XCTAssertEqual(try extra.readResponse().status, 200, "the new bind serves")
        extra.close()

        // 3. A broken file: ExecReload's check refuses it before anything is started.
        _ = try directory.write("frontend main\n    bind 127.0.0.1:\(port)\n    bogus-keyword on\n", to: "balancerd.cfg")
        try reload("a broken file", expectSuccess: false)

        load.stop()
        tls.stop()
        stopped = true
        let failures = load.failures.withLock { $0 } + tls.failures.withLock { $0 }
        XCTAssertEqual(failures, [], "\(failures.count) failed of \(load.served.load(ordering: .relaxed)) plain and \(tls.served.load(ordering: .relaxed)) TLS requests")

        // Each replaced process finished its connections and stopped.
        XCTAssertTrue(waitUntil(timeout: 40) { logText().components(separatedBy: "balancerd: stopped").count - 1 == 2 },
                      "two processes stop after handing over\n\(logText())")
        XCTAssertEqual(logText().components(separatedBy: "stopping on handover").count - 1, 2, logText())

        let stop = try systemd.systemctl(["stop", "balancerd"], timeout: 60)
        XCTAssertEqual(stop.exitCode, 0, stop.allText)
        let status = (try? systemd.systemctl(["status", "balancerd"]).allText) ?? ""
        XCTAssertEqual(try systemd.property("ActiveState", of: "balancerd"), "inactive", "\(state())\n\(status)\n\(logText())")
        XCTAssertEqual(try systemd.property("Result", of: "balancerd"), "success", state())
        XCTAssertEqual(try systemd.property("NRestarts", of: "balancerd"), "0", state())
    }
}
