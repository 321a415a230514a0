/* redis.c — Redis connections and the script calls sent on them.
 *
 * hiredis contexts are not thread-safe, so every HTTP worker thread owns one
 * blocking connection, created on first use. Every Redis exchange a request
 * makes runs against ONE deadline of --redis-timeout-ms, connect included:
 * each socket wait is given only what is left of it, so a dead, slow or
 * paused (SIGSTOP) Redis costs a request at most that long in total, never
 * a sum of per-step timeouts. After an I/O error or a timeout the context is
 * dropped and the thread backs off (100 ms doubling to 5 s) before it
 * touches Redis again, answering at once meanwhile: a Redis outage never
 * turns into a reconnect storm or a queue of requests each waiting out its
 * timeout.
 *
 * Scripts (script.c) are called by their SHA1 with EVALSHA; the sync
 * script is loaded with SCRIPT LOAD at start when Redis is up. A NOSCRIPT
 * answer (Redis restarted, flushed, failed over) loads the script on that
 * connection and resends the calls that did not run. Key names are
 * redis_keys.c's.
 *
 * Every failure, an error reply or a connection's, is classified here
 * (co_redis_classify) and reported in one place (co_redis_failed): it is
 * counted by kind, becomes the process's Redis state (tollgate_redis_up 0,
 * /readyz 503 with the kind) and is logged once per change of state, not
 * per request. Failures a reconnect cures (unreachable, timeout, loading,
 * busy, masterdown) end with the next exchange that works; the others
 * (ACL, a renamed EVALSHA, out of memory, a replica, a cluster node, a
 * wrong type, ...) end only when probe.lua passes again, run by /readyz
 * and by a watcher thread once a second while the state is not "ok".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis.h>

#include "tollgated.h"

#define BACKOFF_FIRST_MS 100u
#define BACKOFF_MAX_MS   5000u

#define PROBE_TTL_MS     2000u
#define STATE_QUIET_MS   1000u  /* no failure for this long before "ok" */

struct conn {
    redisContext *ctx;
    uint64_t next_try_ms;    /* monotonic; no connect attempt before */
    unsigned backoff_ms;     /* 0 after a success */
    bool down;               /* last attempt failed (log transitions only) */
    struct co_cluster *cc;   /* cluster mode: this thread's router */
    enum co_redis_kind why;  /* the kind that started the backoff */
};

static struct co_redis_target target;
static pthread_key_t conn_key;
static pthread_once_t conn_key_once = PTHREAD_ONCE_INIT;
static int conn_key_rc;
static _Thread_local struct conn *tl;
static _Thread_local enum co_redis_kind tl_kind;

/* ------------------------------------------------------------ failures */

const char *const co_redis_kind_names[CO_REDIS_KINDS] = {
    [CO_REDIS_OK] = "ok",
    [CO_REDIS_UNREACHABLE] = "unreachable",
    [CO_REDIS_TIMEOUT] = "timeout",
    [CO_REDIS_AUTH] = "auth",
    [CO_REDIS_NOPERM] = "noperm",
    [CO_REDIS_NOSCRIPT] = "noscript",
    [CO_REDIS_UNKNOWN_COMMAND] = "unknown_command",
    [CO_REDIS_OOM] = "oom",
    [CO_REDIS_READONLY] = "readonly",
    [CO_REDIS_LOADING] = "loading",
    [CO_REDIS_BUSY] = "busy",
    [CO_REDIS_MASTERDOWN] = "masterdown",
    [CO_REDIS_CROSSSLOT] = "crossslot",
    [CO_REDIS_MOVED] = "moved",
    [CO_REDIS_ASK] = "ask",
    [CO_REDIS_CLUSTERDOWN] = "clusterdown",
    [CO_REDIS_TRYAGAIN] = "tryagain",
    [CO_REDIS_WRONGTYPE] = "wrongtype",
    [CO_REDIS_SCRIPT_ERROR] = "script_error",
    [CO_REDIS_BAD_REPLY] = "bad_reply",
    [CO_REDIS_OTHER] = "other",
};

static const char *const kind_reasons[CO_REDIS_KINDS] = {
    [CO_REDIS_OK] = "Redis works",
    [CO_REDIS_UNREACHABLE] = "Redis cannot be reached",
    [CO_REDIS_TIMEOUT] = "Redis does not answer within --redis-timeout-ms",
    [CO_REDIS_AUTH] = "Redis refuses the user or password of --redis",
    [CO_REDIS_NOPERM] = "the ACL user lacks a permission tollgated needs "
                        "(+@scripting, and reads and writes of tg:* keys)",
    [CO_REDIS_NOSCRIPT] = "Redis lost tollgated's scripts and does not "
                          "take them again",
    [CO_REDIS_UNKNOWN_COMMAND] = "Redis does not know a command tollgated "
                                 "sends (EVALSHA or SCRIPT renamed or "
                                 "disabled with rename-command?)",
    [CO_REDIS_OOM] = "Redis is out of memory (maxmemory reached under "
                     "maxmemory-policy noeviction)",
    [CO_REDIS_READONLY] = "Redis is a read-only replica; point --redis at "
                          "the primary",
    [CO_REDIS_LOADING] = "Redis is loading its dataset",
    [CO_REDIS_BUSY] = "Redis is busy running a script",
    [CO_REDIS_MASTERDOWN] = "Redis is a replica that lost its primary",
    [CO_REDIS_CROSSSLOT] = "Redis is a cluster node; tollgated needs a "
                           "standalone Redis",
    [CO_REDIS_MOVED] = "Redis is a cluster node (a slot lives elsewhere); "
                       "tollgated needs a standalone Redis",
    [CO_REDIS_ASK] = "Redis is a cluster node (a slot is migrating); "
                     "tollgated needs a standalone Redis",
    [CO_REDIS_CLUSTERDOWN] = "Redis is a cluster node that does not serve "
                             "the slot",
    [CO_REDIS_TRYAGAIN] = "Redis is a cluster node being resharded",
    [CO_REDIS_WRONGTYPE] = "a tg:* key holds another type (does another "
                           "program write tollgated's keys?)",
    [CO_REDIS_SCRIPT_ERROR] = "a tollgated script failed in Redis",
    [CO_REDIS_BAD_REPLY] = "Redis answered something tollgated does not "
                           "expect",
    [CO_REDIS_OTHER] = "Redis refused a command",
};

/* Error codes by their leading word; "ERR" is looked into below. */
static const struct {
    const char *code;
    enum co_redis_kind kind;
} codes[] = {
    {"NOSCRIPT", CO_REDIS_NOSCRIPT},   {"NOPERM", CO_REDIS_NOPERM},
    {"NOAUTH", CO_REDIS_AUTH},         {"WRONGPASS", CO_REDIS_AUTH},
    {"OOM", CO_REDIS_OOM},             {"READONLY", CO_REDIS_READONLY},
    {"LOADING", CO_REDIS_LOADING},     {"BUSY", CO_REDIS_BUSY},
    {"MASTERDOWN", CO_REDIS_MASTERDOWN},
    {"CROSSSLOT", CO_REDIS_CROSSSLOT}, {"MOVED", CO_REDIS_MOVED},
    {"ASK", CO_REDIS_ASK},             {"CLUSTERDOWN", CO_REDIS_CLUSTERDOWN},
    {"TRYAGAIN", CO_REDIS_TRYAGAIN},   {"WRONGTYPE", CO_REDIS_WRONGTYPE},
    {"UNKILLABLE", CO_REDIS_BUSY},     {"NOREPLICAS", CO_REDIS_MASTERDOWN},
    {"MISCONF", CO_REDIS_OOM},
};

/* The code word at s (up to a blank or the end) as a kind, or OTHER. */
static enum co_redis_kind code_kind(const char *s)
{
    size_t n = strcspn(s, " \t\r\n");

    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strlen(codes[i].code) == n && strncmp(s, codes[i].code, n) == 0)
            return codes[i].kind;
    return CO_REDIS_OTHER;
}

/* Contract in tollgated.h. Redis 7 passes the code of an error a script's
 * redis.call() met on ("OOM command not allowed ... script: ..."); older
 * versions wrap it ("ERR Error running script ...: -OOM ..."), so a "-CODE"
 * inside an ERR is looked for too. */
enum co_redis_kind co_redis_classify(const char *e)
{
    enum co_redis_kind k;
    const char *dash;

    if (e == NULL || *e == '\0')
        return CO_REDIS_OTHER;
    if (strncmp(e, "ERR ", 4) != 0 && strcmp(e, "ERR") != 0)
        return code_kind(e);
    if (strstr(e, "unknown command") != NULL ||
        strstr(e, "unknown subcommand") != NULL)
        return CO_REDIS_UNKNOWN_COMMAND;
    for (dash = strchr(e, '-'); dash != NULL; dash = strchr(dash + 1, '-'))
        if ((dash == e || dash[-1] == ' ') &&
            (k = code_kind(dash + 1)) != CO_REDIS_OTHER)
            return k;
    if (strstr(e, "script") != NULL || strstr(e, "Script") != NULL)
        return CO_REDIS_SCRIPT_ERROR;
    return CO_REDIS_OTHER;
}

const char *co_redis_kind_reason(enum co_redis_kind kind)
{
    return kind >= 0 && kind < CO_REDIS_KINDS ? kind_reasons[kind]
                                              : kind_reasons[CO_REDIS_OTHER];
}

/* A reconnect cures it: the next exchange that works ends the state. */
static bool transient(enum co_redis_kind k)
{
    return k == CO_REDIS_UNREACHABLE || k == CO_REDIS_TIMEOUT ||
           k == CO_REDIS_LOADING || k == CO_REDIS_BUSY ||
           k == CO_REDIS_MASTERDOWN || k == CO_REDIS_TRYAGAIN;
}

static atomic_int state;                 /* enum co_redis_kind */
static atomic_ullong last_failure_ms;    /* monotonic */
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static char state_detail[256];           /* of the change into state */

/* Contract in tollgated.h. The mutex orders the log lines and the detail
 * with the changes; a failure of the current kind takes no lock. */
void co_redis_failed(enum co_redis_kind kind, const char *detail)
{
    char v[300];

    if (kind <= CO_REDIS_OK || kind >= CO_REDIS_KINDS)
        kind = CO_REDIS_OTHER;
    tl_kind = kind;
    atomic_fetch_add_explicit(&co_metrics.redis_errors[kind], 1,
                              memory_order_relaxed);
    atomic_store_explicit(&last_failure_ms, co_mono_ms(),
                          memory_order_relaxed);
    if (atomic_load_explicit(&state, memory_order_relaxed) == (int)kind)
        return;
    pthread_mutex_lock(&state_lock);
    if (atomic_load_explicit(&state, memory_order_relaxed) != (int)kind) {
        enum co_redis_kind was = atomic_load(&state);

        atomic_store(&state, (int)kind);
        atomic_store(&co_metrics.redis_up, false);
        snprintf(state_detail, sizeof state_detail, "%s",
                 detail != NULL ? detail : "");
        CO_WARN("msg=redis_failing kind=%s was=%s addr=%s:%d reason=\"%s\" "
                "detail=%s", co_redis_kind_names[kind],
                co_redis_kind_names[was], target.host, target.port,
                kind_reasons[kind],
                co_log_value(v, sizeof v, state_detail,
                             strlen(state_detail)));
    }
    pthread_mutex_unlock(&state_lock);
}

/* An exchange worked; probe: it was probe.lua, which ends any state. On
 * the hot path this is one relaxed load. */
static void state_ok(bool probe)
{
    enum co_redis_kind k = atomic_load_explicit(&state, memory_order_relaxed);

    if (k == CO_REDIS_OK || !(probe || transient(k)))
        return;
    if (probe && co_mono_ms() - atomic_load_explicit(&last_failure_ms,
                                                     memory_order_relaxed)
                 < STATE_QUIET_MS)
        return;
    pthread_mutex_lock(&state_lock);
    if (atomic_load(&state) == (int)k) {
        atomic_store(&state, CO_REDIS_OK);
        atomic_store(&co_metrics.redis_up, true);
        state_detail[0] = '\0';
        CO_INFO("msg=redis_ok was=%s addr=%s:%d", co_redis_kind_names[k],
                target.host, target.port);
    }
    pthread_mutex_unlock(&state_lock);
}

enum co_redis_kind co_redis_thread_kind(void)
{
    return tl_kind;
}

enum co_redis_kind co_redis_state(char *detail, size_t detaillen)
{
    enum co_redis_kind k;

    pthread_mutex_lock(&state_lock);
    k = atomic_load(&state);
    if (detail != NULL && detaillen > 0)
        snprintf(detail, detaillen, "%s", state_detail);
    pthread_mutex_unlock(&state_lock);
    return k;
}

/* An I/O failure's kind, from the words io_error() and arm_timeout() use. */
static enum co_redis_kind io_kind(const char *why)
{
    return strstr(why, "timed out") != NULL ? CO_REDIS_TIMEOUT
                                            : CO_REDIS_UNREACHABLE;
}

/* Record r when it is an error reply (NOSCRIPT too when count_noscript:
 * callers that reload the script pass false). Returns r's kind, OK for a
 * reply that is no error. */
static enum co_redis_kind reply_kind(const redisReply *r, bool count_noscript)
{
    enum co_redis_kind k;

    if (r == NULL || r->type != REDIS_REPLY_ERROR)
        return CO_REDIS_OK;
    k = co_redis_classify(r->str);
    if (k != CO_REDIS_NOSCRIPT || count_noscript)
        co_redis_failed(k, r->str);
    return k;
}

static void conn_destroy(void *p)
{
    struct conn *c = p;

    if (c->ctx != NULL)
        redisFree(c->ctx);
    co_cluster_free(c->cc);
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

/* The deadline of an exchange that starts now (monotonic ms). */
static uint64_t deadline_from_now(void)
{
    return co_mono_ms() + target.timeout_ms;
}

/* Give the next socket wait on c what is left until deadline. Returns 0,
 * or CO_EREDIS with err once nothing is left (a zero timeval would mean
 * "wait forever" to the kernel). */
static int arm_timeout(redisContext *c, uint64_t deadline, char *err,
                       size_t errlen)
{
    uint64_t now = co_mono_ms();

    if (now >= deadline) {
        snprintf(err, errlen, "timed out after %u ms", target.timeout_ms);
        return CO_EREDIS;
    }
    if (redisSetTimeout(c, ms_to_tv((unsigned)(deadline - now))) !=
        REDIS_OK) {
        snprintf(err, errlen, "set timeout: %s", c->errstr);
        return CO_EREDIS;
    }
    return CO_OK;
}

/* Send everything appended to c's output buffer, then read nreplies
 * replies into replies[], all before deadline. Returns 0, or CO_EREDIS with
 * err (c is then unusable; replies already read stay in replies[] for the
 * caller to free). The socket timeout is put back to --redis-timeout-ms so
 * plain redisCommand() callers on this context keep their bound. */
static int exchange(redisContext *c, uint64_t deadline, redisReply **replies,
                    size_t nreplies, const char *what, char *err,
                    size_t errlen)
{
    char why[160], tmo[64];
    int done = 0, rc = CO_EREDIS;

    while (!done) {
        if (arm_timeout(c, deadline, why, sizeof why) != CO_OK)
            goto fail;
        if (redisBufferWrite(c, &done) != REDIS_OK)
            goto io;
    }
    for (size_t i = 0; i < nreplies; i++) {
        void *r = NULL;

        if (redisGetReplyFromReader(c, &r) != REDIS_OK)
            goto io;
        while (r == NULL) {
            if (arm_timeout(c, deadline, why, sizeof why) != CO_OK)
                goto fail;
            if (redisBufferRead(c) != REDIS_OK ||
                redisGetReplyFromReader(c, &r) != REDIS_OK)
                goto io;
        }
        replies[i] = r;
    }
    if (redisSetTimeout(c, ms_to_tv(target.timeout_ms)) != REDIS_OK) {
        snprintf(why, sizeof why, "set timeout: %s", c->errstr);
        goto fail;
    }
    return CO_OK;
io:
    snprintf(why, sizeof why, "%s", io_error(c, target.timeout_ms, tmo,
                                             sizeof tmo));
fail:
    snprintf(err, errlen, "%s: %s", what, why);
    return rc;
}

/* One command on c before deadline. Returns the reply (the caller frees it
 * with freeReplyObject, an error reply included) or NULL with err after an
 * I/O error or timeout (c is then unusable). */
static redisReply *command_by(redisContext *c, uint64_t deadline, int argc,
                              const char **argv, const size_t *lens,
                              char *err, size_t errlen)
{
    redisReply *r = NULL;

    if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK) {
        snprintf(err, errlen, "%s: %s", argv[0], c->errstr);
        return NULL;
    }
    if (exchange(c, deadline, &r, 1, argv[0], err, errlen) != CO_OK)
        return NULL;
    return r;
}

/* Account for one reply: an error reply is a failure of its kind; any
 * other shows Redis answers (ending a transient state). */
static void note(const redisReply *r)
{
    if (reply_kind(r, true) == CO_REDIS_OK)
        state_ok(false);
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
        if (co_percent_decode(p, (size_t)(colon - p), t->user,
                              sizeof t->user) != CO_OK ||
            co_percent_decode(colon + 1, (size_t)(at - colon - 1),
                              t->password, sizeof t->password) != CO_OK) {
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

/* Run one command that must not fail on a fresh connection (AUTH, SELECT).
 * Returns the reply (caller frees with freeReplyObject) or NULL with err
 * and *kind; an error reply is freed and reported as NULL too. */
static redisReply *setup_command(redisContext *c, uint64_t deadline,
                                 int argc, const char **argv,
                                 enum co_redis_kind *kind, char *err,
                                 size_t errlen)
{
    redisReply *r = command_by(c, deadline, argc, argv, NULL, err, errlen);

    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: %s", argv[0], r->str);
        *kind = co_redis_classify(r->str);
        freeReplyObject(r);
        return NULL;
    }
    if (r == NULL)
        *kind = io_kind(err);
    return r;
}

/* Load script s on c and check Redis computed the SHA we call it by.
 * Returns 0, CO_EREDIS (I/O: c is now unusable) or CO_EREPLY (recorded by
 * kind: an ACL without +@scripting, a renamed SCRIPT, ...). */
static int load_script(redisContext *c, uint64_t deadline,
                       const struct co_script *s, char *err, size_t errlen)
{
    const char *argv[] = {"SCRIPT", "LOAD", s->src};
    size_t lens[] = {6, 4, s->len};
    redisReply *r = command_by(c, deadline, 3, argv, lens, err, errlen);
    int rc = CO_OK;

    if (r == NULL)
        return CO_EREDIS;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "SCRIPT LOAD %s: %.200s", s->name, r->str);
        co_redis_failed(co_redis_classify(r->str), err);
        rc = CO_EREPLY;
    } else if (r->type != REDIS_REPLY_STRING || r->len != 40 ||
               memcmp(r->str, s->sha, 40) != 0) {
        snprintf(err, errlen, "SCRIPT LOAD %s: unexpected reply %.80s",
                 s->name, r->type == REDIS_REPLY_STRING ? r->str
                                                        : "(not a string)");
        co_redis_failed(CO_REDIS_BAD_REPLY, err);
        rc = CO_EREPLY;
    }
    freeReplyObject(r);
    return rc;
}

/* Open, time-bound, authenticate and select, all before deadline. Returns
 * a ready context (the caller frees it with redisFree) or NULL with err
 * and *kind. */
static redisContext *connect_new(uint64_t deadline, enum co_redis_kind *kind,
                                 char *err, size_t errlen)
{
    uint64_t now = co_mono_ms();
    redisContext *c;
    redisReply *r;
    char db[16];

    *kind = CO_REDIS_UNREACHABLE;
    if (now >= deadline) {
        snprintf(err, errlen, "connect: timed out after %u ms",
                 target.timeout_ms);
        *kind = CO_REDIS_TIMEOUT;
        return NULL;
    }
    c = redisConnectWithTimeout(target.host, target.port,
                                ms_to_tv((unsigned)(deadline - now)));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(err, errlen, "connect: %s", c->errstr);
        if (strstr(c->errstr, "timed out") != NULL ||
            strstr(c->errstr, "temporarily unavailable") != NULL)
            *kind = CO_REDIS_TIMEOUT;
        goto fail;
    }
    if (redisSetTimeout(c, ms_to_tv(target.timeout_ms)) != REDIS_OK) {
        snprintf(err, errlen, "set timeout: %s", c->errstr);
        goto fail;
    }
    redisEnableKeepAlive(c);
    if (target.password[0] != '\0') {
        const char *a2[] = {"AUTH", target.password};
        const char *a3[] = {"AUTH", target.user, target.password};

        r = target.user[0]
            ? setup_command(c, deadline, 3, a3, kind, err, errlen)
            : setup_command(c, deadline, 2, a2, kind, err, errlen);
        if (r == NULL)
            goto fail;
        freeReplyObject(r);
    }
    if (target.db > 0) {
        const char *a[] = {"SELECT", db};

        snprintf(db, sizeof db, "%d", target.db);
        r = setup_command(c, deadline, 2, a, kind, err, errlen);
        if (r == NULL)
            goto fail;
        freeReplyObject(r);
    }
    return c;
fail:
    redisFree(c);
    return NULL;
}

/* Forget this thread's context (if any) after a failure of kind and back
 * off: no connect before next_try_ms. A late reply would otherwise be read
 * as the answer to the next command, and an unreachable or stalled Redis
 * would cost every request its whole timeout. The failure is reported
 * (co_redis_failed: logged once per change of state). */
static void conn_failed(struct conn *s, enum co_redis_kind kind,
                        const char *why)
{
    if (s->ctx != NULL) {
        redisFree(s->ctx);
        s->ctx = NULL;
    }
    s->backoff_ms = s->backoff_ms == 0 ? BACKOFF_FIRST_MS
                    : s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                    : s->backoff_ms * 2;
    s->next_try_ms = co_mono_ms() + s->backoff_ms;
    s->why = kind;
    co_redis_failed(kind, why);
}

/* This thread's live context, connecting before deadline if the backoff
 * allows. NULL with err when Redis is unreachable (at once while backing
 * off, without touching a socket); that is an outage, not a bug. */
static redisContext *thread_conn_by(uint64_t deadline, char *err,
                                    size_t errlen)
{
    struct conn *s = thread_slot();
    enum co_redis_kind kind;
    uint64_t now;
    char why[256];

    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (s->ctx != NULL)
        return s->ctx;
    now = co_mono_ms();
    if (now < s->next_try_ms) {
        snprintf(err, errlen, "%s, next try in %llu ms",
                 co_redis_kind_names[s->why],
                 (unsigned long long)(s->next_try_ms - now));
        tl_kind = s->why;
        return NULL;
    }
    s->ctx = connect_new(deadline, &kind, why, sizeof why);
    if (s->ctx == NULL) {
        conn_failed(s, kind, why);
        snprintf(err, errlen, "%s", why);
        return NULL;
    }
    s->backoff_ms = 0;
    s->next_try_ms = 0;
    return s->ctx;
}

/* Drop this thread's context after an I/O error or timeout, and back off.
 * why is logged once per outage. */
static void thread_drop(const char *why)
{
    if (tl != NULL && tl->ctx != NULL)
        conn_failed(tl, io_kind(why), why);
}

static int append_evalsha(redisContext *c, const struct co_script_call *call,
                          const char **argv, size_t *lens);

/* probe.lua's call (co_call_free() it, also after a failure). Returns 0
 * or CO_ENOMEM. */
static int probe_call(struct co_script_call *c)
{
    co_call_init(c, co_script(CO_SCRIPT_PROBE), 3);
    co_call_key(c, co_rkeys.probe_a, strlen(co_rkeys.probe_a));
    co_call_key(c, co_rkeys.probe_b, strlen(co_rkeys.probe_b));
    co_call_arg_u64(c, PROBE_TTL_MS);
    return co_call_seal(c);
}

/* Did the probe's reply (noted already) say it passed? Describes a
 * failure into err (plain reason first, then Redis's words). */
static enum co_redis_kind probe_verdict(const redisReply *r, char *err,
                                        size_t errlen)
{
    enum co_redis_kind k;
    const char *what;

    if (r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        return CO_REDIS_OK;
    what = r->type == REDIS_REPLY_ERROR && r->str != NULL
           ? r->str : "probe: unexpected reply";
    k = r->type == REDIS_REPLY_ERROR ? co_redis_classify(what)
                                     : CO_REDIS_BAD_REPLY;
    snprintf(err, errlen, "%s: %.200s", kind_reasons[k], what);
    if (k == CO_REDIS_BAD_REPLY)   /* note() recorded an error reply */
        co_redis_failed(k, err);
    return k;
}

/* Contract in tollgated.h. Every script is loaded on a connection of our
 * own, then probe.lua runs, so what is missing is said at start. */
int co_redis_init(const struct co_redis_target *t, char *err, size_t errlen)
{
    struct co_script_call pc;
    enum co_redis_kind kind;
    uint64_t deadline;
    redisContext *c = NULL;
    redisReply *r = NULL;
    int rc = CO_ENOMEM;

    target = *t;
    memset(&pc, 0, sizeof pc);
    for (int i = 0; i < CO_SCRIPTS; i++) {
        if (co_script((enum co_script_id)i)->sha[0] == '\0') {
            snprintf(err, errlen, "cannot hash the %s script",
                     co_script((enum co_script_id)i)->name);
            return CO_ENOMEM;
        }
    }
    pthread_once(&conn_key_once, conn_key_create);
    if (conn_key_rc != 0) {
        snprintf(err, errlen, "pthread_key_create: %s", strerror(conn_key_rc));
        return CO_ENOMEM;
    }
    if (probe_call(&pc) != CO_OK) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    deadline = deadline_from_now();
    rc = CO_EREDIS;
    c = connect_new(deadline, &kind, err, errlen);
    if (c == NULL) {
        co_redis_failed(kind, err);
        goto done;
    }
    for (int i = 0; i < CO_SCRIPTS; i++) {
        rc = load_script(c, deadline, co_script((enum co_script_id)i), err,
                         errlen);
        if (rc == CO_EREPLY) {
            char why[256];

            snprintf(why, sizeof why, "%s", err);
            snprintf(err, errlen, "%s: %s",
                     kind_reasons[co_redis_thread_kind()], why);
        }
        if (rc != CO_OK)
            goto done;
    }
    {
        const char *av[3 + 2 + 1];
        size_t al[3 + 2 + 1];

        if (append_evalsha(c, &pc, av, al) != CO_OK)
            snprintf(err, errlen, "EVALSHA: %s", c->errstr);
        else if (exchange(c, deadline, &r, 1, "EVALSHA", err, errlen) !=
                 CO_OK && r != NULL) {
            freeReplyObject(r);
            r = NULL;
        }
    }
    if (r == NULL) {
        co_redis_failed(io_kind(err), err);
        rc = CO_EREDIS;
        goto done;
    }
    note(r);
    rc = probe_verdict(r, err, errlen) == CO_REDIS_OK ? CO_OK : CO_EREPLY;
    if (rc == CO_OK)
        atomic_store(&co_metrics.redis_up, true);
done:
    if (r != NULL)
        freeReplyObject(r);
    if (c != NULL)
        redisFree(c);
    co_call_free(&pc);
    return rc;
}

/* The SHA1 the script is called by (hex, for the startup log line). */
const char *co_redis_script_sha(void)
{
    return co_script(CO_SCRIPT_SYNC)->sha;
}

/* Close the calling thread's connection and free its slot (the main
 * thread at exit; worker threads are cleaned by the key destructor). */
void co_redis_shutdown(void)
{
    if (tl == NULL)
        return;
    if (tl->ctx != NULL)
        redisFree(tl->ctx);
    co_cluster_free(tl->cc);
    pthread_setspecific(conn_key, NULL);
    free(tl);
    tl = NULL;
}

/* Cluster mode (end of this file). cluster_mode() is 1 in cluster mode,
 * 0 with one Redis, CO_EREDIS (err) while no seed has answered yet. */
static int cluster_mode(uint64_t deadline, char *err, size_t errlen);
static int cluster_check(uint64_t deadline, char *err, size_t errlen);
static int cluster_eval_ints(struct co_script_call *calls, size_t ncalls,
                             uint64_t deadline, char *err, size_t errlen);
static redisReply *cluster_call(const struct co_script_call *script,
                                int argc, const char **argv,
                                const size_t *lens, uint64_t deadline,
                                char *err, size_t errlen);

/* Contract in tollgated.h. The probe runs on this thread's connection,
 * the one its syncs use, bounded like a sync; a thread backing off
 * answers at once. */
int co_redis_check(enum co_redis_kind *kind, char *err, size_t errlen)
{
    struct co_script_call pc;
    redisReply *r = NULL;
    char why[256];
    int rc = CO_ENOMEM;

    *kind = CO_REDIS_OK;
    {
        /* In cluster mode the probe (two keys in two slots, on purpose)
         * does not apply: every master must be reachable and every slot
         * served instead. */
        uint64_t deadline = deadline_from_now();
        int mode = cluster_mode(deadline, err, errlen);

        if (mode != 0) {
            rc = mode > 0 ? cluster_check(deadline, err, errlen) : CO_EREDIS;
            if (rc == CO_OK) {
                state_ok(true);
                return CO_OK;
            }
            *kind = mode > 0 ? CO_REDIS_CLUSTERDOWN : CO_REDIS_UNREACHABLE;
            co_redis_failed(*kind, err);
            return CO_EREDIS;
        }
    }
    if (probe_call(&pc) != CO_OK) {
        snprintf(err, errlen, "out of memory");
        *kind = CO_REDIS_OTHER;
        goto done;
    }
    r = co_redis_eval(0, &pc, why, sizeof why);
    if (r == NULL) {
        *kind = co_redis_thread_kind();
        if (*kind == CO_REDIS_OK)   /* out of memory here, not Redis */
            *kind = CO_REDIS_OTHER;
        snprintf(err, errlen, "%s: %s", kind_reasons[*kind], why);
        rc = CO_EREDIS;
        goto done;
    }
    *kind = probe_verdict(r, err, errlen);
    rc = *kind == CO_REDIS_OK ? CO_OK : CO_EREPLY;
    if (rc == CO_OK)
        state_ok(true);
done:
    if (r != NULL)
        freeReplyObject(r);
    co_call_free(&pc);
    return rc;
}

int co_redis_ping(char *err, size_t errlen)
{
    enum co_redis_kind kind;

    return co_redis_check(&kind, err, errlen);
}

/* ------------------------------------------------------------ watcher
 * Once a second while the state is not "ok": the probe, on the watcher's
 * own connection, so the state ends by itself once Redis is fixed even
 * when nothing else asks. */
static void watch_tick(void)
{
    enum co_redis_kind kind;
    char err[256];

    if (atomic_load_explicit(&state, memory_order_relaxed) != CO_REDIS_OK)
        co_redis_check(&kind, err, sizeof err);
}

static struct co_ticker watcher = {.tick = watch_tick, .period_ms = 1000};

int co_redis_watch_start(char *err, size_t errlen)
{
    return co_ticker_start(&watcher, err, errlen);
}

void co_redis_watch_stop(void)
{
    co_ticker_stop(&watcher);
}

/* Append EVALSHA of one call to c's output buffer. argv/lens are scratch
 * space for 3 + nkeys + nargs entries. */
static int append_evalsha(redisContext *c, const struct co_script_call *call,
                          const char **argv, size_t *lens)
{
    size_t argc = 3 + call->nkeys + call->nargs;
    char nkeys[24];

    snprintf(nkeys, sizeof nkeys, "%zu", call->nkeys);
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = call->script->sha;
    lens[1] = 40;
    argv[2] = nkeys;
    lens[2] = strlen(nkeys);
    memcpy(argv + 3, call->argv, (argc - 3) * sizeof *argv);
    memcpy(lens + 3, call->argvlen, (argc - 3) * sizeof *lens);
    /* hiredis copies the arguments into its buffer: nkeys may go. */
    return redisAppendCommandArgv(c, (int)argc, argv, lens) == REDIS_OK
               ? CO_OK : CO_EREDIS;
}

static bool is_noscript(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR &&
           strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Copy one call's flat integer reply to call->out. */
static int take_reply(const redisReply *r, struct co_script_call *call,
                      char *err, size_t errlen)
{
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "EVALSHA: %.200s", r->str);
        return CO_EREPLY;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != call->nout) {
        snprintf(err, errlen, "EVALSHA: expected %zu integers", call->nout);
        return CO_EREPLY;
    }
    for (size_t i = 0; i < call->nout; i++) {
        if (r->element[i]->type != REDIS_REPLY_INTEGER) {
            snprintf(err, errlen, "EVALSHA: element %zu not an integer", i);
            return CO_EREPLY;
        }
        call->out[i] = r->element[i]->integer;
    }
    return CO_OK;
}

/* EVALSHA each call's script, all calls pipelined in one round trip, and
 * copy each flat integer reply to its call's out. The whole exchange,
 * connect and a NOSCRIPT reload included, ends by one deadline of
 * --redis-timeout-ms. Returns 0; CO_EREDIS when Redis is unreachable,
 * timed out or the socket failed (some calls may have been applied: for
 * sync, the edge resends the batch with the same seq, and sync.lua answers
 * the applied items from their records without counting them twice);
 * CO_EREPLY for an error reply (BUSY, OOM, a script error) or a reply of
 * the wrong shape; CO_ENOMEM. Never resends a call that may have run. */
int co_redis_eval_ints(struct co_script_call *calls, size_t ncalls,
                       char *err, size_t errlen)
{
    uint64_t deadline = deadline_from_now();
    size_t maxargc = 0, nsent;
    const char **argv = NULL;
    size_t *lens = NULL;
    redisReply **replies = NULL, **batch = NULL;
    size_t *which = NULL;
    redisContext *c;
    int rc = cluster_mode(deadline, err, errlen);

    if (rc != 0)
        return rc > 0 ? cluster_eval_ints(calls, ncalls, deadline, err,
                                          errlen)
                      : CO_EREDIS;
    rc = CO_ENOMEM;
    tl_kind = CO_REDIS_OK;
    for (size_t i = 0; i < ncalls; i++) {
        size_t argc = 3 + calls[i].nkeys + calls[i].nargs;

        if (argc > INT32_MAX) {
            snprintf(err, errlen, "batch too large");
            return CO_EINVAL;
        }
        if (argc > maxargc)
            maxargc = argc;
    }
    argv = malloc(maxargc * sizeof *argv);
    lens = malloc(maxargc * sizeof *lens);
    replies = calloc(ncalls ? ncalls : 1, sizeof *replies);
    batch = calloc(ncalls ? ncalls : 1, sizeof *batch);
    which = calloc(ncalls ? ncalls : 1, sizeof *which);
    if (argv == NULL || lens == NULL || replies == NULL || batch == NULL ||
        which == NULL) {
        snprintf(err, errlen, "out of memory");
        goto cleanup;
    }
    rc = CO_EREDIS;
    c = thread_conn_by(deadline, err, errlen);
    if (c == NULL)
        goto cleanup;
    for (int attempt = 0; attempt < 2; attempt++) {
        const struct co_script *noscript = NULL;

        nsent = 0;
        for (size_t i = 0; i < ncalls; i++) {
            if (replies[i] != NULL)
                continue;
            if (append_evalsha(c, &calls[i], argv, lens) != CO_OK) {
                snprintf(err, errlen, "EVALSHA: %s", c->errstr);
                thread_drop(err);
                goto cleanup;
            }
            which[nsent++] = i;
        }
        memset(batch, 0, nsent * sizeof *batch);
        rc = exchange(c, deadline, batch, nsent, "EVALSHA", err, errlen);
        for (size_t k = 0; k < nsent; k++) {
            if (attempt == 0 && is_noscript(batch[k])) {
                freeReplyObject(batch[k]);
                noscript = calls[which[k]].script;
            } else {
                replies[which[k]] = batch[k];
            }
        }
        if (rc != CO_OK) {
            thread_drop(err);
            goto cleanup;
        }
        if (noscript == NULL)
            break;
        /* The script cache is gone (restart, flush, failover): the calls
         * answered NOSCRIPT did not run, so sending them again is safe.
         * Every script of the batch is loaded again (a batch holds one
         * script in practice; loading twice is harmless). */
        for (size_t k = 0, last = ncalls; k < nsent && rc == CO_OK; k++) {
            const struct co_script *s = calls[which[k]].script;

            if (replies[which[k]] != NULL ||
                (last < ncalls && calls[last].script == s))
                continue;
            rc = load_script(c, deadline, s, err, errlen);
            last = which[k];
        }
        if (rc == CO_EREDIS)
            thread_drop(err);
        if (rc != CO_OK)
            goto cleanup;
        CO_INFO("msg=redis_script_loaded reason=noscript script=%s",
                noscript->sha);
    }
    /* Every call has its reply now (a second NOSCRIPT is kept as the
     * error reply it is); the first error reply is the failure's kind. */
    rc = CO_OK;
    for (size_t i = 0; i < ncalls && rc == CO_OK; i++) {
        rc = take_reply(replies[i], &calls[i], err, errlen);
        if (rc != CO_OK && reply_kind(replies[i], true) == CO_REDIS_OK)
            co_redis_failed(CO_REDIS_BAD_REPLY, err);
    }
    if (rc == CO_OK)
        state_ok(false);
cleanup:
    for (size_t i = 0; replies != NULL && i < ncalls; i++)
        if (replies[i] != NULL)
            freeReplyObject(replies[i]);
    free(which);
    free(batch);
    free(replies);
    free(lens);
    free(argv);
    return rc;
}

/* ------------------------------------------------------------ challenges
 * Plain commands for the challenge verify endpoint (challenge_verify.c):
 * the same per-thread connection and backoff as sync, one --redis-timeout-ms
 * deadline per call (connect included), and the same rule that a
 * connection in reconnect backoff fails at once. */

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
    uint64_t deadline = deadline_from_now();
    int mode = cluster_mode(deadline, err, errlen);
    redisContext *c = NULL;
    redisReply *r;
    int rc;

    tl_kind = CO_REDIS_OK;
    if (mode < 0)
        return CO_EREDIS;
    if (mode == 0 && (c = thread_conn_by(deadline, err, errlen)) == NULL)
        return CO_EREDIS;
    lens[4] = (size_t)snprintf(ttl, sizeof ttl, "%llu",
                               (unsigned long long)(ttl_ms ? ttl_ms : 1));
    r = mode > 0 ? cluster_call(NULL, only_new ? 6 : 5, argv, lens,
                                deadline, err, errlen)
                 : command_by(c, deadline, only_new ? 6 : 5, argv, lens,
                              err, errlen);
    if (r == NULL) {
        if (mode == 0)
            thread_drop(err);
        return CO_EREDIS;
    }
    note(r);
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

/* ------------------------------------------------------------ generic
 * Plain commands and scripts for the policy store and the admin API
 * (store.c, admin.c): the same per-thread connection, backoff and
 * one-deadline rule as sync, with a deadline of their own (timeout_ms, 0 =
 * --redis-timeout-ms): an admin write may move a whole policy document,
 * which a sync's few-millisecond budget was not sized for. */

static uint64_t deadline_in(unsigned timeout_ms)
{
    return co_mono_ms() + (timeout_ms ? timeout_ms : target.timeout_ms);
}

/* One command on this thread's connection. Returns the reply (the caller
 * frees it with freeReplyObject; an error reply is a reply) or NULL with
 * err when Redis is unreachable, backing off or timed out. */
redisReply *co_redis_command(unsigned timeout_ms, int argc, const char **argv,
                             const size_t *lens, char *err, size_t errlen)
{
    uint64_t deadline = deadline_in(timeout_ms);
    redisContext *c;
    redisReply *r;
    int mode;

    tl_kind = CO_REDIS_OK;
    mode = cluster_mode(deadline, err, errlen);
    if (mode != 0)
        return mode > 0 ? cluster_call(NULL, argc, argv, lens, deadline, err,
                                       errlen)
                        : NULL;
    c = thread_conn_by(deadline, err, errlen);
    if (c == NULL)
        return NULL;
    r = command_by(c, deadline, argc, argv, lens, err, errlen);
    if (r == NULL)
        thread_drop(err);
    else
        note(r);
    return r;
}

/* EVALSHA call (sealed, co_call_seal); when Redis answers NOSCRIPT
 * (restart, flush, failover) the script did not run, so it is sent once
 * more as EVAL, which also caches it. Returns the reply (freeReplyObject)
 * or NULL with err, as co_redis_command(). */
redisReply *co_redis_eval(unsigned timeout_ms,
                          const struct co_script_call *call, char *err,
                          size_t errlen)
{
    uint64_t deadline = deadline_in(timeout_ms);
    size_t argc = 3 + call->nkeys + call->nargs;
    const char **av = malloc(argc * sizeof *av);
    size_t *al = malloc(argc * sizeof *al);
    char nk[24];
    redisContext *c;
    redisReply *r = NULL;
    int mode = cluster_mode(deadline, err, errlen);

    if (mode != 0) {
        free(al);
        free(av);
        return mode > 0 ? cluster_call(call, 0, NULL, NULL, deadline, err,
                                       errlen)
                        : NULL;
    }
    if (av == NULL || al == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = call->script->sha;
    al[1] = 40;
    av[2] = nk;
    al[2] = (size_t)snprintf(nk, sizeof nk, "%zu", call->nkeys);
    memcpy(av + 3, call->argv, (argc - 3) * sizeof *av);
    memcpy(al + 3, call->argvlen, (argc - 3) * sizeof *al);
    tl_kind = CO_REDIS_OK;
    c = thread_conn_by(deadline, err, errlen);
    if (c == NULL)
        goto done;
    r = command_by(c, deadline, (int)argc, av, al, err, errlen);
    if (is_noscript(r)) {
        freeReplyObject(r);
        av[0] = "EVAL";
        al[0] = 4;
        av[1] = call->script->src;
        al[1] = call->script->len;
        r = command_by(c, deadline, (int)argc, av, al, err, errlen);
    }
    if (r == NULL)
        thread_drop(err);
    else
        note(r);
done:
    free(al);
    free(av);
    return r;
}

/* ------------------------------------------------------------ cluster
 * Redis Cluster mode: --redis names one or more seeds; CLUSTER SLOTS on
 * them decides (cluster.c, co_cluster_detect). In cluster mode every call
 * above goes through this thread's router (struct conn's cc) instead of
 * its single connection, with the same deadline: script calls grouped per
 * master and pipelined, redirections followed, NOSCRIPT reloaded per node.
 * When no seed answers at start the mode stays undecided and the first
 * call that finds a seed answering decides it (at most one try a second,
 * within that call's deadline): a cluster (or a Redis) down at start is
 * picked up when it comes back, without a restart. */

#define MODE_UNDECIDED (-1)
#define DETECT_EVERY_MS 1000u

static atomic_int redis_mode = CO_CLUSTER_MODE_SINGLE;
static pthread_mutex_t mode_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t mode_next_try_ms;          /* under mode_mu */
static char seed_buf[CO_REDIS_SEEDS_MAX][300];
static const char *seed_ptr[CO_REDIS_SEEDS_MAX];
static struct co_cluster_config cluster_cfg;

/* Log and publish a decided mode. */
static void mode_set(int mode)
{
    atomic_store(&redis_mode, mode);
    CO_INFO("msg=redis_mode mode=%s seeds=%zu",
            mode == CO_CLUSTER_MODE_CLUSTER ? "cluster" : "single",
            cluster_cfg.nseeds);
}

static int cluster_mode(uint64_t deadline, char *err, size_t errlen)
{
    int mode = atomic_load(&redis_mode);
    uint64_t now;

    if (mode != MODE_UNDECIDED)
        return mode == CO_CLUSTER_MODE_CLUSTER;
    pthread_mutex_lock(&mode_mu);
    mode = atomic_load(&redis_mode);
    now = co_mono_ms();
    if (mode == MODE_UNDECIDED && now >= mode_next_try_ms &&
        now < deadline) {
        struct co_cluster_config c = cluster_cfg;

        c.connect_timeout_ms = (unsigned)(deadline - now);
        mode = co_cluster_detect(&c, err, errlen);
        if (mode >= 0)
            mode_set(mode);
        else
            mode_next_try_ms = co_mono_ms() + DETECT_EVERY_MS;
    } else if (mode == MODE_UNDECIDED) {
        snprintf(err, errlen, "no seed answered yet, next try in %llu ms",
                 (unsigned long long)(mode_next_try_ms > now
                                      ? mode_next_try_ms - now : 0));
    }
    pthread_mutex_unlock(&mode_mu);
    if (mode < 0) {
        co_redis_failed(CO_REDIS_UNREACHABLE, err);
        return CO_EREDIS;
    }
    return mode == CO_CLUSTER_MODE_CLUSTER;
}

bool co_redis_is_cluster(void)
{
    return atomic_load(&redis_mode) == CO_CLUSTER_MODE_CLUSTER;
}

/* This thread's router, created on first use (freed with its conn). */
static struct co_cluster *thread_cluster(char *err, size_t errlen)
{
    struct conn *s = thread_slot();

    if (s != NULL && s->cc == NULL)
        s->cc = co_cluster_new(&cluster_cfg);
    if (s == NULL || s->cc == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return s->cc;
}

/* Count a cluster exchange in /metrics as the single-node path does. */
static void cluster_outcome(int rc, const char *err)
{
    if (rc == CO_EINVAL)   /* a call spanning slots: our bug */
        CO_ERROR("msg=redis_cluster_refused detail=\"%s\"", err);
    if (rc == CO_EREDIS)   /* the router's one-line reason */
        co_redis_failed(CO_REDIS_CLUSTERDOWN, err);
    else
        state_ok(false);
}

static int cluster_check(uint64_t deadline, char *err, size_t errlen)
{
    struct co_cluster *cc = thread_cluster(err, errlen);
    int rc;

    if (cc == NULL)
        return CO_EREDIS;
    rc = co_cluster_check(cc, deadline, err, errlen);
    cluster_outcome(rc, err);
    return rc == CO_OK ? CO_OK : CO_EREDIS;
}

/* A script call as the router takes it. */
static void cluster_map(const struct co_script_call *s,
                        struct co_cluster_call *c)
{
    memset(c, 0, sizeof *c);
    c->sha = s->script->sha;
    c->script = s->script->src;
    c->script_len = s->script->len;
    c->nkeys = s->nkeys;
    c->nargs = s->nargs;
    c->argv = s->argv;
    c->argvlen = s->argvlen;
}

/* co_redis_eval_ints() in cluster mode: same contract. */
static int cluster_eval_ints(struct co_script_call *calls, size_t ncalls,
                             uint64_t deadline, char *err, size_t errlen)
{
    struct co_cluster *cc = thread_cluster(err, errlen);
    struct co_cluster_call *cl = calloc(ncalls ? ncalls : 1, sizeof *cl);
    int rc = CO_ENOMEM, taken = CO_OK;

    if (cc == NULL || cl == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ncalls; i++)
        cluster_map(&calls[i], &cl[i]);
    rc = co_cluster_run(cc, cl, ncalls, deadline, err, errlen);
    cluster_outcome(rc, err);
    for (size_t i = 0; i < ncalls; i++) {
        if (cl[i].reply == NULL)
            continue;
        if (rc == CO_OK && taken == CO_OK)
            taken = take_reply(cl[i].reply, &calls[i], err, errlen);
        freeReplyObject(cl[i].reply);
    }
    if (rc == CO_OK)
        rc = taken;
done:
    free(cl);
    return rc;
}

/* One call in cluster mode: the script call `script`, or (script NULL)
 * the plain command argv, routed by its key argv[1] (lens NULL: C
 * strings). Returns the reply (freeReplyObject) or NULL with err. */
static redisReply *cluster_call(const struct co_script_call *script,
                                int argc, const char **argv,
                                const size_t *lens, uint64_t deadline,
                                char *err, size_t errlen)
{
    struct co_cluster *cc = thread_cluster(err, errlen);
    struct co_cluster_call c = {.nkeys = 1, .nargs = (size_t)argc,
                                .argv = argv, .argvlen = lens};
    size_t *own = NULL;
    int rc;

    if (cc == NULL)
        return NULL;
    if (script != NULL) {
        cluster_map(script, &c);
    } else if (argc < 2) {
        snprintf(err, errlen, "%s: no key to route by in cluster mode",
                 argc > 0 ? argv[0] : "(empty)");
        return NULL;
    } else if (lens == NULL) {
        own = malloc((size_t)argc * sizeof *own);
        if (own == NULL) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        for (int i = 0; i < argc; i++)
            own[i] = strlen(argv[i]);
        c.argvlen = own;
    }
    rc = co_cluster_run(cc, &c, 1, deadline, err, errlen);
    cluster_outcome(rc, err);
    free(own);
    return rc == CO_OK ? c.reply : NULL;
}

/* Split "URL[,URL...]" and parse each with co_redis_parse_url(). */
int co_redis_parse_seeds(const char *list, unsigned timeout_ms,
                         struct co_redis_target *out, size_t max, size_t *n,
                         char *err, size_t errlen)
{
    const char *p = list;

    *n = 0;
    for (;;) {
        size_t len = strcspn(p, ",");
        char one[sizeof seed_buf[0] + 64];

        if (*n == max) {
            snprintf(err, errlen, "at most %zu seeds", max);
            return CO_EINVAL;
        }
        if (len == 0 || len >= sizeof one) {
            snprintf(err, errlen, "seed %zu: empty or too long", *n + 1);
            return CO_EINVAL;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        if (co_redis_parse_url(one, timeout_ms, &out[*n], err, errlen) !=
            CO_OK)
            return CO_EINVAL;
        (*n)++;
        if (p[len] == '\0')
            return CO_OK;
        p += len + 1;
    }
}

/* Contract in tollgated.h. */
int co_redis_init_seeds(const struct co_redis_target *seeds, size_t n,
                        char *err, size_t errlen)
{
    struct co_cluster *cc;
    int mode;

    if (n == 0 || n > CO_REDIS_SEEDS_MAX) {
        snprintf(err, errlen, "1 to %d seeds", CO_REDIS_SEEDS_MAX);
        return CO_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(seed_buf[i], sizeof seed_buf[i],
                 strchr(seeds[i].host, ':') ? "[%s]:%d" : "%s:%d",
                 seeds[i].host, seeds[i].port);
        seed_ptr[i] = seed_buf[i];
    }
    cluster_cfg = (struct co_cluster_config){
        .seeds = seed_ptr, .nseeds = n, .user = seeds[0].user,
        .password = seeds[0].password,
        .connect_timeout_ms = seeds[0].timeout_ms > 1000
                              ? seeds[0].timeout_ms : 1000};
    target = seeds[0];
    pthread_once(&conn_key_once, conn_key_create);
    if (conn_key_rc != 0) {
        snprintf(err, errlen, "pthread_key_create: %s", strerror(conn_key_rc));
        return CO_ENOMEM;
    }
    if (n == 1) {
        mode = co_cluster_detect(&cluster_cfg, err, errlen);
        if (mode == CO_CLUSTER_MODE_SINGLE) {
            mode_set(mode);
            return co_redis_init(&seeds[0], err, errlen);
        }
    } else {
        /* Several seeds mean a cluster; a seed outside it is named (the
         * router refreshes from the others, /readyz fails only if none
         * is a member). */
        mode = CO_CLUSTER_MODE_CLUSTER;
        for (size_t i = 0; i < n; i++) {
            struct co_cluster_config one = cluster_cfg;
            char why[300];

            one.seeds = &seed_ptr[i];
            one.nseeds = 1;
            if (co_cluster_detect(&one, why, sizeof why) ==
                CO_CLUSTER_MODE_SINGLE)
                CO_WARN("msg=redis_seed_not_in_cluster seed=%s "
                        "detail=\"cluster support disabled\"", seed_ptr[i]);
        }
    }
    for (size_t i = 0; i < n && (n > 1 || mode >= 0); i++)
        if (seeds[i].db != 0) {
            snprintf(err, errlen, "a Redis Cluster has no databases: drop "
                     "/%d from the URL", seeds[i].db);
            return CO_EINVAL;
        }
    if (mode < 0) {
        /* nobody answered: decided by the first call that finds one */
        atomic_store(&redis_mode, MODE_UNDECIDED);
        mode_next_try_ms = co_mono_ms() + DETECT_EVERY_MS;
        return CO_EREDIS;
    }
    mode_set(mode);
    cc = co_cluster_new(&cluster_cfg);
    if (cc == NULL) {
        snprintf(err, errlen, "out of memory");
        return CO_ENOMEM;
    }
    mode = co_cluster_check(cc, co_mono_ms() + cluster_cfg.connect_timeout_ms,
                            err, errlen);
    co_cluster_free(cc);
    return mode == CO_OK ? CO_OK : CO_EREDIS;
}
