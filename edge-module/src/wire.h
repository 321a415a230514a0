/* wire.h — the edge's own protobuf codec for proto/tollgate.proto.
 *
 * Only what the edge speaks: it encodes SyncRequest and decodes
 * SyncResponse. The encoder matches protoc-c byte for byte (fields in
 * number order, proto3 defaults omitted); the decoder is strict (truncated
 * input, overlong varints, group or reserved wire types, lengths past the
 * end and known fields with the wrong wire type are errors) and skips
 * unknown fields of every valid wire type.
 */
#ifndef TG_WIRE_H
#define TG_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "tollgate.h"

/* ------------------------------------------------------------ encoding */

/* SyncRequest fields 1-5. */
typedef struct tg__reqhead {
    tg_str edge_id;
    uint64_t seq;
    uint64_t sent_at_ms;
    uint64_t policy_version;
    tg_str module_version;
} tg__reqhead;

/* One KeyCount (SyncRequest field 6). */
typedef struct tg__keycount {
    tg_str quota;
    tg_str key;
    uint64_t admitted;
    uint64_t denied;
    uint64_t challenged;
} tg__keycount;

/* Encoded size of the head fields. */
size_t tg__wire_head_size(const tg__reqhead *h);
/* Writes them; out has tg__wire_head_size() bytes. Returns bytes written. */
size_t tg__wire_put_head(uint8_t *out, const tg__reqhead *h);

/* Encoded size of one KeyCount as a SyncRequest field (tag, length, body). */
size_t tg__wire_count_size(const tg__keycount *kc);
/* Writes it; out has tg__wire_count_size() bytes. Returns bytes written. */
size_t tg__wire_put_count(uint8_t *out, const tg__keycount *kc);

/* A whole SyncRequest: the length, or TG_ENOSPC when it exceeds cap. */
long tg__wire_encode_request(const tg__reqhead *h, const tg__keycount *counts,
                             size_t n, uint8_t *buf, size_t cap);

/* ------------------------------------------------------------ decoding */

/* One KeyState; the strings point into the decoded buffer. */
typedef struct tg__keystate {
    tg_str quota;
    tg_str key;
    tg_str challenge_token;
    int32_t action; /* raw enum value; unknown values are kept */
    uint64_t lease;
    uint64_t reset_ms;
    uint64_t count;
} tg__keystate;

/* SyncResponse scalars; states are read with tg__wire_next_state. */
typedef struct tg__response {
    uint64_t acked_seq;
    uint64_t policy_version;
    uint64_t server_time_ms;
    uint32_t next_sync_ms;
    uint32_t n_states;
    bool degraded;
    bool has_policy; /* a policy field was present */
} tg__response;

/* Decodes and validates a whole SyncResponse. The policy, if present, is
 * decoded into *pol, which the caller has tg__policy_reset(); a policy that
 * is well-formed but exceeds the edge's caps comes back with pol->refused
 * set, not as an error. Returns 0 or TG_EPROTO. */
int tg__wire_decode_response(const uint8_t *buf, size_t len, tg__response *r,
                             tg__policy *pol);

/* Walks the KeyStates of a buffer tg__wire_decode_response() accepted.
 * Start with *pos = 0; returns 1 with *ks filled, or 0 at the end. */
int tg__wire_next_state(const uint8_t *buf, size_t len, size_t *pos,
                        tg__keystate *ks);

#endif /* TG_WIRE_H */
