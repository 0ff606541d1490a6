#include "config/cluster_configs.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/hex.hpp"
#include "common/path.hpp"

namespace kvmesh::config {
namespace {

using json = nlohmann::json;

std::string DescribeSource(const ConfigRecord& r) {
  return "applied by " + r.applied_by + " through " + r.node + " at " + FormatUtcTime(r.time_ms);
}

}  // namespace

bool IsReservedPath(std::string_view path) {
  return KeyHasPrefix(path, kReservedPathPrefix);
}

Status CheckUserDatabasePath(std::string_view path) {
  if (!IsReservedPath(path)) return Status::OK();
  return Status::PermissionDenied("database path " + Quote(path) + " is reserved: paths under " +
                                  std::string(kReservedPathPrefix) + " hold kvmesh's own data");
}

const DatabaseConfig& SystemConfigsConfig() {
  static const DatabaseConfig config = [] {
    DatabaseConfig c;
    c.id = "kvmesh-system-configs";
    c.description = "Cluster-wide database configs (kvmesh config apply)";
    Status s = Matcher::Compile(kSystemConfigsPath, &c.matcher);
    (void)s;  // a literal that passes the path rules: cannot fail
    c.replication.min = 1;
    // Placement takes the `max` best nodes; more than any cluster has means every node.
    c.replication.max = 1u << 20;
    c.size_bytes = 64ull << 20;
    c.source = "built in";
    return c;
  }();
  return config;
}

std::string EncodeRecord(const ConfigRecord& r) {
  const DatabaseConfig& c = r.config;
  json out{{"id", c.id},
           {"deleted", r.deleted},
           {"applied_by", r.applied_by},
           {"node", r.node},
           {"time_ms", r.time_ms}};
  if (!r.deleted) {
    out["description"] = c.description;
    out["tags"] = c.tags;
    out["matcher"] = c.matcher.pattern();
    out["replication"] = {{"min", c.replication.min}, {"max", c.replication.max}};
    out["size_bytes"] = c.size_bytes;
    out["max_instances"] = c.max_instances;
  }
  return out.dump();
}

Status DecodeRecord(std::string_view text, ConfigRecord* r) {
  json in = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (!in.is_object()) return Status::InvalidConfig("stored config record is not a JSON object");
  try {
    *r = ConfigRecord{};
    r->config.id = in.at("id").get<std::string>();
    r->deleted = in.at("deleted").get<bool>();
    r->applied_by = in.at("applied_by").get<std::string>();
    r->node = in.at("node").get<std::string>();
    r->time_ms = in.at("time_ms").get<int64_t>();
    r->config.from_api = true;
    r->config.source = DescribeSource(*r);
    if (r->deleted) return Status::OK();
    DatabaseConfig& c = r->config;
    c.description = in.at("description").get<std::string>();
    c.tags = in.at("tags").get<std::vector<std::string>>();
    c.replication.min = in.at("replication").at("min").get<uint32_t>();
    c.replication.max = in.at("replication").at("max").get<uint32_t>();
    c.size_bytes = in.at("size_bytes").get<uint64_t>();
    c.max_instances = in.value("max_instances", uint64_t{0});
    // The checks of config/config_set.cpp's CheckValues, so that a record written by another
    // version can never make the merged set invalid (MergeConfigs must not fail on records).
    if (c.size_bytes == 0 || c.replication.min < 1 || c.replication.max < c.replication.min) {
      return Status::InvalidConfig("stored config record " + Quote(c.id) +
                                   " has a size of 0 or a replication min/max out of range");
    }
    return Matcher::Compile(in.at("matcher").get<std::string>(), &c.matcher);
  } catch (const json::exception& e) {
    return Status::InvalidConfig(std::string("stored config record: ") + e.what());
  }
}

// Ids may hold any byte ('/' and ".." included), so keys carry them hex-encoded: one segment,
// always valid, and sorting like the ids do.
std::string ConfigKey(std::string_view id) {
  return std::string(kConfigsPrefix) + "/" + HexEncode(id);
}

std::string HistoryPrefix(std::string_view id) {
  return "/history/" + HexEncode(id);
}

std::string HistoryKey(const ConfigRecord& r) {
  char time[24];
  std::snprintf(time, sizeof time, "%020lld", static_cast<long long>(r.time_ms));
  return HistoryPrefix(r.config.id) + "/" + time + "-" + HexEncode(r.node);
}

std::string DrainKey(uint64_t node_id) {
  return std::string(kDrainPrefix) + FormatNodeId(node_id);
}

std::string DrainProgressKey(uint64_t node_id) {
  return std::string(kDrainProgressPrefix) + FormatNodeId(node_id);
}

std::string EncodeDrain(const DrainRecord& r) {
  // The id as text: JSON numbers beyond 2^53 do not survive every reader.
  return json{{"node_id", FormatNodeId(r.node_id)},
              {"drained", r.drained},
              {"requested_by", r.requested_by},
              {"node", r.node},
              {"time_ms", r.time_ms}}
      .dump();
}

namespace {

Status ParseNodeIdField(const json& in, uint64_t* out) {
  const std::string text = in.at("node_id").get<std::string>();
  if (!ParseNodeId(text, out)) {
    return Status::InvalidConfig("stored drain record: node_id " + Quote(text) +
                                 " is not a hex node id");
  }
  return Status::OK();
}

}  // namespace

Status DecodeDrain(std::string_view text, DrainRecord* r) {
  json in = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (!in.is_object()) return Status::InvalidConfig("stored drain record is not a JSON object");
  try {
    *r = DrainRecord{};
    r->drained = in.at("drained").get<bool>();
    r->requested_by = in.at("requested_by").get<std::string>();
    r->node = in.at("node").get<std::string>();
    r->time_ms = in.at("time_ms").get<int64_t>();
    return ParseNodeIdField(in, &r->node_id);
  } catch (const json::exception& e) {
    return Status::InvalidConfig(std::string("stored drain record: ") + e.what());
  }
}

std::string EncodeDrainProgress(const DrainProgress& p) {
  return json{{"node_id", FormatNodeId(p.node_id)},
              {"request_ms", p.request_ms},
              {"total", p.total},
              {"left", p.left},
              {"time_ms", p.time_ms}}
      .dump();
}

Status DecodeDrainProgress(std::string_view text, DrainProgress* p) {
  json in = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (!in.is_object()) return Status::InvalidConfig("stored drain progress is not a JSON object");
  try {
    *p = DrainProgress{};
    p->request_ms = in.at("request_ms").get<int64_t>();
    p->total = in.at("total").get<uint64_t>();
    p->left = in.at("left").get<uint64_t>();
    p->time_ms = in.at("time_ms").get<int64_t>();
    return ParseNodeIdField(in, &p->node_id);
  } catch (const json::exception& e) {
    return Status::InvalidConfig(std::string("stored drain progress: ") + e.what());
  }
}

Status MergeConfigs(const std::vector<DatabaseConfig>& files, const std::vector<ConfigRecord>& api,
                    ConfigSet* out, std::vector<std::string>* warnings) {
  std::vector<DatabaseConfig> merged = files;
  std::unordered_set<std::string> ids;
  std::unordered_set<std::string> patterns;
  for (const DatabaseConfig& c : files) {
    ids.insert(c.id);
    patterns.insert(c.matcher.pattern());
  }
  std::vector<const ConfigRecord*> live;
  for (const ConfigRecord& r : api) {
    if (!r.deleted) live.push_back(&r);
  }
  std::sort(live.begin(), live.end(), [](const ConfigRecord* a, const ConfigRecord* b) {
    return a->config.id < b->config.id;
  });
  for (const ConfigRecord* r : live) {
    const DatabaseConfig& c = r->config;
    std::string why;
    if (IsReservedPath(c.matcher.pattern())) {
      why = "its matcher names a reserved path";
    } else if (ids.count(c.id) > 0) {
      why = "a config of this node's files has the same id";
    } else if (patterns.count(c.matcher.pattern()) > 0) {
      why = "a config with the matcher " + Quote(c.matcher.pattern()) + " comes before it";
    }
    if (!why.empty()) {
      if (warnings != nullptr) {
        warnings->push_back("cluster-wide config " + Quote(c.id) +
                            " is not in force on this node: " + why);
      }
      continue;
    }
    ids.insert(c.id);
    patterns.insert(c.matcher.pattern());
    merged.push_back(c);
  }
  std::vector<ConfigDiagnostic> diagnostics;
  Status s = ConfigSet::FromConfigs(std::move(merged), out, &diagnostics);
  if (warnings != nullptr) {
    for (const ConfigDiagnostic& d : diagnostics) {
      if (!d.is_error) warnings->push_back(d.ToString());
    }
  }
  return s;
}

}  // namespace kvmesh::config
