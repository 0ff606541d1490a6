// Node-level anti-entropy summaries (replication/node_summary.hpp): totals that match when two
// nodes hold the same digests, and pages that name exactly the databases that differ.
#include "replication/node_summary.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <set>
#include <string>
#include <vector>

namespace kvmesh::replication {
namespace {

constexpr uint64_t kA = 1;
constexpr uint64_t kB = 2;
constexpr uint64_t kC = 3;

/// Every difference node `asker` finds with `answerer` by paging as the membership actor does.
std::set<std::string> FindDifferences(const NodeSummary& asker, const NodeSummary& answerer) {
  std::set<std::string> out;
  std::string after;
  for (int step = 0; step < 10000; ++step) {
    std::string until;
    bool to_end = false;
    std::vector<NodeSummary::Entry> page = asker.Page(answerer.self_id(), after, &until, &to_end);
    std::vector<std::string> differ;
    std::string compared;
    Status s = answerer.Compare(asker.self_id(), after, until, to_end, page, &differ, &compared);
    EXPECT_TRUE(s.ok()) << s;
    out.insert(differ.begin(), differ.end());
    if (!compared.empty()) {
      after = compared;
      continue;
    }
    if (to_end) return out;
    after = until;
  }
  ADD_FAILURE() << "paging did not end";
  return out;
}

std::string PathOf(int i) {
  char buf[32];
  snprintf(buf, sizeof buf, "/db/%06d", i);
  return buf;
}

TEST(NodeSummaryTest, EqualDigestsGiveEqualTotalsWhateverTheOrder) {
  NodeSummary a(kA);
  NodeSummary b(kB);
  for (int i = 0; i < 100; ++i) {
    a.SetPlacement(PathOf(i), {kA, kB});
    a.SetDigest(PathOf(i), 1000 + i);
  }
  for (int i = 99; i >= 0; --i) {  // digest first, placement later, reverse order
    b.SetDigest(PathOf(i), 1000 + i);
    b.SetPlacement(PathOf(i), {kB, kA});
  }
  EXPECT_EQ(a.TotalsWith(kB), b.TotalsWith(kA));
  EXPECT_EQ(a.TotalsWith(kB).count, 100u);
  b.SetDigest(PathOf(42), 7);
  EXPECT_FALSE(a.TotalsWith(kB) == b.TotalsWith(kA));
  b.SetDigest(PathOf(42), 1042);
  EXPECT_EQ(a.TotalsWith(kB), b.TotalsWith(kA));
}

TEST(NodeSummaryTest, OnlyDatabasesPlacedOnBothNodesCount) {
  NodeSummary a(kA);
  a.SetPlacement("/x", {kA, kC});
  a.SetDigest("/x", 5);
  a.SetPlacement("/y", {kB, kC});  // a copy being handed over: not this node's to compare
  a.SetDigest("/y", 6);
  EXPECT_EQ(a.TotalsWith(kB).count, 0u);
  EXPECT_EQ(a.TotalsWith(kC).count, 1u);
  // Nothing written (digest 0) counts as absent.
  a.SetPlacement("/z", {kA, kB});
  EXPECT_EQ(a.TotalsWith(kB).count, 0u);
  a.SetPlacement("/x", {kA, kB});
  EXPECT_EQ(a.TotalsWith(kB).count, 1u);
  EXPECT_EQ(a.TotalsWith(kC).count, 0u);
}

TEST(NodeSummaryTest, PagingFindsExactlyTheDatabasesThatDiffer) {
  NodeSummary a(kA);
  NodeSummary b(kB);
  const int n = 5000;  // several pages and several capped answers
  std::set<std::string> expected;
  for (int i = 0; i < n; ++i) {
    a.SetPlacement(PathOf(i), {kA, kB});
    b.SetPlacement(PathOf(i), {kA, kB});
    a.SetDigest(PathOf(i), 100 + i);
    if (i % 7 == 0) {
      expected.insert(PathOf(i));  // only on a
    } else if (i % 11 == 0) {
      b.SetDigest(PathOf(i), 1);  // differs
      expected.insert(PathOf(i));
    } else {
      b.SetDigest(PathOf(i), 100 + i);
    }
  }
  for (int i = n; i < n + 700; ++i) {  // only on b, after a's last path: more than one answer
    b.SetPlacement(PathOf(i), {kA, kB});
    b.SetDigest(PathOf(i), 3);
    expected.insert(PathOf(i));
  }
  EXPECT_EQ(FindDifferences(a, b), expected);
  EXPECT_EQ(FindDifferences(b, a), expected);
}

TEST(NodeSummaryTest, MalformedPagesAreRefused) {
  NodeSummary b(kB);
  std::vector<std::string> differ;
  std::string compared;
  Status s = b.Compare(kA, "/m", "/z", false, {{"/a", 1}}, &differ, &compared);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  s = b.Compare(kA, "", "/z", false, {{"/b", 1}, {"/a", 1}}, &differ, &compared);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  std::vector<NodeSummary::Entry> big(kSummaryPageEntries + 1, {"/a", 1});
  s = b.Compare(kA, "", "", true, big, &differ, &compared);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
}

// Every commit of every database reports its digest (the store's vector observer). A page scan
// holds the summary's mutex over thousands of entries; a commit must not wait for it, or one
// anti-entropy round stalls the writes of every database on the node.
TEST(NodeSummaryTest, DigestsAreTakenWhileAPageScanHoldsTheSummary) {
  NodeSummary a(kA);
  a.SetPlacement("/x", {kA, kB});
  a.SetDigest("/x", 5);
  std::future_status during_scan = std::future_status::deferred;
  // Outside the hook: a digest waiting for the scan's mutex finishes once Page returns (the
  // future's destructor waits for it).
  std::future<void> reported;
  a.set_page_hook_for_testing([&] {
    reported = std::async(std::launch::async, [&] { a.SetDigest("/x", 6); });
    during_scan = reported.wait_for(std::chrono::seconds(5));  // bounded
  });
  std::string until;
  bool to_end = false;
  std::vector<NodeSummary::Entry> page = a.Page(kB, "", &until, &to_end);
  a.set_page_hook_for_testing(nullptr);
  reported.wait();
  EXPECT_EQ(during_scan, std::future_status::ready)
      << "SetDigest waited for the page scan to release the summary";
  ASSERT_EQ(page.size(), 1u);
  // The digest reported during the scan is in the next reading.
  NodeSummary b(kB);
  b.SetPlacement("/x", {kA, kB});
  b.SetDigest("/x", 6);
  EXPECT_EQ(a.TotalsWith(kB), b.TotalsWith(kA));
  page = a.Page(kB, "", &until, &to_end);
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].digest, 6u);
}

}  // namespace
}  // namespace kvmesh::replication
