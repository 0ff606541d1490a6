// kvmesh: the command line for a kvmesh node.
//
// Exit codes: 0 ok, 1 not found, 2 usage, 3 any other error, 4 a condition of put or del
// (--if-version, --if-absent) failed. Errors go to stderr in one line.
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/path.hpp"
#include "common/read_levels.hpp"
#include "common/request_limits.hpp"
#include "config/config_set.hpp"
#include "config/size.hpp"
#include "kvmesh/client.hpp"
#include "security/acl.hpp"
#include "security/certificates.hpp"
#include "tools/base64.hpp"
#include "tools/version.hpp"

namespace {

using kvmesh::Code;
using kvmesh::Status;
using json = nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitNotFound = 1;
constexpr int kExitUsage = 2;
constexpr int kExitError = 3;
constexpr int kExitConditionFailed = 4;

struct Globals {
  std::string node = "127.0.0.1:" + std::to_string(7370);
  bool json = false;
  int timeout_seconds = 30;
  /// --tls-ca/--tls-cert/--tls-key (or KVMESH_TLS_*): all three, or none for plaintext.
  kvmesh::TlsOptions tls;
  /// get and ls: --consistency (README "Read levels") and, for read_your_writes, --session.
  kvmesh::ReadConsistency read_level = kvmesh::ReadConsistency::kEventual;
  std::string session;
};

int Fail(const Status& s) {
  std::cerr << "kvmesh: " << s << "\n";
  if (s.IsNotFound()) return kExitNotFound;
  if (s.code() == Code::kConditionFailed) return kExitConditionFailed;
  return kExitError;
}

bool ValidUtf8(std::string_view text) {
  try {
    (void)json(std::string(text)).dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

/// Bytes for JSON output under `field`: as text when valid UTF-8, else base64 under
/// "<field>_base64" (keys and database paths may hold any bytes).
void PutText(json& j, const std::string& field, const std::string& bytes) {
  if (ValidUtf8(bytes)) {
    j[field] = bytes;
  } else {
    j[field + "_base64"] = kvmesh::tools::Base64Encode(bytes);
  }
}

void PutKey(json& j, const std::string& key) {
  PutText(j, "key", key);
}

/// Flushes stdout and reports a failed write (a full disk must not look like a full export).
/// Milliseconds since the Unix epoch as UTC "2026-12-06T05:14:01Z".
std::string FormatTime(uint64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

int FinishOutput() {
  std::cout.flush();
  if (!std::cout) return Fail(Status::IOError("cannot write to standard output"));
  return kExitOk;
}

/// A key for text output: as is when printable, else quoted with escapes.
std::string ShowKey(const std::string& key) {
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) return kvmesh::Quote(key);
  }
  return key;
}

/// Reads all of `in`; false on a read error (as opposed to the end of the input).
bool ReadAll(std::istream& in, std::string* out) {
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

/// Opens `path` for reading if it is a regular file (or a pipe or device); a directory is an
/// error rather than empty input.
Status OpenInput(const std::string& path, std::ifstream* in) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return Status::IOError(path + " is a directory");
  in->open(path, std::ios::binary);
  if (!*in) return Status::IOError("cannot read " + path);
  return Status::OK();
}

class Cli {
 public:
  explicit Cli(Globals g) : g_(std::move(g)) {}

  kvmesh::client::Client& Connect() {
    if (!client_.ok()) {
      kvmesh::client::ClientOptions options;
      options.request_timeout = std::chrono::seconds(g_.timeout_seconds);
      options.tls = g_.tls;
      client_ = kvmesh::client::connect(g_.node, options);
    }
    return client_;
  }

  int Open(const std::string& path, kvmesh::Database* db) {
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    *db = client.open(path);
    if (!db->ok()) return Fail(db->status());
    // A read_your_writes read is made in the session of --session (none: nothing to wait for).
    if (g_.read_level == kvmesh::ReadConsistency::kReadYourWrites) {
      if (Status s = db->set_session_token(g_.session); !s.ok()) return Fail(s);
    }
    return kExitOk;
  }

  int Put(const std::string& path, const std::string& key, const std::string* value,
          const std::string& file, const kvmesh::WriteOptions& options) {
    std::string bytes;
    if (!file.empty()) {
      std::ifstream in;
      if (Status s = OpenInput(file, &in); !s.ok()) return Fail(s);
      if (!ReadAll(in, &bytes)) return Fail(Status::IOError("error reading " + file));
    } else if (value == nullptr || *value == "-") {
      if (!ReadAll(std::cin, &bytes)) {
        return Fail(Status::IOError("error reading standard input"));
      }
    } else {
      bytes = *value;
    }
    kvmesh::Database db;
    if (int rc = Open(path, &db)) return rc;
    Status s = db.put(key, bytes, options);
    if (!s.ok()) return Fail(s);
    if (g_.json) std::cout << json{{"ok", true}, {"bytes", bytes.size()}}.dump() << "\n";
    return FinishOutput();
  }

  int Get(const std::string& path, const std::string& key, const std::string& out_file,
          bool with_version) {
    kvmesh::Database db;
    if (int rc = Open(path, &db)) return rc;
    kvmesh::Result<std::string> value = Status::NotFound("");
    std::string version;
    if (with_version) {
      // The version goes to stderr, so stdout stays the value's raw bytes.
      auto versioned = db.get_versioned(key, {g_.read_level});
      if (!versioned.ok()) return Fail(versioned.status());
      version = versioned->version;
      value = std::move(versioned->value);
      if (!g_.json) std::cerr << version << "\n";
    } else {
      value = db.get(key, {g_.read_level});
    }
    if (!value.ok()) return Fail(value.status());
    if (!out_file.empty()) {
      std::ofstream out(out_file, std::ios::binary);
      out.write(value->data(), static_cast<std::streamsize>(value->size()));
      out.close();  // a full disk often shows only here
      if (out.fail()) return Fail(Status::IOError("cannot write " + out_file));
    } else if (g_.json) {
      json j;
      PutKey(j, key);
      j["value"] = kvmesh::tools::Base64Encode(*value);
      if (with_version) j["version"] = version;
      std::cout << j.dump() << "\n";
    } else {
      std::cout.write(value->data(), static_cast<std::streamsize>(value->size()));
    }
    return FinishOutput();
  }

  int Del(const std::string& path, const std::string& key, const kvmesh::WriteOptions& options) {
    kvmesh::Database db;
    if (int rc = Open(path, &db)) return rc;
    Status s = db.erase(key, options);
    return s.ok() ? kExitOk : Fail(s);
  }

  /// Pages through the keys `options` selects (and values when options.with_values), calling
  /// `each` per entry, at most `limit` (0: all).
  template <class F>
  Status Scan(const kvmesh::Database& db, kvmesh::ListOptions options, uint64_t limit, F each) {
    const bool with_values = options.with_values;
    options.consistency = g_.read_level;
    uint64_t seen = 0;
    while (limit == 0 || seen < limit) {
      auto page = db.list_page(options);
      if (!page.ok()) return page.status();
      for (size_t i = 0; i < page->keys.size() && (limit == 0 || seen < limit); ++i, ++seen) {
        each(page->keys[i], with_values ? page->values[i] : std::string());
      }
      if (!page->has_more()) break;
      options.start_after = page->next_token;
    }
    return Status::OK();
  }

  int Ls(const std::string& path, const kvmesh::ListOptions& options, uint64_t limit) {
    kvmesh::Database db;
    if (int rc = Open(path, &db)) return rc;
    json keys = json::array();
    Status s = Scan(db, options, limit, [&](const std::string& key, const std::string&) {
      if (g_.json) {
        json j;
        PutKey(j, key);
        keys.push_back(j);
      } else {
        std::cout << ShowKey(key) << "\n";
      }
    });
    if (!s.ok()) return Fail(s);
    if (g_.json) std::cout << keys.dump() << "\n";
    return FinishOutput();
  }

  /// One line per change under `prefix` (README "Watch"): "put KEY" / "delete KEY", or with
  /// --json {"event","key","version"[,"value" base64][,"position"]}. The position to resume
  /// from (--from) goes to stderr ("position P") at the start and after each update; in JSON it
  /// is on the last event of each update. Runs until interrupted, until an update brings the
  /// total to `count` events (0: no limit), or for `seconds` (0: no limit).
  int Watch(const std::string& path, const std::string& prefix, const std::string& from,
            bool values, uint64_t count, uint64_t seconds) {
    kvmesh::Database db;
    if (int rc = Open(path, &db)) return rc;
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
    Status error;
    uint64_t printed = 0;
    kvmesh::WatchOptions options;
    options.prefix = prefix;
    options.from = from;
    options.with_values = values;
    auto on_update = [&](kvmesh::Result<kvmesh::WatchUpdate> update) {
      std::lock_guard<std::mutex> lock(mutex);
      if (!update.ok()) {
        error = update.status();
        done = true;
        cv.notify_all();
        return;
      }
      const auto& events = update->events;
      for (size_t i = 0; i < events.size(); ++i) {
        const kvmesh::WatchEvent& e = events[i];
        const bool put = e.kind == kvmesh::WatchEvent::Kind::kPut;
        if (g_.json) {
          json j{{"event", put ? "put" : "delete"}};
          PutKey(j, e.key);
          j["version"] = e.version;
          if (values && put) j["value"] = kvmesh::tools::Base64Encode(e.value);
          if (i + 1 == events.size()) j["position"] = update->position;
          std::cout << j.dump() << "\n";
        } else {
          std::cout << (put ? "put " : "delete ") << ShowKey(e.key) << "\n";
        }
      }
      std::cout.flush();
      if (!g_.json) std::cerr << "position " << update->position << std::endl;
      printed += events.size();
      if (count != 0 && printed >= count) {
        done = true;
        cv.notify_all();
      }
    };
    kvmesh::Watch watch;
    Status s = db.watch(options, on_update, &watch);
    if (!s.ok()) return Fail(s);
    if (!g_.json) std::cerr << "position " << watch.position() << std::endl;
    {
      std::unique_lock<std::mutex> lock(mutex);
      if (seconds == 0) {
        cv.wait(lock, [&] { return done; });
      } else {
        cv.wait_for(lock, std::chrono::seconds(seconds), [&] { return done; });
      }
    }
    watch.stop();
    if (!error.ok()) return Fail(error);
    // Where to resume from (--from): it also records how recently this watcher was caught up.
    if (!g_.json) std::cerr << "position " << watch.position() << std::endl;
    return FinishOutput();
  }

  int Export(const std::string& path, const std::string& prefix) {
    kvmesh::Database db;
    if (int rc = Open(path, &db)) return rc;
    kvmesh::ListOptions options;
    options.prefix = prefix;
    options.with_values = true;
    Status s = Scan(db, options, 0, [&](const std::string& key, const std::string& value) {
      json j;
      PutKey(j, key);
      j["value"] = kvmesh::tools::Base64Encode(value);
      std::cout << j.dump() << "\n";
    });
    return s.ok() ? FinishOutput() : Fail(s);
  }

  int Import(const std::string& path, const std::string& file) {
    std::ifstream file_in;
    std::istream* in = &std::cin;
    if (file != "-") {
      if (Status s = OpenInput(file, &file_in); !s.ok()) return Fail(s);
      in = &file_in;
    }
    kvmesh::Database db;
    if (int rc = Open(path, &db)) return rc;
    const bool progress = ::isatty(STDERR_FILENO) != 0;
    constexpr size_t kBatchOps = 1000;
    constexpr size_t kBatchBytes = 4u << 20;
    kvmesh::WriteBatch batch;
    size_t batch_bytes = 0;
    uint64_t imported = 0;
    auto flush = [&]() -> Status {
      if (batch.empty()) return Status::OK();
      Status s = db.write(batch);
      if (!s.ok()) return s;
      imported += batch.size();
      batch.ops.clear();
      batch_bytes = 0;
      if (progress) std::cerr << "\rimported " << imported << " keys" << std::flush;
      return Status::OK();
    };
    std::string line;
    uint64_t line_no = 0;
    while (std::getline(*in, line)) {
      ++line_no;
      if (line.empty()) continue;
      auto bad = [&](const std::string& why) {
        return Fail(Status::InvalidArgument(file + ":" + std::to_string(line_no) + ": " + why +
                                            " (" + std::to_string(imported) +
                                            " keys were imported before it)"));
      };
      json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object()) return bad("not a JSON object");
      std::string key, value;
      if (j.contains("key") && j["key"].is_string()) {
        key = j["key"].get<std::string>();
      } else if (!(j.contains("key_base64") && j["key_base64"].is_string() &&
                   kvmesh::tools::Base64Decode(j["key_base64"].get<std::string>(), &key))) {
        return bad("needs \"key\" (a string) or \"key_base64\"");
      }
      if (!(j.contains("value") && j["value"].is_string() &&
            kvmesh::tools::Base64Decode(j["value"].get<std::string>(), &value))) {
        return bad("needs \"value\" in base64");
      }
      batch_bytes += key.size() + value.size();
      batch.Put(std::move(key), std::move(value));
      if (batch.size() >= kBatchOps || batch_bytes >= kBatchBytes) {
        if (Status s = flush(); !s.ok()) return Fail(s);
      }
    }
    if (in->bad()) {
      return Fail(Status::IOError("error reading " + file + " after " + std::to_string(imported) +
                                  " keys"));
    }
    if (Status s = flush(); !s.ok()) return Fail(s);
    if (progress) std::cerr << "\n";
    if (g_.json) {
      std::cout << json{{"imported", imported}}.dump() << "\n";
    } else {
      std::cout << "imported " << imported << " keys into " << path << "\n";
    }
    return FinishOutput();
  }

  int Stats(const std::string& path) {
    kvmesh::Database db;
    if (int rc = Open(path, &db)) return rc;
    auto stats = db.stats();
    if (!stats.ok()) return Fail(stats.status());
    if (g_.json) {
      json j{{"config", stats->config_id},
             {"keys", stats->key_count},
             {"used_bytes", stats->used_bytes},
             {"limit_bytes", stats->limit_bytes}};
      PutText(j, "path", stats->path);
      std::cout << j.dump() << "\n";
    } else {
      std::cout << stats->path << " (config " << stats->config_id << "): " << stats->key_count
                << " keys, " << kvmesh::FormatSize(stats->used_bytes) << " used of "
                << kvmesh::FormatSize(stats->limit_bytes) << "\n";
    }
    return FinishOutput();
  }

  int ReplicationStatus(const std::string& path) {
    kvmesh::Database db;
    if (int rc = Open(path, &db)) return rc;
    auto st = db.replication_status();
    if (!st.ok()) return Fail(st.status());
    if (g_.json) {
      json replicas = json::array();
      for (uint64_t id : st->replicas) replicas.push_back(kvmesh::FormatNodeId(id));
      json peers = json::array();
      for (const auto& p : st->peers) {
        peers.push_back({{"node", kvmesh::FormatNodeId(p.node_id)},
                         {"reachable", p.reachable},
                         {"version_vector", p.version_vector},
                         {"writes_seen", p.writes_seen},
                         {"pending_deltas", p.pending_deltas}});
      }
      json j{{"node", kvmesh::FormatNodeId(st->node_id)},
             {"replicas", replicas},
             {"min", st->min},
             {"max", st->max},
             {"required_acks", st->required_acks},
             {"keys", st->key_count},
             {"used_bytes", st->used_bytes},
             {"tombstones", st->tombstones},
             {"digest", kvmesh::FormatNodeId(st->digest)},
             {"version_vector", st->version_vector},
             {"writes_seen", st->writes_seen},
             {"peers", peers}};
      PutText(j, "path", st->path);
      std::cout << j.dump() << "\n";
    } else {
      std::cout << st->path << " on node " << kvmesh::FormatNodeId(st->node_id) << ": "
                << st->key_count << " keys, " << st->tombstones << " tombstones, digest "
                << kvmesh::FormatNodeId(st->digest) << "\n  replication min " << st->min << " max "
                << st->max << ", writes need " << st->required_acks
                << " acknowledgements; replicas:";
      for (uint64_t id : st->replicas) std::cout << " " << kvmesh::FormatNodeId(id);
      std::cout << "\n  this replica: " << st->writes_seen << " writes " << st->version_vector
                << "\n";
      for (const auto& p : st->peers) {
        std::cout << "  peer " << kvmesh::FormatNodeId(p.node_id)
                  << (p.reachable ? " reachable" : " UNREACHABLE") << ", " << p.pending_deltas
                  << " deltas pending, "
                  << (p.version_vector.empty()
                          ? std::string("vector unknown")
                          : std::to_string(p.writes_seen) + " writes " + p.version_vector)
                  << "\n";
      }
    }
    return FinishOutput();
  }

  int Members() {
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    auto members = client.members();
    if (!members.ok()) return Fail(members.status());
    if (g_.json) {
      json out = json::array();
      for (const auto& m : *members) {
        json member = {{"node", kvmesh::FormatNodeId(m.node_id)},
                       {"cluster_address", m.cluster_address},
                       {"client_port", m.client_port},
                       {"alive", m.alive},
                       {"self", m.self},
                       {"silent_ms", m.silent_ms},
                       {"sync", m.sync}};
        // Disk space and rebalancing are known for the reporting node only.
        if (m.self) {
          member["low_space"] = m.low_space;
          member["free_disk_bytes"] = m.free_disk_bytes;
          member["rebalance_pending"] = m.rebalance_pending;
        }
        member["placement"] = m.placement.empty() ? "active" : m.placement;
        if (!m.placement.empty()) {
          member["drain_total"] = m.drain_total;
          member["drain_left"] = m.drain_left;
        }
        out.push_back(std::move(member));
      }
      std::cout << out.dump() << "\n";
    } else {
      for (const auto& m : *members) {
        std::cout << kvmesh::FormatNodeId(m.node_id) << "  " << (m.alive ? "up  " : "DOWN") << "  "
                  << (m.cluster_address.empty() ? "-" : m.cluster_address) << "  client port "
                  << m.client_port << "  sync " << (m.sync.empty() ? "?" : m.sync)
                  << (m.self ? "  (this node)" : "");
        if (m.self) {
          std::cout << "  disk " << kvmesh::FormatSize(m.free_disk_bytes) << " free"
                    << (m.low_space ? ", LOW ON SPACE: puts refused" : "");
          if (m.rebalance_pending > 0) {
            std::cout << "  rebalancing " << m.rebalance_pending << " databases";
          }
        }
        if (m.placement == "drained") {
          std::cout << "  DRAINED (" << m.drain_total << " databases handed over)";
        } else if (!m.placement.empty()) {
          std::cout << "  DRAINING: " << m.drain_total - std::min(m.drain_left, m.drain_total)
                    << " of " << m.drain_total << " databases handed over, " << m.drain_left
                    << " left";
        }
        std::cout << "\n";
      }
    }
    return FinishOutput();
  }

  static json ConfigJson(const kvmesh::ConfigInfo& c) {
    return {{"id", c.id},
            {"matcher", c.matcher},
            {"kind", c.matcher_kind},
            {"size_bytes", c.size_bytes},
            {"max_instances", c.max_instances},
            {"replication", {{"min", c.replication_min}, {"max", c.replication_max}}},
            {"description", c.description},
            {"tags", c.tags},
            {"source", c.source},
            {"origin", c.origin}};
  }

  int Dbs() {
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    auto configs = client.configs();
    if (!configs.ok()) return Fail(configs.status());
    auto dbs = client.databases();
    if (!dbs.ok()) return Fail(dbs.status());
    if (g_.json) {
      json out{{"configs", json::array()}, {"databases", json::array()}};
      for (const auto& c : *configs) out["configs"].push_back(ConfigJson(c));
      for (const auto& d : *dbs) {
        json entry{{"config", d.config_id}};
        PutText(entry, "path", d.path);
        out["databases"].push_back(entry);
      }
      std::cout << out.dump() << "\n";
      return FinishOutput();
    }
    std::cout << "configs:\n";
    for (const auto& c : *configs) {
      std::cout << "  " << c.id << "  " << c.matcher << " (" << c.matcher_kind << ")  size "
                << kvmesh::FormatSize(c.size_bytes) << "  replication " << c.replication_min << ".."
                << c.replication_max << "\n";
    }
    std::cout << "databases:\n";
    for (const auto& d : *dbs) std::cout << "  " << d.path << "  (" << d.config_id << ")\n";
    return FinishOutput();
  }

  /// Every instance of `config_id` (all pages; at most `limit` if not 0), one per line or one
  /// JSON object per line.
  int Instances(const std::string& config_id, uint64_t limit) {
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    kvmesh::InstanceOptions options;
    uint64_t shown = 0;
    // Each page examines a bounded part of the node's catalog, so this ends after at most one
    // request per few thousand databases on the node.
    while (limit == 0 || shown < limit) {
      auto page = client.instances(config_id, options);
      if (!page.ok()) return Fail(page.status());
      for (const auto& i : page->instances) {
        if (limit != 0 && shown >= limit) break;
        ++shown;
        std::vector<std::string> replicas;
        for (uint64_t id : i.replicas) replicas.push_back(kvmesh::FormatNodeId(id));
        if (g_.json) {
          json j{{"config", i.config_id},      {"keys", i.key_count},
                 {"used_bytes", i.used_bytes}, {"replicas", replicas},
                 {"active", i.active},         {"last_access_ms", i.last_access_ms},
                 {"created_ms", i.created_ms}};
          PutText(j, "path", i.path);
          std::cout << j.dump() << "\n";
        } else {
          std::string joined;
          for (const auto& r : replicas) joined += (joined.empty() ? "" : ",") + r;
          std::cout << i.path << "  " << i.key_count << " keys  "
                    << kvmesh::FormatSize(i.used_bytes) << "  replicas "
                    << (joined.empty() ? "-" : joined) << "  last access "
                    << (i.last_access_ms == 0 ? "never recorded" : FormatTime(i.last_access_ms))
                    << (i.active ? "  (active)" : "") << "\n";
        }
      }
      if (!page->has_more()) break;
      options.cursor = page->next_cursor;
    }
    return FinishOutput();
  }

  /// `node drain ID` or `node undrain ID`.
  int NodeDrain(const std::string& id_text, bool drain) {
    uint64_t id = 0;
    if (!kvmesh::ParseNodeId(id_text, &id)) {
      std::cerr << "kvmesh: " << kvmesh::Quote(id_text)
                << " is not a node id: give it as kvmesh members shows it (16 hex digits)\n";
      return kExitUsage;
    }
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    auto summary = drain ? client.drain_node(id) : client.undrain_node(id);
    if (!summary.ok()) return Fail(summary.status());
    std::cout << *summary << "\n";
    return FinishOutput();
  }

  int Drop(const std::string& path, bool yes) {
    if (!yes) {
      std::cerr << "kvmesh: drop deletes every key of " << path
                << " on every replica; add --yes to do it\n";
      return kExitUsage;
    }
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    Status s = client.drop(path);
    if (!s.ok()) return Fail(s);
    std::cout << "dropped " << path << ": every key deleted\n";
    return FinishOutput();
  }

  /// `backup DB DIR` or `backup --all DIR`; DIR is on the node's machine.
  int Backup(const std::string& path, const std::string& dir, bool all) {
    if (all == !path.empty()) {
      std::cerr << "kvmesh: backup takes DB DIR, or --all DIR\n";
      return kExitUsage;
    }
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    auto summary = client.backup(all ? "" : path, dir);
    if (!summary.ok()) return Fail(summary.status());
    std::cout << *summary << "\n";
    return FinishOutput();
  }

  int Restore(const std::string& path, const std::string& dir) {
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    auto summary = client.restore(path, dir);
    if (!summary.ok()) return Fail(summary.status());
    std::cout << *summary << "\n";
    return FinishOutput();
  }

  int ConfigValidate(const std::string& dir) {
    kvmesh::config::ConfigSet set;
    std::vector<kvmesh::config::ConfigDiagnostic> diagnostics;
    Status s = kvmesh::config::ConfigSet::LoadDirectory(dir, &set, &diagnostics);
    for (const auto& d : diagnostics) std::cerr << d.ToString() << "\n";
    if (!s.ok()) return kExitError;
    std::cout << dir << ": " << set.configs().size() << " database configs are valid\n";
    return FinishOutput();
  }

  /// `kvmesh config apply FILE` (or - for stdin): cluster-wide, through the node.
  int ConfigApply(const std::string& file, bool dry_run) {
    std::string yaml;
    if (file == "-") {
      if (!ReadAll(std::cin, &yaml)) return Fail(Status::IOError("error reading standard input"));
    } else {
      std::ifstream in;
      if (Status s = OpenInput(file, &in); !s.ok()) return Fail(s);
      if (!ReadAll(in, &yaml)) return Fail(Status::IOError("error reading " + file));
    }
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    kvmesh::ConfigApplyOptions options;
    options.dry_run = dry_run;
    options.source_name = file == "-" ? "<stdin>" : file;
    auto applied = client.apply_configs(yaml, options);
    if (!applied.ok()) return Fail(applied.status());
    if (g_.json) {
      json configs = json::array();
      for (const auto& c : applied->configs) configs.push_back(ConfigJson(c));
      std::cout << json{{"configs", configs}, {"warnings", applied->warnings}, {"dry_run", dry_run}}
                       .dump()
                << "\n";
      return FinishOutput();
    }
    for (const auto& w : applied->warnings) std::cerr << "warning: " << w << "\n";
    for (const auto& c : applied->configs) {
      std::cout << (dry_run ? "valid (not applied): " : "applied: ") << c.id << "  " << c.matcher
                << " (" << c.matcher_kind << ")  size "
                << kvmesh::config::FormatConfigSize(c.size_bytes) << "  replication "
                << c.replication_min << ".." << c.replication_max << "\n";
    }
    return FinishOutput();
  }

  /// `kvmesh config delete ID`.
  int ConfigDelete(const std::string& id) {
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    auto deleted = client.delete_config(id);
    if (!deleted.ok()) return Fail(deleted.status());
    if (g_.json) {
      std::cout << json{{"deleted", id}, {"warnings", deleted->warnings}}.dump() << "\n";
      return FinishOutput();
    }
    for (const auto& w : deleted->warnings) std::cerr << "warning: " << w << "\n";
    std::cout << "deleted: " << id << "\n";
    return FinishOutput();
  }

  /// `kvmesh config get [ID] [--history]`: every config in force; one as YAML that `config
  /// apply` takes back; or its history.
  int ConfigGet(const std::string& id, bool history) {
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    if (history) {
      if (id.empty()) return Fail(Status::InvalidArgument("--history needs a config ID"));
      auto entries = client.config_history(id);
      if (!entries.ok()) return Fail(entries.status());
      if (g_.json) {
        json out = json::array();
        for (const auto& e : *entries) {
          out.push_back({{"config", ConfigJson(e.config)},
                         {"deleted", e.deleted},
                         {"applied_by", e.applied_by},
                         {"node", e.node},
                         {"time_ms", e.time_ms},
                         {"in_force", e.in_force}});
        }
        std::cout << out.dump() << "\n";
        return FinishOutput();
      }
      for (const auto& e : *entries) {
        std::cout << kvmesh::FormatUtcTime(e.time_ms) << "  " << (e.deleted ? "delete" : "apply ")
                  << "  by " << e.applied_by << " through " << e.node;
        if (!e.deleted) {
          std::cout << "  " << e.config.matcher << "  size "
                    << kvmesh::config::FormatConfigSize(e.config.size_bytes) << "  replication "
                    << e.config.replication_min << ".." << e.config.replication_max;
        }
        std::cout << (e.in_force ? "  [in force]" : "") << "\n";
      }
      return FinishOutput();
    }
    auto configs = client.configs();
    if (!configs.ok()) return Fail(configs.status());
    if (g_.json) {
      json out = json::array();
      for (const auto& c : *configs) {
        if (id.empty() || c.id == id) out.push_back(ConfigJson(c));
      }
      if (!id.empty() && out.empty())
        return Fail(Status::NotFound("no config " + kvmesh::Quote(id)));
      std::cout << (id.empty() ? out : out[0]).dump() << "\n";
      return FinishOutput();
    }
    if (id.empty()) {
      for (const auto& c : *configs) {
        std::cout << c.id << "  " << c.matcher << " (" << c.matcher_kind << ")  size "
                  << kvmesh::config::FormatConfigSize(c.size_bytes) << "  replication "
                  << c.replication_min << ".." << c.replication_max << "  " << c.origin << ": "
                  << c.source << "\n";
      }
      return FinishOutput();
    }
    for (const auto& c : *configs) {
      if (c.id != id) continue;
      // YAML that `kvmesh config apply` takes back (edit, then apply).
      json tags = c.tags;
      std::cout << "# " << c.origin << ": " << c.source << "\n"
                << "id: " << json(c.id).dump() << "\n"
                << "description: " << json(c.description).dump() << "\n"
                << "tags: " << tags.dump() << "\n"
                << "matcher: " << json(c.matcher).dump() << "  # " << c.matcher_kind << "\n"
                << "replication: {min: " << c.replication_min << ", max: " << c.replication_max
                << "}\n"
                << "size: " << kvmesh::config::FormatConfigSize(c.size_bytes) << "\n";
      return FinishOutput();
    }
    return Fail(Status::NotFound("no config " + kvmesh::Quote(id)));
  }

  int ConfigReload() {
    auto& client = Connect();
    if (!client.ok()) return Fail(client.status());
    auto summary = client.reload_configs();
    if (!summary.ok()) return Fail(summary.status());
    std::cout << *summary << "\n";
    return FinishOutput();
  }

 private:
  Globals g_;
  kvmesh::client::Client client_;
};

/// `dir` as an absolute path without "." parts, so that the printed commands work from anywhere.
std::string AbsoluteDir(const std::string& dir) {
  std::error_code ec;
  std::string out = std::filesystem::absolute(dir.empty() ? "." : dir, ec).lexically_normal();
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  return ec ? dir : out;
}

void PrintWritten(const kvmesh::security::CertificateFiles& files) {
  auto info = kvmesh::security::ReadCertificateInfo(files.cert_file);
  std::cout << "wrote " << files.cert_file;
  if (info.ok()) {
    std::cout << " (" << info->role << " " << info->common_name << ", valid until "
              << info->not_after;
    if (!info->alt_names.empty()) {
      std::cout << ", names";
      for (const auto& n : info->alt_names) std::cout << " " << n;
    }
    std::cout << ")";
  }
  std::cout << "\nwrote " << files.key_file << " (private key, mode 0600: keep it secret)\n";
}

/// kvmesh cert ca|node|client|show (no node is contacted).
int Cert(const std::string& what, kvmesh::security::CertificateOptions options,
         const std::string& name, const std::vector<std::string>& hosts) {
  namespace sec = kvmesh::security;
  if (what == "show") {
    auto info = sec::ReadCertificateInfo(name);
    if (!info.ok()) return Fail(info.status());
    std::cout << sec::FormatCertificateInfo(name, *info);
    return FinishOutput();
  }
  options.dir = AbsoluteDir(options.dir);
  const std::string& d = options.dir;
  if (what == "ca") {
    auto files = sec::MakeCa(options, name);
    if (!files.ok()) return Fail(files.status());
    std::cout << "wrote " << files->cert_file
              << " (the cluster CA certificate: copy it to every node and client)\n"
              << "wrote " << files->key_file
              << " (the CA private key, mode 0600: it signs every certificate of the cluster;"
                 " keep it here, not on the nodes)\n"
              << "next, in this directory:\n"
              << "  kvmesh cert node NAME --host ADDRESS [--host ...] --dir " << d
              << "   (one per node)\n"
              << "  kvmesh cert client NAME --dir " << d << "   (one per client)\n";
    return FinishOutput();
  }
  const bool node = what == "node";
  auto files = node ? sec::MakeNodeCertificate(options, name, hosts)
                    : sec::MakeClientCertificate(options, name);
  if (!files.ok()) return Fail(files.status());
  PrintWritten(*files);
  const std::string flags =
      "--tls-ca " + d + "/ca.crt --tls-cert " + files->cert_file + " --tls-key " + files->key_file;
  if (node) {
    std::cout << "copy ca.crt and both files to node " << name << " and start it with:\n"
              << "  kvmeshd --name " << name << " " << flags << " ...\n"
              << "(the node's name must be " << name << ": the certificate lets it speak for "
              << name << " and nobody else)\n";
  } else {
    std::cout << "use it with:\n"
              << "  kvmesh " << flags << " --node HOST:PORT ...\n"
              << "or set KVMESH_TLS_CA=" << d << "/ca.crt KVMESH_TLS_CERT=" << files->cert_file
              << " KVMESH_TLS_KEY=" << files->key_file << "\n"
              << "(the ACL decides what client " << name << " may do)\n";
  }
  return FinishOutput();
}

/// kvmesh token new: a bearer token for the HTTP API and the line for the ACL file's tokens.
int TokenNew(const std::string& principal, const std::string& note) {
  std::string token;
  kvmesh::Status s = kvmesh::security::NewBearerToken(&token);
  if (!s.ok()) return Fail(s);
  nlohmann::json entry{{"principal", principal},
                       {"sha256", kvmesh::security::TokenSha256Hex(token)}};
  if (!note.empty()) entry["note"] = note;
  std::cout
      << "token (shown once; the node keeps only its hash):\n  " << token << "\n"
      << "add this line under \"tokens:\" in the node's ACL file, then kvmesh config reload:\n"
      << "  - " << entry.dump() << "\n"
      << "use it as:  Authorization: Bearer " << token << "\n";
  return FinishOutput();
}

}  // namespace

int main(int argc, char** argv) {
  Globals g;
  if (const char* env = std::getenv("KVMESH_NODE")) g.node = env;
  CLI::App app{"kvmesh: use a kvmesh node's databases from the shell"};
  app.require_subcommand(1);
  app.set_version_flag("--version", kvmesh::tools::VersionLine("kvmesh"));
  app.add_option("--node", g.node, "node address host:port (or $KVMESH_NODE)")
      ->capture_default_str();
  app.add_flag("--json", g.json, "machine-readable output");
  app.add_option("--timeout", g.timeout_seconds, "request timeout in seconds")
      ->capture_default_str();
  // Flags win over the variables (CLI11 reads a variable only when its flag is absent).
  app.add_option("--tls-ca", g.tls.ca_file, "TLS: the cluster CA certificate")
      ->envname("KVMESH_TLS_CA");
  app.add_option("--tls-cert", g.tls.cert_file, "TLS: this client's certificate")
      ->envname("KVMESH_TLS_CERT");
  app.add_option("--tls-key", g.tls.key_file, "TLS: the key of --tls-cert")
      ->envname("KVMESH_TLS_KEY");

  std::string db, key, value, file, out, prefix, dir;
  uint64_t limit = 0;
  auto* put = app.add_subcommand("put", "store a value: VALUE, --file F, or - for stdin");
  put->add_option("DB", db)->required();
  put->add_option("KEY", key)->required();
  auto* value_opt = put->add_option("VALUE", value);
  put->add_option("--file", file, "read the value from this file");
  std::string ttl_text;
  kvmesh::WriteOptions write_options;
  put->add_option("--ttl", ttl_text, "expire the key after this long (500ms, 30s, 5m, 2h, 1d)");
  put->add_option("--if-version", write_options.if_version,
                  "write only if the key has this version (get --version prints it); else exit 4");
  put->add_flag("--if-absent", write_options.if_absent,
                "write only if the key is absent; else exit 4");
  bool with_version = false;
  auto* get = app.add_subcommand("get", "print a value's raw bytes (exit 1 if missing)");
  get->add_option("DB", db)->required();
  get->add_option("KEY", key)->required();
  get->add_option("-o,--output", out, "write the value to this file");
  get->add_flag("--version", with_version, "also print the key's version token on stderr");
  std::string consistency;
  const char* consistency_help =
      "read level: eventual (default), read_your_writes (with --session) or quorum";
  const char* session_help =
      "read_your_writes: the session token of the writes to see (Database::session_token)";
  get->add_option("--consistency", consistency, consistency_help);
  get->add_option("--session", g.session, session_help);
  auto* del = app.add_subcommand("del", "delete a key (a missing key is fine)");
  del->add_option("DB", db)->required();
  del->add_option("KEY", key)->required();
  del->add_option("--if-version", write_options.if_version,
                  "delete only if the key has this version; else exit 4");
  auto* ls = app.add_subcommand("ls", "list keys under a prefix (also: list)");
  ls->alias("list");
  kvmesh::ListOptions list_options;
  ls->add_option("DB", db)->required();
  ls->add_option("PREFIX", prefix);
  ls->add_option("--limit", limit, "at most this many keys");
  ls->add_option("--start", list_options.start, "only keys >= this one (under PREFIX)");
  ls->add_option("--end", list_options.end, "only keys < this one (under PREFIX)");
  ls->add_flag("--reverse", list_options.reverse, "highest key first");
  ls->add_option("--consistency", consistency,
                 "read level: eventual (default) or read_your_writes");
  ls->add_option("--session", g.session, session_help);
  std::string from;
  bool watch_values = false;
  uint64_t watch_count = 0;
  uint64_t watch_seconds = 0;
  auto* watch = app.add_subcommand(
      "watch", "print each put and delete under a prefix as it happens (position on stderr)");
  watch->add_option("DB", db)->required();
  watch->add_option("PREFIX", prefix);
  watch->add_option("--from", from, "resume after this position (printed by an earlier watch)");
  watch->add_flag("--values", watch_values, "with --json: include the values (base64)");
  watch->add_option("--count", watch_count, "exit after the update that brings this many events");
  watch->add_option("--seconds", watch_seconds, "exit after this many seconds");
  auto* imp = app.add_subcommand("import", "load JSON lines {\"key\",\"value\"(base64)}");
  imp->add_option("DB", db)->required();
  imp->add_option("FILE", file, "file, or - for stdin")->required();
  auto* exp = app.add_subcommand("export", "dump keys and values as JSON lines");
  exp->add_option("DB", db)->required();
  exp->add_option("PREFIX", prefix);
  auto* stats = app.add_subcommand("stats", "key count, used bytes and limit");
  stats->add_option("DB", db)->required();
  auto* status = app.add_subcommand(
      "status", "replication status of a database: replicas, version vectors, pending, digest");
  status->add_option("DB", db, "without it: the members, drains and rebalancing (as members)");
  auto* members = app.add_subcommand(
      "members", "cluster members as the node sees them, with drains and rebalancing");
  std::string node_id;
  auto* node = app.add_subcommand("node", "take a node out of placement, or put it back (admin)");
  node->require_subcommand(1);
  auto* node_drain = node->add_subcommand(
      "drain", "hand every replica of node ID over and keep it out of placement until undrained");
  node_drain->add_option("ID", node_id, "the node id as kvmesh members shows it")->required();
  auto* node_undrain = node->add_subcommand("undrain", "put drained node ID back into placement");
  node_undrain->add_option("ID", node_id, "the node id as kvmesh members shows it")->required();
  auto* dbs = app.add_subcommand("dbs", "database configs and instantiated databases");
  std::string config_id;
  auto* instances = app.add_subcommand(
      "instances", "a config's databases on the node: keys, bytes, replicas, last access");
  instances->add_option("CONFIG_ID", config_id)->required();
  instances->add_option("--limit", limit, "at most this many");
  bool yes = false;
  auto* drop =
      app.add_subcommand("drop", "delete every key of a database on every replica (admin)");
  drop->add_option("DB", db)->required();
  drop->add_flag("--yes", yes, "really drop it");
  bool all = false;
  std::vector<std::string> backup_args;
  auto* backup = app.add_subcommand(
      "backup", "DB DIR: back up a database; --all DIR: checkpoint the node (DIR on the node)");
  backup->add_option("ARGS", backup_args, "DB DIR, or DIR with --all")->required();
  backup->add_flag("--all", all, "a checkpoint of the node's whole store");
  auto* restore = app.add_subcommand(
      "restore", "replace a database's contents with a backup (DIR on the node)");
  restore->add_option("DB", db)->required();
  restore->add_option("DIR", dir)->required();
  auto* config =
      app.add_subcommand("config", "validate, reload, apply, get or delete database configs");
  config->require_subcommand(1);
  auto* validate = config->add_subcommand("validate", "check a config directory locally");
  validate->add_option("DIR", dir)->required();
  auto* reload =
      config->add_subcommand("reload", "make the node re-read its config directory and ACL file");
  bool dry_run = false, history = false;
  auto* apply = config->add_subcommand(
      "apply", "create or replace cluster-wide configs from a YAML file (- for stdin)");
  apply->add_option("FILE", file)->required();
  apply->add_flag("--dry-run", dry_run, "validate only; change nothing");
  auto* config_get = config->add_subcommand(
      "get", "list the configs in force, print one as YAML, or its --history");
  config_get->add_option("ID", config_id);
  config_get->add_flag("--history", history, "every apply and delete of a cluster-wide config");
  auto* config_delete = config->add_subcommand("delete", "delete a cluster-wide config");
  config_delete->add_option("ID", config_id)->required();

  kvmesh::security::CertificateOptions cert_options;
  std::string cert_name;
  std::vector<std::string> hosts;
  auto* cert = app.add_subcommand(
      "cert", "make TLS certificates: a cluster CA, node and client certificates (no node needed)");
  cert->require_subcommand(1);
  auto add_common = [&](CLI::App* cmd, const char* days_help) {
    cmd->add_option("--dir", cert_options.dir,
                    "directory with ca.crt and ca.key, where the files are written")
        ->capture_default_str();
    cmd->add_option("--days", cert_options.days, days_help)->check(CLI::Range(1, 36500));
    cmd->add_flag("--force", cert_options.force, "replace existing files");
  };
  auto* cert_ca = cert->add_subcommand("ca", "make the cluster CA: DIR/ca.crt and DIR/ca.key");
  cert_ca->add_option("--name", cert_name, "the CA's subject CN")
      ->default_str(kvmesh::security::kDefaultCaName);
  add_common(cert_ca, "validity in days (default 3650)");
  auto* cert_node = cert->add_subcommand(
      "node", "make node NAME's certificate signed by DIR's CA: DIR/node-NAME.crt and .key");
  cert_node->add_option("NAME", cert_name, "the node's name (kvmeshd --name)")->required();
  cert_node
      ->add_option("--host", hosts,
                   "an IP address or DNS name peers and clients reach the node by (repeatable)")
      ->required();
  add_common(cert_node, "validity in days (default 825)");
  auto* cert_client = cert->add_subcommand(
      "client", "make client NAME's certificate signed by DIR's CA: DIR/client-NAME.crt and .key");
  cert_client->add_option("NAME", cert_name, "the client's name (what the ACL grants rights to)")
      ->required();
  add_common(cert_client, "validity in days (default 825)");
  auto* cert_show = cert->add_subcommand("show", "describe a certificate file");
  cert_show->add_option("FILE", cert_name, "a .crt file")->required();

  std::string token_principal, token_note;
  auto* token = app.add_subcommand(
      "token", "bearer tokens for the HTTP API: their hashes go in the ACL file (no node needed)");
  token->require_subcommand(1);
  auto* token_new = token->add_subcommand("new", "make a random token for a principal");
  token_new->add_option("--principal", token_principal, "the ACL principal the token speaks for")
      ->required();
  token_new->add_option("--note", token_note, "free text stored with the hash (which token)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "kvmesh: " << e.what() << " (see kvmesh --help)\n";
    return kExitUsage;
  }
  if (put->parsed() && value_opt->count() > 0 && !file.empty()) {
    std::cerr << "kvmesh: give the value or --file, not both\n";
    return kExitUsage;
  }
  if (!write_options.if_version.empty() && write_options.if_absent) {
    std::cerr << "kvmesh: give --if-version or --if-absent, not both\n";
    return kExitUsage;
  }
  if (!consistency.empty()) {
    Status s = kvmesh::ParseReadLevel(consistency, &g.read_level);
    if (!s.ok()) {
      std::cerr << "kvmesh: --consistency: " << s.message() << "\n";
      return kExitUsage;
    }
  }
  if (!g.session.empty() && g.read_level != kvmesh::ReadConsistency::kReadYourWrites) {
    std::cerr << "kvmesh: --session needs --consistency read_your_writes\n";
    return kExitUsage;
  }
  if (!ttl_text.empty()) {
    Status s = kvmesh::ParseTtl(ttl_text, &write_options.ttl);
    if (!s.ok()) {
      std::cerr << "kvmesh: --ttl: " << s.message() << "\n";
      return kExitUsage;
    }
  }

  if (cert->parsed()) {
    const std::string what = cert_ca->parsed()       ? "ca"
                             : cert_node->parsed()   ? "node"
                             : cert_client->parsed() ? "client"
                                                     : "show";
    return Cert(what, cert_options, cert_name, hosts);
  }
  if (token_new->parsed()) return TokenNew(token_principal, token_note);
  if (g.tls.enabled()) {
    for (auto [file, flag] : {std::pair{&g.tls.ca_file, "--tls-ca (or KVMESH_TLS_CA)"},
                              std::pair{&g.tls.cert_file, "--tls-cert (or KVMESH_TLS_CERT)"},
                              std::pair{&g.tls.key_file, "--tls-key (or KVMESH_TLS_KEY)"}}) {
      if (file->empty()) {
        std::cerr << "kvmesh: " << flag
                  << " is missing; TLS needs the CA, a certificate and its key\n";
        return kExitUsage;
      }
    }
  }
  Cli cli(g);
  if (put->parsed()) {
    return cli.Put(db, key, value_opt->count() > 0 ? &value : nullptr, file, write_options);
  }
  if (get->parsed()) return cli.Get(db, key, out, with_version);
  if (del->parsed()) return cli.Del(db, key, write_options);
  if (ls->parsed()) {
    list_options.prefix = prefix;
    return cli.Ls(db, list_options, limit);
  }
  if (imp->parsed()) return cli.Import(db, file);
  if (watch->parsed()) return cli.Watch(db, prefix, from, watch_values, watch_count, watch_seconds);
  if (exp->parsed()) return cli.Export(db, prefix);
  if (stats->parsed()) return cli.Stats(db);
  if (status->parsed()) return db.empty() ? cli.Members() : cli.ReplicationStatus(db);
  if (members->parsed()) return cli.Members();
  if (node_drain->parsed()) return cli.NodeDrain(node_id, true);
  if (node_undrain->parsed()) return cli.NodeDrain(node_id, false);
  if (dbs->parsed()) return cli.Dbs();
  if (instances->parsed()) return cli.Instances(config_id, limit);
  if (drop->parsed()) return cli.Drop(db, yes);
  if (backup->parsed()) {
    if (backup_args.size() != (all ? 1u : 2u)) {
      std::cerr << "kvmesh: backup takes DB DIR, or --all DIR\n";
      return kExitUsage;
    }
    return cli.Backup(all ? "" : backup_args[0], backup_args.back(), all);
  }
  if (restore->parsed()) return cli.Restore(db, dir);
  if (validate->parsed()) return cli.ConfigValidate(dir);
  if (reload->parsed()) return cli.ConfigReload();
  if (apply->parsed()) return cli.ConfigApply(file, dry_run);
  if (config_get->parsed()) return cli.ConfigGet(config_id, history);
  if (config_delete->parsed()) return cli.ConfigDelete(config_id);
  return kExitUsage;
}
