/* png.c: PNG probe, streaming reader and writer on libspng.
 *
 * What the reader hands out (the same as hc_png_probe reports):
 *   gray 1/2/4/8 bit -> 1 channel, 8 bit (scaled: a 1-bit 1 is 255); gray 16 -> 16 bit;
 *   gray + alpha -> 2 channels; RGB -> 3; RGBA -> 4; palette -> 3 (RGB) or 4 with tRNS;
 *   a tRNS colour key on gray or RGB becomes an alpha channel (2 or 4 channels), as
 *   OpenCV and Pillow's RGBA conversion do. 16-bit samples are native-endian.
 * Non-interlaced files decode row by row; Adam7 files decode whole once, then rows are
 * served from memory (their passes interleave every row).
 *
 * Writer: zlib level 1 and the single Paeth filter by default. Measured on a 7680x4320
 * bicubic x2 of the 4K Elephants photo (CPU seconds, one core, libspng 0.7.3 + zlib):
 *   level 1 Paeth 2.0 s 54.3 MB | level 1 up 1.9 s 56.1 MB | level 2 Paeth 2.3 s 53.8 MB
 *   level 3 up 3.4 s 54.0 MB    | level 2 adaptive 3.4 s 53.8 MB | level 6 adaptive 13.6 s 52.5 MB
 * so level 1 + Paeth costs 3% in size against zlib's default and saves 85% of the time.
 * Level 0 stores the rows unfiltered (filters cost time and buy nothing without deflate).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "codec_internal.h"

#define DOM "png"

/* PNG colour types */
enum { CT_GRAY = 0, CT_RGB = 2, CT_PALETTE = 3, CT_GRAY_ALPHA = 4, CT_RGBA = 6 };

static uint32_t
be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Channels and depth we decode to, from IHDR and whether a tRNS chunk exists. */
static int
decoded_layout(int ct, int bits, int has_trns, int *channels, int *depth)
{
    int ok;

    switch (ct) {
    case CT_GRAY:
        ok = bits == 1 || bits == 2 || bits == 4 || bits == 8 || bits == 16;
        break;
    case CT_PALETTE:
        ok = bits == 1 || bits == 2 || bits == 4 || bits == 8;
        break;
    case CT_RGB:
    case CT_GRAY_ALPHA:
    case CT_RGBA:
        ok = bits == 8 || bits == 16;
        break;
    default:
        ok = 0;
    }
    if (!ok)
        return hc_error(-EINVAL, DOM, "invalid colour type %d with bit depth %d", ct, bits);
    *depth = bits == 16 ? 16 : 8;
    switch (ct) {
    case CT_GRAY:
        *channels = has_trns ? 2 : 1;
        break;
    case CT_GRAY_ALPHA:
        *channels = 2;
        break;
    case CT_RGB:
        *channels = has_trns ? 4 : 3;
        break;
    case CT_PALETTE:
        *channels = has_trns ? 4 : 3;
        break;
    default:
        *channels = 4;
        break;
    }
    return 0;
}

int
hc_png_probe(struct hc_probe_src *s, struct hc_image_info *info)
{
    uint8_t b[8 + 25];
    uint64_t off;
    uint32_t w, h;
    int has_trns = 0, ch, depth, res;

    if (hc_probe_read(s, 0, b, sizeof(b)))
        return hc_error(-EINVAL, DOM, "truncated header");
    if (be32(b + 8) != 13 || memcmp(b + 12, "IHDR", 4) != 0)
        return hc_error(-EINVAL, DOM, "corrupt header (first chunk is not IHDR)");
    if ((uint32_t)crc32(crc32(0, NULL, 0), b + 12, 17) != be32(b + 29))
        return hc_error(-EINVAL, DOM, "corrupt header (IHDR checksum mismatch)");
    w = be32(b + 16);
    h = be32(b + 20);
    if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu)
        return hc_error(-EINVAL, DOM, "invalid image size %ux%u", w, h);
    if (b[26] != 0 || b[27] != 0 || b[28] > 1)
        return hc_error(-EINVAL, DOM, "corrupt header (unknown compression, filter or interlace)");
    /* tRNS sits between IHDR and IDAT: hop over chunk headers only. */
    off = 33;
    for (int i = 0; i < 1000; i++) {
        uint8_t c[8];

        if (hc_probe_read(s, off, c, 8))
            break; /* truncated before IDAT: the reader will say so */
        if (memcmp(c + 4, "tRNS", 4) == 0)
            has_trns = 1;
        if (memcmp(c + 4, "IDAT", 4) == 0 || memcmp(c + 4, "IEND", 4) == 0)
            break;
        off += 12 + (uint64_t)be32(c);
    }
    res = decoded_layout(b[25], b[24], has_trns, &ch, &depth);
    if (res)
        return res;
    info->format = HC_FORMAT_PNG;
    info->width = (int)w;
    info->height = (int)h;
    info->channels = ch;
    info->depth = depth;
    return 0;
}

#ifdef HC_HAVE_SPNG

#include <spng.h>

static int
spng_fail(int err, int code, const char *what)
{
    return hc_error(err, DOM, "%s: %s", what, spng_strerror(code));
}

/* ---- reader ---- */

struct preader {
    spng_ctx *ctx;
    size_t row_bytes;
    uint8_t *image; /* interlaced only: the whole decoded image */
};

static int
preader_read(struct hc_reader *r, uint8_t *dst, size_t stride, int nrows)
{
    struct preader *p = r->priv;

    for (int i = 0; i < nrows; i++) {
        uint8_t *row = dst + (size_t)i * stride;
        int y = r->next_row + i, e;

        if (p->image) {
            memcpy(row, p->image + (size_t)y * p->row_bytes, p->row_bytes);
            continue;
        }
        e = spng_decode_row(p->ctx, row, p->row_bytes);
        /* SPNG_EOI comes with the last row; before it, it means rows are missing */
        if (e == SPNG_EOI && y == r->info.height - 1)
            continue;
        if (e == SPNG_EOI)
            return hc_error(-EINVAL, DOM, "image data ends at row %d of %d", y, r->info.height);
        if (e)
            return hc_error(-EINVAL, DOM, "row %d: %s", y,
                            e == SPNG_IO_EOF ? "truncated file" : spng_strerror(e));
    }
    return 0;
}

static void
preader_close(struct hc_reader *r)
{
    struct preader *p = r->priv;

    if (!p)
        return;
    spng_ctx_free(p->ctx);
    free(p->image);
    free(p);
    r->priv = NULL;
}

static const struct hc_reader_ops preader_ops = {preader_read, preader_close};

static int
copy_meta(struct hc_reader *r, spng_ctx *ctx)
{
    struct spng_iccp iccp;
    struct spng_exif exif;

    if (spng_get_iccp(ctx, &iccp) == 0 && iccp.profile && iccp.profile_len) {
        r->meta.icc = malloc(iccp.profile_len);
        if (!r->meta.icc)
            return hc_error(-ENOMEM, DOM, "out of memory");
        memcpy(r->meta.icc, iccp.profile, iccp.profile_len);
        r->meta.icc_len = iccp.profile_len;
    }
    if (spng_get_exif(ctx, &exif) == 0 && exif.data && exif.length) {
        r->meta.exif = malloc(exif.length);
        if (!r->meta.exif)
            return hc_error(-ENOMEM, DOM, "out of memory");
        memcpy(r->meta.exif, exif.data, exif.length);
        r->meta.exif_len = exif.length;
    }
    return 0;
}

int
hc_png_reader_open(struct hc_reader *r)
{
    struct preader *p = calloc(1, sizeof(*p));
    struct spng_ihdr ihdr;
    struct spng_trns trns;
    int e, res, fmt, flags = 0, has_trns, ch, depth;
    size_t size;

    if (!p)
        return hc_error(-ENOMEM, DOM, "out of memory");
    r->priv = p;
    r->ops = &preader_ops;
    p->ctx = spng_ctx_new(0);
    if (!p->ctx) {
        res = hc_error(-ENOMEM, DOM, "out of memory");
        goto out;
    }
    /* Ancillary chunks (text, ICC) are held in memory: bound them. */
    spng_set_chunk_limits(p->ctx, 16u << 20, 64u << 20);
    if (r->fp)
        e = spng_set_png_file(p->ctx, r->fp);
    else
        e = spng_set_png_buffer(p->ctx, r->mem, r->mem_len);
    if (e) {
        res = spng_fail(-EINVAL, e, "cannot open");
        goto out;
    }
    e = spng_get_ihdr(p->ctx, &ihdr);
    if (e) {
        res = spng_fail(-EINVAL, e, e == SPNG_IO_EOF ? "truncated header" : "bad header");
        goto out;
    }
    res = hc_check_limits(DOM, ihdr.width, ihdr.height, r->lim);
    if (res)
        goto out;
    e = spng_get_trns(p->ctx, &trns);
    if (e && e != SPNG_ECHUNKAVAIL) {
        res = spng_fail(-EINVAL, e, "bad chunk before the image data");
        goto out;
    }
    has_trns = e == 0;
    res = decoded_layout(ihdr.color_type, ihdr.bit_depth, has_trns, &ch, &depth);
    if (res)
        goto out;
    if (has_trns)
        flags |= SPNG_DECODE_TRNS;
    switch (ihdr.color_type) {
    case CT_GRAY:
        if (ihdr.bit_depth == 16)
            fmt = has_trns ? SPNG_FMT_GA16 : SPNG_FMT_PNG;
        else
            fmt = has_trns ? SPNG_FMT_GA8 : SPNG_FMT_G8;
        break;
    case CT_PALETTE:
        fmt = has_trns ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
        break;
    case CT_RGB:
        if (has_trns)
            fmt = ihdr.bit_depth == 16 ? SPNG_FMT_RGBA16 : SPNG_FMT_RGBA8;
        else
            fmt = SPNG_FMT_PNG;
        break;
    default:
        fmt = SPNG_FMT_PNG;
        break; /* gray+alpha, RGBA: as stored, host-endian */
    }
    e = spng_decoded_image_size(p->ctx, fmt, &size);
    if (e) {
        res = spng_fail(-EINVAL, e, "bad header");
        goto out;
    }
    p->row_bytes = size / ihdr.height;
    if (p->row_bytes != (size_t)ihdr.width * hc_pixel_bytes(ch, depth)) {
        res = hc_error(-EINVAL, DOM, "unexpected decoded row size %zu", p->row_bytes);
        goto out;
    }
    r->info.format = HC_FORMAT_PNG;
    r->info.width = (int)ihdr.width;
    r->info.height = (int)ihdr.height;
    r->info.channels = ch;
    r->info.depth = depth;
    res = copy_meta(r, p->ctx);
    if (res)
        goto out;
    if (ihdr.interlace_method) {
        p->image = malloc(size);
        if (!p->image) {
            res = hc_error(-ENOMEM, DOM, "out of memory for %ux%u pixels", ihdr.width, ihdr.height);
            goto out;
        }
        e = spng_decode_image(p->ctx, p->image, size, fmt, flags);
    } else {
        e = spng_decode_image(p->ctx, NULL, 0, fmt, flags | SPNG_DECODE_PROGRESSIVE);
    }
    if (e) {
        res = spng_fail(-EINVAL, e, e == SPNG_IO_EOF ? "truncated file" : "corrupt image data");
        goto out;
    }
    return 0;
out:
    preader_close(r);
    r->ops = NULL;
    return res;
}

/* ---- writer ---- */

struct pwriter {
    spng_ctx *ctx;
    size_t row_bytes;
};

/* libspng reports a failed fwrite as "stream error": name the system's reason instead
 * (disk full, file too large), which is what the person has to act on. */
static int
pwriter_fail(struct hc_writer *w, int code, const char *what)
{
    int err = errno;

    if (code == SPNG_IO_ERROR && ferror(w->fp) && err)
        return hc_error(-err, DOM, "%s: cannot write: %s", what, strerror(err));
    return spng_fail(-EIO, code, what);
}

static int
pwriter_write(struct hc_writer *w, const uint8_t *src, size_t stride, int nrows)
{
    struct pwriter *p = w->priv;

    for (int i = 0; i < nrows; i++) {
        int y = w->rows_written + i;
        int e = spng_encode_row(p->ctx, src + (size_t)i * stride, p->row_bytes);

        if (e == SPNG_EOI && y == w->info.height - 1)
            continue;
        if (e)
            return pwriter_fail(w, e, "encoding");
    }
    return 0;
}

static int
pwriter_finish(struct hc_writer *w)
{
    (void)w; /* SPNG_ENCODE_FINALIZE wrote IEND with the last row */
    return 0;
}

static void
pwriter_free(struct hc_writer *w)
{
    struct pwriter *p = w->priv;

    if (!p)
        return;
    spng_ctx_free(p->ctx);
    free(p);
    w->priv = NULL;
}

static const struct hc_writer_fmt_ops pwriter_ops = {pwriter_write, pwriter_finish, pwriter_free};

int
hc_png_writer_open(struct hc_writer *w)
{
    static const uint8_t color_type[5] = {0, CT_GRAY, CT_GRAY_ALPHA, CT_RGB, CT_RGBA};
    struct pwriter *p = calloc(1, sizeof(*p));
    struct spng_ihdr ihdr = {0};
    int level = w->opts.png_level < 0 ? 1 : w->opts.png_level;
    int e, res;

    if (!p)
        return hc_error(-ENOMEM, DOM, "out of memory");
    w->priv = p;
    w->ops = &pwriter_ops;
    p->ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (!p->ctx) {
        res = hc_error(-ENOMEM, DOM, "out of memory");
        goto out;
    }
    p->row_bytes = (size_t)w->info.width * hc_pixel_bytes(w->info.channels, w->info.depth);
    ihdr.width = (uint32_t)w->info.width;
    ihdr.height = (uint32_t)w->info.height;
    ihdr.bit_depth = (uint8_t)w->info.depth;
    ihdr.color_type = color_type[w->info.channels];
    e = spng_set_png_file(p->ctx, w->fp);
    if (!e)
        e = spng_set_ihdr(p->ctx, &ihdr);
    if (!e)
        e = spng_set_option(p->ctx, SPNG_IMG_COMPRESSION_LEVEL, level);
    if (!e && level > 0)
        e = spng_set_option(p->ctx, SPNG_FILTER_CHOICE, SPNG_FILTER_CHOICE_PAETH);
    else if (!e)
        e = spng_set_option(p->ctx, SPNG_FILTER_CHOICE, SPNG_FILTER_CHOICE_NONE);
    if (e) {
        res = spng_fail(-EINVAL, e, "encoder set-up");
        goto out;
    }
    if (w->meta && w->meta->icc && w->meta->icc_len) {
        struct spng_iccp iccp = {0};

        strcpy(iccp.profile_name, "ICC Profile");
        iccp.profile = (char *)w->meta->icc; /* spng copies nothing but only reads */
        iccp.profile_len = w->meta->icc_len;
        e = spng_set_iccp(p->ctx, &iccp);
        if (e) {
            res = spng_fail(-EINVAL, e, "ICC profile");
            goto out;
        }
    }
    if (w->meta && w->meta->exif && w->meta->exif_len) {
        struct spng_exif exif = {.length = w->meta->exif_len, .data = (char *)w->meta->exif};

        /* spng refuses EXIF that does not start with a TIFF header: drop it, not the image */
        spng_set_exif(p->ctx, &exif);
    }
    e = spng_encode_image(p->ctx, NULL, 0, SPNG_FMT_PNG,
                          SPNG_ENCODE_PROGRESSIVE | SPNG_ENCODE_FINALIZE);
    if (e) {
        res = pwriter_fail(w, e, "encoder start");
        goto out;
    }
    return 0;
out:
    pwriter_free(w);
    w->ops = NULL;
    return res;
}

#else /* no libspng: stb reads PNG, writing is not built in */

int
hc_png_reader_open(struct hc_reader *r)
{
    return hc_stb_reader_open(r);
}

int
hc_png_writer_open(struct hc_writer *w)
{
    (void)w;
    return hc_error(-ENOTSUP, DOM, "writing PNG is not built in (needs libspng)");
}

#endif
