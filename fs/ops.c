/* ops.c: the FUSE operations of hcfs (high-level API, paths).
 *
 * input/ is a passthrough of the data directory; upscaled/ is a read-only view whose files
 * are the outputs of jobs (jobs.h).
 *
 * Sizes: an upscaled/ file reports an estimate until its job is done. The kernel keeps
 * attributes for 1 s (entry and attribute timeouts, set in init, as sshfs does), so when a
 * job ends hcfs drops the kernel's cached attributes of its path (hc_fs_job_ended, called
 * before any waiting open() returns): whatever a program sees after open() is the exact
 * file. fstat() on an open upscaled file answers from the output's descriptor, and a read
 * past the size the kernel remembers makes it ask again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#include "backing.h"
#include "hcfs.h"

#include <fuse_lowlevel.h>

#include "error.h"

#define FINDERINFO "com.apple.FinderInfo"

enum area {
    AREA_NONE = 0,
    AREA_ROOT,
    AREA_INPUT,    /* rel "" is input/ itself */
    AREA_UPSCALED, /* rel "" is upscaled/ itself */
};

enum hkind { H_INPUT = 1, H_UPSCALED };

/* What fi->fh points to. */
struct handle {
    enum hkind kind;
    int fd;
    int written;                 /* input/: written or truncated through this handle */
    int backing_ref;             /* upscaled/: holds a share in fs->backing (put at release) */
    char *rel;                   /* input path at open time (for prefetch on release) */
    struct stat ist;             /* upscaled/: the input's attributes at open time */
    char pin[HC_TC_KEY_LEN + 1]; /* upscaled/: the output's key, pinned in the cache; "" */
};

static struct hcfs *
fs_get(void)
{
    return fuse_get_context()->private_data;
}

static enum area
classify(const char *path, const char **rel)
{
    static const char in[] = "/input", up[] = "/upscaled";
    *rel = "";
    if (!path)
        return AREA_NONE;
    if (strcmp(path, "/") == 0)
        return AREA_ROOT;
    if (strncmp(path, in, sizeof(in) - 1) == 0 &&
        (path[sizeof(in) - 1] == '\0' || path[sizeof(in) - 1] == '/')) {
        *rel = path[sizeof(in) - 1] ? path + sizeof(in) : "";
        return AREA_INPUT;
    }
    if (strncmp(path, up, sizeof(up) - 1) == 0 &&
        (path[sizeof(up) - 1] == '\0' || path[sizeof(up) - 1] == '/')) {
        *rel = path[sizeof(up) - 1] ? path + sizeof(up) : "";
        return AREA_UPSCALED;
    }
    return AREA_NONE;
}

/* data/<rel> into buf. */
static int
backing(const struct hcfs *fs, const char *rel, char *buf, size_t len)
{
    int n = *rel ? snprintf(buf, len, "%s/%s", fs->data, rel) : snprintf(buf, len, "%s", fs->data);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static const char *
base_name(const char *rel)
{
    const char *s = strrchr(rel, '/');
    return s ? s + 1 : rel;
}

static int
stop_waiting(void *ctx)
{
    struct hcfs *fs = ctx;
    return fuse_interrupted() || fuse_session_exited(fuse_get_session(fs->fuse));
}

/* Is upscaled/<rel> a file of the view? Fills *ist with the input's lstat. */
static int
up_file(struct hcfs *fs, const char *rel, struct stat *ist, struct hc_image_info *info)
{
    char p[PATH_MAX];
    int r = backing(fs, rel, p, sizeof(p));
    if (r < 0)
        return r;
    if (lstat(p, ist) < 0)
        return -errno;
    if (S_ISDIR(ist->st_mode))
        return 1;
    if (!S_ISREG(ist->st_mode) || hc_platform_hidden_name(base_name(rel)))
        return -ENOENT;
    r = hc_probecache_get(fs->probes, p, ist, info);
    return r == -EINVAL ? -ENOENT : r;
}

static void
up_attr(const struct stat *ist, struct stat *st)
{
    *st = *ist;
    if (S_ISDIR(ist->st_mode)) {
        st->st_mode = S_IFDIR | (ist->st_mode & 0555);
    } else {
        st->st_mode = S_IFREG | (ist->st_mode & 0444);
        st->st_nlink = 1;
    }
}

static void
set_size(struct stat *st, uint64_t size)
{
    st->st_size = (off_t)size;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
}

static int
hc_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX];
    int r;

    if (fi && fi->fh) {
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        struct stat fst;
        if (fstat(h->fd, &fst) < 0)
            return -errno;
        if (h->kind == H_INPUT) {
            *st = fst;
            return 0;
        }
        /* An open upscaled file: the size of the output we serve, exactly. */
        up_attr(&h->ist, st);
        set_size(st, (uint64_t)fst.st_size);
        return 0;
    }

    switch (classify(path, &rel)) {
    case AREA_ROOT:
        memset(st, 0, sizeof(*st));
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 4;
        st->st_uid = getuid();
        st->st_gid = getgid();
        HC_ST_MTIM(st) = HC_ST_CTIM(st) = HC_ST_ATIM(st) = fs->mounted_at;
        return 0;
    case AREA_INPUT:
        if ((r = backing(fs, rel, p, sizeof(p))) < 0)
            return r;
        return lstat(p, st) < 0 ? -errno : 0;
    case AREA_UPSCALED: {
        struct stat ist;
        struct hc_image_info info;
        r = up_file(fs, rel, &ist, &info);
        if (r < 0)
            return r;
        up_attr(&ist, st);
        if (r == 1)
            return 0;
        struct hc_job_status js;
        hc_jobs_status(fs->jobs, rel, &ist, &js);
        if (js.state == HC_JOB_DONE) {
            set_size(st, js.size);
        } else if (fs->exact_size) {
            /* exact_size: plain stat waits for the output (documented in README). A failed
             * job reports 0 bytes; open says EIO and user.hc.error why. */
            uint64_t sz = 0;
            r = hc_jobs_open_output(fs->jobs, rel, stop_waiting, fs, NULL, &sz, NULL, NULL, NULL,
                                    0);
            if (r == -EINTR || r == -ENOENT)
                return r;
            set_size(st, r == 0 ? sz : 0);
        } else {
            /* Not generated yet: an estimate (input bytes times the pixel ratio). */
            set_size(st, (uint64_t)ist.st_size * (uint64_t)fs->scale * (uint64_t)fs->scale);
        }
        return 0;
    }
    default:
        return -ENOENT;
    }
}

static int
hc_readlink(const char *path, char *buf, size_t size)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX];
    if (classify(path, &rel) != AREA_INPUT || !*rel)
        return -EINVAL;
    int r = backing(fs, rel, p, sizeof(p));
    if (r < 0)
        return r;
    ssize_t n = readlink(p, buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

static int
fill_root(void *buf, fuse_fill_dir_t filler)
{
    filler(buf, ".", NULL, 0, 0);
    filler(buf, "..", NULL, 0, 0);
    filler(buf, "input", NULL, 0, 0);
    filler(buf, "upscaled", NULL, 0, 0);
    return 0;
}

/* nullpath_ok lets libfuse pass readdir a NULL path: the directory handle keeps it. */
static int
hc_opendir(const char *path, struct fuse_file_info *fi)
{
    const char *rel;
    if (classify(path, &rel) == AREA_NONE)
        return -ENOENT;
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    fi->fh = (uint64_t)(uintptr_t)copy;
    return 0;
}

static int
hc_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    free((char *)(uintptr_t)fi->fh);
    return 0;
}

static int
hc_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
           struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX], cp[PATH_MAX];
    if (!path && fi && fi->fh)
        path = (const char *)(uintptr_t)fi->fh;
    enum area a = classify(path, &rel);
    int r;
    (void)off;
    (void)flags;

    if (a == AREA_ROOT)
        return fill_root(buf, filler);
    if (a == AREA_NONE)
        return -ENOENT;
    if ((r = backing(fs, rel, p, sizeof(p))) < 0)
        return r;
    DIR *d = opendir(p);
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        memset(&st, 0, sizeof(st));
        st.st_ino = de->d_ino;
        if (a == AREA_INPUT) {
            st.st_mode = (mode_t)DTTOIF(de->d_type);
            if (filler(buf, de->d_name, &st, 0, 0))
                break;
            continue;
        }
        /* upscaled/: folders and supported images only; header probes, never pixels. */
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            st.st_mode = S_IFDIR;
            filler(buf, de->d_name, &st, 0, 0);
            continue;
        }
        if (hc_platform_hidden_name(de->d_name))
            continue;
        if ((size_t)snprintf(cp, sizeof(cp), "%s/%s", p, de->d_name) >= sizeof(cp))
            continue;
        struct stat ist;
        if (lstat(cp, &ist) < 0)
            continue;
        if (S_ISREG(ist.st_mode)) {
            struct hc_image_info info;
            if (hc_probecache_get(fs->probes, cp, &ist, &info) != 0)
                continue;
        } else if (!S_ISDIR(ist.st_mode)) {
            continue;
        }
        st.st_mode = S_ISDIR(ist.st_mode) ? S_IFDIR : S_IFREG;
        if (filler(buf, de->d_name, &st, 0, 0))
            break;
    }
    closedir(d);
    return 0;
}

/* Common guard of the calls that change something: input/ below its root only. */
static int
writable(const char *path, const char **rel, char *p, size_t len)
{
    struct hcfs *fs = fs_get();
    switch (classify(path, rel)) {
    case AREA_INPUT:
        if (!**rel)
            return -EACCES; /* input/ itself stays */
        return backing(fs, *rel, p, len);
    case AREA_UPSCALED:
        return -EROFS;
    case AREA_ROOT:
        return -EACCES;
    default:
        return -EACCES; /* nothing can be created beside input/ and upscaled/ */
    }
}

/* A file of input/ may have just been finished: queue its job (prefetch) unless Finder is
 * still copying it, it is not a supported image, or prefetch is off. */
static void
maybe_prefetch(struct hcfs *fs, const char *rel)
{
    char p[PATH_MAX];
    unsigned char fi[32];
    struct stat st;
    struct hc_image_info info;

    if (!fs->prefetch || !rel || !*rel || hc_platform_hidden_name(base_name(rel)))
        return;
    if (backing(fs, rel, p, sizeof(p)) < 0 || lstat(p, &st) < 0 || !S_ISREG(st.st_mode) ||
        st.st_size == 0)
        return;
    /* Finder marks a file it is still copying with FinderInfo type/creator "brokMACS". */
    int n = hc_platform_getxattr(p, FINDERINFO, fi, sizeof(fi));
    if (n >= 8 && memcmp(fi, "brokMACS", 8) == 0)
        return;
    if (hc_probecache_get(fs->probes, p, &st, &info) != 0)
        return;
    (void)hc_jobs_prefetch(fs->jobs, rel);
}

static int
hc_mkdir(const char *path, mode_t mode)
{
    const char *rel;
    char p[PATH_MAX];
    int r = writable(path, &rel, p, sizeof(p));
    if (r < 0)
        return r;
    return mkdir(p, mode) < 0 ? -errno : 0;
}

static int
hc_unlink(const char *path)
{
    const char *rel;
    char p[PATH_MAX];
    int r = writable(path, &rel, p, sizeof(p));
    if (r < 0)
        return r;
    return unlink(p) < 0 ? -errno : 0;
}

static int
hc_rmdir(const char *path)
{
    const char *rel;
    char p[PATH_MAX];
    int r = writable(path, &rel, p, sizeof(p));
    if (r < 0)
        return r;
    return rmdir(p) < 0 ? -errno : 0;
}

static int
hc_symlink(const char *target, const char *path)
{
    const char *rel;
    char p[PATH_MAX];
    int r = writable(path, &rel, p, sizeof(p));
    if (r < 0)
        return r;
    return symlink(target, p) < 0 ? -errno : 0;
}

static int
hc_link(const char *from, const char *to)
{
    const char *r1, *r2;
    char p1[PATH_MAX], p2[PATH_MAX];
    int r = writable(from, &r1, p1, sizeof(p1));
    if (r < 0)
        return r;
    if ((r = writable(to, &r2, p2, sizeof(p2))) < 0)
        return r;
    return link(p1, p2) < 0 ? -errno : 0;
}

static int
hc_rename(const char *from, const char *to, unsigned int flags)
{
    struct hcfs *fs = fs_get();
    const char *r1, *r2;
    char p1[PATH_MAX], p2[PATH_MAX];
    int r = writable(from, &r1, p1, sizeof(p1));
    if (r < 0)
        return r;
    if ((r = writable(to, &r2, p2, sizeof(p2))) < 0)
        return r;
    if ((r = hc_platform_rename(p1, p2, flags)) < 0)
        return r;
    /* A file renamed into its final name (Finder, rsync's temp files) is complete. */
    maybe_prefetch(fs, r2);
    return 0;
}

static int
hc_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    const char *rel;
    char p[PATH_MAX];
    if (fi && fi->fh) {
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        if (h->kind != H_INPUT)
            return -EROFS;
        return fchmod(h->fd, mode) < 0 ? -errno : 0;
    }
    int r = writable(path, &rel, p, sizeof(p));
    if (r < 0)
        return r;
    return chmod(p, mode) < 0 ? -errno : 0;
}

static int
hc_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    const char *rel;
    char p[PATH_MAX];
    if (fi && fi->fh) {
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        if (h->kind != H_INPUT)
            return -EROFS;
        return fchown(h->fd, uid, gid) < 0 ? -errno : 0;
    }
    int r = writable(path, &rel, p, sizeof(p));
    if (r < 0)
        return r;
    return lchown(p, uid, gid) < 0 ? -errno : 0;
}

static int
hc_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX];
    if (fi && fi->fh) {
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        if (h->kind != H_INPUT)
            return -EROFS;
        h->written = 1;
        return ftruncate(h->fd, size) < 0 ? -errno : 0;
    }
    int r = writable(path, &rel, p, sizeof(p));
    if (r < 0)
        return r;
    if (truncate(p, size) < 0)
        return -errno;
    maybe_prefetch(fs, rel); /* no open file will report this change */
    return 0;
}

static int
hc_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    const char *rel;
    char p[PATH_MAX];
    if (fi && fi->fh) {
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        if (h->kind != H_INPUT)
            return -EROFS;
        return futimens(h->fd, tv) < 0 ? -errno : 0;
    }
    int r = writable(path, &rel, p, sizeof(p));
    if (r < 0)
        return r;
    return utimensat(AT_FDCWD, p, tv, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static struct handle *
handle_new(enum hkind kind, int fd, const char *rel)
{
    struct handle *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->kind = kind;
    h->fd = fd;
    h->rel = strdup(rel);
    if (!h->rel) {
        free(h);
        return NULL;
    }
    return h;
}

static void
handle_free(struct handle *h)
{
    if (!h)
        return;
    if (h->fd >= 0)
        close(h->fd);
    free(h->rel);
    free(h);
}

static int
hc_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    const char *rel;
    char p[PATH_MAX];
    int r = writable(path, &rel, p, sizeof(p));
    if (r < 0)
        return r;
    int fd = open(p, fi->flags | O_CREAT | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    struct handle *h = handle_new(H_INPUT, fd, rel);
    if (!h) {
        close(fd);
        return -ENOMEM;
    }
    h->written = 1; /* a new file counts as written, even when left empty */
    fi->fh = (uint64_t)(uintptr_t)h;
    return 0;
}

/* The name of the cache file open as fd (its cache key and extension), "" when unknown:
 * two outputs with one name have the same bytes. */
static void
out_name(int fd, char *buf, size_t len)
{
    char p[64], target[PATH_MAX];
    buf[0] = 0;
    hc_platform_fd_path(fd, p, sizeof(p));
    ssize_t n = readlink(p, target, sizeof(target) - 1);
    if (n <= 0)
        return;
    target[n] = 0;
    char *del = strstr(target, " (deleted)");
    if (del && del[10] == 0)
        *del = 0; /* evicted since: still the same bytes */
    snprintf(buf, len, "%s", base_name(target));
}

/* Does the process opening upscaled/<rel> hold it open already (an older version, with
 * passthrough)? Its descriptors in /proc name the mount's path; the calling thread's
 * /proc/<tid>/fd is its process's table. Asked only when an open has to wait. */
static int
caller_holds(void *ctx, const char *rel)
{
    struct hcfs *fs = ctx;
    char want[PATH_MAX], dir[64], link[PATH_MAX + 80], got[PATH_MAX];
    int pid = (int)fuse_get_context()->pid, found = 0;

    if (!fs->mountpoint[0] || pid <= 0 ||
        (size_t)snprintf(want, sizeof(want), "%s/upscaled/%s", fs->mountpoint, rel) >= sizeof(want))
        return 0;
    snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
        ssize_t n = readlink(link, got, sizeof(got) - 1);
        if (n > 0) {
            got[n] = 0;
            found = strcmp(got, want) == 0;
        }
    }
    closedir(d);
    return found;
}

/* Gives back what an open of upscaled/<rel> holds besides its descriptor and handle: its
 * share of the passthrough registration and its pin in the cache. */
static void
upscaled_let_go(struct hcfs *fs, const char *rel, int backing_ref, const char *pin)
{
    if (backing_ref)
        hc_backing_put(fs->backing, rel);
    if (*pin)
        hc_tc_unpin(fs->tc, pin);
}

/* Hands fd (an output) to the open as its handle; backing_ref: the open holds a share of
 * fs->backing (put at release), whose id is backing_id (0: none); pin: the output's key,
 * pinned in the cache for the handle's life ("" when not). */
static int
serve_upscaled(struct hcfs *fs, const char *rel, const struct stat *ist, int fd, int backing_ref,
               int backing_id, int keep, const char *pin, struct fuse_file_info *fi)
{
    struct handle *h = handle_new(H_UPSCALED, fd, rel);
    if (!h) {
        close(fd);
        upscaled_let_go(fs, rel, backing_ref, pin);
        return -ENOMEM;
    }
    h->ist = *ist;
    snprintf(h->pin, sizeof(h->pin), "%s", pin);
    h->backing_ref = backing_ref;
    if (backing_id > 0)
        hc_platform_set_backing_id(fi, backing_id);
    fi->fh = (uint64_t)(uintptr_t)h;
    /* Pages cached for this path belong to this very output only when it was opened
     * before; the first open of a new output drops them. Not with passthrough, where the
     * FUSE inode caches nothing and the kernel fails the open (EIO) when FOPEN_KEEP_CACHE
     * comes with FOPEN_PASSTHROUGH (fs/fuse/iomode.c allows only DIRECT_IO,
     * PARALLEL_DIRECT_WRITES and NOFLUSH with it). (A passthrough read marks the FUSE
     * inode's atime stale, so the next stat() of the file is a GETATTR: the one round trip
     * passthrough adds.) */
    fi->keep_cache = keep && backing_id == 0 ? 1 : 0;
    fi->direct_io = 0;
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 11)
    fi->noflush = 1; /* nothing to flush on a read-only file: one round trip less per close */
#endif
    return 0;
}

static int
open_upscaled(struct hcfs *fs, const char *rel, struct fuse_file_info *fi)
{
    struct stat ist;
    struct hc_image_info info;
    char err[256], name[PATH_MAX], key[HC_TC_KEY_LEN + 1], pin[HC_TC_KEY_LEN + 1] = "";
    int fd = -1, keep = 0, id = 0;
    uint64_t size = 0;

    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        return -EROFS;
    int r = up_file(fs, rel, &ist, &info);
    if (r < 0)
        return r;
    if (r == 1)
        return -EISDIR;
    /* The quick way for a file opened again: its output is done and its registration is
     * still there (open elsewhere, or lingering after the last close). Pinned first, so
     * that the reuse's check that the file is still in the cache holds. */
    if (fs->backing && hc_jobs_done_name(fs->jobs, rel, &ist, name, sizeof(name), key) == 0 &&
        hc_tc_pin(fs->tc, key) == 0) {
        if ((id = hc_backing_reuse(fs->backing, rel, name, &fd)) > 0)
            return serve_upscaled(fs, rel, &ist, fd, 1, id, 0, key, fi);
        hc_tc_unpin(fs->tc, key);
    }
    r = hc_jobs_open_output(fs->jobs, rel, stop_waiting, fs, &fd, &size, &keep, pin, err,
                            sizeof(err));
    if (r == -EINTR && !fuse_interrupted())
        return -EIO; /* unmounting: the caller was not interrupted, the mount goes away */
    if (r < 0)
        return r; /* -EIO: the reason is in user.hc.error */
    if (!fs->backing)
        return serve_upscaled(fs, rel, &ist, fd, 0, 0, keep, pin, fi);
    /* A done output is a plain file: with passthrough the kernel reads it itself, from the
     * cache file's page cache, and no read comes here. */
    out_name(fd, name, sizeof(name));
    id = hc_backing_get(fs->backing, rel, fd, name, stop_waiting, caller_holds, fs, fs->timeout_s);
    if (id < 0) {
        close(fd);
        upscaled_let_go(fs, rel, 0, pin);
        return id == -EINTR && !fuse_interrupted() ? -EIO : id;
    }
    return serve_upscaled(fs, rel, &ist, fd, 1, id, keep, pin, fi);
}

static int
hc_open(const char *path, struct fuse_file_info *fi)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX];
    int r;

    switch (classify(path, &rel)) {
    case AREA_UPSCALED:
        if (!*rel)
            return -EISDIR;
        return open_upscaled(fs, rel, fi);
    case AREA_INPUT: {
        if (!*rel)
            return -EISDIR;
        if ((r = backing(fs, rel, p, sizeof(p))) < 0)
            return r;
        int fd = open(p, fi->flags | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        struct handle *h = handle_new(H_INPUT, fd, rel);
        if (!h) {
            close(fd);
            return -ENOMEM;
        }
        h->written = (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY;
        fi->fh = (uint64_t)(uintptr_t)h;
        return 0;
    }
    case AREA_ROOT:
        return -EISDIR;
    default:
        return -ENOENT;
    }
}

static int
hc_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
            struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    (void)path;
    struct fuse_bufvec *bv = malloc(sizeof(*bv));
    if (!bv)
        return -ENOMEM;
    /* Hand libfuse the descriptor: it splices the file's pages to /dev/fuse where the
     * kernel allows, with no copy through our memory. */
    *bv = FUSE_BUFVEC_INIT(size);
    bv->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    bv->buf[0].fd = h->fd;
    bv->buf[0].pos = off;
    *bufp = bv;
    return 0;
}

static int
hc_write_buf(const char *path, struct fuse_bufvec *buf, off_t off, struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    (void)path;
    if (h->kind != H_INPUT)
        return -EROFS;
    struct fuse_bufvec dst = FUSE_BUFVEC_INIT(fuse_buf_size(buf));
    dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    dst.buf[0].fd = h->fd;
    dst.buf[0].pos = off;
    h->written = 1;
    ssize_t n = fuse_buf_copy(&dst, buf, FUSE_BUF_SPLICE_NONBLOCK);
    return n < 0 ? (int)n : (int)n;
}

static int
hc_statfs(const char *path, struct statvfs *sv)
{
    struct hcfs *fs = fs_get();
    (void)path;
    return statvfs(fs->data, sv) < 0 ? -errno : 0;
}

static int
hc_flush(const char *path, struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    (void)path;
    if (h->kind != H_INPUT)
        return 0;
    /* close() of a duplicate reports delayed write errors to the closing program. */
    int fd = dup(h->fd);
    if (fd < 0)
        return -errno;
    return close(fd) < 0 ? -errno : 0;
}

static int
hc_release(const char *path, struct fuse_file_info *fi)
{
    struct hcfs *fs = fs_get();
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    (void)path;
    if (h->kind == H_INPUT && h->written) {
        /* The handle's name may be stale (renamed while open): prefetch only when that name
         * still holds the file we wrote. */
        struct stat a, b;
        char p[PATH_MAX];
        /* Dot-files are what rsync and editors write before renaming into place; the
         * rename queues the job under the final name instead. */
        if (base_name(h->rel)[0] != '.' && fstat(h->fd, &a) == 0 &&
            backing(fs, h->rel, p, sizeof(p)) == 0 && lstat(p, &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev) {
            close(h->fd);
            h->fd = -1;
            maybe_prefetch(fs, h->rel);
        }
    }
    if (h->kind == H_UPSCALED)
        upscaled_let_go(fs, h->rel, h->backing_ref, h->pin);
    handle_free(h);
    return 0;
}

static int
hc_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    (void)path;
    if (h->kind != H_INPUT)
        return 0;
    return hc_platform_fsync(h->fd, datasync);
}

/* Copies a value into the caller's buffer with getxattr's size conventions. */
static int
xattr_reply(const char *val, size_t len, char *buf, size_t size)
{
    if (size == 0)
        return (int)len;
    if (size < len)
        return -ERANGE;
    memcpy(buf, val, len);
    return (int)len;
}

static int
root_xattr(struct hcfs *fs, const char *name, char *buf, size_t size)
{
    struct hc_jobs_stats s;
    char v[1024];
    int n;
    hc_jobs_stats(fs->jobs, &s);
    if (strcmp(name, "user.hc.jobs") == 0) {
        n = snprintf(v, sizeof(v), "%llu", (unsigned long long)s.runs);
    } else if (strcmp(name, "user.hc.stats") == 0) {
        struct hc_tc_stats ts;
        hc_tc_stats(fs->tc, &ts);
        n = snprintf(v, sizeof(v),
                     "jobs_queued %llu\njobs_run %llu\ncache_hits %llu\nshared %llu\n"
                     "done %llu\nfailed %llu\ngone %llu\nrunning %d\nrunning_max %d\nwaiting %d\n"
                     "tiles_from_cache %llu\ntiles_computed %llu\nprobe_reads %llu\n"
                     "cache_bytes %llu\ncache_entries %llu\ncache_evicted %llu\n",
                     (unsigned long long)s.queued, (unsigned long long)s.runs,
                     (unsigned long long)s.cache_hits, (unsigned long long)s.shared,
                     (unsigned long long)s.done, (unsigned long long)s.failed,
                     (unsigned long long)s.gone, s.running, s.running_max, s.waiting,
                     (unsigned long long)s.tiles_from_cache, (unsigned long long)s.tiles_computed,
                     hc_probecache_reads(fs->probes), (unsigned long long)ts.bytes,
                     (unsigned long long)ts.entries, (unsigned long long)ts.evicted);
    } else {
        return -HC_ENOATTR;
    }
    if (fs->backing && strcmp(name, "user.hc.stats") == 0 && n > 0 && (size_t)n < sizeof(v)) {
        uint64_t reg, reu;
        int lin;
        hc_backing_stats(fs->backing, &reg, &reu, &lin);
        int m = snprintf(v + n, sizeof(v) - (size_t)n,
                         "passthrough_registered %llu\npassthrough_reused %llu\n"
                         "passthrough_lingering %d\n",
                         (unsigned long long)reg, (unsigned long long)reu, lin);
        if (m > 0 && (size_t)m < sizeof(v) - (size_t)n)
            n += m;
    }
    if (fs->client && strcmp(name, "user.hc.stats") == 0 && n > 0 && (size_t)n < sizeof(v)) {
        struct hc_client_stats cs;
        hc_client_stats(fs->client, &cs);
        int m = snprintf(v + n, sizeof(v) - (size_t)n,
                         "http_requests %llu\nhttp_retries %llu\nhttp_failovers %llu\n"
                         "http_failures %llu\nhttp_tiles %llu\n",
                         (unsigned long long)cs.requests, (unsigned long long)cs.retries,
                         (unsigned long long)cs.failovers, (unsigned long long)cs.failures,
                         (unsigned long long)cs.tiles);
        if (m > 0 && (size_t)m < sizeof(v) - (size_t)n)
            n += m;
    }
    return xattr_reply(v, (size_t)n, buf, size);
}

static int
hc_getxattr(const char *path, const char *name, char *buf, size_t size)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX];
    int r;

    switch (classify(path, &rel)) {
    case AREA_ROOT:
        return root_xattr(fs, name, buf, size);
    case AREA_INPUT:
        if ((r = backing(fs, rel, p, sizeof(p))) < 0)
            return r;
        return hc_platform_getxattr(p, name, buf, size);
    case AREA_UPSCALED: {
        struct stat ist;
        struct hc_image_info info;
        struct hc_job_status js;
        char v[320];
        int n;
        r = up_file(fs, rel, &ist, &info);
        if (r < 0)
            return r;
        if (r == 1)
            return -HC_ENOATTR;
        hc_jobs_status(fs->jobs, rel, &ist, &js);
        if (strcmp(name, "user.hc.state") == 0) {
            n = snprintf(v, sizeof(v), "%s", hc_job_state_name(js.state));
        } else if (strcmp(name, "user.hc.progress") == 0) {
            unsigned pct = js.state == HC_JOB_DONE ? 100
                           : js.total              ? (unsigned)(js.done * 100 / js.total)
                                                   : 0;
            if (js.total)
                n = snprintf(v, sizeof(v), "%u%% (%llu/%llu rows)", pct,
                             (unsigned long long)js.done, (unsigned long long)js.total);
            else
                n = snprintf(v, sizeof(v), "%u%%", pct);
        } else if (strcmp(name, "user.hc.error") == 0 && js.state == HC_JOB_FAILED) {
            n = snprintf(v, sizeof(v), "%s", js.error);
        } else {
            return -HC_ENOATTR;
        }
        return xattr_reply(v, (size_t)n, buf, size);
    }
    default:
        return -ENOENT;
    }
}

static int
hc_listxattr(const char *path, char *buf, size_t size)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX];
    int r;

    switch (classify(path, &rel)) {
    case AREA_ROOT: {
        static const char names[] = "user.hc.jobs\0user.hc.stats";
        return xattr_reply(names, sizeof(names), buf, size);
    }
    case AREA_INPUT:
        if ((r = backing(fs, rel, p, sizeof(p))) < 0)
            return r;
        return hc_platform_listxattr(p, buf, size);
    case AREA_UPSCALED: {
        struct stat ist;
        struct hc_image_info info;
        struct hc_job_status js;
        static const char names[] = "user.hc.state\0user.hc.progress";
        static const char names_err[] = "user.hc.state\0user.hc.progress\0user.hc.error";
        r = up_file(fs, rel, &ist, &info);
        if (r < 0)
            return r;
        if (r == 1)
            return 0;
        hc_jobs_status(fs->jobs, rel, &ist, &js);
        if (js.state == HC_JOB_FAILED)
            return xattr_reply(names_err, sizeof(names_err), buf, size);
        return xattr_reply(names, sizeof(names), buf, size);
    }
    default:
        return -ENOENT;
    }
}

static int
hc_setxattr(const char *path, const char *name, const char *value, size_t size, int flags)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX];
    enum area a = classify(path, &rel);
    if (a == AREA_UPSCALED)
        return -EROFS;
    if (a != AREA_INPUT)
        return -EACCES;
    int r = backing(fs, rel, p, sizeof(p));
    if (r < 0)
        return r;
    if ((r = hc_platform_setxattr(p, name, value, size, flags)) < 0)
        return r;
    /* Finder clears "brokMACS" when its copy ends: the file is complete now. */
    if (strcmp(name, FINDERINFO) == 0 && !(size >= 8 && memcmp(value, "brokMACS", 8) == 0))
        maybe_prefetch(fs, rel);
    return 0;
}

static int
hc_removexattr(const char *path, const char *name)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX];
    enum area a = classify(path, &rel);
    if (a == AREA_UPSCALED)
        return -EROFS;
    if (a != AREA_INPUT)
        return -EACCES;
    int r = backing(fs, rel, p, sizeof(p));
    if (r < 0)
        return r;
    if ((r = hc_platform_removexattr(p, name)) < 0)
        return r;
    if (strcmp(name, FINDERINFO) == 0)
        maybe_prefetch(fs, rel);
    return 0;
}

static int
hc_access(const char *path, int mask)
{
    struct hcfs *fs = fs_get();
    const char *rel;
    char p[PATH_MAX];
    int r;
    switch (classify(path, &rel)) {
    case AREA_ROOT:
        return 0;
    case AREA_INPUT:
        if ((r = backing(fs, rel, p, sizeof(p))) < 0)
            return r;
        return access(p, mask) < 0 ? -errno : 0;
    case AREA_UPSCALED: {
        struct stat ist;
        struct hc_image_info info;
        if (mask & W_OK)
            return -EROFS;
        r = up_file(fs, rel, &ist, &info);
        return r < 0 ? r : 0;
    }
    default:
        return -ENOENT;
    }
}

/* A passthrough registration outlives its last open by this long (backing.h). */
#define BACKING_LINGER_MS 2000

static int
passthrough_open(void *ctx, int fd)
{
    return hc_platform_passthrough_open(((struct hcfs *)ctx)->session_fd, fd);
}

static void
passthrough_close(void *ctx, int id)
{
    hc_platform_passthrough_close(((struct hcfs *)ctx)->session_fd, id);
}

static void *
hc_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    struct hcfs *fs = fs_get();
    /* See the top of this file: cached attributes are dropped when a job ends. No negative
     * caching, so a file copied into input/ shows in upscaled/ at once. */
    cfg->attr_timeout = 1.0;
    cfg->entry_timeout = 1.0;
    cfg->negative_timeout = 0;
    cfg->hard_remove = 1; /* the backing file is unlinked at once; open handles keep fds */
    cfg->nullpath_ok = 1;
    cfg->kernel_cache = 0;
    cfg->auto_cache = 0;
    cfg->use_ino = 0;
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 17) && !defined(__APPLE__)
    /* From libfuse 3.17 the high-level library refuses the kernel's INTERRUPT requests
     * unless intr is set, and a reader waiting in open() could then not be interrupted
     * (fs_signals). With it, libfuse also signals the worker (an empty handler): blocking
     * calls of the interrupted request return EINTR, which is what the kernel asked for. */
    cfg->intr = 1;
#endif
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    /* Not FUSE_CAP_SPLICE_MOVE: moving spliced pages into the FUSE file's page cache leaves
     * it with single pages, and cached reads then measured 25-40 % slower here. */
    conn->want &= ~FUSE_CAP_SPLICE_MOVE;
    if (conn->capable & FUSE_CAP_SPLICE_READ)
        conn->want |= FUSE_CAP_SPLICE_READ;
    /* libfuse turns auto_inval_data on by default: with our zero attribute timeout the
     * kernel would then send a GETATTR before every read() and drop cached pages whenever
     * mtime moves. We decide page caching per open instead (keep_cache only for an output
     * opened before; input/ files are reread on each open), so cached reads stay in the
     * kernel at memory speed. */
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    fs->session_fd = hc_platform_session_fd();
    if (hc_platform_passthrough_init(conn))
        fs->backing = hc_backing_new(passthrough_open, passthrough_close, fs, BACKING_LINGER_MS);
    fprintf(stderr, "info hcfs: FUSE passthrough %s\n",
            fs->backing ? "on (done outputs are read by the kernel from the cache)"
                        : "not offered (kernel < 6.9 or libfuse < 3.16): reads go through hcfs");
    /* Larger requests: fewer round trips through /dev/fuse for big images. */
    conn->max_write = 1u << 20;
    conn->max_readahead = conn->max_readahead > (1u << 20) ? conn->max_readahead : (1u << 20);
    return fs;
}

void
hc_fs_job_ended(void *ctx, const char *rel)
{
    struct hcfs *fs = ctx;
    char p[PATH_MAX];
    if (!fs->fuse || (size_t)snprintf(p, sizeof(p), "/upscaled/%s", rel) >= sizeof(p))
        return;
    /* The invalidation drops x's cached pages and so waits for every read of x in flight;
     * once the loop is ending (SIGTERM, unmount) nobody will answer those reads, and this
     * worker, the job pool's join and hcfs would hang with the reader for good. Readers
     * waiting for this job are being sent away then anyway. */
    if (fuse_session_exited(fuse_get_session(fs->fuse)))
        return;
    /* -ENOENT when the kernel never looked the path up: nothing cached, nothing to do. */
    (void)fuse_invalidate_path(fs->fuse, p);
}

const struct fuse_operations hc_fs_ops = {
    .init = hc_init,
    .getattr = hc_getattr,
    .readlink = hc_readlink,
    .mkdir = hc_mkdir,
    .unlink = hc_unlink,
    .rmdir = hc_rmdir,
    .symlink = hc_symlink,
    .rename = hc_rename,
    .link = hc_link,
    .chmod = hc_chmod,
    .chown = hc_chown,
    .truncate = hc_truncate,
    .open = hc_open,
    .read_buf = hc_read_buf,
    .write_buf = hc_write_buf,
    .statfs = hc_statfs,
    .flush = hc_flush,
    .release = hc_release,
    .fsync = hc_fsync,
    .setxattr = hc_setxattr,
    .getxattr = hc_getxattr,
    .listxattr = hc_listxattr,
    .removexattr = hc_removexattr,
    .opendir = hc_opendir,
    .readdir = hc_readdir,
    .releasedir = hc_releasedir,
    .access = hc_access,
    .create = hc_create,
    .utimens = hc_utimens,
};
