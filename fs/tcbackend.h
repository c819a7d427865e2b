/* tcbackend.h: a struct hc_tile_backend that puts the tile cache in front of another
 * backend, so that a job that failed halfway resumes with the missing tiles only.
 *
 * For each batch: tiles already stored under the job's key (hc_tc_tile_get) are copied out
 * of the cache; only the others go to the inner backend; each tile the inner backend
 * delivers is kept for storing (hc_tc_tile_put). The inner backend reports a batch as a
 * whole (batches are one tile row), so a failed batch keeps nothing of its own.
 *
 * Why tiles are kept in memory first: stored tiles only matter when a job fails (the cache
 * drops a key's tiles at commit, and start-up removes those of unfinished jobs), and writing
 * all of them costs a successful job dearly (100 MB of tile files for a 4K image at x2,
 * which the output's fsync then has to flush too). So a job keeps up to HC_TCB_QUEUE_BYTES
 * of tile copies in memory, a writer thread at idle priority spills the oldest once three
 * quarters are used, hc_tcbackend_finish(keep = 1) after a failure writes every kept tile
 * (before hc_tc_fail), and keep = 0 after a success drops them. A tile that finds no free
 * slot is not kept (a resume recomputes it) rather than making the job wait.
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

struct hc_tcb_slot {
    uint32_t idx; /* tile number */
    uint32_t len; /* bytes */
    int32_t next; /* FIFO / free list link, -1 ends */
};

struct hc_tcbackend {
    struct hc_tc *tc;
    char key[HC_TC_KEY_LEN + 1];
    const struct hc_tile_backend *inner;
    void *inner_ctx;
    int tile_edge; /* the job's output tile edge: slots hold tile_edge^2 pixels */
    /* Counters of this job, for logs and tests. */
    uint64_t tiles_from_cache;
    uint64_t tiles_computed;
    uint64_t tiles_stored;
    uint64_t tiles_dropped; /* not kept: no free slot */

    /* The writer and its slots (private): one mapping of nslots * slot_bytes, carved into
     * equal slots that are reused, so a job touches its memory once (no page faults and
     * munmap per tile). */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, stop, discard;
    uint8_t *arena;
    size_t slot_bytes, arena_bytes;
    struct hc_tcb_slot *slots;
    int nslots, nused, head, tail, free_top;
};

/* Prepares b (tc, key, inner, inner_ctx and tile_edge already set) and starts its writer. Returns 0
 * or -errno; on failure the backend still works, storing tiles synchronously. */
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
