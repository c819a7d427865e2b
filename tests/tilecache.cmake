# tilecache/ tests: one program, one ctest entry per case (test_tilecache_<case>), each in
# its own temporary directory.
if(TARGET hc_tilecache)
  add_executable(test_tilecache ${CMAKE_CURRENT_SOURCE_DIR}/test_tilecache.c)
  target_include_directories(test_tilecache PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(test_tilecache PRIVATE hc_tilecache Threads::Threads)
  set_target_properties(test_tilecache PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  foreach(case key key_xxhsum states tiles evict evict_background pin concurrency crash reopen)
    add_test(NAME test_tilecache_${case} COMMAND test_tilecache ${case})
    set_tests_properties(test_tilecache_${case} PROPERTIES LABELS unit SKIP_RETURN_CODE 77
      TIMEOUT 120)
  endforeach()
  # A full disk, for real: a 1 MiB tmpfs mounted in a private user+mount namespace (no root
  # needed where unprivileged user namespaces are allowed; skipped where they are not).
  add_test(NAME test_tilecache_full
    COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/test_tilecache_full.sh $<TARGET_FILE:test_tilecache>)
  set_tests_properties(test_tilecache_full PROPERTIES LABELS unit SKIP_RETURN_CODE 77
    TIMEOUT 120)
endif()
