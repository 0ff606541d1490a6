// The database actor: serves one instantiated database path from its storage namespace, and is
// one replica of that database.
//
// One actor per instantiated path on a node, spawned by the matcher supervisor on first access.
// It owns the only DatabaseStore of its path while it runs, so writes to one database are
// serialised here and the store's size accounting needs no locks. When it sees no request for a
// whole idle period it tells the supervisor, which takes it out of service and sends
// `passivate`; the actor then stops after the requests already in its mailbox. A later request
// is bounced (request_receiver_down) without being applied, so callers re-open the path and
// retry safely.
//
// Replication. The replica that receives a write applies it locally (assigning its dot), pushes
// the delta to the other replicas and answers once `required_acks` replicas (itself included)
// hold it durably; if too few answer, the writer gets kUnavailable saying how many it reached
// (the write stays applied where it reached and spreads by anti-entropy). Pushes to one peer are
// sent one at a time; deltas written meanwhile are concatenated and sent together, so pushes
// batch under load, and each peer's queue is bounded. Anti-entropy: every `sync_interval` (and
// when a peer is reached again) it pulls from each peer what it lacks by version vector, in
// chunks, and pushes what the peer lacks. Tombstones are collected once every replica's vector
// covers them. A replica that placement moved elsewhere keeps serving until every new replica
// holds all its writes, then drops its copy.
#pragma once

#include <caf/stateful_actor.hpp>
#include <caf/timespan.hpp>
#include <caf/typed_response_promise.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "actors/direct_reads.hpp"
#include "common/link_faults.hpp"
#include "messages/type_ids.hpp"
#include "storage/database_store.hpp"

namespace kvmesh {

/// What every database actor of a node needs to replicate.
struct ReplicationOptions {
  /// This node's id.
  uint64_t node_id = 0;
  /// True if the node has a cluster port. Then writes always need replication.min
  /// acknowledgements (a node that has not found its peers yet refuses writes that need them);
  /// a single node caps the need at 1.
  bool clustered = false;
  /// Deadline of each push, pull and peer lookup. Default 5 s.
  caf::timespan timeout = std::chrono::seconds(5);
  /// Period of anti-entropy rounds; zero disables them. Default 1 s.
  caf::timespan sync_interval = std::chrono::seconds(1);
  /// Byte budget of one anti-entropy chunk. Default 1 MiB.
  size_t chunk_bytes = 1u << 20;
  /// Bytes of deltas queued for one peer beyond which writes stop waiting for it (it catches up
  /// by anti-entropy). Default 64 MiB.
  size_t max_queued_bytes = 64u << 20;
  /// A tombstone is collected only once it is this old (and every replica has seen it), so a
  /// replica that was down or cut off for less than this still receives the delete itself when
  /// it comes back. A replica away for longer may bring deleted keys back: wipe its data dir
  /// before it rejoins. Default 24 h.
  caf::timespan tombstone_grace = std::chrono::hours(24);
  /// Test clusters only (may be null).
  std::shared_ptr<LinkFaults> faults;
  /// Where database actors publish their stores for reads on callers' threads (see
  /// actors/direct_reads.hpp); null (always when clustered): no direct reads.
  std::shared_ptr<DirectReads> direct_reads;
};

struct database_state {
  static inline const char* name = "kvmesh.database";
  std::shared_ptr<storage::DatabaseStore> store;
  /// The store as shared with direct readers (may be null); retired when the actor stops.
  std::shared_ptr<DirectReadTarget> direct;
  ~database_state() {
    if (direct) direct->retired.store(true, std::memory_order_release);
  }
  /// Requests served since the last idle check (the check costs one increment per request).
  uint64_t requests_since_tick = 0;

  matcher_supervisor_actor supervisor;
  std::shared_ptr<const ReplicationOptions> replication;
  ReplicaSet replicas;
  /// True when placement no longer lists this node: hand the data over, then drop it.
  bool leaving = false;
  /// Another replica of this database.
  struct Peer {
    /// Its database actor; invalid until looked up (through the supervisor).
    database_actor actor;
    bool resolving = false;
    bool reachable = false;
    /// Its version vector as it last told us.
    storage::VersionVector vector;
    bool vector_known = false;
    /// Deltas waiting to be pushed (one serialized proto::Delta) and the writes waiting on them.
    std::string queued;
    std::vector<uint64_t> queued_writes;
    /// The push on its way and the writes waiting on it.
    bool push_in_flight = false;
    std::vector<uint64_t> inflight_writes;
    /// Bumped when the peer is given up on, so late answers to older requests are ignored.
    uint64_t generation = 0;
    bool sync_in_flight = false;
  };
  std::map<uint64_t, Peer> peers;
  /// A write waiting for acknowledgements.
  struct PendingWrite {
    caf::typed_response_promise<atom::ok> promise;
    uint32_t acks = 1;
    uint32_t outstanding = 0;
    uint32_t needed = 1;
  };
  std::unordered_map<uint64_t, PendingWrite> writes;
  /// Records received from peers (pushes and anti-entropy), and those that changed a key.
  uint64_t entries_received = 0;
  uint64_t entries_applied = 0;
  /// When tombstones were last looked at for collection: each look scans those the replicas
  /// have all seen, including the ones kept for their grace period, so looks are spaced out.
  std::chrono::steady_clock::time_point last_collection{};
  uint64_t next_write_id = 0;
  /// Source of Peer::generation values: never reused, even by a peer removed and added again.
  uint64_t last_generation = 0;
};

/// Behaviour of a database actor over `store`. Every `idle_timeout` it checks whether it served a
/// request; if not, it reports (path, itself) to `supervisor`. So a database passivates between
/// one and two idle periods after its last request. A zero `idle_timeout` disables passivation.
/// `replicas` is its first replica set (the supervisor sends changes). `direct` (may be null)
/// shares `store` with direct readers: their reads count as use, and it is retired when the actor
/// stops.
database_actor::behavior_type database_actor_impl(
    database_actor::stateful_pointer<database_state> self,
    std::shared_ptr<storage::DatabaseStore> store, matcher_supervisor_actor supervisor,
    caf::timespan idle_timeout, std::shared_ptr<const ReplicationOptions> replication,
    ReplicaSet replicas, std::shared_ptr<DirectReadTarget> direct);

}  // namespace kvmesh
