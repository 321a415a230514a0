/* json.h — a bounded, validating JSON reader for JWS headers and claims.
 *
 * tg__json_parse() checks a whole document against RFC 8259 and the
 * stricter rules a token needs (RFC 7515 §4, RFC 8725 §3.5): the top level
 * is an object, strings are valid UTF-8 (no overlong forms, no encoded
 * surrogates, nothing past U+10FFFF) with valid escapes (a \u surrogate
 * must be a high one followed by a low one), no object anywhere has two
 * members with the same name (compared after unescaping), nesting is at
 * most TG__JSON_MAX_DEPTH deep, and nothing but whitespace follows. It
 * allocates nothing; the top-level members are recorded as spans of the
 * input, which must outlive the tg__json.
 *
 * Work is linear in the input: duplicate names are found by comparing
 * 32-bit hashes of the unescaped names of the object being read (at most
 * TG__JSON_MAX_NAMES names open at once), bytes only on a hash match.
 */
#ifndef TG_JSON_H
#define TG_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG__JSON_MAX_DEPTH   16  /* nested objects and arrays, top included */
#define TG__JSON_MAX_MEMBERS 32  /* top-level members */
#define TG__JSON_MAX_NAMES   128 /* member names of all objects open at once */

enum {
    TG__J_STRING = 1,
    TG__J_NUMBER,
    TG__J_TRUE,
    TG__J_FALSE,
    TG__J_NULL,
    TG__J_OBJECT,
    TG__J_ARRAY
};

/* One top-level member. For a string, val is the body between the quotes
 * (still escaped); for anything else, the value's whole text. */
typedef struct tg__jmember {
    const char *name; /* between the quotes, still escaped */
    const char *val;
    uint32_t name_len;
    uint32_t val_len;
    uint32_t hash; /* of the unescaped name */
    uint8_t type;  /* TG__J_* */
} tg__jmember;

typedef struct tg__json {
    tg__jmember m[TG__JSON_MAX_MEMBERS];
    unsigned n;
} tg__json;

/* 0, or -1 when the input is not such a document. */
int tg__json_parse(const char *p, size_t n, tg__json *out);

/* The top-level member called name (ASCII, unescaped), or NULL. */
const tg__jmember *tg__json_get(const tg__json *j, const char *name,
                                size_t len);

/* Unescapes a string body the parser accepted into out (decoded text is
 * never longer than the body). Returns the decoded length, or -1 when it
 * would exceed cap (out then holds a prefix). */
long tg__json_unescape(const char *body, size_t n, char *out, size_t cap);

/* Whether the string body, unescaped, equals s (bytes, at most
 * TG__JSON_EQ_CAP of them: longer never equals). */
#define TG__JSON_EQ_CAP 256
bool tg__json_str_eq(const char *body, size_t n, const char *s, size_t len);

/* Walks the string elements of an array a parser accepted (its whole
 * text). Start with *pos = 0; returns 1 with the next element's body, 0 at
 * the end, -1 at an element that is not a string. */
int tg__json_next_string(const char *arr, size_t n, size_t *pos,
                         const char **body, size_t *len);

#endif /* TG_JSON_H */
