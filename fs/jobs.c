/* jobs.c: job table, worker pool and waiting readers (see jobs.h).
 *
 * One mutex guards everything here and one condition variable is broadcast on every change
 * of a job's state: jobs are few and long (seconds), so contention is not an issue, and a
 * single lock keeps the reference counting obviously right. Nothing slow (hashing, probing,
 * the pipeline, the cache's SQLite) runs under the lock.
 */
#include "jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "pipeline.h"
#include "platform.h"
#include "strhash.h"
#include "tcbackend.h"

#define NBUCKETS 4096
#define WAIT_SLICE_MS 100

#define ST_MTIM(st) HC_ST_MTIM(st)
#define ST_CTIM(st) HC_ST_CTIM(st)

/* Which version of a file a job is for. */
struct sig {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

struct job {
    struct job *hnext; /* hash chain (only the latest job of a path is in the table) */
    struct job *qnext; /* queue */
    char *rel;
    struct sig sig;
    enum hc_job_state state;
    int in_table, queued;
    int refs; /* table + queue/worker + waiting readers */
    int waiters;
    int opened;    /* its output was handed to a reader before */
    int announced; /* ended, and the kernel's cached attributes of its path dropped since */
    int pinned;    /* holds a pin of key in the cache until its waiting readers hold theirs */
    int stale;     /* failed because its version of the file is gone or was rewritten */
    volatile int cancel;
    int has_key;
    char key[HC_TC_KEY_LEN + 1];
    uint64_t done, total;
    char *out_path;
    uint64_t size;
    char error[256];
};

struct hc_jobs {
    struct hc_jobs_cfg cfg;
    char *data_dir;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *table[NBUCKETS];
    struct job *qhead, *qtail;
    struct job **running; /* per worker, the job it runs (NULL when idle) */
    pthread_t *threads;
    int nthreads_started;
    int stopping;
    struct hc_jobs_stats st;
};

struct worker_arg {
    struct hc_jobs *j;
    int idx;
};

static void
sig_of(const struct stat *st, struct sig *s)
{
    memset(s, 0, sizeof(*s));
    s->dev = st->st_dev;
    s->ino = st->st_ino;
    s->size = st->st_size;
    s->mtime = ST_MTIM(st);
    s->ctime = ST_CTIM(st);
}

static int
sig_eq(const struct sig *a, const struct sig *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

const char *
hc_job_state_name(enum hc_job_state s)
{
    switch (s) {
    case HC_JOB_QUEUED:
        return "pending";
    case HC_JOB_RUNNING:
        return "running";
    case HC_JOB_DONE:
        return "done";
    case HC_JOB_FAILED:
        return "failed";
    default:
        return "none";
    }
}

static void
job_unref_n_locked(struct job *jb, int n)
{
    jb->refs -= n;
    if (jb->refs > 0)
        return;
    free(jb->rel);
    free(jb->out_path);
    free(jb);
}

static void
job_unref_locked(struct job *jb)
{
    job_unref_n_locked(jb, 1);
}

static struct job *
table_get_locked(struct hc_jobs *j, const char *rel)
{
    for (struct job *jb = j->table[hc_fs_strhash(rel) % NBUCKETS]; jb; jb = jb->hnext)
        if (strcmp(jb->rel, rel) == 0)
            return jb;
    return NULL;
}

static void
queue_remove_locked(struct hc_jobs *j, struct job *jb)
{
    struct job *prev = NULL;
    for (struct job *q = j->qhead; q; prev = q, q = q->qnext) {
        if (q != jb)
            continue;
        if (prev)
            prev->qnext = q->qnext;
        else
            j->qhead = q->qnext;
        if (j->qtail == q)
            j->qtail = prev;
        q->qnext = NULL;
        q->queued = 0;
        return;
    }
}

static void
queue_push_locked(struct hc_jobs *j, struct job *jb, int front)
{
    jb->qnext = NULL;
    if (!j->qhead) {
        j->qhead = j->qtail = jb;
    } else if (front) {
        jb->qnext = j->qhead;
        j->qhead = jb;
    } else {
        j->qtail->qnext = jb;
        j->qtail = jb;
    }
    jb->queued = 1;
}

/* Removes the table's job for rel (if any); a queued job nobody waits for is dropped: it
 * was for a version of the file that no longer exists. */
static void
table_drop_locked(struct hc_jobs *j, const char *rel)
{
    struct job **pp = &j->table[hc_fs_strhash(rel) % NBUCKETS];
    for (; *pp; pp = &(*pp)->hnext) {
        struct job *jb = *pp;
        if (strcmp(jb->rel, rel) != 0)
            continue;
        *pp = jb->hnext;
        jb->hnext = NULL;
        jb->in_table = 0;
        int drop = 1; /* the table's reference */
        if (jb->state == HC_JOB_QUEUED && jb->waiters == 0 && jb->queued) {
            queue_remove_locked(j, jb);
            jb->state = HC_JOB_FAILED;
            snprintf(jb->error, sizeof(jb->error), "hcfs: superseded by a newer version");
            drop++; /* and the queue's */
        }
        job_unref_n_locked(jb, drop);
        return;
    }
}

/* A new queued job for rel at version *s, in the table and the queue. */
static struct job *
job_new_locked(struct hc_jobs *j, const char *rel, const struct sig *s, int front)
{
    struct job *jb = calloc(1, sizeof(*jb));
    if (!jb)
        return NULL;
    jb->rel = strdup(rel);
    if (!jb->rel) {
        free(jb);
        return NULL;
    }
    jb->sig = *s;
    jb->state = HC_JOB_QUEUED;
    table_drop_locked(j, rel);
    uint32_t h = hc_fs_strhash(rel) % NBUCKETS;
    jb->hnext = j->table[h];
    j->table[h] = jb;
    jb->in_table = 1;
    jb->refs = 2; /* table + queue */
    queue_push_locked(j, jb, front);
    j->st.queued++;
    pthread_cond_broadcast(&j->cond);
    return jb;
}

static int
input_stat(struct hc_jobs *j, const char *rel, struct stat *st)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", j->data_dir, rel) >= sizeof(path))
        return -ENAMETOOLONG;
    if (lstat(path, st) < 0)
        return -errno;
    if (!S_ISREG(st->st_mode))
        return -ENOENT;
    return 0;
}

int
hc_jobs_prefetch(struct hc_jobs *j, const char *rel)
{
    struct stat st;
    struct sig s;
    int r = input_stat(j, rel, &st);
    if (r < 0)
        return r;
    sig_of(&st, &s);
    pthread_mutex_lock(&j->lock);
    if (!j->stopping) {
        struct job *jb = table_get_locked(j, rel);
        if (!jb || !sig_eq(&jb->sig, &s))
            r = job_new_locked(j, rel, &s, 0) ? 0 : -ENOMEM;
    }
    pthread_mutex_unlock(&j->lock);
    return r;
}

/* Takes the job's own pin off it (j->lock held): key gets what to give to hc_tc_unpin once
 * the lock is released ("" when the job held none). */
static void
pin_off_locked(struct job *jb, char key[HC_TC_KEY_LEN + 1])
{
    if (jb->pinned) {
        memcpy(key, jb->key, HC_TC_KEY_LEN + 1);
        jb->pinned = 0;
    }
}

/* A reader is done with jb: called with j->lock held, returns with it released. The job's
 * pin goes with its last waiting reader, who holds a pin of its own by then; it is given
 * back after the lock (the cache's lock may be held by slow work: eviction, a commit). */
static void
leave_unlock(struct hc_jobs *j, struct job *jb)
{
    char key[HC_TC_KEY_LEN + 1] = "";
    jb->waiters--;
    j->st.waiting--;
    if (jb->waiters == 0 && jb->announced)
        pin_off_locked(jb, key);
    job_unref_locked(jb);
    pthread_mutex_unlock(&j->lock);
    if (key[0])
        hc_tc_unpin(j->cfg.tc, key);
}

int
hc_jobs_open_output(struct hc_jobs *j, const char *rel, int (*stop)(void *), void *stop_ctx,
                    int *fd, uint64_t *size, int *keep_cache, char *pin_key, char *err,
                    size_t errlen)
{
    int r = 0;
    if (err && errlen)
        err[0] = '\0';

    /* Three rounds at most: the output of a DONE job can be evicted between the job's end
     * and our open (then a new job runs), or the input rewritten while its job ran. */
    for (int round = 0; round < 3; round++) {
        struct stat st;
        struct sig s;
        r = input_stat(j, rel, &st);
        if (r < 0)
            return r;
        sig_of(&st, &s);

        pthread_mutex_lock(&j->lock);
        if (j->stopping) {
            pthread_mutex_unlock(&j->lock);
            return -EINTR;
        }
        struct job *jb = table_get_locked(j, rel);
        if (!jb || !sig_eq(&jb->sig, &s) || jb->state == HC_JOB_FAILED) {
            jb = job_new_locked(j, rel, &s, 1);
            if (!jb) {
                pthread_mutex_unlock(&j->lock);
                return -ENOMEM;
            }
        } else if (jb->state == HC_JOB_QUEUED && jb->queued && j->qhead != jb) {
            /* Someone is waiting now: a prefetched job goes first. */
            queue_remove_locked(j, jb);
            queue_push_locked(j, jb, 1);
        }
        jb->refs++;
        jb->waiters++;
        j->st.waiting++;
        while ((jb->state == HC_JOB_QUEUED || jb->state == HC_JOB_RUNNING ||
                (jb->state == HC_JOB_DONE && !jb->announced)) &&
               !j->stopping) {
            if (stop && stop(stop_ctx)) {
                r = -EINTR;
                break;
            }
            struct timespec ts;
            hc_deadline_in(&ts, WAIT_SLICE_MS);
            pthread_cond_timedwait(&j->cond, &j->lock, &ts);
        }
        if (r == 0 && j->stopping && jb->state != HC_JOB_DONE && jb->state != HC_JOB_FAILED)
            r = -EINTR;
        if (r < 0) {
            leave_unlock(j, jb);
            return r;
        }
        if (jb->state == HC_JOB_FAILED && jb->stale) {
            /* The file this job read is gone or was rewritten while it ran: wait for the
             * version the path has now (or say ENOENT), not EIO. */
            leave_unlock(j, jb);
            r = -EAGAIN;
            continue;
        }
        if (jb->state == HC_JOB_FAILED) {
            if (err && errlen)
                snprintf(err, errlen, "%s", jb->error);
            leave_unlock(j, jb);
            return -EIO;
        }
        /* DONE. Pinned before it is opened, the output cannot be evicted under the reader
         * (a stat() would then say "not done"); the job's own pin held it until now. */
        char *path = strdup(jb->out_path ? jb->out_path : "");
        char key[HC_TC_KEY_LEN + 1] = "";
        if (jb->has_key)
            memcpy(key, jb->key, sizeof(key));
        uint64_t sz = jb->size;
        int kc = jb->opened;
        pthread_mutex_unlock(&j->lock);
        int pinned = key[0] && fd && pin_key && hc_tc_pin(j->cfg.tc, key) == 0;
        int ofd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        int oerr = !path ? ENOMEM : ofd < 0 ? errno : 0;
        free(path);
        if (pinned && (ofd < 0 || !fd || !pin_key)) {
            hc_tc_unpin(j->cfg.tc, key);
            pinned = 0;
        }
        pthread_mutex_lock(&j->lock);
        if (ofd >= 0) {
            struct stat ost;
            if (fstat(ofd, &ost) == 0)
                sz = (uint64_t)ost.st_size;
            jb->opened = 1;
            leave_unlock(j, jb);
            if (fd)
                *fd = ofd;
            else
                close(ofd);
            if (pin_key)
                memcpy(pin_key, pinned ? key : "", pinned ? sizeof(key) : 1);
            if (size)
                *size = sz;
            if (keep_cache)
                *keep_cache = kc;
            return 0;
        }
        if (oerr != ENOENT) {
            /* Out of descriptors (EMFILE, ENFILE), no memory: not an eviction, and a new
             * job would not help. */
            leave_unlock(j, jb);
            return -oerr;
        }
        /* Evicted (or removed by hand) since the job ended: forget the job, run a new one. */
        if (jb->in_table)
            table_drop_locked(j, rel);
        leave_unlock(j, jb);
        r = -oerr;
    }
    if (err && errlen)
        snprintf(err, errlen, "%s",
                 r == -EAGAIN ? "hcfs: the input keeps changing while it is upscaled"
                              : "hcfs: the output keeps disappearing from the cache");
    return -EIO;
}

int
hc_jobs_done_name(struct hc_jobs *j, const char *rel, const struct stat *st, char *name, size_t len,
                  char key[HC_TC_KEY_LEN + 1])
{
    struct sig s;
    int r = -ENOENT;
    sig_of(st, &s);
    pthread_mutex_lock(&j->lock);
    struct job *jb = table_get_locked(j, rel);
    if (jb && sig_eq(&jb->sig, &s) && jb->state == HC_JOB_DONE && jb->announced && jb->out_path &&
        jb->has_key) {
        const char *b = strrchr(jb->out_path, '/');
        b = b ? b + 1 : jb->out_path;
        if (strlen(b) < len) {
            memcpy(name, b, strlen(b) + 1);
            memcpy(key, jb->key, HC_TC_KEY_LEN + 1);
            r = 0;
        }
    }
    pthread_mutex_unlock(&j->lock);
    return r;
}

void
hc_jobs_status(struct hc_jobs *j, const char *rel, const struct stat *st, struct hc_job_status *s)
{
    struct sig sg;
    sig_of(st, &sg);
    memset(s, 0, sizeof(*s));
    pthread_mutex_lock(&j->lock);
    struct job *jb = table_get_locked(j, rel);
    int found = jb && sig_eq(&jb->sig, &sg);
    char out[PATH_MAX] = "";
    if (found) {
        s->state = jb->state;
        s->done = jb->done;
        s->total = jb->total;
        s->size = jb->size;
        snprintf(s->error, sizeof(s->error), "%s", jb->error);
        if (jb->state == HC_JOB_DONE && jb->out_path)
            snprintf(out, sizeof(out), "%s", jb->out_path);
    }
    pthread_mutex_unlock(&j->lock);
    /* Evicted since the job ended: not done any more (the next open runs it again), and
     * the size is an estimate again, as for a version never upscaled. */
    struct stat ost;
    if (found && s->state == HC_JOB_DONE &&
        (stat(out, &ost) != 0 || (uint64_t)ost.st_size != s->size)) {
        memset(s, 0, sizeof(*s));
        return;
    }
    uint64_t size;
    if (!found && hc_pathmap_get(j->cfg.paths, rel, st, &size) == 0) {
        s->state = HC_JOB_DONE;
        s->size = size;
    }
}

void
hc_jobs_stats(struct hc_jobs *j, struct hc_jobs_stats *s)
{
    pthread_mutex_lock(&j->lock);
    *s = j->st;
    s->running = 0;
    for (int i = 0; i < j->cfg.nworkers; i++)
        s->running += j->running[i] != NULL;
    pthread_mutex_unlock(&j->lock);
}

static void
job_progress(void *ctx, uint64_t done, uint64_t total)
{
    struct job *jb = ((void **)ctx)[0];
    struct hc_jobs *j = ((void **)ctx)[1];
    pthread_mutex_lock(&j->lock);
    jb->done = done;
    jb->total = total;
    pthread_mutex_unlock(&j->lock);
}

static void
job_finish(struct hc_jobs *j, struct job *jb, int ok, const char *out_path, uint64_t size,
           const char *error)
{
    pthread_mutex_lock(&j->lock);
    if (ok) {
        jb->state = HC_JOB_DONE;
        free(jb->out_path);
        jb->out_path = strdup(out_path);
        jb->size = size;
        if (jb->total)
            jb->done = jb->total;
        if (!jb->out_path) {
            jb->state = HC_JOB_FAILED;
            snprintf(jb->error, sizeof(jb->error), "hcfs: out of memory");
        }
    } else {
        jb->state = HC_JOB_FAILED;
        snprintf(jb->error, sizeof(jb->error), "%s", error && *error ? error : "hcfs: job failed");
    }
    if (jb->state == HC_JOB_DONE)
        j->st.done++;
    else
        j->st.failed++;
    struct sig sg = jb->sig;
    int stopping = j->stopping;
    pthread_mutex_unlock(&j->lock);
    /* Then the kernel forgets what it cached for the path (the size estimate), and only
     * then are the waiting readers let go: a stat() that came in between was answered
     * with the new state, and the fstat() after a reader's open sees the exact size.
     * Not while stopping: the readers are gone, and the FUSE loop that would serve the
     * reads on_end's page invalidation may wait for has ended (hcfs would hang for good). */
    if (j->cfg.on_end && !stopping)
        j->cfg.on_end(j->cfg.on_end_ctx, jb->rel); /* rel never changes: no lock needed */
    char unpin[HC_TC_KEY_LEN + 1] = "";
    pthread_mutex_lock(&j->lock);
    jb->announced = 1;
    if (jb->state != HC_JOB_DONE || jb->waiters == 0)
        pin_off_locked(jb, unpin);
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->lock);
    if (unpin[0])
        hc_tc_unpin(j->cfg.tc, unpin);
    if (ok && j->cfg.paths) {
        struct stat st;
        memset(&st, 0, sizeof(st));
        st.st_dev = sg.dev;
        st.st_ino = sg.ino;
        st.st_size = sg.size;
        ST_MTIM(&st) = sg.mtime;
        ST_CTIM(&st) = sg.ctime;
        hc_pathmap_put(j->cfg.paths, jb->rel, &st, out_path, size);
    }
}

/* Another running job with the same key, if any (then this one waits for it). */
static struct job *
running_with_key_locked(struct hc_jobs *j, const struct job *self, const char *key)
{
    for (int i = 0; i < j->cfg.nworkers; i++) {
        struct job *o = j->running[i];
        if (o && o != self && o->has_key && strcmp(o->key, key) == 0)
            return o;
    }
    return NULL;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
job_run(struct hc_jobs *j, struct job *jb)
{
    char path[PATH_MAX], fdpath[64], key[HC_TC_KEY_LEN + 1];
    char err[256] = "";
    struct stat st0, st1;
    struct hc_image_info info;
    struct hc_tc_entry e;
    struct hc_client *derived = NULL;
    int fd = -1, r, gone = 0, stale = 0, have_st0 = 0;
    double t0 = now_s(), t_run = t0, t_ran = t0;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", j->data_dir, jb->rel) >= sizeof(path)) {
        snprintf(err, sizeof(err), "hcfs: path too long");
        goto fail;
    }
    /* One descriptor for hashing and decoding: a rename or a replacement of the file after
     * this point cannot mix two versions in one job. The file was regular when the job was
     * queued, but may have been replaced since: O_NONBLOCK and O_NOFOLLOW so that a FIFO
     * (or a symlink to one) renamed over it cannot block this worker, and unmount, forever. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0 && (errno == ENOENT || errno == ELOOP)) {
        /* Renamed or removed since it was queued (Finder renames after clearing its mark,
         * rsync after closing): nothing failed, and the new name has its own job. */
        snprintf(err, sizeof(err), "hcfs: the input is gone (renamed or removed)");
        gone = 1;
        goto fail;
    }
    if (fd < 0 || fstat(fd, &st0) < 0) {
        snprintf(err, sizeof(err), "hcfs: cannot open input: %s", strerror(errno));
        goto fail;
    }
    have_st0 = 1;
    if (!S_ISREG(st0.st_mode)) {
        snprintf(err, sizeof(err), "hcfs: the input is gone (replaced by a non-regular file)");
        gone = 1;
        goto fail;
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    pthread_mutex_lock(&j->lock);
    sig_of(&st0, &jb->sig); /* the job is for the version it reads */
    pthread_mutex_unlock(&j->lock);
    hc_platform_fd_path(fd, fdpath, sizeof(fdpath));

    r = hc_probe_file(fdpath, &info);
    if (r < 0) {
        snprintf(err, sizeof(err), "%s", hc_last_error());
        goto fail;
    }
    struct hc_tc_params p = {
        .filter = j->cfg.filter,
        .scale = j->cfg.scale,
        .format = hc_format_writable(info.format),
        .quality = hc_format_writable(info.format) == HC_FORMAT_JPEG ? j->cfg.quality : 0,
        .pipeline_version = HC_PIPELINE_VERSION,
    };
    r = hc_tc_key_file(fdpath, &p, key);
    if (r < 0) {
        snprintf(err, sizeof(err), "%s", hc_last_error());
        goto fail;
    }

    /* From here to its end the job keeps its output from eviction: a reader waiting for it
     * opens it after the commit (a cache smaller than the outputs in flight would evict
     * them in between). */
    int pin = hc_tc_pin(j->cfg.tc, key) == 0;
    /* Same bytes already being upscaled under another name: share that run. */
    pthread_mutex_lock(&j->lock);
    struct job *twin = running_with_key_locked(j, jb, key);
    memcpy(jb->key, key, sizeof(key));
    jb->has_key = 1;
    jb->pinned = pin;
    if (twin) {
        twin->refs++;
        j->st.shared++;
        while ((twin->state == HC_JOB_QUEUED || twin->state == HC_JOB_RUNNING) && !jb->cancel) {
            struct timespec ts;
            hc_deadline_in(&ts, WAIT_SLICE_MS);
            pthread_cond_timedwait(&j->cond, &j->lock, &ts);
        }
        int ok = twin->state == HC_JOB_DONE;
        char *tp = ok && twin->out_path ? strdup(twin->out_path) : NULL;
        uint64_t tsz = twin->size;
        job_unref_locked(twin);
        pthread_mutex_unlock(&j->lock);
        if (tp) {
            close(fd);
            job_finish(j, jb, 1, tp, tsz, NULL);
            free(tp);
            return;
        }
        if (jb->cancel) {
            snprintf(err, sizeof(err), "hcfs: cancelled");
            goto fail;
        }
        /* The twin failed or was cancelled: run ourselves (maybe another service answers). */
    } else {
        pthread_mutex_unlock(&j->lock);
    }

    r = hc_tc_lookup(j->cfg.tc, key, &e);
    if (r == 0 && e.state == HC_TC_DONE && access(e.path, R_OK) == 0) {
        pthread_mutex_lock(&j->lock);
        j->st.cache_hits++;
        pthread_mutex_unlock(&j->lock);
        close(fd);
        job_finish(j, jb, 1, e.path, e.size, NULL);
        return;
    }
    r = hc_tc_begin(j->cfg.tc, key, p.format, &e);
    if (r < 0) {
        snprintf(err, sizeof(err), "%s", hc_last_error());
        goto fail;
    }

    struct hc_upscale_opts o;
    hc_upscale_opts_default(&o);
    o.scale = j->cfg.scale;
    o.filter = j->cfg.filter;
    o.tile = j->cfg.tile;
    o.writer.format = p.format;
    o.writer.quality = j->cfg.quality;
    o.limits = j->cfg.limits;
    o.nthreads = j->cfg.nthreads;
    void *pctx[2] = {jb, j};
    o.progress = job_progress;
    o.progress_ctx = pctx;
    o.cancel = &jb->cancel;

    struct hc_tcbackend tcb = {.tc = j->cfg.tc};
    int tcb_on = 0;
    const struct hc_tile_backend *be = NULL;
    void *be_ctx = NULL;
    if (j->cfg.client) {
        r = hc_client_derive(j->cfg.client, &jb->cancel, &derived);
        if (r < 0) {
            snprintf(err, sizeof(err), "hcfs: out of memory");
            hc_tc_fail(j->cfg.tc, key, err);
            goto fail;
        }
        be = &hc_backend_http;
        be_ctx = derived;
        if (j->cfg.store_tiles) {
            memcpy(tcb.key, key, sizeof(key));
            tcb.inner = be;
            tcb.inner_ctx = be_ctx;
            tcb.tile_edge = j->cfg.tile;
            (void)hc_tcbackend_start(&tcb); /* without its thread it stores synchronously */
            tcb_on = 1;
            be = &hc_tcbackend;
            be_ctx = &tcb;
        }
    }
    pthread_mutex_lock(&j->lock);
    j->st.runs++;
    pthread_mutex_unlock(&j->lock);
    fprintf(stderr, "info hcfs: job %s: upscaling (key %s)\n", jb->rel, key);

    t_run = now_s();
    r = hc_upscale_file(fdpath, e.path, &o, be, be_ctx);
    t_ran = now_s();
    if (tcb_on) {
        double tf = 0;
        /* Failed: every tile that arrived must be on disk before hc_tc_fail, so the next
         * job resumes. Done: the cache drops the key's tiles at commit anyway. */
        hc_tcbackend_finish(&tcb, r < 0);
        tcb_on = 0;
        (void)tf;
    }
    pthread_mutex_lock(&j->lock);
    j->st.tiles_from_cache += tcb.tiles_from_cache;
    j->st.tiles_computed += tcb.tiles_computed;
    pthread_mutex_unlock(&j->lock);
    if (r < 0) {
        snprintf(err, sizeof(err), "%s", hc_last_error());
        hc_tc_fail(j->cfg.tc, key, err);
        goto fail;
    }
    /* Written in place while we read it (cp over an existing file, an editor saving): the
     * output mixes versions, so it is thrown away. The writer's release queues a new job. */
    if (fstat(fd, &st1) < 0 || st1.st_size != st0.st_size ||
        ST_MTIM(&st1).tv_sec != ST_MTIM(&st0).tv_sec ||
        ST_MTIM(&st1).tv_nsec != ST_MTIM(&st0).tv_nsec) {
        snprintf(err, sizeof(err), "hcfs: the input changed while it was being upscaled");
        hc_tc_fail(j->cfg.tc, key, err);
        goto fail;
    }
    r = hc_tc_commit(j->cfg.tc, key);
    if (r == 0)
        r = hc_tc_lookup(j->cfg.tc, key, &e);
    if (r < 0 || e.state != HC_TC_DONE) {
        snprintf(err, sizeof(err), "%s", r < 0 ? hc_last_error() : "hcfs: cache lost the output");
        goto fail;
    }
    hc_client_close(derived);
    close(fd);
    fprintf(stderr,
            "info hcfs: job %s: done, %llu bytes in %.3f s (key and cache %.3f s, "
            "pipeline %.3f s; tiles: %llu cached, %llu computed, %llu stored, %llu not)\n",
            jb->rel, (unsigned long long)e.size, now_s() - t0, t_run - t0, t_ran - t_run,
            (unsigned long long)tcb.tiles_from_cache, (unsigned long long)tcb.tiles_computed,
            (unsigned long long)tcb.tiles_stored, (unsigned long long)tcb.tiles_dropped);
    job_finish(j, jb, 1, e.path, e.size, NULL);
    return;

fail:
    hc_client_close(derived);
    /* A failure of a file rewritten meanwhile (a decoder that met the new bytes, or the
     * check above) is the old version's: readers wait for the new one instead. */
    if (!gone && have_st0 &&
        (fstat(fd, &st1) < 0 || st1.st_size != st0.st_size ||
         ST_MTIM(&st1).tv_sec != ST_MTIM(&st0).tv_sec ||
         ST_MTIM(&st1).tv_nsec != ST_MTIM(&st0).tv_nsec))
        stale = 1;
    if (fd >= 0)
        close(fd);
    fprintf(stderr, "%s hcfs: job %s: %s\n", gone ? "info" : "warn", jb->rel, err);
    pthread_mutex_lock(&j->lock);
    jb->stale = gone || stale;
    pthread_mutex_unlock(&j->lock);
    job_finish(j, jb, 0, NULL, 0, err);
    if (gone) {
        pthread_mutex_lock(&j->lock);
        j->st.failed--; /* not a failure: see above */
        j->st.gone++;
        pthread_mutex_unlock(&j->lock);
    }
}

static void *
worker(void *arg)
{
    struct worker_arg *wa = arg;
    struct hc_jobs *j = wa->j;
    int idx = wa->idx;
    free(wa);

    pthread_mutex_lock(&j->lock);
    for (;;) {
        while (!j->qhead && !j->stopping)
            pthread_cond_wait(&j->cond, &j->lock);
        if (j->stopping)
            break;
        struct job *jb = j->qhead;
        queue_remove_locked(j, jb); /* the queue's reference is now the worker's */
        jb->state = HC_JOB_RUNNING;
        j->running[idx] = jb;
        int nrun = 0;
        for (int i = 0; i < j->cfg.nworkers; i++)
            nrun += j->running[i] != NULL;
        if (nrun > j->st.running_max)
            j->st.running_max = nrun;
        pthread_cond_broadcast(&j->cond);
        pthread_mutex_unlock(&j->lock);

        job_run(j, jb);

        pthread_mutex_lock(&j->lock);
        j->running[idx] = NULL;
        job_unref_locked(jb);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

int
hc_jobs_start(const struct hc_jobs_cfg *cfg, struct hc_jobs **out)
{
    struct hc_jobs *j = calloc(1, sizeof(*j));
    int r = 0;
    if (!j)
        return hc_error(-ENOMEM, "hcfs", "out of memory");
    j->cfg = *cfg;
    if (j->cfg.nworkers < 1)
        j->cfg.nworkers = 1;
    j->data_dir = strdup(cfg->data_dir);
    j->running = calloc((size_t)j->cfg.nworkers, sizeof(*j->running));
    j->threads = calloc((size_t)j->cfg.nworkers, sizeof(*j->threads));
    if (!j->data_dir || !j->running || !j->threads) {
        r = hc_error(-ENOMEM, "hcfs", "out of memory");
        goto out;
    }
    j->cfg.data_dir = j->data_dir;
    pthread_mutex_init(&j->lock, NULL);
    hc_cond_init_steady(&j->cond);
    for (int i = 0; i < j->cfg.nworkers; i++) {
        struct worker_arg *wa = malloc(sizeof(*wa));
        if (!wa) {
            r = hc_error(-ENOMEM, "hcfs", "out of memory");
            goto out;
        }
        wa->j = j;
        wa->idx = i;
        int e = pthread_create(&j->threads[i], NULL, worker, wa);
        if (e) {
            free(wa);
            r = hc_error(-e, "hcfs", "cannot start a job worker: %s", strerror(e));
            goto out;
        }
        j->nthreads_started++;
    }
out:
    if (r < 0) {
        if (j->threads && j->running) {
            hc_jobs_stop(j);
        } else {
            free(j->data_dir);
            free(j->running);
            free(j->threads);
            free(j);
        }
        return r;
    }
    *out = j;
    return 0;
}

void
hc_jobs_stop(struct hc_jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    j->stopping = 1;
    while (j->qhead) {
        struct job *jb = j->qhead;
        queue_remove_locked(j, jb);
        jb->state = HC_JOB_FAILED;
        snprintf(jb->error, sizeof(jb->error), "hcfs: unmounted before the job ran");
        job_unref_locked(jb);
    }
    for (int i = 0; i < j->cfg.nworkers; i++)
        if (j->running[i])
            j->running[i]->cancel = 1;
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->lock);

    for (int i = 0; i < j->nthreads_started; i++)
        pthread_join(j->threads[i], NULL);

    /* Readers still waiting hold references; at this point the FUSE loop has ended, so
     * there are none. */
    pthread_mutex_lock(&j->lock);
    for (size_t b = 0; b < NBUCKETS; b++) {
        while (j->table[b]) {
            struct job *jb = j->table[b];
            j->table[b] = jb->hnext;
            jb->in_table = 0;
            job_unref_locked(jb);
        }
    }
    pthread_mutex_unlock(&j->lock);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->cond);
    free(j->data_dir);
    free(j->running);
    free(j->threads);
    free(j);
}
