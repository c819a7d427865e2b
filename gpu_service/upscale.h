/* upscale.h: the CUDA bicubic backend (upscale.cu), behind a C interface so that no CUDA
 * type leaves the .cu file.
 *
 * Output is bit-identical to hc_bicubic_resize(): u8 with the Q11/Q22 integer arithmetic,
 * u16 with the same float operations in the same order (the file is compiled without FMA
 * contraction). Kernels use 16x16 thread blocks and stage each block's source pixels (u8 or
 * u16 as they are, never a float copy of the image) in shared memory.
 *
 * Resources: every visible GPU gets `slots` slots; a slot is a stream with pinned host and
 * device buffers that grow as needed, so each request in flight has its own stream and
 * copies of one request overlap kernels of another.
 */
#ifndef HC_UPSCALE_H
#define HC_UPSCALE_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hc_cuda;

/* Opens every visible device with `slots` slots each (>= 1). Returns 0, -ENODEV when no
 * device answers, -ENOMEM; hc_last_error() says why. Free with hc_cuda_close(). */
int hc_cuda_open(int slots, struct hc_cuda **out);
void hc_cuda_close(struct hc_cuda *cu);

int hc_cuda_device_count(const struct hc_cuda *cu);
/* "NVIDIA H100 80GB HBM3" etc.; owned by cu. */
const char *hc_cuda_device_name(const struct hc_cuda *cu, int i);

/* Upscales n checked tiles on the least busy device; blocks until done. Thread safe.
 * Returns 0 or -EIO (CUDA error, reason in hc_last_error()). */
int hc_cuda_run(struct hc_cuda *cu, const struct hc_wire_tile *tiles, const uint8_t *const *src,
                uint8_t *const *dst, size_t n, int *device);

/* 0 when every device answers a trivial call. */
int hc_cuda_ping(struct hc_cuda *cu);

/* Test and benchmark support: on, every tile takes the generic kernel (any scale) instead
 * of the per-scale one (x2). Process-wide. */
void hc_cuda_force_generic(int on);

/* Benchmark support (scripts/bench-service): on device 0, times the kernel upscaling a
 * w x h image of `channels` u8 channels by `scale` as one tile, and a device-to-device
 * cudaMemcpy of the same total byte count, each the median of `iters` runs timed with CUDA
 * events. Outputs are milliseconds. */
int hc_cuda_bench(int w, int h, int channels, int depth, int scale, int iters, double *kernel_ms,
                  double *copy_ms);

#ifdef __cplusplus
}
#endif
#endif
