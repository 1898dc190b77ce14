// haproxy's `balance roundrobin`: weighted, with the turns of a heavy server spread out.
//
// The schedule is computed once per table with nginx's smooth weighted round robin
// (each step adds every weight to a running score, picks the highest, subtracts the
// total from it). For weights 1:3 that yields b a b b; for 2:3:5 c b a c c b c a b c.
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
        let reduced = active.map { weights[$0] / divisor }
        let total = reduced.reduce(0, +)
        var score = [Int](repeating: 0, count: reduced.count)
        var order: [Int32] = []
        order.reserveCapacity(total)
        for _ in 0..<total {
            var best = 0
            for i in reduced.indices {
                score[i] += reduced[i]
                if score[i] > score[best] { best = i }
            }
            score[best] -= total
            order.append(Int32(active[best]))
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
