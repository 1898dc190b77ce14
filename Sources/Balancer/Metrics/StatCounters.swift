// haproxy's cumulative statistics of one frontend, backend or server, kept per event loop
// and merged when read (haproxy's per-thread counters, "shared" only at dump time).
//
// A loop adds to its own slot only, so counting a request takes no lock and no locked
// instruction, and two loops never write the same cache line. Whoever reads (the stats
// page, the Runtime API, /metrics) sums the slots.
import CBalancerShims

/// The counters balancerd keeps, named after haproxy's stat fields (`show stat` columns).
public enum StatField: Int, CaseIterable, Sendable {
    /// `bin`: bytes received from clients.
    case bytesIn
    /// `bout`: bytes sent to clients.
    case bytesOut
    /// `req_tot`: HTTP requests (received by a frontend, forwarded by a backend or server).
    case httpRequests
    /// `hrsp_1xx` … `hrsp_5xx`, `hrsp_other`: HTTP responses by class.
    case responses1xx, responses2xx, responses3xx, responses4xx, responses5xx, responsesOther
    /// `ereq`: requests that were malformed, or timed out or aborted before complete.
    case requestErrors
    /// `econ`: connection attempts to a server that failed.
    case connectionErrors
    /// `eresp`: responses that failed (the server closed, reset or timed out mid-response).
    case responseErrors
    /// `wretr`: connection attempts retried.
    case retries
    /// `wredis`: retries that went to another server.
    case redispatches
    /// `cli_abrt`, `srv_abrt`: transfers aborted by the client, by the server.
    case clientAborts, serverAborts
    /// `dreq`: requests denied (by rules, or because the proxy is stopping).
    case deniedRequests

    /// The response class counter for `status` (hrsp_*).
    @inline(__always)
    public static func responses(status: Int) -> StatField {
        switch status {
        case 100..<200: .responses1xx
        case 200..<300: .responses2xx
        case 300..<400: .responses3xx
        case 400..<500: .responses4xx
        case 500..<600: .responses5xx
        default: .responsesOther
        }
    }
}

/// The times haproxy averages over the last connections (`qtime`, `ctime`, `rtime`,
/// `ttime`), in milliseconds.
public enum StatTime: Int, CaseIterable, Sendable {
    case queue, connect, response, total
}

public final class StatCounters: @unchecked Sendable {
    /// haproxy's TIME_STATS_SAMPLES: the averages cover about the last 512 samples.
    public static let timeWindow: UInt64 = 512

    private let loops: Int
    /// Slots per loop: the counters, then a (sum, samples) pair per time, rounded up to a
    /// whole number of cache lines.
    private let stride: Int
    private let storage: UnsafeMutablePointer<UInt64>
    private static let timeBase = StatField.allCases.count

    public init(loops: Int) {
        self.loops = max(1, loops)
        let used = Self.timeBase + 2 * StatTime.allCases.count
        stride = (used + 7) / 8 * 8
        storage = .allocate(capacity: stride * self.loops)
        storage.initialize(repeating: 0, count: stride * self.loops)
    }

    deinit {
        storage.deallocate()
    }

    /// Adds to this loop's count. Loop `loop`'s thread only.
    @inline(__always)
    public func add(_ field: StatField, _ amount: Int = 1, loop: Int) {
        let slot = storage + loop * stride + field.rawValue
        cbs_counter_store(slot, cbs_counter_load(slot) &+ UInt64(truncatingIfNeeded: amount))
    }

    /// Adds one sample to a sliding average: haproxy's swrate_add_dynamic, whose window
    /// grows with the first samples so that early averages are not diluted by zeros.
    /// Loop `loop`'s thread only.
    @inline(__always)
    public func record(_ time: StatTime, milliseconds: Int, loop: Int) {
        let base = storage + loop * stride + Self.timeBase + 2 * time.rawValue
        let samples = cbs_counter_load(base + 1) &+ 1
        let window = min(samples, Self.timeWindow)
        let sum = cbs_counter_load(base)
        let value = UInt64(max(0, milliseconds))
        cbs_counter_store(base, sum &+ value &- (sum &+ window &- 1) / window)
        cbs_counter_store(base + 1, samples)
    }

    /// The sum over every loop.
    public func value(_ field: StatField) -> UInt64 {
        var total: UInt64 = 0
        for loop in 0..<loops { total &+= cbs_counter_load(storage + loop * stride + field.rawValue) }
        return total
    }

    /// The average of `time` over the recent samples of every loop, weighted by how many
    /// samples each loop's window holds; 0 before the first.
    public func average(_ time: StatTime) -> UInt64 {
        var weighted: UInt64 = 0
        var samples: UInt64 = 0
        for loop in 0..<loops {
            let base = storage + loop * stride + Self.timeBase + 2 * time.rawValue
            let window = min(cbs_counter_load(base + 1), Self.timeWindow)
            guard window > 0 else { continue }
            let average = (cbs_counter_load(base) + window - 1) / window
            weighted &+= average &* window
            samples &+= window
        }
        return samples == 0 ? 0 : weighted / samples
    }
}
