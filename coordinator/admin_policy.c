/* admin_policy.c — the admin API's policy endpoints: the document, its
 * versions, rollback, and the audit log (GET /v1/policy, PUT /v1/policy,
 * /v1/policy/versions[/{n}], POST /v1/policy/rollback, GET /v1/audit).
 * Statuses and auth in admin.c's file comment; the store in store.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tollgated.h"

#define AUDIT_DEFAULT    50
#define AUDIT_LIMIT_MAX  200

/* Answer the stored document of version (0: the current one) with its
 * version as ETag. notfound: the 404 detail for a missing version (NULL:
 * a store error). Returns the store's code. */
static int answer_doc(struct co_response *resp, uint64_t version,
                      const char *notfound)
{
    char *doc = NULL, err[256];
    size_t len = 0;
    int rc = co_store_get(version, &doc, &len, &version, err, sizeof err);

    if (rc == CO_ENOTFOUND && notfound != NULL)
        co_response_problem(resp, 404, notfound);
    else if (rc != CO_OK)
        co_admin_store_error(resp, rc, err);
    if (rc != CO_OK)
        return rc;
    co_response_take(resp, 200, "application/json", (uint8_t *)doc, len);
    snprintf(resp->etag, sizeof resp->etag, "\"%llu\"",
             (unsigned long long)version);
    return CO_OK;
}

void co_admin_policy_get(const struct co_request *req,
                         struct co_response *resp)
{
    if (co_admin_authorize(req, resp, false) != NULL)
        answer_doc(resp, 0, NULL);
}

void co_admin_policy_put(const struct co_request *req,
                         struct co_response *resp)
{
    const struct co_admin_token *t = co_admin_authorize(req, resp, true);
    struct co_policy *p = NULL;
    char err[512];
    int64_t expect;
    uint64_t version;

    if (t == NULL || !co_admin_if_match(req, resp, &expect))
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
    if (co_admin_commit(t, p, expect, true, "policy.put", "policy",
                        json_pack("{s:i}", "quotas", (int)p->n_quotas), resp,
                        &version) == CO_OK)
        co_admin_answer_json(resp, 200, co_policy_to_json(p, version), version);
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
        co_admin_store_error(resp, rc, err);
    else
        co_admin_answer_json(resp, 200, out, 0);
}

void co_admin_version_get(const struct co_request *req,
                          struct co_response *resp)
{
    uint64_t want;

    if (co_admin_authorize(req, resp, false) == NULL)
        return;
    want = co_admin_parse_version(req->params->v[0]);
    if (want == 0)
        co_response_problem(resp, 404, "no such version");
    else
        answer_doc(resp, want, "no such version");
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

    if (t == NULL || !co_admin_if_match(req, resp, &expect) ||
        (body = co_admin_body_object(req, resp)) == NULL)
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
        co_admin_stale(resp, version);
    else if (rc != CO_OK)
        co_admin_store_error(resp, rc, err);
    co_admin_log_write(t, "policy.rollback", target,
                       rc == CO_OK ? 200 : resp->status, version);
    if (rc == CO_OK)
        answer_doc(resp, version, NULL);
done:
    json_decref(body);
}

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
                (v = co_admin_parse_version(val)) < min || v > max) {
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
        co_admin_store_error(resp, rc, err);
    else
        co_admin_answer_json(resp, 200, out, 0);
}
