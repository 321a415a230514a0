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
