// LocalCluster: N real kvmesh nodes in one process, for tests (yours and ours).
//
// Each node is a full Node with its own actor system, data dir and cluster port on 127.0.0.1;
// they find each other through seeds and talk over loopback exactly as separate processes do.
// Faults: partition any nodes from others (both directions) and heal; drop, duplicate and
// reorder pushed deltas (FaultInjector); crash a node (no clean shutdown) and restart it on the
// same data dir; add nodes. Waits are bounded and poll conditions, never fixed sleeps.
//
//   kvmesh::LocalClusterOptions options;
//   options.dir = "/tmp/my-test";               // node i lives in <dir>/node-<i>
//   options.config_dir = "config";              // or options.configs
//   std::unique_ptr<kvmesh::LocalCluster> cluster;
//   kvmesh::Status s = kvmesh::LocalCluster::Start(options, &cluster);
//   kvmesh::Database db = cluster->node(0)->open("/example/kv");
//   cluster->Partition({0}, {1, 2});
//   ...
//   cluster->Heal();
//   s = cluster->WaitForConvergence("/example/kv", std::chrono::seconds(10));
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvmesh/node.hpp"
#include "testing/fault_injector.hpp"

namespace kvmesh {

struct LocalClusterOptions {
  /// Number of nodes to start. Default 3.
  size_t nodes = 3;
  /// Directory holding every node's data dir (<dir>/node-<i>). Required.
  std::string dir;
  /// Database configs, shared by all nodes: in memory, as YAML text (config-file format, loaded
  /// by Start, which fails on an error), or read from `config_dir`.
  std::shared_ptr<const config::ConfigSet> configs;
  std::string config_yaml;
  std::string config_dir;
  /// Template for every node's options; data_dir, config source, cluster_port, seeds and
  /// link_faults are filled per node. The defaults are tuned for fast tests: a membership
  /// period of 100 ms, a suspect down after 1 s, anti-entropy every 200 ms, no passivation.
  NodeOptions node = TestNodeOptions();
  /// TLS per node (node i uses node_tls[i], e.g. node certificates named n0, n1, ...); empty
  /// (default): every node uses node.tls.
  std::vector<TlsOptions> node_tls;
  /// Each node is seeded with at most this many running nodes, the first started (1: only
  /// node 0, so the others learn each other by gossip). 0 (default): all running nodes.
  size_t seeds = 0;
  /// Seed of the fault injector's random choices.
  uint64_t fault_seed = 1;
  /// Deadline of Start's wait for every node to see every other. Default 30 s.
  std::chrono::milliseconds start_timeout = std::chrono::seconds(30);

  /// The node options LocalCluster uses by default.
  static NodeOptions TestNodeOptions();
};

class LocalCluster {
 public:
  /// Starts the nodes (node 0 first, the others seeded with it) and waits until each sees all
  /// the others alive.
  static Status Start(LocalClusterOptions options, std::unique_ptr<LocalCluster>* out);

  /// Stops every running node.
  ~LocalCluster();

  /// Number of nodes, running or not.
  size_t size() const { return nodes_.size(); }
  /// Node i, or null while it is crashed or stopped.
  Node* node(size_t i) const { return nodes_[i].node.get(); }
  /// Node i's id (kept across restarts).
  uint64_t node_id(size_t i) const { return nodes_[i].id; }
  /// The index of the node with id `id`, or size() if none.
  size_t IndexOf(uint64_t id) const;
  /// The indexes of the running nodes.
  std::vector<size_t> Running() const;
  /// The shared fault injector.
  FaultInjector& faults() { return *faults_; }

  /// Cuts every link between a node of `side_a` and one of `side_b` (indexes), both ways.
  void Partition(const std::vector<size_t>& side_a, const std::vector<size_t>& side_b);
  /// Cuts only replication between the nodes of `side_a` and `side_b` (indexes), both ways
  /// (FaultInjector::CutReplication): membership and reads still cross.
  void CutReplication(const std::vector<size_t>& side_a, const std::vector<size_t>& side_b);
  /// Removes every partition and replication cut.
  void Heal();

  /// Crashes node i (Node::Crash): no goodbye, its data dir stays as a crash leaves it.
  void Crash(size_t i);
  /// Stops node i cleanly.
  void Stop(size_t i);
  /// Starts node i again on its data dir (same id), seeded with the running nodes.
  Status Restart(size_t i);
  /// Starts one more node, seeded with the running nodes; `*index` (may be null) gets its index.
  Status AddNode(size_t* index);

  /// Waits until every running node sees exactly the running nodes it is not partitioned from
  /// as alive. (Cut only some links of a node and membership still sees it alive through the
  /// others: SWIM's indirect probes; this waits for partitions into sides.)
  Status WaitForMembership(std::chrono::milliseconds timeout);

  /// Waits until the running replicas of the database at `path` (by placement, as node `via`
  /// sees it) hold the same writes: equal version vectors and digests, nothing pending. `*out`
  /// (may be null) gets their statuses.
  Status WaitForConvergence(std::string_view path, std::chrono::milliseconds timeout,
                            std::vector<ReplicationStatus>* out = nullptr, size_t via = 0);

  /// The replication status of `path` on the replica on node i (an error if node i holds
  /// none).
  Status ReplicaStatus(size_t i, std::string_view path, ReplicationStatus* out);

 private:
  struct Member {
    std::unique_ptr<Node> node;
    uint64_t id = 0;
    std::string data_dir;
  };
  LocalCluster() = default;
  Status StartNode(size_t i);

  LocalClusterOptions options_;
  std::shared_ptr<FaultInjector> faults_;
  std::vector<Member> nodes_;
};

}  // namespace kvmesh
