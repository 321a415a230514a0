/* test_co_config.c — flags and TOLLGATE_* variables: defaults, both
 * spellings of a flag, the flag winning over the variable, and a clear
 * message naming the flag or variable for every bad value. Also the
 * logfmt value escaping the log lines rely on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgated.h"

/* A fake environment: NULL-terminated "NAME=value" list. */
static const char *const *fake_env;

static const char *env_lookup(const char *name)
{
    size_t n = strlen(name);

    for (size_t i = 0; fake_env != NULL && fake_env[i] != NULL; i++)
        if (strncmp(fake_env[i], name, n) == 0 && fake_env[i][n] == '=')
            return fake_env[i] + n + 1;
    return NULL;
}

static int parse(const char *const *env, int argc, const char **argv,
                 struct co_config *cfg, char *err)
{
    fake_env = env;
    return co_config_parse(argc, (char **)argv, env_lookup, cfg, err, 256);
}

static void test_defaults_need_only_policy_and_keys(void **state)
{
    const char *argv[] = {"tollgated", "--policy", "p.json", "--keys", "k"};
    struct co_config cfg;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(NULL, 5, argv, &cfg, err), CO_CONFIG_RUN);
    assert_string_equal(cfg.listen, "127.0.0.1:8080");
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6379");
    assert_string_equal(cfg.policy_path, "p.json");
    assert_true(cfg.threads >= 2 && cfg.threads % 2 == 0);
    assert_int_equal(cfg.max_body, 1048576);
    assert_int_equal(cfg.redis_timeout_ms, 50);
    assert_string_equal(cfg.keys_path, "k");
    assert_int_equal(cfg.log_level, CO_LOG_INFO);
    assert_int_equal(cfg.http.max_conns, 4096);
    assert_int_equal(cfg.http.max_conns_per_ip, 128);
    assert_int_equal(cfg.http.request_timeout_ms, 10000);
}

static void test_policy_and_keys_are_required(void **state)
{
    const char *argv[] = {"tollgated"};
    const char *no_keys[] = {"tollgated", "--policy", "p"};
    const char *no_policy[] = {"tollgated", "--keys", "k"};
    const char *env[] = {"TOLLGATE_KEYS=env.keys", NULL};
    struct co_config cfg;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(NULL, 1, argv, &cfg, err), CO_EINVAL);
    assert_non_null(strstr(err, "--policy"));
    assert_int_equal(parse(NULL, 3, no_keys, &cfg, err), CO_EINVAL);
    assert_non_null(strstr(err, "--keys FILE (or TOLLGATE_KEYS) is "
                                "required"));
    assert_int_equal(parse(NULL, 3, no_policy, &cfg, err), CO_EINVAL);
    assert_non_null(strstr(err, "--policy"));
    assert_int_equal(parse(env, 3, no_keys, &cfg, err), CO_CONFIG_RUN);
    assert_string_equal(cfg.keys_path, "env.keys");
}

static void test_every_flag_both_spellings(void **state)
{
    const char *argv[] = {
        "tollgated", "--listen", "127.0.0.1:0", "--redis=redis://h:1/2",
        "--policy=x.json", "--threads", "3", "--max-body=2048",
        "--redis-timeout-ms", "75", "--log-level=debug",
        "--keys", "/etc/tollgate/keys", "--max-connections=512",
        "--max-conns-per-ip", "0", "--request-timeout-ms=2500",
    };
    struct co_config cfg;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(NULL, sizeof argv / sizeof argv[0], argv, &cfg,
                           err), CO_CONFIG_RUN);
    assert_string_equal(cfg.listen, "127.0.0.1:0");
    assert_string_equal(cfg.redis_url, "redis://h:1/2");
    assert_string_equal(cfg.policy_path, "x.json");
    assert_int_equal(cfg.threads, 3);
    assert_int_equal(cfg.max_body, 2048);
    assert_int_equal(cfg.redis_timeout_ms, 75);
    assert_int_equal(cfg.log_level, CO_LOG_DEBUG);
    assert_string_equal(cfg.keys_path, "/etc/tollgate/keys");
    assert_int_equal(cfg.http.max_conns, 512);
    assert_int_equal(cfg.http.max_conns_per_ip, 0);
    assert_int_equal(cfg.http.request_timeout_ms, 2500);
}

static void test_env_and_flag_precedence(void **state)
{
    const char *env[] = {
        "TOLLGATE_LISTEN=127.0.0.1:9999", "TOLLGATE_POLICY=env.json",
        "TOLLGATE_KEYS=env.keys",
        "TOLLGATE_THREADS=7", "TOLLGATE_REDIS=redis://env:1",
        "TOLLGATE_MAX_BODY=", /* empty counts as unset */
        "TOLLGATE_LOG_LEVEL=warn", "TOLLGATE_REDIS_TIMEOUT_MS=20", NULL,
    };
    const char *argv[] = {"tollgated", "--threads", "5", "--keys", "flag.k"};
    struct co_config cfg;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(env, 5, argv, &cfg, err), CO_CONFIG_RUN);
    assert_string_equal(cfg.keys_path, "flag.k");  /* flag wins */
    assert_string_equal(cfg.listen, "127.0.0.1:9999");
    assert_string_equal(cfg.policy_path, "env.json");
    assert_string_equal(cfg.redis_url, "redis://env:1");
    assert_int_equal(cfg.threads, 5);              /* flag wins */
    assert_int_equal(cfg.max_body, 1048576);
    assert_int_equal(cfg.log_level, CO_LOG_WARN);
    assert_int_equal(cfg.redis_timeout_ms, 20);
}

static void test_help_and_version(void **state)
{
    const char *h[] = {"tollgated", "--help"};
    const char *v[] = {"tollgated", "--version", "--bogus"};
    struct co_config cfg;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(NULL, 2, h, &cfg, err), CO_CONFIG_HELP);
    assert_int_equal(parse(NULL, 3, v, &cfg, err), CO_CONFIG_VERSION);
}

static void test_bad_values_name_the_source(void **state)
{
    static const struct {
        const char *arg, *val, *msg;
    } flags[] = {
        {"--threads", "0", "--threads: must be an integer 1..1024"},
        {"--threads", "2x", "--threads: must be an integer"},
        {"--threads", "-2", "--threads: must be an integer"},
        {"--threads", "99999999999999999999", "--threads: must be"},
        {"--max-body", "1023", "--max-body: must be an integer 1024.."},
        {"--redis-timeout-ms", "0", "--redis-timeout-ms: must be"},
        {"--listen", "8080", "--listen: must be host:port"},
        {"--listen", "127.0.0.1:", "--listen: must be host:port"},
        {"--redis", "http://x", "--redis: must be a redis:// URL"},
        {"--log-level", "verbose", "--log-level: must be debug, info"},
        {"--policy", "", "--policy: must be 1.."},
        {"--keys", "", "--keys: must be 1.."},
        {"--max-connections", "8", "--max-connections: must be an integer "
         "16..1000000"},
        {"--max-conns-per-ip", "-1", "--max-conns-per-ip: must be"},
        {"--request-timeout-ms", "99", "--request-timeout-ms: must be an "
         "integer 100..3600000"},
        /* secrets never come from the command line (ps shows it) */
        {"--challenge-secret", "00", "unknown argument"},
    };
    const char *env[] = {"TOLLGATE_THREADS=lots", NULL};
    const char *only_policy[] = {"tollgated", "--policy", "p"};
    const char *unknown[] = {"tollgated", "--policy", "p", "--thread", "2"};
    const char *positional[] = {"tollgated", "--policy", "p", "extra"};
    const char *missing[] = {"tollgated", "--policy"};
    struct co_config cfg;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        const char *argv[] = {"tollgated", "--policy", "p", flags[i].arg,
                              flags[i].val};

        err[0] = '\0';
        assert_int_equal(parse(NULL, 5, argv, &cfg, err), CO_EINVAL);
        if (strncmp(err, flags[i].msg, strlen(flags[i].msg)) != 0)
            fail_msg("%s %s: \"%s\"", flags[i].arg, flags[i].val, err);
    }
    assert_int_equal(parse(env, 3, only_policy, &cfg, err), CO_EINVAL);
    assert_non_null(strstr(err, "TOLLGATE_THREADS: must be an integer"));
    assert_int_equal(parse(NULL, 5, unknown, &cfg, err), CO_EINVAL);
    assert_non_null(strstr(err, "unknown argument '--thread'"));
    assert_int_equal(parse(NULL, 4, positional, &cfg, err), CO_EINVAL);
    assert_non_null(strstr(err, "unknown argument 'extra'"));
    assert_int_equal(parse(NULL, 2, missing, &cfg, err), CO_EINVAL);
    assert_non_null(strstr(err, "--policy needs a value"));
}

static void test_log_value_escaping(void **state)
{
    char buf[64];

    (void)state;
    assert_string_equal(co_log_value(buf, sizeof buf, "e1", 2), "e1");
    assert_string_equal(co_log_value(buf, sizeof buf, "10.0.0.1:80", 11),
                        "10.0.0.1:80");
    assert_string_equal(co_log_value(buf, sizeof buf, "", 0), "\"\"");
    assert_string_equal(co_log_value(buf, sizeof buf, "a b", 3),
                        "\"a b\"");
    /* a client cannot forge a field or a line */
    assert_string_equal(co_log_value(buf, sizeof buf, "x level=error", 13),
                        "\"x level=error\"");
    assert_string_equal(co_log_value(buf, sizeof buf, "a\"b\\c\nd", 7),
                        "\"a\\\"b\\\\c\\nd\"");
    assert_string_equal(co_log_value(buf, sizeof buf, "\x01\xff", 2),
                        "\"\\x01\\xff\"");
    /* cut, never overflowing, still quoted */
    {
        char small[12], long_s[100];

        memset(long_s, 'x', sizeof long_s);
        co_log_value(small, sizeof small, long_s, sizeof long_s);
        assert_true(strlen(small) < sizeof small);
        assert_non_null(strstr(small, "..."));
        long_s[5] = ' ';
        co_log_value(small, sizeof small, long_s, sizeof long_s);
        assert_true(strlen(small) < sizeof small);
        assert_int_equal(small[0], '"');
        assert_int_equal(small[strlen(small) - 1], '"');
    }
}

static void test_log_level_names(void **state)
{
    enum co_log_level l;

    (void)state;
    assert_int_equal(co_log_level_parse("debug", &l), CO_OK);
    assert_int_equal(l, CO_LOG_DEBUG);
    assert_int_equal(co_log_level_parse("error", &l), CO_OK);
    assert_int_equal(l, CO_LOG_ERROR);
    assert_int_equal(co_log_level_parse("INFO", &l), CO_EINVAL);
    assert_int_equal(co_log_level_parse("", &l), CO_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_need_only_policy_and_keys),
        cmocka_unit_test(test_policy_and_keys_are_required),
        cmocka_unit_test(test_every_flag_both_spellings),
        cmocka_unit_test(test_env_and_flag_precedence),
        cmocka_unit_test(test_help_and_version),
        cmocka_unit_test(test_bad_values_name_the_source),
        cmocka_unit_test(test_log_value_escaping),
        cmocka_unit_test(test_log_level_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
