/* error.c: thread-local last-error message. */
#include "error.h"

#include <stdio.h>
#include <string.h>

#define ERROR_MAX 512

static _Thread_local char last[ERROR_MAX];

const char *
hc_last_error(void)
{
    return last;
}

/* Messages are built in a local buffer and then copied: an argument may be hc_last_error()
 * itself (wrapping a reason, keeping it across a cleanup), and formatting straight into the
 * buffer being read would garble it. */
int
hc_verror(int err, const char *domain, const char *fmt, va_list ap)
{
    char buf[ERROR_MAX];
    int n = snprintf(buf, sizeof(buf), "%s: ", domain ? domain : "hc");

    if (n < 0 || (size_t)n >= sizeof(buf))
        n = 0;
    vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    memcpy(last, buf, strlen(buf) + 1);
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
    if (msg != last)
        snprintf(last, sizeof(last), "%s", msg ? msg : "");
    return err;
}

void
hc_error_clear(void)
{
    last[0] = '\0';
}
