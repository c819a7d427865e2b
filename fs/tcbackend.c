/* tcbackend.c: tiles from the cache first, the rest from the inner backend, kept in memory
 * slots and spilled to the cache by an idle-priority writer (tcbackend.h). */
#include "tcbackend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "error.h"
#include "platform.h"

#define SPILL_NUM 3 /* spill once nused > nslots * 3 / 4 */
#define SPILL_DEN 4

static size_t
tile_bytes(const struct hc_job_geom *g, const struct hc_tile *t)
{
    return (size_t)t->out.w * (size_t)t->out.h * hc_pixel_bytes(g->channels, g->depth);
}

static int
over_budget(const struct hc_tcbackend *b)
{
    return b->nused * SPILL_DEN > b->nslots * SPILL_NUM;
}

static void *
writer(void *arg)
{
    struct hc_tcbackend *b = arg;
    /* Stored tiles only matter if the job fails: write them with CPU time nobody else
     * wants, so they never slow the job down (a successful job drops what is left). */
    hc_platform_background_thread();
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->stop && !(b->head >= 0 && over_budget(b)))
            pthread_cond_wait(&b->cv, &b->mu);
        if (b->head < 0 || b->discard)
            break;
        int k = b->head;
        struct hc_tcb_slot *sl = &b->slots[k];
        pthread_mutex_unlock(&b->mu);
        /* The slot is ours until it goes back on the free list: run() never touches it. */
        int r =
            hc_tc_tile_put(b->tc, b->key, sl->idx, b->arena + (size_t)k * b->slot_bytes, sl->len);
        pthread_mutex_lock(&b->mu);
        if (r == 0)
            b->tiles_stored++;
        b->head = sl->next;
        if (b->head < 0)
            b->tail = -1;
        sl->next = b->free_top;
        b->free_top = k;
        b->nused--;
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int
hc_tcbackend_start(struct hc_tcbackend *b)
{
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->arena = NULL;
    b->slots = NULL;
    b->nslots = b->nused = 0;
    b->head = b->tail = b->free_top = -1;
    b->stop = b->discard = 0;
    int e = pthread_create(&b->thread, NULL, writer, b);
    b->started = e == 0;
    return -e;
}

void
hc_tcbackend_finish(struct hc_tcbackend *b, int keep)
{
    if (b->started) {
        pthread_mutex_lock(&b->mu);
        b->stop = 1;
        b->discard = !keep;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->thread, NULL);
        b->started = 0;
    }
    if (b->arena)
        munmap(b->arena, b->arena_bytes);
    free(b->slots);
    b->arena = NULL;
    b->slots = NULL;
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

/* The slots, made at the first tile: their size depends on the job's pixel format. */
static int
arena_init(struct hc_tcbackend *b, const struct hc_job_geom *g)
{
    int edge = b->tile_edge > 0 ? b->tile_edge : 256;
    b->slot_bytes = (size_t)edge * (size_t)edge * hc_pixel_bytes(g->channels, g->depth);
    b->slot_bytes = (b->slot_bytes + 4095) & ~(size_t)4095;
    b->nslots = (int)(HC_TCB_QUEUE_BYTES / b->slot_bytes);
    if (b->nslots < 4)
        b->nslots = 4;
    b->arena_bytes = (size_t)b->nslots * b->slot_bytes;
    void *m =
        mmap(NULL, b->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -ENOMEM;
#ifdef MADV_HUGEPAGE
    (void)madvise(m, b->arena_bytes, MADV_HUGEPAGE); /* fewer page faults on Linux */
#endif
    b->slots = calloc((size_t)b->nslots, sizeof(*b->slots));
    if (!b->slots) {
        munmap(m, b->arena_bytes);
        return -ENOMEM;
    }
    b->arena = m;
    /* Free list in ascending order: low slots are reused first, so a small job touches
     * little of the mapping. */
    for (int k = b->nslots - 1; k >= 0; k--) {
        b->slots[k].next = b->free_top;
        b->free_top = k;
    }
    return 0;
}

static void
keep_tile(struct hc_tcbackend *b, const struct hc_job_geom *g, const struct hc_tile *t, size_t len)
{
    if (!b->started) {
        if (hc_tc_tile_put(b->tc, b->key, t->index, t->out_px, len) == 0)
            b->tiles_stored++;
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (!b->arena && arena_init(b, g) < 0) {
        pthread_mutex_unlock(&b->mu);
        b->tiles_dropped++;
        return;
    }
    int k = b->free_top;
    if (len > b->slot_bytes || k < 0) {
        /* No room (the writer cannot keep up) or an odd tile: not kept, never waited for. */
        b->tiles_dropped++;
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->free_top = b->slots[k].next;
    pthread_mutex_unlock(&b->mu);

    /* Copy outside the lock: the slot is off the free list and not yet queued. */
    memcpy(b->arena + (size_t)k * b->slot_bytes, t->out_px, len);

    pthread_mutex_lock(&b->mu);
    struct hc_tcb_slot *sl = &b->slots[k];
    sl->idx = t->index;
    sl->len = (uint32_t)len;
    sl->next = -1;
    if (b->tail >= 0)
        b->slots[b->tail].next = k;
    else
        b->head = k;
    b->tail = k;
    b->nused++;
    if (over_budget(b))
        pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static int
tcb_run(void *ctx, const struct hc_job_geom *g, struct hc_tile *tiles, size_t n)
{
    struct hc_tcbackend *b = ctx;
    struct hc_tile *missing = NULL;
    size_t nmiss = 0;
    int r = 0;

    if (n == 0)
        return 0;
    missing = malloc(n * sizeof(*missing));
    if (!missing) {
        r = hc_error(-ENOMEM, "hcfs", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (hc_tc_tile_get(b->tc, b->key, tiles[i].index, tiles[i].out_px,
                           tile_bytes(g, &tiles[i])) == 0)
            b->tiles_from_cache++;
        else
            missing[nmiss++] = tiles[i]; /* same out_px: the inner backend fills ours */
    }
    if (nmiss == 0)
        goto out;
    r = b->inner->run(b->inner_ctx, g, missing, nmiss);
    if (r < 0)
        goto out;
    b->tiles_computed += nmiss;
    for (size_t i = 0; i < nmiss; i++)
        keep_tile(b, g, &missing[i], tile_bytes(g, &missing[i]));
out:
    free(missing);
    return r;
}

const struct hc_tile_backend hc_tcbackend = {.name = "tilecache", .run = tcb_run};
