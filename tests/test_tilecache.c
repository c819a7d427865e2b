/* test_tilecache.c: tilecache/ against independent references.
 *
 * Usage: test_tilecache <case>   (key, key_xxhsum, states, tiles, evict, evict_background, pin,
 * concurrency, crash, reopen). Each case works in a fresh temporary directory that is removed
 * when the process exits, also on failure. References: keys are recomputed by the xxhash
 * command-line tool over the bytes the key format documents (tilecache/key.c); eviction is
 * compared with a plain model of LRU kept by the test; sizes and file sets with what the
 * test wrote and what it finds on disk by walking the directories itself.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "tmpdir.h"
#include "error.h"
#include "tilecache.h"

static const char *g_tmp;

static void
make_tmp(void)
{
    g_tmp = hc_test_tmpdir("tilecache");
}

/* xorshift64*: deterministic test data. */
static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void
fill(void *buf, size_t len, uint64_t seed)
{
    unsigned char *p = buf;
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(rnd(&s) >> 56);
}

static void
write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    HC_CHECK_MSG(f != NULL, "%s: %s", path, strerror(errno));
    HC_CHECK(fwrite(buf, 1, len, f) == len);
    HC_CHECK(fclose(f) == 0);
}

/* What the pipeline does: temp file, fsync, rename. */
static void
publish(const char *path, const void *buf, size_t len)
{
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%lx", path, (long)getpid(),
             (unsigned long)pthread_self());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    HC_CHECK_MSG(fd >= 0, "%s: %s", tmp, strerror(errno));
    HC_CHECK(write(fd, buf, len) == (ssize_t)len);
    HC_CHECK(fsync(fd) == 0);
    HC_CHECK(close(fd) == 0);
    HC_CHECK(rename(tmp, path) == 0);
}

/* Reads a whole file; returns its size, -1 when it cannot be opened. */
static long
read_file(const char *path, void *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, (char *)buf + got, cap - got);
        HC_CHECK(n >= 0);
        if (n == 0)
            break;
        got += (size_t)n;
        HC_CHECK(got < cap);
    }
    close(fd);
    return (long)got;
}

static int
exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Entries in a directory (0 when it does not exist), "." and ".." excluded. */
static int
count_dir(const char *path, uint64_t *bytes)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int n = 0;
    if (bytes)
        *bytes = 0;
    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        n++;
        if (bytes) {
            char p[PATH_MAX + 256];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", path, de->d_name);
            if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
                *bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return n;
}

static struct hc_tc_params
params0(void)
{
    struct hc_tc_params p = {HC_FILTER_BICUBIC, 2, HC_FORMAT_PNG, 0, HC_PIPELINE_VERSION};
    return p;
}

/* A distinct key per n, as hcfs would derive from distinct inputs. */
static void
key_n(uint64_t n, char key[HC_TC_KEY_LEN + 1])
{
    struct hc_tc_params p = params0();
    HC_CHECK(hc_tc_key_mem(&n, sizeof n, &p, key) == 0);
}

static struct hc_tc *
open_cache(uint64_t max_bytes, uint64_t min_free, int interval_ms)
{
    char dir[PATH_MAX + 16];
    struct hc_tc_opts o = {dir, max_bytes, min_free, interval_ms};
    struct hc_tc *tc = NULL;
    snprintf(dir, sizeof dir, "%s/cache", g_tmp);
    int rc = hc_tc_open(&o, &tc);
    HC_CHECK_MSG(rc == 0, "hc_tc_open: %d %s", rc, hc_last_error());
    return tc;
}

static void
cache_path(char *buf, size_t cap, const char *sub)
{
    snprintf(buf, cap, "%s/cache/%s", g_tmp, sub);
}

/* Makes a DONE entry whose output is len bytes of seed's data. */
static void
make_done(struct hc_tc *tc, const char *key, size_t len, uint64_t seed)
{
    struct hc_tc_entry e;
    unsigned char *buf = malloc(len ? len : 1);
    HC_CHECK(buf);
    fill(buf, len, seed);
    HC_CHECK(hc_tc_begin(tc, key, HC_FORMAT_PNG, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_INCOMPLETE);
    publish(e.path, buf, len);
    HC_CHECK_MSG(hc_tc_commit(tc, key) == 0, "%s", hc_last_error());
    free(buf);
}

static enum hc_tc_state
state_of(struct hc_tc *tc, const char *key)
{
    struct hc_tc_entry e;
    HC_CHECK(hc_tc_lookup(tc, key, &e) == 0);
    return e.state;
}

/* Does key's output file exist? (No lookup: that would touch its access time.) */
static int
out_exists(const char *key)
{
    char sub[64], path[PATH_MAX + 96];
    snprintf(sub, sizeof sub, "out/%s.png", key);
    cache_path(path, sizeof path, sub);
    return exists(path);
}

/* ---- pins: outputs in use are not evicted ----------------------------------------------- */

static void
test_pin(void)
{
    char k[5][HC_TC_KEY_LEN + 1];
    for (int i = 0; i < 5; i++)
        key_n(9000 + (uint64_t)i, k[i]);
    /* 1000 bytes hold one 600-byte output: every commit makes the cache evict. */
    struct hc_tc *tc = open_cache(1000, 0, 3600 * 1000);
    make_done(tc, k[0], 600, 1);
    HC_CHECK_EQ(hc_tc_pin(tc, k[0]), 0);
    make_done(tc, k[1], 600, 2);
    make_done(tc, k[2], 600, 3);
    HC_CHECK_EQ(hc_tc_evict(tc), 0);
    /* k0 is the oldest but pinned, k2 the most recent: k1 went. */
    HC_CHECK_MSG(out_exists(k[0]), "a pinned output was evicted");
    HC_CHECK_MSG(!out_exists(k[1]), "the oldest unpinned output stayed");
    HC_CHECK(out_exists(k[2]));
    /* Two pins need two unpins. */
    HC_CHECK_EQ(hc_tc_pin(tc, k[2]), 0);
    HC_CHECK_EQ(hc_tc_pin(tc, k[2]), 0);
    hc_tc_unpin(tc, k[2]);
    make_done(tc, k[3], 600, 4);
    HC_CHECK_EQ(hc_tc_evict(tc), 0);
    HC_CHECK_MSG(out_exists(k[0]) && out_exists(k[2]), "an output pinned once more went");
    hc_tc_unpin(tc, k[2]);
    hc_tc_unpin(tc, k[0]);
    make_done(tc, k[4], 600, 5);
    HC_CHECK_EQ(hc_tc_evict(tc), 0);
    HC_CHECK_MSG(!out_exists(k[0]) && !out_exists(k[2]) && !out_exists(k[3]),
                 "unpinned outputs stayed over the bound");
    HC_CHECK(out_exists(k[4]));
    HC_CHECK_EQ(state_of(tc, k[0]), HC_TC_ABSENT);
    HC_CHECK_EQ(state_of(tc, k[4]), HC_TC_DONE);
    hc_tc_unpin(tc, k[1]); /* never pinned: ignored */
    HC_CHECK_EQ(hc_tc_pin(tc, "not-a-key"), -EINVAL);
    hc_tc_close(tc);
}

/* ---- keys ---------------------------------------------------------------------------- */

static void
test_key(void)
{
    size_t len = 700 * 1024 + 13; /* crosses the file reader's chunk boundaries */
    unsigned char *buf = malloc(len);
    char path[PATH_MAX + 16], k0[HC_TC_KEY_LEN + 1], k1[HC_TC_KEY_LEN + 1];
    struct hc_tc_params p = params0();
    HC_CHECK(buf);
    fill(buf, len, 1);
    snprintf(path, sizeof path, "%s/input", g_tmp);
    write_file(path, buf, len);

    HC_CHECK(hc_tc_key_mem(buf, len, &p, k0) == 0);
    HC_CHECK(hc_tc_key_file(path, &p, k1) == 0);
    HC_CHECK(strlen(k0) == HC_TC_KEY_LEN);
    HC_CHECK_MSG(strcmp(k0, k1) == 0, "mem %s file %s", k0, k1);
    for (int i = 0; i < HC_TC_KEY_LEN; i++)
        HC_CHECK((k0[i] >= '0' && k0[i] <= '9') || (k0[i] >= 'a' && k0[i] <= 'f'));

    /* One byte of the input, anywhere. */
    size_t where[] = {0, 1, 256 * 1024 - 1, 256 * 1024, len / 2, len - 1};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        buf[where[i]] ^= 1;
        HC_CHECK(hc_tc_key_mem(buf, len, &p, k1) == 0);
        HC_CHECK_MSG(strcmp(k0, k1) != 0, "flip at %zu kept the key", where[i]);
        buf[where[i]] ^= 1;
    }
    /* One byte more or less. */
    HC_CHECK(hc_tc_key_mem(buf, len - 1, &p, k1) == 0);
    HC_CHECK(strcmp(k0, k1) != 0);

    /* Each parameter, alone; all keys pairwise distinct. */
    struct hc_tc_params v[7];
    for (int i = 0; i < 7; i++)
        v[i] = params0();
    v[1].filter = (enum hc_filter)(HC_FILTER_BICUBIC + 1);
    v[2].scale = 3;
    v[3].format = HC_FORMAT_JPEG, v[3].quality = 95;
    v[4].format = HC_FORMAT_JPEG, v[4].quality = 90;
    v[5].pipeline_version = HC_PIPELINE_VERSION + 1;
    v[6].format = HC_FORMAT_BMP;
    char keys[7][HC_TC_KEY_LEN + 1];
    for (int i = 0; i < 7; i++)
        HC_CHECK(hc_tc_key_mem(buf, len, &v[i], keys[i]) == 0);
    for (int i = 0; i < 7; i++)
        for (int j = i + 1; j < 7; j++)
            HC_CHECK_MSG(strcmp(keys[i], keys[j]) != 0, "params %d and %d collide", i, j);
    /* Quality means nothing for PNG: documented as hashed as 0. */
    struct hc_tc_params q = params0();
    q.quality = 77;
    HC_CHECK(hc_tc_key_mem(buf, len, &q, k1) == 0);
    HC_CHECK(strcmp(k0, k1) == 0);

    /* Empty input, and errors. */
    HC_CHECK(hc_tc_key_mem(NULL, 0, &p, k1) == 0);
    HC_CHECK(strcmp(k0, k1) != 0);
    snprintf(path, sizeof path, "%s/missing", g_tmp);
    HC_CHECK_EQ(hc_tc_key_file(path, &p, k1), -ENOENT);
    HC_CHECK(strstr(hc_last_error(), "tilecache") != NULL);
    HC_CHECK_EQ(hc_tc_key_file(g_tmp, &p, k1), -EINVAL); /* a directory */
    snprintf(path, sizeof path, "%s/fifo", g_tmp);
    HC_CHECK(mkfifo(path, 0600) == 0);
    HC_CHECK_EQ(hc_tc_key_file(path, &p, k1), -EINVAL); /* would block forever */
    free(buf);
}

/* The key recomputed by another implementation, in another process: xxhash's CLI over
 * input || trailer, the trailer written out here from the format documented in key.c. */
static void
xxhsum_of(const char *path, char out[HC_TC_KEY_LEN + 1])
{
    char cmd[PATH_MAX + 64], line[512];
    const char *tool = NULL;
    if (system("command -v xxh128sum >/dev/null 2>&1") == 0)
        tool = "xxh128sum";
    else if (system("command -v xxhsum >/dev/null 2>&1") == 0)
        tool = "xxhsum -H2";
    if (!tool)
        HC_SKIP("xxh128sum / xxhsum not installed (apt-get install xxhash)");
    snprintf(cmd, sizeof cmd, "%s '%s'", tool, path);
    FILE *f = popen(cmd, "r");
    HC_CHECK(f != NULL);
    HC_CHECK(fgets(line, sizeof line, f) != NULL);
    HC_CHECK(pclose(f) == 0);
    HC_CHECK_MSG(strlen(line) > HC_TC_KEY_LEN && line[HC_TC_KEY_LEN] == ' ', "xxhsum said %s",
                 line);
    memcpy(out, line, HC_TC_KEY_LEN);
    out[HC_TC_KEY_LEN] = '\0';
}

static void
test_key_xxhsum(void)
{
    struct {
        size_t len;
        struct hc_tc_params p;
    } cases[] = {
        {0, {HC_FILTER_BICUBIC, 2, HC_FORMAT_PNG, 0, 1}},
        {1, {HC_FILTER_BICUBIC, 4, HC_FORMAT_JPEG, 95, 1}},
        {240, {HC_FILTER_BICUBIC, 3, HC_FORMAT_BMP, 0, 7}},
        {300 * 1024 + 5, {HC_FILTER_BICUBIC, 8, HC_FORMAT_TGA, 0, 1}},
        {2 * 1024 * 1024, {HC_FILTER_BICUBIC, 2, HC_FORMAT_JPEG, 1, 42}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t len = cases[c].len;
        const struct hc_tc_params *p = &cases[c].p;
        char trailer[256], in[PATH_MAX + 16], cat[PATH_MAX + 16];
        char mine[HC_TC_KEY_LEN + 1], theirs[HC_TC_KEY_LEN + 1];
        int tl = snprintf(trailer, sizeof trailer,
                          "\nhc-tilecache-key v1 filter=%d scale=%d format=%d quality=%d "
                          "pipeline=%u bytes=%zu\n",
                          (int)p->filter, p->scale, (int)p->format,
                          p->format == HC_FORMAT_JPEG ? p->quality : 0,
                          (unsigned)p->pipeline_version, len);
        unsigned char *buf = malloc(len + (size_t)tl + 1);
        HC_CHECK(buf);
        fill(buf, len, 100 + c);
        memcpy(buf + len, trailer, (size_t)tl);
        snprintf(in, sizeof in, "%s/in%zu", g_tmp, c);
        snprintf(cat, sizeof cat, "%s/cat%zu", g_tmp, c);
        write_file(in, buf, len);
        write_file(cat, buf, len + (size_t)tl);
        HC_CHECK(hc_tc_key_file(in, p, mine) == 0);
        xxhsum_of(cat, theirs);
        HC_CHECK_MSG(strcmp(mine, theirs) == 0, "case %zu: ours %s, xxhsum %s", c, mine, theirs);
        free(buf);
    }
}

/* ---- entry states ---------------------------------------------------------------------- */

static void
test_states(void)
{
    struct hc_tc *tc = open_cache(0, 0, 0);
    struct hc_tc_entry e;
    struct hc_tc_stats s;
    char a[HC_TC_KEY_LEN + 1], b[HC_TC_KEY_LEN + 1], c[HC_TC_KEY_LEN + 1];
    char outdir[PATH_MAX + 32], real[PATH_MAX], want[PATH_MAX * 2];
    unsigned char data[1234], back[4096];
    key_n(1, a);
    key_n(2, b);
    key_n(3, c);
    fill(data, sizeof data, 5);

    HC_CHECK(hc_tc_lookup(tc, a, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_ABSENT);

    HC_CHECK(hc_tc_begin(tc, a, HC_FORMAT_PNG, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_INCOMPLETE);
    cache_path(outdir, sizeof outdir, "out");
    HC_CHECK(realpath(outdir, real) != NULL);
    snprintf(want, sizeof want, "%s/%s.png", real, a);
    HC_CHECK_MSG(strcmp(e.path, want) == 0, "path %s, want %s", e.path, want);
    HC_CHECK_EQ(state_of(tc, a), HC_TC_INCOMPLETE);

    /* Commit needs the output in place. */
    HC_CHECK_EQ(hc_tc_commit(tc, a), -ENOENT);
    HC_CHECK_EQ(state_of(tc, a), HC_TC_INCOMPLETE);
    publish(e.path, data, sizeof data);
    HC_CHECK(hc_tc_commit(tc, a) == 0);
    HC_CHECK(hc_tc_lookup(tc, a, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_DONE);
    HC_CHECK_EQ(e.size, sizeof data);
    HC_CHECK_EQ(read_file(e.path, back, sizeof back), (long)sizeof data);
    HC_CHECK(memcmp(back, data, sizeof data) == 0);
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.entries, 1);
    HC_CHECK_EQ(s.bytes, sizeof data);
    HC_CHECK(hc_tc_commit(tc, a) == 0); /* twice: no change */
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.entries, 1);

    /* Failure: reason kept, output removed. */
    HC_CHECK(hc_tc_begin(tc, b, HC_FORMAT_JPEG, &e) == 0);
    HC_CHECK(strlen(e.path) > 4 && strcmp(e.path + strlen(e.path) - 4, ".jpg") == 0);
    publish(e.path, data, 100);
    HC_CHECK(hc_tc_fail(tc, b, "backend: connection refused") == 0);
    HC_CHECK(!exists(e.path));
    HC_CHECK(hc_tc_lookup(tc, b, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_ERROR);
    HC_CHECK(strcmp(e.error, "backend: connection refused") == 0);
    /* A reason longer than the entry holds is cut, not overflowed. */
    char longr[1000];
    memset(longr, 'r', sizeof longr - 1);
    longr[sizeof longr - 1] = '\0';
    HC_CHECK(hc_tc_fail(tc, b, longr) == 0);
    HC_CHECK(hc_tc_lookup(tc, b, &e) == 0);
    HC_CHECK_EQ(strlen(e.error), sizeof e.error - 1);
    HC_CHECK(strncmp(e.error, longr, sizeof e.error - 1) == 0);
    /* A failure with no job begun is recorded too. */
    HC_CHECK(hc_tc_fail(tc, c, "probe: not an image") == 0);
    HC_CHECK_EQ(state_of(tc, c), HC_TC_ERROR);
    /* A restart after failure clears the reason. */
    HC_CHECK(hc_tc_begin(tc, b, HC_FORMAT_JPEG, &e) == 0);
    HC_CHECK(hc_tc_lookup(tc, b, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_INCOMPLETE);
    HC_CHECK(e.error[0] == '\0');

    /* Restarting a DONE entry removes its old output. */
    HC_CHECK(hc_tc_lookup(tc, a, &e) == 0);
    char apath[PATH_MAX];
    snprintf(apath, sizeof apath, "%s", e.path);
    HC_CHECK(hc_tc_begin(tc, a, HC_FORMAT_PNG, &e) == 0);
    HC_CHECK(!exists(apath));
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.entries, 0);
    HC_CHECK_EQ(s.bytes, 0);
    publish(e.path, data, 10);
    HC_CHECK(hc_tc_commit(tc, a) == 0);

    /* An output removed behind the cache's back is not served. */
    HC_CHECK(unlink(apath) == 0);
    HC_CHECK_EQ(state_of(tc, a), HC_TC_ABSENT);
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.entries, 0);

    /* Bad arguments. */
    HC_CHECK_EQ(hc_tc_lookup(tc, "../../../../etc/passwd", &e), -EINVAL);
    HC_CHECK_EQ(hc_tc_lookup(tc, "0123456789ABCDEF0123456789abcdef", &e), -EINVAL);
    HC_CHECK_EQ(hc_tc_lookup(tc, "0123456789abcdef", &e), -EINVAL);
    HC_CHECK_EQ(hc_tc_begin(tc, c, HC_FORMAT_UNKNOWN, &e), -EINVAL);
    HC_CHECK_EQ(hc_tc_commit(tc, "ffffffffffffffffffffffffffffffff"), -ENOENT);

    /* One process per cache directory. */
    {
        char dir[PATH_MAX + 16];
        struct hc_tc_opts o = {dir, 0, 0, 0};
        struct hc_tc *tc2 = NULL;
        snprintf(dir, sizeof dir, "%s/cache", g_tmp);
        HC_CHECK_EQ(hc_tc_open(&o, &tc2), -EBUSY);
        HC_CHECK(tc2 == NULL);
    }
    hc_tc_close(tc);
}

/* ---- tiles ----------------------------------------------------------------------------- */

#define NTILES 10

static size_t
tile_len(int i, int gen)
{
    return 500 + (size_t)i * 333 + (size_t)gen * 7;
}

static void
test_tiles(void)
{
    struct hc_tc *tc = open_cache(0, 0, 0);
    struct hc_tc_entry e;
    struct hc_tc_stats s;
    char k[HC_TC_KEY_LEN + 1], other[HC_TC_KEY_LEN + 1], tdir[2 * PATH_MAX];
    unsigned char want[8192], got[8192];
    uint64_t expect_bytes = 0;
    key_n(10, k);
    key_n(11, other);

    HC_CHECK(hc_tc_begin(tc, k, HC_FORMAT_PNG, &e) == 0);
    /* First attempt: tiles 0..4 arrive (4 twice), then the job fails. */
    for (int i = 0; i < 5; i++) {
        fill(want, tile_len(i, 0), (uint64_t)i);
        HC_CHECK(hc_tc_tile_put(tc, k, (uint32_t)i, want, tile_len(i, 0)) == 0);
        expect_bytes += tile_len(i, 0);
    }
    fill(want, tile_len(4, 1), 1004);
    HC_CHECK(hc_tc_tile_put(tc, k, 4, want, tile_len(4, 1)) == 0);
    expect_bytes = expect_bytes - tile_len(4, 0) + tile_len(4, 1);
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.bytes, expect_bytes);
    HC_CHECK_EQ(hc_tc_tile_get(tc, k, 4, got, tile_len(4, 0)), -EIO); /* old size */
    HC_CHECK(hc_tc_tile_get(tc, k, 4, got, tile_len(4, 1)) == 0);
    HC_CHECK(memcmp(got, want, tile_len(4, 1)) == 0);
    HC_CHECK_EQ(hc_tc_tile_get(tc, k, 7, got, tile_len(7, 0)), -ENOENT);
    HC_CHECK(hc_tc_fail(tc, k, "service went away") == 0);

    /* Resume: exactly the missing tiles are fetched again. */
    HC_CHECK(hc_tc_begin(tc, k, HC_FORMAT_PNG, &e) == 0);
    int refetched = 0;
    for (int i = 0; i < NTILES; i++) {
        int gen = i == 4 ? 1 : 0;
        uint64_t seed = i == 4 ? 1004 : (uint64_t)i;
        int rc = hc_tc_tile_get(tc, k, (uint32_t)i, got, tile_len(i, gen));
        if (rc == -ENOENT) {
            fill(want, tile_len(i, gen), seed);
            HC_CHECK(hc_tc_tile_put(tc, k, (uint32_t)i, want, tile_len(i, gen)) == 0);
            expect_bytes += tile_len(i, gen);
            refetched++;
            continue;
        }
        HC_CHECK_MSG(rc == 0, "tile %d: %d %s", i, rc, hc_last_error());
        fill(want, tile_len(i, gen), seed);
        HC_CHECK_MSG(memcmp(got, want, tile_len(i, gen)) == 0, "tile %d differs", i);
    }
    HC_CHECK_EQ(refetched, NTILES - 5);
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.bytes, expect_bytes);
    snprintf(tdir, sizeof tdir, "%s/cache/tiles/%s", g_tmp, k);
    uint64_t on_disk;
    HC_CHECK_EQ(count_dir(tdir, &on_disk), NTILES); /* no temp files left behind */
    HC_CHECK_EQ(on_disk, expect_bytes);

    /* Commit drops the tiles. */
    publish(e.path, want, 321);
    HC_CHECK(hc_tc_commit(tc, k) == 0);
    HC_CHECK(!exists(tdir));
    HC_CHECK_EQ(hc_tc_tile_get(tc, k, 0, got, tile_len(0, 0)), -ENOENT);
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.bytes, 321);

    /* No job, no tile. */
    HC_CHECK_EQ(hc_tc_tile_put(tc, k, 0, want, 10), -ENOENT);
    HC_CHECK_EQ(hc_tc_tile_put(tc, other, 0, want, 10), -ENOENT);
    HC_CHECK(!exists(tdir));
    HC_CHECK_EQ(hc_tc_tile_put(tc, "zz", 0, want, 10), -EINVAL);
    hc_tc_close(tc);
}

/* ---- eviction -------------------------------------------------------------------------- */

/* The reference: entries with the access order the test itself performed. */
struct model {
    int n;
    uint64_t size[32];
    long used[32];      /* last access, -1: gone (or never made) */
    int tiles_only[32]; /* a failed job: its tiles, no output */
};

static long g_clock;

static void
model_touch(struct model *m, int i)
{
    m->used[i] = ++g_clock;
}

/* Evicts least recently used DONE entries until total <= max. */
static void
model_evict(struct model *m, uint64_t running_bytes, uint64_t max)
{
    for (;;) {
        uint64_t total = running_bytes;
        int victim = -1;
        for (int i = 0; i < m->n; i++) {
            if (m->used[i] < 0)
                continue;
            total += m->size[i];
            if (victim < 0 || m->used[i] < m->used[victim])
                victim = i;
        }
        if (total <= max || victim < 0)
            return;
        m->used[victim] = -1;
    }
}

#define check_model(tc, m, keys) check_model_at(__LINE__, tc, m, keys)

static void
check_model_at(int line, struct hc_tc *tc, const struct model *m, char keys[][HC_TC_KEY_LEN + 1])
{
    /* stats first: lookups would touch the entries. */
    struct hc_tc_stats s;
    uint64_t total = 0, entries = 0;
    hc_tc_stats(tc, &s);
    for (int i = 0; i < m->n; i++) {
        char path[PATH_MAX + 128];
        int live = m->used[i] >= 0 && !m->tiles_only[i];
        snprintf(path, sizeof path, "%s/cache/out/%s.png", g_tmp, keys[i]);
        HC_CHECK_MSG(exists(path) == live, "line %d: entry %d: file %s", line, i,
                     live ? "missing" : "still there");
        if (live) {
            total += m->size[i];
            entries++;
        }
    }
    HC_CHECK_EQ(s.entries, entries);
    char outdir[PATH_MAX + 32];
    uint64_t disk;
    cache_path(outdir, sizeof outdir, "out");
    HC_CHECK_EQ(count_dir(outdir, &disk), (int)entries);
    HC_CHECK_EQ(disk, total);
}

static void
test_evict(void)
{
    /* The background pass is slowed down so that the explicit passes decide. It may still
     * run when a commit goes over the bound; it evicts the same entries either way. */
    const uint64_t max = 5500;
    struct hc_tc *tc = open_cache(max, 0, 600000);
    struct model m = {0};
    struct hc_tc_stats s;
    struct hc_tc_entry e;
    char keys[32][HC_TC_KEY_LEN + 1];
    m.n = 12;
    for (int i = 0; i < m.n; i++) {
        key_n(100 + (uint64_t)i, keys[i]);
        m.size[i] = 1000;
        m.used[i] = -1;
    }
    for (int i = 0; i < 5; i++) {
        make_done(tc, keys[i], 1000, (uint64_t)i);
        model_touch(&m, i);
    }
    HC_CHECK(hc_tc_evict(tc) == 0);
    check_model(tc, &m, keys); /* under the bound: nothing goes */

    /* Reading 0 and 1 makes 2 the least recently used. */
    HC_CHECK_EQ(state_of(tc, keys[0]), HC_TC_DONE);
    model_touch(&m, 0);
    HC_CHECK_EQ(state_of(tc, keys[1]), HC_TC_DONE);
    model_touch(&m, 1);
    make_done(tc, keys[5], 1000, 5);
    model_touch(&m, 5);
    HC_CHECK(hc_tc_evict(tc) == 0);
    model_evict(&m, 0, max);
    HC_CHECK(m.used[2] < 0 && m.used[0] >= 0 && m.used[1] >= 0);
    check_model(tc, &m, keys);
    hc_tc_stats(tc, &s);
    HC_CHECK(s.bytes <= max);
    HC_CHECK_EQ(s.evicted, 1);

    /* A running job's tiles count against the bound but are never evicted. */
    unsigned char tile[3000];
    fill(tile, sizeof tile, 9);
    HC_CHECK(hc_tc_begin(tc, keys[6], HC_FORMAT_PNG, &e) == 0);
    HC_CHECK(hc_tc_tile_put(tc, keys[6], 0, tile, sizeof tile) == 0);
    HC_CHECK_EQ(state_of(tc, keys[3]), HC_TC_DONE);
    model_touch(&m, 3);
    HC_CHECK(hc_tc_evict(tc) == 0);
    model_evict(&m, sizeof tile, max);
    check_model(tc, &m, keys);
    HC_CHECK_EQ(state_of(tc, keys[6]), HC_TC_INCOMPLETE);
    HC_CHECK(hc_tc_tile_get(tc, keys[6], 0, tile, sizeof tile) == 0);
    hc_tc_stats(tc, &s);
    HC_CHECK(s.bytes <= max);

    /* A failed job's tiles may go, oldest first like the rest. */
    HC_CHECK(hc_tc_fail(tc, keys[6], "test") == 0);
    m.size[6] = sizeof tile;
    m.tiles_only[6] = 1;
    model_touch(&m, 6);
    for (int i = 7; i < 10; i++) {
        make_done(tc, keys[i], 1000, (uint64_t)i);
        model_touch(&m, i);
    }
    HC_CHECK(hc_tc_evict(tc) == 0);
    model_evict(&m, 0, max);
    HC_CHECK(m.used[6] < 0); /* the model evicts it too */
    check_model(tc, &m, keys);
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.bytes, 3000);
    HC_CHECK_EQ(state_of(tc, keys[6]), HC_TC_ABSENT);
    HC_CHECK_EQ(hc_tc_tile_get(tc, keys[6], 0, tile, sizeof tile), -ENOENT);
    hc_tc_close(tc);

    /* Minimum free space no disk can have: everything evictable goes but the most recently
     * used entry; running jobs stay. */
    tc = open_cache(0, UINT64_MAX / 2, 600000);
    HC_CHECK(hc_tc_begin(tc, keys[11], HC_FORMAT_PNG, &e) == 0);
    HC_CHECK(hc_tc_evict(tc) == 0);
    int mru = -1;
    for (int i = 0; i < m.n; i++)
        if (m.used[i] >= 0 && (mru < 0 || m.used[i] > m.used[mru]))
            mru = i;
    HC_CHECK(mru >= 0);
    for (int i = 0; i < m.n; i++)
        if (i != mru)
            m.used[i] = -1;
    check_model(tc, &m, keys);
    HC_CHECK_EQ(state_of(tc, keys[11]), HC_TC_INCOMPLETE);
    hc_tc_close(tc);

    /* One result larger than the bound: kept for its reader until the next one arrives. */
    tc = open_cache(500, 0, 600000);
    HC_CHECK(hc_tc_evict(tc) == 0);
    HC_CHECK_EQ(state_of(tc, keys[mru]), HC_TC_DONE);
    make_done(tc, keys[0], 1000, 0);
    HC_CHECK(hc_tc_evict(tc) == 0);
    HC_CHECK_EQ(state_of(tc, keys[mru]), HC_TC_ABSENT);
    HC_CHECK_EQ(state_of(tc, keys[0]), HC_TC_DONE);
    hc_tc_close(tc);
}

/* The evictor thread works on its own: after open (bounds shrank) and after commits. */
static void
test_evict_background(void)
{
    struct hc_tc *tc = open_cache(0, 0, 0);
    struct hc_tc_stats s;
    char keys[8][HC_TC_KEY_LEN + 1];
    for (int i = 0; i < 8; i++) {
        key_n(200 + (uint64_t)i, keys[i]);
        make_done(tc, keys[i], 1000, (uint64_t)i);
    }
    hc_tc_close(tc);

    tc = open_cache(4500, 0, 100);
    for (int t = 0; t < 100; t++) {
        hc_tc_stats(tc, &s);
        if (s.bytes <= 4500)
            break;
        usleep(50 * 1000);
    }
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.entries, 4);
    HC_CHECK_EQ(s.evicted, 4);
    for (int i = 0; i < 4; i++)
        HC_CHECK_EQ(state_of(tc, keys[i]), HC_TC_ABSENT); /* the oldest four */
    for (int i = 4; i < 8; i++)
        HC_CHECK_EQ(state_of(tc, keys[i]), HC_TC_DONE);

    /* A commit over the bound wakes the thread well before its next interval. */
    hc_tc_close(tc);
    tc = open_cache(4500, 0, 600000);
    char k[HC_TC_KEY_LEN + 1];
    key_n(299, k);
    make_done(tc, k, 1000, 299);
    for (int t = 0; t < 100; t++) {
        hc_tc_stats(tc, &s);
        if (s.bytes <= 4500)
            break;
        usleep(50 * 1000);
    }
    HC_CHECK_EQ(s.entries, 4);
    HC_CHECK_EQ(state_of(tc, keys[4]), HC_TC_ABSENT);
    HC_CHECK_EQ(state_of(tc, k), HC_TC_DONE);
    hc_tc_close(tc);
}

/* ---- concurrency ----------------------------------------------------------------------- */

#define NTHREADS 16
#define NJOBS 24
#define CONC_MAX (256u * 1024u)

struct worker {
    struct hc_tc *tc;
    int id;
};

static size_t
out_len(int t, int j)
{
    return 1000 + (size_t)((t * 131 + j * 71) % 7000);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    unsigned char want[8192], got[8192];
    char k[HC_TC_KEY_LEN + 1], other[HC_TC_KEY_LEN + 1];
    struct hc_tc_entry e;

    for (int j = 0; j < NJOBS; j++) {
        key_n((uint64_t)(w->id * 1000 + j), k);
        HC_CHECK(hc_tc_begin(w->tc, k, HC_FORMAT_PNG, &e) == 0);
        for (uint32_t i = 0; i < 4; i++) {
            size_t len = 200 + i * 100 + (size_t)j;
            fill(want, len, (uint64_t)(w->id * 100000 + j * 10 + (int)i));
            HC_CHECK_MSG(hc_tc_tile_put(w->tc, k, i, want, len) == 0, "%s", hc_last_error());
            HC_CHECK(hc_tc_tile_get(w->tc, k, i, got, len) == 0);
            HC_CHECK(memcmp(want, got, len) == 0);
        }
        if (j % 5 == 4) {
            HC_CHECK(hc_tc_fail(w->tc, k, "injected") == 0);
        } else {
            size_t len = out_len(w->id, j);
            fill(want, len, (uint64_t)(w->id * 7777 + j));
            publish(e.path, want, len);
            HC_CHECK_MSG(hc_tc_commit(w->tc, k) == 0, "%s", hc_last_error());
        }
        /* Read others' entries while they are being written and evicted: a DONE answer
         * always names a whole file of the recorded size. */
        for (int o = 0; o < NTHREADS; o++) {
            int oj = j > 0 ? j - 1 : 0;
            key_n((uint64_t)(o * 1000 + oj), other);
            HC_CHECK(hc_tc_lookup(w->tc, other, &e) == 0);
            if (e.state != HC_TC_DONE)
                continue;
            long n = read_file(e.path, got, sizeof got);
            if (n < 0)
                continue; /* evicted between the lookup and the open */
            HC_CHECK_EQ(n, (long)e.size);
            HC_CHECK_EQ(e.size, out_len(o, oj));
            fill(want, (size_t)n, (uint64_t)(o * 7777 + oj));
            HC_CHECK_MSG(memcmp(want, got, (size_t)n) == 0, "entry %d/%d differs", o, oj);
        }
        if (j % 8 == 7)
            HC_CHECK(hc_tc_evict(w->tc) == 0);
    }
    return NULL;
}

static void
test_concurrency(void)
{
    struct hc_tc *tc = open_cache(CONC_MAX, 0, 20);
    pthread_t th[NTHREADS];
    struct worker w[NTHREADS];
    struct hc_tc_stats s;
    for (int i = 0; i < NTHREADS; i++) {
        w[i].tc = tc;
        w[i].id = i;
        HC_CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        HC_CHECK(pthread_join(th[i], NULL) == 0);
    HC_CHECK(hc_tc_evict(tc) == 0);

    /* What the cache says against what is on disk. */
    hc_tc_stats(tc, &s);
    char outdir[PATH_MAX + 32], tiles[PATH_MAX + 32];
    uint64_t disk, done_bytes = 0, done = 0, failed_tiles = 0;
    cache_path(outdir, sizeof outdir, "out");
    cache_path(tiles, sizeof tiles, "tiles");
    int files = count_dir(outdir, &disk);
    for (int t = 0; t < NTHREADS; t++) {
        for (int j = 0; j < NJOBS; j++) {
            char k[HC_TC_KEY_LEN + 1], tdir[2 * PATH_MAX];
            struct hc_tc_entry e;
            uint64_t tb;
            key_n((uint64_t)(t * 1000 + j), k);
            HC_CHECK(hc_tc_lookup(tc, k, &e) == 0);
            snprintf(tdir, sizeof tdir, "%s/%s", tiles, k);
            int nt = count_dir(tdir, &tb);
            if (j % 5 == 4) {
                HC_CHECK(e.state == HC_TC_ERROR || e.state == HC_TC_ABSENT);
                HC_CHECK(nt == (e.state == HC_TC_ERROR ? 4 : 0));
                failed_tiles += tb;
            } else {
                HC_CHECK(e.state == HC_TC_DONE || e.state == HC_TC_ABSENT);
                HC_CHECK_EQ(nt, 0);
                if (e.state == HC_TC_DONE) {
                    HC_CHECK_EQ(e.size, out_len(t, j));
                    done_bytes += e.size;
                    done++;
                }
            }
        }
    }
    HC_CHECK_EQ(s.entries, done);
    HC_CHECK_EQ((uint64_t)files, done);
    HC_CHECK_EQ(disk, done_bytes);
    HC_CHECK_EQ(s.bytes, done_bytes + failed_tiles);
    HC_CHECK(s.bytes <= CONC_MAX);
    HC_CHECK(s.evicted > 0);
    hc_tc_close(tc);
}

/* ---- crash recovery -------------------------------------------------------------------- */

static void *
crash_tiles(void *arg)
{
    struct hc_tc *tc = arg;
    char k[HC_TC_KEY_LEN + 1];
    unsigned char px[4096];
    key_n(502, k);
    fill(px, sizeof px, 3);
    for (uint32_t i = 0;; i++)
        hc_tc_tile_put(tc, k, i % 1000, px, sizeof px);
    return NULL;
}

#define CRASH_SEQ_BASE 10000

static size_t
crash_len(int i)
{
    return 500 + (size_t)(i * 37 % 3000);
}

/* Finishes entries one after another until the process is killed. */
static void *
crash_commits(void *arg)
{
    struct hc_tc *tc = arg;
    char k[HC_TC_KEY_LEN + 1];
    for (int i = 0;; i++) {
        key_n(CRASH_SEQ_BASE + (uint64_t)i, k);
        make_done(tc, k, crash_len(i), CRASH_SEQ_BASE + (uint64_t)i);
    }
    return NULL;
}

static void
test_crash(void)
{
    char a[HC_TC_KEY_LEN + 1], b[HC_TC_KEY_LEN + 1], c[HC_TC_KEY_LEN + 1];
    char apath[PATH_MAX], bpath[2 * PATH_MAX], cpath[2 * PATH_MAX], tmp[3 * PATH_MAX];
    char stray[PATH_MAX + 64], outdir[PATH_MAX + 32], tiles[PATH_MAX + 32];
    unsigned char data[5000], got[8192];
    key_n(501, a);
    key_n(502, b);
    key_n(503, c);
    fill(data, sizeof data, 501);
    cache_path(outdir, sizeof outdir, "out");
    cache_path(tiles, sizeof tiles, "tiles");
    int pipefd[2];
    HC_CHECK(pipe(pipefd) == 0);

    pid_t pid = fork();
    HC_CHECK(pid >= 0);
    if (pid == 0) {
        struct hc_tc *tc = open_cache(0, 0, 0);
        struct hc_tc_entry e;
        pthread_t th;
        make_done(tc, a, sizeof data, 501);
        /* c: done, then its file is torn behind the index's back (as if the rename had
         * reached the disk but not the data). */
        make_done(tc, c, 3000, 503);
        HC_CHECK(hc_tc_lookup(tc, c, &e) == 0);
        HC_CHECK(truncate(e.path, 1000) == 0);
        /* b: running; a partial output under its final name, a temp file beside it. */
        HC_CHECK(hc_tc_begin(tc, b, HC_FORMAT_PNG, &e) == 0);
        write_file(e.path, data, 2000);
        /* The writer's temp file (core/codec.c names it ".<name>.hc-XXXXXX"). */
        snprintf(tmp, sizeof tmp, "%s/.%s.png.hc-abc123", outdir, b);
        write_file(tmp, data, 100);
        snprintf(stray, sizeof stray, "%s/notours.png", outdir);
        write_file(stray, data, 10);
        HC_CHECK(pthread_create(&th, NULL, crash_tiles, tc) == 0);
        HC_CHECK(pthread_create(&th, NULL, crash_commits, tc) == 0);
        usleep(300 * 1000);
        (void)!write(pipefd[1], "k", 1);
        raise(SIGKILL); /* mid-way: tiles are being written */
        _exit(3);
    }
    close(pipefd[1]);
    char ch;
    HC_CHECK(read(pipefd[0], &ch, 1) == 1);
    int st;
    HC_CHECK(waitpid(pid, &st, 0) == pid);
    HC_CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child status %d", st);
    HC_CHECK(count_dir(tiles, NULL) >= 1); /* the crash left tiles */

    struct hc_tc *tc = open_cache(0, 0, 0);
    struct hc_tc_entry e;
    struct hc_tc_stats s;
    HC_CHECK(hc_tc_lookup(tc, a, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_DONE);
    HC_CHECK_EQ(e.size, sizeof data);
    snprintf(apath, sizeof apath, "%s", e.path);
    HC_CHECK_EQ(read_file(apath, got, sizeof got), (long)sizeof data);
    HC_CHECK(memcmp(got, data, sizeof data) == 0);
    HC_CHECK(hc_tc_lookup(tc, b, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_ABSENT);
    HC_CHECK(hc_tc_lookup(tc, c, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_ABSENT);
    snprintf(bpath, sizeof bpath, "%s/%s.png", outdir, b);
    snprintf(cpath, sizeof cpath, "%s/%s.png", outdir, c);
    HC_CHECK(!exists(bpath));
    HC_CHECK(!exists(cpath));
    snprintf(tmp, sizeof tmp, "%s/.%s.png.hc-abc123", outdir, b);
    HC_CHECK(!exists(tmp));
    HC_CHECK_EQ(count_dir(tiles, NULL), 0);

    /* Entries committed one after another until the kill: every commit that returned is
     * DONE with its exact bytes (a prefix of the sequence), the one in flight is gone. */
    int ndone = 0, gap = 0;
    uint64_t seq_bytes = 0;
    for (int i = 0; gap < 20; i++) {
        char k[HC_TC_KEY_LEN + 1];
        key_n(CRASH_SEQ_BASE + (uint64_t)i, k);
        HC_CHECK(hc_tc_lookup(tc, k, &e) == 0);
        if (e.state != HC_TC_DONE) {
            HC_CHECK_EQ(e.state, HC_TC_ABSENT);
            gap++;
            continue;
        }
        HC_CHECK_MSG(gap == 0, "entry %d DONE after a missing one", i);
        HC_CHECK_EQ(e.size, crash_len(i));
        unsigned char want[4096];
        fill(want, crash_len(i), CRASH_SEQ_BASE + (uint64_t)i);
        HC_CHECK_EQ(read_file(e.path, got, sizeof got), (long)crash_len(i));
        HC_CHECK(memcmp(got, want, crash_len(i)) == 0);
        seq_bytes += crash_len(i);
        ndone++;
    }
    HC_CHECK_MSG(ndone > 0, "the child finished no entry before it was killed");
    HC_CHECK_EQ(count_dir(outdir, NULL), 1 + ndone);
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.entries, 1 + (uint64_t)ndone);
    HC_CHECK_EQ(s.bytes, sizeof data + seq_bytes);

    /* The job runs again and its result survives a clean close. */
    make_done(tc, b, 2500, 502);
    hc_tc_close(tc);
    tc = open_cache(0, 0, 0);
    HC_CHECK(hc_tc_lookup(tc, b, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_DONE);
    HC_CHECK_EQ(e.size, 2500);
    HC_CHECK_EQ(state_of(tc, a), HC_TC_DONE);
    hc_tc_close(tc);
}

/* ---- reopen ---------------------------------------------------------------------------- */

static void
test_reopen(void)
{
    char a[HC_TC_KEY_LEN + 1], b[HC_TC_KEY_LEN + 1], db[PATH_MAX + 32], outdir[PATH_MAX + 32];
    struct hc_tc_entry e;
    struct hc_tc_stats s;
    struct hc_tc *tc = open_cache(0, 0, 0);
    unsigned char tile[100] = {1};
    key_n(601, a);
    key_n(602, b);
    make_done(tc, a, 777, 601);
    HC_CHECK(hc_tc_begin(tc, b, HC_FORMAT_PNG, &e) == 0);
    HC_CHECK(hc_tc_tile_put(tc, b, 0, tile, sizeof tile) == 0);
    HC_CHECK(hc_tc_fail(tc, b, "x") == 0);
    hc_tc_close(tc);

    /* DONE survives; a failed entry is not kept across restarts, nor are its tiles. */
    tc = open_cache(0, 0, 0);
    HC_CHECK(hc_tc_lookup(tc, a, &e) == 0);
    HC_CHECK_EQ(e.state, HC_TC_DONE);
    HC_CHECK_EQ(e.size, 777);
    HC_CHECK_EQ(state_of(tc, b), HC_TC_ABSENT);
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.entries, 1);
    HC_CHECK_EQ(s.bytes, 777);
    hc_tc_close(tc);

    /* A destroyed index: the cache starts empty instead of failing or serving stale files. */
    cache_path(db, sizeof db, "index.db");
    char junk[8192];
    memset(junk, 'x', sizeof junk);
    write_file(db, junk, sizeof junk);
    char wal[PATH_MAX + 64];
    snprintf(wal, sizeof wal, "%s-wal", db);
    unlink(wal);
    tc = open_cache(0, 0, 0);
    HC_CHECK_EQ(state_of(tc, a), HC_TC_ABSENT);
    cache_path(outdir, sizeof outdir, "out");
    HC_CHECK_EQ(count_dir(outdir, NULL), 0);
    make_done(tc, a, 50, 1);
    HC_CHECK_EQ(state_of(tc, a), HC_TC_DONE);
    hc_tc_close(tc);
}

/* ---- a full disk ------------------------------------------------------------------------
 * Run inside a small tmpfs (tests/tilecache.cmake mounts one in a user namespace and sets
 * TMPDIR): the cache fills the disk, something else takes the rest, and the cache must
 * still serve what it has, reopen, and give the space back. */

#define FULL_OUT (48 * 1024)

/* begin + pipeline-style write + commit; 0, or -errno when the disk said no. */
static int
try_done(struct hc_tc *tc, const char *key, uint64_t seed)
{
    static unsigned char buf[FULL_OUT];
    struct hc_tc_entry e;
    char tmp[2 * PATH_MAX];
    int rc = hc_tc_begin(tc, key, HC_FORMAT_PNG, &e);
    if (rc)
        return rc;
    fill(buf, sizeof buf, seed);
    snprintf(tmp, sizeof tmp, "%s.part", e.path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    HC_CHECK(fd >= 0);
    ssize_t n = write(fd, buf, sizeof buf);
    int werr = n == (ssize_t)sizeof buf ? 0 : (n < 0 ? -errno : -ENOSPC);
    if (!werr && fsync(fd) != 0)
        werr = -errno;
    close(fd);
    if (werr) {
        unlink(tmp);
        hc_tc_fail(tc, key, "disk full"); /* may itself fail: the disk is full */
        return werr;
    }
    HC_CHECK(rename(tmp, e.path) == 0);
    rc = hc_tc_commit(tc, key);
    if (rc)
        unlink(e.path);
    return rc;
}

static uint64_t
free_bytes(const char *path)
{
    struct statvfs sv;
    HC_CHECK(statvfs(path, &sv) == 0);
    return (uint64_t)sv.f_bavail * sv.f_frsize;
}

static void
test_full(void)
{
    struct statvfs sv;
    HC_CHECK(statvfs(g_tmp, &sv) == 0);
    if ((uint64_t)sv.f_blocks * sv.f_frsize > 16u * 1024 * 1024)
        HC_SKIP("full: wants TMPDIR on a small filesystem (tests/tilecache.cmake mounts one)");

    struct hc_tc *tc = open_cache(0, 0, 600000);
    struct hc_tc_entry e;
    char keys[64][HC_TC_KEY_LEN + 1];
    int n = 0, rc;
    for (;; n++) {
        HC_CHECK(n < 64);
        key_n(900 + (uint64_t)n, keys[n]);
        rc = try_done(tc, keys[n], 900 + (uint64_t)n);
        if (rc)
            break;
    }
    HC_CHECK_MSG(rc == -ENOSPC, "filling stopped with %d (%s)", rc, hc_last_error());
    HC_CHECK_MSG(n >= 4, "only %d entries fit", n);

    /* Tiles on a full disk: -ENOSPC, nothing half-written left. */
    char k[HC_TC_KEY_LEN + 1], tdir[2 * PATH_MAX];
    key_n(999, k);
    if (hc_tc_begin(tc, k, HC_FORMAT_PNG, &e) == 0) {
        static unsigned char tile[FULL_OUT];
        for (uint32_t i = 0;; i++) {
            HC_CHECK(i < 100);
            rc = hc_tc_tile_put(tc, k, i, tile, sizeof tile);
            if (rc)
                break;
        }
        HC_CHECK_EQ(rc, -ENOSPC);
        snprintf(tdir, sizeof tdir, "%s/cache/tiles/%s", g_tmp, k);
        DIR *d = opendir(tdir);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL)
            HC_CHECK_MSG(de->d_name[0] != '.' || !strcmp(de->d_name, ".") ||
                             !strcmp(de->d_name, ".."),
                         "temp tile %s left", de->d_name);
        if (d)
            closedir(d);
    }

    /* Someone else takes every byte left. */
    char junk[PATH_MAX + 16];
    snprintf(junk, sizeof junk, "%s/junk", g_tmp);
    int fd = open(junk, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    HC_CHECK(fd >= 0);
    static unsigned char zeros[4096];
    while (write(fd, zeros, sizeof zeros) > 0)
        ;
    close(fd);

    /* What is finished is still served. */
    for (int i = 0; i < n; i++) {
        rc = hc_tc_lookup(tc, keys[i], &e);
        HC_CHECK_MSG(rc == 0, "lookup on a full disk: %d %s", rc, hc_last_error());
        HC_CHECK_EQ(e.state, HC_TC_DONE);
        HC_CHECK_EQ(e.size, FULL_OUT);
    }
    hc_tc_close(tc);

    /* Reopen on the full disk (recovery must manage), asking for free space it cannot get
     * without evicting. */
    uint64_t want_free = 3 * FULL_OUT;
    tc = open_cache(0, want_free, 600000);
    /* (the evictor thread, woken at open, may be at it already) */
    rc = hc_tc_evict(tc);
    HC_CHECK_MSG(rc == 0, "evict: %d %s", rc, hc_last_error());
    uint64_t freed_to = free_bytes(g_tmp);
    /* Checked with no free-space bound: lookups write access times, which take WAL space and
     * would set the evictor going again while we count. */
    hc_tc_close(tc);
    tc = open_cache(0, 0, 600000);
    int kept = 0;
    static unsigned char got[FULL_OUT + 1], ref[FULL_OUT];
    for (int i = 0; i < n; i++) {
        HC_CHECK(hc_tc_lookup(tc, keys[i], &e) == 0);
        if (e.state == HC_TC_ABSENT)
            continue;
        HC_CHECK_EQ(e.state, HC_TC_DONE);
        fill(ref, FULL_OUT, 900 + (uint64_t)i);
        HC_CHECK_EQ(read_file(e.path, got, sizeof got), FULL_OUT);
        HC_CHECK(memcmp(got, ref, FULL_OUT) == 0);
        kept++;
    }
    HC_CHECK_MSG(freed_to >= want_free || kept <= 1, "free %llu, %d kept",
                 (unsigned long long)freed_to, kept);
    HC_CHECK_MSG(kept < n, "nothing was evicted");
    struct hc_tc_stats s;
    hc_tc_stats(tc, &s);
    HC_CHECK_EQ(s.entries, (uint64_t)kept);
    HC_CHECK_EQ(s.bytes, (uint64_t)kept * FULL_OUT);

    /* With the space back, the cache works as before. */
    HC_CHECK(unlink(junk) == 0);
    key_n(998, k);
    HC_CHECK_MSG(try_done(tc, k, 998) == 0, "%s", hc_last_error());
    HC_CHECK_EQ(state_of(tc, k), HC_TC_DONE);
    hc_tc_close(tc);
}

int
main(int argc, char **argv)
{
    static const struct hc_test_case cases[] = {
        {"key", test_key},       {"key_xxhsum", test_key_xxhsum},
        {"states", test_states}, {"tiles", test_tiles},
        {"evict", test_evict},   {"evict_background", test_evict_background},
        {"pin", test_pin},       {"concurrency", test_concurrency},
        {"crash", test_crash},   {"reopen", test_reopen},
        {"full", test_full},
    };
    return hc_test_main("test_tilecache", argc, argv, cases, sizeof cases / sizeof cases[0],
                        make_tmp);
}
