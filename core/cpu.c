/* cpu.c: which SIMD level runs (build-time availability x CPU features x environment caps). */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#endif
#include "cpu.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#endif

int
hc_cpu_supports(enum hc_simd level)
{
    switch (level) {
    case HC_SIMD_SCALAR:
        return 1;
#if defined(HC_HAVE_SSE2) && (defined(__x86_64__) || defined(__i386__))
    case HC_SIMD_SSE2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("sse2") ? 1 : 0;
#endif
#if defined(HC_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
    case HC_SIMD_AVX2:
        /* __builtin_cpu_supports also checks that the OS saves the ymm state (xgetbv). */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
#if defined(HC_HAVE_NEON) && defined(__aarch64__)
    case HC_SIMD_NEON:
#if defined(__linux__)
        return (getauxval(AT_HWCAP) & HWCAP_ASIMD) ? 1 : 0;
#else
        return 1; /* Advanced SIMD is mandatory on arm64 (Apple silicon included) */
#endif
#endif
    default:
        return 0;
    }
}

const char *
hc_simd_name(enum hc_simd level)
{
    switch (level) {
    case HC_SIMD_SCALAR:
        return "scalar";
    case HC_SIMD_SSE2:
        return "sse2";
    case HC_SIMD_AVX2:
        return "avx2";
    case HC_SIMD_NEON:
        return "neon";
    }
    return "unknown";
}

static enum hc_simd cpu_level = HC_SIMD_SCALAR;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void
cpu_detect(void)
{
    enum hc_simd best = HC_SIMD_SCALAR;
    const char *no = getenv("HC_NO_SIMD");
    const char *cap = getenv("HC_SIMD");

    if (hc_cpu_supports(HC_SIMD_NEON))
        best = HC_SIMD_NEON;
    else if (hc_cpu_supports(HC_SIMD_AVX2))
        best = HC_SIMD_AVX2;
    else if (hc_cpu_supports(HC_SIMD_SSE2))
        best = HC_SIMD_SSE2;

    if (cap && *cap) {
        /* A cap only lowers the level. x86 levels order scalar < sse2 < avx2; NEON is the
         * only arm64 level. A cap naming a level of the other family means scalar; one above
         * what the CPU has changes nothing (HC_SIMD=avx2 on an SSE2-only CPU runs SSE2). */
        if (!strcmp(cap, "scalar"))
            best = HC_SIMD_SCALAR;
        else if (!strcmp(cap, "neon"))
            best = best == HC_SIMD_NEON ? HC_SIMD_NEON : HC_SIMD_SCALAR;
        else if (!strcmp(cap, "sse2") || !strcmp(cap, "avx2")) {
            enum hc_simd want = !strcmp(cap, "sse2") ? HC_SIMD_SSE2 : HC_SIMD_AVX2;
            if (best == HC_SIMD_NEON)
                best = HC_SIMD_SCALAR;
            else if (want < best)
                best = want;
        } else {
            fprintf(stderr, "warn cpu: HC_SIMD=%s is not scalar|sse2|avx2|neon; ignored\n", cap);
        }
    }
    if (no && *no && strcmp(no, "0") != 0)
        best = HC_SIMD_SCALAR;
    cpu_level = best;
}

enum hc_simd
hc_cpu_level(void)
{
    pthread_once(&cpu_once, cpu_detect);
    return cpu_level;
}

int
hc_cpu_count(void)
{
#if defined(__linux__)
    /* The CPUs this process may run on (taskset, cpusets, containers), as OpenCV and libvips
     * count them: one thread per online CPU would oversubscribe a process held to fewer. */
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
