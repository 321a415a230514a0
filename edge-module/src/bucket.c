/* bucket.c — token-bucket math for one (quota, key) entry; see bucket.h. */
#include "bucket.h"

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a + b < a ? UINT64_MAX : a + b;
}

void tg__bucket_init(tg__bucket *b, uint64_t floor, uint64_t now_ms)
{
    b->tokens = floor;
    b->grant = floor;
    b->granted_at_ms = now_ms;
    b->reset_at_ms = 0;
    b->lease = 0;
    b->refill_ms = now_ms;
    b->action = TG__ACT_ALLOW;
    b->seen = 0;
}

/* Two fallbacks keep an edge useful when the coordinator is silent about a
 * key, without ever letting it grant more than the floor per window on its
 * own. A CHALLENGE/DENY ends at its reset time and leaves the bucket as it
 * was (empty, usually): the edge asks for a lease at its next sync rather
 * than grant the floor, which across hundreds of edges would be hundreds of
 * requests the coordinator never leased. A lease older than a window is
 * void (the coordinator forgets an edge's lease of a key it stopped
 * reporting within a window), so the bucket falls back to the floor, as
 * for a new key. */
void tg__bucket_refresh(tg__bucket *b, uint64_t floor, uint64_t window_ms,
                        uint64_t now_ms)
{
    if (b->reset_at_ms != 0 || b->action != TG__ACT_ALLOW) {
        if (now_ms >= b->reset_at_ms) {
            b->action = TG__ACT_ALLOW;
            b->reset_at_ms = 0;
        }
        return;
    }
    if (now_ms < add_sat(b->granted_at_ms, window_ms))
        return;
    /* A window without an answer: the count it knew has slid out. */
    b->seen = 0;
    b->tokens = floor;
    b->grant = floor;
    b->granted_at_ms = now_ms;
    b->refill_ms = now_ms;
}

uint64_t tg__stale_allowance(uint64_t lease, uint64_t floor, uint64_t over_ms,
                             uint64_t half_life_ms)
{
    uint64_t h = half_life_ms ? half_life_ms : 1;
    while (h > (1u << 30)) { /* keeps r * x % d below 2^61 */
        h >>= 1;
        over_ms >>= 1;
    }
    uint64_t k = over_ms / h, r = over_ms % h, d = 2 * h;
    uint64_t x = k >= 64 ? 0 : lease >> k;
    /* x * (1 - r / 2h), without overflow. */
    x -= (x / d) * r + (x % d) * r / d;
    return x > floor ? x : floor;
}

/* Refill arithmetic is bounded so products fit 64 bits: the allowance is
 * taken as at most 2^32 per window and the window as at most 2^31 ms
 * (about 24 days; a longer window refills a little faster). */
void tg__bucket_refresh_stale(tg__bucket *b, uint64_t floor, uint64_t window_ms,
                              const tg__stale *st, bool fail_open,
                              uint64_t now_ms)
{
    if ((b->reset_at_ms != 0 || b->action != TG__ACT_ALLOW) &&
        now_ms >= b->reset_at_ms) {
        b->action = TG__ACT_ALLOW;
        b->reset_at_ms = 0;
    }
    uint64_t over = now_ms > st->since_ms ? now_ms - st->since_ms : 0;
    uint64_t a = tg__stale_allowance(b->lease, floor, over, st->half_life_ms);
    uint64_t w = window_ms == 0           ? 1
                 : window_ms > (1u << 31) ? (1u << 31)
                                          : window_ms;
    uint64_t from = b->refill_ms > st->since_ms ? b->refill_ms : st->since_ms;
    if (a > 0xffffffffu)
        a = 0xffffffffu;
    if (b->tokens > a)
        b->tokens = a;
    if (b->tokens == a || (a <= floor && !fail_open) || now_ms <= from) {
        if (now_ms > from)
            b->refill_ms = now_ms;
        return;
    }
    uint64_t dt = now_ms - from;
    uint64_t add = dt >= w ? a : a * dt / w;
    if (add == 0) {
        b->refill_ms = from;
        return;
    }
    b->tokens = add >= a - b->tokens ? a : b->tokens + add;
    b->refill_ms = b->tokens == a ? now_ms : from + add * w / a;
}

int tg__bucket_verdict(const tg__bucket *b, uint64_t now_ms)
{
    if (now_ms < b->reset_at_ms) {
        if (b->action == TG__ACT_DENY)
            return TG__V_BLOCKED;
        if (b->action == TG__ACT_CHALLENGE)
            return TG__V_CHALLENGE;
    }
    return b->tokens >= 1 ? TG__V_ALLOW : TG__V_RATE;
}

void tg__bucket_take(tg__bucket *b)
{
    if (b->tokens > 0)
        b->tokens--;
    b->seen++;
}

bool tg__bucket_low(const tg__bucket *b)
{
    return b->tokens == 0 || b->tokens <= b->grant / 4;
}

/* The lease counts from the moment the answer arrives, but the coordinator
 * computed it from the frozen batch: what the edge admitted since the
 * freeze is already spent out of it, hence the subtraction. Unknown actions
 * from a newer coordinator are treated as ALLOW: the lease still bounds
 * them. (Degraded answers never get here: see apply_state in sync.c.) */
void tg__bucket_apply(tg__bucket *b, int action, uint64_t lease,
                      uint64_t reset_ms, uint64_t pending_admitted,
                      uint64_t now_ms)
{
    uint64_t t = lease > pending_admitted ? lease - pending_admitted : 0;
    b->tokens = t;
    b->grant = lease;
    b->granted_at_ms = now_ms;
    b->lease = lease;
    b->refill_ms = now_ms;
    b->action = action == TG__ACT_CHALLENGE || action == TG__ACT_DENY
                    ? (uint8_t)action
                    : TG__ACT_ALLOW;
    b->reset_at_ms = reset_ms ? add_sat(now_ms, reset_ms) : 0;
}

uint64_t tg__bucket_remaining(const tg__bucket *b, uint64_t now_ms)
{
    return tg__bucket_verdict(b, now_ms) == TG__V_ALLOW ? b->tokens : 0;
}

uint64_t tg__bucket_reset_in_ms(const tg__bucket *b, uint64_t window_ms,
                                uint64_t now_ms)
{
    uint64_t at =
        b->reset_at_ms ? b->reset_at_ms : add_sat(b->granted_at_ms, window_ms);
    return at > now_ms ? at - now_ms : 0;
}
