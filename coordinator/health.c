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

/* PING on the calling worker's own connection: the same one sync requests
 * on this thread would use, so "ready" means what the edges will see. The
 * PING is bounded by --redis-timeout-ms, and a thread in reconnect backoff
 * answers 503 at once. */
void co_health_ready(const struct co_request *req, struct co_response *resp)
{
    char err[256], v[300], detail[300];

    (void)req;
    if (co_redis_ping(err, sizeof err) == CO_OK) {
        co_response_set(resp, 200, "text/plain; charset=utf-8", "ready\n", 6);
        return;
    }
    CO_DEBUG("msg=not_ready detail=%s",
             co_log_value(v, sizeof v, err, strlen(err)));
    snprintf(detail, sizeof detail, "redis: %s", err);
    co_response_problem(resp, 503, detail);
}
