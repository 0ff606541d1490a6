// Database configs: parsed once from YAML into validated, immutable structs.
//
// A config directory holds *.yaml / *.yml files (read in name order, not recursively). A file
// holds one database config (a mapping), a list of them (a sequence), or several YAML documents
// separated by "---". One config:
//
//   id: ""                      # optional; empty or absent: derived stably from the matcher
//   description: Key-value storage for application data   # optional
//   tags: []                    # optional list of strings
//   matcher: /example/kv        # required: literal, wildcard or regex (config/matcher.hpp)
//   replication: {min: 1, max: 2}  # optional; defaults min 1, max 1; min >= 1, max >= min
//   size: 100MB                 # required, > 0 (config/size.hpp)
//
// Errors name the file, line and field. Unknown fields are errors (a typo would otherwise leave a
// default in force), naming the nearest known field when it looks like a typo.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/matcher.hpp"
#include "kvmesh/status.hpp"

namespace kvmesh::config {

struct ReplicationConfig {
  /// Replicas that must hold a write before it is acknowledged. >= 1. Default 1.
  uint32_t min = 1;
  /// Nodes that hold a copy of each instantiated database. >= min. Default 1.
  uint32_t max = 1;
};

struct DatabaseConfig {
  /// Unique among loaded configs. Derived from the matcher when the YAML leaves it empty.
  std::string id;
  std::string description;
  std::vector<std::string> tags;
  Matcher matcher;
  ReplicationConfig replication;
  /// Budget of each instantiated database: key bytes + value bytes of its live entries.
  uint64_t size_bytes = 0;
  /// Where the config was read: "dir/file.yaml:12"; for an API config, who applied it where.
  std::string source;
  /// True if `id` was derived from the matcher (the YAML gave none).
  bool id_derived = false;
  /// True for a cluster-wide config applied through the API (config/cluster_configs.hpp),
  /// false for one of the node's own files or in-memory configs.
  bool from_api = false;
};

/// One finding while loading: an error (the set is not loaded) or a warning (it is).
struct ConfigDiagnostic {
  bool is_error = true;
  std::string file;
  /// 1-based; 0 when the finding concerns the whole file.
  int line = 0;
  /// The YAML field concerned ("replication.min"), or empty.
  std::string field;
  std::string message;
  /// "file:line: error: field: message" (parts omitted when empty).
  std::string ToString() const;
};

/// OK if `found` holds no error; otherwise kInvalidConfig "N errors in <what>: " followed by the
/// first few errors (all of them stay in `found`). The one summary of every file kvmesh loads.
Status SummariseDiagnostics(const std::vector<ConfigDiagnostic>& found, const std::string& what);

/// An immutable, validated set of database configs and the resolution of paths to configs.
class ConfigSet {
 public:
  ConfigSet() = default;

  /// Loads every config file in `dir`. Returns OK (and fills `*out`) only if there were no
  /// errors; warnings and errors are appended to `*diagnostics` (which may be null). A missing
  /// or unreadable directory is an error naming it. The returned Status message summarises the
  /// errors (the first few, and the count).
  static Status LoadDirectory(const std::string& dir, ConfigSet* out,
                              std::vector<ConfigDiagnostic>* diagnostics);

  /// Loads configs from YAML text as if it were a file named `source_name` (used by tests and by
  /// `config validate`). Same rules as LoadDirectory.
  static Status LoadString(std::string_view yaml, const std::string& source_name, ConfigSet* out,
                           std::vector<ConfigDiagnostic>* diagnostics);

  /// Builds a set from configs already in memory (embedding programs); validates them the same
  /// way (ids, matchers, replication, size, duplicates, overlaps).
  static Status FromConfigs(std::vector<DatabaseConfig> configs, ConfigSet* out,
                            std::vector<ConfigDiagnostic>* diagnostics);

  /// The config serving the normalised database path `path`, by the precedence rule in
  /// config/matcher.hpp, or nullptr if none matches. The pointer lives as long as this set.
  const DatabaseConfig* Resolve(std::string_view path) const;

  /// The config with this id, or nullptr.
  const DatabaseConfig* FindById(std::string_view id) const;

  /// All configs, in file order.
  const std::vector<DatabaseConfig>& configs() const { return configs_; }

 private:
  /// Takes `configs` (already validated) and builds the lookup indexes below.
  void Adopt(std::vector<DatabaseConfig> configs);

  std::vector<DatabaseConfig> configs_;
  /// Literal pattern -> index in configs_. A literal match beats every other kind, so Resolve
  /// tries this one hash lookup first.
  std::unordered_map<std::string, size_t> literal_index_;
  /// Indexes of the wildcard and regex configs, sorted by (precedence, file order): the first one
  /// that matches wins.
  std::vector<size_t> pattern_order_;
  /// id -> index in configs_.
  std::unordered_map<std::string, size_t> id_index_;
};

}  // namespace kvmesh::config
