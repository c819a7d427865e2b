# End-to-end tests of the hc command (tests/hc_test.py NAME), against OpenCV and PIL.
if(HC_CORE_ONLY)
  return()
endif()
foreach(t opencv_random opencv_photos tiled_equals_untiled split_stitch bad_input usage
          formats_and_meta interrupt service big_tile too_many_tiles
          stitch_bad_manifest split_reuse_dir threads nginx)
  add_test(NAME hc_${t} COMMAND ${HC_REF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/hc_test.py ${t})
  set_tests_properties(hc_${t} PROPERTIES LABELS integration SKIP_RETURN_CODE 77 TIMEOUT 900
    ENVIRONMENT "HC_BUILD_DIR=${CMAKE_BINARY_DIR}")
endforeach()
