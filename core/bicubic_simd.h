/* bicubic_simd.h (private): the exact arithmetic shared by the reference and the fast path,
 * the per-call plan, and the kernels of each SIMD level (one table per level, so that one
 * test process can compare every level with scalar).
 *
 * What OpenCV 4.x (cv::resize INTER_CUBIC, modules/imgproc/src/resize.cpp) computes, and
 * therefore what we compute:
 *   mapping  f = (float)((d + 0.5) * (1.0 / scale) - 0.5), i = floor(f), t = f - i
 *   weights  float Keys cubic, A = -0.75; 8 bit: Q11 int16 = round-half-even(c * 2048)
 *   8 bit    h = sum a_k * src (int32, exact; we keep it in float, |h| < 2^24 so still exact)
 *            vertical: OpenCV's SIMD loop covers output-row elements [0, 8*floor(n/8)) of the
 *            whole output row (n = dst_w * channels) and computes in float32
 *            o = rne(h0*b0 + (h1*b1 + (h2*b2 + h3*b3))), b_k = ib_k * 2^-22, each product and
 *            sum rounded to float (no FMA); the remaining elements use the integer formula
 *            (sum ib_k*h_k + 2^21) >> 22. Both saturate to [0, 255]. The integer formula
 *            alone differs from cv2 by 1 on exact ties even at x2 and x4.
 *   16 bit   float weights; h = ((s0*a0 + s1*a1) + s2*a2) + s3*a3 in float; vertical in the
 *            same SIMD region as above with the same float order, tail (h0*b0 + h1*b1 +
 *            h2*b2) + h3*b3; round half even, saturate to [0, 65535].
 * Every SIMD level must reproduce these operations in this order, bit for bit.
 */
#ifndef HC_BICUBIC_SIMD_H
#define HC_BICUBIC_SIMD_H

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "bicubic_math.h"
#include "cpu.h"
#include "image.h"

/* Source position of global output index d: tap base i (taps i-1..i+2) and fraction t. */
static inline void
hc_bicubic_map(int d, int scale, int *i, float *t)
{
    hc_bicubic_map_inv(d, 1.0 / scale, i, t);
}

/* Number of leading elements of an output row of n elements that OpenCV's vertical pass
 * computes in float (its 128-bit SIMD loop: 8 lanes of int16/uint16 per step). */
static inline int
hc_bicubic_simd_end(long n)
{
    return (int)(n / 8 * 8);
}

static inline uint8_t
hc_bc_sat8(long v)
{
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static inline uint16_t
hc_bc_sat16(long v)
{
    return (uint16_t)(v < 0 ? 0 : v > 65535 ? 65535 : v);
}

/* OpenCV's SIMD-region vertical sum, h0*b0 + (h1*b1 + (h2*b2 + h3*b3)), every step
 * rounded to float: one definition for 8 and 16 bit, so the two cannot drift apart. */
static inline float
hc_bc_vsum_simd(float h0, float h1, float h2, float h3, const float b[4])
{
    float acc = h3 * b[3];
    acc = h2 * b[2] + acc;
    acc = h1 * b[1] + acc;
    return h0 * b[0] + acc;
}

/* The float-region value of one 8-bit output element (see above). */
static inline uint8_t
hc_bc_v8_float(float h0, float h1, float h2, float h3, const float b[4])
{
    return hc_bc_sat8(lrintf(hc_bc_vsum_simd(h0, h1, h2, h3, b)));
}

/* The integer-tail value of one 8-bit output element. */
static inline uint8_t
hc_bc_v8_int(int32_t h0, int32_t h1, int32_t h2, int32_t h3, const int16_t ib[4])
{
    int32_t v = h0 * ib[0] + h1 * ib[1] + h2 * ib[2] + h3 * ib[3];
    return hc_bc_sat8((v + (1 << 21)) >> 22);
}

static inline uint16_t
hc_bc_v16_simd(float h0, float h1, float h2, float h3, const float b[4])
{
    return hc_bc_sat16(lrintf(hc_bc_vsum_simd(h0, h1, h2, h3, b)));
}

static inline uint16_t
hc_bc_v16_tail(float h0, float h1, float h2, float h3, const float b[4])
{
    float acc = h0 * b[0];
    acc = acc + h1 * b[1];
    acc = acc + h2 * b[2];
    acc = acc + h3 * b[3];
    return hc_bc_sat16(lrintf(acc));
}

/* Horizontal plan of one call: for the n = w * cn output elements of a row of the output
 * rectangle, where to read (sample offsets from the start of the source window's row) and
 * with which weights. */
struct hc_bc_hplan {
    int cn;              /* channels */
    int w;               /* output pixels per row */
    int n;               /* output elements per row (w * cn) */
    const int32_t *xoff; /* per output pixel: 4 tap offsets in samples (already * cn) */
    const int16_t *xa;   /* per output pixel: 4 Q11 weights (8 bit) */
    const float *xf;     /* per output pixel: 4 float weights (16 bit) */
    /* 8-bit byte-shuffle blocks of 4 output elements (SSSE3/AVX2 pshufb, NEON tbl): a
     * 16-byte load at boff[b] (bytes from the row start), masks bmask[32 b .. 32 b + 31]
     * put the 4 taps of elements 0,1 then 2,3 as zero-extended 16-bit lanes, weights
     * bw[16 b ..] in the same lane order. The first nblk blocks are safe to load. */
    int nblk;
    const int32_t *boff;
    const uint8_t *bmask;
    const int16_t *bw;
    /* 16-bit gather groups of 8 output elements: goff[32 g + 8 k + j] is the byte offset of
     * tap k of element 8 g + j, gw[32 g + 8 k + j] its float weight. A 4-byte gather at
     * each offset stays inside the row for the first ngrp16 groups. */
    int ngrp16;
    const int32_t *goff;
    const float *gw;
};

struct hc_bc_kernels {
    /* One source row (8 bit, at the window's left edge) -> plan.n values of h (float). */
    void (*h8)(const uint8_t *srow, const struct hc_bc_hplan *p, float *h);
    /* Vertical 8 bit: n output elements from 4 h rows; elements [0, nfloat) use the float
     * formula, the rest the integer one. */
    void (*v8)(const float *const h[4], const float b[4], const int16_t ib[4], uint8_t *dst, int n,
               int nfloat);
    void (*h16)(const uint8_t *srow, const struct hc_bc_hplan *p, float *h);
    /* Vertical 16 bit; elements [0, nsimd) in OpenCV's SIMD order, the rest in its tail
     * order. dst may be unaligned. */
    void (*v16)(const float *const h[4], const float b[4], uint8_t *dst, int n, int nsimd);
};

extern const struct hc_bc_kernels hc_bc_kernels_scalar;
#if defined(HC_HAVE_SSE2)
extern const struct hc_bc_kernels hc_bc_kernels_sse2;
#endif
#if defined(HC_HAVE_AVX2)
extern const struct hc_bc_kernels hc_bc_kernels_avx2;
#endif
#if defined(HC_HAVE_NEON)
extern const struct hc_bc_kernels hc_bc_kernels_neon;
#endif

/* Scalar pieces the vector kernels reuse for their edges. */
void hc_bc_h8_scalar_from(const uint8_t *srow, const struct hc_bc_hplan *p, float *h, int e0);
void hc_bc_h16_scalar_from(const uint8_t *srow, const struct hc_bc_hplan *p, float *h, int e0);
void hc_bc_v8_scalar_from(const float *const h[4], const float b[4], const int16_t ib[4],
                          uint8_t *dst, int n, int nfloat, int e0);
void hc_bc_v16_scalar_from(const float *const h[4], const float b[4], uint8_t *dst, int n,
                           int nsimd, int e0);

/* The kernels of `level`, or NULL when this build or CPU lacks it. */
const struct hc_bc_kernels *hc_bc_kernels_for(enum hc_simd level);

/* hc_bicubic_resize with explicit kernels (tests compare levels through it). */
int hc_bicubic_resize_with(const struct hc_bc_kernels *k, const struct hc_view *src, int src_w,
                           int src_h, int scale, struct hc_view *dst, int nthreads);

/* Shared argument validation of hc_bicubic_resize and hc_bicubic_resize_ref. */
int hc_bicubic_check(const struct hc_view *src, int src_w, int src_h, int scale,
                     const struct hc_view *dst);

#endif
