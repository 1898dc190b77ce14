// One blocking query on one Consul endpoint, asked again and again: the loop that
// ConsulSource (one service's instances) and ConsulRoutes (the catalog, then each tagged
// service) share.
//
// The loop follows consul-template's `watch/view.go` and Consul's blocking-query notes:
//  - the same X-Consul-Index means the wait timed out (or an idempotent write woke us):
//    ask again; the caller's unchanged result publishes nothing;
//  - an index that went backwards resets to 0, sent as 1 (see `ConsulIndex`);
//  - an index of 0 breaks Consul's promise (>= 1): that answer counts as a failed query;
//  - successive calls are at least `minimumInterval` apart, with jitter;
//  - errors back off exponentially with jitter, reset by the first success, and never
//    reach the caller's result: the last good one stays in force.
// With `stale`, any Consul server may answer (`?stale`), so N balancerd spread their reads
// over the servers instead of all asking the leader. Consul then reports in
// X-Consul-LastContact how long ago that server last heard from the leader; an answer
// older than `maxStale` is thrown away and asked again of the leader (without `stale`),
// once, as consul-template's `max_stale` does. The next query is stale again.
//
// Threading: `run` blocks its thread until the StopSignal triggers.
import Balancer
import Foundation

/// Where and how a Consul client reads; the part ConsulSource and ConsulRoutes share.
struct ConsulReadSettings: Sendable {
    var datacenter: String?
    var token: String?
    var stale = false
    var maxStale: Duration?
    var wait: Duration
    var minimumInterval: Duration
    var timeoutMargin: Duration
    var connectTimeout: Duration
    var backoffBase: Duration
    var backoffCap: Duration
    var log: @Sendable (String) -> Void
}

/// The query loop of one endpoint. A value: `run` keeps its state on the stack.
struct ConsulWatch {
    let url: HTTPURL
    /// Percent-encoded path, e.g. `/v1/health/service/web`.
    let path: String
    /// Parameters before the index (`passing`) and after it (`tag=…`), already encoded.
    var leading: [String] = []
    var trailing: [String] = []
    let settings: ConsulReadSettings
    let stopSignal: StopSignal
    /// For log lines: `consul http://… service web`.
    let description: String

    /// The request target for one query. `stale` is decided per query (the leader retry
    /// drops it).
    func target(index: UInt64, stale: Bool) -> String {
        var parameters = leading
        if index > 0 {
            parameters += ["index=\(index)", "wait=\(settings.wait.shortDescription)"]
        }
        parameters += trailing
        if let dc = settings.datacenter { parameters.append("dc=\(ConsulSource.percentEncoded(dc))") }
        if stale { parameters.append("stale") }
        return parameters.isEmpty ? path : path + "?" + parameters.joined(separator: "&")
    }

    /// Runs until the stop signal. `answer` receives every usable answer's body (an
    /// unchanged one too: the caller compares); throwing from it counts as a failed query.
    func run(report: (SourceEvent) -> Void, answer: ([UInt8]) throws(ConsulError) -> Void) {
        let client = HTTPClient(url: url, connectTimeout: settings.connectTimeout, stopSignal: stopSignal)
        defer { client.close() }
        var index: UInt64 = 0
        var backoff = Backoff(base: settings.backoffBase, cap: settings.backoffCap)
        var generator = SystemRandomNumberGenerator()
        var lastCallStart: Int64?
        var failures = FailureReport()
        var askLeader = false
        var staleRetries = 0

        while !stopSignal.isTriggered {
            if let lastCallStart {
                let elapsed = Duration.nanoseconds(Posix.monotonicNanoseconds() - lastCallStart)
                let jitter = Duration.nanoseconds(Int64.random(in: 0...max(settings.minimumInterval.nanoseconds, 0), using: &generator))
                let pause = ConsulSource.pause(sinceLastCall: elapsed, minimumInterval: settings.minimumInterval, jitter: jitter)
                if pause > .zero && !stopSignal.sleep(for: pause) { break }
            }
            lastCallStart = Posix.monotonicNanoseconds()

            let stale = settings.stale && !askLeader
            let received: UInt64
            do throws(ConsulError) {
                let response = try query(client, target: target(index: index, stale: stale), blocking: index > 0)
                if stale, let bound = settings.maxStale, let contact = Self.lastContact(response), contact > bound {
                    // Too old to use: the same query of the leader, at once.
                    askLeader = true
                    staleRetries += 1
                    if staleRetries == 1 || staleRetries % 100 == 0 {
                        let leader = response.header("X-Consul-KnownLeader") == "false" ? "; the server knows no leader" : ""
                        settings.log("balancerd: consul: \(description): stale answer \(contact.shortDescription) behind the leader (max \(bound.shortDescription))\(leader); asking the leader\(staleRetries > 1 ? " (\(staleRetries) times so far)" : "")")
                    }
                    continue
                }
                if stale { staleRetries = 0 }
                askLeader = false
                received = try Self.index(of: response)
                try answer(response.body)
            } catch {
                askLeader = false
                if stopSignal.isTriggered { break }
                report(.failed(error.description))
                let delay = backoff.nextDelay(using: &generator)
                if let line = failures.failed(error.description, kind: error.kind, now: Posix.monotonicNanoseconds()) {
                    settings.log("balancerd: consul: GET \(url)\(path) failed: \(line); keeping the last good table (next try in \(delay.shortDescription))")
                }
                if !stopSignal.sleep(for: delay) { break }
                continue
            }

            backoff.succeeded()
            report(.answered)
            if let count = failures.succeeded() {
                settings.log("balancerd: consul: \(description) answering again after \(count) failed \(count == 1 ? "query" : "queries")")
            }
            index = ConsulIndex.next(previous: index, received: received)
        }
    }

    private func query(_ client: HTTPClient, target: String, blocking: Bool) throws(ConsulError) -> HTTPResponse {
        var headers: [(name: String, value: String)] = []
        if let token = settings.token { headers.append(("X-Consul-Token", token)) }
        let wait = settings.wait
        let timeout = blocking ? wait + wait / 16 + settings.timeoutMargin : settings.timeoutMargin
        let response: HTTPResponse
        do {
            response = try client.get(target, headers: headers, timeout: timeout)
        } catch {
            throw .http(error)
        }
        guard response.status == 200 else {
            throw .status(response.status, HTTPClient.preview(response.body))
        }
        return response
    }

    static func index(of response: HTTPResponse) throws(ConsulError) -> UInt64 {
        guard let text = response.header("X-Consul-Index") else { throw .missingIndex }
        guard let received = UInt64(text) else { throw .badIndex(text) }
        guard received > 0 else { throw .zeroIndex }
        return received
    }

    /// X-Consul-LastContact: milliseconds since the answering server last heard from the
    /// leader (0 from the leader itself). nil when absent or not a number.
    static func lastContact(_ response: HTTPResponse) -> Duration? {
        response.header("X-Consul-LastContact").flatMap { UInt64($0) }.map { .milliseconds(Int64(clamping: $0)) }
    }
}
