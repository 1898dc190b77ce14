// `--demo`: two tiny HTTP backends inside the daemon, so the first command of the
// README shows balancing on a machine with nothing else installed. They are deliberately
// simple blocking servers on their own threads (one connection at a time, answer, close):
// demo material, not part of the proxy.
import Balancer
import Glibc
import Synchronization

final class DemoBackends: Sendable {
    let addresses: [SocketAddress]
    private let listeners: [CInt]
    private let threads: Mutex<[LoopThread]>
    private let stopping = Atomic<Bool>(false)

    private init(addresses: [SocketAddress], listeners: [CInt]) {
        self.addresses = addresses
        self.listeners = listeners
        self.threads = Mutex([])
    }

    static func start(count: Int) throws -> DemoBackends {
        var fds: [CInt] = []
        var addresses: [SocketAddress] = []
        for _ in 0..<count {
            let fd = try Socket.listen(on: SocketAddress(numericHost: "127.0.0.1", port: 0)!, reusePort: false, backlog: 128)
            // Blocking accept on a dedicated thread is all a demo needs.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            fds.append(fd)
            addresses.append(try Posix.localAddress(fd))
        }
        let backends = DemoBackends(addresses: addresses, listeners: fds)
        for (i, fd) in fds.enumerated() {
            let name = "demo backend \(i + 1) (\(addresses[i]))"
            let thread = LoopThread(name: "demo-\(i + 1)") { backends.serve(fd: fd, name: name) }
            backends.threads.withLock { $0.append(thread) }
        }
        return backends
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

    private func serve(fd: CInt, name: String) {
        var request = [UInt8](repeating: 0, count: 4096)
        while !stopping.load(ordering: .relaxed) {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            // Read the request head (best effort), answer, close: one request per connection.
            var seen = 0
            while seen < request.count {
                let n = request.withUnsafeMutableBytes { read(client, $0.baseAddress! + seen, $0.count - seen) }
                if n <= 0 { break }
                seen += n
                if request[0..<seen].containsHeadEnd { break }
            }
            let body = "Hello from \(name)\n"
            let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            _ = response.withCString { send(client, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            close(client)
        }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        for fd in listeners { shutdown(fd, Int32(SHUT_RDWR)) }
        let threads = self.threads.withLock { $0 }
        for thread in threads { thread.join() }
        for fd in listeners { close(fd) }
    }
}
