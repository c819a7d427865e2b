/* bench_bicubic: times hc_bicubic_resize on one raw image held in memory (for
 * scripts/bench-bicubic; not a test). usage: bench_bicubic IN W H CN SCALE RUNS [THREADS] [DEPTH]
 * Prints one line per run ("run N: S s") and "median: S s". Set HC_SIMD to pick a level. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bicubic.h"
#include "cpu.h"
#include "error.h"

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s IN W H CN SCALE RUNS [THREADS] [DEPTH]\n", argv[0]);
        return 2;
    }
    int w = atoi(argv[2]), h = atoi(argv[3]), cn = atoi(argv[4]), scale = atoi(argv[5]);
    int runs = atoi(argv[6]), threads = argc > 7 ? atoi(argv[7]) : 0;
    int depth = argc > 8 ? atoi(argv[8]) : 8;
    if (w < 1 || h < 1 || cn < 1 || cn > 4 || scale < 1 || scale > 8 || runs < 1 || runs > 1000 ||
        (depth != 8 && depth != 16))
        return 2;
    size_t in_sz = (size_t)w * h * cn * (depth / 8), out_sz = in_sz * scale * scale;
    unsigned char *in = malloc(in_sz), *out = malloc(out_sz);
    double *t = calloc((size_t)runs, sizeof(double));
    if (!in || !out || !t)
        return 1;
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(in, 1, in_sz, f) != in_sz) {
        fprintf(stderr, "bench_bicubic: cannot read %zu bytes from %s\n", in_sz, argv[1]);
        return 1;
    }
    fclose(f);
    struct hc_view src = {in, (size_t)w * cn * (depth / 8), 0, 0, w, h, cn, depth};
    struct hc_view dst = {
        out, (size_t)w * scale * cn * (depth / 8), 0, 0, w * scale, h * scale, cn, depth};
    /* one untimed run: page faults of the output buffer, as cv2 reuses nothing either way */
    if (hc_bicubic_resize(&src, w, h, scale, &dst, threads) != 0) {
        fprintf(stderr, "bench_bicubic: %s\n", hc_last_error());
        return 1;
    }
    for (int i = 0; i < runs; i++) {
        double t0 = now();
        hc_bicubic_resize(&src, w, h, scale, &dst, threads);
        t[i] = now() - t0;
        printf("run %d: %.6f s\n", i, t[i]);
    }
    qsort(t, (size_t)runs, sizeof(double), cmpd);
    printf("level: %s threads: %d\n", hc_simd_name(hc_cpu_level()),
           threads ? threads : hc_cpu_count());
    printf("median: %.6f s\n", t[runs / 2]);
    free(in);
    free(out);
    free(t);
    return 0;
}
