/* tile_simd.h (private): the tiler's copy kernels, one table per SIMD level, so that tests
 * can run every level in one process and compare it with scalar. */
#ifndef HC_TILE_SIMD_H
#define HC_TILE_SIMD_H

#include <stddef.h>
#include <stdint.h>

#include "cpu.h"

struct hc_tile_kernels {
    /* Copies `rows` rows of `row_bytes` bytes from src (stride src_stride) to dst (stride
     * dst_stride). The regions must not overlap. */
    void (*copy)(uint8_t *dst, size_t dst_stride, const uint8_t *src, size_t src_stride,
                 size_t row_bytes, int rows);
};

extern const struct hc_tile_kernels hc_tile_kernels_scalar;
#if defined(HC_HAVE_SSE2)
extern const struct hc_tile_kernels hc_tile_kernels_sse2;
#endif
#if defined(HC_HAVE_AVX2)
extern const struct hc_tile_kernels hc_tile_kernels_avx2;
#endif
#if defined(HC_HAVE_NEON)
extern const struct hc_tile_kernels hc_tile_kernels_neon;
#endif

/* The kernels of `level`, or NULL when this build or CPU lacks it. */
const struct hc_tile_kernels *hc_tile_kernels_for(enum hc_simd level);

#endif
