/* backing.c: see backing.h. A short list: it holds only the paths open right now. */
#include "backing.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct entry {
    struct entry *next;
    char *rel;
    dev_t dev; /* the backing file's identity: one version of rel's output */
    ino_t ino;
    int id, refs;
};

struct hc_backing {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    struct entry *list;
    int (*open_id)(int fd);
    void (*close_id)(int id);
    int enabled;
};

struct hc_backing *
hc_backing_new(int (*open_id)(int fd), void (*close_id)(int id))
{
    struct hc_backing *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->freed, NULL);
    b->open_id = open_id;
    b->close_id = close_id;
    b->enabled = 1;
    return b;
}

void
hc_backing_free(struct hc_backing *b)
{
    if (!b)
        return;
    while (b->list) {
        struct entry *e = b->list;
        b->list = e->next;
        b->close_id(e->id);
        free(e->rel);
        free(e);
    }
    pthread_cond_destroy(&b->freed);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static struct entry *
find(struct hc_backing *b, const char *rel)
{
    for (struct entry *e = b->list; e; e = e->next)
        if (!strcmp(e->rel, rel))
            return e;
    return NULL;
}

int
hc_backing_get(struct hc_backing *b, const char *rel, int fd, int (*stop)(void *), void *arg,
               int timeout_s)
{
    struct stat st;
    struct timespec deadline;
    int r;

    if (fstat(fd, &st) < 0)
        return -errno;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_s > 0 ? timeout_s : 1;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        if (!b->enabled) {
            r = 0;
            break;
        }
        struct entry *e = find(b, rel);
        if (e && e->dev == st.st_dev && e->ino == st.st_ino) {
            e->refs++;
            r = e->id;
            break;
        }
        if (!e) {
            int id = b->open_id(fd);
            if (id <= 0) {
                b->enabled = 0;
                fprintf(stderr, "info hcfs: FUSE passthrough refused (%s): reads go through hcfs\n",
                        strerror(id < 0 ? -id : EIO));
                r = 0;
                break;
            }
            e = calloc(1, sizeof(*e));
            if (e)
                e->rel = strdup(rel);
            if (!e || !e->rel) {
                free(e);
                b->close_id(id);
                r = -ENOMEM;
                break;
            }
            e->dev = st.st_dev;
            e->ino = st.st_ino;
            e->id = id;
            e->refs = 1;
            e->next = b->list;
            b->list = e;
            r = id;
            break;
        }
        /* An older version of rel is open through passthrough: the kernel keeps its
         * backing file on the inode until its last reader closes. Wait for that, a slice
         * at a time, so that an interrupt or the unmount is noticed. */
        if (stop && stop(arg)) {
            r = -EINTR;
            break;
        }
        struct timespec now, slice;
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > deadline.tv_sec ||
            (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
            r = -EBUSY;
            break;
        }
        slice = now;
        slice.tv_nsec += 100 * 1000 * 1000;
        if (slice.tv_nsec >= 1000000000L) {
            slice.tv_sec++;
            slice.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&b->freed, &b->lock, &slice);
    }
    pthread_mutex_unlock(&b->lock);
    return r;
}

void
hc_backing_put(struct hc_backing *b, int id)
{
    pthread_mutex_lock(&b->lock);
    for (struct entry **pe = &b->list; *pe; pe = &(*pe)->next) {
        struct entry *e = *pe;
        if (e->id != id)
            continue;
        if (--e->refs == 0) {
            *pe = e->next;
            b->close_id(e->id);
            free(e->rel);
            free(e);
            pthread_cond_broadcast(&b->freed);
        }
        break;
    }
    pthread_mutex_unlock(&b->lock);
}

int
hc_backing_enabled(struct hc_backing *b)
{
    pthread_mutex_lock(&b->lock);
    int on = b->enabled;
    pthread_mutex_unlock(&b->lock);
    return on;
}
