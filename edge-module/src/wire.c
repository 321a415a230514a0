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

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* proto3: a scalar equal to its default is not written at all. */
static size_t u64_field_size(uint64_t v)
{
    return v ? 1 + varint_size(v) : 0;
}

static size_t str_field_size(tg_str s)
{
    return s.len ? 1 + varint_size(s.len) + s.len : 0;
}

static size_t put_u64_field(uint8_t *out, unsigned field, uint64_t v)
{
    if (!v)
        return 0;
    out[0] = (uint8_t)(field << 3 | WT_VARINT);
    return 1 + put_varint(out + 1, v);
}

static size_t put_str_field(uint8_t *out, unsigned field, tg_str s)
{
    if (!s.len)
        return 0;
    out[0] = (uint8_t)(field << 3 | WT_LEN);
    size_t n = 1 + put_varint(out + 1, s.len);
    tg__memcpy(out + n, s.p, s.len);
    return n + s.len;
}

size_t tg__wire_head_size(const tg__reqhead *h)
{
    return str_field_size(h->edge_id) + u64_field_size(h->seq) +
           u64_field_size(h->sent_at_ms) + u64_field_size(h->policy_version) +
           str_field_size(h->module_version);
}

size_t tg__wire_put_head(uint8_t *out, const tg__reqhead *h)
{
    size_t n = put_str_field(out, 1, h->edge_id);
    n += put_u64_field(out + n, 2, h->seq);
    n += put_u64_field(out + n, 3, h->sent_at_ms);
    n += put_u64_field(out + n, 4, h->policy_version);
    n += put_str_field(out + n, 5, h->module_version);
    return n;
}

static size_t count_body_size(const tg__keycount *kc)
{
    return str_field_size(kc->quota) + str_field_size(kc->key) +
           u64_field_size(kc->admitted) + u64_field_size(kc->denied) +
           u64_field_size(kc->challenged);
}

/* A repeated message element is always written, even when empty. */
size_t tg__wire_count_size(const tg__keycount *kc)
{
    size_t body = count_body_size(kc);
    return 1 + varint_size(body) + body;
}

size_t tg__wire_put_count(uint8_t *out, const tg__keycount *kc)
{
    out[0] = (uint8_t)(6 << 3 | WT_LEN);
    size_t n = 1 + put_varint(out + 1, count_body_size(kc));
    n += put_str_field(out + n, 1, kc->quota);
    n += put_str_field(out + n, 2, kc->key);
    n += put_u64_field(out + n, 3, kc->admitted);
    n += put_u64_field(out + n, 4, kc->denied);
    n += put_u64_field(out + n, 5, kc->challenged);
    return n;
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

/* A known field must arrive with its declared wire type (protobuf-c, which
 * the coordinator uses, is as strict). */
static int rd_u64(rd *r, unsigned wt, uint64_t *v)
{
    return wt == WT_VARINT ? rd_varint(r, v) : TG_EPROTO;
}

/* uint32 and enum fields keep the low 32 bits, as every protobuf runtime. */
static int rd_u32(rd *r, unsigned wt, uint32_t *v)
{
    uint64_t x;
    if (rd_u64(r, wt, &x) < 0)
        return TG_EPROTO;
    *v = (uint32_t)x;
    return 0;
}

static int rd_bool(rd *r, unsigned wt, bool *v)
{
    uint64_t x;
    if (rd_u64(r, wt, &x) < 0)
        return TG_EPROTO;
    *v = x != 0;
    return 0;
}

static int rd_str(rd *r, unsigned wt, tg_str *s)
{
    rd sub;
    if (wt != WT_LEN || rd_len(r, &sub) < 0)
        return TG_EPROTO;
    s->p = (const char *)sub.p;
    s->len = (size_t)(sub.end - sub.p);
    return 0;
}

static int rd_double(rd *r, unsigned wt, double *d)
{
    const uint8_t *p;
    if (wt != WT_I64 || rd_bytes(r, 8, &p) < 0)
        return TG_EPROTO;
    uint64_t bits = 0;
    for (unsigned i = 0; i < 8; i++)
        bits |= (uint64_t)p[i] << (8 * i);
    tg__memcpy(d, &bits, sizeof *d);
    return 0;
}

static int decode_keystate(rd m, tg__keystate *ks)
{
    tg__memset(ks, 0, sizeof *ks);
    while (m.p < m.end) {
        uint32_t f, action = 0;
        unsigned wt;
        int rc;
        if (rd_tag(&m, &f, &wt) < 0)
            return TG_EPROTO;
        switch (f) {
        case 1: rc = rd_str(&m, wt, &ks->quota); break;
        case 2: rc = rd_str(&m, wt, &ks->key); break;
        case 3:
            rc = rd_u32(&m, wt, &action);
            ks->action = (int32_t)action;
            break;
        case 4: rc = rd_u64(&m, wt, &ks->lease); break;
        case 5: rc = rd_u64(&m, wt, &ks->reset_ms); break;
        case 6: rc = rd_str(&m, wt, &ks->challenge_token); break;
        case 7: rc = rd_u64(&m, wt, &ks->count); break;
        default: rc = rd_skip(&m, wt); break;
        }
        if (rc < 0)
            return TG_EPROTO;
    }
    return 0;
}

/* Copies a string into a fixed field; a string over the cap does not fail
 * the decode (the bytes are well-formed) but refuses the policy. */
static void put_capped(char *dst, size_t cap, uint8_t *len, tg_str s,
                       int *refused, int why)
{
    if (s.len > cap) {
        if (!*refused)
            *refused = why;
        *len = 0;
        return;
    }
    tg__memcpy(dst, s.p, s.len);
    *len = (uint8_t)s.len;
}

static int decode_quota(rd m, tg__quota *q, int *refused)
{
    tg_str s, key = {0, 0};
    tg__memset(q, 0, sizeof *q);
    while (m.p < m.end) {
        uint32_t f, v32 = 0;
        unsigned wt;
        int rc;
        if (rd_tag(&m, &f, &wt) < 0)
            return TG_EPROTO;
        switch (f) {
        case 1:
            if ((rc = rd_str(&m, wt, &s)) == 0)
                put_capped(q->name, TG__NAME_CAP, &q->name_len, s, refused,
                           TG__POLICY_BAD_NAME);
            break;
        case 2: rc = rd_u64(&m, wt, &q->limit); break;
        case 3: rc = rd_u32(&m, wt, &q->window_s); break;
        case 4: rc = rd_str(&m, wt, &key); break;
        case 5:
            if ((rc = rd_str(&m, wt, &s)) == 0)
                put_capped(q->prefix, TG__PREFIX_CAP, &q->prefix_len, s, refused,
                           TG__POLICY_BAD_PREFIX);
            break;
        case 6:
            if ((rc = rd_str(&m, wt, &s)) < 0)
                break;
            if (q->n_methods == TG__MAX_METHODS || s.len == 0) {
                if (!*refused)
                    *refused = TG__POLICY_BAD_METHODS;
                break;
            }
            put_capped(q->methods[q->n_methods], TG__METHOD_CAP,
                       &q->method_len[q->n_methods], s, refused,
                       TG__POLICY_BAD_METHODS);
            q->n_methods++;
            break;
        case 7:
            rc = rd_u32(&m, wt, &v32);
            q->action = (int32_t)v32;
            break;
        case 8: rc = rd_u64(&m, wt, &q->floor); break;
        case 9: rc = rd_bool(&m, wt, &q->shadow); break;
        case 10: rc = rd_bool(&m, wt, &q->fail_open); break;
        case 11: rc = rd_double(&m, wt, &q->deny_after); break;
        default: rc = rd_skip(&m, wt); break;
        }
        if (rc < 0)
            return TG_EPROTO;
    }
    q->key_kind = tg__bytes_eq(key.p, key.len, "ip", 2) ? TG__KEY_IP : TG__KEY_UNKNOWN;
    return 0;
}

/* Merges into *p, as protobuf does when a message field occurs twice:
 * scalars are overwritten, repeated quotas appended. */
static int decode_policy(rd m, tg__policy *p)
{
    tg__quota q;
    while (m.p < m.end) {
        uint32_t f;
        unsigned wt;
        int rc;
        rd sub;
        if (rd_tag(&m, &f, &wt) < 0)
            return TG_EPROTO;
        switch (f) {
        case 1: rc = rd_u64(&m, wt, &p->version); break;
        case 2:
            if (wt != WT_LEN || rd_len(&m, &sub) < 0 ||
                decode_quota(sub, &q, &p->refused) < 0)
                return TG_EPROTO;
            if (p->n_quotas == TG__MAX_QUOTAS) {
                if (!p->refused)
                    p->refused = TG__POLICY_TOO_MANY_QUOTAS;
            } else {
                p->quotas[p->n_quotas++] = q;
            }
            rc = 0;
            break;
        case 3: rc = rd_u32(&m, wt, &p->sync_interval_ms); break;
        case 4: rc = rd_u32(&m, wt, &p->clearance_ttl_s); break;
        default: rc = rd_skip(&m, wt); break;
        }
        if (rc < 0)
            return TG_EPROTO;
    }
    return 0;
}

int tg__wire_decode_response(const uint8_t *buf, size_t len, tg__response *r,
                             tg__policy *pol)
{
    tg__memset(r, 0, sizeof *r);
    if (len == 0)
        return 0;
    if (!buf)
        return TG_EPROTO;
    rd m = {buf, buf + len};
    while (m.p < m.end) {
        uint32_t f;
        unsigned wt;
        int rc;
        rd sub;
        tg__keystate ks;
        if (rd_tag(&m, &f, &wt) < 0)
            return TG_EPROTO;
        switch (f) {
        case 1: rc = rd_u64(&m, wt, &r->acked_seq); break;
        case 2: rc = rd_u32(&m, wt, &r->next_sync_ms); break;
        case 3:
            if (wt != WT_LEN || rd_len(&m, &sub) < 0 || decode_keystate(sub, &ks) < 0)
                return TG_EPROTO;
            r->n_states++;
            rc = 0;
            break;
        case 4: rc = rd_bool(&m, wt, &r->degraded); break;
        case 5: rc = rd_u64(&m, wt, &r->policy_version); break;
        case 6:
            if (wt != WT_LEN || rd_len(&m, &sub) < 0 || decode_policy(sub, pol) < 0)
                return TG_EPROTO;
            r->has_policy = true;
            rc = 0;
            break;
        case 7: rc = rd_u64(&m, wt, &r->server_time_ms); break;
        default: rc = rd_skip(&m, wt); break;
        }
        if (rc < 0)
            return TG_EPROTO;
    }
    return 0;
}

int tg__wire_next_state(const uint8_t *buf, size_t len, size_t *pos, tg__keystate *ks)
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
            if (rd_len(&m, &sub) < 0 || decode_keystate(sub, ks) < 0)
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
