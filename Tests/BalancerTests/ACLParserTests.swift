import XCTest
@testable import Balancer

/// The `acl`, `use_backend` and `http-request` grammar: what good lines become, and that a
/// bad line names its file, line and keyword.
final class ACLParserTests: XCTestCase {
    private func parse(_ frontendLines: String, extraBackends: String = "") throws -> Frontend {
        let text = """
            defaults
                mode http
            frontend fe
                bind :80
            \(frontendLines)
                default_backend web
            backend web
                server s1 10.0.0.1:80
            backend api
                server a1 10.0.0.2:80
            \(extraBackends)
            """
        return try HAProxyParser.parse(text, file: "acl.cfg").frontends[0]
    }

    /// `frontendLines` start at line 5 of the file built by `parse`.
    private func assertError(_ frontendLines: String, line: Int, keyword: String, _ message: String,
                             file: StaticString = #filePath, sourceLine: UInt = #line) {
        do {
            let frontend = try parse(frontendLines)
            XCTFail("expected an error, got \(frontend.routing)", file: file, line: sourceLine)
        } catch let error as ConfigurationError {
            XCTAssertEqual(error.file, "acl.cfg", file: file, line: sourceLine)
            XCTAssertEqual(error.line, line, "\(error)", file: file, line: sourceLine)
            XCTAssertEqual(error.keyword, keyword, "\(error)", file: file, line: sourceLine)
            XCTAssertTrue(error.message.contains(message), "'\(error.message)' should mention '\(message)'", file: file, line: sourceLine)
        } catch {
            XCTFail("unexpected \(error)", file: file, line: sourceLine)
        }
    }

    func testGoodLines() throws {
        let frontend = try parse("""
                acl is_api hdr(host) -i api.example.com
                acl is_api req.hdr(host) -i api.example.com:8080
                acl v1 path_beg /v1 /v2
                acl get method GET HEAD
                acl lan src 10.0.0.0/8 ::1 192.168.1.7
                acl tls ssl_fc
                acl sub hdr(host) -m dom example
                acl dash path -- -weird
                http-request deny deny_status 404 if { path_beg /admin } !lan
                http-request redirect prefix https://new.example.com code 301 drop-query if { hdr(host) -i old.example.com }
                http-request redirect scheme https unless tls
                http-request set-header X-Route api if is_api
                http-request del-header X-Secret
                http-request replace-path ^/api(/.*)?$ \\1 if is_api
                use_backend api if is_api v1 || get !lan
                use_backend api unless tls
            """)
        let routing = frontend.routing
        XCTAssertEqual(routing.acls.map(\.name), ["is_api", "v1", "get", "lan", "tls", "sub", "dash"])
        XCTAssertEqual(routing.acls[0].tests, [
            ACLTest(criterion: .host, ignoreCase: true, values: ["api.example.com"]),
            ACLTest(criterion: .requestHost, ignoreCase: true, values: ["api.example.com:8080"]),
        ])
        XCTAssertEqual(routing.acls[5].tests[0].match, .domain)
        XCTAssertEqual(routing.acls[6].tests[0].values, ["-weird"])
        XCTAssertEqual(routing.requestRules.count, 6)
        XCTAssertEqual(routing.requestRules[0].action, .deny(status: 404))
        XCTAssertEqual(routing.requestRules[0].condition, ACLCondition(alternatives: [[
            ACLTerm(.anonymous(ACLTest(criterion: .pathBegins, values: ["/admin"]))),
            ACLTerm(.named("lan"), negated: true),
        ]]))
        XCTAssertEqual(routing.requestRules[1].action,
                       .redirect(RedirectRule(kind: .prefix, value: "https://new.example.com", code: 301, dropQuery: true)))
        XCTAssertEqual(routing.requestRules[2].condition?.unless, true)
        XCTAssertEqual(routing.requestRules[5].action, .replacePath(PathRewrite(
            regex: "^/api(/.*)?$", replacement: "\\1", prefix: "/api", tail: .optionalSlash, insert: "")))
        XCTAssertEqual(routing.useBackend[0], UseBackendRule(backend: "api", condition: ACLCondition(alternatives: [
            [ACLTerm(.named("is_api")), ACLTerm(.named("v1"))],
            [ACLTerm(.named("get")), ACLTerm(.named("lan"), negated: true)],
        ])))
        XCTAssertEqual(routing.useBackend[1].condition?.unless, true)
    }

    func testReplacePathShapes() throws {
        let cases: [(String, String, String, PathRewrite.Tail, String)] = [
            ("^/api(.*)", "\\1", "/api", .any, ""),
            ("^/api(/.*)", "\\1", "/api", .slash, ""),
            ("^/api(/.*)$", "/v2\\1", "/api", .slash, "/v2"),
            ("^/a\\.b(/.*)?$", "\\1", "/a.b", .optionalSlash, ""),
        ]
        for (regex, replacement, prefix, tail, insert) in cases {
            let rewrite = try PathRewrite.parse(regex: regex, replacement: replacement)
            XCTAssertEqual(rewrite.prefix, prefix, regex)
            XCTAssertEqual(rewrite.tail, tail, regex)
            XCTAssertEqual(rewrite.insert, insert, regex)
        }
    }

    func testBadLinesNameLineAndKeyword() {
        assertError("    acl x hdr(x-forwarded-for) 1.2.3.4", line: 5, keyword: "hdr(x-forwarded-for)", "is not supported")
        assertError("    acl x path_reg ^/a", line: 5, keyword: "path_reg", "is not supported")
        assertError("    acl x path -m reg ^/a", line: 5, keyword: "-m", "regex matching")
        assertError("    acl x path -f /etc/paths", line: 5, keyword: "-f", "not supported")
        assertError("    acl x method -m beg G", line: 5, keyword: "-m", "cannot be used")
        assertError("    acl x src 10.0.0.0/33", line: 5, keyword: "src", "invalid address")
        assertError("    acl x ssl_fc 1", line: 5, keyword: "ssl_fc", "takes no value")
        assertError("    acl x", line: 5, keyword: "acl", "expected acl NAME")
        assertError("    acl ok path /\n    use_backend api if ok || \n", line: 6, keyword: "if", "needs a condition")
        assertError("    acl ok path /\n    use_backend api if ok { path /x\n", line: 6, keyword: "{", "without a matching '}'")
        assertError("    use_backend api if later\n    acl later path /\n", line: 5, keyword: "later", "no ACL named 'later'")
        assertError("    use_backend nowhere if { path / }", line: 5, keyword: "use_backend", "no backend or listen section named 'nowhere'")
        assertError("    use_backend %[req.hdr(host)]", line: 5, keyword: "use_backend", "dynamic backend names")
        assertError("    http-request add-header X-A b", line: 5, keyword: "http-request add-header", "not supported")
        assertError("    http-request set-header X-A %[src]", line: 5, keyword: "http-request set-header", "log-format")
        assertError("    http-request deny deny_status 418", line: 5, keyword: "deny_status", "expected one of")
        assertError("    http-request redirect location /x code 200", line: 5, keyword: "code", "expected 301")
        assertError("    http-request redirect location /x append-slash", line: 5, keyword: "http-request redirect", "not supported")
        assertError("    http-request replace-path /api/(.*) /\\1", line: 5, keyword: "http-request replace-path", "not anchored")
        assertError("    http-request replace-path ^/ap[io](.*) \\1", line: 5, keyword: "http-request replace-path", "no general regex")
        assertError("    http-request replace-path ^/api(\\d+) \\1", line: 5, keyword: "http-request replace-path", "general regex")
        assertError("    http-request replace-path ^/api(.*) \\2", line: 5, keyword: "http-request replace-path", "must end with")
        assertError("    acl a path /\n    use_backend api if a b\n", line: 6, keyword: "b", "no ACL named 'b'")
    }

    func testRoutingNeedsHTTPModeAndAFrontend() {
        let tcp = """
            frontend fe
                mode tcp
                bind :80
                acl a src 10.0.0.0/8
                default_backend be
            backend be
                mode tcp
                server s 10.0.0.1:80
            """
        XCTAssertThrowsError(try HAProxyParser.parse(tcp, file: "t.cfg")) { error in
            let error = error as! ConfigurationError
            XCTAssertEqual(error.line, 4)
            XCTAssertTrue(error.message.contains("mode http"), error.message)
        }
        let inBackend = "backend be\n mode http\n acl a path /\n server s 10.0.0.1:80\n"
        XCTAssertThrowsError(try HAProxyParser.parse(inBackend, file: "t.cfg")) { error in
            let error = error as! ConfigurationError
            XCTAssertEqual(error.line, 3)
            XCTAssertEqual(error.keyword, "acl")
        }
    }

    /// The writer's lines parse back into the same routing.
    func testExportRoundTrip() throws {
        let frontend = try parse("""
                acl is_api hdr(host) -i api.example.com
                acl odd path -- -x "a b"
                http-request replace-path ^/api(/.*)?$ \\1 if is_api
                http-request redirect location /moved code 308 if { path /old }
                http-request set-header X-A "v 1"
                use_backend api if is_api || !{ method GET } odd
            """)
        let text = HAProxyWriter.routingLines(frontend.routing).joined(separator: "\n")
        let again = try parse(text)
        XCTAssertEqual(again.routing, frontend.routing, text)
    }
}
