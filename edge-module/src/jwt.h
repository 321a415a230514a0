/* jwt.h — JWS compact tokens (RFC 7515, RFC 7519) verified at the edge
 * with keys the host provisions, and a cache of verified tokens.
 *
 * One verifier serves two kinds of tokens: client JWTs (TG_KEY_JWT keys;
 * iss / aud checked when configured) and the coordinator's clearance
 * tokens (TG_KEY_CLEARANCE keys, HS256 only; exp required, iss / aud not
 * checked). What it refuses, before and after the signature, is listed at
 * tg__jwt_check() in jwt.c.
 *
 * Every key pins one algorithm (tg_alg). HS256 MACs are computed here;
 * every other algorithm is a host key: the core parses the token, pins
 * the algorithm, picks the candidate keys and hands the host the signing
 * input and the decoded signature (TG__TOK_PENDING), the host checks it
 * (WebCrypto in the JS glue) and reports the verdict with the request
 * again (tg__jwt_verdict), which is cached like any outcome. docs/jwt.md says why.
 *
 * A verified token is reduced to a tg__claims view: its exp / nbf and the
 * values of the claims the caller asked for (those the policy's key
 * templates name). Views live in a direct-mapped cache indexed by a keyed
 * 64-bit SipHash-2-4 of the token, so a repeated token costs one hash and
 * one lookup. A hit also needs the same length and the same last 43
 * characters of the signature segment (strict base64url spells a value
 * one way only). Failures that cannot change with time are cached too; a
 * cache generation number is bumped whenever keys, options or the wanted
 * claims change, which empties the cache in O(1).
 */
#ifndef TG_JWT_H
#define TG_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sha256.h"
#include "tollgate.h"

#define TG__JWT_KEYS         16 /* per kind: at most 16, a bit set names them */
#define TG__KIDLESS_TRIES    4  /* keys a token without kid is tried against */
#define TG__KID_CAP          64
#define TG__SECRET_CAP       128
#define TG__ISS_CAP          256 /* issuer and audience bytes */
#define TG__TOKEN_DEFAULT    8192
#define TG__TOKEN_MAX        16384 /* largest max_token_bytes */
#define TG__SIG_MAX          512   /* signature bytes: RSA up to 4096 bits */
#define TG__SIG_TAIL         43 /* signature characters a cache hit compares */
#define TG__LEEWAY_DEFAULT   60
/* Distinct claim names a policy may key on, bytes of a claim or header
 * name, bytes of one claim value kept in a view (tollgate_caps.h). */
#define TG__MAX_CLAIMS       TG_CAP_CLAIMS
#define TG__PART_NAME_CAP    TG_CAP_PART_NAME
#define TG__CLAIM_CAP        TG_CAP_CLAIM_BYTES
#define TG__CACHE_JWT        256 /* cache slots, powers of two */
#define TG__CACHE_CLEARANCE  64
#define TG__MAX_NUMERIC_DATE 9007199254740992ull /* 2^53 seconds */

/* What a token amounts to. The refusals come last, from TG__TOK_INVALID
 * on, so `tok >= TG__TOK_INVALID` is "refused". */
enum {
    TG__TOK_NONE = 0, /* no token presented */
    TG__TOK_OK = 1,
    TG__TOK_PENDING = 2, /* the host must check the signature first */
    TG__TOK_INVALID = 3, /* malformed, unsigned, bad signature, iss/aud... */
    TG__TOK_EXPIRED = 4, /* good, but exp passed or nbf not reached */
    TG__TOK_UNKNOWN_KID = 5, /* a kid no key has (or no key for a kidless
                                token of its algorithm) */
    TG__TOK_BAD_ALG = 6      /* an alg outside tg_alg ("none" included) */
};

/* Type of one wanted claim in a view. */
enum {
    TG__CV_ABSENT = 0,
    TG__CV_STRING = 1, /* value unescaped */
    TG__CV_NUMBER = 2, /* value is the number's JSON text */
    TG__CV_OTHER = 3,  /* boolean, null, object, array: cannot key */
    TG__CV_LONG = 4    /* longer than TG__CLAIM_CAP: cannot key */
};

/* The claims to extract. */
typedef struct tg__claimset {
    unsigned n;
    const tg_str *names;
} tg__claimset;

typedef struct tg__claims {
    uint8_t
        status; /* TG__TOK_OK or a refusal (INVALID, UNKNOWN_KID, BAD_ALG) */
    bool has_exp;
    bool has_nbf;
    uint64_t exp; /* seconds (a fractional NumericDate's fraction dropped) */
    uint64_t nbf;
    uint8_t type[TG__MAX_CLAIMS];
    uint8_t len[TG__MAX_CLAIMS];
    char val[TG__MAX_CLAIMS][TG__CLAIM_CAP];
} tg__claims;

typedef struct tg__cache_slot {
    uint64_t tag;           /* SipHash of the token */
    uint32_t gen;           /* valid when equal to tg__jwt.gen */
    uint32_t len;           /* token bytes */
    char sig[TG__SIG_TAIL]; /* the signature segment's last characters */
    tg__claims c;
} tg__cache_slot;

typedef struct tg__jwk {
    tg__hmac_key k; /* TG_ALG_HS256 only: the others are host keys */
    uint8_t alg;    /* tg_alg */
    uint8_t kid_len;
    char kid[TG__KID_CAP];
} tg__jwk;

typedef struct tg__jwt {
    tg__jwk keys[2][TG__JWT_KEYS];
    uint8_t n_keys[2];
    uint32_t leeway_s;
    uint32_t max_bytes;
    uint16_t iss_len;
    uint16_t aud_len;
    char iss[TG__ISS_CAP];
    char aud[TG__ISS_CAP];
    uint64_t sip[2]; /* SipHash key, from tg_config.seed */
    uint32_t gen;
    tg__cache_slot jwt_cache[TG__CACHE_JWT];
    tg__cache_slot clr_cache[TG__CACHE_CLEARANCE];
    /* The decoded header and payload, then the decoded signature (at
     * TG__TOKEN_MAX / 4 * 3: past what a token's segments decode to). */
    uint8_t scratch[TG__TOKEN_MAX];
} tg__jwt;

/* TG_ALG_NAMES, which alg values are matched against (and wasm.c
 * exports). */
extern const char tg__alg_names[];

/* Defaults (leeway 60 s, 8 KB tokens), no keys, empty cache. */
void tg__jwt_init(tg__jwt *j, const uint8_t seed[16]);

/* Empties the cache (keys, options or wanted claims changed). */
void tg__jwt_flush(tg__jwt *j);

/* tg_add_key_alg() and tg_jwt_configure() on the edge's verifier. */
int tg__jwt_add_key(tg__jwt *j, int kind, int alg, tg_str kid,
                    const uint8_t *secret, size_t len);
int tg__jwt_configure(tg__jwt *j, const tg_jwt_options *o);

/* The token in an Authorization value: what follows "Bearer " (scheme
 * case-insensitive, one space). Returns false when the value uses another
 * scheme or is not a Bearer credential at all: no token. */
bool tg__jwt_bearer(tg_str authorization, tg_str *token);

/* The value of cookie `name` in a Cookie header, or false. */
bool tg__cookie_get(tg_str cookie, const char *name, size_t len, tg_str *value);

/* What the host checks for a TG__TOK_PENDING token. */
typedef struct tg__sigcheck {
    uint8_t alg;   /* tg_alg */
    uint32_t keys; /* bit i: the JWT key of index i is a candidate */
    tg_str input;  /* the signing input "header.payload" (in the token) */
    tg_str sig;    /* the decoded signature (in scratch) */
} tg__sigcheck;

/* Verifies token (TG_KEY_JWT or TG_KEY_CLEARANCE) at now_ms and returns
 * TG__TOK_OK, _EXPIRED, a refusal, or (JWT keys only) TG__TOK_PENDING with
 * *chk filled: nothing is cached then, and the host reports its verdict
 * with tg__jwt_verdict() before asking again. *view is the token's
 * claims for OK and EXPIRED. The view lives in the cache and stays valid
 * until the next call for the same kind. */
int tg__jwt_check(tg__jwt *j, int kind, tg_str token, const tg__claimset *want,
                  uint64_t now_ms, const tg__claims **view, tg__sigcheck *chk);

/* The host's verdict on a token tg__jwt_check() left pending: key is the
 * index of the candidate key its signature verified under, or negative
 * for none. The token is checked again from the start with that verdict
 * standing in for the signature (a key that is not a candidate counts as
 * none) and the outcome cached. Returns the outcome (as tg__jwt_check
 * would before the clock checks). */
int tg__jwt_verdict(tg__jwt *j, tg_str token, const tg__claimset *want,
                    int key);

/* Strict base64url (RFC 4648 §5) without padding: only the 64 alphabet
 * characters, a length that is not 1 mod 4, and zero bits after the last
 * byte. Returns the decoded length, or -1. out holds n * 3 / 4 bytes. */
long tg__b64url_decode(const char *s, size_t n, uint8_t *out);

/* SipHash-2-4 (Aumasson, Bernstein) with the key k[0], k[1]. */
uint64_t tg__siphash(const uint64_t k[2], const void *p, size_t n);

#endif /* TG_JWT_H */
