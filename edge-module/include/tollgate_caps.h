/* tollgate_caps.h — what one edge can hold: the single table of the edge
 * core's capacities.
 *
 * The edge core is built with these numbers and the coordinator's policy
 * validator (coordinator/policy.c) includes this header and refuses any
 * policy past them with a 400 naming the field and the cap: a policy the
 * admin API accepts is one every edge of the same build can install. Plain
 * macros only, so both the freestanding wasm32 build and the coordinator
 * include it. Changing a number here changes both sides at once; an edge
 * built with smaller numbers than its coordinator refuses the policy,
 * keeps enforcing its previous one and reports the refusal in its next
 * SyncRequest.
 *
 * Memory: each quota costs about 560 bytes in each of the edge's two
 * policy copies; claim names cost TG_CAP_CLAIM_BYTES in each of the 320
 * token-cache slots, which is why they stay few.
 */
#ifndef TOLLGATE_CAPS_H
#define TOLLGATE_CAPS_H

/* A test build may shrink the quota cap (-DTG_CAP_QUOTAS=8) to play an
 * older, smaller edge; the others are fixed. */
#ifndef TG_CAP_QUOTAS
#define TG_CAP_QUOTAS 64 /* quotas in one policy (<= 64: a bit mask) */
#endif
#define TG_CAP_QUOTA_NAME   64  /* bytes of a quota name */
#define TG_CAP_PATH_PREFIX  128 /* bytes of a quota's path_prefix */
#define TG_CAP_METHODS      8   /* methods per quota */
#define TG_CAP_METHOD_BYTES 16  /* bytes of one method */
#define TG_CAP_KEY_TEMPLATE 160 /* bytes of a key template */
#define TG_CAP_KEY_PARTS    4   /* parts of a key template */
#define TG_CAP_PART_NAME    64  /* bytes of a claim or header name */
#define TG_CAP_CLAIMS       8   /* distinct claim names in one policy */
#define TG_CAP_HEADERS      16  /* distinct header names in one policy */
#define TG_CAP_CLAIM_BYTES  96  /* bytes of one claim value an edge keeps */
/* Bytes of the encoded Policy message: the SyncResponse carrying it must
 * fit the wasm module's 64 KiB I/O buffer with the batch's key states. */
#define TG_CAP_POLICY_BYTES 32768

#endif /* TOLLGATE_CAPS_H */
