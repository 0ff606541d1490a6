// Cluster-wide database configs: configs created, changed and deleted through any node (the
// client library, `kvmesh config apply|delete`, the HTTP API), kept in a reserved system database
// that every node holds a replica of, so that they reach every node and survive restarts.
//
// The system database (kSystemConfigsPath) is an ordinary replicated database with a built-in
// config: a replica on every node (placement max is "every node"), min 1, so an edit succeeds on
// any node that is up and reaches the others by the usual deltas and anti-entropy. Its keys:
//   /configs/<hex id>                     the config in force: a ConfigRecord (JSON)
//   /history/<hex id>/<time ms>-<node>    every apply and delete of that id, kept
//                                         kHistoryPerConfig deep
//   /nodes/drain/<node id>                an operator's drain or undrain of a node: a DrainRecord
//   /nodes/progress/<node id>             how far that node's drain is: a DrainProgress, written
//                                         by the drained node alone (so an undrain and a progress
//                                         report never overwrite each other)
// Two edits of one id on two nodes at once write the same /configs key: the replicated store
// keeps the record with the higher (hlc, origin) on every replica (storage/database_store.hpp),
// so the later edit wins everywhere; both stay in the history, where the loser is visible.
//
// Which configs are in force on a node (MergeConfigs): the node's own file configs (its config
// directory, YAML text or in-memory configs), then the cluster's API configs in id order. A file
// config wins: an API config with the id or the matcher pattern of a file config on that node is
// not in force there (a warning names both), and applying one through a node whose files declare
// that id or pattern is refused. Nodes whose files differ may thus serve differently; keep file
// configs identical on every node, or use only API configs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_set.hpp"
#include "kvmesh/status.hpp"

namespace kvmesh::config {

/// Database paths at or under this prefix are kvmesh's own: users cannot open them, and user
/// configs cannot name them.
inline constexpr std::string_view kReservedPathPrefix = "/_kvmesh";
/// The system database holding the cluster-wide configs.
inline constexpr std::string_view kSystemConfigsPath = "/_kvmesh/configs";
/// History entries kept per config id (older ones are erased by the next edit).
inline constexpr size_t kHistoryPerConfig = 20;

/// True if the normalised database path `path` is reserved (kReservedPathPrefix or below it).
bool IsReservedPath(std::string_view path);

/// OK, or kPermissionDenied naming `path` if it is reserved. Every place that takes a database
/// path from a user (Node::open, the client gateway, the HTTP API) checks with this.
Status CheckUserDatabasePath(std::string_view path);

/// The built-in config of the system database: literal kSystemConfigsPath, a replica on every
/// node, min 1, 64 MiB.
const DatabaseConfig& SystemConfigsConfig();

/// One apply or delete of a config, as stored in the system database.
struct ConfigRecord {
  /// The config as applied (id always set); for a delete only `config.id` is meaningful.
  DatabaseConfig config;
  bool deleted = false;
  /// Who asked: the client certificate's principal, "embedded", or "anonymous" (no TLS).
  std::string applied_by;
  /// Name of the node it was applied through.
  std::string node;
  /// Wall clock of that node, milliseconds since the epoch.
  int64_t time_ms = 0;
};

/// JSON text of `record`.
std::string EncodeRecord(const ConfigRecord& record);
/// Parses EncodeRecord's text, compiling the matcher; kInvalidConfig naming the problem.
/// `config.source` becomes a description of who applied it where and when.
Status DecodeRecord(std::string_view text, ConfigRecord* record);

/// "/configs/<hex id>": the key of the config in force.
std::string ConfigKey(std::string_view id);
/// Prefix of every config key (for listing them all).
inline constexpr std::string_view kConfigsPrefix = "/configs";
/// "/history/<hex id>": the prefix of the history of `id`.
std::string HistoryPrefix(std::string_view id);
/// The history key of `record`: its prefix, then time and node, so that keys sort by time.
std::string HistoryKey(const ConfigRecord& record);

/// `kvmesh node drain|undrain ID`: whether node `node_id` is out of placement (drained) or back.
/// A drained node takes no replicas of users' databases on any node, across restarts, until an
/// undrain (a record with `drained` false) replaces the record.
struct DrainRecord {
  uint64_t node_id = 0;
  bool drained = false;
  /// Who asked (as ConfigRecord::applied_by), through which node, and when (ms since the epoch).
  std::string requested_by;
  std::string node;
  int64_t time_ms = 0;
};

/// A drained node's report of its hand-over, for the drain of `request_ms` (DrainRecord::time_ms,
/// so that a report of an earlier drain is not taken for this one's).
struct DrainProgress {
  uint64_t node_id = 0;
  int64_t request_ms = 0;
  /// Users' databases it held when the drain began, and those it still holds.
  uint64_t total = 0;
  uint64_t left = 0;
  int64_t time_ms = 0;
};

/// Key prefixes of DrainRecords and DrainProgress reports, and the key of node `node_id`'s.
inline constexpr std::string_view kDrainPrefix = "/nodes/drain/";
inline constexpr std::string_view kDrainProgressPrefix = "/nodes/progress/";
std::string DrainKey(uint64_t node_id);
std::string DrainProgressKey(uint64_t node_id);

/// JSON text of each, and its parser (kInvalidConfig naming the problem).
std::string EncodeDrain(const DrainRecord& record);
Status DecodeDrain(std::string_view text, DrainRecord* record);
std::string EncodeDrainProgress(const DrainProgress& progress);
Status DecodeDrainProgress(std::string_view text, DrainProgress* progress);

/// The configs in force: `files` (the node's own, already validated) in their order, then the
/// live records of `api` (not deleted) in id order, skipping any whose id or matcher pattern is
/// taken by a config before it (a warning each). Never fails because of an API record: one that
/// does not fit is left out, so that no record can stop a node from starting. Returns the
/// validation error of the whole set otherwise (which `files` alone never causes).
Status MergeConfigs(const std::vector<DatabaseConfig>& files, const std::vector<ConfigRecord>& api,
                    ConfigSet* out, std::vector<std::string>* warnings);

}  // namespace kvmesh::config
