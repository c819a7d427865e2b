# Pixel engine of core/ (tiles, bicubic, SIMD levels). The C tests link hc_pixels only, so
# the HC_CORE_ONLY cross build (scripts/test-neon) builds and runs them under qemu-aarch64.
hc_add_test(test_tile SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tile.c LIBS hc_pixels LABELS unit)
hc_add_test(test_bicubic SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_bicubic.c LIBS hc_pixels LABELS unit)
