// etcd v3 through its JSON gateway (`/v3/kv/range`, `/v3/watch`), following registrator's
// layout: every key `PREFIX<ID>` holds `host:port`.
//
// The rules: list the prefix, publish it whole, then watch from the listed revision + 1,
// folding each event into the current map and publishing the whole new set. A watch
// cancelled because its revision was compacted means events were lost: list again. Any
// failure (connect, timeout, bad answer) backs off with jitter and keeps the last good
// table: an etcd outage never empties it. A delete, or a lease that expired (etcd turns
// that into deletes), removes the server.
public import Balancer
import Foundation

public final class EtcdSource: BackendSource {
    public struct Options: Sendable {
        public var url: String
        public var prefix: String
        public var connectTimeout: Duration = .seconds(3)
        public var requestTimeout: Duration = .seconds(10)
        /// How long a watch may stay silent before it is presumed dead. The watch asks for
        /// progress notifications, which etcd sends when a watch is idle (every 10 minutes
        /// by default), so silence beyond that means a broken connection.
        public var watchIdleTimeout: Duration = .seconds(660)
        public var backoffBase: Duration = .milliseconds(100)
        public var backoffCap: Duration = .seconds(5)
        public var log: @Sendable (String) -> Void = { ControlLog.line($0) }

        public init(url: String, prefix: String) {
            self.url = url
            self.prefix = prefix
        }
    }

    public let options: Options
    public let url: HTTPURL
    private let stopSignal = StopSignal()

    public init(options: Options) throws(HTTPClientError) {
        self.options = options
        self.url = try HTTPURL(parsing: options.url)
    }

    public var description: String { "etcd \(url) prefix \(options.prefix)" }

    public func stop() { stopSignal.trigger() }

    public func run(update: @escaping @Sendable (BackendSet) -> Void) {
        run(update: update, report: { _ in })
    }

    public func run(update: @escaping @Sendable (BackendSet) -> Void, report events: @escaping @Sendable (SourceEvent) -> Void) {
        let client = HTTPClient(url: url, connectTimeout: options.connectTimeout, stopSignal: stopSignal)
        var backoff = Backoff(base: options.backoffBase, cap: options.backoffCap)
        var report = FailureReport()
        var state = EtcdState(prefix: options.prefix)
        var published: BackendSet?
        func publish(_ set: BackendSet) {
            events(.answered)
            if set != published {   // an identical set changes nothing
                published = set
                update(set)
            }
        }
        while !stopSignal.isTriggered {
            do throws(EtcdError) {
                let revision = try list(client, into: &state)
                publish(state.backendSet())
                if let ended = report.succeeded() { options.log("balancerd: etcd: \(description) is answering again after \(ended) failure(s)") }
                backoff.succeeded()
                try watch(client, from: revision + 1, state: &state, publish: publish)
                // The watch ended without an error: compaction. List again at once.
            } catch {
                if stopSignal.isTriggered { break }
                events(.failed("\(error)"))
                client.close()
                if let line = report.failed("\(error)", now: Posix.monotonicNanoseconds()) {
                    options.log("balancerd: etcd: \(description): \(line); keeping the last good table")
                }
                stopSignal.sleep(for: backoff.nextDelay())
            }
        }
        client.close()
    }

    // MARK: requests

    /// Reads every key under the prefix; returns the store revision it was read at.
    private func list(_ client: HTTPClient, into state: inout EtcdState) throws(EtcdError) -> Int64 {
        let body = EtcdJSON.rangeRequest(prefix: options.prefix)
        let response: HTTPResponse
        do {
            response = try client.send(HTTPRequest(method: "POST", target: "/v3/kv/range",
                                                   headers: [("Content-Type", "application/json")], body: body),
                                       timeout: options.requestTimeout)
        } catch {
            throw .http(error)
        }
        guard response.status == 200 else { throw .status(response.status, String(response.bodyText.prefix(200))) }
        let range = try EtcdJSON.decodeRange(response.body)
        state.replace(with: range.kvs)
        return range.revision
    }

    /// Follows the prefix from `revision` until the watch is cancelled by compaction
    /// (returns) or fails (throws).
    private func watch(_ client: HTTPClient, from revision: Int64, state: inout EtcdState,
                       publish: (BackendSet) -> Void) throws(EtcdError) {
        let body = EtcdJSON.watchRequest(prefix: options.prefix, startRevision: revision)
        var failure: EtcdError?
        var compacted = false
        do {
            try client.stream(HTTPRequest(method: "POST", target: "/v3/watch",
                                          headers: [("Content-Type", "application/json")], body: body),
                              idleTimeout: options.watchIdleTimeout) { line in
                guard !line.isEmpty else { return true }
                do throws(EtcdError) {
                    let message = try EtcdJSON.decodeWatch(line)
                    if message.compactRevision > 0 || message.canceled {
                        compacted = true
                        return false
                    }
                    if !message.events.isEmpty {
                        state.apply(message.events)
                        publish(state.backendSet())
                    }
                    return true
                } catch {
                    failure = error
                    return false
                }
            }
        } catch {
            throw .http(error)
        }
        if let failure { throw failure }
        if !compacted { throw .watchEnded }
        client.close()   // the rest of the cancelled stream is of no use
    }
}

/// The keys under the prefix and what they hold; turned into a BackendSet on demand.
struct EtcdState {
    let prefix: String
    /// ID (the key without the prefix) -> raw value.
    private(set) var values: [String: String] = [:]

    init(prefix: String) { self.prefix = prefix }

    mutating func replace(with kvs: [EtcdJSON.KeyValue]) {
        values.removeAll()
        for kv in kvs { put(kv) }
    }

    mutating func apply(_ events: [EtcdJSON.Event]) {
        for event in events {
            switch event.kind {
            case .put: put(event.kv)
            case .delete:
                if let id = id(of: event.kv.key) { values.removeValue(forKey: id) }
            }
        }
    }

    private mutating func put(_ kv: EtcdJSON.KeyValue) {
        guard let id = id(of: kv.key) else { return }
        values[id] = kv.value
    }

    /// The ID part of a key, or nil for a key that is not strictly under the prefix (the
    /// range asks for exactly the prefix, but a defensive check costs nothing).
    private func id(of key: String) -> String? {
        guard key.hasPrefix(prefix), key.count > prefix.count else { return nil }
        return String(key.dropFirst(prefix.count))
    }

    /// One server per key whose value is a valid `host:port`, named after the key's ID,
    /// sorted by name. Values that do not parse are left out (and do not fail the set).
    func backendSet() -> BackendSet {
        var servers: [ServerConfig] = []
        var taken = Set<String>()
        for id in values.keys.sorted() {
            guard let value = values[id], let address = HAProxyParser.serverAddress(value.trimmingCharacters(in: .whitespaces)) else { continue }
            var name = ServerName.sanitized(id, fallback: "etcd")
            let base = name
            var n = 2
            while taken.contains(name) {
                name = "\(base)_\(n)"
                n += 1
            }
            taken.insert(name)
            servers.append(ServerConfig(name: name, address: address))
        }
        servers.sort { $0.name < $1.name }
        return BackendSet(servers: servers)
    }
}

public enum EtcdError: Error, Sendable, CustomStringConvertible {
    case http(HTTPClientError)
    case status(Int, String)
    case badJSON(String)
    case watchEnded
    case server(String)

    public var description: String {
        switch self {
        case .http(let error): "\(error)"
        case .status(let status, let body): "HTTP \(status)\(body.isEmpty ? "" : ": \(body)")"
        case .badJSON(let what): "unexpected answer: \(what)"
        case .watchEnded: "the watch stream ended"
        case .server(let message): "etcd error: \(message)"
        }
    }
}

/// The JSON gateway's messages. Keys and values are base64 in JSON (they are bytes in
/// the protocol); 64-bit numbers are strings.
enum EtcdJSON {
    struct KeyValue: Equatable {
        var key: String
        var value: String
    }

    struct Event {
        enum Kind { case put, delete }
        var kind: Kind
        var kv: KeyValue
    }

    struct WatchMessage {
        var events: [Event] = []
        var canceled = false
        var compactRevision: Int64 = 0
    }

    /// The end of a prefix range: the prefix with its last byte incremented (etcd's
    /// `clientv3.GetPrefixRangeEnd`), so `[prefix, end)` is exactly the keys that start
    /// with the prefix.
    static func rangeEnd(of prefix: String) -> [UInt8] {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return bytes
            }
            bytes.removeLast()
        }
        return [0]   // every key
    }

    static func rangeRequest(prefix: String) -> [UInt8] {
        let object: [String: Any] = [
            "key": Data(prefix.utf8).base64EncodedString(),
            "range_end": Data(rangeEnd(of: prefix)).base64EncodedString(),
        ]
        return Array((try? JSONSerialization.data(withJSONObject: object)) ?? Data())
    }

    static func watchRequest(prefix: String, startRevision: Int64) -> [UInt8] {
        let object: [String: Any] = [
            "create_request": [
                "key": Data(prefix.utf8).base64EncodedString(),
                "range_end": Data(rangeEnd(of: prefix)).base64EncodedString(),
                "start_revision": String(startRevision),
                "progress_notify": true,
            ] as [String: Any],
        ]
        return Array((try? JSONSerialization.data(withJSONObject: object)) ?? Data())
    }

    static func decodeRange(_ body: [UInt8]) throws(EtcdError) -> (revision: Int64, kvs: [KeyValue]) {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            throw .badJSON("range answer is not a JSON object")
        }
        guard let header = object["header"] as? [String: Any], let revision = int64(header["revision"]) else {
            throw .badJSON("range answer has no header.revision")
        }
        let kvs = try (object["kvs"] as? [[String: Any]] ?? []).map { (kv) throws(EtcdError) -> KeyValue in try keyValue(kv) }
        return (revision, kvs)
    }

    static func decodeWatch(_ line: [UInt8]) throws(EtcdError) -> WatchMessage {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
            throw .badJSON("watch line is not a JSON object")
        }
        if let error = object["error"] as? [String: Any] {
            throw .server((error["message"] as? String) ?? "\(error)")
        }
        guard let result = object["result"] as? [String: Any] else { throw .badJSON("watch line has no result") }
        var message = WatchMessage()
        message.canceled = (result["canceled"] as? Bool) ?? false
        message.compactRevision = int64(result["compact_revision"]) ?? 0
        for event in result["events"] as? [[String: Any]] ?? [] {
            guard let kv = event["kv"] as? [String: Any] else { throw .badJSON("watch event without kv") }
            // Protobuf's JSON leaves out a field at its default value: PUT (0) has no "type".
            let kind: Event.Kind = (event["type"] as? String) == "DELETE" ? .delete : .put
            message.events.append(Event(kind: kind, kv: try keyValue(kv)))
        }
        return message
    }

    private static func keyValue(_ kv: [String: Any]) throws(EtcdError) -> KeyValue {
        guard let key64 = kv["key"] as? String, let keyData = Data(base64Encoded: key64) else {
            throw .badJSON("key is not base64")
        }
        let valueData = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
        return KeyValue(key: String(decoding: keyData, as: UTF8.self), value: String(decoding: valueData, as: UTF8.self))
    }

    private static func int64(_ value: Any?) -> Int64? {
        if let text = value as? String { return Int64(text) }
        if let number = value as? NSNumber { return number.int64Value }
        return nil
    }
}
