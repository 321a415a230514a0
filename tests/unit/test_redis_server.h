/* test_redis_server.h — a throwaway redis-server for unit tests that need a
 * real one (hiredis test.sh): started on a spare loopback port, no
 * persistence, and stopped by its PID, never by name. Include it once per
 * test program; everything here is static. */
#ifndef TEST_REDIS_SERVER_H
#define TEST_REDIS_SERVER_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

struct test_redis {
    pid_t pid;              /* -1: not running */
    int port;
    redisContext *admin;    /* the test's own connection */
};

/* A port the kernel just handed out on 127.0.0.1 (free a moment ago). */
static inline int test_redis_spare_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Start redis-server on t->port (a restart after test_redis_stop() keeps
 * the port, as a restarted production Redis would) and wait (at most
 * ~5 s) until it answers PING on t->admin. It starts empty. Returns 0, or
 * -1 with a line on stderr. */
static inline int test_redis_start_on(struct test_redis *t)
{
    char port[16];
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};

    t->pid = -1;
    t->admin = NULL;
    if (t->port <= 0)
        return -1;
    snprintf(port, sizeof port, "%d", t->port);
    t->pid = fork();
    if (t->pid < 0)
        return -1;
    if (t->pid == 0) {
        if (freopen("/dev/null", "w", stdout) == NULL)
            _exit(127);
        execlp("redis-server", "redis-server", "--port", port, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no",
               "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};

        t->admin = redisConnectWithTimeout("127.0.0.1", t->port, tv);
        if (t->admin != NULL && t->admin->err == 0) {
            redisReply *r = redisCommand(t->admin, "PING");
            bool up = r != NULL && r->type == REDIS_REPLY_STATUS;

            freeReplyObject(r);
            if (up)
                return 0;
        }
        redisFree(t->admin);
        t->admin = NULL;
        nanosleep(&pause, NULL);
    }
    fprintf(stderr, "redis-server did not start on port %d\n", t->port);
    return -1;
}

/* Start redis-server on a spare port: test_redis_start_on(). */
static inline int test_redis_start(struct test_redis *t)
{
    t->port = test_redis_spare_port();
    return test_redis_start_on(t);
}

/* Start a server and point the coordinator's Redis client at it (1 s
 * timeout). Returns 0, or -1 after saying why. */
static inline int test_redis_start_and_connect(struct test_redis *t)
{
    struct co_redis_target target;
    char url[64], err[256];

    if (test_redis_start(t) != 0)
        return -1;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", t->port);
    if (co_redis_parse_url(url, 1000, &target, err, sizeof err) != CO_OK ||
        co_redis_init(&target, err, sizeof err) != CO_OK) {
        fprintf(stderr, "redis: %s\n", err);
        return -1;
    }
    return 0;
}

/* Stop exactly the server this test started; safe to call twice. */
static inline void test_redis_stop(struct test_redis *t)
{
    if (t->admin != NULL)
        redisFree(t->admin);
    t->admin = NULL;
    if (t->pid > 0) {
        kill(t->pid, SIGTERM);
        waitpid(t->pid, NULL, 0);
        t->pid = -1;
    }
}

#endif
