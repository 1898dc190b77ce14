// maxconn when the configuration does not set it: derived from the open-file limit, as
// haproxy does (compute_ideal_maxconn), so a default machine never starts with a warning
// about descriptors it cannot have.
import CBalancerShims
import Glibc

public enum MaxConnections {
    /// Descriptors kept aside for listeners, the loops' epoll and event descriptors, the
    /// stats listener, the Runtime API socket, checks and discovery connections.
    public static let reserved = 256

    /// Descriptors one client connection may hold: its socket and its server's. The
    /// splice pipes are extra and optional: when they run out a connection copies
    /// through buffers instead (see Relay), so they are not counted against maxconn.
    public static let perConnection = 2

    /// The descriptors `maxconn` connections need.
    public static func descriptors(for maxconn: Int) -> Int {
        maxconn * perConnection + reserved
    }

    /// maxconn for the current soft open-file limit (raise it first).
    public static func derived() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 100 }
        return derived(openFileLimit: Int(clamping: limit.rlim_cur))
    }

    /// haproxy rounds the result down to two significant digits (round_2dig).
    public static func derived(openFileLimit: Int) -> Int {
        let raw = max(1, (openFileLimit - reserved) / perConnection)
        var scale = 1
        while raw / scale >= 100 { scale *= 10 }
        return max(1, raw / scale * scale)
    }
}
