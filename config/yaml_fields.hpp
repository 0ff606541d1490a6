// Small helpers shared by the YAML file parsers of the config layer (database configs, and the
// ACL in security/acl.cpp): positions, kinds and unknown-field messages read the same in every
// file kvmesh loads.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace kvmesh::config {

/// "unknown field "replicaton" (did you mean "replication"? known: ...)": names the nearest
/// known field when it is a likely typo (at most two edits away).
std::string UnknownField(const std::string& name, const std::vector<std::string>& known);

/// 1-based line of `node`, or `fallback` when yaml-cpp knows none.
int LineOf(const YAML::Node& node, int fallback);

/// "a string", "a list", "a mapping" or "nothing", for "must be X, got Y" messages.
const char* KindOf(const YAML::Node& node);

}  // namespace kvmesh::config
