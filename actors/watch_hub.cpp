#include "actors/watch_hub.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <chrono>

#include "common/path.hpp"
#include "storage/database_store.hpp"
#include "storage/hlc.hpp"

namespace kvmesh {

Status WatchHub::Read(const std::string& prefix, bool with_values, storage::WatchPosition* position,
                      WatchUpdate* update, bool* answer) const {
  bool more = false;
  Status s = storage::NextWatchEvents(*self_->state.store, prefix, with_values, kPageBytes,
                                      kMaxPages, position, &update->events, &more);
  if (!s.ok()) return s;
  update->position = storage::EncodeWatchPosition(*position);
  *answer = !update->events.empty() || more;
  return Status::OK();
}

caf::result<WatchUpdate> WatchHub::Pull(const WatchRequest& request, const Deadline& deadline) {
  auto& st = self_->state;
  std::string prefix;
  Status s = NormalizePrefix(request.prefix, &prefix);
  if (!s.ok()) return ToError(Status(s.code(), s.message() + ": " + Quote(request.prefix)));
  storage::WatchPosition position;
  if (request.position.empty()) {
    position = storage::WatchPositionNow(*st.store);
  } else {
    s = storage::DecodeWatchPosition(request.position, &position);
    if (!s.ok()) return ToError(s);
    const uint64_t grace_ms = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(st.replication->tombstone_grace)
            .count());
    s = storage::CheckWatchPosition(position, st.store->WallTicks() >> storage::hlc::kSubMsBits,
                                    grace_ms);
    if (!s.ok()) return ToError(s);
  }
  WatchUpdate update;
  bool answer = false;
  s = Read(prefix, request.with_values, &position, &update, &answer);
  if (!s.ok()) return ToError(s);
  // Held at most half the time left: the answer must reach the caller before its deadline.
  const int64_t left_ns = deadline.wall_ns == 0 ? 0 : deadline.wall_ns - Deadline::NowNs();
  const auto wait =
      std::min<std::chrono::nanoseconds>({std::chrono::milliseconds(request.wait_ms),
                                          std::chrono::nanoseconds(left_ns / 2), kMaxHold});
  if (answer || wait.count() <= 0) return update;
  if (held_.size() >= kMaxHeld) {
    return ToError(Status::Unavailable("database " + Quote(st.store->path()) + " holds " +
                                       std::to_string(kMaxHeld) +
                                       " watch pulls already on this node; try again later"));
  }
  const uint64_t id = ++next_id_;
  Held& held = held_[id];
  held.prefix = std::move(prefix);
  held.with_values = request.with_values;
  held.position = std::move(position);
  held.promise = self_->make_response_promise<WatchUpdate>();
  self_->delayed_send(self_, std::chrono::duration_cast<caf::timespan>(wait), atom::watch_v, id);
  return held.promise;
}

void WatchHub::OnCommit() {
  if (held_.empty() || wake_sent_) return;
  wake_sent_ = true;
  self_->send(self_, atom::watch_v, atom::tick_v);
}

void WatchHub::OnWake() {
  wake_sent_ = false;
  // Pulls held at the same place (prefix, values or not, and the writes seen: the watchers of
  // one stream that one commit caught up) get the same answer, so it is read once per place,
  // not once per watcher. The caught-up time is left out of the place: the answer sets it.
  struct Answer {
    Status status;
    storage::WatchPosition position;
    WatchUpdate update;
    bool answer = false;
  };
  std::map<std::string, Answer> answers;
  for (auto it = held_.begin(); it != held_.end();) {
    Held& held = it->second;
    storage::WatchPosition seen;
    seen.seen = held.position.seen;
    std::string place = std::to_string(held.prefix.size()) + ':' + held.prefix +
                        (held.with_values ? '1' : '0') + storage::EncodeWatchPosition(seen);
    auto [a, first] = answers.try_emplace(std::move(place));
    Answer& read = a->second;
    if (first) {
      read.position = held.position;
      read.status = Read(held.prefix, held.with_values, &read.position, &read.update, &read.answer);
    }
    if (!read.status.ok()) {
      held.promise.deliver(ToError(read.status));
    } else if (read.answer && held.position.caught_up_ms > read.position.caught_up_ms) {
      // A page with more to come keeps the caught-up time it started from, the first pull's:
      // this watcher's own, later one stays (an older one would expire sooner).
      WatchUpdate own = read.update;
      storage::WatchPosition position = read.position;
      position.caught_up_ms = held.position.caught_up_ms;
      own.position = storage::EncodeWatchPosition(position);
      held.promise.deliver(std::move(own));
    } else if (read.answer) {
      held.promise.deliver(read.update);
    } else {
      // Changes to other keys only: the position moves past them, the pull stays.
      held.position = read.position;
      ++it;
      continue;
    }
    it = held_.erase(it);
  }
}

void WatchHub::OnWaitEnded(uint64_t id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  // Read once more: the answer then says the watcher was caught up now (the position's age
  // counts from there), and a change a wake-up has not reached yet is not left waiting.
  Held& held = it->second;
  WatchUpdate update;
  bool answer = false;
  Status s = Read(held.prefix, held.with_values, &held.position, &update, &answer);
  if (s.ok()) {
    held.promise.deliver(std::move(update));
  } else {
    held.promise.deliver(ToError(s));
  }
  held_.erase(it);
}

void WatchHub::AnswerAll() {
  while (!held_.empty()) OnWaitEnded(held_.begin()->first);
}

}  // namespace kvmesh
