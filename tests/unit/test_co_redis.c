/* test_co_redis.c — redis.c and sync.lua against a real Redis.
 *
 * The URL parser is tested as a pure function. The script is tested for
 * real: the test starts a throwaway redis-server on a spare loopback port
 * (and kills exactly that PID at the end), then drives co_redis_eval_sync()
 * and checks the window arithmetic, leases split between edges, challenge
 * and deny decisions, expiry, NOSCRIPT recovery, and the fast failure when
 * Redis goes away. Window rolls are tested by writing the previous window's
 * state into the hash, not by waiting for real windows to pass.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis.h>

#include "tollgated.h"

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
static pid_t redis_pid = -1;
static int redis_port;
static redisContext *admin;     /* the test's own connection */

static int spare_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int start_redis(void **state)
{
    char port[16];
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};

    (void)state;
    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    redis_port = spare_port();
    if (redis_port <= 0)
        return -1;
    snprintf(port, sizeof port, "%d", redis_port);
    redis_pid = fork();
    if (redis_pid < 0)
        return -1;
    if (redis_pid == 0) {
        if (freopen("/dev/null", "w", stdout) == NULL)
            _exit(127);
        execlp("redis-server", "redis-server", "--port", port, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no",
               "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};

        admin = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
        if (admin != NULL && admin->err == 0) {
            redisReply *r = redisCommand(admin, "PING");
            bool up = r != NULL && r->type == REDIS_REPLY_STATUS;

            freeReplyObject(r);
            if (up)
                return 0;
        }
        redisFree(admin);
        admin = NULL;
        nanosleep(&pause, NULL);
    }
    fprintf(stderr, "redis-server did not start on port %d\n", redis_port);
    return -1;
}

static void stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
}

static int teardown_redis(void **state)
{
    (void)state;
    if (admin != NULL)
        redisFree(admin);
    admin = NULL;
    co_redis_shutdown();
    stop_redis();
    return 0;
}

static long long admin_int(const char *fmt, ...)
{
    va_list ap;
    redisReply *r;
    long long v = -1;

    va_start(ap, fmt);
    r = redisvCommand(admin, fmt, ap);
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
    r = redisvCommand(admin, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r->str);
    freeReplyObject(r);
}

static uint64_t redis_now_ms(void)
{
    redisReply *r = redisCommand(admin, "TIME");
    uint64_t ms;

    assert_non_null(r);
    ms = strtoull(r->element[0]->str, NULL, 10) * 1000 +
         strtoull(r->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(r);
    return ms;
}

/* A window no test run can cross (with safe_now()). */
#define HOUR 3600000

struct item {
    const char *quota, *key;
    uint64_t limit, window_ms, over, deny_milli, admitted, attempts;
};

/* One EVALSHA for items[0..n) from edge; out gets 4 integers per item. */
static int eval(const char *edge, const struct item *items, size_t n,
                long long *out)
{
    const char *argv[64];
    size_t lens[64];
    char bufs[64][CO_KEY_TAG_MAX + 8];
    size_t k = 0;
    struct co_script_call call;
    char err[256];
    int rc;

    assert_true(n <= 6);
    for (size_t i = 0; i < n; i++) {
        char tag[CO_KEY_TAG_MAX];

        co_key_tag(items[i].quota, strlen(items[i].quota), items[i].key,
                   strlen(items[i].key), tag, sizeof tag);
        snprintf(bufs[k], sizeof bufs[k], "tg:%s:c", tag);
        snprintf(bufs[k + 1], sizeof bufs[k + 1], "tg:%s:e", tag);
        k += 2;
    }
    snprintf(bufs[k++], sizeof bufs[0], "%llu",
             (unsigned long long)co_wall_ms());
    snprintf(bufs[k++], sizeof bufs[0], "%s", edge);
    snprintf(bufs[k++], sizeof bufs[0], "%zu", n);
    for (size_t i = 0; i < n; i++) {
        const uint64_t v[6] = {items[i].limit, items[i].window_ms,
                               items[i].over, items[i].deny_milli,
                               items[i].admitted, items[i].attempts};

        for (int j = 0; j < 6; j++)
            snprintf(bufs[k++], sizeof bufs[0], "%llu",
                     (unsigned long long)v[j]);
    }
    for (size_t i = 0; i < k; i++) {
        argv[i] = bufs[i];
        lens[i] = strlen(bufs[i]);
    }
    call.nkeys = 2 * n;
    call.nargs = k - 2 * n;
    call.argv = argv;
    call.argvlen = lens;
    rc = co_redis_eval_sync(&call, out, 4 * n, err, sizeof err);
    if (rc != CO_OK && rc != CO_EREDIS)
        fprintf(stderr, "eval: %s\n", err);
    return rc;
}

static void test_init_loads_script(void **state)
{
    struct co_redis_target t;
    char err[256] = "", url[64];
    redisReply *r;

    (void)state;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", redis_port);
    assert_int_equal(co_redis_parse_url(url, 200, &t, err, sizeof err),
                     CO_OK);
    if (co_redis_init(&t, err, sizeof err) != CO_OK)
        fail_msg("init: %s", err);
    assert_int_equal(strlen(co_redis_script_sha()), 40);
    r = redisCommand(admin, "SCRIPT EXISTS %s", co_redis_script_sha());
    assert_int_equal(r->element[0]->integer, 1);
    freeReplyObject(r);
    assert_int_equal(co_redis_ping(err, sizeof err), CO_OK);
}

/* Wait out the last 2 s of a window so a roll cannot happen mid-test. */
static uint64_t safe_now(uint64_t window)
{
    uint64_t now = redis_now_ms();

    if (window - now % window < 2000) {
        struct timespec p = {.tv_sec = 2, .tv_nsec = 0};

        nanosleep(&p, NULL);
        now = redis_now_ms();
    }
    return now;
}

static void test_first_report_and_expiry(void **state)
{
    const struct item it = {"per-ip", "10.0.0.1", 100, 60000, 1, 0, 7, 9};
    long long out[4];
    long long ttl;
    uint64_t before, after;

    (void)state;
    before = safe_now(60000) / 60000;
    assert_int_equal(eval("e1", &it, 1, out), CO_OK);
    after = redis_now_ms() / 60000;
    assert_int_equal(out[0], 0);              /* allow */
    assert_int_equal(out[1], 93);             /* 100 - 7, one edge */
    assert_true(out[2] > 0 && out[2] <= 60000);
    assert_int_equal(out[3], 7);
    assert_int_equal(admin_int("HGET tg:{per-ip|10.0.0.1}:c a"), 7);
    assert_int_equal(admin_int("HGET tg:{per-ip|10.0.0.1}:c t"), 9);
    assert_int_equal(before, after);          /* safe_now() made sure */
    assert_int_equal(admin_int("HGET tg:{per-ip|10.0.0.1}:c w"),
                     (long long)before);
    assert_int_equal(admin_int("ZCARD tg:{per-ip|10.0.0.1}:e"), 1);
    ttl = admin_int("PTTL tg:{per-ip|10.0.0.1}:c");
    assert_true(ttl > 110000 && ttl <= 120000);
    ttl = admin_int("PTTL tg:{per-ip|10.0.0.1}:e");
    assert_true(ttl > 110000 && ttl <= 120000);
}

static void test_lease_is_split_between_edges(void **state)
{
    const struct item a = {"split", "k", 100, HOUR, 1, 0, 10, 10};
    long long out[4];

    (void)state;
    safe_now(HOUR);
    assert_int_equal(eval("edge-a", &a, 1, out), CO_OK);
    assert_int_equal(out[1], 90);
    assert_int_equal(eval("edge-b", &a, 1, out), CO_OK);
    assert_int_equal(out[3], 20);
    assert_int_equal(out[1], 40);             /* (100 - 20) / 2 */
    assert_int_equal(eval("edge-c", &a, 1, out), CO_OK);
    assert_int_equal(out[1], 23);             /* floor(70 / 3) */
    /* an edge reporting again is not counted twice */
    assert_int_equal(eval("edge-a", &a, 1, out), CO_OK);
    assert_int_equal(out[1], 20);             /* (100 - 40) / 3 */
    /* an edge silent for a whole window no longer takes a share */
    admin_ok("ZADD tg:{split|k}:e %llu edge-c",
             (unsigned long long)(redis_now_ms() - HOUR - 1000));
    assert_int_equal(eval("edge-a", &a, 1, out), CO_OK);
    assert_int_equal(out[1], 25);             /* (100 - 50) / 2 */
}

static void test_over_limit_takes_the_quota_action(void **state)
{
    const struct item c = {"chal", "k", 10, HOUR, 1, 0, 10, 10};
    const struct item d = {"deny", "k", 10, HOUR, 2, 0, 12, 12};
    const struct item under = {"chal", "k2", 10, HOUR, 1, 0, 9, 9};
    long long out[12];
    const struct item batch[3] = {c, d, under};

    (void)state;
    safe_now(HOUR);
    assert_int_equal(eval("e1", batch, 3, out), CO_OK);
    assert_int_equal(out[0], 1);              /* 10 >= 10: challenge */
    assert_int_equal(out[1], 0);
    assert_int_equal(out[3], 10);
    assert_int_equal(out[4], 2);              /* quota action deny */
    assert_int_equal(out[5], 0);
    assert_int_equal(out[7], 12);
    assert_int_equal(out[8], 0);              /* other key unaffected */
    assert_int_equal(out[9], 1);
}

/* Budget left but less than one request per edge: a key whose attempts
 * reached the limit is over its quota; one whose attempts did not is not. */
static void test_unsplittable_remainder(void **state)
{
    const struct item a = {"rem", "k", 10, HOUR, 1, 0, 9, 9};
    const struct item hot = {"rem", "k", 10, HOUR, 1, 0, 0, 5};
    const struct item quiet_a = {"rem", "q", 10, HOUR, 1, 0, 9, 9};
    const struct item quiet_b = {"rem", "q", 10, HOUR, 1, 0, 0, 0};
    long long out[4];

    (void)state;
    safe_now(HOUR);
    assert_int_equal(eval("edge-a", &a, 1, out), CO_OK);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 1);              /* 10 - 9, one edge */
    assert_int_equal(eval("edge-b", &hot, 1, out), CO_OK);
    assert_int_equal(out[0], 1);              /* floor(1 / 2) = 0, 14 >= 10 */
    assert_int_equal(out[1], 0);
    assert_int_equal(eval("edge-a", &quiet_a, 1, out), CO_OK);
    assert_int_equal(eval("edge-b", &quiet_b, 1, out), CO_OK);
    assert_int_equal(out[0], 0);              /* 9 attempts < 10 */
    assert_int_equal(out[1], 0);
}

static void test_deny_after_counts_attempts(void **state)
{
    /* admitted stays under the limit, attempts pass 3 x limit */
    const struct item flood = {"flood", "k", 10, HOUR, 1, 3000, 5, 29};
    const struct item more = {"flood", "k", 10, HOUR, 1, 3000, 0, 1};
    const struct item off = {"nodeny", "k", 10, HOUR, 1, 0, 5, 1000};
    long long out[4];

    (void)state;
    safe_now(HOUR);
    assert_int_equal(eval("e1", &flood, 1, out), CO_OK);
    assert_int_equal(out[0], 0);              /* 29 < 30 */
    assert_int_equal(eval("e1", &more, 1, out), CO_OK);
    assert_int_equal(out[0], 2);              /* 30 >= 30 */
    assert_int_equal(out[1], 0);
    assert_int_equal(eval("e1", &off, 1, out), CO_OK);
    assert_int_equal(out[0], 0);              /* deny_after off */
}

static void test_window_roll_and_sliding_estimate(void **state)
{
    const uint64_t w = 3600000;      /* 1 h: one roll at most per test */
    const struct item it = {"roll", "k", 1000000000, 3600000, 1, 0, 3, 4};
    uint64_t idx = safe_now(w) / w;
    long long out[4];

    (void)state;
    /* previous window held w_ms admitted: its weight equals the ms left */
    admin_ok("HSET tg:{roll|k}:c w %llu a %llu t %llu pa 1 pt 1",
             (unsigned long long)(idx - 1), (unsigned long long)w,
             (unsigned long long)w);
    assert_int_equal(eval("e1", &it, 1, out), CO_OK);
    assert_int_equal(out[3], out[2] + 3);     /* pa * left / w + a */
    assert_int_equal(admin_int("HGET tg:{roll|k}:c pa"), (long long)w);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c pt"), (long long)w);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c a"), 3);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c t"), 4);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c w"), (long long)idx);

    /* same window again: counts add up, previous stays */
    assert_int_equal(eval("e1", &it, 1, out), CO_OK);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c a"), 6);
    assert_int_equal(out[3], out[2] + 6);

    /* older than the previous window: everything starts over */
    admin_ok("HSET tg:{roll|k}:c w %llu a 50 t 50 pa 50 pt 50",
             (unsigned long long)(idx - 2));
    assert_int_equal(eval("e1", &it, 1, out), CO_OK);
    assert_int_equal(out[3], 3);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c pa"), 0);
    assert_int_equal(admin_int("HGET tg:{roll|k}:c t"), 4);
}

static void test_previous_window_counts_toward_the_limit(void **state)
{
    const uint64_t w = 3600000;
    const struct item it = {"slide", "k", 100, 3600000, 2, 0, 1, 1};
    uint64_t idx = safe_now(w) / w;
    long long out[4];

    (void)state;
    /* a full previous window of 200 keeps a fresh window over 100 for
     * most of its first half */
    admin_ok("HSET tg:{slide|k}:c w %llu a 200 t 200",
             (unsigned long long)(idx - 1));
    assert_int_equal(eval("e1", &it, 1, out), CO_OK);
    assert_int_equal(out[3], (long long)(200 * (uint64_t)out[2] / w) + 1);
    if (out[3] >= 100)
        assert_int_equal(out[0], 2);
    else
        assert_int_equal(out[0], 0);
}

static void test_special_keys_stay_separate(void **state)
{
    const struct item a = {"q", "a|b", 100, HOUR, 1, 0, 1, 1};
    const struct item b = {"q|a", "b", 100, HOUR, 1, 0, 2, 2};
    long long out[8];
    const struct item batch[2] = {a, b};

    (void)state;
    safe_now(HOUR);
    assert_int_equal(eval("e1", batch, 2, out), CO_OK);
    assert_int_equal(out[3], 1);
    assert_int_equal(out[7], 2);
    assert_int_equal(admin_int("HGET tg:{q|a%%7Cb}:c a"), 1);
    assert_int_equal(admin_int("HGET tg:{q%%7Ca|b}:c a"), 2);
}

static void test_noscript_is_recovered(void **state)
{
    const struct item it = {"noscript", "k", 100, 60000, 1, 0, 1, 1};
    long long out[4];
    redisReply *r;

    (void)state;
    admin_ok("SCRIPT FLUSH");
    assert_int_equal(eval("e1", &it, 1, out), CO_OK);
    assert_int_equal(out[3], 1);
    r = redisCommand(admin, "SCRIPT EXISTS %s", co_redis_script_sha());
    assert_int_equal(r->element[0]->integer, 1);
    freeReplyObject(r);
}

static void test_redis_gone_fails_fast(void **state)
{
    const struct item it = {"gone", "k", 100, 60000, 1, 0, 1, 1};
    long long out[4];
    char err[256];
    uint64_t t0;

    (void)state;
    redisFree(admin);
    admin = NULL;
    stop_redis();
    t0 = co_mono_ms();
    assert_int_equal(eval("e1", &it, 1, out), CO_EREDIS);
    /* the dropped connection is retried once, then the thread backs off */
    assert_int_equal(co_redis_ping(err, sizeof err), CO_EREDIS);
    assert_int_equal(co_redis_ping(err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "next try in"));
    assert_true(co_mono_ms() - t0 < 1000);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_parse_url_refusals),
    };
    const struct CMUnitTest live[] = {
        cmocka_unit_test(test_init_loads_script),
        cmocka_unit_test(test_first_report_and_expiry),
        cmocka_unit_test(test_lease_is_split_between_edges),
        cmocka_unit_test(test_unsplittable_remainder),
        cmocka_unit_test(test_over_limit_takes_the_quota_action),
        cmocka_unit_test(test_deny_after_counts_attempts),
        cmocka_unit_test(test_window_roll_and_sliding_estimate),
        cmocka_unit_test(test_previous_window_counts_toward_the_limit),
        cmocka_unit_test(test_special_keys_stay_separate),
        cmocka_unit_test(test_noscript_is_recovered),
        cmocka_unit_test(test_redis_gone_fails_fast),
    };
    int failed = cmocka_run_group_tests_name("redis_url", pure, NULL, NULL);

    failed += cmocka_run_group_tests_name("sync_lua", live, start_redis,
                                          teardown_redis);
    return failed;
}
