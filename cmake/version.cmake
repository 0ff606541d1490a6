# Writes tools/version.cpp.in to OUT with the project version and the git commit of the source
# tree. Run at every build (a custom target, CMakeLists.txt), not at configure time, so that a new
# commit changes what --version prints without re-running CMake's configure step; configure_file
# leaves OUT untouched when nothing changed, so an unchanged commit rebuilds nothing.
# Inputs (-D): IN, OUT, VERSION, SOURCE_DIR; GIT (may be empty: no git); COMMIT (a commit given
# at configure time, -DKVMESH_GIT_COMMIT=..., for builds from a tarball; wins over git).
set(KVMESH_VERSION "${VERSION}")
set(KVMESH_GIT_COMMIT "${COMMIT}")
if(KVMESH_GIT_COMMIT STREQUAL "" AND GIT)
  execute_process(COMMAND "${GIT}" -C "${SOURCE_DIR}" rev-parse --short=12 HEAD
    RESULT_VARIABLE rc OUTPUT_VARIABLE head OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(rc EQUAL 0)
    set(KVMESH_GIT_COMMIT "${head}")
    # Uncommitted changes to tracked files: the binary is not exactly that commit.
    # --no-optional-locks: never take the index lock from under a git command the user is running.
    execute_process(COMMAND "${GIT}" --no-optional-locks -C "${SOURCE_DIR}" status --porcelain
      --untracked-files=no RESULT_VARIABLE rc OUTPUT_VARIABLE changes ERROR_QUIET)
    if(rc EQUAL 0 AND NOT changes STREQUAL "")
      string(APPEND KVMESH_GIT_COMMIT "-dirty")
    endif()
  endif()
endif()
configure_file("${IN}" "${OUT}" @ONLY)
