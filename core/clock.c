/* clock.c: see clock.h. */
#include "clock.h"

int
hc_cond_init_steady(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    int r = pthread_condattr_init(&ca);
    if (r != 0)
        return r;
#ifdef HC_HAVE_CONDATTR_SETCLOCK
    (void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
#endif
    r = pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
    return r;
}

void
hc_steady_now(struct timespec *ts)
{
#ifdef HC_HAVE_CONDATTR_SETCLOCK
    clock_gettime(CLOCK_MONOTONIC, ts);
#else
    clock_gettime(CLOCK_REALTIME, ts);
#endif
}

void
hc_timespec_add_ms(struct timespec *ts, long long ms)
{
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void
hc_deadline_in(struct timespec *ts, long long ms)
{
    hc_steady_now(ts);
    hc_timespec_add_ms(ts, ms);
}

long long
hc_ms_between(const struct timespec *a, const struct timespec *b)
{
    return (long long)(b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}
