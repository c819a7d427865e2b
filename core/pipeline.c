/* pipeline.c: one upscaling job, file to file, in bounded memory.
 *
 * The job's thread decodes rows into a source window (the rows the current band needs, halo
 * included), upscales one band of output rows (untiled: straight from the window; tiled: cut
 * into padded tiles for a backend, stitched back), and hands finished bands to a writer
 * thread, so decoding + upscaling of band k+1 overlaps the encoding of band k. Encoding is the
 * largest single cost of a JPEG/PNG job; overlapping it is what makes the in-process path
 * faster than decoding, resizing and encoding one after another.
 */
#include "pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bicubic.h"
#include "cpu.h"
#include "error.h"
#include "stitch.h"
#include "tile.h"
#include "window.h"

#define UNTILED_BAND_ROWS 64 /* output rows per band without tiles: ~1.5 MB at 7680 RGB */
#define DEFAULT_REMOTE_TILE 256
#define QUEUE_SLOTS 3

void
hc_upscale_opts_default(struct hc_upscale_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->scale = 2;
    o->tile = 0;
    o->filter = HC_FILTER_BICUBIC;
    o->writer.format = HC_FORMAT_UNKNOWN;
    o->writer.quality = 95;
    o->writer.png_level = -1;
    hc_limits_default(&o->limits);
}

/* ---- writer thread: a queue of band buffers -------------------------------------------- */

struct wqueue {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct hc_writer *w;
    size_t stride;
    int slot_rows;
    uint8_t *buf[QUEUE_SLOTS];
    int rows[QUEUE_SLOTS];
    int head, count; /* filled slots: head .. head + count - 1 (mod QUEUE_SLOTS) */
    int closing;
    int err;
    char errmsg[512];
};

static void *
wqueue_main(void *arg)
{
    struct wqueue *q = arg;

    pthread_mutex_lock(&q->mu);
    for (;;) {
        int slot, res;

        while (q->count == 0 && !q->closing)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->count == 0)
            break;
        slot = q->head;
        pthread_mutex_unlock(&q->mu);
        res = q->err ? 0 : hc_writer_write_rows(q->w, q->buf[slot], q->stride, q->rows[slot]);
        pthread_mutex_lock(&q->mu);
        if (res && !q->err) {
            q->err = res;
            snprintf(q->errmsg, sizeof(q->errmsg), "%s", hc_last_error());
        }
        q->head = (q->head + 1) % QUEUE_SLOTS;
        q->count--;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static int
wqueue_start(struct wqueue *q, struct hc_writer *w, size_t stride, int slot_rows)
{
    memset(q, 0, sizeof(*q));
    q->w = w;
    q->stride = stride;
    q->slot_rows = slot_rows;
    for (int i = 0; i < QUEUE_SLOTS; i++) {
        q->buf[i] = malloc(stride * (size_t)slot_rows);
        if (!q->buf[i]) {
            for (int j = 0; j < i; j++)
                free(q->buf[j]);
            return hc_error(-ENOMEM, "pipeline", "out of memory for output bands");
        }
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    if (pthread_create(&q->thread, NULL, wqueue_main, q)) {
        for (int i = 0; i < QUEUE_SLOTS; i++)
            free(q->buf[i]);
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->cv);
        return hc_error(-EAGAIN, "pipeline", "cannot start the writer thread");
    }
    return 0;
}

/* The slot the producer fills next; waits while every slot is queued. Returns NULL when the
 * writer has failed (the error is re-raised by wqueue_stop). */
static uint8_t *
wqueue_acquire(struct wqueue *q)
{
    uint8_t *b = NULL;

    pthread_mutex_lock(&q->mu);
    while (q->count == QUEUE_SLOTS && !q->err)
        pthread_cond_wait(&q->cv, &q->mu);
    if (!q->err)
        b = q->buf[(q->head + q->count) % QUEUE_SLOTS];
    pthread_mutex_unlock(&q->mu);
    return b;
}

static void
wqueue_push(struct wqueue *q, int rows)
{
    pthread_mutex_lock(&q->mu);
    q->rows[(q->head + q->count) % QUEUE_SLOTS] = rows;
    q->count++;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* Sink for the stitcher: copies finished rows into queue slots. */
static int
wqueue_sink(void *ctx, const uint8_t *rows, size_t stride, int nrows)
{
    struct wqueue *q = ctx;

    while (nrows > 0) {
        int n = nrows < q->slot_rows ? nrows : q->slot_rows;
        uint8_t *b = wqueue_acquire(q);

        if (!b)
            return -EIO;
        for (int y = 0; y < n; y++)
            memcpy(b + (size_t)y * q->stride, rows + (size_t)y * stride, q->stride);
        wqueue_push(q, n);
        rows += (size_t)n * stride;
        nrows -= n;
    }
    return 0;
}

/* Drains the queue, joins the thread, frees the slots. Returns the writer's first error (its
 * message restored into this thread's hc_last_error()). */
static int
wqueue_stop(struct wqueue *q)
{
    int err;

    pthread_mutex_lock(&q->mu);
    q->closing = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    for (int i = 0; i < QUEUE_SLOTS; i++)
        free(q->buf[i]);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    err = q->err;
    if (err)
        hc_error(err, "pipeline", "writing failed: %s", q->errmsg);
    return err;
}

/* ---- in-process backend ---------------------------------------------------------------- */

struct local_work {
    const struct hc_job_geom *g;
    struct hc_tile *tiles;
    size_t n;
    atomic_size_t next;
    atomic_int err;
    char errmsg[256];
    pthread_mutex_t mu;
};

static void *
local_worker(void *arg)
{
    struct local_work *lw = arg;
    size_t bpp = hc_pixel_bytes(lw->g->channels, lw->g->depth);

    for (;;) {
        size_t i = atomic_fetch_add(&lw->next, 1);
        struct hc_tile *t;
        struct hc_view src, dst;
        int res;

        if (i >= lw->n || atomic_load(&lw->err))
            break;
        t = &lw->tiles[i];
        src = (struct hc_view){(uint8_t *)t->src_px,
                               (size_t)t->src.w * bpp,
                               t->src.x,
                               t->src.y,
                               t->src.w,
                               t->src.h,
                               lw->g->channels,
                               lw->g->depth};
        dst = (struct hc_view){t->out_px, (size_t)t->out.w * bpp, t->out.x,    t->out.y, t->out.w,
                               t->out.h,  lw->g->channels,        lw->g->depth};
        res = hc_bicubic_resize(&src, lw->g->src_w, lw->g->src_h, lw->g->scale, &dst, 1);
        if (res) {
            pthread_mutex_lock(&lw->mu);
            if (!atomic_load(&lw->err)) {
                snprintf(lw->errmsg, sizeof(lw->errmsg), "%s", hc_last_error());
                atomic_store(&lw->err, res);
            }
            pthread_mutex_unlock(&lw->mu);
        }
    }
    return NULL;
}

/* Runs tiles[0..n) on nthreads threads (0: one per CPU), the caller's included. */
static int
local_run_n(int nthreads, const struct hc_job_geom *g, struct hc_tile *tiles, size_t n)
{
    struct local_work lw = {.g = g, .tiles = tiles, .n = n};
    pthread_t th[64];
    int nth = nthreads > 0 ? nthreads : hc_cpu_count(), started = 0;

    if (g->filter != HC_FILTER_BICUBIC)
        return hc_error(-ENOTSUP, "local", "filter %d is not built in", (int)g->filter);
    if (nth > 64)
        nth = 64;
    if ((size_t)nth > n)
        nth = (int)n;
    atomic_init(&lw.next, 0);
    atomic_init(&lw.err, 0);
    pthread_mutex_init(&lw.mu, NULL);
    for (int i = 1; i < nth; i++) {
        if (pthread_create(&th[started], NULL, local_worker, &lw))
            break;
        started++;
    }
    local_worker(&lw);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&lw.mu);
    if (atomic_load(&lw.err))
        return hc_error(atomic_load(&lw.err), "local", "%s", lw.errmsg);
    return 0;
}

static int
local_run(void *ctx, const struct hc_job_geom *g, struct hc_tile *tiles, size_t n)
{
    (void)ctx;
    return local_run_n(0, g, tiles, n);
}

const struct hc_tile_backend hc_backend_local = {"local", local_run};

/* What hc_upscale_file uses without a backend: the local one bounded by the job's nthreads
 * (ctx points at it), so --threads / hcfs's per-job threads hold for tiled jobs too. */
static int
local_run_opts(void *ctx, const struct hc_job_geom *g, struct hc_tile *tiles, size_t n)
{
    return local_run_n(*(const int *)ctx, g, tiles, n);
}

static const struct hc_tile_backend local_bounded = {"local", local_run_opts};

/* ---- the job ----------------------------------------------------------------------------- */

static int
cancelled(const struct hc_upscale_opts *o)
{
    return o->cancel && *o->cancel;
}

static int
run_untiled(struct hc_reader *r, struct hc_window *win, struct wqueue *q,
            const struct hc_job_geom *g, int dst_w, int dst_h, int band_h,
            const struct hc_upscale_opts *o)
{
    for (int y = 0; y < dst_h; y += band_h) {
        int bh = band_h < dst_h - y ? band_h : dst_h - y;
        struct hc_rect out = {0, y, dst_w, bh}, need;
        struct hc_view src, dst;
        uint8_t *b;
        int res;

        if (cancelled(o))
            return hc_error(-ECANCELED, "pipeline", "cancelled");
        hc_tile_src_rect(g->src_w, g->src_h, g->scale, &out, &need);
        res = hc_window_need(win, r, need.y, need.y + need.h - 1);
        if (res)
            return res;
        b = wqueue_acquire(q);
        if (!b)
            return -EIO;
        hc_window_view(win, &src);
        dst = (struct hc_view){b, q->stride, 0, y, dst_w, bh, g->channels, g->depth};
        res = hc_bicubic_resize(&src, g->src_w, g->src_h, g->scale, &dst, o->nthreads);
        if (res)
            return res;
        wqueue_push(q, bh);
        if (o->progress)
            o->progress(o->progress_ctx, (uint64_t)(y + bh), (uint64_t)dst_h);
    }
    return 0;
}

static int
run_tiled(struct hc_reader *r, struct hc_window *win, struct wqueue *q, const struct hc_job_geom *g,
          int dst_w, int dst_h, int tile, const struct hc_tile_backend *be, void *be_ctx,
          const struct hc_upscale_opts *o)
{
    size_t bpp = hc_pixel_bytes(g->channels, g->depth);
    int ncol = (dst_w + tile - 1) / tile;
    int nrow = (dst_h + tile - 1) / tile;
    /* A tile never exceeds the image: --tile 65536 on a small image must not reserve
     * 65536^2 pixels per slot. */
    int tw = tile < dst_w ? tile : dst_w, th = tile < dst_h ? tile : dst_h;
    /* A tile's padded source spans at most (edge - 1)/scale + 5 source pixels per axis (the
     * taps i-1..i+2 of its first and last output pixel), and never more than the image. */
    int sw = tw / g->scale + 6 < g->src_w ? tw / g->scale + 6 : g->src_w;
    int sh = th / g->scale + 6 < g->src_h ? th / g->scale + 6 : g->src_h;
    size_t src_cap = (size_t)sw * (size_t)sh * bpp, out_cap = (size_t)tw * (size_t)th * bpp;
    struct hc_tile *tiles = NULL;
    uint8_t *src_slab = NULL, *out_slab = NULL;
    struct hc_stitch *st = NULL;
    int res;

    tiles = calloc((size_t)ncol, sizeof(*tiles));
    src_slab = malloc(src_cap * (size_t)ncol);
    out_slab = malloc(out_cap * (size_t)ncol);
    if (!tiles || !src_slab || !out_slab) {
        res = hc_error(-ENOMEM, "pipeline", "out of memory for %d tiles of %d px", ncol, tile);
        goto out;
    }
    res = hc_stitch_open(dst_w, dst_h, tile, g->channels, g->depth, wqueue_sink, q, &st);
    if (res)
        goto out;

    for (int ty = 0; ty < nrow; ty++) {
        int y = ty * tile, bh = tile < dst_h - y ? tile : dst_h - y;
        struct hc_rect band = {0, y, dst_w, bh}, need;
        struct hc_view src;

        if (cancelled(o)) {
            res = hc_error(-ECANCELED, "pipeline", "cancelled");
            goto out;
        }
        hc_tile_src_rect(g->src_w, g->src_h, g->scale, &band, &need);
        res = hc_window_need(win, r, need.y, need.y + need.h - 1);
        if (res)
            goto out;
        hc_window_view(win, &src);
        for (int tx = 0; tx < ncol; tx++) {
            struct hc_tile *t = &tiles[tx];
            int x = tx * tile;

            t->index = (uint32_t)ty * (uint32_t)ncol + (uint32_t)tx;
            t->out = (struct hc_rect){x, y, tile < dst_w - x ? tile : dst_w - x, bh};
            hc_tile_src_rect(g->src_w, g->src_h, g->scale, &t->out, &t->src);
            if ((size_t)t->src.w * (size_t)t->src.h * bpp > src_cap) { /* the bound above */
                res = hc_error(-EINVAL, "pipeline", "tile %u needs a %dx%d source, over %dx%d",
                               t->index, t->src.w, t->src.h, sw, sh);
                goto out;
            }
            hc_tile_extract(&src, &t->src, src_slab + src_cap * (size_t)tx, (size_t)t->src.w * bpp);
            t->src_px = src_slab + src_cap * (size_t)tx;
            t->out_px = out_slab + out_cap * (size_t)tx;
        }
        res = be->run(be_ctx, g, tiles, (size_t)ncol);
        if (res)
            goto out;
        for (int tx = 0; tx < ncol; tx++) {
            res =
                hc_stitch_put(st, &tiles[tx].out, tiles[tx].out_px, (size_t)tiles[tx].out.w * bpp);
            if (res)
                goto out;
        }
        if (o->progress)
            o->progress(o->progress_ctx, (uint64_t)(y + bh), (uint64_t)dst_h);
    }
    res = hc_stitch_finish(st);
out:
    hc_stitch_free(st);
    free(tiles);
    free(src_slab);
    free(out_slab);
    return res;
}

int
hc_upscale_file(const char *in, const char *out, const struct hc_upscale_opts *o,
                const struct hc_tile_backend *be, void *be_ctx)
{
    struct hc_reader *r = NULL;
    struct hc_writer *w = NULL;
    struct hc_writer_opts wo;
    struct hc_image_info oinfo;
    const struct hc_image_info *info;
    struct hc_job_geom g;
    struct hc_window win = {0};
    struct wqueue q;
    int q_started = 0, tile, band_h, res;
    int64_t dst_w, dst_h;

    if (o->scale < 1 || o->scale > HC_MAX_SCALE)
        return hc_error(-ERANGE, "upscale", "scale %d is out of range 1..%d", o->scale,
                        HC_MAX_SCALE);
    if (o->filter != HC_FILTER_BICUBIC)
        return hc_error(-ENOTSUP, "upscale", "unknown filter %d", (int)o->filter);
    if (o->tile < 0)
        return hc_error(-EINVAL, "upscale", "tile size %d is negative", o->tile);

    res = hc_reader_open(in, &o->limits, &r);
    if (res)
        goto out;
    info = hc_reader_info(r);
    dst_w = (int64_t)info->width * o->scale;
    dst_h = (int64_t)info->height * o->scale;
    if (dst_w > 1000000 || dst_h > 1000000) {
        res = hc_error(-EFBIG, "upscale", "output of %lldx%lld is too large", (long long)dst_w,
                       (long long)dst_h);
        goto out;
    }
    g = (struct hc_job_geom){info->width,    info->height, o->scale,
                             info->channels, info->depth,  o->filter};

    wo = o->writer;
    if (wo.format == HC_FORMAT_UNKNOWN)
        wo.format = hc_format_from_path(out);
    if (wo.format == HC_FORMAT_UNKNOWN)
        wo.format = hc_format_writable(info->format);
    oinfo = (struct hc_image_info){wo.format, (int)dst_w, (int)dst_h, info->channels, info->depth};
    res = hc_writer_open(out, &oinfo, &wo, hc_reader_meta(r), &w);
    if (res)
        goto out;

    tile = o->tile;
    if (tile == 0 && be)
        tile = DEFAULT_REMOTE_TILE;
    if (tile && ((dst_w + tile - 1) / tile) * ((dst_h + tile - 1) / tile) > UINT32_MAX) {
        /* tile numbers are uint32 (the wire, the cache): more would repeat numbers */
        res =
            hc_error(-EINVAL, "upscale", "%lld tiles of %d px are too many; use a larger tile",
                     (long long)(((dst_w + tile - 1) / tile) * ((dst_h + tile - 1) / tile)), tile);
        goto out;
    }
    band_h = tile ? tile : UNTILED_BAND_ROWS;
    if (band_h > dst_h)
        band_h = (int)dst_h;

    res = hc_window_init(
        &win, info->width, info->channels, info->depth,
        hc_window_rows_for_bands(info->width, info->height, o->scale, (int)dst_h, band_h));
    if (res)
        goto out;

    res = wqueue_start(&q, w, (size_t)dst_w * hc_pixel_bytes(info->channels, info->depth), band_h);
    if (res)
        goto out;
    q_started = 1;

    if (tile)
        res = run_tiled(r, &win, &q, &g, (int)dst_w, (int)dst_h, tile, be ? be : &local_bounded,
                        be ? be_ctx : (void *)&o->nthreads, o);
    else
        res = run_untiled(r, &win, &q, &g, (int)dst_w, (int)dst_h, band_h, o);
    {
        /* Stopping the queue reports the writer's own reason; the job's first error wins
         * unless it was only the echo of a writer failure (-EIO from a refused slot). */
        char msg[512];
        int qres;

        snprintf(msg, sizeof(msg), "%s", hc_last_error());
        qres = wqueue_stop(&q);
        q_started = 0;
        if (res && !(res == -EIO && qres))
            hc_error_restore(res, msg);
        else if (qres)
            res = qres;
    }
    if (res)
        goto out;
    res = hc_writer_finish(w);
    w = NULL;
out:
    if (q_started)
        wqueue_stop(&q);
    hc_writer_abort(w);
    hc_reader_close(r);
    hc_window_free(&win);
    return res;
}
