/* cluster.c — route script calls to the masters of a Redis Cluster.
 *
 * Written from the Redis Cluster specification (key slots, hash tags,
 * CLUSTER SLOTS, redirections), because Debian's hiredis 0.14 has no
 * cluster client. One struct co_cluster per thread: a slot map (slot ->
 * node), one blocking hiredis connection per node, and the seeds to fall
 * back to. co_cluster_run() sends a batch: calls grouped per master, every
 * master's pipeline written before any reply is read (the masters work in
 * parallel), then each reply classified:
 *
 *   a reply or a plain error reply   final (the script ran, or refused)
 *   MOVED <slot> <host:port>         the slot moved for good: update it,
 *                                    refresh the whole map, resend there
 *   ASK <slot> <host:port>           the slot is migrating: resend to the
 *                                    target after ASKING; map unchanged
 *   TRYAGAIN, CLUSTERDOWN, LOADING   did not run: resend after a doubling
 *                                    pause (2 ms .. 100 ms)
 *   NOSCRIPT                         did not run: SCRIPT LOAD on that node
 *                                    (script caches are per node, not
 *                                    replicated), resend
 *   I/O error or timeout             may have run: never resent; the
 *                                    connection is dropped, the map
 *                                    refreshed before the next batch
 *
 * Everything ends by the caller's deadline: each socket wait gets what is
 * left of it (a zero timeval would wait forever), so a stalled node, a
 * garbage-speaking node or a cluster that stays down costs one deadline,
 * never a hang. A failed connect means nothing was sent, so it is retried
 * (after a refresh) like CLUSTERDOWN: that is how a failover is ridden out.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis.h>

#include "tollgated.h"


#define HOST_MAX          256
#define REFRESH_DEFAULT_MS 10000u
#define ROUNDS_MAX        16       /* redirections / retries of one call */
#define PAUSE_FIRST_MS    2u
#define PAUSE_MAX_MS      100u
#define DOWN_FIRST_MS     100u     /* a node that refused a connect ... */
#define DOWN_MAX_MS       2000u    /* ... is left alone this long, doubling */

struct node {
    char host[HOST_MAX];
    int port;
    redisContext *ctx;
    /* per round of co_cluster_run(): the calls queued here, in order */
    size_t *queue;
    size_t nqueue, queue_cap;
    bool unreachable;        /* a connect failed this round */
    uint64_t down_until_ms;  /* no connect attempt before (monotonic) */
    unsigned backoff_ms;     /* 0 after a successful connect */
    char down_why[128];      /* why that connect failed */
};

struct co_cluster {
    char **seeds;
    size_t nseeds;
    char user[128];
    char password[256];
    unsigned connect_timeout_ms;
    unsigned refresh_ms;
    struct node *nodes[CO_CLUSTER_NODES_MAX];
    size_t nnodes;
    int16_t owner[CO_CLUSTER_SLOTS];   /* node index, -1: not served */
    bool have_map;
    bool refresh_due;                  /* after MOVED or a node failure */
    uint64_t next_refresh_ms;
    bool failing;                      /* last outcome (log transitions) */
};

/* ------------------------------------------------------------ key slot */

/* CRC16/XMODEM (poly 0x1021, init 0, no reflection, no final xor), the
 * checksum the cluster specification names; "123456789" -> 0x31C3. */
static uint16_t crc16_xmodem(const unsigned char *p, size_t len)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)(crc << 1 ^ 0x1021)
                               : (uint16_t)(crc << 1);
    }
    return crc;
}

/* Hash tags as the specification defines them: the first '{', then the
 * first '}' after it; a non-empty span between them is hashed alone. */
unsigned co_cluster_keyslot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len), *close;

    if (open != NULL) {
        size_t rest = len - (size_t)(open - key) - 1;

        close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1)
            return crc16_xmodem((const unsigned char *)open + 1,
                                (size_t)(close - open - 1)) &
                   (CO_CLUSTER_SLOTS - 1);
    }
    return crc16_xmodem((const unsigned char *)key, len) &
           (CO_CLUSTER_SLOTS - 1);
}

/* ------------------------------------------------------------ sockets */

static struct timeval ms_to_tv(uint64_t ms)
{
    struct timeval tv = {
        .tv_sec = (time_t)(ms / 1000),
        .tv_usec = (suseconds_t)(ms % 1000) * 1000,
    };

    return tv;
}

/* Give c's next socket wait what is left until deadline. */
static int arm(redisContext *c, uint64_t deadline, char *err, size_t errlen)
{
    uint64_t now = co_mono_ms();

    if (now >= deadline) {
        snprintf(err, errlen, "timed out");
        return CO_EREDIS;
    }
    if (redisSetTimeout(c, ms_to_tv(deadline - now)) != REDIS_OK) {
        snprintf(err, errlen, "set timeout: %s", c->errstr);
        return CO_EREDIS;
    }
    return CO_OK;
}

/* hiredis reports a socket timeout as EAGAIN's text; say what it is. */
static const char *io_why(const redisContext *c)
{
    if (c->errstr[0] == '\0')
        return "connection closed";
    if (c->err == REDIS_ERR_IO &&
        strstr(c->errstr, "temporarily unavailable") != NULL)
        return "timed out";
    return c->errstr;
}

/* Write all of c's output buffer before deadline. */
static int flush_by(redisContext *c, uint64_t deadline, char *err,
                    size_t errlen)
{
    int done = 0;

    while (!done) {
        if (arm(c, deadline, err, errlen) != CO_OK)
            return CO_EREDIS;
        if (redisBufferWrite(c, &done) != REDIS_OK) {
            snprintf(err, errlen, "%s", io_why(c));
            return CO_EREDIS;
        }
    }
    return CO_OK;
}

/* Read one reply from c before deadline into *out (the caller frees it
 * with freeReplyObject). A protocol error (a node speaking garbage) is an
 * I/O error: the stream cannot be trusted after it. */
static int read_by(redisContext *c, uint64_t deadline, redisReply **out,
                   char *err, size_t errlen)
{
    void *r = NULL;

    if (redisGetReplyFromReader(c, &r) != REDIS_OK)
        goto io;
    while (r == NULL) {
        if (arm(c, deadline, err, errlen) != CO_OK)
            return CO_EREDIS;
        if (redisBufferRead(c) != REDIS_OK ||
            redisGetReplyFromReader(c, &r) != REDIS_OK)
            goto io;
    }
    *out = r;
    return CO_OK;
io:
    snprintf(err, errlen, "%s", io_why(c));
    return CO_EREDIS;
}

static void node_drop(struct node *n)
{
    if (n->ctx != NULL)
        redisFree(n->ctx);
    n->ctx = NULL;
}

/* One command on n, before deadline. Returns the reply (freeReplyObject;
 * an error reply is a reply) or NULL with err, the connection dropped. */
static redisReply *node_command(struct node *n, uint64_t deadline, int argc,
                                const char **argv, const size_t *lens,
                                char *err, size_t errlen)
{
    redisReply *r = NULL;
    char why[160];

    snprintf(why, sizeof why, "out of memory");
    if (redisAppendCommandArgv(n->ctx, argc, argv, lens) != REDIS_OK ||
        flush_by(n->ctx, deadline, why, sizeof why) != CO_OK ||
        read_by(n->ctx, deadline, &r, why, sizeof why) != CO_OK) {
        snprintf(err, errlen, "%s %.100s:%d: %s", argv[0], n->host, n->port,
                 why);
        node_drop(n);
        return NULL;
    }
    return r;
}

/* n's live connection, opened (and authenticated) before deadline, the
 * connect itself bounded by connect_timeout_ms too. NULL with err:
 * nothing was sent. */
static redisContext *node_conn(struct co_cluster *cc, struct node *n,
                               uint64_t deadline, char *err, size_t errlen)
{
    uint64_t now = co_mono_ms(), left;

    if (n->ctx != NULL)
        return n->ctx;
    if (now < n->down_until_ms) {
        snprintf(err, errlen, "connect %.100s:%d: %s (next try in %llu ms)",
                 n->host, n->port, n->down_why,
                 (unsigned long long)(n->down_until_ms - now));
        return NULL;
    }
    if (now >= deadline) {
        snprintf(err, errlen, "connect %.100s:%d: timed out", n->host,
                 n->port);
        return NULL;
    }
    left = deadline - now;
    if (left > cc->connect_timeout_ms)
        left = cc->connect_timeout_ms;
    n->ctx = redisConnectWithTimeout(n->host, n->port, ms_to_tv(left));
    if (n->ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (n->ctx->err) {
        /* A dead or unreachable node must not cost every batch (or every
         * refresh, which asks known masters first) a connect timeout; but
         * a connect cut short by the caller's nearly spent deadline says
         * nothing about the node. */
        bool cut_short = left < cc->connect_timeout_ms &&
                         strstr(n->ctx->errstr, "timed out") != NULL;

        snprintf(err, errlen, "connect %.100s:%d: %s", n->host, n->port,
                 n->ctx->errstr);
        snprintf(n->down_why, sizeof n->down_why, "%s", n->ctx->errstr);
        node_drop(n);
        if (!cut_short) {
            n->backoff_ms = n->backoff_ms == 0 ? DOWN_FIRST_MS
                            : n->backoff_ms * 2 > DOWN_MAX_MS ? DOWN_MAX_MS
                            : n->backoff_ms * 2;
            n->down_until_ms = co_mono_ms() + n->backoff_ms;
        }
        return NULL;
    }
    n->backoff_ms = 0;
    n->down_until_ms = 0;
    redisEnableKeepAlive(n->ctx);
    if (cc->password[0] != '\0') {
        const char *a[] = {"AUTH", cc->user, cc->password};
        int argc = cc->user[0] ? 3 : 2;
        redisReply *r;

        if (argc == 2)
            a[1] = cc->password;
        r = node_command(n, deadline, argc, a, NULL, err, errlen);
        if (r == NULL)
            return NULL;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "AUTH %.100s:%d: %.120s", n->host, n->port,
                     r->str);
            freeReplyObject(r);
            node_drop(n);
            return NULL;
        }
        freeReplyObject(r);
    }
    return n->ctx;
}

/* ------------------------------------------------------------ nodes */

/* Split "host:port" or "[v6]:port" (s[0..len)) into host and port.
 * Returns 0 or CO_EINVAL. */
static int parse_hostport(const char *s, size_t len, char host[HOST_MAX],
                          int *port)
{
    const char *colon = NULL, *h = s;
    size_t hlen;
    long v = 0;

    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (colon == NULL || colon + 1 == s + len)
        return CO_EINVAL;
    hlen = (size_t)(colon - s);
    if (hlen >= 2 && s[0] == '[' && colon[-1] == ']') {
        h = s + 1;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= HOST_MAX || memchr(h, '\0', hlen) != NULL)
        return CO_EINVAL;
    for (const char *q = colon + 1; q < s + len; q++) {
        if (*q < '0' || *q > '9' || v > 65535)
            return CO_EINVAL;
        v = v * 10 + (*q - '0');
    }
    if (v < 1 || v > 65535)
        return CO_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)v;
    return CO_OK;
}

/* The index of node host:port, added when new. -1 when the router
 * already knows CO_CLUSTER_NODES_MAX nodes (a garbage-speaking cluster
 * cannot make it grow without bound) or out of memory. */
static int node_index(struct co_cluster *cc, const char *host, int port)
{
    struct node *n;

    for (size_t i = 0; i < cc->nnodes; i++)
        if (cc->nodes[i]->port == port &&
            strcmp(cc->nodes[i]->host, host) == 0)
            return (int)i;
    if (cc->nnodes == CO_CLUSTER_NODES_MAX)
        return -1;
    n = calloc(1, sizeof *n);
    if (n == NULL)
        return -1;
    snprintf(n->host, sizeof n->host, "%s", host);
    n->port = port;
    cc->nodes[cc->nnodes] = n;
    return (int)cc->nnodes++;
}

struct co_cluster *co_cluster_new(const struct co_cluster_config *cfg)
{
    struct co_cluster *cc = calloc(1, sizeof *cc);

    if (cc == NULL)
        return NULL;
    cc->seeds = calloc(cfg->nseeds ? cfg->nseeds : 1, sizeof *cc->seeds);
    if (cc->seeds == NULL)
        goto fail;
    for (size_t i = 0; i < cfg->nseeds; i++) {
        cc->seeds[i] = strdup(cfg->seeds[i]);
        if (cc->seeds[i] == NULL)
            goto fail;
        cc->nseeds++;
    }
    snprintf(cc->user, sizeof cc->user, "%s", cfg->user ? cfg->user : "");
    snprintf(cc->password, sizeof cc->password, "%s",
             cfg->password ? cfg->password : "");
    cc->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms
                                                     : 1000;
    cc->refresh_ms = cfg->refresh_ms ? cfg->refresh_ms : REFRESH_DEFAULT_MS;
    for (size_t s = 0; s < CO_CLUSTER_SLOTS; s++)
        cc->owner[s] = -1;
    return cc;
fail:
    co_cluster_free(cc);
    return NULL;
}

void co_cluster_free(struct co_cluster *cc)
{
    if (cc == NULL)
        return;
    for (size_t i = 0; i < cc->nnodes; i++) {
        node_drop(cc->nodes[i]);
        free(cc->nodes[i]->queue);
        free(cc->nodes[i]);
    }
    for (size_t i = 0; i < cc->nseeds; i++)
        free(cc->seeds[i]);
    free(cc->seeds);
    free(cc);
}

int co_cluster_slot_owner(const struct co_cluster *cc, unsigned slot,
                          char *out, size_t outlen)
{
    const struct node *n;

    if (slot >= CO_CLUSTER_SLOTS || cc->owner[slot] < 0)
        return CO_ENOTFOUND;
    n = cc->nodes[cc->owner[slot]];
    snprintf(out, outlen, "%.100s:%d", n->host, n->port);
    return CO_OK;
}

/* ------------------------------------------------------------ slot map */

static bool is_error(const redisReply *r, const char *prefix)
{
    size_t n = strlen(prefix);

    return r != NULL && r->type == REDIS_REPLY_ERROR && r->len >= n &&
           strncmp(r->str, prefix, n) == 0 &&
           (r->len == n || r->str[n] == ' ');
}

static bool cluster_disabled(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR &&
           strstr(r->str, "cluster support disabled") != NULL;
}

/* Parse a CLUSTER SLOTS reply, asked of node `from`, into owner[] (every
 * slot first set to -1). Each entry: start, end, then the master as
 * [endpoint, port, id, ...] and its replicas. An empty endpoint means
 * "the address you asked"; "?" an unknown one (the range stays unserved).
 * Returns 0 or CO_EREDIS with err for a reply of any other shape. */
static int parse_slots(struct co_cluster *cc, const redisReply *r,
                       const struct node *from, int16_t *owner, char *err,
                       size_t errlen)
{
    for (size_t s = 0; s < CO_CLUSTER_SLOTS; s++)
        owner[s] = -1;
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "CLUSTER SLOTS %.100s:%d: not an array (%.80s)",
                 from->host, from->port,
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
        return CO_EREDIS;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i], *m;
        const char *host;
        int idx;

        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2)
            goto bad;
        m = e->element[2];
        if (m->element[0]->type != REDIS_REPLY_STRING ||
            m->element[1]->type != REDIS_REPLY_INTEGER ||
            m->element[1]->integer < 1 || m->element[1]->integer > 65535 ||
            e->element[0]->integer < 0 ||
            e->element[1]->integer >= CO_CLUSTER_SLOTS ||
            e->element[0]->integer > e->element[1]->integer ||
            m->element[0]->len >= HOST_MAX ||
            memchr(m->element[0]->str, '\0', m->element[0]->len) != NULL)
            goto bad;
        host = m->element[0]->len == 0 ? from->host : m->element[0]->str;
        if (strcmp(host, "?") == 0)
            continue;
        idx = node_index(cc, host, (int)m->element[1]->integer);
        if (idx < 0) {
            snprintf(err, errlen, "CLUSTER SLOTS %.100s:%d: over %d nodes",
                     from->host, from->port, CO_CLUSTER_NODES_MAX);
            return CO_EREDIS;
        }
        for (long long s = e->element[0]->integer;
             s <= e->element[1]->integer; s++)
            owner[s] = (int16_t)idx;
    }
    return CO_OK;
bad:
    snprintf(err, errlen, "CLUSTER SLOTS %.100s:%d: malformed reply",
             from->host, from->port);
    return CO_EREDIS;
}

/* Count the unserved slots of owner[] and name the first. */
static size_t unserved(const int16_t *owner, unsigned *first)
{
    size_t n = 0;

    for (unsigned s = 0; s < CO_CLUSTER_SLOTS; s++)
        if (owner[s] < 0 && n++ == 0)
            *first = s;
    return n;
}

#define MAP_HOLES 1   /* refresh_from(): installed, some slots unserved */

/* Ask node n for CLUSTER SLOTS and install the map. Returns 0,
 * MAP_HOLES (installed; err names a hole), CO_EREDIS (nothing installed)
 * or CO_ENOMEM, with err. */
static int refresh_from(struct co_cluster *cc, struct node *n,
                        uint64_t deadline, char *err, size_t errlen)
{
    const char *argv[] = {"CLUSTER", "SLOTS"};
    int16_t *owner = NULL;
    redisReply *r = NULL;
    int rc = CO_EREDIS;
    unsigned first = 0;
    size_t holes;

    if (node_conn(cc, n, deadline, err, errlen) == NULL)
        return CO_EREDIS;
    r = node_command(n, deadline, 2, argv, NULL, err, errlen);
    if (r == NULL)
        goto done;
    if (cluster_disabled(r)) {
        snprintf(err, errlen, "%.100s:%d is not a cluster member (cluster "
                 "support disabled)", n->host, n->port);
        goto done;
    }
    owner = malloc(CO_CLUSTER_SLOTS * sizeof *owner);
    if (owner == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = CO_ENOMEM;
        goto done;
    }
    if (parse_slots(cc, r, n, owner, err, errlen) != CO_OK)
        goto done;
    holes = unserved(owner, &first);
    if (holes == CO_CLUSTER_SLOTS) {
        snprintf(err, errlen, "%.100s:%d serves no slot (not joined to a "
                 "cluster?)", n->host, n->port);
        goto done;
    }
    memcpy(cc->owner, owner, CO_CLUSTER_SLOTS * sizeof *owner);
    cc->have_map = true;
    cc->refresh_due = false;
    cc->next_refresh_ms = co_mono_ms() + cc->refresh_ms;
    rc = CO_OK;
    if (holes > 0) {
        snprintf(err, errlen, "slot %u not served (%zu slots unserved, map "
                 "from %.100s:%d)", first, holes, n->host, n->port);
        rc = MAP_HOLES;
    }
done:
    free(owner);
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

/* Contract in tollgated.h. Known masters are asked first (they are the
 * cluster as we last saw it), then the seeds; the first well-formed
 * answer wins. err keeps the first node's reason and how many more
 * failed, so one line says what is wrong. */
int co_cluster_refresh(struct co_cluster *cc, uint64_t deadline, char *err,
                       size_t errlen)
{
    int cand[CO_CLUSTER_NODES_MAX + 64];
    size_t ncand = 0, failed = 0;
    char why[400];
    int rc = CO_EREDIS;

    err[0] = '\0';
    for (size_t i = 0; i < cc->nnodes && ncand < CO_CLUSTER_NODES_MAX; i++)
        for (size_t s = 0; s < CO_CLUSTER_SLOTS; s++)
            if (cc->owner[s] == (int)i) {
                cand[ncand++] = (int)i;
                break;
            }
    for (size_t i = 0; i < cc->nseeds && ncand < sizeof cand / sizeof *cand;
         i++) {
        char host[HOST_MAX];
        int port, idx;

        if (parse_hostport(cc->seeds[i], strlen(cc->seeds[i]), host,
                           &port) != CO_OK) {
            if (failed++ == 0)
                snprintf(err, errlen, "seed \"%.100s\" is not host:port",
                         cc->seeds[i]);
            continue;
        }
        idx = node_index(cc, host, port);
        if (idx >= 0)
            cand[ncand++] = idx;
    }
    for (size_t i = 0; i < ncand; i++) {
        bool dup = false;

        for (size_t j = 0; j < i; j++)
            dup = dup || cand[j] == cand[i];
        if (dup)
            continue;
        rc = refresh_from(cc, cc->nodes[cand[i]], deadline, why, sizeof why);
        if (rc == CO_OK)
            return CO_OK;
        if (rc == MAP_HOLES || rc == CO_ENOMEM) {
            snprintf(err, errlen, "%s", why);
            return rc == MAP_HOLES ? CO_EREDIS : rc;
        }
        if (failed++ == 0)
            snprintf(err, errlen, "%s", why);
    }
    if (failed > 1) {
        size_t len = strlen(err);

        snprintf(err + len, errlen - len, " (and %zu more nodes failed)",
                 failed - 1);
    }
    if (err[0] == '\0')
        snprintf(err, errlen, "no seed node");
    cc->refresh_due = true;
    return CO_EREDIS;
}

/* ------------------------------------------------------------ routing */

enum call_state { PENDING, DONE, FAILED };

struct call_ctl {
    unsigned slot;
    int ask;                 /* node index after ASK, -1: use the map */
    enum call_state state;
};

/* What one round of co_cluster_run() learnt besides the replies. */
struct round {
    bool retry_later;        /* TRYAGAIN, CLUSTERDOWN, LOADING, no connect */
    bool refresh_now;        /* a node is gone or the cluster is down */
    char retry_why[400];     /* the last reason to retry */
    char first[600];         /* the run's first failure */
};

static void fail_call(struct call_ctl *ctl, struct round *rd, const char *why)
{
    ctl->state = FAILED;
    if (rd->first[0] == '\0')
        snprintf(rd->first, sizeof rd->first, "%s", why);
}

/* Parse "<slot> <host:port>" after MOVED/ASK into a node index; -1 when
 * malformed or the node table is full. */
static int redirect_target(struct co_cluster *cc, const redisReply *r,
                           size_t skip, unsigned *slot)
{
    const char *p = r->str + skip, *sp;
    char host[HOST_MAX], *end;
    unsigned long v;
    int port;

    errno = 0;
    v = strtoul(p, &end, 10);
    if (end == p || *end != ' ' || v >= CO_CLUSTER_SLOTS || errno != 0)
        return -1;
    sp = end + 1;
    if (parse_hostport(sp, r->len - (size_t)(sp - r->str), host, &port) !=
        CO_OK)
        return -1;
    *slot = (unsigned)v;
    return node_index(cc, host, port);
}

/* Append call's EVALSHA, or its plain command, (after ASKING when
 * asking) to c's buffer. argv and lens are scratch space for 3 + nkeys +
 * nargs entries. */
static int append_call(redisContext *c, const struct co_cluster_call *call,
                       bool asking, const char **argv, size_t *lens)
{
    size_t argc = 3 + call->nkeys + call->nargs;
    char nkeys[24];

    if (asking && redisAppendCommand(c, "ASKING") != REDIS_OK)
        return CO_EREDIS;
    if (call->sha == NULL)
        return redisAppendCommandArgv(c, (int)call->nargs, call->argv,
                                      call->argvlen) == REDIS_OK
                   ? CO_OK : CO_EREDIS;
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = call->sha;
    lens[1] = strlen(call->sha);
    argv[2] = nkeys;
    lens[2] = (size_t)snprintf(nkeys, sizeof nkeys, "%zu", call->nkeys);
    memcpy(argv + 3, call->argv, (argc - 3) * sizeof *argv);
    memcpy(lens + 3, call->argvlen, (argc - 3) * sizeof *lens);
    /* hiredis copies the arguments into its buffer: nkeys may go. */
    return redisAppendCommandArgv(c, (int)argc, argv, lens) == REDIS_OK
               ? CO_OK : CO_EREDIS;
}

/* Queue call i on n (room for ncalls, allocated on first use). */
static int enqueue(struct node *n, size_t i, size_t ncalls)
{
    if (n->queue == NULL) {
        n->queue = malloc(ncalls * sizeof *n->queue);
        if (n->queue == NULL)
            return CO_ENOMEM;
        n->queue_cap = ncalls;
    } else if (n->queue_cap < ncalls) {
        size_t *q = realloc(n->queue, ncalls * sizeof *q);

        if (q == NULL)
            return CO_ENOMEM;
        n->queue = q;
        n->queue_cap = ncalls;
    }
    n->queue[n->nqueue++] = i;
    return CO_OK;
}

/* SCRIPT LOAD, on n, each distinct script of calls list[0..nlist) (they
 * answered NOSCRIPT there). Returns 0 or CO_EREDIS with err. */
static int load_scripts(struct node *n, const struct co_cluster_call *calls,
                        const size_t *list, size_t nlist, uint64_t deadline,
                        char *err, size_t errlen)
{
    for (size_t k = 0; k < nlist; k++) {
        const struct co_cluster_call *c = &calls[list[k]];
        const char *argv[] = {"SCRIPT", "LOAD", c->script};
        size_t lens[] = {6, 4, c->script_len};
        redisReply *r;
        bool seen = false;

        for (size_t j = 0; j < k && !seen; j++)
            seen = strcmp(calls[list[j]].sha, c->sha) == 0;
        if (seen)
            continue;
        if (n->ctx == NULL) {
            snprintf(err, errlen, "SCRIPT LOAD %.100s:%d: connection lost",
                     n->host, n->port);
            return CO_EREDIS;
        }
        r = node_command(n, deadline, 3, argv, lens, err, errlen);
        if (r == NULL)
            return CO_EREDIS;
        if (r->type != REDIS_REPLY_STRING || strlen(c->sha) != r->len ||
            strncasecmp(r->str, c->sha, r->len) != 0) {
            snprintf(err, errlen, "SCRIPT LOAD %.100s:%d: unexpected reply "
                     "%.80s", n->host, n->port,
                     r->type == REDIS_REPLY_ERROR ? r->str : "");
            freeReplyObject(r);
            return CO_EREDIS;
        }
        freeReplyObject(r);
        CO_INFO("msg=redis_script_loaded reason=noscript node=%.100s:%d "
                "script=%.40s", n->host, n->port, c->sha);
    }
    return CO_OK;
}

/* Log the first failure after success and the first success after a
 * failure: one line per change of state per thread. */
static void note_outcome(struct co_cluster *cc, int rc, const char *why)
{
    char v[400];

    if (rc != CO_OK && !cc->failing)
        CO_WARN("msg=redis_cluster_failing detail=%s",
                co_log_value(v, sizeof v, why, strlen(why)));
    else if (rc == CO_OK && cc->failing)
        CO_INFO("msg=redis_cluster_ok");
    cc->failing = rc != CO_OK;
}

/* Check each call's keys share a slot and fill ctl; *maxargc is the
 * longest argv. CO_EINVAL names the first offender. */
static int plan(const struct co_cluster_call *calls, size_t ncalls,
                struct call_ctl *ctl, size_t *maxargc, char *err,
                size_t errlen)
{
    *maxargc = 1;
    for (size_t i = 0; i < ncalls; i++) {
        const struct co_cluster_call *c = &calls[i];
        bool plain = c->sha == NULL;
        size_t argc = plain ? c->nargs : 3 + c->nkeys + c->nargs;
        size_t k0 = plain ? 1 : 0;   /* where the keys start in argv */

        if (c->nkeys == 0 || (!plain && c->script == NULL) ||
            (plain && c->nargs < 1 + c->nkeys) || argc > INT_MAX) {
            snprintf(err, errlen, "call %zu: no keys, no script or a bad "
                     "argument count", i);
            return CO_EINVAL;
        }
        ctl[i].slot = co_cluster_keyslot(c->argv[k0], c->argvlen[k0]);
        for (size_t k = 1; k < c->nkeys; k++) {
            unsigned s = co_cluster_keyslot(c->argv[k0 + k],
                                            c->argvlen[k0 + k]);

            if (s != ctl[i].slot) {
                snprintf(err, errlen, "call %zu: CROSSSLOT: key 0 in slot "
                         "%u, key %zu in slot %u", i, ctl[i].slot, k, s);
                return CO_EINVAL;
            }
        }
        ctl[i].ask = -1;
        ctl[i].state = PENDING;
        if (argc > *maxargc)
            *maxargc = argc;
    }
    return CO_OK;
}

/* Sleep for ms, but not past deadline. */
static void pause_until(unsigned ms, uint64_t deadline)
{
    uint64_t now = co_mono_ms();
    struct timespec ts;

    if (now >= deadline)
        return;
    if (deadline - now < ms)
        ms = (unsigned)(deadline - now);
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* Classify call's reply r (taken: kept in the call or freed). Returns
 * true when the call answered NOSCRIPT (its script must be loaded on
 * the node before it is resent). */
static bool classify(struct co_cluster *cc, struct co_cluster_call *call,
                     struct call_ctl *ctl, redisReply *r, struct round *rd)
{
    unsigned slot;
    int idx;
    char why[400];

    if (r->type != REDIS_REPLY_ERROR) {
        call->reply = r;
        ctl->state = DONE;
        return false;
    }
    if (is_error(r, "MOVED") || is_error(r, "ASK")) {
        bool moved = r->str[0] == 'M';

        idx = redirect_target(cc, r, moved ? 6 : 4, &slot);
        if (idx < 0 || slot != ctl->slot) {
            snprintf(why, sizeof why, "bad redirection: %.200s", r->str);
            fail_call(ctl, rd, why);
        } else if (moved) {
            cc->owner[slot] = (int16_t)idx;   /* the rest at next refresh */
            cc->refresh_due = true;
            ctl->ask = -1;
        } else {
            ctl->ask = idx;
        }
        freeReplyObject(r);
        return false;
    }
    if (is_error(r, "TRYAGAIN") || is_error(r, "CLUSTERDOWN") ||
        is_error(r, "LOADING")) {
        snprintf(rd->retry_why, sizeof rd->retry_why, "%.200s", r->str);
        rd->retry_later = true;
        if (r->str[0] == 'C')
            rd->refresh_now = true;
        freeReplyObject(r);
        return false;
    }
    if (is_error(r, "NOSCRIPT") && call->sha != NULL) {
        freeReplyObject(r);
        return true;
    }
    call->reply = r;          /* the script's own error: final */
    ctl->state = DONE;
    return false;
}

/* One round: queue every pending call on its node (connecting if need
 * be), write all pipelines, read them all, classify. Returns 0 or
 * CO_ENOMEM. */
static int run_round(struct co_cluster *cc, struct co_cluster_call *calls,
                     size_t ncalls, struct call_ctl *ctl, unsigned round,
                     uint64_t deadline, const char **argv, size_t *lens,
                     size_t *loads, struct round *rd)
{
    char why[400], m[600];

    for (size_t k = 0; k < cc->nnodes; k++)
        cc->nodes[k]->unreachable = false;
    for (size_t i = 0; i < ncalls; i++) {
        struct node *n;
        int idx;

        if (ctl[i].state != PENDING)
            continue;
        if (co_mono_ms() >= deadline || round >= ROUNDS_MAX) {
            snprintf(m, sizeof m, "%s after %u rounds%s%s",
                     round >= ROUNDS_MAX ? "gave up" : "timed out", round,
                     rd->retry_why[0] ? ": " : "", rd->retry_why);
            fail_call(&ctl[i], rd, m);
            continue;
        }
        idx = ctl[i].ask >= 0 ? ctl[i].ask : cc->owner[ctl[i].slot];
        if (idx < 0) {
            snprintf(m, sizeof m, "slot %u not served", ctl[i].slot);
            cc->refresh_due = true;
            fail_call(&ctl[i], rd, m);
            continue;
        }
        n = cc->nodes[idx];
        if (n->unreachable)
            continue;
        if (node_conn(cc, n, deadline, why, sizeof why) == NULL) {
            /* nothing was sent: retry after a refresh and a pause */
            n->unreachable = true;
            rd->retry_later = true;
            rd->refresh_now = true;
            snprintf(rd->retry_why, sizeof rd->retry_why, "%s", why);
            continue;
        }
        if (enqueue(n, i, ncalls) != CO_OK ||
            append_call(n->ctx, &calls[i], ctl[i].ask >= 0, argv, lens) !=
                CO_OK)
            return CO_ENOMEM;
    }
    for (size_t k = 0; k < cc->nnodes; k++) {
        struct node *n = cc->nodes[k];

        if (n->nqueue == 0 ||
            flush_by(n->ctx, deadline, why, sizeof why) == CO_OK)
            continue;
        snprintf(m, sizeof m, "write %.100s:%d: %s", n->host, n->port, why);
        for (size_t q = 0; q < n->nqueue; q++)   /* may have run */
            fail_call(&ctl[n->queue[q]], rd, m);
        node_drop(n);
        n->nqueue = 0;
        rd->refresh_now = true;
    }
    for (size_t k = 0; k < cc->nnodes; k++) {
        struct node *n = cc->nodes[k];
        size_t nloads = 0, q = 0;

        for (; q < n->nqueue; q++) {
            size_t i = n->queue[q];
            redisReply *r = NULL;

            if (ctl[i].ask >= 0) {
                if (read_by(n->ctx, deadline, &r, why, sizeof why) != CO_OK)
                    break;
                freeReplyObject(r);   /* ASKING's +OK */
                r = NULL;
            }
            if (read_by(n->ctx, deadline, &r, why, sizeof why) != CO_OK)
                break;
            if (classify(cc, &calls[i], &ctl[i], r, rd))
                loads[nloads++] = i;
        }
        if (q < n->nqueue) {
            /* this call and the rest of the pipeline may have run */
            snprintf(m, sizeof m, "read %.100s:%d: %s", n->host, n->port, why);
            for (; q < n->nqueue; q++)
                fail_call(&ctl[n->queue[q]], rd, m);
            node_drop(n);
            rd->refresh_now = true;
        }
        n->nqueue = 0;
        if (nloads > 0 && load_scripts(n, calls, loads, nloads, deadline,
                                       why, sizeof why) != CO_OK)
            for (size_t j = 0; j < nloads; j++)
                fail_call(&ctl[loads[j]], rd, why);
    }
    return CO_OK;
}

/* Contract in tollgated.h. The map is refreshed before the batch when it
 * is missing, due (MOVED, a failure) or old; during the batch only when
 * a node could not be reached or said CLUSTERDOWN (a failover in
 * progress: the next map may name the new master). */
int co_cluster_run(struct co_cluster *cc, struct co_cluster_call *calls,
                   size_t ncalls, uint64_t deadline, char *err,
                   size_t errlen)
{
    struct call_ctl *ctl = calloc(ncalls ? ncalls : 1, sizeof *ctl);
    struct round rd = {.first = ""};
    const char **argv = NULL;
    size_t *lens = NULL, maxargc, *loads = NULL;
    unsigned pause_ms = 0;
    bool pending = ncalls > 0;
    char why[400];
    int rc;

    for (size_t i = 0; i < ncalls; i++)
        calls[i].reply = NULL;
    if (ctl == NULL) {
        snprintf(err, errlen, "out of memory");
        return CO_ENOMEM;
    }
    rc = plan(calls, ncalls, ctl, &maxargc, err, errlen);
    if (rc != CO_OK)
        goto cleanup;
    rc = CO_ENOMEM;
    argv = malloc(maxargc * sizeof *argv);
    lens = malloc(maxargc * sizeof *lens);
    loads = malloc((ncalls ? ncalls : 1) * sizeof *loads);
    if (argv == NULL || lens == NULL || loads == NULL)
        goto nomem;
    rd.refresh_now = !cc->have_map || cc->refresh_due ||
                     co_mono_ms() >= cc->next_refresh_ms;
    for (unsigned round = 0; pending; round++) {
        if (pause_ms > 0)
            pause_until(pause_ms, deadline);
        if (rd.refresh_now) {
            int r = co_cluster_refresh(cc, deadline, why, sizeof why);

            if (r == CO_ENOMEM)
                goto nomem;
            rd.refresh_now = false;
            if (!cc->have_map) {
                for (size_t i = 0; i < ncalls; i++)
                    fail_call(&ctl[i], &rd, why);
                break;
            }
        }
        rd.retry_later = false;
        if (run_round(cc, calls, ncalls, ctl, round, deadline, argv, lens,
                      loads, &rd) != CO_OK)
            goto nomem;
        pause_ms = !rd.retry_later ? 0
                   : pause_ms == 0 ? PAUSE_FIRST_MS
                   : pause_ms * 2 > PAUSE_MAX_MS ? PAUSE_MAX_MS
                   : pause_ms * 2;
        pending = false;
        for (size_t i = 0; i < ncalls; i++)
            pending = pending || ctl[i].state == PENDING;
    }
    rc = CO_OK;
    for (size_t i = 0; i < ncalls; i++)
        if (ctl[i].state != DONE)
            rc = CO_EREDIS;
    if (rc != CO_OK)
        snprintf(err, errlen, "%s", rd.first[0] ? rd.first : "no reply");
    note_outcome(cc, rc, err);
    goto cleanup;
nomem:
    snprintf(err, errlen, "out of memory");
    rc = CO_ENOMEM;
cleanup:
    for (size_t k = 0; k < cc->nnodes; k++)
        cc->nodes[k]->nqueue = 0;
    free(loads);
    free(lens);
    free(argv);
    free(ctl);
    return rc;
}

/* ------------------------------------------------------------ detect */

/* Contract in tollgated.h. */
int co_cluster_detect(const struct co_cluster_config *cfg, char *err,
                      size_t errlen)
{
    struct co_cluster *cc = co_cluster_new(cfg);
    const char *argv[] = {"CLUSTER", "SLOTS"};
    size_t failed = 0;
    char why[400];
    int rc = CO_EREDIS;

    if (cc == NULL) {
        snprintf(err, errlen, "out of memory");
        return CO_ENOMEM;
    }
    err[0] = '\0';
    for (size_t i = 0; i < cc->nseeds && rc == CO_EREDIS; i++) {
        uint64_t deadline = co_mono_ms() + cc->connect_timeout_ms;
        char host[HOST_MAX];
        int port, idx;
        redisReply *r;

        if (parse_hostport(cc->seeds[i], strlen(cc->seeds[i]), host,
                           &port) != CO_OK) {
            snprintf(why, sizeof why, "seed \"%.100s\" is not host:port",
                     cc->seeds[i]);
            goto next;
        }
        idx = node_index(cc, host, port);
        if (idx < 0 ||
            node_conn(cc, cc->nodes[idx], deadline, why, sizeof why) == NULL)
            goto next;
        r = node_command(cc->nodes[idx], deadline, 2, argv, NULL, why,
                         sizeof why);
        if (r == NULL)
            goto next;
        if (cluster_disabled(r))
            rc = CO_CLUSTER_MODE_SINGLE;
        else if (r->type == REDIS_REPLY_ARRAY)
            rc = CO_CLUSTER_MODE_CLUSTER;
        else
            snprintf(why, sizeof why, "CLUSTER SLOTS %s: %.120s",
                     cc->seeds[i],
                     r->type == REDIS_REPLY_ERROR ? r->str
                                                  : "unexpected reply");
        freeReplyObject(r);
        if (rc != CO_EREDIS)
            break;
next:
        if (failed++ == 0)
            snprintf(err, errlen, "%s", why);
    }
    if (rc == CO_EREDIS && failed > 1) {
        size_t len = strlen(err);

        snprintf(err + len, errlen - len, " (and %zu more seeds failed)",
                 failed - 1);
    }
    if (rc == CO_EREDIS && err[0] == '\0')
        snprintf(err, errlen, "no seed node");
    co_cluster_free(cc);
    return rc;
}

/* ------------------------------------------------------------ readiness */

/* Contract in tollgated.h. */
int co_cluster_check(struct co_cluster *cc, uint64_t deadline, char *err,
                     size_t errlen)
{
    const char *argv[] = {"CLUSTER", "INFO"};
    bool asked[CO_CLUSTER_NODES_MAX] = {false};
    int rc = co_cluster_refresh(cc, deadline, err, errlen);

    if (rc != CO_OK)
        goto done;
    for (size_t s = 0; s < CO_CLUSTER_SLOTS; s++) {
        struct node *n = cc->nodes[cc->owner[s]];
        redisReply *r;
        bool ok;

        if (asked[cc->owner[s]])
            continue;
        asked[cc->owner[s]] = true;
        if (node_conn(cc, n, deadline, err, errlen) == NULL) {
            rc = CO_EREDIS;
            break;
        }
        r = node_command(n, deadline, 2, argv, NULL, err, errlen);
        if (r == NULL) {
            rc = CO_EREDIS;
            break;
        }
        ok = r->type == REDIS_REPLY_STRING &&
             strstr(r->str, "cluster_state:ok") != NULL;
        if (!ok)
            snprintf(err, errlen, "%.100s:%d: cluster down (%.60s)", n->host,
                     n->port,
                     r->type == REDIS_REPLY_ERROR ? r->str
                     : r->type == REDIS_REPLY_STRING &&
                           strstr(r->str, "cluster_state:fail") != NULL
                         ? "cluster_state:fail"
                         : "unexpected CLUSTER INFO reply");
        freeReplyObject(r);
        if (!ok) {
            rc = CO_EREDIS;
            break;
        }
    }
done:
    note_outcome(cc, rc, err);
    return rc;
}
