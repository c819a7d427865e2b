/* backing.h: the FUSE passthrough ids of upscaled/ files, shared by every open of a path.
 *
 * With passthrough the kernel reads an open file straight from a backing file (the cache
 * file of a done output): no read reaches hcfs, and the bytes come from the cache file's
 * own page cache. The kernel attaches one backing file to a FUSE inode while any
 * passthrough open of it exists: a second open must name the same file (another gives
 * EIO) and must use passthrough too (without, EIO). So the opens of one path share one
 * registration while any of them is open, and an open of a newer version of the output
 * (its input changed) waits until the older version's last reader has closed it. A
 * recomputed output with the same cache key (evicted, then made again) has the same bytes
 * and shares the old registration instead of waiting.
 *
 * A registration outlives its last open by linger_ms: a program that opens the same file
 * again and again (a viewer's probe and then its read, a loop) then finds it ready, and the
 * open costs hcfs one lstat, a pin in the cache and a dup instead of opening the cache file
 * and registering it again. A reaper thread gives the id back when the time is up (at most
 * 64 linger: the oldest goes first); a newer version replaces a lingering older one at once
 * (nobody reads it). A lingering entry holds its cache file open, so an evicted file's
 * blocks are freed at most linger_ms late; it is not reused once the file is gone from the
 * cache (the next open runs the job again, as without it).
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef HC_FS_BACKING_H
#define HC_FS_BACKING_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct hc_backing;

/* open_id(ctx, fd) registers a descriptor with the kernel and returns its id (> 0) or
 * -errno; close_id(ctx, id) releases one (in hcfs: the ioctls of fs/platform.c on the
 * mount's /dev/fuse descriptor). close_id is also called from the reaper thread. linger_ms 0: an id
 * goes with its last open. */
struct hc_backing *hc_backing_new(int (*open_id)(void *ctx, int fd),
                                  void (*close_id)(void *ctx, int id), void *ctx, int linger_ms);
/* Stops the reaper and gives back every lingering id now, while the FUSE connection is
 * still open (before unmount); later puts give ids back at once. */
void hc_backing_stop(struct hc_backing *b);
/* Frees the table; the ids die with the FUSE connection (no ioctl after unmount). */
void hc_backing_free(struct hc_backing *b);

/* The quick way in: when rel's registration (open or lingering) is the output named name,
 * takes a share of it, sets *fd to a new descriptor of that file and returns its id (> 0);
 * else returns 0 and the caller opens the file and asks hc_backing_get. A share taken here
 * is matched by one hc_backing_put too. */
int hc_backing_reuse(struct hc_backing *b, const char *rel, const char *name, int *fd);

/* The id for an open of rel that reads descriptor fd, whose file is named name in the
 * cache (its cache key: same name, same bytes). holds(arg, rel), when given, says whether
 * the opening process itself holds an older version open: then it would wait for itself,
 * and the wait is cut to 2 s.
 *  > 0: set it as the open's backing id;
 *  0: open without passthrough (it is off: a registration was refused for good, no
 *     CAP_SYS_ADMIN; or this path's current opens are without it after a passing
 *     failure);
 *  -EBUSY: another version of rel stayed open longer than timeout_s;
 *  -EINTR: stop(arg) said so while waiting.
 * Every call that returned >= 0 is matched by one hc_backing_put(b, rel). */
int hc_backing_get(struct hc_backing *b, const char *rel, int fd, const char *name,
                   int (*stop)(void *), int (*holds)(void *, const char *), void *arg,
                   int timeout_s);
void hc_backing_put(struct hc_backing *b, const char *rel);
/* Registrations made with the kernel, opens that reused one, and how many linger now. */
void hc_backing_stats(struct hc_backing *b, uint64_t *registered, uint64_t *reused, int *lingering);

#ifdef __cplusplus
}
#endif
#endif
