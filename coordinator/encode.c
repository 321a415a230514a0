/* encode.c — the text encodings several subsystems share: base64url for
 * tokens, hex for secrets, percent-escapes for URLs and Redis key names,
 * and the name hash of the in-memory tables. Pure functions, no state. */
#include "tollgated.h"

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encode len bytes, no padding. Returns chars written (NUL added), or -1
 * when out is too small. */
long co_b64url_encode(const uint8_t *in, size_t len, char *out,
                      size_t outlen)
{
    size_t o = 0, i = 0;

    if ((len * 4 + 2) / 3 + 1 > outlen)
        return -1;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 |
                     in[i + 2];

        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
        out[o++] = b64url[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;

        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
    }
    out[o] = '\0';
    return (long)o;
}

static int b64url_value(char c)
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

/* Strict decode: base64url alphabet only, no padding, and the unused low
 * bits of the last character must be zero, so every token has exactly one
 * spelling. Returns bytes written or -1. */
long co_b64url_decode(const char *in, size_t len, uint8_t *out,
                      size_t outlen)
{
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;

    if (len % 4 == 1 || len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0) > outlen)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value(in[i]);

        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1;
    return (long)o;
}

int co_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Lower-case hex of len bytes (NUL added): Redis key names and captcha
 * responses. Returns chars written, or -1 when out is too small. */
long co_hex_encode(const uint8_t *in, size_t len, char *out, size_t outlen)
{
    static const char digits[] = "0123456789abcdef";

    if (outlen == 0 || len > (outlen - 1) / 2)
        return -1;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
    return (long)(2 * len);
}

long co_hex_decode(const char *in, size_t len, uint8_t *out, size_t outlen)
{
    if (len % 2 != 0 || len / 2 > outlen)
        return -1;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = co_hex_digit(in[2 * i]), lo = co_hex_digit(in[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return (long)(len / 2);
}

/* Decode %XX escapes of s[0..len) into out (NUL-terminated); refuses a
 * truncated escape, a decoded NUL and anything longer than outlen - 1.
 * The router decodes path parameters with it, the Redis URL parser its
 * credentials. */
int co_percent_decode(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (c == '%') {
            int hi, lo;

            if (i + 2 >= len)
                return CO_EINVAL;
            hi = co_hex_digit(s[i + 1]);
            lo = co_hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0)
                return CO_EINVAL;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= outlen || c == '\0')
            return CO_EINVAL;
        out[o++] = c;
    }
    out[o] = '\0';
    return CO_OK;
}

static bool percent_plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
           c == '-';
}

/* Redis key names (redis_keys.c) and stats.lua's quota parts are encoded
 * with it, so '{', '}', '|' and '%' never appear raw in a hash tag. */
int co_percent_encode(const char *s, size_t len, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    if (outlen < 3 * len + 1)
        return CO_ETOOBIG;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (percent_plain(c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return (int)o;
}

/* FNV-1a, 64 bits: fast on short names and spread well enough for the
 * open-addressing tables of metrics.c (quotas) and stats.c (edges, top
 * slots), whose sizes are powers of two. */
uint64_t co_name_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h != 0 ? h : 1;
}
