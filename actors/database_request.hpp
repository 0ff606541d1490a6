// Requests to the database actor of a path, with the one retry and ordering rule every caller
// needs (OrderedRoute).
//
// A database actor that was passivated bounces later requests (request_receiver_down) without
// applying them, so re-opening the path through the supervisor and sending again is safe and
// applies the request exactly once; OrderedRoute does that without letting a later request
// overtake an earlier one. Used by the embedded API's requester actors and by the client gateway,
// so the rule lives here only.
#pragma once

#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>
#include <caf/sec.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/placement_board.hpp"
#include "common/request_limits.hpp"
#include "messages/local_deadlines.hpp"
#include "messages/type_ids.hpp"

namespace kvmesh {

/// Requests in flight to database actors on other nodes, so that their owner can fail them as
/// soon as it learns such an actor is lost (a monitor's down message, which comes within
/// milliseconds of a lost connection): CAF 0.17 lets a request to a dead node run to its
/// deadline. Used by one actor only (not thread-safe).
class RemoteRequests {
 public:
  void Add(const caf::actor_addr& target, caf::message_id reply_id) {
    pending_[target].push_back(reply_id);
  }
  void Remove(const caf::actor_addr& target, caf::message_id reply_id) {
    auto it = pending_.find(target);
    if (it == pending_.end()) return;
    auto& ids = it->second;
    ids.erase(std::remove(ids.begin(), ids.end(), reply_id), ids.end());
    if (ids.empty()) pending_.erase(it);
  }
  /// Answers every request of `self` in flight to `target` with `why` now: each one's error
  /// handler runs (a real reply that still comes is dropped, as after a timeout).
  template <class Self>
  void FailAll(Self* self, const caf::actor_addr& target, const caf::error& why) {
    auto it = pending_.find(target);
    if (it == pending_.end()) return;
    std::vector<caf::message_id> ids = std::move(it->second);
    pending_.erase(it);
    auto me = caf::actor_cast<caf::strong_actor_ptr>(self);
    for (const auto& id : ids) me->enqueue(nullptr, id, caf::make_message(why), nullptr);
  }

 private:
  std::map<caf::actor_addr, std::vector<caf::message_id>> pending_;
};

/// Where a path's requests go, and who hears of a re-opened actor.
struct DatabaseRoute {
  matcher_supervisor_actor supervisor;
  /// The normalised database path.
  std::string path;
  /// Deadline of each request (and of each re-open).
  caf::timespan timeout{};
  /// Requests to a database actor on this node carry no CAF deadline: for callers that bound the
  /// wait themselves (the gateway's clients do). A local actor answers every request within its
  /// own bounds (replication waits have theirs) and CAF bounces requests to a stopped one at
  /// once, while a CAF 0.17 deadline wakes the timer thread per request and stays queued there
  /// until it expires, as it is never cancelled. Actors on other nodes keep `timeout`.
  bool no_local_deadline = false;
  /// Called (on the requesting actor) with the fresh actor after a re-open, to cache it.
  std::function<void(const database_client_actor&)> on_reopen;
  /// If set, the deadlines of re-opens and (unless `no_local_deadline`) of requests to a database
  /// actor of this node are kept here rather than by CAF (see LocalDeadlines); only the one actor
  /// that owns it may send on this route.
  std::shared_ptr<LocalDeadlines> local_deadlines;
  /// If set, requests to database actors on other nodes are registered here, so that the one
  /// actor that owns it can fail them when it sees their target go down (RemoteRequests).
  std::shared_ptr<RemoteRequests> remote_requests;
  /// If set, a route whose actor is on another node re-opens the path (after the requests in
  /// flight to that actor came back) once placement changed: the supervisor may now open a
  /// replica on this node, which should serve this node's requests (one hop less, and `status`
  /// through this node reports its own copy). Without it, a node that became a replica again
  /// (undrained, or back in placement) kept sending to the remote one until that one stopped.
  std::shared_ptr<const PlacementBoard> placement;
};

/// A request bounced by a passivated database is sent at most this often in all (twice is enough
/// unless the database passivates again in between).
inline constexpr int kMaxDatabaseAttempts = 3;

/// True if the message `self` is handling now comes from `expected`. CAF 0.17 matches a reply to a
/// pending request by message id alone, and a network peer chooses the ids it sends; so every
/// success handler of an actor reachable from the network checks who answered.
template <class Self, class Handle>
bool FromExpected(Self* self, const Handle& expected) {
  return self->current_sender() != nullptr && expected &&
         self->current_sender()->address() == expected.address();
}

/// The error for a reply that did not come from the actor asked.
inline caf::error ForgedReply() {
  return ToError(Status::Unavailable("a reply came from an actor other than the one asked"));
}

/// Sends `args...` once from `self` to `target` (valid) by the rules of `route` and calls `done`
/// once with the reply or the error, a bounce (request_receiver_down) included: no retry here,
/// see OrderedRoute.
template <class Reply, class Self, class... Ts>
void SendToDatabase(Self* self, const DatabaseRoute& route, const database_client_actor& target,
                    std::function<void(caf::expected<Reply>)> done, Ts... args) {
  auto on_reply = [self, target, done](Reply& reply) {
    if (FromExpected(self, target)) {
      done(std::move(reply));
    } else {
      done(ForgedReply());
    }
  };
  auto on_error = [done](caf::error& err) { done(std::move(err)); };
  LocalDeadlines* deadlines = route.local_deadlines.get();
  const bool local = target.node() == self->node();
  if (deadlines == nullptr || !local || route.no_local_deadline) {
    const bool unbounded = route.no_local_deadline && local;
    auto handle = self->request(
        target, unbounded ? caf::duration{caf::infinite} : caf::duration{route.timeout},
        std::move(args)...);
    std::shared_ptr<RemoteRequests> remote = local ? nullptr : route.remote_requests;
    if (remote == nullptr) {
      handle.then(on_reply, on_error);
      return;
    }
    const caf::message_id reply_id = handle.id();
    const caf::actor_addr address = target.address();
    remote->Add(address, reply_id);
    handle.then(
        [=](Reply& reply) mutable {
          remote->Remove(address, reply_id);
          on_reply(reply);
        },
        [=](caf::error& err) mutable {
          remote->Remove(address, reply_id);
          on_error(err);
        });
    return;
  }
  RequestWithin(self, route.local_deadlines, route.timeout, target, std::move(on_reply),
                std::move(on_error), std::move(args)...);
}

/// A plain write (a put, an erase, or a batch without checks) an OrderedRoute took to send
/// together with the writes taken with it (OrderedRoute::TakeWrite).
struct CoalescedWrite {
  /// The message it was made as, sent as such when it goes alone; kPuts: several plain puts that
  /// came in one message (a client's puts waiting together), each a write of its own at the
  /// database, taken as one here so that their routing costs once per message, not per put.
  enum class Made { kPut, kErase, kBatch, kPuts } made = Made::kBatch;
  /// Its operations (a put or an erase: one; kPuts: the puts, in order).
  WriteBatch batch;
  Deadline deadline;
  /// Gets its outcome (not for kPuts).
  std::function<void(caf::expected<atom::ok>)> done;
  /// kPuts: gets the outcome of each put, in order (an empty error: applied), or one error for
  /// all of them.
  std::function<void(caf::expected<std::vector<caf::error>>)> done_each;
};

/// The requests of one requester actor to one database path, applied in the order they were made
/// even across re-activations of the database.
///
/// A passivated database actor applies the requests ahead of its `passivate` and bounces every
/// later one unapplied (request_receiver_down); so of the requests in flight to it, a prefix is
/// applied and the rest comes back. Retrying each bounced request on its own, as it comes back,
/// let a later request (sent to the re-opened actor once another retry had found it) overtake an
/// earlier one still on its way back: `put(k, 1); put(k, 2)` could end with 1. So on the first
/// bounce the route pauses: requests made meanwhile wait, the path is re-opened through the
/// supervisor, and once the new actor is known and every request sent to the old one has come
/// back (answered or bounced), the bounced ones are sent again in their original order, then the
/// waiting ones. The first request of a route without an actor waits for the open the same way.
///
/// Requests keep their place even if one fails: a request that bounced kMaxDatabaseAttempts times,
/// or whose re-open failed, fails unapplied. A request that timed out may still be applied at the
/// database, but never after its deadline (the database actor refuses it then), so it cannot
/// overtake a request made after the caller saw the timeout either.
///
/// Used by the embedded API's requester actors (one route per handle) and by the client gateway
/// (one route per path, so every client's requests keep their order). Only the one actor that owns
/// it may use it (not thread-safe).
class OrderedRoute : public std::enable_shared_from_this<OrderedRoute> {
 public:
  /// Requests go by `route`'s rules to `actor` (invalid: open the path first), which was asked
  /// for at placement epoch `opened_epoch` (DatabaseRoute::placement; read before the open).
  OrderedRoute(std::shared_ptr<const DatabaseRoute> route, database_client_actor actor,
               uint64_t opened_epoch = 0)
      : route_(std::move(route)), actor_(std::move(actor)), opened_epoch_(opened_epoch) {}

  const DatabaseRoute& route() const { return *route_; }
  /// The database actor requests go to now (invalid before the first open, and while paused).
  const database_client_actor& actor() const { return actor_; }
  /// True if no request is in flight, waiting or taken, and no re-open is under way.
  bool Idle() const { return in_flight_ == 0 && waiting_.empty() && !reopening_ && taken_.empty(); }

  /// The actor at `gone` went down (the owner monitors it): later requests re-open the path
  /// without first bouncing off it. Requests in flight to it still come back.
  void Forget(const caf::actor_addr& gone) {
    if (!paused_ && actor_ && actor_.address() == gone) actor_ = nullptr;
    if (previous_ && previous_.address() == gone) previous_ = nullptr;
  }

  /// Sends `args..., deadline` from `self` to the path's database actor after every earlier
  /// request of this route, and calls `done` once with the reply or the error. A request whose
  /// deadline passes before it is sent (waiting behind a re-open) fails unsent.
  template <class Reply, class Self, class... Ts>
  void Request(Self* self, std::function<void(caf::expected<Reply>)> done, Deadline deadline,
               Ts... args) {
    FlushWrites(self);
    Enqueue<Reply>(self, std::move(done), deadline, std::move(args)...);
  }

  // -- Coalesced writes --
  //
  // Under load many plain writes wait in the owner's mailbox at once. Taken instead of sent one
  // by one, they go as one message `(batch, SharedWriteBatches, Deadline)` (to another node
  // `(batch, vector<WriteBatch>, Deadline)`), which the database queues as separate writes of
  // one group commit and answers with one outcome per write: one message and one reply for many
  // writes. A write alone goes as the message it was made as.

  /// Takes plain write `w` (no checks: a conditional batch is judged by one replica, perhaps
  /// forwarded there, and goes alone through Request). True if it is the first taken since the
  /// last flush: the owner then sends itself a message that calls FlushWrites, which queues
  /// behind the messages already waiting, so every write they carry joins. Any Request flushes
  /// first, so the order of requests holds.
  bool TakeWrite(CoalescedWrite w) {
    taken_.push_back(std::move(w));
    return taken_.size() == 1;
  }

  /// Sends the writes taken and not yet sent, in messages no larger than one request may be
  /// (kMaxBatchOps operations, kMaxBatchBytes of keys and values; a node closes a connection
  /// carrying more) and of deadlines within kCoalescedDeadlineSpreadNs (common/deadline.hpp:
  /// all clients of a path share a route here, so one client's short deadline must not fail
  /// another's writes).
  template <class Self>
  void FlushWrites(Self* self) {
    if (taken_.empty()) return;
    std::vector<CoalescedWrite> writes = std::move(taken_);
    taken_.clear();
    std::vector<CoalescedWrite> message;
    size_t bytes = 0;
    size_t ops = 0;
    int64_t earliest = 0;  // of the message's deadlines (0: none has one)
    int64_t latest = 0;
    for (auto& w : writes) {
      const size_t w_bytes = BatchBytes(w.batch);
      const int64_t at = w.deadline.wall_ns;
      const bool spread = !message.empty() && ((at == 0) != (earliest == 0) ||
                                               std::max(latest, at) - std::min(earliest, at) >
                                                   kCoalescedDeadlineSpreadNs);
      if (!message.empty() &&
          (bytes + w_bytes > kMaxBatchBytes || ops + w.batch.ops.size() > kMaxBatchOps || spread)) {
        SendWrites(self, std::move(message), Deadline{earliest});
        message.clear();
        bytes = 0;
        ops = 0;
      }
      if (message.empty()) {
        earliest = latest = at;
      } else {
        earliest = std::min(earliest, at);
        latest = std::max(latest, at);
      }
      bytes += w_bytes;
      ops += w.batch.ops.size();
      message.push_back(std::move(w));
    }
    SendWrites(self, std::move(message), Deadline{earliest});
  }

  /// Drops the writes taken and not yet sent (the owner stops): their callbacks are destroyed
  /// uncalled, and hold the only references to what they would answer.
  void DropWrites() { taken_.clear(); }

 private:
  /// Sends `writes` (taken, in order) as one message with `deadline`, the earliest of theirs.
  template <class Self>
  void SendWrites(Self* self, std::vector<CoalescedWrite> writes, Deadline deadline) {
    if (writes.empty()) return;
    if (writes.size() == 1 && writes.front().made != CoalescedWrite::Made::kPuts) {
      CoalescedWrite& w = writes.front();
      switch (w.made) {
        case CoalescedWrite::Made::kPut:
          Enqueue<atom::ok>(self, std::move(w.done), w.deadline, atom::put_v,
                            std::move(w.batch.ops[0].key), std::move(w.batch.ops[0].value));
          return;
        case CoalescedWrite::Made::kErase:
          Enqueue<atom::ok>(self, std::move(w.done), w.deadline, atom::erase_v,
                            std::move(w.batch.ops[0].key));
          return;
        case CoalescedWrite::Made::kBatch:
          Enqueue<atom::ok>(self, std::move(w.done), w.deadline, atom::batch_v, std::move(w.batch));
          return;
        case CoalescedWrite::Made::kPuts:
          break;  // not here: see the condition
      }
    }
    // One WriteBatch per write at the database (each judged and answered alone, a kPuts' puts
    // too); each writer keeps its callback and how many of them are its.
    struct Writer {
      size_t count = 1;
      std::function<void(caf::expected<atom::ok>)> done;
      std::function<void(caf::expected<std::vector<caf::error>>)> done_each;
    };
    auto writers = std::make_shared<std::vector<Writer>>();
    writers->reserve(writes.size());
    size_t count = 0;
    for (auto& w : writes) {
      Writer writer;
      if (w.made == CoalescedWrite::Made::kPuts) {
        writer.count = w.batch.ops.size();
        writer.done_each = std::move(w.done_each);
      } else {
        writer.done = std::move(w.done);
      }
      count += writer.count;
      writers->push_back(std::move(writer));
    }
    std::vector<WriteBatch> batches;
    batches.reserve(count);
    for (auto& w : writes) {
      if (w.made != CoalescedWrite::Made::kPuts) {
        batches.push_back(std::move(w.batch));
        continue;
      }
      for (WriteOp& op : w.batch.ops) batches.emplace_back().ops.push_back(std::move(op));
    }
    Enqueue<std::vector<caf::error>>(
        self,
        [writers, count](caf::expected<std::vector<caf::error>> reply) {
          if (writers->size() == 1 && writers->front().done_each && reply &&
              reply->size() == count) {
            writers->front().done_each(std::move(reply));  // one message's puts alone
            return;
          }
          auto fewer = [] {
            return ToError(Status::Internal("the database answered fewer writes than it got"));
          };
          size_t next = 0;  // the entry of the reply the next writer's first write has
          for (Writer& writer : *writers) {
            if (writer.done_each) {
              if (!reply) {
                writer.done_each(reply.error());
              } else {
                std::vector<caf::error> outcomes(writer.count);
                for (size_t i = 0; i < writer.count; ++i, ++next) {
                  outcomes[i] = next < reply->size() ? std::move((*reply)[next]) : fewer();
                }
                writer.done_each(std::move(outcomes));
              }
              continue;
            }
            const size_t i = next++;
            if (!reply) {
              writer.done(reply.error());
            } else if (i >= reply->size()) {
              writer.done(fewer());
            } else if ((*reply)[i]) {
              writer.done(std::move((*reply)[i]));
            } else {
              writer.done(atom::ok_v);
            }
          }
        },
        deadline, atom::batch_v,
        SharedWriteBatches{std::make_shared<const std::vector<WriteBatch>>(std::move(batches))});
  }

  /// What a request's argument is kept and sent as (Enqueue): a WriteBatch shared with the
  /// database actor (SharedWriteBatch), not copied into the message of each attempt; anything
  /// else as it is.
  template <class T>
  static T ForEveryAttempt(T x) {
    return x;
  }
  static SharedWriteBatch ForEveryAttempt(WriteBatch x) {
    return {std::make_shared<const WriteBatch>(std::move(x))};
  }
  /// What an argument kept by Enqueue is sent as to another node: shared writes as the plain
  /// ones (serialized either way, and read by every version of kvmesh).
  template <class T>
  static const T& AcrossNodes(const T& x) {
    return x;
  }
  static const WriteBatch& AcrossNodes(const SharedWriteBatch& x) { return *x.batch; }
  static const std::vector<WriteBatch>& AcrossNodes(const SharedWriteBatches& x) {
    return *x.batches;
  }

  /// Request without the flush: after every earlier request of this route.
  template <class Reply, class Self, class... Ts>
  void Enqueue(Self* self, std::function<void(caf::expected<Reply>)> done, Deadline deadline,
               Ts... args) {
    // The arguments are kept for a resend: each attempt copies them into its message (a write's
    // operations are shared instead: ForEveryAttempt).
    auto message =
        std::make_shared<const std::tuple<decltype(ForEveryAttempt(std::move(args)))..., Deadline>>(
            ForEveryAttempt(std::move(args))..., deadline);
    Pending p;
    p.seq = next_seq_++;
    p.deadline = deadline;
    p.send = [self, route = route_, done, message](const database_client_actor& target,
                                                   std::function<void(caf::error*)> ended) {
      std::function<void(caf::expected<Reply>)> on_result = [done,
                                                             ended](caf::expected<Reply> reply) {
        if (!reply && reply.error() == caf::sec::request_receiver_down) {
          ended(&reply.error());
          return;
        }
        ended(nullptr);
        done(std::move(reply));
      };
      std::apply(
          [&](const auto&... xs) {
            if (target.node() == self->node()) {
              SendToDatabase<Reply>(self, *route, target, std::move(on_result), xs...);
            } else {
              SendToDatabase<Reply>(self, *route, target, std::move(on_result), AcrossNodes(xs)...);
            }
          },
          *message);
    };
    p.fail = [done](caf::error why) { done(std::move(why)); };
    Dispatch(self, std::move(p));
  }

  struct Pending {
    /// Order of the request on this route.
    uint64_t seq = 0;
    /// Attempts bounced so far.
    int bounces = 0;
    Deadline deadline;
    /// Sends one attempt to `target`, then calls `ended` once: with the bounce if `target`
    /// bounced it (and the request's callback not called), else with null after the callback.
    std::function<void(const database_client_actor& target, std::function<void(caf::error*)> ended)>
        send;
    /// Ends the request unsent with `why`.
    std::function<void(caf::error why)> fail;
  };

  /// DatabaseRoute::placement's epoch, 0 without one.
  uint64_t PlacementEpoch() const { return route_->placement ? route_->placement->epoch() : 0; }

  template <class Self>
  void Dispatch(Self* self, Pending p) {
    // Placement changed since a remote actor was opened: open again (see
    // DatabaseRoute::placement). As after a bounce, requests wait until those in flight came back.
    if (!paused_ && actor_ && actor_.node() != self->node() && PlacementEpoch() != opened_epoch_) {
      previous_ = std::move(actor_);
      actor_ = nullptr;
    }
    if (!paused_ && !actor_) {
      paused_ = true;
      Reopen(self);
    }
    if (paused_) {
      waiting_.emplace(p.seq, std::move(p));
      return;
    }
    Send(self, std::move(p));
  }

  template <class Self>
  void Send(Self* self, Pending p) {
    if (p.deadline.Passed()) {
      p.fail(ToError(Status::Timeout(DeadlinePassedMessage("it could be sent to the database"))));
      return;
    }
    ++in_flight_;
    auto me = shared_from_this();
    auto send = p.send;
    send(actor_, [self, me, p = std::move(p)](caf::error* bounce) mutable {
      --me->in_flight_;
      if (bounce != nullptr) {
        me->Bounced(self, std::move(p), std::move(*bounce));
      } else {
        me->MaybeResume(self);
      }
    });
  }

  template <class Self>
  void Bounced(Self* self, Pending p, caf::error cause) {
    if (++p.bounces >= kMaxDatabaseAttempts) {
      p.fail(std::move(cause));
      MaybeResume(self);
      return;
    }
    if (!paused_) {
      // Every request in flight went to this actor, which is gone: the path is re-opened.
      paused_ = true;
      actor_ = nullptr;
    }
    previous_ = nullptr;  // a bounce: no going back to an actor that stopped
    waiting_.emplace(p.seq, std::move(p));
    if (!actor_) Reopen(self);
    MaybeResume(self);
  }

  template <class Self>
  void Reopen(Self* self) {
    if (reopening_) return;
    reopening_ = true;
    auto me = shared_from_this();
    // Read before asking: a change of placement while the open is under way counts as after it.
    const uint64_t epoch = PlacementEpoch();
    auto on_reply = [self, me, epoch](database_client_actor& fresh) {
      me->reopening_ = false;
      if (!FromExpected(self, me->route_->supervisor)) {
        me->FailWaiting(ForgedReply());
        return;
      }
      me->actor_ = fresh;
      me->opened_epoch_ = epoch;
      me->previous_ = nullptr;
      if (me->route_->on_reopen) me->route_->on_reopen(fresh);
      me->MaybeResume(self);
    };
    auto on_error = [self, me, epoch](caf::error& err) {
      me->reopening_ = false;
      if (me->previous_) {
        // Opened again only because placement changed, and that failed (the supervisor
        // busy with the change, say): the actor used until now still serves.
        me->actor_ = std::move(me->previous_);
        me->previous_ = nullptr;
        me->opened_epoch_ = epoch;
        me->MaybeResume(self);
        return;
      }
      me->FailWaiting(err);
    };
    if (route_->local_deadlines) {
      RequestWithin(self, route_->local_deadlines, route_->timeout, route_->supervisor,
                    std::move(on_reply), std::move(on_error), atom::open_v, route_->path);
      return;
    }
    self->request(route_->supervisor, route_->timeout, atom::open_v, route_->path)
        .then(std::move(on_reply), std::move(on_error));
  }

  /// Ends the pause once the new actor is known and nothing is in flight to the old one: the
  /// waiting requests go in their order.
  template <class Self>
  void MaybeResume(Self* self) {
    if (!paused_ || !actor_ || in_flight_ > 0) return;
    paused_ = false;
    std::map<uint64_t, Pending> waiting;
    waiting.swap(waiting_);
    // A send never answers synchronously (a bounce is a message), so none of these re-enters.
    for (auto& [seq, p] : waiting) Send(self, std::move(p));
  }

  /// The path could not be re-opened: every waiting request fails unsent, and the next request
  /// tries again.
  void FailWaiting(const caf::error& why) {
    paused_ = false;
    actor_ = nullptr;
    std::map<uint64_t, Pending> waiting;
    waiting.swap(waiting_);
    for (auto& [seq, p] : waiting) p.fail(why);
  }

  std::shared_ptr<const DatabaseRoute> route_;
  database_client_actor actor_;
  /// PlacementEpoch() when `actor_` was asked for.
  uint64_t opened_epoch_ = 0;
  /// The remote actor given up because placement changed, while the path is opened again: used
  /// again if that open fails (cleared by a bounce or its down message).
  database_client_actor previous_;
  uint64_t next_seq_ = 0;
  /// Attempts sent and not yet come back.
  size_t in_flight_ = 0;
  /// Requests wait in `waiting_` (a bounce or a first open is being dealt with).
  bool paused_ = false;
  bool reopening_ = false;
  /// Bounced and newly made requests while paused, by `seq`.
  std::map<uint64_t, Pending> waiting_;
  /// Writes taken and not yet sent (TakeWrite), in order.
  std::vector<CoalescedWrite> taken_;
};

}  // namespace kvmesh
