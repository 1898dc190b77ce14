// Per-loop pool of idle keep-alive connections to servers (haproxy's idle server
// connections, pingora's connection pool). Loop thread only: no lock.
//
// Idle connections stay in the loop's epoll set, watched through the owner table: a
// session that takes one (or gives one back) changes its owner with a memory write, not
// an epoll_ctl, because in HTTP mode that happens on every request. While idle, any event
// on a connection means the server closed it or sent something it should not have, so it
// is dropped at once; a sweep closes the ones idle longer than `idleTimeout`.
//
// A connection the server closes in the instant before we reuse it (the keep-alive race)
// is the session's problem: it retries idempotent requests.
import Synchronization

final class IdlePool: EventHandler {
    var registration = EventLoop.Registration.none
    var deadline: Int64 = 0
    var filedDeadline: Int64 = 0

    struct Entry {
        var fd: CInt
        var since: Int64
    }

    /// Idle connections per server, most recently parked last (reused first: it is the
    /// least likely to have been closed by the server's own keep-alive timeout).
    private var idle: [ObjectIdentifier: [Entry]] = [:]
    /// Where each idle fd is, for the (rare) event path.
    private var location: [CInt: ObjectIdentifier] = [:]
    /// Strong references to the servers with idle connections: keeps each
    /// ObjectIdentifier key unique for as long as it is used.
    private var servers: [ObjectIdentifier: Server] = [:]
    let maxPerServer: Int
    let idleTimeout: Int64
    private unowned let loop: EventLoop

    init(loop: EventLoop, maxPerServer: Int = 64, idleTimeout: Int64 = 5_000_000_000) {
        self.loop = loop
        self.maxPerServer = maxPerServer
        self.idleTimeout = idleTimeout
    }

    /// Must run on the loop thread before first use.
    func attach() {
        loop.register(self)
    }

    private func key(_ server: Server) -> ObjectIdentifier { ObjectIdentifier(server.health) }

    /// Takes an idle connection to `server`, or nil. The caller becomes its owner
    /// (`EventLoop.setOwner`).
    func take(for server: Server) -> CInt? {
        let key = key(server)
        // Mutating through the subscript in place: no copy of the array per take.
        guard let entry = idle[key]?.popLast() else { return nil }
        location.removeValue(forKey: entry.fd)
        return entry.fd
    }

    /// Parks `fd` (an owned fd, see EventLoop.watchOwned) as idle for `server`, or closes
    /// it when the pool for that server is full.
    func give(_ fd: CInt, server: Server, watchingOutput: Bool) {
        let key = key(server)
        if (idle[key]?.count ?? 0) >= maxPerServer {
            close(fd)
            return
        }
        loop.setOwner(fd, to: self, side: Int(fd))
        if watchingOutput { try? loop.modifyOwned(fd, events: [.readable, .readHangup]) }
        idle[key, default: []].append(Entry(fd: fd, since: loop.now))
        location[fd] = key
        if servers[key] == nil { servers[key] = server }
        if deadline == 0 {
            deadline = loop.now + idleTimeout
            loop.scheduleDeadline(for: self)
        }
    }

    func ready(_ events: Epoll.Events, side: Int, loop: EventLoop) {
        let fd = CInt(side)
        guard let key = location[fd] else { return }
        // The event may be stale (queued before a session handed the connection back):
        // only drop the connection if it really has something to say.
        if case .wouldBlock = Posix.peek(fd) { return }
        if let i = idle[key]?.firstIndex(where: { $0.fd == fd }) {
            idle[key]?.remove(at: i)
        }
        location.removeValue(forKey: fd)
        close(fd)
        forgetIfEmpty(key)
    }

    /// The sweep: closes connections idle longer than `idleTimeout`.
    func deadlineReached(loop: EventLoop) {
        let limit = loop.now - idleTimeout
        var oldest = Int64.max
        for key in Array(idle.keys) {
            guard var list = idle[key] else { continue }
            // The list is in parking order, so the expired ones are at the front.
            var expired = 0
            while expired < list.count && list[expired].since <= limit {
                location.removeValue(forKey: list[expired].fd)
                close(list[expired].fd)
                expired += 1
            }
            if expired > 0 { list.removeFirst(expired) }
            idle[key] = list
            if let first = list.first { oldest = min(oldest, first.since) }
            forgetIfEmpty(key)
        }
        if oldest == .max {
            deadline = 0
        } else {
            deadline = oldest + idleTimeout
            loop.scheduleDeadline(for: self)
        }
    }

    func resume(loop: EventLoop) {}

    private func forgetIfEmpty(_ key: ObjectIdentifier) {
        if idle[key]?.isEmpty ?? true {
            idle.removeValue(forKey: key)
            servers.removeValue(forKey: key)
        }
    }

    private func close(_ fd: CInt) {
        loop.releaseOwned(fd)
        Posix.close(fd)
    }

    /// Closes everything (shutdown).
    func closeAll() {
        for (_, list) in idle {
            for entry in list { close(entry.fd) }
        }
        idle.removeAll()
        location.removeAll()
        servers.removeAll()
    }
}
