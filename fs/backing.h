/* backing.h: the FUSE passthrough ids of upscaled/ files, shared by every open of a path.
 *
 * With passthrough the kernel reads an open file straight from a backing file (the cache
 * file of a done output): no read reaches hcfs, and the bytes come from the cache file's
 * own page cache. The kernel attaches one backing file to a FUSE inode while any
 * passthrough open of it exists: a second open must name the same one (another gives
 * EBUSY) and must use passthrough too (without, EINVAL). So every open of one path shares
 * one id while any of them is open; an open of a newer version of the output (its input
 * changed) waits until the older version's last reader has closed it.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef HC_FS_BACKING_H
#define HC_FS_BACKING_H

#ifdef __cplusplus
extern "C" {
#endif

struct hc_backing;

/* open_id registers a descriptor with the kernel and returns its id (> 0) or -errno;
 * close_id releases one (hc_platform_passthrough_open / _close in hcfs). */
struct hc_backing *hc_backing_new(int (*open_id)(int fd), void (*close_id)(int id));
void hc_backing_free(struct hc_backing *b);

/* The id for an open of rel that reads descriptor fd: > 0 to set as the open's backing
 * id; 0 when passthrough is off (a registration was refused once: no CAP_SYS_ADMIN, or
 * the kernel lacks it; the open then goes through hcfs as before); -EBUSY when another
 * version of rel stayed open longer than timeout_s; -EINTR when stop(arg) said so while
 * waiting. Every id > 0 returned must be given back with hc_backing_put(). */
int hc_backing_get(struct hc_backing *b, const char *rel, int fd, int (*stop)(void *), void *arg,
                   int timeout_s);
void hc_backing_put(struct hc_backing *b, int id);

/* 1 while passthrough is on. */
int hc_backing_enabled(struct hc_backing *b);

#ifdef __cplusplus
}
#endif
#endif
