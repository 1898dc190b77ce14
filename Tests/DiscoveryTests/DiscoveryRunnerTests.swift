// DiscoveryRunner as an embedder uses it: a Proxy running in this process, a discovery
// source attached to it, and connections through the proxy reaching what the source
// published. Real parts: the Consul test server and name-stamping backends on loopback.
import Balancer
import Discovery
import Synchronization
import TestSupport
import XCTest

final class DiscoveryRunnerTests: XCTestCase {
    /// A TCP proxy on 127.0.0.1:0 whose backend "main" has no servers and follows `discovery`.
    private func startProxy(discovery: DiscoveryConfig) throws -> (Proxy, UInt16) {
        let configuration = Configuration(
            frontends: [Frontend(name: "main", binds: [HostPort(host: "127.0.0.1", port: 0)], mode: .tcp, defaultBackend: "main")],
            backends: [BackendConfig(name: "main", mode: .tcp, discovery: discovery)])
        let proxy = try Proxy(configuration: configuration, options: ProxyOptions(threads: 1, quiet: true))
        proxy.start()
        addTeardownBlock { proxy.shutdown(grace: .zero) }
        return (proxy, try XCTUnwrap(proxy.boundAddresses.first).address.port)
    }

    private final class Lines: Sendable {
        let lines = Mutex<[String]>([])
        var all: [String] { lines.withLock { $0 } }
        func add(_ line: String) { lines.withLock { $0.append(line) } }
    }

    func testSourcesOfTheConfigurationFeedARunningProxy() throws {
        let consul = try ConsulTestServer()
        let s1 = try NameStampServer(name: "s1")
        let s2 = try NameStampServer(name: "s2")
        addTeardownBlock { s1.stop(); s2.stop() }
        try consul.register(id: "web-1", port: Int(s1.port), address: "127.0.0.1")

        let (proxy, port) = try startProxy(discovery: .consul(url: consul.url, service: "web", tag: nil, datacenter: nil, token: nil))
        let log = Lines()
        let runner = try DiscoveryRunner(configuration: proxy.configuration, log: { log.add($0) })
        XCTAssertFalse(runner.isEmpty)
        runner.start(publishingInto: proxy)
        // The source stops before the Consul server does, so it never reports it gone.
        addTeardownBlock { runner.stop(); withExtendedLifetime(consul) {} }

        XCTAssertEqual(runner.waitForFirstAnswers(timeout: .seconds(5)), [], "\(log.all)")
        XCTAssertEqual(try fetchName(port: port), "s1")
        XCTAssertTrue(log.all.contains { $0.contains("backend main updated from consul") && $0.contains("1 server(s)") }, "\(log.all)")

        // A new instance reaches the running proxy without any call from the embedder.
        try consul.register(id: "web-2", port: Int(s2.port), address: "127.0.0.1")
        XCTAssertTrue(waitUntil(timeout: 5) { proxy.tables[0].servers.count == 2 }, "\(log.all)")
        let names = try (0..<4).map { _ in try fetchName(port: port) }
        XCTAssertEqual(Set(names), ["s1", "s2"])
    }

    /// What the stats page and balancerd_discovery_* read: sets received, errors (from a
    /// source that cannot reach its server), last success.
    func testDiscoveryStatusCountsSetsAndErrors() throws {
        let consul = try ConsulTestServer()
        let s1 = try NameStampServer(name: "s1")
        addTeardownBlock { s1.stop() }
        try consul.register(id: "web-1", port: Int(s1.port), address: "127.0.0.1")
        let (proxy, _) = try startProxy(discovery: .consul(url: consul.url, service: "web", tag: nil, datacenter: nil, token: nil))
        let runner = try DiscoveryRunner(configuration: proxy.configuration, log: { _ in })
        runner.start(publishingInto: proxy)
        addTeardownBlock { runner.stop(); withExtendedLifetime(consul) {} }
        let status = try XCTUnwrap(proxy.discoveryStatus(backend: "main"))
        XCTAssertTrue(waitUntil(timeout: 5) { status.updates.load(ordering: .relaxed) == 1 })
        let reading = try XCTUnwrap(status.reading)
        XCTAssertTrue(reading.source.hasPrefix("consul \(consul.url)"), reading.source)
        XCTAssertEqual(reading.errors, 0)
        XCTAssertGreaterThan(reading.lastSuccessMilliseconds, 0)

        let metrics = PrometheusExposition.render(proxy.statsSnapshot(version: "test"))
        XCTAssertTrue(metrics.contains("balancerd_discovery_updates_total{proxy=\"main\"} 1\n"), metrics)
        XCTAssertTrue(metrics.contains("balancerd_discovery_errors_total{proxy=\"main\"} 0\n"), metrics)
        XCTAssertTrue(metrics.contains("# TYPE balancerd_discovery_last_success_seconds gauge\n"), metrics)

        // An etcd source with nothing to talk to reports its failures.
        let (silentProxy, _) = try startProxy(discovery: .etcd(url: "http://127.0.0.1:\(try freePort())", prefix: "/services/web/"))
        let silent = try DiscoveryRunner(configuration: silentProxy.configuration, log: { _ in })
        silent.start(publishingInto: silentProxy)
        addTeardownBlock { silent.stop() }
        let failing = try XCTUnwrap(silentProxy.discoveryStatus(backend: "main"))
        XCTAssertTrue(waitUntil(timeout: 5) { failing.errors.load(ordering: .relaxed) >= 2 })
        XCTAssertEqual(failing.updates.load(ordering: .relaxed), 0)
        XCTAssertEqual(failing.lastSuccessMilliseconds.load(ordering: .relaxed), 0)
        XCTAssertNotNil(failing.reading?.lastError)
    }

    func testWaitForFirstAnswersNamesTheBackendsStillWaiting() throws {
        // Nothing listens on this port: the source backs off and never publishes.
        let silent = "http://127.0.0.1:\(try freePort())"
        let (proxy, _) = try startProxy(discovery: .etcd(url: silent, prefix: "/services/web/"))
        let log = Lines()
        let runner = try DiscoveryRunner(configuration: proxy.configuration, log: { log.add($0) })
        runner.start(publishingInto: proxy)

        XCTAssertEqual(runner.waitForFirstAnswers(timeout: .milliseconds(300)), ["main"])
        XCTAssertTrue(log.all.contains { $0.contains("backend main: no answer from its discovery source yet") }, "\(log.all)")
        XCTAssertEqual(proxy.tables[0].servers.count, 0)
        runner.stop()   // returns once the source's thread has ended, backoff or not
        XCTAssertFalse(log.all.contains { $0.contains("updated from") }, "\(log.all)")
    }

    func testAConfigurationWithoutDiscoveryNeedsNoRunner() throws {
        let configuration = Configuration(
            frontends: [Frontend(name: "main", binds: [HostPort(host: "127.0.0.1", port: 0)], mode: .tcp, defaultBackend: "main")],
            backends: [BackendConfig(name: "main", mode: .tcp, servers: [ServerConfig(name: "s1", address: HostPort(host: "127.0.0.1", port: 1))])])
        XCTAssertTrue(try DiscoveryRunner(configuration: configuration).isEmpty)
    }
}
