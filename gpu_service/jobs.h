/* jobs.h: a fixed pool of worker threads with a bounded queue: the service's semaphore.
 *
 * At most `workers` jobs run at once and at most `queue` more wait; a submit beyond that is
 * refused at once (the HTTP layer answers 429) instead of piling up memory and latency.
 */
#ifndef HC_JOBS_H
#define HC_JOBS_H

typedef void (*hc_job_fn)(void *arg);

struct hc_jobs;

/* Starts `workers` (>= 1) threads. Returns 0 or -errno. Free with hc_jobs_free(). */
int hc_jobs_new(int workers, int queue, struct hc_jobs **out);

/* Queues fn(arg) to run on a worker. Returns 0, or -EAGAIN when workers and queue are full
 * (fn is then not called). Thread safe. */
int hc_jobs_submit(struct hc_jobs *j, hc_job_fn fn, void *arg);

/* Jobs waiting and running right now. */
void hc_jobs_stats(struct hc_jobs *j, int *queued, int *running);

/* Refuses new jobs (submit answers -EAGAIN), runs every job already submitted, and joins
 * the workers. j stays valid for submit and stats (the HTTP threads may still call them)
 * until hc_jobs_free(). Calling it again does nothing. */
void hc_jobs_stop(struct hc_jobs *j);

/* hc_jobs_stop(), then frees j. */
void hc_jobs_free(struct hc_jobs *j);

#endif
