/* config.c — command-line flags and TOLLGATE_* environment variables.
 *
 * Every setting can come from a flag or from its environment variable; the
 * flag wins, and an empty variable counts as unset (container runtimes like
 * to set them to ""). Parsing is a pure function of argv and an env lookup,
 * so tests can drive it without touching the process environment.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tollgated.h"

typedef int (*setter_fn)(struct co_config *cfg, const char *val,
                         char *err, size_t errlen);

struct option_def {
    const char *flag;
    const char *env;
    setter_fn set;
    const char *arg;
    const char *help;
};

static int copy_str(char *dst, size_t dstlen, const char *val,
                    char *err, size_t errlen)
{
    size_t n = strlen(val);

    if (n == 0 || n >= dstlen) {
        snprintf(err, errlen, "must be 1..%zu bytes", dstlen - 1);
        return CO_EINVAL;
    }
    memcpy(dst, val, n + 1);
    return CO_OK;
}

/* Strict unsigned decimal: digits only, no sign, no spaces, no overflow. */
static int parse_u64(const char *val, uint64_t min, uint64_t max,
                     uint64_t *out, char *err, size_t errlen)
{
    char *end;
    unsigned long long v;

    errno = 0;
    if (val[0] < '0' || val[0] > '9')
        goto bad;
    v = strtoull(val, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        goto bad;
    *out = v;
    return CO_OK;
bad:
    snprintf(err, errlen, "must be an integer %llu..%llu",
             (unsigned long long)min, (unsigned long long)max);
    return CO_EINVAL;
}

static int set_listen(struct co_config *cfg, const char *val,
                      char *err, size_t errlen)
{
    const char *colon = strrchr(val, ':');

    if (colon == NULL || colon == val || colon[1] == '\0') {
        snprintf(err, errlen, "must be host:port (e.g. 127.0.0.1:8080)");
        return CO_EINVAL;
    }
    return copy_str(cfg->listen, sizeof cfg->listen, val, err, errlen);
}

static int set_redis(struct co_config *cfg, const char *val,
                     char *err, size_t errlen)
{
    if (strncmp(val, "redis://", 8) != 0) {
        snprintf(err, errlen, "must be a redis:// URL");
        return CO_EINVAL;
    }
    return copy_str(cfg->redis_url, sizeof cfg->redis_url, val, err, errlen);
}

static int set_policy(struct co_config *cfg, const char *val,
                      char *err, size_t errlen)
{
    return copy_str(cfg->policy_path, sizeof cfg->policy_path, val,
                    err, errlen);
}

static int set_threads(struct co_config *cfg, const char *val,
                       char *err, size_t errlen)
{
    uint64_t v;
    int rc = parse_u64(val, 1, 1024, &v, err, errlen);

    if (rc == CO_OK)
        cfg->threads = (unsigned)v;
    return rc;
}

static int set_max_body(struct co_config *cfg, const char *val,
                        char *err, size_t errlen)
{
    uint64_t v;
    int rc = parse_u64(val, 1024, 64u << 20, &v, err, errlen);

    if (rc == CO_OK)
        cfg->max_body = (size_t)v;
    return rc;
}

static int set_redis_timeout(struct co_config *cfg, const char *val,
                             char *err, size_t errlen)
{
    uint64_t v;
    int rc = parse_u64(val, 1, 60000, &v, err, errlen);

    if (rc == CO_OK)
        cfg->redis_timeout_ms = (unsigned)v;
    return rc;
}

static int set_max_conns(struct co_config *cfg, const char *val,
                         char *err, size_t errlen)
{
    uint64_t v;
    int rc = parse_u64(val, 16, 1000000, &v, err, errlen);

    if (rc == CO_OK)
        cfg->http.max_conns = (unsigned)v;
    return rc;
}

static int set_max_conns_per_ip(struct co_config *cfg, const char *val,
                                char *err, size_t errlen)
{
    uint64_t v;
    int rc = parse_u64(val, 0, 1000000, &v, err, errlen);

    if (rc == CO_OK)
        cfg->http.max_conns_per_ip = (unsigned)v;
    return rc;
}

static int set_request_timeout(struct co_config *cfg, const char *val,
                               char *err, size_t errlen)
{
    uint64_t v;
    int rc = parse_u64(val, 100, 3600000, &v, err, errlen);

    if (rc == CO_OK)
        cfg->http.request_timeout_ms = (unsigned)v;
    return rc;
}

static int set_keys(struct co_config *cfg, const char *val,
                    char *err, size_t errlen)
{
    return copy_str(cfg->keys_path, sizeof cfg->keys_path, val, err, errlen);
}

static int set_admin_tokens(struct co_config *cfg, const char *val,
                            char *err, size_t errlen)
{
    return copy_str(cfg->admin_tokens_path, sizeof cfg->admin_tokens_path,
                    val, err, errlen);
}

static int set_log_level(struct co_config *cfg, const char *val,
                         char *err, size_t errlen)
{
    if (co_log_level_parse(val, &cfg->log_level) != CO_OK) {
        snprintf(err, errlen, "must be debug, info, warn or error");
        return CO_EINVAL;
    }
    return CO_OK;
}

static const struct option_def options[] = {
    {"--listen", "TOLLGATE_LISTEN", set_listen, "HOST:PORT",
     "address to serve HTTP on (default 127.0.0.1:8080; port 0 = any)"},
    {"--redis", "TOLLGATE_REDIS", set_redis, "URL[,URL...]",
     "redis://[[user]:password@]host[:port][/db] (default "
     "redis://127.0.0.1:6379); several comma-separated URLs are seed "
     "nodes of a Redis Cluster (detected with CLUSTER SLOTS, also from "
     "one URL; no /db then)"},
    {"--policy", "TOLLGATE_POLICY", set_policy, "FILE",
     "policy JSON document (required); seeds the policy store in Redis "
     "as version 1 when Redis holds no version, and is ignored after"},
    {"--threads", "TOLLGATE_THREADS", set_threads, "N",
     "HTTP worker threads (default 2 x cores, at least 2)"},
    {"--max-body", "TOLLGATE_MAX_BODY", set_max_body, "BYTES",
     "largest request body accepted (default 1048576)"},
    {"--redis-timeout-ms", "TOLLGATE_REDIS_TIMEOUT_MS", set_redis_timeout,
     "MS", "most a sync waits for Redis in total, connect included, "
     "before answering degraded (default 50)"},
    {"--keys", "TOLLGATE_KEYS", set_keys, "FILE",
     "key file: challenge, clearance, edge and captcha secrets, one "
     "\"<kind> <id> <hex>\" per line (required; every coordinator must "
     "share the challenge and clearance keys; chmod 600)"},
    {"--admin-tokens", "TOLLGATE_ADMIN_TOKENS", set_admin_tokens, "FILE",
     "admin API bearer tokens, one \"<name> <read|admin> <sha256 hex of "
     "the token>\" per line (without it the admin API answers 401; "
     "chmod 600)"},
    {"--max-connections", "TOLLGATE_MAX_CONNECTIONS", set_max_conns, "N",
     "open HTTP connections held at once, all clients together; more are "
     "closed at accept (default 4096; keep it under the open-files limit)"},
    {"--max-conns-per-ip", "TOLLGATE_MAX_CONNS_PER_IP", set_max_conns_per_ip,
     "N", "open HTTP connections from one client address; more are closed "
     "at accept (default 128; 0 = no cap, e.g. behind a load balancer, "
     "where every client shares its address)"},
    {"--request-timeout-ms", "TOLLGATE_REQUEST_TIMEOUT_MS",
     set_request_timeout, "MS", "deadline for a request's head and body, "
     "from the accept or the previous response; past it the connection is "
     "closed (default 10000; apart from it a connection idle 15 s closes)"},
    {"--log-level", "TOLLGATE_LOG_LEVEL", set_log_level, "LEVEL",
     "debug, info, warn or error (default info)"},
};

#define N_OPTIONS (sizeof options / sizeof options[0])

void co_config_usage(FILE *out)
{
    fprintf(out, "usage: tollgated --policy FILE --keys FILE [options]\n\n"
            "tollgate coordinator: reconciles edge counts in Redis and "
            "answers POST /v1/sync.\n\noptions (each also from its "
            "environment variable; the flag wins):\n");
    for (size_t i = 0; i < N_OPTIONS; i++)
        fprintf(out, "  %s %s\n      %s  [%s]\n", options[i].flag,
                options[i].arg, options[i].help, options[i].env);
    fprintf(out, "  --help       this text\n  --version    version and "
            "library versions\n\nexit status: 0 after a clean shutdown "
            "(SIGTERM/SIGINT), 1 on a runtime error, 2 on bad usage\n");
}

static unsigned default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        n = 1;
    if (n > 128)
        n = 128;
    return (unsigned)(2 * n);
}

static void set_defaults(struct co_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->listen, sizeof cfg->listen, "127.0.0.1:8080");
    snprintf(cfg->redis_url, sizeof cfg->redis_url, "redis://127.0.0.1:6379");
    cfg->threads = default_threads();
    cfg->max_body = 1u << 20;
    cfg->redis_timeout_ms = 50;
    cfg->log_level = CO_LOG_INFO;
    cfg->http.max_conns = 4096;
    cfg->http.max_conns_per_ip = 128;
    cfg->http.request_timeout_ms = 10000;
}

/* Fill cfg from defaults, then the environment, then argv (flags win).
 * Accepts "--flag value" and "--flag=value". Returns CO_CONFIG_RUN,
 * CO_CONFIG_HELP or CO_CONFIG_VERSION, or CO_EINVAL with a message naming
 * the flag or variable in err (the caller prints it and exits 2). */
int co_config_parse(int argc, char **argv, co_getenv_fn getenv_fn,
                    struct co_config *cfg, char *err, size_t errlen)
{
    char why[160];

    set_defaults(cfg);
    for (size_t i = 0; getenv_fn != NULL && i < N_OPTIONS; i++) {
        const char *v = getenv_fn(options[i].env);

        if (v == NULL || v[0] == '\0')
            continue;
        if (options[i].set(cfg, v, why, sizeof why) != CO_OK) {
            snprintf(err, errlen, "%s: %s", options[i].env, why);
            return CO_EINVAL;
        }
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a], *eq, *val;
        const struct option_def *opt = NULL;
        size_t namelen;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return CO_CONFIG_HELP;
        if (strcmp(arg, "--version") == 0)
            return CO_CONFIG_VERSION;
        eq = strchr(arg, '=');
        namelen = eq ? (size_t)(eq - arg) : strlen(arg);
        for (size_t i = 0; i < N_OPTIONS; i++) {
            if (strlen(options[i].flag) == namelen &&
                strncmp(options[i].flag, arg, namelen) == 0)
                opt = &options[i];
        }
        if (opt == NULL) {
            snprintf(err, errlen, "unknown argument '%s'", arg);
            return CO_EINVAL;
        }
        if (eq != NULL) {
            val = eq + 1;
        } else if (a + 1 < argc) {
            val = argv[++a];
        } else {
            snprintf(err, errlen, "%s needs a value (%s)", opt->flag,
                     opt->arg);
            return CO_EINVAL;
        }
        if (opt->set(cfg, val, why, sizeof why) != CO_OK) {
            snprintf(err, errlen, "%s: %s", opt->flag, why);
            return CO_EINVAL;
        }
    }
    if (cfg->policy_path[0] == '\0') {
        snprintf(err, errlen, "--policy FILE (or TOLLGATE_POLICY) is "
                 "required");
        return CO_EINVAL;
    }
    if (cfg->keys_path[0] == '\0') {
        snprintf(err, errlen, "--keys FILE (or TOLLGATE_KEYS) is required: "
                 "the key file holds every secret (see --help)");
        return CO_EINVAL;
    }
    return CO_CONFIG_RUN;
}

