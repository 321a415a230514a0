/* challenge_verify.c — POST /v1/challenge/verify: a solved challenge buys a
 * clearance.
 *
 * Request: Content-Type application/json, body
 *     {"token": "<challenge token>", "response": "<captcha response>"}
 * and nothing else. The answers, checked in this order:
 *   400  body not a JSON object, a member missing, not a string or unknown
 *        (detail names it: "response: must be a string")
 *   503  no captcha verifier, no clearance key or no policy configured
 *   403  "invalid challenge token" / "challenge token expired"
 *   403  "captcha not solved" (the token stays usable: a wrong answer
 *        does not burn it, so a typo costs one more try, not a new page)
 *   409  "challenge token already used"
 *   503  Redis unreachable or the captcha provider unreachable
 *   200  application/json {"clearance": JWS, "quota": q, "expires_at": s,
 *        "cookie": "tollgate_clearance=JWS; Max-Age=ttl; Path=/; HttpOnly;
 *        Secure; SameSite=Lax"}
 * Errors are RFC 9457 problem details.
 *
 * Single use is enforced in Redis, not in memory, so it holds across every
 * coordinator: the token's nonce is SET NX until the token expires (plus a
 * margin for clocks that disagree), and only the request that set it gets
 * a clearance. It fails closed: when Redis cannot be asked, nobody gets a
 * clearance, because a token must never work twice. A SET that timed out
 * may have landed; that client must solve a new challenge, which is the
 * price of never double-spending. After the burn the key is marked cleared
 * in Redis (the data model: sync.lua's header) for the admin API and stats;
 * the clearance itself is the JWS, which edges check without asking us.
 *
 * One log line per request: outcome, quota (never the token), duration.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tollgated.h"

/* Seconds a burnt nonce outlives its token: another coordinator whose
 * clock runs this much behind would still take the token as unexpired. */
#define NONCE_MARGIN_S 60

enum outcome {
    OUT_OK,
    OUT_BAD_REQUEST,
    OUT_INVALID,
    OUT_EXPIRED,
    OUT_CAPTCHA_FAILED,
    OUT_REUSED,
    OUT_UNAVAILABLE,
};

static const char *const outcome_names[] = {
    "ok", "bad_request", "invalid", "expired", "captcha_failed", "reused",
    "unavailable",
};

/* The co_metrics counter of an outcome; NULL for a malformed request, which
 * is no verification at all. */
static atomic_ullong *outcome_counter(enum outcome o)
{
    switch (o) {
    case OUT_OK: return &co_metrics.challenges_verified_ok;
    case OUT_INVALID: return &co_metrics.challenges_failed_invalid;
    case OUT_EXPIRED: return &co_metrics.challenges_failed_expired;
    case OUT_CAPTCHA_FAILED: return &co_metrics.challenges_failed_captcha;
    case OUT_REUSED: return &co_metrics.challenges_failed_reused;
    case OUT_UNAVAILABLE: return &co_metrics.challenges_failed_unavailable;
    default: return NULL;
    }
}

static const char *const body_members[] = {"token", "response", NULL};

/* The body's two strings (pointing into *root, which the caller frees with
 * json_decref). Returns 0, or CO_EINVAL with err naming the member, in the
 * JSON handling style of policy.c: unknown members first, then each
 * member's presence and type. */
static int parse_body(const uint8_t *body, size_t len, json_t **root,
                      const char **token, size_t *tlen,
                      const char **response, size_t *rlen, char *err,
                      size_t errlen)
{
    const char **strs[] = {token, response};
    size_t *lens[] = {tlen, rlen};
    json_error_t jerr;
    const char *name;
    json_t *v;

    *root = json_loadb(body != NULL ? (const char *)body : "", len,
                       JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (*root == NULL) {
        snprintf(err, errlen, "body: invalid JSON at line %d column %d: %s",
                 jerr.line, jerr.column, jerr.text);
        return CO_EINVAL;
    }
    if (!json_is_object(*root)) {
        snprintf(err, errlen, "body: must be a JSON object");
        return CO_EINVAL;
    }
    json_object_foreach(*root, name, v) {
        bool known = false;

        for (size_t i = 0; body_members[i] != NULL && !known; i++)
            known = strcmp(body_members[i], name) == 0;
        if (!known) {
            snprintf(err, errlen, "%.64s: unknown member", name);
            return CO_EINVAL;
        }
    }
    for (size_t i = 0; body_members[i] != NULL; i++) {
        v = json_object_get(*root, body_members[i]);
        if (v == NULL || !json_is_string(v)) {
            snprintf(err, errlen, "%s: %s", body_members[i],
                     v == NULL ? "required" : "must be a string");
            return CO_EINVAL;
        }
        *strs[i] = json_string_value(v);
        *lens[i] = json_string_length(v);
    }
    return CO_OK;
}

/* Mark the nonce of c used. Returns 0 when this request burnt it,
 * CO_EBADTOKEN when it was already burnt, CO_EREDIS / CO_EREPLY with err. */
static int burn_nonce(const struct co_challenge_claims *c, uint64_t now_s,
                      char *err, size_t errlen)
{
    char key[CO_RKEY_NONCE_MAX];
    int n = co_rkey_nonce(c->nonce, key, sizeof key), rc;

    if (n < 0) {
        snprintf(err, errlen, "nonce key: %d", n);
        return CO_EREPLY;
    }
    rc = co_redis_set_px(key, (size_t)n, "1", 1,
                         (c->expires_at_s - now_s + NONCE_MARGIN_S) * 1000,
                         true, err, errlen);
    if (rc < 0)
        return rc;
    return rc == 1 ? CO_OK : CO_EBADTOKEN;
}

/* Record that (quota, key hash) is cleared until expires_s, for ttl_s. */
static int mark_cleared(const struct co_challenge_claims *c,
                        uint64_t expires_s, uint32_t ttl_s, char *err,
                        size_t errlen)
{
    char key[CO_CLEARANCE_KEY_MAX], val[24];
    int n = co_rkey_clearance(c->quota, c->key_hash, key, sizeof key), vn, rc;

    vn = snprintf(val, sizeof val, "%llu", (unsigned long long)expires_s);
    rc = co_redis_set_px(key, (size_t)n, val, (size_t)vn,
                         (uint64_t)ttl_s * 1000, false, err, errlen);
    return rc < 0 ? rc : CO_OK;
}

/* The 200 body. Returns 0 or CO_ENOMEM (resp untouched). */
static int answer_clearance(struct co_response *resp, const char *jws,
                            const char *quota, uint64_t expires_s,
                            uint32_t ttl_s)
{
    char cookie[CO_CLEARANCE_MAX + 96];
    json_t *doc;
    char *text;

    snprintf(cookie, sizeof cookie, "tollgate_clearance=%s; Max-Age=%u; "
             "Path=/; HttpOnly; Secure; SameSite=Lax", jws, ttl_s);
    doc = json_pack("{s:s, s:s, s:I, s:s}", "clearance", jws, "quota", quota,
                    "expires_at", (json_int_t)expires_s, "cookie", cookie);
    text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL)
        return CO_ENOMEM;
    co_response_take(resp, 200, "application/json", (uint8_t *)text,
                     strlen(text));
    return CO_OK;
}

/* The handler body, with the keys as a parameter so tests bring their
 * own. Contract in the file comment. */
void co_challenge_verify(const struct co_keyring *k,
                         const struct co_request *req,
                         struct co_response *resp)
{
    uint64_t t0 = co_mono_us(), now_s, expires_s = 0;
    struct co_policy *pol = NULL;
    struct co_verifier ver;
    struct co_challenge_claims c;
    json_t *root = NULL;
    const char *token = NULL, *response = NULL;
    size_t tlen = 0, rlen = 0;
    char err[256] = "", jws[CO_CLEARANCE_MAX];
    char vq[96], vk[96], vd[300];
    enum outcome o = OUT_UNAVAILABLE;
    atomic_ullong *counter;
    uint32_t ttl_s = 0;
    int rc;

    memset(&c, 0, sizeof c);
    if (parse_body(req->body, req->body_len, &root, &token, &tlen, &response,
                   &rlen, err, sizeof err) != CO_OK) {
        o = OUT_BAD_REQUEST;
        co_response_problem(resp, 400, err);
        goto done;
    }
    /* Configuration first: nothing below may burn a nonce that the
     * missing piece would then waste. */
    rc = co_verifier_open(k, &ver, err, sizeof err);
    if (rc != CO_OK) {
        if (rc != CO_ENOTFOUND)
            CO_ERROR("msg=captcha_verifier_invalid detail=%s",
                     co_log_value(vd, sizeof vd, err, strlen(err)));
        co_response_problem(resp, 503, rc == CO_ENOTFOUND
                            ? "no captcha verifier configured"
                            : "captcha verifier unavailable");
        goto done;
    }
    if (k->n_clearance == 0) {
        snprintf(err, sizeof err, "no clearance key configured");
        co_response_problem(resp, 503, err);
        goto done;
    }
    pol = co_policy_current();
    if (pol == NULL) {
        snprintf(err, sizeof err, "no policy loaded");
        co_response_problem(resp, 503, err);
        goto done;
    }
    ttl_s = pol->clearance_ttl_s;

    now_s = co_wall_ms() / 1000;
    rc = co_challenge_check(k, token, tlen, now_s, &c);
    if (rc != CO_OK) {
        o = rc == CO_EEXPIRED ? OUT_EXPIRED : OUT_INVALID;
        co_response_problem(resp, 403, rc == CO_EEXPIRED
                            ? "challenge token expired"
                            : "invalid challenge token");
        goto done;
    }
    rc = ver.verify(&ver, token, tlen, response, rlen, NULL, err,
                    sizeof err);
    if (rc != CO_OK) {
        o = rc == CO_EBADTOKEN ? OUT_CAPTCHA_FAILED : OUT_UNAVAILABLE;
        co_response_problem(resp, rc == CO_EBADTOKEN ? 403 : 503,
                            rc == CO_EBADTOKEN ? "captcha not solved"
                            : "captcha verifier unavailable");
        goto done;
    }
    rc = burn_nonce(&c, now_s, err, sizeof err);
    if (rc != CO_OK) {
        o = rc == CO_EBADTOKEN ? OUT_REUSED : OUT_UNAVAILABLE;
        co_response_problem(resp, rc == CO_EBADTOKEN ? 409 : 503,
                            rc == CO_EBADTOKEN
                            ? "challenge token already used"
                            : "cannot record the challenge as used; try "
                              "again");
        goto done;
    }
    expires_s = now_s + ttl_s;
    rc = co_clearance_issue(&k->clearance[0], c.quota, c.key_hash, now_s,
                            ttl_s, jws, sizeof jws);
    if (rc < 0 || answer_clearance(resp, jws, c.quota, expires_s,
                                   ttl_s) != CO_OK) {
        /* Out of memory after the burn: this client must solve again. */
        snprintf(err, sizeof err, "cannot sign the clearance (%d)", rc);
        CO_ERROR("msg=clearance_issue_failed rc=%d", rc);
        co_response_problem(resp, 500, "cannot issue the clearance");
        goto done;
    }
    o = OUT_OK;
    co_stats_challenge_solved(c.quota, c.key_hash, co_wall_ms());
    /* The clearance is already valid at every edge; the mark is
     * bookkeeping, so losing it is a warning, not the client's loss. */
    if (mark_cleared(&c, expires_s, ttl_s, err, sizeof err) != CO_OK)
        CO_WARN("msg=clearance_mark_failed quota=%s detail=%s",
                co_log_value(vq, sizeof vq, c.quota, strlen(c.quota)),
                co_log_value(vd, sizeof vd, err, strlen(err)));
    err[0] = '\0';

done:
    counter = outcome_counter(o);
    if (counter != NULL)
        atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
    CO_LOG(o == OUT_BAD_REQUEST ? CO_LOG_DEBUG
           : o == OUT_UNAVAILABLE ? CO_LOG_WARN : CO_LOG_INFO,
           "msg=challenge_verify outcome=%s status=%u quota=%s kid=%s "
           "dur_ms=%.2f%s%s", outcome_names[o], resp->status,
           co_log_value(vq, sizeof vq, c.quota, strlen(c.quota)),
           co_log_value(vk, sizeof vk, c.kid, strlen(c.kid)),
           (double)(co_mono_us() - t0) / 1000.0,
           err[0] != '\0' ? " detail=" : "",
           err[0] != '\0' ? co_log_value(vd, sizeof vd, err, strlen(err))
                          : "");
    co_policy_release(pol);
    json_decref(root);
}

/* The route handler: the keys tollgated runs with. */
void co_challenge_verify_handle(const struct co_request *req,
                                struct co_response *resp)
{
    co_challenge_verify(&co_keys, req, resp);
}
