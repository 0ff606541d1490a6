// Checks of NodeOptions that Node::Start makes before it touches the disk, and the loading of
// the node's database configs from whichever source the options name. Plain functions (no CAF,
// no RocksDB) so that every rule is testable without starting a node.
#pragma once

#include <memory>

#include "config/config_set.hpp"
#include "kvmesh/node.hpp"
#include "kvmesh/status.hpp"

namespace kvmesh {

/// The source name that configs given as NodeOptions::config_yaml carry in errors and in
/// ConfigInfo::source ("<memory>:3").
inline constexpr const char* kMemoryConfigSource = "<memory>";

/// OK if every field of `options` is usable: data dir given, scheduler known, ports in range with
/// a host, cluster_advertise and every seed "host:port", seeds and cluster_advertise only with a
/// cluster port, timeouts and periods positive (idle_timeout, replica_grace and tombstone_grace
/// may be zero), max_value_bytes positive and at most kMaxBatchBytes, connection bounds positive,
/// sync a known mode and sync_period from 1 ms to 60 s, low_space_percent from 0 to 50, one config
/// source. Otherwise kInvalidArgument naming the field and the value. Reads nothing from disk.
Status ValidateNodeOptions(const NodeOptions& options);

/// Loads the configs `options` names: `configs` as given, `config_yaml` parsed and validated as a
/// file named kMemoryConfigSource, or every file in `config_dir`. Warnings are logged; errors
/// fail with kInvalidConfig listing them. Reads `config_dir`, writes nothing.
Status LoadNodeConfigs(const NodeOptions& options, std::shared_ptr<const config::ConfigSet>* out);

}  // namespace kvmesh
