/* test_co_redis_keys.c — every Redis key name (redis_keys.c) against the
 * spelling of the data model in sync.lua's header, the names other tests
 * and tools read (tests/integration, bench), and the hash-tag rule: the
 * keys one script call touches share a tag. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tollgated.h"

static void test_key_tag_percent_encoding(void **state)
{
    static const struct {
        const char *quota, *key;
        size_t klen;
        const char *tag;
    } cases[] = {
        {"per-ip", "1.2.3.4", 7, "{per-ip|1.2.3.4}"},
        {"per-ip", "2001:db8::1", 11, "{per-ip|2001:db8::1}"},
        {"q_1.x", "AZaz09._:-", 10, "{q_1.x|AZaz09._:-}"},
        {"per-ip", "", 0, "{per-ip|}"},
        {"per-ip", "{x}", 3, "{per-ip|%7Bx%7D}"},
        {"per-ip", "a|b", 3, "{per-ip|a%7Cb}"},
        {"per-ip", "100%", 4, "{per-ip|100%25}"},
        {"per-ip", "a b/c", 5, "{per-ip|a%20b%2Fc}"},
        {"per-ip", "\x00\xff", 2, "{per-ip|%00%FF}"},
        {"per-ip", "caf\xc3\xa9", 5, "{per-ip|caf%C3%A9}"},
    };
    char out[CO_KEY_TAG_MAX];
    char big_key[CO_KEY_MAX + 1];
    char big_quota[CO_QUOTA_NAME_MAX + 1];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = co_key_tag(cases[i].quota, strlen(cases[i].quota),
                           cases[i].key, cases[i].klen, out, sizeof out);

        assert_int_equal(n, (int)strlen(cases[i].tag));
        assert_string_equal(out, cases[i].tag);
    }
    /* the worst case fits CO_KEY_TAG_MAX exactly */
    memset(big_key, '{', sizeof big_key);
    memset(big_quota, '%', sizeof big_quota);
    assert_int_equal(co_key_tag(big_quota, CO_QUOTA_NAME_MAX, big_key,
                                CO_KEY_MAX, out, sizeof out),
                     CO_KEY_TAG_MAX - 1);
    assert_int_equal(co_key_tag(big_quota, CO_QUOTA_NAME_MAX, big_key,
                                CO_KEY_MAX, out, sizeof out - 1),
                     CO_ETOOBIG);
    assert_int_equal(co_key_tag("q", 1, big_key, CO_KEY_MAX + 1, out,
                                sizeof out), CO_EINVAL);
    /* distinct pairs give distinct tags (the separator is always encoded) */
    co_key_tag("a", 1, "b|c", 3, out, sizeof out);
    {
        char other[CO_KEY_TAG_MAX];

        co_key_tag("a|b", 3, "c", 1, other, sizeof other);
        assert_string_not_equal(out, other);
    }
}

static void test_counter_keys(void **state)
{
    char c[CO_RKEY_COUNTERS_MAX], e[CO_RKEY_COUNTERS_MAX];
    int n;

    (void)state;
    n = co_rkey_counters("per-ip", 6, "1.2.3.4", 7, c, e, sizeof c);
    assert_int_equal(n, (int)strlen("tg:{per-ip|1.2.3.4}:c"));
    assert_string_equal(c, "tg:{per-ip|1.2.3.4}:c");
    assert_string_equal(e, "tg:{per-ip|1.2.3.4}:e");
    /* '|', '{', '}' and '%' never appear raw: distinct pairs, distinct
     * tags ("a|b" + "c" is not "a" + "b|c") */
    n = co_rkey_counters("q", 1, "a|b}{%", 6, c, e, sizeof c);
    assert_true(n > 0);
    assert_string_equal(c, "tg:{q|a%7Cb%7D%7B%25}:c");
    /* the longest pair fits the documented cap exactly */
    {
        char q[CO_QUOTA_NAME_MAX], k[CO_KEY_MAX];

        memset(q, '{', sizeof q);
        memset(k, '}', sizeof k);
        n = co_rkey_counters(q, sizeof q, k, sizeof k, c, e, sizeof c);
        assert_int_equal(n + 1, CO_RKEY_COUNTERS_MAX);
        assert_int_equal(co_rkey_counters(q, sizeof q, k, sizeof k, c, e,
                                          sizeof c - 1), CO_ETOOBIG);
        assert_int_equal(co_rkey_counters(q, sizeof q + 1, k, sizeof k, c,
                                          e, sizeof c), CO_EINVAL);
    }
}

#define NONCE_KEY "tg:{nonce|000102030405060708090a0b0c0d0eff}"

static void test_challenge_keys(void **state)
{
    const uint8_t b[16] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                           0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0xff};
    char k[CO_CLEARANCE_KEY_MAX];

    (void)state;
    assert_int_equal(co_rkey_nonce(b, k, CO_RKEY_NONCE_MAX),
                     (int)strlen(NONCE_KEY));
    assert_string_equal(k, NONCE_KEY);
    assert_int_equal(co_rkey_nonce(b, k, 10), CO_ETOOBIG);
    assert_true(co_rkey_clearance("per-ip", b, k, sizeof k) > 0);
    assert_string_equal(k, "tg:{clr|per-ip|000102030405060708090a0b0c0d0eff}");
}

/* In Redis Cluster mode each sync call carries its own replay mark, in
 * the slot of its items, with the edge encoded outside the tag. */
static void test_replay_key_in_the_call_slot(void **state)
{
    static const char sig[] =
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    char k[CO_REPLAY_AT_KEY_MAX], c[CO_RKEY_COUNTERS_MAX],
        e[CO_RKEY_COUNTERS_MAX];
    int n;

    (void)state;
    n = co_rkey_replay_at("per-ip", "1.2.3.4", "fra-1/9f3a", sig, k,
                          sizeof k);
    assert_int_equal(n, (int)strlen(k));
    assert_string_equal(k, "tg:{per-ip|1.2.3.4}:sig:fra-1%2F9f3a:"
                           "00112233445566778899aabbccddeeff");
    assert_true(co_rkey_counters("per-ip", 6, "1.2.3.4", 7, c, e,
                                 sizeof c) > 0);
    assert_int_equal(co_cluster_keyslot(k, strlen(k)),
                     co_cluster_keyslot(c, strlen(c)));
    /* braces in the edge id are encoded: the tag stays the item's */
    assert_true(co_rkey_replay_at("q", "k", "{x}", sig, k, sizeof k) > 0);
    assert_string_equal(k, "tg:{q|k}:sig:%7Bx%7D:"
                           "00112233445566778899aabbccddeeff");
    /* the longest quota, key and edge id fit the cap */
    {
        char q[CO_QUOTA_NAME_MAX + 1], key[CO_KEY_MAX + 1],
            edge[CO_KEY_MAX + 1];

        memset(q, '{', sizeof q - 1);
        q[sizeof q - 1] = '\0';
        memset(key, '}', sizeof key - 1);
        key[sizeof key - 1] = '\0';
        memset(edge, '%', sizeof edge - 1);
        edge[sizeof edge - 1] = '\0';
        n = co_rkey_replay_at(q, key, edge, sig, k, sizeof k);
        assert_true(n > 0 && (size_t)n < sizeof k);
        assert_int_equal(co_rkey_replay_at(q, key, edge, sig, k, 40),
                         CO_ETOOBIG);
    }
}

/* "{...}" of a name: what Redis Cluster hashes. */
static void tag_of(const char *name, char *out, size_t outlen)
{
    const char *o = strchr(name, '{'), *c = o ? strchr(o, '}') : NULL;

    assert_non_null(c);
    assert_true((size_t)(c - o) < outlen);
    memcpy(out, o + 1, (size_t)(c - o - 1));
    out[c - o - 1] = '\0';
}

static void test_store_and_stats_keys_share_their_tags(void **state)
{
    const char *policy[] = {
        co_rkeys.policy_current, co_rkeys.policy_seq, co_rkeys.policy_meta,
        co_rkeys.policy_audit, co_rkeys.policy_audit_seq,
        co_rkeys.policy_version_prefix,
    };
    const char *stats[] = {
        co_rkeys.stats_edges, co_rkeys.stats_edgez, co_rkeys.stats_ch,
        co_rkeys.stats_chz, co_rkeys.stats_prefix,
    };
    char t[32], v[64];

    (void)state;
    for (size_t i = 0; i < sizeof policy / sizeof *policy; i++) {
        tag_of(policy[i], t, sizeof t);
        assert_string_equal(t, "policy");
    }
    for (size_t i = 0; i < sizeof stats / sizeof *stats; i++) {
        tag_of(stats[i], t, sizeof t);
        assert_string_equal(t, "stats");
    }
    assert_string_equal(co_rkeys.policy_current, "tg:{policy}:current");
    assert_string_equal(co_rkeys.stats_edges, "tg:{stats}:edges");
    assert_int_equal(co_rkey_policy_version(42, v, sizeof v),
                     (int)strlen("tg:{policy}:v:42"));
    assert_string_equal(v, "tg:{policy}:v:42");
    assert_int_equal(co_rkey_policy_version(42, v, 5), CO_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_tag_percent_encoding),
        cmocka_unit_test(test_counter_keys),
        cmocka_unit_test(test_challenge_keys),
        cmocka_unit_test(test_replay_key_in_the_call_slot),
        cmocka_unit_test(test_store_and_stats_keys_share_their_tags),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
