import Foundation
import Balancer
import XCTest
@testable import balancerd

/// docker-compose.yml's balancerd `command:` goes through the binary's own option parser,
/// so the file and the CLI cannot drift apart (issue 9: the stats port was published but
/// nothing listened on it).
final class ComposeCommandTests: XCTestCase {
    private static let composeFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("docker-compose.yml").path

    /// The `command:` list and the `ports:` of service `service`, read line by line: the
    /// two-space service indent, four-space keys, and `- "item"` or `["a", "b"]` values
    /// this file uses. Not a YAML parser; it fails loudly on a shape it does not know.
    static func serviceLists(_ text: String, service: String) throws -> (command: [String], ports: [String]) {
        var inService = false
        var key: String?
        var lists: [String: [String]] = [:]
        func unquote(_ item: Substring) -> String {
            var value = item.trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            return value
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingCharacters(in: .whitespaces).hasPrefix("#") || line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let indent = line.prefix { $0 == " " }.count
            let content = line.dropFirst(indent)
            if indent == 2 {
                inService = content == "\(service):"
                key = nil
                continue
            }
            if indent < 2 { inService = false; continue }
            guard inService else { continue }
            if indent == 4, let colon = content.firstIndex(of: ":") {
                key = String(content[..<colon])
                let rest = content[content.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if rest.hasPrefix("[") {
                    guard rest.hasSuffix("]") else { throw TestError("multi-line flow list in \(line)") }
                    lists[key!] = rest.dropFirst().dropLast().split(separator: ",").map(unquote)
                    key = nil
                }
                continue
            }
            if indent >= 6, content.hasPrefix("- "), let key {
                lists[key, default: []].append(unquote(content.dropFirst(2)))
            }
        }
        guard let command = lists["command"] else { throw TestError("no command: for service \(service)") }
        return (command, lists["ports"] ?? [])
    }

    struct TestError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    func testBalancerdCommandParsesAndServesStatsOnThePublishedPort() throws {
        let text = try String(contentsOfFile: Self.composeFile, encoding: .utf8)
        let (command, ports) = try Self.serviceLists(text, service: "balancerd")
        XCTAssertEqual(ports, ["80:80", "8404:8404"])

        let options: CommandLineOptions
        do {
            options = try CommandLineOptions.parse(command)
        } catch {
            return XCTFail("docker-compose.yml's balancerd command \(command) does not parse: \(error.message)")
        }
        XCTAssertEqual(options.command, .run)
        XCTAssertEqual(options.stats, HostPort(host: "0.0.0.0", port: 8404), "the README's curl http://localhost:8404/haproxy.cfg")
        XCTAssertEqual(options.listen, HostPort(host: "0.0.0.0", port: 80))
        let configuration = try options.configuration()
        XCTAssertEqual(configuration.stats?.bind, HostPort(host: "0.0.0.0", port: 8404))
        XCTAssertEqual(configuration.frontends.first?.binds, [HostPort(host: "0.0.0.0", port: 80)])
    }

    /// The reader itself: both list shapes, comments, and other services left alone.
    func testReaderReadsBothListShapes() throws {
        let text = """
            services:
              other:
                command: ["--listen", "1.2.3.4:1"]
              balancerd:
                # a comment
                command:
                  - "--listen"
                  - '0.0.0.0:80'
                  - --quiet
                ports:
                  - "80:80"
              after:
                command: ["x"]
            """
        let lists = try Self.serviceLists(text, service: "balancerd")
        XCTAssertEqual(lists.command, ["--listen", "0.0.0.0:80", "--quiet"])
        XCTAssertEqual(lists.ports, ["80:80"])
        XCTAssertEqual(try Self.serviceLists(text, service: "other").command, ["--listen", "1.2.3.4:1"])
        XCTAssertThrowsError(try Self.serviceLists(text, service: "missing"))
    }
}
