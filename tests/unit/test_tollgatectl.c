/* test_tollgatectl.c — tollgatectl's pure parts, without a server: option
 * splitting, numbers, percent-encoding of URL path segments, `quota set`
 * flags onto a quota, and the text tables of get / versions / audit /
 * key inspect. The HTTP side is driven by tests/integration against the
 * real coordinator. The two pure files are included as they are.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../tools/ctl_args.c"
#include "../../tools/ctl_render.c"

static char err[256];

/* ------------------------------------------------------------ options */

static void options_split_globals_from_words(void **state)
{
    const char *url = NULL, *tmo = NULL;
    int help = 0, npos;
    const struct ctl_opt globals[] = {
        {"--url", &url, NULL, 0}, {"--timeout-ms", &tmo, NULL, 0},
        {"--help", NULL, &help, 1}, {NULL, NULL, NULL, 0}};
    char *argv[] = {"quota", "--url", "http://h:1", "set", "q", "--limit",
                    "5", "--timeout-ms=250", "-", "--", "--url", "x"};
    char *pos[12];

    (void)state;
    assert_int_equal(ctl_opts_parse(12, argv, globals, true, pos, &npos,
                                     err, sizeof err), 0);
    assert_string_equal(url, "http://h:1");
    assert_string_equal(tmo, "250");
    assert_int_equal(help, 0);
    /* Unknown options, "-", and "--" with all after it stay, in order. */
    assert_int_equal(npos, 9);
    assert_string_equal(pos[0], "quota");
    assert_string_equal(pos[1], "set");
    assert_string_equal(pos[2], "q");
    assert_string_equal(pos[3], "--limit");
    assert_string_equal(pos[4], "5");
    assert_string_equal(pos[5], "-");
    assert_string_equal(pos[6], "--");
    assert_string_equal(pos[7], "--url");
    assert_string_equal(pos[8], "x");
}

static void options_of_a_command(void **state)
{
    struct ctl_quota_flags f = {0};
    const struct ctl_opt opts[] = {
        {"--limit", &f.limit, NULL, 0}, {"--prefix", &f.prefix, NULL, 0},
        {"--shadow", NULL, &f.shadow, CTL_ON},
        {"--no-shadow", NULL, &f.shadow, CTL_OFF}, {NULL, NULL, NULL, 0}};
    char *a1[] = {"q", "--shadow", "--prefix", "-x", "--no-shadow", "--",
                  "--k"};
    char *a2[] = {"--nope"}, *a3[] = {"--limit"}, *a4[] = {"--shadow=1"};
    char *pos[8];
    int npos;

    (void)state;
    assert_int_equal(ctl_opts_parse(7, a1, opts, false, pos, &npos, err,
                                    sizeof err), 0);
    assert_int_equal(f.shadow, CTL_OFF);     /* the last one wins */
    assert_string_equal(f.prefix, "-x");     /* a value may start with - */
    assert_int_equal(npos, 2);
    assert_string_equal(pos[0], "q");
    assert_string_equal(pos[1], "--k");      /* after "--": a word */

    assert_int_equal(ctl_opts_parse(1, a2, opts, false, pos, &npos, err,
                                    sizeof err), -1);
    assert_string_equal(err, "unknown option --nope");
    assert_int_equal(ctl_opts_parse(1, a3, opts, false, pos, &npos, err,
                                    sizeof err), -1);
    assert_string_equal(err, "option --limit needs a value");
    assert_int_equal(ctl_opts_parse(1, a4, opts, false, pos, &npos, err,
                                    sizeof err), -1);
    assert_string_equal(err, "option --shadow takes no value");
}

static void numbers_are_plain_decimals(void **state)
{
    static const char *bad[] = {"", "-1", "+1", " 1", "1 ", "1x", "0x10",
                                "01", "1e3", "18446744073709551616"};
    uint64_t v;

    (void)state;
    assert_int_equal(ctl_parse_u64("0", 0, 10, "n", &v, err, sizeof err), 0);
    assert_int_equal(v, 0);
    assert_int_equal(ctl_parse_u64("18446744073709551615", 0, UINT64_MAX,
                                   "n", &v, err, sizeof err), 0);
    assert_true(v == UINT64_MAX);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (ctl_parse_u64(bad[i], 0, UINT64_MAX, "n", &v, err, sizeof err)
            != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(ctl_parse_u64("0", 1, 9, "LIMIT", &v, err, sizeof err),
                     -1);
    assert_string_equal(err, "LIMIT: must be between 1 and 9, not 0");
}

/* ------------------------------------------------------------ URL paths */

static void path_segments_are_percent_encoded(void **state)
{
    static const struct { const char *in, *out; } v[] = {
        {"per-ip", "per-ip"},
        {"A-Za-z0-9._~", "A-Za-z0-9._~"},
        {"t|k", "t%7Ck"},
        {"100%", "100%25"},
        {"a/b", "a%2Fb"},
        {"2001:db8::1", "2001%3Adb8%3A%3A1"},
        {"sub alice?x=1#f", "sub%20alice%3Fx%3D1%23f"},
        {"caf\xc3\xa9", "caf%C3%A9"},
        {"+&;=", "%2B%26%3B%3D"},
        {".", "%2E"},                        /* never a dot-segment */
        {"..", "%2E%2E"},
        {"...x", "...x"},
        {"\x01\x7f\xff", "%01%7F%FF"},
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        assert_int_equal(ctl_path_segment(v[i].in, out, sizeof out),
                         (long)strlen(v[i].out));
        assert_string_equal(out, v[i].out);
    }
    assert_int_equal(ctl_path_segment("", out, sizeof out), -1);
    assert_int_equal(ctl_path_segment("abc", out, 4), 3);
    assert_int_equal(ctl_path_segment("abcd", out, 4), -1);
    assert_int_equal(ctl_path_segment("a|", out, 4), -1);   /* "a%7C" + NUL */
    assert_int_equal(ctl_path_segment("a|", out, 5), 4);
}

/* ------------------------------------------------------------ quota set */

static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
}

static void quota_set_creates_with_defaults(void **state)
{
    struct ctl_quota_flags f = {.limit = "100"};
    json_t *q;
    char *s;

    (void)state;
    assert_int_equal(ctl_quota_edit(NULL, "login", &f, &q, err, sizeof err),
                     0);
    s = dump(q);
    assert_string_equal(s, "{\"action\":\"challenge\",\"key\":\"ip\","
                        "\"limit\":100,\"name\":\"login\",\"window_s\":60}");
    free(s);
    json_decref(q);

    f.limit = NULL;
    assert_int_equal(ctl_quota_edit(NULL, "login", &f, &q, err, sizeof err),
                     -1);
    assert_null(q);
    assert_string_equal(err, "quota login does not exist: --limit is "
                        "required to create it");
}

static void quota_set_changes_only_given_fields(void **state)
{
    struct ctl_quota_flags f = {
        .window = "10", .prefix = "/v2/", .methods = "GET,POST",
        .action = "deny", .deny_after = "2.5", .burst = "7",
        .shadow = CTL_ON, .fail_open = CTL_OFF};
    json_t *cur = json_loads(
        "{\"name\":\"api\",\"key\":\"claim:sub\",\"limit\":500,"
        "\"window_s\":60,\"floor\":3,\"require_token\":true,"
        "\"overrides\":{\"a|b\":{\"limit\":9}}}", 0, NULL), *q;
    char *s;

    (void)state;
    assert_int_equal(ctl_quota_edit(cur, "api", &f, &q, err, sizeof err), 0);
    s = dump(q);
    assert_string_equal(s, "{\"action\":\"deny\",\"burst\":7,"
                        "\"deny_after\":2.5,\"fail_open\":false,"
                        "\"floor\":3,\"key\":\"claim:sub\",\"limit\":500,"
                        "\"methods\":[\"GET\",\"POST\"],\"name\":\"api\","
                        "\"overrides\":{\"a|b\":{\"limit\":9}},"
                        "\"path_prefix\":\"/v2/\",\"require_token\":true,"
                        "\"shadow\":true,\"window_s\":10}");
    free(s);
    json_decref(q);
    /* The server's copy is not touched. */
    assert_int_equal(json_integer_value(json_object_get(cur, "window_s")),
                     60);

    /* --methods "" is every method. */
    memset(&f, 0, sizeof f);
    f.methods = "";
    assert_int_equal(ctl_quota_edit(cur, "api", &f, &q, err, sizeof err), 0);
    assert_int_equal(json_array_size(json_object_get(q, "methods")), 0);
    json_decref(q);
    json_decref(cur);
}

static void quota_set_refuses_bad_values(void **state)
{
    static const struct { struct ctl_quota_flags f; const char *err; } v[] = {
        {{.limit = "0"}, "--limit: must be between 1 and "
                         "9223372036854775807, not 0"},
        {{.limit = "5", .window = "1m"}, "--window: not a whole number: "
                                         "\"1m\""},
        {{.limit = "5", .action = "block"}, "--action: challenge or deny, "
                                            "not \"block\""},
        {{.limit = "5", .deny_after = "x"}, "--deny-after: not a number "
                                            ">= 0: \"x\""},
        {{.limit = "5", .deny_after = "inf"}, "--deny-after: not a number "
                                              ">= 0: \"inf\""},
        {{.limit = "5", .methods = "GET,"}, "--methods: \"GET,\" is not a "
                                            "list like GET,POST"},
        {{.limit = "5", .methods = ",GET"}, "--methods: \",GET\" is not a "
                                            "list like GET,POST"},
        {{.limit = "5", .key = "ip\xff"}, "--key: not valid UTF-8"},
    };
    json_t *q;

    (void)state;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        assert_int_equal(ctl_quota_edit(NULL, "q", &v[i].f, &q, err,
                                        sizeof err), -1);
        assert_null(q);
        assert_string_equal(err, v[i].err);
    }
}

/* ------------------------------------------------------------ rendering */

static char *out_buf;
static size_t out_len;

static FILE *out_open(void)
{
    FILE *f = open_memstream(&out_buf, &out_len);

    assert_non_null(f);
    return f;
}

/* Closes f, compares what was written, frees it. */
static void out_check(FILE *f, const char *want)
{
    fclose(f);
    assert_string_equal(out_buf, want);
    free(out_buf);
    out_buf = NULL;
}

static json_t *json(const char *s)
{
    json_error_t e;
    json_t *v = json_loads(s, 0, &e);

    if (v == NULL)
        fail_msg("test JSON: %s", e.text);
    return v;
}

static void tables_align_and_clean(void **state)
{
    static const char *const heads[] = {"NAME", "N", "NOTE"};
    struct ctl_table t;
    FILE *f = out_open();

    (void)state;
    ctl_table_init(&t, 3, heads, 0x2u);
    ctl_table_add(&t, "caf\xc3\xa9");        /* 4 columns wide, 5 bytes */
    ctl_table_addf(&t, "%d", 7);
    ctl_table_add(&t, "x");
    ctl_table_add(&t, "a\x1b[2Jb");          /* no terminal escapes */
    ctl_table_addf(&t, "%d", 12345);
    ctl_table_add(&t, "");
    assert_int_equal(ctl_table_print(&t, f), 0);
    ctl_table_free(&t);
    out_check(f,
        "NAME        N  NOTE\n"
        "caf\xc3\xa9        7  x\n"
        "a?[2Jb  12345\n");
}

static void text_is_cleaned_and_times_are_dates(void **state)
{
    char buf[8];

    (void)state;
    assert_string_equal(ctl_clean("a\nb\tc", buf, sizeof buf), "a?b?c");
    /* Cut at 7 bytes, but not inside the two-byte "é". */
    assert_string_equal(ctl_clean("abcdef\xc3\xa9", buf, sizeof buf),
                        "abcdef");
    assert_string_equal(ctl_format_time(1714564803000LL, err, sizeof err),
                        "2024-05-01T12:00:03Z");
    assert_string_equal(ctl_format_time(1714564803LL, err, sizeof err),
                        "2024-05-01T12:00:03Z");
    assert_string_equal(ctl_format_time(0, err, sizeof err), "-");
}

static void get_prints_version_then_quotas(void **state)
{
    json_t *doc = json(
        "{\"version\":7,\"sync_interval_ms\":1000,\"clearance_ttl_s\":300,"
        "\"expected_edges\":4,\"quotas\":["
        "{\"name\":\"per-ip\",\"key\":\"ip\",\"limit\":100,\"window_s\":60,"
        "\"path_prefix\":\"/api/\",\"methods\":[],\"action\":\"challenge\","
        "\"floor\":10,\"shadow\":false,\"fail_open\":true,\"deny_after\":0},"
        "{\"name\":\"login\",\"key\":\"ip+header:x-user\",\"limit\":10,"
        "\"window_s\":3600,\"burst\":2,\"path_prefix\":\"/login\","
        "\"methods\":[\"POST\",\"PUT\"],\"action\":\"deny\",\"shadow\":true,"
        "\"fail_open\":false,\"deny_after\":2.5,\"require_token\":true,"
        "\"overrides\":{\"10.0.0.1|bob\":{\"limit\":50}}}]}");
    FILE *f = out_open();

    (void)state;
    assert_int_equal(ctl_render_policy(doc, f), 0);
    out_check(f,
        "policy version 7\n"
        "sync_interval_ms 1000  clearance_ttl_s 300  expected_edges 4\n"
        "\n"
        "NAME    KEY               LIMIT  WINDOW  BURST  FLOOR  ACTION     "
        "DENY_AFTER  PATH    METHODS   FLAGS                 OVERRIDES\n"
        "per-ip  ip                  100     60s      -     10  challenge  "
        "         0  /api/   any       fail_open                     0\n"
        "login   ip+header:x-user     10   3600s      2      -  deny       "
        "       2.5  /login  POST,PUT  shadow,require_token          1\n");

    f = out_open();
    json_array_clear(json_object_get(doc, "quotas"));
    assert_int_equal(ctl_render_policy(doc, f), 0);
    out_check(f, "policy version 7\n"
                 "sync_interval_ms 1000  clearance_ttl_s 300  "
                 "expected_edges 4\n\n(no quotas)\n");
    json_decref(doc);

    doc = json("{\"version\":1}");
    f = out_open();
    assert_int_equal(ctl_render_policy(doc, f), -1);
    fclose(f);
    free(out_buf);
    json_decref(doc);
}

static void versions_newest_first_with_dates(void **state)
{
    json_t *v = json(
        "{\"current\":12,\"versions\":["
        "{\"version\":12,\"created_at\":1714564803000,\"by\":\"ops-alice\","
        "\"action\":\"rollback\"},"
        "{\"version\":11,\"created_at\":1714478400000,\"by\":\"deploy\","
        "\"action\":\"put\"},"
        "{\"version\":1,\"created_at\":1714000000000,\"by\":\"file\","
        "\"action\":\"load\"}]}");
    FILE *f = out_open();

    (void)state;
    assert_int_equal(ctl_render_versions(v, f), 0);
    out_check(f,
        "current version 12\n"
        "\n"
        "VERSION  CREATED               BY         ACTION\n"
        "     12  2024-05-01T12:00:03Z  ops-alice  rollback\n"
        "     11  2024-04-30T12:00:00Z  deploy     put\n"
        "      1  2024-04-24T23:06:40Z  file       load\n");
    json_decref(v);
}

static void audit_pages_with_before(void **state)
{
    json_t *a = json(
        "{\"entries\":[{\"id\":41,\"at\":1714564803000,\"who\":\"alice\","
        "\"action\":\"quota.set\",\"from_version\":11,\"to_version\":12,"
        "\"detail\":\"login: limit 10 -> 20\"},"
        "{\"id\":40,\"at\":1714564800000,\"who\":\"bob\",\"action\":"
        "\"key.reset\",\"from_version\":null,\"to_version\":null,"
        "\"detail\":{\"quota\":\"per-ip\",\"key\":\"1.2.3.4\"}},"
        "{\"id\":39,\"at\":1714564700000,\"who\":\"bob\",\"action\":"
        "\"x\",\"from_version\":1,\"to_version\":2,"
        "\"detail\":{\"a\":[1]}}],\"next\":39}");
    FILE *f = out_open();

    (void)state;
    assert_int_equal(ctl_render_audit(a, f), 0);
    out_check(f,
        "ID  AT                    WHO    ACTION     FROM  TO  DETAIL\n"
        "41  2024-05-01T12:00:03Z  alice  quota.set    11  12  "
        "login: limit 10 -> 20\n"
        "40  2024-05-01T12:00:00Z  bob    key.reset     -   -  "
        "quota=per-ip key=1.2.3.4\n"
        "39  2024-05-01T11:58:20Z  bob    x             1   2  "
        "{\"a\":[1]}\n"
        "\n"
        "older entries: tollgatectl audit --before 39\n");
    json_decref(a);

    a = json("{\"entries\":[],\"next\":null}");
    f = out_open();
    assert_int_equal(ctl_render_audit(a, f), 0);
    out_check(f, "(no audit entries)\n");
    json_decref(a);
}

static void key_inspect_and_quota_get_as_fields(void **state)
{
    json_t *k = json(
        "{\"quota\":\"per-ip\",\"key\":\"203.0.113.7\",\"limit\":100,"
        "\"window_s\":60,\"count\":57,\"attempts\":80,"
        "\"lease_outstanding\":12,\"edges\":3,\"state\":\"challenge\","
        "\"cleared_until\":0}");
    json_t *q = json(
        "{\"name\":\"login\",\"limit\":10,\"methods\":[\"POST\"],"
        "\"overrides\":{\"a\":{\"limit\":5},\"bob|x\":{\"limit\":100}}}");
    FILE *f = out_open();

    (void)state;
    assert_int_equal(ctl_render_fields(k, f), 0);
    out_check(f,
        "quota              per-ip\n"
        "key                203.0.113.7\n"
        "limit              100\n"
        "window_s           60\n"
        "count              57\n"
        "attempts           80\n"
        "lease_outstanding  12\n"
        "edges              3\n"
        "state              challenge\n"
        "cleared_until      -\n");
    f = out_open();
    assert_int_equal(ctl_render_quota(q, f), 0);
    out_check(f,
        "name     login\n"
        "limit    10\n"
        "methods  POST\n"
        "\n"
        "overrides\n"
        "KEY    LIMIT\n"
        "a          5\n"
        "bob|x    100\n");
    json_decref(k);
    json_decref(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(options_split_globals_from_words),
        cmocka_unit_test(options_of_a_command),
        cmocka_unit_test(numbers_are_plain_decimals),
        cmocka_unit_test(path_segments_are_percent_encoded),
        cmocka_unit_test(quota_set_creates_with_defaults),
        cmocka_unit_test(quota_set_changes_only_given_fields),
        cmocka_unit_test(quota_set_refuses_bad_values),
        cmocka_unit_test(tables_align_and_clean),
        cmocka_unit_test(text_is_cleaned_and_times_are_dates),
        cmocka_unit_test(get_prints_version_then_quotas),
        cmocka_unit_test(versions_newest_first_with_dates),
        cmocka_unit_test(audit_pages_with_before),
        cmocka_unit_test(key_inspect_and_quota_get_as_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
