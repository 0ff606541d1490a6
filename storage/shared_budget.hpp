// SharedBudget: an amount of something (bytes, entries) the databases of one node take from and
// give back, so that many databases together stay within one bound. Thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace kvmesh::storage {

class SharedBudget {
 public:
  explicit SharedBudget(size_t amount) : left_(static_cast<int64_t>(amount)) {}
  SharedBudget(const SharedBudget&) = delete;
  SharedBudget& operator=(const SharedBudget&) = delete;

  /// Takes `amount` if at least `keep` is left after it (true); otherwise takes nothing (false).
  bool Take(size_t amount, size_t keep = 0) {
    const auto want = static_cast<int64_t>(amount);
    int64_t left = left_.load(std::memory_order_relaxed);
    while (left - want >= static_cast<int64_t>(keep)) {
      if (left_.compare_exchange_weak(left, left - want, std::memory_order_relaxed)) return true;
    }
    return false;
  }
  /// Gives back an amount taken before.
  void Give(size_t amount) {
    left_.fetch_add(static_cast<int64_t>(amount), std::memory_order_relaxed);
  }
  /// What is left to take.
  int64_t left() const { return left_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> left_;
};

}  // namespace kvmesh::storage
