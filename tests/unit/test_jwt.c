/* test_jwt.c — HS256 JWS verification at the edge (edge-module/src/jwt.c):
 * RFC 7515 Appendix A.1 and A.5, the RFC 8725 failure cases, leeway,
 * iss / aud, kid selection and rotation, claim extraction, the verified-
 * token cache, strict base64url, and the Bearer / Cookie parsers. Tokens
 * are signed here with OpenSSL's HMAC. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "jwt.h"
#include "tollgated.h"   /* co_b64url_encode */

#define A1_NOW_MS 1300819379000ull  /* before the A.1 token's exp */
#define NOW 1700000000ull           /* seconds, for tokens made here */
#define NOW_MS (NOW * 1000)

static tg__jwt *J;
static const uint8_t SEED[16] = "seed-for-tests!";
static const char KEY[] = "a-secret-key-of-reasonable-length";
static const tg_str WANT_NAMES[] = {{"sub", 3}, {"tenant", 6}, {"n", 1}, {"flag", 4}};
static const tg__claimset WANT = {4, WANT_NAMES};
static const tg__claims *view;

static int setup(void **state)
{
    (void)state;
    J = calloc(1, sizeof *J);
    tg__jwt_init(J, SEED);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(J);
    return 0;
}

/* ---------------------------------------------------------------- tokens */

/* The coordinator's encoder: an implementation independent of the edge's
 * decoder under test. */
static size_t b64url(const void *data, size_t n, char *out)
{
    long r = co_b64url_encode(data, n, out, (n + 2) / 3 * 4 + 1);
    assert_true(r >= 0);
    return (size_t)r;
}

/* header.payload (already base64url) signed with key: a static buffer. */
static char *sign_segments(const char *h64, const char *p64, const void *key, size_t klen)
{
    static char tok[40000];
    uint8_t mac[32];
    unsigned mlen = 0;
    int n = snprintf(tok, sizeof tok, "%s.%s", h64, p64);
    assert_true(n > 0 && (size_t)n < sizeof tok - 50);
    assert_non_null(HMAC(EVP_sha256(), key, (int)klen, (const uint8_t *)tok, (size_t)n, mac, &mlen));
    tok[n] = '.';
    b64url(mac, 32, tok + n + 1);
    return tok;
}

static char *sign_with(const char *header, const char *payload, const void *key, size_t klen)
{
    static char h64[2000], p64[30000];
    b64url(header, strlen(header), h64);
    b64url(payload, strlen(payload), p64);
    return sign_segments(h64, p64, key, klen);
}

static char *sign(const char *header, const char *payload)
{
    return sign_with(header, payload, KEY, strlen(KEY));
}

static int check_kind(int kind, const char *tok, uint64_t now_ms)
{
    static tg__sigcheck chk;
    return tg__jwt_check(J, kind, (tg_str){tok, strlen(tok)}, &WANT, now_ms, &view, &chk);
}

static int check(const char *tok, uint64_t now_ms)
{
    return check_kind(TG_KEY_JWT, tok, now_ms);
}

static void add_key(int kind, const char *kid, const char *secret)
{
    assert_true(tg__jwt_add_key(J, kind, TG_ALG_HS256, (tg_str){kid, strlen(kid)},
                                (const uint8_t *)secret, strlen(secret)) >= 0);
}

#define HS "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* ---------------------------------------------------------------- RFC 7515 */

static const char A1[] =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

static void add_a1_key(void)
{
    static const char k64[] =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    uint8_t k[64];
    assert_int_equal(tg__b64url_decode(k64, strlen(k64), k), 64);
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_JWT, TG_ALG_HS256, (tg_str){"", 0}, k, 64), 0);
}

static void rfc7515_a1_verifies(void **state)
{
    (void)state;
    add_a1_key();
    assert_int_equal(check(A1, A1_NOW_MS), TG__TOK_OK);
    assert_non_null(view);
    assert_true(view->has_exp);
    assert_int_equal(view->exp, 1300819380);
    assert_false(view->has_nbf);

    /* The default leeway is 60 s: expired from exp + 60 s on. */
    assert_int_equal(check(A1, (1300819380ull + 60) * 1000 - 1), TG__TOK_OK);
    assert_int_equal(check(A1, (1300819380ull + 60) * 1000), TG__TOK_EXPIRED);

    /* Without leeway, exactly at exp. */
    tg_jwt_options o = {0, {"", 0}, {"", 0}, 0};
    assert_int_equal(tg__jwt_configure(J, &o), 0);
    assert_int_equal(check(A1, 1300819380ull * 1000 - 1), TG__TOK_OK);
    assert_int_equal(check(A1, 1300819380ull * 1000), TG__TOK_EXPIRED);

    /* The same token under another key is forged. */
    add_key(TG_KEY_JWT, "", "not the key");
    assert_int_equal(check(A1, A1_NOW_MS), TG__TOK_INVALID);
}

static void rfc7515_a5_alg_none_refused(void **state)
{
    (void)state;
    add_a1_key();
    static const char A5[] =
        "eyJhbGciOiJub25lIn0."
        "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.";
    assert_int_equal(check(A5, A1_NOW_MS), TG__TOK_BAD_ALG);
    assert_null(view);
}

/* ---------------------------------------------------------------- RFC 8725 */

static void alg_none_in_any_case(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    static const char *algs[] = {"none", "NONE", "noNE", "None", ""};
    char h[64];
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        snprintf(h, sizeof h, "{\"alg\":\"%s\"}", algs[i]);
        /* Even correctly MACed with the key, the header is refused. */
        assert_int_equal(check(sign(h, "{\"sub\":\"x\"}"), NOW_MS), TG__TOK_BAD_ALG);
        /* And the unsigned form (empty signature). */
        char tok[300], h64[100], p64[100];
        b64url(h, strlen(h), h64);
        b64url("{\"sub\":\"x\"}", 11, p64);
        snprintf(tok, sizeof tok, "%s.%s.", h64, p64);
        assert_true(check(tok, NOW_MS) >= TG__TOK_INVALID);
    }
    assert_int_equal(check(sign(HS, "{\"sub\":\"x\"}"), NOW_MS), TG__TOK_OK);
}

/* An HS256 key used with another algorithm (or a spelling of HS256 that
 * is not exactly "HS256") is refused, however the MAC came out: another
 * algorithm finds no key pinning it (unknown_kid), a misspelling is no
 * algorithm at all (unsupported_alg), anything else is invalid. */
static void algorithm_confusion(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    static const struct {
        const char *h;
        int want;
    } cases[] = {
        {"{\"alg\":\"HS384\"}", TG__TOK_UNKNOWN_KID}, {"{\"alg\":\"HS512\"}", TG__TOK_UNKNOWN_KID},
        {"{\"alg\":\"RS256\"}", TG__TOK_UNKNOWN_KID}, {"{\"alg\":\"ES256\"}", TG__TOK_UNKNOWN_KID},
        {"{\"alg\":\"PS256\"}", TG__TOK_UNKNOWN_KID}, {"{\"alg\":\"EdDSA\"}", TG__TOK_UNKNOWN_KID},
        {"{\"alg\":\"hs256\"}", TG__TOK_BAD_ALG},     {"{\"alg\":\"HS256 \"}", TG__TOK_BAD_ALG},
        {"{\"alg\":\" HS256\"}", TG__TOK_BAD_ALG},    {"{\"alg\":\"HS2560\"}", TG__TOK_BAD_ALG},
        {"{\"alg\":\"Ed25519\"}", TG__TOK_BAD_ALG},   {"{\"alg\":256}", TG__TOK_INVALID},
        {"{\"alg\":[\"HS256\"]}", TG__TOK_INVALID},   {"{\"alg\":null}", TG__TOK_INVALID},
        {"{\"typ\":\"JWT\"}", TG__TOK_INVALID},       {"{}", TG__TOK_INVALID},
        {"[\"HS256\"]", TG__TOK_INVALID},               {"\"HS256\"", TG__TOK_INVALID},
        {"{\"alg\":\"HS256\"", TG__TOK_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (check(sign(cases[i].h, "{\"sub\":\"x\"}"), NOW_MS) != cases[i].want)
            fail_msg("header %s: not refused as %d", cases[i].h, cases[i].want);
    /* An escaped spelling of HS256 is HS256. */
    assert_int_equal(check(sign("{\"alg\":\"HS\\u0032\\u00356\"}", "{}"), NOW_MS), TG__TOK_OK);
}

static void duplicate_members(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    assert_int_equal(check(sign("{\"alg\":\"none\",\"alg\":\"none\"}", "{}"), NOW_MS),
                     TG__TOK_INVALID);
    assert_int_equal(check(sign("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", "{}"), NOW_MS),
                     TG__TOK_INVALID);
    assert_int_equal(check(sign("{\"alg\":\"HS256\",\"alg\":\"none\"}", "{}"), NOW_MS),
                     TG__TOK_INVALID);
    assert_int_equal(check(sign("{\"alg\":\"HS256\",\"\\u0061lg\":\"HS256\"}", "{}"), NOW_MS),
                     TG__TOK_INVALID);
    /* In the claims too: two subs could key two ways. */
    assert_int_equal(check(sign(HS, "{\"sub\":\"a\",\"sub\":\"b\"}"), NOW_MS), TG__TOK_INVALID);
    assert_int_equal(check(sign(HS, "{\"exp\":1,\"exp\":9999999999}"), NOW_MS), TG__TOK_INVALID);
}

static void strict_base64url(void **state)
{
    (void)state;
    uint8_t out[64];
    assert_int_equal(tg__b64url_decode("", 0, out), 0);
    assert_int_equal(tg__b64url_decode("QQ", 2, out), 1);
    assert_int_equal(out[0], 'A');
    assert_int_equal(tg__b64url_decode("QUI", 3, out), 2);
    assert_int_equal(tg__b64url_decode("QUJD", 4, out), 3);
    assert_int_equal(tg__b64url_decode("-_8", 3, out), 2);
    assert_int_equal(out[0], 0xfb);
    assert_int_equal(out[1], 0xff);
    /* Padding, stray characters, the standard alphabet, a dangling char,
     * non-zero bits after the last byte (two spellings of one value). */
    static const char *bad[] = {"QQ==", "QQ=", "eyJp=c3MiOiJ4In0", "QU I", "QUI\n", "+/8",
                                "Q", "QUJDR", "QR", "QUJ", "Q\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (tg__b64url_decode(bad[i], strlen(bad[i]), out) >= 0)
            fail_msg("accepted %s", bad[i]);

    /* In a token, any of them makes it invalid, even with a good MAC. */
    add_key(TG_KEY_JWT, "", KEY);
    char h64[100];
    b64url(HS, strlen(HS), h64);
    assert_int_equal(check(sign_segments(h64, "eyJp=c3MiOiJ4In0", KEY, strlen(KEY)), NOW_MS),
                     TG__TOK_INVALID);
    assert_int_equal(check(sign_segments(h64, "eyJpc3MiOiJ4In0=", KEY, strlen(KEY)), NOW_MS),
                     TG__TOK_INVALID);
    assert_int_equal(check(sign_segments(h64, "eyJpc3MiOiJ4In0", KEY, strlen(KEY)), NOW_MS),
                     TG__TOK_OK);
    char *t = sign(HS, "{}");
    char tok[300];
    snprintf(tok, sizeof tok, "%s=", t);              /* padded signature */
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
    snprintf(tok, sizeof tok, " %s", t);              /* leading space */
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
}

static void segment_count(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    char h64[100], p64[100], tok[400];
    b64url(HS, strlen(HS), h64);
    b64url("{}", 2, p64);
    char *good = sign_segments(h64, p64, KEY, strlen(KEY));
    assert_int_equal(check(good, NOW_MS), TG__TOK_OK);

    /* More than two dots, wherever the extra one is. */
    char *sig = strrchr(good, '.') + 1;
    snprintf(tok, sizeof tok, "%s.%s.%s.%s", h64, p64, p64, sig);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
    snprintf(tok, sizeof tok, "%s..%s.%s", h64, p64, sig);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
    snprintf(tok, sizeof tok, "%s.%s.%s.", h64, p64, sig);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
    /* Fewer, or empty segments. */
    snprintf(tok, sizeof tok, "%s%s.%s", h64, p64, sig);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
    assert_int_equal(check(sign_segments("", p64, KEY, strlen(KEY)), NOW_MS), TG__TOK_INVALID);
    assert_int_equal(check(sign_segments(h64, "", KEY, strlen(KEY)), NOW_MS), TG__TOK_INVALID);
    assert_int_equal(check("", NOW_MS), TG__TOK_INVALID);
    assert_int_equal(check("..", NOW_MS), TG__TOK_INVALID);
}

static void bad_signature(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    char *t = sign(HS, "{\"sub\":\"alice\"}");
    char tok[300];
    strcpy(tok, t);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_OK);
    size_t n = strlen(tok);
    for (size_t i = n - 43; i < n; i++) {
        char c = tok[i];
        tok[i] = c == 'A' ? 'B' : 'A';
        if (i == n - 1)
            tok[i] = c == 'Q' ? 'g' : 'Q';  /* keep the last char canonical */
        assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
        tok[i] = c;
    }
    assert_int_equal(check(tok, NOW_MS), TG__TOK_OK);
    /* A signature one char short or long. */
    tok[n - 1] = '\0';
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
    snprintf(tok, sizeof tok, "%sA", t);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
    /* The payload changed under the same signature. */
    char *dot = strchr(t, '.');
    dot[1] = dot[1] == 'e' ? 'f' : 'e';
    assert_int_equal(check(t, NOW_MS), TG__TOK_INVALID);
}

static void exp_nbf_and_leeway(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    char p[200];
    /* Expired beyond the 60 s leeway; within it still good. */
    snprintf(p, sizeof p, "{\"exp\":%llu}", NOW - 61);
    assert_int_equal(check(sign(HS, p), NOW_MS), TG__TOK_EXPIRED);
    assert_non_null(view);   /* the claims are known, only time fails */
    snprintf(p, sizeof p, "{\"exp\":%llu}", NOW - 60);
    assert_int_equal(check(sign(HS, p), NOW_MS), TG__TOK_EXPIRED);
    assert_int_equal(check(sign(HS, p), NOW_MS - 1), TG__TOK_OK);
    snprintf(p, sizeof p, "{\"exp\":%llu}", NOW - 59);
    assert_int_equal(check(sign(HS, p), NOW_MS), TG__TOK_OK);

    /* nbf in the future beyond the leeway. */
    snprintf(p, sizeof p, "{\"nbf\":%llu}", NOW + 61);
    assert_int_equal(check(sign(HS, p), NOW_MS), TG__TOK_EXPIRED);
    snprintf(p, sizeof p, "{\"nbf\":%llu}", NOW + 60);
    assert_int_equal(check(sign(HS, p), NOW_MS), TG__TOK_OK);
    assert_int_equal(check(sign(HS, p), NOW_MS - 1), TG__TOK_EXPIRED);

    /* A configured leeway. */
    tg_jwt_options o = {300, {"", 0}, {"", 0}, 0};
    assert_int_equal(tg__jwt_configure(J, &o), 0);
    snprintf(p, sizeof p, "{\"exp\":%llu,\"nbf\":%llu}", NOW - 299, NOW + 299);
    assert_int_equal(check(sign(HS, p), NOW_MS), TG__TOK_OK);
    snprintf(p, sizeof p, "{\"exp\":%llu}", NOW - 300);
    assert_int_equal(check(sign(HS, p), NOW_MS), TG__TOK_EXPIRED);

    /* Neither claim: no time limit. */
    assert_int_equal(check(sign(HS, "{}"), 0), TG__TOK_OK);
    assert_int_equal(check(sign(HS, "{}"), UINT64_MAX / 2), TG__TOK_OK);
}

static void absurd_numbers(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    static const char *bad[] = {
        "{\"exp\":99999999999999999999999999}", "{\"exp\":9007199254740993}",
        "{\"exp\":1.5e9}", "{\"exp\":1.0E1}", "{\"exp\":1e10}", "{\"exp\":-1}", "{\"exp\":\"1\"}",
        "{\"exp\":null}", "{\"exp\":true}", "{\"nbf\":99999999999999999999}",
        "{\"nbf\":-5}", "{\"iat\":-1.25}", "{\"iat\":\"now\"}", "{\"exp\":[1]}",
        "{\"exp\":9007199254740993.5}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (check(sign(HS, bad[i]), NOW_MS) != TG__TOK_INVALID)
            fail_msg("accepted %s", bad[i]);
    /* 2^53 is the largest accepted. */
    assert_int_equal(check(sign(HS, "{\"exp\":9007199254740992,\"iat\":0}"), NOW_MS), TG__TOK_OK);
}

/* RFC 7519 §2 allows fractional NumericDates (Date.now() / 1000,
 * time.time() + 600): the fraction is dropped, so exp and nbf are whole
 * seconds. */
static void fractional_numeric_dates(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    J->leeway_s = 0;
    char p[200];
    snprintf(p, sizeof p, "{\"exp\":%llu.999999,\"nbf\":%llu.5,\"iat\":%llu.0}",
             (unsigned long long)NOW + 10, (unsigned long long)NOW - 10, (unsigned long long)NOW);
    const char *tok = sign(HS, p);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_OK);
    assert_int_equal(view->exp, NOW + 10);
    assert_int_equal(view->nbf, NOW - 10);
    assert_int_equal(check(tok, (NOW + 10) * 1000 - 1), TG__TOK_OK);
    assert_int_equal(check(tok, (NOW + 10) * 1000), TG__TOK_EXPIRED);
    assert_int_equal(check(tok, (NOW - 10) * 1000 - 1), TG__TOK_EXPIRED);
}

static void iss_and_aud(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    /* Not configured: not checked. */
    assert_int_equal(check(sign(HS, "{\"iss\":\"x\",\"aud\":\"y\"}"), NOW_MS), TG__TOK_OK);

    tg_jwt_options o = {60, {"https://issuer.example", 22}, {"api", 3}, 0};
    assert_int_equal(tg__jwt_configure(J, &o), 0);
    static const struct {
        const char *payload;
        int want;
    } cases[] = {
        {"{\"iss\":\"https://issuer.example\",\"aud\":\"api\"}", TG__TOK_OK},
        {"{\"iss\":\"https:\\/\\/issuer.example\",\"aud\":\"api\"}", TG__TOK_OK},
        {"{\"iss\":\"https://issuer.example\",\"aud\":[\"web\",\"api\"]}", TG__TOK_OK},
        {"{\"iss\":\"https://issuer.example\",\"aud\":[\"api\"]}", TG__TOK_OK},
        {"{\"iss\":\"https://issuer.example\",\"aud\":\"API\"}", TG__TOK_INVALID},
        {"{\"iss\":\"https://issuer.example\",\"aud\":\"ap\"}", TG__TOK_INVALID},
        {"{\"iss\":\"https://issuer.example\",\"aud\":[\"web\"]}", TG__TOK_INVALID},
        {"{\"iss\":\"https://issuer.example\",\"aud\":[]}", TG__TOK_INVALID},
        {"{\"iss\":\"https://issuer.example\",\"aud\":[\"api\",1]}", TG__TOK_INVALID},
        {"{\"iss\":\"https://issuer.example\",\"aud\":1}", TG__TOK_INVALID},
        {"{\"iss\":\"https://issuer.example\"}", TG__TOK_INVALID},
        {"{\"iss\":\"https://evil.example\",\"aud\":\"api\"}", TG__TOK_INVALID},
        {"{\"iss\":\"https://issuer.example/\",\"aud\":\"api\"}", TG__TOK_INVALID},
        {"{\"iss\":[\"https://issuer.example\"],\"aud\":\"api\"}", TG__TOK_INVALID},
        {"{\"aud\":\"api\"}", TG__TOK_INVALID},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (check(sign(HS, cases[i].payload), NOW_MS) != cases[i].want)
            fail_msg("case %zu: %s", i, cases[i].payload);

    /* Clearance tokens are the coordinator's: iss / aud are not checked. */
    add_key(TG_KEY_CLEARANCE, "", KEY);
    char p[100];
    snprintf(p, sizeof p, "{\"q\":\"api\",\"exp\":%llu}", NOW + 60);
    assert_int_equal(check_kind(TG_KEY_CLEARANCE, sign(HS, p), NOW_MS), TG__TOK_OK);
}

static void crit_refused(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    static const char *headers[] = {
        "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "{\"alg\":\"HS256\",\"crit\":[]}",
        "{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", "{\"alg\":\"HS256\",\"crit\":null}",
        "{\"alg\":\"HS256\",\"crit\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++)
        if (check(sign(headers[i], "{}"), NOW_MS) != TG__TOK_INVALID)
            fail_msg("accepted %s", headers[i]);
}

static void size_cap(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    static char payload[20000];
    /* Find a payload length whose token is exactly 8192 bytes. */
    size_t fill;
    char *t = NULL;
    for (fill = 6000; fill < 6200; fill++) {
        memset(payload, 0, sizeof payload);
        strcpy(payload, "{\"pad\":\"");
        memset(payload + 8, 'x', fill);
        strcat(payload, "\"}");
        t = sign(HS, payload);
        if (strlen(t) == 8192)
            break;
    }
    assert_int_equal(strlen(t), 8192);
    assert_int_equal(check(t, NOW_MS), TG__TOK_OK);
    strcpy(payload + 8 + fill, "x\"}");
    t = sign(HS, payload);
    assert_true(strlen(t) > 8192);
    assert_int_equal(check(t, NOW_MS), TG__TOK_INVALID);

    tg_jwt_options o = {60, {"", 0}, {"", 0}, 16384};
    assert_int_equal(tg__jwt_configure(J, &o), 0);
    assert_int_equal(check(t, NOW_MS), TG__TOK_OK);
    o.max_token_bytes = 16385;
    assert_int_equal(tg__jwt_configure(J, &o), TG_EINVAL);
    o.max_token_bytes = 100;
    assert_int_equal(tg__jwt_configure(J, &o), 0);
    assert_int_equal(check(sign(HS, "{\"sub\":\"a-fairly-long-subject-to-pass-the-cap\"}"), NOW_MS),
                     TG__TOK_INVALID);
}

static void kid_selection_and_rotation(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "k1", "secret-one");
    add_key(TG_KEY_JWT, "k2", "secret-two");
    const char *h1 = "{\"alg\":\"HS256\",\"kid\":\"k1\"}";
    const char *h2 = "{\"alg\":\"HS256\",\"kid\":\"k2\"}";
    char t1[300], t2[300];
    strcpy(t1, sign_with(h1, "{\"sub\":\"a\"}", "secret-one", 10));
    strcpy(t2, sign_with(h2, "{\"sub\":\"b\"}", "secret-two", 10));
    assert_int_equal(check(t1, NOW_MS), TG__TOK_OK);
    assert_int_equal(check(t2, NOW_MS), TG__TOK_OK);
    /* The kid picks the key: the other key's MAC does not pass. */
    assert_int_equal(check(sign_with(h1, "{}", "secret-two", 10), NOW_MS), TG__TOK_INVALID);
    assert_int_equal(check(sign_with("{\"alg\":\"HS256\",\"kid\":\"k3\"}", "{}", "secret-one", 10),
                           NOW_MS), TG__TOK_UNKNOWN_KID);
    assert_int_equal(check(sign_with("{\"alg\":\"HS256\",\"kid\":1}", "{}", "secret-one", 10),
                           NOW_MS), TG__TOK_INVALID);
    /* No kid: tried against the keys of its algorithm (jsonwebtoken's
     * and PyJWT's default), so any of them verifies it, a stranger's
     * secret none. */
    assert_int_equal(check(sign_with(HS, "{}", "secret-one", 10), NOW_MS), TG__TOK_OK);
    assert_int_equal(check(sign_with(HS, "{}", "secret-two", 10), NOW_MS), TG__TOK_OK);
    assert_int_equal(check(sign_with(HS, "{}", "secret-six", 10), NOW_MS), TG__TOK_INVALID);
    add_key(TG_KEY_JWT, "", "secret-none");
    assert_int_equal(check(sign_with(HS, "{}", "secret-none", 11), NOW_MS), TG__TOK_OK);
    /* A kid never falls back to another key. */
    assert_int_equal(check(sign_with("{\"alg\":\"HS256\",\"kid\":\"k9\"}", "{}", "secret-none", 11),
                           NOW_MS), TG__TOK_UNKNOWN_KID);
    assert_int_equal(check(sign_with(h2, "{}", "secret-one", 10), NOW_MS), TG__TOK_INVALID);

    /* Rotation: k1 gets a new secret; its old tokens stop verifying (the
     * cache is emptied), new ones verify, k2 is untouched. */
    add_key(TG_KEY_JWT, "k1", "secret-one-v2");
    assert_int_equal(check(t1, NOW_MS), TG__TOK_INVALID);
    assert_int_equal(check(sign_with(h1, "{}", "secret-one-v2", 13), NOW_MS), TG__TOK_OK);
    assert_int_equal(check(t2, NOW_MS), TG__TOK_OK);

    /* The kinds are apart: a JWT key does not verify clearance tokens. */
    char p[100];
    snprintf(p, sizeof p, "{\"exp\":%llu}", NOW + 60);
    assert_int_equal(check_kind(TG_KEY_CLEARANCE, sign_with(h2, p, "secret-two", 10), NOW_MS),
                     TG__TOK_UNKNOWN_KID);

    /* Sixteen keys per kind, a kid replaced in place; arguments checked. */
    for (int i = 3; i <= 15; i++) {
        char kid[8];
        snprintf(kid, sizeof kid, "k%d", i);
        add_key(TG_KEY_JWT, kid, "s");
    }
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_JWT, TG_ALG_HS256, (tg_str){"k16", 3}, (const uint8_t *)"s", 1),
                     TG_ENOSPC);
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_JWT, TG_ALG_HS256, (tg_str){"k2", 2}, (const uint8_t *)"s", 1), 1);
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_JWT, TG_ALG_ES256, (tg_str){"k2", 2}, NULL, 0), 1);
    assert_int_equal(J->keys[TG_KEY_JWT][1].alg, TG_ALG_ES256);
    /* Host keys: JWT keys only, no secret; algorithms of tg_alg only. */
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_CLEARANCE, TG_ALG_RS256, (tg_str){"r", 1}, NULL, 0), TG_EINVAL);
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_JWT, TG_ALG_RS256, (tg_str){"k3", 2}, (const uint8_t *)"s", 1),
                     TG_EINVAL);
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_JWT, TG_ALG_COUNT, (tg_str){"k3", 2}, NULL, 0), TG_EINVAL);
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_JWT, -1, (tg_str){"k3", 2}, NULL, 0), TG_EINVAL);
    assert_int_equal(tg__jwt_add_key(J, 2, TG_ALG_HS256, (tg_str){"x", 1}, (const uint8_t *)"s", 1), TG_EINVAL);
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_CLEARANCE, TG_ALG_HS256, (tg_str){"x", 1}, (const uint8_t *)"s", 0),
                     TG_EINVAL);
    static uint8_t big[129];
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_CLEARANCE, TG_ALG_HS256, (tg_str){"x", 1}, big, 129), TG_EINVAL);
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_CLEARANCE, TG_ALG_HS256, (tg_str){"x", 1}, big, 128), 0);
    static char longkid[65];
    memset(longkid, 'k', 65);
    assert_int_equal(tg__jwt_add_key(J, TG_KEY_CLEARANCE, TG_ALG_HS256, (tg_str){longkid, 65}, big, 1), TG_EINVAL);
}

/* header.payload.signature with the given signature bytes (a host key's
 * signature is checked by the host, so any bytes do here). */
static char *unsigned_with(const char *header, const char *payload, const uint8_t *sig, size_t n)
{
    static char tok[4000];
    size_t at = b64url(header, strlen(header), tok);
    tok[at++] = '.';
    at += b64url(payload, strlen(payload), tok + at);
    tok[at++] = '.';
    at += b64url(sig, n, tok + at);
    tok[at] = '\0';
    return tok;
}

static int host_key(const char *kid, int alg)
{
    int i = tg__jwt_add_key(J, TG_KEY_JWT, alg, (tg_str){kid, strlen(kid)}, NULL, 0);
    assert_true(i >= 0);
    return i;
}

/* Every algorithm but HS256 is checked by the host: the core pins the
 * algorithm, picks the candidate keys, hands over the signing input and
 * the decoded signature, and caches the host's verdict. */
static void host_key_verdicts(void **state)
{
    (void)state;
    static tg__sigcheck chk;
    uint8_t sig[256];
    char tok[4000];
    for (size_t i = 0; i < sizeof sig; i++)
        sig[i] = (uint8_t)(i * 7 + 1);
    add_key(TG_KEY_JWT, "hs", KEY);
    int rs = host_key("rs", TG_ALG_RS256), es = host_key("es", TG_ALG_ES256);
    assert_int_equal(rs, 1);
    assert_int_equal(es, 2);

    strcpy(tok, unsigned_with("{\"alg\":\"RS256\",\"kid\":\"rs\"}", "{\"sub\":\"r\"}", sig, 256));
    tg_str t = {tok, strlen(tok)};
    assert_int_equal(tg__jwt_check(J, TG_KEY_JWT, t, &WANT, NOW_MS, &view, &chk), TG__TOK_PENDING);
    assert_null(view);
    assert_int_equal(chk.alg, TG_ALG_RS256);
    assert_int_equal(chk.keys, 1u << rs);
    assert_int_equal(chk.input.len, (size_t)(strrchr(tok, '.') - tok));
    assert_ptr_equal(chk.input.p, tok);
    assert_int_equal(chk.sig.len, 256);
    assert_memory_equal(chk.sig.p, sig, 256);
    /* Nothing is cached until the host answers. */
    assert_int_equal(check(tok, NOW_MS), TG__TOK_PENDING);
    assert_int_equal(tg__jwt_verdict(J, t, &WANT, rs), TG__TOK_OK);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_OK);
    assert_int_equal(view->type[0], TG__CV_STRING);
    assert_memory_equal(view->val[0], "r", 1);

    /* A verdict naming a key that is not a candidate, or none, or an
     * index out of range, is a bad signature, and cached as one. */
    const char *bad[] = {"{\"sub\":\"a\"}", "{\"sub\":\"b\"}", "{\"sub\":\"c\"}"};
    int keys[] = {es, -1, 99};
    for (int i = 0; i < 3; i++) {
        strcpy(tok, unsigned_with("{\"alg\":\"RS256\",\"kid\":\"rs\"}", bad[i], sig, 256));
        assert_int_equal(tg__jwt_verdict(J, (tg_str){tok, strlen(tok)}, &WANT, keys[i]), TG__TOK_INVALID);
        assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
    }
    /* A verdict does not rescue what fails before or after the signature. */
    strcpy(tok, unsigned_with("{\"alg\":\"RS256\",\"kid\":\"rs\"}", "{\"exp\":-1}", sig, 256));
    assert_int_equal(tg__jwt_verdict(J, (tg_str){tok, strlen(tok)}, &WANT, rs), TG__TOK_INVALID);

    /* Algorithm confusion: each key pins its algorithm. */
    assert_int_equal(check(sign("{\"alg\":\"HS256\",\"kid\":\"rs\"}", "{}"), NOW_MS), TG__TOK_INVALID);
    assert_int_equal(check(unsigned_with("{\"alg\":\"ES256\",\"kid\":\"rs\"}", "{}", sig, 64), NOW_MS),
                     TG__TOK_INVALID);
    assert_int_equal(check(unsigned_with("{\"alg\":\"RS256\",\"kid\":\"hs\"}", "{}", sig, 256), NOW_MS),
                     TG__TOK_INVALID);
    /* An RSA public key's bytes as an HMAC secret: a kid-less HS256 token
     * is only tried against HS256 keys. */
    assert_int_equal(check(sign_with(HS, "{}", sig, 256), NOW_MS), TG__TOK_INVALID);
    /* Unknown kids, and algorithms no key pins. */
    assert_int_equal(check(unsigned_with("{\"alg\":\"RS256\",\"kid\":\"nope\"}", "{}", sig, 256), NOW_MS),
                     TG__TOK_UNKNOWN_KID);
    assert_int_equal(check(unsigned_with("{\"alg\":\"PS256\"}", "{}", sig, 256), NOW_MS),
                     TG__TOK_UNKNOWN_KID);
    /* A signature over 512 bytes is invalid unread. */
    static uint8_t huge[513];
    assert_int_equal(check(unsigned_with("{\"alg\":\"RS256\",\"kid\":\"rs\"}", "{}", huge, 513), NOW_MS),
                     TG__TOK_INVALID);

    /* Without a kid, the first four keys of the token's algorithm. */
    int e[5];
    for (int i = 0; i < 5; i++) {
        char kid[8];
        snprintf(kid, sizeof kid, "es%d", i);
        e[i] = host_key(kid, TG_ALG_ES256);
    }
    strcpy(tok, unsigned_with("{\"alg\":\"ES256\"}", "{\"sub\":\"e\"}", sig, 64));
    assert_int_equal(tg__jwt_check(J, TG_KEY_JWT, (tg_str){tok, strlen(tok)}, &WANT, NOW_MS, &view, &chk),
                     TG__TOK_PENDING);
    assert_int_equal(chk.keys, 1u << es | 1u << e[0] | 1u << e[1] | 1u << e[2]);
    assert_int_equal(tg__jwt_verdict(J, (tg_str){tok, strlen(tok)}, &WANT, e[3]), TG__TOK_INVALID);
    strcpy(tok, unsigned_with("{\"alg\":\"ES256\"}", "{\"sub\":\"f\"}", sig, 64));
    assert_int_equal(tg__jwt_verdict(J, (tg_str){tok, strlen(tok)}, &WANT, e[2]), TG__TOK_OK);
}

/* Claim paths (template.h): a JSON string names one top-level claim
 * (any characters: Auth0's URL-named claims); bare segments joined by
 * '.' walk nested objects; a malformed path reads nothing. */
static void claim_paths(void **state)
{
    (void)state;
    static const tg_str paths[] = {
        {"org.id", 6}, {"\"https://example.com/tenant\"", 28}, {"custom:tenant", 13},
        {"\"a.b\"", 5}, {"org.deep.x", 10}, {"org.missing", 11}, {"sub.x", 5}, {"\"x", 2},
    };
    const tg__claimset want = {8, paths};
    static tg__sigcheck chk;
    add_key(TG_KEY_JWT, "", KEY);
    const char *tok = sign(HS, "{\"sub\":\"s\",\"org\":{\"id\":\"o-42\",\"deep\":{\"x\":7}},"
                               "\"https://example.com/tenant\":\"acme\",\"custom:tenant\":\"c1\","
                               "\"a.b\":\"dotted\",\"a\":{\"b\":\"nested\"}}");
    assert_int_equal(tg__jwt_check(J, TG_KEY_JWT, (tg_str){tok, strlen(tok)}, &want, NOW_MS, &view, &chk),
                     TG__TOK_OK);
    static const struct {
        int type;
        const char *val;
    } exp[] = {{TG__CV_STRING, "o-42"}, {TG__CV_STRING, "acme"}, {TG__CV_STRING, "c1"},
               {TG__CV_STRING, "dotted"}, {TG__CV_NUMBER, "7"}, {TG__CV_ABSENT, ""},
               {TG__CV_ABSENT, ""}, {TG__CV_ABSENT, ""}};
    for (int i = 0; i < 8; i++) {
        assert_int_equal(view->type[i], exp[i].type);
        assert_int_equal(view->len[i], strlen(exp[i].val));
        assert_memory_equal(view->val[i], exp[i].val, strlen(exp[i].val));
    }
}

static void long_secret_is_hashed_first(void **state)
{
    (void)state;
    char secret[101];
    memset(secret, 's', 100);
    secret[100] = '\0';
    add_key(TG_KEY_JWT, "", secret);
    assert_int_equal(check(sign_with(HS, "{}", secret, 100), NOW_MS), TG__TOK_OK);
}

static void extracts_claims(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    char p[400], long_sub[98];
    assert_int_equal(check(sign(HS, "{\"sub\":\"al\\u00efce\",\"tenant\":\"acme|eu\",\"n\":-12.5e3,"
                                    "\"flag\":true,\"other\":1}"), NOW_MS), TG__TOK_OK);
    assert_int_equal(view->type[0], TG__CV_STRING);
    assert_int_equal(view->len[0], 6);
    assert_memory_equal(view->val[0], "al" "\xc3\xaf" "ce", 6);
    assert_int_equal(view->type[1], TG__CV_STRING);
    assert_memory_equal(view->val[1], "acme|eu", 7);
    assert_int_equal(view->type[2], TG__CV_NUMBER);
    assert_int_equal(view->len[2], 7);
    assert_memory_equal(view->val[2], "-12.5e3", 7);
    assert_int_equal(view->type[3], TG__CV_OTHER);

    memset(long_sub, 'x', 97);
    long_sub[97] = '\0';
    snprintf(p, sizeof p, "{\"sub\":\"%s\"}", long_sub);
    assert_int_equal(check(sign(HS, p), NOW_MS), TG__TOK_OK);
    assert_int_equal(view->type[0], TG__CV_LONG);
    assert_int_equal(view->type[1], TG__CV_ABSENT);
    long_sub[96] = '\0';
    snprintf(p, sizeof p, "{\"sub\":\"%s\"}", long_sub);
    assert_int_equal(check(sign(HS, p), NOW_MS), TG__TOK_OK);
    assert_int_equal(view->type[0], TG__CV_STRING);
    assert_int_equal(view->len[0], 96);
}

/* ---------------------------------------------------------------- cache */

static tg__cache_slot *slot_of(const char *tok)
{
    uint64_t tag = tg__siphash(J->sip, tok, strlen(tok));
    return &J->jwt_cache[tag & (TG__CACHE_JWT - 1)];
}

static void cache_hits_and_still_checks_time(void **state)
{
    (void)state;
    add_key(TG_KEY_JWT, "", KEY);
    char p[100], tok[300];
    snprintf(p, sizeof p, "{\"sub\":\"alice\",\"exp\":%llu}", NOW + 100);
    strcpy(tok, sign(HS, p));
    assert_int_equal(check(tok, NOW_MS), TG__TOK_OK);
    const tg__claims *first = view;
    tg__cache_slot *s = slot_of(tok);
    assert_ptr_equal(first, &s->c);
    assert_int_equal(s->gen, J->gen);

    /* A hit: same view, same claims. Poison the slot's status to prove the
     * second call did not verify again... then restore it. */
    assert_int_equal(check(tok, NOW_MS + 1), TG__TOK_OK);
    assert_ptr_equal(view, first);
    assert_memory_equal(view->val[0], "alice", 5);
    s->c.status = TG__TOK_INVALID;
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);   /* served from the cache */
    s->c.status = TG__TOK_OK;

    /* Later, the cached token has expired. */
    assert_int_equal(check(tok, (NOW + 100 + 60) * 1000), TG__TOK_EXPIRED);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_OK);

    /* A token with the same length and a signature differing in one byte
     * is never a hit, even if its hash landed on the same tag. */
    char forged[300];
    strcpy(forged, tok);
    size_t n = strlen(forged);
    forged[n - 10] = forged[n - 10] == 'A' ? 'B' : 'A';
    tg__cache_slot *fs = slot_of(forged);
    *fs = *s;                                              /* same view ... */
    fs->tag = tg__siphash(J->sip, forged, n);              /* ... and the forged tag */
    assert_int_equal(check(forged, NOW_MS), TG__TOK_INVALID);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_OK);

    /* A different length under the same tag and signature: no hit either. */
    fs = slot_of(tok);
    fs->len++;
    s->c.status = TG__TOK_OK;
    assert_int_equal(check(tok, NOW_MS), TG__TOK_OK);      /* re-verified */
    assert_int_equal(fs->len, n);

    /* Failures are cached too, and a new key empties the cache. */
    char bad[300];
    strcpy(bad, sign_with(HS, "{}", "other", 5));
    assert_int_equal(check(bad, NOW_MS), TG__TOK_INVALID);
    assert_int_equal(slot_of(bad)->gen, J->gen);
    uint32_t gen = J->gen;
    add_key(TG_KEY_JWT, "", "other");
    assert_true(J->gen != gen);
    assert_int_equal(check(bad, NOW_MS), TG__TOK_OK);
    assert_int_equal(check(tok, NOW_MS), TG__TOK_INVALID);
}

/* The seed keys the hash: another seed, other tags. */
static void cache_hash_is_keyed(void **state)
{
    (void)state;
    tg__jwt *other = calloc(1, sizeof *other);
    tg__jwt_init(other, (const uint8_t *)"another-seed-16b");
    const char *t = "header.payload.signature";
    assert_true(tg__siphash(J->sip, t, strlen(t)) != tg__siphash(other->sip, t, strlen(t)));
    free(other);
}

/* Random claims and keys, signed by OpenSSL, verify; one flipped bit in
 * any position never does. */
static void random_tokens_against_openssl(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 300; round++) {
        char secret[80], p[200], tok[600];
        size_t klen = 1 + (size_t)(x % 79);
        for (size_t i = 0; i < klen; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            secret[i] = (char)('!' + x % 90);
        }
        secret[klen] = '\0';
        assert_int_equal(tg__jwt_add_key(J, TG_KEY_JWT, TG_ALG_HS256, (tg_str){"", 0}, (const uint8_t *)secret,
                                         klen), 0);
        snprintf(p, sizeof p, "{\"sub\":\"user-%llu\",\"n\":%d}", (unsigned long long)x, round);
        strcpy(tok, sign_with(HS, p, secret, klen));
        assert_int_equal(check(tok, NOW_MS), TG__TOK_OK);
        size_t n = strlen(tok), at = (size_t)(x % n);
        tok[at] ^= 1 << (x >> 20) % 7;
        assert_true(check(tok, NOW_MS) >= TG__TOK_INVALID);
    }
}

/* ---------------------------------------------------------------- request parts */

static void bearer_and_cookie(void **state)
{
    (void)state;
    tg_str t;
    assert_true(tg__jwt_bearer((tg_str){"Bearer abc", 10}, &t));
    assert_int_equal(t.len, 3);
    assert_memory_equal(t.p, "abc", 3);
    assert_true(tg__jwt_bearer((tg_str){"bEARER x", 8}, &t));
    assert_int_equal(t.len, 1);
    assert_true(tg__jwt_bearer((tg_str){"Bearer  x", 9}, &t));
    assert_int_equal(t.len, 2);   /* the rest, verbatim: then invalid */
    assert_true(tg__jwt_bearer((tg_str){"Bearer ", 7}, &t));
    assert_int_equal(t.len, 0);
    assert_false(tg__jwt_bearer((tg_str){"Bearer", 6}, &t));
    assert_false(tg__jwt_bearer((tg_str){"Bearerx y", 9}, &t));
    assert_false(tg__jwt_bearer((tg_str){"Basic dXNlcg==", 14}, &t));
    assert_false(tg__jwt_bearer((tg_str){"", 0}, &t));

    const char *name = "tollgate_clearance";
    size_t nl = strlen(name);
    static const struct {
        const char *cookie;
        const char *want;
    } cases[] = {
        {"tollgate_clearance=tok", "tok"},
        {"a=1; tollgate_clearance=tok; b=2", "tok"},
        {"a=1;tollgate_clearance=tok ", "tok"},
        {"tollgate_clearance=first; tollgate_clearance=second", "first"},
        {"tollgate_clearance=", ""},
        {"xtollgate_clearance=tok", NULL},
        {"tollgate_clearancex=tok", NULL},
        {"tollgate_clearance", NULL},
        {"a=tollgate_clearance=tok", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_str c = {cases[i].cookie, strlen(cases[i].cookie)}, v;
        bool found = tg__cookie_get(c, name, nl, &v);
        if (found != (cases[i].want != NULL))
            fail_msg("case %zu: %s", i, cases[i].cookie);
        if (found) {
            assert_int_equal(v.len, strlen(cases[i].want));
            assert_memory_equal(v.p, cases[i].want, v.len);
        }
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(rfc7515_a1_verifies),
        T(rfc7515_a5_alg_none_refused),
        T(alg_none_in_any_case),
        T(algorithm_confusion),
        T(duplicate_members),
        T(strict_base64url),
        T(segment_count),
        T(bad_signature),
        T(exp_nbf_and_leeway),
        T(absurd_numbers),
        T(iss_and_aud),
        T(crit_refused),
        T(size_cap),
        T(kid_selection_and_rotation),
        T(fractional_numeric_dates),
        T(host_key_verdicts),
        T(claim_paths),
        T(long_secret_is_hashed_first),
        T(extracts_claims),
        T(cache_hits_and_still_checks_time),
        T(cache_hash_is_keyed),
        T(random_tokens_against_openssl),
        T(bearer_and_cookie),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
