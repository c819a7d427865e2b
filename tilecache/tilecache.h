/* tilecache.h: the local cache behind hcfs: finished outputs and the tiles of unfinished
 * jobs, an index, eviction and crash recovery.
 *
 * Layout under the cache directory: index.db (SQLite, WAL), out/<key>.<ext> finished outputs,
 * tiles/<key>/<index> tiles of jobs in progress. An output becomes visible only by rename
 * after fsync (the pipeline writes it that way) and only counts as done after
 * hc_tc_commit(); at open, every entry not done (and any stray file) is removed, so a file
 * left by a crash or kill -9 is never served. Eviction (least recently used, against
 * max_bytes and min_free_bytes) runs in a background thread, never in the caller's.
 *
 * Thread safety: every function may be called from any thread on one struct hc_tc.
 */
#ifndef HC_TILECACHE_H
#define HC_TILECACHE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HC_TC_KEY_LEN 32      /* hex characters */
#define HC_PIPELINE_VERSION 1 /* bump when any change alters output bytes */

struct hc_tc;

struct hc_tc_opts {
    const char *dir;         /* created if missing */
    uint64_t max_bytes;      /* 0: no size bound */
    uint64_t min_free_bytes; /* keep at least this much free on the cache's filesystem */
    int evict_interval_ms;   /* 0: default (5000) */
};

/* Opens (creating) a cache, recovers from an unclean stop and starts the evictor.
 * Returns 0 and *out, or -errno with hc_last_error() set. Close with hc_tc_close(). */
int hc_tc_open(const struct hc_tc_opts *o, struct hc_tc **out);
void hc_tc_close(struct hc_tc *tc);

/* Everything that changes the output bytes. */
struct hc_tc_params {
    enum hc_filter filter;
    int scale;
    enum hc_format format;     /* output format */
    int quality;               /* JPEG quality (0 for other formats) */
    uint32_t pipeline_version; /* HC_PIPELINE_VERSION */
};

/* key = hash(input bytes, params) as HC_TC_KEY_LEN hex characters and a NUL. Reads the
 * whole file. Returns 0 or -errno. */
int hc_tc_key_file(const char *path, const struct hc_tc_params *p, char key[HC_TC_KEY_LEN + 1]);
int hc_tc_key_mem(const void *buf, size_t len, const struct hc_tc_params *p,
                  char key[HC_TC_KEY_LEN + 1]);

enum hc_tc_state {
    HC_TC_ABSENT = 0,
    HC_TC_INCOMPLETE, /* a job has begun */
    HC_TC_DONE,
    HC_TC_ERROR, /* the last job failed; error holds why */
};

struct hc_tc_entry {
    enum hc_tc_state state;
    uint64_t size;       /* bytes of the output when DONE */
    char path[PATH_MAX]; /* where the output is (DONE) or goes (INCOMPLETE) */
    char error[256];
};

/* Looks a key up; a DONE entry's access time is updated (LRU). Returns 0 (e->state may be
 * ABSENT) or -errno. */
int hc_tc_lookup(struct hc_tc *tc, const char *key, struct hc_tc_entry *e);

/* Starts (or restarts) a job for key with output format fmt: state INCOMPLETE; *e gets the
 * path the output must be renamed to. Tiles stored earlier for key are kept (resume). */
int hc_tc_begin(struct hc_tc *tc, const char *key, enum hc_format fmt, struct hc_tc_entry *e);

/* The output is in place (renamed after fsync): records DONE with its size and drops the
 * key's tiles. */
int hc_tc_commit(struct hc_tc *tc, const char *key);

/* The job failed: records ERROR and reason, removes any output; tiles are kept so a later
 * job resumes. */
int hc_tc_fail(struct hc_tc *tc, const char *key, const char *reason);

/* Stores / fetches tile number idx of key's job (bytes as the backend returned them).
 * get returns 0, -ENOENT when absent, -EIO when the stored size differs from len. */
int hc_tc_tile_put(struct hc_tc *tc, const char *key, uint32_t idx, const void *px, size_t len);
int hc_tc_tile_get(struct hc_tc *tc, const char *key, uint32_t idx, void *px, size_t len);

/* Keeps key's output from eviction while it is in use (a reader has it open, or is about to
 * open it): pins count, and the cache may stay over its bounds meanwhile. Every pin that
 * returned 0 is matched by one unpin; the last unpin lets the evictor look again. A pin
 * does not make a missing entry appear: check after pinning that the output is there.
 * hc_tc_pin returns 0 or -errno (-ENOMEM, -EINVAL). */
int hc_tc_pin(struct hc_tc *tc, const char *key);
void hc_tc_unpin(struct hc_tc *tc, const char *key);

/* Runs one eviction pass now (the background thread calls the same). Returns 0 or -errno. */
int hc_tc_evict(struct hc_tc *tc);

struct hc_tc_stats {
    uint64_t bytes;   /* bytes of DONE outputs and stored tiles */
    uint64_t entries; /* DONE entries */
    uint64_t evicted; /* entries evicted since open */
};
void hc_tc_stats(struct hc_tc *tc, struct hc_tc_stats *s);

#ifdef __cplusplus
}
#endif
#endif
