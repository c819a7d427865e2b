/* bicubic_scalar.c: the plain C kernels of the fast path, always built; the vector levels
 * reuse its *_from functions for their edges. */
#include <string.h>

#include "bicubic_simd.h"

static inline uint16_t
ld16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2); /* 16-bit windows may be unaligned (wire buffers) */
    return v;
}

void
hc_bc_h8_scalar_from(const uint8_t *srow, const struct hc_bc_hplan *p, float *h, int e0)
{
    int cn = p->cn;
    for (int e = e0; e < p->n; e++) {
        int x = e / cn, c = e - x * cn;
        const int32_t *o = p->xoff + 4 * x;
        const int16_t *a = p->xa + 4 * x;
        int32_t v = a[0] * srow[o[0] + c] + a[1] * srow[o[1] + c] + a[2] * srow[o[2] + c] +
                    a[3] * srow[o[3] + c];
        h[e] = (float)v;
    }
}

static void
h8_scalar(const uint8_t *srow, const struct hc_bc_hplan *p, float *h)
{
    hc_bc_h8_scalar_from(srow, p, h, 0);
}

void
hc_bc_v8_scalar_from(const float *const h[4], const float b[4], const int16_t ib[4], uint8_t *dst,
                     int n, int nfloat, int e0)
{
    int e = e0;
    for (; e < nfloat; e++)
        dst[e] = hc_bc_v8_float(h[0][e], h[1][e], h[2][e], h[3][e], b);
    for (; e < n; e++)
        dst[e] = hc_bc_v8_int((int32_t)h[0][e], (int32_t)h[1][e], (int32_t)h[2][e],
                              (int32_t)h[3][e], ib);
}

static void
v8_scalar(const float *const h[4], const float b[4], const int16_t ib[4], uint8_t *dst, int n,
          int nfloat)
{
    hc_bc_v8_scalar_from(h, b, ib, dst, n, nfloat, 0);
}

void
hc_bc_h16_scalar_from(const uint8_t *srow, const struct hc_bc_hplan *p, float *h, int e0)
{
    int cn = p->cn;
    for (int e = e0; e < p->n; e++) {
        int x = e / cn, c = e - x * cn;
        const int32_t *o = p->xoff + 4 * x;
        const float *a = p->xf + 4 * x;
        float v = (float)ld16(srow + 2 * (size_t)(o[0] + c)) * a[0];
        v = v + (float)ld16(srow + 2 * (size_t)(o[1] + c)) * a[1];
        v = v + (float)ld16(srow + 2 * (size_t)(o[2] + c)) * a[2];
        v = v + (float)ld16(srow + 2 * (size_t)(o[3] + c)) * a[3];
        h[e] = v;
    }
}

static void
h16_scalar(const uint8_t *srow, const struct hc_bc_hplan *p, float *h)
{
    hc_bc_h16_scalar_from(srow, p, h, 0);
}

void
hc_bc_v16_scalar_from(const float *const h[4], const float b[4], uint8_t *dst, int n, int nsimd,
                      int e0)
{
    int e = e0;
    for (; e < nsimd; e++) {
        uint16_t v = hc_bc_v16_simd(h[0][e], h[1][e], h[2][e], h[3][e], b);
        memcpy(dst + 2 * (size_t)e, &v, 2);
    }
    for (; e < n; e++) {
        uint16_t v = hc_bc_v16_tail(h[0][e], h[1][e], h[2][e], h[3][e], b);
        memcpy(dst + 2 * (size_t)e, &v, 2);
    }
}

static void
v16_scalar(const float *const h[4], const float b[4], uint8_t *dst, int n, int nsimd)
{
    hc_bc_v16_scalar_from(h, b, dst, n, nsimd, 0);
}

const struct hc_bc_kernels hc_bc_kernels_scalar = {h8_scalar, v8_scalar, h16_scalar, v16_scalar};
