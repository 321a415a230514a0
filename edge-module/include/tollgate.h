/* tollgate.h — the edge core's only public header.
 *
 * The edge core decides every request locally and reconciles its counts with
 * the coordinator about once a second. It is pure: no I/O, no clock (the host
 * passes now_ms), no allocator (the host hands it one block of memory, sized
 * by tg_edge_size(), at init). The same sources build natively (libtollgate.a,
 * for tests) and for freestanding wasm32 (tollgate.wasm, see src/wasm.c).
 *
 * Return convention: 0 or a positive count on success, a negative TG_E* code
 * on failure. Nothing here allocates; pointers handed out (decision token,
 * headers) point into the edge's own memory and stay valid until the next
 * call that takes a non-const tg_edge.
 */
#ifndef TOLLGATE_H
#define TOLLGATE_H

#include <stddef.h>
#include <stdint.h>

#define TG_MODULE_VERSION "0.1.0"

/* Error codes (negative returns). */
#define TG_EINVAL   (-1)   /* bad argument or malformed input */
#define TG_ENOSPC   (-2)   /* output buffer or table too small */
#define TG_EPROTO   (-3)   /* malformed protobuf */
#define TG_ESTATE   (-4)   /* call out of order (e.g. response with no sync) */

typedef struct tg_edge tg_edge; /* opaque */

typedef struct tg_str {
    const char *p;
    size_t len;
} tg_str;

typedef struct tg_config {
    tg_str edge_id;             /* copied; at most 64 bytes */
    uint32_t max_keys;          /* (quota, key) slots; 0 = 4096 */
    uint32_t sync_interval_ms;  /* until the coordinator says; 0 = 1000 */
} tg_config;

/* The request features the host extracts. Any may be empty. */
typedef struct tg_request {
    tg_str method;
    tg_str path;
    tg_str host;
    tg_str client_ip;
    tg_str authorization;  /* the Authorization header value */
    tg_str cookie;         /* the Cookie header value */
    uint64_t now_ms;       /* host wall clock, ms since the epoch */
} tg_request;

typedef enum tg_kind {
    TG_ALLOW = 0,
    TG_DENY = 1,
    TG_CHALLENGE = 2
} tg_kind;

/* Stable reason set; tg_reason_name() gives the wire/log spelling. */
typedef enum tg_reason {
    TG_REASON_NONE = 0,
    TG_REASON_RATE_LIMITED = 1,  /* local lease spent or coordinator said so */
    TG_REASON_BLOCKED = 2,       /* coordinator action DENY */
    TG_REASON_INVALID_TOKEN = 3,
    TG_REASON_TOKEN_EXPIRED = 4,
    TG_REASON_MISSING_TOKEN = 5,
    TG_REASON_BAD_REQUEST = 6    /* features the edge cannot key on */
} tg_reason;

typedef struct tg_decision {
    tg_kind kind;
    tg_reason reason;
    uint16_t status;         /* 200 for Allow; 429 / 401 / 400 otherwise */
    uint32_t retry_after_s;  /* set with 429 */
    tg_str token;            /* Challenge: the coordinator's captcha token */
    tg_str headers;          /* "Name: value\r\n" lines for the host to add */
} tg_decision;

/* Bytes of memory tg_edge_init() needs for this configuration. */
size_t tg_edge_size(const tg_config *cfg);

/* Lays the edge out in mem (aligned to 8, at least tg_edge_size() bytes).
 * The memory belongs to the caller; the edge never frees it. */
int tg_edge_init(void *mem, size_t len, const tg_config *cfg, tg_edge **out);

/* Decides one request. Always fills *out (Allow when the edge has no policy
 * yet); returns 0, or TG_EINVAL for NULL arguments. */
int tg_verify(tg_edge *e, const tg_request *req, tg_decision *out);

/* 1 when the host should sync now: the interval passed, a lease runs low,
 * a new key wants a lease, or a previous sync failed and its backoff ended. */
int tg_sync_due(const tg_edge *e, uint64_t now_ms);

/* Encodes the SyncRequest to send into buf; returns its length. Until it is
 * acknowledged, every call returns the same seq and the same counts (a retry
 * never counts twice); counts made meanwhile wait for the next seq. */
long tg_sync_request(tg_edge *e, uint64_t now_ms, uint8_t *buf, size_t cap);

/* Applies a SyncResponse: acknowledges the batch, installs leases, actions,
 * challenge tokens and a new policy if one is carried. On TG_EPROTO nothing
 * changes. */
int tg_sync_response(tg_edge *e, uint64_t now_ms, const uint8_t *buf, size_t len);

/* The sync could not be delivered or answered: keep the batch for a retry
 * with the same seq, and back off. */
void tg_sync_failed(tg_edge *e, uint64_t now_ms);

/* Introspection for hosts, tests and stats. */
uint64_t tg_policy_version(const tg_edge *e);
uint64_t tg_last_sync_ok_ms(const tg_edge *e);  /* 0: never */
const char *tg_reason_name(tg_reason r);        /* "rate_limited", ... */

#endif /* TOLLGATE_H */
