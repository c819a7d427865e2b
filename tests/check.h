/* check.h: the few assertion macros the C tests share. A failed check prints where and why
 * and makes the test exit 1; HC_SKIP exits 77 (ctest's "skipped"). */
#ifndef HC_TESTS_CHECK_H
#define HC_TESTS_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HC_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define HC_CHECK_MSG(cond, ...)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define HC_CHECK_EQ(a, b) HC_CHECK_MSG((a) == (b), "%lld != %lld", (long long)(a), (long long)(b))

#define HC_SKIP(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "skip: " __VA_ARGS__);                                                     \
        fputc('\n', stderr);                                                                       \
        exit(77);                                                                                  \
    } while (0)

/* Randomized tests draw from this xorshift64 generator: fixed seed (a test file may define
 * HC_TEST_SEED before including this), so every run makes the same cases. */
#ifndef HC_TEST_SEED
#define HC_TEST_SEED 0x9E3779B97F4A7C15ull
#endif

static inline uint32_t
hc_test_rand(void)
{
    static uint64_t s = HC_TEST_SEED;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (uint32_t)(s >> 16);
}

/* Uniform enough in lo..hi, inclusive. */
static inline int
hc_test_rand_in(int lo, int hi)
{
    return lo + (int)(hc_test_rand() % (uint32_t)(hi - lo + 1));
}

/* A test program's cases, one per ctest entry, picked by name from argv[1]. */
struct hc_test_case {
    const char *name;
    void (*fn)(void);
};

/* main() of such a program: runs the case argv[1] names (calling before() first, when not
 * NULL) and returns 0 once it returned; for no or an unknown name prints the usage and
 * returns 2. */
static inline int
hc_test_main(const char *prog, int argc, char **argv, const struct hc_test_case *cases, size_t n,
             void (*before)(void))
{
    for (size_t i = 0; argc == 2 && i < n; i++) {
        if (strcmp(argv[1], cases[i].name) == 0) {
            if (before)
                before();
            cases[i].fn();
            printf("ok: %s\n", argv[1]);
            return 0;
        }
    }
    fprintf(stderr, "usage: %s CASE, one of:", prog);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %s", cases[i].name);
    fputc('\n', stderr);
    return 2;
}

#endif
