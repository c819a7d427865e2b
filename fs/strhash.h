/* strhash.h (private to hcfs): the string hash of hcfs's in-memory tables (jobs by path,
 * the path map, the probe cache): 32-bit FNV-1a; callers reduce it modulo their bucket
 * count. */
#ifndef HC_FS_STRHASH_H
#define HC_FS_STRHASH_H

#include <stdint.h>

static inline uint32_t
hc_fs_strhash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

#endif
