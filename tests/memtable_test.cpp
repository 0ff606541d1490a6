// The memtable a Store opens with (storage/memtable_rep.hpp): inserts in kvmesh's key layout
// cost a few comparisons each, and reads of what is still in the memtable see what was written.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/write_batch.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "storage/keys.hpp"
#include "storage/memtable_rep.hpp"
#include "storage/rocks_options.hpp"
#include "test_util.hpp"

namespace kvmesh::storage {
namespace {

using kvmesh::testing::TempDir;

std::unique_ptr<rocksdb::DB> OpenRocks(const std::string& path) {
  StoreOptions options;
  options.path = path;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(RocksOptions(options), path, &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return std::unique_ptr<rocksdb::DB>(raw);
}

std::string DataKey(uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "/k/%08llu", static_cast<unsigned long long>(n));
  return keys::DataPrefix(7) + buf;
}

// Key comparisons per memtable entry of `batch` written on its own.
double ComparisonsPerEntry(rocksdb::DB* db, rocksdb::WriteBatch* batch) {
  rocksdb::get_perf_context()->Reset();
  rocksdb::Status s = db->Write(rocksdb::WriteOptions(), batch);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return static_cast<double>(rocksdb::get_perf_context()->user_key_comparison_count) /
         batch->Count();
}

// A bulk load as DatabaseStore::Stage lays it out: ascending records, then the dot index
// entries the overwritten records leave, then the new ones, then the meta record. With the
// insert hints each insert continues where the previous one of its range ended; RocksDB's
// packaged skip list checked its whole search path after every insert (O(log n) comparisons:
// ~27 per entry here, ~36 once records are overwritten).
TEST(MemtableTest, BulkBatchesCompareAFewKeysPerInsert) {
  ASSERT_TRUE(MemtableIsKvmeshCopy()) << "built against another RocksDB than 7.8";
  TempDir dir;
  std::unique_ptr<rocksdb::DB> db = OpenRocks(dir / "rocks");
  ASSERT_NE(db, nullptr);
  constexpr uint64_t kKeys = 20000;
  constexpr uint64_t kBatch = 1000;
  const std::string value(120, 'v');
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  uint64_t counter = 0;
  for (int pass = 0; pass < 2; ++pass) {  // new keys, then every key overwritten
    double worst = 0;
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
      const double per_entry = ComparisonsPerEntry(db.get(), &batch);
      worst = std::max(worst, per_entry);
    }
    // Measured: at most 3.0 (new keys) and 8.3 (overwrites); RocksDB's packaged list: 27, 36.
    EXPECT_LT(worst, pass == 0 ? 4.0 : 10.0) << "pass " << pass;
  }
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
}

// What is still in the memtable reads back through point lookups (the representation's own
// Get) and through iterators both ways (allocated in RocksDB's arena), before and after the
// log is replayed into a new memtable on reopen, and after a flush.
TEST(MemtableTest, ReadsSeeTheNewestVersionEitherWayAndAfterReopen) {
  TempDir dir;
  std::map<std::string, std::string> expected;
  std::unique_ptr<rocksdb::DB> db = OpenRocks(dir / "rocks");
  ASSERT_NE(db, nullptr);
  for (int round = 0; round < 3; ++round) {
    rocksdb::WriteBatch batch;
    for (uint64_t n = 0; n < 300; ++n) {
      const std::string key = DataKey(n * 7 % 300);  // not in order
      if ((n + round) % 5 == 0) {
        batch.Delete(key);
        expected.erase(key);
      } else {
        const std::string value = "r" + std::to_string(round) + "-" + std::to_string(n);
        batch.Put(key, value);
        expected[key] = value;
      }
    }
    ASSERT_TRUE(db->Write(rocksdb::WriteOptions(), &batch).ok());
  }
  auto check = [&](const char* when) {
    SCOPED_TRACE(when);
    for (uint64_t n = 0; n < 300; ++n) {
      std::string value;
      rocksdb::Status s = db->Get(rocksdb::ReadOptions(), DataKey(n), &value);
      auto it = expected.find(DataKey(n));
      if (it == expected.end()) {
        EXPECT_TRUE(s.IsNotFound()) << DataKey(n) << ": " << s.ToString() << " " << value;
      } else {
        ASSERT_TRUE(s.ok()) << DataKey(n) << ": " << s.ToString();
        EXPECT_EQ(value, it->second) << DataKey(n);
      }
    }
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    std::map<std::string, std::string> forward;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      forward[it->key().ToString()] = it->value().ToString();
    }
    EXPECT_EQ(forward, expected);
    auto want = expected.rbegin();
    for (it->SeekToLast(); it->Valid(); it->Prev(), ++want) {
      ASSERT_NE(want, expected.rend());
      EXPECT_EQ(it->key().ToString(), want->first);
    }
    EXPECT_EQ(want, expected.rend());
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
  };
  check("in the memtable");
  db.reset();
  db = OpenRocks(dir / "rocks");
  ASSERT_NE(db, nullptr);
  check("replayed from the log");
  ASSERT_TRUE(db->Flush(rocksdb::FlushOptions()).ok());
  check("flushed");
}

}  // namespace
}  // namespace kvmesh::storage
