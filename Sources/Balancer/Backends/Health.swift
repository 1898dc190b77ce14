// Active health checks for servers with `check`: a TCP connect every `inter`, with
// haproxy's hysteresis (DOWN after `fall` failures in a row, UP after `rise` successes),
// and one log line per flip.
//
// It runs on its own thread with poll(2): checks are rare and blocking-style code is
// clearer here; the verdict reaches the loops through `ServerHealth.checkedUp`, an
// atomic each pick reads.
import Synchronization

public final class HealthChecker: @unchecked Sendable {
    struct Target {
        var backend: String
        var server: Server
        var check: HealthCheckConfig
        var connectTimeout: Int64
        var nextCheck: Int64 = 0
        var successes = 0
        var failures = 0
        var fd: CInt = -1
        var startedAt: Int64 = 0
        var backupCount = 0
    }

    private let pending = Mutex<[BackendTable]?>(nil)
    private let running = Atomic<Bool>(false)
    private var thread: LoopThread?
    private var targets: [Target] = []   // checker thread only

    public init() {}

    /// Replaces the set of servers to check (called whenever a table is published).
    public func watch(_ tables: [BackendTable]) {
        pending.withLock { $0 = tables }
    }

    public func start() {
        running.store(true, ordering: .relaxed)
        thread = LoopThread(name: "balancerd-check") { [self] in self.run() }
    }

    public func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        thread?.join()
        thread = nil
    }

    private func run() {
        while running.load(ordering: .relaxed) {
            adoptTables()
            let now = Posix.monotonicNanoseconds()
            for i in targets.indices where targets[i].fd < 0 && targets[i].nextCheck <= now {
                begin(&targets[i], now: now)
            }
            waitForChecks()
        }
        for target in targets where target.fd >= 0 { Posix.close(target.fd) }
    }

    private func adoptTables() {
        guard let tables = pending.withLock({ value -> [BackendTable]? in
            defer { value = nil }
            return value
        }) else { return }
        var old: [ObjectIdentifier: Target] = [:]
        for target in targets { old[ObjectIdentifier(target.server.health)] = target }
        var next: [Target] = []
        for table in tables {
            for server in table.servers {
                guard let check = server.config.check else { continue }
                if var kept = old.removeValue(forKey: ObjectIdentifier(server.health)) {
                    kept.server = server
                    kept.check = check
                    next.append(kept)
                } else {
                    next.append(Target(backend: table.name, server: server, check: check,
                                       connectTimeout: table.settings.connectTimeout))
                }
            }
        }
        for (_, dropped) in old where dropped.fd >= 0 { Posix.close(dropped.fd) }
        targets = next
    }

    private func begin(_ target: inout Target, now: Int64) {
        target.startedAt = now
        target.nextCheck = now + target.check.interval.nanoseconds
        do {
            let (fd, connected) = try Socket.connect(to: target.server.address)
            if connected {
                Posix.close(fd)
                record(&target, ok: true, reason: nil)
            } else {
                target.fd = fd
            }
        } catch {
            record(&target, ok: false, reason: "\(error.errno)")
        }
    }

    /// Polls in-flight checks for up to 100 ms, then settles the ones that finished or
    /// ran out of time (a check may take `inter` at most, like haproxy without `timeout check`).
    private func waitForChecks() {
        var fds: [Posix.PollRequest] = []
        var owners: [Int] = []
        for (i, target) in targets.enumerated() where target.fd >= 0 {
            fds.append(Posix.PollRequest(fd: target.fd, events: .writable))
            owners.append(i)
        }
        if fds.isEmpty {
            Posix.sleep(milliseconds: 100)
            return
        }
        _ = try? Posix.poll(&fds, timeoutMilliseconds: 100)
        let now = Posix.monotonicNanoseconds()
        for (slot, i) in owners.enumerated() {
            let fd = targets[i].fd
            if !fds[slot].returned.isEmpty {
                let error = Posix.pendingError(fd)
                Posix.close(fd)
                targets[i].fd = -1
                record(&targets[i], ok: error == nil, reason: error.map { "\($0)" })
            } else if now - targets[i].startedAt >= min(targets[i].check.interval.nanoseconds, targets[i].connectTimeout) {
                Posix.close(fd)
                targets[i].fd = -1
                record(&targets[i], ok: false, reason: "Connection timed out")
            }
        }
    }

    private func record(_ target: inout Target, ok: Bool, reason: String?) {
        let health = target.server.health
        let up = health.checkedUp.load(ordering: .relaxed)
        if ok {
            target.failures = 0
            target.successes += 1
            if !up && target.successes >= target.check.rise {
                health.checkedUp.store(true, ordering: .relaxed)
                health.passiveDownUntil.store(0, ordering: .relaxed)
                ControlLog.line("Server \(target.backend)/\(target.server.name) is UP, reason: Layer4 check passed, check duration: \(elapsedMs(target))ms.")
            }
        } else {
            target.successes = 0
            target.failures += 1
            if up && target.failures >= target.check.fall {
                health.checkedUp.store(false, ordering: .relaxed)
                ControlLog.line("Server \(target.backend)/\(target.server.name) is DOWN, reason: Layer4 connection problem, info: \"\(reason ?? "error")\", check duration: \(elapsedMs(target))ms.")
            }
        }
    }

    private func elapsedMs(_ target: Target) -> Int64 {
        (Posix.monotonicNanoseconds() - target.startedAt) / 1_000_000
    }
}
