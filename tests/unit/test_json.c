/* test_json.c — the bounded JSON reader behind JWT validation
 * (edge-module/src/json.c): RFC 8259 syntax, the stricter rules a token
 * needs (duplicate members, depth, UTF-8, surrogates), and reading values
 * back (unescaping, comparing, array walking). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"

static tg__json js;

static int parse(const char *s)
{
    return tg__json_parse(s, strlen(s), &js);
}

static int parse_n(const char *s, size_t n)
{
    return tg__json_parse(s, n, &js);
}

static void accepts_valid_documents(void **state)
{
    (void)state;
    static const char *ok[] = {
        "{}",
        " \t\r\n{ } \n",
        "{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}",
        "{\"a\":1,\"b\":-0,\"c\":0.5,\"d\":-1.25e+10,\"e\":1E-2,\"f\":10}",
        "{\"a\":true,\"b\":false,\"c\":null}",
        "{\"a\":[],\"b\":{},\"c\":[1,\"x\",{\"d\":[null]}]}",
        "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\ud83d\\ude00\"}",
        "{\"\\u0000\":\"\\u0000\"}",
        "{\"caf\xc3\xa9\":\"\xe2\x82\xac\xf0\x9f\x98\x80\"}",
        "{\"a\":{\"x\":1},\"b\":{\"x\":1}}",          /* same name, different objects */
        "{\"a\":[{\"x\":1},{\"x\":2}]}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (parse(ok[i]) != 0)
            fail_msg("refused: %s", ok[i]);
}

static void refuses_malformed_documents(void **state)
{
    (void)state;
    static const char *bad[] = {
        "", " ", "[]", "\"x\"", "1", "null",          /* top level must be an object */
        "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,}", "{\"a\":1 \"b\":2}",
        "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":[1 2]}", "{a:1}", "{'a':1}",
        "{\"a\":1}x", "{\"a\":1}{}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}",
        "{\"a\":1e}", "{\"a\":-}", "{\"a\":+1}", "{\"a\":0x10}", "{\"a\":NaN}",
        "{\"a\":Infinity}", "{\"a\":tru}", "{\"a\":nul}", "{\"a\":True}",
        "{\"a\":\"x}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":\"\\u12g4\"}",
        "{\"a\":\"tab\there\"}", "{\"a\":\"nl\nhere\"}", "{\"a\":1}\x01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i]) == 0)
            fail_msg("accepted: %s", bad[i]);
    /* A NUL byte in the text (not escaped) is never valid. */
    assert_int_equal(parse_n("{\"a\":\"x\0\"}", 9), -1);
    assert_int_equal(parse_n("{}\0", 3), -1);
}

static void refuses_duplicate_members(void **state)
{
    (void)state;
    assert_int_equal(parse("{\"alg\":\"none\",\"alg\":\"none\"}"), -1);
    assert_int_equal(parse("{\"alg\":\"HS256\",\"x\":1,\"alg\":\"HS256\"}"), -1);
    /* Compared after unescaping. */
    assert_int_equal(parse("{\"alg\":1,\"\\u0061lg\":2}"), -1);
    assert_int_equal(parse("{\"\\u00e9\":1,\"\xc3\xa9\":2}"), -1);
    /* In nested objects too. */
    assert_int_equal(parse("{\"a\":{\"b\":1,\"b\":2}}"), -1);
    assert_int_equal(parse("{\"a\":[{\"b\":1,\"c\":{\"d\":1,\"d\":1}}]}"), -1);
    /* Case matters. */
    assert_int_equal(parse("{\"alg\":1,\"ALG\":2}"), 0);
}

static void bounds_depth_and_members(void **state)
{
    (void)state;
    char buf[4096];
    /* 16 levels (the top object included) pass, 17 do not. */
    for (int depth = 16; depth <= 17; depth++) {
        size_t n = 0;
        n += (size_t)sprintf(buf + n, "{\"a\":");
        for (int i = 1; i < depth; i++)
            buf[n++] = '[';
        buf[n++] = '1';
        for (int i = 1; i < depth; i++)
            buf[n++] = ']';
        buf[n++] = '}';
        buf[n] = '\0';
        assert_int_equal(parse(buf), depth <= 16 ? 0 : -1);
    }
    /* Deep nesting of hostile size is refused, not recursed into. */
    memset(buf, '[', sizeof buf);
    buf[0] = '{';
    assert_int_equal(parse_n(buf, sizeof buf), -1);

    /* 32 top-level members pass, 33 do not. */
    for (int members = 32; members <= 33; members++) {
        size_t n = 1;
        buf[0] = '{';
        for (int i = 0; i < members; i++)
            n += (size_t)sprintf(buf + n, "%s\"m%d\":%d", i ? "," : "", i, i);
        buf[n++] = '}';
        buf[n] = '\0';
        assert_int_equal(parse(buf), members == 32 ? 0 : -1);
    }
}

static void refuses_bad_utf8_and_surrogates(void **state)
{
    (void)state;
    static const char *bad[] = {
        "{\"a\":\"\x80\"}",                 /* lone continuation */
        "{\"a\":\"\xc3\"}",                 /* truncated */
        "{\"a\":\"\xc0\xaf\"}",             /* overlong '/' */
        "{\"a\":\"\xc1\xbf\"}",
        "{\"a\":\"\xe0\x80\xaf\"}",         /* overlong, 3 bytes */
        "{\"a\":\"\xf0\x80\x80\xaf\"}",     /* overlong, 4 bytes */
        "{\"a\":\"\xed\xa0\x80\"}",         /* encoded surrogate U+D800 */
        "{\"a\":\"\xf4\x90\x80\x80\"}",     /* past U+10FFFF */
        "{\"a\":\"\xf5\x80\x80\x80\"}",
        "{\"a\":\"\xff\"}",
        "{\"a\":\"\xe2\x28\xa1\"}",         /* bad continuation */
        "{\"a\":\"\\ud800\"}",              /* lone high surrogate */
        "{\"a\":\"\\udc00\"}",              /* lone low surrogate */
        "{\"a\":\"\\ud800\\u0041\"}",       /* high + non-low */
        "{\"a\":\"\\ud800\\ud800\"}",
        "{\"a\":\"\\ude00\\ud83d\"}",       /* reversed pair */
        "{\"a\xff\":1}",                    /* in a name too */
        "{\"a\":1,\xc3\xa9:1}",             /* outside a string */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse(bad[i]) == 0)
            fail_msg("accepted case %zu", i);
    /* The largest code point and the ends of each range are fine. */
    assert_int_equal(parse("{\"a\":\"\xf4\x8f\xbf\xbf\xed\x9f\xbf\xee\x80\x80\xc2\x80\xdf\xbf\"}"), 0);
    assert_int_equal(parse("{\"a\":\"\\udbff\\udfff\"}"), 0);
}

static void records_top_level_members(void **state)
{
    (void)state;
    assert_int_equal(parse("{ \"s\" : \"a\\nb\" , \"n\":-12.5e3,\"t\":true,\"f\":false,"
                           "\"z\":null,\"o\":{\"x\":[1]},\"arr\":[ \"a\" ,\"b\"] }"), 0);
    assert_int_equal(js.n, 7);
    const tg__jmember *m = tg__json_get(&js, "s", 1);
    assert_non_null(m);
    assert_int_equal(m->type, TG__J_STRING);
    assert_int_equal(m->val_len, 4);
    assert_memory_equal(m->val, "a\\nb", 4);
    m = tg__json_get(&js, "n", 1);
    assert_int_equal(m->type, TG__J_NUMBER);
    assert_int_equal(m->val_len, 7);
    assert_memory_equal(m->val, "-12.5e3", 7);
    assert_int_equal(tg__json_get(&js, "t", 1)->type, TG__J_TRUE);
    assert_int_equal(tg__json_get(&js, "f", 1)->type, TG__J_FALSE);
    assert_int_equal(tg__json_get(&js, "z", 1)->type, TG__J_NULL);
    m = tg__json_get(&js, "o", 1);
    assert_int_equal(m->type, TG__J_OBJECT);
    assert_int_equal(m->val_len, strlen("{\"x\":[1]}"));
    m = tg__json_get(&js, "arr", 3);
    assert_int_equal(m->type, TG__J_ARRAY);
    assert_memory_equal(m->val, "[ \"a\" ,\"b\"]", m->val_len);
    assert_null(tg__json_get(&js, "x", 1));   /* nested names are not top level */
    assert_null(tg__json_get(&js, "ar", 2));

    /* Escaped names are found by their unescaped text. */
    assert_int_equal(parse("{\"\\u0073ub\":\"x\"}"), 0);
    assert_non_null(tg__json_get(&js, "sub", 3));
}

static void unescapes_and_compares(void **state)
{
    (void)state;
    char out[64];
    const char *body = "A\\u00e9\\ud83d\\ude00\\n\\/\\\"\\u0000z";
    long n = tg__json_unescape(body, strlen(body), out, sizeof out);
    static const char want[] = "A\xc3\xa9\xf0\x9f\x98\x80\n/\"\0z";
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(out, want, sizeof want - 1);
    /* Past the cap: -1. */
    assert_int_equal(tg__json_unescape(body, strlen(body), out, 5), -1);
    assert_int_equal(tg__json_unescape(body, strlen(body), out, sizeof want - 1),
                     (long)sizeof want - 1);

    assert_true(tg__json_str_eq("HS\\u0032\\u00356", 15, "HS256", 5));
    assert_false(tg__json_str_eq("HS256", 5, "HS25", 4));
    assert_false(tg__json_str_eq("HS25", 4, "HS256", 5));
    assert_false(tg__json_str_eq("hs256", 5, "HS256", 5));
    assert_true(tg__json_str_eq("", 0, "", 0));
}

static void walks_string_arrays(void **state)
{
    (void)state;
    const char *arr = "[ \"a\" , \"b\\\"c\",\"\"]";
    size_t pos = 0, len;
    const char *body;
    assert_int_equal(tg__json_next_string(arr, strlen(arr), &pos, &body, &len), 1);
    assert_int_equal(len, 1);
    assert_memory_equal(body, "a", 1);
    assert_int_equal(tg__json_next_string(arr, strlen(arr), &pos, &body, &len), 1);
    assert_memory_equal(body, "b\\\"c", len);
    assert_int_equal(tg__json_next_string(arr, strlen(arr), &pos, &body, &len), 1);
    assert_int_equal(len, 0);
    assert_int_equal(tg__json_next_string(arr, strlen(arr), &pos, &body, &len), 0);

    pos = 0;
    assert_int_equal(tg__json_next_string("[]", 2, &pos, &body, &len), 0);
    pos = 0;
    assert_int_equal(tg__json_next_string("[\"a\",1]", 7, &pos, &body, &len), 1);
    assert_int_equal(tg__json_next_string("[\"a\",1]", 7, &pos, &body, &len), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_valid_documents),
        cmocka_unit_test(refuses_malformed_documents),
        cmocka_unit_test(refuses_duplicate_members),
        cmocka_unit_test(bounds_depth_and_members),
        cmocka_unit_test(refuses_bad_utf8_and_surrogates),
        cmocka_unit_test(records_top_level_members),
        cmocka_unit_test(unescapes_and_compares),
        cmocka_unit_test(walks_string_arrays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
