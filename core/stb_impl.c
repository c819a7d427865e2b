/* stb_impl.c: the one translation unit that compiles stb_image and stb_image_write.
 *
 * stb decodes the formats without a dedicated library here (BMP, TGA, GIF, PSD, PNM, HDR;
 * PNG when libspng is absent). JPEG always goes through libjpeg-turbo and Softimage PIC is
 * not a format we offer, so both are compiled out: less code parsing untrusted input.
 * Third-party code: its warnings are not ours to fix, so they are silenced here only.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"

#define STBI_NO_JPEG
#define STBI_NO_PIC
#define STBI_FAILURE_USERMSG
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#pragma GCC diagnostic pop
