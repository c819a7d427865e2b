/* test_service_cuda.c: the CUDA backend (gpu_service/upscale.cu) against the CPU backend
 * (core's hc_bicubic_resize), byte for byte: random tiles of odd sizes and positions, every
 * layout (1-4 channels, 8/16 bit) and every scale 1..8, single tiles and batches, several
 * requests at once on their own streams. Also checks that every output byte was written
 * (outputs are poisoned first). Exit 77 without a GPU.
 *
 * Under compute-sanitizer: HC_CUDA_TEST_QUICK=1 runs fewer, smaller cases. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bicubic.h"
#include "check.h"
#include "error.h"
#include "tile.h"
#include "upscale.h"
#include "wire.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t
rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static int
rnd_in(int lo, int hi) /* inclusive */
{
    return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}

struct case_ {
    struct hc_wire_tile t;
    uint8_t *src, *want, *got;
};

static void
make_case(struct case_ *c, int ch, int depth, int scale, int maxside)
{
    struct hc_wire_tile *t = &c->t;
    int w = rnd_in(1, maxside) | 1, h = rnd_in(1, maxside) | 1; /* odd sizes */
    int ow = w * scale, oh = h * scale;

    memset(t, 0, sizeof *t);
    t->id = rnd();
    t->image_w = (uint32_t)w;
    t->image_h = (uint32_t)h;
    t->out.w = rnd_in(1, ow);
    t->out.h = rnd_in(1, oh);
    t->out.x = rnd_in(0, ow - t->out.w);
    t->out.y = rnd_in(0, oh - t->out.h);
    if (rnd() % 4 == 0) { /* sometimes the whole image */
        t->out = (struct hc_rect){0, 0, ow, oh};
    }
    hc_tile_src_rect(w, h, scale, &t->out, &t->src);
    t->channels = (uint8_t)ch;
    t->depth = (uint8_t)depth;
    t->scale = (uint8_t)scale;
    t->filter = HC_FILTER_BICUBIC;
    HC_CHECK_MSG(hc_wire_check_tile(t) == 0, "%s", hc_last_error());
    size_t sb = hc_wire_src_bytes(t), ob = hc_wire_out_bytes(t);
    c->src = malloc(sb);
    c->want = malloc(ob);
    c->got = malloc(ob);
    HC_CHECK(c->src && c->want && c->got);
    for (size_t i = 0; i < sb; i++)
        c->src[i] = (uint8_t)rnd();
    /* sometimes extremes, where saturation matters */
    if (rnd() % 3 == 0)
        for (size_t i = 0; i < sb; i++)
            c->src[i] = (rnd() & 1) ? 0xff : 0;
    memset(c->got, 0xa5, ob);
    size_t pb = hc_pixel_bytes(ch, depth);
    struct hc_view sv = {c->src, (size_t)t->src.w * pb, t->src.x, t->src.y, t->src.w, t->src.h, ch,
                         depth};
    struct hc_view dv = {c->want, (size_t)t->out.w * pb, t->out.x, t->out.y, t->out.w, t->out.h, ch,
                         depth};
    HC_CHECK_MSG(hc_bicubic_resize(&sv, w, h, scale, &dv, 1) == 0, "%s", hc_last_error());
}

static void
compare(const struct case_ *c)
{
    const struct hc_wire_tile *t = &c->t;
    size_t ob = hc_wire_out_bytes(t);

    if (memcmp(c->want, c->got, ob) == 0)
        return;
    size_t pb = hc_pixel_bytes(t->channels, t->depth);
    for (size_t i = 0; i < ob; i++) {
        if (c->want[i] != c->got[i]) {
            size_t px = i / pb;
            fprintf(stderr,
                    "mismatch: image %ux%u ch %u depth %u x%u out %d,%d %dx%d: byte %zu "
                    "(pixel %zu,%zu) cpu %u gpu %u\n",
                    t->image_w, t->image_h, t->channels, t->depth, t->scale, t->out.x, t->out.y,
                    t->out.w, t->out.h, i, (size_t)t->out.x + px % (size_t)t->out.w,
                    (size_t)t->out.y + px / (size_t)t->out.w, c->want[i], c->got[i]);
            exit(1);
        }
    }
}

static void
free_case(struct case_ *c)
{
    free(c->src);
    free(c->want);
    free(c->got);
}

/* Upscales one case as a request of its own on the GPU, checks it against the CPU
 * reference and frees it. */
static void
run_case(struct hc_cuda *cu, struct case_ *c)
{
    const uint8_t *src[1] = {c->src};
    uint8_t *dst[1] = {c->got};
    int dev = -1;

    HC_CHECK_MSG(hc_cuda_run(cu, &c->t, src, dst, 1, &dev) == 0, "%s", hc_last_error());
    HC_CHECK(dev >= 0 && dev < hc_cuda_device_count(cu));
    compare(c);
    free_case(c);
}

struct thread_arg {
    struct hc_cuda *cu;
    int seed, rounds, maxside;
};

/* Several requests at once: each takes its own slot and stream. */
static void *
concurrent(void *p)
{
    struct thread_arg *a = p;
    for (int r = 0; r < a->rounds; r++) {
        struct case_ c;
        make_case(&c, 1 + (r + a->seed) % 4, (r & 1) ? 16 : 8, 1 + (r * 3 + a->seed) % 8,
                  a->maxside);
        run_case(a->cu, &c);
    }
    return NULL;
}

/* Every case once with the kernels as chosen (the per-scale kernel at x2) and once with
 * the generic kernel forced: both must match the CPU reference. */
static int
run_all(struct hc_cuda *cu, int quick)
{
    int maxside = quick ? 40 : 150, reps = quick ? 1 : 4, ncases = 0;

    /* every layout and scale, one tile per request */
    for (int depth = 8; depth <= 16; depth += 8)
        for (int ch = 1; ch <= 4; ch++)
            for (int scale = 1; scale <= 8; scale++)
                for (int r = 0; r < reps; r++) {
                    struct case_ c;
                    make_case(&c, ch, depth, scale, maxside);
                    run_case(cu, &c);
                    ncases++;
                }

    /* wide tiles: several blocks across (a block spans 512..1024 columns), a tile start that
     * is not a multiple of the scale, the image's right edge (OpenCV's integer tail) */
    for (int depth = 8; depth <= 16; depth += 8)
        for (int ch = 1; ch <= 4; ch++)
            for (int scale = 2; scale <= 4; scale++) {
                struct case_ c;
                make_case(&c, ch, depth, scale, quick ? 160 : 700);
                run_case(cu, &c);
                ncases++;
            }
    /* batches of mixed tiles */
    for (int b = 0; b < (quick ? 2 : 10); b++) {
        struct case_ cs[16];
        const uint8_t *src[16];
        uint8_t *dst[16];
        struct hc_wire_tile ts[16];
        int n = rnd_in(2, 16), dev;
        for (int i = 0; i < n; i++) {
            make_case(&cs[i], rnd_in(1, 4), (rnd() & 1) ? 16 : 8, rnd_in(1, 8), maxside);
            src[i] = cs[i].src;
            dst[i] = cs[i].got;
            ts[i] = cs[i].t;
        }
        HC_CHECK_MSG(hc_cuda_run(cu, ts, src, dst, (size_t)n, &dev) == 0, "%s", hc_last_error());
        for (int i = 0; i < n; i++) {
            compare(&cs[i]);
            free_case(&cs[i]);
        }
        ncases += n;
    }

    /* one large tile: many blocks, partial blocks at both edges */
    if (!quick) {
        struct case_ c;
        make_case(&c, 3, 8, 2, 1);
        free_case(&c);
        memset(&c, 0, sizeof c);
        c.t = (struct hc_wire_tile){1, 1001, 603, {13, 7, 1901, 1111}, {0, 0, 0, 0}, 3, 8, 2, 1};
        hc_tile_src_rect(1001, 603, 2, &c.t.out, &c.t.src);
        size_t sb = hc_wire_src_bytes(&c.t), ob = hc_wire_out_bytes(&c.t);
        c.src = malloc(sb);
        c.want = malloc(ob);
        c.got = malloc(ob);
        HC_CHECK(c.src && c.want && c.got);
        for (size_t i = 0; i < sb; i++)
            c.src[i] = (uint8_t)rnd();
        memset(c.got, 0x5a, ob);
        struct hc_view sv = {
            c.src, (size_t)c.t.src.w * 3, c.t.src.x, c.t.src.y, c.t.src.w, c.t.src.h, 3, 8};
        struct hc_view dv = {
            c.want, (size_t)c.t.out.w * 3, c.t.out.x, c.t.out.y, c.t.out.w, c.t.out.h, 3, 8};
        HC_CHECK(hc_bicubic_resize(&sv, 1001, 603, 2, &dv, 0) == 0);
        run_case(cu, &c);
        ncases++;
    }

    /* requests from several threads at once */
    {
        pthread_t th[4];
        struct thread_arg a[4];
        for (int i = 0; i < 4; i++) {
            a[i] = (struct thread_arg){cu, i, quick ? 2 : 12, maxside};
            HC_CHECK(pthread_create(&th[i], NULL, concurrent, &a[i]) == 0);
        }
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        ncases += 4 * a[0].rounds;
    }
    return ncases;
}

int
main(void)
{
    struct hc_cuda *cu;
    int quick = getenv("HC_CUDA_TEST_QUICK") != NULL, ncases = 0;
    int rc = hc_cuda_open(2, &cu);

    if (rc == -ENODEV)
        HC_SKIP("%s", hc_last_error());
    HC_CHECK_MSG(rc == 0, "%s", hc_last_error());
    fprintf(stderr, "devices: %d, first %s\n", hc_cuda_device_count(cu),
            hc_cuda_device_name(cu, 0));
    HC_CHECK(hc_cuda_ping(cu) == 0);
    hc_cuda_force_generic(1);
    ncases += run_all(cu, quick);
    hc_cuda_force_generic(0);
    ncases += run_all(cu, quick);
    hc_cuda_close(cu);
    printf("ok: %d tiles bit-identical to the CPU backend (generic and per-scale kernels)\n",
           ncases);
    return 0;
}
