/* sync.c — the edge's half of POST /v1/sync: when to sync, freezing counts
 * into a batch, resending it unchanged until acknowledged, and applying the
 * coordinator's answer (acks, leases, actions, policy). */
#include "edge.h"

#include "mem.h"
#include "wire.h"

/* When the next sync is due, outstanding requests aside. After a failure
 * only the backoff counts; its last quarter is trimmed by a per-edge
 * amount so edges that failed together do not retry in lockstep. A key
 * wanting a lease, or counts a full batch left behind, pull the sync
 * forward to TG__LEASE_SPACING_MS after the previous one, unless the
 * coordinator just said it is degraded: it cannot do better before the
 * regular interval, and asking sooner would only load it. */
static uint64_t next_due_ms(const tg_edge *e)
{
    if (e->backoff_ms)
        return e->last_fail_ms + e->backoff_ms -
               e->id_hash % (e->backoff_ms / 4 + 1);
    if (!e->attempted)
        return 0;
    uint64_t due = e->last_attempt_ms + e->interval_ms;
    uint64_t soon = e->last_attempt_ms + TG__LEASE_SPACING_MS;
    if ((e->tab.wants || e->backlog) && !e->degraded && soon < due)
        due = soon;
    return due;
}

/* Called on every request, so O(1). A sync still waiting for its answer
 * is not due again (the host never has two in flight) until it is
 * presumed lost after TG__RESPONSE_TIMEOUT_MS; it is then resent with the
 * same seq. A wall clock that stepped back makes a sync due at once: one
 * early sync is cheaper than stalling until the clock catches up. */
int tg_sync_due(const tg_edge *e, uint64_t now_ms)
{
    if (!e || e->magic != TG__MAGIC)
        return 0;
    if (now_ms < e->last_attempt_ms || now_ms < e->last_fail_ms)
        return 1;
    if (e->outstanding)
        return now_ms >= e->last_attempt_ms + TG__RESPONSE_TIMEOUT_MS;
    return now_ms >= next_due_ms(e);
}

uint32_t tg__sync_wait_s(const tg_edge *e, uint64_t now_ms)
{
    if (e->outstanding)
        return 1;
    uint64_t due = next_due_ms(e);
    uint64_t ms = due > now_ms ? due - now_ms : 0;
    uint64_t s = ms / 1000 + (ms % 1000 != 0);
    return s < 1 ? 1 : s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* ---------------------------------------------------------------- request */

static tg__reqhead head(const tg_edge *e, uint64_t seq, uint64_t now_ms)
{
    tg__reqhead h;
    h.edge_id = (tg_str){e->edge_id, e->edge_id_len};
    h.seq = seq;
    h.sent_at_ms = now_ms;
    h.policy_version = tg__policy_cur(e)->version;
    h.module_version =
        (tg_str){TG_MODULE_VERSION, sizeof TG_MODULE_VERSION - 1};
    h.refused_version = e->refused_version;
    h.refused_reason = e->refused_reason;
    return h;
}

static tg__keycount entry_count(const tg_edge *e, const tg__entry *en,
                                const uint64_t *n)
{
    const tg__quota *q = &tg__policy_cur(e)->quotas[en->quota];
    return (tg__keycount){{q->name, q->name_len},
                          {en->key, en->key_len},
                          n[0],
                          n[1],
                          n[2]};
}

static tg__keycount spilled_count(const tg_edge *e, const tg__spilled *sp,
                                  const uint64_t *n)
{
    const tg__quota *q = &tg__policy_cur(e)->quotas[sp->quota];
    return (tg__keycount){{q->name, q->name_len},
                          {sp->key, sp->key_len},
                          n[0],
                          n[1],
                          n[2]};
}

static tg__keycount overflow_count(const tg_edge *e, unsigned qi,
                                   const uint64_t *n)
{
    const tg__quota *q = &tg__policy_cur(e)->quotas[qi];
    return (tg__keycount){{q->name, q->name_len},
                          {TG__OVERFLOW_KEY, sizeof TG__OVERFLOW_KEY - 1},
                          n[0],
                          n[1],
                          n[2]};
}

/* Freezes the next batch: the pending counts of the overflow pseudo-keys,
 * of the spill list and of every entry with counts or a wanted lease move
 * to infl, as many as fit in cap. Whatever does not fit stays pending for
 * the next seq (the scan resumes there, so no key starves) and pulls that
 * sync forward.
 * The head is sized for the largest a retry may carry (its clock and
 * policy version can grow), so a frozen batch always fits again. Nothing
 * changes on TG_ENOSPC: cap cannot hold the head, or the first KeyCount
 * that needs sending. */
static int freeze(tg_edge *e, size_t cap)
{
    const tg__policy *p = tg__policy_cur(e);
    tg__reqhead h = head(e, e->seq + 1, UINT64_MAX);
    h.policy_version = h.refused_version = h.refused_reason = UINT64_MAX;
    size_t size = tg__wire_head_size(&h);
    uint32_t start = e->scan_start & e->tab.mask, stop = start;
    uint64_t ovf_bits = 0;
    bool full = false, any = false;

    if (size > cap)
        return TG_ENOSPC;
    for (uint32_t qi = 0; qi < p->n_quotas && !full; qi++) {
        if (!tg__counts_pending(&e->overflow[qi]))
            continue;
        tg__keycount kc = overflow_count(e, qi, e->overflow[qi].pend);
        size_t s = tg__wire_count_size(&kc);
        if (size + s > cap) {
            full = true;
            break;
        }
        size += s;
        ovf_bits |= 1ull << qi;
        any = true;
    }
    for (uint32_t i = 0; i < e->tab.n_spill && !full; i++) {
        tg__spilled *sp = &e->tab.spill[i];
        if (sp->quota == TG__NO_QUOTA || !tg__counts_pending(&sp->c))
            continue;
        tg__keycount kc = spilled_count(e, sp, sp->c.pend);
        size_t s = tg__wire_count_size(&kc);
        if (size + s > cap) {
            full = true;
            break;
        }
        size += s;
        tg__counts_freeze(&sp->c);
        sp->batch = 1;
        any = true;
    }
    for (uint32_t i = 0; i <= e->tab.mask && !full; i++) {
        uint32_t idx = (start + i) & e->tab.mask;
        tg__entry *en = &e->tab.slot[idx];
        if (en->quota == TG__NO_QUOTA ||
            (!tg__counts_pending(&en->c) && !(en->flags & TG__F_WANT)))
            continue;
        tg__keycount kc = entry_count(e, en, en->c.pend);
        size_t s = tg__wire_count_size(&kc);
        if (size + s > cap) {
            full = true;
            stop = idx;
            break;
        }
        size += s;
        tg__counts_freeze(&en->c);
        en->flags |= TG__F_BATCH;
        any = true;
    }
    if (full && !any)
        return TG_ENOSPC;

    for (uint32_t qi = 0; qi < p->n_quotas; qi++)
        if (ovf_bits >> qi & 1)
            tg__counts_freeze(&e->overflow[qi]);
    e->ovf_batch = ovf_bits;
    e->batch_start = start;
    e->scan_start = stop;
    e->backlog = full;
    e->seq++;
    e->batch = true;
    return 0;
}

/* The batch in flight, as a sequence of n_quotas + spill + slots items:
 * first each quota's overflow pseudo-key, then the spill list, then the
 * table's slots from batch_start, the order freeze() chose. Fills *kc
 * from infl and returns true when item i is in the batch. */
static bool batch_item(const tg_edge *e, uint32_t i, tg__keycount *kc)
{
    uint32_t nq = tg__policy_cur(e)->n_quotas, ns = e->tab.n_spill;
    if (i < nq) {
        if (!(e->ovf_batch >> i & 1))
            return false;
        *kc = overflow_count(e, i, e->overflow[i].infl);
        return true;
    }
    if (i - nq < ns) {
        const tg__spilled *sp = &e->tab.spill[i - nq];
        if (!sp->batch || sp->quota == TG__NO_QUOTA)
            return false;
        *kc = spilled_count(e, sp, sp->c.infl);
        return true;
    }
    const tg__entry *en =
        &e->tab.slot[(e->batch_start + (i - nq - ns)) & e->tab.mask];
    if (en->quota == TG__NO_QUOTA || !(en->flags & TG__F_BATCH))
        return false;
    *kc = entry_count(e, en, en->c.infl);
    return true;
}

/* Encodes the frozen batch from infl only, so every retry carries the same
 * KeyCounts. On TG_ENOSPC buf holds junk. */
static long encode(const tg_edge *e, uint64_t now_ms, uint8_t *buf, size_t cap)
{
    tg__reqhead h = head(e, e->seq, now_ms);
    uint32_t items =
        tg__policy_cur(e)->n_quotas + e->tab.n_spill + e->tab.mask + 1;
    tg__keycount kc;
    size_t fixed = tg__wire_head_size(&h);

    if (fixed > cap)
        return TG_ENOSPC;
    cap -= tg__wire_put_tail(NULL, &h);
    size_t off = tg__wire_put_head(buf, &h);
    for (uint32_t i = 0; i < items; i++) {
        if (!batch_item(e, i, &kc))
            continue;
        if (tg__wire_count_size(&kc) > cap - off)
            return TG_ENOSPC;
        off += tg__wire_put_count(buf + off, &kc);
    }
    return (long)(off + tg__wire_put_tail(buf + off, &h));
}

long tg_sync_request(tg_edge *e, uint64_t now_ms, uint8_t *buf, size_t cap)
{
    if (!e || e->magic != TG__MAGIC || !buf)
        return TG_EINVAL;
    if (!e->batch) {
        int rc = freeze(e, cap);
        if (rc < 0)
            return rc;
    }
    long n = encode(e, now_ms, buf, cap);
    if (n < 0)
        return n;
    e->outstanding = true;
    e->attempted = true;
    e->last_attempt_ms = now_ms;
    return n;
}

/* ---------------------------------------------------------------- response */

/* The coordinator applied the batch: its counts are done with. Every key
 * in it was seen, so its wish for a lease is answered (or refused). */
static void ack(tg_edge *e)
{
    for (uint32_t qi = 0; qi < TG__MAX_QUOTAS; qi++)
        if (e->ovf_batch >> qi & 1)
            tg__counts_ack(&e->overflow[qi]);
    e->ovf_batch = 0;
    for (uint32_t i = 0; i < e->tab.n_spill; i++) {
        tg__spilled *sp = &e->tab.spill[i];
        if (sp->batch) {
            tg__counts_ack(&sp->c);
            sp->batch = 0;
        }
    }
    tg__spill_compact(&e->tab);
    for (uint32_t i = 0; i <= e->tab.mask; i++) {
        tg__entry *en = &e->tab.slot[i];
        if (en->quota == TG__NO_QUOTA || !(en->flags & TG__F_BATCH))
            continue;
        tg__counts_ack(&en->c);
        en->flags &= (uint8_t)~TG__F_BATCH;
        tg__entry_want(&e->tab, en, false);
    }
    e->batch = false;
}

/* A CHALLENGE needs its token to be answered; one longer than the edge
 * can keep is answered as DENY instead (still over the limit, still
 * refused, but without a token the client could not solve it). */
static void apply_state(tg_edge *e, tg__entry *en, const tg__keystate *ks,
                        uint64_t now_ms)
{
    int action = ks->action;
    en->token_len = 0;
    if (action == TG__ACT_CHALLENGE) {
        if (ks->challenge_token.len > TG__TOKEN_CAP) {
            action = TG__ACT_DENY;
        } else {
            tg__memcpy(tg__entry_token(&e->tab, en), ks->challenge_token.p,
                       ks->challenge_token.len);
            en->token_len = (uint16_t)ks->challenge_token.len;
        }
    }
    tg__bucket_apply(&en->b, action, ks->lease, ks->reset_ms,
                     en->c.pend[TG__C_ADMITTED], now_ms);
    /* The count includes the batch; what was admitted since comes on top. */
    en->b.seen = ks->count + en->c.pend[TG__C_ADMITTED];
    tg__entry_want(&e->tab, en, false);
}

/* Order matters: the ack first (it may be what lets a new policy drop a
 * quota), then the policy (the states may be for its quotas), then the
 * states. A degraded answer (Redis unreachable) did not apply the batch:
 * it stays in flight and the next sync resends it with the same seq. Its
 * states carry no information about the keys, so buckets keep what they
 * had and, once the edge is stale, decay on their own (tollgate.h,
 * "Staleness"): taking a lease or floor from such answers would let every
 * edge re-grant itself at every degraded sync. A non-degraded
 * answer for another seq is refused with TG_ESTATE. */
int tg_sync_response(tg_edge *e, uint64_t now_ms, const uint8_t *buf,
                     size_t len)
{
    tg__response r;
    tg__keystate ks;
    size_t pos = 0;

    if (!e || e->magic != TG__MAGIC || (!buf && len))
        return TG_EINVAL;
    if (!e->batch)
        return TG_ESTATE;
    tg__policy *stage = &e->pol[!e->cur];
    tg__policy_reset(stage);
    if (tg__wire_decode_response(buf, len, &r, stage) < 0)
        return TG_EPROTO;
    bool acked = !r.degraded && r.acked_seq == e->seq;
    if (!r.degraded && !acked)
        return TG_ESTATE;

    if (acked)
        ack(e);
    e->outstanding = false;
    e->backoff_ms = 0;
    e->degraded = r.degraded;
    if (r.has_policy) {
        int rc = tg__policy_install(e, now_ms);
        if (rc >= 0) {
            e->refused_version = rc ? stage->version : 0;
            e->refused_reason = (uint8_t)rc;
        }
    }

    const tg__policy *p = tg__policy_cur(e);
    while (!r.degraded && tg__wire_next_state(buf, len, &pos, &ks)) {
        int qi = tg__policy_find(p, ks.quota.p, ks.quota.len);
        if (qi < 0 || ks.key.len > TG__KEY_CAP)
            continue;
        uint32_t h = tg__key_hash(ks.quota, ks.key);
        tg__entry *en = tg__table_find(&e->tab, h, (unsigned)qi, ks.key);
        if (en)
            apply_state(e, en, &ks, now_ms);
    }
    e->interval_ms = r.next_sync_ms ? tg__clamp_interval(r.next_sync_ms)
                                    : e->base_interval_ms;
    if (acked)
        e->last_ok_ms = now_ms;
    return 0;
}

int tg_sync_conflict(tg_edge *e, uint64_t now_ms, uint64_t applied_seq)
{
    if (!e || e->magic != TG__MAGIC)
        return TG_EINVAL;
    if (!e->batch || applied_seq < e->seq || applied_seq == UINT64_MAX)
        return TG_ESTATE;
    e->seq = applied_seq + 1;
    e->outstanding = false;
    e->backoff_ms = 0;
    e->last_attempt_ms = 0;
    (void)now_ms;
    return 0;
}

void tg_sync_failed(tg_edge *e, uint64_t now_ms)
{
    if (!e || e->magic != TG__MAGIC)
        return;
    e->outstanding = false;
    e->last_fail_ms = now_ms;
    if (e->backoff_ms == 0)
        e->backoff_ms = TG__BACKOFF_MIN_MS;
    else if (e->backoff_ms < TG__BACKOFF_MAX_MS / 2)
        e->backoff_ms *= 2;
    else
        e->backoff_ms = TG__BACKOFF_MAX_MS;
}
