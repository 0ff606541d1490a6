# Read by cpack at packaging time (CPACK_PROJECT_CONFIG_FILE, cmake/package.cmake).
if(CPACK_GENERATOR STREQUAL "DEB")
  # Without dpkg-shlibdeps CPack would build a package that names none of the libraries kvmeshd
  # needs, and `apt install` would install it without them.
  find_program(KVMESH_DPKG_SHLIBDEPS dpkg-shlibdeps)
  if(NOT KVMESH_DPKG_SHLIBDEPS)
    message(FATAL_ERROR "cpack -G DEB needs dpkg-shlibdeps (Debian package dpkg-dev; "
      "scripts/install-deps.sh installs it) to compute the package's dependencies")
  endif()
endif()
