#include "replication/replicator.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/path.hpp"
#include "messages/cluster.pb.h"
#include "messages/replication.pb.h"
#include "storage/hlc.hpp"

namespace kvmesh::replication {
namespace {

bool Contains(const std::vector<uint64_t>& ids, uint64_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

Replicator::Replicator(const Options& options, storage::DatabaseStore* store, Transport* transport,
                       ReplicaSet replicas)
    : options_(options), store_(store), transport_(transport) {
  OnReplicaSet(std::move(replicas));
}

bool Replicator::Blocked(uint64_t from, uint64_t to) const {
  return options_.faults && options_.faults->ReplicationBlocked(from, to);
}

/// The peer an answer is for, or null if it was given up on (or removed) since the request was
/// sent: a late answer must not touch the state of a newer exchange.
Replicator::Peer* Replicator::CurrentPeer(uint64_t peer_id, uint64_t generation) {
  if (dropped_) return nullptr;
  auto it = peers_.find(peer_id);
  if (it == peers_.end() || it->second.generation != generation) return nullptr;
  return &it->second;
}

bool Replicator::Current(uint64_t peer_id, uint64_t generation) const {
  auto it = peers_.find(peer_id);
  return !dropped_ && it != peers_.end() && it->second.generation == generation;
}

/// True if `p` is known to hold every write this replica holds.
bool Replicator::InSync(const Peer& p) const {
  return p.vector_known && p.vector.Includes(store_->version_vector());
}

// -- Pending writes -------------------------------------------------------------------------------

bool Replicator::WritesWait() const {
  return std::max<uint32_t>(1, replicas_.required_acks) > 1;
}

/// Settles write `id` if it has its acknowledgements, or can no longer get them.
void Replicator::Settle(uint64_t id) {
  auto it = writes_.find(id);
  if (it == writes_.end()) return;
  const PendingWrite w = it->second;
  if (w.acks >= w.needed) {
    writes_.erase(it);
    transport_->AnswerWriter(id, Status::OK());
  } else if (w.acks + w.outstanding < w.needed) {
    writes_.erase(it);
    transport_->AnswerWriter(
        id, Status::Unavailable(
                "write to database " + Quote(store_->path()) + " reached " +
                std::to_string(w.acks) + " of the " + std::to_string(w.needed) +
                " replicas that replication.min requires; it may still be applied (replicas: " +
                FormatNodeIds(replicas_.nodes) + ")"));
  }
}

void Replicator::Acknowledge(const std::vector<uint64_t>& ids, bool ok) {
  for (uint64_t id : ids) {
    auto it = writes_.find(id);
    if (it == writes_.end()) continue;
    --it->second.outstanding;
    if (ok) ++it->second.acks;
    Settle(id);
  }
}

void Replicator::OnLocalWrite(const std::string& delta, uint64_t write_id) {
  if (dropped_) return;
  const uint32_t needed = std::max<uint32_t>(1, replicas_.required_acks);
  if (needed <= 1) {
    if (!peers_.empty() && !delta.empty()) Push(delta, 0);
    return;
  }
  if (delta.empty()) {  // the write changed nothing (an empty batch)
    transport_->AnswerWriter(write_id, Status::OK());
    return;
  }
  writes_.emplace(write_id, PendingWrite{1, static_cast<uint32_t>(peers_.size()), needed});
  Settle(write_id);  // fails at once if there are too few peers
  if (writes_.count(write_id) > 0) Push(delta, write_id);
}

/// Answers every write still waiting for acknowledgements (the owner stops).
void Replicator::FailPendingWrites() {
  for (auto& [peer_id, p] : peers_) GiveUp(peer_id);
  auto writes = std::move(writes_);
  writes_.clear();
  for (auto& [id, w] : writes) {
    transport_->AnswerWriter(
        id, Status::Unavailable("database " + Quote(store_->path()) +
                                " stopped before the write reached the replicas that "
                                "replication.min requires; it may still be applied"));
  }
}

void Replicator::Stop() {
  FailPendingWrites();
}

// -- Peers ----------------------------------------------------------------------------------------

/// Gives up on what is queued for and in flight to `peer_id` (unreachable, partitioned, or out of
/// the replica set): its writes stop waiting for it; anti-entropy repairs it later.
void Replicator::GiveUp(uint64_t peer_id) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  auto& p = it->second;
  p.generation = ++last_generation_;
  p.reachable = false;
  p.resolving = false;
  p.sync_in_flight = false;
  p.rounds_waited = 0;
  p.full_sync_in_flight = false;  // a stale repair resumes at its page once the peer is found
  p.queued.clear();
  auto queued = std::move(p.queued_writes);
  auto inflight = std::move(p.inflight);
  p.queued_writes.clear();
  p.inflight.clear();
  Acknowledge(queued, false);
  for (const auto& push : inflight) Acknowledge(push.writes, false);
}

/// After a failed request to a peer: a stopped or unreachable replica is looked up again later.
void Replicator::Forget(uint64_t peer_id, const std::string& reason) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  spdlog::debug("database {}: replica on {} failed: {}", Quote(store_->path()),
                FormatNodeId(peer_id), reason);
  it->second.found = false;
  GiveUp(peer_id);
}

void Replicator::OnRequestFailed(uint64_t peer, uint64_t generation, const std::string& reason) {
  if (CurrentPeer(peer, generation) != nullptr) Forget(peer, reason);
}

void Replicator::OnPeerDown(uint64_t peer) {
  auto it = peers_.find(peer);
  if (dropped_ || it == peers_.end() || !it->second.found) return;
  it->second.found = false;
  GiveUp(peer);
}

/// True if `p` (peer `peer_id`) can be sent to now. Otherwise gives up on a partitioned peer, or
/// starts looking up one whose replica is unknown (which sends when it is found).
bool Replicator::ReadyToSend(uint64_t peer_id, Peer& p) {
  if (Blocked(options_.node_id, peer_id)) {
    GiveUp(peer_id);
    return false;
  }
  if (!p.found) {
    Resolve(peer_id);
    return false;
  }
  return true;
}

/// Looks up the peer's replica (instantiating it there), then flushes its queue and starts an
/// anti-entropy exchange with it.
void Replicator::Resolve(uint64_t peer_id) {
  auto& p = peers_[peer_id];
  if (p.resolving) return;
  if (Blocked(options_.node_id, peer_id)) {
    GiveUp(peer_id);
    return;
  }
  p.resolving = true;
  spdlog::debug("database {}: looking up its replica on {}", Quote(store_->path()),
                FormatNodeId(peer_id));
  transport_->Lookup(peer_id, p.generation);
}

void Replicator::OnLookupAnswered(uint64_t peer_id, uint64_t generation, bool found) {
  Peer* p = CurrentPeer(peer_id, generation);
  if (p == nullptr) return;
  p->resolving = false;
  if (!found) return;
  p->found = true;
  p->reachable = true;
  Flush(peer_id);
  if (!p->sync_in_flight) Pull(peer_id, kMaxChunksPerRound);
  if (p->full_sync && !p->full_sync_in_flight) FullSyncStep(peer_id);
}

// -- Pushes ---------------------------------------------------------------------------------------

/// Sends the peer what is queued for it, unless max_pushes_in_flight pushes are on their way
/// (then it goes when one is answered: this is how pushes batch).
void Replicator::Flush(uint64_t peer_id) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  auto& p = it->second;
  if (p.inflight.size() >= std::max<size_t>(options_.max_pushes_in_flight, 1) || p.queued.empty() ||
      !ReadyToSend(peer_id, p)) {
    return;
  }
  std::string payload = std::move(p.queued);
  p.queued.clear();
  std::vector<uint64_t> writes = std::move(p.queued_writes);
  p.queued_writes.clear();
  LinkFaults::DeltaFate fate;
  if (options_.faults) fate = options_.faults->NextDeltaFate();
  if (fate.drop) {
    // As if the link lost it: the writes do not count this replica.
    Acknowledge(writes, false);
    Flush(peer_id);
    return;
  }
  const uint64_t push = ++last_push_;
  p.inflight.push_back(Peer::InFlight{push, payload.size(), std::move(writes)});
  if (fate.duplicate) transport_->PushDuplicate(peer_id, payload, fate.duplicate_delay_ms);
  transport_->Push(peer_id, p.generation, push, std::move(payload));
}

void Replicator::OnPushAnswered(uint64_t peer_id, uint64_t generation, uint64_t push, bool ok) {
  Peer* p = CurrentPeer(peer_id, generation);
  if (p == nullptr) return;
  auto it = std::find_if(p->inflight.begin(), p->inflight.end(),
                         [push](const Peer::InFlight& f) { return f.push == push; });
  if (it == p->inflight.end()) return;  // answered already
  std::vector<uint64_t> done = std::move(it->writes);
  p->inflight.erase(it);
  Acknowledge(done, ok);
  Flush(peer_id);
}

/// Queues a delta for every peer; `write_id` 0 means nobody waits for it.
void Replicator::Push(const std::string& delta, uint64_t write_id) {
  for (auto& [peer_id, p] : peers_) {
    if (Contains(replicas_.unreachable, peer_id) ||
        p.queued.size() + delta.size() > options_.max_push_bytes ||
        p.HeldBytes() + delta.size() > options_.max_queued_bytes) {
      // Not waited for: membership sees it down, or it is too far behind. Anti-entropy catches
      // it up.
      if (write_id != 0) Acknowledge({write_id}, false);
      continue;
    }
    p.queued += delta;
    if (write_id != 0) p.queued_writes.push_back(write_id);
    Flush(peer_id);
  }
}

/// Applies a delta from another replica and counts what it brought.
Status Replicator::ApplyFromPeer(const std::string& delta) {
  storage::DatabaseStore::ApplyResult result;
  Status s = store_->ApplyDelta(delta, &result);
  if (s.ok()) {
    entries_received_ += result.applied + result.skipped;
    entries_applied_ += result.applied;
  }
  return s;
}

bool Replicator::RetiredNews(const Peer& p) const {
  const uint64_t mine = store_->version_vector().RetiredDigest();
  return p.vector_known && p.vector.RetiredDigest() != mine && p.retired_sent != mine;
}

std::string Replicator::VectorForPeer(const Peer* peer, const uint64_t* their_digest,
                                      bool* listed) const {
  const storage::VersionVector& mine = store_->version_vector();
  const uint64_t digest = mine.RetiredDigest();
  bool same = false;
  if (their_digest != nullptr) {
    same = *their_digest == digest;
  } else if (peer != nullptr && peer->vector_known) {
    same = peer->vector.RetiredDigest() == digest;
  }
  if (listed != nullptr) *listed = !same;
  return mine.SerializeForPeer(!same,
                               peer != nullptr && peer->vector_known ? &peer->vector : nullptr);
}

// A vector sent without its list stands for the retired set whose digest it carries, which the
// sender believed we hold: ours, or the one it had when we last heard from it. If neither, it is
// taken to cover none of those origins (we send it their records again, and take longer to
// collect their tombstones) until the next exchange brings the list: more, never less.
void Replicator::ReadRetired(const Peer* peer, const storage::VersionVector::WireRetired& wire,
                             storage::VersionVector* theirs) {
  if (wire.complete) {
    if (theirs->retired().empty()) return;
    Status s = store_->LearnRetired(theirs->retired());
    if (!s.ok()) {
      spdlog::warn("database {}: cannot record retired origins: {}", Quote(store_->path()),
                   s.ToString());
    }
    return;
  }
  if (wire.digest == store_->version_vector().RetiredDigest()) {
    theirs->AdoptRetired(store_->version_vector());
  } else if (peer != nullptr && peer->vector_known && wire.digest == peer->vector.RetiredDigest()) {
    theirs->AdoptRetired(peer->vector);
  } else {
    theirs->DropRetired();
  }
}

Status Replicator::OnPushReceived(uint64_t from, const std::string& delta) {
  if (Blocked(from, options_.node_id)) {
    return Status::Unavailable("partitioned from " + FormatNodeId(from) + " (fault injection)");
  }
  Status s = ApplyFromPeer(delta);
  // Low on disk space: the node logged that once; the sender keeps the delta for later.
  if (!s.ok()) {
    spdlog::log(s.code() == Code::kNoSpace ? spdlog::level::debug : spdlog::level::warn,
                "database {}: refused a delta from {}: {}", Quote(store_->path()),
                FormatNodeId(from), s.ToString());
  }
  return s;
}

// -- Anti-entropy ---------------------------------------------------------------------------------

Status Replicator::AnswerPull(uint64_t from, const std::string& bytes, std::string* out) {
  if (Blocked(from, options_.node_id)) {
    return Status::Unavailable("partitioned from " + FormatNodeId(from) + " (fault injection)");
  }
  // The request's field 1 is a version vector's (proto SyncRequest), so the same bytes parse as
  // both; the vector parser checks what the request parser does not (order, bounds).
  proto::SyncRequest request;
  storage::VersionVector theirs;
  storage::VersionVector::WireRetired wire;
  if (!request.ParseFromString(bytes) || !storage::VersionVector::Parse(bytes, &theirs, &wire)) {
    return Status::InvalidArgument("sync: not a sync request (version vector and origins)");
  }
  auto peer = peers_.find(from);
  const Peer* known = peer != peers_.end() ? &peer->second : nullptr;
  ReadRetired(known, wire, &theirs);
  std::set<uint64_t> only(request.only().origins().begin(), request.only().origins().end());
  proto::SyncReply reply;
  bool more = false;
  Status s = store_->DeltaSince(theirs, options_.chunk_bytes, reply.mutable_delta(), &more,
                                request.has_only() ? &only : nullptr);
  if (!s.ok()) return s;
  reply.set_more(more);
  // The asker's vector is what it has now: good enough to learn from without a round.
  if (peer != peers_.end()) {
    peer->second.vector = std::move(theirs);
    peer->second.vector_known = true;
  }
  reply.mutable_sender_vector()->ParseFromString(VectorForPeer(known, &wire.digest));
  *out = reply.SerializeAsString();
  return Status::OK();
}

/// One anti-entropy exchange with a peer: pull what we lack (repeating while the answer was cut
/// at its budget); when handing our copy over, also push what it lacks and pull again to learn
/// its new vector. At most `chunks_left` more chunks go either way in this exchange.
void Replicator::Pull(uint64_t peer_id, int chunks_left) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  auto& p = it->second;
  if (!ReadyToSend(peer_id, p)) return;
  p.sync_in_flight = true;
  p.chunks_left = chunks_left;
  p.rounds_waited = 0;
  // A plain vector asks for every origin; a serialized vector followed by field 2 is the
  // SyncRequest with an origin filter (Protobuf merges concatenations).
  bool listed = false;
  std::string request = VectorForPeer(&p, nullptr, &listed);
  p.retired_listing = listed ? store_->version_vector().RetiredDigest() : 0;
  // With one peer there is nobody to share the work with: it is asked for every origin, which
  // saves the round trip that learns its vector.
  p.asked_all = peers_.size() == 1;
  if (!p.asked_all) {
    // Only the origins this peer is the source of; none (a pull that only trades vectors) while
    // its vector is unknown or another peer is the source of everything we lack. Its answer
    // brings its vector, after which it may be asked again (OnPullAnswered).
    AssignSources();
    p.asked = SourcedFrom(peer_id);
    proto::SyncRequest only;
    auto* origins = only.mutable_only();  // present even when empty: "nothing but your vector"
    for (uint64_t origin : p.asked) origins->add_origins(origin);
    request += only.SerializeAsString();
  }
  if (options_.node_summary) options_.node_summary->CountDatabasePull();
  transport_->Pull(peer_id, p.generation, std::move(request));
}

/// How good a source of missing writes `p` is now: 0 none (its vector is unknown, or fault
/// injection cuts us off from it), 1 a poor one (its replica is not found, membership sees it
/// down, a request to it failed, or its pull has waited a whole sync round), 2 a good one.
int Replicator::SourceRank(uint64_t peer_id, const Peer& p) const {
  if (!p.vector_known || Blocked(options_.node_id, peer_id)) return 0;
  if (!p.found || !p.reachable || p.rounds_waited >= 2 ||
      Contains(replicas_.unreachable, peer_id)) {
    return 1;
  }
  return 2;
}

/// Chooses, for each origin of which some peer's vector (as last told) holds writes this
/// replica lacks, the one peer to pull that origin from: the source chosen before while it is
/// among the best ranked (it may be mid-exchange), else the best ranked peer with the highest
/// base for the origin, ties spread over peers by origin. What the source lacks itself, another
/// peer's vector still shows once the source's answer has been applied, so it is asked of that
/// peer next; a source that stops answering ranks lower and loses its origins.
/// The source chosen before is kept only while it can raise this replica's base for the origin,
/// or no peer can: a peer whose base is no higher than ours may hold, above our gap, a write of
/// the origin it can never send (its record was overwritten since; only current records are
/// sent, and a claim reaches only the sender's base), and would then stay a holder, and the
/// source, for ever. Two replicas with such writes, each the other's source, never pulled the
/// gap from the peer that covers it (ClusterTest.DuplicatedLateAndDroppedDeltasStillConverge).
/// While no peer can raise our base, the source of the origin moves on to the next holder (in
/// peer id order) once a round has begun since it was chosen and its exchange for the origin is
/// over: one holder may hold only such unsendable writes while another holds writes it can send
/// (ReplicationTest.WhileNobodyCanFillAGapEveryHolderIsAskedInTurn); a source whose pull for
/// the origin is still under way keeps it, or a slow holder's late answer could make the turn
/// skip the next holder every time.
void Replicator::AssignSources() {
  const storage::VersionVector& mine = store_->version_vector();
  std::map<uint64_t, std::vector<uint64_t>> holders;  // origin -> peers holding what we lack
  for (const auto& [peer_id, p] : peers_) {
    if (!p.vector_known) continue;
    for (uint64_t origin : mine.OriginsLacking(p.vector)) holders[origin].push_back(peer_id);
  }
  std::map<uint64_t, uint64_t> sources;
  for (const auto& [origin, candidates] : holders) {
    int best_rank = 0;
    for (uint64_t c : candidates) best_rank = std::max(best_rank, SourceRank(c, peers_.at(c)));
    if (best_rank == 0) continue;
    const uint64_t my_base = mine.Base(origin);
    bool some_raises_base = false;
    for (uint64_t c : candidates) {
      const Peer& p = peers_.at(c);
      some_raises_base =
          some_raises_base || (SourceRank(c, p) == best_rank && p.vector.Base(origin) > my_base);
    }
    if (!some_raises_base) {
      std::vector<uint64_t> ranked;  // in peer id order (holders are found in map order)
      for (uint64_t c : candidates) {
        if (SourceRank(c, peers_.at(c)) == best_rank) ranked.push_back(c);
      }
      uint64_t chosen = ranked[origin % ranked.size()];
      auto before = sources_.find(origin);
      if (before != sources_.end()) {
        const uint64_t previous = before->second;
        auto since = source_since_.find(origin);
        const bool this_round = since != source_since_.end() && since->second == sync_rounds_;
        auto peer = peers_.find(previous);
        const bool fetching = peer != peers_.end() && peer->second.sync_in_flight &&
                              (peer->second.asked_all || peer->second.asked.count(origin) > 0);
        if (Contains(ranked, previous) && (this_round || fetching)) {
          chosen = previous;
        } else {
          auto next = std::upper_bound(ranked.begin(), ranked.end(), previous);
          chosen = next == ranked.end() ? ranked.front() : *next;
        }
      }
      sources.emplace(origin, chosen);
      continue;
    }
    auto before = sources_.find(origin);
    if (before != sources_.end() && Contains(candidates, before->second)) {
      const Peer& p = peers_.at(before->second);
      if (SourceRank(before->second, p) == best_rank && p.vector.Base(origin) > my_base) {
        sources.emplace(origin, before->second);
        continue;
      }
    }
    std::vector<uint64_t> best;
    uint64_t best_base = 0;
    for (uint64_t c : candidates) {
      const Peer& p = peers_.at(c);
      if (SourceRank(c, p) != best_rank) continue;
      const uint64_t base = p.vector.Base(origin);
      if (best.empty() || base > best_base) {
        best = {c};
        best_base = base;
      } else if (base == best_base) {
        best.push_back(c);
      }
    }
    sources.emplace(origin, best[origin % best.size()]);
  }
  std::map<uint64_t, uint64_t> since;
  for (const auto& [origin, source] : sources) {
    auto before = sources_.find(origin);
    auto was = source_since_.find(origin);
    since[origin] =
        before != sources_.end() && before->second == source && was != source_since_.end()
            ? was->second
            : sync_rounds_;
  }
  source_since_ = std::move(since);
  sources_ = std::move(sources);
}

/// The origins peer `peer_id` is the source of (AssignSources), less those a pull to another
/// peer is fetching now: a pull sent while only one peer was known asks for every origin, and
/// the second peer, found meanwhile, would otherwise be asked for the same records (found by
/// ClusterTest.ARestartedNodeReceivesEachMissedRecordAboutOnce: 4,000 received for 2,000
/// missed). A pull waiting a whole round is slow and fetches nothing here any more.
std::set<uint64_t> Replicator::SourcedFrom(uint64_t peer_id) const {
  std::set<uint64_t> out;
  for (const auto& [origin, source] : sources_) {
    if (source != peer_id) continue;
    const bool elsewhere = std::any_of(peers_.begin(), peers_.end(), [&](const auto& entry) {
      const Peer& q = entry.second;
      return entry.first != peer_id && q.sync_in_flight && q.rounds_waited < 2 &&
             (q.asked_all || q.asked.count(origin) > 0);
    });
    if (!elsewhere) out.insert(origin);
  }
  return out;
}

void Replicator::OnPullAnswered(uint64_t peer_id, uint64_t generation, bool genuine,
                                const std::string& bytes) {
  Peer* found = CurrentPeer(peer_id, generation);
  if (found == nullptr) return;
  auto& peer = *found;
  proto::SyncReply reply;
  storage::VersionVector theirs;
  storage::VersionVector::WireRetired wire;
  if (!genuine || !reply.ParseFromString(bytes) ||
      !storage::VersionVector::Parse(reply.sender_vector().SerializeAsString(), &theirs, &wire)) {
    spdlog::warn("database {}: malformed anti-entropy answer from {}", Quote(store_->path()),
                 FormatNodeId(peer_id));
    peer.sync_in_flight = false;
    return;
  }
  Status s = ApplyFromPeer(reply.delta());
  if (!s.ok()) {
    // Low on disk space: the node logged that once; the next round asks again.
    spdlog::log(s.code() == Code::kNoSpace ? spdlog::level::debug : spdlog::level::err,
                "database {}: cannot apply anti-entropy delta from {}: {}", Quote(store_->path()),
                FormatNodeId(peer_id), s.ToString());
    peer.sync_in_flight = false;
    return;
  }
  // After the delta: a retired origin it brought the last writes of is compacted at once.
  ReadRetired(&peer, wire, &theirs);
  peer.vector = std::move(theirs);
  peer.vector_known = true;
  peer.reachable = true;
  peer.rounds_waited = 0;
  if (peer.retired_listing != 0) peer.retired_sent = peer.retired_listing;
  if (peer.chunks_left > 0) {
    // Ask again while the answer was cut at its budget, or when the peer (its vector now
    // known) is the source of origins it was not asked for. Bounded per round like pushes:
    // the next round goes on.
    bool again = reply.more();
    if (!peer.asked_all) {
      AssignSources();
      const std::set<uint64_t> sourced = SourcedFrom(peer_id);
      const bool new_origins =
          !std::includes(peer.asked.begin(), peer.asked.end(), sourced.begin(), sourced.end());
      again = !sourced.empty() && (reply.more() || new_origins);
    }
    if (again) {
      Pull(peer_id, peer.chunks_left - 1);
      return;
    }
  }
  FinishExchange(peer_id, peer);
}

/// After the last pull of an exchange. Replicas pull from each other, so pushing here would send
/// everything twice; a replica handing its copy over is in nobody's replica set and must push.
void Replicator::FinishExchange(uint64_t peer_id, Peer& peer) {
  const auto& mine = store_->version_vector();
  if (leaving_ && peer.chunks_left > 0 && !peer.vector.Includes(mine)) {
    std::string delta;
    bool more = false;
    Status s = store_->DeltaSince(peer.vector, options_.chunk_bytes, &delta, &more);
    if (s.ok() && !delta.empty()) {
      transport_->HandOver(peer_id, peer.generation, std::move(delta));
      return;
    }
  }
  peer.sync_in_flight = false;
  AfterRound();
}

void Replicator::OnHandOverAnswered(uint64_t peer_id, uint64_t generation) {
  Peer* p = CurrentPeer(peer_id, generation);
  if (p == nullptr) return;
  Pull(peer_id, p->chunks_left - 1);
}

void Replicator::OnSyncTick() {
  if (dropped_) return;
  ++sync_rounds_;
  RemoveExpired();
  SweepDotRanges();
  // A pull unanswered for a whole round marks its peer slow (SourceRank): the pulls below ask
  // another peer for its origins, so one slow peer does not stall a catch-up.
  for (auto& [peer_id, p] : peers_) {
    if (p.sync_in_flight) ++p.rounds_waited;
  }
  bool exchanging = false;
  for (auto& [peer_id, p] : peers_) {
    if (p.full_sync) {
      exchanging = true;
      p.full_sync_pages_left = kMaxChunksPerRound;
      if (!p.full_sync_in_flight && !p.resolving) FullSyncStep(peer_id);
    }
    if (p.sync_in_flight || p.resolving) {
      exchanging = true;
      continue;
    }
    // A peer known to hold exactly what this replica holds is not pulled from, running or
    // not: one pull per database and peer every round would cost O(databases x peers)
    // messages a round (and waking a passivated peer would keep every database of a cluster
    // running). A peer that takes a write pulls from us (it lacks nothing of ours, but we lack
    // its write, and our vector as it knows it is older), which tells us its vector
    // (AnswerPull), so whichever side lacks writes keeps pulling until both agree. What neither
    // side can know of (a push lost after both last agreed) the node-level round finds: it
    // compares every database's vector digest between nodes and calls SyncNow on those that
    // differ. (Without the second test, found by the chaos check, a replica that had forgotten a
    // peer's actor never pulled that peer's newer writes.) A replica handing its copy over pulls
    // every round until the new replicas hold it.
    if (!leaving_ && InSync(p) && store_->version_vector().Includes(p.vector) && !RetiredNews(p)) {
      continue;
    }
    exchanging = true;
    Pull(peer_id, kMaxChunksPerRound);
  }
  // In sync with everyone: tombstones are still collected (AfterRound follows exchanges).
  if (!exchanging && !peers_.empty()) AfterRound();
}

bool Replicator::Quiet() const {
  if (dropped_ || leaving_ || expired_backlog_) return false;
  for (const auto& [peer_id, p] : peers_) {
    if (p.full_sync || p.sync_in_flight || p.resolving || !p.inflight.empty() ||
        !p.queued.empty() || !InSync(p) || !store_->version_vector().Includes(p.vector) ||
        RetiredNews(p)) {
      return false;
    }
  }
  return true;
}

bool Replicator::Dormant() const {
  return Quiet() && store_->tombstone_count() == 0 && store_->next_expiry() == UINT64_MAX &&
         !store_->DotRangesNeedSweep();
}

void Replicator::SyncNow() {
  if (dropped_) return;
  for (auto& [peer_id, p] : peers_) {
    if (p.sync_in_flight || p.resolving) continue;
    Pull(peer_id, kMaxChunksPerRound);
  }
}

// -- Stale repair ---------------------------------------------------------------------------------

// Why deleting here what the peer's vector covers and the peer lacks is safe whatever the gap:
// a covered dot means the peer applied that write or a newer write of the same key (a vector's
// base never covers a write otherwise: coverage ranges claim exactly that), and a replica never
// loses a key's newest record except by collecting its tombstone (or removing an expired value,
// which expires here at the same moment). So the newest record of the key there was a delete
// newer than this copy's record, and collected; this copy only missed it. The deletion is local
// and writes no tombstone: a tombstone with a new dot would be a new write, replicated to every
// replica, and by its fresh timestamp it could replace a newer put made elsewhere meanwhile
// (as an expiry that wrote a new version could; see storage/database_store.hpp). The state left
// (no record, the dot covered) is the one tombstone collection leaves on the peer. Records the
// peer has not seen (writes accepted here while apart) are never deleted and reach it by the
// delta sync.
bool Replicator::StartFullSync(uint64_t peer_id, bool answer_back) {
  if (dropped_) return false;
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return false;
  auto& p = it->second;
  if (p.full_sync) return true;
  p.full_sync = true;
  p.full_sync_after.clear();
  p.full_sync_answer_back = answer_back;
  p.full_sync_pages_left = kMaxChunksPerRound;
  p.full_sync_removed = 0;
  spdlog::debug("database {}: comparing every key with the replica on {} (stale repair)",
                Quote(store_->path()), FormatNodeId(peer_id));
  if (!p.full_sync_in_flight && !p.resolving) FullSyncStep(peer_id);
  return true;
}

bool Replicator::FullSyncRunning(uint64_t peer_id) const {
  auto it = peers_.find(peer_id);
  return it != peers_.end() && it->second.full_sync;
}

/// Asks the peer for the next page of a stale repair (at most full_sync_pages_left this round).
void Replicator::FullSyncStep(uint64_t peer_id) {
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  auto& p = it->second;
  if (!p.full_sync || p.full_sync_in_flight || p.full_sync_pages_left <= 0) return;
  if (!ReadyToSend(peer_id, p)) return;  // looked up first; OnLookupAnswered goes on
  proto::FullSyncRequest request;
  request.set_after(p.full_sync_after);
  request.set_answer_back(p.full_sync_answer_back);
  --p.full_sync_pages_left;
  p.full_sync_in_flight = true;
  transport_->FullSync(peer_id, p.generation, request.SerializeAsString());
}

Status Replicator::AnswerFullSync(uint64_t from, const std::string& bytes, std::string* out) {
  if (Blocked(from, options_.node_id)) {
    return Status::Unavailable("partitioned from " + FormatNodeId(from) + " (fault injection)");
  }
  proto::FullSyncRequest request;
  if (!request.ParseFromString(bytes)) {
    return Status::InvalidArgument("full sync: not a full sync request");
  }
  std::vector<storage::DatabaseStore::KeyDot> dots;
  bool more = false;
  Status s = store_->ListKeyDots(request.after(), kFullSyncPageEntries, options_.chunk_bytes, &dots,
                                 &more);
  if (!s.ok()) return s;
  proto::FullSyncPage page;
  for (auto& d : dots) {
    proto::KeyDot* entry = page.add_entries();
    entry->set_key(std::move(d.key));
    entry->set_origin(d.dot.origin);
    entry->set_counter(d.dot.counter);
  }
  page.set_more(more);
  // With the retired list: the asker deletes what this vector covers, so it must know it all.
  page.mutable_sender_vector()->ParseFromString(store_->version_vector().SerializeForPeer(true));
  *out = page.SerializeAsString();
  // The asker saw this node out of its view: this copy may be the stale one.
  if (request.answer_back()) StartFullSync(from, false);
  return Status::OK();
}

void Replicator::OnFullSyncFailed(uint64_t peer_id, uint64_t generation,
                                  const std::string& reason) {
  Peer* p = CurrentPeer(peer_id, generation);
  if (p == nullptr) return;
  p->full_sync_in_flight = false;
  if (++p->full_sync_failures < kMaxFullSyncFailures) return;
  spdlog::warn("database {}: stale repair with {} stopped after {} failed page requests (last: {})",
               Quote(store_->path()), FormatNodeId(peer_id), p->full_sync_failures, reason);
  p->full_sync = false;
  p->full_sync_failures = 0;
}

void Replicator::OnFullSyncAnswered(uint64_t peer_id, uint64_t generation, bool genuine,
                                    const std::string& bytes) {
  Peer* found = CurrentPeer(peer_id, generation);
  if (found == nullptr) return;
  auto& p = *found;
  p.full_sync_in_flight = false;
  p.full_sync_failures = 0;
  p.full_sync_answer_back = false;  // asked once, with the first page
  proto::FullSyncPage page;
  storage::VersionVector theirs;
  storage::VersionVector::WireRetired wire;
  if (!genuine || !page.ParseFromString(bytes) ||
      !storage::VersionVector::Parse(page.sender_vector().SerializeAsString(), &theirs, &wire) ||
      (page.more() && page.entries_size() == 0)) {
    spdlog::warn("database {}: malformed full sync answer from {}; stale repair with it stopped",
                 Quote(store_->path()), FormatNodeId(peer_id));
    p.full_sync = false;
    return;
  }
  ReadRetired(&p, wire, &theirs);
  std::vector<storage::DatabaseStore::KeyDot> dots;
  dots.reserve(page.entries_size());
  for (const auto& e : page.entries()) {
    dots.push_back({e.key(), storage::Dot{e.origin(), e.counter()}});
  }
  const std::string last = dots.empty() ? std::string() : dots.back().key;
  std::string until;
  uint64_t removed = 0;
  Status s = store_->RemoveCollectedElsewhere(p.full_sync_after, last, !page.more(), dots, theirs,
                                              kFullSyncMaxScan, &until, &removed);
  p.full_sync_removed += removed;
  if (removed > 0 && options_.node_summary) options_.node_summary->CountStaleKeysRemoved(removed);
  if (!s.ok()) {
    // A page out of order is the peer's fault: stop. Otherwise (I/O, low space) the next
    // round asks for this page again.
    spdlog::log(s.code() == Code::kInvalidArgument ? spdlog::level::warn : spdlog::level::err,
                "database {}: stale repair with {}: {}", Quote(store_->path()),
                FormatNodeId(peer_id), s.ToString());
    if (s.code() == Code::kInvalidArgument) p.full_sync = false;
    return;
  }
  // What it told is its vector now, as a pull's answer would.
  p.vector = std::move(theirs);
  p.vector_known = true;
  p.reachable = true;
  if (!until.empty()) {
    p.full_sync_after = std::move(until);
  } else if (page.more()) {
    p.full_sync_after = last;
  } else {
    p.full_sync = false;
    if (options_.node_summary) options_.node_summary->CountStaleRepair();
    spdlog::log(p.full_sync_removed > 0 ? spdlog::level::info : spdlog::level::debug,
                "database {}: stale repair with {} done: removed {} keys (or tombstones) that "
                "were deleted and collected there",
                Quote(store_->path()), FormatNodeId(peer_id), p.full_sync_removed);
    return;
  }
  FullSyncStep(peer_id);
}

/// Expired records are removed here, at most kMaxExpiredPerRound a round, so a mass expiry is
/// spread over rounds instead of holding the database actor.
void Replicator::RemoveExpired() {
  uint64_t removed = 0;
  const uint64_t now = store_->WallTicks();
  Status s = store_->CollectExpired(now, kMaxExpiredPerRound, &removed);
  // Still due after the sweep (it stops after kMaxExpiredPerRound index entries, stale ones
  // included): the next round comes soon, not a quiet one.
  expired_backlog_ = s.ok() && store_->next_expiry() <= now;
  if (!s.ok()) {
    spdlog::error("database {}: removing expired keys failed: {}", Quote(store_->path()),
                  s.ToString());
  } else if (removed > 0) {
    spdlog::debug("database {}: removed {} expired keys", Quote(store_->path()), removed);
  }
}

/// When the dot ranges are due for a sweep (DatabaseStore::DotRangesNeedSweep: more than half of
/// their members stale, or the list of stale dots half full), a round examines up to
/// kMaxSweptMembersPerRound members reading their records, or kListedSweepFactor times as many
/// listed dots reading none, in steps of kSweptMembersPerStep that the owner takes
/// (ContinueSweep; a step examines whole ranges, so up to one range more than its share). The
/// database stays out of dormancy while the ranges are due for a sweep (Dormant).
void Replicator::SweepDotRanges() {
  // A round's steps not taken by the next round are not added to it.
  sweep_budget_ = store_->DotRangesNeedSweep() ? kMaxSweptMembersPerRound : 0;
}

void Replicator::ContinueSweep() {
  if (SweepContinues()) SweepStep();
}

void Replicator::SweepStep() {
  const size_t members = std::min(sweep_budget_, kSweptMembersPerStep);
  sweep_budget_ -= members;
  uint64_t removed = 0;
  bool more = false;
  Status s = store_->SweepDotRanges(members, &removed, &more);
  if (!s.ok() || !more) sweep_budget_ = 0;
  if (!s.ok()) {
    spdlog::error("database {}: sweeping the dot ranges failed: {}", Quote(store_->path()),
                  s.ToString());
  } else if (removed > 0) {
    spdlog::debug("database {}: removed {} stale dot index members", Quote(store_->path()),
                  removed);
  }
}

/// After an exchange: finish a hand-over, or collect the tombstones every replica has seen.
void Replicator::AfterRound() {
  bool all_known = !peers_.empty();
  storage::VersionVector stable = store_->version_vector();
  bool all_include_mine = true;
  bool includes_all_theirs = true;
  for (auto& [peer_id, p] : peers_) {
    if (!p.vector_known) {
      all_known = false;
      break;
    }
    stable = storage::VersionVector::Min(stable, p.vector);
    if (!p.vector.Includes(store_->version_vector())) all_include_mine = false;
    // A write a peer has seen and we have not may still be on its way here (a queued push); if
    // it is older than a tombstone we collected, it would bring the key back.
    if (!store_->version_vector().Includes(p.vector)) includes_all_theirs = false;
  }
  if (!all_known) return;
  if (leaving_ && all_include_mine) {
    spdlog::info(
        "database {}: every new replica ({}) holds this node's writes; dropping the "
        "local copy",
        Quote(store_->path()), FormatNodeIds(replicas_.nodes));
    // This copy's origin never writes again, and every new replica covers it through its
    // last counter: they may compact it out of their vectors (storage/version_vector.hpp).
    // Not for an origin that is the node id (data from before per-copy origins).
    const uint64_t origin = store_->origin();
    const uint64_t last = store_->local_counter();
    transport_->Retire();
    Status s = store_->Drop();
    if (!s.ok()) {
      spdlog::error("database {}: cannot drop the local copy: {}", Quote(store_->path()),
                    s.ToString());
      return;
    }
    if (last > 0 && origin != options_.node_id) {
      proto::Delta announcement;
      proto::RetiredOrigin* retired = announcement.add_retired();
      retired->set_origin(origin);
      retired->set_last_counter(last);
      const std::string bytes = announcement.SerializeAsString();
      for (auto& [peer_id, p] : peers_) {
        if (p.found && !Blocked(options_.node_id, peer_id)) transport_->Announce(peer_id, bytes);
      }
    }
    FailPendingWrites();
    dropped_ = true;
    transport_->Dropped();
    return;
  }
  if (leaving_ || !includes_all_theirs || store_->tombstone_count() == 0) return;
  CollectTombstones(stable);
}

/// Collects the tombstones that every replica's vector covers (`stable`) and that are older than
/// the grace period, so a replica cut off for less than that still receives the deletes.
void Replicator::CollectTombstones(const storage::VersionVector& stable) {
  // A sixteenth of the grace period apart, at most a minute: a tombstone goes at most that
  // much after its grace period, and tombstones kept are not rescanned every round.
  const auto now =
      options_.steady_clock ? options_.steady_clock() : std::chrono::steady_clock::now();
  const auto spacing =
      std::min<std::chrono::nanoseconds>(options_.tombstone_grace / 16, std::chrono::minutes(1));
  if (now - last_collection_ < spacing) return;
  last_collection_ = now;
  const auto wall = options_.wall_clock ? options_.wall_clock() : std::chrono::system_clock::now();
  const int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count();
  const int64_t grace_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.tombstone_grace).count();
  if (now_ms <= grace_ms) return;
  const uint64_t max_hlc = storage::hlc::FromMillis(now_ms - grace_ms);
  uint64_t collected = 0;
  Status s = store_->CollectTombstones(stable, max_hlc, &collected);
  if (!s.ok()) {
    spdlog::error("database {}: tombstone collection failed: {}", Quote(store_->path()),
                  s.ToString());
  } else if (collected > 0) {
    spdlog::debug("database {}: collected {} tombstones", Quote(store_->path()), collected);
  }
}

// -- Replica sets and state -----------------------------------------------------------------------

void Replicator::OnReplicaSet(ReplicaSet replicas) {
  if (dropped_) return;
  const uint64_t me = options_.node_id;
  replicas_ = std::move(replicas);
  leaving_ = !Contains(replicas_.nodes, me);
  std::vector<uint64_t> gone;
  for (auto& [peer_id, p] : peers_) {
    if (!Contains(replicas_.nodes, peer_id)) gone.push_back(peer_id);
  }
  for (uint64_t peer_id : gone) {
    GiveUp(peer_id);
    peers_.erase(peer_id);
  }
  for (uint64_t peer_id : replicas_.nodes) {
    if (peer_id == me) continue;
    auto [it, added] = peers_.try_emplace(peer_id);
    if (added) it->second.generation = ++last_generation_;
    if (Contains(replicas_.unreachable, peer_id)) {
      if (it->second.reachable || !it->second.inflight.empty() || !it->second.queued.empty()) {
        GiveUp(peer_id);
      }
    } else if (added || !it->second.reachable) {
      // New, or back: exchange at once rather than at the next round.
      if (!it->second.sync_in_flight) Pull(peer_id, kMaxChunksPerRound);
    }
  }
}

bool Replicator::MayPassivate() const {
  // A copy being handed over stays up until the new replicas hold it (then it drops it), and a
  // replica passivates only once every peer holds its writes, so a passivated replica never
  // holds a write the others lack.
  if (leaving_) return false;
  for (const auto& [peer_id, p] : peers_) {
    // A stale repair under way finishes first (it was woken for it).
    if (!InSync(p) || p.full_sync) return false;
  }
  return true;
}

ReplicationStatus Replicator::MakeStatus() const {
  ReplicationStatus out;
  const DatabaseStats stats = store_->Stats();
  out.path = store_->path();
  out.node_id = options_.node_id;
  out.replicas = replicas_.nodes;
  out.min = replicas_.min;
  out.max = replicas_.max;
  out.required_acks = replicas_.required_acks;
  out.key_count = stats.key_count;
  out.used_bytes = stats.used_bytes;
  out.tombstones = store_->tombstone_count();
  out.digest = store_->digest();
  out.version_vector = store_->version_vector().ToString();
  out.writes_seen = store_->version_vector().Total();
  out.entries_received = entries_received_;
  out.entries_applied = entries_applied_;
  for (const auto& [peer_id, p] : peers_) {
    PeerReplicaStatus peer;
    peer.node_id = peer_id;
    peer.reachable = p.reachable && !Blocked(options_.node_id, peer_id);
    if (p.vector_known) {
      peer.version_vector = p.vector.ToString();
      peer.writes_seen = p.vector.Total();
    }
    peer.pending_deltas = p.queued_writes.size();
    for (const auto& push : p.inflight) peer.pending_deltas += push.writes.size();
    out.peers.push_back(std::move(peer));
  }
  return out;
}

}  // namespace kvmesh::replication
