/* admin.c — the quota admin API: the policy document, its versions and
 * rollback, quotas, per-key overrides, key inspection and reset, audit.
 *
 * Auth: "Authorization: Bearer <token>" (tokens.c). No or unknown token:
 * 401 with WWW-Authenticate: Bearer realm="tollgate"; a read token on a
 * write: 403. Bodies are JSON (Content-Type application/json, checked by
 * the router: 415), errors RFC 9457 problem details. Every write makes ONE
 * new version and ONE audit entry (a key reset: the entry only), written
 * by one script call in the store (store.c), and is installed here at
 * once; other coordinators pick it up within 250 ms.
 *
 *   GET    /v1/policy                  read   200 document, ETag: "<n>"
 *   PUT    /v1/policy                  admin  If-Match required: 428
 *                                             without, 412 stale, 400
 *                                             invalid (detail = JSON path
 *                                             and why); 200 new document
 *   GET    /v1/policy/versions         read   200 {"current", "versions"}
 *   GET    /v1/policy/versions/{n}     read   200 document, 404
 *   POST   /v1/policy/rollback         admin  {"to": n}; 200 new document
 *                                             equal to n, 404 unknown n
 *   GET    /v1/quotas/{name}           read   200 quota, 404
 *   PUT    /v1/quotas/{name}           admin  a quota object ("name"
 *                                             optional, = {name}); creates
 *                                             or replaces: 200 {"version",
 *                                             "quota"}, 400
 *   DELETE /v1/quotas/{name}           admin  200 {"version"}, 404
 *   PUT    /v1/quotas/{name}/overrides/{key}  admin {"limit": N}: 200
 *                                             {"version"}; 404 quota
 *   DELETE /v1/quotas/{name}/overrides/{key}  admin 200 {"version"}, 404
 *   GET    /v1/keys/{quota}/{key}      read   200 the key's counts, 404
 *   DELETE /v1/keys/{quota}/{key}      admin  200 {"reset": true}
 *   GET    /v1/audit?limit=&before=    read   200 {"entries", "next"}
 * If-Match ("3" or "\"3\"") is optional on the other writes and checked
 * when present (412). A write without one that loses a race to another
 * writer is rebuilt on the new version (a few times) rather than undoing
 * the other write. Redis unreachable: 503. Path parameters arrive
 * percent-decoded from the router.
 *
 * One log line per write: who (the token's name, never the token), what,
 * status, version.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>
#include <jansson.h>

#include "tollgated.h"

#define WRITE_ATTEMPTS   3      /* rebuilds of a write racing another */
#define AUDIT_DEFAULT    50
#define AUDIT_LIMIT_MAX  200

static const char BEARER_CHALLENGE[] = "Bearer realm=\"tollgate\"";

/* The caller's token if it may do this (write: admin role), else NULL
 * with resp holding the 401 / 403. Also GET /v1/stats's (stats.c). */
const struct co_admin_token *co_admin_authorize(const struct co_request *req,
                                                struct co_response *resp,
                                                bool write)
{
    const struct co_admin_token *t =
        co_tokens_check(&co_admin_tokens,
                        co_request_header(req, "Authorization"));

    if (t == NULL) {
        co_response_problem(resp, 401, co_admin_tokens.loaded
                            ? "a valid bearer token is required"
                            : "the admin API is off: tollgated runs "
                              "without --admin-tokens");
        resp->extra.name = "WWW-Authenticate";
        resp->extra.value = BEARER_CHALLENGE;
        return NULL;
    }
    if (write && !t->admin) {
        co_response_problem(resp, 403, "this token may only read");
        return NULL;
    }
    return t;
}

/* Answer a JSON value (stolen: the reference is released). */
static void answer_json(struct co_response *resp, unsigned status, json_t *v,
                        uint64_t etag_version)
{
    char *text = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;

    json_decref(v);
    if (text == NULL) {
        co_response_problem(resp, 500, "out of memory");
        return;
    }
    co_response_take(resp, status, "application/json", (uint8_t *)text,
                     strlen(text));
    if (etag_version > 0)
        snprintf(resp->etag, sizeof resp->etag, "\"%llu\"",
                 (unsigned long long)etag_version);
}

/* A store failure as the client sees it. */
static void answer_store_error(struct co_response *resp, int rc,
                               const char *err)
{
    char v[300];

    if (rc == CO_ENOTFOUND) {
        co_response_problem(resp, 503, "no policy stored yet (Redis was "
                            "unreachable at start); try again");
        return;
    }
    if (rc == CO_EREDIS) {
        co_response_problem(resp, 503, "the policy store (Redis) is "
                            "unreachable; try again");
        return;
    }
    CO_ERROR("msg=admin_store_failed rc=%d detail=%s", rc,
             co_log_value(v, sizeof v, err, strlen(err)));
    co_response_problem(resp, 500, "policy store error");
}

/* If-Match: absent -> *expect = -1; "3" or "\"3\"" (W/ refused: versions
 * are exact) -> 3. Returns false with a 400 in resp when malformed. */
static bool if_match(const struct co_request *req, struct co_response *resp,
                     int64_t *expect)
{
    const char *h = co_request_header(req, "If-Match");
    size_t n;
    uint64_t v = 0;

    *expect = -1;
    if (h == NULL)
        return true;
    n = strlen(h);
    if (n >= 2 && h[0] == '"' && h[n - 1] == '"') {
        h++;
        n -= 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (h[i] < '0' || h[i] > '9' || v > (uint64_t)INT64_MAX / 10) {
            n = 0;
            break;
        }
        v = v * 10 + (uint64_t)(h[i] - '0');
    }
    if (n == 0) {
        co_response_problem(resp, 400, "If-Match must be a policy version, "
                            "e.g. \"3\"");
        return false;
    }
    *expect = (int64_t)v;
    return true;
}

static void stale(struct co_response *resp, uint64_t current)
{
    char detail[96];

    snprintf(detail, sizeof detail, "the policy changed: the current "
             "version is %llu", (unsigned long long)current);
    co_response_problem(resp, 412, detail);
}

/* The body as a JSON object, or NULL with a 400 in resp. */
static json_t *body_object(const struct co_request *req,
                           struct co_response *resp)
{
    json_error_t jerr;
    json_t *v = json_loadb(req->body ? (const char *)req->body : "",
                           req->body_len,
                           JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    char detail[256];

    if (v == NULL) {
        snprintf(detail, sizeof detail, "line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        co_response_problem(resp, 400, detail);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        co_response_problem(resp, 400, "(document): must be a JSON object");
        return NULL;
    }
    return v;
}

static void log_write(const struct co_admin_token *t, const char *action,
                      const char *what, unsigned status, uint64_t version)
{
    char vw[300];

    CO_INFO("msg=admin_write who=%s action=%s target=%s status=%u "
            "version=%llu", t->name, action,
            co_log_value(vw, sizeof vw, what, strlen(what)), status,
            (unsigned long long)version);
}

/* The current stored policy (parsed) and its version, or NULL with resp
 * holding the error. The caller releases it. */
static struct co_policy *load_current(struct co_response *resp)
{
    struct co_policy *p = NULL;
    char *doc = NULL, err[256];
    uint64_t version = 0;
    size_t len = 0;
    int rc = co_store_get(0, &doc, &len, &version, err, sizeof err);

    if (rc == CO_OK)
        rc = co_policy_parse_as(doc, len, version, &p, err, sizeof err);
    free(doc);
    if (rc != CO_OK)
        answer_store_error(resp, rc, err);
    return p;
}

void co_admin_policy_get(const struct co_request *req,
                         struct co_response *resp)
{
    char *doc = NULL, err[256];
    uint64_t version = 0;
    size_t len = 0;
    int rc;

    if (co_admin_authorize(req, resp, false) == NULL)
        return;
    rc = co_store_get(0, &doc, &len, &version, err, sizeof err);
    if (rc != CO_OK) {
        answer_store_error(resp, rc, err);
        return;
    }
    co_response_take(resp, 200, "application/json", (uint8_t *)doc, len);
    snprintf(resp->etag, sizeof resp->etag, "\"%llu\"",
             (unsigned long long)version);
}

/* Store p's canonical form as the version after expect, with detail (a
 * JSON object for the audit entry; the reference is stolen). On failure
 * resp holds the error, except for a conflict when !report_stale: the
 * caller rebuilds on the new version then. Returns the store's code. */
static int commit(const struct co_admin_token *t, const struct co_policy *p,
                  int64_t expect, bool report_stale, const char *action,
                  const char *target, json_t *detail, struct co_response *resp,
                  uint64_t *version)
{
    char *text = co_policy_dump(p, 0), *dt = NULL, err[256] = "";
    int rc = CO_ENOMEM;

    *version = 0;
    dt = detail != NULL ? json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(detail);
    if (text != NULL && dt != NULL)
        rc = co_store_put(text, expect, t->name, action, dt, version, err,
                          sizeof err);
    free(text);
    free(dt);
    if (rc == CO_ECONFLICT && report_stale)
        stale(resp, *version);
    else if (rc != CO_OK && rc != CO_ECONFLICT)
        answer_store_error(resp, rc, err);
    if (rc != CO_ECONFLICT || report_stale)
        log_write(t, action, target, rc == CO_OK ? 200 : resp->status,
                  *version);
    return rc;
}

void co_admin_policy_put(const struct co_request *req,
                         struct co_response *resp)
{
    const struct co_admin_token *t = co_admin_authorize(req, resp, true);
    struct co_policy *p = NULL;
    char err[512];
    int64_t expect;
    uint64_t version;

    if (t == NULL || !if_match(req, resp, &expect))
        return;
    if (expect < 0) {
        co_response_problem(resp, 428, "If-Match with the version this "
                            "document is based on is required (GET "
                            "/v1/policy gives it as ETag)");
        return;
    }
    if (co_policy_parse_as(req->body ? (const char *)req->body : "",
                           req->body_len, 1, &p, err, sizeof err) != CO_OK) {
        co_response_problem(resp, 400, err);
        return;
    }
    if (commit(t, p, expect, true, "policy.put", "policy",
               json_pack("{s:i}", "quotas", (int)p->n_quotas), resp,
               &version) == CO_OK)
        answer_json(resp, 200, co_policy_to_json(p, version), version);
    co_policy_release(p);
}

void co_admin_versions(const struct co_request *req,
                       struct co_response *resp)
{
    json_t *out;
    char err[256];
    int rc;

    if (co_admin_authorize(req, resp, false) == NULL)
        return;
    rc = co_store_versions(&out, err, sizeof err);
    if (rc != CO_OK)
        answer_store_error(resp, rc, err);
    else
        answer_json(resp, 200, out, 0);
}

/* A decimal version number 1..INT64_MAX, or 0. */
static uint64_t parse_version(const char *s)
{
    uint64_t v = 0;

    if (*s == '\0' || strlen(s) > 18)
        return 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    return v;
}

void co_admin_version_get(const struct co_request *req,
                          struct co_response *resp)
{
    uint64_t want, version;
    char *doc = NULL, err[256];
    size_t len = 0;
    int rc;

    if (co_admin_authorize(req, resp, false) == NULL)
        return;
    want = parse_version(req->params->v[0]);
    if (want == 0) {
        co_response_problem(resp, 404, "no such version");
        return;
    }
    rc = co_store_get(want, &doc, &len, &version, err, sizeof err);
    if (rc == CO_ENOTFOUND) {
        co_response_problem(resp, 404, "no such version");
        return;
    }
    if (rc != CO_OK) {
        answer_store_error(resp, rc, err);
        return;
    }
    co_response_take(resp, 200, "application/json", (uint8_t *)doc, len);
    snprintf(resp->etag, sizeof resp->etag, "\"%llu\"",
             (unsigned long long)version);
}

void co_admin_rollback(const struct co_request *req,
                       struct co_response *resp)
{
    const struct co_admin_token *t = co_admin_authorize(req, resp, true);
    json_t *body = NULL, *to;
    const char *name;
    json_t *v;
    int64_t expect;
    uint64_t version = 0;
    char err[256], target[32];
    int rc;

    if (t == NULL || !if_match(req, resp, &expect) ||
        (body = body_object(req, resp)) == NULL)
        return;
    json_object_foreach(body, name, v) {
        if (strcmp(name, "to") != 0) {
            snprintf(err, sizeof err, "%.64s: unknown field", name);
            co_response_problem(resp, 400, err);
            goto done;
        }
    }
    to = json_object_get(body, "to");
    if (to == NULL || !json_is_integer(to) || json_integer_value(to) < 1) {
        co_response_problem(resp, 400, to == NULL ? "to: required"
                            : "to: must be a version number (> 0)");
        goto done;
    }
    rc = co_store_rollback((uint64_t)json_integer_value(to), expect, t->name,
                           &version, err, sizeof err);
    snprintf(target, sizeof target, "version %lld",
             (long long)json_integer_value(to));
    if (rc == CO_ENOTFOUND)
        co_response_problem(resp, 404, "no such version");
    else if (rc == CO_ECONFLICT)
        stale(resp, version);
    else if (rc != CO_OK)
        answer_store_error(resp, rc, err);
    log_write(t, "policy.rollback", target, rc == CO_OK ? 200 : resp->status,
              version);
    if (rc == CO_OK) {
        char *doc = NULL;
        size_t len = 0;

        rc = co_store_get(version, &doc, &len, &version, err, sizeof err);
        if (rc != CO_OK) {
            answer_store_error(resp, rc, err);
            goto done;
        }
        co_response_take(resp, 200, "application/json", (uint8_t *)doc,
                         len);
        snprintf(resp->etag, sizeof resp->etag, "\"%llu\"",
                 (unsigned long long)version);
    }
done:
    json_decref(body);
}

void co_admin_quota_get(const struct co_request *req,
                        struct co_response *resp)
{
    struct co_policy *p;
    const struct co_quota *q;

    if (co_admin_authorize(req, resp, false) == NULL ||
        (p = load_current(resp)) == NULL)
        return;
    q = co_policy_find(p, req->params->v[0]);
    if (q == NULL)
        co_response_problem(resp, 404, "no such quota");
    else
        answer_json(resp, 200, co_quota_to_json(q), p->version);
    co_policy_release(p);
}

/* ------------------------------------------------------------ edits
 * Quota and override writes edit the current document as JSON, then take
 * the whole document through co_policy_parse() again: one validator, and
 * an edit can never produce a document a PUT of it would refuse. */

struct edit {
    const char *name;          /* the quota */
    const char *key;           /* the override key, or NULL */
    json_t *body;              /* the request body, or NULL */
};

/* Apply e to doc's quotas. Returns 0, or an HTTP status with detail. */
typedef unsigned (*edit_fn)(json_t *quotas, const struct edit *e,
                            char *detail, size_t len);

/* The index of quota name in quotas, or -1. */
static long quota_index(json_t *quotas, const char *name)
{
    size_t i;
    json_t *q;

    json_array_foreach(quotas, i, q) {
        const char *n = json_string_value(json_object_get(q, "name"));

        if (n != NULL && strcmp(n, name) == 0)
            return (long)i;
    }
    return -1;
}

static unsigned edit_quota_put(json_t *quotas, const struct edit *e,
                               char *detail, size_t len)
{
    json_t *name = json_object_get(e->body, "name");
    json_t *q = json_deep_copy(e->body);
    long i = quota_index(quotas, e->name);

    if (name != NULL && (!json_is_string(name) ||
                         strcmp(json_string_value(name), e->name) != 0)) {
        json_decref(q);
        snprintf(detail, len, "name: must be the quota name of the path");
        return 400;
    }
    if (q == NULL || json_object_set_new(q, "name",
                                         json_string(e->name)) != 0) {
        json_decref(q);
        snprintf(detail, len, "out of memory");
        return 500;
    }
    if (i >= 0)
        json_array_set_new(quotas, (size_t)i, q);
    else
        json_array_append_new(quotas, q);
    return 0;
}

static unsigned edit_quota_delete(json_t *quotas, const struct edit *e,
                                  char *detail, size_t len)
{
    long i = quota_index(quotas, e->name);

    if (i < 0) {
        snprintf(detail, len, "no such quota");
        return 404;
    }
    json_array_remove(quotas, (size_t)i);
    return 0;
}

static unsigned edit_override(json_t *quotas, const struct edit *e,
                              char *detail, size_t len)
{
    long i = quota_index(quotas, e->name);
    json_t *q, *ovr;

    if (i < 0) {
        snprintf(detail, len, "no such quota");
        return 404;
    }
    q = json_array_get(quotas, (size_t)i);
    ovr = json_object_get(q, "overrides");
    if (e->body == NULL) {
        if (ovr == NULL || json_object_del(ovr, e->key) != 0) {
            snprintf(detail, len, "no such override");
            return 404;
        }
        return 0;
    }
    if (ovr == NULL) {
        ovr = json_object();
        json_object_set_new(q, "overrides", ovr);
    }
    if (json_object_set(ovr, e->key, e->body) != 0) {
        snprintf(detail, len, "the key must be 1..%d bytes of UTF-8",
                 CO_KEY_MAX);
        return 400;
    }
    return 0;
}

/* "quotas[3].limit: ..." -> "limit: ...": the client sent one quota, so
 * the path starts inside it. */
static const char *inside_quota(const char *err)
{
    const char *p = strncmp(err, "quotas[", 7) == 0 ? strchr(err, ']') : NULL;

    return p != NULL && p[1] == '.' ? p + 2 : err;
}

/* Load, edit, validate, store; rebuilt on a race when the client gave no
 * If-Match. full: answer {"version", "quota"} rather than {"version"}. */
static void edit_policy(const struct co_request *req,
                        struct co_response *resp, edit_fn fn,
                        const char *action, bool full)
{
    const struct co_admin_token *t = co_admin_authorize(req, resp, true);
    struct edit e0 = {.name = req->params->v[0]}, *e = &e0;
    int64_t expect;
    char detail[512], target[2 * CO_KEY_MAX + 8];
    int rc = CO_ECONFLICT;
    uint64_t version = 0;

    if (t == NULL || !if_match(req, resp, &expect))
        return;
    if (req->params->n > 1)
        e0.key = req->params->v[1];
    /* PUTs carry the quota or override; DELETEs nothing */
    if (strcmp(req->method, "PUT") == 0 &&
        (e0.body = body_object(req, resp)) == NULL)
        return;
    snprintf(target, sizeof target, "%s%s%s", e->name, e->key ? "/" : "",
             e->key ? e->key : "");
    for (int attempt = 0; attempt < WRITE_ATTEMPTS && rc == CO_ECONFLICT;
         attempt++) {
        struct co_policy *cur = load_current(resp), *next = NULL;
        json_t *doc = NULL;
        char *text = NULL;
        unsigned status;

        if (cur == NULL)
            break;
        if (expect >= 0 && (uint64_t)expect != cur->version) {
            stale(resp, cur->version);
            co_policy_release(cur);
            break;
        }
        doc = co_policy_to_json(cur, 0);
        status = doc == NULL ? 500
                 : fn(json_object_get(doc, "quotas"), e, detail,
                      sizeof detail);
        text = status == 0 ? json_dumps(doc, JSON_COMPACT) : NULL;
        if (status == 0 && text == NULL) {
            status = 500;
            snprintf(detail, sizeof detail, "out of memory");
        }
        if (status == 0 &&
            co_policy_parse_as(text, strlen(text), 1, &next, detail,
                               sizeof detail) != CO_OK) {
            status = 400;
            memmove(detail, inside_quota(detail),
                    strlen(inside_quota(detail)) + 1);
        }
        if (status != 0) {
            co_response_problem(resp, status, detail);
        } else {
            json_t *d = e->key != NULL
                ? json_pack("{s:s, s:s}", "quota", e->name, "key", e->key)
                : json_pack("{s:s}", "quota", e->name);

            rc = commit(t, next, (int64_t)cur->version, expect >= 0, action,
                        target, d, resp, &version);
            if (rc == CO_OK) {
                const struct co_quota *q = co_policy_find(next, e->name);

                answer_json(resp, 200, full && q != NULL
                            ? json_pack("{s:I, s:o}", "version",
                                        (json_int_t)version, "quota",
                                        co_quota_to_json(q))
                            : json_pack("{s:I}", "version",
                                        (json_int_t)version), version);
            }
        }
        free(text);
        json_decref(doc);
        co_policy_release(next);
        co_policy_release(cur);
        if (status != 0)
            break;
    }
    if (rc == CO_ECONFLICT && resp->status == 0)
        co_response_problem(resp, 409, "the policy kept changing; try "
                            "again");
    json_decref(e0.body);
}

void co_admin_quota_put(const struct co_request *req,
                        struct co_response *resp)
{
    edit_policy(req, resp, edit_quota_put, "quota.put", true);
}

void co_admin_quota_delete(const struct co_request *req,
                           struct co_response *resp)
{
    edit_policy(req, resp, edit_quota_delete, "quota.delete", false);
}

void co_admin_override_put(const struct co_request *req,
                           struct co_response *resp)
{
    edit_policy(req, resp, edit_override, "override.put", false);
}

void co_admin_override_delete(const struct co_request *req,
                              struct co_response *resp)
{
    edit_policy(req, resp, edit_override, "override.delete", false);
}

/* ------------------------------------------------------------ keys */

/* "tg:{q|k}:<suffix>" for (quota, key). */
static void key_name(const char *quota, const char *key, const char *suffix,
                     char *out, size_t outlen)
{
    char tag[CO_KEY_TAG_MAX];

    co_key_tag(quota, strlen(quota), key, strlen(key), tag, sizeof tag);
    snprintf(out, outlen, "tg:%s:%s", tag, suffix);
}

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
    char c[CO_KEY_TAG_MAX + 8], e[CO_KEY_TAG_MAX + 8];
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
    key_name(quota, key, "c", c, sizeof c);
    key_name(quota, key, "e", e, sizeof e);
    co_challenge_key_hash(quota, key, strlen(key), kh);
    co_clearance_key(quota, kh, clr, sizeof clr);
    if ((rh = co_redis_command(0, 8, hm, NULL, err, sizeof err)) == NULL ||
        (rz = co_redis_command(0, 2, zc, NULL, err, sizeof err)) == NULL ||
        (rg = co_redis_command(0, 2, gc, NULL, err, sizeof err)) == NULL) {
        answer_store_error(resp, CO_EREDIS, err);
        goto done;
    }
    if (rh->type != REDIS_REPLY_ARRAY || rh->elements != 6) {
        answer_store_error(resp, CO_EREPLY, "HMGET: unexpected reply");
        goto done;
    }
    window_ms = (uint64_t)q->window_s * 1000u;
    have_w = rh->element[0]->type == REDIS_REPLY_STRING;
    w = reply_u64(rh->element[0]);
    count = have_w ? co_window_estimate(w, reply_u64(rh->element[1]),
                                        reply_u64(rh->element[3]),
                                        window_ms, now) : 0;
    attempts = have_w ? co_window_estimate(w, reply_u64(rh->element[2]),
                                           reply_u64(rh->element[4]),
                                           window_ms, now) : 0;
    limit = co_quota_limit(q, key);
    answer_json(resp, 200, json_pack(
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
 * token the edges honour anyway). */
void co_admin_key_reset(const struct co_request *req,
                        struct co_response *resp)
{
    const struct co_admin_token *t = co_admin_authorize(req, resp, true);
    const char *quota = req->params->v[0], *key = req->params->v[1];
    struct co_policy *p = NULL;
    char c[CO_KEY_TAG_MAX + 8], e[CO_KEY_TAG_MAX + 8], err[256], *dt = NULL;
    const char *del[] = {"DEL", c, e};
    redisReply *r = NULL;
    json_t *detail = NULL;
    int rc;

    if (t == NULL)
        return;
    p = co_policy_current();
    if (p == NULL || co_policy_find(p, quota) == NULL) {
        co_response_problem(resp, 404, "no such quota");
        goto done;
    }
    key_name(quota, key, "c", c, sizeof c);
    key_name(quota, key, "e", e, sizeof e);
    r = co_redis_command(0, 3, del, NULL, err, sizeof err);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        answer_store_error(resp, r == NULL ? CO_EREDIS : CO_EREPLY, err);
        goto done;
    }
    detail = json_pack("{s:s, s:s}", "quota", quota, "key", key);
    dt = detail != NULL ? json_dumps(detail, JSON_COMPACT) : NULL;
    rc = dt != NULL ? co_store_audit_add(t->name, "key.reset", dt, err,
                                         sizeof err) : CO_ENOMEM;
    if (rc != CO_OK) {
        /* The reset happened; only its record is missing. */
        CO_WARN("msg=admin_audit_failed action=key.reset rc=%d", rc);
    }
    answer_json(resp, 200, json_pack("{s:b}", "reset", 1), 0);
    {
        char target[2 * CO_KEY_MAX + 8];

        snprintf(target, sizeof target, "%s/%s", quota, key);
        log_write(t, "key.reset", target, 200, 0);
    }
done:
    free(dt);
    json_decref(detail);
    if (r != NULL)
        freeReplyObject(r);
    co_policy_release(p);
}

/* ------------------------------------------------------------ audit */

/* Query parameter name as an integer in [min, max]; absent: dflt.
 * Returns false (400 in resp) when present and not such a number. */
static bool query_uint(const struct co_request *req, struct co_response *resp,
                       const char *name, uint64_t min, uint64_t max,
                       uint64_t dflt, uint64_t *out)
{
    const char *q = req->query;
    size_t nlen = strlen(name);
    char detail[96];

    *out = dflt;
    while (q != NULL && *q != '\0') {
        const char *end = strchrnul(q, '&');

        if ((size_t)(end - q) > nlen && strncmp(q, name, nlen) == 0 &&
            q[nlen] == '=') {
            char val[32];
            uint64_t v;

            if (co_percent_decode(q + nlen + 1, (size_t)(end - q) - nlen - 1,
                                  val, sizeof val) != CO_OK ||
                (v = parse_version(val)) < min || v > max) {
                snprintf(detail, sizeof detail, "%s: must be an integer "
                         "%llu..%llu", name, (unsigned long long)min,
                         (unsigned long long)max);
                co_response_problem(resp, 400, detail);
                return false;
            }
            *out = v;
        }
        q = *end ? end + 1 : end;
    }
    return true;
}

void co_admin_audit(const struct co_request *req, struct co_response *resp)
{
    uint64_t limit, before;
    json_t *out;
    char err[256];
    int rc;

    if (co_admin_authorize(req, resp, false) == NULL ||
        !query_uint(req, resp, "limit", 1, AUDIT_LIMIT_MAX, AUDIT_DEFAULT,
                    &limit) ||
        !query_uint(req, resp, "before", 1, INT64_MAX, 0, &before))
        return;
    rc = co_store_audit((unsigned)limit, before, &out, err, sizeof err);
    if (rc != CO_OK)
        answer_store_error(resp, rc, err);
    else
        answer_json(resp, 200, out, 0);
}
