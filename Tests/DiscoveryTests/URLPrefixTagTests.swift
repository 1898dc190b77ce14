// fabio's `urlprefix-` tags, as a table: what each tag becomes, or why balancerd skips it.
// The syntax is fabio's (registry/consul/parse.go and routecmd.go, docs feature/
// path-stripping and http-redirects); the refusals are what balancerd does not do.
import Balancer
@testable import Discovery
import XCTest

final class URLPrefixTagTests: XCTestCase {
    private typealias Route = URLPrefixTag.Route

    func testRoutes() {
        let cases: [(tag: String, route: Route)] = [
            ("urlprefix-api.example.com/v1", Route(host: "api.example.com", pathPrefix: "/v1")),
            ("urlprefix-/static", Route(host: nil, pathPrefix: "/static")),
            ("urlprefix-example.com/", Route(host: "example.com", pathPrefix: "/")),
            ("urlprefix-/", Route(host: nil, pathPrefix: "/")),
            // Host normalised (case, trailing dot); the path is kept as written.
            ("urlprefix-API.Example.COM./V1", Route(host: "api.example.com", pathPrefix: "/V1")),
            ("urlprefix-*.example.com/", Route(host: "*.example.com", pathPrefix: "/")),
            ("urlprefix-*.Example.com./x", Route(host: "*.example.com", pathPrefix: "/x")),
            ("urlprefix-a_b-c.example/", Route(host: "a_b-c.example", pathPrefix: "/")),
            // Blanks around the tag and after the prefix are ignored, as in fabio.
            ("  urlprefix-/foo  ", Route(host: nil, pathPrefix: "/foo")),
            ("urlprefix- /foo", Route(host: nil, pathPrefix: "/foo")),
            ("urlprefix-/foo/bar strip=/foo", Route(host: nil, pathPrefix: "/foo/bar", strip: "/foo")),
            ("urlprefix-/foo\tstrip=/foo", Route(host: nil, pathPrefix: "/foo", strip: "/foo")),
            ("urlprefix-old.example.com/ redirect=301,https://new.example.com$path",
             Route(host: "old.example.com", pathPrefix: "/", redirect: RouteRedirect(status: 301, location: "https://new.example.com$path"))),
            ("urlprefix-/path redirect=303,https://www.foo.com$path",
             Route(host: nil, pathPrefix: "/path", redirect: RouteRedirect(status: 303, location: "https://www.foo.com$path"))),
            ("urlprefix-/a redirect=308,/b strip=/a",
             Route(host: nil, pathPrefix: "/a", strip: "/a", redirect: RouteRedirect(status: 308, location: "/b"))),
            ("urlprefix-/a proto=http", Route(host: nil, pathPrefix: "/a")),
        ]
        for (tag, route) in cases {
            XCTAssertEqual(URLPrefixTag.parse(tag, prefix: "urlprefix-"), .success(route), tag)
        }
    }

    func testOtherPrefixes() {
        XCTAssertEqual(URLPrefixTag.parse("route-/x", prefix: "route-"), .success(Route(host: nil, pathPrefix: "/x")))
        XCTAssertNil(URLPrefixTag.parse("urlprefix-/x", prefix: "route-"))
    }

    func testTagsThatAreNotRoutes() {
        for tag in ["web", "urlprefix", "URLPREFIX-/x", "v1", "", "prefix-urlprefix-/x"] {
            XCTAssertNil(URLPrefixTag.parse(tag, prefix: "urlprefix-"), tag)
        }
    }

    func testUnsupportedTagsSayWhy() {
        let cases: [(tag: String, reason: String)] = [
            ("urlprefix-", "no host/path after the prefix"),
            ("urlprefix-   ", "no host/path after the prefix"),
            ("urlprefix-:3306 proto=tcp", "TCP routes (urlprefix-:PORT) are not supported"),
            ("urlprefix-example.com", "'example.com' has no '/' (write host/, host/path or /path)"),
            ("urlprefix-$HOST/", "variables ($NAME) are not expanded"),
            ("urlprefix-/${PATH}", "variables ($NAME) are not expanded"),
            ("urlprefix-example.com:8080/", "host 'example.com:8080' has a port (routes match the host name only)"),
            ("urlprefix-a*b.com/", "'a*b.com' is not a host name (letters, digits, '-', '.', and '*.' only at the start)"),
            ("urlprefix-*./", "'*.' is not a host name (letters, digits, '-', '.', and '*.' only at the start)"),
            ("urlprefix-a..b/", "'a..b' is not a host name (letters, digits, '-', '.', and '*.' only at the start)"),
            ("urlprefix-./", "'.' is not a host name (letters, digits, '-', '.', and '*.' only at the start)"),
            ("urlprefix-exämple.com/", "'exämple.com' is not a host name (letters, digits, '-', '.', and '*.' only at the start)"),
            ("urlprefix-/a?b=1", "a path prefix cannot contain '?' or '#'"),
            ("urlprefix-/a proto=https", "option 'proto=https' is not supported (balancerd knows strip= and redirect=)"),
            ("urlprefix-/a tlsskipverify=true", "option 'tlsskipverify=true' is not supported (balancerd knows strip= and redirect=)"),
            ("urlprefix-/a weight=0.5", "option 'weight=0.5' is not supported (balancerd knows strip= and redirect=)"),
            ("urlprefix-/a host=x.com", "option 'host=x.com' is not supported (balancerd knows strip= and redirect=)"),
            ("urlprefix-/a strip=a", "strip=a: the prefix must start with '/'"),
            ("urlprefix-/a strip=/a strip=/b", "option 'strip' given twice"),
            ("urlprefix-/a redirect=301", "redirect=301: expected redirect=CODE,URL with CODE from 300 to 399"),
            ("urlprefix-/a redirect=200,https://x", "redirect=200,https://x: expected redirect=CODE,URL with CODE from 300 to 399"),
            ("urlprefix-/a redirect=abc,https://x", "redirect=abc,https://x: expected redirect=CODE,URL with CODE from 300 to 399"),
            ("urlprefix-/a redirect=301,", "redirect=301,: no URL after the code"),
        ]
        for (tag, reason) in cases {
            XCTAssertEqual(URLPrefixTag.parse(tag, prefix: "urlprefix-"), .failure(URLPrefixTag.Unsupported(reason)), tag)
        }
    }

    // MARK: the set built from instances (pure)

    private func entry(_ id: String, service: String = "web", port: Int, tags: [String]) -> HealthEntry {
        HealthEntry(node: .init(node: "node1", address: "127.0.0.1"),
                    service: .init(id: id, service: service, address: "", port: port, weights: nil, tags: tags))
    }

    func testRoutesGoToTheInstancesCarryingTheirTag() {
        let health = [
            "web": [entry("web-1", port: 1, tags: ["urlprefix-/v1"]),
                    entry("web-2", port: 2, tags: ["urlprefix-/v1", "urlprefix-/v2"])],
            "api": [entry("api-1", service: "api", port: 3, tags: ["urlprefix-api.example.com/", "other"])],
            "plain": [entry("plain-1", service: "plain", port: 4, tags: ["v1"])],
        ]
        let built = ConsulRoutes.routeSet(health: health, prefix: "urlprefix-")
        XCTAssertEqual(built.set.table, ["/v1→web", "/v2→web__v2", "api.example.com/→api"])
        XCTAssertEqual(built.set.addresses, ["web": ["127.0.0.1:1", "127.0.0.1:2"], "web__v2": ["127.0.0.1:2"],
                                             "api": ["127.0.0.1:3"]])
        XCTAssertTrue(built.unsupported.isEmpty)
        // Consul's order of services and instances changes nothing.
        let reversed = health.mapValues { Array($0.reversed()) }
        XCTAssertEqual(ConsulRoutes.routeSet(health: reversed, prefix: "urlprefix-").set, built.set)
    }

    func testUnsupportedTagsAreSkippedAndTheServiceKeepsItsOtherRoutes() {
        let health = ["web": [entry("web-1", port: 1, tags: ["urlprefix-/ok", "urlprefix-:3306 proto=tcp"])]]
        let built = ConsulRoutes.routeSet(health: health, prefix: "urlprefix-")
        XCTAssertEqual(built.set.table, ["/ok→web"])
        XCTAssertEqual(built.unsupported.map(\.tag), ["urlprefix-:3306 proto=tcp"])
    }

    func testTwoServicesClaimingOneRouteTheFirstByNameWins() {
        let health = [
            "b": [entry("b-1", service: "b", port: 2, tags: ["urlprefix-x.com/"])],
            "a": [entry("a-1", service: "a", port: 1, tags: ["urlprefix-x.com/", "urlprefix-/a"])],
            "c": [entry("c-1", service: "c", port: 3, tags: ["urlprefix-x.com/"])],
        ]
        let built = ConsulRoutes.routeSet(health: health, prefix: "urlprefix-")
        XCTAssertEqual(built.set.table, ["/a→a", "x.com/→a"])
        XCTAssertEqual(built.conflicts.map(\.route), ["x.com/"])
        XCTAssertEqual(built.conflicts.first?.backends, ["a", "b", "c"])
        XCTAssertEqual(Set(built.set.services.keys), ["a"], "a backend without routes is not published")
    }

    func testNoPassingInstancesNoRoutes() {
        let built = ConsulRoutes.routeSet(health: ["web": []], prefix: "urlprefix-")
        XCTAssertEqual(built.set, RouteSet())
    }
}
