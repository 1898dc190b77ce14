// Consul as a backend source: a loop of blocking queries on
// `/v1/health/service/NAME?passing` (see ConsulWatch for the rules it follows), each
// answer turned into a whole BackendSet.
//
// Threading: `run` blocks the thread it is called on (the daemon gives each source one).
// `stop` may be called from any thread; it triggers the StopSignal that every wait of
// the loop and of its HTTP client also polls, so `run` returns within milliseconds.
public import Balancer
import Foundation

// MARK: index rules

/// consul-template's rules for the index to send with the next blocking query.
public enum ConsulIndex {
    /// `previous`: the index sent last (0 before the first answer); `received`: the
    /// X-Consul-Index of the answer. Returns the index to send next.
    ///  - Backwards means Consul's state was replaced (snapshot restore, a rebuilt
    ///    cluster): reset to 0, i.e. stop trusting what we waited on.
    ///  - 0 is never sent after the first call: Consul promises indexes >= 1, and a 0
    ///    that slipped through would make every following query return at once. 1 is
    ///    safe, as the answer that brought the reset also brought the current data.
    public static func next(previous: UInt64, received: UInt64) -> UInt64 {
        let next = received < previous ? 0 : received
        return max(next, 1)
    }
}

// MARK: source

/// Runs once: a stopped source stays stopped (its StopSignal cannot be re-armed).
public final class ConsulSource: BackendSource {
    public struct Options: Sendable {
        /// `http://host:port[/prefix]` of a Consul agent.
        public var url: String
        public var service: String
        /// Only instances carrying this tag (Consul matches tags case-insensitively).
        public var tag: String?
        /// Another datacenter than the agent's own.
        public var datacenter: String?
        /// ACL token, sent as `X-Consul-Token` (never logged).
        public var token: String?
        /// `?stale`: any Consul server may answer, so many balancerd spread their reads.
        public var stale = false
        /// With `stale`: an answer from a server that has not heard from the leader for
        /// longer than this is asked again of the leader (consul-template's max_stale).
        /// nil: any stale answer is used.
        public var maxStale: Duration? = .seconds(2)
        /// How long each blocking query may wait on the server (Consul caps it at 10 min).
        public var wait: Duration = .seconds(300)
        /// Least time between the starts of two queries; a random part of up to the same
        /// again is added. A burst of changes is still seen as one or two updates, and
        /// churn can never turn the loop into a hot loop. The first query after a quiet
        /// period (a long blocking wait) goes out at once.
        public var minimumInterval: Duration = .milliseconds(10)
        /// Added to `wait * 17/16` (Consul adds up to wait/16 of jitter) to make the read
        /// timeout of a blocking query; alone, it is the timeout of a non-blocking one.
        public var timeoutMargin: Duration = .seconds(5)
        public var connectTimeout: Duration = .seconds(3)
        /// Backoff after errors starts at `backoffBase` and doubles up to `backoffCap`.
        public var backoffBase: Duration = .milliseconds(100)
        public var backoffCap: Duration = .seconds(5)
        /// Where errors and recoveries are reported: stderr by default.
        public var log: @Sendable (String) -> Void = { ControlLog.line($0) }

        public init(url: String, service: String, tag: String? = nil, datacenter: String? = nil, token: String? = nil) {
            self.url = url
            self.service = service
            self.tag = tag
            self.datacenter = datacenter
            self.token = token
        }
    }

    public let options: Options
    public let url: HTTPURL
    private let stopSignal = StopSignal()

    public init(options: Options) throws(HTTPClientError) {
        self.options = options
        self.url = try HTTPURL(parsing: options.url)
    }

    public var description: String {
        var text = "consul \(url) service \(options.service)"
        if let tag = options.tag { text += " tag \(tag)" }
        if let dc = options.datacenter { text += " dc \(dc)" }
        return text
    }

    public func stop() {
        stopSignal.trigger()
    }

    public func run(update: @escaping @Sendable (BackendSet) -> Void) {
        run(update: update, report: { _ in })
    }

    public func run(update: @escaping @Sendable (BackendSet) -> Void, report: @escaping @Sendable (SourceEvent) -> Void) {
        var last: BackendSet?
        var lastSkipped: [String] = []
        watch.run(report: report) { body throws(ConsulError) in
            let (set, skipped) = Self.backendSet(from: try Self.decode([HealthEntry].self, body))
            if skipped != lastSkipped {
                lastSkipped = skipped
                if !skipped.isEmpty {
                    options.log("balancerd: consul: \(description): ignoring instances without a usable address or port: \(skipped.joined(separator: ", "))")
                }
            }
            // An answer can be the same data: a wait that timed out, an idempotent write,
            // a change to a check output or to an instance the filter drops.
            if set != last {
                last = set
                update(set)
            }
        }
    }

    var watch: ConsulWatch {
        var trailing: [String] = []
        if let tag = options.tag { trailing.append("tag=\(Self.percentEncoded(tag))") }
        return ConsulWatch(url: url, path: healthPath, leading: ["passing"], trailing: trailing,
                           settings: options.readSettings, stopSignal: stopSignal, description: description)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8]) throws(ConsulError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(body))
        } catch {
            throw .badJSON("\(error)")
        }
    }

    /// How long to wait before the next query, given the time since the last one started.
    static func pause(sinceLastCall elapsed: Duration, minimumInterval: Duration, jitter: Duration) -> Duration {
        elapsed >= minimumInterval ? .zero : minimumInterval + jitter - elapsed
    }

    // MARK: one query

    var healthPath: String { "/v1/health/service/\(Self.percentEncoded(options.service))" }

    func target(index: UInt64) -> String {
        watch.target(index: index, stale: options.stale)
    }

    // MARK: building the set

    /// The servers of a health answer, sorted by name so Consul's ordering is no change.
    static func backendSet(from entries: [HealthEntry]) -> (set: BackendSet, skipped: [String]) {
        struct Candidate {
            var id: String
            var node: String
            var address: HostPort
            var weight: Int
            var base: String
        }
        var candidates: [Candidate] = []
        var skipped: [String] = []
        for entry in entries {
            let id = entry.service.id ?? entry.service.service ?? ""
            let host = (entry.service.address?.isEmpty == false ? entry.service.address : entry.node.address) ?? ""
            guard !host.isEmpty, let rawPort = entry.service.port, let port = UInt16(exactly: rawPort), port > 0 else {
                skipped.append(id)
                continue
            }
            // Consul refuses Passing < 1 at registration; clamp anyway to haproxy's range.
            let weight = min(max(entry.service.weights?.passing ?? 1, 0), 256)
            candidates.append(Candidate(id: id, node: entry.node.node ?? "", address: HostPort(host: host, port: port),
                                        weight: weight, base: sanitizedName(id)))
        }
        // Service IDs are unique per agent only: the same ID on two nodes (often the
        // default ID, the service name) is told apart by the node, so names stay stable
        // whatever order Consul answers in.
        var counts: [String: Int] = [:]
        for c in candidates { counts[c.id, default: 0] += 1 }
        for i in candidates.indices where counts[candidates[i].id, default: 0] > 1 {
            candidates[i].base = sanitizedName(candidates[i].id + "@" + candidates[i].node)
        }
        candidates.sort { ($0.base, $0.address.host, $0.address.port) < ($1.base, $1.address.host, $1.address.port) }
        var taken = Set<String>()
        var servers: [ServerConfig] = []
        for c in candidates {
            var name = c.base
            var n = 2
            while taken.contains(name) {
                name = "\(c.base)_\(n)"
                n += 1
            }
            taken.insert(name)
            servers.append(ServerConfig(name: name, address: c.address, weight: c.weight))
        }
        servers.sort { $0.name < $1.name }
        return (BackendSet(servers: servers), skipped.sorted())
    }

    /// A server name from a service ID (see ServerName): safe in logs, on the stats page
    /// and in a written-out configuration.
    static func sanitizedName(_ id: String) -> String {
        ServerName.sanitized(id, fallback: "consul")
    }

    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}

extension ConsulSource.Options {
    var readSettings: ConsulReadSettings {
        ConsulReadSettings(datacenter: datacenter, token: token, stale: stale, maxStale: maxStale, wait: wait,
                           minimumInterval: minimumInterval, timeoutMargin: timeoutMargin, connectTimeout: connectTimeout,
                           backoffBase: backoffBase, backoffCap: backoffCap, log: log)
    }
}

// MARK: errors and reporting

public enum ConsulError: Error, Sendable, CustomStringConvertible {
    case http(HTTPClientError)
    case status(Int, String)
    case missingIndex
    case badIndex(String)
    /// X-Consul-Index: 0. Consul promises an index of at least 1; a 0 comes from a bug
    /// (older Consul versions had some) or from something in between, and waiting on it
    /// makes every blocking query return at once. Consul's notes say to reset to 1; here
    /// the answer is also not trusted, and the query is retried with the backoff.
    case zeroIndex
    case badJSON(String)

    public var description: String {
        switch self {
        case .http(let error): "\(error)"
        case .status(let status, let body): "HTTP \(status)\(body.isEmpty ? "" : ": \(body)")"
        case .missingIndex: "the answer has no X-Consul-Index header"
        case .badIndex(let text): "X-Consul-Index '\(text)' is not a number"
        case .zeroIndex: "X-Consul-Index is 0, which Consul never sends: the answer is not used"
        case .badJSON(let what): "the answer is not the JSON expected: \(what)"
        }
    }
}

extension ConsulError {
    /// The failure without what changes from one query to the next (how many bytes came
    /// before the close, the timeout of a blocking or a plain query, an error page's
    /// text): a body cut short is the same fault at 831 bytes and at 1399.
    var kind: String {
        switch self {
        case .http(.closed(let bytes)): bytes == 0 ? "closed without a response" : "closed inside a response"
        case .http(.timeout): "timeout"
        case .http(.unexpectedStatus(let status, _)), .status(let status, _): "HTTP \(status)"
        case .http(let error): "\(error)"
        case .missingIndex: "missing index"
        case .badIndex: "bad index"
        case .zeroIndex: "zero index"
        case .badJSON: "bad JSON"
        }
    }
}

/// Decides which failures are worth a log line: the first of a run, a different kind of
/// error, or the same one again after 30 s. A dead agent then costs two lines a minute,
/// not ten a second while the backoff is still short.
struct FailureReport {
    private(set) var count = 0
    private var lastLogged: String?
    private var lastLoggedAt: Int64 = 0
    static let repeatAfter: Int64 = 30_000_000_000

    /// `kind` (by default the error text) is what must change for a new line.
    mutating func failed(_ error: String, kind: String? = nil, now: Int64) -> String? {
        count += 1
        let kind = kind ?? error
        guard kind != lastLogged || now - lastLoggedAt >= Self.repeatAfter else { return nil }
        lastLogged = kind
        lastLoggedAt = now
        return count == 1 ? error : "\(error) (\(count) failures in a row)"
    }

    /// Returns the number of failures that just ended, if any.
    mutating func succeeded() -> Int? {
        defer {
            count = 0
            lastLogged = nil
        }
        return count > 0 ? count : nil
    }
}

// MARK: the JSON that is read

/// One entry of `/v1/health/service/NAME`: only the fields a backend needs. Everything
/// is optional so a field Consul leaves out (older versions have no Weights) is no error.
struct HealthEntry: Decodable, Equatable {
    struct Node: Decodable, Equatable {
        var node: String?
        var address: String?
        enum CodingKeys: String, CodingKey {
            case node = "Node", address = "Address"
        }
    }

    struct Weights: Decodable, Equatable {
        var passing: Int?
        enum CodingKeys: String, CodingKey {
            case passing = "Passing"
        }
    }

    struct Service: Decodable, Equatable {
        var id: String?
        var service: String?
        var address: String?
        var port: Int?
        var weights: Weights?
        var tags: [String]?
        enum CodingKeys: String, CodingKey {
            case id = "ID", service = "Service", address = "Address", port = "Port", weights = "Weights", tags = "Tags"
        }
    }

    var node: Node
    var service: Service
    enum CodingKeys: String, CodingKey {
        case node = "Node", service = "Service"
    }
}
