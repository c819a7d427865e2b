/* bicubic.c: hc_bicubic_resize: validation, the plan (tap offsets and weights of every
 * output column, cached across calls with the same columns, and of every output row),
 * threads over output rows, and the kernels of the SIMD level chosen at start-up.
 *
 * Order of work, as OpenCV does it (the float rounding of the vertical pass depends on it):
 * each needed source row is filtered horizontally once per thread into a row of h values,
 * kept in a ring of 4 rows; each output row is then one vertical pass over 4 such rows.
 * Rows of h are float (exact integers for 8 bit), so the vertical kernels vectorise without
 * integer multiplies that SSE2 lacks.
 */
#include "bicubic.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bicubic_simd.h"
#include "error.h"
#include "tile.h"

/* Below this many output samples a call runs on the calling thread. Measured on the 2-core
 * dev machine: pthread_create + join costs 25 us at best and 80-150 us when the cores are
 * busy, while the AVX2 path makes about 2.7 G samples/s per core, so 1 M samples (~0.4 ms)
 * is where a second thread starts to pay. Threads are spawned per call rather than pooled:
 * waking a parked pool worker on a busy machine costs about as much as starting one. */
#define BC_INLINE_SAMPLES (1024 * 1024)

int
hc_bicubic_check(const struct hc_view *src, int src_w, int src_h, int scale,
                 const struct hc_view *dst)
{
    if (!src || !dst || !src->data || !dst->data)
        return hc_error(-EINVAL, "bicubic", "missing source or destination");
    if (scale < 1 || scale > HC_MAX_SCALE)
        return hc_error(-EINVAL, "bicubic", "scale %d outside 1..%d", scale, HC_MAX_SCALE);
    if (src->channels < 1 || src->channels > HC_MAX_CHANNELS || src->channels != dst->channels)
        return hc_error(-EINVAL, "bicubic", "channels %d -> %d (need equal, 1..4)", src->channels,
                        dst->channels);
    if ((src->depth != 8 && src->depth != 16) || src->depth != dst->depth)
        return hc_error(-EINVAL, "bicubic", "depth %d -> %d (need equal, 8 or 16)", src->depth,
                        dst->depth);
    if (src_w < 1 || src_h < 1 || (long)src_w * scale > INT_MAX / HC_MAX_CHANNELS ||
        (long)src_h * scale > INT_MAX)
        return hc_error(-EINVAL, "bicubic", "bad image size %dx%d at x%d", src_w, src_h, scale);
    long dw = (long)src_w * scale, dh = (long)src_h * scale;
    if (dst->w < 0 || dst->h < 0 || dst->x < 0 || dst->y < 0 || dst->x + (long)dst->w > dw ||
        dst->y + (long)dst->h > dh)
        return hc_error(-EINVAL, "bicubic", "output rect %d,%d %dx%d outside %ldx%ld", dst->x,
                        dst->y, dst->w, dst->h, dw, dh);
    size_t bpp = hc_pixel_bytes(dst->channels, dst->depth);
    if (dst->h > 1 && dst->stride < (size_t)dst->w * bpp)
        return hc_error(-EINVAL, "bicubic", "output stride %zu < row of %zu bytes", dst->stride,
                        (size_t)dst->w * bpp);
    if (dst->w == 0 || dst->h == 0)
        return 0;
    if (src->w < 0 || src->h < 0 || src->x < 0 || src->y < 0 || src->x + (long)src->w > src_w ||
        src->y + (long)src->h > src_h)
        return hc_error(-EINVAL, "bicubic", "source window %d,%d %dx%d outside %dx%d", src->x,
                        src->y, src->w, src->h, src_w, src_h);
    if (src->h > 1 && src->stride < (size_t)src->w * bpp)
        return hc_error(-EINVAL, "bicubic", "source stride %zu < row of %zu bytes", src->stride,
                        (size_t)src->w * bpp);
    struct hc_rect need, out = {dst->x, dst->y, dst->w, dst->h};
    hc_tile_src_rect(src_w, src_h, scale, &out, &need);
    if (need.x < src->x || need.y < src->y || need.x + need.w > src->x + src->w ||
        need.y + need.h > src->y + src->h)
        return hc_error(-EINVAL, "bicubic",
                        "source window %d,%d %dx%d lacks padded rect %d,%d %dx%d", src->x, src->y,
                        src->w, src->h, need.x, need.y, need.w, need.h);
    return 0;
}

const struct hc_bc_kernels *
hc_bc_kernels_for(enum hc_simd level)
{
    if (!hc_cpu_supports(level))
        return NULL;
    switch (level) {
    case HC_SIMD_SCALAR:
        return &hc_bc_kernels_scalar;
#if defined(HC_HAVE_SSE2)
    case HC_SIMD_SSE2:
        return &hc_bc_kernels_sse2;
#endif
#if defined(HC_HAVE_AVX2)
    case HC_SIMD_AVX2:
        return &hc_bc_kernels_avx2;
#endif
#if defined(HC_HAVE_NEON)
    case HC_SIMD_NEON:
        return &hc_bc_kernels_neon;
#endif
    default:
        return NULL;
    }
}

struct bc_job {
    const struct hc_bc_kernels *k;
    const struct hc_view *src;
    struct hc_view *dst;
    struct hc_bc_hplan plan;
    const int32_t *yrow; /* per output row: 4 global source rows */
    const int16_t *yib;  /* per output row: 4 Q11 weights */
    const float *yb;     /* per output row: 4 float weights (8 bit: Q11 * 2^-22) */
    int nfloat;          /* elements of a rect row in OpenCV's SIMD region */
};

struct bc_part {
    struct bc_job *job;
    int y0, y1; /* rows of the output rect (0-based) */
    int rc;
};

static float *scratch_get(size_t bytes);
static void scratch_put(float *buf, size_t bytes);

static void *
bc_run(void *arg)
{
    struct bc_part *part = arg;
    struct bc_job *j = part->job;
    const struct hc_view *src = j->src;
    int n = j->plan.n;
    size_t hstride = ((size_t)n + 15) & ~(size_t)15;
    float *hbuf = NULL;
    int tags[4] = {INT_MIN, INT_MIN, INT_MIN, INT_MIN};

    part->rc = 0;
    hbuf = scratch_get(4 * hstride * sizeof(float));
    if (!hbuf) {
        part->rc = -ENOMEM;
        goto out;
    }
    for (int r = part->y0; r < part->y1; r++) {
        const float *h[4];
        for (int k = 0; k < 4; k++) {
            int row = j->yrow[4 * r + k];
            int slot = row & 3; /* the 4 rows of one output row are consecutive: distinct */
            float *hr = hbuf + (size_t)slot * hstride;
            if (tags[slot] != row) {
                const uint8_t *srow = src->data + (size_t)(row - src->y) * src->stride;
                if (src->depth == 8)
                    j->k->h8(srow, &j->plan, hr);
                else
                    j->k->h16(srow, &j->plan, hr);
                tags[slot] = row;
            }
            h[k] = hr;
        }
        uint8_t *drow = j->dst->data + (size_t)r * j->dst->stride;
        if (src->depth == 8)
            j->k->v8(h, j->yb + 4 * r, j->yib + 4 * r, drow, n, j->nfloat);
        else
            j->k->v16(h, j->yb + 4 * r, drow, n, j->nfloat);
    }
out:
    scratch_put(hbuf, 4 * hstride * sizeof(float));
    return NULL;
}

/* The 8-bit shuffle blocks (see struct hc_bc_hplan). Returns how many leading blocks are
 * usable: a block must be 4 whole elements, its taps within 16 bytes, and its 16-byte load
 * inside the window's row. */
static int
bc_blocks(struct hc_bc_hplan *p, int32_t *boff, uint8_t *bmask, int16_t *bw, int row_bytes)
{
    int cn = p->cn, nb = p->n / 4;
    for (int b = 0; b < nb; b++) {
        int lo = INT_MAX, hi = INT_MIN;
        for (int j = 0; j < 4; j++) {
            int e = 4 * b + j, x = e / cn, c = e - x * cn;
            for (int k = 0; k < 4; k++) {
                int s = p->xoff[4 * x + k] + c;
                lo = s < lo ? s : lo;
                hi = s > hi ? s : hi;
            }
        }
        if (hi - lo >= 16 || lo + 16 > row_bytes)
            return b;
        boff[b] = lo;
        for (int j = 0; j < 4; j++) {
            int e = 4 * b + j, x = e / cn, c = e - x * cn;
            uint8_t *m = bmask + 32 * b + 16 * (j / 2) + 8 * (j % 2);
            for (int k = 0; k < 4; k++) {
                m[2 * k] = (uint8_t)(p->xoff[4 * x + k] + c - lo);
                m[2 * k + 1] = 0x80; /* zero high byte: u8 -> u16 */
                bw[16 * b + 4 * j + k] = p->xa[4 * x + k];
            }
        }
    }
    return nb;
}

/* The column plan depends only on (depth, channels, scale, image width, window columns,
 * output columns). The pipeline calls once per band of rows with the same columns every
 * time, so a few plans are cached: building one for a 7680-wide output costs ~150 us, as
 * much as the filtering of a 16-row band. Plans are immutable and reference counted; an
 * evicted plan lives until its last user puts it. */
struct bc_xplan {
    int depth, cn, scale, src_w, win_x, win_w, dst_x, dst_w; /* key */
    int refs;                                                /* users, + 1 while cached */
    unsigned long used;                                      /* LRU clock */
    size_t bytes;
    struct hc_bc_hplan plan;
};

#define BC_CACHE_SLOTS 4
#define BC_CACHE_MAX_BYTES (32u << 20) /* bigger plans are not kept */
#define BC_SCRATCH_SLOTS 4
#define BC_SCRATCH_MAX_BYTES (4u << 20)

static pthread_mutex_t bc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bc_xplan *bc_cache[BC_CACHE_SLOTS];
static unsigned long bc_clock;
static void *bc_scratch[BC_SCRATCH_SLOTS];
static size_t bc_scratch_bytes[BC_SCRATCH_SLOTS];

static struct bc_xplan *
xplan_build(const struct hc_view *src, int src_w, int scale, const struct hc_view *dst)
{
    int cn = dst->channels, w = dst->w, n = w * cn, nb = dst->depth == 8 ? n / 4 : 0;
    int ng = dst->depth == 16 ? n / 8 : 0;
    size_t sz_goff = (size_t)ng * 32 * sizeof(int32_t), sz_gw = (size_t)ng * 32 * sizeof(float);
    size_t sz_xoff = (size_t)w * 4 * sizeof(int32_t), sz_xf = (size_t)w * 4 * sizeof(float);
    size_t sz_boff = (size_t)nb * sizeof(int32_t), sz_bw = (size_t)nb * 16 * sizeof(int16_t);
    size_t sz_bmask = (size_t)nb * 32, sz_xa = (size_t)w * 4 * sizeof(int16_t);
    size_t head = (sizeof(struct bc_xplan) + 63) & ~(size_t)63;
    size_t total = head + sz_xoff + sz_xf + sz_goff + sz_gw + sz_boff + sz_bw + sz_bmask + sz_xa;
    struct bc_xplan *xp = malloc(total);
    if (!xp)
        return NULL;
    memset(xp, 0, sizeof(*xp));
    xp->depth = dst->depth;
    xp->cn = cn;
    xp->scale = scale;
    xp->src_w = src_w;
    xp->win_x = src->x;
    xp->win_w = src->w;
    xp->dst_x = dst->x;
    xp->dst_w = w;
    xp->refs = 1;
    xp->bytes = total;

    /* Carve in order of alignment: 4-byte arrays first, then shorts and bytes. */
    uint8_t *m = (uint8_t *)xp + head;
    int32_t *xoff = (int32_t *)m;
    m += sz_xoff;
    float *xf = (float *)m;
    m += sz_xf;
    int32_t *goff = (int32_t *)m;
    m += sz_goff;
    float *gw = (float *)m;
    m += sz_gw;
    int32_t *boff = (int32_t *)m;
    m += sz_boff;
    int16_t *bw = (int16_t *)m;
    m += sz_bw;
    int16_t *xa = (int16_t *)m;
    m += sz_xa;
    uint8_t *bmask = m;

    for (int x = 0; x < w; x++) {
        int ix;
        float t, c[4];
        hc_bicubic_map(dst->x + x, scale, &ix, &t);
        hc_bicubic_coeffs(t, c);
        for (int q = 0; q < 4; q++) {
            int sx = ix - 1 + q;
            sx = sx < 0 ? 0 : sx > src_w - 1 ? src_w - 1 : sx;
            xoff[4 * x + q] = (sx - src->x) * cn;
            xf[4 * x + q] = c[q];
            xa[4 * x + q] = hc_bicubic_q11(c[q]);
        }
    }
    struct hc_bc_hplan *p = &xp->plan;
    p->cn = cn;
    p->w = w;
    p->n = n;
    p->xoff = xoff;
    p->xa = xa;
    p->xf = xf;
    p->boff = boff;
    p->bmask = bmask;
    p->bw = bw;
    p->nblk = nb ? bc_blocks(p, boff, bmask, bw, src->w * cn) : 0;
    p->goff = goff;
    p->gw = gw;
    p->ngrp16 = 0;
    for (int g = 0; g < ng; g++) {
        int fits = 1;
        for (int j = 0; j < 8; j++) {
            int e = 8 * g + j, x = e / cn, c = e - x * cn;
            for (int q = 0; q < 4; q++) {
                int off = 2 * (xoff[4 * x + q] + c);
                goff[32 * g + 8 * q + j] = off;
                gw[32 * g + 8 * q + j] = xf[4 * x + q];
                if (off + 4 > 2 * src->w * cn)
                    fits = 0;
            }
        }
        if (!fits)
            break;
        p->ngrp16 = g + 1;
    }
    return xp;
}

static void
xplan_put(struct bc_xplan *xp)
{
    pthread_mutex_lock(&bc_lock);
    int last = --xp->refs == 0;
    pthread_mutex_unlock(&bc_lock);
    if (last)
        free(xp);
}

static struct bc_xplan *
xplan_get(const struct hc_view *src, int src_w, int scale, const struct hc_view *dst)
{
    struct bc_xplan *xp = NULL, *old = NULL;
    pthread_mutex_lock(&bc_lock);
    for (int i = 0; i < BC_CACHE_SLOTS; i++) {
        struct bc_xplan *c = bc_cache[i];
        if (c && c->depth == dst->depth && c->cn == dst->channels && c->scale == scale &&
            c->src_w == src_w && c->win_x == src->x && c->win_w == src->w && c->dst_x == dst->x &&
            c->dst_w == dst->w) {
            c->refs++;
            c->used = ++bc_clock;
            xp = c;
            break;
        }
    }
    pthread_mutex_unlock(&bc_lock);
    if (xp)
        return xp;

    xp = xplan_build(src, src_w, scale, dst); /* outside the lock: other calls go on */
    if (!xp || xp->bytes > BC_CACHE_MAX_BYTES)
        return xp;
    pthread_mutex_lock(&bc_lock);
    int slot = 0;
    for (int i = 0; i < BC_CACHE_SLOTS; i++) {
        if (!bc_cache[i]) {
            slot = i;
            break;
        }
        if (bc_cache[i]->used < bc_cache[slot]->used)
            slot = i;
    }
    old = bc_cache[slot];
    if (old && --old->refs != 0)
        old = NULL; /* still in use: its last user frees it */
    xp->refs++;
    xp->used = ++bc_clock;
    bc_cache[slot] = xp;
    pthread_mutex_unlock(&bc_lock);
    free(old);
    return xp;
}

/* Row buffers (4 rows of h per thread) come from a small pool: a 7680x3 output needs
 * 368 KB per thread, which malloc would map and fault in afresh on every band. */
static float *
scratch_get(size_t bytes)
{
    void *p = NULL;
    pthread_mutex_lock(&bc_lock);
    for (int i = 0; i < BC_SCRATCH_SLOTS; i++) {
        if (bc_scratch[i] && bc_scratch_bytes[i] >= bytes) {
            p = bc_scratch[i];
            bc_scratch[i] = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&bc_lock);
    if (!p && posix_memalign(&p, 64, bytes) != 0)
        p = NULL;
    return p;
}

static void
scratch_put(float *buf, size_t bytes)
{
    void *drop = buf;
    if (!buf)
        return;
    if (bytes <= BC_SCRATCH_MAX_BYTES) {
        pthread_mutex_lock(&bc_lock);
        int slot = -1;
        for (int i = 0; i < BC_SCRATCH_SLOTS && slot < 0; i++)
            if (!bc_scratch[i])
                slot = i;
        for (int i = 0; i < BC_SCRATCH_SLOTS && slot < 0; i++)
            if (bc_scratch_bytes[i] < bytes)
                slot = i; /* keep the bigger buffer */
        if (slot >= 0) {
            drop = bc_scratch[slot];
            bc_scratch[slot] = buf;
            bc_scratch_bytes[slot] = bytes;
        }
        pthread_mutex_unlock(&bc_lock);
    }
    free(drop);
}

int
hc_bicubic_resize_with(const struct hc_bc_kernels *k, const struct hc_view *src, int src_w,
                       int src_h, int scale, struct hc_view *dst, int nthreads)
{
    int rc = hc_bicubic_check(src, src_w, src_h, scale, dst);
    if (rc || dst->w == 0 || dst->h == 0)
        return rc;

    int cn = dst->channels, w = dst->w, hgt = dst->h;
    int n = w * cn;
    struct bc_job job;
    struct bc_part *parts = NULL;
    pthread_t *tids = NULL;
    char *started = NULL;
    void *mem = NULL;
    struct bc_xplan *xp = NULL;
    memset(&job, 0, sizeof(job));

    xp = xplan_get(src, src_w, scale, dst);
    size_t sz_yrow = (size_t)hgt * 4 * sizeof(int32_t), sz_yib = (size_t)hgt * 4 * sizeof(int16_t);
    size_t sz_yb = (size_t)hgt * 4 * sizeof(float);
    mem = malloc(sz_yrow + sz_yb + sz_yib);
    if (!xp || !mem) {
        rc = hc_error(-ENOMEM, "bicubic", "out of memory for a %dx%d plan", w, hgt);
        goto out;
    }
    int32_t *yrow = mem;
    float *yb = (float *)((uint8_t *)mem + sz_yrow);
    int16_t *yib = (int16_t *)((uint8_t *)mem + sz_yrow + sz_yb);

    for (int y = 0; y < hgt; y++) {
        int iy;
        float t, c[4];
        hc_bicubic_map(dst->y + y, scale, &iy, &t);
        hc_bicubic_coeffs(t, c);
        for (int q = 0; q < 4; q++) {
            int sy = iy - 1 + q;
            yrow[4 * y + q] = sy < 0 ? 0 : sy > src_h - 1 ? src_h - 1 : sy;
            yib[4 * y + q] = hc_bicubic_q11(c[q]);
            yb[4 * y + q] =
                dst->depth == 8 ? (float)yib[4 * y + q] * (1.0f / (2048.0f * 2048.0f)) : c[q];
        }
    }

    job.k = k;
    job.src = src;
    job.dst = dst;
    job.plan = xp->plan;
    job.yrow = yrow;
    job.yib = yib;
    job.yb = yb;
    {
        long simd_end = hc_bicubic_simd_end((long)src_w * scale * cn);
        long nf = simd_end - (long)dst->x * cn;
        job.nfloat = nf < 0 ? 0 : nf > n ? n : (int)nf;
    }

    if (nthreads <= 0)
        nthreads = hc_cpu_count();
    if (nthreads > 256)
        nthreads = 256;
    if ((long)n * hgt < BC_INLINE_SAMPLES)
        nthreads = 1;
    if (nthreads > hgt)
        nthreads = hgt;
    parts = calloc((size_t)nthreads, sizeof(*parts));
    tids = calloc((size_t)nthreads, sizeof(*tids));
    started = calloc((size_t)nthreads, 1);
    if (!parts || !tids || !started) {
        rc = hc_error(-ENOMEM, "bicubic", "out of memory");
        goto out;
    }
    for (int i = 0; i < nthreads; i++) {
        parts[i].job = &job;
        parts[i].y0 = (int)((long)hgt * i / nthreads);
        parts[i].y1 = (int)((long)hgt * (i + 1) / nthreads);
    }
    /* Part 0 runs on the calling thread; a part whose thread cannot start runs here too. */
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&tids[i], NULL, bc_run, &parts[i]) != 0) {
            started[i] = 0;
            bc_run(&parts[i]);
        } else {
            started[i] = 1;
        }
    }
    bc_run(&parts[0]);
    for (int i = 1; i < nthreads; i++)
        if (started[i])
            pthread_join(tids[i], NULL);
    for (int i = 0; i < nthreads; i++)
        if (parts[i].rc && !rc)
            rc = parts[i].rc;
    if (rc)
        rc = hc_error(rc, "bicubic", "out of memory for row buffers");
out:
    if (xp)
        xplan_put(xp);
    free(parts);
    free(tids);
    free(started);
    free(mem);
    return rc;
}

static const struct hc_bc_kernels *bc_kernels;
static pthread_once_t bc_once = PTHREAD_ONCE_INIT;

static void
bc_pick(void)
{
    bc_kernels = hc_bc_kernels_for(hc_cpu_level());
    if (!bc_kernels)
        bc_kernels = &hc_bc_kernels_scalar;
}

int
hc_bicubic_resize(const struct hc_view *src, int src_w, int src_h, int scale, struct hc_view *dst,
                  int nthreads)
{
    pthread_once(&bc_once, bc_pick);
    return hc_bicubic_resize_with(bc_kernels, src, src_w, src_h, scale, dst, nthreads);
}
