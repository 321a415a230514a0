/* test_sync_sign.h — the signed headers of a test sync request (contract
 * in tollgated.h, "edge auth"), served through co_request's header
 * callback as libmicrohttpd would. Include once per test program. */
#ifndef TEST_SYNC_SIGN_H
#define TEST_SYNC_SIGN_H

#include <stdio.h>
#include <string.h>

#include "tollgated.h"

struct hdrs {
    const char *edge, *ts, *sig;     /* NULL: header absent */
    char ts_buf[24], sig_buf[70];
};

static const char *fake_header(void *conn, const char *name)
{
    const struct hdrs *h = conn;

    if (h == NULL)
        return NULL;
    if (strcmp(name, "Tollgate-Edge") == 0)
        return h->edge;
    if (strcmp(name, "Tollgate-Timestamp") == 0)
        return h->ts;
    if (strcmp(name, "Tollgate-Signature") == 0)
        return h->sig;
    return NULL;
}

/* Sign body as edge at ts_ms with secret: fills every header of h. */
static void sign_body(struct hdrs *h, const char *edge, uint64_t ts_ms,
                      const uint8_t *secret, size_t secret_len,
                      const uint8_t *body, size_t len)
{
    uint8_t mac[32];

    snprintf(h->ts_buf, sizeof h->ts_buf, "%llu", (unsigned long long)ts_ms);
    if (co_auth_sign(secret, secret_len, "POST", "/v1/sync", h->ts_buf, body,
                     len, mac) != CO_OK)
        memset(mac, 0, sizeof mac);
    memcpy(h->sig_buf, "v1=", 3);
    for (int i = 0; i < 32; i++)
        snprintf(h->sig_buf + 3 + 2 * i, 3, "%02x", mac[i]);
    h->edge = edge;
    h->ts = h->ts_buf;
    h->sig = h->sig_buf;
}

#endif
