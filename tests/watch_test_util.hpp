// WatchCollector: what a watch delivered, for the watch tests.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "kvmesh/database.hpp"
#include "test_util.hpp"

namespace kvmesh::testing {

/// Collects a watch's events as "put KEY=VALUE" / "erase KEY" lines, and whether it ended.
class WatchCollector {
 public:
  Database::WatchCallback Callback() {
    return [this](Result<WatchUpdate> update) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!update.ok()) {
        error_ = update.status();
        return;
      }
      for (const WatchEvent& e : update->events) {
        EXPECT_FALSE(e.version.empty()) << e.key;
        lines_.push_back(e.kind == WatchEvent::Kind::kPut ? "put " + e.key + "=" + e.value
                                                          : "erase " + e.key);
      }
      ++updates_;
    };
  }
  std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_.size();
  }
  Status error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }
  /// Waits (bounded) until at least `n` lines came.
  bool WaitFor(size_t n) {
    return Eventually(std::chrono::seconds(10), [&] { return size() >= n; });
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
  size_t updates_ = 0;
  Status error_;
};

}  // namespace kvmesh::testing
