/* redis_keys.c — every Redis key name tollgated uses, built in one place.
 *
 * The data model (what each key holds, who writes it, how long it lives)
 * is written once, in the header of coordinator/sync.lua; this file only
 * spells the names. Every name is "tg:" + a hash tag in braces + a
 * suffix, and every key one script call touches shares its tag, so a
 * Redis Cluster router can send the call to the slot of its first key
 * (co_call_tag() in script.c). Keys the scripts compute themselves
 * (policy versions, stats minutes and top keys) are built from a prefix
 * that is passed in KEYS, so even they are named here and hash to the
 * call's slot.
 *
 * Tags: "{<quota>|<key>}" for a rate-limit key's counters,
 * "{edge|<edge_id>}" for replay marks, "{nonce|<hex>}" for burnt challenge
 * nonces, "{clr|<quota>|<hex>}" for clearance marks, "{policy}" for the
 * policy store and "{stats}" for /v1/stats; probe.lua's two keys hash to
 * two slots on purpose (it checks Redis is no cluster node). Parts a client chooses are
 * percent-encoded outside [A-Za-z0-9._:-] (co_percent_encode), so '{',
 * '}', '|' and '%' never appear raw and distinct parts give distinct
 * names.
 */
#include <stdio.h>
#include <string.h>

#include "tollgated.h"

#define PREFIX "tg:"

const struct co_rkeys co_rkeys = {
    .policy_current = PREFIX "{policy}:current",
    .policy_seq = PREFIX "{policy}:seq",
    .policy_meta = PREFIX "{policy}:meta",
    .policy_audit = PREFIX "{policy}:audit",
    .policy_audit_seq = PREFIX "{policy}:audit_seq",
    .policy_version_prefix = PREFIX "{policy}:v:",
    .stats_edges = PREFIX "{stats}:edges",
    .stats_edgez = PREFIX "{stats}:edgez",
    .stats_ch = PREFIX "{stats}:ch",
    .stats_chz = PREFIX "{stats}:chz",
    .stats_prefix = PREFIX "{stats}:",
    .probe_a = PREFIX "{probe}:a",
    .probe_b = PREFIX "{probe-b}:b",
};

/* Write the hash tag "{<quota>|<key>}" for (quota, key) into out (NUL-
 * terminated), both parts percent-encoded. Because '%', '{', '}' and '|'
 * are always encoded, distinct pairs give distinct tags and Redis Cluster
 * hashes exactly the braces' content. Returns the length, or CO_ETOOBIG /
 * CO_EINVAL (parts over their caps). */
int co_key_tag(const char *quota, size_t qlen, const char *key, size_t klen,
               char *out, size_t outlen)
{
    size_t o = 0;

    if (qlen > CO_QUOTA_NAME_MAX || klen > CO_KEY_MAX)
        return CO_EINVAL;
    if (outlen < 3 + 3 * qlen + 3 * klen + 1)
        return CO_ETOOBIG;
    out[o++] = '{';
    o += (size_t)co_percent_encode(quota, qlen, out + o, outlen - o);
    out[o++] = '|';
    o += (size_t)co_percent_encode(key, klen, out + o, outlen - o);
    out[o++] = '}';
    out[o] = '\0';
    return (int)o;
}

/* The sync path builds both names of every item, so the tag is encoded
 * once and the two names differ in their last byte only. */
int co_rkey_counters(const char *quota, size_t qlen, const char *key,
                     size_t klen, char *c, char *e, size_t outlen)
{
    char tag[CO_KEY_TAG_MAX];
    int tl = co_key_tag(quota, qlen, key, klen, tag, sizeof tag);
    size_t n;

    if (tl < 0)
        return tl;
    n = sizeof PREFIX - 1 + (size_t)tl + 2;
    if (n + 1 > outlen)
        return CO_ETOOBIG;
    memcpy(c, PREFIX, sizeof PREFIX - 1);
    memcpy(c + sizeof PREFIX - 1, tag, (size_t)tl);
    memcpy(c + n - 2, ":c", 3);
    memcpy(e, c, n + 1);
    e[n - 1] = 'e';
    return (int)n;
}

/* tg:{edge|<edge_id encoded>}:sig:<the first 32 hex digits of sig_hex>:
 * 128 bits of an HMAC do not collide by chance. */
int co_rkey_replay(const char *edge_id, const char *sig_hex, char *out,
                   size_t outlen)
{
    char tag[CO_KEY_TAG_MAX];
    int tl = co_key_tag("edge", 4, edge_id, strlen(edge_id), tag,
                        sizeof tag);
    int n;

    if (tl < 0)
        return tl;
    n = snprintf(out, outlen, PREFIX "%s:sig:%.32s", tag, sig_hex);
    return n < 0 || (size_t)n >= outlen ? CO_ETOOBIG : n;
}

/* tg:{q|k}:sig:<edge_id encoded>:<the first 32 hex digits of sig_hex>:
 * the replay mark of one sync call in Redis Cluster mode, in the slot of
 * the call's items (quota, key) so the call stays in one slot. */
int co_rkey_replay_at(const char *quota, const char *key, const char *edge_id,
                      const char *sig_hex, char *out, size_t outlen)
{
    char tag[CO_KEY_TAG_MAX], edge[3 * CO_KEY_MAX + 1];
    int tl = co_key_tag(quota, strlen(quota), key, strlen(key), tag,
                        sizeof tag);
    int el = strlen(edge_id) > CO_KEY_MAX ? CO_EINVAL
             : co_percent_encode(edge_id, strlen(edge_id), edge, sizeof edge);
    int n;

    if (tl < 0)
        return tl;
    if (el < 0)
        return el;
    n = snprintf(out, outlen, PREFIX "%s:sig:%s:%.32s", tag, edge, sig_hex);
    return n < 0 || (size_t)n >= outlen ? CO_ETOOBIG : n;
}

int co_rkey_nonce(const uint8_t nonce[16], char *out, size_t outlen)
{
    char hex[33];
    int n;

    co_hex_encode(nonce, 16, hex, sizeof hex);
    n = snprintf(out, outlen, PREFIX "{nonce|%s}", hex);
    return n < 0 || (size_t)n >= outlen ? CO_ETOOBIG : n;
}

/* The quota name is not encoded: policy names are [A-Za-z0-9._-] already,
 * and a challenge token's quota was checked against the policy. */
int co_rkey_clearance(const char *quota, const uint8_t kh[16], char *out,
                      size_t outlen)
{
    char hex[33];
    int n;

    co_hex_encode(kh, 16, hex, sizeof hex);
    n = snprintf(out, outlen, PREFIX "{clr|%s|%s}", quota, hex);
    return n < 0 || (size_t)n >= outlen ? CO_ETOOBIG : n;
}

int co_rkey_policy_version(uint64_t version, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s%llu", co_rkeys.policy_version_prefix,
                     (unsigned long long)version);

    return n < 0 || (size_t)n >= outlen ? CO_ETOOBIG : n;
}
