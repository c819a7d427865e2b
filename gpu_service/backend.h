/* backend.h: the table of upscaling backends behind hc-gpu-service.
 *
 * Every backend computes exactly what core/bicubic.h's hc_bicubic_resize() computes; the
 * CPU backend is that function, the CUDA backend (upscale.cu) reproduces it bit for bit.
 * The CPU backend is always built; a backend that was compiled out stays in the table and
 * answers "not built in" (-ENOTSUP) from init.
 */
#ifndef HC_BACKEND_H
#define HC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hc_backend_opts {
    int jobs;        /* requests the service runs at once (sizes per-request resources) */
    int cpu_threads; /* threads of one CPU job: 0 = all online CPUs */
};

struct hc_backend {
    const char *name;
    /* Prepares the backend; *ctx is what the other calls take. Returns 0, -ENOTSUP (not
     * built in), -ENODEV (no device answers) or another -errno, with hc_last_error() set. */
    int (*init)(const struct hc_backend_opts *opts, void **ctx);
    /* Upscales n checked tiles (hc_wire_check_tile): src[i] holds hc_wire_src_bytes(),
     * dst[i] receives hc_wire_out_bytes(). *device is set to the device that ran them (for
     * busy-time accounting). Thread safe: called by every worker at once. */
    int (*run)(void *ctx, const struct hc_wire_tile *tiles, const uint8_t *const *src,
               uint8_t *const *dst, size_t n, int *device);
    /* 0 when the backend answers now (readiness probe), -errno otherwise. */
    int (*ping)(void *ctx);
    /* Number of devices (1 for the CPU) and a name for device i (static storage). */
    int (*devices)(void *ctx);
    const char *(*device_name)(void *ctx, int i);
    void (*fini)(void *ctx);
};

/* The backend called `name` ("cpu", "cuda"), NULL if there is no such name. */
const struct hc_backend *hc_backend_find(const char *name);

/* Opens a backend by name; "auto" takes CUDA when a device answers, else the CPU, and logs
 * its choice. On success *out is the table used and *ctx its context. */
int hc_backend_open(const char *name, const struct hc_backend_opts *opts,
                    const struct hc_backend **out, void **ctx);

#ifdef __cplusplus
}
#endif
#endif
