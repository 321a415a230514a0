/* keys.h — the fixed-size (quota, key) table.
 *
 * Open addressing over a power-of-two array laid out at init; a key lives
 * within TG__PROBE slots of its home slot, so lookups are bounded and
 * deletion needs no tombstones (a lookup scans the whole probe window).
 * When the window is full, the least recently used entry not in the batch
 * in flight is evicted. Its pending counts are not lost: they move to the
 * spill list, a fixed array of TG__SPILL (quota, key, counts) records that
 * the next batch sends as ordinary KeyCounts. Only when the spill list is
 * full are entries with pending counts kept, and a key that finds no room
 * is counted under the quota's overflow pseudo-key (see edge.c). Entries
 * in the batch in flight are never evicted (see tg__table_insert).
 */
#ifndef TG_KEYS_H
#define TG_KEYS_H

#include <stdbool.h>
#include <stdint.h>

#include "bucket.h"
#include "tollgate.h"

#define TG__KEY_CAP   96  /* key bytes kept inline */
#define TG__TOKEN_CAP 512 /* challenge token bytes kept inline */
#define TG__PROBE     8   /* slots a key may be from its home slot */
#define TG__MAX_SLOTS (1u << 20)
#define TG__NO_QUOTA  0xff /* entry.quota of a free slot */
#define TG__SPILL     256  /* evicted keys' counts awaiting a batch */

enum {
    TG__C_ADMITTED = 0,
    TG__C_DENIED = 1,
    TG__C_CHALLENGED = 2,
    TG__C_N = 3
};

/* Counts are kept in two generations so a retried sync resends exactly what
 * it sent before: infl is frozen into the batch in flight until the
 * coordinator acknowledges it, pend collects what happened since. */
typedef struct tg__counts {
    uint64_t pend[TG__C_N];
    uint64_t infl[TG__C_N];
} tg__counts;

enum {
    TG__F_WANT = 1,  /* ask the coordinator for a lease at the next sync */
    TG__F_BATCH = 2, /* part of the batch in flight */
    TG__F_BUSY = 4   /* in use by the tg_verify() running now */
};

typedef struct tg__entry {
    tg__bucket b;
    tg__counts c;
    uint64_t last_used_ms;
    uint32_t hash;
    uint16_t token_len;
    uint8_t quota; /* index into the enforced policy; TG__NO_QUOTA: free */
    uint8_t key_len;
    uint8_t flags; /* TG__F_* */
    char key[TG__KEY_CAP];
} tg__entry;

/* The counts of an evicted entry until the coordinator acknowledged them.
 * The array is kept compact ([0, n_spill) in use, in eviction order) and
 * only compacted when a batch is acknowledged or a policy installed, so
 * the batch in flight keeps its order across retries. */
typedef struct tg__spilled {
    tg__counts c;
    uint8_t quota; /* TG__NO_QUOTA: to be dropped at the next compaction */
    uint8_t key_len;
    uint8_t batch; /* in the batch in flight */
    char key[TG__KEY_CAP];
} tg__spilled;

/* Challenge tokens live beside the entries, TG__TOKEN_CAP bytes per slot,
 * so the entries that every lookup and every sync scan walk stay small,
 * and the token pages are only touched when a key is challenged. */
typedef struct tg__table {
    tg__entry *slot;
    tg__spilled *spill; /* TG__SPILL records */
    uint32_t n_spill;
    char *tokens;   /* slots × TG__TOKEN_CAP */
    uint32_t mask;  /* slots - 1 */
    uint32_t probe; /* min(TG__PROBE, slots) */
    uint32_t used;
    uint32_t wants; /* entries with TG__F_WANT, so tg_sync_due is O(1) */
} tg__table;

/* Slots for max_keys keys: the next power of two, at least TG__PROBE;
 * 0 when max_keys exceeds TG__MAX_SLOTS. */
uint32_t tg__table_slots(uint32_t max_keys);

/* Bytes of memory a table of n slots needs (entries, spill, tokens). */
size_t tg__table_bytes(uint32_t n);

/* Lays the table out in mem (tg__table_bytes(n), aligned to 8) and marks
 * every slot free. */
void tg__table_init(tg__table *t, void *mem, uint32_t n);

/* The entry's challenge token storage (TG__TOKEN_CAP bytes). */
char *tg__entry_token(const tg__table *t, const tg__entry *en);

/* The hash covers the quota's name, not its index, so an entry stays in
 * its slot when a new policy renumbers the quotas. */
uint32_t tg__key_hash(tg_str quota_name, tg_str key);

tg__entry *tg__table_find(const tg__table *t, uint32_t hash, unsigned quota,
                          tg_str key);

/* A fresh entry (counts zero, no flags, bucket for the caller to set up),
 * or NULL when every slot of the probe window is taken by an entry that
 * may not be evicted: in the batch in flight, busy, or holding pending
 * counts while the spill list is full. The caller then accounts the
 * request elsewhere. */
tg__entry *tg__table_insert(tg__table *t, uint32_t hash, unsigned quota,
                            tg_str key, uint64_t now_ms);

void tg__table_remove(tg__table *t, tg__entry *en);

/* Drops the spilled records that are acknowledged or marked dropped. */
void tg__spill_compact(tg__table *t);

/* Sets or clears TG__F_WANT, keeping t->wants in step. */
void tg__entry_want(tg__table *t, tg__entry *en, bool want);

/* Any count not yet acknowledged by the coordinator. */
bool tg__counts_unacked(const tg__counts *c);
bool tg__counts_pending(const tg__counts *c);
/* pend moves into infl (the batch is frozen). */
void tg__counts_freeze(tg__counts *c);
/* The coordinator applied infl. */
void tg__counts_ack(tg__counts *c);

#endif /* TG_KEYS_H */
