/* window.h: a sliding window of decoded source rows.
 *
 * Holds rows [y0, y0 + rows) of a reader's image contiguously (so a struct hc_view can point
 * at them) and moves forward only: rows no longer needed are dropped, new ones decoded.
 * Bounded by cap rows, fixed at init. Used by the job pipeline and by `hc split`.
 */
#ifndef HC_WINDOW_H
#define HC_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hc_window {
    uint8_t *buf;
    size_t stride;
    int y0, rows, cap;
    int w, channels, depth;
};

/* Sets up a window of at most cap rows of a w-pixel-wide image. Returns 0 or -ENOMEM.
 * Release with hc_window_free(). */
int hc_window_init(struct hc_window *win, int w, int channels, int depth, int cap);
void hc_window_free(struct hc_window *win);

/* Makes the window hold rows [ylo, yhi], reading forward from r (which must be positioned
 * at row y0 + rows). Returns 0, -EINVAL (rows before the window, more than cap rows), or the
 * reader's error. */
int hc_window_need(struct hc_window *win, struct hc_reader *r, int ylo, int yhi);

/* A view of the rows held. */
void hc_window_view(const struct hc_window *win, struct hc_view *v);

/* Most source rows any band of band_h output rows needs at this scale (the cap to use). */
int hc_window_rows_for_bands(int src_w, int src_h, int scale, int dst_h, int band_h);

#ifdef __cplusplus
}
#endif
#endif
