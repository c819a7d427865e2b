/* jobs.h: the upscaling jobs behind upscaled/: one job per input version and per cache key,
 * a bounded pool of workers, waiting readers, status for xattrs.
 *
 * A job belongs to a path of input/ and to the identity of the file when it was queued
 * (device, inode, size, mtime, ctime). A worker opens the input once, hashes its bytes into
 * the cache key (so the key is for the bytes the job really reads, whatever happens to the
 * file later), then either finds the output DONE in the tile cache or runs the pipeline with
 * the input read through that same descriptor. If the file is modified in place while the
 * job runs (its identity changed by the end), the output is not published. Two jobs whose
 * keys are equal (the same bytes under two names) share one pipeline run.
 *
 * Readers (open of upscaled/<rel>) jump the queue; prefetch (release after write) joins its
 * end. A reader waits for the job, polling its stop callback (FUSE interrupt, unmount) every
 * 100 ms. A failed job is run again by the next open, never by the next prefetch of the same
 * file version.
 *
 * Thread safety: every function may be called from any thread; hc_jobs_stop once, last.
 */
#ifndef HC_FS_JOBS_H
#define HC_FS_JOBS_H

#include <stdint.h>
#include <sys/stat.h>

#include "client.h"
#include "codec.h"
#include "image.h"
#include "pathmap.h"
#include "tilecache.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hc_jobs;

struct hc_jobs_cfg {
    struct hc_tc *tc;     /* the cache (kept, not owned) */
    const char *data_dir; /* absolute path of input/'s backing directory (copied) */
    int scale;            /* 1..HC_MAX_SCALE */
    enum hc_filter filter;
    int quality;  /* JPEG quality 1..100 */
    int tile;     /* output tile edge passed to the pipeline (0: its default) */
    int nworkers; /* jobs running at once, >= 1 */
    int nthreads; /* threads of one in-process job (0: all CPUs) */
    struct hc_limits limits;
    struct hc_client *client; /* NULL: in-process backend (kept, not owned) */
    int store_tiles;          /* with a client: keep tiles in the cache as they arrive */
    struct hc_pathmap *paths; /* outputs remembered across mounts (kept, not owned); NULL */
    /* Called from a worker when a job of rel ends (done or failed): after its state says
     * so (a status asked meanwhile gets the exact size) and before the readers waiting for
     * it to be done are let go (those of a failed job may see the failure first). hcfs
     * drops the kernel's cached attributes of upscaled/<rel> there, so the size a reader
     * sees after open() is the output's. Not called for jobs that end once hc_jobs_stop
     * has begun. May be NULL. */
    void (*on_end)(void *ctx, const char *rel);
    void *on_end_ctx;
};

/* Starts the workers. Returns 0 and *out, or -errno with hc_last_error() set. */
int hc_jobs_start(const struct hc_jobs_cfg *cfg, struct hc_jobs **out);

/* Cancels queued and running jobs (their temporary files are removed by the pipeline),
 * wakes every waiting reader (which then fails with -EINTR), joins the workers and frees
 * everything. j may be NULL. */
void hc_jobs_stop(struct hc_jobs *j);

/* Queues a job for input path rel ("a/b.png", relative to data_dir) at the end of the queue,
 * unless the current version of the file already has a job (queued, running, done or
 * failed). Returns 0 or -errno (the file is gone). Never blocks on a job. */
int hc_jobs_prefetch(struct hc_jobs *j, const char *rel);

/* Waits until the current version of rel has its output, starting (or promoting) its job.
 * stop(stop_ctx) is polled every 100 ms; when it returns nonzero the wait ends with -EINTR
 * (the job goes on for others). On success returns 0 with *fd open read-only on the output
 * (fd may be NULL: only the size is wanted), *size its size and *keep_cache 1 when this job's
 * output was opened before (the kernel's cached pages for the path are this output's).
 * pin_key (HC_TC_KEY_LEN + 1 bytes, or NULL), with fd: the output's cache key, pinned in the
 * cache (hc_tc_pin) so that it is not evicted while the caller reads it; the caller unpins
 * it when done (hc_tc_unpin). "" when no pin was taken.
 * Fails with -EIO when the job failed (reason in err, a buffer of errlen bytes, and in the
 * status), -ENOENT when the input is gone. A job that failed because the file it read was
 * rewritten or removed meanwhile is not a failure of the path: the wait goes on for the
 * version the path has now. */
int hc_jobs_open_output(struct hc_jobs *j, const char *rel, int (*stop)(void *), void *stop_ctx,
                        int *fd, uint64_t *size, int *keep_cache, char *pin_key, char *err,
                        size_t errlen);

/* Never waits: when the version of rel whose lstat is st has a finished job, copies its
 * output's file name in the cache (its cache key and extension) into name (len bytes) and
 * the key into key, and returns 0; else (also when name would not fit) -ENOENT and writes
 * nothing. The file itself may have been evicted since. */
int hc_jobs_done_name(struct hc_jobs *j, const char *rel, const struct stat *st, char *name,
                      size_t len, char key[HC_TC_KEY_LEN + 1]);

enum hc_job_state {
    HC_JOB_NONE = 0, /* no job for this version of the file yet */
    HC_JOB_QUEUED,
    HC_JOB_RUNNING,
    HC_JOB_DONE,
    HC_JOB_FAILED,
};

/* "none", "pending", "running", "done", "failed". */
const char *hc_job_state_name(enum hc_job_state s);

struct hc_job_status {
    enum hc_job_state state;
    uint64_t done, total; /* output rows written of the job's image (0/0 before it starts) */
    uint64_t size;        /* output bytes when DONE */
    char error[256];      /* why it failed, when FAILED */
};

/* Status of the job of the version of rel whose lstat() is *st (NONE when the latest job of
 * rel was for another version, or its output was evicted since). Without a job in this
 * mount, a version done before (the path map) reports DONE with its size. Never starts
 * anything, never reads the input. */
void hc_jobs_status(struct hc_jobs *j, const char *rel, const struct stat *st,
                    struct hc_job_status *s);

struct hc_jobs_stats {
    uint64_t queued;     /* jobs created */
    uint64_t runs;       /* pipeline runs (cache misses) */
    uint64_t cache_hits; /* jobs answered by a DONE cache entry */
    uint64_t shared;     /* jobs that waited for another job with the same key */
    uint64_t done, failed;
    uint64_t gone; /* jobs whose input was renamed or removed before they started */
    uint64_t tiles_from_cache, tiles_computed; /* tile-cache resume counters */
    int running, waiting;
    int running_max; /* most jobs running at once since start */
};
void hc_jobs_stats(struct hc_jobs *j, struct hc_jobs_stats *s);

#ifdef __cplusplus
}
#endif
#endif
