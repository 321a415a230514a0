/* policy.c — the quota policy: JSON in, validated, converted once to the
 * protobuf the sync wire carries, and published behind one pointer.
 *
 * A policy is immutable after co_policy_parse(). Readers take a reference
 * with co_policy_current() and drop it with co_policy_release(); installing
 * a new one (the admin API, later) swaps the pointer and the old document is
 * freed when its last reader lets go. Validation errors name the JSON path of
 * the offending field ("quotas[2].limit: must be > 0") because they end up
 * in an operator's terminal or, later, in a problem-details body.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tollgated.h"

#define POLICY_FILE_MAX (4u << 20)

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct co_policy *current;

static const char *const http_methods[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT",
    "TRACE",
};

static const char *const root_fields[] = {
    "version", "sync_interval_ms", "clearance_ttl_s", "expected_edges",
    "quotas", "captcha", NULL,
};
static const char *const captcha_fields[] = {"provider", "site_key", NULL};

static const char *const quota_fields[] = {
    "name", "key", "limit", "window_s", "path_prefix", "methods", "action",
    "floor", "shadow", "fail_open", "deny_after", "require_token", "burst",
    "overrides", NULL,
};

static const char *const override_fields[] = {"limit", NULL};

/* "quotas[2]" + "limit" -> "quotas[2].limit"; the root has no prefix. */
static const char *field_path(char *buf, size_t len, const char *prefix,
                              const char *name)
{
    if (prefix[0] == '\0')
        snprintf(buf, len, "%s", name);
    else
        snprintf(buf, len, "%s.%s", prefix, name);
    return buf;
}

static int reject_unknown(json_t *obj, const char *const *known,
                          const char *prefix, char *err, size_t errlen)
{
    const char *name;
    json_t *v;
    char path[384];

    json_object_foreach(obj, name, v) {
        bool ok = false;

        for (size_t i = 0; known[i] != NULL && !ok; i++)
            ok = strcmp(known[i], name) == 0;
        if (!ok) {
            char shown[80];

            snprintf(shown, sizeof shown, "%s", name);
            snprintf(err, errlen, "%s: unknown field",
                     field_path(path, sizeof path, prefix, shown));
            return CO_EINVAL;
        }
    }
    return CO_OK;
}

/* Read an integer member. Absent: *out = dflt, or an error when required.
 * Reals ("100.0") are refused: a limit is a count. */
static int get_uint(json_t *obj, const char *prefix, const char *name,
                    bool required, uint64_t min, uint64_t max, uint64_t dflt,
                    uint64_t *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, name);
    char path[384];
    json_int_t i;

    field_path(path, sizeof path, prefix, name);
    if (v == NULL) {
        if (required) {
            snprintf(err, errlen, "%s: required", path);
            return CO_EINVAL;
        }
        *out = dflt;
        return CO_OK;
    }
    if (!json_is_integer(v)) {
        snprintf(err, errlen, "%s: must be an integer", path);
        return CO_EINVAL;
    }
    i = json_integer_value(v);
    if (i < 0 || (uint64_t)i < min) {
        if (min == 1)
            snprintf(err, errlen, "%s: must be > 0", path);
        else
            snprintf(err, errlen, "%s: must be >= %llu", path,
                     (unsigned long long)min);
        return CO_EINVAL;
    }
    if ((uint64_t)i > max) {
        snprintf(err, errlen, "%s: must be <= %llu", path,
                 (unsigned long long)max);
        return CO_EINVAL;
    }
    *out = (uint64_t)i;
    return CO_OK;
}

static int get_bool(json_t *obj, const char *prefix, const char *name,
                    bool dflt, bool *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, name);
    char path[384];

    if (v == NULL) {
        *out = dflt;
        return CO_OK;
    }
    if (!json_is_boolean(v)) {
        snprintf(err, errlen, "%s: must be true or false",
                 field_path(path, sizeof path, prefix, name));
        return CO_EINVAL;
    }
    *out = json_is_true(v);
    return CO_OK;
}

/* A string member; absent gives dflt (or "required" when dflt is NULL). */
static int get_str(json_t *obj, const char *prefix, const char *name,
                   const char *dflt, const char **out, size_t *len,
                   char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, name);
    char path[384];

    field_path(path, sizeof path, prefix, name);
    if (v == NULL) {
        if (dflt == NULL) {
            snprintf(err, errlen, "%s: required", path);
            return CO_EINVAL;
        }
        *out = dflt;
        *len = strlen(dflt);
        return CO_OK;
    }
    if (!json_is_string(v)) {
        snprintf(err, errlen, "%s: must be a string", path);
        return CO_EINVAL;
    }
    *out = json_string_value(v);
    *len = json_string_length(v);
    return CO_OK;
}

static bool is_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

bool co_quota_name_ok(const void *s, size_t n)
{
    const unsigned char *c = s;

    if (n == 0 || n > CO_QUOTA_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char(c[i]))
            return false;
    return true;
}

static int parse_methods(json_t *q, const char *prefix, struct co_quota *out,
                         char *err, size_t errlen)
{
    json_t *arr = json_object_get(q, "methods"), *v;
    char path[384];
    size_t i;

    field_path(path, sizeof path, prefix, "methods");
    out->n_methods = 0;
    if (arr == NULL)
        return CO_OK;
    if (!json_is_array(arr)) {
        snprintf(err, errlen, "%s: must be an array of HTTP methods", path);
        return CO_EINVAL;
    }
    if (json_array_size(arr) > CO_METHODS_MAX) {
        snprintf(err, errlen, "%s: at most %d methods", path,
                 CO_METHODS_MAX);
        return CO_EINVAL;
    }
    json_array_foreach(arr, i, v) {
        const char *m = json_is_string(v) ? json_string_value(v) : NULL;
        bool known = false;

        for (size_t k = 0; m != NULL && k < sizeof http_methods /
                                                sizeof http_methods[0]; k++)
            known = known || strcmp(m, http_methods[k]) == 0;
        if (!known || strlen(m) != json_string_length(v)) {
            snprintf(err, errlen, "%s[%zu]: must be an upper-case HTTP "
                     "method (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, "
                     "CONNECT, TRACE)", path, i);
            return CO_EINVAL;
        }
        for (unsigned k = 0; k < out->n_methods; k++) {
            if (strcmp(out->methods[k], m) == 0) {
                snprintf(err, errlen, "%s[%zu]: duplicate method %s", path,
                         i, m);
                return CO_EINVAL;
            }
        }
        snprintf(out->methods[out->n_methods++], sizeof out->methods[0],
                 "%s", m);
    }
    return CO_OK;
}

static int cmp_override(const void *a, const void *b)
{
    return strcmp(((const struct co_override *)a)->key,
                  ((const struct co_override *)b)->key);
}

/* The JSON spelling of an override key for an error path, cut to 40 bytes
 * (on a UTF-8 boundary) so the path fits an error line. */
static void shown_key(char *buf, size_t len, const char *key, size_t klen)
{
    size_t n = klen > 40 ? 40 : klen;
    json_t *s;
    char *text;

    while (n > 0 && n < klen && ((unsigned char)key[n] & 0xc0) == 0x80)
        n--;
    s = json_stringn(key, n);
    text = s != NULL ? json_dumps(s, JSON_ENCODE_ANY)
                     : NULL;
    snprintf(buf, len, "%s%s", text != NULL ? text : "\"?\"",
             n < klen ? "..." : "");
    free(text);
    json_decref(s);
}

/* "overrides": {"<key>": {"limit": N}, ...}: per-key limits, kept sorted
 * by key for co_quota_limit(). A key is what the edge builds from the
 * template (1..CO_KEY_MAX bytes, no NUL); its limit may be above or below
 * the quota's. On failure out->overrides is freed and NULL. */
static int parse_overrides(json_t *q, const char *prefix,
                           struct co_quota *out, char *err, size_t errlen)
{
    json_t *obj = json_object_get(q, "overrides"), *v;
    char path[64], sub[384], shown[300];
    const char *key;
    size_t klen, i = 0;

    field_path(path, sizeof path, prefix, "overrides");
    out->n_overrides = 0;
    out->overrides = NULL;
    if (obj == NULL)
        return CO_OK;
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "%s: must be an object of {\"<key>\": "
                 "{\"limit\": N}}", path);
        return CO_EINVAL;
    }
    if (json_object_size(obj) > CO_OVERRIDES_MAX) {
        snprintf(err, errlen, "%s: at most %d overrides", path,
                 CO_OVERRIDES_MAX);
        return CO_EINVAL;
    }
    if (json_object_size(obj) == 0)
        return CO_OK;
    out->overrides = calloc(json_object_size(obj), sizeof *out->overrides);
    if (out->overrides == NULL) {
        snprintf(err, errlen, "policy: out of memory");
        return CO_ENOMEM;
    }
    json_object_keylen_foreach(obj, key, klen, v) {
        struct co_override *o = &out->overrides[i++];

        shown_key(shown, sizeof shown, key, klen);
        snprintf(sub, sizeof sub, "%s[%s]", path, shown);
        if (klen == 0 || klen > CO_KEY_MAX || memchr(key, '\0', klen)) {
            snprintf(err, errlen, "%s: a key is 1..%d bytes without NUL",
                     sub, CO_KEY_MAX);
            goto fail;
        }
        if (!json_is_object(v)) {
            snprintf(err, errlen, "%s: must be an object {\"limit\": N}",
                     sub);
            goto fail;
        }
        if (reject_unknown(v, override_fields, sub, err, errlen) != CO_OK ||
            get_uint(v, sub, "limit", true, 1, CO_COUNT_MAX, 0, &o->limit,
                     err, errlen) != CO_OK)
            goto fail;
        memcpy(o->key, key, klen);
        o->key[klen] = '\0';
    }
    out->n_overrides = i;
    qsort(out->overrides, i, sizeof *out->overrides, cmp_override);
    return CO_OK;
fail:
    free(out->overrides);
    out->overrides = NULL;
    return CO_EINVAL;
}

/* Validate one quotas[] entry into out. expected_edges feeds the default
 * floor: an edge alone may admit its equal share of the limit. */
static int parse_quota(json_t *q, size_t idx, uint32_t expected_edges,
                       struct co_quota *out, char *err, size_t errlen)
{
    char prefix[32], path[384];
    const char *s;
    size_t n;
    uint64_t u, floor_default;
    json_t *v;

    snprintf(prefix, sizeof prefix, "quotas[%zu]", idx);
    memset(out, 0, sizeof *out);
    if (!json_is_object(q)) {
        snprintf(err, errlen, "%s: must be an object", prefix);
        return CO_EINVAL;
    }
    if (reject_unknown(q, quota_fields, prefix, err, errlen) != CO_OK)
        return CO_EINVAL;

    if (get_str(q, prefix, "name", NULL, &s, &n, err, errlen) != CO_OK)
        return CO_EINVAL;
    field_path(path, sizeof path, prefix, "name");
    if (n == 0 || n > CO_QUOTA_NAME_MAX) {
        snprintf(err, errlen, "%s: must be 1..%d bytes", path,
                 CO_QUOTA_NAME_MAX);
        return CO_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_name_char((unsigned char)s[i])) {
            snprintf(err, errlen, "%s: only [A-Za-z0-9._-] allowed", path);
            return CO_EINVAL;
        }
    }
    memcpy(out->name, s, n + 1);

    if (get_str(q, prefix, "key", NULL, &s, &n, err, errlen) != CO_OK)
        return CO_EINVAL;
    field_path(path, sizeof path, prefix, "key");
    {
        char why[128];

        if (co_key_template_check(s, n, why, sizeof why) != CO_OK) {
            snprintf(err, errlen, "%s: %s", path, why);
            return CO_EINVAL;
        }
    }
    memcpy(out->key, s, n + 1);

    if (get_uint(q, prefix, "limit", true, 1, CO_COUNT_MAX, 0, &out->limit,
                 err, errlen) != CO_OK ||
        get_uint(q, prefix, "window_s", true, 1, 604800, 0, &u, err,
                 errlen) != CO_OK)
        return CO_EINVAL;
    out->window_s = (uint32_t)u;

    if (get_str(q, prefix, "path_prefix", "", &s, &n, err, errlen) != CO_OK)
        return CO_EINVAL;
    field_path(path, sizeof path, prefix, "path_prefix");
    if (n > CO_PATH_PREFIX_MAX || (n > 0 && s[0] != '/')) {
        snprintf(err, errlen, "%s: must be empty or start with \"/\", at "
                 "most %d bytes", path, CO_PATH_PREFIX_MAX);
        return CO_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f) {
            snprintf(err, errlen, "%s: only visible ASCII allowed", path);
            return CO_EINVAL;
        }
    }
    memcpy(out->path_prefix, s, n + 1);

    if (parse_methods(q, prefix, out, err, errlen) != CO_OK)
        return CO_EINVAL;

    if (get_str(q, prefix, "action", NULL, &s, &n, err, errlen) != CO_OK)
        return CO_EINVAL;
    if (strcmp(s, "challenge") == 0) {
        out->action = TOLLGATE__V1__ACTION__ACTION_CHALLENGE;
    } else if (strcmp(s, "deny") == 0) {
        out->action = TOLLGATE__V1__ACTION__ACTION_DENY;
    } else {
        snprintf(err, errlen, "%s: must be \"challenge\" or \"deny\"",
                 field_path(path, sizeof path, prefix, "action"));
        return CO_EINVAL;
    }

    floor_default = out->limit / expected_edges;
    if (floor_default < 1)
        floor_default = 1;
    out->floor_set = json_object_get(q, "floor") != NULL;
    if (get_uint(q, prefix, "floor", false, 1, out->limit, floor_default,
                 &out->floor, err, errlen) != CO_OK)
        return CO_EINVAL;

    if (get_bool(q, prefix, "shadow", false, &out->shadow, err,
                 errlen) != CO_OK ||
        get_bool(q, prefix, "fail_open", true, &out->fail_open, err,
                 errlen) != CO_OK ||
        get_bool(q, prefix, "require_token", false, &out->require_token,
                 err, errlen) != CO_OK)
        return CO_EINVAL;

    v = json_object_get(q, "deny_after");
    out->deny_after = 0;
    if (v != NULL) {
        double d = json_is_number(v) ? json_number_value(v) : -1;

        if (!json_is_number(v) || !isfinite(d) ||
            !(d == 0 || (d >= 1 && d <= 1000))) {
            snprintf(err, errlen, "%s: must be 0 (off) or a number from 1 "
                     "to 1000", field_path(path, sizeof path, prefix,
                                           "deny_after"));
            return CO_EINVAL;
        }
        out->deny_after = d;
        out->deny_after_milli = (uint64_t)(d * 1000.0 + 0.5);
    }

    /* burst caps what one edge holds of a key; above the quota's limit it
     * could never bind, so it is refused rather than silently moot. */
    if (get_uint(q, prefix, "burst", false, 0, out->limit, 0, &out->burst,
                 err, errlen) != CO_OK)
        return CO_EINVAL;
    return parse_overrides(q, prefix, out, err, errlen);
}

static bool is_header_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* A claim path (edge-module/src/template.h): a JSON string naming one
 * top-level claim of any name ("https://example.com/tenant"; a "+" spelled
 * \u002b), or bare segments joined by "." that walk nested objects, each
 * of visible ASCII but . " \ + (sub, custom:tenant, org.id). The edge
 * reads whatever it is given safely but does not check this grammar:
 * this is the check. */
static bool claim_path_ok(const char *p, size_t n)
{
    if (n > 0 && p[0] == '"') {
        json_t *v = json_loadb(p, n, JSON_DECODE_ANY, NULL);
        bool ok = v != NULL && json_is_string(v);

        json_decref(v);
        return ok;
    }
    for (size_t i = 0, seg = 0; i <= n; i++, seg++) {
        if (i == n || p[i] == '.') {
            if (seg == 0)
                return false;
            seg = (size_t)-1;
        } else if (p[i] <= ' ' || p[i] > '~' || p[i] == '"' || p[i] == '\\' ||
                   p[i] == '+') {
            return false;
        }
    }
    return true;
}

/* A key template is what the edge builds a rate-limit key from (see Quota.key
 * in proto/tollgate.proto): up to CO_KEY_PARTS_MAX parts joined by "+",
 * each "ip", "route", "host", "claim:PATH" (claim_path_ok) or
 * "header:NAME" (NAME a lower-case header name), no part twice. The edge
 * checks the same grammar (claim paths only here); refusing here keeps a
 * bad template from ever reaching an edge. */
int co_key_template_check(const char *t, size_t len, char *err, size_t errlen)
{
    const char *end = t + len, *p = t;
    const char *seen[CO_KEY_PARTS_MAX];
    size_t seen_len[CO_KEY_PARTS_MAX];
    unsigned parts = 0;

    if (len == 0 || len > CO_KEY_TEMPLATE_MAX) {
        snprintf(err, errlen, "must be 1..%d bytes", CO_KEY_TEMPLATE_MAX);
        return CO_EINVAL;
    }
    while (p <= end) {
        const char *q = memchr(p, '+', (size_t)(end - p));
        size_t n = (size_t)((q ? q : end) - p);
        size_t name_at = 0;
        bool is_header = false;

        if (parts == CO_KEY_PARTS_MAX) {
            snprintf(err, errlen, "at most %d parts joined by \"+\"",
                     CO_KEY_PARTS_MAX);
            return CO_EINVAL;
        }
        if ((n == 2 && memcmp(p, "ip", 2) == 0) ||
            (n == 5 && memcmp(p, "route", 5) == 0) ||
            (n == 4 && memcmp(p, "host", 4) == 0)) {
            name_at = n;
        } else if (n > 6 && memcmp(p, "claim:", 6) == 0) {
            name_at = 6;
        } else if (n > 7 && memcmp(p, "header:", 7) == 0) {
            name_at = 7;
            is_header = true;
        } else {
            snprintf(err, errlen, "unknown part \"%.*s\" (ip, route, host, "
                     "claim:NAME, header:NAME)", (int)(n > 40 ? 40 : n), p);
            return CO_EINVAL;
        }
        if (n - name_at > CO_KEY_PART_NAME_MAX) {
            snprintf(err, errlen, "a claim or header name is at most %d "
                     "bytes", CO_KEY_PART_NAME_MAX);
            return CO_EINVAL;
        }
        if (!is_header && name_at == 6 && !claim_path_ok(p + 6, n - 6)) {
            snprintf(err, errlen, "bad claim path in \"%.*s\" (a JSON string, "
                     "or names of visible ASCII joined by \".\")",
                     (int)(n > 40 ? 40 : n), p);
            return CO_EINVAL;
        }
        for (size_t i = name_at; i < n && is_header; i++) {
            unsigned char c = (unsigned char)p[i];

            if (!is_header_char(c)) {
                snprintf(err, errlen, "bad character in \"%.*s\"%s",
                         (int)(n > 40 ? 40 : n), p,
                         is_header ? " (header names are lower case)" : "");
                return CO_EINVAL;
            }
        }
        for (unsigned i = 0; i < parts; i++) {
            if (seen_len[i] == n && memcmp(seen[i], p, n) == 0) {
                snprintf(err, errlen, "part \"%.*s\" given twice",
                         (int)(n > 40 ? 40 : n), p);
                return CO_EINVAL;
            }
        }
        seen[parts] = p;
        seen_len[parts] = n;
        parts++;
        if (q == NULL)
            break;
        p = q + 1;
    }
    return CO_OK;
}

/* The distinct claim and header names all of p's key templates use: an
 * edge keeps one table of each per policy (CO_CLAIMS_MAX, CO_HEADERS_MAX;
 * tollgate_caps.h), and a template past it would leave its quota unable
 * to match, dropping its limit. Templates are valid already
 * (co_key_template_check). Returns 0, or CO_EINVAL with err naming the
 * first quota whose key goes past a cap. */
static int names_check(const struct co_policy *p, char *err, size_t errlen)
{
    const char *seen[2][CO_HEADERS_MAX > CO_CLAIMS_MAX ? CO_HEADERS_MAX
                                                       : CO_CLAIMS_MAX];
    size_t seen_len[2][sizeof seen[0] / sizeof seen[0][0]];
    const size_t cap[2] = {CO_CLAIMS_MAX, CO_HEADERS_MAX};
    const char *what[2] = {"claim", "header"};
    size_t n[2] = {0, 0};

    for (size_t i = 0; i < p->n_quotas; i++) {
        const char *k = p->quotas[i].key;

        while (*k != '\0') {
            size_t len = strcspn(k, "+");
            int w = strncmp(k, "claim:", 6) == 0 ? 0
                  : strncmp(k, "header:", 7) == 0 ? 1 : -1;

            if (w >= 0) {
                const char *name = k + (w == 0 ? 6 : 7);
                size_t nl = len - (size_t)(name - k), j = 0;

                while (j < n[w] && !(seen_len[w][j] == nl &&
                                     memcmp(seen[w][j], name, nl) == 0))
                    j++;
                if (j == n[w] && n[w] == cap[w]) {
                    snprintf(err, errlen, "quotas[%zu].key: the policy "
                             "would name more than %zu distinct %s names "
                             "(an edge holds %zu)", i, cap[w], what[w],
                             cap[w]);
                    return CO_EINVAL;
                }
                if (j == n[w]) {
                    seen[w][j] = name;
                    seen_len[w][j] = nl;
                    n[w]++;
                }
            }
            k += len + (k[len] == '+');
        }
    }
    return CO_OK;
}

/* The optional "captcha" member: {"provider": one of co_captcha_providers,
 * "site_key": the widget's public key}. A site key is required by the
 * providers with a widget and refused by "static", which has none. The
 * provider's secret is never here: it lives in the key file. */
static int parse_captcha(json_t *root, struct co_policy *p, char *err,
                         size_t errlen)
{
    json_t *c = json_object_get(root, "captcha");
    const char *prov, *key;
    size_t plen, klen;
    bool widget;

    if (c == NULL)
        return CO_OK;
    if (!json_is_object(c)) {
        snprintf(err, errlen, "captcha: must be an object");
        return CO_EINVAL;
    }
    if (reject_unknown(c, captcha_fields, "captcha", err, errlen) != CO_OK ||
        get_str(c, "captcha", "provider", NULL, &prov, &plen, err,
                errlen) != CO_OK ||
        get_str(c, "captcha", "site_key", "", &key, &klen, err,
                errlen) != CO_OK)
        return CO_EINVAL;
    if (co_captcha_provider_known(prov, &widget) != CO_OK) {
        snprintf(err, errlen, "captcha.provider: must be turnstile, "
                 "hcaptcha or static");
        return CO_EINVAL;
    }
    if (widget && klen == 0) {
        snprintf(err, errlen, "captcha.site_key: required for %s", prov);
        return CO_EINVAL;
    }
    if (!widget && klen != 0) {
        snprintf(err, errlen, "captcha.site_key: static has no widget");
        return CO_EINVAL;
    }
    if (klen > CO_SITE_KEY_MAX) {
        snprintf(err, errlen, "captcha.site_key: at most %d bytes",
                 CO_SITE_KEY_MAX);
        return CO_EINVAL;
    }
    for (size_t i = 0; i < klen; i++) {
        if (!is_name_char((unsigned char)key[i])) {
            snprintf(err, errlen, "captcha.site_key: only [A-Za-z0-9._-]");
            return CO_EINVAL;
        }
    }
    memcpy(p->captcha_provider, prov, plen + 1);
    memcpy(p->captcha_site_key, key, klen + 1);
    return CO_OK;
}

static int cmp_quota_name(const void *a, const void *b)
{
    const struct co_quota *const *x = a, *const *y = b;

    return strcmp((*x)->name, (*y)->name);
}

static void policy_free(struct co_policy *p)
{
    if (p == NULL)
        return;
    if (p->pb != NULL)
        tollgate__v1__policy__free_unpacked(p->pb, NULL);
    free(p->packed);
    free(p->by_name);
    for (size_t i = 0; p->quotas != NULL && i < p->n_quotas; i++)
        free(p->quotas[i].overrides);
    free(p->quotas);
    free(p);
}

/* Convert to the wire message once, keeping both the packed bytes and an
 * unpacked copy that every sync response can point at (packing only reads
 * it, so worker threads share it without locks). */
static int policy_build_pb(struct co_policy *p, char *err, size_t errlen)
{
    Tollgate__V1__Policy pol = TOLLGATE__V1__POLICY__INIT;
    Tollgate__V1__Captcha cap = TOLLGATE__V1__CAPTCHA__INIT;
    Tollgate__V1__Quota *qs = NULL, **qp = NULL;
    char **mp = NULL;
    int rc = CO_ENOMEM;

    if (p->n_quotas > 0) {
        qs = calloc(p->n_quotas, sizeof *qs);
        qp = calloc(p->n_quotas, sizeof *qp);
        mp = calloc(p->n_quotas * CO_METHODS_MAX, sizeof *mp);
        if (qs == NULL || qp == NULL || mp == NULL)
            goto cleanup;
    }
    for (size_t i = 0; i < p->n_quotas; i++) {
        struct co_quota *q = &p->quotas[i];
        Tollgate__V1__Quota init = TOLLGATE__V1__QUOTA__INIT;

        qs[i] = init;
        qs[i].name = q->name;
        qs[i].limit = q->limit;
        qs[i].window_s = q->window_s;
        qs[i].key = q->key;
        qs[i].path_prefix = q->path_prefix;
        qs[i].n_methods = q->n_methods;
        qs[i].methods = &mp[i * CO_METHODS_MAX];
        for (unsigned m = 0; m < q->n_methods; m++)
            qs[i].methods[m] = q->methods[m];
        qs[i].action = q->action;
        qs[i].floor = q->floor;
        qs[i].shadow = q->shadow;
        qs[i].fail_open = q->fail_open;
        qs[i].deny_after = q->deny_after;
        qs[i].require_token = q->require_token;
        qp[i] = &qs[i];
    }
    pol.version = p->version;
    pol.n_quotas = p->n_quotas;
    pol.quotas = qp;
    pol.sync_interval_ms = p->sync_interval_ms;
    pol.clearance_ttl_s = p->clearance_ttl_s;
    if (p->captcha_provider[0] != '\0') {
        cap.provider = p->captcha_provider;
        cap.site_key = p->captcha_site_key;
        pol.captcha = &cap;
    }

    p->packed_len = tollgate__v1__policy__get_packed_size(&pol);
    p->packed = malloc(p->packed_len ? p->packed_len : 1);
    if (p->packed == NULL)
        goto cleanup;
    if (tollgate__v1__policy__pack(&pol, p->packed) != p->packed_len) {
        snprintf(err, errlen, "policy: protobuf packing size mismatch");
        CO_ERROR("msg=policy_pack_failed");
        rc = CO_EINVAL;
        goto cleanup;
    }
    p->pb = tollgate__v1__policy__unpack(NULL, p->packed_len, p->packed);
    if (p->pb == NULL)
        goto cleanup;
    rc = CO_OK;
cleanup:
    if (rc == CO_ENOMEM)
        snprintf(err, errlen, "policy: out of memory");
    free(mp);
    free(qp);
    free(qs);
    return rc;
}

/* Parse and validate a policy document. On success *out is a new policy
 * with one reference (the caller's): hand it to co_policy_install() or free
 * it with co_policy_release(). On failure err says what and where, and
 * nothing is allocated. */
static int policy_parse(const char *json, size_t len, uint64_t version,
                        struct co_policy **out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = NULL, *quotas, *q;
    struct co_policy *p = NULL;
    uint64_t u;
    size_t i;
    int rc = CO_EINVAL;

    *out = NULL;
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, errlen, "line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        goto cleanup;
    }
    if (!json_is_object(root)) {
        snprintf(err, errlen, "(document): must be a JSON object");
        goto cleanup;
    }
    if (reject_unknown(root, root_fields, "", err, errlen) != CO_OK)
        goto cleanup;
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        rc = CO_ENOMEM;
        snprintf(err, errlen, "policy: out of memory");
        goto cleanup;
    }
    atomic_init(&p->refs, 1);
    if (get_uint(root, "", "version", version == 0, 1, INT64_MAX, version,
                 &p->version, err, errlen) != CO_OK)
        goto cleanup;
    if (version != 0)
        p->version = version;
    if (get_uint(root, "", "sync_interval_ms", false, 100, 60000, 1000, &u,
                 err, errlen) != CO_OK)
        goto cleanup;
    p->sync_interval_ms = (uint32_t)u;
    if (get_uint(root, "", "clearance_ttl_s", false, 1, 604800, 300, &u,
                 err, errlen) != CO_OK)
        goto cleanup;
    p->clearance_ttl_s = (uint32_t)u;
    if (get_uint(root, "", "expected_edges", false, 1, 100000, 1, &u,
                 err, errlen) != CO_OK)
        goto cleanup;
    p->expected_edges = (uint32_t)u;
    if (parse_captcha(root, p, err, errlen) != CO_OK)
        goto cleanup;

    quotas = json_object_get(root, "quotas");
    if (quotas == NULL || !json_is_array(quotas)) {
        snprintf(err, errlen, "quotas: %s", quotas == NULL ? "required"
                 : "must be an array");
        goto cleanup;
    }
    if (json_array_size(quotas) > CO_QUOTAS_MAX) {
        snprintf(err, errlen, "quotas: %zu quotas, over the cap of %d (an "
                 "edge holds %d)", json_array_size(quotas), CO_QUOTAS_MAX,
                 CO_QUOTAS_MAX);
        goto cleanup;
    }
    p->n_quotas = json_array_size(quotas);
    p->quotas = calloc(p->n_quotas ? p->n_quotas : 1, sizeof *p->quotas);
    p->by_name = calloc(p->n_quotas ? p->n_quotas : 1, sizeof *p->by_name);
    if (p->quotas == NULL || p->by_name == NULL) {
        rc = CO_ENOMEM;
        snprintf(err, errlen, "policy: out of memory");
        goto cleanup;
    }
    json_array_foreach(quotas, i, q) {
        if (parse_quota(q, i, p->expected_edges, &p->quotas[i], err,
                        errlen) != CO_OK)
            goto cleanup;
        p->by_name[i] = &p->quotas[i];
    }
    qsort(p->by_name, p->n_quotas, sizeof *p->by_name, cmp_quota_name);
    for (i = 1; i < p->n_quotas; i++) {
        if (strcmp(p->by_name[i - 1]->name, p->by_name[i]->name) == 0) {
            snprintf(err, errlen, "quotas[%zu].name: duplicate quota name "
                     "\"%s\"", (size_t)(p->by_name[i] - p->quotas),
                     p->by_name[i]->name);
            goto cleanup;
        }
    }
    if (names_check(p, err, errlen) != CO_OK)
        goto cleanup;
    rc = policy_build_pb(p, err, errlen);
    if (rc == CO_OK && p->packed_len > CO_POLICY_PB_MAX) {
        snprintf(err, errlen, "(document): %zu bytes on the sync wire, over "
                 "the cap of %d (an edge holds %d)", p->packed_len,
                 CO_POLICY_PB_MAX, CO_POLICY_PB_MAX);
        rc = CO_EINVAL;
    }
cleanup:
    if (rc == CO_OK) {
        *out = p;
    } else {
        policy_free(p);
    }
    json_decref(root);
    return rc;
}

int co_policy_parse(const char *json, size_t len, struct co_policy **out,
                    char *err, size_t errlen)
{
    return policy_parse(json, len, 0, out, err, errlen);
}

/* As co_policy_parse(), for a document whose version the policy store
 * assigns: a "version" member is checked like any other (a client may
 * send back what GET gave it) but the policy gets version. */
int co_policy_parse_as(const char *json, size_t len, uint64_t version,
                       struct co_policy **out, char *err, size_t errlen)
{
    return policy_parse(json, len, version ? version : 1, out, err, errlen);
}

/* The canonical JSON of one quota, members in a fixed order. floor appears
 * only when the document set it: a default floor follows expected_edges,
 * and writing it out would freeze it at the next edit. */
json_t *co_quota_to_json(const struct co_quota *q)
{
    json_t *o = json_object(), *methods = json_array(), *ovr = json_object();
    bool ok = o != NULL && methods != NULL && ovr != NULL;

    for (unsigned i = 0; ok && i < q->n_methods; i++)
        ok = json_array_append_new(methods, json_string(q->methods[i])) == 0;
    for (size_t i = 0; ok && i < q->n_overrides; i++)
        ok = json_object_set_new(ovr, q->overrides[i].key,
                                 json_pack("{s:I}", "limit", (json_int_t)
                                           q->overrides[i].limit)) == 0;
    ok = ok &&
        json_object_set_new(o, "name", json_string(q->name)) == 0 &&
        json_object_set_new(o, "key", json_string(q->key)) == 0 &&
        json_object_set_new(o, "limit", json_integer((json_int_t)q->limit))
            == 0 &&
        json_object_set_new(o, "window_s", json_integer(q->window_s)) == 0 &&
        json_object_set_new(o, "burst", json_integer((json_int_t)q->burst))
            == 0 &&
        json_object_set_new(o, "path_prefix", json_string(q->path_prefix))
            == 0 &&
        json_object_set(o, "methods", methods) == 0 &&
        json_object_set_new(o, "action", json_string(
            q->action == TOLLGATE__V1__ACTION__ACTION_DENY ? "deny"
                                                           : "challenge"))
            == 0 &&
        (!q->floor_set ||
         json_object_set_new(o, "floor", json_integer((json_int_t)q->floor))
            == 0) &&
        json_object_set_new(o, "shadow", json_boolean(q->shadow)) == 0 &&
        json_object_set_new(o, "fail_open", json_boolean(q->fail_open))
            == 0 &&
        json_object_set_new(o, "deny_after",
                            q->deny_after == (double)(json_int_t)q->deny_after
                            ? json_integer((json_int_t)q->deny_after)
                            : json_real(q->deny_after)) == 0 &&
        json_object_set_new(o, "require_token",
                            json_boolean(q->require_token)) == 0 &&
        json_object_set(o, "overrides", ovr) == 0;
    json_decref(methods);
    json_decref(ovr);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The canonical document of p: "version" first (omitted when version is
 * 0, the form the store fills in), then the settings, then the quotas in
 * document order. parse(to_json(p)) gives p back. Returns a new
 * reference (json_decref) or NULL when out of memory. */
json_t *co_policy_to_json(const struct co_policy *p, uint64_t version)
{
    json_t *doc = json_object(), *quotas = json_array();
    bool ok = doc != NULL && quotas != NULL;

    if (ok && version != 0)
        ok = json_object_set_new(doc, "version",
                                 json_integer((json_int_t)version)) == 0;
    ok = ok &&
        json_object_set_new(doc, "sync_interval_ms",
                            json_integer(p->sync_interval_ms)) == 0 &&
        json_object_set_new(doc, "clearance_ttl_s",
                            json_integer(p->clearance_ttl_s)) == 0 &&
        json_object_set_new(doc, "expected_edges",
                            json_integer(p->expected_edges)) == 0;
    if (ok && p->captcha_provider[0] != '\0') {
        json_t *c = p->captcha_site_key[0] != '\0'
            ? json_pack("{s:s, s:s}", "provider", p->captcha_provider,
                        "site_key", p->captcha_site_key)
            : json_pack("{s:s}", "provider", p->captcha_provider);

        ok = c != NULL && json_object_set_new(doc, "captcha", c) == 0;
    }
    for (size_t i = 0; ok && i < p->n_quotas; i++) {
        json_t *q = co_quota_to_json(&p->quotas[i]);

        ok = q != NULL && json_array_append_new(quotas, q) == 0;
    }
    ok = ok && json_object_set(doc, "quotas", quotas) == 0;
    json_decref(quotas);
    if (!ok) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* co_policy_to_json() as compact text (free() it), or NULL. */
char *co_policy_dump(const struct co_policy *p, uint64_t version)
{
    json_t *doc = co_policy_to_json(p, version);
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;

    json_decref(doc);
    return text;
}

/* Read and parse a policy file (at most 4 MiB). err is prefixed with
 * nothing: the caller knows the path. Ownership as co_policy_parse(). */
int co_policy_load_file(const char *path, struct co_policy **out,
                        char *err, size_t errlen)
{
    char *buf = NULL;
    size_t n = 0;
    bool exposed;
    int rc = co_file_read(path, POLICY_FILE_MAX, &buf, &n, &exposed, err,
                          errlen);

    *out = NULL;
    if (rc == CO_OK)
        rc = co_policy_parse(buf, n, out, err, errlen);
    free(buf);
    return rc;
}

/* The quota called name, or NULL. O(log n): a batch may carry thousands of
 * counts, each looked up. */
const struct co_quota *co_policy_find(const struct co_policy *p,
                                      const char *name)
{
    struct co_quota key;
    const struct co_quota *kp = &key, *const *hit;

    if (strlen(name) > CO_QUOTA_NAME_MAX)
        return NULL;
    snprintf(key.name, sizeof key.name, "%s", name);
    hit = bsearch(&kp, p->by_name, p->n_quotas, sizeof *p->by_name,
                  cmp_quota_name);
    return hit ? *hit : NULL;
}

uint64_t co_quota_limit(const struct co_quota *q, const char *key)
{
    struct co_override k;
    const struct co_override *hit;

    if (q->n_overrides == 0 || strlen(key) > CO_KEY_MAX)
        return q->limit;
    snprintf(k.key, sizeof k.key, "%s", key);
    hit = bsearch(&k, q->overrides, q->n_overrides, sizeof *q->overrides,
                  cmp_override);
    return hit ? hit->limit : q->limit;
}

/* Publish p as the current policy, taking over the caller's reference.
 * Readers that hold the old one keep it until they release it. */
void co_policy_install(struct co_policy *p)
{
    struct co_policy *old;

    pthread_mutex_lock(&current_lock);
    old = current;
    current = p;
    pthread_mutex_unlock(&current_lock);
    co_policy_release(old);
}

/* A new reference to the current policy (NULL if none is installed); the
 * caller must co_policy_release() it. The lock makes "load pointer, take a
 * reference" one step, so a concurrent install cannot free it in between;
 * it is held for two instructions, so contention is negligible. */
struct co_policy *co_policy_current(void)
{
    struct co_policy *p;

    pthread_mutex_lock(&current_lock);
    p = current;
    if (p != NULL)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&current_lock);
    return p;
}

void co_policy_release(struct co_policy *p)
{
    if (p != NULL &&
        atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        policy_free(p);
}
