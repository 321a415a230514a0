/* policy.c — validating, matching and installing the quota policy; see
 * policy.h and edge.h. */
#include "policy.h"

#include "edge.h"
#include "keys.h"
#include "mem.h"

void tg__policy_reset(tg__policy *p)
{
    p->version = 0;
    p->sync_interval_ms = 0;
    p->clearance_ttl_s = 0;
    p->n_quotas = 0;
    p->refused = TG__POLICY_OK;
    p->names.n[0] = p->names.n[1] = 0;
}

/* Names travel in RateLimit headers (as quoted strings, with '"' and '\'
 * escaped) so control bytes and non-ASCII could split or corrupt a header;
 * they also key counts on the wire, so they must be unique. */
static bool name_ok(const tg__quota *q)
{
    if (q->name_len == 0)
        return false;
    for (unsigned i = 0; i < q->name_len; i++)
        if (q->name[i] < 0x20 || q->name[i] > 0x7e)
            return false;
    return true;
}

int tg__policy_validate(tg__policy *p)
{
    for (uint32_t i = 0; i < p->n_quotas && !p->refused; i++) {
        const tg__quota *q = &p->quotas[i];
        if (!name_ok(q) || tg__policy_find(p, q->name, q->name_len) != (int)i)
            p->refused = TG__POLICY_BAD_NAME;
        else if (q->window_s == 0)
            p->refused = TG__POLICY_BAD_WINDOW;
    }
    p->names.n[0] = p->names.n[1] = 0;
    for (uint32_t i = 0; i < p->n_quotas && !p->refused; i++) {
        tg__quota *q = &p->quotas[i];
        (void)tg__template_parse(q->key, q->key_len, &q->tpl, &p->names);
    }
    return p->refused;
}

int tg__policy_find(const tg__policy *p, const char *name, size_t len)
{
    for (uint32_t i = 0; i < p->n_quotas; i++)
        if (tg__bytes_eq(p->quotas[i].name, p->quotas[i].name_len, name, len))
            return (int)i;
    return -1;
}

/* The path is matched as raw bytes: the host passes it already normalised
 * (its URL parser resolves dot segments). Methods compare ASCII
 * case-insensitively, so a policy saying "get" still means GET. */
bool tg__quota_matches(const tg__quota *q, const tg_request *req)
{
    if (q->tpl.n == 0)
        return false;
    if (req->path.len < q->prefix_len ||
        !tg__memeq(req->path.p, q->prefix, q->prefix_len))
        return false;
    if (q->n_methods == 0)
        return true;
    for (unsigned i = 0; i < q->n_methods; i++)
        if (tg__ascii_caseeq(q->methods[i], q->method_len[i], req->method.p,
                             req->method.len))
            return true;
    return false;
}

/* At least one request per key while the limit is positive (a floor of 0
 * would deny every new key until its first lease arrives), never more
 * than the limit itself; nothing at all for a limit of 0. */
uint64_t tg__quota_floor(const tg__quota *q)
{
    if (q->limit == 0)
        return 0;
    if (q->floor == 0)
        return 1;
    return q->floor < q->limit ? q->floor : q->limit;
}

/* A quota survives a policy change when the new policy has one with the
 * same name and the same key template: its entries (and spilled counts)
 * keep their buckets and counts and are only renumbered. Entries of
 * dropped quotas are removed with their pending counts (the coordinator no
 * longer has that quota to count them against); entries in the batch in
 * flight defer the swap instead (see edge.h). The token cache is emptied:
 * the claims it extracted were those the old policy named. */
int tg__policy_install(tg_edge *e, uint64_t now_ms)
{
    tg__policy *old = &e->pol[e->cur], *nw = &e->pol[!e->cur];
    int map[TG__MAX_QUOTAS];
    tg__counts ovf[TG__MAX_QUOTAS];
    uint32_t ovf_batch = 0;

    if (tg__policy_validate(nw))
        return nw->refused;
    for (uint32_t i = 0; i < old->n_quotas; i++) {
        const tg__quota *q = &old->quotas[i];
        int j = tg__policy_find(nw, q->name, q->name_len);
        map[i] =
            j >= 0 && tg__bytes_eq(nw->quotas[j].key, nw->quotas[j].key_len,
                                   q->key, q->key_len)
                ? j
                : -1;
        if (map[i] < 0 && (e->ovf_batch >> i & 1))
            return 1;
    }
    for (uint32_t s = 0; s <= e->tab.mask; s++) {
        const tg__entry *en = &e->tab.slot[s];
        if (en->quota != TG__NO_QUOTA && map[en->quota] < 0 &&
            (en->flags & TG__F_BATCH))
            return 1;
    }
    for (uint32_t s = 0; s < e->tab.n_spill; s++)
        if (map[e->tab.spill[s].quota] < 0 && e->tab.spill[s].batch)
            return 1;

    for (uint32_t s = 0; s <= e->tab.mask; s++) {
        tg__entry *en = &e->tab.slot[s];
        if (en->quota == TG__NO_QUOTA)
            continue;
        if (map[en->quota] < 0)
            tg__table_remove(&e->tab, en);
        else
            en->quota = (uint8_t)map[en->quota];
    }
    for (uint32_t s = 0; s < e->tab.n_spill; s++) {
        tg__spilled *sp = &e->tab.spill[s];
        if (map[sp->quota] < 0)
            sp->quota = TG__NO_QUOTA;
        else
            sp->quota = (uint8_t)map[sp->quota];
    }
    tg__spill_compact(&e->tab);
    tg__memset(ovf, 0, sizeof ovf);
    for (uint32_t i = 0; i < old->n_quotas; i++) {
        if (map[i] < 0)
            continue;
        ovf[map[i]] = e->overflow[i];
        if (e->ovf_batch >> i & 1)
            ovf_batch |= 1u << map[i];
    }
    tg__memcpy(e->overflow, ovf, sizeof ovf);
    e->ovf_batch = ovf_batch;
    e->cur = (uint8_t)!e->cur;
    if (!e->policy_at_ms)
        e->policy_at_ms = now_ms;
    tg__jwt_flush(&e->jwt);
    e->base_interval_ms = nw->sync_interval_ms
                              ? tg__clamp_interval(nw->sync_interval_ms)
                              : e->cfg_interval_ms;
    return 0;
}
