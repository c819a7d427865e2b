/* bicubic_sse2.c: SSE2 vertical kernels (float, OpenCV's operation order, 4 lanes). SSE2 has
 * no byte shuffle, so the horizontal passes stay scalar at this level; x86-64 CPUs from the
 * last decade run the AVX2 level instead. */
#include <emmintrin.h>
#include <string.h>

#include "bicubic_simd.h"

/* acc = h0*b0 + (h1*b1 + (h2*b2 + h3*b3)), every step rounded to float like OpenCV's. */
static inline __m128
vsum(const float *const h[4], int e, __m128 b0, __m128 b1, __m128 b2, __m128 b3)
{
    __m128 acc = _mm_mul_ps(_mm_loadu_ps(h[3] + e), b3);
    acc = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(h[2] + e), b2), acc);
    acc = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(h[1] + e), b1), acc);
    return _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(h[0] + e), b0), acc);
}

static void
v8_sse2(const float *const h[4], const float b[4], const int16_t ib[4], uint8_t *dst, int n,
        int nfloat)
{
    __m128 b0 = _mm_set1_ps(b[0]), b1 = _mm_set1_ps(b[1]);
    __m128 b2 = _mm_set1_ps(b[2]), b3 = _mm_set1_ps(b[3]);
    int e = 0;
    for (; e + 16 <= nfloat; e += 16) {
        __m128i i0 = _mm_cvtps_epi32(vsum(h, e, b0, b1, b2, b3)); /* round half even */
        __m128i i1 = _mm_cvtps_epi32(vsum(h, e + 4, b0, b1, b2, b3));
        __m128i i2 = _mm_cvtps_epi32(vsum(h, e + 8, b0, b1, b2, b3));
        __m128i i3 = _mm_cvtps_epi32(vsum(h, e + 12, b0, b1, b2, b3));
        __m128i w0 = _mm_packs_epi32(i0, i1), w1 = _mm_packs_epi32(i2, i3);
        _mm_storeu_si128((__m128i *)(dst + e), _mm_packus_epi16(w0, w1));
    }
    for (; e + 8 <= nfloat; e += 8) {
        __m128i i0 = _mm_cvtps_epi32(vsum(h, e, b0, b1, b2, b3));
        __m128i i1 = _mm_cvtps_epi32(vsum(h, e + 4, b0, b1, b2, b3));
        __m128i w = _mm_packs_epi32(i0, i1);
        _mm_storel_epi64((__m128i *)(dst + e), _mm_packus_epi16(w, w));
    }
    hc_bc_v8_scalar_from(h, b, ib, dst, n, nfloat, e);
}

static void
h8_sse2(const uint8_t *srow, const struct hc_bc_hplan *p, float *h)
{
    hc_bc_h8_scalar_from(srow, p, h, 0);
}

static void
h16_sse2(const uint8_t *srow, const struct hc_bc_hplan *p, float *h)
{
    hc_bc_kernels_scalar.h16(srow, p, h);
}

/* Clamping in float before the conversion gives the same integer as converting, then
 * saturating (rounding is monotonic and 0 and 65535 are exact), and SSE2 lacks packus_epi32. */
static inline __m128i
to_u16x4(__m128 v)
{
    v = _mm_min_ps(_mm_max_ps(v, _mm_setzero_ps()), _mm_set1_ps(65535.0f));
    return _mm_sub_epi32(_mm_cvtps_epi32(v), _mm_set1_epi32(32768));
}

static void
v16_sse2(const float *const h[4], const float b[4], uint8_t *dst, int n, int nsimd)
{
    __m128 b0 = _mm_set1_ps(b[0]), b1 = _mm_set1_ps(b[1]);
    __m128 b2 = _mm_set1_ps(b[2]), b3 = _mm_set1_ps(b[3]);
    const __m128i bias = _mm_set1_epi16((short)0x8000);
    int e = 0;
    for (; e + 8 <= nsimd; e += 8) {
        __m128i lo = to_u16x4(vsum(h, e, b0, b1, b2, b3));
        __m128i hi = to_u16x4(vsum(h, e + 4, b0, b1, b2, b3));
        __m128i w = _mm_xor_si128(_mm_packs_epi32(lo, hi), bias);
        _mm_storeu_si128((__m128i *)(dst + 2 * (size_t)e), w);
    }
    hc_bc_v16_scalar_from(h, b, dst, n, nsimd, e);
}

const struct hc_bc_kernels hc_bc_kernels_sse2 = {h8_sse2, v8_sse2, h16_sse2, v16_sse2};
