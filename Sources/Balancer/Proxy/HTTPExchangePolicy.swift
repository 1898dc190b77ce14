// The decisions of HTTP mode that do not depend on sockets: when a request may be sent
// again, when a connection may carry another request. Kept pure so they are unit-tested
// on their own (HTTPExchangePolicyTests).
enum HTTPExchangePolicy {
    /// What the policy needs to know of the request in flight.
    struct Request {
        var method: HTTPMethod = .get
        var version: HTTPVersion = .http11
        var keepAlive = true
        var upgrade = false
        var bodyComplete = true
        var bodyBytes = 0
        /// The whole request (head and body) is still in the send buffer, so it can be
        /// sent again. A body larger than `replayLimit` is streamed and forgotten.
        var replayable = true

        init() {}

        init(head: HTTPHead) {
            method = head.method
            version = head.version
            keepAlive = head.keepAlive
            upgrade = head.upgrade
        }
    }

    /// Bytes of a request kept for a possible replay (head plus body): 16 KiB by default.
    static let replayLimit = 16 * 1024

    /// After an error response, how long the client's remaining input is read and dropped
    /// before closing (closing with unread input would send a RST that can destroy the
    /// response before the client reads it).
    static let linger: Int64 = 1_000_000_000

    /// The server connection failed before any response byte. Sending the request again
    /// is safe only for idempotent methods, and possible only while it is all still in
    /// the buffer (haproxy's `retry-on conn-failure empty-response`). A reused idle
    /// connection that the server had closed (the keep-alive race) does not count as an
    /// attempt against the server, but it still obeys the method rule.
    static func mayResend(_ request: Request, attempts: Int, retries: Int, reusedConnection: Bool) -> Bool {
        guard request.method.isIdempotent, request.replayable, !request.upgrade else { return false }
        return reusedConnection ? attempts <= retries + 1 : attempts <= retries
    }

    /// Whether the client connection stays open after this response.
    static func keepAliveToClient(request: Request, responseFraming: BodyFraming, stopping: Bool) -> Bool {
        guard request.keepAlive, !stopping else { return false }
        // A response delimited by the server's close has no end we could show the client
        // except our own close.
        if case .untilClose = responseFraming { return false }
        return true
    }
}

/// How much of a message body is still to come, and how to find its end.
enum BodyProgress {
    case done
    case remaining(Int)
    case chunked(ChunkedDecoder)
    case untilClose

    enum Step {
        /// `count` leading bytes of the input belong to the body; `done` if it ended there.
        case body(count: Int, done: Bool)
        case invalid
    }

    init(_ framing: BodyFraming) {
        switch framing {
        case .none: self = .done
        case .contentLength(let n): self = n == 0 ? .done : .remaining(n)
        case .chunked: self = .chunked(ChunkedDecoder())
        case .untilClose: self = .untilClose
        }
    }

    var isDone: Bool {
        if case .done = self { return true }
        return false
    }

    /// Body bytes that may move without being looked at: the rest of a Content-Length
    /// body, or the rest of the current chunk's data (its CRLF and the next size line
    /// still go through `take`).
    var spliceableBytes: Int {
        switch self {
        case .remaining(let n): return n
        case .chunked(let decoder): return decoder.dataRemaining
        default: return 0
        }
    }

    /// `count` bytes (at most `spliceableBytes`) were moved without `take`.
    mutating func spliced(_ count: Int) {
        switch self {
        case .remaining(let n):
            self = n == count ? .done : .remaining(n - count)
        case .chunked(var decoder):
            decoder.skipData(count)
            self = .chunked(decoder)
        default:
            break
        }
    }

    mutating func take(from input: UnsafeRawBufferPointer) -> Step {
        switch self {
        case .done:
            return .body(count: 0, done: true)
        case .remaining(let n):
            let count = min(n, input.count)
            if count == n {
                self = .done
                return .body(count: count, done: true)
            }
            self = .remaining(n - count)
            return .body(count: count, done: false)
        case .chunked(var decoder):
            let outcome = decoder.consume(input)
            self = .chunked(decoder)
            switch outcome {
            case .needMore: return .body(count: input.count, done: false)
            case .complete(let consumed):
                self = .done
                return .body(count: consumed, done: true)
            case .invalid: return .invalid
            }
        case .untilClose:
            return .body(count: input.count, done: false)
        }
    }
}
