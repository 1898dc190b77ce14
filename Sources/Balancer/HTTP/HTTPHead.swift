// The value types of the HTTP/1.1 layer. A parsed head does not own its bytes: every
// name, value and token is a range into the buffer it was parsed from, so parsing copies
// nothing and the head is only copied when HTTPHeadWriter rewrites it for the other side.
// Ranges are offsets from the start of the buffer handed to HTTPHeadParser.parse, which
// is also where `length` counts from.

public enum HTTPMethod: Sendable, Equatable {
    case get, head, post, put, delete, options, patch, trace, connect, other

    /// Whether a failed request may be sent again to another server. The project's retry
    /// rule follows RFC 9110 §9.2.2: GET, HEAD, OPTIONS, PUT, DELETE and TRACE. POST and
    /// PATCH are not, and neither is an unknown method, since we cannot know what it does.
    public var isIdempotent: Bool {
        switch self {
        case .get, .head, .options, .put, .delete, .trace: true
        case .post, .patch, .connect, .other: false
        }
    }

    /// The method named `name`, for code that holds a method as text (Discovery's client).
    public init(_ name: String) {
        var name = name
        self = name.withUTF8 { Self.classify(UnsafeRawBufferPointer($0), 0..<$0.count) }
    }

    /// Methods are case-sensitive (RFC 9110 §9.1): "get" is an unknown method, not GET.
    static func classify(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> HTTPMethod {
        switch range.count {
        case 3:
            if HTTPSyntax.equals(bytes, range, "GET") { return .get }
            if HTTPSyntax.equals(bytes, range, "PUT") { return .put }
        case 4:
            if HTTPSyntax.equals(bytes, range, "HEAD") { return .head }
            if HTTPSyntax.equals(bytes, range, "POST") { return .post }
        case 5:
            if HTTPSyntax.equals(bytes, range, "PATCH") { return .patch }
            if HTTPSyntax.equals(bytes, range, "TRACE") { return .trace }
        case 6:
            if HTTPSyntax.equals(bytes, range, "DELETE") { return .delete }
        case 7:
            if HTTPSyntax.equals(bytes, range, "OPTIONS") { return .options }
            if HTTPSyntax.equals(bytes, range, "CONNECT") { return .connect }
        default:
            break
        }
        return .other
    }
}

public enum HTTPVersion: Sendable, Equatable { case http10, http11 }

/// One header field line, as ranges into the parsed buffer.
public struct HTTPField: Sendable, Equatable {
    public var name: Range<Int>
    /// Trimmed of leading and trailing SP/HTAB (RFC 9112 §5.1 OWS); may be empty.
    public var value: Range<Int>

    public init(name: Range<Int>, value: Range<Int>) {
        self.name = name
        self.value = value
    }
}

/// How the body of a message is delimited (RFC 9112 §6.3).
public enum BodyFraming: Sendable, Equatable {
    /// No body.
    case none
    /// Exactly this many bytes (may be 0).
    case contentLength(Int)
    /// `Transfer-Encoding: chunked`; measure it with ChunkedDecoder.
    case chunked
    /// Response only: the body runs until the server closes the connection, so the
    /// connection to the client cannot be kept alive after it either.
    case untilClose
}

public struct HTTPHead: Sendable, Equatable {
    // Request
    /// `.other` for responses.
    public var method: HTTPMethod
    /// Empty (0..<0) for responses.
    public var methodRange: Range<Int>
    /// Empty (0..<0) for responses.
    public var target: Range<Int>

    // Response
    /// 0 for requests.
    public var status: Int
    /// May be empty; 0..<0 for requests.
    public var reason: Range<Int>

    public var version: HTTPVersion
    /// All header fields in order.
    public var fields: [HTTPField]
    /// Bytes of the head including the final CRLFCRLF, counted from the start of the buffer,
    /// so it includes the empty lines skipped before a request line (see `start`). The
    /// body or the next pipelined message starts at this offset.
    public var length: Int
    /// Where the start line begins: after the empty lines a client may send before a
    /// request line (RFC 9112 §2.2). Always 0 for responses, which may not have them.
    public var start: Int
    /// The request line or status line without its CRLF.
    public var startLine: Range<Int>
    /// For requests, the framing of the body. For responses, the framing as the message
    /// alone says (`.untilClose` when it has neither Transfer-Encoding nor Content-Length);
    /// use `responseFraming(requestMethod:)` for what to actually read.
    public var framing: BodyFraming
    /// HTTP/1.1: true unless a Connection token says "close". HTTP/1.0: false unless a
    /// Connection token says "keep-alive" (and none says "close").
    public var keepAlive: Bool
    /// `Expect: 100-continue` in an HTTP/1.1 request. RFC 9110 §10.1.1 says to ignore it
    /// in HTTP/1.0, so it is false there.
    public var expectContinue: Bool
    /// Request: HTTP/1.1, a Connection token "upgrade" and an Upgrade field.
    /// Response: status 101.
    public var upgrade: Bool
    /// The value of the Host field of a request.
    public var hostRange: Range<Int>?
    /// Indices into `fields`, ascending, of the hop-by-hop fields that HTTPHeadWriter
    /// drops: Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade, and every
    /// field named by a Connection token, except Host, Content-Length and
    /// Transfer-Encoding (see HTTPHeadParser for why those are never dropped).
    public var hopByHop: [Int]

    /// False when Content-Length came as several fields or as a list ("5, 5"). The values
    /// agreed, but the writer sends a single plain `Content-Length` instead, so that the
    /// next hop cannot read the list differently from us (RFC 9110 §8.6).
    var contentLengthIsCanonical: Bool

    init(version: HTTPVersion) {
        method = .other
        methodRange = 0..<0
        target = 0..<0
        status = 0
        reason = 0..<0
        self.version = version
        fields = []
        length = 0
        start = 0
        startLine = 0..<0
        framing = .none
        keepAlive = false
        expectContinue = false
        upgrade = false
        hostRange = nil
        hopByHop = []
        contentLengthIsCanonical = true
    }

    /// What to read after this response head, given the method of the request it answers
    /// (RFC 9112 §6.3): nothing after HEAD, 1xx, 204 and 304; otherwise the framing the
    /// response carries. A 2xx to CONNECT would turn the connection into a tunnel, which
    /// balancerd does not support: the request parser rejects CONNECT, so that response
    /// never arrives, and `.none` is returned only to be total.
    public func responseFraming(requestMethod: HTTPMethod) -> BodyFraming {
        HTTPHead.responseFraming(status: status, requestMethod: requestMethod, messageFraming: framing)
    }

    public static func responseFraming(status: Int, requestMethod: HTTPMethod, messageFraming: BodyFraming) -> BodyFraming {
        if requestMethod == .head || (100...199).contains(status) || status == 204 || status == 304 {
            return .none
        }
        if requestMethod == .connect && (200...299).contains(status) {
            return .none
        }
        return messageFraming
    }

    /// Whether this is an interim (1xx) response other than 101: the final response to the
    /// same request still follows it.
    public var isInformational: Bool { (100...199).contains(status) && status != 101 }
}
