// An HTTP server whose status the test switches (200, 500, …), for health checks: every
// request, a check's or a client's, gets the current status with the body `name` and
// `Connection: close`. It keeps every request head it got, so a test can look at what a
// check sent.
import Glibc

public final class StatusHTTPServer: @unchecked Sendable {
    public let name: String
    public let port: UInt16
    private let core: ServerCore
    private let state: Protected<(status: Int, heads: [String])>

    public init(name: String, status: Int = 200) throws {
        self.name = name
        let state = Protected<(status: Int, heads: [String])>((status, []))
        self.state = state
        core = try ServerCore(label: "status \(name)") { fd in
            StatusHTTPServer.serve(fd: fd, body: Array(name.utf8), state: state)
        }
        port = core.port
    }

    public var address: String { "127.0.0.1:\(port)" }

    /// The status every following request gets.
    public func answer(_ status: Int) { state.withLock { $0.status = status } }

    /// The heads received so far (request line and fields, without the final CRLF).
    public var heads: [String] { state.withLock { $0.heads } }

    public func stop() { core.stop() }

    deinit { core.stop() }

    private static func serve(fd: Int32, body: [UInt8], state: Protected<(status: Int, heads: [String])>) {
        var buffer: [UInt8] = []
        let terminator: [UInt8] = Array("\r\n\r\n".utf8)
        while buffer.firstRange(of: terminator) == nil {
            guard buffer.count < 64 << 10, case .data(let chunk) = readOnce(fd, max: 16384, timeout: 5) else { return }
            buffer += chunk
        }
        let head = String(decoding: buffer[..<buffer.firstRange(of: terminator)!.lowerBound], as: UTF8.self)
        let status = state.withLock { value -> Int in
            value.heads.append(head)
            return value.status
        }
        let reason = [200: "OK", 500: "Internal Server Error", 503: "Service Unavailable", 404: "Not Found"][status] ?? "Other"
        let response = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: text/plain\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        let bytes = Array(response.utf8) + (head.hasPrefix("HEAD ") ? [] : body)
        _ = try? bytes.withUnsafeBytes { try sendAll(fd, $0) }
        _ = shutdown(fd, Int32(SHUT_WR))
    }
}
