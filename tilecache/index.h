/* index.h: the cache's SQLite index (internal to tilecache/).
 *
 * One row per key: state (enum hc_tc_state), output format, output size, access time and
 * the last error. The database is in WAL mode with synchronous=NORMAL: a committed
 * transaction survives kill -9 of the process (not necessarily a power cut, which at worst
 * loses the last transactions; recovery at open then drops what they described).
 *
 * Thread safety: none. One struct hc_tc_index is one SQLite connection; the caller
 * serialises every call (tilecache.c holds its mutex).
 */
#ifndef HC_TILECACHE_INDEX_H
#define HC_TILECACHE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "tilecache.h"

struct hc_tc_index;

struct hc_tc_row {
    char key[HC_TC_KEY_LEN + 1];
    enum hc_tc_state state;
    enum hc_format format;
    uint64_t size;
    int64_t atime; /* nanoseconds since the epoch, strictly increasing within a process */
    char error[256];
};

/* Opens (creating) the index at path. Returns 0 and *out, -EBADMSG when the file is not a
 * usable database (corrupt, not SQLite, or a newer schema: the caller may rebuild the
 * cache), or another -errno; hc_last_error() says why. */
int hc_tc_index_open(const char *path, struct hc_tc_index **out);
void hc_tc_index_close(struct hc_tc_index *ix);

/* 0 and *r, or -ENOENT when key has no row. */
int hc_tc_index_get(struct hc_tc_index *ix, const char *key, struct hc_tc_row *r);
/* Inserts or replaces r's row. */
int hc_tc_index_put(struct hc_tc_index *ix, const struct hc_tc_row *r);
/* Sets the access time of key's row (no row: nothing happens). */
int hc_tc_index_touch(struct hc_tc_index *ix, const char *key, int64_t atime);
int hc_tc_index_delete(struct hc_tc_index *ix, const char *key);
/* The least recently used row that may be evicted (DONE or ERROR, never INCOMPLETE, and
 * never the most recently used of those, so that a result larger than the cache's bound is
 * still there for the reader who asked for it), passing over the keys skip(ctx, key) says
 * to keep: 0 and *r, or -ENOENT when there is none. skip may be NULL. */
int hc_tc_index_oldest(struct hc_tc_index *ix, struct hc_tc_row *r,
                       int (*skip)(void *ctx, const char *key), void *ctx);
/* Every row, into a malloc'd array (*rows, freed with free()) of *n rows. */
int hc_tc_index_list(struct hc_tc_index *ix, struct hc_tc_row **rows, size_t *n);
/* BEGIN / COMMIT around a batch of changes (recovery). */
int hc_tc_index_exec(struct hc_tc_index *ix, const char *sql);
/* ROLLBACK, leaving hc_last_error() as it was. */
void hc_tc_index_rollback(struct hc_tc_index *ix);
/* Writes the WAL back into the database (at close); the WAL file keeps its size. */
void hc_tc_index_checkpoint(struct hc_tc_index *ix);

#endif
