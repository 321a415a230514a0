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
 * already applied for any of its keys is refused with 409, the problem's
 * applied_seq member naming that stored seq: an edge restarted under a
 * fixed edge_id renumbers its unapplied batch past it and resends it
 * (tg_sync_conflict), so it recovers at once rather than when the old
 * records expire. When the batch spans several calls, each call is atomic
 * but the batch is not: a 409 from a later call can follow earlier calls
 * that were applied.
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

#include <jansson.h>
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
#define SCRIPT_MISMATCH   3       /* the seq was applied with other counts */

/* One KeyCount and what the policy says about it. */
struct sync_item {
    const Tollgate__V1__KeyCount *kc;
    const struct co_quota *quota;   /* NULL: not in the policy */
    uint64_t admitted;              /* of every KeyCount of this key */
    uint64_t attempts;              /* admitted + denied + challenged */
    struct sync_item *same;         /* the item that carries this key's
                                     * counts to Redis (itself, mostly) */
    size_t slot;                    /* its index among the script's items */
    unsigned hslot;                 /* its Redis Cluster hash slot */
    long long *rh, *ri;             /* its call's reply head, its reply */
};

/* What every script call of one request shares (ARGV 1..6 and KEYS[1]). */
struct call_head {
    const char *replay_key;
    const char *edge_id;
    uint64_t seq;
    uint32_t sync_interval_ms;
    char nonce[33];
    uint64_t digest;                /* batch_digest(): the last ARGV */
};

/* FNV-1a over the batch the script sees (each known item's quota, key and
 * merged counts, in request order), cut to 53 bits so Lua holds it
 * exactly. sync.lua keeps it in each record: a resend of a seq with other
 * counts is told apart from a retry (409), not answered from the record. */
static uint64_t batch_digest(struct sync_item *const *items, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        const Tollgate__V1__KeyCount *k = items[i]->kc;
        uint64_t v[2] = {items[i]->admitted, items[i]->attempts};
        const char *parts[2] = {k->quota, k->key};

        for (size_t p = 0; p < 2; p++)
            for (const char *c = parts[p];; c++) {   /* the NUL too */
                h = (h ^ (uint8_t)*c) * 1099511628211ULL;
                if (*c == '\0')
                    break;
            }
        for (size_t p = 0; p < 2; p++)
            for (unsigned b = 0; b < 64; b += 8)
                h = (h ^ ((v[p] >> b) & 0xff)) * 1099511628211ULL;
    }
    return h & CO_SEQ_MAX;
}

/* Build KEYS and ARGV of one sync.lua call (layout in sync.lua's header)
 * for items[0..n), now_ms being the coordinator's clock, into c. The reply
 * will go to out (SYNC_REPLY_HEAD + SYNC_REPLY_ITEM * n integers). On
 * success c is ready for co_redis_eval_ints() until co_call_free(c) (also
 * owed on failure). Returns 0 or CO_ENOMEM / CO_EINVAL. */
static int build_script_call(const struct call_head *h, uint64_t now_ms,
                             struct sync_item *const *items, size_t n,
                             long long *out, struct co_script_call *c)
{
    size_t total = 1 + 2 * n + SYNC_HEAD_ARGS + SYNC_ITEM_ARGS * n + 1;
    char kc[CO_RKEY_COUNTERS_MAX], ke[CO_RKEY_COUNTERS_MAX];

    co_call_init(c, co_script(CO_SCRIPT_SYNC), total);
    co_call_key(c, h->replay_key, strlen(h->replay_key));
    for (size_t i = 0; i < n; i++) {
        const Tollgate__V1__KeyCount *k = items[i]->kc;
        int kl = co_rkey_counters(k->quota, strlen(k->quota), k->key,
                                  strlen(k->key), kc, ke, sizeof kc);

        if (kl < 0)
            return CO_EINVAL;   /* validated before: a bug if reached */
        co_call_key(c, kc, (size_t)kl);
        co_call_key(c, ke, (size_t)kl);
    }
    co_call_arg_u64(c, now_ms);
    co_call_arg_str(c, h->edge_id);
    co_call_arg_u64(c, h->seq);
    co_call_arg_u64(c, h->sync_interval_ms);
    co_call_arg_str(c, h->nonce);
    co_call_arg_u64(c, CO_AUTH_REPLAY_TTL_MS);
    co_call_arg_u64(c, n);
    for (size_t i = 0; i < n; i++) {
        const struct co_quota *q = items[i]->quota;
        uint64_t over = q->action == TOLLGATE__V1__ACTION__ACTION_DENY ? 2 : 1;

        /* The key's own limit (its override's, else the quota's): the
         * script decides, scales deny_after and leases against it. */
        co_call_arg_u64(c, co_quota_limit(q, items[i]->kc->key));
        co_call_arg_u64(c, (uint64_t)q->window_s * 1000u);
        co_call_arg_u64(c, over);
        co_call_arg_u64(c, q->deny_after_milli);
        co_call_arg_u64(c, items[i]->admitted);
        co_call_arg_u64(c, items[i]->attempts);
        co_call_arg_u64(c, q->burst);
    }
    co_call_arg_u64(c, h->digest);
    c->out = out;
    c->nout = SYNC_REPLY_HEAD + SYNC_REPLY_ITEM * n;
    return co_call_seal(c);
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

        if (co_pb_varint(p, len, &i, &tag) != CO_OK || tag >> 3 == 0)
            return CO_EINVAL;
        switch (tag & 7) {
        case 0:
            if (co_pb_varint(p, len, &i, &v) != CO_OK)
                return CO_EINVAL;
            break;
        case 1:
            if (len - i < 8)
                return CO_EINVAL;
            i += 8;
            break;
        case 2:
            if (co_pb_varint(p, len, &i, &v) != CO_OK || v > len - i)
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
    if (in->seq == 0 || in->seq > CO_SEQ_MAX) {
        snprintf(detail, len, "seq: must be 1..%llu (2^53 - 1)",
                 (unsigned long long)CO_SEQ_MAX);
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

/* Order known items by Redis Cluster hash slot, so one call per slot
 * can take a run of them (sync_plan). */
static int cmp_hslot(const void *x, const void *y)
{
    unsigned a = (*(struct sync_item *const *)x)->hslot;
    unsigned b = (*(struct sync_item *const *)y)->hslot;

    return a < b ? -1 : a > b;
}

/* How many of known[lo..n) the call starting at lo takes: at most
 * SYNC_CALL_ITEMS, and in cluster mode only items of one hash slot (a
 * script call's keys must share a slot there). */
static size_t call_run(struct sync_item *const *known, size_t lo, size_t n,
                       bool cluster)
{
    size_t k = lo;

    while (k < n && k - lo < SYNC_CALL_ITEMS &&
           (!cluster || known[k]->hslot == known[lo]->hslot))
        k++;
    return k - lo;
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
                           uint64_t now_ms, uint64_t dec[CO_STATS_OUTCOMES])
{
    for (size_t i = 0; i < n; i++) {
        const struct sync_item *it = &items[i];
        const struct co_quota *q = it->quota;
        const long long *h = it->same->rh;
        const long long *r = it->same->ri;

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
                         uint64_t now_ms, bool degraded)
{
    struct co_stats_sync s = {
        .edge_id = in->edge_id,
        .module_version = in->module_version,
        .sent_at_ms = in->sent_at_ms,
        .policy_version = in->policy_version,
        .refused_version = in->refused_policy_version,
        .refused_reason = (unsigned)in->refused_policy_reason,
        .degraded = degraded,
    };

    /* An edge clock far off ours (sent_at_ms = 1, or years ahead) would
     * show as a lag of decades: clamp it to CO_LAG_MAX_MS, and count it. */
    if (in->sent_at_ms != 0 &&
        (in->sent_at_ms + CO_LAG_MAX_MS < now_ms ||
         in->sent_at_ms > now_ms + CO_LAG_MAX_MS)) {
        s.sent_at_ms = in->sent_at_ms < now_ms ? now_ms - CO_LAG_MAX_MS
                                               : now_ms;
        atomic_fetch_add_explicit(&co_metrics.sent_at_clamped, 1,
                                  memory_order_relaxed);
    }

    if (!degraded)
        record_metrics(pol, items, n, now_ms, s.decisions);
    co_stats_sync_seen(&s, now_ms);
}

/* One request from plan to answer: what sync_plan() decided, what
 * sync_run() got back from Redis, what sync_answer() sends. */
struct sync_req {
    Tollgate__V1__SyncRequest *in;
    struct co_policy *pol;
    struct sync_item *items;        /* n, request order */
    struct sync_item **known;       /* n_known: in the policy, one per key */
    size_t n, n_known;
    struct call_head head;
    char replay_key[CO_REPLAY_KEY_MAX];
    struct co_script_call *calls;   /* n_calls */
    size_t n_calls;
    long long *reply;               /* every call's: head, then its items */
    uint64_t now_ms;                /* the clock the script ran with */
    bool degraded;
    const char *redis;              /* "ok", "down", "error", "skipped" */
    char err[256];                  /* why degraded */
};

static void sync_req_free(struct sync_req *r)
{
    for (size_t c = 0; r->calls != NULL && c < r->n_calls; c++)
        co_call_free(&r->calls[c]);
    free(r->calls);
    free(r->reply);
    free(r->known);
    free(r->items);
    co_policy_release(r->pol);
    if (r->in != NULL)
        tollgate__v1__sync_request__free_unpacked(r->in, NULL);
}

static void out_of_memory(struct co_response *resp, size_t n)
{
    CO_ERROR("msg=sync_out_of_memory keys=%zu", n);
    co_response_problem(resp, 500, "out of memory");
}

/* Plan: unpack and check the body (the edge's signature was checked
 * before), look the quotas up, fold duplicate keys and build the script
 * calls. Returns 0, or -1 with resp holding the answer (400, 401, 500,
 * 503). */
static int sync_plan(const struct co_request *req, const struct co_auth *auth,
                     struct co_response *resp, struct sync_req *r)
{
    size_t wire_counts, n;
    char detail[300];
    long long *at;
    bool cluster;

    if (wire_count_field(req->body, req->body_len, SYNC_COUNTS_FIELD,
                         &wire_counts) != CO_OK) {
        reject(resp, "malformed protobuf: not a SyncRequest");
        return -1;
    }
    if (wire_counts > CO_SYNC_COUNTS_MAX) {
        snprintf(detail, sizeof detail, "counts: at most %d per request",
                 CO_SYNC_COUNTS_MAX);
        reject(resp, detail);
        return -1;
    }
    if (co_input_protobuf(&tollgate__v1__sync_request__descriptor, req->body,
                          req->body_len, detail, sizeof detail) != CO_OK) {
        reject(resp, detail);
        return -1;
    }
    r->in = tollgate__v1__sync_request__unpack(NULL, req->body_len,
                                               req->body);
    if (r->in == NULL) {
        reject(resp, "malformed protobuf: not a SyncRequest");
        return -1;
    }
    if (validate_request(r->in, detail, sizeof detail) != CO_OK) {
        reject(resp, detail);
        return -1;
    }
    if (strcmp(r->in->edge_id, auth->edge_id) != 0) {
        co_auth_reject(resp, CO_AUTH_EDGE_MISMATCH, auth->edge_id);
        return -1;
    }
    r->pol = co_policy_current();
    if (r->pol == NULL) {
        CO_ERROR("msg=sync_no_policy");
        co_response_problem(resp, 503, "no policy loaded");
        return -1;
    }

    n = r->n = r->in->n_counts;
    r->items = calloc(n ? n : 1, sizeof *r->items);
    r->known = calloc(n ? n : 1, sizeof *r->known);
    if (r->items == NULL || r->known == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const Tollgate__V1__KeyCount *kc = r->in->counts[i];

        r->items[i].kc = kc;
        r->items[i].quota = co_policy_find(r->pol, kc->quota);
        r->items[i].admitted = kc->admitted;
        r->items[i].attempts = kc->admitted + kc->denied + kc->challenged;
    }
    merge_duplicates(r->items, n, r->known);
    for (size_t i = 0; i < n; i++)
        if (r->items[i].quota != NULL && r->items[i].same == &r->items[i]) {
            r->items[i].slot = r->n_known;
            r->known[r->n_known++] = &r->items[i];
        }

    /* Even a batch with nothing to count goes to Redis: the replay check
     * lives there. */
    if (co_rkey_replay(auth->edge_id, auth->sig_hex, r->replay_key,
                       sizeof r->replay_key) < 0 ||
        make_nonce(r->head.nonce) != CO_OK) {
        CO_ERROR("msg=sync_build_failed detail=\"replay key or nonce\"");
        co_response_problem(resp, 500, "internal error");
        return -1;
    }
    r->head.replay_key = r->replay_key;
    r->head.edge_id = r->in->edge_id;
    r->head.seq = r->in->seq;
    r->head.sync_interval_ms = r->pol->sync_interval_ms;
    r->head.digest = batch_digest(r->known, r->n_known);
    /* In a Redis Cluster a call's keys must share a hash slot: items are
     * grouped by slot, one call per run of a slot, each call with its own
     * replay key in that slot (sync.lua checks KEYS[1]; a replay finds
     * the first request's nonce in every call). */
    cluster = co_redis_is_cluster();
    if (cluster) {
        for (size_t i = 0; i < r->n_known; i++) {
            const Tollgate__V1__KeyCount *kc = r->known[i]->kc;
            char tag[CO_KEY_TAG_MAX];
            int tl = co_key_tag(kc->quota, strlen(kc->quota), kc->key,
                                strlen(kc->key), tag, sizeof tag);

            r->known[i]->hslot = tl < 0 ? 0 : co_cluster_keyslot(
                                                  tag, (size_t)tl);
        }
        qsort(r->known, r->n_known, sizeof *r->known, cmp_hslot);
    }
    r->n_calls = 0;
    for (size_t lo = 0; lo < r->n_known; r->n_calls++)
        lo += call_run(r->known, lo, r->n_known, cluster);
    if (r->n_calls == 0)
        r->n_calls = 1;   /* the replay check alone */
    r->calls = calloc(r->n_calls, sizeof *r->calls);
    r->reply = calloc(SYNC_REPLY_HEAD * r->n_calls +
                      SYNC_REPLY_ITEM * r->n_known, sizeof *r->reply);
    if (r->calls == NULL || r->reply == NULL)
        goto oom;
    r->now_ms = co_wall_ms();
    at = r->reply;
    for (size_t c = 0, lo = 0; c < r->n_calls; c++) {
        size_t cnt = call_run(r->known, lo, r->n_known, cluster);
        struct call_head head = r->head;
        char replay_key[CO_REPLAY_AT_KEY_MAX];
        long long *rh = at;
        int rc = CO_OK;

        at += SYNC_REPLY_HEAD;
        for (size_t k = lo; k < lo + cnt; k++) {
            r->known[k]->slot = k;
            r->known[k]->rh = rh;
            r->known[k]->ri = at;
            at += SYNC_REPLY_ITEM;
        }
        if (cluster && cnt > 0) {
            const Tollgate__V1__KeyCount *kc = r->known[lo]->kc;

            rc = co_rkey_replay_at(kc->quota, kc->key, auth->edge_id,
                                   auth->sig_hex, replay_key,
                                   sizeof replay_key);
            head.replay_key = replay_key;
        }
        if (rc >= 0)
            rc = build_script_call(&head, r->now_ms, r->known + lo, cnt, rh,
                                   &r->calls[c]);
        lo += cnt;
        if (rc == CO_EINVAL || rc == CO_ETOOBIG) {
            CO_ERROR("msg=sync_build_failed detail=\"key over its cap "
                     "after validation\"");
            co_response_problem(resp, 500, "internal error");
            return -1;
        }
        if (rc != CO_OK)
            goto oom;
    }
    return 0;
oom:
    out_of_memory(resp, n);
    return -1;
}

/* Run: the script calls in one pipelined round trip, and their answers
 * checked. Redis failing or answering nonsense is no error here: r is
 * marked degraded and the answer goes on. Returns 0, or -1 with resp
 * holding the answer (401 replayed, 409 conflict, 500 out of memory). */
static int sync_run(struct sync_req *r, const struct co_auth *auth,
                    struct co_response *resp)
{
    char detail[300], v[96];
    int rc = co_redis_eval_ints(r->calls, r->n_calls, r->err,
                                sizeof r->err);

    if (rc == CO_ENOMEM) {
        out_of_memory(resp, r->n);
        return -1;
    }
    for (size_t c = 0; c < r->n_calls && rc == CO_OK; c++) {
        const long long *h = r->calls[c].out;

        if (h[0] == SCRIPT_REPLAYED) {
            co_auth_reject(resp, CO_AUTH_REPLAYED, auth->edge_id);
            return -1;
        }
        if (h[0] == SCRIPT_CONFLICT) {
            CO_INFO("msg=sync_conflict edge=%s seq=%llu applied_seq=%lld",
                    co_log_value(v, sizeof v, r->in->edge_id,
                                 strlen(r->in->edge_id)),
                    (unsigned long long)r->in->seq, h[1]);
            snprintf(detail, sizeof detail, "seq %llu is older than seq "
                     "%lld already applied for edge %s",
                     (unsigned long long)r->in->seq, h[1], r->in->edge_id);
            co_response_problem_with(resp, 409, detail, json_pack(
                "{s:I}", "applied_seq", (json_int_t)h[1]));
            record_stats(r->in, r->pol, r->items, 0, r->now_ms,
                         false);
            return -1;
        }
        if (h[0] == SCRIPT_MISMATCH) {
            CO_INFO("msg=sync_conflict edge=%s seq=%llu reason=other_counts",
                    co_log_value(v, sizeof v, r->in->edge_id,
                                 strlen(r->in->edge_id)),
                    (unsigned long long)r->in->seq);
            snprintf(detail, sizeof detail, "seq %llu was already applied "
                     "for edge %s with other counts: a resend must repeat "
                     "its batch exactly, new counts need a new seq",
                     (unsigned long long)r->in->seq, r->in->edge_id);
            /* applied_seq: an edge restarted under the same id renumbers
             * its batch past it, as for an older seq. */
            co_response_problem_with(resp, 409, detail, json_pack(
                "{s:I}", "applied_seq", (json_int_t)r->in->seq));
            record_stats(r->in, r->pol, r->items, 0, r->now_ms, false);
            return -1;
        }
        if (h[0] != SCRIPT_APPLIED) {
            CO_ERROR("msg=sync_bad_script_reply call=%zu status=%lld", c,
                     h[0]);
            snprintf(r->err, sizeof r->err, "script reply out of range");
            rc = CO_EREPLY;
        }
        for (size_t i = 0; rc == CO_OK && i < (r->calls[c].nout -
                                                SYNC_REPLY_HEAD) /
                                               SYNC_REPLY_ITEM; i++) {
            const long long *it = h + SYNC_REPLY_HEAD + SYNC_REPLY_ITEM * i;

            if (!reply_ok(it)) {
                CO_ERROR("msg=sync_bad_script_reply item=%zu action=%lld "
                         "lease=%lld", i, it[0], it[1]);
                snprintf(r->err, sizeof r->err, "script reply out of range");
                rc = CO_EREPLY;
            }
        }
    }
    r->degraded = rc != CO_OK;
    r->redis = rc == CO_OK ? "ok" : rc == CO_EREDIS ? "down" : "error";
    return 0;
}

/* Answer: one KeyState per KeyCount in request order (a duplicate gets
 * its first's), acked_seq, the policy when the edge's differs. Returns 0,
 * or -1 with resp holding a 500. */
static int sync_answer(struct sync_req *r, struct co_response *resp)
{
    Tollgate__V1__SyncResponse out = TOLLGATE__V1__SYNC_RESPONSE__INIT;
    Tollgate__V1__KeyState *states, **state_ptrs;
    uint64_t now_answer_ms = co_wall_ms();
    bool token_failed = false;
    uint8_t *packed = NULL;
    size_t plen;
    char v[96];
    int rc = -1;

    states = calloc(r->n ? r->n : 1, sizeof *states);
    state_ptrs = calloc(r->n ? r->n : 1, sizeof *state_ptrs);
    if (states == NULL || state_ptrs == NULL) {
        out_of_memory(resp, r->n);
        goto cleanup;
    }
    for (size_t i = 0; i < r->n; i++) {
        const long long *it = NULL;

        if (r->items[i].quota != NULL && !r->degraded)
            it = r->items[i].same->ri;
        fill_state(&states[i], &r->items[i], it, now_answer_ms,
                   r->in->edge_id, &token_failed);
        state_ptrs[i] = &states[i];
    }
    if (token_failed)
        CO_ERROR("msg=challenge_issue_failed edge=%s",
                 co_log_value(v, sizeof v, r->in->edge_id,
                              strlen(r->in->edge_id)));

    out.acked_seq = r->degraded ? 0 : r->in->seq;
    out.next_sync_ms = r->pol->sync_interval_ms;
    if (r->degraded && out.next_sync_ms > DEGRADED_SYNC_MS)
        out.next_sync_ms = DEGRADED_SYNC_MS;
    out.n_states = r->n;
    out.states = state_ptrs;
    out.degraded = r->degraded;
    out.policy_version = r->pol->version;
    if (r->in->policy_version != r->pol->version)
        out.policy = r->pol->pb;
    out.server_time_ms = co_wall_ms();

    plen = tollgate__v1__sync_response__get_packed_size(&out);
    packed = malloc(plen ? plen : 1);
    if (packed == NULL) {
        out_of_memory(resp, r->n);
        goto cleanup;
    }
    if (tollgate__v1__sync_response__pack(&out, packed) != plen) {
        CO_ERROR("msg=sync_pack_failed");
        co_response_problem(resp, 500, "cannot encode the response");
        goto cleanup;
    }
    co_response_take(resp, 200, "application/x-protobuf", packed, plen);
    packed = NULL;
    rc = 0;
cleanup:
    for (size_t i = 0; states != NULL && i < r->n; i++)
        if (states[i].challenge_token != NULL &&
            states[i].challenge_token != protobuf_c_empty_string)
            free(states[i].challenge_token);
    free(packed);
    free(state_ptrs);
    free(states);
    return rc;
}

/* The handler: auth, plan, run, answer, then the records and the log
 * line. Contract in the file comment; the status is 200 for every
 * well-formed, authentic request (degraded or not), 401 for a request not
 * signed by a known edge or replayed, 400 for a malformed or invalid one,
 * 409 for a seq older than one applied, 500 only when memory runs out. */
static void sync_handle(const struct co_request *req,
                        struct co_response *resp, uint64_t t0,
                        bool *was_degraded)
{
    struct sync_req r = {.redis = "skipped"};
    struct co_auth auth;
    enum co_auth_reason why;
    char v1[96], v2[300];

    why = co_auth_check(req, &auth);
    if (why != CO_AUTH_OK) {
        co_auth_reject(resp, why, auth.edge_id);
        return;
    }
    if (sync_plan(req, &auth, resp, &r) != 0 ||
        sync_run(&r, &auth, resp) != 0)
        goto cleanup;
    *was_degraded = r.degraded;
    if (sync_answer(&r, resp) != 0)
        goto cleanup;
    record_stats(r.in, r.pol, r.items, r.n, r.now_ms, r.degraded);

    if (r.degraded)
        CO_WARN("msg=sync edge=%s seq=%llu keys=%zu dur_ms=%.2f redis=%s "
                "detail=%s",
                co_log_value(v1, sizeof v1, r.in->edge_id,
                             strlen(r.in->edge_id)),
                (unsigned long long)r.in->seq, r.n,
                (double)(co_mono_us() - t0) / 1000.0, r.redis,
                co_log_value(v2, sizeof v2, r.err, strlen(r.err)));
    else
        CO_INFO("msg=sync edge=%s seq=%llu keys=%zu dur_ms=%.2f redis=%s",
                co_log_value(v1, sizeof v1, r.in->edge_id,
                             strlen(r.in->edge_id)),
                (unsigned long long)r.in->seq, r.n,
                (double)(co_mono_us() - t0) / 1000.0, r.redis);
cleanup:
    sync_req_free(&r);
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
