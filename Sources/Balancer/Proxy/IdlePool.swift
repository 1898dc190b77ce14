// Per-loop pool of idle keep-alive connections to servers (haproxy's idle server
// connections, pingora's connection pool). Loop thread only: no lock.
//
// An idle connection is still watched, by its own small handler, so a server that closes
// it is noticed and the descriptor released at once, and so it is closed after
// `idleTimeout`. Taking one hands its descriptor to the session, which re-points the
// epoll registration at itself. A connection the server closed in the instant before we
// reuse it (the keep-alive race) is the session's problem: it retries idempotent requests.
final class IdleServerConnection: EventHandler {
    var registration = EventLoop.Registration.none
    var deadline: Int64 = 0
    var filedDeadline: Int64 = 0
    let fd: CInt
    let server: Server
    unowned let pool: IdlePool

    init(fd: CInt, server: Server, pool: IdlePool) {
        self.fd = fd
        self.server = server
        self.pool = pool
    }

    func ready(_ events: Epoll.Events, side: Int, loop: EventLoop) {
        // An idle connection has nothing to say: any event is a close, a reset or stray
        // bytes, and all of them make it unusable.
        pool.discard(self, loop: loop)
    }

    func deadlineReached(loop: EventLoop) {
        pool.discard(self, loop: loop)
    }

    func resume(loop: EventLoop) {}
}

final class IdlePool {
    /// Idle connections per server, most recently used last (reused first: it is the
    /// least likely to have been closed by the server's own keep-alive timeout).
    private var idle: [ObjectIdentifier: [IdleServerConnection]] = [:]
    let maxPerServer: Int
    let idleTimeout: Int64

    init(maxPerServer: Int = 64, idleTimeout: Int64 = 5_000_000_000) {
        self.maxPerServer = maxPerServer
        self.idleTimeout = idleTimeout
    }

    /// Takes an idle connection to `server`, or nil. The caller must `rewatch` the fd.
    func take(for server: Server, loop: EventLoop) -> CInt? {
        // Mutating through the subscript in place: no copy of the array per take.
        guard let connection = idle[ObjectIdentifier(server.health)]?.popLast() else { return nil }
        loop.deregister(connection)
        return connection.fd
    }

    /// Parks `fd` as idle for `server`, or closes it when the pool for it is full.
    func give(_ fd: CInt, server: Server, loop: EventLoop) {
        let key = ObjectIdentifier(server.health)
        if (idle[key]?.count ?? 0) >= maxPerServer {
            Posix.close(fd)
            return
        }
        let connection = IdleServerConnection(fd: fd, server: server, pool: self)
        loop.register(connection)
        do {
            try loop.rewatch(fd, side: 0, events: [.readable, .readHangup], for: connection)
        } catch {
            loop.deregister(connection)
            Posix.close(fd)
            return
        }
        connection.deadline = loop.now + idleTimeout
        loop.scheduleDeadline(for: connection)
        idle[key, default: []].append(connection)
    }

    func discard(_ connection: IdleServerConnection, loop: EventLoop) {
        let key = ObjectIdentifier(connection.server.health)
        if let i = idle[key]?.firstIndex(where: { $0 === connection }) {
            idle[key]?.remove(at: i)
        }
        loop.deregister(connection)
        Posix.close(connection.fd)
    }

    /// Closes everything (shutdown).
    func closeAll(loop: EventLoop) {
        for (_, list) in idle {
            for connection in list {
                loop.deregister(connection)
                Posix.close(connection.fd)
            }
        }
        idle.removeAll()
    }
}
