// What a program embedding the library relies on, tested in this process with a real
// Proxy on loopback: SIGPIPE is handled by `Proxy.start()`, and the access log goes to
// the sink given in `ProxyOptions`.
import Glibc
import Synchronization
import TestSupport
import XCTest
@testable import Balancer

final class ProxyEmbeddingTests: XCTestCase {
    /// A TCP proxy on 127.0.0.1:0 in front of `servers` (frontend and backend "main").
    private func makeProxy(servers: [NameStampServer], logSink: LogSink = .standardError) throws -> Proxy {
        let configuration = Configuration(
            frontends: [Frontend(name: "main", binds: [HostPort(host: "127.0.0.1", port: 0)], mode: .tcp, defaultBackend: "main")],
            backends: [BackendConfig(name: "main", mode: .tcp, servers: servers.map {
                ServerConfig(name: $0.name, address: HostPort(host: "127.0.0.1", port: $0.port))
            })])
        let proxy = try Proxy(configuration: configuration, options: ProxyOptions(threads: 2, quiet: false, logSink: logSink))
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

    func testAccessLogGoesToTheChosenSinkInWholeLines() throws {
        let servers = try startStampServers(["s1", "s2"])
        let batches = Mutex<[[UInt8]]>([])
        let sink = LogSink { raw in
            let bytes = Array(raw)
            batches.withLock { $0.append(bytes) }
        }
        let proxy = try makeProxy(servers: servers, logSink: sink)
        proxy.start()
        let port = try XCTUnwrap(proxy.boundAddresses.first).address.port

        var names: [String] = []
        for _ in 0..<6 { names.append(try fetchName(port: port)) }
        XCTAssertEqual(Set(names), ["s1", "s2"])

        let lines: () -> [String] = {
            batches.withLock { $0 }.flatMap { batch in
                String(decoding: batch, as: UTF8.self).split(separator: "\n").map(String.init)
            }
        }
        XCTAssertTrue(waitUntil(timeout: 5) { lines().count >= 6 }, "the sink got \(lines())")
        let got = batches.withLock { $0 }
        for batch in got {
            XCTAssertEqual(batch.last, UInt8(ascii: "\n"), "a batch must end with a whole line")
        }
        let logged = lines()
        XCTAssertEqual(logged.count, 6, "\(logged)")
        // haproxy's tcplog: `... main main/s1 ...`, one line per connection.
        XCTAssertEqual(logged.filter { $0.contains(" main main/s1 ") }.count, names.filter { $0 == "s1" }.count, "\(logged)")
        XCTAssertEqual(logged.filter { $0.contains(" main main/s2 ") }.count, names.filter { $0 == "s2" }.count, "\(logged)")
    }
}
