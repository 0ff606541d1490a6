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

/// A Completion that hands its answer on as a Result (the public API's callbacks).
template <class Reply>
Completion<Reply> ResultCompletion(std::function<void(Result<Reply>)> done) {
  return Completion<Reply>([done = std::move(done)](Status s, Reply r) {
    done(s.ok() ? Result<Reply>(std::move(r)) : Result<Reply>(std::move(s)));
  });
}

/// A Completion for a request whose reply only says "done" (`Ok`): hands on its Status.
template <class Ok>
Completion<Ok> StatusCompletion(std::function<void(Status)> done) {
  return Completion<Ok>([done = std::move(done)](Status s, Ok) { done(std::move(s)); });
}

}  // namespace kvmesh
