/* tile_sse2.c: the copy kernel with 16-byte SSE2 loads and stores. */
#include <emmintrin.h>

#include "tile_simd.h"

static void
copy_sse2(uint8_t *dst, size_t dst_stride, const uint8_t *src, size_t src_stride, size_t row_bytes,
          int rows)
{
    for (int r = 0; r < rows; r++) {
        const uint8_t *s = src + (size_t)r * src_stride;
        uint8_t *d = dst + (size_t)r * dst_stride;
        size_t i = 0;
        for (; i + 64 <= row_bytes; i += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
            __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
            _mm_storeu_si128((__m128i *)(d + i), a);
            _mm_storeu_si128((__m128i *)(d + i + 16), b);
            _mm_storeu_si128((__m128i *)(d + i + 32), c);
            _mm_storeu_si128((__m128i *)(d + i + 48), e);
        }
        for (; i + 16 <= row_bytes; i += 16)
            _mm_storeu_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
        if (i < row_bytes && row_bytes >= 16) {
            /* Overlapping last vector instead of a byte loop (no overlap between src/dst). */
            size_t j = row_bytes - 16;
            _mm_storeu_si128((__m128i *)(d + j), _mm_loadu_si128((const __m128i *)(s + j)));
        } else {
            for (; i < row_bytes; i++)
                d[i] = s[i];
        }
    }
}

const struct hc_tile_kernels hc_tile_kernels_sse2 = {copy_sse2};
