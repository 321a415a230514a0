/* fuzz_verify.c — libFuzzer target for tg_verify(): token parsing and
 * verification, claim extraction, key templates, clearance cookies and the
 * buckets behind them, on an edge with keys and a policy installed.
 *
 * Input: one flags byte, then up to 8 requests, each a time step byte and
 * eight fields, every field a little-endian u16 length and its bytes
 * (clamped to what is left): method, path, host, client_ip, authorization,
 * cookie, and the values of the user-agent and x-api-key headers.
 * Flags bit 0 / bit 1: re-sign the Bearer token / the clearance cookie
 * with the provisioned key, so mutations get past the HMAC into the
 * claims parser (the fuzzer cannot forge a MAC by itself).
 * tests/fuzz/make_corpus.py writes the seed corpus in this format.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "sha256.h"
#include "tollgate.h"

/* Like CHECK(), but never compiled out: the calls inside matter. */
#define CHECK(x) do { if (!(x)) abort(); } while (0)

#define T0 1700000000000ull
#define JWT_SECRET "fuzz-jwt-secret"
#define CLR_SECRET "fuzz-clearance-secret"

/* ---------------------------------------------------------------- protobuf */

typedef struct pb {
    uint8_t b[4096];
    size_t n;
} pb;

static void pb_varint(pb *p, uint64_t v)
{
    while (v >= 0x80) {
        p->b[p->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p->b[p->n++] = (uint8_t)v;
}

static void pb_u64(pb *p, unsigned f, uint64_t v)
{
    pb_varint(p, f << 3);
    pb_varint(p, v);
}

static void pb_bytes(pb *p, unsigned f, const void *s, size_t n)
{
    pb_varint(p, f << 3 | 2);
    pb_varint(p, n);
    memcpy(p->b + p->n, s, n);
    p->n += n;
}

static void pb_str(pb *p, unsigned f, const char *s)
{
    pb_bytes(p, f, s, strlen(s));
}

static void pb_quota(pb *pol, const char *name, const char *key, const char *prefix,
                     uint64_t floor, int shadow, int fail_open, int require_token,
                     const char *method)
{
    pb q = {.n = 0};
    pb_str(&q, 1, name);
    pb_u64(&q, 2, 1000);
    pb_u64(&q, 3, 60);
    pb_str(&q, 4, key);
    pb_str(&q, 5, prefix);
    if (method)
        pb_str(&q, 6, method);
    pb_u64(&q, 7, 1);
    pb_u64(&q, 8, floor);
    pb_u64(&q, 9, (uint64_t)shadow);
    pb_u64(&q, 10, (uint64_t)fail_open);
    pb_u64(&q, 12, (uint64_t)require_token);
    pb_bytes(pol, 2, q.b, q.n);
}

/* ---------------------------------------------------------------- setup */

static void sync_round(tg_edge *e, uint64_t now, const pb *extra)
{
    static uint8_t buf[65536];
    long n = tg_sync_request(e, now, buf, sizeof buf);
    CHECK(n > 0);
    pb resp = {.n = 0};
    pb_u64(&resp, 1, e->seq);
    if (extra) {
        memcpy(resp.b + resp.n, extra->b, extra->n);
        resp.n += extra->n;
    }
    CHECK(tg_sync_response(e, now, resp.b, resp.n) == 0);
}

static tg_edge *make_edge(void)
{
    static uint8_t *mem;
    static size_t len;
    tg_config cfg = {.edge_id = {"fuzz", 4}, .max_keys = 16, .sync_interval_ms = 1000,
                     .seed = "fuzz-seed-123456"};
    tg_edge *e;
    if (!mem) {
        len = tg_edge_size(&cfg);
        mem = aligned_alloc(8, (len + 7) & ~(size_t)7);
    }
    CHECK(tg_edge_init(mem, len, &cfg, &e) == 0);
    CHECK(tg_add_key(e, TG_KEY_JWT, (tg_str){"k1", 2}, (const uint8_t *)JWT_SECRET,
                      strlen(JWT_SECRET)) == 0);
    CHECK(tg_add_key(e, TG_KEY_JWT, (tg_str){"", 0}, (const uint8_t *)JWT_SECRET,
                      strlen(JWT_SECRET)) == 0);
    CHECK(tg_add_key(e, TG_KEY_CLEARANCE, (tg_str){"c1", 2}, (const uint8_t *)CLR_SECRET,
                      strlen(CLR_SECRET)) == 0);
    /* Host keys (indices 2, 3: HOST_KEYS): their signatures are the
     * input's verdict to give. */
    CHECK(tg_add_key_alg(e, TG_KEY_JWT, TG_ALG_RS256, (tg_str){"r1", 2}, NULL, 0) == 2);
    CHECK(tg_add_key_alg(e, TG_KEY_JWT, TG_ALG_ES256, (tg_str){"e1", 2}, NULL, 0) == 3);
    tg_jwt_options o = {60, {"https://issuer.example", 22}, {"api", 3}, 0};
    CHECK(tg_jwt_configure(e, &o) == 0);

    /* The policy, then a CHALLENGE for ip 1.2.3.4 so clearance is reachable. */
    pb pol = {.n = 0}, extra = {.n = 0};
    pb_u64(&pol, 1, 7);
    pb_quota(&pol, "ip", "ip", "/", 3, 0, 0, 0, NULL);
    pb_quota(&pol, "user", "claim:sub+ip", "/api/", 5, 0, 0, 1, NULL);
    pb_quota(&pol, "tenant", "claim:tenant+header:x-api-key", "/api/", 2, 1, 0, 0, NULL);
    pb_quota(&pol, "route", "route+host", "/", 1, 0, 1, 0, "GET");
    pb_quota(&pol, "ua", "header:user-agent", "/", 2, 0, 1, 0, NULL);
    pb_quota(&pol, "org", "claim:org.id+claim:\"https://x.example/t\"", "/api/", 2, 0, 1, 0, NULL);
    pb_bytes(&extra, 6, pol.b, pol.n);
    sync_round(e, T0, &extra);
    CHECK(tg_policy_version(e) == 7);

    tg_request req = {.method = {"GET", 3}, .path = {"/", 1}, .host = {"h", 1},
                      .client_ip = {"1.2.3.4", 7}, .now_ms = T0 + 1};
    tg_decision d;
    CHECK(tg_verify(e, &req, &d) == 0);
    pb st = {.n = 0};
    extra.n = 0;
    pb_str(&st, 1, "ip");
    pb_str(&st, 2, "1.2.3.4");
    pb_u64(&st, 3, 1);
    pb_u64(&st, 5, 600000);
    pb_str(&st, 6, "captcha");
    pb_bytes(&extra, 3, st.b, st.n);
    sync_round(e, T0 + 2, &extra);
    return e;
}

/* ---------------------------------------------------------------- input */

typedef struct rd {
    const uint8_t *p;
    size_t n;
} rd;

static tg_str field(rd *r, char *copy)
{
    size_t len = 0;
    if (r->n >= 2) {
        len = (size_t)r->p[0] | (size_t)r->p[1] << 8;
        r->p += 2;
        r->n -= 2;
    } else {
        r->n = 0;
    }
    if (len > r->n)
        len = r->n;
    memcpy(copy, r->p, len);
    r->p += len;
    r->n -= len;
    return (tg_str){copy, len};
}

static void b64url(const uint8_t *p, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            *out++ = abc[(acc >> bits) & 63];
        }
    }
    if (bits)
        *out++ = abc[(acc << (6 - bits)) & 63];
}

/* Replaces the last 43 characters of a token (its signature) with the
 * right one for what precedes its last dot. */
static void resign(char *tok, size_t len, const char *secret)
{
    if (len < 45 || tok[len - 44] != '.')
        return;
    tg__hmac_key k;
    uint8_t mac[32];
    tg__hmac_key_init(&k, (const uint8_t *)secret, strlen(secret));
    tg__hmac_sha256(&k, tok, len - 44, mac);
    b64url(mac, 32, tok + len - 43);
}

#define HOST_KEYS (1u << 2 | 1u << 3)

static void check_decision(const tg_decision *d)
{
    CHECK(d->reason < TG_REASON_COUNT);
    if (d->kind == TG_CHECK_SIGNATURE) {
        /* The signing input lies in the token, the signature is 1..512
         * bytes, the candidates are host keys of the token's algorithm. */
        CHECK(d->status == 0 && d->sig_alg < TG_ALG_COUNT && d->sig_alg != TG_ALG_HS256);
        CHECK((d->sig_keys & ~HOST_KEYS) == 0 && d->sig_keys != 0);
        CHECK(d->headers.len >= 1 && d->headers.len <= 512 && d->token.len > 0);
        return;
    }
    CHECK(d->headers.len <= 512);
    switch (d->kind) {
    case TG_ALLOW:
        CHECK(d->status == 200 && d->reason == TG_REASON_NONE);
        break;
    case TG_CHALLENGE:
        CHECK(d->status == 429 && d->token.len > 0);
        break;
    case TG_DENY:
        if (d->reason == TG_REASON_BAD_REQUEST)
            CHECK(d->status == 400);
        else if (d->reason >= TG_REASON_INVALID_TOKEN)
            CHECK(d->status == 401 && d->headers.len > 0);
        else
            CHECK(d->status == 429 && d->retry_after_s >= 1);
        break;
    default:
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char bufs[8][65536];
    static uint8_t out[65536];
    if (size < 1)
        return 0;
    tg_edge *e = make_edge();
    rd r = {data + 1, size - 1};
    uint8_t flags = data[0];
    uint64_t now = T0 + 10;
    for (int i = 0; i < 8 && r.n > 0; i++) {
        now += (uint64_t)r.p[0] * 997;
        r.p++;
        r.n--;
        tg_str f[8];
        for (int k = 0; k < 8; k++)
            f[k] = field(&r, bufs[k]);
        const char *c;
        if ((flags & 1) && f[4].len > 7)
            resign(bufs[4] + 7, f[4].len - 7, JWT_SECRET);
        if ((flags & 2) && (c = memmem(f[5].p, f[5].len, "tollgate_clearance=", 19)) != NULL) {
            size_t at = (size_t)(c - f[5].p) + 19, end = at;
            while (end < f[5].len && f[5].p[end] != ';')
                end++;
            resign(bufs[5] + at, end - at, CLR_SECRET);
        }
        tg_header hs[2] = {{{"user-agent", 10}, f[6]}, {{"x-api-key", 9}, f[7]}};
        tg_request req = {f[0], f[1], f[2], f[3], f[4], f[5], now, hs, 2, 0};
        tg_decision d;
        CHECK(tg_verify(e, &req, &d) == 0);
        check_decision(&d);
        if (d.kind == TG_CHECK_SIGNATURE) {
            /* The host's verdict: none, a candidate, or any index. */
            req.sig_verdict = (int)(flags >> 2 & 7) - 1;
            CHECK(tg_verify(e, &req, &d) == 0);
            CHECK(d.kind != TG_CHECK_SIGNATURE);
            check_decision(&d);
        }
    }
    long n = tg_sync_request(e, now, out, sizeof out);
    CHECK(n > 0);
    return 0;
}
