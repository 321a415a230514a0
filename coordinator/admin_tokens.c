/* admin_tokens.c — the admin API's bearer tokens (--admin-tokens FILE).
 *
 * One token per line: "<name> <role> <sha256 hex of the token>", role
 * read or admin; blank lines and '#' comments are ignored. The file holds
 * hashes, not tokens, so reading it (or a backup of it) gives nobody
 * access. A presented token is hashed and compared with EVERY line's hash
 * with CRYPTO_memcmp, whatever matched before, so the time taken says
 * neither which line nor how much of a hash matched. The name goes into
 * the audit log; the token goes nowhere.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "tollgated.h"

#define TOKENS_FILE_MAX (1u << 20)

struct co_tokens co_admin_tokens;

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > CO_TOKEN_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f ||
            s[i] == '"' || s[i] == '\\')
            return false;
    return true;
}

/* Parse the file's text into out (replacing it). Errors name the line and
 * leave out empty. The caller frees out with co_tokens_free(). */
int co_tokens_parse(const char *text, size_t len, struct co_tokens *out,
                    char *err, size_t errlen)
{
    size_t pos = 0, lineno = 0, cap = 0;
    int rc = CO_EINVAL;

    memset(out, 0, sizeof *out);
    while (pos < len) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        const char *w[3];
        size_t wl[3], nw;
        struct co_admin_token *t;

        pos += n + (nl != NULL);
        lineno++;
        nw = co_split_fields(line, n, w, wl, 3);
        if (nw == 0 || w[0][0] == '#')
            continue;
        if (nw != 3) {
            snprintf(err, errlen, "line %zu: expected <name> <read|admin> "
                     "<sha256 hex of the token>", lineno);
            goto fail;
        }
        if (!name_ok(w[0], wl[0])) {
            snprintf(err, errlen, "line %zu: name must be 1..%d visible "
                     "ASCII bytes", lineno, CO_TOKEN_NAME_MAX);
            goto fail;
        }
        if (out->n == cap) {
            size_t ncap = cap ? 2 * cap : 8;
            struct co_admin_token *p = realloc(out->tokens,
                                               ncap * sizeof *p);

            if (p == NULL) {
                snprintf(err, errlen, "out of memory");
                rc = CO_ENOMEM;
                goto fail;
            }
            out->tokens = p;
            cap = ncap;
        }
        t = &out->tokens[out->n];
        memset(t, 0, sizeof *t);
        memcpy(t->name, w[0], wl[0]);
        if (wl[1] == 5 && memcmp(w[1], "admin", 5) == 0) {
            t->admin = true;
        } else if (!(wl[1] == 4 && memcmp(w[1], "read", 4) == 0)) {
            snprintf(err, errlen, "line %zu: role must be read or admin",
                     lineno);
            goto fail;
        }
        if (wl[2] != 64 ||
            co_hex_decode(w[2], 64, t->hash, sizeof t->hash) != 32) {
            snprintf(err, errlen, "line %zu: the hash must be 64 hex digits "
                     "(sha256sum of the token)", lineno);
            goto fail;
        }
        for (size_t k = 0; k < out->n; k++) {
            if (strcmp(out->tokens[k].name, t->name) == 0) {
                snprintf(err, errlen, "line %zu: name %s listed twice",
                         lineno, t->name);
                goto fail;
            }
        }
        out->n++;
    }
    out->loaded = true;
    return CO_OK;
fail:
    co_tokens_free(out);
    return rc;
}

int co_tokens_load(const char *path, struct co_tokens *out, char *err,
                   size_t errlen)
{
    char *buf;
    size_t n = 0;
    bool exposed = false;
    int rc;

    memset(out, 0, sizeof *out);
    rc = co_file_read(path, TOKENS_FILE_MAX, &buf, &n, &exposed, err,
                      errlen);
    if (rc != CO_OK)
        return rc;
    if (exposed)
        CO_WARN("msg=admin_tokens_file_permissions detail=\"group or others "
                "can read the admin tokens file; chmod 600 it\"");
    rc = co_tokens_parse(buf, n, out, err, errlen);
    free(buf);
    return rc;
}

void co_tokens_free(struct co_tokens *t)
{
    free(t->tokens);
    memset(t, 0, sizeof *t);
}

/* The token line an "Authorization: Bearer <token>" header names, or NULL
 * (no header, another scheme, an unknown token). Every line is compared,
 * in constant time each, whether or not one matched already. */
const struct co_admin_token *co_tokens_check(const struct co_tokens *t,
                                             const char *authorization)
{
    const struct co_admin_token *hit = NULL;
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const char *tok;

    if (t == NULL || authorization == NULL ||
        strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    tok = authorization + 7;
    while (*tok == ' ')
        tok++;
    if (*tok == '\0' ||
        EVP_Digest(tok, strlen(tok), md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != 32)
        return NULL;
    for (size_t i = 0; i < t->n; i++)
        if (CRYPTO_memcmp(md, t->tokens[i].hash, 32) == 0)
            hit = &t->tokens[i];
    OPENSSL_cleanse(md, sizeof md);
    return hit;
}
