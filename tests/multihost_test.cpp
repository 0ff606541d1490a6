// kvmesh on several machines, made on one: each kvmeshd runs in its own network namespace with
// its own address on a private bridge, and the client (the kvmesh CLI) in a fourth, so nodes
// join, replicate and lose each other over real interfaces, not loopback.
//
// Needs root and network namespaces (CI runs as root); skips with the reason otherwise. Every
// address is inside namespaces the test made (10.213.0.0/24 on a bridge in the test's own
// "switch" namespace); the machine's own interfaces and addresses are never touched. Namespaces
// are named kvmh<pid>-..., removed on every exit path (and, should a run be killed outright, by
// the next run, which removes those whose pid is gone).
//
// TLS and the ACL are switched on in one place, Security below: every kvmeshd and kvmesh
// command line takes its security flags from there.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "process_util.hpp"

namespace kvmesh {
namespace {

using namespace std::chrono_literals;
using kvmesh::testing::CommandResult;
using kvmesh::testing::DaemonProcess;
using kvmesh::testing::RunCommand;

/// Every kvmeshd and kvmesh command line of these tests takes its security flags from here:
/// mutual TLS with certificates made by `kvmesh cert` (a node certificate per host naming its
/// address), and an ACL: "admin" may do everything, "tenant" may read and write /mh/orders only.
/// A second, unrelated CA makes the certificate of a host that must not get in.
struct Security {
  /// True when nodes and clients speak TLS.
  bool tls = true;

  /// Makes the certificates and the ACL under `dir`; "" or what failed.
  std::string Prepare(const std::string& dir, const std::string& scratch) {
    pki_ = dir + "/pki";
    other_ = dir + "/other-pki";
    acl_ = dir + "/acl.yaml";
    std::filesystem::create_directories(pki_);
    std::filesystem::create_directories(other_);
    std::vector<std::vector<std::string>> commands = {
        {"cert", "ca", "--dir", pki_},
        {"cert", "client", "admin", "--dir", pki_},
        {"cert", "client", "tenant", "--dir", pki_},
        {"cert", "ca", "--dir", other_, "--name", "someone else's CA"},
        {"cert", "node", "n4", "--host", "10.213.0.4", "--dir", other_}};
    for (int host = 1; host <= 4; ++host) {
      commands.push_back({"cert", "node", "n" + std::to_string(host), "--host",
                          "10.213.0." + std::to_string(host), "--dir", pki_});
    }
    for (const auto& args : commands) {
      CommandResult r = RunCommand(KVMESH_CLI_PATH, args, "", scratch);
      if (r.exit_code != 0) return "kvmesh " + args[0] + " " + args[1] + ": " + r.err + r.out;
    }
    std::ofstream(acl_) << "principals:\n"
                           "  admin: [{role: admin}]\n"
                           "  tenant: [{role: readwrite, databases: [/mh/orders]}]\n";
    return "";
  }
  /// Flags of the kvmeshd named `name` listening on `address`; `trusted` false: its certificate
  /// comes from the unrelated CA.
  std::vector<std::string> NodeFlags(const std::string& name, const std::string& address,
                                     bool trusted = true) const {
    (void)address;  // named in the certificate
    const std::string& dir = trusted ? pki_ : other_;
    return {"--tls-ca",   dir + "/ca.crt",
            "--tls-cert", dir + "/node-" + name + ".crt",
            "--tls-key",  dir + "/node-" + name + ".key",
            "--acl",      acl_};
  }
  /// Flags of a kvmesh CLI acting as `principal`.
  std::vector<std::string> ClientFlags(const std::string& principal) const {
    return {"--tls-ca",   pki_ + "/ca.crt",
            "--tls-cert", pki_ + "/client-" + principal + ".crt",
            "--tls-key",  pki_ + "/client-" + principal + ".key"};
  }

 private:
  std::string pki_, other_, acl_;
};

/// The first of `candidates` that exists, or "".
std::string FindProgram(const std::vector<std::string>& candidates) {
  for (const auto& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c;
  }
  return "";
}

/// True if `name` is "<prefix><pid>-..." for a pid that no longer runs: left by a run that was
/// killed before its destructors ran.
bool LeftByADeadRun(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0) return false;
  const size_t dash = name.find('-', prefix.size());
  if (dash == std::string::npos || dash == prefix.size()) return false;
  const std::string pid = name.substr(prefix.size(), dash - prefix.size());
  return pid.find_first_not_of("0123456789") == std::string::npos &&
         !std::filesystem::exists("/proc/" + pid);
}

/// Polls `check` every `period` until it returns true (then true) or `timeout` has passed (then
/// false). Each check here starts processes, hence a period coarser than testing::Eventually's.
bool PollUntil(std::chrono::milliseconds timeout, std::chrono::milliseconds period,
               const std::function<bool()>& check) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!check()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(period);
  }
  return true;
}

/// Network namespaces as hosts: host i (1..n) has interface eth0 with address 10.213.0.i/24,
/// plugged into a bridge in a "switch" namespace of its own. Everything is removed by the
/// destructor (processes still inside are killed first).
class TestNetwork {
 public:
  /// Start of every namespace name a run makes: kvmh<pid>-.
  static constexpr const char* kPrefix = "kvmh";

  TestNetwork(std::string ip, std::string scratch)
      : ip_(std::move(ip)),
        scratch_(std::move(scratch)),
        tag_(std::string(kPrefix) + std::to_string(::getpid()) + "-") {}
  TestNetwork(const TestNetwork&) = delete;
  TestNetwork& operator=(const TestNetwork&) = delete;
  ~TestNetwork() {
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) Remove(*it);
  }

  /// Makes the switch and `hosts` hosts. "" on success, else the command that failed and why.
  std::string Create(int hosts) {
    RemoveLeftovers();
    if (std::string e = AddNamespace(Switch()); !e.empty()) return e;
    if (std::string e = Ip({"-n", Switch(), "link", "add", "br0", "type", "bridge"}); !e.empty()) {
      return e;
    }
    if (std::string e = Ip({"-n", Switch(), "link", "set", "br0", "up"}); !e.empty()) return e;
    for (int h = 1; h <= hosts; ++h) {
      const std::string ns = Namespace(h), port = Port(h);
      if (std::string e = AddNamespace(ns); !e.empty()) return e;
      // The host end is made in the switch and moved into the host as eth0.
      for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
               {"-n", Switch(), "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns},
               {"-n", Switch(), "link", "set", port, "master", "br0"},
               {"-n", Switch(), "link", "set", port, "up"},
               {"-n", ns, "link", "set", "lo", "up"},
               {"-n", ns, "addr", "add", Address(h) + "/24", "dev", "eth0"},
               {"-n", ns, "link", "set", "eth0", "up"}}) {
        if (std::string e = Ip(args); !e.empty()) return e;
      }
    }
    return "";
  }

  std::string Namespace(int host) const { return tag_ + "h" + std::to_string(host); }
  static std::string Address(int host) { return "10.213.0." + std::to_string(host); }

  /// The command prefix that runs a program in `host`'s namespace: killed with this process
  /// (setpriv's parent-death signal), so nothing outlives a test binary killed outright.
  std::vector<std::string> In(int host) const {
    std::vector<std::string> argv;
    if (!setpriv_.empty()) argv = {setpriv_, "--pdeathsig", "KILL"};
    argv.insert(argv.end(), {ip_, "netns", "exec", Namespace(host)});
    return argv;
  }

  /// Plugs `host`'s cable into the switch or pulls it (its switch port up or down): down, the
  /// host can reach no one and no one it, as in a partition; its own eth0 and address stay.
  std::string SetLink(int host, bool up) {
    return Ip({"-n", Switch(), "link", "set", "dev", Port(host), up ? "up" : "down"});
  }

 private:
  std::string Switch() const { return tag_ + "sw"; }
  static std::string Port(int host) { return "p" + std::to_string(host); }

  /// Runs `ip args...`: "" on success, else the command and what it printed.
  std::string Ip(const std::vector<std::string>& args) const {
    CommandResult r = RunCommand(ip_, args, "", scratch_);
    if (r.exit_code == 0) return "";
    std::string command = "ip";
    for (const auto& a : args) command += " " + a;
    return command + " exited " + std::to_string(r.exit_code) + ": " + r.err + r.out;
  }

  std::string AddNamespace(const std::string& ns) {
    std::string e = Ip({"netns", "add", ns});
    if (e.empty()) made_.push_back(ns);
    return e;
  }

  /// Kills what still runs in `ns`, then deletes it (its veth ends go with it).
  void Remove(const std::string& ns) const {
    CommandResult pids = RunCommand(ip_, {"netns", "pids", ns}, "", scratch_);
    size_t start = 0;
    while (start < pids.out.size()) {  // one pid a line
      size_t end = pids.out.find('\n', start);
      if (end == std::string::npos) end = pids.out.size();
      const std::string pid = pids.out.substr(start, end - start);
      if (!pid.empty() && pid.find_first_not_of("0123456789") == std::string::npos) {
        ::kill(static_cast<pid_t>(std::stol(pid)), SIGKILL);
      }
      start = end + 1;
    }
    (void)Ip({"netns", "del", ns});
  }

  /// Namespaces of earlier runs whose process is gone (killed before its destructors ran).
  void RemoveLeftovers() const {
    CommandResult list = RunCommand(ip_, {"netns", "list"}, "", scratch_);
    size_t start = 0;
    while (start < list.out.size()) {  // "NAME" or "NAME (id: N)", one a line
      size_t end = list.out.find('\n', start);
      if (end == std::string::npos) end = list.out.size();
      const std::string name = list.out.substr(start, list.out.find_first_of(" \n", start) - start);
      start = end + 1;
      if (LeftByADeadRun(name, kPrefix)) Remove(name);
    }
  }

  const std::string ip_;
  const std::string scratch_;
  const std::string tag_;
  const std::string setpriv_ = FindProgram({"/usr/bin/setpriv", "/bin/setpriv"});
  std::vector<std::string> made_;
};

/// A fresh directory for the data dirs, configs and scratch files (the namespaces share the file
/// system), named kvmesh-multihost-<pid>-...; the fixture removes it, and those of dead runs.
std::string MakeTempDir() {
  std::error_code ignored;
  std::vector<std::filesystem::path> left;
  for (const auto& entry : std::filesystem::directory_iterator(::testing::TempDir(), ignored)) {
    if (LeftByADeadRun(entry.path().filename().string(), "kvmesh-multihost-")) {
      left.push_back(entry.path());
    }
  }
  for (const auto& path : left) std::filesystem::remove_all(path, ignored);
  std::string pattern =
      ::testing::TempDir() + "kvmesh-multihost-" + std::to_string(::getpid()) + "-XXXXXX";
  const char* made = ::mkdtemp(pattern.data());
  return made != nullptr ? made : "";
}

/// A member as `kvmesh members --json` shows it.
struct Member {
  std::string node;
  std::string cluster_address;
  bool alive = false;
  bool self = false;
  long silent_ms = 0;
};

class MultiHostTest : public ::testing::Test {
 protected:
  static constexpr int kNodes = 3;
  static constexpr int kClient = kNodes + 1;  // the client's host
  static constexpr int kClientPort = 7370;
  static constexpr int kClusterPort = 7371;

  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "MultiHost tests need root to make network namespaces (CI runs as root)";
    }
    ip_ = FindProgram({"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"});
    timeout_ = FindProgram({"/usr/bin/timeout", "/bin/timeout"});
    if (ip_.empty() || timeout_.empty()) {
      GTEST_SKIP() << "MultiHost tests need ip (iproute2) and timeout (coreutils)";
    }
    ASSERT_FALSE(dir_.empty()) << "cannot make a temporary directory";
    scratch_ = dir_ + "/scratch";
    std::filesystem::create_directories(scratch_);
    net_ = std::make_unique<TestNetwork>(ip_, scratch_);
    if (std::string e = net_->Create(kClient); !e.empty()) {
      net_.reset();
      GTEST_SKIP() << "this machine does not let the test make network namespaces and a "
                      "bridge, so MultiHost is skipped: "
                   << e;
    }
    ASSERT_EQ(security_.Prepare(dir_, scratch_), "");
    std::filesystem::create_directories(dir_ + "/config");
    std::ofstream(dir_ + "/config/multihost.yaml")
        << "- id: two-of-three\n  matcher: /mh/*\n  replication: {min: 2, max: 3}\n"
           "  size: 10MB\n"
           "- id: all-three\n  matcher: /all/*\n  replication: {min: 3, max: 3}\n"
           "  size: 10MB\n";
  }

  void TearDown() override {
    if (HasFailure()) {
      for (size_t i = 0; i < nodes_.size(); ++i) {
        if (nodes_[i]) std::cerr << "--- node " << i + 1 << ":\n" << nodes_[i]->output_now();
      }
    }
    nodes_.clear();  // killed and reaped before their namespaces go
    net_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  /// The kvmeshd command line of node `host` (1..kNodes), seeded with node 1 unless it is node 1.
  std::vector<std::string> NodeCommand(int host, const std::vector<std::string>& security) const {
    const std::string name = "n" + std::to_string(host), address = TestNetwork::Address(host);
    std::vector<std::string> argv = net_->In(host);
    argv.insert(argv.end(),
                {KVMESHD_PATH, "--name", name, "--data-dir", dir_ + "/" + name, "--config-dir",
                 dir_ + "/config", "--listen", address, "--port", std::to_string(kClientPort),
                 "--cluster-listen", address, "--cluster-port", std::to_string(kClusterPort),
                 "--failure-timeout-ms", "1000"});
    if (host != 1) {
      argv.insert(argv.end(),
                  {"--seeds", TestNetwork::Address(1) + ":" + std::to_string(kClusterPort)});
    }
    argv.insert(argv.end(), security.begin(), security.end());
    return argv;
  }

  /// Starts node `host` and waits for its ready line; `trusted` false: with a certificate of a CA
  /// the others do not trust.
  ::testing::AssertionResult StartNode(int host, bool trusted = true) {
    const std::string name = "n" + std::to_string(host);
    std::vector<std::string> argv =
        NodeCommand(host, security_.NodeFlags(name, TestNetwork::Address(host), trusted));
    if (nodes_.size() < static_cast<size_t>(host)) nodes_.resize(host);
    nodes_[host - 1] = std::make_unique<DaemonProcess>();
    if (nodes_[host - 1]->Start(argv[0], {argv.begin() + 1, argv.end()})) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << name << " did not start:\n"
                                         << nodes_[host - 1]->output();
  }

  /// Runs the kvmesh CLI as `principal` in the client's namespace against node `host`, killed
  /// if it takes longer than 30 s.
  CommandResult Client(int host, const std::vector<std::string>& args,
                       const std::string& principal = "admin") const {
    std::vector<std::string> argv = net_->In(kClient);
    argv.insert(argv.end(), {timeout_, "-s", "KILL", "30", KVMESH_CLI_PATH, "--node",
                             TestNetwork::Address(host) + ":" + std::to_string(kClientPort),
                             "--timeout", "10"});
    for (const auto& flag : security_.ClientFlags(principal)) argv.push_back(flag);
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv[0], {argv.begin() + 1, argv.end()}, "", scratch_);
  }

  /// The members node `host` reports, or an empty list (with the reason in *error).
  std::vector<Member> Members(int host, std::string* error = nullptr) const {
    CommandResult r = Client(host, {"--json", "members"});
    std::vector<Member> members;
    nlohmann::json list = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    if (r.exit_code != 0 || !list.is_array()) {
      if (error != nullptr) *error = "exit " + std::to_string(r.exit_code) + ": " + r.err + r.out;
      return members;
    }
    for (const auto& m : list) {
      members.push_back({m.value("node", ""), m.value("cluster_address", ""),
                         m.value("alive", false), m.value("self", false),
                         m.value("silent_ms", 0L)});
    }
    return members;
  }

  static std::string ClusterAddress(int host) {
    return TestNetwork::Address(host) + ":" + std::to_string(kClusterPort);
  }

  /// True if node `observer` reports exactly the nodes in `up` alive and those in `down` not.
  bool Sees(int observer, const std::vector<int>& up, const std::vector<int>& down,
            std::string* last) const {
    std::string error;
    std::vector<Member> members = Members(observer, &error);
    *last = error;
    for (const auto& m : members) {
      *last += m.cluster_address + (m.alive ? " up" : " DOWN") + (m.self ? " (self)" : "") + "; ";
    }
    auto alive = [&](int host) -> int {  // 1 alive, 0 down, -1 unknown
      for (const auto& m : members) {
        if (m.cluster_address == ClusterAddress(host)) return m.alive ? 1 : 0;
      }
      return -1;
    };
    for (int h : up) {
      if (alive(h) != 1) return false;
    }
    for (int h : down) {
      if (alive(h) != 0) return false;
    }
    return !members.empty();
  }

  /// The number of keys node `host`'s own replica of `db` holds (-1 if it cannot tell, or if
  /// the status came from another node's replica).
  long ReplicaKeys(int host, const std::string& db) const {
    std::string self;
    for (const auto& m : Members(host)) {
      if (m.self) self = m.node;
    }
    CommandResult r = Client(host, {"--json", "status", db});
    nlohmann::json status = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    if (r.exit_code != 0 || !status.is_object() || self.empty() ||
        status.value("node", "") != self) {
      return -1;
    }
    return status.value("keys", -1L);
  }

  Security security_;
  std::string dir_ = MakeTempDir();
  std::string ip_, timeout_, scratch_;
  std::unique_ptr<TestNetwork> net_;
  std::vector<std::unique_ptr<DaemonProcess>> nodes_;
};

// A node refuses to serve beyond loopback in plaintext unless told --insecure-plaintext, and
// then warns that anyone who reaches the port can read and change every database.
TEST_F(MultiHostTest, PlaintextBeyondLoopbackIsRefusedUnlessInsecurePlaintext) {
  std::vector<std::string> argv = NodeCommand(1, {});
  CommandResult refused = RunCommand(argv[0], {argv.begin() + 1, argv.end()}, "", scratch_);
  EXPECT_EQ(refused.exit_code, 1) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("the client port would listen on 10.213.0.1:7370, beyond loopback, "
                             "without TLS"),
            std::string::npos)
      << refused.err;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/n1")) << "the refused node made its data dir";

  if (security_.tls) return;  // with TLS there is nothing to warn about
  ASSERT_TRUE(StartNode(1));
  EXPECT_NE(nodes_[0]->output_now().find(
                "INSECURE: the client port listens on 10.213.0.1:7370 in plaintext"),
            std::string::npos)
      << nodes_[0]->output_now();
}

// Three nodes on three hosts join by address, replicate a database to all three, lose one to a
// partition (its cable pulled at the switch) while the other two go on taking writes that two
// replicas satisfy, and get it back: it rejoins and catches up the writes it missed.
TEST_F(MultiHostTest, ThreeHostsJoinReplicateAndHealAPartition) {
  for (int host = 1; host <= kNodes; ++host) ASSERT_TRUE(StartNode(host));

  // Nodes 2 and 3 know only node 1's address; each learns of the other through it.
  std::string last;
  for (int host = 1; host <= kNodes; ++host) {
    ASSERT_TRUE(PollUntil(30s, 200ms,
                          [&] {
                            return Sees(host, {1, 2, 3}, {}, &last);
                          }))
        << "node " << host << " does not see all three nodes up: " << last;
  }

  // Written through node 1, read from node 3, whose own replica holds every key.
  for (int i = 0; i < 10; ++i) {
    CommandResult put =
        Client(1, {"put", "/mh/orders", "/k" + std::to_string(i), "before-" + std::to_string(i)});
    ASSERT_EQ(put.exit_code, 0) << put.err << put.out;
  }
  ASSERT_EQ(Client(1, {"put", "/all/x", "/k", "three"}).exit_code, 0);
  for (int i = 0; i < 10; ++i) {
    CommandResult get = Client(3, {"get", "/mh/orders", "/k" + std::to_string(i)});
    ASSERT_EQ(get.exit_code, 0) << get.err;
    EXPECT_EQ(get.out, "before-" + std::to_string(i));
  }
  // The ACL: "tenant" writes its database, and nothing else.
  CommandResult own = Client(2, {"put", "/mh/orders", "/tenant", "mine"}, "tenant");
  EXPECT_EQ(own.exit_code, 0) << own.err;
  CommandResult other = Client(2, {"put", "/all/x", "/k", "not mine"}, "tenant");
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.err.find("permission_denied: principal \"tenant\""), std::string::npos)
      << other.err;
  EXPECT_EQ(Client(1, {"get", "/all/x", "/k"}).out, "three") << "a denied write changed data";
  ASSERT_EQ(Client(1, {"del", "/mh/orders", "/tenant"}).exit_code, 0);

  long keys = -1;
  EXPECT_TRUE(PollUntil(20s, 200ms, [&] { return (keys = ReplicaKeys(3, "/mh/orders")) == 10; }))
      << "node 3's replica holds " << keys << " keys, not 10";

  // Node 3's cable is pulled: nodes 1 and 2 report it down.
  ASSERT_EQ(net_->SetLink(3, false), "");
  for (int host : {1, 2}) {
    ASSERT_TRUE(PollUntil(20s, 200ms,
                          [&] {
                            return Sees(host, {1, 2}, {3}, &last);
                          }))
        << "node " << host << " does not report node 3 down: " << last;
  }
  // min 2 of max 3: the two that remain take writes; min 3 cannot be met.
  for (int i = 10; i < 20; ++i) {
    CommandResult put =
        Client(1, {"put", "/mh/orders", "/k" + std::to_string(i), "during-" + std::to_string(i)});
    ASSERT_EQ(put.exit_code, 0) << "a write that two replicas satisfy failed in the partition: "
                                << put.err << put.out;
  }
  CommandResult all = Client(2, {"put", "/all/x", "/k", "two"});
  EXPECT_NE(all.exit_code, 0) << "a write needing three replicas succeeded with two reachable";
  EXPECT_NE(all.err.find("unavailable"), std::string::npos) << all.err;

  // The partition outlasts the 3 s peer timeout, so node 1's connections to node 3 are closed
  // and healing takes new ones.
  long silent = 0;
  EXPECT_TRUE(PollUntil(20s, 200ms,
                        [&] {
                          for (const auto& m : Members(1)) {
                            if (m.cluster_address == ClusterAddress(3)) silent = m.silent_ms;
                          }
                          return silent > 4000;
                        }))
      << "node 1 heard from node 3 " << silent << " ms ago, through a pulled cable";

  // Plugged back in: node 3 rejoins, sees the others, and catches up what it missed.
  ASSERT_EQ(net_->SetLink(3, true), "");
  for (int host = 1; host <= kNodes; ++host) {
    ASSERT_TRUE(PollUntil(30s, 200ms,
                          [&] {
                            return Sees(host, {1, 2, 3}, {}, &last);
                          }))
        << "node " << host << " does not see all three up after the partition healed: " << last;
  }
  EXPECT_TRUE(PollUntil(30s, 200ms, [&] { return (keys = ReplicaKeys(3, "/mh/orders")) == 20; }))
      << "node 3's replica holds " << keys << " keys after healing, not 20";
  for (int i = 10; i < 20; ++i) {
    CommandResult get = Client(3, {"get", "/mh/orders", "/k" + std::to_string(i)});
    ASSERT_EQ(get.exit_code, 0) << get.err;
    EXPECT_EQ(get.out, "during-" + std::to_string(i));
  }
  CommandResult healed;
  EXPECT_TRUE(PollUntil(
      20s, 200ms,
      [&] {
        return (healed = Client(3, {"put", "/all/x", "/k", "three again"})).exit_code == 0;
      }))
      << "a write needing all three replicas still fails after healing: " << healed.err;
}

// A host with a node certificate of another CA, seeded with node 1, never gets in: the nodes
// refuse it during the TLS handshake, and it refuses them.
TEST_F(MultiHostTest, AHostWithoutAValidCertificateCannotJoin) {
  for (int host = 1; host <= 2; ++host) ASSERT_TRUE(StartNode(host));
  std::string last;
  ASSERT_TRUE(PollUntil(30s, 200ms, [&] { return Sees(1, {1, 2}, {}, &last); })) << last;
  ASSERT_TRUE(StartNode(4, /*trusted=*/false));
  // It keeps trying (membership retries its seeds); give it a few rounds.
  EXPECT_TRUE(PollUntil(10s, 200ms, [&] {
    return nodes_[3]->output_now().find("certificate verify failed") != std::string::npos;
  })) << nodes_[3]->output_now();
  EXPECT_TRUE(PollUntil(10s, 200ms, [&] {
    return nodes_[0]->output_now().find("closed the connection from 10.213.0.4") !=
           std::string::npos;
  })) << nodes_[0]->output_now();
  EXPECT_EQ(Members(1).size(), 2u) << "node 1 took in a host without a valid certificate";
  EXPECT_EQ(Members(2).size(), 2u) << "node 2 took in a host without a valid certificate";
}

}  // namespace
}  // namespace kvmesh
