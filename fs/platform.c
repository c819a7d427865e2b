/* platform.c: the macOS / Linux differences of hcfs (see platform.h). */
#include "platform.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/xattr.h>
#ifdef __APPLE__
#include <pthread/qos.h>
#endif
#ifndef __APPLE__
#include <linux/fs.h>
#include <sys/syscall.h>
#endif

static const char *
home_dir(void)
{
    const char *h = getenv("HOME");
    if (h && h[0] == '/')
        return h;
    struct passwd *pw = getpwuid(getuid());
    return pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
}

int
hc_platform_default_dirs(char *data, size_t data_len, char *cache, size_t cache_len)
{
    const char *home = home_dir();
    int n1, n2;
#ifdef __APPLE__
    if (!home)
        return -ENOENT;
    n1 = snprintf(data, data_len, "%s/Library/Application Support/HybridCompute", home);
    n2 = snprintf(cache, cache_len, "%s/Library/Caches/HybridCompute", home);
#else
    const char *xd = getenv("XDG_DATA_HOME"), *xc = getenv("XDG_CACHE_HOME");
    /* XDG says relative values are invalid and must be ignored. */
    if (xd && xd[0] == '/')
        n1 = snprintf(data, data_len, "%s/hybridcompute", xd);
    else if (home)
        n1 = snprintf(data, data_len, "%s/.local/share/hybridcompute", home);
    else
        return -ENOENT;
    if (xc && xc[0] == '/')
        n2 = snprintf(cache, cache_len, "%s/hybridcompute", xc);
    else if (home)
        n2 = snprintf(cache, cache_len, "%s/.cache/hybridcompute", home);
    else
        return -ENOENT;
#endif
    if (n1 < 0 || (size_t)n1 >= data_len || n2 < 0 || (size_t)n2 >= cache_len)
        return -ENAMETOOLONG;
    return 0;
}

const char *
hc_platform_mount_opts(void)
{
#ifdef __APPLE__
    /* daemon_timeout above every blocking open (jobs wait in open); noappledouble keeps
     * Finder's ._ files out; volname is what Finder shows. */
    return "volname=HybridCompute,noappledouble,daemon_timeout=600";
#else
    return "";
#endif
}

int
hc_platform_hidden_name(const char *name)
{
    return strncmp(name, "._", 2) == 0 || strcmp(name, ".DS_Store") == 0;
}

void
hc_platform_fd_path(int fd, char *buf, size_t len)
{
#ifdef __APPLE__
    snprintf(buf, len, "/dev/fd/%d", fd);
#else
    snprintf(buf, len, "/proc/self/fd/%d", fd);
#endif
}

#ifdef __APPLE__
#define backing_name(name, buf) (name)
#else
/* Linux accepts only user., trusted., security. and system. names; the FUSE kernel module
 * hands us any name, so com.apple.* (Finder's quarantine, FinderInfo, ...) is kept under
 * user. on the data directory and shown without it. */
static const char APPLE_PREFIX[] = "com.apple.";
static const char USER_APPLE_PREFIX[] = "user.com.apple.";

static const char *
backing_name_buf(const char *name, char *buf, size_t len)
{
    if (strncmp(name, APPLE_PREFIX, sizeof(APPLE_PREFIX) - 1) != 0)
        return name;
    if ((size_t)snprintf(buf, len, "user.%s", name) >= len)
        return name; /* too long: the syscall will say ERANGE */
    return buf;
}
#define backing_name(name, buf) backing_name_buf((name), (buf), sizeof(buf))
#endif

int
hc_platform_getxattr(const char *path, const char *name, void *buf, size_t len)
{
    char nb[XATTR_NAME_MAX + 16];
    (void)nb;
#ifdef __APPLE__
    ssize_t r = getxattr(path, backing_name(name, nb), buf, len, 0, XATTR_NOFOLLOW);
#else
    ssize_t r = lgetxattr(path, backing_name(name, nb), buf, len);
#endif
    if (r < 0)
        return errno == ENODATA || errno == HC_ENOATTR ? -HC_ENOATTR : -errno;
    return r > INT_MAX ? -E2BIG : (int)r;
}

int
hc_platform_setxattr(const char *path, const char *name, const void *val, size_t len, int flags)
{
    char nb[XATTR_NAME_MAX + 16];
    (void)nb;
#ifdef __APPLE__
    int r = setxattr(path, backing_name(name, nb), val, len, 0, flags | XATTR_NOFOLLOW);
#else
    int r = lsetxattr(path, backing_name(name, nb), val, len, flags);
#endif
    return r < 0 ? -errno : 0;
}

int
hc_platform_removexattr(const char *path, const char *name)
{
    char nb[XATTR_NAME_MAX + 16];
    (void)nb;
#ifdef __APPLE__
    int r = removexattr(path, backing_name(name, nb), XATTR_NOFOLLOW);
#else
    int r = lremovexattr(path, backing_name(name, nb));
#endif
    if (r < 0)
        return errno == ENODATA || errno == HC_ENOATTR ? -HC_ENOATTR : -errno;
    return 0;
}

int
hc_platform_listxattr(const char *path, char *buf, size_t len)
{
#ifdef __APPLE__
    ssize_t r = listxattr(path, buf, len, XATTR_NOFOLLOW);
    if (r < 0)
        return -errno;
    return r > INT_MAX ? -E2BIG : (int)r;
#else
    ssize_t r = llistxattr(path, buf, len);
    if (r < 0)
        return -errno;
    if (len == 0 || r == 0)
        return (int)r; /* a size query: the shown list is never longer than the stored one */
    /* Strip "user." from user.com.apple.* in place; the list only gets shorter. */
    size_t in = 0, out = 0, skip = sizeof(USER_APPLE_PREFIX) - sizeof(APPLE_PREFIX);
    while (in < (size_t)r) {
        size_t n = strnlen(buf + in, (size_t)r - in) + 1;
        size_t from = in;
        if (strncmp(buf + in, USER_APPLE_PREFIX, sizeof(USER_APPLE_PREFIX) - 1) == 0)
            from += skip;
        memmove(buf + out, buf + from, n - (from - in));
        out += n - (from - in);
        in += n;
    }
    return (int)out;
#endif
}

int
hc_platform_rename(const char *from, const char *to, unsigned int flags)
{
#ifdef __APPLE__
    if (flags)
        return -EINVAL; /* renamex_np could, but macFUSE passes no flags through FUSE 3 */
    return rename(from, to) < 0 ? -errno : 0;
#else
    if (flags == 0)
        return rename(from, to) < 0 ? -errno : 0;
    long r = syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags);
    return r < 0 ? -errno : 0;
#endif
}

int
hc_platform_fsync(int fd, int datasync)
{
#ifdef __APPLE__
    (void)datasync; /* no fdatasync in the SDK */
    return fsync(fd) < 0 ? -errno : 0;
#else
    return (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
#endif
}

void
hc_platform_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = rl.rlim_max;
#ifdef __APPLE__
    if (want > OPEN_MAX) /* setrlimit refuses more than OPEN_MAX (RLIM_INFINITY included) */
        want = OPEN_MAX;
#endif
    if (want > 65536)
        want = 65536;
    if (want > rl.rlim_cur) {
        rl.rlim_cur = want;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void
hc_platform_background_thread(void)
{
#ifdef __APPLE__
    (void)pthread_set_qos_class_self_np(QOS_CLASS_BACKGROUND, 0);
#elif defined(SCHED_IDLE)
    struct sched_param sp = {0};
    (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
#endif
}

int
hc_platform_loop(struct fuse *f, unsigned int max_threads, unsigned int idle_threads)
{
#if FUSE_USE_VERSION >= 312
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (!cfg)
        return -ENOMEM;
    fuse_loop_cfg_set_max_threads(cfg, max_threads);
    fuse_loop_cfg_set_idle_threads(cfg, idle_threads);
    int r = fuse_loop_mt(f, cfg);
    fuse_loop_cfg_destroy(cfg);
    return r;
#elif FUSE_USE_VERSION >= 32
    (void)max_threads; /* before 3.12 the loop starts a worker whenever none is idle */
    struct fuse_loop_config cfg = {.clone_fd = 0, .max_idle_threads = idle_threads};
    return fuse_loop_mt(f, &cfg);
#else
    (void)max_threads;
    (void)idle_threads;
    return fuse_loop_mt(f, 0);
#endif
}

/* ---- FUSE passthrough ------------------------------------------------------------------ */

#if defined(__linux__) && defined(FUSE_CAP_PASSTHROUGH)
#include <stdint.h>
#include <sys/ioctl.h>

#include <fuse_lowlevel.h>

/* The kernel's /dev/fuse ioctls for backing files (include/uapi/linux/fuse.h, Linux 6.9):
 * Debian 12's kernel headers predate them, so they are spelled out here. */
struct hc_backing_map {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
#define HC_FUSE_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct hc_backing_map)
#define HC_FUSE_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

int
hc_platform_session_fd(void)
{
    struct fuse_context *c = fuse_get_context();
    return c && c->fuse ? fuse_session_fd(fuse_get_session(c->fuse)) : -1;
}

int
hc_platform_passthrough_init(struct fuse_conn_info *conn)
{
    if (!(conn->capable & FUSE_CAP_PASSTHROUGH))
        return 0;
    conn->want |= FUSE_CAP_PASSTHROUGH;
    /* cache files may live on a stacked filesystem (overlayfs in containers) */
    conn->max_backing_stack_depth = 1;
    return 1;
}

int
hc_platform_passthrough_open(int sfd, int fd)
{
    struct hc_backing_map map = {.fd = fd, .flags = 0, .padding = 0};
    if (sfd < 0)
        return -EBADF;
    int id = ioctl(sfd, HC_FUSE_DEV_IOC_BACKING_OPEN, &map);
    return id > 0 ? id : id == 0 ? -EIO : -errno;
}

void
hc_platform_passthrough_close(int sfd, int backing_id)
{
    uint32_t id = (uint32_t)backing_id;
    if (sfd >= 0 && backing_id > 0)
        (void)ioctl(sfd, HC_FUSE_DEV_IOC_BACKING_CLOSE, &id);
}

void
hc_platform_set_backing_id(struct fuse_file_info *fi, int backing_id)
{
    fi->backing_id = backing_id;
}
#else
int
hc_platform_passthrough_init(struct fuse_conn_info *conn)
{
    (void)conn;
    return 0;
}

int
hc_platform_session_fd(void)
{
    return -1;
}

int
hc_platform_passthrough_open(int sfd, int fd)
{
    (void)sfd;
    (void)fd;
    return -ENOSYS;
}

void
hc_platform_passthrough_close(int sfd, int backing_id)
{
    (void)sfd;
    (void)backing_id;
}

void
hc_platform_set_backing_id(struct fuse_file_info *fi, int backing_id)
{
    (void)fi;
    (void)backing_id;
}
#endif
