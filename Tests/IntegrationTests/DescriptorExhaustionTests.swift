// balancerd out of file descriptors: started under `ulimit -n 64` and offered more
// connections than fit. It must not spin on EMFILE (haproxy pauses its listeners; so does
// Listener.swift), it must stay cheap while full (CPU time read from /proc: a resource
// count, asserted generously, not a timing), and it must accept again as soon as
// descriptors free up: the clients waiting in the kernel's queue are served.

import Foundation
import Glibc
import TestSupport
import XCTest

/// utime + stime of `pid`, in seconds (/proc/PID/stat fields 14 and 15, in clock ticks).
func cpuSeconds(pid: Int32) throws -> Double {
    let text = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    // The command name (field 2) may hold spaces; the fields after it start past ") ".
    guard let close = text.lastIndex(of: ")") else { throw TestSupportError("cannot parse /proc/\(pid)/stat: \(text)") }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // fields[0] is field 3 (state), so utime (14) and stime (15) are fields[11] and [12].
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else {
        throw TestSupportError("cannot parse /proc/\(pid)/stat: \(text)")
    }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Descriptors `pid` has open now.
func openDescriptorCount(pid: Int32) -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
}

final class DescriptorExhaustionTests: XCTestCase {
    /// Two limits, one odd and one even: each held client costs two descriptors, so with
    /// one of them the last free descriptor goes to an accept and none is left for the
    /// server socket. Before the spare descriptor (SpareDescriptor.swift) that client was
    /// closed with SC, and so was every queued one after it, in turn.
    func testOutOfDescriptorsWithAnEvenLimit() throws { try checkOutOfDescriptors(limit: 64) }
    func testOutOfDescriptorsWithAnOddLimit() throws { try checkOutOfDescriptors(limit: 65) }

    func checkOutOfDescriptors(limit: Int) throws {
        let servers = try startStampServers(["s1", "s2"], holdOpen: true)
        let config = try TempConfigFile(listenConfig(servers: servers))
        addTeardownBlock { config.directory.remove() }
        // The shell sets the limit (soft and hard) and becomes balancerd: the pid is balancerd's.
        let balancer = supervise(try BalancerdProcess(
            arguments: ["-c", "ulimit -n \(limit) && exec \"$0\" \"$@\"", try BalancerdProcess.binaryPath(),
                        "--config", config.path, "--threads", "1"],
            binary: "/bin/sh"))
        let port = try balancer.port()
        // One client served and gone first: what balancerd holds idle after that (the
        // loop's spare descriptor included) is the baseline.
        let first = try TCPClient(port: port)
        XCTAssertEqual(try first.readLine(timeout: 3).map { ["s1", "s2"].contains($0) }, true, tail(balancer))
        first.close()
        var idle = 0
        waitUntil(timeout: 2) {
            let (before, after) = (openDescriptorCount(pid: balancer.pid), (sleepSeconds(0.1), openDescriptorCount(pid: balancer.pid)).1)
            idle = after
            return before == after
        }
        print("balancerd under ulimit -n \(limit): \(idle) descriptors open when idle")

        // More clients than fit: each held connection costs balancerd two descriptors.
        let offered = limit
        var clients: [TCPClient] = []
        addTeardownBlock { clients.forEach { $0.close() } }
        for _ in 0..<offered { clients.append(try TCPClient(port: port)) }
        // Full once it says so; by then every client it took has its name.
        XCTAssertNotNil(balancer.waitForLine(containing: "accept paused", timeout: 5), "no 'accept paused' line\n\(tail(balancer))")
        var served: [Int] = []
        var waiting: [Int] = []
        var failed: [String] = []
        for (i, client) in clients.enumerated() {
            switch client.read(max: 64, timeout: 0.05) {
            case .data(let bytes):
                let name = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                if ["s1", "s2"].contains(name) { served.append(i) } else { failed.append("client \(i): \(name)") }
            case .timeout: waiting.append(i)
            case .eof: failed.append("client \(i): closed without a name")
            case .error(let e): failed.append("client \(i): \(String(cString: strerror(e)))")
            }
        }
        print("\(offered) clients: \(served.count) served, \(waiting.count) waiting, \(failed.count) failed; balancerd holds \(openDescriptorCount(pid: balancer.pid)) descriptors")
        XCTAssertGreaterThan(served.count, 5, "too few served to say anything\n\(tail(balancer))")
        XCTAssertFalse(waiting.isEmpty, "every client was served: the limit did not bite\n\(tail(balancer))")
        XCTAssertEqual(failed, [], "clients dropped instead of waiting in the queue\n\(tail(balancer))")

        // Full: it waits, it does not spin.
        let cpuBefore = try cpuSeconds(pid: balancer.pid)
        let linesBefore = balancer.lineCount
        sleepSeconds(3)
        let cpu = try cpuSeconds(pid: balancer.pid) - cpuBefore
        print("CPU while full for 3 s: \(cpu) s")
        XCTAssertLessThan(cpu, 0.3, "balancerd burnt CPU while out of descriptors\n\(tail(balancer))")
        let pausedLines = balancer.lines[linesBefore...].filter { $0.contains("accept paused") }.count
        XCTAssertLessThanOrEqual(pausedLines, 4, "the shortage is logged once a second at most")

        // Free ten: ten of the waiting clients are served, from the kernel's queue.
        let freed = served.prefix(10)
        for i in freed { clients[i].close() }
        var nowServed: [Int] = []
        for i in waiting {
            if case .data(let bytes) = clients[i].read(max: 64, timeout: nowServed.count < freed.count ? 5 : 0.05),
               ["s1", "s2"].contains(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) {
                nowServed.append(i)
            }
        }
        print("after closing \(freed.count) served clients: \(nowServed.count) of the \(waiting.count) waiting were served")
        XCTAssertGreaterThanOrEqual(nowServed.count, freed.count - 1, "waiting clients not served once descriptors were free\n\(tail(balancer))")

        // Everything closed: back to where it started, and serving new clients.
        clients.forEach { $0.close() }
        XCTAssertTrue(waitUntil(timeout: 5) { openDescriptorCount(pid: balancer.pid) <= idle }, "descriptors not given back: \(openDescriptorCount(pid: balancer.pid)) open, \(idle) when idle")
        let client = try TCPClient(port: port)
        defer { client.close() }
        XCTAssertEqual(try client.readLine(timeout: 3).map { ["s1", "s2"].contains($0) }, true, tail(balancer))
    }
}
