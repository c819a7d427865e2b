/* tile_neon.c: the copy kernel with 16-byte NEON loads and stores. */
#include <arm_neon.h>

#include "tile_simd.h"

static void
copy_neon(uint8_t *dst, size_t dst_stride, const uint8_t *src, size_t src_stride, size_t row_bytes,
          int rows)
{
    for (int r = 0; r < rows; r++) {
        const uint8_t *s = src + (size_t)r * src_stride;
        uint8_t *d = dst + (size_t)r * dst_stride;
        size_t i = 0;
        for (; i + 64 <= row_bytes; i += 64) {
            uint8x16x4_t v = vld1q_u8_x4(s + i);
            vst1q_u8_x4(d + i, v);
        }
        for (; i + 16 <= row_bytes; i += 16)
            vst1q_u8(d + i, vld1q_u8(s + i));
        if (i < row_bytes && row_bytes >= 16) {
            size_t j = row_bytes - 16;
            vst1q_u8(d + j, vld1q_u8(s + j));
        } else {
            for (; i < row_bytes; i++)
                d[i] = s[i];
        }
    }
}

const struct hc_tile_kernels hc_tile_kernels_neon = {copy_neon};
