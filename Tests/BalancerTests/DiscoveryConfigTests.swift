import XCTest
@testable import Balancer

final class DiscoveryConfigTests: XCTestCase {
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
