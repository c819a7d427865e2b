/* log.h: one line per event on stderr, "level component: message" (STYLE.md rule 11).
 * Lines are written with one write() each so that threads never interleave within a line. */
#ifndef HC_LOG_H
#define HC_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

enum hc_log_level { HC_LOG_DEBUG, HC_LOG_INFO, HC_LOG_WARN, HC_LOG_ERROR };

/* Lines below this level are dropped (default info). Set once at start-up. */
void hc_log_set_level(enum hc_log_level level);

void hc_log(enum hc_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
