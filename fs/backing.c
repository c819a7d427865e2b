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
    char *name; /* the cache file's name: one version of rel's output */
    dev_t dev;
    ino_t ino;
    int id; /* 0: this path's opens go without passthrough */
    int refs;
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

static void
entry_free(struct entry *e)
{
    free(e->rel);
    free(e->name);
    free(e);
}

void
hc_backing_free(struct hc_backing *b)
{
    if (!b)
        return;
    while (b->list) {
        struct entry *e = b->list;
        b->list = e->next;
        entry_free(e);
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

/* Refusals that will not change for this mount: no CAP_SYS_ADMIN, no passthrough in the
 * kernel, a backing file it cannot stack on. Anything else (ENOMEM, EMFILE) is passing. */
static int
refused_for_good(int err)
{
    return err == EPERM || err == EOPNOTSUPP || err == ENOTTY || err == EINVAL || err == ELOOP ||
           err == ENOSYS;
}

/* A new entry for rel (b->lock held): registers fd unless passthrough is off. */
static int
add(struct hc_backing *b, const char *rel, int fd, const char *name, const struct stat *st)
{
    int id = 0;
    if (b->enabled) {
        id = b->open_id(fd);
        if (id <= 0) {
            int err = id < 0 ? -id : EIO;
            if (refused_for_good(err)) {
                b->enabled = 0;
                fprintf(stderr, "info hcfs: FUSE passthrough refused (%s): reads go through hcfs\n",
                        strerror(err));
            }
            id = 0; /* this path's opens go without passthrough until they are all closed */
        }
    }
    if (id == 0 && !b->enabled)
        return 0; /* nothing to share: every open of every new path goes without */
    struct entry *e = calloc(1, sizeof(*e));
    if (e) {
        e->rel = strdup(rel);
        e->name = strdup(name ? name : "");
    }
    if (!e || !e->rel || !e->name) {
        if (e)
            entry_free(e);
        if (id > 0)
            b->close_id(id);
        return -ENOMEM;
    }
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    e->id = id;
    e->refs = 1;
    e->next = b->list;
    b->list = e;
    return id;
}

/* Can this open share e? Without a backing file (id 0) any version can: the kernel only
 * minds mixing passthrough and caching opens. */
static int
same_version(const struct entry *e, const struct stat *st, const char *name)
{
    return e->id == 0 || (e->dev == st->st_dev && e->ino == st->st_ino) ||
           (name && *name && !strcmp(e->name, name));
}

int
hc_backing_get(struct hc_backing *b, const char *rel, int fd, const char *name, int (*stop)(void *),
               int (*holds)(void *, const char *), void *arg, int timeout_s)
{
    struct stat st;
    struct timespec deadline;
    int r, asked = 0;

    if (fstat(fd, &st) < 0)
        return -errno;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_s > 0 ? timeout_s : 60;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        /* The path's current opens decide first, whatever became of passthrough since:
         * an inode with a backing file accepts only opens naming it. */
        struct entry *e = find(b, rel);
        if (e && same_version(e, &st, name)) {
            e->refs++;
            r = e->id;
            break;
        }
        if (!e) {
            r = add(b, rel, fd, name, &st);
            break;
        }
        /* An older version of rel is open: with passthrough the kernel keeps its backing
         * file on the inode until its last reader closes (without, the pages cached for
         * it would be served). Wait for that, a slice at a time, so that an interrupt or
         * the unmount is noticed. */
        if (stop && stop(arg)) {
            r = -EINTR;
            break;
        }
        struct timespec now, slice;
        clock_gettime(CLOCK_REALTIME, &now);
        if (!asked && holds) {
            asked = 1;
            /* Asked without the lock: it reads /proc, and the entry may go meanwhile
             * (the loop looks again). */
            pthread_mutex_unlock(&b->lock);
            int self = holds(arg, rel);
            pthread_mutex_lock(&b->lock);
            if (self && deadline.tv_sec > now.tv_sec + 2) {
                deadline = now;
                deadline.tv_sec += 2;
            }
            continue;
        }
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
hc_backing_put(struct hc_backing *b, const char *rel)
{
    pthread_mutex_lock(&b->lock);
    for (struct entry **pe = &b->list; *pe; pe = &(*pe)->next) {
        struct entry *e = *pe;
        if (strcmp(e->rel, rel))
            continue;
        if (--e->refs == 0) {
            *pe = e->next;
            if (e->id > 0)
                b->close_id(e->id);
            entry_free(e);
            pthread_cond_broadcast(&b->freed);
        }
        break;
    }
    pthread_mutex_unlock(&b->lock);
}
