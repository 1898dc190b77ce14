// haproxy's `balance roundrobin`: weighted, with the turns of a heavy server spread out.
//
// The schedule is computed once per table. Servers are placed heaviest first, each at
// evenly spaced positions among the slots still free: for weights 2:3:5 that gives
// c b c b c a c b c a, where c (half of the turns) never comes twice in a row, as with
// haproxy's fwrr. (Smooth weighted round robin, nginx's algorithm, was tried first and
// lost that comparison: it yields c b a c b c c a b c for 2:3:5. The parity test against
// real haproxy measures this.) For 1:3 the result is b b b a, the same bunching as haproxy.
// A pick is then one atomic increment and an array load (pingora's approach), with no
// lock and no per-pick arithmetic over the servers.
import Synchronization

public enum WeightedRoundRobin {
    /// The interleaved order of `weights` (indices into it), one full cycle. Weight 0
    /// servers never appear. Weights are divided by their GCD first so 100:200 costs
    /// 3 entries, not 300.
    public static func schedule(weights: [Int]) -> [Int32] {
        let active = weights.indices.filter { weights[$0] > 0 }
        guard !active.isEmpty else { return [] }
        let divisor = active.map { weights[$0] }.reduce(0, gcd)
        let total = active.reduce(0) { $0 + weights[$1] / divisor }
        // Heaviest first; equal weights keep their configuration order, so equal weights
        // rotate s1, s2, s3 as written.
        let byWeight = active.enumerated().sorted { lhs, rhs in
            weights[lhs.element] != weights[rhs.element] ? weights[lhs.element] > weights[rhs.element] : lhs.offset < rhs.offset
        }.map(\.element)
        var order = [Int32](repeating: -1, count: total)
        var free = Array(0..<total)
        for server in byWeight {
            let turns = weights[server] / divisor
            let room = free.count   // >= turns: the heavier ones took the rest
            var taken = [Bool](repeating: false, count: room)
            for k in 0..<turns {
                let slot = k * room / turns   // evenly spaced among the free slots
                order[free[slot]] = Int32(server)
                taken[slot] = true
            }
            free = free.indices.filter { !taken[$0] }.map { free[$0] }
        }
        return order
    }

    private static func gcd(_ a: Int, _ b: Int) -> Int {
        var (a, b) = (a, b)
        while b != 0 { (a, b) = (b, a % b) }
        return a
    }
}

/// Picks servers from a precomputed schedule. Shared by all loops: the cursor is the
/// only mutable state, an atomic, so the rotation is global across threads (sequential
/// clients see s1, s2, s3 whichever thread accepted them).
public final class RoundRobinSelector: Sendable {
    public let order: [Int32]
    private let cursor = Atomic<UInt>(0)

    public init(order: [Int32]) {
        self.order = order
    }

    /// A pick, and whether it is the kind the caller prefers.
    public struct Candidate {
        public var index: Int
        /// The server passed `preferred` and is not the one to avoid.
        public var exact: Bool
    }

    /// Walks the schedule once from the next position. Returns the first server that
    /// passes `preferred` and is not `avoiding` (the server that just failed, haproxy's
    /// `srvtoavoid`). Failing that, the best fallback seen: a preferred server that is
    /// the avoided one, then one that only passes `acceptable`. Nil when none passes
    /// `acceptable`. One walk per pick means one cursor step per pick, whatever the
    /// caller's fallbacks.
    @inline(__always)
    public func next(avoiding: Int?, preferred: (Int) -> Bool, acceptable: (Int) -> Bool) -> Candidate? {
        let count = order.count
        guard count > 0 else { return nil }
        let start = cursor.wrappingAdd(1, ordering: .relaxed).oldValue
        var fallback: Int?
        var fallbackRank = Int.max
        for step in 0..<count {
            let index = Int(order[Int((start &+ UInt(step)) % UInt(count))])
            let rank: Int
            if preferred(index) {
                if index != avoiding {
                    // Skipped entries belong to unusable servers: move the cursor past
                    // them so the next pick does not land on the same survivor again.
                    if step > 0 { cursor.wrappingAdd(UInt(step), ordering: .relaxed) }
                    return Candidate(index: index, exact: true)
                }
                rank = 0
            } else if acceptable(index) {
                rank = index == avoiding ? 2 : 1
            } else {
                continue
            }
            if rank < fallbackRank {
                fallback = index
                fallbackRank = rank
            }
        }
        return fallback.map { Candidate(index: $0, exact: false) }
    }
}
