/* backing.c: see backing.h. A short list: it holds the paths open right now and, for a
 * moment after, the ones just closed. */
#include "backing.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

struct entry {
    struct entry *next;
    char *rel;
    char *name; /* the cache file's name: one version of rel's output */
    dev_t dev;
    ino_t ino;
    int id;   /* 0: this path's opens go without passthrough */
    int fd;   /* the registered file (id > 0), for the opens that reuse the id; else -1 */
    int refs; /* 0: lingering since idle_since, until the reaper or another version ends it */
    struct timespec idle_since;
};

/* At most this many registrations linger at once (each holds a descriptor and a kernel
 * id): a pass over a big folder keeps the most recent ones, not thousands. */
#define LINGER_MAX 64

struct hc_backing {
    pthread_mutex_t lock;
    pthread_cond_t freed; /* an entry lost its last open: a newer version may go on */
    pthread_cond_t work;  /* for the reaper: an entry started lingering, or stop */
    struct entry *list;
    int (*open_id)(void *ctx, int fd);
    void (*close_id)(void *ctx, int id);
    void *ctx;
    int enabled;
    int linger_ms;
    int reaper_on, stopping;
    int reaper_asleep; /* waiting with no deadline: nothing lingers */
    pthread_t reaper;
    uint64_t registered, reused;
};

static void *reaper_main(void *arg);

struct hc_backing *
hc_backing_new(int (*open_id)(void *ctx, int fd), void (*close_id)(void *ctx, int id), void *ctx,
               int linger_ms)
{
    struct hc_backing *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    pthread_mutex_init(&b->lock, NULL);
    hc_cond_init_steady(&b->freed);
    hc_cond_init_steady(&b->work); /* idle_since and the reaper's waits: hc_steady_now */
    b->open_id = open_id;
    b->close_id = close_id;
    b->ctx = ctx;
    b->enabled = 1;
    b->linger_ms = linger_ms > 0 ? linger_ms : 0;
    if (b->linger_ms && pthread_create(&b->reaper, NULL, reaper_main, b) == 0)
        b->reaper_on = 1;
    else
        b->linger_ms = 0; /* no reaper: nothing may linger */
    return b;
}

static void
entry_free(struct entry *e)
{
    if (e->fd >= 0)
        close(e->fd);
    free(e->rel);
    free(e->name);
    free(e);
}

/* Unlinks *pe and gives its id back to the kernel (b->lock held). */
static void
entry_end(struct hc_backing *b, struct entry **pe)
{
    struct entry *e = *pe;
    *pe = e->next;
    if (e->id > 0)
        b->close_id(b->ctx, e->id);
    entry_free(e);
}

/* Tells the reaper to stop and waits for it (once; not under b->lock). */
static void
reaper_end(struct hc_backing *b)
{
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->lock);
    if (b->reaper_on)
        pthread_join(b->reaper, NULL);
    b->reaper_on = 0;
}

/* Ends the reaper and every lingering entry; entries still open stay until their put. */
void
hc_backing_stop(struct hc_backing *b)
{
    if (!b)
        return;
    reaper_end(b);
    pthread_mutex_lock(&b->lock);
    b->linger_ms = 0;
    for (struct entry **pe = &b->list; *pe;) {
        if ((*pe)->refs == 0)
            entry_end(b, pe);
        else
            pe = &(*pe)->next;
    }
    pthread_cond_broadcast(&b->freed);
    pthread_mutex_unlock(&b->lock);
}

void
hc_backing_free(struct hc_backing *b)
{
    if (!b)
        return;
    reaper_end(b);
    while (b->list) {
        struct entry *e = b->list;
        b->list = e->next;
        entry_free(e); /* the ids died with the FUSE connection */
    }
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->freed);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static struct entry **
find_link(struct hc_backing *b, const char *rel)
{
    struct entry **pe = &b->list;
    while (*pe && strcmp((*pe)->rel, rel))
        pe = &(*pe)->next;
    return pe;
}

static struct entry *
find(struct hc_backing *b, const char *rel)
{
    return *find_link(b, rel);
}

/* Gives back the ids of the entries that lingered long enough, then sleeps until the next
 * one is due. */
static void *
reaper_main(void *arg)
{
    struct hc_backing *b = arg;
    pthread_mutex_lock(&b->lock);
    while (!b->stopping) {
        struct timespec now;
        long long next = -1;
        hc_steady_now(&now);
        for (struct entry **pe = &b->list; *pe;) {
            struct entry *e = *pe;
            long long idle = e->refs == 0 ? hc_ms_between(&e->idle_since, &now) : -1;
            if (e->refs == 0 && idle >= b->linger_ms) {
                entry_end(b, pe);
                continue;
            }
            if (e->refs == 0 && (next < 0 || b->linger_ms - idle < next))
                next = b->linger_ms - idle;
            pe = &e->next;
        }
        if (next < 0) {
            b->reaper_asleep = 1;
            pthread_cond_wait(&b->work, &b->lock);
            b->reaper_asleep = 0;
            continue;
        }
        struct timespec until = now;
        hc_timespec_add_ms(&until, next + 1);
        (void)pthread_cond_timedwait(&b->work, &b->lock, &until);
    }
    pthread_mutex_unlock(&b->lock);
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
        id = b->open_id(b->ctx, fd);
        if (id > 0)
            b->registered++;
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
        e->fd = -1;
        e->rel = strdup(rel);
        e->name = strdup(name ? name : "");
        /* Its own descriptor: later opens of this version take a duplicate instead of
         * opening the cache file and registering it again. */
        if (id > 0 && b->linger_ms)
            e->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    }
    if (!e || !e->rel || !e->name) {
        if (e)
            entry_free(e);
        if (id > 0)
            b->close_id(b->ctx, id);
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

/* Was e's file removed from the cache since (evicted)? A lingering registration of it is
 * not reused: the file's blocks should go, and the job that made it runs again. */
static int
gone(const struct entry *e)
{
    struct stat st;
    return e->fd >= 0 && fstat(e->fd, &st) == 0 && st.st_nlink == 0;
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
hc_backing_reuse(struct hc_backing *b, const char *rel, const char *name, int *fd)
{
    int id = 0;
    if (!name || !*name)
        return 0;
    pthread_mutex_lock(&b->lock);
    struct entry *e = find(b, rel);
    if (e && e->id > 0 && e->fd >= 0 && !strcmp(e->name, name) && !gone(e)) {
        int nfd = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);
        if (nfd >= 0) {
            e->refs++;
            b->reused++;
            *fd = nfd;
            id = e->id;
        }
    }
    pthread_mutex_unlock(&b->lock);
    return id;
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
    hc_deadline_in(&deadline, (timeout_s > 0 ? timeout_s : 60) * 1000LL);
    pthread_mutex_lock(&b->lock);
    for (;;) {
        /* The path's current opens decide first, whatever became of passthrough since:
         * an inode with a backing file accepts only opens naming it. */
        struct entry **pe = find_link(b, rel);
        struct entry *e = *pe;
        if (e && same_version(e, &st, name) && !(e->refs == 0 && gone(e))) {
            e->refs++;
            r = e->id;
            break;
        }
        if (e && e->refs == 0) {
            entry_end(b, pe); /* an older version that only lingered: no reader to wait for */
            e = NULL;
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
        hc_steady_now(&now);
        if (!asked && holds) {
            asked = 1;
            /* Asked without the lock: it reads /proc, and the entry may go meanwhile
             * (the loop looks again). */
            pthread_mutex_unlock(&b->lock);
            int self = holds(arg, rel);
            pthread_mutex_lock(&b->lock);
            if (self && hc_ms_between(&now, &deadline) > 2000) {
                deadline = now;
                hc_timespec_add_ms(&deadline, 2000);
            }
            continue;
        }
        if (hc_ms_between(&now, &deadline) <= 0) {
            r = -EBUSY;
            break;
        }
        slice = now;
        hc_timespec_add_ms(&slice, 100);
        (void)pthread_cond_timedwait(&b->freed, &b->lock, &slice);
    }
    pthread_mutex_unlock(&b->lock);
    return r;
}

/* Ends the longest-lingering entries while more than max linger (b->lock held). */
static void
end_oldest_over(struct hc_backing *b, int max)
{
    for (;;) {
        struct entry **oldest = NULL;
        int n = 0;
        for (struct entry **pe = &b->list; *pe; pe = &(*pe)->next) {
            struct entry *e = *pe;
            if (e->refs)
                continue;
            n++;
            if (!oldest || e->idle_since.tv_sec < (*oldest)->idle_since.tv_sec ||
                (e->idle_since.tv_sec == (*oldest)->idle_since.tv_sec &&
                 e->idle_since.tv_nsec < (*oldest)->idle_since.tv_nsec))
                oldest = pe;
        }
        if (n <= max)
            return;
        entry_end(b, oldest);
    }
}

void
hc_backing_stats(struct hc_backing *b, uint64_t *registered, uint64_t *reused, int *lingering)
{
    int n = 0;
    pthread_mutex_lock(&b->lock);
    for (struct entry *e = b->list; e; e = e->next)
        n += e->refs == 0;
    *registered = b->registered;
    *reused = b->reused;
    *lingering = n;
    pthread_mutex_unlock(&b->lock);
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
            if (e->id > 0 && e->fd >= 0 && b->linger_ms && !b->stopping) {
                hc_steady_now(&e->idle_since);
                end_oldest_over(b, LINGER_MAX);
                /* A reaper already waiting for an earlier deadline looks again then: this
                 * entry's is later. Waking it on every close would cost a switch each. */
                if (b->reaper_asleep)
                    pthread_cond_signal(&b->work);
            } else {
                entry_end(b, pe);
            }
            pthread_cond_broadcast(&b->freed);
        }
        break;
    }
    pthread_mutex_unlock(&b->lock);
}
