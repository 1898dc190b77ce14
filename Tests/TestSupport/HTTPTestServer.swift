// A scriptable HTTP/1.1 backend for the HTTP-mode integration tests. One thread per
// connection (ServerCore), blocking reads, no cleverness: it has to be obviously right so
// that a failing test points at the proxy. Every request head is recorded, byte for byte,
// the moment it arrives (before any body), and every request whose body also arrived in
// full is recorded again as a complete request; hostile-input tests assert both stayed empty.
//
// In `.respond` mode the path picks the answer:
//   any path          200, body = server name, `X-Server: NAME`, `X-Path: TARGET`
//   /echo             200, Content-Length, body = the request body
//   /echo-chunked     200, chunked, body = the request body; trailers `X-Body-Length: N` and
//                     `X-Request-Trailers: name=value;…` (what the request's trailers were)
//   /bytes/N          200, chunked, N bytes of `HTTPTestServer.pattern`, trailer `X-Checksum`
//   /status/N         status N; 204 has no body and no Content-Length, 304 carries
//                     `Content-Length: 5` (the representation's length) and no body
//   /close-delimited  200 with neither Content-Length nor chunked: the body ends at close
//   /upgrade          with an `Upgrade` header: 101, then echoes raw bytes until EOF
//   /hop-response     200 with hop-by-hop fields (Connection: X-Resp-Secret, X-Resp-Secret,
//                     Keep-Alive, Proxy-Connection) next to `X-Resp-Normal: yes`
//   ?delay=MS         (any path) waits MS milliseconds before answering
// HEAD gets the GET headers (with Content-Length) and no body. `Expect: 100-continue` gets
// `HTTP/1.1 100 Continue` before the body is read.

import Glibc

public final class HTTPTestServer: @unchecked Sendable {
    /// What the server does once it has read (and recorded) a request head.
    public enum Mode: Sendable {
        /// Answer as described at the top of this file.
        case respond
        /// Never answer; keep the connection open until the peer closes it.
        case neverAnswer
        /// Send these bytes, then close (e.g. `HELLO\r\n\r\n`, or half a head).
        case reply([UInt8])
        /// Close without answering (a keep-alive race as the proxy sees it).
        case closeAfterHead
        /// Answer the first request on each connection as `.respond` does, without
        /// `Connection: close`, then close the connection (a server whose keep-alive timeout
        /// is shorter than the proxy's idea of it).
        case respondOnce
        /// Answer the first request on each connection and keep it open; reset the
        /// connection on the next request without answering: the keep-alive race as a
        /// pooled connection meets it when the server dies or drops it hard.
        case dropSecondRequest
    }

    /// A request as the server received it.
    public struct Request: Sendable {
        /// The raw head, request line to the blank line inclusive.
        public let head: String
        public let requestLine: String
        public let method: String
        public let target: String
        public let version: String
        /// Field names as received (not lowercased), values trimmed.
        public let headers: [(name: String, value: String)]
        public var body: [UInt8] = []
        public var trailers: [(name: String, value: String)] = []

        /// Every value of field `name` (case-insensitive), in order.
        public func values(_ name: String) -> [String] {
            headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
        }

        /// The first value of field `name` (case-insensitive).
        public func header(_ name: String) -> String? { values(name).first }

        public var path: String { String(target.prefix { $0 != "?" }) }
    }

    public let name: String
    public let mode: Mode
    public let port: UInt16
    private let core: ServerCore
    private let record: Protected<(heads: [String], requests: [Request])>

    public init(name: String, mode: Mode = .respond) throws {
        self.name = name
        self.mode = mode
        let record = Protected((heads: [String](), requests: [Request]()))
        self.record = record
        core = try ServerCore(label: "httptest \(name)") { fd in
            HTTPTestServer.serve(fd: fd, name: name, mode: mode, record: record)
        }
        port = core.port
    }

    public var address: String { "127.0.0.1:\(port)" }
    /// Connections accepted so far.
    public var acceptedCount: Int { core.acceptedCount }
    /// Every request head received so far (raw text), complete request or not.
    public var receivedHeads: [String] { record.withLock { $0.heads } }
    /// Every request received in full (head and body).
    public var completeRequests: [Request] { record.withLock { $0.requests } }

    public func stop() { core.stop() }

    deinit { core.stop() }

    /// The bytes `/bytes/N` serves: byte i is `(i * 31 + i / 251) & 0xff`, so a shifted,
    /// dropped or repeated chunk shows.
    public static func pattern(count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 / 251) }
    }

    // MARK: - Connection handling (runs on the connection's own thread)

    /// Reads from `fd` into `buffer`; false on EOF or error.
    private static func fill(_ fd: Int32, _ buffer: inout [UInt8]) -> Bool {
        switch readOnce(fd, max: 65536, timeout: nil) {
        case .data(let chunk):
            buffer += chunk
            return true
        default:
            return false
        }
    }

    private static func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        (try? bytes.withUnsafeBytes { try sendAll(fd, $0) }) != nil
    }

    private static func send(_ fd: Int32, _ text: String) -> Bool {
        send(fd, Array(text.utf8))
    }

    private static let crlf: [UInt8] = [13, 10]
    private static let headTerminator: [UInt8] = [13, 10, 13, 10]

    /// One line ending in CRLF from `buffer` (reading more as needed), without the CRLF.
    private static func readLine(_ fd: Int32, _ buffer: inout [UInt8], limit: Int = 8192) -> [UInt8]? {
        while true {
            if let range = buffer.firstRange(of: crlf) {
                let line = Array(buffer[..<range.lowerBound])
                buffer.removeSubrange(..<range.upperBound)
                return line
            }
            guard buffer.count <= limit, fill(fd, &buffer) else { return nil }
        }
    }

    private static func readExactly(_ fd: Int32, _ buffer: inout [UInt8], _ count: Int) -> [UInt8]? {
        while buffer.count < count {
            guard fill(fd, &buffer) else { return nil }
        }
        let bytes = Array(buffer[..<count])
        buffer.removeSubrange(..<count)
        return bytes
    }

    /// Parses "name: value" lines leniently (the proxy is the one that must be strict).
    private static func parseFields(_ lines: [Substring]) -> [(name: String, value: String)] {
        lines.compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingWhitespace())
        }
    }

    /// A strict chunked decoder: hex size (at most 8 digits), optional extensions, CRLF after
    /// each chunk, trailers up to the blank line. nil means malformed or EOF.
    private static func readChunkedBody(_ fd: Int32, _ buffer: inout [UInt8]) -> (body: [UInt8], trailers: [(name: String, value: String)])? {
        var body: [UInt8] = []
        while true {
            guard let line = readLine(fd, &buffer) else { return nil }
            let sizeText = String(decoding: line.prefix { $0 != UInt8(ascii: ";") }, as: UTF8.self)
            guard !sizeText.isEmpty, sizeText.count <= 8, sizeText.allSatisfy(\.isHexDigit),
                let size = Int(sizeText, radix: 16)
            else { return nil }
            if size == 0 { break }
            guard let data = readExactly(fd, &buffer, size), readExactly(fd, &buffer, 2) == crlf else { return nil }
            body += data
        }
        var trailerLines: [Substring] = []
        while true {
            guard let line = readLine(fd, &buffer) else { return nil }
            if line.isEmpty { break }
            trailerLines.append(Substring(String(decoding: line, as: UTF8.self)))
        }
        return (body, parseFields(trailerLines))
    }

    private static func serve(fd: Int32, name: String, mode: Mode, record: Protected<(heads: [String], requests: [Request])>) {
        var buffer: [UInt8] = []
        var answeredOnConnection = 0
        while true {
            // One request head, recorded as soon as it is complete.
            var headEnd: Int?
            while true {
                headEnd = buffer.firstRange(of: headTerminator)?.upperBound
                if headEnd != nil { break }
                guard buffer.count < 256 << 10, fill(fd, &buffer) else { return }
            }
            let head = String(decoding: buffer[..<headEnd!], as: UTF8.self)
            buffer.removeSubrange(..<headEnd!)
            record.withLock { $0.heads.append(head) }

            switch mode {
            case .respond, .respondOnce:
                break
            case .dropSecondRequest:
                if answeredOnConnection > 0 {
                    // Reset, as a server that dies or drops the connection hard does.
                    var hard = linger(l_onoff: 1, l_linger: 0)
                    _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
                    return
                }
                answeredOnConnection += 1
            case .neverAnswer:
                while fill(fd, &buffer) { buffer.removeAll() }
                return
            case .reply(let bytes):
                _ = send(fd, bytes)
                _ = shutdown(fd, Int32(SHUT_WR))
                return
            case .closeAfterHead:
                return
            }

            let lines = head.split(separator: "\r\n", omittingEmptySubsequences: true)
            guard let requestLine = lines.first else { return }
            let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 3 else { return }
            var request = Request(
                head: head, requestLine: String(requestLine), method: String(parts[0]), target: String(parts[1]),
                version: String(parts[2]), headers: parseFields(Array(lines.dropFirst()))
            )

            if request.values("expect").contains(where: { $0.lowercased() == "100-continue" }) {
                guard send(fd, "HTTP/1.1 100 Continue\r\n\r\n") else { return }
            }
            let codings = request.values("transfer-encoding").joined(separator: ",").lowercased()
            if codings.contains("chunked") {
                guard let (body, trailers) = readChunkedBody(fd, &buffer) else { return }
                request.body = body
                request.trailers = trailers
            } else if let lengthText = request.header("content-length") {
                guard let length = Int(lengthText), length >= 0, let body = readExactly(fd, &buffer, length) else { return }
                request.body = body
            }
            record.withLock { $0.requests.append(request) }

            let connectionTokens = request.values("connection").flatMap { $0.lowercased().split(separator: ",").map { String($0).trimmingWhitespace() } }
            let keepAlive = request.version == "HTTP/1.0" ? connectionTokens.contains("keep-alive") : !connectionTokens.contains("close")
            let more = respond(fd: fd, to: request, name: name, keepAlive: keepAlive, buffer: &buffer)
            if case .respondOnce = mode {
                sleepSeconds(0.02)
                return
            }
            guard more, keepAlive else {
                _ = shutdown(fd, Int32(SHUT_WR))
                return
            }
        }
    }

    /// Writes the response for `request`. False if the connection must end (write failed,
    /// close-delimited body, upgrade finished).
    private static func respond(fd: Int32, to request: Request, name: String, keepAlive: Bool, buffer: inout [UInt8]) -> Bool {
        if let query = request.target.split(separator: "?", maxSplits: 1).dropFirst().first {
            for item in query.split(separator: "&") where item.hasPrefix("delay=") {
                sleepSeconds(Double(item.dropFirst("delay=".count)).map { $0 / 1000 } ?? 0)
            }
        }
        let isHead = request.method == "HEAD"
        let path = request.path
        var fields = "X-Server: \(name)\r\nX-Path: \(request.target)\r\n"
        if !keepAlive { fields += "Connection: close\r\n" }

        func fixed(_ status: String, _ body: [UInt8], extra: String = "") -> Bool {
            let head = "HTTP/1.1 \(status)\r\n\(fields)\(extra)Content-Length: \(body.count)\r\n\r\n"
            return send(fd, Array(head.utf8) + (isHead ? [] : body))
        }

        func chunked(_ body: [UInt8], trailers: String) -> Bool {
            guard send(fd, "HTTP/1.1 200 OK\r\n\(fields)Transfer-Encoding: chunked\r\n\r\n") else { return false }
            if isHead { return true }
            var offset = 0
            var size = 1
            while offset < body.count {
                // Uneven chunk sizes (1, 2, 4, … up to 16 KiB) so chunk boundaries move about.
                let end = min(offset + size, body.count)
                guard send(fd, Array(String(end - offset, radix: 16).utf8) + crlf + body[offset..<end] + crlf) else { return false }
                offset = end
                size = min(size * 2 + 1, 16384)
            }
            return send(fd, "0\r\n\(trailers)\r\n")
        }

        switch path {
        case "/echo":
            return fixed("200 OK", request.body)
        case "/echo-chunked":
            let echoed = request.trailers.map { "\($0.name.lowercased())=\($0.value)" }.joined(separator: ";")
            return chunked(request.body, trailers: "X-Body-Length: \(request.body.count)\r\nX-Request-Trailers: \(echoed)\r\n")
        case "/close-delimited":
            _ = send(fd, Array("HTTP/1.1 200 OK\r\nX-Server: \(name)\r\nX-Path: \(request.target)\r\n\r\n".utf8) + Array("\(name) until close".utf8))
            return false
        case "/upgrade" where request.header("upgrade") != nil:
            let protocolName = request.header("upgrade")!
            guard send(fd, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: \(protocolName)\r\nX-Server: \(name)\r\n\r\n") else { return false }
            if !buffer.isEmpty {
                guard send(fd, buffer) else { return false }
                buffer.removeAll()
            }
            while fill(fd, &buffer) {
                guard send(fd, buffer) else { return false }
                buffer.removeAll()
            }
            return false
        case "/hop-response":
            return fixed(
                "200 OK", Array(name.utf8),
                extra: "Connection: X-Resp-Secret\r\nX-Resp-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Resp-Normal: yes\r\n"
            )
        default:
            break
        }
        if path.hasPrefix("/bytes/"), let count = Int(path.dropFirst("/bytes/".count)) {
            let body = pattern(count: count)
            let checksum = body.reduce(UInt32(0)) { ($0 &* 33) ^ UInt32($1) }
            return chunked(body, trailers: "X-Checksum: \(checksum)\r\n")
        }
        if path.hasPrefix("/status/"), let code = Int(path.dropFirst("/status/".count)) {
            switch code {
            case 204:
                return send(fd, "HTTP/1.1 204 No Content\r\n\(fields)\r\n")
            case 304:
                return send(fd, "HTTP/1.1 304 Not Modified\r\n\(fields)ETag: \"v1\"\r\nContent-Length: 5\r\n\r\n")
            default:
                return fixed("\(code) Status", Array(name.utf8))
            }
        }
        return fixed("200 OK", Array(name.utf8))
    }
}
