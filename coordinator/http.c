/* http.c — the HTTP front: libmicrohttpd daemon, route table, request
 * bodies, and responses.
 *
 * Endpoint handlers never see libmicrohttpd. This file reads a request to
 * the end (raw bytes, no PostProcessor, capped at --max-body), turns it into
 * a struct co_request, calls the route's handler and sends back the struct
 * co_response it filled. Everything decidable from the request line and
 * headers (404, 405, 413 by Content-Length, 414, 415) is answered before a
 * single body byte is read. Errors are RFC 9457 problem details.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "tollgated.h"

#define CONNECTION_LIMIT    4096u
#define CONNECTION_TIMEOUT_S 15u
#define CONNECTION_MEMORY   (64u * 1024u)   /* headers + URL + read buffer */
#define LISTEN_BACKLOG      1024u
/* Bytes of an over-long chunked body read (and dropped) before hanging up
 * instead of answering 413. */
#define DISCARD_MAX(max) ((max) > (1u << 20) ? (max) : (1u << 20))

/* The global state (tollgated.h). It lives here, not in main.c, so the
 * unit tests that link libco.a without main() get it too. */
struct co_server co_server = {
    .max_body = 1u << 20,
};

/* The route table. Add an endpoint group here and in its own file. */
static const struct co_route routes[] = {
    {"GET", "/healthz", NULL, co_health_live},
    {"GET", "/readyz", NULL, co_health_ready},
    {"GET", "/metrics", NULL, co_metrics_handle},
    {"POST", "/v1/sync", "application/x-protobuf", co_sync_handle},
    {"POST", "/v1/challenge/verify", "application/json",
     co_challenge_verify_handle},
    {"GET", "/v1/policy", NULL, co_admin_policy_get},
    {"PUT", "/v1/policy", "application/json", co_admin_policy_put},
    {"GET", "/v1/policy/versions", NULL, co_admin_versions},
    {"GET", "/v1/policy/versions/{n}", NULL, co_admin_version_get},
    {"POST", "/v1/policy/rollback", "application/json", co_admin_rollback},
    {"GET", "/v1/quotas/{name}", NULL, co_admin_quota_get},
    {"PUT", "/v1/quotas/{name}", "application/json", co_admin_quota_put},
    {"DELETE", "/v1/quotas/{name}", NULL, co_admin_quota_delete},
    {"PUT", "/v1/quotas/{name}/overrides/{key}", "application/json",
     co_admin_override_put},
    {"DELETE", "/v1/quotas/{name}/overrides/{key}", NULL,
     co_admin_override_delete},
    {"GET", "/v1/keys/{quota}/{key}", NULL, co_admin_key_get},
    {"DELETE", "/v1/keys/{quota}/{key}", NULL, co_admin_key_reset},
    {"GET", "/v1/audit", NULL, co_admin_audit},
    {"GET", "/v1/stats", NULL, co_stats_handle},
    {"GET", "/dashboard", NULL, co_dashboard_handle},
    {"GET", "/dashboard/{file}", NULL, co_dashboard_handle},
};

/* Per-request state, allocated on the first access-handler call and freed
 * only in the completion callback (libmicrohttpd may call the handler many
 * times per request, and not at all after an early error). */
struct http_ctx {
    const struct co_route *route;
    struct co_body body;
    bool overflow;        /* body passed --max-body: 413 once it ends */
    bool no_memory;       /* body allocation failed: 500 once it ends */
    bool answered;        /* a response is queued */
    size_t discarded;     /* bytes dropped after overflow */
    uint64_t start_us;
    unsigned status;
    char method[16];
    char path[128];
    struct co_route_params params;
};

const char *co_status_title(unsigned status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 428: return "Precondition Required";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

const char *co_request_header(const struct co_request *req, const char *name)
{
    return req->header != NULL ? req->header(req->conn, name) : NULL;
}

void co_response_clear(struct co_response *resp)
{
    free(resp->body);
    memset(resp, 0, sizeof *resp);
}

/* Give resp ownership of a malloc'd body (NULL/0 for none). */
void co_response_take(struct co_response *resp, unsigned status,
                      const char *content_type, uint8_t *body, size_t len)
{
    free(resp->body);
    resp->status = status;
    resp->content_type = content_type;
    resp->body = body;
    resp->body_len = len;
}

/* Copy len bytes into a new body. Returns 0, or CO_ENOMEM after turning
 * resp into a bodiless 500. */
int co_response_set(struct co_response *resp, unsigned status,
                    const char *content_type, const void *body, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);

    if (copy == NULL) {
        co_response_take(resp, 500, "text/plain", NULL, 0);
        return CO_ENOMEM;
    }
    memcpy(copy, body, len);
    co_response_take(resp, status, content_type, copy, len);
    return CO_OK;
}

/* Fill resp with an RFC 9457 problem: type about:blank, the status's
 * standard title, and detail (for the client: what to fix). Out of memory
 * leaves a correct status with an empty body. */
void co_response_problem(struct co_response *resp, unsigned status,
                         const char *detail)
{
    json_t *doc = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank",
                            "title", co_status_title(status),
                            "status", (int)status, "detail", detail);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    json_decref(doc);
    co_response_take(resp, status, "application/problem+json",
                     (uint8_t *)text, text ? strlen(text) : 0);
}

void co_response_unavailable(struct co_response *resp, const char *kind,
                             const char *detail)
{
    json_t *doc = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type",
                            "about:blank", "title", co_status_title(503),
                            "status", 503, "detail", detail, "kind", kind);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    json_decref(doc);
    co_response_take(resp, 503, "application/problem+json",
                     (uint8_t *)text, text ? strlen(text) : 0);
    resp->extra.name = "Retry-After";
    resp->extra.value = "1";
}

/* Does path match pattern segment by segment? A "{...}" segment matches
 * one non-empty segment, percent-decoded into params (when not NULL); one
 * that does not decode (a bad escape, a NUL, over CO_KEY_MAX bytes) does
 * not match, so it ends as a 404 like any path naming nothing. */
static bool path_match(const char *pattern, const char *path,
                       struct co_route_params *params)
{
    struct co_route_params scratch;
    unsigned n = 0;

    if (params == NULL)
        params = &scratch;
    while (*pattern == '/' && *path == '/') {
        const char *pe, *se;

        pattern++;
        path++;
        pe = strchrnul(pattern, '/');
        se = strchrnul(path, '/');
        if (*pattern == '{') {
            if (se == path || n == CO_ROUTE_PARAMS_MAX ||
                co_percent_decode(path, (size_t)(se - path), params->v[n],
                                  sizeof params->v[n]) != CO_OK)
                return false;
            n++;
        } else if (pe - pattern != se - path ||
                   memcmp(pattern, path, (size_t)(pe - pattern)) != 0) {
            return false;
        }
        pattern = pe;
        path = se;
    }
    params->n = n;
    return *pattern == '\0' && *path == '\0';
}

/* Find the route for (method, path). Returns 0 with *out set (and the
 * path's {param} values in params, when not NULL); CO_EMETHOD when the
 * path exists but not for this method, with allow holding the
 * comma-separated methods it does take (GET implies HEAD); CO_ENOTFOUND
 * otherwise. */
int co_route_match(const char *method, const char *path,
                   const struct co_route **out,
                   struct co_route_params *params, char *allow,
                   size_t allowlen)
{
    bool path_known = false;
    size_t n = 0;

    *out = NULL;
    if (allowlen > 0)
        allow[0] = '\0';
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct co_route *r = &routes[i];

        if (!path_match(r->path, path, NULL))
            continue;
        if (strcmp(r->method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0)) {
            *out = r;
            if (params != NULL)
                path_match(r->path, path, params);
            return CO_OK;
        }
        path_known = true;
        if (n < allowlen) {
            int w = snprintf(allow + n, allowlen - n, "%s%s%s",
                             n ? ", " : "", r->method,
                             strcmp(r->method, "GET") == 0 ? ", HEAD" : "");

            n += w > 0 ? (size_t)w : 0;
        }
    }
    return path_known ? CO_EMETHOD : CO_ENOTFOUND;
}

int co_route_lookup(const char *method, const char *path,
                    const struct co_route **out, char *allow, size_t allowlen)
{
    return co_route_match(method, path, out, NULL, allow, allowlen);
}

/* Does the Content-Type header name this media type (case-insensitive,
 * parameters such as charset ignored)? */
static bool media_type_is(const char *header, const char *want)
{
    size_t n = strlen(want);

    if (header == NULL)
        return false;
    while (*header == ' ' || *header == '\t')
        header++;
    if (strncasecmp(header, want, n) != 0)
        return false;
    header += n;
    while (*header == ' ' || *header == '\t')
        header++;
    return *header == '\0' || *header == ';';
}

/* Decide what can be decided before reading the body. Returns 0 with
 * *route set to read the body and run the handler, or CO_EINVAL with resp
 * holding the answer (414, 404, 405 + Allow, 400 bad Content-Length, 413
 * when Content-Length already exceeds max_body, 415). */
int co_http_precheck(const char *method, const char *url,
                     const char *content_type, const char *content_length,
                     size_t max_body, const struct co_route **route,
                     struct co_response *resp)
{
    char detail[160];
    int rc;

    *route = NULL;
    if (strlen(url) > CO_URL_MAX) {
        snprintf(detail, sizeof detail, "the URL is longer than %d bytes",
                 CO_URL_MAX);
        co_response_problem(resp, 414, detail);
        return CO_EINVAL;
    }
    rc = co_route_lookup(method, url, route, resp->allow, sizeof resp->allow);
    if (rc == CO_ENOTFOUND) {
        co_response_problem(resp, 404, "no such endpoint");
        return CO_EINVAL;
    }
    if (rc == CO_EMETHOD) {
        snprintf(detail, sizeof detail, "this endpoint takes %s",
                 resp->allow);
        co_response_problem(resp, 405, detail);
        return CO_EINVAL;
    }
    resp->allow[0] = '\0';
    if (content_length != NULL) {
        const char *p = content_length;
        unsigned long long v = 0;
        bool ok = *p != '\0';

        for (; *p != '\0' && ok; p++) {
            ok = *p >= '0' && *p <= '9' && v <= (~0ULL - 9) / 10;
            v = v * 10 + (unsigned)(*p - '0');
        }
        if (!ok) {
            co_response_problem(resp, 400, "invalid Content-Length");
            return CO_EINVAL;
        }
        if (v > max_body) {
            snprintf(detail, sizeof detail, "the body is larger than %zu "
                     "bytes", max_body);
            co_response_problem(resp, 413, detail);
            return CO_EINVAL;
        }
    }
    if ((*route)->content_type != NULL &&
        !media_type_is(content_type, (*route)->content_type)) {
        snprintf(detail, sizeof detail, "Content-Type must be %s",
                 (*route)->content_type);
        co_response_problem(resp, 415, detail);
        return CO_EINVAL;
    }
    return CO_OK;
}

/* Append len bytes, never letting the body pass max. Returns 0, CO_ETOOBIG
 * (nothing appended) or CO_ENOMEM. Growth doubles so a chunked body costs
 * O(n) copying. The caller frees with co_body_free(). */
int co_body_append(struct co_body *b, const void *data, size_t len,
                   size_t max)
{
    if (len > max || b->len > max - len)
        return CO_ETOOBIG;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        uint8_t *p;

        while (cap < b->len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        p = realloc(b->data, cap);
        if (p == NULL)
            return CO_ENOMEM;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return CO_OK;
}

void co_body_free(struct co_body *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

static const char *mhd_header(void *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind,
                               const char *key, const char *value)
{
    struct co_body *q = cls;
    size_t max = CO_URL_MAX;

    (void)kind;
    if ((q->len > 0 && co_body_append(q, "&", 1, max) != CO_OK) ||
        co_body_append(q, key, strlen(key), max) != CO_OK ||
        (value != NULL && (co_body_append(q, "=", 1, max) != CO_OK ||
                           co_body_append(q, value, strlen(value), max) !=
                           CO_OK)))
        return MHD_NO;
    return MHD_YES;
}

/* The query string as sent (libmicrohttpd splits it into arguments; with
 * unescaping turned off they are still raw, so joined again they are the
 * original but for '+', already a space). malloc'd (free()), or NULL. */
static char *raw_query(struct MHD_Connection *conn)
{
    struct co_body q = {0};

    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_arg, &q);
    if (q.len == 0 || co_body_append(&q, "", 1, CO_URL_MAX + 1) != CO_OK) {
        co_body_free(&q);
        return NULL;
    }
    return (char *)q.data;
}

/* Leave the URL as sent: the router splits the path at '/' before it
 * decodes a segment, so an encoded "%2F" in a rate-limit key stays part
 * of the key instead of splitting the path. */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return strlen(s);
}

/* Hand resp to libmicrohttpd (which frees the body with free()). */
static enum MHD_Result send_response(struct MHD_Connection *conn,
                                     struct http_ctx *ctx,
                                     struct co_response *resp)
{
    struct MHD_Response *r;
    enum MHD_Result ok;

    ctx->answered = true;
    ctx->status = resp->status;
    r = MHD_create_response_from_buffer(resp->body_len, resp->body,
                                        MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        co_response_clear(resp);
        return MHD_NO;
    }
    resp->body = NULL;
    if (resp->content_type != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                resp->content_type);
    if (resp->allow[0] != '\0')
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (resp->etag[0] != '\0')
        MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, resp->etag);
    if (resp->extra.name != NULL && resp->extra.value != NULL)
        MHD_add_response_header(r, resp->extra.name, resp->extra.value);
    for (const char *const *h = resp->headers; h != NULL && h[0] != NULL;
         h += 2)
        MHD_add_response_header(r, h[0], h[1]);
    if (atomic_load(&co_server.draining))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    ok = MHD_queue_response(conn, resp->status, r);
    MHD_destroy_response(r);
    co_response_clear(resp);
    return ok;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *upload,
                                 size_t *upload_size, void **req_cls)
{
    struct http_ctx *ctx = *req_cls;
    struct co_response resp = {0};

    (void)cls;
    (void)version;
    if (ctx == NULL) {
        ctx = calloc(1, sizeof *ctx);
        if (ctx == NULL)
            return MHD_NO;
        *req_cls = ctx;
        atomic_fetch_add(&co_server.inflight, 1);
        ctx->start_us = co_mono_us();
        snprintf(ctx->method, sizeof ctx->method, "%s", method);
        snprintf(ctx->path, sizeof ctx->path, "%s", url);
        if (co_http_precheck(method, url, mhd_header(conn, "Content-Type"),
                             mhd_header(conn, "Content-Length"),
                             co_server.max_body, &ctx->route,
                             &resp) != CO_OK)
            return send_response(conn, ctx, &resp);
        co_route_match(method, url, &ctx->route, &ctx->params, resp.allow,
                       sizeof resp.allow);
        resp.allow[0] = '\0';
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;

        *upload_size = 0;
        if (ctx->answered)
            return MHD_YES;
        if (!ctx->overflow && !ctx->no_memory) {
            int rc = co_body_append(&ctx->body, upload, n,
                                    co_server.max_body);

            if (rc == CO_OK)
                return MHD_YES;
            ctx->overflow = rc == CO_ETOOBIG;
            ctx->no_memory = rc == CO_ENOMEM;
            co_body_free(&ctx->body);
        }
        /* A chunked body without Content-Length can only be judged while it
         * streams: drop the rest and answer 413 at its end, but hang up
         * rather than swallow an endless stream. */
        ctx->discarded += n;
        return ctx->discarded > DISCARD_MAX(co_server.max_body) ? MHD_NO
                                                                : MHD_YES;
    }
    if (ctx->answered)
        return MHD_YES;
    if (ctx->overflow) {
        char detail[96];

        snprintf(detail, sizeof detail, "the body is larger than %zu bytes",
                 co_server.max_body);
        co_response_problem(&resp, 413, detail);
    } else if (ctx->no_memory) {
        char path[160];

        CO_ERROR("msg=body_alloc_failed path=%s",
                 co_log_value(path, sizeof path, ctx->path,
                              strlen(ctx->path)));
        co_response_problem(&resp, 500, "out of memory");
    } else {
        char *query = raw_query(conn);
        struct co_request req = {
            .method = method,
            .path = url,
            .query = query,
            .params = &ctx->params,
            .content_type = mhd_header(conn, "Content-Type"),
            .body = ctx->body.data,
            .body_len = ctx->body.len,
            .header = mhd_header,
            .conn = conn,
        };

        ctx->route->handler(&req, &resp);
        free(query);
    }
    return send_response(conn, ctx, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **req_cls, enum MHD_RequestTerminationCode code)
{
    struct http_ctx *ctx = *req_cls;
    char path[160];

    (void)cls;
    (void)conn;
    if (ctx == NULL)
        return;
    CO_DEBUG("msg=request method=%s path=%s status=%u dur_ms=%.2f%s",
             ctx->method, co_log_value(path, sizeof path, ctx->path,
                                       strlen(ctx->path)),
             ctx->status, (double)(co_mono_us() - ctx->start_us) / 1000.0,
             code == MHD_REQUEST_TERMINATED_COMPLETED_OK ? ""
             : " terminated=abnormal");
    co_body_free(&ctx->body);
    free(ctx);
    *req_cls = NULL;
    atomic_fetch_sub(&co_server.inflight, 1);
}

static void on_mhd_log(void *cls, const char *fm, va_list ap)
{
    char text[512], v[600];
    int n;

    (void)cls;
    n = vsnprintf(text, sizeof text, fm, ap);
    if (n < 0)
        return;
    n = (int)strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';
    CO_WARN("msg=mhd detail=%s", co_log_value(v, sizeof v, text, (size_t)n));
}

/* Resolve "host:port" / "[v6]:port" to one socket address. */
static int resolve_listen(const char *listen, struct sockaddr_storage *ss,
                          socklen_t *sslen, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(listen, ':'), *h = listen;
    size_t hlen;
    struct addrinfo hints = {0}, *res = NULL;
    int gai;

    if (colon == NULL) {
        snprintf(err, errlen, "listen address must be host:port");
        return CO_EINVAL;
    }
    hlen = (size_t)(colon - listen);
    if (hlen >= 2 && listen[0] == '[' && listen[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof host) {
        snprintf(err, errlen, "listen address must be host:port");
        return CO_EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    gai = getaddrinfo(host, colon + 1, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "listen address %s: %s", listen,
                 gai_strerror(gai));
        return CO_EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    return CO_OK;
}

/* Start the daemon on listen with threads workers. On success *out is the
 * running daemon (stop it with co_http_drain_and_stop()) and addr the
 * address actually bound, with the real port when the port was 0. */
int co_http_start(const char *listen, unsigned threads,
                  struct MHD_Daemon **out, char *addr, size_t addrlen,
                  char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    char host[INET6_ADDRSTRLEN];
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;

    *out = NULL;
    if (resolve_listen(listen, &ss, &sslen, err, errlen) != CO_OK)
        return CO_EINVAL;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, NULL,
                         MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                         MHD_OPTION_THREAD_POOL_SIZE, threads,
                         MHD_OPTION_CONNECTION_LIMIT, CONNECTION_LIMIT,
                         MHD_OPTION_CONNECTION_TIMEOUT, CONNECTION_TIMEOUT_S,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                         (size_t)CONNECTION_MEMORY,
                         MHD_OPTION_LISTEN_BACKLOG_SIZE, LISTEN_BACKLOG,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                         MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL,
                         MHD_OPTION_END);
    if (d == NULL) {
        snprintf(err, errlen, "cannot serve on %s (address in use or not "
                 "local?)", listen);
        return CO_EIO;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host,
                  sizeof host);
        snprintf(addr, addrlen, "[%s]:%u", host, info ? info->port : 0u);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host,
                  sizeof host);
        snprintf(addr, addrlen, "%s:%u", host, info ? info->port : 0u);
    }
    *out = d;
    return CO_OK;
}

/* Graceful stop: refuse new connections, let in-flight requests finish
 * (keep-alive clients are told "Connection: close"), wait at most
 * timeout_ms for them, then stop the workers. Idle keep-alive connections
 * carry no request, so they do not hold the drain up: MHD_stop_daemon()
 * closes them, as any HTTP client expects of an idle connection. */
void co_http_drain_and_stop(struct MHD_Daemon *d, unsigned timeout_ms)
{
    MHD_socket lfd;
    uint64_t deadline = co_mono_ms() + timeout_ms;
    unsigned left;

    atomic_store(&co_server.draining, true);
    lfd = MHD_quiesce_daemon(d);
    for (;;) {
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};

        left = atomic_load(&co_server.inflight);
        if (left == 0 || co_mono_ms() >= deadline)
            break;
        nanosleep(&pause, NULL);
    }
    if (left > 0)
        CO_WARN("msg=drain_timeout requests=%u", left);
    MHD_stop_daemon(d);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
}
