#include "common/replication_status.hpp"

namespace kvmesh {

Status CheckReplicasAgree(const std::vector<ReplicationStatus>& replicas) {
  if (replicas.empty()) return Status::Unavailable("no replica runs");
  const ReplicationStatus& first = replicas.front();
  for (const auto& st : replicas) {
    if (st.replicas != first.replicas) {
      return Status::Timeout("replica " + FormatNodeId(st.node_id) + " has another replica set");
    }
    if (st.version_vector != first.version_vector || st.digest != first.digest) {
      return Status::Timeout("replicas differ: " + FormatNodeId(first.node_id) + " has " +
                             first.version_vector + ", " + FormatNodeId(st.node_id) + " has " +
                             st.version_vector);
    }
    for (const auto& peer : st.peers) {
      if (peer.pending_deltas != 0) {
        return Status::Timeout("replica " + FormatNodeId(st.node_id) + " has deltas pending");
      }
    }
  }
  return Status::OK();
}

}  // namespace kvmesh
