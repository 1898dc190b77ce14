// The stats listener, served by a ControlHTTPServer (its own thread, one request per
// connection: for people, scripts and scrapers, not for load):
//   `stats uri` (/)         the stats page (StatsHTML), admin actions posted to it
//   /;csv, /?stats;csv      haproxy's `show stat` CSV (StatCSV)
//   /metrics                Prometheus, with haproxy's exporter's names (PrometheusExposition)
//   /healthz                balancerd's own liveness: every event loop answers
//   /haproxy.cfg            the export of the live table
// Who may see and act is StatsAdmin's business.

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

    /// `stats refresh` when not set: haproxy has none (no refresh); a page for watching
    /// servers come and go is more useful reloading itself.
    static let defaultRefreshSeconds = 5

    func answer(_ request: ControlHTTPServer.Request) -> ControlHTTPServer.Response {
        let path = request.path
        let query = request.target.firstIndex(of: "?").map { String(request.target[request.target.index(after: $0)...]) } ?? ""

        if path == "/healthz" {
            return proxy.loopsAnswer(within: .seconds(1))
                ? Self.text("200 OK", "ok: \(proxy.workerCount) event loop(s) answering\n")
                : Self.text("503 Service Unavailable", "event loops not answering\n")
        }
        if path == "/metrics" {
            guard request.method == .get || request.method == .head else { return Self.methodNotAllowed("GET, HEAD") }
            return .init(status: "200 OK", contentType: PrometheusExposition.contentType,
                         body: PrometheusExposition.render(snapshot()), fields: [("Cache-Control", "no-cache")])
        }

        // The page, its CSV and the live configuration: under `stats auth` when set.
        let isConfig = path == "/haproxy.cfg" || path == joined(config.uri, "haproxy.cfg")
        let isCSV = path == config.uri + ";csv" || (path == config.uri && query.hasSuffix(";csv"))
        let isPage = path == config.uri || (path.hasPrefix(config.uri + ";") && !isCSV)
        guard isConfig || isCSV || isPage else {
            return Self.text("404 Not Found", "not found: try \(config.uri), \(config.uri);csv, /metrics, /healthz or /haproxy.cfg\n")
        }
        switch StatsAdmin.viewAccess(request, config: config) {
        case .allowed: break
        case .needsCredentials, .denied: return Self.unauthorized()
        }
        if request.method == .post && isPage { return admin(request) }
        guard request.method == .get || request.method == .head else {
            return Self.methodNotAllowed(isPage && config.admin ? "GET, HEAD, POST" : "GET, HEAD")
        }
        if isConfig {
            let text = HAProxyWriter.write(proxy.liveConfiguration(), header: [
                "haproxy.cfg of the live table, exported by balancerd \(version) (table generation \(proxy.generation))",
            ])
            return Self.text("200 OK", text + "\n")
        }
        if isCSV {
            return Self.text("200 OK", StatCSV.text(snapshot()))
        }
        // `;st=DONE` after an admin action, as haproxy's redirect carries it.
        let status = path.split(separator: ";").dropFirst().first { $0.hasPrefix("st=") }.map { String($0.dropFirst(3)) }
        let refresh = config.refresh.map { max(1, Int($0.components.seconds)) } ?? Self.defaultRefreshSeconds
        let options = StatsHTML.Options(uri: config.uri, refreshSeconds: refresh, admin: config.admin, actionStatus: status)
        return .init(status: "200 OK", contentType: "text/html; charset=utf-8", body: StatsHTML.render(snapshot(), options),
                     fields: [("Cache-Control", "no-cache")])
    }

    private func admin(_ request: ControlHTTPServer.Request) -> ControlHTTPServer.Response {
        let code: String
        switch StatsAdmin.adminAccess(request, config: config) {
        case .needsCredentials: return Self.unauthorized()
        case .denied: code = "DENY"
        case .allowed:
            if let action = StatsAdmin.parseForm(request.body) {
                code = StatsAdmin.apply(action, to: proxy)
            } else {
                code = "ERRP"
            }
        }
        // haproxy answers a POST with 303 to the page, the outcome in `;st=`.
        let location = config.uri + ";st=" + code
        return .init(status: "303 See Other", contentType: "text/plain; charset=utf-8", body: "see \(location)\n",
                     fields: [("Location", location), ("Cache-Control", "no-cache")])
    }

    private func snapshot() -> StatsSnapshot {
        proxy.statsSnapshot(version: version)
    }

    private static func text(_ status: String, _ body: String, fields: [(name: String, value: String)] = []) -> ControlHTTPServer.Response {
        .init(status: status, contentType: "text/plain; charset=utf-8", body: body, fields: [("Cache-Control", "no-cache")] + fields)
    }

    private static func methodNotAllowed(_ allow: String) -> ControlHTTPServer.Response {
        text("405 Method Not Allowed", "\(allow) only\n", fields: [("Allow", allow)])
    }

    /// haproxy's answer under `stats auth`: 401 with its realm.
    private static func unauthorized() -> ControlHTTPServer.Response {
        text("401 Unauthorized", "401 Unauthorized\nYou need a valid user and password to access this content.\n",
             fields: [("WWW-Authenticate", "Basic realm=\"HAProxy Statistics\"")])
    }

    private func joined(_ base: String, _ leaf: String) -> String {
        base.hasSuffix("/") ? base + leaf : base + "/" + leaf
    }
}
