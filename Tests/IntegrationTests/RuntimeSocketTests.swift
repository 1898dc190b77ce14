// The Runtime API socket of the real binary, driven by the tools haproxy users drive it
// with: Debian's socat (`echo "show stat" | socat stdio unix-connect:PATH`, as haproxy's
// documentation shows) and hatop in a tmux pane. Backends stamp their name, so each test
// asserts who answers after an operator's change.

import Foundation
import Glibc
import TestSupport
import XCTest

final class RuntimeSocketTests: XCTestCase {
    /// haproxy 2.6's `show stat` header, as Debian's haproxy prints it.
    static let haproxyHeader = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,"

    // MARK: helpers

    /// A fresh socket path in a directory removed when the test ends.
    private func socketPath() throws -> String {
        let directory = try TempDirectory(prefix: "balancerd-cli")
        addTeardownBlock { directory.remove() }
        return directory.file("admin.sock")
    }

    /// balancerd in HTTP mode in front of `servers` with the Runtime API on `socket`.
    private func startBalancer(servers: [String], socket: String, extra: [String] = []) throws -> (BalancerdProcess, UInt16) {
        let (balancer, port) = try startBalancer(["--listen", "127.0.0.1:0", "--mode", "http", "--quiet", "--stats-socket", socket]
            + servers.flatMap { ["--server", $0] } + extra)
        XCTAssertNotNil(balancer.waitForLine(containing: "balancerd: runtime API on unix socket \(socket) (level admin)", timeout: 10), tail(balancer))
        return (balancer, port)
    }

    /// `echo "COMMAND" | socat stdio unix-connect:PATH`: socat's output lines.
    private func socat(_ command: String, _ path: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        let result = try runProcess("/bin/sh", ["-c", "echo '\(command)' | socat stdio unix-connect:\(path)"], timeout: 10)
        XCTAssertEqual(result.exitCode, 0, result.allText, file: file, line: line)
        return result.stdout
    }

    /// The rows of `show stat` keyed "proxy/server", each a column-name → value map.
    private func showStat(_ path: String) throws -> (header: String, rows: [String: [String: String]], order: [String]) {
        let lines = try socat("show stat", path)
        let columns = lines.first.map { $0.dropFirst(2).split(separator: ",", omittingEmptySubsequences: false).map(String.init) } ?? []
        var rows: [String: [String: String]] = [:]
        var order: [String] = []
        for line in lines.dropFirst() where !line.isEmpty {
            let values = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            var row: [String: String] = [:]
            for (name, value) in zip(columns, values) where !name.isEmpty { row[name] = value }
            let key = "\(row["pxname"] ?? "")/\(row["svname"] ?? "")"
            rows[key] = row
            order.append(key)
        }
        return (lines.first ?? "", rows, order)
    }

    /// Polls `show stat` until `predicate` holds (counters are merged from every loop when
    /// read, and a loop counts a request just after its client has the answer).
    private func waitForStat(_ path: String, timeout: Double = 5, _ predicate: ([String: [String: String]]) -> Bool) throws -> [String: [String: String]] {
        let deadline = Date().addingTimeInterval(timeout)
        var rows = try showStat(path).rows
        while !predicate(rows) && Date() < deadline {
            usleep(20_000)
            rows = try showStat(path).rows
        }
        return rows
    }

    // MARK: show stat through socat

    func testShowStatThroughSocatHasHaproxysHeaderAndCountsRequests() throws {
        let s1 = try startHTTPStampServer("s1"), s2 = try startHTTPStampServer("s2")
        let path = try socketPath()
        let (balancer, port) = try startBalancer(servers: [s1.address, s2.address], socket: path)
        assertRotation(try servedNames(port: port, count: 6, balancer: balancer), of: ["s1", "s2"])

        let (header, _, order) = try showStat(path)
        XCTAssertEqual(header, Self.haproxyHeader)
        XCTAssertEqual(order, ["main/FRONTEND", "main/s1", "main/s2", "main/BACKEND"])
        let rows = try waitForStat(path) { $0["main/BACKEND"]?["hrsp_2xx"] == "6" && $0["main/FRONTEND"]?["req_tot"] == "6" }
        let frontend = try XCTUnwrap(rows["main/FRONTEND"]), backend = try XCTUnwrap(rows["main/BACKEND"])
        XCTAssertEqual(frontend["status"], "OPEN")
        XCTAssertEqual(frontend["stot"], "6")
        XCTAssertEqual(frontend["hrsp_2xx"], "6")
        XCTAssertEqual(frontend["mode"], "http")
        for (name, server) in [("s1", s1), ("s2", s2)] {
            let row = try XCTUnwrap(rows["main/\(name)"])
            XCTAssertEqual(row["status"], "no check", name)
            XCTAssertEqual(row["stot"], "3", name)
            XCTAssertEqual(row["hrsp_2xx"], "3", name)
            XCTAssertEqual(row["req_tot"], "3", name)
            XCTAssertEqual(row["scur"], "0", name)
            XCTAssertEqual(row["weight"], "1", name)
            XCTAssertEqual(row["addr"], server.address, name)
            XCTAssertNotEqual(row["bout"], "0", name)
        }
        XCTAssertEqual(backend["status"], "UP")
        XCTAssertEqual(backend["stot"], "6")
        XCTAssertEqual(backend["act"], "2")
        XCTAssertEqual(backend["weight"], "2")
        XCTAssertEqual(backend["algo"], "roundrobin")

        XCTAssertEqual(try socat("show backend", path), ["# name", "main", ""])
        XCTAssertEqual(try socat("set server main/s9 state drain", path), ["No such server.", ""])
        XCTAssertEqual(try socat("show cli level", path), ["admin", ""])
    }

    func testSocketFileIsReplacedOnStartAndRemovedOnStop() throws {
        let s1 = try startHTTPStampServer("s1")
        let path = try socketPath()
        // A stale socket, as a crashed run leaves it.
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        XCTAssertEqual(bound, 0)
        close(stale)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))

        let (balancer, _) = try startBalancer(servers: [s1.address], socket: path)
        XCTAssertEqual(try socat("show backend", path), ["# name", "main", ""], tail(balancer))
        XCTAssertEqual(balancer.stop(timeout: 5), 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the socket file outlived balancerd")
    }

    // MARK: drain, weight, maint

    /// A request held at s1 when s1 is drained still completes; nothing new reaches s1
    /// while it drains; `ready` brings it back.
    func testDrainLetsTheRequestInFlightFinishAndSendsNothingNew() throws {
        let gated = try GatedHTTPServer(name: "s1")
        addTeardownBlock { gated.stop() }
        let s2 = try startHTTPStampServer("s2")
        let path = try socketPath()
        let (balancer, port) = try startBalancer(servers: [gated.address, s2.address], socket: path)

        // Requests on their own connections until one waits at s1's gate.
        var held: HTTPClientConnection?
        for _ in 0..<4 where held == nil {
            let connection = try connectHTTP(port)
            try connection.send(getRequest())
            let deadline = Date().addingTimeInterval(2)
            while gated.waitingCount == 0 && !connection.isReadable && Date() < deadline { usleep(5_000) }
            if gated.waitingCount == 1 { held = connection } else { XCTAssertEqual(try connection.readResponse().bodyText, "s2") }
        }
        let inFlight = try XCTUnwrap(held, "no request reached s1\n\(tail(balancer))")
        let acceptedBefore = gated.acceptedCount

        XCTAssertEqual(try socat("set server main/s1 state drain", path), [""])
        let rows = try showStat(path).rows
        XCTAssertEqual(rows["main/s1"]?["status"], "DRAIN")
        XCTAssertEqual(rows["main/s1"]?["scur"], "1", "the held request is still counted")
        XCTAssertEqual(rows["main/BACKEND"]?["act"], "1")
        XCTAssertEqual(Set(try servedNames(port: port, count: 6, balancer: balancer)), ["s2"])
        XCTAssertEqual(gated.waitingCount, 1)
        XCTAssertEqual(gated.acceptedCount, acceptedBefore, "a drained server got a new connection")

        gated.release()
        let response = try inFlight.readResponse(timeout: 5)
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.bodyText, "s1", "the request in flight did not finish at s1")

        XCTAssertEqual(try socat("set server main/s1 state ready", path), [""])
        XCTAssertEqual(try showStat(path).rows["main/s1"]?["status"], "no check")
        XCTAssertEqual(Set(try servedNames(port: port, count: 4, balancer: balancer)), ["s1", "s2"])
    }

    func testSetWeightChangesTheRotation() throws {
        let s1 = try startHTTPStampServer("s1"), s2 = try startHTTPStampServer("s2")
        let path = try socketPath()
        let (balancer, port) = try startBalancer(servers: [s1.address, s2.address], socket: path)
        assertRotation(try servedNames(port: port, count: 4, balancer: balancer), of: ["s1", "s2"])

        XCTAssertEqual(try socat("set server main/s1 weight 3", path), [""])
        XCTAssertEqual(try socat("get weight main/s1", path), ["3 (initial 1)", ""])
        XCTAssertEqual(tally(try servedNames(port: port, count: 16, balancer: balancer)), ["s1": 12, "s2": 4])
        XCTAssertEqual(try showStat(path).rows["main/s1"]?["weight"], "3")

        // haproxy's older spelling, and a relative weight: s2 at 0% takes nothing.
        XCTAssertEqual(try socat("set weight main/s2 0%", path), [""])
        XCTAssertEqual(Set(try servedNames(port: port, count: 6, balancer: balancer)), ["s1"])
        XCTAssertEqual(try socat("set server main/s1 weight 100%", path), [""])
        XCTAssertEqual(try socat("set server main/s2 weight 100%", path), [""])
        assertRotation(try servedNames(port: port, count: 4, balancer: balancer), of: ["s1", "s2"])
        XCTAssertEqual(try socat("set server main/s1 weight 300", path), ["Absolute weight can only be between 0 and 256 inclusive.", ""])
    }

    /// Maintenance is the operator's: a Consul update that re-lists the same server (here,
    /// because a third instance registers) keeps it in maintenance and out of rotation.
    func testMaintSurvivesAConsulUpdateThatRelistsTheServer() throws {
        let consul = try ConsulTestServerProcess()
        addTeardownBlock { consul.stop() }
        var servers: [String: HTTPStampServer] = [:]
        for name in ["s1", "s2", "s3"] { servers[name] = try startHTTPStampServer(name) }
        for name in ["s1", "s2"] { try consul.register(id: name, port: servers[name]!.port) }
        let path = try socketPath()
        let (balancer, port) = try startBalancer(
            ["--listen", "127.0.0.1:0", "--mode", "http", "--quiet", "--consul", consul.url, "--service", "web", "--stats-socket", path])
        XCTAssertNotNil(waitForUpdate(balancer, servers: ["s1", "s2"], timeout: 5), tail(balancer))
        XCTAssertNotNil(balancer.waitForLine(containing: "balancerd: runtime API on unix socket", timeout: 10), tail(balancer))

        XCTAssertEqual(try socat("set server main/s1 state maint", path), [""])
        XCTAssertEqual(Set(try servedNames(port: port, count: 4, balancer: balancer)), ["s2"])

        let mark = balancer.lineCount
        try consul.register(id: "s3", port: servers["s3"]!.port)
        XCTAssertNotNil(waitForUpdate(balancer, servers: ["s1", "s2", "s3"], after: mark, timeout: 5), tail(balancer))
        let state = try socat("show servers state main", path)
        let s1 = try XCTUnwrap(state.first { $0.split(separator: " ").dropFirst(3).first == "s1" }, state.joined(separator: "\n"))
        XCTAssertEqual(s1.split(separator: " ")[6], "1", "srv_admin_state is not maintenance after the update: \(s1)")
        XCTAssertEqual(try showStat(path).rows["main/s1"]?["status"], "MAINT")
        XCTAssertEqual(Set(try servedNames(port: port, count: 6, balancer: balancer)), ["s2", "s3"])

        XCTAssertEqual(try socat("set server main/s1 state ready", path), [""])
        XCTAssertEqual(Set(try servedNames(port: port, count: 6, balancer: balancer)), ["s1", "s2", "s3"])
    }

    // MARK: hatop

    /// Debian's hatop (interactive mode, `show info` and `show stat` every second) in a
    /// detached tmux session: the pane shows the servers with their states.
    func testHatopShowsTheServers() throws {
        let s1 = try startHTTPStampServer("s1"), s2 = try startHTTPStampServer("s2")
        let path = try socketPath()
        let (balancer, _) = try startBalancer(servers: [s1.address, s2.address], socket: path)
        XCTAssertEqual(try socat("set server main/s1 state drain", path), [""])

        let session = "balancerd-hatop-\(getpid())"
        let started = try runProcess("/usr/bin/tmux", ["new-session", "-d", "-s", session, "-x", "200", "-y", "50", "/usr/bin/hatop -s \(path)"])
        XCTAssertEqual(started.exitCode, 0, started.allText)
        addTeardownBlock { _ = try? runProcess("/usr/bin/tmux", ["kill-session", "-t", session]) }

        var pane = ""
        let deadline = Date().addingTimeInterval(15)
        repeat {
            usleep(100_000)
            pane = (try? runProcess("/usr/bin/tmux", ["capture-pane", "-p", "-t", session]))?.stdoutText ?? ""
        } while !(pane.contains("DRAIN") && pane.contains("s2") && pane.contains("BACKEND")) && Date() < deadline
        XCTAssertTrue(pane.contains("balancerd"), "hatop's header shows show info's Name\n\(pane)\n\(tail(balancer))")
        let lines = pane.split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.contains("s1") && $0.contains("DRAIN") }, pane)
        XCTAssertTrue(lines.contains { $0.contains("s2") }, pane)
        XCTAssertTrue(lines.contains { $0.contains("FRONTEND") && $0.contains("OPEN") }, pane)
        XCTAssertTrue(lines.contains { $0.contains("BACKEND") && $0.contains("UP") }, pane)
    }
}
