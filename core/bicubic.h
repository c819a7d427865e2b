/* bicubic.h: OpenCV-exact bicubic upscaling (cv::resize INTER_CUBIC) at integer scales.
 *
 * The exact arithmetic is in shared/DESIGN.md: A = -0.75, half-pixel mapping computed from
 * *global* output indices, replicate borders at the true image edge, Q11 integer weights,
 * int32 horizontal accumulation; for 8 bit the vertical pass is OpenCV's: float32 with
 * round-half-even for the first 8*floor(n/8) samples of each whole output row (n = output
 * width * channels), (v + 2^21) >> 22 for the rest (the integer formula alone differs from
 * cv2 by 1 on exact ties, even at x2; core/bicubic_simd.h has the exact operation order);
 * float weights and round-half-even for 16 bit. Because positions come from global indices and taps
 * are clamped to the global image, any output rectangle computed from a source window that holds
 * its padded source rectangle (hc_tile_src_rect) is byte-identical to the same pixels of an untiled
 * run.
 */
#ifndef HC_BICUBIC_H
#define HC_BICUBIC_H

#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Upscales by `scale` (1..HC_MAX_SCALE): computes the output pixels of dst's rectangle
 * (global output coordinates; the output image is src_w*scale x src_h*scale) from src, a
 * window on the source image (src_w x src_h) that must contain the padded source rectangle
 * of dst's rectangle. src and dst have the same channels and depth.
 *
 * nthreads: 0 = as many as online CPUs, 1 = the calling thread only.
 * Returns 0, or -EINVAL (bad geometry, window too small) with hc_last_error() set.
 * Thread safety: reentrant; src and dst must not overlap. */
int hc_bicubic_resize(const struct hc_view *src, int src_w, int src_h, int scale,
                      struct hc_view *dst, int nthreads);

/* The straightforward scalar reference of the same contract (one thread, no per-scale
 * specialisation). Tests compare the fast path with it; production code calls
 * hc_bicubic_resize(). */
int hc_bicubic_resize_ref(const struct hc_view *src, int src_w, int src_h, int scale,
                          struct hc_view *dst);

#ifdef __cplusplus
}
#endif
#endif
