/* http.c — the HTTP front: libmicrohttpd daemon, route table, request
 * bodies, and responses.
 *
 * Endpoint handlers never see libmicrohttpd. This file reads a request to
 * the end (raw bytes, no PostProcessor, capped at --max-body), turns it into
 * a struct co_request, calls the route's handler and sends back the struct
 * co_response it filled. Everything decidable from the request line and
 * headers (404, 405, 413 by Content-Length, 414, 415, and the framing
 * rules of RFC 9112: Host on HTTP/1.1, one Content-Length) is answered
 * before a single body byte is read. Errors are RFC 9457 problem details.
 *
 * Connections (the connection guard below): at most --max-connections in
 * all and --max-conns-per-ip from one client address (libmicrohttpd closes
 * the ones over either cap at accept), each request's head and body due
 * within --request-timeout-ms (libmicrohttpd's own timeout only counts
 * idle time, which a client sending a byte a second never reaches), and a
 * TLS ClientHello on this plain-HTTP port closed at accept (with
 * --tls-cert the port is HTTPS, and plain HTTP gets a 400: tls.c).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
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

/* Idle time a connection may sit without a byte either way (keep-alive
 * between requests included); the deadline for a whole request is
 * --request-timeout-ms. */
#define CONNECTION_TIMEOUT_S 15u
#define CONNECTION_MEMORY   (64u * 1024u)   /* headers + URL + read buffer */
#define LISTEN_BACKLOG      1024u
/* Bytes of an over-long chunked body read (and dropped) before hanging up
 * instead of answering 413. */
#define DISCARD_MAX(max) ((max) > (1u << 20) ? (max) : (1u << 20))
/* How often the reaper looks for connections past their deadline. */
#define REAPER_TICK_MS      100u
/* The first byte of a TLS record carrying a handshake (a ClientHello):
 * no HTTP method starts with it. */
#define TLS_HANDSHAKE_BYTE  0x16
/* Seconds the kernel holds a new connection until its first bytes arrive
 * (TCP_DEFER_ACCEPT), so the accept can look at them. */
#define DEFER_ACCEPT_S      1
/* At most one log line per this many ms per reason for closing. */
#define CLOSE_LOG_MS        10000u

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

/* Per-request state, allocated when the request line is in (the URI log
 * callback, on_uri) and freed only in the completion callback
 * (libmicrohttpd may call the handler many times per request, and not at
 * all after an early error). */
struct conn_rec;

struct http_ctx {
    const struct co_route *route;
    struct conn_rec *conn;    /* the connection guard's record, or NULL */
    size_t target_len;        /* bytes of the request target as sent */
    char *query;              /* the query as sent (malloc'd), or NULL */
    bool started;             /* the access handler has seen the head */
    bool close;               /* answer with Connection: close */
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
 * standard title, and detail (for the client: what to fix). A detail
 * that is not UTF-8 (it may quote the client's bytes, cut anywhere) goes
 * out with '?' for every byte over 0x7f rather than not at all. Out of
 * memory leaves a correct status with an empty body. */
void co_response_problem(struct co_response *resp, unsigned status,
                         const char *detail)
{
    co_response_problem_with(resp, status, detail, NULL);
}

/* RFC 9457: extension members sit beside the standard ones; the standard
 * ones win a name clash. Out of memory leaves an empty body with the
 * status, as co_response_problem always did. */
void co_response_problem_with(struct co_response *resp, unsigned status,
                              const char *detail, struct json_t *members)
{
    json_t *doc = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank",
                            "title", co_status_title(status),
                            "status", (int)status, "detail", detail);
    char *text;

    if (doc == NULL) {
        char ascii[512];
        size_t i;

        for (i = 0; detail[i] != '\0' && i < sizeof ascii - 1; i++)
            ascii[i] = (unsigned char)detail[i] > 0x7f ? '?' : detail[i];
        ascii[i] = '\0';
        doc = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank",
                        "title", co_status_title(status), "status",
                        (int)status, "detail", ascii);
    }
    if (doc != NULL && members != NULL)
        json_object_update_missing(doc, members);
    json_decref(members);
    text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

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
 * holding the answer (414, 400 for a NUL byte escaped in the path, 404,
 * 405 + Allow, 400 bad Content-Length, 413 when Content-Length already
 * exceeds max_body, 415). The path is as sent (still escaped): a "%00"
 * would decode to a NUL that every C string after it (a quota name, a
 * rate-limit key) would cut short, so it is refused rather than matched. */
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
    if (strstr(url, "%00") != NULL) {
        co_response_problem(resp, 400, "the path holds a NUL byte (%00)");
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

/* Leave the URL as sent: the router splits the path at '/' before it
 * decodes a segment, so an encoded "%2F" in a rate-limit key stays part
 * of the key instead of splitting the path. */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return strlen(s);
}

/* ------------------------------------------------------------ connection guard
 * One record per open connection, made when libmicrohttpd accepts it
 * (NOTIFY_CONNECTION STARTED) and dropped when it closes it (CLOSED): when
 * its current request began (the accept, or the end of the previous
 * response on a keep-alive connection) and whether that request is still
 * being received. A reaper thread shuts down (shutdown(2): libmicrohttpd
 * then reads the end of the stream and closes the connection itself, so it
 * stays the only owner of the socket) every connection whose request head
 * and body are not all in after --request-timeout-ms. libmicrohttpd calls
 * CLOSED before it closes the socket and the callback takes the guard's
 * lock, so the reaper never shuts down a descriptor number already reused
 * by a newer connection. A request being handled or answered is never cut:
 * the deadline covers what the client sends, not what we do. */
enum conn_phase {
    CONN_RECEIVING,     /* waiting for the head or body of a request */
    CONN_HANDLING,      /* all in: handler running or response going out */
    CONN_REAPED,        /* past its deadline, shut down */
};

struct conn_rec {
    MHD_socket fd;
    atomic_ullong since_ms;     /* co_mono_ms() the current request began */
    atomic_int phase;           /* enum conn_phase */
    struct conn_rec *prev, *next;
};

static struct {
    pthread_mutex_t lock;       /* guards the list, not the atomics */
    struct conn_rec *head;
    pthread_t reaper;
    bool running;               /* one daemon per process */
    atomic_bool stop;
    unsigned timeout_ms;        /* --request-timeout-ms */
} guard = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Connections closed for one reason: counted for /metrics (a co_server
 * counter) and logged one line per CLOSE_LOG_MS at most, with how many
 * since the last line, so a flood of connections is not a flood of log
 * lines (what follows the last line shows in the counter, and in the
 * next line if any). */
struct close_log {
    const char *msg, *detail;
    atomic_ullong *counter;
    atomic_ullong logged_ms;            /* last line */
    atomic_ullong at_log;               /* counter at the last line */
};

static struct close_log closed_limit = {
    "connections_refused", "over --max-connections or --max-conns-per-ip",
    &co_server.http_closed_limit, 0, 0};
static struct close_log closed_deadline = {
    "request_deadline_missed", "a request's head and body not in within "
    "--request-timeout-ms", &co_server.http_closed_deadline, 0, 0};
static struct close_log closed_tls = {
    "tls_on_plain_port", "a TLS handshake sent to the plain-HTTP port",
    &co_server.http_closed_tls, 0, 0};

static void note_closed(struct close_log *l)
{
    unsigned long long now = co_mono_ms(), last = atomic_load(&l->logged_ms);
    unsigned long long total = atomic_fetch_add(l->counter, 1) + 1;

    if ((last != 0 && now - last < CLOSE_LOG_MS) ||
        !atomic_compare_exchange_strong(&l->logged_ms, &last, now))
        return;
    CO_WARN("msg=%s count=%llu detail=\"%s\"", l->msg,
            total - atomic_exchange(&l->at_log, total), l->detail);
}

/* Does the connection open with a TLS handshake record? Peeks at what has
 * arrived (TCP_DEFER_ACCEPT makes that the first bytes for every client
 * that speaks first, as HTTP and TLS clients do) without consuming it. */
static bool tls_hello(MHD_socket fd)
{
    unsigned char b;

    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1 &&
           b == TLS_HANDSHAKE_BYTE;
}

static void on_connection(void *cls, struct MHD_Connection *conn,
                          void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct conn_rec *rec = *socket_ctx;
    const union MHD_ConnectionInfo *ci;

    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        atomic_fetch_sub(&co_server.http_connections, 1);
        if (rec == NULL)
            return;
        pthread_mutex_lock(&guard.lock);
        if (rec->prev != NULL)
            rec->prev->next = rec->next;
        else
            guard.head = rec->next;
        if (rec->next != NULL)
            rec->next->prev = rec->prev;
        pthread_mutex_unlock(&guard.lock);
        free(rec);
        *socket_ctx = NULL;
        return;
    }
    atomic_fetch_add(&co_server.http_connections, 1);
    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL)
        return;
    if (co_tls_enabled()) {
        /* HTTPS port: plain HTTP gets its 400 and a close (tls.c). */
        if (co_tls_refuse_plain_http(ci->connect_fd))
            return;
    } else if (tls_hello(ci->connect_fd)) {
        /* A TLS client sent to the plain port: it waits for a ServerHello
         * that never comes, holding the slot; close now. */
        note_closed(&closed_tls);
        shutdown(ci->connect_fd, SHUT_RDWR);
        return;
    }
    rec = calloc(1, sizeof *rec);
    if (rec == NULL)
        return;   /* untracked: only the idle timeout applies to it */
    rec->fd = ci->connect_fd;
    atomic_store(&rec->since_ms, co_mono_ms());
    atomic_store(&rec->phase, CONN_RECEIVING);
    pthread_mutex_lock(&guard.lock);
    rec->next = guard.head;
    if (guard.head != NULL)
        guard.head->prev = rec;
    guard.head = rec;
    pthread_mutex_unlock(&guard.lock);
    *socket_ctx = rec;
}

/* Shut down every connection past its deadline, every REAPER_TICK_MS. */
static void *reaper_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&guard.stop)) {
        struct timespec tick = {.tv_sec = 0,
                                .tv_nsec = REAPER_TICK_MS * 1000000L};
        uint64_t now;

        nanosleep(&tick, NULL);
        pthread_mutex_lock(&guard.lock);
        now = co_mono_ms();
        for (struct conn_rec *r = guard.head; r != NULL; r = r->next) {
            uint64_t since = atomic_load(&r->since_ms);
            int receiving = CONN_RECEIVING;

            /* since may be a little after now: a worker set it meanwhile */
            if (since > now || now - since < guard.timeout_ms ||
                !atomic_compare_exchange_strong(&r->phase, &receiving,
                                                CONN_REAPED))
                continue;
            note_closed(&closed_deadline);
            shutdown(r->fd, SHUT_RDWR);
        }
        pthread_mutex_unlock(&guard.lock);
    }
    return NULL;
}

static void conn_phase(struct conn_rec *rec, enum conn_phase phase)
{
    if (rec == NULL)
        return;
    if (phase == CONN_RECEIVING)
        atomic_store(&rec->since_ms, co_mono_ms());
    atomic_store(&rec->phase, phase);
}

/* ------------------------------------------------------------ requests */

/* Hand resp to libmicrohttpd (which frees the body with free()). */
static enum MHD_Result send_response(struct MHD_Connection *conn,
                                     struct http_ctx *ctx,
                                     struct co_response *resp)
{
    struct MHD_Response *r;
    enum MHD_Result ok;

    ctx->answered = true;
    ctx->status = resp->status;
    conn_phase(ctx->conn, CONN_HANDLING);
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
    if (ctx->close || atomic_load(&co_server.draining))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    ok = MHD_queue_response(conn, resp->status, r);
    MHD_destroy_response(r);
    co_response_clear(resp);
    return ok;
}

/* Called with the request target exactly as sent, before libmicrohttpd
 * splits off the query: the per-request state starts here, so the URL cap
 * can cover path and query and the handler gets the query unaltered. The
 * return value becomes *req_cls (NULL when out of memory: on_access then
 * hangs up). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_ctx *ctx = calloc(1, sizeof *ctx);
    const char *q;

    (void)cls;
    (void)conn;
    if (ctx == NULL)
        return NULL;
    ctx->target_len = strlen(uri);
    q = strchr(uri, '?');
    if (q != NULL && q[1] != '\0' && ctx->target_len <= CO_URL_MAX) {
        ctx->query = strdup(q + 1);
        ctx->no_memory = ctx->query == NULL;
    }
    return ctx;
}

struct framing {
    unsigned hosts;             /* Host field lines */
    unsigned lengths;           /* Content-Length field lines */
    bool lengths_differ;
    bool chunked;               /* Transfer-Encoding present */
    const char *length;         /* the first Content-Length */
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind,
                                     const char *key, const char *value)
{
    struct framing *f = cls;

    (void)kind;
    if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        f->hosts++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->chunked = true;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->lengths++ == 0)
            f->length = value;
        else if (value == NULL || f->length == NULL ||
                 strcmp(value, f->length) != 0)
            f->lengths_differ = true;
    }
    return MHD_YES;
}

/* RFC 9112's rules on the request head that libmicrohttpd leaves to us:
 * the request target (path and query) within CO_URL_MAX (414); an
 * HTTP/1.1 request has exactly one Host (section 3.2, 400); the body's
 * length is not ambiguous (section 6.3: two different Content-Length
 * values, or Content-Length beside Transfer-Encoding, are how requests are
 * smuggled past a proxy, 400). Returns 0, or CO_EINVAL with resp filled;
 * a framing error also closes the connection, as the body's end is not
 * known. */
static int head_check(struct MHD_Connection *conn, struct http_ctx *ctx,
                      const char *version, struct co_response *resp)
{
    struct framing f = {0};
    char detail[96];

    if (ctx->target_len > CO_URL_MAX) {
        snprintf(detail, sizeof detail, "the request target (path and "
                 "query) is longer than %d bytes", CO_URL_MAX);
        co_response_problem(resp, 414, detail);
        return CO_EINVAL;
    }
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, &f);
    ctx->close = true;
    if (strcmp(version, MHD_HTTP_VERSION_1_0) != 0 && f.hosts != 1) {
        co_response_problem(resp, 400, f.hosts == 0
                            ? "HTTP/1.1 requires a Host header"
                            : "more than one Host header");
        return CO_EINVAL;
    }
    if (f.lengths_differ) {
        co_response_problem(resp, 400, "conflicting Content-Length headers");
        return CO_EINVAL;
    }
    if (f.lengths > 0 && f.chunked) {
        co_response_problem(resp, 400, "both Content-Length and "
                            "Transfer-Encoding");
        return CO_EINVAL;
    }
    ctx->close = false;
    return CO_OK;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *upload,
                                 size_t *upload_size, void **req_cls)
{
    struct http_ctx *ctx = *req_cls;
    struct co_response resp = {0};

    (void)cls;
    if (ctx == NULL)
        return MHD_NO;
    if (!ctx->started) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

        ctx->started = true;
        ctx->conn = ci != NULL ? ci->socket_context : NULL;
        atomic_fetch_add(&co_server.inflight, 1);
        ctx->start_us = co_mono_us();
        snprintf(ctx->method, sizeof ctx->method, "%s", method);
        snprintf(ctx->path, sizeof ctx->path, "%s", url);
        if (head_check(conn, ctx, version, &resp) != CO_OK ||
            co_http_precheck(method, url, mhd_header(conn, "Content-Type"),
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
    conn_phase(ctx->conn, CONN_HANDLING);
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
        struct co_request req = {
            .method = method,
            .path = url,
            .query = ctx->query,
            .params = &ctx->params,
            .content_type = mhd_header(conn, "Content-Type"),
            .body = ctx->body.data,
            .body_len = ctx->body.len,
            .header = mhd_header,
            .conn = conn,
        };

        ctx->route->handler(&req, &resp);
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
    if (ctx->started) {
        CO_DEBUG("msg=request method=%s path=%s status=%u dur_ms=%.2f%s",
                 ctx->method, co_log_value(path, sizeof path, ctx->path,
                                           strlen(ctx->path)),
                 ctx->status,
                 (double)(co_mono_us() - ctx->start_us) / 1000.0,
                 code == MHD_REQUEST_TERMINATED_COMPLETED_OK ? ""
                 : " terminated=abnormal");
        atomic_fetch_sub(&co_server.inflight, 1);
    }
    /* The next request on this connection starts its clock now (a
     * reaped connection stays reaped). */
    if (ctx->conn != NULL && atomic_load(&ctx->conn->phase) == CONN_HANDLING)
        conn_phase(ctx->conn, CONN_RECEIVING);
    co_body_free(&ctx->body);
    free(ctx->query);
    free(ctx);
    *req_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fm, va_list ap)
{
    char text[512], v[600];
    int n;

    (void)cls;
    n = vsnprintf(text, sizeof text, fm, ap);
    if (n < 0)
        return;
    /* libmicrohttpd's word for a connection over either cap, once per
     * connection */
    if (strncmp(text, "Server reached connection limit", 31) == 0) {
        note_closed(&closed_limit);
        return;
    }
    n = (int)strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';
    /* A client hanging up mid-request, or a connection the guard shut
     * down, is the client's doing and comes once per connection: debug. */
    CO_LOG(strncmp(text, "Connection socket is closed", 27) == 0
           ? CO_LOG_DEBUG : CO_LOG_WARN, "msg=mhd detail=%s",
           co_log_value(v, sizeof v, text, (size_t)n));
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

/* Start the daemon on listen with threads workers and the connection
 * limits in lim (one daemon per process: the connection guard is global).
 * On success *out is the running daemon (stop it with
 * co_http_drain_and_stop()) and addr the address actually bound, with the
 * real port when the port was 0. */
int co_http_start(const char *listen, unsigned threads,
                  const struct co_http_limits *lim, struct MHD_Daemon **out,
                  char *addr, size_t addrlen, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    char host[INET6_ADDRSTRLEN];
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    const struct MHD_OptionItem *tls_options;
    int defer = DEFER_ACCEPT_S;

    *out = NULL;
    if (guard.running) {
        snprintf(err, errlen, "an HTTP server already runs in this process");
        return CO_EINVAL;
    }
    if (resolve_listen(listen, &ss, &sslen, err, errlen) != CO_OK)
        return CO_EINVAL;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    tls_options = co_tls_mhd_options(&flags);   /* HTTPS: tls.c */
    guard.timeout_ms = lim->request_timeout_ms;
    atomic_store(&guard.stop, false);
    atomic_store(&co_server.draining, false);
    d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, NULL,
                         MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                         MHD_OPTION_THREAD_POOL_SIZE, threads,
                         MHD_OPTION_CONNECTION_LIMIT, lim->max_conns,
                         MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                         lim->max_conns_per_ip,
                         MHD_OPTION_CONNECTION_TIMEOUT, CONNECTION_TIMEOUT_S,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                         (size_t)CONNECTION_MEMORY,
                         MHD_OPTION_LISTEN_BACKLOG_SIZE, LISTEN_BACKLOG,
                         MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
                         MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                         MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL,
                         MHD_OPTION_ARRAY, tls_options,
                         MHD_OPTION_END);
    if (d == NULL) {
        snprintf(err, errlen, "cannot serve on %s (address in use or not "
                 "local?)", listen);
        return CO_EIO;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
    if (info == NULL ||
        setsockopt(info->listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer,
                   sizeof defer) != 0)
        CO_WARN("msg=defer_accept_unavailable detail=\"a TLS hello on the "
                "plain port is closed at its deadline, not at once\"");
    if (pthread_create(&guard.reaper, NULL, reaper_main, NULL) != 0) {
        MHD_stop_daemon(d);
        snprintf(err, errlen, "cannot start the connection reaper thread");
        return CO_EIO;
    }
    guard.running = true;
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
    if (guard.running) {
        atomic_store(&guard.stop, true);
        pthread_join(guard.reaper, NULL);
        guard.running = false;
    }
    MHD_stop_daemon(d);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
}
