// FaultInjector: network faults between the nodes of a test cluster, injected where kvmesh nodes
// send and receive cluster messages (membership probes, deltas, anti-entropy; see
// common/link_faults.hpp), so tests get partitions and misbehaving links that are exact and
// repeatable, without root privileges or timing luck.
//
// Share one injector among the nodes of a cluster (NodeOptions::link_faults; LocalCluster
// does it). A partition blocks both directions: messages are not sent, and a message already in
// flight is refused on arrival, as if the link had dropped it. Client connections are not
// affected. Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "common/link_faults.hpp"

namespace kvmesh {

class FaultInjector : public LinkFaults {
 public:
  /// Pushed deltas (replication on write) and how they misbehave. Default: delivered once, in
  /// order.
  struct DeltaFaults {
    /// Probability that a pushed delta is also delivered a second time.
    double duplicate = 0;
    /// Probability that that second copy is held back and delivered `late_ms` later, after
    /// newer deltas (reordering).
    double late = 0;
    uint32_t late_ms = 50;
    /// Probability that a pushed delta is dropped (the write then counts as not acknowledged by
    /// that replica; anti-entropy repairs it).
    double drop = 0;
  };

  explicit FaultInjector(uint64_t seed = 1) : random_(seed) {}

  /// Cuts every link between a node of `side_a` and a node of `side_b`, both directions. Adds to
  /// the partitions already in force.
  void Partition(const std::vector<uint64_t>& side_a, const std::vector<uint64_t>& side_b);

  /// Cuts every link of `node` (isolates it).
  void Isolate(uint64_t node, const std::vector<uint64_t>& others);

  /// Cuts only replication (pushed deltas and anti-entropy) between a node of `side_a` and a node
  /// of `side_b`, both directions: the nodes still see each other alive and serve each other's
  /// reads, but the replicas on one side lag the other's writes. Removed by Heal.
  void CutReplication(const std::vector<uint64_t>& side_a, const std::vector<uint64_t>& side_b);

  /// Removes every partition and replication cut.
  void Heal();

  /// True if messages from `from` to `to` are dropped.
  bool Blocked(uint64_t from, uint64_t to) const override;
  /// True if Blocked or replication from `from` to `to` is cut.
  bool ReplicationBlocked(uint64_t from, uint64_t to) const override;

  /// Sets how pushed deltas misbehave (applies to every link).
  void SetDeltaFaults(const DeltaFaults& faults);

  /// Decides the fate of one pushed delta (seeded: the same sequence of calls gives the same
  /// fates).
  DeltaFate NextDeltaFate() override;

  /// Counters for tests: deltas dropped, duplicated, sent late.
  struct Counters {
    uint64_t dropped = 0;
    uint64_t duplicated = 0;
    uint64_t late = 0;
  };
  Counters counters() const;

 private:
  mutable std::mutex mutex_;
  std::set<std::pair<uint64_t, uint64_t>> blocked_;
  std::set<std::pair<uint64_t, uint64_t>> replication_cut_;
  DeltaFaults faults_;
  std::mt19937_64 random_;
  Counters counters_;
};

}  // namespace kvmesh
