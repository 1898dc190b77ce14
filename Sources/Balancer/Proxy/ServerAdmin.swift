// The operator's changes to a server (Runtime API `set server`, `enable/disable server`,
// the stats page's actions), in one place, so that both interfaces change a server the
// same way, republish its backend's schedule, and log in haproxy's words.
//
// The state and weight live on ServerHealth, which follows the server across table
// generations (same backend, name and address), so a discovery update that re-lists the
// server keeps what the operator decided.

extension Proxy {
    /// Puts `server` of `backend` in `state`. Returns false when it already was.
    @discardableResult
    public func setAdminState(_ state: AdminState, of server: Server, backend: String) -> Bool {
        let previous = AdminState(rawValue: server.health.adminRaw.exchange(state.rawValue, ordering: .relaxed)) ?? .ready
        guard previous != state else { return false }
        reweigh(backend: backend)
        ControlLog.line(ServerAdminLog.line(from: previous, to: state, backend: backend, server: server,
                                            servers: tables.first { $0.name == backend }?.servers ?? []))
        return true
    }

    /// Gives `server` of `backend` the operator's `weight` (0...256).
    public func setOperatorWeight(_ weight: Int, of server: Server, backend: String) {
        server.health.operatorWeight.store(weight, ordering: .relaxed)
        reweigh(backend: backend)
    }
}

/// haproxy's lines for forced state changes (srv_update_status(), as Debian's haproxy 2.6
/// prints them for `set server B/S state ...`); a weight change logs nothing, as there.
enum ServerAdminLog {
    static func line(from previous: AdminState, to state: AdminState, backend: String, server: Server, servers: [Server]) -> String {
        let (active, backup) = Server.takingTraffic(servers)
        let name = "\(server.isBackup ? "Backup " : "")Server \(backend)/\(server.name)"
        switch state {
        case .maint:
            return "\(name) is going DOWN for maintenance. \(active) active and \(backup) backup servers left. "
                + "\(server.health.current.load(ordering: .relaxed)) sessions active, 0 requeued, 0 remaining in queue."
        case .drain:
            return "\(name) enters drain state. \(active) active and \(backup) backup servers online. 0 sessions requeued, 0 total in queue."
        case .ready:
            return "\(name) is UP/READY (leaving forced \(previous == .maint ? "maintenance" : "drain"))."
        }
    }
}
