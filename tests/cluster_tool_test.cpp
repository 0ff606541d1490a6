// kvmesh-cluster as an operator uses it: real kvmeshd processes, steered from separate
// invocations through the cluster directory.
#include <gtest/gtest.h>
#include <signal.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "kvmesh/client.hpp"
#include "process_util.hpp"
#include "security/certificates.hpp"
#include "test_util.hpp"
#include "tools/cluster/process_cluster.hpp"

namespace kvmesh {
namespace {

using kvmesh::testing::CommandResult;
using kvmesh::testing::RunCommand;
using kvmesh::testing::Running;
using kvmesh::testing::TempDir;

class ClusterToolTest : public ::testing::Test {
 protected:
  ClusterToolTest() {
    dir_.Write("config/kv.yaml", "- matcher: /kv\n  replication: {min: 2, max: 3}\n  size: 10MB\n");
    dir_.Write("scratch/.keep", "");
  }
  // Whatever a failed assertion left running is stopped.
  ~ClusterToolTest() override { Run({"down"}); }

  CommandResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--dir", dir_ / "cluster"});
    return RunCommand(KVMESH_CLUSTER_PATH, args, "", dir_ / "scratch");
  }

  cluster::ProcessCluster Load() {
    cluster::ProcessCluster c;
    Status s = cluster::ProcessCluster::Load(dir_ / "cluster", &c);
    EXPECT_TRUE(s.ok()) << s;
    return c;
  }

  TempDir dir_;
};

TEST_F(ClusterToolTest, UpStatusKillStartDownAndNothingLeftBehind) {
  CommandResult up = Run({"up", "3", "--config-dir", dir_ / "config"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  EXPECT_NE(up.out.find("cluster of 3 nodes up"), std::string::npos) << up.out;
  EXPECT_NE(up.out.find("node 2: client 127.0.0.1:"), std::string::npos) << up.out;
  cluster::ProcessCluster c = Load();
  ASSERT_EQ(c.size(), 3);
  std::vector<pid_t> pids;
  for (int i = 0; i < 3; ++i) {
    pids.push_back(c.node(i).pid);
    EXPECT_TRUE(Running(pids.back())) << "node " << i;
  }

  // `up` waited for membership: a min-2 write succeeds at once, through any node.
  auto db = client::connect(c.client_address(1)).open("/kv");
  ASSERT_TRUE(db.put("/k", "v").ok()) << db.put("/k", "v");

  // A second `up` on the same dir refuses and names the running nodes; nothing changes.
  CommandResult again = Run({"up", "3", "--config-dir", dir_ / "config"});
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("already running"), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("pid " + std::to_string(pids[0])), std::string::npos) << again.err;
  for (pid_t pid : pids) EXPECT_TRUE(Running(pid));

  CommandResult status = Run({"status"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(std::count(status.out.begin(), status.out.end(), '\n'), 4) << status.out;
  EXPECT_TRUE(std::regex_search(status.out, std::regex("\\n1 +up +" + std::to_string(pids[1]))))
      << status.out;

  // kill: SIGKILL, the process is gone, status says down; the cluster still takes writes.
  CommandResult kill = Run({"kill", "1"});
  ASSERT_EQ(kill.exit_code, 0) << kill.err;
  EXPECT_FALSE(Running(pids[1]));
  status = Run({"status", "--json"});
  EXPECT_NE(status.out.find("\"state\": \"down\""), std::string::npos) << status.out;
  auto via0 = client::connect(c.client_address(0)).open("/kv");
  EXPECT_TRUE(via0.put("/k2", "v2").ok());

  // pause / resume: SIGSTOP shows as paused.
  ASSERT_EQ(Run({"pause", "2"}).exit_code, 0);
  EXPECT_NE(Run({"status"}).out.find("paused"), std::string::npos);
  ASSERT_EQ(Run({"resume", "2"}).exit_code, 0);

  // start: same ports and data; it catches up with what it missed.
  CommandResult start = Run({"start", "1"});
  ASSERT_EQ(start.exit_code, 0) << start.err;
  c = Load();
  EXPECT_TRUE(Running(c.node(1).pid));
  EXPECT_NE(c.node(1).pid, pids[1]);
  pids[1] = c.node(1).pid;

  // restart: a clean stop (its log says so) and a new process.
  ASSERT_EQ(Run({"restart", "0"}).exit_code, 0);
  c = Load();
  EXPECT_FALSE(Running(pids[0]));
  pids[0] = c.node(0).pid;
  CommandResult logs = Run({"logs", "0", "-n", "0"});
  EXPECT_NE(logs.out.find("kvmeshd node-0 stopped"), std::string::npos) << logs.out;
  EXPECT_NE(logs.out.find("listening on"), std::string::npos) << logs.out;

  // Bad node index: a clear error.
  CommandResult bad = Run({"kill", "7"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("no node 7"), std::string::npos) << bad.err;

  // down: every process it started is gone, and they stopped cleanly.
  CommandResult down = Run({"down"});
  ASSERT_EQ(down.exit_code, 0) << down.err;
  for (pid_t pid : pids) EXPECT_FALSE(Running(pid)) << pid;
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(Run({"logs", std::to_string(i)}).out.find("stopped"), std::string::npos);
  }

  // up again on the same dir: the data is still there.
  up = Run({"up", "3", "--config-dir", dir_ / "config"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  c = Load();
  auto value = client::connect(c.client_address(2)).open("/kv").get("/k2");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "v2");
}

// --tls: a CA and a certificate per node (named as the node, SAN 127.0.0.1) and for the tool's
// client in <dir>/tls, and every kvmeshd started (and restarted) with them. The nodes do not
// encrypt yet (issue 14's transport); this checks what they are given.
TEST_F(ClusterToolTest, UpWithTlsStartsEveryNodeWithItsOwnCertificate) {
  CommandResult up = Run({"up", "2", "--tls", "--config-dir", dir_ / "config"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  cluster::ProcessCluster c = Load();
  ASSERT_TRUE(c.options().tls);
  const std::string tls_dir = c.options().dir + "/tls";
  EXPECT_NE(up.out.find("TLS on; talk to it with: kvmesh --tls-ca " + tls_dir + "/ca.crt"),
            std::string::npos)
      << up.out;
  auto cmdline = [](pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::replace(all.begin(), all.end(), '\0', ' ');
    return all;
  };
  auto check_node = [&](int i) {
    const std::string name = "node-" + std::to_string(i);
    const TlsOptions tls = c.node_tls(i);
    EXPECT_EQ(tls.cert_file, tls_dir + "/node-" + name + ".crt");
    EXPECT_NE(cmdline(c.node(i).pid).find("--name " + name + " "), std::string::npos);
    EXPECT_NE(cmdline(c.node(i).pid)
                  .find("--tls-ca " + tls_dir + "/ca.crt --tls-cert " + tls.cert_file +
                        " --tls-key " + tls.key_file),
              std::string::npos)
        << cmdline(c.node(i).pid);
    auto info = security::ReadCertificateInfo(tls.cert_file);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->common_name, name);
    EXPECT_EQ(info->role, "node");
    EXPECT_EQ(info->alt_names, std::vector<std::string>{"IP:127.0.0.1"});
    struct stat st;
    ASSERT_EQ(::stat(tls.key_file.c_str(), &st), 0) << tls.key_file;
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  };
  check_node(0);
  check_node(1);
  const TlsOptions client_tls = c.client_tls();
  auto client_info = security::ReadCertificateInfo(client_tls.cert_file);
  ASSERT_TRUE(client_info.ok()) << client_info.status();
  EXPECT_EQ(client_info->role, "client");
  EXPECT_TRUE(std::filesystem::exists(client_tls.key_file));

  // A restart from another invocation (state read back from cluster.json) keeps TLS.
  ASSERT_EQ(Run({"restart", "1"}).exit_code, 0);
  c = Load();
  check_node(1);
  CommandResult status = Run({"status"});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(Run({"down"}).exit_code, 0);
}

TEST_F(ClusterToolTest, CommandsWithoutAClusterAndAFailedStartSayWhy) {
  CommandResult status = Run({"status"});
  EXPECT_EQ(status.exit_code, 2);
  EXPECT_NE(status.err.find("no cluster in"), std::string::npos) << status.err;
  // A config dir with an invalid config: the first node refuses to start, `up` reports its
  // error and leaves no process behind.
  dir_.Write("bad/x.yaml", "matcher: /x\nreplication: {min: 3, max: 1}\nsize: 1MB\n");
  CommandResult up = Run({"up", "2", "--config-dir", dir_ / "bad"});
  EXPECT_NE(up.exit_code, 0);
  EXPECT_NE(up.err.find("exited at start-up"), std::string::npos) << up.err;
  cluster::ProcessCluster c = Load();
  for (int i = 0; i < c.size(); ++i) EXPECT_EQ(c.State(i), cluster::ProcessState::kDown);
}

}  // namespace
}  // namespace kvmesh
