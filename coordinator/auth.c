/* auth.c — edge authentication of POST /v1/sync (contract in tollgated.h,
 * "edge auth").
 *
 * Everything here runs before the body is unpacked, so a request that is
 * not signed by a known edge costs a few header checks and at most one
 * SHA-256 of the body plus one HMAC per key of the edge, never a protobuf
 * decode or a Redis call. What needs more than the request stays with the
 * caller: the body's edge_id (edge_mismatch) after unpacking, and the
 * replay check, which sync.lua does in the same atomic call that applies
 * the batch.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "tollgated.h"

#define SIGN_PREFIX    "tollgate-sync-v1\n"
#define TIMESTAMP_MAX  15           /* digits: ms until the year 33658 */
#define SIG_PREFIX     "v1="

const char *const co_auth_reason_names[CO_AUTH_REASONS] = {
    [CO_AUTH_OK] = "ok",
    [CO_AUTH_MISSING_SIGNATURE] = "missing_signature",
    [CO_AUTH_BAD_HEADER] = "bad_header",
    [CO_AUTH_UNKNOWN_EDGE] = "unknown_edge",
    [CO_AUTH_EDGE_MISMATCH] = "edge_mismatch",
    [CO_AUTH_STALE_TIMESTAMP] = "stale_timestamp",
    [CO_AUTH_BAD_SIGNATURE] = "bad_signature",
    [CO_AUTH_REPLAYED] = "replayed",
};

/* What the client reads after the reason name: how to fix it. */
static const char *const reason_help[CO_AUTH_REASONS] = {
    [CO_AUTH_OK] = "",
    [CO_AUTH_MISSING_SIGNATURE] = "the request has no Tollgate-Signature "
        "header",
    [CO_AUTH_BAD_HEADER] = "Tollgate-Edge must be 1..64 visible ASCII "
        "bytes, Tollgate-Timestamp unix milliseconds, Tollgate-Signature "
        "v1=<64 lower-case hex digits>",
    [CO_AUTH_UNKNOWN_EDGE] = "no key is configured for this edge name",
    [CO_AUTH_EDGE_MISMATCH] = "Tollgate-Edge differs from the body's "
        "edge_id",
    [CO_AUTH_STALE_TIMESTAMP] = "Tollgate-Timestamp is more than 30 s away "
        "from the coordinator's clock",
    [CO_AUTH_BAD_SIGNATURE] = "the signature does not verify with any key "
        "of this edge",
    [CO_AUTH_REPLAYED] = "this signature was already used; sign each "
        "request anew",
};

/* HMAC-SHA256 under secret of the string to sign for (method, path,
 * timestamp, body). Edges and tests sign with this too. Returns 0 or
 * CO_EINVAL (a part too long, or an OpenSSL failure). */
int co_auth_sign(const uint8_t *secret, size_t secret_len,
                 const char *method, const char *path, const char *timestamp,
                 const uint8_t *body, size_t body_len, uint8_t mac[32])
{
    char buf[sizeof SIGN_PREFIX + 16 + CO_URL_MAX + TIMESTAMP_MAX + 3 + 64];
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t mlen = strlen(method), plen = strlen(path), tlen = strlen(timestamp);
    size_t n = 0;

    if (mlen > 16 || plen > CO_URL_MAX || tlen > TIMESTAMP_MAX)
        return CO_EINVAL;
    if (EVP_Digest(body != NULL ? body : (const uint8_t *)"", body_len, md,
                   &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return CO_EINVAL;
    memcpy(buf, SIGN_PREFIX, sizeof SIGN_PREFIX - 1);
    n = sizeof SIGN_PREFIX - 1;
    memcpy(buf + n, method, mlen);
    n += mlen;
    buf[n++] = '\n';
    memcpy(buf + n, path, plen);
    n += plen;
    buf[n++] = '\n';
    memcpy(buf + n, timestamp, tlen);
    n += tlen;
    buf[n++] = '\n';
    n += (size_t)co_hex_encode(md, 32, buf + n, 65);
    return co_hmac_sha256(secret, secret_len, (const uint8_t *)buf, n, mac);
}

static bool visible_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* "v1=" and 64 lower-case hex digits into mac. */
static bool parse_signature(const char *s, uint8_t mac[32])
{
    size_t p = sizeof SIG_PREFIX - 1;

    if (strlen(s) != p + 64 || memcmp(s, SIG_PREFIX, p) != 0)
        return false;
    for (size_t i = 0; i < 64; i++) {
        char c = s[p + i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return co_hex_decode(s + p, 64, mac, 32) == 32;
}

/* Decimal digits only, 1..TIMESTAMP_MAX of them. */
static bool parse_timestamp(const char *s, uint64_t *out)
{
    size_t n = strlen(s);

    if (n == 0 || n > TIMESTAMP_MAX)
        return false;
    *out = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        *out = *out * 10 + (uint64_t)(s[i] - '0');
    }
    return true;
}

/* Check the request's signature headers against its body. Returns
 * CO_AUTH_OK with out filled, or the reason to refuse it (out->edge_id
 * then holds what the client claimed, for the log line). Never
 * CO_AUTH_EDGE_MISMATCH or CO_AUTH_REPLAYED: those need the body's
 * edge_id and Redis. Signatures are compared in constant time. */
enum co_auth_reason co_auth_check(const struct co_request *req,
                                  struct co_auth *out)
{
    const char *edge = co_request_header(req, "Tollgate-Edge");
    const char *ts = co_request_header(req, "Tollgate-Timestamp");
    const char *sig = co_request_header(req, "Tollgate-Signature");
    const struct co_key *keys;
    uint8_t want[32], mac[32];
    uint64_t ts_ms, now;
    size_t elen, nlen, nkeys;
    enum co_auth_reason rc = CO_AUTH_BAD_SIGNATURE;

    memset(out, 0, sizeof *out);
    if (edge != NULL)
        snprintf(out->edge_id, sizeof out->edge_id, "%s", edge);
    if (sig == NULL)
        return CO_AUTH_MISSING_SIGNATURE;
    if (edge == NULL || ts == NULL)
        return CO_AUTH_BAD_HEADER;
    elen = strlen(edge);
    nlen = strcspn(edge, "/");
    if (elen == 0 || elen > CO_EDGE_ID_MAX || !visible_ascii(edge, elen) ||
        nlen == 0 || !parse_timestamp(ts, &ts_ms) ||
        !parse_signature(sig, want))
        return CO_AUTH_BAD_HEADER;
    nkeys = co_keys_edge(&co_keys, edge, nlen, &keys);
    if (nkeys == 0)
        return CO_AUTH_UNKNOWN_EDGE;
    now = co_wall_ms();
    if (ts_ms > now + CO_AUTH_SKEW_MS || ts_ms + CO_AUTH_SKEW_MS < now)
        return CO_AUTH_STALE_TIMESTAMP;
    /* Any key of the name may have signed it (rotation). */
    for (size_t i = 0; i < nkeys && rc != CO_AUTH_OK; i++) {
        if (co_auth_sign(keys[i].secret, keys[i].len, req->method, req->path,
                         ts, req->body, req->body_len, mac) != CO_OK)
            break;
        if (CRYPTO_memcmp(mac, want, sizeof mac) == 0)
            rc = CO_AUTH_OK;
    }
    OPENSSL_cleanse(mac, sizeof mac);
    if (rc == CO_AUTH_OK)
        co_hex_encode(want, sizeof want, out->sig_hex, sizeof out->sig_hex);
    return rc;
}

/* Answer 401 for reason: a problem+json whose detail starts with the
 * reason's name, WWW-Authenticate, one log line (the claimed edge id,
 * never the signature) and the reason's counter. */
void co_auth_reject(struct co_response *resp, enum co_auth_reason reason,
                    const char *edge_id)
{
    char detail[256], v[96];

    if (reason <= CO_AUTH_OK || reason >= CO_AUTH_REASONS)
        reason = CO_AUTH_BAD_SIGNATURE;       /* a caller's bug: refuse */
    atomic_fetch_add_explicit(&co_metrics.auth_failures[reason], 1,
                              memory_order_relaxed);
    CO_INFO("msg=sync_auth_failed reason=%s edge=%s",
            co_auth_reason_names[reason],
            co_log_value(v, sizeof v, edge_id, strlen(edge_id)));
    snprintf(detail, sizeof detail, "%s: %s", co_auth_reason_names[reason],
             reason_help[reason]);
    co_response_problem(resp, 401, detail);
    resp->extra.name = "WWW-Authenticate";
    resp->extra.value = CO_AUTH_SCHEME;
}
