// balancerd's stats page (`--stats HOST:PORT`, Sources/Balancer/Metrics/StatsServer.swift)
// fetched and read the way a person or a script reads it: the `current` and `total`
// counters of each frontend, backend and server.
//
//   frontend main (http)  current 1  total 5
//   backend main  generation 1  current 0  total 5
//     server s1 127.0.0.1:1234 weight 1  UP  current 0  total 3  failed-connects 0

import Foundation

public struct StatsPage: Sendable, CustomStringConvertible {
    public struct Counters: Sendable, Equatable {
        public let current: Int
        public let total: Int
    }

    public let frontends: [String: Counters]
    public let backends: [String: Counters]
    /// Per backend, per server name.
    public let servers: [String: [String: Counters]]
    /// The page as served, for failure messages.
    public let text: String

    public var description: String { text }

    /// Parses the page text. Throws if no backend line is found (not a stats page).
    public init(text: String) throws {
        self.text = text
        var frontends: [String: Counters] = [:]
        var backends: [String: Counters] = [:]
        var servers: [String: [String: Counters]] = [:]
        var backend: String?
        let counters = #/  current (\d+)  total (\d+)/#
        for line in text.split(separator: "\n") {
            guard let match = line.firstMatch(of: counters), let current = Int(match.output.1), let total = Int(match.output.2) else { continue }
            let value = Counters(current: current, total: total)
            let words = line.split(separator: " ")
            if line.hasPrefix("frontend "), words.count > 1 {
                frontends[String(words[1])] = value
            } else if line.hasPrefix("backend "), words.count > 1 {
                backend = String(words[1])
                backends[String(words[1])] = value
            } else if line.hasPrefix("  server "), let backend, words.count > 1 {
                servers[backend, default: [:]][String(words[1])] = value
            }
        }
        guard !backends.isEmpty else { throw TestSupportError("not a balancerd stats page:\n\(text)") }
        self.frontends = frontends
        self.backends = backends
        self.servers = servers
    }

    /// GET / from the stats listener at 127.0.0.1:`port`.
    public static func fetch(port: UInt16, timeout: Double = 5) throws -> StatsPage {
        let client = try TCPClient(port: port, connectTimeout: timeout)
        defer { client.close() }
        try client.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        let response = try client.readAll(timeout: timeout)
        guard let headEnd = response.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw TestSupportError("stats listener: no complete HTTP head in \(response.count) bytes")
        }
        let status = String(decoding: response[..<headEnd.lowerBound], as: UTF8.self).split(separator: "\r\n").first ?? ""
        guard status.hasPrefix("HTTP/1.1 200") else { throw TestSupportError("stats listener answered \(status)") }
        return try StatsPage(text: String(decoding: response[headEnd.upperBound...], as: UTF8.self))
    }
}

extension BalancerdProcess {
    /// The port of the stats listener, from the `balancerd: stats on http://HOST:PORT/…` line.
    public func statsPort(timeout: Double = 10) throws -> UInt16 {
        guard let line = waitForLine(containing: "balancerd: stats on http://", timeout: timeout) else {
            throw TestSupportError("no 'balancerd: stats on http://…' line within \(timeout)s:\n\(outputText)")
        }
        let address = line.split(separator: "http://", maxSplits: 1).last.map { $0.prefix { $0 != "/" && $0 != " " } } ?? ""
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw TestSupportError("cannot read the stats port from: \(line)")
        }
        return port
    }
}
