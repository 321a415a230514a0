/* captcha.c — captcha verifiers behind one interface.
 *
 * The verify endpoint asks "did the client solve the captcha bound to this
 * challenge token?" through struct co_verifier and never knows which
 * provider answers. A provider is one entry in the table below: its name
 * (the id of the key file's `captcha` line) and an open function that
 * builds a verifier from that key. Adding hCaptcha or Turnstile is a new
 * entry whose verify makes one HTTP call to the provider's siteverify URL
 * with a timeout no longer than the coordinator's Redis timeout, and maps
 * "provider unreachable" to CO_EIO (the endpoint answers 503, the client
 * keeps its token) and "not solved" to CO_EBADTOKEN (403).
 *
 * The only provider shipped is `static`, for local runs and tests: the
 * solved response to a challenge token is the lower-case hex of
 * HMAC-SHA256(captcha secret, token bytes). Whoever holds the secret can
 * solve every challenge, so it is a stand-in for a real provider, never a
 * defence; but its answer is bound to one token, as a real one is.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "tollgated.h"

static int static_verify(const struct co_verifier *v, const char *token,
                         size_t tlen, const char *response, size_t rlen,
                         const char *remote_ip, char *err, size_t errlen)
{
    const struct co_key *k = v->ctx;
    uint8_t mac[32];
    char want[65];
    int same;

    (void)remote_ip;
    if (co_hmac_sha256(k->secret, k->len, (const uint8_t *)token, tlen,
                       mac) != CO_OK ||
        co_hex_encode(mac, sizeof mac, want, sizeof want) != 64) {
        snprintf(err, errlen, "cannot compute the expected response");
        return CO_EIO;
    }
    /* The length is public (always 64); the content is compared in
     * constant time so a client cannot guess it byte by byte. */
    same = rlen == 64 && CRYPTO_memcmp(want, response, 64) == 0;
    OPENSSL_cleanse(want, sizeof want);
    OPENSSL_cleanse(mac, sizeof mac);
    if (!same) {
        snprintf(err, errlen, "response does not match the challenge");
        return CO_EBADTOKEN;
    }
    return CO_OK;
}

static int static_open(const struct co_key *key, struct co_verifier *out,
                       char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    out->name = "static";
    out->verify = static_verify;
    out->ctx = (void *)key;
    return CO_OK;
}

struct provider {
    const char *name;
    int (*open)(const struct co_key *key, struct co_verifier *out, char *err,
                size_t errlen);
};

/* The registry: one line per provider. */
static const struct provider providers[] = {
    {"static", static_open},
};

/* The verifier the keyring's `captcha` key configures, into out (which
 * borrows k: keep k alive while out is used). Returns 0; CO_ENOTFOUND
 * when no captcha key is configured; CO_EINVAL when the key names no
 * known provider (err says which). Cheap enough to call per request. */
int co_verifier_open(const struct co_keyring *k, struct co_verifier *out,
                     char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!k->has_captcha) {
        snprintf(err, errlen, "no captcha verifier configured");
        return CO_ENOTFOUND;
    }
    for (size_t i = 0; i < sizeof providers / sizeof providers[0]; i++)
        if (strcmp(providers[i].name, k->captcha.id) == 0)
            return providers[i].open(&k->captcha, out, err, errlen);
    snprintf(err, errlen, "unknown captcha verifier \"%.64s\" (known: "
             "static)", k->captcha.id);
    return CO_EINVAL;
}
