// The README shows things that tests run as they are shown: the embedding example, the
// systemd unit, the docker-compose sketch. One way to take a block out of it.

import Foundation

/// The text of the first ```LANGUAGE block of the README section `heading` (the whole
/// heading line, e.g. "## Embedding"), each line ending in a newline. Throws when the
/// section has no such block before the next section.
public func readmeCodeBlock(_ language: String, under heading: String) throws -> String {
    let readme = try String(contentsOfFile: packageRoot() + "/README.md", encoding: .utf8)
    let lines = readme.components(separatedBy: "\n")
    guard let section = lines.firstIndex(of: heading) else {
        throw TestSupportError("README.md has no '\(heading)' heading")
    }
    guard let open = lines[section...].firstIndex(of: "```\(language)"),
          !lines[(section + 1)..<open].contains(where: { $0.hasPrefix("## ") }) else {
        throw TestSupportError("no ```\(language) block in README.md section '\(heading)'")
    }
    guard let close = lines[(open + 1)...].firstIndex(of: "```") else {
        throw TestSupportError("the ```\(language) block of '\(heading)' is not closed")
    }
    return lines[(open + 1)..<close].map { $0 + "\n" }.joined()
}
