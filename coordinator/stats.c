/* stats.c — the recorder behind GET /v1/stats: what every sync and
 * challenge verify tells it, kept in local tables and flushed to Redis
 * once a second, so the figures of the ops dashboard
 * (coordinator/dashboard/) merge across coordinators. stats_read.c reads
 * them back and renders the document; stats_tables.h is what the two
 * share.
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

#include "tollgated.h"
#include "stats_tables.h"

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

void co_stats__snapshot_free(struct snapshot *sn)
{
    free(sn->edges);
    free(sn->edge_slot);
    free(sn->tops);
    free(sn);
}

/* A copy of the local tables (edges silent for EDGE_FORGET_MS left out),
 * or NULL when out of memory; co_stats__snapshot_free() it. */
struct snapshot *co_stats__snapshot_take(uint64_t now_ms)
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
        co_stats__snapshot_free(sn);
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
/* stats.lua's KEYS (redis_keys.c names them; the prefix is what the
 * script builds its minute and top keys from). */
void co_stats__call_keys(struct co_script_call *c)
{
    const char *const keys[NKEYS] = {
        co_rkeys.stats_edges, co_rkeys.stats_edgez, co_rkeys.stats_ch,
        co_rkeys.stats_chz, co_rkeys.stats_prefix,
    };

    for (size_t i = 0; i < NKEYS; i++)
        co_call_key(c, keys[i], strlen(keys[i]));
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

bool co_stats__ch_due(const struct ch_entry *c)
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
        p->n_ch += co_stats__ch_due(&sn->ch[i]);
    }
    return CO_OK;
}

static void flush_args(const struct snapshot *sn, const struct flush_plan *p,
                       uint64_t now_ms, struct co_script_call *a)
{
    co_stats__call_keys(a);
    co_call_arg_str(a, "flush");
    co_call_arg_u64(a, now_ms);
    co_call_arg_u64(a, CO_STATS_TOP_K);
    co_call_arg_u64(a, p->n_secs);
    co_call_arg_u64(a, p->n_edges);
    co_call_arg_u64(a, p->n_tops);
    co_call_arg_u64(a, p->n_ch);
    for (size_t i = 0; i < POINTS; i++) {
        const struct bucket *b = &sn->ring[i];

        if (!bucket_due(b, now_ms / 1000u))
            continue;
        co_call_arg_u64(a, b->sec);
        for (size_t k = 0; k < CO_STATS_OUTCOMES; k++)
            co_call_arg_u64(a, b->n[k] - b->sent[k]);
    }
    for (size_t i = 0; i < sn->n_edges; i++) {
        if (!sn->edges[i].dirty)
            continue;
        co_call_arg_str(a, sn->edges[i].id);
        co_call_arg_u64(a, sn->edges[i].last_ms);
        co_call_arg_str(a, p->rows[i]);
    }
    for (size_t i = 0; i < sn->n_tops; i++) {
        const struct top_copy *t = &sn->tops[i];

        for (size_t k = 0; k < TOP_LOCAL; k++) {
            if (!top_due(t, &t->e[k], now_ms))
                continue;
            co_call_arg_str(a, p->qenc[i]);
            co_call_arg_u64(a, t->window_ms);
            co_call_arg_u64(a, t->e[k].idx);
            co_call_arg_str(a, t->e[k].key);
            co_call_arg_u64(a, t->e[k].est);
        }
    }
    for (size_t i = 0; i < CH_LOCAL; i++) {
        const struct ch_entry *c = &sn->ch[i];

        if (!co_stats__ch_due(c))
            continue;
        co_call_arg_str(a, p->ch_id[i]);
        co_call_arg_u64(a, c->first_ms);
        co_call_arg_u64(a, c->last_ms);
        co_call_arg_u64(a, c->issued - c->sent_issued);
        co_call_arg_u64(a, c->solved - c->sent_solved);
        co_call_arg_str(a, c->edge);
        co_call_arg_str(a, c->key);
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
    struct snapshot *sn = co_stats__snapshot_take(now_ms);
    struct flush_plan p = {0};
    struct co_script_call a = {0};
    redisReply *r;
    int rc = CO_ENOMEM;

    if (sn == NULL || flush_plan(sn, now_ms, &p) != CO_OK)
        goto done;
    rc = CO_OK;
    if (p.n_secs + p.n_edges + p.n_tops + p.n_ch == 0)
        goto done;
    co_call_init(&a, co_script(CO_SCRIPT_STATS), NKEYS + 7 +
                 5 * p.n_secs + 3 * p.n_edges + 5 * p.n_tops + 7 * p.n_ch);
    flush_args(sn, &p, now_ms, &a);
    rc = co_call_seal(&a);
    if (rc != CO_OK)
        goto done;
    r = co_redis_eval(st.timeout_ms, &a, err, errlen);
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
    co_call_free(&a);
    free(p.rows);
    free(p.qenc);
    if (sn != NULL)
        co_stats__snapshot_free(sn);
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

/* ------------------------------------------------------------ read side
 * What stats_read.c needs of the recorder: the flush lock (a read and a
 * flush exclude each other, so a delta is never counted twice) and the
 * Redis timeout of the module. */

bool co_stats__flush_lock(unsigned ms)
{
    struct timespec until;

    co_timespec_after(false, ms, &until);
    return pthread_mutex_timedlock(&st.flush_mu, &until) == 0;
}

void co_stats__flush_unlock(void)
{
    pthread_mutex_unlock(&st.flush_mu);
}

unsigned co_stats__timeout_ms(void)
{
    return st.timeout_ms;
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
