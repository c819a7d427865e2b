# The HTTP tile client (client/) against real hc-gpu-service processes on 127.0.0.1:0
# started by the test itself (tests/test_client.c NAME). Tiles are compared with core's
# scalar bicubic reference. Skipped (77) when hc-gpu-service is not built.
if(HC_CORE_ONLY)
  return()
endif()
add_executable(test_client ${CMAKE_CURRENT_SOURCE_DIR}/test_client.c)
target_include_directories(test_client PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_client PRIVATE hc_client hc_pixels HC::zstd Threads::Threads)
set_target_properties(test_client PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
foreach(t basic encodings failover_dead kill_midjob all_dead token cancel concurrent opts
          overload refused bad_answers many_jobs wire_sizes too_large)
  add_test(NAME client_${t} COMMAND test_client ${t})
  set_tests_properties(client_${t} PROPERTIES LABELS integration SKIP_RETURN_CODE 77
    TIMEOUT 120 ENVIRONMENT "HC_BUILD_DIR=${CMAKE_BINARY_DIR};HC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endforeach()
