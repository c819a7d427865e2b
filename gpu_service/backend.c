/* backend.c: the backend table: cpu (core/bicubic.h) always, cuda (upscale.cu) when built. */
#include "backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bicubic.h"
#include "error.h"
#include "log.h"
#ifdef HC_WITH_CUDA
#include "upscale.h"
#endif

/* ---- cpu ---------------------------------------------------------------------------- */

struct cpu_ctx {
    int threads;
};

static int
cpu_init(const struct hc_backend_opts *opts, void **ctx)
{
    struct cpu_ctx *c = calloc(1, sizeof *c);

    if (!c)
        return hc_error(-ENOMEM, "cpu", "out of memory");
    c->threads = opts->cpu_threads;
    *ctx = c;
    return 0;
}

static int
cpu_run(void *ctx, const struct hc_wire_tile *tiles, const uint8_t *const *src, uint8_t *const *dst,
        size_t n, int *device)
{
    const struct cpu_ctx *c = ctx;

    *device = 0;
    for (size_t i = 0; i < n; i++) {
        const struct hc_wire_tile *t = &tiles[i];
        size_t pb = hc_pixel_bytes(t->channels, t->depth);
        /* The views only read src; hc_view has no const variant. */
        struct hc_view sv = {(uint8_t *)src[i], (size_t)t->src.w * pb, t->src.x, t->src.y, t->src.w,
                             t->src.h,          t->channels,           t->depth};
        struct hc_view dv = {dst[i],   (size_t)t->out.w * pb, t->out.x, t->out.y, t->out.w,
                             t->out.h, t->channels,           t->depth};
        int rc =
            hc_bicubic_resize(&sv, (int)t->image_w, (int)t->image_h, t->scale, &dv, c->threads);
        if (rc)
            return rc;
    }
    return 0;
}

static int
cpu_ping(void *ctx)
{
    (void)ctx;
    return 0;
}

static int
cpu_devices(void *ctx)
{
    (void)ctx;
    return 1;
}

static const char *
cpu_device_name(void *ctx, int i)
{
    (void)ctx;
    (void)i;
    return "cpu";
}

static void
cpu_fini(void *ctx)
{
    free(ctx);
}

/* ---- cuda --------------------------------------------------------------------------- */

#ifdef HC_WITH_CUDA
static int
cuda_init(const struct hc_backend_opts *opts, void **ctx)
{
    struct hc_cuda *cu;
    int rc = hc_cuda_open(opts->jobs > 0 ? opts->jobs : 2, &cu);

    if (rc)
        return rc;
    *ctx = cu;
    return 0;
}

static int
cuda_run(void *ctx, const struct hc_wire_tile *tiles, const uint8_t *const *src,
         uint8_t *const *dst, size_t n, int *device)
{
    return hc_cuda_run(ctx, tiles, src, dst, n, device);
}

static int
cuda_ping(void *ctx)
{
    return hc_cuda_ping(ctx);
}

static int
cuda_devices(void *ctx)
{
    return hc_cuda_device_count(ctx);
}

static const char *
cuda_device_name(void *ctx, int i)
{
    return hc_cuda_device_name(ctx, i);
}

static void
cuda_fini(void *ctx)
{
    hc_cuda_close(ctx);
}
#else
static int
cuda_init(const struct hc_backend_opts *opts, void **ctx)
{
    (void)opts;
    (void)ctx;
    return hc_error(-ENOTSUP, "cuda",
                    "not built in (configure with -DHC_WITH_CUDA=ON on a "
                    "machine with the CUDA toolkit)");
}
#define cuda_run NULL
#define cuda_ping NULL
#define cuda_devices NULL
#define cuda_device_name NULL
#define cuda_fini NULL
#endif

static const struct hc_backend backends[] = {
    {"cuda", cuda_init, cuda_run, cuda_ping, cuda_devices, cuda_device_name, cuda_fini},
    {"cpu", cpu_init, cpu_run, cpu_ping, cpu_devices, cpu_device_name, cpu_fini},
};

const struct hc_backend *
hc_backend_find(const char *name)
{
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (strcmp(backends[i].name, name) == 0)
            return &backends[i];
    return NULL;
}

int
hc_backend_open(const char *name, const struct hc_backend_opts *opts, const struct hc_backend **out,
                void **ctx)
{
    const struct hc_backend *b;
    int rc;

    if (strcmp(name, "auto") == 0) {
        b = hc_backend_find("cuda");
        rc = b->init(opts, ctx);
        if (rc == 0) {
            hc_log(HC_LOG_INFO, "backend", "auto: chose cuda (%d device%s, first: %s)",
                   b->devices(*ctx), b->devices(*ctx) == 1 ? "" : "s", b->device_name(*ctx, 0));
            *out = b;
            return 0;
        }
        hc_log(HC_LOG_INFO, "backend", "auto: chose cpu (cuda unavailable: %s)", hc_last_error());
        name = "cpu";
    }
    b = hc_backend_find(name);
    if (!b)
        return hc_error(-EINVAL, "backend", "unknown backend '%s' (auto, cuda or cpu)", name);
    rc = b->init(opts, ctx);
    if (rc)
        return rc;
    hc_log(HC_LOG_INFO, "backend", "using %s (%s)", b->name, b->device_name(*ctx, 0));
    *out = b;
    return 0;
}
