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
    tg__bucket_apply(&b, TG__ACT_ALLOW, 100, 0, 0, 0, false, 0);
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
    tg__bucket_apply(&b, TG__ACT_ALLOW, 100, 0, 30, 5, false, 10);
    assert_int_equal(b.tokens, 70);
    assert_int_equal(b.grant, 100);
    assert_int_equal(b.granted_at_ms, 10);

    /* The grant replaces, it does not add. */
    tg__bucket_apply(&b, TG__ACT_ALLOW, 40, 0, 0, 5, false, 20);
    assert_int_equal(b.tokens, 40);

    /* Never negative. */
    tg__bucket_apply(&b, TG__ACT_ALLOW, 10, 0, 30, 5, false, 30);
    assert_int_equal(b.tokens, 0);
    assert_int_equal(tg__bucket_verdict(&b, 30), TG__V_RATE);

    /* A zero lease from a healthy coordinator takes everything away. */
    b.tokens = 50;
    tg__bucket_apply(&b, TG__ACT_ALLOW, 0, 0, 0, 5, false, 40);
    assert_int_equal(b.tokens, 0);
}

static void degraded_grant_keeps_the_floor(void **state)
{
    (void)state;
    tg__bucket b;
    tg__bucket_init(&b, 10, 0);

    b.tokens = 50;
    tg__bucket_apply(&b, TG__ACT_ALLOW, 0, 0, 0, 10, true, 1);
    assert_int_equal(b.tokens, 10); /* shrinks, but not below the floor */

    b.tokens = 3;
    tg__bucket_apply(&b, TG__ACT_ALLOW, 0, 0, 0, 10, true, 2);
    assert_int_equal(b.tokens, 3);  /* and is not raised to it either */

    b.tokens = 3;
    tg__bucket_apply(&b, TG__ACT_ALLOW, 40, 0, 5, 10, true, 3);
    assert_int_equal(b.tokens, 35); /* a real lease still counts */
}

static void actions_hold_until_reset(void **state)
{
    (void)state;
    tg__bucket b;
    tg__bucket_init(&b, 4, 0);

    tg__bucket_apply(&b, TG__ACT_CHALLENGE, 0, 5000, 0, 4, false, 1000);
    assert_int_equal(b.reset_at_ms, 6000);
    assert_int_equal(tg__bucket_verdict(&b, 1000), TG__V_CHALLENGE);
    assert_int_equal(tg__bucket_verdict(&b, 5999), TG__V_CHALLENGE);
    assert_int_equal(tg__bucket_remaining(&b, 5999), 0);
    assert_int_equal(tg__bucket_reset_in_ms(&b, WINDOW_MS, 2000), 4000);

    /* Reset passed: back to ALLOW with the floor, counted from now. */
    tg__bucket_refresh(&b, 4, WINDOW_MS, 6000);
    assert_int_equal(b.action, TG__ACT_ALLOW);
    assert_int_equal(b.reset_at_ms, 0);
    assert_int_equal(b.tokens, 4);
    assert_int_equal(b.granted_at_ms, 6000);
    assert_int_equal(tg__bucket_verdict(&b, 6000), TG__V_ALLOW);

    tg__bucket_apply(&b, TG__ACT_DENY, 0, 2000, 0, 4, false, 7000);
    assert_int_equal(tg__bucket_verdict(&b, 8999), TG__V_BLOCKED);
    tg__bucket_refresh(&b, 4, WINDOW_MS, 8999);
    assert_int_equal(tg__bucket_verdict(&b, 8999), TG__V_BLOCKED);
    tg__bucket_refresh(&b, 4, WINDOW_MS, 9000);
    assert_int_equal(tg__bucket_verdict(&b, 9000), TG__V_ALLOW);

    /* An action without a reset time is not in force. */
    tg__bucket_apply(&b, TG__ACT_DENY, 0, 0, 0, 4, false, 10000);
    assert_int_equal(tg__bucket_verdict(&b, 10000), TG__V_RATE);
    tg__bucket_refresh(&b, 4, WINDOW_MS, 10000);
    assert_int_equal(tg__bucket_verdict(&b, 10000), TG__V_ALLOW);

    /* Unknown actions (a newer coordinator) are ALLOW bounded by the lease. */
    tg__bucket_apply(&b, 7, 2, 1000, 0, 4, false, 11000);
    assert_int_equal(b.action, TG__ACT_ALLOW);
    assert_int_equal(tg__bucket_verdict(&b, 11000), TG__V_ALLOW);

    /* Reset times saturate instead of wrapping. */
    tg__bucket_apply(&b, TG__ACT_DENY, 0, UINT64_MAX, 0, 4, false, 12000);
    assert_int_equal(b.reset_at_ms, UINT64_MAX);
    assert_int_equal(tg__bucket_verdict(&b, 12000), TG__V_BLOCKED);
}

static void silent_window_tops_up_to_floor(void **state)
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

    /* Never shrinks a larger lease. */
    tg__bucket_apply(&b, TG__ACT_ALLOW, 50, 0, 0, 3, false, WINDOW_MS);
    tg__bucket_refresh(&b, 3, WINDOW_MS, 3 * WINDOW_MS);
    assert_int_equal(b.tokens, 50);
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
        cmocka_unit_test(degraded_grant_keeps_the_floor),
        cmocka_unit_test(actions_hold_until_reset),
        cmocka_unit_test(silent_window_tops_up_to_floor),
        cmocka_unit_test(quota_floor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
