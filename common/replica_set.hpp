// ReplicaSet: the replicas placement chose for one database, as the supervisor tells its
// database actors. Internal to a node (never shown to users; ReplicationStatus is what they see).
#pragma once

#include <cstdint>
#include <vector>

namespace kvmesh {

/// The replicas of one database as placement chose them (sent to its database actors).
struct ReplicaSet {
  /// Node ids, best first by rendezvous hashing.
  std::vector<uint64_t> nodes;
  /// Those of `nodes` that membership sees as down now (kept in the set until the grace period
  /// ends, so a short outage moves no data; writes do not wait for them).
  std::vector<uint64_t> unreachable;
  /// Acknowledgements (the coordinating replica included) a write needs before it succeeds.
  uint32_t required_acks = 1;
  /// The config's replication.min and replication.max.
  uint32_t min = 1;
  uint32_t max = 1;
};

}  // namespace kvmesh
