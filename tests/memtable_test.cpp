// kvmesh's memtable (storage/memtable.hpp) against a model and against RocksDB's own skip list:
// - It holds what was written: gets, scans both ways and seeks agree with a std::map after
//   random batches of puts, overwrites and deletes, and with writers and readers on several
//   threads at once (RocksDB's concurrent memtable inserts).
// - It compares a fraction of the keys the packaged skip list compares (in the layout
//   DatabaseStore::Stage writes): Debian's librocksdb (7.8.3) is built with assertions on, and
//   its skip list compares the new key with its whole search path after every insert, so an
//   insert cost O(log n) comparisons even where its insert hints had found the place in O(1).
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "storage/keys.hpp"
#include "storage/memtable.hpp"
#include "storage/rocks_options.hpp"
#include "test_util.hpp"

namespace kvmesh::storage {
namespace {

using kvmesh::testing::TempDir;

std::string DataKey(uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "/k/%08llu", static_cast<unsigned long long>(n));
  return keys::DataPrefix(7) + buf;
}

struct Comparisons {
  double append = 0;     // per memtable entry, the worst batch of new keys
  double overwrite = 0;  // per memtable entry, the worst batch overwriting them
  double random = 0;     // per memtable entry, batches of 25 random keys among them
};

// Writes 20 batches of 1000 ascending new keys, then 20 overwriting them, as Stage lays a batch
// out: the records, the dot index entries the overwritten records leave, the new ones, the meta
// record; then 400 batches of 25 sorted random keys among them (a group of puts to one
// database). Counts RocksDB's key comparisons (its perf context, this thread: the memtable
// inserts; the batches read nothing). kvmesh's memtable compares versions with RocksDB's
// comparator (counted) and its key nodes by their bytes (not counted: the skip list of keys, the
// key table, the look next door).
Comparisons Measure(rocksdb::Options options) {
  TempDir dir;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir / "rocks", &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::unique_ptr<rocksdb::DB> db(raw);
  if (db == nullptr) return {};
  constexpr uint64_t kKeys = 20000;
  constexpr uint64_t kBatch = 1000;
  const std::string value(120, 'v');
  Comparisons out;
  uint64_t counter = 0;
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  for (int pass = 0; pass < 2; ++pass) {
    for (uint64_t first = 0; first < kKeys; first += kBatch) {
      rocksdb::WriteBatch batch;
      for (uint64_t n = first; n < first + kBatch; ++n) batch.Put(DataKey(n), value);
      if (pass == 1) {
        for (uint64_t n = first; n < first + kBatch; ++n) {
          batch.Delete(keys::DotIndexKey(7, 1, n + 1));  // the first pass's dots
        }
      }
      for (uint64_t n = first; n < first + kBatch; ++n) {
        batch.Put(keys::DotIndexKey(7, 1, ++counter), DataKey(n));
      }
      batch.Put(keys::DatabaseMetaKey(7), "meta");
      rocksdb::get_perf_context()->Reset();
      s = db->Write(rocksdb::WriteOptions(), &batch);
      EXPECT_TRUE(s.ok()) << s.ToString();
      const double per_entry =
          static_cast<double>(rocksdb::get_perf_context()->user_key_comparison_count) /
          batch.Count();
      double& worst = pass == 0 ? out.append : out.overwrite;
      worst = std::max(worst, per_entry);
    }
  }
  std::mt19937_64 rng(5);
  uint64_t comparisons = 0;
  uint64_t entries = 0;
  for (int b = 0; b < 400; ++b) {
    std::vector<uint64_t> picked(25);
    for (uint64_t& n : picked) n = rng() % kKeys;
    std::sort(picked.begin(), picked.end());
    rocksdb::WriteBatch batch;
    for (uint64_t n : picked) batch.Put(DataKey(n), value);
    rocksdb::get_perf_context()->Reset();
    s = db->Write(rocksdb::WriteOptions(), &batch);
    EXPECT_TRUE(s.ok()) << s.ToString();
    comparisons += rocksdb::get_perf_context()->user_key_comparison_count;
    entries += batch.Count();
  }
  out.random = static_cast<double>(comparisons) / static_cast<double>(entries);
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  return out;
}

// A RocksDB with the Store's options whose memtable is never flushed here: every read below
// reads the memtable alone.
// `small_index`: the memtable's key index is sized for a write buffer of 0 bytes (1024 slots,
// 512 keys), so that past that many keys the memtable finds the others in its skip list.
struct MemtableDb {
  explicit MemtableDb(bool concurrent = true, bool small_index = false) {
    rocksdb::Options options = RocksOptions(StoreOptions{});
    options.write_buffer_size = 256u << 20;
    options.allow_concurrent_memtable_write = concurrent;
    if (small_index)
      options.memtable_factory = NewMemTableFactory(0, rocksdb::BytewiseComparator());
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status s = rocksdb::DB::Open(options, dir / "rocks", &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    db.reset(raw);
  }
  TempDir dir;
  std::unique_ptr<rocksdb::DB> db;
};

std::string ModelKey(std::mt19937_64& rng, uint64_t keys) {
  // Varied lengths and shared prefixes: "k/17", "k/17/3", "k/170".
  const uint64_t n = rng() % keys;
  std::string key = "k/" + std::to_string(n);
  if (n % 3 == 0) key += "/" + std::to_string(n % 7);
  return key;
}

// Every way to read the memtable against the model: gets, a forward and a backward scan, and
// seeks (Seek, SeekForPrev) to present and absent keys.
void ExpectHolds(rocksdb::DB& db, const std::map<std::string, std::string>& model,
                 std::mt19937_64& rng, uint64_t keys) {
  for (int i = 0; i < 300; ++i) {
    const std::string key = ModelKey(rng, keys);
    std::string value;
    const rocksdb::Status s = db.Get(rocksdb::ReadOptions(), key, &value);
    auto it = model.find(key);
    if (it == model.end()) {
      EXPECT_TRUE(s.IsNotFound()) << key << ": " << s.ToString();
    } else {
      ASSERT_TRUE(s.ok()) << key << ": " << s.ToString();
      EXPECT_EQ(value, it->second) << key;
    }
  }
  std::unique_ptr<rocksdb::Iterator> iter(db.NewIterator(rocksdb::ReadOptions()));
  auto expected = model.begin();
  for (iter->SeekToFirst(); iter->Valid(); iter->Next(), ++expected) {
    ASSERT_NE(expected, model.end()) << "more keys than written: " << iter->key().ToString();
    ASSERT_EQ(iter->key().ToString(), expected->first);
    ASSERT_EQ(iter->value().ToString(), expected->second);
  }
  EXPECT_EQ(expected, model.end()) << "missing from the scan: " << expected->first;
  auto back = model.rbegin();
  for (iter->SeekToLast(); iter->Valid(); iter->Prev(), ++back) {
    ASSERT_NE(back, model.rend());
    ASSERT_EQ(iter->key().ToString(), back->first);
  }
  EXPECT_EQ(back, model.rend());
  for (int i = 0; i < 200; ++i) {
    const std::string target = ModelKey(rng, keys + keys / 2) + (i % 2 ? "" : "~");
    iter->Seek(target);
    auto lower = model.lower_bound(target);
    ASSERT_EQ(iter->Valid(), lower != model.end()) << target;
    if (lower != model.end()) ASSERT_EQ(iter->key().ToString(), lower->first) << target;
    iter->SeekForPrev(target);
    auto upper = model.upper_bound(target);
    ASSERT_EQ(iter->Valid(), upper != model.begin()) << target;
    if (upper != model.begin()) ASSERT_EQ(iter->key().ToString(), std::prev(upper)->first);
  }
  ASSERT_TRUE(iter->status().ok()) << iter->status().ToString();
}

TEST(MemtableTest, HoldsWhatRandomBatchesOfPutsOverwritesAndDeletesLeave) {
  for (int kind = 0; kind < 3; ++kind) {
    const bool concurrent = kind != 1;
    const bool small_index = kind == 2;
    SCOPED_TRACE(concurrent ? "concurrent memtable writes allowed" : "one writer");
    SCOPED_TRACE(small_index ? "a key index that holds 512 of the 3000 keys" : "a key index");
    MemtableDb db(concurrent, small_index);
    ASSERT_NE(db.db, nullptr);
    std::map<std::string, std::string> model;
    std::mt19937_64 rng(7 + kind);
    constexpr uint64_t kKeys = 3000;
    for (int round = 0; round < 6; ++round) {
      for (int b = 0; b < 200; ++b) {
        rocksdb::WriteBatch batch;
        // Sorted runs (as Stage writes them), runs going down, and single writes.
        const int size = b % 3 == 0 ? 1 : static_cast<int>(rng() % 40) + 2;
        const uint64_t start = rng() % kKeys;
        for (int i = 0; i < size; ++i) {
          const uint64_t n = b % 3 == 1 ? (start + i) % kKeys : b % 3 == 2 ? start + kKeys - i : 0;
          const std::string key = b % 3 == 0 ? ModelKey(rng, kKeys) : "k/" + std::to_string(n);
          if (rng() % 5 == 0) {
            batch.Delete(key);
            model.erase(key);
          } else {
            const std::string value = std::to_string(round) + ":" + std::to_string(rng() % 1000);
            batch.Put(key, value);
            model[key] = value;
          }
        }
        ASSERT_TRUE(db.db->Write(rocksdb::WriteOptions(), &batch).ok());
      }
      ExpectHolds(*db.db, model, rng, kKeys);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(MemtableTest, WritersOnSeveralThreadsAndReadersMeanwhileSeeEveryKeyInOrder) {
  MemtableDb db;
  ASSERT_NE(db.db, nullptr);
  // Each writer writes its own keys, interleaved with the others' in key order, in batches that
  // RocksDB's write groups insert concurrently; readers scan meanwhile.
  constexpr int kWriters = 4;
  constexpr int kPerWriter = 20000;
  std::atomic<bool> done{false};
  std::atomic<int> unordered{0};
  std::atomic<int> scans{0};
  auto key = [](int writer, int i) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "w/%06d/%d", (i * 7919) % kPerWriter, writer);
    return std::string(buf);
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      // Bounded: stops when the writers are done, or after 2000 scans.
      for (int n = 0; n < 2000 && (n == 0 || !done.load()); ++n) {
        std::unique_ptr<rocksdb::Iterator> iter(db.db->NewIterator(rocksdb::ReadOptions()));
        std::string last;
        for (iter->SeekToFirst(); iter->Valid(); iter->Next()) {
          if (!last.empty() && iter->key().ToString() <= last) ++unordered;
          last = iter->key().ToString();
        }
        ++scans;
      }
    });
  }
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kPerWriter; i += 10) {
        rocksdb::WriteBatch batch;
        for (int j = i; j < i + 10; ++j) batch.Put(key(w, j), std::to_string(j));
        EXPECT_TRUE(db.db->Write(rocksdb::WriteOptions(), &batch).ok());
      }
    });
  }
  for (size_t t = 2; t < threads.size(); ++t) threads[t].join();
  done = true;
  threads[0].join();
  threads[1].join();
  EXPECT_EQ(unordered.load(), 0);
  EXPECT_GT(scans.load(), 0);
  std::unique_ptr<rocksdb::Iterator> iter(db.db->NewIterator(rocksdb::ReadOptions()));
  int count = 0;
  std::string last;
  for (iter->SeekToFirst(); iter->Valid(); iter->Next(), ++count) {
    ASSERT_LT(last, iter->key().ToString());
    last = iter->key().ToString();
  }
  EXPECT_EQ(count, kWriters * kPerWriter);
  for (int w = 0; w < kWriters; ++w) {
    for (int i = 0; i < kPerWriter; i += 997) {
      std::string value;
      ASSERT_TRUE(db.db->Get(rocksdb::ReadOptions(), key(w, i), &value).ok()) << key(w, i);
      EXPECT_EQ(value, std::to_string(i));
    }
  }
}

// A user key's versions are a chain under its one header, each linked at its place by sequence
// number: writers of the same keys at once (RocksDB's concurrent memtable inserts, which may
// insert an older version after a newer one) race to add the same new keys' headers and to link
// versions side by side. Every key must come out once, with its newest version on top: the last
// round's write of one of the writers, the same by Get, by a scan and after a flush.
TEST(MemtableTest, WritersOfTheSameKeysAtOnceLeaveOneKeyEachWithItsNewestVersionOnTop) {
  for (bool small_index : {false, true}) {
    SCOPED_TRACE(small_index ? "a key index that holds 512 of the keys" : "a key index");
    MemtableDb db(/*concurrent=*/true, small_index);
    ASSERT_NE(db.db, nullptr);
    constexpr int kWriters = 8;
    constexpr int kKeys = 3000;
    constexpr int kRounds = 4;
    auto key = [](int n) { return "s/" + std::to_string(n); };
    std::vector<std::thread> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back([&, w] {
        for (int round = 0; round < kRounds; ++round) {
          for (int first = 0; first < kKeys; first += 5) {
            rocksdb::WriteBatch batch;
            for (int n = first; n < first + 5; ++n) {
              batch.Put(key(n), std::to_string(round) + "/" + std::to_string(w));
            }
            EXPECT_TRUE(db.db->Write(rocksdb::WriteOptions(), &batch).ok());
          }
        }
      });
    }
    for (auto& t : writers) t.join();
    std::map<std::string, std::string> got;
    for (int n = 0; n < kKeys; ++n) {
      std::string value;
      ASSERT_TRUE(db.db->Get(rocksdb::ReadOptions(), key(n), &value).ok()) << key(n);
      EXPECT_EQ(value.substr(0, 2), std::to_string(kRounds - 1) + "/")
          << key(n) << ": an older version than the last round's is on top";
      got[key(n)] = value;
    }
    std::unique_ptr<rocksdb::Iterator> iter(db.db->NewIterator(rocksdb::ReadOptions()));
    auto expected = got.begin();
    for (iter->SeekToFirst(); iter->Valid(); iter->Next(), ++expected) {
      ASSERT_NE(expected, got.end()) << "more keys than written: " << iter->key().ToString();
      ASSERT_EQ(iter->key().ToString(), expected->first);
      EXPECT_EQ(iter->value().ToString(), expected->second) << expected->first;
    }
    EXPECT_EQ(expected, got.end());
    ASSERT_TRUE(db.db->Flush(rocksdb::FlushOptions()).ok());
    for (const auto& [k, v] : got) {
      std::string value;
      ASSERT_TRUE(db.db->Get(rocksdb::ReadOptions(), k, &value).ok()) << k;
      EXPECT_EQ(value, v) << k << " after the flush";
    }
  }
}

// Everything a reader of a memtable sees, at a snapshot (or none): scans both ways, seeks both
// ways with a step each way after them, and gets, as one string to compare.
std::string Everything(rocksdb::DB& db, const rocksdb::Snapshot* snapshot, uint64_t keys,
                       std::mt19937_64 rng) {
  rocksdb::ReadOptions read;
  read.snapshot = snapshot;
  std::string out;
  std::unique_ptr<rocksdb::Iterator> it(db.NewIterator(read));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    out += it->key().ToString() + "=" + it->value().ToString() + ",";
  }
  out += "|";
  for (it->SeekToLast(); it->Valid(); it->Prev()) out += it->key().ToString() + ",";
  auto at = [&] { return it->Valid() ? it->key().ToString() + "=" + it->value().ToString() : "-"; };
  for (int i = 0; i < 60; ++i) {
    const std::string target = "k" + std::to_string(rng() % (keys + 2)) + (i % 3 ? "" : "~");
    it->Seek(target);
    out += " S" + target + ":" + at();
    if (it->Valid()) {
      it->Prev();
      out += "<" + at();
    }
    it->SeekForPrev(target);
    out += " P" + target + ":" + at();
    if (it->Valid()) {
      it->Next();
      out += ">" + at();
    }
    std::string value;
    const rocksdb::Status s = db.Get(read, target, &value);
    out += " G" + (s.ok() ? value : s.ToString());
  }
  return out;
}

// A differential test: the same writes to kvmesh's memtable and to RocksDB's skip list, and every
// reader at every snapshot taken meanwhile sees the same in both. Hot keys get thousands of
// versions (the chains' long case); deletes and single deletes come in between; one variant has
// a key table too small for the keys.
TEST(MemtableTest, ReadersAtEverySnapshotSeeWhatRocksDBsSkipListShows) {
  for (bool small_index : {false, true}) {
    SCOPED_TRACE(small_index ? "a key index that holds 512 of the keys" : "a key index");
    TempDir dir;
    auto open = [&](bool ours) {
      rocksdb::Options options = RocksOptions(StoreOptions{});
      options.write_buffer_size = 256u << 20;
      // Re-seeks after 3 versions skipped (RocksDB's default: 8), through the chains' searches.
      options.max_sequential_skip_in_iterations = 3;
      if (!ours) {
        options.memtable_factory = std::make_shared<rocksdb::SkipListFactory>();
      } else if (small_index) {
        options.memtable_factory = NewMemTableFactory(0, rocksdb::BytewiseComparator());
      }
      rocksdb::DB* raw = nullptr;
      const rocksdb::Status s = rocksdb::DB::Open(options, dir / (ours ? "ours" : "rocks"), &raw);
      EXPECT_TRUE(s.ok()) << s.ToString();
      return std::unique_ptr<rocksdb::DB>(raw);
    };
    auto ours = open(true);
    auto rocks = open(false);
    ASSERT_NE(ours, nullptr);
    ASSERT_NE(rocks, nullptr);
    constexpr uint64_t kKeys = 1200;
    std::mt19937_64 rng(small_index ? 12 : 11);
    std::vector<std::pair<const rocksdb::Snapshot*, const rocksdb::Snapshot*>> snapshots;
    for (int i = 0; i < 30000; ++i) {
      // Most writes go to 4 hot keys.
      const std::string key = "k" + std::to_string(i % 4 != 0 ? rng() % 4 : rng() % kKeys);
      const std::string value = std::to_string(i);
      const uint64_t kind = rng() % 10;
      for (rocksdb::DB* db : {ours.get(), rocks.get()}) {
        const rocksdb::Status s = kind == 0   ? db->Delete(rocksdb::WriteOptions(), key)
                                  : kind == 1 ? db->SingleDelete(rocksdb::WriteOptions(), key)
                                              : db->Put(rocksdb::WriteOptions(), key, value);
        ASSERT_TRUE(s.ok()) << s.ToString();
      }
      if (i % 3000 == 2999) snapshots.emplace_back(ours->GetSnapshot(), rocks->GetSnapshot());
    }
    snapshots.emplace_back(nullptr, nullptr);
    for (size_t n = 0; n < snapshots.size(); ++n) {
      SCOPED_TRACE("snapshot " + std::to_string(n));
      const std::string seen = Everything(*ours, snapshots[n].first, kKeys, std::mt19937_64(n));
      const std::string expected =
          Everything(*rocks, snapshots[n].second, kKeys, std::mt19937_64(n));
      ASSERT_EQ(seen.size(), expected.size());
      EXPECT_TRUE(seen == expected)
          << "first difference at byte "
          << std::mismatch(seen.begin(), seen.end(), expected.begin()).first - seen.begin();
    }
    for (const auto& [a, b] : snapshots) {
      if (a != nullptr) ours->ReleaseSnapshot(a);
      if (b != nullptr) rocks->ReleaseSnapshot(b);
    }
  }
}

// A scan past a key with many versions in the memtable re-seeks past them (after
// max_sequential_skip_in_iterations), and a read at an old snapshot seeks into them: both take a
// fraction of the versions' count in comparisons, not all of them.
TEST(MemtableTest, AScanPastAndAReadIntoAKeyWithManyVersionsCompareAFewOfThem) {
  MemtableDb db;
  ASSERT_NE(db.db, nullptr);
  constexpr int kVersions = 20000;
  ASSERT_TRUE(db.db->Put(rocksdb::WriteOptions(), "a", "first").ok());
  ASSERT_TRUE(db.db->Put(rocksdb::WriteOptions(), "z", "last").ok());
  const rocksdb::Snapshot* old = nullptr;
  for (int i = 0; i < kVersions; ++i) {
    ASSERT_TRUE(db.db->Put(rocksdb::WriteOptions(), "hot", std::to_string(i)).ok());
    if (i == kVersions / 2) old = db.db->GetSnapshot();
  }
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  rocksdb::get_perf_context()->Reset();
  std::unique_ptr<rocksdb::Iterator> it(db.db->NewIterator(rocksdb::ReadOptions()));
  std::string scan;
  for (it->SeekToFirst(); it->Valid(); it->Next()) scan += it->value().ToString() + ",";
  const uint64_t scan_comparisons = rocksdb::get_perf_context()->user_key_comparison_count;
  rocksdb::get_perf_context()->Reset();
  for (it->SeekToLast(); it->Valid(); it->Prev()) {
  }
  const uint64_t back_comparisons = rocksdb::get_perf_context()->user_key_comparison_count;
  rocksdb::get_perf_context()->Reset();
  rocksdb::ReadOptions at_old;
  at_old.snapshot = old;
  std::string value;
  ASSERT_TRUE(db.db->Get(at_old, "hot", &value).ok());
  const uint64_t get_comparisons = rocksdb::get_perf_context()->user_key_comparison_count;
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  db.db->ReleaseSnapshot(old);
  EXPECT_EQ(scan, "first," + std::to_string(kVersions - 1) + ",last,");
  EXPECT_EQ(value, std::to_string(kVersions / 2));
  std::printf("comparisons past %d versions: scan %llu, backwards %llu, get at a snapshot %llu\n",
              kVersions, static_cast<unsigned long long>(scan_comparisons),
              static_cast<unsigned long long>(back_comparisons),
              static_cast<unsigned long long>(get_comparisons));
  // A seek past the versions looks at the last alone; one into them jumps (~20000 / 64 + 128).
  EXPECT_LT(scan_comparisons, 100u);
  EXPECT_LT(back_comparisons, 100u);
  EXPECT_LT(get_comparisons, 1000u);
}

// While the key table fills up (and past it, small_index), a reader finds every key whose write
// has returned.
TEST(MemtableTest, EveryKeyWrittenIsFoundWhileTheKeyTableFills) {
  for (bool small_index : {false, true}) {
    SCOPED_TRACE(small_index ? "a key index that holds 512 of the keys" : "a key index");
    MemtableDb db(/*concurrent=*/true, small_index);
    ASSERT_NE(db.db, nullptr);
    constexpr int kWriters = 2;
    constexpr int kPerWriter = 3000;
    auto key = [](int writer, int i) {
      return "f/" + std::to_string(i) + "/" + std::to_string(writer);
    };
    std::atomic<int> written[kWriters] = {};
    std::atomic<int> writers_done{0};
    std::atomic<int> missing{0};
    std::vector<std::thread> threads;
    threads.emplace_back([&] {
      std::mt19937_64 rng(3);
      // Bounded: 200000 gets at most.
      for (int n = 0; n < 200000 && writers_done.load() < kWriters; ++n) {
        const int w = static_cast<int>(rng() % kWriters);
        const int upto = written[w].load(std::memory_order_acquire);
        if (upto == 0) continue;
        const int i = static_cast<int>(rng() % upto);
        std::string value;
        if (!db.db->Get(rocksdb::ReadOptions(), key(w, i), &value).ok()) ++missing;
      }
    });
    for (int w = 0; w < kWriters; ++w) {
      threads.emplace_back([&, w] {
        for (int i = 0; i < kPerWriter; ++i) {
          EXPECT_TRUE(db.db->Put(rocksdb::WriteOptions(), key(w, i), "v").ok());
          written[w].store(i + 1, std::memory_order_release);
        }
        ++writers_done;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(missing.load(), 0);
    for (int w = 0; w < kWriters; ++w) {
      for (int i = 0; i < kPerWriter; ++i) {
        std::string value;
        ASSERT_TRUE(db.db->Get(rocksdb::ReadOptions(), key(w, i), &value).ok()) << key(w, i);
      }
    }
  }
}

// Sorted batches (inserts made alone) look next door before the key table: a key twice in a
// batch, the next key held, a new key between two held, keys past the last, and a run going down.
TEST(MemtableTest, SortedRunsFindTheirKeysNextDoorAndNewOnesBetween) {
  for (bool small_index : {false, true}) {
    SCOPED_TRACE(small_index ? "a key index that holds 512 of the keys" : "a key index");
    MemtableDb db(/*concurrent=*/false, small_index);
    ASSERT_NE(db.db, nullptr);
    std::map<std::string, std::string> model;
    auto write = [&](const std::vector<std::string>& keys, const std::string& value) {
      rocksdb::WriteBatch batch;
      for (const auto& key : keys) {
        batch.Put(key, value + key);
        model[key] = value + key;
      }
      ASSERT_TRUE(db.db->Write(rocksdb::WriteOptions(), &batch).ok());
    };
    std::vector<std::string> odd, all, down, past;
    for (int i = 1; i < 1600; i += 2) odd.push_back("r/" + std::to_string(10000 + i));
    for (int i = 0; i < 1600; ++i) all.push_back("r/" + std::to_string(10000 + i));
    for (int i = 1599; i >= 0; i -= 3) down.push_back("r/" + std::to_string(10000 + i));
    for (int i = 1600; i < 1700; ++i) past.push_back("r/" + std::to_string(10000 + i));
    write(odd, "1:");  // new keys in a sorted run
    write(all, "2:");  // held and new in turn, each next door
    write({"r/10005", "r/10005", "r/10006", "r/10006", "r/10008"}, "3:");  // twice in a row
    write(down, "4:");
    write(past, "5:");
    write(all, "6:");
    std::mt19937_64 rng(1);
    std::unique_ptr<rocksdb::Iterator> iter(db.db->NewIterator(rocksdb::ReadOptions()));
    auto expected = model.begin();
    for (iter->SeekToFirst(); iter->Valid(); iter->Next(), ++expected) {
      ASSERT_NE(expected, model.end()) << iter->key().ToString();
      ASSERT_EQ(iter->key().ToString(), expected->first);
      ASSERT_EQ(iter->value().ToString(), expected->second);
    }
    EXPECT_EQ(expected, model.end());
    for (const auto& [key, value] : model) {
      std::string got;
      ASSERT_TRUE(db.db->Get(rocksdb::ReadOptions(), key, &got).ok()) << key;
      ASSERT_EQ(got, value) << key;
    }
  }
}

// The key table and the look next door find keys by their bytes; any other order gets RocksDB's
// own skip list.
TEST(MemtableTest, AComparatorOtherThanBytewiseGetsRocksDBsSkipList) {
  EXPECT_STREQ(NewMemTableFactory(64u << 20, rocksdb::BytewiseComparator())->Name(),
               "KvmeshSkipList");
  EXPECT_STREQ(NewMemTableFactory(64u << 20, rocksdb::ReverseBytewiseComparator())->Name(),
               rocksdb::SkipListFactory().Name());
}

// The key table kept ready for the next memtable is memory RocksDB does not count: none while the
// first memtable fills, one table's once a second was made (what the node's metrics show).
TEST(MemtableTest, TheSpareKeyTableIsCountedOnceASecondMemtableWasMade) {
  TempDir dir;
  rocksdb::Options options = RocksOptions(StoreOptions{});
  options.write_buffer_size = 1u << 20;
  options.memtable_factory =
      NewMemTableFactory(options.write_buffer_size, rocksdb::BytewiseComparator());
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, dir / "rocks", &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  EXPECT_EQ(SpareKeyTableBytes(*options.memtable_factory), 0u);
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "k", "v").ok());
  ASSERT_TRUE(db->Flush(rocksdb::FlushOptions()).ok());
  // 16,384 slots of 8 bytes: a slot per 64 bytes of a 1 MiB write buffer.
  EXPECT_EQ(SpareKeyTableBytes(*options.memtable_factory), size_t{16384 * 8});
  rocksdb::SkipListFactory packaged;
  EXPECT_EQ(SpareKeyTableBytes(packaged), 0u);
}

TEST(MemtableTest, LongKeysAnEmptyMemtableAndReopeningReadBackWhatWasWritten) {
  TempDir dir;
  const rocksdb::Options options = RocksOptions(StoreOptions{});
  auto open = [&] {
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status s = rocksdb::DB::Open(options, dir / "rocks", &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return std::unique_ptr<rocksdb::DB>(raw);
  };
  std::unique_ptr<rocksdb::DB> db = open();
  ASSERT_NE(db, nullptr);
  {
    std::string value;
    EXPECT_TRUE(db->Get(rocksdb::ReadOptions(), "x", &value).IsNotFound());
    std::unique_ptr<rocksdb::Iterator> iter(db->NewIterator(rocksdb::ReadOptions()));
    iter->SeekToFirst();
    EXPECT_FALSE(iter->Valid());
    iter->SeekToLast();
    EXPECT_FALSE(iter->Valid());
    iter->SeekForPrev("x");
    EXPECT_FALSE(iter->Valid());
    iter->Seek("x");
    EXPECT_FALSE(iter->Valid());
  }
  // Keys around and past the 200 bytes a lookup key holds inline (it allocates beyond them).
  std::map<std::string, std::string> model;
  std::mt19937_64 rng(1);
  for (int i = 0; i < 2000; ++i) {
    const size_t length = i % 4 == 0   ? 190 + rng() % 30
                          : i % 4 == 1 ? 300 + rng() % 5000
                                       : 1 + rng() % 20;
    const std::string key =
        std::string(length, static_cast<char>('a' + rng() % 3)) + std::to_string(i);
    const std::string value(rng() % 300, 'v');
    model[key] = value;
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, value).ok());
  }
  auto check = [&](rocksdb::DB& d) {
    for (const auto& [key, value] : model) {
      std::string got;
      ASSERT_TRUE(d.Get(rocksdb::ReadOptions(), key, &got).ok()) << key.size();
      ASSERT_EQ(got, value);
    }
    std::unique_ptr<rocksdb::Iterator> iter(d.NewIterator(rocksdb::ReadOptions()));
    iter->SeekToFirst();
    ASSERT_TRUE(iter->Valid());
    ASSERT_EQ(iter->key().ToString(), model.begin()->first);
    iter->Prev();
    EXPECT_FALSE(iter->Valid());
    auto back = model.rbegin();
    for (iter->SeekToLast(); iter->Valid(); iter->Prev(), ++back) {
      ASSERT_EQ(iter->key().ToString(), back->first);
    }
    EXPECT_EQ(back, model.rend());
    for (const auto& [key, value] : model) {
      iter->SeekForPrev(key + "\x01");
      ASSERT_TRUE(iter->Valid());
      ASSERT_EQ(iter->key().ToString(), key);
    }
  };
  check(*db);
  // The log replayed into a new memtable (inserts made alone), then flushed.
  db.reset();
  db = open();
  ASSERT_NE(db, nullptr);
  check(*db);
  for (int i = 0; i < 500; ++i) {
    const std::string key = "z" + std::string(250, 'q') + std::to_string(i);
    model[key] = "r";
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, "r").ok());
  }
  check(*db);
  ASSERT_TRUE(db->Flush(rocksdb::FlushOptions()).ok());
  check(*db);
  db.reset();
  db = open();
  ASSERT_NE(db, nullptr);
  check(*db);
}

// RocksDB's skip list as the Store opened it before it had its own: with insert hints per key
// range of a database (keys::DatabaseKey's prefix).
rocksdb::Options PackagedSkipList(rocksdb::Options options) {
  options.memtable_factory = std::make_shared<rocksdb::SkipListFactory>();
  options.memtable_insert_with_hint_prefix_extractor.reset(
      rocksdb::NewFixedPrefixTransform(keys::kDatabaseKeyPrefixSize));
  return options;
}

TEST(MemtableTest, ComparesAFractionOfTheKeysThePackagedSkipListDoes) {
  const rocksdb::Options options = RocksOptions(StoreOptions{});
  ASSERT_STREQ(options.memtable_factory->Name(),
               NewMemTableFactory(64u << 20, rocksdb::BytewiseComparator())->Name());
  const Comparisons ours = Measure(options);
  const Comparisons packaged = Measure(PackagedSkipList(options));
  std::printf(
      "key comparisons per memtable entry: appends %.1f (RocksDB's skip list %.1f), "
      "overwrites %.1f (%.1f), random overwrites %.1f (%.1f)\n",
      ours.append, packaged.append, ours.overwrite, packaged.overwrite, ours.random,
      packaged.random);
  EXPECT_LT(ours.append, 0.5 * packaged.append);
  EXPECT_LT(ours.overwrite, 0.5 * packaged.overwrite);
  // A key held is found by its hash: a comparison or two, where a skip list of every version
  // searches ~2 log2(n).
  EXPECT_LT(ours.random, 3.0);
}

}  // namespace
}  // namespace kvmesh::storage
