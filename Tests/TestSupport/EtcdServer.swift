// Debian's etcd (package etcd-server) as a real discovery source: one member on 127.0.0.1
// with ports picked free, a temporary data directory, and its v3 JSON gateway driven with
// raw-socket POSTs (keys and values are base64 in the JSON, 64-bit numbers are strings).
// It can be stopped and started again on the same ports and data, to test an outage.
// Only the pid we spawned is ever signalled.

import Foundation
import Glibc

public final class EtcdServer: @unchecked Sendable {
    public let clientPort: UInt16
    public let peerPort: UInt16
    /// --data-dir; it outlives `stop()` so `start()` brings the same store back.
    public let directory: TempDirectory
    private let executable: String
    private let child = Protected<ChildProcess?>(nil)
    /// Output of every run so far, for failure messages.
    private let history = Protected<[String]>([])

    public var url: String { "http://127.0.0.1:\(clientPort)" }

    /// `etcd` on PATH, /usr/bin or /usr/sbin. Throws (the test fails, never skips) if missing.
    public static func executablePath() throws -> String {
        var candidates: [String] = []
        if let path = getenv("PATH").map({ String(cString: $0) }) {
            candidates += path.split(separator: ":").map { "\($0)/etcd" }
        }
        candidates += ["/usr/bin/etcd", "/usr/sbin/etcd"]
        guard let found = candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw TestSupportError("etcd not installed; run .ci/run (it installs Debian's etcd-server)")
        }
        return found
    }

    /// Starts etcd and waits until its gateway answers a range request.
    public init() throws {
        executable = try Self.executablePath()
        directory = try TempDirectory(prefix: "balancerd-etcd")
        // A port picked free can be taken before etcd binds it: try a few pairs.
        var lastError: any Error = TestSupportError("etcd did not start")
        for _ in 0..<3 {
            let client = try freePort(), peer = try freePort()
            guard client != peer else { continue }
            do {
                try Self.launch(executable, client: client, peer: peer, data: directory.file("data"), into: child, history: history)
                clientPort = client
                peerPort = peer
                return
            } catch {
                lastError = error
                try? FileManager.default.removeItem(atPath: directory.file("data"))
            }
        }
        throw lastError
    }

    /// Starts etcd again on the same ports and data directory (after `stop()`).
    public func start() throws {
        try Self.launch(executable, client: clientPort, peer: peerPort, data: directory.file("data"), into: child, history: history)
    }

    private static func launch(_ executable: String, client: UInt16, peer: UInt16, data: String,
                               into slot: Protected<ChildProcess?>, history: Protected<[String]>) throws {
        let clientURL = "http://127.0.0.1:\(client)", peerURL = "http://127.0.0.1:\(peer)"
        let process = try ChildProcess(executable: executable, arguments: [
            "--name", "test", "--data-dir", data,
            "--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
            "--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
            "--initial-cluster", "test=\(peerURL)", "--initial-cluster-state", "new",
        ])
        slot.withLock { $0 = process }
        let ready = waitUntil(timeout: 15) {
            if process.hasExited { return true }
            let body = (try? jsonBytes(["key": Data("health".utf8).base64EncodedString()])) ?? []
            return (try? sendHTTPRequest(port: client, method: "POST", target: "/v3/kv/range", body: body, timeout: 1))?.status == 200
        }
        if !ready || process.hasExited {
            process.stop(signal: SIGKILL, timeout: 2)
            let output = process.output.lines().suffix(30).joined(separator: "\n")
            history.withLock { $0 += process.output.lines() }
            throw TestSupportError("etcd did not answer on \(clientURL) within 15 s:\n\(output)")
        }
    }

    /// SIGTERM to the running etcd's pid (SIGKILL after 5 s); the data directory stays.
    public func stop() {
        guard let process = child.withLock({ c -> ChildProcess? in defer { c = nil }; return c }) else { return }
        process.stop(signal: SIGTERM, timeout: 5)
        history.withLock { $0 += process.output.lines() }
    }

    public var isRunning: Bool { child.withLock { $0.map { !$0.hasExited } ?? false } }

    /// The last lines etcd printed (all runs), for failure messages.
    public func outputTail(_ count: Int = 30) -> String {
        let current = child.withLock { $0?.output.lines() ?? [] }
        return "etcd output (last \(count) lines):\n" + (history.snapshot + current).suffix(count).joined(separator: "\n")
    }

    deinit {
        stop()
        directory.remove()
    }

    // MARK: the v3 JSON gateway

    /// POSTs `object` to `path`; throws unless etcd answers 200 with a JSON object.
    @discardableResult
    public func call(_ path: String, _ object: [String: Any]) throws -> [String: Any] {
        let response = try sendHTTPRequest(port: clientPort, method: "POST", target: path,
                                           headers: [("Content-Type", "application/json")], body: try jsonBytes(object), timeout: 5)
        guard response.status == 200 else { throw TestSupportError("etcd \(path): \(response)") }
        return try jsonObject(response)
    }

    private static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    private static func revision(_ answer: [String: Any]) throws -> Int64 {
        guard let header = answer["header"] as? [String: Any], let text = header["revision"] as? String, let revision = Int64(text) else {
            throw TestSupportError("etcd answer without header.revision: \(answer)")
        }
        return revision
    }

    /// Puts `key` = `value` (attached to `lease` if given); returns the new store revision.
    @discardableResult
    public func put(_ key: String, _ value: String, lease: String? = nil) throws -> Int64 {
        var object: [String: Any] = ["key": Self.base64(key), "value": Self.base64(value)]
        if let lease { object["lease"] = lease }
        return try Self.revision(try call("/v3/kv/put", object))
    }

    /// Deletes `key`; returns the store revision after it.
    @discardableResult
    public func delete(_ key: String) throws -> Int64 {
        try Self.revision(try call("/v3/kv/deleterange", ["key": Self.base64(key)]))
    }

    /// Grants a lease of `ttl` seconds; returns its ID (a decimal string, as the gateway writes it).
    public func grantLease(ttl: Int) throws -> String {
        let answer = try call("/v3/lease/grant", ["TTL": String(ttl)])
        guard let id = answer["ID"] as? String else { throw TestSupportError("etcd lease grant without ID: \(answer)") }
        return id
    }

    /// Compacts the history up to `revision` (physically, so the old revisions are gone).
    public func compact(revision: Int64) throws {
        try call("/v3/kv/compaction", ["revision": String(revision), "physical": true])
    }

    /// The current store revision.
    public func currentRevision() throws -> Int64 {
        try Self.revision(try call("/v3/kv/range", ["key": Self.base64("\u{0}"), "count_only": true]))
    }
}
