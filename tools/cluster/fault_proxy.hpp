// FaultNetwork: real network partitions between local kvmeshd processes, made by TCP proxies.
//
// Each node's cluster port gets a proxy on 127.0.0.1; the node advertises the proxy's address
// (kvmeshd --cluster-advertise), so every connection another node opens to it passes through
// the proxy. On accept, the proxy finds which node opened the connection: the connecting
// socket's inode (/proc/net/tcp) among the node processes' open files (/proc/PID/fd). So it
// knows each connection's two ends and can fail exactly the links a partition crosses:
//
//   kCut    crossing connections are closed now and new ones are closed on accept; the nodes
//           see connection loss at once (like a firewall sending resets).
//   kStall  crossing connections stay open but no byte moves either way, and new ones connect
//           but are never forwarded (like a cable pulled: TCP buffers fill, heartbeats stop,
//           the failure detector has to notice). Heal lets the buffered bytes flow again.
//
// Connections whose opener is not a known node (a client, a fuzzer) are never failed. Clients
// reach nodes' client ports directly; the proxies stand only between nodes.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kvmesh/status.hpp"

namespace kvmesh::cluster {

enum class PartitionMode { kCut, kStall };

struct FaultNetworkStats {
  uint64_t connections = 0;
  /// Crossing connections closed (kCut) or refused on accept.
  uint64_t cut = 0;
  /// Connections whose opener could not be identified on accept (never failed).
  uint64_t unidentified = 0;
  /// Open connections still unidentified when a partition was applied (looked up again then):
  /// links a partition may have missed. Only nodes connect through the proxies, so a chaos run
  /// expects 0.
  uint64_t unidentified_at_partition = 0;
  uint64_t bytes = 0;
};

class FaultNetwork {
 public:
  /// Opens `nodes` proxy listeners on free 127.0.0.1 ports. `pids` gives the current pid of each
  /// node (0 when down); it is called on the proxy thread.
  FaultNetwork(int nodes, std::function<std::vector<pid_t>()> pids);
  ~FaultNetwork();
  FaultNetwork(const FaultNetwork&) = delete;
  FaultNetwork& operator=(const FaultNetwork&) = delete;

  /// OK if every listener is open.
  const Status& status() const { return status_; }
  /// "127.0.0.1:PORT" of node `index`'s proxy (what the node advertises).
  std::string address(int index) const;
  /// Where node `index`'s proxy forwards to (its real cluster port). Until set, connections to
  /// it are closed on accept, as if the node were down.
  void SetTarget(int index, int port);
  /// Starts the forwarding thread.
  void Start();

  /// Splits the nodes: `group[i]` is node i's side. Links between different sides fail.
  /// Returns once the proxies apply it (crossing connections are closed or stalled), or false
  /// if they did not within 5 s.
  bool Partition(std::vector<int> group, PartitionMode mode);
  /// Restores every link (stalled bytes flow again); false if not applied within 5 s.
  bool Heal();
  FaultNetworkStats stats() const;

 private:
  struct Impl;
  bool WaitApplied(std::unique_lock<std::mutex>& lock);
  std::unique_ptr<Impl> impl_;
  Status status_;
};

/// The pid (among `candidates`) whose process holds the TCP socket bound to 127.0.0.1:`port`
/// and connected to 127.0.0.1:`peer_port`, or 0. Linux only (/proc).
pid_t FindSocketOwner(int port, int peer_port, const std::vector<pid_t>& candidates);

}  // namespace kvmesh::cluster
