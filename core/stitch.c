/* stitch.c: bands of output rows filled by tiles in any order, written in order. */
#include "stitch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tile.h"

struct band {
    uint8_t *px;      /* NULL until the band's first tile arrives */
    uint8_t *given;   /* one byte per pixel: 1 once a tile covered it (catches overlaps) */
    uint64_t covered; /* pixels given so far */
};

struct hc_stitch {
    int w, h, band_h, nbands, channels, depth;
    size_t bpp, stride;
    hc_row_sink sink;
    void *sink_ctx;
    int next; /* first band not yet handed to the sink */
    int rows_done;
    struct band *bands;
};

static int
band_rows(const struct hc_stitch *s, int b)
{
    int y0 = b * s->band_h;
    int y1 = y0 + s->band_h;

    return (y1 > s->h ? s->h : y1) - y0;
}

int
hc_stitch_open(int dst_w, int dst_h, int band_h, int channels, int depth, hc_row_sink sink,
               void *sink_ctx, struct hc_stitch **out)
{
    struct hc_stitch *s;

    if (dst_w <= 0 || dst_h <= 0 || band_h <= 0 || channels < 1 || channels > 4 ||
        (depth != 8 && depth != 16) || !sink)
        return hc_error(-EINVAL, "stitch", "bad geometry %dx%d band %d", dst_w, dst_h, band_h);
    s = calloc(1, sizeof(*s));
    if (!s)
        return hc_error(-ENOMEM, "stitch", "out of memory");
    s->w = dst_w;
    s->h = dst_h;
    s->band_h = band_h;
    s->nbands = (dst_h + band_h - 1) / band_h;
    s->channels = channels;
    s->depth = depth;
    s->bpp = hc_pixel_bytes(channels, depth);
    s->stride = (size_t)dst_w * s->bpp;
    s->sink = sink;
    s->sink_ctx = sink_ctx;
    s->bands = calloc((size_t)s->nbands, sizeof(*s->bands));
    if (!s->bands) {
        free(s);
        return hc_error(-ENOMEM, "stitch", "out of memory");
    }
    *out = s;
    return 0;
}

/* Hands every complete band at the head to the sink. */
static int
flush(struct hc_stitch *s)
{
    while (s->next < s->nbands) {
        struct band *b = &s->bands[s->next];
        int rows = band_rows(s, s->next);
        int res;

        if (!b->px || b->covered != (uint64_t)rows * (uint64_t)s->w)
            break;
        res = s->sink(s->sink_ctx, b->px, s->stride, rows);
        free(b->px);
        free(b->given);
        b->px = NULL;
        b->given = NULL;
        if (res)
            return res;
        s->rows_done += rows;
        s->next++;
    }
    return 0;
}

int
hc_stitch_put(struct hc_stitch *s, const struct hc_rect *r, const uint8_t *px, size_t stride)
{
    struct band *b;
    int bi, rows;

    if (r->w <= 0 || r->h <= 0 || r->x < 0 || r->y < 0 || r->x > s->w - r->w || r->y > s->h - r->h)
        return hc_error(-EINVAL, "stitch", "tile %d,%d %dx%d lies outside the %dx%d image", r->x,
                        r->y, r->w, r->h, s->w, s->h);
    bi = r->y / s->band_h;
    if ((r->y + r->h - 1) / s->band_h != bi)
        return hc_error(-EINVAL, "stitch", "tile at row %d (%d rows) crosses a band edge", r->y,
                        r->h);
    if (bi < s->next)
        return hc_error(-EINVAL, "stitch", "tile at %d,%d arrived after its band was written", r->x,
                        r->y);
    b = &s->bands[bi];
    rows = band_rows(s, bi);
    if (!b->px) {
        b->px = malloc(s->stride * (size_t)rows);
        b->given = calloc((size_t)rows, (size_t)s->w);
        if (!b->px || !b->given) {
            free(b->px);
            free(b->given);
            b->px = b->given = NULL;
            return hc_error(-ENOMEM, "stitch", "out of memory for a band of %d rows", rows);
        }
    }
    for (int y = 0; y < r->h; y++) {
        uint8_t *g = b->given + (size_t)(r->y - bi * s->band_h + y) * (size_t)s->w + r->x;

        if (memchr(g, 1, (size_t)r->w))
            return hc_error(-EINVAL, "stitch", "tile at %d,%d overlaps pixels already given", r->x,
                            r->y);
    }
    for (int y = 0; y < r->h; y++)
        memset(b->given + (size_t)(r->y - bi * s->band_h + y) * (size_t)s->w + r->x, 1,
               (size_t)r->w);
    {
        struct hc_view v = {b->px, s->stride, 0, bi * s->band_h, s->w, rows, s->channels, s->depth};

        hc_tile_paste(&v, r, px, stride);
    }
    b->covered += (uint64_t)r->w * (uint64_t)r->h;
    return flush(s);
}

int
hc_stitch_rows_done(const struct hc_stitch *s)
{
    return s->rows_done;
}

int
hc_stitch_finish(struct hc_stitch *s)
{
    if (s->next != s->nbands)
        return hc_error(-EINVAL, "stitch", "missing tiles: %d of %d rows complete", s->rows_done,
                        s->h);
    return 0;
}

void
hc_stitch_free(struct hc_stitch *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nbands; i++) {
        free(s->bands[i].px);
        free(s->bands[i].given);
    }
    free(s->bands);
    free(s);
}
