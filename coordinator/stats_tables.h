/* stats_tables.h — the tables of the /v1/stats recorder (stats.c) that
 * its reader (stats_read.c) merges with Redis: limits, the local tables'
 * rows, a snapshot of them, and the few functions the reader calls.
 * Private to those two files; everything else goes through tollgated.h.
 */
#ifndef STATS_TABLES_H
#define STATS_TABLES_H

#include "tollgated.h"

#define POINTS          900      /* 1 s buckets: 15 minutes */
#define EDGES_MAX       4096     /* edges tracked here; a power of two */
#define EDGE_PROBES     64
#define EDGES_SHOWN     500
#define EDGE_FORGET_MS  600000u  /* silent this long: gone */
#define EDGE_STALE_MIN_MS 5000u
#define VERSION_MAX     32       /* bytes of module_version kept */
#define CH_LOCAL        64       /* challenged pairs tracked here */
#define CH_SHOWN        50
#define CH_KEPT         100      /* in Redis (stats.lua trims to it) */
#define FLUSH_MS        1000u
#define ROW_MAX         128      /* an edge's row in Redis */
#define CH_ID_MAX       (32 + 1 + CO_QUOTA_NAME_MAX + 1)
#define TOP_LOCAL       (2 * CO_STATS_TOP_K)  /* per quota: two windows */

#define NKEYS 5    /* stats.lua's KEYS: edges, edgez, ch, chz, prefix */

struct bucket {
    uint64_t sec;                         /* unix second */
    uint64_t n[CO_STATS_OUTCOMES];
    uint64_t sent[CO_STATS_OUTCOMES];     /* of n, already in Redis */
};

struct edge_row {
    char id[CO_EDGE_ID_MAX + 1];          /* "": never used */
    char module_version[VERSION_MAX + 1];
    uint64_t last_ms, lag_ms, policy_version;
    bool degraded;
    bool dirty;                           /* changed since flushed */
};

struct top_entry {
    char key[CO_KEY_MAX + 1];
    uint64_t idx;                         /* window index of est */
    uint64_t est;                         /* largest estimate in idx */
    uint64_t sent;                        /* est already in Redis */
    bool used;
};

struct top_slot {
    /* the lock-free filter: tag = hash of (name, window_ms); keys of that
     * quota in window thr_idx with an estimate <= thr cannot enter */
    atomic_ullong tag, thr_idx, thr;
    char name[CO_QUOTA_NAME_MAX + 1];     /* under mu, as below */
    uint64_t window_ms;
    struct top_entry e[TOP_LOCAL];
};

/* A top_slot without its atomics, for snapshots. */
struct top_copy {
    size_t slot;
    char name[CO_QUOTA_NAME_MAX + 1];
    uint64_t window_ms;
    struct top_entry e[TOP_LOCAL];
};

struct ch_entry {
    char quota[CO_QUOTA_NAME_MAX + 1];    /* "": free */
    uint8_t kh[16];
    char key[CO_KEY_MAX + 1];             /* "" until an issue names it */
    char edge[CO_EDGE_ID_MAX + 1];        /* the last issue's */
    uint64_t first_ms, last_ms, issued, solved;
    uint64_t sent_issued, sent_solved, sent_last_ms;   /* in Redis */
};

/* Everything local, copied under mu, so Redis is talked to without it. */
struct snapshot {
    struct bucket ring[POINTS];
    struct edge_row *edges;
    size_t *edge_slot;
    size_t n_edges;
    struct top_copy *tops;
    size_t n_tops;
    struct ch_entry ch[CH_LOCAL];
};

/* A copy of the local tables (edges silent for EDGE_FORGET_MS left out),
 * or NULL when out of memory; co_stats__snapshot_free() releases it. */
struct snapshot *co_stats__snapshot_take(uint64_t now_ms);
void co_stats__snapshot_free(struct snapshot *sn);
/* stats.lua's KEYS, NKEYS of them, appended to c. */
void co_stats__call_keys(struct co_script_call *c);
/* A challenged pair with issues or solves Redis does not have yet. */
bool co_stats__ch_due(const struct ch_entry *c);
/* The flush lock within ms (false: not got), and its release. */
bool co_stats__flush_lock(unsigned ms);
void co_stats__flush_unlock(void);
unsigned co_stats__timeout_ms(void);

#endif
