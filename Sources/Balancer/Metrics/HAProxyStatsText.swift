// haproxy's text formats of a StatsSnapshot: the `show stat` CSV (also served as `/;csv`),
// `show info` and `show servers state`. Pure functions of the snapshot, so that they are
// tested against haproxy's own output without a socket.
//
// Columns and order are haproxy 2.6's (src/stats.c, the `-` that separates the proxy
// fields from the modules' and the trailing comma included). A column holds a value when
// balancerd has one, or when the feature it counts does not exist in balancerd and the
// true count is 0 (queues, compression, TLS, HTTP/2); it stays empty, as haproxy leaves
// its own unused columns, when balancerd does not measure it (rates, lbtot, lastsess).

/// One proxy as haproxy numbers it: a `listen` section (balancerd's frontend and backend
/// of the same name) is one proxy with a FRONTEND and a BACKEND row.
struct StatsProxy {
    var name: String
    /// haproxy's `iid`. Numbering starts at 2: haproxy gives 1 to the CLI's own GLOBAL
    /// proxy, which exists whenever a stats socket does.
    var id: Int
    var frontend: FrontendStats?
    var backend: BackendStats?

    /// Each frontend, followed by its default backend when that is a proxy of its own
    /// (not a `listen`), then any backend no frontend uses. haproxy lists proxies in
    /// declaration order; balancerd's configuration keeps frontends and backends apart,
    /// and this order gives the usual `frontend X` + `backend Y` file haproxy's order.
    static func all(_ snapshot: StatsSnapshot) -> [StatsProxy] {
        var proxies: [StatsProxy] = []
        let frontendNames = Set(snapshot.frontends.map(\.name))
        func add(backend name: String) {
            guard !frontendNames.contains(name), !proxies.contains(where: { $0.name == name }),
                  let backend = snapshot.backends.first(where: { $0.name == name }) else { return }
            proxies.append(StatsProxy(name: name, id: proxies.count + 2, frontend: nil, backend: backend))
        }
        for frontend in snapshot.frontends {
            proxies.append(StatsProxy(name: frontend.name, id: proxies.count + 2, frontend: frontend,
                                      backend: snapshot.backends.first { $0.name == frontend.name }))
            add(backend: frontend.defaultBackend)
        }
        for backend in snapshot.backends { add(backend: backend.name) }
        return proxies
    }
}

/// `show stat` filters: `show stat [<iid> <type> <sid>]`, as in haproxy (-1 means any;
/// type is a mask: 1 frontends, 2 backends, 4 servers), plus the `up` and `no-maint` words.
public struct StatCSVFilter: Sendable, Equatable {
    public var proxyID = -1
    public var types = -1
    public var serverID = -1
    /// `up`: only servers that are UP (or not checked), `no-maint`: no server in maintenance.
    public var onlyUp = false
    public var noMaintenance = false

    public init() {}

    func allows(_ proxy: StatsProxy) -> Bool { proxyID == -1 || proxyID == proxy.id }
    func allowsType(_ bit: Int) -> Bool { types == -1 || types & bit != 0 }
}

public enum StatCSV {
    /// haproxy 2.6's columns, in order.
    static let columns: [String] = """
        pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,\
        chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,\
        check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,\
        req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,\
        agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,\
        agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,\
        reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,\
        safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,\
        ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,\
        h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,\
        h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,\
        h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,\
        h1_spliced_bytes_in,h1_spliced_bytes_out
        """.split(separator: ",").map(String.init)

    private static let index: [String: Int] = Dictionary(uniqueKeysWithValues: columns.enumerated().map { ($1, $0) })

    /// The header line, as haproxy writes it (with its trailing comma).
    public static var header: String { "# " + columns.joined(separator: ",") + ",\n" }

    /// The header and one line per row that `filter` lets through: per proxy its
    /// FRONTEND row, its servers and its BACKEND row.
    public static func text(_ snapshot: StatsSnapshot, filter: StatCSVFilter = StatCSVFilter()) -> String {
        var text = header
        for proxy in StatsProxy.all(snapshot) where filter.allows(proxy) {
            if let frontend = proxy.frontend, filter.allowsType(1) {
                text += frontendRow(frontend, proxy: proxy).line
            }
            if let backend = proxy.backend {
                if filter.allowsType(4) {
                    for server in backend.servers where filter.serverID == -1 || filter.serverID == server.id {
                        if filter.onlyUp && !(server.admin != .maint && server.checkedUp) { continue }
                        if filter.noMaintenance && server.admin == .maint { continue }
                        text += serverRow(server, backend: backend, proxy: proxy).line
                    }
                }
                if filter.allowsType(2) {
                    text += backendRow(backend, proxy: proxy).line
                }
            }
        }
        return text
    }

    private struct Row {
        var values = [String](repeating: "", count: StatCSV.columns.count)

        subscript(_ name: String) -> String {
            get { values[StatCSV.index[name]!] }
            set {
                guard let position = StatCSV.index[name] else { preconditionFailure("no show stat column '\(name)'") }
                values[position] = newValue
            }
        }

        mutating func set(_ names: String..., to value: some BinaryInteger) {
            for name in names { self[name] = "\(value)" }
        }

        var line: String { values.joined(separator: ",") + ",\n" }
    }

    /// The columns every row type fills the same way.
    private static func common(_ proxy: StatsProxy, serverName: String, serverID: Int, type: Int, _ counters: StatsCounters,
                               mode: ProxyMode) -> Row {
        var row = Row()
        row["pxname"] = proxy.name
        row["svname"] = serverName
        row.set("scur", to: counters.current)
        row.set("smax", to: counters.maxCurrent)
        row.set("stot", to: counters.total)
        row.set("bin", to: counters.bytesIn)
        row.set("bout", to: counters.bytesOut)
        row.set("pid", to: 1)   // haproxy's process number, not the system pid
        row.set("iid", to: proxy.id)
        row.set("sid", to: serverID)
        row.set("type", to: type)
        if mode == .http {
            for (i, name) in ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"].enumerated() {
                row.set(name, to: counters.responses[i])
            }
        }
        row["mode"] = mode.rawValue
        row["-"] = "-"
        row.set("ssl_sess", "ssl_reused_sess", "ssl_failed_handshake", to: 0)
        return row
    }

    private static let h2Columns = [
        "h2_headers_rcvd", "h2_data_rcvd", "h2_settings_rcvd", "h2_rst_stream_rcvd", "h2_goaway_rcvd",
        "h2_detected_conn_protocol_errors", "h2_detected_strm_protocol_errors", "h2_rst_stream_resp", "h2_goaway_resp",
        "h2_open_connections", "h2_backend_open_streams", "h2_total_connections", "h2_backend_total_streams",
    ]

    private static func frontendRow(_ frontend: FrontendStats, proxy: StatsProxy) -> Row {
        let c = frontend.counters
        var row = common(proxy, serverName: "FRONTEND", serverID: 0, type: 0, c, mode: frontend.mode)
        row.set("slim", to: frontend.sessionLimit)
        row.set("dreq", to: c.deniedRequests)
        row.set("ereq", to: c.requestErrors)
        row.set("dresp", "rate_lim", "comp_in", "comp_out", "comp_byp", "comp_rsp", "dcon", "dses", "wrew", to: 0)
        row["status"] = "OPEN"
        row.set("req_tot", to: frontend.mode == .http ? c.httpRequests : 0)
        row.set("conn_tot", to: c.total)
        if frontend.mode == .http { row.set("intercepted", "cache_lookups", "cache_hits", to: 0) }
        for name in h2Columns { row.set(name, to: 0) }
        return row
    }

    private static func serverRow(_ server: ServerStats, backend: BackendStats, proxy: StatsProxy) -> Row {
        let c = server.counters
        var row = common(proxy, serverName: server.name, serverID: server.id, type: 2, c, mode: backend.mode)
        row.set("qcur", "qmax", "dresp", "wrew", to: 0)
        row.set("econ", to: c.connectionErrors)
        row.set("eresp", to: c.responseErrors)
        row.set("wretr", to: c.retries)
        row.set("wredis", to: c.redispatches)
        row["status"] = server.statusText
        row.set("weight", to: server.weight)
        row.set("act", to: server.isBackup ? 0 : 1)
        row.set("bck", to: server.isBackup ? 1 : 0)
        row.set("lastchg", to: server.secondsSinceChange)
        if backend.mode == .http { row.set("req_tot", to: c.httpRequests) }
        row.set("cli_abrt", to: c.clientAborts)
        row.set("srv_abrt", to: c.serverAborts)
        timings(c, into: &row)
        row["addr"] = server.address.description
        row.set("uweight", to: server.userWeight)
        if let check = server.check {
            row.set("chkfail", to: server.checkFailures)
            row.set("chkdown", to: server.downTransitions)
            row.set("downtime", to: server.downtimeSeconds)
            // haproxy shows no check result while a server is in maintenance (checks pause).
            if server.admin != .maint && server.checkStatus != .unknown {
                row["check_status"] = server.checkStatus.text
                if server.checkCode > 0 { row.set("check_code", to: server.checkCode) }
                if server.checkDurationMilliseconds >= 0 { row.set("check_duration", to: server.checkDurationMilliseconds) }
                row["check_desc"] = server.checkStatus.description
            }
            row.set("check_rise", to: check.rise)
            row.set("check_fall", to: check.fall)
            row.set("check_health", to: server.checkHealth)
        }
        return row
    }

    private static func backendRow(_ backend: BackendStats, proxy: StatsProxy) -> Row {
        let c = backend.counters
        var row = common(proxy, serverName: "BACKEND", serverID: 0, type: 1, c, mode: backend.mode)
        row.set("qcur", "qmax", "dreq", "dresp", "wrew", "comp_in", "comp_out", "comp_byp", "comp_rsp", to: 0)
        row.set("econ", to: c.connectionErrors)
        row.set("eresp", to: c.responseErrors)
        row.set("wretr", to: c.retries)
        row.set("wredis", to: c.redispatches)
        row["status"] = backend.statusText
        row.set("weight", to: backend.totalWeight)
        row.set("act", to: backend.activeServers)
        row.set("bck", to: backend.backupServers)
        if backend.mode == .http {
            row.set("req_tot", to: c.httpRequests)
            row.set("cache_lookups", "cache_hits", to: 0)
        }
        row.set("cli_abrt", to: c.clientAborts)
        row.set("srv_abrt", to: c.serverAborts)
        timings(c, into: &row)
        row["algo"] = backend.balance.rawValue
        // haproxy's backend uweight: the operator's weights of the servers its `weight` sums.
        let primaries = backend.servers.filter { !$0.isBackup && $0.isActive }
        let counted = primaries.isEmpty ? backend.servers.filter { $0.isBackup && $0.isActive } : primaries
        row.set("uweight", to: counted.reduce(0) { $0 + $1.userWeight })
        for name in h2Columns { row.set(name, to: 0) }
        return row
    }

    private static func timings(_ c: StatsCounters, into row: inout Row) {
        row.set("qtime", to: c.queueTime)
        row.set("ctime", to: c.connectTime)
        row.set("rtime", to: c.responseTime)
        row.set("ttime", to: c.totalTime)
    }
}


public enum ShowInfo {
    /// `show info`: the `Name: value` lines of haproxy's, for the values balancerd has.
    /// hatop insists on Maxpipes, PipesUsed, Tasks and Run_queue; balancerd has no pipe
    /// limit and no task scheduler, so those read 0, and Release_date reads "-".
    public static func text(_ snapshot: StatsSnapshot, node: String) -> String {
        let uptime = snapshot.uptimeSeconds
        let lines: [(String, String)] = [
            ("Name", "balancerd"),
            ("Version", snapshot.version),
            ("Release_date", "-"),
            ("Nbthread", "\(snapshot.threads)"),
            ("Nbproc", "1"),
            ("Process_num", "1"),
            ("Pid", "\(snapshot.pid)"),
            ("Uptime", formatUptime(uptime)),
            ("Uptime_sec", "\(uptime)"),
            ("Maxconn", "\(snapshot.maxConnections)"),
            ("Hard_maxconn", "\(snapshot.maxConnections)"),
            ("CurrConns", "\(snapshot.currentConnections)"),
            ("CumConns", "\(snapshot.cumulativeConnections)"),
            ("CumReq", "\(snapshot.cumulativeRequests)"),
            ("Maxpipes", "0"),
            ("PipesUsed", "0"),
            ("Tasks", "0"),
            ("Run_queue", "0"),
            ("node", node),
            ("Start_time_sec", "\(snapshot.startTimeSeconds)"),
        ]
        return lines.map { "\($0): \($1)\n" }.joined()
    }

    /// haproxy's `Uptime`: "0d 0h00m04s".
    static func formatUptime(_ seconds: Int) -> String {
        let days = seconds / 86400, hours = seconds / 3600 % 24, minutes = seconds / 60 % 60, rest = seconds % 60
        return "\(days)d \(hours)h\(minutes < 10 ? "0" : "")\(minutes)m\(rest < 10 ? "0" : "")\(rest)s"
    }
}

public enum ServersState {
    static let header = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"

    /// `show servers state [BACKEND]`, format version 1; nil when `backend` names none.
    public static func text(_ snapshot: StatsSnapshot, backend name: String? = nil) -> String? {
        let proxies = StatsProxy.all(snapshot).filter { $0.backend != nil }
        let chosen = name.map { name in proxies.filter { $0.name == name } } ?? proxies
        if name != nil && chosen.isEmpty { return nil }
        var text = header
        for proxy in chosen {
            for server in proxy.backend!.servers { text += line(server, proxy: proxy) }
        }
        return text
    }

    private static func line(_ server: ServerStats, proxy: StatsProxy) -> String {
        // srv_op_state: 0 stopped, 2 running (SRV_ST_*); srv_admin_state: SRV_ADMF_FMAINT
        // 0x01, SRV_ADMF_FDRAIN 0x08; srv_check_state: CHK_ST_CONFIGURED|ENABLED 0x06,
        // plus CHK_ST_PAUSED 0x08 in maintenance.
        let running = server.admin != .maint && server.checkedUp
        let admin = switch server.admin { case .ready: 0; case .drain: 8; case .maint: 1 }
        let checked = server.check != nil
        let status = checked ? server.checkStatus : .initializing
        let result = switch status {
        case .unknown, .initializing: 0
        case .l4ok, .l6ok, .l7ok: 3
        default: 2
        }
        let fields: [String] = [
            "\(proxy.id)", proxy.name, "\(server.id)", server.name, server.address.host,
            running ? "2" : "0", "\(admin)", "\(server.userWeight)", "\(server.initialWeight)",
            "\(server.secondsSinceChange)", "\(status.haproxyCode)", "\(checked ? result : 0)",
            // haproxy's health counter of a server without checks sits at the default rise.
            "\(checked ? server.checkHealth : 2)",
            checked ? (server.admin == .maint ? "14" : "6") : "0",
            "0", "0", "0", "-", "\(server.address.port)", "-", "0", "0", "-", "-", "0",
        ]
        return fields.joined(separator: " ") + "\n"
    }
}
