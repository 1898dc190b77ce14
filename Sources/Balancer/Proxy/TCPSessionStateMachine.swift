// The decisions of one TCP-mode session, as a value type with no I/O (hummingbird's
// connection state handler pattern): the shell in TCPSession.swift reports what
// happened, and gets back what to do. That keeps retry, redispatch, half-close and
// termination logic testable without sockets.

/// haproxy's two-letter termination state (`%ts`): who ended the session, in which phase.
public struct TerminationState: Equatable, Sendable, CustomStringConvertible {
    /// First letter: C client abort, S server abort or refusal, c client timeout,
    /// s server timeout, P proxy-side problem, K killed at shutdown, - normal.
    public var cause: UInt8
    /// Second letter: C waiting for the connection to the server, D data phase, - normal.
    public var phase: UInt8

    public static let normal = TerminationState(cause: UInt8(ascii: "-"), phase: UInt8(ascii: "-"))

    public var description: String { String(decoding: [cause, phase], as: UTF8.self) }

    static func make(_ cause: Character, _ phase: Character) -> TerminationState {
        TerminationState(cause: cause.asciiValue!, phase: phase.asciiValue!)
    }
}

public struct TCPSessionStateMachine: Sendable {
    public enum Side: Sendable, Equatable { case client, server }

    public enum State: Sendable, Equatable {
        /// Connecting to a server; `attempt` counts from 1. For an `ssl` server this
        /// includes the TLS handshake (haproxy counts it so): its failure is a failed
        /// connect and `timeout connect` bounds it, so it needs no state of its own.
        case connecting(server: Int, attempt: Int)
        case established(server: Int)
        case closed(TerminationState)
    }

    public enum Action: Sendable, Equatable {
        /// Open a connection to the server the selector hands out, avoiding `avoiding`.
        case connect(avoiding: Int?)
        /// Connect again to the same server (no redispatch).
        case reconnectSame(server: Int)
        /// Start moving bytes both ways.
        case startRelaying
        /// The source of one direction reached EOF and everything read was delivered:
        /// send FIN to the other side (half-close), keep the other direction going.
        case shutdownWrite(Side)
        /// Close both sockets; the session is over.
        case close(TerminationState)
        /// Close both sockets with RST, because one side failed.
        case abort(TerminationState)
        case none
    }

    public private(set) var state: State
    public let retry: RetryPolicy
    public var retries: Int { retry.retries }
    public var redispatch: Bool { retry.redispatch }
    /// Set once a direction's source reached EOF and its FIN was passed on.
    public private(set) var clientFinished = false
    public private(set) var serverFinished = false

    /// A new session starts by asking for a server.
    public init(retries: Int, redispatch: Bool) {
        self.retry = RetryPolicy(retries: retries, redispatch: redispatch)
        self.state = .connecting(server: -1, attempt: 0)
    }

    public var attempts: Int {
        switch state {
        case .connecting(_, let attempt): attempt
        default: 0
        }
    }

    /// The first action of a session.
    public mutating func start() -> Action { .connect(avoiding: nil) }

    /// The selector handed out `server` and the shell started connecting to it.
    public mutating func connecting(to server: Int) {
        guard case .connecting(_, let attempt) = state else { return }
        state = .connecting(server: server, attempt: attempt + 1)
    }

    /// No server is usable at all.
    public mutating func noServer() -> Action {
        close(.make("S", "C"), abort: false)
    }

    /// The connection to the server was refused, unreachable, or `timedOut`.
    /// Retries go to the next server with redispatch, else to the same one, until
    /// `retries` extra attempts were spent.
    public mutating func connectFailed(timedOut: Bool) -> Action {
        guard case .connecting(let server, let attempt) = state else { return .none }
        switch retry.afterFailure(attempt: attempt, server: server) {
        case .anotherServer(let avoiding): return .connect(avoiding: avoiding)
        case .sameServer(let index): return .reconnectSame(server: index)
        case .giveUp: return close(timedOut ? .make("s", "C") : .make("S", "C"), abort: false)
        }
    }

    public mutating func connected() -> Action {
        guard case .connecting(let server, _) = state else { return .none }
        state = .established(server: server)
        return .startRelaying
    }

    /// The client went away (reset, or hung up) before a server connection existed.
    public mutating func clientAbortedWhileConnecting() -> Action {
        close(.make("C", "C"), abort: true)
    }

    /// Direction from `side` reached EOF and the pending bytes were delivered.
    public mutating func sourceFinished(_ side: Side) -> Action {
        guard case .established = state else { return .none }
        switch side {
        case .client: clientFinished = true
        case .server: serverFinished = true
        }
        if clientFinished && serverFinished { return close(.normal, abort: false) }
        return .shutdownWrite(side == .client ? .server : .client)
    }

    /// Reading from or writing to `side` failed (reset, broken pipe).
    public mutating func ioFailed(_ side: Side) -> Action {
        let phase: Character = { if case .established = state { "D" } else { "C" } }()
        return close(.make(side == .client ? "C" : "S", phase), abort: true)
    }

    /// No activity on `side` within its timeout.
    public mutating func timedOut(_ side: Side) -> Action {
        if case .connecting = state { return connectFailed(timedOut: true) }
        return close(.make(side == .client ? "c" : "s", "D"), abort: true)
    }

    /// The process is stopping and the grace period is over.
    public mutating func killed() -> Action {
        let phase: Character = { if case .established = state { "D" } else { "C" } }()
        return close(.make("K", phase), abort: true)
    }

    private mutating func close(_ termination: TerminationState, abort: Bool) -> Action {
        if case .closed = state { return .none }
        state = .closed(termination)
        return abort ? .abort(termination) : .close(termination)
    }
}
