// When the replicas of one database agree: the rule LocalCluster, the chaos check and
// kvmesh-bench all wait for.
#pragma once

#include <vector>

#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh {

/// OK when every status in `replicas` (one per replica of one database) has the same replica
/// set, version vector and digest, and no deltas pending for any peer; otherwise kTimeout (the
/// caller is expected to wait and ask again) saying which replica differs and how.
/// kUnavailable if `replicas` is empty.
Status CheckReplicasAgree(const std::vector<ReplicationStatus>& replicas);

}  // namespace kvmesh
