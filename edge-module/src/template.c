/* template.c — parsing key templates and building keys; see template.h. */
#include "template.h"

#include "keys.h"
#include "mem.h"
#include "sha256.h"

/* Header names: [a-z0-9_-]. */
static bool header_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Part spellings, indexed by TG__PART_* - 1; the last two take a name. */
static const char part_word[5][8] = {"ip", "route", "host",
                                     "claim:", "header:"};
static const uint8_t part_len[5] = {2, 5, 4, 6, 7};

/* The names are added to a copy of the table, installed only when the
 * whole template parsed. */
int tg__template_parse(const char *s, size_t n, tg__template *t,
                       tg__names *names)
{
    tg_str part[TG__MAX_PARTS];
    size_t start = 0;
    tg__template r = {0};
    tg__names nm = *names;

    *t = r;
    if (n == 0 || n > TG__TEMPLATE_CAP)
        return -1;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '+')
            continue;
        const char *p = s + start;
        size_t len = i - start, at = 0;
        unsigned kind = 0;
        start = i + 1;
        for (unsigned k = 0; k < 5 && !kind; k++) {
            at = part_len[k];
            if ((k < 3 ? len == at : len > at) &&
                tg__memeq(p, part_word[k], at))
                kind = k + 1;
        }
        if (!kind || r.n == TG__MAX_PARTS || len - at > TG__PART_NAME_CAP)
            return -1;
        /* A claim path's grammar is the coordinator's to check (its
         * reader here, claim_get() in jwt.c, is safe on any bytes). */
        for (size_t k = at; k < len && kind == TG__PART_HEADER; k++)
            if (!header_char(p[k]))
                return -1;
        for (unsigned k = 0; k < r.n; k++)
            if (tg__bytes_eq(part[k].p, part[k].len, p, len))
                return -1;
        part[r.n] = (tg_str){p, len};
        if (kind >= TG__PART_CLAIM) {
            unsigned w = kind - TG__PART_CLAIM, x = 0;
            tg_str name = {p + at, len - at};
            while (x < nm.n[w] &&
                   !tg__bytes_eq(nm.name[w][x].p, nm.name[w][x].len, name.p,
                                 name.len))
                x++;
            if (x == nm.n[w]) {
                if (x == (w ? TG_MAX_HEADERS : TG__MAX_CLAIMS))
                    return -1;
                nm.name[w][nm.n[w]++] = name;
            }
            r.idx[r.n] = (uint8_t)x;
            r.claims |= !w;
        }
        r.kind[r.n++] = (uint8_t)kind;
    }
    *names = nm;
    *t = r;
    return 0;
}

/* ---------------------------------------------------------------- building */

/* Appends to the key while it fits in TG__KEY_CAP; past that, everything
 * (what was written, then the rest) goes into a SHA-256 instead, so a
 * long key costs no buffer and no second pass. */
typedef struct kw {
    char *out;
    size_t len;
    bool hashing;
    tg__sha256_ctx h;
} kw;

static void kw_put(kw *w, const char *s, size_t n)
{
    if (!w->hashing) {
        if (n <= TG__KEY_CAP - w->len) {
            tg__memcpy(w->out + w->len, s, n);
            w->len += n;
            return;
        }
        w->hashing = true;
        tg__sha256_init(&w->h);
        tg__sha256_update(&w->h, w->out, w->len);
    }
    tg__sha256_update(&w->h, s, n);
}

static void kw_value(kw *w, const char *v, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] != '%' && v[i] != '|')
            continue;
        kw_put(w, v + run, i - run);
        kw_put(w, v[i] == '%' ? "%25" : "%7C", 3);
        run = i + 1;
    }
    kw_put(w, v + run, n - run);
}

static bool header_value(const tg_request *req, tg_str name, tg_str *v)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        const tg_header *h = &req->headers[i];
        if (tg__bytes_eq(h->name.p, h->name.len, name.p, name.len)) {
            *v = h->value;
            return true;
        }
    }
    return false;
}

int tg__template_key(const tg__template *t, const tg__names *names,
                     const tg_request *req, const tg__claims *claims, char *out,
                     size_t *len)
{
    kw w;
    w.out = out;
    w.len = 0;
    w.hashing = false;
    for (unsigned k = 0; k < t->n; k++) {
        tg_str v = {"", 0};
        unsigned i = t->idx[k];
        switch (t->kind[k]) {
        case TG__PART_IP: v = req->client_ip; break;
        case TG__PART_ROUTE: v = req->path; break;
        case TG__PART_HOST: v = req->host; break;
        case TG__PART_CLAIM:
            if (!claims || claims->type[i] == TG__CV_ABSENT ||
                claims->type[i] == TG__CV_OTHER)
                return TG__TPL_SKIP;
            if (claims->type[i] == TG__CV_LONG)
                return TG__TPL_BAD;
            v = (tg_str){claims->val[i], claims->len[i]};
            if (v.len == 0)
                return TG__TPL_SKIP;
            break;
        default:
            if (!header_value(req, names->name[TG__NAMES_HEADER][i], &v) ||
                v.len == 0)
                return TG__TPL_SKIP;
            break;
        }
        if (v.len == 0)
            return TG__TPL_BAD;
        if (k)
            kw_put(&w, "|", 1);
        kw_value(&w, v.p, v.len);
    }
    if (w.hashing) {
        uint8_t d[32];
        tg__sha256_final(&w.h, d);
        out[0] = '~';
        out[1] = 'h';
        for (int k = 0; k < 16; k++) {
            out[2 + 2 * k] = "0123456789abcdef"[d[k] >> 4];
            out[3 + 2 * k] = "0123456789abcdef"[d[k] & 15];
        }
        *len = 34;
        return TG__TPL_OK;
    }
    if (w.len == 0 || out[0] == '~')
        return TG__TPL_BAD;
    for (size_t k = 0; k < w.len; k++)
        if (out[k] == '\0')
            return TG__TPL_BAD;
    *len = w.len;
    return TG__TPL_OK;
}
