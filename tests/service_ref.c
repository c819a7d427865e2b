/* service_ref.c: the reference side of tests/service_http.py.
 *
 *   service_ref REQUEST ANSWER   reads a request message (HCUP), computes every tile with
 *                                core's scalar reference hc_bicubic_resize_ref() (not the
 *                                fast path the service runs) and writes the expected HCRS
 *                                message.
 * Exit 0, or 1 with a reason on stderr. */
#include <stdio.h>
#include <stdlib.h>

#include "bicubic.h"
#include "error.h"
#include "wire.h"

static uint8_t *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *b = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        b = malloc((size_t)n + 1);
        if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
            free(b);
            b = NULL;
        }
        *len = (size_t)n;
    }
    fclose(f);
    return b;
}

int
main(int argc, char **argv)
{
    static struct hc_wire_tile tiles[HC_WIRE_MAX_TILES];
    static const uint8_t *px[HC_WIRE_MAX_TILES];
    static uint8_t *outs[HC_WIRE_MAX_TILES];
    size_t len, n, olen;
    uint8_t *req, *msg;
    FILE *f;

    if (argc != 3) {
        fprintf(stderr, "usage: service_ref REQUEST ANSWER\n");
        return 1;
    }
    req = slurp(argv[1], &len);
    if (!req) {
        fprintf(stderr, "service_ref: cannot read %s\n", argv[1]);
        return 1;
    }
    if (hc_wire_parse(HC_WIRE_MAGIC_REQUEST, req, len, tiles, px, HC_WIRE_MAX_TILES, &n)) {
        fprintf(stderr, "service_ref: %s\n", hc_last_error());
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        const struct hc_wire_tile *t = &tiles[i];
        size_t pb = hc_pixel_bytes(t->channels, t->depth);
        struct hc_view sv = {(uint8_t *)px[i], (size_t)t->src.w * pb, t->src.x, t->src.y, t->src.w,
                             t->src.h,         t->channels,           t->depth};
        outs[i] = malloc(hc_wire_out_bytes(t));
        if (!outs[i])
            return 1;
        struct hc_view dv = {outs[i],  (size_t)t->out.w * pb, t->out.x, t->out.y, t->out.w,
                             t->out.h, t->channels,           t->depth};
        if (hc_bicubic_resize_ref(&sv, (int)t->image_w, (int)t->image_h, t->scale, &dv)) {
            fprintf(stderr, "service_ref: %s\n", hc_last_error());
            return 1;
        }
    }
    if (hc_wire_encode(HC_WIRE_MAGIC_RESPONSE, tiles, (const uint8_t *const *)outs, n, &msg,
                       &olen)) {
        fprintf(stderr, "service_ref: %s\n", hc_last_error());
        return 1;
    }
    f = fopen(argv[2], "wb");
    if (!f || fwrite(msg, 1, olen, f) != olen || fclose(f) != 0) {
        fprintf(stderr, "service_ref: cannot write %s\n", argv[2]);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        free(outs[i]);
    free(msg);
    free(req);
    return 0;
}
