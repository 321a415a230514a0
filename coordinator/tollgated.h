/* tollgated.h — the coordinator's hub header.
 *
 * tollgated reconciles the counts that edge modules report on POST /v1/sync,
 * keeps the global quota in Redis with one atomic Lua call per batch, and
 * answers each edge with leases and challenge/deny decisions. Every file in
 * coordinator/ includes this header: the global state, status codes, log
 * macros and all cross-file prototypes live here, grouped by subsystem and
 * ordered bottom-up: each section uses only what comes above it (status
 * codes, limits, logging, clock, encodings, files and config, the HTTP
 * layer, then the subsystems from the key file and Redis up to the
 * endpoints).
 *
 * Memory: a prototype that hands out memory says who frees it and with
 * what. Buffers the caller passes (out, outlen; err, errlen) stay the
 * caller's.
 *
 * The Redis data model (every key, what it holds, how long it lives) is
 * written once, in the header of coordinator/sync.lua; redis_keys.c
 * builds the names and script.c the script calls.
 */
#ifndef TOLLGATED_H
#define TOLLGATED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tollgate.pb-c.h"
#include "../edge-module/include/tollgate_caps.h"

struct json_t;          /* jansson's json_t, for the JSON prototypes */
struct redisReply;      /* hiredis's, for the generic Redis commands */
struct timespec;

#define CO_VERSION "0.1.0"

/* ------------------------------------------------------------ status codes
 * Functions return 0 on success or one of these; details go to a
 * caller-supplied err buffer. */
#define CO_OK         0
#define CO_EINVAL   (-1)   /* bad argument or malformed input */
#define CO_ENOMEM   (-2)   /* allocation failed */
#define CO_ENOTFOUND (-3)  /* no route for the path */
#define CO_EMETHOD  (-4)   /* route exists, method not allowed */
#define CO_ETOOBIG  (-5)   /* body or buffer over its cap */
#define CO_EREDIS   (-6)   /* Redis unreachable, timed out or I/O error */
#define CO_EREPLY   (-7)   /* Redis answered, but not what we expect */
#define CO_EBADTOKEN (-8)  /* token malformed or signature wrong */
#define CO_EEXPIRED (-9)   /* token well-formed and signed, but expired */
#define CO_EIO      (-10)  /* file or socket I/O */
#define CO_ECONFLICT (-11) /* a write based on a stale version (If-Match) */

/* ------------------------------------------------------------ limits */
#define CO_EDGE_ID_MAX       64      /* bytes */
/* What a policy may hold is what an edge can hold: the edge core's
 * capacities, spelled once in edge-module/include/tollgate_caps.h. */
#define CO_QUOTA_NAME_MAX    TG_CAP_QUOTA_NAME   /* bytes, [A-Za-z0-9._-] */
#define CO_KEY_MAX           256     /* bytes of a rate-limit key */
#define CO_PATH_PREFIX_MAX   TG_CAP_PATH_PREFIX
#define CO_KEY_TEMPLATE_MAX  TG_CAP_KEY_TEMPLATE /* bytes of a key template */
#define CO_KEY_PARTS_MAX     TG_CAP_KEY_PARTS    /* parts joined by "+" */
#define CO_KEY_PART_NAME_MAX TG_CAP_PART_NAME    /* claim / header name */
#define CO_CLAIMS_MAX        TG_CAP_CLAIMS       /* distinct, per policy */
#define CO_HEADERS_MAX       TG_CAP_HEADERS      /* distinct, per policy */
#define CO_METHODS_MAX       TG_CAP_METHODS
#define CO_QUOTAS_MAX        TG_CAP_QUOTAS
#define CO_POLICY_PB_MAX     TG_CAP_POLICY_BYTES /* encoded Policy bytes */
#define CO_QUOTA_NAMES_SEEN  1024    /* quota names /metrics keeps over the
                                      * process's life (policies change) */
#define CO_OVERRIDES_MAX     10000   /* per quota */
#define CO_SYNC_COUNTS_MAX   10000   /* KeyCounts in one SyncRequest */
#define CO_COUNT_MAX         1000000000000ULL  /* one KeyCount field, 1e12 */
#define CO_SEQ_MAX           9007199254740991ULL /* 2^53 - 1: exact in Lua
                                                  * and JSON; larger -> 400 */
#define CO_LAG_MAX_MS        300000u /* an edge clock further off is
                                      * clamped for the lag gauge */
#define CO_URL_MAX           2048    /* bytes; longer -> 414 */
#define CO_CHALLENGE_TTL_S   300
#define CO_TOKEN_MAX         320     /* bytes of a challenge token, NUL incl. */
#define CO_SECRET_MIN        32      /* bytes of a key file secret */
#define CO_SECRET_MAX        128
#define CO_CAPTCHA_NAME_MAX  16      /* bytes of a captcha provider name */
#define CO_SITE_KEY_MAX      128     /* bytes of a captcha site key */

/* ------------------------------------------------------------ logging
 * One logfmt line per event on stderr: ts=... level=... msg=<event> k=v...
 * The format string passed to CO_LOG starts with "msg=<event>". Values that
 * come from clients must go through co_log_value() to be quoted. */
enum co_log_level {
    CO_LOG_DEBUG = 0,
    CO_LOG_INFO = 1,
    CO_LOG_WARN = 2,
    CO_LOG_ERROR = 3
};

extern atomic_int co_log_min_level;

void co_log_write(enum co_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int co_log_level_parse(const char *name, enum co_log_level *out);
const char *co_log_value(char *buf, size_t buflen, const char *s, size_t len);

#define CO_LOG(level, ...)                                               \
    do {                                                                 \
        if ((int)(level) >= atomic_load_explicit(&co_log_min_level,      \
                                                 memory_order_relaxed))  \
            co_log_write((level), __VA_ARGS__);                          \
    } while (0)
#define CO_DEBUG(...) CO_LOG(CO_LOG_DEBUG, __VA_ARGS__)
#define CO_INFO(...)  CO_LOG(CO_LOG_INFO, __VA_ARGS__)
#define CO_WARN(...)  CO_LOG(CO_LOG_WARN, __VA_ARGS__)
#define CO_ERROR(...) CO_LOG(CO_LOG_ERROR, __VA_ARGS__)

/* ------------------------------------------------------------ clock
 * The only place that reads clocks, so tests can pin time with --wrap. */
uint64_t co_wall_ms(void);
uint64_t co_mono_ms(void);
uint64_t co_mono_us(void);
void co_timespec_after(bool monotonic, unsigned ms, struct timespec *out);

/* ------------------------------------------------------------ encodings
 * (encode.c) base64url without padding, as in JWS; decode is strict (one
 * spelling per value). Both return the length written, or -1 when the
 * output is too small or the input is not canonical. Hex and percent
 * codecs, and the name hash. */
long co_b64url_encode(const uint8_t *in, size_t len, char *out, size_t outlen);
long co_b64url_decode(const char *in, size_t len, uint8_t *out, size_t outlen);
int co_hex_digit(char c);  /* 0..15, or -1 */
long co_hex_encode(const uint8_t *in, size_t len, char *out, size_t outlen);
/* Hex digits (either case, an even number of them) to bytes: the count,
 * or -1 when in is not hex or out is too small. */
long co_hex_decode(const char *in, size_t len, uint8_t *out, size_t outlen);
/* FNV-1a of a NUL-terminated name, never 0 (0 marks a free slot): the
 * open-addressing tables of metrics.c and stats.c hash names with it. */
uint64_t co_name_hash(const char *s);
/* %XX-decode s[0..len) into out (NUL-terminated); CO_EINVAL for a bad
 * escape, a decoded NUL or more than outlen - 1 bytes. */
int co_percent_decode(const char *s, size_t len, char *out, size_t outlen);
/* s[0..len) %XX-encoded outside [A-Za-z0-9._:-] into out (NUL-terminated);
 * returns the length, or CO_ETOOBIG when out has fewer than 3 * len + 1
 * bytes. */
int co_percent_encode(const char *s, size_t len, char *out, size_t outlen);

/* ------------------------------------------------------------ files
 * (file.c) The policy, key and token files: read whole, fields split. */
/* path's bytes (at most max) into *buf, NUL-terminated and malloc'd (the
 * caller frees it with free(), cleansing it first if it held secrets);
 * *exposed says group or others may read it. Returns 0, or CO_EIO /
 * CO_ETOOBIG / CO_ENOMEM with err (*buf NULL). */
int co_file_read(const char *path, size_t max, char **buf, size_t *len,
                 bool *exposed, char *err, size_t errlen);
/* Split line[0..n) at blanks into at most max fields (pointers into
 * line, lengths in fl): their count, or max + 1 when there are more. */
size_t co_split_fields(const char *line, size_t n, const char **f,
                       size_t *fl, size_t max);

/* ------------------------------------------------------------ config
 * Flags and TOLLGATE_* environment variables (the flag wins). */
/* Connection limits (flags --max-connections, --max-conns-per-ip,
 * --request-timeout-ms; http.c's file comment says what each achieves). */
struct co_http_limits {
    unsigned max_conns;             /* open connections in all */
    unsigned max_conns_per_ip;      /* from one client address; 0 = off */
    unsigned request_timeout_ms;    /* head and body of one request */
};

struct co_config {
    char listen[256];           /* host:port */
    char redis_url[2048];       /* one URL, or seeds, comma-separated */
    char policy_path[4096];
    unsigned threads;           /* MHD worker threads */
    size_t max_body;            /* bytes */
    unsigned redis_timeout_ms;  /* total Redis wait per request */
    char keys_path[4096];       /* the key file (required) */
    char admin_tokens_path[4096];   /* "": the admin API answers 401 */
    enum co_log_level log_level;
    struct co_http_limits http;     /* connection limits */
    char captcha_verify_url[512];   /* "": the provider's siteverify */
    unsigned captcha_timeout_ms;
    char tls_cert_path[4096];       /* both "" (plain HTTP) or both set */
    char tls_key_path[4096];
};

/* What co_config_parse() asks the caller to do besides running. */
#define CO_CONFIG_RUN      0
#define CO_CONFIG_HELP     1
#define CO_CONFIG_VERSION  2

typedef const char *(*co_getenv_fn)(const char *name);

int co_config_parse(int argc, char **argv, co_getenv_fn getenv_fn,
                    struct co_config *cfg, char *err, size_t errlen);
void co_config_usage(FILE *out);

/* ------------------------------------------------------------ http layer
 * (http.c) A handler sees a fully read request and fills a response; it
 * never touches libmicrohttpd, so tests can call it as a plain function.
 * The route table is in http.c. */
#define CO_ROUTE_PARAMS_MAX 3

/* The {param} segments of a route's path, percent-decoded, in order. */
struct co_route_params {
    unsigned n;
    char v[CO_ROUTE_PARAMS_MAX][CO_KEY_MAX + 1];
};

struct co_request {
    const char *method;
    const char *path;
    const char *query;          /* raw, after '?', not decoded; NULL: none */
    const struct co_route_params *params;   /* NULL: the route has none */
    const char *content_type;   /* NULL when absent */
    const uint8_t *body;        /* NULL when empty */
    size_t body_len;
    /* Header lookup for handlers that need more than Content-Type (edge
     * auth, bearer tokens, If-Match). NULL in tests: co_request_header()
     * then returns NULL. */
    const char *(*header)(void *conn, const char *name);
    void *conn;
};

struct co_response {
    unsigned status;
    const char *content_type;   /* static string */
    uint8_t *body;              /* malloc'd; co_response_clear() frees it */
    size_t body_len;
    char allow[64];             /* Allow header for 405, "" otherwise */
    char etag[32];              /* ETag header value, "" for none */
    struct {                    /* one more header, e.g. WWW-Authenticate */
        const char *name;       /* static strings; NULL: none */
        const char *value;
    } extra;
    const char *const *headers; /* more: static name, value, ..., NULL */
};

typedef void (*co_handler_fn)(const struct co_request *req,
                              struct co_response *resp);

struct co_route {
    const char *method;         /* "GET" routes also answer HEAD */
    const char *path;           /* literal segments and {param} ones, which
                                 * match one non-empty segment */
    const char *content_type;   /* required request media type, or NULL */
    co_handler_fn handler;
};

/* Growing request body with a hard cap. */
struct co_body {
    uint8_t *data;              /* malloc'd; co_body_free() */
    size_t len;
    size_t cap;                 /* allocated */
};

const char *co_request_header(const struct co_request *req, const char *name);
int co_route_lookup(const char *method, const char *path,
                    const struct co_route **out, char *allow, size_t allowlen);
/* As co_route_lookup(), and the path's {param} values into params. */
int co_route_match(const char *method, const char *path,
                   const struct co_route **out,
                   struct co_route_params *params, char *allow,
                   size_t allowlen);
int co_http_precheck(const char *method, const char *url,
                     const char *content_type, const char *content_length,
                     size_t max_body, const struct co_route **route,
                     struct co_response *resp);
int co_body_append(struct co_body *b, const void *data, size_t len,
                   size_t max);
void co_body_free(struct co_body *b);
void co_response_problem(struct co_response *resp, unsigned status,
                         const char *detail);
/* As co_response_problem, with the extension members of the JSON object
 * members (stolen: json_decref'd here; NULL: none). */
void co_response_problem_with(struct co_response *resp, unsigned status,
                              const char *detail, struct json_t *members);
/* co_response_set copies body; co_response_take takes body (malloc'd):
 * either way co_response_clear() frees the response's copy. */
/* 503 with "Retry-After: 1" and the problem member "kind" (a Redis
 * failure's name, co_redis_kind_names, or another word): how every answer
 * that failed on Redis reads. */
void co_response_unavailable(struct co_response *resp, const char *kind,
                             const char *detail);
int co_response_set(struct co_response *resp, unsigned status,
                    const char *content_type, const void *body, size_t len);
void co_response_take(struct co_response *resp, unsigned status,
                      const char *content_type, uint8_t *body, size_t len);
void co_response_clear(struct co_response *resp);
const char *co_status_title(unsigned status);

struct MHD_Daemon;
struct MHD_OptionItem;

/* (tls.c; the decisions in its file comment) HTTPS on the one listener.
 * co_tls_init() loads --tls-cert/--tls-key before the daemon starts
 * (0, or CO_EINVAL / CO_EIO / CO_ENOMEM with err); without it TLS is off.
 * co_tls_reload() (SIGHUP) swaps in the files' current pair, or logs why
 * not and keeps the old one. co_tls_mhd_options() is what co_http_start()
 * passes as MHD_OPTION_ARRAY (it sets MHD_USE_TLS in *flags when on);
 * co_tls_refuse_plain_http() is its connection callback's check of a new
 * connection's first bytes (true: answered 400 and shut down). */
int co_tls_init(const char *cert, const char *key, char *err, size_t errlen);
bool co_tls_enabled(void);
int co_tls_reload(void);
void co_tls_shutdown(void);
const struct MHD_OptionItem *co_tls_mhd_options(unsigned *flags);
bool co_tls_refuse_plain_http(int fd);

/* *out: the running daemon, stopped and freed by co_http_drain_and_stop. */
int co_http_start(const char *listen, unsigned threads,
                  const struct co_http_limits *lim, struct MHD_Daemon **out,
                  char *addr, size_t addrlen, char *err, size_t errlen);
void co_http_drain_and_stop(struct MHD_Daemon *daemon, unsigned timeout_ms);

/* The process's HTTP state (http.c, main.c). */
struct co_server {
    size_t max_body;                   /* body cap for every route */
    atomic_bool draining;              /* SIGTERM seen: close keep-alives */
    atomic_uint inflight;              /* requests between first callback
                                        * and completion */
    /* HTTP connections (http.c), for /metrics */
    atomic_uint http_connections;      /* open now */
    atomic_ullong http_closed_limit;   /* refused at accept: a cap */
    atomic_ullong http_closed_deadline;/* request not in by its deadline */
    atomic_ullong http_closed_tls;     /* TLS hello on the plain port */
};

extern struct co_server co_server;

/* ------------------------------------------------------------ input
 * (input.c) Strings from outside hold no NUL byte: a field holding one is
 * refused with 400 where the request is decoded. Both return 0 or
 * CO_EINVAL with detail ("<field>: holds a NUL byte"). */
int co_input_text(const char *field, const void *s, size_t len,
                  char *detail, size_t detaillen);
/* One protobuf varint at p[*i..len) into *v, *i moved past it: 0, or
 * CO_EINVAL when it runs past len or over 10 bytes. The one wire reader of
 * the coordinator (input.c's walk, sync.c's count cap). */
int co_pb_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v);
/* Every string field of a protobuf message of type desc, on the wire. */
int co_input_protobuf(const ProtobufCMessageDescriptor *desc,
                      const uint8_t *buf, size_t len, char *detail,
                      size_t detaillen);

/* ------------------------------------------------------------ tickers
 * (ticker.c) A thread calling tick() every period_ms until stopped (and
 * once more after stop when final); store.c and stats.c each run one.
 * The caller fills tick, period_ms and final; the rest is the ticker's. */
struct co_ticker {
    void (*tick)(void);
    unsigned period_ms;
    bool final;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool running, stop;
};

/* Returns 0 or CO_EIO with err (no thread). */
int co_ticker_start(struct co_ticker *t, char *err, size_t errlen);
/* Wakes the thread, waits for it (the tick in progress, and the final
 * one); safe when not running. */
void co_ticker_stop(struct co_ticker *t);

/* ------------------------------------------------------------ key file
 * (keyfile.c) Every secret tollgated holds comes from one key file
 * (--keys FILE), never from the command line (which `ps` shows). One key
 * per line:
 *
 *     <kind> <id> <secret: 32..128 bytes as an even number of hex digits>
 *
 *   challenge  signs and checks challenge tokens; id = key id carried in
 *              the token. The first listed signs; at most 2 (rotation: add
 *              the new key second, then move it first, then drop the old).
 *   clearance  signs the clearance tokens edges verify (JWS HS256, id =
 *              kid); the first listed signs; at most 2. Edges are
 *              provisioned with the same kid and secret.
 *   edge       an edge's sync signing key; id = the edge's name, the part
 *              of its edge_id before the first '/' (edge_id "fra-1/9f3a"
 *              is instance 9f3a of edge fra-1). Several lines for one name
 *              are all accepted (rotation).
 *   captcha    a captcha verifier's secret; id = the verifier: "static"
 *              (hex, as above), or "turnstile" / "hcaptcha" with the
 *              secret exactly as the provider gives it (1..128 visible
 *              ASCII bytes, e.g. `captcha turnstile 0x4AAAAAAA...`).
 *
 * Blank lines and lines starting with '#' are ignored. Ids are 1..64
 * visible ASCII bytes. Errors name the line. */
#define CO_KEY_ID_MAX     64
#define CO_KEYS_ROTATION  2      /* challenge / clearance keys at once */
#define CO_EDGE_KEYS_MAX  100000

struct co_key {
    char id[CO_KEY_ID_MAX + 1];
    uint8_t secret[CO_SECRET_MAX];
    size_t len;
};

struct co_keyring {
    struct co_key challenge[CO_KEYS_ROTATION];  /* [0] signs */
    size_t n_challenge;
    struct co_key clearance[CO_KEYS_ROTATION];  /* [0] signs */
    size_t n_clearance;
    struct co_key captcha;                      /* id = verifier name */
    bool has_captcha;
    struct co_key *edges;                       /* sorted by id */
    size_t n_edges;
};

/* The keys tollgated runs with: loaded once at start, read-only after. */
extern struct co_keyring co_keys;

/* *out's edge keys are malloc'd: co_keys_free() releases them. */
int co_keys_parse(const char *text, size_t len, struct co_keyring *out,
                  char *err, size_t errlen);
int co_keys_load(const char *path, struct co_keyring *out, char *err,
                 size_t errlen);
void co_keys_free(struct co_keyring *k);
/* The keys of edge name[0..nlen): sets *first and returns how many (0 for
 * an unknown edge); they are contiguous in k->edges. */
size_t co_keys_edge(const struct co_keyring *k, const char *name, size_t nlen,
                    const struct co_key **first);
const struct co_key *co_keys_find(const struct co_key *keys, size_t n,
                                  const char *id, size_t idlen);

/* ------------------------------------------------------------ admin tokens
 * (admin_tokens.c) Bearer tokens of the admin API, from --admin-tokens
 * FILE: "<name> <read|admin> <sha256 hex>" per line. */
#define CO_TOKEN_NAME_MAX 64

struct co_admin_token {
    char name[CO_TOKEN_NAME_MAX + 1];   /* goes to the audit log */
    bool admin;                         /* else read only */
    uint8_t hash[32];                   /* SHA-256 of the token */
};

struct co_tokens {
    struct co_admin_token *tokens;      /* malloc'd; co_tokens_free() */
    size_t n;
    bool loaded;
};

/* The tokens tollgated runs with (loaded once at start). */
extern struct co_tokens co_admin_tokens;

/* *out's tokens are malloc'd: co_tokens_free() releases them. */
int co_tokens_parse(const char *text, size_t len, struct co_tokens *out,
                    char *err, size_t errlen);
int co_tokens_load(const char *path, struct co_tokens *out, char *err,
                   size_t errlen);
void co_tokens_free(struct co_tokens *t);
const struct co_admin_token *co_tokens_check(const struct co_tokens *t,
                                             const char *authorization);

/* ------------------------------------------------------------ redis cluster
 * (cluster.c) Debian's hiredis 0.14 has no cluster client, so tollgated
 * routes script calls itself: key slots (CRC16/XMODEM with hash tags), a
 * slot map from CLUSTER SLOTS, one connection per node, calls grouped per
 * node and pipelined, and the cluster's answers handled as its
 * specification says (MOVED, ASK, TRYAGAIN, CLUSTERDOWN), plus NOSCRIPT
 * (script caches are not replicated). A struct co_cluster is owned by one
 * thread, like every hiredis context here; redis.c keeps one per worker
 * in cluster mode. docs/redis-cluster.md has the whole story. */
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
 * argv[1..1+nkeys) (SET, GET, HGETALL, ZADD, ...). reply is set by
 * co_cluster_run(): the final reply (which may be an error reply such as
 * a script error or OOM: the call reached its master and the answer is
 * the script's), freed by the caller with freeReplyObject(); NULL when
 * the call has no answer (see the return codes). */
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

/* ------------------------------------------------------------ redis
 * (redis.c) One blocking connection per thread, one deadline per exchange.
 */
struct co_redis_target {
    char host[256];
    int port;
    char user[128];          /* "" : AUTH with password only */
    char password[256];      /* "" : no AUTH */
    int db;                  /* SELECT when > 0 */
    unsigned timeout_ms;
};

/* What went wrong with Redis, one kind per cause an operator fixes in one
 * way; co_redis_classify() maps a reply error to its kind (the names are
 * the /readyz "kind", the admin API's problem "kind" and the label of
 * tollgate_redis_errors_total). */
enum co_redis_kind {
    CO_REDIS_OK = 0,
    CO_REDIS_UNREACHABLE,    /* connect refused, reset, closed */
    CO_REDIS_TIMEOUT,        /* no answer within --redis-timeout-ms */
    CO_REDIS_AUTH,           /* NOAUTH, WRONGPASS */
    CO_REDIS_NOPERM,         /* ACL: a command or key not allowed */
    CO_REDIS_NOSCRIPT,       /* the script cache lost a script */
    CO_REDIS_UNKNOWN_COMMAND,/* renamed or disabled (rename-command) */
    CO_REDIS_OOM,            /* maxmemory reached under noeviction */
    CO_REDIS_READONLY,       /* a read-only replica */
    CO_REDIS_LOADING,        /* loading its dataset */
    CO_REDIS_BUSY,           /* another script runs too long */
    CO_REDIS_MASTERDOWN,     /* a replica without its primary */
    CO_REDIS_CROSSSLOT,      /* a cluster node (keys of several slots) */
    CO_REDIS_MOVED,          /* a cluster node (the slot is elsewhere) */
    CO_REDIS_ASK,            /* a cluster node (the slot is migrating) */
    CO_REDIS_CLUSTERDOWN,    /* a cluster node (slot not served) */
    CO_REDIS_TRYAGAIN,       /* a cluster node (resharding) */
    CO_REDIS_WRONGTYPE,      /* a tg:* key holds another type */
    CO_REDIS_SCRIPT_ERROR,   /* a script failed (ERR in a script) */
    CO_REDIS_BAD_REPLY,      /* a reply of an unexpected shape */
    CO_REDIS_OTHER,          /* any other error reply */
    CO_REDIS_KINDS
};

/* "ok", "unreachable", "timeout", "noperm", ... (static storage). */
extern const char *const co_redis_kind_names[CO_REDIS_KINDS];
/* The kind of an error reply's text (its leading code: "NOPERM ...",
 * "OOM ...", "ERR unknown command ...", a script error carrying a code of
 * a call it made); never CO_REDIS_OK. Pure: a Redis Cluster router may
 * call it on the replies it gets. */
enum co_redis_kind co_redis_classify(const char *reply_error);
/* What an operator should know of kind, in plain words (static). */
const char *co_redis_kind_reason(enum co_redis_kind kind);
/* Count one failure of kind (tollgate_redis_errors_total{kind}), make it
 * the process's Redis state (tollgate_redis_up 0, /readyz 503) and log
 * the change of state, once; detail is Redis's words or ours. */
void co_redis_failed(enum co_redis_kind kind, const char *detail);
/* The kind of the calling thread's last Redis failure since its last
 * exchange began (CO_REDIS_OK: none): what an admin answer reports. */
enum co_redis_kind co_redis_thread_kind(void);
/* The process's Redis state (CO_REDIS_OK when working); the detail of
 * the change into it into detail. */
enum co_redis_kind co_redis_state(char *detail, size_t detaillen);
/* Run the probe (probe.lua) on this thread's connection; clear the state
 * when it passes and no failure came in the last second. Returns 0, or
 * CO_EREDIS / CO_EREPLY (CO_ENOMEM) with *kind and err. The watcher thread
 * (co_redis_watch_start) calls it once a second while the state is not
 * CO_REDIS_OK, so tollgated recovers by itself once Redis is fixed. */
int co_redis_check(enum co_redis_kind *kind, char *err, size_t errlen);
/* Returns 0 or CO_EIO with err (no thread). */
int co_redis_watch_start(char *err, size_t errlen);
void co_redis_watch_stop(void);

int co_redis_parse_url(const char *url, unsigned timeout_ms,
                       struct co_redis_target *t, char *err, size_t errlen);
/* Remember where Redis is, load every script there and run the probe.
 * Returns 0; CO_EREDIS (unreachable) or CO_EREPLY (Redis refuses: err
 * says in plain words what is missing, e.g. "the ACL user lacks
 * +@scripting") with the state set, the caller logs it and serves anyway
 * (the watcher notices the fix); CO_ENOMEM on local failure. */
int co_redis_init(const struct co_redis_target *t, char *err, size_t errlen);

/* --redis takes one URL or several (comma-separated): seeds of a Redis
 * Cluster. co_redis_parse_seeds() splits and parses the list into
 * out[0..*n). co_redis_init_seeds() asks the seeds CLUSTER SLOTS: a
 * node without cluster support means single-node mode (the first seed,
 * co_redis_init()); a cluster means every call below is routed by
 * cluster.c. Returns 0 when ready; CO_EREDIS with err when Redis (or the
 * cluster) is not answering or not ready yet: tollgated serves degraded
 * and the mode is decided by the first call that finds a seed answering;
 * CO_EINVAL (a database number in cluster mode); CO_ENOMEM. */
#define CO_REDIS_SEEDS_MAX 16
int co_redis_parse_seeds(const char *list, unsigned timeout_ms,
                         struct co_redis_target *out, size_t max, size_t *n,
                         char *err, size_t errlen);
int co_redis_init_seeds(const struct co_redis_target *seeds, size_t n,
                        char *err, size_t errlen);
/* Whether the calls below go to a Redis Cluster (sync groups its items
 * per hash slot then). */
bool co_redis_is_cluster(void);
void co_redis_shutdown(void);
/* The SHA1 of the sync script (static storage), for the startup log. */
const char *co_redis_script_sha(void);
/* co_redis_check() without the kind: 0, or CO_EREDIS (unreachable, timed
 * out, backing off) / CO_EREPLY (Redis refused the probe) with err. */
int co_redis_ping(char *err, size_t errlen);
/* One command for the policy store, stats and the admin API: this
 * thread's connection, one deadline of timeout_ms (0 = --redis-timeout-ms),
 * connect included. Returns the reply (the caller frees it with
 * freeReplyObject(); an error reply is returned as a reply) or NULL with
 * err when Redis is unreachable, backing off or timed out. */
struct redisReply *co_redis_command(unsigned timeout_ms, int argc,
                                    const char **argv, const size_t *lens,
                                    char *err, size_t errlen);

/* SET key value PX ttl_ms (NX when only_new) on this thread's connection,
 * for challenge verify. Returns 1 when set, 0 when only_new and the key
 * existed; CO_EREDIS when Redis is unreachable, in reconnect backoff or
 * timed out (a timed-out SET may have landed); CO_EREPLY otherwise. */
int co_redis_set_px(const char *key, size_t klen, const char *val,
                    size_t vlen, uint64_t ttl_ms, bool only_new, char *err,
                    size_t errlen);

/* ------------------------------------------------------------ redis keys
 * (redis_keys.c) Every Redis key name, built in one place; the data model
 * (what each key holds) is in the header of coordinator/sync.lua. The
 * builders write a NUL-terminated name into out and return its length, or
 * CO_ETOOBIG / CO_EINVAL. */
struct co_rkeys {
    const char *policy_current, *policy_seq, *policy_meta, *policy_audit,
        *policy_audit_seq;
    const char *policy_version_prefix;   /* + n: version n */
    const char *stats_edges, *stats_edgez, *stats_ch, *stats_chz;
    const char *stats_prefix;            /* stats.lua's computed keys */
    const char *probe_a, *probe_b;       /* probe.lua's, two slots */
};
extern const struct co_rkeys co_rkeys;

/* "{" + 3 bytes per encoded byte of quota and key + "|" + "}" + NUL */
#define CO_KEY_TAG_MAX       (3 + 3 * CO_QUOTA_NAME_MAX + 3 * CO_KEY_MAX + 1)
/* "tg:" tag ":c" + NUL */
#define CO_RKEY_COUNTERS_MAX (3 + CO_KEY_TAG_MAX + 2)
/* "tg:" tag ":sig:" + 32 hex + NUL */
#define CO_REPLAY_KEY_MAX    (3 + CO_KEY_TAG_MAX + 5 + 32 + 1)
#define CO_RKEY_NONCE_MAX    (3 + 8 + 32 + 2)
#define CO_CLEARANCE_KEY_MAX (16 + CO_QUOTA_NAME_MAX + 33)

int co_key_tag(const char *quota, size_t qlen, const char *key, size_t klen,
               char *out, size_t outlen);
/* tg:{q|k}:c and tg:{q|k}:e (sync.lua's counters of (quota, key)) into c
 * and e, outlen bytes each. */
int co_rkey_counters(const char *quota, size_t qlen, const char *key,
                     size_t klen, char *c, char *e, size_t outlen);
/* The mark of a used sync signature (sync.lua checks and sets it). */
int co_rkey_replay(const char *edge_id, const char *sig_hex, char *out,
                   size_t outlen);
/* The same mark in Redis Cluster mode, one per sync call, in the slot of
 * the call's items (quota, key). */
#define CO_REPLAY_AT_KEY_MAX (CO_REPLAY_KEY_MAX + 3 * CO_KEY_MAX + 1)
int co_rkey_replay_at(const char *quota, const char *key, const char *edge_id,
                      const char *sig_hex, char *out, size_t outlen);
/* The mark of a burnt challenge nonce (challenge verify). */
int co_rkey_nonce(const uint8_t nonce[16], char *out, size_t outlen);
/* (quota, key hash) cleared: written by challenge verify, read by key
 * inspect. */
int co_rkey_clearance(const char *quota, const uint8_t kh[16], char *out,
                      size_t outlen);
int co_rkey_policy_version(uint64_t version, char *out, size_t outlen);

/* ------------------------------------------------------------ scripts
 * (script.c) The Lua scripts, embedded from coordinator/<name>.lua, and
 * the builder of one call. A call holds nkeys keys then nargs args in one
 * arena (any bytes, each with its length); co_redis_eval() and
 * co_redis_eval_ints() send it. */
enum co_script_id {
    CO_SCRIPT_SYNC = 0,          /* sync.lua */
    CO_SCRIPT_STATS,             /* stats.lua */
    CO_SCRIPT_POLICY_WRITE,      /* policy_write.lua */
    CO_SCRIPT_POLICY_AUDIT,      /* policy_audit.lua */
    CO_SCRIPT_PROBE,             /* probe.lua (redis.c's readiness check) */
    CO_SCRIPTS
};

struct co_script {
    const char *name;            /* "sync", ... for logs */
    const char *src;             /* the Lua source, NUL-terminated */
    size_t len;
    char sha[41];                /* SHA1 hex: what EVALSHA names it by */
};

/* Static storage, never freed. */
const struct co_script *co_script(enum co_script_id id);
/* The SHA1 of data[0..len) in lowercase hex (what EVALSHA names a script
 * by) into out; "" when OpenSSL cannot hash. */
void co_sha1_hex(const char *data, size_t len, char out[41]);

struct co_script_call {
    const struct co_script *script;
    size_t nkeys;
    size_t nargs;
    const char **argv;           /* keys then args, after co_call_seal() */
    size_t *argvlen;
    long long *out;              /* co_redis_eval_ints(): the flat integer */
    size_t nout;                 /* reply, nout integers */
    /* the builder's */
    size_t cap;
    size_t *offs;
    char *arena;
    size_t arena_len, arena_cap;
    int rc;                      /* first error, sticky */
};

/* Memory for cap keys and args: co_call_free() releases it (and the
 * arena), also after a failed build. */
void co_call_init(struct co_script_call *c, const struct co_script *s,
                  size_t cap);
/* Append a key (before any arg) or an arg; errors are kept for seal. */
void co_call_key(struct co_script_call *c, const char *key, size_t n);
void co_call_arg(struct co_script_call *c, const char *s, size_t n);
void co_call_arg_str(struct co_script_call *c, const char *s);
void co_call_arg_u64(struct co_script_call *c, uint64_t v);
/* Fix argv once building is over. Returns 0, CO_ENOMEM, or CO_EINVAL (a
 * key after an arg, more than cap entries: a bug in the builder). */
int co_call_seal(struct co_script_call *c);
void co_call_free(struct co_script_call *c);
/* The hash tag all keys of c share (*tag points into c), for a Redis
 * Cluster router; CO_EINVAL when they do not share one. */
int co_call_tag(const struct co_script_call *c, const char **tag,
                size_t *len);

/* Send calls[0..ncalls), pipelined in one round trip on this thread's
 * connection, each reply a flat array of calls[i].nout integers copied to
 * calls[i].out. One deadline of --redis-timeout-ms, connect and NOSCRIPT
 * reload included. Returns 0; CO_EREDIS when Redis is unreachable, timed
 * out or the socket failed (some calls may have run); CO_EREPLY for an
 * error reply or a reply of the wrong shape; CO_EINVAL; CO_ENOMEM. */
int co_redis_eval_ints(struct co_script_call *calls, size_t ncalls,
                       char *err, size_t errlen);

/* One call, as co_redis_command() (the reply is freed with
 * freeReplyObject()); EVALSHA, and EVAL when Redis answers NOSCRIPT. */
struct redisReply *co_redis_eval(unsigned timeout_ms,
                                 const struct co_script_call *call,
                                 char *err, size_t errlen);
/* What sync.lua estimates at now_ms for a key whose counts were last
 * written in window w (cur: that window's, prev: the one before's):
 * Cloudflare's two-window approximation, ceil(prev x time left in the
 * window / window) + cur. A key not written since the previous window
 * has its cur as prev and 0 as cur; one older estimates 0; a w ahead of
 * now (a clock behind the writer's) is taken as now's window, as sync.lua
 * does. (script.c; for admin_keys.c's key inspect and stats.c's top keys,
 * checked against sync.lua in test_co_admin.c.) */
uint64_t co_window_estimate(uint64_t w, uint64_t cur, uint64_t prev,
                            uint64_t window_ms, uint64_t now_ms);

/* ------------------------------------------------------------ policy
 * (policy.c) The policy is immutable once built; readers hold a
 * reference. */
/* A per-key exception to its quota's limit (policy "overrides"). */
struct co_override {
    char key[CO_KEY_MAX + 1];
    uint64_t limit;
};

struct co_quota {
    char name[CO_QUOTA_NAME_MAX + 1];
    char key[CO_KEY_TEMPLATE_MAX + 1]; /* template, see co_key_template_check */
    uint64_t limit;
    uint32_t window_s;
    char path_prefix[CO_PATH_PREFIX_MAX + 1];
    unsigned n_methods;
    char methods[CO_METHODS_MAX][8];
    Tollgate__V1__Action action;     /* CHALLENGE or DENY over the limit */
    uint64_t floor;
    bool floor_set;                  /* the document gave floor (else it
                                      * follows limit / expected_edges) */
    bool shadow;
    bool fail_open;
    bool require_token;
    double deny_after;               /* 0 = off, else >= 1 */
    uint64_t deny_after_milli;       /* deny_after x 1000, rounded */
    uint64_t burst;                  /* most one edge is leased of a key at
                                      * once; 0 = no cap of its own */
    size_t n_overrides;
    struct co_override *overrides;   /* sorted by key, co_quota_override() */
};

/* The limit of (q, key): its override's, or the quota's. */
uint64_t co_quota_limit(const struct co_quota *q, const char *key);

struct co_policy {
    atomic_uint refs;
    uint64_t version;
    uint32_t sync_interval_ms;
    uint32_t clearance_ttl_s;
    uint32_t expected_edges;
    /* "captcha": the widget edges render; provider "" when absent */
    char captcha_provider[CO_CAPTCHA_NAME_MAX + 1];
    char captcha_site_key[CO_SITE_KEY_MAX + 1];
    size_t n_quotas;
    struct co_quota *quotas;         /* document order */
    const struct co_quota **by_name; /* sorted, for co_policy_find() */
    uint8_t *packed;                 /* Tollgate__V1__Policy wire bytes */
    size_t packed_len;
    Tollgate__V1__Policy *pb;        /* unpacked once, shared by responses */
};

/* Parse a policy document (parse_as: numbered version; load_file: from a
 * file). *out: a new policy with one reference (co_policy_release()).
 * Returns 0 or CO_EINVAL with err naming the JSON path (CO_EIO, CO_ENOMEM
 * too). */
int co_policy_parse(const char *json, size_t len, struct co_policy **out,
                    char *err, size_t errlen);
int co_policy_parse_as(const char *json, size_t len, uint64_t version,
                       struct co_policy **out, char *err, size_t errlen);
int co_policy_load_file(const char *path, struct co_policy **out,
                        char *err, size_t errlen);
/* Canonical JSON (policy.c): co_quota_to_json and co_policy_to_json
 * return new references (json_decref()), co_policy_dump the compact text
 * (malloc'd: free()); NULL when out of memory. version 0 leaves "version"
 * out (the store's form). The policy protobuf edges get carries neither
 * burst nor overrides: they act in the coordinator's lease and limit, so
 * an edge's RateLimit-Policy header shows the quota's limit. */
struct json_t *co_quota_to_json(const struct co_quota *q);
struct json_t *co_policy_to_json(const struct co_policy *p, uint64_t version);
char *co_policy_dump(const struct co_policy *p, uint64_t version);
int co_key_template_check(const char *t, size_t len, char *err,
                          size_t errlen);
/* Is s (n bytes) a quota name: 1..CO_QUOTA_NAME_MAX of [A-Za-z0-9._-]? */
bool co_quota_name_ok(const void *s, size_t n);
const struct co_quota *co_policy_find(const struct co_policy *p,
                                      const char *name);
/* Make p the current policy; takes over the caller's reference. */
void co_policy_install(struct co_policy *p);
/* A new reference to the current policy (co_policy_release()), or NULL
 * before the first install. */
struct co_policy *co_policy_current(void);
void co_policy_release(struct co_policy *p);   /* NULL is fine */

/* ------------------------------------------------------------ policy store
 * (store.c; keys in sync.lua's header, writes by policy_write.lua) Every
 * version of the policy in Redis under the hash tag {policy}, an audit
 * log, and a thread polling the current version every 250 ms that
 * installs a new one.
 * Writes install locally at once. expect is the version the write is
 * based on (If-Match), -1 for "whatever is current". Returns 0,
 * CO_ECONFLICT (*version = the current version), CO_ENOTFOUND, CO_EREDIS
 * (unreachable or timed out), CO_EREPLY or CO_ENOMEM, with err. */
int co_store_start(const struct co_policy *file, unsigned timeout_ms,
                   char *err, size_t errlen);
void co_store_stop(void);
int co_store_put(const char *doc, int64_t expect, const char *who,
                 const char *action, const char *detail, uint64_t *version,
                 char *err, size_t errlen);
int co_store_rollback(uint64_t to, int64_t expect, const char *who,
                      uint64_t *version, char *err, size_t errlen);
int co_store_audit_add(const char *who, const char *action,
                       const char *detail, char *err, size_t errlen);
/* DEL a key's counters c and e (co_rkey_counters) with its "key.reset"
 * audit entry (detail: JSON text) in one atomic call: both or neither.
 * Returns 0, or CO_EREDIS / CO_EREPLY / CO_ENOMEM with err. */
int co_store_key_reset(const char *who, const char *detail, const char *c,
                       const char *e, char *err, size_t errlen);
/* *doc: malloc'd (free()) canonical JSON of version (0: the current). */
int co_store_get(uint64_t version, char **doc, size_t *len,
                 uint64_t *found_version, char *err, size_t errlen);
/* *out: new JSON references (json_decref), shapes as GET
 * /v1/policy/versions and GET /v1/audit answer them. */
int co_store_versions(struct json_t **out, char *err, size_t errlen);
int co_store_audit(unsigned limit, uint64_t before, struct json_t **out,
                   char *err, size_t errlen);

/* ------------------------------------------------------------ edge auth
 * (auth.c, for POST /v1/sync) Every sync is signed by its edge with one
 * of the keys the key file lists for the edge's name (the part of
 * edge_id before the first '/'; any of them verifies, for rotation).
 * Request headers:
 *   Tollgate-Edge: <edge_id exactly as in the SyncRequest body>
 *   Tollgate-Timestamp: <unix time in ms, decimal, no sign>
 *   Tollgate-Signature: v1=<64 lower-case hex digits>
 * the signature being HMAC-SHA256(key, "tollgate-sync-v1\n" METHOD "\n"
 * PATH "\n" TIMESTAMP "\n" lowercase_hex(SHA-256(body))), the timestamp
 * within CO_AUTH_SKEW_MS of co_wall_ms(). A signature is accepted once:
 * sync.lua remembers it (CO_AUTH_REPLAY_TTL_MS, a bit over the 60 s in
 * which a timestamp is acceptable) in the same call that applies the
 * batch. Failures answer 401 with WWW-Authenticate: CO_AUTH_SCHEME. */
#define CO_AUTH_SCHEME        "Tollgate-HMAC-SHA256"
#define CO_AUTH_SKEW_MS       30000u
#define CO_AUTH_REPLAY_TTL_MS 65000u

enum co_auth_reason {
    CO_AUTH_OK = 0,
    CO_AUTH_MISSING_SIGNATURE,   /* no Tollgate-Signature header */
    CO_AUTH_BAD_HEADER,          /* a Tollgate-* header malformed/missing */
    CO_AUTH_UNKNOWN_EDGE,        /* no key for the edge name */
    CO_AUTH_EDGE_MISMATCH,       /* header edge != body edge_id */
    CO_AUTH_STALE_TIMESTAMP,     /* more than CO_AUTH_SKEW_MS off */
    CO_AUTH_BAD_SIGNATURE,       /* no key of the edge verifies it */
    CO_AUTH_REPLAYED,            /* signature seen before (sync.lua) */
    CO_AUTH_REASONS
};

/* What a verified request told us about itself. */
struct co_auth {
    char edge_id[CO_EDGE_ID_MAX + 1];  /* Tollgate-Edge (also on failure,
                                        * truncated, for the log line) */
    char sig_hex[65];                  /* the signature, hex */
};

/* reason -> "missing_signature", ... (the 401 detail and metric label) */
extern const char *const co_auth_reason_names[CO_AUTH_REASONS];

enum co_auth_reason co_auth_check(const struct co_request *req,
                                  struct co_auth *out);
int co_auth_sign(const uint8_t *secret, size_t secret_len,
                 const char *method, const char *path, const char *timestamp,
                 const uint8_t *body, size_t body_len, uint8_t mac[32]);
void co_auth_reject(struct co_response *resp, enum co_auth_reason reason,
                    const char *edge_id);

/* ------------------------------------------------------------ stats
 * (stats.c records and flushes; stats_read.c reads, merges and renders
 * the document; stats.lua is the script both call)
 * GET /v1/stats, the dashboard's one call: decisions per second over the
 * last 15 minutes, the edges seen in the last 10, the top keys of each
 * quota by sliding-window estimate (carried, decaying, over the window's
 * turn) and the recent challenges, merged across
 * coordinators through Redis. Each coordinator records locally (one mutex
 * acquisition per sync; top keys below a quota's K-th count take none) and
 * a thread flushes what Redis lacks once a second in one script call; a
 * read adds what is not flushed yet, and answers from local state alone
 * when Redis fails ("merged": false). Bearer token of any role. */
enum co_stats_outcome {
    CO_STATS_ALLOWED = 0,
    CO_STATS_DENIED,
    CO_STATS_CHALLENGED,
    CO_STATS_SHADOW,              /* a shadow quota's, all three summed */
    CO_STATS_OUTCOMES
};

#define CO_STATS_TOP_K 10         /* keys per quota */

/* One authenticated, well-formed sync answered 200 (degraded or not) or
 * 409 (an older seq: the edge is alive, nothing was applied). */
struct co_stats_sync {
    const char *edge_id;
    const char *module_version;   /* the SyncRequest's, as sent */
    uint64_t sent_at_ms;          /* 0: unknown (lag 0) */
    uint64_t policy_version;      /* what the edge says it enforces */
    uint64_t refused_version;     /* the policy it could not install (0:
                                   * none), and why (PolicyRefusal) */
    unsigned refused_reason;
    bool degraded;                /* the answer was */
    /* applied (not degraded, not retried) decisions, attributed as
     * co_metrics_decisions() does */
    uint64_t decisions[CO_STATS_OUTCOMES];
};

void co_stats_sync_seen(const struct co_stats_sync *s, uint64_t now_ms);
/* Edges of this coordinator's table that synced within ttl_ms of now_ms,
 * the largest lag among them, and how many of them report a policy they
 * could not install (for /metrics). */
void co_stats_edges_active(uint64_t now_ms, uint64_t ttl_ms,
                           uint64_t *active, uint64_t *max_lag_ms,
                           uint64_t *refused);
/* The wire name of a PolicyRefusal ("too_many_quotas", ...; "unknown"
 * past the known ones), static storage. */
const char *co_policy_refusal_name(unsigned reason);
/* est: the sliding-window estimate sync.lua answered for key of q, the
 * quota at its index in pol (the policy the sync ran with). */
void co_stats_top_key(const struct co_policy *pol, const struct co_quota *q,
                      const char *key, uint64_t est, uint64_t now_ms);
/* A challenge token for (quota, key) went to edge_id in a sync answer. */
void co_stats_challenge_issued(const char *quota, const char *key,
                               size_t klen, const char *edge_id,
                               uint64_t now_ms);
/* POST /v1/challenge/verify succeeded for (quota, key hash). */
void co_stats_challenge_solved(const char *quota, const uint8_t kh[16],
                               uint64_t now_ms);
/* The flush thread (every second; a last flush at stop); timeout_ms
 * (--redis-timeout-ms) bounds each Redis exchange of the module, a
 * GET /v1/stats included. Returns 0 or CO_EIO with err. */
int co_stats_start(unsigned timeout_ms, char *err, size_t errlen);
void co_stats_stop(void);
/* One flush now, on the calling thread's Redis connection. Returns 0,
 * CO_EREDIS / CO_EREPLY (nothing marked flushed) or CO_ENOMEM, with err. */
int co_stats_flush(char *err, size_t errlen);
/* The /v1/stats document at now_ms for viewer: *out is a new reference
 * (json_decref). Returns 0 or CO_ENOMEM; Redis failing is not an error. */
int co_stats_render(const struct co_admin_token *viewer, uint64_t now_ms,
                    struct json_t **out);
void co_stats_reset(void);   /* tests: forget everything local */
void co_stats_handle(const struct co_request *req, struct co_response *resp);

/* ------------------------------------------------------------ metrics
 * (metrics.c) GET /metrics in the Prometheus text format 0.0.4, no auth.
 * Process-wide counters are plain atomics (relaxed); per-quota series live
 * in a table of at most CO_QUOTA_NAMES_SEEN names (lock-free once a name is in
 * it); the edge gauges come from the edge table of /v1/stats
 * (co_stats_edges_active). Labels are quota names and fixed words only,
 * never keys or edge ids. */
enum co_sync_result {
    CO_SYNC_RESULT_OK = 0,
    CO_SYNC_RESULT_DEGRADED,
    CO_SYNC_RESULT_BAD_REQUEST,
    CO_SYNC_RESULT_UNAUTHORIZED,
    CO_SYNC_RESULT_CONFLICT,
    CO_SYNC_RESULT_ERROR,
    CO_SYNC_RESULTS
};

/* What one siteverify call of siteverify.c ended in (a metric label). */
enum co_captcha_result {
    CO_CAPTCHA_SOLVED = 0,       /* success: true */
    CO_CAPTCHA_REFUSED,          /* the provider says the response is bad */
    CO_CAPTCHA_MISCONFIGURED,    /* the provider refuses our secret/key */
    CO_CAPTCHA_UNREACHABLE,      /* no usable answer: network, timeout,
                                  * 5xx, garbage, internal-error */
    CO_CAPTCHA_RESULTS
};

#define CO_METRICS_BUCKETS    11      /* finite sync duration buckets */
#define CO_METRICS_EDGE_TTL_MS 60000u /* "active": synced this recently */

struct co_metrics {
    atomic_ullong sync_requests[CO_SYNC_RESULTS];
    /* per bucket, not cumulative; [CO_METRICS_BUCKETS] is (1 s, +Inf) */
    atomic_ullong sync_duration_buckets[CO_METRICS_BUCKETS + 1];
    atomic_ullong sync_duration_sum_us;
    atomic_ullong challenges_issued;   /* tokens signed in sync answers */
    atomic_ullong sent_at_clamped;     /* sent_at_ms over CO_LAG_MAX_MS off */
    /* Redis failures by kind ([CO_REDIS_OK] unused; redis.c) */
    atomic_ullong redis_errors[CO_REDIS_KINDS];
    atomic_bool redis_up;              /* the Redis state is CO_REDIS_OK */
    /* siteverify.c: siteverify calls by outcome, retries, provider state */
    atomic_ullong captcha_calls[CO_CAPTCHA_RESULTS];
    atomic_ullong captcha_retries;     /* internal-error answered again */
    atomic_bool captcha_down;          /* the last call could not be used */
    atomic_ullong tls_not_after_s;     /* tls.c: the served leaf's notAfter
                                        * (unix s); 0 = plain HTTP */
    /* rejected syncs by reason ([CO_AUTH_OK] unused; auth.c) */
    atomic_ullong auth_failures[CO_AUTH_REASONS];
    /* POST /v1/challenge/verify outcomes (challenge_verify.c) */
    atomic_ullong challenges_verified_ok;
    atomic_ullong challenges_failed_invalid;     /* bad or forged token */
    atomic_ullong challenges_failed_expired;
    atomic_ullong challenges_failed_captcha;     /* captcha not solved */
    atomic_ullong challenges_failed_reused;      /* nonce already burnt */
    atomic_ullong challenges_failed_unavailable; /* Redis, verifier, config */
};

extern struct co_metrics co_metrics;
extern const char *const co_sync_result_names[CO_SYNC_RESULTS];

void co_metrics_sync_done(enum co_sync_result result, uint64_t dur_us);
/* One applied KeyCount of quota (a shadow quota's go to "shadow"). */
void co_metrics_decisions(const char *quota, bool shadow, uint64_t admitted,
                          uint64_t denied, uint64_t challenged);
/* est/limit of one key of quota in a sync reply, at now_ms. */
void co_metrics_overshoot(const char *quota, uint64_t window_ms,
                          uint64_t now_ms, uint64_t est, uint64_t limit);
/* The exposition at now_ms (policy_version: the current one); *out is
 * malloc'd (the caller frees it with free()). Returns 0 or CO_ENOMEM. */
int co_metrics_render(uint64_t now_ms, uint64_t policy_version, char **out,
                      size_t *len);
/* Tests: zero the sync, decision and Redis figures (not the auth and
 * challenge outcome counters, which tests read as deltas). */
void co_metrics_reset(void);
void co_metrics_handle(const struct co_request *req,
                       struct co_response *resp);

/* ------------------------------------------------------------ challenges
 * (challenge_token.c, the format in its file comment) Challenge tokens
 * and the clearance tokens edges verify. Tokens and secrets are never
 * logged. */
#define CO_CLEARANCE_MAX 768         /* bytes of a clearance JWS, NUL incl. */

struct co_challenge_claims {
    char kid[CO_KEY_ID_MAX + 1];     /* the challenge key that signed it */
    char quota[CO_QUOTA_NAME_MAX + 1];
    uint8_t key_hash[16];            /* SHA-256(quota "\n" key)[0..16] */
    uint64_t issued_at_s;
    uint64_t expires_at_s;
    uint8_t nonce[16];
};

int co_hmac_sha256(const uint8_t *key, size_t keylen, const uint8_t *data,
                   size_t len, uint8_t out[32]);
void co_challenge_key_hash(const char *quota, const char *key, size_t klen,
                           uint8_t out[16]);
int co_challenge_issue(const struct co_key *k, const char *quota,
                       const char *key, size_t klen, uint64_t now_s,
                       uint32_t ttl_s, char *out, size_t outlen);
/* Any challenge key of k whose id the token names may have signed it. */
int co_challenge_check(const struct co_keyring *k, const char *token,
                       size_t token_len, uint64_t now_s,
                       struct co_challenge_claims *claims);
/* The challenge token of a sync answer: signed with the current challenge
 * key (co_keys.challenge[0]). Returns its length or a CO_E* code. */
int co_challenge_token(const char *quota, const char *key, size_t klen,
                       uint64_t now_s, uint32_t ttl_s, char *out,
                       size_t outlen);
int co_clearance_issue(const struct co_key *k, const char *quota,
                       const uint8_t kh[16], uint64_t now_s, uint32_t ttl_s,
                       char *out, size_t outlen);

/* ------------------------------------------------------------ captcha
 * Captcha verifiers (captcha.c). verify() returns 0 when response solves
 * the captcha bound to the challenge token, CO_EBADTOKEN when it does not,
 * CO_EIO when the provider could not be asked (err says why; never the
 * response). remote_ip may be NULL. */
struct co_verifier {
    const char *name;
    int (*verify)(const struct co_verifier *v, const char *challenge_token,
                  size_t tlen, const char *response, size_t rlen,
                  const char *remote_ip, char *err, size_t errlen);
    void *ctx;                  /* the provider's; borrowed from the keys */
};

int co_verifier_open(const struct co_keyring *k, struct co_verifier *out,
                     char *err, size_t errlen);

/* The captcha providers, by the name the key file's `captcha` line and the
 * policy's "captcha.provider" give: 0 when name is one (*widget: it has a
 * browser widget, hence a site key), else CO_EINVAL. The one list of names
 * (captcha.c registers a verifier per name; policy.c checks documents). */
static inline int co_captcha_provider_known(const char *name, bool *widget)
{
    static const char *const names[] = {"static", "turnstile", "hcaptcha"};

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(names[i], name) == 0) {
            *widget = i > 0;
            return CO_OK;
        }
    }
    return CO_EINVAL;
}

/* (siteverify.c) Turnstile and hCaptcha: siteverify over HTTPS with
 * libcurl. Configured once before threads start: verify_url "" = the
 * provider's own; timeout_ms bounds one verification, retries included;
 * max_inflight caps verifications waiting on the provider at once (each
 * holds an HTTP worker thread, which syncs also need): past it, 503. */
struct co_captcha_config {
    char verify_url[512];
    unsigned timeout_ms;
    unsigned max_inflight;
};

int co_captcha_init(const struct co_captcha_config *cfg, char *err,
                    size_t errlen);
void co_captcha_shutdown(void);
int co_captcha_open_turnstile(const struct co_key *key,
                              struct co_verifier *out, char *err,
                              size_t errlen);
int co_captcha_open_hcaptcha(const struct co_key *key,
                             struct co_verifier *out, char *err,
                             size_t errlen);

/* ------------------------------------------------------------ challenge verify
 * POST /v1/challenge/verify (challenge_verify.c); contract in that file. */
void co_challenge_verify(const struct co_keyring *k,
                         const struct co_request *req,
                         struct co_response *resp);
void co_challenge_verify_handle(const struct co_request *req,
                                struct co_response *resp);

/* ------------------------------------------------------------ sync
 * POST /v1/sync (sync.c); contract in that file. */
void co_sync_handle(const struct co_request *req, struct co_response *resp);

/* ------------------------------------------------------------ health
 * (health.c) GET /healthz (alive) and GET /readyz (Redis reachable from
 * this thread and a policy loaded; 503 with the reason otherwise). */
void co_health_live(const struct co_request *req, struct co_response *resp);
void co_health_ready(const struct co_request *req, struct co_response *resp);

/* ------------------------------------------------------------ dashboard
 * GET /dashboard and /dashboard/{file} (dashboard.c): the ops page and its
 * script and style, embedded at build time from coordinator/dashboard/. */
void co_dashboard_handle(const struct co_request *req,
                         struct co_response *resp);

/* ------------------------------------------------------------ admin API
 * (admin.c and admin_policy.c, admin_quotas.c, admin_keys.c; endpoints and
 * statuses in admin.c's file comment), on the admin tokens above. Without
 * --admin-tokens every admin route answers 401. */

/* The caller's bearer token if it may read (write: and write), else NULL
 * with resp holding the 401 (and WWW-Authenticate) or 403. */
const struct co_admin_token *co_admin_authorize(const struct co_request *req,
                                                struct co_response *resp,
                                                bool write);
void co_admin_policy_get(const struct co_request *req,
                         struct co_response *resp);
void co_admin_policy_put(const struct co_request *req,
                         struct co_response *resp);
void co_admin_versions(const struct co_request *req,
                       struct co_response *resp);
void co_admin_version_get(const struct co_request *req,
                          struct co_response *resp);
void co_admin_rollback(const struct co_request *req,
                       struct co_response *resp);
void co_admin_quota_get(const struct co_request *req,
                        struct co_response *resp);
void co_admin_quota_put(const struct co_request *req,
                        struct co_response *resp);
void co_admin_quota_delete(const struct co_request *req,
                           struct co_response *resp);
void co_admin_override_put(const struct co_request *req,
                           struct co_response *resp);
void co_admin_override_delete(const struct co_request *req,
                              struct co_response *resp);
void co_admin_key_get(const struct co_request *req,
                      struct co_response *resp);
void co_admin_key_reset(const struct co_request *req,
                        struct co_response *resp);
void co_admin_audit(const struct co_request *req, struct co_response *resp);

/* Shared by the admin_*.c endpoint files (admin.c). answer_json steals
 * v (json_decref'd there); the others leave resp holding the error answer
 * when they fail. co_admin_body_object returns a new reference
 * (json_decref) or NULL; co_admin_load_current a policy the caller
 * releases (co_policy_release) or NULL. co_admin_commit steals detail. */
void co_admin_answer_json(struct co_response *resp, unsigned status,
                          struct json_t *v, uint64_t etag_version);
void co_admin_store_error(struct co_response *resp, int rc, const char *err);
/* A 400 for the validator's err ("<path>: <why>"), with the path as a
 * JSON pointer in the problem's errors[]. */
void co_admin_invalid(struct co_response *resp, const char *err);
bool co_admin_if_match(const struct co_request *req,
                       struct co_response *resp, int64_t *expect);
void co_admin_stale(struct co_response *resp, uint64_t current);
struct json_t *co_admin_body_object(const struct co_request *req,
                                    struct co_response *resp);
void co_admin_log_write(const struct co_admin_token *t, const char *action,
                        const char *what, unsigned status, uint64_t version);
struct co_policy *co_admin_load_current(struct co_response *resp);
int co_admin_commit(const struct co_admin_token *t, const struct co_policy *p,
                    int64_t expect, bool report_stale, const char *action,
                    const char *target, struct json_t *detail,
                    struct co_response *resp, uint64_t *version);
uint64_t co_admin_parse_version(const char *s);

#endif
