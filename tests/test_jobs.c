/* test_jobs.c: fs/jobs.c without FUSE, with the in-process backend.
 *
 * Usage: test_jobs <case>   (end_order). Each case works in a fresh temporary directory.
 *
 * end_order: when a job ends, hcfs drops the kernel's cached attributes of the path in the
 * on_end callback. A stat() answered before the job's state says "done" would put the size
 * estimate back into the kernel's cache, and the reader let go after it would see that
 * estimate in fstat(). So on_end must see the job already done (status and exact size), the
 * quick reopen path (hc_jobs_done_name) must not offer the output yet, and no waiting
 * reader may return before on_end has returned. The reference for the size is fstat() of
 * the output the reader gets.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "codec.h"
#include "jobs.h"
#include "tilecache.h"
#include "tmpdir.h"

struct end_seen {
    struct hc_jobs *j;
    char data[PATH_MAX + 16];
    int calls;
    enum hc_job_state state; /* what hc_jobs_status said inside on_end */
    uint64_t size;
    int name_r; /* hc_jobs_done_name inside on_end */
    volatile int returned;
};

static void
on_end(void *ctx, const char *rel)
{
    struct end_seen *e = ctx;
    char path[PATH_MAX + 300], name[256], key[HC_TC_KEY_LEN + 1];
    struct stat st;
    struct hc_job_status s;

    snprintf(path, sizeof(path), "%s/%s", e->data, rel);
    HC_CHECK(lstat(path, &st) == 0);
    hc_jobs_status(e->j, rel, &st, &s);
    e->state = s.state;
    e->size = s.size;
    e->name_r = hc_jobs_done_name(e->j, rel, &st, name, sizeof(name), key);
    e->calls++;
    /* Long enough that a reader let go too early is seen returning before us. */
    struct timespec d = {0, 300 * 1000 * 1000};
    nanosleep(&d, NULL);
    __atomic_store_n(&e->returned, 1, __ATOMIC_SEQ_CST);
}

struct reader {
    struct hc_jobs *j;
    struct end_seen *e;
    int r, fd, returned_after_end;
    uint64_t size;
    char pin[HC_TC_KEY_LEN + 1]; /* the key pinned for the reader */
    char err[256];
};

static void *
reader_main(void *arg)
{
    struct reader *rd = arg;
    int keep = 0;
    rd->r = hc_jobs_open_output(rd->j, "a.png", NULL, NULL, &rd->fd, &rd->size, &keep, rd->pin,
                                rd->err, sizeof(rd->err));
    rd->returned_after_end = __atomic_load_n(&rd->e->returned, __ATOMIC_SEQ_CST);
    return NULL;
}

static void
case_end_order(void)
{
    const char *tmp = hc_test_tmpdir("jobs");
    static struct end_seen e;
    char cache[PATH_MAX + 16], in[PATH_MAX + 48];

    snprintf(e.data, sizeof(e.data), "%s/data", tmp);
    snprintf(cache, sizeof(cache), "%s/cache", tmp);
    snprintf(in, sizeof(in), "%s/a.png", e.data);
    HC_CHECK(mkdir(e.data, 0755) == 0);

    enum { W = 48, H = 32 };
    static uint8_t px[W * H * 3];
    for (size_t i = 0; i < sizeof(px); i++)
        px[i] = (uint8_t)hc_test_rand();
    struct hc_image_info info = {
        .format = HC_FORMAT_PNG, .width = W, .height = H, .channels = 3, .depth = 8};
    struct hc_writer_opts wo = {.format = HC_FORMAT_PNG, .quality = 0, .png_level = -1};
    HC_CHECK_EQ(hc_encode_file(in, &info, px, W * 3, &wo, NULL), 0);

    struct hc_tc_opts to = {.dir = cache};
    struct hc_tc *tc = NULL;
    HC_CHECK_EQ(hc_tc_open(&to, &tc), 0);

    struct hc_jobs_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.tc = tc;
    cfg.data_dir = e.data;
    cfg.scale = 2;
    cfg.filter = HC_FILTER_BICUBIC;
    cfg.quality = 95;
    cfg.nworkers = 1;
    cfg.nthreads = 1;
    hc_limits_default(&cfg.limits);
    cfg.on_end = on_end;
    cfg.on_end_ctx = &e;
    struct hc_jobs *j = NULL;
    HC_CHECK_EQ(hc_jobs_start(&cfg, &j), 0);
    e.j = j;

    struct reader rd = {.j = j, .e = &e, .fd = -1};
    pthread_t t;
    HC_CHECK(pthread_create(&t, NULL, reader_main, &rd) == 0);
    HC_CHECK(pthread_join(t, NULL) == 0);

    HC_CHECK_MSG(rd.r == 0, "open_output: %d %s", rd.r, rd.err);
    struct stat ost;
    HC_CHECK(fstat(rd.fd, &ost) == 0);
    HC_CHECK_EQ(e.calls, 1);
    HC_CHECK_MSG(e.state == HC_JOB_DONE, "inside on_end the job was %s, not done",
                 hc_job_state_name(e.state));
    HC_CHECK_EQ(e.size, (uint64_t)ost.st_size);
    HC_CHECK_EQ(rd.size, (uint64_t)ost.st_size);
    HC_CHECK_MSG(e.name_r == -ENOENT, "the quick reopen path offered the output inside on_end");
    HC_CHECK_MSG(rd.returned_after_end, "the waiting reader returned before on_end did");

    /* Announced now: the quick path names the output the reader got, and its key is the
     * one pinned for the reader. */
    struct stat ist;
    char name[256], key[HC_TC_KEY_LEN + 1];
    HC_CHECK(lstat(in, &ist) == 0);
    HC_CHECK_EQ(hc_jobs_done_name(j, "a.png", &ist, name, sizeof(name), key), 0);
    HC_CHECK_MSG(strcmp(rd.pin, key) == 0, "pinned '%s', done key %s", rd.pin, key);
    HC_CHECK_MSG(strncmp(name, key, HC_TC_KEY_LEN) == 0 && name[HC_TC_KEY_LEN] == '.',
                 "name %s, key %s", name, key);
#ifdef __linux__
    char want[PATH_MAX + 64], got[PATH_MAX];
    snprintf(want, sizeof(want), "/proc/self/fd/%d", rd.fd);
    ssize_t n = readlink(want, got, sizeof(got) - 1);
    HC_CHECK(n > 0);
    got[n] = 0;
    const char *base = strrchr(got, '/');
    HC_CHECK_MSG(base && strcmp(base + 1, name) == 0, "done name %s, reader's file %s", name, got);
#endif

    close(rd.fd);
    hc_tc_unpin(tc, rd.pin);
    hc_jobs_stop(j);
    hc_tc_close(tc);
}

int
main(int argc, char **argv)
{
    static const struct hc_test_case cases[] = {
        {"end_order", case_end_order},
    };
    return hc_test_main("test_jobs", argc, argv, cases, sizeof(cases) / sizeof(cases[0]), NULL);
}
