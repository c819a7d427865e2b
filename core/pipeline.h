/* pipeline.h: one upscaling job, file to file, with bounded memory.
 *
 *   reader (rows) -> source band -> padded tiles (tiler) -> backend -> stitch (row bands)
 *   -> writer (rows) -> temp file -> fsync -> rename
 *
 * The source image is never held whole: the job keeps the source rows the current band of
 * output tiles needs (plus the halo) and one band of output rows. Tiles go to a backend in
 * batches of one tile row; a backend may finish them in any order.
 */
#ifndef HC_PIPELINE_H
#define HC_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What every tile of one job shares. */
struct hc_job_geom {
    int src_w, src_h; /* global source image size */
    int scale;        /* 1..HC_MAX_SCALE */
    int channels;     /* 1..4 */
    int depth;        /* 8 or 16 */
    enum hc_filter filter;
};

struct hc_tile {
    uint32_t index;        /* row-major number in the job's tile grid */
    struct hc_rect out;    /* output rectangle, global output coordinates */
    struct hc_rect src;    /* padded source rectangle (hc_tile_src_rect), global source */
    const uint8_t *src_px; /* src.w x src.h pixels, packed rows */
    uint8_t *out_px;       /* out.w x out.h pixels, packed rows: the backend fills them */
};

/* Something that upscales tiles: in-process (hc_backend_local), over HTTP (fs/, cli/). */
struct hc_tile_backend {
    const char *name;
    /* Fills out_px of tiles[0..n). May work on them concurrently and finish them in any
     * order; returns when all are done: 0, or -errno with hc_last_error() set (then the job
     * fails). Called from the job's thread. */
    int (*run)(void *ctx, const struct hc_job_geom *g, struct hc_tile *tiles, size_t n);
};

/* core/bicubic on this machine's threads; ctx is ignored (pass NULL). */
extern const struct hc_tile_backend hc_backend_local;

typedef void (*hc_progress_fn)(void *ctx, uint64_t done, uint64_t total);

struct hc_upscale_opts {
    int scale; /* 1..HC_MAX_SCALE */
    int tile;  /* output tile edge; 0: untiled bands (in-process), 256 with a backend */
    enum hc_filter filter;
    struct hc_writer_opts writer; /* writer.format 0: from the output name, else the input's */
    struct hc_limits limits;
    int nthreads;            /* for in-process work; 0 = all CPUs */
    hc_progress_fn progress; /* optional; called from the job's thread */
    void *progress_ctx;
    const volatile int *cancel; /* optional: the job stops with -ECANCELED once *cancel != 0 */
};

/* Defaults: scale 2, tile 0, bicubic, format from the name, quality 95, default limits. */
void hc_upscale_opts_default(struct hc_upscale_opts *o);

/* Upscales file in into file out. be NULL means the in-process path (untiled bands when
 * o->tile == 0). On failure nothing is left at out. Returns 0, or -EINVAL (bad input),
 * -EFBIG (over limits), -ECANCELED, -EIO/-errno (backend or file errors); the reason is in
 * hc_last_error(). Thread safety: reentrant; each call is one job. */
int hc_upscale_file(const char *in, const char *out, const struct hc_upscale_opts *o,
                    const struct hc_tile_backend *be, void *be_ctx);

#ifdef __cplusplus
}
#endif
#endif
