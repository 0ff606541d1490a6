#include "actors/matcher_supervisor.hpp"

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

uint64_t SelfId(supervisor_pointer self) {
  return self->state.replication->node_id;
}

/// The replica set of `path` under `config` over this node and the members in view.
ReplicaSet PlaceDatabase(supervisor_pointer self, const std::string& path,
                         const config::DatabaseConfig& config) {
  auto& st = self->state;
  std::vector<uint64_t> candidates{SelfId(self)};
  for (const auto& [id, member] : st.members) candidates.push_back(id);
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
  return out;
}

/// Spawns the database actor of the normalised `path`: resolves its config, opens (or creates)
/// its namespace, and monitors it.
Status Instantiate(supervisor_pointer self, const std::string& path, database_actor* out) {
  auto& st = self->state;
  const config::DatabaseConfig* config = st.configs->Resolve(path);
  if (config == nullptr) {
    return Status::NoMatchingConfig("no database config matches " + Quote(path));
  }
  std::unique_ptr<storage::DatabaseStore> db;
  Status s =
      st.store->OpenDatabase(path, config->id, config->size_bytes, &db, config->max_instances);
  if (!s.ok()) return s;
  std::shared_ptr<storage::DatabaseStore> shared(std::move(db));
  // Published before anyone can learn of the actor, so every opener finds its target.
  std::shared_ptr<DirectReadTarget> direct;
  if (st.replication->direct_reads) direct = std::make_shared<DirectReadTarget>(shared);
  auto handle = SpawnNetworkFacing(self->system(), database_actor_impl, std::move(shared),
                                   caf::actor_cast<matcher_supervisor_actor>(self), st.idle_timeout,
                                   st.replication, PlaceDatabase(self, path, *config), direct);
  if (direct) st.replication->direct_reads->Add(handle.id(), std::move(direct));
  self->monitor(handle);
  st.running.emplace(path, handle);
  st.path_of.emplace(handle.id(), path);
  spdlog::debug("database {} instantiated (config {})", Quote(path), config->id);
  *out = handle;
  return Status::OK();
}

/// Takes the running actor of `path` out of service and tells it to stop.
void Passivate(supervisor_pointer self, const std::string& path) {
  auto& st = self->state;
  auto it = st.running.find(path);
  if (it == st.running.end()) return;
  self->send(it->second, atom::passivate_v);
  // Opens of this path now wait for its down message.
  st.stopping[path] = matcher_supervisor_state::Stopping{it->second, {}};
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

/// Puts `fresh` in force: running databases get their new budget; those no config matches any
/// more are passivated, so their next open fails with no_matching_config. Data is never dropped.
void ApplyConfigs(supervisor_pointer self, std::shared_ptr<const config::ConfigSet> fresh) {
  auto& st = self->state;
  std::vector<std::string> orphaned;
  for (auto& [path, handle] : st.running) {
    const config::DatabaseConfig* config = fresh->Resolve(path);
    if (config == nullptr) {
      orphaned.push_back(path);
    } else {
      self->send(handle, atom::limit_v, config->size_bytes);
    }
  }
  for (const auto& path : orphaned) {
    spdlog::warn("database {} matches no config after reload; it stops (its data is kept)",
                 Quote(path));
    Passivate(self, path);
  }
  st.configs = std::move(fresh);
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
  for (auto& [path, handle] : st.running) {
    const config::DatabaseConfig* config = st.configs->Resolve(path);
    if (config != nullptr) self->send(handle, atom::replicas_v, PlaceDatabase(self, path, *config));
  }
}

/// Activates the passivated databases of this node's catalog whose replicas must exchange after
/// a change of members: their replica set changed (from `old_candidates` to the current
/// members), or it includes a member in `returned` (back after being down). Running databases got
/// their new replica set already. Each activated database runs anti-entropy (filling a new
/// replica, catching up a returned one, or handing its copy over) and passivates again when idle.
void WakeAffected(supervisor_pointer self, const std::vector<uint64_t>& old_candidates,
                  const std::set<uint64_t>& returned) {
  auto& st = self->state;
  std::vector<DatabaseInfo> catalog;
  Status s = st.store->ListDatabases(&catalog);
  if (!s.ok()) {
    spdlog::error("cannot read the catalog to rebalance: {}", s.ToString());
    return;
  }
  size_t woken = 0;
  for (const auto& info : catalog) {
    if (st.running.count(info.path) > 0 || st.stopping.count(info.path) > 0) continue;
    const config::DatabaseConfig* config = st.configs->Resolve(info.path);
    if (config == nullptr) continue;
    const ReplicaSet placed = PlaceDatabase(self, info.path, *config);
    bool affected = placed.nodes != PlaceReplicas(info.path, old_candidates,
                                                  std::max<uint32_t>(1, config->replication.max));
    for (uint64_t id : placed.nodes) affected = affected || returned.count(id) > 0;
    if (!affected) continue;
    database_actor handle;
    if (Instantiate(self, info.path, &handle).ok()) ++woken;
  }
  if (woken > 0) spdlog::debug("membership changed: {} idle databases woken to rebalance", woken);
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
    ApplyConfigs(self, std::move(fresh));
    Replace(self);  // replication.min and max may have changed
  }
  spdlog::info("{}", summary);
  return summary;
}

}  // namespace

matcher_supervisor_actor::behavior_type matcher_supervisor_impl(
    supervisor_pointer self, std::shared_ptr<const config::ConfigSet> configs,
    std::string config_dir, std::shared_ptr<storage::Store> store, caf::timespan idle_timeout,
    std::shared_ptr<const ReplicationOptions> replication,
    std::shared_ptr<security::AclStore> acl) {
  self->state.acl = std::move(acl);
  self->state.replication = std::move(replication);
  self->state.configs = std::move(configs);
  self->state.config_dir = std::move(config_dir);
  self->state.store = std::move(store);
  self->state.idle_timeout = idle_timeout;

  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    auto found = st.path_of.find(msg.source.id());
    if (found == st.path_of.end()) return;
    const std::string path = found->second;
    st.path_of.erase(found);
    if (st.replication->direct_reads) st.replication->direct_reads->Remove(msg.source.id());
    const bool dropped = st.dropped.erase(msg.source.id()) > 0;
    auto running = st.running.find(path);
    if (dropped && running != st.running.end() && running->second.address() == msg.source) {
      st.running.erase(running);
    } else if (running != st.running.end() && running->second.address() == msg.source) {
      // Not passivated: the actor failed. Its next open spawns a fresh one.
      spdlog::warn("database {} stopped unexpectedly: {}", Quote(path), to_string(msg.reason));
      st.running.erase(running);
    }
    auto stopping = st.stopping.find(path);
    if (stopping == st.stopping.end()) return;
    auto waiting = std::move(stopping->second.waiting);
    st.stopping.erase(stopping);
    if (waiting.empty()) return;
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
        const config::DatabaseConfig* config = st.configs->Resolve(path);
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
        std::vector<uint64_t> old_candidates{SelfId(self)};
        for (const auto& [id, member] : st.members) old_candidates.push_back(id);
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
        // A restarted node sees every member as returned, so each database it shares with them
        // checks in (they may have taken writes while it was down).
        WakeAffected(self, old_candidates, returned);
      },
      [=](atom::dropped, const std::string& path, const database_actor& who) {
        auto it = self->state.running.find(path);
        if (it != self->state.running.end() && it->second == who) {
          self->state.dropped.emplace(who.id(), path);
        }
      },
      [=](atom::databases) -> caf::result<std::vector<DatabaseInfo>> {
        std::vector<DatabaseInfo> out;
        Status s = self->state.store->ListDatabases(&out);
        if (!s.ok()) return ToError(s);
        return out;
      },
      [=](atom::backup, const std::string& dir) -> caf::result<std::string> {
        Status s = self->state.store->Checkpoint(dir);
        if (!s.ok()) return ToError(s);
        return "wrote a checkpoint of the node's store to " + dir;
      },
      [=](atom::instances, const std::string& config_id, const InstanceOptions& options)
          -> caf::result<InstancePage> { return ListInstances(self, config_id, options); },
      [=](atom::active) -> uint64_t { return self->state.running.size(); },
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
        for (auto& [path, handle] : self->state.running) paths.push_back(path);
        for (const auto& path : paths) Passivate(self, path);
        return paths.size();
      },
      [=](atom::configs) {
        std::vector<ConfigInfo> out;
        for (const auto& c : self->state.configs->configs()) out.push_back(ToConfigInfo(c));
        return out;
      },
      [=](atom::reload) { return Reload(self); },
      [=](atom::idle, const std::string& path, const database_actor& who) {
        auto it = self->state.running.find(path);
        // Only the actor in service may passivate itself; a stale report is ignored.
        if (it != self->state.running.end() && it->second == who) Passivate(self, path);
      },
  };
}

}  // namespace kvmesh
