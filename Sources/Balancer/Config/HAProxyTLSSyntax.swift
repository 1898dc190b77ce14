// The TLS words of haproxy's configuration: the options after `bind ADDR ssl`, and the
// `ssl-default-bind-*` lines of `global` they start from. haproxy applies the defaults
// after the whole file is read (ssl_sock_prepare_bind_conf), so a bind keeps only what
// it said itself (`BindTLSWords`) until the parser resolves it against the defaults.

/// What one bind line said about TLS, before the `global` defaults are applied.
struct BindTLSWords: Equatable {
    var ssl = false
    var certificates: [String] = []
    var alpn: [String] = []
    var ciphers: String?
    var ciphersuites: String?
    var options = TLSOptions()

    /// The bind's settings: the defaults, then what the bind said over them (a version
    /// bound replaces the default's, `no-*` options add up).
    func resolved(_ defaults: TLSBindDefaults) -> TLSBindConfig {
        var config = TLSBindConfig(certificates: certificates, defaults: defaults)
        config.alpn = alpn
        if let ciphers { config.ciphers = ciphers }
        if let ciphersuites { config.ciphersuites = ciphersuites }
        if let min = options.minVersion { config.options.minVersion = min }
        if let max = options.maxVersion { config.options.maxVersion = max }
        config.options.disabled.formUnion(options.disabled)
        config.options.noTickets = config.options.noTickets || options.noTickets
        return config
    }
}

enum HAProxyTLSSyntax {
    typealias Failure = KeywordFailure

    /// Reads one option of `ssl-default-bind-options` or of a bind line at `words[i]`
    /// into `options`; returns how many words it took, 0 when the word is not an option.
    static func option(_ words: ArraySlice<String>, at i: Int, into options: inout TLSOptions) throws(Failure) -> Int {
        let word = words[i]
        switch word {
        case "ssl-min-ver", "ssl-max-ver":
            guard i + 1 < words.endIndex else { throw Failure(word, "'\(word)' needs a version (SSLv3, TLSv1.0 ... TLSv1.3)") }
            guard let version = TLSVersion(rawValue: words[i + 1]) else {
                throw Failure(word, "unknown TLS version '\(words[i + 1])' (SSLv3, TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3)")
            }
            if word == "ssl-min-ver" { options.minVersion = version } else { options.maxVersion = version }
            return 2
        case "no-tls-tickets":
            options.noTickets = true
            return 1
        default:
            if let version = TLSVersion.allCases.first(where: { $0.disableKeyword == word }) {
                options.disabled.insert(version)
                return 1
            }
            return 0
        }
    }

    /// `ssl-default-bind-options ...` in `global`.
    static func defaultOptions(_ words: ArraySlice<String>) throws(Failure) -> TLSOptions {
        var options = TLSOptions()
        var i = words.startIndex
        while i < words.endIndex {
            let taken = try option(words, at: i, into: &options)
            guard taken > 0 else {
                throw Failure(words[i], "unsupported 'ssl-default-bind-options' option '\(words[i])' (balancerd supports ssl-min-ver, ssl-max-ver, no-tls-tickets, no-sslv3, no-tlsv10, no-tlsv11, no-tlsv12, no-tlsv13)")
            }
            i += taken
        }
        return options
    }

    /// The parameters after a bind's address. `crtBase` (global `crt-base`) prefixes the
    /// relative `crt` paths, as in haproxy.
    static func bindParameters(_ words: ArraySlice<String>, crtBase: String?) throws(Failure) -> BindTLSWords {
        var tls = BindTLSWords()
        var i = words.startIndex
        func value(_ keyword: String) throws(Failure) -> String {
            guard i + 1 < words.endIndex else { throw Failure(keyword, "'\(keyword)' needs a value") }
            return words[i + 1]
        }
        while i < words.endIndex {
            let word = words[i]
            switch word {
            case "ssl":
                tls.ssl = true
                i += 1
                continue
            case "crt":
                var path = try value(word)
                if let crtBase, !path.hasPrefix("/") { path = crtBase + "/" + path }
                tls.certificates.append(path)
            case "alpn":
                tls.alpn = try value(word).split(separator: ",").map(String.init)
                guard tls.alpn.contains("http/1.1") else {
                    throw Failure(word, "alpn '\(words[i + 1])' has no 'http/1.1' (the only protocol balancerd speaks)")
                }
            case "ciphers":
                tls.ciphers = try value(word)
            case "ciphersuites":
                tls.ciphersuites = try value(word)
            default:
                let taken = try option(words, at: i, into: &tls.options)
                guard taken > 0 else {
                    throw Failure(word, "bind parameter '\(word)' is not supported (balancerd supports ssl, crt, alpn, ciphers, ciphersuites, ssl-min-ver, ssl-max-ver, no-tls-tickets, no-sslv3, no-tlsv10, no-tlsv11, no-tlsv12, no-tlsv13)")
                }
                i += taken
                continue
            }
            i += 2
        }
        if tls.ssl && tls.certificates.isEmpty {
            throw Failure("ssl", "an 'ssl' bind needs at least one 'crt PEM'")
        }
        if !tls.ssl && tls != BindTLSWords() {
            throw Failure(words[words.startIndex], "TLS parameters on a bind without 'ssl'")
        }
        return tls
    }

    /// The bind parameters that say `config` (after `bind ADDR`), as the export writes
    /// them: every setting on the bind, so that haproxy reads the same without `global`
    /// defaults.
    static func bindParameters(_ config: TLSBindConfig) -> String {
        var words = ["ssl"]
        for path in config.certificates { words += ["crt", path] }
        if !config.alpn.isEmpty { words += ["alpn", config.alpn.joined(separator: ",")] }
        if let ciphers = config.ciphers { words += ["ciphers", ciphers] }
        if let suites = config.ciphersuites { words += ["ciphersuites", suites] }
        if let min = config.options.minVersion { words += ["ssl-min-ver", min.rawValue] }
        if let max = config.options.maxVersion { words += ["ssl-max-ver", max.rawValue] }
        if config.options.noTickets { words.append("no-tls-tickets") }
        for version in TLSVersion.allCases where config.options.disabled.contains(version) {
            words.append(version.disableKeyword)
        }
        return words.joined(separator: " ")
    }
}
