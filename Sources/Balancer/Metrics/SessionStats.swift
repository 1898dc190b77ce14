// What a session adds to the statistics of its frontend, backend and server, in one place
// for TCP and HTTP (as AccessLog is for the log line), so that the two modes count the
// same way. Everything goes to the counting loop's own slots (StatCounters).

/// One finished HTTP exchange or TCP session, as the statistics see it.
struct SessionRecord {
    var frontend: FrontendRuntime
    var backend: BackendCounters
    /// The server that carried it, if one was connected.
    var server: Server?
    /// HTTP mode: the status sent to the client (0 if none was); nil in TCP mode.
    var status: Int?
    var bytesIn: Int
    var bytesOut: Int
    /// Milliseconds, -1 where the step did not happen (as in the log line).
    var connectMilliseconds: Int
    var responseMilliseconds: Int
    var totalMilliseconds: Int
    var termination: TerminationState
}

enum SessionStats {
    private static let byClient = UInt8(ascii: "C"), clientTimeout = UInt8(ascii: "c")
    private static let byServer = UInt8(ascii: "S"), serverTimeout = UInt8(ascii: "s")
    private static let byProxy = UInt8(ascii: "P")
    private static let requestPhase = UInt8(ascii: "R"), headersPhase = UInt8(ascii: "H")
    private static let dataPhase = UInt8(ascii: "D")

    /// A connection attempt to `server` failed (refused, reset, or timed out): haproxy's
    /// `econ`, and the passive hold-down of the server.
    @inline(__always)
    static func connectFailed(_ server: Server, backend: BackendCounters, loop: EventLoop) {
        server.health.recordConnectFailure(now: loop.now)
        server.health.stats.add(.connectionErrors, loop: loop.index)
        backend.stats.add(.connectionErrors, loop: loop.index)
    }

    /// Attempt number `attempt` is about to go to `next`; `previous` took the one before.
    /// haproxy counts a retry (`wretr`) on the server that failed, and a redispatch
    /// (`wredis`) when the retry goes elsewhere.
    @inline(__always)
    static func attempting(_ attempt: Int, next: Server, previous: Server?, backend: BackendCounters, loop: EventLoop) {
        guard attempt > 1, let previous else { return }
        previous.health.stats.add(.retries, loop: loop.index)
        backend.stats.add(.retries, loop: loop.index)
        if previous !== next {
            previous.health.stats.add(.redispatches, loop: loop.index)
            backend.stats.add(.redispatches, loop: loop.index)
        }
    }

    static func ended(_ r: SessionRecord, loop: EventLoop) {
        let index = loop.index
        let front = r.frontend.counters.stats, back = r.backend.stats, server = r.server?.health.stats
        front.add(.bytesIn, r.bytesIn, loop: index)
        front.add(.bytesOut, r.bytesOut, loop: index)
        back.add(.bytesIn, r.bytesIn, loop: index)
        back.add(.bytesOut, r.bytesOut, loop: index)
        server?.add(.bytesIn, r.bytesIn, loop: index)
        server?.add(.bytesOut, r.bytesOut, loop: index)

        if let status = r.status {
            front.add(.httpRequests, loop: index)
            if status > 0 { front.add(StatField.responses(status: status), loop: index) }
            // A backend counts the requests it was given; its server those that reached it.
            back.add(.httpRequests, loop: index)
            if status > 0 { back.add(StatField.responses(status: status), loop: index) }
            if r.connectMilliseconds >= 0, let server {
                server.add(.httpRequests, loop: index)
                if status > 0 { server.add(StatField.responses(status: status), loop: index) }
            }
        }

        if r.connectMilliseconds >= 0 {
            back.record(.queue, milliseconds: 0, loop: index)
            back.record(.connect, milliseconds: r.connectMilliseconds, loop: index)
            server?.record(.queue, milliseconds: 0, loop: index)
            server?.record(.connect, milliseconds: r.connectMilliseconds, loop: index)
            if r.responseMilliseconds >= 0 {
                back.record(.response, milliseconds: r.responseMilliseconds, loop: index)
                server?.record(.response, milliseconds: r.responseMilliseconds, loop: index)
            }
            back.record(.total, milliseconds: r.totalMilliseconds, loop: index)
            server?.record(.total, milliseconds: r.totalMilliseconds, loop: index)
        }

        // The termination state says who ended it, and when (haproxy's session flags).
        let cause = r.termination.cause, phase = r.termination.phase
        if phase == requestPhase && (cause == byClient || cause == clientTimeout || cause == byProxy) {
            front.add(.requestErrors, loop: index)
        }
        if (cause == byServer || cause == serverTimeout) && (phase == headersPhase || phase == dataPhase) {
            back.add(.responseErrors, loop: index)
            server?.add(.responseErrors, loop: index)
        }
        if phase == dataPhase {
            if cause == byClient || cause == clientTimeout {
                back.add(.clientAborts, loop: index)
                server?.add(.clientAborts, loop: index)
            } else if cause == byServer || cause == serverTimeout {
                back.add(.serverAborts, loop: index)
                server?.add(.serverAborts, loop: index)
            }
        }
    }
}
