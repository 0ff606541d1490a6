// Completion: a callback that runs exactly once, even if the request it belongs to is dropped.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <utility>

#include "kvmesh/status.hpp"

namespace kvmesh {

/// Calls its function exactly once: with the first (status, reply) given to it, or, if every
/// copy is destroyed unanswered (the request was dropped, e.g. queued when its actor stopped),
/// with kUnavailable. So a caller waiting on it never waits forever and a future never breaks.
template <class Reply>
class Completion {
 public:
  using Fn = std::function<void(Status, Reply)>;
  explicit Completion(Fn fn) : state_(std::make_shared<State>(std::move(fn))) {}
  void operator()(Status status, Reply reply) const {
    if (!state_->called.exchange(true)) state_->fn(std::move(status), std::move(reply));
  }

 private:
  struct State {
    explicit State(Fn f) : fn(std::move(f)) {}
    ~State() {
      if (!called) fn(Status::Unavailable("the request was dropped before it completed"), Reply{});
    }
    Fn fn;
    std::atomic<bool> called{false};
  };
  std::shared_ptr<State> state_;
};

}  // namespace kvmesh
