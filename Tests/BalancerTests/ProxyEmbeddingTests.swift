// What a program embedding the library relies on, tested in this process with a real
// Proxy on loopback: SIGPIPE is handled by `Proxy.start()`.
import Glibc
import TestSupport
import XCTest
@testable import Balancer

final class ProxyEmbeddingTests: XCTestCase {
    /// A TCP proxy on 127.0.0.1:0 in front of `servers` (frontend and backend "main").
    private func makeProxy(servers: [NameStampServer]) throws -> Proxy {
        let configuration = Configuration(
            frontends: [Frontend(name: "main", binds: [HostPort(host: "127.0.0.1", port: 0)], mode: .tcp, defaultBackend: "main")],
            backends: [BackendConfig(name: "main", mode: .tcp, servers: servers.map {
                ServerConfig(name: $0.name, address: HostPort(host: "127.0.0.1", port: $0.port))
            })])
        let proxy = try Proxy(configuration: configuration, options: ProxyOptions(threads: 2, quiet: false))
        addTeardownBlock { proxy.shutdown(grace: .zero) }
        return proxy
    }

    private func startStampServers(_ names: [String]) throws -> [NameStampServer] {
        try names.map { name in
            let server = try NameStampServer(name: name)
            addTeardownBlock { server.stop() }
            return server
        }
    }

    /// The current SIGPIPE action; `body` may change it, and it is put back afterwards.
    private func withSIGPIPE(_ body: () throws -> Void) rethrows {
        var saved = sigaction()
        XCTAssertEqual(sigaction(SIGPIPE, nil, &saved), 0)
        defer { _ = sigaction(SIGPIPE, &saved, nil) }
        try body()
    }

    private func currentSIGPIPEHandler() -> sighandler_t? {
        var current = sigaction()
        _ = sigaction(SIGPIPE, nil, &current)
        return current.__sigaction_handler.sa_handler
    }

    private func isIgnored(_ handler: sighandler_t?) -> Bool {
        guard let handler else { return false }   // nil is SIG_DFL
        return unsafeBitCast(handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
    }

    func testStartIgnoresSIGPIPEWhenItsActionIsTheDefault() throws {
        let servers = try startStampServers(["s1"])
        try withSIGPIPE {
            _ = signal(SIGPIPE, SIG_DFL)
            XCTAssertNil(currentSIGPIPEHandler(), "SIG_DFL")
            let proxy = try makeProxy(servers: servers)
            proxy.start()
            XCTAssertTrue(isIgnored(currentSIGPIPEHandler()), "after start, a splice to a vanished peer must not kill the process")
        }
    }

    func testStartKeepsAHandlerOfTheProgram() throws {
        let servers = try startStampServers(["s1"])
        try withSIGPIPE {
            let handler: @convention(c) (CInt) -> Void = { _ in }
            _ = signal(SIGPIPE, handler)
            let proxy = try makeProxy(servers: servers)
            proxy.start()
            let after = try XCTUnwrap(currentSIGPIPEHandler())
            XCTAssertEqual(unsafeBitCast(after, to: Int.self), unsafeBitCast(handler, to: Int.self))
        }
    }
}
