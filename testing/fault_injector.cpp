#include "testing/fault_injector.hpp"

namespace kvmesh {

void FaultInjector::Partition(const std::vector<uint64_t>& side_a,
                              const std::vector<uint64_t>& side_b) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (uint64_t a : side_a) {
    for (uint64_t b : side_b) {
      if (a == b) continue;
      blocked_.emplace(a, b);
      blocked_.emplace(b, a);
    }
  }
}

void FaultInjector::Isolate(uint64_t node, const std::vector<uint64_t>& others) {
  Partition({node}, others);
}

void FaultInjector::CutReplication(const std::vector<uint64_t>& side_a,
                                   const std::vector<uint64_t>& side_b) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (uint64_t a : side_a) {
    for (uint64_t b : side_b) {
      if (a == b) continue;
      replication_cut_.emplace(a, b);
      replication_cut_.emplace(b, a);
    }
  }
}

void FaultInjector::Heal() {
  std::lock_guard<std::mutex> lock(mutex_);
  blocked_.clear();
  replication_cut_.clear();
}

bool FaultInjector::ReplicationBlocked(uint64_t from, uint64_t to) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return blocked_.count({from, to}) > 0 || replication_cut_.count({from, to}) > 0;
}

bool FaultInjector::Blocked(uint64_t from, uint64_t to) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !blocked_.empty() && blocked_.count({from, to}) > 0;
}

void FaultInjector::SetDeltaFaults(const DeltaFaults& faults) {
  std::lock_guard<std::mutex> lock(mutex_);
  faults_ = faults;
}

LinkFaults::DeltaFate FaultInjector::NextDeltaFate() {
  std::lock_guard<std::mutex> lock(mutex_);
  DeltaFate fate;
  if (faults_.drop <= 0 && faults_.duplicate <= 0) return fate;
  std::uniform_real_distribution<double> coin(0, 1);
  if (coin(random_) < faults_.drop) {
    fate.drop = true;
    ++counters_.dropped;
    return fate;
  }
  if (coin(random_) < faults_.duplicate) {
    fate.duplicate = true;
    ++counters_.duplicated;
    if (coin(random_) < faults_.late) {
      fate.duplicate_delay_ms = faults_.late_ms;
      ++counters_.late;
    }
  }
  return fate;
}

FaultInjector::Counters FaultInjector::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return counters_;
}

}  // namespace kvmesh
