// Cluster-wide configs end to end: applied, changed and deleted through a node's API, in force on
// that node at once, on every other node after replication, across restarts and partitions.
#include <gtest/gtest.h>

#include <spdlog/spdlog.h>

#include <string>
#include <vector>

#include "common/deadline.hpp"
#include "config/cluster_configs.hpp"
#include "config/config_set.hpp"
#include "kvmesh/node.hpp"
#include "test_util.hpp"
#include "testing/local_cluster.hpp"

namespace kvmesh {
namespace {

using kvmesh::testing::Eventually;
using kvmesh::testing::TempDir;
using std::chrono::seconds;

constexpr char kFileConfigs[] = R"(
- id: files-kv
  matcher: /files/kv
  size: 1MB
)";

constexpr char kExample[] = R"(id: example_kv_store
description: reference example
matcher: /example/kv
replication: {min: 1, max: 2}
size: 100KB
)";

std::string WithSize(const std::string& size) {
  return "id: example_kv_store\nmatcher: /example/kv\nreplication: {min: 1, max: 2}\nsize: " +
         size + "\n";
}

/// The size of config `id` in force on `node`, or 0 if there is none.
uint64_t SizeOf(const Node& node, const std::string& id) {
  auto configs = node.configs();
  if (!configs.ok()) return 0;
  for (const auto& c : *configs) {
    if (c.id == id) return c.size_bytes;
  }
  return 0;
}

class ClusterConfigsNodeTest : public ::testing::Test {
 protected:
  ClusterConfigsNodeTest() { dir_.Write("config/files.yaml", kFileConfigs); }

  std::unique_ptr<Node> StartNode() {
    NodeOptions options;
    options.data_dir = dir_ / "data";
    options.config_dir = dir_ / "config";
    std::unique_ptr<Node> node;
    Status s = Node::Start(std::move(options), &node);
    EXPECT_TRUE(s.ok()) << s;
    return node;
  }

  TempDir dir_;
};

TEST_F(ClusterConfigsNodeTest, AnAppliedConfigServesOpensAtOnceAndSurvivesARestart) {
  {
    auto node = StartNode();
    EXPECT_EQ(node->open("/example/kv").status().code(), Code::kNoMatchingConfig);
    auto applied = node->apply_configs(kExample);
    ASSERT_TRUE(applied.ok()) << applied.status();
    ASSERT_EQ(applied->configs.size(), 1u);
    EXPECT_EQ(applied->configs[0].id, "example_kv_store");
    EXPECT_EQ(applied->configs[0].origin, "api");
    EXPECT_NE(applied->configs[0].source.find("applied by embedded"), std::string::npos)
        << applied->configs[0].source;
    Database db = node->open("/example/kv");
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE(db.put("/users/1", "alice").ok());
  }
  auto node = StartNode();
  EXPECT_EQ(SizeOf(*node, "example_kv_store"), 100000u);
  Database db = node->open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  Result<std::string> value = db.get("/users/1");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "alice");
  // Users see their databases only, not the system database.
  auto dbs = node->databases();
  ASSERT_TRUE(dbs.ok());
  for (const auto& d : *dbs) EXPECT_FALSE(config::IsReservedPath(d.path)) << d.path;
}

TEST_F(ClusterConfigsNodeTest, AnInvalidConfigChangesNothingAndNamesTheLine) {
  auto node = StartNode();
  ASSERT_TRUE(node->apply_configs(kExample).ok());
  ConfigApplyOptions options;
  options.source_name = "edit.yaml";
  // The first config is fine, the second has a bad regex on line 5: neither is applied.
  auto applied = node->apply_configs(R"(- id: example_kv_store
  matcher: /example/kv
  size: 5MB
- id: broken
  matcher: /broken/[a
  size: 1MB
)",
                                     options);
  ASSERT_EQ(applied.status().code(), Code::kInvalidConfig);
  EXPECT_NE(applied.status().message().find("edit.yaml:5: error: matcher: invalid regex"),
            std::string::npos)
      << applied.status();
  EXPECT_NE(applied.status().message().find("nothing was applied"), std::string::npos);
  EXPECT_EQ(SizeOf(*node, "example_kv_store"), 100000u);
  EXPECT_EQ(node->open("/broken/a").status().code(), Code::kNoMatchingConfig);
  // A dry run validates without applying.
  ConfigApplyOptions dry;
  dry.dry_run = true;
  auto checked = node->apply_configs(WithSize("7MB"), dry);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(SizeOf(*node, "example_kv_store"), 100000u);
}

TEST_F(ClusterConfigsNodeTest, FileConfigsAndReservedPathsCannotBeTakenOver) {
  auto node = StartNode();
  auto same_id = node->apply_configs("id: files-kv\nmatcher: /elsewhere\nsize: 1MB\n");
  ASSERT_EQ(same_id.status().code(), Code::kInvalidConfig);
  EXPECT_NE(same_id.status().message().find("declared in"), std::string::npos) << same_id.status();
  auto same_matcher = node->apply_configs("id: mine\nmatcher: /files/kv\nsize: 1MB\n");
  EXPECT_EQ(same_matcher.status().code(), Code::kInvalidConfig) << same_matcher.status();
  auto reserved = node->apply_configs("id: sys\nmatcher: /_kvmesh/*\nsize: 1MB\n");
  ASSERT_EQ(reserved.status().code(), Code::kInvalidConfig);
  EXPECT_NE(reserved.status().message().find("reserved"), std::string::npos) << reserved.status();
  EXPECT_EQ(node->delete_config("files-kv").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(node->delete_config("nope").status().code(), Code::kNotFound);
  Database system = node->open(std::string(config::kSystemConfigsPath));
  EXPECT_EQ(system.status().code(), Code::kPermissionDenied) << system.status();
}

TEST_F(ClusterConfigsNodeTest, SizeChangesApplyToRunningDatabasesAtOnce) {
  auto node = StartNode();
  ASSERT_TRUE(node->apply_configs(WithSize("2KB")).ok());
  Database db = node->open("/example/kv");
  ASSERT_TRUE(db.ok());
  const std::string big(1500, 'x');
  ASSERT_TRUE(db.put("/a", big).ok());
  EXPECT_EQ(db.put("/b", big).code(), Code::kSizeLimitExceeded);
  // Raised: the same handle, no reopen.
  ASSERT_TRUE(node->apply_configs(WithSize("4KB")).ok());
  ASSERT_TRUE(db.put("/b", big).ok());
  // Lowered below what it holds (3 KB): data stays, growth is refused and says so, shrinking
  // works.
  auto lowered = node->apply_configs(WithSize("1KB"));
  ASSERT_TRUE(lowered.ok()) << lowered.status();
  ASSERT_EQ(lowered->warnings.size(), 1u);
  EXPECT_NE(lowered->warnings[0].find("size lowered from 4000 B"), std::string::npos)
      << lowered->warnings[0];
  Status grow = db.put("/c", "y");
  EXPECT_EQ(grow.code(), Code::kSizeLimitExceeded);
  EXPECT_NE(grow.message().find("is limited to 1000 B"), std::string::npos) << grow;
  EXPECT_TRUE(db.get("/a").ok());
  EXPECT_TRUE(db.erase("/a").ok());
}

TEST_F(ClusterConfigsNodeTest, DeletingStopsOpensKeepsDataAndIsInTheHistory) {
  auto node = StartNode();
  ASSERT_TRUE(node->apply_configs(kExample).ok());
  {
    Database db = node->open("/example/kv");
    ASSERT_TRUE(db.put("/k", "v").ok());
  }
  auto deleted = node->delete_config("example_kv_store", "ops");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(node->open("/example/kv").status().code(), Code::kNoMatchingConfig);
  ASSERT_TRUE(node->apply_configs(kExample).ok());
  Database db = node->open("/example/kv");
  Result<std::string> value = db.get("/k");
  ASSERT_TRUE(value.ok()) << "data is kept when its config is deleted: " << value.status();
  EXPECT_EQ(*value, "v");
  auto history = node->config_history("example_kv_store");
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->size(), 3u);
  EXPECT_FALSE((*history)[0].deleted);
  EXPECT_TRUE((*history)[1].deleted);
  EXPECT_EQ((*history)[1].applied_by, "ops");
  EXPECT_TRUE((*history)[2].in_force);
  EXPECT_FALSE((*history)[0].in_force);
  EXPECT_EQ(node->config_history("files-kv").status().code(), Code::kNotFound);
}

TEST_F(ClusterConfigsNodeTest, HistoryKeepsTheLastTwentyEdits) {
  auto node = StartNode();
  for (int i = 1; i <= 25; ++i) {
    ASSERT_TRUE(node->apply_configs(WithSize(std::to_string(i) + "KB")).ok()) << i;
  }
  auto history = node->config_history("example_kv_store");
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->size(), config::kHistoryPerConfig);
  EXPECT_EQ(history->back().config.size_bytes, 25000u);
  EXPECT_TRUE(history->back().in_force);
}

// ---------------------------------------------------------------------------------------------
// Several nodes.

class ClusterConfigsClusterTest : public ::testing::Test {
 protected:
  ClusterConfigsClusterTest() {
    if (const char* level = std::getenv("KVMESH_LOG")) {
      spdlog::set_level(spdlog::level::from_str(level));
    }
  }

  Status StartCluster(size_t nodes) {
    auto configs = std::make_shared<config::ConfigSet>();
    Status s = config::ConfigSet::LoadString(kFileConfigs, "files.yaml", configs.get(), nullptr);
    if (!s.ok()) return s;
    LocalClusterOptions options;
    options.nodes = nodes;
    options.dir = dir_.path();
    options.configs = configs;
    return LocalCluster::Start(std::move(options), &cluster_);
  }

  TempDir dir_;
  std::unique_ptr<LocalCluster> cluster_;
};

TEST_F(ClusterConfigsClusterTest, AConfigAppliedThroughOneNodeOpensOnEveryNode) {
  ASSERT_TRUE(StartCluster(3).ok());
  ASSERT_TRUE(cluster_->node(0)->apply_configs(kExample).ok());
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_TRUE(Eventually(
        seconds(10), [&] { return SizeOf(*cluster_->node(i), "example_kv_store") == 100000u; }))
        << "node " << i << " never got the config";
  }
  Database db = cluster_->node(2)->open("/example/kv");
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(db.put("/k", "from node 2").ok());
  // A restarted node has it from its own copy, and one deleted through node 1 is gone on all.
  cluster_->Crash(2);
  ASSERT_TRUE(cluster_->Restart(2).ok());
  EXPECT_EQ(SizeOf(*cluster_->node(2), "example_kv_store"), 100000u);
  ASSERT_TRUE(cluster_->node(1)->delete_config("example_kv_store").ok());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(Eventually(seconds(10),
                           [&] {
                             return cluster_->node(i)->open("/example/kv").status().code() ==
                                    Code::kNoMatchingConfig;
                           }))
        << "node " << i << " still opens a deleted config";
  }
}

TEST_F(ClusterConfigsClusterTest, ConcurrentEditsOnTwoSidesOfAPartitionEndWithTheLaterEverywhere) {
  ASSERT_TRUE(StartCluster(3).ok());
  ASSERT_TRUE(cluster_->node(0)->apply_configs(WithSize("1MB")).ok());
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(Eventually(
        seconds(10), [&] { return SizeOf(*cluster_->node(i), "example_kv_store") == 1000000u; }));
  }
  cluster_->Partition({0}, {1, 2});
  // Both sides accept an edit (min 1): node 0's first, node 1's later.
  ASSERT_TRUE(cluster_->node(0)->apply_configs(WithSize("2MB")).ok());
  // Later by the wall clock, which the store's timestamps follow.
  const int64_t first = Deadline::NowNs();
  ASSERT_TRUE(Eventually(seconds(1), [&] { return Deadline::NowNs() > first + 2'000'000; }));
  ASSERT_TRUE(cluster_->node(1)->apply_configs(WithSize("3MB")).ok());
  EXPECT_EQ(SizeOf(*cluster_->node(0), "example_kv_store"), 2000000u);
  EXPECT_EQ(SizeOf(*cluster_->node(2), "example_kv_store"), 3000000u)
      << "node 2 is on node 1's side";
  cluster_->Heal();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(Eventually(
        seconds(15), [&] { return SizeOf(*cluster_->node(i), "example_kv_store") == 3000000u; }))
        << "node " << i << " has " << SizeOf(*cluster_->node(i), "example_kv_store");
  }
  // The loser is in the history, on every node, and not in force.
  for (size_t i = 0; i < 3; ++i) {
    std::vector<ConfigHistoryEntry> history;
    EXPECT_TRUE(Eventually(seconds(10),
                           [&] {
                             auto h = cluster_->node(i)->config_history("example_kv_store");
                             if (h.ok()) history = *h;
                             return h.ok() && h->size() == 3 && h->back().in_force;
                           }))
        << "node " << i;
    ASSERT_EQ(history.size(), 3u);
    EXPECT_EQ(history[1].config.size_bytes, 2000000u);
    EXPECT_FALSE(history[1].in_force);
    EXPECT_EQ(history[2].config.size_bytes, 3000000u);
  }
}

}  // namespace
}  // namespace kvmesh
