/* tmpdir.h: a fresh temporary directory for a C test, removed when the process that made it
 * exits normally or through a failed check (exit(1)). Forked children inherit the atexit
 * handler; only the maker removes the directory. Include it in one file of a test program. */
#ifndef HC_TESTS_TMPDIR_H
#define HC_TESTS_TMPDIR_H

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

static char hc_test_tmp[PATH_MAX];
static pid_t hc_test_tmp_owner;

static int
hc_test_tmp_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void
hc_test_tmp_cleanup(void)
{
    if (hc_test_tmp[0] && getpid() == hc_test_tmp_owner)
        nftw(hc_test_tmp, hc_test_tmp_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes $TMPDIR/hc-<tag>-XXXXXX (or under /tmp) and returns its path. */
static const char *
hc_test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(hc_test_tmp, sizeof hc_test_tmp, "%s/hc-%s-XXXXXX", base && base[0] ? base : "/tmp",
             tag);
    HC_CHECK(mkdtemp(hc_test_tmp) != NULL);
    hc_test_tmp_owner = getpid();
    atexit(hc_test_tmp_cleanup);
    return hc_test_tmp;
}

#endif
