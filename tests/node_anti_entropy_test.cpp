// Node-level anti-entropy (replication/node_summary.hpp) on in-process clusters: passivated
// databases that diverged are found and repaired without a client, woken databases passivate
// again, and an idle cluster's anti-entropy messages per round do not grow with its databases.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include <spdlog/spdlog.h>

#include "config/config_set.hpp"
#include "test_util.hpp"
#include "testing/local_cluster.hpp"

namespace kvmesh {
namespace {

using kvmesh::testing::Eventually;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kConfigs[] = R"(
- id: loose
  matcher: /loose/*
  replication: {min: 1, max: 3}
  size: 100MB
)";

class NodeAntiEntropyTest : public ::testing::Test {
 protected:
  NodeAntiEntropyTest() {
    if (const char* level = std::getenv("KVMESH_LOG"))
      spdlog::set_level(spdlog::level::from_str(level));
  }

  Status StartCluster(size_t nodes, LocalClusterOptions options) {
    options.nodes = nodes;
    options.dir = dir_.path();
    options.config_yaml = kConfigs;
    return LocalCluster::Start(std::move(options), &cluster_);
  }

  /// The sample of metric `name` (with `labels` as written, e.g. `{kind="node_page"}`) of node
  /// `i`; -1 if absent.
  double Metric(size_t i, const std::string& name, const std::string& labels = "") {
    return testing::NodeMetric(cluster_->node(i), name, labels);
  }

  /// Anti-entropy requests node `i` sent so far: node-level totals and pages, database pulls.
  double Messages(size_t i) {
    const std::string name = "kvmesh_anti_entropy_messages_total";
    return Metric(i, name, "{kind=\"node_totals\"}") + Metric(i, name, "{kind=\"node_page\"}") +
           Metric(i, name, "{kind=\"database_pull\"}");
  }

  uint64_t Active(size_t i) {
    Result<uint64_t> n = cluster_->node(i)->active_databases();
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : 0;
  }

  testing::TempDir dir_;
  std::unique_ptr<LocalCluster> cluster_;
};

// A write taken while the other replica's node was down, on a replica that then stopped with
// its node: both copies are passivated and differ, and no client touches the database again.
// Nothing per database can notice (no replica runs); the node-level round must find it, wake
// it on both nodes, and both copies must passivate again once in sync.
TEST_F(NodeAntiEntropyTest, APassivatedDatabaseThatDivergedIsRepairedWithoutAClient) {
  LocalClusterOptions options;
  options.node.idle_timeout = milliseconds(200);
  options.node.sync_interval = milliseconds(100);
  options.node.replication_timeout = milliseconds(500);
  ASSERT_TRUE(StartCluster(2, options).ok());
  const std::string path = "/loose/diverged";
  {
    Database db = cluster_->node(0)->open(path);
    ASSERT_TRUE(db.put("/k/1", "both").ok());
  }
  ASSERT_TRUE(cluster_->WaitForConvergence(path, seconds(10)).ok());
  ASSERT_TRUE(Eventually(seconds(10), [&] { return Active(0) == 0 && Active(1) == 0; }));

  cluster_->Stop(1);
  {
    Database db = cluster_->node(0)->open(path);
    ASSERT_TRUE(db.put("/k/2", "only on node 0").ok());
  }
  // Node 0's replica cannot passivate (node 1 lacks its write); it stops with its node.
  cluster_->Stop(0);
  ASSERT_TRUE(cluster_->Restart(0).ok());
  ASSERT_TRUE(cluster_->Restart(1).ok());
  ASSERT_TRUE(cluster_->WaitForMembership(seconds(10)).ok());

  // Found by a node-level round (the woken counter), and passivated again on both nodes.
  const std::string woken = "kvmesh_anti_entropy_woken_total";
  EXPECT_TRUE(Eventually(
      seconds(15),
      [&] { return Metric(0, woken) + Metric(1, woken) > 0 && Active(0) == 0 && Active(1) == 0; }))
      << "woken: " << Metric(0, woken) << " + " << Metric(1, woken) << ", active " << Active(0)
      << " and " << Active(1);
  // Node 1's copy holds the write: read with node 0 down, so only node 1's copy can answer.
  cluster_->Stop(0);
  Result<std::string> value = cluster_->node(1)->open(path).get("/k/2");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "only on node 0");
}

// Running databases in sync used to pull from every peer every round: O(databases x peers)
// messages a round. Now each node sends one total per member per round whatever it holds.
TEST_F(NodeAntiEntropyTest, AnIdleClustersMessagesPerRoundDoNotGrowWithItsDatabases) {
  LocalClusterOptions options;
  options.node.idle_timeout = milliseconds(0);  // the worst case: every replica keeps running
  options.node.sync_interval = milliseconds(100);
  ASSERT_TRUE(StartCluster(2, options).ok());
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    Database db = cluster_->node(i % 2)->open("/loose/db" + std::to_string(i));
    ASSERT_TRUE(db.put("/k", "v").ok()) << i;
  }
  ASSERT_TRUE(cluster_->WaitForConvergence("/loose/db" + std::to_string(n - 1), seconds(30)).ok());
  // Quiet once every replica has learnt its peer's vector: two windows of 1 s, the second
  // measured. Bounded: at most 20 windows.
  double per_round = 0;
  const double rounds = 10;  // 1 s of 100 ms rounds
  bool quiet = false;
  for (int window = 0; window < 20 && !quiet; ++window) {
    const double before = Messages(0) + Messages(1);
    std::this_thread::sleep_for(seconds(1));
    per_round = (Messages(0) + Messages(1) - before) / rounds;
    // Each node: one total to its one member per round (a round may be slower, never faster
    // than its period, so this bounds it from above with room for a page).
    quiet = per_round <= 2 * 2;
  }
  EXPECT_TRUE(quiet) << per_round << " anti-entropy messages per round for " << n
                     << " running databases on 2 nodes";
}

}  // namespace
}  // namespace kvmesh
