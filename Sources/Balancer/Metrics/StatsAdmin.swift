// Admin actions from the stats page, following haproxy's `stats admin if …` and `stats
// auth`: who may see the page and who may act on it, the form haproxy posts
// (`s=SERVER&s=…&action=drain&b=BACKEND`), and applying it to the servers' operator state.
//
// The rules (README, "The stats page"):
// - with `stats auth` lines, every request for the page, its CSV and the live config needs
//   one of those credentials (HTTP Basic), and an admin action needs them too;
// - without, anyone who reaches the listener sees the page, and admin actions are taken
//   from loopback clients only;
// - in both cases, admin actions need `stats admin`.

public enum StatsAdmin {
    public enum Access: Equatable {
        case allowed
        /// Credentials are configured and the request has none that match: 401 with a
        /// challenge.
        case needsCredentials
        /// Not allowed whatever the credentials (admin off, or not loopback).
        case denied
    }

    /// May this request see the page (GET)?
    public static func viewAccess(_ request: ControlHTTPServer.Request, config: StatsConfig) -> Access {
        config.credentials.isEmpty || hasCredentials(request, config: config) ? .allowed : .needsCredentials
    }

    /// May this request change servers (POST)?
    public static func adminAccess(_ request: ControlHTTPServer.Request, config: StatsConfig) -> Access {
        if !config.credentials.isEmpty {
            guard hasCredentials(request, config: config) else { return .needsCredentials }
            return config.admin ? .allowed : .denied
        }
        return config.admin && isLoopback(request.peer) ? .allowed : .denied
    }

    static func hasCredentials(_ request: ControlHTTPServer.Request, config: StatsConfig) -> Bool {
        guard let value = request.field("Authorization") else { return false }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "basic", let decoded = base64Decode(String(parts[1])),
              let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else { return false }
        let user = String(decoding: decoded[..<colon], as: UTF8.self)
        let password = String(decoding: decoded[(colon + 1)...], as: UTF8.self)
        return config.credentials.contains { $0.user == user && $0.password == password }
    }

    public static func isLoopback(_ address: SocketAddress) -> Bool {
        let host = address.host
        return host.hasPrefix("127.") || host == "::1" || host.hasPrefix("::ffff:127.")
    }

    /// What a form asks for.
    public struct Action: Equatable, Sendable {
        public enum Kind: Equatable, Sendable {
            case state(AdminState)
            case weight(Int)
        }
        public var backend: String
        public var servers: [String]
        public var kind: Kind
    }

    /// Reads an `application/x-www-form-urlencoded` admin form; nil if it is not one
    /// (haproxy answers `;st=ERRP`).
    public static func parseForm(_ body: [UInt8]) -> Action? {
        var backend: String?
        var servers: [String] = []
        var action: String?
        var weight: Int?
        for pair in body.split(separator: UInt8(ascii: "&")) {
            let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = percentDecode(parts[0]), let value = parts.count > 1 ? percentDecode(parts[1]) : "" else { return nil }
            switch name {
            case "b": backend = value
            case "s": servers.append(value)
            case "action": action = value
            case "weight": weight = value.isEmpty ? nil : Int(value)
            default: break
            }
        }
        guard let backend, !backend.isEmpty, !servers.isEmpty, let action else { return nil }
        switch action {
        case "ready": return Action(backend: backend, servers: servers, kind: .state(.ready))
        case "drain": return Action(backend: backend, servers: servers, kind: .state(.drain))
        case "maint": return Action(backend: backend, servers: servers, kind: .state(.maint))
        case "weight":
            guard let weight, (0...256).contains(weight) else { return nil }
            return Action(backend: backend, servers: servers, kind: .weight(weight))
        default: return nil
        }
    }

    /// Applies `action` to the live servers; returns haproxy's `;st=` code: DONE, PART
    /// (some servers were not found), ERRP (no backend or no server found).
    public static func apply(_ action: Action, to proxy: Proxy) -> String {
        // haproxy accepts `b=#<iid>` as well as the name; the name is what this page posts.
        guard let table = proxy.tables.first(where: { $0.name == action.backend }) else { return "ERRP" }
        var applied = 0
        for name in action.servers {
            guard let server = table.servers.first(where: { $0.name == name }) else { continue }
            applied += 1
            switch action.kind {
            case .state(let state): proxy.setAdminState(state, of: server, backend: table.name)
            case .weight(let weight): proxy.setOperatorWeight(weight, of: server, backend: table.name)
            }
        }
        guard applied > 0 else { return "ERRP" }
        return applied == action.servers.count ? "DONE" : "PART"
    }

    static func percentDecode(_ bytes: ArraySlice<UInt8>) -> String? {
        var out: [UInt8] = []
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            if b == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
            } else if b == UInt8(ascii: "%") {
                guard i + 2 < bytes.endIndex, let high = hex(bytes[i + 1]), let low = hex(bytes[i + 2]) else { return nil }
                out.append(high << 4 | low)
                i += 2
            } else {
                out.append(b)
            }
            i += 1
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    static func base64Decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var accumulator: UInt32 = 0
        var bits = 0
        for c in text.utf8 {
            let value: UInt32
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(c - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(c - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="): continue
            default: return nil
            }
            accumulator = accumulator << 6 | value
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return out
    }
}
