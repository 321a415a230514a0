/* edge.c — the tg_edge block and tg_verify(): one local decision per
 * request from its token and the (quota, key) buckets, with the headers
 * that explain it. Counting is done here; sync.c ships the counts. */
#include "edge.h"

#include "mem.h"
#include "sha256.h"
#include "template.h"

#define CLEARANCE_COOKIE "tollgate_clearance"

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
    if (cfg->edge_id.len > TG__EDGE_ID_CAP ||
        (cfg->edge_id.len && !cfg->edge_id.p))
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
    e->cfg_interval_ms = cfg->sync_interval_ms
                             ? tg__clamp_interval(cfg->sync_interval_ms)
                             : TG__DEFAULT_INTERVAL_MS;
    e->base_interval_ms = e->cfg_interval_ms;
    e->interval_ms = e->cfg_interval_ms;
    tg__table_init(&e->tab, (char *)mem + align8(sizeof *e),
                   tg__table_slots(cfg->max_keys ? cfg->max_keys : 4096));
    tg__jwt_init(&e->jwt, cfg->seed);
    *out = e;
    return 0;
}

int tg_add_key_alg(tg_edge *e, int kind, int alg, tg_str kid,
                   const uint8_t *secret, size_t len)
{
    if (!e || e->magic != TG__MAGIC)
        return TG_EINVAL;
    return tg__jwt_add_key(&e->jwt, kind, alg, kid, secret, len);
}

int tg_add_key(tg_edge *e, int kind, tg_str kid, const uint8_t *secret,
               size_t len)
{
    int rc = tg_add_key_alg(e, kind, TG_ALG_HS256, kid, secret, len);
    return rc < 0 ? rc : 0;
}

int tg_jwt_configure(tg_edge *e, const tg_jwt_options *o)
{
    if (!e || e->magic != TG__MAGIC)
        return TG_EINVAL;
    return tg__jwt_configure(&e->jwt, o);
}

long tg_header_names(const tg_edge *e, char *buf, size_t cap)
{
    if (!e || e->magic != TG__MAGIC || (!buf && cap))
        return TG_EINVAL;
    const tg__names *nm = &tg__policy_cur(e)->names;
    size_t off = 0;
    for (unsigned i = 0; i < nm->n[TG__NAMES_HEADER]; i++) {
        tg_str h = nm->name[TG__NAMES_HEADER][i];
        if (h.len + 1 > cap - off)
            return TG_ENOSPC;
        tg__memcpy(buf + off, h.p, h.len);
        off += h.len;
        buf[off++] = '\n';
    }
    return (long)off;
}

/* ---------------------------------------------------------------- verify */

/* One matching quota's part in a decision. */
typedef struct hit {
    tg__entry *en; /* NULL: no entry (no key, or the table had no room) */
    uint8_t q;
    uint8_t verdict;
    bool overflow; /* no room in the table: count under TG__OVERFLOW_KEY */
} hit;

/* The lazily computed facts about a request that several quotas share. */
typedef struct reqctx {
    const tg_request *req;
    int tok; /* TG__TOK_*; -1: not looked at yet */
    const tg__claims *claims;
    int clr; /* clearance cookie: TG__TOK_*; -1: not looked at */
    const tg__claims *clv;
    tg__sigcheck chk; /* tok == TG__TOK_PENDING: what the host checks */
    bool stale;
    tg__stale st;
} reqctx;

/* Staleness counts from the last successful sync (or, before one, from
 * the first policy: a policy only ever arrives with an answer). */
static bool stale_ctx(const tg_edge *e, uint64_t now_ms, tg__stale *st)
{
    uint64_t ref = e->last_ok_ms ? e->last_ok_ms : e->policy_at_ms;
    st->since_ms = ref + (uint64_t)TG__GRACE_INTERVALS * e->interval_ms;
    st->half_life_ms = (uint64_t)TG__HALF_LIFE_INTERVALS * e->interval_ms;
    return ref != 0 && now_ms > st->since_ms;
}

static tg__entry *entry_for(tg_edge *e, const reqctx *rc, const tg__quota *q,
                            unsigned qi, tg_str key, uint64_t now_ms)
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
    if (rc->stale)
        tg__bucket_refresh_stale(&en->b, tg__quota_floor(q),
                                 (uint64_t)q->window_s * 1000, &rc->st,
                                 q->fail_open, now_ms);
    else
        tg__bucket_refresh(&en->b, tg__quota_floor(q),
                           (uint64_t)q->window_s * 1000, now_ms);
    return en;
}

/* The request's JWT, verified once however many quotas look at it; only
 * the claims the policy's templates name are extracted. A verdict from
 * the host on its signature is recorded first. */
static int token_state(tg_edge *e, reqctx *rc)
{
    if (rc->tok < 0) {
        const tg__policy *p = tg__policy_cur(e);
        tg__claimset want = {p->names.n[TG__NAMES_CLAIM],
                             p->names.name[TG__NAMES_CLAIM]};
        tg_str t;
        rc->tok = TG__TOK_NONE;
        if (tg__jwt_bearer(rc->req->authorization, &t)) {
            if (rc->req->sig_verdict)
                (void)tg__jwt_verdict(&e->jwt, t, &want,
                                      rc->req->sig_verdict - 1);
            rc->tok = tg__jwt_check(&e->jwt, TG_KEY_JWT, t, &want,
                                    rc->req->now_ms, &rc->claims, &rc->chk);
        }
    }
    return rc->tok;
}

/* Whether a valid clearance token for this quota and key rides in the
 * Cookie header. A clearance that is absent, invalid, expired, or for
 * another quota or key is simply no clearance (never a Deny). */
static bool cleared(tg_edge *e, reqctx *rc, const tg__quota *q, const char *key,
                    size_t len)
{
    static const tg_str names[2] = {{"q", 1}, {"kh", 2}};
    if (rc->clr < 0) {
        tg__claimset want = {2, names};
        tg_str c;
        rc->clr = TG__TOK_NONE;
        if (tg__cookie_get(rc->req->cookie, CLEARANCE_COOKIE,
                           sizeof CLEARANCE_COOKIE - 1, &c))
            rc->clr = tg__jwt_check(&e->jwt, TG_KEY_CLEARANCE, c, &want,
                                    rc->req->now_ms, &rc->clv, &rc->chk);
    }
    if (rc->clr != TG__TOK_OK)
        return false;
    const tg__claims *v = rc->clv;
    if (v->type[0] != TG__CV_STRING ||
        !tg__bytes_eq(v->val[0], v->len[0], q->name, q->name_len) ||
        v->type[1] != TG__CV_STRING || v->len[1] != 22)
        return false;
    tg__sha256_ctx h;
    uint8_t d[32], kh[17];
    tg__sha256_init(&h);
    tg__sha256_update(&h, q->name, q->name_len);
    tg__sha256_update(&h, "\n", 1);
    tg__sha256_update(&h, key, len);
    tg__sha256_final(&h, d);
    return tg__b64url_decode(v->val[1], 22, kh) == 16 && tg__memeq(kh, d, 16);
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
    tg__counts *c = en ? &en->c : h->overflow ? &e->overflow[h->q] : NULL;
    if (!c)
        return;
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
    case TG__V_TOKEN: c->pend[TG__C_DENIED]++; break;
    case TG__V_CHALLENGE: c->pend[TG__C_CHALLENGED]++; break;
    default: break;
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

__attribute__((noinline)) static void hw_bytes(hw *w, const char *s, size_t n)
{
    if (n > w->cap - w->len)
        n = w->cap - w->len;
    tg__memcpy(w->p + w->len, s, n);
    w->len += n;
}

/* A string literal, its length known at compile time. */
#define hw_str(w, lit) hw_bytes((w), (lit), sizeof(lit) - 1)

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
    size_t run = 0;
    hw_str(w, "\"");
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '"' && s[i] != '\\')
            continue;
        hw_bytes(w, s + run, i - run);
        hw_str(w, "\\");
        run = i;
    }
    hw_bytes(w, s + run, n - run);
    hw_str(w, "\"");
}

/* What the client has left globally as far as this edge knows: the
 * quota's limit less the key's count at the coordinator's last answer and
 * what this edge admitted since (not this edge's lease, which is a slice
 * of it). */
static uint64_t left(const tg__quota *q, const tg__entry *en)
{
    return q->limit > en->b.seen ? q->limit - en->b.seen : 0;
}

/* draft-ietf-httpapi-ratelimit-headers-10, for one quota: r is left(), 0
 * on a 429; t the seconds until the quota frees up; on a 429 t is the
 * Retry-After (so Retry-After is never earlier than t), when the edge
 * expects to know more. q is NULL for a 429 no bucket explains (no room in the key
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
        hw_u64(&w, is_429 ? 0 : left(q, en));
        hw_str(&w, ";t=");
        hw_u64(&w, is_429 ? d->retry_after_s
                          : ceil_s(tg__bucket_reset_in_ms(&en->b, window_ms,
                                                          now_ms)));
        hw_str(&w, "\r\n");
    }
    if (is_429) {
        hw_str(&w, "Retry-After: ");
        hw_u64(&w, d->retry_after_s);
        hw_str(&w, "\r\n");
    }
    return (tg_str){e->hdr, w.len};
}

/* RFC 6750 §3: a 401 names the scheme, and says invalid_token when a
 * token was presented and refused. */
static tg_str www_authenticate(tg_edge *e, tg_reason r)
{
    hw w = {e->hdr, 0, sizeof e->hdr};
    hw_str(&w, "WWW-Authenticate: Bearer");
    if (r != TG_REASON_MISSING_TOKEN)
        hw_str(&w, " error=\"invalid_token\"");
    hw_str(&w, "\r\n");
    return (tg_str){e->hdr, w.len};
}

/* The decision for the deciding verdict; den is the deciding quota's entry
 * (NULL when it had none). A challenge or block lasts until the
 * coordinator's reset; a spent allowance until the next sync may refill
 * it. */
static const uint8_t tok_reason[] = {
    [TG__TOK_NONE] = TG_REASON_MISSING_TOKEN,
    [TG__TOK_INVALID] = TG_REASON_INVALID_TOKEN,
    [TG__TOK_EXPIRED] = TG_REASON_TOKEN_EXPIRED,
    [TG__TOK_UNKNOWN_KID] = TG_REASON_UNKNOWN_KID,
    [TG__TOK_BAD_ALG] = TG_REASON_UNSUPPORTED_ALG,
};

static void decide(tg_edge *e, int final, int tok, const tg__entry *den,
                   uint64_t now_ms, tg_decision *out)
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
    case TG__V_TOKEN:
        out->kind = TG_DENY;
        out->reason = (tg_reason)tok_reason[tok];
        out->status = 401;
        out->headers = www_authenticate(e, out->reason);
        return;
    case TG__V_BAD:
        out->kind = TG_DENY;
        out->reason = TG_REASON_BAD_REQUEST;
        out->status = 400;
        return;
    default: return;
    }
    out->status = 429;
}

/* Every matching quota is looked at before anything is counted, because
 * whether a quota spends a token depends on what all the others say. The
 * most severe verdict of the enforced (non-shadow) quotas decides; shadow
 * quotas are counted like the others but never change the decision. The
 * headers describe the deciding quota on a refusal, otherwise the enforced
 * quota with the least left (r). The token is only looked at once some
 * quota matches, and the clearance cookie once some key is challenged. */
int tg_verify(tg_edge *e, const tg_request *req, tg_decision *out)
{
    hit hits[TG__MAX_QUOTAS];
    unsigned n = 0;
    int final = TG__V_ALLOW, decider = -1;
    char key[TG__KEY_CAP];
    size_t klen;

    if (!out)
        return TG_EINVAL;
    *out =
        (tg_decision){TG_ALLOW, TG_REASON_NONE, 200, 0, {"", 0}, {"", 0}, 0, 0};
    if (!e || !req || e->magic != TG__MAGIC)
        return TG_EINVAL;

    const tg__policy *p = tg__policy_cur(e);
    uint64_t now = req->now_ms;
    reqctx rc = {.req = req, .tok = -1, .clr = -1};
    rc.stale = stale_ctx(e, now, &rc.st);
    for (uint32_t qi = 0; qi < p->n_quotas; qi++) {
        const tg__quota *q = &p->quotas[qi];
        if (!tg__quota_matches(q, req))
            continue;
        int tok = token_state(e, &rc);
        if (tok == TG__TOK_PENDING) {
            /* The first quota that matched asked: nothing counted yet. */
            out->kind = TG_CHECK_SIGNATURE;
            out->status = 0;
            out->token = rc.chk.input;
            out->headers = rc.chk.sig;
            out->sig_keys = rc.chk.keys;
            out->sig_alg = rc.chk.alg;
            return 0;
        }
        hit *h = &hits[n];
        h->q = (uint8_t)qi;
        h->en = NULL;
        h->overflow = false;
        if (tok >= TG__TOK_INVALID ||
            (tok == TG__TOK_NONE && q->require_token)) {
            /* Refused for its token; counted as denied where the key
             * needs no claim. */
            h->verdict = TG__V_TOKEN;
            if (!q->tpl.claims &&
                tg__template_key(&q->tpl, &p->names, req, NULL, key, &klen) ==
                    TG__TPL_OK) {
                h->en = entry_for(e, &rc, q, qi, (tg_str){key, klen}, now);
                h->overflow = h->en == NULL;
            }
        } else {
            int k = tg__template_key(&q->tpl, &p->names, req,
                                     tok == TG__TOK_OK ? rc.claims : NULL, key,
                                     &klen);
            if (k == TG__TPL_SKIP || (k == TG__TPL_BAD && q->shadow))
                continue;
            if (k == TG__TPL_BAD) {
                h->verdict = TG__V_BAD;
            } else if ((h->en = entry_for(e, &rc, q, qi, (tg_str){key, klen},
                                          now)) != NULL) {
                h->verdict = (uint8_t)tg__bucket_verdict(&h->en->b, now);
                if (h->verdict == TG__V_CHALLENGE &&
                    cleared(e, &rc, q, key, klen))
                    h->verdict = TG__V_ALLOW;
            } else {
                /* No room in the key table: the quota's fail_open decides,
                 * and the request is counted under TG__OVERFLOW_KEY. */
                h->verdict = q->fail_open ? TG__V_ALLOW : TG__V_RATE;
                h->overflow = true;
            }
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
        const tg__quota *q = &p->quotas[hits[i].q];
        if (final == TG__V_ALLOW && en && !q->shadow && left(q, en) < best_r) {
            best_r = left(q, en);
            shown = (int)i;
        }
    }

    decide(e, final, rc.tok, decider >= 0 ? hits[decider].en : NULL, now, out);
    /* A 401 or 400 is not a bucket's doing: no RateLimit fields. */
    if (final != TG__V_TOKEN && final != TG__V_BAD) {
        if (shown >= 0 && hits[shown].en)
            out->headers = write_headers(e, &p->quotas[hits[shown].q],
                                         hits[shown].en, out, now);
        else if (out->status == 429)
            out->headers = write_headers(e, NULL, NULL, out, now);
    }

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
    const char *s = TG_REASON_NAMES;
    if ((unsigned)r >= TG_REASON_COUNT)
        return "unknown";
    for (unsigned i = 0; i < (unsigned)r; i++)
        while (*s++)
            ;
    return s;
}
