/* pathmap.h: which output belongs to which version of which input, remembered across
 * mounts, so that `ls -l upscaled/` and user.hc.state are exact for files upscaled before
 * the last unmount without reading (hashing) the inputs again.
 *
 * A record is (input path relative to data/, the input's identity: device, inode, size,
 * mtime, ctime; the output's path and size). Records live in memory and in an append-only
 * text file in the cache directory (one line each; the last line of a path wins), which is
 * compacted at open when it has grown to more than twice its live records. A record is only
 * a hint: readers check that the input's identity is unchanged and that the output file
 * still exists with that size; open() always goes through a job (which hashes the input).
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef HC_FS_PATHMAP_H
#define HC_FS_PATHMAP_H

#include <stdint.h>
#include <sys/stat.h>

#ifdef __cplusplus
extern "C" {
#endif

struct hc_pathmap;

/* Loads (creating) the map kept in file. Returns 0 and *out, or -errno with hc_last_error()
 * set. Free with hc_pathmap_close(). */
int hc_pathmap_open(const char *file, struct hc_pathmap **out);
void hc_pathmap_close(struct hc_pathmap *pm);

/* Records that the version *st of input rel has its output at out_path (out_size bytes).
 * Names with a newline or tab are not recorded. Errors are ignored (it is a hint). */
void hc_pathmap_put(struct hc_pathmap *pm, const char *rel, const struct stat *st,
                    const char *out_path, uint64_t out_size);

/* The output of the version *st of rel, when recorded and still on disk with its size:
 * returns 0 and *out_size, else -ENOENT. Never reads the input. */
int hc_pathmap_get(struct hc_pathmap *pm, const char *rel, const struct stat *st,
                   uint64_t *out_size);

#ifdef __cplusplus
}
#endif
#endif
