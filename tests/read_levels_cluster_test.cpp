// Read levels (README "Read levels") in a 3-node in-process cluster: what quorum and
// read_your_writes promise while a replica lags (its replication cut) and under a partition.
#include <gtest/gtest.h>

#include "config/config_set.hpp"
#include "test_util.hpp"
#include "testing/local_cluster.hpp"

namespace kvmesh {
namespace {

using std::chrono::seconds;

constexpr char kConfigs[] = R"(
- id: strict
  matcher: /strict/*
  replication: {min: 2, max: 3}
  size: 100MB
- id: all
  matcher: /all/*
  replication: {min: 3, max: 3}
  size: 100MB
)";

class ReadLevelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LocalClusterOptions options;
    options.nodes = 3;
    options.dir = dir_.path();
    options.config_yaml = kConfigs;
    Status s = LocalCluster::Start(std::move(options), &cluster_);
    ASSERT_TRUE(s.ok()) << s;
  }

  Database Open(size_t node) {
    Database db = cluster_->node(node)->open(kPath);
    EXPECT_TRUE(db.ok()) << db.status();
    return db;
  }

  /// Writes "old" under /k and waits until all three replicas hold it.
  void WriteOldEverywhere() {
    ASSERT_TRUE(Open(0).put("/k", "old").ok());
    Status s = cluster_->WaitForConvergence(kPath, seconds(10));
    ASSERT_TRUE(s.ok()) << s;
  }

  static std::string Show(const Result<std::string>& r) {
    return r.ok() ? *r : "<" + r.status().ToString() + ">";
  }

  static constexpr char kPath[] = "/strict/levels";
  testing::TempDir dir_;
  std::unique_ptr<LocalCluster> cluster_;
};

const ReadOptions kQuorum{ReadConsistency::kQuorum};
const ReadOptions kReadYourWrites{ReadConsistency::kReadYourWrites};

TEST_F(ReadLevelsTest, QuorumSeesAWriteTheServingReplicaLacksAndFailsWhenAloneWithIt) {
  WriteOldEverywhere();
  // Node 2's replica gets no replication: a write through node 0 is acknowledged by the
  // replicas on nodes 0 and 1 (min 2) only.
  cluster_->CutReplication({2}, {0, 1});
  ASSERT_TRUE(Open(0).put("/k", "new").ok());
  Database c = Open(2);
  // eventual is served by node 2's own replica alone: the old value.
  EXPECT_EQ(Show(c.get("/k")), "old");
  // quorum asks 2 replicas and returns the newest by the conflict rule.
  EXPECT_EQ(Show(c.get("/k", kQuorum)), "new");
  Result<VersionedValue> quorum = c.get_versioned("/k", kQuorum);
  Result<VersionedValue> at_writer = Open(0).get_versioned("/k");
  ASSERT_TRUE(quorum.ok()) << quorum.status();
  ASSERT_TRUE(at_writer.ok()) << at_writer.status();
  EXPECT_EQ(quorum->version, at_writer->version);
  // A delete is newer too: quorum reports the key missing although node 2 still holds it.
  ASSERT_TRUE(Open(1).erase("/k").ok());
  EXPECT_EQ(Show(c.get("/k")), "old");
  EXPECT_TRUE(c.get("/k", kQuorum).IsNotFound()) << Show(c.get("/k", kQuorum));
  // Cut off completely, node 2 reaches only its own replica: fewer than min answer.
  cluster_->Partition({2}, {0, 1});
  Result<std::string> alone = c.get("/k", kQuorum);
  EXPECT_EQ(alone.status().code(), Code::kUnavailable) << Show(alone);
  EXPECT_NE(alone.status().message().find("1 of the 2 replicas"), std::string::npos)
      << alone.status();
  // Lists have no quorum level (yet): refused, naming it.
  ListOptions list;
  list.consistency = ReadConsistency::kQuorum;
  Result<ListPage> page = c.list_page(list);
  EXPECT_EQ(page.status().code(), Code::kInvalidArgument);
  EXPECT_NE(page.status().message().find("quorum"), std::string::npos) << page.status();
  cluster_->Heal();
}

TEST_F(ReadLevelsTest, QuorumFailsSayingHowManyAnsweredWhenFewerThanMinAreReachable) {
  Database db = cluster_->node(0)->open("/all/levels");
  ASSERT_TRUE(db.put("/k", "v").ok());
  EXPECT_EQ(Show(db.get("/k", kQuorum)), "v");
  // min 3: node 0 reaches its own replica and node 1's, which both answer; too few.
  cluster_->Partition({2}, {0, 1});
  Result<std::string> two = db.get("/k", kQuorum);
  EXPECT_EQ(two.status().code(), Code::kUnavailable) << Show(two);
  EXPECT_NE(two.status().message().find("2 of the 3 replicas"), std::string::npos) << two.status();
  EXPECT_EQ(Show(db.get("/k")), "v");  // eventual still answers
  cluster_->Heal();
}

TEST_F(ReadLevelsTest, ReadYourWritesNeverReturnsAValueOlderThanTheSessionsWrite) {
  WriteOldEverywhere();
  cluster_->CutReplication({2}, {0, 1});
  Database writer = Open(0).with_session();
  EXPECT_EQ(writer.session_token(), "");
  ASSERT_TRUE(writer.put("/k", "new").ok());
  const std::string token = writer.session_token();
  ASSERT_FALSE(token.empty());
  // The session goes on through node 2, whose replica lacks its write.
  Database reader = Open(2);
  ASSERT_TRUE(reader.set_session_token(token).ok());
  EXPECT_EQ(reader.session_token(), token);
  EXPECT_EQ(Show(reader.get("/k")), "old");  // eventual: node 2's replica
  // read_your_writes: another replica that holds the write serves it.
  EXPECT_EQ(Show(reader.get("/k", kReadYourWrites)), "new");
  // A list at read_your_writes is served by node 2's replica only: refused while it lags.
  Result<std::vector<std::string>> keys = reader.list("", kReadYourWrites);
  EXPECT_EQ(keys.status().code(), Code::kUnavailable);
  // With no replica holding the write reachable, it fails rather than read the old value.
  cluster_->Partition({2}, {0, 1});
  Result<std::string> cut = reader.get("/k", kReadYourWrites);
  EXPECT_EQ(cut.status().code(), Code::kUnavailable) << Show(cut);
  EXPECT_NE(cut.status().message().find("session's writes"), std::string::npos) << cut.status();
  // Once node 2's replica catches up it serves the session itself.
  cluster_->Heal();
  Status s = cluster_->WaitForConvergence(kPath, seconds(10));
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(Show(reader.get("/k", kReadYourWrites)), "new");
  keys = reader.list("", kReadYourWrites);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys, std::vector<std::string>{"/k"});
  // Without a session there is nothing to read one's writes of: refused, saying how to get one.
  Result<std::string> no_session = Open(2).get("/k", kReadYourWrites);
  EXPECT_EQ(no_session.status().code(), Code::kInvalidArgument);
  EXPECT_NE(no_session.status().message().find("with_session"), std::string::npos);
}

}  // namespace
}  // namespace kvmesh
