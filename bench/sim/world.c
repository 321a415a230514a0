/* world.c — one simulated run: edges, clients, the sync network, tallies.
 *
 * Time is simulated and advances in fixed steps. Each step, in order:
 *  1. sync answers whose round trip is over reach their edge
 *     (tg_sync_response), and syncs lost in an outage fail at their
 *     timeout (tg_sync_failed);
 *  2. syncs that reached the coordinator (half a round trip after they
 *     left) are posted to tollgated-sim, one at a time in edge order, with
 *     the shared clock set to this step: the coordinator decides at the
 *     simulated time, the edge keeps deciding until the answer arrives;
 *  3. client requests arriving in this step go to their edge (tg_verify);
 *  4. every edge with no sync in flight asks tg_sync_due() and, when due,
 *     freezes a batch (tg_sync_request).
 * Posting one sync at a time keeps a run deterministic: the same seed gives
 * the same requests, the same order at the coordinator, the same figures.
 *
 * The measured period starts at T0, aligned to the window (the attack
 * starts there, after a warm-up in which every edge fetched the policy)
 * and lasts p->windows windows. A drain follows: no more traffic, and the
 * run goes on until every edge's counts are acknowledged, so what the edges
 * decided can be checked against what the coordinator acknowledged and
 * what Redis holds.
 */
#include <math.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"
#include "tollgate.h"
#include "tollgate.pb-c.h"

#define T0_MS        1800000000000ULL  /* 2027-01-15T08:00Z, a whole minute */
#define REQ_CAP      65536             /* the wasm host's sync buffer */
#define RESP_CAP     65536
#define MIN_TABLE    64                /* per edge key slots, at least */
#define DRAIN_CAP_MS 60000
#define HTTP_TIMEOUT 10000             /* real ms for one sync */
#define PROGRESS_S   2.0
#define QUOTA_NAME   "sim"

/* Keys: the attacker, the legit client, then the fleet's clients,
 * 10.a.b.c for fleet client (a << 16 | b << 8 | c). */
static const char *const KEY_IP[2] = {"203.0.113.7", "198.51.100.23"};
enum { K_ATTACKER = 0, K_LEGIT = 1, K_FLEET = 2 };
#define N_SLOTS (SIM_MAX_WINDOWS + 8)

enum { S_IDLE = 0, S_SENT, S_POSTED, S_FAILING };

struct edge_sim {
    tg_edge *e;
    void *mem;
    char id[32];
    uint8_t secret[SIM_SECRET_LEN];
    uint64_t start_ms;          /* first sync; edges join staggered */
    int state;
    uint64_t t_coord, t_due;    /* coordinator time; answer or failure */
    uint8_t *req;
    size_t req_len;
    uint8_t *resp;
    size_t resp_len;
    int status;                 /* HTTP status, -1 network error */
    uint64_t seq;               /* of the batch in flight */
    uint64_t *batch;            /* per key: admitted counts in it */
    bool *in_batch;             /* per key: in it (even with no counts) */
    int *batch_keys;            /* the keys in it, n_batch_keys of them */
    unsigned n_batch_keys;
};

/* One arrival stream. A fleet is one stream: n_keys clients with equal
 * Poisson rates are one Poisson stream of the summed rate whose every
 * arrival belongs to a client drawn uniformly. */
struct source {
    int key;
    unsigned n_keys;            /* keys key .. key + n_keys - 1 */
    double per_ms;              /* mean arrivals per simulated ms */
    double next;                /* next arrival, simulated ms */
    unsigned n_edges;
    double hot;
    uint64_t rng;
};

struct world {
    const struct sim_env *env;
    const struct sim_params *p;
    struct sim_result *r;
    struct edge_sim *edges;
    struct source src[3];
    size_t n_src;
    struct sim_http *http;
    uint64_t window_ms;
    unsigned n_keys;                  /* K_FLEET + clients */
    /* Per key (arrays of n_keys; [k][slot] ones are n_keys * N_SLOTS).
     * Admitted counts acknowledged, by the coordinator's window at the
     * time it applied them, index + 2 (the warm-up lies in window -1). */
    uint64_t (*acked)[N_SLOTS];
    uint64_t *acked_total;
    uint64_t *decided_total;          /* admitted by the edges, whole run */
    uint64_t *last_seen_ms;           /* last batch holding the key */
    uint64_t (*redis_a)[N_SLOTS];     /* read at window end */
    bool (*redis_read)[N_SLOTS];
    uint64_t (*admitted)[N_SLOTS];    /* decided Allow, by window slot */
    int redis_verdict;                /* 1 all match, 0 mismatch, -1 n/a */
    bool clock_far;                   /* Redis windows are not ours */
    uint64_t own_cmds;                /* our HGETALLs (not the coordinator's) */
    size_t detail_len;
    unsigned bad_status_logged;
};

/* ---------------------------------------------------------------- PRNG */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s)
{
    return (double)(splitmix64(s) >> 11) * 0x1.0p-53;
}

static double next_gap(struct source *s, bool poisson)
{
    if (!poisson)
        return 1.0 / s->per_ms;
    return -log(1.0 - uniform01(&s->rng)) / s->per_ms;
}

static unsigned pick_edge(struct source *s)
{
    if (s->hot > 0 && s->n_edges > 1) {
        if (uniform01(&s->rng) < s->hot)
            return 0;
        return 1 + (unsigned)(splitmix64(&s->rng) % (s->n_edges - 1));
    }
    return (unsigned)(splitmix64(&s->rng) % s->n_edges);
}

/* ---------------------------------------------------------------- helpers */

static void set_clock(const struct world *w, uint64_t t)
{
    __atomic_store_n(w->env->clock, t, __ATOMIC_RELEASE);
}

static long window_of(const struct world *w, uint64_t t)
{
    if (t < T0_MS)
        return -1;
    return (long)((t - T0_MS) / w->window_ms);
}

/* Slot of the window holding simulated time t in the per-window arrays
 * (the warm-up is window -1, slot 1). */
static long slot_of(const struct world *w, uint64_t t)
{
    long idx = (long)(t / w->window_ms) - (long)(T0_MS / w->window_ms) + 2;

    if (idx < 0)
        idx = 0;
    if (idx >= SIM_MAX_WINDOWS + 8)
        idx = SIM_MAX_WINDOWS + 7;
    return idx;
}

static uint64_t *acked_slot(struct world *w, int key, uint64_t t)
{
    return &w->acked[key][slot_of(w, t)];
}

static void key_name(int k, char *buf, size_t cap)
{
    unsigned f = (unsigned)(k - K_FLEET);

    if (k < K_FLEET)
        snprintf(buf, cap, "%s", KEY_IP[k]);
    else
        snprintf(buf, cap, "10.%u.%u.%u", f >> 16 & 255, f >> 8 & 255,
                 f & 255);
}

static int key_index(const struct world *w, const char *quota,
                     const char *key)
{
    unsigned long a, b, c;
    char *end;

    if (strcmp(quota, QUOTA_NAME) != 0)
        return -1;
    for (int k = 0; k < K_FLEET; k++)
        if (strcmp(key, KEY_IP[k]) == 0)
            return k;
    if (strncmp(key, "10.", 3) != 0)
        return -1;
    a = strtoul(key + 3, &end, 10);
    if (*end != '.')
        return -1;
    b = strtoul(end + 1, &end, 10);
    if (*end != '.')
        return -1;
    c = strtoul(end + 1, &end, 10);
    if (*end != '\0' || a > 255 || b > 255 || c > 255 ||
        K_FLEET + (a << 16 | b << 8 | c) >= w->n_keys)
        return -1;
    return (int)(K_FLEET + (a << 16 | b << 8 | c));
}

/* What the batch just frozen carries, for the acknowledged tallies. */
static void record_batch(const struct world *w, struct edge_sim *es)
{
    Tollgate__V1__SyncRequest *rq =
        tollgate__v1__sync_request__unpack(NULL, es->req_len, es->req);

    for (unsigned i = 0; i < es->n_batch_keys; i++) {
        es->batch[es->batch_keys[i]] = 0;
        es->in_batch[es->batch_keys[i]] = false;
    }
    es->n_batch_keys = 0;
    es->seq = 0;
    if (rq == NULL)
        return;
    es->seq = rq->seq;
    for (size_t i = 0; i < rq->n_counts; i++) {
        int k = key_index(w, rq->counts[i]->quota, rq->counts[i]->key);

        if (k >= 0) {
            if (!es->in_batch[k])
                es->batch_keys[es->n_batch_keys++] = k;
            es->batch[k] += rq->counts[i]->admitted;
            es->in_batch[k] = true;
        }
    }
    tollgate__v1__sync_request__free_unpacked(rq, NULL);
}

/* ---------------------------------------------------------------- steps */

/* The answer reaches the edge. What the coordinator applied was tallied
 * when it answered (post()); here only the edge's side is left. */
static void deliver(struct world *w, struct edge_sim *es, uint64_t t)
{
    struct sim_result *r = w->r;

    if (es->state == S_FAILING || es->status != 200) {
        if (es->state != S_FAILING)
            r->syncs_failed++;
        tg_sync_failed(es->e, t);
        es->state = S_IDLE;
        return;
    }
    if (tg_sync_response(es->e, t, es->resp, es->resp_len) < 0) {
        r->sync_rejected++;
        tg_sync_failed(es->e, t);
    }
    es->state = S_IDLE;
}

/* A non-degraded answer acknowledging the batch's seq means the
 * coordinator applied the batch at simulated time t. */
static void tally_applied(struct world *w, struct edge_sim *es, uint64_t t)
{
    Tollgate__V1__SyncResponse *rs =
        tollgate__v1__sync_response__unpack(NULL, es->resp_len, es->resp);

    if (rs == NULL)
        return;
    if (rs->degraded)
        w->r->syncs_degraded++;
    else if (rs->acked_seq == es->seq && es->seq != 0)
        for (unsigned i = 0; i < es->n_batch_keys; i++) {
            int k = es->batch_keys[i];

            *acked_slot(w, k, t) += es->batch[k];
            w->acked_total[k] += es->batch[k];
            w->last_seen_ms[k] = t;
        }
    tollgate__v1__sync_response__free_unpacked(rs, NULL);
}

static void post(struct world *w, struct edge_sim *es, uint64_t t)
{
    es->status = sim_http_sync(w->http, es->id, es->secret, sizeof es->secret,
                               t, es->req, es->req_len, es->resp, RESP_CAP,
                               &es->resp_len, HTTP_TIMEOUT);
    if (es->status != 200 && w->bad_status_logged < 3) {
        w->bad_status_logged++;
        sim_progress("%s: sync of %s answered %d%s", w->p->name, es->id,
                     es->status, es->status < 0 ? " (network error)" : "");
    }
    if (es->status == 200)
        tally_applied(w, es, t);
    es->state = S_POSTED;
}

static void request(struct world *w, struct edge_sim *es, int key, uint64_t t)
{
    tg_request rq = {0};
    tg_decision d;
    struct sim_counts *c = NULL;
    long wi = window_of(w, t);
    char ip[24];

    key_name(key, ip, sizeof ip);
    rq.method = (tg_str){"GET", 3};
    rq.path = (tg_str){"/api/items", 10};
    rq.host = (tg_str){"shop.example", 12};
    rq.client_ip = (tg_str){ip, strlen(ip)};
    rq.now_ms = t;
    tg_verify(es->e, &rq, &d);
    w->r->decisions_total++;
    if (d.kind == TG_ALLOW)
        w->decided_total[key]++;
    if (wi < 0 || wi >= (long)w->p->windows)
        return;
    w->r->decisions++;
    c = key == K_ATTACKER ? &w->r->w[wi].attacker : &w->r->w[wi].legit;
    c->attempts++;
    if (d.kind == TG_ALLOW) {
        c->admitted++;
        w->admitted[key][slot_of(w, t)]++;
    }
    else if (d.kind == TG_CHALLENGE)
        c->challenged++;
    else
        c->denied++;
}

static bool outage_at(const struct sim_params *p, uint64_t t, uint64_t start)
{
    return p->outage != SIM_OUTAGE_NONE && t >= start &&
           t < start + p->outage_ms;
}

/* ---------------------------------------------------------------- Redis */

struct redis_snap {
    uint64_t commands, roundtrips, executed, evals, own;
};

static void snapshot(const struct world *w, struct redis_snap *s)
{
    static char info[65536];
    const char *args[] = {"INFO", "all", NULL};

    sim_proxy_counts(&s->commands, &s->roundtrips);
    s->own = w->own_cmds;
    s->executed = s->evals = 0;
    if (sim_redis_cmd(w->env->redis_port, info, sizeof info, args) == 0) {
        s->executed = sim_info_field(info, "total_commands_processed");
        s->evals = sim_info_cmdstat_calls(info, "evalsha") +
                   sim_info_cmdstat_calls(info, "eval");
    }
}

static void detail(struct world *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void detail(struct world *w, const char *fmt, ...)
{
    char *buf = w->r->check_detail;
    size_t cap = sizeof w->r->check_detail;
    va_list ap;

    if (w->detail_len >= cap - 1)
        return;
    va_start(ap, fmt);
    w->detail_len += (size_t)vsnprintf(buf + w->detail_len,
                                       cap - w->detail_len, fmt, ap);
    va_end(ap);
    if (w->detail_len > cap - 1)
        w->detail_len = cap - 1;
}

/* The fields w and a of the key's count hash (data model in
 * coordinator/sync.lua). Returns 0, or -1 when Redis does not answer or
 * the layout moved. */
static int redis_window(struct world *w, int k, long long *win, long long *a)
{
    char reply[256], key[128], ip[24];
    const char *args[] = {"HMGET", key, "w", "a", NULL};
    long long *out[2] = {win, a};
    char *p;

    *win = *a = -1;
    key_name(k, ip, sizeof ip);
    snprintf(key, sizeof key, "tg:{%s|%s}:c", QUOTA_NAME, ip);
    w->own_cmds++;
    if (sim_redis_cmd(w->env->redis_port, reply, sizeof reply, args) < 0 ||
        strncmp(reply, "*2\r\n", 4) != 0)
        return -1;
    /* "*2", then "$len" value (or "$-1" for a missing field) for each. */
    p = reply + 4;
    for (int f = 0; f < 2 && p != NULL && *p == '$'; f++) {
        char *nl = strchr(p, '\n');

        if (nl == NULL)
            return -1;
        if (p[1] != '-') {
            *out[f] = strtoll(nl + 1, NULL, 10);
            nl = strchr(nl + 1, '\n');
        }
        p = nl != NULL ? nl + 1 : NULL;
    }
    return *win >= 0 && *a >= 0 ? 0 : -1;
}

/* Called when the simulated clock has just left the window holding t_prev
 * and before anything reached the coordinator in the new one: Redis then
 * still holds that window, and its admitted count must equal what the
 * coordinator acknowledged in it. A key no batch mentioned in that window
 * is left alone (its hash was not rotated). */
static void check_window(struct world *w, uint64_t t_prev)
{
    uint64_t win = t_prev / w->window_ms;
    long slot = slot_of(w, t_prev);

    for (int k = 0; k < (int)w->n_keys; k++) {
        long long rw, ra;
        char ip[24];

        if (w->last_seen_ms[k] == 0 || w->last_seen_ms[k] / w->window_ms != win)
            continue;
        key_name(k, ip, sizeof ip);
        if (redis_window(w, k, &rw, &ra) < 0) {
            if (w->redis_verdict == 1) {
                w->redis_verdict = -1;
                detail(w, " %s: no w/a in Redis (layout moved?);", ip);
            }
            continue;
        }
        if (rw + 2 < (long long)win || rw > (long long)win + 2) {
            w->clock_far = true;
            w->redis_verdict = -1;
            continue;
        }
        w->redis_a[k][slot] = (uint64_t)ra;
        w->redis_read[k][slot] = true;
        if ((uint64_t)rw != win || (uint64_t)ra != w->acked[k][slot]) {
            w->redis_verdict = 0;
            detail(w, " %s window %+ld: Redis w=%lld a=%lld, acked %llu "
                   "MISMATCH;", ip, slot - 2, rw, ra,
                   (unsigned long long)w->acked[k][slot]);
        }
    }
}

/* ---------------------------------------------------------------- setup */

static int setup(struct world *w)
{
    const struct sim_params *p = w->p;
    uint64_t seed = p->seed;

    w->n_keys = K_FLEET + p->clients;
    w->edges = calloc(p->edges, sizeof *w->edges);
    w->acked = calloc(w->n_keys, sizeof *w->acked);
    w->acked_total = calloc(w->n_keys, sizeof *w->acked_total);
    w->decided_total = calloc(w->n_keys, sizeof *w->decided_total);
    w->last_seen_ms = calloc(w->n_keys, sizeof *w->last_seen_ms);
    w->redis_a = calloc(w->n_keys, sizeof *w->redis_a);
    w->redis_read = calloc(w->n_keys, sizeof *w->redis_read);
    w->admitted = calloc(w->n_keys, sizeof *w->admitted);
    if (w->edges == NULL || w->acked == NULL || w->acked_total == NULL ||
        w->decided_total == NULL || w->last_seen_ms == NULL ||
        w->redis_a == NULL || w->redis_read == NULL || w->admitted == NULL)
        return -1;
    for (unsigned i = 0; i < p->edges; i++) {
        struct edge_sim *es = &w->edges[i];
        tg_config cfg = {0};
        size_t size;

        snprintf(es->id, sizeof es->id, "sim-%u/1", i);
        cfg.edge_id = (tg_str){es->id, strlen(es->id)};
        cfg.max_keys = 2 * w->n_keys > MIN_TABLE ? 2 * w->n_keys : MIN_TABLE;
        cfg.sync_interval_ms = p->interval_ms;
        for (size_t b = 0; b < sizeof cfg.seed; b++)
            cfg.seed[b] = (uint8_t)splitmix64(&seed);
        size = tg_edge_size(&cfg);
        es->mem = aligned_alloc(8, (size + 7) & ~(size_t)7);
        es->req = malloc(REQ_CAP);
        es->resp = malloc(RESP_CAP);
        es->batch = calloc(w->n_keys, sizeof *es->batch);
        es->in_batch = calloc(w->n_keys, sizeof *es->in_batch);
        es->batch_keys = calloc(w->n_keys, sizeof *es->batch_keys);
        if (es->mem == NULL || es->req == NULL || es->resp == NULL ||
            es->batch == NULL || es->in_batch == NULL ||
            es->batch_keys == NULL ||
            tg_edge_init(es->mem, size, &cfg, &es->e) != 0)
            return -1;
        sim_edge_secret(p->seed, i, es->secret);
        /* Edges join spread over one interval, as real ones would be. */
        es->start_ms = T0_MS - p->interval_ms - 2000 +
                       (uint64_t)i * p->interval_ms / p->edges;
    }
    w->n_src = 0;
    if (p->attack_x > 0)
        w->src[w->n_src++] = (struct source){
            .key = K_ATTACKER, .n_keys = 1, .n_edges = p->edges,
            .hot = p->hot_share,
            .per_ms = p->attack_x * (double)p->limit / (double)w->window_ms};
    if (p->legit_x > 0)
        w->src[w->n_src++] = (struct source){
            .key = K_LEGIT, .n_keys = 1,
            .n_edges = p->legit_edges ? p->legit_edges : p->edges,
            .per_ms = p->legit_x * (double)p->limit / (double)w->window_ms};
    if (p->clients > 0)
        w->src[w->n_src++] = (struct source){
            .key = K_FLEET, .n_keys = p->clients, .n_edges = p->edges,
            .per_ms = p->client_x * (double)p->limit * p->clients /
                      (double)w->window_ms};
    for (size_t s = 0; s < w->n_src; s++) {
        w->src[s].rng = p->seed * 1000003u + (uint64_t)w->src[s].key + 1;
        w->src[s].next = (double)T0_MS + next_gap(&w->src[s], p->poisson);
    }
    return 0;
}

static void teardown(struct world *w)
{
    for (unsigned i = 0; w->edges != NULL && i < w->p->edges; i++) {
        free(w->edges[i].mem);
        free(w->edges[i].req);
        free(w->edges[i].resp);
        free(w->edges[i].batch);
        free(w->edges[i].in_batch);
        free(w->edges[i].batch_keys);
    }
    free(w->edges);
    free(w->acked);
    free(w->acked_total);
    free(w->decided_total);
    free(w->last_seen_ms);
    free(w->redis_a);
    free(w->redis_read);
    free(w->admitted);
    sim_http_close(w->http);
}

static bool all_acked(const struct world *w)
{
    for (unsigned k = 0; k < w->n_keys; k++)
        if (w->acked_total[k] != w->decided_total[k])
            return false;
    return true;
}

/* ---------------------------------------------------------------- the run */

int sim_run(const struct sim_env *env, const struct sim_params *p,
            struct sim_result *out)
{
    struct world w = {.env = env, .p = p, .r = out};
    struct redis_snap s0 = {0}, s1 = {0};
    uint64_t t, end_ms, drain_end, outage_start, steps = 0;
    double real0 = sim_real_now_s(), next_progress = real0 + PROGRESS_S;
    bool stopped = false, snapped = false, paused = false;
    int rc = -1;

    memset(out, 0, sizeof *out);
    out->p = *p;
    out->legit_admitted_pct = -1;
    out->check_redis = -1;
    w.redis_verdict = 1;
    w.window_ms = (uint64_t)p->window_s * 1000u;
    if (p->windows == 0 || p->windows > SIM_MAX_WINDOWS || p->edges == 0 ||
        p->edges > SIM_MAX_EDGES || p->step_ms == 0) {
        sim_progress("%s: bad parameters", p->name);
        return -1;
    }
    w.http = sim_http_open(env->coord_port);
    if (w.http == NULL || setup(&w) < 0) {
        sim_progress("%s: out of memory", p->name);
        goto done;
    }
    end_ms = T0_MS + p->windows * w.window_ms;
    drain_end = end_ms + DRAIN_CAP_MS;
    outage_start = T0_MS + (end_ms - T0_MS) / 2 - p->outage_ms / 2;
    for (unsigned i = 0; i < p->windows; i++)
        out->w[i].start_ms = T0_MS + i * w.window_ms;

    for (t = T0_MS - p->interval_ms - 2000; t < drain_end; t += p->step_ms) {
        double now_real;

        set_clock(&w, t);
        if (steps > 0 && t / w.window_ms != (t - p->step_ms) / w.window_ms)
            check_window(&w, t - p->step_ms);
        if (!snapped && t >= T0_MS) {
            for (unsigned i = 0; i < p->edges; i++)
                if (tg_policy_version(w.edges[i].e) == 0)
                    sim_progress("%s: edge %u has no policy at the start",
                                 p->name, i);
            snapshot(&w, &s0);
            snapped = true;
        }
        if (t >= end_ms && !stopped) {
            snapshot(&w, &s1);
            stopped = true;
            out->n_windows = p->windows;
        }
        if (stopped && all_acked(&w))
            break;
        if (p->outage == SIM_OUTAGE_REDIS && env->redis_pid > 0) {
            bool want = outage_at(p, t, outage_start);

            if (want != paused) {
                kill(env->redis_pid, want ? SIGSTOP : SIGCONT);
                paused = want;
            }
        }

        for (unsigned i = 0; i < p->edges; i++) {
            struct edge_sim *es = &w.edges[i];

            if ((es->state == S_POSTED || es->state == S_FAILING) &&
                es->t_due <= t)
                deliver(&w, es, t);
        }
        for (unsigned i = 0; i < p->edges; i++) {
            struct edge_sim *es = &w.edges[i];

            if (es->state == S_SENT && es->t_coord <= t)
                post(&w, es, t);
        }
        if (!stopped) {
            for (size_t s = 0; s < w.n_src; s++) {
                struct source *src = &w.src[s];

                while (src->next < (double)(t + p->step_ms)) {
                    uint64_t at = (uint64_t)src->next;
                    int key = src->key;

                    if (src->n_keys > 1)
                        key += (int)(splitmix64(&src->rng) % src->n_keys);
                    request(&w, &w.edges[pick_edge(src)], key,
                            at < t ? t : at);
                    src->next += next_gap(src, p->poisson);
                }
            }
        }
        for (unsigned i = 0; i < p->edges; i++) {
            struct edge_sim *es = &w.edges[i];
            long n;

            if (es->state != S_IDLE || t < es->start_ms ||
                !tg_sync_due(es->e, t))
                continue;
            n = tg_sync_request(es->e, t, es->req, REQ_CAP);
            if (n < 0) {
                sim_progress("%s: tg_sync_request on %s: %ld", p->name,
                             es->id, n);
                goto done;
            }
            es->req_len = (size_t)n;
            record_batch(&w, es);
            if (t >= T0_MS && t < end_ms) {
                out->syncs++;
                out->keys_in_batch += es->n_batch_keys;
            }
            if (p->outage == SIM_OUTAGE_NETWORK &&
                outage_at(p, t, outage_start)) {
                es->state = S_FAILING;
                es->t_due = t + p->timeout_ms;
                out->syncs_failed++;
            } else {
                es->state = S_SENT;
                es->t_coord = t + p->rtt_ms / 2;
                es->t_due = t + p->rtt_ms;
            }
        }

        steps++;
        now_real = sim_real_now_s();
        if (now_real >= next_progress) {
            long wi = window_of(&w, t);

            sim_progress("%s: t=%+.1fs (%s), %llu decisions, %llu syncs, "
                         "real %.1fs", p->name,
                         ((double)t - (double)T0_MS) / 1000.0,
                         stopped ? "drain" : wi < 0 ? "warm-up" : "measuring",
                         (unsigned long long)out->decisions_total,
                         (unsigned long long)out->syncs, now_real - real0);
            next_progress = now_real + PROGRESS_S;
        }
        if (now_real - real0 > p->wall_cap_s || steps >= p->step_cap) {
            snprintf(out->truncated_why, sizeof out->truncated_why,
                     "%s cap at simulated %+.1f s",
                     steps >= p->step_cap ? "step" : "wall-clock",
                     ((double)t - (double)T0_MS) / 1000.0);
            out->truncated = true;
            break;
        }
    }
    if (paused)
        kill(env->redis_pid, SIGCONT);
    if (!stopped) {
        long wi = window_of(&w, t);

        out->n_windows = wi < 0 ? 0 : (unsigned)wi;
        if (snapped)
            snapshot(&w, &s1);
    }
    if (!out->truncated && !all_acked(&w)) {
        snprintf(out->truncated_why, sizeof out->truncated_why,
                 "drain did not finish in %d simulated s", DRAIN_CAP_MS / 1000);
    }

    /* Figures over the completed windows. */
    {
        uint64_t la = 0, lt = 0;
        double worst = 0, steady = -1;
        uint64_t span_ms = (uint64_t)out->n_windows * w.window_ms;

        for (unsigned i = 0; i < out->n_windows; i++) {
            struct sim_window *win = &out->w[i];
            double o;

            win->acked_attacker = *acked_slot(&w, K_ATTACKER, win->start_ms);
            win->acked_legit = *acked_slot(&w, K_LEGIT, win->start_ms);
            win->redis_attacker =
                w.redis_read[K_ATTACKER][slot_of(&w, win->start_ms)]
                    ? (int64_t)w.redis_a[K_ATTACKER][slot_of(&w, win->start_ms)]
                    : -1;
            win->redis_legit =
                w.redis_read[K_LEGIT][slot_of(&w, win->start_ms)]
                    ? (int64_t)w.redis_a[K_LEGIT][slot_of(&w, win->start_ms)]
                    : -1;
            /* The key that admitted most: the attacker, the legit client
             * or, with a fleet, its busiest client in the window. */
            {
                long sl = slot_of(&w, win->start_ms);

                for (unsigned k = 0; k < w.n_keys; k++)
                    if (w.admitted[k][sl] > win->worst_admitted)
                        win->worst_admitted = w.admitted[k][sl];
            }
            o = (double)win->worst_admitted / (double)p->limit - 1.0;
            if (o < 0)
                o = 0;
            if (o > worst)
                worst = o;
            if (i > 0 && o > steady)
                steady = o;
            la += win->legit.admitted;
            lt += win->legit.attempts;
        }
        out->worst_overshoot_pct = worst * 100.0;
        out->steady_overshoot_pct = steady < 0 ? -1 : steady * 100.0;
        if (lt > 0)
            out->legit_admitted_pct = 100.0 * (double)la / (double)lt;
        if (span_ms > 0)
            out->syncs_per_edge_s = (double)out->syncs / p->edges /
                                    ((double)span_ms / 1000.0);
        out->redis_commands = s1.commands - s0.commands;
        out->redis_roundtrips = s1.roundtrips - s0.roundtrips;
        /* Ours are not the coordinator's: the first INFO is counted in
         * the second's total (the second not yet), and the HGETALLs of the
         * window checks in between. */
        out->redis_executed = s1.executed > s0.executed + 1 + (s1.own - s0.own)
                                  ? s1.executed - s0.executed - 1 -
                                        (s1.own - s0.own)
                                  : 0;
        out->redis_evalsha = s1.evals - s0.evals;
    }

    /* The window the run ended in, then the summary line. */
    check_window(&w, t);
    out->check_edges_ok = all_acked(&w);
    out->check_redis = w.redis_verdict;
    out->clock_followed = !w.clock_far;
    {
        char tail[sizeof out->check_detail];
        uint64_t fd = 0, fa = 0;

        for (unsigned k = K_FLEET; k < w.n_keys; k++) {
            fd += w.decided_total[k];
            fa += w.acked_total[k];
        }
        memcpy(tail, out->check_detail, sizeof tail);
        snprintf(out->check_detail, sizeof out->check_detail,
                 "edges decided %llu+%llu+%llu (attacker+legit+fleet) "
                 "admitted, coordinator acked %llu+%llu+%llu; Redis %s%.250s",
                 (unsigned long long)w.decided_total[K_ATTACKER],
                 (unsigned long long)w.decided_total[K_LEGIT],
                 (unsigned long long)fd,
                 (unsigned long long)w.acked_total[K_ATTACKER],
                 (unsigned long long)w.acked_total[K_LEGIT],
                 (unsigned long long)fa,
                 w.clock_far ? "windows follow another clock than the "
                               "coordinator's (sync.lua on Redis TIME?)"
                 : w.redis_verdict == 1 ? "a = acked in every window"
                 : w.redis_verdict == 0 ? "differs:" : "not compared:",
                 tail);
    }
    rc = 0;
done:
    out->real_s = sim_real_now_s() - real0;
    teardown(&w);
    return rc;
}
