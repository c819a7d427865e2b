/* key.c: cache keys.
 *
 * key = XXH3-128 of (input bytes || trailer), written as the 32 hex digits of its canonical
 * (big-endian) form, which is what `xxh128sum` / `xxhsum -H2` print for the same bytes. The
 * trailer is one line of text holding every parameter that changes the output, and the
 * input's length:
 *
 *   "\nhc-tilecache-key v1 filter=%d scale=%d format=%d quality=%d pipeline=%u bytes=%llu\n"
 *
 * The trailer ends with the input's length, so the concatenation splits one way only: two
 * different (input, params) pairs never hash the same bytes. An independent implementation
 * (tests/test_tilecache.c checks against the xxhash CLI) can recompute a key from this
 * comment alone. quality is hashed as 0 for formats other than JPEG, where it changes
 * nothing. Changing this format changes every key: bump "v1" (old entries then simply age
 * out of the cache).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "error.h"
#include "tilecache.h"

#define KEY_READ_CHUNK (256u * 1024u)

static int
key_trailer(const struct hc_tc_params *p, unsigned long long nbytes, char *buf, size_t cap)
{
    int quality = p->format == HC_FORMAT_JPEG ? p->quality : 0;
    int n = snprintf(buf, cap,
                     "\nhc-tilecache-key v1 filter=%d scale=%d format=%d quality=%d "
                     "pipeline=%u bytes=%llu\n",
                     (int)p->filter, p->scale, (int)p->format, quality,
                     (unsigned)p->pipeline_version, nbytes);
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

static void
key_hex(XXH128_hash_t h, char key[HC_TC_KEY_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    XXH128_canonical_t c;

    XXH128_canonicalFromHash(&c, h);
    for (int i = 0; i < 16; i++) {
        key[2 * i] = hex[c.digest[i] >> 4];
        key[2 * i + 1] = hex[c.digest[i] & 15];
    }
    key[HC_TC_KEY_LEN] = '\0';
}

/* Appends the trailer to a running hash and writes the key. */
static int
key_finish(XXH3_state_t *st, const struct hc_tc_params *p, unsigned long long nbytes,
           char key[HC_TC_KEY_LEN + 1])
{
    char trailer[256];
    int n = key_trailer(p, nbytes, trailer, sizeof trailer);

    if (n < 0)
        return hc_error(-EINVAL, "tilecache", "key: parameters do not fit the trailer");
    if (XXH3_128bits_update(st, trailer, (size_t)n) != XXH_OK)
        return hc_error(-EIO, "tilecache", "key: hash update failed");
    key_hex(XXH3_128bits_digest(st), key);
    return 0;
}

int
hc_tc_key_mem(const void *buf, size_t len, const struct hc_tc_params *p,
              char key[HC_TC_KEY_LEN + 1])
{
    XXH3_state_t *st = NULL;
    char k[HC_TC_KEY_LEN + 1];
    int rc;

    if (!p || !key || (!buf && len))
        return hc_error(-EINVAL, "tilecache", "key: NULL argument");
    st = XXH3_createState();
    if (!st)
        return hc_error(-ENOMEM, "tilecache", "key: out of memory");
    if (XXH3_128bits_reset(st) != XXH_OK || (len && XXH3_128bits_update(st, buf, len) != XXH_OK)) {
        rc = hc_error(-EIO, "tilecache", "key: hash update failed");
        goto out;
    }
    rc = key_finish(st, p, (unsigned long long)len, k);
    if (rc == 0)
        memcpy(key, k, sizeof k);
out:
    XXH3_freeState(st);
    return rc;
}

int
hc_tc_key_file(const char *path, const struct hc_tc_params *p, char key[HC_TC_KEY_LEN + 1])
{
    XXH3_state_t *st = NULL;
    unsigned char *chunk = NULL;
    unsigned long long total = 0;
    char k[HC_TC_KEY_LEN + 1];
    int fd = -1, rc;

    if (!path || !p || !key)
        return hc_error(-EINVAL, "tilecache", "key: NULL argument");
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it). */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        rc = hc_error(-errno, "tilecache", "key: cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    /* A FIFO or a device could block or never end: only regular files have a key. */
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = hc_error(-EINVAL, "tilecache", "key: %s is not a regular file", path);
        goto out;
    }
    st = XXH3_createState();
    chunk = malloc(KEY_READ_CHUNK);
    if (!st || !chunk) {
        rc = hc_error(-ENOMEM, "tilecache", "key: out of memory");
        goto out;
    }
    if (XXH3_128bits_reset(st) != XXH_OK) {
        rc = hc_error(-EIO, "tilecache", "key: hash reset failed");
        goto out;
    }
    /* Streamed: inputs can be far larger than we want to hold in memory. */
    for (;;) {
        ssize_t n = read(fd, chunk, KEY_READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = hc_error(-errno, "tilecache", "key: reading %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        if (XXH3_128bits_update(st, chunk, (size_t)n) != XXH_OK) {
            rc = hc_error(-EIO, "tilecache", "key: hash update failed");
            goto out;
        }
        total += (unsigned long long)n;
    }
    rc = key_finish(st, p, total, k);
    if (rc == 0)
        memcpy(key, k, sizeof k);
out:
    free(chunk);
    XXH3_freeState(st);
    if (fd >= 0)
        close(fd);
    return rc;
}
