/* client.c: the HTTP tile client (see client.h for the contract).
 *
 * One libcurl multi handle per client, driven by one thread of the client's own (started
 * by the first run(), so a daemon that forks after hc_client_open() keeps it). A run() call
 * cuts its tiles into requests of tiles_per_request tiles, hands the whole job to that
 * thread and sleeps until it is over. The thread keeps up to `inflight` requests of each job
 * and `max_connections` of all jobs in flight, judges every finished transfer (done, retry,
 * or fatal) and wakes the job's caller when it is complete, failed or cancelled.
 *
 * Why one thread rather than a multi handle per caller: libcurl handles are not
 * thread-safe, and connections live in a multi handle's cache. With one multi every job
 * reuses the same keep-alive connections, and the total number of connections stays under
 * max_connections however many jobs run (hcfs runs 16 files at once; the service limits
 * connections per client address and refuses the ones beyond).
 */
#include "client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <lz4frame.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <curl/curl.h>

#include "error.h"
#include "wire.h"

#define DOMAIN "client"
#define ENDPOINT "/v1/upscale"
#define POLL_SLICE_MS 50     /* how often the transfer thread looks at cancel flags */
#define BACKOFF_FIRST_MS 100 /* first retry wait when no other URL is healthy */
#define BACKOFF_MAX_MS 5000  /* no single wait is longer (Retry-After included) */
#define PENALTY_FIRST_MS 250 /* a failed URL is avoided this long, doubling per failure */
#define PENALTY_MAX_MS 10000
#define ERROR_BODY_MAX 4096 /* bytes of a non-200 answer kept for the message */
#define TOKEN_MAX 4096

enum encoding { ENC_NONE, ENC_ZSTD, ENC_LZ4 };

struct url_state {
    char *url;           /* the full endpoint */
    int fails;           /* consecutive failed attempts */
    uint64_t down_until; /* monotonic ms: picked before this only when nothing else is up */
    uint64_t busy_until; /* 429/503 with Retry-After: sent nothing before this, unless
                            another URL is not busy */
};

struct counters {
    _Atomic uint64_t requests, responses_ok, retries, failovers, failures, splits, tiles,
        bytes_sent, bytes_received;
};

struct run;

/* What every handle of one client shares. */
struct shared {
    atomic_int refs;
    pthread_mutex_t lock; /* urls[] health and rr */
    struct url_state *urls;
    size_t nurls;
    size_t rr;
    CURLSH *share; /* DNS cache and TLS sessions */
    pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
    struct curl_slist *headers; /* read-only once built */
    int inflight, per_request, connect_timeout_ms, timeout_ms, retries, max_active;
    enum encoding enc;
    const volatile int *cancel;
    struct counters st;

    /* The transfer thread. Only it touches multi, the easy handles and the runs it has
     * taken in; callers meet it through runs_lock: `incoming` (new jobs), each run's
     * `finished` flag, and `stop`. */
    CURLM *multi;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t runs_lock;
    pthread_cond_t runs_cond; /* broadcast whenever a run finishes */
    struct run *incoming;
    int stop;
    CURL **easy_free; /* idle easy handles, max_active slots */
    int neasy_free, neasy, active;
};

struct hc_client {
    struct shared *sh;
    const volatile int *cancel; /* per job (hc_client_derive), or NULL */
};

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
count(_Atomic uint64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

/* ---- libcurl global state and share locks ------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void
curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

static void
share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userp)
{
    (void)h;
    (void)access;
    struct shared *sh = userp;
    if (data >= 0 && data < CURL_LOCK_DATA_LAST)
        pthread_mutex_lock(&sh->share_lock[data]);
}

static void
share_unlock(CURL *h, curl_lock_data data, void *userp)
{
    (void)h;
    struct shared *sh = userp;
    if (data >= 0 && data < CURL_LOCK_DATA_LAST)
        pthread_mutex_unlock(&sh->share_lock[data]);
}

/* ---- options, open, derive, close ---------------------------------------------------- */

void
hc_client_opts_default(struct hc_client_opts *o)
{
    memset(o, 0, sizeof *o);
    o->inflight = 8;
    o->tiles_per_request = 4;
    o->connect_timeout_ms = 3000;
    o->timeout_ms = 60000;
    o->retries = 3;
    o->max_connections = 32;
}

/* The endpoint for a base URL: trailing slashes dropped, ENDPOINT appended unless there. */
static int
make_endpoint(const char *base, char **out)
{
    if (strncasecmp(base, "http://", 7) != 0 && strncasecmp(base, "https://", 8) != 0)
        return hc_error(-EINVAL, DOMAIN, "service URL '%s' must start with http:// or https://",
                        base);
    for (const char *p = base; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return hc_error(-EINVAL, DOMAIN, "service URL '%s' holds a space or control character",
                            base);
    size_t len = strlen(base);
    while (len > 8 && base[len - 1] == '/')
        len--;
    size_t elen = strlen(ENDPOINT);
    int has = len >= elen && memcmp(base + len - elen, ENDPOINT, elen) == 0;
    char *s = malloc(len + elen + 1);
    if (!s)
        return hc_error(-ENOMEM, DOMAIN, "out of memory");
    memcpy(s, base, len);
    if (has)
        s[len] = '\0';
    else
        memcpy(s + len, ENDPOINT, elen + 1);
    *out = s;
    return 0;
}

static void
shared_free(struct shared *sh)
{
    if (!sh)
        return;
    if (sh->thread_started) {
        pthread_mutex_lock(&sh->runs_lock);
        sh->stop = 1;
        pthread_mutex_unlock(&sh->runs_lock);
        curl_multi_wakeup(sh->multi);
        pthread_join(sh->thread, NULL);
    }
    for (int i = 0; i < sh->neasy_free; i++)
        curl_easy_cleanup(sh->easy_free[i]);
    free(sh->easy_free);
    if (sh->multi)
        curl_multi_cleanup(sh->multi); /* closes the cached connections */
    pthread_cond_destroy(&sh->runs_cond);
    pthread_mutex_destroy(&sh->runs_lock);
    if (sh->share)
        curl_share_cleanup(sh->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&sh->share_lock[i]);
    pthread_mutex_destroy(&sh->lock);
    curl_slist_free_all(sh->headers);
    for (size_t i = 0; i < sh->nurls; i++)
        free(sh->urls[i].url);
    free(sh->urls);
    free(sh);
}

static int
add_header(struct curl_slist **list, const char *fmt, const char *value)
{
    char line[TOKEN_MAX + 64];
    snprintf(line, sizeof line, fmt, value);
    struct curl_slist *n = curl_slist_append(*list, line);
    if (!n)
        return hc_error(-ENOMEM, DOMAIN, "out of memory");
    *list = n;
    return 0;
}

int
hc_client_open(const struct hc_client_opts *o, struct hc_client **out)
{
    struct shared *sh = NULL;
    struct hc_client *c = NULL;
    int rc = 0;

    if (!o || !o->urls || o->nurls == 0)
        return hc_error(-EINVAL, DOMAIN, "no service URL given");
    if (o->inflight < 1 || o->inflight > 1024)
        return hc_error(-EINVAL, DOMAIN, "inflight %d out of range 1..1024", o->inflight);
    if (o->tiles_per_request < 1 || o->tiles_per_request > HC_WIRE_MAX_TILES)
        return hc_error(-EINVAL, DOMAIN, "tiles_per_request %d out of range 1..%d",
                        o->tiles_per_request, HC_WIRE_MAX_TILES);
    if (o->connect_timeout_ms < 1 || o->timeout_ms < 1)
        return hc_error(-EINVAL, DOMAIN, "timeouts must be at least 1 ms");
    if (o->retries < 0 || o->retries > 100)
        return hc_error(-EINVAL, DOMAIN, "retries %d out of range 0..100", o->retries);
    if (o->max_connections < 1 || o->max_connections > 4096)
        return hc_error(-EINVAL, DOMAIN, "max_connections %d out of range 1..4096",
                        o->max_connections);
    enum encoding enc = ENC_NONE;
    if (o->encoding && strcmp(o->encoding, "zstd") == 0)
        enc = ENC_ZSTD;
    else if (o->encoding && strcmp(o->encoding, "lz4") == 0)
        enc = ENC_LZ4;
    else if (o->encoding && *o->encoding && strcmp(o->encoding, "identity") != 0)
        return hc_error(-EINVAL, DOMAIN, "unknown encoding '%s' (zstd, lz4 or none)", o->encoding);
    if (o->token) {
        size_t tl = strlen(o->token);
        if (tl == 0 || tl > TOKEN_MAX)
            return hc_error(-EINVAL, DOMAIN, "token must be 1..%d bytes", TOKEN_MAX);
        for (size_t i = 0; i < tl; i++)
            if ((unsigned char)o->token[i] < 0x21 || o->token[i] == 0x7f)
                return hc_error(-EINVAL, DOMAIN, "token holds a space or control character");
    }

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return hc_error(-EIO, DOMAIN, "libcurl initialisation failed: %s",
                        curl_easy_strerror(curl_init_rc));

    sh = calloc(1, sizeof *sh);
    c = calloc(1, sizeof *c);
    if (!sh || !c) {
        free(sh);
        sh = NULL;
        rc = hc_error(-ENOMEM, DOMAIN, "out of memory");
        goto out;
    }
    atomic_init(&sh->refs, 1);
    pthread_mutex_init(&sh->lock, NULL);
    pthread_mutex_init(&sh->runs_lock, NULL);
    pthread_cond_init(&sh->runs_cond, NULL);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&sh->share_lock[i], NULL);
    sh->inflight = o->inflight;
    sh->per_request = o->tiles_per_request;
    sh->connect_timeout_ms = o->connect_timeout_ms;
    sh->timeout_ms = o->timeout_ms;
    sh->retries = o->retries;
    sh->max_active = o->max_connections;
    sh->enc = enc;
    sh->cancel = o->cancel;

    sh->urls = calloc(o->nurls, sizeof *sh->urls);
    if (!sh->urls) {
        rc = hc_error(-ENOMEM, DOMAIN, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < o->nurls; i++) {
        if (!o->urls[i]) {
            rc = hc_error(-EINVAL, DOMAIN, "service URL %zu is NULL", i);
            goto out;
        }
        rc = make_endpoint(o->urls[i], &sh->urls[i].url);
        if (rc)
            goto out;
        sh->nurls = i + 1;
    }

    sh->easy_free = calloc((size_t)sh->max_active, sizeof *sh->easy_free);
    sh->multi = curl_multi_init();
    if (!sh->easy_free || !sh->multi) {
        rc = hc_error(-ENOMEM, DOMAIN, "out of memory");
        goto out;
    }
    /* Idle connections kept for reuse: as many as may be busy at once. */
    curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, (long)sh->max_active);

    sh->share = curl_share_init();
    if (!sh->share) {
        rc = hc_error(-ENOMEM, DOMAIN, "curl_share_init failed");
        goto out;
    }
    curl_share_setopt(sh->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(sh->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(sh->share, CURLSHOPT_USERDATA, sh);
    curl_share_setopt(sh->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(sh->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);

    /* "Expect:" turns off 100-continue, which would cost a round trip (or a 1 s wait with
     * servers that ignore it) on every body over 1 MiB. */
    const char *ename = enc == ENC_ZSTD ? "zstd" : enc == ENC_LZ4 ? "lz4" : NULL;
    if ((rc = add_header(&sh->headers, "%s", "Content-Type: application/octet-stream")) ||
        (rc = add_header(&sh->headers, "%s", "Expect:")))
        goto out;
    if (ename && ((rc = add_header(&sh->headers, "Content-Encoding: %s", ename)) ||
                  (rc = add_header(&sh->headers, "Accept-Encoding: %s", ename))))
        goto out;
    if (o->token && (rc = add_header(&sh->headers, "Authorization: Bearer %s", o->token)))
        goto out;

    c->sh = sh;
    *out = c;
    c = NULL;
    sh = NULL;
out:
    free(c);
    shared_free(sh);
    return rc;
}

int
hc_client_derive(struct hc_client *c, const volatile int *cancel, struct hc_client **out)
{
    struct hc_client *d = calloc(1, sizeof *d);
    if (!d)
        return hc_error(-ENOMEM, DOMAIN, "out of memory");
    atomic_fetch_add(&c->sh->refs, 1);
    d->sh = c->sh;
    d->cancel = cancel;
    *out = d;
    return 0;
}

void
hc_client_close(struct hc_client *c)
{
    if (!c)
        return;
    if (atomic_fetch_sub(&c->sh->refs, 1) == 1)
        shared_free(c->sh);
    free(c);
}

void
hc_client_stats(const struct hc_client *c, struct hc_client_stats *s)
{
    const struct counters *k = &c->sh->st;
    s->requests = atomic_load_explicit(&k->requests, memory_order_relaxed);
    s->responses_ok = atomic_load_explicit(&k->responses_ok, memory_order_relaxed);
    s->retries = atomic_load_explicit(&k->retries, memory_order_relaxed);
    s->failovers = atomic_load_explicit(&k->failovers, memory_order_relaxed);
    s->failures = atomic_load_explicit(&k->failures, memory_order_relaxed);
    s->splits = atomic_load_explicit(&k->splits, memory_order_relaxed);
    s->tiles = atomic_load_explicit(&k->tiles, memory_order_relaxed);
    s->bytes_sent = atomic_load_explicit(&k->bytes_sent, memory_order_relaxed);
    s->bytes_received = atomic_load_explicit(&k->bytes_received, memory_order_relaxed);
}

int
hc_client_read_token(const char *path, char **token)
{
    char buf[TOKEN_MAX + 2];
    size_t len = 0;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hc_error(-errno, DOMAIN, "token file %s: %s", path, strerror(errno));
    while (len < sizeof buf - 1) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = hc_error(-errno, DOMAIN, "token file %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    char *nl = memchr(buf, '\n', len);
    if (nl)
        *nl = '\0';
    else if (len > TOKEN_MAX) {
        rc = hc_error(-EINVAL, DOMAIN, "token file %s: first line longer than %d bytes", path,
                      TOKEN_MAX);
        goto out;
    }
    len = strlen(buf);
    while (len > 0 && isspace((unsigned char)buf[len - 1]))
        buf[--len] = '\0';
    if (len == 0) {
        rc = hc_error(-EINVAL, DOMAIN, "token file %s: empty", path);
        goto out;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)buf[i] < 0x21 || buf[i] == 0x7f) {
            rc = hc_error(-EINVAL, DOMAIN,
                          "token file %s: token holds a space or control "
                          "character",
                          path);
            goto out;
        }
    char *t = strdup(buf);
    if (!t) {
        rc = hc_error(-ENOMEM, DOMAIN, "out of memory");
        goto out;
    }
    *token = t;
out:
    close(fd);
    return rc;
}

/* ---- easy handles (transfer thread only) --------------------------------------------- */

static CURL *
easy_get(struct shared *sh)
{
    if (sh->neasy_free > 0)
        return sh->easy_free[--sh->neasy_free];
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    sh->neasy++;
    /* Threads: no signals (libcurl's DNS timeout uses SIGALRM otherwise). We decode
     * Content-Encoding ourselves, bounded by the size we asked for. */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_SHARE, sh->share);
    curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, sh->headers);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)sh->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)sh->timeout_ms);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    return e;
}

/* Takes a transfer's handle out of the multi (aborting it if it still runs, which closes
 * its connection) and back into the free list, pointing at nothing of the finished run. */
static void
easy_put(struct shared *sh, CURL *e)
{
    curl_multi_remove_handle(sh->multi, e);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(e, CURLOPT_PRIVATE, NULL);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
    if (sh->neasy_free < sh->max_active)
        sh->easy_free[sh->neasy_free++] = e;
    else
        curl_easy_cleanup(e), sh->neasy--;
    sh->active--;
}

/* ---- URL choice and health --------------------------------------------------------------- */

/* Round-robin over the URLs that are up, avoiding `avoid` (the URL that just failed this
 * request) while another one is up. When none is up, the one that comes back first. */
static int
url_pick(struct shared *sh, int avoid, uint64_t now)
{
    int best = -1;
    pthread_mutex_lock(&sh->lock);
    for (size_t k = 0; k < sh->nurls && best < 0; k++) {
        size_t i = (sh->rr + k) % sh->nurls;
        if ((int)i == avoid && sh->nurls > 1)
            continue;
        if (sh->urls[i].down_until <= now)
            best = (int)i;
    }
    if (best < 0)
        for (size_t i = 0; i < sh->nurls; i++) {
            if (best < 0 || sh->urls[i].down_until < sh->urls[best].down_until ||
                (sh->urls[i].down_until == sh->urls[best].down_until && best == avoid))
                best = (int)i;
        }
    sh->rr = (size_t)best + 1;
    pthread_mutex_unlock(&sh->lock);
    return best;
}

static void
url_ok(struct shared *sh, int u)
{
    pthread_mutex_lock(&sh->lock);
    sh->urls[u].fails = 0;
    sh->urls[u].down_until = 0;
    sh->urls[u].busy_until = 0;
    pthread_mutex_unlock(&sh->lock);
}

static void
url_failed(struct shared *sh, int u, uint64_t now, uint64_t busy_ms)
{
    pthread_mutex_lock(&sh->lock);
    struct url_state *s = &sh->urls[u];
    int shift = s->fails < 6 ? s->fails : 6;
    uint64_t pen = (uint64_t)PENALTY_FIRST_MS << shift;
    if (pen > PENALTY_MAX_MS)
        pen = PENALTY_MAX_MS;
    if (pen < busy_ms)
        pen = busy_ms;
    s->fails++;
    if (s->down_until < now + pen)
        s->down_until = now + pen;
    if (busy_ms && s->busy_until < now + busy_ms)
        s->busy_until = now + busy_ms;
    pthread_mutex_unlock(&sh->lock);
}

/* 0 when some URL may take a new request now; else the time when the first one may (every
 * URL answered 429/503 with a Retry-After that has not passed). Overload is the one
 * failure where sending more at once only makes it worse. */
static uint64_t
url_free_at(struct shared *sh, uint64_t now)
{
    uint64_t first = UINT64_MAX;
    pthread_mutex_lock(&sh->lock);
    for (size_t i = 0; i < sh->nurls && first; i++)
        first = sh->urls[i].busy_until <= now    ? 0
                : sh->urls[i].busy_until < first ? sh->urls[i].busy_until
                                                 : first;
    pthread_mutex_unlock(&sh->lock);
    return first;
}

/* Whether a URL other than `except` is up now. */
static int
url_other_up(struct shared *sh, int except, uint64_t now)
{
    int up = 0;
    pthread_mutex_lock(&sh->lock);
    for (size_t i = 0; i < sh->nurls && !up; i++)
        up = (int)i != except && sh->urls[i].down_until <= now;
    pthread_mutex_unlock(&sh->lock);
    return up;
}

/* ---- bodies: compression ------------------------------------------------------------------ */

static int
compress_body(enum encoding enc, const uint8_t *in, size_t len, uint8_t **out, size_t *olen)
{
    if (enc == ENC_ZSTD) {
        size_t cap = ZSTD_compressBound(len);
        uint8_t *b = malloc(cap);
        if (!b)
            return hc_error(-ENOMEM, DOMAIN, "out of memory");
        /* Level 1: pixels compress little better at higher levels and the CPU is the Mac's. */
        size_t r = ZSTD_compress(b, cap, in, len, 1);
        if (ZSTD_isError(r)) {
            free(b);
            return hc_error(-EIO, DOMAIN, "zstd: %s", ZSTD_getErrorName(r));
        }
        *out = b;
        *olen = r;
        return 0;
    }
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.contentSize = len;
    size_t cap = LZ4F_compressFrameBound(len, &prefs);
    uint8_t *b = malloc(cap);
    if (!b)
        return hc_error(-ENOMEM, DOMAIN, "out of memory");
    size_t r = LZ4F_compressFrame(b, cap, in, len, &prefs);
    if (LZ4F_isError(r)) {
        free(b);
        return hc_error(-EIO, DOMAIN, "lz4: %s", LZ4F_getErrorName(r));
    }
    *out = b;
    *olen = r;
    return 0;
}

/* Decompresses a response body into exactly `expect` bytes; anything longer, shorter or
 * malformed is an error, so a hostile or broken answer cannot make us allocate more than
 * what we asked for. *out is malloc'd. */
static int
decompress_body(enum encoding enc, const uint8_t *in, size_t len, size_t expect, uint8_t **out)
{
    int rc = 0;
    size_t cap = expect + 1; /* one spare byte tells "too long" from "exact" */
    uint8_t *b = malloc(cap);
    if (!b)
        return hc_error(-ENOMEM, DOMAIN, "out of memory");
    size_t opos = 0;
    if (enc == ENC_ZSTD) {
        ZSTD_DCtx *d = ZSTD_createDCtx();
        if (!d) {
            rc = hc_error(-ENOMEM, DOMAIN, "out of memory");
            goto out;
        }
        ZSTD_inBuffer ib = {in, len, 0};
        ZSTD_outBuffer ob = {b, cap, 0};
        size_t r = 1;
        while (ib.pos < ib.size || r != 0) {
            size_t before_in = ib.pos, before_out = ob.pos;
            r = ZSTD_decompressStream(d, &ob, &ib);
            if (ZSTD_isError(r)) {
                rc = hc_error(-EPROTO, DOMAIN, "zstd response: %s", ZSTD_getErrorName(r));
                break;
            }
            if (ob.pos > expect) {
                rc = hc_error(-EPROTO, DOMAIN,
                              "zstd response inflates past the %zu bytes asked "
                              "for",
                              expect);
                break;
            }
            if (ib.pos == before_in && ob.pos == before_out) {
                rc = hc_error(-EPROTO, DOMAIN, "zstd response is truncated");
                break;
            }
        }
        opos = ob.pos;
        ZSTD_freeDCtx(d);
    } else {
        LZ4F_dctx *d = NULL;
        if (LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION))) {
            rc = hc_error(-ENOMEM, DOMAIN, "out of memory");
            goto out;
        }
        size_t ipos = 0, r = 1;
        while (ipos < len || r != 0) {
            size_t dst = cap - opos, src = len - ipos;
            r = LZ4F_decompress(d, b + opos, &dst, in + ipos, &src, NULL);
            if (LZ4F_isError(r)) {
                rc = hc_error(-EPROTO, DOMAIN, "lz4 response: %s", LZ4F_getErrorName(r));
                break;
            }
            ipos += src;
            opos += dst;
            if (opos > expect) {
                rc = hc_error(-EPROTO, DOMAIN,
                              "lz4 response inflates past the %zu bytes asked "
                              "for",
                              expect);
                break;
            }
            if (src == 0 && dst == 0) {
                rc = hc_error(-EPROTO, DOMAIN, "lz4 response is truncated");
                break;
            }
        }
        LZ4F_freeDecompressionContext(d);
    }
    if (!rc && opos != expect)
        rc = hc_error(-EPROTO, DOMAIN, "%s response holds %zu bytes, %zu were asked for",
                      enc == ENC_ZSTD ? "zstd" : "lz4", opos, expect);
out:
    if (rc)
        free(b);
    else
        *out = b;
    return rc;
}

/* ---- one run() ------------------------------------------------------------------------------ */

enum req_state { REQ_WAIT, REQ_BUSY, REQ_DONE };

struct req {
    size_t first, n; /* tiles[first .. first+n) */
    enum req_state state;
    int attempts;      /* made so far */
    int failed;        /* failed attempts that count against opts.retries (not 429s) */
    uint64_t first_at; /* monotonic ms of the first attempt: bounds retries after 429s */
    int last_url;      /* -1 before the first attempt */
    uint64_t due;      /* monotonic ms before which it is not sent (backoff) */
    uint8_t *body;     /* the encoded request, kept for retries */
    size_t body_len;
    size_t expect; /* bytes of the plain response */
    char why[400]; /* the last failure, for the final message */
};

struct xfer {
    struct run *R;
    CURL *easy;
    struct req *r; /* NULL: slot free */
    int url;
    uint8_t *buf;
    size_t len, cap, limit;
    int overflow;
    char encoding[32];
    long retry_after_s;
    char errbuf[CURL_ERROR_SIZE];
};

/* One run() call. Its caller fills it, hands it to the transfer thread and sleeps until
 * `finished`; in between only the transfer thread touches it. */
struct run {
    struct run *next;
    struct hc_client *c;
    struct shared *sh;
    const struct hc_job_geom *g;
    struct hc_tile *tiles;
    struct req *reqs; /* room for one per tile: a split appends one */
    size_t nreq, ndone;
    size_t cursor;  /* requests before it have had a first attempt */
    struct xfer *x; /* sh->inflight slots */
    int busy;
    int rc;        /* first fatal error */
    char msg[600]; /* its reason, without the "client: " prefix */
    int finished;  /* under runs_lock */
};

static size_t
on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    if (n > x->limit - x->len) {
        x->overflow = 1;
        return 0; /* makes libcurl fail the transfer with CURLE_WRITE_ERROR */
    }
    if (x->len + n > x->cap) {
        size_t nc = x->cap ? x->cap : 65536;
        while (nc < x->len + n)
            nc *= 2;
        if (nc > x->limit)
            nc = x->limit;
        uint8_t *nb = realloc(x->buf, nc);
        if (!nb)
            return 0;
        x->buf = nb;
        x->cap = nc;
    }
    memcpy(x->buf + x->len, p, n);
    x->len += n;
    return n;
}

/* Keeps the two response headers we act on. A new status line (after a 100 Continue)
 * starts over. */
static size_t
on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    char line[256];
    size_t l = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, p, l);
    line[l] = '\0';
    while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == '\n' || line[l - 1] == ' '))
        line[--l] = '\0';
    if (strncmp(line, "HTTP/", 5) == 0) {
        x->encoding[0] = '\0';
        x->retry_after_s = -1;
    } else if (strncasecmp(line, "Content-Encoding:", 17) == 0) {
        const char *v = line + 17;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        if (vl >= sizeof x->encoding)
            vl = sizeof x->encoding - 1; /* longer than any encoding we know: fails below */
        memcpy(x->encoding, v, vl);
        x->encoding[vl] = '\0';
    } else if (strncasecmp(line, "Retry-After:", 12) == 0) {
        char *end;
        long s = strtol(line + 12, &end, 10);
        /* An HTTP date instead of seconds is rare from our service; treat it as 1 s. */
        x->retry_after_s = end != line + 12 && s >= 0 ? s : 1;
    }
    return n;
}

/* Copies the value of a top-level JSON string member `key` into out (printable ASCII only,
 * escapes reduced to the escaped character). Returns 1 when found. Enough for the service's
 * flat {"error": "...", "detail": "..."} without a JSON library. */
static int
json_string(const char *s, size_t len, const char *key, char *out, size_t outsz)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= len; i++) {
        if (memcmp(s + i, pat, pl) != 0)
            continue;
        size_t j = i + pl;
        while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'))
            j++;
        if (j >= len || s[j] != ':')
            continue;
        j++;
        while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'))
            j++;
        if (j >= len || s[j] != '"')
            continue;
        j++;
        size_t o = 0;
        while (j < len && s[j] != '"') {
            if (s[j] == '\\' && j + 1 < len)
                j++;
            if (o + 1 < outsz && isprint((unsigned char)s[j]))
                out[o++] = s[j];
            j++;
        }
        out[o] = '\0';
        return 1;
    }
    return 0;
}

/* "HTTP 401: unauthorized: missing bearer token" from a non-200 answer. */
static void
describe_status(const struct xfer *x, long status, char *out, size_t outsz)
{
    char err[200] = "", detail[300] = "";
    const char *body = (const char *)x->buf;
    size_t len = x->len < ERROR_BODY_MAX ? x->len : ERROR_BODY_MAX;
    if (body && json_string(body, len, "error", err, sizeof err)) {
        json_string(body, len, "detail", detail, sizeof detail);
        snprintf(out, outsz, "HTTP %ld: %s%s%s", status, err, *detail ? ": " : "", detail);
        return;
    }
    /* Not our JSON (a proxy's page, say): show its start, printable characters only. */
    size_t o = 0;
    for (size_t i = 0; i < len && o < 120; i++)
        detail[o++] = isprint((unsigned char)body[i]) ? body[i] : ' ';
    detail[o] = '\0';
    snprintf(out, outsz, "HTTP %ld%s%s", status, o ? ": " : "", detail);
}

/* Errno for a 4xx that will not get better by retrying. */
static int
status_errno(long status)
{
    switch (status) {
    case 401:
    case 403:
        return -EACCES;
    case 400:
    case 404:
    case 405:
    case 411:
    case 413:
    case 415:
    case 422:
        return -EINVAL;
    default:
        return -EPROTO;
    }
}

static int
build_request(struct run *R, struct req *r)
{
    const struct hc_job_geom *g = R->g;
    /* On the heap: up to HC_WIRE_MAX_TILES descriptors would not fit a small thread stack
     * (macOS gives secondary threads 512 KiB). */
    struct hc_wire_tile *wt = malloc(r->n * sizeof *wt);
    const uint8_t **px = malloc(r->n * sizeof *px);
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    int rc = 0;

    if (!wt || !px) {
        rc = hc_error(-ENOMEM, DOMAIN, "out of memory");
        goto out;
    }
    r->expect = HC_WIRE_HEADER_SIZE + r->n * HC_WIRE_DESC_SIZE;
    for (size_t i = 0; i < r->n; i++) {
        const struct hc_tile *t = &R->tiles[r->first + i];
        wt[i] = (struct hc_wire_tile){
            .id = t->index,
            .image_w = (uint32_t)g->src_w,
            .image_h = (uint32_t)g->src_h,
            .out = t->out,
            .src = t->src,
            .channels = (uint8_t)g->channels,
            .depth = (uint8_t)g->depth,
            .scale = (uint8_t)g->scale,
            .filter = (uint8_t)g->filter,
        };
        px[i] = t->src_px;
        if (!t->src_px || !t->out_px) {
            rc = hc_error(-EINVAL, DOMAIN, "tile %u has no pixel buffer", t->index);
            goto out;
        }
        if ((rc = hc_wire_check_tile(&wt[i])))
            goto out;
        r->expect += hc_wire_out_bytes(&wt[i]);
    }
    if ((rc = hc_wire_encode(HC_WIRE_MAGIC_REQUEST, wt, px, r->n, &plain, &plain_len)))
        goto out;
    if (R->sh->enc == ENC_NONE) {
        r->body = plain;
        r->body_len = plain_len;
        plain = NULL;
    } else {
        rc = compress_body(R->sh->enc, plain, plain_len, &r->body, &r->body_len);
    }
out:
    free(plain);
    free(wt);
    free(px);
    return rc;
}

static int
start(struct run *R, struct xfer *x, struct req *r, uint64_t now)
{
    struct shared *sh = R->sh;
    int rc;
    if (!r->body && (rc = build_request(R, r)))
        return rc;
    CURL *e = easy_get(sh);
    if (!e)
        return hc_error(-ENOMEM, DOMAIN, "curl_easy_init failed");
    sh->active++;
    x->easy = e;
    int u = url_pick(sh, r->last_url, now);
    if (r->attempts > 0) {
        count(&sh->st.retries, 1);
        if (u != r->last_url)
            count(&sh->st.failovers, 1);
    } else {
        r->first_at = now;
    }
    r->attempts++;
    r->last_url = u;
    r->state = REQ_BUSY;
    x->r = r;
    x->url = u;
    x->len = 0;
    x->overflow = 0;
    x->encoding[0] = '\0';
    x->retry_after_s = -1;
    x->errbuf[0] = '\0';
    /* A compressed answer may be a little longer than the plain one on noise. */
    x->limit = r->expect + r->expect / 16 + 65536;

    curl_easy_setopt(e, CURLOPT_URL, sh->urls[u].url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, (const char *)r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    R->busy++; /* from here on the slot is busy, even if adding fails: the caller's
                  cleanup hands the handle back */
    CURLMcode mc = curl_multi_add_handle(sh->multi, e);
    if (mc != CURLM_OK)
        return hc_error(-EIO, DOMAIN, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
    count(&sh->st.requests, 1);
    return 0;
}

/* Checks a 200 answer against the request and copies its pixels out. Sets hc_last_error()
 * on failure (the caller keeps it as the attempt's reason). */
static int
accept_response(struct run *R, struct xfer *x, struct req *r)
{
    uint8_t *plain = NULL;
    const uint8_t *body = x->buf;
    size_t len = x->len;
    int rc = 0;
    struct hc_wire_tile *wt = malloc(r->n * sizeof *wt);
    const uint8_t **px = malloc(r->n * sizeof *px);
    size_t n = 0;

    if (!wt || !px) {
        rc = hc_error(-ENOMEM, DOMAIN, "out of memory");
        goto out;
    }
    if (x->encoding[0] && strcasecmp(x->encoding, "identity") != 0) {
        enum encoding e = strcasecmp(x->encoding, "zstd") == 0  ? ENC_ZSTD
                          : strcasecmp(x->encoding, "lz4") == 0 ? ENC_LZ4
                                                                : ENC_NONE;
        if (e == ENC_NONE) {
            rc = hc_error(-EPROTO, DOMAIN, "response in an unknown Content-Encoding '%s'",
                          x->encoding);
            goto out;
        }
        if ((rc = decompress_body(e, x->buf, x->len, r->expect, &plain)))
            goto out;
        body = plain;
        len = r->expect;
    }
    /* The parser checks the body against its own descriptors (and says what is wrong with
     * a body that is not a message at all); then the descriptors must be ours. */
    if ((rc = hc_wire_parse(HC_WIRE_MAGIC_RESPONSE, body, len, wt, px, r->n, &n)))
        goto out;
    if (n != r->n) {
        rc = hc_error(-EPROTO, DOMAIN, "response holds %zu tiles, %zu were asked for", n, r->n);
        goto out;
    }
    const struct hc_job_geom *g = R->g;
    for (size_t i = 0; i < n; i++) {
        const struct hc_tile *t = &R->tiles[r->first + i];
        const struct hc_wire_tile *w = &wt[i];
        if (w->id != t->index || w->image_w != (uint32_t)g->src_w ||
            w->image_h != (uint32_t)g->src_h || memcmp(&w->out, &t->out, sizeof w->out) != 0 ||
            memcmp(&w->src, &t->src, sizeof w->src) != 0 || w->channels != g->channels ||
            w->depth != g->depth || w->scale != g->scale || w->filter != (int)g->filter) {
            rc = hc_error(-EPROTO, DOMAIN,
                          "response tile %zu (id %u) is not the tile asked for "
                          "(id %u)",
                          i, w->id, t->index);
            goto out;
        }
    }
    if (len != r->expect) { /* implied by the checks above; kept as the last line of defence */
        rc = hc_error(-EPROTO, DOMAIN, "response of %zu bytes, %zu were asked for", len, r->expect);
        goto out;
    }
    /* Only now, with every descriptor checked, do pixels reach the caller. */
    for (size_t i = 0; i < n; i++)
        memcpy(R->tiles[r->first + i].out_px, px[i], hc_wire_out_bytes(&wt[i]));
out:
    free(plain);
    free(wt);
    free(px);
    return rc;
}

/* Judges a finished transfer. Returns 0 (done or queued for retry) or a fatal -errno with
 * hc_last_error() set. */
static int
finish(struct run *R, struct xfer *x, CURLcode res)
{
    struct shared *sh = R->sh;
    struct req *r = x->r;
    const char *url = sh->urls[x->url].url;
    long status = 0;
    curl_off_t up = 0;
    uint64_t now = now_ms(), busy_ms = 0;
    int overload = 0;

    long oe = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(x->easy, CURLINFO_SIZE_UPLOAD_T, &up);
    curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &oe);
    easy_put(sh, x->easy); /* a finished transfer leaves its connection in the cache */
    x->easy = NULL;
    x->r = NULL;
    R->busy--;
    count(&sh->st.bytes_sent, (uint64_t)up);
    count(&sh->st.bytes_received, x->len);

    if (res != CURLE_OK) {
        if (x->overflow)
            snprintf(r->why, sizeof r->why, "%s: response longer than the %zu bytes asked for", url,
                     r->expect);
        else {
            /* libcurl's text for a refused connection does not say "refused": the OS
             * errno does, and it is what a person debugging a dead service looks for. */
            snprintf(r->why, sizeof r->why, "%s: %s%s%s%s%s%s", url, curl_easy_strerror(res),
                     x->errbuf[0] ? " (" : "", x->errbuf, x->errbuf[0] ? ")" : "", oe ? ": " : "",
                     oe ? strerror((int)oe) : "");
        }
    } else if (status == 200) {
        if (accept_response(R, x, r) == 0) {
            url_ok(sh, x->url);
            r->state = REQ_DONE;
            free(r->body);
            r->body = NULL;
            R->ndone++;
            count(&sh->st.responses_ok, 1);
            count(&sh->st.tiles, r->n);
            return 0;
        }
        const char *e = hc_last_error();
        if (strncmp(e, DOMAIN ": ", sizeof DOMAIN + 1) == 0)
            e += sizeof DOMAIN + 1; /* "client: URL: client: ..." reads badly */
        snprintf(r->why, sizeof r->why, "%s: %s", url, e);
    } else {
        char d[360];
        describe_status(x, status, d, sizeof d);
        if ((status == 413 || status == 422) && r->n > 1) {
            /* Too big for this service (body size, tiles or pixels per request): send the
             * two halves as requests of their own. A single tile that is still too big
             * fails below with the service's reason. */
            struct req *b = &R->reqs[R->nreq++];
            size_t half = r->n / 2;
            memset(b, 0, sizeof *b);
            b->first = r->first + half;
            b->n = r->n - half;
            b->last_url = -1;
            r->n = half;
            free(r->body);
            r->body = NULL;
            r->attempts = r->failed = 0;
            r->last_url = -1;
            r->state = REQ_WAIT;
            r->due = now;
            url_ok(sh, x->url);
            count(&sh->st.splits, 1);
            return 0;
        }
        if (status != 429 && status < 500) {
            /* The service judged the request itself: another URL would say the same. */
            return hc_error(status_errno(status), DOMAIN, "%s: %s", url, d);
        }
        snprintf(r->why, sizeof r->why, "%s: %s", url, d);
        overload = status == 429;
        if (status == 429 || status == 503) {
            /* Without Retry-After, a 429 still means "not now": give it a second. */
            uint64_t ra = x->retry_after_s >= 0 ? (uint64_t)x->retry_after_s : overload ? 1 : 0;
            busy_ms = ra * 1000u;
            if (busy_ms > BACKOFF_MAX_MS)
                busy_ms = BACKOFF_MAX_MS;
        }
    }

    /* A failed attempt: avoid that URL for a while and retry, elsewhere when possible. */
    count(&sh->st.failures, 1);
    url_failed(sh, x->url, now, busy_ms);
    uint64_t wait = 0;
    if (!url_other_up(sh, x->url, now)) {
        int shift = r->attempts - 1 < 10 ? r->attempts - 1 : 10;
        wait = (uint64_t)BACKOFF_FIRST_MS << shift;
        if (wait < busy_ms)
            wait = busy_ms;
        if (wait > BACKOFF_MAX_MS)
            wait = BACKOFF_MAX_MS;
    }
    size_t last = r->first + r->n - 1;
    if (!overload && ++r->failed > sh->retries)
        return hc_error(-EIO, DOMAIN, "tiles %u..%u failed after %d attempt%s; last: %s",
                        R->tiles[r->first].index, R->tiles[last].index, r->attempts,
                        r->attempts == 1 ? "" : "s", r->why);
    /* An overloaded service is not a broken one: 429s do not use up retries, but they may
     * not hold a request past timeout_ms either. */
    if (overload && now + wait - r->first_at > (uint64_t)sh->timeout_ms)
        return hc_error(-EIO, DOMAIN,
                        "tiles %u..%u: services still overloaded after %llu ms "
                        "(%d attempts); last: %s",
                        R->tiles[r->first].index, R->tiles[last].index,
                        (unsigned long long)(now - r->first_at), r->attempts, r->why);
    r->state = REQ_WAIT;
    r->due = now + wait;
    return 0;
}

/* The flags are plain ints by contract (core/pipeline.h's cancel is one too, and a signal
 * handler may set them); reading them atomically keeps the read a non-racy one. */
static int
flag_set(const volatile int *f)
{
    return f && __atomic_load_n(f, __ATOMIC_RELAXED) != 0;
}

static int
cancelled(const struct run *R)
{
    return flag_set(R->c->cancel) || flag_set(R->sh->cancel);
}

/* Keeps the first fatal error of a run, in the transfer thread (hc_last_error() there
 * holds the reason; the caller's thread raises it again). */
static void
run_fail(struct run *R, int rc)
{
    if (R->rc)
        return;
    const char *e = hc_last_error();
    if (strncmp(e, DOMAIN ": ", sizeof DOMAIN + 1) == 0)
        e += sizeof DOMAIN + 1;
    R->rc = rc;
    snprintf(R->msg, sizeof R->msg, "%s", e);
}

/* Starts what a run may start now: due retries first (they hold up the job's tail), then
 * new requests, within its `inflight` and the client's max_connections. Lowers *next_due
 * to when something now held back by time becomes due. */
static void
run_fill(struct run *R, uint64_t now, uint64_t *next_due)
{
    struct shared *sh = R->sh;
    for (int s = 0; s < sh->inflight && R->busy < sh->inflight && sh->active < sh->max_active;
         s++) {
        if (R->x[s].r)
            continue;
        struct req *pick = NULL;
        for (size_t i = 0; i < R->cursor && !pick; i++)
            if (R->reqs[i].state == REQ_WAIT) { /* a retry, or the first half of a split */
                if (R->reqs[i].due <= now)
                    pick = &R->reqs[i];
                else if (R->reqs[i].due < *next_due)
                    *next_due = R->reqs[i].due;
            }
        if (!pick && R->cursor < R->nreq) {
            uint64_t free_at = url_free_at(sh, now);
            if (!free_at)
                pick = &R->reqs[R->cursor++];
            else if (free_at < *next_due)
                *next_due = free_at;
        }
        if (!pick)
            return;
        int rc = start(R, &R->x[s], pick, now);
        if (rc) {
            run_fail(R, rc);
            return;
        }
    }
}

/* Ends a run that is complete or failed: aborts what it still has in flight and wakes its
 * caller. After this the transfer thread forgets it. */
static void
run_retire(struct run *R)
{
    struct shared *sh = R->sh;
    for (int s = 0; s < sh->inflight; s++)
        if (R->x[s].r) {
            easy_put(sh, R->x[s].easy); /* aborts the transfer, closing its connection */
            R->x[s].easy = NULL;
            R->x[s].r = NULL;
            R->busy--;
        }
    pthread_mutex_lock(&sh->runs_lock);
    R->finished = 1;
    pthread_cond_broadcast(&sh->runs_cond);
    pthread_mutex_unlock(&sh->runs_lock);
}

static void *
transfer_main(void *arg)
{
    struct shared *sh = arg;
    struct run *runs = NULL; /* the runs this thread has taken in, in arrival order */

    for (;;) {
        pthread_mutex_lock(&sh->runs_lock);
        while (sh->incoming) { /* append, keeping arrival order (fairness) */
            struct run *R = sh->incoming, **tail = &runs;
            sh->incoming = R->next;
            R->next = NULL;
            while (*tail)
                tail = &(*tail)->next;
            *tail = R;
        }
        int stop = sh->stop;
        pthread_mutex_unlock(&sh->runs_lock);
        if (stop && !runs)
            break;

        uint64_t now = now_ms(), next_due = UINT64_MAX;
        for (struct run *R = runs; R; R = R->next) {
            if (!R->rc && cancelled(R)) {
                hc_error(-ECANCELED, DOMAIN, "cancelled");
                run_fail(R, -ECANCELED);
            }
            if (!R->rc)
                run_fill(R, now, &next_due);
        }

        int running = 0, finished = 0;
        CURLMcode mc = curl_multi_perform(sh->multi, &running);
        if (mc != CURLM_OK) {
            hc_error(-EIO, DOMAIN, "curl_multi_perform: %s", curl_multi_strerror(mc));
            for (struct run *R = runs; R; R = R->next)
                run_fail(R, -EIO);
        }
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(sh->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct xfer *x = NULL;
            CURLcode res = m->data.result;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            if (!x) /* cannot happen: every handle in the multi belongs to a slot */
                continue;
            struct run *R = x->R;
            int rc = finish(R, x, res);
            if (rc)
                run_fail(R, rc);
            finished = 1;
        }

        /* Retire runs that are over; the first run that got slots goes to the back, so
         * that under max_connections every job gets its turn. */
        for (struct run **pp = &runs; *pp;) {
            struct run *R = *pp;
            if (R->rc || R->ndone == R->nreq) {
                *pp = R->next;
                run_retire(R); /* R may be freed by its caller from here on */
                finished = 1;
            } else {
                pp = &R->next;
            }
        }
        if (runs && runs->next) {
            struct run *first = runs, **tail = &runs;
            runs = first->next;
            first->next = NULL;
            while (*tail)
                tail = &(*tail)->next;
            *tail = first;
        }
        if (finished)
            continue; /* slots may have freed: fill them before sleeping */

        /* Sleep until a socket needs us, a caller wakes us (new run, stop), a backoff ends,
         * or the next look at the cancel flags is due. */
        int wait = POLL_SLICE_MS;
        if (next_due != UINT64_MAX) {
            uint64_t d = next_due > now ? next_due - now : 0;
            if (d < (uint64_t)wait)
                wait = (int)d;
        }
        curl_multi_poll(sh->multi, NULL, 0, wait, NULL);
    }
    return NULL;
}

static int
http_run(void *ctx, const struct hc_job_geom *g, struct hc_tile *tiles, size_t n)
{
    struct run *R = NULL;
    int rc = 0;

    if (!ctx || !g || (n && !tiles))
        return hc_error(-EINVAL, DOMAIN, "run: missing client, geometry or tiles");
    struct hc_client *c = ctx;
    struct shared *sh = c->sh;
    if (g->channels < 1 || g->channels > HC_MAX_CHANNELS || (g->depth != 8 && g->depth != 16) ||
        g->scale < 1 || g->scale > HC_MAX_SCALE || g->src_w < 1 || g->src_h < 1)
        return hc_error(-EINVAL, DOMAIN,
                        "run: bad job geometry (%dx%d, %d channels, %d bit, scale %d)", g->src_w,
                        g->src_h, g->channels, g->depth, g->scale);
    if (n == 0)
        return 0;
    if (flag_set(c->cancel) || flag_set(sh->cancel))
        return hc_error(-ECANCELED, DOMAIN, "cancelled");

    size_t per = (size_t)sh->per_request;
    R = calloc(1, sizeof *R);
    if (!R)
        return hc_error(-ENOMEM, DOMAIN, "out of memory");
    R->c = c;
    R->sh = sh;
    R->g = g;
    R->tiles = tiles;
    R->nreq = (n + per - 1) / per;
    R->reqs = calloc(n, sizeof *R->reqs); /* splits can make one request per tile */
    R->x = calloc((size_t)sh->inflight, sizeof *R->x);
    if (!R->reqs || !R->x) {
        rc = hc_error(-ENOMEM, DOMAIN, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < R->nreq; i++) {
        R->reqs[i].first = i * per;
        R->reqs[i].n = n - i * per < per ? n - i * per : per;
        R->reqs[i].last_url = -1;
    }
    for (int i = 0; i < sh->inflight; i++)
        R->x[i].R = R;

    pthread_mutex_lock(&sh->runs_lock);
    if (!sh->thread_started) {
        /* The thread blocks every signal, so that a program's SIGINT/SIGTERM land in its own
         * threads (hcfs's FUSE loop, hc's main thread), where it expects them. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int e = pthread_create(&sh->thread, NULL, transfer_main, sh);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e) {
            pthread_mutex_unlock(&sh->runs_lock);
            rc = hc_error(-e, DOMAIN, "cannot start the transfer thread: %s", strerror(e));
            goto out;
        }
        sh->thread_started = 1;
    }
    R->next = sh->incoming;
    sh->incoming = R;
    pthread_mutex_unlock(&sh->runs_lock);
    curl_multi_wakeup(sh->multi);

    /* The transfer thread bounds everything (timeouts, retries, cancel flags every
     * POLL_SLICE_MS), so this wait ends. */
    pthread_mutex_lock(&sh->runs_lock);
    while (!R->finished)
        pthread_cond_wait(&sh->runs_cond, &sh->runs_lock);
    pthread_mutex_unlock(&sh->runs_lock);
    if (R->rc)
        rc = hc_error(R->rc, DOMAIN, "%s", R->msg);
out:
    if (R) {
        if (R->x)
            for (int s = 0; s < sh->inflight; s++)
                free(R->x[s].buf);
        if (R->reqs)
            for (size_t i = 0; i < R->nreq; i++)
                free(R->reqs[i].body);
        free(R->reqs);
        free(R->x);
        free(R);
    }
    return rc;
}

const struct hc_tile_backend hc_backend_http = {
    .name = "http",
    .run = http_run,
};
