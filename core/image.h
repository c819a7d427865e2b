/* image.h: pixel buffers, views and rectangles shared by every module.
 *
 * Pixels are interleaved (gray, gray+alpha, RGB, RGBA: 1-4 channels), 8 or 16 bits per
 * sample; 16-bit samples are native-endian uint16_t. Rectangles are in *global* image
 * coordinates: a view of rows 100..163 of an image says y = 100, and code that walks it
 * keeps using global indices (this is what keeps tiles seam-free, see shared/DESIGN.md).
 */
#ifndef HC_IMAGE_H
#define HC_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HC_MAX_SCALE 8
#define HC_MAX_CHANNELS 4

enum hc_format {
    HC_FORMAT_UNKNOWN = 0,
    HC_FORMAT_JPEG,
    HC_FORMAT_PNG,
    HC_FORMAT_BMP,
    HC_FORMAT_TGA,
    HC_FORMAT_GIF, /* read only (first frame); written as PNG */
    HC_FORMAT_PSD, /* read only (composite); written as PNG */
    HC_FORMAT_PNM, /* read only; written as PNG */
    HC_FORMAT_HDR, /* read only (tone-mapped by stb to 8 bit); written as PNG */
};

enum hc_filter {
    HC_FILTER_BICUBIC = 1,
};

struct hc_rect {
    int x, y, w, h;
};

/* What a header says about an image, without decoding pixels. */
struct hc_image_info {
    enum hc_format format;
    int width, height;
    int channels; /* 1..4 as decoded (palette PNG -> 3 or 4, CMYK JPEG -> 3) */
    int depth;    /* 8 or 16 bits per sample as decoded */
};

/* A window on pixels the caller owns: row r of the window (global row y + r) starts at
 * data + r * stride. */
struct hc_view {
    uint8_t *data;
    size_t stride;  /* bytes between rows */
    int x, y, w, h; /* global rectangle the window covers */
    int channels;   /* 1..4 */
    int depth;      /* 8 or 16 */
};

/* Bytes per pixel. */
static inline size_t
hc_pixel_bytes(int channels, int depth)
{
    return (size_t)channels * (size_t)(depth / 8);
}

/* Pointer to global pixel (x, y) of a view; the caller keeps (x, y) inside it. */
static inline uint8_t *
hc_view_at(const struct hc_view *v, int x, int y)
{
    return v->data + (size_t)(y - v->y) * v->stride +
           (size_t)(x - v->x) * hc_pixel_bytes(v->channels, v->depth);
}

const char *hc_format_name(enum hc_format f);

/* The format a file name's extension names (".jpg", ".jpeg", ".png", ".bmp", ".tga"; case
 * insensitive), HC_FORMAT_UNKNOWN otherwise. Only writable formats are returned. */
enum hc_format hc_format_from_path(const char *path);

/* The format an output keeps when the filesystem mirrors an input of format f: itself when
 * we can write it, PNG otherwise. */
enum hc_format hc_format_writable(enum hc_format f);

#ifdef __cplusplus
}
#endif
#endif
