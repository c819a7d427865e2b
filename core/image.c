/* image.c: format names and the formats we can write. No codec code lives here (hc_pixels has
 * no dependencies); see codec.c for probes, readers and writers. */
#include "image.h"

#include <string.h>
#include <strings.h>

const char *
hc_format_name(enum hc_format f)
{
    switch (f) {
    case HC_FORMAT_JPEG:
        return "jpeg";
    case HC_FORMAT_PNG:
        return "png";
    case HC_FORMAT_BMP:
        return "bmp";
    case HC_FORMAT_TGA:
        return "tga";
    case HC_FORMAT_GIF:
        return "gif";
    case HC_FORMAT_PSD:
        return "psd";
    case HC_FORMAT_PNM:
        return "pnm";
    case HC_FORMAT_HDR:
        return "hdr";
    case HC_FORMAT_UNKNOWN:
        break;
    }
    return "unknown";
}

enum hc_format
hc_format_from_path(const char *path)
{
    static const struct {
        const char *ext;
        enum hc_format f;
    } map[] = {
        {"jpg", HC_FORMAT_JPEG},  {"jpeg", HC_FORMAT_JPEG}, {"jpe", HC_FORMAT_JPEG},
        {"jfif", HC_FORMAT_JPEG}, {"png", HC_FORMAT_PNG},   {"bmp", HC_FORMAT_BMP},
        {"dib", HC_FORMAT_BMP},   {"tga", HC_FORMAT_TGA},   {"tpic", HC_FORMAT_TGA},
    };
    const char *slash, *dot;

    if (!path)
        return HC_FORMAT_UNKNOWN;
    slash = strrchr(path, '/');
    dot = strrchr(slash ? slash + 1 : path, '.');
    /* ".png" alone is a hidden file named png, not a PNG with no name */
    if (!dot || dot == (slash ? slash + 1 : path))
        return HC_FORMAT_UNKNOWN;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcasecmp(dot + 1, map[i].ext) == 0)
            return map[i].f;
    return HC_FORMAT_UNKNOWN;
}

enum hc_format
hc_format_writable(enum hc_format f)
{
    switch (f) {
    case HC_FORMAT_JPEG:
    case HC_FORMAT_PNG:
    case HC_FORMAT_BMP:
    case HC_FORMAT_TGA:
        return f;
    default:
        return HC_FORMAT_PNG;
    }
}
