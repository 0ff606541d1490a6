// The embedded API: run a kvmesh node inside your process and use its databases.
//
//   kvmesh::NodeOptions options;
//   options.data_dir = "/var/lib/myapp/kvmesh";
//   options.config_dir = "/etc/myapp/databases";   // YAML database configs
//   std::unique_ptr<kvmesh::Node> node;
//   kvmesh::Status s = kvmesh::Node::Start(options, &node);
//   kvmesh::Database db = node->open("/example/kv");   // check db.status()
//   s = db.put("/users/123/profile", bytes);
//
// The handle is the same kvmesh::Database the network client returns (kvmesh/database.hpp has
// its calls, thread-safety, ordering and callback rules): a program moves between an embedded
// node and a remote one by changing how it obtains the handle. The node's own calls mirror the
// client's (databases(), configs(), reload_configs(), members()). Nothing throws. Every call of
// Node is thread-safe; none may be made from a callback (they block).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvmesh/database.hpp"
#include "kvmesh/status.hpp"
#include "kvmesh/tls.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh {

// Internal types behind two in-tree-only NodeOptions fields. Declared, never defined, in the
// installed headers: a program using the installed library leaves those fields null.
namespace config {
class ConfigSet;
}
class LinkFaults;

/// Everything Node::Start needs. Start checks every field before it touches the disk: an invalid
/// option fails with kInvalidArgument (kInvalidConfig for configs) and leaves `data_dir` as it
/// was (not created if it did not exist).
struct NodeOptions {
  /// Directory of the node's storage (one RocksDB instance). Created if missing. Required.
  std::string data_dir;

  // -- Database configs: give exactly one source (README "Database configs" has the format) --

  /// Directory of database config files (*.yaml, *.yml, read in name order). Used when neither
  /// `config_yaml` nor `configs` is given; Node::reload_configs() re-reads it. An invalid config
  /// fails Start with every validation error ("file:line: error: field: message").
  std::string config_dir;
  /// Database configs as YAML text in the config-file format (one config, a list, or several
  /// `---` documents), for programs that keep their configs in memory. Validated exactly like a
  /// file; errors name the source `<memory>` and the line. Must not be combined with
  /// `config_dir` or `configs`. Empty (default): not used.
  std::string config_yaml;
  /// In-tree tests and tools only (config::ConfigSet is not part of the installed API): configs
  /// already built and validated. Takes precedence over `config_dir`. Null (default): not used.
  std::shared_ptr<const config::ConfigSet> configs;

  /// A database that serves no request for this long is stopped (passivated) to free memory,
  /// and transparently re-activated by the next request. Zero: never. Default 10 minutes.
  std::chrono::milliseconds idle_timeout = std::chrono::minutes(10);
  /// Deadline of each attempt of a request. A request re-routed after its database was passivated
  /// makes up to three attempts (and two re-opens). Default 30 s.
  std::chrono::milliseconds request_timeout = std::chrono::seconds(30);
  /// Largest value accepted; at most kMaxBatchBytes (64 MiB). Default 16 MiB.
  size_t max_value_bytes = 16u << 20;
  /// When writes reach the disk (SyncMode in kvmesh/types.hpp says what each mode can lose on
  /// a power loss). Default kPeriodic: a power loss takes at most the last `sync_period` of
  /// acknowledged writes, at a small cost in throughput.
  SyncMode sync = SyncMode::kPeriodic;
  /// Period of the syncs of SyncMode::kPeriodic, from 1 ms to 60 s. Default 100 ms.
  std::chrono::milliseconds sync_period = std::chrono::milliseconds(100);

  // -- Low disk space (README "Low disk space") --

  /// The node is low on disk space while the data dir's file system has less free than this (or
  /// than low_space_percent of its size, if that is more): puts, batches holding a put and
  /// replicated values are refused with kNoSpace, while deletes, drops and RocksDB's flushes and
  /// compactions go on in the room left. Puts are accepted again once free space is a quarter
  /// above the threshold. 0 together with low_space_percent 0: never low. Default 256 MiB (room
  /// for memtable flushes and the compactions that free space; RocksDB's memtable is kept to a
  /// quarter of this, at most 64 MiB, so that a flush always fits).
  uint64_t low_space_bytes = 256u << 20;
  /// See low_space_bytes; from 0 to 50. Default 1 (percent of the file system's size).
  double low_space_percent = 1.0;
  /// A file of this size is kept in the data dir and deleted when the disk fills up anyway (by
  /// another program, or past the threshold), so that deletes and RocksDB's recovery still find
  /// room; it is made again once space is back. 0: none. Default 64 MiB.
  uint64_t space_reserve_bytes = 64u << 20;
  /// How often free space is checked (also at once after a write error). Default 250 ms.
  std::chrono::milliseconds space_check_interval = std::chrono::milliseconds(250);

  /// Actor worker threads; 0 means one per core. Default 0.
  size_t worker_threads = 0;
  /// Threads that decode the messages read from the cluster port's connections before actors
  /// get them (the client port decodes on its own thread): 0 decodes on the network thread itself
  /// (one thread hand-off less per request, but one large message holds up the others while it is
  /// decoded); -1 (default) leaves CAF's choice (min(3, cores / 4) + 1).
  int network_workers = -1;
  /// Address to serve clients on (the client gateway, over kvmesh's client port). Loopback by
  /// default: expose a node to the network deliberately.
  std::string listen_host = "127.0.0.1";
  /// Port to serve clients on: -1 (default) serves none (embedded only); 0 picks a free port
  /// (see Node::port()). kvmeshd defaults to kDefaultPort.
  int listen_port = -1;
  /// A client connection silent for this long is closed (heartbeats flow every third of it), so
  /// dead peers are noticed. It is also the handshake deadline: a connection (client or cluster
  /// port) that has not completed its handshake this long after it was accepted is closed.
  /// Default 3 s.
  std::chrono::milliseconds peer_timeout = std::chrono::seconds(3);
  /// After a request that came alone, the client port's thread keeps polling its connections for
  /// up to this long before it sleeps, while requests come that soon (it adapts: a node whose
  /// requests come further apart, or stop, polls less and then not at all). A request that finds
  /// it polling is served without a wake-up, which on a virtual machine costs more than the
  /// polling (README "Performance"). With the "sharing" scheduler, the node's idle CPU workers
  /// poll for actors to run the same way. 0: always sleeps at once (least CPU while requests come
  /// one at a time, at a higher latency). At most kMaxBusyPoll. Default 200 us.
  std::chrono::microseconds busy_poll = std::chrono::microseconds(200);
  /// Most connections each listening port (client port, cluster port) keeps open; a connection
  /// beyond it is closed at once, with a warning naming its address and the bound. Well under
  /// common descriptor limits (ulimit -n 65536), leaving room for RocksDB's files. Default 10000.
  size_t max_connections = 10000;
  /// Most connections each listening port keeps open from one remote address (all of loopback
  /// is one address, as is every client behind one NAT address); beyond it, as above. A client
  /// process holds one connection per client::Client (a node one per peer), so 1000 leaves room
  /// for many processes per host while one runaway host cannot take the whole port. Default 1000.
  size_t max_connections_per_address = 1000;
  /// CAF scheduler policy: "sharing" (one shared queue; wakes idle workers at once, which is
  /// what request/response latency needs) or "stealing". Default "sharing".
  std::string scheduler_policy = "sharing";

  // -- Cluster (see actors/membership.hpp and actors/database_actor.hpp) --

  /// Port for other nodes (the cluster port): -1 (default) runs a single node; 0 picks a free
  /// port (see Node::cluster_port()). A node is clustered when it has a cluster port.
  int cluster_port = -1;
  /// Address of the cluster port. Loopback by default; it is unauthenticated (see README).
  std::string cluster_host = "127.0.0.1";
  /// "host:port" other nodes use to reach the cluster port, when that differs from
  /// cluster_host:cluster_port (a proxy, NAT or port forward in between; kvmesh's chaos check
  /// puts a fault-injecting proxy there). Empty (default): the cluster port's own address.
  std::string cluster_advertise;
  /// Cluster addresses ("host:port") of nodes to join through; empty starts a new cluster.
  std::vector<std::string> seeds;
  /// Membership's protocol period: each period the node probes one member (SWIM,
  /// README "Clusters and replication"). Default 500 ms.
  std::chrono::milliseconds heartbeat_interval = std::chrono::milliseconds(500);
  /// A member suspected (unanswered probes) that does not refute for this long is considered
  /// down (writes stop waiting for it, requests go to other replicas); clusters too large to
  /// spread news in this time wait 4 * log10(n) periods. Default 3 s.
  std::chrono::milliseconds failure_timeout = std::chrono::seconds(3);
  /// A member down this long is replaced: its databases get new replicas so they return to
  /// `max` copies. Default 30 s.
  std::chrono::milliseconds replica_grace = std::chrono::seconds(30);
  /// Period of anti-entropy rounds between replicas. Default 1 s.
  std::chrono::milliseconds sync_interval = std::chrono::seconds(1);
  /// Databases a node wakes at most at once to rebalance them after a membership change or a
  /// drain (`kvmesh node drain`); the next ones as these passivate or drop their handed-over
  /// copy. 0 counts as 1. Default 32.
  size_t rebalance_wave = 32;
  /// Deadline of each replication push, pull and peer lookup. Default 5 s.
  std::chrono::milliseconds replication_timeout = std::chrono::seconds(5);
  /// A delete's tombstone is kept at least this long (and until every replica has seen it), so a
  /// replica that was down or cut off for less still receives the delete when it comes back. A
  /// node away for longer must have its data dir wiped before it rejoins. Default 24 h.
  std::chrono::milliseconds tombstone_grace = std::chrono::hours(24);
  /// A clustered node whose data dir was last in use longer ago than tombstone_grace refuses
  /// to start: its copies may bring back keys deleted meanwhile. Wipe the data dir (the node
  /// refills from its peers), or set this to start anyway. Default false.
  bool accept_stale_data = false;
  /// Byte budget of one anti-entropy chunk. Default 1 MiB.
  size_t sync_chunk_bytes = 1u << 20;
  /// In-tree test clusters only (LinkFaults is not part of the installed API): faults on the
  /// links between nodes (testing/fault_injector.hpp implements common/link_faults.hpp). Null
  /// (default): none.
  std::shared_ptr<LinkFaults> link_faults;
  /// In-tree tests only: a database taken out of service (idle, or passivate_all) stops this
  /// much later, so that tests can change placement while databases are stopping. Default 0.
  std::chrono::milliseconds passivation_delay_for_testing{0};
  /// TLS for both ports and for the connections this node opens (include/kvmesh/tls.hpp).
  /// Default: off (plaintext).
  TlsOptions tls;
  /// Without TLS a node refuses to listen (client or cluster port) on an address other than
  /// loopback unless this is true; then it logs a warning that anyone who can reach the port
  /// can read and change every database. Default false.
  bool insecure_plaintext = false;
  /// YAML file mapping client certificate names to rights (README "Access control"; the format
  /// is in security/acl.hpp); re-read by reload_configs(). Needs TLS: Start fails without it, and
  /// with an invalid file (naming file and line). The client port checks every request against
  /// it; a node certificate may do everything. Empty (default): no ACL; every authenticated
  /// client may do everything.
  std::string acl_file;
  /// Called at most once, on one of the node's threads, when the node can no longer do its job
  /// and cannot repair itself: today when its client gateway or membership actor stops
  /// unexpectedly (a bug or an exception; exits from other nodes are ignored). The Status
  /// (kInternal) names what stopped and why; Node::health() returns it from then on. The library
  /// never ends the process: the node keeps its store open and stays in this state until it is
  /// destroyed. Do not destroy the node inside the callback; signal another thread to do it.
  /// kvmeshd logs the Status and exits with code 70. Null (default): only logged, and health().
  std::function<void(const Status&)> on_fatal;
};

/// The port kvmeshd listens on unless told otherwise.
inline constexpr uint16_t kDefaultPort = 7370;

class Node {
 public:
  /// Checks every option and loads the configs, and only then opens (or creates) the store in
  /// `options.data_dir` and starts the actors. An invalid option or config returns its error with
  /// the data dir untouched. A port that cannot be bound fails after the store was opened.
  static Status Start(NodeOptions options, std::unique_ptr<Node>* out);

  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  /// Stops the node: requests in flight fail with kUnavailable, RocksDB is closed. Database
  /// handles outlive it safely; their calls then fail with kUnavailable. If the last owner lets
  /// go on one of the node's threads (inside a callback), the shutdown finishes on another thread
  /// after this returns, so the data dir may still be locked for a moment.
  ~Node();

  /// Opens the database at `path`, instantiating it on first access. Check the returned handle's
  /// status(): no_matching_config (`no database config matches "<path>"`), invalid_key (bad
  /// path), unavailable (the node is stopping). Handles outlive the node safely: their calls then
  /// fail with unavailable.
  Database open(std::string_view path) const;

  /// Every database instantiated on this node (the persistent catalog), in path order.
  Result<std::vector<DatabaseInfo>> databases() const;
  /// One page, in path order, of the databases of config `config_id` in this node's catalog
  /// (its replicas: in a cluster each node lists the databases it holds), with their keys,
  /// bytes, replicas, last access and whether they run. A page examines a bounded part of the
  /// catalog, so it may be short, even empty, while `next_cursor` says more remain. An unknown
  /// config id gives empty pages. Errors: kCorruption, kIOError, kUnavailable.
  Result<InstancePage> instances(std::string_view config_id,
                                 const InstanceOptions& options = {}) const;
  /// Deletes every key of the database at `path` (instantiating it if needed) by writing a
  /// tombstone for each, replicated like erases, so every replica deletes them and none brings
  /// them back (README "Dropping a database"). Returns once each page of tombstones is
  /// acknowledged as a write would be (replication.min replicas); a replica that is down gets
  /// them when it returns. Writes made after the drop are kept; a later open finds only those.
  /// Errors: as a write (kUnavailable, kTimeout; a timeout may leave the drop part done: run it
  /// again), kNoMatchingConfig, kInvalidKey.
  Status drop(std::string_view path) const;
  /// Writes a backup of the database at `path` as it is at one moment to directory `dir` of this
  /// node's machine (created if missing; refused if it holds a backup), while writes go on
  /// (README "Backup and restore"). Returns a summary. Errors: kInvalidArgument, kIOError, and
  /// those of opening the path.
  Result<std::string> backup(std::string_view path, const std::string& dir) const;
  /// Writes a RocksDB checkpoint of this node's whole store to the new directory `dir`: a data
  /// dir a node can be started on. Errors: kInvalidArgument (`dir` exists), kIOError.
  Result<std::string> backup_all(const std::string& dir) const;
  /// Makes the database at `path` hold exactly the records of the backup in `dir` (keys it lacks
  /// are deleted), written as new writes that replicate like any other. Errors: kNotFound (no
  /// backup), kCorruption, kSizeLimitExceeded, and those of a write (a failure may leave it part
  /// done: run it again).
  Result<std::string> restore(std::string_view path, const std::string& dir) const;
  /// Takes cluster member `node_id` (this node or another) out of placement for good (README
  /// "Draining a node"): every node stops placing replicas of users' databases on it, so it
  /// hands each replica it holds over to the nodes placement picks without it (in waves, while
  /// writes go on) and drops it. Stored cluster-wide: it stays drained across restarts until
  /// undrain_node. members() shows its progress. Returns a summary once this node has it in
  /// force. Errors: kInvalidArgument (not clustered, or the nodes left could not hold
  /// replication.min replicas of some config), kNotFound (not a member), kUnavailable.
  /// `requested_by` is recorded as who asked (empty: "embedded").
  Result<std::string> drain_node(uint64_t node_id, std::string_view requested_by = {}) const;
  /// Puts a drained node back into placement: its share of databases moves back to it.
  Result<std::string> undrain_node(uint64_t node_id, std::string_view requested_by = {}) const;
  /// The database configs in force.
  Result<std::vector<ConfigInfo>> configs() const;
  /// Re-reads the config directory and the ACL file (NodeOptions::acl_file). On success the new
  /// configs and ACL take effect at once (the next client request is checked against the new
  /// ACL) and the result says what was loaded; on error in either, neither changes (all or
  /// nothing) and the Status lists the errors.
  Result<std::string> reload_configs() const;

  // -- Cluster-wide configs (README "Cluster-wide configs") --
  // Kept in a system database every node holds a replica of: a change through any node is in
  // force on this one when the call returns and reaches the others within a replication round.
  // A node's own configs (files, config_yaml, configs) win over cluster-wide ones with the same
  // id or matcher.

  /// Applies the configs in `yaml` (the config-file format: one config, a list, or `---`
  /// documents) cluster-wide, creating or replacing each by id. Validated exactly like a config
  /// file, and against the configs in force (no id or matcher of this node's own configs, no
  /// matcher of another cluster-wide config, no reserved path): on any error nothing is applied
  /// and the Status (kInvalidConfig) names the source, line and field. Raising `size` applies to
  /// running databases at once; lowering it below what a database holds refuses its growth until
  /// it holds less (the result warns).
  Result<ConfigApplyResult> apply_configs(std::string_view yaml,
                                          const ConfigApplyOptions& options = {}) const;
  /// Deletes the cluster-wide config `id`: new opens of its paths fail with no_matching_config;
  /// databases already created keep their data. kNotFound for an unknown id, kInvalidArgument
  /// for one of this node's own configs. `applied_by` is recorded in the history (empty:
  /// "embedded").
  Result<ConfigApplyResult> delete_config(std::string_view id,
                                          std::string_view applied_by = {}) const;
  /// Every apply and delete of the cluster-wide config `id` (the last kHistoryPerConfig = 20),
  /// oldest first; `in_force` marks the one in force. kNotFound if it has none.
  Result<std::vector<ConfigHistoryEntry>> config_history(std::string_view id) const;

  /// The cluster members as this node sees them, itself first (just itself if not clustered).
  Result<std::vector<MemberStatus>> members() const;

  /// Number of database actors running now (instantiated databases minus passivated ones).
  Result<uint64_t> active_databases() const;
  /// Passivates every running database now, as if all were idle; how many were asked to stop.
  /// Handles stay usable: their next request re-activates the database.
  Result<uint64_t> passivate_all() const;

  /// The node's metrics in the Prometheus text exposition format 0.0.4 (what kvmeshd serves on
  /// `GET /metrics`; README "Metrics" lists them): requests answered by this node's handles and
  /// client port by operation and result code with their latency, databases running and
  /// instantiated, used and limit bytes per config, replication per peer node, members,
  /// RocksDB's sizes, and the process's memory and CPU. Request counts are kept as requests are
  /// answered; the rest is gathered now, taking at most about the request timeout plus the
  /// replication timeout. Errors: kUnavailable or kTimeout if the node's actors do not answer.
  Result<std::string> metrics() const;

  /// OK while the node works; after a fatal failure (see NodeOptions::on_fatal) the Status that
  /// names it, kInternal.
  Status health() const;

  /// The port clients reach this node on, or 0 if it does not listen.
  uint16_t port() const;
  /// The port other nodes reach this node on, or 0 if it is not clustered.
  uint16_t cluster_port() const;
  /// This node's stable id (kept in its data dir).
  uint64_t node_id() const;

  /// Stops `node` the way a crash would, for tests: no goodbye to peers, and the actors are
  /// killed rather than asked to finish the requests they hold. What was acknowledged is in
  /// RocksDB's log (as after kill -9); the data dir is free when this returns.
  static void Crash(std::unique_ptr<Node> node);

  struct Impl;

 private:
  friend struct NodeTesting;   // bootstrap/node_testing.hpp: in-tree tests only
  friend struct NodeInternal;  // bootstrap/node_internal.hpp: in-tree front ends only
  explicit Node(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvmesh
