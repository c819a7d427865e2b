/* test_tile: tile geometry against a brute force over the filter's taps, the tile grid's
 * coverage, and extract/paste of every SIMD level against the scalar kernel. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cpu.h"
#include "error.h"
#include "tile.h"
#include "tile_simd.h"

/* The taps one output index reads, from the mapping as shared/DESIGN.md writes it (written
 * out here, not taken from core/). */
static void
taps(int d, int scale, int n, int *lo, int *hi)
{
    float f = (float)((d + 0.5) * (1.0 / scale) - 0.5);
    int i = (int)f;
    if ((float)i > f)
        i--; /* floor */
    *lo = i - 1 < 0 ? 0 : i - 1 > n - 1 ? n - 1 : i - 1;
    *hi = i + 2 > n - 1 ? n - 1 : i + 2 < 0 ? 0 : i + 2;
}

static void
test_src_rect(void)
{
    for (int it = 0; it < 20000; it++) {
        int scale = hc_test_rand_in(1, 8);
        int sw = it % 7 == 0 ? hc_test_rand_in(1, 3) : hc_test_rand_in(1, 3000),
            sh = hc_test_rand_in(1, 500);
        int dw = sw * scale, dh = sh * scale;
        struct hc_rect out;
        out.x = hc_test_rand_in(0, dw - 1);
        out.y = hc_test_rand_in(0, dh - 1);
        out.w = hc_test_rand_in(1, dw - out.x);
        out.h = hc_test_rand_in(1, dh - out.y);
        if (it % 3 == 0 && out.w > 40)
            out.w = hc_test_rand_in(1, 40);
        int x0 = sw, x1 = -1, y0 = sh, y1 = -1;
        for (int x = out.x; x < out.x + out.w; x++) {
            int lo, hi;
            taps(x, scale, sw, &lo, &hi);
            x0 = lo < x0 ? lo : x0;
            x1 = hi > x1 ? hi : x1;
        }
        for (int y = out.y; y < out.y + out.h; y++) {
            int lo, hi;
            taps(y, scale, sh, &lo, &hi);
            y0 = lo < y0 ? lo : y0;
            y1 = hi > y1 ? hi : y1;
        }
        struct hc_rect s;
        hc_tile_src_rect(sw, sh, scale, &out, &s);
        HC_CHECK_MSG(s.x == x0 && s.w == x1 - x0 + 1 && s.y == y0 && s.h == y1 - y0 + 1,
                     "scale %d img %dx%d out %d,%d %dx%d: got %d,%d %dx%d want %d,%d %dx%d", scale,
                     sw, sh, out.x, out.y, out.w, out.h, s.x, s.y, s.w, s.h, x0, y0, x1 - x0 + 1,
                     y1 - y0 + 1);
    }
    /* The halo at integer scales is 2 source pixels inside the image (DESIGN). */
    struct hc_rect out = {64, 64, 64, 64}, s;
    hc_tile_src_rect(1000, 1000, 2, &out, &s);
    HC_CHECK(s.x == 30 && s.w == 36 && s.y == 30 && s.h == 36);
}

static void
test_grid(void)
{
    int sizes[] = {1, 2, 3, 5, 7, 16, 17, 64, 255, 256, 512, 0, -1};
    for (int it = 0; it < 200; it++) {
        int dw = hc_test_rand_in(1, 700), dh = hc_test_rand_in(1, 300);
        int tile = sizes[it % (int)(sizeof(sizes) / sizeof(sizes[0]))];
        if (tile == 1 && dw * dh > 20000)
            dw = 100, dh = 50;
        int n = hc_tile_count(dw, dh, tile);
        HC_CHECK(n >= 1);
        uint8_t *cov = calloc((size_t)dw * dh, 1);
        HC_CHECK(cov);
        for (int i = 0; i < n; i++) {
            struct hc_rect r;
            hc_tile_rect(dw, dh, tile, i, &r);
            HC_CHECK(r.w >= 1 && r.h >= 1 && r.x >= 0 && r.y >= 0);
            HC_CHECK(r.x + r.w <= dw && r.y + r.h <= dh);
            if (tile > 0)
                HC_CHECK(r.w <= tile && r.h <= tile);
            for (int y = r.y; y < r.y + r.h; y++)
                for (int x = r.x; x < r.x + r.w; x++)
                    cov[(size_t)y * dw + x]++;
        }
        for (size_t i = 0; i < (size_t)dw * dh; i++)
            HC_CHECK_MSG(cov[i] == 1, "pixel %zu covered %d times (%dx%d tile %d)", i, cov[i], dw,
                         dh, tile);
        free(cov);
    }
    HC_CHECK_EQ(hc_tile_count(0, 10, 16), 0);
    HC_CHECK_EQ(hc_tile_count(10, 10, 0), 1);
}

static void
test_copy_levels(void)
{
    const enum hc_simd levels[] = {HC_SIMD_SSE2, HC_SIMD_AVX2, HC_SIMD_NEON};
    int tested = 0;
    for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++) {
        const struct hc_tile_kernels *k = hc_tile_kernels_for(levels[l]);
        if (!k)
            continue;
        tested++;
        for (int it = 0; it < 3000; it++) {
            size_t row = (size_t)(it < 300 ? it : hc_test_rand_in(1, 3000));
            int rows = hc_test_rand_in(1, 9);
            size_t sst = row + (size_t)hc_test_rand_in(0, 40),
                   dst_st = row + (size_t)hc_test_rand_in(0, 40);
            size_t soff = (size_t)hc_test_rand_in(0, 31), doff = (size_t)hc_test_rand_in(0, 31);
            size_t ssz = soff + sst * (size_t)rows + 64, dsz = doff + dst_st * (size_t)rows + 64;
            uint8_t *s = malloc(ssz), *a = malloc(dsz), *b = malloc(dsz);
            HC_CHECK(s && a && b);
            for (size_t i = 0; i < ssz; i++)
                s[i] = (uint8_t)hc_test_rand();
            for (size_t i = 0; i < dsz; i++)
                a[i] = b[i] = (uint8_t)hc_test_rand();
            hc_tile_kernels_scalar.copy(a + doff, dst_st, s + soff, sst, row, rows);
            k->copy(b + doff, dst_st, s + soff, sst, row, rows);
            HC_CHECK_MSG(memcmp(a, b, dsz) == 0, "%s: row %zu rows %d", hc_simd_name(levels[l]),
                         row, rows);
            /* and scalar itself against a plain memcpy per row (guards untouched) */
            for (int r = 0; r < rows; r++)
                HC_CHECK(memcmp(a + doff + (size_t)r * dst_st, s + soff + (size_t)r * sst, row) ==
                         0);
            free(s);
            free(a);
            free(b);
        }
        fprintf(stderr, "tile copy: %s == scalar\n", hc_simd_name(levels[l]));
    }
    if (!tested)
        fprintf(stderr, "tile copy: no SIMD level on this machine, scalar only\n");
}

static void
test_extract_paste(void)
{
    for (int it = 0; it < 500; it++) {
        int cn = hc_test_rand_in(1, 4), depth = it % 2 ? 8 : 16, bpp = cn * depth / 8;
        int w = hc_test_rand_in(1, 300), h = hc_test_rand_in(1, 60);
        int vx = hc_test_rand_in(0, 50), vy = hc_test_rand_in(0, 50);
        size_t stride = (size_t)w * bpp + (size_t)hc_test_rand_in(0, 20);
        uint8_t *img = malloc(stride * h), *canvas = malloc(stride * h), *orig = malloc(stride * h);
        HC_CHECK(img && canvas && orig);
        for (size_t i = 0; i < stride * h; i++) {
            img[i] = (uint8_t)hc_test_rand();
            canvas[i] = orig[i] = (uint8_t)hc_test_rand();
        }
        struct hc_view v = {img, stride, vx, vy, w, h, cn, depth};
        struct hc_view c = {canvas, stride, vx, vy, w, h, cn, depth};
        struct hc_rect r;
        r.x = vx + hc_test_rand_in(0, w - 1);
        r.y = vy + hc_test_rand_in(0, h - 1);
        r.w = hc_test_rand_in(1, vx + w - r.x);
        r.h = hc_test_rand_in(1, vy + h - r.y);
        size_t pst = (size_t)r.w * bpp + (size_t)hc_test_rand_in(0, 9);
        uint8_t *pk = malloc(pst * r.h);
        HC_CHECK(pk);
        hc_tile_extract(&v, &r, pk, pst);
        for (int y = 0; y < r.h; y++)
            HC_CHECK(memcmp(pk + y * pst,
                            img + (size_t)(r.y - vy + y) * stride + (size_t)(r.x - vx) * bpp,
                            (size_t)r.w * bpp) == 0);
        hc_tile_paste(&c, &r, pk, pst);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int in = x + vx >= r.x && x + vx < r.x + r.w && y + vy >= r.y && y + vy < r.y + r.h;
                const uint8_t *want = (in ? img : orig) + (size_t)y * stride + (size_t)x * bpp;
                HC_CHECK(memcmp(canvas + (size_t)y * stride + (size_t)x * bpp, want, bpp) == 0);
            }
        free(pk);
        free(img);
        free(canvas);
        free(orig);
    }
}

/* hc_error/hc_error_restore may be handed hc_last_error() itself, to wrap or keep a reason
 * (core/error.h does not forbid it, and it is the natural way to write it). */
static void
test_error_nesting(void)
{
    hc_error(-EIO, "inner", "disk %d failed", 3);
    HC_CHECK_EQ(hc_error(-EINVAL, "outer", "job failed: %s", hc_last_error()), -EINVAL);
    HC_CHECK(strcmp(hc_last_error(), "outer: job failed: inner: disk 3 failed") == 0);
    HC_CHECK_EQ(hc_error_restore(-EPERM, hc_last_error()), -EPERM);
    HC_CHECK(strcmp(hc_last_error(), "outer: job failed: inner: disk 3 failed") == 0);
    hc_error_clear();
    HC_CHECK(hc_last_error()[0] == '\0');
}

int
main(void)
{
    fprintf(stderr, "level in use: %s\n", hc_simd_name(hc_cpu_level()));
    test_src_rect();
    test_grid();
    test_copy_levels();
    test_extract_paste();
    test_error_nesting();
    fprintf(stderr, "test_tile: ok\n");
    return 0;
}
