// The shell of the active health checks: each checked server gets a `HealthCheck`
// handler on one event loop (round robin over the proxy's loops), which does the I/O that
// its `HealthCheckStateMachine` asks for and publishes what it learnt into the server's
// `ServerHealth` (the verdict each pick reads, and the check columns of the stats).
//
// TLS checks (`ssl`/`check-ssl` servers) run the handshake and the HTTP exchange through a
// TLSConnection made from the server's check context. The socket is watched for both
// directions (edge-triggered) for the whole check, and every event retries the step in
// progress: a TLS step that waits for the other direction than the one it was asked
// (a read that must send, a write that must receive) is retried when that edge comes.
//
// Threads: `HealthChecks` is called from whichever thread publishes tables (Proxy's
// callers), under its own lock; it reaches a handler only through `EventLoop.execute`, so
// a `HealthCheck` is touched by its loop thread alone.
import Synchronization

/// Every check of one proxy: which server is checked on which loop.
final class HealthChecks: Sendable {
    private let loops: [EventLoop]
    private let reweigh: @Sendable (String) -> Void
    private let assignments = Mutex<Assignments>(Assignments())

    private struct Assignments {
        var checks: [ObjectIdentifier: HealthCheck] = [:]
        var nextLoop = 0
    }

    /// `reweigh`: rebuilds a backend's table after a slow-start step (Proxy.reweigh, safe
    /// from a loop).
    init(loops: [EventLoop], reweigh: @escaping @Sendable (String) -> Void) {
        self.loops = loops
        self.reweigh = reweigh
    }

    /// Makes the set of checks follow the published tables: a server that is still there
    /// (same `ServerHealth`) keeps its check and what it learnt; new ones start, spread over
    /// their interval as haproxy's start_checks() does; gone ones stop.
    func watch(_ backends: [(BackendConfig, BackendTable)]) {
        let now = Posix.monotonicNanoseconds()
        assignments.withLock { state in
            var kept: [ObjectIdentifier: HealthCheck] = [:]
            var started: [(HealthCheck, HealthCheckStateMachine.Settings)] = []
            for (config, table) in backends {
                for server in table.servers {
                    guard let parameters = server.config.check ?? config.defaultCheck else { continue }
                    let settings = HealthCheckStateMachine.Settings(check: parameters, backend: config, slowStart: server.config.slowStart,
                                                                    tls: server.checkTLS != nil)
                    let request = config.healthCheck.http.map { HealthCheck.request($0, server: server.config) }
                    let key = ObjectIdentifier(server.health)
                    let servers = table.servers
                    if let check = state.checks.removeValue(forKey: key) {
                        check.loop.execute { check.update(server: server, servers: servers, settings: settings, request: request) }
                        kept[key] = check
                    } else {
                        let loop = loops[state.nextLoop % loops.count]
                        state.nextLoop += 1
                        let check = HealthCheck(loop: loop, backend: table.name, server: server, servers: servers,
                                                request: request, reweigh: reweigh)
                        kept[key] = check
                        started.append((check, settings))
                    }
                }
            }
            for (i, (check, settings)) in started.enumerated() {
                let first = now + settings.interval * Int64(i) / Int64(started.count)
                check.loop.execute { check.start(settings: settings, firstCheck: first) }
            }
            // A server that is still listed but no longer checked is UP again; one that is
            // gone takes its health with it.
            let listed = Set(backends.flatMap { $0.1.servers.map { ObjectIdentifier($0.health) } })
            for (key, check) in state.checks {
                let stillListed = listed.contains(key)
                check.loop.execute { check.stop(markUp: stillListed) }
            }
            state.checks = kept
        }
    }

    /// Stops every check (shutdown): their sockets close on their loops.
    func stop() {
        assignments.withLock { state in
            for check in state.checks.values {
                check.loop.execute { check.stop(markUp: false) }
            }
            state.checks = [:]
        }
    }
}

/// The check of one server, on one loop. Loop thread only (see the file comment).
final class HealthCheck: EventHandler, @unchecked Sendable {
    let loop: EventLoop
    private let backend: String
    private var server: Server
    /// The servers of the backend's current table, to count the ones left in a log line.
    private var servers: [Server]
    /// The HTTP request, nil for a TCP check.
    private var request: [UInt8]?
    private let reweigh: @Sendable (String) -> Void
    private var machine: HealthCheckStateMachine?

    private var fd: CInt = -1
    /// The check's TLS over `fd` (TLS checks, once connected); freed with the socket.
    private var tls: TLSConnection?
    /// Epoll side of the current socket, alternating per check, so that an event for the
    /// previous check's socket can never be taken for this one's.
    private var side = 0
    private var written = 0
    private var input: [UInt8] = []
    private var parser = HTTPHeadParser(kind: .response)
    /// Next slow-start step, 0 for none.
    private var rampDeadline: Int64 = 0
    /// While in maintenance: when to look at the operator's state again.
    private var adminPoll: Int64 = 0

    var registration = EventLoop.Registration.none
    var filedDeadline: Int64 = 0
    var deadline: Int64 {
        guard let machine else { return 0 }
        var next = Int64.max
        for candidate in [machine.deadline, rampDeadline, adminPoll] where candidate > 0 { next = min(next, candidate) }
        return next == .max ? 0 : next
    }

    init(loop: EventLoop, backend: String, server: Server, servers: [Server], request: [UInt8]?,
         reweigh: @escaping @Sendable (String) -> Void) {
        self.loop = loop
        self.backend = backend
        self.server = server
        self.servers = servers
        self.request = request
        self.reweigh = reweigh
    }

    /// The bytes of an HTTP check: `option httpchk`'s request line, the `http-check send`
    /// headers, `Connection: close` (one exchange per connection, as haproxy's checks do),
    /// and the body with its length.
    static func request(_ check: HTTPCheck, server: ServerConfig) -> [UInt8] {
        var text = "\(check.method) \(check.uri) \(check.version)\r\n"
        for header in check.headers { text += "\(header.name): \(header.value)\r\n" }
        if check.hostFromServerAddress && !check.headers.contains(where: { $0.name.lowercased() == "host" }) {
            text += "Host: \(server.address)\r\n"
        }
        if !check.headers.contains(where: { $0.name.lowercased() == "connection" }) {
            text += "Connection: close\r\n"
        }
        if let body = check.body, !body.isEmpty {
            text += "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
        } else {
            text += "\r\n"
        }
        return Array(text.utf8)
    }

    // MARK: control (tasks posted by HealthChecks)

    func start(settings: HealthCheckStateMachine.Settings, firstCheck: Int64) {
        machine = HealthCheckStateMachine(settings: settings, firstCheck: firstCheck)
        server.health.checkStatusRaw.store(CheckStatus.initializing.rawValue, ordering: .relaxed)
        server.health.checkHealth.store(machine!.health, ordering: .relaxed)
        loop.register(self)
        loop.scheduleDeadline(for: self)
    }

    func update(server: Server, servers: [Server], settings: HealthCheckStateMachine.Settings, request: [UInt8]?) {
        self.server = server
        self.servers = servers
        self.request = request
        machine?.update(settings)
        if let machine { server.health.checkHealth.store(machine.health, ordering: .relaxed) }
        loop.scheduleDeadline(for: self)
    }

    func stop(markUp: Bool) {
        closeSocket()
        if registration.isRegistered { loop.deregister(self) }
        machine = nil
        if markUp {
            server.health.checkedUp.store(true, ordering: .relaxed)
            if server.health.rampPerMille.exchange(1000, ordering: .relaxed) != 1000 { reweigh(backend) }
        }
    }

    // MARK: events

    func deadlineReached(loop: EventLoop) {
        guard machine != nil else { return }
        let now = loop.now
        // Maintenance suspends checks (drain does not); they resume when it ends.
        if server.health.adminState == .maint {
            if machine!.phase != .suspended {
                closeSocket()
                machine!.suspend()
                rampDeadline = 0
            }
            adminPoll = now + machine!.settings.interval
            loop.scheduleDeadline(for: self)
            return
        }
        adminPoll = 0
        if machine!.phase == .suspended {
            machine!.resume(now: now)
            server.health.checkHealth.store(machine!.health, ordering: .relaxed)
            comeUp(now: now)
        }
        if rampDeadline > 0 && now >= rampDeadline { stepRamp(now: now) }
        if machine!.deadline > 0 && now >= machine!.deadline { perform(machine!.timerFired(now: now), now: now) }
        loop.scheduleDeadline(for: self)
    }

    func ready(_ events: Epoll.Events, side: Int, loop: EventLoop) {
        guard fd >= 0, side == self.side, machine != nil else { return }
        let now = loop.now
        switch machine!.phase {
        case .connecting:
            if let error = Posix.pendingError(fd) {
                perform(machine!.connectFailed(error.description, now: now), now: now)
            } else if !events.isDisjoint(with: [.writable, .error, .hangup]) {
                perform(machine!.connected(now: now), now: now)
            }
        case .handshaking:
            handshake(now: now)
        case .awaitingReply:
            flushRequest(now: now)
            if fd >= 0 { readReply(now: now) }
        case .idle, .suspended:
            break
        }
        loop.scheduleDeadline(for: self)
    }

    func resume(loop: EventLoop) {}

    // MARK: I/O

    private func perform(_ action: HealthCheckStateMachine.Action, now: Int64) {
        switch action {
        case .none:
            break
        case .connect:
            connect(now: now)
        case .startHandshake:
            guard let context = server.checkTLS,
                  let connection = TLSConnection(client: context, serverName: server.config.checkTLS?.serverName, fd: fd) else {
                perform(machine!.handshakeFailed(.failed, now: now), now: now)
                return
            }
            tls = connection
            handshake(now: now)
        case .sendRequest:
            written = 0
            input.removeAll(keepingCapacity: true)
            parser.reset()
            flushRequest(now: now)
            if fd >= 0 { readReply(now: now) }
        case .finish(let report):
            closeSocket()
            publish(report, now: now)
        }
    }

    private func connect(now: Int64) {
        do {
            let (socket, connected) = try Socket.connect(to: server.address)
            fd = socket
            side ^= 1
            do {
                try loop.watch(fd, side: side, events: [.readable, .writable, .readHangup], for: self)
            } catch {
                perform(machine!.socketError(error.errno.description, now: now), now: now)
                return
            }
            if connected { perform(machine!.connected(now: now), now: now) }
        } catch {
            // No socket at all is haproxy's SOCKERR; a refused or unreachable connect is L4CON.
            if "\(error.call)" == "socket" {
                perform(machine!.socketError(error.errno.description, now: now), now: now)
            } else {
                perform(machine!.connectFailed(error.errno.description, now: now), now: now)
            }
        }
    }

    /// One step of the TLS handshake; called again on the socket's next event until it
    /// completes or fails.
    private func handshake(now: Int64) {
        guard let tls else { return }
        switch tls.handshake() {
        case .processed:
            perform(machine!.handshakeCompleted(now: now), now: now)
        case .wantRead, .wantWrite:
            break
        case .closed, .failed:
            perform(machine!.handshakeFailed(tls.peerNameMismatch ? .nameMismatch : .failed, now: now), now: now)
        }
    }

    private func flushRequest(now: Int64) {
        guard let request, written < request.count else { return }
        let fd = self.fd, from = written
        if let tls {
            let outcome = request.withUnsafeBytes { tls.write(UnsafeRawBufferPointer(rebasing: $0[from...])) }
            switch outcome {
            case .processed(let n): written += n
            case .wantRead, .wantWrite: break
            case .closed: perform(machine!.invalidResponse(now: now), now: now)
            case .failed(let reason): perform(machine!.socketError(reason, now: now), now: now)
            }
            return
        }
        let result = request.withUnsafeBytes { bytes in
            Result { () throws(SystemError) in try Posix.write(fd, UnsafeRawBufferPointer(rebasing: bytes[from...])) }
        }
        switch result {
        case .success(.processed(let n)): written += n
        case .success(.wouldBlock): break
        case .failure(let error): perform(machine!.socketError(error.errno.description, now: now), now: now)
        }
    }

    /// One read of the reply, through TLS when the check has it: the byte count (0 at the
    /// end of the stream), nil when the socket has nothing more for now, or the failure.
    private func readOnce(into chunk: inout [UInt8]) -> Result<Int?, ReadFailure> {
        let fd = self.fd
        if let tls {
            switch chunk.withUnsafeMutableBytes({ tls.read(into: $0) }) {
            case .processed(let n): return .success(n)
            case .closed: return .success(0)
            case .wantRead, .wantWrite: return .success(nil)
            case .failed(let reason): return .failure(ReadFailure(info: reason))
            }
        }
        let result = chunk.withUnsafeMutableBytes { buffer in
            Result { () throws(SystemError) in try Posix.read(fd, buffer) }
        }
        switch result {
        case .success(.processed(let n)): return .success(n)
        case .success(.wouldBlock): return .success(nil)
        case .failure(let error): return .failure(ReadFailure(info: error.errno.description))
        }
    }

    private struct ReadFailure: Error {
        var info: String
    }

    /// Reads until the response head is complete, the peer closes, or the socket is dry.
    /// Only the head matters: the status decides, the body is never read.
    private func readReply(now: Int64) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while fd >= 0 {
            let n: Int
            switch readOnce(into: &chunk) {
            case .success(let count?): n = count
            case .success(nil): return
            case .failure(let failure):
                perform(machine!.socketError(failure.info, now: now), now: now)
                return
            }
            if n == 0 {
                perform(machine!.invalidResponse(now: now), now: now)
                return
            }
            input.append(contentsOf: chunk[..<n])
            let outcome = input.withUnsafeBytes { parser.parse($0) }
            switch outcome {
            case .needMore:
                continue
            case .invalid:
                perform(machine!.invalidResponse(now: now), now: now)
            case .complete(let head):
                let reason = String(decoding: input[head.reason], as: UTF8.self)
                perform(machine!.response(status: head.status, reason: reason, now: now), now: now)
            }
            return
        }
    }

    private func closeSocket() {
        guard fd >= 0 else { return }
        // close_notify (best effort) so that the server sees an orderly end, then the
        // TLS state goes before the descriptor it was reading.
        tls?.shutdown()
        tls = nil
        loop.unwatch(fd)
        Posix.close(fd)
        fd = -1
    }

    // MARK: results

    private func publish(_ report: HealthCheckStateMachine.Report, now: Int64) {
        let health = server.health
        health.checkStatusRaw.store(report.result.status.rawValue, ordering: .relaxed)
        health.checkCode.store(report.result.code, ordering: .relaxed)
        health.checkDurationMilliseconds.store(report.result.durationMilliseconds, ordering: .relaxed)
        health.checkHealth.store(machine!.health, ordering: .relaxed)
        if report.countedFailure { health.checkFailures.add(1, ordering: .relaxed) }
        guard let transition = report.transition else { return }
        switch transition {
        case .down:
            health.checkedUp.store(false, ordering: .relaxed)
            health.downTransitions.add(1, ordering: .relaxed)
            health.lastChange.store(now, ordering: .relaxed)
            rampDeadline = 0
        case .up:
            let downSince = health.lastChange.load(ordering: .relaxed)
            if downSince > 0 && !health.checkedUp.load(ordering: .relaxed) {
                health.downtimeBefore.add(now - downSince, ordering: .relaxed)
            }
            health.lastChange.store(now, ordering: .relaxed)
            comeUp(now: now)
        }
        log(transition, result: report.result)
    }

    /// UP again: the slow-start ramp (if any) is in place before the verdict flips, so the
    /// first picks already see the reduced weight.
    private func comeUp(now: Int64) {
        stepRamp(now: now)
        server.health.passiveDownUntil.store(0, ordering: .relaxed)
        server.health.checkedUp.store(true, ordering: .relaxed)
    }

    private func stepRamp(now: Int64) {
        guard machine != nil else { return }
        let perMille = machine!.rampPerMille(now: now)
        if server.health.rampPerMille.exchange(perMille, ordering: .relaxed) != perMille { reweigh(backend) }
        rampDeadline = machine!.nextRampUpdate(now: now) ?? 0
    }

    private func log(_ transition: HealthCheckStateMachine.Transition, result: CheckResult) {
        let (active, backup) = Server.takingTraffic(servers)
        ControlLog.line(HealthCheckLog.transition(transition, backend: backend, server: server.name, isBackup: server.isBackup,
                                                  result: result, activeServers: active, backupServers: backup,
                                                  sessions: server.health.current.load(ordering: .relaxed)))
        if transition == .down && active == 0 && backup == 0 {
            ControlLog.line(HealthCheckLog.noServerAvailable(backend: backend))
        }
    }
}
