// The helpers of CBalancerTLS.h that walk OpenSSL structures (see the header).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <openssl/x509v3.h>
#include "CBalancerTLS.h"

static const unsigned char http11[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, outlen, http11, sizeof http11, in, inlen) != OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

void cbt_ctx_set_alpn_http11(SSL_CTX *ctx) { SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL); }

static void append(char **text, size_t *length, const char *name, size_t n) {
    char *grown = realloc(*text, *length + n + 2);
    if (!grown) return;
    *text = grown;
    if (*length > 0) (*text)[(*length)++] = '\n';
    memcpy(*text + *length, name, n);
    *length += n;
    (*text)[*length] = 0;
}

char *cbt_ctx_certificate_names(SSL_CTX *ctx) {
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    if (!cert) return NULL;
    char *text = calloc(1, 1);
    size_t length = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (names) {
        for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
            const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
            if (name->type != GEN_DNS) continue;
            const ASN1_IA5STRING *dns = name->d.dNSName;
            append(&text, &length, (const char *)ASN1_STRING_get0_data(dns), (size_t)ASN1_STRING_length(dns));
        }
        GENERAL_NAMES_free(names);
    }
    if (length == 0) {
        // RFC 6125: the CN counts only when there is no DNS subjectAltName.
        char cn[256];
        int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        if (n > 0) append(&text, &length, cn, (size_t)n);
    }
    return text;
}

char *cbt_ctx_certificate_subject(SSL_CTX *ctx) {
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    if (!cert) return NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return NULL;
    X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *text = malloc((size_t)n + 1);
    if (text) {
        memcpy(text, data, (size_t)n);
        text[n] = 0;
    }
    BIO_free(bio);
    return text;
}

void cbt_take_error(char *buffer, size_t size) {
    if (size == 0) return;
    buffer[0] = 0;
    unsigned long code = ERR_get_error();
    if (code != 0) {
        // The reason alone ("no start line", "key values mismatch") reads best in a log
        // line; the full code string when OpenSSL has no text for it.
        const char *reason = ERR_reason_error_string(code);
        if (reason) snprintf(buffer, size, "%s", reason);
        else ERR_error_string_n(code, buffer, size);
    }
    ERR_clear_error();
}

// MARK: the socket BIO

// OpenSSL's own socket BIO reads and writes with read(2)/write(2), which pass through
// the VFS layer (fdget_pos, rw_verify_area, the file's read_iter) before reaching the
// socket; recv(2)/send(2) go straight to it. perf on HTTPS keep-alive showed that layer
// at about 5% of the kernel's time per request, which haproxy (recv/send) does not pay.
// The BIO also tells the session when a read came back short: the socket's queue was
// empty then, and edge-triggered epoll reports whatever arrives next, so the session
// need not call again only to meet EAGAIN (the plain-socket path does the same).
typedef struct {
    int fd;
    int short_read;   // the last read(2)-equivalent returned less than asked
    int eof;          // the last read met the end of the stream (BIO_eof)
} cbt_socket;

static int socket_read(BIO *bio, char *out, size_t length, size_t *done) {
    cbt_socket *s = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    ssize_t n;
    do { n = recv(s->fd, out, length, 0); } while (n < 0 && errno == EINTR);
    if (n > 0) {
        s->short_read = (size_t)n < length;
        *done = (size_t)n;
        return 1;
    }
    if (n == 0) {
        s->eof = 1;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        BIO_set_retry_read(bio);
    }
    *done = 0;
    return 0;
}

static int socket_write(BIO *bio, const char *data, size_t length, size_t *done) {
    cbt_socket *s = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    ssize_t n;
    // MSG_NOSIGNAL: a client that went away gives EPIPE, never SIGPIPE.
    do { n = send(s->fd, data, length, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    if (n >= 0) {
        *done = (size_t)n;
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
    *done = 0;
    return 0;
}

static long socket_ctrl(BIO *bio, int command, long number, void *pointer) {
    cbt_socket *s = BIO_get_data(bio);
    (void)number;
    switch (command) {
    case BIO_CTRL_FLUSH:
    case BIO_CTRL_DUP:
        return 1;
    case BIO_CTRL_EOF:
        // OpenSSL asks after a failed read whether it was the end of the stream, to
        // apply SSL_OP_IGNORE_UNEXPECTED_EOF.
        return s->eof;
    case BIO_C_GET_FD:
        if (pointer) *(int *)pointer = s->fd;
        return s->fd;
    default:
        return 0;
    }
}

static int socket_create(BIO *bio) {
    BIO_set_init(bio, 1);
    return 1;
}

static int socket_destroy(BIO *bio) {
    OPENSSL_free(BIO_get_data(bio));
    BIO_set_data(bio, NULL);
    return 1;
}

static BIO_METHOD *socket_method;
static pthread_once_t socket_method_once = PTHREAD_ONCE_INIT;

static void make_socket_method(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "balancerd socket");
    if (!m) return;
    BIO_meth_set_read_ex(m, socket_read);
    BIO_meth_set_write_ex(m, socket_write);
    BIO_meth_set_ctrl(m, socket_ctrl);
    BIO_meth_set_create(m, socket_create);
    BIO_meth_set_destroy(m, socket_destroy);
    socket_method = m;
}

int cbt_set_socket(SSL *ssl, int fd) {
    pthread_once(&socket_method_once, make_socket_method);
    if (!socket_method) return 0;
    cbt_socket *s = OPENSSL_zalloc(sizeof *s);
    if (!s) return 0;
    BIO *bio = BIO_new(socket_method);
    if (!bio) {
        OPENSSL_free(s);
        return 0;
    }
    s->fd = fd;
    BIO_set_data(bio, s);
    // One BIO for both directions takes one reference (as SSL_set_fd does).
    SSL_set_bio(ssl, bio, bio);
    return 1;
}

int cbt_read(SSL *ssl, void *buffer, int length, int *drained) {
    cbt_socket *s = BIO_get_data(SSL_get_rbio(ssl));
    s->short_read = 0;
    int result = SSL_read(ssl, buffer, length);
    // Drained: the last recv in this call came back short and OpenSSL holds nothing
    // unread (neither decrypted bytes nor the start of the next record).
    *drained = result > 0 && s->short_read && !SSL_has_pending(ssl);
    return result;
}
