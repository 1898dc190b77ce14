// docker-compose.yml at the repository root is the README's demo of the classic stack
// without its glue (Consul + registrator + balancerd + two web containers). Docker itself
// is not available to the tests, so they check what can be checked without it: Debian's
// docker-compose accepts the file, and the services and balancerd's command are the ones
// the demo promises.

import Foundation
import Glibc
import TestSupport
import XCTest

final class DiscoveryComposeTests: XCTestCase {
    static func dockerComposePath() throws -> String {
        var candidates: [String] = []
        if let path = getenv("PATH").map({ String(cString: $0) }) {
            candidates += path.split(separator: ":").map { "\($0)/docker-compose" }
        }
        candidates += ["/usr/bin/docker-compose", "/usr/local/bin/docker-compose"]
        guard let found = candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw TestSupportError("docker-compose not installed; run .ci/run (it installs Debian's docker-compose)")
        }
        return found
    }

    /// The service blocks of `docker-compose config` output: name → its lines.
    static func services(in yaml: [String]) -> [String: [String]] {
        var services: [String: [String]] = [:]
        var inServices = false
        var current: String?
        for line in yaml {
            if !line.hasPrefix(" ") {
                inServices = line == "services:"
                current = nil
                continue
            }
            guard inServices else { continue }
            // Service names are the keys indented by exactly two spaces.
            if line.hasPrefix("  ") && !line.hasPrefix("   ") && line.hasSuffix(":") {
                current = String(line.dropFirst(2).dropLast())
                services[current!] = []
            } else if let current {
                services[current, default: []].append(line)
            }
        }
        return services
    }

    /// The README's docker-compose form of the upgrade: Debian's docker-compose accepts it,
    /// and the next balancerd shares the running one's network namespace and socket
    /// directory and takes over with -x. What happens then is HandoverTests' (two processes,
    /// one network namespace, one socket); only Docker itself is not run here.
    func testReadmeUpgradeSketchIsAValidComposeFile() throws {
        let sketch = try readmeCodeBlock("yaml", under: "## Upgrades without a dropped connection")
        let directory = try TempDirectory(prefix: "balancerd-compose")
        defer { directory.remove() }
        let file = try directory.write(sketch, to: "docker-compose.yml")
        _ = try directory.write("global\n", to: "balancerd.cfg")
        let result = try runProcess(try Self.dockerComposePath(), ["-f", file, "--profile", "upgrade", "config"], timeout: 20)
        XCTAssertEqual(result.exitCode, 0, "docker-compose config failed:\n\(result.allText)")
        let services = Self.services(in: result.stdout)
        for name in ["balancerd", "balancerd-next"] {
            let service = services[name] ?? []
            XCTAssertTrue(service.contains { $0.contains("network_mode: service:edge") }, "\(name) shares edge's network:\n\(result.stdoutText)")
            XCTAssertTrue(service.contains { $0.contains("/run/balancerd") }, "\(name) mounts the socket directory:\n\(result.stdoutText)")
        }
        XCTAssertTrue((services["balancerd-next"] ?? []).contains { $0.trimmingCharacters(in: .whitespaces) == "- -x" },
                      "balancerd-next takes over with -x:\n\(result.stdoutText)")
    }

    func testComposeFileIsValidAndWiresBalancerdToConsul() throws {
        let file = packageRoot() + "/docker-compose.yml"
        XCTAssertEqual(access(file, R_OK), 0, "\(file) is missing")
        let result = try runProcess(try Self.dockerComposePath(), ["-f", file, "config"], timeout: 20)
        XCTAssertEqual(result.exitCode, 0, "docker-compose config failed:\n\(result.allText)")

        let services = Self.services(in: result.stdout)
        for name in ["consul", "registrator", "balancerd", "web1", "web2"] {
            XCTAssertNotNil(services[name], "no service \(name) in:\n\(result.stdoutText)")
        }
        let balancerd = services["balancerd"] ?? []
        // `command:` is a list after normalisation: one `- word` line per argument.
        guard let start = balancerd.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces) == "command:" }) else {
            return XCTFail("balancerd has no command:\n\(balancerd.joined(separator: "\n"))")
        }
        let words = balancerd[(start + 1)...].prefix { $0.trimmingCharacters(in: .whitespaces).hasPrefix("- ") }
            .map { String($0.trimmingCharacters(in: .whitespaces).dropFirst(2)).trimmingCharacters(in: CharacterSet(charactersIn: "'\"")) }
        XCTAssertTrue(words.contains("--consul"), "balancerd's command: \(words)")
        XCTAssertTrue(words.contains("--service"), "balancerd's command: \(words)")
        if let i = words.firstIndex(of: "--consul"), i + 1 < words.count {
            XCTAssertEqual(words[i + 1], "http://consul:8500", "balancerd must follow the consul service")
        }
        if let i = words.firstIndex(of: "--service"), i + 1 < words.count {
            XCTAssertEqual(words[i + 1], "web", "the service registrator registers web1 and web2 under")
        }
        for web in ["web1", "web2"] {
            XCTAssertTrue((services[web] ?? []).contains { $0.contains("SERVICE_NAME: web") }, "\(web) is not registered as service web")
        }
    }
}
