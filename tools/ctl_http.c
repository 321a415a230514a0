/* ctl_http.c — one HTTP exchange between tollgatectl and the coordinator's
 * admin API, over libcurl (why libcurl: tollgatectl.h, "http").
 *
 * Requests carry JSON and the bearer token; answers are JSON objects, or
 * RFC 9457 problem details that become "<status> <title>: <detail>". The
 * token is put in a header and nowhere else: never in an error, never in
 * a log. Redirects are not followed (they would carry the token to
 * wherever they point), and only http and https are spoken.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "tollgatectl.h"

#define REPLY_MAX (16u << 20)    /* bytes; a policy is at most 4 MiB */

struct exchange {
    char *body;                  /* the answer's body, NUL-terminated */
    size_t len;
    bool too_big;
    char reason[64];             /* the status line's reason phrase */
    char etag[64];
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct exchange *x = arg;
    size_t len = size * n;
    char *p;

    if (x->len + len > REPLY_MAX) {
        x->too_big = true;
        return 0;
    }
    p = realloc(x->body, x->len + len + 1);
    if (p == NULL)
        return 0;
    memcpy(p + x->len, data, len);
    x->body = p;
    x->len += len;
    x->body[x->len] = '\0';
    return len;
}

/* Copies a header's value, trimmed, into out (cleaned for a terminal). */
static void header_value(const char *v, size_t len, char *out, size_t outlen)
{
    char buf[256];

    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' ||
                       v[len - 1] == ' '))
        len--;
    snprintf(buf, sizeof buf, "%.*s", (int)len, v);
    ctl_clean(buf, out, outlen);
}

/* Remembers the reason phrase and the ETag. A status line starts a new
 * answer (after a 100 Continue), forgetting the headers before it. */
static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct exchange *x = arg;
    size_t len = size * n;

    if (len > 5 && memcmp(data, "HTTP/", 5) == 0) {
        const char *sp = memchr(data, ' ', len);
        const char *reason = sp ? memchr(sp + 1, ' ', len - (size_t)(sp + 1 - data))
                                : NULL;
        x->etag[0] = '\0';
        x->reason[0] = '\0';
        if (reason != NULL)
            header_value(reason, len - (size_t)(reason - data), x->reason,
                         sizeof x->reason);
    } else if (len > 5 && strncasecmp(data, "ETag:", 5) == 0) {
        header_value(data + 5, len - 5, x->etag, sizeof x->etag);
    }
    return len;
}

int ctl_http_open(struct ctl_http *h, const char *base, const char *token,
                  long timeout_ms, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
        (h->curl = curl_easy_init()) == NULL) {
        snprintf(err, errlen, "cannot start libcurl");
        return -1;
    }
    h->base = base;
    h->token = token;
    h->timeout_ms = timeout_ms;
    return 0;
}

void ctl_http_close(struct ctl_http *h)
{
    if (h->curl != NULL) {
        curl_easy_cleanup(h->curl);
        curl_global_cleanup();
    }
    memset(h, 0, sizeof *h);
}

/* The error line of a non-2xx answer: the problem document's title and
 * detail when there is one, else the reason phrase and the body's start. */
static void problem_text(long status, const struct exchange *x, char *err,
                         size_t errlen)
{
    json_t *doc = x->body ? json_loads(x->body, 0, NULL) : NULL;
    const char *title = json_string_value(json_object_get(doc, "title"));
    const char *detail = json_string_value(json_object_get(doc, "detail"));
    char t[128], d[512];

    if (title == NULL)
        title = x->reason[0] ? x->reason : "HTTP error";
    if (detail == NULL && doc == NULL && x->body != NULL && x->len > 0)
        detail = x->body;
    ctl_clean(title, t, sizeof t);
    if (detail != NULL && detail[0] != '\0')
        snprintf(err, errlen, "%ld %s: %s", status, t,
                 ctl_clean(detail, d, sizeof d));
    else
        snprintf(err, errlen, "%ld %s", status, t);
    json_decref(doc);
}

/* Contract in tollgatectl.h. The handle is reset before each exchange but
 * keeps its connection cache, so `apply` (GET then PUT) reuses one
 * connection. */
int ctl_http_call(struct ctl_http *h, const char *method, const char *path,
                  const json_t *body, const char *if_match,
                  struct ctl_reply *r, char *err, size_t errlen)
{
    CURL *c = h->curl;
    struct exchange x = {0};
    struct curl_slist *hdrs = NULL, *more;
    char url[4096], line[1024], cerr[CURL_ERROR_SIZE] = "";
    char *text = NULL, *auth = NULL;
    json_error_t jerr;
    CURLcode cc;
    int rc = -1;

    memset(r, 0, sizeof *r);
    snprintf(url, sizeof url, "%s%s", h->base, path);
    curl_easy_reset(c);
    hdrs = curl_slist_append(hdrs, "Accept: application/json, "
                                   "application/problem+json");
    /* No "Expect: 100-continue" round trip before a large PUT. */
    if (hdrs != NULL)
        hdrs = curl_slist_append(hdrs, "Expect:");
    if (hdrs != NULL && body != NULL)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    if (hdrs != NULL && if_match != NULL) {
        snprintf(line, sizeof line, "If-Match: %s", if_match);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (hdrs != NULL && h->token != NULL && h->token[0] != '\0') {
        if (asprintf(&auth, "Authorization: Bearer %s", h->token) < 0)
            auth = NULL;
        more = auth ? curl_slist_append(hdrs, auth) : NULL;
        if (more == NULL)
            curl_slist_free_all(hdrs);
        hdrs = more;
    }
    if (body != NULL)
        text = json_dumps(body, JSON_COMPACT);
    if (hdrs == NULL || (body != NULL && text == NULL)) {
        snprintf(err, errlen, "%s %s: out of memory", method, url);
        goto cleanup;
    }

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "tollgatectl/" CTL_VERSION);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    if (text != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    }
    if (strcmp(method, text != NULL ? "POST" : "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);

    cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s %s: %s", method, url,
                 x.too_big ? "answer larger than 16 MiB"
                 : cerr[0] ? cerr : curl_easy_strerror(cc));
        goto cleanup;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    snprintf(r->etag, sizeof r->etag, "%s", x.etag);
    if (r->status < 200 || r->status > 299) {
        problem_text(r->status, &x, err, errlen);
        goto cleanup;
    }
    r->json = json_loadb(x.body ? x.body : "{}", x.body ? x.len : 2, 0,
                         &jerr);
    if (!json_is_object(r->json)) {
        snprintf(err, errlen, "%s %s: answer is not a JSON object (%s)",
                 method, url, r->json ? "other JSON value" : jerr.text);
        json_decref(r->json);
        r->json = NULL;
        goto cleanup;
    }
    rc = 0;
cleanup:
    curl_slist_free_all(hdrs);
    if (auth != NULL) {
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    free(text);
    free(x.body);
    return rc;
}
