/* wasm.c — the explicit export list of tollgate.wasm, and nothing else.
 *
 * The host talks to the core through two fixed 64 KiB buffers: it writes
 * inputs at tg_in() and reads results at tg_out(). Times arrive as f64
 * (JavaScript numbers; exact integer milliseconds). The edge block lives
 * past __heap_base in linear memory grown on init, so the module needs no
 * allocator and imports nothing. One edge per instance.
 *
 * verify input at tg_in: six little-endian u32 lengths (method, path, host,
 * client_ip, authorization, cookie), then those byte strings in that order.
 * verify output at tg_out: six little-endian u32 (kind, reason, status,
 * retry_after_s, token_len, headers_len), then the token, then the headers.
 */
#include <stddef.h>
#include <stdint.h>

#include "mem.h"
#include "tollgate.h"

#define IO_SIZE 65536
#define PAGE 65536
#define EXPORT(name) __attribute__((export_name(name)))

extern unsigned char __heap_base;

static uint8_t io_in[IO_SIZE];
static uint8_t io_out[IO_SIZE];
static tg_edge *edge;

EXPORT("tg_in") uint8_t *tg_wasm_in(void);
EXPORT("tg_out") uint8_t *tg_wasm_out(void);
EXPORT("tg_io_size") uint32_t tg_wasm_io_size(void);
EXPORT("init") int32_t tg_wasm_init(uint32_t edge_id_len, uint32_t max_keys,
                                    uint32_t sync_interval_ms);
EXPORT("verify") int32_t tg_wasm_verify(double now_ms);
EXPORT("sync_due") int32_t tg_wasm_sync_due(double now_ms);
EXPORT("sync_request") int32_t tg_wasm_sync_request(double now_ms);
EXPORT("sync_response") int32_t tg_wasm_sync_response(double now_ms, uint32_t len);
EXPORT("sync_failed") void tg_wasm_sync_failed(double now_ms);
EXPORT("policy_version") double tg_wasm_policy_version(void);

uint8_t *tg_wasm_in(void) { return io_in; }
uint8_t *tg_wasm_out(void) { return io_out; }
uint32_t tg_wasm_io_size(void) { return IO_SIZE; }

/* Milliseconds as JS hands them: finite, non-negative, within 2^53
 * (where doubles stop being exact integers). */
static int ms_from(double d, uint64_t *ms)
{
    if (!(d >= 0.0 && d <= 9007199254740992.0))
        return TG_EINVAL;
    *ms = (uint64_t)d;
    return 0;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Re-initialising replaces the edge (a fresh one, same memory). On any
 * failure there is no edge until the next successful init. */
int32_t tg_wasm_init(uint32_t edge_id_len, uint32_t max_keys, uint32_t sync_interval_ms)
{
    tg_config cfg = {{(const char *)io_in, edge_id_len}, max_keys, sync_interval_ms};
    uintptr_t base = ((uintptr_t)&__heap_base + 7) & ~(uintptr_t)7;
    size_t need = tg_edge_size(&cfg);

    edge = NULL;
    if (edge_id_len > IO_SIZE || need == 0 || need > SIZE_MAX - base)
        return TG_EINVAL;
    size_t have = __builtin_wasm_memory_size(0) * PAGE;
    if (base + need > have &&
        __builtin_wasm_memory_grow(0, (base + need - have + PAGE - 1) / PAGE) == SIZE_MAX)
        return TG_ENOSPC;
    return tg_edge_init((void *)base, need, &cfg, &edge);
}

int32_t tg_wasm_verify(double now_ms)
{
    tg_str f[6];
    uint64_t total = 24;
    tg_request req;
    tg_decision d;

    if (!edge)
        return TG_ESTATE;
    if (ms_from(now_ms, &req.now_ms) < 0)
        return TG_EINVAL;
    for (int i = 0; i < 6; i++) {
        f[i].len = get_u32(io_in + 4 * i);
        f[i].p = (const char *)io_in + total;
        total += f[i].len;
        if (total > IO_SIZE)
            return TG_EINVAL;
    }
    req.method = f[0];
    req.path = f[1];
    req.host = f[2];
    req.client_ip = f[3];
    req.authorization = f[4];
    req.cookie = f[5];
    int rc = tg_verify(edge, &req, &d);
    if (rc < 0)
        return rc;
    if (24 + d.token.len + d.headers.len > IO_SIZE)
        return TG_ENOSPC;
    put_u32(io_out, (uint32_t)d.kind);
    put_u32(io_out + 4, (uint32_t)d.reason);
    put_u32(io_out + 8, d.status);
    put_u32(io_out + 12, d.retry_after_s);
    put_u32(io_out + 16, (uint32_t)d.token.len);
    put_u32(io_out + 20, (uint32_t)d.headers.len);
    if (d.token.len)
        tg__memcpy(io_out + 24, d.token.p, d.token.len);
    if (d.headers.len)
        tg__memcpy(io_out + 24 + d.token.len, d.headers.p, d.headers.len);
    return (int32_t)d.kind;
}

int32_t tg_wasm_sync_due(double now_ms)
{
    uint64_t now;
    return edge && ms_from(now_ms, &now) == 0 ? tg_sync_due(edge, now) : 0;
}

int32_t tg_wasm_sync_request(double now_ms)
{
    uint64_t now;
    if (!edge)
        return TG_ESTATE;
    if (ms_from(now_ms, &now) < 0)
        return TG_EINVAL;
    return (int32_t)tg_sync_request(edge, now, io_out, IO_SIZE);
}

int32_t tg_wasm_sync_response(double now_ms, uint32_t len)
{
    uint64_t now;
    if (!edge)
        return TG_ESTATE;
    if (ms_from(now_ms, &now) < 0 || len > IO_SIZE)
        return TG_EINVAL;
    return tg_sync_response(edge, now, io_in, len);
}

void tg_wasm_sync_failed(double now_ms)
{
    uint64_t now;
    if (edge && ms_from(now_ms, &now) == 0)
        tg_sync_failed(edge, now);
}

double tg_wasm_policy_version(void)
{
    return edge ? (double)tg_policy_version(edge) : 0.0;
}
