/* error.c: thread-local last-error message. */
#include "error.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char last[512];

const char *
hc_last_error(void)
{
    return last;
}

int
hc_verror(int err, const char *domain, const char *fmt, va_list ap)
{
    int n = snprintf(last, sizeof(last), "%s: ", domain ? domain : "hc");

    if (n < 0 || (size_t)n >= sizeof(last))
        n = 0;
    vsnprintf(last + n, sizeof(last) - (size_t)n, fmt, ap);
    return err;
}

int
hc_error(int err, const char *domain, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    hc_verror(err, domain, fmt, ap);
    va_end(ap);
    return err;
}

int
hc_error_restore(int err, const char *msg)
{
    snprintf(last, sizeof(last), "%s", msg ? msg : "");
    return err;
}

void
hc_error_clear(void)
{
    last[0] = '\0';
}
