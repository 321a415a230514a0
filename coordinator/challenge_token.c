/* challenge_token.c — signed challenge tokens for keys over their quota,
 * and the clearance tokens that solving one earns.
 *
 * A challenge token is base64url(payload) "." base64url(HMAC-SHA256(challenge
 * key secret, payload)), both without padding. The payload is binary,
 * big-endian and versioned:
 *
 *   u8  version (2)
 *   u8  key id length, then the challenge key's id (1..64 bytes): the
 *       checker picks that key among the active ones, so a rotation never
 *       strands the tokens already out
 *   u8  quota length, then the quota name (1..64 bytes)
 *   16  key hash: SHA-256(quota "\n" key)[0..16]
 *   u64 issued_at_s
 *   u64 expires_at_s
 *   16  nonce (RAND_bytes), for single use once verify burns it in Redis
 *
 * The key hash is exactly the "kh" claim of the clearance token the edge
 * checks (edge-module/include/tollgate.h), so verify copies it from one
 * token to the other without ever seeing the key. It is not keyed: the
 * edge holds no secret to key it with. A client learns nothing from it it
 * did not send (its own IP, its own token's claim), but logs must treat it
 * as the key it stands for.
 *
 * Version 1 tokens (keyed hash, no key id) are refused: they lived at most
 * CO_CHALLENGE_TTL_S and a refused token only costs a new challenge.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "tollgated.h"

#define TOKEN_VERSION 2
#define PAYLOAD_MAX (1 + 1 + CO_KEY_ID_MAX + 1 + CO_QUOTA_NAME_MAX + 16 + \
                     8 + 8 + 16)
#define B64_LEN(n) (((n) * 4 + 2) / 3)

_Static_assert(B64_LEN(PAYLOAD_MAX) + 1 + B64_LEN(32) + 1 <= CO_TOKEN_MAX,
               "CO_TOKEN_MAX must hold the longest challenge token");

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

/* The 16 bytes that name (quota, key) in both tokens: the edge computes
 * the same from the request it sees. Quota and key are cut at their caps,
 * as everywhere else (validation refuses longer ones before this). */
void co_challenge_key_hash(const char *quota, const char *key, size_t klen,
                           uint8_t out[16])
{
    uint8_t buf[CO_QUOTA_NAME_MAX + 1 + CO_KEY_MAX], md[EVP_MAX_MD_SIZE];
    size_t qlen = strlen(quota), n = 0;
    unsigned int mdlen = 0;

    if (qlen > CO_QUOTA_NAME_MAX)
        qlen = CO_QUOTA_NAME_MAX;
    if (klen > CO_KEY_MAX)
        klen = CO_KEY_MAX;
    memcpy(buf, quota, qlen);
    n = qlen;
    buf[n++] = '\n';
    memcpy(buf + n, key, klen);
    n += klen;
    if (EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != 32)
        memset(md, 0, sizeof md);   /* matches no edge's hash: no clearance */
    memcpy(out, md, 16);
}

/* text "." base64url(HMAC-SHA256(secret, text)) appended in out, where
 * out[0..len) already holds text. Returns the new length or CO_ETOOBIG. */
static int append_signature(const struct co_key *k, char *out, size_t len,
                            size_t outlen)
{
    uint8_t mac[32];
    long n;

    if (co_hmac_sha256(k->secret, k->len, (const uint8_t *)out, len,
                       mac) != CO_OK)
        return CO_EINVAL;
    if (len + 2 > outlen)
        return CO_ETOOBIG;
    out[len] = '.';
    n = co_b64url_encode(mac, sizeof mac, out + len + 1, outlen - len - 1);
    if (n < 0 || len + 1 + (size_t)n > INT32_MAX)
        return CO_ETOOBIG;
    return (int)(len + 1 + (size_t)n);
}

/* Issue a token for (quota, key) valid from now_s for ttl_s seconds, signed
 * with k, into out (NUL-terminated). Returns the token length, or
 * CO_EINVAL (bad argument, RNG failure) / CO_ETOOBIG (out too small;
 * CO_TOKEN_MAX always suffices). */
int co_challenge_issue(const struct co_key *k, const char *quota,
                       const char *key, size_t klen, uint64_t now_s,
                       uint32_t ttl_s, char *out, size_t outlen)
{
    uint8_t payload[PAYLOAD_MAX], mac[32];
    size_t qlen = strlen(quota), idlen = strlen(k->id), n = 0;
    long a, b;

    if (qlen == 0 || qlen > CO_QUOTA_NAME_MAX || klen > CO_KEY_MAX ||
        idlen == 0 || idlen > CO_KEY_ID_MAX || k->len == 0)
        return CO_EINVAL;
    payload[n++] = TOKEN_VERSION;
    payload[n++] = (uint8_t)idlen;
    memcpy(payload + n, k->id, idlen);
    n += idlen;
    payload[n++] = (uint8_t)qlen;
    memcpy(payload + n, quota, qlen);
    n += qlen;
    co_challenge_key_hash(quota, key, klen, payload + n);
    n += 16;
    put_u64(payload + n, now_s);
    n += 8;
    put_u64(payload + n, now_s + ttl_s);
    n += 8;
    if (RAND_bytes(payload + n, 16) != 1)
        return CO_EINVAL;
    n += 16;
    /* The MAC is over the payload bytes, not their text: the token's two
     * halves can be decoded and checked without re-encoding. */
    if (co_hmac_sha256(k->secret, k->len, payload, n, mac) != CO_OK)
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

/* Walk a decoded payload: the layout must be exactly version 2's, every
 * length inside its cap, the quota a quota name (only a forged or
 * foreign-keyed token could hold another, but the clearance and Redis key
 * built from it must never see a NUL or a stray byte) and the whole
 * consumed, or the token is bad. On success kid / quota point into p. */
static int parse_payload(const uint8_t *p, size_t n, const uint8_t **kid,
                         size_t *kidlen, const uint8_t **quota, size_t *qlen)
{
    size_t o = 1;

    if (n < 2 || p[0] != TOKEN_VERSION)
        return CO_EBADTOKEN;
    *kidlen = p[o++];
    *kid = p + o;
    if (*kidlen == 0 || *kidlen > CO_KEY_ID_MAX || o + *kidlen >= n)
        return CO_EBADTOKEN;
    o += *kidlen;
    *qlen = p[o++];
    *quota = p + o;
    if (o + *qlen > n || !co_quota_name_ok(*quota, *qlen) ||
        n != o + *qlen + 16 + 8 + 8 + 16)
        return CO_EBADTOKEN;
    return CO_OK;
}

/* Check a token against the challenge keys of k: shape, the key its id
 * names (unknown id: bad), signature (constant time), then expiry at
 * now_s. Returns 0 and fills claims (may be NULL), CO_EBADTOKEN for
 * anything malformed, forged or signed by a key no longer active,
 * CO_EEXPIRED for a genuine token at or past its expiry. Single use
 * (burning the nonce) is the verify endpoint's job, not this. */
int co_challenge_check(const struct co_keyring *k, const char *token,
                       size_t token_len, uint64_t now_s,
                       struct co_challenge_claims *claims)
{
    uint8_t payload[PAYLOAD_MAX + 3], sig[32 + 3], mac[32];
    const char *dot;
    const uint8_t *kid, *quota, *rest;
    const struct co_key *key;
    size_t kidlen, qlen;
    long plen, slen;
    uint64_t issued, expires;

    if (token_len >= CO_TOKEN_MAX)
        return CO_EBADTOKEN;
    dot = memchr(token, '.', token_len);
    if (dot == NULL)
        return CO_EBADTOKEN;
    plen = co_b64url_decode(token, (size_t)(dot - token), payload,
                            sizeof payload);
    slen = co_b64url_decode(dot + 1, token_len - (size_t)(dot - token) - 1,
                            sig, sizeof sig);
    if (plen < 0 || slen != 32 ||
        parse_payload(payload, (size_t)plen, &kid, &kidlen, &quota,
                      &qlen) != CO_OK)
        return CO_EBADTOKEN;
    /* The layout is read before the signature is checked only to find the
     * key; nothing else in it is trusted until the MAC matches. */
    key = co_keys_find(k->challenge, k->n_challenge, (const char *)kid,
                       kidlen);
    if (key == NULL ||
        co_hmac_sha256(key->secret, key->len, payload, (size_t)plen,
                       mac) != CO_OK ||
        CRYPTO_memcmp(mac, sig, sizeof mac) != 0)
        return CO_EBADTOKEN;
    rest = quota + qlen;
    issued = get_u64(rest + 16);
    expires = get_u64(rest + 24);
    if (now_s >= expires)
        return CO_EEXPIRED;
    if (claims != NULL) {
        memcpy(claims->kid, kid, kidlen);
        claims->kid[kidlen] = '\0';
        memcpy(claims->quota, quota, qlen);
        claims->quota[qlen] = '\0';
        memcpy(claims->key_hash, rest, 16);
        claims->issued_at_s = issued;
        claims->expires_at_s = expires;
        memcpy(claims->nonce, rest + 32, 16);
    }
    return CO_OK;
}

/* The token a sync answer carries for a key over its quota: signed with
 * the first challenge key of co_keys, valid ttl_s from now_s. Same
 * returns as co_challenge_issue(); CO_EINVAL when no challenge key is
 * configured. */
int co_challenge_token(const char *quota, const char *key, size_t klen,
                       uint64_t now_s, uint32_t ttl_s, char *out,
                       size_t outlen)
{
    if (co_keys.n_challenge == 0)
        return CO_EINVAL;
    return co_challenge_issue(&co_keys.challenge[0], quota, key, klen, now_s,
                              ttl_s, out, outlen);
}

/* base64url(JSON of doc) appended at out + len. Returns the new length or
 * CO_ENOMEM / CO_ETOOBIG. Frees nothing: the caller owns doc. */
static int append_json_b64(const json_t *doc, char *out, size_t len,
                           size_t outlen)
{
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    long n;

    if (text == NULL)
        return CO_ENOMEM;
    n = co_b64url_encode((const uint8_t *)text, strlen(text), out + len,
                         outlen - len);
    free(text);
    return n < 0 ? CO_ETOOBIG : (int)(len + (size_t)n);
}

/* Sign the clearance token for (quota, kh) with k, valid ttl_s from now_s,
 * into out (NUL-terminated): JWS HS256 compact, header {"alg":"HS256",
 * "typ":"JWT","kid":k->id}, claims {"q","kh","iat","exp"} as the edge
 * expects them (edge-module/include/tollgate.h, tg_add_key). jansson
 * writes the JSON so an id holding '"' or '\' stays one string. Returns
 * the length, CO_ETOOBIG (CO_CLEARANCE_MAX always suffices), CO_ENOMEM or
 * CO_EINVAL. */
int co_clearance_issue(const struct co_key *k, const char *quota,
                       const uint8_t kh[16], uint64_t now_s, uint32_t ttl_s,
                       char *out, size_t outlen)
{
    char kh64[24];
    json_t *header = NULL, *claims = NULL;
    int n = CO_ENOMEM;

    if (k->len == 0 || quota[0] == '\0' || outlen == 0)
        return CO_EINVAL;
    if (co_b64url_encode(kh, 16, kh64, sizeof kh64) < 0)
        return CO_EINVAL;
    header = json_pack("{s:s, s:s, s:s}", "alg", "HS256", "typ", "JWT",
                       "kid", k->id);
    claims = json_pack("{s:s, s:s, s:I, s:I}", "q", quota, "kh", kh64,
                       "iat", (json_int_t)now_s,
                       "exp", (json_int_t)(now_s + ttl_s));
    n = append_json_b64(header, out, 0, outlen);
    if (n < 0)
        goto cleanup;
    if ((size_t)n + 2 > outlen) {
        n = CO_ETOOBIG;
        goto cleanup;
    }
    out[n++] = '.';
    n = append_json_b64(claims, out, (size_t)n, outlen);
    if (n < 0)
        goto cleanup;
    n = append_signature(k, out, (size_t)n, outlen);
cleanup:
    json_decref(claims);
    json_decref(header);
    return n;
}
