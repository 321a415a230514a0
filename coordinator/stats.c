/* stats.c — GET /v1/stats: the figures of the ops dashboard
 * (coordinator/dashboard/), merged across coordinators through Redis.
 *
 * Bearer token of any role (co_admin_authorize: none or unknown is 401
 * with WWW-Authenticate). 200 application/json, Cache-Control: no-store:
 *   now_ms            co_wall_ms() at render
 *   coordinator       {version}
 *   viewer            {name, role: "read" | "admin"} of the token
 *   redis.up          false when the read below failed or the last Redis
 *                     exchange of any thread here failed
 *   merged            true: every coordinator's figures, through Redis;
 *                     false: Redis could not be read in time, this
 *                     coordinator's own figures only
 *   policy            {version, sync_interval_ms} enforced here
 *   edges_stale_after_ms  max(3 x sync_interval_ms, 5000)
 *   edges[]           synced (with any coordinator) in the last 10 min,
 *                     newest first, at most 500: id, last_seen_ms, age_ms,
 *                     lag_ms (server time - sent_at_ms at the last sync; 0
 *                     when unknown or ahead), module_version (visible
 *                     ASCII, at most 32 bytes), policy_version (what the
 *                     edge says it enforces), degraded (its last answer
 *                     was), stale (age_ms > edges_stale_after_ms)
 *   top_keys[]        per quota of the current policy, in its order:
 *                     {quota, window_s, shadow, keys: at most 10 of {key,
 *                     count, limit}, count descending, count 0 left out};
 *                     count is the key's sliding-window estimate of
 *                     admitted requests (global: every edge, every
 *                     coordinator): the largest sync.lua answered for it
 *                     in the quota's current window; for a key not
 *                     synced yet in this window, the largest of the
 *                     previous window decayed as sync.lua decays the
 *                     previous window (co_window_estimate: x time left /
 *                     window, rounded up), so a key heavy when the window
 *                     turns stays listed, its count shrinking to 0 at the
 *                     window's end; limit is the key's own (an
 *                     override's, else the quota's)
 *   decisions         {step_s: 1, from_s, points: 900, allowed, denied,
 *                     challenged, shadow}: per second, oldest first, the
 *                     last point the second under way; applied decisions
 *                     (not degraded, not retried) as tollgate_decisions_total
 *                     counts them, by the second the coordinator applied
 *                     the sync
 *   challenges[]      the 50 most recently active (quota, key) pairs, newest
 *                     first: {quota, key, first_ms, last_ms, issued, solved,
 *                     last_edge}; issued counts challenge tokens signed into
 *                     sync answers (a retry's fresh token too), solved the
 *                     successful POST /v1/challenge/verify; first_ms/last_ms
 *                     the first/last of either. verify only knows the key's
 *                     hash: a solve that no issuing coordinator's record has
 *                     named yet shows key "" and last_edge "".
 *
 * Local state, fed from the sync and verify handlers:
 *   - a ring of POINTS one-second buckets (the unix second, four outcome
 *     counters, and how much of each is already in Redis); a bucket is
 *     reused when its second comes round again 900 s later;
 *   - an edge table of EDGES_MAX hashed slots (a slot silent for 10 min
 *     is reused): the edge's last sync, with a dirty mark until flushed;
 *   - per quota (by its index in the policy), TOP_LOCAL candidates of
 *     the quota's current and previous windows (the previous window's
 *     carry the list over the turn until they decay): an entry of an
 *     older window is free, else the one whose estimate now is lowest is
 *     replaced, and an atomic threshold (the K-th estimate of the current
 *     window, once K entries hold one) lets keys below it pass without the
 *     mutex;
 *   - the CH_LOCAL most recently active challenged (quota, key hash)
 *     pairs, with the issues and solves not yet flushed.
 * A sync takes the mutex once for the ring and its edge; only top-key
 * candidates above their quota's threshold and challenge issues take it
 * again.
 *
 * Merging: a thread flushes what Redis lacks once a second in ONE
 * stats.lua call (keys and layout in that file) and marks it flushed only
 * when the call succeeded, so counts made during a Redis outage flush once
 * it returns (the decisions of the last 15 minutes; at most CH_LOCAL
 * challenged pairs and EDGES_MAX edges are remembered meanwhile). A read
 * is ONE stats.lua call plus this coordinator's unflushed deltas. Flush
 * and read exclude each other (flush_mu), so a delta is never counted
 * both in Redis and locally; a read waits for a flush in progress at most
 * until its own Redis deadline, and answers from local state alone
 * ("merged": false) when it could not read Redis in time.
 *
 * Clocks: seconds and windows are the coordinator's wall clock (the same
 * NTP assumption as sync.lua).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis.h>
#include <jansson.h>

#include "tollgated.h"

#define POINTS          900      /* 1 s buckets: 15 minutes */
#define EDGES_MAX       4096     /* edges tracked here; a power of two */
#define EDGE_PROBES     64
#define EDGES_SHOWN     500
#define EDGE_FORGET_MS  600000u  /* silent this long: gone */
#define EDGE_STALE_MIN_MS 5000u
#define VERSION_MAX     32       /* bytes of module_version kept */
#define CH_LOCAL        64       /* challenged pairs tracked here */
#define CH_SHOWN        50
#define CH_KEPT         100      /* in Redis (stats.lua trims to it) */
#define FLUSH_MS        1000u
#define ROW_MAX         128      /* an edge's row in Redis */
#define CH_ID_MAX       (32 + 1 + CO_QUOTA_NAME_MAX + 1)
#define TOP_LOCAL       (2 * CO_STATS_TOP_K)  /* per quota: two windows */

static const char *const KEYS[] = {
    "tg:{stats}:edges", "tg:{stats}:edgez", "tg:{stats}:ch",
    "tg:{stats}:chz",
};
#define NKEYS 4

static const char *const outcome_names[CO_STATS_OUTCOMES] = {
    "allowed", "denied", "challenged", "shadow",
};

struct bucket {
    uint64_t sec;                         /* unix second */
    uint64_t n[CO_STATS_OUTCOMES];
    uint64_t sent[CO_STATS_OUTCOMES];     /* of n, already in Redis */
};

struct edge_row {
    char id[CO_EDGE_ID_MAX + 1];          /* "": never used */
    char module_version[VERSION_MAX + 1];
    uint64_t last_ms, lag_ms, policy_version;
    bool degraded;
    bool dirty;                           /* changed since flushed */
};

struct top_entry {
    char key[CO_KEY_MAX + 1];
    uint64_t idx;                         /* window index of est */
    uint64_t est;                         /* largest estimate in idx */
    uint64_t sent;                        /* est already in Redis */
    bool used;
};

struct top_slot {
    /* the lock-free filter: tag = hash of (name, window_ms); keys of that
     * quota in window thr_idx with an estimate <= thr cannot enter */
    atomic_ullong tag, thr_idx, thr;
    char name[CO_QUOTA_NAME_MAX + 1];     /* under mu, as below */
    uint64_t window_ms;
    struct top_entry e[TOP_LOCAL];
};

/* A top_slot without its atomics, for snapshots. */
struct top_copy {
    size_t slot;
    char name[CO_QUOTA_NAME_MAX + 1];
    uint64_t window_ms;
    struct top_entry e[TOP_LOCAL];
};

struct ch_entry {
    char quota[CO_QUOTA_NAME_MAX + 1];    /* "": free */
    uint8_t kh[16];
    char key[CO_KEY_MAX + 1];             /* "" until an issue names it */
    char edge[CO_EDGE_ID_MAX + 1];        /* the last issue's */
    uint64_t first_ms, last_ms, issued, solved;
    uint64_t sent_issued, sent_solved, sent_last_ms;   /* in Redis */
};

static struct {
    pthread_mutex_t mu;          /* the tables below */
    pthread_mutex_t flush_mu;    /* one Redis exchange (flush or read) */
    struct bucket ring[POINTS];
    struct edge_row edges[EDGES_MAX];
    struct top_slot tops[CO_QUOTAS_MAX];
    size_t tops_hi;              /* slots [0, tops_hi) have been used */
    struct ch_entry ch[CH_LOCAL];
    unsigned timeout_ms;
    struct co_ticker flusher;    /* flush_logged() every FLUSH_MS */
} st = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .flush_mu = PTHREAD_MUTEX_INITIALIZER,
    .timeout_ms = 1000,
};

/* Everything local, copied under mu, so Redis is talked to without it. */
struct snapshot {
    struct bucket ring[POINTS];
    struct edge_row *edges;
    size_t *edge_slot;
    size_t n_edges;
    struct top_copy *tops;
    size_t n_tops;
    struct ch_entry ch[CH_LOCAL];
};

/* ------------------------------------------------------------ recording */

/* Visible ASCII of s (others become '?'), cut to outlen - 1 bytes. */
static void copy_visible(char *out, size_t outlen, const char *s)
{
    size_t i = 0;

    for (; s[i] != '\0' && i + 1 < outlen; i++)
        out[i] = (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f
                 ? s[i] : '?';
    out[i] = '\0';
}

/* The slot of edge id: its own, else a never used one or one silent for
 * EDGE_FORGET_MS within its EDGE_PROBES slots (cleared for it), else NULL
 * (more than EDGES_MAX edges at once: not tracked). Under mu. */
static struct edge_row *edge_slot(const char *id, uint64_t now_ms)
{
    size_t h = (size_t)co_name_hash(id);
    struct edge_row *reuse = NULL;

    for (size_t i = 0; i < EDGE_PROBES; i++) {
        struct edge_row *e = &st.edges[(h + i) & (EDGES_MAX - 1)];

        if (strcmp(e->id, id) == 0)
            return e;
        if (reuse == NULL && (e->id[0] == '\0' ||
                              e->last_ms + EDGE_FORGET_MS < now_ms))
            reuse = e;
        if (e->id[0] == '\0')      /* slots are never emptied: id is not */
            break;                 /* further on */
    }
    if (reuse != NULL) {
        memset(reuse, 0, sizeof *reuse);
        snprintf(reuse->id, sizeof reuse->id, "%s", id);
    }
    return reuse;
}

void co_stats_sync_seen(const struct co_stats_sync *s, uint64_t now_ms)
{
    uint64_t sec = now_ms / 1000u, any = 0;
    struct bucket *b = &st.ring[sec % POINTS];
    struct edge_row *e;

    for (size_t k = 0; k < CO_STATS_OUTCOMES; k++)
        any |= s->decisions[k];
    pthread_mutex_lock(&st.mu);
    if (any != 0) {
        if (b->sec != sec)
            memset(b, 0, sizeof *b);
        b->sec = sec;
        for (size_t k = 0; k < CO_STATS_OUTCOMES; k++)
            b->n[k] += s->decisions[k];
    }
    e = edge_slot(s->edge_id, now_ms);
    if (e != NULL) {
        e->last_ms = now_ms;
        e->lag_ms = s->sent_at_ms != 0 && now_ms > s->sent_at_ms
                    ? now_ms - s->sent_at_ms : 0;
        e->policy_version = s->policy_version;
        e->degraded = s->degraded;
        copy_visible(e->module_version, sizeof e->module_version,
                     s->module_version != NULL ? s->module_version : "");
        e->dirty = true;
    }
    pthread_mutex_unlock(&st.mu);
}

void co_stats_edges_active(uint64_t now_ms, uint64_t ttl_ms,
                           uint64_t *active, uint64_t *max_lag_ms)
{
    *active = 0;
    *max_lag_ms = 0;
    pthread_mutex_lock(&st.mu);
    for (size_t i = 0; i < EDGES_MAX; i++) {
        const struct edge_row *e = &st.edges[i];

        if (e->id[0] == '\0' || e->last_ms + ttl_ms < now_ms)
            continue;
        (*active)++;
        if (e->lag_ms > *max_lag_ms)
            *max_lag_ms = e->lag_ms;
    }
    pthread_mutex_unlock(&st.mu);
}

static uint64_t top_tag(const char *name, uint64_t window_ms)
{
    return co_name_hash(name) ^ (window_ms * 0x9e3779b97f4a7c15ULL);
}

/* What e says the key's estimate is at now_ms: its own window's figure,
 * or the previous window's decayed (co_window_estimate with e's figure as
 * that window's count). */
static uint64_t top_now(const struct top_entry *e, uint64_t window_ms,
                        uint64_t now_ms)
{
    return e->used ? co_window_estimate(e->idx, e->est, 0, window_ms, now_ms)
                   : 0;
}

/* The entry key should take in slot s for window idx (now_ms's): its own,
 * else a free one or one of a window before the previous, else the one
 * whose estimate now is lowest (a previous window's on a tie) if est
 * beats it; NULL when key does not make the table. Under mu. */
static struct top_entry *top_place(struct top_slot *s, const char *key,
                                   uint64_t est, uint64_t idx, uint64_t now_ms)
{
    struct top_entry *low = NULL;
    uint64_t low_now = 0;

    for (size_t k = 0; k < TOP_LOCAL; k++) {
        struct top_entry *e = &s->e[k];

        if (e->used && e->idx == idx && strcmp(e->key, key) == 0)
            return e;
    }
    for (size_t k = 0; k < TOP_LOCAL; k++) {
        struct top_entry *e = &s->e[k];
        uint64_t v = top_now(e, s->window_ms, now_ms);

        if (!e->used || e->idx + 1 < idx) {
            low = e;
            low_now = 0;
            break;
        }
        if (low == NULL || v < low_now ||
            (v == low_now && e->idx < low->idx)) {
            low = e;
            low_now = v;
        }
    }
    if (low->used && low->idx + 1 >= idx && low_now >= est)
        return NULL;
    memset(low, 0, sizeof *low);
    snprintf(low->key, sizeof low->key, "%s", key);
    low->idx = idx;
    low->used = true;
    return low;
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? 1 : x > y ? -1 : 0;
}

/* thr: the K-th largest estimate of window idx once K entries hold one,
 * else 0 (everything may enter): a key at or below it cannot make the
 * K shown, which the K entries above it outrank. Written under mu; thr
 * before thr_idx, so a reader seeing the new window never pairs it with
 * the old threshold. */
static void top_threshold(struct top_slot *s, uint64_t idx)
{
    uint64_t cur[TOP_LOCAL], thr = 0;
    size_t n = 0;

    for (size_t k = 0; k < TOP_LOCAL; k++)
        if (s->e[k].used && s->e[k].idx == idx)
            cur[n++] = s->e[k].est;
    if (n >= CO_STATS_TOP_K) {
        qsort(cur, n, sizeof *cur, cmp_u64_desc);
        thr = cur[CO_STATS_TOP_K - 1];
    }
    atomic_store_explicit(&s->thr, thr, memory_order_relaxed);
    atomic_store_explicit(&s->thr_idx, idx, memory_order_release);
}

void co_stats_top_key(const struct co_policy *pol, const struct co_quota *q,
                      const char *key, uint64_t est, uint64_t now_ms)
{
    size_t i = (size_t)(q - pol->quotas);
    uint64_t wms = (uint64_t)q->window_s * 1000u, idx, tag;
    struct top_slot *s;
    struct top_entry *e;

    if (i >= CO_QUOTAS_MAX || wms == 0 || est == 0)
        return;
    s = &st.tops[i];
    idx = now_ms / wms;
    tag = top_tag(q->name, wms);
    if (atomic_load_explicit(&s->tag, memory_order_relaxed) == tag &&
        atomic_load_explicit(&s->thr_idx, memory_order_acquire) == idx &&
        est <= atomic_load_explicit(&s->thr, memory_order_relaxed))
        return;
    pthread_mutex_lock(&st.mu);
    if (s->window_ms != wms || strcmp(s->name, q->name) != 0) {
        /* a new policy put another quota (or window) at this index */
        memset(s->e, 0, sizeof s->e);
        snprintf(s->name, sizeof s->name, "%s", q->name);
        s->window_ms = wms;
        atomic_store_explicit(&s->tag, tag, memory_order_relaxed);
        if (i >= st.tops_hi)
            st.tops_hi = i + 1;
    }
    e = top_place(s, key, est, idx, now_ms);
    if (e != NULL && est > e->est)
        e->est = est;
    top_threshold(s, idx);
    pthread_mutex_unlock(&st.mu);
}

/* The entry of (quota, kh): its own, else a free one, else the least
 * recently active one (its unflushed counts are lost: more than CH_LOCAL
 * pairs challenged between two flushes). Under mu. */
static struct ch_entry *ch_slot(const char *quota, const uint8_t kh[16],
                                uint64_t now_ms)
{
    struct ch_entry *old = &st.ch[0];

    for (size_t i = 0; i < CH_LOCAL; i++) {
        struct ch_entry *c = &st.ch[i];

        if (strcmp(c->quota, quota) == 0 && memcmp(c->kh, kh, 16) == 0)
            return c;
        if (old->quota[0] != '\0' &&
            (c->quota[0] == '\0' || c->last_ms < old->last_ms))
            old = c;
    }
    memset(old, 0, sizeof *old);
    snprintf(old->quota, sizeof old->quota, "%s", quota);
    memcpy(old->kh, kh, 16);
    old->first_ms = now_ms;
    return old;
}

void co_stats_challenge_issued(const char *quota, const char *key,
                               size_t klen, const char *edge_id,
                               uint64_t now_ms)
{
    uint8_t kh[16];
    struct ch_entry *c;

    if (klen > CO_KEY_MAX)
        klen = CO_KEY_MAX;
    co_challenge_key_hash(quota, key, klen, kh);
    pthread_mutex_lock(&st.mu);
    c = ch_slot(quota, kh, now_ms);
    memcpy(c->key, key, klen);
    c->key[klen] = '\0';
    snprintf(c->edge, sizeof c->edge, "%s", edge_id);
    c->issued++;
    if (now_ms > c->last_ms)
        c->last_ms = now_ms;
    pthread_mutex_unlock(&st.mu);
}

/* A solve of a pair this coordinator never issued for is recorded with no
 * key and no edge: the issuing coordinator's record names them once both
 * are merged in Redis (the id is the key hash). */
void co_stats_challenge_solved(const char *quota, const uint8_t kh[16],
                               uint64_t now_ms)
{
    struct ch_entry *c;

    pthread_mutex_lock(&st.mu);
    c = ch_slot(quota, kh, now_ms);
    c->solved++;
    if (now_ms > c->last_ms)
        c->last_ms = now_ms;
    pthread_mutex_unlock(&st.mu);
}

void co_stats_reset(void)
{
    pthread_mutex_lock(&st.flush_mu);
    pthread_mutex_lock(&st.mu);
    memset(st.ring, 0, sizeof st.ring);
    memset(st.edges, 0, sizeof st.edges);
    for (size_t i = 0; i < CO_QUOTAS_MAX; i++) {
        atomic_store(&st.tops[i].tag, 0);
        atomic_store(&st.tops[i].thr_idx, 0);
        atomic_store(&st.tops[i].thr, 0);
        st.tops[i].name[0] = '\0';
        st.tops[i].window_ms = 0;
        memset(st.tops[i].e, 0, sizeof st.tops[i].e);
    }
    st.tops_hi = 0;
    memset(st.ch, 0, sizeof st.ch);
    pthread_mutex_unlock(&st.mu);
    pthread_mutex_unlock(&st.flush_mu);
}

/* ------------------------------------------------------------ snapshots */

static void snapshot_free(struct snapshot *sn)
{
    free(sn->edges);
    free(sn->edge_slot);
    free(sn->tops);
    free(sn);
}

/* A copy of the local tables (edges silent for EDGE_FORGET_MS left out),
 * or NULL when out of memory; snapshot_free() it. */
static struct snapshot *snapshot_take(uint64_t now_ms)
{
    struct snapshot *sn = calloc(1, sizeof *sn);
    size_t hi;

    if (sn == NULL)
        return NULL;
    pthread_mutex_lock(&st.mu);
    hi = st.tops_hi;
    pthread_mutex_unlock(&st.mu);
    sn->edges = malloc(EDGES_MAX * sizeof *sn->edges);
    sn->edge_slot = malloc(EDGES_MAX * sizeof *sn->edge_slot);
    sn->tops = malloc((hi ? hi : 1) * sizeof *sn->tops);
    if (sn->edges == NULL || sn->edge_slot == NULL || sn->tops == NULL) {
        snapshot_free(sn);
        return NULL;
    }
    pthread_mutex_lock(&st.mu);
    memcpy(sn->ring, st.ring, sizeof sn->ring);
    for (size_t i = 0; i < EDGES_MAX; i++) {
        const struct edge_row *e = &st.edges[i];

        if (e->id[0] == '\0' || e->last_ms + EDGE_FORGET_MS < now_ms)
            continue;
        sn->edge_slot[sn->n_edges] = i;
        sn->edges[sn->n_edges++] = *e;
    }
    for (size_t i = 0; i < hi && i < st.tops_hi; i++) {
        struct top_copy *t = &sn->tops[sn->n_tops];

        if (st.tops[i].name[0] == '\0')
            continue;
        t->slot = i;
        memcpy(t->name, st.tops[i].name, sizeof t->name);
        t->window_ms = st.tops[i].window_ms;
        memcpy(t->e, st.tops[i].e, sizeof t->e);
        sn->n_tops++;
    }
    memcpy(sn->ch, st.ch, sizeof sn->ch);
    pthread_mutex_unlock(&st.mu);
    return sn;
}

/* ------------------------------------------------------------ arguments
 * KEYS and ARGV of one stats.lua call: strings borrowed from the caller
 * (they must outlive the call), numbers formatted into the list's own
 * slots. Sized once, so borrowed pointers into nums never move. */
struct args {
    const char **v;
    size_t *len;
    char (*nums)[24];
    size_t n, cap;
};

static int args_init(struct args *a, size_t cap)
{
    a->v = malloc(cap * sizeof *a->v);
    a->len = malloc(cap * sizeof *a->len);
    a->nums = malloc(cap * sizeof *a->nums);
    a->n = 0;
    a->cap = cap;
    return a->v != NULL && a->len != NULL && a->nums != NULL ? CO_OK
                                                             : CO_ENOMEM;
}

static void args_free(struct args *a)
{
    free(a->v);
    free(a->len);
    free(a->nums);
}

static void arg_mem(struct args *a, const char *s, size_t len)
{
    if (a->n >= a->cap)     /* the caller sized it: a bug if reached */
        abort();
    a->v[a->n] = s;
    a->len[a->n++] = len;
}

static void arg_str(struct args *a, const char *s)
{
    arg_mem(a, s, strlen(s));
}

static void arg_u64(struct args *a, uint64_t x)
{
    int n = snprintf(a->nums[a->n], sizeof a->nums[a->n], "%" PRIu64, x);

    arg_mem(a, a->nums[a->n], (size_t)n);
}

static void arg_keys(struct args *a)
{
    for (size_t i = 0; i < NKEYS; i++)
        arg_str(a, KEYS[i]);
}

/* ------------------------------------------------------------ flush */

/* What a flush sends, beside the snapshot it comes from. */
struct flush_plan {
    size_t n_secs, n_edges, n_tops, n_ch;
    char (*rows)[ROW_MAX];                 /* per snapshot edge */
    char (*qenc)[3 * CO_QUOTA_NAME_MAX + 1];   /* per snapshot top slot */
    char ch_id[CH_LOCAL][CH_ID_MAX];
};

static bool bucket_due(const struct bucket *b, uint64_t now_s)
{
    if (b->sec + POINTS <= now_s || b->sec > now_s)
        return false;
    for (size_t k = 0; k < CO_STATS_OUTCOMES; k++)
        if (b->n[k] != b->sent[k])
            return true;
    return false;
}

/* A top entry worth sending: estimate above what Redis has, and the
 * window's key not expired yet (stats.lua keeps it a window past its
 * end). */
static bool top_due(const struct top_copy *t, const struct top_entry *e,
                    uint64_t now_ms)
{
    return e->used && e->est > e->sent &&
           (e->idx + 2) * t->window_ms > now_ms;
}

static bool ch_due(const struct ch_entry *c)
{
    return c->quota[0] != '\0' &&
           (c->issued != c->sent_issued || c->solved != c->sent_solved ||
            c->last_ms != c->sent_last_ms);
}

static int ch_id(const struct ch_entry *c, char *out, size_t outlen)
{
    char hex[33];

    co_hex_encode(c->kh, 16, hex, sizeof hex);
    return snprintf(out, outlen, "%s:%s", hex, c->quota);
}

static void edge_row_text(const struct edge_row *e, char out[ROW_MAX])
{
    snprintf(out, ROW_MAX, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %d %s",
             e->last_ms, e->lag_ms, e->policy_version, e->degraded ? 1 : 0,
             e->module_version);
}

/* Count what sn owes Redis and format its texts into p. Returns 0 or
 * CO_ENOMEM. */
static int flush_plan(const struct snapshot *sn, uint64_t now_ms,
                      struct flush_plan *p)
{
    memset(p, 0, sizeof *p);
    p->rows = malloc((sn->n_edges ? sn->n_edges : 1) * sizeof *p->rows);
    p->qenc = malloc((sn->n_tops ? sn->n_tops : 1) * sizeof *p->qenc);
    if (p->rows == NULL || p->qenc == NULL)
        return CO_ENOMEM;
    for (size_t i = 0; i < POINTS; i++)
        p->n_secs += bucket_due(&sn->ring[i], now_ms / 1000u);
    for (size_t i = 0; i < sn->n_edges; i++) {
        edge_row_text(&sn->edges[i], p->rows[i]);
        p->n_edges += sn->edges[i].dirty;
    }
    for (size_t i = 0; i < sn->n_tops; i++) {
        const struct top_copy *t = &sn->tops[i];

        co_percent_encode(t->name, strlen(t->name), p->qenc[i],
                          sizeof p->qenc[i]);
        for (size_t k = 0; k < TOP_LOCAL; k++)
            p->n_tops += top_due(t, &t->e[k], now_ms);
    }
    for (size_t i = 0; i < CH_LOCAL; i++) {
        ch_id(&sn->ch[i], p->ch_id[i], sizeof p->ch_id[i]);
        p->n_ch += ch_due(&sn->ch[i]);
    }
    return CO_OK;
}

static void flush_args(const struct snapshot *sn, const struct flush_plan *p,
                       uint64_t now_ms, struct args *a)
{
    arg_keys(a);
    arg_str(a, "flush");
    arg_u64(a, now_ms);
    arg_u64(a, CO_STATS_TOP_K);
    arg_u64(a, p->n_secs);
    arg_u64(a, p->n_edges);
    arg_u64(a, p->n_tops);
    arg_u64(a, p->n_ch);
    for (size_t i = 0; i < POINTS; i++) {
        const struct bucket *b = &sn->ring[i];

        if (!bucket_due(b, now_ms / 1000u))
            continue;
        arg_u64(a, b->sec);
        for (size_t k = 0; k < CO_STATS_OUTCOMES; k++)
            arg_u64(a, b->n[k] - b->sent[k]);
    }
    for (size_t i = 0; i < sn->n_edges; i++) {
        if (!sn->edges[i].dirty)
            continue;
        arg_str(a, sn->edges[i].id);
        arg_u64(a, sn->edges[i].last_ms);
        arg_str(a, p->rows[i]);
    }
    for (size_t i = 0; i < sn->n_tops; i++) {
        const struct top_copy *t = &sn->tops[i];

        for (size_t k = 0; k < TOP_LOCAL; k++) {
            if (!top_due(t, &t->e[k], now_ms))
                continue;
            arg_str(a, p->qenc[i]);
            arg_u64(a, t->window_ms);
            arg_u64(a, t->e[k].idx);
            arg_str(a, t->e[k].key);
            arg_u64(a, t->e[k].est);
        }
    }
    for (size_t i = 0; i < CH_LOCAL; i++) {
        const struct ch_entry *c = &sn->ch[i];

        if (!ch_due(c))
            continue;
        arg_str(a, p->ch_id[i]);
        arg_u64(a, c->first_ms);
        arg_u64(a, c->last_ms);
        arg_u64(a, c->issued - c->sent_issued);
        arg_u64(a, c->solved - c->sent_solved);
        arg_str(a, c->edge);
        arg_str(a, c->key);
    }
}

/* Redis has what sn held: mark it flushed where the live entry is still
 * the one copied (a bucket not reused, an edge not synced again, ...).
 * Under mu. */
static void flush_ack(const struct snapshot *sn, uint64_t now_ms)
{
    for (size_t i = 0; i < POINTS; i++) {
        struct bucket *b = &st.ring[i];

        if (bucket_due(&sn->ring[i], now_ms / 1000u) &&
            b->sec == sn->ring[i].sec)
            memcpy(b->sent, sn->ring[i].n, sizeof b->sent);
    }
    for (size_t i = 0; i < sn->n_edges; i++) {
        struct edge_row *e = &st.edges[sn->edge_slot[i]];

        if (strcmp(e->id, sn->edges[i].id) == 0 &&
            e->last_ms == sn->edges[i].last_ms)
            e->dirty = false;
    }
    for (size_t i = 0; i < sn->n_tops; i++) {
        struct top_slot *s = &st.tops[sn->tops[i].slot];

        if (strcmp(s->name, sn->tops[i].name) != 0 ||
            s->window_ms != sn->tops[i].window_ms)
            continue;
        for (size_t k = 0; k < TOP_LOCAL; k++) {
            const struct top_entry *c = &sn->tops[i].e[k];
            struct top_entry *e = &s->e[k];

            if (e->used && e->idx == c->idx && strcmp(e->key, c->key) == 0 &&
                c->est > e->sent)
                e->sent = c->est;
        }
    }
    for (size_t i = 0; i < CH_LOCAL; i++) {
        struct ch_entry *c = &st.ch[i];
        const struct ch_entry *s = &sn->ch[i];

        if (s->quota[0] == '\0' || strcmp(c->quota, s->quota) != 0 ||
            memcmp(c->kh, s->kh, 16) != 0 || c->first_ms != s->first_ms)
            continue;
        c->sent_issued = s->issued;
        c->sent_solved = s->solved;
        c->sent_last_ms = s->last_ms;
    }
}

static int check_flush_reply(redisReply *r, char *err, size_t errlen)
{
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        return CO_OK;
    snprintf(err, errlen, "stats flush: %.200s",
             r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    return CO_EREPLY;
}

/* One flush; the caller holds flush_mu. */
static int flush_locked(uint64_t now_ms, char *err, size_t errlen)
{
    struct snapshot *sn = snapshot_take(now_ms);
    struct flush_plan p = {0};
    struct args a = {0};
    redisReply *r;
    int rc = CO_ENOMEM;

    if (sn == NULL || flush_plan(sn, now_ms, &p) != CO_OK)
        goto done;
    rc = CO_OK;
    if (p.n_secs + p.n_edges + p.n_tops + p.n_ch == 0)
        goto done;
    rc = args_init(&a, NKEYS + 8 + 5 * p.n_secs + 3 * p.n_edges +
                   5 * p.n_tops + 7 * p.n_ch);
    if (rc != CO_OK)
        goto done;
    flush_args(sn, &p, now_ms, &a);
    r = co_redis_eval(st.timeout_ms, co_stats_lua, NKEYS, a.n - NKEYS, a.v,
                      a.len, err, errlen);
    if (r == NULL) {
        rc = CO_EREDIS;
        goto done;
    }
    rc = check_flush_reply(r, err, errlen);
    freeReplyObject(r);
    if (rc == CO_OK) {
        pthread_mutex_lock(&st.mu);
        flush_ack(sn, now_ms);
        pthread_mutex_unlock(&st.mu);
    }
done:
    if (rc == CO_ENOMEM)
        snprintf(err, errlen, "out of memory");
    args_free(&a);
    free(p.rows);
    free(p.qenc);
    if (sn != NULL)
        snapshot_free(sn);
    return rc;
}

int co_stats_flush(char *err, size_t errlen)
{
    int rc;

    pthread_mutex_lock(&st.flush_mu);
    rc = flush_locked(co_wall_ms(), err, errlen);
    pthread_mutex_unlock(&st.flush_mu);
    return rc;
}

/* ------------------------------------------------------------ read */

/* The parts of a read reply (stats.lua 'read'), checked. */
struct read_view {
    redisReply *r;                  /* owns the rest */
    const redisReply *dec, *edges, *ch, *tops;
};

/* An array of n (any n when n == 0) strings, in pairs when paired. */
static bool string_array(const redisReply *a, size_t n, bool paired)
{
    if (a->type != REDIS_REPLY_ARRAY || (n != 0 && a->elements != n) ||
        (paired && a->elements % 2 != 0))
        return false;
    for (size_t i = 0; i < a->elements; i++)
        if (a->element[i]->type != REDIS_REPLY_STRING)
            return false;
    return true;
}

static int read_check(redisReply *r, size_t n_quotas, struct read_view *v,
                      char *err, size_t errlen)
{
    v->r = r;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4)
        goto bad;
    v->dec = r->element[0];
    v->edges = r->element[1];
    v->ch = r->element[2];
    v->tops = r->element[3];
    if (v->dec->type != REDIS_REPLY_ARRAY ||
        v->dec->elements != CO_STATS_OUTCOMES * POINTS ||
        !string_array(v->edges, 0, true) || !string_array(v->ch, 0, true) ||
        v->tops->type != REDIS_REPLY_ARRAY ||
        v->tops->elements != 2 * n_quotas)
        goto bad;
    for (size_t i = 0; i < v->dec->elements; i++)
        if (v->dec->element[i]->type != REDIS_REPLY_INTEGER ||
            v->dec->element[i]->integer < 0)
            goto bad;
    for (size_t i = 0; i < 2 * n_quotas; i++)
        if (!string_array(v->tops->element[i], 0, true))
            goto bad;
    return CO_OK;
bad:
    snprintf(err, errlen, "stats read: %.200s",
             r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    return CO_EREPLY;
}

/* One 'read' call for pol's quotas (pol may be NULL) at now_ms, within
 * timeout_ms. Returns 0 with v filled (free v->r), or CO_EREDIS /
 * CO_EREPLY / CO_ENOMEM with err. */
static int read_redis(const struct co_policy *pol, uint64_t now_ms,
                      unsigned timeout_ms, struct read_view *v, char *err,
                      size_t errlen)
{
    size_t nq = pol != NULL ? pol->n_quotas : 0;
    char (*qenc)[3 * CO_QUOTA_NAME_MAX + 1] = malloc((nq ? nq : 1) *
                                                     sizeof *qenc);
    struct args a = {0};
    redisReply *r;
    int rc = CO_ENOMEM;

    if (qenc == NULL || args_init(&a, NKEYS + 8 + 3 * nq) != CO_OK) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    arg_keys(&a);
    arg_str(&a, "read");
    arg_u64(&a, now_ms);
    arg_u64(&a, now_ms / 1000u - (POINTS - 1));
    arg_u64(&a, POINTS);
    arg_u64(&a, EDGES_SHOWN);
    arg_u64(&a, CH_KEPT);
    arg_u64(&a, CO_STATS_TOP_K);
    arg_u64(&a, nq);
    for (size_t i = 0; i < nq; i++) {
        const struct co_quota *q = &pol->quotas[i];
        uint64_t wms = (uint64_t)q->window_s * 1000u;

        co_percent_encode(q->name, strlen(q->name), qenc[i], sizeof qenc[i]);
        arg_str(&a, qenc[i]);
        arg_u64(&a, wms);
        arg_u64(&a, wms != 0 ? now_ms / wms : 0);
    }
    r = co_redis_eval(timeout_ms, co_stats_lua, NKEYS, a.n - NKEYS, a.v,
                      a.len, err, errlen);
    rc = CO_EREDIS;
    if (r == NULL)
        goto done;
    rc = read_check(r, nq, v, err, errlen);
    if (rc != CO_OK) {
        freeReplyObject(r);
        v->r = NULL;
    }
done:
    args_free(&a);
    free(qenc);
    return rc;
}

/* Lock m within ms milliseconds. */
static bool lock_within(pthread_mutex_t *m, unsigned ms)
{
    struct timespec until;

    co_timespec_after(false, ms, &until);
    return pthread_mutex_timedlock(m, &until) == 0;
}

/* Read Redis (after any flush in progress, all within st.timeout_ms) and
 * snapshot the local tables consistently with what was read. *merged says
 * whether v holds a read. Returns the snapshot, or NULL (out of memory). */
static struct snapshot *gather(const struct co_policy *pol, uint64_t now_ms,
                               struct read_view *v, bool *merged)
{
    uint64_t t0 = co_mono_ms(), spent;
    unsigned budget = st.timeout_ms;
    struct snapshot *sn;
    char err[256], ev[300];
    int rc = CO_EREDIS;

    *merged = false;
    if (!lock_within(&st.flush_mu, budget))
        return snapshot_take(now_ms);
    spent = co_mono_ms() - t0;
    if (spent < budget)
        rc = read_redis(pol, now_ms, budget - (unsigned)spent, v, err,
                        sizeof err);
    if (rc == CO_EREPLY || rc == CO_ENOMEM)
        CO_ERROR("msg=stats_read_failed detail=%s",
                 co_log_value(ev, sizeof ev, err, strlen(err)));
    *merged = rc == CO_OK;
    sn = snapshot_take(now_ms);
    pthread_mutex_unlock(&st.flush_mu);
    return sn;
}

/* ------------------------------------------------------------ rendering */

/* s[0..len) as a JSON string; bytes that do not make UTF-8 become '?'
 * (keys are whatever the edges extracted). NULL when out of memory. */
static json_t *text(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    char *c;

    if (j != NULL)
        return j;
    c = malloc(len + 1);
    if (c == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++)
        c[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    j = json_stringn(c, len);
    free(c);
    return j;
}

/* The JSON array [one(i, ctx) for i < n]; NULL when out of memory. */
static json_t *json_list(size_t n, json_t *(*one)(size_t i, const void *ctx),
                         const void *ctx)
{
    json_t *arr = json_array();

    for (size_t i = 0; arr != NULL && i < n; i++)
        if (json_array_append_new(arr, one(i, ctx)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    return arr;
}

/* What point_item() needs beside the index. */
struct series {
    const struct read_view *v;
    const struct snapshot *sn;
    uint64_t from;                  /* the second of point 0 */
    size_t k;                       /* the outcome */
};

/* Redis's count and what is not flushed yet; everything local when Redis
 * was not read. */
static json_t *point_item(size_t p, const void *ctx)
{
    const struct series *s = ctx;
    const struct bucket *b = &s->sn->ring[(s->from + p) % POINTS];
    uint64_t n = 0;

    if (s->v != NULL)
        n = (uint64_t)s->v->dec->element[CO_STATS_OUTCOMES * p + s->k]
                ->integer;
    if (b->sec == s->from + p)
        n += b->n[s->k] - (s->v != NULL ? b->sent[s->k] : 0);
    return json_integer((json_int_t)n);
}

static json_t *decisions_json(const struct read_view *v,
                              const struct snapshot *sn, uint64_t now_s)
{
    uint64_t from = now_s - (POINTS - 1);
    json_t *d = json_pack("{s:i, s:I, s:i}", "step_s", 1, "from_s",
                          (json_int_t)from, "points", POINTS);

    for (size_t k = 0; d != NULL && k < CO_STATS_OUTCOMES; k++)
        if (json_object_set_new(d, outcome_names[k], json_list(
                POINTS, point_item, &(struct series){v, sn, from, k})) != 0) {
            json_decref(d);
            d = NULL;
        }
    return d;
}

/* One edge as the answer shows it. */
struct edge_view {
    const char *id;                 /* into the reply or the snapshot */
    const char *mv;
    uint64_t last_ms, lag_ms, policy_version;
    bool degraded;
};

/* Parse a row of tg:{stats}:edges ("last lag policy degraded mv"). */
static bool edge_parse(const char *id, const char *row, struct edge_view *e)
{
    char *end;

    e->id = id;
    e->last_ms = strtoull(row, &end, 10);
    if (*end != ' ')
        return false;
    e->lag_ms = strtoull(end + 1, &end, 10);
    if (*end != ' ')
        return false;
    e->policy_version = strtoull(end + 1, &end, 10);
    if (*end != ' ' || (end[1] != '0' && end[1] != '1') || end[2] != ' ')
        return false;
    e->degraded = end[1] == '1';
    e->mv = end + 3;
    return true;
}

static int cmp_edge_id(const void *a, const void *b)
{
    const struct edge_view *x = a, *y = b;
    int c = strcmp(x->id, y->id);

    return c != 0 ? c : x->last_ms < y->last_ms ? 1
                      : x->last_ms > y->last_ms ? -1 : 0;
}

static int cmp_edge_newest(const void *a, const void *b)
{
    const struct edge_view *x = a, *y = b;

    return x->last_ms < y->last_ms ? 1 : x->last_ms > y->last_ms ? -1
                                       : strcmp(x->id, y->id);
}

/* What edge_item() needs beside the index. */
struct edge_list {
    const struct edge_view *all;
    uint64_t now_ms, stale_after;
};

static json_t *edge_item(size_t i, const void *ctx)
{
    const struct edge_list *l = ctx;
    const struct edge_view *e = &l->all[i];
    uint64_t age = l->now_ms > e->last_ms ? l->now_ms - e->last_ms : 0;

    return json_pack("{s:o, s:I, s:I, s:I, s:o, s:I, s:b, s:b}", "id",
                     text(e->id, strlen(e->id)), "last_seen_ms",
                     (json_int_t)e->last_ms, "age_ms", (json_int_t)age,
                     "lag_ms", (json_int_t)e->lag_ms, "module_version",
                     text(e->mv, strlen(e->mv)), "policy_version",
                     (json_int_t)e->policy_version, "degraded", e->degraded,
                     "stale", age > l->stale_after);
}

/* Redis's rows and the local ones (both without edges silent for
 * EDGE_FORGET_MS), one per id (the newest), newest first, at most
 * EDGES_SHOWN. */
static json_t *edges_json(const struct read_view *v,
                          const struct snapshot *sn, uint64_t now_ms,
                          uint64_t stale_after)
{
    size_t nr = v != NULL ? v->edges->elements / 2 : 0, n = 0, m = 0;
    struct edge_view *all = malloc((nr + sn->n_edges + 1) * sizeof *all);
    struct edge_list l = {all, now_ms, stale_after};
    json_t *arr;

    if (all == NULL)
        return NULL;
    for (size_t i = 0; i < nr; i++)
        n += edge_parse(v->edges->element[2 * i]->str,
                        v->edges->element[2 * i + 1]->str, &all[n]);
    for (size_t i = 0; i < sn->n_edges; i++, n++) {
        const struct edge_row *e = &sn->edges[i];

        all[n] = (struct edge_view){e->id, e->module_version, e->last_ms,
                                    e->lag_ms, e->policy_version,
                                    e->degraded};
    }
    qsort(all, n, sizeof *all, cmp_edge_id);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(all[i].id, all[m - 1].id) != 0)
            all[m++] = all[i];
    qsort(all, m, sizeof *all, cmp_edge_newest);
    arr = json_list(m < EDGES_SHOWN ? m : EDGES_SHOWN, edge_item, &l);
    free(all);
    return arr;
}

/* One key of a quota's top: one source's figure for it. */
struct top_view {
    const char *key;
    size_t len;
    uint64_t count;                 /* its estimate at the read */
    bool current;                   /* answered in the current window */
};

static int key_cmp(const struct top_view *x, const struct top_view *y)
{
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, n);

    return c != 0 ? c : x->len < y->len ? -1 : x->len > y->len ? 1 : 0;
}

/* By key, the figure that stands first: a current window's before the
 * previous one's (sync.lua's answer already holds the decayed previous
 * window), then the largest. */
static int cmp_top_key(const void *a, const void *b)
{
    const struct top_view *x = a, *y = b;
    int c = key_cmp(x, y);

    if (c != 0)
        return c;
    if (x->current != y->current)
        return x->current ? -1 : 1;
    return x->count < y->count ? 1 : x->count > y->count ? -1 : 0;
}

static int cmp_top_count(const void *a, const void *b)
{
    const struct top_view *x = a, *y = b;

    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return key_cmp(x, y);
}

/* The figures of Redis's reply z (window idx's list) at now_ms, appended
 * to t; returns how many. */
static size_t top_redis(const redisReply *z, uint64_t idx, uint64_t wms,
                        uint64_t now_ms, struct top_view *t)
{
    size_t n = 0;

    for (size_t k = 0; k + 1 < z->elements && n < CO_STATS_TOP_K; k += 2) {
        uint64_t est = (uint64_t)strtod(z->element[k + 1]->str, NULL);

        t[n++] = (struct top_view){
            z->element[k]->str, z->element[k]->len,
            co_window_estimate(idx, est, 0, wms, now_ms),
            idx == now_ms / wms};
    }
    return n;
}

/* The local figures of q at now_ms (its current and previous windows),
 * appended to t; returns how many. */
static size_t top_local(const struct snapshot *sn, const struct co_quota *q,
                        uint64_t now_ms, struct top_view *t)
{
    uint64_t wms = (uint64_t)q->window_s * 1000u, idx = now_ms / wms;
    size_t n = 0;

    for (size_t i = 0; i < sn->n_tops; i++) {
        const struct top_copy *c = &sn->tops[i];

        if (strcmp(c->name, q->name) != 0 || c->window_ms != wms)
            continue;
        for (size_t k = 0; k < TOP_LOCAL; k++) {
            const struct top_entry *e = &c->e[k];

            if (e->used && (e->idx == idx || e->idx + 1 == idx))
                t[n++] = (struct top_view){
                    e->key, strlen(e->key),
                    co_window_estimate(e->idx, e->est, 0, wms, now_ms),
                    e->idx == idx};
        }
        break;
    }
    return n;
}

/* What top_item() needs beside the index. */
struct top_list {
    const struct top_view *t;
    const struct co_quota *q;
};

static json_t *top_item(size_t i, const void *ctx)
{
    const struct top_list *l = ctx;
    const struct top_view *t = &l->t[i];
    size_t len = t->len < CO_KEY_MAX ? t->len : CO_KEY_MAX;
    char key[CO_KEY_MAX + 1];

    memcpy(key, t->key, len);
    key[len] = '\0';
    return json_pack("{s:o, s:I, s:I}", "key", text(key, len), "count",
                     (json_int_t)t->count, "limit",
                     (json_int_t)co_quota_limit(l->q, key));
}

/* The top keys of q (the quota at index i of the policy) at now_ms: per
 * key, the largest figure of its current window (Redis's or local), else
 * the largest of its previous window decayed; keys whose figure decayed
 * to 0 left out. */
static json_t *top_json(const struct read_view *v, const struct snapshot *sn,
                        const struct co_quota *q, size_t i, uint64_t now_ms)
{
    struct top_view t[2 * CO_STATS_TOP_K + TOP_LOCAL];
    struct top_list l = {t, q};
    uint64_t wms = (uint64_t)q->window_s * 1000u;
    size_t n = 0, m = 0;

    if (wms != 0) {
        uint64_t idx = now_ms / wms;

        if (v != NULL) {
            n += top_redis(v->tops->element[2 * i], idx, wms, now_ms, t + n);
            if (idx > 0)
                n += top_redis(v->tops->element[2 * i + 1], idx - 1, wms,
                               now_ms, t + n);
        }
        n += top_local(sn, q, now_ms, t + n);
    }
    qsort(t, n, sizeof *t, cmp_top_key);
    for (size_t k = 0; k < n; k++)
        if (k == 0 || key_cmp(&t[k], &t[k - 1]) != 0)
            if (t[k].count > 0)
                t[m++] = t[k];
    qsort(t, m, sizeof *t, cmp_top_count);
    return json_pack("{s:s, s:I, s:b, s:o}", "quota", q->name, "window_s",
                     (json_int_t)q->window_s, "shadow", q->shadow, "keys",
                     json_list(m < CO_STATS_TOP_K ? m : CO_STATS_TOP_K,
                               top_item, &l));
}

/* What quota_item() needs beside the index. */
struct quota_list {
    const struct read_view *v;
    const struct snapshot *sn;
    const struct co_policy *pol;
    uint64_t now_ms;
};

static json_t *quota_item(size_t i, const void *ctx)
{
    const struct quota_list *l = ctx;

    return top_json(l->v, l->sn, &l->pol->quotas[i], i, l->now_ms);
}

/* One challenged pair as the answer shows it. */
struct ch_view {
    char quota[CO_QUOTA_NAME_MAX + 1];
    uint8_t kh[16];
    const char *key, *edge;         /* into the reply or the snapshot */
    size_t klen, elen;
    uint64_t first_ms, last_ms, issued, solved;
};

/* Parse a tg:{stats}:ch entry: id "<32 hex>:<quota>", row "first_ms
 * last_ms issued solved last_edge key". */
static bool ch_parse(const redisReply *id, const redisReply *row,
                     struct ch_view *c)
{
    uint64_t *f[] = {&c->first_ms, &c->last_ms, &c->issued, &c->solved};
    const char *p = row->str, *sp;
    char *end;

    memset(c, 0, sizeof *c);
    if (id->len < 34 || id->len - 33 > CO_QUOTA_NAME_MAX ||
        id->str[32] != ':' || co_hex_decode(id->str, 32, c->kh, 16) != 16)
        return false;
    memcpy(c->quota, id->str + 33, id->len - 33);
    for (size_t i = 0; i < 4; i++) {
        *f[i] = strtoull(p, &end, 10);
        if (end == p || *end != ' ')
            return false;
        p = end + 1;
    }
    sp = memchr(p, ' ', row->len - (size_t)(p - row->str));
    if (sp == NULL)
        return false;
    c->edge = p;
    c->elen = (size_t)(sp - p);
    c->key = sp + 1;
    c->klen = row->len - (size_t)(c->key - row->str);
    return true;
}

/* Add the local entries to all[0..n) (what Redis lacks when merged, else
 * everything); returns the new n. all has room for CH_LOCAL more. */
static size_t ch_add_local(const struct snapshot *sn, bool merged,
                           struct ch_view *all, size_t n)
{
    for (size_t i = 0; i < CH_LOCAL; i++) {
        const struct ch_entry *c = &sn->ch[i];
        struct ch_view *v = NULL;

        if (c->quota[0] == '\0' || (merged && !ch_due(c)))
            continue;
        for (size_t j = 0; j < n && v == NULL; j++)
            if (strcmp(all[j].quota, c->quota) == 0 &&
                memcmp(all[j].kh, c->kh, 16) == 0)
                v = &all[j];
        if (v == NULL) {
            v = &all[n++];
            memset(v, 0, sizeof *v);
            memcpy(v->quota, c->quota, sizeof v->quota);
            memcpy(v->kh, c->kh, 16);
            v->key = v->edge = "";
            v->first_ms = c->first_ms;
        }
        v->issued += c->issued - (merged ? c->sent_issued : 0);
        v->solved += c->solved - (merged ? c->sent_solved : 0);
        if (c->first_ms < v->first_ms)
            v->first_ms = c->first_ms;
        if (c->edge[0] != '\0' && (c->last_ms >= v->last_ms || v->elen == 0)) {
            v->edge = c->edge;
            v->elen = strlen(c->edge);
        }
        if (c->last_ms > v->last_ms)
            v->last_ms = c->last_ms;
        if (v->klen == 0) {
            v->key = c->key;
            v->klen = strlen(c->key);
        }
    }
    return n;
}

static int cmp_ch_newest(const void *a, const void *b)
{
    const struct ch_view *x = a, *y = b;

    return x->last_ms < y->last_ms ? 1 : x->last_ms > y->last_ms ? -1
                                       : strcmp(x->quota, y->quota);
}

static json_t *ch_item(size_t i, const void *ctx)
{
    const struct ch_view *c = &((const struct ch_view *)ctx)[i];

    return json_pack("{s:s, s:o, s:I, s:I, s:I, s:I, s:o}", "quota",
                     c->quota, "key", text(c->key, c->klen), "first_ms",
                     (json_int_t)c->first_ms, "last_ms",
                     (json_int_t)c->last_ms, "issued", (json_int_t)c->issued,
                     "solved", (json_int_t)c->solved, "last_edge",
                     text(c->edge, c->elen));
}

static json_t *challenges_json(const struct read_view *v,
                               const struct snapshot *sn)
{
    size_t nr = v != NULL ? v->ch->elements / 2 : 0, n = 0;
    struct ch_view *all = malloc((nr + CH_LOCAL) * sizeof *all);
    json_t *arr;

    if (all == NULL)
        return NULL;
    for (size_t i = 0; i < nr; i++)
        n += ch_parse(v->ch->element[2 * i], v->ch->element[2 * i + 1],
                      &all[n]);
    n = ch_add_local(sn, v != NULL, all, n);
    qsort(all, n, sizeof *all, cmp_ch_newest);
    arr = json_list(n < CH_SHOWN ? n : CH_SHOWN, ch_item, all);
    free(all);
    return arr;
}

/* The whole document (contract in the file comment); v NULL: Redis could
 * not be read. NULL when out of memory. */
static json_t *stats_json(const struct co_admin_token *viewer,
                          const struct co_policy *pol, uint64_t now_ms,
                          const struct read_view *v,
                          const struct snapshot *sn)
{
    uint64_t interval = pol != NULL ? pol->sync_interval_ms : 0;
    uint64_t stale_after = 3 * interval > EDGE_STALE_MIN_MS
                           ? 3 * interval : EDGE_STALE_MIN_MS;
    bool up = v != NULL &&
              atomic_load_explicit(&co_metrics.redis_up, memory_order_relaxed);

    return json_pack(
        "{s:I, s:{s:s}, s:{s:s, s:s}, s:{s:b}, s:b, s:{s:I, s:I}, s:I, "
        "s:o, s:o, s:o, s:o}",
        "now_ms", (json_int_t)now_ms,
        "coordinator", "version", CO_VERSION,
        "viewer", "name", viewer->name, "role", viewer->admin ? "admin"
                                                              : "read",
        "redis", "up", up,
        "merged", v != NULL,
        "policy", "version", (json_int_t)(pol != NULL ? pol->version : 0),
        "sync_interval_ms", (json_int_t)interval,
        "edges_stale_after_ms", (json_int_t)stale_after,
        "edges", edges_json(v, sn, now_ms, stale_after),
        "top_keys", json_list(pol != NULL ? pol->n_quotas : 0, quota_item,
                              &(struct quota_list){v, sn, pol, now_ms}),
        "decisions", decisions_json(v, sn, now_ms / 1000u),
        "challenges", challenges_json(v, sn));
}

int co_stats_render(const struct co_admin_token *viewer, uint64_t now_ms,
                    json_t **out)
{
    struct co_policy *pol = co_policy_current();
    struct read_view v = {0};
    struct snapshot *sn;
    bool merged;

    sn = gather(pol, now_ms, &v, &merged);
    *out = sn != NULL ? stats_json(viewer, pol, now_ms, merged ? &v : NULL,
                                   sn)
                      : NULL;
    if (v.r != NULL)
        freeReplyObject(v.r);
    if (sn != NULL)
        snapshot_free(sn);
    co_policy_release(pol);
    return *out != NULL ? CO_OK : CO_ENOMEM;
}

void co_stats_handle(const struct co_request *req, struct co_response *resp)
{
    static const char *const no_store[] = {"Cache-Control", "no-store", NULL};
    const struct co_admin_token *viewer;
    json_t *doc = NULL;
    char *body;

    resp->headers = no_store;
    viewer = co_admin_authorize(req, resp, false);
    if (viewer == NULL)
        return;
    if (co_stats_render(viewer, co_wall_ms(), &doc) != CO_OK ||
        (body = json_dumps(doc, JSON_COMPACT)) == NULL) {
        json_decref(doc);
        CO_ERROR("msg=stats_render_failed detail=\"out of memory\"");
        co_response_problem(resp, 500, "out of memory");
        return;
    }
    json_decref(doc);
    co_response_take(resp, 200, "application/json", (uint8_t *)body,
                     strlen(body));
}

/* ------------------------------------------------------------ thread */

/* The ticker's tick: one flush, logged when it starts or stops failing
 * for another reason than Redis being down (redis.c logs outages). */
static void flush_logged(void)
{
    static bool failing;             /* only the ticker's thread */
    char err[256], ev[300];
    int rc = co_stats_flush(err, sizeof err);

    if (rc != CO_OK && rc != CO_EREDIS && !failing)
        CO_WARN("msg=stats_flush_failed detail=%s",
                co_log_value(ev, sizeof ev, err, strlen(err)));
    else if (rc == CO_OK && failing)
        CO_INFO("msg=stats_flush_resumed");
    failing = rc != CO_OK && rc != CO_EREDIS;
}

int co_stats_start(unsigned timeout_ms, char *err, size_t errlen)
{
    st.timeout_ms = timeout_ms;
    st.flusher.tick = flush_logged;
    st.flusher.period_ms = FLUSH_MS;
    /* the last flush runs after the HTTP server drained: what was counted
     * since the previous one is not lost when Redis is up */
    st.flusher.final = true;
    return co_ticker_start(&st.flusher, err, errlen);
}

void co_stats_stop(void)
{
    co_ticker_stop(&st.flusher);
}
