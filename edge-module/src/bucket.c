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
    b->action = TG__ACT_ALLOW;
}

/* Two fallbacks keep an edge useful when the coordinator is silent, without
 * ever letting it grant more than the floor per window on its own: a
 * CHALLENGE/DENY ends at its reset time, and a lease older than a window is
 * topped up to the floor. Topping up never shrinks a larger lease. */
void tg__bucket_refresh(tg__bucket *b, uint64_t floor, uint64_t window_ms, uint64_t now_ms)
{
    bool expired = b->reset_at_ms != 0 || b->action != TG__ACT_ALLOW
                       ? now_ms >= b->reset_at_ms
                       : now_ms >= add_sat(b->granted_at_ms, window_ms);
    if (!expired)
        return;
    b->action = TG__ACT_ALLOW;
    b->reset_at_ms = 0;
    if (b->tokens < floor)
        b->tokens = floor;
    b->grant = b->tokens;
    b->granted_at_ms = now_ms;
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
}

bool tg__bucket_low(const tg__bucket *b)
{
    return b->tokens == 0 || b->tokens <= b->grant / 4;
}

/* The lease counts from the moment the answer arrives, but the coordinator
 * computed it from the frozen batch: what the edge admitted since the
 * freeze is already spent out of it, hence the subtraction. A degraded
 * coordinator (Redis down) answers conservatively; it may not take away
 * the floor the edge would grant on its own anyway. Unknown actions from a
 * newer coordinator are treated as ALLOW: the lease still bounds them. */
void tg__bucket_apply(tg__bucket *b, int action, uint64_t lease, uint64_t reset_ms,
                      uint64_t pending_admitted, uint64_t floor, bool degraded,
                      uint64_t now_ms)
{
    uint64_t t = lease > pending_admitted ? lease - pending_admitted : 0;
    if (degraded) {
        uint64_t keep = b->tokens < floor ? b->tokens : floor;
        if (t < keep)
            t = keep;
    }
    b->tokens = t;
    b->grant = lease > t ? lease : t;
    b->granted_at_ms = now_ms;
    b->action = action == TG__ACT_CHALLENGE || action == TG__ACT_DENY
                    ? (uint8_t)action : TG__ACT_ALLOW;
    b->reset_at_ms = reset_ms ? add_sat(now_ms, reset_ms) : 0;
}

uint64_t tg__bucket_remaining(const tg__bucket *b, uint64_t now_ms)
{
    return tg__bucket_verdict(b, now_ms) == TG__V_ALLOW ? b->tokens : 0;
}

uint64_t tg__bucket_reset_in_ms(const tg__bucket *b, uint64_t window_ms, uint64_t now_ms)
{
    uint64_t at = b->reset_at_ms ? b->reset_at_ms : add_sat(b->granted_at_ms, window_ms);
    return at > now_ms ? at - now_ms : 0;
}
