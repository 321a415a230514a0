/* http.c — POST /v1/sync to the coordinator, the way an edge host does:
 * HTTP/1.1 keep-alive on a plain socket, Content-Length bodies only,
 * bounded reads with a timeout, and the per-edge signature
 *
 *   Tollgate-Edge: <edge_id>
 *   Tollgate-Timestamp: <unix ms>
 *   Tollgate-Signature: v1=<hex HMAC-SHA256(secret, "tollgate-sync-v1\n"
 *       "POST\n/v1/sync\n" TIMESTAMP "\n" hex(SHA-256(body)))>
 *
 * (a coordinator that does not check signatures yet ignores the headers).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "sim.h"

#define HEAD_MAX (16 * 1024)
#define BODY_MAX (4 * 1024 * 1024)

struct sim_http {
    int port;
    int fd;                 /* -1: connect on next use */
    char buf[HEAD_MAX];     /* bytes read past the previous response */
    size_t have;
};

struct sim_http *sim_http_open(int port)
{
    struct sim_http *h = calloc(1, sizeof *h);

    if (h == NULL)
        return NULL;
    h->port = port;
    h->fd = -1;
    return h;
}

static void drop(struct sim_http *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
    h->have = 0;
}

void sim_http_close(struct sim_http *h)
{
    if (h == NULL)
        return;
    drop(h);
    free(h);
}

static int reconnect(struct sim_http *h)
{
    struct sockaddr_in a = {0};
    int one = 1;

    drop(h);
    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h->fd < 0)
        return -1;
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)h->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(h->fd, (struct sockaddr *)&a, sizeof a) < 0) {
        drop(h);
        return -1;
    }
    setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

static void hex(const uint8_t *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Deterministic per-edge secrets, so a run is reproducible from its seed:
 * SHA-256("tollgate-sim edge" seed edge). Not secret; nothing here is. */
void sim_edge_secret(uint64_t seed, unsigned edge, uint8_t out[SIM_SECRET_LEN])
{
    char msg[64];
    int n = snprintf(msg, sizeof msg, "tollgate-sim edge %llu %u",
                     (unsigned long long)seed, edge);

    SHA256((const unsigned char *)msg, (size_t)n, out);
}

static long long ms_left(const struct timespec *end)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)(end->tv_sec - now.tv_sec) * 1000 +
           (end->tv_nsec - now.tv_nsec) / 1000000;
}

/* Reads at most cap bytes into dst, waiting at most until end. Returns
 * the count, 0 when the peer closed, -1 on timeout or error. */
static ssize_t read_some(int fd, void *dst, size_t cap,
                         const struct timespec *end)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    long long left = ms_left(end);
    ssize_t n;

    if (cap == 0 || left <= 0 || poll(&pfd, 1, (int)left) <= 0)
        return -1;
    n = read(fd, dst, cap);
    return n < 0 ? -1 : n;
}

/* Writes all of buf to the socket fd (never SIGPIPE). Returns 0 or -1. */
int sim_send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One exchange on the current connection. Returns the status, -2 when
 * the connection was found closed before any answer (a kept-alive
 * connection the server had dropped: safe to resend), -1 otherwise. */
static int exchange(struct sim_http *h, const char *head, size_t head_len,
                    const uint8_t *body, size_t len, uint8_t *resp,
                    size_t cap, size_t *resp_len, int timeout_ms)
{
    struct timespec end;
    char *eoh, sink[16384];
    size_t hlen, clen = 0, done;
    int status;
    bool close_after = false;

    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += timeout_ms / 1000;
    end.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    if (sim_send_all(h->fd, head, head_len) < 0 ||
        sim_send_all(h->fd, (const char *)body, len) < 0)
        return -2;
    while ((eoh = memmem(h->buf, h->have, "\r\n\r\n", 4)) == NULL) {
        ssize_t n = read_some(h->fd, h->buf + h->have,
                              sizeof h->buf - 1 - h->have, &end);

        if (n <= 0)
            return n == 0 && h->have == 0 ? -2 : -1;
        h->have += (size_t)n;
    }
    hlen = (size_t)(eoh - h->buf) + 4;
    h->buf[hlen - 2] = '\0';
    if (sscanf(h->buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    for (char *line = strstr(h->buf, "\r\n"); line != NULL;
         line = strstr(line + 2, "\r\n")) {
        const char *v = line + 2;

        if (strncasecmp(v, "content-length:", 15) == 0)
            clen = strtoul(v + 15, NULL, 10);
        else if (strncasecmp(v, "connection:", 11) == 0 &&
                 strstr(v, "close") != NULL)
            close_after = true;
        else if (strncasecmp(v, "transfer-encoding:", 18) == 0)
            return -1;       /* we only speak Content-Length */
    }
    if (clen > BODY_MAX || (status == 200 && clen > cap))
        return -1;
    /* The body: first what followed the head, then the socket. Only a 200
     * answer is kept; any other is read and dropped. */
    done = h->have - hlen < clen ? h->have - hlen : clen;
    if (status == 200)
        memcpy(resp, h->buf + hlen, done);
    memmove(h->buf, h->buf + hlen + done, h->have - hlen - done);
    h->have -= hlen + done;
    while (done < clen) {
        size_t want = clen - done;
        ssize_t n = read_some(h->fd, status == 200 ? (void *)(resp + done)
                                                   : (void *)sink,
                              status == 200 ? want
                              : want < sizeof sink ? want : sizeof sink, &end);

        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    *resp_len = clen;
    if (close_after)
        drop(h);
    return status;
}

int sim_http_sync(struct sim_http *h, const char *edge_id,
                  const uint8_t *secret, size_t secret_len, uint64_t ts_ms,
                  const uint8_t *body, size_t len, uint8_t *resp, size_t cap,
                  size_t *resp_len, int timeout_ms)
{
    uint8_t digest[32], mac[32];
    char body_hex[65], mac_hex[65], msg[160], head[1024];
    unsigned mac_len = sizeof mac;
    int mlen, hlen, status;

    SHA256(body, len, digest);
    hex(digest, sizeof digest, body_hex);
    mlen = snprintf(msg, sizeof msg, "tollgate-sync-v1\nPOST\n/v1/sync\n%llu\n%s",
                    (unsigned long long)ts_ms, body_hex);
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg,
             (size_t)mlen, mac, &mac_len) == NULL)
        return -1;
    hex(mac, mac_len, mac_hex);
    hlen = snprintf(head, sizeof head,
                    "POST /v1/sync HTTP/1.1\r\n"
                    "Host: 127.0.0.1:%d\r\n"
                    "Content-Type: application/x-protobuf\r\n"
                    "Content-Length: %zu\r\n"
                    "Tollgate-Edge: %s\r\n"
                    "Tollgate-Timestamp: %llu\r\n"
                    "Tollgate-Signature: v1=%s\r\n\r\n",
                    h->port, len, edge_id, (unsigned long long)ts_ms, mac_hex);
    if (hlen < 0 || (size_t)hlen >= sizeof head)
        return -1;
    /* A kept-alive connection the server closed meanwhile fails at once:
     * retry that once on a fresh one (the request never reached it). */
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh = h->fd < 0;

        if (fresh && reconnect(h) < 0)
            return -1;
        status = exchange(h, head, (size_t)hlen, body, len, resp, cap,
                          resp_len, timeout_ms);
        if (status >= 0)
            return status;
        drop(h);
        if (fresh || status != -2)
            break;
    }
    return -1;
}
