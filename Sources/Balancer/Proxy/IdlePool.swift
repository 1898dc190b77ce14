// Per-loop pool of idle keep-alive connections to servers (haproxy's idle server
// connections, pingora's connection pool). Loop thread only: no lock.
//
// Lists are indexed by backend and by server index in the loop's current table of that
// backend, so taking or parking a connection is two array indexings: no hashing and no
// allocation per request. When the worker installs a new table, `tableChanged` moves the
// lists of the servers that are still there to their new indices and closes the rest. A session holding an older
// table (a request in flight across the swap) does not pool its connection.
//
// Idle connections stay in the loop's epoll set, watched through the owner table: a
// session that takes one (or gives one back) changes its owner with a memory write, not
// an epoll_ctl. While idle, any event on a connection means the server closed it or sent
// something it should not have, so it is dropped at once; a sweep closes the ones idle
// longer than `idleTimeout`.
//
// A connection the server closes in the instant before we reuse it (the keep-alive race)
// is the session's problem: it retries idempotent requests.
final class IdlePool: EventHandler {
    var registration = EventLoop.Registration.none
    var deadline: Int64 = 0
    var filedDeadline: Int64 = 0

    struct Entry {
        var fd: CInt
        var since: Int64
        /// The connection's TLS state (`server ... ssl`): it waits with the socket, so a
        /// reuse skips the handshake. Freed with the entry when the connection closes.
        var tls: TLSConnection?
    }

    /// Where an idle fd is listed, for the (rare) event path; indexed by fd.
    private struct Location {
        var backend: Int32 = -1
        var server: Int32 = -1
    }

    /// [backend][server]: idle connections, most recently parked last (reused first: it
    /// is the least likely to have been closed by the server's own keep-alive timeout).
    private var lists: [[[Entry]]]
    /// The table each backend's indices refer to.
    private var tables: [BackendTable]
    private var locations: [Location] = []
    let maxPerServer: Int
    let idleTimeout: Int64
    private unowned let loop: EventLoop

    init(loop: EventLoop, tables: [BackendTable], maxPerServer: Int = 64, idleTimeout: Int64 = 5_000_000_000) {
        self.loop = loop
        self.tables = tables
        self.lists = tables.map { table in table.servers.map { _ in [] } }
        self.maxPerServer = maxPerServer
        self.idleTimeout = idleTimeout
    }

    /// Must run on the loop thread before first use.
    func attach() {
        loop.register(self)
    }

    /// Takes an idle connection to server `index` of `table` (backend `backend`), or nil.
    /// The caller becomes its owner (`EventLoop.setOwner`).
    @inline(__always)
    func take(backend: Int, table: BackendTable, server index: Int) -> (fd: CInt, tls: TLSConnection?)? {
        guard tables[backend] === table, let entry = lists[backend][index].popLast() else { return nil }
        locations[Int(entry.fd)] = Location()
        return (entry.fd, entry.tls)
    }

    /// Parks `fd` (an owned fd, see EventLoop.watchOwned) as idle for server `index` of
    /// `table`, or closes it when that table is no longer current or the server's list
    /// is full.
    func give(_ fd: CInt, tls: TLSConnection?, backend: Int, table: BackendTable, server index: Int,
              watchingOutput: Bool) {
        guard tables[backend] === table, lists[backend][index].count < maxPerServer else {
            close(fd, tls: tls)
            return
        }
        loop.setOwner(fd, to: self, side: Int(fd))
        if watchingOutput { try? loop.modifyOwned(fd, events: [.readable, .readHangup]) }
        lists[backend][index].append(Entry(fd: fd, since: loop.now, tls: tls))
        let slot = Int(fd)
        if slot >= locations.count {
            locations.append(contentsOf: repeatElement(Location(), count: max(slot + 1 - locations.count, 256)))
        }
        locations[slot] = Location(backend: Int32(backend), server: Int32(index))
        if deadline == 0 {
            deadline = loop.now + idleTimeout
            loop.scheduleDeadline(for: self)
        }
    }

    /// A backend was created (publishRoutes): its lists start empty.
    func addBackend(_ table: BackendTable) {
        tables.append(table)
        lists.append(table.servers.map { _ in [] })
    }

    /// The worker installed a new table for `backend`: connections to servers that are
    /// still in it keep waiting (at their new index), the others are closed.
    func tableChanged(backend: Int, to table: BackendTable) {
        let old = tables[backend]
        guard old !== table else { return }
        var newIndex: [ObjectIdentifier: Int] = [:]
        for (i, server) in table.servers.enumerated() { newIndex[ObjectIdentifier(server.health)] = i }
        var moved: [[Entry]] = table.servers.map { _ in [] }
        for (i, list) in lists[backend].enumerated() {
            if let j = newIndex[ObjectIdentifier(old.servers[i].health)] {
                moved[j] = list
                for entry in list { locations[Int(entry.fd)] = Location(backend: Int32(backend), server: Int32(j)) }
            } else {
                for entry in list {
                    locations[Int(entry.fd)] = Location()
                    close(entry.fd, tls: entry.tls)
                }
            }
        }
        lists[backend] = moved
        tables[backend] = table
    }

    func ready(_ events: Epoll.Events, side: Int, loop: EventLoop) {
        let fd = CInt(side)
        guard Int(fd) < locations.count else { return }
        let location = locations[Int(fd)]
        guard location.backend >= 0 else { return }
        // The event may be stale (queued before a session handed the connection back):
        // only drop the connection if it really has something to say.
        if case .wouldBlock = Posix.peek(fd) { return }
        let b = Int(location.backend), s = Int(location.server)
        if let i = lists[b][s].firstIndex(where: { $0.fd == fd }) {
            lists[b][s].remove(at: i)
        }
        locations[Int(fd)] = Location()
        // No close_notify: the server has closed or spoken out of turn.
        close(fd, tls: nil)
    }

    /// The sweep: closes connections idle longer than `idleTimeout`.
    func deadlineReached(loop: EventLoop) {
        let limit = loop.now - idleTimeout
        var oldest = Int64.max
        for b in lists.indices {
            for s in lists[b].indices {
                // Each list is in parking order, so the expired ones are at the front.
                var expired = 0
                while expired < lists[b][s].count && lists[b][s][expired].since <= limit {
                    let entry = lists[b][s][expired]
                    locations[Int(entry.fd)] = Location()
                    close(entry.fd, tls: entry.tls)
                    expired += 1
                }
                if expired > 0 { lists[b][s].removeFirst(expired) }
                if let first = lists[b][s].first { oldest = min(oldest, first.since) }
            }
        }
        if oldest == .max {
            deadline = 0
        } else {
            deadline = oldest + idleTimeout
            loop.scheduleDeadline(for: self)
        }
    }

    func resume(loop: EventLoop) {}

    /// Closes an idle connection; a TLS one says close_notify first (best effort: the
    /// socket is idle, so the alert fits its buffer).
    private func close(_ fd: CInt, tls: TLSConnection?) {
        tls?.shutdown()
        loop.releaseOwned(fd)
        Posix.close(fd)
    }

    /// Closes everything (shutdown).
    func closeAll() {
        for b in lists.indices {
            for s in lists[b].indices {
                for entry in lists[b][s] {
                    locations[Int(entry.fd)] = Location()
                    close(entry.fd, tls: entry.tls)
                }
                lists[b][s].removeAll()
            }
        }
    }
}
