// Direct reads: the embedded API's Get reads a running database's store on the caller's thread
// instead of asking its actor (two or more thread wake-ups saved per read). Only on a single
// (non-clustered) node, where the local copy is the only one and always serves; bootstrap/node.cpp
// decides when a read may go this way (no earlier request of the handle in flight).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "storage/database_store.hpp"

namespace kvmesh {

/// What a running database actor shares with readers on other threads.
struct DirectReadTarget {
  explicit DirectReadTarget(std::shared_ptr<storage::DatabaseStore> s) : store(std::move(s)) {}

  /// The actor's store. DatabaseStore::Get reads only RocksDB (thread-safe) and fields fixed when
  /// the store is opened, so it may run on any thread while the actor uses the store.
  const std::shared_ptr<storage::DatabaseStore> store;
  /// Set when the actor stops serving (passivated, stopped, dropped): readers then take the actor
  /// path, which re-opens the database and picks up the new actor's target.
  std::atomic<bool> retired{false};
  /// Set by direct reads, cleared by the actor's idle check: a direct read counts as use.
  std::atomic<bool> used{false};

  void MarkUsed() {
    // Mostly read only: the cache line stays shared between readers.
    if (!used.load(std::memory_order_relaxed)) used.store(true, std::memory_order_relaxed);
  }
};

/// The targets of a node's running database actors, by actor id. Thread-safe.
class DirectReads {
 public:
  void Add(uint64_t actor_id, std::shared_ptr<DirectReadTarget> target) {
    std::lock_guard<std::mutex> lock(mutex_);
    targets_[actor_id] = std::move(target);
  }
  void Remove(uint64_t actor_id) {
    std::lock_guard<std::mutex> lock(mutex_);
    targets_.erase(actor_id);
  }
  /// The target of the running actor `actor_id`, or null.
  std::shared_ptr<DirectReadTarget> Find(uint64_t actor_id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = targets_.find(actor_id);
    return it == targets_.end() ? nullptr : it->second;
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, std::shared_ptr<DirectReadTarget>> targets_;
};

}  // namespace kvmesh
