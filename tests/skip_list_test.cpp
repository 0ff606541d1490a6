// The skip list under kvmesh's memtable (storage/skip_list.hpp), driven directly: an insert whose
// neighbours changed between its search and its link, inserts made alone in every order (its
// finger), and inserts on several threads at once while readers scan.
#include "storage/skip_list.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace kvmesh::storage {
namespace {

/// Entries are NUL-terminated strings.
struct StringOrder {
  using Key = std::string_view;
  int operator()(const char* entry, std::string_view key) const {
    return std::string_view(entry).compare(key);
  }
  std::string_view Decode(const char* entry) const { return entry; }
};
using List = SkipList<StringOrder>;

/// Nodes' memory, freed with the list (as an arena is).
class Nodes {
 public:
  /// A node for `key` of `height` (0: random), ready to insert.
  char* Make(const std::string& key, int height = 0) {
    if (height == 0) height = List::RandomHeight();
    std::lock_guard<std::mutex> lock(mutex_);
    memory_.push_back(std::make_unique<char[]>(List::NodeBytes(height, key.size() + 1)));
    char* entry = List::MakeNode(memory_.back().get(), height);
    std::memcpy(entry, key.c_str(), key.size() + 1);
    return entry;
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<char[]>> memory_;
};

/// Entries of level 0 not after the one before them: 0 in a list in order.
int OutOfOrder(const List& list) {
  int out = 0;
  std::string last;
  for (List::Node* x = list.First(); x != nullptr; x = x->Next(0)) {
    if (!last.empty() && last >= x->Entry()) ++out;
    last = x->Entry();
  }
  return out;
}

std::vector<std::string> Scan(const List& list) {
  std::vector<std::string> out;
  for (List::Node* x = list.First(); x != nullptr; x = x->Next(0)) out.emplace_back(x->Entry());
  return out;
}

// Every level of a list holds its nodes in order: a search by any key finds what a model finds.
void ExpectMatches(const List& list, const std::set<std::string>& model, std::mt19937_64& rng) {
  ASSERT_TRUE(list.Ordered());
  ASSERT_EQ(Scan(list), std::vector<std::string>(model.begin(), model.end()));
  List::Node* last = list.Last();
  if (model.empty()) {
    EXPECT_EQ(last, nullptr);
  } else {
    ASSERT_NE(last, nullptr);
    EXPECT_EQ(std::string(last->Entry()), *model.rbegin());
  }
  for (int i = 0; i < 500; ++i) {
    const std::string target = std::to_string(rng() % 3000) + (i % 2 ? "" : "~");
    List::Node* at = list.Seek(target);
    auto lower = model.lower_bound(target);
    ASSERT_EQ(at == nullptr, lower == model.end()) << target;
    if (at != nullptr) ASSERT_EQ(std::string(at->Entry()), *lower) << target;
    List::Node* before = list.Before(target);
    ASSERT_EQ(before == nullptr, lower == model.begin()) << target;
    if (before != nullptr) ASSERT_EQ(std::string(before->Entry()), *std::prev(lower)) << target;
  }
}

TEST(SkipListTest, AnInsertWhoseNeighboursChangedAfterItsSearchLinksInOrder) {
  Nodes nodes;
  List list(StringOrder{});
  list.Insert(nodes.Make("a", List::kMaxHeight), false);
  list.Insert(nodes.Make("d", List::kMaxHeight), false);
  // "c" finds its place between "a" and "d" on every level; then "b" is linked there first.
  char* c = nodes.Make("c", List::kMaxHeight);
  List::Splice splice = list.Locate(c, false);
  ASSERT_EQ(std::string(splice.prev[0]->Entry()), "a");
  list.Insert(nodes.Make("b", List::kMaxHeight), false);
  list.Link(c, &splice, false);
  EXPECT_EQ(Scan(list), (std::vector<std::string>{"a", "b", "c", "d"}));
  // On every level, not only the bottom one.
  for (int level = 0; level < List::kMaxHeight; ++level) {
    List::Node* b = list.Seek("b");
    ASSERT_NE(b, nullptr);
    ASSERT_NE(b->Next(level), nullptr) << level;
    EXPECT_EQ(std::string(b->Next(level)->Entry()), "c") << level;
  }
}

// The memtable keeps one header per user key on this: an insert of a key held returns the entry
// that holds it and links nothing, whether the search found it or another insert linked it
// between the search and the link.
TEST(SkipListTest, AnInsertOfAKeyHeldLinksNothingAndReturnsTheEntryHoldingIt) {
  for (bool alone : {true, false}) {
    SCOPED_TRACE(alone ? "alone" : "concurrent");
    Nodes nodes;
    List list(StringOrder{});
    char* a = nodes.Make("a", List::kMaxHeight);
    char* d = nodes.Make("d", List::kMaxHeight);
    EXPECT_EQ(list.Insert(a, alone), a);
    EXPECT_EQ(list.Insert(d, alone), d);
    EXPECT_EQ(list.Insert(nodes.Make("d", List::kMaxHeight), alone), d);
    EXPECT_EQ(list.Insert(nodes.Make("a", 1), alone), a);
    // "c" finds its place between "a" and "d"; then another "c" is linked there first.
    char* c = nodes.Make("c", List::kMaxHeight);
    List::Splice splice = list.Locate(c, alone);
    char* other = nodes.Make("c", 1);
    EXPECT_EQ(list.Insert(other, false), other);
    EXPECT_EQ(list.Link(c, &splice, alone), other);
    EXPECT_TRUE(list.Ordered());
    EXPECT_EQ(Scan(list), (std::vector<std::string>{"a", "c", "d"}));
    // The node not linked is on no level: "a" leads to the "c" linked on level 0 and to "d"
    // above it.
    List::Node* first = list.First();
    for (int level = 1; level < List::kMaxHeight; ++level) {
      ASSERT_NE(first->Next(level), nullptr) << level;
      EXPECT_EQ(std::string(first->Next(level)->Entry()), "d") << level;
    }
  }
}

TEST(SkipListTest, AConcurrentInsertMakesTheNextInsertMadeAloneSearchFromTheTop) {
  Nodes nodes;
  List list(StringOrder{});
  list.Insert(nodes.Make("a", List::kMaxHeight), true);
  // The finger after "m": "m" on level 0, "a" (the last node before it) on every level above.
  list.Insert(nodes.Make("m", 1), true);
  // A concurrent insert puts "k" between them on every level.
  list.Insert(nodes.Make("k", List::kMaxHeight), false);
  // "z" follows "m", and on level 0 the finger still brackets it; above, "a" is no longer the
  // last node before it.
  list.Insert(nodes.Make("z", List::kMaxHeight), true);
  EXPECT_TRUE(list.Ordered());
  EXPECT_EQ(Scan(list), (std::vector<std::string>{"a", "k", "m", "z"}));
}

TEST(SkipListTest, InsertsMadeAloneInAnyOrderKeepEveryLevelInOrder) {
  std::mt19937_64 rng(3);
  Nodes nodes;
  List list(StringOrder{});
  std::set<std::string> model;
  ExpectMatches(list, model, rng);
  for (int round = 0; round < 40; ++round) {
    // Ascending runs (the finger's case), descending ones, and scattered keys; now and then a
    // concurrent insert between them, which the finger must not survive.
    const int start = static_cast<int>(rng() % 3000);
    const int kind = round % 4;
    for (int i = 0; i < 50; ++i) {
      std::string key;
      if (kind == 0) key = std::to_string(start + i);
      if (kind == 1) key = std::to_string(start + 50 - i);
      if (kind >= 2) key = std::to_string(rng() % 3000);
      if (!model.insert(key).second) continue;
      list.Insert(nodes.Make(key), /*alone=*/kind != 3 || i % 7 != 0);
    }
    ExpectMatches(list, model, rng);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(SkipListTest, ConcurrentInsertsAndReadersMeanwhileKeepEveryKeyInOrder) {
  Nodes nodes;
  List list(StringOrder{});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  // The threads' keys interleave: i-th keys of all threads are neighbours.
  auto key = [](int thread, int i) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%06d/%d", (i * 7919) % kPerThread, thread);
    return std::string(buf);
  };
  std::atomic<bool> done{false};
  std::atomic<int> unordered{0};
  std::thread reader([&] {
    for (int n = 0; n < 100000 && !done.load(); ++n) unordered += OutOfOrder(list);  // bounded
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) list.Insert(nodes.Make(key(t, i)), false);
    });
  }
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_EQ(unordered.load(), 0);
  std::set<std::string> model;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) model.insert(key(t, i));
  }
  std::mt19937_64 rng(5);
  ExpectMatches(list, model, rng);
}

// As RocksDB's write groups come: one after another, each either one thread inserting alone or
// several inserting at once, each on a new thread; a reader runs throughout.
TEST(SkipListTest, GroupsOfInsertsMadeAloneAndOfConcurrentInsertsInTurnKeepEveryKeyInOrder) {
  Nodes nodes;
  List list(StringOrder{});
  std::set<std::string> model;
  std::atomic<bool> done{false};
  std::atomic<int> wrong{0};
  std::thread reader([&] {
    for (int n = 0; n < 200000 && !done.load(); ++n) {  // bounded
      wrong += OutOfOrder(list);
      List::Node* at = list.Seek("5");
      if (at != nullptr && std::string(at->Entry()) < "5") ++wrong;
      List::Node* before = list.Before("5");
      if (before != nullptr && std::string(before->Entry()) >= "5") ++wrong;
    }
  });
  std::mt19937_64 rng(11);
  int unique = 0;
  for (int group = 0; group < 400; ++group) {
    std::vector<std::vector<std::string>> keys(4);
    const int kind = static_cast<int>(rng() % 3);
    const int start = static_cast<int>(rng() % 100000);
    for (int t = 0; t < 4; ++t) {
      for (int i = 0; i < 30; ++i) {
        const int n = kind == 0 ? start + i * 4 + t : static_cast<int>(rng() % 100000);
        keys[t].push_back(std::to_string(n) + "#" + std::to_string(unique++));
        model.insert(keys[t].back());
      }
    }
    if (kind == 2) {
      std::vector<std::thread> inserters;
      for (int t = 0; t < 4; ++t) {
        inserters.emplace_back([&, t] {
          for (const auto& key : keys[t]) list.Insert(nodes.Make(key), /*alone=*/false);
        });
      }
      for (auto& inserter : inserters) inserter.join();
    } else {
      std::thread alone([&] {
        for (const auto& run : keys) {
          for (const auto& key : run) list.Insert(nodes.Make(key), /*alone=*/true);
        }
      });
      alone.join();
    }
  }
  done = true;
  reader.join();
  EXPECT_EQ(wrong.load(), 0);
  ASSERT_TRUE(list.Ordered());
  EXPECT_EQ(Scan(list), std::vector<std::string>(model.begin(), model.end()));
}

}  // namespace
}  // namespace kvmesh::storage
