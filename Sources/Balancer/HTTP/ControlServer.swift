// A small HTTP/1.1 server on a thread of its own, for the control plane beside the proxy:
// the stats listener and the `--demo` backends. One connection at a time and one request
// per connection: read the head and any body with HTTPMessageReader, answer, close. It
// is for people and scripts, not for load, so it may block, and a slow client holds the
// next one back for at most `timeout`.
//
// What it answers on its own, so that every user rejects bad input the same way: the
// proxy's canned 400/405/431 for a head HTTPHeadParser refuses, 400 for a malformed
// chunked body, and 408 when a request started but did not arrive within `timeout`.
import Synchronization

public final class ControlHTTPServer: Sendable {
    public struct Request: Sendable {
        public var method: HTTPMethod
        /// The request target as sent: "/path?query".
        public var target: String
        /// The client's address: the stats listener lets loopback clients act without
        /// credentials, as haproxy's `stats admin if LOCALHOST` does.
        public var peer: SocketAddress
        /// The header fields as sent, in order.
        public var fields: [(name: String, value: String)]
        /// The body, up to `maximumKeptBody` bytes (a form post; nothing here takes uploads).
        public var body: [UInt8]

        /// The target up to any "?".
        public var path: String {
            target.firstIndex(of: "?").map { String(target[..<$0]) } ?? target
        }

        /// The first field named `name` (case-insensitive).
        public func field(_ name: String) -> String? {
            fields.first { $0.name.lowercased() == name.lowercased() }?.value
        }
    }

    public struct Response: Sendable {
        /// Status code and reason: "200 OK".
        public var status: String
        /// Fields besides Content-Length and `Connection: close`, which are always sent.
        public var fields: [(name: String, value: String)]
        public var body: [UInt8]

        public init(status: String, contentType: String, body: String, fields: [(name: String, value: String)] = []) {
            self.status = status
            self.fields = [("Content-Type", contentType)] + fields
            self.body = Array(body.utf8)
        }

        /// The bytes to send; a HEAD request gets the fields of the GET and no body.
        func serialized(headOnly: Bool) -> [UInt8] {
            var head = "HTTP/1.1 \(status)\r\n"
            for (name, value) in fields { head += "\(name): \(value)\r\n" }
            head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
            return Array(head.utf8) + (headOnly ? [] : body)
        }
    }

    public let address: SocketAddress
    private let listener: CInt
    /// Signalled by `stop` to end the accept wait at once.
    private let wake: CInt
    private let stopping = Atomic<Bool>(false)
    private let thread = Mutex<LoopThread?>(nil)
    private let name: String
    private let timeout: Duration

    /// How much of a request body is read (and dropped) before answering, and how much
    /// more is read after the answer while waiting for the client to close. Past it the
    /// request is answered, or the connection closed, all the same: nothing here takes
    /// uploads.
    private static let maximumDroppedBody = 1 << 20
    /// How much of a body is kept for the handler.
    public static let maximumKeptBody = 64 << 10

    /// Listens on `address` (port 0 picks one: see `address`); `start` begins answering.
    public init(listeningOn address: SocketAddress, threadName: String, timeout: Duration = .seconds(2)) throws(SystemError) {
        let listener = try Socket.listen(on: address, reusePort: false, backlog: 128)
        do throws(SystemError) {
            self.address = try Posix.localAddress(listener)
            wake = try EventFD.create()
        } catch {
            Posix.close(listener)
            throw error
        }
        self.listener = listener
        self.name = threadName
        self.timeout = timeout
    }

    deinit {
        Posix.close(listener)
        Posix.close(wake)
    }

    /// Starts the thread. `handler` runs on it, once per well-formed request.
    public func start(_ handler: @escaping @Sendable (Request) -> Response) {
        thread.withLock { $0 = LoopThread(name: name) { [self] in self.run(handler) } }
    }

    /// Ends the thread once the connection in progress (if any) is answered. The
    /// listener stays open, unanswered, until the server is released.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        EventFD.signal(wake)
        // Taken out, so the thread's closure (which holds this server) goes with it.
        let running = thread.withLock { thread in
            defer { thread = nil }
            return thread
        }
        running?.join()
    }

    private func run(_ handler: (Request) -> Response) {
        let reader = HTTPMessageReader(kind: .request)
        while !stopping.load(ordering: .acquiring) {
            var requests = [Posix.PollRequest(fd: listener, events: .readable), Posix.PollRequest(fd: wake, events: .readable)]
            guard (try? Posix.poll(&requests, timeoutMilliseconds: 1000)) ?? 0 > 0 else { continue }
            while !stopping.load(ordering: .acquiring), case .processed(let (client, peer))? = try? Posix.accept(listener) {
                reader.reset()
                serve(client, peer: peer, reader: reader, handler: handler)
                closeAfterPeer(client)
            }
        }
    }

    private enum ReadFailure: Error {
        case timedOut
        case failed
    }

    private func serve(_ fd: CInt, peer: SocketAddress, reader: HTTPMessageReader, handler: (Request) -> Response) {
        let deadline = Posix.monotonicNanoseconds() + timeout.nanoseconds
        var received = 0
        let fill = { (space: UnsafeMutableRawBufferPointer) throws(ReadFailure) -> Int in
            while true {
                switch try? Posix.read(fd, space) {
                case .processed(let n)?:
                    received += n
                    return n
                case .wouldBlock?: try Self.waitFor(.readable, on: fd, until: deadline)
                case nil: throw .failed
                }
            }
        }
        do throws(ReadFailure) {
            let head: HTTPHead
            switch try reader.readHead(fill) {
            case .head(let parsed): head = parsed
            case .invalid(let error): return send(error.requestErrorResponse.bytes, to: fd)
            case .closed: return
            }
            var request = Request(method: head.method, target: reader.text(head.target), peer: peer,
                                  fields: head.fields.map { (reader.text($0.name), reader.text($0.value)) }, body: [])
            // A client waiting for 100 Continue has sent no body: answer without one.
            if !head.expectContinue {
                var dropped = 0
                let outcome = try reader.readBody(head.framing, fill: fill) { (piece) throws(ReadFailure) -> Bool in
                    let kept = min(piece.count, Self.maximumKeptBody - request.body.count)
                    if kept > 0 { request.body += piece.prefix(kept) }
                    dropped += piece.count
                    return dropped <= Self.maximumDroppedBody
                }
                switch outcome {
                case .complete, .stopped: break
                case .invalid: return send(ErrorResponse.badRequest.bytes, to: fd)
                case .truncated: return
                }
            }
            send(handler(request).serialized(headOnly: head.method == .head), to: fd)
        } catch .timedOut {
            // Silence from a connection that never sent a byte is not worth an answer
            // (browsers open spare connections); a request cut short is.
            if received > 0 { send(ErrorResponse.requestTimeout.bytes, to: fd) }
        } catch {
            return
        }
    }

    /// Half-closes `fd`, reads until the client closes its side too (within `timeout`
    /// and a bounded count), then closes. Closing with bytes unread would send a reset,
    /// which can destroy the answer before the client has read it.
    private func closeAfterPeer(_ fd: CInt) {
        Posix.shutdown(fd, .write)
        let deadline = Posix.monotonicNanoseconds() + timeout.nanoseconds
        var drained = 0
        withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 1) { space in
            while drained <= Self.maximumDroppedBody {
                switch try? Posix.read(fd, space) {
                case .processed(let n)? where n > 0: drained += n
                case .wouldBlock?: do { try Self.waitFor(.readable, on: fd, until: deadline) } catch { return }
                default: return
                }
            }
        }
        Posix.close(fd)
    }

    /// Writes `bytes` within `timeout`, or gives up.
    private func send(_ bytes: [UInt8], to fd: CInt) {
        let deadline = Posix.monotonicNanoseconds() + timeout.nanoseconds
        var offset = 0
        while offset < bytes.count {
            switch bytes[offset...].withUnsafeBytes({ try? Posix.write(fd, $0) }) {
            case .processed(let n)?: offset += n
            case .wouldBlock?: do { try Self.waitFor(.writable, on: fd, until: deadline) } catch { return }
            case nil: return
            }
        }
    }

    private static func waitFor(_ events: Posix.PollEvents, on fd: CInt, until deadline: Int64) throws(ReadFailure) {
        let remaining = (deadline - Posix.monotonicNanoseconds()) / 1_000_000
        guard remaining > 0 else { throw .timedOut }
        var requests = [Posix.PollRequest(fd: fd, events: events)]
        guard (try? Posix.poll(&requests, timeoutMilliseconds: Int(remaining))) ?? 0 > 0 else { throw .timedOut }
    }
}
