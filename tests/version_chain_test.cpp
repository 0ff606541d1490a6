// The memtable's chains of a key's versions and its table from key to chain
// (storage/version_chain.hpp), driven directly: versions added in every order and from several
// threads at once are held in order, once each, and a step back from any of them lands right
// before it whatever its hints say; the table finds every key entered through colliding hashes,
// keeps one slot per key when threads enter it at once, and says it is incomplete before a key it
// could not enter is written; from the third, each table's memory comes zeroed with its pages in.
// Also built under ThreadSanitizer (kvmesh_memtable_tsan_tests).
#include "storage/version_chain.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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

/// Holds each thread until all `count` have come (or 10 s have passed), so that they run at once.
class StartLine {
 public:
  explicit StartLine(int count) : count_(count) {}
  void Wait() {
    ++arrived_;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (arrived_.load() < count_ && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
  }

 private:
  const int count_;
  std::atomic<int> arrived_{0};
};

/// Entries are NUL-terminated strings.
struct StringOrder {
  using Key = std::string_view;
  int operator()(const char* entry, std::string_view key) const {
    return std::string_view(entry).compare(key);
  }
};

/// Versions' memory, freed with the test (as an arena is).
class Versions {
 public:
  Version* Make(const std::string& entry) {
    std::lock_guard<std::mutex> lock(mutex_);
    memory_.push_back(std::make_unique<char[]>(Version::Bytes(entry.size() + 1)));
    char* at = Version::Make(memory_.back().get());
    std::memcpy(at, entry.c_str(), entry.size() + 1);
    return Version::Of(at);
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<char[]>> memory_;
};

std::string Entry(int n) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%06d", n);
  return buf;
}

std::vector<std::string> Forward(const VersionChain& chain) {
  std::vector<std::string> out;
  for (const Version* v = chain.First(); v != nullptr; v = v->next.load()) {
    out.emplace_back(v->Entry());
  }
  return out;
}

/// From the last version to the first by steps back (bounded by `limit` steps).
std::vector<std::string> Backward(const VersionChain& chain, size_t limit) {
  std::vector<std::string> out;
  for (const Version* v = chain.Last(); v != nullptr && out.size() <= limit; v = chain.Before(v)) {
    out.emplace_back(v->Entry());
  }
  std::reverse(out.begin(), out.end());
  return out;
}

TEST(VersionChainTest, AStepBackLandsRightBeforeEachVersionWhateverOrderTheyCameIn) {
  // Orders that leave stale hints: versions added at the end, at the front, in the middle.
  const std::vector<std::vector<int>> orders = {
      {5, 1, 3, 2, 4}, {1, 2, 3, 4, 5}, {5, 4, 3, 2, 1}, {3, 1, 5, 2, 4}, {2, 4, 1, 5, 3}};
  for (const auto& order : orders) {
    Versions versions;
    VersionChain chain;
    EXPECT_EQ(chain.Last(), nullptr);
    for (int n : order) EXPECT_TRUE(chain.Add(versions.Make(Entry(n)), Entry(n), StringOrder{}));
    const std::vector<std::string> expected = {Entry(1), Entry(2), Entry(3), Entry(4), Entry(5)};
    EXPECT_EQ(Forward(chain), expected);
    EXPECT_EQ(Backward(chain, 10), expected);
    // An equal entry is refused and linked nowhere.
    EXPECT_FALSE(chain.Add(versions.Make(Entry(3)), Entry(3), StringOrder{}));
    EXPECT_EQ(Forward(chain), expected);
    const StringOrder order_of;
    EXPECT_EQ(std::string(chain.FirstAtOrAfter(Entry(3), order_of)->Entry()), Entry(3));
    EXPECT_EQ(std::string(chain.FirstAtOrAfter("000003~", order_of)->Entry()), Entry(4));
    EXPECT_EQ(chain.FirstAtOrAfter("000006", order_of), nullptr);
    EXPECT_EQ(std::string(chain.LastAtOrBefore(Entry(3), order_of)->Entry()), Entry(3));
    EXPECT_EQ(std::string(chain.LastAtOrBefore("000003~", order_of)->Entry()), Entry(3));
    EXPECT_EQ(chain.LastAtOrBefore("000000", order_of), nullptr);
  }
}

// Against a model: chains grown in every order (first, last, in the middle, at random), and a
// search for every key between and at their versions.
TEST(VersionChainTest, SearchesAgreeWithASortedSetWhateverOrderTheVersionsCameIn) {
  std::mt19937_64 rng(17);
  for (int round = 0; round < 60; ++round) {
    SCOPED_TRACE(round);
    Versions versions;
    VersionChain chain;
    std::set<std::string> model;
    const int size = static_cast<int>(rng() % 400) + 1;
    std::vector<int> order(size);
    for (int i = 0; i < size; ++i) order[i] = 2 * (i + 1);
    if (round % 3 == 0) std::reverse(order.begin(), order.end());  // each first: far links
    if (round % 3 == 1) std::shuffle(order.begin(), order.end(), rng);
    for (int n : order) {
      ASSERT_TRUE(chain.Add(versions.Make(Entry(n)), Entry(n), StringOrder{}));
      model.insert(Entry(n));
    }
    ASSERT_EQ(Forward(chain), std::vector<std::string>(model.begin(), model.end()));
    const StringOrder order_of;
    for (int target = 0; target <= 2 * size + 2; ++target) {
      const std::string key = Entry(target);
      auto lower = model.lower_bound(key);
      const Version* at = chain.FirstAtOrAfter(key, order_of);
      ASSERT_EQ(at == nullptr, lower == model.end()) << key;
      if (at != nullptr) ASSERT_EQ(std::string(at->Entry()), *lower) << key;
      auto upper = model.upper_bound(key);
      const Version* before = chain.LastAtOrBefore(key, order_of);
      ASSERT_EQ(before == nullptr, upper == model.begin()) << key;
      if (before != nullptr) ASSERT_EQ(std::string(before->Entry()), *std::prev(upper)) << key;
      if (at != nullptr) {
        const Version* step_back = chain.Before(at);
        ASSERT_EQ(step_back == nullptr, lower == model.begin()) << key;
        if (step_back != nullptr) ASSERT_EQ(std::string(step_back->Entry()), *std::prev(lower));
      }
    }
  }
}

TEST(VersionChainTest, VersionsAddedFromSeveralThreadsAtOnceAreHeldInOrderOnceWhileReadersWalk) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1500;
  Versions versions;
  VersionChain chain;
  std::atomic<bool> done{false};
  std::atomic<int> unordered{0};
  std::atomic<int> wrong_steps_back{0};
  std::atomic<int> wrong_searches{0};
  StartLine start(kThreads + 1);
  std::vector<std::thread> threads;
  // A reader walks forward, checks the order, and steps back from what it saw.
  threads.emplace_back([&] {
    start.Wait();
    for (int walk = 0; walk < 500 && (walk == 0 || !done.load()); ++walk) {
      const Version* previous = nullptr;
      for (const Version* v = chain.First(); v != nullptr; v = v->next.load()) {
        if (previous != nullptr) {
          if (std::strcmp(previous->Entry(), v->Entry()) >= 0) ++unordered;
          // A version added meanwhile between them is also right before `v`: then it is after
          // `previous`.
          const Version* before = chain.Before(v);
          if (before == nullptr || std::strcmp(before->Entry(), previous->Entry()) < 0) {
            ++wrong_steps_back;
          }
        }
        previous = v;
      }
      // Searches meanwhile (through the far links being set): at or after, at or before.
      for (int n = 0; n < 50; ++n) {
        const std::string key = Entry((walk * 7919 + n * 104729) % (kThreads * kPerThread + 10));
        const Version* at = chain.FirstAtOrAfter(key, StringOrder{});
        if (at != nullptr && key > at->Entry()) ++wrong_searches;
        const Version* before = chain.LastAtOrBefore(key, StringOrder{});
        if (before != nullptr && key < before->Entry()) ++wrong_searches;
      }
    }
  });
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread its own entries (every kThreads-th): half the threads add theirs each first
      // (RocksDB's order, which sets far links), half in a random order; the others' land
      // between them, before and after.
      std::vector<int> mine;
      for (int i = 0; i < kPerThread; ++i) mine.push_back(i * kThreads + t);
      if (t % 2 == 0) {
        std::reverse(mine.begin(), mine.end());
      } else {
        std::shuffle(mine.begin(), mine.end(), std::mt19937_64(t));
      }
      start.Wait();
      for (int n : mine) {
        EXPECT_TRUE(chain.Add(versions.Make(Entry(n)), Entry(n), StringOrder{}));
      }
    });
  }
  for (size_t i = 1; i < threads.size(); ++i) threads[i].join();
  done = true;
  threads[0].join();
  EXPECT_EQ(unordered.load(), 0);
  EXPECT_EQ(wrong_steps_back.load(), 0);
  EXPECT_EQ(wrong_searches.load(), 0);
  std::vector<std::string> expected;
  for (int n = 0; n < kThreads * kPerThread; ++n) expected.push_back(Entry(n));
  EXPECT_EQ(Forward(chain), expected);
  EXPECT_EQ(Backward(chain, expected.size()), expected);
}

/// StringOrder counting its comparisons.
struct CountingOrder {
  using Key = std::string_view;
  int operator()(const char* entry, std::string_view key) const {
    ++*count;
    return std::string_view(entry).compare(key);
  }
  int* count;
};

// A database's meta record gets a version at every commit, and a hot key one at every write:
// chains of many thousands, newest first. A search into one jumps along far links instead of
// walking it; one past its end (a seek past a user key's versions) looks at the last alone.
TEST(VersionChainTest, ASearchIntoALongChainTakesAFractionOfItsLength) {
  constexpr int kVersions = 20000;
  Versions versions;
  VersionChain chain;
  int count = 0;
  const CountingOrder order{&count};
  // Newest first, as RocksDB's sequence numbers make them: each new one comes first.
  for (int n = kVersions; n >= 1; --n) {
    ASSERT_TRUE(chain.Add(versions.Make(Entry(2 * n)), Entry(2 * n), order));
  }
  EXPECT_LE(count, kVersions) << "each version added first: one comparison";
  const std::vector<int> targets = {1, 2, 3, 9999, 10000, 10001, 23457, 39998, 39999, 40000};
  for (int target : targets) {
    SCOPED_TRACE(target);
    const int odd = target % 2;
    count = 0;
    const Version* at = chain.FirstAtOrAfter(Entry(target), order);
    ASSERT_NE(at, nullptr);
    EXPECT_EQ(std::string(at->Entry()), Entry(target + odd));
    EXPECT_LT(count, 600);
    count = 0;
    const Version* before = chain.LastAtOrBefore(Entry(target), order);
    if (target - odd < 2) {
      EXPECT_EQ(before, nullptr);
    } else {
      ASSERT_NE(before, nullptr);
      EXPECT_EQ(std::string(before->Entry()), Entry(target - odd));
    }
    EXPECT_LT(count, 600);
  }
  // Past either end: the first version, then the last, each compared once.
  count = 0;
  EXPECT_EQ(chain.FirstAtOrAfter(Entry(40001), order), nullptr);
  EXPECT_EQ(std::string(chain.LastAtOrBefore(Entry(40001), order)->Entry()), Entry(40000));
  EXPECT_EQ(chain.FirstAtOrAfter("000000", order), chain.First());
  EXPECT_EQ(chain.LastAtOrBefore("000000", order), nullptr);
  EXPECT_LE(count, 6);
  // An older version added in the middle finds its place the same way.
  count = 0;
  ASSERT_TRUE(chain.Add(versions.Make(Entry(23457)), Entry(23457), order));
  EXPECT_LT(count, 600);
  EXPECT_FALSE(chain.Add(versions.Make(Entry(23457)), Entry(23457), order));
  EXPECT_EQ(std::string(chain.Before(chain.FirstAtOrAfter(Entry(23458), order))->Entry()),
            Entry(23457));
}

struct Header {
  std::string key;
};
struct KeyOf {
  std::string_view operator()(const Header* header) const { return header->key; }
};
using Index = KeyIndex<Header, KeyOf>;

TEST(KeyIndexTest, FindsEveryKeyEnteredThroughCollidingHashesAndNoOther) {
  Index index(1024, KeyOf{});
  // Ten keys on one slot with one tag, ten more on the next slots with other tags.
  std::vector<Header> headers;
  for (int i = 0; i < 20; ++i) headers.push_back({"key-" + std::to_string(i)});
  auto hash = [](int i) {
    return i < 10 ? 0x1234000000000007ull : (static_cast<uint64_t>(i) << 48) | 8;
  };
  for (int i = 0; i < 20; ++i) index.Enter(&headers[i], headers[i].key, hash(i));
  for (int i = 0; i < 20; ++i) EXPECT_EQ(index.Find(headers[i].key, hash(i)), &headers[i]) << i;
  EXPECT_EQ(index.Find("key-20", hash(0)), nullptr);
  EXPECT_EQ(index.Find("key-3", hash(15)), nullptr);  // its key, another hash
  // Entering a key held again takes no other slot.
  index.Enter(&headers[4], headers[4].key, hash(4));
  EXPECT_EQ(index.entered(), 20u);
  EXPECT_FALSE(index.incomplete());
}

TEST(KeyIndexTest, AKeyThatFindsNoSlotMakesTheTableIncomplete) {
  {
    // 32 probes from one slot: a 33rd key on it finds none.
    Index index(1024, KeyOf{});
    std::vector<Header> headers;
    for (int i = 0; i <= Index::kMaxProbes; ++i) headers.push_back({std::to_string(i)});
    for (int i = 0; i < Index::kMaxProbes; ++i) index.Enter(&headers[i], headers[i].key, 5);
    EXPECT_FALSE(index.incomplete());
    index.Enter(&headers.back(), headers.back().key, 5);
    EXPECT_TRUE(index.incomplete());
    EXPECT_EQ(index.Find(headers.back().key, 5), nullptr);
    EXPECT_TRUE(index.MayHoldElsewhere(5));
    EXPECT_FALSE(index.MayHoldElsewhere(999));  // its filter holds the refused key's bits only
    EXPECT_EQ(index.Find(headers[0].key, 5), &headers[0]);
  }
  {
    // Half full.
    Index index(1024, KeyOf{});
    std::vector<Header> headers;
    for (int i = 0; i <= 512; ++i) headers.push_back({std::to_string(i)});
    for (int i = 0; i < 512; ++i) index.Enter(&headers[i], headers[i].key, uint64_t(i) * 977);
    EXPECT_FALSE(index.incomplete());
    EXPECT_EQ(index.entered(), 512u);
    index.Enter(&headers[512], headers[512].key, 512 * 977);
    EXPECT_TRUE(index.incomplete());
    EXPECT_EQ(index.Find(headers[512].key, 512 * 977), nullptr);
  }
}

// Once the table is full, a key it lacks is searched for elsewhere only if the filter of the keys
// it could not enter says so: yes for each of those, and for few others.
TEST(KeyIndexTest, OnlyKeysLikeThoseNotEnteredMayBeHeldElsewhere) {
  Index index(1024, KeyOf{});
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(index.MayHoldElsewhere(rng())) << "nothing refused";
  constexpr int kEntered = 512;  // half full: the limit
  constexpr int kRefused = 50;
  std::vector<Header> headers;
  std::vector<uint64_t> hashes;
  for (int i = 0; i < kEntered + kRefused; ++i) {
    headers.push_back({"key-" + std::to_string(i)});
    hashes.push_back(rng());
  }
  for (int i = 0; i < kEntered; ++i) index.Enter(&headers[i], headers[i].key, hashes[i]);
  EXPECT_FALSE(index.incomplete());
  for (int i = kEntered; i < kEntered + kRefused; ++i) {
    index.Enter(&headers[i], headers[i].key, hashes[i]);
    EXPECT_EQ(index.Find(headers[i].key, hashes[i]), nullptr) << i;
  }
  EXPECT_TRUE(index.incomplete());
  for (int i = kEntered; i < kEntered + kRefused; ++i) {
    EXPECT_TRUE(index.MayHoldElsewhere(hashes[i])) << i;
  }
  // 50 keys' two bits each among 4,096: about 6 in 10,000 other keys pass (one bit a key: ~240).
  int passed = 0;
  for (int i = 0; i < 10000; ++i) passed += index.MayHoldElsewhere(rng()) ? 1 : 0;
  EXPECT_LT(passed, 100);
}

// As in the memtable: a key's header is made by one thread and entered by it and by others that
// came upon it meanwhile; readers find keys by their bytes and read the header they find.
TEST(KeyIndexTest, ThreadsEnteringTheSameKeysAtOnceLeaveOneSlotEachWhileReadersFind) {
  constexpr int kKeys = 400;
  constexpr int kThreads = 4;
  Index index(1024, KeyOf{});
  auto key = [](int i) { return "k" + std::to_string(i); };
  // Few hashes, so that keys collide and probe past each other.
  auto hash = [](int i) { return (uint64_t(i % 7) << 48) | uint64_t(i % 50) * 20; };
  std::unique_ptr<std::atomic<Header*>[]> made(new std::atomic<Header*>[kKeys]());
  std::vector<std::vector<std::unique_ptr<Header>>> owned(kThreads);
  std::atomic<bool> done{false};
  std::atomic<int> wrong{0};
  StartLine start(kThreads + 1);
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    start.Wait();
    for (int round = 0; round < 200 && (round == 0 || !done.load()); ++round) {
      for (int i = 0; i < kKeys; ++i) {
        const std::string k = key(i);
        const Header* found = index.Find(k, hash(i));
        if (found != nullptr && found->key != k) ++wrong;
      }
    }
  });
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.Wait();
      for (int n = 0; n < kKeys; ++n) {
        const int i = (n * 7 + t * 13) % kKeys;
        Header* header = made[i].load(std::memory_order_acquire);
        if (header == nullptr && i % kThreads == t) {
          owned[t].push_back(std::make_unique<Header>(Header{key(i)}));
          header = owned[t].back().get();
          made[i].store(header, std::memory_order_release);
        }
        if (header != nullptr) index.Enter(header, header->key, hash(i));
      }
    });
  }
  for (size_t i = 1; i < threads.size(); ++i) threads[i].join();
  done = true;
  threads[0].join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_FALSE(index.incomplete());
  EXPECT_EQ(index.entered(), static_cast<size_t>(kKeys));
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ(index.Find(key(i), hash(i)), made[i].load()) << i;
}

// Threads entering more keys than the table takes: every key whose Enter returned is found, or
// may be held elsewhere, also for readers meanwhile (the filter's bits are set before Enter
// returns, and the first refused key's filter is made once among the threads).
TEST(KeyIndexTest, EveryKeyEnteredIsFoundOrMayBeHeldElsewhereWhileThreadsOverfillTheTable) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 560;  // 2,240 keys for 2,048 (half of 4,096 slots): ~190 refused,
                                   // whose filter passes ~0.1% of other keys
  Index index(4096, KeyOf{});
  auto hash = [](int t, int i) { return (uint64_t(t) << 56) ^ (uint64_t(i) * 0x9e3779b97f4a7c15); };
  std::vector<std::vector<Header>> headers(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      headers[t].push_back({std::to_string(t) + "/" + std::to_string(i)});
    }
  }
  std::atomic<int> entered[kThreads] = {};
  std::atomic<int> writers_done{0};
  std::atomic<int> lost{0};
  StartLine start(kThreads + 1);
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    start.Wait();
    std::mt19937_64 rng(11);
    for (int n = 0; n < 200000 && writers_done.load() < kThreads; ++n) {
      const int t = static_cast<int>(rng() % kThreads);
      const int upto = entered[t].load(std::memory_order_acquire);
      if (upto == 0) continue;
      const int i = static_cast<int>(rng() % upto);
      if (index.Find(headers[t][i].key, hash(t, i)) == nullptr &&
          !index.MayHoldElsewhere(hash(t, i))) {
        ++lost;
      }
    }
  });
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.Wait();
      for (int i = 0; i < kPerThread; ++i) {
        index.Enter(&headers[t][i], headers[t][i].key, hash(t, i));
        entered[t].store(i + 1, std::memory_order_release);
      }
      ++writers_done;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(lost.load(), 0);
  EXPECT_TRUE(index.incomplete());
  // The limit is read before each slot is taken: threads at it at once may each take one more.
  EXPECT_GE(index.entered(), 2048u);
  EXPECT_LT(index.entered(), 2048u + kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      EXPECT_TRUE(index.Find(headers[t][i].key, hash(t, i)) != nullptr ||
                  index.MayHoldElsewhere(hash(t, i)))
          << t << "/" << i;
    }
  }
}

// Pages of `memory` the kernel holds (mincore), out of all of them.
size_t ResidentPages(const MappedMemory& memory) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> held((memory.bytes() + page - 1) / page);
  if (mincore(memory.data(), memory.bytes(), held.data()) != 0) return 0;
  return static_cast<size_t>(
      std::count_if(held.begin(), held.end(), [](unsigned char h) { return (h & 1) != 0; }));
}

// A memtable's key table is read before it is written, so pages faulted in as the inserts touch
// them fault twice. A store's first two tables do fault lazily (an idle store keeps no spare);
// from the third on, each comes with every page in (mapped meanwhile as the spare), each its own
// zeroed memory. (At least 90% resident: a populated mapping may lose a page to reclaim before
// it is looked at; a lazy one has none until touched.)
TEST(SpareSlotsTest, FromTheThirdOnEveryTableComesZeroedWithItsPagesInAndEachItsOwn) {
  constexpr size_t kBytes = 1u << 20;
  const size_t pages = kBytes / static_cast<size_t>(sysconf(_SC_PAGESIZE));
  SpareSlots spares(kBytes);
  EXPECT_EQ(spares.held(), 0u);
  std::vector<MappedMemory> taken;
  for (int i = 0; i < 4; ++i) {
    taken.push_back(spares.Take());
    // From the second table on, one is kept ready beyond those taken.
    EXPECT_EQ(spares.held(), i == 0 ? 0u : kBytes) << i;
    const MappedMemory& memory = taken.back();
    ASSERT_NE(memory.data(), nullptr) << i;
    ASSERT_EQ(memory.bytes(), kBytes) << i;
    const size_t resident = ResidentPages(memory);
    if (i < 2) {
      EXPECT_EQ(resident, 0u) << "table " << i;
    } else {
      EXPECT_GE(resident * 10, pages * 9) << "table " << i;
    }
    const auto* bytes = static_cast<const unsigned char*>(memory.data());
    EXPECT_TRUE(std::all_of(bytes, bytes + kBytes, [](unsigned char b) { return b == 0; })) << i;
    std::memset(memory.data(), 0xff, kBytes);  // written like a table in use
  }
  for (size_t i = 1; i < taken.size(); ++i) EXPECT_NE(taken[i - 1].data(), taken[i].data()) << i;
  // A table made with its memory slots through it; one made without any is incomplete.
  Index index(kBytes / sizeof(uintptr_t), KeyOf{}, MappedMemory::Map(kBytes, MappedMemory::kLazy));
  EXPECT_EQ(index.bytes(), kBytes);
  EXPECT_FALSE(index.incomplete());
  Index without(kBytes / sizeof(uintptr_t), KeyOf{}, MappedMemory());
  EXPECT_EQ(without.bytes(), 0u);
  EXPECT_TRUE(without.incomplete());
  EXPECT_TRUE(without.MayHoldElsewhere(1));
  Header header{"key"};
  without.Enter(&header, header.key, 1);
  EXPECT_EQ(without.Find(header.key, 1), nullptr);
  EXPECT_TRUE(without.MayHoldElsewhere(1));
}

}  // namespace
}  // namespace kvmesh::storage
