/* keyfile.c — the key file: every secret tollgated holds (format in
 * tollgated.h, "keys"). Parsed once at start; a bad line stops the start
 * with the line number, never with the secret. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "tollgated.h"

#define KEYS_FILE_MAX (16u << 20)   /* bytes; 100k edge lines fit */

struct co_keyring co_keys;

static bool id_ok(const char *s, size_t n)
{
    if (n == 0 || n > CO_KEY_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

static int hex_secret(const char *s, size_t n, struct co_key *k)
{
    long got;

    if (n < 2 * CO_SECRET_MIN)
        return CO_EINVAL;
    got = co_hex_decode(s, n, k->secret, sizeof k->secret);
    if (got < 0)
        return CO_EINVAL;
    k->len = (size_t)got;
    return CO_OK;
}

static bool field_is(const char *f, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(f, lit, n) == 0;
}

static int cmp_edge(const void *a, const void *b)
{
    return strcmp(((const struct co_key *)a)->id,
                  ((const struct co_key *)b)->id);
}

int co_keys_parse(const char *text, size_t len, struct co_keyring *out,
                  char *err, size_t errlen)
{
    struct co_key *edges = NULL;
    size_t n_edges = 0, cap_edges = 0, lineno = 0, pos = 0;
    int rc = CO_EINVAL;

    memset(out, 0, sizeof *out);
    while (pos < len) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        const char *f[3];
        size_t fl[3], nf;
        struct co_key k, *slot;

        pos += n + (nl != NULL);
        lineno++;
        nf = co_split_fields(line, n, f, fl, 3);
        if (nf == 0 || f[0][0] == '#')
            continue;
        if (nf != 3) {
            snprintf(err, errlen, "line %zu: expected <kind> <id> <hex "
                     "secret>", lineno);
            goto fail;
        }
        memset(&k, 0, sizeof k);
        if (!id_ok(f[1], fl[1])) {
            snprintf(err, errlen, "line %zu: id must be 1..%d visible ASCII "
                     "bytes", lineno, CO_KEY_ID_MAX);
            goto fail;
        }
        memcpy(k.id, f[1], fl[1]);
        if (hex_secret(f[2], fl[2], &k) != CO_OK) {
            snprintf(err, errlen, "line %zu: secret must be %d..%d bytes as "
                     "an even number of hex digits", lineno, CO_SECRET_MIN,
                     CO_SECRET_MAX);
            OPENSSL_cleanse(&k, sizeof k);
            goto fail;
        }
        if (field_is(f[0], fl[0], "challenge") ||
            field_is(f[0], fl[0], "clearance")) {
            bool ch = f[0][1] == 'h';
            struct co_key *set = ch ? out->challenge : out->clearance;
            size_t *cnt = ch ? &out->n_challenge : &out->n_clearance;

            if (co_keys_find(set, *cnt, k.id, fl[1]) != NULL) {
                snprintf(err, errlen, "line %zu: %s key %s listed twice",
                         lineno, ch ? "challenge" : "clearance", k.id);
                OPENSSL_cleanse(&k, sizeof k);
                goto fail;
            }
            if (*cnt == CO_KEYS_ROTATION) {
                snprintf(err, errlen, "line %zu: at most %d %s keys", lineno,
                         CO_KEYS_ROTATION, ch ? "challenge" : "clearance");
                OPENSSL_cleanse(&k, sizeof k);
                goto fail;
            }
            slot = &set[(*cnt)++];
        } else if (field_is(f[0], fl[0], "captcha")) {
            if (out->has_captcha) {
                snprintf(err, errlen, "line %zu: one captcha verifier key",
                         lineno);
                OPENSSL_cleanse(&k, sizeof k);
                goto fail;
            }
            out->has_captcha = true;
            slot = &out->captcha;
        } else if (field_is(f[0], fl[0], "edge")) {
            if (memchr(k.id, '/', fl[1]) != NULL) {
                snprintf(err, errlen, "line %zu: an edge name has no '/'",
                         lineno);
                OPENSSL_cleanse(&k, sizeof k);
                goto fail;
            }
            if (n_edges == cap_edges) {
                size_t cap = cap_edges ? 2 * cap_edges : 16;
                struct co_key *p;

                if (cap > CO_EDGE_KEYS_MAX)
                    cap = CO_EDGE_KEYS_MAX;
                if (n_edges == cap) {
                    snprintf(err, errlen, "line %zu: more than %d edge keys",
                             lineno, CO_EDGE_KEYS_MAX);
                    OPENSSL_cleanse(&k, sizeof k);
                    goto fail;
                }
                p = malloc(cap * sizeof *p);
                if (p == NULL) {
                    snprintf(err, errlen, "out of memory");
                    OPENSSL_cleanse(&k, sizeof k);
                    rc = CO_ENOMEM;
                    goto fail;
                }
                if (edges != NULL) {
                    memcpy(p, edges, n_edges * sizeof *p);
                    OPENSSL_cleanse(edges, n_edges * sizeof *edges);
                    free(edges);
                }
                edges = p;
                cap_edges = cap;
            }
            slot = &edges[n_edges++];
        } else {
            snprintf(err, errlen, "line %zu: kind must be challenge, "
                     "clearance, edge or captcha", lineno);
            OPENSSL_cleanse(&k, sizeof k);
            goto fail;
        }
        *slot = k;
        OPENSSL_cleanse(&k, sizeof k);
    }
    /* Every key of one name is accepted, so their order is moot. */
    if (n_edges > 1)
        qsort(edges, n_edges, sizeof *edges, cmp_edge);
    out->edges = edges;
    out->n_edges = n_edges;
    return CO_OK;
fail:
    if (edges != NULL) {
        OPENSSL_cleanse(edges, cap_edges * sizeof *edges);
        free(edges);
    }
    OPENSSL_cleanse(out, sizeof *out);
    memset(out, 0, sizeof *out);
    return rc;
}

int co_keys_load(const char *path, struct co_keyring *out, char *err,
                 size_t errlen)
{
    char *buf = NULL;
    size_t n = 0;
    bool exposed = false;
    int rc = co_file_read(path, KEYS_FILE_MAX, &buf, &n, &exposed, err,
                          errlen);

    if (rc != CO_OK)
        return rc;
    if (exposed)
        CO_WARN("msg=keys_file_permissions detail=\"group or others can "
                "read the key file; chmod 600 it\"");
    rc = co_keys_parse(buf, n, out, err, errlen);
    OPENSSL_cleanse(buf, n);
    free(buf);
    return rc;
}

void co_keys_free(struct co_keyring *k)
{
    if (k->edges != NULL) {
        OPENSSL_cleanse(k->edges, k->n_edges * sizeof *k->edges);
        free(k->edges);
    }
    OPENSSL_cleanse(k, sizeof *k);
    memset(k, 0, sizeof *k);
}

const struct co_key *co_keys_find(const struct co_key *keys, size_t n,
                                  const char *id, size_t idlen)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(keys[i].id) == idlen && memcmp(keys[i].id, id, idlen) == 0)
            return &keys[i];
    return NULL;
}

size_t co_keys_edge(const struct co_keyring *k, const char *name, size_t nlen,
                    const struct co_key **first)
{
    size_t lo = 0, hi = k->n_edges, n = 0;
    char id[CO_KEY_ID_MAX + 1];

    *first = NULL;
    if (nlen == 0 || nlen > CO_KEY_ID_MAX)
        return 0;
    memcpy(id, name, nlen);
    id[nlen] = '\0';
    while (lo < hi) {               /* first index with id >= name */
        size_t mid = lo + (hi - lo) / 2;

        if (strcmp(k->edges[mid].id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    while (lo + n < k->n_edges && strcmp(k->edges[lo + n].id, id) == 0)
        n++;
    if (n > 0)
        *first = &k->edges[lo];
    return n;
}
