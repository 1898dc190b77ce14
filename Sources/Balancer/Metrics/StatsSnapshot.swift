// One reading of every statistic, taken at once and then only formatted: the stats page,
// `/;csv`, the Runtime API's `show stat`/`show info`/`show servers state` and `/metrics`
// all format the same snapshot, so they cannot disagree on what a value means.
//
// Rows follow haproxy's stats model (src/stats.c): per proxy a FRONTEND row, a row per
// server and a BACKEND row. balancerd's `listen` sections become a frontend and a backend
// of the same name, so grouping rows by name gives haproxy's layout back.

/// The counters every row has (haproxy's `show stat` columns of the same names).
public struct StatsCounters: Sendable, Equatable {
    /// scur, smax, stot.
    public var current = 0
    public var maxCurrent = 0
    public var total = 0
    /// bin, bout.
    public var bytesIn: UInt64 = 0
    public var bytesOut: UInt64 = 0
    /// dreq, ereq, econ, eresp, wretr, wredis, cli_abrt, srv_abrt.
    public var deniedRequests: UInt64 = 0
    public var requestErrors: UInt64 = 0
    public var connectionErrors: UInt64 = 0
    public var responseErrors: UInt64 = 0
    public var retries: UInt64 = 0
    public var redispatches: UInt64 = 0
    public var clientAborts: UInt64 = 0
    public var serverAborts: UInt64 = 0
    /// req_tot, and hrsp_1xx … hrsp_5xx, hrsp_other (index 0…5).
    public var httpRequests: UInt64 = 0
    public var responses: [UInt64] = [0, 0, 0, 0, 0, 0]
    /// qtime, ctime, rtime, ttime: averages over the recent samples, ms.
    public var queueTime: UInt64 = 0
    public var connectTime: UInt64 = 0
    public var responseTime: UInt64 = 0
    public var totalTime: UInt64 = 0

    public init() {}

    init(_ counters: StatCounters, current: Int, maxCurrent: Int, total: Int) {
        self.current = current
        self.maxCurrent = maxCurrent
        self.total = total
        bytesIn = counters.value(.bytesIn)
        bytesOut = counters.value(.bytesOut)
        deniedRequests = counters.value(.deniedRequests)
        requestErrors = counters.value(.requestErrors)
        connectionErrors = counters.value(.connectionErrors)
        responseErrors = counters.value(.responseErrors)
        retries = counters.value(.retries)
        redispatches = counters.value(.redispatches)
        clientAborts = counters.value(.clientAborts)
        serverAborts = counters.value(.serverAborts)
        httpRequests = counters.value(.httpRequests)
        responses = [.responses1xx, .responses2xx, .responses3xx, .responses4xx, .responses5xx, .responsesOther]
            .map { counters.value($0) }
        queueTime = counters.average(.queue)
        connectTime = counters.average(.connect)
        responseTime = counters.average(.response)
        totalTime = counters.average(.total)
    }
}

public struct FrontendStats: Sendable {
    public var name: String
    public var mode: ProxyMode
    /// Where its traffic goes (`default_backend`).
    public var defaultBackend: String
    /// slim: the process's maxconn (balancerd has no per-frontend limit).
    public var sessionLimit: Int
    public var counters: StatsCounters
}

public struct ServerStats: Sendable {
    public var name: String
    /// haproxy's `sid`: the server's position in its backend, from 1.
    public var id: Int
    public var address: SocketAddress
    public var isBackup: Bool
    /// The server's effective weight (haproxy `weight`, the eweight: the operator's or the
    /// configured weight, scaled by slow start; drained and maintenance servers keep it,
    /// as in haproxy, and `isActive` says whether it takes traffic), the operator's
    /// (`uweight`) and the configured one (`iweight`).
    public var weight: Int
    public var userWeight: Int
    public var initialWeight: Int
    public var admin: AdminState
    public var checkedUp: Bool
    /// nil: the server is not checked ("no check").
    public var check: HealthCheckConfig?
    public var checkStatus: CheckStatus
    public var checkCode: Int
    public var checkDurationMilliseconds: Int
    public var checkHealth: Int
    public var checkFailures: Int
    public var downTransitions: Int
    /// Seconds since the last state change (lastchg), and total seconds DOWN (downtime).
    public var secondsSinceChange: Int
    public var downtimeSeconds: Int
    public var counters: StatsCounters

    /// haproxy's `status` column for a server (srv_hlt_st in src/stats.c): "UP",
    /// "UP 1/3" while going down, "DOWN", "DOWN 1/2" while going up, "DRAIN", "MAINT",
    /// "no check".
    public var statusText: String {
        if admin == .maint { return "MAINT" }
        guard let check else { return admin == .drain ? "DRAIN" : "no check" }
        if checkedUp {
            if admin == .drain { return "DRAIN" }
            // While UP, health runs from rise to rise+fall-1; below the top, failures are
            // being counted. (Below rise it has not been set by a first check yet.)
            if checkHealth >= check.rise && checkHealth < check.rise + check.fall - 1 {
                return "UP \(checkHealth - check.rise + 1)/\(check.fall)"
            }
            return "UP"
        }
        return checkHealth > 0 ? "DOWN \(checkHealth)/\(check.rise)" : "DOWN"
    }

    /// Takes traffic now: up (or not checked) and ready.
    public var isActive: Bool { admin == .ready && checkedUp && weight > 0 }
}

public struct BackendStats: Sendable {
    public var name: String
    public var mode: ProxyMode
    /// haproxy's `algo` column.
    public var balance: BalanceAlgorithm
    public var generation: UInt64
    public var servers: [ServerStats]
    public var counters: StatsCounters
    /// Where the servers come from: nil for the configuration's `server` lines.
    public var discovery: DiscoveryConfig?
    /// What its discovery source has done lately: nil when no source feeds it.
    public var discoveryStatus: DiscoveryReading?

    /// act and bck: servers taking traffic, primaries and backups.
    public var activeServers: Int { servers.filter { !$0.isBackup && $0.isActive }.count }
    public var backupServers: Int { servers.filter { $0.isBackup && $0.isActive }.count }
    /// The sum of the active servers' weights (haproxy's BACKEND `weight`).
    public var totalWeight: Int {
        let primaries = servers.filter { !$0.isBackup && $0.isActive }
        return (primaries.isEmpty ? servers.filter { $0.isBackup && $0.isActive } : primaries).reduce(0) { $0 + $1.weight }
    }
    /// "UP" while any server can take traffic, "DOWN" otherwise.
    public var statusText: String { activeServers + backupServers > 0 ? "UP" : "DOWN" }
}

public struct StatsSnapshot: Sendable {
    public var version: String
    public var pid: Int
    public var threads: Int
    public var maxConnections: Int
    public var currentConnections: Int
    public var uptimeSeconds: Int
    /// The wall-clock second the process started (haproxy `Start_time_sec`).
    public var startTimeSeconds: Int
    public var tableGeneration: UInt64
    public var frontends: [FrontendStats]
    public var backends: [BackendStats]

    /// Total connections accepted (CumConns) and HTTP requests (CumReq).
    public var cumulativeConnections: Int { frontends.reduce(0) { $0 + $1.counters.total } }
    public var cumulativeRequests: UInt64 { frontends.reduce(0) { $0 + $1.counters.httpRequests } }
}

extension Proxy {
    /// Reads every counter now. Any thread; takes the publish lock once to read the
    /// tables, no loop is interrupted.
    public func statsSnapshot(version: String) -> StatsSnapshot {
        let now = Posix.monotonicNanoseconds()
        let (tables, configs, generation) = publishedState()
        let frontends = self.frontends.map { f in
            FrontendStats(name: f.config.name, mode: f.config.mode, defaultBackend: f.config.defaultBackend, sessionLimit: shared.maxConnections,
                          counters: StatsCounters(f.counters.stats, current: f.counters.current.load(ordering: .relaxed),
                                                  maxCurrent: f.counters.maxCurrent.load(ordering: .relaxed),
                                                  total: f.counters.total.load(ordering: .relaxed)))
        }
        var backends: [BackendStats] = []
        for (index, table) in tables.enumerated() {
            let counters = backendCounters[index]
            let servers = table.servers.enumerated().map { position, server in
                let health = server.health
                let operatorWeight = health.operatorWeight.load(ordering: .relaxed)
                let lastChange = health.lastChange.load(ordering: .relaxed)
                var downtime = health.downtimeBefore.load(ordering: .relaxed)
                if !health.checkedUp.load(ordering: .relaxed), lastChange > 0 { downtime += now - lastChange }
                return ServerStats(
                    name: server.name, id: position + 1, address: server.address, isBackup: server.isBackup,
                    weight: health.effectiveWeight(configured: server.weight),
                    userWeight: operatorWeight >= 0 ? operatorWeight : server.weight, initialWeight: server.weight,
                    admin: health.adminState, checkedUp: health.checkedUp.load(ordering: .relaxed),
                    check: server.config.check ?? configs[index].defaultCheck,
                    checkStatus: health.checkStatus, checkCode: health.checkCode.load(ordering: .relaxed),
                    checkDurationMilliseconds: health.checkDurationMilliseconds.load(ordering: .relaxed),
                    checkHealth: health.checkHealth.load(ordering: .relaxed),
                    checkFailures: health.checkFailures.load(ordering: .relaxed),
                    downTransitions: health.downTransitions.load(ordering: .relaxed),
                    secondsSinceChange: Int((now - (lastChange > 0 ? lastChange : startedAt)) / 1_000_000_000),
                    downtimeSeconds: Int(downtime / 1_000_000_000),
                    counters: StatsCounters(health.stats, current: health.current.load(ordering: .relaxed),
                                            maxCurrent: health.maxCurrent.load(ordering: .relaxed),
                                            total: health.total.load(ordering: .relaxed)))
            }
            backends.append(BackendStats(
                name: table.name, mode: configs[index].mode, balance: configs[index].balance, generation: table.generation, servers: servers,
                counters: StatsCounters(counters.stats, current: counters.current.load(ordering: .relaxed),
                                        maxCurrent: counters.maxCurrent.load(ordering: .relaxed),
                                        total: counters.total.load(ordering: .relaxed)),
                discovery: configs[index].discovery, discoveryStatus: counters.discovery.reading))
        }
        return StatsSnapshot(
            version: version, pid: Int(Posix.processID()), threads: workerCount, maxConnections: shared.maxConnections,
            currentConnections: shared.active.load(ordering: .relaxed),
            uptimeSeconds: Int((now - startedAt) / 1_000_000_000),
            startTimeSeconds: Int(startedWall / 1000), tableGeneration: generation,
            frontends: frontends, backends: backends)
    }
}
