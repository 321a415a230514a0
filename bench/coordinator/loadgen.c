/* loadgen.c — build/bench-loadgen: load for the coordinator benchmark
 * (bench/coordinator/measure.mjs).
 *
 * N threads, each one edge ("<edge>/<i>") on its own keep-alive
 * connection, POST /v1/sync batches of --batch distinct keys drawn
 * uniformly from a keyspace of --keys keys of one quota, signed the way an
 * edge signs them (bench/sim/http.c, linked as is), with a seq that
 * increases per request from --seq-base.
 *
 *   closed loop (no --rate): each thread sends its next request as soon as
 *     the previous answer is in; latency is send -> answer.
 *   open loop (--rate R, requests/s over all threads): request k of thread
 *     i is due at start + (i + k * N) / R; latency runs from that scheduled
 *     time, not from when it was actually sent, so a slow answer that
 *     delays the requests behind it is counted against them too (no
 *     coordinated omission).
 *
 * Bounded twice: each thread stops after --duration-ms or its share of
 * --max-requests, whichever comes first (and every exchange has a
 * --timeout-ms). An answer counts as ok only when it is 200, not degraded,
 * acknowledges the request's seq and carries one state per key; its keys
 * then count as key updates. Everything else is an error by kind.
 *
 * Prints one JSON object on stdout: requests, ok, key updates, rates over
 * the measured time, errors by kind, latency percentiles in ms, and
 * seq_next (the --seq-base for a next run with the same edge ids).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "sim.h"
#include "tollgate.pb-c.h"

#define MAX_CONNS   64
#define MAX_BATCH   1000
#define KEY_LEN     16
#define REQ_CAP     (256 * 1024)
#define RESP_CAP    (256 * 1024)

struct opts {
    int port;
    const char *edge;
    uint8_t secret[256];
    size_t secret_len;
    unsigned conns;
    unsigned batch;
    unsigned keys;
    const char *quota;
    uint64_t duration_ms;
    uint64_t max_requests;
    double rate;                /* 0: closed loop */
    uint64_t seq_base;
    uint64_t policy_version;
    uint64_t seed;
    int timeout_ms;
};

enum err_kind { E_NETWORK, E_STATUS_4XX, E_STATUS_5XX, E_STATUS_OTHER,
                E_DEGRADED, E_BAD_ANSWER, E_BUILD, E_KINDS };
static const char *const err_names[E_KINDS] = {
    "network", "status_4xx", "status_5xx", "status_other", "degraded",
    "bad_answer", "build",
};

struct worker {
    const struct opts *o;
    unsigned idx;
    pthread_t th;
    uint64_t start_ns;          /* shared start, CLOCK_MONOTONIC */
    uint64_t quota_req;         /* this thread's share of max_requests */
    /* results */
    uint64_t sent, ok, key_updates, late;
    uint64_t errors[E_KINDS];
    int first_bad_status;
    uint64_t end_ns;
    double *lat_ms;             /* one per request sent */
    uint64_t n_lat;
};

static uint64_t mono_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static uint64_t wall_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000ull + (uint64_t)t.tv_nsec / 1000000ull;
}

static void sleep_until_ns(uint64_t ns)
{
    struct timespec t = {(time_t)(ns / 1000000000ull),
                         (long)(ns % 1000000000ull)};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
        ;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* The top level of a SyncResponse: acked_seq (1), states (3, counted),
 * degraded (4). Returns 0, or -1 when the bytes do not parse. */
static int scan_answer(const uint8_t *p, size_t len, uint64_t *acked,
                       size_t *n_states, bool *degraded)
{
    size_t i = 0;

    *acked = 0;
    *n_states = 0;
    *degraded = false;
    while (i < len) {
        uint64_t key = 0, v = 0;
        unsigned shift;

        for (shift = 0; i < len && shift < 64; shift += 7) {
            key |= (uint64_t)(p[i] & 0x7f) << shift;
            if (!(p[i++] & 0x80))
                break;
        }
        if (shift >= 64 || (i == len && (p[i - 1] & 0x80)))
            return -1;
        switch (key & 7) {
        case 0:
        case 2:
            for (shift = 0;; shift += 7) {
                if (i >= len || shift >= 64)
                    return -1;
                v |= (uint64_t)(p[i] & 0x7f) << shift;
                if (!(p[i++] & 0x80))
                    break;
            }
            if ((key & 7) == 2) {
                if (v > len - i)
                    return -1;
                i += (size_t)v;
                if (key >> 3 == 3)
                    (*n_states)++;
            } else if (key >> 3 == 1) {
                *acked = v;
            } else if (key >> 3 == 4) {
                *degraded = v != 0;
            }
            break;
        case 1:
            if (len - i < 8)
                return -1;
            i += 8;
            break;
        case 5:
            if (len - i < 4)
                return -1;
            i += 4;
            break;
        default:
            return -1;
        }
    }
    return 0;
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    const struct opts *o = w->o;
    struct sim_http *h = sim_http_open(o->port);
    Tollgate__V1__SyncRequest req = TOLLGATE__V1__SYNC_REQUEST__INIT;
    Tollgate__V1__KeyCount *kcs = calloc(o->batch, sizeof *kcs);
    Tollgate__V1__KeyCount **kcp = calloc(o->batch, sizeof *kcp);
    char (*names)[KEY_LEN] = calloc(o->batch, KEY_LEN);
    unsigned *picked = calloc(o->batch, sizeof *picked);
    uint8_t *body = malloc(REQ_CAP), *resp = malloc(RESP_CAP);
    char edge_id[80];
    uint64_t rng = o->seed * 0x9E3779B97F4A7C15ull + w->idx + 1;
    uint64_t end_ns = w->start_ns + o->duration_ms * 1000000ull;
    double period_ns = o->rate > 0 ? 1e9 * o->conns / o->rate : 0;

    w->lat_ms = calloc(w->quota_req ? w->quota_req : 1, sizeof *w->lat_ms);
    if (h == NULL || kcs == NULL || kcp == NULL || names == NULL ||
        picked == NULL || body == NULL || resp == NULL || w->lat_ms == NULL) {
        w->errors[E_BUILD]++;
        goto out;
    }
    snprintf(edge_id, sizeof edge_id, "%s/%u", o->edge, w->idx);
    req.edge_id = edge_id;
    req.policy_version = o->policy_version;
    req.module_version = "bench-loadgen";
    req.n_counts = o->batch;
    req.counts = kcp;
    for (unsigned i = 0; i < o->batch; i++) {
        Tollgate__V1__KeyCount init = TOLLGATE__V1__KEY_COUNT__INIT;

        kcs[i] = init;
        kcs[i].quota = (char *)o->quota;
        kcs[i].key = names[i];
        kcp[i] = &kcs[i];
    }
    for (uint64_t k = 0; k < w->quota_req; k++) {
        uint64_t due = 0, t_send, t_done, acked;
        size_t len, resp_len = 0, n_states;
        bool degraded;
        int status;

        if (period_ns > 0) {
            /* Interleaved schedule: thread i's k-th request. */
            due = w->start_ns + (uint64_t)(((double)w->idx / o->conns +
                                            (double)k) * period_ns);
            if (due >= end_ns)
                break;
            if (mono_ns() < due)
                sleep_until_ns(due);
        }
        t_send = mono_ns();
        if (t_send >= end_ns)
            break;
        if (period_ns > 0 && t_send > due + 1000000ull)
            w->late++;
        /* distinct keys, admitted 1..4 each */
        for (unsigned i = 0; i < o->batch; i++) {
            unsigned r;
            bool dup;

            do {
                r = (unsigned)(xorshift(&rng) % o->keys);
                dup = false;
                for (unsigned j = 0; j < i && !dup; j++)
                    dup = picked[j] == r;
            } while (dup);
            picked[i] = r;
            snprintf(names[i], KEY_LEN, "k%07u", r);
            kcs[i].admitted = 1 + xorshift(&rng) % 4;
        }
        req.seq = o->seq_base + k;
        req.sent_at_ms = wall_ms();
        len = tollgate__v1__sync_request__get_packed_size(&req);
        if (len > REQ_CAP) {
            w->errors[E_BUILD]++;
            break;
        }
        tollgate__v1__sync_request__pack(&req, body);
        w->sent++;
        status = sim_http_sync(h, edge_id, o->secret, o->secret_len,
                               wall_ms(), body, len, resp, RESP_CAP,
                               &resp_len, o->timeout_ms);
        t_done = mono_ns();
        w->lat_ms[w->n_lat++] =
            (double)(t_done - (period_ns > 0 ? due : t_send)) / 1e6;
        if (status != 200) {
            if (w->first_bad_status == 0)
                w->first_bad_status = status;
            w->errors[status < 0 ? E_NETWORK
                      : status >= 400 && status < 500 ? E_STATUS_4XX
                      : status >= 500 && status < 600 ? E_STATUS_5XX
                      : E_STATUS_OTHER]++;
            continue;
        }
        if (scan_answer(resp, resp_len, &acked, &n_states, &degraded) < 0 ||
            acked != req.seq || n_states != o->batch) {
            w->errors[degraded ? E_DEGRADED : E_BAD_ANSWER]++;
            continue;
        }
        if (degraded) {
            w->errors[E_DEGRADED]++;
            continue;
        }
        w->ok++;
        w->key_updates += o->batch;
    }
out:
    w->end_ns = mono_ns();
    sim_http_close(h);
    free(kcs);
    free(kcp);
    free(names);
    free(picked);
    free(body);
    free(resp);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted xs[0..n). */
static double pct(const double *xs, uint64_t n, double p)
{
    uint64_t r;

    if (n == 0)
        return NAN;
    r = (uint64_t)ceil(p / 100.0 * (double)n);
    return xs[r == 0 ? 0 : r - 1];
}

/* ",\"name\":x" for a JSON object; null for NaN (nothing measured). */
static void jnum(const char *name, double x)
{
    if (isnan(x))
        printf(",\"%s\":null", name);
    else
        printf(",\"%s\":%.4f", name, x);
}

static int hex_secret(const char *s, struct opts *o)
{
    size_t n = strlen(s);

    if (n == 0 || n % 2 || n / 2 > sizeof o->secret)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;

        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -1;
        o->secret[i] = (uint8_t)v;
    }
    o->secret_len = n / 2;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: bench-loadgen --port P --secret HEX [options]\n"
        "  --edge NAME          edge name; thread i is edge NAME/i (bench)\n"
        "  --connections N      threads, one keep-alive connection each (4)\n"
        "  --batch N            distinct keys per sync (100)\n"
        "  --keys N             keyspace size (100000)\n"
        "  --quota NAME         the quota of every key (bench)\n"
        "  --duration-ms MS     stop sending after (5000)\n"
        "  --max-requests N     and after this many, over all threads (200000)\n"
        "  --rate R             open loop at R requests/s in all (default:\n"
        "                       closed loop, back to back)\n"
        "  --seq-base S         first seq of every edge (1)\n"
        "  --policy-version V   the version the edges claim to enforce (0)\n"
        "  --seed S             key draws (1)\n"
        "  --timeout-ms MS      per exchange (5000)\n");
}

int main(int argc, char **argv)
{
    struct opts o = {
        .edge = "bench", .conns = 4, .batch = 100, .keys = 100000,
        .quota = "bench", .duration_ms = 5000, .max_requests = 200000,
        .seq_base = 1, .seed = 1, .timeout_ms = 5000,
    };
    struct worker *ws;
    uint64_t start, sent = 0, ok = 0, upd = 0, late = 0, n_lat = 0, end = 0;
    uint64_t errors[E_KINDS] = {0};
    uint64_t max_sent = 0;
    int first_bad = 0;
    double *all, elapsed_s, sum = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--port") == 0) o.port = atoi(v);
        else if (strcmp(a, "--secret") == 0) {
            if (hex_secret(v, &o) < 0) {
                fprintf(stderr, "bench-loadgen: --secret: hex bytes\n");
                return 2;
            }
        }
        else if (strcmp(a, "--edge") == 0) o.edge = v;
        else if (strcmp(a, "--connections") == 0) o.conns = (unsigned)atoi(v);
        else if (strcmp(a, "--batch") == 0) o.batch = (unsigned)atoi(v);
        else if (strcmp(a, "--keys") == 0) o.keys = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--quota") == 0) o.quota = v;
        else if (strcmp(a, "--duration-ms") == 0) o.duration_ms = strtoull(v, NULL, 10);
        else if (strcmp(a, "--max-requests") == 0) o.max_requests = strtoull(v, NULL, 10);
        else if (strcmp(a, "--rate") == 0) o.rate = strtod(v, NULL);
        else if (strcmp(a, "--seq-base") == 0) o.seq_base = strtoull(v, NULL, 10);
        else if (strcmp(a, "--policy-version") == 0) o.policy_version = strtoull(v, NULL, 10);
        else if (strcmp(a, "--seed") == 0) o.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--timeout-ms") == 0) o.timeout_ms = atoi(v);
        else {
            fprintf(stderr, "bench-loadgen: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o.port <= 0 || o.port > 65535 || o.secret_len == 0 ||
        o.conns < 1 || o.conns > MAX_CONNS || o.batch < 1 ||
        o.batch > MAX_BATCH || o.keys < o.batch || o.duration_ms == 0 ||
        o.duration_ms > 600000 || o.max_requests < o.conns ||
        o.max_requests > 10000000 || o.rate < 0 || o.timeout_ms <= 0 ||
        o.seq_base == 0) {
        fprintf(stderr, "bench-loadgen: bad or missing options "
                "(--port and --secret are required; 1 <= connections <= %d, "
                "1 <= batch <= %d <= keys, duration 1..600000 ms, "
                "max-requests >= connections)\n", MAX_CONNS, MAX_BATCH);
        return 2;
    }
    ws = calloc(o.conns, sizeof *ws);
    if (ws == NULL)
        return 1;
    start = mono_ns() + 20000000ull;   /* every thread is up by then */
    for (unsigned i = 0; i < o.conns; i++) {
        ws[i].o = &o;
        ws[i].idx = i;
        ws[i].start_ns = start;
        ws[i].quota_req = o.max_requests / o.conns +
                          (i < o.max_requests % o.conns);
    }
    for (unsigned i = 0; i < o.conns; i++)
        if (pthread_create(&ws[i].th, NULL, run_worker, &ws[i]) != 0) {
            fprintf(stderr, "bench-loadgen: pthread_create failed\n");
            return 1;
        }
    for (unsigned i = 0; i < o.conns; i++) {
        pthread_join(ws[i].th, NULL);
        sent += ws[i].sent;
        ok += ws[i].ok;
        upd += ws[i].key_updates;
        late += ws[i].late;
        n_lat += ws[i].n_lat;
        if (ws[i].end_ns > end)
            end = ws[i].end_ns;
        if (ws[i].sent > max_sent)
            max_sent = ws[i].sent;
        if (first_bad == 0)
            first_bad = ws[i].first_bad_status;
        for (int k = 0; k < E_KINDS; k++)
            errors[k] += ws[i].errors[k];
    }
    all = malloc((n_lat ? n_lat : 1) * sizeof *all);
    if (all == NULL)
        return 1;
    n_lat = 0;
    for (unsigned i = 0; i < o.conns; i++) {
        memcpy(all + n_lat, ws[i].lat_ms, ws[i].n_lat * sizeof *all);
        n_lat += ws[i].n_lat;
        free(ws[i].lat_ms);
    }
    qsort(all, n_lat, sizeof *all, cmp_double);
    for (uint64_t i = 0; i < n_lat; i++)
        sum += all[i];
    /* at least 1 ms: no division by zero when nothing could be sent */
    elapsed_s = end > start + 1000000ull ? (double)(end - start) / 1e9 : 1e-3;

    printf("{\"mode\":\"%s\",\"connections\":%u,\"batch\":%u,\"keys\":%u,"
           "\"target_rate\":%.3f,\"duration_ms\":%" PRIu64 ","
           "\"elapsed_s\":%.6f,\"sent\":%" PRIu64 ",\"ok\":%" PRIu64 ","
           "\"key_updates\":%" PRIu64 ",\"req_per_s\":%.3f,"
           "\"key_updates_per_s\":%.3f,\"late_sends\":%" PRIu64 ","
           "\"first_bad_status\":%d,\"errors\":{",
           o.rate > 0 ? "open" : "closed", o.conns, o.batch, o.keys, o.rate,
           o.duration_ms, elapsed_s, sent, ok, upd,
           (double)ok / elapsed_s, (double)upd / elapsed_s, late, first_bad);
    for (int k = 0; k < E_KINDS; k++)
        printf("%s\"%s\":%" PRIu64, k ? "," : "", err_names[k], errors[k]);
    printf("},\"latency_ms\":{\"n\":%" PRIu64, n_lat);
    jnum("mean", n_lat ? sum / (double)n_lat : NAN);
    jnum("p50", pct(all, n_lat, 50));
    jnum("p90", pct(all, n_lat, 90));
    jnum("p99", pct(all, n_lat, 99));
    jnum("p999", pct(all, n_lat, 99.9));
    jnum("max", n_lat ? all[n_lat - 1] : NAN);
    printf("},\"seq_next\":%" PRIu64 "}\n", o.seq_base + max_sent + 1);
    free(all);
    free(ws);
    return 0;
}
