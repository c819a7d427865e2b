/* codec_internal.h: what codec.c (dispatch, temp files, limits) shares with the format
 * modules jpeg.c, png.c and stbcodec.c. Not installed, not for other directories.
 *
 * A reader or writer is one struct for every format; the format module fills in its ops
 * table and keeps its own state behind priv. codec.c owns the struct, the source (file or
 * memory) and, for writers, the temporary file.
 */
#ifndef HC_CODEC_INTERNAL_H
#define HC_CODEC_INTERNAL_H

#include <stdio.h>

#include "codec.h"
#include "error.h"

struct hc_reader_ops {
    /* Decodes nrows (>= 1) rows; codec.c has checked they exist. 0 or -errno. */
    int (*read_rows)(struct hc_reader *r, uint8_t *dst, size_t stride, int nrows);
    void (*close)(struct hc_reader *r); /* frees priv; NULL allowed */
};

struct hc_reader {
    const struct hc_reader_ops *ops;
    struct hc_image_info info;
    struct hc_meta meta;
    int next_row;
    int failed; /* once a read failed, every later read fails too */
    /* Source: exactly one of fp (owned, closed by codec.c) and mem is set. */
    FILE *fp;
    const uint8_t *mem;
    size_t mem_len;
    const struct hc_limits *lim; /* valid only during open */
    void *priv;
};

struct hc_writer_fmt_ops {
    /* Encodes nrows rows given in the writer's input layout (info). 0 or -errno. */
    int (*write_rows)(struct hc_writer *w, const uint8_t *src, size_t stride, int nrows);
    /* Writes what ends the file (all rows were written) into fp. 0 or -errno. */
    int (*finish)(struct hc_writer *w);
    void (*free)(struct hc_writer *w); /* frees priv; called on every path */
};

struct hc_writer {
    const struct hc_writer_fmt_ops *ops;
    struct hc_image_info info; /* the rows the caller hands in */
    struct hc_writer_opts opts;
    const struct hc_meta *meta; /* valid only during open */
    int rows_written;
    int failed;
    FILE *fp; /* the temporary file */
    char *tmp_path;
    char *final_path;
    void *priv;
};

/* Format modules: fill r->info, r->meta, r->ops, r->priv from r->fp or r->mem, checking
 * r->lim before any allocation that depends on the image size. On failure they release
 * what they allocated (priv) and return -errno with hc_last_error() set. */
int hc_jpeg_reader_open(struct hc_reader *r);
int hc_png_reader_open(struct hc_reader *r);
int hc_stb_reader_open(
    struct hc_reader *r); /* BMP, TGA, GIF, PSD, PNM, HDR (and PNG without libspng) */

/* Format modules: set w->ops and w->priv, write the header into w->fp. */
int hc_jpeg_writer_open(struct hc_writer *w);
int hc_png_writer_open(struct hc_writer *w);
int hc_bmp_writer_open(struct hc_writer *w);
int hc_tga_writer_open(struct hc_writer *w);

/* Header probes on the first bytes of a file. A probe source reads at offsets, from memory
 * or from a file descriptor through a small window, so JPEG can hop over segments. */
struct hc_probe_src {
    const uint8_t *mem; /* whole buffer, or NULL for fd */
    size_t len;         /* buffer length, or file size */
    int fd;
    uint8_t win[4096];
    size_t win_off, win_len;
};
/* Copies n bytes at off into dst: 0, or -EINVAL when the source is shorter, -errno. */
int hc_probe_read(struct hc_probe_src *s, uint64_t off, void *dst, size_t n);

int hc_jpeg_probe(struct hc_probe_src *s, struct hc_image_info *info);
int hc_png_probe(struct hc_probe_src *s, struct hc_image_info *info);
/* buf holds the first bytes of the file (up to 64 KiB): stb needs only the header. */
int hc_stb_probe(const uint8_t *buf, size_t n, struct hc_image_info *info);

/* The format the first bytes name by their magic (TGA, which has none, is not sniffed). */
enum hc_format hc_sniff(const uint8_t *buf, size_t n);

/* -EFBIG with "<domain>: WxH exceeds ..." when w x h is over lim (NULL: defaults), -EINVAL
 * when a size is zero or negative. */
int hc_check_limits(const char *domain, int64_t w, int64_t h, const struct hc_limits *lim);

/* 16 -> 8 bit the way every writer rounds: (v * 255 + 32767) / 65535. */
static inline uint8_t
hc_u16_to_u8(uint16_t v)
{
    return (uint8_t)(((uint32_t)v * 255u + 32767u) / 65535u);
}

/* Copies one row of n pixels in (channels, depth) into 8-bit out_ch channels: 1 (gray),
 * 3 (RGB) or 4 (RGBA); BGR order when bgr. Drops or adds alpha (opaque), expands gray. */
void hc_convert_row_u8(const uint8_t *src, int channels, int depth, uint8_t *dst, int out_ch,
                       int bgr, int n);

#endif
