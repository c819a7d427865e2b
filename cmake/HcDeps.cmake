# hc_find_pkg(<target> <pkg-config module> <debian package> <brew formula> [OPTIONAL])
#
# Finds a dependency through pkg-config and makes an imported target HC::<target>.
# When it is missing, stops with a message that names the package to install, so that
# someone on a fresh machine knows what to type (or runs scripts/setup).
include(FindPkgConfig)

function(hc_find_pkg target module deb brew)
  set(optional FALSE)
  if("OPTIONAL" IN_LIST ARGN)
    set(optional TRUE)
  endif()
  if(TARGET HC::${target})
    set(HC_HAVE_${target} TRUE PARENT_SCOPE)
    return()
  endif()
  pkg_check_modules(HCPKG_${target} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(HCPKG_${target}_FOUND)
    add_library(HC::${target} ALIAS PkgConfig::HCPKG_${target})
    message(STATUS "Found ${module} ${HCPKG_${target}_VERSION}")
    set(HC_HAVE_${target} TRUE PARENT_SCOPE)
  elseif(optional)
    message(STATUS "Not found: ${module} (optional; apt-get install ${deb} / brew install ${brew})")
    set(HC_HAVE_${target} FALSE PARENT_SCOPE)
  else()
    message(FATAL_ERROR
      "${module} not found. Install it: apt-get install ${deb}   (macOS: brew install ${brew})\n"
      "or run scripts/setup, which installs everything HybridCompute needs.")
  endif()
endfunction()

# stb ships as headers (Debian: <stb/stb_image.h>, Homebrew: <stb_image.h>); core/stb_impl.c
# compiles the implementation once.
function(hc_find_stb)
  find_path(HC_STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb)
  if(NOT HC_STB_INCLUDE_DIR)
    message(FATAL_ERROR
      "stb_image.h not found. Install it: apt-get install libstb-dev   (macOS: brew install stb)\n"
      "or run scripts/setup.")
  endif()
  message(STATUS "Found stb: ${HC_STB_INCLUDE_DIR}")
  set(HC_STB_INCLUDE_DIR ${HC_STB_INCLUDE_DIR} PARENT_SCOPE)
endfunction()
