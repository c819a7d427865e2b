# Cross build for arm64 Linux with Debian's gcc-aarch64-linux-gnu (scripts/test-neon).
# Programs link statically so qemu-aarch64 runs them without an arm64 sysroot; ctest runs
# them through CMAKE_CROSSCOMPILING_EMULATOR.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
find_program(HC_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(HC_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${HC_QEMU_AARCH64})
endif()
