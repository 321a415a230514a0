/* redis.c — Redis connections, the sync script, and the key layout.
 *
 * hiredis contexts are not thread-safe, so every HTTP worker thread owns one
 * blocking connection, created on first use. Connect and command timeouts
 * (--redis-timeout-ms) bound every call, so a dead or black-holed Redis
 * costs a request at most one timeout and never hangs a worker. After an
 * I/O error the context is dropped; the next request may reconnect at once,
 * and failed connects back off per thread from 100 ms doubling to 5 s, so a
 * Redis outage never turns into a reconnect storm.
 *
 * The sync script is embedded (coordinator/sync.lua), its SHA1 computed
 * locally, loaded with SCRIPT LOAD at start when Redis is up, and called with
 * EVALSHA; a NOSCRIPT answer (Redis restarted, flushed, failed over) loads it
 * on that connection and retries once.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis.h>
#include <openssl/evp.h>

#include "tollgated.h"

#define BACKOFF_FIRST_MS 100u
#define BACKOFF_MAX_MS   5000u

struct conn {
    redisContext *ctx;
    uint64_t next_try_ms;    /* monotonic; no connect attempt before */
    unsigned backoff_ms;     /* 0 after a success */
    bool down;               /* last attempt failed (log transitions only) */
};

static struct co_redis_target target;
static char script_sha[41];
static pthread_key_t conn_key;
static pthread_once_t conn_key_once = PTHREAD_ONCE_INIT;
static int conn_key_rc;
static _Thread_local struct conn *tl;

static void conn_destroy(void *p)
{
    struct conn *c = p;

    if (c->ctx != NULL)
        redisFree(c->ctx);
    free(c);
}

static void conn_key_create(void)
{
    conn_key_rc = pthread_key_create(&conn_key, conn_destroy);
}

/* This thread's connection slot, allocated once per thread and freed by the
 * key destructor when the thread exits. NULL only when out of memory. */
static struct conn *thread_slot(void)
{
    if (tl != NULL)
        return tl;
    pthread_once(&conn_key_once, conn_key_create);
    if (conn_key_rc != 0)
        return NULL;
    tl = calloc(1, sizeof *tl);
    if (tl == NULL)
        return NULL;
    if (pthread_setspecific(conn_key, tl) != 0) {
        free(tl);
        tl = NULL;
    }
    return tl;
}

/* Decode %XX escapes of s[0..len) into out (NUL-terminated); refuses a
 * truncated escape, a decoded NUL and anything longer than outlen - 1. */
static int percent_decode(const char *s, size_t len, char *out,
                          size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (c == '%') {
            int hi, lo;

            if (i + 2 >= len)
                return CO_EINVAL;
            hi = co_hex_digit(s[i + 1]);
            lo = co_hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0)
                return CO_EINVAL;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= outlen || c == '\0')
            return CO_EINVAL;
        out[o++] = c;
    }
    out[o] = '\0';
    return CO_OK;
}

/* hiredis reports a socket timeout as EAGAIN's text; say what it means. */
static const char *io_error(const redisContext *c, unsigned timeout_ms,
                            char *buf, size_t len)
{
    if (c->errstr[0] == '\0')
        return "no reply";
    if (c->err == REDIS_ERR_IO &&
        strstr(c->errstr, "temporarily unavailable") != NULL) {
        snprintf(buf, len, "timed out after %u ms", timeout_ms);
        return buf;
    }
    return c->errstr;
}

static struct timeval ms_to_tv(unsigned ms)
{
    struct timeval tv = {
        .tv_sec = ms / 1000,
        .tv_usec = (suseconds_t)(ms % 1000) * 1000,
    };

    return tv;
}

/* Redis runs sync.lua at roughly 10 us per item (8 arguments). A read
 * timeout shorter than that would give up on a big batch that Redis then
 * applies anyway, and the edge's resend would count it twice. So one sync
 * call may wait ~3 us more per argument (a 10000-item batch: +266 ms);
 * connects and every other command keep --redis-timeout-ms. */
static unsigned sync_timeout_ms(size_t argc)
{
    return target.timeout_ms + (unsigned)(argc / 300);
}

/* Parse redis://[[user]:password@]host[:port][/db] into t. The host may be
 * a name, an IPv4 literal or a bracketed IPv6 literal; user and password
 * may be percent-encoded. TLS (rediss://) and unix sockets are refused with
 * a message rather than misread. Returns 0 or CO_EINVAL with err. */
int co_redis_parse_url(const char *url, unsigned timeout_ms,
                       struct co_redis_target *t, char *err, size_t errlen)
{
    const char *p, *auth_end, *at = NULL, *host, *host_end, *port = NULL;
    size_t hlen;

    memset(t, 0, sizeof *t);
    t->port = 6379;
    t->timeout_ms = timeout_ms;
    if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(err, errlen, "TLS (rediss://) is not supported");
        return CO_EINVAL;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "must start with redis://");
        return CO_EINVAL;
    }
    p = url + 8;
    auth_end = p + strcspn(p, "/?#");
    if (*auth_end == '?' || *auth_end == '#') {
        snprintf(err, errlen, "query and fragment are not supported");
        return CO_EINVAL;
    }
    for (const char *q = p; q < auth_end; q++)
        if (*q == '@')
            at = q;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));

        if (colon == NULL) {
            snprintf(err, errlen, "credentials must be [user]:password@");
            return CO_EINVAL;
        }
        if (percent_decode(p, (size_t)(colon - p), t->user,
                           sizeof t->user) != CO_OK ||
            percent_decode(colon + 1, (size_t)(at - colon - 1), t->password,
                           sizeof t->password) != CO_OK) {
            snprintf(err, errlen, "bad user or password encoding");
            return CO_EINVAL;
        }
        host = at + 1;
    } else {
        host = p;
    }
    if (*host == '[') {
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (host_end == NULL) {
            snprintf(err, errlen, "unterminated [IPv6] host");
            return CO_EINVAL;
        }
        host++;
        if (host_end + 1 < auth_end) {
            if (host_end[1] != ':') {
                snprintf(err, errlen, "junk after [IPv6] host");
                return CO_EINVAL;
            }
            port = host_end + 2;
        }
    } else {
        host_end = memchr(host, ':', (size_t)(auth_end - host));
        if (host_end != NULL)
            port = host_end + 1;
        else
            host_end = auth_end;
    }
    hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen >= sizeof t->host) {
        snprintf(err, errlen, "missing or overlong host");
        return CO_EINVAL;
    }
    memcpy(t->host, host, hlen);
    if (port != NULL) {
        long v = 0;

        if (port == auth_end) {
            snprintf(err, errlen, "empty port");
            return CO_EINVAL;
        }
        for (const char *q = port; q < auth_end; q++) {
            if (*q < '0' || *q > '9' || v > 65535) {
                snprintf(err, errlen, "port must be 1..65535");
                return CO_EINVAL;
            }
            v = v * 10 + (*q - '0');
        }
        if (v < 1 || v > 65535) {
            snprintf(err, errlen, "port must be 1..65535");
            return CO_EINVAL;
        }
        t->port = (int)v;
    }
    if (*auth_end == '/' && auth_end[1] != '\0') {
        long v = 0;

        for (const char *q = auth_end + 1; *q != '\0'; q++) {
            if (*q < '0' || *q > '9' || v > 100000) {
                snprintf(err, errlen, "database must be a number");
                return CO_EINVAL;
            }
            v = v * 10 + (*q - '0');
        }
        t->db = (int)v;
    }
    return CO_OK;
}

/* Run one command that must not fail on a fresh connection (AUTH, SELECT,
 * SCRIPT LOAD). Returns the reply (caller frees with freeReplyObject) or
 * NULL with err; an error reply is freed and reported as NULL too. */
static redisReply *setup_command(redisContext *c, int argc, const char **argv,
                                 char *err, size_t errlen)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);

    if (r == NULL) {
        char why[64];

        snprintf(err, errlen, "%s: %s", argv[0],
                 io_error(c, target.timeout_ms, why, sizeof why));
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Load the script on c and check Redis computed the SHA we call it by.
 * Returns 0, CO_EREDIS (I/O: c is now unusable) or CO_EREPLY. */
static int load_script(redisContext *c, char *err, size_t errlen)
{
    const char *argv[] = {"SCRIPT", "LOAD", co_sync_lua};
    size_t lens[] = {6, 4, co_sync_lua_len};
    redisReply *r = redisCommandArgv(c, 3, argv, lens);
    int rc = CO_OK;

    if (r == NULL) {
        char why[64];

        snprintf(err, errlen, "SCRIPT LOAD: %s",
                 io_error(c, target.timeout_ms, why, sizeof why));
        return CO_EREDIS;
    }
    if (r->type != REDIS_REPLY_STRING || r->len != 40 ||
        memcmp(r->str, script_sha, 40) != 0) {
        snprintf(err, errlen, "SCRIPT LOAD: unexpected reply %.80s",
                 r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_ERROR
                     ? r->str : "(not a string)");
        CO_ERROR("msg=redis_script_load_failed detail=\"unexpected reply\"");
        rc = CO_EREPLY;
    }
    freeReplyObject(r);
    return rc;
}

/* Open, time-bound, authenticate and select. Returns a ready context (the
 * caller frees it with redisFree) or NULL with err. */
static redisContext *connect_new(char *err, size_t errlen)
{
    struct timeval tv = ms_to_tv(target.timeout_ms);
    redisContext *c = redisConnectWithTimeout(target.host, target.port, tv);
    redisReply *r;
    char db[16];

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(err, errlen, "connect: %s", c->errstr);
        goto fail;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(err, errlen, "set timeout: %s", c->errstr);
        goto fail;
    }
    redisEnableKeepAlive(c);
    if (target.password[0] != '\0') {
        const char *a2[] = {"AUTH", target.password};
        const char *a3[] = {"AUTH", target.user, target.password};

        r = target.user[0] ? setup_command(c, 3, a3, err, errlen)
                           : setup_command(c, 2, a2, err, errlen);
        if (r == NULL)
            goto fail;
        freeReplyObject(r);
    }
    if (target.db > 0) {
        const char *a[] = {"SELECT", db};

        snprintf(db, sizeof db, "%d", target.db);
        r = setup_command(c, 2, a, err, errlen);
        if (r == NULL)
            goto fail;
        freeReplyObject(r);
    }
    return c;
fail:
    redisFree(c);
    return NULL;
}

/* This thread's live context, connecting if allowed by the backoff. NULL
 * with err when Redis is unreachable; that is an outage, not a bug, and is
 * logged once per transition per thread. */
static redisContext *thread_conn(char *err, size_t errlen)
{
    struct conn *s = thread_slot();
    uint64_t now;
    char why[256], v[300];

    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (s->ctx != NULL)
        return s->ctx;
    now = co_mono_ms();
    if (now < s->next_try_ms) {
        snprintf(err, errlen, "unreachable, next try in %llu ms",
                 (unsigned long long)(s->next_try_ms - now));
        return NULL;
    }
    s->ctx = connect_new(why, sizeof why);
    if (s->ctx == NULL) {
        s->backoff_ms = s->backoff_ms == 0 ? BACKOFF_FIRST_MS
                        : s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                        : s->backoff_ms * 2;
        s->next_try_ms = co_mono_ms() + s->backoff_ms;
        if (!s->down)
            CO_WARN("msg=redis_down addr=%s:%d detail=%s retry_ms=%u",
                    target.host, target.port,
                    co_log_value(v, sizeof v, why, strlen(why)),
                    s->backoff_ms);
        s->down = true;
        snprintf(err, errlen, "%s", why);
        return NULL;
    }
    if (s->down)
        CO_INFO("msg=redis_up addr=%s:%d", target.host, target.port);
    s->down = false;
    s->backoff_ms = 0;
    s->next_try_ms = 0;
    return s->ctx;
}

/* Forget a context after an I/O error or timeout: a late reply would
 * otherwise be read as the answer to the next command. why (may be NULL)
 * is logged once, as the start of an outage for this thread. */
static void thread_drop(const char *why)
{
    char v[300];

    if (tl == NULL || tl->ctx == NULL)
        return;
    redisFree(tl->ctx);
    tl->ctx = NULL;
    if (why != NULL && !tl->down)
        CO_WARN("msg=redis_io_error addr=%s:%d detail=%s", target.host,
                target.port, co_log_value(v, sizeof v, why, strlen(why)));
}

static void sha1_hex(const char *data, size_t len, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(data, len, md, &n, EVP_sha1(), NULL) != 1 || n != 20) {
        out[0] = '\0';
        return;
    }
    for (unsigned i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Remember where Redis is and load the script there if it is up. Returns
 * 0 when the script is loaded, CO_EREDIS / CO_EREPLY with err when Redis
 * could not take it (the caller logs a warning and serves anyway: workers
 * connect by themselves later), CO_ENOMEM on local failure. */
int co_redis_init(const struct co_redis_target *t, char *err, size_t errlen)
{
    redisContext *c;
    int rc;

    target = *t;
    sha1_hex(co_sync_lua, co_sync_lua_len, script_sha);
    if (script_sha[0] == '\0') {
        snprintf(err, errlen, "cannot hash the sync script");
        return CO_ENOMEM;
    }
    pthread_once(&conn_key_once, conn_key_create);
    if (conn_key_rc != 0) {
        snprintf(err, errlen, "pthread_key_create: %s", strerror(conn_key_rc));
        return CO_ENOMEM;
    }
    c = connect_new(err, errlen);
    if (c == NULL)
        return CO_EREDIS;
    rc = load_script(c, err, errlen);
    redisFree(c);
    return rc;
}

/* The SHA1 the script is called by (hex, for the startup log line). */
const char *co_redis_script_sha(void)
{
    return script_sha;
}

/* Close the calling thread's connection and free its slot (the main
 * thread at exit; worker threads are cleaned by the key destructor). */
void co_redis_shutdown(void)
{
    if (tl == NULL)
        return;
    thread_drop(NULL);
    pthread_setspecific(conn_key, NULL);
    free(tl);
    tl = NULL;
}

/* PING on this thread's connection: what /readyz means by "Redis is
 * reachable from where sync requests run". Returns 0 or CO_EREDIS. */
int co_redis_ping(char *err, size_t errlen)
{
    const char *argv[] = {"PING"};
    redisContext *c = thread_conn(err, errlen);
    redisReply *r;
    int rc = CO_OK;

    if (c == NULL)
        return CO_EREDIS;
    r = redisCommandArgv(c, 1, argv, NULL);
    if (r == NULL) {
        char why[64];

        snprintf(err, errlen, "PING: %s",
                 io_error(c, target.timeout_ms, why, sizeof why));
        thread_drop(err);
        return CO_EREDIS;
    }
    if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "PONG") != 0) {
        snprintf(err, errlen, "PING: %.100s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc = CO_EREDIS;
    }
    freeReplyObject(r);
    return rc;
}

/* EVALSHA the sync script for one batch and copy its flat integer reply
 * (nout integers) to out. Returns 0; CO_EREDIS when Redis is unreachable,
 * timed out or the socket failed (the batch may or may not have been
 * applied if the timeout hit after sending: the edge resends it, and
 * idempotency on (edge_id, seq) will make that exact); CO_EREPLY for an
 * error reply (BUSY, OOM, a script error) or a reply of the wrong shape.
 * Never retries after an I/O error: EVALSHA is not idempotent. */
int co_redis_eval_sync(const struct co_script_call *call, long long *out,
                       size_t nout, char *err, size_t errlen)
{
    size_t argc = 3 + call->nkeys + call->nargs;
    const char **argv = NULL;
    size_t *lens = NULL;
    char nkeys[24];
    redisContext *c;
    redisReply *r = NULL;
    unsigned timeout_ms;
    int rc = CO_EREDIS;

    if (argc > INT32_MAX) {
        snprintf(err, errlen, "batch too large");
        return CO_EINVAL;
    }
    argv = malloc(argc * sizeof *argv);
    lens = malloc(argc * sizeof *lens);
    if (argv == NULL || lens == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = CO_ENOMEM;
        goto cleanup;
    }
    snprintf(nkeys, sizeof nkeys, "%zu", call->nkeys);
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = script_sha;
    lens[1] = 40;
    argv[2] = nkeys;
    lens[2] = strlen(nkeys);
    memcpy(argv + 3, call->argv, (argc - 3) * sizeof *argv);
    memcpy(lens + 3, call->argvlen, (argc - 3) * sizeof *lens);

    c = thread_conn(err, errlen);
    if (c == NULL)
        goto cleanup;
    timeout_ms = sync_timeout_ms(argc);
    if (timeout_ms != target.timeout_ms &&
        redisSetTimeout(c, ms_to_tv(timeout_ms)) != REDIS_OK) {
        snprintf(err, errlen, "set timeout: %s", c->errstr);
        thread_drop(err);
        goto cleanup;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        r = redisCommandArgv(c, (int)argc, argv, lens);
        if (r == NULL) {
            char why[64];

            snprintf(err, errlen, "EVALSHA: %s",
                     io_error(c, timeout_ms, why, sizeof why));
            thread_drop(err);
            goto cleanup;
        }
        if (attempt == 0 && r->type == REDIS_REPLY_ERROR &&
            strncmp(r->str, "NOSCRIPT", 8) == 0) {
            freeReplyObject(r);
            r = NULL;
            rc = load_script(c, err, errlen);
            if (rc == CO_EREDIS)
                thread_drop(err);
            if (rc != CO_OK)
                goto cleanup;
            CO_INFO("msg=redis_script_loaded reason=noscript script=%s",
                    script_sha);
            rc = CO_EREDIS;
            continue;
        }
        break;
    }
    if (r == NULL)
        goto cleanup;       /* unreachable: the loop ends with a reply */
    if (timeout_ms != target.timeout_ms &&
        redisSetTimeout(c, ms_to_tv(target.timeout_ms)) != REDIS_OK) {
        snprintf(err, errlen, "set timeout: %s", c->errstr);
        thread_drop(err);   /* the reply is still good: use it */
    }
    rc = CO_EREPLY;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "EVALSHA: %.200s", r->str);
        goto cleanup;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != nout) {
        snprintf(err, errlen, "EVALSHA: expected %zu integers", nout);
        goto cleanup;
    }
    for (size_t i = 0; i < nout; i++) {
        if (r->element[i]->type != REDIS_REPLY_INTEGER) {
            snprintf(err, errlen, "EVALSHA: element %zu not an integer", i);
            goto cleanup;
        }
        out[i] = r->element[i]->integer;
    }
    rc = CO_OK;
cleanup:
    if (r != NULL)
        freeReplyObject(r);
    free(lens);
    free(argv);
    return rc;
}

static bool tag_plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
           c == '-';
}

static size_t tag_encode(const char *s, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (tag_plain(c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    return o;
}

/* Write the hash tag "{<quota>|<key>}" for (quota, key) into out (NUL-
 * terminated), both parts percent-encoded outside [A-Za-z0-9._:-]. Because
 * '%', '{', '}' and '|' are always encoded, distinct pairs give distinct
 * tags and Redis Cluster hashes exactly the braces' content. Returns the
 * length, or CO_ETOOBIG / CO_EINVAL (parts over their caps). */
int co_key_tag(const char *quota, size_t qlen, const char *key, size_t klen,
               char *out, size_t outlen)
{
    size_t o = 0;

    if (qlen > CO_QUOTA_NAME_MAX || klen > CO_KEY_MAX)
        return CO_EINVAL;
    if (outlen < 3 + 3 * qlen + 3 * klen + 1)
        return CO_ETOOBIG;
    out[o++] = '{';
    o += tag_encode(quota, qlen, out + o);
    out[o++] = '|';
    o += tag_encode(key, klen, out + o);
    out[o++] = '}';
    out[o] = '\0';
    return (int)o;
}

/* ------------------------------------------------------------ challenges
 * Plain commands for the challenge verify endpoint (verify.c): the same
 * per-thread connection, backoff and --redis-timeout-ms as sync, and the
 * same rule that a connection in reconnect backoff fails at once. */

/* SET key val PX ttl_ms [NX]. Contract in tollgated.h. Never retried: a
 * SET NX whose reply was lost may have landed, and a second try would
 * then read our own write as "already used". */
int co_redis_set_px(const char *key, size_t klen, const char *val,
                    size_t vlen, uint64_t ttl_ms, bool only_new, char *err,
                    size_t errlen)
{
    char ttl[24];
    const char *argv[] = {"SET", key, val, "PX", ttl, "NX"};
    size_t lens[] = {3, klen, vlen, 2, 0, 2};
    redisContext *c = thread_conn(err, errlen);
    redisReply *r;
    int rc;

    if (c == NULL)
        return CO_EREDIS;
    lens[4] = (size_t)snprintf(ttl, sizeof ttl, "%llu",
                               (unsigned long long)(ttl_ms ? ttl_ms : 1));
    r = redisCommandArgv(c, only_new ? 6 : 5, argv, lens);
    if (r == NULL) {
        char why[64];

        snprintf(err, errlen, "SET: %s",
                 io_error(c, target.timeout_ms, why, sizeof why));
        thread_drop(err);
        return CO_EREDIS;
    }
    if (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0) {
        rc = 1;
    } else if (r->type == REDIS_REPLY_NIL && only_new) {
        rc = 0;
    } else {
        snprintf(err, errlen, "SET: %.100s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc = CO_EREPLY;
    }
    freeReplyObject(r);
    return rc;
}
