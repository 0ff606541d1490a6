// Storage: one RocksDB per node, a namespace per database, exact size accounting. Replication
// state (version vectors, deltas, tombstones, digests) is tested in replication_storage_test.cpp.
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/path.hpp"
#include "messages/storage.pb.h"
#include "storage/database_store.hpp"
#include "storage/keys.hpp"
#include "storage/store.hpp"
#include "storage_test_util.hpp"
#include "test_util.hpp"

namespace kvmesh::storage {
namespace {

using kvmesh::testing::ListAllPages;
using kvmesh::testing::TempDir;

constexpr uint64_t kBigLimit = 1ull << 40;

class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen(StoreOptions options = {}) {
    databases_.clear();
    store_.reset();
    options.path = dir_ / "data";
    ASSERT_TRUE(Store::Open(options, &store_).ok());
  }

  DatabaseStore& Db(const std::string& path, uint64_t limit = kBigLimit) {
    std::unique_ptr<DatabaseStore> db;
    Status s = store_->OpenDatabase(path, "cfg", limit, &db);
    EXPECT_TRUE(s.ok()) << s;
    databases_.push_back(std::move(db));
    return *databases_.back();
  }

  static std::vector<std::string> ListAll(const DatabaseStore& db, const std::string& prefix,
                                          uint32_t limit = 0, size_t* pages = nullptr) {
    std::vector<std::string> out;
    ListOptions options;
    options.prefix = prefix;
    options.limit = limit;
    const size_t page_count = ListAllPages(db, options, [&](const ListPage& page) {
      if (limit != 0) {
        EXPECT_LE(page.keys.size(), limit);
      }
      out.insert(out.end(), page.keys.begin(), page.keys.end());
    });
    if (pages != nullptr) *pages = page_count;
    return out;
  }

  TempDir dir_;
  std::shared_ptr<Store> store_;
  std::vector<std::unique_ptr<DatabaseStore>> databases_;
};

TEST_F(StorageTest, BinaryValuesRoundTripExactly) {
  DatabaseStore& db = Db("/bin");
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes.push_back(static_cast<char>(i));
  const std::string with_nul("a\0b\0\xff", 5);
  ASSERT_TRUE(db.Put("/all", all_bytes).ok());
  ASSERT_TRUE(db.Put("/nul", with_nul).ok());
  ASSERT_TRUE(db.Put("/empty", "").ok());
  std::string value;
  ASSERT_TRUE(db.Get("/all", &value).ok());
  EXPECT_EQ(value, all_bytes);
  ASSERT_TRUE(db.Get("/nul", &value).ok());
  EXPECT_EQ(value, with_nul);
  ASSERT_TRUE(db.Get("/empty", &value).ok());
  EXPECT_EQ(value, "");
}

// Gets sent together are read in order until their values pass the reply budget, and no
// further: a message naming one large value 256 times must not read (hold) it 256 times.
TEST_F(StorageTest, GetManyReadsNoFurtherThanItsByteBudget) {
  DatabaseStore& db = Db("/many");
  const std::string big(4u << 20, 'b');
  ASSERT_TRUE(db.Put("/big", big).ok());
  ASSERT_TRUE(db.Put("/small", "s").ok());
  std::vector<Status> statuses;
  std::vector<std::string> values;
  const std::vector<std::string_view> repeated(256, "/big");
  EXPECT_EQ(db.GetMany(repeated, 1u << 20, &statuses, &values), 1u);
  ASSERT_EQ(values.size(), 1u);  // the first is always answered, the rest not even read
  EXPECT_EQ(values[0], big);
  // Within the budget every key is answered as Get would answer it.
  const std::vector<std::string_view> mixed = {"/small", "/missing", "/a/../b", "/small"};
  ASSERT_EQ(db.GetMany(mixed, 1u << 20, &statuses, &values), 4u);
  EXPECT_TRUE(statuses[0].ok());
  EXPECT_EQ(values[0], "s");
  EXPECT_EQ(statuses[1].code(), Code::kNotFound);
  EXPECT_EQ(statuses[2].code(), Code::kInvalidKey);
  EXPECT_EQ(values[3], "s");
  // A value that would pass the budget ends the answer before it.
  const std::vector<std::string_view> small_then_big = {"/small", "/big", "/small"};
  EXPECT_EQ(db.GetMany(small_then_big, 1u << 20, &statuses, &values), 1u);
}

TEST_F(StorageTest, MissingKeyIsNotFoundAndEraseOfMissingSucceeds) {
  DatabaseStore& db = Db("/m");
  std::string value = "untouched";
  Status s = db.Get("/nope", &value);
  EXPECT_EQ(s.code(), Code::kNotFound) << s;
  EXPECT_NE(s.message().find("\"/nope\""), std::string::npos) << s;
  EXPECT_EQ(value, "untouched");
  // Erasing a missing key succeeds; it writes a tombstone (another replica may hold the key),
  // which counts neither as a key nor as used bytes.
  EXPECT_TRUE(db.Erase("/nope").ok());
  EXPECT_EQ(db.Stats().key_count, 0u);
  EXPECT_EQ(db.Stats().used_bytes, 0u);
  EXPECT_EQ(db.tombstone_count(), 1u);
  EXPECT_EQ(db.version_vector().Total(), 1u);
  EXPECT_EQ(db.Get("/nope", &value).code(), Code::kNotFound);
  // Erasing it again writes a newer tombstone in place of the old one (a put this replica has
  // not seen yet may be on its way; see ReplicationTest.EraseOverATombstoneBeatsAnUnseenPut).
  std::string delta;
  EXPECT_TRUE(db.Erase("/nope", &delta).ok());
  EXPECT_FALSE(delta.empty());
  EXPECT_EQ(db.tombstone_count(), 1u);
  EXPECT_EQ(db.version_vector().Total(), 2u);
  ASSERT_TRUE(db.Put("/k", "v").ok());
  ASSERT_TRUE(db.Erase("/k").ok());
  EXPECT_EQ(db.Get("/k", &value).code(), Code::kNotFound);
  EXPECT_EQ(db.Stats().key_count, 0u);
  EXPECT_EQ(db.Stats().used_bytes, 0u);
  EXPECT_EQ(db.tombstone_count(), 2u);
  EXPECT_TRUE(ListAll(db, "").empty());
  // A put over a tombstone brings the key back.
  ASSERT_TRUE(db.Put("/nope", "back").ok());
  ASSERT_TRUE(db.Get("/nope", &value).ok());
  EXPECT_EQ(value, "back");
  EXPECT_EQ(db.tombstone_count(), 1u);
  EXPECT_EQ(ListAll(db, ""), std::vector<std::string>{"/nope"});
}

TEST_F(StorageTest, KeysAreNormalisedOnEntry) {
  DatabaseStore& db = Db("/n");
  ASSERT_TRUE(db.Put("users//1/", "x").ok());
  std::string value;
  ASSERT_TRUE(db.Get("/users/1", &value).ok());
  EXPECT_EQ(value, "x");
  EXPECT_EQ(ListAll(db, ""), std::vector<std::string>{"/users/1"});
  EXPECT_EQ(db.Put("/a/../b", "x").code(), Code::kInvalidKey);
  EXPECT_EQ(db.Put("", "x").code(), Code::kInvalidKey);
  EXPECT_EQ(db.Put(std::string(5000, 'k'), "x").code(), Code::kInvalidKey);
  EXPECT_EQ(db.Stats().key_count, 1u);
}

// Database paths are normalised where they enter the node; the store refuses any other spelling
// rather than making a second namespace (and catalog entry) for one database.
TEST_F(StorageTest, OnlyNormalisedDatabasePathsOpen) {
  Db("/example/kv");
  for (const std::string bad : {"/example//kv", "example/kv", "/example/kv/", "/a/../b", ""}) {
    std::unique_ptr<DatabaseStore> db;
    Status s = store_->OpenDatabase(bad, "cfg", kBigLimit, &db);
    EXPECT_EQ(s.code(), Code::kInvalidKey) << Quote(bad) << ": " << s;
    EXPECT_EQ(db, nullptr);
  }
  std::vector<DatabaseInfo> catalog;
  ASSERT_TRUE(store_->ListDatabases(&catalog).ok());
  ASSERT_EQ(catalog.size(), 1u);
  EXPECT_EQ(catalog[0].path, "/example/kv");
}

TEST_F(StorageTest, HostileKeysCannotLeaveTheirNamespace) {
  DatabaseStore& a = Db("/tenant/a");
  DatabaseStore& b = Db("/tenant/b");
  DatabaseStore& c = Db("/tenant/c");
  ASSERT_NE(a.id(), b.id());
  // Keys made of the raw bytes that frame other namespaces: the store's own key layout ("d" +
  // 8-byte id + tag), NUL and 0xFF runs, and the catalog and node-meta keys.
  std::string other_ns("d\0\0\0\0\0\0\0", 8);
  other_ns.push_back(static_cast<char>(b.id()));
  std::vector<std::string> hostile = {
      other_ns + "k/x",
      std::string("\0", 1),
      std::string("\xff\xff\xff\xff", 4),
      "n",
      "c/tenant/b",
      std::string("/x\0/y", 5),
      "/..." /* three dots is an ordinary segment */,
  };
  for (const std::string& key : hostile) {
    ASSERT_TRUE(a.Put(key, "from-a").ok()) << Quote(key);
  }
  ASSERT_TRUE(b.Put("/x", "from-b").ok());
  EXPECT_EQ(a.Put("/..", "x").code(), Code::kInvalidKey);

  // b and c see nothing of a; a sees exactly its own keys.
  EXPECT_EQ(ListAll(b, ""), std::vector<std::string>{"/x"});
  EXPECT_TRUE(ListAll(c, "").empty());
  EXPECT_EQ(ListAll(a, "").size(), hostile.size());
  std::string value;
  for (const std::string& key : hostile) {
    EXPECT_EQ(b.Get(key, &value).code(), Code::kNotFound) << Quote(key);
    EXPECT_EQ(c.Get(key, &value).code(), Code::kNotFound) << Quote(key);
  }
  ASSERT_TRUE(b.Get("/x", &value).ok());
  EXPECT_EQ(value, "from-b");
  EXPECT_EQ(a.Get("/x", &value).code(), Code::kNotFound);

  // The catalog and the node id were not overwritten by the keys named like them.
  std::vector<DatabaseInfo> catalog;
  ASSERT_TRUE(store_->ListDatabases(&catalog).ok());
  ASSERT_EQ(catalog.size(), 3u);
  const uint64_t node_id = store_->node_id();
  Reopen();
  EXPECT_EQ(store_->node_id(), node_id);
}

TEST_F(StorageTest, ListIsSegmentAwareSortedAndCarriesValues) {
  DatabaseStore& db = Db("/l");
  for (const char* key : {"/test/2/x", "/testing", "/test", "/test!", "/test/1", "/a"}) {
    ASSERT_TRUE(db.Put(key, std::string("v") + key).ok());
  }
  const std::vector<std::string> under_test = {"/test", "/test/1", "/test/2/x"};
  EXPECT_EQ(ListAll(db, "/test"), under_test);
  EXPECT_EQ(ListAll(db, "test/"), under_test);
  EXPECT_EQ(ListAll(db, "/test/2"), std::vector<std::string>{"/test/2/x"});
  EXPECT_EQ(ListAll(db, "/"), (std::vector<std::string>{"/a", "/test", "/test!", "/test/1",
                                                        "/test/2/x", "/testing"}));
  // Paging through the prefix one key at a time keeps the same order.
  EXPECT_EQ(ListAll(db, "/test", 1), under_test);

  ListOptions options;
  options.prefix = "/test";
  options.with_values = true;
  ListPage page;
  ASSERT_TRUE(db.List(options, &page).ok());
  ASSERT_EQ(page.values.size(), 3u);
  EXPECT_EQ(page.values[1], "v/test/1");
  EXPECT_FALSE(page.has_more());
}

TEST_F(StorageTest, ListPaginatesTenThousandKeys) {
  DatabaseStore& db = Db("/big");
  std::vector<std::string> expected;
  WriteBatch batch;
  for (int i = 0; i < 10000; ++i) {
    std::string key = "/k/" + std::to_string(i * 7919 % 10007);
    expected.push_back(key);
    batch.Put(key, "v");
  }
  ASSERT_TRUE(db.Write(batch).ok());
  std::sort(expected.begin(), expected.end());
  size_t pages = 0;
  EXPECT_EQ(ListAll(db, "/k", 333, &pages), expected);
  EXPECT_EQ(pages, (10000 + 332) / 333);
  // The default page size is bounded too.
  ListPage page;
  ASSERT_TRUE(db.List(ListOptions{}, &page).ok());
  EXPECT_EQ(page.keys.size(), kDefaultListLimit);
  EXPECT_TRUE(page.has_more());
}

// Lists every page of `options` (resuming at each next_token), checking each page's size.
// Returns keys, values and versions in listing order; `pages` gets the page count.
struct Listing {
  std::vector<std::string> keys, values, versions;
  size_t pages = 0;
};
Listing ListRange(const DatabaseStore& db, const ListOptions& options) {
  Listing out;
  out.pages = ListAllPages(db, options, [&](const ListPage& page) {
    if (options.limit != 0) {
      EXPECT_LE(page.keys.size(), options.limit);
    }
    out.keys.insert(out.keys.end(), page.keys.begin(), page.keys.end());
    out.values.insert(out.values.end(), page.values.begin(), page.values.end());
    out.versions.insert(out.versions.end(), page.versions.begin(), page.versions.end());
  });
  return out;
}

std::vector<std::string> Reversed(std::vector<std::string> keys) {
  std::reverse(keys.begin(), keys.end());
  return keys;
}

TEST_F(StorageTest, ListRangesAndReverseKeepTheSegmentRule) {
  DatabaseStore& db = Db("/range");
  for (const char* key : {"/a", "/test", "/test!", "/test/1", "/test/2/x", "/test/3", "/testing"}) {
    ASSERT_TRUE(db.Put(key, "v").ok());
  }
  auto list = [&](const std::string& prefix, const std::string& start, const std::string& end,
                  bool reverse) {
    ListOptions options;
    options.prefix = prefix;
    options.start = start;
    options.end = end;
    options.reverse = reverse;
    return ListRange(db, options).keys;
  };
  using Keys = std::vector<std::string>;
  const Keys all = {"/a", "/test", "/test!", "/test/1", "/test/2/x", "/test/3", "/testing"};
  EXPECT_EQ(list("", "", "", true), Reversed(all));
  // Under a prefix, reverse ends with the prefix key itself and never shows "/test!".
  EXPECT_EQ(list("/test", "", "", true), (Keys{"/test/3", "/test/2/x", "/test/1", "/test"}));
  EXPECT_EQ(list("/test", "/test/1", "/test/3", false), (Keys{"/test/1", "/test/2/x"}));
  EXPECT_EQ(list("/test", "/test/1", "/test/3", true), (Keys{"/test/2/x", "/test/1"}));
  // Bounds are normalised like keys and need not exist; start is inclusive, end exclusive.
  EXPECT_EQ(list("/test", "test/2/", "", false), (Keys{"/test/2/x", "/test/3"}));
  EXPECT_EQ(list("/test", "", "/test/1", true), (Keys{"/test"}));
  EXPECT_EQ(list("/test", "/test", "/test/1", false), (Keys{"/test"}));
  EXPECT_EQ(list("", "/b", "/test/2", false), (Keys{"/test", "/test!", "/test/1"}));
  EXPECT_EQ(list("", "/b", "/test/2", true), (Keys{"/test/1", "/test!", "/test"}));
  EXPECT_EQ(list("/test", "/test/2", "/test/2", false), Keys{});
  EXPECT_EQ(list("/test", "/test/2", "/test/2", true), Keys{});
}

TEST_F(StorageTest, ListPagesRangesBothWaysSkippingDeletedAndExpiredKeys) {
  kvmesh::testing::FakeClock clock;
  Reopen(clock.Options());
  DatabaseStore& db = Db("/paged");
  std::vector<std::string> expected;  // live keys in [/p/k10, /p/k40), ascending
  for (int i = 0; i < 50; ++i) {
    const std::string key = (i < 10 ? "/p/k0" : "/p/k") + std::to_string(i);
    WriteBatch batch;
    // Every 7th key expires, every 5th is deleted after its put, the rest stay.
    batch.Put(key, "v" + key, i % 7 == 3 ? 1000 : 0);
    ASSERT_TRUE(db.Write(batch).ok());
    if (i % 5 == 1) ASSERT_TRUE(db.Erase(key).ok());
    if (i >= 10 && i < 40 && i % 7 != 3 && i % 5 != 1) expected.push_back(key);
  }
  ASSERT_TRUE(db.Put("/p", "the prefix key").ok());
  ASSERT_TRUE(db.Put("/p!", "not under /p").ok());
  clock.Advance(std::chrono::milliseconds(2000));
  std::sort(expected.begin(), expected.end());
  ASSERT_EQ(expected.size(), 20u);  // 30 keys, 5 expired, 6 deleted, one of them both

  for (bool reverse : {false, true}) {
    SCOPED_TRACE(reverse ? "reverse" : "forward");
    const auto want = reverse ? Reversed(expected) : expected;
    for (uint32_t limit : {1u, 3u, 5u, 7u, 10u, 20u, 0u}) {
      SCOPED_TRACE("limit " + std::to_string(limit));
      ListOptions options;
      options.prefix = "/p";
      options.start = "/p/k10";
      options.end = "/p/k40";
      options.reverse = reverse;
      options.limit = limit;
      options.with_values = true;
      options.with_versions = true;
      const Listing got = ListRange(db, options);
      EXPECT_EQ(got.keys, want);
      // A range holding exactly n pages of keys ends on page n (no empty page after).
      const size_t per_page = limit == 0 ? kDefaultListLimit : limit;
      EXPECT_EQ(got.pages, std::max<size_t>(1, (want.size() + per_page - 1) / per_page));
      ASSERT_EQ(got.values.size(), want.size());
      ASSERT_EQ(got.versions.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_EQ(got.values[i], "v" + want[i]);
        EXPECT_FALSE(got.versions[i].empty());
      }
    }
  }
  // The prefix key and the bounds at the edges of the whole prefix, both ways.
  ListOptions whole;
  whole.prefix = "/p";
  whole.limit = 2;
  const Listing up = ListRange(db, whole);
  ASSERT_FALSE(up.keys.empty());
  EXPECT_EQ(up.keys.front(), "/p");
  whole.reverse = true;
  EXPECT_EQ(ListRange(db, whole).keys, Reversed(up.keys));

  // A page resumes after its token even when that key was deleted meanwhile.
  ListOptions first;
  first.prefix = "/p";
  first.start = "/p/k10";
  first.reverse = true;
  first.limit = 3;
  ListPage page;
  ASSERT_TRUE(db.List(first, &page).ok());
  ASSERT_TRUE(page.has_more());
  ASSERT_TRUE(db.Erase(page.next_token).ok());
  const std::string token = page.next_token;
  first.start_after = token;
  ASSERT_TRUE(db.List(first, &page).ok());
  ASSERT_FALSE(page.keys.empty());
  EXPECT_LT(page.keys.front(), token);
}

TEST_F(StorageTest, ListRefusesBadBoundsAndTokensNamingThem) {
  DatabaseStore& db = Db("/bad");
  ASSERT_TRUE(db.Put("/u/a", "1").ok());
  auto fails = [&](ListOptions options, const std::string& what) {
    ListPage page;
    Status s = db.List(options, &page);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(what), std::string::npos) << s;
    EXPECT_TRUE(page.keys.empty());
  };
  ListOptions o;
  o.prefix = "/u";
  o.start = "/u/m";
  o.end = "/u/c";
  fails(o, "start bound \"/u/m\" is after the end bound \"/u/c\"");
  o = {};
  o.prefix = "/u";
  o.start = "/v";
  fails(o, "start bound \"/v\" is not under the prefix \"/u\"");
  o = {};
  o.prefix = "/u";
  o.end = "/uz";
  fails(o, "end bound \"/uz\" is not under the prefix \"/u\"");
  o = {};
  o.start = "/a/../b";
  fails(o, "start bound \"/a/../b\" is not a valid key");
  for (const char* token : {"u/a", "/u//a", "/v", "/t"}) {
    o = {};
    o.prefix = "/u";
    o.start_after = token;
    fails(o, std::string("list token \"") + token + "\" is not a key of this listing");
  }
  o = {};
  o.start = "/u/b";
  o.start_after = "/u/a";  // before the start bound: not from this listing
  fails(o, "list token \"/u/a\"");
}

TEST_F(StorageTest, ListPagesAreBoundedInBytes) {
  DatabaseStore& db = Db("/fat");
  const std::string mib(1 << 20, 'x');
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(db.Put("/v" + std::to_string(i), mib).ok());
  ListOptions options;
  options.with_values = true;
  ListPage page;
  ASSERT_TRUE(db.List(options, &page).ok());
  EXPECT_LE(page.keys.size(), kMaxListPageBytes / mib.size() + 1);
  EXPECT_TRUE(page.has_more());
}

TEST_F(StorageTest, BatchIsAllOrNothing) {
  DatabaseStore& db = Db("/batch", 1000);
  ASSERT_TRUE(db.Put("/keep", "original").ok());
  const DatabaseStats before = db.Stats();

  WriteBatch bad_key;
  bad_key.Put("/new1", "x").Erase("/keep").Put("/a/../b", "x");
  EXPECT_EQ(db.Write(bad_key).code(), Code::kInvalidKey);

  WriteBatch too_big;
  too_big.Put("/new2", "x").Erase("/keep").Put("/huge", std::string(2000, 'h'));
  EXPECT_EQ(db.Write(too_big).code(), Code::kSizeLimitExceeded);

  std::string value;
  ASSERT_TRUE(db.Get("/keep", &value).ok());
  EXPECT_EQ(value, "original");
  EXPECT_EQ(db.Get("/new1", &value).code(), Code::kNotFound);
  EXPECT_EQ(db.Get("/new2", &value).code(), Code::kNotFound);
  EXPECT_EQ(db.Stats().used_bytes, before.used_bytes);
  EXPECT_EQ(db.Stats().key_count, before.key_count);
  // A failed batch assigns no dots and leaves no tombstones.
  EXPECT_EQ(db.version_vector().Total(), 1u);
  EXPECT_EQ(db.tombstone_count(), 0u);

  // Operations apply in order: a later op on the same key wins.
  WriteBatch ordered;
  ordered.Put("/x", "1").Put("/x", "22").Erase("/keep").Put("/y", "3").Erase("/y");
  ASSERT_TRUE(db.Write(ordered).ok());
  ASSERT_TRUE(db.Get("/x", &value).ok());
  EXPECT_EQ(value, "22");
  EXPECT_EQ(db.Get("/keep", &value).code(), Code::kNotFound);
  EXPECT_EQ(db.Get("/y", &value).code(), Code::kNotFound);
  EXPECT_EQ(db.Stats().key_count, 1u);
  EXPECT_EQ(db.Stats().used_bytes, 2u + 2u);
  // Every operation got a counter, overwritten ones included, so this node's base is contiguous.
  EXPECT_EQ(db.version_vector().Base(db.origin()), 6u);
  EXPECT_EQ(db.version_vector().Total(), 6u);
  EXPECT_EQ(db.tombstone_count(), 2u);  // "/keep" and "/y"
}

// Recomputes usage from what is stored, to compare with the O(1) counters.
uint64_t ScanUsage(const DatabaseStore& db) {
  uint64_t used = 0;
  ListOptions options;
  options.with_values = true;
  while (true) {
    ListPage page;
    EXPECT_TRUE(db.List(options, &page).ok());
    for (size_t i = 0; i < page.keys.size(); ++i)
      used += page.keys[i].size() + page.values[i].size();
    if (!page.has_more()) break;
    options.start_after = page.next_token;
  }
  return used;
}

TEST_F(StorageTest, SizeAccountingIsExactAndSurvivesReopen) {
  {
    DatabaseStore& db = Db("/acct");
    ASSERT_TRUE(db.Put("/a", "12345").ok());  // 2 + 5
    EXPECT_EQ(db.Stats().used_bytes, 7u);
    ASSERT_TRUE(db.Put("/a", "1234567890").ok());  // overwrite: 2 + 10
    EXPECT_EQ(db.Stats().used_bytes, 12u);
    ASSERT_TRUE(db.Put("/a", "1").ok());  // shrink: 2 + 1
    EXPECT_EQ(db.Stats().used_bytes, 3u);
    ASSERT_TRUE(db.Put("/bb", "").ok());  // empty value: key only
    EXPECT_EQ(db.Stats().used_bytes, 6u);
    ASSERT_TRUE(db.Erase("/a").ok());
    EXPECT_EQ(db.Stats().used_bytes, 3u);
    WriteBatch batch;
    batch.Put("/c", "xyz").Put("/c", "x").Erase("/bb").Put("/d", "dd");
    ASSERT_TRUE(db.Write(batch).ok());  // /c:3 + /d:4
    EXPECT_EQ(db.Stats().used_bytes, 7u);
    EXPECT_EQ(db.Stats().key_count, 2u);
    EXPECT_EQ(ScanUsage(db), 7u);
  }
  Reopen();
  DatabaseStore& db = Db("/acct");
  EXPECT_EQ(db.Stats().used_bytes, 7u);
  EXPECT_EQ(db.Stats().key_count, 2u);
  EXPECT_EQ(ScanUsage(db), 7u);
}

TEST_F(StorageTest, WriteOverTheLimitFailsClearlyAndKeepsData) {
  DatabaseStore& db = Db("/small", 100);
  ASSERT_TRUE(db.Put("/a", std::string(88, 'a')).ok());  // 90 bytes used
  Status s = db.Put("/b", std::string(20, 'b'));         // needs 22 more
  ASSERT_EQ(s.code(), Code::kSizeLimitExceeded) << s;
  EXPECT_NE(s.message().find("\"/small\""), std::string::npos) << s;
  EXPECT_NE(s.message().find("100 B"), std::string::npos) << s;
  EXPECT_NE(s.message().find("90 B"), std::string::npos) << s;
  EXPECT_NE(s.message().find("22 B"), std::string::npos) << s;
  std::string value;
  EXPECT_EQ(db.Get("/b", &value).code(), Code::kNotFound);
  ASSERT_TRUE(db.Get("/a", &value).ok());
  EXPECT_EQ(value, std::string(88, 'a'));
  EXPECT_EQ(db.Stats().used_bytes, 90u);
  // Exactly filling the budget is allowed; one byte more is not.
  ASSERT_TRUE(db.Put("/b", std::string(8, 'b')).ok());
  EXPECT_EQ(db.Stats().used_bytes, 100u);
  EXPECT_EQ(db.Put("/c", "").code(), Code::kSizeLimitExceeded);
  // A lowered limit never blocks writes that free space.
  db.set_size_limit(10);
  EXPECT_TRUE(db.Put("/a", "a").ok());
  EXPECT_TRUE(db.Erase("/b").ok());
  EXPECT_EQ(db.Stats().used_bytes, 3u);
}

// Group commit (the database actor applies the writes that arrive together as one): the outcome
// must be the one of writing them one after another, the size rule judged for each write as it
// would be alone, and a group that holds any write that would fail writes nothing.
TEST_F(StorageTest, AGroupOfWritesAppliesAsIfWrittenOneAfterAnother) {
  DatabaseStore& db = Db("/group", 100);
  ASSERT_TRUE(db.Put("/a", std::string(88, 'a')).ok());  // 90 bytes used
  auto group = [&](std::vector<WriteBatch> writes, std::string* delta = nullptr) {
    std::vector<const WriteBatch*> views;
    for (const WriteBatch& w : writes) views.push_back(&w);
    return db.WriteGroup(views.data(), views.size(), delta);
  };
  WriteBatch put_b;
  put_b.Put("/b", std::string(20, 'b'));  // 22 bytes
  WriteBatch erase_a;
  erase_a.Erase("/a");
  // Alone, the put would fail (112 > 100) although the group as a whole ends at 22 bytes.
  Status s = group({put_b, erase_a});
  EXPECT_EQ(s.code(), Code::kSizeLimitExceeded) << s;
  std::string value;
  EXPECT_EQ(db.Get("/b", &value).code(), Code::kNotFound);
  ASSERT_TRUE(db.Get("/a", &value).ok()) << "a failed group must write nothing";
  EXPECT_EQ(db.Stats().used_bytes, 90u);
  // In the other order each write succeeds alone, so the group does.
  std::string delta;
  ASSERT_TRUE(group({erase_a, put_b}, &delta).ok());
  EXPECT_EQ(db.Get("/a", &value).code(), Code::kNotFound);
  EXPECT_EQ(db.Stats().used_bytes, 22u);
  // A check sees the writes before it in the group.
  WriteBatch put_c;
  put_c.Put("/c", "1");
  WriteBatch c_absent;
  c_absent.Check("/c", {});
  EXPECT_EQ(group({put_c, c_absent}).code(), Code::kConditionFailed);
  EXPECT_EQ(db.Get("/c", &value).code(), Code::kNotFound);
  // Several writes of one key: the last wins, accounting stays exact.
  WriteBatch put_c2;
  put_c2.Put("/c", "22");
  ASSERT_TRUE(group({put_c, put_c2, WriteBatch{}}, &delta).ok());
  ASSERT_TRUE(db.Get("/c", &value).ok());
  EXPECT_EQ(value, "22");
  EXPECT_EQ(db.Stats().used_bytes, 22u + 4u);
  EXPECT_EQ(db.Stats().key_count, 2u);
  EXPECT_EQ(ScanUsage(db), 26u);
  // The group's delta brings a replica to the same contents.
  DatabaseStore& replica = Db("/group-replica");
  ASSERT_TRUE(replica.ApplyDelta(delta).ok());
  EXPECT_EQ(replica.digest(), db.digest());
  EXPECT_EQ(replica.Stats().used_bytes, 26u);
}

TEST_F(StorageTest, ValueOverTheMaximumIsRejected) {
  StoreOptions options;
  options.max_value_bytes = 1000;
  Reopen(options);
  DatabaseStore& db = Db("/v");
  EXPECT_TRUE(db.Put("/ok", std::string(1000, 'x')).ok());
  Status s = db.Put("/big", std::string(1001, 'x'));
  EXPECT_EQ(s.code(), Code::kValueTooLarge) << s;
  EXPECT_NE(s.message().find("1001 B"), std::string::npos) << s;
}

TEST_F(StorageTest, CatalogAndNodeIdPersist) {
  const uint64_t node_id = store_->node_id();
  EXPECT_NE(node_id, 0u);
  const uint64_t id_a = Db("/p/a").id();
  const uint64_t id_b = Db("/p/b").id();  // callers normalise paths (common/path.hpp)
  EXPECT_NE(id_a, id_b);
  ASSERT_TRUE(Db("/p/a").Put("/k", "v").ok());
  Reopen();
  EXPECT_EQ(store_->node_id(), node_id);
  EXPECT_EQ(Db("/p/a").id(), id_a);
  EXPECT_EQ(Db("/p/b").id(), id_b);
  EXPECT_GT(Db("/p/c").id(), std::max(id_a, id_b));  // ids are never reused
  std::vector<DatabaseInfo> catalog;
  ASSERT_TRUE(store_->ListDatabases(&catalog).ok());
  ASSERT_EQ(catalog.size(), 3u);
  EXPECT_EQ(catalog[0].path, "/p/a");
  EXPECT_EQ(catalog[0].config_id, "cfg");
  std::string value;
  ASSERT_TRUE(Db("/p/a").Get("/k", &value).ok());
  EXPECT_EQ(value, "v");
}

TEST_F(StorageTest, SecondOpenOfOneDataDirFailsNamingIt) {
  std::shared_ptr<Store> second;
  StoreOptions options;
  options.path = dir_ / "data";
  Status s = Store::Open(options, &second);
  EXPECT_EQ(s.code(), Code::kIOError) << s;
  EXPECT_NE(s.message().find(options.path), std::string::npos) << s;
}

/// The node meta record as stored.
proto::NodeMeta ReadNodeMeta(Store& store) {
  std::string bytes;
  proto::NodeMeta meta;
  rocksdb::Status rs = store.db()->Get(rocksdb::ReadOptions(), keys::NodeMetaKey(), &bytes);
  EXPECT_TRUE(rs.ok()) << rs.ToString();
  EXPECT_TRUE(meta.ParseFromString(bytes));
  return meta;
}

void WriteFormat(Store& store, uint32_t format) {
  proto::NodeMeta meta = ReadNodeMeta(store);
  meta.set_format_version(format);
  ASSERT_TRUE(
      store.db()->Put(rocksdb::WriteOptions(), keys::NodeMetaKey(), meta.SerializeAsString()).ok());
}

// Storage format 2 (dot ranges): a store of format 1 (or from before the format was recorded)
// opens unchanged and is marked 2 at once, before anything of format 2 is written, so that an
// older build refuses it rather than sending deltas without the ranges it cannot read. A store
// of a newer format than this build's is refused, naming both formats, and nothing is lost.
TEST_F(StorageTest, OlderFormatsAreMarkedCurrentOnOpenAndNewerOnesRefused) {
  EXPECT_EQ(ReadNodeMeta(*store_).format_version(), 2u) << "a new store";
  ASSERT_TRUE(Db("/f/a").Put("/k", "v").ok());
  const uint64_t node = store_->node_id();
  for (uint32_t old_format : {1u, 0u}) {
    WriteFormat(*store_, old_format);
    Reopen();
    EXPECT_EQ(ReadNodeMeta(*store_).format_version(), 2u) << "from " << old_format;
    EXPECT_EQ(store_->node_id(), node);
  }

  WriteFormat(*store_, 3);
  databases_.clear();
  store_.reset();
  StoreOptions options;
  options.path = dir_ / "data";
  Status s = Store::Open(options, &store_);
  EXPECT_EQ(s.code(), Code::kCorruption) << s;
  EXPECT_NE(s.message().find("has storage format 3; this build reads up to 2"), std::string::npos)
      << s;
  EXPECT_NE(s.message().find(options.path), std::string::npos) << s;
  EXPECT_EQ(store_, nullptr);
  // Nothing was changed: the format is still 3, and the data is there once a build that reads it
  // opens the store (here: the format written back by hand).
  {
    rocksdb::DB* raw = nullptr;
    rocksdb::Options rocks;
    ASSERT_TRUE(rocksdb::DB::Open(rocks, options.path, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string bytes;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), keys::NodeMetaKey(), &bytes).ok());
    proto::NodeMeta meta;
    ASSERT_TRUE(meta.ParseFromString(bytes));
    EXPECT_EQ(meta.format_version(), 3u);
    meta.set_format_version(2);
    ASSERT_TRUE(
        db->Put(rocksdb::WriteOptions(), keys::NodeMetaKey(), meta.SerializeAsString()).ok());
  }
  Reopen();
  std::string value;
  ASSERT_TRUE(Db("/f/a").Get("/k", &value).ok());
  EXPECT_EQ(value, "v");
}

TEST_F(StorageTest, TimestampsIncreaseStrictly) {
  uint64_t last = 0;
  for (int i = 0; i < 10000; ++i) {
    uint64_t t = store_->NextTimestamp();
    ASSERT_GT(t, last);
    last = t;
  }
}

// `kvmesh instances`: one config's databases, page by page in path order, with their usage and
// last access, among another config's; pages stay complete when each examines little.
TEST_F(StorageTest, InstancesListOneConfigInPagesWithUsageAndLastAccess) {
  std::vector<std::string> expected;
  for (int i = 0; i < 25; ++i) {
    char path[32];
    std::snprintf(path, sizeof(path), "/t/%02d", i);
    expected.push_back(path);
    DatabaseStore& db = Db(path);
    if (i % 5 == 0) ASSERT_TRUE(db.Put("/k" + std::to_string(i), "value").ok());
    // Another config's databases sort between them.
    std::unique_ptr<DatabaseStore> other;
    ASSERT_TRUE(store_->OpenDatabase(std::string(path) + "x", "other", kBigLimit, &other).ok());
  }
  ASSERT_TRUE(store_->RecordAccess("/t/03", 1234567).ok());
  ASSERT_TRUE(store_->RecordAccess("/t/03", 1000).ok());       // never goes backwards
  ASSERT_TRUE(store_->RecordAccess("/t/missing", 1000).ok());  // creates nothing
  Reopen();  // what the listing shows is stored, and the count is rebuilt
  EXPECT_EQ(store_->InstanceCount("cfg"), 25u);
  EXPECT_EQ(store_->InstanceCount("other"), 25u);
  for (size_t max_scanned : {size_t{100000}, size_t{3}}) {
    SCOPED_TRACE("max_scanned " + std::to_string(max_scanned));
    std::vector<InstanceInfo> got;
    InstanceOptions options;
    options.limit = 7;
    for (int pages = 0; pages < 100; ++pages) {  // 50 entries: at most 17 pages of 3
      InstancePage page;
      Status s = store_->ListInstances("cfg", options, max_scanned, &page);
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_LE(page.instances.size(), 7u);
      got.insert(got.end(), page.instances.begin(), page.instances.end());
      if (!page.has_more()) break;
      options.cursor = page.next_cursor;
    }
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].path, expected[i]);
      EXPECT_EQ(got[i].config_id, "cfg");
      EXPECT_EQ(got[i].key_count, i % 5 == 0 ? 1u : 0u) << got[i].path;
      EXPECT_EQ(got[i].used_bytes, i % 5 == 0 ? ("/k" + std::to_string(i)).size() + 5 : 0u);
      EXPECT_EQ(got[i].last_access_ms, i == 3 ? 1234567u : 0u) << got[i].path;
    }
  }
  InstancePage none;
  ASSERT_TRUE(store_->ListInstances("nope", {}, 100000, &none).ok());
  EXPECT_TRUE(none.instances.empty());
  EXPECT_FALSE(none.has_more());
}

// max_instances: a new path beyond the bound fails naming the config and the bound; the
// databases already there keep opening, and a dropped one frees its place.
TEST_F(StorageTest, MaxInstancesBoundsNewDatabasesOfOneConfig) {
  std::unique_ptr<DatabaseStore> a, b, c, other;
  ASSERT_TRUE(store_->OpenDatabase("/m/a", "cfg", kBigLimit, &a, 2).ok());
  ASSERT_TRUE(store_->OpenDatabase("/m/b", "cfg", kBigLimit, &b, 2).ok());
  ASSERT_TRUE(store_->OpenDatabase("/m/o", "other", kBigLimit, &other, 2).ok());
  Status s = store_->OpenDatabase("/m/c", "cfg", kBigLimit, &c, 2);
  EXPECT_EQ(s.code(), Code::kTooManyInstances) << s;
  EXPECT_NE(s.message().find("\"cfg\" allows at most 2"), std::string::npos) << s;
  EXPECT_NE(s.message().find("\"/m/c\""), std::string::npos) << s;
  b.reset();
  ASSERT_TRUE(store_->OpenDatabase("/m/b", "cfg", kBigLimit, &b, 2).ok());  // existing: opens
  std::vector<DatabaseInfo> catalog;
  ASSERT_TRUE(store_->ListDatabases(&catalog).ok());
  EXPECT_EQ(catalog.size(), 3u);  // the refused path left nothing
  ASSERT_TRUE(a->Drop().ok());
  EXPECT_EQ(store_->InstanceCount("cfg"), 1u);
  EXPECT_TRUE(store_->OpenDatabase("/m/c", "cfg", kBigLimit, &c, 2).ok());
  a.reset();
  b.reset();
  c.reset();
  other.reset();
  Reopen();
  EXPECT_EQ(store_->InstanceCount("cfg"), 2u);
  EXPECT_EQ(store_->OpenDatabase("/m/d", "cfg", kBigLimit, &c, 2).code(), Code::kTooManyInstances);
}

}  // namespace
}  // namespace kvmesh::storage
