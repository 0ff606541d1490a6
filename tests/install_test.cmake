# InstallTest.FindPackageBuildsAndRunsAClientProgram: what a user of the installed package does.
#   1. cmake --install the build tree into a fresh prefix;
#   2. configure and build examples/consumer (find_package(kvmesh), kvmesh::embedded and
#      kvmesh::client) against that prefix only, and run it: it embeds a node with configs given
#      in memory, puts and gets through it, and reaches the same node through the network client;
#   3. build the same program once more with only pkg-config's flags, and run that too.
# Inputs (-D): BUILD_DIR, SOURCE_DIR, WORK_DIR, CXX, GENERATOR, LAUNCHER (may be empty).
cmake_minimum_required(VERSION 3.18)

function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${step} failed (${rc}):\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

if(NOT LAUNCHER)
  set(LAUNCHER "")  # no ccache (an empty or *-NOTFOUND value)
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
run("install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")

# The consumer sees the installed prefix and nothing of the source or build tree.
set(launcher)
if(LAUNCHER)
  set(launcher "-DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER}")
endif()
run("configure consumer" "${CMAKE_COMMAND}" -S "${SOURCE_DIR}/examples/consumer"
  -B "${WORK_DIR}/consumer-build" -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX}"
  "-DCMAKE_PREFIX_PATH=${prefix}" -DCMAKE_BUILD_TYPE=Release ${launcher})
run("build consumer" "${CMAKE_COMMAND}" --build "${WORK_DIR}/consumer-build")
run("run consumer (find_package)" "${WORK_DIR}/consumer-build/kvmesh-consumer"
  "${WORK_DIR}/data-cmake")
if(NOT last_output MATCHES "consumer: OK")
  message(FATAL_ERROR "consumer (find_package) printed: ${last_output}")
endif()

# pkg-config: the flags a Makefile user would take.
file(GLOB pc_dirs "${prefix}/*/pkgconfig" "${prefix}/*/*/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "${pc_dirs}")
run("pkg-config" pkg-config --cflags --libs kvmesh-client kvmesh-embedded)
string(STRIP "${last_output}" pc_flags)
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
run("pkg-config --variable=libdir" pkg-config --variable=libdir kvmesh-client)
string(STRIP "${last_output}" libdir)
run("build consumer (pkg-config)" ${LAUNCHER} "${CXX}" -std=c++17 -O1
  "${SOURCE_DIR}/examples/consumer/consumer.cpp" ${pc_flags} "-Wl,-rpath,${libdir}"
  -o "${WORK_DIR}/kvmesh-consumer-pc")
run("run consumer (pkg-config)" "${WORK_DIR}/kvmesh-consumer-pc" "${WORK_DIR}/data-pc")
if(NOT last_output MATCHES "consumer: OK")
  message(FATAL_ERROR "consumer (pkg-config) printed: ${last_output}")
endif()
message(STATUS "installed, built with find_package and pkg-config, and ran: consumer: OK")
