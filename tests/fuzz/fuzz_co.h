/* fuzz_co.h — what the coordinator's fuzz targets share (fuzz_sync.c,
 * fuzz_admin.c, fuzz_challenge.c): the checks, the key file (challenge
 * key c1, clearance key k1, edge e1 whose secret is 32 bytes of 0xe1), and
 * the set-up that installs it and a policy. Include once per target. */
#ifndef FUZZ_CO_H
#define FUZZ_CO_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgated.h"

/* Like assert(), but never compiled out: the calls inside matter. */
#define CHECK(x) do { if (!(x)) abort(); } while (0)
/* A failed check on an answer shows the answer before aborting. */
#define CHECK_ANSWER(x, resp) do { if (!(x)) { \
    fprintf(stderr, "answer %u: %.*s\n", (resp)->status, \
            (int)(resp)->body_len, (const char *)(resp)->body); \
    abort(); } } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_EDGE_SECRET_BYTE 0xe1

static const char fuzz_keys_text[] =
    "challenge c1 "
    "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1\n"
    "clearance k1 "
    "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1\n"
    "edge e1 "
    "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1\n";

/* Logging off, co_keys loaded, policy_json (NULL: none) installed. */
static void fuzz_co_setup(const char *policy_json)
{
    struct co_policy *p = NULL;
    char err[256];

    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);
    CHECK(co_keys_parse(fuzz_keys_text, strlen(fuzz_keys_text), &co_keys,
                        err, sizeof err) == CO_OK);
    if (policy_json == NULL)
        return;
    CHECK(co_policy_parse(policy_json, strlen(policy_json), &p, err,
                          sizeof err) == CO_OK);
    co_policy_install(p);
}

#endif
