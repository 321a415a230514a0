/* test_edge.c — the edge core through its public API (tollgate.h): local
 * decisions and headers, and the sync protocol, with every SyncRequest the
 * edge sends read back by protobuf-c and every SyncResponse packed by it,
 * as the coordinator does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "edge.h" /* tokens_of: the bucket behind a decision */
#include "tollgate.h"
#include "tollgate.pb-c.h"
#include "tollgated.h"   /* co_b64url_encode */

#define T0 1700000000000ull /* a realistic wall clock, ms */
#define BUF_CAP 65536

static uint8_t buf[BUF_CAP];

/* ---------------------------------------------------------------- fixtures */

typedef struct fx {
    void *mem;
    tg_edge *e;
} fx;

static fx *new_edge(uint32_t max_keys)
{
    fx *f = calloc(1, sizeof *f);
    tg_config cfg = {.edge_id = {"edge-1", 6}, .max_keys = max_keys, .sync_interval_ms = 1000,
                     .seed = "0123456789abcdef"};
    size_t n = tg_edge_size(&cfg);
    assert_true(n > 0);
    f->mem = malloc(n);
    assert_non_null(f->mem);
    assert_int_equal(tg_edge_init(f->mem, n, &cfg, &f->e), 0);
    return f;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (f) {
        free(f->mem);
        free(f);
    }
    return 0;
}

static int setup_edge(void **state)
{
    *state = new_edge(0);
    return 0;
}

static tg_str S(const char *s)
{
    return (tg_str){s, strlen(s)};
}

static tg_decision verify_at(tg_edge *e, const char *method, const char *path, const char *ip,
                             uint64_t now)
{
    tg_request req = {.method = S(method), .path = S(path), .host = S("example.com"),
                      .client_ip = S(ip), .now_ms = now};
    tg_decision d;
    assert_int_equal(tg_verify(e, &req, &d), 0);
    return d;
}

static tg_decision verify_ip(tg_edge *e, const char *ip, uint64_t now)
{
    return verify_at(e, "GET", "/api/x", ip, now);
}

static void assert_headers(const tg_decision *d, const char *want)
{
    char got[1024];
    assert_true(d->headers.len < sizeof got);
    memcpy(got, d->headers.p, d->headers.len);
    got[d->headers.len] = '\0';
    assert_string_equal(got, want);
}

/* What the coordinator's policy says about one quota. */
typedef struct qspec {
    const char *name;
    uint64_t limit;
    uint32_t window_s;
    const char *key;
    const char *prefix;
    const char *methods[4];
    uint64_t floor;
    bool shadow;
    bool fail_open;
    bool require_token;
} qspec;

/* One KeyState. */
typedef struct sspec {
    const char *quota;
    const char *key;
    int action;
    uint64_t lease;
    uint64_t reset_ms;
    const char *token;
} sspec;

/* The global count every KeyState of respond() carries: 0 unless a test
 * sets it. */
static uint64_t state_count;

/* Packs a SyncResponse with protobuf-c and hands it to the edge. version 0
 * means no policy field. */
static int respond(tg_edge *e, uint64_t now, uint64_t acked, bool degraded, uint32_t next_sync_ms,
                   uint64_t version, const qspec *qs, size_t nq, const sspec *ss, size_t ns)
{
    Tollgate__V1__SyncResponse m = TOLLGATE__V1__SYNC_RESPONSE__INIT;
    Tollgate__V1__Policy p = TOLLGATE__V1__POLICY__INIT;
    Tollgate__V1__Quota q[8], *qp[8];
    Tollgate__V1__KeyState s[16], *sp[16];
    assert_true(nq <= 8 && ns <= 16);

    m.acked_seq = acked;
    m.degraded = degraded;
    m.next_sync_ms = next_sync_ms;
    m.server_time_ms = now;
    for (size_t i = 0; i < ns; i++) {
        tollgate__v1__key_state__init(&s[i]);
        s[i].quota = (char *)ss[i].quota;
        s[i].key = (char *)ss[i].key;
        s[i].action = (Tollgate__V1__Action)ss[i].action;
        s[i].lease = ss[i].lease;
        s[i].reset_ms = ss[i].reset_ms;
        s[i].count = state_count;
        s[i].challenge_token = (char *)(ss[i].token ? ss[i].token : "");
        sp[i] = &s[i];
    }
    m.n_states = ns;
    m.states = sp;
    if (version) {
        for (size_t i = 0; i < nq; i++) {
            tollgate__v1__quota__init(&q[i]);
            q[i].name = (char *)qs[i].name;
            q[i].limit = qs[i].limit;
            q[i].window_s = qs[i].window_s;
            q[i].key = (char *)(qs[i].key ? qs[i].key : "ip");
            q[i].path_prefix = (char *)(qs[i].prefix ? qs[i].prefix : "");
            while (q[i].n_methods < 4 && qs[i].methods[q[i].n_methods])
                q[i].n_methods++;
            q[i].methods = (char **)qs[i].methods;
            q[i].action = TOLLGATE__V1__ACTION__ACTION_CHALLENGE;
            q[i].floor = qs[i].floor;
            q[i].shadow = qs[i].shadow;
            q[i].fail_open = qs[i].fail_open;
            q[i].require_token = qs[i].require_token;
            qp[i] = &q[i];
        }
        p.version = version;
        p.n_quotas = nq;
        p.quotas = qp;
        m.policy = &p;
        m.policy_version = version;
    }
    static uint8_t out[BUF_CAP];
    size_t n = tollgate__v1__sync_response__pack(&m, out);
    return tg_sync_response(e, now, out, n);
}

/* Sends the edge's next SyncRequest and reads it back with protobuf-c.
 * The caller frees it with tollgate__v1__sync_request__free_unpacked. */
static Tollgate__V1__SyncRequest *sync_req(tg_edge *e, uint64_t now)
{
    long n = tg_sync_request(e, now, buf, sizeof buf);
    assert_true(n > 0);
    Tollgate__V1__SyncRequest *r = tollgate__v1__sync_request__unpack(NULL, (size_t)n, buf);
    assert_non_null(r);
    return r;
}

static const Tollgate__V1__KeyCount *count_of(const Tollgate__V1__SyncRequest *r,
                                              const char *quota, const char *key)
{
    for (size_t i = 0; i < r->n_counts; i++)
        if (!strcmp(r->counts[i]->quota, quota) && !strcmp(r->counts[i]->key, key))
            return r->counts[i];
    return NULL;
}

static void assert_count(const Tollgate__V1__SyncRequest *r, const char *quota, const char *key,
                         uint64_t admitted, uint64_t denied, uint64_t challenged)
{
    const Tollgate__V1__KeyCount *c = count_of(r, quota, key);
    if (!c)
        fail_msg("no KeyCount for %s/%s", quota, key);
    assert_int_equal(c->admitted, admitted);
    assert_int_equal(c->denied, denied);
    assert_int_equal(c->challenged, challenged);
}

/* Runs a full sync (request, acknowledged answer) and returns its seq. */
static uint64_t sync_ok(tg_edge *e, uint64_t now, const sspec *ss, size_t ns)
{
    Tollgate__V1__SyncRequest *r = sync_req(e, now);
    uint64_t seq = r->seq;
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_int_equal(respond(e, now, seq, false, 0, 0, NULL, 0, ss, ns), 0);
    return seq;
}

/* Installs a policy through a normal, acknowledged sync. */
static void install(tg_edge *e, uint64_t now, uint64_t version, const qspec *qs, size_t nq)
{
    Tollgate__V1__SyncRequest *r = sync_req(e, now);
    assert_int_equal(respond(e, now, r->seq, false, 0, version, qs, nq, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_int_equal(tg_policy_version(e), version);
}

static const qspec API = {"api", 100, 60, "ip", "/api/", {NULL}, 2, false, false, false};

/* ---------------------------------------------------------------- tokens */

static const char JWT_KEY[] = "edge-test-jwt-secret";
static const char CLR_KEY[] = "edge-test-clearance-secret";
#define NOW_S (T0 / 1000)

/* The coordinator's encoder: an implementation independent of the edge's
 * decoder under test. */
static size_t b64url(const void *data, size_t n, char *out)
{
    long r = co_b64url_encode(data, n, out, (n + 2) / 3 * 4 + 1);
    assert_true(r >= 0);
    return (size_t)r;
}

/* A compact HS256 JWS; one of eight rotating buffers. */
static const char *jws(const char *header, const char *payload, const char *secret)
{
    static char bufs[8][1024];
    static int next;
    char *t = bufs[next++ % 8];
    uint8_t mac[32];
    unsigned mlen = 0;
    size_t n = b64url(header, strlen(header), t);
    t[n++] = '.';
    n += b64url(payload, strlen(payload), t + n);
    assert_non_null(HMAC(EVP_sha256(), secret, (int)strlen(secret), (uint8_t *)t, n, mac, &mlen));
    t[n++] = '.';
    b64url(mac, 32, t + n);
    return t;
}

static const char *jwt(const char *payload)
{
    return jws("{\"alg\":\"HS256\",\"kid\":\"j1\"}", payload, JWT_KEY);
}

static const char *bearer(const char *token)
{
    static char bufs[4][1100];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "Bearer %s", token);
    return b;
}

/* The coordinator's clearance cookie for (quota, key), signed with secret. */
static const char *clearance(const char *quota, const char *key, uint64_t exp_s,
                             const char *secret)
{
    static char cookie[1200];
    char payload[300], kh[32], in[200];
    unsigned char d[32];
    int n = snprintf(in, sizeof in, "%s\n%s", quota, key);
    SHA256((const unsigned char *)in, (size_t)n, d);
    b64url(d, 16, kh);
    snprintf(payload, sizeof payload, "{\"q\":\"%s\",\"kh\":\"%s\",\"exp\":%llu,\"iat\":%llu}",
             quota, kh, (unsigned long long)exp_s, (unsigned long long)NOW_S);
    snprintf(cookie, sizeof cookie, "theme=dark; tollgate_clearance=%s; lang=en",
             jws("{\"alg\":\"HS256\",\"kid\":\"c1\"}", payload, secret));
    return cookie;
}

static void add_keys(tg_edge *e)
{
    assert_int_equal(tg_add_key(e, TG_KEY_JWT, S("j1"), (const uint8_t *)JWT_KEY, strlen(JWT_KEY)), 0);
    assert_int_equal(tg_add_key(e, TG_KEY_CLEARANCE, S("c1"), (const uint8_t *)CLR_KEY,
                                strlen(CLR_KEY)), 0);
}

static tg_decision verify_full(tg_edge *e, const char *path, const char *ip, const char *authz,
                               const char *cookie, const tg_header *hs, size_t nh, uint64_t now)
{
    tg_request req = {.method = S("GET"), .path = S(path), .host = S("example.com"),
                      .client_ip = S(ip), .authorization = S(authz ? authz : ""),
                      .cookie = S(cookie ? cookie : ""), .now_ms = now, .headers = hs,
                      .n_headers = nh};
    tg_decision d;
    assert_int_equal(tg_verify(e, &req, &d), 0);
    return d;
}

static tg_decision verify_tok(tg_edge *e, const char *ip, const char *token, uint64_t now)
{
    return verify_full(e, "/api/x", ip, token ? bearer(token) : NULL, NULL, NULL, 0, now);
}

/* The r of the RateLimit field in a decision's headers, or -1. */
static long remaining(const tg_decision *d)
{
    char h[1024];
    snprintf(h, sizeof h, "%.*s", (int)d->headers.len, d->headers.p);
    const char *r = strstr(h, ";r=");
    return r ? strtol(r + 3, NULL, 10) : -1;
}

/* What the edge may still admit alone for (quota, key): the bucket, which
 * the RateLimit header no longer shows (its r is the global view). */
static uint64_t tokens_of(tg_edge *e, const char *quota, const char *key)
{
    const tg__policy *p = tg__policy_cur(e);
    int qi = tg__policy_find(p, quota, strlen(quota));
    assert_true(qi >= 0);
    tg__entry *en = tg__table_find(&e->tab, tg__key_hash(S(quota), S(key)), (unsigned)qi, S(key));
    assert_non_null(en);
    return en->b.tokens;
}

/* RateLimit's r is what the client has left globally as far as this edge
 * knows: the limit less the key's count at the coordinator's last answer
 * and what this edge admitted since; t and Retry-After agree on a 429. */
static void ratelimit_r_is_the_global_view(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    tg_decision d = verify_ip(e, "192.0.2.1", T0 + 1);
    assert_int_equal(remaining(&d), 99);
    /* Another edge's traffic: the coordinator counts 60 (ours included),
     * and leases this edge 3. */
    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 10);
    d = verify_ip(e, "192.0.2.1", T0 + 11); /* admitted during the sync */
    sspec st = {"api", "192.0.2.1", 0, 3, 0, NULL};
    state_count = 60;
    assert_int_equal(respond(e, T0 + 20, r->seq, false, 0, 0, NULL, 0, &st, 1), 0);
    state_count = 0;
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    d = verify_ip(e, "192.0.2.1", T0 + 21);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(remaining(&d), 100 - 60 - 2);
    /* The lease (3, less the one admitted during the sync) runs out long
     * before the global budget: 429 with r = 0, t = Retry-After. */
    assert_int_equal(verify_ip(e, "192.0.2.1", T0 + 22).kind, TG_ALLOW);
    d = verify_ip(e, "192.0.2.1", T0 + 23);
    assert_int_equal(d.status, 429);
    assert_int_equal(remaining(&d), 0);
    char h[512], want[64];
    snprintf(h, sizeof h, "%.*s", (int)d.headers.len, d.headers.p);
    snprintf(want, sizeof want, ";t=%u\r\nRetry-After: %u\r\n", d.retry_after_s, d.retry_after_s);
    assert_non_null(strstr(h, want));
}

/* ---------------------------------------------------------------- tests */

static void init_rejects_bad_arguments(void **state)
{
    (void)state;
    tg_config cfg = {.edge_id = {"e", 1}, .max_keys = 16};
    size_t n = tg_edge_size(&cfg);
    void *mem = malloc(n + 8);
    tg_edge *e;
    assert_int_equal(tg_edge_init((char *)mem + 1, n, &cfg, &e), TG_EINVAL);
    assert_int_equal(tg_edge_init(mem, n - 1, &cfg, &e), TG_ENOSPC);
    cfg.edge_id = (tg_str){"0123456789012345678901234567890123456789012345678901234567890123x", 65};
    assert_int_equal(tg_edge_init(mem, n, &cfg, &e), TG_EINVAL);
    cfg.edge_id = (tg_str){"a\0b", 3};
    assert_int_equal(tg_edge_init(mem, n, &cfg, &e), TG_EINVAL);
    cfg.edge_id = S("e");
    cfg.max_keys = (1u << 20) + 1;
    assert_int_equal(tg_edge_size(&cfg), 0);
    assert_int_equal(tg_edge_init(mem, n, &cfg, &e), TG_EINVAL);
    assert_int_equal(tg_verify(NULL, NULL, NULL), TG_EINVAL);
    assert_string_equal(tg_reason_name(TG_REASON_RATE_LIMITED), "rate_limited");
    assert_string_equal(tg_reason_name(TG_REASON_BAD_REQUEST), "bad_request");
    free(mem);
}

static void no_policy_allows_and_syncs_at_once(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    tg_decision d = verify_ip(e, "192.0.2.1", T0);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(d.status, 200);
    assert_int_equal(d.headers.len, 0);
    assert_int_equal(tg_policy_version(e), 0);
    assert_true(tg_sync_due(e, T0));

    /* No batch yet: an answer is out of order. */
    assert_int_equal(respond(e, T0, 1, false, 0, 0, NULL, 0, NULL, 0), TG_ESTATE);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0);
    assert_string_equal(r->edge_id, "edge-1");
    assert_int_equal(r->seq, 1);
    assert_int_equal(r->sent_at_ms, T0);
    assert_int_equal(r->policy_version, 0);
    assert_string_equal(r->module_version, TG_MODULE_VERSION);
    assert_int_equal(r->n_counts, 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);

    /* In flight: not due again until presumed lost. */
    assert_false(tg_sync_due(e, T0 + 5000));
    assert_true(tg_sync_due(e, T0 + 10000));

    /* Garbage and a wrong seq change nothing. */
    static const uint8_t junk[] = {0x08, 0x80};
    assert_int_equal(tg_sync_response(e, T0 + 10, junk, sizeof junk), TG_EPROTO);
    assert_int_equal(respond(e, T0 + 10, 7, false, 0, 0, NULL, 0, NULL, 0), TG_ESTATE);
    assert_int_equal(tg_last_sync_ok_ms(e), 0);

    assert_int_equal(respond(e, T0 + 20, 1, false, 0, 0, NULL, 0, NULL, 0), 0);
    assert_int_equal(tg_last_sync_ok_ms(e), T0 + 20);
    assert_false(tg_sync_due(e, T0 + 999));
    assert_true(tg_sync_due(e, T0 + 1000));
}

static void new_key_gets_floor_then_rate_limited(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    assert_false(tg_sync_due(e, T0 + 10));

    tg_decision d = verify_ip(e, "192.0.2.1", T0 + 10);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_headers(&d, "RateLimit-Policy: \"api\";q=100;w=60\r\n"
                       "RateLimit: \"api\";r=99;t=60\r\n");
    /* A new key wants a lease: due 50 ms after the last sync. */
    assert_false(tg_sync_due(e, T0 + 49));
    assert_true(tg_sync_due(e, T0 + 50));

    d = verify_ip(e, "192.0.2.1", T0 + 1010);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_headers(&d, "RateLimit-Policy: \"api\";q=100;w=60\r\n"
                       "RateLimit: \"api\";r=98;t=59\r\n");

    d = verify_ip(e, "192.0.2.1", T0 + 1020);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_RATE_LIMITED);
    assert_int_equal(d.status, 429);
    assert_int_equal(d.retry_after_s, 1);
    assert_headers(&d, "RateLimit-Policy: \"api\";q=100;w=60\r\n"
                       "RateLimit: \"api\";r=0;t=1\r\n"
                       "Retry-After: 1\r\n");

    /* Other keys and other paths are unaffected. */
    assert_int_equal(verify_ip(e, "192.0.2.2", T0 + 1030).kind, TG_ALLOW);
    d = verify_at(e, "GET", "/static/a.css", "192.0.2.1", T0 + 1030);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(d.headers.len, 0);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 1040);
    assert_int_equal(r->seq, 2);
    assert_int_equal(r->policy_version, 1);
    assert_int_equal(r->n_counts, 2);
    assert_count(r, "api", "192.0.2.1", 2, 1, 0);
    assert_count(r, "api", "192.0.2.2", 1, 0, 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

static void lease_replaces_allowance_minus_admitted_since_freeze(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    verify_ip(e, "198.51.100.7", T0 + 1);
    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    uint64_t seq = r->seq;
    tollgate__v1__sync_request__free_unpacked(r, NULL);

    /* Admitted while the batch is in flight: spent out of the coming lease. */
    assert_int_equal(verify_ip(e, "198.51.100.7", T0 + 110).kind, TG_ALLOW);
    sspec s = {"api", "198.51.100.7", 0, 5, 0, NULL};
    assert_int_equal(respond(e, T0 + 120, seq, false, 0, 0, NULL, 0, &s, 1), 0);

    int allowed = 0;
    for (int i = 0; i < 10; i++)
        allowed += verify_ip(e, "198.51.100.7", T0 + 130).kind == TG_ALLOW;
    assert_int_equal(allowed, 4);

    /* States for unknown quotas or keys are ignored. */
    r = sync_req(e, T0 + 2000);
    sspec junk[] = {{"nope", "198.51.100.7", 2, 0, 9000, NULL}, {"api", "203.0.113.9", 2, 0, 9000, NULL}};
    assert_int_equal(respond(e, T0 + 2000, r->seq, false, 0, 0, NULL, 0, junk, 2), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_int_equal(verify_ip(e, "203.0.113.9", T0 + 2001).kind, TG_ALLOW);
}

static void challenge_then_reset(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    verify_ip(e, "192.0.2.9", T0 + 1);
    sspec s = {"api", "192.0.2.9", TOLLGATE__V1__ACTION__ACTION_CHALLENGE, 0, 4500, "captcha-tok"};
    sync_ok(e, T0 + 100, &s, 1);

    tg_decision d = verify_ip(e, "192.0.2.9", T0 + 200);
    assert_int_equal(d.kind, TG_CHALLENGE);
    assert_int_equal(d.status, 429);
    assert_int_equal(d.retry_after_s, 5);  /* 4.4 s, rounded up */
    assert_int_equal(d.token.len, strlen("captcha-tok"));
    assert_memory_equal(d.token.p, "captcha-tok", d.token.len);
    assert_headers(&d, "RateLimit-Policy: \"api\";q=100;w=60\r\n"
                       "RateLimit: \"api\";r=0;t=5\r\n"
                       "Retry-After: 5\r\n");
    /* A heartbeat keeps the edge fresh (see staleness_* below). */
    sync_ok(e, T0 + 3000, NULL, 0);
    assert_int_equal(verify_ip(e, "192.0.2.9", T0 + 4599).kind, TG_CHALLENGE);

    /* Reset reached: the challenge is over, but the bucket stays as the
     * coordinator left it (empty): no floor for free, the next sync
     * decides. */
    tg_decision late = verify_ip(e, "192.0.2.9", T0 + 4600);
    assert_int_equal(late.kind, TG_DENY);
    assert_int_equal(late.reason, TG_REASON_RATE_LIMITED);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 5000);
    assert_count(r, "api", "192.0.2.9", 0, 1, 1);
    sspec again = {"api", "192.0.2.9", TOLLGATE__V1__ACTION__ACTION_ALLOW, 2, 0, NULL};
    assert_int_equal(respond(e, T0 + 5010, r->seq, false, 0, 0, NULL, 0, &again, 1), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_int_equal(verify_ip(e, "192.0.2.9", T0 + 5020).kind, TG_ALLOW);
    assert_int_equal(verify_ip(e, "192.0.2.9", T0 + 5021).kind, TG_ALLOW);
    assert_int_equal(verify_ip(e, "192.0.2.9", T0 + 5022).kind, TG_DENY);
}

static void deny_blocks_until_reset(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    verify_ip(e, "192.0.2.66", T0 + 1);
    sspec s = {"api", "192.0.2.66", TOLLGATE__V1__ACTION__ACTION_DENY, 50, 30000, NULL};
    sync_ok(e, T0 + 100, &s, 1);

    tg_decision d = verify_ip(e, "192.0.2.66", T0 + 100);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_BLOCKED);
    assert_int_equal(d.status, 429);
    assert_int_equal(d.retry_after_s, 30);
    assert_int_equal(verify_ip(e, "192.0.2.66", T0 + 30099).reason, TG_REASON_BLOCKED);
    /* A blocked key keeps its lease for after the block. */
    assert_int_equal(verify_ip(e, "192.0.2.66", T0 + 30100).kind, TG_ALLOW);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 31000);
    assert_count(r, "api", "192.0.2.66", 1, 2, 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

static void failed_sync_resends_same_seq_and_counts(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    for (int i = 0; i < 3; i++)
        verify_ip(e, "192.0.2.1", T0 + 10);
    verify_ip(e, "192.0.2.2", T0 + 10);

    long n1 = tg_sync_request(e, T0 + 100, buf, sizeof buf);
    assert_true(n1 > 0);
    Tollgate__V1__SyncRequest *a = tollgate__v1__sync_request__unpack(NULL, (size_t)n1, buf);
    tg_sync_failed(e, T0 + 200);

    /* Counts made meanwhile wait for the next seq. */
    verify_ip(e, "192.0.2.1", T0 + 210);
    verify_ip(e, "192.0.2.3", T0 + 210);

    /* Backoff: 250 ms less a per-edge jitter of at most a quarter. */
    assert_false(tg_sync_due(e, T0 + 200 + 187));
    assert_true(tg_sync_due(e, T0 + 200 + 250));
    Tollgate__V1__SyncRequest *b = sync_req(e, T0 + 450);
    assert_int_equal(b->seq, a->seq);
    assert_int_equal(b->n_counts, a->n_counts);
    for (size_t i = 0; i < a->n_counts; i++) {
        assert_string_equal(b->counts[i]->quota, a->counts[i]->quota);
        assert_string_equal(b->counts[i]->key, a->counts[i]->key);
        assert_int_equal(b->counts[i]->admitted, a->counts[i]->admitted);
        assert_int_equal(b->counts[i]->denied, a->counts[i]->denied);
    }
    assert_count(b, "api", "192.0.2.1", 2, 1, 0);
    assert_count(b, "api", "192.0.2.2", 1, 0, 0);
    assert_null(count_of(b, "api", "192.0.2.3"));

    /* Second failure doubles the backoff. */
    tg_sync_failed(e, T0 + 500);
    assert_false(tg_sync_due(e, T0 + 500 + 374));
    assert_true(tg_sync_due(e, T0 + 500 + 500));

    /* Acknowledged: the next batch has only what came after the freeze. */
    assert_int_equal(respond(e, T0 + 1000, a->seq, false, 0, 0, NULL, 0, NULL, 0), 0);
    Tollgate__V1__SyncRequest *c = sync_req(e, T0 + 2000);
    assert_int_equal(c->seq, a->seq + 1);
    assert_count(c, "api", "192.0.2.1", 0, 1, 0);
    assert_count(c, "api", "192.0.2.3", 1, 0, 0);
    assert_null(count_of(c, "api", "192.0.2.2"));
    assert_int_equal(respond(e, T0 + 2000, c->seq, false, 0, 0, NULL, 0, NULL, 0), 0);

    /* Nothing new: an empty heartbeat, nothing resent. */
    Tollgate__V1__SyncRequest *d = sync_req(e, T0 + 3000);
    assert_int_equal(d->seq, c->seq + 1);
    assert_int_equal(d->n_counts, 0);

    tollgate__v1__sync_request__free_unpacked(a, NULL);
    tollgate__v1__sync_request__free_unpacked(b, NULL);
    tollgate__v1__sync_request__free_unpacked(c, NULL);
    tollgate__v1__sync_request__free_unpacked(d, NULL);
}

static void degraded_answer_keeps_the_batch(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    qspec q = API;
    q.floor = 3;
    install(e, T0, 1, &q, 1);
    uint64_t ok_at = tg_last_sync_ok_ms(e);
    verify_ip(e, "192.0.2.5", T0 + 10);

    Tollgate__V1__SyncRequest *a = sync_req(e, T0 + 100);
    /* Degraded: counts were not applied, and the answer's states are
     * ignored, even a generous lease: the floor stays as it was. */
    sspec s = {"api", "192.0.2.5", 0, 50, 0, NULL};
    assert_int_equal(respond(e, T0 + 150, a->seq, true, 0, 0, NULL, 0, &s, 1), 0);
    assert_int_equal(tg_last_sync_ok_ms(e), ok_at);
    assert_int_equal(verify_ip(e, "192.0.2.5", T0 + 160).kind, TG_ALLOW);
    assert_int_equal(verify_ip(e, "192.0.2.5", T0 + 160).kind, TG_ALLOW);
    assert_int_equal(verify_ip(e, "192.0.2.5", T0 + 160).kind, TG_DENY);

    /* Not a failure: the regular interval, then the same seq again. */
    assert_false(tg_sync_due(e, T0 + 1099));
    assert_true(tg_sync_due(e, T0 + 1100));
    Tollgate__V1__SyncRequest *b = sync_req(e, T0 + 1100);
    assert_int_equal(b->seq, a->seq);
    assert_count(b, "api", "192.0.2.5", 1, 0, 0);
    assert_int_equal(respond(e, T0 + 1200, b->seq, false, 0, 0, NULL, 0, NULL, 0), 0);
    assert_int_equal(tg_last_sync_ok_ms(e), T0 + 1200);

    Tollgate__V1__SyncRequest *c = sync_req(e, T0 + 2200);
    assert_int_equal(c->seq, a->seq + 1);
    assert_count(c, "api", "192.0.2.5", 2, 1, 0);
    tollgate__v1__sync_request__free_unpacked(a, NULL);
    tollgate__v1__sync_request__free_unpacked(b, NULL);
    tollgate__v1__sync_request__free_unpacked(c, NULL);
}

static void method_and_path_matching(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    qspec q = {"writes", 10, 60, "ip", "/api/", {"POST", "put", NULL}, 1, false, false, false};
    install(e, T0, 1, &q, 1);

    assert_int_equal(verify_at(e, "POST", "/api/a", "192.0.2.1", T0 + 1).kind, TG_ALLOW);
    assert_int_equal(verify_at(e, "POST", "/api/b", "192.0.2.1", T0 + 2).kind, TG_DENY);
    assert_int_equal(verify_at(e, "post", "/api/b", "192.0.2.1", T0 + 2).kind, TG_DENY);
    assert_int_equal(verify_at(e, "PUT", "/api/b", "192.0.2.1", T0 + 2).kind, TG_DENY);

    tg_decision d = verify_at(e, "GET", "/api/b", "192.0.2.1", T0 + 3);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(d.headers.len, 0);
    assert_int_equal(verify_at(e, "POST", "/apix", "192.0.2.1", T0 + 3).kind, TG_ALLOW);
    assert_int_equal(verify_at(e, "POST", "/api", "192.0.2.1", T0 + 3).kind, TG_ALLOW);
    assert_int_equal(verify_at(e, "POSTX", "/api/b", "192.0.2.1", T0 + 3).kind, TG_ALLOW);

    /* An unknown key template never matches. */
    qspec u = {"future", 1, 60, "ip+geo:country", "", {NULL}, 1, false, false, false};
    install(e, T0 + 10, 2, &u, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(verify_at(e, "POST", "/api/b", "192.0.2.1", T0 + 11).kind, TG_ALLOW);
}

static void most_severe_quota_wins(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    qspec qs[] = {{"wide", 1000, 60, "ip", "", {NULL}, 5, false, false, false},
                  {"narrow", 10, 60, "ip", "/api/", {NULL}, 1, false, false, false}};
    install(e, T0, 1, qs, 2);

    tg_decision d = verify_ip(e, "192.0.2.1", T0 + 1);
    assert_int_equal(d.kind, TG_ALLOW);
    /* Headers name the quota with the least left globally. */
    assert_headers(&d, "RateLimit-Policy: \"narrow\";q=10;w=60\r\n"
                       "RateLimit: \"narrow\";r=9;t=60\r\n");
    d = verify_ip(e, "192.0.2.1", T0 + 2);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_RATE_LIMITED);

    /* Outside /api/ only "wide" applies, and the refused request above was
     * not admitted: two admitted of 1000. */
    d = verify_at(e, "GET", "/", "192.0.2.1", T0 + 3);
    assert_headers(&d, "RateLimit-Policy: \"wide\";q=1000;w=60\r\n"
                       "RateLimit: \"wide\";r=998;t=60\r\n");

    /* wide says CHALLENGE, narrow says rate-limited: DENY outranks it, and
     * each quota counts its own refusal. */
    sspec s = {"wide", "192.0.2.1", TOLLGATE__V1__ACTION__ACTION_CHALLENGE, 0, 10000, "t"};
    sync_ok(e, T0 + 100, &s, 1);
    d = verify_ip(e, "192.0.2.1", T0 + 200);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_RATE_LIMITED);
    d = verify_at(e, "GET", "/", "192.0.2.1", T0 + 200);
    assert_int_equal(d.kind, TG_CHALLENGE);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 1200);
    assert_count(r, "wide", "192.0.2.1", 0, 0, 2);
    assert_count(r, "narrow", "192.0.2.1", 0, 1, 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

static void shadow_quota_counts_but_always_allows(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    qspec q = {"trial", 5, 60, "ip", "", {NULL}, 1, true, false, false};
    install(e, T0, 1, &q, 1);
    for (int i = 0; i < 4; i++) {
        tg_decision d = verify_ip(e, "192.0.2.1", T0 + 1);
        assert_int_equal(d.kind, TG_ALLOW);
        assert_int_equal(d.status, 200);
        assert_int_equal(d.headers.len, 0);
    }
    /* It reports what it would have done: floor 1, so 1 admitted, 3 denied. */
    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    assert_count(r, "trial", "192.0.2.1", 1, 3, 0);
    sspec s = {"trial", "192.0.2.1", TOLLGATE__V1__ACTION__ACTION_DENY, 0, 60000, NULL};
    assert_int_equal(respond(e, T0 + 100, r->seq, false, 0, 0, NULL, 0, &s, 1), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);

    /* A coordinator DENY on a shadow quota is counted, never enforced. */
    assert_int_equal(verify_ip(e, "192.0.2.1", T0 + 200).kind, TG_ALLOW);
    r = sync_req(e, T0 + 1200);
    assert_count(r, "trial", "192.0.2.1", 0, 1, 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

static void unkeyable_requests_are_bad_requests(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    qspec qs[] = {API, {"shadow", 5, 60, "ip", "", {NULL}, 1, true, false, false}};
    install(e, T0, 1, qs, 2);
    char long_ip[98];
    memset(long_ip, '1', 97);
    long_ip[97] = '\0';

    tg_decision d = verify_ip(e, "", T0 + 1);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_BAD_REQUEST);
    assert_int_equal(d.status, 400);
    assert_int_equal(verify_ip(e, "~overflow", T0 + 1).reason, TG_REASON_BAD_REQUEST);
    long_ip[96] = '\0';
    assert_int_equal(verify_ip(e, long_ip, T0 + 1).kind, TG_ALLOW);
    /* Over 96 bytes: keyed by its hash, "~h" + 32 hex digits of SHA-256. */
    long_ip[96] = '1';
    assert_int_equal(verify_ip(e, long_ip, T0 + 1).kind, TG_ALLOW);

    tg_request req = {.method = S("GET"), .path = S("/api/x"), .client_ip = {"1.2\0.3", 6},
                      .now_ms = T0 + 1};
    assert_int_equal(tg_verify(e, &req, &d), 0);
    assert_int_equal(d.reason, TG_REASON_BAD_REQUEST);

    /* Only a shadow quota matches: it cannot key, so it is skipped. */
    assert_int_equal(verify_at(e, "GET", "/", "", T0 + 1).kind, TG_ALLOW);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    unsigned char d32[32];
    char hashed[35] = "~h";
    SHA256((const unsigned char *)long_ip, 97, d32);
    for (int i = 0; i < 16; i++)
        snprintf(hashed + 2 + 2 * i, 3, "%02x", d32[i]);
    assert_count(r, "api", hashed, 1, 0, 0);
    long_ip[96] = '\0';
    assert_count(r, "api", long_ip, 1, 0, 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

/* Eviction moves an entry's pending counts to the spill list (256
 * records); only when that is full do entries with counts stay put, and
 * requests that find no room are counted under "~overflow" and decided by
 * fail_open. Entries in the batch in flight are never evicted. */
static void full_table_never_loses_counts(void **state)
{
    (void)state;
    fx *f = new_edge(8);
    tg_edge *e = f->e;
    qspec qs[] = {{"closed", 1000, 60, "ip", "/c/", {NULL}, 100, false, false, false},
                  {"open", 1000, 60, "ip", "/o/", {NULL}, 100, false, true, false}};
    install(e, T0, 1, qs, 2);
    char ip[32];
    int allowed = 0;
    for (int i = 0; i < 8 + 256 + 5; i++) {
        snprintf(ip, sizeof ip, "10.0.%d.%d", i / 256, i % 256);
        allowed += verify_at(e, "GET", "/c/", ip, T0 + 1).kind == TG_ALLOW;
    }
    assert_int_equal(allowed, 8 + 256);
    tg_decision d = verify_at(e, "GET", "/c/", "10.0.9.99", T0 + 1);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_RATE_LIMITED);
    assert_headers(&d, "Retry-After: 1\r\n");
    d = verify_at(e, "GET", "/o/", "10.1.0.1", T0 + 2);
    assert_int_equal(d.kind, TG_ALLOW);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    uint64_t admitted = 0, denied = 0;
    for (size_t i = 0; i < r->n_counts; i++) {
        if (!strcmp(r->counts[i]->quota, "closed")) {
            admitted += r->counts[i]->admitted;
            denied += r->counts[i]->denied;
        }
    }
    assert_int_equal(admitted, 8 + 256);
    assert_int_equal(denied, 6);
    assert_count(r, "closed", "10.0.0.0", 1, 0, 0);   /* spilled first */
    assert_count(r, "closed", "10.0.1.7", 1, 0, 0);   /* spilled last */
    assert_count(r, "closed", "~overflow", 0, 6, 0);
    assert_count(r, "open", "~overflow", 1, 0, 0);

    /* While the batch is in flight its entries stay; new keys overflow. */
    assert_int_equal(verify_at(e, "GET", "/c/", "10.9.9.9", T0 + 110).kind, TG_DENY);
    assert_int_equal(respond(e, T0 + 200, r->seq, false, 0, 0, NULL, 0, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);

    /* Acknowledged: the spill list is empty, the pending overflow count is
     * still there, the old entries are evictable, new keys get entries. */
    assert_int_equal(verify_at(e, "GET", "/c/", "10.9.9.8", T0 + 300).kind, TG_ALLOW);
    r = sync_req(e, T0 + 1300);
    assert_count(r, "closed", "~overflow", 0, 1, 0);
    assert_count(r, "closed", "10.9.9.8", 1, 0, 0);
    assert_int_equal(r->n_counts, 2);
    tollgate__v1__sync_request__free_unpacked(r, NULL);

    *state = f;
}

/* The case: a cold key evicted with unsent counts has them in the
 * next batch, and a retry of that batch resends them under the same seq. */
static void eviction_spill_sends_counts_next_batch(void **state)
{
    (void)state;
    fx *f = new_edge(8);
    tg_edge *e = f->e;
    *state = f;
    qspec q = {"api", 1000, 60, "ip", "", {NULL}, 100, false, false, false};
    install(e, T0, 1, &q, 1);
    char ip[32];
    for (int i = 0; i < 8; i++) {
        snprintf(ip, sizeof ip, "10.0.0.%d", i);
        verify_ip(e, ip, T0 + 10 + (uint64_t)i);
        verify_ip(e, ip, T0 + 10 + (uint64_t)i);
    }
    /* 10.0.0.0 is the coldest: a new key evicts it. */
    assert_int_equal(verify_ip(e, "192.0.2.1", T0 + 50).kind, TG_ALLOW);
    Tollgate__V1__SyncRequest *a = sync_req(e, T0 + 100);
    assert_count(a, "api", "10.0.0.0", 2, 0, 0);
    assert_count(a, "api", "192.0.2.1", 1, 0, 0);
    assert_int_equal(a->n_counts, 9);
    tg_sync_failed(e, T0 + 150);

    /* The evicted key comes back while every entry is in the batch in
     * flight: no room, it overflows. The retry carries exactly what the
     * first attempt did. */
    assert_int_equal(verify_ip(e, "10.0.0.0", T0 + 200).kind, TG_DENY);
    Tollgate__V1__SyncRequest *b = sync_req(e, T0 + 1000);
    assert_int_equal(b->seq, a->seq);
    assert_int_equal(b->n_counts, a->n_counts);
    assert_count(b, "api", "10.0.0.0", 2, 0, 0);
    assert_int_equal(respond(e, T0 + 1000, b->seq, false, 0, 0, NULL, 0, NULL, 0), 0);

    /* Acknowledged: it gets an entry again, with the floor. */
    assert_int_equal(verify_ip(e, "10.0.0.0", T0 + 1100).kind, TG_ALLOW);
    Tollgate__V1__SyncRequest *c = sync_req(e, T0 + 2000);
    assert_int_equal(c->seq, a->seq + 1);
    assert_count(c, "api", "10.0.0.0", 1, 0, 0);
    assert_count(c, "api", "~overflow", 0, 1, 0);
    assert_int_equal(c->n_counts, 2);
    tollgate__v1__sync_request__free_unpacked(a, NULL);
    tollgate__v1__sync_request__free_unpacked(b, NULL);
    tollgate__v1__sync_request__free_unpacked(c, NULL);
}

/* Evicting a blocked key would hand it a fresh floor: the least recently
 * used key without a coordinator action in force goes first. */
static void eviction_spares_blocked_keys(void **state)
{
    (void)state;
    fx *f = new_edge(8);
    tg_edge *e = f->e;
    *state = f;
    qspec q = {"api", 1000, 60, "ip", "", {NULL}, 100, false, false, false};
    install(e, T0, 1, &q, 1);
    char ip[32];
    for (int i = 0; i < 8; i++) {
        snprintf(ip, sizeof ip, "10.0.0.%d", i);
        assert_int_equal(verify_ip(e, ip, T0 + 1 + (uint64_t)i).kind, TG_ALLOW);
    }
    /* 10.0.0.0 is blocked; the others get a lease of 5. */
    static char ips[8][16];
    sspec ss[8];
    for (int i = 0; i < 8; i++) {
        snprintf(ips[i], sizeof ips[i], "10.0.0.%d", i);
        ss[i] = (sspec){"api", ips[i], i ? 0 : TOLLGATE__V1__ACTION__ACTION_DENY, 5, i ? 0 : 60000, NULL};
    }
    sync_ok(e, T0 + 100, ss, 8);

    /* 10.0.0.0 is the least recently used, but blocked: 10.0.0.1 goes. */
    assert_int_equal(verify_ip(e, "10.0.0.100", T0 + 200).kind, TG_ALLOW);
    assert_int_equal(verify_ip(e, "10.0.0.0", T0 + 201).reason, TG_REASON_BLOCKED);
    tg_decision d = verify_ip(e, "10.0.0.2", T0 + 202);
    assert_headers(&d, "RateLimit-Policy: \"api\";q=1000;w=60\r\n"
                       "RateLimit: \"api\";r=999;t=60\r\n");
    /* 10.0.0.1 lost its lease with its entry: it starts over at the floor
     * (100), evicting the next least recently used idle key, 10.0.0.3. */
    d = verify_ip(e, "10.0.0.1", T0 + 203);
    assert_headers(&d, "RateLimit-Policy: \"api\";q=1000;w=60\r\n"
                       "RateLimit: \"api\";r=999;t=60\r\n");
    d = verify_ip(e, "10.0.0.4", T0 + 204);
    assert_headers(&d, "RateLimit-Policy: \"api\";q=1000;w=60\r\n"
                       "RateLimit: \"api\";r=999;t=60\r\n");
    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 1200);
    assert_count(r, "api", "10.0.0.100", 1, 0, 0);
    assert_count(r, "api", "10.0.0.0", 0, 1, 0);
    assert_count(r, "api", "10.0.0.1", 1, 0, 0);
    assert_count(r, "api", "10.0.0.2", 1, 0, 0);
    assert_count(r, "api", "10.0.0.4", 1, 0, 0);
    assert_int_equal(r->n_counts, 5);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

/* A batch larger than the buffer is cut; the rest follows with the next
 * seq, sooner than the interval. */
static void batch_is_capped_not_lost(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    char ip[32];
    for (int i = 0; i < 200; i++) {
        snprintf(ip, sizeof ip, "2001:db8::%x", i);
        verify_ip(e, ip, T0 + 1);
    }
    assert_int_equal(tg_sync_request(e, T0 + 2, buf, 10), TG_ENOSPC);

    uint64_t total = 0;
    int batches = 0;
    uint64_t now = T0 + 100;
    while (batches < 50) {
        long n = tg_sync_request(e, now, buf, 1000);
        assert_true(n > 0 && n <= 1000);
        Tollgate__V1__SyncRequest *r = tollgate__v1__sync_request__unpack(NULL, (size_t)n, buf);
        assert_non_null(r);
        for (size_t i = 0; i < r->n_counts; i++)
            total += r->counts[i]->admitted;
        batches++;
        assert_int_equal(respond(e, now, r->seq, false, 0, 0, NULL, 0, NULL, 0), 0);
        size_t nc = r->n_counts;
        tollgate__v1__sync_request__free_unpacked(r, NULL);
        if (nc == 0)
            break;
        assert_int_equal(tg_sync_due(e, now + 50), total < 200);
        now += 50;
    }
    assert_int_equal(total, 200);
    assert_true(batches > 2);
}

static void policy_swap_keeps_surviving_counts(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    qspec v1[] = {{"keep", 100, 60, "ip", "", {NULL}, 5, false, false, false},
                  {"drop", 100, 60, "ip", "", {NULL}, 5, false, false, false}};
    install(e, T0, 1, v1, 2);
    verify_ip(e, "192.0.2.1", T0 + 1);
    verify_ip(e, "192.0.2.1", T0 + 2);

    /* The batch in flight holds "drop": a policy without it must wait. */
    Tollgate__V1__SyncRequest *a = sync_req(e, T0 + 100);
    verify_ip(e, "192.0.2.1", T0 + 110);
    qspec v2[] = {{"new", 100, 60, "ip", "", {NULL}, 5, false, false, false},
                  {"keep", 200, 60, "ip", "", {NULL}, 5, false, false, false}};
    assert_int_equal(respond(e, T0 + 120, a->seq, true, 0, 2, v2, 2, NULL, 0), 0);
    assert_int_equal(tg_policy_version(e), 1);

    /* Acked in the same answer that carries it: installed. */
    assert_int_equal(respond(e, T0 + 130, a->seq, false, 0, 2, v2, 2, NULL, 0), 0);
    assert_int_equal(tg_policy_version(e), 2);

    /* "keep" kept its bucket (5 - 3 = 2 left, then the limit is 200 but the
     * tokens are the edge's own) and its pending count. */
    tg_decision d = verify_ip(e, "192.0.2.1", T0 + 140);
    assert_int_equal(d.kind, TG_ALLOW);
    Tollgate__V1__SyncRequest *b = sync_req(e, T0 + 1200);
    assert_int_equal(b->policy_version, 2);
    assert_count(b, "keep", "192.0.2.1", 2, 0, 0);
    assert_count(b, "new", "192.0.2.1", 1, 0, 0);
    assert_null(count_of(b, "drop", "192.0.2.1"));
    tollgate__v1__sync_request__free_unpacked(a, NULL);
    tollgate__v1__sync_request__free_unpacked(b, NULL);
}

static void invalid_policy_is_refused_whole(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    qspec dup[] = {{"x", 10, 60, "ip", "", {NULL}, 1, false, false, false},
                   {"x", 10, 60, "ip", "", {NULL}, 1, false, false, false}};
    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 10);
    assert_int_equal(respond(e, T0 + 10, r->seq, false, 0, 2, dup, 2, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_int_equal(tg_policy_version(e), 1);

    qspec bad[] = {{"ok", 10, 60, "ip", "", {NULL}, 1, false, false, false},
                   {"a\r\nb", 10, 60, "ip", "", {NULL}, 1, false, false, false}};
    r = sync_req(e, T0 + 20);
    assert_int_equal(respond(e, T0 + 20, r->seq, false, 0, 3, bad, 2, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_int_equal(tg_policy_version(e), 1);

    qspec zero_window = {"w", 10, 0, "ip", "", {NULL}, 1, false, false, false};
    r = sync_req(e, T0 + 30);
    assert_int_equal(respond(e, T0 + 30, r->seq, false, 0, 4, &zero_window, 1, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_int_equal(tg_policy_version(e), 1);

    /* Quoted names escape '"' and '\'. */
    qspec odd = {"a\"b\\c", 10, 60, "ip", "", {NULL}, 3, false, false, false};
    install(e, T0 + 40, 5, &odd, 1);
    tg_decision d = verify_ip(e, "192.0.2.1", T0 + 41);
    assert_headers(&d, "RateLimit-Policy: \"a\\\"b\\\\c\";q=10;w=60\r\n"
                       "RateLimit: \"a\\\"b\\\\c\";r=9;t=60\r\n");
}

/* A refused policy is reported with every sync (SyncRequest fields 7, 8)
 * until a policy installs; the previous one stays enforced meanwhile. */
static void refused_policy_is_reported(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    qspec dup[] = {{"x", 10, 60, "ip", "", {NULL}, 1, false, false, false},
                   {"x", 10, 60, "ip", "", {NULL}, 1, false, false, false}};
    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 10);
    assert_int_equal(r->refused_policy_version, 0);
    assert_int_equal(respond(e, T0 + 10, r->seq, false, 0, 2, dup, 2, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_int_equal(tg_policy_version(e), 1);
    for (int i = 0; i < 2; i++) {
        r = sync_req(e, T0 + 20 + (uint64_t)i);
        assert_int_equal(r->policy_version, 1);
        assert_int_equal(r->refused_policy_version, 2);
        assert_int_equal(r->refused_policy_reason, TOLLGATE__V1__POLICY_REFUSAL__REFUSED_BAD_NAME);
        assert_int_equal(respond(e, T0 + 20 + (uint64_t)i, r->seq, false, 0, 0, NULL, 0, NULL, 0),
                         0);
        tollgate__v1__sync_request__free_unpacked(r, NULL);
    }
    assert_int_equal(verify_ip(e, "192.0.2.1", T0 + 30).kind, TG_ALLOW);
    install(e, T0 + 40, 3, &API, 1);
    r = sync_req(e, T0 + 50);
    assert_int_equal(r->refused_policy_version, 0);
    assert_int_equal(r->refused_policy_reason, 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

/* A 409 naming a newer stored seq (an earlier instance under the same id)
 * renumbers the batch past it, counts unchanged, due at once; a 409 that
 * names an older seq, or comes with no batch, is refused. (The same seq is
 * taken: a coordinator that tells a resend with other counts apart answers
 * that 409 with the stored seq, which this batch never was.) */
static void conflict_renumbers_the_batch(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    for (int i = 0; i < 3; i++)
        verify_ip(e, "192.0.2.1", T0 + 10);
    Tollgate__V1__SyncRequest *a = sync_req(e, T0 + 100);
    assert_int_equal(tg_sync_conflict(e, T0 + 110, a->seq - 1), TG_ESTATE);
    assert_int_equal(tg_sync_conflict(e, T0 + 110, UINT64_MAX), TG_ESTATE);
    assert_int_equal(tg_sync_conflict(e, T0 + 110, 41), 0);
    assert_true(tg_sync_due(e, T0 + 110));
    verify_ip(e, "192.0.2.2", T0 + 115);  /* after the freeze: next batch */
    Tollgate__V1__SyncRequest *b = sync_req(e, T0 + 120);
    assert_int_equal(b->seq, 42);
    assert_int_equal(b->n_counts, a->n_counts);
    assert_count(b, "api", "192.0.2.1", 2, 1, 0);
    assert_null(count_of(b, "api", "192.0.2.2"));
    assert_int_equal(respond(e, T0 + 130, 42, false, 0, 0, NULL, 0, NULL, 0), 0);
    Tollgate__V1__SyncRequest *c = sync_req(e, T0 + 1200);
    assert_int_equal(c->seq, 43);
    assert_count(c, "api", "192.0.2.2", 1, 0, 0);
    assert_int_equal(respond(e, T0 + 1210, 43, false, 0, 0, NULL, 0, NULL, 0), 0);
    assert_int_equal(tg_sync_conflict(e, T0 + 1220, 100), TG_ESTATE);
    tollgate__v1__sync_request__free_unpacked(a, NULL);
    tollgate__v1__sync_request__free_unpacked(b, NULL);
    tollgate__v1__sync_request__free_unpacked(c, NULL);
}

static void next_sync_ms_sets_the_interval(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    Tollgate__V1__SyncRequest *r = sync_req(e, T0);
    assert_int_equal(respond(e, T0, r->seq, false, 5, 0, NULL, 0, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_false(tg_sync_due(e, T0 + 99));
    assert_true(tg_sync_due(e, T0 + 100)); /* clamped up to 100 ms */

    r = sync_req(e, T0 + 100);
    assert_int_equal(respond(e, T0 + 100, r->seq, false, 5000, 0, NULL, 0, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_false(tg_sync_due(e, T0 + 5099));
    assert_true(tg_sync_due(e, T0 + 5100));

    /* Without next_sync_ms, back to the configured interval. */
    r = sync_req(e, T0 + 5100);
    assert_int_equal(respond(e, T0 + 5100, r->seq, false, 0, 0, NULL, 0, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_true(tg_sync_due(e, T0 + 6100));
}

static void clock_stepping_back_does_not_stall_sync(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    sync_ok(e, T0, NULL, 0);
    assert_false(tg_sync_due(e, T0 + 10));
    assert_true(tg_sync_due(e, T0 - 3600000));

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 - 3600000);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    tg_sync_failed(e, T0 - 3600000);
    assert_false(tg_sync_due(e, T0 - 3600000 + 100));
    assert_true(tg_sync_due(e, T0 - 7200000));
}

static void successful_sync_resets_backoff(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    Tollgate__V1__SyncRequest *r = sync_req(e, T0);
    uint64_t seq = r->seq;
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    uint64_t now = T0;
    for (int i = 0; i < 10; i++) {
        tg_sync_failed(e, now);
        now += 40000;
        assert_true(tg_sync_due(e, now)); /* capped at 30 s */
        r = sync_req(e, now);
        assert_int_equal(r->seq, seq);
        tollgate__v1__sync_request__free_unpacked(r, NULL);
    }
    tg_sync_failed(e, now);
    assert_false(tg_sync_due(e, now + 22499));
    assert_true(tg_sync_due(e, now + 30000));
    r = sync_req(e, now + 30000);
    assert_int_equal(respond(e, now + 30000, seq, false, 0, 0, NULL, 0, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    /* Back to the interval; a new failure starts again at 250 ms. */
    assert_true(tg_sync_due(e, now + 31000));
    r = sync_req(e, now + 31000);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    tg_sync_failed(e, now + 31000);
    assert_true(tg_sync_due(e, now + 31250));
}

static void long_challenge_token_becomes_deny(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    install(e, T0, 1, &API, 1);
    verify_ip(e, "192.0.2.1", T0 + 1);
    char tok[600];
    memset(tok, 'k', sizeof tok - 1);
    tok[sizeof tok - 1] = '\0';
    sspec s = {"api", "192.0.2.1", TOLLGATE__V1__ACTION__ACTION_CHALLENGE, 0, 5000, tok};
    sync_ok(e, T0 + 100, &s, 1);
    tg_decision d = verify_ip(e, "192.0.2.1", T0 + 200);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_BLOCKED);
}

/* ---------------------------------------------------------------- tokens */

static void require_token_missing_invalid_expired(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    add_keys(e);
    qspec qs[] = {{"auth", 100, 60, "claim:sub", "/api/", {NULL}, 5, false, false, true},
                  {"per-ip", 100, 60, "ip", "/api/", {NULL}, 5, false, false, false}};
    install(e, T0, 1, qs, 2);
    char p[200];
    snprintf(p, sizeof p, "{\"sub\":\"alice\",\"exp\":%llu}", NOW_S + 3600);

    /* No token, or not a Bearer one: missing_token. */
    tg_decision d = verify_tok(e, "192.0.2.1", NULL, T0 + 1);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_MISSING_TOKEN);
    assert_int_equal(d.status, 401);
    assert_headers(&d, "WWW-Authenticate: Bearer\r\n");
    d = verify_full(e, "/api/x", "192.0.2.1", "Basic YWxpY2U6cHc=", NULL, NULL, 0, T0 + 1);
    assert_int_equal(d.reason, TG_REASON_MISSING_TOKEN);

    /* Forged (another key) or malformed: invalid_token; alg none:
     * unsupported_alg; a kid no key has: unknown_kid. All are 401
     * invalid_token to the client. */
    char forged[600], none[600], stranger[600];
    strcpy(forged, jws("{\"alg\":\"HS256\",\"kid\":\"j1\"}", p, "guessed-secret"));
    strcpy(none, jws("{\"alg\":\"none\",\"kid\":\"j1\"}", p, JWT_KEY));
    strcpy(stranger, jws("{\"alg\":\"HS256\",\"kid\":\"j9\"}", p, JWT_KEY));
    const struct {
        const char *tok;
        tg_reason want;
    } bad[] = {{forged, TG_REASON_INVALID_TOKEN},   {"not-a-jwt", TG_REASON_INVALID_TOKEN},
               {"", TG_REASON_INVALID_TOKEN},       {"a.b.c", TG_REASON_INVALID_TOKEN},
               {none, TG_REASON_UNSUPPORTED_ALG},   {stranger, TG_REASON_UNKNOWN_KID}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d = verify_tok(e, "192.0.2.1", bad[i].tok, T0 + 2);
        assert_int_equal(d.kind, TG_DENY);
        assert_int_equal(d.reason, bad[i].want);
        assert_int_equal(d.status, 401);
        assert_headers(&d, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n");
    }
    assert_string_equal(tg_reason_name(TG_REASON_UNKNOWN_KID), "unknown_kid");
    assert_string_equal(tg_reason_name(TG_REASON_UNSUPPORTED_ALG), "unsupported_alg");

    /* Expired beyond the leeway, or not yet valid: token_expired. */
    snprintf(p, sizeof p, "{\"sub\":\"alice\",\"exp\":%llu}", NOW_S - 120);
    d = verify_tok(e, "192.0.2.1", jwt(p), T0 + 3);
    assert_int_equal(d.reason, TG_REASON_TOKEN_EXPIRED);
    assert_int_equal(d.status, 401);
    assert_headers(&d, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n");
    snprintf(p, sizeof p, "{\"sub\":\"alice\",\"nbf\":%llu}", NOW_S + 120);
    assert_int_equal(verify_tok(e, "192.0.2.1", jwt(p), T0 + 3).reason, TG_REASON_TOKEN_EXPIRED);

    /* A good token: Allow. */
    snprintf(p, sizeof p, "{\"sub\":\"alice\",\"exp\":%llu}", NOW_S + 3600);
    d = verify_tok(e, "192.0.2.1", jwt(p), T0 + 4);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(d.status, 200);
    assert_true(remaining(&d) >= 0);

    /* No quota matches: nothing is looked at, a forged token passes. */
    d = verify_full(e, "/static/x", "192.0.2.1", bearer(forged), NULL, NULL, 0, T0 + 5);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(d.headers.len, 0);

    /* Counts: refused tokens are denials of the quota keyed without
     * claims; the claim-keyed one cannot key them. A missing token is
     * the require_token quota's refusal alone. */
    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    assert_count(r, "per-ip", "192.0.2.1", 1, 8, 0);
    assert_count(r, "auth", "alice", 1, 0, 0);
    assert_int_equal(r->n_counts, 2);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

/* A token whose signature the host checks (every algorithm but HS256):
 * tg_verify() asks before counting anything, the request comes back with
 * the host's verdict, and the token's later requests decide at once. */
static void host_checked_signature(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    int k = tg_add_key_alg(e, TG_KEY_JWT, TG_ALG_ES256, S("ec-1"), NULL, 0);
    assert_int_equal(k, 0);
    assert_int_equal(tg_add_key_alg(e, TG_KEY_CLEARANCE, TG_ALG_ES256, S("c"), NULL, 0), TG_EINVAL);
    qspec qs[] = {{"auth", 100, 60, "claim:sub", "/api/", {NULL}, 5, false, false, true}};
    install(e, T0, 1, qs, 1);
    char h64[100], p64[100], tok[400], p[100], sig64[100];
    uint8_t sig[64];
    memset(sig, 0x5a, sizeof sig);
    snprintf(p, sizeof p, "{\"sub\":\"carol\",\"exp\":%llu.25}", NOW_S + 3600);
    const char *h = "{\"alg\":\"ES256\",\"kid\":\"ec-1\"}";
    b64url(h, strlen(h), h64);
    b64url(p, strlen(p), p64);
    b64url(sig, 64, sig64);
    snprintf(tok, sizeof tok, "%s.%s.%s", h64, p64, sig64);

    tg_request req = {.method = S("GET"), .path = S("/api/x"), .host = S("example.com"),
                      .client_ip = S("192.0.2.1"), .authorization = S(bearer(tok)),
                      .now_ms = T0 + 1};
    tg_decision d;
    assert_int_equal(tg_verify(e, &req, &d), 0);
    assert_int_equal(d.kind, TG_CHECK_SIGNATURE);
    assert_int_equal(d.sig_alg, TG_ALG_ES256);
    assert_int_equal(d.sig_keys, 1u << k);
    assert_int_equal(d.token.len, strlen(h64) + 1 + strlen(p64));
    assert_memory_equal(d.token.p, tok, d.token.len);
    assert_int_equal(d.headers.len, 64);
    assert_memory_equal(d.headers.p, sig, 64);

    /* The host's check failed: invalid_token, counted once. */
    req.sig_verdict = -1;
    assert_int_equal(tg_verify(e, &req, &d), 0);
    assert_int_equal(d.reason, TG_REASON_INVALID_TOKEN);
    req.sig_verdict = 0;
    assert_int_equal(tg_verify(e, &req, &d), 0);
    assert_int_equal(d.reason, TG_REASON_INVALID_TOKEN);

    /* A new token, verified by the host under key k: keyed on its sub. */
    snprintf(p, sizeof p, "{\"sub\":\"dave\"}");
    b64url(p, strlen(p), p64);
    snprintf(tok, sizeof tok, "%s.%s.%s", h64, p64, sig64);
    req.authorization = S(bearer(tok));
    assert_int_equal(tg_verify(e, &req, &d), 0);
    assert_int_equal(d.kind, TG_CHECK_SIGNATURE);
    req.sig_verdict = k + 1;
    assert_int_equal(tg_verify(e, &req, &d), 0);
    assert_int_equal(d.kind, TG_ALLOW);
    req.sig_verdict = 0;
    assert_int_equal(tg_verify(e, &req, &d), 0);
    assert_int_equal(d.kind, TG_ALLOW);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    assert_count(r, "auth", "dave", 2, 0, 0);
    assert_int_equal(r->n_counts, 1);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

/* A token problem decides only through an enforced quota; shadow quotas
 * count what they would have done. */
static void shadow_quotas_count_token_refusals(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    add_keys(e);
    qspec q = {"trial", 100, 60, "ip", "/api/", {NULL}, 5, true, false, true};
    install(e, T0, 1, &q, 1);
    assert_int_equal(verify_tok(e, "192.0.2.1", NULL, T0 + 1).kind, TG_ALLOW);
    assert_int_equal(verify_tok(e, "192.0.2.1", "junk", T0 + 1).kind, TG_ALLOW);
    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    assert_count(r, "trial", "192.0.2.1", 0, 2, 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

static void claim_keyed_quota_counts_per_claim(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    add_keys(e);
    qspec qs[] = {{"tenant", 100, 60, "claim:tenant", "/api/", {NULL}, 5, false, false, false},
                  {"user-ip", 100, 60, "claim:sub+ip", "/api/", {NULL}, 5, false, false, false}};
    install(e, T0, 1, qs, 2);
    static const char *payloads[] = {
        "{\"sub\":\"alice\",\"tenant\":\"acme\"}",
        "{\"sub\":\"alice\",\"tenant\":\"acme\"}",
        "{\"sub\":\"bob\",\"tenant\":\"globex\"}",
        "{\"sub\":\"carol\",\"tenant\":42}",
        "{\"sub\":\"dave\",\"tenant\":\"a|b%\"}",
        "{\"sub\":\"erin\",\"tenant\":true}",        /* not a string or number */
        "{\"sub\":\"frank\"}",                          /* no tenant */
        "{\"sub\":\"gina\",\"tenant\":\"\"}",           /* empty */
    };
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++)
        assert_int_equal(verify_tok(e, "192.0.2.7", jwt(payloads[i]), T0 + 1).kind, TG_ALLOW);
    /* No token: both quotas need a claim, neither counts it. */
    tg_decision d = verify_tok(e, "192.0.2.7", NULL, T0 + 1);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(d.headers.len, 0);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    assert_count(r, "tenant", "acme", 2, 0, 0);
    assert_count(r, "tenant", "globex", 1, 0, 0);
    assert_count(r, "tenant", "42", 1, 0, 0);
    assert_count(r, "tenant", "a%7Cb%25", 1, 0, 0);
    assert_count(r, "user-ip", "alice|192.0.2.7", 2, 0, 0);
    assert_count(r, "user-ip", "erin|192.0.2.7", 1, 0, 0);
    assert_count(r, "user-ip", "gina|192.0.2.7", 1, 0, 0);
    assert_int_equal(r->n_counts, 4 + 7);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

/* The token cache holds the claims the policy named when it was filled: a
 * new policy naming other claims must not be served the old ones. */
static void policy_change_reads_new_claims(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    add_keys(e);
    qspec v1 = {"q", 100, 60, "claim:sub", "", {NULL}, 5, false, false, false};
    qspec v2 = {"q2", 100, 60, "claim:plan", "", {NULL}, 5, false, false, false};
    install(e, T0, 1, &v1, 1);
    const char *t = jwt("{\"sub\":\"alice\",\"plan\":\"gold\"}");
    char tok[1024];
    strcpy(tok, t);
    assert_int_equal(verify_tok(e, "192.0.2.1", tok, T0 + 1).kind, TG_ALLOW);
    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    assert_count(r, "q", "alice", 1, 0, 0);
    assert_int_equal(respond(e, T0 + 100, r->seq, false, 0, 2, &v2, 1, NULL, 0), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    assert_int_equal(tg_policy_version(e), 2);
    assert_int_equal(verify_tok(e, "192.0.2.1", tok, T0 + 200).kind, TG_ALLOW);
    r = sync_req(e, T0 + 1200);
    assert_count(r, "q2", "gold", 1, 0, 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

static void header_keyed_quota(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    char names[64];
    assert_int_equal(tg_header_names(e, names, sizeof names), 0);
    qspec qs[] = {{"apikey", 100, 60, "header:x-api-key", "/api/", {NULL}, 1, false, false, false},
                  {"ua", 100, 60, "header:user-agent+header:x-api-key", "/api/", {NULL}, 5, false,
                   false, false}};
    install(e, T0, 1, qs, 2);
    assert_int_equal(tg_header_names(e, names, sizeof names), 21);
    assert_memory_equal(names, "x-api-key\nuser-agent\n", 21);
    assert_int_equal(tg_header_names(e, names, 20), TG_ENOSPC);

    tg_header k1[] = {{S("x-api-key"), S("k1")}, {S("user-agent"), S("curl/8")}};
    tg_header k2[] = {{S("x-api-key"), S("k2")}};
    assert_int_equal(verify_full(e, "/api/x", "192.0.2.1", NULL, NULL, k1, 2, T0 + 1).kind, TG_ALLOW);
    /* Floor 1: the second request with k1 is refused, from another IP too. */
    tg_decision d = verify_full(e, "/api/x", "192.0.2.2", NULL, NULL, k1, 2, T0 + 2);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_RATE_LIMITED);
    assert_int_equal(verify_full(e, "/api/x", "192.0.2.1", NULL, NULL, k2, 1, T0 + 3).kind, TG_ALLOW);
    /* Without the header the quota does not count the request. */
    d = verify_full(e, "/api/x", "192.0.2.1", NULL, NULL, NULL, 0, T0 + 4);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(d.headers.len, 0);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 100);
    assert_count(r, "apikey", "k1", 1, 1, 0);
    assert_count(r, "apikey", "k2", 1, 0, 0);
    assert_count(r, "ua", "curl/8|k1", 1, 0, 0);  /* refused by the other quota */
    assert_int_equal(r->n_counts, 3);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
}

static void clearance_lets_challenged_key_through(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    add_keys(e);
    install(e, T0, 1, &API, 1);
    const char *ip = "192.0.2.9";
    verify_ip(e, ip, T0 + 1);
    sspec s = {"api", ip, TOLLGATE__V1__ACTION__ACTION_CHALLENGE, 0, 60000, "captcha-tok"};
    sync_ok(e, T0 + 100, &s, 1);
    uint64_t now = T0 + 200;

    tg_decision d = verify_full(e, "/api/x", ip, NULL, NULL, NULL, 0, now);
    assert_int_equal(d.kind, TG_CHALLENGE);

    /* A valid clearance for this quota and key: Allow, though the bucket
     * is empty (the lease was 0). */
    const char *good = clearance("api", ip, NOW_S + 300, CLR_KEY);
    for (int i = 0; i < 3; i++) {
        d = verify_full(e, "/api/x", ip, NULL, good, NULL, 0, now);
        assert_int_equal(d.kind, TG_ALLOW);
        assert_int_equal(d.status, 200);
    }

    /* Everything else is no clearance: the challenge stands, never a Deny. */
    char cookie[1300];
    const char *others[] = {
        clearance("api", "192.0.2.10", NOW_S + 300, CLR_KEY),   /* another key */
        clearance("other", ip, NOW_S + 300, CLR_KEY),           /* another quota */
        clearance("api", ip, NOW_S - 120, CLR_KEY),             /* expired */
        clearance("api", ip, NOW_S + 300, JWT_KEY),             /* bad signature */
        "tollgate_clearance=garbage",
        "tollgate_clearance=",
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        strcpy(cookie, others[i]);
        d = verify_full(e, "/api/x", ip, NULL, cookie, NULL, 0, now);
        if (d.kind != TG_CHALLENGE)
            fail_msg("cookie %zu was a clearance", i);
    }
    /* A client JWT is not a clearance either, even for the right claims. */
    char p[300];
    snprintf(p, sizeof p, "tollgate_clearance=%s", jwt("{\"q\":\"api\",\"kh\":\"x\",\"exp\":9999999999}"));
    assert_int_equal(verify_full(e, "/api/x", ip, NULL, p, NULL, 0, now).kind, TG_CHALLENGE);

    Tollgate__V1__SyncRequest *r = sync_req(e, T0 + 1200);
    assert_count(r, "api", ip, 3, 0, 1 + 6 + 1);
    uint64_t seq = r->seq;
    tollgate__v1__sync_request__free_unpacked(r, NULL);

    /* A DENY is not lifted by a clearance. */
    sspec deny = {"api", ip, TOLLGATE__V1__ACTION__ACTION_DENY, 0, 60000, NULL};
    assert_int_equal(respond(e, T0 + 1200, seq, false, 0, 0, NULL, 0, &deny, 1), 0);
    d = verify_full(e, "/api/x", ip, NULL, clearance("api", ip, NOW_S + 300, CLR_KEY), NULL, 0,
                    T0 + 1300);
    assert_int_equal(d.reason, TG_REASON_BLOCKED);
}

/* ---------------------------------------------------------------- staleness */

static void staleness_decays_to_the_floor(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    qspec qs[] = {{"open", 100000, 60, "ip", "/o/", {NULL}, 2, false, true, false},
                  {"closed", 100000, 60, "ip", "/c/", {NULL}, 2, false, false, false}};
    install(e, T0, 1, qs, 2);
    verify_at(e, "GET", "/o/", "192.0.2.1", T0 + 1);
    verify_at(e, "GET", "/c/", "192.0.2.1", T0 + 1);
    sspec ss[] = {{"open", "192.0.2.1", 0, 1000, 0, NULL}, {"closed", "192.0.2.1", 0, 1000, 0, NULL}};
    sync_ok(e, T0 + 100, ss, 2);
    /* From now on every sync fails. Interval 1 s: grace 3 s, half-life 10 s. */
    const uint64_t ok = T0 + 100, stale = ok + 3000;

    /* Within grace: the lease, untouched. */
    verify_at(e, "GET", "/c/", "192.0.2.1", stale);
    assert_int_equal(tokens_of(e, "closed", "192.0.2.1"), 999);
    /* One half-life beyond: at most 500. */
    verify_at(e, "GET", "/c/", "192.0.2.1", stale + 10000);
    assert_int_equal(tokens_of(e, "closed", "192.0.2.1"), 499);
    /* Spent, it refills at A per 60 s window: 16 s beyond grace A is
     * 500 * (1 - 0.6 / 2) = 350, and 6 s of it is 35 tokens. */
    for (int i = 0; i < 499; i++)
        assert_int_equal(verify_at(e, "GET", "/c/", "192.0.2.1", stale + 10000).kind, TG_ALLOW);
    assert_int_equal(verify_at(e, "GET", "/c/", "192.0.2.1", stale + 10000).kind, TG_DENY);
    tg_decision d = verify_at(e, "GET", "/c/", "192.0.2.1", stale + 16000);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(tokens_of(e, "closed", "192.0.2.1"), 34);

    /* Ten half-lives on, A is at the floor (2): fail-closed stops refilling. */
    uint64_t far = stale + 100000;
    int allowed = 0;
    for (int i = 0; i < 5; i++)
        allowed += verify_at(e, "GET", "/c/", "192.0.2.1", far).kind == TG_ALLOW;
    assert_int_equal(allowed, 2);
    d = verify_at(e, "GET", "/c/", "192.0.2.1", far + 120000);
    assert_int_equal(d.kind, TG_DENY);
    assert_int_equal(d.reason, TG_REASON_RATE_LIMITED);

    /* Fail-open keeps granting the floor per window (60 s). */
    allowed = 0;
    for (int i = 0; i < 5; i++)
        allowed += verify_at(e, "GET", "/o/", "192.0.2.1", far).kind == TG_ALLOW;
    assert_int_equal(allowed, 2);
    assert_int_equal(verify_at(e, "GET", "/o/", "192.0.2.1", far + 15000).kind, TG_DENY);
    assert_int_equal(verify_at(e, "GET", "/o/", "192.0.2.1", far + 30000).kind, TG_ALLOW);
    assert_int_equal(verify_at(e, "GET", "/o/", "192.0.2.1", far + 30001).kind, TG_DENY);

    /* A sync that succeeds ends it: the new lease counts. */
    sspec again = {"closed", "192.0.2.1", 0, 50, 0, NULL};
    uint64_t back = far + 200000;
    Tollgate__V1__SyncRequest *r = sync_req(e, back);
    assert_int_equal(respond(e, back, r->seq, false, 0, 0, NULL, 0, &again, 1), 0);
    tollgate__v1__sync_request__free_unpacked(r, NULL);
    d = verify_at(e, "GET", "/c/", "192.0.2.1", back + 1);
    assert_int_equal(d.kind, TG_ALLOW);
    assert_int_equal(tokens_of(e, "closed", "192.0.2.1"), 49);
}

/* ---------------------------------------------------------------- host API */

static void key_and_option_arguments(void **state)
{
    tg_edge *e = ((fx *)*state)->e;
    const uint8_t s[] = "secret";
    assert_int_equal(tg_add_key(NULL, TG_KEY_JWT, S("k"), s, 6), TG_EINVAL);
    assert_int_equal(tg_add_key(e, 7, S("k"), s, 6), TG_EINVAL);
    assert_int_equal(tg_add_key(e, TG_KEY_JWT, S("k"), NULL, 6), TG_EINVAL);
    assert_int_equal(tg_add_key(e, TG_KEY_JWT, S("k"), s, 0), TG_EINVAL);
    assert_int_equal(tg_add_key(e, TG_KEY_CLEARANCE, S(""), s, 6), 0);
    tg_jwt_options o = {30, S("iss"), S("aud"), 0};
    assert_int_equal(tg_jwt_configure(NULL, &o), TG_EINVAL);
    assert_int_equal(tg_jwt_configure(e, NULL), TG_EINVAL);
    assert_int_equal(tg_jwt_configure(e, &o), 0);
    o.max_token_bytes = 20000;
    assert_int_equal(tg_jwt_configure(e, &o), TG_EINVAL);
    assert_int_equal(tg_header_names(NULL, NULL, 0), TG_EINVAL);
    assert_int_equal(tg_header_names(e, NULL, 0), 0);
    assert_string_equal(tg_reason_name(TG_REASON_MISSING_TOKEN), "missing_token");
    assert_string_equal(tg_reason_name(TG_REASON_TOKEN_EXPIRED), "token_expired");
    assert_string_equal(tg_reason_name(TG_REASON_INVALID_TOKEN), "invalid_token");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_rejects_bad_arguments),
        cmocka_unit_test_setup_teardown(no_policy_allows_and_syncs_at_once, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(new_key_gets_floor_then_rate_limited, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(lease_replaces_allowance_minus_admitted_since_freeze,
                                        setup_edge, teardown),
        cmocka_unit_test_setup_teardown(challenge_then_reset, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(deny_blocks_until_reset, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(failed_sync_resends_same_seq_and_counts, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(degraded_answer_keeps_the_batch, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(method_and_path_matching, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(most_severe_quota_wins, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(shadow_quota_counts_but_always_allows, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(unkeyable_requests_are_bad_requests, setup_edge, teardown),
        cmocka_unit_test_teardown(full_table_never_loses_counts, teardown),
        cmocka_unit_test_teardown(eviction_spares_blocked_keys, teardown),
        cmocka_unit_test_teardown(eviction_spill_sends_counts_next_batch, teardown),
        cmocka_unit_test_setup_teardown(batch_is_capped_not_lost, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(policy_swap_keeps_surviving_counts, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(invalid_policy_is_refused_whole, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(refused_policy_is_reported, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(conflict_renumbers_the_batch, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(next_sync_ms_sets_the_interval, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(clock_stepping_back_does_not_stall_sync, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(successful_sync_resets_backoff, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(long_challenge_token_becomes_deny, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(require_token_missing_invalid_expired, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(host_checked_signature, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(ratelimit_r_is_the_global_view, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(shadow_quotas_count_token_refusals, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(claim_keyed_quota_counts_per_claim, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(policy_change_reads_new_claims, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(header_keyed_quota, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(clearance_lets_challenged_key_through, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(staleness_decays_to_the_floor, setup_edge, teardown),
        cmocka_unit_test_setup_teardown(key_and_option_arguments, setup_edge, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
