/* admin.c — the quota admin API's shared plumbing: bearer tokens, JSON
 * answers, If-Match, store errors, one write as one new version. The
 * endpoints live one group per file: admin_policy.c (the document, its
 * versions, rollback, the audit log), admin_quotas.c (quotas and per-key
 * overrides), admin_keys.c (key inspection and reset).
 *
 * Auth: "Authorization: Bearer <token>" (admin_tokens.c). No or unknown token:
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
 * the other write. Any Redis failure: 503 with Retry-After: 1 and its
 * "kind" in the problem document. Path parameters arrive
 * percent-decoded from the router.
 *
 * One log line per write: who (the token's name, never the token), what,
 * status, version.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tollgated.h"

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
void co_admin_answer_json(struct co_response *resp, unsigned status,
                          json_t *v, uint64_t etag_version)
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
void co_admin_store_error(struct co_response *resp, int rc, const char *err)
{
    enum co_redis_kind kind = co_redis_thread_kind();
    char v[300], detail[512];

    if (rc == CO_ENOTFOUND) {
        co_response_unavailable(resp, "no_policy", "no policy stored yet "
                                "(Redis was unreachable at start); try "
                                "again");
        return;
    }
    if (rc == CO_EREDIS || rc == CO_EREPLY) {
        if (kind == CO_REDIS_OK) {
            /* Redis answered, but not what the store expects */
            kind = CO_REDIS_BAD_REPLY;
            co_redis_failed(kind, err);
        }
        snprintf(detail, sizeof detail, "the policy store (Redis) failed: "
                 "%s; try again", co_redis_kind_reason(kind));
        co_response_unavailable(resp, co_redis_kind_names[kind], detail);
        return;
    }
    CO_ERROR("msg=admin_store_failed rc=%d detail=%s", rc,
             co_log_value(v, sizeof v, err, strlen(err)));
    co_response_problem(resp, 500, "internal error");
}

/* If-Match: absent -> *expect = -1; "3" or "\"3\"" (W/ refused: versions
 * are exact) -> 3. Returns false with a 400 in resp when malformed. */
bool co_admin_if_match(const struct co_request *req,
                       struct co_response *resp, int64_t *expect)
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

void co_admin_stale(struct co_response *resp, uint64_t current)
{
    char detail[96];

    snprintf(detail, sizeof detail, "the policy changed: the current "
             "version is %llu", (unsigned long long)current);
    co_response_problem(resp, 412, detail);
}

/* A 400 for a document the policy validator refused. err is policy.c's
 * "<path>: <why>" (e.g. "quotas[2].limit: must be > 0", "(document): ..."
 * for the whole); the path also goes out as the RFC 9457 errors[] member's
 * JSON pointer ("/quotas/2/limit", "" for the whole document), so a client
 * finds the field without parsing prose. An err without a path is the
 * detail alone. */
void co_admin_invalid(struct co_response *resp, const char *err)
{
    static const char path_chars[] = "abcdefghijklmnopqrstuvwxyz"
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.[]";
    const char *colon = strstr(err, ": ");
    size_t n = colon != NULL ? (size_t)(colon - err) : 0, o = 0;
    bool whole = n == 10 && strncmp(err, "(document)", 10) == 0;
    char ptr[256];

    if (!whole && (n == 0 || n >= sizeof ptr / 2 ||
                   strspn(err, path_chars) < n)) {
        co_response_problem(resp, 400, err);
        return;
    }
    for (size_t i = 0; !whole && i < n; i++) {
        if (i == 0 || err[i] == '.' || err[i] == '[')
            ptr[o++] = '/';
        if (err[i] != '.' && err[i] != '[' && err[i] != ']')
            ptr[o++] = err[i];
    }
    ptr[o] = '\0';
    co_response_problem_with(resp, 400, err, json_pack(
        "{s:[{s:s, s:s}]}", "errors", "pointer", ptr, "detail", colon + 2));
}

/* The body as a JSON object, or NULL with a 400 in resp. */
json_t *co_admin_body_object(const struct co_request *req,
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

void co_admin_log_write(const struct co_admin_token *t, const char *action,
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
struct co_policy *co_admin_load_current(struct co_response *resp)
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
        co_admin_store_error(resp, rc, err);
    return p;
}

/* Store p's canonical form as the version after expect, with detail (a
 * JSON object for the audit entry; the reference is stolen). On failure
 * resp holds the error, except for a conflict when !report_stale: the
 * caller rebuilds on the new version then. Returns the store's code. */
int co_admin_commit(const struct co_admin_token *t, const struct co_policy *p,
                    int64_t expect, bool report_stale, const char *action,
                    const char *target, json_t *detail,
                    struct co_response *resp, uint64_t *version)
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
        co_admin_stale(resp, *version);
    else if (rc != CO_OK && rc != CO_ECONFLICT)
        co_admin_store_error(resp, rc, err);
    if (rc != CO_ECONFLICT || report_stale)
        co_admin_log_write(t, action, target, rc == CO_OK ? 200 : resp->status,
                           *version);
    return rc;
}

/* A decimal version number 1..INT64_MAX, or 0. */
uint64_t co_admin_parse_version(const char *s)
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
