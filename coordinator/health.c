/* health.c — GET /healthz and GET /readyz.
 *
 * /healthz says the process serves HTTP at all (a liveness probe: restart
 * me if this fails). /readyz says this worker thread can reach Redis right
 * now (a readiness probe: send me sync traffic). They differ on purpose:
 * a Redis outage must take coordinators out of rotation, not restart them;
 * they keep answering sync in degraded mode meanwhile.
 */
#include <stdio.h>
#include <string.h>

#include "tollgated.h"

void co_health_live(const struct co_request *req, struct co_response *resp)
{
    (void)req;
    co_response_set(resp, 200, "text/plain; charset=utf-8", "ok\n", 3);
}

/* probe.lua on the calling worker's own connection: the same one sync
 * requests on this thread would use, so "ready" means what the edges will
 * see, and "Redis" means Redis that takes tollgated's scripted writes (a
 * Redis that answers PING but refuses scripts, is full, read-only or a
 * cluster node is not ready). The probe is bounded by --redis-timeout-ms,
 * and a thread in reconnect backoff answers 503 at once. A probe that
 * passes while another worker's failure is still the process's state
 * (less than a second old) answers 503 with that state: ready means
 * every worker's Redis works. 503 carries the kind and a plain reason. */
void co_health_ready(const struct co_request *req, struct co_response *resp)
{
    char err[256], v[300], detail[300];
    enum co_redis_kind kind;

    (void)req;
    if (co_redis_check(&kind, err, sizeof err) == CO_OK) {
        kind = co_redis_state(err, sizeof err);
        if (kind == CO_REDIS_OK) {
            co_response_set(resp, 200, "text/plain; charset=utf-8",
                            "ready\n", 6);
            return;
        }
    }
    CO_DEBUG("msg=not_ready kind=%s detail=%s", co_redis_kind_names[kind],
             co_log_value(v, sizeof v, err, strlen(err)));
    snprintf(detail, sizeof detail, "redis: %s", err);
    co_response_unavailable(resp, co_redis_kind_names[kind], detail);
}
