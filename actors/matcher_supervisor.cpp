#include "actors/matcher_supervisor.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "actors/database_actor.hpp"
#include "actors/database_request.hpp"
#include "common/path.hpp"
#include "common/placement.hpp"
#include "messages/remote_exits.hpp"

namespace kvmesh {
namespace {

using supervisor_pointer = matcher_supervisor_actor::stateful_pointer<matcher_supervisor_state>;

/// How much rarer the system database's anti-entropy rounds are than other databases'.
constexpr int kSystemSyncFactor = 5;

uint64_t SelfId(supervisor_pointer self) {
  return self->state.replication->node_id;
}

bool IsSystemPath(std::string_view path) {
  return path == config::kSystemConfigsPath;
}

/// The config of the normalised `path` in `configs`; the system database has its built-in one,
/// whatever the configs say.
const config::DatabaseConfig* ResolveIn(const config::ConfigSet& configs, std::string_view path) {
  return IsSystemPath(path) ? &config::SystemConfigsConfig() : configs.Resolve(path);
}

const config::DatabaseConfig* Resolve(supervisor_pointer self, std::string_view path) {
  return ResolveIn(*self->state.configs, path);
}

/// This node and the members in view that may hold replicas of users' databases: all but the
/// drained ones (all of them if every one is drained, rather than none).
std::vector<uint64_t> Candidates(supervisor_pointer self) {
  auto& st = self->state;
  std::vector<uint64_t> all{SelfId(self)};
  for (const auto& [id, member] : st.members) all.push_back(id);
  std::vector<uint64_t> out;
  for (uint64_t id : all) {
    if (st.drained.count(id) == 0) out.push_back(id);
  }
  return out.empty() ? all : out;
}

/// The replica set of `path` under `config` over this node and the members in view (the
/// undrained ones, but for the system database, which every node holds).
ReplicaSet PlaceDatabase(supervisor_pointer self, const std::string& path,
                         const config::DatabaseConfig& config) {
  auto& st = self->state;
  std::vector<uint64_t> candidates{SelfId(self)};
  if (IsSystemPath(path)) {
    for (const auto& [id, member] : st.members) candidates.push_back(id);
  } else {
    candidates = Candidates(self);
  }
  ReplicaSet out;
  out.nodes = PlaceReplicas(path, candidates, std::max<uint32_t>(1, config.replication.max));
  for (uint64_t id : out.nodes) {
    auto it = st.members.find(id);
    if (it != st.members.end() && !it->second.alive) out.unreachable.push_back(id);
  }
  out.min = config.replication.min;
  out.max = config.replication.max;
  // A single node cannot do better than itself. In a cluster, writes need min acknowledgements
  // whatever this node knows of its peers: a node still joining, or one cut off from most of
  // the cluster, must fail writes rather than silently keep fewer copies.
  out.required_acks = st.replication->clustered ? std::max<uint32_t>(1, config.replication.min) : 1;
  if (IsSystemPath(path) && st.replication->clustered) {
    // A config change is answered once every node in view holds it (each has then put it in
    // force: its supervisor hears of the commit before the acknowledgement leaves), so a client
    // can use it through any node next. Nodes out of view get it when they return.
    out.required_acks = static_cast<uint32_t>(out.nodes.size() - out.unreachable.size());
  }
  return out;
}

/// Spawns the database actor of the normalised `path`: resolves its config, opens (or creates)
/// its namespace, and monitors it. `idle_timeout`: its own, if not the node's.
Status Instantiate(supervisor_pointer self, const std::string& path, database_actor* out,
                   std::optional<caf::timespan> idle_timeout = std::nullopt) {
  auto& st = self->state;
  const config::DatabaseConfig* config = Resolve(self, path);
  if (config == nullptr) {
    return Status::NoMatchingConfig("no database config matches " + Quote(path));
  }
  std::unique_ptr<storage::DatabaseStore> db;
  Status s =
      st.store->OpenDatabase(path, config->id, config->size_bytes, &db, config->max_instances);
  if (!s.ok()) return s;
  std::shared_ptr<storage::DatabaseStore> shared(std::move(db));
  const bool system = IsSystemPath(path);
  if (system) {
    // Every commit, local or replicated, may change the configs in force: tell the supervisor,
    // once per burst (the flag is cleared when it re-reads).
    shared->set_commit_observer(
        [flag = st.system_changed, to = caf::actor_cast<matcher_supervisor_actor>(self)] {
          if (!flag->exchange(true)) caf::anon_send(to, atom::configs_v, atom::changed_v);
        });
    st.system_store = shared;
  }
  // Published before anyone can learn of the actor, so every opener finds its target.
  std::shared_ptr<DirectReadTarget> direct;
  if (st.replication->direct_reads) direct = std::make_shared<DirectReadTarget>(shared);
  // The system database never passivates: it must take every peer's edits as they come.
  auto handle = SpawnNetworkFacing(
      self->system(), database_actor_impl, std::move(shared),
      caf::actor_cast<matcher_supervisor_actor>(self),
      system ? caf::timespan{0} : idle_timeout.value_or(st.idle_timeout),
      system ? st.system_replication : st.replication, PlaceDatabase(self, path, *config), direct);
  if (direct) st.replication->direct_reads->Add(handle.id(), std::move(direct));
  if (st.replication->node_summary && !system) {
    st.replication->node_summary->SetPlacement(path, PlaceDatabase(self, path, *config).nodes);
  }
  self->monitor(handle);
  st.running.emplace(path, handle);
  st.path_of.emplace(handle.id(), path);
  if (auto repairs = st.stale_repairs.find(path); repairs != st.stale_repairs.end()) {
    for (uint64_t peer : repairs->second) self->send(handle, atom::full_sync_v, peer);
    st.stale_repairs.erase(repairs);
  }
  spdlog::debug("database {} instantiated (config {})", Quote(path), config->id);
  *out = handle;
  return Status::OK();
}

/// Takes the running actor of `path` out of service and tells it to stop.
void Passivate(supervisor_pointer self, const std::string& path) {
  auto& st = self->state;
  auto it = st.running.find(path);
  if (it == st.running.end()) return;
  if (st.replication->passivation_delay.count() > 0) {
    self->delayed_send(it->second, st.replication->passivation_delay, atom::passivate_v);
  } else {
    self->send(it->second, atom::passivate_v);
  }
  // Opens of this path now wait for its down message.
  st.stopping[path] = matcher_supervisor_state::Stopping{it->second, {}, Candidates(self)};
  st.running.erase(it);
}

ConfigInfo ToConfigInfo(const config::DatabaseConfig& c) {
  return {c.id,
          c.description,
          c.tags,
          c.matcher.pattern(),
          config::MatcherKindName(c.matcher.kind()),
          c.replication.min,
          c.replication.max,
          c.size_bytes,
          c.source,
          c.from_api ? "api" : "file",
          c.max_instances};
}

/// Catalog entries a page of `instances` examines at most (Store::ListInstances): bounds the
/// supervisor's time per request whatever the catalog holds.
constexpr size_t kInstanceScanPerPage = 20000;

/// One page of the instances of `config_id` on this node, with what only the supervisor knows:
/// whether each runs, and its replicas under the current placement.
caf::result<InstancePage> ListInstances(supervisor_pointer self, const std::string& config_id,
                                        const InstanceOptions& options) {
  auto& st = self->state;
  InstancePage page;
  Status s = st.store->ListInstances(config_id, options, kInstanceScanPerPage, &page);
  if (!s.ok()) return ToError(s);
  for (InstanceInfo& info : page.instances) {
    info.active = st.running.count(info.path) > 0;
    if (const config::DatabaseConfig* config = st.configs->Resolve(info.path)) {
      info.replicas = PlaceDatabase(self, info.path, *config).nodes;
    }
  }
  return page;
}

void RefreshSummary(supervisor_pointer self);

/// Puts `fresh` in force: running databases get their new budget; those no config matches any
/// more are passivated, so their next open fails with no_matching_config. Data is never dropped.
void ApplyConfigs(supervisor_pointer self, std::shared_ptr<const config::ConfigSet> fresh) {
  auto& st = self->state;
  std::vector<std::string> orphaned;
  for (auto& [path, handle] : st.running) {
    const config::DatabaseConfig* config = ResolveIn(*fresh, path);
    if (config == nullptr) {
      orphaned.push_back(path);
    } else {
      self->send(handle, atom::limit_v, config->size_bytes);
    }
  }
  for (const auto& path : orphaned) {
    spdlog::warn("database {} matches no config any more; it stops (its data is kept)",
                 Quote(path));
    Passivate(self, path);
  }
  st.configs = std::move(fresh);
  RefreshSummary(self);
}

/// The local replica of `path` (normalised): running, waiting for a stopping one, or new; as the
/// slice `Handle` of it that the requester may hold.
template <class Handle>
caf::result<Handle> OpenLocal(supervisor_pointer self, const std::string& path) {
  auto& st = self->state;
  if (auto it = st.running.find(path); it != st.running.end()) return Handle{it->second};
  if (auto it = st.stopping.find(path); it != st.stopping.end()) {
    auto promise = self->make_response_promise<Handle>();
    it->second.waiting.push_back([promise](caf::expected<database_actor> db) mutable {
      if (db) {
        promise.deliver(Handle{*db});
      } else {
        promise.deliver(db.error());
      }
    });
    return promise;
  }
  database_actor handle;
  Status s = Instantiate(self, path, &handle);
  if (!s.ok()) return ToError(s);
  return Handle{handle};
}

/// Asks the cluster actor of each of `nodes` in turn for its replica of `path`; delivers the
/// first that answers (as the slice `Handle`), or an error naming them all.
///
/// The supervisor never sends to another node itself: in CAF 0.17 an actor that sends across the
/// network enters the node's actor registry, and then a peer can both send to it and, with a
/// routed message, name it as the sender of what it sends to others. The supervisor steers the
/// database actors (they accept control messages from it alone) and the placement, so its
/// address must stay on this node: a helper actor of its own asks the remote node instead.
template <class Handle>
void OpenRemote(supervisor_pointer self, std::string path, std::vector<uint64_t> nodes,
                size_t index, caf::typed_response_promise<Handle> promise) {
  auto& st = self->state;
  for (; index < nodes.size(); ++index) {
    auto it = st.members.find(nodes[index]);
    if (it != st.members.end() && it->second.alive && it->second.actor) break;
  }
  if (index >= nodes.size()) {
    promise.deliver(
        ToError(Status::Unavailable("no replica of database " + Quote(path) +
                                    " is reachable (replicas: " + FormatNodeIds(nodes) + ")")));
    return;
  }
  auto target = st.members[nodes[index]].actor;
  const caf::timespan timeout = st.replication->timeout;
  // Answers once: the replica's handle, or the error; then stops.
  // Filtered: the node asked learns the asker's handle.
  auto asker = SpawnNetworkFacing(
      self->system(), [target, path, timeout](caf::event_based_actor* a) -> caf::behavior {
        return {[=](atom::replica) -> caf::result<database_peer_actor> {
          auto answer = a->make_response_promise<database_peer_actor>();
          a->request(target, timeout, atom::replica_v, path)
              .then(
                  [=](database_peer_actor& db) mutable {
                    if (FromExpected(a, target)) {
                      answer.deliver(db);
                    } else {
                      answer.deliver(ForgedReply());
                    }
                    a->quit();
                  },
                  [=](caf::error& err) mutable {
                    answer.deliver(std::move(err));
                    a->quit();
                  });
          return answer;
        }};
      });
  self->request(asker, caf::infinite, atom::replica_v)
      .then(
          [=](database_peer_actor& db) mutable {
            if (FromExpected(self, asker)) {
              promise.deliver(Handle{db});
            } else {
              promise.deliver(ForgedReply());
            }
          },
          [=](caf::error&) mutable { OpenRemote(self, path, nodes, index + 1, promise); });
}

/// Sends every running database its replica set under the current members and configs.
void Replace(supervisor_pointer self) {
  auto& st = self->state;
  // Routes to remote replicas open their paths again: this node may hold some of them now.
  if (st.replication->placement_board) st.replication->placement_board->Advance();
  for (auto& [path, handle] : st.running) {
    const config::DatabaseConfig* config = Resolve(self, path);
    if (config != nullptr) self->send(handle, atom::replicas_v, PlaceDatabase(self, path, *config));
  }
}

void PumpRebalance(supervisor_pointer self);
void PublishBoard(supervisor_pointer self);
bool ReadDrains(supervisor_pointer self);

/// True if the replicas of `path` (of this node's catalog) must exchange: its replica set changed
/// from the one over `old_candidates`, it includes a member in `returned`, or it no longer
/// includes this node.
bool Affected(supervisor_pointer self, const std::string& path,
              const std::vector<uint64_t>& old_candidates, const std::set<uint64_t>& returned) {
  const config::DatabaseConfig* config = Resolve(self, path);
  if (config == nullptr || IsSystemPath(path)) return false;
  const ReplicaSet placed = PlaceDatabase(self, path, *config);
  if (placed.nodes !=
      PlaceReplicas(path, old_candidates, std::max<uint32_t>(1, config->replication.max))) {
    return true;
  }
  if (std::find(placed.nodes.begin(), placed.nodes.end(), SelfId(self)) == placed.nodes.end()) {
    return true;
  }
  for (uint64_t id : placed.nodes) {
    if (returned.count(id) > 0) return true;
  }
  return false;
}

/// Tells the node summary (replication/node_summary.hpp) where `path` of this node's catalog is
/// placed now: none for kvmesh's own databases and those no config matches.
void PlaceInSummary(supervisor_pointer self, const std::string& path) {
  const auto& summary = self->state.replication->node_summary;
  if (!summary) return;
  const config::DatabaseConfig* config = Resolve(self, path);
  if (config == nullptr || config::IsReservedPath(path)) {
    summary->SetPlacement(path, {});
  } else {
    summary->SetPlacement(path, PlaceDatabase(self, path, *config).nodes);
  }
}

/// PlaceInSummary for every database of this node's catalog (at start, and when configs change).
void RefreshSummary(supervisor_pointer self) {
  if (!self->state.replication->node_summary) return;
  std::vector<DatabaseInfo> catalog;
  Status s = self->state.store->ListDatabases(&catalog);
  if (!s.ok()) {
    spdlog::error("cannot read the catalog for anti-entropy: {}", s.ToString());
    return;
  }
  for (const auto& info : catalog) PlaceInSummary(self, info.path);
}

/// The node-level round found `paths` differing from member `peer`'s copies: running databases
/// pull from their peers now; the others are queued to wake in waves like a rebalance (each
/// pulls from its peers when it starts and passivates again once in sync).
void WakeDiffering(supervisor_pointer self, uint64_t peer, const std::vector<std::string>& paths) {
  auto& st = self->state;
  size_t queued = 0;
  for (const std::string& raw : paths) {
    std::string path;
    if (!NormalizeDatabasePath(raw, &path).ok() || config::IsReservedPath(path)) continue;
    // Only databases of this node's catalog: a peer's answer must not make this node create
    // databases (one it lacks is the peer's to fill: its own round wakes its copy, which pushes
    // here through the replica path).
    if (!st.replication->node_summary || !st.replication->node_summary->Holds(path)) continue;
    const config::DatabaseConfig* config = Resolve(self, path);
    if (config == nullptr) continue;
    // Only databases both nodes hold by this node's placement too (the views may differ for a
    // moment around a membership change: the next round compares again).
    const ReplicaSet placed = PlaceDatabase(self, path, *config);
    auto holds = [&](uint64_t id) {
      return std::find(placed.nodes.begin(), placed.nodes.end(), id) != placed.nodes.end();
    };
    if (!holds(SelfId(self)) || !holds(peer)) continue;
    if (auto it = st.running.find(path); it != st.running.end()) {
      self->send(it->second, atom::sync_v);
      continue;
    }
    if (st.stopping.count(path) > 0 || st.rebalance_queued.count(path) > 0) continue;
    st.rebalance_queue.push_back(path);
    st.rebalance_queued.insert(path);
    ++queued;
  }
  if (queued > 0) {
    spdlog::debug("anti-entropy: {} idle databases differ from node {}; waking them", queued,
                  FormatNodeId(peer));
    PumpRebalance(self);
  }
}

/// Member `peer` is heard again after being out of this node's placement view (README
/// "Convergence"): every database of the catalog it shares with this node runs a stale repair
/// with it. Running ones start at once (their replicator ignores a peer outside their replica
/// set); passivated ones placed on both nodes are woken in the waves of rebalancing
/// (PumpRebalance), get the repair when they start, and passivate again once it is done.
void RepairWithStaleMember(supervisor_pointer self, uint64_t peer) {
  auto& st = self->state;
  std::vector<DatabaseInfo> catalog;
  Status s = st.store->ListDatabases(&catalog);
  if (!s.ok()) {
    spdlog::error("cannot read the catalog for a stale repair with node {}: {}", FormatNodeId(peer),
                  s.ToString());
    return;
  }
  size_t running = 0;
  size_t queued = 0;
  for (const auto& info : catalog) {
    if (auto it = st.running.find(info.path); it != st.running.end()) {
      self->send(it->second, atom::full_sync_v, peer);
      ++running;
      continue;
    }
    const config::DatabaseConfig* config = Resolve(self, info.path);
    if (config == nullptr) continue;
    const ReplicaSet placed = PlaceDatabase(self, info.path, *config);
    auto holds = [&](uint64_t id) {
      return std::find(placed.nodes.begin(), placed.nodes.end(), id) != placed.nodes.end();
    };
    if (!holds(SelfId(self)) || !holds(peer)) continue;
    st.stale_repairs[info.path].insert(peer);
    ++queued;
    // A stopping one is queued once it is down (see the down handler).
    if (st.stopping.count(info.path) > 0 || st.rebalance_queued.count(info.path) > 0) continue;
    st.rebalance_queue.push_back(info.path);
    st.rebalance_queued.insert(info.path);
  }
  spdlog::info("stale repair with node {}: {} running and {} idle databases shared with it",
               FormatNodeId(peer), running, queued);
  PumpRebalance(self);
}

/// Queues for waking (PumpRebalance) the passivated databases of this node's catalog whose
/// replicas must exchange after a change of members or drains: their replica set changed (from
/// `old_candidates` to the current candidates), it includes a member in `returned` (back after
/// being down), or it no longer includes this node. Running databases got their new replica set
/// already. Each woken database runs anti-entropy (filling a new replica, catching up a returned
/// one, or handing its copy over) and passivates again when idle, or drops its handed-over copy.
void WakeAffected(supervisor_pointer self, const std::vector<uint64_t>& old_candidates,
                  const std::set<uint64_t>& returned) {
  auto& st = self->state;
  std::vector<DatabaseInfo> catalog;
  Status s = st.store->ListDatabases(&catalog);
  if (!s.ok()) {
    spdlog::error("cannot read the catalog to rebalance: {}", s.ToString());
    return;
  }
  size_t queued = 0;
  for (const auto& info : catalog) {
    PlaceInSummary(self, info.path);
    if (st.running.count(info.path) > 0 || st.stopping.count(info.path) > 0) continue;
    if (st.rebalance_queued.count(info.path) > 0) continue;
    if (!Affected(self, info.path, old_candidates, returned)) continue;
    st.rebalance_queue.push_back(info.path);
    st.rebalance_queued.insert(info.path);
    ++queued;
  }
  if (queued > 0) {
    spdlog::info("placement changed: {} idle databases to rebalance, in waves of {}", queued,
                 st.replication->rebalance_wave);
  }
  PumpRebalance(self);
}

// ---------------------------------------------------------------------------------------------
// Cluster-wide configs (config/cluster_configs.hpp).

/// Longest id of a cluster-wide config: its hex form is part of keys (kMaxKeyBytes).
constexpr size_t kMaxApiConfigIdBytes = 512;

/// Starts the system database of cluster-wide configs (at start, and again if it ever fails).
void StartSystemDatabase(supervisor_pointer self) {
  database_actor handle;
  Status s = Instantiate(self, std::string(config::kSystemConfigsPath), &handle);
  if (!s.ok()) {
    self->state.system_store = nullptr;
    spdlog::error(
        "cannot open the database of cluster-wide configs; only this node's own configs "
        "are in force: {}",
        s.ToString());
  }
}

/// Calls `visit(key, value)` for every key under `prefix` of the system database, in key order.
template <class Visit>
Status ForEachSystemKey(supervisor_pointer self, std::string_view prefix, Visit visit) {
  auto& store = self->state.system_store;
  if (!store) return Status::Unavailable("the database of cluster-wide configs is not open");
  ListOptions options;
  options.prefix = std::string(prefix);
  options.with_values = true;
  options.limit = kMaxListLimit;
  // Bounded: the database is bounded (64 MiB), and each page advances.
  for (int pages = 0; pages < 100000; ++pages) {
    ListPage page;
    Status s = store->List(options, &page);
    if (!s.ok()) return s;
    for (size_t i = 0; i < page.keys.size(); ++i) visit(page.keys[i], page.values[i]);
    if (!page.has_more()) break;
    options.start_after = page.next_token;
  }
  return Status::OK();
}

/// Every record under `prefix` of the system database, in key order. Records that do not decode
/// (written by a newer version, say) are skipped with a warning.
Status ReadRecords(supervisor_pointer self, std::string_view prefix,
                   std::vector<config::ConfigRecord>* out) {
  out->clear();
  return ForEachSystemKey(self, prefix, [out](const std::string& key, const std::string& value) {
    config::ConfigRecord record;
    Status s = config::DecodeRecord(value, &record);
    if (s.ok()) {
      out->push_back(std::move(record));
    } else {
      spdlog::warn("skipping the cluster-wide config record {}: {}", Quote(key), s.message());
    }
  });
}

/// Merges the node's own configs with `records` and puts the result in force (running databases
/// get new budgets and replica sets; ones no config matches stop). Logs what changed.
Status InstallConfigs(supervisor_pointer self, std::vector<config::ConfigRecord> records) {
  auto& st = self->state;
  auto fresh = std::make_shared<config::ConfigSet>();
  std::vector<std::string> warnings;
  Status s = config::MergeConfigs(st.file_configs, records, fresh.get(), &warnings);
  if (!s.ok()) return s;
  for (const auto& w : warnings) {
    if (std::find(st.merge_warnings.begin(), st.merge_warnings.end(), w) ==
        st.merge_warnings.end()) {
      spdlog::warn("{}", w);
    }
  }
  st.merge_warnings = std::move(warnings);
  // One line per config whose record changed, wherever the change came from: with the history,
  // this is how an operator sees which of two concurrent edits won here.
  std::map<std::string, const config::ConfigRecord*> before;
  for (const auto& r : st.api_records) before[r.config.id] = &r;
  for (const auto& r : records) {
    auto it = before.find(r.config.id);
    if (it != before.end() && it->second->time_ms == r.time_ms && it->second->node == r.node &&
        it->second->deleted == r.deleted) {
      continue;
    }
    if (r.deleted) continue;
    const config::DatabaseConfig* serving = fresh->FindById(r.config.id);
    if (serving == nullptr || !serving->from_api) continue;  // shadowed: MergeConfigs warned
    spdlog::info("cluster-wide config {} in force: {} {}", Quote(r.config.id),
                 Quote(r.config.matcher.pattern()), r.config.source);
  }
  for (const auto& [id, r] : before) {
    const bool gone = std::none_of(records.begin(), records.end(),
                                   [&](const auto& n) { return n.config.id == id && !n.deleted; });
    if (!r->deleted && gone) spdlog::info("cluster-wide config {} deleted", Quote(id));
  }
  st.api_records = std::move(records);
  ApplyConfigs(self, std::move(fresh));
  Replace(self);  // replication.min and max may have changed
  return Status::OK();
}

/// Re-reads the cluster-wide configs and drains and puts them in force.
void ReloadClusterConfigs(supervisor_pointer self) {
  self->state.system_changed->store(false);
  const std::vector<uint64_t> old_candidates = Candidates(self);
  const bool drains_changed = ReadDrains(self);
  std::vector<config::ConfigRecord> records;
  Status s = ReadRecords(self, config::kConfigsPrefix, &records);
  // A drain report changes no config: then nothing is re-installed (which would send every
  // running database its budget and replica set again, on every node, at each report).
  auto same = [](const config::ConfigRecord& a, const config::ConfigRecord& b) {
    return a.config.id == b.config.id && a.time_ms == b.time_ms && a.node == b.node &&
           a.deleted == b.deleted;
  };
  auto& st = self->state;
  const bool unchanged = st.configs_installed && records.size() == st.api_records.size() &&
                         std::equal(records.begin(), records.end(), st.api_records.begin(), same);
  if (s.ok() && !unchanged) {
    s = InstallConfigs(self, std::move(records));  // running databases are re-placed
    st.configs_installed = s.ok();
  } else if (s.ok() && drains_changed) {
    Replace(self);
  }
  if (!s.ok()) {
    spdlog::error("cannot put the cluster-wide configs in force: {}", s.ToString());
    if (drains_changed) Replace(self);
  }
  if (drains_changed) WakeAffected(self, old_candidates, {});
  PublishBoard(self);
}

/// The wall clock in ms for a new record, later than the last one this node wrote: two edits
/// within a millisecond get history keys of their own (HistoryKey is time and node).
int64_t NextRecordTime(supervisor_pointer self) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  int64_t& last = self->state.last_record_ms;
  last = std::max(now, last + 1);
  return last;
}

const config::ConfigRecord* FindRecord(const std::vector<config::ConfigRecord>& records,
                                       std::string_view id) {
  for (const auto& r : records) {
    if (r.config.id == id) return &r;
  }
  return nullptr;
}

/// The node's own config with this id, or nullptr.
const config::DatabaseConfig* FindFileConfig(supervisor_pointer self, std::string_view id) {
  for (const auto& c : self->state.file_configs) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

/// Adds to `batch` the history entry of `record` and erases the oldest entries of its id beyond
/// kHistoryPerConfig.
Status AddHistory(supervisor_pointer self, const config::ConfigRecord& record, WriteBatch* batch) {
  auto& store = self->state.system_store;
  ListOptions options;
  options.prefix = config::HistoryPrefix(record.config.id);
  options.limit = kMaxListLimit;
  ListPage page;
  Status s = store->List(options, &page);
  if (!s.ok()) return s;
  const size_t keep = config::kHistoryPerConfig - 1;
  for (size_t i = 0; i + keep < page.keys.size(); ++i) {
    batch->ops.push_back({WriteOp::Kind::kErase, page.keys[i], {}});
  }
  batch->ops.push_back(
      {WriteOp::Kind::kPut, config::HistoryKey(record), config::EncodeRecord(record)});
  return Status::OK();
}

/// The running system database, or null.
database_actor SystemDatabase(supervisor_pointer self) {
  auto it = self->state.running.find(std::string(config::kSystemConfigsPath));
  return it == self->state.running.end() ? database_actor{} : it->second;
}

/// Writes `batch` to the system database, then calls `done` with the outcome.
template <class Done>
void WriteSystemBatch(supervisor_pointer self, WriteBatch batch, Done done) {
  const caf::timespan timeout = self->state.replication->timeout;
  self->request(SystemDatabase(self), timeout, atom::batch_v, std::move(batch),
                Deadline::In(timeout))
      .then([=](atom::ok) mutable { done(Status::OK()); },
            [=](caf::error& err) mutable { done(ToStatus(err)); });
}

/// Writes `batch`, which stores `records`, to the system database; on success re-reads the
/// configs and delivers `result()`'s answer, else the error. Until it is answered, `records` are
/// pending (checked by the applies that come meanwhile).
template <class MakeResult>
void WriteSystem(supervisor_pointer self, WriteBatch batch,
                 std::vector<config::ConfigRecord> records,
                 caf::typed_response_promise<ConfigApplyResult> promise, MakeResult result) {
  auto& pending = self->state.pending_records;
  pending.insert(pending.end(), records.begin(), records.end());
  auto settle = [self, records] {
    auto& pending = self->state.pending_records;
    for (const auto& r : records) {
      auto it = std::find_if(pending.begin(), pending.end(), [&](const auto& p) {
        return p.config.id == r.config.id && p.time_ms == r.time_ms && p.node == r.node;
      });
      if (it != pending.end()) pending.erase(it);
    }
  };
  WriteSystemBatch(self, std::move(batch), [=](Status s) mutable {
    settle();
    if (s.ok()) {
      // In force here before the caller hears of it; other nodes follow as the delta
      // reaches them.
      ReloadClusterConfigs(self);
      promise.deliver(result());
      return;
    }
    if (s.code() == Code::kTimeout || s.code() == Code::kUnavailable) {
      // The batch may have been applied here without every node in view confirming it
      // (one went silent meanwhile): read what is. Stored here, it reaches the others
      // as they become reachable, so that is a success with a warning.
      ReloadClusterConfigs(self);
      const auto& now = self->state.api_records;
      const bool stored = std::all_of(records.begin(), records.end(), [&](const auto& r) {
        return std::any_of(now.begin(), now.end(), [&](const auto& n) {
          return n.config.id == r.config.id && n.time_ms == r.time_ms && n.node == r.node;
        });
      });
      if (stored) {
        ConfigApplyResult answer = result();
        answer.warnings.push_back(
            "stored and in force on this node, but not every node in view confirmed it (" +
            s.message() + "); the others get it as they become reachable");
        promise.deliver(std::move(answer));
        return;
      }
      promise.deliver(ToError(
          Status(s.code(), "the database of cluster-wide configs did not confirm the change (" +
                               s.message() +
                               "); it may or may not be in force: check with kvmesh config get")));
      return;
    }
    promise.deliver(
        ToError(Status(s.code(), "the cluster-wide configs were not changed: " + s.message())));
  });
}

/// Applies the configs of `yaml` cluster-wide (see matcher_supervisor_actor).
caf::result<ConfigApplyResult> ApplyClusterConfigs(supervisor_pointer self, const std::string& yaml,
                                                   const ConfigApplyOptions& options) {
  auto& st = self->state;
  if (!st.system_store || !SystemDatabase(self)) {
    return ToError(Status::Unavailable("the database of cluster-wide configs is not open"));
  }
  config::ConfigSet parsed;
  std::vector<config::ConfigDiagnostic> diagnostics;
  const std::string source = options.source_name.empty() ? "request" : options.source_name;
  Status s = config::ConfigSet::LoadString(yaml, source, &parsed, &diagnostics);
  if (!s.ok()) return ToError(Status(s.code(), s.message() + "; nothing was applied"));
  std::vector<config::DatabaseConfig> configs = parsed.configs();
  auto refuse = [](const std::string& why) {
    return ToError(Status::InvalidConfig(why + "; nothing was applied"));
  };
  if (configs.empty()) return refuse("no database config in " + source);
  if (!options.id.empty()) {
    if (configs.size() != 1) {
      return refuse("the request names config " + Quote(options.id) + " but holds " +
                    std::to_string(configs.size()) + " configs");
    }
    if (configs[0].id_derived) {
      configs[0].id = options.id;
      configs[0].id_derived = false;
    } else if (configs[0].id != options.id) {
      return refuse("the config's id " + Quote(configs[0].id) + " differs from the id " +
                    Quote(options.id) + " the request names");
    }
  }
  // What is stored, with the applies still being written on top (they will be).
  std::vector<config::ConfigRecord> candidate = st.api_records;
  for (const auto& p : st.pending_records) {
    auto it = std::find_if(candidate.begin(), candidate.end(),
                           [&](const auto& r) { return r.config.id == p.config.id; });
    if (it != candidate.end()) {
      *it = p;
    } else {
      candidate.push_back(p);
    }
  }
  std::vector<config::ConfigRecord> applied;
  const int64_t now = NextRecordTime(self);
  for (auto& c : configs) {
    if (c.id.size() > kMaxApiConfigIdBytes) {
      return refuse("config id " + Quote(c.id) + " is longer than " +
                    std::to_string(kMaxApiConfigIdBytes) + " bytes");
    }
    if (c.id == config::SystemConfigsConfig().id) {
      return refuse("config id " + Quote(c.id) + " is kvmesh's own");
    }
    if (config::IsReservedPath(c.matcher.pattern())) {
      return refuse("config " + Quote(c.id) + ": matcher " + Quote(c.matcher.pattern()) +
                    " names reserved paths (" + std::string(config::kReservedPathPrefix) + ")");
    }
    if (const auto* file = FindFileConfig(self, c.id)) {
      return refuse("config " + Quote(c.id) + " is declared in " + file->source +
                    " on this node, and a node's own configs win over cluster-wide ones: edit "
                    "that file instead");
    }
    for (const auto& file : st.file_configs) {
      if (file.matcher.pattern() == c.matcher.pattern()) {
        return refuse("matcher " + Quote(c.matcher.pattern()) + " of config " + Quote(c.id) +
                      " is the matcher of config " + Quote(file.id) + " declared in " +
                      file.source + " on this node");
      }
    }
    for (const auto& r : candidate) {
      if (!r.deleted && r.config.id != c.id && r.config.matcher.pattern() == c.matcher.pattern()) {
        return refuse("matcher " + Quote(c.matcher.pattern()) + " of config " + Quote(c.id) +
                      " is the matcher of cluster-wide config " + Quote(r.config.id) +
                      "; change or delete that one");
      }
    }
    config::ConfigRecord record;
    record.config = c;
    record.config.from_api = true;
    record.applied_by = options.applied_by.empty() ? "embedded" : options.applied_by;
    record.node = st.node_name;
    record.time_ms = now;
    applied.push_back(record);
    auto it = std::find_if(candidate.begin(), candidate.end(),
                           [&](const auto& r) { return r.config.id == c.id; });
    if (it != candidate.end()) {
      *it = record;
    } else {
      candidate.push_back(record);
    }
  }
  // The whole set as it would be: every applied config must be in force.
  config::ConfigSet merged;
  std::vector<std::string> merge_warnings;
  s = config::MergeConfigs(st.file_configs, candidate, &merged, &merge_warnings);
  if (!s.ok()) return ToError(Status(s.code(), s.message() + "; nothing was applied"));
  ConfigApplyResult result;
  for (const auto& d : diagnostics) {
    if (!d.is_error) result.warnings.push_back(d.ToString());
  }
  for (const auto& r : applied) {
    const config::DatabaseConfig* in_force = merged.FindById(r.config.id);
    if (in_force == nullptr || !in_force->from_api) {
      return refuse("config " + Quote(r.config.id) + " would not be in force");
    }
    result.configs.push_back(ToConfigInfo(*in_force));
    const config::ConfigRecord* old = FindRecord(st.api_records, r.config.id);
    if (old != nullptr && !old->deleted && r.config.size_bytes < old->config.size_bytes) {
      result.warnings.push_back(
          "config " + Quote(r.config.id) + ": size lowered from " +
          FormatSize(old->config.size_bytes) + " to " + FormatSize(r.config.size_bytes) +
          "; its databases that hold more keep their data and refuse writes that add data until "
          "they hold less");
    }
  }
  for (const auto& w : merge_warnings) {
    for (const auto& r : applied) {
      if (w.find(Quote(r.config.id)) != std::string::npos) {
        result.warnings.push_back(w);
        break;
      }
    }
  }
  if (options.dry_run) return result;
  WriteBatch batch;
  for (const auto& r : applied) {
    batch.ops.push_back(
        {WriteOp::Kind::kPut, config::ConfigKey(r.config.id), config::EncodeRecord(r)});
    if (Status h = AddHistory(self, r, &batch); !h.ok()) return ToError(h);
  }
  auto promise = self->make_response_promise<ConfigApplyResult>();
  WriteSystem(self, std::move(batch), applied, promise, [self, result]() mutable {
    // Sources as now in force (who applied it, where, when).
    for (auto& info : result.configs) {
      if (const auto* c = self->state.configs->FindById(info.id)) info = ToConfigInfo(*c);
    }
    return result;
  });
  for (const auto& r : applied) {
    spdlog::info("applying cluster-wide config {} ({}) for {}", Quote(r.config.id),
                 Quote(r.config.matcher.pattern()), r.applied_by);
  }
  return promise;
}

/// Deletes the cluster-wide config `id` (see matcher_supervisor_actor).
caf::result<ConfigApplyResult> DeleteClusterConfig(supervisor_pointer self, const std::string& id,
                                                   const std::string& applied_by) {
  auto& st = self->state;
  if (!st.system_store || !SystemDatabase(self)) {
    return ToError(Status::Unavailable("the database of cluster-wide configs is not open"));
  }
  if (const auto* file = FindFileConfig(self, id)) {
    return ToError(Status::InvalidArgument(
        "config " + Quote(id) + " is declared in " + file->source +
        " on this node: remove it from that file and reload; nothing was deleted"));
  }
  const config::ConfigRecord* old = FindRecord(st.api_records, id);
  if (old == nullptr || old->deleted) {
    return ToError(Status::NotFound("no cluster-wide config " + Quote(id)));
  }
  config::ConfigRecord record;
  record.config.id = id;
  record.deleted = true;
  record.applied_by = applied_by.empty() ? "embedded" : applied_by;
  record.node = st.node_name;
  record.time_ms = NextRecordTime(self);
  WriteBatch batch;
  // A deleted record, not an erase: two concurrent edits of one id, an apply and a delete, then
  // resolve like any two edits (the later wins), and the key keeps who deleted it.
  batch.ops.push_back({WriteOp::Kind::kPut, config::ConfigKey(id), config::EncodeRecord(record)});
  if (Status h = AddHistory(self, record, &batch); !h.ok()) return ToError(h);
  ConfigApplyResult result;
  result.warnings.push_back("the databases of config " + Quote(id) +
                            " keep their data; they cannot be opened until a config matches "
                            "them again");
  auto promise = self->make_response_promise<ConfigApplyResult>();
  WriteSystem(self, std::move(batch), {record}, promise, [result] { return result; });
  spdlog::info("deleting cluster-wide config {} for {}", Quote(id), record.applied_by);
  return promise;
}

/// The history of the cluster-wide config `id`, oldest first.
caf::result<std::vector<ConfigHistoryEntry>> ClusterConfigHistory(supervisor_pointer self,
                                                                  const std::string& id) {
  auto& st = self->state;
  std::vector<config::ConfigRecord> records;
  Status s = ReadRecords(self, config::HistoryPrefix(id), &records);
  if (!s.ok()) return ToError(s);
  if (records.empty()) {
    if (const auto* file = FindFileConfig(self, id)) {
      return ToError(Status::NotFound("config " + Quote(id) + " is declared in " + file->source +
                                      "; only cluster-wide configs have a history"));
    }
    return ToError(Status::NotFound("no cluster-wide config " + Quote(id) + " and no history"));
  }
  const config::ConfigRecord* current = FindRecord(st.api_records, id);
  std::vector<ConfigHistoryEntry> out;
  for (const auto& r : records) {
    ConfigHistoryEntry e;
    e.config = ToConfigInfo(r.config);
    if (r.deleted) e.config = ConfigInfo{id};
    e.deleted = r.deleted;
    e.applied_by = r.applied_by;
    e.node = r.node;
    e.time_ms = r.time_ms;
    // The stored record and, for an apply, not shadowed here by one of this node's own configs.
    const config::DatabaseConfig* serving = st.configs->FindById(id);
    e.in_force = current != nullptr && current->time_ms == r.time_ms && current->node == r.node &&
                 current->deleted == r.deleted &&
                 (r.deleted || (serving != nullptr && serving->from_api));
    out.push_back(std::move(e));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Drains (`kvmesh node drain`) and rebalancing in waves.

/// Period of the rebalance timer: a sync round (whose exchanges a woken database needs), at
/// least 100 ms; 1 s when rounds are off.
caf::timespan RebalanceTick(supervisor_pointer self) {
  const caf::timespan sync = self->state.replication->sync_interval;
  if (sync.count() <= 0) return std::chrono::seconds(1);
  return std::max<caf::timespan>(sync, std::chrono::milliseconds(100));
}

/// How long a woken database keeps its place in the wave at most, if it has not passivated or
/// dropped its copy by then (a peer down, say): it keeps running like any database, and the
/// queue goes on. Ten ticks, and at least three replication timeouts (a slow exchange under load
/// is not a stuck one).
caf::timespan RebalanceSlot(supervisor_pointer self) {
  return std::max<caf::timespan>(10 * RebalanceTick(self), 3 * self->state.replication->timeout);
}

/// The idle timeout of a database woken to rebalance: short, so that it passivates soon after
/// its exchanges (a few rounds), but never longer than the node's (0: no passivation).
caf::timespan RebalanceIdleTimeout(supervisor_pointer self) {
  const caf::timespan idle = self->state.idle_timeout;
  if (idle.count() <= 0) return idle;
  return std::min<caf::timespan>(
      idle, std::max<caf::timespan>(4 * RebalanceTick(self), std::chrono::seconds(1)));
}

/// True if this node is drained and has not yet reported holding no database.
bool DrainUnfinished(supervisor_pointer self) {
  auto& st = self->state;
  auto drain = st.drains.find(SelfId(self));
  if (drain == st.drains.end() || !drain->second.drained) return false;
  auto progress = st.drain_progress.find(SelfId(self));
  return progress == st.drain_progress.end() ||
         progress->second.request_ms != drain->second.time_ms || progress->second.left > 0;
}

/// The largest replication.min of the configs (at least 1), and the config that needs it (null
/// if none needs more than 1).
uint32_t MostNeeded(supervisor_pointer self, const config::DatabaseConfig** needing) {
  uint32_t need = 1;
  *needing = nullptr;
  for (const auto& c : self->state.configs->configs()) {
    if (c.replication.min > need) {
      need = c.replication.min;
      *needing = &c;
    }
  }
  return need;
}

/// Re-reads the drain records and reports; true if the set of drained nodes changed.
bool ReadDrains(supervisor_pointer self) {
  auto& st = self->state;
  std::map<uint64_t, config::DrainRecord> drains;
  std::map<uint64_t, config::DrainProgress> progress;
  Status s = ForEachSystemKey(
      self, config::kDrainPrefix, [&](const std::string& key, const std::string& value) {
        config::DrainRecord r;
        Status d = config::DecodeDrain(value, &r);
        if (d.ok()) {
          drains[r.node_id] = r;
        } else {
          spdlog::warn("skipping the drain record {}: {}", Quote(key), d.message());
        }
      });
  if (s.ok()) {
    s = ForEachSystemKey(
        self, config::kDrainProgressPrefix, [&](const std::string& key, const std::string& value) {
          config::DrainProgress p;
          Status d = config::DecodeDrainProgress(value, &p);
          if (d.ok()) {
            progress[p.node_id] = p;
          } else {
            spdlog::warn("skipping the drain report {}: {}", Quote(key), d.message());
          }
        });
  }
  if (!s.ok()) {
    // Placement stays as it was rather than taking every node back in.
    spdlog::error("cannot read the drain records: {}", s.ToString());
    return false;
  }
  std::set<uint64_t> drained;
  for (const auto& [id, r] : drains) {
    if (r.drained) drained.insert(id);
  }
  st.drains = std::move(drains);
  st.drain_progress = std::move(progress);
  if (drained == st.drained) return false;
  for (uint64_t id : drained) {
    if (st.drained.count(id) == 0) {
      spdlog::info("node {} is drained: it takes no replicas of users' databases{}",
                   FormatNodeId(id),
                   id == SelfId(self) ? "; handing this node's databases over" : "");
    }
  }
  for (uint64_t id : st.drained) {
    if (drained.count(id) == 0) {
      spdlog::info("node {} is undrained: it takes replicas again", FormatNodeId(id));
    }
  }
  st.drained = std::move(drained);
  // Each node checks a drain against the drains it knows of (RequestDrain); two drains asked
  // through two nodes at once can both pass. Said loudly, as the operator can undrain one.
  const config::DatabaseConfig* needing = nullptr;
  const uint32_t need = MostNeeded(self, &needing);
  size_t undrained = st.drained.count(SelfId(self)) == 0;
  for (const auto& [id, member] : st.members) undrained += st.drained.count(id) == 0;
  if (needing != nullptr && undrained < need) {
    spdlog::warn(
        "only {} nodes are not drained, fewer than config {} needs (replication.min {}): its "
        "writes fail until a node is undrained (kvmesh node undrain) or added",
        undrained, Quote(needing->id), need);
  }
  return true;
}

/// Shows the drains and this node's rebalancing to `kvmesh members` (PlacementBoard).
void PublishBoard(supervisor_pointer self) {
  auto& st = self->state;
  if (!st.replication->placement_board) return;
  std::map<uint64_t, PlacementBoard::Entry> nodes;
  for (const auto& [id, drain] : st.drains) {
    if (!drain.drained) continue;
    PlacementBoard::Entry entry;
    entry.placement = "draining";
    auto p = st.drain_progress.find(id);
    if (p != st.drain_progress.end() && p->second.request_ms == drain.time_ms) {
      entry.total = p->second.total;
      entry.left = p->second.left;
      if (p->second.left == 0) entry.placement = "drained";
    }
    nodes.emplace(id, std::move(entry));
  }
  st.replication->placement_board->Publish(std::move(nodes),
                                           st.rebalance_queue.size() + st.rebalancing.size());
}

/// On a drained node: writes how many users' databases it still holds to the system database
/// (DrainProgress) when that changed, so that every node shows it.
void ReportDrainProgress(supervisor_pointer self) {
  auto& st = self->state;
  auto drain = st.drains.find(SelfId(self));
  if (drain == st.drains.end() || !drain->second.drained || st.progress_in_flight ||
      !SystemDatabase(self)) {
    return;
  }
  // Counting reads the whole catalog: at most once per tick, however many copies drop.
  const auto now = std::chrono::steady_clock::now();
  if (now - st.last_progress_count < RebalanceTick(self)) return;
  st.last_progress_count = now;
  std::vector<DatabaseInfo> catalog;
  Status s = st.store->ListDatabases(&catalog);
  if (!s.ok()) return;
  // Databases no config matches are not handed over (their data is kept, as always).
  const uint64_t left =
      std::count_if(catalog.begin(), catalog.end(), [&](const DatabaseInfo& info) {
        return !config::IsReservedPath(info.path) && Resolve(self, info.path) != nullptr;
      });
  config::DrainProgress progress;
  progress.node_id = SelfId(self);
  progress.request_ms = drain->second.time_ms;
  progress.left = left;
  auto old = st.drain_progress.find(SelfId(self));
  const bool same = old != st.drain_progress.end() && old->second.request_ms == progress.request_ms;
  progress.total = same ? std::max(old->second.total, left) : left;
  if (same && old->second.left == left) return;
  progress.time_ms = NextRecordTime(self);
  WriteBatch batch;
  batch.ops.push_back({WriteOp::Kind::kPut, config::DrainProgressKey(progress.node_id),
                       config::EncodeDrainProgress(progress)});
  st.progress_in_flight = true;
  WriteSystemBatch(self, std::move(batch), [self, progress](Status s) {
    self->state.progress_in_flight = false;
    if (!s.ok()) {
      spdlog::debug("drain report not confirmed by every node: {}", s.ToString());
    }
    spdlog::info("drain: {} of {} databases handed over, {} left", progress.total - progress.left,
                 progress.total, progress.left);
    // Stored here at least (else the next tick tries again).
    ReloadClusterConfigs(self);
  });
}

/// Wakes the next queued databases while the wave has room, reports a drain's progress, and
/// keeps the timer going while anything is left.
void PumpRebalance(supervisor_pointer self) {
  auto& st = self->state;
  const auto now = std::chrono::steady_clock::now();
  for (auto it = st.rebalancing.begin(); it != st.rebalancing.end();) {
    if (now >= it->second || st.running.count(it->first) == 0) {
      it = st.rebalancing.erase(it);
    } else {
      ++it;
    }
  }
  const size_t wave = std::max<size_t>(1, st.replication->rebalance_wave);
  size_t woken = 0;
  while (st.rebalancing.size() < wave && !st.rebalance_queue.empty()) {
    std::string path = std::move(st.rebalance_queue.front());
    st.rebalance_queue.pop_front();
    st.rebalance_queued.erase(path);
    // Opened meanwhile: it got its replica set like every running database.
    if (st.running.count(path) > 0 || st.stopping.count(path) > 0) continue;
    if (Resolve(self, path) == nullptr) continue;
    database_actor handle;
    Status s = Instantiate(self, path, &handle, RebalanceIdleTimeout(self));
    if (!s.ok()) {
      spdlog::warn("cannot wake database {} to rebalance it: {}", Quote(path), s.ToString());
      continue;
    }
    st.rebalancing.emplace(std::move(path), now + RebalanceSlot(self));
    ++woken;
  }
  if (woken > 0) {
    spdlog::debug("rebalancing: woke {} databases, {} waiting", woken, st.rebalance_queue.size());
  }
  ReportDrainProgress(self);
  PublishBoard(self);
  if (!st.rebalance_timer &&
      (!st.rebalancing.empty() || !st.rebalance_queue.empty() || DrainUnfinished(self))) {
    st.rebalance_timer = true;
    self->delayed_send(self, RebalanceTick(self), atom::rebalance_v);
  }
}

/// `kvmesh node drain|undrain` (see matcher_supervisor_actor).
caf::result<std::string> RequestDrain(supervisor_pointer self, uint64_t node, bool drain,
                                      const std::string& who) {
  auto& st = self->state;
  const std::string name = "node " + FormatNodeId(node);
  if (!st.replication->clustered) {
    return ToError(Status::InvalidArgument(
        "this node is not in a cluster: there is no other node to hand databases over to"));
  }
  if (!st.system_store || !SystemDatabase(self)) {
    return ToError(Status::Unavailable("the database of cluster-wide configs is not open"));
  }
  auto current = st.drains.find(node);
  const bool is_drained = current != st.drains.end() && current->second.drained;
  if (drain) {
    if (node != SelfId(self) && st.members.count(node) == 0) {
      return ToError(Status::NotFound("no member " + FormatNodeId(node) +
                                      " in this node's view (kvmesh members lists them); nothing "
                                      "was drained"));
    }
    if (is_drained) return name + " is already drained; kvmesh members shows its progress";
    // The nodes left to hold replicas must be enough for every config's writes: the undrained
    // ones, less those being drained through this node (their records are not read back yet),
    // and less those down (writes need acknowledgements from reachable nodes).
    size_t remaining = 0;
    std::vector<std::string> down;
    for (uint64_t id : Candidates(self)) {
      if (id == node || st.drained.count(id) > 0 || st.drains_in_flight.count(id) > 0) continue;
      auto member = st.members.find(id);
      if (member != st.members.end() && !member->second.alive) {
        down.push_back(FormatNodeId(id));
        continue;
      }
      ++remaining;
    }
    const config::DatabaseConfig* needing = nullptr;
    const uint32_t need = MostNeeded(self, &needing);
    if (remaining < need) {
      std::string why = needing == nullptr ? std::string("no node")
                                           : "fewer than config " + Quote(needing->id) +
                                                 " needs (replication.min " + std::to_string(need) +
                                                 "), so its writes would fail";
      if (!down.empty()) {
        std::string names;
        for (const auto& d : down) names += (names.empty() ? "" : ", ") + d;
        return ToError(Status::Unavailable(
            "draining " + name + " would leave " + std::to_string(remaining) +
            " reachable nodes to hold replicas, " + why + "; node" +
            (down.size() > 1 ? "s " : " ") + names + (down.size() > 1 ? " are" : " is") +
            " down: bring it back or add a node first. Nothing was drained"));
      }
      return ToError(Status::InvalidArgument(
          "draining " + name + " would leave " + std::to_string(remaining) +
          " nodes to hold replicas, " + why + "; add a node first. Nothing was drained"));
    }
  } else if (!is_drained) {
    return name + " is not drained; nothing changed";
  }
  config::DrainRecord record;
  record.node_id = node;
  record.drained = drain;
  record.requested_by = who.empty() ? "embedded" : who;
  record.node = st.node_name;
  record.time_ms = NextRecordTime(self);
  WriteBatch batch;
  // A record, not an erase, for an undrain too: concurrent drain and undrain resolve like any two
  // writes of one key (the later wins), and the key keeps who asked last.
  batch.ops.push_back({WriteOp::Kind::kPut, config::DrainKey(node), config::EncodeDrain(record)});
  spdlog::info("{} {} for {}", drain ? "draining" : "undraining", name, record.requested_by);
  auto promise = self->make_response_promise<std::string>();
  if (drain) st.drains_in_flight.insert(node);
  WriteSystemBatch(self, std::move(batch), [=](Status s) mutable {
    if (drain) self->state.drains_in_flight.erase(node);
    ReloadClusterConfigs(self);
    auto now = self->state.drains.find(node);
    const bool stored = now != self->state.drains.end() && now->second.time_ms == record.time_ms &&
                        now->second.node == record.node;
    if (!stored) {
      promise.deliver(
          ToError(Status(s.ok() ? Code::kInternal : s.code(),
                         "the drain record of " + name + " was not stored: " + s.message())));
      return;
    }
    std::string summary =
        drain ? name +
                    " is draining: it hands its databases over to the nodes placement picks "
                    "without it, then holds none; kvmesh members shows its progress"
              : name +
                    " is undrained: it takes replicas again, and its share of databases moves "
                    "back to it";
    if (!s.ok()) {
      summary += " (stored here, but not every node in view confirmed it: " + s.message() +
                 "; the others get it as they become reachable)";
    }
    promise.deliver(std::move(summary));
  });
  return promise;
}

/// Loads the config directory and the ACL file; if both are valid applies both and describes
/// them, else changes nothing and names the errors of each. All or nothing because an operator
/// who edits both (a tenant's database config and its grant) means them to go together.
caf::result<std::string> Reload(supervisor_pointer self) {
  auto& st = self->state;
  const bool reload_acl = st.acl && st.acl->configured();
  if (st.config_dir.empty() && !reload_acl) {
    return ToError(
        Status::InvalidArgument("this node's configs were built in memory; there is "
                                "no config directory to reload"));
  }
  std::shared_ptr<config::ConfigSet> fresh;
  std::vector<config::ConfigDiagnostic> diagnostics;
  std::string errors;
  Code code = Code::kInvalidConfig;
  if (!st.config_dir.empty()) {
    fresh = std::make_shared<config::ConfigSet>();
    Status s = config::ConfigSet::LoadDirectory(st.config_dir, fresh.get(), &diagnostics);
    if (!s.ok()) {
      errors = s.message();
      code = s.code();
    }
  }
  std::shared_ptr<const security::Acl> acl;
  if (reload_acl) {
    Status s = st.acl->Parse(&acl, nullptr);
    if (!s.ok()) {
      errors += (errors.empty() ? "" : "; ") + s.message();
      code = s.code();
    }
  }
  if (!errors.empty()) {
    std::string kept = fresh && reload_acl ? "the previous configs and ACL stay active"
                       : reload_acl        ? "the previous ACL stays active"
                                           : "the previous configs stay active";
    Status rejected(code, "reload rejected, " + kept + ": " + errors);
    spdlog::error("{}", rejected.message());
    return ToError(rejected);
  }
  if (fresh) {
    // The new files with the cluster-wide configs must make a valid set before anything changes
    // (records are checked when read, so only a file could make it fail).
    config::ConfigSet merged;
    Status s = config::MergeConfigs(fresh->configs(), st.api_records, &merged, nullptr);
    if (!s.ok()) {
      return ToError(Status(s.code(),
                            "reload rejected, the previous configs and ACL stay "
                            "active: " +
                                s.message()));
    }
  }
  std::string summary;
  if (fresh) {
    summary = "loaded " + std::to_string(fresh->configs().size()) + " database configs from " +
              st.config_dir;
    for (const auto& d : diagnostics) summary += "\n" + d.ToString();
  }
  if (acl) {
    summary += (summary.empty() ? "" : "\n") + std::string("loaded the ACL: ") +
               std::to_string(acl->size()) + " principals from " + st.acl->file();
    // Installed first: from here the next request checked by the gateway sees it.
    st.acl->Install(std::move(acl));
  }
  if (fresh) {
    // The node's files change; the cluster-wide configs merge in as before (MergeConfigs cannot
    // fail for valid files: an API config that no longer fits is left out with a warning).
    st.file_configs = fresh->configs();
    Status s = InstallConfigs(self, st.api_records);
    if (!s.ok()) return ToError(s);
  }
  spdlog::info("{}", summary);
  return summary;
}

}  // namespace

matcher_supervisor_actor::behavior_type matcher_supervisor_impl(
    supervisor_pointer self, std::shared_ptr<const config::ConfigSet> configs,
    std::string config_dir, std::shared_ptr<storage::Store> store, caf::timespan idle_timeout,
    std::shared_ptr<const ReplicationOptions> replication, std::shared_ptr<security::AclStore> acl,
    std::string node_name) {
  self->state.acl = std::move(acl);
  self->state.replication = std::move(replication);
  self->state.file_configs = configs->configs();
  self->state.configs = std::move(configs);
  self->state.config_dir = std::move(config_dir);
  self->state.store = std::move(store);
  self->state.idle_timeout = idle_timeout;
  self->state.node_name = std::move(node_name);
  {
    auto system = std::make_shared<ReplicationOptions>(*self->state.replication);
    system->sync_interval *= kSystemSyncFactor;
    self->state.system_replication = std::move(system);
  }
  // The cluster-wide configs are in force before the first request is served.
  StartSystemDatabase(self);
  if (self->state.system_store) ReloadClusterConfigs(self);
  RefreshSummary(self);

  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    auto found = st.path_of.find(msg.source.id());
    if (found == st.path_of.end()) return;
    const std::string path = found->second;
    st.path_of.erase(found);
    // Passivated or dropped its handed-over copy: its place in the wave goes to the next one
    // (the stopping handling below does not depend on what this wakes: other paths only).
    if (st.rebalancing.erase(path) > 0) PumpRebalance(self);
    if (st.replication->direct_reads) st.replication->direct_reads->Remove(msg.source.id());
    const bool dropped = st.dropped.erase(msg.source.id()) > 0;
    auto running = st.running.find(path);
    if (dropped && running != st.running.end() && running->second.address() == msg.source) {
      st.running.erase(running);
    } else if (running != st.running.end() && running->second.address() == msg.source) {
      // Not passivated: the actor failed. Its next open spawns a fresh one.
      spdlog::warn("database {} stopped unexpectedly: {}", Quote(path), to_string(msg.reason));
      st.running.erase(running);
      // Except the system database, which must always run; so at once.
      if (IsSystemPath(path)) StartSystemDatabase(self);
    }
    auto stopping = st.stopping.find(path);
    if (stopping == st.stopping.end()) return;
    auto waiting = std::move(stopping->second.waiting);
    const std::vector<uint64_t> candidates = std::move(stopping->second.candidates);
    st.stopping.erase(stopping);
    if (waiting.empty()) {
      // Placement changed while it stopped (WakeAffected and PumpRebalance skip stopping
      // databases): without this, a drained node would keep its copy for good.
      if (!dropped && st.rebalance_queued.count(path) == 0 &&
          (Affected(self, path, candidates, {}) || st.stale_repairs.count(path) > 0)) {
        st.rebalance_queue.push_back(path);
        st.rebalance_queued.insert(path);
        PumpRebalance(self);
      }
      return;
    }
    database_actor handle;
    Status s = Instantiate(self, path, &handle);
    for (auto& answer : waiting) {
      if (s.ok()) {
        answer(handle);
      } else {
        answer(ToError(s));
      }
    }
  });

  // On shutdown, stop every database with the supervisor (those already stopping too) and answer
  // the opens waiting for one: a dropped promise would leave its caller to its timeout.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    for (auto& [path, handle] : st.running) self->send_exit(handle, msg.reason);
    const caf::error shutting_down = ToError(Status::Unavailable("the node is shutting down"));
    for (auto& [path, stopping] : st.stopping) {
      self->send_exit(stopping.actor, msg.reason);
      for (auto& answer : stopping.waiting) answer(shutting_down);
    }
    st.stopping.clear();
    self->quit(msg.reason);
  });

  return {
      // Paths arrive normalised (common/path.hpp): from the embedded API, the client gateway, the
      // membership actor (for a peer) and database actors, which normalise or hold them.
      [=](atom::open, const std::string& path) -> caf::result<database_client_actor> {
        auto& st = self->state;
        // Every user's open passes here (embedded, client gateway, HTTP); peers reach replicas
        // with `replica`, which the system database needs.
        if (Status s = config::CheckUserDatabasePath(path); !s.ok()) return ToError(s);
        const config::DatabaseConfig* config = Resolve(self, path);
        if (config == nullptr) {
          return ToError(Status::NoMatchingConfig("no database config matches " + Quote(path)));
        }
        if (st.members.empty()) return OpenLocal<database_client_actor>(self, path);
        ReplicaSet placed = PlaceDatabase(self, path, *config);
        const bool here =
            std::find(placed.nodes.begin(), placed.nodes.end(), SelfId(self)) != placed.nodes.end();
        // A copy still running here (being handed over) keeps serving until it is dropped.
        if (here || st.running.count(path) > 0) return OpenLocal<database_client_actor>(self, path);
        auto promise = self->make_response_promise<database_client_actor>();
        OpenRemote(self, path, placed.nodes, 0, promise);
        return promise;
      },
      [=](atom::replica, const std::string& path,
          uint64_t node) -> caf::result<database_peer_actor> {
        if (node == SelfId(self)) return OpenLocal<database_peer_actor>(self, path);
        auto promise = self->make_response_promise<database_peer_actor>();
        OpenRemote(self, path, {node}, 0, promise);
        return promise;
      },
      [=](atom::members, std::vector<MemberView>& view) {
        auto& st = self->state;
        // Databases nobody uses must rebalance too: remember who was a candidate and who is
        // back, then wake the idle databases this change concerns.
        const std::vector<uint64_t> old_candidates = Candidates(self);
        std::set<uint64_t> returned;
        for (const auto& member : view) {
          auto old = st.members.find(member.node_id);
          if (member.alive && (old == st.members.end() || !old->second.alive)) {
            returned.insert(member.node_id);
          }
        }
        st.members.clear();
        for (auto& member : view) {
          if (member.node_id != SelfId(self)) st.members.emplace(member.node_id, std::move(member));
        }
        Replace(self);
        // Databases whose replica set changed (or that leave this node) wake in waves. Those a
        // returned member shares may differ from its copies too (either side may have taken
        // writes while they were apart): with node-level anti-entropy the next rounds with that
        // member find exactly which (replication/node_summary.hpp); without it (no summary),
        // each of them checks in. (A restarted node sees every member as returned: waking all
        // it shares with them cost O(databases) at every restart.)
        // Likewise the first view with members after a start: placement over this node alone (all
        // it knew) says nothing of where the databases were placed before; those placed elsewhere
        // now still hand their copies over.
        const bool summary = st.replication->node_summary != nullptr;
        const bool first_view = !st.members_seen;
        if (!st.members.empty()) st.members_seen = true;  // the very first view may be empty
        WakeAffected(self, summary && first_view ? Candidates(self) : old_candidates,
                     summary ? std::set<uint64_t>{} : returned);
      },
      [=](atom::dropped, const std::string& path, const database_actor& who) {
        auto it = self->state.running.find(path);
        if (it != self->state.running.end() && it->second == who) {
          self->state.dropped.emplace(who.id(), path);
          // Out of service now, not at its down message: an open meanwhile (a writer's retry of
          // a request it bounced) must go to the new replicas, not to an actor about to quit.
          self->state.running.erase(it);
        }
      },
      [=](atom::databases) -> caf::result<std::vector<DatabaseInfo>> {
        std::vector<DatabaseInfo> out;
        Status s = self->state.store->ListDatabases(&out);
        if (!s.ok()) return ToError(s);
        // Users' databases only: kvmesh's own are not theirs to open.
        out.erase(std::remove_if(out.begin(), out.end(),
                                 [](const auto& d) { return config::IsReservedPath(d.path); }),
                  out.end());
        return out;
      },
      [=](atom::backup, const std::string& dir) -> caf::result<std::string> {
        Status s = self->state.store->Checkpoint(dir);
        if (!s.ok()) return ToError(s);
        return "wrote a checkpoint of the node's store to " + dir;
      },
      [=](atom::instances, const std::string& config_id, const InstanceOptions& options)
          -> caf::result<InstancePage> { return ListInstances(self, config_id, options); },
      [=](atom::active) -> uint64_t {
        // Users' databases: the system database always runs.
        const auto& running = self->state.running;
        return running.size() - running.count(std::string(config::kSystemConfigsPath));
      },
      [=](atom::status) -> caf::result<std::vector<ReplicationStatus>> {
        // Asked of every running database at once; answered when the last has answered or
        // failed (each within the replication timeout), so a scrape is bounded in time.
        struct Gather {
          caf::typed_response_promise<std::vector<ReplicationStatus>> promise;
          std::vector<ReplicationStatus> statuses;
          size_t left = 0;
          void Done() {
            if (--left == 0) promise.deliver(std::move(statuses));
          }
        };
        if (self->state.running.empty()) return std::vector<ReplicationStatus>{};
        auto gather = std::make_shared<Gather>();
        gather->promise = self->make_response_promise<std::vector<ReplicationStatus>>();
        gather->left = self->state.running.size();
        for (const auto& [path, actor] : self->state.running) {
          self->request(actor, self->state.replication->timeout, atom::status_v)
              .then(
                  [gather](ReplicationStatus& status) {
                    gather->statuses.push_back(std::move(status));
                    gather->Done();
                  },
                  [gather](caf::error&) { gather->Done(); });
        }
        return gather->promise;
      },
      [=](atom::passivate) -> uint64_t {
        std::vector<std::string> paths;
        for (auto& [path, handle] : self->state.running) {
          if (!IsSystemPath(path)) paths.push_back(path);
        }
        for (const auto& path : paths) Passivate(self, path);
        return paths.size();
      },
      [=](atom::configs) {
        std::vector<ConfigInfo> out;
        for (const auto& c : self->state.configs->configs()) out.push_back(ToConfigInfo(c));
        return out;
      },
      [=](atom::reload) { return Reload(self); },
      [=](atom::configs, atom::put, const std::string& yaml, const ConfigApplyOptions& options)
          -> caf::result<ConfigApplyResult> { return ApplyClusterConfigs(self, yaml, options); },
      [=](atom::configs, atom::erase, const std::string& id, const std::string& applied_by)
          -> caf::result<ConfigApplyResult> { return DeleteClusterConfig(self, id, applied_by); },
      [=](atom::configs, atom::get,
          const std::string& id) -> caf::result<std::vector<ConfigHistoryEntry>> {
        return ClusterConfigHistory(self, id);
      },
      [=](atom::configs, atom::changed) {
        if (self->state.system_changed->load()) ReloadClusterConfigs(self);
      },
      [=](atom::idle, const std::string& path, const database_actor& who) {
        auto it = self->state.running.find(path);
        // Only the actor in service may passivate itself; a stale report is ignored.
        if (it != self->state.running.end() && it->second == who) Passivate(self, path);
      },
      [=](atom::drain, uint64_t node, bool drain, const std::string& who)
          -> caf::result<std::string> { return RequestDrain(self, node, drain, who); },
      [=](atom::rebalance) {
        self->state.rebalance_timer = false;
        PumpRebalance(self);
      },
      [=](atom::summary, uint64_t peer, const std::vector<std::string>& paths) {
        WakeDiffering(self, peer, paths);
      },
      [=](atom::full_sync, uint64_t peer) { RepairWithStaleMember(self, peer); },
  };
}

}  // namespace kvmesh
