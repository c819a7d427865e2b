/* files.h: the file side of the cache (internal to tilecache/): output names, whole-file
 * reads and writes, directory trees. Functions return 0 or -errno with hc_last_error() set.
 * Thread safety: reentrant; callers decide what needs their lock. */
#ifndef HC_TILECACHE_FILES_H
#define HC_TILECACHE_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* File extension of an output in format f ("jpg", "png", ...), NULL when f cannot be an
 * output. Read-only formats (GIF, PSD, PNM, HDR) are written as PNG. */
const char *hc_tc_files_ext(enum hc_format f);

/* mkdir -p with mode 0755; an existing directory is fine. */
int hc_tc_files_mkdirs(const char *path);

/* Removes path (file, or directory with everything under it); *bytes (optional) gets the
 * sum of the sizes of the regular files removed. A missing path is not an error. */
int hc_tc_files_rmtree(const char *path, uint64_t *bytes);

/* Removes everything inside directory path but keeps the directory. */
int hc_tc_files_empty_dir(const char *path, uint64_t *bytes);

/* Creates path exclusively (0644) and writes buf[0..len) to it. On failure the file is
 * removed. */
int hc_tc_files_write_new(const char *path, const void *buf, size_t len);

/* Reads exactly len bytes from path into buf: -ENOENT when missing, -EIO when the file's
 * size is not len. */
int hc_tc_files_read_exact(const char *path, void *buf, size_t len);

#endif
