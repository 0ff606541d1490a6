#include "actors/database_actor.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <algorithm>

#include "actors/database_request.hpp"
#include "common/path.hpp"
#include "messages/cluster.pb.h"

namespace kvmesh {
namespace {

using database_pointer = database_actor::stateful_pointer<database_state>;

/// Anti-entropy chunks pushed to one peer in one round at most (the next round goes on).
constexpr int kMaxPushChunksPerRound = 64;

uint64_t SelfId(database_pointer self) {
  return self->state.replication->node_id;
}

bool Blocked(database_pointer self, uint64_t from, uint64_t to) {
  const auto& faults = self->state.replication->faults;
  return faults && faults->Blocked(from, to);
}

const std::string& PathOf(database_pointer self) {
  return self->state.store->path();
}

/// Settles write `id` if it has its acknowledgements, or can no longer get them.
void Settle(database_pointer self, uint64_t id) {
  auto& writes = self->state.writes;
  auto it = writes.find(id);
  if (it == writes.end()) return;
  auto& w = it->second;
  if (w.acks >= w.needed) {
    w.promise.deliver(atom::ok_v);
    writes.erase(it);
  } else if (w.acks + w.outstanding < w.needed) {
    w.promise.deliver(ToError(Status::Unavailable(
        "write to database " + Quote(PathOf(self)) + " reached " + std::to_string(w.acks) +
        " of the " + std::to_string(w.needed) +
        " replicas that replication.min requires; it may still be applied (replicas: " +
        FormatNodeIds(self->state.replicas.nodes) + ")")));
    writes.erase(it);
  }
}

void Acknowledge(database_pointer self, const std::vector<uint64_t>& ids, bool ok) {
  for (uint64_t id : ids) {
    auto it = self->state.writes.find(id);
    if (it == self->state.writes.end()) continue;
    --it->second.outstanding;
    if (ok) ++it->second.acks;
    Settle(self, id);
  }
}

/// Gives up on what is queued for and in flight to `peer_id` (unreachable, partitioned, or out of
/// the replica set): its writes stop waiting for it; anti-entropy repairs it later.
void GiveUp(database_pointer self, uint64_t peer_id) {
  auto it = self->state.peers.find(peer_id);
  if (it == self->state.peers.end()) return;
  auto& p = it->second;
  p.generation = ++self->state.last_generation;
  p.reachable = false;
  p.resolving = false;
  p.push_in_flight = false;
  p.sync_in_flight = false;
  p.queued.clear();
  auto queued = std::move(p.queued_writes);
  auto inflight = std::move(p.inflight_writes);
  p.queued_writes.clear();
  p.inflight_writes.clear();
  Acknowledge(self, queued, false);
  Acknowledge(self, inflight, false);
}

/// The peer an answer is for, or null if it was given up on (or removed) since the request was
/// sent: a late answer must not touch the state of a newer exchange.
database_state::Peer* CurrentPeer(database_pointer self, uint64_t peer_id, uint64_t generation) {
  auto it = self->state.peers.find(peer_id);
  if (it == self->state.peers.end() || it->second.generation != generation) return nullptr;
  return &it->second;
}

void Forget(database_pointer self, uint64_t peer_id, const caf::error& err);

/// The error half of every request to a peer: forget the peer unless the answer is stale.
auto ForgetOnError(database_pointer self, uint64_t peer_id, uint64_t generation) {
  return [=](caf::error& err) {
    if (CurrentPeer(self, peer_id, generation) != nullptr) Forget(self, peer_id, err);
  };
}

/// True if `p` is known to hold every write this replica holds.
bool InSync(database_pointer self, const database_state::Peer& p) {
  return p.vector_known && p.vector.Includes(self->state.store->version_vector());
}

/// True if the message being handled comes from this actor itself (its timers).
bool FromSelf(database_pointer self) {
  return self->current_sender() != nullptr && self->current_sender() == self->ctrl();
}

/// True if the message being handled comes from the supervisor. Other nodes hold this actor's
/// handle, so messages that steer it are checked.
bool FromSupervisor(database_pointer self) {
  return FromExpected(self, self->state.supervisor);
}

/// Applies a delta from another replica and counts what it brought.
Status ApplyFromPeer(database_pointer self, const std::string& delta) {
  storage::DatabaseStore::ApplyResult result;
  Status s = self->state.store->ApplyDelta(delta, &result);
  if (s.ok()) {
    self->state.entries_received += result.applied + result.skipped;
    self->state.entries_applied += result.applied;
  }
  return s;
}

/// Stops direct reads of this actor's store: later ones take the actor path (and re-open).
void Retire(database_pointer self) {
  if (self->state.direct) self->state.direct->retired.store(true, std::memory_order_release);
}

/// Answers every write still waiting for acknowledgements (the actor stops).
void FailPendingWrites(database_pointer self) {
  for (auto& [peer_id, p] : self->state.peers) GiveUp(self, peer_id);
  for (auto& [id, w] : self->state.writes) {
    w.promise.deliver(ToError(Status::Unavailable(
        "database " + Quote(PathOf(self)) +
        " stopped before the write reached the replicas that replication.min requires; it "
        "may still be applied")));
  }
  self->state.writes.clear();
}

/// After a failed request to a peer: a stopped or unreachable actor is looked up again later.
void Forget(database_pointer self, uint64_t peer_id, const caf::error& err) {
  auto it = self->state.peers.find(peer_id);
  if (it == self->state.peers.end()) return;
  spdlog::debug("database {}: replica on {} failed: {}", Quote(PathOf(self)), FormatNodeId(peer_id),
                to_string(err));
  it->second.actor = nullptr;
  GiveUp(self, peer_id);
}

void Flush(database_pointer self, uint64_t peer_id);
void Pull(database_pointer self, uint64_t peer_id, int pushes_left);
void Resolve(database_pointer self, uint64_t peer_id);

/// True if `p` (peer `peer_id`) can be sent to now. Otherwise gives up on a partitioned peer, or
/// starts looking up one whose actor is unknown (which sends when it is found).
bool ReadyToSend(database_pointer self, uint64_t peer_id, database_state::Peer& p) {
  if (Blocked(self, SelfId(self), peer_id)) {
    GiveUp(self, peer_id);
    return false;
  }
  if (!p.actor) {
    Resolve(self, peer_id);
    return false;
  }
  return true;
}
void AfterRound(database_pointer self);

/// Looks up the peer's database actor through the supervisor (instantiating it there), then
/// flushes its queue and starts an anti-entropy round with it.
void Resolve(database_pointer self, uint64_t peer_id) {
  auto& p = self->state.peers[peer_id];
  if (p.resolving) return;
  if (Blocked(self, SelfId(self), peer_id)) {
    GiveUp(self, peer_id);
    return;
  }
  p.resolving = true;
  spdlog::debug("database {}: looking up its replica on {}", Quote(PathOf(self)),
                FormatNodeId(peer_id));
  const uint64_t generation = p.generation;
  auto supervisor = self->state.supervisor;
  self->request(supervisor, self->state.replication->timeout, atom::replica_v, PathOf(self),
                peer_id)
      .then(
          [=](database_actor& actor) {
            auto* peer = CurrentPeer(self, peer_id, generation);
            if (peer == nullptr) return;
            peer->resolving = false;
            if (!FromExpected(self, supervisor)) return;
            peer->actor = actor;
            peer->reachable = true;
            self->monitor(actor);
            Flush(self, peer_id);
            if (!peer->sync_in_flight) Pull(self, peer_id, kMaxPushChunksPerRound);
          },
          ForgetOnError(self, peer_id, generation));
}

/// Sends the peer what is queued for it, unless a push is on its way (then it goes when that
/// one is answered: this is how pushes batch).
void Flush(database_pointer self, uint64_t peer_id) {
  auto it = self->state.peers.find(peer_id);
  if (it == self->state.peers.end()) return;
  auto& p = it->second;
  if (p.push_in_flight || p.queued.empty() || !ReadyToSend(self, peer_id, p)) return;
  std::string payload = std::move(p.queued);
  p.queued.clear();
  p.inflight_writes = std::move(p.queued_writes);
  p.queued_writes.clear();
  p.push_in_flight = true;
  const uint64_t generation = p.generation;
  LinkFaults::DeltaFate fate;
  if (self->state.replication->faults) fate = self->state.replication->faults->NextDeltaFate();
  if (fate.drop) {
    // As if the link lost it: the writes do not count this replica.
    p.push_in_flight = false;
    auto lost = std::move(p.inflight_writes);
    p.inflight_writes.clear();
    Acknowledge(self, lost, false);
    Flush(self, peer_id);
    return;
  }
  auto target = p.actor;
  if (fate.duplicate) {
    if (fate.duplicate_delay_ms == 0) {
      caf::anon_send(target, atom::replicate_v, payload, SelfId(self));
    } else {
      caf::delayed_anon_send(target, std::chrono::milliseconds(fate.duplicate_delay_ms),
                             atom::replicate_v, payload, SelfId(self));
    }
  }
  self->request(target, self->state.replication->timeout, atom::replicate_v, std::move(payload),
                SelfId(self))
      .then(
          [=](atom::ok) {
            auto* found = CurrentPeer(self, peer_id, generation);
            if (found == nullptr) return;
            auto& peer = *found;
            peer.push_in_flight = false;
            auto done = std::move(peer.inflight_writes);
            peer.inflight_writes.clear();
            Acknowledge(self, done, FromExpected(self, target));
            Flush(self, peer_id);
          },
          ForgetOnError(self, peer_id, generation));
}

/// Queues a delta for every peer; `write_id` 0 means nobody waits for it.
void Push(database_pointer self, const std::string& delta, uint64_t write_id) {
  auto& st = self->state;
  for (auto& [peer_id, p] : st.peers) {
    const bool unreachable =
        std::find(st.replicas.unreachable.begin(), st.replicas.unreachable.end(), peer_id) !=
        st.replicas.unreachable.end();
    if (unreachable || p.queued.size() + delta.size() > st.replication->max_queued_bytes) {
      // Not waited for: membership sees it down, or it is too far behind. Anti-entropy catches
      // it up.
      if (write_id != 0) Acknowledge(self, {write_id}, false);
      continue;
    }
    p.queued += delta;
    if (write_id != 0) p.queued_writes.push_back(write_id);
    Flush(self, peer_id);
  }
}

/// Replicates a local write whose delta is `delta` and answers the writer once enough replicas
/// hold it.
caf::result<atom::ok> Replicate(database_pointer self, std::string delta) {
  auto& st = self->state;
  const uint32_t needed = std::max<uint32_t>(1, st.replicas.required_acks);
  if (delta.empty()) return atom::ok_v;  // the write changed nothing (an empty batch)
  if (needed <= 1) {
    if (!st.peers.empty()) Push(self, delta, 0);
    return atom::ok_v;
  }
  const uint64_t id = ++st.next_write_id;
  auto promise = self->make_response_promise<atom::ok>();
  st.writes.emplace(
      id, database_state::PendingWrite{promise, 1, static_cast<uint32_t>(st.peers.size()), needed});
  Settle(self, id);  // fails at once if there are too few peers
  if (st.writes.count(id) > 0) Push(self, delta, id);
  return promise;
}

/// One anti-entropy exchange with a peer: pull what we lack (repeating while the answer was cut
/// at its budget); when handing our copy over, also push what it lacks and pull again to learn
/// its new vector.
void Pull(database_pointer self, uint64_t peer_id, int pushes_left) {
  auto it = self->state.peers.find(peer_id);
  if (it == self->state.peers.end()) return;
  auto& p = it->second;
  if (!ReadyToSend(self, peer_id, p)) return;
  p.sync_in_flight = true;
  const uint64_t generation = p.generation;
  auto target = p.actor;
  self->request(target, self->state.replication->timeout, atom::sync_v,
                self->state.store->version_vector().Serialize(), SelfId(self))
      .then(
          [=](std::string& bytes) {
            auto* found = CurrentPeer(self, peer_id, generation);
            if (found == nullptr) return;
            auto& peer = *found;
            proto::SyncReply reply;
            storage::VersionVector theirs;
            if (!FromExpected(self, target) || !reply.ParseFromString(bytes) ||
                !storage::VersionVector::Parse(reply.sender_vector().SerializeAsString(),
                                               &theirs)) {
              spdlog::warn("database {}: malformed anti-entropy answer from {}",
                           Quote(PathOf(self)), FormatNodeId(peer_id));
              peer.sync_in_flight = false;
              return;
            }
            Status s = ApplyFromPeer(self, reply.delta());
            if (!s.ok()) {
              spdlog::error("database {}: cannot apply anti-entropy delta from {}: {}",
                            Quote(PathOf(self)), FormatNodeId(peer_id), s.ToString());
              peer.sync_in_flight = false;
              return;
            }
            peer.vector = std::move(theirs);
            peer.vector_known = true;
            peer.reachable = true;
            if (reply.more() && pushes_left > 0) {
              // Bounded per round like pushes: the next round goes on.
              Pull(self, peer_id, pushes_left - 1);
              return;
            }
            // Replicas pull from each other, so pushing here would send everything twice; a
            // replica handing its copy over is in nobody's replica set and must push.
            const auto& mine = self->state.store->version_vector();
            if (self->state.leaving && pushes_left > 0 && !peer.vector.Includes(mine)) {
              std::string delta;
              bool more = false;
              s = self->state.store->DeltaSince(peer.vector, self->state.replication->chunk_bytes,
                                                &delta, &more);
              if (s.ok() && !delta.empty()) {
                self->request(target, self->state.replication->timeout, atom::replicate_v,
                              std::move(delta), SelfId(self))
                    .then(
                        [=](atom::ok) {
                          if (CurrentPeer(self, peer_id, generation) == nullptr) return;
                          Pull(self, peer_id, pushes_left - 1);
                        },
                        ForgetOnError(self, peer_id, generation));
                return;
              }
            }
            peer.sync_in_flight = false;
            AfterRound(self);
          },
          ForgetOnError(self, peer_id, generation));
}

/// After an exchange: collect the tombstones every replica has seen, and finish a hand-over.
void AfterRound(database_pointer self) {
  auto& st = self->state;
  bool all_known = !st.peers.empty();
  storage::VersionVector stable = st.store->version_vector();
  bool all_include_mine = true;
  bool includes_all_theirs = true;
  for (auto& [peer_id, p] : st.peers) {
    if (!p.vector_known) {
      all_known = false;
      break;
    }
    stable = storage::VersionVector::Min(stable, p.vector);
    if (!p.vector.Includes(st.store->version_vector())) all_include_mine = false;
    // A write a peer has seen and we have not may still be on its way here (a queued push); if
    // it is older than a tombstone we collected, it would bring the key back.
    if (!st.store->version_vector().Includes(p.vector)) includes_all_theirs = false;
  }
  if (!all_known) return;
  if (st.leaving && all_include_mine) {
    spdlog::info(
        "database {}: every new replica ({}) holds this node's writes; dropping the "
        "local copy",
        Quote(PathOf(self)), FormatNodeIds(self->state.replicas.nodes));
    Retire(self);
    Status s = st.store->Drop();
    if (!s.ok()) {
      spdlog::error("database {}: cannot drop the local copy: {}", Quote(PathOf(self)),
                    s.ToString());
      return;
    }
    self->send(st.supervisor, atom::dropped_v, PathOf(self), caf::actor_cast<database_actor>(self));
    FailPendingWrites(self);
    self->quit();
    return;
  }
  if (st.leaving || !includes_all_theirs || st.store->tombstone_count() == 0) return;
  // A sixteenth of the grace period apart, at most a minute: a tombstone goes at most that
  // much after its grace period, and tombstones kept are not rescanned every round.
  const auto now = std::chrono::steady_clock::now();
  const auto spacing =
      std::min<caf::timespan>(st.replication->tombstone_grace / 16, std::chrono::minutes(1));
  if (now - st.last_collection < spacing) return;
  st.last_collection = now;
  // Timestamps are wall-clock milliseconds << 16, below-millisecond time in the low bits
  // (storage::Store::NextTimestamp).
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  const int64_t grace_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(st.replication->tombstone_grace)
          .count();
  if (now_ms <= grace_ms) return;
  const uint64_t max_hlc = static_cast<uint64_t>(now_ms - grace_ms) << 16;
  uint64_t collected = 0;
  Status s = st.store->CollectTombstones(stable, max_hlc, &collected);
  if (!s.ok()) {
    spdlog::error("database {}: tombstone collection failed: {}", Quote(PathOf(self)),
                  s.ToString());
  } else if (collected > 0) {
    spdlog::debug("database {}: collected {} tombstones", Quote(PathOf(self)), collected);
  }
}

/// Takes a new replica set: peers join and leave, unreachable ones stop being waited for.
void SetReplicas(database_pointer self, ReplicaSet replicas) {
  auto& st = self->state;
  const uint64_t me = SelfId(self);
  st.replicas = std::move(replicas);
  st.leaving =
      std::find(st.replicas.nodes.begin(), st.replicas.nodes.end(), me) == st.replicas.nodes.end();
  std::vector<uint64_t> gone;
  for (auto& [peer_id, p] : st.peers) {
    if (std::find(st.replicas.nodes.begin(), st.replicas.nodes.end(), peer_id) ==
        st.replicas.nodes.end()) {
      gone.push_back(peer_id);
    }
  }
  for (uint64_t peer_id : gone) {
    GiveUp(self, peer_id);
    st.peers.erase(peer_id);
  }
  for (uint64_t peer_id : st.replicas.nodes) {
    if (peer_id == me) continue;
    auto [it, added] = st.peers.try_emplace(peer_id);
    if (added) it->second.generation = ++st.last_generation;
    const bool unreachable =
        std::find(st.replicas.unreachable.begin(), st.replicas.unreachable.end(), peer_id) !=
        st.replicas.unreachable.end();
    if (unreachable) {
      if (it->second.reachable || it->second.push_in_flight || !it->second.queued.empty()) {
        GiveUp(self, peer_id);
      }
    } else if (added || !it->second.reachable) {
      // New, or back: exchange at once rather than at the next round.
      if (!it->second.sync_in_flight) Pull(self, peer_id, kMaxPushChunksPerRound);
    }
  }
}

ReplicationStatus MakeStatus(database_pointer self) {
  auto& st = self->state;
  ReplicationStatus out;
  const DatabaseStats stats = st.store->Stats();
  out.path = PathOf(self);
  out.node_id = SelfId(self);
  out.replicas = st.replicas.nodes;
  out.min = st.replicas.min;
  out.max = st.replicas.max;
  out.required_acks = st.replicas.required_acks;
  out.key_count = stats.key_count;
  out.used_bytes = stats.used_bytes;
  out.tombstones = st.store->tombstone_count();
  out.digest = st.store->digest();
  out.version_vector = st.store->version_vector().ToString();
  out.writes_seen = st.store->version_vector().Total();
  out.entries_received = st.entries_received;
  out.entries_applied = st.entries_applied;
  for (const auto& [peer_id, p] : st.peers) {
    PeerReplicaStatus peer;
    peer.node_id = peer_id;
    peer.reachable = p.reachable && !Blocked(self, SelfId(self), peer_id);
    if (p.vector_known) {
      peer.version_vector = p.vector.ToString();
      peer.writes_seen = p.vector.Total();
    }
    peer.pending_deltas = p.queued_writes.size() + p.inflight_writes.size();
    out.peers.push_back(std::move(peer));
  }
  return out;
}

}  // namespace

database_actor::behavior_type database_actor_impl(
    database_pointer self, std::shared_ptr<storage::DatabaseStore> store,
    matcher_supervisor_actor supervisor, caf::timespan idle_timeout,
    std::shared_ptr<const ReplicationOptions> replication, ReplicaSet replicas,
    std::shared_ptr<DirectReadTarget> direct) {
  auto& st = self->state;
  st.store = std::move(store);
  st.direct = std::move(direct);
  st.supervisor = supervisor;
  st.replication = std::move(replication);
  SetReplicas(self, std::move(replicas));
  if (idle_timeout.count() > 0) self->delayed_send(self, idle_timeout, atom::tick_v);
  if (st.replication->sync_interval.count() > 0) {
    self->delayed_send(self, st.replication->sync_interval, atom::sync_v);
  }
  self->set_down_handler([self](caf::down_msg& msg) {
    for (auto& [peer_id, p] : self->state.peers) {
      if (p.actor && p.actor.address() == msg.source) {
        p.actor = nullptr;
        GiveUp(self, peer_id);
      }
    }
  });
  // Nobody may be left waiting on the way out: writes waiting for acknowledgements fail.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    // Other nodes hold this actor's handle (replicas talk directly); their exits are ignored.
    // The sender decides, not the exit's source field: an anonymous exit from the network
    // carries this actor's own address as its source.
    const auto& sender = self->current_sender();
    if (sender == nullptr || sender->node() != self->node()) return;
    Retire(self);
    FailPendingWrites(self);
    self->quit(msg.reason);
  });
  // CAF's defaults would stop the actor on an asynchronous error message and print every unknown
  // message to stdout: both are a peer's to send.
  self->set_error_handler([](caf::error&) { spdlog::debug("database actor ignored an error"); });
  self->set_default_handler(caf::drop);
  // Runs a storage call and turns its Status into the reply or a "kvmesh" error.
  auto serve = [self](auto&& call) -> Status {
    ++self->state.requests_since_tick;
    return call(*self->state.store);
  };
  // Runs a local write and replicates its delta.
  auto write = [self](auto&& call) -> caf::result<atom::ok> {
    ++self->state.requests_since_tick;
    std::string delta;
    // No delta is made when nobody needs it: no peers, and no acknowledgements to wait for.
    const bool alone = self->state.peers.empty() && self->state.replicas.required_acks <= 1;
    Status s = call(*self->state.store, alone ? nullptr : &delta);
    if (!s.ok()) return ToError(s);
    return Replicate(self, std::move(delta));
  };
  return {
      [=](atom::put, const std::string& key, const std::string& value) {
        return write([&](storage::DatabaseStore& db, std::string* delta) {
          return db.Put(key, value, delta);
        });
      },
      [=](atom::get, const std::string& key) -> caf::result<std::string> {
        std::string value;
        Status s = serve([&](storage::DatabaseStore& db) { return db.Get(key, &value); });
        if (!s.ok()) return ToError(s);
        return value;
      },
      [=](atom::erase, const std::string& key) {
        return write(
            [&](storage::DatabaseStore& db, std::string* delta) { return db.Erase(key, delta); });
      },
      [=](atom::list, const ListOptions& options) -> caf::result<ListPage> {
        ListPage page;
        Status s = serve([&](storage::DatabaseStore& db) { return db.List(options, &page); });
        if (!s.ok()) return ToError(s);
        return page;
      },
      [=](atom::batch, const WriteBatch& batch) {
        return write(
            [&](storage::DatabaseStore& db, std::string* delta) { return db.Write(batch, delta); });
      },
      [=](atom::stats) -> DatabaseStats {
        ++self->state.requests_since_tick;
        return self->state.store->Stats();
      },
      [=](atom::status) -> ReplicationStatus {
        ++self->state.requests_since_tick;
        return MakeStatus(self);
      },
      [=](atom::replicate, const std::string& delta, uint64_t from) -> caf::result<atom::ok> {
        ++self->state.requests_since_tick;
        if (Blocked(self, from, SelfId(self))) {
          return ToError(
              Status::Unavailable("partitioned from " + FormatNodeId(from) + " (fault injection)"));
        }
        Status s = ApplyFromPeer(self, delta);
        if (!s.ok()) {
          spdlog::warn("database {}: refused a delta from {}: {}", Quote(PathOf(self)),
                       FormatNodeId(from), s.ToString());
          return ToError(s);
        }
        return atom::ok_v;
      },
      [=](atom::sync, const std::string& vector_bytes, uint64_t from) -> caf::result<std::string> {
        // Not counted as use: peers' periodic pulls alone must not keep a database active.
        if (Blocked(self, from, SelfId(self))) {
          return ToError(
              Status::Unavailable("partitioned from " + FormatNodeId(from) + " (fault injection)"));
        }
        storage::VersionVector theirs;
        if (!storage::VersionVector::Parse(vector_bytes, &theirs)) {
          return ToError(Status::InvalidArgument("sync: not a version vector"));
        }
        proto::SyncReply reply;
        bool more = false;
        Status s = self->state.store->DeltaSince(theirs, self->state.replication->chunk_bytes,
                                                 reply.mutable_delta(), &more);
        if (!s.ok()) return ToError(s);
        reply.set_more(more);
        reply.mutable_sender_vector()->ParseFromString(
            self->state.store->version_vector().Serialize());
        // The asker's vector is what it has now: good enough to learn from without a round.
        auto peer = self->state.peers.find(from);
        if (peer != self->state.peers.end()) {
          peer->second.vector = std::move(theirs);
          peer->second.vector_known = true;
        }
        return reply.SerializeAsString();
      },
      [=](atom::replicas, ReplicaSet& replicas) {
        if (FromSupervisor(self)) SetReplicas(self, std::move(replicas));
      },
      [=](atom::sync) {
        if (!FromSelf(self)) return;
        auto& st = self->state;
        for (auto& [peer_id, p] : st.peers) {
          if (p.sync_in_flight || p.resolving) continue;
          // A peer whose actor is gone (passivated, or forgotten after an error) is only woken
          // if it may lack our writes or hold writes we lack: waking idle peers every round
          // would keep every database of a cluster running. A running peer pulls from us every
          // round, which tells us its vector (the handler above); a passivated one takes no
          // writes, so its last vector stays true. (Without the second test, found by the chaos
          // check, a replica that had forgotten a peer's actor never pulled that peer's newer
          // writes, and with pull-only anti-entropy nobody else sent them.)
          if (!p.actor && InSync(self, p) && st.store->version_vector().Includes(p.vector)) {
            continue;
          }
          Pull(self, peer_id, kMaxPushChunksPerRound);
        }
        self->delayed_send(self, st.replication->sync_interval, atom::sync_v);
      },
      [=](atom::limit, uint64_t bytes) {
        if (FromSupervisor(self)) self->state.store->set_size_limit(bytes);
      },
      [=](atom::tick) {
        if (!FromSelf(self)) return;
        // A copy being handed over stays up until the new replicas hold it (then it drops it),
        // and a replica passivates only once every peer holds its writes, so a passivated
        // replica never holds a write the others lack.
        bool in_sync = !self->state.leaving;
        for (const auto& [peer_id, p] : self->state.peers) in_sync = in_sync && InSync(self, p);
        // Direct reads (actors/direct_reads.hpp) count as use.
        const bool read_directly =
            self->state.direct != nullptr &&
            self->state.direct->used.exchange(false, std::memory_order_relaxed);
        if (self->state.requests_since_tick == 0 && !read_directly && in_sync) {
          self->send(supervisor, atom::idle_v, PathOf(self), caf::actor_cast<database_actor>(self));
        }
        self->state.requests_since_tick = 0;
        self->delayed_send(self, idle_timeout, atom::tick_v);
      },
      [=](atom::passivate) {
        if (!FromSupervisor(self)) return;
        Retire(self);
        FailPendingWrites(self);
        self->quit();
      },
  };
}

}  // namespace kvmesh
