# Debian's libre2-dev ships only a pkg-config file; this wraps it as the imported target RE2::re2.
find_package(PkgConfig REQUIRED)
pkg_check_modules(RE2_PC QUIET IMPORTED_TARGET re2)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(RE2 REQUIRED_VARS RE2_PC_FOUND)
if(RE2_FOUND AND NOT TARGET RE2::re2)
  add_library(RE2::re2 INTERFACE IMPORTED)
  set_target_properties(RE2::re2 PROPERTIES INTERFACE_LINK_LIBRARIES PkgConfig::RE2_PC)
endif()
