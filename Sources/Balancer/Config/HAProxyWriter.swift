// Writes a Configuration as a haproxy.cfg that real haproxy (2.6) accepts and that
// behaves like balancerd: the export behind `balancerd export-haproxy` and the stats
// listener's `/haproxy.cfg`. The inverse of HAProxyParser for the supported subset:
// parse(write(c)) == c for any configuration with one set of defaults (tested as a
// property over generated configurations).
//
// Where haproxy's defaults differ from balancerd's, the file says so explicitly:
// balancerd redispatches by default and haproxy does not, so `option redispatch` (or
// `no option redispatch`) is always written; `retries` too.
public enum HAProxyWriter {
    /// `header` lines become comments at the top (what produced the file, and when).
    public static func write(_ configuration: Configuration, header: [String] = []) -> String {
        var out: [String] = header.map { "# \($0)" }
        if !out.isEmpty { out.append("") }

        out.append("global")
        // Only a maxconn the user set: a derived one belongs to this machine's descriptor
        // limit, and haproxy derives its own from the machine it runs on.
        if let maxconn = configuration.global.maxConnections { out.append("    maxconn \(maxconn)") }
        if let threads = configuration.global.threads { out.append("    nbthread \(threads)") }
        if let socket = configuration.global.statsSocket {
            var line = "    stats socket \(word(socket.path))"
            if let mode = socket.mode { line += " mode \(String(mode, radix: 8))" }
            line += " level \(socket.level.rawValue)"
            if socket.exposeFDListeners { line += " expose-fd listeners" }
            out.append(line)
        }
        out.append("")

        // One defaults section, from the first frontend and the first backend; sections
        // then state only what differs from it.
        let front = configuration.frontends.first
        let back = configuration.backends.first
        let defaultMode = front?.mode ?? back?.mode ?? .tcp
        var defaults = Timeouts()
        if let front {
            defaults.client = front.timeouts.client
            defaults.httpRequest = front.timeouts.httpRequest
            defaults.httpKeepAlive = front.timeouts.httpKeepAlive
            defaults.connect = front.timeouts.connect
            defaults.server = front.timeouts.server
        }
        if let back {
            defaults.connect = back.timeouts.connect
            defaults.server = back.timeouts.server
        }
        let defaultRetries = back?.retries ?? 3
        let defaultRedispatch = back?.redispatch ?? true
        out.append("defaults")
        out.append("    mode \(defaultMode.rawValue)")
        out.append("    timeout connect \(DurationParser.format(defaults.connect))")
        out.append("    timeout client \(DurationParser.format(defaults.client))")
        out.append("    timeout server \(DurationParser.format(defaults.server))")
        out.append("    timeout http-request \(DurationParser.format(defaults.httpRequest))")
        out.append("    timeout http-keep-alive \(DurationParser.format(defaults.httpKeepAlive))")
        out.append("    retries \(defaultRetries)")
        out.append(defaultRedispatch ? "    option redispatch" : "    no option redispatch")
        out.append("")

        for frontend in configuration.frontends {
            out.append("frontend \(frontend.name)")
            if frontend.mode != defaultMode { out.append("    mode \(frontend.mode.rawValue)") }
            for bind in frontend.binds {
                if let tls = frontend.tls[bind] {
                    out.append("    bind \(address(bind)) \(HAProxyTLSSyntax.bindParameters(tls))")
                } else {
                    out.append("    bind \(address(bind))")
                }
            }
            if frontend.timeouts.client != defaults.client {
                out.append("    timeout client \(DurationParser.format(frontend.timeouts.client))")
            }
            if frontend.timeouts.httpRequest != defaults.httpRequest {
                out.append("    timeout http-request \(DurationParser.format(frontend.timeouts.httpRequest))")
            }
            if frontend.timeouts.httpKeepAlive != defaults.httpKeepAlive {
                out.append("    timeout http-keep-alive \(DurationParser.format(frontend.timeouts.httpKeepAlive))")
            }
            if frontend.forwardFor { out.append("    option forwardfor") }
            out += errorFileLines(frontend.errorFiles)
            out += routingLines(frontend.routing)
            out.append("    default_backend \(frontend.defaultBackend)")
            out.append("")
        }

        if let stats = configuration.stats {
            out.append("listen \(stats.name)")
            out.append("    mode http")
            out.append("    bind \(address(stats.bind))")
            out.append("    stats enable")
            out.append("    stats uri \(stats.uri)")
            if let refresh = stats.refresh { out.append("    stats refresh \(DurationParser.format(refresh))") }
            for credential in stats.credentials { out.append("    stats auth \(word("\(credential.user):\(credential.password)"))") }
            if stats.admin {
                // balancerd's rule for admin actions: loopback clients, or any client that
                // authenticates. haproxy asks for the credentials on the whole page once
                // `stats auth` is set, so `TRUE` there; otherwise loopback only.
                out.append(stats.credentials.isEmpty ? "    stats admin if LOCALHOST" : "    stats admin if TRUE")
            }
            out.append("")
        }

        for backend in configuration.backends {
            out.append("backend \(backend.name)")
            if backend.mode != defaultMode { out.append("    mode \(backend.mode.rawValue)") }
            out.append("    balance \(backend.balance.rawValue)")
            if backend.timeouts.connect != defaults.connect {
                out.append("    timeout connect \(DurationParser.format(backend.timeouts.connect))")
            }
            if backend.timeouts.server != defaults.server {
                out.append("    timeout server \(DurationParser.format(backend.timeouts.server))")
            }
            if backend.retries != defaultRetries { out.append("    retries \(backend.retries)") }
            if backend.redispatch != defaultRedispatch {
                out.append(backend.redispatch ? "    option redispatch" : "    no option redispatch")
            }
            if backend.allBackups { out.append("    option allbackups") }
            out += healthCheckLines(backend.healthCheck)
            out += errorFileLines(backend.errorFiles)
            if let discovery = backend.discovery {
                out.append("    # servers as \(describe(discovery)) listed them at export time")
            }
            for server in backend.servers {
                // A server without check parameters of its own is checked with the
                // backend's defaults (discovered servers, `--check-interval`): in haproxy
                // that is a `check` on its line.
                var effective = server
                if effective.check == nil { effective.check = backend.defaultCheck }
                out.append("    " + serverLine(effective))
            }
            out.append("")
        }
        return out.joined(separator: "\n")
    }

    /// `server NAME ADDR:PORT weight W [backup] [check inter D [fastinter D] [downinter D]
    /// rise N fall N] [slowstart D] [ssl verify none|required [ca-file F] [sni str(NAME)]]
    /// [no-check-ssl | check-ssl [verify ... ca-file F]] [check-sni NAME]`
    public static func serverLine(_ server: ServerConfig) -> String {
        var line = "server \(server.name) \(address(server.address)) weight \(server.weight)"
        if server.backup { line += " backup" }
        if let check = server.check {
            line += " check inter \(DurationParser.format(check.interval))"
            if let fast = check.fastInterval { line += " fastinter \(DurationParser.format(fast))" }
            if let down = check.downInterval { line += " downinter \(DurationParser.format(down))" }
            line += " rise \(check.rise) fall \(check.fall)"
        }
        if let slowStart = server.slowStart { line += " slowstart \(DurationParser.format(slowStart))" }
        if let tls = server.tls {
            line += " ssl verify \(tls.verify.rawValue)"
            if let caFile = tls.caFile { line += " ca-file \(word(caFile))" }
            if let name = tls.serverName { line += " sni str(\(name))" }
        }
        // haproxy's checks follow `ssl` unless told otherwise; one verify/ca-file per server.
        switch (server.tls, server.checkTLS) {
        case (_?, nil):
            line += " no-check-ssl"
        case (nil, let check?):
            line += " check-ssl verify \(check.verify.rawValue)"
            if let caFile = check.caFile { line += " ca-file \(word(caFile))" }
        default:
            break
        }
        if let name = server.checkTLS?.serverName { line += " check-sni \(word(name))" }
        return line
    }

    /// `option httpchk METHOD URI VERSION`, then `http-check send` for headers and body
    /// (haproxy 2.6 warns about headers hidden in the version string), `http-check
    /// expect` and `timeout check`.
    static func healthCheckLines(_ check: BackendHealthCheck) -> [String] {
        var lines: [String] = []
        if let http = check.http {
            lines.append("    option httpchk \(word(http.method)) \(word(http.uri)) \(word(http.version))")
            var send = http.headers.map { "hdr \(word($0.name)) \(word($0.value))" }
            if let body = http.body { send.append("body \(word(body))") }
            if !send.isEmpty { lines.append("    http-check send " + send.joined(separator: " ")) }
            switch http.expect {
            case nil:
                break
            case .status(let ranges, let negated):
                let codes = ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
                lines.append("    http-check expect \(negated ? "! " : "")status \(codes.joined(separator: ","))")
            case .statusRegex(let pattern, let negated):
                lines.append("    http-check expect \(negated ? "! " : "")rstatus \(word(pattern))")
            }
        }
        if let timeout = check.timeout { lines.append("    timeout check \(DurationParser.format(timeout))") }
        return lines
    }

    static func errorFileLines(_ files: [ErrorFile]) -> [String] {
        files.map { "    errorfile \($0.status) \(word($0.path))" }
    }

    /// A word as haproxy's tokenizer reads it back: as is when it has nothing special,
    /// else in double quotes with `\`, `"`, `$` and control characters escaped.
    /// `acl`, `http-request` and `use_backend` lines, in the order they are evaluated.
    static func routingLines(_ routing: FrontendRouting) -> [String] {
        var out: [String] = []
        for acl in routing.acls {
            for test in acl.tests { out.append("    acl \(acl.name) \(aclTest(test))") }
        }
        for rule in routing.requestRules {
            var line = "    http-request "
            switch rule.action {
            case .deny(let status):
                line += status == 403 ? "deny" : "deny deny_status \(status)"
            case .redirect(let r):
                line += "redirect \(r.kind.rawValue) \(word(r.value)) code \(r.code)"
                if r.dropQuery { line += " drop-query" }
            case .setHeader(let name, let value):
                line += "set-header \(name) \(word(value))"
            case .deleteHeader(let name):
                line += "del-header \(name)"
            case .replacePath(let p):
                line += "replace-path \(word(p.regex)) \(word(p.replacement))"
            }
            if let condition = rule.condition { line += " \(aclCondition(condition))" }
            out.append(line)
        }
        for rule in routing.useBackend {
            var line = "    use_backend \(rule.backend)"
            if let condition = rule.condition { line += " \(aclCondition(condition))" }
            out.append(line)
        }
        return out
    }

    static func aclTest(_ test: ACLTest) -> String {
        var parts = [test.criterion.rawValue]
        if test.ignoreCase { parts.append("-i") }
        if let match = test.explicitMatch { parts += ["-m", match.rawValue] }
        if test.values.contains(where: { $0.hasPrefix("-") }) { parts.append("--") }
        parts += test.values.map(word)
        return parts.joined(separator: " ")
    }

    static func aclCondition(_ condition: ACLCondition) -> String {
        let alternatives = condition.alternatives.map { terms in
            terms.map { term in
                let operand = switch term.operand {
                case .named(let name): name
                case .anonymous(let test): "{ \(aclTest(test)) }"
                }
                return (term.negated ? "!" : "") + operand
            }.joined(separator: " ")
        }
        return (condition.unless ? "unless " : "if ") + alternatives.joined(separator: " || ")
    }

    static func word(_ text: String) -> String {
        let plain = !text.isEmpty && text.unicodeScalars.allSatisfy { scalar in
            scalar.value > 0x20 && scalar.value < 0x7F && !"\"'\\#$".unicodeScalars.contains(scalar)
        }
        if plain { return text }
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "$": quoted += "\\$"
            case "\r": quoted += "\\r"
            case "\n": quoted += "\\n"
            case "\t": quoted += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = Array("0123456789abcdef")
                quoted += "\\x\(hex[Int(scalar.value >> 4)])\(hex[Int(scalar.value & 0xF)])"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    /// haproxy's address syntax: IPv6 with the `ipv6@` prefix, where the last colon starts
    /// the port (brackets are not understood by every haproxy version).
    static func address(_ hostPort: HostPort) -> String {
        hostPort.host.contains(":") ? "ipv6@\(hostPort.host):\(hostPort.port)" : "\(hostPort.host):\(hostPort.port)"
    }

    static func describe(_ discovery: DiscoveryConfig) -> String {
        switch discovery {
        case .consul(let url, let service, let tag, let datacenter, _, _):
            var text = "consul \(url) service \(service)"
            if let tag { text += " tag \(tag)" }
            if let datacenter { text += " dc \(datacenter)" }
            return text   // never the token
        case .etcd(let url, let prefix):
            return "etcd \(url) prefix \(prefix)"
        }
    }
}
