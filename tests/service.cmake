# hc-gpu-service (gpu_service/, issue 3).
#   service_<name>   tests/service_http.py NAME: a real service on 127.0.0.1:0 (CPU backend),
#                    answers compared with tests/service_ref (core's scalar bicubic
#                    reference) and OpenCV; bad requests, lying lengths, slow clients,
#                    overload (429), token, memory budget (429), SIGTERM drain.
#   test_service_cuda  CUDA backend bit-identical to the CPU backend (label gpu; 77 without
#                    a GPU or without the CUDA backend built).
if(HC_CORE_ONLY)
  return()
endif()

add_executable(service_ref ${CMAKE_CURRENT_SOURCE_DIR}/service_ref.c)
target_link_libraries(service_ref PRIVATE hc_pixels)
set_target_properties(service_ref PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

foreach(t correct opencv encodings badreq lying slow overload token memory drain drain_inflight drain_refused keepalive_timeout
         drain_timeout)
  add_test(NAME service_${t}
    COMMAND ${HC_REF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/service_http.py ${t})
  set_tests_properties(service_${t} PROPERTIES LABELS integration SKIP_RETURN_CODE 77
    TIMEOUT 120 ENVIRONMENT "HC_BUILD_DIR=${CMAKE_BINARY_DIR};HC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endforeach()

if(HC_SERVICE_CUDA)
  hc_add_test(test_service_cuda SOURCES test_service_cuda.c
    LIBS hc_cuda hc_pixels LABELS gpu)
  set_tests_properties(test_service_cuda PROPERTIES TIMEOUT 600)
endif()
