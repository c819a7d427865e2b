/* check.h: the few assertion macros the C tests share. A failed check prints where and why
 * and makes the test exit 1; HC_SKIP exits 77 (ctest's "skipped"). */
#ifndef HC_TESTS_CHECK_H
#define HC_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

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

#endif
