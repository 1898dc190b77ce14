// The responses balancerd writes itself, in haproxy's format (src/http.c http_err_msgs):
// the same reason phrases ("400 Bad request", "504 Gateway Time-out") and bodies, so
// that clients and log scrapers moving from haproxy see what they saw before. haproxy has
// no 431; its body here follows the same pattern. Every one closes the connection: after
// an error we do not trust the framing of what follows on it.
//
// The bytes are built once per process and then only shared, so sending one allocates
// nothing.

public enum ErrorResponse: Sendable, Equatable, CaseIterable {
    case badRequest
    case methodNotAllowed
    case requestTimeout
    case headerFieldsTooLarge
    case internalServerError
    case badGateway
    case serviceUnavailable
    case gatewayTimeout
    /// `http-request deny` (haproxy's default deny status).
    case forbidden
    /// No route and no default backend (a routes-only frontend).
    case notFound

    public var status: Int {
        switch self {
        case .badRequest: 400
        case .methodNotAllowed: 405
        case .requestTimeout: 408
        case .headerFieldsTooLarge: 431
        case .internalServerError: 500
        case .badGateway: 502
        case .serviceUnavailable: 503
        case .gatewayTimeout: 504
        case .forbidden: 403
        case .notFound: 404
        }
    }

    /// The complete response: status line, fields and body.
    public var bytes: [UInt8] {
        switch self {
        case .badRequest: Self.badRequestBytes
        case .methodNotAllowed: Self.methodNotAllowedBytes
        case .requestTimeout: Self.requestTimeoutBytes
        case .headerFieldsTooLarge: Self.headerFieldsTooLargeBytes
        case .internalServerError: Self.internalServerErrorBytes
        case .badGateway: Self.badGatewayBytes
        case .serviceUnavailable: Self.serviceUnavailableBytes
        case .gatewayTimeout: Self.gatewayTimeoutBytes
        case .forbidden: Self.forbiddenBytes
        case .notFound: Self.notFoundBytes
        }
    }

    private static let badRequestBytes = make("400 Bad request", "Your browser sent an invalid request.")
    private static let methodNotAllowedBytes = make(
        "405 Method Not Allowed", "A request was made of a resource using a request method not supported by that resource")
    private static let requestTimeoutBytes = make(
        "408 Request Time-out", "Your browser didn't send a complete request in time.")
    private static let headerFieldsTooLargeBytes = make(
        "431 Request Header Fields Too Large", "Your browser sent a request whose header fields are too large.")
    private static let internalServerErrorBytes = make("500 Internal Server Error", "An internal server error occurred.")
    private static let badGatewayBytes = make("502 Bad Gateway", "The server returned an invalid or incomplete response.")
    private static let serviceUnavailableBytes = make(
        "503 Service Unavailable", "No server is available to handle this request.")
    private static let gatewayTimeoutBytes = make("504 Gateway Time-out", "The server didn't respond in time.")
    private static let forbiddenBytes = make("403 Forbidden", "Request forbidden by administrative rules.")
    private static let notFoundBytes = make("404 Not Found", "The resource could not be found.")

    /// `statusAndReason` is "503 Service Unavailable"; the length is computed, never typed.
    private static func make(_ statusAndReason: String, _ message: String) -> [UInt8] {
        let body = "<html><body><h1>\(statusAndReason)</h1>\n\(message)\n</body></html>\n"
        let head = "HTTP/1.1 \(statusAndReason)\r\n"
            + "content-length: \(body.utf8.count)\r\n"
            + "cache-control: no-cache\r\n"
            + "content-type: text/html\r\n"
            + "connection: close\r\n"
            + "\r\n"
        return Array(head.utf8) + Array(body.utf8)
    }
}

/// The bytes sent for each canned error: haproxy's, or an `errorfile`'s where the
/// configuration has one. Chosen once, when a frontend's settings are built, so sending an
/// error still allocates nothing. As in haproxy, a file is sent exactly as written and the
/// connection is closed after it, whatever its own header fields say.
struct ErrorPages: Sendable {
    private let pages: [[UInt8]]

    /// Client errors (4xx) happen before or regardless of the backend: the frontend's
    /// files. Server errors (5xx) happen once the backend is chosen: its files first, then
    /// the frontend's.
    init(frontend: [ErrorFile], backend: [ErrorFile]) {
        pages = ErrorResponse.allCases.map { error in
            let status = error.status
            let file = status < 500
                ? frontend.last { $0.status == status }
                : (backend.last { $0.status == status } ?? frontend.last { $0.status == status })
            return file?.response ?? error.bytes
        }
    }

    static let standard = ErrorPages(frontend: [], backend: [])

    @inline(__always)
    subscript(error: ErrorResponse) -> [UInt8] {
        pages[error.index]
    }
}

extension ErrorResponse {
    /// Position in `allCases`.
    var index: Int {
        switch self {
        case .badRequest: 0
        case .methodNotAllowed: 1
        case .requestTimeout: 2
        case .headerFieldsTooLarge: 3
        case .internalServerError: 4
        case .badGateway: 5
        case .serviceUnavailable: 6
        case .gatewayTimeout: 7
        case .forbidden: 8
        case .notFound: 9
        }
    }
}
