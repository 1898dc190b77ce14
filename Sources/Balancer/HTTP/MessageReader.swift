// Reading whole HTTP/1.1 messages from a socket whose owner may wait for it, for the
// control-plane ends beside the proxy: Discovery's client reads responses with it, and
// ControlHTTPServer (the stats listener, the demo backends) reads requests. The head goes
// through HTTPHeadParser and the body through the framing the head gives and
// ChunkedDecoder, the code the proxy itself trusts, so the program reads HTTP/1 one way.
//
// The reader owns the receive buffer; the caller owns the socket and passes `fill`, which
// reads into the space it is given and returns the count (0 at end of stream). So each
// caller keeps its own way of waiting and its own errors: the client polls its socket and
// a stop signal, the server a deadline. The proxy does not use this: its loops never
// block, and it forwards bodies instead of reading them.
//
// One thread at a time.

public final class HTTPMessageReader {
    public enum HeadOutcome: Equatable {
        /// The head's ranges can be read with `text(_:)`; the bytes after it stay buffered.
        case head(HTTPHead)
        case invalid(HTTPParseError)
        /// The stream ended before the head was complete.
        case closed
    }

    public enum BodyOutcome: Equatable {
        /// The body was read to its end; what follows it stays buffered.
        case complete
        /// `sink` returned false. The rest of the body is unread, so the connection can
        /// carry no further message.
        case stopped
        /// The stream ended before the body did.
        case truncated
        case invalid(ChunkedDecoder.Failure)
    }

    private var parser: HTTPHeadParser
    /// What is received and not yet consumed (the proxy's ByteBuffer: it compacts before
    /// it grows). Grows only for a head longer than it, up to about twice `maxHeadBytes`.
    private var buffer: ByteBuffer
    /// Where the last head began, for `text(_:)`: its bytes stay in place until the next
    /// call that reads.
    private var headStart: UnsafeRawPointer?

    public init(kind: HTTPHeadParser.Kind, limits: HTTPHeadParser.Limits = .init(), capacity: Int = 16 << 10) {
        parser = HTTPHeadParser(kind: kind, limits: limits)
        buffer = ByteBuffer(capacity: max(capacity, 1))
    }

    /// Forgets every buffered byte: for a new connection.
    public func reset() {
        buffer.clear()
        parser.reset()
    }

    /// Bytes received and not consumed yet.
    public var bufferedCount: Int { buffer.readableCount }

    /// The bytes received and not consumed yet, valid until the next call that reads
    /// (for an error message that quotes what arrived).
    public var buffered: UnsafeRawBufferPointer { buffer.readable }

    /// `range` of the last head as text (invalid UTF-8 repaired), valid until the next
    /// call that reads.
    public func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(start: headStart.map { $0 + range.lowerBound }, count: range.count),
               as: UTF8.self)
    }

    /// Reads the next head, calling `fill` as long as it is incomplete. On `.head` the
    /// head is consumed and the bytes after it stay buffered for `readBody`.
    public func readHead<E: Error>(_ fill: (UnsafeMutableRawBufferPointer) throws(E) -> Int) throws(E) -> HeadOutcome {
        parser.reset()
        while true {
            switch parser.parse(buffer.readable) {
            case .complete(let head):
                headStart = buffer.readable.baseAddress
                buffer.consume(head.length)
                return .head(head)
            case .invalid(let error):
                return .invalid(error)
            case .needMore:
                if try fillMore(fill) == 0 { return .closed }
            }
        }
    }

    /// Reads a body framed as `framing` (from the head, or `responseFraming` for a
    /// response) and hands its payload to `sink` piece by piece, chunked framing removed.
    /// A piece is only valid during the call; `sink` returns false to stop reading.
    public func readBody<E: Error>(
        _ framing: BodyFraming,
        fill: (UnsafeMutableRawBufferPointer) throws(E) -> Int,
        sink: (UnsafeRawBufferPointer) throws(E) -> Bool
    ) throws(E) -> BodyOutcome {
        switch framing {
        case .none:
            return .complete
        case .contentLength(var remaining):
            while remaining > 0 {
                if buffer.isEmpty, try fillMore(fill) == 0 { return .truncated }
                let count = min(remaining, buffer.readableCount)
                let more = try sink(UnsafeRawBufferPointer(rebasing: buffer.readable.prefix(count)))
                buffer.consume(count)
                remaining &-= count
                if !more { return .stopped }
            }
            return .complete
        case .chunked:
            var decoder = ChunkedDecoder()
            while true {
                if buffer.isEmpty, try fillMore(fill) == 0 { return .truncated }
                let input = buffer.readable
                var stopped = false
                var failure: E?
                let outcome = decoder.consume(input) { data in
                    guard !stopped else { return }
                    do throws(E) {
                        stopped = try !sink(UnsafeRawBufferPointer(rebasing: input[data]))
                    } catch {
                        failure = error
                        stopped = true
                    }
                }
                if let failure { throw failure }
                if stopped { return .stopped }
                switch outcome {
                case .needMore:
                    buffer.consume(input.count)
                case .complete(let consumed):
                    buffer.consume(consumed)
                    return .complete
                case .invalid(let failure):
                    return .invalid(failure)
                }
            }
        case .untilClose:
            while true {
                if buffer.isEmpty, try fillMore(fill) == 0 { return .complete }
                let more = try sink(buffer.readable)
                buffer.consume(buffer.readableCount)
                if !more { return .stopped }
            }
        }
    }

    /// Makes room after the buffered bytes (ByteBuffer moves them to the front, or grows
    /// when they fill it) and calls `fill` once. Returns what it returned.
    private func fillMore<E: Error>(_ fill: (UnsafeMutableRawBufferPointer) throws(E) -> Int) throws(E) -> Int {
        let room = buffer.writable(atLeast: 1)
        let received = try fill(room)
        precondition(received >= 0 && received <= room.count, "fill returned more than it was given room for")
        buffer.didWrite(received)
        return received
    }
}
