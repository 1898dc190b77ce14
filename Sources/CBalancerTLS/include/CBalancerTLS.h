// CBalancerTLS: the system's OpenSSL 3 (libssl, libcrypto), as Swift can call it.
//
// Why this exists: OpenSSL's functions import into Swift as they are, but much of its
// API is macros over SSL_CTX_ctrl/SSL_CTX_callback_ctrl (modes, protocol versions, the
// SNI callback) and 64-bit option bits built with SSL_OP_BIT, which Swift cannot call
// or import. Each wrapper here is a one-line pass-through of such a macro; the few
// helpers that walk OpenSSL's stacks (a certificate's names, ALPN selection) are in
// tls.c. Everything that decides anything lives in Swift (Sources/Balancer/TLS).
//
// Linked with -lssl -lcrypto (Package.swift); the headers are Debian's libssl-dev.
#ifndef C_BALANCER_TLS_H
#define C_BALANCER_TLS_H

#include <stdint.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/// The modes every context of balancerd sets:
/// - SSL_MODE_RELEASE_BUFFERS: an idle connection holds no record buffers;
/// - SSL_MODE_ENABLE_PARTIAL_WRITE: SSL_write returns after each record, like write(2);
/// - SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: a retried write may come from a buffer that
///   moved (the session's output buffer can be compacted or swapped between retries).
/// And read-ahead: without it OpenSSL reads each record with two read(2) calls (the
/// 5-byte header, then the body); with it, one read takes whatever the socket holds.
/// Measured on HTTPS keep-alive: 4.7 reads per request without it. The sessions call
/// SSL_read until it wants the socket, so nothing read ahead is left waiting for an
/// epoll event that will not come.
static inline void cbt_ctx_set_modes(SSL_CTX *ctx) {
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
}
/// Server sessions are neither stored in nor looked up from OpenSSL's internal cache
/// (session tickets resume them instead).
static inline void cbt_ctx_disable_internal_session_cache(SSL_CTX *ctx) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
}
static inline int cbt_ctx_set_min_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_min_proto_version(ctx, version); }
static inline int cbt_ctx_set_max_proto_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_max_proto_version(ctx, version); }
static inline void cbt_ctx_set_options(SSL_CTX *ctx, uint64_t options) { SSL_CTX_set_options(ctx, options); }

// Option bits (SSL_OP_BIT is a macro Swift does not import).
static inline uint64_t cbt_op_no_ticket(void) { return SSL_OP_NO_TICKET; }
static inline uint64_t cbt_op_no_sslv3(void) { return SSL_OP_NO_SSLv3; }
static inline uint64_t cbt_op_no_tlsv1(void) { return SSL_OP_NO_TLSv1; }
static inline uint64_t cbt_op_no_tlsv1_1(void) { return SSL_OP_NO_TLSv1_1; }
static inline uint64_t cbt_op_no_tlsv1_2(void) { return SSL_OP_NO_TLSv1_2; }
static inline uint64_t cbt_op_no_tlsv1_3(void) { return SSL_OP_NO_TLSv1_3; }
/// A peer's FIN without close_notify ends the stream (SSL_ERROR_ZERO_RETURN) instead of
/// failing it: many HTTP clients close that way.
static inline uint64_t cbt_op_ignore_unexpected_eof(void) { return SSL_OP_IGNORE_UNEXPECTED_EOF; }
static inline uint64_t cbt_op_no_renegotiation(void) { return SSL_OP_NO_RENEGOTIATION; }
static inline uint64_t cbt_op_cipher_server_preference(void) { return SSL_OP_CIPHER_SERVER_PREFERENCE; }

typedef int (*cbt_servername_callback)(SSL *ssl, int *alert, void *arg);
static inline void cbt_ctx_set_servername_callback(SSL_CTX *ctx, cbt_servername_callback callback, void *arg) {
    SSL_CTX_set_tlsext_servername_callback(ctx, callback);
    SSL_CTX_set_tlsext_servername_arg(ctx, arg);
}
/// Sets the server name a client connection sends (SNI); 1 on success.
static inline int cbt_set_servername(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }
/// The server name the client sent (SNI), or NULL.
static inline const char *cbt_servername(const SSL *ssl) { return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name); }

/// Answers ALPN with "http/1.1" when the client offers it, and with no protocol when it
/// does not (the handshake goes on, as haproxy does).
void cbt_ctx_set_alpn_http11(SSL_CTX *ctx);

/// The DNS names of the context's certificate: its subjectAltName DNS entries, or its
/// subject CN when it has none; '\n'-separated, malloc'd (free it), NULL without a
/// certificate.
char *cbt_ctx_certificate_names(SSL_CTX *ctx);
/// The context certificate's subject, one line (RFC 2253), malloc'd; NULL without one.
char *cbt_ctx_certificate_subject(SSL_CTX *ctx);

/// Attaches `fd` to `ssl` through balancerd's socket BIO (recv/send; see tls.c), in
/// place of SSL_set_fd; 1 on success.
int cbt_set_socket(SSL *ssl, int fd);
/// SSL_read, and whether the socket is known to be empty afterwards (`*drained`): the
/// caller may then wait for epoll instead of reading again to meet EAGAIN.
int cbt_read(SSL *ssl, void *buffer, int length, int *drained);

/// The oldest error on this thread's OpenSSL error queue as text (empty when none), and
/// the queue cleared: OpenSSL's SSL_get_error reads the queue, so it must not carry a
/// previous connection's error.
void cbt_take_error(char *buffer, size_t size);

#endif
