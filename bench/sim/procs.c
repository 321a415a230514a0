/* procs.c — the simulator's child processes, a minimal Redis client, and
 * the proxy that counts what the coordinator sends to Redis.
 *
 * Children (redis-server, tollgated-sim) bind 127.0.0.1 only, log to files
 * under the run directory, die with the simulator (PR_SET_PDEATHSIG) and
 * are stopped by their PID, never by name.
 *
 * Why a proxy: Redis's own counters (INFO total_commands_processed and
 * commandstats) also count every command a Lua script runs, so they cannot
 * say how many times the coordinator went to Redis. The proxy sits on the
 * coordinator's Redis socket and counts top-level RESP commands and round
 * trips, whatever the data model behind them. A round trip starts when the
 * client writes while every command it sent before has been answered (the
 * proxy counts the replies too): a pipeline is one trip however many
 * reads it takes the proxy to forward it, even when Redis has answered its
 * first commands before the rest arrived.
 *
 * Only the connections that carry syncs are counted: the coordinator's
 * background threads (the policy store's poll every 250 ms, the stats
 * flush every second) have their own connections and run on real time,
 * so over a simulated run their traffic grows with how long the run took
 * in real seconds, not with the decisions it simulated. A connection is a
 * sync connection from the first command naming a replay key
 * (tg:{edge|<id>}:sig:<hex>, coordinator/auth.c), which every sync.lua
 * call carries; what it sent before that is counted then.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

#define MAX_CHILDREN 8

static pid_t children[MAX_CHILDREN];

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int listen_local(int port)
{
    struct sockaddr_in a = {0};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof a;

    if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0)
        return -1;
    return ntohs(a.sin_port);
}

/* A port nobody listens on right now; another process could take it
 * before the child binds it (rare on a test box, and it fails loudly). */
int sim_free_port(void)
{
    int fd = listen_local(0), port;

    if (fd < 0)
        return -1;
    port = bound_port(fd);
    close(fd);
    return port;
}

static int connect_local(int port)
{
    struct sockaddr_in a = {0};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* ---------------------------------------------------------------- children */

/* Starts argv[0] (searched in PATH) with envp_extra added to the
 * environment, stdout and stderr appended to log_path. The child gets
 * SIGKILL when the simulator dies. Returns the PID or -1. */
pid_t sim_spawn(char *const argv[], char *const envp_extra[],
                const char *log_path)
{
    size_t slot = MAX_CHILDREN;
    pid_t pid;

    for (size_t i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == 0) {
            slot = i;
            break;
        }
    if (slot == MAX_CHILDREN)
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        for (size_t i = 0; envp_extra != NULL && envp_extra[i] != NULL; i++)
            putenv(envp_extra[i]);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    children[slot] = pid;
    return pid;
}

static void forget(pid_t pid)
{
    for (size_t i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == pid)
            children[i] = 0;
}

bool sim_alive(pid_t pid)
{
    int st;

    return waitpid(pid, &st, WNOHANG) == 0;
}

/* SIGTERM, then SIGKILL after grace_ms. Returns the exit status (or 128 +
 * signal). A stopped child (the Redis-outage scenario) is continued first
 * so it can see the SIGTERM. */
int sim_stop(pid_t pid, int grace_ms)
{
    int st = 0;

    if (pid <= 0)
        return -1;
    kill(pid, SIGCONT);
    kill(pid, SIGTERM);
    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &st, WNOHANG);

        if (r == pid || r < 0)
            break;
        if (waited >= grace_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        sleep_ms(10);
    }
    forget(pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* From a signal handler too: only kill(2). */
void sim_children_kill(void)
{
    for (size_t i = 0; i < MAX_CHILDREN; i++)
        if (children[i] > 0) {
            kill(children[i], SIGCONT);
            kill(children[i], SIGKILL);
        }
}

/* Waits until something accepts on port, or pid exits. Returns 0 or -1. */
int sim_wait_port(int port, pid_t pid, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        int fd = connect_local(port);

        if (fd >= 0) {
            close(fd);
            return 0;
        }
        if (!sim_alive(pid))
            return -1;
        sleep_ms(20);
    }
    return -1;
}

/* ---------------------------------------------------------------- RESP */

/* Length of one complete RESP value at buf[0..len), 0 if incomplete, -1 if
 * malformed. */
static long resp_complete(const char *buf, size_t len)
{
    const char *eol = memmem(buf, len, "\r\n", 2);
    size_t head;
    long n;

    if (eol == NULL)
        return 0;
    head = (size_t)(eol - buf) + 2;
    switch (buf[0]) {
    case '+': case '-': case ':':
        return (long)head;
    case '$':
        n = strtol(buf + 1, NULL, 10);
        if (n < 0)
            return (long)head;
        return len >= head + (size_t)n + 2 ? (long)(head + (size_t)n + 2) : 0;
    case '*': {
        size_t at = head;

        n = strtol(buf + 1, NULL, 10);
        for (long i = 0; i < n; i++) {
            long k = resp_complete(buf + at, len - at);

            if (k <= 0)
                return k;
            at += (size_t)k;
        }
        return (long)at;
    }
    default:
        return -1;
    }
}

int sim_redis_cmd(int port, char *out, size_t cap, const char *const args[])
{
    char req[1024];
    size_t n = 0, argc = 0, got = 0;
    int fd, rc = -1;

    while (args[argc] != NULL)
        argc++;
    n += (size_t)snprintf(req + n, sizeof req - n, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc && n < sizeof req; i++)
        n += (size_t)snprintf(req + n, sizeof req - n, "$%zu\r\n%s\r\n",
                              strlen(args[i]), args[i]);
    if (n >= sizeof req || cap < 2)
        return -1;
    fd = connect_local(port);
    if (fd < 0)
        return -1;
    if (sim_send_all(fd, req, n) < 0)
        goto done;
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t r;
        long k;

        if (poll(&pfd, 1, 3000) <= 0)
            goto done;
        r = read(fd, out + got, cap - 1 - got);
        if (r <= 0)
            goto done;
        got += (size_t)r;
        out[got] = '\0';
        k = resp_complete(out, got);
        if (k < 0)
            goto done;
        if (k > 0)
            break;
        if (got == cap - 1)
            goto done;
    }
    rc = 0;
done:
    close(fd);
    return rc;
}

/* "field:123" in an INFO reply. */
uint64_t sim_info_field(const char *info, const char *field)
{
    size_t fl = strlen(field);

    for (const char *p = info; (p = strstr(p, field)) != NULL; p += fl)
        if ((p == info || p[-1] == '\n') && p[fl] == ':')
            return strtoull(p + fl + 1, NULL, 10);
    return 0;
}

uint64_t sim_info_cmdstat_calls(const char *info, const char *cmd)
{
    char name[64];

    snprintf(name, sizeof name, "cmdstat_%s", cmd);
    for (const char *p = info; (p = strstr(p, name)) != NULL; p++)
        if ((p == info || p[-1] == '\n') && strncmp(p + strlen(name),
                                                    ":calls=", 7) == 0)
            return strtoull(p + strlen(name) + 7, NULL, 10);
    return 0;
}

/* ---------------------------------------------------------------- proxy */

#define PROXY_MAX_CONNS 64

/* Counting top-level commands in the client's byte stream: an array header
 * "*N\r\n" then N bulk strings "$len\r\n<len bytes>\r\n" (hiredis sends
 * nothing else; an inline command counts at its newline). */
struct resp_scan {
    int state;          /* 0 start of command, 1 array header, 2 bulk
                           header, 3 bulk body, 4 inline */
    long items;         /* bulk strings left in the command */
    long skip;          /* body bytes (+ CRLF) left */
    long num;
    uint64_t done;      /* complete commands */
};

/* Counting top-level replies in the server's byte stream (RESP2: simple
 * strings, errors, integers, bulk strings, arrays, nested). */
#define REPLY_DEPTH 16
struct reply_scan {
    int state;          /* 0 type byte, 1 simple line, 2 length header,
                           3 bulk body */
    bool array, neg;
    long num, skip;
    int depth;
    long left[REPLY_DEPTH];   /* elements left in each open array */
    uint64_t replies;
};

struct proxy_conn {
    int cfd, sfd;
    struct resp_scan scan;
    struct reply_scan rscan;
    uint64_t sent;      /* complete commands the client sent */
    uint64_t trips;     /* round trips it started */
    bool syncs;         /* a sync connection: its counts go to the totals */
    size_t match;       /* bytes of SYNC_MARK matched so far */
};

/* Every sync.lua call names a replay key; no background script does. */
static const char SYNC_MARK[] = ":sig:";

static struct {
    int lfd, redis_port;
    struct proxy_conn c[PROXY_MAX_CONNS];
    size_t n;
    pthread_t thread;
    uint64_t commands, roundtrips;   /* atomics */
} proxy = {.lfd = -1};

/* Consumes what is left of a bulk body (its bytes and CRLF) from the
 * n-byte buffer at position *i, leaving *i on the last byte taken (the
 * scan loops' i++ moves past it). True when the body is complete. */
static bool skip_body(long *skip, size_t n, size_t *i)
{
    size_t take = n - *i < (size_t)*skip ? n - *i : (size_t)*skip;

    *skip -= (long)take;
    *i += take - 1;
    return *skip == 0;
}

/* Looks for SYNC_MARK in the client's stream, across reads. Its only
 * repeated character is the ':' it starts and ends with, so on a mismatch
 * the match restarts at 1 for a ':' and at 0 otherwise. */
static bool find_mark(struct proxy_conn *c, const char *p, size_t n)
{
    const size_t len = sizeof SYNC_MARK - 1;

    for (size_t i = 0; i < n; i++) {
        if (p[i] == SYNC_MARK[c->match])
            c->match++;
        else
            c->match = p[i] == SYNC_MARK[0];
        if (c->match == len)
            return true;
    }
    return false;
}

static void scan_bytes(struct resp_scan *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];

        switch (s->state) {
        case 0:
            if (ch == '*') {
                s->state = 1;
                s->num = 0;
            } else if (ch != '\r' && ch != '\n') {
                s->state = 4;
            }
            break;
        case 1:
        case 2:
            if (ch >= '0' && ch <= '9') {
                s->num = s->num * 10 + (ch - '0');
            } else if (ch == '\n') {
                if (s->state == 1) {
                    s->items = s->num;
                    if (s->items <= 0) {
                        s->done++;
                        s->state = 0;
                    } else {
                        s->state = 2;
                        s->num = 0;
                    }
                } else {
                    s->skip = s->num + 2;
                    s->state = 3;
                }
            }
            break;
        case 3:
            if (skip_body(&s->skip, n, &i)) {
                s->num = 0;
                if (--s->items == 0) {
                    s->done++;
                    s->state = 0;
                } else {
                    s->state = 2;
                }
            }
            break;
        case 4:
            if (ch == '\n') {
                s->done++;
                s->state = 0;
            }
            break;
        }
    }
}

static void reply_done(struct reply_scan *s)
{
    while (s->depth > 0) {
        if (--s->left[s->depth - 1] > 0)
            return;
        s->depth--;
    }
    s->replies++;
}

static void scan_replies(struct reply_scan *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];

        switch (s->state) {
        case 0:
            if (ch == '$' || ch == '*') {
                s->state = 2;
                s->array = ch == '*';
                s->num = 0;
                s->neg = false;
            } else if (ch != '\r' && ch != '\n') {
                s->state = 1;   /* + - : and anything else: one line */
            }
            break;
        case 1:
            if (ch == '\n') {
                s->state = 0;
                reply_done(s);
            }
            break;
        case 2:
            if (ch == '-')
                s->neg = true;
            else if (ch >= '0' && ch <= '9')
                s->num = s->num * 10 + (ch - '0');
            else if (ch == '\n') {
                s->state = 0;
                if (s->neg || (s->array && s->num == 0)) {
                    reply_done(s);      /* null, or an empty array */
                } else if (s->array) {
                    if (s->depth < REPLY_DEPTH)
                        s->left[s->depth++] = s->num;
                    else
                        reply_done(s);  /* deeper than we follow */
                } else {
                    s->skip = s->num + 2;
                    s->state = 3;
                }
            }
            break;
        case 3:
            if (skip_body(&s->skip, n, &i)) {
                s->state = 0;
                reply_done(s);
            }
            break;
        }
    }
}

static void proxy_drop(size_t i)
{
    close(proxy.c[i].cfd);
    close(proxy.c[i].sfd);
    proxy.c[i] = proxy.c[--proxy.n];
}

/* Copies what is readable on from to to; -1 when either side is done. */
static ssize_t pump(int from, int to, char *buf, size_t cap)
{
    ssize_t n = read(from, buf, cap);

    if (n <= 0)
        return -1;
    return sim_send_all(to, buf, (size_t)n) < 0 ? -1 : n;
}

static void *proxy_main(void *arg)
{
    static char buf[65536];
    struct pollfd pfd[1 + 2 * PROXY_MAX_CONNS];

    (void)arg;
    for (;;) {
        size_t np = 0;

        pfd[np++] = (struct pollfd){proxy.lfd, POLLIN, 0};
        for (size_t i = 0; i < proxy.n; i++) {
            pfd[np++] = (struct pollfd){proxy.c[i].cfd, POLLIN, 0};
            pfd[np++] = (struct pollfd){proxy.c[i].sfd, POLLIN, 0};
        }
        if (poll(pfd, np, -1) < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        /* Connections first: accepting may reorder proxy.c. */
        for (size_t i = proxy.n; i-- > 0;) {
            struct proxy_conn *c = &proxy.c[i];
            short cre = pfd[1 + 2 * i].revents, sre = pfd[2 + 2 * i].revents;
            bool bad = false;

            if (cre & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t n = read(c->cfd, buf, sizeof buf);

                if (n <= 0 || sim_send_all(c->sfd, buf, (size_t)n) < 0) {
                    bad = true;
                } else {
                    uint64_t sent = c->sent, trips = c->trips;

                    /* A new trip: nothing of an earlier write is still
                     * unanswered, nor half sent. */
                    if (c->scan.state == 0 && c->sent == c->rscan.replies)
                        c->trips++;
                    scan_bytes(&c->scan, buf, (size_t)n);
                    c->sent = c->scan.done;
                    if (!c->syncs && find_mark(c, buf, (size_t)n)) {
                        c->syncs = true;
                        sent = trips = 0;   /* count the earlier ones too */
                    }
                    if (c->syncs) {
                        __atomic_add_fetch(&proxy.commands, c->sent - sent,
                                           __ATOMIC_RELAXED);
                        __atomic_add_fetch(&proxy.roundtrips, c->trips - trips,
                                           __ATOMIC_RELAXED);
                    }
                }
            }
            if (!bad && (sre & (POLLIN | POLLHUP | POLLERR))) {
                ssize_t n = pump(c->sfd, c->cfd, buf, sizeof buf);

                if (n < 0)
                    bad = true;
                else
                    scan_replies(&c->rscan, buf, (size_t)n);
            }
            if (bad)
                proxy_drop(i);
        }
        if (pfd[0].revents & POLLIN) {
            int cfd = accept4(proxy.lfd, NULL, NULL, SOCK_CLOEXEC), sfd;

            if (cfd < 0)
                continue;
            sfd = connect_local(proxy.redis_port);
            if (sfd < 0 || proxy.n == PROXY_MAX_CONNS) {
                close(cfd);
                if (sfd >= 0)
                    close(sfd);
                continue;
            }
            proxy.c[proxy.n++] = (struct proxy_conn){.cfd = cfd, .sfd = sfd};
        }
    }
}

/* The proxy lives as long as the simulator (one thread, never joined). */
int sim_proxy_start(int redis_port)
{
    if (proxy.lfd >= 0)
        return -1;
    proxy.redis_port = redis_port;
    proxy.lfd = listen_local(0);
    if (proxy.lfd < 0)
        return -1;
    if (pthread_create(&proxy.thread, NULL, proxy_main, NULL) != 0)
        return -1;
    pthread_detach(proxy.thread);
    return bound_port(proxy.lfd);
}

void sim_proxy_counts(uint64_t *commands, uint64_t *roundtrips)
{
    *commands = __atomic_load_n(&proxy.commands, __ATOMIC_RELAXED);
    *roundtrips = __atomic_load_n(&proxy.roundtrips, __ATOMIC_RELAXED);
}
