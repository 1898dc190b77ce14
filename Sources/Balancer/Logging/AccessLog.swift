// The access-log lines of both modes, in haproxy's formats, written by one formatter so
// that the parts they share (client, date, frontend, backend/server, the connection
// counters) cannot drift between TCP and HTTP. Bytes go straight into the loop's
// LogBuffer: no String, no allocation per line.

/// What a session knows of itself when it logs.
struct AccessLogContext {
    var peer: SocketAddress
    var wallMilliseconds: Int64
    var frontend: FrontendRuntime
    var backend: BackendCounters
    var server: Server?
    var termination: TerminationState
    /// haproxy's %rc: connection attempts beyond the first.
    var retries: Int
}

enum AccessLog {
    /// haproxy's tcplog: `%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq`
    static func tcp(_ c: AccessLogContext, connectMilliseconds: Int, totalMilliseconds: Int, bytes: Int,
                    active: Int, into log: LogBuffer) {
        prefix(c, into: log)
        log.append(" 0/" as StaticString)
        log.append(connectMilliseconds)
        log.append(UInt8(ascii: "/"))
        log.append(totalMilliseconds)
        log.append(UInt8(ascii: " "))
        log.append(bytes)
        log.append(UInt8(ascii: " "))
        log.append(c.termination.cause)
        log.append(c.termination.phase)
        log.append(UInt8(ascii: " "))
        counters(c, active: active, into: log)
        log.append(" 0/0" as StaticString)
        log.endLine()
    }

    /// Timings of one HTTP exchange, in ms, -1 where a step did not happen.
    struct HTTPTimings {
        var request: Int     // %TR
        var connect: Int     // %Tc
        var response: Int    // %Tr
        var total: Int       // %Ta
    }

    /// haproxy's httplog: `%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS
    /// %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r`
    static func http(_ c: AccessLogContext, timings t: HTTPTimings, status: Int, bytes: Int, active: Int,
                     requestLine: [UInt8], into log: LogBuffer) {
        prefix(c, into: log)
        log.append(UInt8(ascii: " "))
        log.append(t.request)
        log.append("/0/" as StaticString)
        log.append(t.connect)
        log.append(UInt8(ascii: "/"))
        log.append(t.response)
        log.append(UInt8(ascii: "/"))
        log.append(t.total)
        log.append(UInt8(ascii: " "))
        log.append(status == 0 ? -1 : status)
        log.append(UInt8(ascii: " "))
        log.append(bytes)
        log.append(" - - " as StaticString)
        log.append(c.termination.cause)
        log.append(c.termination.phase)
        log.append("-- " as StaticString)
        counters(c, active: active, into: log)
        log.append(" 0/0 \"" as StaticString)
        log.append(requestLine)
        log.append(UInt8(ascii: "\""))
        log.endLine()
    }

    /// `%ci:%cp [date] %ft %b/%s`
    private static func prefix(_ c: AccessLogContext, into log: LogBuffer) {
        log.append(c.peer)
        log.append(UInt8(ascii: " "))
        log.appendDate(wallMilliseconds: c.wallMilliseconds)
        log.append(UInt8(ascii: " "))
        log.append(c.frontend.nameBytes)
        log.append(UInt8(ascii: " "))
        log.append(c.backend.nameBytes)
        log.append(UInt8(ascii: "/"))
        if let server = c.server { log.append(server.nameBytes) } else { log.append("<NOSRV>" as StaticString) }
    }

    /// `%ac/%fc/%bc/%sc/%rc`: counters as they are when the line is written, the logged
    /// session included (haproxy logs before it lets go of its connections).
    private static func counters(_ c: AccessLogContext, active: Int, into log: LogBuffer) {
        log.append(active)
        log.append(UInt8(ascii: "/"))
        log.append(c.frontend.counters.current.load(ordering: .relaxed))
        log.append(UInt8(ascii: "/"))
        log.append(c.backend.current.load(ordering: .relaxed))
        log.append(UInt8(ascii: "/"))
        log.append(c.server?.health.current.load(ordering: .relaxed) ?? 0)
        log.append(UInt8(ascii: "/"))
        log.append(c.retries)
    }
}
