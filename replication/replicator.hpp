// The replication protocol of one replica of one database, as a plain class (no actors).
//
// The replica that receives a write applies it locally (assigning its dot), pushes the delta to
// the other replicas and answers once `required_acks` replicas (itself included) hold it
// durably; if too few answer, the writer gets kUnavailable saying how many it reached (the write
// stays applied where it reached and spreads by anti-entropy). Up to a few pushes to one peer are
// on their way at once (Options::max_pushes_in_flight); deltas written while that many are on
// their way are concatenated and sent together, so pushes batch under load, and what each peer
// has queued and on its way is bounded. Anti-entropy: every sync round (and when a peer is
// reached again) it pulls from each peer what it lacks by version vector, in chunks, asking each
// origin's writes of one peer only (its source, below), so a replica far behind receives each
// missed record about once rather than once per peer. Tombstones
// are collected once every replica's vector covers them and they are older than a grace period;
// a peer back from outside the placement view gets a stale repair (StartFullSync), a full
// comparison of keys and dots that removes what the other side deleted and collected meanwhile.
// A replica that placement moved elsewhere keeps serving until every new replica holds all its
// writes, then drops its copy and announces its origin retired (storage/version_vector.hpp
// "Retired origins"): each replica compacts it out of its vector once it covers it, and
// replicas tell each other their retired sets by digest, the list only when they differ.
//
// Who does what: the Replicator owns the protocol state (peers, pending writes, queues, rounds)
// and decides; a Transport (the database actor, or a test's fake) carries its requests to the
// peers and brings the answers back as calls of the On...() methods. Every request carries the
// peer's generation, bumped whenever the Replicator gives up on the peer, so a late answer to an
// older exchange is ignored. Not thread-safe: one owner calls it (the database actor).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/link_faults.hpp"
#include "common/replica_set.hpp"
#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"
#include "replication/node_summary.hpp"
#include "storage/database_store.hpp"
#include "storage/version_vector.hpp"

namespace kvmesh::replication {

/// What the Replicator sends, and what it tells its owner. Each request to a peer is answered by
/// exactly one later call on the Replicator (never from inside the Transport call): the matching
/// On...Answered, or OnRequestFailed(peer, generation, ...).
class Transport {
 public:
  virtual ~Transport() = default;

  /// Finds peer `peer`'s replica of this database (instantiating it there). Answer:
  /// OnLookupAnswered, or OnRequestFailed.
  virtual void Lookup(uint64_t peer, uint64_t generation) = 0;

  /// Pushes `delta` (serialized proto::Delta, possibly several concatenated) to the peer's replica
  /// found last. Answer: OnPushAnswered with the same `push` once it holds it durably, or
  /// OnRequestFailed. Several may be on their way to one peer. The Replicator matches each
  /// answer to its push, so a transport need not keep them in order (CAF does).
  virtual void Push(uint64_t peer, uint64_t generation, uint64_t push, std::string delta) = 0;

  /// Sends `delta` once more to the peer's replica, after `delay_ms`, and ignores any answer (a
  /// duplicate made by fault injection).
  virtual void PushDuplicate(uint64_t peer, std::string delta, uint32_t delay_ms) = 0;

  /// Sends `delta` to the peer's replica found last, as a push, and ignores any answer: a
  /// dropped copy's last word (its retired origin), sent just before Dropped().
  virtual void Announce(uint64_t peer, std::string delta) = 0;

  /// Asks the peer's replica for what `request` (a serialized proto::SyncRequest: our version
  /// vector, and which origins to send) lacks. Answer: OnPullAnswered with its serialized
  /// proto::SyncReply, or OnRequestFailed.
  virtual void Pull(uint64_t peer, uint64_t generation, std::string request) = 0;

  /// Hands `delta` (what the peer lacks) over to the peer's replica. Answer: OnHandOverAnswered,
  /// or OnRequestFailed.
  virtual void HandOver(uint64_t peer, uint64_t generation, std::string delta) = 0;

  /// Asks the peer's replica for one page of its records' keys and dots (`request`: a
  /// serialized proto::FullSyncRequest). Answer: OnFullSyncAnswered with its serialized
  /// proto::FullSyncPage, or OnRequestFailed.
  virtual void FullSync(uint64_t peer, uint64_t generation, std::string request) = 0;

  /// Answers the writer of local write `write_id` (see Replicator::OnLocalWrite).
  virtual void AnswerWriter(uint64_t write_id, Status status) = 0;

  /// The store is about to be dropped: nobody may read it any more.
  virtual void Retire() = 0;

  /// The local copy was handed over and dropped, and pending writes were answered: the owner
  /// stops. No call on the Replicator may follow.
  virtual void Dropped() = 0;
};

/// Bytes one push carries at most by default (Options::max_push_bytes): a peer's cluster port
/// takes messages of twice kMaxRequestBytes and more (bootstrap/node.cpp checks it).
inline constexpr size_t kDefaultMaxPushBytes = 64u << 20;

/// What the Replicator of every database of a node needs.
struct Options {
  /// This node's id.
  uint64_t node_id = 0;
  /// Byte budget of one anti-entropy chunk. Default 1 MiB.
  size_t chunk_bytes = 1u << 20;
  /// Bytes of deltas queued for one peer, which the next push carries, beyond which writes stop
  /// waiting for it (it catches up by anti-entropy). Default kDefaultMaxPushBytes.
  size_t max_push_bytes = kDefaultMaxPushBytes;
  /// Bytes of deltas queued for and on their way to one peer beyond which writes stop waiting for
  /// it, likewise. Default 128 MiB: the most a peer held while one push at a time was on its way
  /// (a push of up to 64 MiB and a full queue).
  size_t max_queued_bytes = 128u << 20;
  /// Pushes on their way to one peer at once; deltas written meanwhile wait and go together.
  /// More than one lets a write leave at once while an earlier push is applied, rather than
  /// wait for its answer. 3-node cluster put against one at a time (kvmesh-bench, 3-4 rounds):
  /// 1.15x with 4 writes in flight, 1.11x with 16, 1.01x with 50, 1.07x with 800; 8 at once
  /// gave 1.12x, 1.13x, 1.09x, but 0.93x with 800 (more, smaller pushes). Default 2.
  size_t max_pushes_in_flight = 2;
  /// A tombstone is collected only once it is this old (and every replica has seen it), so a
  /// replica that was down or cut off for less than this still receives the delete itself when
  /// it comes back. A replica that was out of the placement view is repaired when it is heard
  /// again (StartFullSync); one restarted after longer than this refuses to start (bootstrap).
  /// Default 24 h.
  std::chrono::nanoseconds tombstone_grace = std::chrono::hours(24);
  /// Test clusters only (may be null).
  std::shared_ptr<LinkFaults> faults;
  /// The node's summary of every database's vector (may be null): counts the pulls sent.
  std::shared_ptr<NodeSummary> node_summary;
  /// The wall clock that tombstone ages are measured against; null: system_clock::now. For tests.
  std::function<std::chrono::system_clock::time_point()> wall_clock;
  /// The clock that spaces tombstone collections; null: steady_clock::now. For tests.
  std::function<std::chrono::steady_clock::time_point()> steady_clock;
};

/// Anti-entropy chunks pulled from or handed over to one peer in one round at most (the next
/// round goes on).
inline constexpr int kMaxChunksPerRound = 64;
/// Expiry index entries a replica examines per sync round (DatabaseStore::CollectExpired).
inline constexpr size_t kMaxExpiredPerRound = 16384;
/// Dot range members a replica examines per sync round when the ranges are due for a sweep
/// (DatabaseStore::SweepDotRanges) by reading their records; a pass over listed stale dots reads
/// none and examines kListedSweepFactor times as many.
inline constexpr size_t kMaxSweptMembersPerRound = 16384;
/// Of those, the members one step of the sweep examines: a round's sweep goes in steps that the
/// owner takes (Replicator::ContinueSweep) between the requests it serves, so they wait for one
/// step at most, not for the round's. In one call, a round took 7-37 ms of a node under
/// sustained overwrites (81,000 listed members in 30 ms): every write to the database waited
/// that long, once a second.
inline constexpr size_t kSweptMembersPerStep = 1024;
/// Stale repair: (key, dot) pairs one page carries at most (and at most Options::chunk_bytes of
/// keys), and local records one page's comparison examines at most.
inline constexpr size_t kFullSyncPageEntries = 4096;
/// Page requests of a stale repair that may fail in a row before the repair stops.
inline constexpr int kMaxFullSyncFailures = 10;
inline constexpr size_t kFullSyncMaxScan = 16384;

class Replicator {
 public:
  /// Replicates `store` (which must outlive it) through `transport` (likewise), starting with
  /// replica set `replicas` (see OnReplicaSet).
  Replicator(const Options& options, storage::DatabaseStore* store, Transport* transport,
             ReplicaSet replicas);

  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;

  // -- Local writes --

  /// True if a local write must wait for acknowledgements of other replicas (replication.min
  /// above 1), so its writer is answered through Transport::AnswerWriter.
  bool WritesWait() const;

  /// True if local writes must make deltas (someone needs them).
  bool NeedsDeltas() const { return !peers_.empty() || WritesWait(); }

  /// Replicates a local write whose delta is `delta` (empty: the write changed nothing). If
  /// WritesWait(), `write_id` (the caller's, unique, not 0) is answered through
  /// Transport::AnswerWriter once enough replicas hold the write or too few can, possibly before
  /// this returns; otherwise nobody waits and `write_id` is unused.
  void OnLocalWrite(const std::string& delta, uint64_t write_id);

  // -- Requests from peers --

  /// A push from the replica on node `from`: applies `delta`. Error if it is malformed (or the
  /// link from `from` is cut by fault injection).
  Status OnPushReceived(uint64_t from, const std::string& delta);

  /// A stale repair's page request from the replica on node `from` (a serialized
  /// proto::FullSyncRequest): sets `*reply` to a serialized proto::FullSyncPage (our keys and
  /// dots after the request's key, bounded; our vector). A first page asking to be answered back
  /// starts the same repair against `from` (StartFullSync) unless one runs already.
  Status AnswerFullSync(uint64_t from, const std::string& request, std::string* reply);

  /// An anti-entropy pull from the replica on node `from`: `request` is a serialized
  /// proto::SyncRequest (or, from a node that predates it, a plain serialized version vector).
  /// Sets `*reply` to a serialized proto::SyncReply (what it lacks of the origins asked, bounded
  /// by Options::chunk_bytes; our vector; whether more remains).
  Status AnswerPull(uint64_t from, const std::string& request, std::string* reply);

  // -- Answers to our requests (stale generations are ignored) --

  /// True if an answer to a request to `peer` of `generation` is still awaited: the owner keeps
  /// what a late answer brings (such as the replica's handle) only if so.
  bool Current(uint64_t peer, uint64_t generation) const;

  /// The lookup of `peer` answered; `found` is false if the answer is not to be trusted.
  void OnLookupAnswered(uint64_t peer, uint64_t generation, bool found);
  /// The peer holds the deltas of push `push` (`ok`), or the answer is not to be trusted (!ok).
  void OnPushAnswered(uint64_t peer, uint64_t generation, uint64_t push, bool ok);
  /// The peer's answer to a pull: a serialized proto::SyncReply; `genuine` is false if the answer
  /// is not to be trusted.
  void OnPullAnswered(uint64_t peer, uint64_t generation, bool genuine, const std::string& reply);
  /// The peer's answer to a full sync page request: a serialized proto::FullSyncPage; `genuine`
  /// is false if the answer is not to be trusted.
  void OnFullSyncAnswered(uint64_t peer, uint64_t generation, bool genuine,
                          const std::string& page);
  /// A full sync page request failed (a timeout, an error answer, a lost connection). Not
  /// OnRequestFailed: giving the peer up would fail the writes waiting on it and drop the
  /// answer of the pull sent beside the page request, every round while the page fails. The
  /// repair asks again next round, and stops (saying so) after kMaxFullSyncFailures in a row.
  void OnFullSyncFailed(uint64_t peer, uint64_t generation, const std::string& reason);
  /// The peer took a hand-over chunk.
  void OnHandOverAnswered(uint64_t peer, uint64_t generation);
  /// A request to the peer failed (`reason` is for the log): its replica is looked up again later.
  void OnRequestFailed(uint64_t peer, uint64_t generation, const std::string& reason);

  // -- Other events --

  /// The peer's replica found last went away (the owner monitors it).
  void OnPeerDown(uint64_t peer);
  /// A new replica set: peers join and leave, unreachable ones stop being waited for, and a
  /// replica set without this node starts the hand-over.
  void OnReplicaSet(ReplicaSet replicas);
  /// The periodic anti-entropy round: pulls from each peer that may hold writes this replica
  /// lacks or lack writes it holds, as far as it knows their vectors. Peers known to be in sync
  /// are skipped: the node-level round (replication/node_summary.hpp) finds differences the
  /// replica cannot know of (a lost push to a peer it thinks in sync) and calls SyncNow.
  void OnSyncTick();
  /// True if the round's sweep of the dot ranges has steps left (a round that finds the ranges
  /// due for a sweep takes none itself): the owner calls ContinueSweep, best when no request
  /// waits.
  bool SweepContinues() const { return sweep_budget_ > 0 && !dropped_; }
  /// The next step of the round's sweep of the dot ranges (kSweptMembersPerStep members).
  void ContinueSweep();
  /// Pulls from every peer now, whatever it knows of their vectors.
  void SyncNow();
  /// Stale repair (README "Convergence"): `peer` was out of this node's placement view, so
  /// either copy may hold keys the other deleted and collected meanwhile, which the delta sync
  /// never removes. Compares this copy with the peer's page by page in key order and deletes
  /// here what the peer's vector covers and the peer no longer holds
  /// (DatabaseStore::RemoveCollectedElsewhere); what the peer lacks and has not seen flows by
  /// the delta sync as always. With `answer_back` the peer is asked to do the same against this
  /// copy. Goes on across failures (resuming at the page it reached) until every key was
  /// compared or the peer leaves the replica set. False (nothing to do) if `peer` is not a peer
  /// of this replica; true if a repair with it runs (started now or earlier).
  bool StartFullSync(uint64_t peer, bool answer_back);
  /// True while a stale repair with `peer` is under way.
  bool FullSyncRunning(uint64_t peer) const;
  /// True if rounds have nothing to do until something happens (a write, a peer's push or pull,
  /// a new replica set, SyncNow): every peer is known to hold exactly what this replica holds,
  /// nothing is queued, in flight or being handed over, and no backlog of expired records waits.
  /// The owner may then run its rounds rarely (they still remove expired records and collect
  /// tombstones).
  bool Quiet() const;
  /// Quiet, and no round has anything left to do at any time: no record expires, no
  /// tombstone waits to be collected and the dot ranges are not due for a sweep. The owner may then
  /// stop its rounds until something happens, so an idle running database costs nothing (with
  /// 100,000 of them, rare rounds alone cost several percent of a core).
  bool Dormant() const;
  /// The owner stops: gives up on every peer and answers every waiting writer kUnavailable.
  void Stop();

  // -- State --

  /// True if this replica may passivate: it is not handing over, and every peer is known to hold
  /// every write it holds (so a passivated replica never holds a write the others lack).
  bool MayPassivate() const;
  /// True if placement moved this replica away (it hands its copy over, then drops it).
  bool leaving() const { return leaving_; }
  /// Replication status as users see it.
  ReplicationStatus MakeStatus() const;
  /// The replica set as the supervisor last sent it.
  const ReplicaSet& replicas() const { return replicas_; }

 private:
  struct Peer {
    /// Its replica was found (and has not failed or gone since): requests can go to it.
    bool found = false;
    bool resolving = false;
    bool reachable = false;
    /// Its version vector as it last told us.
    storage::VersionVector vector;
    bool vector_known = false;
    /// Deltas waiting to be pushed (serialized proto::Delta) and the writes waiting on them.
    std::string queued;
    std::vector<uint64_t> queued_writes;
    /// The pushes on their way, oldest first: each one's number, bytes and waiting writes.
    struct InFlight {
      uint64_t push = 0;
      size_t bytes = 0;
      std::vector<uint64_t> writes;
    };
    std::deque<InFlight> inflight;
    /// Bytes queued and on their way (what max_queued_bytes bounds).
    size_t HeldBytes() const {
      size_t bytes = queued.size();
      for (const InFlight& push : inflight) bytes += push.bytes;
      return bytes;
    }
    /// Bumped when the peer is given up on, so late answers to older requests are ignored.
    uint64_t generation = 0;
    bool sync_in_flight = false;
    /// Chunks the current anti-entropy exchange may still pull or hand over.
    int chunks_left = 0;
    /// The origins the pull in flight asked for (all of them if `asked_all`), and the sync
    /// rounds that began since it was sent: from the second on, the peer is slow and its
    /// origins are asked of another peer.
    bool asked_all = false;
    std::set<uint64_t> asked;
    int rounds_waited = 0;
    /// Stale repair (StartFullSync): wanted until every key was compared; a page request is on
    /// its way; the next page starts after `full_sync_after`; the first request asks the peer
    /// to answer back; pages this round may still ask for; keys deleted so far.
    bool full_sync = false;
    bool full_sync_in_flight = false;
    std::string full_sync_after;
    bool full_sync_answer_back = false;
    /// The retired digest of the last list of retired origins our pulls sent it.
    uint64_t retired_sent = 0;
    /// The retired set (its digest) the pull in flight listed, if it listed one: `retired_sent`
    /// once the pull is answered (a lost pull would otherwise leave the peer never told).
    uint64_t retired_listing = 0;
    int full_sync_pages_left = 0;
    uint64_t full_sync_removed = 0;
    int full_sync_failures = 0;  // page requests failed in a row
  };
  struct PendingWrite {
    uint32_t acks = 1;
    uint32_t outstanding = 0;
    uint32_t needed = 1;
  };

  bool Blocked(uint64_t from, uint64_t to) const;
  Peer* CurrentPeer(uint64_t peer_id, uint64_t generation);
  bool InSync(const Peer& p) const;
  void Settle(uint64_t id);
  void Acknowledge(const std::vector<uint64_t>& ids, bool ok);
  void GiveUp(uint64_t peer_id);
  void Forget(uint64_t peer_id, const std::string& reason);
  bool ReadyToSend(uint64_t peer_id, Peer& p);
  void Resolve(uint64_t peer_id);
  void Flush(uint64_t peer_id);
  void Push(const std::string& delta, uint64_t write_id);
  void Pull(uint64_t peer_id, int chunks_left);
  int SourceRank(uint64_t peer_id, const Peer& p) const;
  void AssignSources();
  std::set<uint64_t> SourcedFrom(uint64_t peer_id) const;
  void FinishExchange(uint64_t peer_id, Peer& p);
  void FullSyncStep(uint64_t peer_id);
  void AfterRound();
  void CollectTombstones(const storage::VersionVector& stable);
  void RemoveExpired();
  void SweepDotRanges();
  void SweepStep();
  Status ApplyFromPeer(const std::string& delta);
  /// Our vector as sent to `peer_id` (null: unknown peer): with the retired list unless the
  /// peer is known to hold the same retired set (`their_digest`, if given, is what it just
  /// said it holds).
  std::string VectorForPeer(const Peer* peer, const uint64_t* their_digest = nullptr,
                            bool* listed = nullptr) const;
  /// True if `p` holds another retired set than ours and has not been sent ours: a pull (which
  /// brings its list back) is due even if it holds the same writes, so the replicas agree on
  /// their vectors' form (and a replica that missed an announcement compacts). Once per change
  /// of our set, so a peer that predates retired origins is not pulled every round.
  bool RetiredNews(const Peer& p) const;
  /// Completes a peer's vector parsed without its retired list (see VectorForPeer), and learns
  /// the list when it came along.
  void ReadRetired(const Peer* peer, const storage::VersionVector::WireRetired& wire,
                   storage::VersionVector* theirs);
  void FailPendingWrites();

  const Options options_;
  storage::DatabaseStore* const store_;
  Transport* const transport_;
  ReplicaSet replicas_;
  /// True when placement no longer lists this node: hand the data over, then drop it.
  bool leaving_ = false;
  /// The last round removed as many expired keys as a round may: more wait (not quiet).
  bool expired_backlog_ = false;
  std::map<uint64_t, Peer> peers_;
  /// Anti-entropy sources: for each origin of which some peer holds writes this replica lacks,
  /// the one peer pulled from for it (AssignSources).
  std::map<uint64_t, uint64_t> sources_;
  /// The sync round in which each origin's source was chosen (sync_rounds_ then).
  std::map<uint64_t, uint64_t> source_since_;
  /// Sync rounds so far: when the source of an origin no peer can fill our gap in moves on.
  uint64_t sync_rounds_ = 0;
  std::unordered_map<uint64_t, PendingWrite> writes_;
  /// Records received from peers (pushes and anti-entropy), and those that changed a key.
  uint64_t entries_received_ = 0;
  uint64_t entries_applied_ = 0;
  /// When tombstones were last looked at for collection: each look scans those the replicas
  /// have all seen, including the ones kept for their grace period, so looks are spaced out.
  std::chrono::steady_clock::time_point last_collection_{};
  /// Source of Peer::generation values: never reused, even by a peer removed and added again.
  uint64_t last_generation_ = 0;
  /// Source of push numbers (Transport::Push).
  uint64_t last_push_ = 0;
  /// Set once the copy was dropped: no more work.
  bool dropped_ = false;
  /// Members the round's sweep of the dot ranges may still examine in later steps (0: none).
  size_t sweep_budget_ = 0;
};

}  // namespace kvmesh::replication
