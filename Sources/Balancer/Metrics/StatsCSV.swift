// haproxy 2.6's `show stat` CSV (also the stats page's `;csv`), formatted from one
// StatsSnapshot. The header and its column order are haproxy's, byte for byte, module
// columns (ssl, h2, h1) included, so that scripts reading columns by position or by name
// work unchanged. A column balancerd has no value for is empty, as haproxy leaves the
// columns that do not apply to a row empty; a value that is a true zero here (no queue,
// no compression, no rules to deny with) is 0, as haproxy prints it.

/// One haproxy proxy as the stats show it: balancerd's `listen` is a frontend and a
/// backend of the same name, which haproxy shows as one proxy.
public struct StatsProxy: Sendable {
    public var name: String
    /// haproxy's `iid`: the proxy's position in the configuration, from 1.
    public var id: Int
    public var frontend: FrontendStats?
    public var backend: BackendStats?
}

extension StatsSnapshot {
    /// Frontends in order, each with the backend of the same name, then the other backends.
    public var proxies: [StatsProxy] {
        var result: [StatsProxy] = []
        var paired = Set<String>()
        for frontend in frontends {
            let backend = backends.first { $0.name == frontend.name }
            if backend != nil { paired.insert(frontend.name) }
            result.append(StatsProxy(name: frontend.name, id: result.count + 1, frontend: frontend, backend: backend))
        }
        for backend in backends where !paired.contains(backend.name) {
            result.append(StatsProxy(name: backend.name, id: result.count + 1, frontend: nil, backend: backend))
        }
        return result
    }
}

public enum StatsCSV {
    /// haproxy 2.6.12's `show stat` header, "# " and trailing comma included.
    public static let header = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,"

    /// The column names, in order ("-" separates haproxy's own fields from its modules').
    public static let columns: [Substring] = header.dropFirst(2).split(separator: ",", omittingEmptySubsequences: false).dropLast()

    private static let index: [Substring: Int] = Dictionary(uniqueKeysWithValues: columns.enumerated().map { ($1, $0) })

    /// `show stat` as haproxy prints it: the header, one line per row (per proxy: FRONTEND,
    /// its servers, BACKEND), each ending with a comma, then an empty line.
    public static func render(_ snapshot: StatsSnapshot) -> String {
        var out = header + "\n"
        for proxy in snapshot.proxies {
            if let frontend = proxy.frontend { out += line(frontendRow(frontend, proxy: proxy)) }
            if let backend = proxy.backend {
                for server in backend.servers { out += line(serverRow(server, backend: backend, proxy: proxy)) }
                out += line(backendRow(backend, proxy: proxy))
            }
        }
        return out + "\n"
    }

    private static func line(_ fields: [Substring: String]) -> String {
        var cells = [String](repeating: "", count: columns.count)
        for (name, value) in fields {
            guard let at = index[name] else { preconditionFailure("no column \(name)") }
            cells[at] = String(value.map { $0 == "," ? " " : $0 })
        }
        cells[index["-"]!] = "-"
        return cells.joined(separator: ",") + ",\n"
    }

    /// The columns every row has.
    private static func common(_ name: String, _ svname: String, _ c: StatsCounters, type: Int, proxy: StatsProxy, mode: ProxyMode) -> [Substring: String] {
        var f: [Substring: String] = [
            "pxname": name, "svname": svname, "scur": "\(c.current)", "smax": "\(c.maxCurrent)", "stot": "\(c.total)",
            "bin": "\(c.bytesIn)", "bout": "\(c.bytesOut)", "dresp": "0", "pid": "1", "iid": "\(proxy.id)",
            "type": "\(type)", "mode": mode.rawValue,
        ]
        if mode == .http {
            for (i, code) in ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"].enumerated() {
                f[Substring(code)] = "\(c.responses[i])"
            }
            f["req_tot"] = "\(c.httpRequests)"
        }
        return f
    }

    private static func frontendRow(_ frontend: FrontendStats, proxy: StatsProxy) -> [Substring: String] {
        let c = frontend.counters
        var f = common(proxy.name, "FRONTEND", c, type: 0, proxy: proxy, mode: frontend.mode)
        f["slim"] = "\(frontend.sessionLimit)"
        f["dreq"] = "\(c.deniedRequests)"
        f["ereq"] = "\(c.requestErrors)"
        f["status"] = "OPEN"
        f["sid"] = "0"
        f["rate_lim"] = "0"
        f["conn_tot"] = "\(c.total)"
        for name in ["comp_in", "comp_out", "comp_byp", "comp_rsp", "intercepted", "dcon", "dses", "wrew", "eint"] {
            f[Substring(name)] = "0"
        }
        return f
    }

    private static func serverRow(_ s: ServerStats, backend: BackendStats, proxy: StatsProxy) -> [Substring: String] {
        let c = s.counters
        var f = common(proxy.name, s.name, c, type: 2, proxy: proxy, mode: backend.mode)
        f["qcur"] = "0"
        f["qmax"] = "0"
        for (name, value) in [("econ", c.connectionErrors), ("eresp", c.responseErrors), ("wretr", c.retries),
                              ("wredis", c.redispatches), ("cli_abrt", c.clientAborts), ("srv_abrt", c.serverAborts),
                              ("qtime", c.queueTime), ("ctime", c.connectTime), ("rtime", c.responseTime), ("ttime", c.totalTime)] {
            f[Substring(name)] = "\(value)"
        }
        f["status"] = s.statusText
        f["weight"] = "\(s.weight)"
        f["uweight"] = "\(s.userWeight)"
        f["act"] = s.isBackup ? "0" : "1"
        f["bck"] = s.isBackup ? "1" : "0"
        f["lastchg"] = "\(s.secondsSinceChange)"
        f["sid"] = "\(s.id)"
        f["lbtot"] = "\(c.total)"
        f["addr"] = s.address.description
        f["eint"] = "0"
        if let check = s.check {
            f["chkfail"] = "\(s.checkFailures)"
            f["chkdown"] = "\(s.downTransitions)"
            f["downtime"] = "\(s.downtimeSeconds)"
            f["check_status"] = s.checkStatus.text
            if s.checkCode > 0 { f["check_code"] = "\(s.checkCode)" }
            if s.checkDurationMilliseconds >= 0 { f["check_duration"] = "\(s.checkDurationMilliseconds)" }
            f["check_rise"] = "\(check.rise)"
            f["check_fall"] = "\(check.fall)"
            f["check_health"] = "\(s.checkHealth)"
        }
        return f
    }

    private static func backendRow(_ b: BackendStats, proxy: StatsProxy) -> [Substring: String] {
        let c = b.counters
        var f = common(proxy.name, "BACKEND", c, type: 1, proxy: proxy, mode: b.mode)
        f["qcur"] = "0"
        f["qmax"] = "0"
        for (name, value) in [("dreq", c.deniedRequests), ("econ", c.connectionErrors), ("eresp", c.responseErrors),
                              ("wretr", c.retries), ("wredis", c.redispatches), ("cli_abrt", c.clientAborts),
                              ("srv_abrt", c.serverAborts), ("qtime", c.queueTime), ("ctime", c.connectTime),
                              ("rtime", c.responseTime), ("ttime", c.totalTime)] {
            f[Substring(name)] = "\(value)"
        }
        f["status"] = b.statusText
        f["weight"] = "\(b.totalWeight)"
        f["uweight"] = "\(b.servers.filter { $0.isActive }.reduce(0) { $0 + $1.userWeight })"
        f["act"] = "\(b.activeServers)"
        f["bck"] = "\(b.backupServers)"
        f["chkdown"] = "\(b.servers.reduce(0) { $0 + $1.downTransitions })"
        f["lastchg"] = "\(b.servers.map(\.secondsSinceChange).min() ?? 0)"
        f["sid"] = "0"
        f["lbtot"] = "\(c.total)"
        f["algo"] = b.balance.rawValue
        for name in ["comp_in", "comp_out", "comp_byp", "comp_rsp", "wrew", "eint"] { f[Substring(name)] = "0" }
        return f
    }
}
