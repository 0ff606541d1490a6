#include "actors/database_actor.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include <optional>

#include "actors/database_request.hpp"
#include "actors/watch_hub.hpp"
#include "common/path.hpp"
#include "common/request_limits.hpp"
#include "storage/backup.hpp"
#include "storage/store.hpp"

namespace kvmesh {

using database_pointer = database_actor::stateful_pointer<database_state>;

/// Group commit: applies the writes queued since the last commit (defined below).
void CommitGroup(database_pointer self);
/// Arms the next anti-entropy round (database_state::round_seq): in sync_interval, or with
/// `quiet` in kQuietRounds sync intervals (expired keys and tombstones are still collected while
/// in sync). A dormant replica (Replicator::Dormant) arms none.
void ArmRound(database_pointer self, bool quiet = false);
constexpr int kQuietRounds = 30;

namespace {

/// Ends the requests this replica still waits on (a conditional batch forwarded to the judging
/// replica, a read at a level): their callers are answered now instead of never.
void EndRequests(database_pointer self) {
  self->state.deadlines->EndAll(ToError(Status::Unavailable(
      "database " + Quote(self->state.store->path()) +
      " stopped on this node while a request waited for another replica; it may have been "
      "applied")));
}

}  // namespace

/// The database actor's side of replication: sends the Replicator's requests to the peers'
/// database actors and hands their answers back to it; answers the writers it settles.
class DatabaseTransport final : public replication::Transport {
 public:
  explicit DatabaseTransport(database_pointer self) : self_(self) {}

  /// Replicates a local write whose delta is `delta` and calls `answer` (once) when enough
  /// replicas hold it (at once when nobody waits).
  void Replicate(const std::string& delta, std::function<void(Status)> answer) {
    ArmRound(self_);  // the peers pull back what this write changed in their view of us
    auto& replicator = *self_->state.replicator;
    if (!replicator.WritesWait()) {
      replicator.OnLocalWrite(delta, 0);
      answer(Status::OK());
      return;
    }
    const uint64_t id = ++last_write_id_;
    writers_.emplace(id, std::move(answer));
    replicator.OnLocalWrite(delta, id);  // may answer at once
  }

  /// Replicates the deltas of one request made of several local writes (a drop, a restore) and
  /// calls `done` once: OK when each is acknowledged as a write would be, or the first error.
  void ReplicateAll(std::vector<std::string> deltas, std::function<void(Status)> done) {
    // Even with no delta (a single replica): the writes may need rounds (expired keys), and a
    // dormant database has none armed.
    ArmRound(self_);
    struct Gather {
      std::function<void(Status)> done;
      size_t left = 0;
      bool answered = false;
    };
    auto gather = std::make_shared<Gather>(Gather{std::move(done), deltas.size() + 1, false});
    auto answer = [gather](Status s) {
      if (gather->answered) return;
      if (!s.ok() || --gather->left == 0) {
        gather->answered = true;
        gather->done(std::move(s));
      }
    };
    for (const std::string& delta : deltas) Replicate(delta, answer);
    answer(Status::OK());  // the extra count: no answer before every delta was handed over
  }

  /// Called for every actor this one monitors that went down.
  void OnDown(const caf::actor_addr& source) {
    for (auto& [peer, actor] : actors_) {
      if (actor && actor.address() == source) {
        actor = nullptr;
        self_->state.replicator->OnPeerDown(peer);
      }
    }
  }

  void Lookup(uint64_t peer, uint64_t generation) override {
    auto self = self_;
    auto supervisor = self->state.supervisor;
    Ask(
        Timeout(), supervisor,
        [=](database_peer_actor& actor) {
          auto& st = self->state;
          const bool genuine = FromExpected(self, supervisor);
          if (genuine && st.replicator->Current(peer, generation)) {
            st.transport->actors_[peer] = actor;
            self->monitor(actor);
          }
          st.replicator->OnLookupAnswered(peer, generation, genuine);
        },
        Failed(peer, generation), atom::replica_v, Path(), peer);
  }

  void Push(uint64_t peer, uint64_t generation, uint64_t push, std::string delta) override {
    auto self = self_;
    auto target = actors_[peer];
    Ask(
        Timeout(), target,
        [=](atom::ok) {
          self->state.replicator->OnPushAnswered(peer, generation, push,
                                                 FromExpected(self, target));
        },
        Failed(peer, generation), atom::replicate_v, std::move(delta), NodeId());
  }

  void PushDuplicate(uint64_t peer, std::string delta, uint32_t delay_ms) override {
    auto target = actors_[peer];
    if (delay_ms == 0) {
      caf::anon_send(target, atom::replicate_v, std::move(delta), NodeId());
    } else {
      caf::delayed_anon_send(target, std::chrono::milliseconds(delay_ms), atom::replicate_v,
                             std::move(delta), NodeId());
    }
  }

  void Announce(uint64_t peer, std::string delta) override {
    auto it = actors_.find(peer);
    // From this actor (the peer vouches for senders of its node when TLS is on; an anonymous
    // announcement was refused there), answered or not: nothing waits on it.
    if (it != actors_.end() && it->second) {
      Ask(
          Timeout(), it->second, [](atom::ok) {}, [](caf::error&) {}, atom::replicate_v,
          std::move(delta), NodeId());
    }
  }

  void Pull(uint64_t peer, uint64_t generation, std::string request) override {
    auto self = self_;
    auto target = actors_[peer];
    Ask(
        Timeout(), target,
        [=](std::string& reply) {
          self->state.replicator->OnPullAnswered(peer, generation, FromExpected(self, target),
                                                 reply);
        },
        Failed(peer, generation), atom::sync_v, std::move(request), NodeId());
  }

  void FullSync(uint64_t peer, uint64_t generation, std::string request) override {
    auto self = self_;
    auto target = actors_[peer];
    Ask(
        Timeout(), target,
        [=](std::string& page) {
          self->state.replicator->OnFullSyncAnswered(peer, generation, FromExpected(self, target),
                                                     page);
        },
        [=](caf::error& err) {
          self->state.replicator->OnFullSyncFailed(peer, generation, to_string(err));
        },
        atom::full_sync_v, std::move(request), NodeId());
  }

  void HandOver(uint64_t peer, uint64_t generation, std::string delta) override {
    auto self = self_;
    Ask(
        Timeout(), actors_[peer],
        [=](atom::ok) { self->state.replicator->OnHandOverAnswered(peer, generation); },
        Failed(peer, generation), atom::replicate_v, std::move(delta), NodeId());
  }

  /// True if the message being handled comes from the database actor of another replica (as
  /// last looked up): a conditional batch it forwarded.
  bool FromPeerReplica() const {
    const auto& sender = self_->current_sender();
    if (sender == nullptr) return false;
    for (const auto& [peer, actor] : actors_) {
      if (actor && actor.address() == sender->address()) return true;
    }
    return false;
  }

  /// Calls `found` with the database actor of replica `peer` (looked up through the supervisor
  /// if not known yet, within `timeout`, default the replication timeout), or `failed` with why
  /// it could not be found.
  void WithPeer(uint64_t peer, std::function<void(database_peer_actor)> found,
                std::function<void(caf::error)> failed, caf::timespan timeout = {}) {
    auto it = actors_.find(peer);
    if (it != actors_.end() && it->second) return found(it->second);
    auto self = self_;
    auto supervisor = self->state.supervisor;
    if (timeout.count() <= 0) timeout = Timeout();
    Ask(
        timeout, supervisor,
        [self, supervisor, found, failed](database_peer_actor& actor) {
          if (!FromExpected(self, supervisor)) return failed(ForgedReply());
          found(actor);
        },
        [failed](caf::error& err) { failed(err); }, atom::replica_v, Path(), peer);
  }

  /// Sends a conditional batch (`args`: the batch, for a session atom::session, the deadline)
  /// to the database actor of replica `peer`, the judging one, and answers `promise` with its
  /// answer.
  template <class Reply, class... Ts>
  void ForwardBatch(uint64_t peer, caf::typed_response_promise<Reply> promise, Ts... args) {
    auto self = self_;
    auto send = [this, self, promise, args...](database_peer_actor target) mutable {
      Ask(
          Timeout(), target,
          [self, target, promise](Reply& reply) mutable {
            if (FromExpected(self, target)) {
              promise.deliver(std::move(reply));
            } else {
              promise.deliver(ForgedReply());
            }
          },
          [promise](caf::error& err) mutable { promise.deliver(err); }, atom::batch_v,
          std::move(args)...);
    };
    WithPeer(peer, send, [promise](caf::error err) mutable { promise.deliver(std::move(err)); });
  }

  void AnswerWriter(uint64_t write_id, Status status) override {
    auto it = writers_.find(write_id);
    if (it == writers_.end()) return;
    auto answer = std::move(it->second);
    writers_.erase(it);
    answer(std::move(status));
  }

  void Retire() override {
    // Before a drop: no direct read may find the copy half deleted.
    if (self_->state.direct) self_->state.direct->Retire();
  }

  void Dropped() override {
    // Writes queued and not applied yet: this copy is gone (its writes are handed over), so
    // they bounce unapplied, as requests to a passivated actor do, and the writer's route sends
    // them again, in order, to the database as it is placed now.
    for (auto& write : self_->state.queued) write.Bounce();
    self_->state.queued.clear();
    self_->state.watches->AnswerAll();
    EndRequests(self_);
    self_->send(self_->state.supervisor, atom::dropped_v, Path(),
                caf::actor_cast<database_actor>(self_));
    self_->quit();
  }

 private:
  const std::string& Path() const { return self_->state.store->path(); }
  uint64_t NodeId() const { return self_->state.replication->node_id; }

  /// `self_->request(target, timeout, args...).then(on_reply, on_error)` with the deadline kept
  /// by this actor (RequestWithin): an exchange of a replica with its peers leaves no entry in
  /// CAF's clock that wakes the actor again seconds after the answer.
  template <class Handle, class OnReply, class OnError, class... Ts>
  void Ask(caf::timespan timeout, const Handle& target, OnReply on_reply, OnError on_error,
           Ts&&... args) {
    RequestWithin(self_, self_->state.deadlines, timeout, target, std::move(on_reply),
                  std::move(on_error), std::forward<Ts>(args)...);
  }
  caf::timespan Timeout() const { return self_->state.replication->timeout; }

  /// The error half of every request to a peer.
  std::function<void(caf::error&)> Failed(uint64_t peer, uint64_t generation) {
    auto self = self_;
    return [=](caf::error& err) {
      self->state.replicator->OnRequestFailed(peer, generation, to_string(err));
    };
  }

  database_pointer self_;
  /// The peers' database actors as last found (the Replicator knows which are current).
  std::map<uint64_t, database_peer_actor> actors_;
  /// Writers waiting for acknowledgements, by write id.
  std::unordered_map<uint64_t, std::function<void(Status)>> writers_;
  uint64_t last_write_id_ = 0;
};

void database_state::QueuedWrite::Bounce() {
  const caf::error bounced = caf::make_error(caf::sec::request_receiver_down);
  if (session) {
    session_promise.deliver(bounced);
    return;
  }
  if (gather == nullptr) {
    promise.deliver(bounced);
    return;
  }
  // The writes of one message are queued together and applied together: all of them bounce.
  if (!gather->bounced) {
    gather->bounced = true;
    gather->promise.deliver(bounced);
  }
  gather = nullptr;
}

void database_state::QueuedWrite::Answer(const Status& status) {
  if (session) {
    if (status.ok()) {
      session_promise.deliver(dot);
    } else {
      session_promise.deliver(ToError(status));
    }
    return;
  }
  if (gather == nullptr) {
    if (status.ok()) {
      promise.deliver(atom::ok_v);
    } else {
      promise.deliver(ToError(status));
    }
    return;
  }
  if (!status.ok()) gather->results[index] = ToError(status);
  if (--gather->left == 0) gather->promise.deliver(std::move(gather->results));
  gather = nullptr;
}

database_state::database_state() = default;

database_state::~database_state() {
  // No wait for readers in progress (Retire): the store stays open for them (they hold it).
  if (direct) direct->retired.store(true, std::memory_order_release);
}

namespace {

/// Who may send a message that steers this actor.
enum class Steering {
  /// The control slice: the supervisor only.
  kControl,
  /// Exits: any actor of this node (the supervisor's, on shutdown).
  kExit,
  /// The timer slice: the actor itself.
  kTimer,
};

/// True if the message being handled may steer this actor. The slices of messages/type_ids.hpp
/// already say who may send what, but CAF 0.17 enforces them only when sending: a remote node
/// that holds any handle to this actor (its peer slice leaves the node) can cast it and send it
/// any message, control, timer and exit messages included, and the actor cannot tell them apart
/// by type. So these messages are still checked at run time, here only. Control messages must
/// come from the supervisor itself, not just from this node: a routed BASP message may name any
/// actor of this node that the registry knows (every database actor whose handle went to a peer)
/// as its sender, while the supervisor's handle never leaves the node.
bool MaySteer(database_pointer self, Steering kind) {
  const auto& sender = self->current_sender();
  if (sender == nullptr) return false;
  switch (kind) {
    case Steering::kControl:
      return FromExpected(self, self->state.supervisor);
    case Steering::kExit:
      return sender->node() == self->node();
    case Steering::kTimer:
      return sender == self->ctrl();
  }
  return false;
}

/// With TLS, a delta or pull naming node `from` as its sender must come over a connection
/// authenticated as that node (security::PeerDirectory::Vouches); an error otherwise.
caf::error Unvouched(database_pointer self, uint64_t from) {
  const auto& peers = self->state.replication->peers;
  if (!peers || !peers->enabled()) return {};
  const auto& sender = self->current_sender();
  if (sender && peers->Vouches(sender->node(), from)) return {};
  return ToError(
      Status::PermissionDenied("a delta or pull for node " + FormatNodeId(from) +
                               " came from a peer whose certificate is not that node's"));
}

/// Group commit: applies the writes queued since the last commit as one RocksDB write (one sync
/// in SyncMode::kAlways, one meta update, one delta to replicate), then acknowledges them all
/// once replicated as a write alone would be. The outcome is the one of applying them one after
/// another (DatabaseStore::WriteGroup); if any of them would fail, they are applied one by one
/// instead, so each writer gets its own answer. Called before anything that must see the
/// store as these writes leave it.
/// Key and value bytes a group commit takes at most in one RocksDB write and one delta: a push
/// to a peer carries at most 64 MiB of deltas (replication::kDefaultMaxPushBytes), so one group
/// of many large writes must not become one delta over it (every writer of it would then fail to
/// replicate, where writes pushed one by one fit).
constexpr size_t kMaxGroupBytes = 16u << 20;
/// Operations a group commit takes at most in one RocksDB write. The cost per key of a write
/// grows with its size once its working set (the records read and staged, the index entries)
/// no longer fits the CPU's caches: 50 queued batches of 1000 keys applied as one write cost
/// about twice the CPU per key of 1000-key writes (kvmesh-bench bulk load, 50 in flight), and
/// their writers all waited for the whole of it. Small writes still group by the dozen.
constexpr size_t kMaxGroupOps = 4096;

/// The dot of the latest write accepted here, as SessionToken text (what a session's write is
/// acknowledged with).
std::string LastDot(const storage::DatabaseStore& store) {
  SessionToken token;
  if (store.local_counter() > 0) token.Add(store.origin(), store.local_counter());
  return token.ToString();
}

/// Times in a row a step of the sweep gives way to requests waiting (atom::sweep). Under
/// sustained overwrites taking every step at once added about one step (1-5 ms) to 800 requests
/// a second, the p99.9 of kvmesh-bench's remote put with 50 in flight (4.1-4.5 to 7.5-7.9 ms).
constexpr int kMaxSweepDeferrals = 8;

/// Time between two steps of the sweep. A step sent at once after the last one ran in the same
/// turn of the actor when nothing else waited: on the client port's thread, which then read no
/// socket, requests waited for several steps (and a turn over 10 ms paused its inline runs).
constexpr auto kSweepStepSpacing = std::chrono::milliseconds(1);

/// Sends the next step of the round's sweep (atom::sweep), if steps are left and none is on its
/// way already: behind the messages queued now (`after_step` false), or kSweepStepSpacing from
/// now, through CAF's clock, so the actor's turn ends first.
void QueueSweepStep(database_pointer self, bool after_step) {
  auto& st = self->state;
  if (st.sweep_queued) return;
  if (!st.replicator->SweepContinues()) {
    st.sweep_deferrals = 0;
    return;
  }
  st.sweep_queued = true;
  if (after_step) {
    self->delayed_send(self, kSweepStepSpacing, atom::sweep_v);
  } else {
    self->send(self, atom::sweep_v);
  }
}

/// Applies `group` (writes in arrival order) as described at CommitGroup.
void CommitWrites(database_pointer self, std::vector<database_state::QueuedWrite> group) {
  auto& st = self->state;
  // No delta is made when nobody needs it: no peers, and no acknowledgements to wait for.
  const bool needs_delta = st.replicator->NeedsDeltas();
  std::string delta;
  Status s;
  if (group.size() > 1) {
    std::vector<const WriteBatch*> writes;
    writes.reserve(group.size());
    for (const auto& write : group) writes.push_back(&write.batch());
    s = st.store->WriteGroup(writes.data(), writes.size(), needs_delta ? &delta : nullptr);
    if (s.ok()) {
      // Sessions record the group's last dot: every replica holding it holds the whole group.
      const std::string dot = LastDot(*st.store);
      for (auto& write : group) {
        if (write.session) write.dot = dot;
        write.Release();
      }
      auto writers = std::make_shared<std::vector<database_state::QueuedWrite>>(std::move(group));
      st.transport->Replicate(delta, [writers](Status r) {
        for (auto& write : *writers) write.Answer(r);
      });
      return;
    }
  }
  for (auto& write : group) {
    delta.clear();
    s = st.store->Write(write.batch(), needs_delta ? &delta : nullptr);
    if (s.ok()) {
      if (write.session) write.dot = LastDot(*st.store);
      write.Release();
      auto writer = std::make_shared<database_state::QueuedWrite>(std::move(write));
      st.transport->Replicate(delta, [writer](Status r) { writer->Answer(r); });
    } else {
      write.Answer(s);
    }
  }
}

}  // namespace

void CommitGroup(database_pointer self) {
  auto& st = self->state;
  if (st.queued.empty()) return;
  std::vector<database_state::QueuedWrite> queued = std::move(st.queued);
  st.queued.clear();
  // In parts of at most kMaxGroupBytes and kMaxGroupOps (a larger write alone), in order.
  std::vector<database_state::QueuedWrite> part;
  size_t part_bytes = 0;
  size_t part_ops = 0;
  for (auto& write : queued) {
    const size_t bytes = BatchBytes(write.batch());
    const size_t ops = write.batch().ops.size();
    if (!part.empty() && (part_bytes + bytes > kMaxGroupBytes || part_ops + ops > kMaxGroupOps)) {
      CommitWrites(self, std::move(part));
      part.clear();
      part_bytes = 0;
      part_ops = 0;
    }
    part_bytes += bytes;
    part_ops += ops;
    part.push_back(std::move(write));
  }
  CommitWrites(self, std::move(part));
}

namespace {

/// Where a conditional batch is judged (README "Versions and conditional writes"): by the first
/// replica in placement order, so that while the replicas agree on the set, one replica judges
/// every check of the database and two writers expecting the same version cannot both succeed. 0:
/// here; otherwise the node to forward to. A batch another replica forwarded is judged here
/// (never forwarded twice, should two replicas' views of the set differ). If the first replica
/// is unreachable, *why says so: the write fails rather than be judged by a replica that may
/// not hold the latest version. Nodes learn of a membership change at slightly different
/// moments, so around one two replicas may each judge (README says so; no lease yet).
uint64_t CheckingReplica(database_pointer self, Status* why) {
  auto& st = self->state;
  const ReplicaSet& set = st.replicator->replicas();
  const uint64_t me = st.replication->node_id;
  if (set.nodes.empty() || set.nodes.front() == me || st.transport->FromPeerReplica()) return 0;
  const uint64_t first = set.nodes.front();
  if (std::find(set.unreachable.begin(), set.unreachable.end(), first) != set.unreachable.end()) {
    *why =
        Status::Unavailable("conditional writes to database " + Quote(st.store->path()) +
                            " are judged by its first replica, node " + FormatNodeId(first) +
                            ", which this replica cannot reach; nothing was written (retry later)");
  }
  return first;
}

/// The replicas a read at a level may ask besides this one: the other nodes of the replica set
/// that membership sees as up and that no link fault cuts off (test clusters).
std::vector<uint64_t> ReachableReplicas(database_pointer self) {
  auto& st = self->state;
  const ReplicaSet& set = st.replicator->replicas();
  const uint64_t me = st.replication->node_id;
  std::vector<uint64_t> out;
  for (uint64_t node : set.nodes) {
    if (node == me) continue;
    if (std::find(set.unreachable.begin(), set.unreachable.end(), node) != set.unreachable.end()) {
      continue;
    }
    if (st.replication->faults && st.replication->faults->Blocked(me, node)) continue;
    out.push_back(node);
  }
  return out;
}

/// Whether this replica holds every write of the session token `text` (*covered); an error
/// naming the problem if `text` is not a token.
Status HoldsSession(const storage::DatabaseStore& store, const std::string& text, bool* covered) {
  SessionToken token;
  std::string error;
  if (!SessionToken::Parse(text, &token, &error)) return Status::InvalidArgument(error);
  *covered = storage::CoversToken(store.version_vector(), token);
  return Status::OK();
}

/// How long a read at a level waits for another replica: the time left before its deadline, at
/// most the replication timeout.
caf::timespan PeerReadTimeout(database_pointer self, const Deadline& deadline) {
  caf::timespan timeout = self->state.replication->timeout;
  if (deadline.wall_ns != 0) {
    const caf::timespan left(deadline.wall_ns - Deadline::NowNs());
    timeout = std::max(std::min(timeout, left), caf::timespan(std::chrono::milliseconds(1)));
  }
  return timeout;
}

/// What a get at a level answers for `record`: its value and version, or not_found.
caf::expected<VersionedValue> ReadAnswer(const KeyRecord& record, const std::string& key,
                                         const std::string& path) {
  if (!record.live) {
    return ToError(Status::NotFound("key " + Quote(key) + " not found in database " + Quote(path)));
  }
  return VersionedValue{record.value, storage::VersionToken(record)};
}

/// A get at read level read_your_writes or quorum waiting for other replicas' records.
struct LevelRead {
  caf::typed_response_promise<VersionedValue> promise;
  std::string key;
  std::string path;
  ReadConsistency level = ReadConsistency::kQuorum;
  std::string token;
  /// Records needed (quorum: replication.min, this replica's included; read_your_writes: one
  /// from a replica that covers the token) and received.
  uint32_t needed = 1;
  uint32_t answered = 0;
  size_t outstanding = 0;
  /// Replicas of the set not asked (membership sees them as down, or cut off).
  size_t not_asked = 0;
  /// The newest record received, by the conflict rule.
  KeyRecord best;
  std::vector<std::string> failures;
  bool done = false;

  void Answer(const KeyRecord& record) {
    if (done) return;
    --outstanding;
    ++answered;
    if (storage::NewerRecord(record, best)) best = record;
    if (answered >= needed) {
      done = true;
      auto answer = ReadAnswer(best, key, path);
      if (answer) {
        promise.deliver(std::move(*answer));
      } else {
        promise.deliver(answer.error());
      }
    } else if (outstanding == 0) {
      // Everyone asked answered, and still too few (fewer replicas up than min).
      done = true;
      promise.deliver(ToError(Unavailable()));
    }
  }

  void Fail(uint64_t node, const caf::error& err) {
    if (done) return;
    --outstanding;
    failures.push_back("node " + FormatNodeId(node) + ": " + ToStatus(err).message());
    if (outstanding == 0) {
      done = true;
      promise.deliver(ToError(Unavailable()));
    }
  }

  Status Unavailable() const {
    std::string why;
    for (const auto& failure : failures) why += "; " + failure;
    if (not_asked > 0) {
      why += "; " + std::to_string(not_asked) + " replica(s) not reachable from this one";
    }
    if (level == ReadConsistency::kQuorum) {
      return Status::Unavailable("quorum read of key " + Quote(key) + " in database " +
                                 Quote(path) + ": " + std::to_string(answered) + " of the " +
                                 std::to_string(needed) +
                                 " replicas it needs (replication.min) answered" + why);
    }
    return Status::Unavailable("read_your_writes read of key " + Quote(key) + " in database " +
                               Quote(path) + ": no replica reached holds the session's writes (" +
                               SessionToken::Shown(token) + ") yet; this one does not" + why);
  }
};

/// Serves a get at a read level (README "Read levels"). eventual: this replica's record.
/// read_your_writes: this replica's record if its version vector covers the session token,
/// else the first other replica's that does. quorum: the newest record (by the conflict rule)
/// of replication.min replicas, this one included.
caf::result<VersionedValue> ReadAtLevel(database_pointer self, ReadRequest request,
                                        const Deadline& deadline) {
  auto& st = self->state;
  KeyRecord local;
  Status s = st.store->GetRecord(request.key, &local);
  if (!s.ok()) return ToError(s);
  auto read = std::make_shared<LevelRead>();
  read->key = request.key;
  read->path = st.store->path();
  read->level = request.consistency;
  const std::vector<uint64_t>& set = st.replicator->replicas().nodes;
  const bool member = std::find(set.begin(), set.end(), st.replication->node_id) != set.end();
  switch (request.consistency) {
    case ReadConsistency::kEventual:
      return ReadAnswer(local, read->key, read->path);
    case ReadConsistency::kReadYourWrites: {
      bool covered = false;
      s = HoldsSession(*st.store, request.session_token, &covered);
      if (!s.ok()) return ToError(s);
      if (covered) return ReadAnswer(local, read->key, read->path);
      read->token = request.session_token;
      break;
    }
    case ReadConsistency::kQuorum: {
      read->needed = std::max<uint32_t>(1, st.replicator->replicas().required_acks);
      // A copy still serving while it hands over (no longer in the replica set) gets no new
      // writes: it is not one of the `min` answers, the replicas are.
      if (member) {
        read->answered = 1;
        read->best = local;
        if (read->needed <= 1) return ReadAnswer(local, read->key, read->path);
      }
      break;
    }
    default:
      return ToError(Status::InvalidArgument(
          "unknown read level " + std::to_string(static_cast<int>(request.consistency))));
  }
  const std::vector<uint64_t> peers = ReachableReplicas(self);
  const size_t others = set.size();
  read->not_asked = others - std::min(others, peers.size() + (member ? 1 : 0));
  if (peers.empty()) return ToError(read->Unavailable());
  read->promise = self->make_response_promise<VersionedValue>();
  read->outstanding = peers.size();
  const caf::timespan timeout = PeerReadTimeout(self, deadline);
  const uint64_t me = st.replication->node_id;
  for (uint64_t peer : peers) {
    st.transport->WithPeer(
        peer,
        [self, read, peer, timeout, me, deadline](database_peer_actor target) {
          RequestWithin(
              self, self->state.deadlines, timeout, target,
              [self, read, peer, target](KeyRecord& record) {
                if (FromExpected(self, target)) {
                  read->Answer(record);
                } else {
                  read->Fail(peer, ForgedReply());
                }
              },
              [read, peer](caf::error& err) { read->Fail(peer, err); }, atom::get_v,
              atom::replica_v, read->key, read->token, me, deadline);
        },
        [read, peer](caf::error err) { read->Fail(peer, err); },
        // The lookup too ends within the read's time, so a slow one is `unavailable` (the
        // peer did not answer in time) rather than the whole read timing out.
        timeout);
  }
  return read->promise;
}

/// Refuses a list at a level this replica cannot serve: quorum (not implemented for lists), or
/// read_your_writes when this replica does not hold the session's writes (lists are not sent on
/// to other replicas).
Status CheckListLevel(database_pointer self, const ListOptions& options) {
  auto& st = self->state;
  switch (options.consistency) {
    case ReadConsistency::kEventual:
      return Status::OK();
    case ReadConsistency::kQuorum:
      return Status::InvalidArgument(
          "list does not support read level quorum (get and get_versioned do); use eventual or "
          "read_your_writes");
    case ReadConsistency::kReadYourWrites: {
      bool covered = false;
      Status s = HoldsSession(*st.store, options.session_token, &covered);
      if (!s.ok() || covered) return s;
      return Status::Unavailable("read_your_writes list of database " + Quote(st.store->path()) +
                                 ": the replica on node " + FormatNodeId(st.replication->node_id) +
                                 " does not hold the session's writes (" +
                                 SessionToken::Shown(options.session_token) + ") yet; retry");
    }
  }
  return Status::InvalidArgument("unknown read level " +
                                 std::to_string(static_cast<int>(options.consistency)));
}

/// A conditional batch judged by another replica (CheckingReplica) is handed there with
/// `extra...` (the session marker) after the writes received before it, which are applied and
/// pushed first: the judging replica must not see the check ahead of them. The reply is that
/// replica's (or the refusal naming why it cannot be reached); nullopt: judged here.
template <class Reply, class... Extra>
std::optional<caf::result<Reply>> ForwardToJudge(database_pointer self, const WriteBatch& batch,
                                                 const Deadline& deadline, Extra... extra) {
  if (!HasChecks(batch)) return std::nullopt;
  Status why;
  const uint64_t judge = CheckingReplica(self, &why);
  if (!why.ok()) return caf::result<Reply>(ToError(why));
  if (judge == 0) return std::nullopt;
  CommitGroup(self);
  ++self->state.requests_since_tick;
  auto promise = self->make_response_promise<Reply>();
  self->state.transport->ForwardBatch(judge, promise, batch, extra..., deadline);
  return caf::result<Reply>(promise);
}

uint64_t NowMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Keys a drop deletes per write: one page of tombstones and one delta.
constexpr uint32_t kDropPageKeys = 1000;

/// Deletes every live key of `db` in pages of kDropPageKeys, each one atomic write of erases
/// (tombstones, so the drop replicates and wins over every older write of those keys on every
/// replica); with `make_deltas`, appends each page's delta to `*deltas`. Bounded: each page
/// resumes after the last key of the previous one.
Status TombstoneAll(storage::DatabaseStore& db, bool make_deltas,
                    std::vector<std::string>* deltas) {
  ListOptions options;
  options.limit = kDropPageKeys;
  for (;;) {
    ListPage page;
    Status s = db.List(options, &page);
    if (!s.ok()) return s;
    if (page.keys.empty()) return Status::OK();
    WriteBatch batch;
    for (auto& key : page.keys) batch.Erase(std::move(key));
    std::string delta;
    s = db.Write(batch, make_deltas ? &delta : nullptr);
    if (!s.ok()) return s;
    if (make_deltas) deltas->push_back(std::move(delta));
    if (!page.has_more()) return Status::OK();
    options.start_after = page.next_token;
  }
}

}  // namespace

void ArmRound(database_pointer self, bool quiet) {
  auto& st = self->state;
  if (st.replication->sync_interval.count() <= 0) return;
  // A quiet round armed is replaced by a normal one (its message then no longer counts).
  if (st.round_armed && (quiet || !st.round_slow)) return;
  st.round_armed = true;
  st.round_slow = quiet;
  const caf::timespan delay =
      quiet ? st.replication->sync_interval * kQuietRounds : st.replication->sync_interval;
  self->delayed_send(self, delay, atom::sync_round_v, ++st.round_seq);
}

namespace {

/// Stops serving: direct reads end and writers still waiting are answered. A database that
/// served requests since it started records when in the catalog: one write per activation
/// rather than one per request.
void Stop(database_pointer self) {
  auto& st = self->state;
  if (st.requests_since_tick > 0) st.last_access_ms = NowMillis();
  if (st.last_access_ms > 0) {
    Status s = st.store->node_store().RecordAccess(st.store->path(), st.last_access_ms);
    if (!s.ok()) spdlog::warn("{}", s.ToString());
  }
  CommitGroup(self);
  self->state.watches->AnswerAll();
  self->state.transport->Retire();
  self->state.replicator->Stop();
  EndRequests(self);
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
  st.deadlines->set_schedule_check(
      [self](caf::timespan period) { self->delayed_send(self, period, atom::expire_due_v); });
  st.transport = std::make_unique<DatabaseTransport>(self);
  st.replicator = std::make_unique<replication::Replicator>(
      *st.replication, st.store.get(), st.transport.get(), std::move(replicas));
  st.watches = std::make_unique<WatchHub>(self);
  // Every commit, local or replicated, wakes the held watch pulls; an observer set before (the
  // system database's) still runs first. Runs on this actor's thread (the store's owner).
  st.store->set_commit_observer([self, before = st.store->commit_observer()] {
    if (before) before();
    self->state.watches->OnCommit();
  });
  if (idle_timeout.count() > 0) self->delayed_send(self, idle_timeout, atom::idle_check_v);
  ArmRound(self);
  self->set_down_handler([self](caf::down_msg& msg) { self->state.transport->OnDown(msg.source); });
  // Nobody may be left waiting on the way out: writes waiting for acknowledgements fail.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    // Other nodes hold this actor's handle (replicas talk directly); their exits are ignored.
    // The sender decides, not the exit's source field: an anonymous exit from the network
    // carries this actor's own address as its source.
    if (!MaySteer(self, Steering::kExit)) return;
    Stop(self);
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
  // Queues a local write for the next group commit (CommitGroup); it is answered from there.
  auto queue = [self](database_state::QueuedWrite write) {
    auto& st = self->state;
    ++st.requests_since_tick;
    st.queued.push_back(std::move(write));
    if (st.queued.size() == 1) self->send(self, atom::commit_v);
  };
  // A write of `own` (a batch of this actor's), else of `shared`.
  auto write = [self, queue](WriteBatch own, std::shared_ptr<const WriteBatch> shared =
                                                 nullptr) -> caf::result<atom::ok> {
    database_state::QueuedWrite queued;
    queued.own = std::move(own);
    queued.shared = std::move(shared);
    queued.promise = self->make_response_promise<atom::ok>();
    auto promise = queued.promise;
    queue(std::move(queued));
    return promise;
  };
  // Writes each of `shared`'s batches as if it had come alone, answered together.
  auto write_each = [self, queue](std::shared_ptr<const std::vector<WriteBatch>> shared)
      -> caf::result<std::vector<caf::error>> {
    const std::vector<WriteBatch>& batches = *shared;
    for (const WriteBatch& batch : batches) {
      if (HasChecks(batch)) {
        return ToError(Status::InvalidArgument(
            "a conditional batch must be sent on its own, not with other writes"));
      }
    }
    auto gather = std::make_shared<database_state::WriteGather>();
    gather->promise = self->make_response_promise<std::vector<caf::error>>();
    gather->results.resize(batches.size());
    gather->left = batches.size();
    if (batches.empty()) gather->promise.deliver(std::vector<caf::error>{});
    self->state.queued.reserve(self->state.queued.size() + batches.size());
    for (size_t i = 0; i < batches.size(); ++i) {
      database_state::QueuedWrite queued;
      // Shares the message's writes: keeps them all, points at its own.
      queued.shared = std::shared_ptr<const WriteBatch>(shared, &batches[i]);
      queued.gather = gather;
      queued.index = i;
      queue(std::move(queued));
    }
    return gather->promise;
  };
  auto session_write = [self, queue](
                           WriteBatch own,
                           std::shared_ptr<const WriteBatch> shared) -> caf::result<std::string> {
    database_state::QueuedWrite queued;
    queued.own = std::move(own);
    queued.shared = std::move(shared);
    queued.session = true;
    queued.session_promise = self->make_response_promise<std::string>();
    auto promise = queued.session_promise;
    queue(std::move(queued));
    return promise;
  };
  // Before a request that reads or changes the store otherwise: the writes received before it
  // are applied first, so it sees them (order per sender stays the order of arrival).
  auto settle = [self] { CommitGroup(self); };
  // A request whose deadline passed is refused before anything is applied: its requester has
  // given up on it (or is about to), and may already have made a newer write of the same key.
  auto expired = [](const Deadline& deadline) {
    return deadline.Passed()
               ? ToError(Status::Timeout(DeadlinePassedMessage("the database applied it")))
               : caf::error{};
  };
  return {
      [=](atom::put, std::string& key, std::string& value,
          const Deadline& deadline) -> caf::result<atom::ok> {
        if (auto err = expired(deadline)) return err;
        WriteBatch batch;
        batch.Put(std::move(key), std::move(value));
        return write(std::move(batch));
      },
      [=](atom::get, const std::string& key, const Deadline& deadline) -> caf::result<std::string> {
        if (auto err = expired(deadline)) return err;
        settle();
        std::string value;
        Status s = serve([&](storage::DatabaseStore& db) { return db.Get(key, &value); });
        if (!s.ok()) return ToError(s);
        return value;
      },
      [=](atom::get, const PackedKeys& packed,
          const Deadline& deadline) -> caf::result<GetManyReply> {
        if (auto err = expired(deadline)) return err;
        std::vector<std::string_view> keys;
        if (Status s = packed.Unpack(kMaxGetsPerMessage, &keys); !s.ok()) return ToError(s);
        settle();
        // The keys left out are not counted: they come again.
        GetManyReply reply = ReadMany(*self->state.store, keys);
        self->state.requests_since_tick += reply.errors.size();
        return reply;
      },
      [=](atom::get, ReadRequest& request,
          const Deadline& deadline) -> caf::result<VersionedValue> {
        if (auto err = expired(deadline)) return err;
        settle();
        ++self->state.requests_since_tick;
        return ReadAtLevel(self, std::move(request), deadline);
      },
      [=](atom::get, atom::replica, const std::string& key, const std::string& token_text,
          uint64_t from, const Deadline& deadline) -> caf::result<KeyRecord> {
        if (auto err = expired(deadline)) return err;
        auto& st = self->state;
        const uint64_t me = st.replication->node_id;
        if (st.replication->faults && st.replication->faults->Blocked(from, me)) {
          return ToError(Status::Unavailable("the link from node " + FormatNodeId(from) +
                                             " is cut (fault injection)"));
        }
        settle();
        ++st.requests_since_tick;
        bool covered = false;
        Status s = HoldsSession(*st.store, token_text, &covered);
        if (!s.ok()) return ToError(s);
        if (!covered) {
          return ToError(Status::Unavailable("its replica does not hold the session's writes yet"));
        }
        KeyRecord record;
        s = st.store->GetRecord(key, &record);
        if (!s.ok()) return ToError(s);
        return record;
      },
      [=](atom::erase, std::string& key, const Deadline& deadline) -> caf::result<atom::ok> {
        if (auto err = expired(deadline)) return err;
        WriteBatch batch;
        batch.Erase(std::move(key));
        return write(std::move(batch));
      },
      [=](atom::list, const ListOptions& options,
          const Deadline& deadline) -> caf::result<ListPage> {
        if (auto err = expired(deadline)) return err;
        settle();
        if (Status level = CheckListLevel(self, options); !level.ok()) {
          ++self->state.requests_since_tick;
          return ToError(level);
        }
        ListPage page;
        Status s = serve([&](storage::DatabaseStore& db) { return db.List(options, &page); });
        if (!s.ok()) return ToError(s);
        return page;
      },
      [=](atom::batch, WriteBatch& batch, const Deadline& deadline) -> caf::result<atom::ok> {
        if (auto err = expired(deadline)) return err;
        if (auto judged = ForwardToJudge<atom::ok>(self, batch, deadline)) return *judged;
        return write(std::move(batch));
      },
      [=](atom::batch, const SharedWriteBatch& batch,
          const Deadline& deadline) -> caf::result<atom::ok> {
        if (auto err = expired(deadline)) return err;
        if (batch.batch == nullptr) return write(WriteBatch{});
        if (auto judged = ForwardToJudge<atom::ok>(self, *batch.batch, deadline)) return *judged;
        return write(WriteBatch{}, batch.batch);
      },
      [=](atom::batch, WriteBatch& batch, atom::session,
          const Deadline& deadline) -> caf::result<std::string> {
        if (auto err = expired(deadline)) return err;
        if (auto judged = ForwardToJudge<std::string>(self, batch, deadline, atom::session_v)) {
          return *judged;
        }
        return session_write(std::move(batch), nullptr);
      },
      [=](atom::batch, const SharedWriteBatch& batch, atom::session,
          const Deadline& deadline) -> caf::result<std::string> {
        if (auto err = expired(deadline)) return err;
        if (batch.batch == nullptr) return session_write(WriteBatch{}, nullptr);
        if (auto judged =
                ForwardToJudge<std::string>(self, *batch.batch, deadline, atom::session_v)) {
          return *judged;
        }
        return session_write(WriteBatch{}, batch.batch);
      },
      [=](atom::batch, std::vector<WriteBatch>& batches,
          const Deadline& deadline) -> caf::result<std::vector<caf::error>> {
        if (auto err = expired(deadline)) return err;
        return write_each(std::make_shared<const std::vector<WriteBatch>>(std::move(batches)));
      },
      [=](atom::batch, const SharedWriteBatches& shared,
          const Deadline& deadline) -> caf::result<std::vector<caf::error>> {
        if (auto err = expired(deadline)) return err;
        if (shared.batches == nullptr) return std::vector<caf::error>{};
        return write_each(shared.batches);
      },
      [=](atom::watch, const WatchRequest& request,
          const Deadline& deadline) -> caf::result<WatchUpdate> {
        if (auto err = expired(deadline)) return err;
        ++self->state.requests_since_tick;
        return self->state.watches->Pull(request, deadline);
      },
      [=](atom::watch, atom::tick) {
        if (MaySteer(self, Steering::kTimer)) self->state.watches->OnWake();
      },
      [=](atom::watch, uint64_t id) {
        if (MaySteer(self, Steering::kTimer)) self->state.watches->OnWaitEnded(id);
      },
      [=](atom::stats, const Deadline& deadline) -> caf::result<DatabaseStats> {
        if (auto err = expired(deadline)) return err;
        settle();
        ++self->state.requests_since_tick;
        return self->state.store->Stats();
      },
      [=](atom::status, const Deadline& deadline) -> caf::result<ReplicationStatus> {
        if (auto err = expired(deadline)) return err;
        settle();
        ++self->state.requests_since_tick;
        return self->state.replicator->MakeStatus();
      },
      [=](atom::status) -> caf::result<ReplicationStatus> {
        if (!MaySteer(self, Steering::kControl)) {
          return ToError(Status::PermissionDenied("only the supervisor asks for metrics"));
        }
        settle();
        return self->state.replicator->MakeStatus();
      },
      [=](atom::drop, const Deadline& deadline) -> caf::result<atom::ok> {
        if (auto err = expired(deadline)) return err;
        auto& st = self->state;
        ++st.requests_since_tick;
        settle();  // writes queued before the drop are applied first
        std::vector<std::string> deltas;
        // Pages of deletes: direct readers wait behind them, as gets sent to the actor do (a
        // get of several keys sees the drop whole or not at all).
        DirectReadTarget::PauseScope paused(st.direct.get());
        Status s = TombstoneAll(*st.store, st.replicator->NeedsDeltas(), &deltas);
        if (!s.ok()) {
          // The pages written so far are applied here: they replicate, nobody waits for them.
          for (const auto& delta : deltas) st.replicator->OnLocalWrite(delta, 0);
          ArmRound(self);
          return ToError(Status(s.code(), "drop of " + Quote(st.store->path()) +
                                              " stopped part way (run it again): " + s.message()));
        }
        spdlog::info("database {} dropped: every key deleted here", Quote(st.store->path()));
        auto promise = self->make_response_promise<atom::ok>();
        st.transport->ReplicateAll(std::move(deltas), [promise](Status r) mutable {
          if (r.ok()) {
            promise.deliver(atom::ok_v);
          } else {
            promise.deliver(ToError(r));
          }
        });
        return promise;
      },
      [=](atom::backup, const std::string& dir,
          const Deadline& deadline) -> caf::result<std::string> {
        if (auto err = expired(deadline)) return err;
        ++self->state.requests_since_tick;
        settle();
        // The snapshot is taken here, between two writes of this database, in O(1); a worker
        // reads and writes it out while this actor goes on serving writes.
        std::shared_ptr<storage::DatabaseSnapshot> snapshot =
            storage::DatabaseSnapshot::Take(*self->state.store);
        auto worker = self->spawn<caf::detached>([snapshot, dir](caf::event_based_actor* w) {
          return caf::behavior{[=](atom::backup) -> caf::result<std::string> {
            w->quit();
            storage::BackupSummary summary;
            Status s = snapshot->WriteTo(dir, &summary);
            if (!s.ok()) return ToError(s);
            return "backed up " + Quote(summary.path) + ": " + std::to_string(summary.records) +
                   " keys, " + FormatSize(summary.bytes) + " to " + dir;
          }};
        });
        auto promise = self->make_response_promise<std::string>();
        self->request(worker, caf::infinite, atom::backup_v)
            .then([promise](std::string& summary) mutable { promise.deliver(std::move(summary)); },
                  [promise](caf::error& err) mutable { promise.deliver(std::move(err)); });
        return promise;
      },
      [=](atom::restore, const std::string& dir,
          const Deadline& deadline) -> caf::result<std::string> {
        if (auto err = expired(deadline)) return err;
        auto& st = self->state;
        ++st.requests_since_tick;
        settle();
        const bool make_deltas = st.replicator->NeedsDeltas();
        std::vector<std::string> deltas;
        // The whole backup is read and checked first: a missing, truncated or corrupt one must
        // change nothing. Then the keys it lacks go (tombstones) and its records are written in
        // pages.
        // Checked too: what the writes would refuse (keys, value sizes, the size budget), so that
        // a backup this database cannot take is refused before its keys are deleted.
        storage::BackupSummary checked;
        const size_t max_value = st.store->node_store().options().max_value_bytes;
        Status s = storage::ReadBackup(
            dir, &checked, [&](std::string key, std::string value, uint64_t) -> Status {
              std::string normalised;
              Status k = NormalizeKey(key, &normalised);
              if (!k.ok() || normalised != key) {
                return Status::Corruption("backup in " + dir + " holds an invalid key " +
                                          Quote(key) + "; nothing was changed");
              }
              if (value.size() > max_value) {
                return Status::ValueTooLarge("backup in " + dir + " holds a value of " +
                                             FormatSize(value.size()) + " under " + Quote(key) +
                                             ", more than this node takes (" +
                                             FormatSize(max_value) + "); nothing was changed");
              }
              return Status::OK();
            });
        if (!s.ok()) return ToError(s);
        const uint64_t limit = st.store->Stats().limit_bytes;
        if (checked.bytes > limit) {
          return ToError(Status::SizeLimitExceeded("backup in " + dir + " holds " +
                                                   FormatSize(checked.bytes) + " and database " +
                                                   Quote(st.store->path()) + " is limited to " +
                                                   FormatSize(limit) + "; nothing was changed"));
        }
        // Deleting every key, then writing the backup's back takes many writes: direct readers
        // (actors/direct_reads.hpp) wait behind them in the mailbox meanwhile, as gets sent to
        // the actor do, rather than find a key deleted that the backup brings back.
        DirectReadTarget::PauseScope paused(st.direct.get());
        s = TombstoneAll(*st.store, make_deltas, &deltas);
        WriteBatch page;
        auto flush = [&]() -> Status {
          if (page.empty()) return Status::OK();
          std::string delta;
          Status w = st.store->Write(page, make_deltas ? &delta : nullptr);
          page.ops.clear();
          if (w.ok() && make_deltas) deltas.push_back(std::move(delta));
          return w;
        };
        storage::BackupSummary summary;
        if (s.ok()) {
          // Expiry is kept as the time left; a key that expired since the backup stays gone.
          const uint64_t now_ms = Deadline::NowNs() / 1000000;
          size_t page_bytes = 0;
          s = storage::ReadBackup(
              dir, &summary, [&](std::string key, std::string value, uint64_t expires_ms) {
                if (expires_ms != 0 && expires_ms <= now_ms) return Status::OK();
                page_bytes += key.size() + value.size();
                page.Put(std::move(key), std::move(value),
                         expires_ms != 0 ? expires_ms - now_ms : 0);
                // Pages bounded in keys and bytes: memory stays small whatever the backup holds.
                const bool full = page.size() >= kDropPageKeys || page_bytes >= (16u << 20);
                if (full) page_bytes = 0;
                return full ? flush() : Status::OK();
              });
        }
        if (s.ok()) s = flush();
        if (!s.ok()) {
          for (const auto& delta : deltas) st.replicator->OnLocalWrite(delta, 0);
          ArmRound(self);
          return ToError(Status(s.code(), "restore of " + Quote(st.store->path()) + " from " + dir +
                                              " stopped part way (run it again): " + s.message()));
        }
        const std::string done = "restored " + Quote(st.store->path()) + " from " + dir + ": " +
                                 std::to_string(summary.records) + " keys, " +
                                 FormatSize(summary.bytes);
        spdlog::info("{}", done);
        auto promise = self->make_response_promise<std::string>();
        st.transport->ReplicateAll(std::move(deltas), [promise, done](Status r) mutable {
          if (r.ok()) {
            promise.deliver(done);
          } else {
            promise.deliver(ToError(r));
          }
        });
        return promise;
      },
      [=](atom::replicate, const std::string& delta, uint64_t from) -> caf::result<atom::ok> {
        if (auto err = Unvouched(self, from)) return err;
        ++self->state.requests_since_tick;
        ArmRound(self);
        Status s = self->state.replicator->OnPushReceived(from, delta);
        if (!s.ok()) return ToError(s);
        return atom::ok_v;
      },
      [=](atom::sync, const std::string& request, uint64_t from) -> caf::result<std::string> {
        // Not counted as use: peers' periodic pulls alone must not keep a database active.
        if (auto err = Unvouched(self, from)) return err;
        ArmRound(self);  // the asker's vector may show writes this replica lacks
        std::string reply;
        Status s = self->state.replicator->AnswerPull(from, request, &reply);
        if (!s.ok()) return ToError(s);
        return reply;
      },
      [=](atom::full_sync, const std::string& request, uint64_t from) -> caf::result<std::string> {
        // Not counted as use, like pulls. A first page may start this replica's own repair,
        // which its rounds carry on.
        if (auto err = Unvouched(self, from)) return err;
        ArmRound(self);
        std::string reply;
        Status s = self->state.replicator->AnswerFullSync(from, request, &reply);
        if (!s.ok()) return ToError(s);
        return reply;
      },
      [=](atom::full_sync, uint64_t peer) {
        if (!MaySteer(self, Steering::kControl)) return;
        settle();
        self->state.replicator->StartFullSync(peer, true);
        ArmRound(self);
      },
      [=](atom::replicas, ReplicaSet& replicas) {
        if (MaySteer(self, Steering::kControl)) {
          settle();
          self->state.replicator->OnReplicaSet(std::move(replicas));
          ArmRound(self);
        }
      },
      [=](atom::sync) {
        if (!MaySteer(self, Steering::kControl)) return;
        settle();
        self->state.replicator->SyncNow();
        ArmRound(self);
      },
      [=](atom::sync_round, uint64_t seq) {
        auto& st = self->state;
        if (!MaySteer(self, Steering::kTimer) || seq != st.round_seq) return;
        st.round_armed = false;
        st.replicator->OnSyncTick();
        QueueSweepStep(self, /*after_step=*/false);
        // Dormant: the next write, push, pull, replica set or node-level sync arms a round.
        if (!st.replicator->Dormant()) ArmRound(self, st.replicator->Quiet());
      },
      [=](atom::sweep) {
        if (!MaySteer(self, Steering::kTimer)) return;
        auto& st = self->state;
        st.sweep_queued = false;
        // Requests waiting go first: a step then fills a moment the database would be idle in,
        // not one its requests wait through. A few times in a row at most, so that a database
        // never idle still sweeps.
        if (!self->mailbox().empty() && st.sweep_deferrals < kMaxSweepDeferrals) {
          ++st.sweep_deferrals;
          QueueSweepStep(self, /*after_step=*/false);
          return;
        }
        st.sweep_deferrals = 0;
        st.replicator->ContinueSweep();
        QueueSweepStep(self, /*after_step=*/true);
      },
      [=](atom::commit) {
        if (MaySteer(self, Steering::kTimer)) settle();
      },
      [=](atom::limit, uint64_t bytes) {
        if (!MaySteer(self, Steering::kControl)) return;
        settle();  // writes received before the new limit are judged by the old one
        self->state.store->set_size_limit(bytes);
      },
      [=](atom::expire_due) {
        if (MaySteer(self, Steering::kTimer)) self->state.deadlines->ExpireDue();
      },
      [=](atom::idle_check) {
        if (!MaySteer(self, Steering::kTimer)) return;
        // Passivates only while the replicator allows it (Replicator::MayPassivate).
        const bool in_sync = self->state.replicator->MayPassivate();
        // Direct reads (actors/direct_reads.hpp) count as use.
        const bool read_directly =
            self->state.direct != nullptr &&
            self->state.direct->used.exchange(false, std::memory_order_relaxed);
        // Used in the last period: its last access is about now (kept in memory until it stops).
        if (self->state.requests_since_tick > 0 || read_directly) {
          self->state.last_access_ms = NowMillis();
        }
        // Held watch pulls keep it active: a watcher waits without sending requests.
        const bool watched = self->state.watches->holding();
        if (self->state.requests_since_tick == 0 && !read_directly && in_sync && !watched) {
          self->send(supervisor, atom::idle_v, self->state.store->path(),
                     caf::actor_cast<database_actor>(self));
        }
        self->state.requests_since_tick = 0;
        self->delayed_send(self, idle_timeout, atom::idle_check_v);
      },
      [=](atom::passivate) {
        if (!MaySteer(self, Steering::kControl)) return;
        Stop(self);
        self->quit();
      },
  };
}

}  // namespace kvmesh
