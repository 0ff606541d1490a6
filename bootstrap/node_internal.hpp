// In-tree modules only (not installed): what the node's other front ends (the HTTP API) need
// from a Node beyond the public API. include/kvmesh/node.hpp names NodeInternal a friend.
#pragma once

#include <memory>

#include "kvmesh/node.hpp"

namespace kvmesh {
namespace security {
class AclStore;
}

struct NodeInternal {
  /// The node's ACL store (NodeOptions::acl_file; not configured when there is none), the one
  /// the client gateway checks and reload_configs() replaces.
  static std::shared_ptr<security::AclStore> Acl(const Node& node);
};

}  // namespace kvmesh
