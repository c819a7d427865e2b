/* pathmap.c: input version -> output, remembered across mounts (see pathmap.h). */
#include "pathmap.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "platform.h"
#include "strhash.h"

#define NBUCKETS 4096

#define ST_MTIM(st) HC_ST_MTIM(st)
#define ST_CTIM(st) HC_ST_CTIM(st)

struct rec {
    struct rec *next;
    unsigned long long dev, ino, size, out_size;
    long long mt_s, mt_ns, ct_s, ct_ns;
    char *out_path;
    char rel[]; /* flexible */
};

struct hc_pathmap {
    pthread_mutex_t mu;
    struct rec *b[NBUCKETS];
    size_t live;
    FILE *log; /* append-only; NULL when it could not be opened (then memory only) */
};

/* Inserts or replaces rel's record (takes ownership of r). */
static void
set_locked(struct hc_pathmap *pm, struct rec *r)
{
    uint32_t h = hc_fs_strhash(r->rel) % NBUCKETS;
    for (struct rec **pp = &pm->b[h]; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->rel, r->rel) == 0) {
            struct rec *old = *pp;
            r->next = old->next;
            *pp = r;
            free(old->out_path);
            free(old);
            return;
        }
    }
    r->next = pm->b[h];
    pm->b[h] = r;
    pm->live++;
}

static struct rec *
rec_new(const char *rel, const char *out_path)
{
    size_t n = strlen(rel) + 1;
    struct rec *r = calloc(1, sizeof(*r) + n);
    if (!r)
        return NULL;
    memcpy(r->rel, rel, n);
    r->out_path = strdup(out_path);
    if (!r->out_path) {
        free(r);
        return NULL;
    }
    return r;
}

static void
write_rec(FILE *f, const struct rec *r)
{
    fprintf(f, "%llu\t%llu\t%llu\t%lld\t%lld\t%lld\t%lld\t%llu\t%s\t%s\n", r->dev, r->ino, r->size,
            r->mt_s, r->mt_ns, r->ct_s, r->ct_ns, r->out_size, r->out_path, r->rel);
}

/* One line of the file into a record; NULL for a line that does not parse. */
static struct rec *
parse_line(char *line)
{
    char *f[10];
    int n = 0;
    char *save = NULL;
    size_t len = strlen(line);
    if (len && line[len - 1] == '\n')
        line[len - 1] = '\0';
    for (char *t = strtok_r(line, "\t", &save); t && n < 10; t = strtok_r(NULL, "\t", &save))
        f[n++] = t;
    if (n != 10)
        return NULL;
    struct rec *r = rec_new(f[9], f[8]);
    if (!r)
        return NULL;
    r->dev = strtoull(f[0], NULL, 10);
    r->ino = strtoull(f[1], NULL, 10);
    r->size = strtoull(f[2], NULL, 10);
    r->mt_s = strtoll(f[3], NULL, 10);
    r->mt_ns = strtoll(f[4], NULL, 10);
    r->ct_s = strtoll(f[5], NULL, 10);
    r->ct_ns = strtoll(f[6], NULL, 10);
    r->out_size = strtoull(f[7], NULL, 10);
    return r;
}

/* Rewrites the file with the live records only (temp file, rename). */
static void
compact(struct hc_pathmap *pm, const char *file)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", file) >= sizeof(tmp))
        return;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    for (size_t i = 0; i < NBUCKETS; i++)
        for (struct rec *r = pm->b[i]; r; r = r->next)
            write_rec(f, r);
    if (fclose(f) != 0 || rename(tmp, file) != 0)
        unlink(tmp);
}

int
hc_pathmap_open(const char *file, struct hc_pathmap **out)
{
    struct hc_pathmap *pm = calloc(1, sizeof(*pm));
    if (!pm)
        return hc_error(-ENOMEM, "hcfs", "out of memory");
    pthread_mutex_init(&pm->mu, NULL);

    size_t lines = 0;
    FILE *f = fopen(file, "r");
    if (f) {
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
            lines++;
            struct rec *r = parse_line(line);
            if (r)
                set_locked(pm, r);
        }
        free(line);
        fclose(f);
    }
    if (lines > 2 * pm->live + 100)
        compact(pm, file);
    pm->log = fopen(file, "a");
    *out = pm;
    return 0;
}

void
hc_pathmap_close(struct hc_pathmap *pm)
{
    if (!pm)
        return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct rec *r = pm->b[i];
        while (r) {
            struct rec *n = r->next;
            free(r->out_path);
            free(r);
            r = n;
        }
    }
    if (pm->log)
        fclose(pm->log);
    pthread_mutex_destroy(&pm->mu);
    free(pm);
}

void
hc_pathmap_put(struct hc_pathmap *pm, const char *rel, const struct stat *st, const char *out_path,
               uint64_t out_size)
{
    if (!pm || strpbrk(rel, "\t\n") || strpbrk(out_path, "\t\n") || !*rel)
        return;
    struct rec *r = rec_new(rel, out_path);
    if (!r)
        return;
    r->dev = (unsigned long long)st->st_dev;
    r->ino = (unsigned long long)st->st_ino;
    r->size = (unsigned long long)st->st_size;
    r->mt_s = (long long)ST_MTIM(st).tv_sec;
    r->mt_ns = (long long)ST_MTIM(st).tv_nsec;
    r->ct_s = (long long)ST_CTIM(st).tv_sec;
    r->ct_ns = (long long)ST_CTIM(st).tv_nsec;
    r->out_size = out_size;
    pthread_mutex_lock(&pm->mu);
    if (pm->log) {
        write_rec(pm->log, r);
        fflush(pm->log);
    }
    set_locked(pm, r);
    pthread_mutex_unlock(&pm->mu);
}

int
hc_pathmap_get(struct hc_pathmap *pm, const char *rel, const struct stat *st, uint64_t *out_size)
{
    char path[PATH_MAX];
    uint64_t sz = 0;
    int found = 0;

    if (!pm)
        return -ENOENT;
    pthread_mutex_lock(&pm->mu);
    for (struct rec *r = pm->b[hc_fs_strhash(rel) % NBUCKETS]; r; r = r->next) {
        if (strcmp(r->rel, rel) != 0)
            continue;
        if (r->dev == (unsigned long long)st->st_dev && r->ino == (unsigned long long)st->st_ino &&
            r->size == (unsigned long long)st->st_size &&
            r->mt_s == (long long)ST_MTIM(st).tv_sec &&
            r->mt_ns == (long long)ST_MTIM(st).tv_nsec &&
            r->ct_s == (long long)ST_CTIM(st).tv_sec &&
            r->ct_ns == (long long)ST_CTIM(st).tv_nsec &&
            (size_t)snprintf(path, sizeof(path), "%s", r->out_path) < sizeof(path)) {
            sz = r->out_size;
            found = 1;
        }
        break;
    }
    pthread_mutex_unlock(&pm->mu);
    if (!found)
        return -ENOENT;
    /* Evicted since? Then the next open makes it again; until then the size is unknown. */
    struct stat ost;
    if (stat(path, &ost) != 0 || (uint64_t)ost.st_size != sz)
        return -ENOENT;
    *out_size = sz;
    return 0;
}
