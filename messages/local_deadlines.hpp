// LocalDeadlines: request deadlines kept by the requesting actor itself. Used by the embedded
// API's requester actors (actors/database_request.hpp) and by the client's connection actor
// (client/client.cpp), so the one workaround for CAF 0.17's request timeouts lives here.
#pragma once

#include <caf/actor_cast.hpp>
#include <caf/detail/type_traits.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message_id.hpp>
#include <caf/sec.hpp>
#include <caf/timespan.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

namespace kvmesh {

/// Deadlines of requests, kept by the requesting actor itself instead of a CAF request timeout
/// each. CAF 0.17's clock is a thread of its own, and setting and then cancelling a request
/// timeout wakes it twice per request (and a request with a timeout that is never cancelled stays
/// queued there until it expires): for the embedded API's blocking calls that was about half of a
/// put's latency. Here an attempt costs a map entry, and while any is pending a check (via
/// `schedule_check`) runs every tenth of the shortest timeout pending, so an attempt fails with
/// sec::request_timeout between its deadline and a tenth of its timeout later, and the last
/// check comes soon after the last answer (not a whole timeout later, which kept a node busy for
/// seconds after a load). One check is outstanding at a time unless an attempt needs an earlier
/// one. Used by one actor only (not thread-safe).
class LocalDeadlines {
 public:
  using Clock = std::chrono::steady_clock;
  /// Ends an attempt without its answer: sec::request_timeout when its deadline passed, or the
  /// error given to EndAll.
  using Expire = std::function<void(caf::error why)>;

  /// `schedule_check` is called when a check must be scheduled: run ExpireDue after `period`.
  void set_schedule_check(std::function<void(caf::timespan period)> schedule_check) {
    schedule_check_ = std::move(schedule_check);
  }

  /// Registers an attempt that `expire` ends unless Settle(id) comes first. Returns its id.
  uint64_t Add(caf::timespan timeout, Expire expire) {
    const uint64_t id = ++last_id_;
    const Clock::time_point now = Clock::now();
    const Entry& entry =
        pending_.emplace(id, Entry{now + timeout, Period(timeout), std::move(expire)})
            .first->second;
    CheckBy(now + entry.period);
    return id;
  }

  /// True if attempt `id` was pending: its answer is delivered by the caller. False if it
  /// ended already (the late answer is dropped).
  bool Settle(uint64_t id) { return pending_.erase(id) > 0; }

  /// The scheduled check (the owner must take it only from itself): expires every attempt past
  /// its deadline, and schedules the next check while any attempt is pending.
  void ExpireDue() {
    if (!checks_.empty()) checks_.erase(checks_.begin());
    const auto now = Clock::now();
    std::vector<Expire> expired;
    caf::timespan period = caf::timespan::max();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.deadline <= now) {
        expired.push_back(std::move(it->second.expire));
        it = pending_.erase(it);
      } else {
        period = std::min(period, it->second.period);
        ++it;
      }
    }
    if (!pending_.empty()) CheckBy(now + period);
    // May add attempts (a retry).
    for (auto& expire : expired) expire(caf::make_error(caf::sec::request_timeout));
  }

  /// Ends every pending attempt now with `why` (the peer that would answer is gone).
  void EndAll(const caf::error& why) {
    std::map<uint64_t, Entry> ended;
    ended.swap(pending_);
    for (auto& [id, entry] : ended) entry.expire(why);
  }

  /// Forgets every pending attempt without calling its `expire`: its callbacks are destroyed,
  /// so a Completion among them answers kUnavailable ("dropped"). For the owning actor's exit.
  void DropAll() {
    std::map<uint64_t, Entry> dropped;
    dropped.swap(pending_);
  }

  size_t pending() const { return pending_.size(); }

 private:
  struct Entry {
    Clock::time_point deadline;
    caf::timespan period;  // a tenth of its timeout, at least 1 ms
    Expire expire;
  };
  static caf::timespan Period(caf::timespan timeout) {
    return std::max<caf::timespan>(timeout / 10, std::chrono::milliseconds(1));
  }
  /// Makes sure a check runs by `when`: schedules one unless one outstanding comes by then (so
  /// checks never form a second chain: each outstanding check schedules at most the next one).
  void CheckBy(Clock::time_point when) {
    const auto now = Clock::now();
    when = std::max(when, now + std::chrono::milliseconds(1));  // no check sooner than this
    if (!checks_.empty() && *checks_.begin() <= when) return;
    checks_.insert(when);
    schedule_check_(std::chrono::duration_cast<caf::timespan>(when - now));
  }

  std::function<void(caf::timespan)> schedule_check_;
  std::map<uint64_t, Entry> pending_;
  uint64_t last_id_ = 0;
  /// When the checks scheduled and not run yet come.
  std::multiset<Clock::time_point> checks_;
};

namespace local_deadlines_detail {
template <class F, class... Args>
auto Settled(std::shared_ptr<LocalDeadlines> deadlines, uint64_t id, F f,
             caf::detail::type_list<Args...>) {
  return [deadlines = std::move(deadlines), id, f = std::move(f)](Args... args) mutable {
    if (deadlines->Settle(id)) f(std::forward<Args>(args)...);
  };
}
}  // namespace local_deadlines_detail

/// Answers request `reply_id` of `self` with `err` now. Consumes CAF's response handler (the real
/// reply, if it ever comes, is dropped) as CAF's own timeout would: without it, a request whose
/// reply never comes kept its handler (and what it holds) for the actor's life.
template <class Self>
void InjectReply(Self* self, caf::message_id reply_id, caf::error err) {
  caf::actor_cast<caf::strong_actor_ptr>(self)->enqueue(nullptr, reply_id,
                                                        caf::make_message(std::move(err)), nullptr);
}

/// `self->request(target, timeout, args...).then(on_reply, on_error)`, with the deadline kept by
/// `deadlines` (whose checks `self` runs) instead of CAF's clock: exactly one of `on_reply` and
/// `on_error` (taking caf::error&) runs, in `self`, unless `self` terminates first; a reply after
/// the deadline is dropped. For actors that send many requests (the embedded API's requesters, a
/// replica's exchanges with its peers): with CAF's timeouts each request left an entry in CAF's
/// clock that woke the actor once more when it expired, up to the whole timeout after the
/// answer, so a cluster kept working for seconds after a load ended.
template <class Self, class Handle, class OnReply, class OnError, class... Ts>
void RequestWithin(Self* self, const std::shared_ptr<LocalDeadlines>& deadlines,
                   caf::timespan timeout, const Handle& target, OnReply on_reply, OnError on_error,
                   Ts&&... args) {
  auto failed = std::make_shared<OnError>(std::move(on_error));
  auto handle = self->request(target, caf::infinite, std::forward<Ts>(args)...);
  const caf::message_id reply_id = handle.id();
  const uint64_t id = deadlines->Add(timeout, [self, reply_id, failed](caf::error why) {
    InjectReply(self, reply_id, why);  // found settled and dropped
    (*failed)(why);
  });
  using Trait = caf::detail::get_callable_trait<OnReply>;
  handle.then(local_deadlines_detail::Settled(deadlines, id, std::move(on_reply),
                                              typename Trait::arg_types{}),
              [deadlines, id, failed](caf::error& err) {
                if (deadlines->Settle(id)) (*failed)(err);
              });
}

/// Ties `deadlines` to the life of its owning actor `self`: when the actor terminates, attempts
/// still pending are dropped. Otherwise whoever else holds the deadlines (a route lives as long as
/// its handle) would keep their callbacks, and a caller blocked on one would wait for its own
/// bound instead of hearing at once that the request was dropped (a call racing node shutdown).
template <class Self>
void DropPendingOnExit(Self* self, const std::shared_ptr<LocalDeadlines>& deadlines) {
  self->attach_functor([weak = std::weak_ptr<LocalDeadlines>(deadlines)] {
    if (auto d = weak.lock()) d->DropAll();
  });
}

}  // namespace kvmesh
