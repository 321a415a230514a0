/* ticker.c — a background thread that calls one function every period:
 * the policy store's poll (store.c) and the stats flush (stats.c).
 *
 * The thread sleeps on a condition variable bound to the monotonic clock
 * (a wall clock step neither stalls nor races it) and stop wakes it at
 * once, so stopping costs at most the tick in progress, whose Redis waits
 * are bounded by their own deadlines. A ticker may ask for one more tick
 * after stop (final), run once the caller has stopped producing work. The
 * thread's Redis connection is closed when it ends.
 */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "tollgated.h"

static void *ticker_thread(void *arg)
{
    struct co_ticker *t = arg;
    struct timespec until;

    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        co_timespec_after(true, t->period_ms, &until);
        pthread_cond_timedwait(&t->wake, &t->lock, &until);
        if (t->stop)
            break;
        pthread_mutex_unlock(&t->lock);
        t->tick();
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    if (t->final)
        t->tick();
    co_redis_shutdown();
    return NULL;
}

int co_ticker_start(struct co_ticker *t, char *err, size_t errlen)
{
    pthread_condattr_t ca;

    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &ca);
    pthread_condattr_destroy(&ca);
    t->stop = false;
    if (pthread_create(&t->thread, NULL, ticker_thread, t) != 0) {
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->lock);
        snprintf(err, errlen, "cannot start a background thread");
        return CO_EIO;
    }
    t->running = true;
    return CO_OK;
}

void co_ticker_stop(struct co_ticker *t)
{
    if (!t->running)
        return;
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->lock);
    t->running = false;
}
