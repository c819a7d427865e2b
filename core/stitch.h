/* stitch.h: puts output tiles back together and streams finished row bands to a sink.
 *
 * The output is cut into bands of band_h rows (the tile grid's rows). Tiles may arrive in
 * any order; each band is allocated when its first tile arrives and handed to the sink, then
 * freed, as soon as it and every band above it are complete. Memory is therefore
 * O(width x band_h x bands in flight): one band when tiles come row by row.
 *
 * Thread safety: one thread at a time per struct hc_stitch.
 */
#ifndef HC_STITCH_H
#define HC_STITCH_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Receives finished rows top to bottom; returns 0 or -errno (which fails the stitch). */
typedef int (*hc_row_sink)(void *ctx, const uint8_t *rows, size_t stride, int nrows);

struct hc_stitch;

/* Output of dst_w x dst_h pixels (channels, depth), bands of band_h rows (> 0).
 * Returns 0 and *out, or -EINVAL/-ENOMEM. Free with hc_stitch_free(). */
int hc_stitch_open(int dst_w, int dst_h, int band_h, int channels, int depth, hc_row_sink sink,
                   void *sink_ctx, struct hc_stitch **out);

/* Adds the pixels of output rectangle *r (global output coordinates; inside one band)
 * from px (rows stride bytes apart). Writes every band that became complete. Returns 0,
 * -EINVAL (rectangle outside the image, across bands, or overlapping pixels already given),
 * or the sink's error. */
int hc_stitch_put(struct hc_stitch *s, const struct hc_rect *r, const uint8_t *px, size_t stride);

/* Rows handed to the sink so far. */
int hc_stitch_rows_done(const struct hc_stitch *s);

/* Returns 0 when every row has reached the sink, else -EINVAL ("missing tiles"). */
int hc_stitch_finish(struct hc_stitch *s);

void hc_stitch_free(struct hc_stitch *s);

#ifdef __cplusplus
}
#endif
#endif
