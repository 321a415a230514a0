/* siteverify.c — Cloudflare Turnstile and hCaptcha behind struct co_verifier
 * (registered in captcha.c).
 *
 * Both providers answer the same question the same way: the server POSTs a
 * form (secret, response, remoteip; hCaptcha also sitekey, Turnstile an
 * idempotency_key) to the provider's siteverify URL and gets JSON back,
 * {"success": bool, "error-codes": [...]}. What this file adds is the
 * mapping of every answer onto the verifier contract (tollgated.h):
 *
 *   CO_OK        success: true
 *   CO_EBADTOKEN the client's fault, said without a call when the response
 *                is empty or over CAPTCHA_RESPONSE_MAX (2,048 characters,
 *                both providers' documented maximum), or by the provider:
 *                missing-input-response, invalid-input-response,
 *                expired-input-response, timeout-or-duplicate,
 *                already-seen-response, invalid-or-already-seen-response,
 *                and any code we do not know (logged: the provider may
 *                have added one)
 *   CO_EIO       no usable answer: connect failure, timeout, non-200,
 *                a body that is not the documented JSON, internal-error
 *                (Turnstile's is retried once with the same
 *                idempotency_key, as its docs require for retries), and
 *                the provider refusing *us*: missing/invalid-input-secret,
 *                invalid-parsed-secret, invalid-widget-id,
 *                sitekey-secret-mismatch, not-using-dummy-passcode,
 *                bad-request, missing/invalid-remoteip
 *
 * CO_EIO makes the endpoint answer 503 before the challenge token's nonce
 * is burnt, so the client keeps its token and may try again: the verifier
 * fails closed (no clearance) without failing the client for our outage.
 * Each CO_EIO/ok flip of the provider is one log line and the
 * tollgate_captcha_provider_up gauge; every call is counted by result.
 *
 * A verification blocks its HTTP worker thread for up to --captcha-
 * timeout-ms, and syncs share those threads: at most max_inflight
 * verifications wait on the provider at once, the next ones get CO_EIO at
 * once. The secret and the response are never logged.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "tollgated.h"

#define CAPTCHA_RESPONSE_MAX 2048     /* characters, both providers */
#define CAPTCHA_BODY_MAX     16384    /* bytes of a siteverify answer */
#define CAPTCHA_REMOTE_IP_MAX 64

enum code_class { CODE_CLIENT, CODE_CONFIG, CODE_RETRY };

/* Every error code the two providers document, and whose fault it is. */
static const struct {
    const char *code;
    enum code_class cls;
} codes[] = {
    {"missing-input-response", CODE_CLIENT},
    {"invalid-input-response", CODE_CLIENT},
    {"expired-input-response", CODE_CLIENT},          /* hCaptcha */
    {"already-seen-response", CODE_CLIENT},           /* hCaptcha */
    {"invalid-or-already-seen-response", CODE_CLIENT},/* hCaptcha */
    {"timeout-or-duplicate", CODE_CLIENT},            /* Turnstile */
    {"missing-input-secret", CODE_CONFIG},
    {"invalid-input-secret", CODE_CONFIG},
    {"invalid-parsed-secret", CODE_CONFIG},           /* Turnstile */
    {"invalid-widget-id", CODE_CONFIG},               /* Turnstile */
    {"sitekey-secret-mismatch", CODE_CONFIG},         /* hCaptcha */
    {"invalid-sitekey", CODE_CONFIG},                 /* hCaptcha */
    {"not-using-dummy-passcode", CODE_CONFIG},        /* hCaptcha */
    {"missing-remoteip", CODE_CONFIG},                /* hCaptcha */
    {"invalid-remoteip", CODE_CONFIG},                /* hCaptcha */
    {"bad-request", CODE_CONFIG},
    {"internal-error", CODE_RETRY},                   /* Turnstile */
};

struct provider {
    const char *name;
    const char *default_url;
    bool sends_sitekey;       /* hCaptcha: the policy's site key */
    bool idempotent_retry;    /* Turnstile: idempotency_key, one retry */
};

static const struct provider turnstile = {
    "turnstile", "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    false, true,
};
static const struct provider hcaptcha = {
    "hcaptcha", "https://api.hcaptcha.com/siteverify", true, false,
};

static struct co_captcha_config config = {
    .timeout_ms = 1500, .max_inflight = 4,
};
static atomic_uint inflight;

/* Start libcurl (not thread-safe to start: main calls this before any
 * thread) and keep the configuration. Returns 0 or CO_EIO with err. */
int co_captcha_init(const struct co_captcha_config *cfg, char *err,
                    size_t errlen)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "libcurl failed to start");
        return CO_EIO;
    }
    config = *cfg;
    if (config.max_inflight == 0)
        config.max_inflight = 1;
    return CO_OK;
}

void co_captcha_shutdown(void)
{
    curl_global_cleanup();
}

struct answer {
    char *p;
    size_t len;
    bool too_big;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t len = size * n;
    char *np;

    if (a->len + len > CAPTCHA_BODY_MAX) {
        a->too_big = true;
        return 0;                     /* curl aborts the transfer */
    }
    np = realloc(a->p, a->len + len + 1);
    if (np == NULL)
        return 0;
    memcpy(np + a->len, data, len);
    a->p = np;
    a->len += len;
    a->p[a->len] = '\0';
    return len;
}

/* "&name=<escaped value>" appended to *form (malloc'd, grows; the caller
 * frees it). Returns 0 or CO_ENOMEM. */
static int form_add(CURL *c, char **form, size_t *len, const char *name,
                    const char *val, size_t vlen)
{
    char *esc = curl_easy_escape(c, val, (int)vlen), *np;
    size_t n;

    if (esc == NULL)
        return CO_ENOMEM;
    n = strlen(name) + strlen(esc) + 2;
    np = realloc(*form, *len + n + 1);
    if (np == NULL) {
        curl_free(esc);
        return CO_ENOMEM;
    }
    *form = np;
    *len += (size_t)snprintf(np + *len, n + 1, "%s%s=%s", *len ? "&" : "",
                             name, esc);
    curl_free(esc);
    return CO_OK;
}

/* Whether s is an IPv4 or IPv6 address. The edge passes on what its
 * client-address source said; anything else is left out of the call
 * rather than sent for the provider to answer invalid-remoteip, which
 * would read as our misconfiguration. */
static bool is_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return s != NULL && strlen(s) <= CAPTCHA_REMOTE_IP_MAX &&
           (inet_pton(AF_INET, s, buf) == 1 ||
            inet_pton(AF_INET6, s, buf) == 1);
}

/* A random UUID (RFC 9562 version 4) into out[37]. */
static int uuid4(char out[37])
{
    uint8_t b[16];
    char hex[33];

    if (RAND_bytes(b, sizeof b) != 1)
        return CO_EIO;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    co_hex_encode(b, sizeof b, hex, sizeof hex);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12,
             hex + 16, hex + 20);
    return CO_OK;
}

/* One POST of form to url within timeout_ms. Returns 0 with the answer
 * in *a (the caller frees a->p) when the provider answered 200, else
 * CO_EIO with err. */
static int post_form(const char *url, const char *form, unsigned timeout_ms,
                     struct answer *a, char *err, size_t errlen)
{
    CURL *c = curl_easy_init();
    char cerr[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURLcode rc;

    if (c == NULL) {
        snprintf(err, errlen, "cannot start a libcurl handle");
        return CO_EIO;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);   /* threads: no SIGALRM */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "tollgated/" CO_VERSION);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "siteverify: %s", a->too_big
                 ? "answer over 16384 bytes"
                 : cerr[0] != '\0' ? cerr : curl_easy_strerror(rc));
        return CO_EIO;
    }
    if (status != 200) {
        snprintf(err, errlen, "siteverify answered HTTP %ld", status);
        return CO_EIO;
    }
    return CO_OK;
}

/* The verdict of one siteverify answer: CO_OK, CO_EBADTOKEN, CO_EIO (not
 * the documented JSON, or a configuration code), or CODE_RETRY's marker
 * CO_EREPLY (internal-error). err names the code. */
static int judge(const struct answer *a, enum co_captcha_result *result,
                 char *err, size_t errlen)
{
    json_t *root = json_loadb(a->p != NULL ? a->p : "", a->len, 0, NULL);
    json_t *ok = json_is_object(root) ? json_object_get(root, "success")
                                      : NULL;
    json_t *list, *v;
    size_t i;
    int rc = CO_EBADTOKEN;

    *result = CO_CAPTCHA_REFUSED;
    if (!json_is_boolean(ok)) {
        snprintf(err, errlen, "siteverify answer is not the documented JSON");
        *result = CO_CAPTCHA_UNREACHABLE;
        rc = CO_EIO;
        goto done;
    }
    if (json_is_true(ok)) {
        *result = CO_CAPTCHA_SOLVED;
        rc = CO_OK;
        goto done;
    }
    snprintf(err, errlen, "not solved (no error code)");
    list = json_object_get(root, "error-codes");
    json_array_foreach(list, i, v) {
        const char *code = json_string_value(v);
        size_t k;

        if (code == NULL)
            continue;
        for (k = 0; k < sizeof codes / sizeof codes[0]; k++)
            if (strcmp(codes[k].code, code) == 0)
                break;
        if (k == sizeof codes / sizeof codes[0]) {
            char cv[96];

            CO_WARN("msg=captcha_unknown_code code=%s",
                    co_log_value(cv, sizeof cv, code, strlen(code)));
            snprintf(err, errlen, "not solved: %.64s", code);
            continue;
        }
        snprintf(err, errlen, "%s%s", codes[k].cls == CODE_CLIENT
                 ? "not solved: " : "", codes[k].code);
        if (codes[k].cls == CODE_CONFIG) {
            *result = CO_CAPTCHA_MISCONFIGURED;
            rc = CO_EIO;
            break;
        }
        if (codes[k].cls == CODE_RETRY) {
            *result = CO_CAPTCHA_UNREACHABLE;
            rc = CO_EREPLY;
            break;
        }
    }
done:
    json_decref(root);
    return rc;
}

/* The provider's state after a call: one log line when it flips. */
static void provider_state(const struct provider *p, bool down,
                           const char *why)
{
    bool was = atomic_exchange(&co_metrics.captcha_down, down);
    char v[300];

    if (was == down)
        return;
    if (down)
        CO_ERROR("msg=captcha_provider_down provider=%s detail=%s", p->name,
                 co_log_value(v, sizeof v, why, strlen(why)));
    else
        CO_INFO("msg=captcha_provider_up provider=%s", p->name);
}

/* The verifier of both providers (contract in the file comment). The
 * challenge token is not sent: the provider binds its response to its own
 * widget; tollgate binds the solve to the token by burning the token's
 * nonce in the same request. */
static int siteverify(const struct co_verifier *v, const char *token,
                      size_t tlen, const char *response, size_t rlen,
                      const char *remote_ip, char *err, size_t errlen)
{
    const struct provider *p = v->name == turnstile.name ? &turnstile
                                                         : &hcaptcha;
    const struct co_key *k = v->ctx;
    struct co_policy *pol = NULL;
    enum co_captcha_result result = CO_CAPTCHA_UNREACHABLE;
    struct answer a = {0};
    uint64_t deadline = co_mono_ms() + config.timeout_ms;
    const char *url = config.verify_url[0] != '\0' ? config.verify_url
                                                   : p->default_url;
    char *form = NULL, idem[37];
    size_t flen = 0;
    int rc = CO_EIO;
    CURL *esc = NULL;

    (void)token;
    (void)tlen;
    if (rlen == 0 || rlen > CAPTCHA_RESPONSE_MAX) {
        snprintf(err, errlen, rlen == 0 ? "empty captcha response"
                 : "captcha response over 2048 characters");
        return CO_EBADTOKEN;
    }
    if (atomic_fetch_add(&inflight, 1) >= config.max_inflight) {
        atomic_fetch_sub(&inflight, 1);
        snprintf(err, errlen, "%u captcha verifications already waiting on "
                 "%s", config.max_inflight, p->name);
        return CO_EIO;
    }
    esc = curl_easy_init();
    if (esc == NULL || uuid4(idem) != CO_OK) {
        snprintf(err, errlen, "cannot prepare the siteverify call");
        goto done;
    }
    if (form_add(esc, &form, &flen, "secret", (const char *)k->secret,
                 k->len) != CO_OK ||
        form_add(esc, &form, &flen, "response", response, rlen) != CO_OK)
        goto nomem;
    if (is_ip(remote_ip) &&
        form_add(esc, &form, &flen, "remoteip", remote_ip,
                 strlen(remote_ip)) != CO_OK)
        goto nomem;
    if (p->sends_sitekey) {
        pol = co_policy_current();
        if (pol != NULL && pol->captcha_site_key[0] != '\0' &&
            form_add(esc, &form, &flen, "sitekey", pol->captcha_site_key,
                     strlen(pol->captcha_site_key)) != CO_OK)
            goto nomem;
    }
    if (p->idempotent_retry &&
        form_add(esc, &form, &flen, "idempotency_key", idem,
                 strlen(idem)) != CO_OK)
        goto nomem;

    for (unsigned attempt = 0;; attempt++) {
        uint64_t now = co_mono_ms();

        free(a.p);
        memset(&a, 0, sizeof a);
        if (now >= deadline) {
            snprintf(err, errlen, "siteverify: no time left for a retry");
            rc = CO_EIO;
            break;
        }
        rc = post_form(url, form, (unsigned)(deadline - now), &a, err,
                       errlen);
        if (rc != CO_OK) {
            result = CO_CAPTCHA_UNREACHABLE;
            break;
        }
        rc = judge(&a, &result, err, errlen);
        if (rc != CO_EREPLY)
            break;
        /* internal-error: Turnstile answers a retry carrying the same
         * idempotency_key as the first call; hCaptcha has no such key. */
        if (!p->idempotent_retry || attempt > 0) {
            rc = CO_EIO;
            break;
        }
        atomic_fetch_add_explicit(&co_metrics.captcha_retries, 1,
                                  memory_order_relaxed);
    }
    goto done;
nomem:
    snprintf(err, errlen, "out of memory");
    rc = CO_EIO;
done:
    atomic_fetch_add_explicit(&co_metrics.captcha_calls[result], 1,
                              memory_order_relaxed);
    provider_state(p, rc == CO_EIO, err);
    atomic_fetch_sub(&inflight, 1);
    if (form != NULL) {
        OPENSSL_cleanse(form, flen);
        free(form);
    }
    free(a.p);
    if (esc != NULL)
        curl_easy_cleanup(esc);
    co_policy_release(pol);
    return rc;
}

static int open_provider(const struct provider *p, const struct co_key *key,
                         struct co_verifier *out, char *err, size_t errlen)
{
    if (key->len == 0) {
        snprintf(err, errlen, "%s: empty secret", p->name);
        return CO_EINVAL;
    }
    out->name = p->name;
    out->verify = siteverify;
    out->ctx = (void *)key;
    return CO_OK;
}

int co_captcha_open_turnstile(const struct co_key *key,
                              struct co_verifier *out, char *err,
                              size_t errlen)
{
    return open_provider(&turnstile, key, out, err, errlen);
}

int co_captcha_open_hcaptcha(const struct co_key *key,
                             struct co_verifier *out, char *err,
                             size_t errlen)
{
    return open_provider(&hcaptcha, key, out, err, errlen);
}
