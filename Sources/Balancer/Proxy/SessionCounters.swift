// The counters a session moves on its server and backend (haproxy's scur/stot), in one
// place for TCP and HTTP: a server "has" a session while a connection to it carries
// that session's bytes, from the connect (or the reuse of an idle connection) to the
// moment the session lets go of it.

struct ServerUse {
    private(set) var server: Server?
    private var backend: BackendCounters?

    /// Counts `server` as serving this session. Ends any earlier use first.
    mutating func begin(_ server: Server, backend: BackendCounters) {
        end()
        server.health.current.add(1, ordering: .relaxed)
        server.health.total.add(1, ordering: .relaxed)
        backend.current.add(1, ordering: .relaxed)
        backend.total.add(1, ordering: .relaxed)
        self.server = server
        self.backend = backend
    }

    /// The session no longer uses the server. Safe to call when nothing is counted.
    mutating func end() {
        guard let server, let backend else { return }
        server.health.current.wrappingSubtract(1, ordering: .relaxed)
        backend.current.wrappingSubtract(1, ordering: .relaxed)
        self.server = nil
        self.backend = nil
    }
}
