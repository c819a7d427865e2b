# Pixel engine of core/ (tiles, bicubic, SIMD levels). The C tests link hc_pixels only, so
# the HC_CORE_ONLY cross build (scripts/test-neon) builds and runs them under qemu-aarch64.
hc_add_test(test_tile SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tile.c LIBS hc_pixels LABELS unit)
hc_add_test(test_bicubic SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_bicubic.c LIBS hc_pixels LABELS unit)
# The same program with the run-time level forced down: hc_bicubic_resize and
# hc_tile_extract/paste then dispatch to scalar / SSE2 (the test checks hc_cpu_level()).
add_test(NAME test_bicubic_nosimd COMMAND test_bicubic)
set_tests_properties(test_bicubic_nosimd PROPERTIES LABELS unit SKIP_RETURN_CODE 77
  ENVIRONMENT "HC_NO_SIMD=1;HC_SIMD=avx2;HC_TEST_QUICK=1")
add_test(NAME test_bicubic_sse2 COMMAND test_bicubic)
set_tests_properties(test_bicubic_sse2 PROPERTIES LABELS unit SKIP_RETURN_CODE 77
  ENVIRONMENT "HC_SIMD=sse2;HC_TEST_QUICK=1")

if(NOT HC_CORE_ONLY)
  # OpenCV reference (independent): cv2.resize INTER_CUBIC from Debian's python3-opencv.
  add_executable(bicubic_cv_driver ${CMAKE_CURRENT_SOURCE_DIR}/bicubic_cv_driver.c)
  target_link_libraries(bicubic_cv_driver PRIVATE hc_pixels)
  set_target_properties(bicubic_cv_driver PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME test_bicubic_cv
    COMMAND ${HC_REF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/bicubic_cv.py $<TARGET_FILE:bicubic_cv_driver>)
  set_tests_properties(test_bicubic_cv PROPERTIES LABELS unit SKIP_RETURN_CODE 77 TIMEOUT 120)

  # Benchmark program for scripts/bench-bicubic (built, not registered as a test).
  add_executable(bench_bicubic ${CMAKE_CURRENT_SOURCE_DIR}/bench_bicubic.c)
  target_link_libraries(bench_bicubic PRIVATE hc_pixels)
  set_target_properties(bench_bicubic PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
endif()
