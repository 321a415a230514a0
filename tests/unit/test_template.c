/* test_template.c — key templates (edge-module/src/template.c): the
 * grammar the coordinator also checks, the policy-wide name tables, and
 * building keys from a request and a token's claims (escaping, absent
 * parts, unkeyable requests, long keys hashed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "keys.h"
#include "template.h"

static tg__names names;
static tg__template t;

static int parse(const char *s)
{
    return tg__template_parse(s, strlen(s), &t, &names);
}

static void parses_the_grammar(void **state)
{
    (void)state;
    static const char *ok[] = {
        "ip", "route", "host", "claim:sub", "header:x-api-key", "claim:tenant+ip",
        "ip+route+host+claim:a", "claim:A.b_c-9", "header:x_y-9", "claim:sub+claim:tenant",
        "claim:custom:tenant", "claim:\"https://example.com/tenant\"", "claim:org.id",
        /* A claim path's grammar is the coordinator's to check
         * (co_key_template_check); the edge reads any bytes safely. */
        "claim:a b", "claim:\"unterminated",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        memset(&names, 0, sizeof names);
        if (parse(ok[i]) != 0)
            fail_msg("refused %s", ok[i]);
    }
    static const char *bad[] = {
        "", "IP", "ip+", "+ip", "ip++route", "claim:", "header:",
        "header:X-Api-Key", "header:x.y", "ip+route+ip", "claim:a+claim:a",
        "ip+route+host+claim:a+claim:b", "sub", "claims:sub", "ip ", " ip", "header",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&names, 0, sizeof names);
        t.n = 9;
        if (parse(bad[i]) != -1 || t.n != 0)
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(names.n[0] + names.n[1], 0);
    }
    /* Names of at most 64 bytes, templates of at most 160. */
    char buf[200];
    memset(&names, 0, sizeof names);
    snprintf(buf, sizeof buf, "claim:%0*d", 64, 0);
    assert_int_equal(parse(buf), 0);
    snprintf(buf, sizeof buf, "claim:%0*d", 65, 0);
    assert_int_equal(parse(buf), -1);
    memset(buf, 0, sizeof buf);
    memcpy(buf, "ip+", 3);
    memset(buf + 3, 'a', 158);  /* "ip+aaa..." 161 bytes, bad anyway */
    assert_int_equal(tg__template_parse(buf, 161, &t, &names), -1);
}

static void parts_and_names(void **state)
{
    (void)state;
    memset(&names, 0, sizeof names);
    assert_int_equal(parse("claim:tenant+header:x-api-key+ip"), 0);
    assert_int_equal(t.n, 3);
    assert_true(t.claims);
    assert_int_equal(t.kind[0], TG__PART_CLAIM);
    assert_int_equal(t.kind[1], TG__PART_HEADER);
    assert_int_equal(t.kind[2], TG__PART_IP);
    assert_int_equal(names.n[TG__NAMES_CLAIM], 1);
    assert_int_equal(names.n[TG__NAMES_HEADER], 1);
    assert_memory_equal(names.name[TG__NAMES_HEADER][0].p, "x-api-key", 9);

    /* A second template shares names. */
    tg__template t2;
    assert_int_equal(tg__template_parse("header:x-api-key+claim:sub+claim:tenant", 39, &t2, &names), 0);
    assert_int_equal(names.n[TG__NAMES_CLAIM], 2);
    assert_int_equal(names.n[TG__NAMES_HEADER], 1);
    assert_int_equal(t2.idx[0], 0);
    assert_int_equal(t2.idx[1], 1);
    assert_int_equal(t2.idx[2], t.idx[0]);

    assert_int_equal(parse("route+host"), 0);
    assert_false(t.claims);

    /* At most 8 distinct claim names in a policy: a template that would add
     * a ninth is refused, and changes nothing. */
    memset(&names, 0, sizeof names);
    static char buf[24][16];   /* names point into the template text */
    for (int i = 0; i < 8; i++) {
        snprintf(buf[i], sizeof buf[i], "claim:c%d", i);
        assert_int_equal(parse(buf[i]), 0);
    }
    assert_int_equal(parse("claim:c0+claim:c9"), -1);
    assert_int_equal(names.n[TG__NAMES_CLAIM], 8);
    assert_int_equal(parse("claim:c0+claim:c7"), 0);
    for (int i = 0; i < 16; i++) {
        snprintf(buf[8 + i], sizeof buf[8 + i], "header:h%d", i);
        assert_int_equal(parse(buf[8 + i]), 0);
    }
    assert_int_equal(parse("header:h16"), -1);
    assert_int_equal(names.n[TG__NAMES_HEADER], 16);
}

/* ---------------------------------------------------------------- building */

static char key[TG__KEY_CAP];
static size_t klen;

static tg__claims *claims(const char *sub, const char *tenant)
{
    static tg__claims c;
    memset(&c, 0, sizeof c);
    c.status = 1;
    if (sub) {
        c.type[0] = TG__CV_STRING;
        c.len[0] = (uint8_t)strlen(sub);
        memcpy(c.val[0], sub, c.len[0]);
    }
    if (tenant) {
        c.type[1] = TG__CV_NUMBER;
        c.len[1] = (uint8_t)strlen(tenant);
        memcpy(c.val[1], tenant, c.len[1]);
    }
    return &c;
}

static int build(const char *tpl, const tg_request *req, const tg__claims *c)
{
    memset(&names, 0, sizeof names);
    assert_int_equal(parse("claim:sub+claim:tenant"), 0);  /* sub = 0, tenant = 1 */
    assert_int_equal(parse(tpl), 0);
    return tg__template_key(&t, &names, req, c, key, &klen);
}

static void assert_key(const char *want)
{
    assert_int_equal(klen, strlen(want));
    assert_memory_equal(key, want, klen);
}

static void builds_keys(void **state)
{
    (void)state;
    tg_header hs[] = {{{"x-api-key", 9}, {"K-1|%", 5}}, {{"x-empty", 7}, {"", 0}},
                      {{"x-api-key", 9}, {"second", 6}}};
    tg_request req = {.method = {"GET", 3}, .path = {"/api/v1", 7}, .host = {"example.com", 11},
                      .client_ip = {"192.0.2.1", 9}, .headers = hs, .n_headers = 3};

    assert_int_equal(build("ip", &req, NULL), TG__TPL_OK);
    assert_key("192.0.2.1");
    assert_int_equal(build("host+route", &req, NULL), TG__TPL_OK);
    assert_key("example.com|/api/v1");
    /* "%" and "|" inside a value are escaped; the first header wins. */
    assert_int_equal(build("header:x-api-key+ip", &req, NULL), TG__TPL_OK);
    assert_key("K-1%7C%25|192.0.2.1");
    assert_int_equal(build("claim:sub+claim:tenant", &req, claims("a|b%c", "42")), TG__TPL_OK);
    assert_key("a%7Cb%25c|42");

    /* Absent parts skip the quota: no token, a missing or empty claim, a
     * missing or empty header. */
    assert_int_equal(build("claim:sub", &req, NULL), TG__TPL_SKIP);
    assert_int_equal(build("claim:sub+ip", &req, claims(NULL, "1")), TG__TPL_SKIP);
    assert_int_equal(build("claim:sub", &req, claims("", NULL)), TG__TPL_SKIP);
    assert_int_equal(build("header:x-other", &req, NULL), TG__TPL_SKIP);
    assert_int_equal(build("header:x-empty", &req, NULL), TG__TPL_SKIP);
    tg__claims *c = claims("x", NULL);
    c->type[0] = TG__CV_OTHER;
    assert_int_equal(build("claim:sub", &req, c), TG__TPL_SKIP);

    /* Unkeyable: empty ip / route / host, a claim too long to keep, NUL,
     * a leading "~". */
    c->type[0] = TG__CV_LONG;
    assert_int_equal(build("claim:sub", &req, c), TG__TPL_BAD);
    tg_request r2 = req;
    r2.client_ip = (tg_str){"", 0};
    assert_int_equal(build("ip", &r2, NULL), TG__TPL_BAD);
    assert_int_equal(build("header:x-api-key+ip", &r2, NULL), TG__TPL_BAD);
    r2 = req;
    r2.host = (tg_str){"", 0};
    assert_int_equal(build("host", &r2, NULL), TG__TPL_BAD);
    r2 = req;
    r2.client_ip = (tg_str){"1.2\0.3", 6};
    assert_int_equal(build("ip", &r2, NULL), TG__TPL_BAD);
    r2.client_ip = (tg_str){"~overflow", 9};
    assert_int_equal(build("ip", &r2, NULL), TG__TPL_BAD);
    assert_int_equal(build("route+ip", &r2, NULL), TG__TPL_OK);   /* "~" only first */
    assert_key("/api/v1|~overflow");
}

static void long_keys_are_hashed(void **state)
{
    (void)state;
    char ua[300];
    memset(ua, 'u', sizeof ua);
    tg_header hs[] = {{{"user-agent", 10}, {ua, sizeof ua}}};
    tg_request req = {.client_ip = {"192.0.2.1", 9}, .headers = hs, .n_headers = 1};
    assert_int_equal(build("ip+header:user-agent", &req, NULL), TG__TPL_OK);
    char full[400], want[35] = "~h";
    unsigned char d[32];
    int n = snprintf(full, sizeof full, "192.0.2.1|%.*s", 300, ua);
    SHA256((unsigned char *)full, (size_t)n, d);
    for (int i = 0; i < 16; i++)
        snprintf(want + 2 + 2 * i, 3, "%02x", d[i]);
    assert_key(want);

    /* Exactly 96 bytes is kept as is; escaping counts. */
    hs[0].value = (tg_str){ua, 86};
    assert_int_equal(build("ip+header:user-agent", &req, NULL), TG__TPL_OK);
    assert_int_equal(klen, 96);
    ua[0] = '|';
    assert_int_equal(build("ip+header:user-agent", &req, NULL), TG__TPL_OK);
    assert_int_equal(klen, 34);
    assert_memory_equal(key, "~h", 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_the_grammar),
        cmocka_unit_test(parts_and_names),
        cmocka_unit_test(builds_keys),
        cmocka_unit_test(long_keys_are_hashed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
