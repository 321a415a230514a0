/* stats_read.c — GET /v1/stats: the figures of the ops dashboard
 * (coordinator/dashboard/), merged across coordinators through Redis: ONE
 * stats.lua read plus this coordinator's unflushed deltas (the recorder,
 * stats.c, keeps them; stats_tables.h is what the two share).
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
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>
#include <jansson.h>

#include "tollgated.h"
#include "stats_tables.h"

static const char *const outcome_names[CO_STATS_OUTCOMES] = {
    "allowed", "denied", "challenged", "shadow",
};

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
    struct co_script_call a;
    redisReply *r;
    int rc = CO_ENOMEM;

    co_call_init(&a, co_script(CO_SCRIPT_STATS), NKEYS + 8 + 3 * nq);
    if (qenc == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    co_stats__call_keys(&a);
    co_call_arg_str(&a, "read");
    co_call_arg_u64(&a, now_ms);
    co_call_arg_u64(&a, now_ms / 1000u - (POINTS - 1));
    co_call_arg_u64(&a, POINTS);
    co_call_arg_u64(&a, EDGES_SHOWN);
    co_call_arg_u64(&a, CH_KEPT);
    co_call_arg_u64(&a, CO_STATS_TOP_K);
    co_call_arg_u64(&a, nq);
    for (size_t i = 0; i < nq; i++) {
        const struct co_quota *q = &pol->quotas[i];
        uint64_t wms = (uint64_t)q->window_s * 1000u;

        co_percent_encode(q->name, strlen(q->name), qenc[i], sizeof qenc[i]);
        co_call_arg_str(&a, qenc[i]);
        co_call_arg_u64(&a, wms);
        co_call_arg_u64(&a, wms != 0 ? now_ms / wms : 0);
    }
    if (co_call_seal(&a) != CO_OK) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    r = co_redis_eval(timeout_ms, &a, err, errlen);
    rc = CO_EREDIS;
    if (r == NULL)
        goto done;
    rc = read_check(r, nq, v, err, errlen);
    if (rc != CO_OK) {
        freeReplyObject(r);
        v->r = NULL;
    }
done:
    co_call_free(&a);
    free(qenc);
    return rc;
}

/* Read Redis (after any flush in progress, all within st.timeout_ms) and
 * snapshot the local tables consistently with what was read. *merged says
 * whether v holds a read. Returns the snapshot, or NULL (out of memory). */
static struct snapshot *gather(const struct co_policy *pol, uint64_t now_ms,
                               struct read_view *v, bool *merged)
{
    uint64_t t0 = co_mono_ms(), spent;
    unsigned budget = co_stats__timeout_ms();
    struct snapshot *sn;
    char err[256], ev[300];
    int rc = CO_EREDIS;

    *merged = false;
    if (!co_stats__flush_lock(budget))
        return co_stats__snapshot_take(now_ms);
    spent = co_mono_ms() - t0;
    if (spent < budget)
        rc = read_redis(pol, now_ms, budget - (unsigned)spent, v, err,
                        sizeof err);
    if (rc == CO_EREPLY || rc == CO_ENOMEM)
        CO_ERROR("msg=stats_read_failed detail=%s",
                 co_log_value(ev, sizeof ev, err, strlen(err)));
    *merged = rc == CO_OK;
    sn = co_stats__snapshot_take(now_ms);
    co_stats__flush_unlock();
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

        if (c->quota[0] == '\0' || (merged && !co_stats__ch_due(c)))
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
        co_stats__snapshot_free(sn);
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
