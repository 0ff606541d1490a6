// ProcessCluster: a local cluster of kvmeshd processes on 127.0.0.1, managed through a cluster
// directory, so that any shell (or program) can inspect and steer it.
//
//   <dir>/cluster.json      what was started: binary, configs, and per node its pid, start time
//                           (to tell our process from a later one that reused the pid), ports
//   <dir>/cluster.lock      flock()ed while a command changes the state
//   <dir>/node-I/data       node I's data dir (kept by `down`, so `up` again finds the data)
//   <dir>/node-I/kvmeshd.log  its stdout and stderr (appended across restarts)
//   <dir>/tls/               with `tls`: the cluster CA (ca.crt, ca.key), node-node-I.crt/.key
//                           per node, client-admin.crt/.key for the tools' own clients
//
// Node I listens for clients on client_port and for peers on cluster_port; every node is
// seeded with every node's cluster address, so any subset can start in any order. A node may
// advertise another cluster address than its own (a fault-injecting proxy in front of it; see
// tools/cluster/fault_proxy.hpp).
//
// Processes are started detached (their own session, reparented to init) so they outlive the
// command that started them, or, with `tie_to_caller`, as children that the kernel kills when
// the calling process dies (the chaos check: nothing outlives a crashed test). Stop sends
// SIGCONT then SIGTERM and escalates to SIGKILL after `stop_timeout`; nothing is signalled
// unless its pid and start time match what was recorded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kvmesh/status.hpp"
#include "kvmesh/tls.hpp"

namespace kvmesh::cluster {

struct ProcessClusterOptions {
  /// The cluster directory (created if missing).
  std::string dir;
  /// The kvmeshd binary. Default: "kvmeshd" beside the running executable.
  std::string kvmeshd;
  /// Database config directory every node loads. Required for Up.
  std::string config_dir;
  /// Node I gets client port base_port + 2I and cluster port base_port + 2I + 1. 0 (default):
  /// free ports are picked.
  int base_port = 0;
  /// Extra flags for every kvmeshd (e.g. "--failure-timeout-ms", "1000").
  std::vector<std::string> extra_args;
  /// Per node: the cluster address peers are told to use ("" = its own). Size 0 or N.
  std::vector<std::string> advertise;
  /// Children die with the caller (PR_SET_PDEATHSIG) instead of being detached. Default false.
  bool tie_to_caller = false;
  /// How long a node may take to print its ready line. Default 30 s.
  std::chrono::milliseconds ready_timeout = std::chrono::seconds(30);
  /// How long Stop waits after SIGTERM before SIGKILL. Default 10 s.
  std::chrono::milliseconds stop_timeout = std::chrono::seconds(10);
  /// Called with (index, pid) as soon as a node's process exists, before it is ready: a node
  /// connects to its peers before it prints its ready line, and whoever tells processes apart
  /// (the chaos check's proxies) must know the new pid by then. Not saved in cluster.json.
  std::function<void(int, pid_t)> on_spawn;
  /// TLS on every port (include/kvmesh/tls.hpp). Up makes a CA in <dir>/tls (once: an existing
  /// one is kept) and, afresh, a node certificate per node named as the node ("node-I", with
  /// subjectAltNames 127.0.0.1 and its advertise host) and the client certificate "admin"
  /// (security/certificates.hpp); every kvmeshd is started with --tls-ca/--tls-cert/--tls-key,
  /// and whoever talks to the cluster uses client_tls(). Default false.
  bool tls = false;
  /// Start each node as a single node (no cluster port, no seeds: kvmeshd --cluster-port -1),
  /// not as a member of a cluster; for one node only (kvmesh-bench --single-node). Default false.
  bool single = false;
};

/// One node as recorded in cluster.json.
struct NodeRecord {
  int index = 0;
  /// 0 when not started by us or stopped.
  pid_t pid = 0;
  /// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22).
  uint64_t start_ticks = 0;
  int client_port = 0;
  int cluster_port = 0;
  /// Cluster address given to peers (the proxy's, if any).
  std::string advertise;
  std::string data_dir;
  std::string log;
};

/// What a node's process is doing now.
enum class ProcessState { kDown, kRunning, kPaused };
const char* ProcessStateName(ProcessState state);

class ProcessCluster {
 public:
  /// Starts `nodes` kvmeshd processes and waits for each one's ready line (not for membership:
  /// see WaitForMembership). Refuses (kInvalidArgument) if a cluster recorded in the dir still
  /// has a live process. On any failure, stops what it started.
  static Status Up(const ProcessClusterOptions& options, int nodes, ProcessCluster* out);
  /// Reads the cluster recorded in `dir`. kNotFound if there is none.
  static Status Load(const std::string& dir, ProcessCluster* out);

  int size() const { return static_cast<int>(nodes_.size()); }
  const NodeRecord& node(int index) const { return nodes_[index]; }
  const ProcessClusterOptions& options() const { return options_; }
  /// "127.0.0.1:PORT" of node `index`'s client port.
  std::string client_address(int index) const;
  /// Every node's cluster address as peers see it.
  std::vector<std::string> seeds() const;
  /// The TLS settings for a client of this cluster (ClientOptions::tls): the cluster CA and the
  /// client certificate "admin" when options().tls, else empty (plaintext).
  TlsOptions client_tls() const;
  /// The TLS settings node `index` is started with (empty without options().tls).
  TlsOptions node_tls(int index) const;

  ProcessState State(int index) const;
  /// Starts node `index` if it is down; waits for its ready line.
  Status Start(int index);
  /// SIGTERM (after SIGCONT, in case it is paused), then SIGKILL after stop_timeout; waits until
  /// the process is gone.
  Status Stop(int index);
  /// SIGKILL; waits until the process is gone.
  Status Kill(int index);
  /// SIGSTOP / SIGCONT.
  Status Pause(int index);
  Status Resume(int index);
  /// Stops every node (in parallel).
  Status Down();

  /// Waits until every running node sees every other running node alive (client library
  /// `members`), at most `timeout`.
  Status WaitForMembership(std::chrono::milliseconds timeout) const;

 private:
  Status Save() const;
  /// With options_.tls: the CA (if missing) and every node's and the client's certificates.
  Status MakeCertificates() const;
  Status Spawn(int index);
  bool Ours(int index) const;

  ProcessClusterOptions options_;
  std::vector<NodeRecord> nodes_;
};

/// Holds an exclusive flock on <dir>/cluster.lock while alive (so commands from two shells do
/// not interleave). ok() is false (with why in status()) if the lock cannot be taken.
class ClusterLock {
 public:
  explicit ClusterLock(const std::string& dir);
  ~ClusterLock();
  ClusterLock(const ClusterLock&) = delete;
  ClusterLock& operator=(const ClusterLock&) = delete;
  const Status& status() const { return status_; }

 private:
  int fd_ = -1;
  Status status_;
};

/// Picks `count` distinct free TCP ports on 127.0.0.1 (bound together, then released), below
/// the kernel's ephemeral range, so that an outgoing connection cannot take a stopped node's
/// port before it restarts.
Status PickFreePorts(int count, std::vector<int>* ports);

/// Start time of `pid` (clock ticks since boot), or 0 if there is no such process. Zombies
/// count as gone.
uint64_t ProcessStartTicks(pid_t pid);

}  // namespace kvmesh::cluster
