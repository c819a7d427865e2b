/* clock.h: deadlines for pthread_cond_timedwait on a clock that is never set back.
 *
 * hc_cond_init_steady makes a condition variable that waits on CLOCK_MONOTONIC where the
 * system allows it (pthread_condattr_setclock; not on macOS, where it falls back to the wall
 * clock); hc_deadline_in gives the absolute time ms from now on that same clock. A wait made
 * with both is not stretched or cut short when someone sets the date.
 */
#ifndef HC_CORE_CLOCK_H
#define HC_CORE_CLOCK_H

#include <pthread.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* pthread_cond_init with the steady clock; returns its result (0 or an errno value). */
int hc_cond_init_steady(pthread_cond_t *c);

/* Now, on the clock of hc_cond_init_steady's condition variables. */
void hc_steady_now(struct timespec *ts);

/* *ts moved ms milliseconds on (ms >= 0). */
void hc_timespec_add_ms(struct timespec *ts, long long ms);

/* hc_steady_now plus ms: a deadline for pthread_cond_timedwait. */
void hc_deadline_in(struct timespec *ts, long long ms);

/* Milliseconds from a to b (negative when b is earlier). */
long long hc_ms_between(const struct timespec *a, const struct timespec *b);

#ifdef __cplusplus
}
#endif
#endif
