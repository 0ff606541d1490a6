#include "tools/kvmeshd_settings.hpp"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <climits>
#include <filesystem>
#include <functional>
#include <map>

#include "config/size.hpp"

namespace kvmesh {

DaemonConfig DefaultDaemonConfig() {
  DaemonConfig config;
  char host[HOST_NAME_MAX + 1] = {0};
  config.name = ::gethostname(host, sizeof(host)) == 0 ? host : "kvmesh";
  config.node.data_dir = "kvmesh-data";
  config.node.config_dir = "databases";
  config.node.listen_port = kDefaultPort;
  return config;
}

Status LoadDaemonConfig(const std::string& path, DaemonConfig* config) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Status::InvalidConfig("node config " + path + " is not a readable file");
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return Status::InvalidConfig("cannot read node config " + path);
  } catch (const YAML::Exception& e) {
    return Status::InvalidConfig(path + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  } catch (const std::exception& e) {
    return Status::InvalidConfig("cannot read node config " + path + ": " + e.what());
  }
  if (root.IsNull()) return Status::OK();
  if (!root.IsMap()) return Status::InvalidConfig(path + ": the node config must be a mapping");
  auto error = [&](const YAML::Node& node, const std::string& field, const std::string& what) {
    return Status::InvalidConfig(path + ":" + std::to_string(node.Mark().line + 1) + ": " + field +
                                 ": " + what);
  };
  // One reader per field; each converts and range-checks its value.
  using Reader = std::function<Status(const YAML::Node&, const std::string&)>;
  auto text = [&](std::string* out) -> Reader {
    return [&, out](const YAML::Node& n, const std::string& field) {
      if (!n.IsScalar()) return error(n, field, "must be a string");
      *out = n.Scalar();
      return Status::OK();
    };
  };
  auto boolean = [&](bool* out) -> Reader {
    return [&, out](const YAML::Node& n, const std::string& field) {
      if (!n.IsScalar() || !YAML::convert<bool>::decode(n, *out)) {
        return error(n, field, "must be true or false");
      }
      return Status::OK();
    };
  };
  auto integer = [&](long long min, long long max, std::function<void(long long)> set) -> Reader {
    return [&, min, max, set](const YAML::Node& n, const std::string& field) {
      long long value = 0;
      if (!n.IsScalar() || !YAML::convert<long long>::decode(n, value)) {
        return error(n, field, "must be an integer");
      }
      if (value < min || value > max) {
        return error(n, field,
                     "must be between " + std::to_string(min) + " and " + std::to_string(max));
      }
      set(value);
      return Status::OK();
    };
  };
  auto size = [&](uint64_t* out) -> Reader {
    return [&, out](const YAML::Node& n, const std::string& field) {
      if (!n.IsScalar()) return error(n, field, "must be a size such as 256MiB");
      Status s = config::ParseSize(n.Scalar(), out);
      if (!s.ok()) return error(n, field, s.message());
      return Status::OK();
    };
  };
  NodeOptions& node = config->node;
  const std::map<std::string, Reader> readers = {
      {"name", text(&config->name)},
      {"data_dir", text(&node.data_dir)},
      {"config_dir", text(&node.config_dir)},
      {"listen", text(&node.listen_host)},
      {"log_level", text(&config->log_level)},
      {"port", integer(0, 65535, [&](long long v) { node.listen_port = static_cast<int>(v); })},
      {"cluster_port",
       integer(-1, 65535, [&](long long v) { node.cluster_port = static_cast<int>(v); })},
      {"cluster_listen", text(&node.cluster_host)},
      {"http_port",
       integer(-1, 65535, [&](long long v) { config->http_port = static_cast<int>(v); })},
      {"http_listen", text(&config->http_host)},
      {"cluster_advertise", text(&node.cluster_advertise)},
      {"seeds",
       [&](const YAML::Node& n, const std::string& field) {
         if (!n.IsSequence()) return error(n, field, "must be a list of host:port addresses");
         node.seeds.clear();
         for (const auto& seed : n) {
           if (!seed.IsScalar() || seed.Scalar().find(':') == std::string::npos) {
             return error(seed, field, "each seed is a host:port address");
           }
           node.seeds.push_back(seed.Scalar());
         }
         return Status::OK();
       }},
      {"failure_timeout_ms",
       integer(100, 3600LL * 1000,
               [&](long long v) { node.failure_timeout = std::chrono::milliseconds(v); })},
      {"replica_grace",
       integer(1, 365LL * 24 * 3600,
               [&](long long v) { node.replica_grace = std::chrono::seconds(v); })},
      {"tombstone_grace",
       integer(0, 365LL * 24 * 3600,
               [&](long long v) { node.tombstone_grace = std::chrono::seconds(v); })},
      {"accept_stale_data", boolean(&node.accept_stale_data)},
      {"rebalance_wave",
       integer(1, 1'000'000, [&](long long v) { node.rebalance_wave = static_cast<size_t>(v); })},
      {"idle_timeout", integer(0, 365LL * 24 * 3600,
                               [&](long long v) { node.idle_timeout = std::chrono::seconds(v); })},
      {"sync",
       [&](const YAML::Node& n, const std::string& field) {
         // true and false are the settings of versions before the three modes; they keep their
         // meaning.
         bool on = false;
         if (n.IsScalar() && ParseSyncMode(n.Scalar(), &node.sync)) return Status::OK();
         if (n.IsScalar() && YAML::convert<bool>::decode(n, on)) {
           node.sync = on ? SyncMode::kAlways : SyncMode::kNone;
           return Status::OK();
         }
         return error(n, field, "must be none, periodic or always");
       }},
      {"sync_period_ms",
       integer(1, 60000, [&](long long v) { node.sync_period = std::chrono::milliseconds(v); })},
      {"busy_poll_us",
       integer(0, kMaxBusyPoll.count(),
               [&](long long v) { node.busy_poll = std::chrono::microseconds(v); })},
      {"max_connections",
       integer(1, 10'000'000, [&](long long v) { node.max_connections = static_cast<size_t>(v); })},
      {"max_connections_per_address",
       integer(1, 10'000'000,
               [&](long long v) { node.max_connections_per_address = static_cast<size_t>(v); })},
      {"low_space", size(&node.low_space_bytes)},
      {"low_space_percent",
       integer(0, 50, [&](long long v) { node.low_space_percent = static_cast<double>(v); })},
      {"space_reserve", size(&node.space_reserve_bytes)},
      {"tls_ca", text(&node.tls.ca_file)},
      {"tls_cert", text(&node.tls.cert_file)},
      {"tls_key", text(&node.tls.key_file)},
      {"insecure_plaintext", boolean(&node.insecure_plaintext)},
      {"acl", text(&node.acl_file)},
  };
  for (const auto& entry : root) {
    if (!entry.first.IsScalar())
      return error(entry.first, "(key)", "setting names are plain words");
    const std::string field = entry.first.Scalar();
    auto reader = readers.find(field);
    if (reader == readers.end()) {
      std::string known;
      for (const auto& [name, unused] : readers) known += (known.empty() ? "" : ", ") + name;
      return error(entry.first, field, "unknown setting (known: " + known + ")");
    }
    Status s = reader->second(entry.second, field);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

}  // namespace kvmesh
