/* tls.c — HTTPS for tollgated: libmicrohttpd's TLS (GnuTLS underneath).
 *
 * --tls-cert FILE (PEM, the leaf first, then its chain) and --tls-key FILE
 * (PEM, unencrypted) turn the one listener into HTTPS; there is no plain
 * HTTP port beside it. What this file decides:
 *
 *   TLS 1.2 and 1.3 only (MHD_OPTION_HTTPS_PRIORITIES; GnuTLS's NORMAL
 *   ciphers otherwise, the server's order preferred).
 *
 *   Reload without dropping the listener: libmicrohttpd asks for the
 *   certificate on every handshake (MHD_OPTION_HTTPS_CERT_CALLBACK), and
 *   the callback hands out the current pair. co_tls_reload() (SIGHUP)
 *   reads both files again, checks that the key is the certificate's, and
 *   swaps; a bad pair is refused with a log line and the old one stays.
 *   Open connections keep the pair they shook hands with: every pair ever
 *   loaded stays in memory until exit (a few KB per reload; GnuTLS may
 *   still read a session's certificate after the handshake).
 *
 *   Plain HTTP to the TLS port is answered, not dropped: http.c's listen
 *   socket has TCP_DEFER_ACCEPT, so a connection reaches its connection
 *   callback with the client's first bytes already there, and it asks
 *   co_tls_refuse_plain_http() to peek at them. A TLS record starts with
 *   0x16 (handshake); an upper-case letter is an HTTP method, which gets
 *   "400 ... this port speaks HTTPS" and a closed socket, as nginx does.
 *   Anything else goes to GnuTLS, which refuses it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <openssl/crypto.h>

#include "tollgated.h"

#define TLS_CHAIN_MAX    8          /* certificates in --tls-cert */
#define TLS_FILE_MAX     (256u << 10)
#define TLS_PRIORITIES   "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:" \
                         "%SERVER_PRECEDENCE"

/* One certificate chain and its key, immutable once loaded. */
struct pair {
    gnutls_pcert_st certs[TLS_CHAIN_MAX];
    unsigned n;
    gnutls_privkey_t key;
    struct pair *older;             /* every pair loaded, for the exit */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct pair *current;        /* NULL: TLS off */
static char cert_path[4096], key_path[4096];

static void pair_free(struct pair *p)
{
    for (unsigned i = 0; i < p->n; i++)
        gnutls_pcert_deinit(&p->certs[i]);
    if (p->key != NULL)
        gnutls_privkey_deinit(p->key);
    free(p);
}

/* Whether key is the private half of the leaf's public key. */
static bool key_matches(const struct pair *p)
{
    gnutls_pubkey_t pub = NULL;
    unsigned char a[64], b[64];
    size_t alen = sizeof a, blen = sizeof b;
    bool same = false;

    if (gnutls_pubkey_init(&pub) == 0 &&
        gnutls_pubkey_import_privkey(pub, p->key, 0, 0) == 0 &&
        gnutls_pubkey_get_key_id(pub, 0, a, &alen) == 0 &&
        gnutls_pubkey_get_key_id(p->certs[0].pubkey, 0, b, &blen) == 0)
        same = alen == blen && memcmp(a, b, alen) == 0;
    if (pub != NULL)
        gnutls_pubkey_deinit(pub);
    return same;
}

/* The leaf's notAfter (unix seconds), or -1. */
static time_t leaf_expiry(const struct pair *p)
{
    gnutls_x509_crt_t crt;
    time_t t = -1;

    if (gnutls_x509_crt_init(&crt) != 0)
        return -1;
    if (gnutls_x509_crt_import(crt, &p->certs[0].cert,
                               GNUTLS_X509_FMT_DER) == 0)
        t = gnutls_x509_crt_get_expiration_time(crt);
    gnutls_x509_crt_deinit(crt);
    return t;
}

/* Read and check the pair at cert_path/key_path. Returns 0 with *out (a
 * new pair: the caller installs or frees it), or CO_EINVAL / CO_EIO /
 * CO_ENOMEM with err naming the file and the reason (never key bytes). */
static int pair_load(struct pair **out, char *err, size_t errlen)
{
    struct pair *p = calloc(1, sizeof *p);
    char *cbuf = NULL, *kbuf = NULL;
    size_t clen = 0, klen = 0;
    bool exposed = false;
    gnutls_datum_t d;
    int rc = CO_EINVAL, g;

    *out = NULL;
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return CO_ENOMEM;
    }
    rc = co_file_read(cert_path, TLS_FILE_MAX, &cbuf, &clen, &exposed, err,
                      errlen);
    if (rc != CO_OK)
        goto done;
    rc = co_file_read(key_path, TLS_FILE_MAX, &kbuf, &klen, &exposed, err,
                      errlen);
    if (rc != CO_OK)
        goto done;
    if (exposed)
        CO_WARN("msg=tls_key_permissions detail=\"group or others can read "
                "--tls-key; chmod 600 it\"");
    rc = CO_EINVAL;
    p->n = TLS_CHAIN_MAX;
    d.data = (unsigned char *)cbuf;
    d.size = (unsigned)clen;
    g = gnutls_pcert_list_import_x509_raw(
        p->certs, &p->n, &d, GNUTLS_X509_FMT_PEM,
        GNUTLS_X509_CRT_LIST_FAIL_IF_UNSORTED);
    if (g < 0 || p->n == 0) {
        p->n = 0;
        snprintf(err, errlen, "--tls-cert %s: %s", cert_path,
                 g < 0 ? gnutls_strerror(g) : "no certificate");
        goto done;
    }
    d.data = (unsigned char *)kbuf;
    d.size = (unsigned)klen;
    if (gnutls_privkey_init(&p->key) != 0 ||
        (g = gnutls_privkey_import_x509_raw(p->key, &d, GNUTLS_X509_FMT_PEM,
                                            NULL, 0)) < 0) {
        snprintf(err, errlen, "--tls-key %s: not an unencrypted PEM private "
                 "key", key_path);
        goto done;
    }
    if (!key_matches(p)) {
        snprintf(err, errlen, "--tls-key %s is not the key of --tls-cert "
                 "%s", key_path, cert_path);
        goto done;
    }
    rc = CO_OK;
done:
    if (kbuf != NULL) {
        OPENSSL_cleanse(kbuf, klen);
        free(kbuf);
    }
    free(cbuf);
    if (rc == CO_OK)
        *out = p;
    else
        pair_free(p);
    return rc;
}

/* Make p current (keeping the older ones) and say so. */
static void pair_install(struct pair *p, const char *event)
{
    time_t exp = leaf_expiry(p);
    char when[32] = "unknown";
    struct tm tm;

    if (exp >= 0 && gmtime_r(&exp, &tm) != NULL)
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    pthread_mutex_lock(&lock);
    p->older = current;
    current = p;
    pthread_mutex_unlock(&lock);
    atomic_store(&co_metrics.tls_not_after_s, exp > 0 ? (uint64_t)exp : 0);
    CO_INFO("msg=%s cert_chain=%u not_after=%s", event, p->n, when);
    if (exp >= 0 && exp < time(NULL))
        CO_WARN("msg=tls_cert_expired not_after=%s detail=\"clients will "
                "refuse the handshake\"", when);
}

int co_tls_init(const char *cert, const char *key, char *err, size_t errlen)
{
    struct pair *p;
    int rc;

    if (!MHD_is_feature_supported(MHD_FEATURE_TLS) ||
        !MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK)) {
        snprintf(err, errlen, "this libmicrohttpd was built without TLS");
        return CO_EINVAL;
    }
    snprintf(cert_path, sizeof cert_path, "%s", cert);
    snprintf(key_path, sizeof key_path, "%s", key);
    rc = pair_load(&p, err, errlen);
    if (rc == CO_OK)
        pair_install(p, "tls_loaded");
    return rc;
}

bool co_tls_enabled(void)
{
    bool on;

    pthread_mutex_lock(&lock);
    on = current != NULL;
    pthread_mutex_unlock(&lock);
    return on;
}

int co_tls_reload(void)
{
    struct pair *p;
    char err[600], v[700];
    int rc;

    if (!co_tls_enabled())
        return CO_OK;
    rc = pair_load(&p, err, sizeof err);
    if (rc != CO_OK) {
        CO_ERROR("msg=tls_reload_failed detail=%s note=\"still serving the "
                 "previous certificate\"",
                 co_log_value(v, sizeof v, err, strlen(err)));
        return rc;
    }
    pair_install(p, "tls_reloaded");
    return CO_OK;
}

void co_tls_shutdown(void)
{
    struct pair *p;

    pthread_mutex_lock(&lock);
    p = current;
    current = NULL;
    pthread_mutex_unlock(&lock);
    while (p != NULL) {
        struct pair *next = p->older;

        pair_free(p);
        p = next;
    }
}

/* gnutls_certificate_retrieve_function2: the current pair, every
 * handshake. */
static int retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca_rdn,
                    int nreqs, const gnutls_pk_algorithm_t *pk_algos,
                    int pk_algos_length, gnutls_pcert_st **pcert,
                    unsigned int *pcert_length, gnutls_privkey_t *pkey)
{
    struct pair *p;

    (void)s;
    (void)req_ca_rdn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    pthread_mutex_lock(&lock);
    p = current;
    pthread_mutex_unlock(&lock);
    if (p == NULL)
        return -1;
    *pcert = p->certs;
    *pcert_length = p->n;
    *pkey = p->key;
    return 0;
}

static const char plain_http_answer[] =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Connection: close\r\n"
    "Content-Length: 72\r\n"
    "\r\n"
    "This port speaks HTTPS (TLS 1.2 or later): use an https:// URL "
    "instead.\n";

/* Whether fd, a new connection on the HTTPS port, opened with plain HTTP;
 * if so it has been answered 400 and shut down, and the caller leaves it
 * (libmicrohttpd's handshake then fails on it and closes it). Called from
 * http.c's connection callback; non-blocking: TCP_DEFER_ACCEPT (http.c)
 * put the first bytes there before accept(), and without them the peek
 * finds nothing and GnuTLS decides. */
bool co_tls_refuse_plain_http(int fd)
{
    unsigned char first;

    if (recv(fd, &first, 1, MSG_PEEK | MSG_DONTWAIT) != 1 ||
        first == 0x16 || first < 'A' || first > 'Z')
        return false;
    /* Best effort: a client that cannot take 150 bytes learns nothing. */
    if (send(fd, plain_http_answer, sizeof plain_http_answer - 1,
             MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        CO_DEBUG("msg=tls_plain_http_answer_failed errno=%d", errno);
    shutdown(fd, SHUT_RDWR);
    CO_INFO("msg=tls_plain_http detail=\"plain HTTP request on the HTTPS "
            "port: answered 400\"");
    return true;
}

/* The daemon options TLS adds (MHD_OPTION_ARRAY), or only the end marker
 * when TLS is off; *flags gains MHD_USE_TLS. */
const struct MHD_OptionItem *co_tls_mhd_options(unsigned *flags)
{
    static const struct MHD_OptionItem off[] = {
        {MHD_OPTION_END, 0, NULL},
    };
    static const struct MHD_OptionItem on[] = {
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES},
        {MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)retrieve},
        {MHD_OPTION_END, 0, NULL},
    };

    if (!co_tls_enabled())
        return off;
    *flags |= MHD_USE_TLS;
    return on;
}
