/* cluster.h — the Redis Cluster router (cluster.c).
 *
 * Debian's hiredis 0.14 has no cluster client, so tollgated routes script
 * calls itself: key slots (CRC16/XMODEM with hash tags), a slot map from
 * CLUSTER SLOTS, one connection per node, calls grouped per node and
 * pipelined, and the cluster's answers handled as the cluster
 * specification says (MOVED, ASK, TRYAGAIN, CLUSTERDOWN), plus NOSCRIPT
 * (script caches are not replicated). A struct co_cluster is owned by one
 * thread, like every hiredis context here.
 *
 * Kept in its own header until the router is wired into tollgated; then
 * this section moves to the end of tollgated.h.
 */
#ifndef CO_CLUSTER_H
#define CO_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "tollgated.h"

#define CO_CLUSTER_SLOTS      16384
#define CO_CLUSTER_NODES_MAX  256     /* nodes one router will remember */

/* The hash slot of a key (0..16383): CRC16/XMODEM of the key, or of the
 * first "{...}" with at least one byte inside, modulo 16384. */
unsigned co_cluster_keyslot(const char *key, size_t len);

/* How a router reaches the cluster. Seeds are "host:port" ("[v6]:port"
 * too); user/password apply to every node (AUTH), as in a cluster every
 * node shares them. */
struct co_cluster_config {
    const char *const *seeds;
    size_t nseeds;
    const char *user;           /* NULL or "": AUTH with the password only */
    const char *password;       /* NULL or "": no AUTH */
    unsigned connect_timeout_ms;/* a refresh's or a connect's own bound */
    unsigned refresh_ms;        /* periodic CLUSTER SLOTS; 0 = 10 s */
};

/* What a seed is. */
#define CO_CLUSTER_MODE_SINGLE   0   /* cluster support disabled */
#define CO_CLUSTER_MODE_CLUSTER  1

/* Ask the seeds (in order, the first that answers decides) whether they
 * run a cluster: CLUSTER SLOTS answering "ERR This instance has cluster
 * support disabled" means single-node mode. Returns CO_CLUSTER_MODE_*, or
 * CO_EREDIS with err when no seed answered sensibly (each seed's reason,
 * in one line). */
int co_cluster_detect(const struct co_cluster_config *cfg, char *err,
                      size_t errlen);

struct co_cluster;

/* A router for the calling thread. Copies cfg (seeds included); connects
 * lazily. Returns NULL only when out of memory. Free with
 * co_cluster_free(). */
struct co_cluster *co_cluster_new(const struct co_cluster_config *cfg);
void co_cluster_free(struct co_cluster *cc);

/* One script call. KEYS (argv[0..nkeys)) must all hash to one slot and
 * nkeys must be >= 1; ARGV follows. sha is the script's SHA1 in hex and
 * script its body, loaded with SCRIPT LOAD on a node that answers
 * NOSCRIPT. With sha NULL the call is a plain command instead: argv holds
 * all of it (nargs entries, the name first) and its keys are
 * argv[1..1+nkeys) (SET, GET, HGETALL, ZADD, ...). reply is set by co_cluster_run(): the final reply (which may
 * be an error reply such as a script error or OOM: the call reached its
 * master and the answer is the script's), freed by the caller with
 * freeReplyObject(); NULL when the call has no answer (see the return
 * codes). */
struct redisReply;
struct co_cluster_call {
    const char *sha;
    const char *script;
    size_t script_len;
    size_t nkeys;
    size_t nargs;
    const char **argv;
    const size_t *argvlen;
    struct redisReply *reply;   /* out */
};

/* Run calls on their masters before deadline (co_mono_ms() time): grouped
 * per node, pipelined per node, all nodes written before any is read.
 * MOVED updates the slot and schedules a full refresh, ASK sends ASKING
 * then the call to the target (map unchanged), TRYAGAIN and CLUSTERDOWN
 * are retried with a doubling pause while the deadline allows, NOSCRIPT
 * loads the script on that node and retries. A call is resent only when
 * its reply said it did not run.
 * Returns 0 when every call has a reply; CO_EINVAL, before anything is
 * sent, when a call's keys are in different slots or it has none (our
 * bug); CO_EREDIS when some calls have no reply (node unreachable, I/O
 * error or timeout: those may have run; slot not served, cluster down,
 * redirections exhausted: those did not), with the first reason in err;
 * CO_ENOMEM. Replies already set are kept in every case but CO_EINVAL. */
int co_cluster_run(struct co_cluster *cc, struct co_cluster_call *calls,
                   size_t ncalls, uint64_t deadline, char *err,
                   size_t errlen);

/* Refresh the slot map now from CLUSTER SLOTS (known masters first, then
 * the seeds) before deadline. Returns 0 when the map covers every slot;
 * CO_EREDIS with err when no node answered, an answer was garbage or some
 * slot is not served (the map still holds what was learnt). */
int co_cluster_refresh(struct co_cluster *cc, uint64_t deadline, char *err,
                       size_t errlen);

/* What /readyz asks: the map covers every slot and every master answers
 * CLUSTER INFO with cluster_state:ok, all before deadline. Returns 0 or
 * CO_EREDIS with the reason (one line) in err. */
int co_cluster_check(struct co_cluster *cc, uint64_t deadline, char *err,
                     size_t errlen);

/* "host:port" of the master serving slot in the current map, into out;
 * CO_ENOTFOUND when the slot is not served (or no map yet). */
int co_cluster_slot_owner(const struct co_cluster *cc, unsigned slot,
                          char *out, size_t outlen);

#endif
