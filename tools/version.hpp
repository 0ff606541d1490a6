// The version the tools print for --version: the project version (CMakeLists.txt's project(),
// the same one the Debian package and the shared libraries carry) and the git commit the binary
// was built from, when the build knew it (cmake/version.cmake).
#pragma once

#include <string>

namespace kvmesh::tools {

/// "PROGRAM VERSION (commit HASH)", e.g. "kvmeshd 0.1.0 (commit 1a2b3c4d5e6f)"; HASH ends in
/// "-dirty" when the work tree had uncommitted changes, and the part in parentheses is left out
/// when the build did not know its commit (a source tree without git).
std::string VersionLine(const std::string& program);

}  // namespace kvmesh::tools
