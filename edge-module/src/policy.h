/* policy.h — the quota configuration the edge enforces.
 *
 * A policy is one versioned document sent by the coordinator. The edge keeps
 * two fixed-size copies: the one it enforces and a staging copy the next
 * SyncResponse decodes into. A new policy replaces the old one whole, only
 * after it decoded and validated completely (tg__policy_install).
 */
#ifndef TG_POLICY_H
#define TG_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "template.h"
#include "tollgate.h"

#define TG__MAX_QUOTAS  32
#define TG__NAME_CAP    64  /* quota name bytes */
#define TG__PREFIX_CAP  128 /* path_prefix bytes */
#define TG__MAX_METHODS 8
#define TG__METHOD_CAP  16 /* bytes per method */

/* Why a policy was refused; the edge keeps enforcing the previous one. */
enum {
    TG__POLICY_OK = 0,
    TG__POLICY_TOO_MANY_QUOTAS,
    TG__POLICY_BAD_NAME,    /* empty, too long, duplicate or unprintable */
    TG__POLICY_BAD_PREFIX,  /* longer than TG__PREFIX_CAP */
    TG__POLICY_BAD_METHODS, /* too many, empty or too long */
    TG__POLICY_BAD_WINDOW   /* window_s == 0 */
};

typedef struct tg__quota {
    uint64_t limit;    /* requests per window across all edges */
    uint64_t floor;    /* allowance an edge grants alone */
    double deny_after; /* the coordinator's business; kept for stats */
    uint32_t window_s;
    int32_t action;     /* over the limit: TG__ACT_CHALLENGE or _DENY */
    bool shadow;        /* count, never enforce */
    bool fail_open;     /* table full, or stale at the floor: admit or deny */
    bool require_token; /* no token: Deny(missing_token) */
    tg__template
        tpl;         /* parsed from key at install; tpl.n == 0: never matches */
    uint8_t key_len; /* the template's text; 0 when over TG__TEMPLATE_CAP */
    uint8_t name_len;
    uint8_t prefix_len;
    uint8_t n_methods;
    uint8_t method_len[TG__MAX_METHODS];
    char name[TG__NAME_CAP];
    char prefix[TG__PREFIX_CAP];
    char methods[TG__MAX_METHODS][TG__METHOD_CAP];
    char key[TG__TEMPLATE_CAP];
} tg__quota;

typedef struct tg__policy {
    uint64_t version;
    uint32_t sync_interval_ms;
    uint32_t clearance_ttl_s;
    uint32_t n_quotas;
    int refused;     /* TG__POLICY_*: why it cannot be installed */
    tg__names names; /* claim and header names the templates use */
    tg__quota quotas[TG__MAX_QUOTAS];
} tg__policy;

/* Empties a policy before decoding into it (protobuf merges repeated
 * occurrences of a message field, so the decoder never clears). */
void tg__policy_reset(tg__policy *p);

/* Checks what the wire decoder cannot: unique printable names (they go
 * into HTTP headers and identify counts on the wire), sane windows; and
 * parses the key templates (a bad template does not refuse the policy, see
 * template.h). Sets and returns p->refused. */
int tg__policy_validate(tg__policy *p);

/* Index of the quota called name, or -1. */
int tg__policy_find(const tg__policy *p, const char *name, size_t len);

/* Whether the quota applies to this request (usable key template, path
 * prefix, method). */
bool tg__quota_matches(const tg__quota *q, const tg_request *req);

/* The allowance a new or long-silent key gets at this edge. */
uint64_t tg__quota_floor(const tg__quota *q);

#endif /* TG_POLICY_H */
