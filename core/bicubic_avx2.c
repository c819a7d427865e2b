/* bicubic_avx2.c: AVX2 kernels. Horizontal 8 bit: a byte shuffle gathers the 4 taps of
 * each output sample from one 16-byte load (any channel count: the plan holds the shuffle
 * masks), pmaddwd multiplies by the Q11 weights, phaddd finishes the sums; 8 samples per
 * step. Vertical: float, in OpenCV's operation order, 8 lanes. Compiled with -mavx2 only (no
 * -mfma): a fused multiply-add would round differently from OpenCV. */
#include <immintrin.h>
#include <string.h>

#include "bicubic_simd.h"

static void
h8_avx2(const uint8_t *srow, const struct hc_bc_hplan *p, float *h)
{
    int nb2 = p->nblk & ~1, b = 0;
    for (; b < nb2; b += 2) {
        __m256i d0 =
            _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(srow + p->boff[b])));
        __m256i d1 =
            _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(srow + p->boff[b + 1])));
        __m256i m0 = _mm256_loadu_si256((const __m256i *)(p->bmask + 32 * (size_t)b));
        __m256i m1 = _mm256_loadu_si256((const __m256i *)(p->bmask + 32 * (size_t)b + 32));
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(p->bw + 16 * (size_t)b));
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(p->bw + 16 * (size_t)b + 16));
        __m256i r0 = _mm256_madd_epi16(_mm256_shuffle_epi8(d0, m0), w0);
        __m256i r1 = _mm256_madd_epi16(_mm256_shuffle_epi8(d1, m1), w1);
        /* lanes: [b e0 e1, b+1 e0 e1 | b e2 e3, b+1 e2 e3] -> block order */
        __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(r0, r1), 0xD8);
        _mm256_storeu_ps(h + 4 * (size_t)b, _mm256_cvtepi32_ps(s));
    }
    hc_bc_h8_scalar_from(srow, p, h, 4 * b);
}

static inline __m256
vsum(const float *const h[4], int e, __m256 b0, __m256 b1, __m256 b2, __m256 b3)
{
    __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(h[3] + e), b3);
    acc = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(h[2] + e), b2), acc);
    acc = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(h[1] + e), b1), acc);
    return _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(h[0] + e), b0), acc);
}

static void
v8_avx2(const float *const h[4], const float b[4], const int16_t ib[4], uint8_t *dst, int n,
        int nfloat)
{
    __m256 b0 = _mm256_set1_ps(b[0]), b1 = _mm256_set1_ps(b[1]);
    __m256 b2 = _mm256_set1_ps(b[2]), b3 = _mm256_set1_ps(b[3]);
    int e = 0;
    for (; e + 32 <= nfloat; e += 32) {
        __m256i i0 = _mm256_cvtps_epi32(vsum(h, e, b0, b1, b2, b3));
        __m256i i1 = _mm256_cvtps_epi32(vsum(h, e + 8, b0, b1, b2, b3));
        __m256i i2 = _mm256_cvtps_epi32(vsum(h, e + 16, b0, b1, b2, b3));
        __m256i i3 = _mm256_cvtps_epi32(vsum(h, e + 24, b0, b1, b2, b3));
        __m256i w0 = _mm256_packs_epi32(i0, i1); /* [i0lo i1lo | i0hi i1hi] */
        __m256i w1 = _mm256_packs_epi32(i2, i3);
        __m256i u = _mm256_packus_epi16(w0, w1); /* [i0lo i1lo i2lo i3lo | hi...] */
        u = _mm256_permutevar8x32_epi32(u, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(dst + e), u);
    }
    for (; e + 8 <= nfloat; e += 8) {
        __m256i i0 = _mm256_cvtps_epi32(vsum(h, e, b0, b1, b2, b3));
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i0), _mm256_extracti128_si256(i0, 1));
        _mm_storel_epi64((__m128i *)(dst + e), _mm_packus_epi16(w, w));
    }
    hc_bc_v8_scalar_from(h, b, ib, dst, n, nfloat, e);
}

/* 16 bit: one 32-bit gather per tap for 8 output samples (taps of 4-channel pixels span
 * 32 bytes, too wide for a byte shuffle), low halves kept; products and sums in the
 * reference's order ((p0 + p1) + p2) + p3. */
static void
h16_avx2(const uint8_t *srow, const struct hc_bc_hplan *p, float *h)
{
    const __m256i lo16 = _mm256_set1_epi32(0xffff);
    const int *base = (const int *)(const void *)srow;
    int g = 0;
    for (; g < p->ngrp16; g++) {
        const int32_t *o = p->goff + 32 * (size_t)g;
        const float *w = p->gw + 32 * (size_t)g;
        __m256 acc = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            __m256i v =
                _mm256_i32gather_epi32(base, _mm256_loadu_si256((const __m256i *)(o + 8 * k)), 1);
            __m256 prod = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, lo16)),
                                        _mm256_loadu_ps(w + 8 * k));
            acc = k == 0 ? prod : _mm256_add_ps(acc, prod);
        }
        _mm256_storeu_ps(h + 8 * (size_t)g, acc);
    }
    hc_bc_h16_scalar_from(srow, p, h, 8 * g);
}

static void
v16_avx2(const float *const h[4], const float b[4], uint8_t *dst, int n, int nsimd)
{
    __m256 b0 = _mm256_set1_ps(b[0]), b1 = _mm256_set1_ps(b[1]);
    __m256 b2 = _mm256_set1_ps(b[2]), b3 = _mm256_set1_ps(b[3]);
    int e = 0;
    for (; e + 16 <= nsimd; e += 16) {
        __m256i i0 = _mm256_cvtps_epi32(vsum(h, e, b0, b1, b2, b3));
        __m256i i1 = _mm256_cvtps_epi32(vsum(h, e + 8, b0, b1, b2, b3));
        __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(i0, i1), 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + 2 * (size_t)e), w);
    }
    hc_bc_v16_scalar_from(h, b, dst, n, nsimd, e);
}

const struct hc_bc_kernels hc_bc_kernels_avx2 = {h8_avx2, v8_avx2, h16_avx2, v16_avx2};
