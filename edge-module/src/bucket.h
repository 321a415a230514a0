/* bucket.h — the token bucket behind every (quota, key) entry.
 *
 * While the edge syncs, it does not refill buckets on a clock: the
 * coordinator's lease is the refill. The bucket only counts down what the
 * edge may still admit on its own, remembers what the coordinator said
 * about the key (action and when it expires), and falls back to the
 * quota's floor when it has heard nothing for a whole window. When the
 * edge has gone too long without a successful sync (stale), the bucket
 * refills itself at a decaying allowance instead (tg__bucket_refresh_stale).
 * Pure integer math; no floats, no libm.
 */
#ifndef TG_BUCKET_H
#define TG_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

/* Coordinator actions, numbered as tollgate.v1.Action on the wire. */
enum { TG__ACT_ALLOW = 0, TG__ACT_CHALLENGE = 1, TG__ACT_DENY = 2 };

/* One quota's verdict on a request, in increasing severity: when several
 * quotas match, the largest value decides. */
enum {
    TG__V_ALLOW = 0,
    TG__V_CHALLENGE = 1, /* coordinator action CHALLENGE in force */
    TG__V_RATE = 2,      /* local allowance spent */
    TG__V_BLOCKED = 3,   /* coordinator action DENY in force */
    TG__V_TOKEN = 4,     /* token missing, invalid or expired */
    TG__V_BAD = 5        /* the request cannot be keyed */
};

typedef struct tg__bucket {
    uint64_t tokens;        /* requests the edge may still admit alone */
    uint64_t grant;         /* size of the last grant (low-water mark) */
    uint64_t granted_at_ms; /* when it was granted (lease or floor) */
    uint64_t reset_at_ms;   /* when the coordinator's action ends; 0: none */
    uint64_t lease;         /* the coordinator's last lease; 0: none yet */
    uint64_t refill_ms;     /* stale refill accounted up to here */
    /* The key's global count as the edge knows it: the coordinator's
     * count at its last answer plus what this edge admitted since (the
     * RateLimit header's r is the limit minus this). */
    uint64_t seen;
    uint8_t action; /* TG__ACT_* */
} tg__bucket;

/* When the edge went stale and how fast its trust decays. */
typedef struct tg__stale {
    uint64_t since_ms;     /* last successful sync + grace */
    uint64_t half_life_ms; /* the allowance halves every half_life_ms */
} tg__stale;

/* A fresh key: the floor, granted now, no action. */
void tg__bucket_init(tg__bucket *b, uint64_t floor, uint64_t now_ms);

/* Brings the bucket up to now_ms before a decision: an expired action falls
 * back to ALLOW (with the tokens it had: no floor), and a lease that has
 * not been renewed for a whole window gives way to the floor (the
 * allowance an edge grants on its own, as for a new key). */
void tg__bucket_refresh(tg__bucket *b, uint64_t floor, uint64_t window_ms,
                        uint64_t now_ms);

/* A(age): what a stale edge may grant a key per window on its own, over_ms
 * after it went stale: max(floor, lease * 2^(-over_ms / half_life_ms)),
 * the power of two exact at whole multiples of the half-life and linear in
 * between (at most 6% above the true curve). */
uint64_t tg__stale_allowance(uint64_t lease, uint64_t floor, uint64_t over_ms,
                             uint64_t half_life_ms);

/* tg__bucket_refresh for a stale edge: an expired action still ends, but
 * instead of the window top-up the bucket refills continuously at A(age)
 * tokens per window and never holds more than A(age); once A(age) is the
 * floor, a fail_closed quota's bucket no longer refills at all. */
void tg__bucket_refresh_stale(tg__bucket *b, uint64_t floor, uint64_t window_ms,
                              const tg__stale *st, bool fail_open,
                              uint64_t now_ms);

/* TG__V_ALLOW, TG__V_CHALLENGE, TG__V_RATE or TG__V_BLOCKED; no change. */
int tg__bucket_verdict(const tg__bucket *b, uint64_t now_ms);

/* Spends one token (and counts it in seen); the caller has seen
 * TG__V_ALLOW. */
void tg__bucket_take(tg__bucket *b);

/* True when the allowance ran low: at or under a quarter of the last grant. */
bool tg__bucket_low(const tg__bucket *b);

/* Installs the coordinator's (non-degraded) answer for the key. */
void tg__bucket_apply(tg__bucket *b, int action, uint64_t lease,
                      uint64_t reset_ms, uint64_t pending_admitted,
                      uint64_t now_ms);

/* What the RateLimit header calls r: 0 while an action is in force. */
uint64_t tg__bucket_remaining(const tg__bucket *b, uint64_t now_ms);

/* Milliseconds until the key's quota frees up: the action's or window's
 * reset if the coordinator gave one, else the end of the local window. */
uint64_t tg__bucket_reset_in_ms(const tg__bucket *b, uint64_t window_ms,
                                uint64_t now_ms);

#endif /* TG_BUCKET_H */
