/* error.h: the thread-local "last error" message.
 *
 * Functions that can fail return 0 or a negative errno and leave a human-readable reason
 * here, prefixed with their module's name ("jpeg: truncated file"). The message belongs to
 * the calling thread, so concurrent jobs never see each other's reasons.
 */
#ifndef HC_ERROR_H
#define HC_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The calling thread's last message, "" when none. Valid until the next hc_error_* call on
 * this thread. Never NULL. */
const char *hc_last_error(void);

/* Sets the calling thread's message to "<domain>: <printf(fmt, ...)>" and returns err
 * (a negative errno), so a caller can write `return hc_error(-EINVAL, "png", "...")`. */
int hc_error(int err, const char *domain, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int hc_verror(int err, const char *domain, const char *fmt, va_list ap);

/* Sets the calling thread's message to msg exactly (no domain added) and returns err: for
 * passing a reason saved from another thread or from before a cleanup step. */
int hc_error_restore(int err, const char *msg);

/* Clears the calling thread's message. */
void hc_error_clear(void);

#ifdef __cplusplus
}
#endif
#endif
