# The installable package: two shared libraries, their public headers, a CMake package config
# (find_package(kvmesh) gives kvmesh::client and kvmesh::embedded) and pkg-config files.
#
# Each shared library is the whole of its internal static archive (kvmesh_client, or kvmesh for
# the embedded node) plus what that needs, linked privately: a user's program sees only the C++
# standard library and the headers in include/kvmesh/. cmake/kvmesh.map exports the public API
# (kvmesh::Status, Node, Database, client::...) and makes every other symbol local, so the copies
# of CAF glue, protobuf messages, RocksDB wrappers and kvmesh internals inside the libraries
# cannot clash with the program's own or with each other. In-tree targets (kvmeshd, the tests)
# keep linking the static libraries.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Code of the static archives ends up in shared objects.
foreach(internal kvmesh_common kvmesh_proto kvmesh_config kvmesh_acl kvmesh_storage
        kvmesh_messages kvmesh_remote_exits kvmesh kvmesh_transport kvmesh_client)
  set_target_properties(${internal} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endforeach()

# A shared library needs one source of its own; the code comes from the archives linked whole.
set(KVMESH_SHARED_STUB "${CMAKE_CURRENT_BINARY_DIR}/kvmesh_shared_library.cpp")
file(CONFIGURE OUTPUT "${KVMESH_SHARED_STUB}"
  CONTENT "// The kvmesh shared libraries are their static archives linked whole (cmake/install.cmake).\n")

function(kvmesh_shared_library target output_name export_name archive)
  add_library(${target} SHARED "${KVMESH_SHARED_STUB}")
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.24)
    target_link_libraries(${target} PRIVATE "$<LINK_LIBRARY:WHOLE_ARCHIVE,${archive}>")
  else()
    # Before CMake 3.24 (only 3.25 is tried here): the GNU linker flags around the archive.
    target_link_libraries(${target} PRIVATE "-Wl,--whole-archive" ${archive}
      "-Wl,--no-whole-archive")
  endif()
  target_include_directories(${target} INTERFACE
    "$<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>"
    "$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>")
  target_compile_features(${target} INTERFACE cxx_std_17)
  target_link_options(${target} PRIVATE
    "LINKER:--version-script=${CMAKE_CURRENT_SOURCE_DIR}/cmake/kvmesh.map" "LINKER:--no-undefined")
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME ${output_name}
    EXPORT_NAME ${export_name}
    VERSION ${PROJECT_VERSION}
    # 0.x: every minor version may change the ABI.
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}
    LINK_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/cmake/kvmesh.map")
  add_library(kvmesh::${export_name} ALIAS ${target})
endfunction()

kvmesh_shared_library(kvmesh_client_shared kvmesh-client client kvmesh_client)
kvmesh_shared_library(kvmesh_embedded_shared kvmesh-embedded embedded kvmesh)

install(DIRECTORY include/kvmesh DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS kvmesh_client_shared kvmesh_embedded_shared EXPORT kvmeshTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS kvmeshd kvmesh_cli kvmesh-cluster RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

set(KVMESH_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/kvmesh)
install(EXPORT kvmeshTargets NAMESPACE kvmesh:: DESTINATION ${KVMESH_CMAKE_DIR})
configure_package_config_file(cmake/kvmeshConfig.cmake.in
  "${CMAKE_CURRENT_BINARY_DIR}/kvmeshConfig.cmake" INSTALL_DESTINATION ${KVMESH_CMAKE_DIR})
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/kvmeshConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/kvmeshConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/kvmeshConfigVersion.cmake" DESTINATION ${KVMESH_CMAKE_DIR})

# pkg-config files find the prefix from their own location (${pcfiledir}), so they stay right
# when the prefix is chosen at install time (cmake --install --prefix P).
file(RELATIVE_PATH KVMESH_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
string(REGEX REPLACE "/$" "" KVMESH_PC_TO_PREFIX "${KVMESH_PC_TO_PREFIX}")
foreach(pc kvmesh-client kvmesh-embedded)
  if(pc STREQUAL "kvmesh-client")
    set(KVMESH_PC_DESCRIPTION "kvmesh network client: talk to a kvmesh node (kvmeshd)")
  else()
    set(KVMESH_PC_DESCRIPTION "kvmesh embedded node: run a kvmesh node inside your process")
  endif()
  set(KVMESH_PC_LIBRARY ${pc})
  configure_file(cmake/kvmesh.pc.in "${CMAKE_CURRENT_BINARY_DIR}/${pc}.pc" @ONLY)
  install(FILES "${CMAKE_CURRENT_BINARY_DIR}/${pc}.pc"
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()

# Every public header compiles on its own with nothing but include/ on the include path: an
# installed header cannot reach common/, config/ or any other internal header.
file(GLOB KVMESH_PUBLIC_HEADERS CONFIGURE_DEPENDS
  "${CMAKE_CURRENT_SOURCE_DIR}/include/kvmesh/*.hpp")
set(KVMESH_HEADER_CHECKS)
foreach(header ${KVMESH_PUBLIC_HEADERS})
  get_filename_component(name ${header} NAME_WE)
  set(check "${CMAKE_CURRENT_BINARY_DIR}/header_check/${name}.cpp")
  file(CONFIGURE OUTPUT "${check}" CONTENT "#include \"kvmesh/${name}.hpp\"\n")
  list(APPEND KVMESH_HEADER_CHECKS "${check}")
endforeach()
add_library(kvmesh_public_header_check OBJECT ${KVMESH_HEADER_CHECKS})
target_include_directories(kvmesh_public_header_check PRIVATE
  "${CMAKE_CURRENT_SOURCE_DIR}/include")
