/* tcbackend.c: tiles from the cache first, the rest from the inner backend (tcbackend.h). */
#include "tcbackend.h"

#include <errno.h>
#include <stdlib.h>

#include "error.h"

static size_t
tile_bytes(const struct hc_job_geom *g, const struct hc_tile *t)
{
    return (size_t)t->out.w * (size_t)t->out.h * hc_pixel_bytes(g->channels, g->depth);
}

static int
tcb_run(void *ctx, const struct hc_job_geom *g, struct hc_tile *tiles, size_t n)
{
    struct hc_tcbackend *b = ctx;
    struct hc_tile *missing = NULL;
    size_t nmiss = 0;
    int r = 0;

    if (n == 0)
        return 0;
    missing = malloc(n * sizeof(*missing));
    if (!missing) {
        r = hc_error(-ENOMEM, "hcfs", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (hc_tc_tile_get(b->tc, b->key, tiles[i].index, tiles[i].out_px,
                           tile_bytes(g, &tiles[i])) == 0)
            b->tiles_from_cache++;
        else
            missing[nmiss++] = tiles[i]; /* same out_px: the inner backend fills ours */
    }
    if (nmiss == 0)
        goto out;
    r = b->inner->run(b->inner_ctx, g, missing, nmiss);
    if (r < 0)
        goto out;
    b->tiles_computed += nmiss;
    for (size_t i = 0; i < nmiss; i++) {
        /* A tile that cannot be stored (disk full) only costs a resume; the job goes on. */
        (void)hc_tc_tile_put(b->tc, b->key, missing[i].index, missing[i].out_px,
                             tile_bytes(g, &missing[i]));
    }
out:
    free(missing);
    return r;
}

const struct hc_tile_backend hc_tcbackend = {.name = "tilecache", .run = tcb_run};
