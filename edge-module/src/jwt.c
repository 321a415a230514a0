/* jwt.c — JWS verification (HS256 here, the other algorithms through the
 * host), provisioned keys and the verified-token cache; see jwt.h. */
#include "jwt.h"

#include "json.h"
#include "mem.h"

#define SIG_CHARS_MAX (TG__SIG_MAX / 3 * 4 + 3) /* base64url of 512 bytes */
#define SIG_AT        (TG__TOKEN_MAX / 4 * 3)   /* the signature in scratch */

_Static_assert(SIG_AT + TG__SIG_MAX <= TG__TOKEN_MAX, "scratch too small");
_Static_assert(TG__JWT_KEYS <= 32, "key indices are bits of a uint32_t");

/* The names tg_alg numbers, 5 bytes each. */
const char tg__alg_names[] = TG_ALG_NAMES;

/* ---------------------------------------------------------------- base64url */

static int b64_value(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long tg__b64url_decode(const char *s, size_t n, uint8_t *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((uint8_t)s[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* The 2 or 4 bits left over must be zero: one encoding per value. */
    if (acc & ((1u << bits) - 1))
        return -1;
    return (long)o;
}

/* ---------------------------------------------------------------- SipHash */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_rounds(uint64_t v[4], int n)
{
    while (n--) {
        v[0] += v[1];
        v[1] = ROTL(v[1], 13);
        v[1] ^= v[0];
        v[0] = ROTL(v[0], 32);
        v[2] += v[3];
        v[3] = ROTL(v[3], 16);
        v[3] ^= v[2];
        v[0] += v[3];
        v[3] = ROTL(v[3], 21);
        v[3] ^= v[0];
        v[2] += v[1];
        v[1] = ROTL(v[1], 17);
        v[1] ^= v[2];
        v[2] = ROTL(v[2], 32);
    }
}

static uint64_t le64(const uint8_t *p, size_t n)
{
    uint64_t m = 0;
    for (size_t i = 0; i < n; i++)
        m |= (uint64_t)p[i] << (8 * i);
    return m;
}

uint64_t tg__siphash(const uint64_t k[2], const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t v[4] = {k[0] ^ 0x736f6d6570736575ull, k[1] ^ 0x646f72616e646f6dull,
                     k[0] ^ 0x6c7967656e657261ull,
                     k[1] ^ 0x7465646279746573ull};
    size_t whole = n & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m;
        tg__memcpy(&m, p + i, 8); /* little-endian: wasm32, x86, arm64 */
        v[3] ^= m;
        sip_rounds(v, 2);
        v[0] ^= m;
    }
    uint64_t b = (uint64_t)n << 56 | le64(p + whole, n & 7);
    v[3] ^= b;
    sip_rounds(v, 2);
    v[0] ^= b;
    v[2] ^= 0xff;
    sip_rounds(v, 4);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ---------------------------------------------------------------- keys, options */

void tg__jwt_init(tg__jwt *j, const uint8_t seed[16])
{
    tg__memset(j, 0, offsetof(tg__jwt, scratch));
    j->leeway_s = TG__LEEWAY_DEFAULT;
    j->max_bytes = TG__TOKEN_DEFAULT;
    j->sip[0] = le64(seed, 8);
    j->sip[1] = le64(seed + 8, 8);
    j->gen = 1;
}

/* A generation number wraps after 2^32 flushes; the slots are then
 * cleared so an ancient slot cannot come back to life. */
void tg__jwt_flush(tg__jwt *j)
{
    if (++j->gen != 0)
        return;
    tg__memset(j->jwt_cache, 0, sizeof j->jwt_cache);
    tg__memset(j->clr_cache, 0, sizeof j->clr_cache);
    j->gen = 1;
}

int tg__jwt_add_key(tg__jwt *j, int kind, int alg, tg_str kid,
                    const uint8_t *secret, size_t len)
{
    bool hmac = alg == TG_ALG_HS256;
    if ((kind != TG_KEY_JWT && kind != TG_KEY_CLEARANCE) ||
        kid.len > TG__KID_CAP || (kid.len && !kid.p) || alg < 0 ||
        alg >= TG_ALG_COUNT || (!hmac && (kind != TG_KEY_JWT || len)) ||
        (hmac && (!secret || len == 0 || len > TG__SECRET_CAP)))
        return TG_EINVAL;
    /* A kid names one key; keys without one (a JWK Set may hold several)
     * are told apart by their algorithm. */
    unsigned i = 0;
    while (i < j->n_keys[kind] &&
           !(tg__bytes_eq(j->keys[kind][i].kid, j->keys[kind][i].kid_len, kid.p,
                          kid.len) &&
             (kid.len || j->keys[kind][i].alg == alg)))
        i++;
    if (i == j->n_keys[kind]) {
        if (i == TG__JWT_KEYS)
            return TG_ENOSPC;
        j->n_keys[kind]++;
    }
    tg__jwk *k = &j->keys[kind][i];
    if (hmac)
        tg__hmac_key_init(&k->k, secret, len);
    k->alg = (uint8_t)alg;
    k->kid_len = (uint8_t)kid.len;
    if (kid.len)
        tg__memcpy(k->kid, kid.p, kid.len);
    tg__jwt_flush(j);
    return (int)i;
}

int tg__jwt_configure(tg__jwt *j, const tg_jwt_options *o)
{
    if (!o || o->issuer.len > TG__ISS_CAP || o->audience.len > TG__ISS_CAP ||
        (o->issuer.len && !o->issuer.p) ||
        (o->audience.len && !o->audience.p) ||
        o->max_token_bytes > TG__TOKEN_MAX)
        return TG_EINVAL;
    j->leeway_s = o->leeway_s;
    j->max_bytes = o->max_token_bytes ? o->max_token_bytes : TG__TOKEN_DEFAULT;
    j->iss_len = (uint16_t)o->issuer.len;
    j->aud_len = (uint16_t)o->audience.len;
    if (o->issuer.len)
        tg__memcpy(j->iss, o->issuer.p, o->issuer.len);
    if (o->audience.len)
        tg__memcpy(j->aud, o->audience.p, o->audience.len);
    tg__jwt_flush(j);
    return 0;
}

/* ---------------------------------------------------------------- request parts */

bool tg__jwt_bearer(tg_str a, tg_str *token)
{
    if (a.len < 7 || !tg__ascii_caseeq(a.p, 6, "Bearer", 6) || a.p[6] != ' ')
        return false;
    *token = (tg_str){a.p + 7, a.len - 7};
    return true;
}

/* RFC 6265 §4.2: cookie-pairs "name=value" separated by ";" and
 * optional whitespace; the first pair with the name wins. */
bool tg__cookie_get(tg_str c, const char *name, size_t len, tg_str *value)
{
    size_t i = 0;
    while (i < c.len) {
        while (i < c.len && (c.p[i] == ' ' || c.p[i] == '\t'))
            i++;
        size_t j = i;
        while (j < c.len && c.p[j] != ';')
            j++;
        if (j - i > len && tg__memeq(c.p + i, name, len) &&
            c.p[i + len] == '=') {
            size_t v = i + len + 1;
            while (j > v && (c.p[j - 1] == ' ' || c.p[j - 1] == '\t'))
                j--;
            *value = (tg_str){c.p + v, j - v};
            return true;
        }
        i = j + 1;
    }
    return false;
}

/* ---------------------------------------------------------------- verification */

/* NumericDate (RFC 7519 §2): a JSON number of digits, with or without a
 * fraction (Date.now() / 1000, Python's time.time() + 600), no sign or
 * exponent, at most 2^53 seconds. The fraction is dropped: exp and nbf
 * are whole seconds, so a token may lapse or start up to a second early,
 * well inside the leeway. Anything else, e.g. 99999999999999999999999999,
 * -1 or 1e9, makes the token invalid. */
static int numeric_date(const tg__jmember *m, uint64_t *out)
{
    uint64_t v = 0;
    uint32_t i = 0;
    if (m->type != TG__J_NUMBER)
        return -1;
    for (; i < m->val_len && m->val[i] != '.'; i++) {
        if (m->val[i] < '0' || m->val[i] > '9' || i == 16)
            return -1;
        v = v * 10 + (uint64_t)(m->val[i] - '0');
    }
    /* The JSON reader let through only digits after a '.', and then
     * perhaps an exponent. */
    for (; i < m->val_len; i++)
        if ((m->val[i] | 0x20) == 'e')
            return -1;
    if (v > TG__MAX_NUMERIC_DATE)
        return -1;
    *out = v;
    return 0;
}

static bool str_member_eq(const tg__jmember *m, const char *s, size_t len)
{
    return m && m->type == TG__J_STRING &&
           tg__json_str_eq(m->val, m->val_len, s, len);
}

/* aud is one string or an array of strings (RFC 7519 §4.1.3); it must
 * name the configured audience. An array with a non-string is invalid. */
static bool audience_ok(const tg__jmember *m, const char *aud, size_t len)
{
    if (!m)
        return false;
    if (m->type == TG__J_STRING)
        return tg__json_str_eq(m->val, m->val_len, aud, len);
    if (m->type != TG__J_ARRAY)
        return false;
    size_t pos = 0, n;
    const char *body;
    bool found = false;
    int rc;
    while ((rc = tg__json_next_string(m->val, m->val_len, &pos, &body, &n)) > 0)
        found = found || tg__json_str_eq(body, n, aud, len);
    return rc == 0 && found;
}

/* The member a claim path names (template.h), or NULL: a JSON string
 * names one top-level claim; otherwise segments joined by '.' walk down
 * nested objects. The coordinator checked the path's grammar; whatever
 * it holds, this reads nothing outside it. A nested member lives in *sub
 * (the caller's), valid until the next call. */
static const tg__jmember *claim_get(const tg__json *top, tg_str path,
                                    tg__json *sub)
{
    const tg__json *obj = top;
    const tg__jmember *m = NULL;
    char name[TG__PART_NAME_CAP];
    if (path.len >= 2 && path.p[0] == '"') {
        long n = tg__json_unescape(path.p + 1, path.len - 2, name, sizeof name);
        return n < 0 ? NULL : tg__json_get(top, name, (size_t)n);
    }
    for (size_t i = 0, j; i < path.len; i = j + 1) {
        for (j = i; j < path.len && path.p[j] != '.'; j++)
            ;
        if (m && (m->type != TG__J_OBJECT ||
                  tg__json_parse(m->val, m->val_len, sub) < 0))
            return NULL;
        if (m)
            obj = sub;
        if ((m = tg__json_get(obj, path.p + i, j - i)) == NULL)
            return NULL;
    }
    return m;
}

static void extract(const tg__json *p, const tg__claimset *want, tg__claims *c)
{
    tg__json sub;
    for (unsigned i = 0; i < want->n && i < TG__MAX_CLAIMS; i++) {
        const tg__jmember *m = claim_get(p, want->names[i], &sub);
        long n;
        c->type[i] = TG__CV_ABSENT;
        c->len[i] = 0;
        if (!m)
            continue;
        if (m->type == TG__J_STRING) {
            n = tg__json_unescape(m->val, m->val_len, c->val[i], TG__CLAIM_CAP);
            c->type[i] = n < 0 ? TG__CV_LONG : TG__CV_STRING;
        } else if (m->type == TG__J_NUMBER) {
            n = m->val_len;
            if (n <= TG__CLAIM_CAP)
                tg__memcpy(c->val[i], m->val, (size_t)n);
            c->type[i] = n > TG__CLAIM_CAP ? TG__CV_LONG : TG__CV_NUMBER;
        } else {
            c->type[i] = TG__CV_OTHER;
            n = 0;
        }
        c->len[i] = n > 0 && n <= TG__CLAIM_CAP ? (uint8_t)n : 0;
    }
}

/* The alg member's tg_alg (compared unescaped, so "HS\u0032 56" is
 * HS256), or TG_ALG_COUNT for any other value. */
static int alg_of(const tg__jmember *m)
{
    int a = 0;
    while (a < TG_ALG_COUNT &&
           !tg__json_str_eq(m->val, m->val_len, tg__alg_names + 5 * a, 5))
        a++;
    return a;
}

/* The checks of a token not in the cache, in this order (RFC 7515 §5.2,
 * RFC 8725 §3): exactly three segments, each strict base64url; the
 * header a strict JSON object (see json.h: duplicate members such as two
 * "alg" are refused) with a string "alg", one of tg_alg spelled exactly
 * (else TG__TOK_BAD_ALG: "none" in any case, "hs256", "RS256 "); the
 * signature 1..512 bytes; no "crit" at all (this verifier understands
 * no extension, and an empty list is itself invalid), "kid" absent or a
 * string. The candidate keys: the key with that kid, which must pin the
 * token's alg (an RSA key's kid on an HS256 or ES256 token is algorithm
 * confusion: invalid); without a kid, the first TG__KIDLESS_TRIES keys
 * pinning the token's alg. None: TG__TOK_UNKNOWN_KID. Then the
 * signature: HS256 an HMAC-SHA256 of exactly 32 bytes equal in constant
 * time under some candidate; any other alg the host's verdict (verdict
 * -2: none yet, so TG__TOK_PENDING with *chk filled; -1: no candidate
 * verified; i: key i did, which must be a candidate). Only then the
 * payload: a strict JSON object, exp / nbf / iat NumericDates when
 * present, iss and aud as configured (client JWTs only), exp present
 * (clearance tokens only). exp and nbf are checked against the clock on
 * every call, cached or not, by tg__jwt_check(). Sets and returns
 * c->status. */
static int verify_fresh(tg__jwt *j, int kind, tg_str tok,
                        const tg__claimset *want, tg__claims *c, int verdict,
                        tg__sigcheck *chk)
{
    tg__json js;
    size_t d1 = 0, d2 = 0, dots = 0;
    const tg__jmember *m;
    char kid[TG__KID_CAP];
    long kid_len = -1, hlen, plen, slen;
    uint32_t cand = 0;
    unsigned tries = 0;
    uint64_t t;
    uint8_t mac[32], *sig = j->scratch + SIG_AT;
    int alg;

    c->status = TG__TOK_INVALID;
    c->has_exp = c->has_nbf = false;
    for (size_t i = 0; i < tok.len; i++) {
        if (tok.p[i] != '.')
            continue;
        if (++dots == 1)
            d1 = i;
        else
            d2 = i;
    }
    if (dots != 2 || tok.len - d2 - 1 > SIG_CHARS_MAX)
        return c->status;
    hlen = tg__b64url_decode(tok.p, d1, j->scratch);
    if (hlen <= 0 ||
        tg__json_parse((const char *)j->scratch, (size_t)hlen, &js) < 0 ||
        (m = tg__json_get(&js, "alg", 3)) == NULL || m->type != TG__J_STRING)
        return c->status;
    if ((alg = alg_of(m)) == TG_ALG_COUNT)
        return c->status = TG__TOK_BAD_ALG;
    slen = tg__b64url_decode(tok.p + d2 + 1, tok.len - d2 - 1, sig);
    if (slen <= 0 || tg__json_get(&js, "crit", 4))
        return c->status;
    if ((m = tg__json_get(&js, "kid", 3)) != NULL) {
        if (m->type != TG__J_STRING ||
            (kid_len = tg__json_unescape(m->val, m->val_len, kid, sizeof kid)) <
                0)
            return c->status;
    }
    for (unsigned i = 0; i < j->n_keys[kind]; i++) {
        const tg__jwk *k = &j->keys[kind][i];
        if (kid_len >= 0
                ? tg__bytes_eq(k->kid, k->kid_len, kid, (size_t)kid_len)
                : k->alg == alg && tries++ < TG__KIDLESS_TRIES) {
            if (k->alg != alg)
                return c->status;
            cand |= 1u << i;
        }
    }
    if (!cand)
        return c->status = TG__TOK_UNKNOWN_KID;
    if (alg == TG_ALG_HS256) {
        bool ok = false;
        for (unsigned i = 0; i < j->n_keys[kind] && slen == 32; i++) {
            if (!(cand >> i & 1))
                continue;
            tg__hmac_sha256(&j->keys[kind][i].k, tok.p, d2, mac);
            ok |= tg__ct_equal(mac, sig, 32);
        }
        if (!ok)
            return c->status;
    } else if (verdict == -2) {
        chk->alg = (uint8_t)alg;
        chk->keys = cand;
        chk->input = (tg_str){tok.p, d2};
        chk->sig = (tg_str){(const char *)sig, (size_t)slen};
        return c->status = TG__TOK_PENDING;
    } else if (verdict < 0 || !(cand >> verdict & 1)) {
        return c->status;
    }

    uint8_t *pbuf = j->scratch + hlen;
    plen = tg__b64url_decode(tok.p + d1 + 1, d2 - d1 - 1, pbuf);
    if (plen <= 0 || tg__json_parse((const char *)pbuf, (size_t)plen, &js) < 0)
        return c->status;
    if ((m = tg__json_get(&js, "exp", 3)) != NULL) {
        if (numeric_date(m, &c->exp) < 0)
            return c->status;
        c->has_exp = true;
    }
    if ((m = tg__json_get(&js, "nbf", 3)) != NULL) {
        if (numeric_date(m, &c->nbf) < 0)
            return c->status;
        c->has_nbf = true;
    }
    if ((m = tg__json_get(&js, "iat", 3)) != NULL && numeric_date(m, &t) < 0)
        return c->status;
    if (kind == TG_KEY_JWT) {
        if (j->iss_len &&
            !str_member_eq(tg__json_get(&js, "iss", 3), j->iss, j->iss_len))
            return c->status;
        if (j->aud_len &&
            !audience_ok(tg__json_get(&js, "aud", 3), j->aud, j->aud_len))
            return c->status;
    } else if (!c->has_exp) {
        return c->status;
    }
    extract(&js, want, c);
    return c->status = TG__TOK_OK;
}

/* The token's cache slot, filled: a hit as it stands (only when no
 * verdict is being reported), otherwise verified afresh and, unless the
 * host must check it first, stored. The size cap comes before any work,
 * even hashing. A hit compares the end of the signature segment as text:
 * strict base64url has one spelling per value. */
static int lookup(tg__jwt *j, int kind, tg_str tok, const tg__claimset *want,
                  int verdict, tg__sigcheck *chk, const tg__claims **c)
{
    if (tok.len < TG__SIG_TAIL + 2 || tok.len > j->max_bytes)
        return TG__TOK_INVALID;
    const char *tail = tok.p + tok.len - TG__SIG_TAIL;
    uint64_t tag = tg__siphash(j->sip, tok.p, tok.len);
    tg__cache_slot *s = kind == TG_KEY_JWT
                            ? &j->jwt_cache[tag & (TG__CACHE_JWT - 1)]
                            : &j->clr_cache[tag & (TG__CACHE_CLEARANCE - 1)];
    *c = &s->c;
    if (verdict == -2 && s->gen == j->gen && s->tag == tag &&
        s->len == tok.len && tg__memeq(s->sig, tail, TG__SIG_TAIL))
        return s->c.status;
    s->gen = 0;
    int st = verify_fresh(j, kind, tok, want, &s->c, verdict, chk);
    if (st != TG__TOK_PENDING) {
        s->tag = tag;
        s->len = (uint32_t)tok.len;
        tg__memcpy(s->sig, tail, TG__SIG_TAIL);
        s->gen = j->gen;
    }
    return st;
}

int tg__jwt_check(tg__jwt *j, int kind, tg_str tok, const tg__claimset *want,
                  uint64_t now_ms, const tg__claims **view, tg__sigcheck *chk)
{
    const tg__claims *c;
    int st = lookup(j, kind, tok, want, -2, chk, &c);
    *view = NULL;
    if (st != TG__TOK_OK)
        return st;
    *view = c;
    uint64_t leeway_ms = (uint64_t)j->leeway_s * 1000;
    if (c->has_exp && now_ms >= c->exp * 1000 + leeway_ms)
        return TG__TOK_EXPIRED;
    if (c->has_nbf && now_ms < c->nbf * 1000 &&
        c->nbf * 1000 - now_ms > leeway_ms)
        return TG__TOK_EXPIRED;
    return TG__TOK_OK;
}

int tg__jwt_verdict(tg__jwt *j, tg_str tok, const tg__claimset *want, int key)
{
    const tg__claims *c;
    return lookup(j, TG_KEY_JWT, tok, want,
                  key < 0 || key >= TG__JWT_KEYS ? -1 : key, NULL, &c);
}
