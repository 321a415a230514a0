/* edge.c — the tg_edge block and tg_verify(): one local decision per
 * request from the (quota, key) buckets, with the RateLimit headers that
 * explain it. Counting is done here; sync.c ships the counts. */
#include "edge.h"

#include "mem.h"

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

size_t tg_edge_size(const tg_config *cfg)
{
    if (!cfg)
        return 0;
    uint32_t slots = tg__table_slots(cfg->max_keys ? cfg->max_keys : 4096);
    if (!slots)
        return 0;
    return align8(sizeof(struct tg_edge)) + tg__table_bytes(slots);
}

/* Only the state block is cleared; the key table is marked free slot by
 * slot, so a large table costs no more than one pass at init. */
int tg_edge_init(void *mem, size_t len, const tg_config *cfg, tg_edge **out)
{
    size_t need = tg_edge_size(cfg);
    if (!mem || !out || need == 0 || ((uintptr_t)mem & 7) != 0)
        return TG_EINVAL;
    if (len < need)
        return TG_ENOSPC;
    if (cfg->edge_id.len > TG__EDGE_ID_CAP || (cfg->edge_id.len && !cfg->edge_id.p))
        return TG_EINVAL;
    for (size_t i = 0; i < cfg->edge_id.len; i++)
        if (cfg->edge_id.p[i] == '\0')
            return TG_EINVAL;

    tg_edge *e = mem;
    tg__memset(e, 0, sizeof *e);
    e->magic = TG__MAGIC;
    e->edge_id_len = (uint8_t)cfg->edge_id.len;
    if (cfg->edge_id.len)
        tg__memcpy(e->edge_id, cfg->edge_id.p, cfg->edge_id.len);
    e->id_hash = tg__key_hash(cfg->edge_id, (tg_str){"", 0});
    e->cfg_interval_ms = cfg->sync_interval_ms ? tg__sync_clamp_interval(cfg->sync_interval_ms)
                                               : TG__DEFAULT_INTERVAL_MS;
    e->base_interval_ms = e->cfg_interval_ms;
    e->interval_ms = e->cfg_interval_ms;
    tg__table_init(&e->tab, (char *)mem + align8(sizeof *e),
                   tg__table_slots(cfg->max_keys ? cfg->max_keys : 4096));
    *out = e;
    return 0;
}

/* ---------------------------------------------------------------- verify */

/* One matching quota's part in a decision. */
typedef struct hit {
    tg__entry *en;  /* NULL: no entry (bad key, or the table had no room) */
    uint8_t q;
    uint8_t verdict;
} hit;

static tg__entry *entry_for(tg_edge *e, const tg__quota *q, unsigned qi, tg_str key,
                            uint64_t now_ms)
{
    uint32_t h = tg__key_hash((tg_str){q->name, q->name_len}, key);
    tg__entry *en = tg__table_find(&e->tab, h, qi, key);
    if (!en) {
        en = tg__table_insert(&e->tab, h, qi, key, now_ms);
        if (!en)
            return NULL;
        tg__bucket_init(&en->b, tg__quota_floor(q), now_ms);
        tg__entry_want(&e->tab, en, true);
    }
    en->flags |= TG__F_BUSY;
    en->last_used_ms = now_ms;
    tg__bucket_refresh(&en->b, tg__quota_floor(q), (uint64_t)q->window_s * 1000, now_ms);
    return en;
}

/* Counts what each quota would have done. A request admitted overall
 * spends one token of every quota that admits it; a request refused
 * overall spends none, and each quota that refused it counts its own
 * refusal. A spent allowance asks for a lease early, unless the
 * coordinator's last grant was 0 (it has no budget to give until the next
 * regular sync, and asking every 50 ms would only load it). */
static void account(tg_edge *e, const hit *h, int final)
{
    tg__entry *en = h->en;
    tg__counts *c = en ? &en->c : &e->overflow[h->q];
    switch (h->verdict) {
    case TG__V_ALLOW:
        if (final != TG__V_ALLOW)
            break;
        c->pend[TG__C_ADMITTED]++;
        if (en) {
            tg__bucket_take(&en->b);
            if (en->b.grant > 0 && tg__bucket_low(&en->b))
                tg__entry_want(&e->tab, en, true);
        }
        break;
    case TG__V_RATE:
        c->pend[TG__C_DENIED]++;
        if (en && en->b.grant > 0)
            tg__entry_want(&e->tab, en, true);
        break;
    case TG__V_BLOCKED:
        c->pend[TG__C_DENIED]++;
        break;
    case TG__V_CHALLENGE:
        c->pend[TG__C_CHALLENGED]++;
        break;
    default:
        break;
    }
}

static uint32_t ceil_s(uint64_t ms)
{
    uint64_t s = ms / 1000 + (ms % 1000 != 0);
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* ---------------------------------------------------------------- headers */

typedef struct hw {
    char *p;
    size_t len;
    size_t cap;
} hw;

static void hw_bytes(hw *w, const char *s, size_t n)
{
    if (n > w->cap - w->len)
        n = w->cap - w->len;
    tg__memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void hw_str(hw *w, const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    hw_bytes(w, s, n);
}

static void hw_u64(hw *w, uint64_t v)
{
    char d[20];
    size_t n = 0;
    do {
        d[sizeof d - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    hw_bytes(w, d + sizeof d - n, n);
}

/* An RFC 8941 sf-string: '"' and '\' escaped (validation already keeps
 * names to printable ASCII). */
static void hw_quoted(hw *w, const char *s, size_t n)
{
    hw_bytes(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            hw_bytes(w, "\\", 1);
        hw_bytes(w, &s[i], 1);
    }
    hw_bytes(w, "\"", 1);
}

/* draft-ietf-httpapi-ratelimit-headers-10, for one quota: r is this edge's
 * own view (the tokens it may still admit alone), t the seconds until the
 * quota frees up; on a 429 t is the Retry-After, when the edge expects to
 * know more. q is NULL for a 429 no bucket explains (no room in the key
 * table): Retry-After alone. */
static tg_str write_headers(tg_edge *e, const tg__quota *q, const tg__entry *en,
                            const tg_decision *d, uint64_t now_ms)
{
    hw w = {e->hdr, 0, sizeof e->hdr};
    bool is_429 = d->status == 429;
    if (q) {
        uint64_t window_ms = (uint64_t)q->window_s * 1000;
        hw_str(&w, "RateLimit-Policy: ");
        hw_quoted(&w, q->name, q->name_len);
        hw_str(&w, ";q=");
        hw_u64(&w, q->limit);
        hw_str(&w, ";w=");
        hw_u64(&w, q->window_s);
        hw_str(&w, "\r\nRateLimit: ");
        hw_quoted(&w, q->name, q->name_len);
        hw_str(&w, ";r=");
        hw_u64(&w, is_429 ? 0 : en->b.tokens);
        hw_str(&w, ";t=");
        hw_u64(&w, is_429 ? d->retry_after_s
                          : ceil_s(tg__bucket_reset_in_ms(&en->b, window_ms, now_ms)));
        hw_str(&w, "\r\n");
    }
    if (is_429) {
        hw_str(&w, "Retry-After: ");
        hw_u64(&w, d->retry_after_s);
        hw_str(&w, "\r\n");
    }
    return (tg_str){e->hdr, w.len};
}

/* The decision for the deciding verdict; den is the deciding quota's entry
 * (NULL when it had none). A challenge or block lasts until the
 * coordinator's reset; a spent allowance until the next sync may refill
 * it. */
static void decide(tg_edge *e, int final, const tg__entry *den, uint64_t now_ms,
                   tg_decision *out)
{
    switch (final) {
    case TG__V_CHALLENGE:
        out->kind = TG_CHALLENGE;
        out->reason = TG_REASON_RATE_LIMITED;
        out->token = (tg_str){tg__entry_token(&e->tab, den), den->token_len};
        out->retry_after_s = ceil_s(den->b.reset_at_ms - now_ms);
        break;
    case TG__V_BLOCKED:
        out->kind = TG_DENY;
        out->reason = TG_REASON_BLOCKED;
        out->retry_after_s = ceil_s(den->b.reset_at_ms - now_ms);
        break;
    case TG__V_RATE:
        out->kind = TG_DENY;
        out->reason = TG_REASON_RATE_LIMITED;
        out->retry_after_s = tg__sync_wait_s(e, now_ms);
        break;
    case TG__V_BAD:
        out->kind = TG_DENY;
        out->reason = TG_REASON_BAD_REQUEST;
        out->status = 400;
        return;
    default:
        return;
    }
    out->status = 429;
}

/* Every matching quota is looked at before anything is counted, because
 * whether a quota spends a token depends on what all the others say. The
 * most severe verdict of the enforced (non-shadow) quotas decides; shadow
 * quotas are counted like the others but never change the decision. The
 * headers describe the deciding quota on a refusal, otherwise the enforced
 * quota with the fewest tokens left. */
int tg_verify(tg_edge *e, const tg_request *req, tg_decision *out)
{
    hit hits[TG__MAX_QUOTAS];
    unsigned n = 0;
    int final = TG__V_ALLOW, decider = -1;

    if (!out)
        return TG_EINVAL;
    *out = (tg_decision){TG_ALLOW, TG_REASON_NONE, 200, 0, {"", 0}, {"", 0}};
    if (!e || !req || e->magic != TG__MAGIC)
        return TG_EINVAL;

    const tg__policy *p = tg__policy_cur(e);
    uint64_t now = req->now_ms;
    for (uint32_t qi = 0; qi < p->n_quotas; qi++) {
        const tg__quota *q = &p->quotas[qi];
        tg_str key;
        if (!tg__quota_matches(q, req))
            continue;
        hit *h = &hits[n];
        h->q = (uint8_t)qi;
        h->en = NULL;
        if (tg__quota_key(q, req, &key) < 0) {
            if (q->shadow)
                continue;
            h->verdict = TG__V_BAD;
        } else if ((h->en = entry_for(e, q, qi, key, now)) != NULL) {
            h->verdict = (uint8_t)tg__bucket_verdict(&h->en->b, now);
        } else {
            /* No room in the key table: the quota's fail_open decides,
             * and the request is counted under TG__OVERFLOW_KEY. */
            h->verdict = q->fail_open ? TG__V_ALLOW : TG__V_RATE;
        }
        if (!q->shadow && h->verdict > final) {
            final = h->verdict;
            decider = (int)n;
        }
        n++;
    }

    uint64_t best_r = UINT64_MAX;
    int shown = decider;
    for (unsigned i = 0; i < n; i++) {
        account(e, &hits[i], final);
        const tg__entry *en = hits[i].en;
        if (final == TG__V_ALLOW && en && !p->quotas[hits[i].q].shadow &&
            en->b.tokens < best_r) {
            best_r = en->b.tokens;
            shown = (int)i;
        }
    }

    decide(e, final, decider >= 0 ? hits[decider].en : NULL, now, out);
    if (final != TG__V_BAD && shown >= 0 && hits[shown].en)
        out->headers = write_headers(e, &p->quotas[hits[shown].q], hits[shown].en, out, now);
    else if (out->status == 429)
        out->headers = write_headers(e, NULL, NULL, out, now);

    for (unsigned i = 0; i < n; i++)
        if (hits[i].en)
            hits[i].en->flags &= (uint8_t)~TG__F_BUSY;
    return 0;
}

/* ---------------------------------------------------------------- introspection */

uint64_t tg_policy_version(const tg_edge *e)
{
    return e && e->magic == TG__MAGIC ? tg__policy_cur(e)->version : 0;
}

uint64_t tg_last_sync_ok_ms(const tg_edge *e)
{
    return e && e->magic == TG__MAGIC ? e->last_ok_ms : 0;
}

const char *tg_reason_name(tg_reason r)
{
    switch (r) {
    case TG_REASON_NONE: return "none";
    case TG_REASON_RATE_LIMITED: return "rate_limited";
    case TG_REASON_BLOCKED: return "blocked";
    case TG_REASON_INVALID_TOKEN: return "invalid_token";
    case TG_REASON_TOKEN_EXPIRED: return "token_expired";
    case TG_REASON_MISSING_TOKEN: return "missing_token";
    case TG_REASON_BAD_REQUEST: return "bad_request";
    }
    return "unknown";
}
