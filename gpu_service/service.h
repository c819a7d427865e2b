/* service.h: hc-gpu-service's HTTP server (libmicrohttpd) and its limits.
 * PROTOCOL.md describes what it speaks; README.md how to run it. */
#ifndef HC_SERVICE_H
#define HC_SERVICE_H

#include <stddef.h>
#include <stdint.h>

struct hc_service_opts {
    const char *listen;          /* "HOST:PORT" ("[::1]:PORT" for IPv6); port 0 picks one */
    const char *token_file;      /* bearer token (first line), NULL = none */
    int insecure_public;         /* allow a non-loopback address without a token */
    const char *backend;         /* auto | cuda | cpu */
    int jobs;                    /* requests on the backend at once */
    int queue;                   /* requests waiting beyond those; more get 429 */
    int threads;                 /* HTTP threads (libmicrohttpd's pool) */
    int cpu_threads;             /* threads of one CPU job, 0 = all CPUs */
    size_t max_body;             /* request body bytes, as sent and decoded (413) */
    uint64_t max_tile_pixels;    /* output pixels of one tile (422) */
    uint64_t max_request_pixels; /* output pixels of one request (422) */
    int max_tiles;               /* tiles in one request (413) */
    uint64_t max_memory;         /* bytes of bodies, decoded bodies and answers held at once by
                                    all requests (429 past it); 0 = half the physical memory */
    int max_connections;
    int max_per_ip;
    int conn_timeout;    /* seconds a connection may stay idle */
    int request_timeout; /* seconds to receive a request and send its answer (job excluded) */
};

/* Defaults for every field (listen 127.0.0.1:8787, backend auto, ...). */
void hc_service_defaults(struct hc_service_opts *o);

struct hc_service;

/* Opens the backend, binds, starts serving. Returns 0 or -errno with hc_last_error() set
 * (bad address, refused public bind without a token, backend failure, port in use). */
int hc_service_start(const struct hc_service_opts *o, struct hc_service **out);

/* The port actually bound (useful with port 0). */
int hc_service_port(const struct hc_service *s);

/* Stops accepting connections, answers 503 on /readyz, and waits up to `timeout` seconds
 * for the requests in flight to be answered. Returns 0, or -ETIMEDOUT. */
int hc_service_drain(struct hc_service *s, int timeout);

/* Stops the server, the workers and the backend; frees s. */
void hc_service_stop(struct hc_service *s);

#endif
