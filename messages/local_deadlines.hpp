// LocalDeadlines: request deadlines kept by the requesting actor itself. Used by the embedded
// API's requester actors (actors/database_request.hpp) and by the client's connection actor
// (client/client.cpp), so the one workaround for CAF 0.17's request timeouts lives here.
#pragma once

#include <caf/detail/type_traits.hpp>
#include <caf/error.hpp>
#include <caf/sec.hpp>
#include <caf/timespan.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

namespace kvmesh {

/// Deadlines of requests, kept by the requesting actor itself instead of a CAF request timeout
/// each. CAF 0.17's clock is a thread of its own, and setting and then cancelling a request
/// timeout wakes it twice per request (and a request with a timeout that is never cancelled stays
/// queued there until it expires): for the embedded API's blocking calls that was about half of a
/// put's latency. Here an attempt costs a map entry, and one check per period (a tenth of the
/// shortest timeout, via `schedule_check`) runs while any is pending, so an attempt fails with
/// sec::request_timeout between its deadline and a period later. Used by one actor only (not
/// thread-safe).
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
    pending_.emplace(id, Entry{Clock::now() + timeout, std::move(expire)});
    const caf::timespan period =
        std::max<caf::timespan>(timeout / 10, std::chrono::milliseconds(1));
    if (!check_scheduled_ || period < period_) {
      check_scheduled_ = true;
      period_ = period;
      schedule_check_(period);
    }
    return id;
  }

  /// True if attempt `id` was pending: its answer is delivered by the caller. False if it
  /// ended already (the late answer is dropped).
  bool Settle(uint64_t id) { return pending_.erase(id) > 0; }

  /// The scheduled check: expires every attempt past its deadline, and schedules the next check
  /// while any attempt is pending.
  void ExpireDue() {
    check_scheduled_ = false;
    const auto now = Clock::now();
    std::vector<Expire> expired;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.deadline <= now) {
        expired.push_back(std::move(it->second.expire));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    if (!pending_.empty()) {
      check_scheduled_ = true;
      schedule_check_(period_);
    }
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
    Expire expire;
  };
  std::function<void(caf::timespan)> schedule_check_;
  std::map<uint64_t, Entry> pending_;
  uint64_t last_id_ = 0;
  bool check_scheduled_ = false;
  caf::timespan period_{};
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
  const uint64_t id = deadlines->Add(timeout, [failed](caf::error why) { (*failed)(why); });
  using Trait = caf::detail::get_callable_trait<OnReply>;
  self->request(target, caf::infinite, std::forward<Ts>(args)...)
      .then(local_deadlines_detail::Settled(deadlines, id, std::move(on_reply),
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
