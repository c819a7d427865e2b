/* hc: the command-line tool. upscale (in-process or through hc-gpu-service), the three-step
 * workflow (split, upscale elsewhere, stitch) and header probes.
 *
 * Exit status: 0 success, 1 bad input or failed job (one line on stderr naming the problem),
 * 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "cpu.h"
#include "error.h"
#include "pipeline.h"
#include "tileset.h"
#ifdef HC_HAVE_CLIENT
#include "client.h"
#endif

#define EXIT_BAD_INPUT 1
#define EXIT_USAGE 2
#define MAX_SERVICE_URLS 16
#define STR_(x) #x
#define STR(x) STR_(x)

static const char usage_text[] =
    "usage: hc <command> [options]\n"
    "\n"
    "commands:\n"
    "  upscale IN OUT [--scale N] [--tile N] [--filter bicubic] [--quality Q]\n"
    "                 [--service URL[,URL...]] [--token-file F] [--threads N]\n"
    "                 [--max-pixels N] [--quiet]\n"
    "      upscale IN into OUT; OUT's extension (.png .jpg .jpeg .bmp .tga) picks the\n"
    "      format (others are refused). Without --service the work runs in this process.\n"
    "  split IN DIR [--scale N] [--tile N]\n"
    "      write IN's padded source tiles and a manifest into DIR, to upscale elsewhere\n"
    "      into DIR/upscaled/tile-NNNNN.png (an earlier tileset's files there are removed)\n"
    "  stitch DIR OUT [--quality Q]\n"
    "      put DIR/upscaled/ tiles back together into OUT\n"
    "  probe FILE...\n"
    "      print format, size, channels and bit depth read from the header\n"
    "\n"
    "options:\n"
    "  --scale N        integer factor 1..8 (default 2)\n"
    "  --tile N         output tile edge in pixels (default: untiled in-process,\n"
    "                   256 with --service, 256 for split)\n"
    "  --filter NAME    bicubic (OpenCV INTER_CUBIC, exactly)\n"
    "  --quality Q      JPEG quality 1..100 (default 95)\n"
    "  --service URLS   hc-gpu-service base URLs, comma separated (round robin, failover)\n"
    "  --token-file F   bearer token for the service, read from F\n"
    "  --threads N      CPU threads for in-process work (default: all)\n"
    "  --max-pixels N   refuse inputs larger than N pixels (default 100000000)\n"
    "  --quiet, -q      no progress bar\n"
    "  --help, -h       this text\n"
    "  --version        hc's version\n";

static int
usage_error(const char *fmt, const char *arg)
{
    fputs("hc: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'hc --help'.\n", stderr);
    return EXIT_USAGE;
}

static int
fail(void)
{
    fprintf(stderr, "hc: %s\n", hc_last_error());
    return EXIT_BAD_INPUT;
}

/* Same, naming the file the job was about. */
static int
fail_on(const char *path)
{
    fprintf(stderr, "hc: %s: %s\n", path, hc_last_error());
    return EXIT_BAD_INPUT;
}

/* Parses a whole decimal number in [lo, hi]; -1 when it is not one. */
static long long
parse_num(const char *s, long long lo, long long hi)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    return v;
}

/* OUT's extension names the output format; one we cannot write is a usage error (as in
 * cv2.imwrite and vips), rather than writing another format under that name. */
static int
check_out_name(const char *out)
{
    if (hc_format_from_path(out) == HC_FORMAT_UNKNOWN)
        return usage_error("OUT must end in .png, .jpg, .jpeg, .bmp or .tga (the output "
                           "format), not '%s'",
                           out);
    return 0;
}

/* ---- progress bar (terminal only) ---- */

struct progress {
    int on;
    int last_pct;
    struct timespec t0;
};

static void
progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    struct progress *p = ctx;
    int pct = total ? (int)(done * 100 / total) : 100, fill = pct * 30 / 100;
    struct timespec now;

    if (!p->on || pct == p->last_pct)
        return;
    p->last_pct = pct;
    clock_gettime(CLOCK_MONOTONIC, &now);
    fprintf(stderr, "\r[%.*s%*s] %3d%% %5.1fs", fill, "##############################", 30 - fill,
            "", pct, (double)(now.tv_sec - p->t0.tv_sec) + (now.tv_nsec - p->t0.tv_nsec) / 1e9);
    fflush(stderr);
}

static void
progress_end(struct progress *p)
{
    if (p->on && p->last_pct >= 0)
        fputc('\n', stderr);
}

enum {
    OPT_SCALE = 256,
    OPT_TILE,
    OPT_FILTER,
    OPT_QUALITY,
    OPT_SERVICE,
    OPT_TOKEN_FILE,
    OPT_THREADS,
    OPT_MAX_PIXELS,
};

static const struct option long_opts[] = {
    {"scale", required_argument, NULL, OPT_SCALE},
    {"tile", required_argument, NULL, OPT_TILE},
    {"filter", required_argument, NULL, OPT_FILTER},
    {"quality", required_argument, NULL, OPT_QUALITY},
    {"service", required_argument, NULL, OPT_SERVICE},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"max-pixels", required_argument, NULL, OPT_MAX_PIXELS},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

struct args {
    struct hc_upscale_opts up;
    const char *service;
    const char *token_file;
    int quiet;
    int tile_given;
};

/* Parses options after the command name; leaves positional arguments at argv[optind..]. */
static int
parse_opts(int argc, char **argv, struct args *a)
{
    int c;
    long long v;

    hc_upscale_opts_default(&a->up);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":qh", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_SCALE:
            if ((v = parse_num(optarg, 1, HC_MAX_SCALE)) < 0)
                return usage_error("--scale must be an integer from 1 to 8, not '%s'", optarg);
            a->up.scale = (int)v;
            break;
        case OPT_TILE:
            if ((v = parse_num(optarg, 1, 65536)) < 0)
                return usage_error("--tile must be an integer from 1 to 65536, not '%s'", optarg);
            a->up.tile = (int)v;
            a->tile_given = 1;
            break;
        case OPT_FILTER:
            if (strcmp(optarg, "bicubic"))
                return usage_error("unknown filter '%s' (available: bicubic)", optarg);
            a->up.filter = HC_FILTER_BICUBIC;
            break;
        case OPT_QUALITY:
            if ((v = parse_num(optarg, 1, 100)) < 0)
                return usage_error("--quality must be an integer from 1 to 100, not '%s'", optarg);
            a->up.writer.quality = (int)v;
            break;
        case OPT_SERVICE:
            a->service = optarg;
            break;
        case OPT_TOKEN_FILE:
            a->token_file = optarg;
            break;
        case OPT_THREADS:
            if ((v = parse_num(optarg, 1, 1024)) < 0)
                return usage_error("--threads must be an integer from 1 to 1024, not '%s'", optarg);
            a->up.nthreads = (int)v;
            break;
        case OPT_MAX_PIXELS:
            if ((v = parse_num(optarg, 1, (long long)1 << 40)) < 0)
                return usage_error("--max-pixels must be a positive integer, not '%s'", optarg);
            a->up.limits.max_pixels = (uint64_t)v;
            break;
        case 'q':
            a->quiet = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            exit(0);
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    return 0;
}

/* SIGINT/SIGTERM ask the job to stop at the next band: the writer then removes its temporary
 * file, where dying at once would leave it behind. */
static volatile int stop_requested; /* int, not sig_atomic_t: the job polls it as an int */

static void
on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void
catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static int
cmd_upscale(int argc, char **argv)
{
    struct args a = {0};
    struct progress prog = {0};
    const char *in, *out;
    int res;

    if ((res = parse_opts(argc, argv, &a)))
        return res;
    if (argc - optind != 2)
        return usage_error("%s", "upscale needs IN and OUT");
    in = argv[optind];
    out = argv[optind + 1];
    if (!strcmp(in, out))
        return usage_error("%s", "IN and OUT must differ");
    if ((res = check_out_name(out)))
        return res;

    prog.on = !a.quiet && isatty(STDERR_FILENO);
    prog.last_pct = -1;
    clock_gettime(CLOCK_MONOTONIC, &prog.t0);
    a.up.progress = progress_cb;
    a.up.progress_ctx = &prog;
    a.up.cancel = &stop_requested;
    catch_signals();

    if (a.service) {
#ifdef HC_HAVE_CLIENT
        struct hc_client_opts co;
        struct hc_client *cl = NULL;
        const char *urls[MAX_SERVICE_URLS];
        char *list = strdup(a.service), *save = NULL, *tok, *token = NULL;
        size_t n = 0;

        if (!list) {
            fprintf(stderr, "hc: out of memory\n");
            return EXIT_BAD_INPUT;
        }
        for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (n == MAX_SERVICE_URLS) {
                free(list);
                return usage_error("--service takes at most %s URLs", STR(MAX_SERVICE_URLS));
            }
            urls[n++] = tok;
        }
        if (!n) {
            free(list);
            return usage_error("%s", "--service needs at least one URL");
        }
        hc_client_opts_default(&co);
        co.urls = urls;
        co.nurls = n;
        co.cancel = &stop_requested;
        if (a.token_file && hc_client_read_token(a.token_file, &token)) {
            free(list);
            return fail();
        }
        co.token = token;
        res = hc_client_open(&co, &cl);
        if (!res)
            res = hc_upscale_file(in, out, &a.up, &hc_backend_http, cl);
        hc_client_close(cl);
        free(token);
        free(list);
#else
        return usage_error("%s", "--service is not built in (libcurl was not found at build time)");
#endif
    } else {
        if (a.token_file)
            return usage_error("%s", "--token-file needs --service");
        res = hc_upscale_file(in, out, &a.up, NULL, NULL);
    }
    progress_end(&prog);
    if (res == -ECANCELED && stop_requested) {
        fprintf(stderr, "hc: interrupted; nothing written at %s\n", out);
        return 130;
    }
    return res ? fail_on(in) : 0;
}

static int
cmd_split(int argc, char **argv)
{
    struct args a = {0};
    int res;

    if ((res = parse_opts(argc, argv, &a)))
        return res;
    if (argc - optind != 2)
        return usage_error("%s", "split needs IN and DIR");
    if (hc_tileset_split(argv[optind], argv[optind + 1], a.up.scale, a.tile_given ? a.up.tile : 256,
                         &a.up.limits))
        return fail_on(argv[optind]);
    return 0;
}

static int
cmd_stitch(int argc, char **argv)
{
    struct args a = {0};
    int res;

    if ((res = parse_opts(argc, argv, &a)))
        return res;
    if (argc - optind != 2)
        return usage_error("%s", "stitch needs DIR and OUT");
    if ((res = check_out_name(argv[optind + 1])))
        return res;
    if (hc_tileset_stitch(argv[optind], argv[optind + 1], &a.up.writer))
        return fail_on(argv[optind]);
    return 0;
}

static int
cmd_probe(int argc, char **argv)
{
    struct args a = {0};
    int res, status = 0;

    if ((res = parse_opts(argc, argv, &a)))
        return res;
    if (argc - optind < 1)
        return usage_error("%s", "probe needs at least one FILE");
    for (int i = optind; i < argc; i++) {
        struct hc_image_info info;

        if (hc_probe_file(argv[i], &info)) {
            fprintf(stderr, "hc: %s: %s\n", argv[i], hc_last_error());
            status = EXIT_BAD_INPUT;
            continue;
        }
        printf("%s: %s %dx%d %d channel%s %d-bit\n", argv[i], hc_format_name(info.format),
               info.width, info.height, info.channels, info.channels == 1 ? "" : "s", info.depth);
    }
    return status;
}

int
main(int argc, char **argv)
{
    const char *cmd;

    if (argc < 2)
        return usage_error("%s", "no command given");
    cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("hc %s (SIMD: %s)\n", HC_VERSION, hc_simd_name(hc_cpu_level()));
        return 0;
    }
    if (!strcmp(cmd, "upscale"))
        return cmd_upscale(argc - 1, argv + 1);
    if (!strcmp(cmd, "split"))
        return cmd_split(argc - 1, argv + 1);
    if (!strcmp(cmd, "stitch"))
        return cmd_stitch(argc - 1, argv + 1);
    if (!strcmp(cmd, "probe"))
        return cmd_probe(argc - 1, argv + 1);
    return usage_error("unknown command '%s'", cmd);
}
