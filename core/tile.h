/* tile.h: tile geometry in global coordinates and the tiler (copy tiles out of a source
 * window, paste results into an output window) with SIMD kernels.
 */
#ifndef HC_TILE_H
#define HC_TILE_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The source rectangle the bicubic filter needs for output rectangle *out at `scale` on a
 * src_w x src_h image: [floor((X0+0.5)/s - 0.5) - 1, floor((X1-0.5)/s - 0.5) + 2] in each
 * axis, clamped to the image (shared/DESIGN.md). The positions are computed with the
 * filter's own float mapping, so the rectangle holds exactly the taps it reads (at x3 the
 * exact rational formula and the float one disagree next to integers). */
void hc_tile_src_rect(int src_w, int src_h, int scale, const struct hc_rect *out,
                      struct hc_rect *src);

/* Number of tiles of a grid of `tile` x `tile` output tiles over a dst_w x dst_h output;
 * tile <= 0 means one tile. Tiles are numbered row-major. */
int hc_tile_count(int dst_w, int dst_h, int tile);

/* Output rectangle of tile number idx of that grid. */
void hc_tile_rect(int dst_w, int dst_h, int tile, int idx, struct hc_rect *out);

/* Copies rectangle *r (global coordinates, inside src) into a packed buffer dst with row
 * stride dst_stride. Uses the SIMD kernel chosen at start-up (core/cpu.h). */
void hc_tile_extract(const struct hc_view *src, const struct hc_rect *r, uint8_t *dst,
                     size_t dst_stride);

/* Copies a packed buffer holding rectangle *r into dst (r inside dst). */
void hc_tile_paste(struct hc_view *dst, const struct hc_rect *r, const uint8_t *src,
                   size_t src_stride);

#ifdef __cplusplus
}
#endif
#endif
