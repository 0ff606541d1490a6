// The web console's static files (http/console/*.html, *.js, *.css), compiled into the binary by
// cmake/embed_files.cmake so that a node serves them without installed files or network access.
// The HTTP API serves index.html at "/" and the rest at "/console/{name}".
#pragma once

#include <cstddef>
#include <string_view>

namespace kvmesh::http {

struct ConsoleAsset {
  const char* name;          // "index.html"
  const char* content_type;  // "text/html; charset=utf-8"
  const char* data;
  size_t size;
};

/// The file called `name` (no directory), or nullptr when there is none.
const ConsoleAsset* FindConsoleAsset(std::string_view name);

}  // namespace kvmesh::http
