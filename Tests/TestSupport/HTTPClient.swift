// A minimal HTTP/1.1 client for the integration tests: send raw bytes (so tests can send
// anything, hostile or pipelined), read one response at a time with RFC 9112 framing
// (no body for HEAD/1xx/204/304, chunked with trailers, Content-Length, or until close), and
// tell whether the peer closed the connection. Every read is bounded.

import Glibc

/// One response as the client received it.
public struct HTTPResponse: Sendable, CustomStringConvertible {
    public let statusLine: String
    public let status: Int
    /// Field names as received, values trimmed.
    public let headers: [(name: String, value: String)]
    /// The body with any chunked framing removed.
    public let body: [UInt8]
    public let trailers: [(name: String, value: String)]
    public let isChunked: Bool
    /// The body ran until the server closed the connection.
    public let isCloseDelimited: Bool

    public var bodyText: String { String(decoding: body, as: UTF8.self) }

    public func values(_ name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    public func header(_ name: String) -> String? { values(name).first }

    public func trailer(_ name: String) -> String? {
        trailers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    public var description: String {
        let preview = body.count > 200 ? "\(body.count) bytes" : "\"\(bodyText)\""
        return "\(statusLine) [\(headers.map { "\($0.name): \($0.value)" }.joined(separator: "; "))] body \(preview)"
    }
}

/// One client connection. Not for use from several threads at once.
public final class HTTPClientConnection: @unchecked Sendable {
    public let port: UInt16
    public private(set) var fd: Int32
    // Bytes read but not yet consumed by a response.
    private var buffer: [UInt8] = []
    /// Set once a read saw EOF or a reset.
    public private(set) var sawClose = false

    public init(port: UInt16, connectTimeout: Double = 5) throws {
        self.port = port
        fd = try connectTCP(port: port, timeout: connectTimeout)
    }

    /// The client's own port (`%cp` in the proxy's log).
    public var localPort: UInt16? { fd >= 0 ? try? boundPort(fd) : nil }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) throws {
        guard fd >= 0 else { throw TestSupportError("HTTP connection to port \(port) is closed") }
        try bytes.withUnsafeBytes { try sendAll(fd, $0) }
    }

    public func send(_ bytes: ArraySlice<UInt8>) throws { try send(Array(bytes)) }

    /// True if at least one byte is waiting to be read (or the peer closed), without blocking.
    public var isReadable: Bool {
        if !buffer.isEmpty { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1
    }

    /// Reads more bytes into the buffer. False on EOF/reset (sets `sawClose`); throws on
    /// timeout or another error.
    private func fill(deadline: Deadline, context: @autoclosure () -> String) throws -> Bool {
        guard fd >= 0 else { throw TestSupportError("HTTP connection to port \(port) is closed") }
        while true {
            let remaining = deadline.remainingSeconds
            if remaining <= 0 {
                throw TestSupportError("timed out \(context()); \(buffer.count) unread bytes: \(Self.preview(buffer))")
            }
            switch readOnce(fd, max: 1 << 16, timeout: remaining) {
            case .data(let chunk):
                buffer += chunk
                return true
            case .eof, .error(ECONNRESET):
                sawClose = true
                return false
            case .timeout:
                continue
            case .error(let e):
                throw SocketError("recv \(context())", errno: e)
            }
        }
    }

    static func preview(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes.prefix(300), as: UTF8.self)
        return "\"" + text.replacingAll("\r", with: "\\r").replacingAll("\n", with: "\\n") + (bytes.count > 300 ? "…\"" : "\"")
    }

    private func takeLine(deadline: Deadline, what: String) throws -> [UInt8] {
        while true {
            if let range = buffer.firstRange(of: [13, 10]) {
                let line = Array(buffer[..<range.lowerBound])
                buffer.removeSubrange(..<range.upperBound)
                return line
            }
            guard try fill(deadline: deadline, context: "reading \(what)") else {
                throw TestSupportError("connection closed while reading \(what); got \(Self.preview(buffer))")
            }
        }
    }

    private func take(_ count: Int, deadline: Deadline, what: String) throws -> [UInt8] {
        while buffer.count < count {
            guard try fill(deadline: deadline, context: "reading \(what) (\(buffer.count) of \(count) bytes)") else {
                throw TestSupportError("connection closed after \(buffer.count) of \(count) bytes of \(what)")
            }
        }
        let bytes = Array(buffer[..<count])
        buffer.removeSubrange(..<count)
        return bytes
    }

    private static func parseFields(_ lines: [String]) -> [(name: String, value: String)] {
        lines.compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingWhitespace())
        }
    }

    /// Reads one response (a 1xx is returned as a response of its own). `method` is the
    /// request's method (HEAD responses have no body). Throws on timeout, on a malformed
    /// response, or if the connection closes before the response is complete.
    public func readResponse(method: String = "GET", timeout: Double = 5) throws -> HTTPResponse {
        guard let response = try readResponseIfAny(method: method, timeout: timeout) else {
            throw TestSupportError("connection closed without a response")
        }
        return response
    }

    /// Like `readResponse`, but nil if the connection closes (EOF or reset) before the
    /// first byte of a response.
    public func readResponseIfAny(method: String = "GET", timeout: Double = 5) throws -> HTTPResponse? {
        Watchdog.note("an HTTP response from port \(port)")
        let deadline = Deadline(secondsFromNow: timeout)
        while buffer.firstRange(of: [13, 10, 13, 10]) == nil {
            guard try fill(deadline: deadline, context: "waiting for a response head") else {
                if buffer.isEmpty { return nil }
                throw TestSupportError("connection closed inside a response head: \(Self.preview(buffer))")
            }
        }
        let end = buffer.firstRange(of: [13, 10, 13, 10])!
        let head = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
        buffer.removeSubrange(..<end.upperBound)
        let lines = head.components(separatedBy: "\r\n")
        let statusLine = lines[0]
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            throw TestSupportError("not an HTTP status line: \(Self.preview(Array(statusLine.utf8)))")
        }
        let headers = Self.parseFields(Array(lines.dropFirst()))
        func values(_ name: String) -> [String] { headers.filter { $0.name.lowercased() == name }.map(\.value) }

        var body: [UInt8] = []
        var trailers: [(name: String, value: String)] = []
        var chunked = false
        var closeDelimited = false
        if method == "HEAD" || (100..<200).contains(status) || status == 204 || status == 304 {
            // No body, whatever the fields say.
        } else if values("transfer-encoding").joined(separator: ",").lowercased().contains("chunked") {
            chunked = true
            while true {
                let line = String(decoding: try takeLine(deadline: deadline, what: "a chunk size"), as: UTF8.self)
                let sizeText = String(line.prefix { $0 != ";" }).trimmingWhitespace()
                guard let size = Int(sizeText, radix: 16), size >= 0 else {
                    throw TestSupportError("bad chunk size line \(Self.preview(Array(line.utf8)))")
                }
                if size == 0 { break }
                body += try take(size, deadline: deadline, what: "a chunk")
                guard try take(2, deadline: deadline, what: "a chunk's CRLF") == [13, 10] else {
                    throw TestSupportError("chunk not followed by CRLF")
                }
            }
            var trailerLines: [String] = []
            while true {
                let line = try takeLine(deadline: deadline, what: "trailers")
                if line.isEmpty { break }
                trailerLines.append(String(decoding: line, as: UTF8.self))
            }
            trailers = Self.parseFields(trailerLines)
        } else if let lengthText = values("content-length").first {
            guard let length = Int(lengthText), length >= 0 else {
                throw TestSupportError("bad Content-Length in response: \(lengthText)")
            }
            body = try take(length, deadline: deadline, what: "a Content-Length body")
        } else {
            closeDelimited = true
            while try fill(deadline: deadline, context: "reading a close-delimited body") {}
            body = buffer
            buffer = []
        }
        return HTTPResponse(
            statusLine: statusLine, status: status, headers: headers, body: body, trailers: trailers,
            isChunked: chunked, isCloseDelimited: closeDelimited
        )
    }

    /// Reads responses until one is not 1xx and returns it with the 1xx ones before it.
    public func readFinalResponse(method: String = "GET", timeout: Double = 5) throws -> (final: HTTPResponse, interim: [HTTPResponse]) {
        let deadline = Deadline(secondsFromNow: timeout)
        var interim: [HTTPResponse] = []
        while true {
            let response = try readResponse(method: method, timeout: max(deadline.remainingSeconds, 0.001))
            if (100..<200).contains(response.status) && response.status != 101 {
                interim.append(response)
                continue
            }
            return (response, interim)
        }
    }

    /// Waits up to `timeout` for the peer to close (EOF or reset). True if it closed with no
    /// further byte sent; false if it stayed open, or sent more bytes (kept for later reads).
    public func waitForClose(timeout: Double = 2) -> Bool {
        if sawClose { return buffer.isEmpty }
        if !buffer.isEmpty { return false }
        let deadline = Deadline(secondsFromNow: timeout)
        do {
            return try !fill(deadline: deadline, context: "waiting for close")
        } catch {
            return false
        }
    }

    /// Raw bytes: whatever is buffered, else one read of at most `max` bytes (empty on
    /// EOF or timeout).
    public func readRaw(max: Int = 1 << 16, timeout: Double = 5) -> [UInt8] {
        if buffer.isEmpty {
            _ = try? fill(deadline: Deadline(secondsFromNow: timeout), context: "raw read")
        }
        let bytes = Array(buffer.prefix(max))
        buffer.removeSubrange(..<bytes.count)
        return bytes
    }

    /// Exactly `count` raw bytes (for tunnels), or throws.
    public func readRaw(exactly count: Int, timeout: Double = 5) throws -> [UInt8] {
        try take(count, deadline: Deadline(secondsFromNow: timeout), what: "raw bytes")
    }

    public func shutdownWrite() {
        if fd >= 0 { _ = shutdown(fd, Int32(SHUT_WR)) }
    }

    public func close() {
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }

    deinit { close() }
}
