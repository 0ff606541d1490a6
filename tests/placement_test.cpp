#include "common/placement.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>

namespace kvmesh {
namespace {

TEST(PlacementTest, TakesMaxDistinctNodesInAStableOrder) {
  std::vector<uint64_t> nodes = {11, 22, 33, 44, 55};
  auto a = PlaceReplicas("/profile/history/alice", nodes, 3);
  ASSERT_EQ(a.size(), 3u);
  // Input order and duplicates do not matter: every node computes the same set.
  auto b = PlaceReplicas("/profile/history/alice", {55, 44, 33, 22, 11, 11}, 3);
  EXPECT_EQ(a, b);
  EXPECT_EQ(PlaceReplicas("/x", {7, 7, 7}, 3), std::vector<uint64_t>{7});
  EXPECT_TRUE(PlaceReplicas("/x", {}, 3).empty());
}

TEST(PlacementTest, ScoresNeverChange) {
  // Placement decides where stored data lives: a change of hash would move every database.
  EXPECT_EQ(PlacementScore("/example/kv", 1), PlacementScore("/example/kv", 1));
  EXPECT_NE(PlacementScore("/example/kv", 1), PlacementScore("/example/kv", 2));
  EXPECT_EQ(PlacementScore("/example/kv", 1), 0x46bcf3e2f958cdafull);
}

TEST(PlacementTest, AJoiningNodeMovesOnlyTheDatabasesItEnters) {
  std::vector<uint64_t> nodes = {101, 202, 303};
  std::vector<uint64_t> grown = {101, 202, 303, 404};
  int moved = 0;
  const int kDatabases = 3000;
  for (int i = 0; i < kDatabases; ++i) {
    std::string path = "/data/" + std::to_string(i);
    auto before = PlaceReplicas(path, nodes, 2);
    auto after = PlaceReplicas(path, grown, 2);
    if (before != after) {
      ++moved;
      // The only change is the new node taking one place.
      EXPECT_NE(std::find(after.begin(), after.end(), 404), after.end()) << path;
    }
  }
  // Expected share: max/N = 2/4 of the databases gain the new node; far from all of them.
  EXPECT_GT(moved, kDatabases * 35 / 100);
  EXPECT_LT(moved, kDatabases * 65 / 100);
}

TEST(PlacementTest, SpreadsDatabasesEvenly) {
  std::vector<uint64_t> nodes = {1, 2, 3, 4, 5};
  std::map<uint64_t, int> first;
  for (int i = 0; i < 5000; ++i) ++first[PlaceReplicas("/d/" + std::to_string(i), nodes, 1)[0]];
  for (auto& [node, count] : first) {
    EXPECT_GT(count, 800) << node;
    EXPECT_LT(count, 1200) << node;
  }
}

}  // namespace
}  // namespace kvmesh
