// Who is at the other end of a connection, as its TLS certificate says, and the one place a node
// looks that up.
//
// The certificate convention (made by `kvmesh cert`, checked by security/tls.cpp):
//   - every certificate is signed by the cluster CA given with --tls-ca;
//   - subject CN is the principal's name: a node's name (kvmeshd --name) or a client's name;
//   - subject OU is the role: "kvmesh node" or "kvmesh client". Nothing else makes a node: a
//     certificate without one of the two OUs is refused on every port.
// A node certificate may join the cluster and speak for the node named in its CN, and nobody
// else; it also has every right on the client port (nodes are the cluster's own machinery). A
// client certificate may only use the client port, with the rights the ACL gives its name.
//
// CAF names the sender of every message by its actor system's node_id, which the peer chooses
// itself. The transport binds each node_id to the certificate of the connection whose BASP
// handshake announced it (and refuses the same node_id under another certificate), and refuses
// messages that claim another node as their source; so the node_id of a message's sender stands
// for the certificate it came in under, and actors check claims ("I am member n2") here.
#pragma once

#include <caf/node_id.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace kvmesh::security {

enum class PeerRole : uint8_t {
  kNode = 0,
  kClient = 1,
};

/// The subject OU of a certificate of `role` (see the convention above).
inline const char* RoleUnit(PeerRole role) {
  return role == PeerRole::kNode ? "kvmesh node" : "kvmesh client";
}

/// "node" or "client", for messages.
inline const char* RoleName(PeerRole role) {
  return role == PeerRole::kNode ? "node" : "client";
}

/// What a verified certificate says about its holder.
struct PeerIdentity {
  /// Subject CN: the node's or the client's name.
  std::string name;
  PeerRole role = PeerRole::kClient;

  bool operator==(const PeerIdentity& other) const {
    return name == other.name && role == other.role;
  }
  bool operator!=(const PeerIdentity& other) const { return !(*this == other); }
};

/// The identities of the CAF nodes connected to one actor system. Filled by the transport on
/// CAF's multiplexer thread, read by actors; thread-safe. With TLS off it stays empty and
/// `enabled()` is false: then nothing is authenticated and callers must not deny on Lookup.
class PeerDirectory {
 public:
  explicit PeerDirectory(bool enabled) : enabled_(enabled) {}

  /// True when connections are authenticated (TLS on), so every peer has an identity.
  bool enabled() const { return enabled_; }

  /// Records that a connection authenticated as `identity` announced CAF node `node`. False
  /// (and nothing changes) when `node` is bound to another identity on a connection still open:
  /// the caller must close the new connection. Each true Bind needs one Unbind.
  /// A node id a node certificate announced stays bound to it for the life of the process, even
  /// when its connections close: a client cannot take it over in a reconnect gap (and have its
  /// requests judged with a node's rights). A client's node id may be bound anew once unused.
  bool Bind(const caf::node_id& node, const PeerIdentity& identity) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto [it, inserted] = entries_.try_emplace(node, Entry{identity, 0});
    if (!inserted && it->second.identity != identity) {
      if (it->second.connections > 0 || it->second.identity.role == PeerRole::kNode) return false;
      it->second.identity = identity;
      inserted = true;  // what Lookup answers changed
    }
    ++it->second.connections;
    if (inserted) generation_.fetch_add(1, std::memory_order_release);
    return true;
  }

  /// A connection that Bind accepted for `node` is closed.
  void Unbind(const caf::node_id& node) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(node);
    if (it == entries_.end() || it->second.connections == 0) return;
    if (--it->second.connections == 0 && it->second.identity.role != PeerRole::kNode) {
      entries_.erase(it);
      generation_.fetch_add(1, std::memory_order_release);
    }
  }

  /// Moves whenever what Lookup answers for some node may have changed (Bind of a new or
  /// different identity, Unbind of its last connection), after the change. A reader that
  /// caches Lookup's answers (the client gateway: one mutex less per request) drops them when
  /// this moved since it read it before asking.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  /// The identity `node` authenticated as, if it has an open connection to this node.
  std::optional<PeerIdentity> Lookup(const caf::node_id& node) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(node);
    if (it == entries_.end()) return std::nullopt;
    return it->second.identity;
  }

  /// With TLS: binds kvmesh member id `member` (a node's stable id, proto::Member::node_id) to
  /// the node certificate that CAF node `sender` authenticated as, the first time a node claims
  /// it; afterwards only that certificate may claim it. True if `sender` may speak for `member`
  /// (always true with TLS off). Membership calls this for a member's own description (join,
  /// heartbeat); a wiped node that comes back with a new id under the same name binds that too.
  bool ClaimMember(const caf::node_id& sender, uint64_t member) {
    if (!enabled_) return true;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(sender);
    if (it == entries_.end() || it->second.identity.role != PeerRole::kNode) return false;
    auto [member_it, inserted] = members_.try_emplace(member, it->second.identity.name);
    return member_it->second == it->second.identity.name;
  }

  /// True if CAF node `sender` may speak for kvmesh member `member`: with TLS, it holds the node
  /// certificate `member` was bound to by ClaimMember (a member not yet claimed: false). Always
  /// true with TLS off. Database actors check the sender of deltas and pulls with this.
  bool Vouches(const caf::node_id& sender, uint64_t member) const {
    if (!enabled_) return true;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(sender);
    if (it == entries_.end() || it->second.identity.role != PeerRole::kNode) return false;
    auto member_it = members_.find(member);
    return member_it != members_.end() && member_it->second == it->second.identity.name;
  }

  /// How many CAF nodes are bound (for tests and status).
  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return entries_.size();
  }

 private:
  struct Entry {
    PeerIdentity identity;
    size_t connections = 0;
  };
  const bool enabled_;
  std::atomic<uint64_t> generation_{0};
  mutable std::mutex mutex_;
  std::unordered_map<caf::node_id, Entry> entries_;
  /// Member id -> the node certificate name that first claimed it. Grows with the members ever
  /// seen (a few per node wipe), never with clients.
  std::unordered_map<uint64_t, std::string> members_;
};

}  // namespace kvmesh::security
