/* bench_kernel.c: bench_service_kernel W H CHANNELS SCALE [ITERS] (scripts/bench-service).
 * Times the CUDA bicubic kernel on one W x H u8 image as a single tile and a device-to-device
 * cudaMemcpy in the same run (medians of CUDA-event timings), and prints the achieved
 * bandwidths: kernel = (bytes read + bytes written) / time, copy = 2 * bytes / time.
 * HC_CUDA_GENERIC=1 times the generic kernel instead of the per-scale one (x2). */
#include <stdio.h>
#include <stdlib.h>

#include "error.h"
#include "upscale.h"

int
main(int argc, char **argv)
{
    int w, h, ch, scale, iters = 200;
    double kms, cms;

    if (argc < 5) {
        fprintf(stderr, "usage: bench_service_kernel W H CHANNELS SCALE [ITERS]\n");
        return 2;
    }
    w = atoi(argv[1]);
    h = atoi(argv[2]);
    ch = atoi(argv[3]);
    scale = atoi(argv[4]);
    if (argc > 5)
        iters = atoi(argv[5]);
    if (getenv("HC_CUDA_GENERIC") && atoi(getenv("HC_CUDA_GENERIC")))
        hc_cuda_force_generic(1);
    if (hc_cuda_bench(w, h, ch, 8, scale, iters, &kms, &cms)) {
        fprintf(stderr, "bench_service_kernel: %s\n", hc_last_error());
        return 1;
    }
    double in = (double)w * h * ch, out = in * scale * scale;
    double kbw = (in + out) / (kms * 1e-3) / 1e9, cbw = 2 * out / (cms * 1e-3) / 1e9;
    printf("kernel %dx%d ch%d u8 x%d: %.4f ms, %.1f GB/s (read %.1f MB + write %.1f MB)\n", w, h,
           ch, scale, kms, kbw, in / 1e6, out / 1e6);
    printf("cudaMemcpy D2D %.1f MB: %.4f ms, %.1f GB/s (read + write)\n", out / 1e6, cms, cbw);
    printf("kernel / copy bandwidth: %.1f %%\n", 100.0 * kbw / cbw);
    return 0;
}
