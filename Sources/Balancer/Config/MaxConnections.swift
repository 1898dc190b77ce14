// maxconn when the configuration does not set it, and the pipe budget, both from the
// open-file limit, as haproxy 2.6 does (compute_ideal_maxconn and compute_ideal_maxpipes
// in src/haproxy.c), so a default machine never starts with a warning about descriptors
// it cannot have.
//
// haproxy's rule, for a proxy that splices: every connection holds two sockets, and the
// process keeps at most maxconn/4 pipes (two descriptors each), so
//     maxconn * 2 + (maxconn / 4) * 2 + reserved <= limit,  i.e.  maxconn = 2 * remain / 5
// with remain = limit - reserved, and never below 100 (DEFAULT_MAXCONN). haproxy takes the
// hard limit (it raises the soft one to it first; so does balancerd's main) and does not
// round. balancerd always splices when it can, so it always uses the splicing rule.
import Glibc

public enum MaxConnections {
    /// Descriptors kept aside before counting connections: haproxy reserves 10 plus one
    /// per listener and check, and 3 per thread (epoll, wake-up pipe); balancerd's
    /// equivalents are its listeners (one per loop with SO_REUSEPORT), each loop's epoll,
    /// eventfd and timer descriptors, the stats listener, the Runtime API socket, health
    /// checks and discovery connections. A fixed, generous figure keeps the rule simple.
    public static let reserved = 256

    /// Descriptors one client connection holds: its socket and its server's.
    public static let perConnection = 2

    /// haproxy's DEFAULT_MAXCONN: the floor when the limit leaves less room.
    public static let minimum = 100

    /// The descriptors `maxconn` connections need, pipes not counted: pipes are optional
    /// (a connection without one copies through a buffer), and `pipes(for:openFileLimit:)`
    /// only hands out what is left.
    public static func descriptors(for maxconn: Int) -> Int {
        maxconn * perConnection + reserved
    }

    /// The current soft open-file limit (main raises it to the hard one first).
    public static func openFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(clamping: limit.rlim_cur)
    }

    /// maxconn for the current soft open-file limit.
    public static func derived() -> Int {
        derived(openFileLimit: openFileLimit())
    }

    /// haproxy's compute_ideal_maxconn with splicing on: room for two sockets per
    /// connection plus a quarter of a pipe (half a descriptor) per connection.
    public static func derived(openFileLimit: Int) -> Int {
        let remain = openFileLimit - reserved
        return max(minimum, 2 * remain / 5)
    }

    /// How many pipes the process may hold: haproxy's maxpipes (maxconn / 4), and never
    /// more than the descriptors left once `maxconn` connections have theirs, so a full
    /// proxy cannot find its last accepts failing with EMFILE because pipes took the
    /// room. With a derived maxconn both bounds agree; with a maxconn set above what the
    /// limit allows, pipes give way first.
    public static func pipes(for maxconn: Int, openFileLimit: Int) -> Int {
        let spare = max(0, openFileLimit - descriptors(for: maxconn)) / 2
        return min(maxconn / 4, spare)
    }
}
