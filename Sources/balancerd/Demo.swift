// `--demo`: two tiny HTTP backends inside the daemon, so the first command of the
// README shows balancing on a machine with nothing else installed. Each is a
// ControlHTTPServer on a thread of its own that answers every request with its name:
// demo material, not part of the proxy.
import Balancer

final class DemoBackends: Sendable {
    private let servers: [ControlHTTPServer]
    var addresses: [SocketAddress] { servers.map(\.address) }

    private init(servers: [ControlHTTPServer]) {
        self.servers = servers
    }

    static func start(count: Int) throws -> DemoBackends {
        let servers = try (1...count).map { i in
            try ControlHTTPServer(listeningOn: SocketAddress(numericHost: "127.0.0.1", port: 0)!, threadName: "demo-\(i)")
        }
        for (i, server) in servers.enumerated() {
            let response = ControlHTTPServer.Response(
                status: "200 OK", contentType: "text/plain", body: "Hello from demo backend \(i + 1) (\(server.address))\n")
            server.start { _ in response }
        }
        return DemoBackends(servers: servers)
    }

    /// Puts the demo servers into the configuration: `--listen` (or 127.0.0.1:8080, a
    /// port that needs no root) balanced across the demo servers.
    static func configure(_ configuration: Configuration, servers: [SocketAddress], listenGiven: Bool) -> Configuration {
        var configuration = configuration
        if configuration.frontends.isEmpty {
            configuration.frontends = [Frontend(name: "main", binds: [HostPort(host: "127.0.0.1", port: 8080)], mode: .tcp, defaultBackend: "main")]
        }
        if !listenGiven {
            configuration.frontends[0].binds = [HostPort(host: "127.0.0.1", port: 8080)]
        }
        let backendName = configuration.frontends[0].defaultBackend
        let demoServers = servers.enumerated().map { i, address in
            ServerConfig(name: "demo\(i + 1)", address: HostPort(host: address.host, port: address.port))
        }
        if let index = configuration.backends.firstIndex(where: { $0.name == backendName }) {
            configuration.backends[index].servers += demoServers
        } else {
            configuration.backends.append(BackendConfig(name: backendName, mode: configuration.frontends[0].mode, servers: demoServers))
        }
        return configuration
    }

    func stop() {
        for server in servers { server.stop() }
    }
}
