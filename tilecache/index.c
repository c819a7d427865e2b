/* index.c: the SQLite index (see index.h). Every statement is prepared once at open. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "error.h"
#include "index.h"

#define INDEX_SCHEMA_VERSION 1
#define INDEX_BUSY_TIMEOUT_MS 10000

enum { ST_GET, ST_PUT, ST_TOUCH, ST_DELETE, ST_OLDEST, ST_LIST, ST_COUNT };

static const char *const stmt_sql[ST_COUNT] = {
    [ST_GET] = "SELECT key, state, format, size, atime, error FROM entries WHERE key = ?1",
    [ST_PUT] = "INSERT OR REPLACE INTO entries (key, state, format, size, atime, error) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_TOUCH] = "UPDATE entries SET atime = ?2 WHERE key = ?1",
    [ST_DELETE] = "DELETE FROM entries WHERE key = ?1",
    /* INCOMPLETE rows belong to a running job: never eviction candidates. Nor is the most
     * recently used row: it is what a reader has just asked for. */
    [ST_OLDEST] = "SELECT key, state, format, size, atime, error FROM entries "
                  "WHERE state IN (2, 3) AND atime < "
                  "  (SELECT max(atime) FROM entries WHERE state IN (2, 3)) "
                  "ORDER BY atime",
    [ST_LIST] = "SELECT key, state, format, size, atime, error FROM entries",
};

struct hc_tc_index {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
};

/* SQLite result codes to errno: a broken file is -EBADMSG (the caller may rebuild), a lock
 * held past busy_timeout -EBUSY, a full disk -ENOSPC, the rest -EIO. */
static int
index_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return -EBADMSG;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_CANTOPEN:
        return -EACCES;
    case SQLITE_READONLY:
        return -EROFS;
    default:
        return -EIO;
    }
}

static int
index_fail(struct hc_tc_index *ix, int rc, const char *what)
{
    return hc_error(index_errno(rc), "tilecache", "index: %s: %s", what,
                    ix && ix->db ? sqlite3_errmsg(ix->db) : sqlite3_errstr(rc));
}

int
hc_tc_index_exec(struct hc_tc_index *ix, const char *sql)
{
    int rc = sqlite3_exec(ix->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : index_fail(ix, rc, sql);
}

void
hc_tc_index_rollback(struct hc_tc_index *ix)
{
    /* Keeps the caller's error message: the failure that made it roll back is the news. */
    sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
}

static int
index_schema(struct hc_tc_index *ix)
{
    sqlite3_stmt *st = NULL;
    int rc, version = 0;

    /* WAL: readers never block the writer and a commit is one append, which survives the
     * process being killed at any instant. NORMAL syncs at checkpoints only: enough for
     * kill -9, and a cache may lose its last few entries on a power cut (recovery then
     * removes their files). */
    rc = sqlite3_exec(ix->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return index_fail(ix, rc, "journal_mode=WAL");
    rc = sqlite3_exec(ix->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return index_fail(ix, rc, "synchronous=NORMAL");
    /* Our transactions are a few pages each (every lookup writes an access time): a WAL
     * checkpointed every 64 pages stays near 256 KiB instead of SQLite's 4 MiB, and is cut
     * back to 1 MiB should it ever grow past that, so the index takes little of a disk
     * that may be full. */
    rc = sqlite3_exec(ix->db, "PRAGMA wal_autocheckpoint=64; PRAGMA journal_size_limit=1048576",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return index_fail(ix, rc, "wal_autocheckpoint");

    rc = sqlite3_prepare_v2(ix->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return index_fail(ix, rc, "user_version");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return index_fail(ix, rc, "user_version");
    if (version > INDEX_SCHEMA_VERSION)
        return hc_error(-EBADMSG, "tilecache", "index: schema %d is newer than ours (%d)", version,
                        INDEX_SCHEMA_VERSION);
    if (version == INDEX_SCHEMA_VERSION)
        return 0; /* no write at open: a cache on a full disk still opens */

    rc = sqlite3_exec(ix->db,
                      "BEGIN IMMEDIATE;"
                      "CREATE TABLE IF NOT EXISTS entries ("
                      "  key TEXT PRIMARY KEY NOT NULL,"
                      "  state INTEGER NOT NULL,"
                      "  format INTEGER NOT NULL,"
                      "  size INTEGER NOT NULL DEFAULT 0,"
                      "  atime INTEGER NOT NULL,"
                      "  error TEXT NOT NULL DEFAULT '') WITHOUT ROWID;"
                      "CREATE INDEX IF NOT EXISTS entries_atime ON entries (atime);"
                      "PRAGMA user_version = 1;"
                      "COMMIT;",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        int err = index_fail(ix, rc, "creating the schema");
        hc_tc_index_rollback(ix);
        return err;
    }
    return 0;
}

int
hc_tc_index_open(const char *path, struct hc_tc_index **out)
{
    struct hc_tc_index *ix = calloc(1, sizeof *ix);
    int rc, err = 0;

    if (!ix)
        return hc_error(-ENOMEM, "tilecache", "index: out of memory");
    /* NOMUTEX: the caller serialises every use of the connection with its own mutex. */
    rc = sqlite3_open_v2(path, &ix->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        err = index_fail(ix, rc, path);
        goto out;
    }
    sqlite3_busy_timeout(ix->db, INDEX_BUSY_TIMEOUT_MS);
    /* Keep the WAL file (at its size) across closes: a later transaction then reuses blocks
     * it already owns, so the index can still record deletes when the disk is full, which
     * is exactly when eviction needs to. */
    int persist = 1;
    sqlite3_file_control(ix->db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
    err = index_schema(ix);
    if (err)
        goto out;
    for (int i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(ix->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &ix->st[i],
                                NULL);
        if (rc != SQLITE_OK) {
            err = index_fail(ix, rc, "preparing statements");
            goto out;
        }
    }
out:
    if (err) {
        hc_tc_index_close(ix);
        return err;
    }
    *out = ix;
    return 0;
}

void
hc_tc_index_close(struct hc_tc_index *ix)
{
    if (!ix)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(ix->st[i]);
    sqlite3_close(ix->db);
    free(ix);
}

void
hc_tc_index_checkpoint(struct hc_tc_index *ix)
{
    sqlite3_wal_checkpoint_v2(ix->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

static void
row_read(sqlite3_stmt *st, struct hc_tc_row *r)
{
    const unsigned char *key = sqlite3_column_text(st, 0);
    const unsigned char *error = sqlite3_column_text(st, 5);

    memset(r, 0, sizeof *r);
    if (key)
        snprintf(r->key, sizeof r->key, "%s", (const char *)key);
    r->state = (enum hc_tc_state)sqlite3_column_int(st, 1);
    r->format = (enum hc_format)sqlite3_column_int(st, 2);
    r->size = (uint64_t)sqlite3_column_int64(st, 3);
    r->atime = sqlite3_column_int64(st, 4);
    if (error)
        snprintf(r->error, sizeof r->error, "%s", (const char *)error);
}

/* Steps a query for its first row that skip(ctx, key) does not pass over (skip may be NULL:
 * the first row). 0 and *r, -ENOENT, or -errno. Rows are read lazily: each skipped row
 * costs one step. */
static int
index_one(struct hc_tc_index *ix, sqlite3_stmt *st, struct hc_tc_row *r, const char *what,
          int (*skip)(void *ctx, const char *key), void *ctx)
{
    int rc, err = -ENOENT;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *key = sqlite3_column_text(st, 0);
        if (skip && key && skip(ctx, (const char *)key))
            continue;
        row_read(st, r);
        err = 0;
        break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = index_fail(ix, rc, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

/* Steps a statement that returns no rows. */
static int
index_run(struct hc_tc_index *ix, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int err = rc == SQLITE_DONE ? 0 : index_fail(ix, rc, what);

    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

int
hc_tc_index_get(struct hc_tc_index *ix, const char *key, struct hc_tc_row *r)
{
    sqlite3_stmt *st = ix->st[ST_GET];

    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    return index_one(ix, st, r, "lookup", NULL, NULL);
}

int
hc_tc_index_put(struct hc_tc_index *ix, const struct hc_tc_row *r)
{
    sqlite3_stmt *st = ix->st[ST_PUT];

    sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, (int)r->state);
    sqlite3_bind_int(st, 3, (int)r->format);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)r->size);
    sqlite3_bind_int64(st, 5, r->atime);
    sqlite3_bind_text(st, 6, r->error, -1, SQLITE_STATIC);
    return index_run(ix, st, "writing an entry");
}

int
hc_tc_index_touch(struct hc_tc_index *ix, const char *key, int64_t atime)
{
    sqlite3_stmt *st = ix->st[ST_TOUCH];

    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, atime);
    return index_run(ix, st, "updating an access time");
}

int
hc_tc_index_delete(struct hc_tc_index *ix, const char *key)
{
    sqlite3_stmt *st = ix->st[ST_DELETE];

    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    return index_run(ix, st, "deleting an entry");
}

int
hc_tc_index_oldest(struct hc_tc_index *ix, struct hc_tc_row *r,
                   int (*skip)(void *ctx, const char *key), void *ctx)
{
    return index_one(ix, ix->st[ST_OLDEST], r, "finding the least recently used entry", skip, ctx);
}

int
hc_tc_index_list(struct hc_tc_index *ix, struct hc_tc_row **rows, size_t *n)
{
    sqlite3_stmt *st = ix->st[ST_LIST];
    struct hc_tc_row *v = NULL;
    size_t len = 0, cap = 0;
    int rc, err = 0;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct hc_tc_row *nv = realloc(v, ncap * sizeof *nv);
            if (!nv) {
                err = hc_error(-ENOMEM, "tilecache", "index: out of memory");
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        row_read(st, &v[len++]);
    }
    if (rc != SQLITE_DONE)
        err = index_fail(ix, rc, "listing entries");
out:
    sqlite3_reset(st);
    if (err) {
        free(v);
        return err;
    }
    *rows = v;
    *n = len;
    return 0;
}
