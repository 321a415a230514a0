/* simclock.c — the coordinator's wall clock under the accuracy simulator.
 *
 * build/tollgated-sim is build/tollgated linked with -Wl,--wrap=co_wall_ms
 * and this file: every co_wall_ms() call in the coordinator lands here and
 * reads the simulated wall clock (ms since the epoch, a u64 in host byte
 * order at offset 0) from the file named by TOLLGATE_SIM_CLOCK, which
 * build/bench-sim maps shared and writes. The monotonic clocks stay real:
 * they time Redis waits and backoff, which happen in real time.
 *
 * The simulator only advances the clock while no request is in flight, so
 * a plain atomic load is enough. A tollgated-sim started without the
 * variable (or with a file it cannot map) is a setup error, not something
 * to paper over with real time: it says so and exits.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tollgated.h"

uint64_t __wrap_co_wall_ms(void);

static const uint64_t *sim_now;
static pthread_once_t sim_once = PTHREAD_ONCE_INIT;

static void sim_map(void)
{
    const char *path = getenv("TOLLGATE_SIM_CLOCK");
    void *p;
    int fd;

    if (path == NULL || *path == '\0') {
        fprintf(stderr, "tollgated-sim: TOLLGATE_SIM_CLOCK is not set\n");
        exit(1);
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    p = mmap(NULL, sizeof(uint64_t), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        perror("tollgated-sim: mmap of the clock file");
        exit(1);
    }
    sim_now = p;
}

uint64_t __wrap_co_wall_ms(void)
{
    pthread_once(&sim_once, sim_map);
    return __atomic_load_n(sim_now, __ATOMIC_ACQUIRE);
}
