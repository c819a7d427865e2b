/* tileset.h: the three-step workflow's folder of tiles (`hc split`, `hc stitch`).
 *
 * `split` writes DIR/manifest.txt, DIR/tile-NNNNN.png (each tile's padded source rectangle,
 * lossless, same depth) and DIR/meta.icc / DIR/meta.exif when the input has them, after
 * removing those of an earlier split there (and DIR/upscaled/tile-*.png). Something
 * else upscales every tile into DIR/upscaled/tile-NNNNN.png (any program: the whole padded
 * tile scaled by the factor, or exactly the tile's output rectangle). `stitch` crops each
 * upscaled tile to its output rectangle and streams the bands into the output file.
 *
 * manifest.txt (text, one record per line):
 *   hc-tileset 1
 *   image <src_w> <src_h> <channels> <depth> <format>
 *   scale <s>
 *   tile <T>
 *   tiles <n>
 *   <idx> <out_x> <out_y> <out_w> <out_h> <src_x> <src_y> <src_w> <src_h>     (n lines)
 */
#ifndef HC_TILESET_H
#define HC_TILESET_H

#include "codec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Splits image in into tiles of tile x tile output pixels for an upscale by scale, in dir
 * (created if missing). Memory stays bounded by a band of source rows. Returns 0 or -errno
 * with hc_last_error() set. */
int hc_tileset_split(const char *in, const char *dir, int scale, int tile,
                     const struct hc_limits *lim);

/* Stitches dir's upscaled tiles into out (format from opts->format, else out's name, else
 * the input's). Nothing is left at out on failure. Returns 0 or -errno. */
int hc_tileset_stitch(const char *dir, const char *out, const struct hc_writer_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
