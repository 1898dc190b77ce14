// Checks STYLE.md rule 4 for the HTTP layer: once warmed up, parsing a request and a
// response, rewriting both and measuring a chunked body performs no malloc at all. Built
// and run by Fuzz/alloc-check.sh with a malloc counter preloaded (count.c).
import Glibc

typealias CountFunction = @convention(c) () -> Int
guard let symbol = dlsym(nil, "malloc_count") else {
    print("malloc_count not found: run with LD_PRELOAD=libcount.so")
    exit(2)
}
let mallocCount = unsafeBitCast(symbol, to: CountFunction.self)

let request = Array(("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n"
    + "Connection: keep-alive, X-A\r\nX-A: 1\r\nContent-Length: 5, 5\r\nAccept: */*\r\n\r\nhello").utf8)
let response = Array("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\n\r\n".utf8)
let chunked = Array("5;a=b\r\nhello\r\n0\r\nX: y\r\n\r\n".utf8)
let client = Array("10.1.2.3".utf8)

var requestParser = HTTPHeadParser(kind: .request)
var responseParser = HTTPHeadParser(kind: .response)
var decoder = ChunkedDecoder()
var output: [UInt8] = []
output.reserveCapacity(4096)
var checksum = 0

/// What a shell does with a request head: rewrite it, then reset the parser while the
/// head is still alive (the caller's binding holds it), and use the head after that.
@inline(never) func forward(_ head: HTTPHead, _ input: UnsafeRawBufferPointer) {
    HTTPHeadWriter.writeRequest(head, from: input, clientAddress: client, forwardFor: true, keepAliveToServer: true, into: &output)
    requestParser.reset()
    checksum &+= head.length
}

/// One request/response exchange as the shell does it.
@inline(never) func exchange() {
    output.removeAll(keepingCapacity: true)
    request.withUnsafeBytes { input in
        guard case .complete(let head) = requestParser.parse(input) else { fatalError("request did not parse") }
        forward(head, input)
    }
    responseParser.reset()
    response.withUnsafeBytes { input in
        guard case .complete(let head) = responseParser.parse(input) else { fatalError("response did not parse") }
        HTTPHeadWriter.writeResponse(head, from: input, requestVersion: .http11, keepAliveToClient: true, into: &output)
        checksum &+= head.length
    }
    decoder.reset()
    chunked.withUnsafeBytes { input in
        guard case .complete(let n) = decoder.consume(input) else { fatalError("chunked body did not end") }
        checksum &+= n
    }
    checksum &+= ErrorResponse.badGateway.bytes.count
}

for _ in 0..<10 { exchange() }
let before = mallocCount()
for _ in 0..<100_000 { exchange() }
let allocations = mallocCount() - before
print("mallocs in 100000 warmed-up exchanges: \(allocations) (checksum \(checksum))")
exit(allocations == 0 ? 0 : 1)
