import XCTest
@testable import Balancer

final class DiscoveryConfigTests: XCTestCase {
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
            (["--consul", "http://127.0.0.1:8500"], "--consul needs --service NAME"),
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

    func testDiscoveryInConfigFile() throws {
        let text = """
            defaults
                mode http
            frontend fe
                bind 127.0.0.1:8080
                default_backend web
            backend web
                balance roundrobin
                discovery consul http://127.0.0.1:8500 service web tag prod dc dc1
            listen db
                mode tcp
                bind 127.0.0.1:5433
                discovery etcd http://127.0.0.1:2379 prefix /services/db/
            """
        let configuration = try HAProxyParser.parse(text, file: "d.cfg")
        XCTAssertEqual(configuration.backend(named: "web")?.discovery,
                       .consul(url: "http://127.0.0.1:8500", service: "web", tag: "prod", datacenter: "dc1", token: nil))
        XCTAssertEqual(configuration.backend(named: "db")?.discovery, .etcd(url: "http://127.0.0.1:2379", prefix: "/services/db/"))
    }

    func testBadDiscoveryLinesNameLineAndKeyword() {
        let cases: [(String, Int, String)] = [
            ("backend b\n    discovery zookeeper http://z:1 path /x\n", 2, "discovery zookeeper"),
            ("backend b\n    discovery consul http://c:8500\n", 2, "discovery consul"),
            ("backend b\n    discovery consul http://c:8500 service web colour red\n", 2, "colour"),
            ("backend b\n    discovery etcd http://e:2379 prefix /a/ prefix /b/\n", 2, "prefix"),
            ("frontend f\n    bind :80\n    discovery consul http://c:8500 service web\n", 3, "discovery"),
        ]
        for (text, line, keyword) in cases {
            XCTAssertThrowsError(try HAProxyParser.parse(text, file: "bad.cfg"), text) { error in
                let error = error as? ConfigurationError
                XCTAssertEqual(error?.line, line, text)
                XCTAssertEqual(error?.keyword, keyword, text)
                XCTAssertEqual(error?.file, "bad.cfg")
            }
        }
    }
}
