/* metrics.c: see metrics.h. One mutex: updates are a handful of additions per request, far
 * below the cost of the request itself. */
#include "metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int status_codes[] = {200, 400, 401, 404, 405, 413, 415, 422, 429, 500, 503};
#define NSTATUS (sizeof status_codes / sizeof status_codes[0])
static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])
static const char *const error_names[HC_ERR_COUNT] = {
    "bad_request", "unauthorized", "not_found", "method",      "too_large", "unsupported",
    "limits",      "overloaded",   "backend",   "unavailable", "aborted"};

struct hc_metrics {
    pthread_mutex_t lock;
    char *backend;
    int ndev;
    char **devnames;
    double *busy;
    uint64_t by_status[NSTATUS + 1]; /* last: any other code */
    uint64_t tiles, bytes_in, bytes_out;
    uint64_t hist[NBUCKETS];
    uint64_t count;
    double sum;
    uint64_t errors[HC_ERR_COUNT];
};

struct hc_metrics *
hc_metrics_new(const char *backend, int ndev, const char *const *devnames)
{
    struct hc_metrics *m = calloc(1, sizeof *m);

    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->ndev = ndev;
    m->backend = strdup(backend);
    m->devnames = calloc((size_t)ndev, sizeof *m->devnames);
    m->busy = calloc((size_t)ndev, sizeof *m->busy);
    if (!m->backend || !m->devnames || !m->busy)
        goto fail;
    for (int i = 0; i < ndev; i++)
        if (!(m->devnames[i] = strdup(devnames[i])))
            goto fail;
    return m;
fail:
    hc_metrics_free(m);
    return NULL;
}

void
hc_metrics_free(struct hc_metrics *m)
{
    if (!m)
        return;
    for (int i = 0; m->devnames && i < m->ndev; i++)
        free(m->devnames[i]);
    free(m->devnames);
    free(m->busy);
    free(m->backend);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void
hc_metrics_request(struct hc_metrics *m, int status, double seconds, uint64_t bytes_in,
                   uint64_t bytes_out, unsigned tiles)
{
    size_t s = NSTATUS;

    for (size_t i = 0; i < NSTATUS; i++)
        if (status_codes[i] == status)
            s = i;
    pthread_mutex_lock(&m->lock);
    m->by_status[s]++;
    m->tiles += tiles;
    m->bytes_in += bytes_in;
    m->bytes_out += bytes_out;
    for (size_t b = 0; b < NBUCKETS; b++)
        if (seconds <= buckets[b])
            m->hist[b]++;
    m->count++;
    m->sum += seconds;
    pthread_mutex_unlock(&m->lock);
}

void
hc_metrics_error(struct hc_metrics *m, enum hc_metric_error kind)
{
    pthread_mutex_lock(&m->lock);
    m->errors[kind]++;
    pthread_mutex_unlock(&m->lock);
}

void
hc_metrics_busy(struct hc_metrics *m, int device, double seconds)
{
    if (device < 0 || device >= m->ndev)
        return;
    pthread_mutex_lock(&m->lock);
    m->busy[device] += seconds;
    pthread_mutex_unlock(&m->lock);
}

struct text {
    char *buf;
    size_t len, cap;
    int failed;
};

static void __attribute__((format(printf, 2, 3))) add(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t ncap = t->cap * 2 + (size_t)n;
        char *nb = realloc(t->buf, ncap);
        if (!nb) {
            t->failed = 1;
            return;
        }
        t->buf = nb;
        t->cap = ncap;
    }
}

int
hc_metrics_render(struct hc_metrics *m, int queued, int running, int inflight, uint64_t mem_used,
                  uint64_t mem_max, char **text, size_t *len)
{
    struct text t = {malloc(4096), 0, 4096, 0};

    if (!t.buf)
        return -ENOMEM;
    pthread_mutex_lock(&m->lock);
    add(&t, "# HELP hc_requests_total HTTP requests answered, by status code.\n"
            "# TYPE hc_requests_total counter\n");
    for (size_t i = 0; i < NSTATUS; i++)
        add(&t, "hc_requests_total{code=\"%d\"} %llu\n", status_codes[i],
            (unsigned long long)m->by_status[i]);
    add(&t, "hc_requests_total{code=\"other\"} %llu\n", (unsigned long long)m->by_status[NSTATUS]);
    add(&t,
        "# HELP hc_tiles_total Tiles upscaled.\n# TYPE hc_tiles_total counter\n"
        "hc_tiles_total %llu\n",
        (unsigned long long)m->tiles);
    add(&t,
        "# HELP hc_bytes_in_total Request body bytes received (as sent, compressed or not).\n"
        "# TYPE hc_bytes_in_total counter\nhc_bytes_in_total %llu\n",
        (unsigned long long)m->bytes_in);
    add(&t,
        "# HELP hc_bytes_out_total Response body bytes sent.\n"
        "# TYPE hc_bytes_out_total counter\nhc_bytes_out_total %llu\n",
        (unsigned long long)m->bytes_out);
    add(&t, "# HELP hc_request_duration_seconds Time from request to response.\n"
            "# TYPE hc_request_duration_seconds histogram\n");
    for (size_t b = 0; b < NBUCKETS; b++)
        add(&t, "hc_request_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets[b],
            (unsigned long long)m->hist[b]);
    add(&t, "hc_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)m->count);
    add(&t, "hc_request_duration_seconds_sum %.6f\nhc_request_duration_seconds_count %llu\n",
        m->sum, (unsigned long long)m->count);
    add(&t,
        "# HELP hc_queue_depth Jobs waiting for a worker.\n# TYPE hc_queue_depth gauge\n"
        "hc_queue_depth %d\n",
        queued);
    add(&t,
        "# HELP hc_jobs_running Jobs on a backend now.\n# TYPE hc_jobs_running gauge\n"
        "hc_jobs_running %d\n",
        running);
    add(&t,
        "# HELP hc_requests_in_flight Upscale requests admitted and not yet answered.\n"
        "# TYPE hc_requests_in_flight gauge\nhc_requests_in_flight %d\n",
        inflight);
    add(&t,
        "# HELP hc_memory_bytes Bytes of bodies and answers held by requests now.\n"
        "# TYPE hc_memory_bytes gauge\nhc_memory_bytes %llu\n"
        "# HELP hc_memory_limit_bytes The budget for them (--max-memory).\n"
        "# TYPE hc_memory_limit_bytes gauge\nhc_memory_limit_bytes %llu\n",
        (unsigned long long)mem_used, (unsigned long long)mem_max);
    add(&t, "# HELP hc_backend_busy_seconds_total Time devices spent on jobs.\n"
            "# TYPE hc_backend_busy_seconds_total counter\n");
    for (int i = 0; i < m->ndev; i++)
        add(&t, "hc_backend_busy_seconds_total{backend=\"%s\",device=\"%d\",name=\"%s\"} %.6f\n",
            m->backend, i, m->devnames[i], m->busy[i]);
    add(&t, "# HELP hc_errors_total Failed requests, by kind.\n# TYPE hc_errors_total counter\n");
    for (int k = 0; k < HC_ERR_COUNT; k++)
        add(&t, "hc_errors_total{kind=\"%s\"} %llu\n", error_names[k],
            (unsigned long long)m->errors[k]);
    pthread_mutex_unlock(&m->lock);
    if (t.failed) {
        free(t.buf);
        return -ENOMEM;
    }
    *text = t.buf;
    *len = t.len;
    return 0;
}
