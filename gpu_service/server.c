/* server.c: the HTTP side of hc-gpu-service (service.h, PROTOCOL.md).
 *
 * Threads: libmicrohttpd polls sockets with its own pool (epoll); those threads only parse,
 * check and copy bytes. Upscaling runs on the job workers (jobs.h): a request that passed its
 * checks suspends its connection, a worker computes the answer and resumes it. This keeps
 * /healthz and /metrics answering while every worker is busy, and the bounded queue turns
 * overload into a quick 429 instead of a growing pile of bodies in memory.
 *
 * Timeouts: MHD's connection timeout cuts idle connections; a watchdog thread cuts a
 * connection whose request (headers, body, or answer) has taken longer than the request
 * timeout, which catches a client that trickles a byte a second and so never looks idle.
 */
#include "service.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "encoding.h"
#include "error.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "wire.h"

#define TOKEN_MAX 512

/* One TCP connection (MHD's socket context), on the watchdog's list. */
struct conn {
    struct conn *prev, *next;
    int fd;
    double phase_start; /* when the current request (or the idle wait) began */
    int in_job;         /* suspended for a job: the watchdog leaves it alone */
    int cut;            /* the watchdog shut it down */
};

/* REQ_DISCARD: refused at the headers (token, draining, encoding) but the body is read and
 * dropped before the answer goes out. Closing on unread bytes makes the kernel send a reset
 * that can overtake the answer: a proxy in front then reports 502 instead of the 401. */
enum req_state { REQ_RECEIVING, REQ_QUEUED, REQ_DONE, REQ_DISCARD };

struct req {
    struct hc_service *svc;
    struct MHD_Connection *mc;
    struct conn *conn;
    double start;
    char method[8];
    char path[64];
    enum req_state state;
    int is_upscale;
    int counted; /* in s->inflight */
    /* body */
    uint8_t *body;
    size_t len, cap;
    enum hc_encoding in_enc, out_enc;
    /* parsed request, pointing into `plain` */
    uint8_t *plain;
    size_t plain_len;
    struct hc_wire_tile *tiles;
    const uint8_t **pixels;
    size_t ntiles;
    /* answer */
    struct MHD_Response *response;
    int status;
    uint64_t bytes_out;
    uint64_t mem;    /* bytes of s->mem_used this request holds */
    uint64_t mem_in; /* the part for its body and decoded body, given back once decoded */
};

struct hc_service {
    struct hc_service_opts o;
    struct MHD_Daemon *mhd;
    int port;
    const struct hc_backend *backend;
    void *bctx;
    struct hc_jobs *jobs;
    struct hc_metrics *metrics;
    char token[TOKEN_MAX];
    size_t token_len;
    /* connections, in-flight count, draining: under lock */
    pthread_mutex_t lock;
    pthread_cond_t idle;
    struct conn conns; /* list head */
    int inflight;      /* upscale requests between admission and completion */
    uint64_t mem_used; /* sum of every request's mem, at most o.max_memory */
    int draining;
    pthread_t watchdog;
    int watchdog_running, stopping;
};

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Takes n bytes of the memory budget for rq (bodies, decoded bodies, answers). 0, or -1
 * when they do not fit now. */
static int
mem_reserve(struct req *rq, uint64_t n)
{
    struct hc_service *s = rq->svc;
    int ok;

    pthread_mutex_lock(&s->lock);
    ok = n <= s->o.max_memory - s->mem_used;
    if (ok) {
        s->mem_used += n;
        rq->mem += n;
    }
    pthread_mutex_unlock(&s->lock);
    return ok ? 0 : -1;
}

/* Takes as much of want as is free now, possibly 0; returns how much. */
static uint64_t
mem_reserve_upto(struct req *rq, uint64_t want)
{
    struct hc_service *s = rq->svc;
    uint64_t n;

    pthread_mutex_lock(&s->lock);
    n = s->o.max_memory - s->mem_used;
    if (n > want)
        n = want;
    s->mem_used += n;
    rq->mem += n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void
mem_release(struct req *rq, uint64_t n)
{
    struct hc_service *s = rq->svc;

    pthread_mutex_lock(&s->lock);
    if (n > rq->mem)
        n = rq->mem;
    s->mem_used -= n;
    rq->mem -= n;
    pthread_mutex_unlock(&s->lock);
}

void
hc_service_defaults(struct hc_service_opts *o)
{
    memset(o, 0, sizeof *o);
    o->listen = "127.0.0.1:8787";
    o->backend = "auto";
    o->jobs = 0; /* chosen once the backend is known */
    o->queue = 64;
    o->threads = 4;
    o->cpu_threads = 0;
    o->max_body = (size_t)256 << 20;
    o->max_tile_pixels = (uint64_t)4096 * 4096;
    o->max_request_pixels = (uint64_t)64 << 20;
    o->max_tiles = 1024;
    o->max_memory = 0; /* half the physical memory, decided at start */
    o->max_connections = 256;
    o->max_per_ip = 64;
    o->conn_timeout = 10;
    o->request_timeout = 60;
}

/* ---- responses ---------------------------------------------------------------------- */

static void
json_escape(char *dst, size_t cap, const char *src)
{
    size_t n = 0;

    for (; *src && n + 7 < cap; src++) {
        unsigned char ch = (unsigned char)*src;
        if (ch == '"' || ch == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", ch);
        } else {
            dst[n++] = (char)ch;
        }
    }
    dst[n] = '\0';
}

static struct MHD_Response *
text_response(const char *text, size_t len, const char *type)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);

    if (r)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    return r;
}

static const char *
error_name(int status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 401:
        return "unauthorized";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 413:
        return "too_large";
    case 415:
        return "unsupported_encoding";
    case 422:
        return "limits_exceeded";
    case 429:
        return "overloaded";
    case 503:
        return "unavailable";
    default:
        return "internal";
    }
}

static enum hc_metric_error
error_kind(int status)
{
    switch (status) {
    case 400:
        return HC_ERR_BAD_REQUEST;
    case 401:
        return HC_ERR_UNAUTHORIZED;
    case 404:
        return HC_ERR_NOT_FOUND;
    case 405:
        return HC_ERR_METHOD;
    case 413:
        return HC_ERR_TOO_LARGE;
    case 415:
        return HC_ERR_UNSUPPORTED;
    case 422:
        return HC_ERR_LIMITS;
    case 429:
        return HC_ERR_OVERLOADED;
    case 503:
        return HC_ERR_UNAVAILABLE;
    default:
        return HC_ERR_BACKEND;
    }
}

/* Builds the JSON error answer {"error": ..., "detail": ...} into req (not yet queued). */
static void set_error(struct req *rq, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
set_error(struct req *rq, int status, const char *fmt, ...)
{
    char detail[512], esc[1024], body[1200];
    va_list ap;
    int n;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    json_escape(esc, sizeof esc, detail);
    n = snprintf(body, sizeof body, "{\"error\":\"%s\",\"detail\":\"%s\"}\n", error_name(status),
                 esc);
    if (rq->response)
        MHD_destroy_response(rq->response);
    rq->response = text_response(body, (size_t)n, "application/json");
    if (rq->response) {
        if (status == 429)
            MHD_add_response_header(rq->response, MHD_HTTP_HEADER_RETRY_AFTER, "1");
        if (status == 401)
            MHD_add_response_header(rq->response, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                    "Bearer realm=\"hc-gpu-service\"");
    }
    rq->status = status;
    rq->bytes_out = (uint64_t)n;
    hc_metrics_error(rq->svc->metrics, error_kind(status));
}

static enum MHD_Result
queue(struct req *rq)
{
    enum MHD_Result r;

    if (!rq->response)
        return MHD_NO; /* out of memory building it: drop the connection */
    r = MHD_queue_response(rq->mc, (unsigned)rq->status, rq->response);
    MHD_destroy_response(rq->response);
    rq->response = NULL;
    return r;
}

/* 429 for a request whose bytes do not fit the memory budget now; 413 for one that never
 * will (a client splits its batch on 413). */
static void
set_busy_memory(struct req *rq, uint64_t want)
{
    struct hc_service *s = rq->svc;
    uint64_t used;

    if (want > s->o.max_memory - rq->mem) { /* rq->mem <= max_memory: no wrap */
        set_error(rq, 413, "%llu bytes, more than the whole memory budget of %llu (--max-memory)",
                  (unsigned long long)(rq->mem + want), (unsigned long long)s->o.max_memory);
        return;
    }
    pthread_mutex_lock(&s->lock);
    used = s->mem_used;
    pthread_mutex_unlock(&s->lock);
    set_error(rq, 429,
              "memory budget: %llu bytes wanted, %llu of %llu in use (--max-memory): try again "
              "later",
              (unsigned long long)want, (unsigned long long)used,
              (unsigned long long)s->o.max_memory);
}

/* ---- authentication ----------------------------------------------------------------- */

/* Compares in time that depends only on the expected token's length, so that timing does
 * not reveal how many leading bytes of a guess were right. */
static int
token_ok(const struct hc_service *s, struct MHD_Connection *mc)
{
    const char *h = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    volatile unsigned char diff = 0;
    size_t glen;

    if (s->token_len == 0)
        return 1;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    glen = strlen(h);
    diff = (unsigned char)(glen != s->token_len);
    for (size_t i = 0; i < s->token_len; i++)
        diff |= (unsigned char)(s->token[i] ^ (glen ? (unsigned char)h[i % glen] : 0));
    return diff == 0;
}

/* ---- the upscale job ---------------------------------------------------------------- */

static int prepare(struct req *rq);

static void
job_run(void *arg)
{
    struct req *rq = arg;
    struct hc_service *s = rq->svc;
    size_t head, total;
    uint8_t *out = NULL, *enc = NULL, **dst = NULL;
    size_t enc_len;
    int device = 0, rc, stopping;
    double t0;

    /* hc_service_stop() runs the queue out before it stops the server, so that every
     * suspended connection is resumed; past the drain timeout, jobs that have not started
     * are given up instead of holding the exit for the whole queue. */
    pthread_mutex_lock(&s->lock);
    stopping = s->stopping;
    pthread_mutex_unlock(&s->lock);
    if (stopping) {
        set_error(rq, 503, "shutting down: the drain timeout passed before this job started");
        goto out;
    }
    if (!rq->tiles && prepare(rq) != 0) /* a compressed body: decoded here, not on HTTP */
        goto out;
    head = HC_WIRE_HEADER_SIZE + rq->ntiles * HC_WIRE_DESC_SIZE;
    total = head;
    for (size_t i = 0; i < rq->ntiles; i++)
        total += hc_wire_out_bytes(&rq->tiles[i]);
    out = malloc(total);
    dst = calloc(rq->ntiles, sizeof *dst);
    if (!out || !dst) {
        set_error(rq, 500, "out of memory for a %zu-byte answer", total);
        goto out;
    }
    rc = hc_wire_encode_header(HC_WIRE_MAGIC_RESPONSE, rq->tiles, rq->ntiles, out);
    if (rc) {
        set_error(rq, 500, "%s", hc_last_error());
        goto out;
    }
    for (size_t i = 0, off = head; i < rq->ntiles; i++) {
        dst[i] = out + off;
        off += hc_wire_out_bytes(&rq->tiles[i]);
    }
    t0 = now_s();
    rc = s->backend->run(s->bctx, rq->tiles, rq->pixels, dst, rq->ntiles, &device);
    hc_metrics_busy(s->metrics, device, now_s() - t0);
    if (rc) {
        hc_log(HC_LOG_ERROR, "service", "backend %s failed: %s", s->backend->name, hc_last_error());
        set_error(rq, 500, "backend %s: %s", s->backend->name, hc_last_error());
        goto out;
    }
    if (rq->out_enc != HC_ENC_IDENTITY) {
        /* The compressed copy exists next to the plain one for a moment: it needs budget
         * (at most a compressor's bound). Without it the answer goes uncompressed. */
        uint64_t extra = (uint64_t)total + total / 128 + 65536;

        if (mem_reserve(rq, extra) != 0) {
            rq->out_enc = HC_ENC_IDENTITY;
        } else {
            rc = hc_encoding_encode(rq->out_enc, out, total, &enc, &enc_len);
            if (rc) {
                mem_release(rq, extra);
                set_error(rq, 500, "%s", hc_last_error());
                goto out;
            }
            free(out);
            mem_release(rq, extra + total - enc_len); /* the plain answer is gone */
            out = enc;
            total = enc_len;
        }
    }
    rq->response = MHD_create_response_from_buffer_with_free_callback(total, out, free);
    if (!rq->response) {
        set_error(rq, 500, "cannot create the answer");
        goto out;
    }
    out = NULL; /* owned by the response now */
    MHD_add_response_header(rq->response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-hc-tiles");
    if (rq->out_enc != HC_ENC_IDENTITY)
        MHD_add_response_header(rq->response, MHD_HTTP_HEADER_CONTENT_ENCODING,
                                hc_encoding_name(rq->out_enc));
    rq->status = 200;
    rq->bytes_out = total;
out:
    free(out);
    free(dst);
    /* The pixels are not needed any more: free them before the answer is sent. */
    free(rq->plain);
    rq->plain = NULL;
    free(rq->body);
    rq->body = NULL;
    mem_release(rq, rq->mem_in);
    rq->mem_in = 0;
    pthread_mutex_lock(&s->lock);
    rq->state = REQ_DONE;
    rq->conn->in_job = 0;
    rq->conn->phase_start = now_s(); /* sending the answer gets its own request timeout */
    pthread_mutex_unlock(&s->lock);
    MHD_resume_connection(rq->mc);
}

/* Decodes, parses and checks a complete body and reserves its answer. 0, or -1 with the
 * error answer set. Runs on the HTTP thread for a plain body (parsing points into it, no
 * copy) and on the worker for a compressed one: decompressing up to --max-body is work
 * that must not hold up the HTTP threads (/healthz, other uploads). */
static int
prepare(struct req *rq)
{
    struct hc_service *s = rq->svc;
    const uint8_t *msg = rq->body;
    size_t msg_len = rq->len;
    uint64_t total_px = 0;
    int rc;

    if (rq->in_enc != HC_ENC_IDENTITY) {
        /* The decoder never holds more than its limit: reserve that first, keep what the
         * decoded body takes. */
        uint64_t lim = mem_reserve_upto(rq, s->o.max_body);

        rc = hc_encoding_decode(rq->in_enc, rq->body, rq->len, (size_t)lim, &rq->plain,
                                &rq->plain_len);
        mem_release(rq, rc ? lim : lim - rq->plain_len);
        if (rc == -E2BIG && lim < s->o.max_body)
            set_busy_memory(rq, lim + 1);
        else if (rc == -E2BIG)
            set_error(rq, 413, "%s", hc_last_error());
        else if (rc == -ENOMEM)
            set_error(rq, 500, "%s", hc_last_error());
        else if (rc)
            set_error(rq, 400, "%s", hc_last_error());
        if (rc)
            return -1;
        msg = rq->plain;
        msg_len = rq->plain_len;
    }
    rq->tiles = calloc((size_t)s->o.max_tiles, sizeof *rq->tiles);
    rq->pixels = calloc((size_t)s->o.max_tiles, sizeof *rq->pixels);
    if (!rq->tiles || !rq->pixels) {
        set_error(rq, 500, "out of memory");
        return -1;
    }
    rc = hc_wire_parse(HC_WIRE_MAGIC_REQUEST, msg, msg_len, rq->tiles, rq->pixels,
                       (size_t)s->o.max_tiles, &rq->ntiles);
    if (rc) {
        set_error(rq, rc == -E2BIG ? 413 : 400, "%s", hc_last_error());
        return -1;
    }
    for (size_t i = 0; i < rq->ntiles; i++) {
        uint64_t px = (uint64_t)rq->tiles[i].out.w * (uint64_t)rq->tiles[i].out.h;
        if (px > s->o.max_tile_pixels) {
            set_error(rq, 422, "tile %u: %llu output pixels, the limit is %llu (--max-tile-pixels)",
                      rq->tiles[i].id, (unsigned long long)px,
                      (unsigned long long)s->o.max_tile_pixels);
            return -1;
        }
        total_px += px;
    }
    if (total_px > s->o.max_request_pixels) {
        set_error(rq, 422,
                  "%llu output pixels in one request, the limit is %llu "
                  "(--max-request-pixels)",
                  (unsigned long long)total_px, (unsigned long long)s->o.max_request_pixels);
        return -1;
    }
    {
        /* the answer: its header and every tile's pixels */
        uint64_t out = HC_WIRE_HEADER_SIZE + (uint64_t)rq->ntiles * HC_WIRE_DESC_SIZE;

        for (size_t i = 0; i < rq->ntiles; i++)
            out += hc_wire_out_bytes(&rq->tiles[i]);
        rq->mem_in = rq->mem;
        if (mem_reserve(rq, out) != 0) {
            set_busy_memory(rq, out);
            return -1;
        }
    }
    return 0;
}

/* A complete body: checks it now when that is cheap, then hands it to a worker. Returns the
 * handler's result; on refusal an error answer is queued. */
static enum MHD_Result
admit(struct req *rq)
{
    struct hc_service *s = rq->svc;
    int rc;

    if (rq->in_enc == HC_ENC_IDENTITY && prepare(rq) != 0)
        return queue(rq);
    /* Suspend before submitting: the worker may finish and resume before we return. */
    pthread_mutex_lock(&s->lock);
    rq->conn->in_job = 1;
    rq->state = REQ_QUEUED;
    pthread_mutex_unlock(&s->lock);
    MHD_suspend_connection(rq->mc);
    rc = hc_jobs_submit(s->jobs, job_run, rq);
    if (rc) {
        int queued, running;

        hc_jobs_stats(s->jobs, &queued, &running);
        set_error(rq, 429, "%d jobs running and %d waiting: try again later", running, queued);
        pthread_mutex_lock(&s->lock);
        rq->conn->in_job = 0;
        rq->state = REQ_DONE;
        pthread_mutex_unlock(&s->lock);
        MHD_resume_connection(rq->mc);
    }
    return MHD_YES;
}

/* ---- routing ------------------------------------------------------------------------ */

static enum MHD_Result
answer_get(struct req *rq)
{
    struct hc_service *s = rq->svc;
    int draining;

    pthread_mutex_lock(&s->lock);
    draining = s->draining;
    pthread_mutex_unlock(&s->lock);
    if (strcmp(rq->path, "/healthz") == 0) {
        static const char ok[] = "{\"status\":\"ok\"}\n";
        rq->response = text_response(ok, sizeof ok - 1, "application/json");
        rq->status = 200;
        rq->bytes_out = sizeof ok - 1;
    } else if (strcmp(rq->path, "/readyz") == 0) {
        if (draining) {
            set_error(rq, 503, "draining: shutting down");
        } else if (s->backend->ping(s->bctx) != 0) {
            set_error(rq, 503, "backend %s does not answer: %s", s->backend->name, hc_last_error());
        } else {
            char body[256];
            int n = snprintf(body, sizeof body, "{\"status\":\"ready\",\"backend\":\"%s\"}\n",
                             s->backend->name);
            rq->response = text_response(body, (size_t)n, "application/json");
            rq->status = 200;
            rq->bytes_out = (uint64_t)n;
        }
    } else if (strcmp(rq->path, "/metrics") == 0) {
        char *text;
        size_t len;
        int queued, running, inflight;
        uint64_t mem;

        if (!token_ok(s, rq->mc)) {
            set_error(rq, 401, "missing or wrong bearer token");
            return queue(rq);
        }
        hc_jobs_stats(s->jobs, &queued, &running);
        pthread_mutex_lock(&s->lock);
        inflight = s->inflight;
        mem = s->mem_used;
        pthread_mutex_unlock(&s->lock);
        if (hc_metrics_render(s->metrics, queued, running, inflight, mem, s->o.max_memory, &text,
                              &len) != 0) {
            set_error(rq, 500, "out of memory");
            return queue(rq);
        }
        rq->response = MHD_create_response_from_buffer_with_free_callback(len, text, free);
        if (rq->response)
            MHD_add_response_header(rq->response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                    "text/plain; version=0.0.4");
        else
            free(text);
        rq->status = 200;
        rq->bytes_out = len;
    } else if (strcmp(rq->path, "/v1/upscale") == 0) {
        set_error(rq, 405, "use POST for /v1/upscale");
        if (rq->response)
            MHD_add_response_header(rq->response, MHD_HTTP_HEADER_ALLOW, "POST");
    } else {
        set_error(rq, 404, "no such endpoint: %s", rq->path);
    }
    return queue(rq);
}

struct cl_seen {
    const char *first;
    int differ;
};

static enum MHD_Result
cl_each(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct cl_seen *c = cls;

    (void)kind;
    if (key && value && strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (!c->first)
            c->first = value;
        else if (strcmp(c->first, value) != 0)
            c->differ = 1;
    }
    return MHD_YES;
}

/* Answers a refusal decided at the headers. A client that waits for 100 Continue has sent
 * nothing yet and is answered at once; otherwise the body (bounded by --max-body and the
 * request timeout, and never stored) is read first, like nginx's lingering close. */
static enum MHD_Result
refuse_early(struct req *rq)
{
    const char *expect =
        MHD_lookup_connection_value(rq->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    const char *cl =
        MHD_lookup_connection_value(rq->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(rq->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    char *end;
    unsigned long long v;

    if (expect && strcasecmp(expect, "100-continue") == 0)
        return queue(rq);
    if (cl) {
        errno = 0;
        v = strtoull(cl, &end, 10);
        if (errno || end == cl || *end || v > rq->svc->o.max_body)
            return queue(rq);
    } else if (!te) {
        return queue(rq); /* no body */
    }
    /* In flight until answered: a drain waits for it like for any request. */
    pthread_mutex_lock(&rq->svc->lock);
    if (!rq->counted) {
        rq->svc->inflight++;
        rq->counted = 1;
    }
    pthread_mutex_unlock(&rq->svc->lock);
    rq->state = REQ_DISCARD;
    return MHD_YES;
}

/* First call of an upscale request: headers are in, no body yet. Refusals here (auth, size
 * from Content-Length, encoding) are answered before a byte of the body is read. */
static enum MHD_Result
start_upscale(struct req *rq)
{
    struct hc_service *s = rq->svc;
    struct MHD_Connection *mc = rq->mc;
    const char *cl, *ce, *ae;
    int draining;

    rq->is_upscale = 1;
    {
        /* libmicrohttpd frames the body by one of several Content-Lengths; a proxy in front
         * may take another and see a different next request (smuggling): refuse, closing
         * the connection, before any refusal that would read the body by that framing. */
        struct cl_seen seen = {NULL, 0};

        MHD_get_connection_values(mc, MHD_HEADER_KIND, cl_each, &seen);
        if (seen.differ) {
            set_error(rq, 400, "Content-Length headers that disagree");
            return queue(rq);
        }
    }
    if (!token_ok(s, mc)) {
        set_error(rq, 401, "missing or wrong bearer token");
        return refuse_early(rq);
    }
    pthread_mutex_lock(&s->lock);
    draining = s->draining;
    pthread_mutex_unlock(&s->lock);
    if (draining) {
        set_error(rq, 503, "draining: shutting down");
        return refuse_early(rq);
    }
    ce = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (hc_encoding_parse(ce, &rq->in_enc) != 0) {
        set_error(rq, 415, "%s", hc_last_error());
        return refuse_early(rq);
    }
    ae = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    rq->out_enc = hc_encoding_accept(ae);
    cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(cl, &end, 10);
        if (errno || end == cl) {
            set_error(rq, 400, "bad Content-Length");
            return queue(rq);
        }
        if (v > s->o.max_body) {
            set_error(rq, 413, "body of %llu bytes, the limit is %zu (--max-body)", v,
                      s->o.max_body);
            return queue(rq);
        }
        if (v && mem_reserve(rq, v) != 0) {
            set_busy_memory(rq, v);
            return refuse_early(rq);
        }
        /* Trust the length for the allocation only: it is bounded by max_body, and a body
         * that turns out longer is refused while streaming. */
        rq->cap = (size_t)v;
        if (rq->cap) {
            rq->body = malloc(rq->cap);
            if (!rq->body) {
                set_error(rq, 500, "out of memory for a %zu-byte body", rq->cap);
                return queue(rq);
            }
        }
    }
    pthread_mutex_lock(&s->lock);
    s->inflight++;
    rq->counted = 1;
    pthread_mutex_unlock(&s->lock);
    return MHD_YES;
}

/* Appends a chunk of body; MHD_NO cuts the connection (past the limit while streaming, or
 * past the request timeout). */
static enum MHD_Result
body_chunk(struct req *rq, const char *data, size_t size)
{
    struct hc_service *s = rq->svc;

    if (now_s() - rq->start > s->o.request_timeout) {
        hc_metrics_error(s->metrics, HC_ERR_ABORTED);
        hc_log(HC_LOG_WARN, "service", "%s %s: request timeout (%d s) while receiving the body",
               rq->method, rq->path, s->o.request_timeout);
        return MHD_NO;
    }
    if (size > s->o.max_body - rq->len) {
        hc_metrics_error(s->metrics, HC_ERR_ABORTED);
        hc_log(HC_LOG_WARN, "service", "%s %s: body past %zu bytes while streaming: cut off",
               rq->method, rq->path, s->o.max_body);
        return MHD_NO;
    }
    if (rq->len + size > rq->cap) {
        size_t ncap = rq->cap ? rq->cap : 65536;
        uint8_t *nb;

        while (ncap < rq->len + size)
            ncap = ncap > s->o.max_body / 2 ? s->o.max_body : ncap * 2;
        if (mem_reserve(rq, ncap - rq->cap) != 0) {
            /* A body of unknown length outgrew the budget: answer 429 once it has been
             * read (and dropped), as for a refusal at the headers. */
            set_busy_memory(rq, ncap - rq->cap);
            free(rq->body);
            rq->body = NULL;
            rq->cap = 0;
            mem_release(rq, rq->mem);
            rq->len += size;
            rq->state = REQ_DISCARD;
            return MHD_YES;
        }
        nb = realloc(rq->body, ncap);
        if (!nb)
            return MHD_NO;
        rq->body = nb;
        rq->cap = ncap;
    }
    memcpy(rq->body + rq->len, data, size);
    rq->len += size;
    return MHD_YES;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    struct hc_service *s = cls;
    struct req *rq = *con_cls;

    (void)version;
    if (!rq) {
        const union MHD_ConnectionInfo *ci;

        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        rq->svc = s;
        rq->mc = mc;
        rq->start = now_s();
        snprintf(rq->method, sizeof rq->method, "%s", method);
        snprintf(rq->path, sizeof rq->path, "%s", url);
        /* The path is percent-decoded: a %0A in it must not start a forged log line. */
        for (char *p = rq->path; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
        ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        rq->conn = ci ? ci->socket_context : NULL;
        if (!rq->conn)
            return MHD_NO;
        /* The headers are in: the body and the answer get their own request timeout, like
         * body_chunk's check from rq->start. Until now the phase was the idle wait (and
         * the headers) since the previous request, which would otherwise eat into it. */
        pthread_mutex_lock(&s->lock);
        rq->conn->phase_start = rq->start;
        pthread_mutex_unlock(&s->lock);
        if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
            return answer_get(rq);
        if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/upscale") == 0)
            return start_upscale(rq);
        if (strcmp(url, "/v1/upscale") == 0 || strcmp(url, "/healthz") == 0 ||
            strcmp(url, "/readyz") == 0 || strcmp(url, "/metrics") == 0) {
            set_error(rq, 405, "%s not allowed on %s", method, url);
            if (rq->response)
                MHD_add_response_header(rq->response, MHD_HTTP_HEADER_ALLOW,
                                        strcmp(url, "/v1/upscale") == 0 ? "POST" : "GET, HEAD");
        } else {
            set_error(rq, 404, "no such endpoint: %s", url);
        }
        return queue(rq);
    }
    if (!rq->is_upscale)
        return MHD_NO; /* a body on a request we already answered */
    if (*upload_data_size) {
        size_t size = *upload_data_size;
        *upload_data_size = 0;
        if (rq->state == REQ_DISCARD) {
            /* Same bounds as a body that is kept, none of the memory. */
            if (now_s() - rq->start > s->o.request_timeout || size > s->o.max_body - rq->len)
                return MHD_NO;
            rq->len += size;
            return MHD_YES;
        }
        if (rq->state != REQ_RECEIVING)
            return MHD_NO;
        return body_chunk(rq, upload_data, size);
    }
    switch (rq->state) {
    case REQ_RECEIVING:
        return admit(rq);
    case REQ_DISCARD:
        return queue(rq);
    case REQ_QUEUED:
        return MHD_YES; /* spurious call while suspended */
    case REQ_DONE:
    default:
        return queue(rq);
    }
}

/* One log line and the metrics of every finished request. */
static void
on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct hc_service *s = cls;
    struct req *rq = *con_cls;
    double secs;
    char peer[64] = "?";
    const union MHD_ConnectionInfo *ci;

    if (!rq)
        return;
    *con_cls = NULL;
    secs = now_s() - rq->start;
    ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, peer,
                      sizeof peer);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, peer,
                      sizeof peer);
    }
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        hc_metrics_request(s->metrics, rq->status, secs, rq->len, rq->bytes_out,
                           rq->status == 200 ? (unsigned)rq->ntiles : 0);
        hc_log(HC_LOG_INFO, "http", "%s %s %d tiles=%zu in=%zu out=%llu ms=%.1f peer=%s",
               rq->method, rq->path, rq->status, rq->status == 200 ? rq->ntiles : 0, rq->len,
               (unsigned long long)rq->bytes_out, secs * 1e3, peer);
    } else {
        static const char *const why[] = {"ok",         "error",       "timeout", "daemon shutdown",
                                          "read error", "client abort"};
        hc_metrics_request(s->metrics, 0, secs, rq->len, 0, 0);
        if (toe != MHD_REQUEST_TERMINATED_WITH_ERROR || rq->state != REQ_RECEIVING)
            hc_metrics_error(s->metrics, HC_ERR_ABORTED);
        hc_log(HC_LOG_INFO, "http", "%s %s cut (%s%s) status=%d in=%zu ms=%.1f peer=%s", rq->method,
               rq->path, (unsigned)toe < 6 ? why[toe] : "?",
               rq->conn && rq->conn->cut ? ", request timeout" : "", rq->status, rq->len,
               secs * 1e3, peer);
    }
    mem_release(rq, rq->mem);
    pthread_mutex_lock(&s->lock);
    if (rq->counted)
        s->inflight--;
    if (rq->conn)
        rq->conn->phase_start = now_s();
    pthread_mutex_unlock(&s->lock);
    if (rq->response)
        MHD_destroy_response(rq->response);
    free(rq->body);
    free(rq->plain);
    free(rq->tiles);
    free(rq->pixels);
    free(rq);
}

/* ---- connections and the watchdog --------------------------------------------------- */

static void
on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
              enum MHD_ConnectionNotificationCode toe)
{
    struct hc_service *s = cls;
    struct conn *c;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c = calloc(1, sizeof *c);
        if (!c)
            return; /* on_request refuses connections without a context */
        c->fd = ci ? ci->connect_fd : -1;
        c->phase_start = now_s();
        pthread_mutex_lock(&s->lock);
        c->next = s->conns.next;
        c->prev = &s->conns;
        s->conns.next->prev = c;
        s->conns.next = c;
        pthread_mutex_unlock(&s->lock);
        *socket_context = c;
    } else if ((c = *socket_context) != NULL) {
        pthread_mutex_lock(&s->lock);
        c->prev->next = c->next;
        c->next->prev = c->prev;
        pthread_mutex_unlock(&s->lock);
        free(c);
        *socket_context = NULL;
    }
}

static void *
watchdog(void *arg)
{
    struct hc_service *s = arg;
    struct timespec tick = {0, 200 * 1000 * 1000};

    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        double now = now_s();
        for (struct conn *c = s->conns.next; c != &s->conns; c = c->next) {
            if (!c->in_job && !c->cut && c->fd >= 0 &&
                now - c->phase_start > s->o.request_timeout) {
                /* MHD sees the shut-down socket fail and closes the connection itself; the
                 * fd stays valid because MHD removes c (under this lock) before closing. */
                shutdown(c->fd, SHUT_RDWR);
                c->cut = 1;
                hc_metrics_error(s->metrics, HC_ERR_ABORTED);
                hc_log(HC_LOG_WARN, "service", "connection cut: no complete request within %d s",
                       s->o.request_timeout);
            }
        }
        pthread_mutex_unlock(&s->lock);
        nanosleep(&tick, NULL);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    hc_log(HC_LOG_DEBUG, "mhd", "%s", msg);
}

/* ---- start / stop ------------------------------------------------------------------- */

static int
read_token(struct hc_service *s, const char *path)
{
    FILE *f = fopen(path, "r");
    size_t n;
    int rc = 0, c;

    if (!f)
        return hc_error(-errno, "service", "cannot open token file %s: %s", path, strerror(errno));
    n = fread(s->token, 1, sizeof s->token - 1, f);
    s->token[n] = '\0';
    /* The first line, trailing blanks removed, as the client reads the same file
     * (hc_client_read_token): otherwise one file shared by both sides gives 401s. */
    if (!memchr(s->token, '\n', n) && n == sizeof s->token - 1 && (c = fgetc(f)) != EOF &&
        c != '\n' && c != '\r') {
        rc = hc_error(-EINVAL, "service", "token in %s is longer than %d bytes", path,
                      TOKEN_MAX - 1);
        s->token_len = 0;
        goto out;
    }
    s->token[strcspn(s->token, "\n")] = '\0';
    n = strlen(s->token);
    while (n > 0 && isspace((unsigned char)s->token[n - 1]))
        s->token[--n] = '\0';
    s->token_len = n;
    if (s->token_len < 16)
        rc = hc_error(-EINVAL, "service", "token in %s is %zu bytes: use at least 16", path,
                      s->token_len);
out:
    fclose(f);
    return rc;
}

/* Splits "HOST:PORT" / "[V6]:PORT" and resolves it (numeric or a name like localhost). */
static int
resolve(const char *listen, struct sockaddr_storage *ss, socklen_t *sl)
{
    char host[256];
    const char *colon, *port;
    struct addrinfo hints, *ai = NULL;
    int rc;

    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (!end || end[1] != ':' || (size_t)(end - listen - 1) >= sizeof host)
            return hc_error(-EINVAL, "service", "bad --listen '%s' (use [ADDR]:PORT)", listen);
        memcpy(host, listen + 1, (size_t)(end - listen - 1));
        host[end - listen - 1] = '\0';
        port = end + 2;
    } else {
        colon = strrchr(listen, ':');
        if (!colon || (size_t)(colon - listen) >= sizeof host)
            return hc_error(-EINVAL, "service", "bad --listen '%s' (use HOST:PORT)", listen);
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        port = colon + 1;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc || !ai)
        return hc_error(-EINVAL, "service", "cannot resolve --listen '%s': %s", listen,
                        gai_strerror(rc));
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *sl = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static int
is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)ss;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

int
hc_service_start(const struct hc_service_opts *o, struct hc_service **out)
{
    struct hc_service *s;
    struct sockaddr_storage ss;
    socklen_t sl;
    struct hc_backend_opts bo;
    const char *names[64];
    int rc, ndev;
    unsigned flags;

    s = calloc(1, sizeof *s);
    if (!s)
        return hc_error(-ENOMEM, "service", "out of memory");
    s->o = *o;
    if (s->o.max_memory == 0) {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        uint64_t phys = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : (uint64_t)4 << 30;

        s->o.max_memory = phys / 2 > ((uint64_t)256 << 20) ? phys / 2 : (uint64_t)256 << 20;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->conns.next = s->conns.prev = &s->conns;
    rc = resolve(o->listen, &ss, &sl);
    if (rc)
        goto fail;
    if (o->token_file) {
        rc = read_token(s, o->token_file);
        if (rc)
            goto fail;
    }
    if (!is_loopback(&ss) && s->token_len == 0 && !o->insecure_public) {
        rc = hc_error(-EPERM, "service",
                      "refusing to listen on non-loopback %s without --token-file "
                      "(or pass --insecure-public)",
                      o->listen);
        goto fail;
    }
    bo.jobs = o->jobs;
    bo.cpu_threads = o->cpu_threads;
    rc = hc_backend_open(o->backend, &bo, &s->backend, &s->bctx);
    if (rc)
        goto fail;
    if (s->o.jobs <= 0) {
        /* CPU: one job at a time already uses every core; CUDA: two requests per device
         * keep one copying while the other computes. */
        s->o.jobs = strcmp(s->backend->name, "cuda") == 0 ? 2 * s->backend->devices(s->bctx) : 1;
    }
    ndev = s->backend->devices(s->bctx);
    if (ndev > 64)
        ndev = 64;
    for (int i = 0; i < ndev; i++)
        names[i] = s->backend->device_name(s->bctx, i);
    s->metrics = hc_metrics_new(s->backend->name, ndev, names);
    if (!s->metrics) {
        rc = hc_error(-ENOMEM, "service", "out of memory");
        goto fail;
    }
    rc = hc_jobs_new(s->o.jobs, s->o.queue, &s->jobs);
    if (rc) {
        hc_error(rc, "service", "cannot start %d workers", s->o.jobs);
        goto fail;
    }
    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
#ifdef __linux__
    flags |= MHD_USE_EPOLL;
#else
    flags |= MHD_USE_AUTO;
#endif
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(o->threads > 0 ? o->threads : 1),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)o->max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)o->conn_timeout, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_END);
    if (!s->mhd) {
        rc = hc_error(-EADDRINUSE, "service", "cannot listen on %s (in use, or not allowed)",
                      o->listen);
        goto fail;
    }
    {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_LISTEN_FD);
        struct sockaddr_storage bound;
        socklen_t bl = sizeof bound;

        if (di && getsockname(di->listen_fd, (struct sockaddr *)&bound, &bl) == 0)
            s->port = ntohs(bound.ss_family == AF_INET6
                                ? ((struct sockaddr_in6 *)(void *)&bound)->sin6_port
                                : ((struct sockaddr_in *)(void *)&bound)->sin_port);
    }
    rc = -pthread_create(&s->watchdog, NULL, watchdog, s);
    if (rc) {
        hc_error(rc, "service", "cannot start the watchdog");
        goto fail;
    }
    s->watchdog_running = 1;
    hc_log(HC_LOG_INFO, "service",
           "listening on %s port %d: backend %s, %d jobs + %d queued, %d http threads, "
           "max body %zu, memory budget %llu, token %s",
           o->listen, s->port, s->backend->name, s->o.jobs, s->o.queue, o->threads, o->max_body,
           (unsigned long long)s->o.max_memory, s->token_len ? "on" : "off");
    if (s->o.max_memory < (uint64_t)o->max_body)
        hc_log(HC_LOG_WARN, "service",
               "--max-memory %llu is below --max-body %zu: the largest requests will get 429",
               (unsigned long long)s->o.max_memory, o->max_body);
    *out = s;
    return 0;
fail : {
    char why[512];
    snprintf(why, sizeof why, "%s", hc_last_error());
    hc_service_stop(s);
    return hc_error_restore(rc, why);
}
}

int
hc_service_port(const struct hc_service *s)
{
    return s->port;
}

int
hc_service_drain(struct hc_service *s, int timeout)
{
    double deadline = now_s() + timeout;
    struct timespec tick = {0, 50 * 1000 * 1000};
    int queued, running, busy;
    MHD_socket fd;

    pthread_mutex_lock(&s->lock);
    s->draining = 1;
    pthread_mutex_unlock(&s->lock);
    fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    /* Done once nothing has been in flight for a whole second: that second lets answers of
     * finished jobs reach their clients, and a request that arrives in it on a kept-alive
     * connection (refused with 503 once its body is read) is waited for too. */
    for (int quiet = 0; quiet < 20;) {
        hc_jobs_stats(s->jobs, &queued, &running);
        pthread_mutex_lock(&s->lock);
        /* inflight counts every upscale request from its headers until its answer has been
         * handed to the socket: a body still arriving and an answer still on its way to a
         * slow reader are work in flight too (the watchdog bounds both by the request
         * timeout); jobs alone would let the stop below cut them off. */
        busy = queued + running + s->inflight;
        for (struct conn *c = s->conns.next; c != &s->conns; c = c->next)
            busy += c->in_job;
        pthread_mutex_unlock(&s->lock);
        quiet = busy ? 0 : quiet + 1;
        if (busy && now_s() > deadline)
            return hc_error(-ETIMEDOUT, "service", "%d requests still in flight after %d s", busy,
                            timeout);
        nanosleep(&tick, NULL);
    }
    return 0;
}

void
hc_service_stop(struct hc_service *s)
{
    if (!s)
        return;
    if (s->watchdog_running) {
        pthread_mutex_lock(&s->lock);
        s->stopping = 1;
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->watchdog, NULL);
    }
    /* Workers first: a running job resumes its connection, which MHD must still exist for.
     * The pool is freed only after MHD has stopped: until then its threads may still
     * serve a kept-alive connection (a /metrics scrape, a body completing) that calls
     * hc_jobs_stats() or hc_jobs_submit(). */
    hc_jobs_stop(s->jobs);
    if (s->mhd)
        MHD_stop_daemon(s->mhd);
    hc_jobs_free(s->jobs);
    if (s->backend && s->bctx)
        s->backend->fini(s->bctx);
    hc_metrics_free(s->metrics);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
