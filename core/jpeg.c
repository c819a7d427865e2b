/* jpeg.c: JPEG probe, streaming reader and writer on libjpeg-turbo.
 *
 * Choices, and why:
 * - Decoding uses libjpeg's defaults (JDCT_ISLOW, fancy upsampling), the settings OpenCV's
 *   imread and most viewers use, so our pixels equal theirs bit for bit.
 * - libjpeg reports a truncated file as a *warning* and fills the rest with gray; we treat
 *   that warning, and the other corrupt-data warnings, as errors: a half-gray upscale is
 *   worse than a clear failure. Harmless warnings (extra bytes before a marker) pass.
 * - CMYK/YCCK files are converted to RGB with the naive (1-C)(1-K) formula on Adobe's
 *   inverted samples (what OpenCV and Pillow do); their CMYK ICC profile is dropped since
 *   it does not describe the RGB result.
 * - Encoding: quality 95 by default, 4:4:4 chroma at quality >= 90 and 4:2:0 below (the
 *   libvips and ImageMagick rule), baseline Huffman tables without optimisation (about 10%
 *   larger files, noticeably faster), JDCT_ISLOW.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "codec_internal.h"

#define DOM "jpeg"

struct jerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
};

static void
jerr_exit(j_common_ptr c)
{
    struct jerr *e = (struct jerr *)(void *)c->err;

    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings that mean the pixels would be wrong: fail instead of returning them. */
static int
warning_is_fatal(int code)
{
    switch (code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION:
    case JWRN_HUFF_BAD_CODE:
        return 1;
    default:
        return 0;
    }
}

static void
jerr_emit(j_common_ptr c, int level)
{
    if (level < 0) {
        if (warning_is_fatal(c->err->msg_code)) {
            if (c->err->msg_code == JWRN_JPEG_EOF) {
                struct jerr *e = (struct jerr *)(void *)c->err;

                snprintf(e->msg, sizeof(e->msg), "truncated file (premature end of data)");
                longjmp(e->jb, 1);
            }
            jerr_exit(c);
        }
        c->err->num_warnings++;
    }
    /* trace messages (level > 0) are dropped */
}

static void
jerr_silent(j_common_ptr c)
{
    (void)c;
}

static void
jerr_init(struct jerr *e)
{
    jpeg_std_error(&e->pub);
    e->pub.error_exit = jerr_exit;
    e->pub.emit_message = jerr_emit;
    e->pub.output_message = jerr_silent;
    e->msg[0] = '\0';
}

/* ---- probe ---- */

int
hc_jpeg_probe(struct hc_probe_src *s, struct hc_image_info *info)
{
    uint64_t off = 2;
    uint8_t b[8];

    /* Walk the marker segments: SOI, then FF xx [len] ..., until a SOFn. Each hop reads
     * 4 bytes, so a 64 KiB EXIF block costs nothing. */
    for (int hops = 0; hops < 10000; hops++) {
        uint8_t m;
        unsigned len;

        if (hc_probe_read(s, off, b, 2))
            return hc_error(-EINVAL, DOM, "truncated header (no frame header found)");
        if (b[0] != 0xFF)
            return hc_error(-EINVAL, DOM, "corrupt header (no marker at byte %llu)",
                            (unsigned long long)off);
        m = b[1];
        if (m == 0xFF) { /* fill byte */
            off++;
            continue;
        }
        off += 2;
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7))
            continue; /* no length */
        if (m == 0xD9 || m == 0xDA)
            return hc_error(-EINVAL, DOM, "corrupt header (image data before the frame header)");
        if (hc_probe_read(s, off, b, 2))
            return hc_error(-EINVAL, DOM, "truncated header");
        len = (unsigned)b[0] << 8 | b[1];
        if (len < 2)
            return hc_error(-EINVAL, DOM, "corrupt header (segment length %u)", len);
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            int prec, h, w, nc;

            if (len < 8 || hc_probe_read(s, off + 2, b, 6))
                return hc_error(-EINVAL, DOM, "truncated frame header");
            prec = b[0];
            h = b[1] << 8 | b[2];
            w = b[3] << 8 | b[4];
            nc = b[5];
            if (m == 0xC3 || m == 0xC7 || m == 0xCB || m == 0xCF)
                return hc_error(-EINVAL, DOM, "lossless JPEG is not supported");
            if (prec != 8)
                return hc_error(-EINVAL, DOM, "%d-bit JPEG is not supported", prec);
            if (w == 0 || h == 0)
                return hc_error(-EINVAL, DOM, "invalid image size %dx%d", w, h);
            if (nc != 1 && nc != 3 && nc != 4)
                return hc_error(-EINVAL, DOM, "%d colour components are not supported", nc);
            info->format = HC_FORMAT_JPEG;
            info->width = w;
            info->height = h;
            info->channels = nc == 1 ? 1 : 3;
            info->depth = 8;
            return 0;
        }
        off += len;
    }
    return hc_error(-EINVAL, DOM, "corrupt header (too many segments)");
}

/* ---- reader ---- */

/* ICC chunks kept in all: more than any real profile, and a bound on what a file made of
 * thousands of APP2 segments can make us hold. */
#define ICC_MAX (16u << 20)

struct jreader {
    struct jpeg_decompress_struct cinfo;
    struct jerr err;
    int created;
    int cmyk, inverted;
    uint8_t *cmyk_row; /* one row of CMYK samples */
    /* metadata collected by our marker processors */
    uint8_t *icc_chunk[256]; /* by sequence number 1..255 */
    unsigned icc_chunk_len[256];
    int icc_count; /* chunk count the segments announce (0: none seen) */
    size_t icc_total;
    int icc_bad; /* inconsistent or too large: drop the profile */
    uint8_t *exif;
    size_t exif_len;
    int oom;
};

static int
jfail(struct jreader *p, int err)
{
    return hc_error(err, DOM, "%s", p->err.msg[0] ? p->err.msg : "corrupt data");
}

static void
cmyk_to_rgb(const uint8_t *src, uint8_t *dst, int n, int inverted)
{
    for (int i = 0; i < n; i++, src += 4, dst += 3) {
        /* Adobe files store 255 - ink; others store ink. */
        unsigned k = inverted ? src[3] : 255u - src[3];

        for (int c = 0; c < 3; c++) {
            unsigned v = inverted ? src[c] : 255u - src[c];

            dst[c] = (uint8_t)((v * k + 127u) / 255u);
        }
    }
}

static int
jreader_read(struct hc_reader *r, uint8_t *dst, size_t stride, int nrows)
{
    struct jreader *p = r->priv;
    struct jpeg_decompress_struct *ci = &p->cinfo;
    JSAMPROW rows[16];
    volatile int done = 0;

    if (setjmp(p->err.jb))
        return jfail(p, -EINVAL);
    while (done < nrows) {
        int n = nrows - done, got;

        if (p->cmyk) {
            JSAMPROW row = p->cmyk_row;

            got = (int)jpeg_read_scanlines(ci, &row, 1);
            if (got == 1)
                cmyk_to_rgb(p->cmyk_row, dst + (size_t)done * stride, r->info.width, p->inverted);
        } else {
            if (n > 16)
                n = 16;
            for (int i = 0; i < n; i++)
                rows[i] = dst + (size_t)(done + i) * stride;
            got = (int)jpeg_read_scanlines(ci, rows, (JDIMENSION)n);
        }
        if (got <= 0)
            return hc_error(-EINVAL, DOM, "decoder stopped at row %d", r->next_row + done);
        done += got;
    }
    return 0;
}

static void
jreader_close(struct hc_reader *r)
{
    struct jreader *p = r->priv;

    if (!p)
        return;
    if (p->created)
        jpeg_destroy_decompress(&p->cinfo);
    for (int i = 0; i < 256; i++)
        free(p->icc_chunk[i]);
    free(p->exif);
    free(p->cmyk_row);
    free(p);
    r->priv = NULL;
}

static const struct hc_reader_ops jreader_ops = {jreader_read, jreader_close};

/* Marker processors for APP1 (EXIF) and APP2 (ICC). libjpeg's jpeg_save_markers would
 * keep every such segment, without a bound on their number; these keep the first EXIF
 * block and at most ICC_MAX bytes of ICC chunks and skip everything else. */
static int
src_byte(j_decompress_ptr ci)
{
    struct jpeg_source_mgr *s = ci->src;

    /* stdio and memory sources never suspend: at the end they insert EOI with a warning,
     * which our error manager turns into a failure */
    if (s->bytes_in_buffer == 0 && !s->fill_input_buffer(ci))
        ERREXIT(ci, JERR_CANT_SUSPEND);
    s->bytes_in_buffer--;
    return *s->next_input_byte++;
}

static void
src_read(j_decompress_ptr ci, uint8_t *dst, size_t n)
{
    struct jpeg_source_mgr *s = ci->src;

    while (n) {
        size_t k;

        if (s->bytes_in_buffer == 0 && !s->fill_input_buffer(ci))
            ERREXIT(ci, JERR_CANT_SUSPEND);
        k = s->bytes_in_buffer < n ? s->bytes_in_buffer : n;
        memcpy(dst, s->next_input_byte, k);
        s->next_input_byte += k;
        s->bytes_in_buffer -= k;
        dst += k;
        n -= k;
    }
}

static boolean
app_marker(j_decompress_ptr ci)
{
    struct jreader *p = ci->client_data;
    long len = (long)(src_byte(ci) << 8);
    uint8_t hdr[14];
    size_t hn;

    len += src_byte(ci);
    len -= 2;
    if (len < 0)
        ERREXIT(ci, JERR_BAD_LENGTH);
    hn = ci->unread_marker == JPEG_APP0 + 1 ? 6 : 14;
    if ((size_t)len < hn) {
        if (len > 0)
            ci->src->skip_input_data(ci, len);
        return TRUE;
    }
    src_read(ci, hdr, hn);
    len -= (long)hn;
    if (ci->unread_marker == JPEG_APP0 + 1 && !memcmp(hdr, "Exif\0\0", 6) && !p->exif && len > 0) {
        p->exif = malloc((size_t)len);
        if (p->exif) {
            src_read(ci, p->exif, (size_t)len);
            p->exif_len = (size_t)len;
            return TRUE;
        }
        p->oom = 1;
    } else if (ci->unread_marker == JPEG_APP0 + 2 && !memcmp(hdr, "ICC_PROFILE\0", 12) &&
               !p->icc_bad && len > 0) {
        int seq = hdr[12], count = hdr[13];

        if (seq < 1 || seq > count || (p->icc_count && count != p->icc_count) ||
            p->icc_chunk[seq] || p->icc_total + (size_t)len > ICC_MAX) {
            p->icc_bad = 1; /* like libjpeg: an inconsistent profile is no profile */
        } else {
            p->icc_count = count;
            p->icc_chunk[seq] = malloc((size_t)len);
            if (p->icc_chunk[seq]) {
                src_read(ci, p->icc_chunk[seq], (size_t)len);
                p->icc_chunk_len[seq] = (unsigned)len;
                p->icc_total += (size_t)len;
                return TRUE;
            }
            p->oom = 1;
        }
    }
    if (len > 0)
        ci->src->skip_input_data(ci, len);
    return TRUE;
}

static int
read_meta(struct hc_reader *r, struct jreader *p)
{
    if (p->oom)
        return hc_error(-ENOMEM, DOM, "out of memory");
    /* a CMYK file's profile describes CMYK, not the RGB we hand out */
    if (!p->cmyk && !p->icc_bad && p->icc_count) {
        size_t off = 0;

        for (int i = 1; i <= p->icc_count; i++)
            if (!p->icc_chunk[i])
                return 0; /* a chunk is missing: no profile */
        r->meta.icc = malloc(p->icc_total);
        if (!r->meta.icc)
            return hc_error(-ENOMEM, DOM, "out of memory");
        for (int i = 1; i <= p->icc_count; i++) {
            memcpy(r->meta.icc + off, p->icc_chunk[i], p->icc_chunk_len[i]);
            off += p->icc_chunk_len[i];
            free(p->icc_chunk[i]);
            p->icc_chunk[i] = NULL;
        }
        r->meta.icc_len = off;
    }
    r->meta.exif = p->exif;
    r->meta.exif_len = p->exif_len;
    p->exif = NULL;
    return 0;
}

int
hc_jpeg_reader_open(struct hc_reader *r)
{
    struct jreader *p = calloc(1, sizeof(*p));
    struct jpeg_decompress_struct *ci;
    int res;

    if (!p)
        return hc_error(-ENOMEM, DOM, "out of memory");
    r->priv = p;
    r->ops = &jreader_ops;
    ci = &p->cinfo;
    ci->err = &p->err.pub;
    jerr_init(&p->err);
    if (setjmp(p->err.jb)) {
        res = jfail(p, -EINVAL);
        goto out;
    }
    jpeg_create_decompress(ci);
    p->created = 1;
    if (r->fp)
        jpeg_stdio_src(ci, r->fp);
    else
        jpeg_mem_src(ci, r->mem, (unsigned long)r->mem_len);
    ci->client_data = p;
    jpeg_set_marker_processor(ci, JPEG_APP0 + 1, app_marker);
    jpeg_set_marker_processor(ci, JPEG_APP0 + 2, app_marker);
    if (jpeg_read_header(ci, TRUE) != JPEG_HEADER_OK) {
        res = hc_error(-EINVAL, DOM, "no image in the file");
        goto out;
    }
    /* Before jpeg_start_decompress, which allocates by the image size (a progressive file
     * keeps every coefficient: 2 bytes per sample). */
    res = hc_check_limits(DOM, ci->image_width, ci->image_height, r->lim);
    if (res)
        goto out;
    r->info.format = HC_FORMAT_JPEG;
    r->info.width = (int)ci->image_width;
    r->info.height = (int)ci->image_height;
    r->info.depth = 8;
    switch (ci->num_components) {
    case 1:
        ci->out_color_space = JCS_GRAYSCALE;
        r->info.channels = 1;
        break;
    case 3:
        ci->out_color_space = JCS_EXT_RGB;
        r->info.channels = 3;
        break;
    case 4:
        if (ci->jpeg_color_space != JCS_CMYK && ci->jpeg_color_space != JCS_YCCK) {
            res = hc_error(-EINVAL, DOM, "4-component JPEG that is not CMYK/YCCK");
            goto out;
        }
        ci->out_color_space = JCS_CMYK;
        r->info.channels = 3;
        p->cmyk = 1;
        p->inverted = ci->saw_Adobe_marker;
        p->cmyk_row = malloc((size_t)ci->image_width * 4);
        if (!p->cmyk_row) {
            res = hc_error(-ENOMEM, DOM, "out of memory");
            goto out;
        }
        break;
    default:
        res = hc_error(-EINVAL, DOM, "%d colour components are not supported", ci->num_components);
        goto out;
    }
    res = read_meta(r, p);
    if (res)
        goto out;
    jpeg_start_decompress(ci);
    if ((int)ci->output_width != r->info.width || (int)ci->output_height != r->info.height ||
        ci->output_components != (p->cmyk ? 4 : r->info.channels)) {
        res = hc_error(-EINVAL, DOM, "decoder output does not match the header");
        goto out;
    }
    return 0;
out:
    jreader_close(r);
    r->ops = NULL;
    return res;
}

/* ---- writer ---- */

struct jwriter {
    struct jpeg_compress_struct cinfo;
    struct jerr err;
    int created;
    int direct;   /* rows go to libjpeg as given */
    int out_ch;   /* 1 or 3 samples per pixel in the JPEG input */
    uint8_t *buf; /* converted rows */
    JOCTET *seg;  /* APP1 segment being written (freed even if libjpeg longjmps) */
};

#define JW_BATCH 16

static int
jwriter_write(struct hc_writer *w, const uint8_t *src, size_t stride, int nrows)
{
    struct jwriter *p = w->priv;
    struct jpeg_compress_struct *ci = &p->cinfo;
    JSAMPROW rows[JW_BATCH];
    volatile int done = 0;

    if (setjmp(p->err.jb))
        return hc_error(-EIO, DOM, "%s", p->err.msg);
    while (done < nrows) {
        int n = nrows - done;

        if (n > JW_BATCH)
            n = JW_BATCH;
        for (int i = 0; i < n; i++) {
            const uint8_t *s = src + (size_t)(done + i) * stride;

            if (p->direct) {
                rows[i] = (JSAMPROW)(uintptr_t)s; /* libjpeg only reads input rows */
            } else {
                rows[i] = p->buf + (size_t)i * (size_t)w->info.width * (size_t)p->out_ch;
                hc_convert_row_u8(s, w->info.channels, w->info.depth, rows[i], p->out_ch, 0,
                                  w->info.width);
            }
        }
        if ((int)jpeg_write_scanlines(ci, rows, (JDIMENSION)n) != n)
            return hc_error(-EIO, DOM, "encoder took fewer rows than given");
        done += n;
    }
    return 0;
}

static int
jwriter_finish(struct hc_writer *w)
{
    struct jwriter *p = w->priv;

    if (setjmp(p->err.jb))
        return hc_error(-EIO, DOM, "%s", p->err.msg);
    jpeg_finish_compress(&p->cinfo);
    return 0;
}

static void
jwriter_free(struct hc_writer *w)
{
    struct jwriter *p = w->priv;

    if (!p)
        return;
    if (p->created)
        jpeg_destroy_compress(&p->cinfo);
    free(p->buf);
    free(p->seg);
    free(p);
    w->priv = NULL;
}

static const struct hc_writer_fmt_ops jwriter_ops = {jwriter_write, jwriter_finish, jwriter_free};

int
hc_jpeg_writer_open(struct hc_writer *w)
{
    struct jwriter *p;
    struct jpeg_compress_struct *ci;
    int q = w->opts.quality ? w->opts.quality : 95;
    int ch = w->info.channels;
    int res;

    if (w->info.width > JPEG_MAX_DIMENSION || w->info.height > JPEG_MAX_DIMENSION)
        return hc_error(-EFBIG, DOM, "%dx%d is larger than JPEG allows (%d per side)",
                        w->info.width, w->info.height, (int)JPEG_MAX_DIMENSION);
    p = calloc(1, sizeof(*p));
    if (!p)
        return hc_error(-ENOMEM, DOM, "out of memory");
    w->priv = p;
    w->ops = &jwriter_ops;
    ci = &p->cinfo;
    ci->err = &p->err.pub;
    jerr_init(&p->err);
    if (setjmp(p->err.jb)) {
        res = hc_error(-EIO, DOM, "%s", p->err.msg);
        goto out;
    }
    jpeg_create_compress(ci);
    p->created = 1;
    jpeg_stdio_dest(ci, w->fp);
    ci->image_width = (JDIMENSION)w->info.width;
    ci->image_height = (JDIMENSION)w->info.height;
    p->out_ch = ch >= 3 ? 3 : 1;
    p->direct = w->info.depth == 8 && ch != 2;
    if (p->out_ch == 1) {
        ci->input_components = 1;
        ci->in_color_space = JCS_GRAYSCALE;
    } else if (p->direct && ch == 4) {
        ci->input_components = 4; /* libjpeg-turbo skips the X byte: no copy to drop alpha */
        ci->in_color_space = JCS_EXT_RGBX;
    } else {
        ci->input_components = 3;
        ci->in_color_space = JCS_EXT_RGB;
    }
    if (!p->direct) {
        p->buf = malloc((size_t)w->info.width * (size_t)p->out_ch * JW_BATCH);
        if (!p->buf) {
            res = hc_error(-ENOMEM, DOM, "out of memory");
            goto out;
        }
    }
    jpeg_set_defaults(ci);
    jpeg_set_quality(ci, q, TRUE);
    if (p->out_ch == 3 && q >= 90) {
        ci->comp_info[0].h_samp_factor = 1;
        ci->comp_info[0].v_samp_factor = 1;
    }
    ci->optimize_coding = FALSE;
    ci->dct_method = JDCT_ISLOW;
    jpeg_start_compress(ci, TRUE);
    if (w->meta && w->meta->exif && w->meta->exif_len &&
        w->meta->exif_len + 6 <= 65533) { /* one APP1 segment at most */
        JOCTET *seg = p->seg = malloc(w->meta->exif_len + 6);

        if (!seg) {
            res = hc_error(-ENOMEM, DOM, "out of memory");
            goto out;
        }
        memcpy(seg, "Exif\0\0", 6);
        memcpy(seg + 6, w->meta->exif, w->meta->exif_len);
        jpeg_write_marker(ci, JPEG_APP0 + 1, seg, (unsigned)(w->meta->exif_len + 6));
        free(p->seg);
        p->seg = NULL;
    }
    if (w->meta && w->meta->icc && w->meta->icc_len)
        jpeg_write_icc_profile(ci, w->meta->icc, (unsigned)w->meta->icc_len);
    return 0;
out:
    jwriter_free(w);
    w->ops = NULL;
    return res;
}
