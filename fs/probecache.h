/* probecache.h: cached header probes for readdir/getattr of upscaled/.
 *
 * Listing upscaled/ asks, for every file of input/, whether its header names a supported
 * image. A probe reads only the first bytes of the file (hc_probe_file, never pixels), and
 * its answer is remembered per path together with the file's identity (device, inode, size,
 * mtime and ctime), so a listing of an unchanged folder reads nothing at all.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef HC_FS_PROBECACHE_H
#define HC_FS_PROBECACHE_H

#include <sys/stat.h>

#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hc_probecache;

/* Makes a cache holding up to `cap` answers (it forgets them all when full). Returns 0 and
 * *out (free with hc_probecache_free), or -ENOMEM. */
int hc_probecache_new(size_t cap, struct hc_probecache **out);
void hc_probecache_free(struct hc_probecache *pc);

/* The probe of the file at path, whose lstat() is *st. Returns 0 and *info for a supported
 * image, -EINVAL for anything else (not an image, unreadable header), -errno when the file
 * could not be read (not cached). */
int hc_probecache_get(struct hc_probecache *pc, const char *path, const struct stat *st,
                      struct hc_image_info *info);

/* Number of probes that actually read a file since hc_probecache_new (for tests). */
unsigned long long hc_probecache_reads(struct hc_probecache *pc);

#ifdef __cplusplus
}
#endif
#endif
