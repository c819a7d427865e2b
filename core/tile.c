/* tile.c: tile geometry in global coordinates, and extract/paste through the SIMD kernel
 * chosen once at start-up. */
#include "tile.h"

#include <pthread.h>

#include "bicubic_simd.h"
#include "tile_simd.h"

/* One axis of hc_tile_src_rect. The positions come from the same float mapping the filter
 * uses (hc_bicubic_map), not from exact rationals: at x3 the two disagree by one ulp near
 * integers, and the rectangle must hold exactly the taps the filter reads. */
static void
src_span(int n, int scale, int o0, int olen, int *s0, int *slen)
{
    if (olen <= 0 || n <= 0) {
        *s0 = o0 / (scale > 0 ? scale : 1);
        *slen = 0;
        return;
    }
    float t;
    int i0, i1;
    hc_bicubic_map(o0, scale, &i0, &t);
    hc_bicubic_map(o0 + olen - 1, scale, &i1, &t);
    int a = i0 - 1, b = i1 + 2;
    if (a < 0)
        a = 0;
    if (a > n - 1)
        a = n - 1;
    if (b > n - 1)
        b = n - 1;
    if (b < 0)
        b = 0;
    *s0 = a;
    *slen = b - a + 1;
}

void
hc_tile_src_rect(int src_w, int src_h, int scale, const struct hc_rect *out, struct hc_rect *src)
{
    struct hc_rect r;
    src_span(src_w, scale, out->x, out->w, &r.x, &r.w);
    src_span(src_h, scale, out->y, out->h, &r.y, &r.h);
    *src = r;
}

int
hc_tile_count(int dst_w, int dst_h, int tile)
{
    if (dst_w <= 0 || dst_h <= 0)
        return 0;
    if (tile <= 0)
        return 1;
    long cols = (dst_w + (long)tile - 1) / tile;
    long rows = (dst_h + (long)tile - 1) / tile;
    long n = cols * rows;
    return n > 0x7fffffff ? 0x7fffffff : (int)n;
}

void
hc_tile_rect(int dst_w, int dst_h, int tile, int idx, struct hc_rect *out)
{
    struct hc_rect r = {0, 0, dst_w, dst_h};
    if (tile > 0 && dst_w > 0) {
        int cols = (int)((dst_w + (long)tile - 1) / tile);
        int tx = idx % cols, ty = idx / cols;
        r.x = tx * tile;
        r.y = ty * tile;
        r.w = dst_w - r.x < tile ? dst_w - r.x : tile;
        r.h = dst_h - r.y < tile ? dst_h - r.y : tile;
        if (r.h < 0)
            r.h = 0;
    }
    *out = r;
}

const struct hc_tile_kernels *
hc_tile_kernels_for(enum hc_simd level)
{
    if (!hc_cpu_supports(level))
        return NULL;
    switch (level) {
    case HC_SIMD_SCALAR:
        return &hc_tile_kernels_scalar;
#if defined(HC_HAVE_SSE2)
    case HC_SIMD_SSE2:
        return &hc_tile_kernels_sse2;
#endif
#if defined(HC_HAVE_AVX2)
    case HC_SIMD_AVX2:
        return &hc_tile_kernels_avx2;
#endif
#if defined(HC_HAVE_NEON)
    case HC_SIMD_NEON:
        return &hc_tile_kernels_neon;
#endif
    default:
        return NULL;
    }
}

static const struct hc_tile_kernels *tile_kernels;
static pthread_once_t tile_once = PTHREAD_ONCE_INIT;

static void
tile_pick(void)
{
    tile_kernels = hc_tile_kernels_for(hc_cpu_level());
    if (!tile_kernels)
        tile_kernels = &hc_tile_kernels_scalar;
}

static const struct hc_tile_kernels *
kernels(void)
{
    pthread_once(&tile_once, tile_pick);
    return tile_kernels;
}

void
hc_tile_extract(const struct hc_view *src, const struct hc_rect *r, uint8_t *dst, size_t dst_stride)
{
    if (r->w <= 0 || r->h <= 0)
        return;
    size_t bpp = hc_pixel_bytes(src->channels, src->depth);
    kernels()->copy(dst, dst_stride, hc_view_at(src, r->x, r->y), src->stride, (size_t)r->w * bpp,
                    r->h);
}

void
hc_tile_paste(struct hc_view *dst, const struct hc_rect *r, const uint8_t *src, size_t src_stride)
{
    if (r->w <= 0 || r->h <= 0)
        return;
    size_t bpp = hc_pixel_bytes(dst->channels, dst->depth);
    kernels()->copy(hc_view_at(dst, r->x, r->y), dst->stride, src, src_stride, (size_t)r->w * bpp,
                    r->h);
}
