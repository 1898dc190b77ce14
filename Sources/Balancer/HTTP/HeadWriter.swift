// Rewriting a parsed head for the other side of the proxy. This is where a head is
// copied: the parser only recorded ranges, and the writer appends the parts that survive
// to a buffer the caller reuses, so writing allocates only while that buffer grows.
//
// What changes on the way through (RFC 9110 §7.6.1): hop-by-hop fields describe one
// connection, so they are dropped and replaced by our own Connection field for the next
// connection. Field lines are written as `name: value` with the OWS normalised; names
// keep their case.

public enum HTTPHeadWriter {
    /// Appends the request for the server to `output`.
    ///
    /// - The request line is copied verbatim, so the server sees the version the client
    ///   spoke and answers in kind.
    /// - Every field but the hop-by-hop ones is copied in order. In an upgrade the Upgrade
    ///   field is kept and `Connection: upgrade` written, since that is what asks for it.
    /// - With `forwardFor`, `X-Forwarded-For: <clientAddress>` is appended as a field of
    ///   its own, after any the client sent, as haproxy's `option forwardfor` does.
    /// - Then `Connection: close` when we will not reuse the server connection, or
    ///   `Connection: keep-alive` for an HTTP/1.0 request we want to keep it for. HTTP/1.1
    ///   is persistent by default and needs nothing.
    public static func writeRequest(
        _ head: HTTPHead,
        from input: UnsafeRawBufferPointer,
        clientAddress: [UInt8],
        forwardFor: Bool,
        keepAliveToServer: Bool,
        edits: RequestEdits? = nil,
        forwardedProtoHTTPS: Bool = false,
        into output: inout [UInt8]
    ) {
        if let edits, let path = edits.path {
            // A rewritten path: the request line around it stays as the client sent it.
            HTTPSyntax.append(input, head.startLine.lowerBound..<path.range.lowerBound, to: &output)
            output.append(contentsOf: path.replacement)
            HTTPSyntax.append(input, path.range.upperBound..<head.startLine.upperBound, to: &output)
        } else {
            HTTPSyntax.append(input, head.startLine, to: &output)
        }
        HTTPSyntax.append("\r\n", to: &output)
        // On a TLS bind the client's own X-Forwarded-Proto is replaced: only the proxy
        // knows how the request arrived.
        if let edits {
            writeFields(head, from: input, keepingUpgrade: head.upgrade, skipping: {
                edits.drops(input, $0.name)
                    || (forwardedProtoHTTPS && HTTPSyntax.equalsIgnoringCase(input, $0.name, "x-forwarded-proto"))
            }, into: &output)
            edits.appendFields(to: &output)
        } else if forwardedProtoHTTPS {
            writeFields(head, from: input, keepingUpgrade: head.upgrade,
                        skipping: { HTTPSyntax.equalsIgnoringCase(input, $0.name, "x-forwarded-proto") }, into: &output)
        } else {
            writeFields(head, from: input, keepingUpgrade: head.upgrade, skipping: { _ in false }, into: &output)
        }
        if forwardedProtoHTTPS { HTTPSyntax.append("X-Forwarded-Proto: https\r\n", to: &output) }
        if forwardFor {
            HTTPSyntax.append("X-Forwarded-For: ", to: &output)
            output.append(contentsOf: clientAddress)
            HTTPSyntax.append("\r\n", to: &output)
        }
        if head.upgrade {
            HTTPSyntax.append("Connection: upgrade\r\n", to: &output)
        } else if !keepAliveToServer {
            HTTPSyntax.append("Connection: close\r\n", to: &output)
        } else if head.version == .http10 {
            HTTPSyntax.append("Connection: keep-alive\r\n", to: &output)
        }
        HTTPSyntax.append("\r\n", to: &output)
    }

    /// Appends the response for the client to `output`: the status line verbatim, every
    /// field but the hop-by-hop ones (a 101 keeps Upgrade and gets `Connection: upgrade`),
    /// then `Connection: close` when we close the client connection after this response,
    /// or `Connection: keep-alive` when we keep it open and the client spoke HTTP/1.0 or
    /// the status line (copied verbatim) says HTTP/1.0.
    ///
    /// `keepAliveToClient` must be false after a response framed `.untilClose`: the end
    /// of its body is the end of the connection.
    public static func writeResponse(
        _ head: HTTPHead,
        from input: UnsafeRawBufferPointer,
        requestVersion: HTTPVersion,
        keepAliveToClient: Bool,
        into output: inout [UInt8]
    ) {
        HTTPSyntax.append(input, head.startLine, to: &output)
        HTTPSyntax.append("\r\n", to: &output)
        writeFields(head, from: input, keepingUpgrade: head.upgrade, skipping: { _ in false }, into: &output)
        if head.upgrade {
            HTTPSyntax.append("Connection: upgrade\r\n", to: &output)
        } else if !keepAliveToClient {
            HTTPSyntax.append("Connection: close\r\n", to: &output)
        } else if requestVersion == .http10 || head.version == .http10 {
            // Whoever reads an HTTP/1.0 message assumes it closes the connection.
            HTTPSyntax.append("Connection: keep-alive\r\n", to: &output)
        }
        HTTPSyntax.append("\r\n", to: &output)
    }

    /// The fields without the hop-by-hop ones. `hopByHop` is ascending, so one cursor
    /// walks it alongside the fields.
    private static func writeFields(
        _ head: HTTPHead, from input: UnsafeRawBufferPointer, keepingUpgrade: Bool,
        skipping skip: (HTTPField) -> Bool, into output: inout [UInt8]
    ) {
        var nextHop = 0
        var wroteContentLength = false
        for index in head.fields.indices {
            let field = head.fields[index]
            if nextHop < head.hopByHop.count && head.hopByHop[nextHop] == index {
                nextHop &+= 1
                if !(keepingUpgrade && HTTPSyntax.equalsIgnoringCase(input, field.name, "upgrade")) { continue }
            }
            if skip(field) { continue }
            if !head.contentLengthIsCanonical && HTTPSyntax.equalsIgnoringCase(input, field.name, "content-length") {
                // Several agreeing values: send one plain value where the first one was.
                if wroteContentLength { continue }
                wroteContentLength = true
                if case .contentLength(let length) = head.framing {
                    HTTPSyntax.append(input, field.name, to: &output)
                    HTTPSyntax.append(": ", to: &output)
                    HTTPSyntax.appendDecimal(length, to: &output)
                    HTTPSyntax.append("\r\n", to: &output)
                    continue
                }
            }
            HTTPSyntax.append(input, field.name, to: &output)
            HTTPSyntax.append(": ", to: &output)
            HTTPSyntax.append(input, field.value, to: &output)
            HTTPSyntax.append("\r\n", to: &output)
        }
    }
}
