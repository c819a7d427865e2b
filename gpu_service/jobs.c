/* jobs.c: see jobs.h. The queue is a ring of queue + workers entries: a job waits there
 * between submit and the moment a worker takes it, so that a free worker never refuses. */
#include "jobs.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct job {
    hc_job_fn fn;
    void *arg;
};

struct hc_jobs {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t *threads;
    int nthreads;
    struct job *ring;
    int cap, head, count; /* ring of waiting jobs */
    int running;
    int limit; /* waiting + running allowed */
    int stopping;
};

static void *
worker(void *arg)
{
    struct hc_jobs *j = arg;

    pthread_mutex_lock(&j->lock);
    for (;;) {
        while (j->count == 0 && !j->stopping)
            pthread_cond_wait(&j->wake, &j->lock);
        if (j->count == 0)
            break; /* stopping and nothing left */
        struct job jb = j->ring[j->head];
        j->head = (j->head + 1) % j->cap;
        j->count--;
        j->running++;
        pthread_mutex_unlock(&j->lock);
        jb.fn(jb.arg);
        pthread_mutex_lock(&j->lock);
        j->running--;
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

int
hc_jobs_new(int workers, int queue, struct hc_jobs **out)
{
    struct hc_jobs *j;
    int rc = 0;

    if (workers < 1 || queue < 0)
        return -EINVAL;
    j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->wake, NULL);
    j->limit = workers + queue;
    j->cap = j->limit;
    j->ring = calloc((size_t)j->cap, sizeof *j->ring);
    j->threads = calloc((size_t)workers, sizeof *j->threads);
    if (!j->ring || !j->threads) {
        rc = -ENOMEM;
        goto out;
    }
    for (; j->nthreads < workers; j->nthreads++) {
        rc = -pthread_create(&j->threads[j->nthreads], NULL, worker, j);
        if (rc)
            goto out;
    }
    *out = j;
    return 0;
out:
    hc_jobs_free(j);
    return rc;
}

int
hc_jobs_submit(struct hc_jobs *j, hc_job_fn fn, void *arg)
{
    int rc = 0;

    pthread_mutex_lock(&j->lock);
    if (j->stopping || j->count + j->running >= j->limit) {
        rc = -EAGAIN;
    } else {
        j->ring[(j->head + j->count) % j->cap] = (struct job){fn, arg};
        j->count++;
        pthread_cond_signal(&j->wake);
    }
    pthread_mutex_unlock(&j->lock);
    return rc;
}

void
hc_jobs_stats(struct hc_jobs *j, int *queued, int *running)
{
    pthread_mutex_lock(&j->lock);
    *queued = j->count;
    *running = j->running;
    pthread_mutex_unlock(&j->lock);
}

void
hc_jobs_stop(struct hc_jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    j->stopping = 1;
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    for (int i = 0; i < j->nthreads; i++)
        pthread_join(j->threads[i], NULL);
    j->nthreads = 0;
}

void
hc_jobs_free(struct hc_jobs *j)
{
    if (!j)
        return;
    hc_jobs_stop(j);
    free(j->threads);
    free(j->ring);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->lock);
    free(j);
}
