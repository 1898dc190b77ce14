import Foundation
import Balancer
import XCTest
@testable import balancerd

final class CommandLineOptionsTests: XCTestCase {
    private func parse(_ arguments: String...) throws -> CommandLineOptions {
        try CommandLineOptions.parse(arguments)
    }

    /// Asserts the arguments are rejected with exactly `message`.
    private func assertUsageError(_ arguments: [String], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        do throws(UsageError) {
            let options = try CommandLineOptions.parse(arguments)
            XCTFail("expected a usage error, got \(options)", file: file, line: line)
        } catch {
            XCTAssertEqual(error.message, message, file: file, line: line)
        }
    }

    private var fixtures: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures").path
    }

    // MARK: commands

    func testHelpAndVersion() throws {
        XCTAssertEqual(try parse("--help").command, .help)
        XCTAssertEqual(try parse("--version").command, .version)
    }

    func testHelpWinsOverMissingServers() throws {
        XCTAssertEqual(try parse("--listen", ":8080", "--help").command, .help)
        XCTAssertEqual(try parse("check", "--help").command, .help)
        XCTAssertEqual(try parse("--version", "--help").command, .help)
    }

    func testNoArgumentsNeedsServers() {
        assertUsageError([], "no servers: give --server HOST:PORT, --consul URL, --etcd URL or --config FILE")
        assertUsageError(["--listen", ":80"], "no servers: give --server HOST:PORT, --consul URL, --etcd URL or --config FILE")
    }

    func testCheck() throws {
        let options = try parse("check", "--config", "/etc/balancerd/haproxy.cfg")
        XCTAssertEqual(options.command, .check)
        XCTAssertEqual(options.configPath, "/etc/balancerd/haproxy.cfg")
        assertUsageError(["check"], "check needs --config FILE")
        assertUsageError(["check", "--config", "x.cfg", "--threads", "2"], "check takes only --config FILE, not --threads")
        assertUsageError(["--config", "x.cfg", "check"], "unexpected argument 'check' ('check' must come first)")
    }

    func testReload() throws {
        XCTAssertEqual(try parse("reload", "/run/balancerd/admin.sock").command, .reload(socket: "/run/balancerd/admin.sock"))
        let message = "reload takes one argument: the Runtime API socket of the running balancerd (reload /run/balancerd/admin.sock)"
        assertUsageError(["reload"], message)
        assertUsageError(["reload", "--config", "x.cfg"], message)
        assertUsageError(["reload", "/run/a.sock", "/run/b.sock"], message)
    }

    /// The successor runs the same arguments, without the -x of the process it replaces.
    func testSuccessorKeepsTheArgumentsButAnEarlierTakeover() {
        let successor = Successor(commandLine: ["/usr/local/bin/balancerd", "--config", "f.cfg", "-x", "/run/old.sock",
                                                "--grace", "30s", "--takeover=/run/older.sock", "--takeover", "/run/x.sock"],
                                  socketPath: "/run/balancerd/admin.sock")
        XCTAssertEqual(successor.executable, "/usr/local/bin/balancerd")
        XCTAssertEqual(successor.arguments, ["--config", "f.cfg", "--grace", "30s"])
        let relative = Successor(commandLine: ["./balancerd", "--config", "f.cfg"], socketPath: nil)
        XCTAssertEqual(relative.executable, FileManager.default.currentDirectoryPath + "/./balancerd")
        XCTAssertEqual(Successor(commandLine: ["balancerd"], socketPath: nil).executable, "balancerd", "a bare name is looked up in PATH")
    }

    // MARK: flags

    func testDefaults() throws {
        let options = try parse("--server", "10.0.0.1:80")
        XCTAssertEqual(options.command, .run)
        XCTAssertNil(options.configPath)
        XCTAssertNil(options.listen)
        XCTAssertNil(options.mode)
        XCTAssertNil(options.threads)
        XCTAssertEqual(options.grace, .seconds(10))
        XCTAssertFalse(options.quiet)
        XCTAssertFalse(options.demo)
        XCTAssertEqual(options.servers, [ServerConfig(name: "s1", address: HostPort(host: "10.0.0.1", port: 80))])
    }

    func testAllFlagsBothSpellings() throws {
        let spaced = try parse("--listen", "127.0.0.1:8080", "--mode", "http", "--server", "a:1", "--server", "b:2,weight=5",
                               "--threads", "4", "--grace", "30s", "--quiet")
        let joined = try parse("--listen=127.0.0.1:8080", "--mode=http", "--server=a:1", "--server=b:2,weight=5",
                               "--threads=4", "--grace=30s", "--quiet")
        XCTAssertEqual(spaced, joined)
        XCTAssertEqual(spaced.listen, HostPort(host: "127.0.0.1", port: 8080))
        XCTAssertEqual(spaced.mode, .http)
        XCTAssertEqual(spaced.threads, 4)
        XCTAssertEqual(spaced.grace, .seconds(30))
        XCTAssertTrue(spaced.quiet)
        XCTAssertEqual(spaced.servers, [
            ServerConfig(name: "s1", address: HostPort(host: "a", port: 1)),
            ServerConfig(name: "s2", address: HostPort(host: "b", port: 2), weight: 5),
        ])
    }

    func testServerForms() throws {
        let options = try parse("--server", "10.0.0.1:80", "--server", "[::1]:8080,weight=0", "--server", "db.internal:5432,backup",
                                "--server", "h:9,weight=256,backup")
        XCTAssertEqual(options.servers.map(\.name), ["s1", "s2", "s3", "s4"])
        XCTAssertEqual(options.servers[1].address, HostPort(host: "::1", port: 8080))
        XCTAssertEqual(options.servers[1].weight, 0)
        XCTAssertTrue(options.servers[2].backup)
        XCTAssertEqual(options.servers[2].weight, 1)
        XCTAssertEqual(options.servers[3].weight, 256)
        XCTAssertTrue(options.servers[3].backup)
        XCTAssertNil(options.servers[0].check)
    }

    func testBadServers() {
        assertUsageError(["--server", "10.0.0.1"], "--server: missing port in '10.0.0.1' (expected HOST:PORT)")
        assertUsageError(["--server", "10.0.0.1:0"], "--server: invalid port '0' in '10.0.0.1:0' (expected 1...65535)")
        assertUsageError(["--server", "10.0.0.1:70000"], "--server: invalid port '70000' in '10.0.0.1:70000' (expected 1...65535)")
        assertUsageError(["--server", ":80"], "--server: missing host in ':80'")
        assertUsageError(["--server", "a:1,weight=257"], "--server: weight must be an integer from 0 to 256, got '257'")
        assertUsageError(["--server", "a:1,weight=-1"], "--server: weight must be an integer from 0 to 256, got '-1'")
        assertUsageError(["--server", "a:1,weight="], "--server: weight must be an integer from 0 to 256, got ''")
        assertUsageError(["--server", "a:1,check"], "--server: unknown option 'check' in 'a:1,check' (expected weight=N or backup)")
        assertUsageError(["--server", "a:1,"], "--server: unknown option '' in 'a:1,' (expected weight=N or backup)")
        assertUsageError(["--server", "a:1,weight=2,weight=3"], "--server: 'weight' given more than once in 'a:1,weight=2,weight=3'")
    }

    func testListenForms() throws {
        XCTAssertEqual(try parse("--listen", "*:80", "--server", "a:1").listen, HostPort(host: "0.0.0.0", port: 80))
        XCTAssertEqual(try parse("--listen", ":8080", "--server", "a:1").listen, HostPort(host: "0.0.0.0", port: 8080))
        XCTAssertEqual(try parse("--listen", "[::]:80", "--server", "a:1").listen, HostPort(host: "::", port: 80))
        XCTAssertEqual(try parse("--listen", "127.0.0.1:0", "--server", "a:1").listen, HostPort(host: "127.0.0.1", port: 0))
        assertUsageError(["--listen", "80", "--server", "a:1"], "--listen: missing port in '80' (expected HOST:PORT)")
        assertUsageError(["--listen", "a:1", "--listen", "b:2"], "--listen given more than once")
    }

    func testBadValues() {
        assertUsageError(["--mode", "udp"], "--mode: expected http or tcp, got 'udp'")
        assertUsageError(["--threads", "0"], "--threads: expected an integer from 1 to 1024, got '0'")
        assertUsageError(["--threads", "1025"], "--threads: expected an integer from 1 to 1024, got '1025'")
        assertUsageError(["--threads", "four"], "--threads: expected an integer from 1 to 1024, got 'four'")
        assertUsageError(["--threads", "+4"], "--threads: expected an integer from 1 to 1024, got '+4'")
        assertUsageError(["--grace", "soon"], "--grace: invalid duration 'soon' (e.g. 500ms, 10s, 2m)")
        assertUsageError(["--grace", "-1s"], "--grace: invalid duration '-1s' (e.g. 500ms, 10s, 2m)")
    }

    func testMissingValues() {
        assertUsageError(["--config"], "--config needs a value")
        assertUsageError(["--config", "--quiet"], "--config needs a value")
        assertUsageError(["--server="], "--server needs a value")
        assertUsageError(["--grace"], "--grace needs a value")
    }

    func testUnknownAndMalformed() {
        assertUsageError(["--bogus"], "unknown option '--bogus' (see --help)")
        assertUsageError(["-h"], "unexpected argument '-h'")
        assertUsageError(["serve"], "unexpected argument 'serve'")
        assertUsageError(["--quiet=yes", "--server", "a:1"], "--quiet takes no value")
        assertUsageError(["--help=1"], "--help takes no value")
    }

    func testBareNumberGraceIsMilliseconds() throws {
        XCTAssertEqual(try parse("--grace", "2500", "--server", "a:1").grace, .milliseconds(2_500))
    }

    func testConfigExcludesInlineSetup() throws {
        let message = "--config cannot be combined with --listen/--server/--mode/--consul/--etcd; put them in the file"
        assertUsageError(["--config", "x.cfg", "--listen", ":80"], message)
        assertUsageError(["--server", "a:1", "--config", "x.cfg"], message)
        assertUsageError(["--config=x.cfg", "--mode=http"], message)
        assertUsageError(["--config", "x.cfg", "--demo"], "--demo cannot be combined with --config; the demo brings its own servers")
        // --threads, --grace and --quiet are not part of the file.
        let options = try parse("--config", "x.cfg", "--threads", "2", "--grace", "1m", "--quiet")
        XCTAssertEqual(options.configPath, "x.cfg")
        XCTAssertEqual(options.threads, 2)
    }

    func testDemoNeedsNoServers() throws {
        let options = try parse("--demo")
        XCTAssertTrue(options.demo)
        let configuration = try options.configuration()
        XCTAssertEqual(configuration.frontends.count, 1)
        XCTAssertEqual(configuration.backends.first?.servers, [])
    }

    // MARK: configuration()

    func testConfigurationFromFlags() throws {
        let configuration = try parse("--server", "10.0.0.1:80", "--server", "10.0.0.2:80,weight=2", "--threads", "3")
            .configuration()
        XCTAssertEqual(configuration.global.threads, 3)
        XCTAssertEqual(configuration.frontends, [
            Frontend(name: "main", binds: [HostPort(host: "0.0.0.0", port: 80)], mode: .http, defaultBackend: "main",
                     forwardFor: true),
        ])
        XCTAssertEqual(configuration.backends, [
            BackendConfig(name: "main", mode: .http, servers: [
                ServerConfig(name: "s1", address: HostPort(host: "10.0.0.1", port: 80)),
                ServerConfig(name: "s2", address: HostPort(host: "10.0.0.2", port: 80), weight: 2),
            ]),
        ])
    }

    func testConfigurationFromFlagsHTTPAndListen() throws {
        let configuration = try parse("--listen", "127.0.0.1:0", "--mode", "http", "--server", "a:1").configuration()
        XCTAssertEqual(configuration.frontends.first?.binds, [HostPort(host: "127.0.0.1", port: 0)])
        XCTAssertEqual(configuration.frontends.first?.mode, .http)
        XCTAssertEqual(configuration.backends.first?.mode, .http)
        XCTAssertNil(configuration.global.threads)
        XCTAssertNotNil(configuration.backend(named: configuration.frontends[0].defaultBackend))
    }

    func testConfigurationFromFileWithThreadsOverride() throws {
        let path = fixtures + "/tcp-listen.cfg"
        let fromFile = try parse("--config", path).configuration()
        XCTAssertEqual(fromFile.global.threads, 4)
        let overridden = try parse("--config", path, "--threads", "8").configuration()
        XCTAssertEqual(overridden.global.threads, 8)
        XCTAssertEqual(overridden.frontends, fromFile.frontends)
    }

    func testConfigurationFromMissingFile() throws {
        let options = try parse("--config", "/nonexistent/balancerd.cfg")
        XCTAssertThrowsError(try options.configuration()) { error in
            guard let error = error as? ConfigurationError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.line, 0)
            XCTAssertEqual(error.keyword, "file")
            XCTAssertEqual(error.file, "/nonexistent/balancerd.cfg")
        }
    }

    // MARK: discovery flags

    func testConsulFlags() throws {
        let options = try CommandLineOptions.parse(["--consul", "http://127.0.0.1:8500", "--service", "web", "--tag", "prod",
                                                    "--dc", "dc2", "--consul-token", "secret"])
        XCTAssertEqual(options.discovery, .consul(url: "http://127.0.0.1:8500", service: "web", tag: "prod", datacenter: "dc2", token: "secret"))
        let configuration = try options.configuration()
        XCTAssertEqual(configuration.backends.first?.discovery, options.discovery)
        XCTAssertEqual(configuration.backends.first?.servers, [])
    }

    func testEtcdFlags() throws {
        let options = try CommandLineOptions.parse(["--etcd", "http://127.0.0.1:2379", "--etcd-prefix", "/services/web/"])
        XCTAssertEqual(options.discovery, .etcd(url: "http://127.0.0.1:2379", prefix: "/services/web/"))
    }

    func testIncompleteDiscoveryFlagsAreUsageErrors() {
        let cases: [([String], String)] = [
            (["--consul", "http://127.0.0.1:8500"], "--consul needs --service NAME or --routes-from-tags"),
            (["--service", "web"], "--service, --tag, --dc and --consul-token need --consul URL"),
            (["--etcd", "http://127.0.0.1:2379"], "--etcd needs --etcd-prefix PREFIX"),
            (["--etcd-prefix", "/x/"], "--etcd-prefix needs --etcd URL"),
            (["--consul", "127.0.0.1:8500", "--service", "web"], "--consul: URL must start with http:// (got '127.0.0.1:8500')"),
            (["--consul", "http://c:8500", "--service", "web", "--etcd", "http://e:2379", "--etcd-prefix", "/p/"],
             "--consul and --etcd cannot be combined"),
        ]
        for (arguments, message) in cases {
            XCTAssertThrowsError(try CommandLineOptions.parse(arguments), "\(arguments)") { error in
                XCTAssertEqual((error as? UsageError)?.message, message)
            }
        }
    }

    // MARK: routes from Consul tags

    func testRoutesFromTagsGiveFrontendMainItsRouteSource() throws {
        let options = try CommandLineOptions.parse(["--consul", "http://127.0.0.1:8500", "--routes-from-tags", "--listen", "127.0.0.1:8080"])
        XCTAssertNil(options.discovery, "no --service: backend main follows nothing")
        XCTAssertEqual(options.routes, RouteDiscoveryConfig(url: "http://127.0.0.1:8500", tagPrefix: "urlprefix-"))
        let configuration = try options.configuration()
        XCTAssertEqual(configuration.frontends.first?.routes, options.routes)
        XCTAssertEqual(configuration.frontends.first?.mode, .http)
        XCTAssertEqual(configuration.backends.first?.servers, [], "unmatched requests have no server unless --server gives some")
        XCTAssertFalse(options.consulStale)
    }

    func testRoutesFromTagsWithEveryConsulOption() throws {
        let options = try CommandLineOptions.parse([
            "--consul", "http://127.0.0.1:8500", "--routes-from-tags", "--tag-prefix", "route-", "--dc", "dc2",
            "--consul-token", "secret", "--consul-stale", "--consul-max-stale", "500ms", "--server", "127.0.0.1:9000"])
        XCTAssertEqual(options.routes, RouteDiscoveryConfig(url: "http://127.0.0.1:8500", tagPrefix: "route-", stale: true,
                                                            token: "secret", datacenter: "dc2"))
        XCTAssertTrue(options.consulStale)
        XCTAssertEqual(options.consulMaxStale, .milliseconds(500))
        XCTAssertEqual(try options.configuration().backends.first?.servers.map(\.address.description), ["127.0.0.1:9000"])
    }

    func testRoutesAndAServiceTogether() throws {
        let options = try CommandLineOptions.parse(["--consul", "http://c:8500", "--service", "web", "--routes-from-tags"])
        XCTAssertEqual(options.discovery, .consul(url: "http://c:8500", service: "web", tag: nil, datacenter: nil, token: nil))
        XCTAssertEqual(options.routes?.url, "http://c:8500")
    }

    func testConsulStaleAppliesToServiceDiscoveryToo() throws {
        let options = try CommandLineOptions.parse(["--consul", "http://c:8500", "--service", "web", "--consul-stale"])
        XCTAssertNil(options.routes)
        XCTAssertTrue(options.consulStale)
        XCTAssertEqual(options.consulMaxStale, .seconds(2), "the default bound")
        XCTAssertTrue(try CommandLineOptions.parse(["--config", "\(fixtures)/consul-template.cfg", "--consul-stale"]).consulStale,
                       "the file's discovery consul lines read stale too")
    }

    func testBadRouteFlagsAreUsageErrors() {
        assertUsageError(["--routes-from-tags"], "--routes-from-tags needs --consul URL")
        assertUsageError(["--server", "127.0.0.1:1", "--tag-prefix", "x-"], "--tag-prefix needs --routes-from-tags")
        assertUsageError(["--consul", "http://c:8500", "--service", "web", "--tag-prefix", "x-"], "--tag-prefix needs --routes-from-tags")
        assertUsageError(["--consul", "http://c:8500", "--routes-from-tags", "--tag", "prod"],
                         "--tag needs --service NAME (route tags are chosen with --tag-prefix)")
        assertUsageError(["--consul", "http://c:8500", "--routes-from-tags", "--tag-prefix", "a b"],
                         "--tag-prefix: a prefix cannot contain blanks, got 'a b'")
        assertUsageError(["--consul", "http://c:8500", "--routes-from-tags", "--mode", "tcp"],
                         "--routes-from-tags routes HTTP requests; it cannot be combined with --mode tcp")
        assertUsageError(["--server", "127.0.0.1:1", "--consul-stale"],
                         "--consul-stale needs --consul URL (or --config FILE with discovery consul lines)")
        assertUsageError(["--consul", "http://c:8500", "--routes-from-tags", "--consul-max-stale", "2s"],
                         "--consul-max-stale needs --consul-stale (only stale reads can be behind the leader)")
        assertUsageError(["--consul", "http://c:8500", "--routes-from-tags", "--consul-stale", "--consul-max-stale", "soon"],
                         "--consul-max-stale: invalid duration 'soon' (e.g. 500ms, 2s)")
        assertUsageError(["--consul", "http://c:8500", "--routes-from-tags", "--routes-from-tags=yes"], "--routes-from-tags takes no value")
        assertUsageError(["--config", "x.cfg", "--consul", "http://c:8500", "--routes-from-tags"],
                         "--config cannot be combined with --listen/--server/--mode/--consul/--etcd; put them in the file")
    }

    func testUsageNamesTheRouteFlags() {
        for flag in ["--routes-from-tags", "--tag-prefix", "--consul-stale", "--consul-max-stale"] {
            XCTAssertTrue(CommandLineOptions.usage.contains(flag), flag)
        }
    }

    // MARK: health check flags

    func testCheckIntervalChecksEveryServerAndDiscoveredOnes() throws {
        let configuration = try parse("--server", "10.0.0.1:80", "--server", "10.0.0.2:80", "--check-interval", "500ms")
            .configuration()
        let backend = try XCTUnwrap(configuration.backends.first)
        let check = HealthCheckConfig(interval: .milliseconds(500), rise: 2, fall: 3)
        XCTAssertEqual(backend.defaultCheck, check)
        XCTAssertEqual(backend.servers.map(\.check), [check, check])
        XCTAssertNil(backend.healthCheck.http, "without --check-http a check is a TCP connect")

        let discovered = try parse("--consul", "http://127.0.0.1:8500", "--service", "web", "--check-interval", "1s").configuration()
        XCTAssertEqual(discovered.backends.first?.defaultCheck, HealthCheckConfig(interval: .seconds(1)))
    }

    func testCheckHTTPMakesChecksGETsWithTheServersAddressAsHost() throws {
        let configuration = try parse("--server", "10.0.0.1:80", "--check-interval", "2s", "--check-http", "/health")
            .configuration()
        XCTAssertEqual(configuration.backends.first?.healthCheck.http,
                       HTTPCheck(method: "GET", uri: "/health", version: "HTTP/1.1", expect: nil, hostFromServerAddress: true))
        // Alone, it checks at haproxy's default interval.
        let alone = try parse("--server", "10.0.0.1:80", "--check-http", "/").configuration()
        XCTAssertEqual(alone.backends.first?.servers.first?.check, HealthCheckConfig(interval: .seconds(2)))
        XCTAssertEqual(alone.backends.first?.healthCheck.http?.uri, "/")
        // No flag, no checks.
        let none = try parse("--server", "10.0.0.1:80").configuration()
        XCTAssertNil(none.backends.first?.defaultCheck)
        XCTAssertNil(none.backends.first?.servers.first?.check)
    }

    func testBadCheckFlags() {
        assertUsageError(["--server", "a:1", "--check-interval", "soon"], "--check-interval: invalid duration 'soon' (e.g. 500ms, 2s, 1m)")
        assertUsageError(["--server", "a:1", "--check-interval", "0"], "--check-interval: invalid duration '0' (e.g. 500ms, 2s, 1m)")
        assertUsageError(["--server", "a:1", "--check-http", "health"],
                         "--check-http: expected a path starting with '/' and without spaces, got 'health'")
        assertUsageError(["--server", "a:1", "--check-interval", "1s", "--check-interval", "2s"], "--check-interval given more than once")
        assertUsageError(["--config", "x.cfg", "--check-interval", "1s"],
                         "--check-interval and --check-http cannot be combined with --config; use `check` and `option httpchk` in the file")
    }

    // MARK: export

    func testCommandLineConfigurationsRoundTrip() throws {
        let options = try CommandLineOptions.parse(["--listen", "127.0.0.1:8080", "--server", "10.0.0.1:80",
                                                    "--server", "10.0.0.2:80,weight=3,backup", "--stats", ":8404"])
        let model = try options.configuration()
        let exported = HAProxyWriter.write(model)
        XCTAssertEqual(try HAProxyParser.parse(exported, file: "x").normalized(), model.normalized())
        XCTAssertTrue(exported.contains("    server s2 10.0.0.2:80 weight 3 backup"), exported)
        XCTAssertTrue(exported.contains("    option redispatch"), "haproxy's default differs: it must be explicit\n\(exported)")
        XCTAssertTrue(exported.contains("    option forwardfor"), exported)
    }

    func testTLSCertificateFlags() throws {
        let options = try CommandLineOptions.parse(["--listen", "127.0.0.1:8443", "--tls-cert", "/etc/a.pem",
                                                    "--tls-cert", "/etc/certs", "--server", "10.0.0.1:80"])
        let model = try options.configuration()
        let tls = try XCTUnwrap(model.frontends[0].tls[HostPort(host: "127.0.0.1", port: 8443)])
        XCTAssertEqual(tls.certificates, ["/etc/a.pem", "/etc/certs"])
        XCTAssertEqual(tls.alpn, ["http/1.1"])
        XCTAssertEqual(tls.options.minVersion, .tls12)
        let exported = HAProxyWriter.write(model)
        XCTAssertTrue(exported.contains("    bind 127.0.0.1:8443 ssl crt /etc/a.pem crt /etc/certs alpn http/1.1 ssl-min-ver TLSv1.2"), exported)
        XCTAssertEqual(try HAProxyParser.parse(exported, file: "x").normalized(), model.normalized())

        XCTAssertThrowsError(try CommandLineOptions.parse(["--tls-cert", "/etc/a.pem", "--server", "10.0.0.1:80"])) {
            XCTAssertTrue("\($0)".contains("--tls-cert needs --listen"), "\($0)")
        }
        XCTAssertThrowsError(try CommandLineOptions.parse(["--listen", ":443", "--mode", "tcp", "--tls-cert", "/etc/a.pem"])) {
            XCTAssertTrue("\($0)".contains("HTTP mode only"), "\($0)")
        }
    }

    func testUsageMentionsEveryFlag() {
        for flag in ["--config", "--listen", "--tls-cert", "--mode", "--server", "--threads", "--grace", "--quiet", "--demo", "--help",
                     "--version", "check", "--check-interval", "--check-http"] {
            XCTAssertTrue(CommandLineOptions.usage.contains(flag), flag)
        }
        XCTAssertTrue(CommandLineOptions.usage.hasPrefix(
            "usage: balancerd [--config FILE] [--listen HOST:PORT [--tls-cert PEM]...] [--mode http|tcp] [--server HOST:PORT[,weight=N]]...\n"))
    }

    // MARK: --stats-socket

    func testStatsSocketOpensTheRuntimeAPIAtLevelAdmin() throws {
        let options = try CommandLineOptions.parse(["--server", "10.0.0.1:80", "--stats-socket", "/run/balancerd.sock"])
        XCTAssertEqual(options.statsSocket, "/run/balancerd.sock")
        XCTAssertEqual(try options.configuration().global.statsSocket,
                       RuntimeSocketConfig(path: "/run/balancerd.sock", mode: nil, level: .admin, exposeFDListeners: true))
        XCTAssertNil(try CommandLineOptions.parse(["--server", "10.0.0.1:80"]).configuration().global.statsSocket)
        XCTAssertEqual(try CommandLineOptions.parse(["--server", "10.0.0.1:80", "--stats-socket=/tmp/a"]).statsSocket, "/tmp/a")
        XCTAssertThrowsError(try CommandLineOptions.parse(["--server", "10.0.0.1:80", "--stats-socket"])) {
            XCTAssertEqual(($0 as? UsageError)?.message, "--stats-socket needs a value")
        }
        XCTAssertThrowsError(try CommandLineOptions.parse(["--server", "10.0.0.1:80", "--stats-socket", "/a", "--stats-socket", "/b"])) {
            XCTAssertEqual(($0 as? UsageError)?.message, "--stats-socket given more than once")
        }
        XCTAssertTrue(CommandLineOptions.usage.contains("--stats-socket PATH  haproxy's Runtime API on a unix socket"))
    }

    // MARK: -x / --takeover

    func testTakeoverTakesAPathUnderBothSpellings() throws {
        XCTAssertEqual(try CommandLineOptions.parse(["--config", "/etc/b.cfg", "-x", "/run/b.sock"]).takeover, "/run/b.sock")
        XCTAssertEqual(try CommandLineOptions.parse(["--config", "/etc/b.cfg", "--takeover", "/run/b.sock"]).takeover, "/run/b.sock")
        XCTAssertEqual(try CommandLineOptions.parse(["--server", "10.0.0.1:80", "--takeover=/tmp/a"]).takeover, "/tmp/a")
        XCTAssertNil(try CommandLineOptions.parse(["--config", "/etc/b.cfg"]).takeover)
        XCTAssertThrowsError(try CommandLineOptions.parse(["--config", "/etc/b.cfg", "-x"])) {
            XCTAssertEqual(($0 as? UsageError)?.message, "--takeover needs a value")
        }
        XCTAssertThrowsError(try CommandLineOptions.parse(["--config", "/etc/b.cfg", "-x", "/a", "--takeover", "/b"])) {
            XCTAssertEqual(($0 as? UsageError)?.message, "--takeover given more than once")
        }
        XCTAssertThrowsError(try CommandLineOptions.parse(["check", "--config", "/etc/b.cfg", "-x", "/a"]))
        XCTAssertTrue(CommandLineOptions.usage.contains("-x, --takeover PATH"))
    }
}
