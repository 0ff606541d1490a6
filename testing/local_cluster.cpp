#include "testing/local_cluster.hpp"

#include "common/replication_status.hpp"

#include <filesystem>
#include <set>
#include <thread>

#include "common/path.hpp"
#include "config/config_set.hpp"

namespace kvmesh {
namespace {

using Clock = std::chrono::steady_clock;

/// Polls `check` every 10 ms until it returns OK or `timeout` passes; returns its last Status.
template <class Check>
Status PollUntil(std::chrono::milliseconds timeout, Check check) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    Status s = check();
    if (s.ok() || Clock::now() >= deadline) return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

NodeOptions LocalClusterOptions::TestNodeOptions() {
  NodeOptions o;
  o.idle_timeout = std::chrono::milliseconds(0);
  o.request_timeout = std::chrono::seconds(10);
  o.peer_timeout = std::chrono::seconds(2);
  o.cluster_port = 0;
  o.heartbeat_interval = std::chrono::milliseconds(100);
  o.failure_timeout = std::chrono::seconds(1);
  o.replica_grace = std::chrono::seconds(60);
  o.sync_interval = std::chrono::milliseconds(200);
  o.tombstone_grace = std::chrono::milliseconds(0);  // tests see collection at once
  o.accept_stale_data = true;  // a grace of 0 would make every restart "stale"
  o.replication_timeout = std::chrono::seconds(2);
  o.worker_threads = 2;
  return o;
}

Status LocalCluster::Start(LocalClusterOptions options, std::unique_ptr<LocalCluster>* out) {
  if (options.dir.empty()) return Status::InvalidArgument("LocalClusterOptions::dir is empty");
  if (options.nodes == 0) return Status::InvalidArgument("a cluster needs at least one node");
  std::error_code error;
  std::filesystem::create_directories(options.dir, error);
  if (error) {
    return Status::IOError("cannot create cluster directory " + Quote(options.dir) + ": " +
                           error.message());
  }
  if (!options.config_yaml.empty()) {
    auto configs = std::make_shared<config::ConfigSet>();
    Status s =
        config::ConfigSet::LoadString(options.config_yaml, "cluster.yaml", configs.get(), nullptr);
    if (!s.ok()) return s;
    options.configs = std::move(configs);
  }
  std::unique_ptr<LocalCluster> cluster(new LocalCluster());
  cluster->faults_ = std::make_shared<FaultInjector>(options.fault_seed);
  cluster->options_ = std::move(options);
  cluster->nodes_.resize(cluster->options_.nodes);
  for (size_t i = 0; i < cluster->nodes_.size(); ++i) {
    cluster->nodes_[i].data_dir = cluster->options_.dir + "/node-" + std::to_string(i);
    Status s = cluster->StartNode(i);
    if (!s.ok()) return s;
  }
  Status s = cluster->WaitForMembership(cluster->options_.start_timeout);
  if (!s.ok()) return s;
  *out = std::move(cluster);
  return Status::OK();
}

LocalCluster::~LocalCluster() {
  // Stop in reverse order of start; each stop is a clean shutdown.
  for (size_t i = nodes_.size(); i-- > 0;) nodes_[i].node.reset();
}

Status LocalCluster::StartNode(size_t i) {
  NodeOptions o = options_.node;
  o.data_dir = nodes_[i].data_dir;
  o.configs = options_.configs;
  o.config_dir = options_.config_dir;
  o.link_faults = faults_;
  if (i < options_.node_tls.size()) o.tls = options_.node_tls[i];
  if (o.cluster_port < 0) o.cluster_port = 0;
  o.seeds.clear();
  for (size_t j = 0; j < nodes_.size(); ++j) {
    if (options_.seeds != 0 && o.seeds.size() >= options_.seeds) break;
    if (j != i && nodes_[j].node) {
      o.seeds.push_back(o.cluster_host + ":" + std::to_string(nodes_[j].node->cluster_port()));
    }
  }
  Status s = Node::Start(std::move(o), &nodes_[i].node);
  if (!s.ok()) {
    return Status(s.code(), "node " + std::to_string(i) + " of the local cluster: " + s.message());
  }
  nodes_[i].id = nodes_[i].node->node_id();
  return Status::OK();
}

size_t LocalCluster::IndexOf(uint64_t id) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].id == id) return i;
  }
  return nodes_.size();
}

std::vector<size_t> LocalCluster::Running() const {
  std::vector<size_t> out;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].node) out.push_back(i);
  }
  return out;
}

void LocalCluster::Partition(const std::vector<size_t>& side_a, const std::vector<size_t>& side_b) {
  std::vector<uint64_t> a, b;
  for (size_t i : side_a) a.push_back(nodes_.at(i).id);
  for (size_t i : side_b) b.push_back(nodes_.at(i).id);
  faults_->Partition(a, b);
}

void LocalCluster::CutReplication(const std::vector<size_t>& side_a,
                                  const std::vector<size_t>& side_b) {
  std::vector<uint64_t> a, b;
  for (size_t i : side_a) a.push_back(nodes_.at(i).id);
  for (size_t i : side_b) b.push_back(nodes_.at(i).id);
  faults_->CutReplication(a, b);
}

void LocalCluster::Heal() {
  faults_->Heal();
}

void LocalCluster::Crash(size_t i) {
  Node::Crash(std::move(nodes_.at(i).node));
}

void LocalCluster::Stop(size_t i) {
  nodes_.at(i).node.reset();
}

Status LocalCluster::Restart(size_t i) {
  if (nodes_.at(i).node)
    return Status::InvalidArgument("node " + std::to_string(i) + " is running");
  return StartNode(i);
}

Status LocalCluster::AddNode(size_t* index) {
  nodes_.emplace_back();
  const size_t i = nodes_.size() - 1;
  nodes_[i].data_dir = options_.dir + "/node-" + std::to_string(i);
  Status s = StartNode(i);
  if (!s.ok()) {
    nodes_.pop_back();
    return s;
  }
  if (index != nullptr) *index = i;
  return Status::OK();
}

Status LocalCluster::WaitForMembership(std::chrono::milliseconds timeout) {
  return PollUntil(timeout, [&]() -> Status {
    for (size_t i : Running()) {
      Result<std::vector<MemberStatus>> members = nodes_[i].node->members();
      if (!members.ok()) return members.status();
      std::set<uint64_t> alive, expected;
      for (const auto& m : *members) {
        if (!m.self && m.alive) alive.insert(m.node_id);
      }
      for (size_t j : Running()) {
        if (j != i && !faults_->Blocked(nodes_[i].id, nodes_[j].id)) expected.insert(nodes_[j].id);
      }
      if (alive != expected) {
        return Status::Timeout("node " + std::to_string(i) + " sees " +
                               std::to_string(alive.size()) + " members alive, expected " +
                               std::to_string(expected.size()));
      }
    }
    return Status::OK();
  });
}

Status LocalCluster::ReplicaStatus(size_t i, std::string_view path, ReplicationStatus* out) {
  if (i >= nodes_.size() || !nodes_[i].node) {
    return Status::InvalidArgument("node " + std::to_string(i) + " is not running");
  }
  Result<ReplicationStatus> status = nodes_[i].node->open(path).replication_status();
  if (!status.ok()) return status.status();
  *out = std::move(*status);
  if (out->node_id != nodes_[i].id) {
    return Status::NotFound("node " + std::to_string(i) + " holds no replica of " +
                            Quote(std::string(path)));
  }
  return Status::OK();
}

Status LocalCluster::WaitForConvergence(std::string_view path, std::chrono::milliseconds timeout,
                                        std::vector<ReplicationStatus>* out, size_t via) {
  return PollUntil(timeout, [&]() -> Status {
    if (via >= nodes_.size() || !nodes_[via].node) {
      return Status::InvalidArgument("node " + std::to_string(via) + " is not running");
    }
    Result<ReplicationStatus> via_status = nodes_[via].node->open(path).replication_status();
    if (!via_status.ok()) return via_status.status();
    const ReplicationStatus& first = *via_status;
    Status s;
    std::vector<ReplicationStatus> statuses;
    for (uint64_t id : first.replicas) {
      const size_t i = IndexOf(id);
      if (i >= nodes_.size() || !nodes_[i].node) continue;  // crashed or stopped
      ReplicationStatus status;
      s = ReplicaStatus(i, path, &status);
      if (!s.ok()) return s;
      statuses.push_back(std::move(status));
    }
    if (statuses.empty())
      return Status::Unavailable("no replica of " + Quote(std::string(path)) + " runs");
    if (statuses[0].replicas != first.replicas) {
      return Status::Timeout("replica " + FormatNodeId(statuses[0].node_id) +
                             " has another replica set");
    }
    s = CheckReplicasAgree(statuses);
    if (!s.ok()) return s;
    if (out != nullptr) *out = std::move(statuses);
    return Status::OK();
  });
}

}  // namespace kvmesh
