/* bicubic_cv_driver: upscales one raw image with hc_bicubic_resize for tests/bicubic_cv.py.
 * usage: bicubic_cv_driver IN OUT WIDTH HEIGHT CHANNELS DEPTH SCALE
 * IN holds WIDTH*HEIGHT*CHANNELS samples (uint8, or native-endian uint16 for depth 16),
 * OUT receives the upscaled samples in the same layout. Exit 0, or 1 with a reason. */
#include <stdio.h>
#include <stdlib.h>

#include "bicubic.h"
#include "error.h"

int
main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s IN OUT WIDTH HEIGHT CHANNELS DEPTH SCALE\n", argv[0]);
        return 2;
    }
    int w = atoi(argv[3]), h = atoi(argv[4]), cn = atoi(argv[5]), depth = atoi(argv[6]);
    int scale = atoi(argv[7]), rc = 1;
    if (w < 1 || h < 1 || w > 20000 || h > 20000 || cn < 1 || cn > 4 ||
        (depth != 8 && depth != 16) || scale < 1 || scale > 8) {
        fprintf(stderr, "bicubic_cv_driver: bad arguments\n");
        return 2;
    }
    size_t bpp = (size_t)cn * (size_t)depth / 8;
    size_t in_sz = (size_t)w * h * bpp, out_sz = in_sz * (size_t)scale * scale;
    unsigned char *in = malloc(in_sz), *out = malloc(out_sz);
    FILE *f = NULL;
    if (!in || !out) {
        fprintf(stderr, "bicubic_cv_driver: out of memory\n");
        goto out;
    }
    f = fopen(argv[1], "rb");
    if (!f || fread(in, 1, in_sz, f) != in_sz) {
        fprintf(stderr, "bicubic_cv_driver: cannot read %zu bytes from %s\n", in_sz, argv[1]);
        goto out;
    }
    fclose(f);
    f = NULL;
    struct hc_view src = {in, (size_t)w * bpp, 0, 0, w, h, cn, depth};
    struct hc_view dst = {out, (size_t)w * scale * bpp, 0, 0, w * scale, h * scale, cn, depth};
    if (hc_bicubic_resize(&src, w, h, scale, &dst, 0) != 0) {
        fprintf(stderr, "bicubic_cv_driver: %s\n", hc_last_error());
        goto out;
    }
    f = fopen(argv[2], "wb");
    if (!f || fwrite(out, 1, out_sz, f) != out_sz || fclose(f) != 0) {
        f = NULL;
        fprintf(stderr, "bicubic_cv_driver: cannot write %s\n", argv[2]);
        goto out;
    }
    f = NULL;
    rc = 0;
out:
    if (f)
        fclose(f);
    free(in);
    free(out);
    return rc;
}
