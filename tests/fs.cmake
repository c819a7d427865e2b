# hcfs integration tests (tests/fs_test.py CASE): each mounts a real hcfs in a fresh temporary
# directory (and always unmounts it), the svc_* cases against real hc-gpu-service processes
# on 127.0.0.1:0. Skipped (77) without /dev/fuse, fusermount3 or the programs they need.
if(HC_CORE_ONLY OR NOT TARGET hcfs)
  return()
endif()
foreach(t passthrough kernel_passthrough readers exact_size cache evicted tiny_cache bad_files finder versions replaced rewritten kill9 signals sigterm_reading
          svc_readers svc_down svc_token svc_failover svc_resume)
  add_test(NAME fs_${t} COMMAND ${HC_REF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/fs_test.py ${t})
  set_tests_properties(fs_${t} PROPERTIES LABELS integration SKIP_RETURN_CODE 77 TIMEOUT 300
    RESOURCE_LOCK hcfs_cpu
    ENVIRONMENT "HC_BUILD_DIR=${CMAKE_BINARY_DIR};HC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endforeach()

# fs/jobs.c on its own (no FUSE mount): the order of a job's end.
add_executable(test_jobs ${CMAKE_CURRENT_SOURCE_DIR}/test_jobs.c)
target_include_directories(test_jobs PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_jobs PRIVATE hcfs_parts)
set_target_properties(test_jobs PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
foreach(case end_order)
  add_test(NAME test_jobs_${case} COMMAND test_jobs ${case})
  set_tests_properties(test_jobs_${case} PROPERTIES LABELS unit TIMEOUT 120)
endforeach()
