// LinkFaults: where a test harness may fail the links between nodes. Production code asks it
// (when one is set) before sending and on receiving cluster messages: probes, joins, pushed
// deltas and anti-entropy. kvmeshd never sets one; testing/fault_injector.hpp implements it for
// in-process test clusters, so that partitions and misbehaving links are exact and repeatable
// without root privileges or timing luck. Implementations must be thread-safe.
#pragma once

#include <cstdint>

namespace kvmesh {

class LinkFaults {
 public:
  /// What happens to one pushed delta. Default: delivered once, in order.
  struct DeltaFate {
    bool drop = false;
    bool duplicate = false;
    /// Delay of the duplicate in milliseconds (0: right after the original).
    uint32_t duplicate_delay_ms = 0;
  };

  virtual ~LinkFaults() = default;

  /// True if messages from node `from` to node `to` are lost (a partition).
  virtual bool Blocked(uint64_t from, uint64_t to) const = 0;

  /// True if replication messages (pushed deltas, anti-entropy) from `from` to `to` are lost:
  /// whenever Blocked, and also when only replication is cut (a replica that lags while its
  /// node stays up and answers reads). Default: Blocked.
  virtual bool ReplicationBlocked(uint64_t from, uint64_t to) const { return Blocked(from, to); }

  /// The fate of the next pushed delta (on any link).
  virtual DeltaFate NextDeltaFate() = 0;
};

}  // namespace kvmesh
