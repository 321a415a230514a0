/* wire.c — protobuf wire codec for the sync messages; see wire.h.
 *
 * Field numbers below are those of proto/tollgate.proto. Every field number
 * the edge writes is at most 15, so every tag is one byte.
 */
#include "wire.h"

#include <limits.h>

#include "mem.h"

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* ------------------------------------------------------------ encoding */

/* Every writer takes out == NULL to only measure: one function per field
 * kind serves both the size and the bytes, so they cannot disagree. */
#define AT(out, n) ((out) ? (out) + (n) : NULL)

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        if (out)
            out[n] = (uint8_t)(v | 0x80);
        n++;
        v >>= 7;
    }
    if (out)
        out[n] = (uint8_t)v;
    return n + 1;
}

/* proto3: a scalar equal to its default is not written at all. */
static size_t put_u64_field(uint8_t *out, unsigned field, uint64_t v)
{
    if (!v)
        return 0;
    if (out)
        out[0] = (uint8_t)(field << 3 | WT_VARINT);
    return 1 + put_varint(AT(out, 1), v);
}

static size_t put_str_field(uint8_t *out, unsigned field, tg_str s)
{
    if (!s.len)
        return 0;
    if (out)
        out[0] = (uint8_t)(field << 3 | WT_LEN);
    size_t n = 1 + put_varint(AT(out, 1), s.len);
    if (out)
        tg__memcpy(out + n, s.p, s.len);
    return n + s.len;
}

size_t tg__wire_head_size(const tg__reqhead *h)
{
    return tg__wire_put_head(NULL, h);
}

size_t tg__wire_put_head(uint8_t *out, const tg__reqhead *h)
{
    size_t n = put_str_field(out, 1, h->edge_id);
    n += put_u64_field(AT(out, n), 2, h->seq);
    n += put_u64_field(AT(out, n), 3, h->sent_at_ms);
    n += put_u64_field(AT(out, n), 4, h->policy_version);
    n += put_str_field(AT(out, n), 5, h->module_version);
    return n;
}

static size_t put_count_body(uint8_t *out, const tg__keycount *kc)
{
    size_t n = put_str_field(out, 1, kc->quota);
    n += put_str_field(AT(out, n), 2, kc->key);
    n += put_u64_field(AT(out, n), 3, kc->admitted);
    n += put_u64_field(AT(out, n), 4, kc->denied);
    n += put_u64_field(AT(out, n), 5, kc->challenged);
    return n;
}

/* A repeated message element is always written, even when empty. */
size_t tg__wire_count_size(const tg__keycount *kc)
{
    return tg__wire_put_count(NULL, kc);
}

size_t tg__wire_put_count(uint8_t *out, const tg__keycount *kc)
{
    size_t body = put_count_body(NULL, kc);
    if (out)
        out[0] = (uint8_t)(6 << 3 | WT_LEN);
    size_t n = 1 + put_varint(AT(out, 1), body);
    return n + put_count_body(AT(out, n), kc);
}

long tg__wire_encode_request(const tg__reqhead *h, const tg__keycount *counts,
                             size_t n, uint8_t *buf, size_t cap)
{
    size_t need = tg__wire_head_size(h);
    for (size_t i = 0; i < n; i++) {
        need += tg__wire_count_size(&counts[i]);
        if (need > cap)
            return TG_ENOSPC;
    }
    if (need > cap || need > (size_t)LONG_MAX)
        return TG_ENOSPC;
    size_t off = tg__wire_put_head(buf, h);
    for (size_t i = 0; i < n; i++)
        off += tg__wire_put_count(buf + off, &counts[i]);
    return (long)off;
}

/* ------------------------------------------------------------ decoding */

typedef struct rd {
    const uint8_t *p;
    const uint8_t *end;
} rd;

/* At most ten bytes, and the tenth may only carry bit 63: anything longer
 * or wider is not a uint64 and protobuf calls it malformed. */
static int rd_varint(rd *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (r->p == r->end)
            return TG_EPROTO;
        uint8_t b = *r->p++;
        if (i == 9 && b > 1)
            return TG_EPROTO;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return TG_EPROTO;
}

/* Field 0 does not exist; groups (3, 4) are not proto3 and 6, 7 are not
 * wire types at all. */
static int rd_tag(rd *r, uint32_t *field, unsigned *wt)
{
    uint64_t v;
    if (rd_varint(r, &v) < 0)
        return TG_EPROTO;
    *wt = (unsigned)(v & 7);
    if (v >> 3 == 0 || v >> 3 > 0x1fffffff)
        return TG_EPROTO;
    if (*wt != WT_VARINT && *wt != WT_I64 && *wt != WT_LEN && *wt != WT_I32)
        return TG_EPROTO;
    *field = (uint32_t)(v >> 3);
    return 0;
}

static int rd_bytes(rd *r, size_t n, const uint8_t **p)
{
    if (n > (size_t)(r->end - r->p))
        return TG_EPROTO;
    *p = r->p;
    r->p += n;
    return 0;
}

static int rd_len(rd *r, rd *sub)
{
    uint64_t n;
    if (rd_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
        return TG_EPROTO;
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return 0;
}

static int rd_skip(rd *r, unsigned wt)
{
    uint64_t v;
    const uint8_t *p;
    rd sub;
    switch (wt) {
    case WT_VARINT: return rd_varint(r, &v);
    case WT_I64: return rd_bytes(r, 8, &p);
    case WT_LEN: return rd_len(r, &sub);
    case WT_I32: return rd_bytes(r, 4, &p);
    default: return TG_EPROTO;
    }
}

/* ---------------------------------------------------------------- messages */

/* Each message is a table of its known fields: where a scalar goes (an
 * offset into the struct being filled) or which nested message it is.
 * A known field must arrive with its declared wire type (protobuf-c,
 * which the coordinator uses, is as strict); uint32 and enum fields keep
 * the low 32 bits, as every protobuf runtime; unknown fields are skipped. */
enum {
    K_U64,    /* varint into uint64_t */
    K_U32,    /* varint into uint32_t or int32_t (enums) */
    K_BOOL,   /* varint into bool */
    K_DOUBLE, /* fixed64 into double */
    K_STR,    /* length-delimited into tg_str */
    K_STATE,  /* SyncResponse.states: validated and counted */
    K_POLICY, /* SyncResponse.policy */
    K_QUOTA,  /* Policy.quotas */
    K_METHOD  /* Quota.methods */
};

typedef struct field {
    uint8_t num;
    uint8_t kind;
    uint16_t off;
} field;

/* What a SyncResponse decodes into. */
typedef struct resp_ctx {
    tg__response r;
    tg__policy *pol;
} resp_ctx;

/* What a Quota decodes into: the quota, and its strings until they are
 * copied into the quota's fixed fields. */
typedef struct quota_ctx {
    tg__quota q;
    tg_str name, key, prefix;
    int refused;
} quota_ctx;

#define F(n, k, type, member)                                                  \
    {                                                                          \
        n, k, (uint16_t)offsetof(type, member)                                 \
    }

static const field keystate_fields[] =
    {F(1, K_STR, tg__keystate, quota),
     F(2, K_STR, tg__keystate, key),
     F(3, K_U32, tg__keystate, action),
     F(4, K_U64, tg__keystate, lease),
     F(5, K_U64, tg__keystate, reset_ms),
     F(6, K_STR, tg__keystate, challenge_token),
     F(7, K_U64, tg__keystate, count),
     {0, 0, 0}};

static const field quota_fields[] = {F(1, K_STR, quota_ctx, name),
                                     F(2, K_U64, quota_ctx, q.limit),
                                     F(3, K_U32, quota_ctx, q.window_s),
                                     F(4, K_STR, quota_ctx, key),
                                     F(5, K_STR, quota_ctx, prefix),
                                     {6, K_METHOD, 0},
                                     F(7, K_U32, quota_ctx, q.action),
                                     F(8, K_U64, quota_ctx, q.floor),
                                     F(9, K_BOOL, quota_ctx, q.shadow),
                                     F(10, K_BOOL, quota_ctx, q.fail_open),
                                     F(11, K_DOUBLE, quota_ctx, q.deny_after),
                                     F(12, K_BOOL, quota_ctx, q.require_token),
                                     {0, 0, 0}};

static const field policy_fields[] = {F(1, K_U64, tg__policy, version),
                                      {2, K_QUOTA, 0},
                                      F(3, K_U32, tg__policy, sync_interval_ms),
                                      F(4, K_U32, tg__policy, clearance_ttl_s),
                                      {0, 0, 0}};

static const field response_fields[] = {F(1, K_U64, resp_ctx, r.acked_seq),
                                        F(2, K_U32, resp_ctx, r.next_sync_ms),
                                        {3, K_STATE, 0},
                                        F(4, K_BOOL, resp_ctx, r.degraded),
                                        F(5, K_U64, resp_ctx, r.policy_version),
                                        {6, K_POLICY, 0},
                                        F(7, K_U64, resp_ctx, r.server_time_ms),
                                        {0, 0, 0}};

static int decode(rd m, const field *f, void *base);

/* Copies a string into a fixed field; one over the cap does not fail the
 * decode (the bytes are well-formed) but refuses the policy. */
static void put_capped(char *dst, size_t cap, uint8_t *len, tg_str s,
                       int *refused, int why)
{
    if (s.len > cap) {
        if (!*refused)
            *refused = why;
        return;
    }
    if (s.len)
        tg__memcpy(dst, s.p, s.len);
    *len = (uint8_t)s.len;
}

/* A quota is decoded whole before it is kept; the template text is
 * parsed when the policy is installed, and one too long to keep stays
 * empty, which never parses (the quota never matches). */
static int decode_quota(rd m, tg__policy *p)
{
    quota_ctx c;
    tg__memset(&c, 0, sizeof c);
    if (decode(m, quota_fields, &c) < 0)
        return TG_EPROTO;
    put_capped(c.q.name, TG__NAME_CAP, &c.q.name_len, c.name, &c.refused,
               TG__POLICY_BAD_NAME);
    put_capped(c.q.prefix, TG__PREFIX_CAP, &c.q.prefix_len, c.prefix,
               &c.refused, TG__POLICY_BAD_PREFIX);
    if (c.key.len <= TG__TEMPLATE_CAP)
        put_capped(c.q.key, TG__TEMPLATE_CAP, &c.q.key_len, c.key, &c.refused,
                   0);
    if (p->n_quotas == TG__MAX_QUOTAS)
        c.refused = TG__POLICY_TOO_MANY_QUOTAS;
    else
        p->quotas[p->n_quotas++] = c.q;
    if (!p->refused)
        p->refused = c.refused;
    return 0;
}

static int decode(rd m, const field *f, void *base)
{
    while (m.p < m.end) {
        uint32_t num;
        unsigned wt, want;
        uint64_t v;
        rd sub;
        const field *d = f;
        if (rd_tag(&m, &num, &wt) < 0)
            return TG_EPROTO;
        while (d->num && d->num != num)
            d++;
        if (!d->num) {
            if (rd_skip(&m, wt) < 0)
                return TG_EPROTO;
            continue;
        }
        char *at = (char *)base + d->off;
        want = d->kind <= K_BOOL     ? WT_VARINT
               : d->kind == K_DOUBLE ? WT_I64
                                     : WT_LEN;
        if (wt != want)
            return TG_EPROTO;
        if (want == WT_VARINT) {
            if (rd_varint(&m, &v) < 0)
                return TG_EPROTO;
            if (d->kind == K_U64)
                *(uint64_t *)(void *)at = v;
            else if (d->kind == K_U32)
                *(uint32_t *)(void *)at = (uint32_t)v;
            else
                *(bool *)at = v != 0;
            continue;
        }
        if (want == WT_I64) {
            if (m.end - m.p < 8)
                return TG_EPROTO;
            tg__memcpy(at, m.p, 8); /* little-endian, as wasm32 and x86 */
            m.p += 8;
            continue;
        }
        if (rd_len(&m, &sub) < 0)
            return TG_EPROTO;
        tg_str str = {(const char *)sub.p, (size_t)(sub.end - sub.p)};
        if (d->kind == K_STR) {
            *(tg_str *)(void *)at = str;
        } else if (d->kind == K_STATE) {
            tg__keystate ks;
            tg__memset(&ks, 0, sizeof ks);
            if (decode(sub, keystate_fields, &ks) < 0)
                return TG_EPROTO;
            ((resp_ctx *)base)->r.n_states++;
        } else if (d->kind == K_POLICY) {
            resp_ctx *c = base;
            if (decode(sub, policy_fields, c->pol) < 0)
                return TG_EPROTO;
            c->r.has_policy = true;
        } else if (d->kind == K_QUOTA) {
            if (decode_quota(sub, base) < 0)
                return TG_EPROTO;
        } else {
            quota_ctx *c = base;
            if (c->q.n_methods == TG__MAX_METHODS || str.len == 0) {
                if (!c->refused)
                    c->refused = TG__POLICY_BAD_METHODS;
            } else {
                put_capped(c->q.methods[c->q.n_methods], TG__METHOD_CAP,
                           &c->q.method_len[c->q.n_methods], str, &c->refused,
                           TG__POLICY_BAD_METHODS);
                c->q.n_methods++;
            }
        }
    }
    return 0;
}

/* Merges into *pol, as protobuf does when a message field occurs twice:
 * scalars are overwritten, repeated quotas appended. */
int tg__wire_decode_response(const uint8_t *buf, size_t len, tg__response *r,
                             tg__policy *pol)
{
    resp_ctx c;
    tg__memset(&c, 0, sizeof c);
    c.pol = pol;
    *r = c.r;
    if (len == 0)
        return 0;
    if (!buf || decode((rd){buf, buf + len}, response_fields, &c) < 0)
        return TG_EPROTO;
    *r = c.r;
    return 0;
}

int tg__wire_next_state(const uint8_t *buf, size_t len, size_t *pos,
                        tg__keystate *ks)
{
    if (!buf || *pos >= len)
        return 0;
    rd m = {buf + *pos, buf + len};
    while (m.p < m.end) {
        uint32_t f;
        unsigned wt;
        rd sub;
        if (rd_tag(&m, &f, &wt) < 0)
            return 0;
        if (f == 3 && wt == WT_LEN) {
            tg__memset(ks, 0, sizeof *ks);
            if (rd_len(&m, &sub) < 0 || decode(sub, keystate_fields, ks) < 0)
                return 0;
            *pos = (size_t)(m.p - buf);
            return 1;
        }
        if (rd_skip(&m, wt) < 0)
            return 0;
    }
    *pos = len;
    return 0;
}
