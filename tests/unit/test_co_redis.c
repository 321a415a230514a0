/* test_co_redis.c — redis.c and sync.lua against a real Redis.
 *
 * The URL parser is tested as a pure function. The script is tested for
 * real: the test starts a throwaway redis-server on a spare loopback port
 * (and stops exactly that PID at the end), then drives co_redis_eval_ints()
 * with the script's own KEYS/ARGV layout. Time is pinned: the script takes
 * the coordinator's clock from ARGV, so window rolls are tested by passing
 * a later time, not by waiting. Covered: window arithmetic, leases that
 * follow demand and never add up to more than what is left, expiry of
 * silent edges, idempotent retries, stale seqs, replays, challenge and deny
 * decisions, burst and per-key overrides, a batch split into pipelined
 * calls, NOSCRIPT recovery, and the deadline when Redis is gone or paused.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <hiredis.h>

#include "tollgated.h"
#include "test_redis_server.h"

/* ------------------------------------------------------------ URL parsing */
static void test_parse_url(void **state)
{
    struct co_redis_target t;
    char err[128];

    (void)state;
    assert_int_equal(co_redis_parse_url("redis://127.0.0.1:6390", 50, &t, err,
                                        sizeof err), CO_OK);
    assert_string_equal(t.host, "127.0.0.1");
    assert_int_equal(t.port, 6390);
    assert_string_equal(t.password, "");
    assert_int_equal(t.db, 0);
    assert_int_equal(t.timeout_ms, 50);

    assert_int_equal(co_redis_parse_url("redis://localhost", 10, &t, err,
                                        sizeof err), CO_OK);
    assert_string_equal(t.host, "localhost");
    assert_int_equal(t.port, 6379);

    assert_int_equal(co_redis_parse_url("redis://:s%40cret@h:1/3", 10, &t,
                                        err, sizeof err), CO_OK);
    assert_string_equal(t.user, "");
    assert_string_equal(t.password, "s@cret");
    assert_string_equal(t.host, "h");
    assert_int_equal(t.port, 1);
    assert_int_equal(t.db, 3);

    assert_int_equal(co_redis_parse_url("redis://bob:pw@[::1]:7000/", 10, &t,
                                        err, sizeof err), CO_OK);
    assert_string_equal(t.user, "bob");
    assert_string_equal(t.password, "pw");
    assert_string_equal(t.host, "::1");
    assert_int_equal(t.port, 7000);
    assert_int_equal(t.db, 0);
}

/* --redis with seeds of a cluster: a comma-separated list of URLs. */
static void test_parse_seeds(void **state)
{
    struct co_redis_target t[3];
    size_t n;
    char err[128];

    (void)state;
    assert_int_equal(co_redis_parse_seeds("redis://a:1", 50, t, 3, &n, err,
                                          sizeof err), CO_OK);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].host, "a");
    assert_int_equal(co_redis_parse_seeds("redis://:pw@a:1,redis://b:2,"
                                          "redis://[::1]:3", 50, t, 3, &n,
                                          err, sizeof err), CO_OK);
    assert_int_equal(n, 3);
    assert_string_equal(t[0].password, "pw");
    assert_string_equal(t[1].host, "b");
    assert_int_equal(t[1].port, 2);
    assert_string_equal(t[2].host, "::1");
    assert_int_equal(t[2].timeout_ms, 50);
    assert_int_equal(co_redis_parse_seeds("redis://a:1,redis://b:2,"
                                          "redis://c:3,redis://d:4", 50, t,
                                          3, &n, err, sizeof err),
                     CO_EINVAL);
    assert_non_null(strstr(err, "at most 3"));
    assert_int_equal(co_redis_parse_seeds("redis://a:1,,redis://b:2", 50, t,
                                          3, &n, err, sizeof err),
                     CO_EINVAL);
    assert_int_equal(co_redis_parse_seeds("redis://a:1,http://b", 50, t, 3,
                                          &n, err, sizeof err), CO_EINVAL);
    assert_int_equal(co_redis_parse_seeds("redis://a:1,", 50, t, 3, &n, err,
                                          sizeof err), CO_EINVAL);
}

static void test_parse_url_refusals(void **state)
{
    static const struct {
        const char *url, *msg;
    } cases[] = {
        {"rediss://h:1", "TLS"},
        {"http://h:1", "must start with redis://"},
        {"h:6379", "must start with redis://"},
        {"redis://", "missing or overlong host"},
        {"redis://:6379", "missing or overlong host"},
        {"redis://h:", "empty port"},
        {"redis://h:0", "port must be 1..65535"},
        {"redis://h:65536", "port must be 1..65535"},
        {"redis://h:12a", "port must be 1..65535"},
        {"redis://h:1/x", "database must be a number"},
        {"redis://h:1?db=2", "query"},
        {"redis://pw@h:1", "credentials must be [user]:password@"},
        {"redis://:%zz@h:1", "bad user or password encoding"},
        {"redis://:%4@h:1", "bad user or password encoding"},
        {"redis://:%00@h:1", "bad user or password encoding"},
        {"redis://[::1:1", "unterminated"},
        {"redis://[::1]x", "junk after"},
    };
    struct co_redis_target t;
    char err[128];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        if (co_redis_parse_url(cases[i].url, 50, &t, err,
                               sizeof err) != CO_EINVAL)
            fail_msg("%s accepted", cases[i].url);
        if (strstr(err, cases[i].msg) == NULL)
            fail_msg("%s: \"%s\" lacks \"%s\"", cases[i].url, err,
                     cases[i].msg);
    }
}

/* ------------------------------------------------------------ live Redis */
static struct test_redis redis;

#define T0       1699999200000ULL   /* pinned clock: an hour's start */
#define HOUR     3600000ULL
#define SYNC_MS  1000u
#define MAXN     1500

static int start_redis(void **state)
{
    (void)state;
    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    return test_redis_start(&redis);
}

static int teardown_redis(void **state)
{
    (void)state;
    co_redis_shutdown();
    test_redis_stop(&redis);
    return 0;
}

static long long admin_int(const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    long long v = -1;

    va_start(ap, fmt);
    r = redisvCommand(redis.admin, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r->type == REDIS_REPLY_STRING)
        v = strtoll(r->str, NULL, 10);
    freeReplyObject(r);
    return v;
}

static void admin_ok(const char *fmt, ...)
{
    va_list ap;
    redisReply *r;

    va_start(ap, fmt);
    r = redisvCommand(redis.admin, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r->str);
    freeReplyObject(r);
}

struct item {
    const char *quota, *key;
    uint64_t limit, window_ms, over, deny_milli, admitted, attempts, burst;
};

/* One request's script call(s): who, which seq, at what time. */
struct req {
    const char *edge;
    uint64_t seq;
    uint64_t now;
};

/* The batch digest the next build() sends; 0: one computed from the
 * items (the same counts give the same digest). */
static uint64_t forced_digest;

/* The strings behind one co_script_call. */
struct built {
    struct co_script_call call;
    char **s;
    const char **argv;
    size_t *lens;
    size_t k;
};

static void put(struct built *b, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    assert_true(vasprintf(&b->s[b->k], fmt, ap) >= 0);
    va_end(ap);
    b->argv[b->k] = b->s[b->k];
    b->lens[b->k] = strlen(b->s[b->k]);
    b->k++;
}

/* Lay out KEYS/ARGV of sync.lua (see its header) for items[0..n). */
static void build(struct built *b, const struct req *r, const char *nonce,
                  const char *replay, const struct item *items, size_t n,
                  long long *out)
{
    size_t total = 1 + 2 * n + 7 + 7 * n + 1;
    unsigned long long digest = forced_digest;

    memset(b, 0, sizeof *b);
    b->s = calloc(total, sizeof *b->s);
    b->argv = calloc(total, sizeof *b->argv);
    b->lens = calloc(total, sizeof *b->lens);
    put(b, "%s", replay);
    for (size_t i = 0; i < n; i++) {
        char tag[CO_KEY_TAG_MAX];

        co_key_tag(items[i].quota, strlen(items[i].quota), items[i].key,
                   strlen(items[i].key), tag, sizeof tag);
        put(b, "tg:%s:c", tag);
        put(b, "tg:%s:e", tag);
    }
    put(b, "%llu", (unsigned long long)r->now);
    put(b, "%s", r->edge);
    put(b, "%llu", (unsigned long long)r->seq);
    put(b, "%u", SYNC_MS);
    put(b, "%s", nonce);
    put(b, "%u", CO_AUTH_REPLAY_TTL_MS);
    put(b, "%zu", n);
    for (size_t i = 0; i < n; i++) {
        put(b, "%llu", (unsigned long long)items[i].limit);
        put(b, "%llu", (unsigned long long)items[i].window_ms);
        put(b, "%llu", (unsigned long long)items[i].over);
        put(b, "%llu", (unsigned long long)items[i].deny_milli);
        put(b, "%llu", (unsigned long long)items[i].admitted);
        put(b, "%llu", (unsigned long long)items[i].attempts);
        put(b, "%llu", (unsigned long long)items[i].burst);
        /* the batch's digest: a stand-in for sync.c's, the same for the
         * same counts unless the test names one */
        if (forced_digest == 0)
            digest = digest * 31 + items[i].admitted * 7 + items[i].attempts;
    }
    put(b, "%llu", digest % CO_SEQ_MAX);
    b->call.script = co_script(CO_SCRIPT_SYNC);
    b->call.nkeys = 1 + 2 * n;
    b->call.nargs = 7 + 7 * n + 1;
    b->call.argv = b->argv;
    b->call.argvlen = b->lens;
    b->call.out = out;
    b->call.nout = 3 + 4 * n;
}

static void built_free(struct built *b)
{
    for (size_t i = 0; i < b->k; i++)
        free(b->s[i]);
    free(b->s);
    free(b->argv);
    free(b->lens);
}

static unsigned request_no;

/* One call for items[0..n) as a fresh request (new nonce and signature);
 * out gets 3 + 4n integers: status, conflict seq, conflict item, then
 * action, lease, reset_ms, count per item. */
static int eval(const struct req *r, const struct item *items, size_t n,
                long long *out)
{
    struct built b;
    char nonce[32], replay[64], err[256];
    int rc;

    request_no++;
    snprintf(nonce, sizeof nonce, "n%u", request_no);
    snprintf(replay, sizeof replay, "tg:{edge|t}:sig:%u", request_no);
    build(&b, r, nonce, replay, items, n, out);
    rc = co_redis_eval_ints(&b.call, 1, err, sizeof err);
    if (rc != CO_OK && rc != CO_EREDIS)
        fprintf(stderr, "eval: %s\n", err);
    built_free(&b);
    return rc;
}

/* An item's four answers, from an eval() reply. */
#define ACTION(o, i) ((o)[3 + 4 * (i)])
#define LEASE(o, i)  ((o)[3 + 4 * (i) + 1])
#define RESET(o, i)  ((o)[3 + 4 * (i) + 2])
#define COUNT(o, i)  ((o)[3 + 4 * (i) + 3])

static void test_init_loads_script(void **state)
{
    struct co_redis_target t;
    char err[256] = "", url[64];
    redisReply *r;

    (void)state;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", redis.port);
    assert_int_equal(co_redis_parse_url(url, 200, &t, err, sizeof err),
                     CO_OK);
    if (co_redis_init(&t, err, sizeof err) != CO_OK)
        fail_msg("init: %s", err);
    assert_int_equal(strlen(co_redis_script_sha()), 40);
    r = redisCommand(redis.admin, "SCRIPT EXISTS %s", co_redis_script_sha());
    assert_int_equal(r->element[0]->integer, 1);
    freeReplyObject(r);
    assert_int_equal(co_redis_ping(err, sizeof err), CO_OK);
}

static void test_first_report(void **state)
{
    const struct item it = {"per-ip", "10.0.0.1", 100, 60000, 1, 0, 7, 9, 0};
    const struct req r = {"e1", 1, T0 + 1000};
    long long out[7];
    long long ttl;

    (void)state;
    assert_int_equal(eval(&r, &it, 1, out), CO_OK);
    assert_int_equal(out[0], 0);              /* applied */
    assert_int_equal(ACTION(out, 0), 0);
    /* demand 9/s: capped at 2 x 9 per 1 s interval, well under 93 left */
    assert_int_equal(LEASE(out, 0), 18);
    assert_int_equal(RESET(out, 0), 60000 - (T0 + 1000) % 60000);
    assert_int_equal(COUNT(out, 0), 7);
    assert_int_equal(admin_int("HGET tg:{per-ip|10.0.0.1}:c a"), 7);
    assert_int_equal(admin_int("HGET tg:{per-ip|10.0.0.1}:c t"), 9);
    assert_int_equal(admin_int("HGET tg:{per-ip|10.0.0.1}:c w"),
                     (long long)((T0 + 1000) / 60000));
    assert_int_equal(admin_int("HGET tg:{per-ip|10.0.0.1}:c L"), 18);
    assert_int_equal(admin_int("HGET tg:{per-ip|10.0.0.1}:c D"), 9000);
    assert_int_equal(admin_int("ZCARD tg:{per-ip|10.0.0.1}:e"), 1);
    ttl = admin_int("PTTL tg:{per-ip|10.0.0.1}:c");
    assert_true(ttl > 110000 && ttl <= 120000);
    ttl = admin_int("PTTL tg:{per-ip|10.0.0.1}:e");
    assert_true(ttl > 110000 && ttl <= 120000);
    ttl = admin_int("PTTL tg:{edge|t}:sig:%u", request_no);
    assert_true(ttl > 60000 && ttl <= CO_AUTH_REPLAY_TTL_MS);
}

/* A resend of an applied seq (its answer was lost) gets the same answer,
 * even later, and adds nothing. */
static void test_retry_is_idempotent(void **state)
{
    const struct item its[2] = {
        {"idem", "a", 100, HOUR, 1, 0, 10, 12, 0},
        {"idem", "b", 10, HOUR, 1, 0, 10, 10, 0},
    };
    const struct req first = {"e1", 3, T0 + 5000};
    const struct req again = {"e1", 3, T0 + 7000};
    long long out[11], out2[11];

    (void)state;
    assert_int_equal(eval(&first, its, 2, out), CO_OK);
    assert_int_equal(out[0], 0);
    assert_int_equal(ACTION(out, 1), 1);      /* b is at its limit */
    assert_int_equal(eval(&again, its, 2, out2), CO_OK);
    assert_int_equal(out[2], 0);              /* no item was a retry */
    assert_int_equal(out2[2], 2);             /* both were (for /metrics) */
    out2[2] = 0;
    assert_memory_equal(out, out2, sizeof out);
    assert_int_equal(admin_int("HGET tg:{idem|a}:c a"), 10);
    assert_int_equal(admin_int("HGET tg:{idem|a}:c t"), 12);
    assert_int_equal(admin_int("HGET tg:{idem|a}:c L"), LEASE(out, 0));
    assert_int_equal(admin_int("HGET tg:{idem|b}:c a"), 10);
}

/* HGETALL key now is what before (an HGETALL reply, freed here) held. */
static void assert_hash_unchanged(redisReply *before, const char *key)
{
    redisReply *after = redisCommand(redis.admin, "HGETALL %s", key);

    assert_non_null(after);
    assert_int_equal(before->elements, after->elements);
    for (size_t i = 0; i < before->elements; i++)
        assert_string_equal(before->element[i]->str, after->element[i]->str);
    freeReplyObject(before);
    freeReplyObject(after);
}

/* The same seq with other counts is no retry: status 3, nothing written,
 * not answered from the record (which would drop its counts silently). */
static void test_same_seq_other_counts_conflicts(void **state)
{
    const struct item one = {"mis", "a", 100, HOUR, 1, 0, 5, 5, 0};
    const struct item other = {"mis", "a", 100, HOUR, 1, 0, 6, 9, 0};
    const struct req r = {"e1", 4, T0 + 1000};
    const struct req again = {"e1", 4, T0 + 2000};
    long long out[7];
    redisReply *before;

    (void)state;
    assert_int_equal(eval(&r, &one, 1, out), CO_OK);
    assert_int_equal(out[0], 0);
    before = redisCommand(redis.admin, "HGETALL tg:{mis|a}:c");
    assert_int_equal(eval(&again, &other, 1, out), CO_OK);
    assert_int_equal(out[0], 3);              /* the seq, other counts */
    assert_int_equal(out[1], 4);
    assert_int_equal(out[2], 1);              /* the item */
    assert_hash_unchanged(before, "tg:{mis|a}:c");
    /* the same counts again: a retry, as before */
    assert_int_equal(eval(&again, &one, 1, out), CO_OK);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[2], 1);
    assert_int_equal(admin_int("HGET tg:{mis|a}:c a"), 5);
}

/* Sums past 2^53 saturate there: exact below, never rounded to a
 * neighbour, never formatted past int64 into a negative number. The
 * script is fed more than sync.c lets through (1e12 per count) on
 * purpose: the saturation is its own guard. */
static void test_huge_counts_saturate(void **state)
{
    const struct item big = {"huge", "a", 1000000000000ULL, HOUR, 1, 0,
                             CO_SEQ_MAX - 1, CO_SEQ_MAX - 1, 0};
    const struct item more = {"huge", "a", 1000000000000ULL, HOUR, 1, 0,
                              3, 3, 0};
    const struct req r1 = {"e1", 1, T0 + 1000};
    const struct req r2 = {"e1", 2, T0 + 1001};
    const struct req r3 = {"e2", 1, T0 + 1002};
    long long out[7];

    (void)state;
    assert_int_equal(eval(&r1, &big, 1, out), CO_OK);
    assert_int_equal(admin_int("HGET tg:{huge|a}:c a"),
                     (long long)CO_SEQ_MAX - 1);
    assert_int_equal(eval(&r2, &more, 1, out), CO_OK);
    assert_int_equal(out[0], 0);
    assert_int_equal(admin_int("HGET tg:{huge|a}:c a"), (long long)CO_SEQ_MAX);
    assert_int_equal(admin_int("HGET tg:{huge|a}:c t"), (long long)CO_SEQ_MAX);
    assert_int_equal(ACTION(out, 0), 1);      /* far over: challenged */
    assert_true(COUNT(out, 0) > 0);
    /* a second edge's huge demand: D saturates, never wraps negative */
    assert_int_equal(eval(&r3, &big, 1, out), CO_OK);
    assert_true(admin_int("HGET tg:{huge|a}:c D") > 0);
    assert_true(admin_int("HGET tg:{huge|a}:c D") <= (long long)CO_SEQ_MAX);
    assert_true(COUNT(out, 0) > 0);
}

/* The largest seq sync.c lets through (2^53 - 1) is exact: the next one
 * down is older (conflict), its resend a retry counted once. */
static void test_largest_seq_is_exact(void **state)
{
    const struct item it = {"bigseq", "a", 100, HOUR, 1, 0, 1, 1, 0};
    const struct req top = {"e1", CO_SEQ_MAX, T0 + 1000};
    const struct req below = {"e1", CO_SEQ_MAX - 1, T0 + 2000};
    long long out[7];

    (void)state;
    assert_int_equal(eval(&top, &it, 1, out), CO_OK);
    assert_int_equal(out[0], 0);
    assert_int_equal(eval(&top, &it, 1, out), CO_OK);
    assert_int_equal(out[2], 1);              /* a retry */
    assert_int_equal(admin_int("HGET tg:{bigseq|a}:c a"), 1);
    assert_int_equal(eval(&below, &it, 1, out), CO_OK);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], (long long)CO_SEQ_MAX);
}

/* A seq older than one applied for any key of the call changes nothing. */
static void test_older_seq_conflicts(void **state)
{
    const struct item a = {"old", "a", 100, HOUR, 1, 0, 5, 5, 0};
    const struct item both[2] = {
        {"old", "fresh", 100, HOUR, 1, 0, 1, 1, 0},
        {"old", "a", 100, HOUR, 1, 0, 1, 1, 0},
    };
    const struct req newer = {"e1", 9, T0 + 1000};
    const struct req older = {"e1", 8, T0 + 2000};
    long long out[11];
    redisReply *before;

    (void)state;
    assert_int_equal(eval(&newer, &a, 1, out), CO_OK);
    before = redisCommand(redis.admin, "HGETALL tg:{old|a}:c");
    assert_int_equal(eval(&older, both, 2, out), CO_OK);
    assert_int_equal(out[0], 2);              /* conflict */
    assert_int_equal(out[1], 9);              /* the seq already applied */
    assert_int_equal(out[2], 2);              /* at the second item */
    assert_hash_unchanged(before, "tg:{old|a}:c");
    /* the first item was not written either, nor the replay key */
    assert_int_equal(admin_int("EXISTS tg:{old|fresh}:c"), 0);
    assert_int_equal(admin_int("EXISTS tg:{edge|t}:sig:%u", request_no), 0);
}

static void test_replayed_signature_is_refused(void **state)
{
    const struct item it = {"replay", "k", 100, HOUR, 1, 0, 1, 1, 0};
    const struct req r1 = {"e1", 1, T0}, r2 = {"e1", 2, T0};
    long long out[7];
    struct built b;
    char err[256];

    (void)state;
    build(&b, &r1, "nonce-1", "tg:{edge|e1}:sig:abc", &it, 1, out);
    assert_int_equal(co_redis_eval_ints(&b.call, 1, err, sizeof err), CO_OK);
    assert_int_equal(out[0], 0);
    built_free(&b);
    /* the same signature again (another request: another nonce) */
    build(&b, &r2, "nonce-2", "tg:{edge|e1}:sig:abc", &it, 1, out);
    assert_int_equal(co_redis_eval_ints(&b.call, 1, err, sizeof err), CO_OK);
    assert_int_equal(out[0], 1);              /* replayed */
    assert_int_equal(LEASE(out, 0), 0);
    built_free(&b);
    assert_int_equal(admin_int("HGET tg:{replay|k}:c a"), 1);
}

/* In steady state each edge's lease follows its share of the demand. */
static void test_leases_follow_demand(void **state)
{
    const struct item hi = {"share", "k", 400, HOUR, 1, 0, 0, 300, 0};
    const struct item lo = {"share", "k", 400, HOUR, 1, 0, 0, 100, 0};
    long long a[7], b[7];
    uint64_t now = T0;

    (void)state;
    for (uint64_t seq = 1; seq <= 4; seq++, now += SYNC_MS) {
        const struct req ra = {"edge-a", seq, now};
        const struct req rb = {"edge-b", seq, now + 10};

        assert_int_equal(eval(&ra, &hi, 1, a), CO_OK);
        assert_int_equal(eval(&rb, &lo, 1, b), CO_OK);
    }
    /* 300 vs 100 attempts/s: 3/4 and 1/4 of the 400 left */
    assert_int_equal(LEASE(a, 0), 300);
    assert_int_equal(LEASE(b, 0), 100);
    assert_int_equal(admin_int("HGET tg:{share|k}:c L"), 400);
}

/* Random demand from many edges: the leases outstanding never exceed what
 * is left of the limit, and L is exactly the sum of the edges' leases. */
static void test_leases_never_exceed_what_is_left(void **state)
{
    enum { EDGES = 12 };
    uint64_t granted[EDGES] = {0}, seq[EDGES] = {0};
    uint64_t now = T0, rng = 42;
    long long out[7];

    (void)state;
    for (int round = 0; round < 400; round++) {
        unsigned e = (unsigned)(rng % EDGES);
        char edge[16];
        uint64_t sum = 0, attempts, admitted;
        struct item it = {"bound", "k", 1000, 60000, 1, 0, 0, 0, 0};
        struct req r;

        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        attempts = (rng >> 33) % 60;
        /* an edge admits at most what it was leased */
        admitted = attempts < granted[e] ? attempts : granted[e];
        it.admitted = admitted;
        it.attempts = attempts;
        snprintf(edge, sizeof edge, "edge-%u", e);
        r.edge = edge;
        r.seq = ++seq[e];
        r.now = now;
        now += 50 + (rng >> 40) % 200;
        assert_int_equal(eval(&r, &it, 1, out), CO_OK);
        granted[e] = (uint64_t)LEASE(out, 0);
        for (unsigned i = 0; i < EDGES; i++)
            sum += granted[i];
        assert_int_equal(admin_int("HGET tg:{bound|k}:c L"), (long long)sum);
        if (ACTION(out, 0) == 0)
            assert_true((long long)sum + COUNT(out, 0) <= 1000);
    }
}

/* An edge silent for more than a window gives its lease and demand back. */
static void test_silent_edges_expire(void **state)
{
    const struct item it = {"expire", "k", 1000, 60000, 1, 0, 0, 50, 0};
    const struct req a = {"edge-a", 1, T0}, b = {"edge-b", 1, T0 + 30000};
    const struct req b2 = {"edge-b", 2, T0 + 60001};
    long long out[7];

    (void)state;
    assert_int_equal(eval(&a, &it, 1, out), CO_OK);
    assert_int_equal(LEASE(out, 0), 100);     /* cap: 2 x 50/s x 1 s */
    assert_int_equal(eval(&b, &it, 1, out), CO_OK);
    assert_int_equal(admin_int("HGET tg:{expire|k}:c L"), 200);
    assert_int_equal(admin_int("HGET tg:{expire|k}:c D"), 100000);
    assert_int_equal(eval(&b2, &it, 1, out), CO_OK);
    /* edge-a is gone: only edge-b's new lease is outstanding */
    assert_int_equal(admin_int("HGET tg:{expire|k}:c L"), LEASE(out, 0));
    assert_int_equal(admin_int("HEXISTS tg:{expire|k}:c e:edge-a"), 0);
    assert_int_equal(admin_int("ZCARD tg:{expire|k}:e"), 1);
    assert_true(admin_int("HGET tg:{expire|k}:c D") < 100000);
}

/* A share under one request is paid out now and then, not never. */
static void test_small_shares_are_carried(void **state)
{
    long long out[7];
    long long total = 0;

    (void)state;
    /* 10 left, 40 edges of equal demand: 0.25 each per report */
    admin_ok("HSET tg:{carry|k}:c w %llu a 990 t 5000",
             (unsigned long long)(T0 / HOUR));
    for (int round = 0; round < 3; round++) {
        for (int e = 0; e < 40; e++) {
            char edge[16];
            const struct item it = {"carry", "k", 1000, HOUR, 1, 0, 0, 1, 0};
            struct req r = {edge, (uint64_t)round + 1,
                            T0 + (uint64_t)round * SYNC_MS + (uint64_t)e};

            snprintf(edge, sizeof edge, "e%d", e);
            assert_int_equal(eval(&r, &it, 1, out), CO_OK);
            if (round == 2)
                total += LEASE(out, 0);
        }
    }
    /* by the third round every edge has carried enough for some leases,
     * and they still fit in the 10 that are left */
    assert_true(total > 0);
    assert_true(admin_int("HGET tg:{carry|k}:c L") <= 10);
}

/* A sparse key under its limit: a share that rounds to 0 is raised to 1
 * while one is available, so an edge that sees the key once a minute
 * holds a request for its next arrival; never beyond what is left. A key
 * whose attempts already reached the limit gets no such minimum. */
static void test_sparse_key_gets_one_while_available(void **state)
{
    long long out[7];

    (void)state;
    /* 60 left, 80 edges asking for a lease (no new attempts, the least
     * demand) against a summed demand of 80/s: shares of about 0.04 */
    admin_ok("HSET tg:{sparse|k}:c w %llu a 40 t 40 D 80000",
             (unsigned long long)(T0 / HOUR));
    for (int e = 0; e < 80; e++) {
        char edge[16];
        const struct item it = {"sparse", "k", 100, HOUR, 1, 0, 0, 0, 0};
        const struct req r = {edge, 1, T0 + (uint64_t)e};

        snprintf(edge, sizeof edge, "e%d", e);
        assert_int_equal(eval(&r, &it, 1, out), CO_OK);
        assert_int_equal(ACTION(out, 0), 0);
        assert_int_equal(LEASE(out, 0), e < 60 ? 1 : 0);
    }
    assert_int_equal(admin_int("HGET tg:{sparse|k}:c L"), 60);

    /* the same share with attempts at the limit: 0, and over */
    admin_ok("HSET tg:{sparse|h}:c w %llu a 40 t 100 D 80000",
             (unsigned long long)(T0 / HOUR));
    {
        const struct item it = {"sparse", "h", 100, HOUR, 1, 0, 0, 0, 0};
        const struct req r = {"e0", 1, T0};

        assert_int_equal(eval(&r, &it, 1, out), CO_OK);
        assert_int_equal(LEASE(out, 0), 0);
        assert_int_equal(ACTION(out, 0), 1);
    }
}

/* Issue 20: the slack waits until the key's reach is known. A key whose
 * every attempt so far met a new edge (spread thin over many edges) gets
 * only its demand cap, 2 = 2 x 1/s x 1 s for a first report of 1 attempt,
 * however few edges have reported it yet: with n edges as the divisor the
 * first of them took 8 each (min(8, 599 / 4)). Once attempts meet edges
 * that already had the key (3 attempts, 2 edges: reach about 3.4), the
 * slack comes back (min(8, 597 / (4 x 3.4)) = 8). */
static void test_slack_waits_for_the_keys_reach(void **state)
{
    const struct item one = {"reach", "thin", 600, 60000, 1, 0, 1, 1, 0};
    const struct item again = {"reach", "steady", 600, 60000, 1, 0, 1, 1, 0};
    const struct req a1 = {"edge-a", 1, T0}, b1 = {"edge-b", 1, T0 + 100};
    const struct req a2 = {"edge-a", 2, T0 + SYNC_MS};
    long long out[7];

    (void)state;
    for (int e = 0; e < 20; e++) {
        char edge[16];
        const struct req r = {edge, 1, T0 + (uint64_t)e * 100};

        snprintf(edge, sizeof edge, "e%d", e);
        assert_int_equal(eval(&r, &one, 1, out), CO_OK);
        assert_int_equal(ACTION(out, 0), 0);
        assert_int_equal(LEASE(out, 0), 2);
    }
    assert_int_equal(admin_int("HGET tg:{reach|thin}:c L"), 40);

    assert_int_equal(eval(&a1, &again, 1, out), CO_OK);
    assert_int_equal(LEASE(out, 0), 2);       /* 1 attempt, 1 edge */
    assert_int_equal(eval(&b1, &again, 1, out), CO_OK);
    assert_int_equal(LEASE(out, 0), 2);       /* 2 attempts, 2 edges */
    assert_int_equal(eval(&a2, &again, 1, out), CO_OK);
    assert_int_equal(LEASE(out, 0), 8);       /* 3 attempts, 2 edges */
    assert_int_equal(admin_int("HGET tg:{reach|steady}:c L"), 10);
}

static void test_over_limit_takes_the_quota_action(void **state)
{
    const struct item batch[3] = {
        {"chal", "k", 10, HOUR, 1, 0, 10, 10, 0},
        {"deny", "k", 10, HOUR, 2, 0, 12, 12, 0},
        {"chal", "k2", 10, HOUR, 1, 0, 9, 9, 0},
    };
    const struct req r = {"e1", 1, T0};
    long long out[15];

    (void)state;
    assert_int_equal(eval(&r, batch, 3, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 1);      /* 10 >= 10: challenge */
    assert_int_equal(LEASE(out, 0), 0);
    assert_int_equal(COUNT(out, 0), 10);
    assert_int_equal(ACTION(out, 1), 2);      /* quota action deny */
    assert_int_equal(LEASE(out, 1), 0);
    assert_int_equal(ACTION(out, 2), 0);      /* other key unaffected */
    assert_int_equal(LEASE(out, 2), 1);
}

/* Nothing left to lease and attempts at the limit: over the quota. */
static void test_unleasable_and_asked_for_more_is_over(void **state)
{
    const struct item a = {"rem", "k", 10, HOUR, 1, 0, 9, 9, 0};
    const struct item hot = {"rem", "k", 10, HOUR, 1, 0, 0, 5, 0};
    const struct item quiet = {"rem", "q", 10, HOUR, 1, 0, 9, 9, 0};
    const struct item quiet_b = {"rem", "q", 10, HOUR, 1, 0, 0, 0, 0};
    const struct req ra = {"edge-a", 1, T0}, rb = {"edge-b", 1, T0 + 1};
    long long out[7];

    (void)state;
    assert_int_equal(eval(&ra, &a, 1, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 0);
    assert_int_equal(LEASE(out, 0), 1);       /* the 1 left */
    assert_int_equal(eval(&rb, &hot, 1, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 1);      /* nothing left, 14 >= 10 */
    assert_int_equal(LEASE(out, 0), 0);
    assert_int_equal(eval(&ra, &quiet, 1, out), CO_OK);
    assert_int_equal(eval(&rb, &quiet_b, 1, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 0);      /* 9 attempts < 10 */
    assert_int_equal(LEASE(out, 0), 0);
}

static void test_deny_after_counts_attempts(void **state)
{
    /* admitted stays under the limit, attempts pass 3 x limit */
    const struct item flood = {"flood", "k", 10, HOUR, 1, 3000, 5, 29, 0};
    const struct item more = {"flood", "k", 10, HOUR, 1, 3000, 0, 1, 0};
    const struct item off = {"nodeny", "k", 10, HOUR, 1, 0, 5, 1000, 0};
    const struct req r1 = {"e1", 1, T0}, r2 = {"e1", 2, T0 + 1000};
    long long out[7];

    (void)state;
    assert_int_equal(eval(&r1, &flood, 1, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 0);      /* 29 < 30 */
    assert_int_equal(eval(&r2, &more, 1, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 2);      /* 30 >= 30 */
    assert_int_equal(LEASE(out, 0), 0);
    assert_int_equal(eval(&r1, &off, 1, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 0);      /* deny_after off */
    assert_int_equal(LEASE(out, 0), 5);
}

/* burst caps a lease that demand alone would make larger, at every
 * report, and L holds only what was granted; a burst above the lease, or
 * none, changes nothing (18 = 2 x 9/s x 1 s, as in test_first_report). */
static void test_burst_caps_the_lease(void **state)
{
    const struct item batch[3] = {
        {"burst", "k", 100, 60000, 1, 0, 7, 9, 5},
        {"burst-wide", "k", 100, 60000, 1, 0, 7, 9, 50},
        {"burst-off", "k", 100, 60000, 1, 0, 7, 9, 0},
    };
    const struct item again = {"burst", "k", 100, 60000, 1, 0, 5, 9, 5};
    const struct req r1 = {"e1", 1, T0 + 1000}, r2 = {"e1", 2, T0 + 2000};
    long long out[15];

    (void)state;
    assert_int_equal(eval(&r1, batch, 3, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 0);
    assert_int_equal(LEASE(out, 0), 5);
    assert_int_equal(LEASE(out, 1), 18);
    assert_int_equal(LEASE(out, 2), 18);
    assert_int_equal(admin_int("HGET tg:{burst|k}:c L"), 5);
    assert_int_equal(eval(&r2, &again, 1, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 0);
    assert_int_equal(LEASE(out, 0), 5);
    assert_int_equal(admin_int("HGET tg:{burst|k}:c L"), 5);
}

/* A quota of 20 whose keys "low" and "high" have overrides of 5 and 60:
 * items get their limits as sync.c computes them. */
static struct co_override ovr_list[] = {{"high", 60}, {"low", 5}};
static const struct co_quota ovr_quota = {
    .name = "ovr", .limit = 20, .n_overrides = 2, .overrides = ovr_list,
};

/* A lower override challenges its key, then denies it (deny_after 3 x
 * its own limit), while a sibling under the quota's limit is untouched. */
static void test_lower_override_challenges_its_key_first(void **state)
{
    const uint64_t low = co_quota_limit(&ovr_quota, "low");
    const uint64_t sib = co_quota_limit(&ovr_quota, "low-sibling");
    const struct item first[2] = {
        {"ovr", "low", low, HOUR, 1, 3000, 5, 5, 0},
        {"ovr", "low-sibling", sib, HOUR, 1, 3000, 5, 5, 0},
    };
    const struct item flood[2] = {
        {"ovr", "low", low, HOUR, 1, 3000, 0, 10, 0},
        {"ovr", "low-sibling", sib, HOUR, 1, 3000, 0, 10, 0},
    };
    const struct req r1 = {"e1", 1, T0}, r2 = {"e1", 2, T0 + 1000};
    long long out[11];

    (void)state;
    assert_int_equal(low, 5);
    assert_int_equal(sib, 20);
    assert_int_equal(eval(&r1, first, 2, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 1);      /* 5 >= 5: challenge */
    assert_int_equal(LEASE(out, 0), 0);
    assert_int_equal(ACTION(out, 1), 0);      /* 5 < 20 */
    assert_true(LEASE(out, 1) > 0);
    assert_int_equal(eval(&r2, flood, 2, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 2);      /* 15 attempts >= 3 x 5 */
    assert_int_equal(ACTION(out, 1), 0);      /* 15 < 3 x 20, 5 < 20 */
}

/* A higher override lets its key past the quota's limit, leased up to its
 * own (est + L <= 60), while a sibling at the quota's limit is over. */
static void test_higher_override_passes_the_quota_limit(void **state)
{
    const uint64_t high = co_quota_limit(&ovr_quota, "high");
    const uint64_t sib = co_quota_limit(&ovr_quota, "high-sibling");
    const struct item batch[2] = {
        {"ovr", "high", high, HOUR, 1, 0, 20, 20, 0},
        {"ovr", "high-sibling", sib, HOUR, 1, 0, 20, 20, 0},
    };
    const struct req r = {"e1", 1, T0};
    long long out[11];

    (void)state;
    assert_int_equal(high, 60);
    assert_int_equal(sib, 20);
    assert_int_equal(eval(&r, batch, 2, out), CO_OK);
    assert_int_equal(ACTION(out, 0), 0);
    assert_int_equal(COUNT(out, 0), 20);
    /* 40 left, all of it this edge's share: the cap 2 x 20/s x 1 s */
    assert_int_equal(LEASE(out, 0), 40);
    assert_int_equal(admin_int("HGET tg:{ovr|high}:c L") + COUNT(out, 0),
                     60);
    assert_int_equal(ACTION(out, 1), 1);      /* 20 >= 20: challenge */
    assert_int_equal(LEASE(out, 1), 0);
}

static void test_window_roll_with_pinned_time(void **state)
{
    const uint64_t w = 60000;
    const struct item it = {"roll", "k", 1000000, 60000, 1, 0, 3, 4, 0};
    long long out[7];
    struct req r = {"e1", 1, T0 + 10};

    (void)state;
    assert_int_equal(eval(&r, &it, 1, out), CO_OK);
    assert_int_equal(COUNT(out, 0), 3);
    assert_int_equal(RESET(out, 0), (long long)(w - 10));
    /* same window again: counts add up */
    r.seq = 2;
    r.now = T0 + 30000;
    assert_int_equal(eval(&r, &it, 1, out), CO_OK);
    assert_int_equal(COUNT(out, 0), 6);
    assert_int_equal(RESET(out, 0), 30000);
    /* a quarter into the next window: 6 x 3/4 of the previous one + 3 */
    r.seq = 3;
    r.now = T0 + w + 15000;
    assert_int_equal(eval(&r, &it, 1, out), CO_OK);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c pa"), 6);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c pt"), 8);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c a"), 3);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c w"),
                     (long long)((T0 + w) / w));
    assert_int_equal(COUNT(out, 0), 5 + 3);   /* ceil(6 x 0.75) + 3 */
    assert_int_equal(RESET(out, 0), 45000);
    /* two windows later: everything starts over */
    r.seq = 4;
    r.now = T0 + 3 * w + 1;
    assert_int_equal(eval(&r, &it, 1, out), CO_OK);
    assert_int_equal(COUNT(out, 0), 3);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c pa"), 0);
}

static void test_special_keys_stay_separate(void **state)
{
    const struct item batch[2] = {
        {"q", "a|b", 100, HOUR, 1, 0, 1, 1, 0},
        {"q|a", "b", 100, HOUR, 1, 0, 2, 2, 0},
    };
    const struct req r = {"e1", 1, T0};
    long long out[11];

    (void)state;
    assert_int_equal(eval(&r, batch, 2, out), CO_OK);
    assert_int_equal(COUNT(out, 0), 1);
    assert_int_equal(COUNT(out, 1), 2);
    assert_int_equal(admin_int("HGET tg:{q|a%%7Cb}:c a"), 1);
    assert_int_equal(admin_int("HGET tg:{q%%7Ca|b}:c a"), 2);
}

/* 1200 items as three calls in one pipeline, one of them after the script
 * cache was flushed. */
static void test_batch_split_and_pipelined(void **state)
{
    enum { N = 1200, PER = 512 };
    static struct item items[N];
    static char keys[N][16];
    static long long out[3 * 3 + 4 * N];
    struct built b[3];
    struct co_script_call calls[3];
    const struct req r = {"big", 1, T0};
    char err[256];
    size_t off = 0;

    (void)state;
    for (size_t i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i);
        items[i] = (struct item){"split", keys[i], 100, HOUR, 1, 0,
                                 i % 7, i % 7, 0};
    }
    admin_ok("SCRIPT FLUSH");
    for (size_t c = 0; c < 3; c++) {
        size_t lo = c * PER, n = N - lo < PER ? N - lo : PER;

        build(&b[c], &r, "nonce-big", "tg:{edge|big}:sig:1", items + lo, n,
              out + off);
        calls[c] = b[c].call;
        off += 3 + 4 * n;
    }
    if (co_redis_eval_ints(calls, 3, err, sizeof err) != CO_OK)
        fail_msg("eval: %s", err);
    off = 0;
    for (size_t c = 0; c < 3; c++) {
        assert_int_equal(out[off], 0);        /* every call applied */
        off += 3 + 4 * ((calls[c].nout - 3) / 4);
        built_free(&b[c]);
    }
    assert_int_equal(admin_int("HGET tg:{split|k0}:c a"), 0);
    assert_int_equal(admin_int("HGET tg:{split|k1199}:c a"), 1199 % 7);
    assert_int_equal(admin_int("HGET tg:{split|k600}:c a"), 600 % 7);
    assert_int_equal(COUNT(out + 2 * (3 + 4 * PER), N - 1 - 2 * PER),
                     (N - 1) % 7);
}

static void test_noscript_is_recovered(void **state)
{
    const struct item it = {"noscript", "k", 100, 60000, 1, 0, 1, 1, 0};
    const struct req r = {"e1", 1, T0};
    long long out[7];
    redisReply *rep;

    (void)state;
    admin_ok("SCRIPT FLUSH");
    assert_int_equal(eval(&r, &it, 1, out), CO_OK);
    assert_int_equal(COUNT(out, 0), 1);
    rep = redisCommand(redis.admin, "SCRIPT EXISTS %s", co_redis_script_sha());
    assert_int_equal(rep->element[0]->integer, 1);
    freeReplyObject(rep);
}

/* A paused Redis (SIGSTOP) accepts connections and never answers: a call
 * must come back CO_EREDIS by its deadline, and while the thread backs off
 * the next ones must not touch the socket at all. */
static void test_paused_redis_meets_the_deadline(void **state)
{
    const struct item it = {"paused", "k", 100, 60000, 1, 0, 1, 1, 0};
    const struct req r = {"e1", 1, T0};
    long long out[7];
    char err[256];
    uint64_t t0, spent;
    int fast = 0;

    (void)state;
    co_redis_shutdown();    /* start from a live connection of our own */
    assert_int_equal(co_redis_ping(err, sizeof err), CO_OK);
    kill(redis.pid, SIGSTOP);
    t0 = co_mono_ms();
    assert_int_equal(eval(&r, &it, 1, out), CO_EREDIS);
    spent = co_mono_ms() - t0;
    /* in backoff now: answered without waiting */
    for (int i = 0; i < 50; i++) {
        uint64_t t1 = co_mono_ms();

        assert_int_equal(eval(&r, &it, 1, out), CO_EREDIS);
        fast += co_mono_ms() - t1 < 200 / 2;
    }
    assert_int_equal(co_redis_ping(err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "next try in"));
    kill(redis.pid, SIGCONT);
    /* the timeout is 200 ms (test_init_loads_script); 10x is a hang */
    assert_true(spent < 2000);
    assert_int_equal(fast, 50);
}

static void test_redis_gone_fails_fast(void **state)
{
    const struct item it = {"gone", "k", 100, 60000, 1, 0, 1, 1, 0};
    const struct req r = {"e1", 1, T0};
    long long out[7];
    char err[256];
    uint64_t t0;
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};

    (void)state;
    /* wait out the backoff the paused test left, then reconnect */
    for (int i = 0; i < 100 && co_redis_ping(err, sizeof err) != CO_OK; i++)
        nanosleep(&pause, NULL);
    test_redis_stop(&redis);
    t0 = co_mono_ms();
    assert_int_equal(eval(&r, &it, 1, out), CO_EREDIS);
    /* the failure started a backoff: no socket touched until it ends */
    assert_int_equal(co_redis_ping(err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "next try in"));
    assert_true(co_mono_ms() - t0 < 2000);
}

/* Every reply error Redis sends for a failure an operator fixes has its
 * kind, whichever way a version words it (Redis 7 passes a script call's
 * code; older ones wrap it in ERR); a Cluster router gets the same. */
static void test_classify(void **state)
{
    static const struct {
        const char *e;
        enum co_redis_kind k;
    } cases[] = {
        {"NOSCRIPT No matching script. Please use EVAL.", CO_REDIS_NOSCRIPT},
        {"NOPERM User tg has no permissions to run the 'evalsha' command",
         CO_REDIS_NOPERM},
        {"NOAUTH Authentication required.", CO_REDIS_AUTH},
        {"WRONGPASS invalid username-password pair or user is disabled.",
         CO_REDIS_AUTH},
        {"OOM command not allowed when used memory > 'maxmemory'.",
         CO_REDIS_OOM},
        {"OOM command not allowed when used memory > 'maxmemory'. script: "
         "abc, on @user_script:12.", CO_REDIS_OOM},
        {"READONLY You can't write against a read only replica.",
         CO_REDIS_READONLY},
        {"LOADING Redis is loading the dataset in memory", CO_REDIS_LOADING},
        {"BUSY Redis is busy running a script.", CO_REDIS_BUSY},
        {"MASTERDOWN Link with MASTER is down and replica-serve-stale-data "
         "is set to 'no'.", CO_REDIS_MASTERDOWN},
        {"CROSSSLOT Keys in request don't hash to the same slot",
         CO_REDIS_CROSSSLOT},
        {"MOVED 3999 127.0.0.1:6381", CO_REDIS_MOVED},
        {"ASK 3999 127.0.0.1:6381", CO_REDIS_ASK},
        {"CLUSTERDOWN Hash slot not served", CO_REDIS_CLUSTERDOWN},
        {"TRYAGAIN Multiple keys request during rehashing of slot",
         CO_REDIS_TRYAGAIN},
        {"WRONGTYPE Operation against a key holding the wrong kind of value",
         CO_REDIS_WRONGTYPE},
        {"ERR unknown command 'EVALSHA', with args beginning with: ",
         CO_REDIS_UNKNOWN_COMMAND},
        {"ERR Error running script (call to f_0a1b): @user_script:3: "
         "@user_script: 3: -READONLY You can't write against a read only "
         "replica.", CO_REDIS_READONLY},
        {"ERR user_script:5: Script attempted to access nonexistent global "
         "variable 'x' script: abc", CO_REDIS_SCRIPT_ERROR},
        {"ERR value is not an integer or out of range", CO_REDIS_OTHER},
        {"ASKING-not-a-code", CO_REDIS_OTHER},
        {"", CO_REDIS_OTHER},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum co_redis_kind k = co_redis_classify(cases[i].e);

        if (k != cases[i].k)
            fail_msg("%s: %s, expected %s", cases[i].e,
                     co_redis_kind_names[k], co_redis_kind_names[cases[i].k]);
    }
    assert_int_equal(co_redis_classify(NULL), CO_REDIS_OTHER);
    for (int k = 0; k < CO_REDIS_KINDS; k++) {
        assert_non_null(co_redis_kind_names[k]);
        assert_true(strlen(co_redis_kind_reason((enum co_redis_kind)k)) > 5);
    }
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_parse_seeds),
        cmocka_unit_test(test_parse_url_refusals),
        cmocka_unit_test(test_classify),
    };
    const struct CMUnitTest live[] = {
        cmocka_unit_test(test_init_loads_script),
        cmocka_unit_test(test_first_report),
        cmocka_unit_test(test_retry_is_idempotent),
        cmocka_unit_test(test_older_seq_conflicts),
        cmocka_unit_test(test_same_seq_other_counts_conflicts),
        cmocka_unit_test(test_huge_counts_saturate),
        cmocka_unit_test(test_largest_seq_is_exact),
        cmocka_unit_test(test_replayed_signature_is_refused),
        cmocka_unit_test(test_leases_follow_demand),
        cmocka_unit_test(test_leases_never_exceed_what_is_left),
        cmocka_unit_test(test_silent_edges_expire),
        cmocka_unit_test(test_small_shares_are_carried),
        cmocka_unit_test(test_sparse_key_gets_one_while_available),
        cmocka_unit_test(test_slack_waits_for_the_keys_reach),
        cmocka_unit_test(test_over_limit_takes_the_quota_action),
        cmocka_unit_test(test_unleasable_and_asked_for_more_is_over),
        cmocka_unit_test(test_deny_after_counts_attempts),
        cmocka_unit_test(test_burst_caps_the_lease),
        cmocka_unit_test(test_lower_override_challenges_its_key_first),
        cmocka_unit_test(test_higher_override_passes_the_quota_limit),
        cmocka_unit_test(test_window_roll_with_pinned_time),
        cmocka_unit_test(test_special_keys_stay_separate),
        cmocka_unit_test(test_batch_split_and_pipelined),
        cmocka_unit_test(test_noscript_is_recovered),
        cmocka_unit_test(test_paused_redis_meets_the_deadline),
        cmocka_unit_test(test_redis_gone_fails_fast),
    };
    int failed = cmocka_run_group_tests_name("redis_url", pure, NULL, NULL);

    failed += cmocka_run_group_tests_name("sync_lua", live, start_redis,
                                          teardown_redis);
    return failed;
}
