// The TLS side of one `ssl` bind: an OpenSSL context per certificate, and the choice
// between them by SNI. Built on the control thread (it reads files), then immutable:
// loops only create connections from it (SSL_new is thread-safe on a shared SSL_CTX).
// A certificate reload builds a new TLSContext and hands it to the loops; connections
// keep the context they were accepted with (TLSConnection holds it), so a swap never
// touches an established connection.
import CBalancerTLS
import Glibc

/// A certificate or setting that OpenSSL refused: which file (or setting), and why.
public struct TLSError: Error, Sendable, CustomStringConvertible, Equatable {
    public var source: String
    public var reason: String

    init(_ source: String, _ reason: String) {
        self.source = source
        self.reason = reason
    }

    /// OpenSSL's reason for the last failure (and its error queue emptied).
    static func openSSLReason() -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        buffer.withUnsafeMutableBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { cbt_take_error($0.baseAddress, $0.count) }
        }
        let text = String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
        return text.isEmpty ? "unknown OpenSSL error" : text
    }

    public var description: String { "\(source): \(reason)" }
}

public final class TLSContext: @unchecked Sendable {
    /// One loaded PEM: its OpenSSL context and the names it serves.
    struct Certificate {
        let context: OpaquePointer
        let file: String
        /// Lower-cased DNS names (subjectAltName, else CN), wildcards included (`*.a.b`).
        let names: [String]
        /// The subject line, for logs and tests.
        let subject: String
    }

    let config: TLSBindConfig
    /// In load order; the first is the default.
    let certificates: [Certificate]
    /// Exact names and wildcard suffixes (`*.example.com` → `example.com`) to the index
    /// of the first certificate that names them.
    private let exact: [String: Int]
    private let wildcard: [String: Int]

    /// The subjects of the loaded certificates, in order (the first is the default).
    public var subjects: [String] { certificates.map(\.subject) }
    /// The PEM files loaded, in order.
    public var files: [String] { certificates.map(\.file) }

    /// Loads every certificate of `config` (files, and the regular files of directories).
    /// Throws naming the first file OpenSSL refused, with OpenSSL's reason.
    public init(_ config: TLSBindConfig) throws(TLSError) {
        self.config = config
        var files: [String] = []
        for path in config.certificates {
            if Posix.isDirectory(path) {
                let names: [String]
                do {
                    names = try Posix.regularFiles(in: path)
                } catch {
                    throw TLSError(path, "\(error)")
                }
                // haproxy's companion files sit next to the PEMs; they are not certificates.
                let companions = [".key", ".ocsp", ".issuer", ".sctl"]
                let pems = names.filter { name in !companions.contains { name.hasSuffix($0) } }
                if pems.isEmpty { throw TLSError(path, "no certificate in directory") }
                files += pems.map { path + "/" + $0 }
            } else {
                files.append(path)
            }
        }
        guard !files.isEmpty else { throw TLSError("crt", "no certificate configured") }
        var loaded: [Certificate] = []
        do throws(TLSError) {
            for file in files { loaded.append(try Self.load(file, config: config)) }
        } catch {
            for certificate in loaded { SSL_CTX_free(certificate.context) }
            throw error
        }
        certificates = loaded
        var exact: [String: Int] = [:]
        var wildcard: [String: Int] = [:]
        for (index, certificate) in loaded.enumerated() {
            for name in certificate.names {
                if name.hasPrefix("*.") {
                    let suffix = String(name.dropFirst(2))
                    if wildcard[suffix] == nil { wildcard[suffix] = index }
                } else if exact[name] == nil {
                    exact[name] = index
                }
            }
        }
        self.exact = exact
        self.wildcard = wildcard
        // SNI is answered by the context a handshake starts on: the first one. The
        // argument is not retained; every connection retains this object, so it lives
        // as long as any handshake that can call back.
        cbt_ctx_set_servername_callback(loaded[0].context, tlsServerNameCallback,
                                        Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        for certificate in certificates { SSL_CTX_free(certificate.context) }
    }

    /// The certificate for a client's server name: an exact name first, then a wildcard
    /// that covers exactly one label (`*.example.com` serves `a.example.com`, not
    /// `example.com` nor `a.b.example.com`, RFC 6125 §6.4.3); nil when none matches.
    public func certificateIndex(serverName: String) -> Int? {
        let name = serverName.lowercased()
        if let index = exact[name] { return index }
        guard let dot = name.firstIndex(of: "."), dot != name.startIndex else { return nil }
        return wildcard[String(name[name.index(after: dot)...])]
    }

    func context(at index: Int) -> OpaquePointer { certificates[index].context }

    private static func load(_ file: String, config: TLSBindConfig) throws(TLSError) -> Certificate {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError(file, TLSError.openSSLReason()) }
        do throws(TLSError) {
            try configure(ctx, config)
            guard SSL_CTX_use_certificate_chain_file(ctx, file) == 1 else { throw TLSError(file, TLSError.openSSLReason()) }
            guard SSL_CTX_use_PrivateKey_file(ctx, file, SSL_FILETYPE_PEM) == 1 else { throw TLSError(file, TLSError.openSSLReason()) }
            guard SSL_CTX_check_private_key(ctx) == 1 else { throw TLSError(file, TLSError.openSSLReason()) }
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        let names = takeString(cbt_ctx_certificate_names(ctx)).split(separator: "\n").map { $0.lowercased() }
        return Certificate(context: ctx, file: file, names: names, subject: takeString(cbt_ctx_certificate_subject(ctx)))
    }

    /// The same settings on every certificate's context: after SNI switches contexts,
    /// the handshake must negotiate exactly as on the first.
    private static func configure(_ ctx: OpaquePointer, _ config: TLSBindConfig) throws(TLSError) {
        cbt_ctx_set_modes(ctx)
        var options = cbt_op_ignore_unexpected_eof() | cbt_op_no_renegotiation() | cbt_op_cipher_server_preference()
        if config.options.noTickets {
            options |= cbt_op_no_ticket()
        } else {
            // With tickets the client carries its session: OpenSSL's internal cache would
            // only hold a copy of every session (up to 20,480, a few KiB each) and walk
            // all of them every 255 handshakes to expire old ones. Without tickets the
            // cache is what resumes a session, so it stays.
            cbt_ctx_disable_internal_session_cache(ctx)
        }
        for version in config.options.disabled {
            switch version {
            case .ssl3: options |= cbt_op_no_sslv3()
            case .tls10: options |= cbt_op_no_tlsv1()
            case .tls11: options |= cbt_op_no_tlsv1_1()
            case .tls12: options |= cbt_op_no_tlsv1_2()
            case .tls13: options |= cbt_op_no_tlsv1_3()
            }
        }
        cbt_ctx_set_options(ctx, options)
        if let min = config.options.minVersion, cbt_ctx_set_min_proto_version(ctx, min.openSSL) != 1 {
            throw TLSError("ssl-min-ver \(min.rawValue)", TLSError.openSSLReason())
        }
        if let max = config.options.maxVersion, cbt_ctx_set_max_proto_version(ctx, max.openSSL) != 1 {
            throw TLSError("ssl-max-ver \(max.rawValue)", TLSError.openSSLReason())
        }
        if let ciphers = config.ciphers, SSL_CTX_set_cipher_list(ctx, ciphers) != 1 {
            throw TLSError("ciphers \(ciphers)", TLSError.openSSLReason())
        }
        if let suites = config.ciphersuites, SSL_CTX_set_ciphersuites(ctx, suites) != 1 {
            throw TLSError("ciphersuites \(suites)", TLSError.openSSLReason())
        }
        if config.alpn.contains("http/1.1") { cbt_ctx_set_alpn_http11(ctx) }
    }

    private static func takeString(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
        guard let pointer else { return "" }
        defer { free(pointer) }
        return String(cString: pointer)
    }
}

extension TLSVersion {
    var openSSL: Int32 {
        switch self {
        case .ssl3: SSL3_VERSION
        case .tls10: TLS1_VERSION
        case .tls11: TLS1_1_VERSION
        case .tls12: TLS1_2_VERSION
        case .tls13: TLS1_3_VERSION
        }
    }
}

/// OpenSSL's SNI callback (on the thread of the loop doing the handshake): switches the
/// connection to the certificate that names the server, or leaves it on the default.
private let tlsServerNameCallback: cbt_servername_callback = { ssl, _, arg in
    guard let ssl, let arg, let name = cbt_servername(ssl) else { return SSL_TLSEXT_ERR_OK }
    let context = Unmanaged<TLSContext>.fromOpaque(arg).takeUnretainedValue()
    if let index = context.certificateIndex(serverName: String(cString: name)), index != 0 {
        _ = SSL_set_SSL_CTX(ssl, context.context(at: index))
    }
    return SSL_TLSEXT_ERR_OK
}
