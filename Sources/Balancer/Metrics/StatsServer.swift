// The stats listener: a small HTTP/1.1 server on its own thread (control plane, never a
// loop thread) serving the stats page and `/haproxy.cfg`, the export of the live table.
// One request per connection, answered and closed: it is for people and scripts, not for
// load.
import Synchronization

public final class StatsServer: @unchecked Sendable {
    private let proxy: Proxy
    private let config: StatsConfig
    private let listener: CInt
    public let address: SocketAddress
    private let running = Atomic<Bool>(true)
    private var thread: LoopThread?
    private let startedAt = Posix.monotonicNanoseconds()
    private let version: String

    public init(proxy: Proxy, config: StatsConfig, version: String) throws {
        self.proxy = proxy
        self.config = config
        self.version = version
        let address = try SocketAddress.resolve(host: config.bind.host, port: config.bind.port)
        listener = try Socket.listen(on: address, reusePort: false, backlog: 64)
        self.address = try Posix.localAddress(listener)
    }

    public func start() {
        thread = LoopThread(name: "balancerd-stats") { [self] in self.run() }
    }

    public func stop() {
        running.store(false, ordering: .relaxed)
        thread?.join()
        Posix.close(listener)
    }

    private func run() {
        while running.load(ordering: .relaxed) {
            var requests = [Posix.PollRequest(fd: listener, events: .readable)]
            guard (try? Posix.poll(&requests, timeoutMilliseconds: 200)) ?? 0 > 0 else { continue }
            while case .processed(let (client, _))? = try? Posix.accept(listener) {
                serve(client)
                Posix.close(client)
            }
        }
    }

    /// Reads one request head (2 s at most), answers, returns.
    private func serve(_ fd: CInt) {
        var head: [UInt8] = []
        let deadline = Posix.monotonicNanoseconds() + 2_000_000_000
        var chunk = [UInt8](repeating: 0, count: 4096)
        while head.count < 16 * 1024 && !head.containsHeadEnd {
            let remaining = Int((deadline - Posix.monotonicNanoseconds()) / 1_000_000)
            guard remaining > 0 else { return }
            var requests = [Posix.PollRequest(fd: fd, events: .readable)]
            guard (try? Posix.poll(&requests, timeoutMilliseconds: remaining)) ?? 0 > 0 else { return }
            let result = chunk.withUnsafeMutableBytes { try? Posix.read(fd, $0) }
            guard case .processed(let n)? = result, n > 0 else { return }
            head.append(contentsOf: chunk[0..<n])
        }
        let line = String(decoding: head.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count == 3, parts[0] == "GET" || parts[0] == "HEAD" else {
            respond(fd, status: "405 Method Not Allowed", type: "text/plain", body: "GET only\n")
            return
        }
        let path = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        if path == "/haproxy.cfg" || path == joined(config.uri, "haproxy.cfg") {
            let text = HAProxyWriter.write(proxy.liveConfiguration(), header: [
                "haproxy.cfg of the live table, exported by balancerd \(version) (table generation \(proxy.generation))",
            ])
            respond(fd, status: "200 OK", type: "text/plain; charset=utf-8", body: text + "\n", headOnly: parts[0] == "HEAD")
        } else if path == config.uri {
            respond(fd, status: "200 OK", type: "text/plain; charset=utf-8", body: page(), headOnly: parts[0] == "HEAD")
        } else {
            respond(fd, status: "404 Not Found", type: "text/plain", body: "not found: try \(config.uri) or /haproxy.cfg\n")
        }
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

    private func respond(_ fd: CInt, status: String, type: String, body: String, headOnly: Bool = false) {
        let bodyBytes = Array(body.utf8)
        var bytes = Array("HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(bodyBytes.count)\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n".utf8)
        if !headOnly { bytes += bodyBytes }
        var offset = 0
        let deadline = Posix.monotonicNanoseconds() + 2_000_000_000
        while offset < bytes.count && Posix.monotonicNanoseconds() < deadline {
            let result = bytes[offset...].withUnsafeBytes { try? Posix.write(fd, $0) }
            switch result {
            case .processed(let n)?: offset += n
            case .wouldBlock?:
                var requests = [Posix.PollRequest(fd: fd, events: .writable)]
                _ = try? Posix.poll(&requests, timeoutMilliseconds: 100)
            case nil: return
            }
        }
    }
}
