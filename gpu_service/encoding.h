/* encoding.h: HTTP body encodings of the tile protocol: identity, lz4 (frame format) and
 * zstd. Decoding is bounded: a body that would expand past `max` bytes is refused before
 * more than `max` bytes are allocated (a zip bomb costs nothing).
 */
#ifndef HC_ENCODING_H
#define HC_ENCODING_H

#include <stddef.h>
#include <stdint.h>

enum hc_encoding { HC_ENC_IDENTITY = 0, HC_ENC_LZ4, HC_ENC_ZSTD };

/* Parses a Content-Encoding value (NULL or "" = identity). Returns 0, or -ENOTSUP for an
 * encoding we do not speak. */
int hc_encoding_parse(const char *value, enum hc_encoding *enc);

/* The encoding to answer with for an Accept-Encoding value: the first of lz4 / zstd the
 * client lists (q=0 excluded), identity otherwise. */
enum hc_encoding hc_encoding_accept(const char *value);

const char *hc_encoding_name(enum hc_encoding enc);

/* Decodes in[0..len) into a malloc'd *out (free()). Returns 0, -E2BIG (would exceed max),
 * -EINVAL (corrupt or truncated data), -ENOMEM. */
int hc_encoding_decode(enum hc_encoding enc, const uint8_t *in, size_t len, size_t max,
                       uint8_t **out, size_t *out_len);

/* Encodes in[0..len) into a malloc'd *out (free()). Returns 0, -ENOMEM or -EIO. */
int hc_encoding_encode(enum hc_encoding enc, const uint8_t *in, size_t len, uint8_t **out,
                       size_t *out_len);

#endif
