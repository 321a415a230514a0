/* test_co_metrics.c — GET /metrics rendering (metrics.c): counters fed
 * through the recording functions come out as exact exposition lines, the
 * histogram is cumulative with +Inf == _count, shadow quotas count under
 * "shadow", the overshoot gauge resets with its window, edges expire
 * after 60 s, and the handler answers with the 0.0.4 content type.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgated.h"

#define NOW_MS 1700000000000ULL

static char *render(uint64_t now_ms)
{
    char *text = NULL;
    size_t len = 0;

    assert_int_equal(co_metrics_render(now_ms, 7, &text, &len), CO_OK);
    assert_int_equal(strlen(text), len);
    return text;
}

static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
        p += n;
    }
    fail_msg("line not found: %s\n---\n%s", line, text);
}

static int reset(void **state)
{
    (void)state;
    co_metrics_reset();
    co_stats_reset();           /* the edge gauges read its edge table */
    return 0;
}

/* A sync of edge id answered at now_ms, as sync.c records it. */
static void edge_seen(const char *id, uint64_t sent_at_ms, uint64_t now_ms)
{
    struct co_stats_sync s = {.edge_id = id, .sent_at_ms = sent_at_ms};

    co_stats_sync_seen(&s, now_ms);
}

static void test_sync_requests_and_histogram(void **state)
{
    char *t;

    (void)state;
    co_metrics_sync_done(CO_SYNC_RESULT_OK, 400);        /* <= 0.0005 */
    co_metrics_sync_done(CO_SYNC_RESULT_OK, 500);        /* == 0.0005 */
    co_metrics_sync_done(CO_SYNC_RESULT_DEGRADED, 3000); /* 0.005 */
    co_metrics_sync_done(CO_SYNC_RESULT_UNAUTHORIZED, 2000000); /* +Inf */
    t = render(NOW_MS);
    assert_line(t, "# HELP tollgate_sync_requests_total POST /v1/sync "
                   "requests answered by this coordinator, by result.");
    assert_line(t, "# TYPE tollgate_sync_requests_total counter");
    assert_line(t, "tollgate_sync_requests_total{result=\"ok\"} 2");
    assert_line(t, "tollgate_sync_requests_total{result=\"degraded\"} 1");
    assert_line(t, "tollgate_sync_requests_total{result=\"unauthorized\"} 1");
    assert_line(t, "tollgate_sync_requests_total{result=\"conflict\"} 0");
    assert_line(t, "# TYPE tollgate_sync_duration_seconds histogram");
    assert_line(t, "tollgate_sync_duration_seconds_bucket{le=\"0.0005\"} 2");
    assert_line(t, "tollgate_sync_duration_seconds_bucket{le=\"0.0025\"} 2");
    assert_line(t, "tollgate_sync_duration_seconds_bucket{le=\"0.005\"} 3");
    assert_line(t, "tollgate_sync_duration_seconds_bucket{le=\"1\"} 3");
    assert_line(t, "tollgate_sync_duration_seconds_bucket{le=\"+Inf\"} 4");
    assert_line(t, "tollgate_sync_duration_seconds_count 4");
    assert_line(t, "tollgate_sync_duration_seconds_sum 2.003900");
    assert_line(t, "tollgate_policy_version 7");
    /* one HELP and one TYPE per family */
    assert_null(strstr(strstr(t, "# TYPE tollgate_sync_requests_total") + 1,
                       "# TYPE tollgate_sync_requests_total"));
    free(t);
}

static void test_decisions_and_overshoot(void **state)
{
    char *t;

    (void)state;
    co_metrics_decisions("per-ip", false, 5, 2, 1);
    co_metrics_decisions("per-ip", false, 1, 0, 0);
    co_metrics_decisions("dry-run", true, 3, 4, 5);
    co_metrics_overshoot("per-ip", 60000, NOW_MS, 120, 100);
    co_metrics_overshoot("per-ip", 60000, NOW_MS, 50, 100);   /* lower */
    co_metrics_overshoot("dry-run", 60000, NOW_MS, 1, 3);
    t = render(NOW_MS);
    assert_line(t, "# TYPE tollgate_decisions_total counter");
    assert_line(t, "tollgate_decisions_total{quota=\"per-ip\","
                   "outcome=\"allowed\"} 6");
    assert_line(t, "tollgate_decisions_total{quota=\"per-ip\","
                   "outcome=\"denied\"} 2");
    assert_line(t, "tollgate_decisions_total{quota=\"per-ip\","
                   "outcome=\"challenged\"} 1");
    assert_line(t, "tollgate_decisions_total{quota=\"per-ip\","
                   "outcome=\"shadow\"} 0");
    assert_line(t, "tollgate_decisions_total{quota=\"dry-run\","
                   "outcome=\"shadow\"} 12");
    assert_line(t, "tollgate_decisions_total{quota=\"dry-run\","
                   "outcome=\"allowed\"} 0");
    assert_line(t, "tollgate_quota_overshoot_ratio{quota=\"per-ip\"} "
                   "1.200000");
    assert_line(t, "tollgate_quota_overshoot_ratio{quota=\"dry-run\"} "
                   "0.333334");
    free(t);
    /* The next window: the gauge starts over. */
    t = render(NOW_MS + 60000);
    assert_line(t, "tollgate_quota_overshoot_ratio{quota=\"per-ip\"} "
                   "0.000000");
    free(t);
    co_metrics_overshoot("per-ip", 60000, NOW_MS + 60000, 80, 100);
    t = render(NOW_MS + 60000);
    assert_line(t, "tollgate_quota_overshoot_ratio{quota=\"per-ip\"} "
                   "0.800000");
    free(t);
}

static void test_edges_and_fixed_families(void **state)
{
    char *t;

    (void)state;
    edge_seen("fra-1/a", NOW_MS - 250, NOW_MS);
    edge_seen("fra-1/b", 0, NOW_MS);                /* lag unknown */
    edge_seen("fra-1/a", NOW_MS - 1500, NOW_MS + 10);
    edge_seen("ams-2/c", NOW_MS + 5000, NOW_MS);    /* ahead: 0 */
    atomic_fetch_add(&co_metrics.challenges_issued, 3);
    atomic_fetch_add(&co_metrics.redis_errors[CO_REDIS_OOM], 2);
    atomic_store(&co_metrics.redis_up, true);
    t = render(NOW_MS + 10);
    assert_line(t, "# TYPE tollgate_edges_active gauge");
    assert_line(t, "tollgate_edges_active 3");
    assert_line(t, "tollgate_edge_sync_lag_seconds 1.510");
    assert_line(t, "tollgate_challenges_issued_total 3");
    assert_line(t, "tollgate_redis_errors_total{kind=\"oom\"} 2");
    assert_line(t, "tollgate_redis_errors_total{kind=\"noperm\"} 0");
    assert_line(t, "tollgate_redis_up 1");
    assert_non_null(strstr(t, "tollgate_sync_auth_failures_total{reason=\""
                              "bad_signature\"} "));
    assert_non_null(strstr(t, "tollgate_challenge_failures_total{reason=\""
                              "expired\"} "));
    free(t);
    /* 60 s later only the edge seen at +10 ms is still active. */
    t = render(NOW_MS + 60005);
    assert_line(t, "tollgate_edges_active 1");
    free(t);
}

static void test_handler(void **state)
{
    struct co_request req = {.method = "GET", .path = "/metrics"};
    struct co_response resp = {0};
    const struct co_route *route;
    char allow[64];

    (void)state;
    assert_int_equal(co_route_lookup("GET", "/metrics", &route, allow,
                                     sizeof allow), CO_OK);
    assert_ptr_equal(route->handler, co_metrics_handle);
    co_metrics_handle(&req, &resp);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.content_type,
                        "text/plain; version=0.0.4; charset=utf-8");
    assert_true(resp.body_len > 0);
    assert_int_equal(resp.body[resp.body_len - 1], '\n');
    co_response_clear(&resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_sync_requests_and_histogram, reset),
        cmocka_unit_test_setup(test_decisions_and_overshoot, reset),
        cmocka_unit_test_setup(test_edges_and_fixed_families, reset),
        cmocka_unit_test_setup(test_handler, reset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
