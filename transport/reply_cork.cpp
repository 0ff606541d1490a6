#include "transport/reply_cork.hpp"

#include <utility>

namespace kvmesh {
namespace {
thread_local ReplyCork* current_cork = nullptr;
}  // namespace

ReplyCork::Hold::Hold(ReplyCork& cork) : previous_(current_cork) {
  current_cork = &cork;
}

ReplyCork::Hold::~Hold() {
  current_cork = previous_;
}

ReplyCork::~ReplyCork() {
  Flush();
}

ReplyCork* ReplyCork::Current() {
  return current_cork;
}

void ReplyCork::Add(std::weak_ptr<Output> output) {
  held_.push_back(std::move(output));
}

void ReplyCork::Flush() {
  std::vector<std::weak_ptr<Output>> held;
  held.swap(held_);
  for (const auto& weak : held) {
    if (auto output = weak.lock()) output->SendCorked(this);
  }
}

}  // namespace kvmesh
