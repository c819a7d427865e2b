/* upscale.cu: the CUDA bicubic backend (upscale.h).
 *
 * Exactness: every value is computed with the operations of core/bicubic_simd.h in the same
 * order; the file is compiled with -fmad=false so that no multiply-add is fused (a fused
 * a*b+c rounds once where the CPU rounds twice). Positions come from global output indices,
 * so a tile gives the same pixels as the whole image.
 *
 * Two kernels, both with 16x16 thread blocks that stage the block's source pixels in shared
 * memory as they are (u8 or u16) and keep the horizontal sums of four source rows in
 * registers while they slide down the block's columns:
 *  - generic (any scale): each thread owns NC output columns 256 apart and loads the four
 *    taps of its column per source row;
 *  - per-scale (x2): each thread owns one period of S neighbouring output columns, loads the
 *    five source pixels they share once per source row, walks rows by periods too (no per-
 *    row bookkeeping, no register moves) and stores its pixels in the widest aligned pieces.
 *    Threads away from every edge take x2_hot_loop: weights as constants, no clamps, the
 *    middle row's product shared by a period's two rows, two pixels converted and packed
 *    per instruction.
 * Both stage their source rows as aligned 16-byte pieces (stage_source) and are checked bit
 * for bit against the CPU reference by tests/test_service_cuda.c.
 */
#include "upscale.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include <cuda_runtime.h>

#include "bicubic_math.h"
#include "error.h"

#ifndef HC_NC
#define HC_NC 2 /* output columns per thread, 256 apart */
#endif
#define NC HC_NC
#define BX (256 * NC) /* output columns per block */
/* Output rows per block, at most: more rows share the block's fixed costs (staging, tables,
 * the first four horizontal rows); the host halves it where the source rectangle would not
 * fit in shared memory (x1, 16 bit). */
#ifndef HC_BY_MAX
#define HC_BY_MAX 64
#endif
#define BY_MAX HC_BY_MAX
#define SMEM_MAX (96 * 1024) /* dynamic shared memory a launch may use */
/* Row tables are filled by threads tid < rows per block: one block of 256 threads. */
static_assert(BY_MAX <= 256, "HC_BY_MAX above the threads of a block");

struct tile_args {
    const uint8_t *src; /* packed source window, src_w x src_h */
    uint8_t *dst;       /* packed output, out_w x out_h */
    int image_w, image_h, scale, cn;
    double inv_scale; /* 1.0 / scale, as core computes it (IEEE division, same on host) */
    int src_x, src_y, src_w, src_h;
    int out_x, out_y, out_w, out_h;
    long simd_end; /* output-row elements computed with OpenCV's SIMD (float) formulas */
    int by;        /* output rows per block (<= BY_MAX) */
};

__device__ __forceinline__ int
clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Source indices [lo, hi] (clamped to the image) holding every tap of outputs first..last
 * along one axis: what a block stages. */
__device__ __forceinline__ void
tap_span(int first, int last, double inv_scale, int size, int *lo, int *hi)
{
    int i0, i1;
    float t;
    hc_bicubic_map_inv(first, inv_scale, &i0, &t);
    hc_bicubic_map_inv(last, inv_scale, &i1, &t);
    *lo = clampi(i0 - 1, 0, size - 1);
    *hi = clampi(i1 + 2, 0, size - 1);
}

/* Vertical weights of output row gy: Q11 (yib, for the u8 integer tail) and the float ones
 * of OpenCV's SIMD formula (yb: Q11 / 2^22 for u8, the plain weights for u16). Returns the
 * tap base row. */
__device__ __forceinline__ int
row_weights(int gy, double inv_scale, bool u8, int yib[4], float yb[4])
{
    int iy;
    float t, c[4];
    hc_bicubic_map_inv(gy, inv_scale, &iy, &t);
    hc_bicubic_coeffs(t, c);
    for (int k = 0; k < 4; k++) {
        int ib = hc_bicubic_q11(c[k]);
        yib[k] = ib;
        yb[k] = u8 ? (float)ib * (1.0f / (2048.0f * 2048.0f)) : c[k];
    }
    return iy;
}

/* Where the block's staged rows are: rows are copied as whole aligned 16-byte pieces, so
 * staged row r starts at base + r * pitch + lo(r), lo(r) being its global address mod 16. */
struct stage {
    const unsigned char *base;
    int pitch, lo0, slo; /* lo(r) = (lo0 + r * slo) & 15 */
};

/* Bytes per staged row for nb bytes of pixels: the aligned pieces that cover any start. */
__host__ __device__ __forceinline__ int
stage_pitch(int nb)
{
    return ((nb + 30) >> 4) << 4;
}

template <typename T>
__device__ __forceinline__ const T *
stage_row(const stage &g, int r)
{
    return (const T *)(g.base + r * g.pitch + ((g.lo0 + r * g.slo) & 15));
}

/* Copies the block's source rows ry0.. (sh of them, nb bytes each from column cx0) to
 * shared memory in aligned 16-byte pieces, four loads in flight per thread before their
 * stores (byte loads left each warp waiting on a global round trip per 128 bytes). The
 * pieces reach up to 30 bytes past a row's end: the buffers carry STAGE_OVERREAD bytes of
 * slack after the last tile. */
template <typename T, int CN>
__device__ __forceinline__ stage
stage_source(const tile_args &a, int ry0, int cx0, int sh, int nb, unsigned char *s, int tid)
{
    const size_t stride = (size_t)a.src_w * CN * sizeof(T);
    const unsigned char *g0 =
        a.src + (size_t)(ry0 - a.src_y) * stride + (size_t)(cx0 - a.src_x) * CN * sizeof(T);
    stage g;
    g.base = s;
    g.pitch = stage_pitch(nb);
    g.lo0 = (int)((uintptr_t)g0 & 15);
    g.slo = (int)(stride & 15);
    const int n16 = g.pitch >> 4, total = sh * n16;
    const uint4 *ga = (const uint4 *)((uintptr_t)g0 & ~(uintptr_t)15);
    for (int i0 = tid; i0 < total; i0 += 4 * 256) {
        uint4 v[4];
        int d[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int i = i0 + u * 256;
            d[u] = -1;
            if (i < total) {
                const int r = i / n16, c = i - r * n16;
                /* row r's first piece: (g0 + r * stride) rounded down to 16 */
                const size_t off = ((size_t)g.lo0 + (size_t)r * stride) >> 4;
                v[u] = __ldg(ga + off + c);
                d[u] = r * g.pitch + c * 16;
            }
        }
#pragma unroll
        for (int u = 0; u < 4; u++)
            if (d[u] >= 0)
                *(uint4 *)(s + d[u]) = v[u];
    }
    return g;
}

/* Horizontal pass of one staged row for the thread's column: h[c] for every channel. */
template <typename T, int CN>
__device__ __forceinline__ void
hpass(const T *row, int t0, int t1, int t2, int t3, const float w[4], const int ia[4], float h[CN])
{
#pragma unroll
    for (int c = 0; c < CN; c++) {
        if (sizeof(T) == 1) {
            h[c] = (float)(ia[0] * (int)row[t0 + c] + ia[1] * (int)row[t1 + c] +
                           ia[2] * (int)row[t2 + c] + ia[3] * (int)row[t3 + c]);
        } else {
            float v = (float)row[t0 + c] * w[0];
            v = v + (float)row[t1 + c] * w[1];
            v = v + (float)row[t2 + c] * w[2];
            v = v + (float)row[t3 + c] * w[3];
            h[c] = v;
        }
    }
}

/* One block: BX x by output pixels. Each thread owns NC output columns (256 apart): for
 * each it computes the horizontal pass of the staged source rows it needs, keeps the last
 * four in registers, and slides down the column emitting output rows, so every horizontal
 * sum is computed once per source row and the vertical pass reads registers, not shared
 * memory. Several columns per thread share the row bookkeeping. */
template <typename T, int CN>
__global__ void __launch_bounds__(256, CN == 4 ? 3 : 4) bicubic_kernel(tile_args a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ int s_yi[BY_MAX]; /* tap base row (unclamped) of each output row */
    __shared__ __align__(16) float s_yb[BY_MAX][4]; /* vertical float weights, SIMD formula */
    __shared__ int s_yib[BY_MAX][4];                /* Q11 vertical weights (8-bit integer tail) */

    const int tid = threadIdx.y * 16 + threadIdx.x;
    const int ox0 = a.out_x + blockIdx.x * BX; /* global output x of the block's column 0 */
    const int oy0 = a.out_y + blockIdx.y * a.by;
    const int bw = min(BX, a.out_x + a.out_w - ox0);
    const int bh = min(a.by, a.out_y + a.out_h - oy0);
    const bool u8 = sizeof(T) == 1;

    /* Source columns / rows the block needs: taps of its first and last output. */
    int cx0, cx1, ry0, ry1;
    tap_span(ox0, ox0 + bw - 1, a.inv_scale, a.image_w, &cx0, &cx1);
    tap_span(oy0, oy0 + bh - 1, a.inv_scale, a.image_h, &ry0, &ry1);
    const int sw = cx1 - cx0 + 1, sh = ry1 - ry0 + 1;
    const int srowe = sw * CN;

    if (tid < bh)
        s_yi[tid] = row_weights(oy0 + tid, a.inv_scale, u8, s_yib[tid], s_yb[tid]);
    /* the block's source pixels as they are (u8 or u16) */
    const stage g = stage_source<T, CN>(a, ry0, cx0, sh, srowe * (int)sizeof(T), smem, tid);

    /* This thread's columns: taps and weights. A column past the block's edge keeps taps
     * 0 (valid reads) and is never stored. */
    int tp[NC][4], ia[NC][4];
    float w[NC][4];
    bool has[NC], all_simd[NC];
#pragma unroll
    for (int j = 0; j < NC; j++) {
        const int x = tid + 256 * j;
        has[j] = x < bw;
        all_simd[j] = (long)(ox0 + x) * CN + CN <= a.simd_end; /* OpenCV's SIMD region */
        for (int k = 0; k < 4; k++) {
            tp[j][k] = 0;
            ia[j][k] = 0;
            w[j][k] = 0.0f;
        }
        if (has[j]) {
            int ix;
            float t, c[4];
            hc_bicubic_map_inv(ox0 + x, a.inv_scale, &ix, &t);
            hc_bicubic_coeffs(t, c);
            for (int k = 0; k < 4; k++) {
                tp[j][k] = (clampi(ix - 1 + k, 0, a.image_w - 1) - cx0) * CN;
                ia[j][k] = hc_bicubic_q11(c[k]);
                w[j][k] = c[k];
            }
        }
    }
    __syncthreads();
    if (!has[0])
        return; /* no barrier after this point */

    /* h of virtual (unclamped) source rows iy-1 .. iy+2 of the current output row */
    float h[NC][4][CN];
    int iy = s_yi[0];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const T *row = stage_row<T>(g, clampi(iy - 1 + k, 0, a.image_h - 1) - ry0);
#pragma unroll
        for (int j = 0; j < NC; j++)
            hpass<T, CN>(row, tp[j][0], tp[j][1], tp[j][2], tp[j][3], w[j], ia[j], h[j][k]);
    }

    T *d = (T *)a.dst + (size_t)(oy0 - a.out_y) * a.out_w * CN + (size_t)(ox0 + tid - a.out_x) * CN;
    const size_t dstride = (size_t)a.out_w * CN;
    for (int o = 0; o < bh; o++, d += dstride) {
        /* the tap base moves down by at most one row per output row (scale >= 1); the same
         * for every thread of the block, so this branch never diverges */
        const int ny = s_yi[o];
        while (iy < ny) {
            iy++;
            const T *row = stage_row<T>(g, clampi(iy + 2, 0, a.image_h - 1) - ry0);
#pragma unroll
            for (int j = 0; j < NC; j++) {
#pragma unroll
                for (int c = 0; c < CN; c++) {
                    h[j][0][c] = h[j][1][c];
                    h[j][1][c] = h[j][2][c];
                    h[j][2][c] = h[j][3][c];
                }
                hpass<T, CN>(row, tp[j][0], tp[j][1], tp[j][2], tp[j][3], w[j], ia[j], h[j][3]);
            }
        }
        const float4 bv = *(const float4 *)s_yb[o];
#pragma unroll
        for (int j = 0; j < NC; j++) {
            if (j > 0 && !has[j])
                break;
            const float *h0 = h[j][0], *h1 = h[j][1], *h2 = h[j][2], *h3 = h[j][3];
            unsigned out[CN];
            if (all_simd[j]) {
                /* the common case: OpenCV's SIMD formula for every channel. cvt to
                 * unsigned saturates at 0 like the CPU's clamp. */
#pragma unroll
                for (int c = 0; c < CN; c++) {
                    float acc = h3[c] * bv.w;
                    acc = h2[c] * bv.z + acc;
                    acc = h1[c] * bv.y + acc;
                    acc = h0[c] * bv.x + acc;
                    out[c] = min(__float2uint_rn(acc), u8 ? 255u : 65535u);
                }
            } else {
                const long ge0 = (long)(ox0 + tid + 256 * j) * CN;
#pragma unroll
                for (int c = 0; c < CN; c++) {
                    int r;
                    if (ge0 + c < a.simd_end) {
                        float acc = h3[c] * bv.w;
                        acc = h2[c] * bv.z + acc;
                        acc = h1[c] * bv.y + acc;
                        acc = h0[c] * bv.x + acc;
                        r = __float2int_rn(acc);
                    } else if (u8) {
                        int sum = (int)h0[c] * s_yib[o][0] + (int)h1[c] * s_yib[o][1] +
                                  (int)h2[c] * s_yib[o][2] + (int)h3[c] * s_yib[o][3];
                        r = (sum + (1 << 21)) >> 22;
                    } else {
                        float acc = h0[c] * bv.x;
                        acc = acc + h1[c] * bv.y;
                        acc = acc + h2[c] * bv.z;
                        acc = acc + h3[c] * bv.w;
                        r = __float2int_rn(acc);
                    }
                    out[c] = (unsigned)clampi(r, 0, u8 ? 255 : 65535);
                }
            }
            /* one store per pixel where its size allows (buffers and rows are aligned) */
            T *dj = d + 256 * j * CN;
            if (sizeof(T) * CN == 4) {
                *(unsigned *)dj =
                    u8 ? (out[0] | out[1 % CN] << 8 | out[2 % CN] << 16 | out[3 % CN] << 24)
                       : (out[0] | out[1 % CN] << 16);
            } else if (sizeof(T) * CN == 8) {
                *(uint2 *)dj =
                    make_uint2(out[0] | out[1 % CN] << 16, out[2 % CN] | out[3 % CN] << 16);
            } else if (sizeof(T) * CN == 2) {
                *(unsigned short *)dj = (unsigned short)(u8 ? (out[0] | out[1 % CN] << 8) : out[0]);
            } else {
#pragma unroll
                for (int c = 0; c < CN; c++)
                    dj[c] = (T)out[c];
            }
        }
    }
}

/* ---- the per-scale kernel (instantiated for x2) --------------------------------------- */

/* Saturating round-to-nearest-even conversions: one instruction where min(cvt, 255) took two
 * (cvt from float to an integer type clamps to its range, NaN gives 0). */
__device__ __forceinline__ unsigned
cvt_sat(float v, bool u8)
{
    unsigned r;
    if (u8)
        asm("cvt.rni.sat.u8.f32 %0, %1;" : "=r"(r) : "f"(v));
    else
        asm("cvt.rni.sat.u16.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

/* Stores N values (each already within T's range) at p in pieces of U bytes (p is aligned
 * to U, U divides N * sizeof(T)): a thread's pixels are neighbours, so one 16-, 8-, 4- or
 * 2-byte store replaces several byte stores and the warp touches fewer sectors. Pieces are
 * built with adds of shifted values (no carries: each value fits its lane), which the
 * compiler turns into one LEA/IMAD per value. */
template <typename T, int N, int U>
__device__ __forceinline__ void
store_pieces(T *p, const unsigned (&v)[N])
{
    constexpr int B = N * (int)sizeof(T);
    constexpr int VB = (int)sizeof(T);
    if (U == 1) {
#pragma unroll
        for (int i = 0; i < N; i++)
            p[i] = (T)v[i];
    } else if (U == 2) {
        /* u8 only: two values per piece (u16 values are pieces of their own) */
#pragma unroll
        for (int i = 0; i < B / 2; i++) {
            if (VB == 2)
                ((unsigned short *)p)[i] = (unsigned short)v[i];
            else
                ((unsigned short *)p)[i] = (unsigned short)(v[2 * i] + (v[2 * i + 1] << 8));
        }
    } else {
        unsigned w[B / 4 > 0 ? B / 4 : 1];
#pragma unroll
        for (int i = 0; i < B / 4; i++) {
            w[i] = 0;
#pragma unroll
            for (int j = 0; j < 4 / VB; j++)
                w[i] += v[i * (4 / VB) + j] << (8 * VB * j);
        }
        if (U == 16) {
#pragma unroll
            for (int i = 0; i < B / 16; i++)
                ((uint4 *)p)[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
        } else if (U == 8) {
#pragma unroll
            for (int i = 0; i < B / 8; i++)
                ((uint2 *)p)[i] = make_uint2(w[2 * i], w[2 * i + 1]);
        } else {
#pragma unroll
            for (int i = 0; i < B / 4; i++)
                ((unsigned *)p)[i] = w[i];
        }
    }
}

/* The widest piece, for B bytes per thread, that every row of this thread can use: p0 is
 * its first row, rows are stride bytes apart. */
template <int B>
__device__ __forceinline__ int
store_unit(const void *p0, size_t stride)
{
    const uintptr_t al = (uintptr_t)p0 | (uintptr_t)stride;
    if (B % 16 == 0 && (al & 15) == 0)
        return 16;
    if (B % 8 == 0 && (al & 7) == 0)
        return 8;
    if (B % 4 == 0 && (al & 3) == 0)
        return 4;
    if (B % 2 == 0 && (al & 1) == 0)
        return 2;
    return 1;
}

/* At an integer scale S the output columns S*k .. S*k+S-1 ("period" k) take their taps from
 * the five source columns k-2 .. k+2: output q uses k-2 .. k+1 when 2q+1 < S, otherwise
 * k-1 .. k+2 (floor((q + 0.5) / S - 0.5) is -1 or 0). The host checks this against
 * hc_bicubic_map_inv for every column of the tile before it picks this kernel. */
template <int S>
__host__ __device__ __forceinline__ int
phase_j0(int q)
{
    return 2 * q + 1 < S ? 0 : 1;
}

/* The weights at x2. Output column (or row) 2k+q has the fraction 0.75 (q = 0) or 0.25
 * (q = 1), whose weights are exact binary fractions, mirror images of each other. As
 * constants they cost no registers and no loads; phase_check() compares them with
 * hc_bicubic_coeffs() and hc_bicubic_q11() before the kernel may run, so they cannot drift
 * from core/. */
__host__ __device__ __forceinline__ float
x2_coeff(int q, int k)
{
    const int i = q == 0 ? k : 3 - k;
    return i == 0 ? -0.03515625f : i == 1 ? 0.26171875f : i == 2 ? 0.87890625f : -0.10546875f;
}

__host__ __device__ __forceinline__ int
x2_q11(int q, int k)
{
    const int i = q == 0 ? k : 3 - k;
    return i == 0 ? -72 : i == 1 ? 536 : i == 2 ? 1800 : -216;
}

/* One output row of a thread's period where every pixel is stored and inside OpenCV's
 * SIMD region (all but the threads at a tile's edges and the image's last columns); bv:
 * the row's vertical weights. */
template <typename T, int CN, int S, int U>
__device__ __forceinline__ void
phase_emit_fast(const float (&h0)[S][CN], const float (&h1)[S][CN], const float (&h2)[S][CN],
                const float (&h3)[S][CN], const float4 bv, T *drow)
{
    unsigned out[S * CN];
#pragma unroll
    for (int q = 0; q < S; q++)
#pragma unroll
        for (int c = 0; c < CN; c++) {
            float acc = h3[q][c] * bv.w;
            acc = h2[q][c] * bv.z + acc;
            acc = h1[q][c] * bv.y + acc;
            acc = h0[q][c] * bv.x + acc;
            out[q * CN + c] = cvt_sat(acc, sizeof(T) == 1);
        }
    store_pieces<T, S * CN, U>(drow, out);
}

/* One output row of a thread's period, any case: pixels outside the tile are skipped, and
 * OpenCV's integer formula serves the elements past its SIMD region. */
template <typename T, int CN, int S>
__device__ __forceinline__ void
phase_emit(const float (&h0)[S][CN], const float (&h1)[S][CN], const float (&h2)[S][CN],
           const float (&h3)[S][CN], const bool (&valid)[S], int gx0, long simd_end,
           const float *yb, const int *yib, T *drow)
{
    const bool u8 = sizeof(T) == 1;
    const float4 bv = *(const float4 *)yb;
#pragma unroll
    for (int q = 0; q < S; q++) {
        if (!valid[q])
            continue;
        const long ge0 = (long)(gx0 + q) * CN;
        unsigned out[CN];
#pragma unroll
        for (int c = 0; c < CN; c++) {
            int r;
            if (ge0 + c < simd_end) {
                float acc = h3[q][c] * bv.w;
                acc = h2[q][c] * bv.z + acc;
                acc = h1[q][c] * bv.y + acc;
                acc = h0[q][c] * bv.x + acc;
                r = __float2int_rn(acc);
            } else if (u8) {
                int sum = (int)h0[q][c] * yib[0] + (int)h1[q][c] * yib[1] + (int)h2[q][c] * yib[2] +
                          (int)h3[q][c] * yib[3];
                r = (sum + (1 << 21)) >> 22;
            } else {
                float acc = h0[q][c] * bv.x;
                acc = acc + h1[q][c] * bv.y;
                acc = acc + h2[q][c] * bv.z;
                acc = acc + h3[q][c] * bv.w;
                r = __float2int_rn(acc);
            }
            out[c] = (unsigned)clampi(r, 0, u8 ? 255 : 65535);
        }
        store_pieces<T, CN, 1>(drow + q * CN, out);
    }
}

/* Horizontal sums of one staged source row (row: its first element) for the thread's S
 * outputs: the five window pixels are loaded once per channel. */
template <typename T, int CN, int S>
__device__ __forceinline__ void
phase_hrow(float (&hs)[S][CN], const T *row, const int (&col)[5], const int (&ia)[S][4],
           const float (&w)[S][4])
{
#pragma unroll
    for (int c = 0; c < CN; c++) {
        int v[5];
#pragma unroll
        for (int j = 0; j < 5; j++)
            v[j] = row[col[j] + c];
#pragma unroll
        for (int q = 0; q < S; q++) {
            const int j0 = phase_j0<S>(q);
            if (sizeof(T) == 1) {
                hs[q][c] = (float)(ia[q][0] * v[j0] + ia[q][1] * v[j0 + 1] + ia[q][2] * v[j0 + 2] +
                                   ia[q][3] * v[j0 + 3]);
            } else {
                float f = (float)v[j0] * w[q][0];
                f = f + (float)v[j0 + 1] * w[q][1];
                f = f + (float)v[j0 + 2] * w[q][2];
                f = f + (float)v[j0 + 3] * w[q][3];
                hs[q][c] = f;
            }
        }
    }
}

/* What the row loop needs besides the sums. */
template <typename T, int CN, int S> struct phase_ctx {
    stage g;
    int ry0, ry1, image_h, kb0, rlo, nrows, gx0;
    long simd_end;
    size_t dstride;
    const float (*yb)[4];
    const int (*yib)[4];
    int col[5];
    int ia[S][4];
    float w[S][4];
    bool valid[S], fast;
};

/* Vertical weight k of x2 output row phase q: OpenCV's SIMD formula takes the u8 Q11
 * weights over 2^22 (exact), the float ones for u16. */
template <typename T>
__device__ __forceinline__ float
x2_yb(int q, int k)
{
    return sizeof(T) == 1 ? (float)x2_q11(q, k) * (1.0f / 4194304.0f) : x2_coeff(q, k);
}

/* The vertical weights of local row r (phase q): constants at x2, else the block's table. */
template <typename T, int CN, int S>
__device__ __forceinline__ float4
phase_yb(const phase_ctx<T, CN, S> &x, int r, int q)
{
    if (S == 2)
        return make_float4(x2_yb<T>(q, 0), x2_yb<T>(q, 1), x2_yb<T>(q, 2), x2_yb<T>(q, 3));
    return *(const float4 *)x.yb[r];
}

template <typename T, int CN, int S>
__device__ __forceinline__ const T *
phase_src_row(const phase_ctx<T, CN, S> &x, int r)
{
    return stage_row<T>(x.g, clampi(clampi(r, 0, x.image_h - 1), x.ry0, x.ry1) - x.ry0);
}

/* The rows of a block, row period by row period: per period k the rows whose taps start at
 * k-2 come first, then source row k+2 enters the four rows of sums, then the rows whose
 * taps start at k-1. The roles of the four registers rotate with the loop unrolled by four,
 * so no value moves. EDGE: some rows of the block are outside the tile (tested per row);
 * otherwise every row is stored and a period's rows form one straight run of code. U: the
 * store width of the thread's fast rows. */
template <typename T, int CN, int S, int U, bool EDGE>
__device__ __forceinline__ void
phase_loop(const phase_ctx<T, CN, S> &x, float (&h)[4][S][CN], T *drow, int nper)
{
    int r = 0, p = 0;
#define EMIT(s0, s1, s2, s3)                                                                       \
    do {                                                                                           \
        if (!EDGE || r >= x.rlo) {                                                                 \
            if (x.fast)                                                                            \
                phase_emit_fast<T, CN, S, U>(h[s0], h[s1], h[s2], h[s3], phase_yb(x, r, q), drow); \
            else                                                                                   \
                phase_emit<T, CN, S>(h[s0], h[s1], h[s2], h[s3], x.valid, x.gx0, x.simd_end,       \
                                     x.yb[r], x.yib[r], drow);                                     \
        }                                                                                          \
        r++;                                                                                       \
        drow += x.dstride;                                                                         \
        if (EDGE && r > x.nrows)                                                                   \
            return;                                                                                \
    } while (0)
#define PERIOD(M)                                                                                  \
    do {                                                                                           \
        if (!EDGE && p >= nper)                                                                    \
            return;                                                                                \
        _Pragma("unroll") for (int q = 0; q < S; q++) if (phase_j0<S>(q) == 0)                     \
            EMIT(((M) + 1) & 3, ((M) + 2) & 3, ((M) + 3) & 3, (M));                                \
        phase_hrow<T, CN, S>(h[((M) + 1) & 3], phase_src_row(x, x.kb0 + p + 2), x.col, x.ia, x.w); \
        _Pragma("unroll") for (int q = 0; q < S; q++) if (phase_j0<S>(q) == 1)                     \
            EMIT(((M) + 2) & 3, ((M) + 3) & 3, (M), ((M) + 1) & 3);                                \
        p++;                                                                                       \
    } while (0)
    for (;;) {
        PERIOD(0);
        PERIOD(1);
        PERIOD(2);
        PERIOD(3);
    }
#undef PERIOD
#undef EMIT
}

/* ---- x2, the common case ------------------------------------------------------------
 * A thread of the x2 kernel whose block stores every row, whose block's source rows are all
 * inside the image and staged, whose five window columns are side by side in the staged
 * rows and whose pixels are all inside OpenCV's SIMD region (every thread but those at the
 * image's edges and at tiles' ragged edges) takes this loop: no clamps, no per-row tests,
 * the window's loads at fixed offsets from one row pointer, weights as constants, and the
 * product of the period's middle row h[k] * A2 computed once for the two output rows that
 * use it (same operands, so the same bits). */

/* Horizontal sums of one source row for both output columns of the period. */
template <typename T, int CN>
__device__ __forceinline__ void
x2_hrow(float (&hs)[2][CN], const T *row)
{
    /* phase_hrow with the window side by side and x2's weights, all constants */
    const int col[5] = {0, CN, 2 * CN, 3 * CN, 4 * CN};
    const int ia[2][4] = {{x2_q11(0, 0), x2_q11(0, 1), x2_q11(0, 2), x2_q11(0, 3)},
                          {x2_q11(1, 0), x2_q11(1, 1), x2_q11(1, 2), x2_q11(1, 3)}};
    const float w[2][4] = {{x2_coeff(0, 0), x2_coeff(0, 1), x2_coeff(0, 2), x2_coeff(0, 3)},
                           {x2_coeff(1, 0), x2_coeff(1, 1), x2_coeff(1, 2), x2_coeff(1, 3)}};
    phase_hrow<T, CN, 2>(hs, row, col, ia, w);
}

/* One output row of phase Q from source rows h0..h3 (k-2..k+1 for Q = 0, k-1..k+2 for
 * Q = 1), pm = h[k] * A2 standing in for h2 * yb(0, 2) (Q = 0) or h1 * yb(1, 1) (Q = 1):
 * phase_emit_fast's operations in its order. */
/* sat(hi) << 8 | sat(lo) | rest << 16, sat clamping to 0..255. With its inputs from
 * __float2int_rn the compiler makes this one F2IP that converts both floats (rounding to
 * nearest even and saturating, as cvt_sat) and packs them: two values per instruction
 * where cvt_sat and a shift-add took three for two. */
__device__ __forceinline__ unsigned
pack_u8x2(int hi, int lo, unsigned rest)
{
    unsigned d;
    asm("cvt.pack.sat.u8.s32.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(hi), "r"(lo), "r"(rest));
    return d;
}

template <typename T, int CN, int U, int Q>
__device__ __forceinline__ void
x2_emit(const float (&h0)[2][CN], const float (&h1)[2][CN], const float (&h2)[2][CN],
        const float (&h3)[2][CN], const float (&pm)[2][CN], T *drow)
{
    unsigned out[2 * CN];
#pragma unroll
    for (int q = 0; q < 2; q++)
#pragma unroll
        for (int c = 0; c < CN; c++) {
            float acc = h3[q][c] * x2_yb<T>(Q, 3);
            acc = (Q == 0 ? pm[q][c] : h2[q][c] * x2_yb<T>(Q, 2)) + acc;
            acc = (Q == 1 ? pm[q][c] : h1[q][c] * x2_yb<T>(Q, 1)) + acc;
            acc = h0[q][c] * x2_yb<T>(Q, 0) + acc;
            out[q * CN + c] = sizeof(T) == 1 ? (unsigned)__float2int_rn(acc) : cvt_sat(acc, false);
        }
    if (sizeof(T) == 2) {
        store_pieces<T, 2 * CN, U>(drow, out);
    } else if (U == 2) { /* 2 * CN bytes in pieces of 2 */
#pragma unroll
        for (int i = 0; i < CN; i++)
            ((unsigned short *)drow)[i] =
                (unsigned short)pack_u8x2((int)out[2 * i + 1], (int)out[2 * i], 0);
    } else { /* U = 4 or 8: 2 * CN bytes in words */
        unsigned w[2 * CN / 4 > 0 ? 2 * CN / 4 : 1];
#pragma unroll
        for (int i = 0; i < 2 * CN / 4; i++)
            w[i] = pack_u8x2((int)out[4 * i + 1], (int)out[4 * i],
                             pack_u8x2((int)out[4 * i + 3], (int)out[4 * i + 2], 0));
        if (U == 8) /* CN = 4 */
            *(uint2 *)drow = make_uint2(w[0], w[(2 * CN / 4) - 1]);
        else
            *(unsigned *)drow = w[0];
    }
}

/* row0: the staged row (block-relative) of the first period's row k-2; col0: the byte
 * offset of the thread's window in a staged row. */
template <typename T, int CN, int U>
__device__ __forceinline__ void
x2_hot_loop(const stage &g, int row0, int col0, T *drow, size_t dstride, int nper)
{
    const unsigned char *base = g.base + col0;
    int rp = row0 * g.pitch, lo = (g.lo0 + row0 * g.slo) & 15;
    float h[4][2][CN];
#define X2_NEXT_ROW(slot)                                                                          \
    do {                                                                                           \
        x2_hrow<T, CN>(h[slot], (const T *)(base + rp + lo));                                      \
        rp += g.pitch;                                                                             \
        lo = (lo + g.slo) & 15;                                                                    \
    } while (0)
    /* rows k-2 .. k+1 of the first period in slots 1, 2, 3, 0 */
    X2_NEXT_ROW(1);
    X2_NEXT_ROW(2);
    X2_NEXT_ROW(3);
    X2_NEXT_ROW(0);
    int p = 0;
#define X2_PERIOD(M)                                                                               \
    do {                                                                                           \
        if (p >= nper)                                                                             \
            return;                                                                                \
        float pm[2][CN];                                                                           \
        _Pragma("unroll") for (int q = 0; q < 2; q++)                                              \
            _Pragma("unroll") for (int c = 0; c < CN; c++) pm[q][c] =                              \
                h[((M) + 3) & 3][q][c] * x2_yb<T>(0, 2);                                           \
        x2_emit<T, CN, U, 0>(h[((M) + 1) & 3], h[((M) + 2) & 3], h[((M) + 3) & 3], h[M], pm,       \
                             drow);                                                                \
        drow += dstride;                                                                           \
        X2_NEXT_ROW(((M) + 1) & 3);                                                                \
        x2_emit<T, CN, U, 1>(h[((M) + 2) & 3], h[((M) + 3) & 3], h[M], h[((M) + 1) & 3], pm,       \
                             drow);                                                                \
        drow += dstride;                                                                           \
        p++;                                                                                       \
    } while (0)
    for (;;) {
        X2_PERIOD(0);
        X2_PERIOD(1);
        X2_PERIOD(2);
        X2_PERIOD(3);
    }
#undef X2_PERIOD
#undef X2_NEXT_ROW
}

/* One thread per column period: it loads the five window pixels of a source row once and
 * makes the S horizontal sums from them (the generic kernel loads four taps per output: at
 * x2 that is 12 loads per source row and pixel instead of 7.5). Rows go by periods too:
 * per row period k the rows whose taps start at k-2 come first, then one new source row
 * enters the four rows of sums kept in registers, then the rows whose taps start at k-1.
 * The roles of the four registers rotate with the loop unrolled by four, so no value
 * moves, and no per-row test is needed to know when to slide. Block: 256 column periods
 * (256*S columns) by P row periods, both aligned to S in global coordinates; outputs
 * outside the tile are computed from clamped taps and not stored. Same operations in the
 * same order as the generic kernel, so the same bits. */
#ifndef HC_PHASE_MINB
#define HC_PHASE_MINB(S, CN) ((S) * (CN) <= 6 ? 3 : 2)
#endif
template <typename T, int CN, int S>
__global__ void __launch_bounds__(256, HC_PHASE_MINB(S, CN)) bicubic_phase_kernel(tile_args a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ __align__(16) float s_yb[BY_MAX][4];
    __shared__ int s_yib[BY_MAX][4];

    const int tid = threadIdx.y * 16 + threadIdx.x;
    const int gx_a = a.out_x - a.out_x % S + blockIdx.x * 256 * S; /* block's first column */
    const int gy_a = a.out_y - a.out_y % S + blockIdx.y * a.by;    /* and row; a.by = P * S */
    const int out_end = a.out_x + a.out_w, outy_end = a.out_y + a.out_h;
    const int ox0 = max(gx_a, a.out_x), ox1 = min(gx_a + 256 * S, out_end) - 1;
    const int oy0 = max(gy_a, a.out_y), oy1 = min(gy_a + a.by, outy_end) - 1;
    const bool u8 = sizeof(T) == 1;

    int cx0, cx1, ry0, ry1;
    tap_span(ox0, ox1, a.inv_scale, a.image_w, &cx0, &cx1);
    tap_span(oy0, oy1, a.inv_scale, a.image_h, &ry0, &ry1);
    const int sw = cx1 - cx0 + 1, sh = ry1 - ry0 + 1;
    const int srowe = sw * CN;

    phase_ctx<T, CN, S> x;
    if (tid < a.by)
        (void)row_weights(gy_a + tid, a.inv_scale, u8, s_yib[tid], s_yb[tid]);
    x.g = stage_source<T, CN>(a, ry0, cx0, sh, srowe * (int)sizeof(T), smem, tid);

    /* The thread's column period, its window and its outputs' weights. A window column
     * outside the staged rectangle only feeds outputs that are never stored: clamp it in. */
    const int gx0 = gx_a + S * tid;
    const int k = gx0 / S;
    bool any = false;
    x.fast = true;
#pragma unroll
    for (int j = 0; j < 5; j++)
        x.col[j] = (clampi(clampi(k - 2 + j, 0, a.image_w - 1), cx0, cx1) - cx0) * CN;
#pragma unroll
    for (int q = 0; q < S; q++) {
        const int gx = gx0 + q;
        int ix;
        float t, c[4];
        x.valid[q] = gx >= a.out_x && gx < out_end;
        any |= x.valid[q];
        x.fast = x.fast && x.valid[q] && (long)gx * CN + CN <= a.simd_end;
        hc_bicubic_map_inv(gx, a.inv_scale, &ix, &t);
        hc_bicubic_coeffs(t, c);
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            /* the same values at x2, as constants (see x2_coeff) */
            x.ia[q][kk] = S == 2 ? x2_q11(q, kk) : hc_bicubic_q11(c[kk]);
            x.w[q][kk] = S == 2 ? x2_coeff(q, kk) : c[kk];
        }
    }
    __syncthreads();
    if (!any)
        return; /* no barrier after this point */

    x.ry0 = ry0;
    x.ry1 = ry1;
    x.image_h = a.image_h;
    x.kb0 = gy_a / S;     /* the block's first row period */
    x.rlo = oy0 - gy_a;   /* first local row that is stored */
    x.nrows = oy1 - gy_a; /* last */
    x.gx0 = gx0;
    x.simd_end = a.simd_end;
    x.dstride = (size_t)a.out_w * CN;
    x.yb = s_yb;
    x.yib = s_yib;

    T *drow = (T *)a.dst + ((long)(gy_a - a.out_y) * a.out_w + (gx0 - a.out_x)) * CN;
    constexpr int B = S * CN * (int)sizeof(T);
    constexpr int UB = B % 16 == 0 ? 16 : B % 8 == 0 ? 8 : B % 4 == 0 ? 4 : B % 2 == 0 ? 2 : 1;
    const int unit =
        store_unit<B>((const T *)a.dst + ((long)(oy0 - a.out_y) * a.out_w + (gx0 - a.out_x)) * CN,
                      x.dstride * sizeof(T));
    const bool all_rows = x.rlo == 0 && x.nrows == a.by - 1; /* every row of the block stored */
    if (S == 2 && all_rows && x.fast && unit == UB && x.kb0 - 2 >= ry0 &&
        x.kb0 + a.by / S + 1 <= ry1 && k - 2 >= cx0 && k + 2 <= cx1) {
        x2_hot_loop<T, CN, UB>(x.g, x.kb0 - 2 - ry0, (k - 2 - cx0) * CN * (int)sizeof(T), drow,
                               x.dstride, a.by / S);
        return;
    }

    /* rows k-2 .. k+1 of the first period in slots 1, 2, 3, 0 */
    float h[4][S][CN];
    phase_hrow<T, CN, S>(h[1], phase_src_row(x, x.kb0 - 2), x.col, x.ia, x.w);
    phase_hrow<T, CN, S>(h[2], phase_src_row(x, x.kb0 - 1), x.col, x.ia, x.w);
    phase_hrow<T, CN, S>(h[3], phase_src_row(x, x.kb0), x.col, x.ia, x.w);
    phase_hrow<T, CN, S>(h[0], phase_src_row(x, x.kb0 + 1), x.col, x.ia, x.w);

    if (all_rows) {
        if (unit == UB)
            phase_loop<T, CN, S, UB, false>(x, h, drow, a.by / S);
        else
            phase_loop<T, CN, S, 1, false>(x, h, drow, a.by / S);
    } else {
        phase_loop<T, CN, S, 1, true>(x, h, drow, a.by / S);
    }
}

/* ---- host side ---------------------------------------------------------------------- */

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            rc = hc_error(-EIO, "cuda", "%s: %s", #call, cudaGetErrorString(e_));                  \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

struct slot {
    int dev;
    int busy;
    cudaStream_t stream;
    uint8_t *h_in, *h_out, *d_in, *d_out;
    size_t in_cap, out_cap;
};

struct hc_cuda {
    int ndev;
    char (*names)[256];
    int *dev_busy; /* slots in use per device */
    struct slot *slots;
    int nslots;
    pthread_mutex_t lock;
    pthread_cond_t freed;
};

/* Shared memory of one block: the source rectangle of bx x by outputs at this scale. */
static size_t
smem_bytes(int bx, int scale, int channels, int depth, int by)
{
    const int w = (bx - 1) / scale + 5, h = (by - 1) / scale + 5;
    return (size_t)h * (size_t)stage_pitch(w * channels * (depth / 8));
}

/* Rows per block: BY_MAX, halved until the block's source rectangle fits. */
static int
rows_per_block(int bx, int scale, int channels, int depth)
{
    int by = BY_MAX;
    while (by > 8 && smem_bytes(bx, scale, channels, depth, by) > SMEM_MAX)
        by /= 2;
    return by;
}

template <typename K>
static cudaError_t
allow_smem_one(K kernel)
{
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_MAX);
}

template <typename T, int C>
static cudaError_t
allow_smem_layout(void)
{
    cudaError_t e = allow_smem_one(bicubic_kernel<T, C>);
    if (e == cudaSuccess)
        e = allow_smem_one(bicubic_phase_kernel<T, C, 2>);
    return e;
}

/* Lets every instantiation use more than the default 48 KB of dynamic shared memory. */
static int
allow_smem(void)
{
    int rc = 0;
    CK((allow_smem_layout<uint8_t, 1>()));
    CK((allow_smem_layout<uint8_t, 2>()));
    CK((allow_smem_layout<uint8_t, 3>()));
    CK((allow_smem_layout<uint8_t, 4>()));
    CK((allow_smem_layout<uint16_t, 1>()));
    CK((allow_smem_layout<uint16_t, 2>()));
    CK((allow_smem_layout<uint16_t, 3>()));
    CK((allow_smem_layout<uint16_t, 4>()));
out:
    return rc;
}

/* The per-scale kernel's tap pattern (phase_j0) against hc_bicubic_map_inv for output
 * columns (or rows) [x0, x1) at scale sc. */
static bool
phase_holds(int sc, long x0, long x1)
{
    const double inv = 1.0 / sc;
    for (long gx = x0; gx < x1; gx++) {
        int ix;
        float t;
        hc_bicubic_map_inv((int)gx, inv, &ix, &t);
        if (ix != (int)(gx / sc) - 1 + (2 * (int)(gx % sc) + 1 < sc ? 0 : 1))
            return false;
    }
    return true;
}

/* phase_scale[s]: the pattern holds for every column (and row) of images up to
 * PHASE_CHECKED pixels a side at scale s (checked once, ~1 ms). The kernel's shared-memory
 * size and its safety rest on it (a block's window spans at most 260 staged columns). */
#define PHASE_CHECKED 65536L
/* The kernel is written for any integer scale; it is instantiated for x2 only. On the H100
 * it beat the generic kernel at x2 (RGB 0.112 vs 0.124 ms on 3840x2160, RGBA 0.158 vs
 * 0.171) but not at x4 (RGB 0.100 vs 0.093 ms on 1920x1080), where S outputs per thread
 * cost registers and occupancy; x3 was not compared. */
#define PHASE_MAX_SCALE 2
/* Rows per block of the per-scale kernel. Fewer rows make more, shorter blocks: more
 * staging and first rows per output, but a shorter tail when the last blocks run alone. On
 * the H100, 3840x2160 RGB x2: 32 rows 0.075 ms, 64 rows 0.077 ms. */
#ifndef HC_PHASE_BY
#define HC_PHASE_BY 32
#endif
#define PHASE_BY HC_PHASE_BY
static bool phase_scale[PHASE_MAX_SCALE + 1];
static pthread_once_t phase_once = PTHREAD_ONCE_INIT;
static volatile int force_generic;

/* The x2 kernel's constant weights (x2_coeff, x2_q11) against core's formulas. */
static bool
x2_weights_hold(void)
{
    for (int q = 0; q < 2; q++) {
        int ix;
        float t, c[4];
        hc_bicubic_map_inv(q, 0.5, &ix, &t);
        hc_bicubic_coeffs(t, c);
        for (int k = 0; k < 4; k++)
            if (c[k] != x2_coeff(q, k) || hc_bicubic_q11(c[k]) != x2_q11(q, k))
                return false;
    }
    return true;
}

static void
phase_check(void)
{
    for (int sc = 2; sc <= PHASE_MAX_SCALE; sc++)
        phase_scale[sc] = phase_holds(sc, 0, PHASE_CHECKED * sc) && (sc != 2 || x2_weights_hold());
}

/* The per-scale kernel's scale for tile t, or 0 for the generic kernel. */
static int
phase_for(const struct hc_wire_tile *t)
{
    const int sc = t->scale;
    const long x1 = (long)t->out.x + t->out.w, y1 = (long)t->out.y + t->out.h;
    const long lim = PHASE_CHECKED * sc;

    pthread_once(&phase_once, phase_check);
    if (force_generic || sc < 2 || sc > PHASE_MAX_SCALE || !phase_scale[sc])
        return 0;
    /* Outputs past the checked range (images over 65536 pixels a side) take the generic
     * kernel: checking their columns per tile would cost millions of steps on the host. */
    if (x1 > lim || y1 > lim)
        return 0;
    return sc;
}

extern "C" void
hc_cuda_force_generic(int on)
{
    force_generic = on;
}

template <typename T, int C>
static void
launch_layout(const tile_args &a, int phase, dim3 grid, size_t smem, cudaStream_t st)
{
    const dim3 block(16, 16);
    switch (phase) {
    case 2:
        bicubic_phase_kernel<T, C, 2><<<grid, block, smem, st>>>(a);
        break;
    default:
        bicubic_kernel<T, C><<<grid, block, smem, st>>>(a);
    }
}

static int
launch(const struct hc_wire_tile *t, const uint8_t *d_src, uint8_t *d_dst, cudaStream_t st)
{
    tile_args a;
    int rc = 0;

    a.src = d_src;
    a.dst = d_dst;
    a.image_w = (int)t->image_w;
    a.image_h = (int)t->image_h;
    a.scale = t->scale;
    a.cn = t->channels;
    a.inv_scale = 1.0 / t->scale;
    a.src_x = t->src.x;
    a.src_y = t->src.y;
    a.src_w = t->src.w;
    a.src_h = t->src.h;
    a.out_x = t->out.x;
    a.out_y = t->out.y;
    a.out_w = t->out.w;
    a.out_h = t->out.h;
    a.simd_end = (long)t->image_w * t->scale * t->channels / 8 * 8;
    const int phase = phase_for(t);
    /* columns per block; the per-scale kernel's blocks start at a multiple of the scale */
    const int bx = phase ? 256 * phase : BX;
    const int span = phase ? t->out.w + t->out.x % phase : t->out.w;
    a.by = rows_per_block(bx, t->scale, t->channels, t->depth);
    if (phase) /* whole row periods, at most PHASE_BY rows */
        a.by = std::min(a.by, PHASE_BY) / phase * phase;
    const int hspan = phase ? t->out.h + t->out.y % phase : t->out.h;
    const dim3 grid((unsigned)((span + bx - 1) / bx), (unsigned)((hspan + a.by - 1) / a.by));
    const size_t smem = smem_bytes(bx, t->scale, t->channels, t->depth, a.by);
    switch (t->channels * 100 + t->depth) {
    case 108:
        launch_layout<uint8_t, 1>(a, phase, grid, smem, st);
        break;
    case 208:
        launch_layout<uint8_t, 2>(a, phase, grid, smem, st);
        break;
    case 308:
        launch_layout<uint8_t, 3>(a, phase, grid, smem, st);
        break;
    case 408:
        launch_layout<uint8_t, 4>(a, phase, grid, smem, st);
        break;
    case 116:
        launch_layout<uint16_t, 1>(a, phase, grid, smem, st);
        break;
    case 216:
        launch_layout<uint16_t, 2>(a, phase, grid, smem, st);
        break;
    case 316:
        launch_layout<uint16_t, 3>(a, phase, grid, smem, st);
        break;
    case 416:
        launch_layout<uint16_t, 4>(a, phase, grid, smem, st);
        break;
    default:
        return hc_error(-EINVAL, "cuda", "layout %u x %u bit", t->channels, t->depth);
    }
    CK(cudaGetLastError());
out:
    return rc;
}

/* Grows a slot's buffers (pinned host, device) to hold in / out bytes. */
static int
slot_reserve(struct slot *s, size_t in, size_t out_bytes)
{
    int rc = 0;

    if (in > s->in_cap) {
        size_t cap = std::max(in, s->in_cap * 2);
        cudaFreeHost(s->h_in);
        cudaFree(s->d_in);
        s->h_in = s->d_in = NULL;
        s->in_cap = 0;
        CK(cudaHostAlloc((void **)&s->h_in, cap, cudaHostAllocDefault));
        CK(cudaMalloc((void **)&s->d_in, cap));
        s->in_cap = cap;
    }
    if (out_bytes > s->out_cap) {
        size_t cap = std::max(out_bytes, s->out_cap * 2);
        cudaFreeHost(s->h_out);
        cudaFree(s->d_out);
        s->h_out = s->d_out = NULL;
        s->out_cap = 0;
        CK(cudaHostAlloc((void **)&s->h_out, cap, cudaHostAllocDefault));
        CK(cudaMalloc((void **)&s->d_out, cap));
        s->out_cap = cap;
    }
out:
    return rc;
}

extern "C" int
hc_cuda_open(int slots, struct hc_cuda **out)
{
    struct hc_cuda *cu = NULL;
    int n = 0, rc = 0;
    cudaError_t e = cudaGetDeviceCount(&n);

    if (e != cudaSuccess || n < 1)
        return hc_error(-ENODEV, "cuda", "no CUDA device: %s",
                        e != cudaSuccess ? cudaGetErrorString(e) : "none visible");
    if (slots < 1)
        slots = 1;
    cu = (struct hc_cuda *)calloc(1, sizeof *cu);
    if (!cu)
        return hc_error(-ENOMEM, "cuda", "out of memory");
    pthread_mutex_init(&cu->lock, NULL);
    pthread_cond_init(&cu->freed, NULL);
    cu->ndev = n;
    cu->names = (char(*)[256])calloc((size_t)n, 256);
    cu->dev_busy = (int *)calloc((size_t)n, sizeof(int));
    cu->slots = (struct slot *)calloc((size_t)n * (size_t)slots, sizeof(struct slot));
    if (!cu->names || !cu->dev_busy || !cu->slots) {
        rc = hc_error(-ENOMEM, "cuda", "out of memory");
        goto out;
    }
    for (int d = 0; d < n; d++) {
        cudaDeviceProp p;
        CK(cudaSetDevice(d));
        CK(cudaGetDeviceProperties(&p, d));
        rc = allow_smem();
        if (rc)
            goto out;
        snprintf(cu->names[d], 256, "%s", p.name);
        for (int k = 0; k < slots; k++) {
            struct slot *s = &cu->slots[cu->nslots];
            s->dev = d;
            CK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
            cu->nslots++;
        }
    }
    *out = cu;
    return 0;
out:
    hc_cuda_close(cu);
    return rc;
}

extern "C" void
hc_cuda_close(struct hc_cuda *cu)
{
    if (!cu)
        return;
    for (int i = 0; i < cu->nslots; i++) {
        struct slot *s = &cu->slots[i];
        cudaSetDevice(s->dev);
        cudaStreamDestroy(s->stream);
        cudaFreeHost(s->h_in);
        cudaFreeHost(s->h_out);
        cudaFree(s->d_in);
        cudaFree(s->d_out);
    }
    free(cu->slots);
    free(cu->names);
    free(cu->dev_busy);
    pthread_cond_destroy(&cu->freed);
    pthread_mutex_destroy(&cu->lock);
    free(cu);
}

extern "C" int
hc_cuda_device_count(const struct hc_cuda *cu)
{
    return cu->ndev;
}

extern "C" const char *
hc_cuda_device_name(const struct hc_cuda *cu, int i)
{
    return i >= 0 && i < cu->ndev ? cu->names[i] : "?";
}

/* Takes the free slot of the least busy device, waiting while every slot is taken. */
static struct slot *
slot_get(struct hc_cuda *cu)
{
    struct slot *best = NULL;

    pthread_mutex_lock(&cu->lock);
    for (;;) {
        for (int i = 0; i < cu->nslots; i++) {
            struct slot *s = &cu->slots[i];
            if (!s->busy && (!best || cu->dev_busy[s->dev] < cu->dev_busy[best->dev]))
                best = s;
        }
        if (best)
            break;
        pthread_cond_wait(&cu->freed, &cu->lock);
    }
    best->busy = 1;
    cu->dev_busy[best->dev]++;
    pthread_mutex_unlock(&cu->lock);
    return best;
}

static void
slot_put(struct hc_cuda *cu, struct slot *s)
{
    pthread_mutex_lock(&cu->lock);
    s->busy = 0;
    cu->dev_busy[s->dev]--;
    pthread_cond_signal(&cu->freed);
    pthread_mutex_unlock(&cu->lock);
}

/* Offsets of tiles in the slot's buffers are rounded up to this, so that 16-bit tiles after
 * an odd-sized 8-bit tile stay aligned (and copies start on whole cache lines). */
#define TILE_ALIGN 256
/* Slack after a buffer's last tile: staging reads whole 16-byte pieces (stage_source). */
#define STAGE_OVERREAD 32

static size_t
align_up(size_t v)
{
    return (v + TILE_ALIGN - 1) & ~(size_t)(TILE_ALIGN - 1);
}

extern "C" int
hc_cuda_run(struct hc_cuda *cu, const struct hc_wire_tile *tiles, const uint8_t *const *src,
            uint8_t *const *dst, size_t n, int *device)
{
    struct slot *s = slot_get(cu);
    size_t in = 0, outb = 0, io = 0, oo = 0;
    int rc = 0;

    *device = s->dev;
    for (size_t i = 0; i < n; i++) {
        in += align_up(hc_wire_src_bytes(&tiles[i]));
        outb += align_up(hc_wire_out_bytes(&tiles[i]));
    }
    CK(cudaSetDevice(s->dev));
    rc = slot_reserve(s, in + STAGE_OVERREAD, outb);
    if (rc)
        goto out;
    /* Copies and kernels are queued per tile on this request's stream, so a batch's first
     * tiles compute while later ones are still being staged. */
    for (size_t i = 0; i < n; i++) {
        size_t bi = hc_wire_src_bytes(&tiles[i]), bo = hc_wire_out_bytes(&tiles[i]);
        memcpy(s->h_in + io, src[i], bi);
        CK(cudaMemcpyAsync(s->d_in + io, s->h_in + io, bi, cudaMemcpyHostToDevice, s->stream));
        rc = launch(&tiles[i], s->d_in + io, s->d_out + oo, s->stream);
        if (rc)
            goto out;
        CK(cudaMemcpyAsync(s->h_out + oo, s->d_out + oo, bo, cudaMemcpyDeviceToHost, s->stream));
        io += align_up(bi);
        oo += align_up(bo);
    }
    CK(cudaStreamSynchronize(s->stream));
    oo = 0;
    for (size_t i = 0; i < n; i++) {
        size_t b = hc_wire_out_bytes(&tiles[i]);
        memcpy(dst[i], s->h_out + oo, b);
        oo += align_up(b);
    }
out:
    if (rc) /* leave the stream clean for the slot's next user */
        cudaStreamSynchronize(s->stream);
    slot_put(cu, s);
    return rc;
}

extern "C" int
hc_cuda_ping(struct hc_cuda *cu)
{
    int rc = 0;

    for (int d = 0; d < cu->ndev; d++) {
        size_t fr, tot;
        CK(cudaSetDevice(d));
        CK(cudaMemGetInfo(&fr, &tot));
    }
out:
    return rc;
}

static double
median(std::vector<float> &v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

extern "C" int
hc_cuda_bench(int w, int h, int channels, int depth, int scale, int iters, double *kernel_ms,
              double *copy_ms)
{
    struct hc_wire_tile t;
    uint8_t *d_in = NULL, *d_out = NULL, *d_copy = NULL, *hbuf = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    std::vector<float> tk, tc;
    size_t in, outb;
    int rc = 0;

    memset(&t, 0, sizeof t);
    t.image_w = (uint32_t)w;
    t.image_h = (uint32_t)h;
    t.out = {0, 0, w * scale, h * scale};
    t.src = {0, 0, w, h};
    t.channels = (uint8_t)channels;
    t.depth = (uint8_t)depth;
    t.scale = (uint8_t)scale;
    t.filter = 1;
    in = hc_wire_src_bytes(&t);
    outb = hc_wire_out_bytes(&t);
    CK(cudaSetDevice(0));
    rc = allow_smem();
    if (rc)
        goto out;
    CK(cudaMalloc((void **)&d_in, in + STAGE_OVERREAD));
    CK(cudaMalloc((void **)&d_out, outb));
    CK(cudaMalloc((void **)&d_copy, outb));
    hbuf = (uint8_t *)malloc(in);
    if (!hbuf) {
        rc = hc_error(-ENOMEM, "cuda", "out of memory");
        goto out;
    }
    srand(1);
    for (size_t i = 0; i < in; i++)
        hbuf[i] = (uint8_t)(rand() >> 7);
    CK(cudaMemcpy(d_in, hbuf, in, cudaMemcpyHostToDevice));
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) { /* warm-up */
        rc = launch(&t, d_in, d_out, 0);
        if (rc)
            goto out;
        CK(cudaMemcpyAsync(d_copy, d_out, outb, cudaMemcpyDeviceToDevice, 0));
    }
    CK(cudaDeviceSynchronize());
    for (int i = 0; i < iters; i++) {
        float ms;
        CK(cudaEventRecord(e0, 0));
        rc = launch(&t, d_in, d_out, 0);
        if (rc)
            goto out;
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
        tk.push_back(ms);
        CK(cudaEventRecord(e0, 0));
        CK(cudaMemcpyAsync(d_copy, d_out, outb, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
        tc.push_back(ms);
    }
    *kernel_ms = median(tk);
    *copy_ms = median(tc);
out:
    free(hbuf);
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(d_in);
    cudaFree(d_out);
    cudaFree(d_copy);
    return rc;
}
