/* clock.c — the coordinator's two clocks.
 *
 * Wall time goes on the wire (server_time_ms, challenge token times);
 * monotonic time measures durations and Redis backoff, so a wall clock
 * step never stalls a reconnect. Everything else asks these two functions,
 * which lets a test pin time with -Wl,--wrap=co_wall_ms.
 */
#include <time.h>

#include "tollgated.h"

uint64_t co_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t co_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t co_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The absolute time ms from now on the monotonic clock (a condition
 * variable set to it) or the wall clock (pthread_mutex_timedlock). */
void co_timespec_after(bool monotonic, unsigned ms, struct timespec *out)
{
    clock_gettime(monotonic ? CLOCK_MONOTONIC : CLOCK_REALTIME, out);
    out->tv_sec += ms / 1000u;
    out->tv_nsec += (long)(ms % 1000u) * 1000000L;
    out->tv_sec += out->tv_nsec / 1000000000L;
    out->tv_nsec %= 1000000000L;
}
