/* sync.c — POST /v1/sync: an edge reports its counts, gets decisions.
 *
 * The order of work is cheapest rejection first: the edge's signature
 * (auth.c) before the protobuf is unpacked, the body's fields, then ONE
 * pipelined round trip to Redis running sync.lua over the batch (several
 * EVALSHA calls of at most SYNC_CALL_ITEMS items each, so no single script
 * call blocks Redis for long). The answer holds one KeyState per KeyCount,
 * in request order, and acked_seq = seq once Redis applied the batch.
 *
 * Idempotency: a batch resent with the same seq (its answer was lost) gets
 * the same actions, leases, reset times and counts, and is counted once;
 * only a challenge token is freshly signed (same key, quota and expiry
 * rules, a new nonce), which is as good to the edge. A seq older than one
 * already applied for any of its keys is refused with 409. When the batch
 * spans several calls, each call is atomic but the batch is not: a 409 from
 * a later call can follow earlier calls that were applied.
 *
 * When Redis cannot be reached (or answers nonsense) within
 * --redis-timeout-ms the answer is still 200, marked degraded, with
 * acked_seq 0 (the edge keeps the counts and resends them), every key at
 * ALLOW with lease 0 (edges fall back to their own decaying allowance), and
 * next_sync_ms <= 1000 so the edge comes back soon. The replay check runs
 * in Redis, so it cannot run then; nothing is applied either, and the
 * signature's 30 s timestamp window still bounds what a replay could do:
 * get a degraded answer.
 *
 * Each item carries its key's own limit (a per-key override's, else the
 * quota's: co_quota_limit) and the quota's burst; sync.lua decides, scales
 * deny_after and caps leases with them, so an override changes nothing for
 * the quota's other keys. Edges never see overrides.
 *
 * The script calls are built from a list of items rather than from the
 * whole request, so a Redis Cluster version can group items by hash slot
 * and pipeline one call per slot without touching the rest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "tollgated.h"

#define SYNC_COUNTS_FIELD 6       /* SyncRequest.counts in the .proto */
#define DEGRADED_SYNC_MS  1000u   /* come back at least this soon */
#define SYNC_CALL_ITEMS   512     /* items per EVALSHA */
#define SYNC_HEAD_ARGS    7       /* sync.lua ARGV before the items */
#define SYNC_ITEM_ARGS    7       /* sync.lua ARGV per item */
#define SYNC_REPLY_HEAD   3       /* sync.lua reply before the items */
#define SYNC_REPLY_ITEM   4       /* sync.lua reply per item */

/* sync.lua's reply status (first integer). */
#define SCRIPT_APPLIED    0
#define SCRIPT_REPLAYED   1
#define SCRIPT_CONFLICT   2

/* One KeyCount and what the policy says about it. */
struct sync_item {
    const Tollgate__V1__KeyCount *kc;
    const struct co_quota *quota;   /* NULL: not in the policy */
    uint64_t admitted;              /* of every KeyCount of this key */
    uint64_t attempts;              /* admitted + denied + challenged */
    struct sync_item *same;         /* the item that carries this key's
                                     * counts to Redis (itself, mostly) */
    size_t slot;                    /* its index among the script's items */
};

/* What every script call of one request shares (ARGV 1..6 and KEYS[1]). */
struct call_head {
    const char *replay_key;
    const char *edge_id;
    uint64_t seq;
    uint32_t sync_interval_ms;
    char nonce[33];
};

/* A co_script_call and the memory behind it. */
struct script_args {
    struct co_script_call call;
    const char **argv;
    size_t *lens;
    size_t *offs;
    char *arena;
    size_t arena_len;
    size_t arena_cap;
};

static void script_args_free(struct script_args *a)
{
    free(a->argv);
    free(a->lens);
    free(a->offs);
    free(a->arena);
    memset(a, 0, sizeof *a);
}

/* Append one argument to the arena, remembering its offset: pointers are
 * only fixed once the arena stops moving. */
static int arena_push(struct script_args *a, size_t idx, const char *s,
                      size_t n)
{
    if (a->arena == NULL || a->arena_len + n > a->arena_cap) {
        size_t cap = a->arena_cap ? a->arena_cap : 4096;
        char *p;

        while (cap < a->arena_len + n)
            cap *= 2;
        p = realloc(a->arena, cap);
        if (p == NULL)
            return CO_ENOMEM;
        a->arena = p;
        a->arena_cap = cap;
    }
    memcpy(a->arena + a->arena_len, s, n);
    a->offs[idx] = a->arena_len;
    a->lens[idx] = n;
    a->arena_len += n;
    return CO_OK;
}

static int arena_push_u64(struct script_args *a, size_t idx, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%llu", (unsigned long long)v);

    return arena_push(a, idx, num, (size_t)n);
}

static int arena_push_str(struct script_args *a, size_t idx, const char *s)
{
    return arena_push(a, idx, s, strlen(s));
}

/* Build KEYS and ARGV of one sync.lua call (layout in sync.lua and
 * tollgated.h) for items[0..n), now_ms being the coordinator's clock. The
 * reply will go to out (SYNC_REPLY_HEAD + SYNC_REPLY_ITEM * n integers).
 * On success a->call is ready for co_redis_eval_sync() and stays valid
 * until script_args_free(a). Returns 0 or CO_ENOMEM / CO_EINVAL. */
static int build_script_call(const struct call_head *h, uint64_t now_ms,
                             struct sync_item *const *items, size_t n,
                             long long *out, struct script_args *a)
{
    size_t nkeys = 1 + 2 * n, nargs = SYNC_HEAD_ARGS + SYNC_ITEM_ARGS * n;
    size_t total = nkeys + nargs, k = 0;
    char tag[CO_KEY_TAG_MAX], key[CO_KEY_TAG_MAX + 8];
    int rc = CO_ENOMEM;

    memset(a, 0, sizeof *a);
    a->argv = malloc(total * sizeof *a->argv);
    a->lens = malloc(total * sizeof *a->lens);
    a->offs = malloc(total * sizeof *a->offs);
    if (a->argv == NULL || a->lens == NULL || a->offs == NULL)
        goto cleanup;
    if (arena_push_str(a, k++, h->replay_key) != CO_OK)
        goto cleanup;
    for (size_t i = 0; i < n; i++) {
        const Tollgate__V1__KeyCount *kc = items[i]->kc;
        int tl = co_key_tag(kc->quota, strlen(kc->quota), kc->key,
                            strlen(kc->key), tag, sizeof tag);

        if (tl < 0) {
            rc = CO_EINVAL;   /* validated before: a bug if reached */
            goto cleanup;
        }
        snprintf(key, sizeof key, "tg:%s:c", tag);
        if (arena_push(a, k++, key, (size_t)tl + 5) != CO_OK)
            goto cleanup;
        key[tl + 4] = 'e';
        if (arena_push(a, k++, key, (size_t)tl + 5) != CO_OK)
            goto cleanup;
    }
    if (arena_push_u64(a, k++, now_ms) != CO_OK ||
        arena_push_str(a, k++, h->edge_id) != CO_OK ||
        arena_push_u64(a, k++, h->seq) != CO_OK ||
        arena_push_u64(a, k++, h->sync_interval_ms) != CO_OK ||
        arena_push_str(a, k++, h->nonce) != CO_OK ||
        arena_push_u64(a, k++, CO_AUTH_REPLAY_TTL_MS) != CO_OK ||
        arena_push_u64(a, k++, n) != CO_OK)
        goto cleanup;
    for (size_t i = 0; i < n; i++) {
        const struct co_quota *q = items[i]->quota;
        uint64_t over = q->action == TOLLGATE__V1__ACTION__ACTION_DENY ? 2 : 1;

        /* The key's own limit (its override's, else the quota's): the
         * script decides, scales deny_after and leases against it. */
        if (arena_push_u64(a, k++, co_quota_limit(q, items[i]->kc->key)) !=
                CO_OK ||
            arena_push_u64(a, k++, (uint64_t)q->window_s * 1000u) != CO_OK ||
            arena_push_u64(a, k++, over) != CO_OK ||
            arena_push_u64(a, k++, q->deny_after_milli) != CO_OK ||
            arena_push_u64(a, k++, items[i]->admitted) != CO_OK ||
            arena_push_u64(a, k++, items[i]->attempts) != CO_OK ||
            arena_push_u64(a, k++, q->burst) != CO_OK)
            goto cleanup;
    }
    for (size_t i = 0; i < total; i++)
        a->argv[i] = a->arena + a->offs[i];
    a->call.nkeys = nkeys;
    a->call.nargs = nargs;
    a->call.argv = a->argv;
    a->call.argvlen = a->lens;
    a->call.out = out;
    a->call.nout = SYNC_REPLY_HEAD + SYNC_REPLY_ITEM * n;
    rc = CO_OK;
cleanup:
    if (rc != CO_OK)
        script_args_free(a);
    return rc;
}

static int read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t b;

        if (*i >= len)
            return CO_EINVAL;
        b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return CO_OK;
    }
    return CO_EINVAL;
}

/* Count top-level length-delimited occurrences of field in a protobuf
 * message without decoding it. Unpacking allocates per element, so a 1 MiB
 * body of empty KeyCounts would cost tens of MiB before the count cap could
 * refuse it; this walk costs nothing. Returns 0 or CO_EINVAL (malformed). */
static int wire_count_field(const uint8_t *p, size_t len, uint32_t field,
                            size_t *count)
{
    size_t i = 0;

    *count = 0;
    while (i < len) {
        uint64_t tag, v;

        if (read_varint(p, len, &i, &tag) != CO_OK || tag >> 3 == 0)
            return CO_EINVAL;
        switch (tag & 7) {
        case 0:
            if (read_varint(p, len, &i, &v) != CO_OK)
                return CO_EINVAL;
            break;
        case 1:
            if (len - i < 8)
                return CO_EINVAL;
            i += 8;
            break;
        case 2:
            if (read_varint(p, len, &i, &v) != CO_OK || v > len - i)
                return CO_EINVAL;
            i += (size_t)v;
            if (tag >> 3 == field)
                (*count)++;
            break;
        case 5:
            if (len - i < 4)
                return CO_EINVAL;
            i += 4;
            break;
        default:
            return CO_EINVAL;
        }
    }
    return CO_OK;
}

static bool visible_ascii(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* The client's side of the contract. Returns 0 or CO_EINVAL with a detail
 * naming the offending field for the 400 answer. */
static int validate_request(const Tollgate__V1__SyncRequest *in,
                            char *detail, size_t len)
{
    size_t elen = strlen(in->edge_id);

    if (elen == 0 || elen > CO_EDGE_ID_MAX || !visible_ascii(in->edge_id)) {
        snprintf(detail, len, "edge_id: must be 1..%d visible ASCII bytes",
                 CO_EDGE_ID_MAX);
        return CO_EINVAL;
    }
    if (in->seq == 0) {
        snprintf(detail, len, "seq: must be >= 1");
        return CO_EINVAL;
    }
    if (in->n_counts > CO_SYNC_COUNTS_MAX) {
        snprintf(detail, len, "counts: at most %d per request",
                 CO_SYNC_COUNTS_MAX);
        return CO_EINVAL;
    }
    for (size_t i = 0; i < in->n_counts; i++) {
        const Tollgate__V1__KeyCount *kc = in->counts[i];
        size_t qlen = strlen(kc->quota);

        if (qlen == 0 || qlen > CO_QUOTA_NAME_MAX) {
            snprintf(detail, len, "counts[%zu].quota: must be 1..%d bytes",
                     i, CO_QUOTA_NAME_MAX);
            return CO_EINVAL;
        }
        if (strlen(kc->key) > CO_KEY_MAX) {
            snprintf(detail, len, "counts[%zu].key: must be at most %d "
                     "bytes", i, CO_KEY_MAX);
            return CO_EINVAL;
        }
        if (kc->admitted > CO_COUNT_MAX || kc->denied > CO_COUNT_MAX ||
            kc->challenged > CO_COUNT_MAX) {
            snprintf(detail, len, "counts[%zu]: a count is over %llu", i,
                     (unsigned long long)CO_COUNT_MAX);
            return CO_EINVAL;
        }
    }
    return CO_OK;
}

static void reject(struct co_response *resp, const char *detail)
{
    char v[300];

    CO_INFO("msg=sync_rejected status=400 detail=%s",
            co_log_value(v, sizeof v, detail, strlen(detail)));
    co_response_problem(resp, 400, detail);
}

static int cmp_item(const void *x, const void *y)
{
    const Tollgate__V1__KeyCount *a = (*(struct sync_item *const *)x)->kc;
    const Tollgate__V1__KeyCount *b = (*(struct sync_item *const *)y)->kc;
    int c = strcmp(a->quota, b->quota);

    return c != 0 ? c : strcmp(a->key, b->key);
}

/* Fold KeyCounts naming one (quota, key) into the first of them. An edge
 * does send a key twice in one batch: counts of an evicted key wait in its
 * spill list while the key, seen again, has fresh counts in its table
 * slot. The per-key record that makes a resend idempotent holds one answer
 * per (edge, key, seq), so the key must reach the script once, with the
 * sum; every KeyCount still gets a KeyState, the same one. Sums cannot
 * overflow: each count is at most CO_COUNT_MAX (1e12) and a batch holds at
 * most CO_SYNC_COUNTS_MAX (1e4) of them. sorted is scratch of n pointers. */
static void merge_duplicates(struct sync_item *items, size_t n,
                             struct sync_item **sorted)
{
    for (size_t i = 0; i < n; i++) {
        sorted[i] = &items[i];
        items[i].same = &items[i];
    }
    if (n > 1)
        qsort(sorted, n, sizeof *sorted, cmp_item);
    for (size_t i = 1; i < n; i++) {
        struct sync_item *a = sorted[i - 1]->same, *b = sorted[i];

        if (cmp_item(&sorted[i - 1], &sorted[i]) != 0)
            continue;
        if (b < a) {                 /* the first in request order keeps it */
            struct sync_item *t = a;

            a = b;
            b = t;
            a->same = a;
        }
        a->admitted += b->admitted;
        a->attempts += b->attempts;
        b->same = a;
        sorted[i] = a;
    }
}

/* Sanity of the script's answer for one item: anything else is a bug in
 * sync.lua or in how we call it. */
static bool reply_ok(const long long *r)
{
    return r[0] >= 0 && r[0] <= 2 && r[1] >= 0 && r[2] >= 0 && r[3] >= 0;
}

/* Fill state i from the script's 4 integers (NULL: unknown quota, or
 * degraded: ALLOW, lease 0). A challenge token counts for /metrics and
 * /v1/stats (which edge got it). */
static void fill_state(Tollgate__V1__KeyState *st, const struct sync_item *it,
                       const long long *r, uint64_t now_ms,
                       const char *edge_id, bool *token_failed)
{
    Tollgate__V1__KeyState init = TOLLGATE__V1__KEY_STATE__INIT;

    *st = init;
    st->quota = it->kc->quota;
    st->key = it->kc->key;
    if (r == NULL)
        return;
    st->action = (Tollgate__V1__Action)r[0];
    st->lease = (uint64_t)r[1];
    st->reset_ms = (uint64_t)r[2];
    st->count = (uint64_t)r[3];
    if (st->action == TOLLGATE__V1__ACTION__ACTION_CHALLENGE) {
        /* A retry gets a fresh token (new nonce, same rules): the edge
         * cannot tell, and storing tokens in Redis would cost more. */
        char *tok = malloc(CO_TOKEN_MAX);

        if (tok == NULL ||
            co_challenge_token(it->kc->quota, it->kc->key,
                               strlen(it->kc->key), now_ms / 1000u,
                               CO_CHALLENGE_TTL_S, tok, CO_TOKEN_MAX) < 0) {
            free(tok);
            *token_failed = true;
            return;
        }
        st->challenge_token = tok;
        atomic_fetch_add_explicit(&co_metrics.challenges_issued, 1,
                                  memory_order_relaxed);
        co_stats_challenge_issued(it->kc->quota, it->kc->key,
                                  strlen(it->kc->key), edge_id, now_ms);
    }
}

/* A nonce unique to this request: later script calls of the batch
 * recognise the replay key the first one wrote. Returns 0 or CO_EINVAL
 * (RNG failure). */
static int make_nonce(char out[33])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t r[16];

    if (RAND_bytes(r, sizeof r) != 1)
        return CO_EINVAL;
    for (size_t i = 0; i < sizeof r; i++) {
        out[2 * i] = digits[r[i] >> 4];
        out[2 * i + 1] = digits[r[i] & 15];
    }
    out[32] = '\0';
    return CO_OK;
}

/* For /metrics and /v1/stats, after the answer is ready (metrics.c,
 * stats.c): the decisions of the KeyCounts of calls that were not retries
 * (summed into dec per outcome for /v1/stats), and est/limit of every key
 * the script answered. */
static void record_metrics(const struct co_policy *pol,
                           const struct sync_item *items, size_t n,
                           const long long *reply, uint64_t now_ms,
                           uint64_t dec[CO_STATS_OUTCOMES])
{
    for (size_t i = 0; i < n; i++) {
        const struct sync_item *it = &items[i];
        const struct co_quota *q = it->quota;
        size_t k = it->same->slot, c = k / SYNC_CALL_ITEMS;
        const long long *h = reply + SYNC_REPLY_HEAD * c +
                             SYNC_REPLY_ITEM * c * SYNC_CALL_ITEMS;
        const long long *r = reply + SYNC_REPLY_HEAD * (c + 1) +
                             SYNC_REPLY_ITEM * k;

        if (q == NULL)
            continue;
        /* h[2]: items of the call answered as retries (sync.lua). */
        if (h[2] == 0) {
            co_metrics_decisions(q->name, q->shadow, it->kc->admitted,
                                 it->kc->denied, it->kc->challenged);
            if (q->shadow) {
                dec[CO_STATS_SHADOW] += it->kc->admitted + it->kc->denied +
                                        it->kc->challenged;
            } else {
                dec[CO_STATS_ALLOWED] += it->kc->admitted;
                dec[CO_STATS_DENIED] += it->kc->denied;
                dec[CO_STATS_CHALLENGED] += it->kc->challenged;
            }
        }
        if (it->same == it) {
            co_metrics_overshoot(q->name, (uint64_t)q->window_s * 1000u,
                                 now_ms, (uint64_t)r[3],
                                 co_quota_limit(q, it->kc->key));
            co_stats_top_key(pol, q, it->kc->key, (uint64_t)r[3], now_ms);
        }
    }
}

/* /v1/stats and the edge gauges of /metrics: the edge's sync and, when
 * applied, its decisions (n = 0: none). */
static void record_stats(const Tollgate__V1__SyncRequest *in,
                         const struct co_policy *pol,
                         const struct sync_item *items, size_t n,
                         const long long *reply, uint64_t now_ms,
                         bool degraded)
{
    struct co_stats_sync s = {
        .edge_id = in->edge_id,
        .module_version = in->module_version,
        .sent_at_ms = in->sent_at_ms,
        .policy_version = in->policy_version,
        .degraded = degraded,
    };

    if (!degraded)
        record_metrics(pol, items, n, reply, now_ms, s.decisions);
    co_stats_sync_seen(&s, now_ms);
}

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

/* The handler. Contract in the file comment; the status is 200 for every
 * well-formed, authentic request (degraded or not), 401 for a request not
 * signed by a known edge or replayed, 400 for a malformed or invalid one,
 * 409 for a seq older than one applied, 500 only when memory runs out. */
static void sync_handle(const struct co_request *req,
                        struct co_response *resp, uint64_t t0,
                        bool *was_degraded)
{
    Tollgate__V1__SyncRequest *in = NULL;
    Tollgate__V1__SyncResponse out = TOLLGATE__V1__SYNC_RESPONSE__INIT;
    Tollgate__V1__KeyState *states = NULL, **state_ptrs = NULL;
    struct co_policy *pol = NULL;
    struct sync_item *items = NULL, **known = NULL;
    struct script_args *args = NULL;
    struct co_script_call *calls = NULL;
    struct call_head head;
    struct co_auth auth;
    enum co_auth_reason why;
    long long *reply = NULL;
    uint8_t *packed = NULL;
    size_t n = 0, n_known = 0, n_calls = 0, wire_counts, plen;
    const char *redis = "skipped";
    char detail[300], err[256] = "", v1[96], v2[300];
    char replay_key[CO_REPLAY_KEY_MAX];
    bool degraded = false, token_failed = false;
    uint64_t now_ms, now_answer_ms;
    int rc;

    why = co_auth_check(req, &auth);
    if (why != CO_AUTH_OK) {
        co_auth_reject(resp, why, auth.edge_id);
        return;
    }
    if (wire_count_field(req->body, req->body_len, SYNC_COUNTS_FIELD,
                         &wire_counts) != CO_OK) {
        reject(resp, "malformed protobuf: not a SyncRequest");
        goto cleanup;
    }
    if (wire_counts > CO_SYNC_COUNTS_MAX) {
        snprintf(detail, sizeof detail, "counts: at most %d per request",
                 CO_SYNC_COUNTS_MAX);
        reject(resp, detail);
        goto cleanup;
    }
    in = tollgate__v1__sync_request__unpack(NULL, req->body_len, req->body);
    if (in == NULL) {
        reject(resp, "malformed protobuf: not a SyncRequest");
        goto cleanup;
    }
    if (validate_request(in, detail, sizeof detail) != CO_OK) {
        reject(resp, detail);
        goto cleanup;
    }
    if (strcmp(in->edge_id, auth.edge_id) != 0) {
        co_auth_reject(resp, CO_AUTH_EDGE_MISMATCH, auth.edge_id);
        goto cleanup;
    }
    pol = co_policy_current();
    if (pol == NULL) {
        CO_ERROR("msg=sync_no_policy");
        co_response_problem(resp, 503, "no policy loaded");
        goto cleanup;
    }

    n = in->n_counts;
    items = calloc(n ? n : 1, sizeof *items);
    known = calloc(n ? n : 1, sizeof *known);
    states = calloc(n ? n : 1, sizeof *states);
    state_ptrs = calloc(n ? n : 1, sizeof *state_ptrs);
    if (items == NULL || known == NULL || states == NULL ||
        state_ptrs == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const Tollgate__V1__KeyCount *kc = in->counts[i];

        items[i].kc = kc;
        items[i].quota = co_policy_find(pol, kc->quota);
        items[i].admitted = kc->admitted;
        items[i].attempts = kc->admitted + kc->denied + kc->challenged;
    }
    merge_duplicates(items, n, known);
    for (size_t i = 0; i < n; i++)
        if (items[i].quota != NULL && items[i].same == &items[i]) {
            items[i].slot = n_known;
            known[n_known++] = &items[i];
        }

    /* Even a batch with nothing to count goes to Redis: the replay check
     * lives there. */
    if (co_auth_replay_key(&auth, replay_key, sizeof replay_key) < 0 ||
        make_nonce(head.nonce) != CO_OK) {
        CO_ERROR("msg=sync_build_failed detail=\"replay key or nonce\"");
        co_response_problem(resp, 500, "internal error");
        goto cleanup;
    }
    head.replay_key = replay_key;
    head.edge_id = in->edge_id;
    head.seq = in->seq;
    head.sync_interval_ms = pol->sync_interval_ms;
    n_calls = n_known == 0 ? 1 : (n_known + SYNC_CALL_ITEMS - 1) /
                                 SYNC_CALL_ITEMS;
    args = calloc(n_calls, sizeof *args);
    calls = calloc(n_calls, sizeof *calls);
    reply = calloc(SYNC_REPLY_HEAD * n_calls + SYNC_REPLY_ITEM * n_known,
                   sizeof *reply);
    if (args == NULL || calls == NULL || reply == NULL)
        goto oom;
    now_ms = co_wall_ms();
    for (size_t c = 0; c < n_calls; c++) {
        size_t lo = c * SYNC_CALL_ITEMS;
        size_t cnt = n_known - lo < SYNC_CALL_ITEMS ? n_known - lo
                                                    : SYNC_CALL_ITEMS;
        long long *o = reply + SYNC_REPLY_HEAD * c + SYNC_REPLY_ITEM * lo;

        rc = build_script_call(&head, now_ms, known + lo, cnt, o, &args[c]);
        if (rc == CO_EINVAL) {
            CO_ERROR("msg=sync_build_failed detail=\"key over its cap "
                     "after validation\"");
            co_response_problem(resp, 500, "internal error");
            goto cleanup;
        }
        if (rc != CO_OK)
            goto oom;
        calls[c] = args[c].call;
    }
    rc = co_redis_eval_sync(calls, n_calls, err, sizeof err);
    if (rc == CO_ENOMEM)
        goto oom;
    for (size_t c = 0; c < n_calls && rc == CO_OK; c++) {
        const long long *h = calls[c].out;

        if (h[0] == SCRIPT_REPLAYED) {
            co_auth_reject(resp, CO_AUTH_REPLAYED, auth.edge_id);
            goto cleanup;
        }
        if (h[0] == SCRIPT_CONFLICT) {
            CO_INFO("msg=sync_conflict edge=%s seq=%llu applied_seq=%lld",
                    co_log_value(v1, sizeof v1, in->edge_id,
                                 strlen(in->edge_id)),
                    (unsigned long long)in->seq, h[1]);
            snprintf(detail, sizeof detail, "seq %llu is older than seq "
                     "%lld already applied for edge %s",
                     (unsigned long long)in->seq, h[1], in->edge_id);
            co_response_problem(resp, 409, detail);
            record_stats(in, pol, items, 0, reply, now_ms, false);
            goto cleanup;
        }
        if (h[0] != SCRIPT_APPLIED) {
            CO_ERROR("msg=sync_bad_script_reply call=%zu status=%lld", c,
                     h[0]);
            snprintf(err, sizeof err, "script reply out of range");
            rc = CO_EREPLY;
        }
        for (size_t i = 0; rc == CO_OK && i < (calls[c].nout -
                                                SYNC_REPLY_HEAD) /
                                               SYNC_REPLY_ITEM; i++) {
            const long long *r = h + SYNC_REPLY_HEAD + SYNC_REPLY_ITEM * i;

            if (!reply_ok(r)) {
                CO_ERROR("msg=sync_bad_script_reply item=%zu action=%lld "
                         "lease=%lld", i, r[0], r[1]);
                snprintf(err, sizeof err, "script reply out of range");
                rc = CO_EREPLY;
            }
        }
    }
    degraded = rc != CO_OK;
    *was_degraded = degraded;
    redis = rc == CO_OK ? "ok" : rc == CO_EREDIS ? "down" : "error";

    now_answer_ms = co_wall_ms();
    for (size_t i = 0; i < n; i++) {
        const long long *r = NULL;
        size_t k = items[i].same->slot;

        if (items[i].quota != NULL && !degraded)
            r = reply + SYNC_REPLY_HEAD * (k / SYNC_CALL_ITEMS + 1) +
                SYNC_REPLY_ITEM * k;
        fill_state(&states[i], &items[i], r, now_answer_ms, in->edge_id,
                   &token_failed);
        state_ptrs[i] = &states[i];
    }
    if (token_failed)
        CO_ERROR("msg=challenge_issue_failed edge=%s",
                 co_log_value(v1, sizeof v1, in->edge_id,
                              strlen(in->edge_id)));

    out.acked_seq = degraded ? 0 : in->seq;
    out.next_sync_ms = pol->sync_interval_ms;
    if (degraded && out.next_sync_ms > DEGRADED_SYNC_MS)
        out.next_sync_ms = DEGRADED_SYNC_MS;
    out.n_states = n;
    out.states = state_ptrs;
    out.degraded = degraded;
    out.policy_version = pol->version;
    if (in->policy_version != pol->version)
        out.policy = pol->pb;
    out.server_time_ms = co_wall_ms();

    plen = tollgate__v1__sync_response__get_packed_size(&out);
    packed = malloc(plen ? plen : 1);
    if (packed == NULL)
        goto oom;
    if (tollgate__v1__sync_response__pack(&out, packed) != plen) {
        CO_ERROR("msg=sync_pack_failed");
        co_response_problem(resp, 500, "cannot encode the response");
        goto cleanup;
    }
    co_response_take(resp, 200, "application/x-protobuf", packed, plen);
    packed = NULL;
    record_stats(in, pol, items, n, reply, now_ms, degraded);

    if (degraded)
        CO_WARN("msg=sync edge=%s seq=%llu keys=%zu dur_ms=%.2f redis=%s "
                "detail=%s",
                co_log_value(v1, sizeof v1, in->edge_id, strlen(in->edge_id)),
                (unsigned long long)in->seq, n,
                (double)(co_mono_us() - t0) / 1000.0, redis,
                co_log_value(v2, sizeof v2, err, strlen(err)));
    else
        CO_INFO("msg=sync edge=%s seq=%llu keys=%zu dur_ms=%.2f redis=%s",
                co_log_value(v1, sizeof v1, in->edge_id, strlen(in->edge_id)),
                (unsigned long long)in->seq, n,
                (double)(co_mono_us() - t0) / 1000.0, redis);
    goto cleanup;

oom:
    CO_ERROR("msg=sync_out_of_memory keys=%zu", n);
    co_response_problem(resp, 500, "out of memory");
cleanup:
    for (size_t i = 0; states != NULL && i < n; i++)
        if (states[i].challenge_token != NULL &&
            states[i].challenge_token != protobuf_c_empty_string)
            free(states[i].challenge_token);
    free(packed);
    free(reply);
    for (size_t c = 0; args != NULL && c < n_calls; c++)
        script_args_free(&args[c]);
    free(args);
    free(calls);
    free(state_ptrs);
    free(states);
    free(known);
    free(items);
    co_policy_release(pol);
    if (in != NULL)
        tollgate__v1__sync_request__free_unpacked(in, NULL);
}

void co_sync_handle(const struct co_request *req, struct co_response *resp)
{
    uint64_t t0 = co_mono_us();
    bool degraded = false;
    enum co_sync_result result;

    sync_handle(req, resp, t0, &degraded);
    switch (resp->status) {
    case 200:
        result = degraded ? CO_SYNC_RESULT_DEGRADED : CO_SYNC_RESULT_OK;
        break;
    case 400: result = CO_SYNC_RESULT_BAD_REQUEST; break;
    case 401: result = CO_SYNC_RESULT_UNAUTHORIZED; break;
    case 409: result = CO_SYNC_RESULT_CONFLICT; break;
    default: result = CO_SYNC_RESULT_ERROR; break;
    }
    co_metrics_sync_done(result, co_mono_us() - t0);
}
