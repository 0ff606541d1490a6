// Watch in a 3-node in-process cluster (testing/local_cluster.hpp): writes made through other
// nodes arrive, and a watcher whose node goes away resumes on another replica, and later on the
// restarted node, from its position, missing nothing and seeing nothing twice.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "config/config_set.hpp"
#include "test_util.hpp"
#include "testing/local_cluster.hpp"
#include "watch_test_util.hpp"

namespace kvmesh {
namespace {

using kvmesh::testing::WatchCollector;
using std::chrono::seconds;

constexpr char kConfigs[] = R"(
- id: loose
  matcher: /loose/*
  replication: {min: 1, max: 3}
  size: 100MB
)";

class WatchClusterTest : public ::testing::Test {
 protected:
  Status StartCluster() {
    LocalClusterOptions options;
    options.nodes = 3;
    options.dir = dir_.path();
    options.config_yaml = kConfigs;
    // Watch positions stay valid for half the grace; the harness's default (0) would refuse
    // every resumed position.
    options.node.tombstone_grace = std::chrono::minutes(10);
    return LocalCluster::Start(std::move(options), &cluster_);
  }

  Database Open(size_t node) {
    Database db = cluster_->node(node)->open("/loose/watched");
    EXPECT_TRUE(db.ok()) << db.status();
    return db;
  }

  static std::vector<std::string> Sorted(std::vector<std::string> lines) {
    std::sort(lines.begin(), lines.end());
    return lines;
  }

  testing::TempDir dir_;
  std::unique_ptr<LocalCluster> cluster_;
};

TEST_F(WatchClusterTest, WritesThroughOtherNodesArriveAndAWatcherResumesOnAnyReplica) {
  {
    Status started = StartCluster();
    ASSERT_TRUE(started.ok()) << started;
  }
  WatchOptions options;
  options.with_values = true;
  options.poll_wait = std::chrono::seconds(1);
  options.retry_interval = std::chrono::milliseconds(100);
  WatchCollector on0;
  Watch watch0;
  ASSERT_TRUE(Open(0).watch(options, on0.Callback(), &watch0).ok());

  // Written through nodes 1 and 2: they reach node 0's replica by replication, and its watcher.
  ASSERT_TRUE(Open(1).put("/a", "from 1").ok());
  ASSERT_TRUE(Open(2).put("/b", "from 2").ok());
  ASSERT_TRUE(Open(1).erase("/a").ok());
  ASSERT_TRUE(on0.WaitFor(2)) << ::testing::PrintToString(on0.lines()) << on0.error();
  ASSERT_TRUE(cluster_->WaitForConvergence("/loose/watched", seconds(10)).ok());
  // "/a" may come as its put and then its erase, or (both arrived before the watcher looked)
  // as the erase alone: a watch reports each key's latest write since its last update.
  ASSERT_TRUE(testing::Eventually(seconds(10), [&] {
    std::vector<std::string> lines = on0.lines();
    return std::find(lines.begin(), lines.end(), "erase /a") != lines.end();
  })) << ::testing::PrintToString(on0.lines());
  std::vector<std::string> seen = on0.lines();
  EXPECT_TRUE(std::find(seen.begin(), seen.end(), "put /b=from 2") != seen.end());

  // Node 0 crashes: its watcher's position resumes on node 2 with what was written meanwhile.
  cluster_->Crash(0);
  const std::string position = watch0.position();
  watch0.stop();
  ASSERT_TRUE(cluster_->WaitForMembership(seconds(10)).ok());
  ASSERT_TRUE(Open(1).put("/c", "while 0 was down").ok());
  ASSERT_TRUE(Open(1).put("/b", "rewritten").ok());
  ASSERT_TRUE(cluster_->WaitForConvergence("/loose/watched", seconds(10), nullptr, 1).ok());
  options.from = position;
  WatchCollector on2;
  Watch watch2;
  ASSERT_TRUE(Open(2).watch(options, on2.Callback(), &watch2).ok());
  ASSERT_TRUE(on2.WaitFor(2));
  EXPECT_EQ(Sorted(on2.lines()),
            (std::vector<std::string>{"put /b=rewritten", "put /c=while 0 was down"}));

  // Node 0 comes back; node 2's position resumes there too, with nothing repeated.
  ASSERT_TRUE(cluster_->Restart(0).ok());
  ASSERT_TRUE(cluster_->WaitForConvergence("/loose/watched", seconds(15)).ok());
  options.from = watch2.position();
  watch2.stop();
  WatchCollector back;
  ASSERT_TRUE(Open(0).watch(options, back.Callback(), &watch0).ok());
  ASSERT_TRUE(Open(2).put("/d", "after the restart").ok());
  ASSERT_TRUE(back.WaitFor(1));
  ASSERT_TRUE(cluster_->WaitForConvergence("/loose/watched", seconds(10)).ok());
  watch0.stop();
  EXPECT_EQ(back.lines(), (std::vector<std::string>{"put /d=after the restart"}));
  EXPECT_TRUE(on2.error().ok() && back.error().ok());
  // Node 0's first watch ended with its node (or was stopped first): a stopped embedded node
  // never answers again, so the watch says so rather than retrying.
  EXPECT_TRUE(on0.error().ok() ||
              on0.error().message().find("its node was stopped") != std::string::npos)
      << on0.error();
}

}  // namespace
}  // namespace kvmesh
