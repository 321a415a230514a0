/* sha256.c — SHA-256 and HMAC-SHA256; see sha256.h.
 *
 * Written for -Oz wasm and native alike: one compression function with
 * the message schedule in a 64-word array and the rounds in a plain loop
 * over registers (no per-byte calls; the big-endian loads are inline).
 */
#include "sha256.h"

#include "mem.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t IV[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++, p += 4)
        w[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
               (uint32_t)p[2] << 8 | p[3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5],
             g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) +
                      ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) +
                      ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

void tg__sha256_init(tg__sha256_ctx *c)
{
    tg__memcpy(c->h, IV, sizeof IV);
    c->len = 0;
}

/* Whole blocks are compressed straight from the input; only a partial
 * block is copied. */
void tg__sha256_update(tg__sha256_ctx *c, const void *data, size_t n)
{
    const uint8_t *p = data;
    size_t have = (size_t)(c->len & 63);
    c->len += n;
    if (have) {
        size_t take = 64 - have < n ? 64 - have : n;
        tg__memcpy(c->buf + have, p, take);
        p += take;
        n -= take;
        if (have + take < 64)
            return;
        compress(c->h, c->buf);
    }
    for (; n >= 64; p += 64, n -= 64)
        compress(c->h, p);
    if (n)
        tg__memcpy(c->buf, p, n);
}

void tg__sha256_final(tg__sha256_ctx *c, uint8_t out[32])
{
    static const uint8_t pad[64] = {0x80};
    uint8_t len[8];
    uint64_t bits = c->len << 3;
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    tg__sha256_update(c, pad, 1 + ((55 - c->len) & 63));
    tg__sha256_update(c, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->h[i];
    }
}

void tg__sha256(const void *p, size_t n, uint8_t out[32])
{
    tg__sha256_ctx c;
    tg__sha256_init(&c);
    tg__sha256_update(&c, p, n);
    tg__sha256_final(&c, out);
}

void tg__hmac_key_init(tg__hmac_key *k, const uint8_t *key, size_t len)
{
    uint8_t block[64], pad[64];
    tg__memset(block, 0, sizeof block);
    if (len > 64)
        tg__sha256(key, len, block);
    else if (len)
        tg__memcpy(block, key, len);
    for (int r = 0; r < 2; r++) {
        uint32_t *h = r ? k->outer : k->inner;
        for (int i = 0; i < 64; i++)
            pad[i] = block[i] ^ (r ? 0x5c : 0x36);
        tg__memcpy(h, IV, sizeof IV);
        compress(h, pad);
    }
}

void tg__hmac_sha256(const tg__hmac_key *k, const void *msg, size_t n,
                     uint8_t out[32])
{
    tg__sha256_ctx c;
    tg__memcpy(c.h, k->inner, sizeof c.h);
    c.len = 64;
    tg__sha256_update(&c, msg, n);
    tg__sha256_final(&c, out);
    tg__memcpy(c.h, k->outer, sizeof c.h);
    c.len = 64;
    tg__sha256_update(&c, out, 32);
    tg__sha256_final(&c, out);
}

int tg__ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}
