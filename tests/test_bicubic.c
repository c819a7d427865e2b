/* test_bicubic: the fast path (every SIMD level this machine has, several thread counts)
 * against hc_bicubic_resize_ref on random images (1x1, 1xN, odd sizes, 1-4 channels, 8 and
 * 16 bit, scales 1..8), sub-rectangles computed from windows that hold exactly their padded
 * source rectangle, tiled == untiled for many tile sizes, and argument checking.
 * Set HC_TEST_QUICK=1 for fewer cases (the qemu run). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bicubic.h"
#include "bicubic_simd.h"
#define HC_TEST_SEED 0x2545F4914F6CDD1Dull
#include "check.h"
#include "cpu.h"
#include "error.h"
#include "tile.h"

struct img {
    uint8_t *px;
    struct hc_view v;
};

static struct img
img_new(int x, int y, int w, int h, int cn, int depth, int pad)
{
    struct img m;
    size_t bpp = hc_pixel_bytes(cn, depth);
    size_t stride = (size_t)w * bpp + (size_t)pad;
    m.px = malloc(stride * (size_t)(h ? h : 1) + 1);
    HC_CHECK(m.px);
    /* 16-bit images at an odd address half the time: callers may pass wire buffers */
    uint8_t *base = m.px + (pad & 1);
    struct hc_view v = {base, stride, x, y, w, h, cn, depth};
    m.v = v;
    return m;
}

/* Random content; "extreme" images use only 0 and the maximum to push every overshoot to
 * saturation, others mix smooth gradients with noise. */
static void
img_fill(struct img *m)
{
    int kind = hc_test_rand_in(0, 2);
    size_t bpp = hc_pixel_bytes(m->v.channels, m->v.depth);
    for (int y = 0; y < m->v.h; y++) {
        uint8_t *row = m->v.data + (size_t)y * m->v.stride;
        for (size_t i = 0; i < (size_t)m->v.w * bpp; i++) {
            uint8_t b = (uint8_t)hc_test_rand();
            if (kind == 1)
                b = (hc_test_rand() & 1) ? 0xff : 0;
            else if (kind == 2)
                b = (uint8_t)(i * 7 + (size_t)y * 3 + (hc_test_rand() & 15));
            row[i] = b;
        }
    }
}

static const struct hc_bc_kernels *levels[4];
static const char *level_names[4];
static int nlevels;

static void
compare(const struct hc_view *a, const struct hc_view *b, const char *what)
{
    size_t row = (size_t)a->w * hc_pixel_bytes(a->channels, a->depth);
    for (int y = 0; y < a->h; y++) {
        const uint8_t *pa = a->data + (size_t)y * a->stride, *pb = b->data + (size_t)y * b->stride;
        if (memcmp(pa, pb, row) != 0) {
            size_t i = 0;
            while (pa[i] == pb[i])
                i++;
            HC_CHECK_MSG(0, "%s: row %d byte %zu: %d != %d", what, y, i, pa[i], pb[i]);
        }
    }
}

static void
one_case(int sw, int sh, int cn, int depth, int scale)
{
    char what[256];
    struct img src = img_new(0, 0, sw, sh, cn, depth, hc_test_rand_in(0, 5));
    img_fill(&src);
    int dw = sw * scale, dh = sh * scale;
    struct img ref = img_new(0, 0, dw, dh, cn, depth, 0);
    HC_CHECK_MSG(hc_bicubic_resize_ref(&src.v, sw, sh, scale, &ref.v) == 0, "%s", hc_last_error());

    for (int l = 0; l < nlevels; l++) {
        static const int threads[] = {1, 2, 3, 0};
        for (int t = 0; t < 4; t++) {
            struct img out = img_new(0, 0, dw, dh, cn, depth, hc_test_rand_in(0, 3));
            int rc = hc_bicubic_resize_with(levels[l], &src.v, sw, sh, scale, &out.v, threads[t]);
            HC_CHECK_MSG(rc == 0, "%s", hc_last_error());
            snprintf(what, sizeof what, "%s threads %d: %dx%d c%d d%d x%d", level_names[l],
                     threads[t], sw, sh, cn, depth, scale);
            compare(&out.v, &ref.v, what);
            free(out.px);
        }
        /* a random output rectangle from a packed window of exactly its padded source rect */
        for (int k = 0; k < 3; k++) {
            struct hc_rect r, s;
            r.x = hc_test_rand_in(0, dw - 1);
            r.y = hc_test_rand_in(0, dh - 1);
            r.w = hc_test_rand_in(1, dw - r.x);
            r.h = hc_test_rand_in(1, dh - r.y);
            hc_tile_src_rect(sw, sh, scale, &r, &s);
            struct img win = img_new(s.x, s.y, s.w, s.h, cn, depth, hc_test_rand_in(0, 3));
            hc_tile_extract(&src.v, &s, win.v.data, win.v.stride);
            struct img out = img_new(r.x, r.y, r.w, r.h, cn, depth, 0);
            int rc = hc_bicubic_resize_with(levels[l], &win.v, sw, sh, scale, &out.v,
                                            hc_test_rand_in(0, 2));
            HC_CHECK_MSG(rc == 0, "%s", hc_last_error());
            struct hc_view refsub = ref.v;
            refsub.data = hc_view_at(&ref.v, r.x, r.y);
            refsub.x = r.x;
            refsub.y = r.y;
            snprintf(what, sizeof what, "%s rect %d,%d %dx%d of %dx%d c%d d%d x%d", level_names[l],
                     r.x, r.y, r.w, r.h, sw, sh, cn, depth, scale);
            compare(&out.v, &refsub, what);
            free(win.px);
            free(out.px);
        }
    }
    free(src.px);
    free(ref.px);
}

static void
test_random(int quick)
{
    int n = quick ? 60 : 400;
    for (int it = 0; it < n; it++) {
        int cn = it % 4 + 1, depth = (it / 4) % 2 ? 16 : 8, scale = it % 8 + 1;
        int sw, sh;
        switch (it % 9) {
        case 0:
            sw = 1, sh = 1;
            break;
        case 1:
            sw = 1, sh = hc_test_rand_in(1, 40);
            break;
        case 2:
            sw = hc_test_rand_in(1, 40), sh = 1;
            break;
        case 3:
            sw = hc_test_rand_in(2, 5), sh = hc_test_rand_in(2, 5);
            break;
        default:
            sw = hc_test_rand_in(1, 97), sh = hc_test_rand_in(1, 61);
            break;
        }
        one_case(sw, sh, cn, depth, scale);
    }
    /* images large enough for the threaded path (core/bicubic.c runs calls below 1 M
     * output samples inline) */
    int big = quick ? 2 : 6;
    for (int it = 0; it < big; it++) {
        int cn = it % 4 + 1, scale = it % 2 ? 2 : 3, sw = hc_test_rand_in(300, 601) | 1;
        int sh = (1200 * 1000) / (sw * cn * scale * scale) + hc_test_rand_in(1, 20);
        one_case(sw, sh, cn, it % 3 == 2 ? 16 : 8, scale);
    }
    fprintf(stderr, "random: %d cases x %d levels ok\n", n + big, nlevels);
}

/* Upscale tile by tile, each from a packed window holding exactly its padded source rect,
 * paste, and compare with one untiled call. */
static void
tiled_vs_untiled(int sw, int sh, int cn, int depth, int scale, int tile)
{
    struct img src = img_new(0, 0, sw, sh, cn, depth, 3);
    img_fill(&src);
    int dw = sw * scale, dh = sh * scale;
    struct img whole = img_new(0, 0, dw, dh, cn, depth, 0);
    struct img tiled = img_new(0, 0, dw, dh, cn, depth, 5);
    HC_CHECK(hc_bicubic_resize(&src.v, sw, sh, scale, &whole.v, 0) == 0);
    memset(tiled.px, 0x5a, tiled.v.stride * (size_t)dh);
    int nt = hc_tile_count(dw, dh, tile);
    size_t bpp = hc_pixel_bytes(cn, depth);
    for (int i = 0; i < nt; i++) {
        struct hc_rect r, s;
        hc_tile_rect(dw, dh, tile, i, &r);
        hc_tile_src_rect(sw, sh, scale, &r, &s);
        struct img win = img_new(s.x, s.y, s.w, s.h, cn, depth, 0);
        hc_tile_extract(&src.v, &s, win.v.data, win.v.stride);
        struct img out = img_new(r.x, r.y, r.w, r.h, cn, depth, 0);
        int rc = hc_bicubic_resize(&win.v, sw, sh, scale, &out.v, 1);
        HC_CHECK_MSG(rc == 0, "%s", hc_last_error());
        hc_tile_paste(&tiled.v, &r, out.v.data, out.v.stride);
        free(win.px);
        free(out.px);
    }
    char what[160];
    snprintf(what, sizeof what, "tiled %d vs untiled: %dx%d c%d d%d x%d", tile, sw, sh, cn, depth,
             scale);
    compare(&tiled.v, &whole.v, what);
    (void)bpp;
    free(src.px);
    free(whole.px);
    free(tiled.px);
}

static void
test_tiled(int quick)
{
    static const int tiles[] = {1, 2, 3, 5, 7, 16, 17, 64, 100, 255, 256, 512};
    int count = 0;
    for (size_t t = 0; t < sizeof(tiles) / sizeof(tiles[0]); t++) {
        int tile = tiles[t];
        for (int k = 0; k < (quick ? 2 : 6); k++) {
            int scale = k % 2 ? 3 : hc_test_rand_in(2, 8), cn = hc_test_rand_in(1, 4),
                depth = k % 3 == 2 ? 16 : 8;
            int sw, sh;
            if (tile <= 3) { /* one call per output pixel: keep it small */
                sw = hc_test_rand_in(1, 13);
                sh = hc_test_rand_in(1, 9);
            } else if (k == 0) { /* narrower than one tile */
                sw = hc_test_rand_in(1, tile / scale + 1);
                sh = hc_test_rand_in(1, 50);
            } else {
                sw = hc_test_rand_in(1, 300);
                sh = hc_test_rand_in(1, 80);
            }
            tiled_vs_untiled(sw, sh, cn, depth, scale, tile);
            count++;
        }
    }
    fprintf(stderr, "tiled == untiled: %d cases ok\n", count);
}

/* Concurrent callers (the service upscales many tiles at once) share the plan cache and
 * the row-buffer pool of core/bicubic.c: bands of one image from 4 threads at once, each
 * compared with the reference. */
struct conc {
    const struct img *src, *ref;
    int sw, sh, scale, seed;
    int bad;
};

static void *
conc_run(void *arg)
{
    struct conc *c = arg;
    int cn = c->src->v.channels, depth = c->src->v.depth, dw = c->sw * c->scale,
        dh = c->sh * c->scale;
    size_t bpp = hc_pixel_bytes(cn, depth);
    for (int it = 0; it < 40 && !c->bad; it++) {
        int band = 1 + (c->seed * 7 + it * 13) % 9;
        int y = (c->seed * 31 + it * 17) % dh;
        int h = y + band > dh ? dh - y : band;
        struct hc_view out = {
            malloc((size_t)dw * bpp * h), (size_t)dw * bpp, 0, y, dw, h, cn, depth};
        if (!out.data || hc_bicubic_resize(&c->src->v, c->sw, c->sh, c->scale, &out, 1) != 0 ||
            memcmp(out.data, hc_view_at(&c->ref->v, 0, y), (size_t)dw * bpp * h) != 0)
            c->bad = 1;
        free(out.data);
    }
    return NULL;
}

static void
test_concurrent(void)
{
    int sw = 211, sh = 37, scale = 3, cn = 3;
    struct img src = img_new(0, 0, sw, sh, cn, 8, 0);
    img_fill(&src);
    struct img ref = img_new(0, 0, sw * scale, sh * scale, cn, 8, 0);
    HC_CHECK(hc_bicubic_resize_ref(&src.v, sw, sh, scale, &ref.v) == 0);
    pthread_t t[4];
    struct conc c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (struct conc){&src, &ref, sw, sh, scale, i, 0};
        HC_CHECK(pthread_create(&t[i], NULL, conc_run, &c[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        HC_CHECK_MSG(!c[i].bad, "concurrent caller %d got wrong pixels", i);
    }
    free(src.px);
    free(ref.px);
    fprintf(stderr, "concurrent callers ok\n");
}

static void
test_bad_args(void)
{
    uint8_t px[64 * 64 * 4];
    memset(px, 0, sizeof px);
    struct hc_view s = {px, 16 * 3, 0, 0, 16, 16, 3, 8};
    uint8_t out[32 * 32 * 3];
    struct hc_view d = {out, 32 * 3, 0, 0, 32, 32, 3, 8};
    HC_CHECK_EQ(hc_bicubic_resize(&s, 16, 16, 2, &d, 1), 0);
    HC_CHECK_EQ(hc_bicubic_resize(&s, 16, 16, 0, &d, 1), -EINVAL);
    HC_CHECK(strstr(hc_last_error(), "bicubic: scale") != NULL);
    HC_CHECK_EQ(hc_bicubic_resize(&s, 16, 16, 9, &d, 1), -EINVAL);
    HC_CHECK_EQ(hc_bicubic_resize_ref(&s, 16, 16, 9, &d), -EINVAL);
    struct hc_view d2 = d;
    d2.channels = 4;
    HC_CHECK_EQ(hc_bicubic_resize(&s, 16, 16, 2, &d2, 1), -EINVAL);
    d2 = d;
    d2.x = 1; /* rect past the output's edge */
    HC_CHECK_EQ(hc_bicubic_resize(&s, 16, 16, 2, &d2, 1), -EINVAL);
    struct hc_view s2 = s;
    s2.w = 10; /* window lacks the right columns of the padded rect */
    HC_CHECK_EQ(hc_bicubic_resize(&s2, 16, 16, 2, &d, 1), -EINVAL);
    HC_CHECK(strstr(hc_last_error(), "lacks padded rect") != NULL);
    d2 = d;
    d2.w = 6; /* the rect 0..5 needs columns 0..4 only: a 5-wide window suffices */
    s2 = s;
    s2.w = 5;
    HC_CHECK_EQ(hc_bicubic_resize(&s2, 16, 16, 2, &d2, 1), 0);
    s2.w = 4;
    HC_CHECK_EQ(hc_bicubic_resize(&s2, 16, 16, 2, &d2, 1), -EINVAL);
    d2 = d;
    d2.w = 0; /* empty rect: nothing to do */
    HC_CHECK_EQ(hc_bicubic_resize(&s, 16, 16, 2, &d2, 1), 0);
    HC_CHECK_EQ(hc_bicubic_resize(NULL, 16, 16, 2, &d, 1), -EINVAL);
    s2 = s;
    s2.depth = 12;
    HC_CHECK_EQ(hc_bicubic_resize(&s2, 16, 16, 2, &d, 1), -EINVAL);
    HC_CHECK_EQ(hc_bicubic_resize(&s, 0x7fffffff, 16, 2, &d, 1), -EINVAL);
}

int
main(void)
{
    const char *q = getenv("HC_TEST_QUICK");
    int quick = q && *q && strcmp(q, "0") != 0;
    static const enum hc_simd all[] = {HC_SIMD_SCALAR, HC_SIMD_SSE2, HC_SIMD_AVX2, HC_SIMD_NEON};
    for (int i = 0; i < 4; i++) {
        const struct hc_bc_kernels *k = hc_bc_kernels_for(all[i]);
        if (k) {
            levels[nlevels] = k;
            level_names[nlevels++] = hc_simd_name(all[i]);
            fprintf(stderr, "level %s\n", hc_simd_name(all[i]));
        }
    }
    /* core/cpu.h: HC_NO_SIMD=1 forces scalar, HC_SIMD caps the level (ctest runs this
     * program once more with each) */
    const char *no = getenv("HC_NO_SIMD"), *cap = getenv("HC_SIMD");
    if (no && strcmp(no, "1") == 0)
        HC_CHECK_EQ(hc_cpu_level(), HC_SIMD_SCALAR);
    if (cap && strcmp(cap, "scalar") == 0)
        HC_CHECK_EQ(hc_cpu_level(), HC_SIMD_SCALAR);
    if (cap && strcmp(cap, "sse2") == 0)
        HC_CHECK_EQ(hc_cpu_level(), hc_cpu_supports(HC_SIMD_SSE2) ? HC_SIMD_SSE2 : HC_SIMD_SCALAR);
    test_bad_args();
    test_random(quick);
    test_tiled(quick);
    test_concurrent();
    fprintf(stderr, "test_bicubic: ok (level in use: %s)\n", hc_simd_name(hc_cpu_level()));
    return 0;
}
