/* test_co_store.c — the policy store against a real redis-server: the
 * --policy file seeds version 1 once, If-Match writes succeed or conflict
 * without changing anything, rollback copies an old version, every write
 * leaves one audit entry and the audit log pages, and the poll thread
 * installs a version another coordinator wrote.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tollgated.h"
#include "test_redis_server.h"

static struct test_redis redis;

static const char DOC1[] =
    "{\"version\": 1, \"quotas\": [{\"name\": \"per-ip\", \"key\": \"ip\","
    " \"limit\": 50, \"window_s\": 60, \"action\": \"challenge\"}]}";
static const char DOC2[] =
    "{\"version\": 1, \"quotas\": [{\"name\": \"other\", \"key\": \"ip\","
    " \"limit\": 7, \"window_s\": 60, \"action\": \"deny\"}]}";

static struct co_policy *parse(const char *doc)
{
    struct co_policy *p;
    char err[256];

    if (co_policy_parse(doc, strlen(doc), &p, err, sizeof err) != CO_OK)
        fail_msg("%s", err);
    return p;
}

static int setup(void **state)
{
    (void)state;
    return test_redis_start_and_connect(&redis);
}

static int teardown(void **state)
{
    (void)state;
    co_store_stop();
    co_policy_install(NULL);
    co_redis_shutdown();
    test_redis_stop(&redis);
    return 0;
}

static uint64_t installed_version(void)
{
    struct co_policy *p = co_policy_current();
    uint64_t v = p ? p->version : 0;

    co_policy_release(p);
    return v;
}

static char *current_doc(uint64_t *version)
{
    char *doc, err[256];
    size_t len;

    if (co_store_get(0, &doc, &len, version, err, sizeof err) != CO_OK)
        fail_msg("get: %s", err);
    return doc;
}

/* Seeding happens once; a second coordinator with another file gets
 * what Redis holds. */
static void test_seed_once(void **state)
{
    struct co_policy *f1 = parse(DOC1), *f2 = parse(DOC2), *p;
    uint64_t v;
    char err[256], *doc;

    (void)state;
    assert_int_equal(co_store_start(f1, 1000, err, sizeof err), CO_OK);
    assert_int_equal(installed_version(), 1);
    doc = current_doc(&v);
    assert_int_equal(v, 1);
    assert_int_equal(strncmp(doc, "{\"version\":1,", 13), 0);
    assert_non_null(strstr(doc, "per-ip"));
    free(doc);
    co_store_stop();
    co_policy_install(NULL);

    assert_int_equal(co_store_start(f2, 1000, err, sizeof err), CO_OK);
    p = co_policy_current();
    assert_int_equal(p->version, 1);
    assert_non_null(co_policy_find(p, "per-ip"));
    assert_null(co_policy_find(p, "other"));
    co_policy_release(p);
    co_policy_release(f1);
    co_policy_release(f2);
}

/* If-Match: a write based on the current version lands and is installed;
 * one based on an old version changes nothing. Rollback copies. */
static void test_put_conflict_rollback(void **state)
{
    struct co_policy *p2 = parse(DOC2);
    char *text = co_policy_dump(p2, 0), *doc, *v1, err[256];
    uint64_t v = 0;
    size_t len;

    (void)state;
    assert_int_equal(co_store_put(text, 1, "alice", "policy.put", "{}", &v,
                                  err, sizeof err), CO_OK);
    assert_int_equal(v, 2);
    assert_int_equal(installed_version(), 2);
    assert_int_equal(co_store_put(text, 1, "bob", "policy.put", "{}", &v,
                                  err, sizeof err), CO_ECONFLICT);
    assert_int_equal(v, 2);
    assert_non_null(strstr(err, "2"));
    doc = current_doc(&v);
    assert_int_equal(v, 2);
    free(doc);

    assert_int_equal(co_store_rollback(1, -1, "alice", &v, err, sizeof err),
                     CO_OK);
    assert_int_equal(v, 3);
    assert_int_equal(installed_version(), 3);
    assert_int_equal(co_store_get(1, &v1, &len, &v, err, sizeof err), CO_OK);
    doc = current_doc(&v);
    assert_int_equal(v, 3);
    /* equal but for the version */
    assert_string_equal(strchr(doc, ','), strchr(v1, ','));
    free(doc);
    free(v1);
    assert_int_equal(co_store_rollback(99, -1, "alice", &v, err, sizeof err),
                     CO_ENOTFOUND);
    assert_int_equal(co_store_rollback(1, 2, "alice", &v, err, sizeof err),
                     CO_ECONFLICT);
    assert_int_equal(co_store_get(99, &doc, &len, &v, err, sizeof err),
                     CO_ENOTFOUND);
    free(text);
    co_policy_release(p2);
}

/* Versions newest first; audit entries page with "next". */
static void test_versions_and_audit(void **state)
{
    json_t *vs, *a, *b, *e;
    char err[256];
    json_int_t next;

    (void)state;
    assert_int_equal(co_store_audit_add("carol", "key.reset",
                                        "{\"quota\":\"per-ip\"}", err,
                                        sizeof err), CO_OK);
    assert_int_equal(co_store_versions(&vs, err, sizeof err), CO_OK);
    assert_int_equal(json_integer_value(json_object_get(vs, "current")), 3);
    assert_int_equal(json_array_size(json_object_get(vs, "versions")), 3);
    e = json_array_get(json_object_get(vs, "versions"), 0);
    assert_int_equal(json_integer_value(json_object_get(e, "version")), 3);
    assert_string_equal(json_string_value(json_object_get(e, "by")),
                        "alice");
    assert_string_equal(json_string_value(json_object_get(e, "action")),
                        "policy.rollback");
    assert_true(json_integer_value(json_object_get(e, "created_at")) > 0);
    json_decref(vs);

    /* seed, put, rollback, key reset: 4 entries, newest first */
    assert_int_equal(co_store_audit(3, 0, &a, err, sizeof err), CO_OK);
    assert_int_equal(json_array_size(json_object_get(a, "entries")), 3);
    e = json_array_get(json_object_get(a, "entries"), 0);
    assert_int_equal(json_integer_value(json_object_get(e, "id")), 4);
    assert_string_equal(json_string_value(json_object_get(e, "who")),
                        "carol");
    assert_int_equal(json_integer_value(json_object_get(e, "from_version")),
                     3);
    assert_int_equal(json_integer_value(json_object_get(e, "to_version")), 3);
    assert_string_equal(json_string_value(json_object_get(
        json_object_get(e, "detail"), "quota")), "per-ip");
    e = json_array_get(json_object_get(a, "entries"), 2);
    assert_int_equal(json_integer_value(json_object_get(e, "from_version")),
                     1);
    assert_int_equal(json_integer_value(json_object_get(e, "to_version")), 2);
    next = json_integer_value(json_object_get(a, "next"));
    assert_int_equal(next, 2);
    assert_int_equal(co_store_audit(3, (uint64_t)next, &b, err, sizeof err),
                     CO_OK);
    assert_int_equal(json_array_size(json_object_get(b, "entries")), 1);
    e = json_array_get(json_object_get(b, "entries"), 0);
    assert_int_equal(json_integer_value(json_object_get(e, "id")), 1);
    assert_string_equal(json_string_value(json_object_get(e, "action")),
                        "seed");
    assert_true(json_is_null(json_object_get(b, "next")));
    json_decref(a);
    json_decref(b);
}

/* Another coordinator's write reaches this one through the poll. */
static void test_poll_installs_foreign_version(void **state)
{
    redisReply *r;
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
    struct co_policy *p;

    (void)state;
    r = redisCommand(redis.admin, "SET tg:{policy}:v:7 %s",
                     "{\"version\":7,\"quotas\":[{\"name\":\"new\",\"key\":"
                     "\"ip\",\"limit\":3,\"window_s\":1,\"action\":\"deny\"}]}");
    freeReplyObject(r);
    r = redisCommand(redis.admin, "SET tg:{policy}:current 7");
    freeReplyObject(r);
    for (int i = 0; i < 150 && installed_version() != 7; i++)
        nanosleep(&pause, NULL);
    p = co_policy_current();
    assert_int_equal(p->version, 7);
    assert_non_null(co_policy_find(p, "new"));
    co_policy_release(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_once),
        cmocka_unit_test(test_put_conflict_rollback),
        cmocka_unit_test(test_versions_and_audit),
        cmocka_unit_test(test_poll_installs_foreign_version),
    };

    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    return cmocka_run_group_tests(tests, setup, teardown);
}
