/* fuzz_policy.c — libFuzzer target for co_policy_parse(): the coordinator's
 * policy JSON parser and validator (coordinator/policy.c), which reads what
 * an operator PUTs on the admin API and the --policy file, and converts it
 * to the protobuf every sync response carries.
 *
 * Input: the document's bytes as they come off the wire (no terminating
 * NUL). A parse must either fail with a NUL-terminated message and nothing
 * allocated, or give a policy whose invariants hold; the policy is then
 * released, so LeakSanitizer sees anything the parser keeps.
 * Seeds in tests/fuzz/corpus/policy/: deploy/example-policy.json and small
 * valid and invalid documents.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgated.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct co_policy *p = (struct co_policy *)1;
    char err[256];

    memset(err, 0x55, sizeof err);
    if (co_policy_parse((const char *)data, size, &p, err, sizeof err)
        != CO_OK) {
        CHECK(p == NULL);
        CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
        return 0;
    }
    CHECK(p != NULL && p->version >= 1 && p->n_quotas <= CO_QUOTAS_MAX);
    CHECK(p->pb != NULL && p->pb->n_quotas == p->n_quotas);
    for (size_t i = 0; i < p->n_quotas; i++) {
        const struct co_quota *q = &p->quotas[i];

        CHECK(co_policy_find(p, q->name) == q);
        CHECK(q->limit > 0);
        CHECK(strcmp(p->pb->quotas[i]->name, q->name) == 0);
        for (size_t o = 0; o < q->n_overrides; o++)
            CHECK(co_quota_limit(q, q->overrides[o].key) ==
                  q->overrides[o].limit);
    }
    co_policy_release(p);
    return 0;
}
