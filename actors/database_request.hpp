// One request to the database actor of a path, with the one retry rule every caller needs.
//
// A database actor that was passivated bounces later requests (request_receiver_down) without
// applying them, so re-opening the path through the supervisor and sending again is safe and
// applies the request exactly once. Used by the embedded API's helper actors and by the client
// gateway, so the rule lives here only.
#pragma once

#include <caf/event_based_actor.hpp>
#include <caf/expected.hpp>
#include <caf/sec.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

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
  /// If set, the deadlines of requests to a database actor of this node are kept here rather
  /// than by CAF (see LocalDeadlines); only the one actor that owns it may send on this route.
  std::shared_ptr<LocalDeadlines> local_deadlines;
  /// If set, requests to database actors on other nodes are registered here, so that the one
  /// actor that owns it can fail them when it sees their target go down (RemoteRequests).
  std::shared_ptr<RemoteRequests> remote_requests;
};

/// A bounced request is retried at most this often in all (once is enough unless the database
/// passivates again in between).
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

/// Sends `args...` from `self` to `target` (the path's actor as last known; an invalid handle
/// means "open the path first") and calls `done` once with the reply or the error.
template <class Reply, class Self, class... Ts>
void RequestDatabase(Self* self, std::shared_ptr<const DatabaseRoute> route,
                     database_client_actor target, std::function<void(caf::expected<Reply>)> done,
                     int attempt, Ts... args) {
  auto reopen_and_retry = [=](caf::error cause) {
    if (attempt + 1 >= kMaxDatabaseAttempts) {
      done(std::move(cause));
      return;
    }
    self->request(route->supervisor, route->timeout, atom::open_v, route->path)
        .then(
            [=](database_client_actor& fresh) {
              if (!FromExpected(self, route->supervisor)) {
                done(ForgedReply());
                return;
              }
              if (route->on_reopen) route->on_reopen(fresh);
              RequestDatabase<Reply>(self, route, fresh, done, attempt + 1, args...);
            },
            [=](caf::error& err) { done(std::move(err)); });
  };
  if (!target) {
    reopen_and_retry(caf::make_error(caf::sec::request_receiver_down));
    return;
  }
  auto on_reply = [=](Reply& reply) {
    if (FromExpected(self, target)) {
      done(std::move(reply));
    } else {
      done(ForgedReply());
    }
  };
  auto on_error = [=](caf::error& err) {
    if (err == caf::sec::request_receiver_down) {
      reopen_and_retry(std::move(err));
    } else {
      done(std::move(err));
    }
  };
  LocalDeadlines* deadlines = route->local_deadlines.get();
  const bool local = target.node() == self->node();
  if (deadlines == nullptr || !local) {
    const bool unbounded = route->no_local_deadline && local;
    auto handle = self->request(
        target, unbounded ? caf::duration{caf::infinite} : caf::duration{route->timeout},
        std::move(args)...);
    std::shared_ptr<RemoteRequests> remote = local ? nullptr : route->remote_requests;
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
  const uint64_t id =
      deadlines->Add(route->timeout, [done](caf::error why) { done(std::move(why)); });
  self->request(target, caf::infinite, std::move(args)...)
      .then(
          [=](Reply& reply) mutable {
            if (deadlines->Settle(id)) on_reply(reply);
          },
          [=](caf::error& err) mutable {
            if (deadlines->Settle(id)) on_error(err);
          });
}

}  // namespace kvmesh
