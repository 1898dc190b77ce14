// The stats page (`stats uri`), in the manner of haproxy's: one table per proxy, a row per
// server between the FRONTEND and BACKEND rows, the state in haproxy's colours. A pure
// function of one StatsSnapshot; every name that came from a configuration or a discovery
// source is escaped. It reloads itself every `refresh` with a meta tag (no script), and
// fits a 1366-pixel laptop screen: the columns are grouped as haproxy groups them, and
// only the ones balancerd has values for are shown.

public enum StatsHTML {
    public struct Options: Sendable {
        /// The page's path: forms post to it, links point into it.
        public var uri: String
        public var refreshSeconds: Int
        /// Show the admin forms (`stats admin`).
        public var admin: Bool
        /// `;st=` of the redirect after an admin action: what happened to it.
        public var actionStatus: String?

        public init(uri: String, refreshSeconds: Int, admin: Bool, actionStatus: String? = nil) {
            self.uri = uri
            self.refreshSeconds = refreshSeconds
            self.admin = admin
            self.actionStatus = actionStatus
        }
    }

    /// haproxy's row classes and colours (src/stats.c's style sheet): the server's state
    /// as a CSS class.
    public static func stateClass(_ server: ServerStats) -> String {
        let kind = server.isBackup ? "backup" : "active"
        switch server.admin {
        case .maint: return "maintain"
        case .drain: return "\(kind)_draining"
        case .ready: break
        }
        guard let check = server.check else { return "\(kind)_no_check" }
        if server.checkedUp {
            // Going down: failures counted from full health (health runs rise…rise+fall-1 while UP).
            let goingDown = server.checkHealth >= check.rise && server.checkHealth < check.rise + check.fall - 1
            return goingDown ? "\(kind)_going_down" : "\(kind)_up"
        }
        return server.checkHealth > 0 ? "\(kind)_going_up" : "\(kind)_down"
    }

    public static func render(_ snapshot: StatsSnapshot, _ options: Options) -> String {
        var h = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">
        <meta http-equiv="refresh" content="\(options.refreshSeconds)">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Statistics Report for balancerd</title>
        <style>
        body { font-family: DejaVu Sans, Arial, Helvetica, sans-serif; font-size: 12px; margin: 8px 12px; color: #000; background: #fff; }
        h1 { font-size: 18px; margin: 0 0 4px; color: #fff; background: #20409a; padding: 4px 8px; }
        .info { display: flex; gap: 24px; flex-wrap: wrap; margin: 6px 0 10px; }
        .info div { white-space: nowrap; }
        table.tbl { border-collapse: collapse; margin: 0 0 14px; width: 100%; }
        table.tbl th, table.tbl td { border: 1px solid #999; padding: 1px 5px; text-align: right; white-space: nowrap; }
        table.tbl th { background: #20409a; color: #fff; font-weight: normal; }
        table.tbl td.name, table.tbl th.name { text-align: left; }
        caption { text-align: left; font-size: 13px; padding: 2px 0; }
        caption .px { font-weight: bold; background: #b0b0ff; padding: 1px 8px; }
        caption .src { color: #333; margin-left: 12px; }
        tr.frontend td { background: #e8e8d0; }
        tr.backend td { background: #e8e8d0; font-weight: bold; }
        .active_up { background: #c0ffc0; }
        .active_going_down { background: #ffffa0; }
        .active_going_up { background: #ffd020; }
        .active_down { background: #ff9090; }
        .active_draining, .backup_draining { background: #20a0ff; }
        .active_no_check { background: #e0e0e0; }
        .backup_up { background: #b0d0ff; }
        .backup_going_down { background: #c060ff; }
        .backup_going_up { background: #ff80ff; }
        .backup_down { background: #ff9090; }
        .backup_no_check { background: #e0e0e0; }
        .maintain { background: #c07820; }
        .legend span { padding: 1px 6px; margin-right: 4px; border: 1px solid #999; }
        .status { padding: 4px 8px; margin: 4px 0 8px; border: 1px solid #999; background: #e0ffe0; }
        .status.bad { background: #ffd0d0; }
        form.admin { margin: -10px 0 14px; }
        </style></head><body>
        <h1>balancerd \(esc(snapshot.version)) — statistics report</h1>

        """
        h += "<div class=\"info\"><div>pid = \(snapshot.pid) (threads: \(snapshot.threads))</div>"
        h += "<div>uptime = \(duration(snapshot.uptimeSeconds))</div>"
        h += "<div>current conns = \(snapshot.currentConnections); maxconn = \(snapshot.maxConnections)</div>"
        h += "<div>table generation = \(snapshot.tableGeneration)</div>"
        h += "<div>refresh = \(options.refreshSeconds)s · <a href=\"\(esc(options.uri));csv\">CSV export</a> · <a href=\"/metrics\">Prometheus metrics</a></div></div>\n"
        h += "<div class=\"legend\"><span class=\"active_up\">UP</span><span class=\"active_going_down\">UP, going down</span>"
        h += "<span class=\"active_going_up\">DOWN, going up</span><span class=\"active_down\">DOWN</span>"
        h += "<span class=\"active_draining\">DRAIN</span><span class=\"maintain\">MAINT</span>"
        h += "<span class=\"backup_up\">backup UP</span><span class=\"active_no_check\">not checked</span></div>\n"
        if let status = options.actionStatus {
            let (text, bad) = actionStatusText(status)
            h += "<div class=\"status\(bad ? " bad" : "")\">\(esc(text))</div>\n"
        }
        for proxy in StatsProxy.all(snapshot) { h += table(proxy, options) }
        h += "</body></html>\n"
        return h
    }

    /// The texts of haproxy's `;st=` codes.
    static func actionStatusText(_ code: String) -> (String, Bool) {
        switch code {
        case "DONE": ("Action processed successfully.", false)
        case "PART": ("Action partially processed.", true)
        case "NONE": ("Nothing has changed.", false)
        case "ERRP": ("Action not processed because of invalid parameters.", true)
        case "EXCD": ("Action not processed: the buffer couldn't store all the data.", true)
        case "DENY": ("Action denied.", true)
        default: ("Unexpected result.", true)
        }
    }

    private static let headings = """
        <tr><th class="name" rowspan="2">Name</th><th rowspan="2">Status</th><th colspan="3">Sessions</th><th colspan="2">Bytes</th>\
        <th colspan="3">Errors</th><th colspan="2">Warnings</th><th colspan="3">Responses</th><th rowspan="2">Wght</th>\
        <th rowspan="2">Act</th><th rowspan="2">Bck</th><th colspan="2">Last check</th><th rowspan="2">Chk fail</th>\
        <th rowspan="2">Dwntme</th><th rowspan="2">LastChg</th><th rowspan="2">Avg ttime</th></tr>
        <tr><th>Cur</th><th>Max</th><th>Total</th><th>In</th><th>Out</th><th>Req</th><th>Conn</th><th>Resp</th>\
        <th>Retr</th><th>Redis</th><th>2xx</th><th>4xx</th><th>5xx</th><th>Status</th><th>Duration</th></tr>

        """

    private static func table(_ proxy: StatsProxy, _ options: Options) -> String {
        let mode = (proxy.backend?.mode ?? proxy.frontend?.mode)?.rawValue ?? ""
        var h = "<table class=\"tbl\" id=\"\(esc(proxy.name))\"><caption><span class=\"px\">\(esc(proxy.name))</span> \(mode)"
        if let backend = proxy.backend, let source = backend.discoveryStatus {
            h += "<span class=\"src\">servers from \(esc(source.source)); last update "
            h += source.lastSuccessMilliseconds > 0 ? "\(ago(source.lastSuccessMilliseconds)) ago" : "never"
            h += ", \(source.updates) set(s), \(source.errors) error(s), table generation \(backend.generation)"
            if let error = source.lastError, source.lastErrorMilliseconds > source.lastSuccessMilliseconds {
                h += "; failing: \(esc(error))"
            }
            h += "</span>"
        }
        h += "</caption>\n" + headings
        let admin = options.admin && proxy.backend != nil
        if let frontend = proxy.frontend {
            let c = frontend.counters
            h += "<tr class=\"frontend\"><td class=\"name\">Frontend</td><td>OPEN</td>"
            h += cells(c, mode: frontend.mode, requestErrors: "\(c.requestErrors)", backendErrors: false)
            h += "<td></td><td></td><td></td><td></td><td></td><td></td><td></td><td></td><td></td></tr>\n"
        }
        if let backend = proxy.backend {
            for server in backend.servers {
                let c = server.counters
                h += "<tr class=\"\(stateClass(server))\" data-server=\"\(esc(server.name))\"><td class=\"name\">"
                if admin { h += "<input type=\"checkbox\" name=\"s\" value=\"\(esc(server.name))\" form=\"admin-\(proxy.id)\"> " }
                h += "\(esc(server.name)) <small>\(esc(server.address.description))\(server.isBackup ? " backup" : "")</small></td>"
                h += "<td class=\"state\">\(esc(server.statusText))</td>"
                h += cells(c, mode: backend.mode, requestErrors: "", backendErrors: true)
                h += "<td>\(server.weight)\(server.userWeight != server.initialWeight ? "/\(server.userWeight)" : "")</td>"
                h += "<td>\(server.isBackup ? "-" : "Y")</td><td>\(server.isBackup ? "Y" : "-")</td>"
                if server.check != nil {
                    var last = server.checkStatus.text
                    if server.checkCode > 0 { last += " \(server.checkCode)" }
                    h += "<td>\(esc(last))</td><td>\(server.checkDurationMilliseconds >= 0 ? "\(server.checkDurationMilliseconds)ms" : "")</td>"
                    h += "<td>\(server.checkFailures)</td><td>\(duration(server.downtimeSeconds))</td>"
                } else {
                    h += "<td>no check</td><td></td><td></td><td></td>"
                }
                h += "<td>\(duration(server.secondsSinceChange))</td><td>\(c.totalTime)ms</td></tr>\n"
            }
            let c = backend.counters
            h += "<tr class=\"backend\"><td class=\"name\">Backend</td><td>\(backend.statusText)</td>"
            h += cells(c, mode: backend.mode, requestErrors: "", backendErrors: true)
            h += "<td>\(backend.totalWeight)</td><td>\(backend.activeServers)</td><td>\(backend.backupServers)</td>"
            h += "<td></td><td></td><td></td><td></td><td></td><td>\(c.totalTime)ms</td></tr>\n"
        }
        h += "</table>\n"
        if admin {
            h += """
            <form class="admin" id="admin-\(proxy.id)" method="post" action="\(esc(options.uri))">\
            <input type="hidden" name="b" value="\(esc(proxy.name))">\
            Choose the action to perform on the checked servers: <select name="action">\
            <option value="">Action...</option><option value="ready">Set state to READY</option>\
            <option value="drain">Set state to DRAIN</option><option value="maint">Set state to MAINT</option>\
            <option value="weight">Set weight to</option></select> \
            <input type="number" name="weight" min="0" max="256" size="4" placeholder="weight"> \
            <input type="submit" value="Apply"></form>

            """
        }
        return h
    }

    private static func cells(_ c: StatsCounters, mode: ProxyMode, requestErrors: String, backendErrors: Bool) -> String {
        var h = "<td>\(c.current)</td><td>\(c.maxCurrent)</td><td>\(c.total)</td>"
        h += "<td>\(bytes(c.bytesIn))</td><td>\(bytes(c.bytesOut))</td>"
        h += "<td>\(requestErrors)</td>"
        h += backendErrors ? "<td>\(c.connectionErrors)</td><td>\(c.responseErrors)</td><td>\(c.retries)</td><td>\(c.redispatches)</td>"
                           : "<td></td><td></td><td></td><td></td>"
        if mode == .http {
            h += "<td>\(c.responses[1])</td><td>\(c.responses[3])</td><td>\(c.responses[4])</td>"
        } else {
            h += "<td></td><td></td><td></td>"
        }
        return h
    }

    /// Escapes text for HTML content and attribute values.
    public static func esc(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    /// haproxy's human durations: "3d4h", "2h05m", "4m07s", "12s".
    static func duration(_ seconds: Int) -> String {
        let s = max(0, seconds)
        if s >= 86400 { return "\(s / 86400)d\((s % 86400) / 3600)h" }
        if s >= 3600 { return "\(s / 3600)h\(two((s % 3600) / 60))m" }
        if s >= 60 { return "\(s / 60)m\(two(s % 60))s" }
        return "\(s)s"
    }

    private static func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }

    private static func ago(_ wallMilliseconds: Int64) -> String {
        duration(Int((Posix.wallClockMilliseconds() - wallMilliseconds) / 1000))
    }

    /// Bytes as haproxy's page shows them: exact below 10 kB, then k, M, G.
    static func bytes(_ n: UInt64) -> String {
        switch n {
        case ..<10_000: "\(n)"
        case ..<10_000_000: "\(n / 1000)k"
        case ..<10_000_000_000: "\(n / 1_000_000)M"
        default: "\(n / 1_000_000_000)G"
        }
    }
}
