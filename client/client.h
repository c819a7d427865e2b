/* client.h: the HTTP tile client - a struct hc_tile_backend that sends tiles to one or more
 * hc-gpu-service instances (POST /v1/upscale, the binary format of core/wire.h).
 *
 * One client holds the service URLs, their health, one libcurl multi handle (keep-alive
 * connections survive from one job to the next) and counters. Each run() call (one batch of
 * tiles of one job) splits its tiles into requests of `tiles_per_request` tiles, keeps up to
 * `inflight` requests in flight, spreads them round-robin over the URLs, and retries a request
 * that failed for a transport reason (connection refused or reset, timeout, 5xx, 429) on
 * another URL, with exponential backoff from 100 ms when no healthy URL is left. A 4xx other
 * than 429 fails the job at once with the service's JSON error in hc_last_error().
 * Responses are parsed with hc_wire_parse() and checked against what was asked (same ids,
 * rectangles and formats, in order) before any pixel reaches tile->out_px.
 *
 * Overload (429, or 503 with Retry-After) is not breakage: nothing new goes to a URL before
 * its Retry-After has passed (unless another URL is free), and 429s do not use up retries,
 * but a request is given up once timeout_ms has passed since its first attempt.
 *
 * Bounded waits: one attempt takes at most timeout_ms (connect_timeout_ms of it to connect),
 * so a run() that cannot succeed fails after at most about
 *   (retries + 1) * timeout_ms + backoff (100 + 200 + ... ms, each wait at most 5 s)
 * and much sooner when connections are refused. A cancel flag (opts.cancel, or a per-job one
 * through hc_client_derive()) is polled every 50 ms at most.
 *
 * Thread safety: a client may be used by any number of threads at once (hcfs runs many jobs
 * concurrently). The transfers of every job run on one libcurl multi handle, driven by one
 * thread the client starts on the first run() (so opening a client before a daemon forks
 * is fine): every job reuses the same keep-alive connections, and there are never more than
 * max_connections of them.
 */
#ifndef HC_CLIENT_H
#define HC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hc_client;

struct hc_client_opts {
    const char *const *urls;    /* service base URLs ("http://host:port", a path prefix is
                                   kept; "/v1/upscale" is appended unless already there) */
    size_t nurls;               /* 1.. */
    const char *token;          /* bearer token; NULL: none */
    int inflight;               /* requests in flight per run() call, default 8 */
    int tiles_per_request;      /* batch size, default 4 (1..HC_WIRE_MAX_TILES) */
    int connect_timeout_ms;     /* default 3000 */
    int timeout_ms;             /* per request attempt, default 60000 */
    int retries;                /* extra attempts per request, default 3 */
    const char *encoding;       /* "zstd", "lz4" or NULL (raw): request bodies are compressed so,
                                   and responses are asked for (Accept-Encoding) the same way */
    const volatile int *cancel; /* optional, client-wide: run() stops with -ECANCELED once
                                   *cancel != 0 (e.g. hc's SIGINT flag). Per-job flags: see
                                   hc_client_derive(). */
    int max_connections;        /* requests in flight over all jobs of this client, and so
                                   connections to the services (HTTP/1.1: one each); default
                                   32, below the service's default of 64 per client address */
};

/* Fills *o with the defaults above (urls NULL, nurls 0, token NULL, encoding NULL, cancel
 * NULL). Callers should start from it: fields added later get their defaults this way. */
void hc_client_opts_default(struct hc_client_opts *o);

/* Makes a client. Copies everything it keeps from *o (URLs, token), so *o may go away;
 * o->cancel is kept as a pointer and must outlive the client. Returns 0 and *out (free with
 * hc_client_close()), or -EINVAL (no URL, a URL that is not http:// or https://, a value
 * out of range, an unknown encoding) / -ENOMEM, with hc_last_error() set.
 * Thread safety: any thread. */
int hc_client_open(const struct hc_client_opts *o, struct hc_client **out);

/* A handle for one job: shares c's URLs, health, connections and counters, but run() on
 * it also stops with -ECANCELED once *cancel != 0 (the client-wide flag still applies).
 * The flag is read with __atomic_load_n; set it with __atomic_store_n from another thread
 * (or plainly from a signal handler of the same thread).
 * hcfs makes one per job so that an interrupted reader cancels only its own job. The handle
 * stays valid after c is closed (the shared part is reference counted); free it with
 * hc_client_close(). Returns 0 or -ENOMEM. Thread safety: any thread. */
int hc_client_derive(struct hc_client *c, const volatile int *cancel, struct hc_client **out);

/* Frees a client or derived handle; connections close and the transfer thread ends when
 * the last handle goes. c may be NULL. Must not be called while a run() on the same handle
 * is in progress. */
void hc_client_close(struct hc_client *c);

/* The backend: ctx is a struct hc_client * (from hc_client_open or hc_client_derive).
 * run() returns 0 when every tile's out_px is filled, else -ECANCELED, -EACCES (401/403),
 * -EINVAL (the service refused the request as bad: 400/404/413/422/...), -EPROTO (an answer
 * that is not what was asked), -EIO (no URL answered within the retries: the reason names
 * the last failure of each attempt's URL), -ENOMEM; hc_last_error() says why. On failure
 * some tiles' out_px may have been written, none partially from a bad response. */
extern const struct hc_tile_backend hc_backend_http;

/* Counters since hc_client_open(), summed over every handle derived from it. */
struct hc_client_stats {
    uint64_t requests;       /* HTTP requests sent (attempts, retries included) */
    uint64_t responses_ok;   /* 200 answers whose body checked out */
    uint64_t retries;        /* attempts after the first of a request */
    uint64_t failovers;      /* retries sent to a different URL than the failed attempt */
    uint64_t failures;       /* attempts that failed (transport, 5xx, 429, bad body) */
    uint64_t splits;         /* requests sent again as two halves after a 413 or 422 */
    uint64_t tiles;          /* tiles delivered to callers */
    uint64_t bytes_sent;     /* request bodies as sent (after compression) */
    uint64_t bytes_received; /* response bodies as received (before decompression) */
};

/* Copies the counters into *s. Thread safety: any thread, any time (each counter is read
 * atomically; together they are a near-consistent snapshot). */
void hc_client_stats(const struct hc_client *c, struct hc_client_stats *s);

/* Reads a bearer token from a file (hcfs's token_file=, hc's --token-file): the first line,
 * trailing whitespace removed; at most 4096 bytes; must not be empty. Returns 0 and *token
 * (free() it), or -errno / -EINVAL with hc_last_error() set. */
int hc_client_read_token(const char *path, char **token);

#ifdef __cplusplus
}
#endif
#endif
