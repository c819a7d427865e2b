/* codec.h: header probes, streaming decoders (readers) and streaming encoders (writers).
 *
 * Readers hand out rows top to bottom so a whole job never holds the decoded image: JPEG
 * (libjpeg-turbo) and non-interlaced PNG (libspng) decode row by row; the others (stb_image,
 * interlaced PNG) decode once and serve rows from memory. Writers take rows top to bottom and
 * write to a temporary file beside the destination, which hc_writer_finish() fsyncs and
 * renames into place: a failed or aborted write leaves nothing at the destination.
 *
 * Every open checks the header's dimensions against hc_limits before allocating anything
 * that depends on them.
 *
 * Thread safety: probes are reentrant; a reader or writer is used by one thread at a time.
 */
#ifndef HC_CODEC_H
#define HC_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Colour metadata carried from input to output unchanged. */
struct hc_meta {
    uint8_t *icc; /* ICC profile (JPEG APP2 chunks joined / PNG iCCP inflated), or NULL */
    size_t icc_len;
    uint8_t *exif; /* EXIF payload starting at the TIFF header ("II*\0" / "MM\0*"), or NULL */
    size_t exif_len;
};

/* Frees the buffers of *m (not m itself) and zeroes it. */
void hc_meta_clear(struct hc_meta *m);

struct hc_limits {
    uint64_t max_pixels; /* width * height of an input, default HC_DEFAULT_MAX_PIXELS */
    int max_dim;         /* width and height each, default HC_DEFAULT_MAX_DIM */
};
#define HC_DEFAULT_MAX_PIXELS (100ull * 1000 * 1000)
#define HC_DEFAULT_MAX_DIM 65535

/* Fills *lim with the defaults. */
void hc_limits_default(struct hc_limits *lim);

/* Reads only the header of a file / buffer. Returns 0, or -EINVAL (not a supported image),
 * -EIO/-errno (read error); the reason is in hc_last_error(). Does not apply limits. */
int hc_probe_file(const char *path, struct hc_image_info *info);
int hc_probe_mem(const void *buf, size_t len, struct hc_image_info *info);

struct hc_reader;

/* Opens a decoder. lim may be NULL (defaults). Returns 0 and *out, or -EINVAL (bad or
 * unsupported data, CMYK JPEG refused, ...), -EFBIG (over the limits), -ENOMEM, -errno.
 * Free with hc_reader_close(). */
int hc_reader_open(const char *path, const struct hc_limits *lim, struct hc_reader **out);
int hc_reader_open_mem(const void *buf, size_t len, const struct hc_limits *lim,
                       struct hc_reader **out); /* buf must outlive the reader */

/* What will be decoded: format, size, channels and depth of the rows handed out. */
const struct hc_image_info *hc_reader_info(const struct hc_reader *r);

/* ICC profile and EXIF found in the file (may be empty). Owned by the reader. */
const struct hc_meta *hc_reader_meta(const struct hc_reader *r);

/* Decodes the next nrows rows into dst (rows stride bytes apart). Returns 0, or -EINVAL
 * when the data turns out truncated or corrupt (no partial success: treat the image as
 * failed). */
int hc_reader_read_rows(struct hc_reader *r, uint8_t *dst, size_t stride, int nrows);

void hc_reader_close(struct hc_reader *r);

struct hc_writer_opts {
    enum hc_format format; /* JPEG, PNG, BMP or TGA */
    int quality;           /* JPEG quality 1..100; 0 means the default, 95 */
    int png_level;         /* zlib level 0..9 for PNG; -1 means the default (a fast level) */
};

struct hc_writer;

/* Opens an encoder writing path (through a temporary file beside it). info gives the size,
 * channels and depth of the rows that will be written; the writer converts what the format
 * cannot hold (alpha dropped for JPEG, 16 -> 8 bit for JPEG/BMP/TGA). meta may be NULL.
 * Returns 0 and *out, or -errno with hc_last_error() set. */
int hc_writer_open(const char *path, const struct hc_image_info *info,
                   const struct hc_writer_opts *opts, const struct hc_meta *meta,
                   struct hc_writer **out);

/* Encodes the next nrows rows. Returns 0 or -errno. */
int hc_writer_write_rows(struct hc_writer *w, const uint8_t *src, size_t stride, int nrows);

/* Finishes the file: checks every row was written, flushes, fsyncs, renames into place and
 * frees w. On failure removes the temporary file, frees w and returns -errno. */
int hc_writer_finish(struct hc_writer *w);

/* Gives up: removes the temporary file and frees w. NULL is allowed. */
void hc_writer_abort(struct hc_writer *w);

/* Whole-image helpers built on the above (tests, the split/stitch workflow). *pixels is
 * freed with free(). */
int hc_decode_file(const char *path, const struct hc_limits *lim, struct hc_image_info *info,
                   uint8_t **pixels, struct hc_meta *meta);
int hc_encode_file(const char *path, const struct hc_image_info *info, const uint8_t *pixels,
                   size_t stride, const struct hc_writer_opts *opts, const struct hc_meta *meta);

#ifdef __cplusplus
}
#endif
#endif
