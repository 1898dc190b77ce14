// The counters a session moves on its server and backend (haproxy's scur/stot), in one
// place for TCP and HTTP: a server "has" a session while a connection to it carries
// that session's bytes, from the connect (or the reuse of an idle connection) to the
// moment the session lets go of it.
//
// A session already keeps its server and backend, so this only remembers whether the
// counters were raised (one byte per connection, not two references).
struct ServerUse {
    private(set) var isCounted = false

    /// Counts `server` as serving this session. The previous use must have ended.
    mutating func begin(_ server: Server, backend: BackendCounters) {
        precondition(!isCounted, "a server use that did not end")
        server.health.maxCurrent.raiseMaximum(to: server.health.current.add(1, ordering: .relaxed).newValue)
        server.health.total.add(1, ordering: .relaxed)
        backend.maxCurrent.raiseMaximum(to: backend.current.add(1, ordering: .relaxed).newValue)
        backend.total.add(1, ordering: .relaxed)
        isCounted = true
    }

    /// The session no longer uses `server`. Safe to call when nothing is counted.
    mutating func end(_ server: Server?, backend: BackendCounters) {
        guard isCounted, let server else { return }
        server.health.current.wrappingSubtract(1, ordering: .relaxed)
        backend.current.wrappingSubtract(1, ordering: .relaxed)
        isCounted = false
    }
}
