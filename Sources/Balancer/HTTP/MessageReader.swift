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
    /// Bytes `start..<end` are received and not yet consumed. Grows only for a head
    /// longer than it, up to about twice `maxHeadBytes`.
    private var storage: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    /// Where the last head began in `storage`, for `text(_:)`.
    private var headBase = 0

    public init(kind: HTTPHeadParser.Kind, limits: HTTPHeadParser.Limits = .init(), capacity: Int = 16 << 10) {
        parser = HTTPHeadParser(kind: kind, limits: limits)
        storage = .allocate(byteCount: max(capacity, 1), alignment: 1)
    }

    deinit {
        storage.deallocate()
    }

    /// Forgets every buffered byte: for a new connection.
    public func reset() {
        start = 0
        end = 0
        parser.reset()
    }

    /// Bytes received and not consumed yet.
    public var bufferedCount: Int { end &- start }

    /// The bytes received and not consumed yet, valid until the next call that reads
    /// (for an error message that quotes what arrived).
    public var buffered: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[start..<end]) }

    /// `range` of the last head as text (invalid UTF-8 repaired), valid until the next
    /// call that reads.
    public func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: storage[(headBase &+ range.lowerBound)..<(headBase &+ range.upperBound)]),
               as: UTF8.self)
    }

    /// Reads the next head, calling `fill` as long as it is incomplete. On `.head` the
    /// head is consumed and the bytes after it stay buffered for `readBody`.
    public func readHead<E: Error>(_ fill: (UnsafeMutableRawBufferPointer) throws(E) -> Int) throws(E) -> HeadOutcome {
        parser.reset()
        while true {
            switch parser.parse(UnsafeRawBufferPointer(rebasing: storage[start..<end])) {
            case .complete(let head):
                headBase = start
                start &+= head.length
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
                if start == end, try fillMore(fill) == 0 { return .truncated }
                let count = min(remaining, end &- start)
                let more = try sink(UnsafeRawBufferPointer(rebasing: storage[start..<(start &+ count)]))
                start &+= count
                remaining &-= count
                if !more { return .stopped }
            }
            return .complete
        case .chunked:
            var decoder = ChunkedDecoder()
            while true {
                if start == end, try fillMore(fill) == 0 { return .truncated }
                let input = UnsafeRawBufferPointer(rebasing: storage[start..<end])
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
                    start = end
                case .complete(let consumed):
                    start &+= consumed
                    return .complete
                case .invalid(let failure):
                    return .invalid(failure)
                }
            }
        case .untilClose:
            while true {
                if start == end, try fillMore(fill) == 0 { return .complete }
                let more = try sink(UnsafeRawBufferPointer(rebasing: storage[start..<end]))
                start = end
                if !more { return .stopped }
            }
        }
    }

    /// Makes room after the buffered bytes (moving them to the front, or growing when
    /// they fill the whole buffer) and calls `fill` once. Returns what it returned.
    private func fillMore<E: Error>(_ fill: (UnsafeMutableRawBufferPointer) throws(E) -> Int) throws(E) -> Int {
        if start == end {
            start = 0
            end = 0
        } else if end == storage.count {
            let count = end &- start
            if start > 0 {
                storage.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: count)
            } else {
                let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: storage.count &* 2, alignment: 1)
                bigger.baseAddress!.copyMemory(from: storage.baseAddress!, byteCount: count)
                storage.deallocate()
                storage = bigger
            }
            start = 0
            end = count
        }
        let received = try fill(UnsafeMutableRawBufferPointer(rebasing: storage[end...]))
        precondition(received >= 0 && received <= storage.count &- end, "fill returned more than it was given room for")
        end &+= received
        return received
    }
}
