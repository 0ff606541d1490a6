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
// Its interface is split by who may send (messages/type_ids.hpp): clients hold the client slice,
// other nodes only ever get the peer slice (client requests they route here, and replication),
// the supervisor that spawned it holds the full handle (control slice), and its timers have atoms
// of their own. CAF 0.17 checks slices only when sending, so control, timer and exit messages are
// still checked at run time (MaySteer in database_actor.cpp).
//
// Replication is replication/replicator.hpp's: this actor carries its requests to the
// database actors (found through the supervisor) and turns their answers, its timers and the
// supervisor's replica sets into calls of the Replicator.
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
#include "common/placement_board.hpp"
#include "messages/local_deadlines.hpp"
#include "messages/type_ids.hpp"
#include "replication/replicator.hpp"
#include "security/identity.hpp"
#include "storage/database_store.hpp"

namespace kvmesh {

/// What every database actor of a node needs to replicate: what its Replicator needs (the node
/// id, chunk and queue bounds, the tombstone grace period, link faults; see
/// replication::Options), and how the actor drives it.
struct ReplicationOptions : replication::Options {
  /// True if the node has a cluster port. Then writes always need replication.min
  /// acknowledgements (a node that has not found its peers yet refuses writes that need them);
  /// a single node caps the need at 1.
  bool clustered = false;
  /// Deadline of each push, pull and peer lookup. Default 5 s.
  caf::timespan timeout = std::chrono::seconds(5);
  /// Period of anti-entropy rounds (database rounds while a replica is not quiet, and the
  /// node-level round); zero disables them. Default 1 s.
  caf::timespan sync_interval = std::chrono::seconds(1);
  /// Where database actors publish their stores for reads on callers' threads (see
  /// actors/direct_reads.hpp); null: no direct reads.
  std::shared_ptr<DirectReads> direct_reads;
  /// Who connected peers are (with TLS): deltas and pulls must come from the node they name.
  /// Null or disabled: not checked.
  std::shared_ptr<const security::PeerDirectory> peers;
  /// The supervisor's: databases it wakes at most at once to rebalance after a membership change
  /// or a drain (the next wave starts as these finish). Default 32.
  size_t rebalance_wave = 32;
  /// Where the supervisor shows drains and rebalancing to `kvmesh members` (may be null).
  std::shared_ptr<PlacementBoard> placement_board;
  /// In-tree tests only (NodeOptions::passivation_delay_for_testing): how long the supervisor
  /// waits before it tells a passivated database to stop. Default 0.
  caf::timespan passivation_delay{0};
};

class DatabaseTransport;
class WatchHub;

struct database_state {
  static inline const char* name = "kvmesh.database";
  std::shared_ptr<storage::DatabaseStore> store;
  /// The store as shared with direct readers (may be null); retired when the actor stops.
  std::shared_ptr<DirectReadTarget> direct;
  database_state();
  ~database_state();
  /// Requests served since the last idle check (the check costs one increment per request).
  uint64_t requests_since_tick = 0;
  /// Wall-clock ms of the last idle check that saw use (0: none yet); written to the catalog
  /// when the actor stops (Store::RecordAccess).
  uint64_t last_access_ms = 0;

  matcher_supervisor_actor supervisor;
  std::shared_ptr<const ReplicationOptions> replication;
  /// Carries the replicator's requests to peers and answers its writers
  /// (actors/database_actor.cpp).
  std::unique_ptr<DatabaseTransport> transport;
  /// The replication protocol of this replica (replication/replicator.hpp).
  std::unique_ptr<replication::Replicator> replicator;
  /// The writers of one message carrying several writes: one answer for all of them.
  struct WriteGather {
    caf::typed_response_promise<std::vector<caf::error>> promise;
    std::vector<caf::error> results;
    size_t left = 0;
    /// Answered as a whole with a bounce (QueuedWrite::Bounce).
    bool bounced = false;
  };
  /// A local write waiting for the group commit, and its writer.
  struct QueuedWrite {
    /// Its operations (batch()): a batch of its own, or the one its requester shares with it
    /// (SharedWriteBatch, SharedWriteBatches: read, never copied).
    WriteBatch own;
    std::shared_ptr<const WriteBatch> shared;
    const WriteBatch& batch() const { return shared ? *shared : own; }
    /// Drops the operations once applied: the writer may wait long for replication, and they are
    /// in the delta by then. (A shared batch may still be kept by its requester until answered.)
    void Release() {
      own = WriteBatch{};
      shared.reset();
    }
    /// Its writer: `promise`, or entry `index` of `gather` when it came with others.
    caf::typed_response_promise<atom::ok> promise;
    std::shared_ptr<WriteGather> gather;
    size_t index = 0;
    /// A session's write (atom::session): answered through `session_promise` with `dot`.
    bool session = false;
    caf::typed_response_promise<std::string> session_promise;
    /// Set at commit: the write's dot here (SessionToken text).
    std::string dot;
    /// Answers the writer (once).
    void Answer(const Status& status);
    /// Answers the writer that the write was not applied and may be sent again
    /// (caf::sec::request_receiver_down, as a stopped actor's bounce; OrderedRoute resends).
    void Bounce();
  };
  /// Group commit: the local writes received since the last atom::commit, in order. They are
  /// applied together (one RocksDB write, one sync in SyncMode::kAlways, one delta) when the
  /// commit this actor sent itself behind the first of them arrives, i.e. after every message
  /// queued before it, or earlier when another request needs the store as those writes leave it
  /// (a read, a drop, a stop).
  std::vector<QueuedWrite> queued;
  /// Anti-entropy rounds run every sync_interval while the replicator has something to do, and
  /// only every 30 sync intervals while it is quiet (Replicator::Quiet: in sync with every peer),
  /// so thousands of idle running databases cost little; the slow rounds still remove expired keys
  /// and collect tombstones. Anything that may change that (a write, a peer's push or pull, a
  /// replica set, the node-level round's sync) brings the next round forward. Only the timer
  /// message carrying `round_seq` counts, so restarting never makes two chains.
  uint64_t round_seq = 0;
  bool round_armed = false;
  /// The armed round is a quiet one (kQuietRound away).
  bool round_slow = false;
  /// An atom::sweep (the next step of a round's sweep) is on its way to this actor: a round
  /// started meanwhile sends no second one, so the queued requests still wait for one step.
  bool sweep_queued = false;
  /// Times in a row that message found requests waiting and gave way to them.
  int sweep_deferrals = 0;
  /// Deadlines of this actor's requests to its peers and the supervisor (RequestWithin).
  std::shared_ptr<LocalDeadlines> deadlines = std::make_shared<LocalDeadlines>();
  /// The watches' held pulls (actors/watch_hub.hpp).
  std::unique_ptr<WatchHub> watches;
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
