// PlacementBoard: what the supervisor knows of drains and rebalancing, for `kvmesh members`,
// and how often placement changed, for the routes of requests (DatabaseRoute::placement).
//
// The supervisor publishes it (after each change of drain records and each rebalancing wave);
// whoever answers a members request (the membership actor) reads it on its own thread, so it is
// guarded by a mutex. No CAF.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "kvmesh/types.hpp"

namespace kvmesh {

class PlacementBoard {
 public:
  /// A node's place as MemberStatus shows it (MemberStatus::placement, drain_total, drain_left).
  struct Entry {
    std::string placement;
    uint64_t total = 0;
    uint64_t left = 0;
  };

  /// Replaces what is shown: `nodes` out of placement (the others take replicas), and this
  /// node's databases still to rebalance.
  void Publish(std::map<uint64_t, Entry> nodes, uint64_t rebalance_pending) {
    std::lock_guard<std::mutex> lock(mu_);
    nodes_ = std::move(nodes);
    rebalance_pending_ = rebalance_pending;
  }

  /// Sets the placement fields of `member` (rebalance_pending only if it is this node's).
  void Fill(MemberStatus& member) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = nodes_.find(member.node_id);
    if (it != nodes_.end()) {
      member.placement = it->second.placement;
      member.drain_total = it->second.total;
      member.drain_left = it->second.left;
    }
    if (member.self) member.rebalance_pending = rebalance_pending_;
  }

  /// Counts the changes of placement (members, drains, configs) the supervisor acted on. A
  /// route to a database actor on another node re-opens its path once this moved (OrderedRoute):
  /// this node may hold a replica now. Read on any thread, without the mutex.
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  /// The supervisor, before it hands the databases their new replica sets.
  void Advance() { epoch_.fetch_add(1, std::memory_order_acq_rel); }

 private:
  std::atomic<uint64_t> epoch_{0};
  mutable std::mutex mu_;
  std::map<uint64_t, Entry> nodes_;
  uint64_t rebalance_pending_ = 0;
};

}  // namespace kvmesh
