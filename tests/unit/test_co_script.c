/* test_co_script.c — the script-call builder (script.c): KEYS before
 * ARGV, sticky errors, the arena surviving growth, the SHA1 of each
 * embedded script (checked against OpenSSL over the embedded bytes), and
 * the hash tag a Redis Cluster router reads from a call. Redis itself is
 * exercised through these calls in test_co_redis.c, test_co_store.c and
 * test_co_stats.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "tollgated.h"

static void test_keys_then_args(void **state)
{
    struct co_script_call c;
    char big[5000];

    (void)state;
    memset(big, 'x', sizeof big);
    co_call_init(&c, co_script(CO_SCRIPT_POLICY_AUDIT), 4);
    co_call_key(&c, "tg:{policy}:audit", 17);
    co_call_arg_u64(&c, 18446744073709551615ULL);
    co_call_arg(&c, big, sizeof big);       /* the arena moves */
    co_call_arg_str(&c, "");
    assert_int_equal(co_call_seal(&c), CO_OK);
    assert_int_equal(c.nkeys, 1);
    assert_int_equal(c.nargs, 3);
    assert_memory_equal(c.argv[0], "tg:{policy}:audit", 17);
    assert_int_equal(c.argvlen[1], 20);
    assert_memory_equal(c.argv[1], "18446744073709551615", 20);
    assert_int_equal(c.argvlen[2], sizeof big);
    assert_memory_equal(c.argv[2], big, sizeof big);
    assert_int_equal(c.argvlen[3], 0);
    co_call_free(&c);
}

static void test_errors_are_sticky(void **state)
{
    struct co_script_call c;

    (void)state;
    co_call_init(&c, co_script(CO_SCRIPT_STATS), 3);
    co_call_arg_str(&c, "flush");
    co_call_key(&c, "tg:{stats}:edges", 16);   /* a key after an arg */
    co_call_arg_str(&c, "more");
    assert_int_equal(co_call_seal(&c), CO_EINVAL);
    co_call_free(&c);

    co_call_init(&c, co_script(CO_SCRIPT_STATS), 1);
    co_call_arg_str(&c, "a");
    co_call_arg_str(&c, "b");                  /* over cap */
    assert_int_equal(co_call_seal(&c), CO_EINVAL);
    co_call_free(&c);
}

static void test_script_shas(void **state)
{
    (void)state;
    for (int id = 0; id < CO_SCRIPTS; id++) {
        const struct co_script *s = co_script((enum co_script_id)id);
        unsigned char md[SHA_DIGEST_LENGTH];
        char hex[41];

        assert_true(s->len > 0);
        assert_int_equal(strlen(s->src), s->len);
        SHA1((const unsigned char *)s->src, s->len, md);
        for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        assert_string_equal(s->sha, hex);
    }
    assert_string_equal(co_script(CO_SCRIPT_SYNC)->name, "sync");
    assert_ptr_equal(co_redis_script_sha(), co_script(CO_SCRIPT_SYNC)->sha);
}

static void test_call_tag(void **state)
{
    struct co_script_call c;
    char kc[CO_RKEY_COUNTERS_MAX], ke[CO_RKEY_COUNTERS_MAX];
    const char *tag;
    size_t tl;
    int n;

    (void)state;
    /* one item's counters: one slot, "q|k" */
    n = co_rkey_counters("q", 1, "k", 1, kc, ke, sizeof kc);
    co_call_init(&c, co_script(CO_SCRIPT_SYNC), 2);
    co_call_key(&c, kc, (size_t)n);
    co_call_key(&c, ke, (size_t)n);
    assert_int_equal(co_call_seal(&c), CO_OK);
    assert_int_equal(co_call_tag(&c, &tag, &tl), CO_OK);
    assert_int_equal(tl, 3);
    assert_memory_equal(tag, "q|k", 3);
    co_call_free(&c);

    /* the policy store's six keys: one slot */
    co_call_init(&c, co_script(CO_SCRIPT_POLICY_WRITE), 2);
    co_call_key(&c, co_rkeys.policy_current, strlen(co_rkeys.policy_current));
    co_call_key(&c, co_rkeys.policy_version_prefix,
                strlen(co_rkeys.policy_version_prefix));
    assert_int_equal(co_call_seal(&c), CO_OK);
    assert_int_equal(co_call_tag(&c, &tag, &tl), CO_OK);
    assert_memory_equal(tag, "policy", tl);
    co_call_free(&c);

    /* a replay key and an item's counters: two slots */
    co_call_init(&c, co_script(CO_SCRIPT_SYNC), 2);
    co_call_key(&c, "tg:{edge|e}:sig:00", 18);
    co_call_key(&c, kc, (size_t)n);
    assert_int_equal(co_call_seal(&c), CO_OK);
    assert_int_equal(co_call_tag(&c, &tag, &tl), CO_EINVAL);
    co_call_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_then_args),
        cmocka_unit_test(test_errors_are_sticky),
        cmocka_unit_test(test_script_shas),
        cmocka_unit_test(test_call_tag),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
