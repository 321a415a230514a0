/* test_bucket.c — the edge's token-bucket math (edge-module/src/bucket.c)
 * and the floor a quota grants (tg__quota_floor). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bucket.h"
#include "policy.h"

#define WINDOW_MS 60000

static void new_key_gets_floor(void **state)
{
    (void)state;
    tg__bucket b;
    tg__bucket_init(&b, 3, 1000);
    assert_int_equal(b.tokens, 3);
    assert_int_equal(b.grant, 3);
    assert_int_equal(b.action, TG__ACT_ALLOW);
    assert_int_equal(tg__bucket_verdict(&b, 1000), TG__V_ALLOW);

    tg__bucket_init(&b, 0, 1000);
    assert_int_equal(tg__bucket_verdict(&b, 1000), TG__V_RATE);
}

static void take_counts_down_to_zero(void **state)
{
    (void)state;
    tg__bucket b;
    tg__bucket_init(&b, 2, 0);
    tg__bucket_take(&b);
    assert_int_equal(b.tokens, 1);
    assert_int_equal(tg__bucket_verdict(&b, 0), TG__V_ALLOW);
    tg__bucket_take(&b);
    assert_int_equal(b.tokens, 0);
    assert_int_equal(tg__bucket_verdict(&b, 0), TG__V_RATE);
    tg__bucket_take(&b); /* never below zero */
    assert_int_equal(b.tokens, 0);
}

static void low_water_is_a_quarter_of_the_grant(void **state)
{
    (void)state;
    tg__bucket b;
    tg__bucket_init(&b, 0, 0);
    tg__bucket_apply(&b, TG__ACT_ALLOW, 100, 0, 0, 0);
    b.tokens = 26;
    assert_false(tg__bucket_low(&b));
    b.tokens = 25;
    assert_true(tg__bucket_low(&b));
    b.tokens = 0;
    assert_true(tg__bucket_low(&b));

    /* A grant of 1 (the usual floor): low as soon as it is spent. */
    tg__bucket_init(&b, 1, 0);
    assert_false(tg__bucket_low(&b));
    tg__bucket_take(&b);
    assert_true(tg__bucket_low(&b));
}

static void grant_replaces_allowance_minus_pending(void **state)
{
    (void)state;
    tg__bucket b;
    tg__bucket_init(&b, 5, 0);

    /* Admitted since the batch froze: already spent out of the lease. */
    tg__bucket_apply(&b, TG__ACT_ALLOW, 100, 0, 30, 10);
    assert_int_equal(b.tokens, 70);
    assert_int_equal(b.grant, 100);
    assert_int_equal(b.granted_at_ms, 10);

    /* The grant replaces, it does not add. */
    tg__bucket_apply(&b, TG__ACT_ALLOW, 40, 0, 0, 20);
    assert_int_equal(b.tokens, 40);

    /* Never negative. */
    tg__bucket_apply(&b, TG__ACT_ALLOW, 10, 0, 30, 30);
    assert_int_equal(b.tokens, 0);
    assert_int_equal(tg__bucket_verdict(&b, 30), TG__V_RATE);

    /* A zero lease from a healthy coordinator takes everything away. */
    b.tokens = 50;
    tg__bucket_apply(&b, TG__ACT_ALLOW, 0, 0, 0, 40);
    assert_int_equal(b.tokens, 0);
}

static void actions_hold_until_reset(void **state)
{
    (void)state;
    tg__bucket b;
    tg__bucket_init(&b, 4, 0);

    tg__bucket_apply(&b, TG__ACT_CHALLENGE, 0, 5000, 0, 1000);
    assert_int_equal(b.reset_at_ms, 6000);
    assert_int_equal(tg__bucket_verdict(&b, 1000), TG__V_CHALLENGE);
    assert_int_equal(tg__bucket_verdict(&b, 5999), TG__V_CHALLENGE);
    assert_int_equal(tg__bucket_remaining(&b, 5999), 0);
    assert_int_equal(tg__bucket_reset_in_ms(&b, WINDOW_MS, 2000), 4000);

    /* Reset passed: back to ALLOW, but with the empty bucket the
     * challenge left, not the floor: the next sync decides. */
    tg__bucket_refresh(&b, 4, WINDOW_MS, 6000);
    assert_int_equal(b.action, TG__ACT_ALLOW);
    assert_int_equal(b.reset_at_ms, 0);
    assert_int_equal(b.tokens, 0);
    assert_int_equal(tg__bucket_verdict(&b, 6000), TG__V_RATE);
    tg__bucket_apply(&b, TG__ACT_ALLOW, 4, 0, 0, 6000);
    assert_int_equal(tg__bucket_verdict(&b, 6000), TG__V_ALLOW);

    tg__bucket_apply(&b, TG__ACT_DENY, 0, 2000, 0, 7000);
    assert_int_equal(tg__bucket_verdict(&b, 8999), TG__V_BLOCKED);
    tg__bucket_refresh(&b, 4, WINDOW_MS, 8999);
    assert_int_equal(tg__bucket_verdict(&b, 8999), TG__V_BLOCKED);
    tg__bucket_refresh(&b, 4, WINDOW_MS, 9000);
    assert_int_equal(b.action, TG__ACT_ALLOW);
    assert_int_equal(tg__bucket_verdict(&b, 9000), TG__V_RATE);

    /* An action without a reset time is not in force. */
    tg__bucket_apply(&b, TG__ACT_DENY, 0, 0, 0, 10000);
    assert_int_equal(tg__bucket_verdict(&b, 10000), TG__V_RATE);
    tg__bucket_refresh(&b, 4, WINDOW_MS, 10000);
    assert_int_equal(b.action, TG__ACT_ALLOW);
    assert_int_equal(tg__bucket_verdict(&b, 10000), TG__V_RATE);

    /* Unknown actions (a newer coordinator) are ALLOW bounded by the lease. */
    tg__bucket_apply(&b, 7, 2, 1000, 0, 11000);
    assert_int_equal(b.action, TG__ACT_ALLOW);
    assert_int_equal(tg__bucket_verdict(&b, 11000), TG__V_ALLOW);

    /* Reset times saturate instead of wrapping. */
    tg__bucket_apply(&b, TG__ACT_DENY, 0, UINT64_MAX, 0, 12000);
    assert_int_equal(b.reset_at_ms, UINT64_MAX);
    assert_int_equal(tg__bucket_verdict(&b, 12000), TG__V_BLOCKED);
}

static void silent_window_falls_back_to_floor(void **state)
{
    (void)state;
    tg__bucket b;
    tg__bucket_init(&b, 3, 0);
    b.tokens = 0;
    tg__bucket_refresh(&b, 3, WINDOW_MS, WINDOW_MS - 1);
    assert_int_equal(b.tokens, 0);
    assert_int_equal(tg__bucket_reset_in_ms(&b, WINDOW_MS, WINDOW_MS - 1), 1);
    tg__bucket_refresh(&b, 3, WINDOW_MS, WINDOW_MS);
    assert_int_equal(b.tokens, 3);
    assert_int_equal(b.granted_at_ms, WINDOW_MS);

    /* A lease not renewed for a window is void: the coordinator no
     * longer counts it as outstanding, so the edge falls back to the
     * floor, as for a new key. */
    tg__bucket_apply(&b, TG__ACT_ALLOW, 50, 0, 0, WINDOW_MS);
    tg__bucket_refresh(&b, 3, WINDOW_MS, 2 * WINDOW_MS - 1);
    assert_int_equal(b.tokens, 50);
    tg__bucket_refresh(&b, 3, WINDOW_MS, 2 * WINDOW_MS);
    assert_int_equal(b.tokens, 3);
    assert_int_equal(b.grant, 3);
}

/* A(age) = max(floor, L * 2^(-over / H)): exact at whole half-lives,
 * linear in between (so never below the true curve, which is convex). */
static void stale_allowance_curve(void **state)
{
    (void)state;
    const uint64_t H = 10000;
    assert_int_equal(tg__stale_allowance(1000, 10, 0, H), 1000);
    assert_int_equal(tg__stale_allowance(1000, 10, H, H), 500);
    assert_int_equal(tg__stale_allowance(1000, 10, 2 * H, H), 250);
    assert_int_equal(tg__stale_allowance(1000, 10, 3 * H, H), 125);
    assert_int_equal(tg__stale_allowance(1000, 10, H / 2, H), 750);      /* true: 707 */
    assert_int_equal(tg__stale_allowance(1000, 10, 3 * H / 2, H), 375);  /* true: 354 */
    /* Down to the floor, and never below it. */
    assert_int_equal(tg__stale_allowance(1000, 10, 7 * H, H), 10);
    assert_int_equal(tg__stale_allowance(1000, 10, 70 * H, H), 10);
    assert_int_equal(tg__stale_allowance(1000, 10, UINT64_MAX, H), 10);
    /* No lease yet: the floor. */
    assert_int_equal(tg__stale_allowance(0, 7, 0, H), 7);
    /* Huge leases and half-lives do not overflow. */
    uint64_t big = tg__stale_allowance(UINT64_MAX, 0, H / 2, H);
    assert_true(big > UINT64_MAX / 4 * 3 - 16 && big <= UINT64_MAX / 4 * 3 + 16);
    assert_int_equal(tg__stale_allowance(1u << 20, 0, 1ull << 40, 1ull << 40), 1u << 19);

    /* Monotonic, and sandwiched between the neighbouring powers of two. */
    uint64_t prev = UINT64_MAX;
    for (uint64_t over = 0; over < 12 * H; over += 37) {
        uint64_t a = tg__stale_allowance(1u << 20, 0, over, H);
        uint64_t k = over / H;
        assert_true(a <= prev);
        assert_true(a <= (1u << 20) >> k && a >= (1u << 20) >> (k + 1));
        prev = a;
    }
}

static void stale_bucket_refills_at_decaying_rate(void **state)
{
    (void)state;
    const tg__stale st = {100000, 10000};  /* stale since t=100 s, H = 10 s */
    tg__bucket b;
    tg__bucket_init(&b, 10, 0);
    tg__bucket_apply(&b, TG__ACT_ALLOW, 100, 0, 0, 90000);
    b.tokens = 0;

    /* 6 s into staleness: A = 100 * (1 - 0.3) = 70 per 60 s window, so
     * 6 s refill 7 tokens (counted from when staleness began). */
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, false, 106000);
    assert_int_equal(b.tokens, 7);
    /* A moment later, nothing new yet; the remainder is kept. */
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, false, 106001);
    assert_int_equal(b.tokens, 7);

    /* Never more than A: a full bucket shrinks as A decays. */
    b.tokens = 100;
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, false, 110000);
    assert_int_equal(b.tokens, 50);
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, false, 120000);
    assert_int_equal(b.tokens, 25);

    /* At the floor, fail-closed: capped at the floor and no refill. */
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, false, 200000);
    assert_int_equal(b.tokens, 10);
    b.tokens = 0;
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, false, 400000);
    assert_int_equal(b.tokens, 0);
    assert_int_equal(tg__bucket_verdict(&b, 400000), TG__V_RATE);

    /* At the floor, fail-open: the floor per window keeps coming. */
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, true, 430000);
    assert_int_equal(b.tokens, 5);
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, true, 1000000);
    assert_int_equal(b.tokens, 10);

    /* A coordinator action still ends at its reset. */
    tg__bucket_apply(&b, TG__ACT_DENY, 0, 1000, 0, 1000000);
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, true, 1000999);
    assert_int_equal(tg__bucket_verdict(&b, 1000999), TG__V_BLOCKED);
    tg__bucket_refresh_stale(&b, 10, WINDOW_MS, &st, true, 1001000);
    assert_int_equal(b.action, TG__ACT_ALLOW);
}

static void quota_floor(void **state)
{
    (void)state;
    tg__quota q = {0};
    q.limit = 100;
    q.floor = 0;
    assert_int_equal(tg__quota_floor(&q), 1);    /* at least one */
    q.floor = 7;
    assert_int_equal(tg__quota_floor(&q), 7);
    q.floor = 1000;
    assert_int_equal(tg__quota_floor(&q), 100);  /* never above the limit */
    q.limit = 0;
    assert_int_equal(tg__quota_floor(&q), 0);    /* a limit of 0 admits nothing */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_key_gets_floor),
        cmocka_unit_test(take_counts_down_to_zero),
        cmocka_unit_test(low_water_is_a_quarter_of_the_grant),
        cmocka_unit_test(grant_replaces_allowance_minus_pending),
        cmocka_unit_test(actions_hold_until_reset),
        cmocka_unit_test(silent_window_falls_back_to_floor),
        cmocka_unit_test(stale_allowance_curve),
        cmocka_unit_test(stale_bucket_refills_at_decaying_rate),
        cmocka_unit_test(quota_floor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
