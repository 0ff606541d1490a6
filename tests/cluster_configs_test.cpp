// Cluster-wide configs without actors: how records are stored and how a node merges them with its
// own configs (config/cluster_configs.hpp).
#include "config/cluster_configs.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/size.hpp"

namespace kvmesh::config {
namespace {

DatabaseConfig Config(const std::string& id, const std::string& pattern, uint64_t size = 1000) {
  DatabaseConfig c;
  c.id = id;
  EXPECT_TRUE(Matcher::Compile(pattern, &c.matcher).ok()) << pattern;
  c.size_bytes = size;
  c.source = "test";
  return c;
}

ConfigRecord Record(const std::string& id, const std::string& pattern, int64_t time_ms = 1) {
  ConfigRecord r;
  r.config = Config(id, pattern);
  r.config.from_api = true;
  r.applied_by = "alice";
  r.node = "n1";
  r.time_ms = time_ms;
  return r;
}

TEST(ClusterConfigsTest, RecordsRoundTripEveryField) {
  ConfigRecord r = Record("orders", "/orders/[^/]+", 1796534033838);
  r.config.description = "per-order state";
  r.config.tags = {"shop", "eu"};
  r.config.replication = {2, 3};
  r.config.size_bytes = 123456789;
  ConfigRecord back;
  ASSERT_TRUE(DecodeRecord(EncodeRecord(r), &back).ok());
  EXPECT_EQ(back.config.id, "orders");
  EXPECT_EQ(back.config.matcher.pattern(), "/orders/[^/]+");
  EXPECT_EQ(back.config.matcher.kind(), MatcherKind::kRegex);
  EXPECT_EQ(back.config.description, "per-order state");
  EXPECT_EQ(back.config.tags, (std::vector<std::string>{"shop", "eu"}));
  EXPECT_EQ(back.config.replication.min, 2u);
  EXPECT_EQ(back.config.replication.max, 3u);
  EXPECT_EQ(back.config.size_bytes, 123456789u);
  EXPECT_EQ(back.applied_by, "alice");
  EXPECT_EQ(back.node, "n1");
  EXPECT_EQ(back.time_ms, 1796534033838);
  EXPECT_FALSE(back.deleted);
  EXPECT_TRUE(back.config.from_api);
  EXPECT_NE(back.config.source.find("applied by alice through n1 at 2026-12-06T"),
            std::string::npos)
      << back.config.source;
}

TEST(ClusterConfigsTest, MalformedRecordsAreRefusedWithTheReason) {
  ConfigRecord r;
  EXPECT_EQ(DecodeRecord("not json", &r).code(), Code::kInvalidConfig);
  Status s =
      DecodeRecord(R"({"id":"x","deleted":false,"applied_by":"a","node":"n","time_ms":1})", &r);
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  EXPECT_NE(s.message().find("description"), std::string::npos) << s.ToString();
  ConfigRecord bad = Record("x", "/x");
  std::string text = EncodeRecord(bad);
  text.replace(text.find("\"/x\""), 4, "\"/x/[\"");
  s = DecodeRecord(text, &r);
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  EXPECT_NE(s.message().find("invalid regex"), std::string::npos) << s.ToString();
}

TEST(ClusterConfigsTest, KeysHoldAnyIdAsOneSegmentAndHistorySortsByTime) {
  EXPECT_EQ(ConfigKey("a/../b"), "/configs/612f2e2e2f62");
  ConfigRecord early = Record("a", "/a", 9);
  ConfigRecord late = Record("a", "/a", 10);
  EXPECT_LT(HistoryKey(early), HistoryKey(late));
  EXPECT_EQ(HistoryKey(late).rfind(HistoryPrefix("a") + "/", 0), 0u);
}

TEST(ClusterConfigsTest, FileConfigsWinOverApiConfigsWithTheirIdOrMatcher) {
  std::vector<DatabaseConfig> files = {Config("kv", "/example/kv"), Config("logs", "/logs/*")};
  std::vector<ConfigRecord> api = {Record("kv", "/other"), Record("logs2", "/logs/*"),
                                   Record("orders", "/orders/*")};
  ConfigSet set;
  std::vector<std::string> warnings;
  ASSERT_TRUE(MergeConfigs(files, api, &set, &warnings).ok());
  ASSERT_NE(set.FindById("kv"), nullptr);
  EXPECT_FALSE(set.FindById("kv")->from_api);
  EXPECT_EQ(set.Resolve("/other"), nullptr)
      << "the API config shadowed by a file id is not in force";
  EXPECT_EQ(set.FindById("logs2"), nullptr);
  ASSERT_NE(set.Resolve("/orders/1"), nullptr);
  EXPECT_EQ(set.Resolve("/orders/1")->id, "orders");
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("\"kv\" is not in force on this node: a config of this node's files "
                             "has the same id"),
            std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[1].find("\"logs2\""), std::string::npos) << warnings[1];
}

TEST(ClusterConfigsTest, DeletedAndReservedRecordsAreNotInForce) {
  ConfigRecord deleted = Record("gone", "/gone");
  deleted.deleted = true;
  std::vector<ConfigRecord> api = {deleted, Record("sys", "/_kvmesh/*"), Record("ok", "/ok")};
  ConfigSet set;
  std::vector<std::string> warnings;
  ASSERT_TRUE(MergeConfigs({}, api, &set, &warnings).ok());
  EXPECT_EQ(set.FindById("gone"), nullptr);
  EXPECT_EQ(set.FindById("sys"), nullptr);
  EXPECT_NE(set.FindById("ok"), nullptr);
  EXPECT_TRUE(IsReservedPath("/_kvmesh"));
  EXPECT_TRUE(IsReservedPath("/_kvmesh/configs"));
  EXPECT_FALSE(IsReservedPath("/_kvmeshes"));
  EXPECT_EQ(CheckUserDatabasePath("/_kvmesh/configs").code(), Code::kPermissionDenied);
  EXPECT_TRUE(CheckUserDatabasePath("/_kvmeshes").ok());
}

TEST(ClusterConfigsTest, ApiConfigsWithOneMatcherResolveTheSameOnEveryNode) {
  // Two ids applied with one matcher on two nodes at once: whatever order a node read them in,
  // the lower id is in force and the other is left out, so every node resolves alike.
  std::vector<ConfigRecord> one = {Record("b", "/same"), Record("a", "/same")};
  std::vector<ConfigRecord> other = {Record("a", "/same"), Record("b", "/same")};
  ConfigSet s1, s2;
  ASSERT_TRUE(MergeConfigs({}, one, &s1, nullptr).ok());
  ASSERT_TRUE(MergeConfigs({}, other, &s2, nullptr).ok());
  ASSERT_NE(s1.Resolve("/same"), nullptr);
  EXPECT_EQ(s1.Resolve("/same")->id, "a");
  EXPECT_EQ(s2.Resolve("/same")->id, "a");
}

TEST(ClusterConfigsTest, ConfigSizesAreWrittenExactly) {
  for (uint64_t bytes : {1ull, 999ull, 1000ull, 1024ull, 100000000ull, 64ull << 20, 1500ull,
                         123456789ull, 5ull << 40}) {
    uint64_t back = 0;
    const std::string text = FormatConfigSize(bytes);
    ASSERT_TRUE(ParseSize(text, &back).ok()) << text;
    EXPECT_EQ(back, bytes) << text;
  }
  EXPECT_EQ(FormatConfigSize(100000000), "100MB");
  EXPECT_EQ(FormatConfigSize(64ull << 20), "64MiB");
  EXPECT_EQ(FormatConfigSize(1500), "1500");
}

}  // namespace
}  // namespace kvmesh::config
