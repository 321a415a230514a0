/* script.c — the Lua scripts tollgated runs in Redis, and the builder of
 * one call of them.
 *
 * Every script is a coordinator/<name>.lua file compiled into the binary
 * (Makefile, EMBED) and called by its SHA1 with EVALSHA; redis.c sends the
 * calls and reloads a script Redis answers NOSCRIPT for. A call is built
 * key by key and argument by argument into one arena, keys first, so the
 * arguments never outlive the call and a caller never counts offsets:
 *
 *     struct co_script_call c;
 *     co_call_init(&c, co_script(CO_SCRIPT_POLICY_AUDIT), 3);
 *     co_call_key(&c, co_rkeys.policy_audit,
 *                 strlen(co_rkeys.policy_audit));
 *     co_call_arg_u64(&c, before);
 *     co_call_arg_u64(&c, limit);
 *     if (co_call_seal(&c) == CO_OK) ... co_redis_eval(0, &c, ...);
 *     co_call_free(&c);
 *
 * Errors are sticky (the first one is what co_call_seal() answers), so a
 * builder checks once. A call keeps its keys apart from its arguments
 * (KEYS then ARGV) so a Redis Cluster router can read them, find the
 * slot (co_call_tag()) and send the call there without knowing the
 * script. co_window_estimate() is sync.lua's sliding-window estimate for
 * the readers that must not run the script (key inspect, stats).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "tollgated.h"

/* Generated from coordinator/<name>.lua by the Makefile. */
extern const char co_sync_lua[], co_stats_lua[], co_policy_write_lua[],
    co_policy_audit_lua[], co_probe_lua[];
extern const size_t co_sync_lua_len, co_stats_lua_len,
    co_policy_write_lua_len, co_policy_audit_lua_len, co_probe_lua_len;

static struct co_script scripts[CO_SCRIPTS] = {
    [CO_SCRIPT_SYNC] = {.name = "sync", .src = co_sync_lua},
    [CO_SCRIPT_STATS] = {.name = "stats", .src = co_stats_lua},
    [CO_SCRIPT_POLICY_WRITE] = {.name = "policy_write",
                                .src = co_policy_write_lua},
    [CO_SCRIPT_POLICY_AUDIT] = {.name = "policy_audit",
                                .src = co_policy_audit_lua},
    [CO_SCRIPT_PROBE] = {.name = "probe", .src = co_probe_lua},
};
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

/* Contract in tollgated.h. */
void co_sha1_hex(const char *data, size_t len, char out[41])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(data, len, md, &n, EVP_sha1(), NULL) != 1 || n != 20) {
        out[0] = '\0';
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[40] = '\0';
}

static void scripts_init(void)
{
    const size_t lens[CO_SCRIPTS] = {
        [CO_SCRIPT_SYNC] = co_sync_lua_len,
        [CO_SCRIPT_STATS] = co_stats_lua_len,
        [CO_SCRIPT_POLICY_WRITE] = co_policy_write_lua_len,
        [CO_SCRIPT_POLICY_AUDIT] = co_policy_audit_lua_len,
        [CO_SCRIPT_PROBE] = co_probe_lua_len,
    };

    for (size_t i = 0; i < CO_SCRIPTS; i++) {
        scripts[i].len = lens[i];
        co_sha1_hex(scripts[i].src, scripts[i].len, scripts[i].sha);
    }
}

/* The script's SHA is computed once, on the first call from any thread;
 * sha is "" only when OpenSSL cannot hash (then EVALSHA fails visibly). */
const struct co_script *co_script(enum co_script_id id)
{
    pthread_once(&scripts_once, scripts_init);
    return &scripts[id];
}

/* ------------------------------------------------------------ calls */

/* Sizes the entry arrays for cap keys and arguments; the arena grows. A
 * failed allocation is remembered and answered by co_call_seal(). */
void co_call_init(struct co_script_call *c, const struct co_script *s,
                  size_t cap)
{
    memset(c, 0, sizeof *c);
    c->script = s;
    c->cap = cap;
    c->argv = malloc((cap ? cap : 1) * sizeof *c->argv);
    c->argvlen = malloc((cap ? cap : 1) * sizeof *c->argvlen);
    c->offs = malloc((cap ? cap : 1) * sizeof *c->offs);
    if (c->argv == NULL || c->argvlen == NULL || c->offs == NULL)
        c->rc = CO_ENOMEM;
}

/* Append s[0..n) as entry nkeys + nargs, remembering its offset: pointers
 * are fixed only once the arena stops moving (co_call_seal). */
static void push(struct co_script_call *c, const char *s, size_t n)
{
    size_t idx = c->nkeys + c->nargs;

    if (c->rc != CO_OK)
        return;
    if (idx >= c->cap) {
        c->rc = CO_EINVAL;   /* the caller sized it: a bug if reached */
        return;
    }
    if (c->arena == NULL || c->arena_len + n > c->arena_cap) {
        size_t cap = c->arena_cap ? c->arena_cap : 4096;
        char *p;

        while (cap < c->arena_len + n)
            cap *= 2;
        p = realloc(c->arena, cap);
        if (p == NULL) {
            c->rc = CO_ENOMEM;
            return;
        }
        c->arena = p;
        c->arena_cap = cap;
    }
    memcpy(c->arena + c->arena_len, s, n);
    c->offs[idx] = c->arena_len;
    c->argvlen[idx] = n;
    c->arena_len += n;
}

void co_call_key(struct co_script_call *c, const char *key, size_t n)
{
    if (c->rc == CO_OK && c->nargs > 0) {
        c->rc = CO_EINVAL;   /* KEYS come before ARGV */
        return;
    }
    push(c, key, n);
    if (c->rc == CO_OK)
        c->nkeys++;
}

void co_call_arg(struct co_script_call *c, const char *s, size_t n)
{
    push(c, s, n);
    if (c->rc == CO_OK)
        c->nargs++;
}

void co_call_arg_str(struct co_script_call *c, const char *s)
{
    co_call_arg(c, s, strlen(s));
}

void co_call_arg_u64(struct co_script_call *c, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%llu", (unsigned long long)v);

    co_call_arg(c, num, (size_t)n);
}

int co_call_seal(struct co_script_call *c)
{
    if (c->rc != CO_OK)
        return c->rc;
    for (size_t i = 0; i < c->nkeys + c->nargs; i++)
        c->argv[i] = c->arena + c->offs[i];
    return CO_OK;
}

void co_call_free(struct co_script_call *c)
{
    free(c->argv);
    free(c->argvlen);
    free(c->offs);
    free(c->arena);
    memset(c, 0, sizeof *c);
}

/* What Redis Cluster hashes of a key: the content of the first "{...}"
 * when non-empty, else the whole key. */
static void hash_tag(const char *k, size_t n, const char **tag, size_t *tl)
{
    const char *open = memchr(k, '{', n), *close;

    *tag = k;
    *tl = n;
    if (open == NULL)
        return;
    close = memchr(open + 1, '}', n - (size_t)(open + 1 - k));
    if (close == NULL || close == open + 1)
        return;
    *tag = open + 1;
    *tl = (size_t)(close - open - 1);
}

/* The part of the call's keys Redis Cluster hashes, when all its keys
 * share it (then the call runs on that one slot); CO_EINVAL when they
 * differ or the call has no key. A sync call of several items spans
 * slots (each item's counters carry their own tag, and the replay key
 * the edge's): a cluster router splits it per slot first. */
int co_call_tag(const struct co_script_call *c, const char **tag,
                size_t *len)
{
    if (c->nkeys == 0)
        return CO_EINVAL;
    hash_tag(c->argv[0], c->argvlen[0], tag, len);
    for (size_t i = 1; i < c->nkeys; i++) {
        const char *t;
        size_t tl;

        hash_tag(c->argv[i], c->argvlen[i], &t, &tl);
        if (tl != *len || memcmp(t, *tag, tl) != 0)
            return CO_EINVAL;
    }
    return CO_OK;
}

/* ------------------------------------------------------------ estimate */

/* Contract in tollgated.h. The product is taken in 128 bits: a count
 * near 1e12 times a day's window in ms does not fit in 64. */
uint64_t co_window_estimate(uint64_t w, uint64_t cur, uint64_t prev,
                            uint64_t window_ms, uint64_t now_ms)
{
    uint64_t idx, remaining;

    if (window_ms == 0)
        return 0;
    idx = now_ms / window_ms;
    if (w + 1 < idx)
        return 0;
    if (w + 1 == idx) {
        prev = cur;
        cur = 0;
    } else if (w > idx) {
        idx = w;
    }
    remaining = (idx + 1) * window_ms > now_ms ? (idx + 1) * window_ms - now_ms
                                               : 0;
    if (remaining > window_ms)
        remaining = window_ms;
    return (uint64_t)(((unsigned __int128)prev * remaining + window_ms - 1) /
                      window_ms) + cur;
}
