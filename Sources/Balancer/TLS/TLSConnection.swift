// One TLS connection on a non-blocking socket: OpenSSL's SSL object over the fd, driven
// by the session that owns the socket. Loop thread only (the owning loop's).
//
// Like Posix.read/write, "would block" is a value; with TLS it names the direction the
// record layer waits for, which is not always the one asked: a read can need the socket
// writable (a handshake message to send), a write readable. The session watches what the
// outcome says and calls again when the socket is ready.
//
// Memory: the context sets SSL_MODE_RELEASE_BUFFERS, so between records the connection
// holds no record buffers, only OpenSSL's per-connection state (a few KiB).
import CBalancerTLS
import Glibc

final class TLSConnection {
    enum Outcome: Equatable {
        case processed(Int)
        /// Call again when the socket is readable.
        case wantRead
        /// Call again when the socket is writable.
        case wantWrite
        /// The peer ended the stream (close_notify, or a FIN: see IGNORE_UNEXPECTED_EOF).
        case closed
        /// The connection cannot go on (protocol error, reset); the text says why.
        case failed(String)
    }

    /// About what an idle connection's OpenSSL state takes (measured: ~9 KiB of RSS per
    /// idle HTTPS connection, session included); tells the pool's sweep that closing
    /// connections freed memory worth trimming.
    static let estimatedIdleBytes = 8 * 1024

    /// The context the connection was made with (a TLSContext for a client, a
    /// TLSClientContext towards a server): it stays alive (and in use for this
    /// connection) after a reload swapped in a new one.
    private let context: AnyObject
    private let ssl: OpaquePointer
    private(set) var handshakeDone = false
    /// A fatal error happened: OpenSSL forbids a close_notify after it.
    private var broken = false
    private var closeNotifySent = false

    init?(context: TLSContext, fd: CInt) {
        guard let ssl = Self.makeSSL(context.context(at: 0), fd: fd) else { return nil }
        SSL_set_accept_state(ssl)
        self.ssl = ssl
        self.context = context
    }

    /// A connection to a server (`server ... ssl`): the handshake is SSL_connect's. With
    /// `serverName` the handshake sends it (SNI), and under `verify required` the server's
    /// certificate must name it (RFC 6125, checked by OpenSSL during the handshake).
    init?(client context: TLSClientContext, serverName: String?, fd: CInt) {
        let verifyName = context.config.verify == .required
        guard let ssl = Self.makeSSL(context.context, fd: fd, configure: { ssl in
            guard let serverName else { return true }
            return cbt_set_servername(ssl, serverName) == 1 && (!verifyName || SSL_set1_host(ssl, serverName) == 1)
        }) else { return nil }
        SSL_set_connect_state(ssl)
        self.ssl = ssl
        self.context = context
    }

    deinit {
        SSL_free(ssl)
    }

    /// An SSL object from `ctx` over `fd` (balancerd's socket BIO), then `configure`; nil
    /// when a step fails, with OpenSSL's error queue cleared for the next connection.
    private static func makeSSL(_ ctx: OpaquePointer, fd: CInt,
                                configure: (OpaquePointer) -> Bool = { _ in true }) -> OpaquePointer? {
        guard let ssl = SSL_new(ctx) else {
            _ = TLSError.openSSLReason()
            return nil
        }
        guard cbt_set_socket(ssl, fd) == 1, configure(ssl) else {
            _ = TLSError.openSSLReason()
            SSL_free(ssl)
            return nil
        }
        return ssl
    }

    /// Drives the handshake; `.processed(0)` once it is complete.
    func handshake() -> Outcome {
        if handshakeDone { return .processed(0) }
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            handshakeDone = true
            return .processed(0)
        }
        return failure(result, "handshake")
    }

    /// After a read that returned bytes: the socket was found empty and OpenSSL holds
    /// nothing unread, so the next bytes will come with an epoll event (edge-triggered)
    /// and calling again would only meet EAGAIN. False tells nothing.
    private(set) var socketDrained = false

    /// Reads decrypted bytes into `buffer` (at most one record's worth per call).
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Outcome {
        socketDrained = false
        guard buffer.count > 0 else { return .processed(0) }
        var drained: CInt = 0
        let result = cbt_read(ssl, buffer.baseAddress, Int32(clamping: buffer.count), &drained)
        if result > 0 {
            socketDrained = drained != 0
            return .processed(Int(result))
        }
        return failure(result, "read")
    }

    /// Encrypts and sends bytes of `buffer`: with partial writes enabled, returns after
    /// each record that left, so a large buffer goes out in several calls.
    func write(_ buffer: UnsafeRawBufferPointer) -> Outcome {
        guard buffer.count > 0 else { return .processed(0) }
        let result = SSL_write(ssl, buffer.baseAddress, Int32(clamping: buffer.count))
        if result > 0 { return .processed(Int(result)) }
        return failure(result, "write")
    }

    /// Sends close_notify once, without waiting for the peer's (HTTP does not need it,
    /// RFC 9112 §9.8); best effort on a non-blocking socket.
    ///
    /// Sent on every orderly close, not only after a half-close: a client that reads to the
    /// end (an HTTP/1.0 response, `Connection: close`) and meets a bare FIN counts it as an
    /// error, and OpenSSL then drops the session, so the client's next connection cannot
    /// resume it (haproxy and nginx send close_notify; measured with `openssl s_time -reuse`).
    func shutdown() {
        guard handshakeDone, !broken, !closeNotifySent else { return }
        closeNotifySent = true
        if SSL_shutdown(ssl) < 0 { _ = TLSError.openSSLReason() }
    }

    /// The server name the client asked for (SNI), as raw bytes; valid until the next call
    /// on this connection. nil without SNI.
    func withServerName<T>(_ body: (UnsafeRawBufferPointer?) -> T) -> T {
        guard let name = cbt_servername(ssl) else { return body(nil) }
        return body(UnsafeRawBufferPointer(start: name, count: strlen(name)))
    }

    /// The negotiated protocol version ("TLSv1.3"), for logs and tests.
    var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// After a failed client handshake: the certificate verified but did not name the
    /// server name asked for (`verify required` with a name). Health checks say so in
    /// haproxy's words.
    var peerNameMismatch: Bool { SSL_get_verify_result(ssl) == Int(X509_V_ERR_HOSTNAME_MISMATCH) }

    private func failure(_ result: Int32, _ operation: StaticString) -> Outcome {
        let code = SSL_get_error(ssl, result)
        switch code {
        case SSL_ERROR_WANT_READ:
            return .wantRead
        case SSL_ERROR_WANT_WRITE:
            return .wantWrite
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        case SSL_ERROR_SYSCALL:
            broken = true
            let err = Glibc.errno
            _ = TLSError.openSSLReason()
            if err == 0 { return .closed }
            return .failed("TLS \(operation): \(Errno(rawValue: err))")
        default:
            broken = true
            return .failed("TLS \(operation): \(TLSError.openSSLReason())")
        }
    }
}
