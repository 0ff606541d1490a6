#include "bootstrap/node_options.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/address.hpp"
#include "common/path.hpp"
#include "messages/system_config.hpp"

namespace kvmesh {

namespace {

Status Invalid(const std::string& message) {
  return Status::InvalidArgument(message);
}

/// -1 (none), 0 (any free port) or a TCP port.
Status CheckPort(const char* field, int port) {
  if (port >= -1 && port <= 65535) return Status::OK();
  return Invalid(std::string(field) + " is " + std::to_string(port) +
                 "; expected -1 (none), 0 (any free port) or a TCP port up to 65535");
}

}  // namespace

Status ValidateNodeOptions(const NodeOptions& o) {
  if (o.data_dir.empty()) return Invalid("data_dir is empty");
  if (Status s = ValidateSchedulerPolicy(o.scheduler_policy); !s.ok()) return s;
  if (o.network_workers < -1 || o.network_workers > 64) {
    return Invalid("network_workers is " + std::to_string(o.network_workers) +
                   "; expected -1 (CAF's default), 0 (decode on the network thread) or 1 to 64");
  }

  // One config source. `configs` (in-tree only) may come with a config_dir, which it overrides:
  // test clusters pass both through.
  if (!o.config_yaml.empty() && (o.configs || !o.config_dir.empty())) {
    return Invalid("config_yaml is given together with " +
                   std::string(o.configs ? "configs" : "config_dir " + Quote(o.config_dir)) +
                   "; give one config source");
  }
  if (!o.configs && o.config_yaml.empty() && o.config_dir.empty()) {
    return Invalid("needs a config source: config_dir or config_yaml");
  }

  Status s = CheckPort("listen_port", o.listen_port);
  if (!s.ok()) return s;
  if (o.listen_port >= 0 && o.listen_host.empty()) {
    return Invalid("listen_host is empty; name one (127.0.0.1, or 0.0.0.0 to listen everywhere)");
  }
  s = CheckPort("cluster_port", o.cluster_port);
  if (!s.ok()) return s;
  const bool clustered = o.cluster_port >= 0;
  if (clustered && o.cluster_host.empty()) {
    return Invalid("cluster_host is empty; name the address of the cluster port");
  }
  if (!o.cluster_advertise.empty()) {
    if (!clustered) {
      return Invalid("cluster_advertise " + Quote(o.cluster_advertise) +
                     " is given but no cluster_port");
    }
    std::string host;
    uint16_t port = 0;
    s = ParseHostPort(o.cluster_advertise, &host, &port);
    if (!s.ok()) return Invalid("cluster_advertise: " + s.message());
  }
  // The ACL names certificates: without TLS nobody has one, and a file that seemed to protect
  // the databases would protect nothing.
  if (!o.acl_file.empty() && !o.tls.enabled()) {
    return Invalid("acl_file " + Quote(o.acl_file) +
                   " needs TLS: access control grants rights to client certificates; give "
                   "--tls-ca, --tls-cert and --tls-key (tls in NodeOptions) or drop the ACL");
  }
  if (!clustered && !o.seeds.empty()) {
    return Invalid(
        "seeds are given but no cluster_port: a node joins a cluster only through its own "
        "cluster port");
  }
  for (const std::string& seed : o.seeds) {
    std::string host;
    uint16_t port = 0;
    s = ParseHostPort(seed, &host, &port);
    if (!s.ok()) return Invalid("seeds: " + s.message());
  }

  // Deadlines and periods drive timers: zero would fire at once or spin. idle_timeout zero means
  // "never passivate"; a zero grace means "at once", which tests use.
  struct Period {
    const char* field;
    std::chrono::milliseconds value;
    bool zero_allowed;
  };
  const Period periods[] = {
      {"request_timeout", o.request_timeout, false},
      {"peer_timeout", o.peer_timeout, false},
      {"heartbeat_interval", o.heartbeat_interval, false},
      {"failure_timeout", o.failure_timeout, false},
      {"sync_interval", o.sync_interval, false},
      {"replication_timeout", o.replication_timeout, false},
      {"idle_timeout", o.idle_timeout, true},
      {"replica_grace", o.replica_grace, true},
      {"tombstone_grace", o.tombstone_grace, true},
      {"space_check_interval", o.space_check_interval, false},
  };
  for (const Period& p : periods) {
    if (p.value.count() > 0 || (p.zero_allowed && p.value.count() == 0)) continue;
    return Invalid(std::string(p.field) + " must be " +
                   (p.zero_allowed ? "zero or more" : "positive") + ", got " +
                   std::to_string(p.value.count()) + " ms");
  }
  if (o.max_value_bytes == 0) return Invalid("max_value_bytes must be positive");
  if (o.max_value_bytes > kMaxBatchBytes) {
    return Invalid("max_value_bytes is " + FormatSize(o.max_value_bytes) + "; the maximum is " +
                   FormatSize(kMaxBatchBytes) + " (kMaxBatchBytes, the most one request carries)");
  }
  if (o.max_connections == 0) return Invalid("max_connections must be positive");
  if (o.max_connections_per_address == 0) {
    return Invalid("max_connections_per_address must be positive");
  }
  if (o.sync != SyncMode::kNone && o.sync != SyncMode::kPeriodic && o.sync != SyncMode::kAlways) {
    return Invalid("sync is " + std::to_string(static_cast<int>(o.sync)) +
                   "; expected none, periodic or always");
  }
  // Checked in every mode, so that switching a node to periodic cannot surprise.
  if (o.sync_period < std::chrono::milliseconds(1) || o.sync_period > std::chrono::seconds(60)) {
    return Invalid("sync_period must be between 1 ms and 60000 ms, got " +
                   std::to_string(o.sync_period.count()) + " ms");
  }
  if (Status s = ValidateBusyPoll(o.busy_poll); !s.ok()) return s;
  // Written this way round so that NaN fails too.
  if (!(o.low_space_percent >= 0 && o.low_space_percent <= 50)) {
    return Invalid("low_space_percent must be between 0 and 50, got " +
                   std::to_string(o.low_space_percent));
  }
  return Status::OK();
}

Status LoadNodeConfigs(const NodeOptions& o, std::shared_ptr<const config::ConfigSet>* out) {
  if (o.configs) {
    *out = o.configs;
    return Status::OK();
  }
  auto loaded = std::make_shared<config::ConfigSet>();
  std::vector<config::ConfigDiagnostic> diagnostics;
  Status s = o.config_yaml.empty()
                 ? config::ConfigSet::LoadDirectory(o.config_dir, loaded.get(), &diagnostics)
                 : config::ConfigSet::LoadString(o.config_yaml, kMemoryConfigSource, loaded.get(),
                                                 &diagnostics);
  for (const auto& d : diagnostics) {
    if (!d.is_error) spdlog::warn("{}", d.ToString());
  }
  if (!s.ok()) return s;
  *out = std::move(loaded);
  return Status::OK();
}

}  // namespace kvmesh
