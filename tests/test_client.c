/* test_client: the HTTP tile client (client/) against real hc-gpu-service processes.
 *
 * Usage: test_client NAME (one ctest test per name, see tests/client.cmake). Every test
 * starts the services it needs on 127.0.0.1 port 0 (cpu backend), and kills them when it
 * exits, whatever way it exits (atexit, fatal signals, and PR_SET_PDEATHSIG on Linux should
 * the test itself be killed). Tiles that come back are compared with
 * hc_bicubic_resize_ref() (core's scalar reference) computed here over the whole image.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <zstd.h>

#include "bicubic.h"
#include "check.h"
#include "client.h"
#include "error.h"
#include "tile.h"
#include "wire.h"

/* ---- processes --------------------------------------------------------------------------- */

#define MAX_SERVICES 8

struct service {
    pid_t pid;
    int port;
    char url[64];
};

static pid_t g_pids[MAX_SERVICES];
static int g_npids;
static char g_tmpdir[256];

static void
kill_all(void)
{
    for (int i = 0; i < g_npids; i++)
        if (g_pids[i] > 0) {
            kill(-g_pids[i], SIGKILL);
            kill(g_pids[i], SIGKILL);
            waitpid(g_pids[i], NULL, 0);
            g_pids[i] = 0;
        }
}

static int g_passed;

static void
cleanup(void)
{
    kill_all();
    if (g_tmpdir[0] && !g_passed) {
        /* A failed test shows what its services said (their stderr logs). */
        char cmd[400];
        snprintf(cmd, sizeof cmd, "tail -n 20 '%s'/service-*.log >&2 2>/dev/null", g_tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "(no service logs)\n");
    }
    if (g_tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "test_client: could not remove %s\n", g_tmpdir);
    }
}

static void
on_fatal_signal(int sig)
{
    /* Only async-signal-safe calls here: kill the services, then die of the same signal. */
    for (int i = 0; i < g_npids; i++)
        if (g_pids[i] > 0)
            kill(-g_pids[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *
service_path(void)
{
    static char path[1024];
    const char *bd = getenv("HC_BUILD_DIR");
    snprintf(path, sizeof path, "%s/bin/hc-gpu-service", bd ? bd : "build");
    return path;
}

/* Starts hc-gpu-service --listen 127.0.0.1:0 --backend cpu [extra args] and reads the port
 * it prints on stdout (the last number of the first line that holds one). */
static void
service_start(struct service *s, const char *const *extra)
{
    const char *argv[32];
    int a = 0;
    argv[a++] = service_path();
    argv[a++] = "--listen";
    argv[a++] = "127.0.0.1:0";
    argv[a++] = "--backend";
    argv[a++] = "cpu";
    for (int i = 0; extra && extra[i] && a < 30; i++)
        argv[a++] = extra[i];
    argv[a] = NULL;

    int pfd[2];
    HC_CHECK(pipe(pfd) == 0);
    char log[400];
    snprintf(log, sizeof log, "%s/service-%d.log", g_tmpdir, g_npids);
    pid_t pid = fork();
    HC_CHECK(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        dup2(pfd[1], 1);
        int lf = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (lf >= 0)
            dup2(lf, 2);
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    setpgid(pid, pid);
    HC_CHECK(g_npids < MAX_SERVICES);
    g_pids[g_npids++] = pid;
    close(pfd[1]);

    char buf[512];
    size_t len = 0;
    int port = 0;
    uint64_t deadline = now_ms() + 15000;
    while (!port && now_ms() < deadline && len < sizeof buf - 1) {
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(pfd[0], buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        for (char *line = buf, *nl; !port && (nl = strchr(line, '\n')); line = nl + 1) {
            int last = 0;
            for (char *p = line; p < nl; p++)
                if (*p >= '0' && *p <= '9') {
                    last = (int)strtol(p, &p, 10);
                    p--;
                }
            if (last > 0 && last < 65536)
                port = last;
        }
    }
    /* Keep the pipe's read end open for the service's lifetime: a service that writes more
     * to stdout must not die of SIGPIPE. It is a few fds for the whole test. */
    if (!port) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "cat '%s' >&2", log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no service log)\n");
        HC_CHECK_MSG(port, "hc-gpu-service printed no port within 15 s (stdout: '%s')", buf);
    }
    s->pid = pid;
    s->port = port;
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", port);
}

static void
service_kill(struct service *s)
{
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    for (int i = 0; i < g_npids; i++)
        if (g_pids[i] == s->pid)
            g_pids[i] = 0;
}

/* A port with nothing listening on it: bound, then closed. */
static int
dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    HC_CHECK(fd >= 0);
    HC_CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    HC_CHECK(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A listening socket that never accepts: connections complete in the kernel's backlog and
 * then nothing ever answers. Returns the fd (kept open by the caller) and its port. */
static int
silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    HC_CHECK(fd >= 0);
    HC_CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    HC_CHECK(listen(fd, 64) == 0);
    HC_CHECK(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* Established TCP connections to 127.0.0.1:port, from /proc/net/tcp (the kernel's view,
 * independent of the client's own counters). -1 where /proc is not there. */
static int
connections_to(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f)
        return -1;
    char line[512];
    int n = 0;
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        unsigned la, lp, ra, rp, st;
        if (sscanf(line, " %*d: %x:%x %x:%x %x", &la, &lp, &ra, &rp, &st) == 5 && (int)rp == port &&
            st == 1)
            n++;
    }
    fclose(f);
    return n;
}

/* A counter from the service's /metrics (Prometheus text), fetched over a plain socket so
 * that the check does not go through the code under test. `name` is the whole series name,
 * labels included ("hc_requests_total{code=\"429\"}"). */
static uint64_t
metric(const struct service *s, const char *name)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)s->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    HC_CHECK(fd >= 0);
    HC_CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    HC_CHECK(write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1));
    static char buf[1 << 17];
    size_t len = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        HC_CHECK_MSG(poll(&p, 1, 5000) == 1, "/metrics did not answer");
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        HC_CHECK(r >= 0);
        if (r == 0 || len + (size_t)r >= sizeof buf - 1)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    size_t nl = strlen(name);
    for (char *p = strstr(buf, name); p; p = strstr(p + 1, name))
        if ((p == buf || p[-1] == '\n') && p[nl] == ' ')
            return strtoull(p + nl + 1, NULL, 10);
    HC_CHECK_MSG(0, "no %s in /metrics", name);
    return 0;
}

/* The service counts a request when its answer has gone out (libmicrohttpd's completion
 * callback), which can be a moment after the client has it: wait up to 10 s for a counter
 * to reach `want`, and return what it says then. */
static uint64_t
metric_settled(const struct service *s, const char *name, uint64_t want)
{
    uint64_t v = 0, deadline = now_ms() + 10000;
    while ((v = metric(s, name)) != want && now_ms() < deadline) {
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    return v;
}

/* ---- images and tiles ------------------------------------------------------------------- */

struct job {
    struct hc_job_geom g;
    uint8_t *src; /* whole source image, packed */
    uint8_t *ref; /* whole reference output, packed */
    struct hc_tile *tiles;
    size_t ntiles;
    size_t plain_request_bytes;  /* wire size of the tiles' descriptors and pixels, */
    size_t plain_response_bytes; /* uncompressed, for the encoding checks */
};

/* smooth: a periodic gradient (compresses well, as photos do), else uniform noise. */
static void
job_make(struct job *j, int w, int h, int channels, int depth, int scale, int tile, int smooth)
{
    memset(j, 0, sizeof *j);
    j->g = (struct hc_job_geom){.src_w = w,
                                .src_h = h,
                                .scale = scale,
                                .channels = channels,
                                .depth = depth,
                                .filter = HC_FILTER_BICUBIC};
    size_t bpp = hc_pixel_bytes(channels, depth);
    int ow = w * scale, oh = h * scale;
    j->src = malloc((size_t)w * h * bpp);
    j->ref = malloc((size_t)ow * oh * bpp);
    HC_CHECK(j->src && j->ref);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++) {
                uint32_t v = smooth ? (uint32_t)((x * 3 + y * 2 + c * 40) & 0xff) : hc_test_rand();
                size_t i = ((size_t)y * w + x) * channels + c;
                if (depth == 8)
                    j->src[i] = (uint8_t)v;
                else
                    ((uint16_t *)j->src)[i] = (uint16_t)(smooth ? v * 257 : v);
            }

    struct hc_view sv = {.data = j->src,
                         .stride = (size_t)w * bpp,
                         .x = 0,
                         .y = 0,
                         .w = w,
                         .h = h,
                         .channels = channels,
                         .depth = depth};
    struct hc_view dv = {.data = j->ref,
                         .stride = (size_t)ow * bpp,
                         .x = 0,
                         .y = 0,
                         .w = ow,
                         .h = oh,
                         .channels = channels,
                         .depth = depth};
    HC_CHECK_MSG(hc_bicubic_resize_ref(&sv, w, h, scale, &dv) == 0, "%s", hc_last_error());

    int tx = (ow + tile - 1) / tile, ty = (oh + tile - 1) / tile;
    j->ntiles = (size_t)tx * ty;
    j->tiles = calloc(j->ntiles, sizeof *j->tiles);
    HC_CHECK(j->tiles);
    for (int r = 0; r < ty; r++)
        for (int c = 0; c < tx; c++) {
            struct hc_tile *t = &j->tiles[(size_t)r * tx + c];
            t->index = (uint32_t)(r * tx + c);
            t->out =
                (struct hc_rect){c * tile, r * tile, ow - c * tile < tile ? ow - c * tile : tile,
                                 oh - r * tile < tile ? oh - r * tile : tile};
            hc_tile_src_rect(w, h, scale, &t->out, &t->src);
            uint8_t *sp = malloc((size_t)t->src.w * t->src.h * bpp);
            t->out_px = malloc((size_t)t->out.w * t->out.h * bpp);
            HC_CHECK(sp && t->out_px);
            for (int y = 0; y < t->src.h; y++)
                memcpy(sp + (size_t)y * t->src.w * bpp,
                       j->src + ((size_t)(t->src.y + y) * w + t->src.x) * bpp,
                       (size_t)t->src.w * bpp);
            t->src_px = sp;
            j->plain_request_bytes += HC_WIRE_DESC_SIZE + (size_t)t->src.w * t->src.h * bpp;
            j->plain_response_bytes += HC_WIRE_DESC_SIZE + (size_t)t->out.w * t->out.h * bpp;
        }
}

static void
job_clear_out(struct job *j)
{
    size_t bpp = hc_pixel_bytes(j->g.channels, j->g.depth);
    for (size_t i = 0; i < j->ntiles; i++)
        memset(j->tiles[i].out_px, 0xA5, (size_t)j->tiles[i].out.w * j->tiles[i].out.h * bpp);
}

/* Every tile's out_px equals the reference's pixels of its rectangle. */
static void
job_verify(const struct job *j, const char *what)
{
    size_t bpp = hc_pixel_bytes(j->g.channels, j->g.depth);
    size_t ow = (size_t)j->g.src_w * j->g.scale;
    for (size_t i = 0; i < j->ntiles; i++) {
        const struct hc_tile *t = &j->tiles[i];
        for (int y = 0; y < t->out.h; y++) {
            const uint8_t *got = t->out_px + (size_t)y * t->out.w * bpp;
            const uint8_t *want = j->ref + ((size_t)(t->out.y + y) * ow + t->out.x) * bpp;
            HC_CHECK_MSG(memcmp(got, want, (size_t)t->out.w * bpp) == 0,
                         "%s: tile %zu (%d,%d %dx%d) row %d differs from the reference", what, i,
                         t->out.x, t->out.y, t->out.w, t->out.h, y);
        }
    }
}

static void
job_free(struct job *j)
{
    for (size_t i = 0; i < j->ntiles; i++) {
        free((void *)j->tiles[i].src_px);
        free(j->tiles[i].out_px);
    }
    free(j->tiles);
    free(j->src);
    free(j->ref);
}

static int
run_job(struct hc_client *c, struct job *j)
{
    job_clear_out(j);
    return hc_backend_http.run(c, &j->g, j->tiles, j->ntiles);
}

static struct hc_client *
client_open(const char *const *urls, size_t n, int inflight, int per, const char *enc,
            const char *token)
{
    struct hc_client_opts o;
    hc_client_opts_default(&o);
    o.urls = urls;
    o.nurls = n;
    o.inflight = inflight;
    o.tiles_per_request = per;
    o.encoding = enc;
    o.token = token;
    o.timeout_ms = 20000;
    struct hc_client *c = NULL;
    HC_CHECK_MSG(hc_client_open(&o, &c) == 0, "%s", hc_last_error());
    return c;
}

/* ---- tests -------------------------------------------------------------------------------- */

/* Correct tiles for every layout; requests are batched as asked; several requests are in
 * flight at once (several connections) and the connections are reused by the next job. */
static void
test_basic(void)
{
    struct service s;
    service_start(&s, NULL);
    const char *urls[] = {s.url};

    struct job j;
    job_make(&j, 203, 157, 3, 8, 2, 64, 0); /* 406x314 out: 7x5 = 35 tiles, ragged edges */
    struct hc_client *c = client_open(urls, 1, 4, 3, NULL, NULL);
    HC_CHECK_MSG(run_job(c, &j) == 0, "%s", hc_last_error());
    job_verify(&j, "rgb8 x2");
    struct hc_client_stats st;
    hc_client_stats(c, &st);
    HC_CHECK_EQ(st.requests, (j.ntiles + 2) / 3);
    HC_CHECK_EQ(st.responses_ok, st.requests);
    HC_CHECK_EQ(st.tiles, j.ntiles);
    HC_CHECK_EQ(st.retries, 0);
    HC_CHECK(st.bytes_sent == j.plain_request_bytes + 8 * st.requests);
    HC_CHECK(st.bytes_received == j.plain_response_bytes + 8 * st.requests);
    /* The service saw the same: every tile, and exactly the bytes of ceil(n/3) messages
     * (each message adds one 8-byte header to its tiles' descriptors and pixels). Its
     * request counter would not do: our own GET /metrics count as 200s too. */
    size_t want_bytes = j.plain_request_bytes + 8 * ((j.ntiles + 2) / 3);
    HC_CHECK_EQ(metric_settled(&s, "hc_tiles_total", j.ntiles), j.ntiles);
    HC_CHECK_EQ(metric_settled(&s, "hc_bytes_in_total", want_bytes), want_bytes);

    /* Several requests were in flight at once: each needed its own connection, and they
     * are still open (keep-alive), so the 12 requests shared far fewer connections, and a
     * second job reuses them instead of opening one per request. Not "at most 4": under
     * load libcurl may open one more while a finished transfer's connection is on its way
     * back to the pool (seen in CI at -j2: 6); the client's real bound is max_connections,
     * which test_many_jobs checks against a service that refuses more. */
    int conns = connections_to(s.port);
    if (conns >= 0) {
        int nreq = (int)st.requests;

        HC_CHECK_MSG(conns >= 2 && conns <= nreq / 2, "%d connections for %d requests, 4 in flight",
                     conns, nreq);
        HC_CHECK_MSG(run_job(c, &j) == 0, "%s", hc_last_error());
        job_verify(&j, "rgb8 x2, second job");
        int again = connections_to(s.port);
        HC_CHECK_MSG(again - conns <= 2, "second job: %d connections, first %d (no reuse)", again,
                     conns);
        fprintf(stderr, "basic: %d connections, reused by the second job\n", conns);
    }
    hc_client_close(c);
    job_free(&j);

    /* Every layout and depth (16-bit samples travel little-endian), scales 2, 3 and 4, one
     * tile per request and one request in flight as the degenerate case. */
    c = client_open(urls, 1, 1, 1, NULL, NULL);
    for (int ch = 1; ch <= 4; ch++)
        for (int depth = 8; depth <= 16; depth += 8)
            for (int scale = 2; scale <= 4; scale++) {
                job_make(&j, 37 + ch, 29 + scale, ch, depth, scale, 48, 0);
                HC_CHECK_MSG(run_job(c, &j) == 0, "%d ch %d bit x%d: %s", ch, depth, scale,
                             hc_last_error());
                char what[64];
                snprintf(what, sizeof what, "%d ch %d bit x%d", ch, depth, scale);
                job_verify(&j, what);
                job_free(&j);
            }
    hc_client_close(c);
}

/* lz4 and zstd request bodies: the service decodes them (tiles correct) and they are
 * smaller on the wire than the plain message. */
static void
test_encodings(void)
{
    struct service s;
    service_start(&s, NULL);
    const char *urls[] = {s.url};
    const char *encs[] = {"lz4", "zstd"};
    struct job j;
    job_make(&j, 160, 120, 3, 8, 2, 64, 1);
    uint64_t sent_before = 0; /* the service's counter spans both clients */
    for (int e = 0; e < 2; e++) {
        struct hc_client *c = client_open(urls, 1, 4, 2, encs[e], NULL);
        HC_CHECK_MSG(run_job(c, &j) == 0, "%s: %s", encs[e], hc_last_error());
        job_verify(&j, encs[e]);
        struct hc_client_stats st;
        hc_client_stats(c, &st);
        size_t plain = j.plain_request_bytes + 8 * st.requests;
        size_t plain_back = j.plain_response_bytes + 8 * st.requests;
        fprintf(stderr,
                "%s: %llu requests, sent %llu bytes (plain %zu), received %llu (plain %zu)\n",
                encs[e], (unsigned long long)st.requests, (unsigned long long)st.bytes_sent, plain,
                (unsigned long long)st.bytes_received, plain_back);
        HC_CHECK_MSG(st.bytes_sent < plain * 3 / 4, "%s: sent %llu of %zu plain bytes", encs[e],
                     (unsigned long long)st.bytes_sent, plain);
        HC_CHECK_EQ(metric_settled(&s, "hc_bytes_in_total", sent_before + st.bytes_sent),
                    sent_before + st.bytes_sent);
        sent_before += st.bytes_sent;
        /* The service answers in the encoding asked for (Accept-Encoding). */
        HC_CHECK_MSG(st.bytes_received < plain_back * 3 / 4, "%s: received %llu of %zu plain bytes",
                     encs[e], (unsigned long long)st.bytes_received, plain_back);
        hc_client_close(c);
    }
    job_free(&j);
}

/* First URL has nothing listening: its requests go to the second and the job succeeds. */
static void
test_failover_dead(void)
{
    struct service s;
    service_start(&s, NULL);
    char dead[64];
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", dead_port());
    const char *urls[] = {dead, s.url};
    struct job j;
    job_make(&j, 120, 90, 3, 8, 2, 32, 0);
    struct hc_client *c = client_open(urls, 2, 4, 2, NULL, NULL);
    HC_CHECK_MSG(run_job(c, &j) == 0, "%s", hc_last_error());
    job_verify(&j, "failover from a dead URL");
    struct hc_client_stats st;
    hc_client_stats(c, &st);
    HC_CHECK_MSG(st.failovers >= 1, "failovers %llu", (unsigned long long)st.failovers);
    HC_CHECK_EQ(st.tiles, j.ntiles);
    hc_client_close(c);

    /* A URL that accepts connections and never answers: its requests time out and go to the
     * good one, and the job completes correctly. */
    int port;
    int lfd = silent_listener(&port);
    char silent[64];
    snprintf(silent, sizeof silent, "http://127.0.0.1:%d", port);
    const char *urls2[] = {silent, s.url};
    struct hc_client_opts o;
    hc_client_opts_default(&o);
    o.urls = urls2;
    o.nurls = 2;
    o.inflight = 4;
    o.tiles_per_request = 2;
    o.timeout_ms = 500;
    HC_CHECK(hc_client_open(&o, &c) == 0);
    uint64_t t0 = now_ms();
    HC_CHECK_MSG(run_job(c, &j) == 0, "%s", hc_last_error());
    uint64_t el = now_ms() - t0;
    job_verify(&j, "failover from a silent URL");
    hc_client_stats(c, &st);
    fprintf(stderr, "failover from a silent URL: %llu ms, %llu failovers\n", (unsigned long long)el,
            (unsigned long long)st.failovers);
    HC_CHECK(st.failovers >= 1 && el >= 450 && el < 5000);
    hc_client_close(c);
    close(lfd);
    job_free(&j);
}

struct killer {
    struct hc_client *c;
    struct service *victim;
    uint64_t at_responses, seen;
    int killed;
};

static void *
killer_main(void *arg)
{
    struct killer *k = arg;
    uint64_t deadline = now_ms() + 30000;
    while (now_ms() < deadline) {
        struct hc_client_stats st;
        hc_client_stats(k->c, &st);
        if (st.responses_ok >= k->at_responses) {
            kill(k->victim->pid, SIGKILL);
            k->seen = st.responses_ok;
            k->killed = 1;
            break;
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Two services, one SIGKILLed while requests are in flight: every tile still arrives,
 * correct, through the other. */
static void
test_kill_midjob(void)
{
    struct service a, b;
    service_start(&a, NULL);
    service_start(&b, NULL);
    const char *urls[] = {a.url, b.url};
    struct job j;
    job_make(&j, 320, 240, 3, 8, 2, 32, 0); /* 20x15 = 300 tiles, 300 requests */
    struct hc_client *c = client_open(urls, 2, 8, 1, NULL, NULL);
    struct killer k = {.c = c, .victim = &a, .at_responses = 20};
    pthread_t th;
    HC_CHECK(pthread_create(&th, NULL, killer_main, &k) == 0);
    int rc = run_job(c, &j);
    pthread_join(th, NULL);
    HC_CHECK_MSG(rc == 0, "%s", hc_last_error());
    HC_CHECK_MSG(k.killed && k.seen < j.ntiles, "service killed after %llu of %zu requests",
                 (unsigned long long)k.seen, j.ntiles);
    job_verify(&j, "one of two services killed mid-job");
    struct hc_client_stats st;
    hc_client_stats(c, &st);
    fprintf(stderr,
            "kill_midjob: killed after %llu responses; requests %llu, failures %llu, "
            "retries %llu, failovers %llu\n",
            (unsigned long long)k.seen, (unsigned long long)st.requests,
            (unsigned long long)st.failures, (unsigned long long)st.retries,
            (unsigned long long)st.failovers);
    HC_CHECK(st.failures >= 1 && st.failovers >= 1);
    HC_CHECK_EQ(st.tiles, j.ntiles);
    service_kill(&a);
    hc_client_close(c);
    job_free(&j);
}

/* Nothing answers: the job fails within the configured bounds, saying why. */
static void
test_all_dead(void)
{
    struct job j;
    job_make(&j, 64, 48, 3, 8, 2, 32, 0);

    /* Connections refused: fails after the retries' backoff (100 + 200 ms), not later. */
    char d1[64], d2[64];
    snprintf(d1, sizeof d1, "http://127.0.0.1:%d", dead_port());
    snprintf(d2, sizeof d2, "http://127.0.0.1:%d/", dead_port());
    const char *urls[] = {d1, d2};
    struct hc_client_opts o;
    hc_client_opts_default(&o);
    o.urls = urls;
    o.nurls = 2;
    o.retries = 2;
    struct hc_client *c = NULL;
    HC_CHECK(hc_client_open(&o, &c) == 0);
    uint64_t t0 = now_ms();
    int rc = run_job(c, &j);
    uint64_t el = now_ms() - t0;
    fprintf(stderr, "all_dead (refused): rc %d after %llu ms: %s\n", rc, (unsigned long long)el,
            hc_last_error());
    HC_CHECK_EQ(rc, -EIO);
    HC_CHECK_MSG(el < 2000, "took %llu ms", (unsigned long long)el);
    HC_CHECK(strstr(hc_last_error(), "after 3 attempts") != NULL);
    HC_CHECK(strstr(hc_last_error(), "Connection refused") != NULL);
    hc_client_close(c);

    /* Connected but never answered: each attempt ends at timeout_ms. */
    int port;
    int lfd = silent_listener(&port);
    char sl[64];
    snprintf(sl, sizeof sl, "http://127.0.0.1:%d", port);
    const char *urls2[] = {sl};
    o.urls = urls2;
    o.nurls = 1;
    o.timeout_ms = 400;
    o.connect_timeout_ms = 200;
    o.retries = 1;
    HC_CHECK(hc_client_open(&o, &c) == 0);
    t0 = now_ms();
    rc = run_job(c, &j);
    el = now_ms() - t0;
    fprintf(stderr, "all_dead (silent): rc %d after %llu ms: %s\n", rc, (unsigned long long)el,
            hc_last_error());
    HC_CHECK_EQ(rc, -EIO);
    /* 2 attempts x 400 ms + 100 ms backoff = 900 ms; generous slack for a loaded CI box. */
    HC_CHECK_MSG(el >= 800 && el < 5000, "took %llu ms", (unsigned long long)el);
    HC_CHECK(strstr(hc_last_error(), "imeout") != NULL || strstr(hc_last_error(), "timed out"));
    hc_client_close(c);
    close(lfd);
    job_free(&j);
}

/* A service that wants a token: works with it, fails at once and clearly (401) without it
 * or with a wrong one, and the token file reader strips the newline. */
static void
test_token(void)
{
    char tf[400];
    snprintf(tf, sizeof tf, "%s/token", g_tmpdir);
    FILE *f = fopen(tf, "w");
    HC_CHECK(f);
    fputs("s3cret-token-0123456789\n", f);
    fclose(f);
    char *tok = NULL;
    HC_CHECK_MSG(hc_client_read_token(tf, &tok) == 0, "%s", hc_last_error());
    HC_CHECK(strcmp(tok, "s3cret-token-0123456789") == 0);

    const char *extra[] = {"--token-file", tf, NULL};
    struct service s;
    service_start(&s, extra);
    const char *urls[] = {s.url};
    struct job j;
    job_make(&j, 64, 48, 4, 8, 2, 32, 0);

    struct hc_client *c = client_open(urls, 1, 2, 2, NULL, tok);
    HC_CHECK_MSG(run_job(c, &j) == 0, "with token: %s", hc_last_error());
    job_verify(&j, "with token");
    hc_client_close(c);

    const char *bad[] = {NULL, "wrong-token"};
    for (int i = 0; i < 2; i++) {
        c = client_open(urls, 1, 2, 2, NULL, bad[i]);
        int rc = run_job(c, &j);
        fprintf(stderr, "token %s: rc %d: %s\n", bad[i] ? bad[i] : "(none)", rc, hc_last_error());
        HC_CHECK_EQ(rc, -EACCES);
        HC_CHECK(strstr(hc_last_error(), "401") != NULL);
        struct hc_client_stats st;
        hc_client_stats(c, &st);
        HC_CHECK_MSG(st.retries == 0, "a 401 was retried");
        hc_client_close(c);
    }
    free(tok);
    tok = NULL;

    /* One token file for both sides, as README shows: trailing blanks after the token (an
     * editor's, or `echo "$T " >`) are not part of it on either side. */
    snprintf(tf, sizeof tf, "%s/token-blanks", g_tmpdir);
    f = fopen(tf, "w");
    HC_CHECK(f);
    fputs("s3cret-token-blanks-0123456789 \t\r\n", f);
    fclose(f);
    HC_CHECK_MSG(hc_client_read_token(tf, &tok) == 0, "%s", hc_last_error());
    HC_CHECK(strcmp(tok, "s3cret-token-blanks-0123456789") == 0);
    const char *extra2[] = {"--token-file", tf, NULL};
    struct service s2;
    service_start(&s2, extra2);
    const char *urls2[] = {s2.url};
    c = client_open(urls2, 1, 2, 2, NULL, tok);
    HC_CHECK_MSG(run_job(c, &j) == 0, "token file with trailing blanks: %s", hc_last_error());
    job_verify(&j, "token file with trailing blanks");
    hc_client_close(c);
    free(tok);
    job_free(&j);
}

struct canceller {
    volatile int *flag;
    int after_ms;
};

static void *
canceller_main(void *arg)
{
    struct canceller *k = arg;
    struct timespec ts = {k->after_ms / 1000, (long)(k->after_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    __atomic_store_n(k->flag, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* A job waiting on a service that never answers stops soon after its cancel flag is set,
 * long before the timeout; other jobs of the same client are not affected. Several jobs
 * share one client from several threads. */
static void
test_cancel(void)
{
    int port;
    int lfd = silent_listener(&port);
    char sl[64];
    snprintf(sl, sizeof sl, "http://127.0.0.1:%d", port);
    const char *urls[] = {sl};
    struct job j;
    job_make(&j, 64, 48, 3, 8, 2, 32, 0);
    struct hc_client_opts o;
    hc_client_opts_default(&o);
    o.urls = urls;
    o.nurls = 1;
    o.timeout_ms = 20000;
    struct hc_client *c = NULL, *jc = NULL;
    HC_CHECK(hc_client_open(&o, &c) == 0);
    volatile int flag = 0;
    HC_CHECK(hc_client_derive(c, &flag, &jc) == 0);
    struct canceller k = {.flag = &flag, .after_ms = 300};
    pthread_t th;
    HC_CHECK(pthread_create(&th, NULL, canceller_main, &k) == 0);
    uint64_t t0 = now_ms();
    int rc = run_job(jc, &j);
    uint64_t el = now_ms() - t0;
    pthread_join(th, NULL);
    fprintf(stderr, "cancel: rc %d after %llu ms: %s\n", rc, (unsigned long long)el,
            hc_last_error());
    HC_CHECK_EQ(rc, -ECANCELED);
    HC_CHECK_MSG(el >= 250 && el < 3000, "took %llu ms", (unsigned long long)el);
    hc_client_close(c); /* the derived handle outlives its parent */
    hc_client_close(jc);
    close(lfd);
    job_free(&j);
}

struct worker {
    struct hc_client *c;
    struct job j;
    int rc;
    char err[256];
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct hc_client *jc = NULL;
    volatile int never = 0;
    w->rc = hc_client_derive(w->c, &never, &jc);
    for (int round = 0; !w->rc && round < 3; round++)
        w->rc = run_job(jc, &w->j);
    snprintf(w->err, sizeof w->err, "%s", hc_last_error());
    hc_client_close(jc);
    return NULL;
}

/* Six jobs at once on one client (as hcfs runs many files), over two services. */
static void
test_concurrent(void)
{
    struct service a, b;
    service_start(&a, NULL);
    service_start(&b, NULL);
    const char *urls[] = {a.url, b.url};
    struct hc_client *c = client_open(urls, 2, 4, 2, "zstd", NULL);
    enum { NW = 6 };
    struct worker w[NW];
    pthread_t th[NW];
    for (int i = 0; i < NW; i++) {
        w[i].c = c;
        job_make(&w[i].j, 50 + 13 * i, 40 + 7 * i, 1 + i % 4, i % 2 ? 16 : 8, 2 + i % 3, 40, 0);
        HC_CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    for (int i = 0; i < NW; i++) {
        pthread_join(th[i], NULL);
        HC_CHECK_MSG(w[i].rc == 0, "job %d: %s", i, w[i].err);
        job_verify(&w[i].j, "concurrent");
        job_free(&w[i].j);
    }
    struct hc_client_stats st;
    hc_client_stats(c, &st);
    HC_CHECK_EQ(st.retries, 0);
    /* Round-robin: both services did part of the work, and together all of it. */
    uint64_t ta = 0, tb = 0, deadline = now_ms() + 10000; /* counted after the answer */
    for (;;) {
        ta = metric(&a, "hc_tiles_total");
        tb = metric(&b, "hc_tiles_total");
        if (ta + tb == st.tiles || now_ms() > deadline)
            break;
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "concurrent: %llu tiles on one service, %llu on the other\n",
            (unsigned long long)ta, (unsigned long long)tb);
    HC_CHECK(ta > 0 && tb > 0);
    HC_CHECK_EQ(ta + tb, st.tiles);
    hc_client_close(c);
}

/* An overloaded service (one job slot, no queue) answers 429 with Retry-After: the client
 * waits and retries instead of failing, and every tile arrives. */
static void
test_overload(void)
{
    const char *extra[] = {"--jobs", "1", "--queue", "0", "--cpu-threads", "1", NULL};
    struct service s;
    service_start(&s, extra);
    const char *urls[] = {s.url};
    struct job j;
    /* 16 tiles of 128x128 in 4 requests sent at once: each takes the service's one slot
     * for a few ms, long enough for the others to arrive and be turned away. */
    job_make(&j, 256, 256, 3, 8, 2, 128, 0);
    struct hc_client *c = client_open(urls, 1, 8, 4, NULL, NULL);
    uint64_t t0 = now_ms();
    HC_CHECK_MSG(run_job(c, &j) == 0, "%s", hc_last_error());
    job_verify(&j, "overloaded service");
    struct hc_client_stats st;
    hc_client_stats(c, &st);
    fprintf(stderr, "overload: %llu requests, %llu failed (429), %llu ms\n",
            (unsigned long long)st.requests, (unsigned long long)st.failures,
            (unsigned long long)(now_ms() - t0));
    HC_CHECK_MSG(st.failures >= 1, "no 429 seen: the test did not overload the service");
    HC_CHECK_EQ(metric_settled(&s, "hc_requests_total{code=\"429\"}", st.failures), st.failures);
    HC_CHECK_EQ(st.tiles, j.ntiles);
    hc_client_close(c);
    job_free(&j);
}

/* A request the service refuses as such (422: tile over --max-tile-pixels) fails the job at
 * once with the service's reason, without retrying it anywhere. */
static void
test_refused(void)
{
    const char *extra[] = {"--max-tile-pixels", "1000", NULL};
    struct service a, b;
    service_start(&a, extra);
    service_start(&b, extra);
    const char *urls[] = {a.url, b.url};
    struct job j;
    job_make(&j, 64, 48, 3, 8, 2, 64, 0); /* 64x64 = 4096 output pixels a tile */
    struct hc_client *c = client_open(urls, 2, 4, 1, NULL, NULL);
    uint64_t t0 = now_ms();
    int rc = run_job(c, &j);
    uint64_t el = now_ms() - t0;
    fprintf(stderr, "refused: rc %d after %llu ms: %s\n", rc, (unsigned long long)el,
            hc_last_error());
    HC_CHECK_EQ(rc, -EINVAL);
    HC_CHECK(strstr(hc_last_error(), "HTTP 422") != NULL);
    HC_CHECK(strstr(hc_last_error(), "1000") != NULL); /* the service's detail names its limit */
    struct hc_client_stats st;
    hc_client_stats(c, &st);
    HC_CHECK_EQ(st.retries, 0);
    HC_CHECK_EQ(st.responses_ok, 0);
    HC_CHECK(el < 2000);
    hc_client_close(c);
    job_free(&j);
}

/* A request body over the service's --max-body is refused (413) from its Content-Length
 * while the client is still sending it: the client reads that 413 (not a broken pipe
 * retried as a transport failure) and sends the batch again as two halves, down to one
 * tile a request; the job completes with the right pixels. A single tile still too big
 * fails at once with the service's reason. Likewise a batch over --max-request-pixels
 * (422). */
static void
test_too_large(void)
{
    const char *extra[] = {"--max-body", "1000000", NULL};
    struct service a;
    service_start(&a, extra);
    const char *urls[] = {a.url};
    struct job j;
    job_make(&j, 1024, 1024, 3, 8, 2, 1024, 0); /* 4 tiles of ~0.8 MB source each */
    struct hc_client *c = client_open(urls, 1, 2, 4, NULL, NULL);
    int rc = run_job(c, &j);
    HC_CHECK_MSG(rc == 0, "%s", hc_last_error());
    job_verify(&j, "too_large");
    struct hc_client_stats st;
    hc_client_stats(c, &st);
    fprintf(stderr, "too_large: %llu requests, %llu splits, %llu ok\n",
            (unsigned long long)st.requests, (unsigned long long)st.splits,
            (unsigned long long)st.responses_ok);
    HC_CHECK_EQ(st.splits, 3); /* 4 -> 2 + 2 -> 1 + 1 + 1 + 1 */
    HC_CHECK_EQ(st.responses_ok, 4);
    HC_CHECK_EQ(st.retries, 0);
    HC_CHECK_EQ(st.tiles, 4);
    hc_client_close(c);
    job_free(&j);

    /* one tile of ~3 MB: nothing to split */
    job_make(&j, 1024, 1024, 3, 8, 2, 2048, 0);
    c = client_open(urls, 1, 1, 4, NULL, NULL);
    rc = run_job(c, &j);
    fprintf(stderr, "too_large, one tile: rc %d: %s\n", rc, hc_last_error());
    HC_CHECK_EQ(rc, -EINVAL);
    HC_CHECK(strstr(hc_last_error(), "HTTP 413") != NULL);
    hc_client_stats(c, &st);
    HC_CHECK_EQ(st.retries, 0);
    HC_CHECK_EQ(st.splits, 0);
    hc_client_close(c);
    job_free(&j);

    /* 16 tiles of 64x64 output in batches of 16 against --max-request-pixels 20000: 4 tiles
     * (16384 pixels) a request pass */
    const char *extra2[] = {"--max-request-pixels", "20000", NULL};
    struct service b;
    service_start(&b, extra2);
    const char *urls2[] = {b.url};
    job_make(&j, 128, 128, 3, 8, 2, 64, 0);
    c = client_open(urls2, 1, 2, 16, NULL, NULL);
    rc = run_job(c, &j);
    HC_CHECK_MSG(rc == 0, "%s", hc_last_error());
    job_verify(&j, "too_large");
    hc_client_stats(c, &st);
    HC_CHECK_EQ(st.splits, 3); /* 16 -> 8 + 8 -> 4 x 4 */
    HC_CHECK_EQ(st.responses_ok, 4);
    hc_client_close(c);
    job_free(&j);
}

/* ---- a service that answers wrongly ---------------------------------------------------- */

/* The real service never sends a bad answer, so this small HTTP/1.1 server (keep-alive, one
 * connection at a time) plays a broken or hostile one. It parses each request with the
 * wire parser and answers according to its mode. */
enum bad_mode { BAD_GARBAGE, BAD_WRONG_ID, BAD_SHORT, BAD_ENDLESS, BAD_BOMB, BAD_NMODES };
static const char *const bad_names[] = {"garbage", "wrong id", "short body", "endless body",
                                        "zstd bomb"};

struct bad_server {
    int fd, port;
    enum bad_mode mode;
    pthread_t th;
};

static int
write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Answers one request on connection c; returns -1 when the connection is done. */
static int
bad_answer(struct bad_server *bs, int c)
{
    static uint8_t req[1 << 20];
    size_t len = 0, head = 0;
    while (!head) {
        struct pollfd p = {.fd = c, .events = POLLIN};
        if (poll(&p, 1, 5000) != 1)
            return -1;
        ssize_t r = read(c, req + len, sizeof req - 1 - len);
        if (r <= 0)
            return -1;
        len += (size_t)r;
        req[len] = 0;
        char *e = strstr((char *)req, "\r\n\r\n");
        if (e)
            head = (size_t)(e + 4 - (char *)req);
    }
    char *cl = strcasestr((char *)req, "Content-Length:");
    size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
    HC_CHECK(head + body < sizeof req);
    while (len < head + body) {
        ssize_t r = read(c, req + len, head + body - len);
        if (r <= 0)
            return -1;
        len += (size_t)r;
    }
    struct hc_wire_tile t[HC_WIRE_MAX_TILES];
    const uint8_t *px[HC_WIRE_MAX_TILES];
    size_t n = 0;
    HC_CHECK_MSG(
        hc_wire_parse(HC_WIRE_MAGIC_REQUEST, req + head, body, t, px, HC_WIRE_MAX_TILES, &n) == 0,
        "bad server got a bad request: %s", hc_last_error());
    /* A well-formed answer of black pixels, then spoiled as the mode says. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total = total > hc_wire_out_bytes(&t[i]) ? total : hc_wire_out_bytes(&t[i]);
    uint8_t *zero = calloc(1, total);
    const uint8_t **outs = calloc(n, sizeof *outs);
    HC_CHECK(zero && outs);
    for (size_t i = 0; i < n; i++)
        outs[i] = zero;
    if (bs->mode == BAD_WRONG_ID)
        t[n - 1].id += 1000;
    uint8_t *msg = NULL;
    size_t mlen = 0;
    HC_CHECK(hc_wire_encode(HC_WIRE_MAGIC_RESPONSE, t, outs, n, &msg, &mlen) == 0);
    char hdr[256];
    int rc = 0;
    switch (bs->mode) {
    case BAD_GARBAGE: {
        static const char g[] = "<html>not a tile message</html>";
        snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", sizeof g - 1);
        rc = write_all(c, hdr, strlen(hdr)) || write_all(c, g, sizeof g - 1);
        break;
    }
    case BAD_WRONG_ID:
    case BAD_SHORT: {
        size_t l = bs->mode == BAD_SHORT ? mlen - 1 : mlen;
        snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", l);
        rc = write_all(c, hdr, strlen(hdr)) || write_all(c, msg, l);
        break;
    }
    case BAD_ENDLESS: {
        /* Claims a gigabyte and keeps sending until the client hangs up. */
        snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
        rc = write_all(c, hdr, strlen(hdr));
        for (int k = 0; !rc && k < 1000; k++)
            rc = write_all(c, req, 1 << 16);
        rc = -1;
        break;
    }
    case BAD_BOMB: {
        /* A small zstd body that inflates to 64 MiB of zeros. */
        size_t big = 64u << 20, cap = ZSTD_compressBound(big);
        uint8_t *src = calloc(1, big), *z = malloc(cap);
        HC_CHECK(src && z);
        size_t zl = ZSTD_compress(z, cap, src, big, 1);
        HC_CHECK(!ZSTD_isError(zl));
        snprintf(hdr, sizeof hdr,
                 "HTTP/1.1 200 OK\r\nContent-Encoding: zstd\r\nContent-Length: %zu\r\n\r\n", zl);
        rc = write_all(c, hdr, strlen(hdr)) || write_all(c, z, zl);
        free(src);
        free(z);
        break;
    }
    default:
        rc = -1;
    }
    free(msg);
    free(zero);
    free(outs);
    return rc ? -1 : 0;
}

static void *
bad_main(void *arg)
{
    struct bad_server *bs = arg;
    for (;;) {
        int c = accept(bs->fd, NULL, NULL);
        if (c < 0)
            return NULL; /* the listening socket was shut down: the test is over */
        while (bad_answer(bs, c) == 0)
            ;
        close(c);
    }
}

/* Answers that do not check out (garbage, wrong tile, short, endless, a decompression bomb)
 * are refused before any pixel reaches the caller, retried, and reported; with a real
 * service beside the bad one, the job completes correctly. */
static void
test_bad_answers(void)
{
    struct bad_server bs = {0};
    bs.fd = silent_listener(&bs.port);
    HC_CHECK(pthread_create(&bs.th, NULL, bad_main, &bs) == 0);
    char bad[64];
    snprintf(bad, sizeof bad, "http://127.0.0.1:%d", bs.port);
    const char *urls[] = {bad};
    struct job j;
    job_make(&j, 64, 48, 3, 8, 2, 32, 0);
    size_t bpp = hc_pixel_bytes(j.g.channels, j.g.depth);

    for (int m = 0; m < BAD_NMODES; m++) {
        bs.mode = (enum bad_mode)m;
        struct hc_client_opts o;
        hc_client_opts_default(&o);
        o.urls = urls;
        o.nurls = 1;
        o.inflight = 1; /* the bad server serves one connection at a time */
        o.tiles_per_request = 2;
        o.retries = 1;
        o.timeout_ms = 5000;
        struct hc_client *c = NULL;
        HC_CHECK(hc_client_open(&o, &c) == 0);
        int rc = run_job(c, &j);
        fprintf(stderr, "bad answer (%s): rc %d: %s\n", bad_names[m], rc, hc_last_error());
        HC_CHECK_EQ(rc, -EIO);
        HC_CHECK(strstr(hc_last_error(), "after 2 attempts") != NULL);
        /* Nothing from a bad answer was written: every byte still holds the fill pattern. */
        for (size_t i = 0; i < j.ntiles; i++) {
            const uint8_t *p = j.tiles[i].out_px;
            size_t nb = (size_t)j.tiles[i].out.w * j.tiles[i].out.h * bpp;
            for (size_t k = 0; k < nb; k++)
                HC_CHECK_MSG(p[k] == 0xA5, "%s: tile %zu written", bad_names[m], i);
        }
        hc_client_close(c);
    }

    /* Beside a real service, the bad one only costs retries. */
    struct service s;
    service_start(&s, NULL);
    const char *both[] = {bad, s.url};
    bs.mode = BAD_WRONG_ID;
    struct hc_client *c = client_open(both, 2, 1, 2, NULL, NULL);
    HC_CHECK_MSG(run_job(c, &j) == 0, "%s", hc_last_error());
    job_verify(&j, "bad service beside a good one");
    hc_client_close(c);

    shutdown(bs.fd, SHUT_RDWR);
    close(bs.fd);
    pthread_join(bs.th, NULL);
    job_free(&j);
}

/* Sixteen jobs at once, eight requests in flight each, against a service that accepts at
 * most 16 connections from us: with max_connections 12 nothing is refused, and the kernel
 * shows no more than 12 connections, all reused. */
static void
test_many_jobs(void)
{
    const char *extra[] = {"--max-per-ip", "16", NULL};
    struct service s;
    service_start(&s, extra);
    const char *urls[] = {s.url};
    struct hc_client_opts o;
    hc_client_opts_default(&o);
    o.urls = urls;
    o.nurls = 1;
    o.inflight = 8;
    o.tiles_per_request = 1;
    o.max_connections = 12;
    struct hc_client *c = NULL;
    HC_CHECK(hc_client_open(&o, &c) == 0);
    enum { NW = 16 };
    static struct worker w[NW];
    pthread_t th[NW];
    for (int i = 0; i < NW; i++) {
        w[i].c = c;
        job_make(&w[i].j, 96 + i, 64, 3, 8, 2, 32, 0); /* 24 or 28 tiles */
        HC_CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    uint64_t tiles = 0;
    for (int i = 0; i < NW; i++) {
        pthread_join(th[i], NULL);
        HC_CHECK_MSG(w[i].rc == 0, "job %d: %s", i, w[i].err);
        job_verify(&w[i].j, "many jobs");
        tiles += 3 * w[i].j.ntiles; /* worker_main runs each job three times */
        job_free(&w[i].j);
    }
    struct hc_client_stats st;
    hc_client_stats(c, &st);
    int conns = connections_to(s.port);
    fprintf(stderr, "many_jobs: %llu requests, %llu failed, %d connections open\n",
            (unsigned long long)st.requests, (unsigned long long)st.failures, conns);
    HC_CHECK_EQ(st.failures, 0);
    HC_CHECK_EQ(st.tiles, tiles);
    HC_CHECK_MSG(conns <= 12, "%d connections for max_connections 12", conns);
    hc_client_close(c);
}

/* Options and token files that are wrong are refused with a reason. */
static void
test_opts(void)
{
    struct hc_client_opts o;
    struct hc_client *c = NULL;
    const char *bad_urls[] = {"ftp://127.0.0.1:1", "127.0.0.1:8787", "http://a b"};
    for (int i = 0; i < 3; i++) {
        hc_client_opts_default(&o);
        o.urls = &bad_urls[i];
        o.nurls = 1;
        HC_CHECK_EQ(hc_client_open(&o, &c), -EINVAL);
        HC_CHECK(strstr(hc_last_error(), "client: ") == hc_last_error());
    }
    const char *good[] = {"http://127.0.0.1:1"};
    hc_client_opts_default(&o);
    o.urls = good;
    o.nurls = 1;
    o.encoding = "gzip";
    HC_CHECK_EQ(hc_client_open(&o, &c), -EINVAL);
    o.encoding = NULL;
    o.inflight = 0;
    HC_CHECK_EQ(hc_client_open(&o, &c), -EINVAL);
    o.inflight = 8;
    o.token = "two words";
    HC_CHECK_EQ(hc_client_open(&o, &c), -EINVAL);
    o.nurls = 0;
    HC_CHECK_EQ(hc_client_open(&o, &c), -EINVAL);

    char tf[400];
    char *tok = NULL;
    snprintf(tf, sizeof tf, "%s/empty", g_tmpdir);
    FILE *f = fopen(tf, "w");
    HC_CHECK(f);
    fputs("  \n", f);
    fclose(f);
    HC_CHECK_EQ(hc_client_read_token(tf, &tok), -EINVAL);
    snprintf(tf, sizeof tf, "%s/missing", g_tmpdir);
    HC_CHECK_EQ(hc_client_read_token(tf, &tok), -ENOENT);
    HC_CHECK(tok == NULL);
}

/* core/wire.c, the parser the client trusts with a service's answer: a descriptor whose
 * pixel byte count does not fit a size_t must be refused, not wrapped around. Here a
 * response tile of 2147380029 x 1073793636 RGBA16 output pixels inside a legal
 * 268435455-pixel-square image at x8 needs 2^64 + 11936 bytes; a body of 56 + 11936 bytes
 * must not pass as its answer. (The expected count is computed here in 128 bits.) */
static void
test_wire_sizes(void)
{
    struct hc_wire_tile t = {.id = 1,
                             .image_w = 268435455u,
                             .image_h = 268435455u,
                             .out = {0, 0, 2147380029, 1073793636},
                             .channels = 4,
                             .depth = 16,
                             .scale = 8,
                             .filter = HC_FILTER_BICUBIC};
    hc_tile_src_rect((int)t.image_w, (int)t.image_h, t.scale, &t.out, &t.src);
    unsigned __int128 need = (unsigned __int128)(uint64_t)t.out.w * (uint64_t)t.out.h * 8u;
    HC_CHECK(need > (unsigned __int128)SIZE_MAX);
    size_t wrapped = (size_t)need; /* what a 64-bit size_t computation ends at */
    size_t len = HC_WIRE_HEADER_SIZE + HC_WIRE_DESC_SIZE + wrapped;
    HC_CHECK_EQ(wrapped, 11936);
    uint8_t *msg = calloc(1, len);
    HC_CHECK(msg);
    const uint32_t head[2] = {HC_WIRE_MAGIC_RESPONSE, 1u | 1u << 16};
    const int32_t r[8] = {t.out.x, t.out.y, t.out.w, t.out.h, t.src.x, t.src.y, t.src.w, t.src.h};
    memcpy(msg, head, sizeof head); /* the test runs on little-endian hosts only (wire.c) */
    memcpy(msg + 8, &t.id, 4);
    memcpy(msg + 12, &t.image_w, 4);
    memcpy(msg + 16, &t.image_h, 4);
    memcpy(msg + 20, r, sizeof r);
    msg[52] = t.channels;
    msg[53] = t.depth;
    msg[54] = t.scale;
    msg[55] = t.filter;
    struct hc_wire_tile got;
    const uint8_t *px = NULL;
    size_t n = 0;
    int rc = hc_wire_parse(HC_WIRE_MAGIC_RESPONSE, msg, len, &got, &px, 1, &n);
    fprintf(stderr, "wire_sizes: parse of a wrapped tile: %d %s\n", rc, rc ? hc_last_error() : "");
    HC_CHECK_EQ(rc, -EINVAL);
    HC_CHECK_EQ(hc_wire_check_tile(&t), -EINVAL);
    const uint8_t *pp = msg;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    HC_CHECK_EQ(hc_wire_encode(HC_WIRE_MAGIC_RESPONSE, &t, &pp, 1, &enc, &enc_len), -EINVAL);
    HC_CHECK(enc == NULL);
    /* The largest tile that does fit still parses as a request (src bytes are small). */
    t.out = (struct hc_rect){0, 0, 64, 48};
    hc_tile_src_rect((int)t.image_w, (int)t.image_h, t.scale, &t.out, &t.src);
    HC_CHECK_EQ(hc_wire_check_tile(&t), 0);
    free(msg);
}

int
main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
        int needs_service;
    } tests[] = {
        {"basic", test_basic, 1},
        {"encodings", test_encodings, 1},
        {"failover_dead", test_failover_dead, 1},
        {"kill_midjob", test_kill_midjob, 1},
        {"all_dead", test_all_dead, 0},
        {"token", test_token, 1},
        {"cancel", test_cancel, 0},
        {"concurrent", test_concurrent, 1},
        {"opts", test_opts, 0},
        {"overload", test_overload, 1},
        {"refused", test_refused, 1},
        {"bad_answers", test_bad_answers, 1},
        {"many_jobs", test_many_jobs, 1},
        {"wire_sizes", test_wire_sizes, 0},
        {"too_large", test_too_large, 1},
    };
    if (argc != 2) {
        fprintf(stderr, "usage: test_client NAME\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/hc-test-client-XXXXXX");
    HC_CHECK(mkdtemp(g_tmpdir) != NULL);
    atexit(cleanup);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGABRT, on_fatal_signal);
    signal(SIGSEGV, on_fatal_signal);
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (strcmp(argv[1], tests[i].name) != 0)
            continue;
        if (tests[i].needs_service && access(service_path(), X_OK) != 0)
            HC_SKIP("%s not built", service_path());
        tests[i].fn();
        g_passed = 1;
        fprintf(stderr, "ok %s\n", argv[1]);
        return 0;
    }
    fprintf(stderr, "test_client: no test named %s\n", argv[1]);
    return 2;
}
