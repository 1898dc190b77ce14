// haproxy's active health check of one server, as a pure state machine: events in (time
// passed, connected, a status line, an error), actions out (connect, send, close). No
// sockets and no clock: the shell (HealthCheck.swift) does the I/O and passes `now`, so
// the tests drive it with a manual clock.
//
// The rules follow haproxy 2.6 (src/check.c, src/server.c, configuration.txt):
// - `health` runs from 0 to rise+fall-1. A server is UP while health >= rise. A success
//   adds one, and on reaching rise jumps to rise+fall-1; a failure takes one away, and on
//   falling below rise drops to 0. So an UP server goes DOWN after `fall` failures in a
//   row and a DOWN one comes UP after `rise` successes in a row. A new server starts at
//   health = rise: "up, but will fall down at first failure".
// - The next check starts an interval after the previous one ended: `inter` while health
//   is at its top, `downinter` while DOWN with health 0, `fastinter` in between
//   (srv_getinter()).
// - Without `timeout check`, `inter` bounds the whole check. With it, the connect gets
//   min(`timeout connect`, `inter`) and the reply `timeout check` more once connected.
// - TLS checks (`ssl` or `check-ssl` on the server): the handshake is part of the connect
//   (haproxy waits for CO_FL_WAIT_XPRT, L4 and L6, before its next step), so it shares
//   the connect's deadline. A TCP check passes when the handshake completes (L6OK); a
//   failed handshake is L6RSP, one that runs out of time L6TOUT (chk_report_conn_err()).
// - Slow start: after a server comes back UP its weight grows in haproxy's steps,
//   w = (16 × elapsed + slowstart) / slowstart of 16 (server_recalc_eweight()), recomputed
//   every max(1 s, slowstart / 20) (server_warmup()).

/// One finished check: haproxy's `check_status`, `check_code`, `check_desc` and
/// `check_duration`.
public struct CheckResult: Sendable, Equatable {
    public var status: CheckStatus
    /// The HTTP status of a layer-7 check that got one, else 0.
    public var code: Int
    /// haproxy's "info": an errno's text, or the reason phrase of a wrong status.
    public var info: String
    public var durationMilliseconds: Int

    public init(status: CheckStatus, code: Int = 0, info: String = "", durationMilliseconds: Int) {
        self.status = status
        self.code = code
        self.info = info
        self.durationMilliseconds = durationMilliseconds
    }

    public var passed: Bool { status == .l4ok || status == .l6ok || status == .l7ok }
}


extension HTTPCheckExpect {
    /// Whether `status` passes. nil expect (haproxy's default): any 2xx or 3xx.
    static func passes(_ expect: HTTPCheckExpect?, status: Int) -> Bool {
        switch expect {
        case nil:
            return (200...399).contains(status)
        case .status(let ranges, let negated)?:
            return ranges.contains { $0.contains(status) } != negated
        case .statusRegex(let pattern, let negated)?:
            return StatusRegex.matches(pattern, String(status)) != negated
        }
    }
}

/// haproxy matches `rstatus` with PCRE/POSIX regex against the code's three digits. Swift's
/// Regex is Foundation-free and the pattern is small; a pattern that does not compile
/// never matches (the parser is where a bad pattern should be refused).
enum StatusRegex {
    static func matches(_ pattern: String, _ text: String) -> Bool {
        guard let regex = try? Regex(pattern) else { return false }
        return (try? regex.firstMatch(in: text)) != nil
    }
}

public struct HealthCheckStateMachine: Sendable {
    /// Everything that decides what a check does and when, in loop units (ns).
    public struct Settings: Sendable, Equatable {
        public var interval: Int64
        public var fastInterval: Int64
        public var downInterval: Int64
        public var rise: Int
        public var fall: Int
        /// The backend's `timeout connect`.
        public var connectTimeout: Int64
        /// `timeout check`, nil when not set.
        public var checkTimeout: Int64?
        /// nil: a TCP connect (layer 4). Otherwise what the reply must show.
        public var http: HTTPExpectation?
        /// `slowstart`, nil or 0 for none.
        public var slowStart: Int64?
        /// The connect is followed by a TLS handshake (`ssl`, `check-ssl`).
        public var tls: Bool

        public struct HTTPExpectation: Sendable, Equatable {
            public var expect: HTTPCheckExpect?
            public init(expect: HTTPCheckExpect?) { self.expect = expect }
        }

        public init(interval: Int64, fastInterval: Int64? = nil, downInterval: Int64? = nil, rise: Int, fall: Int,
                    connectTimeout: Int64, checkTimeout: Int64? = nil, http: HTTPExpectation? = nil, slowStart: Int64? = nil,
                    tls: Bool = false) {
            self.interval = interval
            self.fastInterval = fastInterval ?? interval
            self.downInterval = downInterval ?? interval
            self.rise = max(1, rise)
            self.fall = max(1, fall)
            self.connectTimeout = connectTimeout
            self.checkTimeout = checkTimeout
            self.http = http
            self.slowStart = slowStart
            self.tls = tls
        }

        /// From the configuration model: the server's parameters, its backend's check;
        /// `tls` when the server's checks use TLS.
        public init(check: HealthCheckConfig, backend: BackendConfig, slowStart: Duration?, tls: Bool = false) {
            self.init(interval: check.interval.nanoseconds, fastInterval: check.fastInterval?.nanoseconds,
                      downInterval: check.downInterval?.nanoseconds, rise: check.rise, fall: check.fall,
                      connectTimeout: backend.timeouts.connect.nanoseconds,
                      checkTimeout: backend.healthCheck.timeout?.nanoseconds,
                      http: backend.healthCheck.http.map { HTTPExpectation(expect: $0.expect) },
                      slowStart: slowStart?.nanoseconds, tls: tls)
        }
    }

    public enum Phase: Sendable, Equatable {
        /// Waiting for the next check, due at `deadline`.
        case idle
        /// A connect is in progress.
        case connecting
        /// Connected, the TLS handshake in progress (under the connect's deadline).
        case handshaking
        /// Connected, the request sent (or being sent), the status line awaited.
        case awaitingReply
        /// Maintenance: no checks until `resume`.
        case suspended
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Open a socket and start connecting (the shell then reports `connected`,
        /// `connectFailed` or nothing until the deadline).
        case connect
        /// Connected: start the TLS handshake (the shell then reports `handshakeCompleted`,
        /// `handshakeFailed` or nothing until the deadline).
        case startHandshake
        /// Connected (and through TLS, if any): write the HTTP request and read the status line.
        case sendRequest
        /// The check is over: close the socket (if any) and publish the report.
        case finish(Report)
    }

    public enum Transition: Sendable, Equatable { case up, down }

    public struct Report: Sendable, Equatable {
        public var result: CheckResult
        /// Set when this result flipped the server.
        public var transition: Transition?
        /// haproxy counts a failed check (`chkfail`) only while health was above 0.
        public var countedFailure: Bool
    }

    public private(set) var settings: Settings
    public private(set) var health: Int
    public private(set) var isUp = true
    public private(set) var phase: Phase = .idle
    /// When the shell should call `timerFired`: the next check, or the running check's
    /// timeout. 0 while suspended.
    public private(set) var deadline: Int64
    private var startedAt: Int64 = 0
    /// When the server last came UP with slow start pending, else nil.
    public private(set) var rampStartedAt: Int64?

    /// `firstCheck`: when the first check starts (the shell spreads servers over `inter`,
    /// as haproxy's start_checks() does).
    public init(settings: Settings, firstCheck: Int64) {
        self.settings = settings
        self.health = settings.rise
        self.deadline = firstCheck
    }

    /// Replaces the settings (a reload or a discovery update), keeping what was learnt:
    /// health is clamped into the new range with the same UP/DOWN side.
    public mutating func update(_ new: Settings) {
        settings = new
        let top = new.rise + new.fall - 1
        if isUp {
            health = min(max(health, new.rise), top)
        } else {
            health = min(health, new.rise - 1)
        }
    }

    /// The deadline passed: start a check, or end the running one as timed out.
    public mutating func timerFired(now: Int64) -> Action {
        guard now >= deadline else { return .none }
        switch phase {
        case .suspended:
            return .none
        case .idle:
            startedAt = now
            phase = .connecting
            // haproxy's tcpcheck_eval_connect(): `inter`, or with `timeout check` also no
            // later than `timeout connect`.
            var limit = settings.interval
            if settings.checkTimeout != nil { limit = min(limit, settings.connectTimeout) }
            deadline = now + limit
            return .connect
        case .connecting:
            return .finish(finish(.init(status: .l4timeout, durationMilliseconds: elapsed(now)), now: now))
        case .handshaking:
            return .finish(finish(.init(status: .l6timeout, durationMilliseconds: elapsed(now)), now: now))
        case .awaitingReply:
            return .finish(finish(.init(status: .l7timeout, durationMilliseconds: elapsed(now)), now: now))
        }
    }

    /// The connect succeeded (possibly at once).
    public mutating func connected(now: Int64) -> Action {
        guard phase == .connecting else { return .none }
        if settings.tls {
            phase = .handshaking
            return .startHandshake
        }
        return established(.l4ok, now: now)
    }

    /// The TLS handshake completed: a TCP check has passed at layer 6, an HTTP one sends
    /// its request through TLS.
    public mutating func handshakeCompleted(now: Int64) -> Action {
        guard phase == .handshaking else { return .none }
        return established(.l6ok, now: now)
    }

    /// Why a handshake failed, as haproxy words it (conn_err_code_str()).
    public enum HandshakeFailure: Sendable, Equatable {
        /// Not TLS, a certificate that does not verify, a reset, a close.
        case failed
        /// Under `verify required`, the certificate does not name the `check-sni` name.
        case nameMismatch

        var info: String {
            switch self {
            case .failed: "SSL handshake failure"
            case .nameMismatch: "Server presented an SSL certificate different from the expected one"
            }
        }
    }

    /// The TLS handshake failed (haproxy's L6RSP).
    public mutating func handshakeFailed(_ failure: HandshakeFailure, now: Int64) -> Action {
        guard phase == .handshaking else { return .none }
        return .finish(finish(.init(status: .l6response, info: failure.info, durationMilliseconds: elapsed(now)), now: now))
    }

    /// The connection is ready for the check's data: `passed` ends a TCP check; an HTTP
    /// check gets `timeout check` (if set) from here for its reply.
    private mutating func established(_ passed: CheckStatus, now: Int64) -> Action {
        guard settings.http != nil else {
            return .finish(finish(.init(status: passed, durationMilliseconds: elapsed(now)), now: now))
        }
        phase = .awaitingReply
        if let checkTimeout = settings.checkTimeout { deadline = now + checkTimeout }
        return .sendRequest
    }

    /// The connect failed: refused, unreachable (`info` is the errno's text).
    public mutating func connectFailed(_ info: String, now: Int64) -> Action {
        guard phase == .connecting else { return .none }
        return .finish(finish(.init(status: .l4connection, info: info, durationMilliseconds: elapsed(now)), now: now))
    }

    /// No socket could be made, or the connection broke after it was established
    /// (haproxy's SOCKERR).
    public mutating func socketError(_ info: String, now: Int64) -> Action {
        guard phase == .connecting || phase == .handshaking || phase == .awaitingReply else { return .none }
        return .finish(finish(.init(status: .socketError, info: info, durationMilliseconds: elapsed(now)), now: now))
    }

    /// A complete response head arrived.
    public mutating func response(status: Int, reason: String, now: Int64) -> Action {
        guard phase == .awaitingReply, let http = settings.http else { return .none }
        let ok = HTTPCheckExpect.passes(http.expect, status: status)
        // haproxy logs the reason phrase as info only for a failure.
        let result = CheckResult(status: ok ? .l7ok : .l7status, code: status, info: ok ? "" : reason,
                                 durationMilliseconds: elapsed(now))
        return .finish(finish(result, now: now))
    }

    /// The reply was not HTTP, or the server closed before a whole head.
    public mutating func invalidResponse(now: Int64) -> Action {
        guard phase == .awaitingReply else { return .none }
        return .finish(finish(.init(status: .l7response, durationMilliseconds: elapsed(now)), now: now))
    }

    /// Maintenance: stop checking. A running check is abandoned (the shell closes it).
    public mutating func suspend() {
        phase = .suspended
        deadline = 0
        rampStartedAt = nil
    }

    /// Out of maintenance: haproxy's srv_clr_admin_flag() sets health to rise ("start OK
    /// but check immediately"), and the server ramps up again if it has slow start.
    public mutating func resume(now: Int64) {
        guard phase == .suspended else { return }
        phase = .idle
        health = settings.rise
        isUp = true
        deadline = now
        if let slowStart = settings.slowStart, slowStart > 0 { rampStartedAt = now }
    }

    private func elapsed(_ now: Int64) -> Int { Int(max(0, now - startedAt) / 1_000_000) }

    /// haproxy's set_server_check_status() and check_notify_success/failure().
    private mutating func finish(_ result: CheckResult, now: Int64) -> Report {
        let top = settings.rise + settings.fall - 1
        var transition: Transition?
        var counted = false
        if result.passed {
            if health < top {
                health += 1
                if health >= settings.rise { health = top }
            }
            if !isUp && health >= settings.rise {
                isUp = true
                transition = .up
                if let slowStart = settings.slowStart, slowStart > 0 { rampStartedAt = now }
            }
        } else {
            if health > 0 {
                counted = true
                health -= 1
                if health < settings.rise { health = 0 }
            }
            if isUp && health == 0 {
                isUp = false
                transition = .down
                rampStartedAt = nil
            }
        }
        phase = .idle
        deadline = now + nextInterval
        return Report(result: result, transition: transition, countedFailure: counted)
    }

    /// srv_getinter().
    public var nextInterval: Int64 {
        if health == settings.rise + settings.fall - 1 { return settings.interval }
        if !isUp && health == 0 { return settings.downInterval }
        return settings.fastInterval
    }

    // MARK: slow start

    /// haproxy's weight step while ramping, 1...16 of BE_WEIGHT_SCALE (16); nil when not
    /// ramping (full weight).
    public func rampStep(now: Int64) -> Int? {
        guard let started = rampStartedAt, let slowStart = settings.slowStart, slowStart > 0 else { return nil }
        let elapsed = max(0, now - started)
        if elapsed >= slowStart { return nil }
        // haproxy computes this on whole seconds; ns give the same steps, on time.
        return Int(min(16, (16 * elapsed + slowStart) / slowStart))
    }

    /// The share of its weight the server gets now, in per mille, for
    /// `ServerHealth.rampPerMille`: haproxy's step rounded up to per mille, so that
    /// `weight × perMille / 1000` is haproxy's ceil(weight × step / 16) for weights up to 256
    /// to within one.
    public func rampPerMille(now: Int64) -> Int {
        guard let step = rampStep(now: now) else { return 1000 }
        return (step * 1000 + 15) / 16
    }

    /// When to recompute the ramp next (server_warmup(): every max(1 s, slowstart / 20)),
    /// or nil when the ramp is over. Clears the ramp once it reached full weight.
    public mutating func nextRampUpdate(now: Int64) -> Int64? {
        guard let slowStart = settings.slowStart, rampStartedAt != nil else { return nil }
        if rampStep(now: now) == nil {
            rampStartedAt = nil
            return nil
        }
        return now + max(1_000_000_000, slowStart / 20)
    }
}

/// The log lines haproxy writes when a server changes state (srv_update_status() with
/// srv_append_status()), word for word.
public enum HealthCheckLog {
    /// `Server web/s1 is DOWN, reason: Layer7 wrong status, code: 500, info: "Internal
    /// Server Error", check duration: 1ms. 0 active and 0 backup servers left. 0 sessions
    /// active, 0 requeued, 0 remaining in queue.`
    public static func transition(_ transition: HealthCheckStateMachine.Transition, backend: String, server: String,
                                  isBackup: Bool, result: CheckResult, activeServers: Int, backupServers: Int,
                                  sessions: Int) -> String {
        var line = "\(isBackup ? "Backup " : "")Server \(backend)/\(server) is \(transition == .up ? "UP" : "DOWN")"
        line += ", reason: \(result.status.description)"
        if result.status.hasCode { line += ", code: \(result.code)" }
        if !result.info.isEmpty { line += ", info: \"\(asciiEncoded(result.info))\"" }
        line += ", check duration: \(result.durationMilliseconds)ms"
        let onBackup = backupServers > 0 && activeServers == 0 ? " Running on backup." : ""
        switch transition {
        case .down:
            line += ". \(activeServers) active and \(backupServers) backup servers left.\(onBackup) \(sessions) sessions active, 0 requeued, 0 remaining in queue."
        case .up:
            line += ". \(activeServers) active and \(backupServers) backup servers online.\(onBackup) 0 sessions requeued, 0 total in queue."
        }
        return line
    }

    /// set_backend_down(): the last server of a backend went DOWN.
    public static func noServerAvailable(backend: String) -> String {
        "backend \(backend) has no server available!"
    }

    /// chunk_asciiencode(): `"` and bytes outside printable ASCII become `<XX>`.
    static func asciiEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte < 0x20 || byte >= 0x7F || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "<") || byte == UInt8(ascii: ">") {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "<" + (hex.count == 1 ? "0" + hex : hex) + ">"
            } else {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            }
        }
        return out
    }
}
