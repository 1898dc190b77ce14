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
            for bind in frontend.binds { out.append("    bind \(address(bind))") }
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
            out.append("    default_backend \(frontend.defaultBackend)")
            out.append("")
        }

        if let stats = configuration.stats {
            out.append("listen \(stats.name)")
            out.append("    mode http")
            out.append("    bind \(address(stats.bind))")
            out.append("    stats enable")
            out.append("    stats uri \(stats.uri)")
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
            if let discovery = backend.discovery {
                out.append("    # servers as \(describe(discovery)) listed them at export time")
            }
            for server in backend.servers { out.append("    " + serverLine(server)) }
            out.append("")
        }
        return out.joined(separator: "\n")
    }

    /// `server NAME ADDR:PORT weight W [backup] [check inter D rise N fall N]`
    public static func serverLine(_ server: ServerConfig) -> String {
        var line = "server \(server.name) \(address(server.address)) weight \(server.weight)"
        if server.backup { line += " backup" }
        if let check = server.check {
            line += " check inter \(DurationParser.format(check.interval)) rise \(check.rise) fall \(check.fall)"
        }
        return line
    }

    /// haproxy's address syntax: IPv6 with the `ipv6@` prefix, where the last colon starts
    /// the port (brackets are not understood by every haproxy version).
    static func address(_ hostPort: HostPort) -> String {
        hostPort.host.contains(":") ? "ipv6@\(hostPort.host):\(hostPort.port)" : "\(hostPort.host):\(hostPort.port)"
    }

    static func describe(_ discovery: DiscoveryConfig) -> String {
        switch discovery {
        case .consul(let url, let service, let tag, let datacenter, _):
            var text = "consul \(url) service \(service)"
            if let tag { text += " tag \(tag)" }
            if let datacenter { text += " dc \(datacenter)" }
            return text   // never the token
        case .etcd(let url, let prefix):
            return "etcd \(url) prefix \(prefix)"
        }
    }
}
