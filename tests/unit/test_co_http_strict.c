/* test_co_http.c — the HTTP server itself, on a loopback socket: the
 * request-head rules of RFC 9112 (Host on HTTP/1.1, one Content-Length,
 * the URL cap over path and query), NUL bytes refused in paths, in a
 * sync's strings and in JSON bodies, and the connection guard (a cap per
 * client address, a deadline for a request's head and body that trickling
 * cannot stretch, a TLS ClientHello closed at accept). Raw sockets, so every byte on the
 * wire is the test's; clients bind 127.0.0.3-5 to be distinct addresses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <microhttpd.h>

#include "tollgated.h"
#include "test_admin_tokens.h"
#include "test_sync_sign.h"

#define PER_IP     4
#define TIMEOUT_MS 1000u
/* Bound on every wait for the server; tests assert what happens, this
 * only keeps a broken server from hanging them. */
#define WAIT_MS    20000

static const char keys_text[] =
    "challenge c1 "
    "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1\n"
    "clearance k1 "
    "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1\n"
    "edge e1 "
    "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1\n";

static struct MHD_Daemon *daemon_;
static uint16_t port;

static void pause_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* A TCP connection to the server from 127.0.0.<host>. */
static int dial(unsigned host)
{
    struct sockaddr_in a = {.sin_family = AF_INET}, b = {.sin_family =
                                                             AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    b.sin_addr.s_addr = htonl(0x7f000000u | host);
    assert_int_equal(bind(fd, (struct sockaddr *)&b, sizeof b), 0);
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Read until the server closes (or WAIT_MS): returns the bytes read,
 * NUL-terminated in buf; -1 when the server never closed. */
static ssize_t read_to_close(int fd, char *buf, size_t cap)
{
    size_t n = 0;

    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t r;

        if (poll(&p, 1, WAIT_MS) != 1)
            return -1;
        r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0 || n + (size_t)r == cap - 1) {
            if (r > 0)
                n += (size_t)r;
            break;
        }
        n += (size_t)r;
    }
    buf[n] = '\0';
    return (ssize_t)n;
}

/* Read one response with a Content-Length body off a keep-alive
 * connection; returns its status (0: closed or malformed). */
static int read_response(int fd)
{
    char buf[4096];
    size_t n = 0;
    const char *end = NULL, *cl;

    while (end == NULL || (size_t)(end + 4 - buf) + (size_t)atoi(cl + 16) > n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t r;

        if (n == sizeof buf - 1 || poll(&p, 1, WAIT_MS) != 1 ||
            (r = recv(fd, buf + n, sizeof buf - 1 - n, 0)) <= 0)
            return 0;
        n += (size_t)r;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
        cl = strcasestr(buf, "\r\nContent-Length: ");
        if (end != NULL && cl == NULL)
            return 0;
    }
    return strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : 0;
}

/* Send raw, read the answer to the close, return its status (0: closed
 * without an answer); the body goes to body when not NULL. */
static int exchange(unsigned host, const void *raw, size_t len,
                    char *body, size_t bodycap)
{
    static char buf[65536];
    int fd = dial(host), status = 0;
    ssize_t n;
    const char *b;

    send_all(fd, raw, len);
    n = read_to_close(fd, buf, sizeof buf);
    close(fd);
    assert_true(n >= 0);
    if (n >= 12 && strncmp(buf, "HTTP/1.", 7) == 0)
        status = atoi(buf + 9);
    b = strstr(buf, "\r\n\r\n");
    if (body != NULL)
        snprintf(body, bodycap, "%s", b != NULL ? b + 4 : "");
    return status;
}

static int request(const char *raw, char *body, size_t bodycap)
{
    return exchange(3, raw, strlen(raw), body, bodycap);
}

/* Wait until the server holds no connection (libmicrohttpd frees a
 * closed one on its next loop), so the next test starts with every
 * address under its cap. */
static void settle(void)
{
    for (int i = 0; i < WAIT_MS / 10 &&
         atomic_load(&co_server.http_connections) != 0; i++)
        pause_ms(10);
    assert_int_equal(atomic_load(&co_server.http_connections), 0);
}

static int setup(void **state)
{
    struct co_http_limits lim = {.max_conns = 256, .max_conns_per_ip = PER_IP,
                                 .request_timeout_ms = TIMEOUT_MS};
    char err[256], addr[64];

    (void)state;
    (void)fake_header;   /* the server reads real headers here */
    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    if (co_keys_parse(keys_text, strlen(keys_text), &co_keys, err,
                      sizeof err) != CO_OK ||
        co_tokens_parse(TOKENS, strlen(TOKENS), &co_admin_tokens, err,
                        sizeof err) != CO_OK ||
        co_http_start("127.0.0.1:0", 2, &lim, &daemon_, addr, sizeof addr,
                      err, sizeof err) != CO_OK) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    port = (uint16_t)atoi(strrchr(addr, ':') + 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    co_http_drain_and_stop(daemon_, 1000);
    co_keys_free(&co_keys);
    co_tokens_free(&co_admin_tokens);
    return 0;
}

static void test_http11_needs_one_host(void **state)
{
    char body[512];

    (void)state;
    assert_int_equal(request("GET /healthz HTTP/1.1\r\nConnection: close\r\n"
                             "\r\n", body, sizeof body), 400);
    assert_non_null(strstr(body, "HTTP/1.1 requires a Host header"));
    assert_int_equal(request("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n"
                             "Connection: close\r\n\r\n", body, sizeof body),
                     400);
    assert_non_null(strstr(body, "more than one Host header"));
    assert_int_equal(request("GET /healthz HTTP/1.1\r\nHost: a\r\n"
                             "Connection: close\r\n\r\n", NULL, 0), 200);
    /* HTTP/1.0 has no Host requirement */
    assert_int_equal(request("GET /healthz HTTP/1.0\r\n\r\n", NULL, 0), 200);
    settle();
}

static void test_content_length_must_not_conflict(void **state)
{
    char body[512];

    (void)state;
    assert_int_equal(request("POST /healthz HTTP/1.1\r\nHost: a\r\n"
                             "Content-Length: 2\r\nContent-Length: 3\r\n"
                             "Connection: close\r\n\r\n{}", body,
                             sizeof body), 400);
    assert_non_null(strstr(body, "conflicting Content-Length headers"));
    assert_int_equal(request("POST /healthz HTTP/1.1\r\nHost: a\r\n"
                             "Content-Length: 2\r\nTransfer-Encoding: "
                             "chunked\r\nConnection: close\r\n\r\n"
                             "2\r\n{}\r\n0\r\n\r\n", body, sizeof body),
                     400);
    assert_non_null(strstr(body, "both Content-Length and Transfer"));
    /* the same value twice frames the body one way: on to the router,
     * which says /healthz takes no POST */
    assert_int_equal(request("POST /healthz HTTP/1.1\r\nHost: a\r\n"
                             "Content-Length: 2\r\nContent-Length: 2\r\n"
                             "Connection: close\r\n\r\n{}", NULL, 0), 405);
    settle();
}

static void test_url_cap_covers_path_and_query(void **state)
{
    static char raw[20000];
    char body[512], q[CO_URL_MAX + 64];

    (void)state;
    /* "/healthz?x=" + padding: exactly CO_URL_MAX passes, one more is 414 */
    memset(q, 'a', sizeof q);
    q[CO_URL_MAX - 11] = '\0';
    snprintf(raw, sizeof raw, "GET /healthz?x=%s HTTP/1.1\r\nHost: a\r\n"
             "Connection: close\r\n\r\n", q);
    assert_int_equal(request(raw, NULL, 0), 200);
    q[CO_URL_MAX - 11] = 'a';
    q[CO_URL_MAX - 10] = '\0';
    snprintf(raw, sizeof raw, "GET /healthz?x=%s HTTP/1.1\r\nHost: a\r\n"
             "Connection: close\r\n\r\n", q);
    assert_int_equal(request(raw, body, sizeof body), 414);
    assert_non_null(strstr(body, "path and query"));
    /* the 16 KB query of the report */
    memset(q, 'b', 1000);
    q[1000] = '\0';
    snprintf(raw, sizeof raw, "GET /v1/stats?");
    for (int i = 0; i < 16; i++)
        strcat(raw, q);
    strcat(raw, " HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_int_equal(request(raw, NULL, 0), 414);
    settle();
}

static void test_nul_in_path_is_400(void **state)
{
    char body[512];

    (void)state;
    assert_int_equal(request("GET /v1/keys/per-ip/1.2.3.4%00evil HTTP/1.1\r\n"
                             "Host: a\r\nConnection: close\r\n\r\n", body,
                             sizeof body), 400);
    assert_non_null(strstr(body, "NUL byte"));
    assert_int_equal(request("PUT /v1/quotas/a%00b HTTP/1.1\r\nHost: a\r\n"
                             "Content-Type: application/json\r\n"
                             "Content-Length: 2\r\nConnection: close\r\n\r\n"
                             "{}", NULL, 0), 400);
    /* a decodable escape is still a path parameter (401: no token) */
    assert_int_equal(request("GET /v1/keys/per-ip/1.2.3.4%01 HTTP/1.1\r\n"
                             "Host: a\r\nConnection: close\r\n\r\n", NULL, 0),
                     401);
    settle();
}

/* POST a SyncRequest signed by e1 (header Tollgate-Edge: e1). */
static int post_sync(const uint8_t *pb, size_t len, char *body,
                     size_t bodycap)
{
    static char raw[4096];
    uint8_t secret[32];
    struct hdrs h;
    int n;

    memset(secret, 0xe1, sizeof secret);
    sign_body(&h, "e1", co_wall_ms(), secret, sizeof secret, pb, len);
    n = snprintf(raw, sizeof raw, "POST /v1/sync HTTP/1.1\r\nHost: a\r\n"
                 "Content-Type: application/x-protobuf\r\n"
                 "Tollgate-Edge: %s\r\nTollgate-Timestamp: %s\r\n"
                 "Tollgate-Signature: %s\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n", h.edge, h.ts, h.sig, len);
    memcpy(raw + n, pb, len);
    return exchange(3, raw, (size_t)n + len, body, bodycap);
}

static void test_nul_in_sync_strings_is_400(void **state)
{
    /* edge_id "e1\0x", seq 1: before, protobuf-c's C string read "e1" */
    static const uint8_t edge_nul[] = "\x0a\x04" "e1\0x" "\x10\x01";
    /* edge_id "e1", seq 1, counts[0] {quota "q", key "k\0y"} */
    static const uint8_t key_nul[] =
        "\x0a\x02" "e1" "\x10\x01" "\x32\x08" "\x0a\x01" "q" "\x12\x03" "k\0y";
    /* ... counts[1] {quota "q\0"} */
    static const uint8_t quota_nul[] =
        "\x0a\x02" "e1" "\x10\x01" "\x32\x03" "\x0a\x01" "q"
        "\x32\x04" "\x0a\x02" "q\0";
    char body[512];

    (void)state;
    assert_int_equal(post_sync(edge_nul, sizeof edge_nul - 1, body,
                               sizeof body), 400);
    assert_non_null(strstr(body, "edge_id: holds a NUL byte"));
    assert_int_equal(post_sync(key_nul, sizeof key_nul - 1, body,
                               sizeof body), 400);
    assert_non_null(strstr(body, "counts[0].key: holds a NUL byte"));
    assert_int_equal(post_sync(quota_nul, sizeof quota_nul - 1, body,
                               sizeof body), 400);
    assert_non_null(strstr(body, "counts[1].quota: holds a NUL byte"));
    settle();
}

/* JSON bodies: jansson refuses "\u0000" (no JSON_ALLOW_NUL anywhere), so
 * an admin write or a challenge answer holding one is a 400 too. */
static void test_nul_in_json_bodies_is_400(void **state)
{
    static const char quota[] =
        "{\"key\": \"ip\", \"limit\": 5, \"window_s\": 60, "
        "\"action\": \"deny\", \"path_prefix\": \"/a\\u0000b\"}";
    static const char verify[] = "{\"token\": \"a\\u0000b\", \"response\": \"r\"}";
    char raw[1024], body[512];

    (void)state;
    snprintf(raw, sizeof raw, "PUT /v1/quotas/q HTTP/1.1\r\nHost: a\r\n"
             "Authorization: Bearer " ADMIN_TOKEN "\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s", sizeof quota - 1, quota);
    assert_int_equal(request(raw, body, sizeof body), 400);
    assert_non_null(strstr(body, "NUL"));
    snprintf(raw, sizeof raw, "POST /v1/challenge/verify HTTP/1.1\r\n"
             "Host: a\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             sizeof verify - 1, verify);
    assert_int_equal(request(raw, body, sizeof body), 400);
    assert_non_null(strstr(body, "NUL"));
    settle();
}

static void test_input_protobuf_walk(void **state)
{
    static const uint8_t ok[] =
        "\x0a\x02" "e1" "\x10\x01" "\x32\x08" "\x0a\x01" "q" "\x12\x03" "k y";
    static const uint8_t cut[] = "\x0a\x05" "e1";
    char detail[128];

    (void)state;
    assert_int_equal(co_input_protobuf(&tollgate__v1__sync_request__descriptor,
                                       ok, sizeof ok - 1, detail,
                                       sizeof detail), CO_OK);
    assert_int_equal(co_input_protobuf(&tollgate__v1__sync_request__descriptor,
                                       cut, sizeof cut - 1, detail,
                                       sizeof detail), CO_EINVAL);
    assert_string_equal(detail, "malformed protobuf");
    assert_int_equal(co_input_text("x", "a\0b", 3, detail, sizeof detail),
                     CO_EINVAL);
    assert_string_equal(detail, "x: holds a NUL byte");
    assert_int_equal(co_input_text("x", "ab", 2, detail, sizeof detail),
                     CO_OK);
}

/* PER_IP connections from 127.0.0.4 are held (a request line begun, so
 * the kernel hands them over); the next from that address is closed
 * unanswered, while 127.0.0.5 is served. */
static void test_per_address_cap(void **state)
{
    int held[PER_IP], extra;
    char buf[256];
    unsigned long long refused = atomic_load(&co_server.http_closed_limit);

    (void)state;
    for (int i = 0; i < PER_IP; i++) {
        held[i] = dial(4);
        send_all(held[i], "GET /", 5);
    }
    for (int i = 0; i < WAIT_MS / 10 &&
         atomic_load(&co_server.http_connections) < PER_IP; i++)
        pause_ms(10);
    assert_int_equal(atomic_load(&co_server.http_connections), PER_IP);
    extra = dial(4);
    send_all(extra, "GET /healthz HTTP/1.0\r\n\r\n", 25);
    assert_int_equal(read_to_close(extra, buf, sizeof buf), 0);
    close(extra);
    assert_true(atomic_load(&co_server.http_closed_limit) > refused);
    assert_int_equal(exchange(5, "GET /healthz HTTP/1.0\r\n\r\n", 25, NULL,
                              0), 200);
    for (int i = 0; i < PER_IP; i++)
        close(held[i]);
    settle();
    assert_int_equal(exchange(4, "GET /healthz HTTP/1.0\r\n\r\n", 25, NULL,
                              0), 200);
    settle();
}

/* A header byte every 100 ms never leaves the connection idle, yet the
 * deadline closes it; a keep-alive connection gets a fresh deadline per
 * request. */
static void test_trickled_head_hits_the_deadline(void **state)
{
    static const char head[] = "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: ";
    unsigned long long reaped = atomic_load(&co_server.http_closed_deadline);
    int fd = dial(3), closed = 0;
    char buf[512];

    (void)state;
    send_all(fd, head, sizeof head - 1);
    for (int i = 0; i < WAIT_MS / 100 && !closed; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};

        closed = send(fd, "a", 1, MSG_NOSIGNAL) != 1 ||
                 (poll(&p, 1, 100) == 1 && recv(fd, buf, sizeof buf, 0) <= 0);
    }
    close(fd);
    assert_true(closed);
    assert_true(atomic_load(&co_server.http_closed_deadline) > reaped);
    settle();

    /* keep-alive: three requests, each within its own deadline although
     * together they span more than one */
    fd = dial(3);
    for (int i = 0; i < 3; i++) {
        static const char get[] = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";

        send_all(fd, get, sizeof get - 1);
        assert_int_equal(read_response(fd), 200);
        pause_ms(TIMEOUT_MS / 2);
    }
    close(fd);
    settle();
}

static void test_tls_hello_closed_at_accept(void **state)
{
    /* The start of a TLS 1.2 ClientHello record */
    static const uint8_t hello[] = {
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
        0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00};
    unsigned long long tls = atomic_load(&co_server.http_closed_tls);

    (void)state;
    assert_int_equal(exchange(3, hello, sizeof hello, NULL, 0), 0);
    assert_true(atomic_load(&co_server.http_closed_tls) > tls);
    settle();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http11_needs_one_host),
        cmocka_unit_test(test_content_length_must_not_conflict),
        cmocka_unit_test(test_url_cap_covers_path_and_query),
        cmocka_unit_test(test_nul_in_path_is_400),
        cmocka_unit_test(test_nul_in_sync_strings_is_400),
        cmocka_unit_test(test_nul_in_json_bodies_is_400),
        cmocka_unit_test(test_input_protobuf_walk),
        cmocka_unit_test(test_per_address_cap),
        cmocka_unit_test(test_trickled_head_hits_the_deadline),
        cmocka_unit_test(test_tls_hello_closed_at_accept),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
