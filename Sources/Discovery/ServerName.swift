// Stable, readable server names for discovered servers (the Consul service ID, the etcd
// key), safe in logs, on the stats page and in an exported haproxy.cfg.
enum ServerName {
    /// [A-Za-z0-9_.-] kept, anything else `_`; `fallback` when nothing is left.
    static func sanitized(_ id: String, fallback: String) -> String {
        let name = String(id.map { c -> Character in
            guard let ascii = c.asciiValue else { return "_" }
            switch ascii {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"):
                return c
            default:
                return "_"
            }
        })
        return name.isEmpty ? fallback : name
    }
}
