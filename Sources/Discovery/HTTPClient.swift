// A small blocking HTTP/1.1 client for discovery's control-plane calls (Consul's blocking
// queries, the etcd watcher's chunked stream). It runs on a source's own thread, never on
// a loop thread, so blocking is fine there; it still uses non-blocking sockets and poll(2),
// because every wait must also end when the source is stopped (`StopSignal`) or a timeout
// passes, which a blocking read(2) cannot do.
//
// One request at a time on one TCP connection, kept alive between requests. Not for
// concurrent use: only `StopSignal.trigger()` may be called from another thread.
//
// Responses are read by HTTPMessageReader, so with the proxy's own parser and chunked
// decoder: strict, and bounded. What is left here is the socket, the waits and the
// retry of a stale kept-alive connection.
public import Balancer
import Synchronization

// MARK: URL

/// `http://host[:port][/prefix]`: where a control-plane server is. Request targets are
/// appended to the prefix, so a server behind a path-routing proxy works too.
public struct HTTPURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    /// "" or a path starting with "/" and not ending with one.
    public var pathPrefix: String

    public init(host: String, port: UInt16, pathPrefix: String = "") {
        self.host = host
        self.port = port
        self.pathPrefix = pathPrefix
    }

    public init(parsing text: String) throws(HTTPClientError) {
        let lower = text.lowercased()
        guard lower.hasPrefix("http://") else {
            let reason = lower.hasPrefix("https://") ? "https is not supported" : "expected http://host:port[/prefix]"
            throw .invalidURL(text, reason: reason)
        }
        let rest = text.dropFirst("http://".count)
        if rest.contains("?") || rest.contains("#") {
            throw .invalidURL(text, reason: "a query or fragment is not allowed")
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        var path = String(rest[slash...])
        while path.hasSuffix("/") { path.removeLast() }
        if authority.contains("@") { throw .invalidURL(text, reason: "user information is not supported") }

        var hostPart: Substring
        var portPart: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw .invalidURL(text, reason: "unterminated [IPv6] host") }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw .invalidURL(text, reason: "junk after ]") }
                portPart = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        } else {
            hostPart = authority
        }
        guard !hostPart.isEmpty else { throw .invalidURL(text, reason: "no host") }
        var port: UInt16 = 80
        if let portPart {
            guard let value = UInt16(portPart), value > 0 else { throw .invalidURL(text, reason: "bad port '\(portPart)'") }
            port = value
        }
        self.init(host: String(hostPart), port: port, pathPrefix: path)
    }

    var authority: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return port == 80 ? host : "\(host):\(port)"
    }

    public var description: String { "http://\(authority)\(pathPrefix)" }
}

// MARK: messages

public struct HTTPRequest: Sendable {
    public var method: String
    /// Path and query, starting with "/", relative to the URL's prefix.
    public var target: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(method: String, target: String, headers: [(name: String, value: String)] = [], body: [UInt8] = []) {
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
    }
}

public struct HTTPResponseHead: Sendable {
    public var status: Int
    public var reason: String
    public var headers: [(name: String, value: String)]
    public var version: HTTPVersion

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveEquals(name) }?.value
    }

    public var isSuccess: Bool { (200..<300).contains(status) }
}

public struct HTTPResponse: Sendable {
    public var head: HTTPResponseHead
    public var body: [UInt8]

    public var status: Int { head.status }
    public func header(_ name: String) -> String? { head.header(name) }
    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// What failed, in words a log line can use as is.
public enum HTTPClientError: Error, Sendable, CustomStringConvertible {
    case invalidURL(String, reason: String)
    case resolve(ResolutionError)
    case connect(address: String, SystemError)
    case connectTimeout(address: String, after: Duration)
    case send(SystemError)
    case receive(SystemError)
    /// No (complete) response within the request's timeout, or no byte within a stream's idle timeout.
    case timeout(after: Duration)
    /// The server closed the connection before the response was complete.
    case closed(responseBytes: Int)
    case malformed(String)
    case tooLarge(limit: Int)
    /// A streamed request answered with a non-2xx status (the body is read and shortened).
    case unexpectedStatus(Int, body: String)
    /// The client's `StopSignal` was triggered.
    case cancelled

    public var description: String {
        switch self {
        case .invalidURL(let url, let reason): "invalid URL '\(url)': \(reason)"
        case .resolve(let error): "\(error)"
        case .connect(let address, let error): "connect to \(address): \(error.errno)"
        case .connectTimeout(let address, let after): "connect to \(address): no answer within \(after.shortDescription)"
        case .send(let error): "sending the request: \(error.errno)"
        case .receive(let error): "reading the response: \(error.errno)"
        case .timeout(let after): "no response within \(after.shortDescription)"
        case .closed(let bytes):
            bytes == 0 ? "connection closed by the server without a response"
                : "connection closed by the server after \(bytes) bytes of an incomplete response"
        case .malformed(let what): "malformed response: \(what)"
        case .tooLarge(let limit): "response larger than \(limit) bytes"
        case .unexpectedStatus(let status, let body): "HTTP \(status)\(body.isEmpty ? "" : ": \(body)")"
        case .cancelled: "cancelled"
        }
    }
}

// MARK: stop signal

/// A one-shot latch that ends every blocking wait of a source: the HTTP client's polls and
/// the pauses between requests. It is an eventfd that is signalled once and never drained,
/// so it stays readable and any later poll returns at once too.
public final class StopSignal: Sendable {
    private let triggered = Atomic<Bool>(false)
    /// -1 if no eventfd could be made (descriptors exhausted): waits then poll in short
    /// slices and look at `triggered`, so stopping still works, only less promptly.
    let fd: CInt

    public init() {
        fd = (try? EventFD.create()) ?? -1
    }

    deinit {
        if fd >= 0 { Posix.close(fd) }
    }

    public var isTriggered: Bool { triggered.load(ordering: .acquiring) }

    /// Thread-safe; the first call wins, later ones do nothing.
    public func trigger() {
        guard !triggered.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if fd >= 0 { EventFD.signal(fd) }
    }

    /// Sleeps for `duration` unless triggered first. Returns false if triggered.
    @discardableResult
    public func sleep(for duration: Duration) -> Bool {
        let deadline = Posix.monotonicNanoseconds() + duration.nanoseconds
        while !isTriggered {
            let remaining = deadline - Posix.monotonicNanoseconds()
            if remaining <= 0 { return true }
            _ = wait(on: nil, for: [], timeoutNanoseconds: remaining)
        }
        return false
    }

    /// Polls `fd` (if any) for `events` and this signal, for up to `timeoutNanoseconds`.
    /// Returns what `fd` reported (empty on timeout or when triggered).
    func wait(on socket: CInt?, for events: Posix.PollEvents, timeoutNanoseconds: Int64) -> Result<Posix.PollEvents, SystemError> {
        var requests: [Posix.PollRequest] = []
        if let socket { requests.append(Posix.PollRequest(fd: socket, events: events)) }
        // Without an eventfd, wake up every 50 ms to look at the flag.
        var ms = Int((max(timeoutNanoseconds, 0) + 999_999) / 1_000_000)
        if fd >= 0 { requests.append(Posix.PollRequest(fd: fd, events: .readable)) } else { ms = min(ms, 50) }
        do {
            _ = try Posix.poll(&requests, timeoutMilliseconds: ms)
        } catch {
            return .failure(error)
        }
        return .success(socket == nil ? [] : requests[0].returned)
    }
}

// MARK: client

public final class HTTPClient {
    public let url: HTTPURL
    public let connectTimeout: Duration
    public let stopSignal: StopSignal
    /// Upper bound for a buffered response body (`send`), so a confused server cannot make
    /// the control thread eat all memory.
    public var maximumBodySize = 64 << 20

    private static let maximumHeadSize = 64 << 10

    private var fd: CInt = -1
    private var connectedTo = ""
    /// The receive buffer and the parsing; one per client, reset per connection.
    private let reader = HTTPMessageReader(kind: .response, limits: .init(maxHeadBytes: maximumHeadSize, maxFields: 500))
    /// Response bytes received for the current request: tells a stale kept-alive
    /// connection (closed before any byte) from a server that died mid-answer.
    private var responseBytes = 0

    public init(url: HTTPURL, connectTimeout: Duration = .seconds(3), stopSignal: StopSignal = StopSignal()) {
        self.url = url
        self.connectTimeout = connectTimeout
        self.stopSignal = stopSignal
    }

    deinit {
        close()
    }

    /// Closes the connection; the next request opens a new one.
    public func close() {
        if fd >= 0 { Posix.close(fd) }
        fd = -1
        reader.reset()
    }

    public func get(_ target: String, headers: [(name: String, value: String)] = [], timeout: Duration) throws(HTTPClientError) -> HTTPResponse {
        try send(HTTPRequest(method: "GET", target: target, headers: headers), timeout: timeout)
    }

    public func put(_ target: String, headers: [(name: String, value: String)] = [], body: [UInt8] = [], timeout: Duration) throws(HTTPClientError) -> HTTPResponse {
        try send(HTTPRequest(method: "PUT", target: target, headers: headers, body: body), timeout: timeout)
    }

    /// Sends `request` and reads the whole response, any status. `timeout` bounds the time
    /// from sending to the last body byte (connecting has `connectTimeout` of its own).
    /// A kept-alive connection that the server closed while idle is retried once on a
    /// new one, as browsers and Go's client do; discovery only sends idempotent requests.
    public func send(_ request: HTTPRequest, timeout: Duration) throws(HTTPClientError) -> HTTPResponse {
        var body: [UInt8] = []
        let limit = maximumBodySize
        let head = try exchange(request, timing: .total(timeout)) { (chunk) throws(HTTPClientError) -> Bool in
            guard body.count + chunk.count <= limit else { throw .tooLarge(limit: limit) }
            body.append(contentsOf: chunk)
            return true
        }
        return HTTPResponse(head: head, body: body)
    }

    /// Sends `request` and delivers the body of a 2xx response line by line as it arrives
    /// (decoding chunked framing; lines split at "\n", without "\n" or "\r\n"; a last line
    /// without a newline is delivered at the end). Returns the head when the body ends or
    /// `onLine` returns false (the connection is then closed, since the rest of the body
    /// was not read). `idleTimeout` bounds each wait for bytes, not the whole stream; a
    /// watcher that should run until stopped triggers the client's `StopSignal`, which
    /// makes this throw `.cancelled`. A non-2xx answer throws `.unexpectedStatus`.
    @discardableResult
    public func stream(_ request: HTTPRequest, idleTimeout: Duration, onLine: ([UInt8]) -> Bool) throws(HTTPClientError) -> HTTPResponseHead {
        var partial: [UInt8] = []
        var errorBody: [UInt8] = []
        var head: HTTPResponseHead?
        var stopped = false
        let finalHead = try exchange(request, timing: .idle(idleTimeout), onHead: { head = $0 }) { (chunk) throws(HTTPClientError) -> Bool in
            guard let head, head.isSuccess else {
                if errorBody.count < 4096 { errorBody.append(contentsOf: chunk.prefix(4096 - errorBody.count)) }
                return true
            }
            var lineStart = chunk.startIndex
            for i in chunk.indices where chunk[i] == UInt8(ascii: "\n") {
                partial.append(contentsOf: chunk[lineStart..<i])
                if partial.last == UInt8(ascii: "\r") { partial.removeLast() }
                let line = partial
                partial.removeAll(keepingCapacity: true)
                lineStart = i + 1
                if !onLine(line) {
                    stopped = true
                    return false
                }
            }
            partial.append(contentsOf: chunk[lineStart...])
            return true
        }
        guard finalHead.isSuccess else {
            throw .unexpectedStatus(finalHead.status, body: Self.preview(errorBody))
        }
        if !stopped && !partial.isEmpty { _ = onLine(partial) }
        return finalHead
    }

    static func preview(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes.prefix(200), as: UTF8.self)
            .trimmingWhitespace
            .map { $0 == "\n" || $0 == "\r" ? " " : $0 }
        return String(text) + (bytes.count > 200 ? "…" : "")
    }

    // MARK: exchange

    enum Timing {
        /// The whole response must arrive within this.
        case total(Duration)
        /// Each wait for bytes may last this long.
        case idle(Duration)
    }

    /// One request/response, retried once on a fresh connection when a reused one turns
    /// out to be closed. `sink` receives body bytes and returns false to stop reading.
    private func exchange(
        _ request: HTTPRequest, timing: Timing,
        onHead: (HTTPResponseHead) -> Void = { _ in },
        sink: (UnsafeRawBufferPointer) throws(HTTPClientError) -> Bool
    ) throws(HTTPClientError) -> HTTPResponseHead {
        var attempt = 0
        while true {
            attempt += 1
            let reused = fd >= 0
            do throws(HTTPClientError) {
                if !reused { try connect() }
                return try exchangeOnce(request, timing: timing, onHead: onHead, sink: sink)
            } catch {
                close()
                if stopSignal.isTriggered { throw .cancelled }
                if reused && attempt == 1 && responseBytes == 0 && error.isStaleConnection { continue }
                throw error
            }
        }
    }

    private func exchangeOnce(
        _ request: HTTPRequest, timing: Timing,
        onHead: (HTTPResponseHead) -> Void,
        sink: (UnsafeRawBufferPointer) throws(HTTPClientError) -> Bool
    ) throws(HTTPClientError) -> HTTPResponseHead {
        let started = Posix.monotonicNanoseconds()
        let deadline: () -> Int64 = {
            switch timing {
            case .total(let limit): started + limit.nanoseconds
            case .idle(let limit): Posix.monotonicNanoseconds() + limit.nanoseconds
            }
        }
        let limit: Duration = switch timing {
        case .total(let d), .idle(let d): d
        }
        responseBytes = 0
        try writeAll(serialize(request), deadline: deadline, limit: limit)

        let fill = { (space: UnsafeMutableRawBufferPointer) throws(HTTPClientError) -> Int in
            try self.read(into: space, deadline: deadline, limit: limit)
        }
        var head = try readHead(fill)
        while head.isInformational { head = try readHead(fill) }   // 100 Continue and the like
        let response = HTTPResponseHead(
            status: head.status, reason: reader.text(head.reason),
            headers: head.fields.map { (reader.text($0.name), reader.text($0.value)) }, version: head.version)
        onHead(response)

        let framing = head.responseFraming(requestMethod: HTTPMethod(request.method))
        switch try reader.readBody(framing, fill: fill, sink: sink) {
        case .complete:
            // After a 101 the connection speaks another protocol; after a body that ended
            // with the connection there is none.
            if !head.keepAlive || head.upgrade || framing == .untilClose { close() }
        case .stopped:
            close()
        case .truncated:
            throw .closed(responseBytes: responseBytes)
        case .invalid(let failure):
            throw .malformed("chunked body: \(failure)")
        }
        return response
    }

    private func readHead(_ fill: (UnsafeMutableRawBufferPointer) throws(HTTPClientError) -> Int) throws(HTTPClientError) -> HTTPHead {
        switch try reader.readHead(fill) {
        case .head(let head):
            return head
        case .closed:
            throw .closed(responseBytes: responseBytes)
        case .invalid(.badStatusLine), .invalid(.badVersion):
            let line = reader.buffered.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }.prefix(80)
            throw .malformed("status line '\(String(decoding: line, as: UTF8.self))'")
        case .invalid(.headTooLarge):
            throw .malformed("head larger than \(Self.maximumHeadSize) bytes")
        case .invalid(let error):
            throw .malformed("head: \(error)")
        }
    }

    private func serialize(_ request: HTTPRequest) -> [UInt8] {
        var text = "\(request.method) \(url.pathPrefix)\(request.target) HTTP/1.1\r\n"
        text += "Host: \(url.authority)\r\n"
        text += "User-Agent: balancerd\r\n"
        text += "Accept: application/json\r\n"
        if !request.body.isEmpty || request.method == "PUT" || request.method == "POST" {
            text += "Content-Length: \(request.body.count)\r\n"
        }
        for (name, value) in request.headers { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        return Array(text.utf8) + request.body
    }

    // MARK: socket

    private func connect() throws(HTTPClientError) {
        let address: SocketAddress
        do {
            address = try SocketAddress.resolve(host: url.host, port: url.port)
        } catch {
            throw .resolve(error)
        }
        connectedTo = address.description
        let socket: (fd: CInt, connected: Bool)
        do {
            socket = try Socket.connect(to: address)
        } catch {
            throw .connect(address: connectedTo, error)
        }
        fd = socket.fd
        reader.reset()
        if socket.connected { return }
        let deadline = Posix.monotonicNanoseconds() + connectTimeout.nanoseconds
        do throws(HTTPClientError) {
            try waitFor(.writable, deadline: deadline, limit: connectTimeout)
        } catch .timeout {
            throw .connectTimeout(address: connectedTo, after: connectTimeout)
        }
        if let error = Posix.pendingError(fd) {
            throw .connect(address: connectedTo, SystemError("connect", error))
        }
    }

    /// Waits until the socket is ready for `events` (or has an error or hangup to report,
    /// which the following read or write then picks up).
    private func waitFor(_ events: Posix.PollEvents, deadline: Int64, limit: Duration) throws(HTTPClientError) {
        while true {
            if stopSignal.isTriggered { throw .cancelled }
            let remaining = deadline - Posix.monotonicNanoseconds()
            if remaining <= 0 { throw .timeout(after: limit) }
            switch stopSignal.wait(on: fd, for: events, timeoutNanoseconds: remaining) {
            case .failure(let error): throw .receive(error)
            case .success(let returned): if !returned.isEmpty { return }
            }
        }
    }

    private func writeAll(_ bytes: [UInt8], deadline: () -> Int64, limit: Duration) throws(HTTPClientError) {
        var offset = 0
        while offset < bytes.count {
            // Array.withUnsafeBytes is not typed-throws: carry the error out as a value.
            let fd = self.fd
            let outcome = bytes.withUnsafeBytes { raw in
                Result { () throws(SystemError) in try Posix.write(fd, UnsafeRawBufferPointer(rebasing: raw[offset...])) }
            }
            let result: IOResult<Int>
            switch outcome {
            case .success(let value): result = value
            case .failure(let error): throw .send(error)
            }
            switch result {
            case .processed(let n): offset += n
            case .wouldBlock: try waitFor(.writable, deadline: deadline(), limit: limit)
            }
        }
    }

    /// Reads what has arrived into `space`, waiting for it first. Returns how many bytes;
    /// 0 means the server closed.
    private func read(into space: UnsafeMutableRawBufferPointer, deadline: () -> Int64, limit: Duration) throws(HTTPClientError) -> Int {
        while true {
            let result: IOResult<Int>
            do {
                result = try Posix.read(fd, space)
            } catch {
                throw .receive(error)
            }
            switch result {
            case .processed(let n):
                responseBytes += n
                return n
            case .wouldBlock:
                try waitFor(.readable, deadline: deadline(), limit: limit)
            }
        }
    }
}

extension HTTPClientError {
    /// Errors that, on a reused connection before any response byte, mean the server had
    /// closed it while it sat idle.
    var isStaleConnection: Bool {
        switch self {
        case .closed(let bytes): bytes == 0
        case .send(let error), .receive(let error):
            error.errno == .connectionReset || error.errno == .brokenPipe || error.errno == .connectionAborted
        default: false
        }
    }
}

// MARK: helpers

extension StringProtocol {
    var trimmingWhitespace: SubSequence {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }
        guard let first = firstIndex(where: { !isSpace($0) }) else { return self[endIndex...] }
        let last = lastIndex(where: { !isSpace($0) })!
        return self[first...last]
    }

    func caseInsensitiveEquals(_ other: some StringProtocol) -> Bool {
        utf8.count == other.utf8.count && lowercased() == other.lowercased()
    }
}

extension Duration {
    /// `300s`, `1500ms`: for messages, and Go's duration syntax for Consul's `wait`.
    var shortDescription: String {
        let ms = nanoseconds / 1_000_000
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
    }
}
