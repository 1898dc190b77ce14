// The helpers of CBalancerTLS.h that walk OpenSSL structures (see the header).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
