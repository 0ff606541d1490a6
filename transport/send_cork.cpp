#include "transport/send_cork.hpp"

#include <utility>

namespace kvmesh {
namespace {
thread_local SendCork* current_cork = nullptr;
}  // namespace

SendCork::Hold::Hold(SendCork& cork) : previous_(current_cork) {
  current_cork = &cork;
}

SendCork::Hold::~Hold() {
  current_cork = previous_;
}

SendCork::Suspend::Suspend() : previous_(current_cork) {
  current_cork = nullptr;
}

SendCork::Suspend::~Suspend() {
  current_cork = previous_;
}

SendCork::~SendCork() {
  Flush();
}

SendCork* SendCork::Current() {
  return current_cork;
}

void SendCork::Add(std::weak_ptr<Output> output) {
  held_.push_back(std::move(output));
}

void SendCork::Flush() {
  std::vector<std::weak_ptr<Output>> held;
  held.swap(held_);
  for (const auto& weak : held) {
    if (auto output = weak.lock()) output->SendCorked(this);
  }
}

}  // namespace kvmesh
