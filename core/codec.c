/* codec.c: format dispatch, limits, header probes, the temporary-file side of writers and
 * the whole-image helpers. The formats themselves live in jpeg.c, png.c and stbcodec.c. */
#include "codec.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec_internal.h"
#include "error.h"

void
hc_meta_clear(struct hc_meta *m)
{
    if (!m)
        return;
    free(m->icc);
    free(m->exif);
    memset(m, 0, sizeof(*m));
}

void
hc_limits_default(struct hc_limits *lim)
{
    lim->max_pixels = HC_DEFAULT_MAX_PIXELS;
    lim->max_dim = HC_DEFAULT_MAX_DIM;
}

int
hc_check_limits(const char *domain, int64_t w, int64_t h, const struct hc_limits *lim)
{
    struct hc_limits def;

    if (!lim) {
        hc_limits_default(&def);
        lim = &def;
    }
    if (w <= 0 || h <= 0)
        return hc_error(-EINVAL, domain, "invalid image size %lldx%lld", (long long)w,
                        (long long)h);
    if (lim->max_dim > 0 && (w > lim->max_dim || h > lim->max_dim))
        return hc_error(-EFBIG, domain, "%lldx%lld exceeds the limit of %d pixels per side",
                        (long long)w, (long long)h, lim->max_dim);
    if (lim->max_pixels > 0 && (uint64_t)w * (uint64_t)h > lim->max_pixels)
        return hc_error(-EFBIG, domain, "%lldx%lld exceeds the limit of %llu pixels", (long long)w,
                        (long long)h, (unsigned long long)lim->max_pixels);
    return 0;
}

/* ---- probes ---- */

int
hc_probe_read(struct hc_probe_src *s, uint64_t off, void *dst, size_t n)
{
    if (off > s->len || n > s->len - off)
        return -EINVAL;
    if (s->mem) {
        memcpy(dst, s->mem + off, n);
        return 0;
    }
    if (n > sizeof(s->win))
        return -EINVAL;
    if (off < s->win_off || off + n > s->win_off + s->win_len) {
        /* Refill the window at off: JPEG hops forward segment by segment, so one pread
         * per segment header at most. */
        ssize_t got;

        do
            got = pread(s->fd, s->win, sizeof(s->win), (off_t)off);
        while (got < 0 && errno == EINTR);
        if (got < 0)
            return -errno;
        s->win_off = off;
        s->win_len = (size_t)got;
        if (s->win_len < n)
            return -EINVAL;
    }
    memcpy(dst, s->win + (off - s->win_off), n);
    return 0;
}

enum hc_format
hc_sniff(const uint8_t *b, size_t n)
{
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
        return HC_FORMAT_JPEG;
    if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0)
        return HC_FORMAT_PNG;
    if (n >= 2 && b[0] == 'B' && b[1] == 'M')
        return HC_FORMAT_BMP;
    if (n >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0))
        return HC_FORMAT_GIF;
    if (n >= 4 && memcmp(b, "8BPS", 4) == 0)
        return HC_FORMAT_PSD;
    if (n >= 3 && b[0] == 'P' && (b[1] == '5' || b[1] == '6') &&
        (b[2] == ' ' || b[2] == '\t' || b[2] == '\n' || b[2] == '\r'))
        return HC_FORMAT_PNM;
    if ((n >= 10 && memcmp(b, "#?RADIANCE", 10) == 0) || (n >= 6 && memcmp(b, "#?RGBE", 6) == 0))
        return HC_FORMAT_HDR;
    return HC_FORMAT_UNKNOWN;
}

#define STB_PROBE_BYTES (64 * 1024)

static int
probe_src(struct hc_probe_src *s, struct hc_image_info *info)
{
    uint8_t head[16];
    size_t n = s->len < sizeof(head) ? (size_t)s->len : sizeof(head);
    uint8_t *buf = NULL;
    int res;

    if (s->len == 0)
        return hc_error(-EINVAL, "codec", "empty file (0 bytes)");
    res = hc_probe_read(s, 0, head, n);
    if (res)
        return hc_error(res == -EINVAL ? -EIO : res, "codec", "cannot read the header");
    switch (hc_sniff(head, n)) {
    case HC_FORMAT_JPEG:
        return hc_jpeg_probe(s, info);
    case HC_FORMAT_PNG:
        return hc_png_probe(s, info);
    default:
        break;
    }
    /* stb's info functions want a buffer. From memory: up to 64 KiB. From a file: the
     * 4 KiB window read above holds every header but an HDR file's long comments, so
     * only when it is not enough are 64 KiB read. */
    if (s->mem)
        return hc_stb_probe(s->mem, s->len < STB_PROBE_BYTES ? s->len : STB_PROBE_BYTES, info);
    if (s->win_off == 0 && s->win_len > 0) {
        res = hc_stb_probe(s->win, s->win_len, info);
        if (res == 0 || s->win_len >= s->len)
            return res;
    }
    n = s->len < STB_PROBE_BYTES ? (size_t)s->len : STB_PROBE_BYTES;
    buf = malloc(n);
    if (!buf)
        return hc_error(-ENOMEM, "codec", "out of memory");
    for (size_t done = 0; done < n;) {
        ssize_t got = pread(s->fd, buf + done, n - done, (off_t)done);

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            res = hc_error(got < 0 ? -errno : -EIO, "codec", "cannot read the header");
            goto out;
        }
        done += (size_t)got;
    }
    res = hc_stb_probe(buf, n, info);
out:
    free(buf);
    return res;
}

int
hc_probe_mem(const void *buf, size_t len, struct hc_image_info *info)
{
    struct hc_probe_src s = {.mem = buf, .len = len, .fd = -1};
    struct hc_image_info tmp;
    int res;

    if (!buf && len)
        return hc_error(-EINVAL, "codec", "no buffer");
    res = probe_src(&s, &tmp);
    if (res == 0)
        *info = tmp;
    return res;
}

int
hc_probe_file(const char *path, struct hc_image_info *info)
{
    struct hc_probe_src *s;
    struct hc_image_info tmp;
    struct stat st;
    int res;

    /* The window is 4 KiB: keep it off the stack of FUSE worker threads. */
    s = calloc(1, sizeof(*s));
    if (!s)
        return hc_error(-ENOMEM, "codec", "out of memory");
    /* O_NONBLOCK: opening a FIFO someone left in input/ must not hang a readdir */
    s->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (s->fd < 0) {
        res = hc_error(-errno, "codec", "%s: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(s->fd, &st) < 0) {
        res = hc_error(-errno, "codec", "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        res = hc_error(-EINVAL, "codec", "%s: not a regular file", path);
        goto out;
    }
    s->len = (size_t)st.st_size;
    res = probe_src(s, &tmp);
    if (res == 0)
        *info = tmp;
out:
    if (s->fd >= 0)
        close(s->fd);
    free(s);
    return res;
}

/* ---- row conversion shared by the writers ---- */

void
hc_convert_row_u8(const uint8_t *src, int channels, int depth, uint8_t *dst, int out_ch, int bgr,
                  int n)
{
    int color = channels >= 3;
    int alpha = channels == 2 || channels == 4;

    for (int i = 0; i < n; i++) {
        uint8_t px[4] = {0, 0, 0, 0};

        for (int c = 0; c < channels; c++) {
            if (depth == 16) {
                uint16_t v; /* memcpy: a caller's rows need not be 2-byte aligned */

                memcpy(&v, src + ((size_t)i * channels + c) * 2, 2);
                px[c] = hc_u16_to_u8(v);
            } else {
                px[c] = src[(size_t)i * channels + c];
            }
        }
        uint8_t r = px[0], g = color ? px[1] : px[0], b = color ? px[2] : px[0];
        uint8_t a = alpha ? px[channels - 1] : 255;

        if (out_ch == 1) {
            dst[i] = px[0];
            continue;
        }
        dst[0] = bgr ? b : r;
        dst[1] = g;
        dst[2] = bgr ? r : b;
        if (out_ch == 4)
            dst[3] = a;
        dst += out_ch;
    }
}

/* ---- readers ---- */

static int
reader_dispatch(struct hc_reader *r, enum hc_format f)
{
    switch (f) {
    case HC_FORMAT_JPEG:
        return hc_jpeg_reader_open(r);
    case HC_FORMAT_PNG:
        return hc_png_reader_open(r);
    default:
        /* stb also decides whether a file without magic is a TGA */
        return hc_stb_reader_open(r);
    }
}

static void
reader_free(struct hc_reader *r)
{
    if (!r)
        return;
    if (r->ops && r->ops->close)
        r->ops->close(r);
    if (r->fp)
        fclose(r->fp);
    hc_meta_clear(&r->meta);
    free(r);
}

static int
header_limits(struct hc_reader *r, enum hc_format f, const struct hc_limits *lim)
{
    struct hc_probe_src *s = calloc(1, sizeof(*s));
    struct hc_image_info info;
    struct stat st;
    int res;

    if (!s)
        return hc_error(-ENOMEM, "codec", "out of memory");
    if (r->fp) {
        s->fd = fileno(r->fp);
        if (fstat(s->fd, &st) < 0) {
            res = hc_error(-errno, "codec", "stat: %s", strerror(errno));
            goto out;
        }
        s->len = (size_t)st.st_size;
    } else {
        s->fd = -1;
        s->mem = r->mem;
        s->len = r->mem_len;
    }
    res = f == HC_FORMAT_JPEG ? hc_jpeg_probe(s, &info) : hc_png_probe(s, &info);
    if (res == 0)
        res = hc_check_limits(hc_format_name(f), info.width, info.height, lim);
out:
    free(s);
    return res;
}

static int
reader_finish_open(struct hc_reader *r, const struct hc_limits *lim, struct hc_reader **out)
{
    uint8_t head[16];
    enum hc_format f;
    size_t n;
    int res;

    r->lim = lim;
    if (r->fp) {
        n = fread(head, 1, sizeof(head), r->fp);
        if (n == 0 && ferror(r->fp)) {
            res = hc_error(-EIO, "codec", "cannot read the header");
            goto out;
        }
        rewind(r->fp);
    } else {
        n = r->mem_len < sizeof(head) ? r->mem_len : sizeof(head);
        memcpy(head, r->mem, n);
    }
    if (n == 0) {
        res = hc_error(-EINVAL, "codec", "empty file (0 bytes)");
        goto out;
    }
    f = hc_sniff(head, n);
    if (f == HC_FORMAT_JPEG || f == HC_FORMAT_PNG) {
        /* Our own header walk first: it applies the limits before libjpeg or libspng see
         * the file (libjpeg would otherwise answer a 65535-pixel side with its own error). */
        res = header_limits(r, f, lim);
        if (res)
            goto out;
    }
    res = reader_dispatch(r, f);
    if (res)
        goto out;
    /* A module that opened fine must have checked the size; recheck so no path forgets. */
    res = hc_check_limits(hc_format_name(r->info.format), r->info.width, r->info.height, lim);
    if (res)
        goto out;
    r->lim = NULL;
    *out = r;
    return 0;
out:
    reader_free(r);
    return res;
}

int
hc_reader_open(const char *path, const struct hc_limits *lim, struct hc_reader **out)
{
    struct hc_reader *r;
    struct stat st;
    int fd, err;

    /* O_NONBLOCK so that a FIFO cannot hang the open; cleared again for the reads */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        err = -errno;
        return hc_error(err, "codec", "%s: %s", path, strerror(-err));
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return hc_error(-EINVAL, "codec", "%s: not a regular file", path);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    r = calloc(1, sizeof(*r));
    if (r)
        r->fp = fdopen(fd, "rb");
    if (!r || !r->fp) {
        free(r);
        close(fd);
        return hc_error(-ENOMEM, "codec", "out of memory");
    }
    /* libjpeg's stdio source asks for 4 KiB at a time: let stdio read 64 KiB per call */
    setvbuf(r->fp, NULL, _IOFBF, 64 * 1024);
    return reader_finish_open(r, lim, out);
}

int
hc_reader_open_mem(const void *buf, size_t len, const struct hc_limits *lim, struct hc_reader **out)
{
    struct hc_reader *r;

    if (!buf && len)
        return hc_error(-EINVAL, "codec", "no buffer");
    r = calloc(1, sizeof(*r));
    if (!r)
        return hc_error(-ENOMEM, "codec", "out of memory");
    r->mem = buf;
    r->mem_len = len;
    return reader_finish_open(r, lim, out);
}

const struct hc_image_info *
hc_reader_info(const struct hc_reader *r)
{
    return &r->info;
}

const struct hc_meta *
hc_reader_meta(const struct hc_reader *r)
{
    return &r->meta;
}

int
hc_reader_read_rows(struct hc_reader *r, uint8_t *dst, size_t stride, int nrows)
{
    const char *dom = hc_format_name(r->info.format);
    int res;

    if (r->failed)
        return hc_error(-EINVAL, dom, "the image already failed to decode");
    if (nrows <= 0 || nrows > r->info.height - r->next_row)
        return hc_error(-EINVAL, dom, "read of %d rows at row %d of %d", nrows, r->next_row,
                        r->info.height);
    if (stride < (size_t)r->info.width * hc_pixel_bytes(r->info.channels, r->info.depth))
        return hc_error(-EINVAL, dom, "row stride %zu is shorter than a row", stride);
    res = r->ops->read_rows(r, dst, stride, nrows);
    if (res) {
        r->failed = 1;
        return res;
    }
    r->next_row += nrows;
    return 0;
}

void
hc_reader_close(struct hc_reader *r)
{
    reader_free(r);
}

/* ---- writers ---- */

static void
writer_free(struct hc_writer *w)
{
    if (w->ops && w->ops->free)
        w->ops->free(w);
    if (w->fp)
        fclose(w->fp);
    if (w->tmp_path)
        unlink(w->tmp_path);
    free(w->tmp_path);
    free(w->final_path);
    free(w);
}

/* Creates ".<name>.hc-XXXXXX" beside path with O_EXCL and mode 0666 so the umask applies
 * as for any new file (mkstemp would force 0600 on the result). */
static int
open_temp(struct hc_writer *w, const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    const char *base = path + dirlen;
    size_t len = strlen(path) + 32;
    static _Atomic unsigned counter;
    int fd = -1;

    if (!*base)
        return hc_error(-EINVAL, "codec", "%s: not a file name", path);
    w->tmp_path = malloc(len);
    if (!w->tmp_path)
        return hc_error(-ENOMEM, "codec", "out of memory");
    for (int tries = 0; tries < 100; tries++) {
        unsigned v = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL) ^
                     (counter++ * 40503u) ^ (unsigned)tries;

        snprintf(w->tmp_path, len, "%.*s.%s.hc-%06x", (int)dirlen, path, base, v & 0xffffff);
        fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            break;
    }
    if (fd < 0) {
        int err = -errno;

        free(w->tmp_path);
        w->tmp_path = NULL;
        return hc_error(err, "codec", "cannot create a temporary file beside %s: %s", path,
                        strerror(-err));
    }
    w->fp = fdopen(fd, "wb");
    if (!w->fp) {
        int err = -errno;

        close(fd);
        return hc_error(err, "codec", "fdopen: %s", strerror(-err));
    }
    /* Encoders hand over 4 KiB at a time; fewer, larger writes are cheaper. */
    setvbuf(w->fp, NULL, _IOFBF, 256 * 1024);
    return 0;
}

int
hc_writer_open(const char *path, const struct hc_image_info *info,
               const struct hc_writer_opts *opts, const struct hc_meta *meta,
               struct hc_writer **out)
{
    struct hc_writer *w;
    int res;

    if (!path || !info || !opts || !out)
        return hc_error(-EINVAL, "codec", "writer: missing argument");
    if (info->width <= 0 || info->height <= 0 || info->channels < 1 ||
        info->channels > HC_MAX_CHANNELS || (info->depth != 8 && info->depth != 16))
        return hc_error(-EINVAL, "codec", "writer: invalid image %dx%d, %d channels, %d bit",
                        info->width, info->height, info->channels, info->depth);
    if (opts->quality < 0 || opts->quality > 100)
        return hc_error(-EINVAL, "codec", "JPEG quality %d is outside 1..100", opts->quality);
    if (opts->png_level < -1 || opts->png_level > 9)
        return hc_error(-EINVAL, "codec", "PNG level %d is outside 0..9", opts->png_level);
    if (opts->format != HC_FORMAT_JPEG && opts->format != HC_FORMAT_PNG &&
        opts->format != HC_FORMAT_BMP && opts->format != HC_FORMAT_TGA)
        return hc_error(-EINVAL, "codec", "cannot write %s files (JPEG, PNG, BMP, TGA only)",
                        hc_format_name(opts->format));
    w = calloc(1, sizeof(*w));
    if (!w)
        return hc_error(-ENOMEM, "codec", "out of memory");
    w->info = *info;
    w->info.format = opts->format;
    w->opts = *opts;
    w->meta = meta;
    w->final_path = strdup(path);
    if (!w->final_path) {
        res = hc_error(-ENOMEM, "codec", "out of memory");
        goto out;
    }
    res = open_temp(w, path);
    if (res)
        goto out;
    switch (opts->format) {
    case HC_FORMAT_JPEG:
        res = hc_jpeg_writer_open(w);
        break;
    case HC_FORMAT_PNG:
        res = hc_png_writer_open(w);
        break;
    case HC_FORMAT_BMP:
        res = hc_bmp_writer_open(w);
        break;
    default:
        res = hc_tga_writer_open(w);
        break;
    }
    if (res)
        goto out;
    w->meta = NULL;
    *out = w;
    return 0;
out:
    writer_free(w);
    return res;
}

int
hc_writer_write_rows(struct hc_writer *w, const uint8_t *src, size_t stride, int nrows)
{
    const char *dom = hc_format_name(w->info.format);
    int res;

    if (w->failed)
        return hc_error(-EIO, dom, "the writer already failed");
    if (nrows <= 0 || nrows > w->info.height - w->rows_written)
        return hc_error(-EINVAL, dom, "write of %d rows at row %d of %d", nrows, w->rows_written,
                        w->info.height);
    if (!src || stride < (size_t)w->info.width * hc_pixel_bytes(w->info.channels, w->info.depth))
        return hc_error(-EINVAL, dom, "row stride %zu is shorter than a row", stride);
    res = w->ops->write_rows(w, src, stride, nrows);
    if (res) {
        w->failed = 1;
        return res;
    }
    w->rows_written += nrows;
    return 0;
}

static void
fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    int fd;

    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (!dir)
        return;
    /* The rename is durable only once the directory is; failing here loses nothing. */
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int
hc_writer_finish(struct hc_writer *w)
{
    const char *dom;
    int res, fd;

    if (!w)
        return hc_error(-EINVAL, "codec", "no writer");
    dom = hc_format_name(w->info.format);
    if (w->failed) {
        res = hc_error(-EIO, dom, "the writer already failed");
        goto out;
    }
    if (w->rows_written != w->info.height) {
        res = hc_error(-EINVAL, dom, "only %d of %d rows were written", w->rows_written,
                       w->info.height);
        goto out;
    }
    res = w->ops->finish(w);
    if (res)
        goto out;
    fd = fileno(w->fp);
    if (fflush(w->fp) != 0 || fsync(fd) != 0) {
        res = hc_error(-errno, dom, "writing %s: %s", w->final_path, strerror(errno));
        goto out;
    }
    res = fclose(w->fp);
    w->fp = NULL;
    if (res != 0) {
        res = hc_error(-errno, dom, "writing %s: %s", w->final_path, strerror(errno));
        goto out;
    }
    if (rename(w->tmp_path, w->final_path) != 0) {
        res = hc_error(-errno, dom, "rename to %s: %s", w->final_path, strerror(errno));
        goto out;
    }
    free(w->tmp_path);
    w->tmp_path = NULL;
    fsync_dir(w->final_path);
    res = 0;
out:
    writer_free(w);
    return res;
}

void
hc_writer_abort(struct hc_writer *w)
{
    if (w)
        writer_free(w);
}

/* ---- whole images ---- */

static int
meta_dup(const struct hc_meta *src, struct hc_meta *dst)
{
    memset(dst, 0, sizeof(*dst));
    if (src->icc_len) {
        dst->icc = malloc(src->icc_len);
        if (!dst->icc)
            return -ENOMEM;
        memcpy(dst->icc, src->icc, src->icc_len);
        dst->icc_len = src->icc_len;
    }
    if (src->exif_len) {
        dst->exif = malloc(src->exif_len);
        if (!dst->exif) {
            hc_meta_clear(dst);
            return -ENOMEM;
        }
        memcpy(dst->exif, src->exif, src->exif_len);
        dst->exif_len = src->exif_len;
    }
    return 0;
}

int
hc_decode_file(const char *path, const struct hc_limits *lim, struct hc_image_info *info,
               uint8_t **pixels, struct hc_meta *meta)
{
    struct hc_reader *r = NULL;
    uint8_t *px = NULL;
    size_t stride;
    int res;

    res = hc_reader_open(path, lim, &r);
    if (res)
        return res;
    stride = (size_t)r->info.width * hc_pixel_bytes(r->info.channels, r->info.depth);
    px = malloc(stride * (size_t)r->info.height);
    if (!px) {
        res = hc_error(-ENOMEM, "codec", "out of memory for %dx%d pixels", r->info.width,
                       r->info.height);
        goto out;
    }
    res = hc_reader_read_rows(r, px, stride, r->info.height);
    if (res)
        goto out;
    if (meta && meta_dup(&r->meta, meta)) {
        res = hc_error(-ENOMEM, "codec", "out of memory");
        goto out;
    }
    *info = r->info;
    *pixels = px;
    px = NULL;
out:
    free(px);
    hc_reader_close(r);
    return res;
}

int
hc_encode_file(const char *path, const struct hc_image_info *info, const uint8_t *pixels,
               size_t stride, const struct hc_writer_opts *opts, const struct hc_meta *meta)
{
    struct hc_writer *w = NULL;
    int res;

    res = hc_writer_open(path, info, opts, meta, &w);
    if (res)
        return res;
    res = hc_writer_write_rows(w, pixels, stride, info->height);
    if (res) {
        hc_writer_abort(w);
        return res;
    }
    return hc_writer_finish(w);
}
