/* probecache.c: a chained hash table of header probes (see probecache.h). */
#include "probecache.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "platform.h"
#include "strhash.h"

#define NBUCKETS 1024

struct pentry {
    struct pentry *next;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    int result;
    struct hc_image_info info;
    char path[]; /* flexible: the whole path */
};

struct hc_probecache {
    pthread_mutex_t lock;
    struct pentry *b[NBUCKETS];
    size_t n, cap;
    unsigned long long reads;
};

#define ST_MTIM(st) HC_ST_MTIM(st)
#define ST_CTIM(st) HC_ST_CTIM(st)

static int
same_file(const struct pentry *e, const struct stat *st)
{
    return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
           e->mtime.tv_sec == ST_MTIM(st).tv_sec && e->mtime.tv_nsec == ST_MTIM(st).tv_nsec &&
           e->ctime.tv_sec == ST_CTIM(st).tv_sec && e->ctime.tv_nsec == ST_CTIM(st).tv_nsec;
}

int
hc_probecache_new(size_t cap, struct hc_probecache **out)
{
    struct hc_probecache *pc = calloc(1, sizeof(*pc));
    if (!pc)
        return -ENOMEM;
    pthread_mutex_init(&pc->lock, NULL);
    pc->cap = cap ? cap : 1;
    *out = pc;
    return 0;
}

static void
clear_locked(struct hc_probecache *pc)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct pentry *e = pc->b[i];
        while (e) {
            struct pentry *n = e->next;
            free(e);
            e = n;
        }
        pc->b[i] = NULL;
    }
    pc->n = 0;
}

void
hc_probecache_free(struct hc_probecache *pc)
{
    if (!pc)
        return;
    clear_locked(pc);
    pthread_mutex_destroy(&pc->lock);
    free(pc);
}

int
hc_probecache_get(struct hc_probecache *pc, const char *path, const struct stat *st,
                  struct hc_image_info *info)
{
    uint32_t h = hc_fs_strhash(path) % NBUCKETS;
    int r;

    pthread_mutex_lock(&pc->lock);
    for (struct pentry *e = pc->b[h]; e; e = e->next) {
        if (strcmp(e->path, path) == 0 && same_file(e, st)) {
            r = e->result;
            if (r == 0)
                *info = e->info;
            pthread_mutex_unlock(&pc->lock);
            return r;
        }
    }
    pc->reads++;
    pthread_mutex_unlock(&pc->lock);

    /* Probe outside the lock: it reads the disk. An empty file is no image; say so without
     * asking the codecs. */
    struct hc_image_info got = {0};
    if (st->st_size == 0)
        r = -EINVAL;
    else
        r = hc_probe_file(path, &got);
    if (r != 0 && r != -EINVAL)
        return r; /* a read error may be transient: not remembered */
    if (r == 0)
        *info = got;

    size_t plen = strlen(path) + 1;
    struct pentry *ne = malloc(sizeof(*ne) + plen);
    if (!ne)
        return r;
    memcpy(ne->path, path, plen);
    ne->dev = st->st_dev;
    ne->ino = st->st_ino;
    ne->size = st->st_size;
    ne->mtime = ST_MTIM(st);
    ne->ctime = ST_CTIM(st);
    ne->result = r;
    ne->info = got;

    pthread_mutex_lock(&pc->lock);
    /* Drop a stale answer for the same path so the chain does not grow per version. */
    for (struct pentry **pp = &pc->b[h]; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->path, path) == 0) {
            struct pentry *old = *pp;
            *pp = old->next;
            free(old);
            pc->n--;
            break;
        }
    }
    if (pc->n >= pc->cap)
        clear_locked(pc);
    ne->next = pc->b[h];
    pc->b[h] = ne;
    pc->n++;
    pthread_mutex_unlock(&pc->lock);
    return r;
}

unsigned long long
hc_probecache_reads(struct hc_probecache *pc)
{
    pthread_mutex_lock(&pc->lock);
    unsigned long long r = pc->reads;
    pthread_mutex_unlock(&pc->lock);
    return r;
}
