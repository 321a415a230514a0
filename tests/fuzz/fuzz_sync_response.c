/* fuzz_sync_response.c — libFuzzer target for tg_sync_response(): the
 * edge's protobuf decoder, policy validation and install (templates,
 * renumbering, the spill list), and applying key states.
 *
 * Input: one flags byte, then a SyncResponse. The edge has keys in its
 * table (with counts, some spilled) and a batch in flight when the
 * response arrives. Flags bit 0: append acked_seq = the batch's seq (a
 * later field wins), so mutations reach the acknowledged path; bit 1:
 * send the same response again after more traffic, when a policy it
 * carried may be in force.
 * tests/fuzz/make_corpus.py writes the seed corpus in this format.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "tollgate.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)
#define T0 1700000000000ull

static const uint8_t POLICY[] = {
    /* SyncResponse { acked_seq: 1, policy { version: 3, quotas [
     *   { name "ip", limit 100, window_s 60, key "ip", floor 2 },
     *   { name "hdr", limit 100, window_s 60, key "header:x-k+route", floor 1 } ] } } */
    0x08, 0x01, 0x32, 0x31, 0x08, 0x03,
    0x12, 0x0e, 0x0a, 0x02, 'i', 'p', 0x10, 0x64, 0x18, 0x3c, 0x22, 0x02, 'i', 'p', 0x40, 0x02,
    0x12, 0x1d, 0x0a, 0x03, 'h', 'd', 'r', 0x10, 0x64, 0x18, 0x3c, 0x22, 0x10,
    'h', 'e', 'a', 'd', 'e', 'r', ':', 'x', '-', 'k', '+', 'r', 'o', 'u', 't', 'e', 0x40, 0x01,
};

static void traffic(tg_edge *e, uint64_t now, int n)
{
    char ip[16];
    tg_header h = {{"x-k", 3}, {"v", 1}};
    for (int i = 0; i < n; i++) {
        int len = 0;
        unsigned v = (unsigned)i * 7u;
        ip[len++] = '1';
        ip[len++] = '0';
        ip[len++] = '.';
        ip[len++] = (char)('0' + v % 10);
        ip[len++] = (char)('0' + v / 10 % 10);
        tg_request req = {.method = {"GET", 3}, .path = {"/a", 2}, .host = {"h", 1},
                          .client_ip = {ip, (size_t)len}, .now_ms = now, .headers = &h,
                          .n_headers = 1};
        tg_decision d;
        CHECK(tg_verify(e, &req, &d) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *mem, buf[65536], resp[70000];
    static size_t len;
    tg_config cfg = {.edge_id = {"fuzz", 4}, .max_keys = 8, .sync_interval_ms = 1000,
                     .seed = "fuzz-seed-123456"};
    tg_edge *e;
    if (size < 1 || size > 65000)
        return 0;
    if (!mem) {
        len = tg_edge_size(&cfg);
        mem = aligned_alloc(8, (len + 7) & ~(size_t)7);
    }
    CHECK(tg_edge_init(mem, len, &cfg, &e) == 0);

    /* A policy, traffic over more keys than the table holds (spilling),
     * and a batch in flight. */
    CHECK(tg_sync_request(e, T0, buf, sizeof buf) > 0);
    CHECK(tg_sync_response(e, T0, POLICY, sizeof POLICY) == 0);
    CHECK(tg_policy_version(e) == 3);
    traffic(e, T0 + 1, 20);
    CHECK(tg_sync_request(e, T0 + 2, buf, sizeof buf) > 0);
    traffic(e, T0 + 3, 5);

    size_t n = size - 1;
    memcpy(resp, data + 1, n);
    if (data[0] & 1) {
        resp[n++] = 0x08;
        resp[n++] = (uint8_t)e->seq;
    }
    uint64_t seq = e->seq;
    int rc = tg_sync_response(e, T0 + 4, resp, n);
    CHECK(rc == 0 || rc == TG_EPROTO || rc == TG_ESTATE);
    if (rc != 0)
        tg_sync_failed(e, T0 + 4);

    /* Whatever happened, the edge keeps working and never loses its
     * batch: a retry of an unacknowledged batch has the same seq. */
    traffic(e, T0 + 5, 12);
    long m = tg_sync_request(e, T0 + 6, buf, sizeof buf);
    CHECK(m > 0);
    CHECK(e->seq == seq || e->seq == seq + 1);
    if (data[0] & 2) {
        if (data[0] & 1)
            resp[n - 1] = (uint8_t)e->seq;
        rc = tg_sync_response(e, T0 + 7, resp, n);
        CHECK(rc == 0 || rc == TG_EPROTO || rc == TG_ESTATE);
        traffic(e, T0 + 8, 12);
        CHECK(tg_sync_request(e, T0 + 9, buf, sizeof buf) > 0);
    }
    char names[1024];
    CHECK(tg_header_names(e, names, sizeof names) >= 0);
    return 0;
}
