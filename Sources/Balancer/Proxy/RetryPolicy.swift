// haproxy's `retries` and `option redispatch`, in one place for both modes, so that TCP
// and HTTP cannot disagree again on where a failed attempt goes next.
//
// haproxy's rule (configuration manual, "retries" and "option redispatch"): a connection
// attempt that fails is retried up to `retries` more times; without redispatch every
// retry goes to the same server, with it the next attempt may go to another one.

public struct RetryPolicy: Sendable, Equatable {
    public enum Next: Sendable, Equatable {
        /// Ask the balancer for a server, avoiding `avoiding` (the one that just failed).
        case anotherServer(avoiding: Int)
        /// Connect to the same server again.
        case sameServer(Int)
        /// Retries are spent.
        case giveUp
    }

    public let retries: Int
    public let redispatch: Bool

    public init(retries: Int, redispatch: Bool) {
        self.retries = max(0, retries)
        self.redispatch = redispatch
    }

    /// Attempt number `attempt` (counted from 1) on `server` failed before the server saw
    /// anything of the request.
    public func afterFailure(attempt: Int, server: Int) -> Next {
        guard attempt <= retries else { return .giveUp }
        return redispatch ? .anotherServer(avoiding: server) : .sameServer(server)
    }
}
