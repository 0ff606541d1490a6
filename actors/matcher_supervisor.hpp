// The matcher supervisor: resolves a database path to its config and to the database actor that
// serves it, instantiating the database on first access.
//
// It keeps the running database actors by path and monitors them. Passivation is a handshake:
// an idle database reports itself, the supervisor takes it out of `running` and tells it to stop;
// an `open` of that path meanwhile waits until the old actor is down before a new one is spawned,
// so two actors never own one storage namespace at the same time.
//
// In a cluster it also places databases: the replicas of a path are the `max` best nodes by
// rendezvous hashing (common/placement.hpp) over this node and the members membership reports.
// `open` of a path placed here runs the local replica; `open` of a path placed elsewhere answers
// with a live replica's actor on another node, so any node serves any path. Running database
// actors get their replica set again whenever the members change.
//
// Drains: a node an operator drained (`kvmesh node drain`, a DrainRecord in the system database,
// so every node knows it and it survives restarts) is no candidate for users' databases; it
// still holds the system database. When the members or the drains change, the databases of this
// node's catalog that must exchange (their replica set changed, a replica came back, or this
// node is no longer among them) are woken in waves of ReplicationOptions::rebalance_wave: the
// next ones as earlier ones passivate or drop their handed-over copy. A drained node reports
// how many databases it still holds (DrainProgress) after each wave.
#pragma once

#include <caf/expected.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/timespan.hpp>
#include <caf/typed_response_promise.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "actors/database_actor.hpp"
#include "config/cluster_configs.hpp"
#include "config/config_set.hpp"
#include "messages/type_ids.hpp"
#include "security/acl.hpp"
#include "storage/store.hpp"

namespace kvmesh {

struct matcher_supervisor_state {
  static inline const char* name = "kvmesh.matcher_supervisor";
  /// The configs in force: `file_configs` merged with `api_records`
  /// (config::MergeConfigs).
  std::shared_ptr<const config::ConfigSet> configs;
  /// The node's own configs (files, YAML text or in-memory), as loaded at start or by `reload`.
  std::vector<config::DatabaseConfig> file_configs;
  /// The cluster-wide configs as last read from the system database (deleted ones included).
  std::vector<config::ConfigRecord> api_records;
  /// Warnings of the last merge, so that each is logged once, not at every change.
  std::vector<std::string> merge_warnings;
  /// The store of the system database of cluster-wide configs (always running here, in
  /// `running`), which the supervisor reads directly (stores allow reads beside their owner).
  std::shared_ptr<storage::DatabaseStore> system_store;
  /// Set by the system store's commit observer, cleared when the supervisor re-reads it: many
  /// commits in a row cost one re-read.
  std::shared_ptr<std::atomic<bool>> system_changed = std::make_shared<std::atomic<bool>>(false);
  /// This node's name in config histories (its certificate's name, or its id).
  std::string node_name;
  /// Time of the last config record this node wrote (NextRecordTime).
  int64_t last_record_ms = 0;
  /// Records this node is writing (applies not yet answered by the system database): the next
  /// apply is checked against them too, so two applies in a row cannot both pass a check that
  /// only one of them would.
  std::vector<config::ConfigRecord> pending_records;
  /// What the system database's actor gets for replication: the node's, with anti-entropy
  /// rounds kSystemSyncFactor times rarer (it never passivates, and edits reach peers by push;
  /// rounds only repair what a push missed).
  std::shared_ptr<const ReplicationOptions> system_replication;
  /// Where `reload` reads configs from; empty when the configs were built in memory.
  std::string config_dir;
  /// The node's ACL, which `reload` re-reads with the configs; may be null or hold no file.
  std::shared_ptr<security::AclStore> acl;
  std::shared_ptr<storage::Store> store;
  caf::timespan idle_timeout{};
  /// Database actors in service, by normalised path.
  std::unordered_map<std::string, database_actor> running;
  /// Path of every monitored database actor, by actor id (running or stopping).
  std::unordered_map<caf::actor_id, std::string> path_of;
  /// A database actor told to stop that is not down yet, and the opens waiting for it (each
  /// answers its requester with the slice it asked for, or the error).
  struct Stopping {
    database_actor actor;
    std::vector<std::function<void(caf::expected<database_actor>)>> waiting;
    /// The candidate nodes (Candidates) when it was told to stop: a change of placement while it
    /// stops is rebalanced when it is down (WakeAffected skips stopping databases).
    std::vector<uint64_t> candidates;
  };
  /// By path.
  std::unordered_map<std::string, Stopping> stopping;
  /// What database actors need for replication (this node's id among it).
  std::shared_ptr<const ReplicationOptions> replication;
  /// The other cluster members (empty when not clustered), by node id.
  std::unordered_map<uint64_t, MemberView> members;
  /// Paths whose actor handed its data over and dropped it (their down message is expected).
  std::unordered_map<caf::actor_id, std::string> dropped;

  // -- Drains (`kvmesh node drain`) and rebalancing in waves --

  /// The drain records and progress reports of the system database, by node id, as last read.
  std::map<uint64_t, config::DrainRecord> drains;
  std::map<uint64_t, config::DrainProgress> drain_progress;
  /// Nodes out of placement for users' databases (their record says drained).
  std::set<uint64_t> drained;
  /// Nodes whose drain record this node is writing (RequestDrain): the replication.min check of
  /// a second drain counts them as drained already.
  std::set<uint64_t> drains_in_flight;
  /// Databases of this node's catalog to wake for rebalancing, in order, each once.
  std::deque<std::string> rebalance_queue;
  std::unordered_set<std::string> rebalance_queued;
  /// Woken for rebalancing and not finished (passivated or dropped), by path, with when their
  /// slot in the wave frees anyway (one that cannot settle must not stall the queue).
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> rebalancing;
  /// The rebalance timer is set.
  bool rebalance_timer = false;
  /// Stale repairs (RepairWithStaleMember) waiting for their database to wake: path -> the
  /// members to repair with. Sent to the actor when it starts, however it is started.
  std::unordered_map<std::string, std::set<uint64_t>> stale_repairs;
  /// False until the first view of the members arrives (after the node starts).
  bool members_seen = false;
  /// This node's own drain report is being written, and when it last counted its databases.
  bool progress_in_flight = false;
  std::chrono::steady_clock::time_point last_progress_count{};
  /// The cluster-wide configs were put in force once (later reads that find the same records
  /// change nothing).
  bool configs_installed = false;
};

/// Behaviour of the matcher supervisor. `idle_timeout` and `replication` are handed to every
/// database actor; `config_dir` (may be empty) and the file of `acl` (may be null) are what
/// `reload` reads. A reload is all or nothing: when the configs or the ACL file have errors,
/// neither changes and the answer lists the errors. `configs` are the node's own; it starts the
/// system database of cluster-wide configs at once and merges those in (`node_name` is this
/// node's name in their history).
matcher_supervisor_actor::behavior_type matcher_supervisor_impl(
    matcher_supervisor_actor::stateful_pointer<matcher_supervisor_state> self,
    std::shared_ptr<const config::ConfigSet> configs, std::string config_dir,
    std::shared_ptr<storage::Store> store, caf::timespan idle_timeout,
    std::shared_ptr<const ReplicationOptions> replication, std::shared_ptr<security::AclStore> acl,
    std::string node_name);

}  // namespace kvmesh
