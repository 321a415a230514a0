/* template.h — rate-limit key templates (Quota.key in proto/tollgate.proto).
 *
 * A template is up to four parts joined by "+": ip, route, host,
 * claim:PATH or header:NAME (NAME of [a-z0-9_-]), each at most once,
 * names at most 64 bytes, the whole at most 160 bytes: the grammar the
 * coordinator validates (co_key_template_check). A claim PATH is either
 * one JSON string naming a top-level claim of any name
 * ("https://example.com/tenant"; a "+" written \u002b, as the parts are
 * split on "+" first) or bare names joined by "." walking nested objects,
 * each of visible ASCII but . " \ + (sub, custom:tenant, org.id: the
 * member id of the object org). The edge reads a path safely whatever it
 * holds; the coordinator refuses a malformed one.
 *
 * Templates are parsed once, when a policy is installed; the claim and header names they use are collected in the
 * policy's tables (so a token is asked only for the claims some quota
 * needs, and the host passes only the headers some quota needs). A
 * template that does not parse, or that would take the policy past
 * TG__MAX_CLAIMS claim names or TG_MAX_HEADERS header names, leaves its
 * quota with no parts: the quota never matches, the rest of the policy is
 * enforced.
 */
#ifndef TG_TEMPLATE_H
#define TG_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jwt.h"
#include "tollgate.h"
#include "tollgate_caps.h"

#define TG__MAX_PARTS    TG_CAP_KEY_PARTS
#define TG__TEMPLATE_CAP TG_CAP_KEY_TEMPLATE

enum {
    TG__PART_IP = 1,
    TG__PART_ROUTE,
    TG__PART_HOST,
    TG__PART_CLAIM,
    TG__PART_HEADER
};

typedef struct tg__template {
    uint8_t n;   /* parts; 0: unusable, the quota never matches */
    bool claims; /* some part is a claim */
    uint8_t kind[TG__MAX_PARTS]; /* TG__PART_* */
    uint8_t idx[TG__MAX_PARTS];  /* claim / header: index into the name table */
} tg__template;

/* The claim and header names of a whole policy, pointing into the
 * templates' text (which lives in the same tg__policy). */
enum { TG__NAMES_CLAIM = 0, TG__NAMES_HEADER = 1 };
typedef struct tg__names {
    uint8_t n[2];                   /* claims, headers */
    tg_str name[2][TG_MAX_HEADERS]; /* claims use the first TG__MAX_CLAIMS */
} tg__names;

/* Parses s into *t, adding its names to *names. Returns 0, or -1 with
 * t->n == 0 and *names unchanged. */
int tg__template_parse(const char *s, size_t n, tg__template *t,
                       tg__names *names);

/* What building a key came to. */
enum {
    TG__TPL_OK = 0,
    TG__TPL_SKIP = 1, /* a claim or header part is absent: not counted */
    TG__TPL_BAD = 2   /* the request cannot be keyed: Deny(bad_request) */
};

/* Builds the key of template t for req into out (TG__KEY_CAP bytes):
 * part values joined by "|", "%" and "|" escaped as %25 and %7C; a key
 * longer than TG__KEY_CAP becomes "~h" + the first 16 bytes of its
 * SHA-256 in lower-case hex. claims is the verified token's view (NULL: no token).
 * TG__TPL_BAD: an empty ip / route / host, a claim too long to keep, or a
 * short key holding a NUL (the coordinator's strings end there) or
 * starting with '~' (the edge's pseudo-keys). */
int tg__template_key(const tg__template *t, const tg__names *names,
                     const tg_request *req, const tg__claims *claims, char *out,
                     size_t *len);

#endif /* TG_TEMPLATE_H */
