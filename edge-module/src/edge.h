/* edge.h — the edge core's hub header: the tg_edge state block and the
 * prototypes the core's files share. Hosts include tollgate.h only.
 *
 * Memory layout of the block the host hands to tg_edge_init():
 *   struct tg_edge (with the token verifier and its cache)
 *   | entries (slots × tg__entry) | spill (TG__SPILL × tg__spilled)
 *   | tokens (slots × TG__TOKEN_CAP)
 */
#ifndef TG_EDGE_H
#define TG_EDGE_H

#include <stdbool.h>
#include <stdint.h>

#include "bucket.h"
#include "jwt.h"
#include "keys.h"
#include "policy.h"
#include "tollgate.h"

#define TG__EDGE_ID_CAP  64
#define TG__HDR_CAP      512
#define TG__OVERFLOW_KEY "~overflow"
#define TG__MAGIC        0x74676531u /* "tge1": the block was initialised */

/* ---------------------------------------------------------------- timing */
#define TG__DEFAULT_INTERVAL_MS 1000
#define TG__MIN_INTERVAL_MS     100
#define TG__MAX_INTERVAL_MS     60000
#define TG__LEASE_SPACING_MS    50    /* earliest resync for a wanted lease */
#define TG__RESPONSE_TIMEOUT_MS 10000 /* an unanswered sync counts as lost */
#define TG__BACKOFF_MIN_MS      250
#define TG__BACKOFF_MAX_MS      30000
#define TG__GRACE_INTERVALS     3  /* stale after this many intervals */
#define TG__HALF_LIFE_INTERVALS 10 /* then the allowance halves per this many */

struct tg_edge {
    uint32_t magic;
    uint32_t cfg_interval_ms;  /* from tg_config */
    uint32_t base_interval_ms; /* the policy's, else the config's */
    uint32_t interval_ms;      /* in force: the last response's next_sync_ms */
    uint32_t id_hash;          /* spreads backoff retries across edges */
    uint8_t edge_id_len;
    char edge_id[TG__EDGE_ID_CAP];

    /* ------------------------------------------------------------ policy */
    tg__policy pol[2]; /* pol[cur] is enforced, the other stages */
    uint8_t cur;
    /* Requests for a quota that found no room in the key table, reported
     * under the pseudo-key TG__OVERFLOW_KEY. ovf_batch: bit q set when
     * overflow[q] is in the batch in flight. */
    tg__counts overflow[TG__MAX_QUOTAS];
    uint32_t ovf_batch;

    tg__table tab;

    /* -------------------------------------------------------------- sync */
    uint64_t seq;         /* of the batch in flight, or the last one */
    bool batch;           /* a frozen batch awaits its acknowledgement */
    bool outstanding;     /* sent; no response or failure reported yet */
    bool backlog;         /* the last freeze left counts behind */
    bool attempted;       /* a sync was ever sent */
    bool degraded;        /* the last answer was degraded */
    uint32_t batch_start; /* slot where the batch's scan began */
    uint32_t scan_start;  /* slot where the next freeze begins */
    uint32_t backoff_ms;  /* 0: not backing off */
    uint64_t last_attempt_ms;
    uint64_t last_fail_ms;
    uint64_t last_ok_ms;
    uint64_t policy_at_ms; /* first policy installed: staleness counts
                              from here until a sync succeeds */

    char hdr[TG__HDR_CAP]; /* tg_decision.headers points here */

    tg__jwt jwt; /* keys, options, token cache */
};

static inline const tg__policy *tg__policy_cur(const tg_edge *e)
{
    return &e->pol[e->cur];
}

/* A sync interval (configured, the policy's or the coordinator's) clamped
 * to [TG__MIN_INTERVAL_MS, TG__MAX_INTERVAL_MS]. Here rather than in
 * sync.c so that policy.c, which sync.c calls, calls nothing back. */
static inline uint32_t tg__clamp_interval(uint32_t ms)
{
    if (ms < TG__MIN_INTERVAL_MS)
        return TG__MIN_INTERVAL_MS;
    return ms > TG__MAX_INTERVAL_MS ? TG__MAX_INTERVAL_MS : ms;
}

/* ---------------------------------------------------------------- policy.c */

/* Installs the staging policy pol[!cur] decoded from a response. Returns 0
 * when installed, the TG__POLICY_* reason when refused, or 1 when deferred:
 * the policy drops a quota that has entries in the batch in flight, and
 * dropping them would change what a retry of that batch sends. The
 * coordinator resends the policy with every response until the edge
 * reports its version, so a deferred policy lands once the batch is acked. */
int tg__policy_install(tg_edge *e, uint64_t now_ms);

/* ---------------------------------------------------------------- sync.c */

/* Whole seconds until the host will next sync (>= 1): the Retry-After of a
 * request denied because its local allowance ran out. */
uint32_t tg__sync_wait_s(const tg_edge *e, uint64_t now_ms);

#endif /* TG_EDGE_H */
