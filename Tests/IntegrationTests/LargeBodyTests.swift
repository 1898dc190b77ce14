// 64 MiB bodies through HTTP mode, both ways in one exchange: the client uploads 64 MiB of
// random bytes to an echo backend (HTTPTestServer's /echo or /echo-chunked), which sends
// them back. The backend's copy of the upload and the client's copy of the download are
// compared byte for byte with what was sent. Once for Content-Length framing, once for
// chunked; each with a client that reads at once and one that reads slowly (small pieces
// with pauses for its first seconds, through a fixed receive buffer), so balancerd must stop
// reading from the server while the client lags (its RSS must not swallow the body), and
// lose nothing.

import Foundation
import Glibc
import TestSupport
import XCTest

final class LargeBodyTests: XCTestCase {
    private static let size = 64 << 20

    func testContentLengthBodiesOf64MiBArriveIntactBothWays() throws {
        try assertEcho(chunked: false, slowReader: false)
    }

    func testContentLengthBodiesOf64MiBArriveIntactToASlowReader() throws {
        try assertEcho(chunked: false, slowReader: true)
    }

    func testChunkedBodiesOf64MiBArriveIntactBothWays() throws {
        try assertEcho(chunked: true, slowReader: false)
    }

    func testChunkedBodiesOf64MiBArriveIntactToASlowReader() throws {
        try assertEcho(chunked: true, slowReader: true)
    }

    private func assertEcho(chunked: Bool, slowReader: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        let server = try HTTPTestServer(name: "echo")
        addTeardownBlock { server.stop() }
        let (balancer, port) = try startHTTPBalancer(config: httpConfig(servers: [("echo", server.address)]))
        let payload = randomBytes(count: Self.size)
        let rssBefore = try residentSetBytes(pid: balancer.pid)

        let client = try TCPClient(port: port, connectTimeout: 30)
        defer { client.close() }
        if slowReader {
            // A fixed receive buffer (no autotuning up to megabytes), so the lag reaches
            // balancerd soon. Not below a few loopback MSS (64 KiB): with a window smaller
            // than the MSS the kernel's sender waits for zero-window probes, whose backoff
            // stalls any sender for seconds, proxy or not.
            var size: Int32 = 256 << 10
            setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        let head = chunked
            ? "POST /echo-chunked HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            : "POST /echo HTTP/1.1\r\nHost: test.local\r\nContent-Length: \(payload.count)\r\nConnection: close\r\n\r\n"

        // Upload on its own thread, download on this one.
        let writeError = Protected<String?>(nil)
        let writer = JoinableThread {
            var offset = 0
            do {
                try client.send(head)
                // Chunk sizes that move the boundaries about: large ones that a splice can
                // carry, small and odd ones that end in the middle of reads.
                let sizes = [1 << 20, 65_536, 4_093, 3 << 20, 1, 700_001, 16_384]
                var next = 0
                while offset < payload.count {
                    let end = min(offset + (chunked ? sizes[next % sizes.count] : 1 << 20), payload.count)
                    next += 1
                    if chunked { try client.send(String(end - offset, radix: 16) + "\r\n") }
                    try client.send(payload[offset..<end])
                    if chunked { try client.send("\r\n") }
                    offset = end
                }
                if chunked { try client.send("0\r\nX-Upload: done\r\n\r\n") }
            } catch {
                writeError.set("upload failed after \(offset) of \(payload.count) bytes: \(error)")
            }
        }
        defer { writer.join() }

        var received: [UInt8] = []
        received.reserveCapacity(Self.size + (1 << 20))
        if slowReader {
            // From the first byte of the response on: 4 KiB every 2 ms for 2 s (at most
            // ~4 MiB), then at full speed.
            var slowPhase: Deadline?
            reading: while !(slowPhase?.hasPassed ?? false) {
                switch client.read(max: 4096, timeout: 60) {
                case .data(let piece):
                    received += piece
                    if slowPhase == nil { slowPhase = Deadline(secondsFromNow: 2) }
                case .eof, .timeout, .error:
                    // readAll below reports what went wrong.
                    break reading
                }
                sleepSeconds(0.002)
            }
            // The client has lagged for 2 s: whatever balancerd read from the server and
            // could not deliver is in its memory now. It must have stopped reading instead
            // (the backend has ~60 MiB more to send): allow 8 MiB, a few buffers' worth.
            let rssLagging = try residentSetBytes(pid: balancer.pid)
            print("LargeBodyTests: balancerd RSS \(rssBefore >> 10) KiB before, \(rssLagging >> 10) KiB after 2 s of a slow reader (\(received.count) bytes read)")
            XCTAssertLessThanOrEqual(rssLagging - rssBefore, 8 << 20, "balancerd grew by \((rssLagging - rssBefore) >> 10) KiB while the client lagged", file: file, line: line)
        }
        do {
            received += try client.readAll(timeout: 120, limit: 2 * Self.size)
        } catch {
            writer.join()
            XCTFail("download after \(received.count) bytes: \(error)\nupload: \(writeError.value ?? "complete")\n\(tail(balancer))", file: file, line: line)
            return
        }
        writer.join()
        XCTAssertNil(writeError.value, file: file, line: line)

        // The upload, as the backend received it.
        let requests = server.completeRequests
        XCTAssertEqual(requests.count, 1, "the backend did not receive the complete request\n\(tail(balancer))", file: file, line: line)
        if let request = requests.first {
            assertSame(request.body, payload, "upload as the backend received it", file: file, line: line)
            if chunked {
                XCTAssertEqual(request.trailers.first { $0.name.lowercased() == "x-upload" }?.value, "done", "request trailers", file: file, line: line)
            }
        }

        // The download, as the client received it.
        let response: ParsedResponse
        do {
            response = try ParsedResponse(received)
        } catch {
            XCTFail("download: \(error)\n\(tail(balancer))", file: file, line: line)
            return
        }
        XCTAssertEqual(response.status, 200, response.head, file: file, line: line)
        XCTAssertEqual(response.chunked, chunked, "response framing: \(response.head)", file: file, line: line)
        assertSame(response.body, payload, "download as the client received it", file: file, line: line)
        if chunked {
            XCTAssertEqual(response.trailers.first { $0.name.lowercased() == "x-body-length" }?.value, String(payload.count), file: file, line: line)
        }
    }
}

/// Byte-for-byte equality, with the first difference in the message.
private func assertSame(_ actual: [UInt8], _ expected: [UInt8], _ what: String, file: StaticString, line: UInt) {
    guard actual.count == expected.count else {
        return XCTFail("\(what): \(actual.count) bytes, expected \(expected.count)", file: file, line: line)
    }
    let equal = actual.withUnsafeBytes { a in expected.withUnsafeBytes { e in memcmp(a.baseAddress!, e.baseAddress!, a.count) == 0 } }
    if !equal {
        let first = actual.withUnsafeBufferPointer { a in expected.withUnsafeBufferPointer { e in (0..<a.count).first { a[$0] != e[$0] } } }
        XCTFail("\(what): the bytes differ, first at offset \(first ?? -1)", file: file, line: line)
    }
}

/// A complete HTTP/1.1 response read until close: head, and a body framed by Content-Length
/// or chunked (with trailers). Strict: extra bytes after the framing are an error.
private struct ParsedResponse {
    let head: String
    let status: Int
    let chunked: Bool
    let body: [UInt8]
    let trailers: [(name: String, value: String)]

    init(_ bytes: [UInt8]) throws {
        guard let headEnd = bytes.firstRange(of: [13, 10, 13, 10]) else {
            throw TestSupportError("no complete head in \(bytes.count) bytes")
        }
        head = String(decoding: bytes[..<headEnd.lowerBound], as: UTF8.self)
        let lines = head.components(separatedBy: "\r\n")
        let parts = lines[0].split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw TestSupportError("bad status line: \(lines[0])") }
        self.status = status
        var fields: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields.append((line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        chunked = fields.contains { $0.0 == "transfer-encoding" && $0.1.lowercased().contains("chunked") }
        var position = headEnd.upperBound
        if chunked {
            (body, trailers, position) = try Self.decodeChunked(bytes, from: position)
        } else if let length = fields.first(where: { $0.0 == "content-length" }).flatMap({ Int($0.1) }) {
            guard bytes.count - position >= length else {
                throw TestSupportError("Content-Length \(length), only \(bytes.count - position) body bytes before close")
            }
            body = Array(bytes[position..<(position + length)])
            trailers = []
            position += length
        } else {
            throw TestSupportError("response has neither Content-Length nor chunked: \(head)")
        }
        guard position == bytes.count else {
            throw TestSupportError("\(bytes.count - position) bytes after the end of the response")
        }
    }

    private static func decodeChunked(_ bytes: [UInt8], from start: Int) throws -> ([UInt8], [(name: String, value: String)], Int) {
        var body: [UInt8] = []
        body.reserveCapacity(bytes.count - start)
        var trailers: [(name: String, value: String)] = []
        var position = start
        func line() throws -> String {
            var end = position
            while end + 1 < bytes.count && !(bytes[end] == 13 && bytes[end + 1] == 10) { end += 1 }
            guard end + 1 < bytes.count else { throw TestSupportError("chunked body cut at offset \(position)") }
            defer { position = end + 2 }
            return String(decoding: bytes[position..<end], as: UTF8.self)
        }
        while true {
            let sizeLine = try line()
            guard let size = Int(sizeLine.prefix { $0 != ";" }.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else {
                throw TestSupportError("bad chunk size line '\(sizeLine)' at offset \(position)")
            }
            if size == 0 { break }
            guard bytes.count - position >= size + 2 else { throw TestSupportError("chunk of \(size) cut at offset \(position)") }
            body += bytes[position..<(position + size)]
            position += size
            guard bytes[position] == 13, bytes[position + 1] == 10 else { throw TestSupportError("chunk not followed by CRLF at offset \(position)") }
            position += 2
        }
        while true {
            let field = try line()
            if field.isEmpty { break }
            guard let colon = field.firstIndex(of: ":") else { throw TestSupportError("bad trailer '\(field)'") }
            trailers.append((String(field[..<colon]), field[field.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return (body, trailers, position)
    }
}
