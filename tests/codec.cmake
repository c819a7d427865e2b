# Codecs of core/ (probes, readers, writers, metadata).
#   test_codec   C unit checks: bad input, bombs and memory, limits, writer failures.
#   codec_ref    tests/codec_ref.py: our decoded pixels against OpenCV / Pillow, our files
#                read back by them, ICC + EXIF carried; runs with Debian's /usr/bin/python3.
if(HC_CORE_ONLY) # the arm64 cross build has no codecs (hc_core)
  return()
endif()
hc_add_test(test_codec SOURCES test_codec.c LIBS hc_core LABELS unit)

add_test(NAME codec_ref
  COMMAND ${HC_REF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/codec_ref.py $<TARGET_FILE:test_codec>)
set_tests_properties(codec_ref PROPERTIES LABELS unit SKIP_RETURN_CODE 77 TIMEOUT 300
  ENVIRONMENT "HC_BUILD_DIR=${CMAKE_BINARY_DIR};HC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
