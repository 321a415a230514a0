/* admin_keys.c — the admin API's key endpoints: GET (inspect) and DELETE
 * (reset) /v1/keys/{quota}/{key}, reading and deleting sync.lua's counters
 * of one key (the data model in sync.lua's header). Statuses and auth in
 * admin.c's file comment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>
#include <jansson.h>

#include "tollgated.h"

static uint64_t reply_u64(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_STRING
           ? strtoull(r->str, NULL, 10)
           : r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 0
           ? (uint64_t)r->integer : 0;
}

void co_admin_key_get(const struct co_request *req, struct co_response *resp)
{
    const char *quota = req->params->v[0], *key = req->params->v[1];
    struct co_policy *p = NULL;
    const struct co_quota *q;
    char c[CO_RKEY_COUNTERS_MAX], e[CO_RKEY_COUNTERS_MAX];
    char clr[CO_CLEARANCE_KEY_MAX], err[256];
    uint8_t kh[16];
    const char *hm[] = {"HMGET", c, "w", "a", "t", "pa", "pt", "L"};
    const char *zc[] = {"ZCARD", e}, *gc[] = {"GET", clr};
    redisReply *rh = NULL, *rz = NULL, *rg = NULL;
    uint64_t now = co_wall_ms(), window_ms, w, count, attempts, limit;
    bool have_w;

    if (co_admin_authorize(req, resp, false) == NULL)
        return;
    p = co_policy_current();
    q = p != NULL ? co_policy_find(p, quota) : NULL;
    if (q == NULL) {
        co_response_problem(resp, 404, "no such quota");
        goto done;
    }
    co_rkey_counters(quota, strlen(quota), key, strlen(key), c, e, sizeof c);
    co_challenge_key_hash(quota, key, strlen(key), kh);
    co_rkey_clearance(quota, kh, clr, sizeof clr);
    if ((rh = co_redis_command(0, 8, hm, NULL, err, sizeof err)) == NULL ||
        (rz = co_redis_command(0, 2, zc, NULL, err, sizeof err)) == NULL ||
        (rg = co_redis_command(0, 2, gc, NULL, err, sizeof err)) == NULL) {
        co_admin_store_error(resp, CO_EREDIS, err);
        goto done;
    }
    if (rh->type != REDIS_REPLY_ARRAY || rh->elements != 6) {
        co_admin_store_error(resp, CO_EREPLY, "HMGET: unexpected reply");
        goto done;
    }
    window_ms = (uint64_t)q->window_s * 1000u;
    have_w = rh->element[0]->type == REDIS_REPLY_STRING;
    w = reply_u64(rh->element[0]);
    /* co_window_estimate() rolls the hash in its head as sync.lua would;
     * asking sync.lua instead would write (a report rolls the hash and
     * records an edge). test_co_admin.c checks the two agree. */
    count = have_w ? co_window_estimate(w, reply_u64(rh->element[1]),
                                        reply_u64(rh->element[3]),
                                        window_ms, now) : 0;
    attempts = have_w ? co_window_estimate(w, reply_u64(rh->element[2]),
                                           reply_u64(rh->element[4]),
                                           window_ms, now) : 0;
    limit = co_quota_limit(q, key);
    co_admin_answer_json(resp, 200, json_pack(
        "{s:s, s:s, s:I, s:i, s:I, s:I, s:I, s:I, s:s, s:o}",
        "quota", quota, "key", key, "limit", (json_int_t)limit,
        "window_s", (int)q->window_s, "count", (json_int_t)count,
        "attempts", (json_int_t)attempts,
        "lease_outstanding", (json_int_t)reply_u64(rh->element[5]),
        "edges", (json_int_t)reply_u64(rz),
        "state", count >= limit ? "over" : "allow",
        "cleared_until", rg->type == REDIS_REPLY_STRING
            ? json_integer((json_int_t)reply_u64(rg)) : json_null()), 0);
done:
    if (rh != NULL)
        freeReplyObject(rh);
    if (rz != NULL)
        freeReplyObject(rz);
    if (rg != NULL)
        freeReplyObject(rg);
    co_policy_release(p);
}

/* Forget the key's counts and edge records: the client starts afresh at
 * every edge's next sync. Clearance marks stay (a clearance is a signed
 * token the edges honour anyway). The DEL and its audit entry are one
 * script call (co_store_key_reset): no 200 without its entry. */
void co_admin_key_reset(const struct co_request *req,
                        struct co_response *resp)
{
    const struct co_admin_token *t = co_admin_authorize(req, resp, true);
    const char *quota = req->params->v[0], *key = req->params->v[1];
    struct co_policy *p = NULL;
    char c[CO_RKEY_COUNTERS_MAX], e[CO_RKEY_COUNTERS_MAX], err[256];
    char target[2 * CO_KEY_MAX + 8];
    char *dt = NULL;
    json_t *detail = NULL;
    int rc;

    if (t == NULL)
        return;
    snprintf(target, sizeof target, "%s/%s", quota, key);
    p = co_policy_current();
    if (p == NULL || co_policy_find(p, quota) == NULL) {
        co_response_problem(resp, 404, "no such quota");
        goto done;
    }
    co_rkey_counters(quota, strlen(quota), key, strlen(key), c, e, sizeof c);
    detail = json_pack("{s:s, s:s}", "quota", quota, "key", key);
    dt = detail != NULL ? json_dumps(detail, JSON_COMPACT) : NULL;
    rc = dt != NULL ? co_store_key_reset(t->name, dt, c, e, err, sizeof err)
                    : CO_ENOMEM;
    if (rc != CO_OK) {
        co_admin_store_error(resp, rc, err);
        co_admin_log_write(t, "key.reset", target, resp->status, 0);
        goto done;
    }
    co_admin_answer_json(resp, 200, json_pack("{s:b}", "reset", 1), 0);
    co_admin_log_write(t, "key.reset", target, 200, 0);
done:
    free(dt);
    json_decref(detail);
    co_policy_release(p);
}
