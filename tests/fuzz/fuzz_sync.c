/* fuzz_sync.c — libFuzzer target for POST /v1/sync past the signature:
 * the wire checks, protobuf unpacking, validation, item merging, the
 * script calls' arguments, the reply's checks and the answer
 * (coordinator/sync.c and input.c), on a coordinator with keys and a
 * policy installed.
 *
 * Input: one flags byte, then the SyncRequest body. The target signs the
 * body as edge "e1" with its key (the fuzzer cannot forge the MAC), so
 * every input reaches the decoder. Redis is replaced (--wrap) by a reply
 * the flags choose: bits 0-1 the status (applied, replayed, conflict, or
 * Redis down), bits 2-7 seed the per-item integers, out-of-range values
 * included, so reply_ok() and the degraded answer are exercised too.
 * The answer must be one of the contract's statuses; a 200 must unpack as
 * a SyncResponse with one state per KeyCount.
 * Seeds in tests/fuzz/corpus/sync/ (make_corpus.py).
 */
// fuzz-ldflags: -Wl,--wrap=co_redis_eval_sync
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_co.h"

int __wrap_co_redis_eval_sync(struct co_script_call *calls, size_t ncalls,
                              char *err, size_t errlen);

static const char policy_json[] =
    "{\"version\": 3, \"sync_interval_ms\": 2000, \"clearance_ttl_s\": 60,"
    " \"expected_edges\": 4, \"quotas\": ["
    "  {\"name\": \"ip\", \"key\": \"ip\", \"limit\": 100, \"window_s\": 60,"
    "   \"action\": \"challenge\", \"floor\": 10, \"burst\": 20,"
    "   \"overrides\": {\"10.0.0.9\": {\"limit\": 7}}},"
    "  {\"name\": \"login\", \"key\": \"ip\", \"limit\": 10, \"window_s\": 30,"
    "   \"path_prefix\": \"/login\", \"methods\": [\"POST\"],"
    "   \"action\": \"deny\", \"deny_after\": 3}]}";

static uint8_t reply_flags;

/* Redis as the flags say; out[] holds what sync.lua would answer. */
int __wrap_co_redis_eval_sync(struct co_script_call *calls, size_t ncalls,
                              char *err, size_t errlen)
{
    uint32_t x = 0x9e3779b9u * (reply_flags | 1u);

    if ((reply_flags & 3) == 3) {
        snprintf(err, errlen, "fuzz: Redis down");
        return CO_EREDIS;
    }
    for (size_t c = 0; c < ncalls; c++) {
        for (size_t i = 0; i < calls[c].nout; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            /* mostly small and valid, sometimes negative or huge */
            calls[c].out[i] = (x & 0xf0) == 0xf0 ? -(long long)(x >> 8)
                              : (x & 0xf0) == 0xe0 ? (long long)x << 24
                              : (long long)(x % 4);
        }
        if (calls[c].nout > 0)
            calls[c].out[0] = reply_flags & 3;
    }
    return CO_OK;
}

struct hdrs {
    char ts[24], sig[70];
};

static const char *header(void *conn, const char *name)
{
    const struct hdrs *h = conn;

    if (strcmp(name, "Tollgate-Edge") == 0)
        return "e1";
    if (strcmp(name, "Tollgate-Timestamp") == 0)
        return h->ts;
    if (strcmp(name, "Tollgate-Signature") == 0)
        return h->sig;
    return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_co_setup(policy_json);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t secret[32];
    struct co_response resp = {0};
    struct hdrs h;
    uint8_t mac[32];
    const uint8_t *body;
    size_t len;

    if (size < 1)
        return 0;
    memset(secret, FUZZ_EDGE_SECRET_BYTE, sizeof secret);
    reply_flags = data[0];
    body = data + 1;
    len = size - 1;
    snprintf(h.ts, sizeof h.ts, "%llu", (unsigned long long)co_wall_ms());
    CHECK(co_auth_sign(secret, sizeof secret, "POST", "/v1/sync", h.ts, body,
                       len, mac) == CO_OK);
    memcpy(h.sig, "v1=", 3);
    co_hex_encode(mac, sizeof mac, h.sig + 3, sizeof h.sig - 3);
    {
        struct co_request req = {
            .method = "POST", .path = "/v1/sync",
            .content_type = "application/x-protobuf",
            .body = len ? body : NULL, .body_len = len,
            .header = header, .conn = &h,
        };

        co_sync_handle(&req, &resp);
    }
    /* 401: replayed, or edge_id is not the signer's; 500 would be a bug
     * (memory does not run out here) */
    CHECK(resp.status == 200 || resp.status == 400 || resp.status == 401 ||
          resp.status == 409);
    if (resp.status == 200) {
        Tollgate__V1__SyncRequest *in =
            tollgate__v1__sync_request__unpack(NULL, len, body);
        Tollgate__V1__SyncResponse *out =
            tollgate__v1__sync_response__unpack(NULL, resp.body_len,
                                                resp.body);

        CHECK(in != NULL && out != NULL);
        CHECK(out->n_states == in->n_counts);
        CHECK(out->degraded == (out->acked_seq == 0));
        tollgate__v1__sync_response__free_unpacked(out, NULL);
        tollgate__v1__sync_request__free_unpacked(in, NULL);
    }
    co_response_clear(&resp);
    return 0;
}
