// `/metrics`: the Prometheus text exposition (format 0.0.4) of one StatsSnapshot, with the
// names, types, HELP texts and labels of haproxy 2.6's own exporter
// (`http-request use-service prometheus-exporter`), so that dashboards and alerts written
// for haproxy work unchanged. Families are written as haproxy writes them: one family at a
// time, every object under it; labels `proxy`, `server`, and `code` or `state` where
// haproxy has them. Values haproxy reports as NaN (check counters of a server that is not
// checked) are NaN here too. What haproxy has no name for is under `balancerd_discovery_*`.
//
// The parity test (Tests/IntegrationTests/MetricsParityTests.swift) runs the real haproxy
// exporter beside balancerd and checks every haproxy_* family here against it.

public enum PrometheusExposition {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    enum Kind: String { case gauge, counter }

    /// haproxy's type and HELP text of every haproxy_* family balancerd writes, copied from
    /// haproxy 2.6.12's output (its odd `http_responses_total` HELP included).
    static let haproxyFamilies: [String: (kind: Kind, help: String)] = [
        "frontend_current_sessions": (.gauge, "Number of current sessions on the frontend, backend or server"),
        "frontend_max_sessions": (.gauge, "Highest value of current sessions encountered since process started"),
        "frontend_limit_sessions": (.gauge, "Frontend/listener/server's maxconn, backend's fullconn"),
        "frontend_sessions_total": (.counter, "Total number of sessions since process started"),
        "frontend_bytes_in_total": (.counter, "Total number of request bytes since process started"),
        "frontend_bytes_out_total": (.counter, "Total number of response bytes since process started"),
        "frontend_requests_denied_total": (.counter, "Total number of denied requests since process started"),
        "frontend_request_errors_total": (.counter, "Total number of invalid requests since process started"),
        "frontend_status": (.gauge, "Current status of the service, per state label value."),
        "frontend_http_requests_total": (.counter, "Total number of HTTP requests processed by this object since the worker process started"),
        "frontend_http_responses_total": (.counter, "Total number of HTTP responses with status 100-199 returned by this object since the worker process started"),
        "frontend_connections_total": (.counter, "Total number of new connections accepted on this frontend since the worker process started"),
        "backend_current_sessions": (.gauge, "Number of current sessions on the frontend, backend or server"),
        "backend_max_sessions": (.gauge, "Highest value of current sessions encountered since process started"),
        "backend_sessions_total": (.counter, "Total number of sessions since process started"),
        "backend_bytes_in_total": (.counter, "Total number of request bytes since process started"),
        "backend_bytes_out_total": (.counter, "Total number of response bytes since process started"),
        "backend_requests_denied_total": (.counter, "Total number of denied requests since process started"),
        "backend_connection_errors_total": (.counter, "Total number of failed connections to server since the worker process started"),
        "backend_response_errors_total": (.counter, "Total number of invalid responses since the worker process started"),
        "backend_retry_warnings_total": (.counter, "Total number of server connection retries since the worker process started"),
        "backend_redispatch_warnings_total": (.counter, "Total number of server redispatches due to connection failures since the worker process started"),
        "backend_status": (.gauge, "Current status of the service, per state label value."),
        "backend_weight": (.gauge, "Server's effective weight, or sum of active servers' effective weights for a backend"),
        "backend_uweight": (.gauge, "Server's user weight, or sum of active servers' user weights for a backend"),
        "backend_active_servers": (.gauge, "Total number of active UP servers with a non-zero weight"),
        "backend_backup_servers": (.gauge, "Total number of backup UP servers with a non-zero weight"),
        "backend_check_up_down_total": (.counter, "Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started"),
        "backend_check_last_change_seconds": (.gauge, "How long ago the last server state changed, in seconds"),
        "backend_loadbalanced_total": (.counter, "Total number of requests routed by load balancing since the worker process started (ignores queue pop and stickiness)"),
        "backend_http_requests_total": (.counter, "Total number of HTTP requests processed by this object since the worker process started"),
        "backend_http_responses_total": (.counter, "Total number of HTTP responses with status 100-199 returned by this object since the worker process started"),
        "backend_client_aborts_total": (.counter, "Total number of requests or connections aborted by the client since the worker process started"),
        "backend_server_aborts_total": (.counter, "Total number of requests or connections aborted by the server since the worker process started"),
        "backend_queue_time_average_seconds": (.gauge, "Avg. queue time for last 1024 successful connections."),
        "backend_connect_time_average_seconds": (.gauge, "Avg. connect time for last 1024 successful connections."),
        "backend_response_time_average_seconds": (.gauge, "Avg. response time for last 1024 successful connections."),
        "backend_total_time_average_seconds": (.gauge, "Avg. total time for last 1024 successful connections."),
        "server_current_sessions": (.gauge, "Number of current sessions on the frontend, backend or server"),
        "server_max_sessions": (.gauge, "Highest value of current sessions encountered since process started"),
        "server_sessions_total": (.counter, "Total number of sessions since process started"),
        "server_bytes_in_total": (.counter, "Total number of request bytes since process started"),
        "server_bytes_out_total": (.counter, "Total number of response bytes since process started"),
        "server_connection_errors_total": (.counter, "Total number of failed connections to server since the worker process started"),
        "server_response_errors_total": (.counter, "Total number of invalid responses since the worker process started"),
        "server_retry_warnings_total": (.counter, "Total number of server connection retries since the worker process started"),
        "server_redispatch_warnings_total": (.counter, "Total number of server redispatches due to connection failures since the worker process started"),
        "server_status": (.gauge, "Current status of the service, per state label value."),
        "server_weight": (.gauge, "Server's effective weight, or sum of active servers' effective weights for a backend"),
        "server_uweight": (.gauge, "Server's user weight, or sum of active servers' user weights for a backend"),
        "server_check_failures_total": (.counter, "Total number of failed individual health checks per server/backend, since the worker process started"),
        "server_check_up_down_total": (.counter, "Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started"),
        "server_check_last_change_seconds": (.gauge, "How long ago the last server state changed, in seconds"),
        "server_downtime_seconds_total": (.counter, "Total time spent in DOWN state, for server or backend"),
        "server_loadbalanced_total": (.counter, "Total number of requests routed by load balancing since the worker process started (ignores queue pop and stickiness)"),
        "server_check_status": (.gauge, "Status of last health check, per state label value."),
        "server_check_code": (.gauge, "layer5-7 code, if available of the last health check."),
        "server_check_duration_seconds": (.gauge, "Total duration of the latest server health check, in seconds."),
        "server_http_responses_total": (.counter, "Total number of HTTP responses with status 100-199 returned by this object since the worker process started"),
        "server_client_aborts_total": (.counter, "Total number of requests or connections aborted by the client since the worker process started"),
        "server_server_aborts_total": (.counter, "Total number of requests or connections aborted by the server since the worker process started"),
        "server_queue_time_average_seconds": (.gauge, "Avg. queue time for last 1024 successful connections."),
        "server_connect_time_average_seconds": (.gauge, "Avg. connect time for last 1024 successful connections."),
        "server_response_time_average_seconds": (.gauge, "Avg. response time for last 1024 successful connections."),
        "server_total_time_average_seconds": (.gauge, "Avg. total time for last 1024 successful connections."),
    ]

    /// haproxy's `state` values of haproxy_server_status and haproxy_server_check_status.
    static let serverStates = ["DOWN", "UP", "MAINT", "DRAIN", "NOLB"]
    static let checkStates = ["HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP",
                              "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK"]
    static let codes = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]

    public static func render(_ snapshot: StatsSnapshot) -> String {
        var w = Writer()
        let frontends = snapshot.frontends
        let backends = snapshot.backends
        let servers = backends.flatMap { b in b.servers.map { ServerRow(backend: b, server: $0) } }

        // Frontends.
        w.family("frontend_current_sessions", frontends) { [.value(Double($0.counters.current))] }
        w.family("frontend_max_sessions", frontends) { [.value(Double($0.counters.maxCurrent))] }
        w.family("frontend_limit_sessions", frontends) { [.value(Double($0.sessionLimit))] }
        w.family("frontend_sessions_total", frontends) { [.value(Double($0.counters.total))] }
        w.family("frontend_bytes_in_total", frontends) { [.value(Double($0.counters.bytesIn))] }
        w.family("frontend_bytes_out_total", frontends) { [.value(Double($0.counters.bytesOut))] }
        w.family("frontend_requests_denied_total", frontends) { [.value(Double($0.counters.deniedRequests))] }
        w.family("frontend_request_errors_total", frontends) { [.value(Double($0.counters.requestErrors))] }
        // A frontend is UP while it listens (haproxy: DOWN only when stopped or full).
        w.family("frontend_status", frontends) { _ in [.labelled("state", "DOWN", 0), .labelled("state", "UP", 1)] }
        w.family("frontend_connections_total", frontends) { [.value(Double($0.counters.total))] }
        let httpFrontends = frontends.filter { $0.mode == .http }
        w.family("frontend_http_requests_total", httpFrontends) { [.value(Double($0.counters.httpRequests))] }
        w.family("frontend_http_responses_total", httpFrontends) { responses($0.counters) }

        // Backends.
        w.family("backend_current_sessions", backends) { [.value(Double($0.counters.current))] }
        w.family("backend_max_sessions", backends) { [.value(Double($0.counters.maxCurrent))] }
        w.family("backend_sessions_total", backends) { [.value(Double($0.counters.total))] }
        w.family("backend_bytes_in_total", backends) { [.value(Double($0.counters.bytesIn))] }
        w.family("backend_bytes_out_total", backends) { [.value(Double($0.counters.bytesOut))] }
        w.family("backend_requests_denied_total", backends) { [.value(Double($0.counters.deniedRequests))] }
        w.family("backend_connection_errors_total", backends) { [.value(Double($0.counters.connectionErrors))] }
        w.family("backend_response_errors_total", backends) { [.value(Double($0.counters.responseErrors))] }
        w.family("backend_retry_warnings_total", backends) { [.value(Double($0.counters.retries))] }
        w.family("backend_redispatch_warnings_total", backends) { [.value(Double($0.counters.redispatches))] }
        w.family("backend_status", backends) { b in
            [.labelled("state", "DOWN", b.statusText == "UP" ? 0 : 1), .labelled("state", "UP", b.statusText == "UP" ? 1 : 0)]
        }
        w.family("backend_weight", backends) { [.value(Double($0.totalWeight))] }
        w.family("backend_uweight", backends) { b in [.value(Double(b.servers.filter(\.isActive).reduce(0) { $0 + $1.userWeight }))] }
        w.family("backend_active_servers", backends) { [.value(Double($0.activeServers))] }
        w.family("backend_backup_servers", backends) { [.value(Double($0.backupServers))] }
        w.family("backend_check_up_down_total", backends) { b in [.value(Double(b.servers.reduce(0) { $0 + $1.downTransitions }))] }
        w.family("backend_check_last_change_seconds", backends) { b in [.value(Double(b.servers.map(\.secondsSinceChange).min() ?? 0))] }
        w.family("backend_loadbalanced_total", backends) { [.value(Double($0.counters.total))] }
        let httpBackends = backends.filter { $0.mode == .http }
        w.family("backend_http_requests_total", httpBackends) { [.value(Double($0.counters.httpRequests))] }
        w.family("backend_http_responses_total", httpBackends) { responses($0.counters) }
        w.family("backend_client_aborts_total", backends) { [.value(Double($0.counters.clientAborts))] }
        w.family("backend_server_aborts_total", backends) { [.value(Double($0.counters.serverAborts))] }
        w.family("backend_queue_time_average_seconds", backends) { [.seconds($0.counters.queueTime)] }
        w.family("backend_connect_time_average_seconds", backends) { [.seconds($0.counters.connectTime)] }
        w.family("backend_response_time_average_seconds", backends) { [.seconds($0.counters.responseTime)] }
        w.family("backend_total_time_average_seconds", backends) { [.seconds($0.counters.totalTime)] }

        // Servers.
        w.family("server_current_sessions", servers) { [.value(Double($0.server.counters.current))] }
        w.family("server_max_sessions", servers) { [.value(Double($0.server.counters.maxCurrent))] }
        w.family("server_sessions_total", servers) { [.value(Double($0.server.counters.total))] }
        w.family("server_bytes_in_total", servers) { [.value(Double($0.server.counters.bytesIn))] }
        w.family("server_bytes_out_total", servers) { [.value(Double($0.server.counters.bytesOut))] }
        w.family("server_connection_errors_total", servers) { [.value(Double($0.server.counters.connectionErrors))] }
        w.family("server_response_errors_total", servers) { [.value(Double($0.server.counters.responseErrors))] }
        w.family("server_retry_warnings_total", servers) { [.value(Double($0.server.counters.retries))] }
        w.family("server_redispatch_warnings_total", servers) { [.value(Double($0.server.counters.redispatches))] }
        w.family("server_status", servers) { row in
            let state = serverState(row.server)
            return serverStates.map { .labelled("state", $0, $0 == state ? 1 : 0) }
        }
        w.family("server_weight", servers) { [.value(Double($0.server.weight))] }
        w.family("server_uweight", servers) { [.value(Double($0.server.userWeight))] }
        w.family("server_check_failures_total", servers) { [.value($0.server.check == nil ? .nan : Double($0.server.checkFailures))] }
        w.family("server_check_up_down_total", servers) { [.value($0.server.check == nil ? .nan : Double($0.server.downTransitions))] }
        w.family("server_check_last_change_seconds", servers) { [.value(Double($0.server.secondsSinceChange))] }
        w.family("server_downtime_seconds_total", servers) { [.value($0.server.check == nil ? .nan : Double($0.server.downtimeSeconds))] }
        w.family("server_loadbalanced_total", servers) { [.value(Double($0.server.counters.total))] }
        // haproxy writes the check families only for servers that are checked.
        let checked = servers.filter { $0.server.check != nil }
        w.family("server_check_status", checked) { row in
            checkStates.map { .labelled("state", $0, $0 == row.server.checkStatus.text ? 1 : 0) }
        }
        w.family("server_check_code", checked) { [.value(Double($0.server.checkCode))] }
        w.family("server_check_duration_seconds", checked) { [.seconds(UInt64(max(0, $0.server.checkDurationMilliseconds)))] }
        let httpServers = servers.filter { $0.backend.mode == .http }
        w.family("server_http_responses_total", httpServers) { responses($0.server.counters) }
        w.family("server_client_aborts_total", servers) { [.value(Double($0.server.counters.clientAborts))] }
        w.family("server_server_aborts_total", servers) { [.value(Double($0.server.counters.serverAborts))] }
        w.family("server_queue_time_average_seconds", servers) { [.seconds($0.server.counters.queueTime)] }
        w.family("server_connect_time_average_seconds", servers) { [.seconds($0.server.counters.connectTime)] }
        w.family("server_response_time_average_seconds", servers) { [.seconds($0.server.counters.responseTime)] }
        w.family("server_total_time_average_seconds", servers) { [.seconds($0.server.counters.totalTime)] }

        // Discovery: per backend a source feeds.
        let discovered = backends.compactMap { b in b.discoveryStatus.map { DiscoveredRow(backend: b, status: $0) } }
        w.own("balancerd_discovery_info", .gauge, "The discovery source feeding a backend, in its source label (value always 1)", discovered) {
            [.labelled("source", $0.status.source, 1)]
        }
        w.own("balancerd_discovery_updates_total", .counter, "Whole server sets received from the discovery source since the process started", discovered) {
            [.value(Double($0.status.updates))]
        }
        w.own("balancerd_discovery_errors_total", .counter, "Failed queries of the discovery source since the process started", discovered) {
            [.value(Double($0.status.errors))]
        }
        w.own("balancerd_discovery_last_success_seconds", .gauge, "Unix time of the discovery source's last successful answer, 0 if none yet", discovered) {
            [.value(Double($0.status.lastSuccessMilliseconds / 1000))]
        }
        w.own("balancerd_discovery_table_generation", .gauge, "Generation of the backend's current server table (rises with every change applied)", discovered) {
            [.value(Double($0.backend.generation))]
        }
        w.own("balancerd_discovery_servers", .gauge, "Servers in the backend's current table", discovered) {
            [.value(Double($0.backend.servers.count))]
        }
        return w.text
    }

    /// haproxy's server state for haproxy_server_status: a transitional "UP 1/3" is still UP.
    static func serverState(_ server: ServerStats) -> String {
        switch server.admin {
        case .maint: return "MAINT"
        case .drain: return "DRAIN"
        case .ready: return server.checkedUp ? "UP" : "DOWN"
        }
    }

    private static func responses(_ counters: StatsCounters) -> [Sample] {
        codes.enumerated().map { .labelled("code", $1, Double(counters.responses[$0])) }
    }

    enum Sample {
        case value(Double)
        /// Milliseconds, written as seconds the way haproxy writes times.
        case seconds(UInt64)
        case labelled(String, String, Double)
    }

    struct Writer {
        var text = ""

        mutating func family<Row: ObjectLabels>(_ name: String, _ rows: [Row], _ samples: (Row) -> [Sample]) {
            guard let (kind, help) = PrometheusExposition.haproxyFamilies[name] else { preconditionFailure("no haproxy family \(name)") }
            write("haproxy_" + name, kind, help, rows, samples)
        }

        mutating func own<Row: ObjectLabels>(_ name: String, _ kind: Kind, _ help: String, _ rows: [Row], _ samples: (Row) -> [Sample]) {
            write(name, kind, help, rows, samples)
        }

        private mutating func write<Row: ObjectLabels>(_ name: String, _ kind: Kind, _ help: String, _ rows: [Row], _ samples: (Row) -> [Sample]) {
            guard !rows.isEmpty else { return }
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(kind.rawValue)\n"
            for row in rows {
                let labels = row.labels.map { "\($0)=\"\(escape($1))\"" }
                for sample in samples(row) {
                    switch sample {
                    case .value(let v):
                        text += "\(name){\(labels.joined(separator: ","))} \(format(v))\n"
                    case .seconds(let ms):
                        let fraction = String(ms % 1000)
                        let padded = String(repeating: "0", count: 3 - fraction.count) + fraction
                        text += "\(name){\(labels.joined(separator: ","))} \(ms / 1000).\(padded)000\n"
                    case .labelled(let key, let value, let v):
                        text += "\(name){\((labels + ["\(key)=\"\(escape(value))\""]).joined(separator: ","))} \(format(v))\n"
                    }
                }
            }
        }

        private func format(_ v: Double) -> String {
            if v.isNaN { return "NaN" }
            if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
            return "\(v)"
        }

        /// The exposition format escapes backslash, double quote and newline in label values.
        private func escape(_ value: String) -> String {
            var out = ""
            for c in value {
                switch c {
                case "\\": out += "\\\\"
                case "\"": out += "\\\""
                case "\n": out += "\\n"
                default: out.append(c)
                }
            }
            return out
        }
    }
}

/// The `proxy` and `server` labels of an object.
protocol ObjectLabels {
    var labels: [(String, String)] { get }
}

extension FrontendStats: ObjectLabels {
    var labels: [(String, String)] { [("proxy", name)] }
}

extension BackendStats: ObjectLabels {
    var labels: [(String, String)] { [("proxy", name)] }
}

struct ServerRow: ObjectLabels {
    var backend: BackendStats
    var server: ServerStats
    var labels: [(String, String)] { [("proxy", backend.name), ("server", server.name)] }
}

struct DiscoveredRow: ObjectLabels {
    var backend: BackendStats
    var status: DiscoveryReading
    var labels: [(String, String)] { [("proxy", backend.name)] }
}
