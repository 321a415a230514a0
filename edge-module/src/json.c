/* json.c — the bounded JSON reader behind JWT validation; see json.h. */
#include "json.h"

#include "mem.h"

#define FNV_BASIS 2166136261u
#define FNV_PRIME 16777619u

typedef struct jp {
    const uint8_t *p;
    const uint8_t *end;
} jp;

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_ws(jp *r)
{
    while (r->p < r->end && is_ws(*r->p))
        r->p++;
}

static const uint8_t *digits(const uint8_t *p, const uint8_t *e)
{
    while (p < e && *p >= '0' && *p <= '9')
        p++;
    return p;
}

static int32_t hex4(const uint8_t *p, const uint8_t *end)
{
    int32_t v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i] | 0x20; /* lower case; digits unchanged */
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* Decodes one code point of a string at *pp, validating as it goes:
 * UTF-8 without overlong forms, encoded surrogates or values past
 * U+10FFFF; escapes of RFC 8259 §7, a \u high surrogate only with a \u
 * low one after it. Returns the code point, -2 at the closing quote, -1
 * on anything malformed. The same function reads names and values back
 * later, so what was validated is exactly what is compared. */
static int32_t cp_next(const uint8_t **pp, const uint8_t *end)
{
    static const char esc[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
    const uint8_t *p = *pp;
    if (p >= end)
        return -1;
    int32_t c = *p++;
    if (c == '"') {
        *pp = p;
        return -2;
    }
    if (c < 0x20)
        return -1;
    if (c == '\\') {
        if (p >= end)
            return -1;
        c = *p++;
        if (c == 'u') {
            if ((c = hex4(p, end)) < 0 || (c & 0xfc00) == 0xdc00)
                return -1;
            p += 4;
            if ((c & 0xfc00) == 0xd800) {
                int32_t lo;
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                    ((lo = hex4(p + 2, end)) & 0xfc00) != 0xdc00)
                    return -1;
                c = 0x10000 + ((c & 0x3ff) << 10) + (lo & 0x3ff);
                p += 6;
            }
        } else {
            unsigned i = 0;
            while (i < sizeof esc - 1 && esc[i] != c)
                i += 2;
            if (i >= sizeof esc - 1)
                return -1;
            c = (uint8_t)esc[i + 1];
        }
    } else if (c >= 0x80) {
        int n = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
        if (c < 0xc2 || c > 0xf4 || end - p < n)
            return -1;
        c &= 0x3f >> n;
        for (int i = 0; i < n; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return -1;
            c = c << 6 | (*p & 0x3f);
        }
        if (c < (n == 1   ? 0x80
                 : n == 2 ? 0x800
                          : 0x10000) ||
            c > 0x10ffff || (c & 0xfffff800) == 0xd800)
            return -1;
    }
    *pp = p;
    return c;
}

/* r->p is at the opening quote. Validates the string up to its closing
 * quote, leaves r->p past it, and hashes its code points (FNV-1a), so two
 * names hash alike exactly when they unescape to the same text. */
static int scan_string(jp *r, uint32_t *hash)
{
    const uint8_t *p = r->p + 1;
    uint32_t h = FNV_BASIS;
    int32_t c;
    while ((c = cp_next(&p, r->end)) >= 0)
        h = (h ^ (uint32_t)c) * FNV_PRIME;
    if (c != -2)
        return -1;
    r->p = p;
    *hash = h;
    return 0;
}

static size_t put_utf8(uint32_t c, uint8_t *o)
{
    if (c < 0x80) {
        o[0] = (uint8_t)c;
        return 1;
    }
    size_t n = c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    for (size_t i = n - 1; i > 0; i--, c >>= 6)
        o[i] = (uint8_t)(0x80 | (c & 0x3f));
    o[0] = (uint8_t)((0xf00u >> n) | c);
    return n;
}

static bool names_eq(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    const uint8_t *ae = a + an, *be = b + bn;
    while (a < ae && b < be)
        if (cp_next(&a, ae) != cp_next(&b, be))
            return false;
    return a == ae && b == be;
}

static int scan_number(jp *r)
{
    const uint8_t *p = r->p, *e = r->end, *d;
    if (p < e && *p == '-')
        p++;
    d = p;
    p = digits(p, e);
    if (p == d || (*d == '0' && p - d > 1))
        return -1;
    if (p < e && *p == '.') {
        d = ++p;
        if ((p = digits(p, e)) == d)
            return -1;
    }
    if (p < e && (*p | 0x20) == 'e') {
        if (++p < e && (*p == '+' || *p == '-'))
            p++;
        d = p;
        if ((p = digits(p, e)) == d)
            return -1;
    }
    r->p = p;
    return 0;
}

static int scan_literal(jp *r, const char *lit, size_t n)
{
    if ((size_t)(r->end - r->p) < n || !tg__memeq(r->p, lit, n))
        return -1;
    r->p += n;
    return 0;
}

/* The parser's state: the input, and the names of the objects open now
 * (each object's own names from its frame index up). */
typedef struct jstate {
    jp r;
    unsigned npool;
    tg__json *out;
    uint32_t hash[TG__JSON_MAX_NAMES];
    const uint8_t *name[TG__JSON_MAX_NAMES];
    uint32_t len[TG__JSON_MAX_NAMES];
} jstate;

static int value(jstate *s, unsigned depth, tg__jmember *m);

/* An object or array at r.p, depth deep (the top object is 1). Recursion
 * is bounded by TG__JSON_MAX_DEPTH, so hostile nesting costs a few
 * hundred bytes of stack at most. Top-level members are recorded. */
static int container(jstate *s, unsigned depth)
{
    jp *r = &s->r;
    uint8_t close = *r->p == '{' ? '}' : ']';
    unsigned frame = s->npool;
    if (depth > TG__JSON_MAX_DEPTH)
        return -1;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        return 0;
    }
    for (;;) {
        tg__jmember *m = NULL;
        if (close == '}') {
            uint32_t h;
            skip_ws(r);
            const uint8_t *name = r->p + 1;
            if (r->p >= r->end || *r->p != '"' || scan_string(r, &h) < 0)
                return -1;
            uint32_t len = (uint32_t)(r->p - 1 - name);
            for (unsigned i = frame; i < s->npool; i++)
                if (s->hash[i] == h &&
                    names_eq(s->name[i], s->len[i], name, len))
                    return -1;
            if (s->npool == TG__JSON_MAX_NAMES)
                return -1;
            s->hash[s->npool] = h;
            s->name[s->npool] = name;
            s->len[s->npool++] = len;
            if (depth == 1) {
                if (s->out->n == TG__JSON_MAX_MEMBERS)
                    return -1;
                m = &s->out->m[s->out->n++];
                m->name = (const char *)name;
                m->name_len = len;
                m->hash = h;
            }
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':')
                return -1;
            r->p++;
        }
        if (value(s, depth, m) < 0)
            return -1;
        skip_ws(r);
        if (r->p >= r->end)
            return -1;
        uint8_t c = *r->p++;
        if (c == close)
            break;
        if (c != ',')
            return -1;
    }
    s->npool = frame;
    return 0;
}

static int value(jstate *s, unsigned depth, tg__jmember *m)
{
    jp *r = &s->r;
    uint32_t h;
    uint8_t type;
    skip_ws(r);
    if (r->p >= r->end)
        return -1;
    const uint8_t *v = r->p;
    uint8_t c = *v;
    if (c == '{' || c == '[') {
        if (container(s, depth + 1) < 0)
            return -1;
        type = c == '{' ? TG__J_OBJECT : TG__J_ARRAY;
    } else if (c == '"') {
        if (scan_string(r, &h) < 0)
            return -1;
        type = TG__J_STRING;
    } else if (c == 't' || c == 'f' || c == 'n') {
        type = c == 't' ? TG__J_TRUE : c == 'f' ? TG__J_FALSE : TG__J_NULL;
        if (scan_literal(r,
                         c == 't'   ? "true"
                         : c == 'f' ? "false"
                                    : "null",
                         c == 'f' ? 5 : 4) < 0)
            return -1;
    } else {
        if (scan_number(r) < 0)
            return -1;
        type = TG__J_NUMBER;
    }
    if (m) {
        bool str = type == TG__J_STRING;
        m->type = type;
        m->val = (const char *)v + str;
        m->val_len = (uint32_t)(r->p - v) - (str ? 2 : 0);
    }
    return 0;
}

int tg__json_parse(const char *p, size_t n, tg__json *out)
{
    jstate s;
    s.r = (jp){(const uint8_t *)p, (const uint8_t *)p + n};
    s.npool = 0;
    s.out = out;
    out->n = 0;
    skip_ws(&s.r);
    if (s.r.p >= s.r.end || *s.r.p != '{' || container(&s, 1) < 0)
        return -1;
    skip_ws(&s.r);
    return s.r.p == s.r.end ? 0 : -1;
}

bool tg__json_str_eq(const char *body, size_t n, const char *s, size_t len)
{
    char buf[TG__JSON_EQ_CAP];
    return len <= sizeof buf &&
           tg__json_unescape(body, n, buf, len) == (long)len &&
           tg__memeq(buf, s, len);
}

const tg__jmember *tg__json_get(const tg__json *j, const char *name, size_t len)
{
    uint32_t h = FNV_BASIS;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * FNV_PRIME;
    for (unsigned i = 0; i < j->n; i++)
        if (j->m[i].hash == h &&
            tg__json_str_eq(j->m[i].name, j->m[i].name_len, name, len))
            return &j->m[i];
    return NULL;
}

long tg__json_unescape(const char *body, size_t n, char *out, size_t cap)
{
    const uint8_t *p = (const uint8_t *)body, *e = p + n;
    size_t off = 0;
    while (p < e) {
        uint8_t u[4];
        size_t k = put_utf8((uint32_t)cp_next(&p, e), u);
        if (k > cap - off)
            return -1;
        tg__memcpy(out + off, u, k);
        off += k;
    }
    return (long)off;
}

int tg__json_next_string(const char *arr, size_t n, size_t *pos,
                         const char **body, size_t *len)
{
    const uint8_t *p = (const uint8_t *)arr + (*pos ? *pos : 1),
                  *e = (const uint8_t *)arr + n;
    while (p < e && (is_ws(*p) || *p == ','))
        p++;
    if (p >= e || *p == ']') {
        *pos = n;
        return 0;
    }
    if (*p != '"')
        return -1;
    const uint8_t *b = ++p;
    while (*p != '"')
        p += *p == '\\' ? 2 : 1;
    *body = (const char *)b;
    *len = (size_t)(p - b);
    *pos = (size_t)(p + 1 - (const uint8_t *)arr);
    return 1;
}
