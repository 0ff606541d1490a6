// RecordCache: what the write path needs to know of a stored record, kept so it need not read it.
//
// Every write reads the records it replaces: their version (the conflict rule, conditional
// writes), their dot and tombstone and expiry (the indexes), the size of their value (exact size
// accounting) and their digest hash. That read is a RocksDB lookup per key: when this cache was
// made, a search of the memtable's skip list as dear as the insert the write then makes, ~15% of
// an embedded put's CPU (perf, `kvmesh-bench --targets embedded --workloads put --inflight 50`,
// 100k keys overwritten at random); the memtable finds keys by hash since, but a lookup still
// goes through every memtable and the files' filters and indexes. Each database keeps these
// summaries of the records it last wrote or read in a table of its own, so overwriting a key
// written or read recently reads nothing.
//
// Coherence: a database's records change only through its one DatabaseStore, so the table holds
// as long as every change passes through it: a committed write puts the summaries of the records
// it stored, a removal (expiry, tombstone collection, stale repair) erases the keys it changes,
// a drop clears the table. A key the table does not hold is read from RocksDB as before.
//
// Memory: a table of sets of two slots (a key's set is fixed by its hash; a new key takes the
// slot of the set's key put less recently, so two keys that share a set are both kept, where
// a direct-mapped table kept one: at three keys per four slots, about 81% of uniformly used keys
// are found instead of 70%), made after a first few lookups (most of a node's many databases write
// a key now and then) and doubling while keys often collide, within a budget all
// databases of a node share (StoreOptions::record_cache_bytes): a table grows only while the
// budget keeps at least as much again for the others, so one busy database takes at most half of
// it and every database can have a table. Keys longer than kMaxKeyBytes are not kept.
//
// Growing: the summaries move to the larger table a few sets at a time, with each later Put and
// Erase (kSetsMovedPerCall), not all at once: moving 65,536 slots' summaries into a new table of
// 262,144 took 26-30 ms of the write that grew it (kvmesh-bench remote put, 50 in flight), and
// every write to the database waited for it. Until every set has moved, a lookup that misses in
// the new table looks in the old one, and a Put or Erase of a key removes it from the old one
// (so no older summary of it moves over later), and a moved summary takes only an empty slot
// (a key put since is newer). The old table's bytes stay taken meanwhile, until the database's
// next writes finish the move or it closes.
// Not thread-safe: its database's owner uses it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

#include "storage/mapped_memory.hpp"
#include "storage/shared_budget.hpp"

namespace kvmesh::storage {

/// A stored record as the write path sees it: all of proto::Record but the value's bytes.
struct RecordSummary {
  uint64_t origin = 0;
  uint64_t counter = 0;
  uint64_t hlc = 0;
  uint64_t expires = 0;
  uint64_t value_size = 0;
  /// The record's share of the digest (RecordHash) if it is live; 0 for a tombstone.
  uint64_t hash = 0;
  bool tombstone = false;
  bool dot_ranged = false;
};

class RecordCache {
 public:
  /// Keys longer than this are not kept (a slot holds its key inline).
  static constexpr size_t kMaxKeyBytes = 62;
  /// Slots per set: a key is kept in one of the slots of its set.
  static constexpr size_t kWays = 2;
  /// A table's first and largest size, in slots.
  static constexpr size_t kFirstSlots = 16;
  static constexpr size_t kMaxSlots = size_t{1} << 20;
  /// What one slot takes of the budget.
  static constexpr size_t kSlotBytes = 128;

  /// `budget` (bytes; not owned; may be null: nothing is kept) must outlive the cache.
  explicit RecordCache(SharedBudget* budget) : budget_(budget) {}
  RecordCache(const RecordCache&) = delete;
  RecordCache& operator=(const RecordCache&) = delete;
  ~RecordCache() { Clear(); }

  /// The summary kept for `key` (a normalised key), or null. Valid until the next Put, Erase or
  /// Clear.
  const RecordSummary* Find(std::string_view key) const;
  /// Keeps `summary` for `key`, in place of what its set held for it, else in a free slot of the
  /// set, else in place of the summary of the set's key put less recently (which is forgotten).
  /// Does nothing for a key over kMaxKeyBytes or when the budget has no room for a table.
  void Put(std::string_view key, const RecordSummary& summary);
  /// Brings the set of `key` towards the cache for a Find or Put of it soon after: a set is a
  /// likely cache miss (a table of up to 128 MiB, read at random), and a write finds or puts
  /// many keys one after another.
  void Prefetch(std::string_view key) const;
  /// Forgets `key`, if kept.
  void Erase(std::string_view key);
  /// Forgets everything and returns the table's bytes to the budget.
  void Clear();

  /// Slots in the table (0: none yet). For tests.
  size_t slots() const { return slots_; }
  /// True while summaries of a smaller table are still to move into this one. For tests.
  bool moving() const { return old_slots_ != 0; }
  /// Sets of the table being left behind that each Put or Erase moves into the new one.
  static constexpr size_t kSetsMovedPerCall = 64;
  /// The set of `key` in a table of `slots` slots. For tests.
  static size_t SetOf(std::string_view key, size_t slots) { return SetIndex(HashKey(key), slots); }

 private:
  // Aligned to cache lines, so that a set (two slots) spans four of them, not five.
  struct alignas(64) Slot {
    uint64_t key_hash = 0;  // 0: empty (a key's hash is never 0)
    RecordSummary summary;
    uint8_t key_size = 0;
    /// Put last of its set: the other slot's key goes first when a new key needs the set.
    bool recent = false;
    char key[kMaxKeyBytes];
  };
  static_assert(sizeof(Slot) == kSlotBytes);
  // A large table is zeroed mapped memory: all-zero bytes are an empty slot, and nothing needs
  // destroying.
  static_assert(std::is_trivially_copyable_v<Slot> && std::is_trivially_destructible_v<Slot>);
  /// A table's slots, all empty at first: on the heap while small (a node may have thousands of
  /// databases, each with a small table; a mapping each would use up the process's mappings,
  /// vm.max_map_count), from MappedMemory::kHugePageBytes on a mapping with huge pages (lookups
  /// at random then seldom miss the TLB; storage/mapped_memory.hpp).
  class Table {
   public:
    Table() = default;
    Table(Table&& other) noexcept
        : heap_(std::move(other.heap_)),
          mapped_(std::move(other.mapped_)),
          slots_(std::exchange(other.slots_, nullptr)) {}
    Table& operator=(Table&& other) noexcept {
      if (this != &other) {
        heap_ = std::move(other.heap_);
        mapped_ = std::move(other.mapped_);
        slots_ = std::exchange(other.slots_, nullptr);
      }
      return *this;
    }
    /// `slots` empty slots, or none (get() null) if there is no memory for them.
    static Table Make(size_t slots);
    Slot* get() const { return slots_; }

   private:
    std::unique_ptr<Slot[]> heap_;
    MappedMemory mapped_;
    Slot* slots_ = nullptr;
  };
  static uint64_t HashKey(std::string_view key);
  /// The set of a key of hash `hash` (HashKey's low bit is always set: not part of the index).
  static size_t SetIndex(uint64_t hash, size_t slots) { return (hash >> 1) & (slots / kWays - 1); }
  /// The first slot of the set of a key of hash `hash`.
  Slot* SetAt(uint64_t hash) const { return &table()[SetIndex(hash, slots_) * kWays]; }
  Slot* table() const { return table_.get(); }
  Slot* old_table() const { return old_table_.get(); }
  /// The slot of the set at `set` holding `key`, or null.
  static Slot* Find(Slot* set, std::string_view key, uint64_t hash);
  static bool Holds(const Slot& slot, std::string_view key, uint64_t hash);
  /// Keeps `summary` for `key` in its set (at `set`): in the slot holding it, else in an empty
  /// one, else in the one put less recently. True if that slot held another key.
  static bool Place(Slot* set, std::string_view key, uint64_t hash, const RecordSummary& summary);
  /// A table of `slots` slots (a power of two) into which the kept summaries move from now on
  /// (MoveSets), if the budget allows (see the header comment); false otherwise.
  bool Resize(size_t slots);
  /// Keeps summary `moved` of the old table in an empty slot of its new set, not marked as put
  /// last: a key put since the table grew is newer than any moved one and keeps its slot (a moved
  /// key that finds none is forgotten, as the less recent key of a full set is).
  void PlaceMoved(const Slot& moved);
  /// Moves up to `sets` sets of the old table into the table; frees the old one once all moved.
  void MoveSets(size_t sets);
  /// The slot of the old table holding `key`, if its set has not moved yet; else null.
  Slot* FindUnmoved(std::string_view key, uint64_t hash) const;

  SharedBudget* budget_;
  Table table_;
  size_t slots_ = 0;  // a power of two of at least kWays, or 0
  /// The table being left behind while its summaries move (Resize), its slots (0: none), and
  /// how many of its sets moved so far.
  Table old_table_;
  size_t old_slots_ = 0;
  size_t moved_sets_ = 0;
  /// Lookups since the table last grew or was judged (Put), and the puts meanwhile that took a
  /// slot over from another key.
  mutable size_t finds_ = 0;
  size_t collisions_ = 0;
};

}  // namespace kvmesh::storage
