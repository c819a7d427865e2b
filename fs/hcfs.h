/* hcfs.h: the state one mounted hcfs shares between main (options, mount, shutdown) and the
 * FUSE operations (ops.c).
 *
 * Layout of the mount:
 *   /            two folders, nothing else can be created there
 *   /input/...   passthrough of the data directory (data=DIR)
 *   /upscaled/.. read-only mirror of input/: folders, and the files whose header says
 *                supported image, served from the cache once their job is done
 */
#ifndef HC_FS_HCFS_H
#define HC_FS_HCFS_H

#include <limits.h>
#include <stdint.h>

#include "platform.h"

#include "client.h"
#include "jobs.h"
#include "pathmap.h"
#include "probecache.h"
#include "tilecache.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hcfs {
    /* Options (main.c fills them; see fs/README.md). */
    char *service; /* comma-separated URLs, NULL: in-process */
    char *token_file;
    char *data_opt, *cache_opt;
    char *filter_name;
    char *cache_max_opt, *cache_min_free_opt;
    int scale, quality, tile, njobs, timeout_s, retries;
    int prefetch;
    int exact_size;
    int store_tiles;

    /* Resolved at start-up. */
    char data[PATH_MAX];  /* absolute */
    char cache[PATH_MAX]; /* absolute */
    enum hc_filter filter;
    uint64_t cache_max, cache_min_free;

    /* Running parts (created after the daemon forks). */
    struct hc_tc *tc;
    struct hc_client *client;
    struct hc_jobs *jobs;
    struct hc_probecache *probes;
    struct hc_pathmap *paths;
    struct fuse *fuse;
    struct timespec mounted_at;
    struct hc_backing *backing; /* FUSE passthrough ids (backing.h); NULL without it */
    int session_fd;             /* /dev/fuse, for the passthrough ioctls; -1 unknown */
    char mountpoint[PATH_MAX];  /* absolute, "" when unknown */
};

/* The FUSE operations; fuse_get_context()->private_data is the struct hcfs. */
extern const struct fuse_operations hc_fs_ops;

/* jobs' on_end callback (ctx: the struct hcfs): drops the kernel's cached attributes and
 * pages of upscaled/<rel>. Called from job workers, never inside a FUSE request. */
void hc_fs_job_ended(void *ctx, const char *rel);

#ifdef __cplusplus
}
#endif
#endif
