import Foundation
import XCTest
@testable import Balancer

final class ConfigParserTests: XCTestCase {
    // MARK: helpers

    private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    private func fixture(_ name: String) -> String {
        Self.fixtures.appendingPathComponent(name).path
    }

    private func parse(_ text: String) throws -> Configuration {
        try HAProxyParser.parse(text, file: "test.cfg")
    }

    /// Asserts that `text` fails at `line` with `keyword`, and that the message mentions `message`.
    private func assertError(_ text: String, line: Int, keyword: String, _ message: String,
                             file: StaticString = #filePath, sourceLine: UInt = #line) {
        do throws(ConfigurationError) {
            let configuration = try HAProxyParser.parse(text, file: "test.cfg")
            XCTFail("expected an error, got \(configuration)", file: file, line: sourceLine)
        } catch {
            XCTAssertEqual(error.file, "test.cfg", file: file, line: sourceLine)
            XCTAssertEqual(error.line, line, "\(error)", file: file, line: sourceLine)
            XCTAssertEqual(error.keyword, keyword, "\(error)", file: file, line: sourceLine)
            XCTAssertTrue(error.message.contains(message), "'\(error.message)' should mention '\(message)'",
                          file: file, line: sourceLine)
        }
    }

    /// A frontend and backend to append to a `global`/`defaults` snippet so it is a valid file.
    private let minimalProxies = """
        frontend fe
            bind :80
            default_backend be
        backend be
            server s1 10.0.0.1:80
        """

    private func hp(_ host: String, _ port: UInt16) -> HostPort {
        HostPort(host: host, port: port)
    }

    // MARK: minimal file and built-in defaults

    func testMinimalFileUsesBuiltInDefaults() throws {
        let configuration = try parse(minimalProxies)
        XCTAssertEqual(configuration.global, GlobalSettings())
        XCTAssertEqual(configuration.frontends, [
            Frontend(name: "fe", binds: [hp("0.0.0.0", 80)], mode: .tcp, defaultBackend: "be"),
        ])
        XCTAssertEqual(configuration.backends, [
            BackendConfig(name: "be", mode: .tcp, servers: [ServerConfig(name: "s1", address: hp("10.0.0.1", 80))]),
        ])
        let backend = try XCTUnwrap(configuration.backends.first)
        XCTAssertEqual(backend.retries, 3)
        XCTAssertTrue(backend.redispatch, "balancerd redispatches unless the file says 'no option redispatch'")
        XCTAssertFalse(backend.allBackups)
        XCTAssertEqual(backend.timeouts, Timeouts())
    }

    // MARK: fixtures

    func testConsulTemplateFixture() throws {
        let configuration = try HAProxyParser.load(path: fixture("consul-template.cfg"))
        XCTAssertEqual(configuration.global, GlobalSettings(
            maxConnections: 4096, threads: nil,
            statsSocket: RuntimeSocketConfig(path: "/var/run/haproxy.sock", mode: 0o600, level: .admin)))

        var timeouts = Timeouts()
        timeouts.connect = .seconds(5)  // `timeout connect 5000`: bare numbers are milliseconds
        timeouts.client = .seconds(50)
        timeouts.server = .seconds(50)
        XCTAssertEqual(configuration.frontends, [
            Frontend(name: "http-in", binds: [hp("0.0.0.0", 80)], mode: .http, defaultBackend: "web",
                     timeouts: timeouts, forwardFor: true),
        ])
        let check = HealthCheckConfig(interval: .seconds(2), rise: 2, fall: 3)
        XCTAssertEqual(configuration.backends, [
            BackendConfig(name: "web", mode: .http, servers: [
                ServerConfig(name: "web-1-8f1b0c2e", address: hp("172.17.0.3", 80), check: check),
                ServerConfig(name: "web-2-4d2a91f7", address: hp("172.17.0.4", 80), check: check),
                ServerConfig(name: "web-3-c07e55aa", address: hp("172.17.0.5", 80), check: check),
            ], timeouts: timeouts, retries: 3, redispatch: true),
        ])
    }

    func testTCPListenFixture() throws {
        let configuration = try HAProxyParser.load(path: fixture("tcp-listen.cfg"))
        XCTAssertEqual(configuration.global, GlobalSettings(maxConnections: 20_000, threads: 4))

        var timeouts = Timeouts()
        timeouts.connect = .seconds(3)
        timeouts.client = .seconds(3_600)
        timeouts.server = .seconds(3_600)
        XCTAssertEqual(configuration.frontends, [
            Frontend(name: "redis", binds: [hp("0.0.0.0", 6379), hp("::", 6379)], mode: .tcp, defaultBackend: "redis",
                     timeouts: timeouts),
        ])
        let check = HealthCheckConfig(interval: .seconds(1), rise: 3, fall: 2)  // from default-server
        XCTAssertEqual(configuration.backends, [
            BackendConfig(name: "redis", mode: .tcp, servers: [
                ServerConfig(name: "redis-a", address: hp("10.0.1.11", 6379), check: check),
                ServerConfig(name: "redis-b", address: hp("10.0.1.12", 6379), check: check),
                ServerConfig(name: "redis-c", address: hp("10.0.2.11", 6379), backup: true, check: check),
                ServerConfig(name: "redis-d", address: hp("10.0.2.12", 6379), backup: true, check: check),
            ], timeouts: timeouts, retries: 2, redispatch: false, allBackups: true,
            healthCheck: BackendHealthCheck(http: nil, timeout: .seconds(2))),  // `timeout check 2s`
        ])
    }

    func testMultiFrontendFixture() throws {
        let configuration = try HAProxyParser.load(path: fixture("multi-frontend.cfg"))
        XCTAssertEqual(configuration.global, GlobalSettings(maxConnections: 50_000, threads: nil))

        XCTAssertEqual(configuration.frontends.map(\.name), ["www", "api"])
        XCTAssertEqual(configuration.backends.map(\.name), ["web", "api", "api-canary"])

        let www = configuration.frontends[0]
        XCTAssertEqual(www.binds, [hp("0.0.0.0", 80), hp("::", 80)])
        XCTAssertEqual(www.mode, .http)
        XCTAssertEqual(www.defaultBackend, "web")
        XCTAssertTrue(www.forwardFor)
        XCTAssertEqual(www.timeouts.client, .seconds(30))
        XCTAssertEqual(www.timeouts.httpRequest, .seconds(10))
        XCTAssertEqual(www.timeouts.httpKeepAlive, .seconds(2))

        let api = configuration.frontends[1]
        XCTAssertEqual(api.binds, [hp("127.0.0.1", 8080), hp("10.0.0.5", 8080)])
        XCTAssertEqual(api.timeouts.client, .seconds(120))
        XCTAssertFalse(api.forwardFor)
        XCTAssertEqual(api.defaultBackend, "api")

        let web = try XCTUnwrap(configuration.backend(named: "web"))
        XCTAssertEqual(web.servers.map(\.weight), [3, 2, 1, 1])
        XCTAssertEqual(web.servers.map(\.backup), [false, false, false, true])
        XCTAssertEqual(web.servers[0].check, HealthCheckConfig(interval: .seconds(5), rise: 2, fall: 3))
        XCTAssertEqual(web.servers[2].check, HealthCheckConfig(interval: .seconds(5), rise: 3, fall: 2))
        XCTAssertNil(web.servers[3].check)
        XCTAssertEqual(web.timeouts.server, .seconds(30))
        XCTAssertEqual(web.retries, 3)

        let apiBackend = try XCTUnwrap(configuration.backend(named: "api"))
        XCTAssertEqual(apiBackend.timeouts.server, .seconds(120))
        XCTAssertEqual(apiBackend.timeouts.connect, .seconds(5))
        XCTAssertEqual(apiBackend.retries, 1)
        XCTAssertEqual(apiBackend.servers.map(\.address), [hp("api-1.internal", 9000), hp("api-2.internal", 9000)])

        let canary = try XCTUnwrap(configuration.backend(named: "api-canary"))
        XCTAssertEqual(canary.servers.first?.weight, 0)
        XCTAssertEqual(canary.mode, .http)
    }

    func testBrokenFixtures() throws {
        XCTAssertThrowsError(try HAProxyParser.load(path: fixture("broken-unknown-keyword.cfg"))) { error in
            guard let error = error as? ConfigurationError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.file, self.fixture("broken-unknown-keyword.cfg"))
            XCTAssertEqual(error.line, 14)
            XCTAssertEqual(error.keyword, "retires")
            XCTAssertEqual(error.message, "unknown keyword 'retires' in backend 'web'")
        }
        XCTAssertThrowsError(try HAProxyParser.load(path: fixture("broken-bad-weight.cfg"))) { error in
            guard let error = error as? ConfigurationError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.line, 7)
            XCTAssertEqual(error.keyword, "weight")
            XCTAssertEqual(error.message, "invalid value '300' (expected an integer from 0 to 256)")
        }
    }

    // MARK: loading

    func testLoadErrorsAreLineZeroKeywordFile() {
        for path in ["/nonexistent/haproxy.cfg", Self.fixtures.path] {
            XCTAssertThrowsError(try HAProxyParser.load(path: path)) { error in
                guard let error = error as? ConfigurationError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.file, path)
                XCTAssertEqual(error.line, 0)
                XCTAssertEqual(error.keyword, "file")
            }
        }
    }

    func testLoadRejectsInvalidUTF8() throws {
        let path = NSTemporaryDirectory() + "balancerd-invalid-\(getpid()).cfg"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data([0x66, 0xFF, 0xFE, 0x0A])))
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertThrowsError(try HAProxyParser.load(path: path)) { error in
            XCTAssertEqual(error as? ConfigurationError,
                           ConfigurationError(file: path, line: 0, keyword: "file", message: "not valid UTF-8 text"))
        }
    }

    func testErrorDescriptionNamesFileLineAndKeyword() {
        let error = ConfigurationError(file: "a.cfg", line: 3, keyword: "bind", message: "missing port")
        XCTAssertEqual(error.description, "a.cfg:3: 'bind': missing port")
    }

    // MARK: defaults

    func testDefaultsApplyToFollowingSections() throws {
        let configuration = try parse("""
            defaults
                mode http
                timeout connect 2s
                timeout client 20s
                timeout server 30s
                timeout http-request 4s
                timeout http-keep-alive 1s
                retries 5
                no option redispatch
                option allbackups
                option forwardfor
            frontend fe
                bind :80
                timeout client 7s
                default_backend be
            backend be
                timeout server 9s
                server s1 10.0.0.1:80
            """)
        let frontend = configuration.frontends[0]
        XCTAssertEqual(frontend.mode, .http)
        XCTAssertTrue(frontend.forwardFor)
        XCTAssertEqual(frontend.timeouts.client, .seconds(7))
        XCTAssertEqual(frontend.timeouts.httpRequest, .seconds(4))
        XCTAssertEqual(frontend.timeouts.httpKeepAlive, .seconds(1))
        let backend = configuration.backends[0]
        XCTAssertEqual(backend.mode, .http)
        XCTAssertEqual(backend.timeouts.connect, .seconds(2))
        XCTAssertEqual(backend.timeouts.server, .seconds(9))
        XCTAssertEqual(backend.retries, 5)
        XCTAssertFalse(backend.redispatch)
        XCTAssertTrue(backend.allBackups)
    }

    func testNewDefaultsSectionResetsEverything() throws {
        // haproxy: each defaults section replaces the previous one instead of adding to it.
        let configuration = try parse("""
            defaults
                mode http
                retries 7
                timeout connect 1s
                no option redispatch
            frontend first
                bind :80
                default_backend first
            backend first
                server s1 10.0.0.1:80
            defaults
                timeout server 3s
            frontend second
                bind :81
                default_backend second
            backend second
                server s1 10.0.0.1:81
            """)
        let first = try XCTUnwrap(configuration.backend(named: "first"))
        XCTAssertEqual(first.mode, .http)
        XCTAssertEqual(first.retries, 7)
        XCTAssertFalse(first.redispatch)
        XCTAssertEqual(first.timeouts.connect, .seconds(1))
        XCTAssertEqual(first.timeouts.server, .seconds(50))

        let second = try XCTUnwrap(configuration.backend(named: "second"))
        XCTAssertEqual(second.mode, .tcp)
        XCTAssertEqual(second.retries, 3)
        XCTAssertTrue(second.redispatch)
        XCTAssertEqual(second.timeouts.connect, .seconds(5))
        XCTAssertEqual(second.timeouts.server, .seconds(3))
        XCTAssertEqual(configuration.frontends[1].mode, .tcp)
    }

    func testSectionsBeforeDefaultsUseBuiltIns() throws {
        let configuration = try parse(minimalProxies + "\ndefaults\n    mode http\n")
        XCTAssertEqual(configuration.frontends[0].mode, .tcp)
        XCTAssertEqual(configuration.backends[0].mode, .tcp)
    }

    func testNamedDefaultsAndFrom() throws {
        let configuration = try parse("""
            defaults web
                mode http
                timeout server 5s
            defaults tcp
                mode tcp
            frontend site from web
                bind :80
                default_backend site
            backend site from web
                server s1 10.0.0.1:80
            frontend db
                bind :5432
                default_backend db
            backend db
                server s1 10.0.0.2:5432
            """)
        XCTAssertEqual(configuration.frontends.map(\.mode), [.http, .tcp])
        XCTAssertEqual(configuration.backend(named: "site")?.timeouts.server, .seconds(5))
        XCTAssertEqual(configuration.backend(named: "db")?.mode, .tcp)
        XCTAssertEqual(configuration.backend(named: "db")?.timeouts.server, .seconds(50))

        assertError("defaults a\ndefaults a\n", line: 2, keyword: "defaults", "duplicate defaults section 'a' (first at line 1)")
        assertError("backend b from nowhere\n", line: 1, keyword: "from", "no defaults section named 'nowhere'")
        assertError("backend b from\n", line: 1, keyword: "from", "needs the name of a defaults section")
    }

    func testDefaultBackendInDefaults() throws {
        let configuration = try parse("""
            defaults
                default_backend be
            frontend fe
                bind :80
            backend be
                server s1 10.0.0.1:80
            """)
        XCTAssertEqual(configuration.frontends[0].defaultBackend, "be")
        // A missing backend is reported where the name was written: in the defaults section.
        assertError("""
            defaults
                default_backend nope
            frontend fe
                bind :80
            """, line: 2, keyword: "default_backend", "no backend or listen section named 'nope'")
    }

    func testRedispatch() throws {
        let text = { (line: String) in "frontend fe\n bind :80\n default_backend be\nbackend be\n \(line)\n server s 1.2.3.4:5\n" }
        XCTAssertTrue(try parse(text("")).backends[0].redispatch)
        XCTAssertTrue(try parse(text("option redispatch")).backends[0].redispatch)
        XCTAssertFalse(try parse(text("no option redispatch")).backends[0].redispatch)
        XCTAssertTrue(try parse("defaults\n no option redispatch\n" + text("option redispatch")).backends[0].redispatch)
        assertError(text("option redispatch 1"), line: 5, keyword: "option redispatch", "arguments to 'option redispatch' are not supported")
    }

    func testForwardForOnBackendAddsHeaderToo() throws {
        let configuration = try parse("""
            frontend fe
                mode http
                bind :80
                default_backend be
            backend be
                mode http
                option forwardfor
                server s1 10.0.0.1:80
            """)
        XCTAssertTrue(configuration.frontends[0].forwardFor)
        assertError("frontend fe\n option forwardfor except 127.0.0.0/8\n", line: 2, keyword: "option forwardfor",
                    "arguments to 'option forwardfor' are not supported")
    }

    // MARK: listen

    func testListenIsFrontendAndBackend() throws {
        let configuration = try parse("""
            listen stats-free-pool
                bind 127.0.0.1:9000
                mode http
                timeout client 3s
                timeout connect 1s
                option forwardfor
                retries 0
                server a 10.0.0.1:80 weight 2
                server b 10.0.0.2:80 backup
            """)
        var timeouts = Timeouts()
        timeouts.client = .seconds(3)
        timeouts.connect = .seconds(1)
        XCTAssertEqual(configuration.frontends, [
            Frontend(name: "stats-free-pool", binds: [hp("127.0.0.1", 9000)], mode: .http,
                     defaultBackend: "stats-free-pool", timeouts: timeouts, forwardFor: true),
        ])
        XCTAssertEqual(configuration.backends, [
            BackendConfig(name: "stats-free-pool", mode: .http, servers: [
                ServerConfig(name: "a", address: hp("10.0.0.1", 80), weight: 2),
                ServerConfig(name: "b", address: hp("10.0.0.2", 80), backup: true),
            ], timeouts: timeouts, retries: 0),
        ])
    }

    func testListenAndSeparateSectionsTogether() throws {
        let configuration = try parse("""
            listen one
                bind :1
                server s 10.0.0.1:1
            frontend two
                bind :2
                default_backend one
            backend three
                server s 10.0.0.3:3
            """)
        XCTAssertEqual(configuration.frontends.map(\.name), ["one", "two"])
        XCTAssertEqual(configuration.frontends.map(\.defaultBackend), ["one", "one"])
        XCTAssertEqual(configuration.backends.map(\.name), ["one", "three"])
    }

    func testListenRejectsDefaultBackend() {
        assertError("listen l\n bind :80\n default_backend x\n", line: 3, keyword: "default_backend",
                    "not allowed in a listen section")
    }

    // MARK: bind

    func testBindForms() throws {
        let configuration = try parse("""
            frontend fe
                bind *:80
                bind :81
                bind 0.0.0.0:82
                bind 127.0.0.1:8080
                bind [::]:83
                bind [::1]:8081
                bind :::84
                bind ::1:8082
                bind ipv4@127.0.0.1:85
                bind ipv6@[::1]:86
                bind 10.0.0.1:87,10.0.0.2:88,[fe80::1%eth0]:89
                bind localhost:0
                default_backend be
            backend be
            """)
        XCTAssertEqual(configuration.frontends[0].binds, [
            hp("0.0.0.0", 80), hp("0.0.0.0", 81), hp("0.0.0.0", 82), hp("127.0.0.1", 8080), hp("::", 83),
            hp("::1", 8081), hp("::", 84), hp("::1", 8082), hp("127.0.0.1", 85), hp("::1", 86),
            hp("10.0.0.1", 87), hp("10.0.0.2", 88), hp("fe80::1%eth0", 89), hp("localhost", 0),
        ])
        XCTAssertEqual(configuration.backends[0].servers, [], "a backend without servers is valid, as in haproxy")
    }

    func testTLSBindsStartFromTheGlobalDefaults() throws {
        let configuration = try parse("""
            global
                crt-base /etc/haproxy/certs
                ssl-default-bind-ciphers ECDHE-RSA-AES128-GCM-SHA256
                ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
                ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
            frontend fe
                mode http
                bind :443,:8443 ssl crt site.pem crt /abs/dir alpn h2,http/1.1
                bind 127.0.0.1:9443 ssl crt other.pem ciphers AES256-SHA ssl-min-ver TLSv1.3 no-tlsv10
                bind :80
                default_backend be
            backend be
                mode http
            """)
        let tls = configuration.frontends[0].tls
        XCTAssertEqual(Set(tls.keys), [hp("0.0.0.0", 443), hp("0.0.0.0", 8443), hp("127.0.0.1", 9443)])
        let first = try XCTUnwrap(tls[hp("0.0.0.0", 443)])
        XCTAssertEqual(first.certificates, ["/etc/haproxy/certs/site.pem", "/abs/dir"])
        XCTAssertEqual(first.alpn, ["h2", "http/1.1"])
        XCTAssertEqual(first.ciphers, "ECDHE-RSA-AES128-GCM-SHA256")
        XCTAssertEqual(first.ciphersuites, "TLS_AES_128_GCM_SHA256")
        XCTAssertEqual(first.options, TLSOptions(minVersion: .tls12, noTickets: true))
        XCTAssertEqual(tls[hp("0.0.0.0", 8443)], first)
        let own = try XCTUnwrap(tls[hp("127.0.0.1", 9443)])
        XCTAssertEqual(own.ciphers, "AES256-SHA", "the bind's own ciphers replace the default")
        XCTAssertEqual(own.options, TLSOptions(minVersion: .tls13, disabled: [.tls10], noTickets: true))

        // The export says it all on the bind, and reads back the same.
        let exported = HAProxyWriter.write(configuration)
        XCTAssertTrue(exported.contains("bind 127.0.0.1:9443 ssl crt /etc/haproxy/certs/other.pem ciphers AES256-SHA ciphersuites TLS_AES_128_GCM_SHA256 ssl-min-ver TLSv1.3 no-tls-tickets no-tlsv10"), exported)
        XCTAssertEqual(try parse(exported).frontends[0].tls, tls)
    }

    func testBindErrors() {
        func bind(_ value: String) -> String { "frontend fe\n    bind \(value)\n" }
        assertError(bind("*:443 ssl"), line: 2, keyword: "ssl", "needs at least one 'crt PEM'")
        assertError(bind("*:443 crt /etc/ssl/site.pem"), line: 2, keyword: "crt", "without 'ssl'")
        assertError(bind("*:443 ssl crt"), line: 2, keyword: "crt", "'crt' needs a value")
        assertError(bind("*:443 ssl crt a.pem ssl-min-ver TLSv9"), line: 2, keyword: "ssl-min-ver", "unknown TLS version 'TLSv9'")
        assertError(bind("*:443 ssl crt a.pem alpn h2"), line: 2, keyword: "alpn", "no 'http/1.1'")
        assertError(bind("*:443 ssl crt a.pem verify required"), line: 2, keyword: "verify", "bind parameter 'verify' is not supported")
        assertError(bind("*:80 accept-proxy"), line: 2, keyword: "accept-proxy", "bind parameter 'accept-proxy' is not supported")
        assertError(bind("80"), line: 2, keyword: "bind", "missing port in '80'")
        assertError(bind("*:"), line: 2, keyword: "bind", "missing port")
        assertError(bind("*:8000-8010"), line: 2, keyword: "bind", "port ranges are not supported")
        assertError(bind("*:65536"), line: 2, keyword: "bind", "invalid port '65536'")
        assertError(bind("*:http"), line: 2, keyword: "bind", "invalid port 'http'")
        assertError(bind("unix@/run/b.sock"), line: 2, keyword: "bind", "address family 'unix@' is not supported")
        assertError(bind("/run/b.sock"), line: 2, keyword: "bind", "UNIX socket addresses are not supported")
        assertError(bind("[::1:80"), line: 2, keyword: "bind", "missing ']'")
        assertError(bind("[::1]80"), line: 2, keyword: "bind", "missing port")
        assertError(bind("[127.0.0.1]:80"), line: 2, keyword: "bind", "brackets are only for IPv6")
        assertError(bind(":80,,:81"), line: 2, keyword: "bind", "empty address in list")
        assertError(bind("{{.Address}}:80"), line: 2, keyword: "bind", "invalid host '{{.Address}}'")
        assertError("frontend fe\n    bind\n", line: 2, keyword: "bind", "missing address")
    }

    // MARK: servers

    func testServerParameters() throws {
        let configuration = try parse("""
            backend be
                server plain 10.0.0.1:80
                server weighted 10.0.0.2:80 weight 256
                server drained 10.0.0.3:80 weight 0
                server standby 10.0.0.4:80 backup
                server checked 10.0.0.5:80 check
                server tuned 10.0.0.6:80 check inter 500ms rise 1 fall 5 maxconn 100
                server inter-only 10.0.0.7:80 inter 10s
                server ipv6 [2001:db8::1]:8080 check backup weight 3
                server named db.example.com:5432
            frontend fe
                bind :80
                default_backend be
            """)
        XCTAssertEqual(configuration.backends[0].servers, [
            ServerConfig(name: "plain", address: hp("10.0.0.1", 80)),
            ServerConfig(name: "weighted", address: hp("10.0.0.2", 80), weight: 256),
            ServerConfig(name: "drained", address: hp("10.0.0.3", 80), weight: 0),
            ServerConfig(name: "standby", address: hp("10.0.0.4", 80), backup: true),
            ServerConfig(name: "checked", address: hp("10.0.0.5", 80), check: HealthCheckConfig()),
            ServerConfig(name: "tuned", address: hp("10.0.0.6", 80),
                         check: HealthCheckConfig(interval: .milliseconds(500), rise: 1, fall: 5)),
            ServerConfig(name: "inter-only", address: hp("10.0.0.7", 80)),
            ServerConfig(name: "ipv6", address: hp("2001:db8::1", 8080), weight: 3, backup: true, check: HealthCheckConfig()),
            ServerConfig(name: "named", address: hp("db.example.com", 5432)),
        ])
    }

    func testDefaultServer() throws {
        let configuration = try parse("""
            defaults
                default-server inter 3s fall 4
            backend be
                server a 10.0.0.1:80 check
                default-server check weight 5
                server b 10.0.0.2:80
                server c 10.0.0.3:80 no-check weight 1
            frontend fe
                bind :80
                default_backend be
            """)
        XCTAssertEqual(configuration.backends[0].servers, [
            ServerConfig(name: "a", address: hp("10.0.0.1", 80), check: HealthCheckConfig(interval: .seconds(3), rise: 2, fall: 4)),
            ServerConfig(name: "b", address: hp("10.0.0.2", 80), weight: 5,
                         check: HealthCheckConfig(interval: .seconds(3), rise: 2, fall: 4)),
            ServerConfig(name: "c", address: hp("10.0.0.3", 80)),
        ])
        assertError("frontend fe\n default-server check\n", line: 2, keyword: "default-server", "not allowed in a frontend section")
    }

    func testServerErrors() {
        func server(_ rest: String) -> String { "global\n    maxconn 10\nbackend be\n    server \(rest)\n" }
        assertError(server("s1 10.0.0.1:80 weight 257"), line: 4, keyword: "weight", "expected an integer from 0 to 256")
        assertError(server("s1 10.0.0.1:80 weight -1"), line: 4, keyword: "weight", "invalid value '-1'")
        assertError(server("s1 10.0.0.1:80 weight heavy"), line: 4, keyword: "weight", "invalid value 'heavy'")
        assertError(server("s1 10.0.0.1:80 weight"), line: 4, keyword: "weight", "'weight' needs a value")
        assertError(server("s1 10.0.0.1:80 rise 0"), line: 4, keyword: "rise", "an integer of at least 1")
        assertError(server("s1 10.0.0.1:80 fall 0"), line: 4, keyword: "fall", "an integer of at least 1")
        assertError(server("s1 10.0.0.1:80 check inter 0"), line: 4, keyword: "inter", "invalid interval '0'")
        assertError(server("s1 10.0.0.1:80 check inter often"), line: 4, keyword: "inter", "invalid interval 'often'")
        assertError(server("s1 10.0.0.1:80 cookie s1"), line: 4, keyword: "cookie", "unknown or unsupported server parameter 'cookie'")
        assertError(server("s1 10.0.0.1:443 ssl"), line: 4, keyword: "server", "needs a 'ca-file'")
        assertError(server("s1 10.0.0.1:443 ssl verify sometimes"), line: 4, keyword: "verify", "expected 'none' or 'required'")
        assertError(server("s1 10.0.0.1:443 ssl verify none sni req.hdr(host)"), line: 4, keyword: "sni", "balancerd supports str(NAME)")
        assertError(server("s1 10.0.0.1:0"), line: 4, keyword: "server", "invalid port '0'")
        assertError(server("s1 10.0.0.1:65536"), line: 4, keyword: "server", "invalid port '65536'")
        assertError(server("s1 10.0.0.1"), line: 4, keyword: "server", "missing port")
        assertError(server("s1 *:80"), line: 4, keyword: "server", "missing host")
        assertError(server("s1"), line: 4, keyword: "server", "expected server NAME HOST:PORT")
        assertError(server("s/1 10.0.0.1:80"), line: 4, keyword: "server", "invalid server name 's/1'")
        assertError("backend be\n server a 10.0.0.1:80\n\n server a 10.0.0.2:80\n", line: 4, keyword: "server",
                    "duplicate server name 'a' in backend 'be' (first at line 2)")
    }

    // MARK: keywords

    func testBalance() {
        XCTAssertNoThrow(try parse("defaults\n balance roundrobin\n" + minimalProxies))
        assertError("backend be\n balance leastconn\n", line: 2, keyword: "balance", "unsupported balance algorithm 'leastconn'")
        assertError("backend be\n balance source\n", line: 2, keyword: "balance", "unsupported balance algorithm 'source'")
        assertError("backend be\n balance\n", line: 2, keyword: "balance", "missing algorithm")
        assertError("backend be\n balance roundrobin extra\n", line: 2, keyword: "balance", "unexpected argument 'extra'")
        assertError("frontend fe\n balance roundrobin\n", line: 2, keyword: "balance", "not allowed in a frontend section")
    }

    func testModes() throws {
        let http = try parse("frontend f\n mode http\n bind :80\n default_backend b\nbackend b\n mode http\n")
        XCTAssertEqual(http.frontends[0].mode, .http)
        assertError("defaults\n mode health\n", line: 2, keyword: "mode", "'mode health' is not supported")
        assertError("defaults\n mode udp\n", line: 2, keyword: "mode", "unknown mode 'udp'")
        assertError("defaults\n mode\n", line: 2, keyword: "mode", "'mode' needs a value")
        assertError("""
            frontend f
                mode http
                bind :80
                default_backend b
            backend b
                mode tcp
            """, line: 4, keyword: "default_backend", "frontend 'f' is in http mode but backend 'b' is in tcp mode")
    }

    func testTimeouts() throws {
        let configuration = try parse("""
            defaults
                timeout connect 250
                timeout queue 30s
                timeout check 5s
                timeout tunnel 1h
                timeout client-fin 1s
                timeout server-fin 1s
            frontend fe
                bind :80
                timeout http-request 100us
                timeout client-fin 2s
                default_backend be
            backend be
                timeout queue 1s
                timeout tunnel 1d
            """)
        XCTAssertEqual(configuration.backends[0].timeouts.connect, .milliseconds(250))
        XCTAssertEqual(configuration.frontends[0].timeouts.httpRequest, .microseconds(100))

        assertError("defaults\n timeout connect 5 s\n", line: 2, keyword: "timeout connect", "unexpected argument 's'")
        assertError("defaults\n timeout connect fast\n", line: 2, keyword: "timeout connect", "invalid duration 'fast'")
        assertError("defaults\n timeout check -1\n", line: 2, keyword: "timeout check", "invalid duration '-1'")
        assertError("defaults\n timeout server\n", line: 2, keyword: "timeout server", "needs a value")
        assertError("defaults\n timeout tarpit 1s\n", line: 2, keyword: "timeout tarpit", "unknown timeout 'tarpit'")
        assertError("defaults\n timeout\n", line: 2, keyword: "timeout", "missing timeout name")
        assertError("frontend fe\n timeout connect 1s\n", line: 2, keyword: "timeout connect", "applies to the server side")
        assertError("backend be\n timeout client 1s\n", line: 2, keyword: "timeout client", "applies to the client side")
        assertError("backend be\n timeout http-request 1s\n", line: 2, keyword: "timeout http-request", "applies to the client side")
    }

    func testOptions() throws {
        XCTAssertNoThrow(try parse("""
            defaults
                log global
                option httplog
                option tcplog
                option dontlognull
                option http-server-close
                option http-keep-alive
                no option http-server-close
                no log
                option allbackups
                no option allbackups
                maxconn 1000
            """ + "\n" + minimalProxies))
        assertError("frontend fe\n option httpchk GET /health\n", line: 2, keyword: "option httpchk", "not allowed in a frontend section")
        assertError("backend be\n option tcp-check\n", line: 2, keyword: "option tcp-check", "not supported")
        assertError("backend be\n option mysql-check user haproxy\n", line: 2, keyword: "option mysql-check", "not supported")
        assertError("defaults\n option foo\n", line: 2, keyword: "option foo", "unknown or unsupported option 'foo'")
        assertError("defaults\n no option foo\n", line: 2, keyword: "no option foo", "unknown or unsupported option 'foo'")
        assertError("defaults\n option\n", line: 2, keyword: "option", "missing option name")
        assertError("defaults\n no\n", line: 2, keyword: "no", "'no' needs a keyword")
        assertError("defaults\n no retries\n", line: 2, keyword: "no retries", "only supported before 'option' and 'log'")
        assertError("frontend fe\n option redispatch\n", line: 2, keyword: "option redispatch", "not allowed in a frontend section")
        assertError("frontend fe\n no option allbackups\n", line: 2, keyword: "no option allbackups", "not allowed in a frontend section")
    }

    func testMisplacedKeywords() {
        assertError("backend be\n bind :80\n", line: 2, keyword: "bind", "'bind' is not allowed in a backend section")
        assertError("defaults\n bind :80\n", line: 2, keyword: "bind", "'bind' is not allowed in a defaults section")
        assertError("frontend fe\n server s 1.2.3.4:5\n", line: 2, keyword: "server", "not allowed in a frontend section")
        assertError("frontend fe\n retries 3\n", line: 2, keyword: "retries", "not allowed in a frontend section")
        assertError("backend be\n default_backend x\n", line: 2, keyword: "default_backend", "not allowed in a backend section")
        assertError("backend be\n maxconn 10\n", line: 2, keyword: "maxconn", "not allowed in a backend section")
        assertError("backend be\n retries -1\n", line: 2, keyword: "retries", "invalid value '-1'")
    }

    func testUnknownAndUnsupportedKeywords() {
        assertError("frontend fe\n bind :80\n use_backend api if is_api\n", line: 3, keyword: "is_api",
                    "no ACL named 'is_api' above this line")
        assertError("frontend fe\n bind :80\n http-response set-header a b\n", line: 3, keyword: "http-response", "not supported")
        assertError("backend be\n stick-table type ip size 1m\n", line: 2, keyword: "stick-table", "not supported")
        assertError("frontend fe\n bnid :80\n", line: 2, keyword: "bnid", "unknown keyword 'bnid' in frontend 'fe'")
        assertError("defaults\n colour blue\n", line: 2, keyword: "colour", "unknown keyword 'colour' in defaults section")
    }

    // MARK: global

    func testGlobal() throws {
        let configuration = try parse("""
            global
                maxconn 2000
                nbthread 8
                daemon
                log /dev/log local0 info
                chroot /var/lib/haproxy
                user haproxy
                group haproxy
                uid 99
                gid 99
                pidfile /var/run/haproxy.pid
                stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners
                stats timeout 30s
                ca-base /etc/ssl/certs
                crt-base /etc/ssl/private
                ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256
                ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
                ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
                ssl-default-server-ciphers ECDHE-ECDSA-AES128-GCM-SHA256
                ssl-default-server-options no-sslv3
                ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
                tune.ssl.default-dh-param 2048
                ulimit-n 65536
                log-send-hostname
            global
                maxconn 3000
            """ + "\n" + minimalProxies)
        XCTAssertEqual(configuration.global, GlobalSettings(
            maxConnections: 3000, threads: 8,
            statsSocket: RuntimeSocketConfig(path: "/run/haproxy/admin.sock", mode: 0o660, level: .admin, exposeFDListeners: true)))

        assertError("global\n nbthread 0\n", line: 2, keyword: "nbthread", "expected an integer from 1 to 1024")
        assertError("global\n nbthread 2000\n", line: 2, keyword: "nbthread", "expected an integer from 1 to 1024")
        assertError("global\n maxconn 0\n", line: 2, keyword: "maxconn", "an integer of at least 1")
        assertError("global\n maxconn 99999999999999999999\n", line: 2, keyword: "maxconn", "invalid value")
        assertError("global\n maxconn 10 20\n", line: 2, keyword: "maxconn", "unexpected argument '20'")
        assertError("global\n stats timeout soon\n", line: 2, keyword: "stats timeout", "invalid duration 'soon'")
        assertError("global\n stats enable\n", line: 2, keyword: "stats enable", "only 'stats socket' and 'stats timeout'")
        assertError("global\n stats socket\n", line: 2, keyword: "stats socket", "missing socket path")
        assertError("global\n stats socket ipv4@127.0.0.1:9999\n", line: 2, keyword: "stats socket", "only UNIX socket paths")
        assertError("global\n stats socket /run/a.sock mode 999\n", line: 2, keyword: "mode", "invalid mode '999'")
        assertError("global\n stats socket /run/a.sock level root\n", line: 2, keyword: "level", "invalid level 'root'")
        assertError("global\n stats socket /run/a.sock level\n", line: 2, keyword: "level", "'level' needs a value")
        assertError("global\n stats socket /run/a.sock accept-proxy\n", line: 2, keyword: "accept-proxy", "unsupported 'stats socket' option")
        assertError("global\n stats socket /run/a.sock\n stats socket /run/b.sock\n", line: 3, keyword: "stats socket", "only one 'stats socket'")
        assertError("global\n stats\n", line: 2, keyword: "stats", "only 'stats socket'")
        assertError("global\n nbproc 4\n", line: 2, keyword: "nbproc", "unknown or unsupported keyword 'nbproc' in global section")
        assertError("global\n hard-stop-after 30s\n", line: 2, keyword: "hard-stop-after", "in global section")
        assertError("global extra\n", line: 1, keyword: "global", "'global' takes no arguments")
    }

    // MARK: structure and validation

    func testTopLevelErrors() {
        assertError("maxconn 10\n", line: 1, keyword: "maxconn", "outside any section")
        assertError("# comment\n\nuserlist admins\n", line: 3, keyword: "userlist", "'userlist' sections are not supported")
        assertError("resolvers dns\n", line: 1, keyword: "resolvers", "not supported")
        assertError("frontend\n", line: 1, keyword: "frontend", "missing frontend name")
        assertError("backend\n", line: 1, keyword: "backend", "missing backend name")
        assertError("listen l 0.0.0.0:80\n", line: 1, keyword: "listen", "unexpected argument '0.0.0.0:80'")
        assertError("frontend web@1\n", line: 1, keyword: "frontend", "invalid name 'web@1'")
    }

    /// As for haproxy, a file without frontend is valid (Debian's default haproxy.cfg is
    /// one); `balancerd --config` refuses to run it, not the parser.
    func testNoFrontendIsValid() throws {
        XCTAssertEqual(try parse(""), Configuration())
        XCTAssertEqual(try parse("# nothing here\n\n"), Configuration())
        let configuration = try parse("backend be\n server s1 10.0.0.1:80\n")
        XCTAssertEqual(configuration.frontends, [])
        XCTAssertEqual(configuration.backends.map(\.name), ["be"])
    }

    func testFrontendChecks() {
        assertError("frontend fe\n default_backend be\nbackend be\n", line: 1, keyword: "frontend", "frontend 'fe' has no 'bind' line")
        assertError("backend be\nlisten l\n server s 1.2.3.4:5\n", line: 2, keyword: "listen", "listen 'l' has no 'bind' line")
        assertError("backend be\n\nfrontend fe\n bind :80\n", line: 3, keyword: "frontend", "frontend 'fe' has no 'default_backend'")
        assertError("frontend fe\n bind :80\n default_backend bee\nbackend be\n", line: 3, keyword: "default_backend",
                    "no backend or listen section named 'bee'")
        // A frontend is not a backend even when the names match.
        assertError("frontend a\n bind :80\n default_backend b\nfrontend b\n bind :81\n default_backend a\nbackend a\n",
                    line: 3, keyword: "default_backend", "no backend or listen section named 'b'")
    }

    func testDuplicateNames() throws {
        assertError("frontend a\n bind :1\nfrontend a\n bind :2\n", line: 3, keyword: "frontend",
                    "duplicate name 'a': a frontend or listen section with this name is at line 1")
        assertError("backend a\nbackend a\n", line: 2, keyword: "backend", "duplicate name 'a'")
        assertError("backend a\nlisten a\n", line: 2, keyword: "listen", "a backend or listen section with this name is at line 1")
        assertError("listen a\nfrontend a\n", line: 2, keyword: "frontend", "a frontend or listen section with this name is at line 1")
        // The usual haproxy idiom: a frontend and its backend share a name.
        let configuration = try parse("frontend web\n bind :80\n default_backend web\nbackend web\n server s 1.2.3.4:5\n")
        XCTAssertEqual(configuration.frontends[0].defaultBackend, "web")
    }

    // MARK: lexical rules

    func testCommentsBlankLinesAndWhitespace() throws {
        let configuration = try parse(
            "# leading comment\n"
            + "\n"
            + "\t \n"
            + "frontend fe # trailing comment\n"
            + "\tbind\t:80   # tabs and spaces\n"
            + "  \t  default_backend be#no space before the comment\n"
            + "    # indented comment\n"
            + "backend be\n"
            + "server s1 10.0.0.1:80\n"  // no indentation at all
        )
        XCTAssertEqual(configuration.frontends[0].binds, [hp("0.0.0.0", 80)])
        XCTAssertEqual(configuration.frontends[0].defaultBackend, "be")
        XCTAssertEqual(configuration.backends[0].servers.count, 1)
    }

    func testCRLFLineEndings() throws {
        let configuration = try parse("frontend fe\r\n    bind :80\r\n    default_backend be\r\nbackend be\r\n")
        XCTAssertEqual(configuration.frontends[0].defaultBackend, "be")
        assertError("frontend fe\r\n    bind :80\r\n    bogus\r\n", line: 3, keyword: "bogus", "unknown keyword")
    }

    func testQuotesAndEscapes() throws {
        XCTAssertEqual(try tokenize(#"server "web 1" 10.0.0.1:80"#), ["server", "web 1", "10.0.0.1:80"])
        XCTAssertEqual(try tokenize(#"a 'single "quoted" \n' b"#), ["a", #"single "quoted" \n"#, "b"])
        XCTAssertEqual(try tokenize(#"a "x\"y" z"#), ["a", #"x"y"#, "z"])
        XCTAssertEqual(try tokenize(##"a \#b c # comment"##), ["a", "#b", "c"])
        XCTAssertEqual(try tokenize(##"a "#b" '#c'"##), ["a", "#b", "#c"])
        XCTAssertEqual(try tokenize(#"a"b c"d e"#), ["ab cd", "e"])
        XCTAssertEqual(try tokenize(#"a\ b"#), ["a b"])
        XCTAssertEqual(try tokenize(#"a "" b"#), ["a", "", "b"])
        XCTAssertEqual(try tokenize("   "), [])
        XCTAssertEqual(try tokenize("# only"), [])

        // haproxy's escapes (parse_line in src/tools.c): \r \n \t and \xHH become the
        // characters, in double quotes too; other pairs keep their backslash, which
        // regexes need; single quotes keep everything.
        XCTAssertEqual(try tokenize(#"option httpchk HEAD / HTTP/1.1\r\nHost:localhost"#),
                       ["option", "httpchk", "HEAD", "/", "HTTP/1.1\r\nHost:localhost"])
        XCTAssertEqual(try tokenize(#"a "x\ty\n" 'p\r' \x41\x7e"#), ["a", "x\ty\n", #"p\r"#, "A~"])
        XCTAssertEqual(try tokenize(#"http-check expect rstatus ^2\d\d$"#), ["http-check", "expect", "rstatus", #"^2\d\d$"#])
        XCTAssertEqual(try tokenize(#"a \\ "\$x" \$y"#), ["a", "\\", "$x", #"\$y"#])
        XCTAssertThrowsError(try tokenize(#"a \xZZ"#))
        XCTAssertThrowsError(try tokenize(#"a \x4"#))
        XCTAssertThrowsError(try tokenize(#"a \xff"#))

        // Quoting works on real keywords too.
        let configuration = try parse("frontend \"fe\"\n bind ':80'\n default_backend 'b'\"e\"\nbackend be\n")
        XCTAssertEqual(configuration.frontends[0].name, "fe")
        XCTAssertEqual(configuration.frontends[0].defaultBackend, "be")

        assertError("frontend fe\n bind \":80\n", line: 2, keyword: "bind", "unterminated double quote")
        assertError("frontend fe\n bind ':80\n", line: 2, keyword: "bind", "unterminated single quote")
        assertError("frontend fe\n bind :80 \\", line: 2, keyword: "bind", "backslash at end of line")
        assertError("frontend fe\n\"bind\n", line: 2, keyword: "bind", "unterminated double quote")
        // A quoted `#` is data, so the address is wrong rather than cut short.
        assertError("frontend fe\n bind \":80#x\"\n", line: 2, keyword: "bind", "invalid port '80#x'")
    }

    // MARK: health checks

    /// `backend be` with `lines`, behind a frontend.
    private func backend(_ lines: String) -> String {
        "frontend fe\n bind :80\n default_backend be\nbackend be\n" + lines + "\n server s1 10.0.0.1:80 check\n"
    }

    private func httpCheck(_ lines: String) throws -> HTTPCheck? {
        try parse(backend(lines)).backends[0].healthCheck.http
    }

    func testOptionHTTPChkForms() throws {
        XCTAssertEqual(try parse(minimalProxies).backends[0].healthCheck, BackendHealthCheck())
        XCTAssertEqual(try httpCheck(" option httpchk"), HTTPCheck(method: "OPTIONS", uri: "/", version: "HTTP/1.0"))
        XCTAssertEqual(try httpCheck(" option httpchk /health"), HTTPCheck(method: "OPTIONS", uri: "/health"))
        XCTAssertEqual(try httpCheck(" option httpchk GET /health"), HTTPCheck(method: "GET", uri: "/health"))
        // The seed's line, as haproxy 2.6 reads and sends it: the headers after the CR LF
        // in the version string are header fields ("HEAD / HTTP/1.1\r\nhost: localhost").
        XCTAssertEqual(try httpCheck(#" option httpchk HEAD / HTTP/1.1\r\nHost:localhost"#),
                       HTTPCheck(method: "HEAD", uri: "/", version: "HTTP/1.1",
                                 headers: [HTTPCheckHeader(name: "Host", value: "localhost")]))
        XCTAssertEqual(try httpCheck(#" option httpchk GET /x HTTP/1.1\r\nHost:\ a\r\nX-A:b\r\n\r\nping"#),
                       HTTPCheck(method: "GET", uri: "/x", version: "HTTP/1.1",
                                 headers: [HTTPCheckHeader(name: "Host", value: "a"), HTTPCheckHeader(name: "X-A", value: "b")],
                                 body: "ping"))
        // From defaults, and turned off again.
        let inherited = try parse("defaults\n option httpchk GET /ping\n" + minimalProxies)
        XCTAssertEqual(inherited.backends[0].healthCheck.http, HTTPCheck(method: "GET", uri: "/ping"))
        XCTAssertNil(try httpCheck(" option httpchk\n no option httpchk"))

        let line = 5
        assertError(backend(" option httpchk GET / HTTP/1.1 extra"), line: line, keyword: "option httpchk", "too many arguments")
        assertError(backend(" option httpchk GET / 1.1"), line: line, keyword: "option httpchk", "invalid HTTP version '1.1'")
        assertError(backend(#" option httpchk GET / HTTP/1.1\r\nnocolon"#), line: line, keyword: "option httpchk", "invalid header line 'nocolon'")
        assertError(backend(#" option httpchk G(T / HTTP/1.1"#), line: line, keyword: "option httpchk", "invalid method 'G(T'")
        assertError(backend(" option httpchk\n no option httpchk now"), line: 6, keyword: "no option httpchk", "arguments to 'no option httpchk' are not supported")
    }

    func testHTTPCheckSendAndExpect() throws {
        // `http-check send` overrides the option's method, URI and version; its headers
        // replace those of the version string (what haproxy 2.6 sends), whatever the order.
        XCTAssertEqual(try httpCheck("""
             http-check send meth POST uri /submit ver HTTP/1.1 hdr X-B "c d" body hello comment probe
             option httpchk GET /x HTTP/1.1\\r\\nHost:a
            """),
            HTTPCheck(method: "POST", uri: "/submit", version: "HTTP/1.1",
                      headers: [HTTPCheckHeader(name: "X-B", value: "c d")], body: "hello"))
        XCTAssertEqual(try httpCheck(" option httpchk GET /x HTTP/1.1\\r\\nHost:a\n http-check send body ok")?.headers,
                       [HTTPCheckHeader(name: "Host", value: "a")])

        XCTAssertEqual(try httpCheck(" option httpchk\n http-check expect status 200")?.expect, .status([200...200], negated: false))
        XCTAssertEqual(try httpCheck(" option httpchk\n http-check expect ! status 500,502-504")?.expect,
                       .status([500...500, 502...504], negated: true))
        XCTAssertEqual(try httpCheck(" option httpchk\n" + #" http-check expect rstatus ^2\d\d$"#)?.expect,
                       .statusRegex(#"^2\d\d$"#, negated: false))
        XCTAssertEqual(try httpCheck(" option httpchk\n http-check expect ! rstatus ^5")?.expect, .statusRegex("^5", negated: true))
        // haproxy ignores http-check rules without `option httpchk` (with a warning): the
        // checks stay TCP connects.
        XCTAssertEqual(try parse(backend(" http-check expect status 200")).backends[0].healthCheck, BackendHealthCheck())

        let line = 6
        let base = " option httpchk\n"
        assertError(backend(base + " http-check expect rstatus (2"), line: line, keyword: "http-check expect", "invalid regular expression '(2'")
        assertError(backend(base + " http-check expect status 2xx"), line: line, keyword: "http-check expect", "invalid status list '2xx'")
        assertError(backend(base + " http-check expect status 300-200"), line: line, keyword: "http-check expect", "invalid status list")
        assertError(backend(base + " http-check expect string OK"), line: line, keyword: "http-check expect", "'http-check expect string' is not supported")
        assertError(backend(base + " http-check expect status"), line: line, keyword: "http-check expect", "expected 'http-check expect [!] status CODES'")
        assertError(backend(base + " http-check expect status 200\n http-check expect status 204"), line: 7,
                    keyword: "http-check expect", "only one 'http-check expect' per backend is supported (first at line 6)")
        assertError(backend(base + " http-check send meth"), line: line, keyword: "meth", "'meth' needs a value")
        assertError(backend(base + " http-check send hdr X-A"), line: line, keyword: "hdr", "'hdr' needs a value")
        assertError(backend(base + " http-check send uri-lf /%[src]"), line: line, keyword: "uri-lf", "not supported")
        assertError(backend(base + " http-check send verb GET"), line: line, keyword: "verb", "unknown 'http-check send' option 'verb'")
        assertError(backend(base + " http-check connect"), line: line, keyword: "http-check connect", "not supported")
        assertError(backend(base + " http-check"), line: line, keyword: "http-check", "needs a rule")
        assertError("frontend fe\n http-check expect status 200\n", line: 2, keyword: "http-check", "not allowed in a frontend section")
    }

    func testCheckTimingParameters() throws {
        let configuration = try parse("""
            defaults
                timeout check 3s
                default-server inter 4s fastinter 1s downinter 20s rise 1 fall 5 slowstart 1m
            frontend fe
                bind :80
                default_backend be
            backend be
                server a 10.0.0.1:80 check
                server b 10.0.0.2:80 check slowstart 0
                server c 10.0.0.3:80
            """)
        let backend = configuration.backends[0]
        XCTAssertEqual(backend.healthCheck, BackendHealthCheck(http: nil, timeout: .seconds(3)))
        let check = HealthCheckConfig(interval: .seconds(4), rise: 1, fall: 5, fastInterval: .seconds(1), downInterval: .seconds(20))
        XCTAssertEqual(backend.servers, [
            ServerConfig(name: "a", address: hp("10.0.0.1", 80), check: check, slowStart: .seconds(60)),
            ServerConfig(name: "b", address: hp("10.0.0.2", 80), check: check, slowStart: nil),
            ServerConfig(name: "c", address: hp("10.0.0.3", 80), check: nil, slowStart: .seconds(60)),
        ])
        XCTAssertNil(backend.defaultCheck, "a backend without discovery has its servers' own checks")

        func server(_ rest: String) -> String { "global\n    maxconn 10\nbackend be\n    server \(rest)\n" }
        assertError(server("s1 10.0.0.1:80 fastinter 0"), line: 4, keyword: "fastinter", "invalid interval '0'")
        assertError(server("s1 10.0.0.1:80 downinter"), line: 4, keyword: "downinter", "'downinter' needs a value")
        assertError(server("s1 10.0.0.1:80 slowstart soon"), line: 4, keyword: "slowstart", "invalid duration 'soon'")
        assertError("frontend fe\n timeout check 2s\n", line: 2, keyword: "timeout check", "applies to the server side")
        assertError("backend be\n timeout check never\n", line: 2, keyword: "timeout check", "invalid duration 'never'")
    }

    func testDefaultServerCheckOfADiscoveredBackend() throws {
        func discovered(_ defaultServer: String) throws -> BackendConfig {
            try parse("frontend fe\n bind :80\n default_backend be\nbackend be\n discovery consul http://127.0.0.1:8500 service web\n \(defaultServer)\n").backends[0]
        }
        XCTAssertEqual(try discovered("default-server check inter 5s fall 2").defaultCheck,
                       HealthCheckConfig(interval: .seconds(5), rise: 2, fall: 2))
        XCTAssertNil(try discovered("default-server inter 5s").defaultCheck, "no 'check': discovered servers are not checked")
    }

    // MARK: error files

    private func errorFiles() throws -> (directory: String, e400: [UInt8], e503: [UInt8]) {
        let directory = NSTemporaryDirectory() + "balancerd-errorfiles-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        let e400 = Array("HTTP/1.0 400 Bad request\r\nContent-Type: text/plain\r\n\r\nno\n".utf8)
        let e503 = Array("HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nlater\n".utf8)
        FileManager.default.createFile(atPath: directory + "/400.http", contents: Data(e400))
        FileManager.default.createFile(atPath: directory + "/503.http", contents: Data(e503))
        FileManager.default.createFile(atPath: directory + "/empty.http", contents: Data())
        return (directory, e400, e503)
    }

    func testErrorFiles() throws {
        let (dir, e400, e503) = try errorFiles()
        let configuration = try parse("""
            defaults
                mode http
                errorfile 503 \(dir)/400.http
                errorfile 400 \(dir)/400.http
            frontend fe
                bind :80
                errorfile 503 \(dir)/503.http
                default_backend be
            backend be
                server s1 10.0.0.1:80
            listen both
                bind :81
                server s2 10.0.0.2:80
            """)
        // A later line for a status replaces the inherited one; each section gets its own.
        XCTAssertEqual(configuration.frontends[0].errorFiles, [
            ErrorFile(status: 400, path: "\(dir)/400.http", response: e400),
            ErrorFile(status: 503, path: "\(dir)/503.http", response: e503),
        ])
        let inherited = [ErrorFile(status: 503, path: "\(dir)/400.http", response: e400),
                         ErrorFile(status: 400, path: "\(dir)/400.http", response: e400)]
        XCTAssertEqual(configuration.backends[0].errorFiles, inherited)
        XCTAssertEqual(configuration.frontends[1].errorFiles, inherited)
        XCTAssertEqual(configuration.backends[1].errorFiles, inherited)

        assertError("defaults\n errorfile 418 \(dir)/400.http\n", line: 2, keyword: "errorfile", "status code '418' not handled")
        assertError("defaults\n errorfile 431 \(dir)/400.http\n", line: 2, keyword: "errorfile", "status code '431' not handled")
        assertError("backend be\n errorfile 503 \(dir)/missing.http\n", line: 2, keyword: "errorfile",
                    "'\(dir)/missing.http': cannot open: No such file or directory")
        assertError("backend be\n errorfile 503 \(dir)\n", line: 2, keyword: "errorfile", "cannot read")
        assertError("backend be\n errorfile 503 \(dir)/empty.http\n", line: 2, keyword: "errorfile", "is empty")
        assertError("backend be\n errorfile 503\n", line: 2, keyword: "errorfile", "'errorfile' needs 2 values")
    }

    // MARK: stats

    func testStatsSocket() throws {
        func socket(_ line: String) throws -> RuntimeSocketConfig? {
            try parse("global\n \(line)\n" + minimalProxies).global.statsSocket
        }
        // haproxy's default level for a socket line without `level` is operator.
        XCTAssertEqual(try socket("stats socket /run/haproxy.sock"), RuntimeSocketConfig(path: "/run/haproxy.sock", level: .operator))
        XCTAssertEqual(try socket("stats socket unix@/tmp/a.sock level user mode 0600 expose-fd listeners"),
                       RuntimeSocketConfig(path: "/tmp/a.sock", mode: 0o600, level: .user, exposeFDListeners: true))
        XCTAssertEqual(try socket("stats socket /run/a.sock level admin expose-fd listeners"),
                       RuntimeSocketConfig(path: "/run/a.sock", level: .admin, exposeFDListeners: true))
        XCTAssertNil(try parse(minimalProxies).global.statsSocket)
        assertError("global\n stats socket /run/a.sock expose-fd all\n", line: 2, keyword: "expose-fd", "only supports 'listeners' (got 'all')")
    }

    func testStatsSectionAuthAdminRefresh() throws {
        let configuration = try parse("""
            listen stats
                bind 127.0.0.1:8404
                mode http
                stats enable
                stats uri /stats
                stats refresh 5s
                stats realm Haproxy\\ Statistics
                stats auth admin:s3cr:et
                stats auth ops:
                stats admin if LOCALHOST
            """ + "\n" + minimalProxies)
        XCTAssertEqual(configuration.stats, StatsConfig(
            name: "stats", bind: hp("127.0.0.1", 8404), uri: "/stats", refresh: .seconds(5),
            credentials: [StatsCredential(user: "admin", password: "s3cr:et"), StatsCredential(user: "ops", password: "")],
            admin: true))
        let plain = try parse("listen stats\n bind :8404\n stats enable\n" + minimalProxies)
        XCTAssertEqual(plain.stats, StatsConfig(bind: hp("0.0.0.0", 8404)))

        let head = "listen stats\n bind :8404\n stats enable\n"
        assertError(head + " stats auth admin\n", line: 4, keyword: "stats auth", "expected 'stats auth USER:PASSWORD'")
        assertError(head + " stats auth :pw\n", line: 4, keyword: "stats auth", "expected 'stats auth USER:PASSWORD'")
        assertError(head + " stats admin\n", line: 4, keyword: "stats admin", "expected 'stats admin if CONDITION'")
        assertError(head + " stats admin when LOCALHOST\n", line: 4, keyword: "stats admin", "expected 'stats admin if CONDITION'")
        assertError(head + " stats refresh often\n", line: 4, keyword: "stats refresh", "invalid duration 'often'")
        assertError(head + " stats realm\n", line: 4, keyword: "stats realm", "needs a value")
    }

    func testHAProxyCorpus() throws {
        let corpus = Self.fixtures.appendingPathComponent("haproxy-corpus")
        let seed = try HAProxyParser.load(path: corpus.appendingPathComponent("seed-consul-template.cfg").path)
        XCTAssertEqual(seed.backends[0].healthCheck.http, HTTPCheck(method: "HEAD", uri: "/", version: "HTTP/1.1",
                                                                   headers: [HTTPCheckHeader(name: "Host", value: "localhost")]))
        XCTAssertEqual(seed.backends[0].servers.count, 2)
        XCTAssertEqual(seed.backends[0].servers.map(\.check), [HealthCheckConfig(), HealthCheckConfig()])

        // Debian's default file points its errorfiles at /etc/haproxy/errors, which the
        // haproxy package installs (.ci/run installs it).
        let debian = try HAProxyParser.load(path: corpus.appendingPathComponent("debian-default.cfg").path)
        XCTAssertEqual(debian.frontends, [])
        XCTAssertEqual(debian.global.statsSocket, RuntimeSocketConfig(path: "/run/haproxy/admin.sock", mode: 0o660, level: .admin))
    }

    private func tokenize(_ line: String) throws -> [String] {
        try HAProxyParser.tokenize(Substring(line).unicodeScalars, file: "t", line: 1)
    }

    // MARK: routes from Consul tags (issue 10)

    func testDiscoveryRoutesLineInAFrontend() throws {
        let configuration = try parse("""
            defaults
                mode http
            frontend www
                bind :80
                discovery consul http://127.0.0.1:8500 routes tag-prefix fabio- stale dc east token t0k
                default_backend fallback
            backend fallback
                server s1 127.0.0.1:8080
            """)
        XCTAssertEqual(configuration.frontends[0].routes,
                       RouteDiscoveryConfig(url: "http://127.0.0.1:8500", tagPrefix: "fabio-", stale: true, token: "t0k", datacenter: "east"))
        let plain = try parse("defaults\n mode http\nlisten web\n bind :80\n discovery consul http://c:8500 routes\n")
        XCTAssertEqual(plain.frontends[0].routes, RouteDiscoveryConfig(url: "http://c:8500"))
    }

    func testDiscoveryRoutesLineErrors() {
        assertError("defaults\n mode http\nbackend be\n discovery consul http://c:8500 routes\n", line: 4,
                    keyword: "discovery consul ... routes", "not allowed in a backend section")
        assertError("frontend fe\n bind :80\n mode tcp\n discovery consul http://c:8500 routes\n default_backend be\nbackend be\n",
                    line: 4, keyword: "discovery consul ... routes", "need 'mode http'")
        assertError("defaults\n mode http\nfrontend fe\n bind :80\n discovery consul http://c:8500 routes color blue\n", line: 5,
                    keyword: "color", "unknown routes parameter 'color'")
        assertError("defaults\n mode http\nfrontend fe\n bind :80\n discovery consul https://c:8500 routes\n", line: 5,
                    keyword: "discovery consul", "must start with http://")
    }


    func testDiscoveryConsulStaleInABackend() throws {
        let configuration = try parse("""
            defaults
                mode http
            frontend www
                bind :80
                default_backend web
            backend web
                discovery consul http://127.0.0.1:8500 service web stale tag prod
            """)
        XCTAssertEqual(configuration.backends[0].discovery,
                       .consul(url: "http://127.0.0.1:8500", service: "web", tag: "prod", datacenter: nil, token: nil, stale: true))
        assertError("backend be\n discovery consul http://c:8500 service web stale stale\n", line: 2, keyword: "stale", "given twice")
    }

}

// MARK: TLS health checks (`check-ssl`, `no-check-ssl`, `check-sni`)

extension ConfigParserTests {
    /// haproxy's rules: checks of an `ssl` server use TLS with its `verify` and `ca-file`
    /// but not its `sni` (haproxy 2.6 sends `check-sni` only); `no-check-ssl` makes them
    /// plain; `check-ssl` makes a plain server's checks TLS; both inherit through
    /// `default-server`, a later word wins. The export writes what it takes to read the
    /// same model back.
    func testCheckSSLKeywordsAndTheirExport() throws {
        let configuration = try parse("""
            defaults
                mode http
            backend be
                server tls 10.0.0.1:443 check ssl verify required ca-file /ca.pem sni str(www.test)
                server named 10.0.0.2:443 check ssl verify none check-sni health.test
                server plainchecks 10.0.0.3:443 check ssl verify none no-check-ssl
                server forced 10.0.0.4:80 check check-ssl verify none check-sni f.test
                default-server check-ssl verify required ca-file /ca.pem
                server inherits 10.0.0.5:80 check
                server overrides 10.0.0.6:80 check no-check-ssl
                server last 10.0.0.7:80 check no-check-ssl check-ssl
            frontend fe
                bind :80
                default_backend be
            """)
        let servers = configuration.backends[0].servers
        func check(_ name: String) -> TLSServerConfig?? { servers.first { $0.name == name }.map(\.checkTLS) }
        XCTAssertEqual(check("tls"), .some(TLSServerConfig(verify: .required, caFile: "/ca.pem")),
                       "an ssl server checks over TLS, verifying as traffic does, without the traffic's sni")
        XCTAssertEqual(servers[0].tls, TLSServerConfig(verify: .required, caFile: "/ca.pem", serverName: "www.test"))
        XCTAssertEqual(check("named"), .some(TLSServerConfig(verify: .none, serverName: "health.test")))
        XCTAssertEqual(check("plainchecks"), .some(nil))
        XCTAssertNotNil(servers[2].tls, "no-check-ssl leaves the traffic's TLS alone")
        XCTAssertEqual(check("forced"), .some(TLSServerConfig(verify: .none, serverName: "f.test")))
        XCTAssertNil(servers[3].tls, "check-ssl does not make traffic TLS")
        XCTAssertEqual(check("inherits"), .some(TLSServerConfig(verify: .required, caFile: "/ca.pem")))
        XCTAssertEqual(check("overrides"), .some(nil))
        XCTAssertEqual(check("last"), .some(TLSServerConfig(verify: .required, caFile: "/ca.pem")))

        let exported = HAProxyWriter.write(configuration)
        for expected in [
            "server tls 10.0.0.1:443 weight 1 check inter 2s rise 2 fall 3 ssl verify required ca-file /ca.pem sni str(www.test)\n",
            "server named 10.0.0.2:443 weight 1 check inter 2s rise 2 fall 3 ssl verify none check-sni health.test\n",
            "server plainchecks 10.0.0.3:443 weight 1 check inter 2s rise 2 fall 3 ssl verify none no-check-ssl\n",
            "server forced 10.0.0.4:80 weight 1 check inter 2s rise 2 fall 3 check-ssl verify none check-sni f.test\n",
            "server inherits 10.0.0.5:80 weight 1 check inter 2s rise 2 fall 3 check-ssl verify required ca-file /ca.pem\n",
            "server overrides 10.0.0.6:80 weight 1 check inter 2s rise 2 fall 3\n",
        ] {
            XCTAssertTrue(exported.contains(expected), "missing '\(expected)' in\n\(exported)")
        }
        XCTAssertEqual(try parse(exported).backends[0].servers, servers, "the export reads back as the same servers")
    }

    /// The model's default for servers built in code: checks follow `tls`, without its name.
    func testServerConfigChecksFollowTrafficTLSByDefault() {
        let address = HostPort(host: "10.0.0.1", port: 443)
        let tls = TLSServerConfig(verify: .required, caFile: "/ca.pem", serverName: "www.test")
        XCTAssertEqual(ServerConfig(name: "a", address: address, tls: tls).checkTLS, TLSServerConfig(verify: .required, caFile: "/ca.pem"))
        XCTAssertNil(ServerConfig(name: "a", address: address).checkTLS)
        XCTAssertNil(ServerConfig(name: "a", address: address, tls: tls, checkTLS: nil).checkTLS)
    }

    /// Errors name the file, line and keyword: `check-ssl` needs a CA file under haproxy's
    /// default `verify required` as `ssl` does (haproxy -c refuses it too), and
    /// `check-sni` takes a plain name.
    func testCheckSSLErrors() {
        func server(_ rest: String) -> String { "global\n    maxconn 10\nbackend be\n    server \(rest)\n" }
        assertError(server("s1 10.0.0.1:80 check check-ssl"), line: 4, keyword: "server",
                    "server 's1': 'check-ssl' verifies the server's certificate by default ('verify required') and needs a 'ca-file'")
        assertError(server("s1 10.0.0.1:443 check ssl check-ssl"), line: 4, keyword: "server", "'ssl' verifies")
        assertError(server("s1 10.0.0.1:80 check check-sni"), line: 4, keyword: "check-sni", "'check-sni' needs a value")
        assertError(server("s1 10.0.0.1:80 check check-sni str(a.test)"), line: 4, keyword: "check-sni",
                    "invalid server name 'str(a.test)' (check-sni takes a plain host name")
        assertError("global\n    maxconn 10\nbackend be\n    default-server check-ssl\n    server s1 10.0.0.1:80 check\n",
                    line: 5, keyword: "server", "'check-ssl' verifies")
        XCTAssertNoThrow(try parse(server("s1 10.0.0.1:443 check ssl no-check-ssl verify none")))
        XCTAssertNoThrow(try parse(server("s1 10.0.0.1:80 check check-ssl verify none")))
    }
}
