// The stats listener: the stats page and `/haproxy.cfg`, the export of the live table,
// served by a ControlHTTPServer (its own thread, one request per connection: for people
// and scripts, not for load).

public final class StatsServer: Sendable {
    private let server: ControlHTTPServer
    private let pages: StatsPages

    public var address: SocketAddress { server.address }

    public init(proxy: Proxy, config: StatsConfig, version: String) throws {
        let address = try SocketAddress.resolve(host: config.bind.host, port: config.bind.port)
        server = try ControlHTTPServer(listeningOn: address, threadName: "balancerd-stats")
        pages = StatsPages(proxy: proxy, config: config, version: version)
    }

    public func start() {
        server.start { [pages] in pages.answer($0) }
    }

    public func stop() {
        server.stop()
    }
}

/// What the stats listener answers; runs on its thread.
private struct StatsPages: Sendable {
    let proxy: Proxy
    let config: StatsConfig
    let version: String
    let startedAt = Posix.monotonicNanoseconds()

    func answer(_ request: ControlHTTPServer.Request) -> ControlHTTPServer.Response {
        guard request.method == .get || request.method == .head else {
            return Self.text("405 Method Not Allowed", "GET only\n", fields: [("Allow", "GET, HEAD")])
        }
        let path = request.path
        if path == "/haproxy.cfg" || path == joined(config.uri, "haproxy.cfg") {
            let text = HAProxyWriter.write(proxy.liveConfiguration(), header: [
                "haproxy.cfg of the live table, exported by balancerd \(version) (table generation \(proxy.generation))",
            ])
            return Self.text("200 OK", text + "\n")
        } else if path == config.uri {
            return Self.text("200 OK", page())
        } else {
            return Self.text("404 Not Found", "not found: try \(config.uri) or /haproxy.cfg\n")
        }
    }

    private static func text(_ status: String, _ body: String, fields: [(name: String, value: String)] = []) -> ControlHTTPServer.Response {
        .init(status: status, contentType: "text/plain; charset=utf-8", body: body, fields: [("Cache-Control", "no-cache")] + fields)
    }

    private func joined(_ base: String, _ leaf: String) -> String {
        base.hasSuffix("/") ? base + leaf : base + "/" + leaf
    }

    /// A plain-text summary; the full stats page is its own piece of work.
    private func page() -> String {
        var lines: [String] = []
        let uptime = (Posix.monotonicNanoseconds() - startedAt) / 1_000_000_000
        lines.append("balancerd \(version)  uptime \(uptime)s  table generation \(proxy.generation)  active connections \(proxy.activeConnections)")
        lines.append("")
        for frontend in proxy.frontends {
            lines.append("frontend \(frontend.config.name) (\(frontend.config.mode.rawValue))  current \(frontend.current.load(ordering: .relaxed))  total \(frontend.total.load(ordering: .relaxed))")
        }
        let now = Posix.monotonicNanoseconds()
        for (index, table) in proxy.tables.enumerated() {
            let counters = proxy.backendCounters[index]
            lines.append("")
            lines.append("backend \(table.name)  generation \(table.generation)  current \(counters.current.load(ordering: .relaxed))  total \(counters.total.load(ordering: .relaxed))")
            for server in table.servers {
                let health = server.health
                let state: String
                if !health.checkedUp.load(ordering: .relaxed) {
                    state = "DOWN"
                } else if !health.isUsable(now: now) {
                    state = "UP (passed over after a failed connect)"
                } else {
                    state = "UP"
                }
                lines.append("  server \(server.name) \(server.address) weight \(server.weight)\(server.isBackup ? " backup" : "")  \(state)  current \(health.current.load(ordering: .relaxed))  total \(health.total.load(ordering: .relaxed))  failed-connects \(health.failedConnects.load(ordering: .relaxed))")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
