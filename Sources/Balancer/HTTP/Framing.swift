// Measuring a chunked body (RFC 9112 §7.1) that is forwarded verbatim. Both sides speak
// HTTP/1.1, so de-chunking and re-chunking would only cost copies; what the proxy needs
// is to know where the body ends, so that the bytes after it are read as the next
// message, and to refuse a body the next hop could delimit differently.
//
// The decoder is a byte-driven state machine: any split of the input across calls gives
// the same outcome at the same position, which the tests check at every split point.
// Chunk data is skipped in one step, so the per-byte cost is only paid on the chunk-size
// lines and trailers.

public enum ChunkedOutcome: Sendable, Equatable {
    /// Every byte given belongs to the body, and the body goes on.
    case needMore
    /// The body ended after the first `consumed` bytes of this input; the rest (if any)
    /// is the next message.
    case complete(consumed: Int)
    /// The body is malformed: the message cannot be forwarded or delimited.
    case invalid(ChunkedDecoder.Failure)
}

public struct ChunkedDecoder: Sendable {
    public enum Failure: Sendable, Equatable {
        /// Empty or non-hex chunk size, or a size line not ended by CRLF.
        case badChunkSize
        /// A chunk size above 2^62.
        case chunkSizeTooLarge
        /// A byte that cannot appear in a chunk extension.
        case badChunkExtension
        /// A chunk-size line (size and extensions) longer than `Limits.maxChunkLineBytes`.
        case chunkLineTooLong
        /// Chunk data not followed by CRLF, or CR not followed by LF.
        case missingCRLF
        /// LF without CR before it.
        case bareLineFeed
        /// A trailer field line that is not `token ":" field-value`, including obs-fold
        /// and whitespace before the colon, rejected for the same reasons as in a head.
        case badTrailer
        /// A trailer section longer than `Limits.maxTrailerBytes`.
        case trailerTooLarge
    }

    public struct Limits: Sendable, Equatable {
        /// Extensions carry nothing we use. The limit stops a peer from making us scan
        /// an endless size line, the chunk-extension abuse behind several CVEs of 2023.
        /// Counts the size, the extensions and the CR.
        public var maxChunkLineBytes: Int
        public var maxTrailerBytes: Int

        public init(maxChunkLineBytes: Int = 4096, maxTrailerBytes: Int = 16 * 1024) {
            self.maxChunkLineBytes = maxChunkLineBytes
            self.maxTrailerBytes = maxTrailerBytes
        }
    }

    private enum State: Sendable {
        case size
        /// SP/HTAB after the size: haproxy accepts it before ";" or CRLF, and so do we.
        case sizeWhitespace
        case sizeExtension
        case sizeExtensionQuoted
        case sizeExtensionQuotedPair
        case sizeLF
        case data
        case dataCR
        case dataLF
        case trailerLineStart
        case trailerName
        case trailerValue
        case trailerLF
        case endLF
        case done
        case failed(Failure)
    }

    public let limits: Limits
    private var state = State.size
    private var chunkSize = 0
    private var sawDigit = false
    /// Bytes of the current chunk-size line so far.
    private var lineBytes = 0
    /// Chunk data left to skip in `.data`.
    private var remaining = 0
    private var trailerBytes = 0

    public init(limits: Limits = .init()) {
        self.limits = limits
    }

    /// Back to the start of a new body.
    public mutating func reset() {
        state = .size
        chunkSize = 0
        sawDigit = false
        lineBytes = 0
        remaining = 0
        trailerBytes = 0
    }

    /// Chunk data still to come in the current chunk, 0 outside chunk data: what a caller
    /// may move without looking at it (the proxy splices it), then report with `skipData`.
    public var dataRemaining: Int {
        if case .data = state { return remaining }
        return 0
    }

    /// The caller moved `count` bytes of chunk data itself (at most `dataRemaining`).
    public mutating func skipData(_ count: Int) {
        guard case .data = state else { return }
        precondition(count <= remaining, "skipped past the chunk")
        remaining &-= count
        if remaining == 0 { state = .dataCR }
    }

    /// True once the last chunk and trailers were consumed.
    public var isComplete: Bool {
        if case .done = state { return true }
        return false
    }

    /// Consumes the next bytes of the body. After `.complete`, further calls return
    /// `.complete(consumed: 0)`; after `.invalid`, the same failure.
    public mutating func consume(_ bytes: UnsafeRawBufferPointer) -> ChunkedOutcome {
        consume(bytes, data: { _ in })
    }

    /// `consume(_:)` for a reader that wants the payload and not the framing (the
    /// control-plane client, see HTTPMessageReader): each run of chunk data in `bytes` is
    /// also handed to `data`, as a range of `bytes`, in order, before the call returns.
    /// The outcome is the same as `consume(_:)`'s for the same bytes.
    @inline(__always)
    public mutating func consume(_ bytes: UnsafeRawBufferPointer, data: (Range<Int>) -> Void) -> ChunkedOutcome {
        let count = bytes.count
        var i = 0
        while i < count {
            switch state {
            case .data:
                let n = min(remaining, count &- i)
                data(i..<(i &+ n))
                i &+= n
                remaining &-= n
                if remaining == 0 { state = .dataCR }
                continue
            case .done:
                return .complete(consumed: i)
            case .failed(let failure):
                return .invalid(failure)
            default:
                break
            }
            let b = bytes[i]
            i &+= 1
            if let failure = step(b) {
                state = .failed(failure)
                return .invalid(failure)
            }
            if case .done = state { return .complete(consumed: i) }
        }
        switch state {
        case .done: return .complete(consumed: i)
        case .failed(let failure): return .invalid(failure)
        default: return .needMore
        }
    }

    /// One byte outside chunk data. Returns the failure it causes, if any.
    @inline(__always)
    private mutating func step(_ b: UInt8) -> Failure? {
        switch state {
        case .size, .sizeWhitespace, .sizeExtension, .sizeExtensionQuoted, .sizeExtensionQuotedPair:
            lineBytes &+= 1
            if lineBytes > limits.maxChunkLineBytes { return .chunkLineTooLong }
            return stepSizeLine(b)
        case .sizeLF:
            guard b == HTTPSyntax.lf else { return .missingCRLF }
            lineBytes = 0
            if chunkSize == 0 {
                state = .trailerLineStart
            } else {
                remaining = chunkSize
                state = .data
            }
        case .dataCR:
            if b == HTTPSyntax.lf { return .bareLineFeed }
            guard b == HTTPSyntax.cr else { return .missingCRLF }
            state = .dataLF
        case .dataLF:
            guard b == HTTPSyntax.lf else { return .missingCRLF }
            state = .size
            chunkSize = 0
            sawDigit = false
        case .trailerLineStart, .trailerName, .trailerValue, .trailerLF, .endLF:
            trailerBytes &+= 1
            if trailerBytes > limits.maxTrailerBytes { return .trailerTooLarge }
            return stepTrailer(b)
        case .data, .done, .failed:
            preconditionFailure("handled by consume")
        }
        return nil
    }

    /// `chunk-size [ chunk-ext ] CRLF` with
    /// `chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )`.
    /// The extension is checked for its alphabet, not its full structure: it is forwarded
    /// as is and only has to be unable to hide a line end.
    private mutating func stepSizeLine(_ b: UInt8) -> Failure? {
        switch state {
        case .size:
            if let digit = HTTPSyntax.hexValue(b) {
                // Checked before multiplying, so the sum can never wrap.
                if chunkSize > ((1 << 62) - digit) / 16 { return .chunkSizeTooLarge }
                chunkSize = chunkSize &* 16 &+ digit
                sawDigit = true
                return nil
            }
            guard sawDigit else { return b == HTTPSyntax.lf ? .bareLineFeed : .badChunkSize }
            switch b {
            case HTTPSyntax.cr: state = .sizeLF
            case HTTPSyntax.semicolon: state = .sizeExtension
            case HTTPSyntax.sp, HTTPSyntax.htab: state = .sizeWhitespace
            case HTTPSyntax.lf: return .bareLineFeed
            default: return .badChunkSize
            }
        case .sizeWhitespace:
            switch b {
            case HTTPSyntax.cr: state = .sizeLF
            case HTTPSyntax.semicolon: state = .sizeExtension
            case HTTPSyntax.sp, HTTPSyntax.htab: break
            case HTTPSyntax.lf: return .bareLineFeed
            default: return .badChunkSize
            }
        case .sizeExtension:
            if HTTPSyntax.isTokenChar(b) || HTTPSyntax.isWhitespace(b) || b == HTTPSyntax.semicolon || b == 0x3D /* = */ {
                return nil
            }
            switch b {
            case HTTPSyntax.cr: state = .sizeLF
            case 0x22 /* " */: state = .sizeExtensionQuoted
            case HTTPSyntax.lf: return .bareLineFeed
            default: return .badChunkExtension
            }
        case .sizeExtensionQuoted:
            switch b {
            case 0x22: state = .sizeExtension
            case 0x5C /* \ */: state = .sizeExtensionQuotedPair
            default: if !HTTPSyntax.isFieldValueChar(b) { return .badChunkExtension }
            }
        case .sizeExtensionQuotedPair:
            guard HTTPSyntax.isFieldValueChar(b) else { return .badChunkExtension }
            state = .sizeExtensionQuoted
        default:
            preconditionFailure("not a size-line state")
        }
        return nil
    }

    /// `*( field-line CRLF ) CRLF`, each line validated like a header field.
    private mutating func stepTrailer(_ b: UInt8) -> Failure? {
        switch state {
        case .trailerLineStart:
            if b == HTTPSyntax.cr {
                state = .endLF
            } else if HTTPSyntax.isTokenChar(b) {
                state = .trailerName
            } else {
                return b == HTTPSyntax.lf ? .bareLineFeed : .badTrailer
            }
        case .trailerName:
            if b == HTTPSyntax.colon {
                state = .trailerValue
            } else if !HTTPSyntax.isTokenChar(b) {
                return b == HTTPSyntax.lf ? .bareLineFeed : .badTrailer
            }
        case .trailerValue:
            if b == HTTPSyntax.cr {
                state = .trailerLF
            } else if !HTTPSyntax.isFieldValueChar(b) {
                return b == HTTPSyntax.lf ? .bareLineFeed : .badTrailer
            }
        case .trailerLF:
            guard b == HTTPSyntax.lf else { return .missingCRLF }
            state = .trailerLineStart
        case .endLF:
            guard b == HTTPSyntax.lf else { return .missingCRLF }
            state = .done
        default:
            preconditionFailure("not a trailer state")
        }
        return nil
    }
}
