/* tile_avx2.c: the copy kernel with 32-byte AVX2 loads and stores. */
#include <immintrin.h>

#include "tile_simd.h"

static void
copy_avx2(uint8_t *dst, size_t dst_stride, const uint8_t *src, size_t src_stride, size_t row_bytes,
          int rows)
{
    for (int r = 0; r < rows; r++) {
        const uint8_t *s = src + (size_t)r * src_stride;
        uint8_t *d = dst + (size_t)r * dst_stride;
        size_t i = 0;
        for (; i + 128 <= row_bytes; i += 128) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
            __m256i b = _mm256_loadu_si256((const __m256i *)(s + i + 32));
            __m256i c = _mm256_loadu_si256((const __m256i *)(s + i + 64));
            __m256i e = _mm256_loadu_si256((const __m256i *)(s + i + 96));
            _mm256_storeu_si256((__m256i *)(d + i), a);
            _mm256_storeu_si256((__m256i *)(d + i + 32), b);
            _mm256_storeu_si256((__m256i *)(d + i + 64), c);
            _mm256_storeu_si256((__m256i *)(d + i + 96), e);
        }
        for (; i + 32 <= row_bytes; i += 32)
            _mm256_storeu_si256((__m256i *)(d + i), _mm256_loadu_si256((const __m256i *)(s + i)));
        if (i < row_bytes && row_bytes >= 32) {
            size_t j = row_bytes - 32;
            _mm256_storeu_si256((__m256i *)(d + j), _mm256_loadu_si256((const __m256i *)(s + j)));
        } else {
            for (; i + 16 <= row_bytes; i += 16)
                _mm_storeu_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
            for (; i < row_bytes; i++)
                d[i] = s[i];
        }
    }
}

const struct hc_tile_kernels hc_tile_kernels_avx2 = {copy_avx2};
