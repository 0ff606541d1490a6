# The Debian package kvmesh (README "Packages and systemd"): cpack -G DEB --config
# build/CPackConfig.cmake. It holds everything install.cmake installs (kvmeshd, the kvmesh CLI,
# kvmesh-cluster, the shared libraries, headers, CMake and pkg-config files) under /usr, plus the
# service: a systemd unit, /etc/kvmesh/kvmeshd.yaml (a conffile), /etc/kvmesh/databases.d and
# maintainer scripts that create the kvmesh user and /var/lib/kvmesh (packaging/).
# The version is the project version (CMakeLists.txt's project()).

# The service's files go to absolute system paths, so they are a component of their own that a
# plain `cmake --install` (to any prefix) leaves out: only the package installs them.
install(FILES packaging/kvmeshd.service DESTINATION /lib/systemd/system COMPONENT service
  EXCLUDE_FROM_ALL)
install(FILES packaging/kvmeshd.yaml DESTINATION /etc/kvmesh COMPONENT service EXCLUDE_FROM_ALL)
install(DIRECTORY DESTINATION /etc/kvmesh/databases.d COMPONENT service EXCLUDE_FROM_ALL)
# Example database configs, not in force: a node serves what its administrator puts in
# databases.d (README).
install(FILES examples/config/example.yaml examples/config/profiles.yaml
  DESTINATION ${CMAKE_INSTALL_DATADIR}/kvmesh/examples/databases.d)

# dpkg treats the files listed here as the administrator's: kept across upgrades when changed.
set(KVMESH_DEB_CONFFILES "${CMAKE_CURRENT_BINARY_DIR}/packaging/conffiles")
file(CONFIGURE OUTPUT "${KVMESH_DEB_CONFFILES}" CONTENT "/etc/kvmesh/kvmeshd.yaml\n")
# The shared libraries in /usr/lib need ldconfig after install and removal; CPack would add the
# call only to maintainer scripts it writes itself, so the package asks dpkg for it (as
# dh_makeshlibs does).
set(KVMESH_DEB_TRIGGERS "${CMAKE_CURRENT_BINARY_DIR}/packaging/triggers")
file(CONFIGURE OUTPUT "${KVMESH_DEB_TRIGGERS}" CONTENT "activate-noawait ldconfig\n")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME kvmesh)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "kvmesh maintainers <maintainers@kvmesh.invalid>" CACHE STRING
  "Maintainer field of the Debian package")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "distributed key-value database of many small databases")
# CPack puts the summary first and wraps this.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "kvmesh serves many small, isolated key-value databases, each opened by
path, declared in YAML and replicated across nodes. This package holds the node
daemon kvmeshd and its systemd service, the kvmesh command-line client,
kvmesh-cluster, and the client and embedded-node shared libraries with their
headers.")
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # kvmesh_VERSION_ARCH.deb
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
# One package of two components: everything `cmake --install` installs, and the service.
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
set(CPACK_COMPONENTS_ALL Unspecified service)
# Library dependencies come from dpkg-shlibdeps (dpkg-dev), which CPack silently skips when it is
# missing: package_config.cmake stops cpack then instead. The maintainer scripts use adduser; the
# unit's ExecReload uses /bin/kill (procps, which a minimal system may lack).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_PROJECT_CONFIG_FILE "${CMAKE_CURRENT_SOURCE_DIR}/cmake/package_config.cmake")
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, procps")
# A shlibs file and an ldconfig trigger for the shared libraries in /usr/lib.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA "${CMAKE_CURRENT_SOURCE_DIR}/packaging/debian/postinst"
  "${CMAKE_CURRENT_SOURCE_DIR}/packaging/debian/prerm"
  "${CMAKE_CURRENT_SOURCE_DIR}/packaging/debian/postrm" "${KVMESH_DEB_CONFFILES}"
  "${KVMESH_DEB_TRIGGERS}")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
