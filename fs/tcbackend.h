/* tcbackend.h: a struct hc_tile_backend that puts the tile cache in front of another
 * backend, so that a job that failed halfway resumes with the missing tiles only.
 *
 * For each batch: tiles already stored under the job's key (hc_tc_tile_get) are copied out
 * of the cache; only the others go to the inner backend; each tile the inner backend
 * delivers is stored (hc_tc_tile_put) before run() returns. The inner backend reports a
 * batch as a whole, so a batch that fails stores nothing of its own (batches are one tile
 * row: a failed job keeps every row finished before the failure).
 *
 * Thread safety: one struct hc_tcbackend per job; the tile cache may be shared.
 */
#ifndef HC_FS_TCBACKEND_H
#define HC_FS_TCBACKEND_H

#include <stdint.h>

#include "pipeline.h"
#include "tilecache.h"

#ifdef __cplusplus
extern "C" {
#endif

struct hc_tcbackend {
    struct hc_tc *tc;
    char key[HC_TC_KEY_LEN + 1];
    const struct hc_tile_backend *inner;
    void *inner_ctx;
    /* Counters of this job, for logs and tests. */
    uint64_t tiles_from_cache;
    uint64_t tiles_computed;
};

/* The backend: ctx is a struct hc_tcbackend *. */
extern const struct hc_tile_backend hc_tcbackend;

#ifdef __cplusplus
}
#endif
#endif
