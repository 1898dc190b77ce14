// The client side of TLS towards servers (`server ... ssl`): one OpenSSL client context
// per verification setting (verify, ca-file), shared by every server that uses it.
// Built on the control thread when a table is built (it reads the CA file), then
// immutable: loops only create connections from it (SSL_new is thread-safe on a shared
// SSL_CTX). Connections retain the context they were made with, so a table swap that
// drops it never frees it under a live connection.
import CBalancerTLS
import Glibc

public final class TLSClientContext: @unchecked Sendable {
    let context: OpaquePointer
    public let config: TLSServerConfig

    /// Loads the authorities of `config.caFile`. Throws naming the file, with OpenSSL's
    /// reason.
    public init(_ config: TLSServerConfig) throws(TLSError) {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TLSError("ssl", TLSError.openSSLReason()) }
        cbt_ctx_set_modes(ctx)
        cbt_ctx_set_options(ctx, cbt_op_ignore_unexpected_eof() | cbt_op_no_renegotiation())
        if let caFile = config.caFile, SSL_CTX_load_verify_locations(ctx, caFile, nil) != 1 {
            let reason = TLSError.openSSLReason()
            SSL_CTX_free(ctx)
            throw TLSError(caFile, reason)
        }
        SSL_CTX_set_verify(ctx, config.verify == .required ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nil)
        self.context = ctx
        self.config = config
    }

    deinit {
        SSL_CTX_free(context)
    }

    /// The contexts of a set of servers, one per distinct (verify, ca-file): the server
    /// name is set per connection, so servers differing only by `sni` share a context.
    /// Built anew with each table, so a reload reads the CA files again.
    static func contexts(for configs: [TLSServerConfig?]) throws(TLSError) -> [TLSClientContext?] {
        var built: [TLSServerConfig: TLSClientContext] = [:]
        var result: [TLSClientContext?] = []
        for config in configs {
            guard let config else {
                result.append(nil)
                continue
            }
            let key = TLSServerConfig(verify: config.verify, caFile: config.caFile)
            let context: TLSClientContext
            if let found = built[key] {
                context = found
            } else {
                context = try TLSClientContext(key)
                built[key] = context
            }
            result.append(context)
        }
        return result
    }
}
