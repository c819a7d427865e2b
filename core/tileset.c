/* tileset.c: split into / stitch from a folder of tiles. */
#include "tileset.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "stitch.h"
#include "tile.h"
#include "window.h"

#define MANIFEST_MAGIC "hc-tileset 1"

static int
write_blob(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[PATH_MAX];
    FILE *f;
    int ok;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f)
        return hc_error(-errno, "split", "cannot write %s: %s", path, strerror(errno));
    ok = fwrite(p, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : hc_error(-EIO, "split", "cannot write %s", path);
}

/* Reads a small file whole (at most max bytes); absent file: 0 with *p NULL. */
static int
read_blob(const char *dir, const char *name, size_t max, uint8_t **p, size_t *n)
{
    char path[PATH_MAX];
    FILE *f;
    long len;
    int res = 0;

    *p = NULL;
    *n = 0;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? 0 : hc_error(-errno, "stitch", "%s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || (size_t)len > max ||
        fseek(f, 0, SEEK_SET)) {
        res = hc_error(-EINVAL, "stitch", "%s: unreadable or larger than %zu bytes", path, max);
        goto out;
    }
    *p = malloc(len ? (size_t)len : 1);
    if (!*p) {
        res = hc_error(-ENOMEM, "stitch", "out of memory");
        goto out;
    }
    if (fread(*p, 1, (size_t)len, f) != (size_t)len) {
        free(*p);
        *p = NULL;
        res = hc_error(-EIO, "stitch", "%s: read error", path);
        goto out;
    }
    *n = (size_t)len;
out:
    fclose(f);
    return res;
}

/* Removes the files an earlier split (and its upscaling) left in dir: tile-*.png, and
 * upscaled/tile-*.png, meta.icc, meta.exif. A stale upscaled tile would otherwise be stitched
 * into the new image when its geometry matches, and a stale profile attached to it. Only our
 * own names are touched; the user's other files stay. The input (in_st) being one of them is
 * refused: removing or overwriting it would lose the user's image. */
static int
remove_old_tileset(const char *dir, const struct stat *in_st)
{
    static const char *const subdirs[] = {"", "/upscaled"};
    char path[PATH_MAX];

    for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
        struct dirent *de;
        DIR *d;

        snprintf(path, sizeof(path), "%s%s", dir, subdirs[i]);
        d = opendir(path);
        if (!d) {
            if (errno == ENOENT)
                continue;
            return hc_error(-errno, "split", "cannot read %s: %s", path, strerror(errno));
        }
        while ((de = readdir(d))) {
            size_t n = strlen(de->d_name);

            if (!(!strncmp(de->d_name, "tile-", 5) && n > 9 &&
                  !strcmp(de->d_name + n - 4, ".png")) &&
                !(i == 0 && (!strcmp(de->d_name, "meta.icc") || !strcmp(de->d_name, "meta.exif"))))
                continue;
            struct stat st;

            if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && st.st_dev == in_st->st_dev &&
                st.st_ino == in_st->st_ino) {
                closedir(d);
                return hc_error(-EINVAL, "split",
                                "the input is %s/%s, a file of the tileset in %s; split into "
                                "another folder",
                                path, de->d_name, dir);
            }
            if (unlinkat(dirfd(d), de->d_name, 0) && errno != ENOENT) {
                int err = hc_error(-errno, "split", "cannot remove %s/%s: %s", path, de->d_name,
                                   strerror(errno));

                closedir(d);
                return err;
            }
        }
        closedir(d);
    }
    return 0;
}

int
hc_tileset_split(const char *in, const char *dir, int scale, int tile, const struct hc_limits *lim)
{
    struct hc_reader *r = NULL;
    const struct hc_image_info *info;
    const struct hc_meta *meta;
    struct hc_window win = {0};
    char path[PATH_MAX];
    FILE *man = NULL;
    uint8_t *buf = NULL;
    int dst_w, dst_h, ncol, nrow, res;
    size_t bpp;

    if (scale < 1 || scale > HC_MAX_SCALE)
        return hc_error(-ERANGE, "split", "scale %d is out of range 1..%d", scale, HC_MAX_SCALE);
    if (tile < 1)
        return hc_error(-EINVAL, "split", "tile size must be at least 1");
    res = hc_reader_open(in, lim, &r);
    if (res)
        return res;
    info = hc_reader_info(r);
    meta = hc_reader_meta(r);
    bpp = hc_pixel_bytes(info->channels, info->depth);
    dst_w = info->width * scale;
    dst_h = info->height * scale;
    ncol = (dst_w + tile - 1) / tile;
    nrow = (dst_h + tile - 1) / tile;
    if ((int64_t)ncol * nrow > INT_MAX) { /* tiles are numbered by int in the manifest */
        res = hc_error(-EINVAL, "split", "%lld tiles of %d px are too many; use a larger --tile",
                       (long long)ncol * nrow, tile);
        goto out;
    }

    if (mkdir(dir, 0777) && errno != EEXIST) {
        res = hc_error(-errno, "split", "cannot create %s: %s", dir, strerror(errno));
        goto out;
    }
    {
        struct stat in_st;

        if (stat(in, &in_st)) {
            res = hc_error(-errno, "split", "%s: %s", in, strerror(errno));
            goto out;
        }
        res = remove_old_tileset(dir, &in_st);
        if (res)
            goto out;
    }
    snprintf(path, sizeof(path), "%s/manifest.txt", dir);
    man = fopen(path, "w");
    if (!man) {
        res = hc_error(-errno, "split", "cannot write %s: %s", path, strerror(errno));
        goto out;
    }
    fprintf(man, MANIFEST_MAGIC "\nimage %d %d %d %d %s\nscale %d\ntile %d\ntiles %d\n",
            info->width, info->height, info->channels, info->depth, hc_format_name(info->format),
            scale, tile, ncol * nrow);
    if (meta->icc_len && (res = write_blob(dir, "meta.icc", meta->icc, meta->icc_len)))
        goto out;
    if (meta->exif_len && (res = write_blob(dir, "meta.exif", meta->exif, meta->exif_len)))
        goto out;

    res = hc_window_init(&win, info->width, info->channels, info->depth,
                         hc_window_rows_for_bands(info->width, info->height, scale, dst_h, tile));
    if (res)
        goto out;
    for (int ty = 0; ty < nrow; ty++) {
        struct hc_rect band = {0, ty * tile, dst_w,
                               tile < dst_h - ty * tile ? tile : dst_h - ty * tile};
        struct hc_rect need;
        struct hc_view v;

        hc_tile_src_rect(info->width, info->height, scale, &band, &need);
        res = hc_window_need(&win, r, need.y, need.y + need.h - 1);
        if (res)
            goto out;
        hc_window_view(&win, &v);
        for (int tx = 0; tx < ncol; tx++) {
            int idx = ty * ncol + tx;
            struct hc_rect o = {tx * tile, band.y,
                                tile < dst_w - tx * tile ? tile : dst_w - tx * tile, band.h};
            struct hc_rect s;
            struct hc_image_info ti;
            struct hc_writer_opts wo = {HC_FORMAT_PNG, 0, 1};

            hc_tile_src_rect(info->width, info->height, scale, &o, &s);
            free(buf);
            buf = malloc((size_t)s.w * (size_t)s.h * bpp);
            if (!buf) {
                res = hc_error(-ENOMEM, "split", "out of memory");
                goto out;
            }
            hc_tile_extract(&v, &s, buf, (size_t)s.w * bpp);
            ti = (struct hc_image_info){HC_FORMAT_PNG, s.w, s.h, info->channels, info->depth};
            snprintf(path, sizeof(path), "%s/tile-%05d.png", dir, idx);
            res = hc_encode_file(path, &ti, buf, (size_t)s.w * bpp, &wo, NULL);
            if (res)
                goto out;
            fprintf(man, "%d %d %d %d %d %d %d %d %d\n", idx, o.x, o.y, o.w, o.h, s.x, s.y, s.w,
                    s.h);
        }
    }
    if (fflush(man) || ferror(man))
        res = hc_error(-EIO, "split", "cannot write the manifest");
out:
    if (man && fclose(man) && !res)
        res = hc_error(-EIO, "split", "cannot write the manifest");
    free(buf);
    hc_window_free(&win);
    hc_reader_close(r);
    return res;
}

struct writer_sink {
    struct hc_writer *w;
};

static int
writer_sink(void *ctx, const uint8_t *rows, size_t stride, int nrows)
{
    return hc_writer_write_rows(((struct writer_sink *)ctx)->w, rows, stride, nrows);
}

static enum hc_format
format_by_name(const char *name)
{
    for (int f = HC_FORMAT_JPEG; f <= HC_FORMAT_HDR; f++)
        if (!strcmp(hc_format_name((enum hc_format)f), name))
            return (enum hc_format)f;
    return HC_FORMAT_UNKNOWN;
}

int
hc_tileset_stitch(const char *dir, const char *out, const struct hc_writer_opts *opts)
{
    char path[PATH_MAX], line[256], fmt[32];
    FILE *man = NULL;
    struct hc_meta meta = {0};
    struct hc_writer *w = NULL;
    struct hc_stitch *st = NULL;
    struct writer_sink sink;
    struct hc_image_info info, oinfo;
    struct hc_writer_opts wo = *opts;
    uint8_t *px = NULL;
    int scale, tile, n, res;

    snprintf(path, sizeof(path), "%s/manifest.txt", dir);
    man = fopen(path, "r");
    if (!man)
        return hc_error(-errno, "stitch", "%s: %s", path, strerror(errno));
    if (!fgets(line, sizeof(line), man) || strncmp(line, MANIFEST_MAGIC, strlen(MANIFEST_MAGIC)) ||
        fscanf(man, "image %d %d %d %d %31s scale %d tile %d tiles %d", &info.width, &info.height,
               &info.channels, &info.depth, fmt, &scale, &tile, &n) != 8 ||
        info.width < 1 || info.height < 1 || info.channels < 1 || info.channels > 4 ||
        (info.depth != 8 && info.depth != 16) || scale < 1 || scale > HC_MAX_SCALE || tile < 1 ||
        (int64_t)info.width * scale > 1000000 || (int64_t)info.height * scale > 1000000) {
        res = hc_error(-EINVAL, "stitch", "%s is not a valid hc tileset manifest", path);
        goto out;
    }
    info.format = format_by_name(fmt);
    if ((res = read_blob(dir, "meta.icc", 64u << 20, &meta.icc, &meta.icc_len)) ||
        (res = read_blob(dir, "meta.exif", 64u << 10, &meta.exif, &meta.exif_len)))
        goto out;

    if (wo.format == HC_FORMAT_UNKNOWN)
        wo.format = hc_format_from_path(out);
    if (wo.format == HC_FORMAT_UNKNOWN)
        wo.format = hc_format_writable(info.format);
    oinfo = (struct hc_image_info){wo.format, info.width * scale, info.height * scale,
                                   info.channels, info.depth};
    res = hc_writer_open(out, &oinfo, &wo, &meta, &w);
    if (res)
        goto out;
    sink.w = w;
    res = hc_stitch_open(oinfo.width, oinfo.height, tile, info.channels, info.depth, writer_sink,
                         &sink, &st);
    if (res)
        goto out;

    for (int i = 0; i < n; i++) {
        struct hc_rect o, s, want;
        struct hc_image_info ti;
        struct hc_limits lim;
        size_t bpp = hc_pixel_bytes(info.channels, info.depth);
        int idx, dx, dy;

        if (fscanf(man, "%d %d %d %d %d %d %d %d %d", &idx, &o.x, &o.y, &o.w, &o.h, &s.x, &s.y,
                   &s.w, &s.h) != 9) {
            res = hc_error(-EINVAL, "stitch", "%s: tile record %d is malformed", path, i);
            goto out;
        }
        /* The manifest is a text file anyone may edit: check the rectangle before any
         * arithmetic on it (x + w past INT_MAX would overflow in hc_tile_src_rect). */
        if (o.w < 1 || o.h < 1 || o.x < 0 || o.y < 0 || o.x > oinfo.width - o.w ||
            o.y > oinfo.height - o.h) {
            res = hc_error(-EINVAL, "stitch",
                           "%s: tile %d's output rectangle %d,%d %dx%d lies outside the %dx%d "
                           "output",
                           path, idx, o.x, o.y, o.w, o.h, oinfo.width, oinfo.height);
            goto out;
        }
        hc_tile_src_rect(info.width, info.height, scale, &o, &want);
        if (memcmp(&want, &s, sizeof(s))) {
            res = hc_error(-EINVAL, "stitch", "%s: tile %d's rectangles disagree", path, idx);
            goto out;
        }
        snprintf(path, sizeof(path), "%s/upscaled/tile-%05d.png", dir, idx);
        hc_limits_default(&lim);
        free(px);
        px = NULL;
        {
            struct hc_meta tm = {0};

            res = hc_decode_file(path, &lim, &ti, &px, &tm);
            hc_meta_clear(&tm);
        }
        if (res)
            goto out;
        if (ti.channels != info.channels || ti.depth != info.depth) {
            res = hc_error(-EINVAL, "stitch", "%s has %d channels at %d bit, expected %d at %d",
                           path, ti.channels, ti.depth, info.channels, info.depth);
            goto out;
        }
        if (ti.width == s.w * scale && ti.height == s.h * scale) { /* whole padded tile */
            dx = o.x - s.x * scale;
            dy = o.y - s.y * scale;
        } else if (ti.width == o.w && ti.height == o.h) { /* exactly the output rectangle */
            dx = dy = 0;
        } else {
            res = hc_error(-EINVAL, "stitch", "%s is %dx%d; expected %dx%d or %dx%d", path,
                           ti.width, ti.height, s.w * scale, s.h * scale, o.w, o.h);
            goto out;
        }
        res = hc_stitch_put(st, &o, px + (size_t)dy * ti.width * bpp + (size_t)dx * bpp,
                            (size_t)ti.width * bpp);
        if (res)
            goto out;
        snprintf(path, sizeof(path), "%s/manifest.txt", dir);
    }
    res = hc_stitch_finish(st);
    if (res)
        goto out;
    res = hc_writer_finish(w);
    w = NULL;
out:
    hc_stitch_free(st);
    hc_writer_abort(w);
    hc_meta_clear(&meta);
    free(px);
    if (man)
        fclose(man);
    return res;
}
