/* log.c: see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static enum hc_log_level min_level = HC_LOG_INFO;

void
hc_log_set_level(enum hc_log_level level)
{
    min_level = level;
}

void
hc_log(enum hc_log_level level, const char *component, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char line[1024];
    va_list ap;
    int n, m;

    if (level < min_level)
        return;
    n = snprintf(line, sizeof line, "%s %s: ", names[level], component);
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2; /* truncated message: keep the newline */
    line[n++] = '\n';
    /* stderr may be a pipe shared with other writers: a single write keeps the line whole. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere left to report a failing stderr */
    }
}
