/* test_wire.c — the edge's protobuf codec (edge-module/src/wire.c) against
 * protoc-c, the implementation the coordinator uses: SyncRequests the edge
 * encodes must be byte-identical to protobuf-c's packing of the same
 * message, SyncResponses protobuf-c packs must decode to the same values,
 * and malformed input must be refused the way protobuf defines it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgate.pb-c.h"
#include "wire.h"
#include "test_rand.h"

#define ROUNDS 2000

/* ---------------------------------------------------------------- random */

static uint64_t below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

/* Biased to what breaks codecs: defaults, varint-length boundaries, max. */
static uint64_t rnd_u64(void)
{
    static const uint64_t edges[] = {0, 1, 127, 128, 16383, 16384, 0xffffffffull,
                                     0x100000000ull, (1ull << 63) - 1, 1ull << 63,
                                     UINT64_MAX};
    switch (below(4)) {
    case 0: return 0;
    case 1: return edges[below(sizeof edges / sizeof edges[0])];
    case 2: return below(1000);
    default: return rnd() >> below(64);
    }
}

/* Every test's allocations, freed together after each round. */
static void *arena[1 << 16];
static size_t arena_n;

static void *arena_alloc(size_t n)
{
    assert_true(arena_n < sizeof arena / sizeof arena[0]);
    void *p = calloc(1, n ? n : 1);
    assert_non_null(p);
    arena[arena_n++] = p;
    return p;
}

static void arena_free(void)
{
    while (arena_n)
        free(arena[--arena_n]);
}

/* A NUL-terminated string (protobuf-c strings end at NUL) with no NUL
 * inside: empty, ASCII, UTF-8 multibyte, arbitrary high bytes; lengths
 * around the varint boundary 127/128 and the edge's caps. */
static char *rnd_str(size_t max)
{
    static const size_t lens[] = {0, 1, 2, 15, 16, 17, 63, 64, 65, 95, 96, 97, 127, 128, 129, 300};
    size_t len = below(3) == 0 ? lens[below(sizeof lens / sizeof lens[0])] : below(24);
    if (len > max)
        len = max;
    char *s = arena_alloc(len + 1);
    size_t i = 0;
    while (i < len) {
        switch (below(4)) {
        case 0:
            if (i + 3 <= len) { /* U+20AC EURO SIGN */
                memcpy(s + i, "\xe2\x82\xac", 3);
                i += 3;
                break;
            }
            /* fall through */
        case 1: s[i++] = (char)(1 + below(255)); break;
        default: s[i++] = (char)(' ' + below(95)); break;
        }
    }
    s[len] = '\0';
    return s;
}

static tg_str S(const char *s)
{
    return (tg_str){s, s ? strlen(s) : 0};
}

/* ---------------------------------------------------------------- (a) request */

static void check_request_roundtrip(size_t max_counts)
{
    Tollgate__V1__SyncRequest m = TOLLGATE__V1__SYNC_REQUEST__INIT;
    m.edge_id = rnd_str(64);
    m.seq = rnd_u64();
    m.sent_at_ms = rnd_u64();
    m.policy_version = rnd_u64();
    m.module_version = below(2) ? "0.1.0" : rnd_str(300);
    m.n_counts = below(max_counts + 1);
    m.counts = arena_alloc(m.n_counts * sizeof *m.counts);
    tg__keycount *kc = arena_alloc(m.n_counts * sizeof *kc);
    for (size_t i = 0; i < m.n_counts; i++) {
        Tollgate__V1__KeyCount *c = arena_alloc(sizeof *c);
        tollgate__v1__key_count__init(c);
        c->quota = rnd_str(300);
        c->key = rnd_str(300);
        c->admitted = rnd_u64();
        c->denied = rnd_u64();
        c->challenged = rnd_u64();
        m.counts[i] = c;
        kc[i] = (tg__keycount){S(c->quota), S(c->key), c->admitted, c->denied, c->challenged};
    }
    if (rnd_u64() % 4 == 0) {
        m.refused_policy_version = rnd_u64();
        m.refused_policy_reason = (Tollgate__V1__PolicyRefusal)(rnd_u64() % 6);
    }
    tg__reqhead h = {S(m.edge_id), m.seq, m.sent_at_ms, m.policy_version, S(m.module_version),
                     m.refused_policy_version, (uint64_t)m.refused_policy_reason};

    size_t want_len = tollgate__v1__sync_request__get_packed_size(&m);
    uint8_t *want = arena_alloc(want_len);
    assert_int_equal(tollgate__v1__sync_request__pack(&m, want), want_len);

    uint8_t *got = arena_alloc(want_len + 16);
    long n = tg__wire_encode_request(&h, kc, m.n_counts, got, want_len + 16);
    assert_int_equal(n, want_len);
    assert_memory_equal(got, want, want_len);
    if (want_len > 0)
        assert_int_equal(tg__wire_encode_request(&h, kc, m.n_counts, got, want_len - 1), TG_ENOSPC);

    Tollgate__V1__SyncRequest *u = tollgate__v1__sync_request__unpack(NULL, (size_t)n, got);
    assert_non_null(u);
    assert_string_equal(u->edge_id, m.edge_id);
    assert_int_equal(u->seq, m.seq);
    assert_int_equal(u->sent_at_ms, m.sent_at_ms);
    assert_int_equal(u->policy_version, m.policy_version);
    assert_string_equal(u->module_version, m.module_version);
    assert_int_equal(u->refused_policy_version, m.refused_policy_version);
    assert_int_equal(u->refused_policy_reason, m.refused_policy_reason);
    assert_int_equal(u->n_counts, m.n_counts);
    for (size_t i = 0; i < m.n_counts; i++) {
        assert_string_equal(u->counts[i]->quota, m.counts[i]->quota);
        assert_string_equal(u->counts[i]->key, m.counts[i]->key);
        assert_int_equal(u->counts[i]->admitted, m.counts[i]->admitted);
        assert_int_equal(u->counts[i]->denied, m.counts[i]->denied);
        assert_int_equal(u->counts[i]->challenged, m.counts[i]->challenged);
    }
    tollgate__v1__sync_request__free_unpacked(u, NULL);
}

static void request_matches_protoc_c(void **state)
{
    (void)state;
    rng_state = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < ROUNDS; i++) {
        check_request_roundtrip(i % 50 == 0 ? 400 : 12);
        arena_free();
    }
}

static void request_empty_and_extremes(void **state)
{
    (void)state;
    uint8_t buf[64];
    tg__reqhead h = {{"", 0}, 0, 0, 0, {"", 0}, 0, 0};
    assert_int_equal(tg__wire_encode_request(&h, NULL, 0, buf, 0), 0);

    /* An all-default KeyCount is still an element: tag 0x32, length 0. */
    tg__keycount zero = {{"", 0}, {"", 0}, 0, 0, 0};
    assert_int_equal(tg__wire_encode_request(&h, &zero, 1, buf, sizeof buf), 2);
    assert_int_equal(buf[0], 0x32);
    assert_int_equal(buf[1], 0x00);

    /* UINT64_MAX is a ten-byte varint ending in 0x01. */
    h.seq = UINT64_MAX;
    assert_int_equal(tg__wire_encode_request(&h, NULL, 0, buf, sizeof buf), 11);
    assert_int_equal(buf[0], 0x10);
    assert_int_equal(buf[10], 0x01);
}

/* ---------------------------------------------------------------- (b) response */

static int32_t rnd_action(void)
{
    static const int32_t v[] = {0, 1, 2, 1, 2, 5, -1};
    return v[below(sizeof v / sizeof v[0])];
}

static double rnd_double(void)
{
    static const double v[] = {0.0, 1.0, 2.5, -3.25, 1e300, 5e-324};
    if (below(2))
        return v[below(sizeof v / sizeof v[0])];
    uint64_t bits = rnd();
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static Tollgate__V1__Quota *rnd_quota(int *refused)
{
    Tollgate__V1__Quota *q = arena_alloc(sizeof *q);
    tollgate__v1__quota__init(q);
    q->name = rnd_str(80);
    q->limit = rnd_u64();
    q->window_s = (uint32_t)rnd_u64();
    q->key = below(2) ? "ip" : below(2) ? "claim:sub+header:x-api-key" : rnd_str(200);
    q->path_prefix = below(2) ? "/api/" : rnd_str(140);
    q->n_methods = below(8) == 0 ? 9 : below(4);
    q->methods = arena_alloc(q->n_methods * sizeof *q->methods);
    for (size_t i = 0; i < q->n_methods; i++)
        q->methods[i] = below(2) ? "GET" : rnd_str(20);
    q->action = (Tollgate__V1__Action)rnd_action();
    q->floor = rnd_u64();
    q->shadow = (protobuf_c_boolean)below(2);
    q->fail_open = (protobuf_c_boolean)below(2);
    q->deny_after = rnd_double();
    q->require_token = (protobuf_c_boolean)below(2);

    if (strlen(q->name) > TG__NAME_CAP || strlen(q->path_prefix) > TG__PREFIX_CAP ||
        q->n_methods > TG__MAX_METHODS)
        *refused = 1;
    for (size_t i = 0; i < q->n_methods; i++)
        if (strlen(q->methods[i]) == 0 || strlen(q->methods[i]) > TG__METHOD_CAP)
            *refused = 1;
    return q;
}

static void assert_quota(const tg__quota *g, const Tollgate__V1__Quota *w)
{
    assert_memory_equal(g->name, w->name, g->name_len);
    assert_int_equal(g->name_len, strlen(w->name));
    assert_int_equal(g->limit, w->limit);
    assert_int_equal(g->window_s, w->window_s);
    if (strlen(w->key) <= TG__TEMPLATE_CAP) {
        assert_int_equal(g->key_len, strlen(w->key));
        assert_memory_equal(g->key, w->key, g->key_len);
    } else {
        assert_int_equal(g->key_len, 0);
    }
    assert_int_equal(g->require_token, !!w->require_token);
    assert_int_equal(g->prefix_len, strlen(w->path_prefix));
    assert_memory_equal(g->prefix, w->path_prefix, g->prefix_len);
    assert_int_equal(g->n_methods, w->n_methods);
    for (size_t i = 0; i < w->n_methods; i++) {
        assert_int_equal(g->method_len[i], strlen(w->methods[i]));
        assert_memory_equal(g->methods[i], w->methods[i], g->method_len[i]);
    }
    assert_int_equal(g->action, (int32_t)w->action);
    assert_int_equal(g->floor, w->floor);
    assert_int_equal(g->shadow, !!w->shadow);
    assert_int_equal(g->fail_open, !!w->fail_open);
    assert_memory_equal(&g->deny_after, &w->deny_after, sizeof(double));
}

/* Compares what the edge decoded from buf with protobuf-c's reading. */
static void assert_response(const uint8_t *buf, size_t len, const tg__response *r,
                            const tg__policy *pol, const Tollgate__V1__SyncResponse *w)
{
    assert_int_equal(r->acked_seq, w->acked_seq);
    assert_int_equal(r->next_sync_ms, w->next_sync_ms);
    assert_int_equal(r->degraded, !!w->degraded);
    assert_int_equal(r->policy_version, w->policy_version);
    assert_int_equal(r->server_time_ms, w->server_time_ms);
    assert_int_equal(r->n_states, w->n_states);

    size_t pos = 0, i = 0;
    tg__keystate ks;
    while (tg__wire_next_state(buf, len, &pos, &ks)) {
        const Tollgate__V1__KeyState *s = w->states[i++];
        assert_int_equal(ks.quota.len, strlen(s->quota));
        assert_memory_equal(ks.quota.p, s->quota, ks.quota.len);
        assert_int_equal(ks.key.len, strlen(s->key));
        assert_memory_equal(ks.key.p, s->key, ks.key.len);
        assert_int_equal(ks.action, (int32_t)s->action);
        assert_int_equal(ks.lease, s->lease);
        assert_int_equal(ks.reset_ms, s->reset_ms);
        assert_int_equal(ks.challenge_token.len, strlen(s->challenge_token));
        assert_memory_equal(ks.challenge_token.p, s->challenge_token, ks.challenge_token.len);
        assert_int_equal(ks.count, s->count);
    }
    assert_int_equal(i, w->n_states);

    assert_int_equal(r->has_policy, w->policy != NULL);
    if (!w->policy)
        return;
    assert_int_equal(pol->version, w->policy->version);
    assert_int_equal(pol->sync_interval_ms, w->policy->sync_interval_ms);
    assert_int_equal(pol->clearance_ttl_s, w->policy->clearance_ttl_s);
    if (pol->refused)
        return;
    assert_int_equal(pol->n_quotas, w->policy->n_quotas);
    for (size_t q = 0; q < pol->n_quotas; q++)
        assert_quota(&pol->quotas[q], w->policy->quotas[q]);
}

static Tollgate__V1__SyncResponse *rnd_response(int *refused)
{
    Tollgate__V1__SyncResponse *m = arena_alloc(sizeof *m);
    tollgate__v1__sync_response__init(m);
    m->acked_seq = rnd_u64();
    m->next_sync_ms = (uint32_t)rnd_u64();
    m->degraded = (protobuf_c_boolean)below(2);
    m->policy_version = rnd_u64();
    m->server_time_ms = rnd_u64();
    m->n_states = below(10) == 0 ? below(300) : below(6);
    m->states = arena_alloc(m->n_states * sizeof *m->states);
    for (size_t i = 0; i < m->n_states; i++) {
        Tollgate__V1__KeyState *s = arena_alloc(sizeof *s);
        tollgate__v1__key_state__init(s);
        s->quota = rnd_str(300);
        s->key = rnd_str(300);
        s->action = (Tollgate__V1__Action)rnd_action();
        s->lease = rnd_u64();
        s->reset_ms = rnd_u64();
        s->challenge_token = below(3) ? "" : rnd_str(600);
        s->count = rnd_u64();
        m->states[i] = s;
    }
    *refused = 0;
    if (below(2)) {
        Tollgate__V1__Policy *p = arena_alloc(sizeof *p);
        tollgate__v1__policy__init(p);
        p->version = rnd_u64();
        p->sync_interval_ms = (uint32_t)rnd_u64();
        p->clearance_ttl_s = (uint32_t)rnd_u64();
        p->n_quotas = below(8) == 0 ? TG__MAX_QUOTAS + below(3) : below(5);
        p->quotas = arena_alloc(p->n_quotas * sizeof *p->quotas);
        for (size_t i = 0; i < p->n_quotas; i++)
            p->quotas[i] = rnd_quota(refused);
        if (p->n_quotas > TG__MAX_QUOTAS)
            *refused = 1;
        m->policy = p;
    }
    return m;
}

static tg__policy pol;

static void response_matches_protoc_c(void **state)
{
    (void)state;
    rng_state = 0x2545f4914f6cdd1dull;
    int refusals = 0, policies = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int refused;
        Tollgate__V1__SyncResponse *m = rnd_response(&refused);
        size_t len = tollgate__v1__sync_response__get_packed_size(m);
        uint8_t *buf = arena_alloc(len);
        assert_int_equal(tollgate__v1__sync_response__pack(m, buf), len);

        tg__response r;
        tg__policy_reset(&pol);
        assert_int_equal(tg__wire_decode_response(buf, len, &r, &pol), 0);
        assert_response(buf, len, &r, &pol, m);
        if (m->policy) {
            policies++;
            assert_int_equal(pol.refused != 0, refused);
            refusals += refused;
        }
        arena_free();
    }
    /* The generator must exercise both outcomes. */
    assert_true(policies > ROUNDS / 4);
    assert_true(refusals > 0 && refusals < policies);
}

/* protobuf merges a message field that occurs twice: scalars of the later
 * one win, repeated fields append. */
static void response_policy_merges(void **state)
{
    (void)state;
    Tollgate__V1__Quota qa = TOLLGATE__V1__QUOTA__INIT, qb = TOLLGATE__V1__QUOTA__INIT;
    Tollgate__V1__Quota *qs1[] = {&qa}, *qs2[] = {&qb};
    Tollgate__V1__Policy p1 = TOLLGATE__V1__POLICY__INIT, p2 = TOLLGATE__V1__POLICY__INIT;
    Tollgate__V1__SyncResponse m = TOLLGATE__V1__SYNC_RESPONSE__INIT;
    uint8_t buf[512];
    size_t n;

    qa.name = "a";
    qb.name = "b";
    p1.version = 5;
    p1.n_quotas = 1;
    p1.quotas = qs1;
    p1.sync_interval_ms = 700;
    p2.version = 6;
    p2.n_quotas = 1;
    p2.quotas = qs2;
    m.policy = &p1;
    n = tollgate__v1__sync_response__pack(&m, buf);
    m.policy = &p2;
    n += tollgate__v1__sync_response__pack(&m, buf + n);

    tg__response r;
    tg__policy_reset(&pol);
    assert_int_equal(tg__wire_decode_response(buf, n, &r, &pol), 0);
    assert_int_equal(pol.version, 6);
    assert_int_equal(pol.sync_interval_ms, 700);
    assert_int_equal(pol.n_quotas, 2);
    assert_memory_equal(pol.quotas[0].name, "a", 1);
    assert_memory_equal(pol.quotas[1].name, "b", 1);
}

/* ---------------------------------------------------------------- malformed */

static int decode(const uint8_t *buf, size_t len)
{
    tg__response r;
    tg__policy_reset(&pol);
    return tg__wire_decode_response(buf, len, &r, &pol);
}

/* Truncation mid-field is an error; truncation at a field boundary is, by
 * protobuf's own rules, a shorter valid message. Either way the edge must
 * agree with protobuf-c, and read the same values when both accept. */
static void truncation_agrees_with_protoc_c(void **state)
{
    (void)state;
    rng_state = 42;
    int rejected = 0, accepted = 0;
    for (int round = 0; round < 40; round++) {
        int refused;
        Tollgate__V1__SyncResponse *m = rnd_response(&refused);
        size_t len = tollgate__v1__sync_response__get_packed_size(m);
        uint8_t *buf = arena_alloc(len);
        tollgate__v1__sync_response__pack(m, buf);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees overreads */
            memcpy(copy, buf, cut);
            Tollgate__V1__SyncResponse *u = tollgate__v1__sync_response__unpack(NULL, cut, copy);
            tg__response r;
            tg__policy_reset(&pol);
            int rc = tg__wire_decode_response(copy, cut, &r, &pol);
            if (u) {
                assert_int_equal(rc, 0);
                assert_response(copy, cut, &r, &pol, u);
                tollgate__v1__sync_response__free_unpacked(u, NULL);
                accepted++;
            } else {
                assert_int_equal(rc, TG_EPROTO);
                rejected++;
            }
            free(copy);
        }
        arena_free();
    }
    assert_true(rejected > 0 && accepted > 0);
}

static void rejects_overlong_varints(void **state)
{
    (void)state;
    /* field 1 (acked_seq): 11-byte varint */
    static const uint8_t eleven[] = {0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                     0x80, 0x80, 0x80, 0x00};
    /* ten bytes whose last carries more than bit 63 */
    static const uint8_t wide[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0x02};
    /* ten bytes, last 0x01: exactly UINT64_MAX, fine */
    static const uint8_t max[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0x01};
    /* a non-minimal but short varint is valid protobuf */
    static const uint8_t padded[] = {0x08, 0x85, 0x80, 0x00};
    /* an overlong tag */
    static const uint8_t tag[] = {0x88, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                  0x80, 0x80, 0x80, 0x00, 0x01};
    tg__response r;

    assert_int_equal(decode(eleven, sizeof eleven), TG_EPROTO);
    assert_int_equal(decode(wide, sizeof wide), TG_EPROTO);
    assert_int_equal(decode(tag, sizeof tag), TG_EPROTO);
    tg__policy_reset(&pol);
    assert_int_equal(tg__wire_decode_response(max, sizeof max, &r, &pol), 0);
    assert_int_equal(r.acked_seq, UINT64_MAX);
    assert_int_equal(tg__wire_decode_response(padded, sizeof padded, &r, &pol), 0);
    assert_int_equal(r.acked_seq, 5);
}

static void rejects_bad_wire_types_and_lengths(void **state)
{
    (void)state;
    /* unknown field 9 with each invalid wire type: 3, 4 (groups), 6, 7 */
    for (uint8_t wt = 3; wt <= 7; wt++) {
        if (wt == 5)
            continue;
        uint8_t m[] = {(uint8_t)(9 << 3 | wt), 0, 0, 0, 0, 0, 0, 0, 0};
        assert_int_equal(decode(m, sizeof m), TG_EPROTO);
    }
    static const uint8_t field0[] = {0x00, 0x01};
    static const uint8_t past_end[] = {0x1a, 0x10, 0x0a, 0x01, 0x61};   /* states, len 16 of 3 */
    static const uint8_t huge_len[] = {0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    static const uint8_t nested_past[] = {0x1a, 0x03, 0x0a, 0x05, 0x61}; /* quota len 5 in 3 */
    static const uint8_t wrong_wt[] = {0x0a, 0x01, 0x61};               /* acked_seq as LEN */
    static const uint8_t wrong_nested[] = {0x32, 0x05, 0x0d, 1, 2, 3, 4}; /* policy.version as I32 */
    static const uint8_t short_double[] = {0x32, 0x06, 0x12, 0x04, 0x59, 0x01, 0x02, 0x03};
    static const uint8_t cut_fixed32[] = {0x7d, 0x01, 0x02};             /* field 15, I32, 2 bytes */
    assert_int_equal(decode(field0, sizeof field0), TG_EPROTO);
    assert_int_equal(decode(past_end, sizeof past_end), TG_EPROTO);
    assert_int_equal(decode(huge_len, sizeof huge_len), TG_EPROTO);
    assert_int_equal(decode(nested_past, sizeof nested_past), TG_EPROTO);
    assert_int_equal(decode(wrong_wt, sizeof wrong_wt), TG_EPROTO);
    assert_int_equal(decode(wrong_nested, sizeof wrong_nested), TG_EPROTO);
    assert_int_equal(decode(short_double, sizeof short_double), TG_EPROTO);
    assert_int_equal(decode(cut_fixed32, sizeof cut_fixed32), TG_EPROTO);
    assert_int_equal(decode(NULL, 0), 0);
}

/* Unknown fields of every wire type, at the top level and inside KeyState,
 * Policy and Quota, are skipped without changing what is read. */
static void skips_unknown_fields(void **state)
{
    (void)state;
    static const uint8_t unknown[] = {
        0xa0, 0x06, 0x96, 0x01,                               /* field 100 varint 150 */
        0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8,                   /* field 100 I64 */
        0xa2, 0x06, 0x03, 'x', 'y', 'z',                      /* field 100 LEN */
        0xa5, 0x06, 1, 2, 3, 4,                               /* field 100 I32 */
    };
    uint8_t buf[256];
    size_t n = 0;
#define PUT(...) do { static const uint8_t b_[] = {__VA_ARGS__}; memcpy(buf + n, b_, sizeof b_); n += sizeof b_; } while (0)
#define PUT_UNKNOWN() do { memcpy(buf + n, unknown, sizeof unknown); n += sizeof unknown; } while (0)
    PUT_UNKNOWN();
    PUT(0x08, 0x07);                                    /* acked_seq 7 */
    PUT(0x1a, 3 + sizeof unknown + 5);                  /* states[0] */
    PUT(0x0a, 0x01, 'q');
    PUT_UNKNOWN();
    PUT(0x12, 0x01, 'k', 0x20, 0x09);                   /* key "k", lease 9 */
    PUT(0x32, 2 + sizeof unknown + 2 + (sizeof unknown + 10) + sizeof unknown + 2); /* policy */
    PUT(0x08, 0x03);                                    /* version 3 */
    PUT_UNKNOWN();
    PUT(0x12, sizeof unknown + 10);                     /* quotas[0] */
    PUT_UNKNOWN();
    PUT(0x0a, 0x02, 'n', 'm', 0x22, 0x02, 'i', 'p', 0x18, 0x3c); /* name, key ip, window 60 */
    PUT_UNKNOWN();
    PUT(0x20, 0x01);                                    /* policy.clearance_ttl_s 1 */
    PUT(0x38, 0x2a);                                    /* server_time_ms 42 */
#undef PUT
#undef PUT_UNKNOWN

    /* protobuf-c agrees the message is valid and what it says. */
    Tollgate__V1__SyncResponse *u = tollgate__v1__sync_response__unpack(NULL, n, buf);
    assert_non_null(u);
    tg__response r;
    tg__policy_reset(&pol);
    assert_int_equal(tg__wire_decode_response(buf, n, &r, &pol), 0);
    assert_response(buf, n, &r, &pol, u);
    assert_int_equal(r.acked_seq, 7);
    assert_int_equal(r.server_time_ms, 42);
    assert_int_equal(pol.version, 3);
    assert_int_equal(pol.clearance_ttl_s, 1);
    assert_int_equal(pol.n_quotas, 1);
    assert_int_equal(pol.quotas[0].window_s, 60);
    assert_int_equal(pol.quotas[0].key_len, 2);
    assert_memory_equal(pol.quotas[0].key, "ip", 2);
    tollgate__v1__sync_response__free_unpacked(u, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_matches_protoc_c),
        cmocka_unit_test(request_empty_and_extremes),
        cmocka_unit_test(response_matches_protoc_c),
        cmocka_unit_test(response_policy_merges),
        cmocka_unit_test(truncation_agrees_with_protoc_c),
        cmocka_unit_test(rejects_overlong_varints),
        cmocka_unit_test(rejects_bad_wire_types_and_lengths),
        cmocka_unit_test(skips_unknown_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
