// libFuzzer target for the HTTP layer (Sources/Balancer/HTTP), built by Fuzz/run.sh by
// compiling those files together with this one, so it needs neither SwiftPM nor the rest
// of the module. Not part of CI.
//
// Each input goes to the request parser, the response parser and the chunked decoder,
// whole and in splits derived from the input itself (so a crash replays exactly), and the
// properties the connection shell relies on are checked:
// - the outcome does not depend on how the bytes were split across calls;
// - a complete head lies within the input, ends in CRLFCRLF, and all its ranges lie
//   within it;
// - a head rewritten by HTTPHeadWriter parses again, with the same meaning;
// - the chunked decoder never claims more bytes than it was given.
// A broken property stops the process with fatalError, which libFuzzer records as a
// crash and saves the input for.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    var random = FuzzRandom(seed: input)
    for kind in [HTTPHeadParser.Kind.request, .response] {
        let outcome = checkHeadParser(input, kind: kind, random: &random)
        if case .complete(let head) = outcome {
            checkHead(head, input, kind: kind)
            checkRewrite(head, input, kind: kind, random: &random)
            if head.framing == .chunked {
                checkChunked(UnsafeRawBufferPointer(rebasing: input[head.length...]), random: &random)
            }
        }
    }
    checkChunked(input, random: &random)
    return 0
}

/// xorshift64*, seeded with FNV-1a over the input: splits vary between inputs but replay.
struct FuzzRandom {
    var state: UInt64

    init(seed bytes: UnsafeRawBufferPointer) {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in bytes { hash = (hash ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        state = hash | 1
    }

    mutating func next(below bound: Int) -> Int {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return Int((state &* 0x2545_F491_4F6C_DD1D) % UInt64(max(bound, 1)))
    }

    /// Increasing cut points in 1...count, ending with count.
    mutating func cuts(_ count: Int) -> [Int] {
        var cuts: [Int] = []
        var position = 0
        while position < count {
            position += 1 + next(below: max(1, count / 4))
            cuts.append(min(position, count))
        }
        return cuts.isEmpty ? [0] : cuts
    }
}

func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, line: UInt = #line) {
    if !condition() { fatalError(message(), line: line) }
}

/// Feeds prefixes ending at `cuts` until the outcome is decided.
func feed(_ input: UnsafeRawBufferPointer, cuts: [Int], kind: HTTPHeadParser.Kind) -> HTTPHeadParser.Outcome {
    var parser = HTTPHeadParser(kind: kind)
    var outcome = HTTPHeadParser.Outcome.needMore
    for end in cuts {
        outcome = parser.parse(UnsafeRawBufferPointer(rebasing: input[..<end]))
        if case .needMore = outcome { continue }
        // Once decided, further calls with more bytes must repeat the decision.
        check(parser.parse(input) == outcome, "\(kind): outcome changed after it was decided")
        return outcome
    }
    return outcome
}

func checkHeadParser(_ input: UnsafeRawBufferPointer, kind: HTTPHeadParser.Kind, random: inout FuzzRandom) -> HTTPHeadParser.Outcome {
    let whole = feed(input, cuts: [input.count], kind: kind)
    let split = feed(input, cuts: random.cuts(input.count), kind: kind)
    check(split == whole, "\(kind): split parsing gave \(split), whole \(whole)")
    // Byte by byte only for short inputs: it is the costliest check, and the unit tests
    // already try every split of their samples.
    if input.count <= 256 {
        let byByte = feed(input, cuts: Array(0...input.count), kind: kind)
        check(byByte == whole, "\(kind): byte-by-byte parsing gave \(byByte), whole \(whole)")
    }
    // A reused parser must behave like a fresh one.
    var reused = HTTPHeadParser(kind: kind)
    _ = reused.parse(UnsafeRawBufferPointer(rebasing: input[..<(input.count / 2)]))
    reused.reset()
    check(reused.parse(input) == whole, "\(kind): reset parser differs")
    return whole
}

func checkHead(_ head: HTTPHead, _ input: UnsafeRawBufferPointer, kind: HTTPHeadParser.Kind) {
    let length = head.length
    check(length >= 4 && length <= input.count && length <= HTTPHeadParser.Limits().maxHeadBytes, "length \(length)")
    check(input[length - 4] == 13 && input[length - 3] == 10 && input[length - 2] == 13 && input[length - 1] == 10,
          "head does not end in CRLFCRLF")
    let headRange = head.start..<length
    func within(_ range: Range<Int>) -> Bool { range.lowerBound >= head.start && range.upperBound <= length }
    func noLineEnds(_ range: Range<Int>) -> Bool { !range.contains { input[$0] == 13 || input[$0] == 10 } }
    check(head.start >= 0 && head.start < length && head.startLine.lowerBound == head.start, "start \(head.start)")
    check(within(head.startLine) && noLineEnds(head.startLine), "start line")
    check(head.fields.count <= HTTPHeadParser.Limits().maxFields, "too many fields")
    for field in head.fields {
        check(within(field.name) && within(field.value) && !field.name.isEmpty, "field range out of \(headRange)")
        check(noLineEnds(field.name) && noLineEnds(field.value), "line end inside a field")
        check(field.name.upperBound < field.value.lowerBound || (field.value.isEmpty && field.name.upperBound <= field.value.lowerBound),
              "value overlaps name")
        if let first = field.value.first, let last = field.value.last {
            check(!HTTPSyntax.isWhitespace(input[first]) && !HTTPSyntax.isWhitespace(input[last]), "value not trimmed")
        }
    }
    var previous = -1
    for index in head.hopByHop {
        check(index > previous && index < head.fields.count, "hopByHop not ascending or out of range")
        previous = index
    }
    if case .contentLength(let n) = head.framing { check(n >= 0 && n <= 1 << 62, "content length \(n)") }
    switch kind {
    case .request:
        check(within(head.methodRange) && within(head.target) && !head.target.isEmpty, "request line ranges")
        check(head.method != .connect, "CONNECT accepted")
        if let host = head.hostRange { check(within(host), "host range") }
        if head.version == .http11 { check(head.hostRange != nil, "HTTP/1.1 without Host") }
        check(head.framing != .untilClose, "request framed until close")
    case .response:
        check((100...599).contains(head.status), "status \(head.status)")
        check(head.reason.isEmpty || within(head.reason), "reason range")
        check(head.start == 0, "response with leading empty lines")
    }
}

/// What the writer produces must parse, and mean the same.
func checkRewrite(_ head: HTTPHead, _ input: UnsafeRawBufferPointer, kind: HTTPHeadParser.Kind, random: inout FuzzRandom) {
    let keepAlive = random.next(below: 2) == 0
    var output: [UInt8] = []
    switch kind {
    case .request:
        let forwardFor = random.next(below: 2) == 0
        HTTPHeadWriter.writeRequest(head, from: input, clientAddress: Array("203.0.113.9".utf8), forwardFor: forwardFor,
                                    keepAliveToServer: keepAlive, into: &output)
    case .response:
        HTTPHeadWriter.writeResponse(head, from: input, requestVersion: random.next(below: 2) == 0 ? .http10 : .http11,
                                     keepAliveToClient: keepAlive, into: &output)
    }
    // Room for the fields the writer adds.
    var parser = HTTPHeadParser(kind: kind, limits: .init(maxHeadBytes: 32 * 1024, maxFields: 102))
    let outcome = output.withUnsafeBytes { parser.parse($0) }
    guard case .complete(let rewritten) = outcome else {
        fatalError("\(kind): rewritten head does not parse: \(outcome)\n\(String(decoding: output, as: UTF8.self))")
    }
    check(rewritten.length == output.count, "rewritten head has trailing bytes")
    check(rewritten.method == head.method && rewritten.status == head.status && rewritten.version == head.version,
          "rewritten start line differs")
    check(rewritten.framing == head.framing, "rewritten framing \(rewritten.framing) differs from \(head.framing)")
    check(rewritten.upgrade == head.upgrade, "rewritten upgrade differs")
    check(rewritten.expectContinue == head.expectContinue, "rewritten expectation differs")
    check(rewritten.contentLengthIsCanonical, "rewritten Content-Length not canonical")
    if !head.upgrade {
        check(rewritten.keepAlive == keepAlive, "rewritten keep-alive differs")
        check(rewritten.hopByHop.count <= 1, "hop-by-hop fields survived the rewrite")
    }
    output.withUnsafeBytes { out in
        check(out[rewritten.startLine].elementsEqual(input[head.startLine]), "start line not verbatim")
        if let host = head.hostRange {
            check(rewritten.hostRange.map { out[$0].elementsEqual(input[host]) } == true, "Host changed")
        }
    }
}

func consume(_ input: UnsafeRawBufferPointer, cuts: [Int]) -> ChunkedOutcome {
    var decoder = ChunkedDecoder()
    var start = 0
    for end in cuts where end >= start {
        let piece = UnsafeRawBufferPointer(rebasing: input[start..<end])
        let outcome = decoder.consume(piece)
        switch outcome {
        case .needMore:
            start = end
        case .complete(let consumed):
            check(consumed <= piece.count, "chunked consumed \(consumed) of \(piece.count)")
            check(decoder.isComplete, "complete but not isComplete")
            return .complete(consumed: start + consumed)
        case .invalid:
            return outcome
        }
    }
    return .needMore
}

func checkChunked(_ input: UnsafeRawBufferPointer, random: inout FuzzRandom) {
    let whole = consume(input, cuts: [input.count])
    let split = consume(input, cuts: random.cuts(input.count))
    check(split == whole, "chunked: split gave \(split), whole \(whole)")
    if input.count <= 256 {
        let byByte = consume(input, cuts: Array(0...input.count))
        check(byByte == whole, "chunked: byte by byte gave \(byByte), whole \(whole)")
    }
    if case .complete(let consumed) = whole {
        // The body ends with CRLF (the last chunk's or the trailers' final line).
        check(consumed >= 5 && input[consumed - 2] == 13 && input[consumed - 1] == 10, "chunked body does not end in CRLF")
    }
}
