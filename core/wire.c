/* wire.c: encoder and parser of the binary tile format (core/wire.h, gpu_service/PROTOCOL.md).
 *
 * The parser is the service's first line of defence: every count and rectangle is checked,
 * and every size is computed in 64 bits, before a single pixel byte is looked at.
 */
#include "wire.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tile.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "wire.c assumes a little-endian host (16-bit samples travel as little-endian)"
#endif

/* Images larger than this on a side are refused: it keeps image_w * scale inside an int. */
#define WIRE_MAX_SIDE (INT_MAX / HC_MAX_SCALE)

static uint32_t
get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t
get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void
put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void
put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

size_t
hc_wire_src_bytes(const struct hc_wire_tile *t)
{
    if (t->src.w <= 0 || t->src.h <= 0)
        return 0;
    return (size_t)t->src.w * (size_t)t->src.h * hc_pixel_bytes(t->channels, t->depth);
}

size_t
hc_wire_out_bytes(const struct hc_wire_tile *t)
{
    if (t->out.w <= 0 || t->out.h <= 0)
        return 0;
    return (size_t)t->out.w * (size_t)t->out.h * hc_pixel_bytes(t->channels, t->depth);
}

/* Whether r is non-empty and inside [0, w) x [0, h), without overflowing. */
static int
rect_inside(const struct hc_rect *r, int64_t w, int64_t h)
{
    return r->w > 0 && r->h > 0 && r->x >= 0 && r->y >= 0 && (int64_t)r->x + r->w <= w &&
           (int64_t)r->y + r->h <= h;
}

int
hc_wire_check_tile(const struct hc_wire_tile *t)
{
    struct hc_rect need;
    size_t pb;

    if (t->channels < 1 || t->channels > HC_MAX_CHANNELS)
        return hc_error(-EINVAL, "wire", "tile %u: %u channels (1-%d allowed)", t->id, t->channels,
                        HC_MAX_CHANNELS);
    if (t->depth != 8 && t->depth != 16)
        return hc_error(-EINVAL, "wire", "tile %u: depth %u (8 or 16 allowed)", t->id, t->depth);
    if (t->scale < 1 || t->scale > HC_MAX_SCALE)
        return hc_error(-ERANGE, "wire", "tile %u: scale %u (1-%d allowed)", t->id, t->scale,
                        HC_MAX_SCALE);
    if (t->filter != HC_FILTER_BICUBIC)
        return hc_error(-EINVAL, "wire", "tile %u: unknown filter %u", t->id, t->filter);
    if (t->image_w < 1 || t->image_h < 1 || t->image_w > WIRE_MAX_SIDE ||
        t->image_h > WIRE_MAX_SIDE)
        return hc_error(-EINVAL, "wire", "tile %u: image size %ux%u out of range", t->id,
                        t->image_w, t->image_h);
    if (!rect_inside(&t->out, (int64_t)t->image_w * t->scale, (int64_t)t->image_h * t->scale))
        return hc_error(-EINVAL, "wire",
                        "tile %u: output rect %d,%d %dx%d empty or outside the %lldx%lld output",
                        t->id, t->out.x, t->out.y, t->out.w, t->out.h,
                        (long long)t->image_w * t->scale, (long long)t->image_h * t->scale);
    if (!rect_inside(&t->src, t->image_w, t->image_h))
        return hc_error(-EINVAL, "wire",
                        "tile %u: source rect %d,%d %dx%d empty or outside the %ux%u image", t->id,
                        t->src.x, t->src.y, t->src.w, t->src.h, t->image_w, t->image_h);
    /* out may be up to 2^31 on a side, so out.w * out.h * 8 bytes can pass 2^64: a byte
     * count that wrapped around would let a short body pass for a huge tile. (w * h of
     * either rectangle fits 64 bits; the pixel size is at most 8.) */
    pb = hc_pixel_bytes(t->channels, t->depth);
    if ((uint64_t)t->out.w * (uint64_t)t->out.h > SIZE_MAX / pb ||
        (uint64_t)t->src.w * (uint64_t)t->src.h > SIZE_MAX / pb)
        return hc_error(-EINVAL, "wire", "tile %u: %dx%d output pixels do not fit in memory", t->id,
                        t->out.w, t->out.h);
    hc_tile_src_rect((int)t->image_w, (int)t->image_h, t->scale, &t->out, &need);
    if (memcmp(&need, &t->src, sizeof need) != 0)
        return hc_error(
            -EINVAL, "wire", "tile %u: source rect %d,%d %dx%d is not the padded rect %d,%d %dx%d",
            t->id, t->src.x, t->src.y, t->src.w, t->src.h, need.x, need.y, need.w, need.h);
    return 0;
}

static void
put_desc(uint8_t *p, const struct hc_wire_tile *t)
{
    const int32_t v[8] = {t->out.x, t->out.y, t->out.w, t->out.h,
                          t->src.x, t->src.y, t->src.w, t->src.h};

    put_u32(p, t->id);
    put_u32(p + 4, t->image_w);
    put_u32(p + 8, t->image_h);
    for (int i = 0; i < 8; i++)
        put_u32(p + 12 + 4 * i, (uint32_t)v[i]);
    p[44] = t->channels;
    p[45] = t->depth;
    p[46] = t->scale;
    p[47] = t->filter;
}

static void
get_desc(const uint8_t *p, struct hc_wire_tile *t)
{
    int32_t v[8];

    t->id = get_u32(p);
    t->image_w = get_u32(p + 4);
    t->image_h = get_u32(p + 8);
    for (int i = 0; i < 8; i++)
        v[i] = (int32_t)get_u32(p + 12 + 4 * i);
    t->out = (struct hc_rect){v[0], v[1], v[2], v[3]};
    t->src = (struct hc_rect){v[4], v[5], v[6], v[7]};
    t->channels = p[44];
    t->depth = p[45];
    t->scale = p[46];
    t->filter = p[47];
}

static size_t
tile_bytes(uint32_t magic, const struct hc_wire_tile *t)
{
    return magic == HC_WIRE_MAGIC_REQUEST ? hc_wire_src_bytes(t) : hc_wire_out_bytes(t);
}

int
hc_wire_encode(uint32_t magic, const struct hc_wire_tile *tiles, const uint8_t *const *pixels,
               size_t n, uint8_t **buf, size_t *len)
{
    size_t total, off;
    uint8_t *b;
    int rc;

    if (magic != HC_WIRE_MAGIC_REQUEST && magic != HC_WIRE_MAGIC_RESPONSE)
        return hc_error(-EINVAL, "wire", "unknown magic 0x%08x", magic);
    if (n < 1 || n > HC_WIRE_MAX_TILES)
        return hc_error(-EINVAL, "wire", "%zu tiles (1-%d allowed)", n, HC_WIRE_MAX_TILES);
    total = HC_WIRE_HEADER_SIZE + n * HC_WIRE_DESC_SIZE;
    for (size_t i = 0; i < n; i++) {
        rc = hc_wire_check_tile(&tiles[i]);
        if (rc)
            return rc;
        if (!pixels[i])
            return hc_error(-EINVAL, "wire", "tile %u: no pixels", tiles[i].id);
        size_t tb = tile_bytes(magic, &tiles[i]);
        if (total > SIZE_MAX - tb)
            return hc_error(-EINVAL, "wire", "message too large");
        total += tb;
    }
    b = malloc(total);
    if (!b)
        return hc_error(-ENOMEM, "wire", "out of memory for a %zu-byte message", total);
    put_u32(b, magic);
    put_u16(b + 4, HC_WIRE_VERSION);
    put_u16(b + 6, (uint16_t)n);
    off = HC_WIRE_HEADER_SIZE;
    for (size_t i = 0; i < n; i++, off += HC_WIRE_DESC_SIZE)
        put_desc(b + off, &tiles[i]);
    for (size_t i = 0; i < n; i++) {
        size_t tb = tile_bytes(magic, &tiles[i]);
        memcpy(b + off, pixels[i], tb);
        off += tb;
    }
    *buf = b;
    *len = total;
    return 0;
}

int
hc_wire_encode_header(uint32_t magic, const struct hc_wire_tile *tiles, size_t n, uint8_t *buf)
{
    int rc;

    if (magic != HC_WIRE_MAGIC_REQUEST && magic != HC_WIRE_MAGIC_RESPONSE)
        return hc_error(-EINVAL, "wire", "unknown magic 0x%08x", magic);
    if (n < 1 || n > HC_WIRE_MAX_TILES)
        return hc_error(-EINVAL, "wire", "%zu tiles (1-%d allowed)", n, HC_WIRE_MAX_TILES);
    for (size_t i = 0; i < n; i++) {
        rc = hc_wire_check_tile(&tiles[i]);
        if (rc)
            return rc;
    }
    put_u32(buf, magic);
    put_u16(buf + 4, HC_WIRE_VERSION);
    put_u16(buf + 6, (uint16_t)n);
    for (size_t i = 0; i < n; i++)
        put_desc(buf + HC_WIRE_HEADER_SIZE + i * HC_WIRE_DESC_SIZE, &tiles[i]);
    return 0;
}

int
hc_wire_parse(uint32_t magic, const uint8_t *buf, size_t len, struct hc_wire_tile *tiles,
              const uint8_t **pixels, size_t max, size_t *n)
{
    uint32_t m;
    uint16_t version, count;
    size_t need, off;
    int rc;

    if (len < HC_WIRE_HEADER_SIZE)
        return hc_error(-EINVAL, "wire", "truncated header: %zu of %d bytes", len,
                        HC_WIRE_HEADER_SIZE);
    m = get_u32(buf);
    if (m != magic)
        return hc_error(-EPROTO, "wire", "wrong magic 0x%08x (expected 0x%08x)", m, magic);
    version = get_u16(buf + 4);
    if (version != HC_WIRE_VERSION)
        return hc_error(-EPROTO, "wire", "unsupported version %u (this side speaks %d)", version,
                        HC_WIRE_VERSION);
    count = get_u16(buf + 6);
    if (count < 1 || count > HC_WIRE_MAX_TILES)
        return hc_error(-EINVAL, "wire", "tile count %u (1-%d allowed)", count, HC_WIRE_MAX_TILES);
    if (count > max)
        return hc_error(-E2BIG, "wire", "%u tiles in one message (at most %zu accepted)", count,
                        max);
    need = HC_WIRE_HEADER_SIZE + (size_t)count * HC_WIRE_DESC_SIZE;
    if (len < need)
        return hc_error(-EINVAL, "wire", "truncated descriptors: %zu bytes for %u tiles", len,
                        count);
    /* Descriptors are checked into a scratch copy first, so that tiles[] stays untouched on
     * failure as the header promises. */
    for (size_t i = 0; i < count; i++) {
        struct hc_wire_tile t;

        get_desc(buf + HC_WIRE_HEADER_SIZE + i * HC_WIRE_DESC_SIZE, &t);
        rc = hc_wire_check_tile(&t);
        if (rc)
            return rc;
        size_t tb = tile_bytes(magic, &t);
        if (need > SIZE_MAX - tb)
            return hc_error(-EINVAL, "wire", "message size overflows");
        need += tb;
    }
    if (need != len)
        return hc_error(-EINVAL, "wire", "body is %zu bytes but its descriptors need %zu", len,
                        need);
    off = HC_WIRE_HEADER_SIZE + (size_t)count * HC_WIRE_DESC_SIZE;
    for (size_t i = 0; i < count; i++) {
        get_desc(buf + HC_WIRE_HEADER_SIZE + i * HC_WIRE_DESC_SIZE, &tiles[i]);
        pixels[i] = buf + off;
        off += tile_bytes(magic, &tiles[i]);
    }
    *n = count;
    return 0;
}
