/* stbcodec.c: the formats served by stb_image (BMP, TGA, GIF first frame, PSD composite,
 * PNM, HDR tone-mapped to 8 bit; PNG when libspng is absent), and our own streaming BMP and
 * TGA writers.
 *
 * stb decodes a whole image at once, so these readers hold the decoded image and serve
 * rows from it; that is acceptable for formats this rare. The size is checked from the
 * header (stbi_info) before stb allocates anything. stb fills a truncated BMP or TGA with
 * zeros instead of failing, so for their uncompressed variants we check the file is as
 * long as the header says first.
 *
 * The writers are ours because stb_image_write wants the whole image in memory: BMP is
 * written top-down (negative height) and TGA with the top-left origin bit, so rows go
 * out as they arrive. BMP: 8-bit gray palette for 1 channel, 24-bit BGR for RGB, 32-bit
 * BGRA (BITMAPV4HEADER with bit masks, which Pillow and stb read as alpha) when there is
 * alpha. TGA: type 3 (gray), type 2 24/32 bit.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb_image.h>

#include "codec_internal.h"

/* A file larger than this cannot be an image within any sane limit: refuse before reading
 * it into memory. */
#define STB_MAX_FILE (2ull << 30)

static enum hc_format
stb_format(const uint8_t *buf, size_t n)
{
    enum hc_format f = hc_sniff(buf, n);

    /* stb's only format without magic that we compile in is TGA */
    return f == HC_FORMAT_UNKNOWN ? HC_FORMAT_TGA : f;
}

static int
not_an_image(void)
{
    return hc_error(-EINVAL, "codec", "not a supported image (unknown format)");
}

/* Whether stb will hand out 16-bit samples. stb's own stbi_is_16_bit misses 16-bit PSD
 * files (its PSD check is never reached in this version), so PSD's depth field is read
 * here. */
static int
is_16bit(const uint8_t *b, size_t n)
{
    if (hc_sniff(b, n) == HC_FORMAT_PSD)
        return n >= 24 && b[22] == 0 && b[23] == 16;
    return stbi_is_16_bit_from_memory(b, n > INT_MAX ? INT_MAX : (int)n);
}

/* stb 2.27 (Debian 12) returns 16-bit PNM samples in file (big-endian) order instead of
 * native order; later versions swap them. Ask stb once how it decodes a 1-pixel PGM
 * rather than guess from its version. */
static int
stb_pnm16_needs_swap(void)
{
    static _Atomic int state; /* 0 unknown, 1 native, 2 swapped: a race only repeats work */
    static const uint8_t pgm[] = "P5\n1 1\n65535\n\x01\x02";

    if (!state) {
        int w, h, c;
        uint16_t *v = stbi_load_16_from_memory(pgm, (int)sizeof(pgm) - 1, &w, &h, &c, 1);

        state = v && v[0] == 0x0201 ? 2 : 1;
        stbi_image_free(v);
    }
    return state == 2;
}

int
hc_stb_probe(const uint8_t *buf, size_t n, struct hc_image_info *info)
{
    int w, h, comp;

    if (n > INT_MAX)
        n = INT_MAX;
    if (!stbi_info_from_memory(buf, (int)n, &w, &h, &comp))
        return not_an_image();
    if (h < 0 && h != INT_MIN)
        h = -h; /* stb's BMP info passes a top-down file's negative height through */
    if (w <= 0 || h <= 0 || comp < 1 || comp > 4)
        return not_an_image();
    info->format = stb_format(buf, n);
    info->width = w;
    info->height = h;
    info->channels = comp;
    info->depth = is_16bit(buf, n) ? 16 : 8;
    return 0;
}

static uint32_t
le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static unsigned
le16(const uint8_t *b)
{
    return (unsigned)b[0] | (unsigned)b[1] << 8;
}

/* -EINVAL when an uncompressed BMP/TGA is shorter than its header promises. */
static int
check_truncated(enum hc_format f, const uint8_t *b, size_t n, int w, int h)
{
    uint64_t need = 0;

    if (f == HC_FORMAT_BMP && n >= 34 && le32(b + 14) >= 40) {
        uint32_t off = le32(b + 10);
        unsigned bpp = le16(b + 28);
        uint32_t comp = le32(b + 30);

        if (comp == 0 || comp == 3 || comp == 6) {
            uint64_t row = (((uint64_t)w * bpp + 31) / 32) * 4;

            need = off + row * (uint64_t)h;
        }
    } else if (f == HC_FORMAT_TGA && n >= 18) {
        unsigned idlen = b[0], cmtype = b[1], type = b[2];
        unsigned cmlen = le16(b + 5), cmbits = b[7], bpp = b[16];

        if (type == 1 || type == 2 || type == 3)
            need = 18 + idlen + (cmtype ? ((uint64_t)cmlen * cmbits + 7) / 8 : 0) +
                   ((uint64_t)w * h * bpp + 7) / 8;
    }
    if (need > n)
        return hc_error(-EINVAL, hc_format_name(f),
                        "truncated file (%zu bytes, the header needs %llu)", n,
                        (unsigned long long)need);
    return 0;
}

/* ---- reader ---- */

struct sreader {
    uint8_t *file;  /* the file's bytes when reading from a file */
    uint8_t *image; /* decoded by stb */
    size_t row_bytes;
};

static int
sreader_read(struct hc_reader *r, uint8_t *dst, size_t stride, int nrows)
{
    struct sreader *p = r->priv;

    for (int i = 0; i < nrows; i++)
        memcpy(dst + (size_t)i * stride, p->image + (size_t)(r->next_row + i) * p->row_bytes,
               p->row_bytes);
    return 0;
}

static void
sreader_close(struct hc_reader *r)
{
    struct sreader *p = r->priv;

    if (!p)
        return;
    free(p->file);
    stbi_image_free(p->image);
    free(p);
    r->priv = NULL;
}

static const struct hc_reader_ops sreader_ops = {sreader_read, sreader_close};

static int
slurp(FILE *fp, uint8_t **buf, size_t *len)
{
    struct stat st;
    size_t n, got;

    if (fstat(fileno(fp), &st) < 0)
        return hc_error(-errno, "codec", "stat: %s", strerror(errno));
    if ((uint64_t)st.st_size > STB_MAX_FILE)
        return hc_error(-EFBIG, "codec", "file of %lld bytes is too large for this format",
                        (long long)st.st_size);
    n = (size_t)st.st_size;
    *buf = malloc(n ? n : 1);
    if (!*buf)
        return hc_error(-ENOMEM, "codec", "out of memory");
    got = fread(*buf, 1, n, fp);
    if (got != n) {
        free(*buf);
        *buf = NULL;
        return hc_error(-EIO, "codec", "short read (%zu of %zu bytes)", got, n);
    }
    *len = n;
    return 0;
}

int
hc_stb_reader_open(struct hc_reader *r)
{
    struct sreader *p = calloc(1, sizeof(*p));
    const uint8_t *buf;
    size_t len = 0;
    int w, h, comp, is16, res;
    enum hc_format f;

    if (!p)
        return hc_error(-ENOMEM, "codec", "out of memory");
    r->priv = p;
    r->ops = &sreader_ops;
    if (r->fp) {
        /* Header first: a large file that is not an image is refused without reading it. */
        uint8_t head[4096];
        size_t hn = fread(head, 1, sizeof(head), r->fp);

        if (!stbi_info_from_memory(head, (int)hn, &w, &h, &comp)) {
            res = not_an_image();
            goto out;
        }
        if (h < 0 && h != INT_MIN)
            h = -h;
        res = hc_check_limits(hc_format_name(stb_format(head, hn)), w, h, r->lim);
        if (res)
            goto out;
        rewind(r->fp);
        res = slurp(r->fp, &p->file, &len);
        if (res)
            goto out;
        buf = p->file;
    } else {
        buf = r->mem;
        len = r->mem_len;
    }
    if (len > INT_MAX) {
        res = hc_error(-EFBIG, "codec", "file too large for this format");
        goto out;
    }
    if (!stbi_info_from_memory(buf, (int)len, &w, &h, &comp) || comp < 1 || comp > 4) {
        res = not_an_image();
        goto out;
    }
    if (h < 0 && h != INT_MIN)
        h = -h; /* top-down BMP, see hc_stb_probe */
    f = stb_format(buf, len);
    res = hc_check_limits(hc_format_name(f), w, h, r->lim);
    if (res)
        goto out;
    res = check_truncated(f, buf, len, w, h);
    if (res)
        goto out;
    is16 = is_16bit(buf, len);
    if (is16)
        p->image = (uint8_t *)stbi_load_16_from_memory(buf, (int)len, &w, &h, &comp, comp);
    else
        p->image = stbi_load_from_memory(buf, (int)len, &w, &h, &comp, comp);
    if (!p->image) {
        const char *why = stbi_failure_reason();

        res = hc_error(-EINVAL, hc_format_name(f), "cannot decode: %s", why ? why : "corrupt data");
        goto out;
    }
    if (is16 && f == HC_FORMAT_PNM && stb_pnm16_needs_swap()) {
        uint16_t *v = (uint16_t *)(void *)p->image;

        for (size_t i = 0, n = (size_t)w * (size_t)h * (size_t)comp; i < n; i++)
            v[i] = (uint16_t)(v[i] << 8 | v[i] >> 8);
    }
    /* the file's bytes are no longer needed: do not hold them and the pixels together */
    free(p->file);
    p->file = NULL;
    r->info.format = f;
    r->info.width = w;
    r->info.height = h;
    r->info.channels = comp;
    r->info.depth = is16 ? 16 : 8;
    p->row_bytes = (size_t)w * hc_pixel_bytes(comp, r->info.depth);
    return 0;
out:
    sreader_close(r);
    r->ops = NULL;
    return res;
}

/* ---- BMP and TGA writers ---- */

struct rawwriter {
    int out_ch;     /* 1, 3 or 4 bytes per pixel in the file */
    size_t row_len; /* bytes per row in the file, padding included */
    uint8_t *row;
    int tga;
};

static void
put16(uint8_t *b, unsigned v)
{
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}

static void
put32(uint8_t *b, uint32_t v)
{
    put16(b, v & 0xffff);
    put16(b + 2, v >> 16);
}

static int
raw_write(struct hc_writer *w, const uint8_t *src, size_t stride, int nrows)
{
    struct rawwriter *p = w->priv;

    for (int i = 0; i < nrows; i++) {
        hc_convert_row_u8(src + (size_t)i * stride, w->info.channels, w->info.depth, p->row,
                          p->out_ch, p->out_ch > 1, w->info.width);
        if (fwrite(p->row, 1, p->row_len, w->fp) != p->row_len)
            return hc_error(-errno ? -errno : -EIO, p->tga ? "tga" : "bmp", "write: %s",
                            strerror(errno));
    }
    return 0;
}

static int
raw_finish(struct hc_writer *w)
{
    struct rawwriter *p = w->priv;
    /* TGA 2.0 footer: no extension or developer area */
    static const uint8_t footer[26] = {0,   0,   0,   0,   0,   0,   0,   0,   'T',
                                       'R', 'U', 'E', 'V', 'I', 'S', 'I', 'O', 'N',
                                       '-', 'X', 'F', 'I', 'L', 'E', '.', 0};

    if (p->tga && fwrite(footer, 1, sizeof(footer), w->fp) != sizeof(footer))
        return hc_error(-EIO, "tga", "write: %s", strerror(errno));
    return 0;
}

static void
raw_free(struct hc_writer *w)
{
    struct rawwriter *p = w->priv;

    if (!p)
        return;
    free(p->row);
    free(p);
    w->priv = NULL;
}

static const struct hc_writer_fmt_ops raw_ops = {raw_write, raw_finish, raw_free};

static int
raw_open(struct hc_writer *w, int tga)
{
    struct rawwriter *p = calloc(1, sizeof(*p));
    int ch = w->info.channels;

    if (!p)
        return hc_error(-ENOMEM, tga ? "tga" : "bmp", "out of memory");
    w->priv = p;
    w->ops = &raw_ops;
    p->tga = tga;
    p->out_ch = ch == 1 ? 1 : (ch == 3 ? 3 : 4);
    p->row_len = (size_t)w->info.width * (size_t)p->out_ch;
    if (!tga)
        p->row_len = (p->row_len + 3) & ~(size_t)3;
    p->row = calloc(1, p->row_len);
    if (!p->row)
        return hc_error(-ENOMEM, tga ? "tga" : "bmp", "out of memory");
    return 0;
}

int
hc_bmp_writer_open(struct hc_writer *w)
{
    uint8_t hdr[14 + 108 + 1024];
    size_t dib, pal, off;
    uint64_t size;
    struct rawwriter *p;
    int res;

    res = raw_open(w, 0);
    if (res)
        return res;
    p = w->priv;
    dib = p->out_ch == 4 ? 108 : 40;
    pal = p->out_ch == 1 ? 1024 : 0;
    off = 14 + dib + pal;
    size = off + (uint64_t)p->row_len * (uint64_t)w->info.height;
    if (size > UINT32_MAX)
        return hc_error(-EFBIG, "bmp", "%dx%d is too large for a BMP file", w->info.width,
                        w->info.height);
    memset(hdr, 0, sizeof(hdr));
    hdr[0] = 'B';
    hdr[1] = 'M';
    put32(hdr + 2, (uint32_t)size);
    put32(hdr + 10, (uint32_t)off);
    put32(hdr + 14, (uint32_t)dib);
    put32(hdr + 18, (uint32_t)w->info.width);
    put32(hdr + 22, (uint32_t)-w->info.height); /* negative: top-down rows */
    put16(hdr + 26, 1);
    put16(hdr + 28, (unsigned)p->out_ch * 8);
    put32(hdr + 30, p->out_ch == 4 ? 3 : 0); /* BI_BITFIELDS : BI_RGB */
    put32(hdr + 34, (uint32_t)(p->row_len * (uint64_t)w->info.height));
    put32(hdr + 38, 2835); /* 72 dpi */
    put32(hdr + 42, 2835);
    if (p->out_ch == 1)
        put32(hdr + 46, 256);
    if (p->out_ch == 4) {
        put32(hdr + 54, 0x00FF0000u);
        put32(hdr + 58, 0x0000FF00u);
        put32(hdr + 62, 0x000000FFu);
        put32(hdr + 66, 0xFF000000u);
        put32(hdr + 70, 0x73524742u); /* LCS_sRGB */
    }
    for (int i = 0; pal && i < 256; i++) {
        uint8_t *e = hdr + 14 + dib + (size_t)i * 4;

        e[0] = e[1] = e[2] = (uint8_t)i;
    }
    if (fwrite(hdr, 1, off, w->fp) != off)
        return hc_error(-EIO, "bmp", "write: %s", strerror(errno));
    return 0;
}

int
hc_tga_writer_open(struct hc_writer *w)
{
    uint8_t hdr[18] = {0};
    struct rawwriter *p;
    int res;

    if (w->info.width > 65535 || w->info.height > 65535)
        return hc_error(-EFBIG, "tga", "%dx%d is larger than TGA allows (65535 per side)",
                        w->info.width, w->info.height);
    res = raw_open(w, 1);
    if (res)
        return res;
    p = w->priv;
    hdr[2] = p->out_ch == 1 ? 3 : 2; /* uncompressed gray / true colour */
    put16(hdr + 12, (unsigned)w->info.width);
    put16(hdr + 14, (unsigned)w->info.height);
    hdr[16] = (uint8_t)(p->out_ch * 8);
    hdr[17] = (uint8_t)(0x20 | (p->out_ch == 4 ? 8 : 0)); /* top-left origin, alpha bits */
    if (fwrite(hdr, 1, sizeof(hdr), w->fp) != sizeof(hdr))
        return hc_error(-EIO, "tga", "write: %s", strerror(errno));
    return 0;
}
