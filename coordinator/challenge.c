/* challenge.c — signed challenge tokens for keys over their quota.
 *
 * A token is base64url(payload) "." base64url(HMAC-SHA256(secret, payload)),
 * both without padding. The payload is binary, big-endian:
 *
 *   u8  version (1)
 *   u8  quota length, then the quota name (1..64 bytes)
 *   16  key hash: HMAC-SHA256(secret, "tollgate key\0" quota "\0" key)[0..16]
 *   u64 issued_at_s
 *   u64 expires_at_s
 *   16  nonce (RAND_bytes), for single use once verify burns it in Redis
 *
 * The key hash is keyed so a token (which clients see and logs keep) does
 * not reveal the client's IP even to someone who enumerates the IPv4 space.
 * Any coordinator holding the same secret can check any coordinator's token.
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "tollgated.h"

#define TOKEN_VERSION 1
#define PAYLOAD_MAX (1 + 1 + CO_QUOTA_NAME_MAX + 16 + 8 + 8 + 16)

/* HMAC-SHA256 of data under key into out. Returns 0 or CO_EINVAL (OpenSSL
 * failure, which with valid arguments would be a library bug). */
int co_hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *data,
                   size_t len, uint8_t out[32])
{
    unsigned int outlen = 0;

    if (keylen > INT32_MAX ||
        HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen) == NULL ||
        outlen != 32)
        return CO_EINVAL;
    return CO_OK;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* The 16-byte keyed hash a token carries instead of the key. */
void co_challenge_key_hash(const uint8_t *secret, size_t secret_len,
                           const char *quota, const char *key, size_t klen,
                           uint8_t out[16])
{
    static const char label[] = "tollgate key";
    uint8_t buf[sizeof label + CO_QUOTA_NAME_MAX + 1 + CO_KEY_MAX];
    uint8_t mac[32];
    size_t qlen = strlen(quota), n = 0;

    if (qlen > CO_QUOTA_NAME_MAX)
        qlen = CO_QUOTA_NAME_MAX;
    if (klen > CO_KEY_MAX)
        klen = CO_KEY_MAX;
    memcpy(buf, label, sizeof label);  /* with its NUL */
    n = sizeof label;
    memcpy(buf + n, quota, qlen);
    n += qlen;
    buf[n++] = '\0';
    memcpy(buf + n, key, klen);
    n += klen;
    if (co_hmac_sha256(secret, secret_len, buf, n, mac) != CO_OK)
        memset(mac, 0, sizeof mac);
    memcpy(out, mac, 16);
    OPENSSL_cleanse(mac, sizeof mac);
}

/* Issue a token for (quota, key) valid from now_s for ttl_s seconds into
 * out (NUL-terminated). Returns the token length, or CO_EINVAL (bad
 * argument, RNG failure) / CO_ETOOBIG (out too small; CO_TOKEN_MAX always
 * suffices). */
int co_challenge_issue(const uint8_t *secret, size_t secret_len,
                       const char *quota, const char *key, size_t klen,
                       uint64_t now_s, uint32_t ttl_s,
                       char *out, size_t outlen)
{
    uint8_t payload[PAYLOAD_MAX], mac[32];
    size_t qlen = strlen(quota), n = 0;
    long a, b;

    if (qlen == 0 || qlen > CO_QUOTA_NAME_MAX || klen > CO_KEY_MAX ||
        secret_len == 0)
        return CO_EINVAL;
    payload[n++] = TOKEN_VERSION;
    payload[n++] = (uint8_t)qlen;
    memcpy(payload + n, quota, qlen);
    n += qlen;
    co_challenge_key_hash(secret, secret_len, quota, key, klen, payload + n);
    n += 16;
    put_u64(payload + n, now_s);
    n += 8;
    put_u64(payload + n, now_s + ttl_s);
    n += 8;
    if (RAND_bytes(payload + n, 16) != 1)
        return CO_EINVAL;
    n += 16;
    if (co_hmac_sha256(secret, secret_len, payload, n, mac) != CO_OK)
        return CO_EINVAL;
    a = co_b64url_encode(payload, n, out, outlen);
    if (a < 0 || (size_t)a + 2 > outlen)
        return CO_ETOOBIG;
    out[a] = '.';
    b = co_b64url_encode(mac, sizeof mac, out + a + 1, outlen - (size_t)a - 1);
    if (b < 0)
        return CO_ETOOBIG;
    return (int)(a + 1 + b);
}

/* Check a token's shape, signature (constant time) and expiry at now_s.
 * Returns 0 and fills claims (may be NULL), CO_EBADTOKEN for anything
 * malformed or forged, CO_EEXPIRED for a genuine token past its expiry.
 * Single use (burning the nonce) is the verify endpoint's job, not this. */
int co_challenge_check(const uint8_t *secret, size_t secret_len,
                       const char *token, size_t token_len, uint64_t now_s,
                       struct co_challenge_claims *claims)
{
    uint8_t payload[PAYLOAD_MAX + 3], sig[32 + 3], mac[32];
    const char *dot = memchr(token, '.', token_len);
    long plen, slen;
    size_t qlen, o;
    uint64_t issued, expires;

    if (dot == NULL || token_len > CO_TOKEN_MAX)
        return CO_EBADTOKEN;
    plen = co_b64url_decode(token, (size_t)(dot - token), payload,
                         sizeof payload);
    slen = co_b64url_decode(dot + 1, token_len - (size_t)(dot - token) - 1, sig,
                         sizeof sig);
    if (plen < 2 || slen != 32)
        return CO_EBADTOKEN;
    if (co_hmac_sha256(secret, secret_len, payload, (size_t)plen,
                       mac) != CO_OK ||
        CRYPTO_memcmp(mac, sig, sizeof mac) != 0)
        return CO_EBADTOKEN;
    /* Signed by us, so the layout is ours; still check it, a version bump
     * or a bug must not read past the buffer. */
    qlen = payload[1];
    if (payload[0] != TOKEN_VERSION || qlen == 0 ||
        qlen > CO_QUOTA_NAME_MAX ||
        (size_t)plen != 2 + qlen + 16 + 8 + 8 + 16)
        return CO_EBADTOKEN;
    o = 2 + qlen + 16;
    issued = get_u64(payload + o);
    expires = get_u64(payload + o + 8);
    if (now_s >= expires)
        return CO_EEXPIRED;
    if (claims != NULL) {
        memcpy(claims->quota, payload + 2, qlen);
        claims->quota[qlen] = '\0';
        memcpy(claims->key_hash, payload + 2 + qlen, 16);
        claims->issued_at_s = issued;
        claims->expires_at_s = expires;
        memcpy(claims->nonce, payload + o + 16, 16);
    }
    return CO_OK;
}

/* The token a sync answer carries for a key over its quota: signed with
 * the first challenge key of co_keys, valid ttl_s from now_s. Same
 * returns as co_challenge_issue(). */
int co_challenge_token(const char *quota, const char *key, size_t klen,
                       uint64_t now_s, uint32_t ttl_s, char *out,
                       size_t outlen)
{
    if (co_keys.n_challenge > 0)
        return co_challenge_issue(co_keys.challenge[0].secret,
                                  co_keys.challenge[0].len, quota, key, klen,
                                  now_s, ttl_s, out, outlen);
    return co_challenge_issue(co_server.secret, co_server.secret_len, quota,
                              key, klen, now_s, ttl_s, out, outlen);
}
