// What the http-request rules (and a route's `strip=`) changed in a request, as the head
// writer needs it: a new path, fields to drop and fields to add. Points into the loop's
// RoutingScratch and the table's compiled rules, so it is built per request without
// allocating.

public struct RequestEdits {
    let table: RoutingTable
    let scratch: RoutingScratch
    /// The path's range in the request line, and what replaces it.
    var path: (range: Range<Int>, replacement: UnsafeRawBufferPointer)?

    init(table: RoutingTable, scratch: RoutingScratch, pathRange: Range<Int>?) {
        self.table = table
        self.scratch = scratch
        if scratch.pathRewritten, let pathRange {
            path = (pathRange, scratch.rewrittenPath)
        }
    }

    /// Nothing to change: the plain writer does.
    var isEmpty: Bool { path == nil && scratch.headerRules.isEmpty }

    @inline(__always)
    private func name(of rule: Int) -> [UInt8] {
        switch table.requestRules[rule].action {
        case .setHeader(let name, _), .deleteHeader(let name): name
        default: []
        }
    }

    /// A field of the request named like any applied set-header or del-header: it goes.
    func drops(_ input: UnsafeRawBufferPointer, _ field: Range<Int>) -> Bool {
        for rule in scratch.headerRules {
            let hit = name(of: rule).withUnsafeBytes { n in
                n.count == field.count && CompiledTest.equal(input, field.lowerBound, n, 0, n.count, true)
            }
            if hit { return true }
        }
        return false
    }

    /// The set-header fields, each unless a later applied rule replaced or deleted it.
    func appendFields(to output: inout [UInt8]) {
        let rules = scratch.headerRules
        for (i, rule) in rules.enumerated() {
            guard case .setHeader(let name, let value) = table.requestRules[rule].action else { continue }
            var superseded = false
            for later in rules[(i + 1)...] {
                let other = self.name(of: later)
                if other.count == name.count && zip(other, name).allSatisfy({ HTTPSyntax.lowercased($0) == HTTPSyntax.lowercased($1) }) {
                    superseded = true
                    break
                }
            }
            if superseded { continue }
            output.append(contentsOf: name)
            HTTPSyntax.append(": ", to: &output)
            output.append(contentsOf: value)
            HTTPSyntax.append("\r\n", to: &output)
        }
    }
}

extension RoutingTable {
    /// The path of a request target: after any scheme and authority, up to the `?`.
    /// nil for a target without one (`*`, or `http://host`).
    static func pathRange(_ bytes: UnsafeRawBufferPointer, _ target: Range<Int>) -> Range<Int>? {
        guard !target.isEmpty else { return nil }
        var start = target.lowerBound
        if bytes[start] != UInt8(ascii: "/") {
            // absolute-form: scheme "://" authority, then the path.
            var i = start
            var found = false
            while i + 2 < target.upperBound {
                if bytes[i] == UInt8(ascii: ":") && bytes[i + 1] == UInt8(ascii: "/") && bytes[i + 2] == UInt8(ascii: "/") {
                    found = true
                    break
                }
                i += 1
            }
            guard found else { return nil }
            i += 3
            while i < target.upperBound && bytes[i] != UInt8(ascii: "/") && bytes[i] != UInt8(ascii: "?") { i += 1 }
            guard i < target.upperBound, bytes[i] == UInt8(ascii: "/") else { return nil }
            start = i
        }
        var end = start
        while end < target.upperBound && bytes[end] != UInt8(ascii: "?") { end += 1 }
        return start..<end
    }

    /// Appends the redirect response of rule `index` (or of `route`) for this request to
    /// `output`: haproxy's status line and fields, an empty body, and `connection: close`.
    func writeRedirect(rule index: Int?, route: CompiledRoute?, bytes: UnsafeRawBufferPointer, head: HTTPHead,
                       pathRange: Range<Int>?, into output: inout [UInt8]) {
        let code: Int
        HTTPSyntax.append("HTTP/1.1 ", to: &output)
        // The path and query as sent (`uri` in haproxy's redirect), from the path on.
        let uri = pathRange.map { $0.lowerBound..<head.target.upperBound }
        if let index, case .redirect(let rule, let value) = requestRules[index].action {
            code = rule.code
            HTTPSyntax.appendDecimal(code, to: &output)
            output.append(UInt8(ascii: " "))
            appendReason(code, to: &output)
            HTTPSyntax.append("\r\ncontent-length: 0\r\nlocation: ", to: &output)
            let relative = uri.map { rule.dropQuery ? ($0.lowerBound..<(pathRange?.upperBound ?? $0.upperBound)) : $0 }
            switch rule.kind {
            case .location:
                output.append(contentsOf: value)
            case .prefix:
                if value != [UInt8(ascii: "/")] { output.append(contentsOf: value) }
                if let relative { HTTPSyntax.append(bytes, relative, to: &output) }
            case .scheme:
                output.append(contentsOf: value)
                HTTPSyntax.append("://", to: &output)
                if let host = head.hostRange { HTTPSyntax.append(bytes, host, to: &output) }
                if let relative { HTTPSyntax.append(bytes, relative, to: &output) }
            }
        } else if let route {
            code = route.redirectStatus
            HTTPSyntax.appendDecimal(code, to: &output)
            output.append(UInt8(ascii: " "))
            appendReason(code, to: &output)
            HTTPSyntax.append("\r\ncontent-length: 0\r\nlocation: ", to: &output)
            // fabio's `$path`: the request's path and query.
            let template = route.redirectLocation
            var i = 0
            while i < template.count {
                if template[i] == UInt8(ascii: "$") && i + 5 <= template.count
                    && template[i + 1] == UInt8(ascii: "p") && template[i + 2] == UInt8(ascii: "a")
                    && template[i + 3] == UInt8(ascii: "t") && template[i + 4] == UInt8(ascii: "h") {
                    if let uri { HTTPSyntax.append(bytes, uri, to: &output) }
                    i += 5
                } else {
                    output.append(template[i])
                    i += 1
                }
            }
        }
        HTTPSyntax.append("\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n", to: &output)
    }

    private func appendReason(_ code: Int, to output: inout [UInt8]) {
        switch code {
        case 301: HTTPSyntax.append("Moved Permanently", to: &output)
        case 302: HTTPSyntax.append("Found", to: &output)
        case 303: HTTPSyntax.append("See Other", to: &output)
        case 307: HTTPSyntax.append("Temporary Redirect", to: &output)
        case 308: HTTPSyntax.append("Permanent Redirect", to: &output)
        default: HTTPSyntax.append("Redirect", to: &output)
        }
    }
}
