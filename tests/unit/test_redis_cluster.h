/* test_redis_cluster.h — a throwaway Redis Cluster for tests that need a
 * real one: 3 masters + 3 replicas of redis-server on spare loopback
 * ports (client and cluster-bus ports both asked of the kernel), no
 * persistence, node files in a temporary directory, joined with
 * `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`,
 * and stopped by PID, never by name. Starting one takes a few seconds:
 * start it once per test program and share it between cases.
 * Include it once per test program, after test_redis_server.h (for
 * test_redis_spare_port()); everything here is static.
 */
#ifndef TEST_REDIS_CLUSTER_H
#define TEST_REDIS_CLUSTER_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "test_redis_server.h"

#define TEST_CLUSTER_NODES 6
#define TEST_CLUSTER_NODE_TIMEOUT_MS 2000

struct test_cluster {
    int port[TEST_CLUSTER_NODES];
    int bus[TEST_CLUSTER_NODES];
    pid_t pid[TEST_CLUSTER_NODES];     /* -1: not running */
    char dir[64];                      /* node files and logs */
};

static inline void test_cluster_pause_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* One command to the node on port (a fresh connection, 5 s bound).
 * Returns the reply (freeReplyObject) or NULL. */
static inline redisReply *test_cluster_cmd(int port, const char *fmt, ...)
{
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r = NULL;
    va_list ap;

    if (c != NULL && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK) {
        va_start(ap, fmt);
        r = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    redisFree(c);
    return r;
}

/* Whether the node's INFO/CLUSTER INFO text (cmd) contains needle. */
static inline bool test_cluster_says(int port, const char *cmd, const char *needle)
{
    redisReply *r = test_cluster_cmd(port, cmd);
    bool yes = r != NULL && r->type == REDIS_REPLY_STRING &&
               strstr(r->str, needle) != NULL;

    freeReplyObject(r);
    return yes;
}

/* Run argv (a NULL-terminated list) with output to dir/log; returns its
 * exit status, or -1. */
static inline int test_cluster_run(const struct test_cluster *tc, const char *log,
                            char *const argv[])
{
    char path[128];
    int status;
    pid_t pid;

    snprintf(path, sizeof path, "%s/%s", tc->dir, log);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);

        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(127);
        execvp(argv[0], argv);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Wait (at most timeout_ms) until every node says cluster_state:ok, sees
 * all 16384 slots assigned, and every replica's link to its master is
 * up. Returns 0 or -1. */
static inline int test_cluster_wait_ok(const struct test_cluster *tc,
                                unsigned timeout_ms)
{
    for (unsigned waited = 0; waited <= timeout_ms; waited += 50) {
        bool ok = true;

        for (int i = 0; i < TEST_CLUSTER_NODES && ok; i++) {
            redisReply *r;

            ok = tc->pid[i] < 0 ||
                 (test_cluster_says(tc->port[i], "CLUSTER INFO",
                                    "cluster_state:ok") &&
                  test_cluster_says(tc->port[i], "CLUSTER INFO",
                                    "cluster_slots_ok:16384"));
            if (!ok || tc->pid[i] < 0)
                continue;
            r = test_cluster_cmd(tc->port[i], "INFO replication");
            ok = r != NULL && r->type == REDIS_REPLY_STRING &&
                 (strstr(r->str, "role:master") != NULL ||
                  strstr(r->str, "master_link_status:up") != NULL);
            freeReplyObject(r);
        }
        if (ok)
            return 0;
        test_cluster_pause_ms(50);
    }
    fprintf(stderr, "cluster did not reach cluster_state:ok in %u ms\n",
            timeout_ms);
    return -1;
}

/* Stop exactly the servers this test started and remove their files;
 * safe to call twice. */
static inline void test_cluster_stop(struct test_cluster *tc)
{
    char *rm[] = {"rm", "-rf", tc->dir, NULL};

    for (int i = 0; i < TEST_CLUSTER_NODES; i++)
        if (tc->pid[i] > 0) {
            kill(tc->pid[i], SIGTERM);
            waitpid(tc->pid[i], NULL, 0);
            tc->pid[i] = -1;
        }
    if (tc->dir[0] != '\0') {
        pid_t pid = fork();

        if (pid == 0) {
            execvp(rm[0], rm);
            _exit(127);
        }
        if (pid > 0)
            waitpid(pid, NULL, 0);
    }
    tc->dir[0] = '\0';
}

/* Start node i (its ports already chosen) and wait for PING. */
static inline int test_cluster_start_node(struct test_cluster *tc, int i)
{
    char port[16], bus[16], conf[128];

    snprintf(port, sizeof port, "%d", tc->port[i]);
    snprintf(bus, sizeof bus, "%d", tc->bus[i]);
    snprintf(conf, sizeof conf, "nodes-%d.conf", tc->port[i]);
    tc->pid[i] = fork();
    if (tc->pid[i] < 0)
        return -1;
    if (tc->pid[i] == 0) {
        if (chdir(tc->dir) != 0 || freopen("/dev/null", "w", stdout) == NULL)
            _exit(127);
        execlp("redis-server", "redis-server", "--port", port,
               "--cluster-enabled", "yes", "--cluster-port", bus,
               "--cluster-config-file", conf, "--cluster-node-timeout",
               "2000", "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--dir", ".", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    for (int k = 0; k < 250; k++) {
        redisReply *r = test_cluster_cmd(tc->port[i], "PING");
        bool up = r != NULL && r->type == REDIS_REPLY_STATUS;

        freeReplyObject(r);
        if (up)
            return 0;
        test_cluster_pause_ms(20);
    }
    fprintf(stderr, "redis-server did not start on port %d\n", tc->port[i]);
    return -1;
}

/* Start six nodes and join them as 3 masters + 3 replicas; wait for
 * cluster_state:ok everywhere. Returns 0, or -1 after saying why (and
 * stopping what started). */
static inline int test_cluster_start(struct test_cluster *tc)
{
    char addr[TEST_CLUSTER_NODES][32];
    char *create[8 + TEST_CLUSTER_NODES] = {"redis-cli", "--cluster",
                                            "create"};
    int n = 3;

    memset(tc, 0, sizeof *tc);
    for (int i = 0; i < TEST_CLUSTER_NODES; i++)
        tc->pid[i] = -1;
    snprintf(tc->dir, sizeof tc->dir, "/tmp/tollgate-cluster-XXXXXX");
    if (mkdtemp(tc->dir) == NULL) {
        tc->dir[0] = '\0';
        return -1;
    }
    for (int i = 0; i < TEST_CLUSTER_NODES; i++) {
        /* two distinct spare ports, neither used by an earlier node */
        for (bool fresh = false; !fresh;) {
            tc->port[i] = test_redis_spare_port();
            tc->bus[i] = test_redis_spare_port();
            fresh = tc->port[i] > 0 && tc->bus[i] > 0 &&
                    tc->port[i] != tc->bus[i];
            for (int j = 0; j < i && fresh; j++)
                fresh = tc->port[i] != tc->port[j] &&
                        tc->port[i] != tc->bus[j] &&
                        tc->bus[i] != tc->port[j] && tc->bus[i] != tc->bus[j];
        }
        if (test_cluster_start_node(tc, i) != 0)
            goto fail;
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", tc->port[i]);
        create[n++] = addr[i];
    }
    create[n++] = "--cluster-replicas";
    create[n++] = "1";
    create[n++] = "--cluster-yes";
    create[n] = NULL;
    if (test_cluster_run(tc, "create.log", create) != 0) {
        fprintf(stderr, "redis-cli --cluster create failed (see %s)\n",
                tc->dir);
        goto fail;
    }
    if (test_cluster_wait_ok(tc, 20000) != 0)
        goto fail;
    return 0;
fail:
    test_cluster_stop(tc);
    return -1;
}

/* The index of the node on port, or -1. */
static inline int test_cluster_index(const struct test_cluster *tc, int port)
{
    for (int i = 0; i < TEST_CLUSTER_NODES; i++)
        if (tc->port[i] == port)
            return i;
    return -1;
}

/* The port of the master serving slot as the node on ask_port sees it
 * (CLUSTER SLOTS), or -1. */
static inline int test_cluster_owner(int ask_port, unsigned slot)
{
    redisReply *r = test_cluster_cmd(ask_port, "CLUSTER SLOTS");
    int port = -1;

    for (size_t i = 0; r != NULL && r->type == REDIS_REPLY_ARRAY &&
                       i < r->elements; i++) {
        redisReply *e = r->element[i];

        if ((long long)slot >= e->element[0]->integer &&
            (long long)slot <= e->element[1]->integer)
            port = (int)e->element[2]->element[1]->integer;
    }
    freeReplyObject(r);
    return port;
}

/* Whether the node on port is a master (INFO replication). */
static inline bool test_cluster_is_master(int port)
{
    return test_cluster_says(port, "INFO replication", "role:master");
}

/* The port of a replica of the master on master_port, or -1. */
static inline int test_cluster_replica_of(const struct test_cluster *tc,
                                   int master_port)
{
    char want[32];

    snprintf(want, sizeof want, "master_port:%d\r", master_port);
    for (int i = 0; i < TEST_CLUSTER_NODES; i++)
        if (tc->pid[i] > 0 &&
            test_cluster_says(tc->port[i], "INFO replication", want))
            return tc->port[i];
    return -1;
}

/* The node id of the node on port into out (41 bytes). 0 or -1. */
static inline int test_cluster_myid(int port, char out[41])
{
    redisReply *r = test_cluster_cmd(port, "CLUSTER MYID");
    int rc = -1;

    if (r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40) {
        memcpy(out, r->str, 41);
        rc = 0;
    }
    freeReplyObject(r);
    return rc;
}

#endif
