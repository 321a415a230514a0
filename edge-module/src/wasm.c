/* wasm.c — the explicit export list of tollgate.wasm, and nothing else.
 *
 * The host talks to the core through two fixed 64 KiB buffers: it writes
 * inputs at the in buffer and reads results at the out buffer. Times
 * arrive as f64 (JavaScript numbers; exact integer milliseconds). The edge
 * block lives past __heap_base in linear memory grown on init, so the
 * module needs no allocator and imports nothing. One edge per instance.
 *
 * The layout is not copied into the host: tg_abi() returns the address of
 * a table of little-endian u32 words the glue reads once (as sqlite's
 * sqlite3-wasm.c exports its enums and struct layouts), word i being
 * ABI_<name> below. Words are only ever appended; ABI_VERSION changes when
 * the meaning of an existing word or export does.
 *
 * init input at in: the edge id, then 16 random seed bytes.
 * add_key(kind, alg, kid_len, secret_len) input: the kid, then the
 * secret (none for a host key); returns the key's index. jwt_config
 * input: the issuer, then the audience.
 * verify input at in: ABI_IN_FIELDS + 1 u32 (the lengths of method,
 * path, host, client_ip, authorization, cookie, and n_headers <=
 * ABI_MAX_HEADERS), then n_headers pairs of u32 (name length, value
 * length), then the byte strings in that order, then name0, value0,
 * name1, value1, ...
 * verify output at out: ABI_OUT_WORDS u32 (kind, reason, status,
 * retry_after_s, token_len, headers_len, sig_keys, sig_alg), then the
 * token, then the headers (for check_signature: the signing input, then
 * the signature). kind and reason index the names at ABI_NAMES (ABI_KINDS
 * kind names, then ABI_REASONS reason names, each NUL-terminated); a
 * tg_alg indexes the ABI_ALGS names at ABI_ALG_NAMES, 5 bytes each;
 * kind ABI_KIND_CHECK is check_signature (not a decision: no name).
 * verify(now_ms, sig_verdict): tg_request.sig_verdict (0 when omitted).
 * header_names output at out: the policy's header names, each followed
 * by "\n"; the return value is the length.
 */
#include <stddef.h>
#include <stdint.h>

#include "jwt.h" /* tg__alg_names */
#include "mem.h"
#include "tollgate.h"

#define IO_SIZE      65536
#define PAGE         65536
#define EXPORT(name) __attribute__((export_name(name)))

extern unsigned char __heap_base;

static uint8_t io_in[IO_SIZE];
static uint8_t io_out[IO_SIZE];
static tg_edge *edge;

/* verify's input fields: method, path, host, client_ip, authorization,
 * cookie; its output words: kind, reason, status, retry_after_s,
 * token_len, headers_len, sig_keys, sig_alg. */
#define IN_FIELDS 6
#define OUT_WORDS 8

static const char names[] = TG_KIND_NAMES "\0" TG_REASON_NAMES;

enum {
    ABI_VERSION,     /* 2 */
    ABI_WORDS,       /* words in this table */
    ABI_IN,          /* address of the in buffer */
    ABI_OUT,         /* address of the out buffer */
    ABI_IO_SIZE,     /* bytes of each */
    ABI_IN_FIELDS,   /* verify: byte-string fields before n_headers */
    ABI_MAX_HEADERS, /* verify: most header pairs */
    ABI_OUT_WORDS,   /* verify: u32 words before the token */
    ABI_KEY_JWT,     /* add_key kinds */
    ABI_KEY_CLEARANCE,
    ABI_KINDS,      /* number of kind names */
    ABI_REASONS,    /* number of reason names */
    ABI_NAMES,      /* address of the names */
    ABI_NAMES_LEN,  /* their bytes, the last NUL included */
    ABI_ALGS,       /* number of tg_alg names */
    ABI_ALG_NAMES,  /* their address */
    ABI_KIND_CHECK, /* the kind that asks for a signature check */
    ABI_N
};

static const uint32_t abi[ABI_N] = {
    [ABI_VERSION] = 2,
    [ABI_WORDS] = ABI_N,
    [ABI_IN] = (uint32_t)(uintptr_t)io_in,
    [ABI_OUT] = (uint32_t)(uintptr_t)io_out,
    [ABI_IO_SIZE] = IO_SIZE,
    [ABI_IN_FIELDS] = IN_FIELDS,
    [ABI_MAX_HEADERS] = TG_MAX_HEADERS,
    [ABI_OUT_WORDS] = OUT_WORDS,
    [ABI_KEY_JWT] = TG_KEY_JWT,
    [ABI_KEY_CLEARANCE] = TG_KEY_CLEARANCE,
    [ABI_KINDS] = TG_KIND_COUNT,
    [ABI_REASONS] = TG_REASON_COUNT,
    [ABI_NAMES] = (uint32_t)(uintptr_t)names,
    [ABI_NAMES_LEN] = sizeof names,
    [ABI_ALGS] = TG_ALG_COUNT,
    [ABI_ALG_NAMES] = (uint32_t)(uintptr_t)tg__alg_names,
    [ABI_KIND_CHECK] = TG_CHECK_SIGNATURE,
};

EXPORT("tg_abi") const uint32_t *tg_wasm_abi(void);
EXPORT("init")
int32_t tg_wasm_init(uint32_t edge_id_len, uint32_t max_keys,
                     uint32_t sync_interval_ms);
EXPORT("add_key")
int32_t tg_wasm_add_key(uint32_t kind, uint32_t alg, uint32_t kid_len,
                        uint32_t secret_len);
EXPORT("jwt_config")
int32_t tg_wasm_jwt_config(uint32_t leeway_s, uint32_t issuer_len,
                           uint32_t audience_len, uint32_t max_token_bytes);
EXPORT("header_names") int32_t tg_wasm_header_names(void);
EXPORT("verify") int32_t tg_wasm_verify(double now_ms, int32_t sig_verdict);
EXPORT("sync_due") int32_t tg_wasm_sync_due(double now_ms);
EXPORT("sync_request") int32_t tg_wasm_sync_request(double now_ms);
EXPORT("sync_response")
int32_t tg_wasm_sync_response(double now_ms, uint32_t len);
EXPORT("sync_failed") void tg_wasm_sync_failed(double now_ms);
EXPORT("sync_conflict")
int32_t tg_wasm_sync_conflict(double now_ms, uint32_t applied_lo,
                              uint32_t applied_hi);
EXPORT("policy_version") double tg_wasm_policy_version(void);

const uint32_t *tg_wasm_abi(void)
{
    return abi;
}

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
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
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
int32_t tg_wasm_init(uint32_t edge_id_len, uint32_t max_keys,
                     uint32_t sync_interval_ms)
{
    tg_config cfg;
    uintptr_t base = ((uintptr_t)&__heap_base + 7) & ~(uintptr_t)7;

    edge = NULL;
    if (edge_id_len > IO_SIZE - 16)
        return TG_EINVAL;
    cfg.edge_id = (tg_str){(const char *)io_in, edge_id_len};
    cfg.max_keys = max_keys;
    cfg.sync_interval_ms = sync_interval_ms;
    tg__memcpy(cfg.seed, io_in + edge_id_len, 16);
    size_t need = tg_edge_size(&cfg);
    if (need == 0 || need > SIZE_MAX - base)
        return TG_EINVAL;
    size_t have = __builtin_wasm_memory_size(0) * PAGE;
    if (base + need > have &&
        __builtin_wasm_memory_grow(0, (base + need - have + PAGE - 1) / PAGE) ==
            SIZE_MAX)
        return TG_ENOSPC;
    return tg_edge_init((void *)base, need, &cfg, &edge);
}

int32_t tg_wasm_add_key(uint32_t kind, uint32_t alg, uint32_t kid_len,
                        uint32_t secret_len)
{
    if (!edge)
        return TG_ESTATE;
    if (kid_len > IO_SIZE || secret_len > IO_SIZE - kid_len)
        return TG_EINVAL;
    return tg_add_key_alg(edge, (int)kind, (int)alg,
                          (tg_str){(const char *)io_in, kid_len},
                          secret_len ? io_in + kid_len : NULL, secret_len);
}

int32_t tg_wasm_jwt_config(uint32_t leeway_s, uint32_t issuer_len,
                           uint32_t audience_len, uint32_t max_token_bytes)
{
    tg_jwt_options o;
    if (!edge)
        return TG_ESTATE;
    if (issuer_len > IO_SIZE || audience_len > IO_SIZE - issuer_len)
        return TG_EINVAL;
    o.leeway_s = leeway_s;
    o.issuer = (tg_str){(const char *)io_in, issuer_len};
    o.audience = (tg_str){(const char *)io_in + issuer_len, audience_len};
    o.max_token_bytes = max_token_bytes;
    return tg_jwt_configure(edge, &o);
}

int32_t tg_wasm_header_names(void)
{
    if (!edge)
        return TG_ESTATE;
    return (int32_t)tg_header_names(edge, (char *)io_out, IO_SIZE);
}

/* Every length is checked against what is left of the buffer before the
 * next one is used, so no sum can wrap. */
int32_t tg_wasm_verify(double now_ms, int32_t sig_verdict)
{
    tg_str f[IN_FIELDS];
    tg_header hs[TG_MAX_HEADERS];
    uint32_t total;
    tg_request req;
    tg_decision d;

    if (!edge)
        return TG_ESTATE;
    if (ms_from(now_ms, &req.now_ms) < 0)
        return TG_EINVAL;
    uint32_t nh = get_u32(io_in + 4 * IN_FIELDS);
    if (nh > TG_MAX_HEADERS)
        return TG_EINVAL;
    total = 4 * (IN_FIELDS + 1) + 8 * nh;
    for (uint32_t i = 0; i < IN_FIELDS + 2 * nh; i++) {
        tg_str *s = i < IN_FIELDS           ? &f[i]
                    : ((i - IN_FIELDS) & 1) ? &hs[(i - IN_FIELDS) / 2].value
                                            : &hs[(i - IN_FIELDS) / 2].name;
        s->len = get_u32(io_in + (i < IN_FIELDS ? 4 * i : 4 + 4 * i));
        s->p = (const char *)io_in + total;
        if (s->len > IO_SIZE - total)
            return TG_EINVAL;
        total += (uint32_t)s->len;
    }
    req.method = f[0];
    req.path = f[1];
    req.host = f[2];
    req.client_ip = f[3];
    req.authorization = f[4];
    req.cookie = f[5];
    req.headers = hs;
    req.n_headers = nh;
    req.sig_verdict = sig_verdict;
    int rc = tg_verify(edge, &req, &d);
    if (rc < 0)
        return rc;
    if (4 * OUT_WORDS + d.token.len + d.headers.len > IO_SIZE)
        return TG_ENOSPC;
    put_u32(io_out, (uint32_t)d.kind);
    put_u32(io_out + 4, (uint32_t)d.reason);
    put_u32(io_out + 8, d.status);
    put_u32(io_out + 12, d.retry_after_s);
    put_u32(io_out + 16, (uint32_t)d.token.len);
    put_u32(io_out + 20, (uint32_t)d.headers.len);
    put_u32(io_out + 24, d.sig_keys);
    put_u32(io_out + 28, d.sig_alg);
    if (d.token.len)
        tg__memcpy(io_out + 4 * OUT_WORDS, d.token.p, d.token.len);
    if (d.headers.len)
        tg__memcpy(io_out + 4 * OUT_WORDS + d.token.len, d.headers.p,
                   d.headers.len);
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

/* applied_seq in two u32 halves: a JS number is exact only to 2^53. */
int32_t tg_wasm_sync_conflict(double now_ms, uint32_t applied_lo,
                              uint32_t applied_hi)
{
    uint64_t now;
    if (!edge)
        return TG_ESTATE;
    if (ms_from(now_ms, &now) < 0)
        return TG_EINVAL;
    return tg_sync_conflict(edge, now, (uint64_t)applied_hi << 32 | applied_lo);
}

double tg_wasm_policy_version(void)
{
    return edge ? (double)tg_policy_version(edge) : 0.0;
}
