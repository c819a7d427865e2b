/* main.c: hcfs - mount options, start-up, clean shutdown.
 *
 * Order matters: everything that can fail for a reason the user should see (options,
 * directories, the cache, the service URLs) is checked before the daemon forks; threads
 * (job workers, the cache's evictor, libcurl) are started after the fork, since fork keeps
 * only the calling thread.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backing.h"
#include "hcfs.h"

#include <fuse_lowlevel.h>

#include "cpu.h"
#include "error.h"

#define OPT(t, p, v)                                                                               \
    {                                                                                              \
        t, offsetof(struct hcfs, p), v                                                             \
    }

enum { KEY_HELP, KEY_VERSION, KEY_PREFETCH, KEY_NOPREFETCH };

static const struct fuse_opt hc_opts[] = {
    OPT("service=%s", service, 0),
    OPT("token_file=%s", token_file, 0),
    OPT("data=%s", data_opt, 0),
    OPT("cache=%s", cache_opt, 0),
    OPT("scale=%d", scale, 0),
    OPT("filter=%s", filter_name, 0),
    OPT("quality=%d", quality, 0),
    OPT("tile=%d", tile, 0),
    OPT("jobs=%d", njobs, 0),
    OPT("cache_max=%s", cache_max_opt, 0),
    OPT("cache_min_free=%s", cache_min_free_opt, 0),
    OPT("timeout=%d", timeout_s, 0),
    OPT("retries=%d", retries, 0),
    OPT("exact_size", exact_size, 1),
    OPT("store_tiles", store_tiles, 1),
    OPT("nostore_tiles", store_tiles, 0),
    FUSE_OPT_KEY("prefetch", KEY_PREFETCH),
    FUSE_OPT_KEY("noprefetch", KEY_NOPREFETCH),
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_END,
};

static int show_help, show_version;

static void
usage(const char *prog)
{
    char ddata[PATH_MAX] = "(none: no home directory)", dcache[PATH_MAX] = "(none)";
    (void)hc_platform_default_dirs(ddata, sizeof(ddata), dcache, sizeof(dcache));
    printf(
        "usage: %s MOUNTPOINT [-f] [-d] [-o OPTION[,OPTION...]]\n"
        "\n"
        "Mounts HybridCompute: copy images into MOUNTPOINT/input/, read them upscaled from\n"
        "MOUNTPOINT/upscaled/<same name>. See fs/README.md.\n"
        "\n"
        "hcfs options:\n"
        "    -o service=URL[,URL...]  hc-gpu-service base URLs (round-robin, failover);\n"
        "                             without it, upscaling runs in this process\n"
        "    -o token_file=FILE       bearer token for the service (first line)\n"
        "    -o data=DIR              where input/ is stored (default %s)\n"
        "    -o cache=DIR             upscaled outputs and tiles (default %s)\n"
        "    -o scale=N               upscaling factor 1..%d (default 2)\n"
        "    -o filter=bicubic        filter (default bicubic)\n"
        "    -o quality=Q             JPEG quality 1..100 (default 95)\n"
        "    -o tile=N                output tile edge (default 256 with a service, bands\n"
        "                             in process)\n"
        "    -o jobs=N                jobs running at once (default 4)\n"
        "    -o cache_max=SIZE        cache size bound, e.g. 500M, 20G (default none)\n"
        "    -o cache_min_free=SIZE   keep this much disk free (default 1G)\n"
        "    -o timeout=SECONDS       per request attempt to the service (default 60)\n"
        "    -o retries=N             extra attempts per request (default 3)\n"
        "    -o prefetch|noprefetch   queue a job when a file in input/ is written (default on)\n"
        "    -o exact_size            stat of upscaled/ files waits for their job (exact size)\n"
        "    -o nostore_tiles         do not keep a service's tiles for resuming failed jobs\n"
        "    -V, --version            print the version\n"
        "\n"
        "FUSE options:\n",
        prog, ddata, dcache, HC_MAX_SCALE);
    fuse_cmdline_help();
    fuse_lib_help(NULL);
}

static int
opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    struct hcfs *fs = data;
    (void)outargs;
    switch (key) {
    case KEY_HELP:
        show_help = 1;
        return 0;
    case KEY_VERSION:
        show_version = 1;
        return 0;
    case KEY_PREFETCH:
        fs->prefetch = 1;
        return 0;
    case KEY_NOPREFETCH:
        fs->prefetch = 0;
        return 0;
    case FUSE_OPT_KEY_OPT:
        /* -o service=URL1,URL2: fuse_opt splits at the comma, so the URLs after the first
         * arrive here on their own; they join the list. */
        if (fs->service && (strncmp(arg, "http://", 7) == 0 || strncmp(arg, "https://", 8) == 0)) {
            size_t n = strlen(fs->service) + strlen(arg) + 2;
            char *joined = malloc(n);
            if (!joined)
                return -1;
            snprintf(joined, n, "%s,%s", fs->service, arg);
            free(fs->service);
            fs->service = joined;
            return 0;
        }
        return 1;
    default:
        return 1; /* everything else is for FUSE */
    }
}

/* "500M", "20G", "1048576" -> bytes. */
static int
parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    uint64_t mul = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mul = 1ull << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1ull << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1ull << 30;
        end++;
        break;
    case 't':
    case 'T':
        mul = 1ull << 40;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'B' || *end == 'b' || *end == 'i')
        end += (*end == 'i' && (end[1] == 'B' || end[1] == 'b')) ? 2 : 1;
    if (*end != '\0' || (mul > 1 && v > UINT64_MAX / mul))
        return -EINVAL;
    *out = (uint64_t)v * mul;
    return 0;
}

/* mkdir -p, then the absolute, symlink-free path into out. */
static int
make_dir(const char *path, char *out, size_t len)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return -errno;
    char real[PATH_MAX];
    if (!realpath(tmp, real))
        return -errno;
    struct stat st;
    if (stat(real, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (snprintf(out, len, "%s", real) >= (int)len)
        return -ENAMETOOLONG;
    return 0;
}

static int
split_urls(char *s, const char ***urls, size_t *n)
{
    size_t cap = 1;
    for (char *p = s; *p; p++)
        cap += *p == ',';
    const char **v = calloc(cap, sizeof(*v));
    if (!v)
        return -ENOMEM;
    size_t k = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (*t)
            v[k++] = t;
    if (k == 0) {
        free(v);
        return -EINVAL;
    }
    *urls = v;
    *n = k;
    return 0;
}

static int
open_client(struct hcfs *fs, struct hc_client **out)
{
    const char **urls = NULL;
    size_t n = 0;
    char *token = NULL, *copy = strdup(fs->service);
    int r;
    if (!copy)
        return -ENOMEM;
    if ((r = split_urls(copy, &urls, &n)) < 0) {
        hc_error(r, "hcfs", "service= names no URL");
        goto out;
    }
    if (fs->token_file && (r = hc_client_read_token(fs->token_file, &token)) < 0)
        goto out;
    struct hc_client_opts o;
    hc_client_opts_default(&o);
    o.urls = urls;
    o.nurls = n;
    o.token = token;
    if (fs->timeout_s > 0) {
        o.timeout_ms = fs->timeout_s * 1000;
        if (o.connect_timeout_ms > o.timeout_ms)
            o.connect_timeout_ms = o.timeout_ms;
    }
    if (fs->retries >= 0)
        o.retries = fs->retries;
    r = hc_client_open(&o, out);
out:
    free(token);
    free(urls);
    free(copy);
    return r;
}

static int
check_options(struct hcfs *fs)
{
    if (fs->scale < 1 || fs->scale > HC_MAX_SCALE)
        return hc_error(-EINVAL, "hcfs", "scale=%d: must be 1..%d", fs->scale, HC_MAX_SCALE);
    if (fs->quality < 1 || fs->quality > 100)
        return hc_error(-EINVAL, "hcfs", "quality=%d: must be 1..100", fs->quality);
    if (fs->tile < 0 || fs->tile > 65536)
        return hc_error(-EINVAL, "hcfs", "tile=%d: must be 0..65536", fs->tile);
    if (fs->njobs < 1 || fs->njobs > 256)
        return hc_error(-EINVAL, "hcfs", "jobs=%d: must be 1..256", fs->njobs);
    if (fs->timeout_s < 0 || fs->timeout_s > 86400)
        return hc_error(-EINVAL, "hcfs", "timeout=%d: must be 0..86400", fs->timeout_s);
    if (fs->filter_name && strcmp(fs->filter_name, "bicubic") != 0)
        return hc_error(-EINVAL, "hcfs", "filter=%s: the only filter is bicubic", fs->filter_name);
    fs->filter = HC_FILTER_BICUBIC;
    if (fs->cache_max_opt && parse_size(fs->cache_max_opt, &fs->cache_max) < 0)
        return hc_error(-EINVAL, "hcfs", "cache_max=%s: not a size (e.g. 500M, 20G)",
                        fs->cache_max_opt);
    fs->cache_min_free = 1ull << 30;
    if (fs->cache_min_free_opt && parse_size(fs->cache_min_free_opt, &fs->cache_min_free) < 0)
        return hc_error(-EINVAL, "hcfs", "cache_min_free=%s: not a size", fs->cache_min_free_opt);
    if (fs->token_file && !fs->service)
        return hc_error(-EINVAL, "hcfs", "token_file= needs service=");

    char ddata[PATH_MAX], dcache[PATH_MAX];
    int r = hc_platform_default_dirs(ddata, sizeof(ddata), dcache, sizeof(dcache));
    if (r < 0 && (!fs->data_opt || !fs->cache_opt))
        return hc_error(r, "hcfs", "no home directory: give data= and cache=");
    r = make_dir(fs->data_opt ? fs->data_opt : ddata, fs->data, sizeof(fs->data));
    if (r < 0)
        return hc_error(r, "hcfs", "data directory %s: %s", fs->data_opt ? fs->data_opt : ddata,
                        strerror(-r));
    r = make_dir(fs->cache_opt ? fs->cache_opt : dcache, fs->cache, sizeof(fs->cache));
    if (r < 0)
        return hc_error(r, "hcfs", "cache directory %s: %s", fs->cache_opt ? fs->cache_opt : dcache,
                        strerror(-r));
    return 0;
}

static int
open_cache(struct hcfs *fs, struct hc_tc **out)
{
    struct hc_tc_opts o = {
        .dir = fs->cache,
        .max_bytes = fs->cache_max,
        .min_free_bytes = fs->cache_min_free,
    };
    return hc_tc_open(&o, out);
}

/* Everything with threads, after the fork. */
static int
start_parts(struct hcfs *fs)
{
    int r;
    if ((r = open_cache(fs, &fs->tc)) < 0)
        return r;
    if (fs->service && (r = open_client(fs, &fs->client)) < 0)
        return r;
    if ((r = hc_probecache_new(65536, &fs->probes)) < 0)
        return hc_error(r, "hcfs", "out of memory");
    char pf[PATH_MAX + 16];
    snprintf(pf, sizeof(pf), "%s/hcfs-paths", fs->cache);
    if ((r = hc_pathmap_open(pf, &fs->paths)) < 0)
        return r;
    struct hc_jobs_cfg jc = {
        .tc = fs->tc,
        .data_dir = fs->data,
        .scale = fs->scale,
        .filter = fs->filter,
        .quality = fs->quality,
        .tile = fs->tile,
        .nworkers = fs->njobs,
        .nthreads = 0,
        .client = fs->client,
        .store_tiles = fs->store_tiles,
        .paths = fs->paths,
        .on_end = hc_fs_job_ended,
        .on_end_ctx = fs,
    };
    hc_limits_default(&jc.limits);
    return hc_jobs_start(&jc, &fs->jobs);
}

int
main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts co;
    struct hcfs fs;
    struct fuse_session *se = NULL;
    int ret = 1, mounted = 0, handlers = 0;

    memset(&fs, 0, sizeof(fs));
    fs.session_fd = -1;
    memset(&co, 0, sizeof(co));
    fs.scale = 2;
    fs.quality = 95;
    fs.njobs = 4;
    fs.prefetch = 1;
    fs.store_tiles = 1;
    fs.retries = -1;

    if (fuse_opt_parse(&args, &fs, hc_opts, opt_proc) < 0)
        goto out_usage;
    if (show_version) {
        printf("hcfs %s (libfuse %s)\n", HC_VERSION, fuse_pkgversion());
        ret = 0;
        goto out;
    }
    if (show_help) {
        usage(argv[0]);
        ret = 0;
        goto out;
    }
    if (fuse_parse_cmdline(&args, &co) != 0)
        goto out_usage;
    if (!co.mountpoint) {
        fprintf(stderr, "hcfs: no mount point given (try --help)\n");
        goto out_usage;
    }
    if (check_options(&fs) < 0) {
        fprintf(stderr, "%s\n", hc_last_error());
        ret = 1;
        goto out;
    }
    /* data/ or cache/ under the mount point would be reached through hcfs itself once
     * mounted: every access would wait on a FUSE request only hcfs can answer. */
    {
        char mp[PATH_MAX];
        if (realpath(co.mountpoint, mp)) {
            snprintf(fs.mountpoint, sizeof(fs.mountpoint), "%s", mp);
            size_t n = strlen(mp);
            const char *dirs[2] = {fs.data, fs.cache};
            for (int i = 0; i < 2; i++) {
                if (strncmp(dirs[i], mp, n) == 0 && (dirs[i][n] == '/' || dirs[i][n] == '\0')) {
                    fprintf(stderr, "hcfs: %s is inside the mount point %s\n", dirs[i], mp);
                    goto out;
                }
            }
        }
    }

    /* Fail in the foreground for what would otherwise only show in a daemon's log. */
    {
        struct hc_tc *tc = NULL;
        struct hc_client *c = NULL;
        if (open_cache(&fs, &tc) < 0 || (fs.service && open_client(&fs, &c) < 0)) {
            fprintf(stderr, "%s\n", hc_last_error());
            hc_tc_close(tc);
            goto out;
        }
        hc_client_close(c);
        hc_tc_close(tc);
    }

    char extra[512];
    const char *po = hc_platform_mount_opts();
    snprintf(extra, sizeof(extra), "-ofsname=hcfs,subtype=hcfs%s%s", *po ? "," : "", po);
    if (fuse_opt_add_arg(&args, extra) < 0)
        goto out;

    fs.fuse = fuse_new(&args, &hc_fs_ops, sizeof(hc_fs_ops), &fs);
    if (!fs.fuse)
        goto out;
    if (fuse_mount(fs.fuse, co.mountpoint) != 0)
        goto out;
    mounted = 1;
    clock_gettime(CLOCK_REALTIME, &fs.mounted_at);
    if (fuse_daemonize(co.foreground) != 0)
        goto out;
    se = fuse_get_session(fs.fuse);
    if (fuse_set_signal_handlers(se) != 0)
        goto out;
    handlers = 1;

    hc_platform_raise_nofile();
    if (start_parts(&fs) < 0) {
        fprintf(stderr, "error hcfs: %s\n", hc_last_error());
        goto out;
    }
    fprintf(stderr, "info hcfs: mounted %s (data %s, cache %s, %s, scale %d, jobs %d)\n",
            co.mountpoint, fs.data, fs.cache, fs.service ? fs.service : "in-process", fs.scale,
            fs.njobs);

    /* Every reader waiting in open() holds a worker thread: leave plenty for the rest. */
#if FUSE_USE_VERSION >= 312
    /* fuse_parse_cmdline leaves UINT_MAX when -o max_threads= was not given. */
    unsigned maxt = co.max_threads > 0 && co.max_threads <= 100000 ? co.max_threads : 0;
#else
    unsigned maxt = 0;
#endif
    if (maxt < 256)
        maxt = 256;
    unsigned idle =
        co.max_idle_threads > 0 && co.max_idle_threads <= maxt ? co.max_idle_threads : 16;
    ret = co.singlethread ? fuse_loop(fs.fuse) : hc_platform_loop(fs.fuse, maxt, idle);
    /* libfuse reports the signal that ended the loop; SIGTERM/SIGINT/SIGHUP are the normal
     * way to stop a daemon, so they end in status 0 like fusermount3 -u does. */
    ret = (ret == 0 || ret == SIGTERM || ret == SIGINT || ret == SIGHUP) ? 0 : 1;
    fprintf(stderr, "info hcfs: unmounting\n");
    /* Lingering passthrough ids go back while /dev/fuse is still open. */
    hc_backing_stop(fs.backing);

out:
    /* The loop has ended: no reader waits any more. Cancel and join the jobs (each removes
     * its temporary file) before the cache closes. */
    hc_jobs_stop(fs.jobs);
    fs.jobs = NULL;
    if (handlers)
        fuse_remove_signal_handlers(se);
    if (mounted)
        fuse_unmount(fs.fuse);
    if (fs.fuse)
        fuse_destroy(fs.fuse);
    hc_client_close(fs.client);
    hc_probecache_free(fs.probes);
    hc_backing_free(fs.backing);
    hc_pathmap_close(fs.paths);
    hc_tc_close(fs.tc);
    free(co.mountpoint);
    fuse_opt_free_args(&args);
    free(fs.service);
    free(fs.token_file);
    free(fs.data_opt);
    free(fs.cache_opt);
    free(fs.filter_name);
    free(fs.cache_max_opt);
    free(fs.cache_min_free_opt);
    return ret;

out_usage:
    ret = 2;
    goto out;
}
