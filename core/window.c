/* window.c: sliding window of decoded source rows. */
#include "window.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tile.h"

int
hc_window_init(struct hc_window *win, int w, int channels, int depth, int cap)
{
    memset(win, 0, sizeof(*win));
    win->w = w;
    win->channels = channels;
    win->depth = depth;
    win->cap = cap;
    win->stride = (size_t)w * hc_pixel_bytes(channels, depth);
    win->buf = malloc(win->stride * (size_t)cap);
    if (!win->buf)
        return hc_error(-ENOMEM, "window", "out of memory for %d rows of %d pixels", cap, w);
    return 0;
}

void
hc_window_free(struct hc_window *win)
{
    free(win->buf);
    win->buf = NULL;
}

int
hc_window_need(struct hc_window *win, struct hc_reader *r, int ylo, int yhi)
{
    int res;

    if (ylo < win->y0 || yhi < ylo)
        return hc_error(-EINVAL, "window", "rows %d..%d requested out of order", ylo, yhi);
    if (yhi - ylo + 1 > win->cap)
        return hc_error(-EINVAL, "window", "%d rows needed, window holds %d", yhi - ylo + 1,
                        win->cap);
    if (ylo >= win->y0 + win->rows) {   /* nothing kept is needed: skip ahead */
        int next = win->y0 + win->rows; /* the next row the reader gives */

        while (next < ylo) {
            int n = ylo - next < win->cap ? ylo - next : win->cap;

            res = hc_reader_read_rows(r, win->buf, win->stride, n);
            if (res)
                return res;
            next += n;
        }
        win->y0 = ylo;
        win->rows = 0;
    } else if (ylo > win->y0) {
        int drop = ylo - win->y0;

        /* A memmove of the overlap (a few rows of halo) keeps the rows contiguous; cheaper
         * than the views and index arithmetic a ring buffer would need everywhere. */
        memmove(win->buf, win->buf + (size_t)drop * win->stride,
                (size_t)(win->rows - drop) * win->stride);
        win->y0 = ylo;
        win->rows -= drop;
    }
    if (yhi >= win->y0 + win->rows) {
        int n = yhi + 1 - (win->y0 + win->rows);

        res = hc_reader_read_rows(r, win->buf + (size_t)win->rows * win->stride, win->stride, n);
        if (res)
            return res;
        win->rows += n;
    }
    return 0;
}

void
hc_window_view(const struct hc_window *win, struct hc_view *v)
{
    *v = (struct hc_view){win->buf,  win->stride,   0,         win->y0, win->w,
                          win->rows, win->channels, win->depth};
}

int
hc_window_rows_for_bands(int src_w, int src_h, int scale, int dst_h, int band_h)
{
    int best = 1;

    for (int y = 0; y < dst_h; y += band_h) {
        struct hc_rect out = {0, y, 1, band_h < dst_h - y ? band_h : dst_h - y}, src;

        hc_tile_src_rect(src_w, src_h, scale, &out, &src);
        if (src.h > best)
            best = src.h;
    }
    return best;
}
