/* mem.h — byte helpers for the freestanding edge core.
 *
 * The wasm build is -ffreestanding (so -fno-builtin) and must not import
 * anything, so the core never calls memcpy/memset/memcmp/strlen. Copies and
 * fills go through the compiler builtins, which lower to memory.copy /
 * memory.fill under -mbulk-memory and to the libc calls natively; comparison
 * is a plain loop (short strings only: names, keys, methods, signatures).
 */
#ifndef TG_MEM_H
#define TG_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define tg__memcpy(d, s, n) __builtin_memcpy((d), (s), (n))
#define tg__memset(d, c, n) __builtin_memset((d), (c), (n))

static inline bool tg__memeq(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return false;
    return true;
}

/* Equal lengths and equal bytes. */
static inline bool tg__bytes_eq(const void *a, size_t alen, const void *b,
                                size_t blen)
{
    return alen == blen && tg__memeq(a, b, alen);
}

/* ASCII case-insensitive equality (HTTP methods). */
static inline bool tg__ascii_caseeq(const char *a, size_t alen, const char *b,
                                    size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'a' && x <= 'z')
            x = (unsigned char)(x - 32);
        if (y >= 'a' && y <= 'z')
            y = (unsigned char)(y - 32);
        if (x != y)
            return false;
    }
    return true;
}

#endif /* TG_MEM_H */
