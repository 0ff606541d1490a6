// Storage side of replication: version vectors, deltas between replicas (push and anti-entropy),
// the conflict rule, tombstones and their collection, digests, and dropping a replica. Replicas
// are DatabaseStores in separate Stores (separate data dirs, so separate random node ids).
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "common/path.hpp"
#include "messages/replication.pb.h"
#include "messages/storage.pb.h"
#include "storage/database_store.hpp"
#include "storage/hlc.hpp"
#include "storage/keys.hpp"
#include "storage/record_cache.hpp"
#include "storage/store.hpp"
#include "storage/version_vector.hpp"
#include "storage_test_util.hpp"
#include "test_util.hpp"

namespace kvmesh::storage {
namespace {

using kvmesh::testing::FakeClock;
using kvmesh::testing::ListAllPages;
using kvmesh::testing::TempDir;

constexpr uint64_t kBigLimit = 1ull << 40;
constexpr char kPath[] = "/repl/db";

// ---------------------------------------------------------------------------------------------
// VersionVector

TEST(VersionVectorTest, AddInOrderAndOutOfOrder) {
  VersionVector v;
  EXPECT_EQ(v.Base(7), 0u);
  EXPECT_FALSE(v.Covers({7, 1}));
  v.Add({7, 1});
  v.Add({7, 2});
  EXPECT_EQ(v.Base(7), 2u);
  EXPECT_TRUE(v.Covers({7, 2}));
  EXPECT_FALSE(v.Covers({7, 3}));
  // Out of order: 5 and 4 wait above the gap at 3.
  v.Add({7, 5});
  v.Add({7, 4});
  EXPECT_EQ(v.Base(7), 2u);
  EXPECT_TRUE(v.Covers({7, 5}));
  EXPECT_TRUE(v.Covers({7, 4}));
  EXPECT_FALSE(v.Covers({7, 3}));
  EXPECT_EQ(v.Total(), 4u);
  // Filling the gap absorbs the extras into the base.
  v.Add({7, 3});
  EXPECT_EQ(v.Base(7), 5u);
  EXPECT_EQ(v.Total(), 5u);
  EXPECT_EQ(v.ToString().find("(+"), std::string::npos) << v.ToString();
  // Adding what is covered changes nothing.
  VersionVector before = v;
  v.Add({7, 2});
  v.Add({7, 5});
  EXPECT_EQ(v, before);
  // Origins are independent.
  v.Add({3, 2});
  EXPECT_EQ(v.Base(3), 0u);
  EXPECT_TRUE(v.Covers({3, 2}));
  EXPECT_FALSE(v.Covers({3, 1}));
  EXPECT_EQ(v.Origins(), (std::vector<uint64_t>{3, 7}));
  EXPECT_EQ(v.Total(), 6u);
}

TEST(VersionVectorTest, ExtrasAreBoundedByDroppingTheHighest) {
  const uint64_t max = VersionVector::kMaxExtrasPerOrigin;
  VersionVector v;
  for (uint64_t c = max + 10; c >= 2; --c) v.Add({1, c});  // never 1: all extras
  EXPECT_EQ(v.Base(1), 0u);
  EXPECT_EQ(v.Total(), max);
  EXPECT_TRUE(v.Covers({1, 2}));
  EXPECT_TRUE(v.Covers({1, max + 1}));
  EXPECT_FALSE(v.Covers({1, max + 2}));  // dropped: the highest go first
  v.Add({1, 1});
  EXPECT_EQ(v.Base(1), max + 1);
  EXPECT_EQ(v.Total(), max + 1);
}

TEST(VersionVectorTest, AddRangeNeedsNoGapBelowIt) {
  VersionVector v;
  for (uint64_t c = 1; c <= 3; ++c) v.Add({9, c});
  // The receiver lacks 4 and 5: a claim starting after 5 cannot be taken.
  v.AddRange(9, 5, 10);
  EXPECT_EQ(v.Base(9), 3u);
  v.AddRange(9, 3, 10);
  EXPECT_EQ(v.Base(9), 10u);
  // A claim below the base changes nothing.
  v.AddRange(9, 0, 8);
  EXPECT_EQ(v.Base(9), 10u);
  // Extras the new base reaches are absorbed, and consecutive ones beyond it too.
  v.Add({9, 12});
  v.Add({9, 13});
  v.Add({9, 15});
  v.AddRange(9, 10, 11);
  EXPECT_EQ(v.Base(9), 13u);
  EXPECT_EQ(v.Total(), 14u);
  EXPECT_TRUE(v.Covers({9, 15}));
  EXPECT_FALSE(v.Covers({9, 14}));
  // An unknown origin starts at 0, so a claim after 0 applies.
  v.AddRange(4, 0, 6);
  EXPECT_EQ(v.Base(4), 6u);
}

TEST(VersionVectorTest, IncludesAndMin) {
  VersionVector a;
  a.AddRange(1, 0, 5);
  a.AddRange(2, 0, 3);
  a.Add({2, 7});
  VersionVector b;
  b.AddRange(1, 0, 4);
  EXPECT_TRUE(a.Includes(b));
  EXPECT_FALSE(b.Includes(a));
  EXPECT_TRUE(a.Includes(a));
  EXPECT_TRUE(a.Includes(VersionVector()));
  VersionVector c;
  c.AddRange(2, 0, 3);
  c.Add({2, 8});  // an extra a lacks
  EXPECT_FALSE(a.Includes(c));
  c = VersionVector();
  c.AddRange(2, 0, 3);
  c.Add({2, 7});  // an extra a has
  EXPECT_TRUE(a.Includes(c));

  VersionVector d;
  d.AddRange(1, 0, 2);
  d.AddRange(3, 0, 9);
  const VersionVector min = VersionVector::Min(a, d);
  EXPECT_EQ(min.Origins(), std::vector<uint64_t>{1});  // 2 and 3 are missing on one side
  EXPECT_EQ(min.Base(1), 2u);
  EXPECT_EQ(min, VersionVector::Min(d, a));
  EXPECT_EQ(VersionVector::Min(a, a).Total(), 5u + 3u);  // a's extra at 7 is dropped
  EXPECT_TRUE(a.Includes(min));
  EXPECT_TRUE(d.Includes(min));
}

TEST(VersionVectorTest, SerializeParseRoundTrip) {
  VersionVector v;
  v.AddRange(0x0123abcd, 0, 5);
  v.AddRange(0x89ef0123, 0, 7);
  v.Add({0x89ef0123, 9});
  v.Add({0x89ef0123, 12});
  v.Add({UINT64_MAX, 3});
  VersionVector parsed;
  ASSERT_TRUE(VersionVector::Parse(v.Serialize(), &parsed));
  EXPECT_EQ(parsed, v);
  EXPECT_EQ(parsed.ToString(), v.ToString());
  EXPECT_EQ(v.ToString(), "{000000000123abcd:5, 0000000089ef0123:7(+2), ffffffffffffffff:0(+1)}");
  VersionVector empty;
  ASSERT_TRUE(VersionVector::Parse(VersionVector().Serialize(), &parsed));
  EXPECT_EQ(parsed, empty);
  EXPECT_EQ(empty.ToString(), "{}");
  EXPECT_NE(v, empty);
}

TEST(VersionVectorTest, ParseRejectsGarbage) {
  VersionVector v;
  v.AddRange(5, 0, 5);
  const VersionVector original = v;
  EXPECT_FALSE(VersionVector::Parse(std::string("\xff\xff\xff\xff", 4), &v));
  EXPECT_FALSE(VersionVector::Parse("not a vector at all", &v));

  auto parse = [&](const proto::VersionVector& message) {
    return VersionVector::Parse(message.SerializeAsString(), &v);
  };
  proto::VersionVector zero_origin;
  zero_origin.add_entries()->set_base(3);
  EXPECT_FALSE(parse(zero_origin));
  proto::VersionVector duplicate;
  for (int i = 0; i < 2; ++i) {
    auto* entry = duplicate.add_entries();
    entry->set_origin(4);
    entry->set_base(1);
  }
  EXPECT_FALSE(parse(duplicate));
  proto::VersionVector extra_below_base;
  auto* entry = extra_below_base.add_entries();
  entry->set_origin(4);
  entry->set_base(10);
  entry->add_extras(10);
  EXPECT_FALSE(parse(extra_below_base));
  proto::VersionVector unsorted_extras;
  entry = unsorted_extras.add_entries();
  entry->set_origin(4);
  entry->add_extras(9);
  entry->add_extras(7);
  EXPECT_FALSE(parse(unsorted_extras));
  EXPECT_EQ(v, original);  // untouched by every failed parse

  // Extras that continue the base are accepted and absorbed.
  proto::VersionVector continuing;
  entry = continuing.add_entries();
  entry->set_origin(4);
  entry->set_base(2);
  entry->add_extras(3);
  entry->add_extras(5);
  ASSERT_TRUE(parse(continuing));
  EXPECT_EQ(v.Base(4), 3u);
  EXPECT_TRUE(v.Covers({4, 5}));
  EXPECT_EQ(v.Total(), 4u);
}

// Issue 19: an origin whose copy was dropped leaves the entries once the vector covers it
// through its last counter, and not before.
TEST(VersionVectorTest, ARetiredOriginIsCompactedOnlyOnceCoveredThroughItsLastCounter) {
  constexpr uint64_t kLive = 7;
  constexpr uint64_t kGone = 9;
  VersionVector v;
  v.AddRange(kLive, 0, 4);
  v.AddRange(kGone, 0, 3);
  EXPECT_TRUE(v.Retire(kGone, 5));
  EXPECT_EQ(v.entry_count(), 2u) << "compacted while counters 4 and 5 are missing: "
                                 << v.ToString();
  EXPECT_TRUE(v.retired().empty());
  EXPECT_EQ(v.retiring().size(), 1u);
  v.Add({kGone, 5});  // out of order: 4 still missing
  EXPECT_EQ(v.entry_count(), 2u) << v.ToString();
  v.Add({kGone, 4});
  EXPECT_EQ(v.entry_count(), 1u) << v.ToString();
  EXPECT_EQ(v.retired(), (std::map<uint64_t, uint64_t>{{kGone, 5}}));
  EXPECT_TRUE(v.retiring().empty());
  EXPECT_EQ(v.ToString(), "{0000000000000007:4} +1 retired");
  // Learnt once covered: compacted at once; learnt twice: nothing changes.
  VersionVector w;
  w.AddRange(kGone, 0, 5);
  EXPECT_TRUE(w.Retire(kGone, 5));
  EXPECT_EQ(w.entry_count(), 0u);
  EXPECT_FALSE(w.Retire(kGone, 5));
  // A claim below what the vector holds is false: ignored.
  VersionVector x;
  x.AddRange(kGone, 0, 3);
  x.Add({kGone, 8});
  EXPECT_FALSE(x.Retire(kGone, 5));
  EXPECT_FALSE(x.Retire(kGone, 0));
  EXPECT_TRUE(x.retired().empty() && x.retiring().empty());
  // Stored with the vector (the database's meta), retiring included.
  VersionVector parsed;
  ASSERT_TRUE(v.Retire(11, 3));
  ASSERT_TRUE(VersionVector::Parse(v.Serialize(), &parsed));
  EXPECT_EQ(parsed, v);
  EXPECT_EQ(parsed.retiring().size(), 1u);
}

// Compaction changes the representation, never the meaning: every query answers the same for a
// vector holding the origin retired and one holding it as an entry.
TEST(VersionVectorTest, RetiredOriginsKeepTheirMeaning) {
  constexpr uint64_t kLive = 7;
  constexpr uint64_t kGone = 9;
  VersionVector entry;  // as a replica that never heard of the retirement
  entry.AddRange(kLive, 0, 4);
  entry.Add({kLive, 6});
  entry.AddRange(kGone, 0, 5);
  VersionVector retired = entry;
  ASSERT_TRUE(retired.Retire(kGone, 5));
  ASSERT_EQ(retired.entry_count(), 1u);
  EXPECT_NE(retired, entry);                    // another representation...
  EXPECT_EQ(retired.Digest(), entry.Digest());  // ...of the same coverage, on every node
  EXPECT_EQ(retired.Total(), entry.Total());
  EXPECT_EQ(retired.Origins(), entry.Origins());
  EXPECT_TRUE(retired.Includes(entry));
  EXPECT_TRUE(entry.Includes(retired));
  EXPECT_TRUE(retired.OriginsLacking(entry).empty());
  EXPECT_TRUE(entry.OriginsLacking(retired).empty());
  EXPECT_EQ(retired.Base(kGone), 5u);
  EXPECT_TRUE(retired.Covers({kGone, 5}));
  EXPECT_FALSE(retired.Covers({kGone, 6}));
  // A replica behind on the retired origin lacks it against both, and the minimum (what
  // tombstone collection goes by) is its own base either way.
  VersionVector behind;
  behind.AddRange(kLive, 0, 4);
  behind.AddRange(kGone, 0, 2);
  EXPECT_EQ(behind.OriginsLacking(retired), (std::vector<uint64_t>{kLive, kGone}));
  EXPECT_EQ(behind.OriginsLacking(retired), behind.OriginsLacking(entry));
  EXPECT_FALSE(behind.Includes(retired));
  EXPECT_TRUE(retired.Includes(behind));
  EXPECT_EQ(VersionVector::Min(retired, behind).Base(kGone), 2u);
  EXPECT_EQ(VersionVector::Min(behind, retired).Base(kGone), 2u);
  EXPECT_EQ(VersionVector::Min(retired, entry).Base(kGone), 5u);
  EXPECT_EQ(VersionVector::Min(retired, VersionVector()).Base(kGone), 0u);
  // A write of the origin above its last counter (a false announcement) is not lost.
  VersionVector wrong = retired;
  wrong.Add({kGone, 6});
  EXPECT_TRUE(wrong.Covers({kGone, 6}));
  EXPECT_EQ(wrong.Base(kGone), 6u);
  EXPECT_TRUE(wrong.retired().empty());
}

// SortDots orders dots as std::sort by (origin, counter) does: one origin or several, counters
// close together or 64 bits apart, repeated dots, few dots, many origins.
TEST(VersionVectorTest, SortDotsOrdersAsStdSortDoes) {
  std::mt19937_64 random(7);
  auto by_dot = [](const Dot& a, const Dot& b) {
    return std::tie(a.origin, a.counter) < std::tie(b.origin, b.counter);
  };
  struct Case {
    size_t count;
    uint64_t origins;
    uint64_t counter_span;  // 0: any 64-bit counter
  };
  const Case cases[] = {{5000, 1, 100000}, {5000, 3, 1u << 30}, {20000, 2, 0},       {5000, 1, 1},
                        {300, 4, 1000},    {5000, 100, 1000},   {70000, 5, 5000000}, {1024, 1, 0}};
  for (const Case& c : cases) {
    std::vector<Dot> dots(c.count);
    for (Dot& dot : dots) {
      dot.origin = (random() % c.origins) * 0x9e3779b97f4a7c15ull;  // spread, not in order
      dot.counter = c.counter_span == 0 ? random() : 1000 + random() % c.counter_span;
    }
    std::vector<Dot> expected = dots;
    std::sort(expected.begin(), expected.end(), by_dot);
    SortDots(&dots);
    ASSERT_EQ(dots.size(), expected.size());
    size_t wrong = 0;
    for (size_t i = 0; i < dots.size(); ++i) {
      wrong += dots[i].origin != expected[i].origin || dots[i].counter != expected[i].counter;
    }
    EXPECT_EQ(wrong, 0u) << c.count << " dots of " << c.origins << " origins, counters within "
                         << c.counter_span;
  }
  std::vector<Dot> none;
  SortDots(&none);
  EXPECT_TRUE(none.empty());
}

// What travels between replicas stays small however many copies came and went: the entries
// and a digest of the retired set, which a receiver holding the same set completes.
TEST(VersionVectorTest, SerializedSizeStaysSmallAfterManyRetiredOrigins) {
  VersionVector v;
  VersionVector uncompacted;
  for (uint64_t origin = 1; origin <= 100; ++origin) {
    const uint64_t id = origin * 0x9e3779b97f4a7c15ull;  // random-looking, as origins are
    v.AddRange(id, 0, 1000 + origin);
    uncompacted.AddRange(id, 0, 1000 + origin);
    ASSERT_TRUE(v.Retire(id, 1000 + origin));
  }
  v.AddRange(0xabcdef0123456789ull, 0, 50);
  uncompacted.AddRange(0xabcdef0123456789ull, 0, 50);
  ASSERT_EQ(v.entry_count(), 1u);
  const std::string compact = v.SerializeForPeer(false);
  EXPECT_LT(compact.size(), 40u) << "bytes for 1 entry and 100 retired origins";
  EXPECT_GT(uncompacted.SerializeForPeer(false).size(), 1500u);
  // The receiver holds the same set: it completes the vector from the digest alone.
  VersionVector parsed;
  VersionVector::WireRetired wire;
  ASSERT_TRUE(VersionVector::Parse(compact, &parsed, &wire));
  EXPECT_FALSE(wire.complete);
  EXPECT_EQ(wire.digest, v.RetiredDigest());
  EXPECT_FALSE(parsed.Includes(uncompacted)) << "retired origins counted without their set";
  parsed.AdoptRetired(v);
  EXPECT_EQ(parsed, v);
  EXPECT_EQ(parsed.Digest(), uncompacted.Digest());
  // With the list, complete on its own; to a receiver that holds them as entries, mirrored.
  ASSERT_TRUE(VersionVector::Parse(v.SerializeForPeer(true), &parsed, &wire));
  EXPECT_TRUE(wire.complete);
  EXPECT_EQ(parsed, v);
  ASSERT_TRUE(VersionVector::Parse(v.SerializeForPeer(false, &uncompacted), &parsed, &wire));
  EXPECT_TRUE(parsed.Includes(uncompacted)) << "mirrored entries cover them without the set";
}

// ---------------------------------------------------------------------------------------------
// Replicas

/// One replica: its own data dir, Store (and so node id) and handle on the database kPath.
struct Replica {
  explicit Replica(uint64_t limit = kBigLimit, StoreOptions options = {}) : limit(limit) {
    Open(std::move(options));
  }

  /// (Re)opens the store and the database, closing them first.
  void Open(StoreOptions options = {}) {
    db.reset();
    store.reset();
    options.path = dir / "data";
    Status s = Store::Open(options, &store);
    ASSERT_TRUE(s.ok()) << s;
    s = store->OpenDatabase(kPath, "cfg", limit, &db);
    ASSERT_TRUE(s.ok()) << s;
  }

  /// The origin of this copy's writes.
  uint64_t node() const { return db->origin(); }

  TempDir dir;
  uint64_t limit;
  std::shared_ptr<Store> store;
  std::unique_ptr<DatabaseStore> db;
};

/// Every live key and value, listed page by page.
std::map<std::string, std::string> Contents(const DatabaseStore& db) {
  std::map<std::string, std::string> out;
  ListOptions options;
  options.with_values = true;
  ListAllPages(db, options, [&](const ListPage& page) {
    for (size_t i = 0; i < page.keys.size(); ++i) out[page.keys[i]] = page.values[i];
  });
  return out;
}

/// The O(1) counters agree with what is stored: digest, used bytes and key count.
void ExpectConsistent(const DatabaseStore& db) {
  uint64_t digest = 0;
  Status s = db.ComputeDigest(&digest);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(db.digest(), digest);
  const auto contents = Contents(db);
  uint64_t used = 0;
  for (const auto& [key, value] : contents) used += key.size() + value.size();
  EXPECT_EQ(db.Stats().used_bytes, used);
  EXPECT_EQ(db.Stats().key_count, contents.size());
}

/// Both replicas hold the same writes and the same data.
void ExpectSame(const DatabaseStore& a, const DatabaseStore& b) {
  EXPECT_EQ(Contents(a), Contents(b));
  EXPECT_EQ(a.digest(), b.digest());
  EXPECT_EQ(a.version_vector(), b.version_vector())
      << a.version_vector().ToString() << " vs " << b.version_vector().ToString();
  EXPECT_EQ(a.tombstone_count(), b.tombstone_count());
  EXPECT_EQ(a.Stats().used_bytes, b.Stats().used_bytes);
  EXPECT_EQ(a.Stats().key_count, b.Stats().key_count);
}

proto::Delta ParseDelta(const std::string& bytes) {
  proto::Delta delta;
  EXPECT_TRUE(delta.ParseFromString(bytes));
  return delta;
}

/// A delta of one hand-made record, for deterministic versions.
std::string RecordDelta(const std::string& key, const std::string& value, uint64_t origin,
                        uint64_t counter, uint64_t hlc, bool tombstone = false) {
  proto::Delta delta;
  proto::DeltaEntry* entry = delta.add_entries();
  entry->set_key(key);
  proto::Record* record = entry->mutable_record();
  record->set_value(value);
  record->set_tombstone(tombstone);
  record->mutable_version()->set_origin(origin);
  record->mutable_version()->set_counter(counter);
  record->mutable_version()->set_hlc(hlc);
  return delta.SerializeAsString();
}

DatabaseStore::ApplyResult Apply(DatabaseStore& db, const std::string& delta) {
  DatabaseStore::ApplyResult result;
  Status s = db.ApplyDelta(delta, &result);
  EXPECT_TRUE(s.ok()) << s;
  return result;
}

struct SyncStats {
  size_t rounds = 0;
  size_t entries = 0;
};

/// Anti-entropy from `from` to `to` in chunks of about `max_bytes`, as a peer would pull: ask
/// with the current vector, apply, repeat while the sender says there is more. Checks that every
/// chunk stays within the budget plus one entry.
SyncStats Sync(const DatabaseStore& from, DatabaseStore& to, size_t max_bytes = 1 << 20) {
  SyncStats stats;
  bool more = true;
  while (more) {
    std::string chunk;
    Status s = from.DeltaSince(to.version_vector(), max_bytes, &chunk, &more);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) break;
    const proto::Delta delta = ParseDelta(chunk);
    size_t largest = 0;
    for (const auto& entry : delta.entries()) largest = std::max(largest, entry.ByteSizeLong());
    proto::Delta ranges;
    *ranges.mutable_ranges() = delta.ranges();
    // At most the budget, plus the one entry that crossed it (with its framing), plus the
    // coverage ranges (a few bytes per origin).
    EXPECT_LE(chunk.size(), max_bytes + largest + 4 + ranges.ByteSizeLong())
        << "round " << stats.rounds;
    const VersionVector before = to.version_vector();
    Apply(to, chunk);
    ++stats.rounds;
    stats.entries += delta.entries_size();
    if (more) {
      // Every round makes progress, so pulling terminates.
      EXPECT_NE(to.version_vector(), before) << "round " << stats.rounds;
      if (to.version_vector() == before || stats.rounds > 100000) break;
    }
  }
  return stats;
}

std::string RawGet(Store& store, const std::string& key, bool* found) {
  std::string value;
  rocksdb::Status rs = store.db()->Get(rocksdb::ReadOptions(), key, &value);
  EXPECT_TRUE(rs.ok() || rs.IsNotFound()) << rs.ToString();
  *found = rs.ok();
  return value;
}

bool RawExists(Store& store, const std::string& key) {
  bool found = false;
  RawGet(store, key, &found);
  return found;
}

/// RocksDB keys in [begin, end).
size_t KeysBetween(Store& store, const std::string& begin, const std::string& end) {
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions options;
  options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(store.db()->NewIterator(options));
  size_t count = 0;
  for (it->Seek(begin); it->Valid(); it->Next()) ++count;
  EXPECT_TRUE(it->status().ok());
  return count;
}

/// RocksDB keys under "d<id>": every record, index entry and meta of the database.
size_t RawKeyCount(Store& store, uint64_t id) {
  return KeysBetween(store, keys::DatabasePrefix(id), keys::DatabasePrefixEnd(id));
}

/// The current (origin, counter) of the stored record of `key`, or (0, 0) if none.
Dot StoredDot(Store& store, uint64_t id, const std::string& key) {
  bool found = false;
  const std::string bytes = RawGet(store, keys::DataPrefix(id) + key, &found);
  proto::Record record;
  if (!found || !record.ParseFromString(bytes)) return Dot{0, 0};
  return Dot{record.version().origin(), record.version().counter()};
}

/// The members of every dot range of database `id` ("p", storage/keys.hpp): (dot, key), in key
/// order of the ranges.
std::vector<std::pair<Dot, std::string>> RangeMembers(Store& store, uint64_t id) {
  std::vector<std::pair<Dot, std::string>> out;
  const std::string begin = keys::DotRangePrefix(id);
  const std::string end = keys::PrefixSuccessor(begin);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions options;
  options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(store.db()->NewIterator(options));
  for (it->Seek(begin); it->Valid(); it->Next()) {
    proto::DotRange range;
    EXPECT_TRUE(range.ParseFromArray(it->value().data(), static_cast<int>(it->value().size())));
    const uint64_t origin = keys::DecodeBigEndian64(it->key().data() + 10);
    const uint64_t first = keys::DecodeBigEndian64(it->key().data() + 18);
    for (const auto& member : range.members()) {
      out.emplace_back(Dot{origin, first + member.offset()}, member.key());
    }
  }
  EXPECT_TRUE(it->status().ok());
  return out;
}

/// Like RawKeyCount, but a dot range counts as its members whose record still has their dot, as
/// if each were a per-dot index entry: one index entry per current record is what both layouts
/// keep. Stale members (left in their range by an overwrite, an erase or a removal, by design)
/// are not counted.
size_t IndexedKeyCount(Store& store, uint64_t id) {
  size_t members = 0;
  for (const auto& [dot, key] : RangeMembers(store, id)) {
    const Dot stored = StoredDot(store, id, key);
    if (stored.origin == dot.origin && stored.counter == dot.counter) ++members;
  }
  const std::string begin = keys::DotRangePrefix(id);
  const std::string end = keys::PrefixSuccessor(begin);
  size_t range_keys = 0;
  {
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions options;
    options.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(store.db()->NewIterator(options));
    for (it->Seek(begin); it->Valid(); it->Next()) ++range_keys;
  }
  return RawKeyCount(store, id) - range_keys + members;
}

/// "/k/0042": numbered keys that sort as their numbers.
std::string NumberedKey(int i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "/k/%04d", i);
  return std::string(buf);
}

uint64_t NowHlc() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count())
         << 16;
}

// A write's keys are staged in state the thread reuses between writes (DatabaseStore's write
// pool). A commit observer runs inside the write, on its thread; if it writes another database
// there, that write must not take the outer write's state, whose records the outer write still
// turns into its delta after the commit.
TEST(ReplicationTest, AWriteInsideACommitObserverLeavesTheOuterWritesDeltaIntact) {
  Replica a, b, c;
  int observed = 0;
  a.db->set_commit_observer([&] {
    ++observed;
    WriteBatch inner;
    inner.Put("/inner/1", "i1").Put("/inner/2", "i2").Put("/inner/3", "i3");
    EXPECT_TRUE(b.db->Write(inner).ok());
  });
  WriteBatch outer;
  outer.Put("/outer/1", "o1").Put("/outer/2", "o2");
  std::string delta;
  ASSERT_TRUE(a.db->Write(outer, &delta).ok());
  ASSERT_EQ(observed, 1);
  const proto::Delta parsed = ParseDelta(delta);
  ASSERT_EQ(parsed.entries_size(), 2);
  EXPECT_EQ(parsed.entries(0).key(), "/outer/1");
  EXPECT_EQ(parsed.entries(0).record().value(), "o1");
  EXPECT_EQ(parsed.entries(1).key(), "/outer/2");
  EXPECT_EQ(parsed.entries(1).record().value(), "o2");
  // The delta brings a third replica the outer write, and the inner one is whole.
  Apply(*c.db, delta);
  EXPECT_EQ(Contents(*c.db),
            (std::map<std::string, std::string>{{"/outer/1", "o1"}, {"/outer/2", "o2"}}));
  EXPECT_EQ(Contents(*b.db), (std::map<std::string, std::string>{
                                 {"/inner/1", "i1"}, {"/inner/2", "i2"}, {"/inner/3", "i3"}}));
  ExpectConsistent(*a.db);
  ExpectConsistent(*b.db);
  ExpectConsistent(*c.db);
}

// The write path rebuilds records in place in the state it reuses (ResetRecord, clearing Record
// field by field to keep its buffers): a record must keep nothing of the key the state last held,
// neither its expiry nor its tombstone, and a field added to Record must be cleared there too.
TEST(ReplicationTest, AReusedRecordKeepsNothingOfTheKeyItHeldBefore) {
  EXPECT_EQ(proto::Record::descriptor()->field_count(), 5)
      << "Record has a new field: clear it in ResetRecord (storage/database_store.cpp), then "
         "update this count";
  Replica a;
  const uint64_t id = a.db->id();
  auto stored = [&](const std::string& key) {
    bool found = false;
    proto::Record record;
    EXPECT_TRUE(record.ParseFromString(RawGet(*a.store, keys::DataPrefix(id) + key, &found)));
    EXPECT_TRUE(found) << key;
    return record;
  };
  WriteBatch first;
  first.Put("/a", "expiring", /*ttl_ms=*/600000).Put("/b", "x").Erase("/b");
  ASSERT_TRUE(a.db->Write(first).ok());
  ASSERT_GT(stored("/a").expires(), 0u);
  ASSERT_TRUE(stored("/b").tombstone());
  // The same number of keys again, so each state is reused: "/c" where "/a" was, and "/b"
  // over its own tombstone.
  WriteBatch second;
  second.Put("/c", "plain").Put("/b", "back");
  ASSERT_TRUE(a.db->Write(second).ok());
  const proto::Record c = stored("/c");
  EXPECT_EQ(c.value(), "plain");
  EXPECT_EQ(c.expires(), 0u) << "/c took the expiry of /a";
  EXPECT_FALSE(c.tombstone());
  const proto::Record b = stored("/b");
  EXPECT_EQ(b.value(), "back");
  EXPECT_FALSE(b.tombstone()) << "/b kept its tombstone flag";
  EXPECT_EQ(b.expires(), 0u);
  ExpectConsistent(*a.db);
}

// The write pool keeps what a thread's writes used, for the next one: bounded whatever the
// writes. Writes of fewer and fewer keys, each ending in a larger value, left every earlier
// write's large state unmeasured at the pool's tail (236 MB kept by 64 writes of 1.2 MiB values).
TEST(ReplicationTest, TheWritePoolStaysWithinItsBoundAfterWritesOfEverySize) {
  Replica a;
  const size_t bound = 4u << 20;
  for (const size_t value_size : {size_t{60} << 10, size_t{1200} << 10}) {
    for (int n = 64; n >= 1; --n) {
      WriteBatch batch;
      for (int i = 0; i + 1 < n; ++i)
        batch.Put("/k/" + std::to_string(n) + "/" + std::to_string(i), "v");
      batch.Put("/big/" + std::to_string(n), std::string(value_size, 'x'));
      ASSERT_TRUE(a.db->Write(batch).ok()) << n;
      ASSERT_LE(DatabaseStore::WritePoolBytesForTesting(), bound)
          << "after a write of " << n << " keys, the last with a value of " << value_size;
    }
  }
}

TEST(ReplicationTest, LocalWritesProduceDeltasThatReplicate) {
  Replica a, b;
  ASSERT_NE(a.node(), b.node());
  std::string pushes;  // concatenated pushes are one delta
  ASSERT_TRUE(a.db->Put("/x", "1", &pushes).ok());
  ASSERT_TRUE(a.db->Put("/y", "2", &pushes).ok());
  WriteBatch batch;
  batch.Put("/z", "3").Put("/x", "10").Put("/x", "11").Erase("/y").Erase("/never");
  ASSERT_TRUE(a.db->Write(batch, &pushes).ok());
  ASSERT_TRUE(a.db->Put("users//1/", "u", &pushes).ok());  // normalised before it is sent

  const proto::Delta delta = ParseDelta(pushes);
  // One entry per key a write left changed (the batch's first "/x" is overwritten within it),
  // and a claim over the batch's counters (3 to 7), which that "/x" is in no entry of.
  ASSERT_EQ(delta.entries_size(), 2 + 4 + 1);
  ASSERT_EQ(delta.ranges_size(), 1);
  EXPECT_EQ(delta.ranges(0).origin(), a.node());
  EXPECT_EQ(delta.ranges(0).after(), 2u);
  EXPECT_EQ(delta.ranges(0).through(), 7u);
  for (const auto& entry : delta.entries()) {
    EXPECT_EQ(entry.record().version().origin(), a.node());
    EXPECT_GT(entry.record().version().hlc(), 0u);
  }
  EXPECT_EQ(delta.entries(6).key(), "/users/1");
  EXPECT_TRUE(delta.entries(4).record().tombstone());  // "/y"

  const auto result = Apply(*b.db, pushes);
  EXPECT_EQ(result.applied, 7u);
  EXPECT_EQ(result.skipped, 0u);
  std::string value;
  ASSERT_TRUE(b.db->Get("/x", &value).ok());
  EXPECT_EQ(value, "11");
  EXPECT_EQ(b.db->Get("/y", &value).code(), Code::kNotFound);
  EXPECT_EQ(b.db->Get("/never", &value).code(), Code::kNotFound);
  EXPECT_EQ(Contents(*b.db),
            (std::map<std::string, std::string>{{"/x", "11"}, {"/z", "3"}, {"/users/1", "u"}}));
  EXPECT_EQ(b.db->tombstone_count(), 2u);
  // The overwritten "/x" of the batch was never sent, but the claim covers its counter: b's
  // vector is a's, with no gap holding back the base (and every later dot as an extra).
  EXPECT_EQ(b.db->version_vector(), a.db->version_vector());
  EXPECT_EQ(b.db->version_vector().ToString().find("(+"), std::string::npos)
      << b.db->version_vector().ToString();
  std::string next;
  ASSERT_TRUE(a.db->Put("/w", "4", &next).ok());
  Apply(*b.db, next);
  EXPECT_EQ(b.db->version_vector(), a.db->version_vector());
  EXPECT_EQ(Sync(*a.db, *b.db).entries, 0u);
  ExpectSame(*a.db, *b.db);
  ExpectConsistent(*b.db);
}

// A counter the writer had to skip (a write of its own origin it learnt back from a peer: an
// earlier incarnation's) is not in the write's delta: the delta claims no range over it, so a
// receiver never covers a write it does not hold.
TEST(ReplicationTest, APushClaimsNoRangeOverACounterItSkipped) {
  Replica a, b;
  std::string push;
  ASSERT_TRUE(a.db->Put("/x", "1", &push).ok());  // counter 1
  Apply(*b.db, push);
  Apply(*a.db, RecordDelta("/old", "o", a.node(), 3, NowHlc()));  // not sent to b
  push.clear();
  WriteBatch batch;
  batch.Put("/y", "1").Put("/y", "2");  // counters 2 and 4 (3 is skipped); the first replaced
  ASSERT_TRUE(a.db->Write(batch, &push).ok());
  const proto::Delta delta = ParseDelta(push);
  EXPECT_EQ(delta.entries_size(), 1);
  EXPECT_EQ(delta.ranges_size(), 0) << "a range over counter 3, whose record it does not carry";
  Apply(*b.db, push);
  EXPECT_FALSE(b.db->version_vector().Covers({a.node(), 3}));
  EXPECT_TRUE(b.db->version_vector().Covers({a.node(), 4}));
  Sync(*a.db, *b.db);  // anti-entropy brings "/old" and closes the gap
  ExpectSame(*a.db, *b.db);
}

TEST(ReplicationTest, ApplyIsIdempotentAndOrderIndependent) {
  Replica a, forward, reversed, twice;
  std::vector<std::string> deltas(7);
  ASSERT_TRUE(a.db->Put("/x", "1", &deltas[0]).ok());
  ASSERT_TRUE(a.db->Put("/y", "y", &deltas[1]).ok());
  ASSERT_TRUE(a.db->Put("/x", "2", &deltas[2]).ok());
  ASSERT_TRUE(a.db->Erase("/y", &deltas[3]).ok());
  WriteBatch batch;
  batch.Put("/z", "z").Erase("/x").Put("/w", "w");
  ASSERT_TRUE(a.db->Write(batch, &deltas[4]).ok());
  ASSERT_TRUE(a.db->Put("/y", "again", &deltas[5]).ok());
  ASSERT_TRUE(a.db->Put("/w", "w2", &deltas[6]).ok());

  for (const std::string& d : deltas) Apply(*forward.db, d);
  for (auto it = deltas.rbegin(); it != deltas.rend(); ++it) Apply(*reversed.db, *it);
  const std::vector<size_t> shuffled = {4, 0, 6, 2, 5, 3, 1};
  for (size_t i : shuffled) Apply(*twice.db, deltas[i]);
  for (size_t i : shuffled) {
    const auto again = Apply(*twice.db, deltas[i]);
    EXPECT_EQ(again.applied, 0u) << i;
    EXPECT_EQ(again.skipped, static_cast<uint64_t>(ParseDelta(deltas[i]).entries_size())) << i;
  }
  // A's own writes coming back change nothing either.
  const uint64_t digest = a.db->digest();
  for (const std::string& d : deltas) EXPECT_EQ(Apply(*a.db, d).applied, 0u);
  EXPECT_EQ(a.db->digest(), digest);

  const std::map<std::string, std::string> expected = {{"/y", "again"}, {"/z", "z"}, {"/w", "w2"}};
  EXPECT_EQ(Contents(*a.db), expected);
  for (Replica* r : {&forward, &reversed, &twice}) {
    ExpectSame(*a.db, *r->db);
    ExpectConsistent(*r->db);
  }
  EXPECT_EQ(a.db->tombstone_count(), 1u);  // "/x"
}

TEST(ReplicationTest, ConcurrentWritesConvergeOnHighestHlcThenOrigin) {
  // Natural concurrency: each replica writes the key, then they exchange pushes.
  Replica a, b;
  std::string from_a, from_b;
  ASSERT_TRUE(a.db->Put("/k", "from-a", &from_a).ok());
  ASSERT_TRUE(b.db->Put("/k", "from-b", &from_b).ok());
  const proto::Version va = ParseDelta(from_a).entries(0).record().version();
  const proto::Version vb = ParseDelta(from_b).entries(0).record().version();
  const bool a_wins = std::make_pair(va.hlc(), va.origin()) > std::make_pair(vb.hlc(), vb.origin());
  EXPECT_EQ(Apply(*a.db, from_b).applied, a_wins ? 0u : 1u);
  EXPECT_EQ(Apply(*b.db, from_a).applied, a_wins ? 1u : 0u);
  std::string value_a, value_b;
  ASSERT_TRUE(a.db->Get("/k", &value_a).ok());
  ASSERT_TRUE(b.db->Get("/k", &value_b).ok());
  EXPECT_EQ(value_a, a_wins ? "from-a" : "from-b");
  EXPECT_EQ(value_b, value_a);
  ExpectSame(*a.db, *b.db);

  // Chosen versions, every arrival order: the highest hlc wins, the origin breaks a tie.
  const std::vector<std::string> writes = {
      RecordDelta("/k", "low-hlc", 900, 1, 1000),
      RecordDelta("/k", "tie-low-origin", 100, 1, 2000),
      RecordDelta("/k", "tie-high-origin", 200, 1, 2000),
      RecordDelta("/k", "older", 300, 1, 1500),
  };
  std::vector<size_t> order = {0, 1, 2, 3};
  Replica c;
  std::set<uint64_t> digests;
  int permutations = 0;
  do {
    std::unique_ptr<DatabaseStore> db;
    const std::string path = "/perm/" + std::to_string(permutations++);
    ASSERT_TRUE(c.store->OpenDatabase(path, "cfg", kBigLimit, &db).ok());
    for (size_t i : order) Apply(*db, writes[i]);
    std::string value;
    ASSERT_TRUE(db->Get("/k", &value).ok());
    EXPECT_EQ(value, "tie-high-origin");
    digests.insert(db->digest());
    EXPECT_EQ(db->version_vector().Total(), 4u);  // losers are seen too
    ExpectConsistent(*db);
  } while (std::next_permutation(order.begin(), order.end()));
  EXPECT_EQ(permutations, 24);
  EXPECT_EQ(digests.size(), 1u);
}

TEST(ReplicationTest, TombstoneBeatsOlderPutAndLosesToNewerPut) {
  Replica a;
  const std::string old_put = RecordDelta("/k", "old", 1, 1, 1000);
  const std::string tombstone = RecordDelta("/k", "", 2, 1, 2000, /*tombstone=*/true);
  const std::string new_put = RecordDelta("/k", "new", 3, 1, 3000);
  std::string value;

  Apply(*a.db, old_put);
  ASSERT_TRUE(a.db->Get("/k", &value).ok());
  EXPECT_EQ(Apply(*a.db, tombstone).applied, 1u);
  EXPECT_EQ(a.db->Get("/k", &value).code(), Code::kNotFound);
  EXPECT_EQ(a.db->tombstone_count(), 1u);
  EXPECT_EQ(a.db->Stats().key_count, 0u);
  EXPECT_EQ(Apply(*a.db, new_put).applied, 1u);
  ASSERT_TRUE(a.db->Get("/k", &value).ok());
  EXPECT_EQ(value, "new");
  EXPECT_EQ(a.db->tombstone_count(), 0u);

  // The other order: the tombstone first, then the older put, which must stay deleted.
  std::unique_ptr<DatabaseStore> other;
  ASSERT_TRUE(a.store->OpenDatabase("/other", "cfg", kBigLimit, &other).ok());
  Apply(*other, tombstone);
  const auto result = Apply(*other, old_put);
  EXPECT_EQ(result.applied, 0u);
  EXPECT_EQ(result.skipped, 1u);
  EXPECT_EQ(other->Get("/k", &value).code(), Code::kNotFound);
  EXPECT_EQ(other->Stats().key_count, 0u);
  EXPECT_EQ(other->Stats().used_bytes, 0u);
  EXPECT_TRUE(Contents(*other).empty());
  Apply(*other, new_put);
  ExpectSame(*a.db, *other);
}

TEST(ReplicationTest, LocalWriteOrdersAfterTimestampsReceived) {
  // A peer whose clock runs an hour ahead deletes the key; a local write made afterwards must
  // still win everywhere, so the store's clock observes the remote timestamp.
  Replica a, b;
  ASSERT_TRUE(a.db->Put("/k", "before").ok());
  const uint64_t future = NowHlc() + (uint64_t{3600 * 1000} << 16);
  const std::string remote = RecordDelta("/k", "", 42, 1, future, /*tombstone=*/true);
  EXPECT_EQ(Apply(*a.db, remote).applied, 1u);
  std::string value;
  EXPECT_EQ(a.db->Get("/k", &value).code(), Code::kNotFound);
  std::string push;
  ASSERT_TRUE(a.db->Put("/k", "after", &push).ok());
  EXPECT_GT(ParseDelta(push).entries(0).record().version().hlc(), future);
  ASSERT_TRUE(a.db->Get("/k", &value).ok());
  EXPECT_EQ(value, "after");
  // A replica that has the remote tombstone takes the local write over it.
  Apply(*b.db, remote);
  EXPECT_EQ(Apply(*b.db, push).applied, 1u);
  ASSERT_TRUE(b.db->Get("/k", &value).ok());
  EXPECT_EQ(value, "after");
  // The clock is not persisted: after a restart it is back at the wall clock, an hour behind,
  // yet a write still orders after the record it replaces.
  const uint64_t after_hlc = ParseDelta(push).entries(0).record().version().hlc();
  a.Open();
  push.clear();
  ASSERT_TRUE(a.db->Put("/k", "after restart", &push).ok());
  EXPECT_GT(ParseDelta(push).entries(0).record().version().hlc(), after_hlc);
  EXPECT_EQ(Apply(*b.db, push).applied, 1u);
  ASSERT_TRUE(b.db->Get("/k", &value).ok());
  EXPECT_EQ(value, "after restart");
}

// A write takes its timestamps at once (Store::NextTimestamps): every operation's is its own,
// later than the one before it in the write, and above the record it replaces, even after a
// restart put the clock back behind that record; a delta received moves the clock past every
// timestamp in it, so a write of another key orders after them too.
TEST(ReplicationTest, ABatchsTimestampsFollowItsOperationsAndOrderAfterWhatTheyReplace) {
  Replica a;
  const uint64_t future = NowHlc() + (uint64_t{3600 * 1000} << 16);
  // Two records of an hour ahead, the later one in the middle of the delta.
  proto::Delta remote = ParseDelta(RecordDelta("/k/3", "remote", 42, 1, future - 5));
  *remote.add_entries() = ParseDelta(RecordDelta("/k/5", "remote", 42, 2, future)).entries(0);
  *remote.add_entries() = ParseDelta(RecordDelta("/k/6", "remote", 42, 3, future - 9)).entries(0);
  EXPECT_EQ(Apply(*a.db, remote.SerializeAsString()).applied, 3u);
  std::string push;
  ASSERT_TRUE(a.db->Put("/other", "v", &push).ok());
  EXPECT_GT(ParseDelta(push).entries(0).record().version().hlc(), future);

  // After a restart the clock is back at the wall clock, an hour behind /k/5's record.
  a.Open();
  WriteBatch batch;
  for (int i = 0; i < 5; ++i) batch.Put("/k/" + std::to_string(i), "v");
  batch.Put("/k/5", "over the future");
  batch.Erase("/k/1");  // its second operation in the write
  push.clear();
  ASSERT_TRUE(a.db->Write(batch, &push).ok());
  const proto::Delta pushed = ParseDelta(push);
  ASSERT_EQ(pushed.entries_size(), 6);
  std::map<std::string, uint64_t> hlc;
  std::set<uint64_t> distinct;
  for (const auto& entry : pushed.entries()) {
    hlc[entry.key()] = entry.record().version().hlc();
    distinct.insert(entry.record().version().hlc());
  }
  EXPECT_EQ(distinct.size(), 6u);
  EXPECT_GT(hlc["/k/5"], future);
  EXPECT_GT(hlc["/k/3"], future - 5);
  // The erase of /k/1 came last: later than every put of the write.
  for (const auto& [key, t] : hlc) {
    if (key != "/k/1") EXPECT_LT(t, hlc["/k/1"]) << key;
  }
  std::string value;
  ASSERT_TRUE(a.db->Get("/k/5", &value).ok());
  EXPECT_EQ(value, "over the future");
  // A replica holding the remote records takes the write over them.
  Replica b;
  Apply(*b.db, remote.SerializeAsString());
  EXPECT_EQ(Apply(*b.db, push).applied, 6u);
  ASSERT_TRUE(b.db->Get("/k/5", &value).ok());
  EXPECT_EQ(value, "over the future");
  EXPECT_EQ(b.db->Get("/k/1", &value).code(), Code::kNotFound);
}

// A delta whose timestamp no clock could reach (a peer's bug or an attacker's) is refused whole,
// naming it: taken, it would pull this node's clock to where counting on wraps around, and a
// write would then order before the record it replaces on every replica.
TEST(ReplicationTest, ADeltaWithATimestampPastAnyClockIsRefusedAndTheClockKept) {
  Replica a;
  proto::Delta remote = ParseDelta(RecordDelta("/k/1", "v", 42, 1, NowHlc()));
  *remote.add_entries() =
      ParseDelta(RecordDelta("/k/2", "v", 42, 2, storage::hlc::kMaxTimestamp)).entries(0);
  DatabaseStore::ApplyResult result;
  const Status s = a.db->ApplyDelta(remote.SerializeAsString(), &result);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  EXPECT_NE(
      s.message().find("entry 1 has the timestamp " + std::to_string(storage::hlc::kMaxTimestamp)),
      std::string::npos)
      << s;
  std::string value;
  EXPECT_EQ(a.db->Get("/k/1", &value).code(), Code::kNotFound);
  // The clock stayed where it was: a local write is near the wall clock.
  std::string push;
  ASSERT_TRUE(a.db->Put("/k/3", "local", &push).ok());
  EXPECT_LT(ParseDelta(push).entries(0).record().version().hlc(),
            NowHlc() + (uint64_t{60 * 1000} << 16));
  // The last timestamp below the bound is taken, and a write after it orders after it.
  remote.mutable_entries(1)->mutable_record()->mutable_version()->set_hlc(
      storage::hlc::kMaxTimestamp - 1);
  EXPECT_EQ(Apply(*a.db, remote.SerializeAsString()).applied, 2u);
  push.clear();
  ASSERT_TRUE(a.db->Put("/k/3", "after", &push).ok());
  EXPECT_GT(ParseDelta(push).entries(0).record().version().hlc(), storage::hlc::kMaxTimestamp - 1);
}

TEST(ReplicationTest, DeltaSinceEmptyVectorReturnsEverything) {
  Replica a, b;
  WriteBatch batch;
  for (int i = 0; i < 50; ++i) batch.Put("/k/" + std::to_string(i), "v" + std::to_string(i));
  ASSERT_TRUE(a.db->Write(batch).ok());
  for (int i = 0; i < 50; i += 5) ASSERT_TRUE(a.db->Erase("/k/" + std::to_string(i)).ok());
  for (int i = 1; i < 50; i += 5) ASSERT_TRUE(a.db->Put("/k/" + std::to_string(i), "new").ok());

  std::string chunk;
  bool more = true;
  ASSERT_TRUE(a.db->DeltaSince(VersionVector(), 1 << 20, &chunk, &more).ok());
  EXPECT_FALSE(more);
  const proto::Delta delta = ParseDelta(chunk);
  EXPECT_EQ(delta.entries_size(), 50);  // 40 live records and 10 tombstones, each once
  std::set<std::string> keys;
  for (const auto& entry : delta.entries()) keys.insert(entry.key());
  EXPECT_EQ(keys.size(), 50u);
  ASSERT_EQ(delta.ranges_size(), 1);
  EXPECT_EQ(delta.ranges(0).origin(), a.node());
  EXPECT_EQ(delta.ranges(0).after(), 0u);
  EXPECT_EQ(delta.ranges(0).through(), 50u + 10u + 10u);

  Apply(*b.db, chunk);
  ExpectSame(*a.db, *b.db);
  EXPECT_EQ(b.db->Stats().key_count, 40u);
  EXPECT_EQ(b.db->tombstone_count(), 10u);
  // Nothing is left to send.
  chunk.clear();
  ASSERT_TRUE(a.db->DeltaSince(b.db->version_vector(), 1 << 20, &chunk, &more).ok());
  EXPECT_FALSE(more);
  EXPECT_EQ(ParseDelta(chunk).entries_size(), 0);
  EXPECT_EQ(ParseDelta(chunk).ranges_size(), 0);
}

TEST(ReplicationTest, TinyBudgetSendsOneEntryPerChunk) {
  Replica a, b;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.db->Put("/k" + std::to_string(i), "v").ok());
  const SyncStats stats = Sync(*a.db, *b.db, /*max_bytes=*/1);
  EXPECT_EQ(stats.rounds, 5u);
  EXPECT_EQ(stats.entries, 5u);
  ExpectSame(*a.db, *b.db);
}

TEST(ReplicationTest, ChunkedSyncOfTwentyThousandKeysConverges) {
  Replica a, b;
  const std::string filler(40, 'f');
  for (int start = 0; start < 20000; start += 1000) {
    WriteBatch batch;
    for (int i = start; i < start + 1000; ++i) batch.Put("/k/" + std::to_string(i), filler);
    ASSERT_TRUE(a.db->Write(batch).ok());
  }
  for (int i = 0; i < 20000; i += 10) ASSERT_TRUE(a.db->Put("/k/" + std::to_string(i), "v2").ok());
  for (int i = 5; i < 20000; i += 100) ASSERT_TRUE(a.db->Erase("/k/" + std::to_string(i)).ok());
  // b has writes of its own, some on a's keys, made later (so with a higher hlc: a's clock runs
  // at most a millisecond ahead of the wall clock at this rate).
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  WriteBatch batch;
  for (int i = 0; i < 3000; ++i) batch.Put("/b/" + std::to_string(i), "b");
  for (int i = 0; i < 20000; i += 40) batch.Put("/k/" + std::to_string(i), "from-b");
  ASSERT_TRUE(b.db->Write(batch).ok());

  constexpr size_t kChunk = 64 << 10;
  const SyncStats to_b = Sync(*a.db, *b.db, kChunk);
  EXPECT_GT(to_b.rounds, 10u);  // ~20000 records of ~70 bytes in 64 KiB chunks
  EXPECT_LE(to_b.entries, 20000u);
  const SyncStats to_a = Sync(*b.db, *a.db, kChunk);
  EXPECT_GT(to_a.rounds, 1u);
  ExpectSame(*a.db, *b.db);
  ExpectConsistent(*a.db);
  ExpectConsistent(*b.db);
  EXPECT_EQ(a.db->Stats().key_count, 20000u - 200u + 3000u);
  std::string value;
  ASSERT_TRUE(a.db->Get("/k/40", &value).ok());
  EXPECT_EQ(value, "from-b");  // b wrote it later
  // Synced both ways: nothing is left in either direction.
  EXPECT_EQ(Sync(*a.db, *b.db, kChunk).entries, 0u);
  EXPECT_EQ(Sync(*b.db, *a.db, kChunk).entries, 0u);
}

TEST(ReplicationTest, CatchUpSendsOnlyTheCurrentRecordsOfNewWrites) {
  Replica a, b;
  WriteBatch batch;
  for (int i = 0; i < 1000; ++i) batch.Put("/k/" + std::to_string(i), "old");
  ASSERT_TRUE(a.db->Write(batch).ok());
  Sync(*a.db, *b.db);
  ExpectSame(*a.db, *b.db);
  const uint64_t base = a.db->version_vector().Base(a.node());

  // 100 writes on 60 keys: 40 of them overwrite a key written earlier in the 100.
  std::map<std::string, std::string> expected;
  for (int i = 0; i < 100; ++i) {
    const std::string key = "/k/" + std::to_string(i % 60);
    if (i == 99) {
      ASSERT_TRUE(a.db->Erase(key).ok());
      expected[key] = "<tombstone>";
    } else {
      ASSERT_TRUE(a.db->Put(key, "new" + std::to_string(i)).ok());
      expected[key] = "new" + std::to_string(i);
    }
  }
  std::string chunk;
  bool more = true;
  ASSERT_TRUE(a.db->DeltaSince(b.db->version_vector(), 1 << 20, &chunk, &more).ok());
  EXPECT_FALSE(more);
  const proto::Delta delta = ParseDelta(chunk);
  ASSERT_EQ(delta.entries_size(), 60);
  std::map<std::string, std::string> sent;
  for (const auto& entry : delta.entries()) {
    sent[entry.key()] = entry.record().tombstone() ? "<tombstone>" : entry.record().value();
    EXPECT_GT(entry.record().version().counter(), base);
  }
  EXPECT_EQ(sent, expected);
  ASSERT_EQ(delta.ranges_size(), 1);
  EXPECT_EQ(delta.ranges(0).after(), base);
  EXPECT_EQ(delta.ranges(0).through(), base + 100);
  Apply(*b.db, chunk);
  ExpectSame(*a.db, *b.db);
}

TEST(ReplicationTest, SupersededWritesAreNotSentButVectorsBecomeEqual) {
  Replica a, b;
  std::string last_push;
  for (int i = 0; i < 100; ++i) {
    last_push.clear();
    ASSERT_TRUE(a.db->Put("/k", "v" + std::to_string(i), &last_push).ok());
  }
  ASSERT_EQ(a.db->version_vector().Base(a.node()), 100u);
  // b got only the last push: it holds the value, but its vector has a gap below counter 100.
  Apply(*b.db, last_push);
  EXPECT_EQ(Contents(*b.db), Contents(*a.db));
  EXPECT_EQ(b.db->version_vector().Base(a.node()), 0u);
  EXPECT_TRUE(b.db->version_vector().Covers({a.node(), 100}));
  EXPECT_NE(b.db->version_vector(), a.db->version_vector());
  // Anti-entropy sends no record (b has the only current one), only the range.
  std::string chunk;
  bool more = true;
  ASSERT_TRUE(a.db->DeltaSince(b.db->version_vector(), 1 << 20, &chunk, &more).ok());
  const proto::Delta delta = ParseDelta(chunk);
  EXPECT_EQ(delta.entries_size(), 0);
  ASSERT_EQ(delta.ranges_size(), 1);
  EXPECT_EQ(delta.ranges(0).through(), 100u);
  Apply(*b.db, chunk);
  EXPECT_EQ(b.db->version_vector(), a.db->version_vector());
  ExpectSame(*a.db, *b.db);

  // From scratch, 100 writes of one key cost one entry.
  Replica c;
  EXPECT_EQ(Sync(*a.db, *c.db).entries, 1u);
  EXPECT_EQ(c.db->version_vector(), a.db->version_vector());
}

// Found by the chaos check: b had deleted "/k"; a put of "/k" acknowledged elsewhere had not
// reached b when a client deleted "/k" again through b. That delete came later and was
// acknowledged, so it must win once the replicas exchange their writes.
TEST(ReplicationTest, EraseOverATombstoneBeatsAnUnseenPut) {
  Replica a, b;
  ASSERT_TRUE(b.db->Erase("/k").ok());
  Sync(*b.db, *a.db);
  ASSERT_TRUE(a.db->Put("/k", "put-b-has-not-seen").ok());
  // The delete comes later in real time: b's clock is past the put's (the two stores of this
  // test could otherwise stamp both in the same millisecond).
  b.store->ObserveTimestamp(a.store->NextTimestamp());
  ASSERT_TRUE(b.db->Erase("/k").ok());
  Sync(*a.db, *b.db);
  Sync(*b.db, *a.db);
  std::string value;
  EXPECT_TRUE(a.db->Get("/k", &value).IsNotFound()) << value;
  EXPECT_TRUE(b.db->Get("/k", &value).IsNotFound()) << value;
  EXPECT_EQ(a.db->digest(), b.db->digest());
}

// The chaos check found this (seed 11): a put acknowledged through one node, then, within the
// same millisecond, a delete of the key through another node that had not seen the put yet. The
// put's node had taken more writes in that millisecond, so its logical counter made the older put
// win. Timestamps now carry the time below the millisecond, so the later write wins.
TEST(ReplicationTest, AWriteLaterInRealTimeWinsWithinTheSameMillisecond) {
  for (int round = 0; round < 20; ++round) {
    Replica a, b;
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(a.db->Put("/busy/" + std::to_string(i), "x").ok());
    }
    ASSERT_TRUE(a.db->Put("/k", "older").ok());
    ASSERT_TRUE(b.db->Erase("/k").ok());  // b has not seen the put
    Sync(*a.db, *b.db);
    Sync(*b.db, *a.db);
    std::string value;
    ASSERT_TRUE(a.db->Get("/k", &value).IsNotFound()) << "round " << round << ": " << value;
    ASSERT_TRUE(b.db->Get("/k", &value).IsNotFound()) << "round " << round << ": " << value;
  }
}

// The chaos check found this: a replica away while a key was deleted came back after the
// tombstone was collected, learnt the delete's dot only as covered, and kept the key. Within
// the grace period the tombstone itself is still there to send.
TEST(ReplicationTest, TombstoneGraceKeepsDeletesForAReplicaThatWasAway) {
  Replica a, b;
  ASSERT_TRUE(a.db->Put("/gone", "v").ok());
  Sync(*a.db, *b.db);  // b holds "/gone", then goes away
  ASSERT_TRUE(a.db->Erase("/gone").ok());
  const uint64_t before_erase = a.store->NextTimestamp() - (uint64_t{60000} << 16);
  uint64_t collected = 99;
  // Every replica a knows of has seen it, but it is younger than the grace period: kept.
  ASSERT_TRUE(a.db->CollectTombstones(a.db->version_vector(), before_erase, &collected).ok());
  EXPECT_EQ(collected, 0u);
  EXPECT_EQ(a.db->tombstone_count(), 1u);
  Sync(*a.db, *b.db);
  std::string value;
  EXPECT_TRUE(b.db->Get("/gone", &value).IsNotFound());
  EXPECT_EQ(a.db->digest(), b.db->digest());
  // Past its grace period it goes.
  ASSERT_TRUE(a.db->CollectTombstones(a.db->version_vector(), UINT64_MAX, &collected).ok());
  EXPECT_EQ(collected, 1u);
  ExpectConsistent(*a.db);
}

TEST(ReplicationTest, CollectTombstonesCoveredByStable) {
  Replica a, b;
  std::vector<std::string> pushes(5);
  ASSERT_TRUE(a.db->Put("/a", "1", &pushes[0]).ok());  // counter 1
  ASSERT_TRUE(a.db->Put("/b", "2", &pushes[1]).ok());  // 2
  ASSERT_TRUE(a.db->Put("/c", "3", &pushes[2]).ok());  // 3
  ASSERT_TRUE(a.db->Erase("/a", &pushes[3]).ok());     // 4
  ASSERT_TRUE(a.db->Erase("/b", &pushes[4]).ok());     // 5
  Sync(*a.db, *b.db);
  ASSERT_EQ(a.db->tombstone_count(), 2u);
  const uint64_t id = a.db->id();
  const uint64_t node = a.node();
  ASSERT_TRUE(RawExists(*a.store, keys::DataPrefix(id) + "/a"));
  ASSERT_TRUE(RawExists(*a.store, keys::TombstoneIndexKey(id, node, 4)));

  uint64_t collected = 99;
  ASSERT_TRUE(a.db->CollectTombstones(VersionVector(), UINT64_MAX, &collected).ok());
  EXPECT_EQ(collected, 0u);

  // Every replica has seen counters up to 4: the tombstone of "/a" goes, that of "/b" stays.
  VersionVector stable;
  stable.AddRange(node, 0, 4);
  ASSERT_TRUE(a.db->CollectTombstones(stable, UINT64_MAX, &collected).ok());
  EXPECT_EQ(collected, 1u);
  EXPECT_EQ(a.db->tombstone_count(), 1u);
  EXPECT_FALSE(RawExists(*a.store, keys::DataPrefix(id) + "/a"));
  EXPECT_FALSE(RawExists(*a.store, keys::DotIndexKey(id, node, 4)));
  EXPECT_FALSE(RawExists(*a.store, keys::TombstoneIndexKey(id, node, 4)));
  EXPECT_TRUE(RawExists(*a.store, keys::DataPrefix(id) + "/b"));
  EXPECT_TRUE(RawExists(*a.store, keys::TombstoneIndexKey(id, node, 5)));
  ExpectConsistent(*a.db);
  // The collected tombstone is gone from what a sends.
  std::string chunk;
  bool more = false;
  ASSERT_TRUE(a.db->DeltaSince(VersionVector(), 1 << 20, &chunk, &more).ok());
  std::set<std::string> sent;
  const proto::Delta everything = ParseDelta(chunk);
  for (const auto& entry : everything.entries()) sent.insert(entry.key());
  EXPECT_EQ(sent, (std::set<std::string>{"/b", "/c"}));
  // The version vector still covers the collected write, so the old put of "/a" arriving late
  // does not bring the key back.
  const auto result = Apply(*a.db, pushes[0]);
  EXPECT_EQ(result.applied, 0u);
  EXPECT_EQ(result.skipped, 1u);
  std::string value;
  EXPECT_EQ(a.db->Get("/a", &value).code(), Code::kNotFound);
  EXPECT_FALSE(RawExists(*a.store, keys::DataPrefix(id) + "/a"));
  // Collecting again finds nothing more under the same vector.
  ASSERT_TRUE(a.db->CollectTombstones(stable, UINT64_MAX, &collected).ok());
  EXPECT_EQ(collected, 0u);

  // With every write seen everywhere, both replicas end with no tombstone and equal data.
  const VersionVector all = VersionVector::Min(a.db->version_vector(), b.db->version_vector());
  ASSERT_TRUE(a.db->CollectTombstones(all, UINT64_MAX, &collected).ok());
  EXPECT_EQ(collected, 1u);
  ASSERT_TRUE(b.db->CollectTombstones(all, UINT64_MAX, &collected).ok());
  EXPECT_EQ(collected, 2u);
  ExpectSame(*a.db, *b.db);
  EXPECT_EQ(a.db->tombstone_count(), 0u);
  // Left: the meta record, "/c" and its dot index entry.
  EXPECT_EQ(IndexedKeyCount(*a.store, id), 3u);
  // Tombstone collection survives a reopen.
  a.Open();
  EXPECT_EQ(a.db->tombstone_count(), 0u);
  ExpectSame(*a.db, *b.db);
}

/// The stale repair's page loop (replication::Replicator::OnFullSyncAnswered) of `to` against
/// `from`, with pages of `page_entries` keys and at most `max_scan` local records compared per
/// page; returns how many records `to` deleted.
uint64_t RepairAgainst(const DatabaseStore& from, DatabaseStore& to, size_t page_entries,
                       size_t max_scan) {
  std::string after;
  uint64_t total = 0;
  for (int pages = 0; pages < 1000; ++pages) {
    std::vector<DatabaseStore::KeyDot> page;
    bool more = false;
    Status s = from.ListKeyDots(after, page_entries, 1 << 20, &page, &more);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_LE(page.size(), page_entries);
    const std::string last = page.empty() ? std::string() : page.back().key;
    std::string until;
    uint64_t removed = 0;
    s = to.RemoveCollectedElsewhere(after, last, !more, page, from.version_vector(), max_scan,
                                    &until, &removed);
    EXPECT_TRUE(s.ok()) << s;
    total += removed;
    if (!until.empty()) {
      after = until;
    } else if (more) {
      after = last;
    } else {
      return total;
    }
  }
  ADD_FAILURE() << "the repair never reached the last key";
  return total;
}

// A replica cut off while the others deleted keys and collected the tombstones: the delta sync
// never tells it (the collected dots are covered, nothing is sent), so it keeps the keys; the
// page comparison deletes exactly those, tombstones included, wherever the page boundaries
// fall, and keeps the writes the other replica has not seen.
TEST(ReplicationTest, StaleRepairRemovesWhatTheOtherCoversAndNoLongerHolds) {
  struct Shape {
    size_t page_entries;
    size_t max_scan;
  };
  for (const Shape shape : {Shape{2, 1}, Shape{2, 100}, Shape{1, 2}, Shape{100, 100}}) {
    SCOPED_TRACE("pages of " + std::to_string(shape.page_entries) + ", comparing at most " +
                 std::to_string(shape.max_scan));
    Replica a, b;
    for (const char* key : {"/a", "/b", "/c", "/d", "/e", "/f"}) {
      ASSERT_TRUE(a.db->Put(key, std::string("v") + key).ok());
    }
    ASSERT_TRUE(a.db->Put("/t", "v").ok());
    ASSERT_TRUE(a.db->Erase("/t").ok());  // b gets the tombstone
    Sync(*a.db, *b.db);
    ASSERT_EQ(b.db->tombstone_count(), 1u);
    // b is cut off. a deletes "/c" (between two pages of a's keys) and "/e" (inside a page) and
    // writes "/g"; b writes "/h", which a has not seen.
    ASSERT_TRUE(a.db->Erase("/c").ok());
    ASSERT_TRUE(a.db->Erase("/e").ok());
    ASSERT_TRUE(a.db->Put("/g", "vg").ok());
    ASSERT_TRUE(b.db->Put("/h", "vh").ok());
    // Without b in its replica set, a collects every tombstone ("/t" too).
    uint64_t collected = 0;
    ASSERT_TRUE(a.db->CollectTombstones(a.db->version_vector(), UINT64_MAX, &collected).ok());
    ASSERT_EQ(collected, 3u);
    // b is back: the delta sync both ways brings "/g" and "/h" but leaves "/c" and "/e" on b.
    Sync(*a.db, *b.db);
    Sync(*b.db, *a.db);
    ASSERT_EQ(a.db->version_vector(), b.db->version_vector());
    std::string value;
    ASSERT_TRUE(b.db->Get("/c", &value).ok());
    ASSERT_NE(a.db->digest(), b.db->digest());
    // Writes the other has not seen yet (its key missing there too) must survive the repair.
    ASSERT_TRUE(a.db->Put("/i", "vi").ok());
    ASSERT_TRUE(b.db->Put("/j", "vj").ok());

    // a compared with b's pages deletes nothing: b holds every key whose write a has seen but
    // "/i", which b has not seen, and the extra keys of b ("/c", "/e", the tombstone of "/t")
    // are not a's to judge.
    EXPECT_EQ(RepairAgainst(*b.db, *a.db, shape.page_entries, shape.max_scan), 0u);
    // b compared with a's pages deletes "/c", "/e" and the tombstone of "/t".
    EXPECT_EQ(RepairAgainst(*a.db, *b.db, shape.page_entries, shape.max_scan), 3u);
    EXPECT_TRUE(b.db->Get("/c", &value).IsNotFound());
    EXPECT_TRUE(b.db->Get("/e", &value).IsNotFound());
    EXPECT_EQ(b.db->tombstone_count(), 0u);
    EXPECT_EQ(Contents(*b.db), (std::map<std::string, std::string>{{"/a", "v/a"},
                                                                   {"/b", "v/b"},
                                                                   {"/d", "v/d"},
                                                                   {"/f", "v/f"},
                                                                   {"/g", "vg"},
                                                                   {"/h", "vh"},
                                                                   {"/j", "vj"}}));
    EXPECT_TRUE(a.db->Get("/i", &value).ok());
    Sync(*a.db, *b.db);
    Sync(*b.db, *a.db);
    ExpectSame(*a.db, *b.db);
    ExpectConsistent(*b.db);
    EXPECT_EQ(IndexedKeyCount(*b.store, b.db->id()), IndexedKeyCount(*a.store, a.db->id()));
    // Nothing brings them back: the dots stay covered, and a second pass deletes nothing.
    Sync(*a.db, *b.db);
    Sync(*b.db, *a.db);
    EXPECT_EQ(RepairAgainst(*a.db, *b.db, shape.page_entries, shape.max_scan), 0u);
    ExpectSame(*a.db, *b.db);
  }
}

// A write the other replica has not seen is kept even when that replica lacks its key, and a
// page that is not ascending within its range is refused whole.
TEST(ReplicationTest, StaleRepairKeepsUnseenWritesAndRefusesDisorderedPages) {
  Replica a, b;
  ASSERT_TRUE(b.db->Put("/new", "v").ok());
  uint64_t removed = 99;
  std::string until;
  ASSERT_TRUE(b.db->RemoveCollectedElsewhere("", "", true, {}, a.db->version_vector(), 100, &until,
                                             &removed)
                  .ok());
  EXPECT_EQ(removed, 0u);
  EXPECT_TRUE(until.empty());
  std::string value;
  EXPECT_TRUE(b.db->Get("/new", &value).ok());
  const std::vector<DatabaseStore::KeyDot> disordered = {{"/b", {1, 1}}, {"/a", {1, 2}}};
  Status s = b.db->RemoveCollectedElsewhere("", "", true, disordered, b.db->version_vector(), 100,
                                            &until, &removed);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  const std::vector<DatabaseStore::KeyDot> beyond = {{"/z", {1, 1}}};
  s = b.db->RemoveCollectedElsewhere("", "/m", false, beyond, b.db->version_vector(), 100, &until,
                                     &removed);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  EXPECT_TRUE(b.db->Get("/new", &value).ok());
  // Covered by a vector that saw it (its own), and missing from an (empty) page: deleted.
  ASSERT_TRUE(b.db->RemoveCollectedElsewhere("", "", true, {}, b.db->version_vector(), 100, &until,
                                             &removed)
                  .ok());
  EXPECT_EQ(removed, 1u);
  EXPECT_TRUE(b.db->Get("/new", &value).IsNotFound());
  ExpectConsistent(*b.db);
}

TEST(ReplicationTest, StaleIndexEntriesAreIgnored) {
  Replica a;
  ASSERT_TRUE(a.db->Put("/live", "v").ok());  // counter 1
  ASSERT_TRUE(a.db->Erase("/dead").ok());     // counter 2
  const uint64_t id = a.db->id();
  const uint64_t node = a.node();
  // Index entries whose record has since changed (none should exist; the reads must not trust
  // them): a dot and a tombstone entry naming a live key, and a tombstone entry with the wrong
  // counter for a tombstone.
  rocksdb::DB* raw = a.store->db();
  ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), keys::DotIndexKey(id, node, 7), "/live").ok());
  ASSERT_TRUE(
      raw->Put(rocksdb::WriteOptions(), keys::TombstoneIndexKey(id, node, 1), "/live").ok());
  ASSERT_TRUE(
      raw->Put(rocksdb::WriteOptions(), keys::TombstoneIndexKey(id, node, 3), "/dead").ok());

  std::string chunk;
  bool more = false;
  ASSERT_TRUE(a.db->DeltaSince(VersionVector(), 1 << 20, &chunk, &more).ok());
  const proto::Delta delta = ParseDelta(chunk);
  ASSERT_EQ(delta.entries_size(), 2);  // "/live" once, with its real dot
  EXPECT_EQ(delta.entries(0).key(), "/live");
  EXPECT_EQ(delta.entries(0).record().version().counter(), 1u);
  EXPECT_EQ(delta.entries(1).key(), "/dead");

  VersionVector stable;
  stable.AddRange(node, 0, 3);
  uint64_t collected = 0;
  ASSERT_TRUE(a.db->CollectTombstones(stable, UINT64_MAX, &collected).ok());
  EXPECT_EQ(collected, 1u);
  EXPECT_EQ(a.db->tombstone_count(), 0u);
  std::string value;
  ASSERT_TRUE(a.db->Get("/live", &value).ok());
  EXPECT_EQ(value, "v");
  EXPECT_FALSE(RawExists(*a.store, keys::TombstoneIndexKey(id, node, 1)));
  EXPECT_FALSE(RawExists(*a.store, keys::TombstoneIndexKey(id, node, 3)));
  EXPECT_FALSE(RawExists(*a.store, keys::DataPrefix(id) + "/dead"));
  ExpectConsistent(*a.db);
}

// The write path stages a batch's records and index entries sorted by key, whatever the order of
// its operations: the indexes must still name exactly the current records, with nothing stale.
TEST(ReplicationTest, BatchesInAnyKeyOrderKeepTheIndexesExact) {
  Replica a, b;
  const uint64_t id = a.db->id();
  WriteBatch first;  // descending keys; every third one erased
  for (int i = 299; i >= 0; --i) {
    if (i % 3 == 0) {
      first.Erase(NumberedKey(i));
    } else {
      first.Put(NumberedKey(i), "v" + std::to_string(i));
    }
  }
  std::string delta;
  ASSERT_TRUE(a.db->Write(first, &delta).ok());
  EXPECT_EQ(ParseDelta(delta).entries_size(), 300);
  // Overwrites in a scrambled order: puts over tombstones and live keys, erases of live keys,
  // keys written twice in the batch, and new keys.
  WriteBatch second;
  for (int n = 0; n < 400; ++n) {
    const int i = (n * 7919) % 400;
    if (i % 5 == 0) {
      second.Erase(NumberedKey(i));
    } else {
      second.Put(NumberedKey(i), "w" + std::to_string(n));
    }
  }
  second.Put(NumberedKey(1), "again").Erase(NumberedKey(2));
  delta.clear();
  ASSERT_TRUE(a.db->Write(second, &delta).ok());
  const proto::Delta pushed = ParseDelta(delta);
  EXPECT_EQ(pushed.entries_size(), 400);  // one entry per key, its final record
  // The delta is framed by hand from the stored bytes: it must be what protobuf would write.
  EXPECT_EQ(pushed.SerializeAsString(), delta);
  ExpectConsistent(*a.db);
  std::string value;
  ASSERT_TRUE(a.db->Get(NumberedKey(1), &value).ok());
  EXPECT_EQ(value, "again");
  EXPECT_TRUE(a.db->Get(NumberedKey(2), &value).IsNotFound());

  // Exactly one record, one dot entry and (for tombstones) one tombstone entry per key, plus
  // the meta record: no entry of a replaced record is left behind.
  EXPECT_EQ(IndexedKeyCount(*a.store, id), 400 + 400 + a.db->tombstone_count() + 1);
  std::string chunk;
  bool more = false;
  ASSERT_TRUE(a.db->DeltaSince(VersionVector(), 1 << 30, &chunk, &more).ok());
  EXPECT_FALSE(more);
  const proto::Delta synced = ParseDelta(chunk);
  EXPECT_EQ(synced.entries_size(), 400);
  std::map<std::string, std::string> pushed_records, synced_records;
  for (const auto& entry : pushed.entries()) {
    pushed_records[entry.key()] = entry.record().SerializeAsString();
  }
  for (const auto& entry : synced.entries()) {
    synced_records[entry.key()] = entry.record().SerializeAsString();
  }
  EXPECT_EQ(pushed_records, synced_records);  // the pushed records are the stored ones
  Sync(*a.db, *b.db);
  ExpectSame(*a.db, *b.db);
  uint64_t collected = 0;
  ASSERT_TRUE(a.db->CollectTombstones(a.db->version_vector(), UINT64_MAX, &collected).ok());
  EXPECT_EQ(collected, b.db->tombstone_count());
  EXPECT_EQ(IndexedKeyCount(*a.store, id), 2 * a.db->Stats().key_count + 1);
  ExpectConsistent(*a.db);
}

// Bulk writes do not read the previous records of keys above every stored key (a bound kept per
// handle): they must still replace, and account for, every record that exists, including those
// just written above the bound, those a reopened handle finds on disk and those a delta brought.
TEST(ReplicationTest, BulkWritesAboveTheStoredKeysKeepAccountingIndexesAndLimitExact) {
  Replica a, b;
  const uint64_t id = a.db->id();
  auto puts = [&](int from, int to, const std::string& value) {
    WriteBatch batch;
    for (int i = from; i < to; ++i) batch.Put(NumberedKey(i), value);
    return batch;
  };
  // Each batch above the last: every key new.
  ASSERT_TRUE(a.db->Write(puts(0, 100, "aaaa")).ok());
  ASSERT_TRUE(a.db->Write(puts(100, 200, "bbbb")).ok());
  const uint64_t used = a.db->Stats().used_bytes;
  EXPECT_EQ(used, 200 * (NumberedKey(0).size() + 4));
  // Overwrites of the keys the last batch wrote (same value size), 50 new keys above them, a key
  // written twice in the batch. The limit is exactly what the new keys add: the batch fits only
  // if every overwrite releases the value it replaces.
  WriteBatch mixed = puts(150, 250, "cccc");
  mixed.Put(NumberedKey(249), "dddd");
  a.db->set_size_limit(used + 50 * (NumberedKey(0).size() + 4));
  Status s = a.db->Write(mixed);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(a.db->Stats().used_bytes, used + 50 * (NumberedKey(0).size() + 4));
  EXPECT_EQ(a.db->Stats().key_count, 250u);
  // One byte more than the limit is refused, over keys above the stored ones too.
  s = a.db->Write(puts(250, 251, ""));
  EXPECT_EQ(s.code(), Code::kSizeLimitExceeded) << s;
  a.db->set_size_limit(kBigLimit);
  // The last key becomes a tombstone, then a value again: both replace the stored record.
  ASSERT_TRUE(a.db->Erase(NumberedKey(249)).ok());
  ASSERT_TRUE(a.db->Write(puts(240, 260, "eeee")).ok());
  ExpectConsistent(*a.db);
  // One record and one dot index entry per key, plus the meta record: no entry of a replaced
  // record is left behind.
  EXPECT_EQ(a.db->tombstone_count(), 0u);
  EXPECT_EQ(IndexedKeyCount(*a.store, id), 2 * 260 + 1);

  // A reopened handle learns the last key from disk.
  a.Open();
  ASSERT_TRUE(a.db->Write(puts(255, 265, "ffff")).ok());
  ExpectConsistent(*a.db);
  EXPECT_EQ(IndexedKeyCount(*a.store, id), 2 * 265 + 1);

  // A replica whose records came in deltas, then local overwrites above the keys it held before.
  ASSERT_TRUE(b.db->Write(puts(0, 10, "gggg")).ok());
  Sync(*a.db, *b.db);
  ASSERT_TRUE(b.db->Write(puts(200, 270, "hhhh")).ok());
  ExpectConsistent(*b.db);
  EXPECT_EQ(b.db->Stats().key_count, 270u);
  EXPECT_EQ(IndexedKeyCount(*b.store, b.db->id()), 2 * 270 + 1);
  Sync(*b.db, *a.db);
  Sync(*a.db, *b.db);
  ExpectSame(*a.db, *b.db);
  ExpectConsistent(*a.db);
}

TEST(ReplicationTest, DigestIsMaintainedAndComparable) {
  Replica a, b;
  EXPECT_EQ(a.db->digest(), 0u);
  ExpectConsistent(*a.db);
  ASSERT_TRUE(a.db->Put("/x", "1").ok());
  const uint64_t one = a.db->digest();
  EXPECT_NE(one, 0u);
  ASSERT_TRUE(a.db->Put("/x", "2").ok());
  EXPECT_NE(a.db->digest(), one);  // the value changed
  const uint64_t two = a.db->digest();
  ASSERT_TRUE(a.db->Put("/x", "2").ok());
  EXPECT_NE(a.db->digest(), two);  // same value, new version
  ExpectConsistent(*a.db);

  WriteBatch batch;
  batch.Put("/y", "y").Put("/z", "z").Erase("/x").Put("/y", "yy").Erase("/missing");
  ASSERT_TRUE(a.db->Write(batch).ok());
  // A key only a writes: whichever of the concurrent writes below win, b lacks it until synced.
  ASSERT_TRUE(a.db->Put("/only-a", "a").ok());
  ExpectConsistent(*a.db);
  ASSERT_TRUE(b.db->Put("/y", "from-b").ok());
  ASSERT_TRUE(b.db->Put("/only-b", "b").ok());
  ASSERT_TRUE(b.db->Erase("/z").ok());
  Sync(*b.db, *a.db);
  ExpectConsistent(*a.db);
  EXPECT_NE(a.db->digest(), b.db->digest());  // b lacks a's writes
  Sync(*a.db, *b.db);
  ExpectConsistent(*b.db);
  ExpectSame(*a.db, *b.db);
  uint64_t collected = 0;
  ASSERT_TRUE(a.db->CollectTombstones(a.db->version_vector(), UINT64_MAX, &collected).ok());
  EXPECT_GT(collected, 0u);
  EXPECT_EQ(a.db->digest(), b.db->digest());  // tombstones are not in the digest
  ExpectConsistent(*a.db);
  // Rewriting the same value is a new version: the digests differ until it replicates.
  std::string value;
  ASSERT_TRUE(b.db->Get("/y", &value).ok());
  ASSERT_TRUE(b.db->Put("/y", value).ok());
  EXPECT_NE(a.db->digest(), b.db->digest());
}

TEST(ReplicationTest, ReplicationStateSurvivesReopen) {
  Replica a, b;
  ASSERT_TRUE(b.db->Put("/from-b", "b").ok());
  Sync(*b.db, *a.db);
  ASSERT_TRUE(a.db->Put("/x", "1").ok());
  ASSERT_TRUE(a.db->Put("/y", "2").ok());
  ASSERT_TRUE(a.db->Erase("/x").ok());
  ASSERT_TRUE(a.db->Erase("/gone").ok());
  Apply(*a.db, RecordDelta("/late", "l", 77, 3, 5));  // an out-of-order dot: an extra
  const VersionVector vv = a.db->version_vector();
  const uint64_t digest = a.db->digest();
  const uint64_t tombstones = a.db->tombstone_count();
  const DatabaseStats stats = a.db->Stats();
  ASSERT_EQ(tombstones, 2u);
  ASSERT_EQ(vv.Origins().size(), 3u);
  ASSERT_TRUE(vv.Covers({77, 3}));

  a.Open();
  EXPECT_EQ(a.db->version_vector(), vv) << a.db->version_vector().ToString();
  EXPECT_EQ(a.db->digest(), digest);
  EXPECT_EQ(a.db->tombstone_count(), tombstones);
  EXPECT_EQ(a.db->Stats().used_bytes, stats.used_bytes);
  EXPECT_EQ(a.db->Stats().key_count, stats.key_count);
  ExpectConsistent(*a.db);
  // Counters continue where they were: no dot is reused after a restart.
  const uint64_t base = vv.Base(a.node());
  std::string push;
  ASSERT_TRUE(a.db->Put("/z", "3", &push).ok());
  EXPECT_EQ(ParseDelta(push).entries(0).record().version().counter(), base + 1);
  EXPECT_EQ(a.db->version_vector().Base(a.node()), base + 1);
}

TEST(ReplicationTest, ApplyDeltaRejectsInvalidInputAndChangesNothing) {
  StoreOptions options;
  options.max_value_bytes = 100;
  Replica b(kBigLimit, options);
  ASSERT_TRUE(b.db->Put("/keep", "v").ok());
  ASSERT_TRUE(b.db->Erase("/dead").ok());
  const auto contents = Contents(*b.db);
  const VersionVector vv = b.db->version_vector();
  const uint64_t digest = b.db->digest();

  const std::string valid = RecordDelta("/fine", "ok", 5, 1, 100);
  std::vector<std::pair<std::string, std::string>> bad = {
      {"garbage", std::string("\xff\xff\xff\xff", 4)},
      {"unnormalised key", valid + RecordDelta("a//b", "x", 5, 2, 100)},
      {"invalid key", valid + RecordDelta("/a/../b", "x", 5, 2, 100)},
      {"empty key", valid + RecordDelta("", "x", 5, 2, 100)},
      {"origin 0", valid + RecordDelta("/x", "x", 0, 2, 100)},
      {"counter 0", valid + RecordDelta("/x", "x", 5, 0, 100)},
      {"tombstone with value", valid + RecordDelta("/x", "x", 5, 2, 100, true)},
      {"value too large", valid + RecordDelta("/x", std::string(101, 'x'), 5, 2, 100)},
  };
  proto::Delta no_version;
  no_version.add_entries()->set_key("/x");
  bad.emplace_back("no version", valid + no_version.SerializeAsString());
  proto::Delta backwards_range;
  auto* range = backwards_range.add_ranges();
  range->set_origin(5);
  range->set_after(10);
  range->set_through(3);
  bad.emplace_back("backwards range", valid + backwards_range.SerializeAsString());

  for (const auto& [what, delta] : bad) {
    DatabaseStore::ApplyResult result;
    Status s = b.db->ApplyDelta(delta, &result);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << what << ": " << s;
    EXPECT_NE(s.message().find(Quote(kPath)), std::string::npos) << what << ": " << s;
    EXPECT_EQ(b.db->version_vector(), vv) << what;
    EXPECT_EQ(b.db->digest(), digest) << what;
    EXPECT_EQ(Contents(*b.db), contents) << what;
    EXPECT_EQ(b.db->tombstone_count(), 1u) << what;
  }
  // The largest allowed value is accepted, and the valid prefix on its own applies.
  EXPECT_EQ(Apply(*b.db, valid + RecordDelta("/x", std::string(100, 'x'), 5, 2, 100)).applied, 2u);
  ExpectConsistent(*b.db);
}

TEST(ReplicationTest, SizeAccountingStaysExactThroughRemoteApplies) {
  Replica a;
  Replica b(/*limit=*/100);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.db->Put("/k" + std::to_string(i), "0123456789").ok());
  // Deltas from peers apply whatever their size: b goes over its budget.
  Sync(*a.db, *b.db);
  EXPECT_EQ(b.db->Stats().used_bytes, 10u * (3 + 10));
  ExpectConsistent(*b.db);
  // Over budget, b refuses local writes that grow it, and accepts those that shrink it.
  EXPECT_EQ(b.db->Put("/new", "x").code(), Code::kSizeLimitExceeded);
  ASSERT_TRUE(b.db->Erase("/k0").ok());
  ASSERT_TRUE(b.db->Put("/k1", "").ok());
  EXPECT_EQ(b.db->Stats().used_bytes, 130u - 13u - 10u);
  ExpectConsistent(*b.db);
  // Remote overwrites, growths, shrinks and deletes keep the counters exact on both sides.
  ASSERT_TRUE(a.db->Put("/k2", std::string(50, 'g')).ok());
  ASSERT_TRUE(a.db->Put("/k3", "s").ok());
  ASSERT_TRUE(a.db->Erase("/k4").ok());
  ASSERT_TRUE(a.db->Put("/k0", "revived").ok());
  Sync(*a.db, *b.db);
  Sync(*b.db, *a.db);
  ExpectConsistent(*a.db);
  ExpectConsistent(*b.db);
  ExpectSame(*a.db, *b.db);
}

TEST(ReplicationTest, DropRemovesEverything) {
  Replica a, b;
  std::unique_ptr<DatabaseStore> other;
  ASSERT_TRUE(a.store->OpenDatabase("/other", "cfg", kBigLimit, &other).ok());
  ASSERT_TRUE(other->Put("/stays", "yes").ok());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(a.db->Put("/k" + std::to_string(i), "v").ok());
  ASSERT_TRUE(a.db->Erase("/k1").ok());
  ASSERT_TRUE(b.db->Put("/from-b", "b").ok());
  Sync(*b.db, *a.db);
  const uint64_t id = a.db->id();
  ASSERT_GT(RawKeyCount(*a.store, id), 200u);

  ASSERT_TRUE(a.db->Drop().ok());
  EXPECT_EQ(RawKeyCount(*a.store, id), 0u);
  EXPECT_FALSE(RawExists(*a.store, keys::CatalogKey(kPath)));
  std::vector<DatabaseInfo> catalog;
  ASSERT_TRUE(a.store->ListDatabases(&catalog).ok());
  ASSERT_EQ(catalog.size(), 1u);
  EXPECT_EQ(catalog[0].path, "/other");
  // The handle is unusable and says so.
  std::string value;
  bool more = false;
  std::string delta;
  for (const Status& s : {a.db->Get("/k2", &value), a.db->Put("/k", "v"), a.db->Erase("/k"),
                          a.db->ApplyDelta(RecordDelta("/k", "v", 5, 1, 1)),
                          a.db->DeltaSince(VersionVector(), 1000, &delta, &more), a.db->Drop()}) {
    EXPECT_EQ(s.code(), Code::kUnavailable) << s;
    EXPECT_NE(s.message().find(Quote(kPath)), std::string::npos) << s;
  }
  // The other database is untouched.
  ASSERT_TRUE(other->Get("/stays", &value).ok());
  EXPECT_EQ(value, "yes");
  // Opening the path again makes a new, empty database.
  other.reset();  // releases the store, so it can be reopened
  a.Open();
  EXPECT_NE(a.db->id(), id);
  EXPECT_TRUE(Contents(*a.db).empty());
  EXPECT_EQ(a.db->Stats().key_count, 0u);
  EXPECT_EQ(a.db->Stats().used_bytes, 0u);
  EXPECT_EQ(a.db->tombstone_count(), 0u);
  EXPECT_EQ(a.db->digest(), 0u);
  EXPECT_EQ(a.db->version_vector(), VersionVector());
  EXPECT_EQ(a.db->Get("/k2", &value).code(), Code::kNotFound);
}

// Found by the chaos check's long runs: a node dropped its copy, became a replica again while
// another was down, and took a write before it had caught up. With counters restarting at 1
// the other replicas took the write for one they had and it was lost; continuing the old
// counters instead left gaps nobody could fill. A new copy writes under a new origin.
TEST(ReplicationTest, RecreatedReplicaWritesUnderANewOrigin) {
  Replica a, b;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a.db->Put("/k" + std::to_string(i), "v").ok());
  Sync(*a.db, *b.db);
  const uint64_t old_origin = a.node();
  ASSERT_TRUE(a.db->Drop().ok());
  a.Open();
  EXPECT_NE(a.node(), old_origin);
  // Written before catching up: reaches b all the same.
  std::string push;
  ASSERT_TRUE(a.db->Put("/new", "written before catching up", &push).ok());
  EXPECT_EQ(ParseDelta(push).entries(0).record().version().origin(), a.node());
  EXPECT_EQ(ParseDelta(push).entries(0).record().version().counter(), 1u);
  EXPECT_FALSE(b.db->version_vector().Includes(a.db->version_vector()));
  Sync(*a.db, *b.db);
  std::string value;
  ASSERT_TRUE(b.db->Get("/new", &value).ok());
  EXPECT_EQ(value, "written before catching up");
  // Caught up, the two are the same, and the new origin's counters are contiguous.
  Sync(*b.db, *a.db);
  ExpectSame(*a.db, *b.db);
  EXPECT_EQ(a.db->version_vector().Base(a.node()), 1u);
  // The origin survives a reopen (passivation, restart).
  const uint64_t origin = a.node();
  a.Open();
  EXPECT_EQ(a.node(), origin);
}

// ---------------------------------------------------------------------------------------------
// Expiry (ttl) and conditional writes

Status PutTtl(DatabaseStore& db, const std::string& key, const std::string& value, uint64_t ttl_ms,
              std::string* delta = nullptr) {
  WriteBatch batch;
  batch.Put(key, value, ttl_ms);
  return db.Write(batch, delta);
}

/// The version token of `key` as a list with versions gives it ("" if absent).
std::string VersionOf(const DatabaseStore& db, const std::string& key) {
  ListOptions options;
  options.prefix = key;
  options.limit = 1;
  options.with_versions = true;
  ListPage page;
  Status s = db.List(options, &page);
  EXPECT_TRUE(s.ok()) << s;
  if (page.keys.empty() || page.keys[0] != key) return "";
  return page.versions[0];
}

uint64_t Sweep(DatabaseStore& db, size_t limit = 1000) {
  uint64_t removed = 0;
  Status s = db.CollectExpired(db.WallTicks(), limit, &removed);
  EXPECT_TRUE(s.ok()) << s;
  return removed;
}

// An idle running database's rounds sweep expired keys; with next_expiry() known they read
// nothing until a key is due (100,000 databases, one RocksDB read each per round, cost several
// percent of a core). The bound must follow every write path, local and replicated, and a reopen.
TEST(ExpiryTest, NextExpiryFollowsWritesSweepsAndReopens) {
  FakeClock clock;
  Replica a(kBigLimit, clock.Options());
  Replica b(kBigLimit, clock.Options());
  EXPECT_EQ(a.db->next_expiry(), UINT64_MAX) << "a new database has nothing to expire";
  ASSERT_TRUE(a.db->Put("/plain", "v").ok());
  EXPECT_EQ(a.db->next_expiry(), UINT64_MAX);
  std::string delta;
  ASSERT_TRUE(PutTtl(*a.db, "/soon", "1", 1000, &delta).ok());
  ASSERT_TRUE(PutTtl(*a.db, "/later", "2", 5000).ok());
  const uint64_t soon = a.db->next_expiry();
  EXPECT_GT(soon, a.db->WallTicks());
  EXPECT_LE(soon, a.db->WallTicks() + hlc::FromMillis(1000) + 16);
  ASSERT_TRUE(b.db->ApplyDelta(delta).ok());
  EXPECT_EQ(b.db->next_expiry(), soon) << "a replicated record with a ttl";

  EXPECT_EQ(Sweep(*a.db), 0u);
  EXPECT_EQ(a.db->next_expiry(), soon);
  clock.Advance(std::chrono::milliseconds(1001));  // the writes' timestamps are ticks apart
  EXPECT_EQ(Sweep(*a.db), 1u);
  EXPECT_EQ(Sweep(*b.db), 1u);
  const uint64_t later = a.db->next_expiry();
  EXPECT_GT(later, a.db->WallTicks()) << "the next one is /later's";
  EXPECT_LT(later, UINT64_MAX);
  EXPECT_EQ(b.db->next_expiry(), UINT64_MAX) << "b never held /later";

  a.Open(clock.Options());
  EXPECT_EQ(a.db->next_expiry(), 0u) << "unknown until the first sweep after a reopen";
  EXPECT_EQ(Sweep(*a.db), 0u);
  EXPECT_EQ(a.db->next_expiry(), later);
  clock.Advance(std::chrono::milliseconds(4001));
  EXPECT_EQ(Sweep(*a.db), 1u);
  EXPECT_EQ(a.db->next_expiry(), UINT64_MAX);
  EXPECT_EQ(Contents(*a.db), (std::map<std::string, std::string>{{"/plain", "v"}}));
}

TEST(ExpiryTest, ExpiredKeyReadsMissingAndIsRemovedWithExactAccounting) {
  FakeClock clock;
  Replica a(kBigLimit, clock.Options());
  ASSERT_TRUE(PutTtl(*a.db, "/a", "1", 1000).ok());
  ASSERT_TRUE(a.db->Put("/b", "2").ok());
  ASSERT_TRUE(PutTtl(*a.db, "/c", "3", 5000).ok());
  std::string value;
  EXPECT_TRUE(a.db->Get("/a", &value).ok());
  EXPECT_EQ(Sweep(*a.db), 0u);  // nothing expired yet

  clock.Advance(std::chrono::milliseconds(1000));  // /a was the first write at this moment
  Status s = a.db->Get("/a", &value);
  EXPECT_TRUE(s.IsNotFound()) << s;
  EXPECT_TRUE(a.db->Get("/c", &value).ok());
  EXPECT_EQ(Contents(*a.db), (std::map<std::string, std::string>{{"/b", "2"}, {"/c", "3"}}));
  EXPECT_EQ(a.db->Stats().key_count, 3u);  // counted until removed

  EXPECT_EQ(Sweep(*a.db), 1u);
  EXPECT_EQ(a.db->Stats().key_count, 2u);
  EXPECT_EQ(a.db->Stats().used_bytes, 6u);  // "/b" "2" and "/c" "3"
  EXPECT_EQ(a.db->tombstone_count(), 1u);
  ExpectConsistent(*a.db);
  EXPECT_EQ(Sweep(*a.db), 0u);  // the index entry went with it

  clock.Advance(std::chrono::milliseconds(4001));  // the writes' timestamps are a tick apart
  EXPECT_EQ(Contents(*a.db), (std::map<std::string, std::string>{{"/b", "2"}}));
  EXPECT_EQ(Sweep(*a.db, 1), 1u);
  ExpectConsistent(*a.db);
  // The counters survive a restart.
  a.Open(clock.Options());
  EXPECT_EQ(a.db->Stats().key_count, 1u);
  EXPECT_EQ(a.db->tombstone_count(), 2u);
  ExpectConsistent(*a.db);
}

TEST(ExpiryTest, SweepIsBoundedAndALaterPutWithoutTtlClearsExpiry) {
  FakeClock clock;
  Replica a(kBigLimit, clock.Options());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(PutTtl(*a.db, "/k" + std::to_string(i), "v", 10).ok());
  ASSERT_TRUE(PutTtl(*a.db, "/keep", "old", 10).ok());
  ASSERT_TRUE(a.db->Put("/keep", "new").ok());
  clock.Advance(std::chrono::milliseconds(11));
  std::string value;
  ASSERT_TRUE(a.db->Get("/keep", &value).ok());
  EXPECT_EQ(value, "new");
  EXPECT_EQ(Sweep(*a.db, 4), 4u);
  EXPECT_EQ(Sweep(*a.db), 6u);
  EXPECT_EQ(Contents(*a.db), (std::map<std::string, std::string>{{"/keep", "new"}}));
  ExpectConsistent(*a.db);
}

TEST(ExpiryTest, ReplicasAgreeAndTheLocalRemovalNeverBeatsANewerWrite) {
  FakeClock clock;
  Replica a(kBigLimit, clock.Options());
  Replica b(kBigLimit, clock.Options());
  std::string delta;
  ASSERT_TRUE(PutTtl(*a.db, "/x", "short", 100, &delta).ok());
  ASSERT_TRUE(PutTtl(*a.db, "/y", "short", 100, &delta).ok());
  Apply(*b.db, delta);
  std::string value;
  EXPECT_TRUE(b.db->Get("/x", &value).ok());
  clock.Advance(std::chrono::milliseconds(101));
  EXPECT_TRUE(a.db->Get("/x", &value).IsNotFound());
  EXPECT_TRUE(b.db->Get("/x", &value).IsNotFound());

  // b writes /y anew (no ttl) before a removes its expired copy: the removal must not win.
  std::string newer;
  ASSERT_TRUE(b.db->Put("/y", "kept", &newer).ok());
  EXPECT_EQ(Sweep(*a.db), 2u);
  Apply(*a.db, newer);
  ASSERT_TRUE(a.db->Get("/y", &value).ok());
  EXPECT_EQ(value, "kept");
  EXPECT_EQ(Sweep(*b.db), 1u);  // b's own /x
  ExpectSame(*a.db, *b.db);
  ExpectConsistent(*a.db);

  // A replica that never saw /x gets a's removed copy (a tombstone of the same version), and an
  // older write of /x, arriving after it, stays deleted.
  Replica c(kBigLimit, clock.Options());
  std::string sync;
  bool more = false;
  ASSERT_TRUE(a.db->DeltaSince(VersionVector(), 1 << 20, &sync, &more).ok());
  Apply(*c.db, sync);
  ExpectSame(*a.db, *c.db);
  EXPECT_EQ(Apply(*c.db, RecordDelta("/x", "stale", 77, 1, 1)).applied, 0u);
  EXPECT_TRUE(c.db->Get("/x", &value).IsNotFound());
}

TEST(ConditionalWriteTest, ChecksCompareVersionsAndAbsenceAndWriteNothingOnFailure) {
  FakeClock clock;
  Replica a(kBigLimit, clock.Options());
  ASSERT_TRUE(a.db->Put("/a", "1").ok());
  const std::string v1 = VersionOf(*a.db, "/a");
  ASSERT_FALSE(v1.empty());

  WriteBatch swap;
  swap.Check("/a", v1).Put("/a", "2");
  ASSERT_TRUE(a.db->Write(swap).ok());
  const std::string v2 = VersionOf(*a.db, "/a");
  EXPECT_NE(v1, v2);
  // The same expectation again: the version moved on.
  WriteBatch stale;
  stale.Check("/a", v1).Put("/a", "3");
  Status s = a.db->Write(stale);
  EXPECT_EQ(s.code(), Code::kConditionFailed) << s;
  EXPECT_NE(s.message().find("\"/a\""), std::string::npos) << s;
  std::string value;
  ASSERT_TRUE(a.db->Get("/a", &value).ok());
  EXPECT_EQ(value, "2");

  // Several checks: the first failing key is named and nothing of the batch is written.
  WriteBatch both;
  both.Check("/a", v2).Check("/b", "").Put("/a", "4").Put("/b", "4");
  ASSERT_TRUE(a.db->Write(both).ok());
  WriteBatch again;
  again.Put("/c", "5").Check("/a", VersionOf(*a.db, "/a")).Check("/b", "").Put("/a", "6");
  s = a.db->Write(again);
  EXPECT_EQ(s.code(), Code::kConditionFailed) << s;
  EXPECT_NE(s.message().find("\"/b\""), std::string::npos) << s;
  EXPECT_TRUE(a.db->Get("/c", &value).IsNotFound());
  ASSERT_TRUE(a.db->Get("/a", &value).ok());
  EXPECT_EQ(value, "4");

  // Deleted and expired keys are absent; a version check on them fails.
  WriteBatch erase;
  erase.Check("/b", VersionOf(*a.db, "/b")).Erase("/b");
  ASSERT_TRUE(a.db->Write(erase).ok());
  WriteBatch recreate;
  recreate.Check("/b", "").Put("/b", "again", 50);
  ASSERT_TRUE(a.db->Write(recreate).ok());
  const std::string vb = VersionOf(*a.db, "/b");
  clock.Advance(std::chrono::milliseconds(51));
  WriteBatch on_expired;
  on_expired.Check("/b", vb).Put("/b", "x");
  EXPECT_EQ(a.db->Write(on_expired).code(), Code::kConditionFailed);
  WriteBatch absent;
  absent.Check("/b", "").Put("/b", "fresh");
  EXPECT_TRUE(a.db->Write(absent).ok());

  // A malformed token is a clear invalid_argument.
  WriteBatch bad;
  bad.Check("/a", "not-a-version").Put("/a", "7");
  s = a.db->Write(bad);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s;
  ExpectConsistent(*a.db);
}

// ---------------------------------------------------------------------------------------------
// The dot index by ranges (storage format 2, docs/dot-range-index.md)

/// RocksDB keys of database `id` with index tag `tag` ('o', 'p', 't', 'x').
size_t TagCount(Store& store, uint64_t id, char tag) {
  std::string begin = keys::DatabasePrefix(id);
  begin.push_back(tag);
  return KeysBetween(store, begin, keys::PrefixSuccessor(begin));
}

/// Rewrites database `id` into the layout of storage format 1, as a store written by an older
/// build holds it: one per-dot entry ("o") per current record, no ranges, no Record.dot_ranged.
void ConvertToFormat1Layout(Store& store, uint64_t id) {
  rocksdb::WriteBatch batch;
  // Deletes one by one, as an older build's writes left it.
  {
    const std::string begin = keys::DotRangePrefix(id);
    const std::string end = keys::PrefixSuccessor(begin);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions options;
    options.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(store.db()->NewIterator(options));
    for (it->Seek(begin); it->Valid(); it->Next()) batch.Delete(it->key());
  }
  for (const auto& [dot, key] : RangeMembers(store, id)) {
    bool found = false;
    const std::string bytes = RawGet(store, keys::DataPrefix(id) + key, &found);
    proto::Record record;
    ASSERT_TRUE(found && record.ParseFromString(bytes));
    if (record.version().origin() != dot.origin || record.version().counter() != dot.counter) {
      continue;  // stale member
    }
    record.clear_dot_ranged();
    batch.Put(keys::DataPrefix(id) + key, record.SerializeAsString());
    batch.Put(keys::DotIndexKey(id, dot.origin, dot.counter), key);
  }
  bool found = false;
  proto::DatabaseMeta meta;
  ASSERT_TRUE(meta.ParseFromString(RawGet(store, keys::DatabaseMetaKey(id), &found)) && found);
  meta.clear_range_members();
  meta.clear_stale_members();
  batch.Put(keys::DatabaseMetaKey(id), meta.SerializeAsString());
  ASSERT_TRUE(store.db()->Write(rocksdb::WriteOptions(), &batch).ok());
}

/// Every record DeltaSince sends to a replica that has `remote`, keyed by key, as "origin:counter"
/// (and checks that each origin's counters come in ascending order).
std::map<std::string, std::string> DeltaDots(const DatabaseStore& db, const VersionVector& remote) {
  std::string chunk;
  bool more = true;
  Status s = db.DeltaSince(remote, 1 << 30, &chunk, &more);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_FALSE(more);
  std::map<std::string, std::string> out;
  std::map<uint64_t, uint64_t> last;
  const proto::Delta delta = ParseDelta(chunk);
  for (const auto& entry : delta.entries()) {
    const proto::Version& v = entry.record().version();
    EXPECT_GT(v.counter(), last[v.origin()]) << entry.key() << " out of counter order";
    last[v.origin()] = v.counter();
    EXPECT_TRUE(
        out.emplace(entry.key(), std::to_string(v.origin()) + ":" + std::to_string(v.counter()))
            .second)
        << entry.key() << " sent twice";
  }
  return out;
}

/// What DeltaDots must give: every stored record (tombstones too) whose dot `remote` lacks.
std::map<std::string, std::string> StoredDots(const DatabaseStore& db,
                                              const VersionVector& remote) {
  std::vector<DatabaseStore::KeyDot> all;
  bool more = false;
  Status s = db.ListKeyDots("", 1 << 20, 1 << 30, &all, &more);
  EXPECT_TRUE(s.ok()) << s;
  std::map<std::string, std::string> out;
  for (const auto& kd : all) {
    if (remote.Covers(kd.dot)) continue;
    out[kd.key] = std::to_string(kd.dot.origin) + ":" + std::to_string(kd.dot.counter);
  }
  return out;
}

WriteBatch NumberedPuts(int from, int to, const std::string& value) {
  WriteBatch batch;
  for (int i = from; i < to; ++i) batch.Put(NumberedKey(i), value);
  return batch;
}

// The goal of the layout: a bulk write of N new keys adds N records and one index entry, and
// overwriting them adds one more index entry and deletes nothing (the old dots stay, stale).
TEST(DotRangeTest, ABulkWriteAddsOneIndexEntryAndAnOverwriteDeletesNone) {
  Replica a, b;
  const uint64_t id = a.db->id();
  std::string pushed;
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 500, "v1"), &pushed).ok());
  EXPECT_EQ(RawKeyCount(*a.store, id), 500u + 1 + 1);  // records, one range, meta
  // Where a record's dot is indexed is this replica's own business: stored, never sent.
  bool found = false;
  proto::Record stored;
  ASSERT_TRUE(
      stored.ParseFromString(RawGet(*a.store, keys::DataPrefix(id) + NumberedKey(7), &found)));
  EXPECT_TRUE(stored.dot_ranged());
  std::string pulled;
  bool more = false;
  ASSERT_TRUE(a.db->DeltaSince(VersionVector(), 1 << 30, &pulled, &more).ok());
  for (const std::string* bytes : {&pushed, &pulled}) {
    const proto::Delta delta = ParseDelta(*bytes);
    ASSERT_EQ(delta.entries_size(), 500);
    for (const auto& entry : delta.entries()) ASSERT_FALSE(entry.record().dot_ranged());
  }
  EXPECT_EQ(TagCount(*a.store, id, 'o'), 0u);
  EXPECT_EQ(a.db->range_members(), 500u);
  EXPECT_EQ(a.db->stale_members(), 0u);
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 500, "v2")).ok());
  EXPECT_EQ(RawKeyCount(*a.store, id), 500u + 2 + 1);
  EXPECT_EQ(a.db->range_members(), 1000u);
  EXPECT_EQ(a.db->stale_members(), 500u);
  // Only the current records are sent, once each, under their current dots.
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()), StoredDots(*a.db, VersionVector()));
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()).size(), 500u);
  Sync(*a.db, *b.db);
  ExpectSame(*a.db, *b.db);
  // The replica indexed them by ranges too (the delta's claim covers the superseded counters).
  EXPECT_EQ(RawKeyCount(*b.store, b.db->id()), 500u + 1 + 1);
  // The counters survive a reopen.
  a.Open();
  EXPECT_EQ(a.db->range_members(), 1000u);
  EXPECT_EQ(a.db->stale_members(), 500u);
}

// A store written by format 1 holds per-dot entries only; they go on serving deltas, new writes
// add ranges, and overwrites of legacy records delete their entries (the legacy index drains).
TEST(DotRangeTest, DeltasMergeALegacyPerDotIndexWithRanges) {
  Replica a, b, c;
  const uint64_t id = a.db->id();
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 100, "old")).ok());
  ASSERT_TRUE(a.db->Write(NumberedPuts(50, 150, "old2")).ok());
  WriteBatch erase;
  for (int i = 0; i < 150; i += 10) erase.Erase(NumberedKey(i));
  ASSERT_TRUE(a.db->Write(erase).ok());
  ConvertToFormat1Layout(*a.store, id);
  a.Open();
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(TagCount(*a.store, id, 'p'), 0u);
  EXPECT_EQ(TagCount(*a.store, id, 'o'), 150u);
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()), StoredDots(*a.db, VersionVector()));

  // A replica that has the old part: its later pull merges both indexes.
  Sync(*a.db, *b.db, 300);
  ExpectSame(*a.db, *b.db);
  const VersionVector b_before = b.db->version_vector();
  ASSERT_TRUE(a.db->Write(NumberedPuts(140, 200, "new")).ok());  // 10 legacy keys overwritten
  ASSERT_TRUE(a.db->Put(NumberedKey(5), "new").ok());            // one more, alone
  EXPECT_EQ(TagCount(*a.store, id, 'o'), 150u - 11);
  EXPECT_EQ(a.db->stale_members(), 0u) << "legacy dots are deleted, not counted";
  WriteBatch interleaved;  // keys whose records alternate between the two indexes
  for (int i = 0; i < 200; i += 3) interleaved.Put(NumberedKey(i), "mix");
  ASSERT_TRUE(a.db->Write(interleaved).ok());
  EXPECT_EQ(DeltaDots(*a.db, b_before), StoredDots(*a.db, b_before));
  // Pulled in small chunks, whose claims stop inside ranges and between legacy entries.
  Sync(*a.db, *b.db, 300);
  ExpectSame(*a.db, *b.db);
  Sync(*a.db, *c.db, 200);
  ExpectSame(*a.db, *c.db);

  // Collecting legacy tombstones deletes their entries.
  const size_t legacy = TagCount(*a.store, id, 'o');
  uint64_t collected = 0;
  const VersionVector all = a.db->version_vector();
  ASSERT_TRUE(a.db->CollectTombstones(all, UINT64_MAX, &collected).ok());
  EXPECT_GT(collected, 0u);
  EXPECT_LT(TagCount(*a.store, id, 'o'), legacy);
  EXPECT_EQ(IndexedKeyCount(*a.store, id),
            2 * a.db->Stats().key_count + 3 * a.db->tombstone_count() + 1);
  ExpectConsistent(*a.db);
}

// max_bytes stopping inside a range: the claim reaches just below the first member left out, and
// a pull from a counter inside a range finds that range (it starts below the counter).
TEST(DotRangeTest, PullsStartAndStopInsideARange) {
  Replica a;
  const uint64_t node = a.node();
  const std::string value(100, 'v');
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 100, value)).ok());  // counters 1..100, one range
  std::string chunk;
  bool more = false;
  ASSERT_TRUE(a.db->DeltaSince(VersionVector(), 10 * 120, &chunk, &more).ok());
  EXPECT_TRUE(more);
  proto::Delta delta = ParseDelta(chunk);
  ASSERT_GT(delta.entries_size(), 1);
  ASSERT_LT(delta.entries_size(), 100);
  const uint64_t sent = static_cast<uint64_t>(delta.entries_size());
  EXPECT_EQ(delta.entries(delta.entries_size() - 1).record().version().counter(), sent);
  ASSERT_EQ(delta.ranges_size(), 1);
  EXPECT_EQ(delta.ranges(0).after(), 0u);
  EXPECT_EQ(delta.ranges(0).through(), sent) << "the claim stops below the first member left out";

  VersionVector remote;
  remote.AddRange(node, 0, 30);
  ASSERT_EQ(DeltaDots(*a.db, remote).size(), 70u);
  EXPECT_EQ(DeltaDots(*a.db, remote).begin()->second, std::to_string(node) + ":31");

  // Stale members in the range below the stop: the claim covers them (superseded), not the
  // overwrites that were left out.
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 20, value)).ok());  // counters 101..120
  remote = VersionVector();
  remote.AddRange(node, 0, 10);
  chunk.clear();
  ASSERT_TRUE(a.db->DeltaSince(remote, 5 * 120, &chunk, &more).ok());
  EXPECT_TRUE(more);
  delta = ParseDelta(chunk);
  ASSERT_GT(delta.entries_size(), 0);
  EXPECT_EQ(delta.entries(0).record().version().counter(), 21u);
  const uint64_t last = delta.entries(delta.entries_size() - 1).record().version().counter();
  ASSERT_EQ(delta.ranges_size(), 1);
  EXPECT_EQ(delta.ranges(0).after(), 10u);
  EXPECT_EQ(delta.ranges(0).through(), last);
}

// A member is served only while its record has exactly its dot: after an overwrite, an erase, a
// tombstone collection and a stale repair its member is stale (counted, never sent), and an
// expired record turned into a tombstone of the same version keeps its member.
TEST(DotRangeTest, StaleMembersAreCountedAndNeverServed) {
  FakeClock clock;
  Replica a(kBigLimit, clock.Options());
  Replica b, c;
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 50, "v")).ok());
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 5, "w")).ok());
  EXPECT_EQ(a.db->stale_members(), 5u);
  WriteBatch erase;
  for (int i = 5; i < 10; ++i) erase.Erase(NumberedKey(i));
  ASSERT_TRUE(a.db->Write(erase).ok());
  EXPECT_EQ(a.db->stale_members(), 10u);
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()), StoredDots(*a.db, VersionVector()));
  Sync(*a.db, *c.db);  // c gets the tombstones, and misses their collection below

  uint64_t collected = 0;
  ASSERT_TRUE(a.db->CollectTombstones(a.db->version_vector(), UINT64_MAX, &collected).ok());
  EXPECT_EQ(collected, 5u);
  EXPECT_EQ(a.db->stale_members(), 15u);
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()), StoredDots(*a.db, VersionVector()));
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()).size(), 45u);
  Sync(*a.db, *b.db);
  ExpectSame(*a.db, *b.db);

  // c missed the collection: the stale repair removes its tombstones, leaving stale members.
  const uint64_t c_stale = c.db->stale_members();
  EXPECT_EQ(RepairAgainst(*a.db, *c.db, 100, 1000), 5u);
  EXPECT_EQ(c.db->stale_members(), c_stale + 5);
  EXPECT_EQ(DeltaDots(*c.db, VersionVector()), StoredDots(*c.db, VersionVector()));
  ExpectSame(*a.db, *c.db);

  // Expiry keeps the dot: the tombstone it leaves is still served by its member.
  ASSERT_TRUE(PutTtl(*a.db, "/ttl", "t", 1000).ok());
  clock.Advance(std::chrono::milliseconds(1001));
  ASSERT_EQ(Sweep(*a.db), 1u);
  const auto sent = DeltaDots(*a.db, VersionVector());
  EXPECT_EQ(sent, StoredDots(*a.db, VersionVector()));
  EXPECT_EQ(sent.count("/ttl"), 1u);
  EXPECT_EQ(TagCount(*a.store, a.db->id(), 'o'), 0u);
  ExpectConsistent(*a.db);
}

// A delta entry above a gap of the vector goes into the per-dot index (the vector may drop it and
// the record be stored again later; a range must never hold a dot twice); entries that extend the
// base go into ranges. Overwriting the first deletes its entry.
TEST(DotRangeTest, EntriesAboveAGapUseThePerDotIndex) {
  Replica b;
  const uint64_t id = b.db->id();
  const uint64_t hlc = NowHlc();
  Apply(*b.db, RecordDelta("/x", "5", 77, 5, hlc + 5));
  EXPECT_TRUE(RawExists(*b.store, keys::DotIndexKey(id, 77, 5)));
  EXPECT_EQ(TagCount(*b.store, id, 'p'), 0u);
  for (uint64_t counter = 1; counter <= 4; ++counter) {
    Apply(*b.db, RecordDelta("/k" + std::to_string(counter), "v", 77, counter, hlc + counter));
  }
  EXPECT_EQ(TagCount(*b.store, id, 'p'), 4u);
  EXPECT_EQ(TagCount(*b.store, id, 'o'), 1u);
  EXPECT_EQ(b.db->version_vector().Base(77), 5u);
  EXPECT_EQ(DeltaDots(*b.db, VersionVector()).size(), 5u);
  ASSERT_TRUE(b.db->Put("/x", "mine").ok());
  EXPECT_FALSE(RawExists(*b.store, keys::DotIndexKey(id, 77, 5)));
  EXPECT_EQ(TagCount(*b.store, id, 'o'), 0u);
  EXPECT_EQ(b.db->stale_members(), 0u);
  EXPECT_EQ(DeltaDots(*b.db, VersionVector()), StoredDots(*b.db, VersionVector()));
}

// The sweep: bounded per call, resumes where it stopped, drops exactly the stale members (a range
// left with none goes, one with some live members is rewritten), lowers the count by what it
// removed, and changes no delta a peer can be sent.
TEST(DotRangeTest, TheSweepIsBoundedAndKeepsEveryDeltaTheSame) {
  Replica a, b;
  const uint64_t id = a.db->id();
  const uint64_t node = a.node();
  for (int from = 0; from < 3000; from += 1000) {
    ASSERT_TRUE(a.db->Write(NumberedPuts(from, from + 1000, "v1")).ok());  // counters 1..3000
  }
  for (int from = 0; from < 2500; from += 500) {
    ASSERT_TRUE(a.db->Write(NumberedPuts(from, from + 500, "v2")).ok());  // 3001..5500
  }
  EXPECT_FALSE(a.db->DotRangesNeedSweep()) << "2500 of 5500 stale";
  for (int from = 0; from < 1500; from += 500) {
    ASSERT_TRUE(a.db->Write(NumberedPuts(from, from + 500, "v3")).ok());  // 5501..7000
  }
  EXPECT_EQ(a.db->stale_members(), 4000u);
  EXPECT_EQ(a.db->range_members(), 7000u);
  EXPECT_TRUE(a.db->DotRangesNeedSweep());
  const size_t raw_before = RawKeyCount(*a.store, id);
  EXPECT_EQ(raw_before, 3000u + 11 + 1);
  // Peers at counters before, inside and after the ranges, and at the start of a range whose
  // first members go (the third range keeps only 2501..3000).
  std::vector<VersionVector> remotes(6);
  const uint64_t bases[] = {0, 999, 1000, 2200, 2600, 5800};
  for (size_t i = 0; i < remotes.size(); ++i) remotes[i].AddRange(node, 0, bases[i]);
  std::vector<std::map<std::string, std::string>> before;
  for (const auto& remote : remotes) before.push_back(DeltaDots(*a.db, remote));
  // A reopened handle has not listed the stale dots: its pass reads records (the listed pass:
  // TheListedSweepRemovesExactlyTheListedMembersAndReadsNoRecord).
  a.Open();
  ASSERT_FALSE(a.db->stale_dots_complete());

  uint64_t removed = 0;
  bool more = false;
  ASSERT_TRUE(a.db->SweepDotRanges(1500, &removed, &more).ok());
  EXPECT_TRUE(more);
  EXPECT_EQ(removed, 2000u) << "two ranges of 1000 (whole ranges, at least 1500 members)";
  EXPECT_EQ(a.db->stale_members(), 2000u);
  EXPECT_EQ(a.db->range_members(), 5000u);
  EXPECT_EQ(RawKeyCount(*a.store, id), raw_before - 2);
  for (size_t i = 0; i < remotes.size(); ++i) EXPECT_EQ(DeltaDots(*a.db, remotes[i]), before[i]);
  int calls = 1;
  while (more && calls < 50) {
    ASSERT_TRUE(a.db->SweepDotRanges(1500, &removed, &more).ok());
    ++calls;
  }
  EXPECT_FALSE(more);
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(a.db->range_members(), 3000u);
  EXPECT_FALSE(a.db->DotRangesNeedSweep());
  // Left: the third range (its live half), the last two of the second pass, the third pass.
  EXPECT_EQ(RawKeyCount(*a.store, id), 3000u + 6 + 1);
  EXPECT_EQ(IndexedKeyCount(*a.store, id), 2 * 3000u + 1);
  for (size_t i = 0; i < remotes.size(); ++i) EXPECT_EQ(DeltaDots(*a.db, remotes[i]), before[i]);
  // The counters are in the meta record; a pass over clean ranges removes nothing.
  a.Open();
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(a.db->range_members(), 3000u);
  ASSERT_TRUE(a.db->SweepDotRanges(1 << 20, &removed, &more).ok());
  EXPECT_EQ(removed, 0u);
  EXPECT_FALSE(more);
  Sync(*a.db, *b.db, 4096);
  ExpectSame(*a.db, *b.db);
  ExpectConsistent(*a.db);
}

// ---------------------------------------------------------------------------------------------
// The record cache (storage/record_cache.hpp): a write that finds what it replaces there reads
// nothing, and must leave every counter as reading would have.

/// One copy of a database in a store of its own (Twins).
struct Copy {
  /// (Re)opens the store with `options` and the database kPath with size limit `limit`.
  void Open(StoreOptions options, uint64_t limit) {
    db.reset();
    store.reset();
    options.path = dir / "data";
    ASSERT_TRUE(Store::Open(options, &store).ok());
    ASSERT_TRUE(store->OpenDatabase(kPath, "cfg", limit, &db).ok());
  }
  TempDir dir;
  std::shared_ptr<Store> store;
  std::unique_ptr<DatabaseStore> db;
};

/// Everything observable of `c` and `n` is the same (and `c`'s digest is what it stores).
void ExpectTwins(const DatabaseStore& c, const DatabaseStore& n) {
  EXPECT_EQ(c.digest(), n.digest());
  EXPECT_EQ(c.Stats().used_bytes, n.Stats().used_bytes);
  EXPECT_EQ(c.Stats().key_count, n.Stats().key_count);
  EXPECT_EQ(c.tombstone_count(), n.tombstone_count());
  EXPECT_EQ(c.range_members(), n.range_members());
  EXPECT_EQ(c.stale_members(), n.stale_members());
  EXPECT_EQ(c.version_vector(), n.version_vector());
  EXPECT_EQ(c.local_counter(), n.local_counter());
  EXPECT_EQ(c.next_expiry(), n.next_expiry());
  std::vector<DatabaseStore::KeyDot> kc;
  std::vector<DatabaseStore::KeyDot> kn;
  bool more = false;
  ASSERT_TRUE(c.ListKeyDots("", 1 << 20, 1 << 30, &kc, &more).ok());
  ASSERT_TRUE(n.ListKeyDots("", 1 << 20, 1 << 30, &kn, &more).ok());
  ASSERT_EQ(kc.size(), kn.size());
  for (size_t i = 0; i < kc.size(); ++i) {
    EXPECT_EQ(kc[i].key, kn[i].key);
    EXPECT_EQ(VersionOf(c, kc[i].key), VersionOf(n, kn[i].key)) << kc[i].key;
  }
  EXPECT_EQ(Contents(c), Contents(n));
  uint64_t digest = 0;
  ASSERT_TRUE(c.ComputeDigest(&digest).ok());
  EXPECT_EQ(c.digest(), digest);
}

/// Twins: two copies of one database (same origin, same clock), one whose store keeps a record
/// cache of `budget` bytes and one whose keeps none, get the same seeded mix of every kind of
/// change for `steps` steps; after each, everything observable is the same. Returns the records
/// the copy with the cache did not read.
uint64_t RunTwins(uint64_t seed, size_t budget, uint64_t limit, int steps) {
  FakeClock clock;
  StoreOptions with = clock.Options();
  with.record_cache_bytes = budget;
  StoreOptions without = clock.Options();
  without.record_cache_bytes = 0;
  Copy c;
  Copy n;
  c.Open(with, limit);
  EXPECT_TRUE(c.db->Put("/seed", "x").ok());
  c.db.reset();
  c.store.reset();
  std::filesystem::copy(c.dir / "data", n.dir / "data", std::filesystem::copy_options::recursive);
  c.Open(with, limit);
  n.Open(without, limit);
  EXPECT_EQ(c.db->origin(), n.db->origin());
  Replica peer(kBigLimit, clock.Options());
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t k) { return rng() % k; };
  std::vector<std::string> keys;
  for (int i = 0; i < 40; ++i) keys.push_back("/k/" + std::to_string(i));
  keys.push_back("/long/" + std::string(80, 'x'));  // longer than the cache keeps
  auto value = [&] {
    const size_t size = pick(5) == 0 ? 1000 + pick(3000) : pick(100);
    return std::string(size, static_cast<char>('a' + pick(26)));
  };
  std::string to_twins;  // deltas on their way
  std::string to_peer;
  uint64_t not_read = 0;  // by handles closed since
  uint64_t crafted_counter = 0;
  const uint64_t crafted_origin = 0x5eed000000000001ull;
  // A local write on both: the same answer and the same delta.
  auto both = [&](const std::function<Status(DatabaseStore&, std::string*)>& write) {
    std::string dc;
    std::string dn;
    const Status sc = write(*c.db, &dc);
    const Status sn = write(*n.db, &dn);
    EXPECT_EQ(sc.code(), sn.code()) << sc << " vs " << sn;
    EXPECT_EQ(dc, dn);
    if (sc.ok()) to_peer += dc;
  };
  auto apply_both = [&](const std::string& delta) {
    DatabaseStore::ApplyResult rc;
    DatabaseStore::ApplyResult rn;
    EXPECT_EQ(c.db->ApplyDelta(delta, &rc).code(), n.db->ApplyDelta(delta, &rn).code());
    EXPECT_EQ(rc.applied, rn.applied);
    EXPECT_EQ(rc.skipped, rn.skipped);
  };
  for (int step = 0; step < steps; ++step) {
    const std::string key = keys[pick(keys.size())];
    switch (pick(16)) {
      case 0:
      case 1: {
        const std::string v = value();
        both([&](DatabaseStore& db, std::string* d) { return db.Put(key, v, d); });
        break;
      }
      case 2: {
        const std::string v = value();
        const uint64_t ttl = 1 + pick(30);
        both([&](DatabaseStore& db, std::string* d) { return PutTtl(db, key, v, ttl, d); });
        break;
      }
      case 3:
        both([&](DatabaseStore& db, std::string* d) { return db.Erase(key, d); });
        break;
      case 4:
      case 5: {  // a batch, or a group of them, with repeated keys, checks and ttls
        std::vector<WriteBatch> batches(1 + pick(3));
        for (WriteBatch& batch : batches) {
          for (uint64_t k = 1 + pick(5); k > 0; --k) {
            const std::string& other = pick(2) == 0 ? key : keys[pick(keys.size())];
            switch (pick(5)) {
              case 0:
                batch.Check(other, pick(4) == 0 ? std::string() : VersionOf(*n.db, other));
                break;
              case 1:
                batch.Erase(other);
                break;
              default:
                batch.Put(other, value(), pick(4) == 0 ? 1 + pick(30) : 0);
            }
          }
        }
        std::vector<const WriteBatch*> group;
        for (const WriteBatch& batch : batches) group.push_back(&batch);
        both([&](DatabaseStore& db, std::string* d) {
          return group.size() == 1 ? db.Write(*group[0], d)
                                   : db.WriteGroup(group.data(), group.size(), d);
        });
        break;
      }
      case 6: {  // the peer writes
        std::string d;
        if (pick(3) == 0) {
          EXPECT_TRUE(peer.db->Erase(key, &d).ok());
        } else {
          EXPECT_TRUE(peer.db->Put(key, value(), &d).ok());
        }
        to_twins += d;
        break;
      }
      case 7: {  // a conflicting record at the stored one's hlc, or one tick either side
        const std::string token = VersionOf(*n.db, key);
        const uint64_t hlc = token.empty()
                                 ? c.db->WallTicks()
                                 : std::stoull(token.substr(0, token.find('-')), nullptr, 16);
        apply_both(RecordDelta(key, pick(3) == 0 ? "" : value(), crafted_origin, ++crafted_counter,
                               hlc + pick(3) - 1, pick(3) == 0));
        break;
      }
      case 8:  // pushes arrive, or are lost
        if (pick(5) == 0) to_twins.clear();
        if (!to_twins.empty()) apply_both(to_twins);
        to_twins.clear();
        if (!to_peer.empty() && pick(4) != 0) EXPECT_TRUE(peer.db->ApplyDelta(to_peer).ok());
        to_peer.clear();
        break;
      case 9:
        clock.Advance(std::chrono::milliseconds(pick(20)));
        break;
      case 10: {
        uint64_t rc = 0;
        uint64_t rn = 0;
        EXPECT_TRUE(c.db->CollectExpired(c.db->WallTicks(), 1000, &rc).ok());
        EXPECT_TRUE(n.db->CollectExpired(n.db->WallTicks(), 1000, &rn).ok());
        EXPECT_EQ(rc, rn);
        break;
      }
      case 11: {  // anti-entropy both ways
        bool more = true;
        for (int pulls = 0; more && pulls < 100; ++pulls) {
          std::string pulled;
          EXPECT_TRUE(peer.db->DeltaSince(c.db->version_vector(), 4096, &pulled, &more).ok());
          apply_both(pulled);
        }
        more = true;
        for (int pulls = 0; more && pulls < 100; ++pulls) {
          std::string pc;
          std::string pn;
          bool more_n = false;
          EXPECT_TRUE(c.db->DeltaSince(peer.db->version_vector(), 4096, &pc, &more).ok());
          EXPECT_TRUE(n.db->DeltaSince(peer.db->version_vector(), 4096, &pn, &more_n).ok());
          EXPECT_EQ(pc, pn);
          EXPECT_TRUE(peer.db->ApplyDelta(pc).ok());
        }
        break;
      }
      case 12: {
        const VersionVector stable =
            VersionVector::Min(c.db->version_vector(), peer.db->version_vector());
        uint64_t rc = 0;
        uint64_t rn = 0;
        EXPECT_TRUE(c.db->CollectTombstones(stable, UINT64_MAX, &rc).ok());
        EXPECT_TRUE(n.db->CollectTombstones(stable, UINT64_MAX, &rn).ok());
        EXPECT_EQ(rc, rn);
        EXPECT_TRUE(peer.db->CollectTombstones(stable, UINT64_MAX, nullptr).ok());
        break;
      }
      case 13:
        // The peer collects every tombstone it holds, as if every other replica had seen them:
        // the stale repair then has records of the twins to remove.
        EXPECT_TRUE(
            peer.db->CollectTombstones(peer.db->version_vector(), UINT64_MAX, nullptr).ok());
        EXPECT_EQ(RepairAgainst(*peer.db, *c.db, 8, 1000), RepairAgainst(*peer.db, *n.db, 8, 1000));
        break;
      case 14: {
        uint64_t rc = 0;
        uint64_t rn = 0;
        EXPECT_TRUE(c.db->SweepDotRanges(64, &rc).ok());
        EXPECT_TRUE(n.db->SweepDotRanges(64, &rn).ok());
        EXPECT_EQ(rc, rn);
        break;
      }
      case 15:
        if (pick(10) == 0) {
          not_read += c.db->records_not_read();
          c.Open(with, limit);
          n.Open(without, limit);
        }
        break;
    }
    ExpectTwins(*c.db, *n.db);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "seed " << seed << ", step " << step;
      return not_read;
    }
  }
  return not_read + c.db->records_not_read();
}

// A write that finds what it replaces in the cache reads nothing, and must do exactly what one
// that reads it does: twin copies with and without the cache, under local writes (some refused
// by the size limit or a check), pushes both ways (some lost), conflicting records at equal
// timestamps, anti-entropy, expiry, tombstone collection, the stale repair, sweeps and reopens,
// answer, send and store the same after every step. A summary kept after its record changed
// some other way would take the wrong size, hash, tombstone, dot, expiry or version off them.
TEST(RecordCacheTest, AStoreWithTheCacheDoesExactlyWhatOneWithoutDoes) {
  EXPECT_GT(RunTwins(1, 64u << 20, kBigLimit, 2000), 300u) << "the cache was used";
  EXPECT_GT(RunTwins(101, 4096, 64 << 10, 1500), 100u) << "a small cache, a small database";
}

// A commit observer that writes the key the write it observes just wrote: the cache must keep the
// observer's record, the later one, or the next write takes the earlier one's size off.
TEST(RecordCacheTest, AWriteInsideACommitObserverIsTheOneRemembered) {
  Replica a;
  // A table comes after a first few lookups.
  for (int i = 0; i < 2 * static_cast<int>(RecordCache::kFirstSlots); ++i) {
    ASSERT_TRUE(a.db->Put("/k", "warm").ok());
  }
  bool nested = false;
  a.db->set_commit_observer([&] {
    if (nested) return;
    nested = true;
    EXPECT_TRUE(a.db->Put("/k", std::string(300, 'i')).ok());
  });
  ASSERT_TRUE(a.db->Put("/k", "outer").ok());
  a.db->set_commit_observer({});
  EXPECT_EQ(a.db->Stats().used_bytes, 2u + 300u);
  ASSERT_TRUE(a.db->Put("/k", "last").ok());
  EXPECT_GT(a.db->records_not_read(), 0u);
  ExpectConsistent(*a.db);
}

// The tables of all databases of a node stay within StoreOptions::record_cache_bytes, each keeps
// what it can, and a closed database's table goes back to the others.
TEST(RecordCacheTest, TheTablesOfAllDatabasesStayWithinTheNodesBudget) {
  TempDir dir;
  StoreOptions options;
  options.path = dir / "data";
  const int64_t budget = 3 << 19;  // 1.5 MiB
  options.record_cache_bytes = budget;
  std::shared_ptr<Store> store;
  ASSERT_TRUE(Store::Open(options, &store).ok());
  // Databases written a few times take nothing: most of a node's many databases are such.
  for (int d = 0; d < 50; ++d) {
    std::unique_ptr<DatabaseStore> db;
    ASSERT_TRUE(store->OpenDatabase("/few/" + std::to_string(d), "cfg", kBigLimit, &db).ok());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(db->Put("/k", "v").ok());
    EXPECT_EQ(store->record_cache_budget().left(), budget);
  }
  std::vector<std::unique_ptr<DatabaseStore>> dbs(3);
  for (size_t d = 0; d < dbs.size(); ++d) {
    ASSERT_TRUE(store->OpenDatabase("/db/" + std::to_string(d), "cfg", kBigLimit, &dbs[d]).ok());
  }
  for (auto& db : dbs) {
    for (int from = 0; from < 20000; from += 1000) {
      ASSERT_TRUE(db->Write(NumberedPuts(from, from + 1000, "v")).ok());
    }
    EXPECT_GE(store->record_cache_budget().left(), 0);
    if (db == dbs[0]) {
      EXPECT_LE(budget - store->record_cache_budget().left(), budget / 2)
          << "one database takes at most half";
    }
  }
  EXPECT_LT(store->record_cache_budget().left(), budget / 2) << "the budget is used";
  for (auto& db : dbs) {
    // Most of the keys written last are kept (there is no room for all 20,000, and a key can
    // lose its slot to another).
    const uint64_t not_read = db->records_not_read();
    ASSERT_TRUE(db->Write(NumberedPuts(19900, 20000, "w")).ok());
    EXPECT_GE(db->records_not_read() - not_read, 80u) << db->path();
  }
  const int64_t left = store->record_cache_budget().left();
  dbs[0].reset();
  EXPECT_GT(store->record_cache_budget().left(), left) << "a closed database's table is returned";
  // Keys longer than a slot holds are never kept, so each write of them reads.
  const std::string long_key = "/" + std::string(RecordCache::kMaxKeyBytes, 'x');
  const uint64_t not_read = dbs[1]->records_not_read();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(dbs[1]->Put(long_key, "v").ok());
  EXPECT_EQ(dbs[1]->records_not_read(), not_read);
  ExpectConsistent(*dbs[1]);
}

// Tables from 2 MiB on live in a mapping with huge pages (MappedMemory), smaller ones on the heap:
// summaries move from a heap table into a mapped one and between mapped ones as the table grows,
// and every summary found afterwards is the one put last for its key.
TEST(RecordCacheTest, TablesGrowingPastAHugePageKeepTheirSummaries) {
  SharedBudget budget(64 << 20);
  RecordCache cache(&budget);
  constexpr int kKeys = 100000;
  RecordSummary summary;
  size_t passed_threshold = 0;
  for (int pass = 0; pass < 3; ++pass) {
    for (int i = 0; i < kKeys; ++i) {
      const std::string key = "/k/" + std::to_string(i);
      if (const RecordSummary* found = cache.Find(key)) {
        ASSERT_EQ(found->counter, static_cast<uint64_t>((pass - 1) * kKeys + i + 1)) << key;
      }
      summary.counter = static_cast<uint64_t>(pass * kKeys + i + 1);
      cache.Put(key, summary);
      const bool mapped = cache.slots() * RecordCache::kSlotBytes >= MappedMemory::kHugePageBytes;
      if (mapped && passed_threshold == 0) passed_threshold = cache.slots();
    }
  }
  EXPECT_GT(passed_threshold, 0u) << "a table grew past a huge page";
  EXPECT_GT(cache.slots(), passed_threshold) << "and grew again (mapped into mapped)";
  size_t kept = 0;
  for (int i = 0; i < kKeys; ++i) {
    const RecordSummary* found = cache.Find("/k/" + std::to_string(i));
    if (found == nullptr) continue;
    ++kept;
    EXPECT_EQ(found->counter, static_cast<uint64_t>(2 * kKeys + i + 1));
  }
  EXPECT_GT(kept, static_cast<size_t>(kKeys) * 8 / 10);
  cache.Clear();
  EXPECT_EQ(budget.left(), 64 << 20);
}

// A table uses all its slots: 2,000 keys through a table the budget keeps at its first size leave
// it full (every slot holding the key that took it last), and all the others missing.
TEST(RecordCacheTest, EverySlotOfATableIsUsed) {
  SharedBudget budget(RecordCache::kFirstSlots * RecordCache::kSlotBytes);
  RecordCache cache(&budget);
  RecordSummary summary;
  for (int i = 0; i < 2000; ++i) {
    summary.counter = static_cast<uint64_t>(i) + 1;
    const std::string key = "/k/" + std::to_string(i);
    ASSERT_EQ(cache.Find(key), nullptr) << key;
    cache.Put(key, summary);
  }
  EXPECT_EQ(cache.slots(), RecordCache::kFirstSlots);
  EXPECT_EQ(budget.left(), 0);
  size_t kept = 0;
  for (int i = 0; i < 2000; ++i) {
    const RecordSummary* found = cache.Find("/k/" + std::to_string(i));
    if (found == nullptr) continue;
    ++kept;
    EXPECT_EQ(found->counter, static_cast<uint64_t>(i) + 1);
  }
  EXPECT_EQ(kept, RecordCache::kFirstSlots);
  cache.Erase("/k/1999");
  EXPECT_EQ(cache.Find("/k/1999"), nullptr);
  cache.Clear();
  EXPECT_EQ(budget.left(),
            static_cast<int64_t>(RecordCache::kFirstSlots * RecordCache::kSlotBytes));
}

/// A cache of `slots_budget` slots' worth of budget whose table was made (after the first
/// lookups that a table waits for).
struct CacheWithTable {
  explicit CacheWithTable(size_t slots_budget) : budget(slots_budget * RecordCache::kSlotBytes) {
    for (size_t i = 0; i < RecordCache::kFirstSlots; ++i) cache.Find("/warm");
    cache.Put("/warm", RecordSummary{});
    cache.Erase("/warm");
  }
  SharedBudget budget;
  RecordCache cache{&budget};
};

// Two keys that share a set are both kept (a direct-mapped table kept the one put last), and a
// third takes the slot of the one put less recently.
TEST(RecordCacheTest, TwoKeysOfOneSetAreBothKeptAndAThirdTakesTheOnePutLeastRecently) {
  CacheWithTable c(RecordCache::kFirstSlots);
  ASSERT_EQ(c.cache.slots(), RecordCache::kFirstSlots);
  std::vector<std::string> same;  // keys of set 0
  for (int i = 0; same.size() < 3 && i < 10000; ++i) {
    std::string key = "/k/" + std::to_string(i);
    if (RecordCache::SetOf(key, c.cache.slots()) == 0) same.push_back(std::move(key));
  }
  ASSERT_EQ(same.size(), 3u);
  RecordSummary summary;
  for (int i = 0; i < 2; ++i) {
    summary.counter = static_cast<uint64_t>(i) + 1;
    c.cache.Put(same[i], summary);
  }
  ASSERT_NE(c.cache.Find(same[0]), nullptr) << "two keys of one set are both kept";
  EXPECT_EQ(c.cache.Find(same[0])->counter, 1u);
  ASSERT_NE(c.cache.Find(same[1]), nullptr);
  EXPECT_EQ(c.cache.Find(same[1])->counter, 2u);
  summary.counter = 10;
  c.cache.Put(same[0], summary);  // now same[1] is the one put less recently
  summary.counter = 3;
  c.cache.Put(same[2], summary);
  EXPECT_EQ(c.cache.Find(same[1]), nullptr) << "the key put least recently made room";
  ASSERT_NE(c.cache.Find(same[0]), nullptr);
  EXPECT_EQ(c.cache.Find(same[0])->counter, 10u);
  ASSERT_NE(c.cache.Find(same[2]), nullptr);
  EXPECT_EQ(c.cache.Find(same[2])->counter, 3u);
}

// What the sets buy: keys used uniformly at random, three for every four slots of a table that
// cannot grow, are found about 81% of the time (a direct-mapped table: 70%), and each key found
// holds what was put for it last.
TEST(RecordCacheTest, ThreeKeysForFourSlotsAreMostlyFound) {
  constexpr size_t kSlots = 4096;
  constexpr size_t kKeys = kSlots * 3 / 4;
  // A budget twice the table: a larger table would leave the others less than itself.
  CacheWithTable c(2 * kSlots);
  std::mt19937_64 rng(7);
  std::vector<uint64_t> last(kKeys, 0);
  size_t found = 0;
  size_t finds = 0;
  for (uint64_t step = 1; step <= 40 * kKeys; ++step) {
    const size_t k = rng() % kKeys;
    const std::string key = "/key/" + std::to_string(k);
    if (const RecordSummary* s = c.cache.Find(key)) {
      ASSERT_EQ(s->counter, last[k]) << key;
      if (step > 20 * kKeys) ++found;  // once the table is as large as it gets
    }
    if (step > 20 * kKeys) ++finds;
    RecordSummary summary;
    summary.counter = last[k] = step;
    c.cache.Put(key, summary);
  }
  ASSERT_EQ(c.cache.slots(), kSlots);
  const double hit = static_cast<double>(found) / static_cast<double>(finds);
  EXPECT_GT(hit, 0.77) << "found " << found << " of " << finds;
}

// One busy database's table grows to half the node's budget (not only a quarter: the table it
// replaces is given back), and no further.
TEST(RecordCacheTest, ABusyDatabasesTableTakesHalfTheBudget) {
  constexpr size_t kBudgetSlots = 64 * RecordCache::kFirstSlots;
  CacheWithTable c(kBudgetSlots);
  RecordSummary summary;
  for (int round = 0; round < 20; ++round) {
    for (size_t k = 0; k < 2 * kBudgetSlots; ++k) {
      const std::string key = "/key/" + std::to_string(k);
      c.cache.Find(key);
      c.cache.Put(key, summary);
    }
  }
  EXPECT_EQ(c.cache.slots(), kBudgetSlots / 2);
  EXPECT_EQ(c.budget.left(), static_cast<int64_t>(kBudgetSlots / 2 * RecordCache::kSlotBytes));
}

// A table that grows moves its summaries a few sets per Put or Erase, not all in the Put that
// grew it (26-30 ms of one write at 262,144 slots); meanwhile every summary is still found, and a
// key put or erased meanwhile never gets its older summary back when its old set moves.
TEST(RecordCacheTest, AGrowingTableMovesItsSummariesAFewSetsAtATimeAndKeepsTheNewest) {
  // Growth from a table whose move takes 64 calls or more (the test puts and erases mid-move).
  constexpr size_t kFromSlots = 64 * RecordCache::kSetsMovedPerCall * RecordCache::kWays;
  constexpr size_t kBudgetSlots = 32 * kFromSlots;
  CacheWithTable c(kBudgetSlots);
  auto summary_of = [](uint64_t counter) {
    RecordSummary s;
    s.counter = counter;
    return s;
  };
  auto key_of = [](size_t k) { return "/key/" + std::to_string(k); };
  // Keys looked up and put until the table grows from at least kFromSlots.
  size_t k = 0;
  size_t before = 0;
  for (; k < 4 * kBudgetSlots; ++k) {
    before = c.cache.slots();
    c.cache.Find(key_of(k));
    c.cache.Put(key_of(k), summary_of(k));
    if (c.cache.slots() != before && before >= kFromSlots) break;
  }
  ASSERT_GT(c.cache.slots(), before) << "the table never grew";
  ASSERT_TRUE(c.cache.moving()) << "the Put that grew the table moved every summary at once";
  // Every summary the old table kept is still found, with its own value.
  std::vector<size_t> kept;
  for (size_t i = 0; i < k; ++i) {
    const RecordSummary* found = c.cache.Find(key_of(i));
    if (found == nullptr) continue;
    ASSERT_EQ(found->counter, i) << key_of(i);
    kept.push_back(i);
  }
  ASSERT_GT(kept.size(), before / 2);
  // Meanwhile (each call moves kSetsMovedPerCall sets): every third kept key put again (a newer
  // summary), every third erased, in turns.
  for (size_t j = 0; j < kept.size(); ++j) {
    if (j % 3 == 0) c.cache.Put(key_of(kept[j]), summary_of(kept[j] + 1));
    if (j % 3 == 1) c.cache.Erase(key_of(kept[j]));
    if (j == 30) ASSERT_TRUE(c.cache.moving()) << "the test no longer puts and erases mid-move";
  }
  // New keys until every set moved.
  for (int puts = 0; c.cache.moving() && puts < 100000; ++puts) {
    c.cache.Put(key_of(k + 1 + puts), summary_of(0));
  }
  ASSERT_FALSE(c.cache.moving());
  size_t found_again = 0;
  for (size_t j = 0; j < kept.size(); ++j) {
    const RecordSummary* found = c.cache.Find(key_of(kept[j]));
    if (j % 3 == 1) {
      EXPECT_EQ(found, nullptr) << key_of(kept[j]) << " was erased and came back";
    } else if (found != nullptr) {
      ++found_again;
      EXPECT_EQ(found->counter, j % 3 == 0 ? kept[j] + 1 : kept[j])
          << key_of(kept[j]) << " has an older summary than the one put last";
    }
  }
  EXPECT_GT(found_again, kept.size() / 3) << "the move lost most summaries";
  // No key is held twice (an older copy behind the newer one): erased, a key is gone.
  for (size_t j = 0; j < kept.size(); j += 3) {
    c.cache.Erase(key_of(kept[j]));
    EXPECT_EQ(c.cache.Find(key_of(kept[j])), nullptr) << key_of(kept[j]) << " is held twice";
  }
  // The old table's bytes went back to the budget.
  EXPECT_EQ(c.budget.left(),
            static_cast<int64_t>((kBudgetSlots - c.cache.slots()) * RecordCache::kSlotBytes));
  // A cache cleared in the middle of a move gives back both tables' bytes.
  CacheWithTable d(kBudgetSlots);
  for (size_t i = 0; !d.cache.moving() && i < 8 * kBudgetSlots; ++i) {
    d.cache.Find(key_of(i));
    d.cache.Put(key_of(i), summary_of(i));
  }
  ASSERT_TRUE(d.cache.moving());
  d.cache.Clear();
  EXPECT_EQ(d.budget.left(), static_cast<int64_t>(kBudgetSlots * RecordCache::kSlotBytes));
}

/// Sweeps until the pass ends (at most 1000 calls of `max_members`); the members removed.
uint64_t SweepPass(DatabaseStore& db, size_t max_members = 1 << 20) {
  uint64_t total = 0;
  bool more = true;
  for (int calls = 0; more && calls < 1000; ++calls) {
    uint64_t removed = 0;
    Status s = db.SweepDotRanges(max_members, &removed, &more);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) break;
    total += removed;
  }
  EXPECT_FALSE(more);
  return total;
}

/// Dot range members of database `id` whose record no longer has their dot.
size_t StaleRangeMembers(Store& store, uint64_t id) {
  size_t stale = 0;
  for (const auto& [dot, key] : RangeMembers(store, id)) {
    const Dot stored = StoredDot(store, id, key);
    if (stored.origin != dot.origin || stored.counter != dot.counter) ++stale;
  }
  return stale;
}

/// Every record's key and dot as stored here (tombstones too).
size_t RecordCount(const DatabaseStore& db) {
  return StoredDots(db, VersionVector()).size();
}

void RawPut(Store& store, const std::string& key, const std::string& value) {
  ASSERT_TRUE(store.db()->Put(rocksdb::WriteOptions(), key, value).ok());
}

// The writes list the dots they make stale (overwrite, erase, tombstone collection, stale
// repair), so the sweep removes exactly those members reading no record: a record it cannot
// parse does not stop it. A reopened handle has no list: its pass reads every member's record
// (and stops at the unreadable one), and lists again what is made stale meanwhile.
TEST(DotRangeTest, TheListedSweepRemovesExactlyTheListedMembersAndReadsNoRecord) {
  Replica a, b, c;
  const uint64_t id = a.db->id();
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 200, "v1")).ok());
  ASSERT_TRUE(a.db->Write(NumberedPuts(50, 100, "v2")).ok());
  for (int i = 0; i < 200; i += 7) ASSERT_TRUE(a.db->Put(NumberedKey(i), "v3").ok());
  WriteBatch erase;
  for (int i = 150; i < 160; ++i) erase.Erase(NumberedKey(i));
  ASSERT_TRUE(a.db->Write(erase).ok());
  Sync(*a.db, *c.db);  // c misses the collection below: its stale repair removes 10 records
  uint64_t collected = 0;
  ASSERT_TRUE(a.db->CollectTombstones(a.db->version_vector(), UINT64_MAX, &collected).ok());
  ASSERT_EQ(collected, 10u);
  ASSERT_EQ(RepairAgainst(*a.db, *c.db, 100, 1000), 10u);
  for (Replica* r : {&a, &c}) {
    EXPECT_TRUE(r->db->stale_dots_complete());
    EXPECT_EQ(r->db->listed_stale_dots(), r->db->stale_members());
    EXPECT_EQ(StaleRangeMembers(*r->store, r->db->id()), r->db->stale_members());
  }
  const uint64_t stale = a.db->stale_members();
  EXPECT_EQ(stale, 50u + 29 + 10 + 10);

  // A live record no sweep may read.
  const std::string data_key = keys::DataPrefix(id) + NumberedKey(199);
  bool found = false;
  const std::string record = RawGet(*a.store, data_key, &found);
  ASSERT_TRUE(found);
  RawPut(*a.store, data_key, "\xff\xff not a record");
  EXPECT_EQ(SweepPass(*a.db, 16), stale);
  RawPut(*a.store, data_key, record);
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(StaleRangeMembers(*a.store, id), 0u);
  EXPECT_EQ(a.db->range_members(), RecordCount(*a.db));
  EXPECT_EQ(a.db->listed_stale_dots(), 0u);
  EXPECT_EQ(a.store->listed_stale_dots(), 0u);
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()), StoredDots(*a.db, VersionVector()));
  Sync(*a.db, *b.db);
  ExpectSame(*a.db, *b.db);
  EXPECT_EQ(SweepPass(*c.db), 10u) << "c never held the values erased: only its repair's";
  EXPECT_EQ(StaleRangeMembers(*c.store, c.db->id()), 0u);
  EXPECT_EQ(DeltaDots(*c.db, VersionVector()), StoredDots(*c.db, VersionVector()));
  ExpectSame(*a.db, *c.db);

  // Reopened with stale members: nothing listed, so the pass reads records.
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 20, "v4")).ok());
  a.Open();
  EXPECT_FALSE(a.db->stale_dots_complete());
  EXPECT_EQ(a.db->listed_stale_dots(), 0u);
  RawPut(*a.store, data_key, "\xff\xff not a record");
  uint64_t removed = 0;
  Status s = a.db->SweepDotRanges(1 << 20, &removed);
  EXPECT_EQ(s.code(), Code::kCorruption) << s;
  RawPut(*a.store, data_key, record);
  a.Open();
  ASSERT_TRUE(a.db->SweepDotRanges(100, &removed).ok());  // the pass passes the first range
  // Listed meanwhile: 8 in the first range (behind the pass), 2 in ranges ahead of it.
  ASSERT_TRUE(a.db->Write(NumberedPuts(180, 190, "v5")).ok());
  EXPECT_EQ(a.db->listed_stale_dots(), 10u);
  EXPECT_EQ(SweepPass(*a.db, 100) + removed, 20u + 2);
  EXPECT_TRUE(a.db->stale_dots_complete()) << "the pass ended: what it left is listed";
  EXPECT_EQ(a.db->stale_members(), 8u);
  EXPECT_EQ(StaleRangeMembers(*a.store, id), 8u);
  EXPECT_EQ(SweepPass(*a.db), a.db->stale_members());
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(StaleRangeMembers(*a.store, id), 0u);
  EXPECT_EQ(a.db->range_members(), RecordCount(*a.db));
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()), StoredDots(*a.db, VersionVector()));
  Sync(*a.db, *b.db);
  ExpectSame(*a.db, *b.db);
  ExpectConsistent(*a.db);
}

// The range holding a listed dot is found by a forward seek to the least key a range holding it
// can have (a range spans at most 1024 counters): here a dot at the far end of a full range, first
// in its call. And one pass removes the dots of two origins (a range written here, one received).
TEST(DotRangeTest, TheListedSweepFindsTheEndOfAFullRangeAndEveryOrigin) {
  Replica a, b;
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 1024, "v1")).ok());  // one range: counters 1..1024
  ASSERT_TRUE(b.db->Write(NumberedPuts(2000, 2100, "b1")).ok());
  Sync(*a.db, *b.db);
  ASSERT_TRUE(a.db->Put(NumberedKey(1023), "v2").ok());  // replaces counter 1024
  ASSERT_TRUE(a.db->stale_dots_complete());
  EXPECT_EQ(SweepPass(*a.db), 1u);
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(StaleRangeMembers(*a.store, a.db->id()), 0u);

  WriteBatch overwrite;  // on b: members of a's range and of b's own
  for (int i : {0, 500, 1023, 2000, 2050}) overwrite.Put(NumberedKey(i), "b2");
  ASSERT_TRUE(b.db->Write(overwrite).ok());
  ASSERT_TRUE(b.db->stale_dots_complete());
  EXPECT_EQ(b.db->stale_members(), 5u);
  EXPECT_EQ(SweepPass(*b.db), 5u);
  EXPECT_EQ(b.db->stale_members(), 0u);
  EXPECT_EQ(StaleRangeMembers(*b.store, b.db->id()), 0u);
  EXPECT_EQ(b.db->range_members(), RecordCount(*b.db));
  EXPECT_EQ(DeltaDots(*b.db, VersionVector()), StoredDots(*b.db, VersionVector()));
  ExpectConsistent(*b.db);
}

// A pass stopped by an error (here an unreadable range between two with listed dots) has moved
// past dots it had not removed yet: the next pass starts over, reading records, so no stale
// member is left behind for good.
TEST(DotRangeTest, APassStoppedByAnErrorLeavesNoStaleMemberBehind) {
  Replica a;
  const uint64_t id = a.db->id();
  for (int from = 0; from < 300; from += 100) {
    ASSERT_TRUE(a.db->Write(NumberedPuts(from, from + 100, "v1")).ok());  // ranges 1, 101, 201
  }
  WriteBatch overwrite;
  for (int from = 0; from < 300; from += 100) {
    for (int i = from; i < from + 10; ++i) overwrite.Put(NumberedKey(i), "v2");
  }
  ASSERT_TRUE(a.db->Write(overwrite).ok());
  ASSERT_EQ(a.db->stale_members(), 30u);
  ASSERT_TRUE(a.db->stale_dots_complete());
  const std::string second = keys::DotRangeKey(id, a.node(), 101);
  bool found = false;
  const std::string range = RawGet(*a.store, second, &found);
  ASSERT_TRUE(found);
  RawPut(*a.store, second, "\xff\xff not a range");
  uint64_t removed = 0;
  Status s = a.db->SweepDotRanges(1 << 20, &removed);
  EXPECT_EQ(s.code(), Code::kCorruption) << s;
  RawPut(*a.store, second, range);
  SweepPass(*a.db);
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(StaleRangeMembers(*a.store, id), 0u) << "the first range's members were left";
  EXPECT_EQ(a.db->range_members(), RecordCount(*a.db));
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()), StoredDots(*a.db, VersionVector()));
  ExpectConsistent(*a.db);
}

// Writes between the rounds of a listed pass (overwrites of members behind it, ahead of it and
// of ranges written since, erases, new keys) are listed for the next pass; every pass stays a
// listed one, and no live member is ever removed.
TEST(DotRangeTest, WritesBetweenRoundsOfAListedSweepAreListedForTheNext) {
  Replica a, b;
  const uint64_t id = a.db->id();
  for (int from = 0; from < 1000; from += 50) {
    ASSERT_TRUE(a.db->Write(NumberedPuts(from, from + 50, "v1")).ok());
  }
  int next = 0;  // keys 3 * next % 1000 are overwritten in turn
  auto overwrite = [&](int n) {
    WriteBatch batch;
    for (int i = 0; i < n; ++i, ++next)
      batch.Put(NumberedKey(3 * next % 1000), "v" + std::to_string(next));
    ASSERT_TRUE(a.db->Write(batch).ok());
  };
  for (int i = 0; i < 10; ++i) overwrite(40);
  int rounds = 0;
  for (; a.db->stale_members() > 0 && rounds < 500; ++rounds) {
    uint64_t removed = 0;
    ASSERT_TRUE(a.db->SweepDotRanges(10, &removed).ok());  // about two ranges a round
    ASSERT_TRUE(a.db->stale_dots_complete()) << "round " << rounds;
    EXPECT_EQ(StaleRangeMembers(*a.store, id), a.db->stale_members());
    if (rounds < 40) {
      overwrite(7);
      if (rounds % 5 == 0) ASSERT_TRUE(a.db->Erase(NumberedKey(rounds * 13 % 1000)).ok());
      if (rounds % 7 == 0) ASSERT_TRUE(a.db->Put("/new/" + std::to_string(rounds), "n").ok());
    }
    EXPECT_EQ(DeltaDots(*a.db, VersionVector()), StoredDots(*a.db, VersionVector()));
  }
  EXPECT_LT(rounds, 500);
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(StaleRangeMembers(*a.store, id), 0u);
  EXPECT_EQ(a.db->range_members(), RecordCount(*a.db));
  EXPECT_EQ(a.db->listed_stale_dots(), 0u);
  Sync(*a.db, *b.db);
  ExpectSame(*a.db, *b.db);
  ExpectConsistent(*a.db);
}

// Only committed replacements are listed: a write refused after its records were staged lists
// nothing, and expiry, which keeps the record's dot (a tombstone of the same version), lists
// nothing either: its member stays, and is still served.
TEST(DotRangeTest, AFailedWriteAndAnExpiryListNoDot) {
  FakeClock clock;
  Replica a(1000, clock.Options());
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 10, "v")).ok());
  Status s = a.db->Put(NumberedKey(3), std::string(2000, 'x'));
  ASSERT_EQ(s.code(), Code::kSizeLimitExceeded) << s;
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(a.db->listed_stale_dots(), 0u);

  ASSERT_TRUE(PutTtl(*a.db, "/ttl", "t", 1000).ok());
  clock.Advance(std::chrono::milliseconds(1001));
  ASSERT_EQ(Sweep(*a.db), 1u);
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(a.db->listed_stale_dots(), 0u);
  ASSERT_TRUE(a.db->Put(NumberedKey(4), "w").ok());  // one stale member: a pass to run
  EXPECT_EQ(SweepPass(*a.db), 1u);
  const auto sent = DeltaDots(*a.db, VersionVector());
  EXPECT_EQ(sent, StoredDots(*a.db, VersionVector()));
  EXPECT_EQ(sent.count("/ttl"), 1u);
  EXPECT_EQ(a.db->range_members(), RecordCount(*a.db));
}

// The list is bounded per database and per node: a write that would pass a bound drops the
// list, the next due pass reads records, and lists anew. A full half of the bound makes a pass
// due before half the members are stale.
TEST(DotRangeTest, TheListOfStaleDotsIsBounded) {
  Replica a;
  const uint64_t id = a.db->id();
  a.db->set_max_listed_stale_dots(100);
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 300, "v1")).ok());
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 60, "v2")).ok());
  EXPECT_EQ(a.db->listed_stale_dots(), 60u);
  EXPECT_EQ(a.store->listed_stale_dots(), 60u);
  EXPECT_TRUE(a.db->DotRangesNeedSweep()) << "60 listed of at most 100; 60 of 360 stale";
  ASSERT_TRUE(a.db->Write(NumberedPuts(60, 150, "v2")).ok());
  EXPECT_FALSE(a.db->stale_dots_complete());
  EXPECT_EQ(a.db->listed_stale_dots(), 0u);
  EXPECT_EQ(a.store->listed_stale_dots(), 0u);
  EXPECT_FALSE(a.db->DotRangesNeedSweep()) << "150 of 450 stale";
  EXPECT_EQ(SweepPass(*a.db, 50), 150u);
  EXPECT_TRUE(a.db->stale_dots_complete());
  EXPECT_EQ(StaleRangeMembers(*a.store, id), 0u);
  EXPECT_EQ(a.db->range_members(), 300u);

  // The node's bound, shared by its databases.
  ASSERT_TRUE(a.store->ReserveListedStaleDots(kMaxListedStaleDotsPerNode - 5));
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 5, "v3")).ok());
  EXPECT_TRUE(a.db->stale_dots_complete());
  EXPECT_EQ(a.store->listed_stale_dots(), kMaxListedStaleDotsPerNode);
  ASSERT_TRUE(a.db->Write(NumberedPuts(5, 6, "v3")).ok());
  EXPECT_FALSE(a.db->stale_dots_complete());
  EXPECT_EQ(a.store->listed_stale_dots(), kMaxListedStaleDotsPerNode - 5);
  a.store->ReleaseListedStaleDots(kMaxListedStaleDotsPerNode - 5);
  EXPECT_EQ(SweepPass(*a.db), 6u);
  ASSERT_TRUE(a.db->Write(NumberedPuts(0, 5, "v4")).ok());
  EXPECT_EQ(a.store->listed_stale_dots(), 5u);
  a.db.reset();  // a closed handle gives its room back
  EXPECT_EQ(a.store->listed_stale_dots(), 0u);
}

// The listed pass steps from range to range while the listed dots are near one another, and
// seeks past a long run of ranges without any.
TEST(DotRangeTest, TheListedSweepFindsDotsNearAndFarApart) {
  Replica a;
  const uint64_t id = a.db->id();
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(a.db->Put(NumberedKey(i), "v1").ok());  // 40 ranges
  WriteBatch batch;
  for (int i : {0, 1, 3, 20, 39}) batch.Put(NumberedKey(i), "v2");
  ASSERT_TRUE(a.db->Write(batch).ok());
  EXPECT_EQ(SweepPass(*a.db), 5u);
  EXPECT_EQ(a.db->stale_members(), 0u);
  EXPECT_EQ(StaleRangeMembers(*a.store, id), 0u);
  EXPECT_EQ(a.db->range_members(), RecordCount(*a.db));
  EXPECT_EQ(DeltaDots(*a.db, VersionVector()), StoredDots(*a.db, VersionVector()));
}

}  // namespace
}  // namespace kvmesh::storage
