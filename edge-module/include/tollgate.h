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
 *
 * How tg_verify() decides, in order:
 *  1. The quotas whose path prefix and method match. None: Allow, nothing
 *     counted, the Authorization and Cookie headers never looked at.
 *  2. The token: "Authorization: Bearer <token>" (scheme case-insensitive,
 *     one space; any other Authorization value is no token). A token whose
 *     signature the host must check first makes tg_verify() answer
 *     TG_CHECK_SIGNATURE before anything is counted (see tg_verify()). A token that fails verification is
 *     Deny(invalid_token), Deny(unknown_kid) (no key has its kid, or no key
 *     its algorithm when it has none), Deny(unsupported_alg) (an alg
 *     outside tg_alg, "none" in any case included), or Deny(token_expired)
 *     for exp / nbf outside the leeway: 401 with
 *     `WWW-Authenticate: Bearer error="invalid_token"`. Quotas whose key
 *     needs no claim still count such a request as denied.
 *  3. No token: a quota with require_token is Deny(missing_token) (401,
 *     `WWW-Authenticate: Bearer`, counted as denied like 2); a quota whose
 *     key has a claim part is skipped (not counted).
 *  4. The key (see Quota.key in proto/tollgate.proto): parts joined by "|",
 *     "%" and "|" in values escaped as %25 and %7C. A claim or header part
 *     that is absent (or empty; or a claim that is not a string or number)
 *     skips the quota. An empty ip / route / host, a claim value over 96
 *     bytes, a key holding a NUL or starting with "~" (the edge's
 *     pseudo-keys) is Deny(bad_request), 400. A key over 96 bytes is sent
 *     as "~h" + the first 16 bytes of its SHA-256 in lower-case hex.
 *  5. The bucket of each (quota, key): Allow, Deny(rate_limited) 429,
 *     Deny(blocked) 429 (coordinator DENY), Challenge(token) 429
 *     (coordinator CHALLENGE). A valid clearance cookie
 *     (tollgate_clearance, see tg_add_key) turns that quota's CHALLENGE
 *     into Allow, counted as admitted, even with an empty bucket.
 *  Of the enforced quotas the most severe verdict decides (bad_request >
 *  token problems > blocked > rate_limited > challenge > allow); shadow
 *  quotas count what they would have decided and never change the answer.
 *  A quota whose key template this edge cannot use (it does not parse, or
 *  the policy names more than 8 claims or 16 headers in all) never
 *  matches; the rest of the policy is enforced.
 *
 * Tokens: every algorithm of tg_alg, verified strictly (see
 * edge-module/src/jwt.c): HS256 here, the others by the host (WebCrypto
 * in the JS glue) when tg_verify() asks. The outcome of each distinct
 * token is cached (256 entries, keyed by a SipHash of the token under
 * tg_config.seed, confirmed by its length and the end of its signature),
 * so a repeated token costs one hash; exp / nbf are checked against the
 * clock on every request. tg_add_key(), tg_jwt_configure() and a new
 * policy empty the cache.
 *
 * Counts are never lost to the fixed-size key table: evicting a key with
 * counts not yet sent moves them to a spill list (256 records) sent with
 * the next batch; only when that is full does a key that finds no room
 * count under the quota's "~overflow" pseudo-key.
 *
 * Staleness: age = now - the last successful sync (a degraded answer is
 * not one, and its leases are ignored). Within 3 sync intervals the
 * coordinator's leases are the only refill (a lease not renewed for a
 * whole window gives way to the quota's floor; an expired CHALLENGE or
 * DENY leaves the bucket as it was, not at the floor). Beyond that, each
 * bucket refills itself at A(age) tokens per window, never holding more
 * than A(age) = max(floor, L * 2^-((age - grace) / (10 intervals))), L the
 * key's last lease; 2^-x is exact at whole x and linear in between. Once
 * A(age) is down to the floor, fail_open quotas keep refilling at the
 * floor and fail_closed quotas stop refilling (their buckets drain to
 * Deny(rate_limited)) until a sync succeeds. A new key always starts with
 * the floor.
 *
 * Identity: edge_id must be unique per running instance: the coordinator
 * applies each (edge_id, seq) once, so two instances sharing an id would
 * have each other's batches taken for retries. Use "<name>/<instance>":
 * the coordinator authenticates the name (the part before the first '/')
 * and keeps counts and leases per full edge_id. The JS glue appends a
 * random instance to its edgeId option.
 */
#ifndef TOLLGATE_H
#define TOLLGATE_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate_caps.h"

#define TG_MODULE_VERSION "0.2.0"

/* Error codes (negative returns). */
#define TG_EINVAL (-1) /* bad argument or malformed input */
#define TG_ENOSPC (-2) /* output buffer or table too small */
#define TG_EPROTO (-3) /* malformed protobuf */
#define TG_ESTATE (-4) /* call out of order (e.g. response with no sync) */

typedef struct tg_edge tg_edge; /* opaque */

typedef struct tg_str {
    const char *p;
    size_t len;
} tg_str;

typedef struct tg_config {
    tg_str edge_id;            /* copied; at most 64 bytes */
    uint32_t max_keys;         /* (quota, key) slots; 0 = 4096 */
    uint32_t sync_interval_ms; /* until the coordinator says; 0 = 1000 */
    uint8_t seed[16];          /* random bytes from the host: keys the
                                  token cache's hash (SipHash-2-4) */
} tg_config;

typedef struct tg_header {
    tg_str name; /* lower case */
    tg_str value;
} tg_header;

#define TG_MAX_HEADERS TG_CAP_HEADERS /* headers a request may carry */

/* The request features the host extracts. Any may be empty. */
typedef struct tg_request {
    tg_str method;
    tg_str path;
    tg_str host;
    tg_str client_ip;
    tg_str authorization; /* the Authorization header value */
    tg_str cookie;        /* the Cookie header value */
    uint64_t now_ms;      /* host wall clock, ms since the epoch */
    /* The headers the policy's key templates name (tg_header_names()),
     * at most TG_MAX_HEADERS; the first of a name counts. */
    const tg_header *headers;
    size_t n_headers;
    /* The host's verdict on the bearer token's signature, once
     * tg_verify() answered TG_CHECK_SIGNATURE for it: 0 none (the usual
     * case), -1 no candidate key verified it, i + 1 the key of index i
     * did. */
    int sig_verdict;
} tg_request;

/* TG_CHECK_SIGNATURE is not a decision: see tg_signature_verdict(). */
typedef enum tg_kind {
    TG_ALLOW = 0,
    TG_DENY = 1,
    TG_CHALLENGE = 2,
    TG_CHECK_SIGNATURE = 3
} tg_kind;

/* The kinds' names, each NUL-terminated, in enum order. */
/* The decisions' names (not TG_CHECK_SIGNATURE's), each NUL-terminated,
 * in enum order. */
#define TG_KIND_COUNT 3
#define TG_KIND_NAMES "allow\0deny\0challenge"

/* Stable reason set; tg_reason_name() gives the wire/log spelling. The
 * numbers never change; new reasons are appended. */
typedef enum tg_reason {
    TG_REASON_NONE = 0,
    TG_REASON_RATE_LIMITED = 1,   /* 429: local lease spent, or Challenge */
    TG_REASON_BLOCKED = 2,        /* 429: coordinator action DENY */
    TG_REASON_INVALID_TOKEN = 3,  /* 401: bad, forged or unacceptable token */
    TG_REASON_TOKEN_EXPIRED = 4,  /* 401: exp passed / nbf not reached */
    TG_REASON_MISSING_TOKEN = 5,  /* 401: a matching quota requires a token */
    TG_REASON_BAD_REQUEST = 6,    /* 400: features the edge cannot key on */
    TG_REASON_UNKNOWN_KID = 7,    /* 401: no key for the token's kid */
    TG_REASON_UNSUPPORTED_ALG = 8 /* 401: an alg outside tg_alg */
} tg_reason;

/* The reasons' names (tg_reason_name()), each NUL-terminated, in enum
 * order: the one spelling of the set, which wasm hosts read from the
 * module (src/wasm.c) instead of copying it. */
#define TG_REASON_COUNT 9
#define TG_REASON_NAMES                                                        \
    "none\0rate_limited\0blocked\0invalid_token\0"                             \
    "token_expired\0missing_token\0bad_request\0unknown_kid\0"                 \
    "unsupported_alg"

typedef struct tg_decision {
    tg_kind kind;
    tg_reason reason;
    uint16_t status;        /* 200 for Allow; 429 / 401 / 400 otherwise */
    uint32_t retry_after_s; /* set with 429 */
    tg_str token;           /* Challenge: the coordinator's captcha token.
                               TG_CHECK_SIGNATURE: the signing input */
    tg_str headers;         /* "Name: value\r\n" lines for the host to add.
                               TG_CHECK_SIGNATURE: the decoded signature */
    uint32_t sig_keys;      /* TG_CHECK_SIGNATURE: bit i, try key index i */
    uint32_t sig_alg;       /* TG_CHECK_SIGNATURE: the token's tg_alg */
} tg_decision;

/* JWS algorithms (RFC 7518 §3.1, RFC 8037 §3.1), numbered as
 * TG_ALG_NAMES spells them. */
typedef enum tg_alg {
    TG_ALG_HS256 = 0,
    TG_ALG_HS384,
    TG_ALG_HS512,
    TG_ALG_RS256,
    TG_ALG_RS384,
    TG_ALG_RS512,
    TG_ALG_PS256,
    TG_ALG_PS384,
    TG_ALG_PS512,
    TG_ALG_ES256,
    TG_ALG_ES384,
    TG_ALG_EDDSA
} tg_alg;

/* Every name is 5 bytes, back to back, in enum order. */
#define TG_ALG_COUNT 12
#define TG_ALG_NAMES                                                           \
    "HS256HS384HS512RS256RS384RS512PS256PS384PS512ES256ES384EdDSA"

/* Bytes of memory tg_edge_init() needs for this configuration. */
size_t tg_edge_size(const tg_config *cfg);

/* Lays the edge out in mem (aligned to 8, at least tg_edge_size() bytes).
 * The memory belongs to the caller; the edge never frees it. */
int tg_edge_init(void *mem, size_t len, const tg_config *cfg, tg_edge **out);

/* Token keys, provisioned by the host, never synced. TG_KEY_JWT keys
 * verify clients' JWTs; TG_KEY_CLEARANCE keys verify the coordinator's
 * clearance tokens: JWS HS256 tokens in the cookie tollgate_clearance,
 * claims {"q": quota name, "kh": base64url of the first 16 bytes of
 * SHA-256(quota "\n" key), "exp", "iat"}.
 *
 * Each key pins one algorithm: a token is only ever checked with keys of
 * its own alg (an RS256 public key is never an HMAC secret, an ES256
 * token never meets an RSA key). TG_ALG_HS256 keys carry their secret
 * (1..128 bytes, over 64 hashed first, RFC 2104) and the core computes
 * the MAC. Any other algorithm is a host key (secret NULL, len 0; JWT
 * keys only): the core keeps its kid and algorithm, and the host holds
 * the key itself under the index returned, checks signatures when
 * tg_verify() asks (TG_CHECK_SIGNATURE) and answers in the next
 * tg_verify() (tg_request.sig_verdict). The host refuses weak keys (RSA under 2048
 * bits) before adding them.
 *
 * Up to 16 keys per kind; adding a kid that exists replaces that key in
 * place, same index (rotation: add the new kid, keep the old until its
 * tokens expire); keys without a kid are one per algorithm. A token with a "kid" uses the key of that kid, which
 * must pin the token's alg; a token without one is tried against the
 * keys of its alg, the first TG__KIDLESS_TRIES (4) of them. Kids are at
 * most 64 bytes. Returns the key's index (0..15), TG_EINVAL or TG_ENOSPC
 * (16 keys of that kind). tg_add_key() is tg_add_key_alg() with
 * TG_ALG_HS256, returning 0 on success. */
#define TG_KEY_JWT       0
#define TG_KEY_CLEARANCE 1
int tg_add_key_alg(tg_edge *e, int kind, int alg, tg_str kid,
                   const uint8_t *secret, size_t len);
int tg_add_key(tg_edge *e, int kind, tg_str kid, const uint8_t *secret,
               size_t len);

typedef struct tg_jwt_options {
    uint32_t leeway_s;        /* clock skew allowed on exp / nbf */
    tg_str issuer;            /* "iss" must equal it; empty: not checked */
    tg_str audience;          /* "aud" (a string, or an array of them) must
                                 hold it; empty: not checked (an aud in
                                 the token is then ignored) */
    uint32_t max_token_bytes; /* longer tokens are invalid unread; 0 = 8192,
                                 at most 16384 */
} tg_jwt_options;

/* Replaces the JWT options (until called: leeway 60 s, no iss / aud
 * check, 8192 bytes). Issuer and audience at most 256 bytes. The options
 * apply to client JWTs; clearance tokens only share the leeway and size
 * cap. Returns 0 or TG_EINVAL. */
int tg_jwt_configure(tg_edge *e, const tg_jwt_options *o);

/* Decides one request. Always fills *out (Allow when the edge has no policy
 * yet); returns 0, or TG_EINVAL for NULL arguments. out->kind
 * TG_CHECK_SIGNATURE is not a decision: nothing was counted, and the host
 * checks the bearer token's signature (sig_alg, the signing input in
 * out->token, the signature bytes in out->headers, valid until the next
 * call) with its keys whose index bit is set in sig_keys, then calls
 * tg_verify() again for the request with req->sig_verdict set. The core
 * checks the token again from the start with that verdict standing in
 * for the signature (a key that is not a candidate counts as none) and
 * caches the outcome, so the token's next requests decide without the
 * host. */
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
int tg_sync_response(tg_edge *e, uint64_t now_ms, const uint8_t *buf,
                     size_t len);

/* The sync could not be delivered or answered: keep the batch for a retry
 * with the same seq, and back off. */
void tg_sync_failed(tg_edge *e, uint64_t now_ms);

/* The coordinator answered the batch in flight with 409: a key already
 * holds a record of applied_seq (the problem's "applied_seq" member),
 * newer than this batch's seq. That is an edge restarted under the same
 * edge_id: the earlier instance's records outlive it (two windows). The
 * batch was not applied, so it is renumbered applied_seq + 1, kept whole,
 * and due again at once; a key with a still newer record answers 409
 * again, with that seq. Counted once, nothing lost, provided the batch
 * went in one script call (at most 512 counts: see coordinator/sync.c).
 * applied_seq equal to the batch's seq is a stored batch of the earlier
 * instance that had the same seq (a coordinator that compares a resend's
 * counts answers that with 409 too). Returns 0, or TG_ESTATE when no batch
 * is in flight or applied_seq is older than its seq (no restart explains
 * that 409: treat it as a failed sync). */
int tg_sync_conflict(tg_edge *e, uint64_t now_ms, uint64_t applied_seq);

/* The distinct header names the enforced policy's key templates use, each
 * followed by "\n", into buf: what the host must pass in
 * tg_request.headers. Returns the length (0: none), or TG_ENOSPC. */
long tg_header_names(const tg_edge *e, char *buf, size_t cap);

/* Introspection for hosts, tests and stats. */
uint64_t tg_policy_version(const tg_edge *e);
uint64_t tg_last_sync_ok_ms(const tg_edge *e); /* 0: never */
const char *tg_reason_name(tg_reason r);       /* "rate_limited", ... */

#endif /* TOLLGATE_H */
