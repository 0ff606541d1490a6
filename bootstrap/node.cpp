#include "kvmesh/node.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "actors/client_gateway.hpp"
#include "actors/database_actor.hpp"
#include "actors/database_request.hpp"
#include "actors/matcher_supervisor.hpp"
#include "actors/membership.hpp"
#include "bootstrap/node_internal.hpp"
#include "bootstrap/node_options.hpp"
#include "bootstrap/node_testing.hpp"
#include "common/address.hpp"
#include "common/completion.hpp"
#include "common/database_backend.hpp"
#include "common/metrics.hpp"
#include "common/path.hpp"
#include "common/request_limits.hpp"
#include "config/cluster_configs.hpp"
#include "config/config_set.hpp"
#include "messages/cluster.pb.h"
#include "messages/polling_scheduler.hpp"
#include "messages/remote_exits.hpp"
#include "messages/system_config.hpp"
#include "messages/type_ids.hpp"
#include "replication/replicator.hpp"
#include "security/acl.hpp"
#include "security/identity.hpp"
#include "security/tls.hpp"
#include "storage/store.hpp"
#include "transport/client_port.hpp"
#include "transport/connection_guard.hpp"

namespace kvmesh {
/// Work for a handle's requester actor, from a caller's thread. Local only (never serialized).
using RequesterJob = std::function<void(caf::event_based_actor*)>;

}  // namespace kvmesh

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(kvmesh::RequesterJob)

namespace kvmesh {

namespace {

/// Largest message another node may send: a replicated batch carries its versions, and an
/// anti-entropy chunk may pass its byte budget by one value.
static_assert(replication::kDefaultMaxPushBytes + (4u << 20) <= 2 * kMaxRequestBytes,
              "a push of deltas, with the message around it, must fit a peer's message");
size_t MaxPeerMessageBytes(const NodeOptions& opts) {
  return std::min<size_t>(2 * kMaxRequestBytes + opts.sync_chunk_bytes,
                          std::numeric_limits<uint32_t>::max());
}

/// The actor system whose thread this is, if any: set by ThreadMarker on every thread a node's
/// system starts, so ~Node can tell it is running on one of them.
thread_local const caf::actor_system* current_node_system = nullptr;

class ThreadMarker : public caf::thread_hook {
 public:
  void init(caf::actor_system& system) override { system_ = &system; }
  void thread_started() override { current_node_system = system_; }
  void thread_terminates() override { current_node_system = nullptr; }

 private:
  const caf::actor_system* system_ = nullptr;
};

}  // namespace

/// What Database handles share with their node. Plain data: a handle may outlive the node, so it
/// never owns the actor system; `stopped` (under `mutex`) tells it the system is gone.
struct NodeCore {
  caf::actor_system* system = nullptr;
  matcher_supervisor_actor supervisor;
  caf::timespan timeout{};
  std::shared_mutex mutex;
  bool stopped = false;
  /// Running databases' stores for reads on callers' threads.
  std::shared_ptr<DirectReads> direct_reads;
  /// Closed first thing when the node stops (its own shutdown: deaths seen since are expected);
  /// direct reads, which do not take `mutex`, wait on it (DirectReadGate).
  std::shared_ptr<DirectReadGate> gate = std::make_shared<DirectReadGate>();
  /// Requests of the node's embedded handles, counted when answered (the client gateway counts
  /// the client port's into the same object; README "Metrics").
  std::shared_ptr<metrics::RequestMetrics> requests = std::make_shared<metrics::RequestMetrics>();
  /// The supervisor's placement changes, for the handles' routes (DatabaseRoute::placement).
  std::shared_ptr<const PlacementBoard> placement;
};

/// A node's fatal failure (NodeOptions::on_fatal), shared with its watchdog.
struct FatalState {
  std::mutex mutex;
  Status status;  // OK until the first failure
  std::function<void(const Status&)> on_fatal;

  /// Records `why` (the first one only), logs it, and calls on_fatal once.
  void Fail(Status why) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!status.ok()) return;
      status = why;
    }
    spdlog::error("kvmesh node failed: {}", why.message());
    if (on_fatal) on_fatal(why);
  }
};

namespace {

/// Watches the actors a node cannot work without (the client gateway and the membership actor)
/// and reports their unexpected death through `fatal`. Not a restart: a re-published gateway
/// would need a new connection guard on its port (bootstrap/connection_guard.hpp), and a
/// re-spawned membership actor would have lost the cluster's view; a node that stops cleanly and
/// starts again gets both right. Deaths once `core->gate` is closed (the node's own shutdown) are
/// expected. Local only: its handle never leaves the node.
caf::behavior NodeWatchdog(caf::event_based_actor* self, std::shared_ptr<NodeCore> core,
                           std::shared_ptr<FatalState> fatal,
                           std::vector<std::pair<caf::actor, std::string>> watched) {
  auto names = std::make_shared<std::map<caf::actor_addr, std::pair<caf::actor, std::string>>>();
  for (auto& [actor, name] : watched) {
    self->monitor(actor);
    (*names)[actor.address()] = {actor, name};
  }
  self->set_down_handler([self, core, fatal, names](caf::down_msg& msg) {
    auto it = names->find(msg.source);
    if (it == names->end() || core->gate->closing()) return;
    const std::string& name = it->second.second;
    // The actors watched under one name serve as one (the gateway and its shards): the others
    // end too, and before the failure is reported. A client watches only the gateway and takes
    // its end for the connection's, so a live shard would go on applying requests the client was
    // told failed; and a request sent after the report reaches a shard behind its exit message,
    // so it is refused, not applied. The exit goes from this actor's handle (not an address,
    // which CAF sends anonymously): the shards' RemoteExitFilter drops anonymous exits, which is
    // what became of the kills the shards used to send each other when one ended.
    for (const auto& [addr, member] : *names) {
      if (member.second == name && addr != msg.source) {
        self->send_exit(member.first, caf::exit_reason::kill);
      }
    }
    fatal->Fail(Status::Internal(
        "its " + name + " stopped unexpectedly (exit reason: " + to_string(msg.reason) +
        "); the node no longer " +
        (name == "client gateway" ? "serves clients" : "takes part in its cluster") +
        ": stop it and start it again"));
  });
  return {[](atom::tick) {}};
}

}  // namespace

struct Node::Impl {
  NodeOptions options;
  std::shared_ptr<storage::Store> store;
  /// Node-level anti-entropy: every database's vector digest and placement (clustered only).
  std::shared_ptr<replication::NodeSummary> node_summary;
  /// What the membership actor sent (clustered only).
  std::shared_ptr<MembershipCounters> membership_counters;
  std::shared_ptr<const config::ConfigSet> configs;
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> system;
  std::shared_ptr<NodeCore> core;
  /// The ACL (NodeOptions::acl_file), loaded at start and by reload_configs; the gateway checks
  /// every client request against it.
  std::shared_ptr<security::AclStore> acl;
  gateway_actor gateway;
  /// The gateway's shards (client_gateway.hpp): clients send each path's requests to one.
  std::vector<gateway_actor> gateway_shards;
  uint16_t port = 0;
  /// The client port (transport/client_port.hpp); null when the node does not listen.
  std::unique_ptr<ClientPort> client_port;
  /// The membership actor (published on the cluster port); invalid when not clustered.
  peer_actor membership;
  uint16_t cluster_port = 0;
  /// Closes connections that miss their handshake deadline (see connection_guard.hpp); invalid
  /// when the node listens on no port.
  caf::actor handshake_sweeper;
  /// TLS and the identities of connected peers (transport/connection_guard.hpp), shared by both
  /// ports, the connections membership opens, the gateway and the database actors.
  TransportSecurity security;
  /// Reports the gateway's or the membership actor's unexpected death (NodeWatchdog).
  caf::actor watchdog;
  std::shared_ptr<FatalState> fatal = std::make_shared<FatalState>();

  /// Marks the store in use every quarter of the tombstone grace period (between 1 s and
  /// 60 s), so a later start can tell how long the node was away.
  std::thread in_use_marker;
  std::mutex in_use_mutex;
  std::condition_variable in_use_cv;
  bool in_use_stop = false;

  void StartInUseMarker() {
    const auto period = std::clamp<std::chrono::milliseconds>(
        options.tombstone_grace / 4, std::chrono::seconds(1), std::chrono::seconds(60));
    in_use_marker = std::thread([this, period] {
      std::unique_lock<std::mutex> lock(in_use_mutex);
      while (!in_use_cv.wait_for(lock, period, [this] { return in_use_stop; })) {
        Status s = store->MarkInUse();
        if (!s.ok()) spdlog::warn("cannot record that the node is in use: {}", s.ToString());
      }
    });
  }

  // A start that fails part-way destroys the Impl without Shutdown.
  ~Impl() { StopInUseMarker(); }

  void StopInUseMarker() {
    {
      std::lock_guard<std::mutex> lock(in_use_mutex);
      in_use_stop = true;
    }
    in_use_cv.notify_all();
    if (in_use_marker.joinable()) in_use_marker.join();
  }

  /// Sends one request to `target` and waits for the answer.
  template <class Reply, class Handle, class... Ts>
  Result<Reply> AskActor(const Handle& target, Ts... args) {
    caf::scoped_actor self{*system};
    Result<Reply> result = Status::Internal("no answer");
    self->request(target, core->timeout, args...)
        .receive([&](Reply& reply) { result = std::move(reply); },
                 [&](caf::error& err) { result = ToStatus(err); });
    return result;
  }

  /// Sends one request to the supervisor and waits for the answer.
  template <class Reply, class... Ts>
  Result<Reply> Ask(Ts... args) {
    return AskActor<Reply>(core->supervisor, args...);
  }
};

/// The backend of a handle from Node::open: a requester actor per handle sends its requests in
/// order, and reads may go straight to the store (direct reads).
class EmbeddedDatabase final : public DatabaseBackend,
                               public std::enable_shared_from_this<EmbeddedDatabase> {
 public:
  std::shared_ptr<NodeCore> core;
  /// Sends this handle's requests one after another, so they reach the database in the order
  /// they were made, across passivations too (see kvmesh/database.hpp for the exception).
  caf::actor requester;
  /// The route to the database actor, which it replaces after a passivation. Set by Node::open
  /// before the requester starts; after that only the requester actor uses it (CAF orders one
  /// actor's message handlers), so it needs no lock.
  std::shared_ptr<OrderedRoute> ordered;

  // -- Direct reads (actors/direct_reads.hpp) --
  //
  // A read goes to the store of `actor` on the caller's thread when that gives what asking the
  // actor would: the actor runs on this node and still serves (not retired), and no earlier
  // request of this handle is in flight (so the read cannot overtake a write, nor a read be
  // answered before an earlier one).

  /// Requests of this handle sent and not yet answered.
  std::atomic<uint64_t> in_flight{0};
  /// Set when a request timed out: it may still be applied, at any time, so reads stay on the
  /// actor path (behind it) for the life of the handle.
  std::atomic<bool> no_direct{false};
  std::mutex direct_mutex;
  /// The target of `actor` (null if it has none); under direct_mutex.
  std::shared_ptr<DirectReadTarget> direct;

  /// Takes `db` as the actor of this handle's database (at Open, and on the requester after a
  /// re-open).
  void SetActor(const database_client_actor& db) {
    std::shared_ptr<DirectReadTarget> target;
    if (core->direct_reads && db && db.node() == core->system->node()) {
      target = core->direct_reads->Find(db.id());
    }
    std::lock_guard<std::mutex> lock(direct_mutex);
    direct = std::move(target);
  }

  /// The store to read directly now, or null for the actor path. Call inside a DirectReadScope
  /// whose node is open: Shutdown closes RocksDB and the actor system only after it ends.
  std::shared_ptr<DirectReadTarget> DirectTarget() {
    if (in_flight.load(std::memory_order_acquire) != 0 ||
        no_direct.load(std::memory_order_relaxed)) {
      return nullptr;
    }
    std::shared_ptr<DirectReadTarget> target;
    {
      std::lock_guard<std::mutex> lock(direct_mutex);
      target = direct;
    }
    if (!target || target->retired.load(std::memory_order_acquire)) return nullptr;
    target->MarkUsed();
    return target;
  }

  ~EmbeddedDatabase() override {
    std::shared_lock<std::shared_mutex> lock(core->mutex);
    if (!core->stopped && requester) {
      caf::anon_send(requester, RequesterJob{[](caf::event_based_actor* self) { self->quit(); }});
    }
  }

  void PutAsync(std::string key, std::string value, StatusCallback done) override;
  void GetAsync(std::string key, ResultCallback<std::string> done) override;
  void EraseAsync(std::string key, StatusCallback done) override;
  void WriteAsync(WriteBatch batch, StatusCallback done) override;
  void ListAsync(ListOptions options, ResultCallback<ListPage> done) override;
  void StatsAsync(ResultCallback<DatabaseStats> done) override;
  void ReplicationAsync(ResultCallback<ReplicationStatus> done) override;
  void WatchAsync(WatchRequest request, ResultCallback<WatchUpdate> done) override;
  void ReadAsync(ReadRequest request, ResultCallback<VersionedValue> done) override;
  void SessionWriteAsync(WriteBatch batch, ResultCallback<std::string> done) override;
  Result<std::string> Get(std::string_view key) override;
  bool Closed() const override {
    std::shared_lock<std::shared_mutex> lock(core->mutex);
    return core->stopped;
  }

  /// Reads `key` on the caller's thread if a direct read may serve it now; nothing for the actor
  /// path (which also answers when the node is stopping).
  std::optional<Result<std::string>> TryDirectGet(std::string_view key);

 protected:
  std::chrono::nanoseconds MaxWait() const override {
    // Every attempt has its deadline, and waits before it at most for a re-open and for the
    // attempts ahead of it (OrderedRoute); the bound only guards against a bug or a call made
    // from a callback that blocks the node's last free thread.
    return core->timeout * (3 * kMaxDatabaseAttempts) + std::chrono::seconds(5);
  }
};

namespace {

/// Seconds or hours, for messages.
std::string FormatAge(uint64_t ms) {
  if (ms < 2 * 3600 * 1000) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms / (3600 * 1000)) + " h";
}

/// A clustered node whose data dir was last in use longer ago than the tombstone grace period
/// may hold keys whose deletes the other replicas have collected since: its copy would bring
/// them back. It refuses to start unless told to accept that.
Status CheckNotStale(const NodeOptions& opts, const storage::Store& store) {
  const uint64_t last = store.last_in_use_ms();
  const uint64_t now =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  const uint64_t grace = static_cast<uint64_t>(opts.tombstone_grace.count());
  if (opts.accept_stale_data || last == 0 || now <= last || now - last <= grace) {
    return Status::OK();
  }
  std::vector<DatabaseInfo> databases;
  Status s = store.ListDatabases(&databases);
  // Not the system database: it deletes nothing that matters (a deleted config is a record
  // saying so, not a tombstone; only pruned history entries could come back).
  databases.erase(std::remove_if(databases.begin(), databases.end(),
                                 [](const auto& d) { return config::IsReservedPath(d.path); }),
                  databases.end());
  if (!s.ok() || databases.empty()) return s;
  return Status::InvalidArgument(
      "data dir " + Quote(opts.data_dir) + " was last in use " + FormatAge(now - last) +
      " ago, longer than the tombstone grace period (" + FormatAge(grace) + "): its " +
      std::to_string(databases.size()) +
      " databases may bring back keys deleted meanwhile, whose tombstones the other replicas "
      "have since collected. Wipe the data dir (the node then refills from its peers), or start "
      "with --accept-stale-data to keep it");
}

/// A listening port that is reachable beyond this machine without TLS.
struct PlaintextPort {
  bool cluster;  // the cluster port, else the client port
  std::string host;
  int port;  // as configured (0: any free port)
  const char* name() const { return cluster ? "cluster port" : "client port"; }
};

/// Without TLS, anyone who reaches a port can read and change every database (and, through the
/// cluster port, join the cluster). So a port listening on an address other than loopback (only
/// the listen addresses count: cluster_advertise is where peers dial, not what is exposed) is
/// refused unless `insecure_plaintext` says the operator knows; those ports go to `*exposed`
/// for the warning at start.
Status CheckPlaintextExposure(const NodeOptions& opts, std::vector<PlaintextPort>* exposed) {
  for (PlaintextPort p : {PlaintextPort{false, opts.listen_host, opts.listen_port},
                          PlaintextPort{true, opts.cluster_host, opts.cluster_port}}) {
    if (p.port < 0) continue;
    bool plaintext = false;
    Status s = CheckPlaintextListener(p.name(), p.host, p.port, opts.tls.enabled(),
                                      opts.insecure_plaintext, &plaintext);
    if (!s.ok()) return s;
    if (plaintext) exposed->push_back(std::move(p));
  }
  return Status::OK();
}

using HandlePtr = std::shared_ptr<EmbeddedDatabase>;

template <class Reply>
using Finish = std::function<void(caf::expected<Reply>)>;

// Hands a request to the handle's requester actor, which runs `send(self, deadline, finish)` there
// (an actor can wait for a response without blocking a thread); `finish` calls `once` exactly
// once.
template <class Reply, class Send>
void Submit(const HandlePtr& h, metrics::Op op, Completion<Reply> once, Send send) {
  const auto start = std::chrono::steady_clock::now();
  std::shared_lock<std::shared_mutex> lock(h->core->mutex);
  if (h->core->stopped) {
    lock.unlock();  // `once` may call into this handle again
    h->core->requests->Record(op, Code::kUnavailable, std::chrono::steady_clock::now() - start);
    once(Status::Unavailable("the node is stopped"), Reply{});
    return;
  }
  // Counted until answered (a job dropped unrun leaves it counted: the node is stopping).
  h->in_flight.fetch_add(1, std::memory_order_relaxed);
  // From the call on: the database refuses the request once the caller may have given up on it.
  const Deadline deadline = Deadline::In(h->core->timeout);
  // The arguments (a put's key and value) are moved along, not copied, on their way to the
  // message; the job runs once.
  caf::anon_send(
      h->requester, RequesterJob{[h, op, start, once, deadline,
                                  send = std::move(send)](caf::event_based_actor* self) mutable {
        Finish<Reply> finish = [h, op, start, once](caf::expected<Reply> reply) {
          Status status = reply ? Status::OK() : ToStatus(reply.error());
          h->core->requests->Record(op, status.code(), std::chrono::steady_clock::now() - start);
          if (status.code() == Code::kTimeout) {
            h->no_direct.store(true, std::memory_order_relaxed);
          }
          // Before `once`: the answer is in, so what the request wrote is in RocksDB.
          h->in_flight.fetch_sub(1, std::memory_order_release);
          if (reply) {
            once(std::move(status), std::move(*reply));
          } else {
            once(std::move(status), Reply{});
          }
        };
        send(self, deadline, std::move(finish));
      }});
}

// A request that is not a coalesced write: sent after the writes taken before it.
template <class Reply, class... Ts>
void Call(const HandlePtr& h, metrics::Op op, Completion<Reply> once, Ts... args) {
  Submit<Reply>(h, op, std::move(once),
                [h, args = std::make_tuple(std::move(args)...)](
                    caf::event_based_actor* self, Deadline deadline, Finish<Reply> finish) mutable {
                  std::apply(
                      [&](auto&... xs) {
                        h->ordered->Request<Reply>(self, std::move(finish), deadline,
                                                   std::move(xs)...);
                      },
                      args);
                });
}

// A write that may share a message with the writes made together with it: the requester takes
// it, and sends what it has taken once the jobs queued before its send job ran (a job it sends
// itself, which queues behind them), or earlier when another request comes. Under load that is
// one message, one reply and one group commit for many writes; alone it costs one more job.
void CallWrite(const HandlePtr& h, metrics::Op op, CoalescedWrite::Made made, WriteBatch batch,
               std::function<void(Status)> done) {
  Submit<atom::ok>(
      h, op, StatusCompletion<atom::ok>(std::move(done)),
      [h, made, batch = std::move(batch)](caf::event_based_actor* self, Deadline deadline,
                                          Finish<atom::ok> finish) mutable {
        if (!h->ordered->TakeWrite({made, std::move(batch), deadline, std::move(finish)})) return;
        self->send(self,
                   RequesterJob{[h](caf::event_based_actor* s) { h->ordered->FlushWrites(s); }});
      });
}

}  // namespace

Node::Node(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Status Node::Start(NodeOptions options, std::unique_ptr<Node>* out) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  const NodeOptions& opts = impl->options;
  // Everything that can be checked is checked before the store is opened: a bad option must not
  // leave a data dir behind (or touch an existing one).
  Status s = ValidateNodeOptions(opts);
  if (!s.ok()) return s;
  std::vector<PlaintextPort> plaintext;
  s = CheckPlaintextExposure(opts, &plaintext);
  if (!s.ok()) return s;
  s = LoadNodeConfigs(opts, &impl->configs);
  if (!s.ok()) return s;
  // TLS files are checked before anything is opened too: a node whose certificates do not work
  // can reach no peer and no client.
  if (opts.tls.enabled()) {
    s = security::TlsContext::Load(opts.tls, &impl->security.tls);
    if (!s.ok()) return s;
    if (impl->security.tls->identity().role != security::PeerRole::kNode) {
      return Status::InvalidArgument("--tls-cert " + opts.tls.cert_file +
                                     " is the client "
                                     "certificate of \"" +
                                     impl->security.tls->identity().name +
                                     "\"; a node needs a node certificate (kvmesh cert node)");
    }
  }
  impl->security.directory =
      std::make_shared<security::PeerDirectory>(impl->security.tls != nullptr);
  impl->acl = std::make_shared<security::AclStore>(opts.acl_file);
  s = impl->acl->Load();
  if (!s.ok()) return s;
  if (impl->acl->configured()) {
    spdlog::info("access control: {} principals from {}", impl->acl->current()->size(),
                 opts.acl_file);
  } else if (opts.tls.enabled()) {
    spdlog::info(
        "access control: no ACL file; every client with a valid certificate may do "
        "everything");
  }
  // A client certificate the ACL does not name is refused at the TLS handshake: it could do
  // nothing anyway, and a revoked principal must not keep connections and buffers.
  impl->security.admit = [acl = impl->acl](const security::PeerIdentity& peer) -> Status {
    if (!acl->configured()) return Status::OK();
    auto current = acl->current();
    if (!current) return Status::PermissionDenied("no ACL is loaded");
    return current->CheckKnown(peer.name);
  };

  const bool listen = opts.listen_port >= 0;
  const bool clustered = opts.cluster_port >= 0;
  std::string advertised_host = opts.cluster_host;
  uint16_t advertised_port = 0;  // 0: the cluster port itself
  if (!opts.cluster_advertise.empty()) {
    s = ParseHostPort(opts.cluster_advertise, &advertised_host, &advertised_port);
    if (!s.ok()) return s;  // ValidateNodeOptions checked it
  }

  storage::StoreOptions store_options;
  store_options.path = opts.data_dir;
  store_options.sync = opts.sync;
  store_options.sync_period = opts.sync_period;
  store_options.max_value_bytes = opts.max_value_bytes;
  store_options.space.low_bytes = opts.low_space_bytes;
  store_options.space.low_percent = opts.low_space_percent;
  store_options.space.reserve_bytes = opts.space_reserve_bytes;
  store_options.space.check_interval = opts.space_check_interval;
  s = storage::Store::Open(store_options, &impl->store);
  if (!s.ok()) return s;
  if (clustered) {
    s = CheckNotStale(opts, *impl->store);
    if (!s.ok()) return s;
    s = impl->store->MarkInUse();
    if (!s.ok()) return s;
    impl->StartInUseMarker();
  }

  impl->cfg = std::make_unique<caf::actor_system_config>();
  impl->cfg->add_thread_hook<ThreadMarker>();
  const ActorSystemSettings system_settings = NodeActorSystemSettings(opts, listen || clustered);
  if (Status s = ConfigureActorSystem(system_settings, impl->cfg.get()); !s.ok()) return s;
  impl->system = std::make_unique<caf::actor_system>(*impl->cfg);
  NameNetworkThread(*impl->system);

  impl->core = std::make_shared<NodeCore>();
  impl->core->system = impl->system.get();
  impl->core->timeout = std::chrono::duration_cast<caf::timespan>(opts.request_timeout);
  // Direct reads (actors/direct_reads.hpp), clustered or not: a read served by another node's
  // copy goes through the actors, as one at a read level does.
  impl->core->direct_reads = std::make_shared<DirectReads>();
  auto replication = std::make_shared<ReplicationOptions>();
  replication->node_id = impl->store->node_id();
  replication->clustered = clustered;
  replication->timeout = std::chrono::duration_cast<caf::timespan>(opts.replication_timeout);
  replication->sync_interval = std::chrono::duration_cast<caf::timespan>(opts.sync_interval);
  replication->chunk_bytes = std::max<size_t>(opts.sync_chunk_bytes, 4096);
  replication->tombstone_grace = std::chrono::duration_cast<caf::timespan>(opts.tombstone_grace);
  replication->faults = opts.link_faults;
  replication->direct_reads = impl->core->direct_reads;
  replication->peers = impl->security.directory;
  replication->rebalance_wave = opts.rebalance_wave;
  replication->passivation_delay =
      std::chrono::duration_cast<caf::timespan>(opts.passivation_delay_for_testing);
  replication->placement_board = std::make_shared<PlacementBoard>();
  impl->core->placement = replication->placement_board;
  if (clustered) {
    // Every database's vector digest, read once here and then kept current by every write
    // (before any database opens), for the node-level anti-entropy round.
    impl->node_summary = std::make_shared<replication::NodeSummary>(impl->store->node_id());
    s = impl->store->ForEachVectorDigest(
        [summary = impl->node_summary.get()](const std::string& path, uint64_t digest) {
          summary->SetDigest(path, digest);
        });
    if (!s.ok()) return s;
    impl->store->set_vector_observer(
        [summary = impl->node_summary](const std::string& path, uint64_t digest) {
          summary->SetDigest(path, digest);
        });
    replication->node_summary = impl->node_summary;
  }
  impl->core->supervisor = impl->system->spawn(
      matcher_supervisor_impl, impl->configs, opts.configs ? std::string() : opts.config_dir,
      impl->store, std::chrono::duration_cast<caf::timespan>(opts.idle_timeout),
      std::shared_ptr<const ReplicationOptions>(replication), impl->acl,
      impl->security.tls ? impl->security.tls->identity().name
                         : FormatNodeId(impl->store->node_id()));
  // `kvmesh members` shows this node's disk space; weak: the actors must not keep the store.
  LocalStatusFiller fill_local_status =
      [weak = std::weak_ptr<storage::Store>(impl->store)](MemberStatus& m) {
        if (auto store = weak.lock()) {
          const storage::SpaceStatus space = store->space();
          m.low_space = space.low;
          m.free_disk_bytes = space.free_bytes;
        }
      };
  if (clustered) {
    MembershipOptions membership;
    membership.fill_local_status = fill_local_status;
    // Drains and rebalancing as the supervisor last published them.
    membership.fill_member_status =
        [board = std::shared_ptr<const PlacementBoard>(replication->placement_board)](
            MemberStatus& m) { board->Fill(m); };
    membership.seeds = opts.seeds;
    membership.heartbeat_interval =
        std::chrono::duration_cast<caf::timespan>(opts.heartbeat_interval);
    membership.failure_timeout = std::chrono::duration_cast<caf::timespan>(opts.failure_timeout);
    membership.replica_grace = std::chrono::duration_cast<caf::timespan>(opts.replica_grace);
    membership.connect_timeout = std::chrono::duration_cast<caf::timespan>(opts.peer_timeout);
    membership.faults = opts.link_faults;
    membership.security = impl->security;
    membership.max_message_bytes = MaxPeerMessageBytes(opts);
    membership.node_summary = impl->node_summary;
    membership.sync_interval = replication->sync_interval;
    impl->membership_counters = std::make_shared<MembershipCounters>();
    membership.counters = impl->membership_counters;
    impl->membership = SpawnNetworkFacing(*impl->system, membership_impl, impl->store->node_id(),
                                          impl->core->supervisor, std::move(membership));
  }
  auto spawn_gateway = [&](std::vector<caf::actor> shards) {
    return SpawnNetworkFacing(*impl->system, client_gateway_impl, impl->core->supervisor,
                              impl->core->timeout, impl->store->node_id(), impl->membership,
                              DescribeSync(opts.sync, opts.sync_period), fill_local_status,
                              GatewaySecurity{impl->security.directory, impl->acl},
                              impl->core->requests, impl->core->placement, std::move(shards),
                              GatewayDirectReads{impl->core->direct_reads, impl->core->gate});
  };
  // One shard per worker thread: one gateway handled every client request of the node in turn,
  // a ceiling on remote throughput whatever the cores (see client_gateway.hpp).
  std::vector<caf::actor> shards;
  if (listen) {
    for (size_t i = 0; i < system_settings.worker_threads; ++i) {
      impl->gateway_shards.push_back(spawn_gateway({}));
      shards.push_back(caf::actor_cast<caf::actor>(impl->gateway_shards.back()));
    }
  }
  impl->gateway = spawn_gateway(std::move(shards));
  {
    std::vector<std::pair<caf::actor, std::string>> watched;
    watched.emplace_back(caf::actor_cast<caf::actor>(impl->gateway), "client gateway");
    for (const gateway_actor& shard : impl->gateway_shards) {
      watched.emplace_back(caf::actor_cast<caf::actor>(shard), "client gateway");
    }
    if (impl->membership) {
      watched.emplace_back(caf::actor_cast<caf::actor>(impl->membership), "membership actor");
    }
    impl->fatal->on_fatal = opts.on_fatal;
    impl->watchdog = impl->system->spawn(NodeWatchdog, impl->core, impl->fatal, std::move(watched));
  }
  std::unique_ptr<Node> node(new Node(std::move(impl)));
  if (listen || clustered) {
    // CAF registers two services any peer can look up by name: a config store without bounds
    // and a remote spawner. A kvmesh node offers neither.
    node->impl_->system->registry().erase(caf::atom("ConfigServ"));
    node->impl_->system->registry().erase(caf::atom("SpawnServ"));
  }
  // Both ports are guarded the same way (connection_guard.hpp): the cluster port is as open to
  // a hostile peer as the client port. A peer message can be larger than a client request: a
  // replicated batch carries its versions, and an anti-entropy chunk may pass its byte budget
  // by one value.
  ListenerLimits limits;
  limits.max_connections = opts.max_connections;
  limits.max_connections_per_address = opts.max_connections_per_address;
  limits.handshake_timeout = std::chrono::duration_cast<caf::timespan>(opts.peer_timeout);
  std::vector<std::shared_ptr<ConnectionGuard>> guards;
  if (clustered) {
    Impl& started = *node->impl_;
    ListenerLimits cluster_limits = limits;
    cluster_limits.name = "cluster port";
    cluster_limits.max_message_bytes = MaxPeerMessageBytes(opts);
    cluster_limits.nodes_only = true;
    std::shared_ptr<ConnectionGuard> guard;
    Status published =
        PublishGuarded(*started.system, caf::actor_cast<caf::strong_actor_ptr>(started.membership),
                       started.system->message_types(caf::detail::type_list<peer_actor>{}),
                       opts.cluster_host, static_cast<uint16_t>(opts.cluster_port), cluster_limits,
                       started.security, &started.cluster_port, &guard);
    if (!published.ok()) {
      return Status::IOError("cannot listen for cluster peers on " + published.message());
    }
    guards.push_back(std::move(guard));
  }
  if (listen) {
    Impl& started = *node->impl_;
    ClientPortOptions client;
    client.host = opts.listen_host;
    client.port = static_cast<uint16_t>(opts.listen_port);
    client.limits = limits;
    client.limits.name = "client port";
    client.limits.max_message_bytes = kMaxRequestBytes;
    client.security = started.security;
    // Not the supervisor: it opens, drops, backs up and restores databases.
    client.run_on_port = {client_gateway_state::name, database_state::name};
    client.gateway = caf::actor_cast<caf::strong_actor_ptr>(started.gateway);
    for (const gateway_actor& shard : started.gateway_shards) {
      client.shards.push_back(caf::actor_cast<caf::strong_actor_ptr>(shard));
    }
    client.interface = started.system->message_types(caf::detail::type_list<gateway_actor>{});
    client.peer_timeout = std::chrono::duration_cast<caf::timespan>(opts.peer_timeout);
    client.busy_poll = std::chrono::duration_cast<caf::timespan>(opts.busy_poll);
    Status opened = ClientPort::Open(*started.system, std::move(client), &started.client_port);
    if (!opened.ok()) return Status::IOError("cannot listen on " + opened.message());
    started.port = started.client_port->port();
  }
  for (const PlaintextPort& port : plaintext) {
    const std::string address =
        port.host + ":" +
        std::to_string(port.cluster ? node->impl_->cluster_port : node->impl_->port);
    spdlog::warn(
        "INSECURE: the {} listens on {} in plaintext (--insecure-plaintext, no TLS): anyone who "
        "can reach {} can read and change every database",
        port.name(), address, address);
  }
  if (!guards.empty()) {
    Impl& started = *node->impl_;
    started.handshake_sweeper = SpawnHandshakeSweeper(
        *started.system, std::move(guards),
        std::max<caf::timespan>(limits.handshake_timeout / 4, std::chrono::milliseconds(10)));
  }
  if (clustered) {
    Impl& started = *node->impl_;
    proto::Member me;
    me.set_node_id(started.store->node_id());
    me.set_host(advertised_host);
    me.set_cluster_port(advertised_port > 0 ? advertised_port : started.cluster_port);
    me.set_client_port(started.port);
    me.set_sync(DescribeSync(opts.sync, opts.sync_period));
    if (started.security.tls) me.set_name(started.security.tls->identity().name);
    me.set_incarnation(
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count()));
    // From a local actor: the membership actor refuses `open` from anonymous or remote senders.
    caf::scoped_actor sender{*started.system};
    sender->send(started.membership, atom::open_v, me.SerializeAsString());
  }
  *out = std::move(node);
  return Status::OK();
}

namespace {

// Stops the actors and closes the store. Must not run on one of the node's own threads: it waits
// for every actor, including the one it would be running in. With `destroy_system` false the
// stopped actor system object is left alone (see ~Node).
void Shutdown(Node::Impl& impl, bool destroy_system, bool crash = false) {
  impl.StopInUseMarker();
  // Waits for calls that are spawning their request, and refuses new ones.
  {
    std::unique_lock<std::shared_mutex> lock(impl.core->mutex);
    impl.core->stopped = true;
  }
  impl.core->gate->Close();
  if (crash) {
    // Connections drop at once, without a word to the peers.
    // From a local actor: the gateway and the membership actor drop anonymous exits
    // (remote_exits.hpp).
    StopLocally(*impl.system, impl.membership, caf::exit_reason::kill);
    StopLocally(*impl.system, impl.gateway, caf::exit_reason::kill);
    for (const gateway_actor& shard : impl.gateway_shards) {
      StopLocally(*impl.system, shard, caf::exit_reason::kill);
    }
  }
  // A crash drops client connections at once; a stop keeps them until the gateway is gone, so
  // requests answered meanwhile reach their clients.
  if (crash && impl.client_port) impl.client_port->Close();
  if (impl.cluster_port != 0)
    impl.system->middleman().unpublish(impl.membership, impl.cluster_port);
  if (impl.handshake_sweeper) {
    caf::anon_send_exit(impl.handshake_sweeper, caf::exit_reason::kill);
    impl.handshake_sweeper = nullptr;
  }
  if (impl.watchdog) {
    caf::anon_send_exit(impl.watchdog, caf::exit_reason::user_shutdown);
    impl.watchdog = nullptr;
  }
  // The membership actor's exit handler ignores exits; kill is unconditional. From a local
  // actor: the membership actor drops anonymous exits (remote_exits.hpp).
  StopLocally(*impl.system, impl.membership, caf::exit_reason::kill);
  impl.membership = nullptr;
  // The supervisor takes the database actors down with it, and the (published) gateway stops
  // when it sees the supervisor go: a published actor must stop before the system goes.
  caf::anon_send_exit(impl.core->supervisor, caf::exit_reason::user_shutdown);
  impl.gateway = nullptr;
  impl.gateway_shards.clear();
  impl.core->supervisor = nullptr;
  impl.system->await_all_actors_done();
  // Its proxies are the system's: they go before it.
  if (impl.client_port) impl.client_port->Close();
  // Direct reads that began before the gate closed end within microseconds (the gateway shards'
  // ended with the shards, above; the embedded handles' may run on any thread).
  impl.core->gate->WaitForReaders();
  // Close RocksDB explicitly: a Database handle kept by the application may still reference an
  // actor (and so the store); the data dir must be free once the node is stopped.
  impl.store->Close();
  if (destroy_system) impl.system.reset();
  impl.store.reset();
}

}  // namespace

Node::~Node() {
  if (!impl_) return;  // crashed (Node::Crash)
  if (current_node_system == impl_->system.get()) {
    // The last owner of the node let go inside a callback, on one of the node's threads: waiting
    // for the actors here would wait for this very thread. Another thread finishes the job.
    // Destroying a CAF 0.17 actor system whose last owner let go on one of its threads was seen
    // to block forever, so the stopped system object is leaked (its threads have exited); the
    // data is safe and the data dir free. Do not let a callback own the node.
    spdlog::error(
        "kvmesh node destroyed on one of its own threads (a callback owned it); "
        "stopping it from another thread and leaking its stopped actor system");
    std::thread([impl = std::move(impl_)] {
      Shutdown(*impl, /*destroy_system=*/false);
      (void)impl->system.release();
      (void)impl->cfg.release();
    }).detach();
    return;
  }
  Shutdown(*impl_, /*destroy_system=*/true);
}

void Node::Crash(std::unique_ptr<Node> node) {
  if (!node) return;
  Shutdown(*node->impl_, /*destroy_system=*/true, /*crash=*/true);
  node->impl_.reset();
}

Database Node::open(std::string_view path) const {
  // The one place an embedded open normalises its path; the layers below take it as it is.
  std::string normalized;
  Status s = NormalizeDatabasePath(path, &normalized);
  if (!s.ok()) s = Status(s.code(), s.message() + ": " + Quote(path));
  database_client_actor actor;
  // Read before asking (as OrderedRoute::Reopen does): a change of placement while the open is
  // under way makes the handle's first request open again.
  const uint64_t epoch = impl_->core->placement ? impl_->core->placement->epoch() : 0;
  if (s.ok()) {
    Result<database_client_actor> opened =
        impl_->Ask<database_client_actor>(atom::open_v, normalized);
    if (opened.ok()) {
      actor = std::move(*opened);
    } else {
      s = opened.status();
    }
  }
  if (!s.ok()) return DatabaseBackend::MakeUnusable(std::move(s), std::move(normalized));
  auto handle = std::make_shared<EmbeddedDatabase>();
  handle->core = impl_->core;
  auto route = std::make_shared<DatabaseRoute>();
  route->supervisor = impl_->core->supervisor;
  route->path = normalized;
  route->timeout = impl_->core->timeout;
  route->placement = impl_->core->placement;
  // The route lives inside the handle; a weak reference avoids a cycle.
  route->on_reopen =
      [weak = std::weak_ptr<EmbeddedDatabase>(handle)](const database_client_actor& db) {
        if (auto h = weak.lock()) h->SetActor(db);
      };
  // The requester keeps the deadlines of its requests to local actors itself (see
  // LocalDeadlines): a CAF request timeout would wake CAF's clock thread twice per request.
  auto deadlines = std::make_shared<LocalDeadlines>();
  route->local_deadlines = deadlines;
  handle->SetActor(actor);
  handle->ordered = std::make_shared<OrderedRoute>(std::move(route), std::move(actor), epoch);
  // The requester stops with the node (it watches the supervisor) or with its last handle.
  handle->requester = impl_->system->spawn(
      [supervisor = impl_->core->supervisor, deadlines = std::move(deadlines),
       ordered = std::weak_ptr(handle->ordered)](caf::event_based_actor* self) -> caf::behavior {
        deadlines->set_schedule_check(
            [self, weak = std::weak_ptr<LocalDeadlines>(deadlines)](caf::timespan period) {
              self->delayed_send(self, period, RequesterJob{[weak](caf::event_based_actor*) {
                                   if (auto d = weak.lock()) d->ExpireDue();
                                 }});
            });
        DropPendingOnExit(self, deadlines);
        // Writes taken and not sent hold the handle (their callbacks do): dropped with the
        // requester, their callbacks answer unavailable.
        self->attach_functor([ordered] {
          if (auto route = ordered.lock()) route->DropWrites();
        });
        self->monitor(supervisor);
        self->set_down_handler([self](caf::down_msg&) { self->quit(); });
        return {[self](RequesterJob& job) { job(self); }};
      });
  return DatabaseBackend::MakeHandle(std::move(handle), std::move(normalized));
}

Result<std::vector<DatabaseInfo>> Node::databases() const {
  return impl_->Ask<std::vector<DatabaseInfo>>(atom::databases_v);
}

Result<InstancePage> Node::instances(std::string_view config_id,
                                     const InstanceOptions& options) const {
  return impl_->Ask<InstancePage>(atom::instances_v, std::string(config_id), options);
}

namespace {

/// Asks the database actor serving the normalised form of `path` for `args..., deadline`. A
/// database that passivates between the open and the request bounces it unapplied
/// (kUnavailable): it is opened again, a bounded number of times.
template <class Reply, class Impl, class... Ts>
Result<Reply> AskDatabase(Impl& impl, std::string_view path, Ts... args) {
  std::string normalized;
  Status s = NormalizeDatabasePath(path, &normalized);
  if (!s.ok()) return s;
  for (int attempt = 0;; ++attempt) {
    Result<database_client_actor> db =
        impl.template Ask<database_client_actor>(atom::open_v, normalized);
    if (!db.ok()) return db.status();
    Result<Reply> r = impl.template AskActor<Reply>(*db, args..., Deadline::In(impl.core->timeout));
    if (r.ok() || r.status().code() != Code::kUnavailable || attempt == 2) return r;
  }
}

}  // namespace

Status Node::drop(std::string_view path) const {
  return AskDatabase<atom::ok>(*impl_, path, atom::drop_v).status();
}

Result<std::string> Node::backup(std::string_view path, const std::string& dir) const {
  return AskDatabase<std::string>(*impl_, path, atom::backup_v, dir);
}

Result<std::string> Node::backup_all(const std::string& dir) const {
  return impl_->Ask<std::string>(atom::backup_v, dir);
}

Result<std::string> Node::restore(std::string_view path, const std::string& dir) const {
  return AskDatabase<std::string>(*impl_, path, atom::restore_v, dir);
}

Result<std::string> Node::drain_node(uint64_t node_id, std::string_view requested_by) const {
  return impl_->Ask<std::string>(atom::drain_v, node_id, true, std::string(requested_by));
}

Result<std::string> Node::undrain_node(uint64_t node_id, std::string_view requested_by) const {
  return impl_->Ask<std::string>(atom::drain_v, node_id, false, std::string(requested_by));
}

Result<std::vector<ConfigInfo>> Node::configs() const {
  return impl_->Ask<std::vector<ConfigInfo>>(atom::configs_v);
}

Result<std::string> Node::reload_configs() const {
  return impl_->Ask<std::string>(atom::reload_v);
}

Result<ConfigApplyResult> Node::apply_configs(std::string_view yaml,
                                              const ConfigApplyOptions& options) const {
  return impl_->Ask<ConfigApplyResult>(atom::configs_v, atom::put_v, std::string(yaml), options);
}

Result<ConfigApplyResult> Node::delete_config(std::string_view id,
                                              std::string_view applied_by) const {
  return impl_->Ask<ConfigApplyResult>(atom::configs_v, atom::erase_v, std::string(id),
                                       std::string(applied_by));
}

Result<std::vector<ConfigHistoryEntry>> Node::config_history(std::string_view id) const {
  return impl_->Ask<std::vector<ConfigHistoryEntry>>(atom::configs_v, atom::get_v, std::string(id));
}

Result<std::vector<MemberStatus>> Node::members() const {
  if (!impl_->membership) {
    const storage::SpaceStatus space = impl_->store->space();
    MemberStatus me{impl_->store->node_id(),
                    "",
                    impl_->port,
                    true,
                    true,
                    0,
                    DescribeSync(impl_->options.sync, impl_->options.sync_period)};
    me.low_space = space.low;
    me.free_disk_bytes = space.free_bytes;
    return std::vector<MemberStatus>{me};
  }
  return impl_->AskActor<std::vector<MemberStatus>>(impl_->membership, atom::members_v);
}

Result<uint64_t> Node::active_databases() const {
  return impl_->Ask<uint64_t>(atom::active_v);
}

Result<uint64_t> Node::passivate_all() const {
  return impl_->Ask<uint64_t>(atom::passivate_v);
}

namespace {

/// `<prefix>_waits_total{outcome}` and `<prefix>_polling_seconds_total` of one BusyPoll's stats.
void RenderPolling(metrics::TextWriter* out, const std::string& prefix, const char* waits_help,
                   const char* seconds_help, const BusyPoll::Stats& polls) {
  const std::string waits = prefix + "_waits_total";
  const std::string seconds = prefix + "_polling_seconds_total";
  out->Family(waits, waits_help, "counter");
  out->Sample(waits, {{"outcome", "found_polling"}}, static_cast<double>(polls.found_polling));
  out->Sample(waits, {{"outcome", "slept"}}, static_cast<double>(polls.slept));
  out->Family(seconds, seconds_help, "counter");
  out->Sample(seconds, {}, static_cast<double>(polls.polling_ns) / 1e9);
}

}  // namespace

Result<std::string> Node::metrics() const {
  using metrics::Labels;
  // Gathered first, so that an error leaves nothing half-written.
  Result<uint64_t> running = active_databases();
  if (!running.ok()) return running.status();
  Result<std::vector<ConfigInfo>> configs = this->configs();
  if (!configs.ok()) return configs.status();
  Result<std::vector<MemberStatus>> members = this->members();
  if (!members.ok()) return members.status();
  Result<std::vector<ReplicationStatus>> replication =
      impl_->Ask<std::vector<ReplicationStatus>>(atom::status_v);
  if (!replication.ok()) return replication.status();
  std::map<std::string, storage::Store::ConfigUsage> usage;
  if (Status s = impl_->store->UsageByConfig(&usage); !s.ok()) return s;

  metrics::TextWriter out;
  impl_->core->requests->Render(&out);

  out.Family("kvmesh_databases_running", "Database actors running now (not passivated).", "gauge");
  out.Sample("kvmesh_databases_running", {}, static_cast<double>(*running));
  out.Family("kvmesh_client_connections",
             "Connections open on the client port (0 when the node does not listen).", "gauge");
  out.Sample("kvmesh_client_connections", {},
             impl_->client_port ? static_cast<double>(impl_->client_port->connections()) : 0.0);
  // Whether busy polling (NodeOptions::busy_poll) pays: the wake-ups it saved against its CPU,
  // for the client port's thread and for the node's CAF workers (messages/polling_scheduler.hpp;
  // all 0 when they do not poll: busy_poll 0, or the stealing scheduler).
  RenderPolling(&out, "kvmesh_client_port",
                "Waits of the client port's thread, by how they ended: found_polling (a request, "
                "heartbeat or wake-up came while it polled: none was needed) or slept (every "
                "wait that blocked, timeouts included).",
                "Time the client port's thread spent polling (NodeOptions::busy_poll), found or "
                "not: an upper bound of the CPU polling took.",
                impl_->client_port ? impl_->client_port->busy_poll_stats() : BusyPoll::Stats{});
  RenderPolling(&out, "kvmesh_worker",
                "Waits of the node's CAF workers for an actor to run, by how they ended: "
                "found_polling (one was queued while they polled, perhaps taken by another "
                "worker) or slept.",
                "Time the node's CAF workers spent polling their queue (NodeOptions::busy_poll), "
                "found or not: an upper bound of the CPU polling took.",
                WorkerPollingStats(*impl_->system).value_or(BusyPoll::Stats{}));
  // By config, never by database: the number of series stays that of configs.
  out.Family("kvmesh_databases_instantiated",
             "Databases instantiated on this node (its catalog), by config id.", "gauge");
  for (const auto& [id, u] : usage) {
    out.Sample("kvmesh_databases_instantiated", {{"config", id}}, static_cast<double>(u.databases));
  }
  out.Family("kvmesh_config_used_bytes",
             "Bytes (keys plus values) used on this node by the databases of a config.", "gauge");
  for (const auto& [id, u] : usage) {
    out.Sample("kvmesh_config_used_bytes", {{"config", id}}, static_cast<double>(u.used_bytes));
  }
  out.Family("kvmesh_config_limit_bytes",
             "Size limit of each database of a config (the config's size).", "gauge");
  for (const ConfigInfo& c : *configs) {
    out.Sample("kvmesh_config_limit_bytes", {{"config", c.id}}, static_cast<double>(c.size_bytes));
  }

  // Replication, summed over the running databases that replicate to each peer node.
  struct Peer {
    uint64_t pending = 0;
    bool reachable = true;
  };
  std::map<uint64_t, Peer> peers;
  for (const ReplicationStatus& r : *replication) {
    for (const PeerReplicaStatus& p : r.peers) {
      Peer& peer = peers[p.node_id];
      peer.pending += p.pending_deltas;
      peer.reachable = peer.reachable && p.reachable;
    }
  }
  out.Family("kvmesh_replication_pending_deltas",
             "Deltas queued for a peer node and not yet acknowledged, over the running databases.",
             "gauge");
  for (const auto& [id, p] : peers) {
    out.Sample("kvmesh_replication_pending_deltas", {{"peer", FormatNodeId(id)}},
               static_cast<double>(p.pending));
  }
  out.Family("kvmesh_replication_peer_reachable",
             "1 if every running database replicating to a peer node reaches it now, else 0.",
             "gauge");
  for (const auto& [id, p] : peers) {
    out.Sample("kvmesh_replication_peer_reachable", {{"peer", FormatNodeId(id)}},
               p.reachable ? 1 : 0);
  }

  uint64_t up = 0;
  for (const MemberStatus& m : *members) up += m.alive ? 1 : 0;
  out.Family("kvmesh_members",
             "Cluster members as this node sees them (itself included), by state.", "gauge");
  out.Sample("kvmesh_members", {{"state", "up"}}, static_cast<double>(up));
  out.Sample("kvmesh_members", {{"state", "down"}}, static_cast<double>(members->size() - up));
  if (const auto& counters = impl_->membership_counters) {
    auto value = [](const std::atomic<uint64_t>& c) {
      return static_cast<double>(c.load(std::memory_order_relaxed));
    };
    out.Family("kvmesh_membership_messages_total",
               "Membership messages this node sent (SWIM): pings (its own probes and those made "
               "for another member's ping-req), ping-reqs, acks (answers to pings, ping-reqs and "
               "joins) and joins.",
               "counter");
    out.Sample("kvmesh_membership_messages_total", {{"kind", "ping"}}, value(counters->pings));
    out.Sample("kvmesh_membership_messages_total", {{"kind", "ping_req"}},
               value(counters->ping_reqs));
    out.Sample("kvmesh_membership_messages_total", {{"kind", "ack"}}, value(counters->acks));
    out.Sample("kvmesh_membership_messages_total", {{"kind", "join"}}, value(counters->joins));
    out.Family("kvmesh_membership_bytes_total",
               "Payload bytes of the membership messages this node sent.", "counter");
    out.Sample("kvmesh_membership_bytes_total", {}, value(counters->bytes));
    out.Family("kvmesh_membership_events_total",
               "Members this node suspected (its probes got no ack) and declared down (not "
               "refuted in time), and suspicions of itself it refuted.",
               "counter");
    out.Sample("kvmesh_membership_events_total", {{"kind", "suspected"}},
               value(counters->suspicions));
    out.Sample("kvmesh_membership_events_total", {{"kind", "declared_down"}},
               value(counters->declared_down));
    out.Sample("kvmesh_membership_events_total", {{"kind", "refuted"}},
               value(counters->refutations));
  }
  out.Family("kvmesh_member_up",
             "1 while a member answers probes (directly or through others), 0 once it is down.",
             "gauge");
  for (const MemberStatus& m : *members) {
    out.Sample("kvmesh_member_up", {{"node", FormatNodeId(m.node_id)}}, m.alive ? 1 : 0);
  }
  // Drains (README "Draining a node"): one series per drained or draining member only.
  out.Family("kvmesh_member_drain_databases_left",
             "Users' databases a draining or drained member still holds, as it last reported.",
             "gauge");
  for (const MemberStatus& m : *members) {
    if (m.placement.empty()) continue;
    out.Sample("kvmesh_member_drain_databases_left", {{"node", FormatNodeId(m.node_id)}},
               static_cast<double>(m.drain_left));
  }
  out.Family("kvmesh_rebalance_pending_databases",
             "Databases of this node still to rebalance after a membership change or a drain "
             "(waiting for their wave, or in one).",
             "gauge");
  for (const MemberStatus& m : *members) {
    if (m.self) {
      out.Sample("kvmesh_rebalance_pending_databases", {},
                 static_cast<double>(m.rebalance_pending));
    }
  }

  if (const auto& summary = impl_->node_summary) {
    out.Family("kvmesh_anti_entropy_messages_total",
               "Anti-entropy requests this node sent: node-level totals (one per member per "
               "round) and pages, and per-database pulls.",
               "counter");
    out.Sample("kvmesh_anti_entropy_messages_total", {{"kind", "node_totals"}},
               static_cast<double>(summary->totals_sent()));
    out.Sample("kvmesh_anti_entropy_messages_total", {{"kind", "node_page"}},
               static_cast<double>(summary->pages_sent()));
    out.Sample("kvmesh_anti_entropy_messages_total", {{"kind", "database_pull"}},
               static_cast<double>(summary->database_pulls_sent()));
    out.Family("kvmesh_anti_entropy_woken_total",
               "Databases the node-level round found differing from a member's copy and woke "
               "(or told to sync, if running).",
               "counter");
    out.Sample("kvmesh_anti_entropy_woken_total", {}, static_cast<double>(summary->woken()));
    out.Family("kvmesh_stale_repairs_total",
               "Stale repairs: members back after being out of this node's placement view "
               "(member), and databases whose full sync with such a member finished (database).",
               "counter");
    out.Sample("kvmesh_stale_repairs_total", {{"kind", "member"}},
               static_cast<double>(summary->stale_members()));
    out.Sample("kvmesh_stale_repairs_total", {{"kind", "database"}},
               static_cast<double>(summary->stale_repairs()));
    out.Family("kvmesh_stale_repair_keys_removed_total",
               "Keys (and tombstones) stale repairs deleted here: deleted and collected on a "
               "replica while this copy was apart from it.",
               "counter");
    out.Sample("kvmesh_stale_repair_keys_removed_total", {},
               static_cast<double>(summary->stale_keys_removed()));
  }

  const std::pair<const char*, const char*> rocks[] = {
      {"rocksdb.cur-size-all-mem-tables", "kvmesh_rocksdb_memtable_bytes"},
      {"rocksdb.live-sst-files-size", "kvmesh_rocksdb_sst_bytes"},
      {"rocksdb.estimate-pending-compaction-bytes", "kvmesh_rocksdb_pending_compaction_bytes"}};
  for (const auto& [property, name] : rocks) {
    uint64_t value = 0;
    if (!impl_->store->IntProperty(property, &value)) continue;
    out.Family(name, std::string("RocksDB's ") + property + ".", "gauge");
    out.Sample(name, {}, static_cast<double>(value));
  }

  out.Family("kvmesh_memtable_spare_key_table_bytes",
             "Memory kept ready for the next memtable's key table (kvmesh's memtable), beyond "
             "kvmesh_rocksdb_memtable_bytes: none until a second memtable was made.",
             "gauge");
  out.Sample("kvmesh_memtable_spare_key_table_bytes", {},
             static_cast<double>(impl_->store->SpareKeyTableBytes()));

  const metrics::ProcessStats process = metrics::ReadProcessStats();
  out.Family("process_resident_memory_bytes", "Resident memory of the process.", "gauge");
  out.Sample("process_resident_memory_bytes", {}, static_cast<double>(process.resident_bytes));
  out.Family("process_cpu_seconds_total", "User and system CPU time of the process.", "counter");
  out.Sample("process_cpu_seconds_total", {}, process.cpu_seconds);
  return out.Take();
}

Status Node::health() const {
  std::lock_guard<std::mutex> lock(impl_->fatal->mutex);
  return impl_->fatal->status;
}

std::shared_ptr<security::AclStore> NodeInternal::Acl(const Node& node) {
  return node.impl_->acl;
}

void NodeTesting::KillGateway(Node& node) {
  StopLocally(*node.impl_->system, node.impl_->gateway, caf::exit_reason::kill);
}

void NodeTesting::KillMembership(Node& node) {
  StopLocally(*node.impl_->system, node.impl_->membership, caf::exit_reason::kill);
}

void NodeTesting::CloseDirectReadGate(Node& node) {
  node.impl_->core->gate->Close();
}

uint16_t Node::port() const {
  return impl_->port;
}

uint16_t Node::cluster_port() const {
  return impl_->cluster_port;
}

uint64_t Node::node_id() const {
  return impl_->store->node_id();
}

// -- EmbeddedDatabase --------------------------------------------------------------------------

std::optional<Result<std::string>> EmbeddedDatabase::TryDirectGet(std::string_view key) {
  if (!core->direct_reads) return std::nullopt;
  DirectReadScope scope(*core->gate);
  if (!scope.node_open()) return std::nullopt;
  auto target = DirectTarget();
  if (!target) return std::nullopt;
  const auto start = std::chrono::steady_clock::now();
  std::string value;
  Status s;
  // Retired or paused meanwhile (a dropped copy, a drop, a restore): the actor path.
  if (!target->TryRead([&](const storage::DatabaseStore& store) { s = store.Get(key, &value); })) {
    return std::nullopt;
  }
  core->requests->Record(metrics::Op::kGet, s.code(), std::chrono::steady_clock::now() - start);
  if (!s.ok()) return Result<std::string>(std::move(s));
  return Result<std::string>(std::move(value));
}

Result<std::string> EmbeddedDatabase::Get(std::string_view key) {
  if (auto read = TryDirectGet(key)) return std::move(*read);
  return DatabaseBackend::Get(key);
}

void EmbeddedDatabase::PutAsync(std::string key, std::string value, StatusCallback done) {
  WriteBatch batch;
  batch.Put(std::move(key), std::move(value));
  CallWrite(shared_from_this(), metrics::Op::kPut, CoalescedWrite::Made::kPut, std::move(batch),
            std::move(done));
}

void EmbeddedDatabase::GetAsync(std::string key, ResultCallback<std::string> done) {
  Completion<std::string> once = ResultCompletion<std::string>(std::move(done));
  if (std::optional<Result<std::string>> direct = TryDirectGet(key)) {
    // `done` still runs later on a node thread, as promised (the caller may hold a lock it
    // takes): the requester calls it, after the callbacks of this handle's earlier requests.
    // Sent after the read scope ended: if the node stops meanwhile the job is dropped here and
    // the Completion answers at once, which must not happen while Shutdown waits for readers.
    caf::anon_send(requester,
                   RequesterJob{[once, read = std::move(*direct)](caf::event_based_actor*) mutable {
                     if (read.ok()) {
                       once(Status::OK(), std::move(*read));
                     } else {
                       once(read.status(), std::string());
                     }
                   }});
    return;
  }
  Call<std::string>(shared_from_this(), metrics::Op::kGet, std::move(once), atom::get_v,
                    std::move(key));
}

void EmbeddedDatabase::EraseAsync(std::string key, StatusCallback done) {
  WriteBatch batch;
  batch.Erase(std::move(key));
  CallWrite(shared_from_this(), metrics::Op::kErase, CoalescedWrite::Made::kErase, std::move(batch),
            std::move(done));
}

void EmbeddedDatabase::WriteAsync(WriteBatch batch, StatusCallback done) {
  if (HasChecks(batch)) {
    // Judged by one replica, perhaps forwarded there: it travels alone (after the writes taken
    // before it).
    Call<atom::ok>(shared_from_this(), metrics::Op::kBatch,
                   StatusCompletion<atom::ok>(std::move(done)), atom::batch_v, std::move(batch));
    return;
  }
  CallWrite(shared_from_this(), metrics::Op::kBatch, CoalescedWrite::Made::kBatch, std::move(batch),
            std::move(done));
}

void EmbeddedDatabase::ListAsync(ListOptions options, ResultCallback<ListPage> done) {
  Call<ListPage>(shared_from_this(), metrics::Op::kList,
                 ResultCompletion<ListPage>(std::move(done)), atom::list_v, std::move(options));
}

void EmbeddedDatabase::StatsAsync(ResultCallback<DatabaseStats> done) {
  Call<DatabaseStats>(shared_from_this(), metrics::Op::kStats,
                      ResultCompletion<DatabaseStats>(std::move(done)), atom::stats_v);
}

void EmbeddedDatabase::ReplicationAsync(ResultCallback<ReplicationStatus> done) {
  Call<ReplicationStatus>(shared_from_this(), metrics::Op::kStatus,
                          ResultCompletion<ReplicationStatus>(std::move(done)), atom::status_v);
}

void EmbeddedDatabase::WatchAsync(WatchRequest request, ResultCallback<WatchUpdate> done) {
  Call<WatchUpdate>(shared_from_this(), metrics::Op::kWatch,
                    ResultCompletion<WatchUpdate>(std::move(done)), atom::watch_v,
                    std::move(request));
}

void EmbeddedDatabase::ReadAsync(ReadRequest request, ResultCallback<VersionedValue> done) {
  Call<VersionedValue>(shared_from_this(), metrics::Op::kGet,
                       ResultCompletion<VersionedValue>(std::move(done)), atom::get_v,
                       std::move(request));
}

void EmbeddedDatabase::SessionWriteAsync(WriteBatch batch, ResultCallback<std::string> done) {
  // Alone, as a conditional batch travels (after the writes taken before it): its answer
  // carries its own dot.
  Call<std::string>(shared_from_this(), metrics::Op::kBatch,
                    ResultCompletion<std::string>(std::move(done)), atom::batch_v, std::move(batch),
                    atom::session_v);
}

}  // namespace kvmesh
