/* platform.h: everything hcfs does differently on macOS (macFUSE) and Linux (libfuse 3), in
 * one place. Every fs/ source includes this header instead of <fuse.h> so that the FUSE API
 * version is the same everywhere.
 *
 * macOS: FUSE_USE_VERSION 31 with FUSE_DARWIN_ENABLE_EXTENSIONS 0 (plain FUSE 3 API on
 * macFUSE >= 4.10); mount options volname=HybridCompute,noappledouble,daemon_timeout=600;
 * xattr calls take position/options arguments; a missing xattr is ENOATTR.
 * Linux: the libfuse 3.12 loop configuration (max_threads) when available; names outside
 * the kernel's namespaces (com.apple.*, which Finder and macOS programs use) are stored on
 * the data directory as user.com.apple.* so that they still pass through input/.
 *
 * Thread safety: every function is reentrant.
 */
#ifndef HC_FS_PLATFORM_H
#define HC_FS_PLATFORM_H

/* fs/CMakeLists.txt passes HC_FUSE_USE_VERSION: 312 where libfuse >= 3.12 (the loop
 * configuration with max_threads), 31 otherwise and always on macOS. */
#ifdef __APPLE__
#define FUSE_USE_VERSION 31
#define FUSE_DARWIN_ENABLE_EXTENSIONS 0
#elif defined(HC_FUSE_USE_VERSION)
#define FUSE_USE_VERSION HC_FUSE_USE_VERSION
#else
#define FUSE_USE_VERSION 31
#endif

#include <errno.h>
#include <stddef.h>
#include <sys/types.h>

#include <fuse.h>

#ifdef __cplusplus
extern "C" {
#endif

/* struct stat's timestamps (macOS names them st_*timespec). */
#ifdef __APPLE__
#define HC_ST_ATIM(st) ((st)->st_atimespec)
#define HC_ST_MTIM(st) ((st)->st_mtimespec)
#define HC_ST_CTIM(st) ((st)->st_ctimespec)
#else
#define HC_ST_ATIM(st) ((st)->st_atim)
#define HC_ST_MTIM(st) ((st)->st_mtim)
#define HC_ST_CTIM(st) ((st)->st_ctim)
#endif

/* The errno for "this file has no such extended attribute". */
#ifdef __APPLE__
#define HC_ENOATTR ENOATTR
#else
#define HC_ENOATTR ENODATA
#endif

/* Default data and cache directories: $XDG_DATA_HOME/hybridcompute (else
 * ~/.local/share/hybridcompute) and $XDG_CACHE_HOME/hybridcompute (else
 * ~/.cache/hybridcompute); on macOS ~/Library/Application Support/HybridCompute and
 * ~/Library/Caches/HybridCompute. Writes NUL-terminated paths into the buffers. Returns 0, or
 * -ENOENT when no home directory is known, -ENAMETOOLONG. */
int hc_platform_default_dirs(char *data, size_t data_len, char *cache, size_t cache_len);

/* FUSE passthrough (Linux >= 6.9 with libfuse >= 3.16, which scripts/build-libfuse provides
 * where the system's is older): the kernel serves reads of an open file straight from a
 * backing file, with no request to hcfs and from that file's own page cache.
 * hc_platform_passthrough_init asks for it in init (1 when the kernel offers it, else 0);
 * hc_platform_session_fd, called in a FUSE callback, gives the /dev/fuse descriptor (-1
 * where unknown) that the other two take, so that any thread may call them while the
 * connection is open; hc_platform_passthrough_open registers fd and returns the backing id
 * for fi->backing_id (> 0), or -errno (-EPERM without CAP_SYS_ADMIN, -ENOSYS where
 * unsupported: macOS, older libfuse); hc_platform_passthrough_close releases an id. */
int hc_platform_passthrough_init(struct fuse_conn_info *conn);
int hc_platform_session_fd(void);
int hc_platform_passthrough_open(int sfd, int fd);
void hc_platform_passthrough_close(int sfd, int backing_id);
/* Sets fi's backing id (no-op where fuse_file_info has none). */
void hc_platform_set_backing_id(struct fuse_file_info *fi, int backing_id);

/* Mount options this platform always adds ("" on Linux). */
const char *hc_platform_mount_opts(void);

/* Names that never appear in upscaled/ (AppleDouble "._*" files, ".DS_Store"). */
int hc_platform_hidden_name(const char *name);

/* A path that opens the same file as the open descriptor fd (Linux /proc/self/fd/N, macOS
 * /dev/fd/N): lets path-based code (the codec readers) read a file that may have been
 * renamed or replaced since it was opened. */
void hc_platform_fd_path(int fd, char *buf, size_t len);

/* Extended attributes of the backing files of input/, by path, not following symlinks.
 * name is the name a FUSE client used; the functions return what the syscall returned
 * (size or 0) or -errno, and a missing attribute as -HC_ENOATTR. list fills buf with the
 * names as clients must see them. */
int hc_platform_getxattr(const char *path, const char *name, void *buf, size_t len);
int hc_platform_setxattr(const char *path, const char *name, const void *val, size_t len,
                         int flags);
int hc_platform_listxattr(const char *path, char *buf, size_t len);
int hc_platform_removexattr(const char *path, const char *name);

/* rename(2) with the FUSE flags (RENAME_NOREPLACE, RENAME_EXCHANGE); -EINVAL where the
 * system cannot honour a flag. Returns 0 or -errno. */
int hc_platform_rename(const char *from, const char *to, unsigned int flags);

/* fsync, or fdatasync when datasync and the system has it. Returns 0 or -errno. */
int hc_platform_fsync(int fd, int datasync);

/* Lowers the calling thread to "run only when a CPU is idle" (Linux SCHED_IDLE, macOS
 * QOS_CLASS_BACKGROUND): for work a job never waits for. Best effort; no error. */
void hc_platform_background_thread(void);
/* Raises the soft limit on open files towards the hard one (at most 65536): every reader
 * of upscaled/ holds descriptors in hcfs, and 1024 is the usual soft default. */
void hc_platform_raise_nofile(void);

/* Runs the FUSE loop with enough worker threads that `max_threads` readers may block in
 * open() at once without starving the mount (libfuse >= 3.12 caps workers at 10 by
 * default). Returns what fuse_loop_mt returned. */
int hc_platform_loop(struct fuse *f, unsigned int max_threads, unsigned int idle_threads);

#ifdef __cplusplus
}
#endif
#endif
