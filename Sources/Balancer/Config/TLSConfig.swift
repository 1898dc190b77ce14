// TLS settings of a bind line (`bind ADDR:PORT ssl crt PEM ...`), resolved: the
// `ssl-default-bind-*` lines of `global` are already applied, so the runtime and the
// export see one complete value per bind.

/// A protocol version, as haproxy writes it (`ssl-min-ver TLSv1.2`).
public enum TLSVersion: String, Sendable, Equatable, Comparable, CaseIterable {
    case ssl3 = "SSLv3"
    case tls10 = "TLSv1.0"
    case tls11 = "TLSv1.1"
    case tls12 = "TLSv1.2"
    case tls13 = "TLSv1.3"

    /// haproxy's `no-sslv3`, `no-tlsv10`, ... option for this version.
    public var disableKeyword: String {
        switch self {
        case .ssl3: "no-sslv3"
        case .tls10: "no-tlsv10"
        case .tls11: "no-tlsv11"
        case .tls12: "no-tlsv12"
        case .tls13: "no-tlsv13"
        }
    }

    public static func < (a: TLSVersion, b: TLSVersion) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// The options `ssl-default-bind-options` and a bind line share.
public struct TLSOptions: Sendable, Equatable {
    public var minVersion: TLSVersion? = nil
    public var maxVersion: TLSVersion? = nil
    /// `no-sslv3`, `no-tlsv10`, ...
    public var disabled: Set<TLSVersion> = []
    /// `no-tls-tickets`: no TLS session tickets (resumption by session id only).
    public var noTickets = false

    public init(minVersion: TLSVersion? = nil, maxVersion: TLSVersion? = nil, disabled: Set<TLSVersion> = [],
                noTickets: Bool = false) {
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.disabled = disabled
        self.noTickets = noTickets
    }
}

/// `ssl-default-bind-*` in `global`: what every `ssl` bind starts from.
public struct TLSBindDefaults: Sendable, Equatable {
    /// OpenSSL cipher list for TLS 1.2 and below (`ssl-default-bind-ciphers`).
    public var ciphers: String? = nil
    /// OpenSSL TLS 1.3 ciphersuites (`ssl-default-bind-ciphersuites`).
    public var ciphersuites: String? = nil
    public var options = TLSOptions()

    public init(ciphers: String? = nil, ciphersuites: String? = nil, options: TLSOptions = TLSOptions()) {
        self.ciphers = ciphers
        self.ciphersuites = ciphersuites
        self.options = options
    }
}

/// One `ssl` bind: the certificates and how the handshake is negotiated.
public struct TLSBindConfig: Sendable, Equatable {
    /// `crt` arguments in order: PEM files (certificate chain and key in one file) or
    /// directories of them. The first certificate loaded is the default (no SNI, or no
    /// certificate matches).
    public var certificates: [String]
    /// `alpn`: the protocols offered, in order (balancerd speaks `http/1.1` only).
    public var alpn: [String] = []
    public var ciphers: String? = nil
    public var ciphersuites: String? = nil
    public var options = TLSOptions()

    public init(certificates: [String], alpn: [String] = [], ciphers: String? = nil, ciphersuites: String? = nil,
                options: TLSOptions = TLSOptions()) {
        self.certificates = certificates
        self.alpn = alpn
        self.ciphers = ciphers
        self.ciphersuites = ciphersuites
        self.options = options
    }

    /// A bind with `defaults` applied; the bind's own keywords then override them.
    public init(certificates: [String], defaults: TLSBindDefaults) {
        self.init(certificates: certificates, ciphers: defaults.ciphers, ciphersuites: defaults.ciphersuites,
                  options: defaults.options)
    }
}

/// `verify` on a server line: whether the server's certificate chain is checked.
public enum TLSServerVerify: String, Sendable, Equatable {
    case none
    case required
}

/// TLS towards a server (`server NAME ADDR ssl [verify none|required] [ca-file F]
/// [sni str(NAME)]`): balancerd re-encrypts what it forwards.
public struct TLSServerConfig: Sendable, Equatable, Hashable {
    /// haproxy's default is `required` (`ssl-server-verify required`), which then needs a
    /// `ca-file`: haproxy -c refuses a server that would verify against nothing.
    public var verify: TLSServerVerify
    /// PEM file of the certificate authorities the server's chain must lead to.
    public var caFile: String?
    /// The server name sent in the handshake (`sni str(NAME)`); with `verify required`
    /// the server's certificate must also name it. nil: no SNI, no name check.
    public var serverName: String?

    public init(verify: TLSServerVerify = .required, caFile: String? = nil, serverName: String? = nil) {
        self.verify = verify
        self.caFile = caFile
        self.serverName = serverName
    }
}
