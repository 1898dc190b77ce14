// A strict RFC 9112 parser for the head of one HTTP/1.x request or response. It does no
// I/O: the connection shell calls `parse` each time more bytes arrived, with the whole
// buffer from the start of the head, and acts on the outcome.
//
// Strictness is the point. A proxy that reads framing differently from the server behind
// it enables request smuggling, so everything with two readings is rejected instead of
// repaired: obs-fold, bare CR or LF, whitespace before the colon, Transfer-Encoding with
// Content-Length, any coding but a single final "chunked", duplicate Host. haproxy 2.6
// repairs some of these (it folds obs-fold, drops Content-Length next to
// Transfer-Encoding); we answer 400 for a request and 502 for a response.
//
// Work per byte happens once: the scan for the end of the head resumes where the
// previous call stopped, and the head is validated in one more pass once it is complete.
// Storage for the fields is kept across heads, so a steady stream of requests does not
// allocate (see `reset`).

public enum HTTPParseError: Error, Sendable, Equatable {
    /// No end of head within `Limits.maxHeadBytes` (the shell answers 431).
    case headTooLarge
    /// More than `Limits.maxFields` field lines (431 as well: it is a size limit).
    case tooManyFields
    case badRequestLine
    case badStatusLine
    /// "HTTP/" followed by anything but "1.0" or "1.1".
    case badVersion
    case badFieldName
    /// "Name : value"; RFC 9112 §5.1 requires rejecting it, since some implementations
    /// would read the name with the space.
    case spaceBeforeColon
    /// A CTL other than HTAB (NUL included) or DEL in a field value.
    case badFieldValue
    /// A field line starting with SP or HTAB (RFC 9112 §5.2).
    case obsFold
    case badContentLength
    /// Several Content-Length values that differ.
    case conflictingContentLength
    case contentLengthWithTransferEncoding
    /// A coding other than one final "chunked", an empty Transfer-Encoding, or
    /// Transfer-Encoding in an HTTP/1.0 message (RFC 9112 §6.1 calls that faulty).
    case badTransferEncoding
    /// An HTTP/1.1 request without Host (RFC 9112 §3.2).
    case missingHost
    /// More than one Host field, even with the same value (as haproxy does).
    case conflictingHost
    /// LF not preceded by CR.
    case bareLineFeed
    /// CR not followed by LF.
    case bareCarriageReturn
    /// CONNECT: tunnels are out of scope, so the shell answers 405.
    case connectNotSupported

    /// The canned answer to a client whose request failed with this error. A response that
    /// fails to parse is always answered with `ErrorResponse.badGateway`.
    public var requestErrorResponse: ErrorResponse {
        switch self {
        case .headTooLarge, .tooManyFields: .headerFieldsTooLarge
        case .connectNotSupported: .methodNotAllowed
        default: .badRequest
        }
    }
}

public struct HTTPHeadParser: Sendable {
    public enum Kind: Sendable, Equatable { case request, response }

    public struct Limits: Sendable, Equatable {
        /// Longest head, counting the empty lines before a request line, including CRLFCRLF.
        public var maxHeadBytes: Int
        /// Most field lines, not counting the start line.
        public var maxFields: Int

        public init(maxHeadBytes: Int = 16 * 1024, maxFields: Int = 100) {
            self.maxHeadBytes = maxHeadBytes
            self.maxFields = maxFields
        }
    }

    public enum Outcome: Sendable, Equatable {
        /// The head is not complete yet: call again with the same bytes and more.
        case needMore
        /// The head is `head.length` bytes; anything after it is body or the next message.
        case complete(HTTPHead)
        case invalid(HTTPParseError)
    }

    public let kind: Kind
    public let limits: Limits

    // Scan state, so each call only looks at bytes it has not seen.
    /// Next byte to look at.
    private var scanned = 0
    /// Start of the line being scanned.
    private var lineStart = 0
    /// Start of the start line; -1 while only empty lines were seen.
    private var headStart = -1
    /// Field lines seen so far.
    private var fieldLines = 0
    /// Set once the head is complete or invalid; returned by further calls until reset.
    private var finished: Outcome?

    // Kept across heads so that steady-state parsing reuses their capacity.
    private var fields: [HTTPField] = []
    private var hopByHop: [Int] = []

    public init(kind: Kind, limits: Limits = .init()) {
        self.kind = kind
        self.limits = limits
    }

    /// Forgets the current head, to parse the next one from a new buffer start.
    ///
    /// The field storage is emptied only when the next head completes, not here: a head
    /// shares its arrays with the parser, and a caller typically resets while it still
    /// holds the head it just got, which would make emptying them here copy them. By the
    /// next head that one is usually gone, and the storage is reused in place.
    public mutating func reset() {
        scanned = 0
        lineStart = 0
        headStart = -1
        fieldLines = 0
        finished = nil
    }

    /// Parses the head at the start of `bytes`. Call it again with the same bytes plus
    /// more after `.needMore`; bytes already given must not change. After `.complete` or
    /// `.invalid`, the same outcome is returned until `reset()`.
    ///
    /// Empty lines (CRLF) before a request line are skipped, as RFC 9112 §2.2 advises for
    /// clients that send an extra CRLF after a body: they are part of `length`, and
    /// `start` says where the request line begins. A response may not start with one.
    public mutating func parse(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        if let finished { return finished }
        // Only the first maxHeadBytes may hold the head; scanning stops there so that the
        // outcome depends on the bytes and not on how they were split across calls.
        let limit = min(bytes.count, limits.maxHeadBytes)
        var i = scanned
        var previous: UInt8 = i > 0 ? bytes[i &- 1] : 0
        while i < limit {
            let b = bytes[i]
            if b == HTTPSyntax.lf {
                if previous != HTTPSyntax.cr || i == lineStart { return fail(.bareLineFeed) }
                if i &- 1 == lineStart {
                    if headStart >= 0 {
                        scanned = i &+ 1
                        return complete(bytes, end: i &+ 1)
                    }
                    if kind == .response { return fail(.badStatusLine) }
                    lineStart = i &+ 1
                } else {
                    if headStart < 0 {
                        headStart = lineStart
                    } else {
                        fieldLines &+= 1
                        if fieldLines > limits.maxFields { return fail(.tooManyFields) }
                    }
                    lineStart = i &+ 1
                }
            } else if previous == HTTPSyntax.cr {
                return fail(.bareCarriageReturn)
            }
            previous = b
            i &+= 1
        }
        scanned = i
        if bytes.count >= limits.maxHeadBytes { return fail(.headTooLarge) }
        return .needMore
    }

    private mutating func fail(_ error: HTTPParseError) -> Outcome {
        let outcome = Outcome.invalid(error)
        finished = outcome
        return outcome
    }

    /// Validates the complete head `bytes[..<end]` and builds it. The scan already
    /// guaranteed that every line ends in CRLF and that no other CR or LF occurs, so the
    /// first CR after a line start is that line's end.
    private mutating func complete(_ bytes: UnsafeRawBufferPointer, end: Int) -> Outcome {
        fields.removeAll(keepingCapacity: true)
        hopByHop.removeAll(keepingCapacity: true)
        var head = HTTPHead(version: .http11)
        head.length = end
        head.start = headStart

        var lineEnd = headStart
        while bytes[lineEnd] != HTTPSyntax.cr { lineEnd &+= 1 }
        head.startLine = headStart..<lineEnd
        let startLineError = kind == .request
            ? Self.parseRequestLine(bytes, headStart..<lineEnd, into: &head)
            : Self.parseStatusLine(bytes, headStart..<lineEnd, into: &head)
        if let startLineError { return fail(startLineError) }

        var fieldsState = FieldsState()
        var lineStart = lineEnd &+ 2
        let fieldsEnd = end &- 2  // the CR of the final empty line
        while lineStart < fieldsEnd {
            lineEnd = lineStart
            while bytes[lineEnd] != HTTPSyntax.cr { lineEnd &+= 1 }
            if let error = addField(bytes, lineStart..<lineEnd, state: &fieldsState, head: &head) {
                return fail(error)
            }
            lineStart = lineEnd &+ 2
        }
        if let error = finishFields(bytes, state: fieldsState, head: &head) { return fail(error) }

        head.fields = fields
        head.hopByHop = hopByHop
        let outcome = Outcome.complete(head)
        finished = outcome
        return outcome
    }

    /// `method SP request-target SP HTTP-version`, exactly single spaces.
    private static func parseRequestLine(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>, into head: inout HTTPHead) -> HTTPParseError? {
        var p = line.lowerBound
        while p < line.upperBound && HTTPSyntax.isTokenChar(bytes[p]) { p &+= 1 }
        guard p > line.lowerBound, p < line.upperBound, bytes[p] == HTTPSyntax.sp else { return .badRequestLine }
        head.methodRange = line.lowerBound..<p
        head.method = HTTPMethod.classify(bytes, head.methodRange)

        // Visible ASCII only, like haproxy without accept-invalid-http-request: raw UTF-8
        // or control bytes in a target are read differently by different servers.
        p &+= 1
        let targetStart = p
        while p < line.upperBound && bytes[p] > 0x20 && bytes[p] < 0x7F { p &+= 1 }
        guard p > targetStart, p < line.upperBound, bytes[p] == HTTPSyntax.sp else { return .badRequestLine }
        head.target = targetStart..<p

        let version = (p &+ 1)..<line.upperBound
        if HTTPSyntax.equals(bytes, version, "HTTP/1.1") {
            head.version = .http11
        } else if HTTPSyntax.equals(bytes, version, "HTTP/1.0") {
            head.version = .http10
        } else if HTTPSyntax.equals(bytes, head.methodRange, "PRI") && HTTPSyntax.equals(bytes, version, "HTTP/2.0") {
            // The HTTP/2 connection preface is not an HTTP/1 request with a new version.
            return .badRequestLine
        } else if version.count >= 5 && HTTPSyntax.equals(bytes, version.lowerBound..<(version.lowerBound &+ 5), "HTTP/")
            && !version.contains(where: { bytes[$0] == HTTPSyntax.sp }) {
            return .badVersion
        } else {
            return .badRequestLine
        }
        return nil
    }

    /// `HTTP-version SP 3DIGIT SP reason`. "HTTP/1.1 200" without the second space is
    /// accepted: RFC 9112 requires it, but servers omit it and the reason carries nothing.
    private static func parseStatusLine(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>, into head: inout HTTPHead) -> HTTPParseError? {
        var p = line.lowerBound
        while p < line.upperBound && bytes[p] != HTTPSyntax.sp { p &+= 1 }
        let version = line.lowerBound..<p
        if HTTPSyntax.equals(bytes, version, "HTTP/1.1") {
            head.version = .http11
        } else if HTTPSyntax.equals(bytes, version, "HTTP/1.0") {
            head.version = .http10
        } else if version.count >= 5 && HTTPSyntax.equals(bytes, version.lowerBound..<(version.lowerBound &+ 5), "HTTP/") {
            return .badVersion
        } else {
            return .badStatusLine
        }
        guard line.upperBound &- p >= 4 else { return .badStatusLine }
        var status = 0
        for q in (p &+ 1)..<(p &+ 4) {
            guard HTTPSyntax.isDigit(bytes[q]) else { return .badStatusLine }
            status = status &* 10 &+ Int(bytes[q] &- 0x30)
        }
        guard (100...599).contains(status) else { return .badStatusLine }
        head.status = status
        p &+= 4
        if p == line.upperBound {
            head.reason = p..<p
            return nil
        }
        guard bytes[p] == HTTPSyntax.sp else { return .badStatusLine }
        for q in (p &+ 1)..<line.upperBound where !HTTPSyntax.isFieldValueChar(bytes[q]) {
            return .badStatusLine
        }
        head.reason = (p &+ 1)..<line.upperBound
        return nil
    }

    /// What the fields said, gathered while they are added one by one.
    private struct FieldsState {
        var contentLength: Int?
        var contentLengthFields = 0
        var contentLengthIsList = false
        var sawTransferEncoding = false
        var sawChunked = false
        var hasUpgradeField = false
        var connectionClose = false
        var connectionKeepAlive = false
        var connectionUpgrade = false
        /// A Connection token other than close/keep-alive/upgrade names more fields to drop.
        var connectionNamesFields = false
        var expectContinue = false
    }

    private mutating func addField(
        _ bytes: UnsafeRawBufferPointer, _ line: Range<Int>, state: inout FieldsState, head: inout HTTPHead
    ) -> HTTPParseError? {
        if HTTPSyntax.isWhitespace(bytes[line.lowerBound]) { return .obsFold }
        var p = line.lowerBound
        while p < line.upperBound && HTTPSyntax.isTokenChar(bytes[p]) { p &+= 1 }
        let name = line.lowerBound..<p
        guard !name.isEmpty, p < line.upperBound else { return .badFieldName }
        if bytes[p] != HTTPSyntax.colon {
            guard HTTPSyntax.isWhitespace(bytes[p]) else { return .badFieldName }
            while p < line.upperBound && HTTPSyntax.isWhitespace(bytes[p]) { p &+= 1 }
            return p < line.upperBound && bytes[p] == HTTPSyntax.colon ? .spaceBeforeColon : .badFieldName
        }
        for q in (p &+ 1)..<line.upperBound where !HTTPSyntax.isFieldValueChar(bytes[q]) {
            return .badFieldValue
        }
        let value = HTTPSyntax.trimmed(bytes, (p &+ 1)..<line.upperBound)
        let index = fields.count
        fields.append(HTTPField(name: name, value: value))

        // Names are matched by length first, so most fields cost one switch.
        switch name.count {
        case 2:
            if HTTPSyntax.equalsIgnoringCase(bytes, name, "te") { hopByHop.append(index) }
        case 4:
            if HTTPSyntax.equalsIgnoringCase(bytes, name, "host"), kind == .request {
                if head.hostRange != nil { return .conflictingHost }
                head.hostRange = value
            }
        case 6:
            if HTTPSyntax.equalsIgnoringCase(bytes, name, "expect") {
                state.expectContinue = HTTPSyntax.equalsIgnoringCase(bytes, value, "100-continue")
            }
        case 7:
            if HTTPSyntax.equalsIgnoringCase(bytes, name, "upgrade") {
                state.hasUpgradeField = true
                hopByHop.append(index)
            } else if HTTPSyntax.equalsIgnoringCase(bytes, name, "trailer") {
                hopByHop.append(index)
            }
        case 10:
            if HTTPSyntax.equalsIgnoringCase(bytes, name, "connection") {
                hopByHop.append(index)
                Self.readConnection(bytes, value, state: &state)
            } else if HTTPSyntax.equalsIgnoringCase(bytes, name, "keep-alive") {
                hopByHop.append(index)
            }
        case 14:
            if HTTPSyntax.equalsIgnoringCase(bytes, name, "content-length") {
                return Self.readContentLength(bytes, value, state: &state)
            }
        case 16:
            if HTTPSyntax.equalsIgnoringCase(bytes, name, "proxy-connection") { hopByHop.append(index) }
        case 17:
            if HTTPSyntax.equalsIgnoringCase(bytes, name, "transfer-encoding") {
                return Self.readTransferEncoding(bytes, value, state: &state)
            }
        default:
            break
        }
        return nil
    }

    /// 1*DIGIT, or a list of identical ones ("5, 5", which RFC 9110 §8.6 lets a recipient
    /// merge). Values above 2^62 are rejected: nothing real is that long, and it keeps
    /// every sum the shell does with them far from overflow.
    private static func readContentLength(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>, state: inout FieldsState) -> HTTPParseError? {
        var error: HTTPParseError?
        var items = 0
        HTTPSyntax.forEachListElement(bytes, value) { element in
            items &+= 1
            guard !element.isEmpty else { error = .badContentLength; return false }
            var n = 0
            for i in element {
                let b = bytes[i]
                guard HTTPSyntax.isDigit(b) else { error = .badContentLength; return false }
                let digit = Int(b &- 0x30)
                // Checked before multiplying, so the sum can never wrap.
                guard n <= ((1 << 62) - digit) / 10 else { error = .badContentLength; return false }
                n = n &* 10 &+ digit
            }
            if let previous = state.contentLength, previous != n {
                error = .conflictingContentLength
                return false
            }
            state.contentLength = n
            return true
        }
        state.contentLengthFields &+= 1
        if items > 1 { state.contentLengthIsList = true }
        return error
    }

    /// The only coding we accept is "chunked", once, last; since it must be last and no
    /// other is accepted, the non-empty elements over all Transfer-Encoding fields must be
    /// exactly one "chunked". We forward bodies verbatim, so we could not decode another
    /// coding anyway, and guessing where a gzip body ends is how smuggling starts.
    private static func readTransferEncoding(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>, state: inout FieldsState) -> HTTPParseError? {
        state.sawTransferEncoding = true
        var ok = true
        HTTPSyntax.forEachListElement(bytes, value) { element in
            if element.isEmpty { return true }
            guard HTTPSyntax.equalsIgnoringCase(bytes, element, "chunked"), !state.sawChunked else {
                ok = false
                return false
            }
            state.sawChunked = true
            return true
        }
        return ok ? nil : .badTransferEncoding
    }

    private static func readConnection(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>, state: inout FieldsState) {
        HTTPSyntax.forEachListElement(bytes, value) { token in
            if token.isEmpty {
                // RFC 9110 §5.6.1: empty list elements are ignored.
            } else if HTTPSyntax.equalsIgnoringCase(bytes, token, "close") {
                state.connectionClose = true
            } else if HTTPSyntax.equalsIgnoringCase(bytes, token, "keep-alive") {
                state.connectionKeepAlive = true
            } else if HTTPSyntax.equalsIgnoringCase(bytes, token, "upgrade") {
                state.connectionUpgrade = true
            } else {
                state.connectionNamesFields = true
            }
            return true
        }
    }

    private mutating func finishFields(_ bytes: UnsafeRawBufferPointer, state: FieldsState, head: inout HTTPHead) -> HTTPParseError? {
        if state.sawTransferEncoding {
            // An empty Transfer-Encoding names no coding at all.
            guard state.sawChunked, head.version == .http11 else { return .badTransferEncoding }
            if state.contentLength != nil { return .contentLengthWithTransferEncoding }
            head.framing = .chunked
        } else if let length = state.contentLength {
            head.framing = .contentLength(length)
            head.contentLengthIsCanonical = state.contentLengthFields == 1 && !state.contentLengthIsList
        } else {
            head.framing = kind == .request ? .none : .untilClose
        }

        switch head.version {
        case .http11: head.keepAlive = !state.connectionClose
        case .http10: head.keepAlive = state.connectionKeepAlive && !state.connectionClose
        }

        if kind == .request {
            if head.version == .http11 && head.hostRange == nil { return .missingHost }
            head.expectContinue = state.expectContinue && head.version == .http11
            // RFC 9110 §7.8: Upgrade is only meaningful in HTTP/1.1 and with the
            // "upgrade" Connection option that keeps it from being forwarded blindly.
            head.upgrade = head.version == .http11 && state.connectionUpgrade && state.hasUpgradeField
            if head.method == .connect { return .connectNotSupported }
        } else {
            head.upgrade = head.status == 101
        }

        if state.connectionNamesFields { addFieldsNamedByConnection(bytes) }
        return nil
    }

    /// Adds to `hopByHop` every field named by a Connection token (RFC 9110 §7.6.1), in
    /// ascending order. This runs only when such a token exists, and then compares each
    /// token with each field: at most maxFields², and in practice one token and few fields.
    ///
    /// Host, Content-Length and Transfer-Encoding are never dropped: a client saying
    /// "Connection: content-length" would otherwise make us send the server a body
    /// without its framing, so the server would read it as the next request.
    private mutating func addFieldsNamedByConnection(_ bytes: UnsafeRawBufferPointer) {
        for connection in fields where HTTPSyntax.equalsIgnoringCase(bytes, connection.name, "connection") {
            HTTPSyntax.forEachListElement(bytes, connection.value) { token in
                if token.isEmpty
                    || HTTPSyntax.equalsIgnoringCase(bytes, token, "host")
                    || HTTPSyntax.equalsIgnoringCase(bytes, token, "content-length")
                    || HTTPSyntax.equalsIgnoringCase(bytes, token, "transfer-encoding") {
                    return true
                }
                for index in fields.indices where HTTPSyntax.equalsIgnoringCase(bytes, fields[index].name, token) {
                    insertHopByHop(index)
                }
                return true
            }
        }
    }

    private mutating func insertHopByHop(_ index: Int) {
        var position = hopByHop.count
        while position > 0 && hopByHop[position &- 1] > index { position &-= 1 }
        if position > 0 && hopByHop[position &- 1] == index { return }
        hopByHop.insert(index, at: position)
    }
}
