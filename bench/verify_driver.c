/* verify_driver.c — a native edge for callgrind: sets up a tg_edge,
 * installs a policy through a SyncResponse built with protoc-c, then calls
 * tg_verify() N times. bench/edge/callgrind.mjs runs it with two values of
 * N and divides the difference in instructions by the difference in N, so
 * everything before the loop (setup, policy, token minting) cancels out.
 *
 *   verify_driver CASE N [POOL]
 *     none        no token; quota "per-ip" keyed on the client address
 *     jwt-fresh   a different HS256 token each call (POOL tokens minted,
 *                 POOL >= N; keep POOL equal across the two runs)
 *     jwt-repeat  the same HS256 token every call
 *
 * Every call must answer Allow (limits are huge); anything else exits 1,
 * so the figure is never taken on a short-circuited path. The clock is
 * fixed, so two runs with the same arguments execute the same
 * instructions.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate.h"
#include "tollgate.pb-c.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define NOW_MS 1800000000000ULL /* 2027-01-15, fixed */
#define BIG 1000000000000ULL    /* the coordinator's largest limit */
#define JWT_KID "k1"
#define JWT_SECRET "tollgate-bench-secret-0123456789abcdef"
#define TOKEN_CAP 512           /* bytes per minted "Bearer ..." value */

static void die(const char *what, long rc)
{
    fprintf(stderr, "verify_driver: %s (%ld)\n", what, rc);
    exit(1);
}

/* One sync: the edge's first SyncRequest (seq 1) answered with a policy of
 * one quota keyed by key_template. */
static void install_policy(tg_edge *e, const char *quota, const char *key_template,
                           int require_token)
{
    static uint8_t buf[65536];
    long n = tg_sync_request(e, NOW_MS, buf, sizeof buf);
    if (n < 0)
        die("tg_sync_request", n);
    Tollgate__V1__SyncRequest *req = tollgate__v1__sync_request__unpack(NULL, (size_t)n, buf);
    if (!req)
        die("unpacking our own SyncRequest", 0);

    Tollgate__V1__Quota q = TOLLGATE__V1__QUOTA__INIT;
    q.name = (char *)quota;
    q.key = (char *)key_template;
    q.limit = BIG;
    q.floor = BIG;
    q.window_s = 3600;
    q.path_prefix = "/";
    q.action = TOLLGATE__V1__ACTION__ACTION_CHALLENGE;
    q.fail_open = 1;
    q.require_token = (protobuf_c_boolean)require_token;
    Tollgate__V1__Quota *qs[] = {&q};
    Tollgate__V1__Policy p = TOLLGATE__V1__POLICY__INIT;
    p.version = 7;
    p.n_quotas = 1;
    p.quotas = qs;
    p.sync_interval_ms = 1000;
    p.clearance_ttl_s = 300;
    Tollgate__V1__SyncResponse r = TOLLGATE__V1__SYNC_RESPONSE__INIT;
    r.acked_seq = req->seq;
    r.next_sync_ms = 1000;
    r.policy_version = p.version;
    r.policy = &p;
    r.server_time_ms = NOW_MS;
    tollgate__v1__sync_request__free_unpacked(req, NULL);

    size_t len = tollgate__v1__sync_response__pack(&r, buf);
    int rc = tg_sync_response(e, NOW_MS, buf, len);
    if (rc < 0)
        die("tg_sync_response", rc);
    if (tg_policy_version(e) != p.version)
        die("policy not installed; version", (long)tg_policy_version(e));
}

static int add_jwt_key(tg_edge *e)
{
    return tg_add_key(e, TG_KEY_JWT, (tg_str){JWT_KID, strlen(JWT_KID)},
                      (const uint8_t *)JWT_SECRET, strlen(JWT_SECRET));
}

static size_t b64url(const uint8_t *in, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = abc[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

/* "Bearer <HS256 token>" for claims {sub, tenant, iat, exp, jti}: jti makes
 * token i unique while sub repeats, as in bench/edge/fixtures.mjs. */
static void mint(unsigned i, char *out)
{
    char json[256], seg[400];
    unsigned long long iat = NOW_MS / 1000, exp = iat + 10ULL * 365 * 86400;
    size_t o = (size_t)snprintf(out, TOKEN_CAP, "Bearer ");
    const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"" JWT_KID "\"}";
    o += b64url((const uint8_t *)hdr, strlen(hdr), out + o);
    out[o++] = '.';
    int n = snprintf(json, sizeof json,
                     "{\"sub\":\"user-%u\",\"tenant\":\"t%u\",\"iat\":%llu,\"exp\":%llu,\"jti\":\"b%u\"}",
                     i % 64, i % 8, iat, exp, i);
    o += b64url((const uint8_t *)json, (size_t)n, out + o);
    const char *signing = out + 7;
    uint8_t mac[32];
    unsigned maclen = 0;
    if (!HMAC(EVP_sha256(), JWT_SECRET, (int)strlen(JWT_SECRET), (const uint8_t *)signing,
              o - 7, mac, &maclen))
        die("HMAC", 0);
    out[o++] = '.';
    b64url(mac, maclen, seg);
    snprintf(out + o, TOKEN_CAP - o, "%s", seg);
}

/* The JWT work cannot be skipped: a valid token is keyed by the per-sub
 * quota (its RateLimit-Policy header), a forged one is refused. Runs in
 * both runs of a pair, so it cancels out. */
static void check_jwt_in_force(tg_edge *e)
{
    char tok[TOKEN_CAP];
    tg_decision d;
    tg_request req = {.method = {"GET", 3}, .path = {"/", 1}, .client_ip = {"203.0.113.7", 11},
                      .now_ms = NOW_MS};
    mint(999999, tok);
    req.authorization = (tg_str){tok, strlen(tok)};
    if (tg_verify(e, &req, &d) < 0 || d.kind != TG_ALLOW || d.headers.len < 28 ||
        memcmp(d.headers.p, "RateLimit-Policy: \"per-sub\"", 27) != 0)
        die("a valid token was not keyed by the per-sub quota", (long)d.kind);
    tok[strlen(tok) - 10] ^= 1; /* one signature character changed */
    if (tg_verify(e, &req, &d) < 0 || d.kind != TG_DENY)
        die("a forged token was not refused", (long)d.kind);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: verify_driver none|jwt-fresh|jwt-repeat N [POOL]\n");
        return 2;
    }
    const char *mode = argv[1];
    unsigned long n = strtoul(argv[2], NULL, 10);
    unsigned long pool = argc > 3 ? strtoul(argv[3], NULL, 10) : n;
    int jwt = strncmp(mode, "jwt-", 4) == 0;
    int fresh = strcmp(mode, "jwt-fresh") == 0;
    if (!jwt && strcmp(mode, "none") != 0)
        die("unknown case", 0);

    tg_config cfg = {
        .edge_id = {"bench-native", 12},
        .max_keys = 4096,
        .sync_interval_ms = 1000,
        .seed = "tollgate-bench!", /* fixed: the token cache hashes alike every run */
    };
    size_t size = tg_edge_size(&cfg);
    void *mem = aligned_alloc(8, (size + 7) & ~(size_t)7);
    tg_edge *e = NULL;
    if (!mem)
        die("out of memory", 0);
    int rc = tg_edge_init(mem, size, &cfg, &e);
    if (rc < 0)
        die("tg_edge_init", rc);

    char *tokens = NULL;
    size_t *token_len = NULL;
    if (!jwt) {
        install_policy(e, "per-ip", "ip", 0);
    } else {
        rc = add_jwt_key(e);
        if (rc < 0)
            die("tg_add_key", rc);
        install_policy(e, "per-sub", "claim:sub", 1);
        check_jwt_in_force(e);
        if (fresh && pool < n)
            die("POOL must be >= N for jwt-fresh", (long)pool);
        size_t count = fresh ? pool : 1;
        tokens = malloc(count * TOKEN_CAP);
        token_len = malloc(count * sizeof *token_len);
        if (!tokens || !token_len)
            die("out of memory", 0);
        for (size_t i = 0; i < count; i++) {
            mint((unsigned)i, tokens + i * TOKEN_CAP);
            token_len[i] = strlen(tokens + i * TOKEN_CAP);
        }
    }

    tg_request req = {
        .method = {"GET", 3},
        .path = {"/api/items", 10},
        .host = {"shop.example", 12},
        .client_ip = {"203.0.113.7", 11},
        .now_ms = NOW_MS,
    };
    tg_decision d;
    unsigned long bad = 0;
    for (unsigned long i = 0; i < n; i++) {
        if (jwt) {
            size_t k = fresh ? i : 0;
            req.authorization = (tg_str){tokens + k * TOKEN_CAP, token_len[k]};
        }
        if (tg_verify(e, &req, &d) < 0 || d.kind != TG_ALLOW)
            bad++;
    }
    if (bad) {
        fprintf(stderr, "verify_driver: %lu of %lu calls not Allow (last: kind %d reason %s)\n",
                bad, n, (int)d.kind, tg_reason_name(d.reason));
        return 1;
    }
    printf("%s: %lu verify() calls, all Allow\n", mode, n);
    free(tokens);
    free(token_len);
    free(mem);
    return 0;
}
