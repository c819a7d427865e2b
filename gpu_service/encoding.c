/* encoding.c: see encoding.h. */
#include "encoding.h"

#include <errno.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zstd.h>

#include "error.h"

int
hc_encoding_parse(const char *value, enum hc_encoding *enc)
{
    if (!value || !*value || strcasecmp(value, "identity") == 0)
        *enc = HC_ENC_IDENTITY;
    else if (strcasecmp(value, "lz4") == 0)
        *enc = HC_ENC_LZ4;
    else if (strcasecmp(value, "zstd") == 0)
        *enc = HC_ENC_ZSTD;
    else
        return hc_error(-ENOTSUP, "encoding", "unsupported Content-Encoding '%.40s' (lz4, zstd)",
                        value);
    return 0;
}

enum hc_encoding
hc_encoding_accept(const char *value)
{
    const char *p = value;

    while (p && *p) {
        size_t len;
        const char *end = strchr(p, ',');
        const char *semi;

        while (*p == ' ' || *p == '\t')
            p++;
        len = end ? (size_t)(end - p) : strlen(p);
        semi = memchr(p, ';', len);
        size_t tok = semi ? (size_t)(semi - p) : len;
        while (tok > 0 && (p[tok - 1] == ' ' || p[tok - 1] == '\t'))
            tok--;
        /* "zstd;q=0" means "not zstd". */
        int refused = 0;
        if (semi) {
            const char *q = strstr(semi, "q=");
            if (q && q < p + len)
                refused = strtod(q + 2, NULL) <= 0.0;
        }
        if (!refused) {
            if (tok == 3 && strncasecmp(p, "lz4", 3) == 0)
                return HC_ENC_LZ4;
            if (tok == 4 && strncasecmp(p, "zstd", 4) == 0)
                return HC_ENC_ZSTD;
        }
        p = end ? end + 1 : NULL;
    }
    return HC_ENC_IDENTITY;
}

const char *
hc_encoding_name(enum hc_encoding enc)
{
    switch (enc) {
    case HC_ENC_LZ4:
        return "lz4";
    case HC_ENC_ZSTD:
        return "zstd";
    default:
        return "identity";
    }
}

/* Grows *buf to at least want bytes (doubling, capped at max). */
static int
grow(uint8_t **buf, size_t *cap, size_t want, size_t max)
{
    size_t ncap = *cap ? *cap : 65536;
    uint8_t *nb;

    if (want > max)
        return -E2BIG;
    while (ncap < want)
        ncap = ncap > max / 2 ? max : ncap * 2;
    if (ncap > max)
        ncap = max;
    nb = realloc(*buf, ncap);
    if (!nb)
        return -ENOMEM;
    *buf = nb;
    *cap = ncap;
    return 0;
}

static int
decode_lz4(const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *out_len)
{
    LZ4F_dctx *dctx = NULL;
    uint8_t *buf = NULL;
    size_t cap = 0, used = 0, pos = 0, hint = 1;
    int rc = 0;

    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
        rc = hc_error(-ENOMEM, "encoding", "lz4: cannot create a context");
        goto out;
    }
    while (hint != 0) {
        size_t dst_size, src_size;

        if (pos >= len) {
            rc = hc_error(-EINVAL, "encoding", "lz4: truncated frame");
            goto out;
        }
        if (used == cap) {
            rc = grow(&buf, &cap, cap + 1, max);
            if (rc == -E2BIG) {
                rc = hc_error(rc, "encoding", "lz4: body expands past %zu bytes", max);
                goto out;
            }
            if (rc) {
                rc = hc_error(rc, "encoding", "lz4: out of memory");
                goto out;
            }
        }
        dst_size = cap - used;
        src_size = len - pos;
        hint = LZ4F_decompress(dctx, buf + used, &dst_size, in + pos, &src_size, NULL);
        if (LZ4F_isError(hint)) {
            rc = hc_error(-EINVAL, "encoding", "lz4: %s", LZ4F_getErrorName(hint));
            goto out;
        }
        used += dst_size;
        pos += src_size;
        if (dst_size == 0 && src_size == 0 && used < cap) {
            rc = hc_error(-EINVAL, "encoding", "lz4: decoder made no progress");
            goto out;
        }
    }
    if (pos != len) {
        rc = hc_error(-EINVAL, "encoding", "lz4: %zu bytes after the frame", len - pos);
        goto out;
    }
    *out = buf;
    *out_len = used;
    buf = NULL;
out:
    free(buf);
    LZ4F_freeDecompressionContext(dctx);
    return rc;
}

static int
decode_zstd(const uint8_t *in, size_t len, size_t max, uint8_t **out, size_t *out_len)
{
    ZSTD_DStream *ds = ZSTD_createDStream();
    uint8_t *buf = NULL;
    size_t cap = 0, ret = 1;
    ZSTD_inBuffer ib = {in, len, 0};
    ZSTD_outBuffer ob = {NULL, 0, 0};
    int rc = 0;

    if (!ds) {
        rc = hc_error(-ENOMEM, "encoding", "zstd: cannot create a context");
        goto out;
    }
    /* A frame that states its size lets us allocate once (still bounded by max). */
    unsigned long long content = ZSTD_getFrameContentSize(in, len);
    if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != ZSTD_CONTENTSIZE_ERROR) {
        if (content > max) {
            rc = hc_error(-E2BIG, "encoding", "zstd: body expands past %zu bytes", max);
            goto out;
        }
        if (content > 0 && grow(&buf, &cap, (size_t)content, max)) {
            rc = hc_error(-ENOMEM, "encoding", "zstd: out of memory");
            goto out;
        }
    }
    while (ib.pos < ib.size || ret != 0) {
        if (ob.pos == cap) {
            rc = grow(&buf, &cap, cap + 1, max);
            if (rc == -E2BIG) {
                rc = hc_error(rc, "encoding", "zstd: body expands past %zu bytes", max);
                goto out;
            }
            if (rc) {
                rc = hc_error(rc, "encoding", "zstd: out of memory");
                goto out;
            }
        }
        ob.dst = buf;
        ob.size = cap;
        size_t in_before = ib.pos, out_before = ob.pos;
        ret = ZSTD_decompressStream(ds, &ob, &ib);
        if (ZSTD_isError(ret)) {
            rc = hc_error(-EINVAL, "encoding", "zstd: %s", ZSTD_getErrorName(ret));
            goto out;
        }
        if (ret != 0 && ib.pos == ib.size && ob.pos < cap && in_before == ib.pos &&
            out_before == ob.pos) {
            rc = hc_error(-EINVAL, "encoding", "zstd: truncated frame");
            goto out;
        }
    }
    *out = buf;
    *out_len = ob.pos;
    buf = NULL;
out:
    free(buf);
    ZSTD_freeDStream(ds);
    return rc;
}

int
hc_encoding_decode(enum hc_encoding enc, const uint8_t *in, size_t len, size_t max, uint8_t **out,
                   size_t *out_len)
{
    uint8_t *b;

    switch (enc) {
    case HC_ENC_LZ4:
        return decode_lz4(in, len, max, out, out_len);
    case HC_ENC_ZSTD:
        return decode_zstd(in, len, max, out, out_len);
    default:
        if (len > max)
            return hc_error(-E2BIG, "encoding", "body of %zu bytes past %zu", len, max);
        b = malloc(len ? len : 1);
        if (!b)
            return hc_error(-ENOMEM, "encoding", "out of memory");
        memcpy(b, in, len);
        *out = b;
        *out_len = len;
        return 0;
    }
}

int
hc_encoding_encode(enum hc_encoding enc, const uint8_t *in, size_t len, uint8_t **out,
                   size_t *out_len)
{
    size_t cap, n;
    uint8_t *b;

    switch (enc) {
    case HC_ENC_LZ4: {
        LZ4F_preferences_t prefs;

        memset(&prefs, 0, sizeof prefs);
        prefs.frameInfo.contentSize = len;
        cap = LZ4F_compressFrameBound(len, &prefs);
        b = malloc(cap);
        if (!b)
            return hc_error(-ENOMEM, "encoding", "out of memory");
        n = LZ4F_compressFrame(b, cap, in, len, &prefs);
        if (LZ4F_isError(n)) {
            free(b);
            return hc_error(-EIO, "encoding", "lz4: %s", LZ4F_getErrorName(n));
        }
        break;
    }
    case HC_ENC_ZSTD:
        cap = ZSTD_compressBound(len);
        b = malloc(cap);
        if (!b)
            return hc_error(-ENOMEM, "encoding", "out of memory");
        /* Level 1: tiles travel on fast links, the ratio gain of higher levels is small. */
        n = ZSTD_compress(b, cap, in, len, 1);
        if (ZSTD_isError(n)) {
            free(b);
            return hc_error(-EIO, "encoding", "zstd: %s", ZSTD_getErrorName(n));
        }
        break;
    default:
        b = malloc(len ? len : 1);
        if (!b)
            return hc_error(-ENOMEM, "encoding", "out of memory");
        memcpy(b, in, len);
        n = len;
        break;
    }
    *out = b;
    *out_len = n;
    return 0;
}
