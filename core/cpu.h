/* cpu.h: which SIMD paths this build has and which one runs.
 *
 * Build time: the x86-64 build compiles *_sse2.c and *_avx2.c (the latter with -mavx2), the
 * arm64 build *_neon.c; *_scalar.c is always there. Run time: hc_cpu_level() checks CPU
 * features once; HC_NO_SIMD=1 in the environment forces scalar; HC_SIMD=scalar|sse2|avx2|neon
 * caps the level (tests use it to compare every path).
 */
#ifndef HC_CPU_H
#define HC_CPU_H

#ifdef __cplusplus
extern "C" {
#endif

enum hc_simd {
    HC_SIMD_SCALAR = 0,
    HC_SIMD_SSE2,
    HC_SIMD_AVX2,
    HC_SIMD_NEON,
};

/* The best level this build and this CPU support, after the environment's caps. Computed
 * once; thread safe. */
enum hc_simd hc_cpu_level(void);

/* Whether this build and CPU can run `level` (ignores the environment). */
int hc_cpu_supports(enum hc_simd level);

const char *hc_simd_name(enum hc_simd level);

/* Number of CPUs this process may run on (its affinity mask on Linux, else the online
 * CPUs; at least 1). */
int hc_cpu_count(void);

#ifdef __cplusplus
}
#endif
#endif
