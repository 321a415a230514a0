/* metrics.c — GET /metrics: Prometheus text exposition format 0.0.4.
 *
 * No auth, like /healthz: Prometheus scrapes it, and nothing in it names a
 * client key or an edge id (labels are quota names and fixed words only, so
 * cardinality is bounded by the policy). Every figure is this
 * coordinator's own; sum or max them across coordinators.
 *
 * Cost on the sync path: process-wide counters are relaxed atomics. Per
 * quota there is a slot in a table of at most CO_QUOTA_NAMES_SEEN names (open
 * addressing, names only ever added): a lookup is lock-free once the name
 * is in it; the mutex is taken to add a name, and for the overshoot gauge
 * only when a key beats the quota's maximum or its window turns. The
 * edge gauges are read from the edge table /v1/stats keeps (stats.c,
 * co_stats_edges_active()), so a sync updates one table, not two.
 */
#include <inttypes.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgated.h"

#define QUOTA_SLOTS  (2 * CO_QUOTA_NAMES_SEEN)   /* power of two */

struct co_metrics co_metrics;

const char *const co_sync_result_names[CO_SYNC_RESULTS] = {
    [CO_SYNC_RESULT_OK] = "ok",
    [CO_SYNC_RESULT_DEGRADED] = "degraded",
    [CO_SYNC_RESULT_BAD_REQUEST] = "bad_request",
    [CO_SYNC_RESULT_UNAUTHORIZED] = "unauthorized",
    [CO_SYNC_RESULT_CONFLICT] = "conflict",
    [CO_SYNC_RESULT_ERROR] = "error",
};

/* Upper bounds in microseconds and as printed (le). */
static const uint64_t bucket_us[CO_METRICS_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000,
};
static const char *const bucket_le[CO_METRICS_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1",
};

enum { OUT_ALLOWED, OUT_DENIED, OUT_CHALLENGED, OUT_SHADOW, OUTCOMES };
static const char *const outcome_names[OUTCOMES] = {
    "allowed", "denied", "challenged", "shadow",
};

struct quota_slot {
    atomic_bool ready;                 /* name is set (release/acquire) */
    char name[CO_QUOTA_NAME_MAX + 1];
    atomic_ullong decisions[OUTCOMES];
    /* overshoot: written under mu, read without it */
    atomic_ullong window_ms;
    atomic_ullong window_idx;
    atomic_ullong max_milli;           /* est/limit x 1e6, rounded up */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct quota_slot quotas[QUOTA_SLOTS];
static size_t n_quotas;                /* under mu */

/* The slot of quota name, added when new; NULL when the table is full
 * (more names than CO_QUOTA_NAMES_SEEN over the process's life) or the name is
 * too long. */
static struct quota_slot *quota_slot(const char *name)
{
    size_t len = strlen(name), start, i;

    if (len == 0 || len > CO_QUOTA_NAME_MAX)
        return NULL;
    start = (size_t)co_name_hash(name) & (QUOTA_SLOTS - 1);
    for (i = 0; i < QUOTA_SLOTS; i++) {
        struct quota_slot *s = &quotas[(start + i) & (QUOTA_SLOTS - 1)];

        if (!atomic_load_explicit(&s->ready, memory_order_acquire))
            break;
        if (strcmp(s->name, name) == 0)
            return s;
    }
    /* Not there: add it under the lock (another thread may have). */
    pthread_mutex_lock(&mu);
    for (i = 0; i < QUOTA_SLOTS; i++) {
        struct quota_slot *s = &quotas[(start + i) & (QUOTA_SLOTS - 1)];

        if (!atomic_load_explicit(&s->ready, memory_order_acquire)) {
            if (n_quotas >= CO_QUOTA_NAMES_SEEN)
                break;
            memcpy(s->name, name, len + 1);
            n_quotas++;
            atomic_store_explicit(&s->ready, true, memory_order_release);
            pthread_mutex_unlock(&mu);
            return s;
        }
        if (strcmp(s->name, name) == 0) {
            pthread_mutex_unlock(&mu);
            return s;
        }
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void add(atomic_ullong *c, uint64_t v)
{
    if (v != 0)
        atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

void co_metrics_sync_done(enum co_sync_result result, uint64_t dur_us)
{
    size_t b = 0;

    if ((unsigned)result >= CO_SYNC_RESULTS)
        result = CO_SYNC_RESULT_ERROR;
    add(&co_metrics.sync_requests[result], 1);
    while (b < CO_METRICS_BUCKETS && dur_us > bucket_us[b])
        b++;
    add(&co_metrics.sync_duration_buckets[b], 1);
    add(&co_metrics.sync_duration_sum_us, dur_us);
}


void co_metrics_decisions(const char *quota, bool shadow, uint64_t admitted,
                          uint64_t denied, uint64_t challenged)
{
    struct quota_slot *s = quota_slot(quota);

    if (s == NULL)
        return;
    if (shadow) {
        add(&s->decisions[OUT_SHADOW], admitted + denied + challenged);
        return;
    }
    add(&s->decisions[OUT_ALLOWED], admitted);
    add(&s->decisions[OUT_DENIED], denied);
    add(&s->decisions[OUT_CHALLENGED], challenged);
}

void co_metrics_overshoot(const char *quota, uint64_t window_ms,
                          uint64_t now_ms, uint64_t est, uint64_t limit)
{
    struct quota_slot *s;
    uint64_t idx, milli;

    if (window_ms == 0 || limit == 0)
        return;
    s = quota_slot(quota);
    if (s == NULL)
        return;
    idx = now_ms / window_ms;
    /* est <= ~1e16 (counts are capped at 1e12 per field, 1e4 per batch) */
    milli = (uint64_t)(((unsigned __int128)est * 1000000u + limit - 1) /
                       limit);
    if (atomic_load_explicit(&s->window_idx, memory_order_relaxed) == idx &&
        atomic_load_explicit(&s->window_ms, memory_order_relaxed) ==
            window_ms &&
        atomic_load_explicit(&s->max_milli, memory_order_relaxed) >= milli)
        return;
    pthread_mutex_lock(&mu);
    if (atomic_load_explicit(&s->window_idx, memory_order_relaxed) != idx ||
        atomic_load_explicit(&s->window_ms, memory_order_relaxed) !=
            window_ms) {
        atomic_store_explicit(&s->window_ms, window_ms, memory_order_relaxed);
        atomic_store_explicit(&s->window_idx, idx, memory_order_relaxed);
        atomic_store_explicit(&s->max_milli, milli, memory_order_relaxed);
    } else if (atomic_load_explicit(&s->max_milli, memory_order_relaxed) <
               milli) {
        atomic_store_explicit(&s->max_milli, milli, memory_order_relaxed);
    }
    pthread_mutex_unlock(&mu);
}

void co_metrics_reset(void)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < QUOTA_SLOTS; i++) {
        atomic_store(&quotas[i].ready, false);
        quotas[i].name[0] = '\0';
        for (size_t k = 0; k < OUTCOMES; k++)
            atomic_store(&quotas[i].decisions[k], 0);
        atomic_store(&quotas[i].window_ms, 0);
        atomic_store(&quotas[i].window_idx, 0);
        atomic_store(&quotas[i].max_milli, 0);
    }
    n_quotas = 0;
    for (size_t i = 0; i < CO_SYNC_RESULTS; i++)
        atomic_store(&co_metrics.sync_requests[i], 0);
    for (size_t i = 0; i <= CO_METRICS_BUCKETS; i++)
        atomic_store(&co_metrics.sync_duration_buckets[i], 0);
    atomic_store(&co_metrics.sync_duration_sum_us, 0);
    atomic_store(&co_metrics.challenges_issued, 0);
    atomic_store(&co_metrics.sent_at_clamped, 0);
    for (size_t i = 0; i < CO_REDIS_KINDS; i++)
        atomic_store(&co_metrics.redis_errors[i], 0);
    atomic_store(&co_metrics.redis_up, false);
    pthread_mutex_unlock(&mu);
}

/* ------------------------------------------------------------ rendering */
struct buf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void bprintf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void bprintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *p = realloc(b->p, cap);

        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void family(struct buf *b, const char *name, const char *type,
                   const char *help)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped. Quota names are
 * [A-Za-z0-9._-] by policy, so this is belt and braces. */
static const char *label_value(const char *s, char *out, size_t outlen)
{
    size_t k = 0;

    for (; *s != '\0' && k + 3 < outlen; s++) {
        if (*s == '\\' || *s == '"') {
            out[k++] = '\\';
            out[k++] = *s;
        } else if (*s == '\n') {
            out[k++] = '\\';
            out[k++] = 'n';
        } else {
            out[k++] = *s;
        }
    }
    out[k] = '\0';
    return out;
}

static uint64_t load(atomic_ullong *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* The hosted captcha verifier's series (siteverify.c): calls by result, the
 * internal-error retries and whether the provider gave a usable answer
 * last time (1 until a call says otherwise). */
static void render_captcha(struct buf *b)
{
    static const char *const results[CO_CAPTCHA_RESULTS] = {
        [CO_CAPTCHA_SOLVED] = "solved",
        [CO_CAPTCHA_REFUSED] = "refused",
        [CO_CAPTCHA_MISCONFIGURED] = "misconfigured",
        [CO_CAPTCHA_UNREACHABLE] = "unreachable",
    };

    family(b, "tollgate_captcha_verifications_total", "counter",
           "siteverify calls to the captcha provider, by result.");
    for (size_t i = 0; i < CO_CAPTCHA_RESULTS; i++)
        bprintf(b, "tollgate_captcha_verifications_total{result=\"%s\"} %"
                PRIu64 "\n", results[i], load(&co_metrics.captcha_calls[i]));
    family(b, "tollgate_captcha_retries_total", "counter",
           "siteverify calls repeated after internal-error (Turnstile, same "
           "idempotency_key).");
    bprintf(b, "tollgate_captcha_retries_total %" PRIu64 "\n",
            load(&co_metrics.captcha_retries));
    family(b, "tollgate_captcha_provider_up", "gauge",
           "0 when the last siteverify call got no usable answer (network, "
           "timeout, 5xx, garbage, our secret refused), else 1.");
    bprintf(b, "tollgate_captcha_provider_up %d\n",
            atomic_load_explicit(&co_metrics.captcha_down,
                                 memory_order_relaxed) ? 0 : 1);
}

int co_metrics_render(uint64_t now_ms, uint64_t policy_version, char **out,
                      size_t *len)
{
    struct buf b = {.p = malloc(8192), .cap = 8192};
    uint64_t cum = 0, active = 0, lag_ms = 0, refused = 0;
    char lv[2 * CO_QUOTA_NAME_MAX + 3];
    static const struct {
        const char *name;
        size_t off;
    } fails[] = {
        {"invalid", offsetof(struct co_metrics, challenges_failed_invalid)},
        {"expired", offsetof(struct co_metrics, challenges_failed_expired)},
        {"captcha_failed",
         offsetof(struct co_metrics, challenges_failed_captcha)},
        {"reused", offsetof(struct co_metrics, challenges_failed_reused)},
        {"unavailable",
         offsetof(struct co_metrics, challenges_failed_unavailable)},
    };

    if (b.p == NULL)
        return CO_ENOMEM;
    b.p[0] = '\0';

    family(&b, "tollgate_sync_requests_total", "counter",
           "POST /v1/sync requests answered by this coordinator, by result.");
    for (size_t i = 0; i < CO_SYNC_RESULTS; i++)
        bprintf(&b, "tollgate_sync_requests_total{result=\"%s\"} %" PRIu64
                "\n", co_sync_result_names[i],
                load(&co_metrics.sync_requests[i]));

    family(&b, "tollgate_sync_duration_seconds", "histogram",
           "Time to answer POST /v1/sync, auth to response, in seconds.");
    for (size_t i = 0; i < CO_METRICS_BUCKETS; i++) {
        cum += load(&co_metrics.sync_duration_buckets[i]);
        bprintf(&b, "tollgate_sync_duration_seconds_bucket{le=\"%s\"} %"
                PRIu64 "\n", bucket_le[i], cum);
    }
    cum += load(&co_metrics.sync_duration_buckets[CO_METRICS_BUCKETS]);
    bprintf(&b, "tollgate_sync_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64
            "\n", cum);
    {
        uint64_t us = load(&co_metrics.sync_duration_sum_us);

        bprintf(&b, "tollgate_sync_duration_seconds_sum %" PRIu64 ".%06"
                PRIu64 "\n", us / 1000000u, us % 1000000u);
    }
    bprintf(&b, "tollgate_sync_duration_seconds_count %" PRIu64 "\n", cum);

    family(&b, "tollgate_decisions_total", "counter",
           "Edge decisions reported in applied (not degraded, not retried) "
           "syncs, per quota: allowed, denied, challenged; a shadow "
           "quota's decisions (all three summed) count as shadow only.");
    for (size_t i = 0; i < QUOTA_SLOTS; i++) {
        struct quota_slot *s = &quotas[i];

        if (!atomic_load_explicit(&s->ready, memory_order_acquire))
            continue;
        label_value(s->name, lv, sizeof lv);
        for (size_t k = 0; k < OUTCOMES; k++)
            bprintf(&b, "tollgate_decisions_total{quota=\"%s\","
                    "outcome=\"%s\"} %" PRIu64 "\n", lv, outcome_names[k],
                    load(&s->decisions[k]));
    }
    family(&b, "tollgate_quota_overshoot_ratio", "gauge",
           "Largest est/limit measured by this coordinator in sync replies "
           "for any key of the quota during the quota's current window; "
           "resets when the window turns.");
    for (size_t i = 0; i < QUOTA_SLOTS; i++) {
        struct quota_slot *s = &quotas[i];
        uint64_t wms, m = 0;

        if (!atomic_load_explicit(&s->ready, memory_order_acquire))
            continue;
        wms = load(&s->window_ms);
        if (wms != 0 && load(&s->window_idx) == now_ms / wms)
            m = load(&s->max_milli);
        label_value(s->name, lv, sizeof lv);
        bprintf(&b, "tollgate_quota_overshoot_ratio{quota=\"%s\"} %" PRIu64
                ".%06" PRIu64 "\n", lv, m / 1000000u, m % 1000000u);
    }

    family(&b, "tollgate_challenges_issued_total", "counter",
           "Challenge tokens signed into sync answers.");
    bprintf(&b, "tollgate_challenges_issued_total %" PRIu64 "\n",
            load(&co_metrics.challenges_issued));
    family(&b, "tollgate_challenges_solved_total", "counter",
           "POST /v1/challenge/verify calls that issued a clearance.");
    bprintf(&b, "tollgate_challenges_solved_total %" PRIu64 "\n",
            load(&co_metrics.challenges_verified_ok));
    family(&b, "tollgate_challenge_failures_total", "counter",
           "POST /v1/challenge/verify calls refused, by reason.");
    for (size_t i = 0; i < sizeof fails / sizeof fails[0]; i++)
        bprintf(&b, "tollgate_challenge_failures_total{reason=\"%s\"} %"
                PRIu64 "\n", fails[i].name,
                load((atomic_ullong *)((char *)&co_metrics + fails[i].off)));
    render_captcha(&b);
    if (load(&co_metrics.tls_not_after_s) != 0) {
        family(&b, "tollgate_tls_certificate_expiry_timestamp_seconds",
               "gauge", "notAfter of the certificate --tls-cert serves "
               "(present only with TLS), in unix seconds.");
        bprintf(&b, "tollgate_tls_certificate_expiry_timestamp_seconds %"
                PRIu64 "\n", load(&co_metrics.tls_not_after_s));
    }
    family(&b, "tollgate_sync_auth_failures_total", "counter",
           "Syncs refused with 401, by reason.");
    for (size_t i = CO_AUTH_OK + 1; i < CO_AUTH_REASONS; i++)
        bprintf(&b, "tollgate_sync_auth_failures_total{reason=\"%s\"} %"
                PRIu64 "\n", co_auth_reason_names[i],
                load(&co_metrics.auth_failures[i]));

    family(&b, "tollgate_http_connections", "gauge",
           "HTTP connections open now.");
    bprintf(&b, "tollgate_http_connections %u\n",
            atomic_load_explicit(&co_server.http_connections,
                                 memory_order_relaxed));
    family(&b, "tollgate_http_connections_closed_total", "counter",
           "HTTP connections closed by the coordinator: limit (over "
           "--max-connections or --max-conns-per-ip, at accept), deadline "
           "(request not in within --request-timeout-ms), tls (a TLS hello "
           "on the plain port).");
    bprintf(&b, "tollgate_http_connections_closed_total{reason=\"limit\"} %"
            PRIu64 "\n", load(&co_server.http_closed_limit));
    bprintf(&b, "tollgate_http_connections_closed_total{reason=\"deadline\"} "
            "%" PRIu64 "\n", load(&co_server.http_closed_deadline));
    bprintf(&b, "tollgate_http_connections_closed_total{reason=\"tls\"} %"
            PRIu64 "\n", load(&co_server.http_closed_tls));

    co_stats_edges_active(now_ms, CO_METRICS_EDGE_TTL_MS, &active, &lag_ms,
                          &refused);
    family(&b, "tollgate_edges_active", "gauge",
           "Distinct edge ids that synced with this coordinator in the last "
           "60 s (at most 4096 tracked).");
    bprintf(&b, "tollgate_edges_active %" PRIu64 "\n", active);
    family(&b, "tollgate_edge_sync_lag_seconds", "gauge",
           "Largest server time minus sent_at_ms over active edges at their "
           "last sync, floored at 0 and capped at 300 (clock skew).");
    bprintf(&b, "tollgate_edge_sync_lag_seconds %" PRIu64 ".%03" PRIu64 "\n",
            lag_ms / 1000u, lag_ms % 1000u);
    family(&b, "tollgate_edges_policy_refused", "gauge",
           "Active edges whose last sync reported a policy they could not "
           "install (they enforce an older one; see /v1/stats).");
    bprintf(&b, "tollgate_edges_policy_refused %" PRIu64 "\n", refused);
    family(&b, "tollgate_sync_sent_at_clamped_total", "counter",
           "Syncs whose sent_at_ms was more than 300 s off this "
           "coordinator's clock (clamped for the lag gauge).");
    bprintf(&b, "tollgate_sync_sent_at_clamped_total %" PRIu64 "\n",
            load(&co_metrics.sent_at_clamped));

    family(&b, "tollgate_redis_errors_total", "counter",
           "Redis failures by kind: connection failures, timeouts and "
           "error replies (noperm, oom, readonly, crossslot, ...).");
    for (size_t i = CO_REDIS_OK + 1; i < CO_REDIS_KINDS; i++)
        bprintf(&b, "tollgate_redis_errors_total{kind=\"%s\"} %" PRIu64
                "\n", co_redis_kind_names[i], load(&co_metrics.redis_errors[i]));
    family(&b, "tollgate_redis_up", "gauge",
           "1 while Redis works, 0 from a failure until Redis answers again "
           "(a configuration failure: until the readiness probe passes).");
    bprintf(&b, "tollgate_redis_up %d\n",
            atomic_load_explicit(&co_metrics.redis_up, memory_order_relaxed)
                ? 1 : 0);
    family(&b, "tollgate_policy_version", "gauge",
           "Version of the policy this coordinator enforces.");
    bprintf(&b, "tollgate_policy_version %" PRIu64 "\n", policy_version);

    if (b.failed) {
        free(b.p);
        return CO_ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return CO_OK;
}

void co_metrics_handle(const struct co_request *req, struct co_response *resp)
{
    struct co_policy *pol = co_policy_current();
    uint64_t version = pol != NULL ? pol->version : 0;
    char *text;
    size_t len;

    (void)req;
    co_policy_release(pol);
    if (co_metrics_render(co_wall_ms(), version, &text, &len) != CO_OK) {
        co_response_take(resp, 500, "text/plain", NULL, 0);
        return;
    }
    co_response_take(resp, 200, "text/plain; version=0.0.4; charset=utf-8",
                     (uint8_t *)text, len);
}
