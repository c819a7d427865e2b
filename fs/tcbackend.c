/* tcbackend.c: tiles from the cache first, the rest from the inner backend, stored by a
 * writer thread (tcbackend.h). */
#include "tcbackend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

struct hc_tcb_item {
    struct hc_tcb_item *next;
    uint32_t idx;
    size_t len;
    uint8_t px[]; /* copy of the tile: the pipeline reuses its buffers after run() */
};

static size_t
tile_bytes(const struct hc_job_geom *g, const struct hc_tile *t)
{
    return (size_t)t->out.w * (size_t)t->out.h * hc_pixel_bytes(g->channels, g->depth);
}

static void *
writer(void *arg)
{
    struct hc_tcbackend *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stop)
            pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head || b->discard)
            break;
        struct hc_tcb_item *it = b->head;
        b->head = it->next;
        if (!b->head)
            b->tail = NULL;
        pthread_mutex_unlock(&b->mu);
        /* A tile that cannot be stored (disk full) only costs a resume; the job goes on. */
        int r = hc_tc_tile_put(b->tc, b->key, it->idx, it->px, it->len);
        pthread_mutex_lock(&b->mu);
        if (r == 0)
            b->tiles_stored++;
        b->queued_bytes -= it->len;
        free(it);
        pthread_cond_broadcast(&b->cv); /* room in the queue */
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int
hc_tcbackend_start(struct hc_tcbackend *b)
{
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->head = b->tail = NULL;
    b->queued_bytes = 0;
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
    while (b->head) {
        struct hc_tcb_item *it = b->head;
        b->head = it->next;
        free(it);
    }
    b->tail = NULL;
    b->queued_bytes = 0;
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

static void
store(struct hc_tcbackend *b, const struct hc_tile *t, size_t len)
{
    struct hc_tcb_item *it = b->started ? malloc(sizeof(*it) + len) : NULL;
    if (!it) {
        if (hc_tc_tile_put(b->tc, b->key, t->index, t->out_px, len) == 0)
            b->tiles_stored++;
        return;
    }
    it->next = NULL;
    it->idx = t->index;
    it->len = len;
    memcpy(it->px, t->out_px, len);
    pthread_mutex_lock(&b->mu);
    while (b->queued_bytes > 0 && b->queued_bytes + len > HC_TCB_QUEUE_BYTES)
        pthread_cond_wait(&b->cv, &b->mu);
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    b->queued_bytes += len;
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
        store(b, &missing[i], tile_bytes(g, &missing[i]));
out:
    free(missing);
    return r;
}

const struct hc_tile_backend hc_tcbackend = {.name = "tilecache", .run = tcb_run};
