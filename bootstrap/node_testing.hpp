// In-tree tests only: what a test needs to do to a Node from inside its process that no user
// should (not installed; include/kvmesh/node.hpp names it a friend).
#pragma once

#include "kvmesh/node.hpp"

namespace kvmesh {

struct NodeTesting {
  /// Kills `node`'s client gateway from inside its process (a local exit of reason kill, which
  /// the gateway honours), as a bug would stop it.
  static void KillGateway(Node& node);
  /// The same for the membership actor of a clustered node.
  static void KillMembership(Node& node);
  /// Closes `node`'s direct-read gate (DirectReadGate), as the first step of its shutdown does,
  /// and leaves the node running: what a direct read finds while the node stops.
  static void CloseDirectReadGate(Node& node);
};

}  // namespace kvmesh
