// The Runtime API's interpreter, command by command, without a socket: a real Proxy (not
// started) and haproxy 2.6's answers, copied from Debian's haproxy.
import Glibc
import XCTest
@testable import Balancer

final class RuntimeAPITests: XCTestCase {
    /// Frontend "main" to backend "web" (s1 weight 3, s2, backup s3), and a TCP `listen other`.
    private func makeAPI() throws -> (RuntimeAPI, Proxy) {
        let configuration = Configuration(
            frontends: [
                Frontend(name: "main", binds: [HostPort(host: "127.0.0.1", port: 0)], mode: .http, defaultBackend: "web"),
                Frontend(name: "other", binds: [HostPort(host: "127.0.0.1", port: 0)], mode: .tcp, defaultBackend: "other"),
            ],
            backends: [
                BackendConfig(name: "web", mode: .http, servers: [
                    ServerConfig(name: "s1", address: HostPort(host: "127.0.0.1", port: 18911), weight: 3),
                    ServerConfig(name: "s2", address: HostPort(host: "127.0.0.1", port: 18912)),
                    ServerConfig(name: "s3", address: HostPort(host: "127.0.0.1", port: 18913), backup: true),
                ]),
                BackendConfig(name: "other", mode: .tcp, servers: [ServerConfig(name: "t1", address: HostPort(host: "127.0.0.1", port: 18921))]),
            ])
        let proxy = try Proxy(configuration: configuration, options: ProxyOptions(threads: 1, quiet: true))
        addTeardownBlock { proxy.shutdown(grace: .zero) }
        return (RuntimeAPI(proxy: proxy, version: "9.9.9", node: "testnode"), proxy)
    }

    private func run(_ api: RuntimeAPI, _ line: String, level: RuntimeSocketConfig.Level = .admin) -> String {
        var session = RuntimeSession(level: level)
        let answer = api.execute(line: line, session: &session)
        XCTAssertTrue(session.closing, "outside prompt mode the connection closes after one line")
        return answer
    }

    private func server(_ proxy: Proxy, _ backend: String, _ name: String) -> Server {
        proxy.tables.first { $0.name == backend }!.servers.first { $0.name == name }!
    }

    // MARK: show

    func testShowStatHasHaproxysHeaderAndARowPerFrontendServerAndBackend() throws {
        let (api, _) = try makeAPI()
        let lines = run(api, "show stat").split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(String(lines[0]) + "\n", StatCSV.header)
        XCTAssertEqual(lines.count, 1 + 8 + 2, "header, 8 rows, the empty line that ends the answer: \(lines)")
        XCTAssertEqual(lines.suffix(2), ["", ""])
        let rows = lines.dropFirst().dropLast(2).map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        XCTAssertEqual(rows.map { "\($0[0])/\($0[1])" },
                       ["main/FRONTEND", "web/s1", "web/s2", "web/s3", "web/BACKEND", "other/FRONTEND", "other/t1", "other/BACKEND"])
        // Every row has haproxy's 128 columns and its trailing comma.
        for row in rows { XCTAssertEqual(row.count, StatCSV.columns.count + 1, row.joined(separator: ",")) }
        let column = { (row: [String], name: String) in row[StatCSV.columns.firstIndex(of: name)!] }
        let s1 = rows[1], s3 = rows[3], web = rows[4], t1 = rows[6]
        XCTAssertEqual(column(s1, "status"), "no check")
        XCTAssertEqual(column(s1, "weight"), "3")
        XCTAssertEqual(column(s1, "act"), "1")
        XCTAssertEqual(column(s3, "bck"), "1")
        XCTAssertEqual(column(s1, "addr"), "127.0.0.1:18911")
        XCTAssertEqual(column(s1, "iid"), "3")
        XCTAssertEqual(column(s1, "sid"), "1")
        XCTAssertEqual(column(s1, "type"), "2")
        XCTAssertEqual(column(s1, "hrsp_2xx"), "0")
        XCTAssertEqual(column(t1, "hrsp_2xx"), "", "TCP rows have no HTTP columns, as in haproxy")
        XCTAssertEqual(column(s1, "rate"), "", "what balancerd does not measure stays empty")
        XCTAssertEqual(column(web, "status"), "UP")
        XCTAssertEqual(column(web, "weight"), "4")
        XCTAssertEqual(column(web, "act"), "2")
        XCTAssertEqual(column(web, "bck"), "1")
        XCTAssertEqual(column(web, "algo"), "roundrobin")
        XCTAssertEqual(column(rows[0], "status"), "OPEN")
    }

    func testShowStatFilters() throws {
        let (api, proxy) = try makeAPI()
        let names = { (answer: String) in
            answer.split(separator: "\n").dropFirst().map { $0.split(separator: ",").prefix(2).joined(separator: "/") }
        }
        XCTAssertEqual(names(run(api, "show stat -1 4 -1")), ["web/s1", "web/s2", "web/s3", "other/t1"])
        XCTAssertEqual(names(run(api, "show stat 3 2 -1")), ["web/BACKEND"])
        XCTAssertEqual(names(run(api, "show stat web 4 2")), ["web/s2"])
        XCTAssertEqual(names(run(api, "show stat 2 1 -1")), ["main/FRONTEND"])
        server(proxy, "web", "s2").health.adminRaw.store(AdminState.maint.rawValue, ordering: .relaxed)
        XCTAssertEqual(names(run(api, "show stat no-maint -1 4 -1")), ["web/s1", "web/s3", "other/t1"])
        XCTAssertEqual(names(run(api, "show stat up -1 4 -1")), ["web/s1", "web/s3", "other/t1"])
    }

    func testShowInfoHasWhatHatopReads() throws {
        let (api, _) = try makeAPI()
        let answer = run(api, "show info")
        XCTAssertTrue(answer.hasPrefix("Name: balancerd\nVersion: 9.9.9\nRelease_date: -\nNbthread: 1\nNbproc: 1\nProcess_num: 1\nPid: \(getpid())\nUptime: 0d 0h00m0"), answer)
        for key in ["Maxconn", "CurrConns", "Maxpipes", "PipesUsed", "Tasks", "Run_queue"] {
            XCTAssertNotNil(answer.range(of: "\n\(key): [0-9]+\n", options: .regularExpression), key)
        }
        XCTAssertTrue(answer.contains("\nnode: testnode\n"))
        XCTAssertTrue(answer.hasSuffix("\n\n"))
        XCTAssertEqual(ShowInfo.formatUptime(93_784), "1d 2h03m04s")
    }

    func testShowServersStateAndShowBackend() throws {
        let (api, proxy) = try makeAPI()
        server(proxy, "web", "s1").health.adminRaw.store(AdminState.drain.rawValue, ordering: .relaxed)
        server(proxy, "web", "s2").health.adminRaw.store(AdminState.maint.rawValue, ordering: .relaxed)
        let answer = run(api, "show servers state web")
        let lines = answer.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(lines[0], "1")
        XCTAssertEqual(lines[1], "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port")
        // As haproxy 2.6 prints them, but the seconds since the last change (column 10).
        let fields = lines[2...4].map { $0.split(separator: " ").enumerated().map { $0 == 9 ? "T" : String($1) }.joined(separator: " ") }
        XCTAssertEqual(fields, [
            "3 web 1 s1 127.0.0.1 2 8 3 3 T 1 0 2 0 0 0 0 - 18911 - 0 0 - - 0",
            "3 web 2 s2 127.0.0.1 0 1 1 1 T 1 0 2 0 0 0 0 - 18912 - 0 0 - - 0",
            "3 web 3 s3 127.0.0.1 2 0 1 1 T 1 0 2 0 0 0 0 - 18913 - 0 0 - - 0",
        ])
        XCTAssertEqual(lines.count, 7)
        XCTAssertEqual(run(api, "show servers state").split(separator: "\n").count, 6)
        XCTAssertEqual(run(api, "show servers state nope"), "Can't find backend.\n\n")
        XCTAssertEqual(run(api, "show backend"), "# name\nweb\nother\n\n")
    }

    // MARK: changing servers

    func testSetServerStateDrainMaintReady() throws {
        let (api, proxy) = try makeAPI()
        let s1 = server(proxy, "web", "s1")
        let generation = proxy.generation
        XCTAssertEqual(run(api, "set server web/s1 state drain"), "\n")
        XCTAssertEqual(s1.health.adminState, .drain)
        XCTAssertFalse(s1.health.isAcceptable)
        XCTAssertGreaterThan(proxy.generation, generation, "a state change republishes the table")
        XCTAssertEqual(run(api, "set server web/s1 state maint"), "\n")
        XCTAssertEqual(s1.health.adminState, .maint)
        XCTAssertTrue(run(api, "show stat -1 4 1").contains(",MAINT,"))
        XCTAssertEqual(run(api, "set server web/s1 state ready"), "\n")
        XCTAssertEqual(s1.health.adminState, .ready)
        XCTAssertTrue(s1.health.isAcceptable)
        XCTAssertEqual(run(api, "set server web/s1 state bogus"), "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n")
        XCTAssertEqual(run(api, "set server web/s1 state"), "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n")
        XCTAssertEqual(run(api, "set server web/s1"), "usage: set server <backend>/<server> state | weight\n\n")
    }

    func testDisableAndEnableServer() throws {
        let (api, proxy) = try makeAPI()
        let s2 = server(proxy, "web", "s2")
        XCTAssertEqual(run(api, "disable server web/s2"), "\n")
        XCTAssertEqual(s2.health.adminState, .maint)
        XCTAssertEqual(run(api, "enable server web/s2"), "\n")
        XCTAssertEqual(s2.health.adminState, .ready)
        XCTAssertEqual(run(api, "disable server web/zz"), "No such server.\n\n")
        XCTAssertEqual(run(api, "disable server"), "Require 'backend/server'.\n\n")
    }

    func testSetWeightAbsoluteRelativeAndErrors() throws {
        let (api, proxy) = try makeAPI()
        let s1 = server(proxy, "web", "s1")
        XCTAssertEqual(run(api, "set server web/s1 weight 2"), "\n")
        XCTAssertEqual(s1.health.effectiveWeight(configured: s1.weight), 2)
        XCTAssertEqual(run(api, "get weight web/s1"), "2 (initial 3)\n\n")
        XCTAssertEqual(run(api, "set server web/s1 weight 150%"), "\n")
        XCTAssertEqual(run(api, "get weight web/s1"), "4 (initial 3)\n\n", "150% of 3, rounded down as haproxy does")
        XCTAssertEqual(run(api, "set weight web/s1 100%"), "\n")
        XCTAssertEqual(run(api, "get weight web/s1"), "3 (initial 3)\n\n")
        XCTAssertTrue(run(api, "show stat -1 4 1").contains(",3,1,0,"), "weight, act, bck")
        // haproxy's error texts, the ones without a newline included.
        XCTAssertEqual(run(api, "set server web/s1 weight 300"), "Absolute weight can only be between 0 and 256 inclusive.\n\n")
        XCTAssertEqual(run(api, "set server web/s1 weight -1"), "Absolute weight can only be between 0 and 256 inclusive.\n\n")
        XCTAssertEqual(run(api, "set server web/s1 weight x"), "Empty weight string empty or preceded by garbage\n")
        XCTAssertEqual(run(api, "set server web/s1 weight 10x"), "Trailing garbage in weight string\n")
        XCTAssertEqual(run(api, "set server web/s1 weight -5%"), "Relative weight must be positive.\n\n")
        XCTAssertEqual(run(api, "set server web/s1 weight"), "Require <weight> or <weight%>.\n\n")
        XCTAssertEqual(run(api, "set weight web/s1"), "Require <weight> or <weight%>.\n\n")
        XCTAssertEqual(run(api, "get weight web/s1"), "3 (initial 3)\n\n", "errors change nothing")
        XCTAssertEqual(RuntimeAPI.parseWeight("1000%", initial: 100), .success(256))
    }

    func testUnknownBackendAndServer() throws {
        let (api, _) = try makeAPI()
        XCTAssertEqual(run(api, "set server nope/s1 state drain"), "No such backend.\n\n")
        XCTAssertEqual(run(api, "set server web/s9 state drain"), "No such server.\n\n")
        XCTAssertEqual(run(api, "set server web state drain"), "Require 'backend/server'.\n\n")
        XCTAssertEqual(run(api, "get weight web/zz"), "No such server.\n\n")
        XCTAssertEqual(run(api, "get weight"), "Require 'backend/server'.\n\n")
    }

    // MARK: levels

    func testOnlyAdminChangesServersAsInHaproxy() throws {
        let (api, proxy) = try makeAPI()
        for level in [RuntimeSocketConfig.Level.user, .operator] {
            for command in ["set server web/s1 state maint", "set server web/s1 weight 1", "set weight web/s1 1",
                            "disable server web/s1", "enable server web/s1"] {
                XCTAssertEqual(run(api, command, level: level), "Permission denied\n\n", "\(level) \(command)")
            }
            XCTAssertTrue(run(api, "show stat", level: level).hasPrefix("# pxname,"))
            XCTAssertEqual(run(api, "get weight web/s1", level: level), "3 (initial 3)\n\n")
            XCTAssertEqual(run(api, "show cli level", level: level), "\(level.rawValue)\n\n")
        }
        XCTAssertEqual(server(proxy, "web", "s1").health.adminState, .ready)
        XCTAssertEqual(server(proxy, "web", "s1").health.operatorWeight.load(ordering: .relaxed), -1)
        // A session may lower its level, never raise it.
        XCTAssertEqual(run(api, "operator; show cli level; set server web/s1 state maint", level: .admin),
                       "\noperator\n\nPermission denied\n\n")
        XCTAssertEqual(run(api, "operator", level: .user), "Permission denied\n\n")
    }

    // MARK: the session

    func testPromptModeSemicolonsTimeoutAndQuit() throws {
        let (api, _) = try makeAPI()
        var session = RuntimeSession(level: .admin)
        XCTAssertEqual(api.execute(line: "prompt", session: &session), "\n> ")
        XCTAssertTrue(session.interactive)
        XCTAssertFalse(session.closing)
        XCTAssertEqual(api.execute(line: "set timeout cli 60", session: &session), "\n> ")
        XCTAssertEqual(session.timeout, .seconds(60))
        XCTAssertEqual(api.execute(line: "show backend;show cli level", session: &session), "# name\nweb\nother\n\n> admin\n\n> ")
        XCTAssertEqual(api.execute(line: "set timeout client 5", session: &session), "'set timeout' only supports 'cli'.\n\n> ")
        XCTAssertEqual(api.execute(line: "set timeout cli x", session: &session), "Expects an integer value.\n\n> ")
        XCTAssertFalse(session.closing)
        XCTAssertEqual(api.execute(line: "show backend; quit; show info", session: &session), "# name\nweb\nother\n\n> ")
        XCTAssertTrue(session.closing)
        XCTAssertEqual(RuntimeAPI.split(#"a b\;c ; d\ e;"#), [["a", "b;c"], ["d e"], []])
    }

    func testHelpAndUnknownCommands() throws {
        let (api, _) = try makeAPI()
        let help = run(api, "help")
        XCTAssertTrue(help.hasPrefix("The following commands are valid at this level:\n"))
        XCTAssertTrue(help.contains("\n  show servers state [<backend>]          : dump volatile server information (all or for a single backend)\n"))
        XCTAssertTrue(help.hasSuffix("  quit                                    : disconnect\n\n"))
        let near = run(api, "show nothing")
        XCTAssertTrue(near.hasPrefix("Unknown command, but maybe one of the following ones is a better match:\n  show backend"), near)
        XCTAssertFalse(near.contains("set server"))
        XCTAssertTrue(run(api, "bogus").hasPrefix("Unknown command. Please enter one of the following commands only:\n"))
    }
}
