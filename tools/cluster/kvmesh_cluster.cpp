// kvmesh-cluster: runs a local cluster of kvmeshd processes on 127.0.0.1 (see
// tools/cluster/process_cluster.hpp for the cluster directory's layout).
//
//   kvmesh-cluster up 3 --config-dir examples/config     # start, wait for membership, print
//   kvmesh-cluster status                                 # per node: up/down, pid, dbs, lag
//   kvmesh-cluster kill 1 | stop 1 | start 1 | restart 1 | pause 1 | resume 1 | logs 1
//   kvmesh-cluster down [--purge]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>

#include "kvmesh/client.hpp"
#include "kvmesh/status.hpp"
#include "tools/cluster/process_cluster.hpp"
#include "tools/version.hpp"

namespace {

using kvmesh::Status;
using kvmesh::cluster::ProcessCluster;
using kvmesh::cluster::ProcessState;

int Fail(const Status& s) {
  std::cerr << "kvmesh-cluster: " << s << "\n";
  return s.code() == kvmesh::Code::kInvalidArgument || s.code() == kvmesh::Code::kNotFound ? 2 : 1;
}

void PrintAddresses(const ProcessCluster& c) {
  for (int i = 0; i < c.size(); ++i) {
    const auto& n = c.node(i);
    std::cout << "node " << i << ": client " << c.client_address(i) << ", cluster " << n.advertise
              << ", pid " << n.pid << ", log " << n.log << "\n";
  }
  if (c.options().tls) {
    const kvmesh::TlsOptions tls = c.client_tls();
    std::cout << "TLS on; talk to it with: kvmesh --tls-ca " << tls.ca_file << " --tls-cert "
              << tls.cert_file << " --tls-key " << tls.key_file << " --node " << c.client_address(0)
              << " ...\n";
  }
}

/// What `status` reports of one running node, asked through its client port.
struct NodeReport {
  std::string node_id;
  int members_alive = -1;
  int databases = -1;
  /// Over its databases (at most kMaxDatabases): deltas queued for peers, and the largest
  /// number of writes a peer has not seen yet.
  uint64_t pending_deltas = 0;
  uint64_t max_writes_behind = 0;
  bool lag_truncated = false;
  std::string error;
};

constexpr size_t kMaxDatabases = 200;

NodeReport Report(const ProcessCluster& c, int index) {
  const std::string address = c.client_address(index);
  NodeReport r;
  kvmesh::client::ClientOptions options;
  options.request_timeout = std::chrono::seconds(2);
  options.tls = c.client_tls();
  auto client = kvmesh::client::connect(address, options);
  if (!client.ok()) {
    r.error = client.status().ToString();
    return r;
  }
  std::ostringstream id;
  id << std::hex << client.node_id();
  r.node_id = id.str();
  if (auto members = client.members(); members.ok()) {
    r.members_alive = 0;
    for (const auto& m : *members) r.members_alive += m.alive;
  }
  auto dbs = client.databases();
  if (!dbs.ok()) {
    r.error = dbs.status().ToString();
    return r;
  }
  r.databases = static_cast<int>(dbs->size());
  r.lag_truncated = dbs->size() > kMaxDatabases;
  for (size_t i = 0; i < dbs->size() && i < kMaxDatabases; ++i) {
    auto status = client.open((*dbs)[i].path).replication_status();
    if (!status.ok()) continue;
    for (const auto& peer : status->peers) {
      r.pending_deltas += peer.pending_deltas;
      if (status->writes_seen > peer.writes_seen) {
        r.max_writes_behind = std::max(r.max_writes_behind, status->writes_seen - peer.writes_seen);
      }
    }
  }
  return r;
}

int Status_(const ProcessCluster& c, bool as_json) {
  nlohmann::json out = nlohmann::json::array();
  if (!as_json) {
    std::cout << std::left << std::setw(5) << "node" << std::setw(8) << "state" << std::setw(9)
              << "pid" << std::setw(17) << "client" << std::setw(17) << "cluster" << std::setw(18)
              << "node id" << std::setw(8) << "alive" << std::setw(6) << "dbs"
              << "replication lag\n";
  }
  for (int i = 0; i < c.size(); ++i) {
    const auto& n = c.node(i);
    const ProcessState state = c.State(i);
    NodeReport r;
    if (state == ProcessState::kRunning) r = Report(c, i);
    const std::string lag = state != ProcessState::kRunning || r.databases < 0
                                ? "-"
                                : std::to_string(r.pending_deltas) +
                                      " deltas pending, peers up to " +
                                      std::to_string(r.max_writes_behind) + " writes behind" +
                                      (r.lag_truncated ? " (first 200 dbs)" : "");
    if (as_json) {
      out.push_back({{"node", i},
                     {"state", kvmesh::cluster::ProcessStateName(state)},
                     {"pid", state == ProcessState::kDown ? 0 : n.pid},
                     {"client", c.client_address(i)},
                     {"cluster", n.advertise},
                     {"node_id", r.node_id},
                     {"members_alive", r.members_alive},
                     {"databases", r.databases},
                     {"pending_deltas", r.pending_deltas},
                     {"max_writes_behind", r.max_writes_behind},
                     {"error", r.error},
                     {"log", n.log}});
      continue;
    }
    std::cout << std::left << std::setw(5) << i << std::setw(8)
              << kvmesh::cluster::ProcessStateName(state) << std::setw(9)
              << (state == ProcessState::kDown ? std::string("-") : std::to_string(n.pid))
              << std::setw(17) << c.client_address(i) << std::setw(17) << n.advertise
              << std::setw(18) << (r.node_id.empty() ? "-" : r.node_id) << std::setw(8)
              << (r.members_alive < 0 ? std::string("-") : std::to_string(r.members_alive))
              << std::setw(6) << (r.databases < 0 ? std::string("-") : std::to_string(r.databases))
              << lag;
    if (!r.error.empty()) std::cout << "  (" << r.error << ")";
    std::cout << "\n";
  }
  if (as_json) std::cout << out.dump(2) << "\n";
  return 0;
}

int Logs(const ProcessCluster& c, int index, int lines) {
  std::ifstream in(c.node(index).log);
  if (!in) return Fail(Status::NotFound("no log at " + c.node(index).log));
  std::vector<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (lines > 0 && tail.size() > static_cast<size_t>(lines)) tail.erase(tail.begin());
  }
  for (const auto& l : tail) std::cout << l << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvmesh-cluster: a local cluster of kvmeshd processes on 127.0.0.1"};
  app.require_subcommand(1);
  app.set_version_flag("--version", kvmesh::tools::VersionLine("kvmesh-cluster"));
  std::string dir = "kvmesh-cluster";
  app.add_option("--dir", dir, "cluster directory: state, data dirs and logs")
      ->capture_default_str();

  kvmesh::cluster::ProcessClusterOptions options;
  int nodes = 3;
  long long wait_ms = 30000;
  auto* up = app.add_subcommand("up", "start N nodes seeded to each other and wait for them");
  up->add_option("N", nodes, "number of nodes")->required()->check(CLI::Range(1, 100));
  up->add_option("--config-dir", options.config_dir, "database configs every node loads")
      ->required();
  up->add_option("--base-port", options.base_port,
                 "node I gets client port P+2I and cluster port P+2I+1 (default: free ports)")
      ->check(CLI::Range(1, 65535));
  up->add_option("--kvmeshd", options.kvmeshd, "kvmeshd binary (default: beside this one)");
  up->add_option("--node-arg", options.extra_args,
                 "extra flag for every kvmeshd (repeat; e.g. --node-arg=--failure-timeout-ms "
                 "--node-arg=1000)");
  up->add_flag("--tls", options.tls,
               "TLS on every port: a CA and certificates in DIR/tls, every node started with them");
  up->add_option("--wait-ms", wait_ms, "how long to wait for membership")->capture_default_str();

  bool as_json = false;
  auto* status = app.add_subcommand("status", "each node: state, pid, addresses, dbs, lag");
  status->add_flag("--json", as_json, "machine-readable");

  int index = 0;
  auto add_node_command = [&](const char* name, const char* what) {
    auto* cmd = app.add_subcommand(name, what);
    cmd->add_option("I", index, "node index")->required()->check(CLI::NonNegativeNumber);
    return cmd;
  };
  auto* kill = add_node_command("kill", "SIGKILL node I");
  auto* stop = add_node_command("stop", "stop node I cleanly (SIGTERM)");
  auto* start = add_node_command("start", "start node I again (same ports and data)");
  auto* restart = add_node_command("restart", "stop node I cleanly, then start it");
  auto* pause = add_node_command("pause", "SIGSTOP node I (it stays connected but silent)");
  auto* resume = add_node_command("resume", "SIGCONT node I");
  int lines = 50;
  auto* logs = add_node_command("logs", "print the end of node I's log");
  logs->add_option("-n,--lines", lines, "lines (0: all)")->capture_default_str();
  bool purge = false;
  auto* down = app.add_subcommand("down", "stop every node (SIGTERM, SIGKILL after 10 s)");
  down->add_flag("--purge", purge, "also delete the cluster directory (data and logs)");
  CLI11_PARSE(app, argc, argv);

  if (up->parsed()) {
    options.dir = dir;
    kvmesh::cluster::ClusterLock lock(dir);
    if (!lock.status().ok()) return Fail(lock.status());
    ProcessCluster c;
    Status s = ProcessCluster::Up(options, nodes, &c);
    if (!s.ok()) return Fail(s);
    s = c.WaitForMembership(std::chrono::milliseconds(wait_ms));
    if (!s.ok()) {
      c.Down();  // no half-started cluster left behind
      return Fail(s);
    }
    std::cout << "cluster of " << nodes << " nodes up in " << c.options().dir << "\n";
    PrintAddresses(c);
    return 0;
  }

  kvmesh::cluster::ClusterLock lock(dir);
  if (!lock.status().ok()) return Fail(lock.status());
  ProcessCluster c;
  Status s = ProcessCluster::Load(dir, &c);
  if (!s.ok()) return Fail(s);
  if (status->parsed()) return Status_(c, as_json);
  if (down->parsed()) {
    s = c.Down();
    if (!s.ok()) return Fail(s);
    std::cout << "stopped " << c.size() << " nodes\n";
    if (purge) {
      std::error_code ec;
      std::filesystem::remove_all(c.options().dir, ec);
      if (ec)
        return Fail(Status::IOError("cannot delete " + c.options().dir + ": " + ec.message()));
    }
    return 0;
  }
  if (index >= c.size()) {
    return Fail(Status::InvalidArgument("no node " + std::to_string(index) + ": the cluster has " +
                                        std::to_string(c.size())));
  }
  if (logs->parsed()) return Logs(c, index, lines);
  if (kill->parsed()) s = c.Kill(index);
  if (stop->parsed() || restart->parsed()) s = c.Stop(index);
  if (s.ok() && (start->parsed() || restart->parsed())) s = c.Start(index);
  if (pause->parsed()) s = c.Pause(index);
  if (resume->parsed()) s = c.Resume(index);
  if (!s.ok()) return Fail(s);
  std::cout << "node " << index << ": " << kvmesh::cluster::ProcessStateName(c.State(index));
  if (c.State(index) != ProcessState::kDown) std::cout << " (pid " << c.node(index).pid << ")";
  std::cout << "\n";
  return 0;
}
