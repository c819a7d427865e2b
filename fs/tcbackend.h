/* tcbackend.h: a struct hc_tile_backend that puts the tile cache in front of another
 * backend, so that a job that failed halfway resumes with the missing tiles only.
 *
 * For each batch: tiles already stored under the job's key (hc_tc_tile_get) are copied out
 * of the cache; only the others go to the inner backend; each tile the inner backend
 * delivers is queued for storing (hc_tc_tile_put). The inner backend reports a batch as a
 * whole (batches are one tile row), so a failed batch stores nothing of its own.
 *
 * Storing runs on a writer thread of its own: a job that succeeds does not wait for disk
 * writes it will never need (the cache drops a key's tiles at commit), so hc_tcbackend_finish
 * with keep == 0 discards what is still queued; a job that fails calls it with keep == 1,
 * which writes every queued tile before returning (before hc_tc_fail). The queue holds at
 * most HC_TCB_QUEUE_BYTES of tile copies; beyond that run() waits for the writer.
 *
 * Thread safety: one struct hc_tcbackend per job, run() from the job's thread; the tile
 * cache may be shared.
 */
#ifndef HC_FS_TCBACKEND_H
#define HC_FS_TCBACKEND_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "pipeline.h"
#include "tilecache.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HC_TCB_QUEUE_BYTES (64u << 20)

struct hc_tcb_item;

struct hc_tcbackend {
    struct hc_tc *tc;
    char key[HC_TC_KEY_LEN + 1];
    const struct hc_tile_backend *inner;
    void *inner_ctx;
    /* Counters of this job, for logs and tests. */
    uint64_t tiles_from_cache;
    uint64_t tiles_computed;
    uint64_t tiles_stored;

    /* The writer (private). */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, stop, discard;
    struct hc_tcb_item *head, *tail;
    size_t queued_bytes;
};

/* Prepares b (tc, key, inner and inner_ctx already set) and starts its writer. Returns 0 or
 * -errno; on failure the backend still works, storing tiles synchronously. */
int hc_tcbackend_start(struct hc_tcbackend *b);

/* Stops the writer: keep != 0 stores every queued tile first, keep == 0 drops them. Safe to
 * call when start failed. */
void hc_tcbackend_finish(struct hc_tcbackend *b, int keep);

/* The backend: ctx is a struct hc_tcbackend *. */
extern const struct hc_tile_backend hc_tcbackend;

#ifdef __cplusplus
}
#endif
#endif
