/* wire.h: the binary tile format spoken between hcfs/hc (client) and hc-gpu-service.
 *
 * Little-endian, versioned, several tiles per message (gpu_service/PROTOCOL.md has the full
 * description and a worked example):
 *
 *   header      8 bytes   u32 magic ("HCUP" request, "HCRS" response), u16 version (1),
 *                         u16 tile count n (1..HC_WIRE_MAX_TILES)
 *   descriptors n x 48    per tile: u32 id, u32 image_w, u32 image_h,
 *                         i32 out_x, out_y, out_w, out_h    (output rect, global output coords)
 *                         i32 src_x, src_y, src_w, src_h    (padded source rect, global source)
 *                         u8 channels (1-4), u8 depth (8/16), u8 scale (1-8), u8 filter (1 bicubic)
 *   pixels      in descriptor order, packed rows, native 16-bit samples little-endian:
 *               request: src_w*src_h*channels*depth/8 bytes per tile,
 *               response: out_w*out_h*channels*depth/8 bytes per tile.
 *
 * A response repeats the request's descriptors (same ids, same order). The whole body may be
 * compressed as HTTP Content-Encoding says (lz4 frame or zstd); that is the HTTP layer's job,
 * these functions see plain bytes.
 */
#ifndef HC_WIRE_H
#define HC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HC_WIRE_MAGIC_REQUEST 0x50554348u  /* "HCUP" */
#define HC_WIRE_MAGIC_RESPONSE 0x53524348u /* "HCRS" */
#define HC_WIRE_VERSION 1
#define HC_WIRE_HEADER_SIZE 8
#define HC_WIRE_DESC_SIZE 48
#define HC_WIRE_MAX_TILES 4096

struct hc_wire_tile {
    uint32_t id;
    uint32_t image_w, image_h; /* global source image size */
    struct hc_rect out;        /* output rectangle, global output coordinates */
    struct hc_rect src;        /* padded source rectangle, global source coordinates */
    uint8_t channels, depth, scale, filter;
};

/* Bytes of a tile's source / output pixels. */
size_t hc_wire_src_bytes(const struct hc_wire_tile *t);
size_t hc_wire_out_bytes(const struct hc_wire_tile *t);

/* Checks one descriptor on its own: channels, depth, scale, filter in range, rectangles
 * non-empty and inside their images, src equal to the padded rectangle of out
 * (hc_tile_src_rect). Returns 0 or -EINVAL / -ERANGE (scale) with hc_last_error() set. */
int hc_wire_check_tile(const struct hc_wire_tile *t);

/* Builds a message: header, descriptors, then pixels[i] (packed, hc_wire_src_bytes() for a
 * request, hc_wire_out_bytes() for a response). *buf is malloc'd; free() it.
 * Returns 0 or -EINVAL / -ENOMEM. */
int hc_wire_encode(uint32_t magic, const struct hc_wire_tile *tiles, const uint8_t *const *pixels,
                   size_t n, uint8_t **buf, size_t *len);

/* Writes a message's header and descriptors (HC_WIRE_HEADER_SIZE + n * HC_WIRE_DESC_SIZE
 * bytes) into buf, for a writer that places the pixels itself (the service computes output
 * tiles straight into the response body). Tiles are checked as hc_wire_encode() does.
 * Returns 0 or -EINVAL. */
int hc_wire_encode_header(uint32_t magic, const struct hc_wire_tile *tiles, size_t n, uint8_t *buf);

/* Parses a message of the given magic held in buf[0..len): checks magic, version, count
 * and every descriptor, and that the body length is exactly what the descriptors say,
 * before anything reads pixels. Fills tiles[0..*n) (at most max) and pixels[i], pointers
 * into buf. Returns 0, -EPROTO (wrong magic/version), -EINVAL (bad descriptor, sizes that
 * disagree with the body), -ERANGE (scale out of range), -E2BIG (more than max tiles). */
int hc_wire_parse(uint32_t magic, const uint8_t *buf, size_t len, struct hc_wire_tile *tiles,
                  const uint8_t **pixels, size_t max, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
