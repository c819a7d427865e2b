/* tile_scalar.c: the plain C copy kernel, always built; the reference for the SIMD ones. */
#include "tile_simd.h"

static void
copy_scalar(uint8_t *dst, size_t dst_stride, const uint8_t *src, size_t src_stride,
            size_t row_bytes, int rows)
{
    for (int r = 0; r < rows; r++) {
        const uint8_t *s = src + (size_t)r * src_stride;
        uint8_t *d = dst + (size_t)r * dst_stride;
        for (size_t i = 0; i < row_bytes; i++)
            d[i] = s[i];
    }
}

const struct hc_tile_kernels hc_tile_kernels_scalar = {copy_scalar};
