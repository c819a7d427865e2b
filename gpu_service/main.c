/* main.c: hc-gpu-service's command line: options, signals, drain on SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "service.h"

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: hc-gpu-service [options]\n"
            "Upscales image tiles sent over HTTP (POST /v1/upscale, see PROTOCOL.md) with CUDA,\n"
            "or on the CPU where there is no GPU.\n"
            "\n"
            "  --listen HOST:PORT      address to bind (default 127.0.0.1:8787; port 0 picks a\n"
            "                          free port and prints it on stdout)\n"
            "  --backend auto|cuda|cpu backend (default auto: cuda when a GPU answers)\n"
            "  --token-file FILE       require 'Authorization: Bearer <first line of FILE>'\n"
            "  --insecure-public       allow a non-loopback address without a token\n"
            "  --jobs N                requests upscaled at once (default 1 on cpu, 2 per GPU)\n"
            "  --queue N               requests waiting beyond those; more get 429 (default 64)\n"
            "  --threads N             HTTP threads (default 4)\n"
            "  --cpu-threads N         threads of one cpu job (default 0 = all CPUs)\n"
            "  --max-body BYTES        request body limit, sent and decoded (default 268435456)\n"
            "  --max-tiles N           tiles in one request (default 1024)\n"
            "  --max-tile-pixels N     output pixels of one tile (default 16777216)\n"
            "  --max-request-pixels N  output pixels of one request (default 67108864)\n"
            "  --max-memory BYTES      bodies and answers held at once by all requests; more\n"
            "                          get 429 (default half the physical memory)\n"
            "  --max-connections N     open connections (default 256)\n"
            "  --max-per-ip N          open connections per client address (default 64)\n"
            "  --conn-timeout SECONDS  idle connections are closed (default 10)\n"
            "  --request-timeout SECONDS  receiving a request or sending its answer (default 60)\n"
            "  --drain-timeout SECONDS on SIGTERM, wait this long for work in flight (default 60)\n"
            "  --verbose               debug log lines\n"
            "  --help, --version\n");
}

static int
num(const char *arg, const char *name, long long lo, long long hi, long long *v)
{
    char *end;

    errno = 0;
    *v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || *v < lo || *v > hi) {
        fprintf(stderr, "hc-gpu-service: %s wants a number in %lld..%lld, not '%s'\n", name, lo, hi,
                arg);
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    enum {
        O_LISTEN = 256,
        O_BACKEND,
        O_TOKEN,
        O_INSECURE,
        O_JOBS,
        O_QUEUE,
        O_THREADS,
        O_CPUT,
        O_BODY,
        O_TILES,
        O_TPX,
        O_RPX,
        O_MEM,
        O_CONNS,
        O_PERIP,
        O_CTO,
        O_RTO,
        O_DTO,
        O_VERBOSE,
        O_HELP,
        O_VERSION
    };
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"backend", required_argument, NULL, O_BACKEND},
        {"token-file", required_argument, NULL, O_TOKEN},
        {"insecure-public", no_argument, NULL, O_INSECURE},
        {"jobs", required_argument, NULL, O_JOBS},
        {"queue", required_argument, NULL, O_QUEUE},
        {"threads", required_argument, NULL, O_THREADS},
        {"cpu-threads", required_argument, NULL, O_CPUT},
        {"max-body", required_argument, NULL, O_BODY},
        {"max-tiles", required_argument, NULL, O_TILES},
        {"max-tile-pixels", required_argument, NULL, O_TPX},
        {"max-request-pixels", required_argument, NULL, O_RPX},
        {"max-memory", required_argument, NULL, O_MEM},
        {"max-connections", required_argument, NULL, O_CONNS},
        {"max-per-ip", required_argument, NULL, O_PERIP},
        {"conn-timeout", required_argument, NULL, O_CTO},
        {"request-timeout", required_argument, NULL, O_RTO},
        {"drain-timeout", required_argument, NULL, O_DTO},
        {"verbose", no_argument, NULL, O_VERBOSE},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    struct hc_service_opts o;
    struct hc_service *svc = NULL;
    long long v, drain_timeout = 60;
    sigset_t set;
    int opt, sig, rc;

    hc_service_defaults(&o);
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        const char *a = optarg;
        switch (opt) {
        case O_LISTEN:
            o.listen = a;
            break;
        case O_BACKEND:
            o.backend = a;
            break;
        case O_TOKEN:
            o.token_file = a;
            break;
        case O_INSECURE:
            o.insecure_public = 1;
            break;
#define NUM(field, name, lo, hi)                                                                   \
    if (num(a, name, lo, hi, &v))                                                                  \
        return 2;                                                                                  \
    field = v;                                                                                     \
    break
        case O_JOBS:
            NUM(o.jobs, "--jobs", 1, 1024);
        case O_QUEUE:
            NUM(o.queue, "--queue", 0, 100000);
        case O_THREADS:
            NUM(o.threads, "--threads", 1, 1024);
        case O_CPUT:
            NUM(o.cpu_threads, "--cpu-threads", 0, 1024);
        case O_BODY:
            NUM(o.max_body, "--max-body", 64, 1LL << 40);
        case O_TILES:
            NUM(o.max_tiles, "--max-tiles", 1, 4096);
        case O_TPX:
            NUM(o.max_tile_pixels, "--max-tile-pixels", 1, 1LL << 40);
        case O_RPX:
            NUM(o.max_request_pixels, "--max-request-pixels", 1, 1LL << 40);
        case O_MEM:
            NUM(o.max_memory, "--max-memory", 1LL << 20, 1LL << 50);
        case O_CONNS:
            NUM(o.max_connections, "--max-connections", 1, 1000000);
        case O_PERIP:
            NUM(o.max_per_ip, "--max-per-ip", 1, 1000000);
        case O_CTO:
            NUM(o.conn_timeout, "--conn-timeout", 1, 86400);
        case O_RTO:
            NUM(o.request_timeout, "--request-timeout", 1, 86400);
        case O_DTO:
            NUM(drain_timeout, "--drain-timeout", 0, 86400);
#undef NUM
        case O_VERBOSE:
            hc_log_set_level(HC_LOG_DEBUG);
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        case O_VERSION:
            printf("hc-gpu-service %s\n", HC_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hc-gpu-service: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    /* Block the signals in every thread we start; this thread waits for them below. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = hc_service_start(&o, &svc);
    if (rc) {
        hc_log(HC_LOG_ERROR, "service", "%s", hc_last_error());
        return 1;
    }
    /* Tests and scripts read the port from here; one line, flushed. */
    printf("%d\n", hc_service_port(svc));
    fflush(stdout);

    sigwait(&set, &sig);
    hc_log(HC_LOG_INFO, "service", "%s: draining (up to %lld s)",
           sig == SIGTERM ? "SIGTERM" : "SIGINT", drain_timeout);
    rc = hc_service_drain(svc, (int)drain_timeout);
    if (rc)
        hc_log(HC_LOG_WARN, "service", "%s", hc_last_error());
    hc_service_stop(svc);
    hc_log(HC_LOG_INFO, "service", "stopped");
    return rc ? 1 : 0;
}
