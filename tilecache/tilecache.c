/* tilecache.c: the cache (see tilecache.h): entries, tiles, eviction, recovery.
 *
 * Concurrency: one SQLite connection guarded by one mutex (tc->mu), which also guards the
 * byte counters and every change to the set of files (output unlinks, tile renames, tile
 * directory removal), so the index and the files never disagree as seen by another thread.
 * Tile bytes are written outside the lock (to a temp file; only the rename takes it), and
 * tile reads take no lock at all: a rename is atomic, so a reader sees a whole tile or none.
 *
 * Between processes: an exclusive flock() on <dir>/lock, so a second hcfs on the same cache
 * fails with -EBUSY instead of "recovering" the first one's running jobs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "files.h"
#include "index.h"
#include "tilecache.h"

#define TC_DEFAULT_INTERVAL_MS 5000
/* Longest name we append to the cache directory: "/tiles/<32>/.tmp.<20>.<20>" and so on. */
#define TC_NAME_ROOM 128

struct tc_pin {
    char key[HC_TC_KEY_LEN + 1];
    int count;
};

struct hc_tc {
    char dir[PATH_MAX];
    char out_dir[PATH_MAX];
    char tiles_dir[PATH_MAX];
    uint64_t max_bytes;
    uint64_t min_free_bytes;
    int interval_ms;
    int lock_fd;

    pthread_mutex_t mu; /* everything below */
    struct hc_tc_index *ix;
    int64_t last_atime;
    uint64_t done_bytes;
    uint64_t done_entries;
    uint64_t tile_bytes;
    uint64_t evicted;
    uint64_t tmp_seq;

    struct tc_pin *pins; /* outputs in use: not evicted while pinned */
    size_t npins, cap_pins;

    pthread_cond_t wake; /* the evictor waits here (with mu) */
    pthread_t evictor;
    int evictor_started;
    int stop;
    int kick;
};

/* snprintf that says whether the result fit: 0, or -ENAMETOOLONG (buf then holds ""). Path
 * lengths are bounded at open (TC_NAME_ROOM), so only a foreign name in our directories
 * (recovery) can get there. */
static int __attribute__((format(printf, 3, 4)))
bprintf(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        buf[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

/* Copies a message, cut to fit (unlike a path, half a reason is still worth keeping). */
static void
copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);

    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int
key_valid(const char *key)
{
    if (!key)
        return 0;
    for (int i = 0; i < HC_TC_KEY_LEN; i++) {
        char c = key[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return key[HC_TC_KEY_LEN] == '\0';
}

#define CHECK_KEY(key)                                                                             \
    do {                                                                                           \
        if (!key_valid(key))                                                                       \
            return hc_error(-EINVAL, "tilecache", "bad key (want %d lowercase hex digits)",        \
                            HC_TC_KEY_LEN);                                                        \
    } while (0)

/* Access times: wall-clock nanoseconds (so they mean something across restarts), forced
 * strictly increasing so that two touches in one clock tick still order. Caller holds mu. */
static int64_t
tc_now(struct hc_tc *tc)
{
    struct timespec ts;
    int64_t t;

    clock_gettime(CLOCK_REALTIME, &ts);
    t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    if (t <= tc->last_atime)
        t = tc->last_atime + 1;
    tc->last_atime = t;
    return t;
}

static void
out_path(const struct hc_tc *tc, const char *key, enum hc_format f, char *buf, size_t cap)
{
    const char *ext = hc_tc_files_ext(f);

    if (ext)
        bprintf(buf, cap, "%s/%s.%s", tc->out_dir, key, ext);
    else
        buf[0] = '\0';
}

static void
tile_dir(const struct hc_tc *tc, const char *key, char *buf, size_t cap)
{
    bprintf(buf, cap, "%s/%s", tc->tiles_dir, key);
}

static uint64_t
sub_clamp(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* Drops key's tiles. Caller holds mu. */
static void
tc_drop_tiles(struct hc_tc *tc, const char *key)
{
    char path[PATH_MAX];
    uint64_t freed = 0;

    tile_dir(tc, key, path, sizeof path);
    if (hc_tc_files_rmtree(path, &freed) != 0)
        fprintf(stderr, "warn %s\n", hc_last_error());
    tc->tile_bytes = sub_clamp(tc->tile_bytes, freed);
}

/* Removes row r's output file and accounts for it. Caller holds mu. */
static void
tc_drop_output(struct hc_tc *tc, const struct hc_tc_row *r)
{
    char path[PATH_MAX];

    out_path(tc, r->key, r->format, path, sizeof path);
    if (path[0] && unlink(path) != 0 && errno != ENOENT)
        fprintf(stderr, "warn tilecache: unlink %s: %s\n", path, strerror(errno));
    if (r->state == HC_TC_DONE) {
        tc->done_bytes = sub_clamp(tc->done_bytes, r->size);
        tc->done_entries = sub_clamp(tc->done_entries, 1);
    }
}

static uint64_t
tc_free_bytes(const struct hc_tc *tc)
{
    struct statvfs sv;

    if (statvfs(tc->dir, &sv) != 0)
        return UINT64_MAX; /* unknown: don't evict on a number we don't have */
    return (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
}

/* Whether the cache is over one of its bounds. Caller holds mu. */
static int
tc_over(const struct hc_tc *tc)
{
    if (tc->max_bytes && tc->done_bytes + tc->tile_bytes > tc->max_bytes)
        return 1;
    return tc->min_free_bytes && tc_free_bytes(tc) < tc->min_free_bytes;
}

/* Over a bound (tc->mu held): the evictor runs now rather than at its next interval. */
static void
kick_if_over(struct hc_tc *tc)
{
    if (tc_over(tc)) {
        tc->kick = 1;
        pthread_cond_signal(&tc->wake);
    }
}

static void
entry_fill(const struct hc_tc *tc, const struct hc_tc_row *r, struct hc_tc_entry *e)
{
    memset(e, 0, sizeof *e);
    e->state = r->state;
    e->size = r->state == HC_TC_DONE ? r->size : 0;
    out_path(tc, r->key, r->format, e->path, sizeof e->path);
    copy_cut(e->error, sizeof e->error, r->error);
}

int
hc_tc_lookup(struct hc_tc *tc, const char *key, struct hc_tc_entry *e)
{
    struct hc_tc_row r;
    int err;

    if (!tc || !e)
        return hc_error(-EINVAL, "tilecache", "lookup: NULL argument");
    CHECK_KEY(key);
    pthread_mutex_lock(&tc->mu);
    err = hc_tc_index_get(tc->ix, key, &r);
    if (err == -ENOENT) {
        memset(e, 0, sizeof *e);
        e->state = HC_TC_ABSENT;
        err = 0;
        goto out;
    }
    if (err)
        goto out;
    if (r.state == HC_TC_DONE) {
        /* A DONE row promises a whole file: if someone removed or changed it behind our
         * back, forget the entry so the caller regenerates it instead of serving it. */
        char path[PATH_MAX];
        struct stat st;
        out_path(tc, key, r.format, path, sizeof path);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != r.size) {
            fprintf(stderr, "warn tilecache: %s vanished or changed size; entry dropped\n", path);
            if (hc_tc_index_delete(tc->ix, key) == 0)
                tc_drop_output(tc, &r);
            else /* a full disk: the row goes at the next start; never served meanwhile */
                fprintf(stderr, "warn %s\n", hc_last_error());
            memset(e, 0, sizeof *e);
            e->state = HC_TC_ABSENT;
            goto out;
        }
        /* Already the most recently used (readers of one file, one after another): the
         * order would not change, so no write is spent on it. A lost access time only
         * makes eviction a little less fair; failing the lookup (disk full, say) would stop
         * a finished file from being served. */
        if (r.atime != tc->last_atime) {
            r.atime = tc_now(tc);
            if (hc_tc_index_touch(tc->ix, key, r.atime) != 0)
                fprintf(stderr, "warn %s\n", hc_last_error());
        }
    }
    entry_fill(tc, &r, e);
out:
    pthread_mutex_unlock(&tc->mu);
    return err;
}

int
hc_tc_begin(struct hc_tc *tc, const char *key, enum hc_format fmt, struct hc_tc_entry *e)
{
    struct hc_tc_row old, r;
    int err, had;

    if (!tc || !e)
        return hc_error(-EINVAL, "tilecache", "begin: NULL argument");
    CHECK_KEY(key);
    if (!hc_tc_files_ext(fmt))
        return hc_error(-EINVAL, "tilecache", "begin: format %d cannot be an output", (int)fmt);
    memset(&r, 0, sizeof r);
    memcpy(r.key, key, sizeof r.key);
    r.state = HC_TC_INCOMPLETE;
    r.format = fmt;

    pthread_mutex_lock(&tc->mu);
    err = hc_tc_index_get(tc->ix, key, &old);
    if (err && err != -ENOENT)
        goto out;
    had = err == 0;
    r.atime = tc_now(tc);
    err = hc_tc_index_put(tc->ix, &r);
    if (err)
        goto out;
    /* Restarting a finished entry, or one that was to be written under another extension:
     * the old file must not outlive the row that described it. */
    if (had && (old.state == HC_TC_DONE || old.format != fmt))
        tc_drop_output(tc, &old);
    entry_fill(tc, &r, e);
out:
    pthread_mutex_unlock(&tc->mu);
    return err;
}

int
hc_tc_commit(struct hc_tc *tc, const char *key)
{
    char path[PATH_MAX];
    struct hc_tc_row r;
    struct stat st;
    int err;

    if (!tc)
        return hc_error(-EINVAL, "tilecache", "commit: NULL argument");
    CHECK_KEY(key);
    pthread_mutex_lock(&tc->mu);
    err = hc_tc_index_get(tc->ix, key, &r);
    if (err == -ENOENT) {
        err = hc_error(-ENOENT, "tilecache", "commit: no job begun for %s", key);
        goto out;
    }
    if (err)
        goto out;
    if (r.state == HC_TC_DONE)
        goto out; /* committed twice: nothing changes */
    out_path(tc, key, r.format, path, sizeof path);
    if (stat(path, &st) != 0) {
        err = hc_error(-errno, "tilecache", "commit: output %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        err = hc_error(-EINVAL, "tilecache", "commit: %s is not a regular file", path);
        goto out;
    }
    r.state = HC_TC_DONE;
    r.size = (uint64_t)st.st_size;
    r.atime = tc_now(tc);
    r.error[0] = '\0';
    err = hc_tc_index_put(tc->ix, &r);
    if (err)
        goto out;
    tc->done_bytes += r.size;
    tc->done_entries++;
    tc_drop_tiles(tc, key);
    kick_if_over(tc);
out:
    pthread_mutex_unlock(&tc->mu);
    return err;
}

int
hc_tc_fail(struct hc_tc *tc, const char *key, const char *reason)
{
    struct hc_tc_row old, r;
    int err, had;

    if (!tc)
        return hc_error(-EINVAL, "tilecache", "fail: NULL argument");
    CHECK_KEY(key);
    memset(&r, 0, sizeof r);
    memcpy(r.key, key, sizeof r.key);
    r.state = HC_TC_ERROR;
    copy_cut(r.error, sizeof r.error, reason && reason[0] ? reason : "unknown error");

    pthread_mutex_lock(&tc->mu);
    err = hc_tc_index_get(tc->ix, key, &old);
    if (err && err != -ENOENT)
        goto out;
    had = err == 0;
    r.format = had ? old.format : HC_FORMAT_UNKNOWN;
    r.atime = tc_now(tc);
    err = hc_tc_index_put(tc->ix, &r);
    if (err)
        goto out;
    if (had)
        tc_drop_output(tc, &old);
out:
    pthread_mutex_unlock(&tc->mu);
    return err;
}

/* 0 when key has a job in progress, -ENOENT otherwise. Caller holds mu. */
static int
tc_job_running(struct hc_tc *tc, const char *key)
{
    struct hc_tc_row r;
    int err = hc_tc_index_get(tc->ix, key, &r);

    if (err == 0 && r.state != HC_TC_INCOMPLETE)
        err = -ENOENT;
    if (err == -ENOENT)
        hc_error(-ENOENT, "tilecache", "tile: no job in progress for %s", key);
    return err;
}

int
hc_tc_tile_put(struct hc_tc *tc, const char *key, uint32_t idx, const void *px, size_t len)
{
    char dir[PATH_MAX], tmp[PATH_MAX], dst[PATH_MAX];
    struct stat st;
    uint64_t seq;
    int err;

    if (!tc || (!px && len))
        return hc_error(-EINVAL, "tilecache", "tile_put: NULL argument");
    CHECK_KEY(key);
    tile_dir(tc, key, dir, sizeof dir);
    if (bprintf(dst, sizeof dst, "%s/%u", dir, (unsigned)idx) != 0)
        return hc_error(-ENAMETOOLONG, "tilecache", "tile_put: path too long");

    /* The directory is made under the lock so that it cannot interleave with a commit
     * removing it; a tile for a key with no running job would never be cleaned up. */
    pthread_mutex_lock(&tc->mu);
    err = tc_job_running(tc, key);
    if (!err && mkdir(dir, 0755) != 0 && errno != EEXIST)
        err = hc_error(-errno, "tilecache", "mkdir %s: %s", dir, strerror(errno));
    seq = tc->tmp_seq++;
    pthread_mutex_unlock(&tc->mu);
    if (err)
        return err;

    /* Written under a temporary name, renamed into place: a reader (or a crash) never
     * meets half a tile under its real name. */
    if (bprintf(tmp, sizeof tmp, "%s/.tmp.%ld.%llu", dir, (long)getpid(),
                (unsigned long long)seq) != 0)
        return hc_error(-ENAMETOOLONG, "tilecache", "tile_put: path too long");
    err = hc_tc_files_write_new(tmp, px, len);
    if (err) {
        if (err == -ENOSPC) {
            pthread_mutex_lock(&tc->mu);
            tc->kick = 1;
            pthread_cond_signal(&tc->wake);
            pthread_mutex_unlock(&tc->mu);
        }
        return err;
    }

    pthread_mutex_lock(&tc->mu);
    err = tc_job_running(tc, key); /* the job may have ended while we wrote */
    if (err) {
        unlink(tmp);
        goto out;
    }
    uint64_t old = (stat(dst, &st) == 0 && S_ISREG(st.st_mode)) ? (uint64_t)st.st_size : 0;
    if (rename(tmp, dst) != 0) {
        err = hc_error(-errno, "tilecache", "rename %s: %s", dst, strerror(errno));
        unlink(tmp);
        goto out;
    }
    tc->tile_bytes = sub_clamp(tc->tile_bytes + len, old);
out:
    pthread_mutex_unlock(&tc->mu);
    return err;
}

int
hc_tc_tile_get(struct hc_tc *tc, const char *key, uint32_t idx, void *px, size_t len)
{
    char path[PATH_MAX];

    if (!tc || (!px && len))
        return hc_error(-EINVAL, "tilecache", "tile_get: NULL argument");
    CHECK_KEY(key);
    if (bprintf(path, sizeof path, "%s/%s/%u", tc->tiles_dir, key, (unsigned)idx) != 0)
        return hc_error(-ENAMETOOLONG, "tilecache", "tile_get: path too long");
    return hc_tc_files_read_exact(path, px, len);
}

/* The pin of key (tc->mu held), or NULL. */
static struct tc_pin *
pin_find(struct hc_tc *tc, const char *key)
{
    for (size_t i = 0; i < tc->npins; i++)
        if (strcmp(tc->pins[i].key, key) == 0)
            return &tc->pins[i];
    return NULL;
}

static int
pinned(void *ctx, const char *key)
{
    return pin_find(ctx, key) != NULL;
}

int
hc_tc_pin(struct hc_tc *tc, const char *key)
{
    int err = 0;

    if (!tc || !key)
        return hc_error(-EINVAL, "tilecache", "pin: NULL argument");
    CHECK_KEY(key);
    pthread_mutex_lock(&tc->mu);
    struct tc_pin *p = pin_find(tc, key);
    if (!p && tc->npins == tc->cap_pins) {
        size_t ncap = tc->cap_pins ? tc->cap_pins * 2 : 16;
        struct tc_pin *np = realloc(tc->pins, ncap * sizeof *np);
        if (!np) {
            err = hc_error(-ENOMEM, "tilecache", "pin: out of memory");
            goto out;
        }
        tc->pins = np;
        tc->cap_pins = ncap;
    }
    if (!p) {
        p = &tc->pins[tc->npins++];
        snprintf(p->key, sizeof p->key, "%s", key);
        p->count = 0;
    }
    p->count++;
out:
    pthread_mutex_unlock(&tc->mu);
    return err;
}

void
hc_tc_unpin(struct hc_tc *tc, const char *key)
{
    if (!tc || !key)
        return;
    pthread_mutex_lock(&tc->mu);
    struct tc_pin *p = pin_find(tc, key);
    if (p && --p->count == 0) {
        *p = tc->pins[--tc->npins];
        kick_if_over(tc); /* what it kept may now go */
    }
    pthread_mutex_unlock(&tc->mu);
}

int
hc_tc_evict(struct hc_tc *tc)
{
    struct hc_tc_row r;
    int err = 0;

    if (!tc)
        return hc_error(-EINVAL, "tilecache", "evict: NULL argument");
    /* One victim per lock hold: readers and jobs get the lock between two unlinks. */
    for (;;) {
        int victim = 0;
        pthread_mutex_lock(&tc->mu);
        if (tc_over(tc)) {
            int found;

            err = hc_tc_index_oldest(tc->ix, &r, pinned, tc);
            found = err == 0; /* r is only filled in then */
            if (found)
                err = hc_tc_index_delete(tc->ix, r.key);
            if (found && err == -ENOSPC) {
                /* The disk is so full that SQLite cannot log the delete. Free the files
                 * first and try again with the space they gave back. Should that fail too,
                 * the row stays DONE with no file, which lookup and open treat as gone; its
                 * bytes are accounted for when the row goes. */
                char path[PATH_MAX];
                out_path(tc, r.key, r.format, path, sizeof path);
                if (path[0])
                    unlink(path);
                tc_drop_tiles(tc, r.key);
                err = hc_tc_index_delete(tc->ix, r.key);
            }
            if (err == 0) {
                tc_drop_output(tc, &r);
                tc_drop_tiles(tc, r.key);
                tc->evicted++;
                victim = 1;
            }
        }
        pthread_mutex_unlock(&tc->mu);
        if (err == -ENOENT) /* nothing evictable left: running jobs hold the rest */
            err = 0;
        if (err || !victim)
            break;
    }
    return err;
}

void
hc_tc_stats(struct hc_tc *tc, struct hc_tc_stats *s)
{
    if (!tc || !s)
        return;
    pthread_mutex_lock(&tc->mu);
    s->bytes = tc->done_bytes + tc->tile_bytes;
    s->entries = tc->done_entries;
    s->evicted = tc->evicted;
    pthread_mutex_unlock(&tc->mu);
}

static void *
evictor_main(void *arg)
{
    struct hc_tc *tc = arg;

    pthread_mutex_lock(&tc->mu);
    while (!tc->stop) {
        struct timespec ts;
        hc_deadline_in(&ts, tc->interval_ms);
        while (!tc->stop && !tc->kick) {
            if (pthread_cond_timedwait(&tc->wake, &tc->mu, &ts) == ETIMEDOUT)
                break;
        }
        if (tc->stop)
            break;
        tc->kick = 0;
        pthread_mutex_unlock(&tc->mu);
        if (hc_tc_evict(tc) != 0)
            fprintf(stderr, "warn %s (eviction)\n", hc_last_error());
        pthread_mutex_lock(&tc->mu);
    }
    pthread_mutex_unlock(&tc->mu);
    return NULL;
}

/* Startup: whatever was not DONE belongs to a job that died with the last process; a DONE
 * row whose file is missing or has another size was torn by a crash. Both go, with their
 * files, and so does every file no DONE row accounts for (temp files, partial outputs,
 * tiles). Only then does anyone see the cache, so a partial file is never served.
 * Files go before rows: on a full disk, SQLite needs the space they give back to log the
 * deletes (and a row whose file is gone is harmless: lookup drops it). */
static int
row_cmp(const void *a, const void *b)
{
    return strcmp(((const struct hc_tc_row *)a)->key, ((const struct hc_tc_row *)b)->key);
}

static int
tc_recover(struct hc_tc *tc)
{
    struct hc_tc_row *rows = NULL;
    size_t n = 0, dropped = 0, strays = 0;
    uint64_t freed = 0;
    DIR *d = NULL;
    int err;

    err = hc_tc_index_list(tc->ix, &rows, &n);
    if (err)
        goto out;
    /* Decide: a row is kept when it is DONE and its file is whole; the others are marked
     * ABSENT in the array. */
    for (size_t i = 0; i < n; i++) {
        struct hc_tc_row *r = &rows[i];
        char path[PATH_MAX];
        struct stat st;

        if (r->atime > tc->last_atime)
            tc->last_atime = r->atime;
        out_path(tc, r->key, r->format, path, sizeof path);
        if (r->state == HC_TC_DONE && key_valid(r->key) && path[0] && stat(path, &st) == 0 &&
            S_ISREG(st.st_mode) && (uint64_t)st.st_size == r->size) {
            tc->done_bytes += r->size;
            tc->done_entries++;
        } else {
            r->state = HC_TC_ABSENT;
        }
    }
    if (n > 1)
        qsort(rows, n, sizeof *rows, row_cmp);

    /* out/: keep exactly the files kept rows name. */
    d = opendir(tc->out_dir);
    if (!d) {
        err = hc_error(-errno, "tilecache", "%s: %s", tc->out_dir, strerror(errno));
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char path[PATH_MAX], want[PATH_MAX];
        struct hc_tc_row probe, *r = NULL;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (bprintf(path, sizeof path, "%s/%s", tc->out_dir, de->d_name) != 0)
            continue; /* cannot be ours, and cannot be named to remove it */
        want[0] = '\0';
        if (strlen(de->d_name) > HC_TC_KEY_LEN) {
            memcpy(probe.key, de->d_name, HC_TC_KEY_LEN);
            probe.key[HC_TC_KEY_LEN] = '\0';
            r = n ? bsearch(&probe, rows, n, sizeof *rows, row_cmp) : NULL;
            if (r && r->state == HC_TC_DONE)
                out_path(tc, r->key, r->format, want, sizeof want);
        }
        if (want[0] && strcmp(want, path) == 0)
            continue;
        if (hc_tc_files_rmtree(path, &freed) == 0)
            strays++;
    }

    /* tiles/: only unfinished jobs have tiles, and none survives a restart. */
    err = hc_tc_files_empty_dir(tc->tiles_dir, &freed);
    if (err)
        goto out;

    for (size_t i = 0; i < n; i++)
        dropped += rows[i].state != HC_TC_DONE;
    if (dropped == 0)
        goto done; /* nothing to write: a full disk can still be opened */
    err = hc_tc_index_exec(tc->ix, "BEGIN IMMEDIATE");
    for (size_t i = 0; i < n && !err; i++) {
        if (rows[i].state != HC_TC_DONE)
            err = hc_tc_index_delete(tc->ix, rows[i].key);
    }
    if (!err)
        err = hc_tc_index_exec(tc->ix, "COMMIT");
    if (err)
        hc_tc_index_rollback(tc->ix);
    if (err == -ENOSPC) {
        /* A full disk: the files are gone already, and the rows left behind are harmless
         * (lookup verifies a DONE row's file; a stale INCOMPLETE or ERROR row is replaced
         * by the next begin). The next open removes them. Serving what we have beats not
         * mounting. */
        fprintf(stderr, "warn %s; %zu stale rows stay until the next start\n", hc_last_error(),
                dropped);
        err = 0;
    }
    if (err)
        goto out;
done:
    if (dropped || strays)
        fprintf(stderr,
                "info tilecache: recovery dropped %zu unfinished or torn entries and %zu stray "
                "files (%llu bytes)\n",
                dropped, strays, (unsigned long long)freed);
out:
    if (d)
        closedir(d);
    free(rows);
    return err;
}

/* The index is unreadable (corrupt, not SQLite, a newer schema): a cache can always be
 * rebuilt, so start empty rather than refuse to mount. */
static int
tc_wipe(struct hc_tc *tc, const char *db)
{
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    char path[PATH_MAX];
    int err;

    fprintf(stderr, "warn %s; starting with an empty cache\n", hc_last_error());
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        bprintf(path, sizeof path, "%s%s", db, sfx[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            return hc_error(-errno, "tilecache", "unlink %s: %s", path, strerror(errno));
    }
    err = hc_tc_files_empty_dir(tc->out_dir, NULL);
    if (!err)
        err = hc_tc_files_empty_dir(tc->tiles_dir, NULL);
    return err;
}

int
hc_tc_open(const struct hc_tc_opts *o, struct hc_tc **out)
{
    struct hc_tc *tc = NULL;
    char real[PATH_MAX], db[PATH_MAX], lock[PATH_MAX];
    int err, mu_init = 0, cond_init = 0;

    if (!o || !out || !o->dir || !o->dir[0])
        return hc_error(-EINVAL, "tilecache", "open: no cache directory given");
    if (o->evict_interval_ms < 0)
        return hc_error(-EINVAL, "tilecache", "open: negative eviction interval");
    err = hc_tc_files_mkdirs(o->dir);
    if (err)
        return err;
    /* Absolute: a daemon may chdir("/") after opening. */
    if (!realpath(o->dir, real))
        return hc_error(-errno, "tilecache", "%s: %s", o->dir, strerror(errno));
    if (strlen(real) + TC_NAME_ROOM >= PATH_MAX)
        return hc_error(-ENAMETOOLONG, "tilecache", "cache directory name too long: %s", real);

    tc = calloc(1, sizeof *tc);
    if (!tc)
        return hc_error(-ENOMEM, "tilecache", "out of memory");
    tc->lock_fd = -1;
    bprintf(tc->dir, sizeof tc->dir, "%s", real);
    bprintf(tc->out_dir, sizeof tc->out_dir, "%s/out", real);
    bprintf(tc->tiles_dir, sizeof tc->tiles_dir, "%s/tiles", real);
    bprintf(db, sizeof db, "%s/index.db", real);
    bprintf(lock, sizeof lock, "%s/lock", real);
    tc->max_bytes = o->max_bytes;
    tc->min_free_bytes = o->min_free_bytes;
    tc->interval_ms = o->evict_interval_ms ? o->evict_interval_ms : TC_DEFAULT_INTERVAL_MS;

    tc->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (tc->lock_fd < 0) {
        err = hc_error(-errno, "tilecache", "%s: %s", lock, strerror(errno));
        goto out;
    }
    if (flock(tc->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            err = hc_error(-EBUSY, "tilecache", "cache %s is in use by another process", real);
            goto out;
        }
        /* Some network filesystems have no locks: run without, as SQLite itself would. */
        fprintf(stderr, "warn tilecache: cannot lock %s (%s); make sure only one hcfs uses it\n",
                lock, strerror(errno));
    }
    err = hc_tc_files_mkdirs(tc->out_dir);
    if (!err)
        err = hc_tc_files_mkdirs(tc->tiles_dir);
    if (err)
        goto out;

    err = hc_tc_index_open(db, &tc->ix);
    if (err == 0) {
        err = tc_recover(tc);
        if (err == -EBADMSG) {
            hc_tc_index_close(tc->ix);
            tc->ix = NULL;
        }
    }
    if (err == -EBADMSG) {
        tc->done_bytes = tc->done_entries = 0;
        err = tc_wipe(tc, db);
        if (!err)
            err = hc_tc_index_open(db, &tc->ix);
        if (!err)
            err = tc_recover(tc);
    }
    if (err)
        goto out;

    if (pthread_mutex_init(&tc->mu, NULL) != 0) {
        err = hc_error(-ENOMEM, "tilecache", "pthread_mutex_init failed");
        goto out;
    }
    mu_init = 1;
    err = hc_cond_init_steady(&tc->wake);
    if (err) {
        err = hc_error(-err, "tilecache", "pthread_cond_init failed");
        goto out;
    }
    cond_init = 1;
    err = pthread_create(&tc->evictor, NULL, evictor_main, tc);
    if (err) {
        err = hc_error(-err, "tilecache", "cannot start the eviction thread: %s", strerror(err));
        goto out;
    }
    tc->evictor_started = 1;
    /* Over the bounds already (they may have shrunk since the last run): evict now. */
    pthread_mutex_lock(&tc->mu);
    tc->kick = 1;
    pthread_cond_signal(&tc->wake);
    pthread_mutex_unlock(&tc->mu);
out:
    if (err) {
        if (cond_init)
            pthread_cond_destroy(&tc->wake);
        if (mu_init)
            pthread_mutex_destroy(&tc->mu);
        hc_tc_index_close(tc->ix);
        if (tc->lock_fd >= 0)
            close(tc->lock_fd);
        free(tc);
        return err;
    }
    *out = tc;
    return 0;
}

void
hc_tc_close(struct hc_tc *tc)
{
    if (!tc)
        return;
    if (tc->evictor_started) {
        pthread_mutex_lock(&tc->mu);
        tc->stop = 1;
        pthread_cond_signal(&tc->wake);
        pthread_mutex_unlock(&tc->mu);
        pthread_join(tc->evictor, NULL);
    }
    hc_tc_index_checkpoint(tc->ix);
    hc_tc_index_close(tc->ix);
    pthread_cond_destroy(&tc->wake);
    pthread_mutex_destroy(&tc->mu);
    close(tc->lock_fd); /* releases the flock */
    free(tc->pins);
    free(tc);
}
