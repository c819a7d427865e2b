/* bicubic_neon.c: NEON kernels (arm64, Apple silicon first). Horizontal 8 bit: tbl gathers
 * the 4 taps of each output sample from one 16-byte load (index 0x80 gives 0, which also
 * zero-extends to 16 bit), widening multiplies by the Q11 weights and pairwise adds make
 * the exact int32 sums. Vertical: float with separate multiply and add (never fmla: a fused
 * multiply-add rounds differently from OpenCV's x86 code) and round-half-even conversion. */
#include <arm_neon.h>
#include <string.h>

#include "bicubic_simd.h"

static void
h8_neon(const uint8_t *srow, const struct hc_bc_hplan *p, float *h)
{
    int b = 0;
    for (; b < p->nblk; b++) {
        uint8x16_t d = vld1q_u8(srow + p->boff[b]);
        int16x8_t g0 = vreinterpretq_s16_u8(vqtbl1q_u8(d, vld1q_u8(p->bmask + 32 * (size_t)b)));
        int16x8_t g1 =
            vreinterpretq_s16_u8(vqtbl1q_u8(d, vld1q_u8(p->bmask + 32 * (size_t)b + 16)));
        int16x8_t w0 = vld1q_s16(p->bw + 16 * (size_t)b);
        int16x8_t w1 = vld1q_s16(p->bw + 16 * (size_t)b + 8);
        int32x4_t e0 = vmull_s16(vget_low_s16(g0), vget_low_s16(w0)); /* sample 0 taps */
        int32x4_t e1 = vmull_high_s16(g0, w0);                        /* sample 1 */
        int32x4_t e2 = vmull_s16(vget_low_s16(g1), vget_low_s16(w1)); /* sample 2 */
        int32x4_t e3 = vmull_high_s16(g1, w1);                        /* sample 3 */
        int32x4_t s = vpaddq_s32(vpaddq_s32(e0, e1), vpaddq_s32(e2, e3));
        vst1q_f32(h + 4 * (size_t)b, vcvtq_f32_s32(s));
    }
    hc_bc_h8_scalar_from(srow, p, h, 4 * b);
}

static inline float32x4_t
vsum(const float *const h[4], int e, float32x4_t b0, float32x4_t b1, float32x4_t b2, float32x4_t b3)
{
    float32x4_t acc = vmulq_f32(vld1q_f32(h[3] + e), b3);
    acc = vaddq_f32(vmulq_f32(vld1q_f32(h[2] + e), b2), acc);
    acc = vaddq_f32(vmulq_f32(vld1q_f32(h[1] + e), b1), acc);
    return vaddq_f32(vmulq_f32(vld1q_f32(h[0] + e), b0), acc);
}

static void
v8_neon(const float *const h[4], const float b[4], const int16_t ib[4], uint8_t *dst, int n,
        int nfloat)
{
    float32x4_t b0 = vdupq_n_f32(b[0]), b1 = vdupq_n_f32(b[1]);
    float32x4_t b2 = vdupq_n_f32(b[2]), b3 = vdupq_n_f32(b[3]);
    int e = 0;
    for (; e + 16 <= nfloat; e += 16) {
        int32x4_t i0 = vcvtnq_s32_f32(vsum(h, e, b0, b1, b2, b3));
        int32x4_t i1 = vcvtnq_s32_f32(vsum(h, e + 4, b0, b1, b2, b3));
        int32x4_t i2 = vcvtnq_s32_f32(vsum(h, e + 8, b0, b1, b2, b3));
        int32x4_t i3 = vcvtnq_s32_f32(vsum(h, e + 12, b0, b1, b2, b3));
        int16x8_t w0 = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
        int16x8_t w1 = vcombine_s16(vqmovn_s32(i2), vqmovn_s32(i3));
        vst1q_u8(dst + e, vcombine_u8(vqmovun_s16(w0), vqmovun_s16(w1)));
    }
    for (; e + 8 <= nfloat; e += 8) {
        int32x4_t i0 = vcvtnq_s32_f32(vsum(h, e, b0, b1, b2, b3));
        int32x4_t i1 = vcvtnq_s32_f32(vsum(h, e + 4, b0, b1, b2, b3));
        vst1_u8(dst + e, vqmovun_s16(vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1))));
    }
    hc_bc_v8_scalar_from(h, b, ib, dst, n, nfloat, e);
}

static void
h16_neon(const uint8_t *srow, const struct hc_bc_hplan *p, float *h)
{
    hc_bc_kernels_scalar.h16(srow, p, h);
}

static void
v16_neon(const float *const h[4], const float b[4], uint8_t *dst, int n, int nsimd)
{
    float32x4_t b0 = vdupq_n_f32(b[0]), b1 = vdupq_n_f32(b[1]);
    float32x4_t b2 = vdupq_n_f32(b[2]), b3 = vdupq_n_f32(b[3]);
    int e = 0;
    for (; e + 8 <= nsimd; e += 8) {
        uint16x4_t lo = vqmovun_s32(vcvtnq_s32_f32(vsum(h, e, b0, b1, b2, b3)));
        uint16x4_t hi = vqmovun_s32(vcvtnq_s32_f32(vsum(h, e + 4, b0, b1, b2, b3)));
        /* byte store: 16-bit outputs may be unaligned */
        vst1q_u8(dst + 2 * (size_t)e, vreinterpretq_u8_u16(vcombine_u16(lo, hi)));
    }
    hc_bc_v16_scalar_from(h, b, dst, n, nsimd, e);
}

const struct hc_bc_kernels hc_bc_kernels_neon = {h8_neon, v8_neon, h16_neon, v16_neon};
