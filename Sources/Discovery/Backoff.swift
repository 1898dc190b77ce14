// Retry pacing for sources: exponential backoff with full jitter, capped, reset by the
// first success (consul-template's retry policy).
import Balancer

public struct Backoff: Sendable {
    public var base: Duration
    public var cap: Duration
    public private(set) var failures = 0

    public init(base: Duration = .milliseconds(100), cap: Duration = .seconds(5)) {
        self.base = base
        self.cap = cap
    }

    /// The wait before the next attempt after one more failure. Jitter spreads retries of
    /// many balancerd instances so they do not hit a recovering server in step.
    public mutating func nextDelay<G: RandomNumberGenerator>(using generator: inout G) -> Duration {
        failures += 1
        let exponent = min(failures - 1, 30)
        let ceiling = min(base * (1 << exponent), cap)
        let ns = max(ceiling.nanoseconds, 1)
        let jittered = Int64.random(in: (ns / 2)...ns, using: &generator)
        return .nanoseconds(jittered)
    }

    public mutating func nextDelay() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return nextDelay(using: &generator)
    }

    public mutating func succeeded() { failures = 0 }
}
