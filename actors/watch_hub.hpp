// WatchHub: the watches of one database actor (README "Watch").
//
// A watch is a client pulling again and again with its position (WatchRequest). A pull that
// finds changes the position has not seen is answered at once, with a bounded page of them
// (storage/watch.hpp); one that finds none is held until a commit brings some, or until its
// wait ends (then answered with no events). Commits, local or replicated, wake the held pulls
// once per burst (the actor sends itself one message), and each reads what it lacks from the
// store. So the actor keeps no queue of events: a slow watcher costs its position, nothing
// more, and the held pulls are bounded (kMaxHeld; more are refused with unavailable, which the
// client library retries).
//
// While it holds pulls the database does not passivate; if it stops anyway (node shutdown,
// drop) every held pull is answered with its position and no events, and the client's next
// pull re-opens the database and resumes there.
#pragma once

#include <caf/typed_response_promise.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "actors/database_actor.hpp"
#include "storage/watch.hpp"

namespace kvmesh {

class WatchHub {
 public:
  using pointer = database_actor::stateful_pointer<database_state>;

  /// Pulls held at once, per database.
  static constexpr size_t kMaxHeld = 1024;
  /// Longest a pull is held, whatever the watcher asks (wait_ms and its deadline are the
  /// client's to choose): held pulls keep a database active and take its slots. Below the
  /// nodes' default request timeout (30 s), so a pull forwarded through another node's gateway
  /// is answered before that gateway gives up on it.
  static constexpr std::chrono::milliseconds kMaxHold{10000};
  /// Bytes of records read per page (a page always holds at least one record).
  static constexpr size_t kPageBytes = 256u << 10;
  /// Pages read for one answer when none holds a change under the pull's prefix.
  static constexpr int kMaxPages = 16;

  explicit WatchHub(pointer self) : self_(self) {}

  /// Answers `request` now, or holds it (see above).
  caf::result<WatchUpdate> Pull(const WatchRequest& request, const Deadline& deadline);
  /// From the store's commit observer (on the actor's thread): wakes the held pulls, once per
  /// burst of commits.
  void OnCommit();
  /// The wake-up OnCommit sent.
  void OnWake();
  /// The wait of held pull `id` ended: answered with no events.
  void OnWaitEnded(uint64_t id);
  /// The actor stops: every held pull is answered with its position and no events.
  void AnswerAll();
  /// True while pulls are held (the database then does not passivate).
  bool holding() const { return !held_.empty(); }

 private:
  struct Held {
    std::string prefix;
    bool with_values = false;
    storage::WatchPosition position;
    caf::typed_response_promise<WatchUpdate> promise;
  };
  /// Reads what `position` lacks under `prefix` into `*update`; `*answer`: something to tell.
  Status Read(const std::string& prefix, bool with_values, storage::WatchPosition* position,
              WatchUpdate* update, bool* answer) const;

  pointer self_;
  std::map<uint64_t, Held> held_;
  uint64_t next_id_ = 0;
  bool wake_sent_ = false;
};

}  // namespace kvmesh
