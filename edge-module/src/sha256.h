/* sha256.h — SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) for the edge
 * core, which may not import a crypto library into freestanding wasm.
 *
 * HMAC keys are prepared once (tg__hmac_key_init): the inner and outer
 * padded key blocks are compressed at provisioning time, so one MAC costs
 * only the message blocks and two finalisations.
 */
#ifndef TG_SHA256_H
#define TG_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct tg__sha256_ctx {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    uint8_t buf[64];
} tg__sha256_ctx;

void tg__sha256_init(tg__sha256_ctx *c);
void tg__sha256_update(tg__sha256_ctx *c, const void *p, size_t n);
void tg__sha256_final(tg__sha256_ctx *c, uint8_t out[32]);
void tg__sha256(const void *p, size_t n, uint8_t out[32]);

/* The chaining values after the first block of the inner and outer hash. */
typedef struct tg__hmac_key {
    uint32_t inner[8];
    uint32_t outer[8];
} tg__hmac_key;

/* Keys longer than the 64-byte block are hashed first (RFC 2104). */
void tg__hmac_key_init(tg__hmac_key *k, const uint8_t *key, size_t len);
void tg__hmac_sha256(const tg__hmac_key *k, const void *msg, size_t n,
                     uint8_t out[32]);

/* Equal without an early exit: the time does not say where they differ. */
int tg__ct_equal(const uint8_t *a, const uint8_t *b, size_t n);

#endif /* TG_SHA256_H */
