/* admin_quotas.c — the admin API's quota endpoints: GET, PUT and DELETE
 * /v1/quotas/{name} and PUT, DELETE /v1/quotas/{name}/overrides/{key}.
 * Statuses and auth in admin.c's file comment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tollgated.h"

#define WRITE_ATTEMPTS   3      /* rebuilds of a write racing another */

void co_admin_quota_get(const struct co_request *req,
                        struct co_response *resp)
{
    struct co_policy *p;
    const struct co_quota *q;

    if (co_admin_authorize(req, resp, false) == NULL ||
        (p = co_admin_load_current(resp)) == NULL)
        return;
    q = co_policy_find(p, req->params->v[0]);
    if (q == NULL)
        co_response_problem(resp, 404, "no such quota");
    else
        co_admin_answer_json(resp, 200, co_quota_to_json(q), p->version);
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

    if (t == NULL || !co_admin_if_match(req, resp, &expect))
        return;
    if (req->params->n > 1)
        e0.key = req->params->v[1];
    /* PUTs carry the quota or override; DELETEs nothing */
    if (strcmp(req->method, "PUT") == 0 &&
        (e0.body = co_admin_body_object(req, resp)) == NULL)
        return;
    snprintf(target, sizeof target, "%s%s%s", e->name, e->key ? "/" : "",
             e->key ? e->key : "");
    for (int attempt = 0; attempt < WRITE_ATTEMPTS && rc == CO_ECONFLICT;
         attempt++) {
        struct co_policy *cur = co_admin_load_current(resp), *next = NULL;
        json_t *doc = NULL;
        char *text = NULL;
        unsigned status;

        if (cur == NULL)
            break;
        if (expect >= 0 && (uint64_t)expect != cur->version) {
            co_admin_stale(resp, cur->version);
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

            rc = co_admin_commit(t, next, (int64_t)cur->version,
                                 expect >= 0, action, target, d, resp,
                                 &version);
            if (rc == CO_OK) {
                const struct co_quota *q = co_policy_find(next, e->name);

                json_t *a = full && q != NULL
                    ? json_pack("{s:I, s:o}", "version", (json_int_t)version,
                                "quota", co_quota_to_json(q))
                    : json_pack("{s:I}", "version", (json_int_t)version);

                co_admin_answer_json(resp, 200, a, version);
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
