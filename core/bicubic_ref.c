/* bicubic_ref.c: the straightforward reference of hc_bicubic_resize: one output sample at a
 * time, positions and weights recomputed for every pixel, no plan, no threads, no SIMD.
 * Slow on purpose; tests compare the fast path with it. */
#include <string.h>

#include "bicubic.h"
#include "bicubic_simd.h"

static int
clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static unsigned
sample(const struct hc_view *v, int x, int y, int c)
{
    const uint8_t *p = hc_view_at(v, x, y);
    if (v->depth == 8)
        return p[c];
    uint16_t s;
    memcpy(&s, p + 2 * c, 2);
    return s;
}

int
hc_bicubic_resize_ref(const struct hc_view *src, int src_w, int src_h, int scale,
                      struct hc_view *dst)
{
    int rc = hc_bicubic_check(src, src_w, src_h, scale, dst);
    if (rc)
        return rc;
    int cn = dst->channels;
    long row_elems = (long)src_w * scale * cn; /* the whole output row, as OpenCV sees it */
    int simd_end = hc_bicubic_simd_end(row_elems);

    for (int y = dst->y; y < dst->y + dst->h; y++) {
        int iy;
        float ty, cy[4];
        hc_bicubic_map(y, scale, &iy, &ty);
        hc_bicubic_coeffs(ty, cy);
        int rows[4];
        for (int k = 0; k < 4; k++)
            rows[k] = clampi(iy - 1 + k, 0, src_h - 1);

        for (int x = dst->x; x < dst->x + dst->w; x++) {
            int ix;
            float tx, cx[4];
            hc_bicubic_map(x, scale, &ix, &tx);
            hc_bicubic_coeffs(tx, cx);
            int cols[4];
            for (int k = 0; k < 4; k++)
                cols[k] = clampi(ix - 1 + k, 0, src_w - 1);
            uint8_t *out = hc_view_at(dst, x, y);

            for (int c = 0; c < cn; c++) {
                long e = (long)x * cn + c;
                if (dst->depth == 8) {
                    int16_t a[4], ib[4];
                    float b[4];
                    int32_t h[4];
                    for (int k = 0; k < 4; k++) {
                        a[k] = hc_bicubic_q11(cx[k]);
                        ib[k] = hc_bicubic_q11(cy[k]);
                        b[k] = (float)ib[k] * (1.0f / (2048.0f * 2048.0f));
                    }
                    for (int r = 0; r < 4; r++) {
                        h[r] = 0;
                        for (int k = 0; k < 4; k++)
                            h[r] += a[k] * (int32_t)sample(src, cols[k], rows[r], c);
                    }
                    out[c] = e < simd_end ? hc_bc_v8_float((float)h[0], (float)h[1], (float)h[2],
                                                           (float)h[3], b)
                                          : hc_bc_v8_int(h[0], h[1], h[2], h[3], ib);
                } else {
                    float h[4];
                    for (int r = 0; r < 4; r++) {
                        float v = (float)sample(src, cols[0], rows[r], c) * cx[0];
                        for (int k = 1; k < 4; k++)
                            v = v + (float)sample(src, cols[k], rows[r], c) * cx[k];
                        h[r] = v;
                    }
                    uint16_t o = e < simd_end ? hc_bc_v16_simd(h[0], h[1], h[2], h[3], cy)
                                              : hc_bc_v16_tail(h[0], h[1], h[2], h[3], cy);
                    memcpy(out + 2 * c, &o, 2);
                }
            }
        }
    }
    return 0;
}
