/* metrics.h: the service's Prometheus counters (GET /metrics, text format 0.0.4).
 * All calls are thread safe. */
#ifndef HC_METRICS_H
#define HC_METRICS_H

#include <stddef.h>
#include <stdint.h>

enum hc_metric_error {
    HC_ERR_BAD_REQUEST, /* 400: malformed message, bad scale, bad encoding */
    HC_ERR_UNAUTHORIZED,
    HC_ERR_NOT_FOUND,
    HC_ERR_METHOD,
    HC_ERR_TOO_LARGE,   /* 413 */
    HC_ERR_UNSUPPORTED, /* 415 */
    HC_ERR_LIMITS,      /* 422 */
    HC_ERR_OVERLOADED,  /* 429 */
    HC_ERR_BACKEND,     /* 500 */
    HC_ERR_UNAVAILABLE, /* 503 while draining */
    HC_ERR_ABORTED,     /* connection cut: timeout, body past the limit while streaming */
    HC_ERR_COUNT
};

struct hc_metrics;

/* ndev device names (copied). Returns NULL on allocation failure. Free with
 * hc_metrics_free(). */
struct hc_metrics *hc_metrics_new(const char *backend, int ndev, const char *const *devnames);
void hc_metrics_free(struct hc_metrics *m);

/* One finished request: HTTP status, seconds from first byte to response queued, body bytes
 * received and sent as they travelled, tiles upscaled. */
void hc_metrics_request(struct hc_metrics *m, int status, double seconds, uint64_t bytes_in,
                        uint64_t bytes_out, unsigned tiles);
void hc_metrics_error(struct hc_metrics *m, enum hc_metric_error kind);
void hc_metrics_busy(struct hc_metrics *m, int device, double seconds);

/* Renders every metric plus the given gauges into a malloc'd text (free()). Returns 0 or
 * -ENOMEM. */
int hc_metrics_render(struct hc_metrics *m, int queued, int running, int inflight,
                      uint64_t mem_used, uint64_t mem_max, char **text, size_t *len);

#endif
