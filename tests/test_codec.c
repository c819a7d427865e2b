/* test_codec: the codecs of core/.
 *
 *   test_codec                  unit checks that need no outside reference: bad input
 *                               (zero bytes, text, truncated/corrupt JPEG and PNG, bomb
 *                               headers) fails cleanly with bounded memory, limits, writers
 *                               that fail or abort leave no file, reader/writer contracts.
 *   test_codec dump IN OUT      decodes IN; OUT gets "w h channels depth format\n" + rows
 *                               (native-endian 16-bit). tests/codec_ref.py compares that
 *                               with OpenCV / Pillow.
 *   test_codec encode RAW OUT [quality [png_level]]
 *                               writes a dump file (same layout) with our writer.
 *   test_codec convert IN OUT [quality]
 *                               streams IN through a reader into a writer, metadata
 *                               carried, 7 rows at a time.
 *   test_codec probe IN         prints "format w h channels depth".
 *   test_codec bench IN OUT N   decodes IN and encodes OUT N times, prints seconds.
 * Commands print hc_last_error() and exit 1 on failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "codec.h"
#include "error.h"

/* ---- helpers ---- */

static char tmpdir[256];

static void
rm_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

static const char *
tpath(const char *name)
{
    static char buf[4][512];
    static int i;

    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", tmpdir, name);
    return buf[i];
}

static void
write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");

    HC_CHECK(f);
    HC_CHECK(fwrite(data, 1, n, f) == n);
    HC_CHECK(fclose(f) == 0);
}

static uint8_t *
read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *b;
    long len;

    HC_CHECK_MSG(f, "%s", path);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    b = malloc((size_t)len + 1);
    HC_CHECK(b);
    HC_CHECK(fread(b, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static int
count_dir_entries(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;

    HC_CHECK(d);
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static long
maxrss_kb(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
#ifdef __APPLE__
    return ru.ru_maxrss / 1024; /* bytes there, KiB on Linux */
#else
    return ru.ru_maxrss;
#endif
}

/* PNG's CRC-32, written here so the test does not borrow the code under test's zlib call */
static uint32_t
crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;

    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void
put_be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

static uint8_t *
noise_image(int w, int h, int ch, int depth, unsigned seed)
{
    size_t n = (size_t)w * h * ch * (depth / 8);
    uint8_t *p = malloc(n);

    HC_CHECK(p);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        /* smooth-ish content (gradient + noise) so JPEG keeps it recognisable */
        p[i] = (uint8_t)((i / (size_t)ch) % 251 + (seed >> 28));
    }
    return p;
}

/* Encodes a w x h image with our writer and returns the file's bytes. */
static uint8_t *
make_file(const char *name, enum hc_format f, int w, int h, int ch, int depth, size_t *n)
{
    struct hc_image_info info = {f, w, h, ch, depth};
    struct hc_writer_opts o = {f, 90, -1};
    uint8_t *px = noise_image(w, h, ch, depth, 7);
    int res =
        hc_encode_file(tpath(name), &info, px, (size_t)w * hc_pixel_bytes(ch, depth), &o, NULL);

    HC_CHECK_MSG(res == 0, "%s", hc_last_error());
    free(px);
    return read_file(tpath(name), n);
}

/* Opens buf (from memory and from a file) and decodes every row; returns the first error. */
static int
decode_all(const char *name, const uint8_t *buf, size_t n, const struct hc_limits *lim)
{
    int res = 0;

    for (int from_file = 0; from_file < 2; from_file++) {
        struct hc_reader *r = NULL;
        uint8_t *rows = NULL;
        int rr;

        if (from_file) {
            write_file(tpath(name), buf, n);
            rr = hc_reader_open(tpath(name), lim, &r);
        } else {
            rr = hc_reader_open_mem(buf, n, lim, &r);
        }
        if (rr == 0) {
            const struct hc_image_info *in = hc_reader_info(r);
            size_t stride = (size_t)in->width * hc_pixel_bytes(in->channels, in->depth);

            rows = malloc(stride * 16);
            HC_CHECK(rows);
            for (int y = 0; y < in->height && rr == 0; y += 16) {
                int k = in->height - y < 16 ? in->height - y : 16;

                rr = hc_reader_read_rows(r, rows, stride, k);
            }
            hc_reader_close(r);
            free(rows);
        }
        if (rr) {
            /* one clear line with the module's name */
            HC_CHECK_MSG(strchr(hc_last_error(), ':') && !strchr(hc_last_error(), '\n'),
                         "unclear error \"%s\"", hc_last_error());
        }
        if (from_file && res != rr)
            HC_CHECK_MSG(res == rr, "%s: memory gave %d, file gave %d", name, res, rr);
        res = rr;
    }
    return res;
}

/* ---- unit checks ---- */

static void
test_bombs(void)
{
    size_t n;
    uint8_t *jpg = make_file("small.jpg", HC_FORMAT_JPEG, 16, 16, 3, 8, &n);
    uint8_t *png;
    struct hc_image_info info;
    long before = maxrss_kb();
    int res;

    /* JPEG's SOF holds 16-bit sizes: 65535 x 65535 is 4.3 Gpx, far past the limit */
    for (size_t i = 2; i + 9 < n; i++) {
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) {
            jpg[i + 5] = jpg[i + 6] = jpg[i + 7] = jpg[i + 8] = 0xFF;
            break;
        }
    }
    HC_CHECK_EQ(hc_probe_mem(jpg, n, &info), 0);
    HC_CHECK_EQ(info.width, 65535);
    HC_CHECK_EQ(info.height, 65535);
    res = decode_all("bomb.jpg", jpg, n, NULL);
    HC_CHECK_MSG(res == -EFBIG, "jpeg bomb gave %d (%s)", res, hc_last_error());
    HC_CHECK_MSG(strstr(hc_last_error(), "65535x65535 exceeds the limit"), "%s", hc_last_error());
    free(jpg);

    /* PNG IHDR claiming 100000 x 100000, with a correct CRC so only the size is wrong */
    png = make_file("small.png", HC_FORMAT_PNG, 16, 16, 3, 8, &n);
    put_be32(png + 16, 100000);
    put_be32(png + 20, 100000);
    put_be32(png + 29, crc32_png(png + 12, 17));
    HC_CHECK_EQ(hc_probe_mem(png, n, &info), 0);
    HC_CHECK_EQ(info.width, 100000);
    res = decode_all("bomb.png", png, n, NULL);
    HC_CHECK_MSG(res == -EFBIG, "png bomb gave %d (%s)", res, hc_last_error());
    HC_CHECK_MSG(strstr(hc_last_error(), "100000x100000 exceeds the limit of"), "%s",
                 hc_last_error());
    /* 50000 x 1000 is under the pixel limit but over max_dim 40000 of custom limits */
    put_be32(png + 16, 50000);
    put_be32(png + 20, 1000);
    put_be32(png + 29, crc32_png(png + 12, 17));
    {
        struct hc_limits lim = {1000ull * 1000 * 1000, 40000};

        res = decode_all("wide.png", png, n, &lim);
        HC_CHECK_MSG(res == -EFBIG, "wide png gave %d (%s)", res, hc_last_error());
    }
    free(png);

    /* a BMP header for 60000 x 60000 (stb path) */
    {
        uint8_t bmp[54] = {'B', 'M'};

        bmp[10] = 54;
        bmp[14] = 40;
        bmp[18] = 0x60, bmp[19] = 0xEA; /* 60000 */
        bmp[22] = 0x60, bmp[23] = 0xEA;
        bmp[26] = 1;
        bmp[28] = 24;
        res = decode_all("bomb.bmp", bmp, sizeof(bmp), NULL);
        HC_CHECK_MSG(res == -EFBIG, "bmp bomb gave %d (%s)", res, hc_last_error());
    }
    /* none of it may have allocated by the claimed size */
    HC_CHECK_MSG(maxrss_kb() - before < 32 * 1024, "bombs grew RSS by %ld KiB",
                 maxrss_kb() - before);
}

/* Thousands of APP2 (ICC) segments before the frame: a small image whose markers alone
 * would take 32 MB if every segment were kept. */
static void
test_marker_bomb(void)
{
    size_t n;
    uint8_t *jpg = make_file("m.jpg", HC_FORMAT_JPEG, 16, 16, 3, 8, &n);
    uint8_t *seg = malloc(65537);
    FILE *f = fopen(tpath("mbomb.jpg"), "wb");
    long before;
    int res;

    HC_CHECK(seg && f);
    seg[0] = 0xFF;
    seg[1] = 0xE2;
    seg[2] = seg[3] = 0xFF; /* length 65535 */
    memcpy(seg + 4, "ICC_PROFILE", 12);
    memset(seg + 18, 'x', 65537 - 18);
    fwrite(jpg, 1, 2, f); /* SOI */
    for (int i = 0; i < 500; i++) {
        seg[16] = (uint8_t)(i % 255 + 1); /* sequence numbers repeat: inconsistent */
        seg[17] = 255;
        HC_CHECK(fwrite(seg, 1, 65537, f) == 65537);
    }
    HC_CHECK(fwrite(jpg + 2, 1, n - 2, f) == n - 2);
    HC_CHECK(fclose(f) == 0);
    before = maxrss_kb();
    {
        struct hc_image_info info;
        uint8_t *px = NULL;
        struct hc_meta m = {0};

        res = hc_decode_file(tpath("mbomb.jpg"), NULL, &info, &px, &m);
        HC_CHECK_MSG(res == 0, "%s", hc_last_error());
        HC_CHECK_EQ(info.width, 16);
        HC_CHECK(m.icc == NULL); /* inconsistent chunks: no profile */
        free(px);
        hc_meta_clear(&m);
    }
    HC_CHECK_MSG(maxrss_kb() - before < 20 * 1024, "APP2 segments grew RSS by %ld KiB",
                 maxrss_kb() - before);
    unlink(tpath("mbomb.jpg"));
    free(seg);
    free(jpg);
}

static void
test_garbage(void)
{
    static const char text[] = "hello, this is a text file\nnot an image\n";
    struct hc_image_info info;
    int res;

    write_file(tpath("empty.jpg"), "", 0);
    HC_CHECK_EQ(hc_probe_file(tpath("empty.jpg"), &info), -EINVAL);
    HC_CHECK(strstr(hc_last_error(), "empty"));
    HC_CHECK_EQ(decode_all("empty.png", (const uint8_t *)"", 0, NULL), -EINVAL);
    HC_CHECK(strstr(hc_last_error(), "empty"));

    HC_CHECK_EQ(hc_probe_mem(text, sizeof(text) - 1, &info), -EINVAL);
    res = decode_all("text.jpg", (const uint8_t *)text, sizeof(text) - 1, NULL);
    HC_CHECK_MSG(res == -EINVAL, "%d %s", res, hc_last_error());
    HC_CHECK(strstr(hc_last_error(), "not a supported image"));

    /* magic only */
    res = decode_all("magic.jpg", (const uint8_t *)"\xFF\xD8\xFF", 3, NULL);
    HC_CHECK_MSG(res == -EINVAL, "%d %s", res, hc_last_error());
    res = decode_all("magic.png", (const uint8_t *)"\x89PNG\r\n\x1a\n", 8, NULL);
    HC_CHECK_MSG(res == -EINVAL, "%d %s", res, hc_last_error());
    HC_CHECK_EQ(hc_probe_file(tpath("no-such-file"), &info), -ENOENT);
    HC_CHECK_EQ(hc_probe_file(tmpdir, &info), -EINVAL);
    /* a FIFO with no writer: refused at once, not waited on */
    HC_CHECK_EQ(mkfifo(tpath("fifo.jpg"), 0600), 0);
    HC_CHECK_EQ(hc_probe_file(tpath("fifo.jpg"), &info), -EINVAL);
    {
        struct hc_reader *r;

        HC_CHECK_EQ(hc_reader_open(tpath("fifo.jpg"), NULL, &r), -EINVAL);
        HC_CHECK(strstr(hc_last_error(), "not a regular file"));
    }
    unlink(tpath("fifo.jpg"));
}

static void
test_truncated_jpeg(void)
{
    size_t n;
    uint8_t *jpg = make_file("t.jpg", HC_FORMAT_JPEG, 300, 200, 3, 8, &n);
    uint8_t *gray = NULL;
    int res;

    HC_CHECK_EQ(decode_all("t.jpg", jpg, n, NULL), 0);
    /* cut in the header, right after it, and at several points of the scan */
    for (int k = 1; k <= 12; k++) {
        size_t cut = k == 1 ? 20 : n * (size_t)(k - 1) / 12;

        if (k == 12)
            cut = n - 3; /* everything but the last bytes of entropy data and EOI */
        res = decode_all("t-cut.jpg", jpg, cut, NULL);
        HC_CHECK_MSG(res == -EINVAL, "cut at %zu of %zu: %d (%s)", cut, n, res, hc_last_error());
    }
    /* corrupt entropy data: a marker in the middle of the scan */
    {
        size_t sos = 0;

        for (size_t i = 2; i + 1 < n; i++)
            if (jpg[i] == 0xFF && jpg[i + 1] == 0xDA)
                sos = i;
        HC_CHECK(sos);
        gray = malloc(n);
        memcpy(gray, jpg, n);
        gray[sos + (n - sos) / 2] = 0xFF;
        gray[sos + (n - sos) / 2 + 1] = 0xD9;
        res = decode_all("t-bad.jpg", gray, n, NULL);
        HC_CHECK_MSG(res == -EINVAL, "EOI inside the scan: %d (%s)", res, hc_last_error());
        free(gray);
    }
    free(jpg);
}

/* Rewrites one chunk of a PNG in place: its CRC recomputed unless keep_crc. */
static uint8_t *
find_chunk(uint8_t *png, size_t n, const char *type)
{
    size_t off = 8;

    while (off + 12 <= n) {
        uint32_t len =
            (uint32_t)png[off] << 24 | png[off + 1] << 16 | png[off + 2] << 8 | png[off + 3];

        if (!memcmp(png + off + 4, type, 4))
            return png + off;
        off += 12 + len;
    }
    return NULL;
}

static void
test_corrupt_png(void)
{
    size_t n;
    uint8_t *png = make_file("c.png", HC_FORMAT_PNG, 200, 150, 3, 8, &n);
    uint8_t *bad = malloc(n);
    uint8_t *idat;
    int res;

    HC_CHECK(bad);
    HC_CHECK_EQ(decode_all("c.png", png, n, NULL), 0);

    /* bad CRC on IDAT */
    memcpy(bad, png, n);
    idat = find_chunk(bad, n, "IDAT");
    HC_CHECK(idat);
    idat[8 + 100] ^= 0x55;
    res = decode_all("c-crc.png", bad, n, NULL);
    HC_CHECK_MSG(res == -EINVAL, "bad IDAT crc: %d (%s)", res, hc_last_error());

    /* bad IHDR: colour type 5 does not exist (CRC made right) */
    memcpy(bad, png, n);
    bad[25] = 5;
    put_be32(bad + 29, crc32_png(bad + 12, 17));
    HC_CHECK_EQ(hc_probe_mem(bad, n, &(struct hc_image_info){0}), -EINVAL);
    res = decode_all("c-ihdr.png", bad, n, NULL);
    HC_CHECK_MSG(res == -EINVAL, "bad IHDR: %d (%s)", res, hc_last_error());

    /* bad IHDR CRC */
    memcpy(bad, png, n);
    bad[29] ^= 1;
    HC_CHECK_EQ(hc_probe_mem(bad, n, &(struct hc_image_info){0}), -EINVAL);
    HC_CHECK(strstr(hc_last_error(), "checksum"));
    res = decode_all("c-ihdrcrc.png", bad, n, NULL);
    HC_CHECK_MSG(res == -EINVAL, "bad IHDR crc: %d (%s)", res, hc_last_error());

    /* truncated in IDAT, at several points, and without IEND */
    idat = find_chunk(png, n, "IDAT");
    for (int k = 0; k < 6; k++) {
        size_t start = (size_t)(idat - png);
        size_t cut = start + 4 + (n - 12 - start) * (size_t)k / 6;

        res = decode_all("c-cut.png", png, cut, NULL);
        HC_CHECK_MSG(res == -EINVAL, "cut at %zu of %zu: %d (%s)", cut, n, res, hc_last_error());
    }
    free(bad);
    free(png);
}

static void
test_writer_failures(void)
{
    struct hc_image_info info = {HC_FORMAT_PNG, 64, 32, 3, 8};
    struct hc_writer_opts o = {HC_FORMAT_PNG, 0, -1};
    uint8_t *px = noise_image(64, 32, 3, 8, 3);
    struct hc_writer *w;
    int before = count_dir_entries();
    enum hc_format fmts[4] = {HC_FORMAT_PNG, HC_FORMAT_JPEG, HC_FORMAT_BMP, HC_FORMAT_TGA};

    for (int i = 0; i < 4; i++) {
        o.format = fmts[i];
        /* abort half way */
        HC_CHECK_EQ(hc_writer_open(tpath("out.img"), &info, &o, NULL, &w), 0);
        HC_CHECK_EQ(count_dir_entries(), before + 1); /* the temporary file */
        HC_CHECK_EQ(hc_writer_write_rows(w, px, 64 * 3, 10), 0);
        hc_writer_abort(w);
        HC_CHECK_EQ(count_dir_entries(), before);
        /* finish with rows missing */
        HC_CHECK_EQ(hc_writer_open(tpath("out.img"), &info, &o, NULL, &w), 0);
        HC_CHECK_EQ(hc_writer_write_rows(w, px, 64 * 3, 31), 0);
        HC_CHECK_EQ(hc_writer_write_rows(w, px, 64 * 3, 2), -EINVAL);     /* past the end */
        HC_CHECK_EQ(hc_writer_write_rows(w, px, 64 * 3 - 1, 1), -EINVAL); /* short stride */
        HC_CHECK_EQ(hc_writer_finish(w), -EINVAL);
        HC_CHECK(strstr(hc_last_error(), "31 of 32 rows"));
        HC_CHECK_EQ(count_dir_entries(), before);
        HC_CHECK(access(tpath("out.img"), F_OK) != 0);
        /* all rows: the file appears, nothing else stays */
        HC_CHECK_EQ(hc_writer_open(tpath("out.img"), &info, &o, NULL, &w), 0);
        HC_CHECK_EQ(hc_writer_write_rows(w, px, 64 * 3, 32), 0);
        HC_CHECK_EQ(hc_writer_finish(w), 0);
        HC_CHECK_EQ(count_dir_entries(), before + 1);
        {
            struct stat st;

            mode_t um = umask(022);

            umask(um);
            HC_CHECK_EQ(stat(tpath("out.img"), &st), 0);
            /* created like any new file (0666 less the umask), not mkstemp's 0600 */
            HC_CHECK_EQ(st.st_mode & 0777, 0666 & ~um);
        }
        unlink(tpath("out.img"));
    }
    /* a directory that does not exist, and bad arguments */
    o.format = HC_FORMAT_PNG;
    HC_CHECK_EQ(hc_writer_open("/nonexistent-dir-hc/x.png", &info, &o, NULL, &w), -ENOENT);
    o.format = HC_FORMAT_GIF;
    HC_CHECK_EQ(hc_writer_open(tpath("x.gif"), &info, &o, NULL, &w), -EINVAL);
    o.format = HC_FORMAT_JPEG;
    o.quality = 101;
    HC_CHECK_EQ(hc_writer_open(tpath("x.jpg"), &info, &o, NULL, &w), -EINVAL);
    HC_CHECK_EQ(count_dir_entries(), before);
    free(px);
}

static void
test_reader_contract(void)
{
    size_t n;
    uint8_t *png = make_file("r.png", HC_FORMAT_PNG, 40, 30, 4, 16, &n);
    struct hc_reader *r;
    uint8_t *rows = malloc(40 * 8 * 31);
    struct hc_image_info info;

    HC_CHECK_EQ(hc_probe_file(tpath("r.png"), &info), 0);
    HC_CHECK_EQ(info.format, HC_FORMAT_PNG);
    HC_CHECK_EQ(info.channels, 4);
    HC_CHECK_EQ(info.depth, 16);
    HC_CHECK_EQ(hc_reader_open_mem(png, n, NULL, &r), 0);
    HC_CHECK_EQ(hc_reader_read_rows(r, rows, 40 * 8, 0), -EINVAL);
    HC_CHECK_EQ(hc_reader_read_rows(r, rows, 40 * 8 - 1, 1), -EINVAL); /* short stride */
    HC_CHECK_EQ(hc_reader_read_rows(r, rows, 40 * 8, 31), -EINVAL);    /* too many */
    HC_CHECK_EQ(hc_reader_read_rows(r, rows, 40 * 8, 29), 0);
    HC_CHECK_EQ(hc_reader_read_rows(r, rows, 40 * 8, 1), 0);
    HC_CHECK_EQ(hc_reader_read_rows(r, rows, 40 * 8, 1), -EINVAL);
    hc_reader_close(r);
    hc_reader_close(NULL);
    hc_writer_abort(NULL);
    /* the format helpers */
    HC_CHECK_EQ(hc_format_from_path("a/b.JPG"), HC_FORMAT_JPEG);
    HC_CHECK_EQ(hc_format_from_path("x.jpeg"), HC_FORMAT_JPEG);
    HC_CHECK_EQ(hc_format_from_path("x.Png"), HC_FORMAT_PNG);
    HC_CHECK_EQ(hc_format_from_path("x.tga"), HC_FORMAT_TGA);
    HC_CHECK_EQ(hc_format_from_path("x.bmp"), HC_FORMAT_BMP);
    HC_CHECK_EQ(hc_format_from_path("x.gif"), HC_FORMAT_UNKNOWN);
    HC_CHECK_EQ(hc_format_from_path("dir.png/x"), HC_FORMAT_UNKNOWN);
    HC_CHECK_EQ(hc_format_from_path(".png"), HC_FORMAT_UNKNOWN);
    HC_CHECK_EQ(hc_format_writable(HC_FORMAT_GIF), HC_FORMAT_PNG);
    HC_CHECK_EQ(hc_format_writable(HC_FORMAT_TGA), HC_FORMAT_TGA);
    HC_CHECK(!strcmp(hc_format_name(HC_FORMAT_JPEG), "jpeg"));
    free(rows);
    free(png);
}

static int
run_unit(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_codec.XXXXXX");
    HC_CHECK(mkdtemp(tmpdir));
    atexit(rm_tmpdir);
    test_bombs(); /* first: maxrss must not yet include the larger tests */
    test_marker_bomb();
    test_garbage();
    test_truncated_jpeg();
    test_corrupt_png();
    test_writer_failures();
    test_reader_contract();
    printf("test_codec: all unit checks passed\n");
    return 0;
}

/* ---- commands for tests/codec_ref.py ---- */

static int
fail(const char *what)
{
    fprintf(stderr, "test_codec %s: %s\n", what, hc_last_error());
    return 1;
}

static int
cmd_dump(const char *in, const char *out)
{
    struct hc_image_info info;
    uint8_t *px;
    FILE *f;
    size_t n;

    if (hc_decode_file(in, NULL, &info, &px, NULL))
        return fail("dump");
    n = (size_t)info.width * info.height * hc_pixel_bytes(info.channels, info.depth);
    f = fopen(out, "wb");
    HC_CHECK(f);
    fprintf(f, "%d %d %d %d %s\n", info.width, info.height, info.channels, info.depth,
            hc_format_name(info.format));
    HC_CHECK(fwrite(px, 1, n, f) == n);
    HC_CHECK(fclose(f) == 0);
    free(px);
    return 0;
}

static int
cmd_encode(const char *raw, const char *out, int quality, int level)
{
    size_t n;
    uint8_t *b = read_file(raw, &n);
    struct hc_image_info info = {0};
    struct hc_writer_opts o = {hc_format_from_path(out), quality, level};
    const uint8_t *px = memchr(b, '\n', n);
    int res;

    HC_CHECK(px && sscanf((char *)b, "%d %d %d %d", &info.width, &info.height, &info.channels,
                          &info.depth) == 4);
    px++;
    /* move the pixels to the start of the (malloc-aligned) buffer: callers hand over
     * aligned 16-bit rows */
    memmove(b, px, n - (size_t)(px - b));
    px = b;
    res = hc_encode_file(out, &info, px,
                         (size_t)info.width * hc_pixel_bytes(info.channels, info.depth), &o, NULL);
    free(b);
    return res ? fail("encode") : 0;
}

static int
cmd_convert(const char *in, const char *out, int quality)
{
    struct hc_reader *r = NULL;
    struct hc_writer *w = NULL;
    struct hc_writer_opts o = {hc_format_from_path(out), quality, -1};
    const struct hc_image_info *info;
    uint8_t *rows = NULL;
    size_t stride;
    int res = 1;

    if (hc_reader_open(in, NULL, &r))
        return fail("convert");
    info = hc_reader_info(r);
    stride = (size_t)info->width * hc_pixel_bytes(info->channels, info->depth);
    rows = malloc(stride * 7);
    HC_CHECK(rows);
    if (hc_writer_open(out, info, &o, hc_reader_meta(r), &w)) {
        fail("convert");
        goto out;
    }
    for (int y = 0; y < info->height; y += 7) {
        int k = info->height - y < 7 ? info->height - y : 7;

        if (hc_reader_read_rows(r, rows, stride, k) || hc_writer_write_rows(w, rows, stride, k)) {
            fail("convert");
            hc_writer_abort(w);
            goto out;
        }
    }
    res = hc_writer_finish(w) ? fail("convert") : 0;
out:
    free(rows);
    hc_reader_close(r);
    return res;
}

static double
now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Decode and encode timings, both streamed by bands of 16 rows (as the pipeline does). */
static int
cmd_bench(const char *in, const char *out, int reps)
{
    for (int i = 0; i < reps; i++) {
        struct hc_reader *r;
        struct hc_writer *w;
        struct hc_writer_opts o = {hc_format_from_path(out), 0, -1};
        const struct hc_image_info *info;
        struct hc_image_info big;
        uint8_t *rows, *wide;
        size_t stride, wstride;
        double t0 = now(), t1;

        if (hc_reader_open(in, NULL, &r))
            return fail("bench");
        info = hc_reader_info(r);
        stride = (size_t)info->width * hc_pixel_bytes(info->channels, info->depth);
        rows = malloc(stride * 16);
        for (int y = 0; y < info->height; y += 16) {
            int k = info->height - y < 16 ? info->height - y : 16;

            if (hc_reader_read_rows(r, rows, stride, k))
                return fail("bench");
        }
        t1 = now();
        /* encode a 2x image: each source row band doubled in both directions */
        big = *info;
        big.width *= 2;
        big.height *= 2;
        wstride = stride * 2;
        wide = malloc(wstride * 32);
        for (int y = 0; y < 32; y++) {
            const uint8_t *s = rows + (size_t)(y / 2) * stride;
            size_t px = hc_pixel_bytes(info->channels, info->depth);

            for (int x = 0; x < big.width; x++)
                memcpy(wide + (size_t)y * wstride + (size_t)x * px, s + (size_t)(x / 2) * px, px);
        }
        if (hc_writer_open(out, &big, &o, hc_reader_meta(r), &w))
            return fail("bench");
        for (int y = 0; y < big.height; y += 32) {
            int k = big.height - y < 32 ? big.height - y : 32;

            if (hc_writer_write_rows(w, wide, wstride, k))
                return fail("bench");
        }
        if (hc_writer_finish(w))
            return fail("bench");
        printf("decode %s %dx%d: %.3f s   encode %s %dx%d: %.3f s\n", in, info->width, info->height,
               t1 - t0, out, big.width, big.height, now() - t1);
        hc_reader_close(r);
        free(rows);
        free(wide);
    }
    printf("maxrss %ld KiB\n", maxrss_kb());
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc == 1)
        return run_unit();
    if (argc == 4 && !strcmp(argv[1], "dump"))
        return cmd_dump(argv[2], argv[3]);
    if (argc >= 4 && !strcmp(argv[1], "encode"))
        return cmd_encode(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 0,
                          argc > 5 ? atoi(argv[5]) : -1);
    if (argc >= 4 && !strcmp(argv[1], "convert"))
        return cmd_convert(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 0);
    if (argc == 3 && !strcmp(argv[1], "probe")) {
        struct hc_image_info i;

        if (hc_probe_file(argv[2], &i))
            return fail("probe");
        printf("%s %d %d %d %d\n", hc_format_name(i.format), i.width, i.height, i.channels,
               i.depth);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "bench"))
        return cmd_bench(argv[2], argv[3], atoi(argv[4]));
    fprintf(stderr,
            "usage: test_codec [dump IN OUT | encode RAW OUT [q [level]] | convert IN OUT [q] "
            "| probe IN | bench IN OUT N]\n");
    return 2;
}
