/* test_co_cluster.c — the Redis Cluster router (cluster.c) against fake
 * nodes.
 *
 * Each fake node is a loopback listener speaking RESP, served by one
 * thread of this test: it parses the router's commands with hiredis's
 * own reader and answers as a cluster node would in the case under test
 * (CLUSTER SLOTS, MOVED, ASK, TRYAGAIN, CLUSTERDOWN, NOSCRIPT), or as a
 * broken one would (garbage, silence, a malformed slot map). A script
 * call is answered with the fake's port, so a test sees which node ran
 * it. The key slot is checked against the specification's CRC16 test
 * vector and examples; a real single-node redis-server answers the
 * cluster-mode probe. Real clusters: test_co_cluster_real.c.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis.h>

#include "tollgated.h"
#include "test_redis_server.h"

#define NFAKES    3
#define NCLIENTS  32

static const char script[] = "return 1";
static char sha[41];

/* What a fake node does; reset before every test. */
struct fake {
    int lfd;
    int port;
    char slots[2048];        /* raw RESP answer to CLUSTER SLOTS */
    char info[256];          /* CLUSTER INFO's text */
    char moved_to[64];       /* EVALSHA -> MOVED <slot> moved_to */
    char ask_to[64];         /* EVALSHA -> ASK <slot> ask_to */
    bool need_asking;        /* EVALSHA without ASKING before -> MOVED */
    int tryagain;            /* answer TRYAGAIN this many times first */
    bool clusterdown;        /* answer CLUSTERDOWN always */
    bool noscript;           /* NOSCRIPT until SCRIPT LOAD */
    bool garbage;            /* EVALSHA -> bytes that are not RESP */
    bool silent;             /* EVALSHA -> nothing at all */
    /* what it saw */
    int n_slots, n_evalsha, n_get, n_asking, n_load, n_info;
    char last_key[128];
};

struct client {
    int fd;
    struct fake *f;
    redisReader *rd;
    bool asking;
};

static struct fake fakes[NFAKES];
static struct client clients[NCLIENTS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t server;
static int stop_pipe[2];

static void say(int fd, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0 && write(fd, buf, (size_t)n) != n)
        return;   /* the router hung up: its problem */
}

static bool is(const redisReply *a, const char *s)
{
    return a->type == REDIS_REPLY_STRING && strcasecmp(a->str, s) == 0;
}

/* Answer one command r from client c (under mu). */
static void handle(struct client *c, const redisReply *r)
{
    struct fake *f = c->f;
    bool asking = c->asking;

    c->asking = false;
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0)
        return say(c->fd, "-ERR bad request\r\n");
    if (is(r->element[0], "CLUSTER") && r->elements == 2 &&
        is(r->element[1], "SLOTS")) {
        f->n_slots++;
        return say(c->fd, "%s", f->slots);
    }
    if (is(r->element[0], "CLUSTER") && r->elements == 2 &&
        is(r->element[1], "INFO")) {
        f->n_info++;
        return say(c->fd, "$%zu\r\n%s\r\n", strlen(f->info), f->info);
    }
    if (is(r->element[0], "ASKING")) {
        f->n_asking++;
        c->asking = true;
        return say(c->fd, "+OK\r\n");
    }
    if (is(r->element[0], "SCRIPT") && r->elements == 3) {
        char h[41];

        f->n_load++;
        f->noscript = false;
        co_sha1_hex(r->element[2]->str, r->element[2]->len, h);
        return say(c->fd, "$40\r\n%s\r\n", h);
    }
    if ((is(r->element[0], "EVALSHA") && r->elements >= 4) ||
        (is(r->element[0], "GET") && r->elements == 2)) {
        bool eval = is(r->element[0], "EVALSHA");
        const redisReply *key = r->element[eval ? 3 : 1];
        unsigned slot = co_cluster_keyslot(key->str, key->len);

        if (eval)
            f->n_evalsha++;
        else
            f->n_get++;
        snprintf(f->last_key, sizeof f->last_key, "%s", key->str);
        if (f->garbage)
            return say(c->fd, "hello there\r\n");
        if (f->silent)
            return;
        if (f->clusterdown)
            return say(c->fd, "-CLUSTERDOWN The cluster is down\r\n");
        if (f->tryagain > 0) {
            f->tryagain--;
            return say(c->fd, "-TRYAGAIN Multiple keys request during "
                       "rehashing of slot\r\n");
        }
        if (f->moved_to[0])
            return say(c->fd, "-MOVED %u %s\r\n", slot, f->moved_to);
        if (f->ask_to[0])
            return say(c->fd, "-ASK %u %s\r\n", slot, f->ask_to);
        if (f->need_asking && !asking)
            return say(c->fd, "-MOVED %u 127.0.0.1:1\r\n", slot);
        if (f->noscript && eval)
            return say(c->fd, "-NOSCRIPT No matching script. Please use "
                       "EVAL.\r\n");
        return say(c->fd, eval ? "*1\r\n:%d\r\n" : "$5\r\n%d\r\n",
                   f->port);
    }
    say(c->fd, "-ERR unknown command\r\n");
}

static void client_close(struct client *c)
{
    close(c->fd);
    redisReaderFree(c->rd);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* The fake nodes' one thread: accept, read, answer, until stop_pipe. */
static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[1 + NFAKES + NCLIENTS];
        int np = 0;

        p[np++] = (struct pollfd){.fd = stop_pipe[0], .events = POLLIN};
        for (int i = 0; i < NFAKES; i++)
            p[np++] = (struct pollfd){.fd = fakes[i].lfd, .events = POLLIN};
        for (int i = 0; i < NCLIENTS; i++)
            p[np++] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};
        if (poll(p, (nfds_t)np, -1) < 0 && errno != EINTR)
            return NULL;
        if (p[0].revents)
            return NULL;
        for (int i = 0; i < NFAKES; i++) {
            int fd;

            if (!p[1 + i].revents)
                continue;
            fd = accept(fakes[i].lfd, NULL, NULL);
            for (int k = 0; fd >= 0 && k < NCLIENTS; k++)
                if (clients[k].fd < 0) {
                    clients[k].fd = fd;
                    clients[k].f = &fakes[i];
                    clients[k].rd = redisReaderCreate();
                    fd = -1;
                }
            if (fd >= 0)
                close(fd);
        }
        for (int k = 0; k < NCLIENTS; k++) {
            struct client *c = &clients[k];
            char buf[65536];
            ssize_t n;
            void *r;

            if (c->fd < 0 || !p[1 + NFAKES + k].revents)
                continue;
            n = read(c->fd, buf, sizeof buf);
            if (n <= 0) {
                client_close(c);
                continue;
            }
            redisReaderFeed(c->rd, buf, (size_t)n);
            pthread_mutex_lock(&mu);
            while (redisReaderGetReply(c->rd, &r) == REDIS_OK && r != NULL) {
                handle(c, r);
                freeReplyObject(r);
            }
            pthread_mutex_unlock(&mu);
        }
    }
}

/* CLUSTER SLOTS answer: ranges [lo,hi] served by fakes[who] each. */
static void slots_reply(char *out, size_t len, int n, const int *lo,
                        const int *hi, const int *who)
{
    size_t o = (size_t)snprintf(out, len, "*%d\r\n", n);

    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, len - o,
                              "*3\r\n:%d\r\n:%d\r\n*3\r\n$9\r\n127.0.0.1\r\n"
                              ":%d\r\n$40\r\n%040d\r\n",
                              lo[i], hi[i], fakes[who[i]].port, who[i]);
}

/* Every fake back to a healthy node; fakes[0] serves every slot. */
static int reset(void **state)
{
    (void)state;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < NFAKES; i++) {
        int lfd = fakes[i].lfd, port = fakes[i].port;
        int lo = 0, hi = 16383, who = 0;

        memset(&fakes[i], 0, sizeof fakes[i]);
        fakes[i].lfd = lfd;
        fakes[i].port = port;
        slots_reply(fakes[i].slots, sizeof fakes[i].slots, 1, &lo, &hi,
                    &who);
        snprintf(fakes[i].info, sizeof fakes[i].info,
                 "cluster_state:ok\r\ncluster_slots_assigned:16384\r\n");
    }
    pthread_mutex_unlock(&mu);
    return 0;
}

static int start_fakes(void **state)
{
    co_sha1_hex(script, strlen(script), sha);
    for (int i = 0; i < NCLIENTS; i++)
        clients[i].fd = -1;
    for (int i = 0; i < NFAKES; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        socklen_t len = sizeof sa;

        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fakes[i].lfd = socket(AF_INET, SOCK_STREAM, 0);
        if (fakes[i].lfd < 0 ||
            bind(fakes[i].lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
            listen(fakes[i].lfd, 16) != 0 ||
            getsockname(fakes[i].lfd, (struct sockaddr *)&sa, &len) != 0)
            return -1;
        fakes[i].port = ntohs(sa.sin_port);
    }
    if (pipe(stop_pipe) != 0 ||
        pthread_create(&server, NULL, serve, NULL) != 0)
        return -1;
    return reset(state);
}

static int stop_fakes(void **state)
{
    (void)state;
    if (write(stop_pipe[1], "x", 1) != 1)
        return -1;
    pthread_join(server, NULL);
    for (int k = 0; k < NCLIENTS; k++)
        if (clients[k].fd >= 0)
            client_close(&clients[k]);
    for (int i = 0; i < NFAKES; i++)
        close(fakes[i].lfd);
    return 0;
}

/* A router seeded with fakes[who]. */
static struct co_cluster *router(int who)
{
    static char seed[NFAKES][32];
    static const char *seeds[NFAKES];
    struct co_cluster_config cfg = {.nseeds = 1, .connect_timeout_ms = 500};
    struct co_cluster *cc;

    snprintf(seed[who], sizeof seed[who], "127.0.0.1:%d", fakes[who].port);
    seeds[0] = seed[who];
    cfg.seeds = seeds;
    cc = co_cluster_new(&cfg);
    assert_non_null(cc);
    return cc;
}

/* One script call on key (the caller frees call->reply). */
static void one_call(struct co_cluster_call *call, const char **key,
                     size_t *klen)
{
    *klen = strlen(*key);
    memset(call, 0, sizeof *call);
    call->sha = sha;
    call->script = script;
    call->script_len = strlen(script);
    call->nkeys = 1;
    call->argv = key;
    call->argvlen = klen;
}

/* Run one call on key before now + ms; returns the port that ran it, or
 * the router's negative code (err filled). */
static long long run_key(struct co_cluster *cc, const char *key,
                         unsigned ms, char *err, size_t errlen)
{
    struct co_cluster_call call;
    const char *k = key;
    size_t klen;
    long long port;
    int rc;

    one_call(&call, &k, &klen);
    rc = co_cluster_run(cc, &call, 1, co_mono_ms() + ms, err, errlen);
    if (rc != CO_OK) {
        assert_null(call.reply);
        return rc;
    }
    assert_non_null(call.reply);
    assert_int_equal(call.reply->type, REDIS_REPLY_ARRAY);
    port = call.reply->element[0]->integer;
    freeReplyObject(call.reply);
    return port;
}

static int peek(int *counter)
{
    int v;

    pthread_mutex_lock(&mu);
    v = *counter;
    pthread_mutex_unlock(&mu);
    return v;
}

/* ------------------------------------------------------------ key slot */

/* The cluster specification's vectors: CRC16/XMODEM of "123456789" is
 * 0x31C3; its hash-tag examples; and the CLUSTER KEYSLOT examples of the
 * command's documentation (somekey 11058, {user1}.following 8106). */
static void test_keyslot_vectors(void **state)
{
#define SLOT(s) co_cluster_keyslot(s, strlen(s))
    (void)state;
    assert_int_equal(SLOT("123456789"), 0x31C3);
    assert_int_equal(SLOT("somekey"), 11058);
    assert_int_equal(SLOT("{user1}.following"), 8106);
    assert_int_equal(SLOT("{user1000}.following"),
                     SLOT("{user1000}.followers"));
    assert_int_equal(SLOT("foo{}{bar}"),
                     co_cluster_keyslot("foo{}{bar}", 10));
    assert_int_not_equal(SLOT("foo{}{bar}"), SLOT("bar"));
    assert_int_equal(SLOT("foo{{bar}}zap"), SLOT("{bar"));
    assert_int_equal(SLOT("foo{bar}{zap}"), SLOT("bar"));
    assert_int_equal(SLOT("{"), SLOT("{"));
    assert_int_equal(co_cluster_keyslot("", 0), 0);
    /* bytes after a NUL count: keys are binary */
    assert_int_not_equal(co_cluster_keyslot("a\0b", 3),
                         co_cluster_keyslot("a", 1));
#undef SLOT
}

/* ------------------------------------------------------------ detect */

static void test_detect(void **state)
{
    struct test_redis single;
    char seed[32], err[512];
    const char *seeds[3];
    struct co_cluster_config cfg = {.seeds = seeds, .connect_timeout_ms = 500};

    (void)state;
    /* a real redis-server without cluster support */
    assert_int_equal(test_redis_start(&single), 0);
    snprintf(seed, sizeof seed, "127.0.0.1:%d", single.port);
    seeds[0] = seed;
    cfg.nseeds = 1;
    assert_int_equal(co_cluster_detect(&cfg, err, sizeof err),
                     CO_CLUSTER_MODE_SINGLE);
    test_redis_stop(&single);

    /* a fake cluster node */
    snprintf(seed, sizeof seed, "127.0.0.1:%d", fakes[0].port);
    assert_int_equal(co_cluster_detect(&cfg, err, sizeof err),
                     CO_CLUSTER_MODE_CLUSTER);

    /* the first seed that answers decides; bad ones are skipped */
    seeds[0] = "no-port-here";
    seeds[1] = "127.0.0.1:1";
    seeds[2] = seed;
    cfg.nseeds = 3;
    assert_int_equal(co_cluster_detect(&cfg, err, sizeof err),
                     CO_CLUSTER_MODE_CLUSTER);

    /* none answers: one line naming the first and counting the rest */
    cfg.nseeds = 2;
    assert_int_equal(co_cluster_detect(&cfg, err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "no-port-here"));
    assert_non_null(strstr(err, "1 more seeds failed"));

    /* a node speaking garbage */
    fakes[1].garbage = true;
    snprintf(fakes[1].slots, sizeof fakes[1].slots, "hello there\r\n");
    snprintf(seed, sizeof seed, "127.0.0.1:%d", fakes[1].port);
    seeds[0] = seed;
    cfg.nseeds = 1;
    assert_int_equal(co_cluster_detect(&cfg, err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "Protocol error"));
}

/* ------------------------------------------------------------ routing */

/* Two masters split the slots; each call runs where its slot lives, the
 * calls of one node pipelined (one CLUSTER SLOTS, every call once). */
static void test_routes_by_slot(void **state)
{
    int lo[] = {0, 8192}, hi[] = {8191, 16383}, who[] = {0, 1};
    enum { N = 40 };
    struct co_cluster_call calls[N];
    const char *keys[N];
    size_t lens[N];
    char names[N][16], err[512];
    struct co_cluster *cc;
    int on0 = 0, on1 = 0;

    (void)state;
    slots_reply(fakes[0].slots, sizeof fakes[0].slots, 2, lo, hi, who);
    cc = router(0);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        keys[i] = names[i];
        one_call(&calls[i], &keys[i], &lens[i]);
        if (co_cluster_keyslot(names[i], strlen(names[i])) < 8192)
            on0++;
        else
            on1++;
    }
    assert_true(on0 > 0 && on1 > 0);
    assert_int_equal(co_cluster_run(cc, calls, N, co_mono_ms() + 2000, err,
                                    sizeof err), CO_OK);
    for (int i = 0; i < N; i++) {
        unsigned slot = co_cluster_keyslot(names[i], strlen(names[i]));

        assert_int_equal(calls[i].reply->element[0]->integer,
                         fakes[slot < 8192 ? 0 : 1].port);
        freeReplyObject(calls[i].reply);
    }
    assert_int_equal(peek(&fakes[0].n_slots), 1);
    assert_int_equal(peek(&fakes[0].n_evalsha), on0);
    assert_int_equal(peek(&fakes[1].n_evalsha), on1);
    co_cluster_free(cc);
}

/* A call whose keys are in different slots is refused before anything
 * is sent; keys sharing a hash tag are one slot. */
static void test_crossslot_refused(void **state)
{
    const char *keys[] = {"a", "b"}, *tagged[] = {"{t}a", "{t}b"};
    size_t lens[] = {1, 1}, tlens[] = {4, 4};
    struct co_cluster_call call = {.sha = sha, .script = script,
                                   .script_len = sizeof script - 1,
                                   .nkeys = 2, .argv = keys,
                                   .argvlen = lens};
    struct co_cluster *cc = router(0);
    char err[512];

    (void)state;
    assert_int_equal(co_cluster_run(cc, &call, 1, co_mono_ms() + 1000, err,
                                    sizeof err), CO_EINVAL);
    assert_non_null(strstr(err, "CROSSSLOT"));
    assert_int_equal(peek(&fakes[0].n_slots), 0);
    assert_int_equal(peek(&fakes[0].n_evalsha), 0);
    call.nkeys = 0;
    assert_int_equal(co_cluster_run(cc, &call, 1, co_mono_ms() + 1000, err,
                                    sizeof err), CO_EINVAL);
    call.nkeys = 2;
    call.argv = tagged;
    call.argvlen = tlens;
    assert_int_equal(co_cluster_run(cc, &call, 1, co_mono_ms() + 1000, err,
                                    sizeof err), CO_OK);
    freeReplyObject(call.reply);
    assert_int_equal(peek(&fakes[0].n_evalsha), 1);
    co_cluster_free(cc);
}

/* MOVED: the call runs on the new owner, the slot is updated at once,
 * and the whole map is refreshed before the next batch. */
static void test_moved(void **state)
{
    struct co_cluster *cc = router(0);
    unsigned slot = co_cluster_keyslot("k1", 2);
    char err[512], owner[64], want[64];

    (void)state;
    snprintf(fakes[0].moved_to, sizeof fakes[0].moved_to, "127.0.0.1:%d",
             fakes[1].port);
    assert_int_equal(run_key(cc, "k1", 2000, err, sizeof err),
                     fakes[1].port);
    assert_int_equal(co_cluster_slot_owner(cc, slot, owner, sizeof owner),
                     CO_OK);
    snprintf(want, sizeof want, "127.0.0.1:%d", fakes[1].port);
    assert_string_equal(owner, want);
    assert_int_equal(peek(&fakes[0].n_evalsha), 1);
    assert_int_equal(peek(&fakes[0].n_slots), 1);
    /* next batch: a full refresh first (fakes[0] still claims all) */
    assert_int_equal(run_key(cc, "k1", 2000, err, sizeof err),
                     fakes[1].port);
    assert_int_equal(peek(&fakes[0].n_slots), 2);
    co_cluster_free(cc);
}

/* ASK: ASKING then the call on the target; the map keeps the old owner,
 * so the next call goes there first again. */
static void test_ask(void **state)
{
    struct co_cluster *cc = router(0);
    char err[512], owner[64], want[64];

    (void)state;
    snprintf(fakes[0].ask_to, sizeof fakes[0].ask_to, "127.0.0.1:%d",
             fakes[2].port);
    fakes[2].need_asking = true;
    assert_int_equal(run_key(cc, "k2", 2000, err, sizeof err),
                     fakes[2].port);
    assert_int_equal(peek(&fakes[2].n_asking), 1);
    assert_int_equal(co_cluster_slot_owner(cc, co_cluster_keyslot("k2", 2),
                                           owner, sizeof owner), CO_OK);
    snprintf(want, sizeof want, "127.0.0.1:%d", fakes[0].port);
    assert_string_equal(owner, want);
    assert_int_equal(run_key(cc, "k2", 2000, err, sizeof err),
                     fakes[2].port);
    assert_int_equal(peek(&fakes[0].n_evalsha), 2);
    assert_int_equal(peek(&fakes[2].n_asking), 2);
    assert_int_equal(peek(&fakes[0].n_slots), 1);   /* no refresh */
    co_cluster_free(cc);
}

/* A plain command (sha NULL) is routed by its key, argv[1], and
 * follows MOVED and ASK like a script call. */
static void test_plain_command(void **state)
{
    struct co_cluster *cc = router(0);
    const char *argv[] = {"GET", "k11"};
    size_t lens[] = {3, 3};
    struct co_cluster_call call = {.nkeys = 1, .nargs = 2, .argv = argv,
                                   .argvlen = lens};
    char err[512];

    (void)state;
    snprintf(fakes[0].moved_to, sizeof fakes[0].moved_to, "127.0.0.1:%d",
             fakes[1].port);
    fakes[1].noscript = true;      /* not a script: never reloaded */
    assert_int_equal(co_cluster_run(cc, &call, 1, co_mono_ms() + 2000, err,
                                    sizeof err), CO_OK);
    assert_int_equal(call.reply->type, REDIS_REPLY_STRING);
    assert_int_equal(atoi(call.reply->str), fakes[1].port);
    freeReplyObject(call.reply);
    assert_int_equal(peek(&fakes[0].n_get), 1);
    assert_int_equal(peek(&fakes[1].n_get), 1);
    assert_int_equal(peek(&fakes[1].n_load), 0);
    call.nargs = 1;                /* no room for its key */
    assert_int_equal(co_cluster_run(cc, &call, 1, co_mono_ms() + 2000, err,
                                    sizeof err), CO_EINVAL);
    co_cluster_free(cc);
}

/* TRYAGAIN: retried after a pause until it clears. */
static void test_tryagain(void **state)
{
    struct co_cluster *cc = router(0);
    char err[512];

    (void)state;
    fakes[0].tryagain = 3;
    assert_int_equal(run_key(cc, "k3", 2000, err, sizeof err),
                     fakes[0].port);
    assert_int_equal(peek(&fakes[0].n_evalsha), 4);
    co_cluster_free(cc);
}

/* CLUSTERDOWN that never clears: retried within the deadline only, then
 * one error naming it. */
static void test_clusterdown_bounded(void **state)
{
    struct co_cluster *cc = router(0);
    uint64_t deadline = co_mono_ms() + 300;
    struct co_cluster_call call;
    const char *k = "k4";
    size_t klen;
    char err[512];

    (void)state;
    fakes[0].clusterdown = true;
    one_call(&call, &k, &klen);
    assert_int_equal(co_cluster_run(cc, &call, 1, deadline, err, sizeof err),
                     CO_EREDIS);
    assert_null(call.reply);
    assert_non_null(strstr(err, "CLUSTERDOWN"));
    assert_true(peek(&fakes[0].n_evalsha) >= 2);
    assert_true(co_mono_ms() < deadline + 1000);   /* no hang */
    co_cluster_free(cc);
}

/* NOSCRIPT: SCRIPT LOAD on that node, then the call again. */
static void test_noscript(void **state)
{
    struct co_cluster *cc = router(0);
    char err[512];

    (void)state;
    fakes[0].noscript = true;
    assert_int_equal(run_key(cc, "k5", 2000, err, sizeof err),
                     fakes[0].port);
    assert_int_equal(peek(&fakes[0].n_load), 1);
    assert_int_equal(peek(&fakes[0].n_evalsha), 2);
    co_cluster_free(cc);
}

/* A node answering garbage: an error naming it, no crash, and the
 * router reconnects once the node is sane again. */
static void test_garbage_then_recover(void **state)
{
    struct co_cluster *cc = router(0);
    char err[512];

    (void)state;
    pthread_mutex_lock(&mu);
    fakes[0].garbage = true;
    pthread_mutex_unlock(&mu);
    assert_int_equal(run_key(cc, "k6", 2000, err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "Protocol error"));
    pthread_mutex_lock(&mu);
    fakes[0].garbage = false;
    pthread_mutex_unlock(&mu);
    assert_int_equal(run_key(cc, "k6", 2000, err, sizeof err),
                     fakes[0].port);
    co_cluster_free(cc);
}

/* A node that never answers: the call fails by its deadline. */
static void test_silent_node(void **state)
{
    struct co_cluster *cc = router(0);
    uint64_t deadline;
    char err[512];

    (void)state;
    fakes[0].silent = true;
    deadline = co_mono_ms() + 200;
    assert_int_equal(run_key(cc, "k7", 200, err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "timed out"));
    assert_true(co_mono_ms() < deadline + 1000);
    co_cluster_free(cc);
}

/* A slot map with a hole: refresh and check say which slot, calls to it
 * fail with that reason, calls elsewhere still run. */
static void test_slot_not_served(void **state)
{
    int lo[] = {0}, hi[] = {100}, who[] = {0};
    struct co_cluster *cc;
    char err[512], key[16];
    unsigned k = 0;

    (void)state;
    slots_reply(fakes[0].slots, sizeof fakes[0].slots, 1, lo, hi, who);
    cc = router(0);
    assert_int_equal(co_cluster_refresh(cc, co_mono_ms() + 1000, err,
                                        sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "slot 101 not served"));
    assert_int_equal(co_cluster_check(cc, co_mono_ms() + 1000, err,
                                      sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "not served"));
    do
        snprintf(key, sizeof key, "x%u", k++);
    while (co_cluster_keyslot(key, strlen(key)) <= 100);
    assert_int_equal(run_key(cc, key, 1000, err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "not served"));
    do
        snprintf(key, sizeof key, "x%u", k++);
    while (co_cluster_keyslot(key, strlen(key)) > 100);
    assert_int_equal(run_key(cc, key, 1000, err, sizeof err), fakes[0].port);
    co_cluster_free(cc);
}

/* Malformed CLUSTER SLOTS answers are refused with a reason. */
static void test_bad_slot_maps(void **state)
{
    static const char *bad[] = {
        ":5\r\n",
        "*1\r\n*2\r\n:0\r\n:16383\r\n",
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*3\r\n:9\r\n:3\r\n*2\r\n$1\r\nh\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:3\r\n*2\r\n$1\r\nh\r\n:0\r\n",
        "*0\r\n",
    };
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct co_cluster *cc = router(0);

        snprintf(fakes[0].slots, sizeof fakes[0].slots, "%s", bad[i]);
        assert_int_equal(co_cluster_refresh(cc, co_mono_ms() + 1000, err,
                                            sizeof err), CO_EREDIS);
        assert_true(strstr(err, "malformed") || strstr(err, "not an array")
                    || strstr(err, "serves no slot"));
        assert_int_equal(run_key(cc, "k8", 500, err, sizeof err), CO_EREDIS);
        co_cluster_free(cc);
    }
}

/* A seed without cluster support, given to the router anyway. */
static void test_not_a_member(void **state)
{
    struct co_cluster *cc = router(0);
    char err[512];

    (void)state;
    snprintf(fakes[0].slots, sizeof fakes[0].slots,
             "-ERR This instance has cluster support disabled\r\n");
    assert_int_equal(run_key(cc, "k9", 500, err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "not a cluster member"));
    co_cluster_free(cc);
}

/* /readyz's check: every master's CLUSTER INFO must say ok. */
static void test_check_cluster_down(void **state)
{
    int lo[] = {0, 8192}, hi[] = {8191, 16383}, who[] = {0, 1};
    struct co_cluster *cc;
    char err[512];

    (void)state;
    slots_reply(fakes[0].slots, sizeof fakes[0].slots, 2, lo, hi, who);
    cc = router(0);
    assert_int_equal(co_cluster_check(cc, co_mono_ms() + 1000, err,
                                      sizeof err), CO_OK);
    assert_int_equal(peek(&fakes[0].n_info), 1);
    assert_int_equal(peek(&fakes[1].n_info), 1);
    pthread_mutex_lock(&mu);
    snprintf(fakes[1].info, sizeof fakes[1].info, "cluster_state:fail\r\n");
    pthread_mutex_unlock(&mu);
    assert_int_equal(co_cluster_check(cc, co_mono_ms() + 1000, err,
                                      sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "cluster_state:fail"));
    co_cluster_free(cc);
}

/* A master that died: connects are refused, the router retries after
 * refreshing until the deadline, then names the node. */
static void test_unreachable_master(void **state)
{
    struct co_cluster *cc;
    char err[512];
    int dead = test_redis_spare_port();

    (void)state;
    /* the map names a port nobody listens on */
    snprintf(fakes[0].slots, sizeof fakes[0].slots,
             "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n",
             dead);
    cc = router(0);
    assert_int_equal(run_key(cc, "k10", 300, err, sizeof err), CO_EREDIS);
    assert_non_null(strstr(err, "connect"));
    assert_true(peek(&fakes[0].n_slots) >= 2);   /* refreshed meanwhile */
    co_cluster_free(cc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyslot_vectors),
        cmocka_unit_test_setup(test_detect, reset),
        cmocka_unit_test_setup(test_routes_by_slot, reset),
        cmocka_unit_test_setup(test_crossslot_refused, reset),
        cmocka_unit_test_setup(test_moved, reset),
        cmocka_unit_test_setup(test_ask, reset),
        cmocka_unit_test_setup(test_plain_command, reset),
        cmocka_unit_test_setup(test_tryagain, reset),
        cmocka_unit_test_setup(test_clusterdown_bounded, reset),
        cmocka_unit_test_setup(test_noscript, reset),
        cmocka_unit_test_setup(test_garbage_then_recover, reset),
        cmocka_unit_test_setup(test_silent_node, reset),
        cmocka_unit_test_setup(test_slot_not_served, reset),
        cmocka_unit_test_setup(test_bad_slot_maps, reset),
        cmocka_unit_test_setup(test_not_a_member, reset),
        cmocka_unit_test_setup(test_check_cluster_down, reset),
        cmocka_unit_test_setup(test_unreachable_master, reset),
    };

    return cmocka_run_group_tests(tests, start_fakes, stop_fakes);
}
