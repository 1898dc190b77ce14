// balancerd's stats (`--stats HOST:PORT`, Sources/Balancer/Metrics/StatsServer.swift) read
// the way a script reads them: the `/;csv` export (haproxy's `show stat` columns), from
// which the `current` (scur) and `total` (stot) counters of each frontend, backend and
// server are taken by column name.

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

    /// Parses the CSV. Throws if it has no haproxy header or no BACKEND row.
    public init(text: String) throws {
        self.text = text
        var frontends: [String: Counters] = [:]
        var backends: [String: Counters] = [:]
        var servers: [String: [String: Counters]] = [:]
        let lines = text.split(separator: "\n")
        guard let header = lines.first, header.hasPrefix("# pxname,svname,") else {
            throw TestSupportError("not haproxy's stats CSV:\n\(text)")
        }
        let columns = header.dropFirst(2).split(separator: ",", omittingEmptySubsequences: false)
        guard let scur = columns.firstIndex(of: "scur"), let stot = columns.firstIndex(of: "stot") else {
            throw TestSupportError("no scur/stot columns in:\n\(header)")
        }
        for line in lines.dropFirst() {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cells.count > max(scur, stot), let current = Int(cells[scur]), let total = Int(cells[stot]) else { continue }
            let value = Counters(current: current, total: total)
            let proxy = String(cells[0])
            switch cells[1] {
            case "FRONTEND": frontends[proxy] = value
            case "BACKEND": backends[proxy] = value
            default: servers[proxy, default: [:]][String(cells[1])] = value
            }
        }
        guard !backends.isEmpty else { throw TestSupportError("no BACKEND row in the stats CSV:\n\(text)") }
        self.frontends = frontends
        self.backends = backends
        self.servers = servers
    }

    /// GET /;csv from the stats listener at 127.0.0.1:`port`.
    public static func fetch(port: UInt16, timeout: Double = 5) throws -> StatsPage {
        let client = try TCPClient(port: port, connectTimeout: timeout)
        defer { client.close() }
        try client.send("GET /;csv HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
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
