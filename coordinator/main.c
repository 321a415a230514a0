/* main.c — tollgated's lifecycle: configure, start, wait for a signal,
 * drain, stop.
 *
 * Signals are blocked before any thread exists, so every worker inherits
 * the mask and only main's sigwait() sees SIGTERM/SIGINT/SIGHUP; no
 * handler runs in an arbitrary thread. Exit status: 0 after a clean
 * shutdown, 1 when startup fails at run time (policy or key file, bind),
 * 2 for bad usage.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>
#include <jansson.h>
#include <curl/curl.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <protobuf-c/protobuf-c.h>

#include "tollgated.h"

#define DRAIN_TIMEOUT_MS 5000u
/* Least time the policy store waits on Redis: a write moves a whole
 * document, more than a sync's --redis-timeout-ms budget was sized for. */
#define STORE_TIMEOUT_MS 1000u

static const char *process_env(const char *name)
{
    return getenv(name);
}

static void print_version(void)
{
    printf("tollgated %s (libmicrohttpd %s, hiredis %d.%d.%d, protobuf-c %s, "
           "%s, jansson %s, GnuTLS %s, libcurl %s)\n", CO_VERSION,
           MHD_get_version(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH,
           protobuf_c_version(),
           OpenSSL_version(OPENSSL_VERSION), JANSSON_VERSION,
           gnutls_check_version(NULL),
           curl_version_info(CURLVERSION_NOW)->version);
}

/* Load the key file into co_keys. tollgated cannot sign a challenge or a
 * clearance without those keys, so a file lacking either refuses the start
 * rather than failing every challenge later. Logs counts, never secrets.
 * Returns 0, or -1 after logging why (the caller exits 1). */
static int load_keys(const char *path)
{
    char err[256], v[300], f[300];

    if (co_keys_load(path, &co_keys, err, sizeof err) != CO_OK) {
        CO_ERROR("msg=keys_invalid file=%s detail=%s",
                 co_log_value(f, sizeof f, path, strlen(path)),
                 co_log_value(v, sizeof v, err, strlen(err)));
        return -1;
    }
    if (co_keys.n_challenge == 0 || co_keys.n_clearance == 0) {
        CO_ERROR("msg=keys_invalid file=%s detail=\"needs at least one "
                 "challenge key and one clearance key\"",
                 co_log_value(f, sizeof f, path, strlen(path)));
        co_keys_free(&co_keys);
        return -1;
    }
    CO_INFO("msg=keys_loaded challenge=%zu clearance=%zu edges=%zu "
            "captcha=%s", co_keys.n_challenge, co_keys.n_clearance,
            co_keys.n_edges, co_keys.has_captcha ? "yes" : "no");
    if (co_keys.has_captcha) {
        struct co_verifier probe;

        /* A misspelt verifier name would otherwise only show as a 503 on
         * every solved challenge. */
        if (co_verifier_open(&co_keys, &probe, err, sizeof err) != CO_OK) {
            CO_ERROR("msg=keys_invalid file=%s detail=%s",
                     co_log_value(f, sizeof f, path, strlen(path)),
                     co_log_value(v, sizeof v, err, strlen(err)));
            co_keys_free(&co_keys);
            return -1;
        }
    } else {
        CO_WARN("msg=keys_no_captcha detail=\"no captcha key: POST "
                "/v1/challenge/verify answers 503\"");
    }
    if (co_keys.n_edges == 0)
        CO_WARN("msg=keys_no_edges detail=\"no edge keys: every sync will "
                "be refused (401 unknown_edge)\"");
    return 0;
}

/* libcurl and the hosted captcha verifiers' settings, before any thread.
 * A verifier can wait on its provider only as long as half the HTTP
 * workers: the others keep answering syncs. Returns 0 or -1 after
 * logging. */
static int start_captcha(const struct co_config *cfg)
{
    struct co_captcha_config cc = {
        .timeout_ms = cfg->captcha_timeout_ms,
        .max_inflight = cfg->threads / 2 > 0 ? cfg->threads / 2 : 1,
    };
    char err[256], v[300];

    snprintf(cc.verify_url, sizeof cc.verify_url, "%s",
             cfg->captcha_verify_url);
    if (co_captcha_init(&cc, err, sizeof err) != CO_OK) {
        CO_ERROR("msg=captcha_init_failed detail=%s",
                 co_log_value(v, sizeof v, err, strlen(err)));
        return -1;
    }
    if (co_keys.has_captcha && strcmp(co_keys.captcha.id, "static") != 0)
        CO_INFO("msg=captcha_verifier provider=%s url=%s timeout_ms=%u "
                "max_inflight=%u", co_keys.captcha.id,
                cc.verify_url[0] != '\0' ? cc.verify_url : "(provider's)",
                cc.timeout_ms, cc.max_inflight);
    return 0;
}

/* Load the admin tokens into co_admin_tokens. No file: the admin API is
 * off (every route 401), said once here. Returns 0 or -1 after logging. */
static int load_admin_tokens(const char *path)
{
    char err[256], v[300], f[300];
    size_t admins = 0;

    if (path[0] == '\0') {
        CO_WARN("msg=admin_api_off detail=\"no --admin-tokens: every admin "
                "route answers 401\"");
        return 0;
    }
    if (co_tokens_load(path, &co_admin_tokens, err, sizeof err) != CO_OK) {
        CO_ERROR("msg=admin_tokens_invalid file=%s detail=%s",
                 co_log_value(f, sizeof f, path, strlen(path)),
                 co_log_value(v, sizeof v, err, strlen(err)));
        return -1;
    }
    for (size_t i = 0; i < co_admin_tokens.n; i++)
        admins += co_admin_tokens.tokens[i].admin;
    CO_INFO("msg=admin_tokens_loaded tokens=%zu admin=%zu",
            co_admin_tokens.n, admins);
    return 0;
}

int main(int argc, char **argv)
{
    struct co_config cfg;
    static struct co_redis_target seeds[CO_REDIS_SEEDS_MAX];
    size_t nseeds = 0;
    struct co_policy *policy = NULL;
    struct MHD_Daemon *daemon = NULL;
    sigset_t sigs;
    char err[512], v[600], addr[300];
    int rc, sig = 0;

    rc = co_config_parse(argc, argv, process_env, &cfg, err, sizeof err);
    if (rc == CO_CONFIG_HELP) {
        co_config_usage(stdout);
        return 0;
    }
    if (rc == CO_CONFIG_VERSION) {
        print_version();
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "tollgated: %s\nTry 'tollgated --help'.\n", err);
        return 2;
    }
    if (co_redis_parse_seeds(cfg.redis_url, cfg.redis_timeout_ms, seeds,
                             CO_REDIS_SEEDS_MAX, &nseeds, err,
                             sizeof err) != CO_OK) {
        fprintf(stderr, "tollgated: --redis: %s\nTry 'tollgated --help'.\n",
                err);
        return 2;
    }
    atomic_store(&co_log_min_level, (int)cfg.log_level);
    json_object_seed(0);   /* jansson's hash seed, before any thread */

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    /* A peer closing its socket (Redis restarting) must be an EPIPE on
     * write, not the death of the process. */
    signal(SIGPIPE, SIG_IGN);

    if (co_policy_load_file(cfg.policy_path, &policy, err,
                            sizeof err) != CO_OK) {
        CO_ERROR("msg=policy_invalid file=%s detail=%s",
                 co_log_value(addr, sizeof addr, cfg.policy_path,
                              strlen(cfg.policy_path)),
                 co_log_value(v, sizeof v, err, strlen(err)));
        return 1;
    }
    CO_INFO("msg=policy_loaded quotas=%zu sync_interval_ms=%u",
            policy->n_quotas, policy->sync_interval_ms);

    if (load_keys(cfg.keys_path) != 0 ||
        load_admin_tokens(cfg.admin_tokens_path) != 0) {
        rc = 1;
        goto cleanup;
    }
    co_server.max_body = cfg.max_body;
    if (start_captcha(&cfg) != 0) {
        rc = 1;
        goto cleanup;
    }

    rc = co_redis_init_seeds(seeds, nseeds, err, sizeof err);
    if (rc == CO_OK)
        CO_INFO("msg=redis_ready addr=%s:%d mode=%s script=%s",
                seeds[0].host, seeds[0].port,
                co_redis_is_cluster() ? "cluster" : "single",
                co_redis_script_sha());
    else if (rc == CO_ENOMEM || rc == CO_EINVAL) {
        CO_ERROR("msg=redis_init_failed detail=%s",
                 co_log_value(v, sizeof v, err, strlen(err)));
        rc = 1;
        goto cleanup;
    } else
        CO_WARN("msg=redis_unavailable addr=%s:%d seeds=%zu detail=%s "
                "note=\"serving degraded until Redis is fixed\"",
                seeds[0].host, seeds[0].port, nseeds,
                co_log_value(v, sizeof v, err, strlen(err)));

    /* The policy tollgated serves is the store's current version; the
     * file only seeds an empty store (or stands in while Redis is down). */
    if (co_store_start(policy, cfg.redis_timeout_ms > STORE_TIMEOUT_MS
                       ? cfg.redis_timeout_ms : STORE_TIMEOUT_MS, err,
                       sizeof err) != CO_OK) {
        CO_ERROR("msg=policy_store_failed detail=%s",
                 co_log_value(v, sizeof v, err, strlen(err)));
        rc = 1;
        goto cleanup;
    }
    co_policy_release(policy);
    policy = NULL;
    if (co_stats_start(cfg.redis_timeout_ms, err, sizeof err) != CO_OK) {
        CO_ERROR("msg=stats_start_failed detail=%s",
                 co_log_value(v, sizeof v, err, strlen(err)));
        rc = 1;
        goto cleanup;
    }
    if (co_redis_watch_start(err, sizeof err) != CO_OK) {
        CO_ERROR("msg=redis_watch_start_failed detail=%s",
                 co_log_value(v, sizeof v, err, strlen(err)));
        rc = 1;
        goto cleanup;
    }

    if (cfg.tls_cert_path[0] != '\0' &&
        co_tls_init(cfg.tls_cert_path, cfg.tls_key_path, err,
                    sizeof err) != CO_OK) {
        CO_ERROR("msg=tls_invalid detail=%s",
                 co_log_value(v, sizeof v, err, strlen(err)));
        rc = 1;
        goto cleanup;
    }
    if (co_http_start(cfg.listen, cfg.threads, &cfg.http, &daemon, addr,
                      sizeof addr, err, sizeof err) != CO_OK) {
        CO_ERROR("msg=listen_failed detail=%s",
                 co_log_value(v, sizeof v, err, strlen(err)));
        rc = 1;
        goto cleanup;
    }
    CO_INFO("msg=listening addr=%s scheme=%s threads=%u max_body=%zu "
            "redis_timeout_ms=%u max_connections=%u max_conns_per_ip=%u "
            "request_timeout_ms=%u version=%s", addr,
            co_tls_enabled() ? "https" : "http", cfg.threads,
            cfg.max_body, cfg.redis_timeout_ms, cfg.http.max_conns,
            cfg.http.max_conns_per_ip, cfg.http.request_timeout_ms,
            CO_VERSION);

    for (;;) {
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig != SIGHUP)
            break;
        if (co_tls_enabled()) {
            co_tls_reload();
            continue;
        }
        CO_INFO("msg=sighup_ignored detail=\"the policy lives in Redis: "
                "change it with the admin API (/v1/policy)\"");
    }
    CO_INFO("msg=shutting_down signal=%s drain_ms=%u",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", DRAIN_TIMEOUT_MS);
    co_http_drain_and_stop(daemon, DRAIN_TIMEOUT_MS);
    CO_INFO("msg=stopped");
    rc = 0;
cleanup:
    co_redis_watch_stop();
    co_stats_stop();
    co_store_stop();
    co_redis_shutdown();
    co_captcha_shutdown();
    co_tls_shutdown();
    co_policy_release(policy);
    co_policy_install(NULL);
    co_keys_free(&co_keys);
    co_tokens_free(&co_admin_tokens);
    return rc;
}
