/* files.c: output names, whole-file I/O and directory trees for the cache (see files.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "files.h"

/* The cache's own trees are two levels deep (tiles/<key>/<idx>); anything deeper was put
 * there by someone else and we stop rather than recurse without bound. */
#define RMTREE_MAX_DEPTH 16

const char *
hc_tc_files_ext(enum hc_format f)
{
    switch (f) {
    case HC_FORMAT_JPEG:
        return "jpg";
    case HC_FORMAT_PNG:
    case HC_FORMAT_GIF:
    case HC_FORMAT_PSD:
    case HC_FORMAT_PNM:
    case HC_FORMAT_HDR:
        return "png";
    case HC_FORMAT_BMP:
        return "bmp";
    case HC_FORMAT_TGA:
        return "tga";
    default:
        return NULL;
    }
}

int
hc_tc_files_mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof buf)
        return hc_error(-ENAMETOOLONG, "tilecache", "bad directory name '%s'", path);
    memcpy(buf, path, len + 1);
    /* Each prefix ending before a '/', then the whole path. */
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return hc_error(-errno, "tilecache", "mkdir %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return hc_error(-errno, "tilecache", "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return hc_error(-ENOTDIR, "tilecache", "%s is not a directory", path);
    return 0;
}

/* Removes the entries of the directory open at dfd (the fd is consumed). */
static int
rm_contents(int dfd, int depth, uint64_t *bytes)
{
    DIR *d = fdopendir(dfd);
    struct dirent *de;
    int err = 0;

    if (!d) {
        err = hc_error(-errno, "tilecache", "opendir: %s", strerror(errno));
        close(dfd);
        return err;
    }
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue; /* gone meanwhile */
        if (S_ISDIR(st.st_mode)) {
            if (depth >= RMTREE_MAX_DEPTH) {
                err = hc_error(-ELOOP, "tilecache", "directory tree too deep at %s", de->d_name);
                continue;
            }
            int sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                int e = rm_contents(sub, depth + 1, bytes);
                if (e && !err)
                    err = e;
            }
            if (unlinkat(dfd, de->d_name, AT_REMOVEDIR) != 0 && errno != ENOENT && !err)
                err = hc_error(-errno, "tilecache", "rmdir %s: %s", de->d_name, strerror(errno));
        } else {
            if (unlinkat(dfd, de->d_name, 0) == 0) {
                if (bytes && S_ISREG(st.st_mode))
                    *bytes += (uint64_t)st.st_size;
            } else if (errno != ENOENT && !err) {
                err = hc_error(-errno, "tilecache", "unlink %s: %s", de->d_name, strerror(errno));
            }
        }
    }
    closedir(d);
    return err;
}

int
hc_tc_files_empty_dir(const char *path, uint64_t *bytes)
{
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (dfd < 0)
        return errno == ENOENT ? 0 : hc_error(-errno, "tilecache", "%s: %s", path, strerror(errno));
    return rm_contents(dfd, 0, bytes);
}

int
hc_tc_files_rmtree(const char *path, uint64_t *bytes)
{
    struct stat st;

    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : hc_error(-errno, "tilecache", "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) != 0)
            return errno == ENOENT
                       ? 0
                       : hc_error(-errno, "tilecache", "unlink %s: %s", path, strerror(errno));
        if (bytes && S_ISREG(st.st_mode))
            *bytes += (uint64_t)st.st_size;
        return 0;
    }
    int err = hc_tc_files_empty_dir(path, bytes);
    if (rmdir(path) != 0 && errno != ENOENT && !err)
        err = hc_error(-errno, "tilecache", "rmdir %s: %s", path, strerror(errno));
    return err;
}

int
hc_tc_files_write_new(const char *path, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    int err = 0;

    if (fd < 0)
        return hc_error(-errno, "tilecache", "create %s: %s", path, strerror(errno));
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = hc_error(n < 0 ? -errno : -EIO, "tilecache", "write %s: %s", path,
                           n < 0 ? strerror(errno) : "wrote nothing");
            goto out;
        }
        p += n;
        len -= (size_t)n;
    }
out:
    if (close(fd) != 0 && !err)
        err = hc_error(-errno, "tilecache", "close %s: %s", path, strerror(errno));
    if (err)
        unlink(path);
    return err;
}

int
hc_tc_files_read_exact(const char *path, void *buf, size_t len)
{
    unsigned char *p = buf;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int err = 0;

    if (fd < 0)
        return errno == ENOENT
                   ? -ENOENT
                   : hc_error(-errno, "tilecache", "open %s: %s", path, strerror(errno));
    /* The size is checked before reading: a tile of the wrong size is never half-used. */
    if (fstat(fd, &st) != 0) {
        err = hc_error(-errno, "tilecache", "stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != (uint64_t)len) {
        err = hc_error(-EIO, "tilecache", "%s holds %lld bytes, expected %zu", path,
                       (long long)st.st_size, len);
        goto out;
    }
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = hc_error(n < 0 ? -errno : -EIO, "tilecache", "read %s: %s", path,
                           n < 0 ? strerror(errno) : "file shrank while reading");
            goto out;
        }
        p += n;
        len -= (size_t)n;
    }
out:
    close(fd);
    return err;
}
