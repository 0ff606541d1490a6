// A user key's versions in kvmesh's memtable (storage/memtable.hpp), and the table that finds them
// by key, apart from RocksDB's types so that tests can drive them directly (also under
// ThreadSanitizer: tests/version_chain_test.cpp).
//
// - VersionChain: a key's versions, each an entry with its links in front of it, in a singly
//   linked list in order (for RocksDB: newest first). Readers never lock; an insert links its
//   version with one compare-and-swap, so several may run at once, and one that finds a version
//   linked meanwhile at its place goes on from there. Nothing is ever removed. Two hints, each
//   only ever naming a version before the one it is kept in (or at or before the end), keep a step
//   backwards O(1) on a long chain: a stale hint costs a few steps forward, never a wrong answer.
//   A search into a long chain (a database's meta record is rewritten by every commit; a read at
//   an old snapshot of a hot key) jumps along far links, each naming a version after its own, up
//   to Version::kFarSpan on.
// - KeyIndex: from a key to the header holding its chain; a fixed table of slots, open
//   addressing, lock-free, filled and never emptied. A slot holds a header's address and 16 bits
//   of its key's hash, so a probe past another key seldom reads that key. A header that finds no
//   free slot within kMaxProbes, or comes when the table is half full, is not entered,
//   and the table says it is incomplete from then on: a key it lacks must then be searched for
//   elsewhere (the memtable's skip list), unless a filter of the hashes of the keys it refused
//   says the key is none of them.
// - SpareSlots: one table's zeroed memory (storage/mapped_memory.hpp) kept ready with its pages
//   in for the next memtable.
//
// `Compare` (as SkipList's): `using Key`, `int operator()(const char* entry, const Key& key)`.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <future>
#include <mutex>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>

#include "storage/mapped_memory.hpp"

namespace kvmesh::storage {

/// An entry with its links in its key's chain in front of it: `next`, the version after it;
/// `before`, a hint for going backwards: some version before it (null: start from the first);
/// `far`, a version after it to jump to, up to kFarSpan versions on (VersionChain::Find).
struct Version {
  /// How far a `far` link reaches at most: a search through n versions takes about
  /// n / kFarSpan jumps and kFarSpan steps.
  static constexpr uintptr_t kFarSpan = 64;

  std::atomic<Version*> before;
  std::atomic<Version*> next;
  /// The far version's address, and in the top 16 bits how many versions on it was when linked
  /// (0: none).
  std::atomic<uintptr_t> far;

  const char* Entry() const { return reinterpret_cast<const char*>(this + 1); }
  static Version* Of(const char* entry) {
    return reinterpret_cast<Version*>(const_cast<char*>(entry)) - 1;
  }

  /// Bytes to allocate (at any address) for a version with an entry of `entry_bytes`.
  static size_t Bytes(size_t entry_bytes) {
    return sizeof(Version) + entry_bytes + alignof(Version) - 1;
  }
  /// Makes a version in `memory` (Bytes of it); returns where its entry goes.
  static char* Make(char* memory) {
    auto* version = reinterpret_cast<Version*>(
        (reinterpret_cast<uintptr_t>(memory) + alignof(Version) - 1) & ~(alignof(Version) - 1));
    new (version) Version{{nullptr}, {nullptr}, {0}};
    return const_cast<char*>(version->Entry());
  }

  Version* Far() const {
    return reinterpret_cast<Version*>(far.load(std::memory_order_acquire) & kAddressMask);
  }
  /// Sets `far` for a version about to be linked right before `next`: next's far one while it
  /// reaches less than kFarSpan on, else `next`. So the versions linked first one after another
  /// (RocksDB's order: each new sequence number comes first) share a far one for kFarSpan
  /// versions, then start from the last of them. A chain grown at its end would have none.
  void FarFrom(const Version* next) {
    uintptr_t packed = 0;
    if (next != nullptr) {
      const uintptr_t next_far = next->far.load(std::memory_order_acquire);
      const uintptr_t span = next_far >> kSpanShift;
      packed = next_far != 0 && span < kFarSpan
                   ? ((span + 1) << kSpanShift) | (next_far & kAddressMask)
                   : (uintptr_t{1} << kSpanShift) | reinterpret_cast<uintptr_t>(next);
      // x86-64 and AArch64 user-space addresses fit in 48 bits; elsewhere no jumps.
      if ((reinterpret_cast<uintptr_t>(next) >> kSpanShift) != 0) packed = 0;
    }
    far.store(packed, std::memory_order_relaxed);
  }

 private:
  static constexpr int kSpanShift = 48;
  static constexpr uintptr_t kAddressMask = (uintptr_t{1} << kSpanShift) - 1;
};
static_assert(sizeof(Version) == 3 * sizeof(void*), "the entry follows the links");

/// A key's versions in order (above).
struct VersionChain {
  std::atomic<Version*> first{nullptr};
  /// A hint: some version at or before the end (null: start from the first).
  std::atomic<Version*> oldest{nullptr};

  /// Links `version` (entry `key`) at its place: after a single comparison when it comes first;
  /// false, linking nothing, if an equal entry is there.
  template <typename Compare>
  bool Add(Version* version, const typename Compare::Key& key, const Compare& compare) {
    const Place place = Find(key, compare, /*through=*/false);
    if (place.next_equal) return false;
    Version* before = place.before;
    Version* next = place.next;
    std::atomic<Version*>* link = before != nullptr ? &before->next : &first;
    while (true) {
      version->before.store(before, std::memory_order_relaxed);
      version->next.store(next, std::memory_order_relaxed);
      version->FarFrom(next);
      if (link->compare_exchange_weak(next, version, std::memory_order_release,
                                      std::memory_order_acquire)) {
        break;
      }
      // Another version was linked here meanwhile (`next` is now it): go on from `link`.
      for (; next != nullptr; next = link->load(std::memory_order_acquire)) {
        const int cmp = compare(next->Entry(), key);
        if (cmp == 0) return false;
        if (cmp > 0) break;
        before = next;
        link = &next->next;
      }
    }
    // The hints: `version` is before `next`, and was at the end if nothing followed it.
    if (next != nullptr) {
      next->before.store(version, std::memory_order_release);
    } else {
      oldest.store(version, std::memory_order_release);
    }
    return true;
  }

  const Version* First() const { return first.load(std::memory_order_acquire); }

  /// The last version, null if none.
  const Version* Last() const {
    const Version* v = oldest.load(std::memory_order_acquire);
    if (v == nullptr) v = First();
    if (v == nullptr) return nullptr;
    for (const Version* next = v->next.load(std::memory_order_acquire); next != nullptr;
         next = next->next.load(std::memory_order_acquire)) {
      v = next;
    }
    return v;
  }

  /// The version right before `version` (one of this chain's), null if it is the first.
  const Version* Before(const Version* version) const {
    const Version* before = version->before.load(std::memory_order_acquire);
    for (const Version* v = before != nullptr ? before->next.load(std::memory_order_acquire)
                                              : First();
         v != version; v = v->next.load(std::memory_order_acquire)) {
      before = v;
    }
    return before;
  }

  /// The first version at or after `key`, null if none. A key at or before the first (a read
  /// at the latest sequence number) takes one comparison, as does one after the last (a seek
  /// past a user key's versions).
  template <typename Compare>
  const Version* FirstAtOrAfter(const typename Compare::Key& key, const Compare& compare) const {
    const Version* v = First();
    if (v == nullptr || compare(v->Entry(), key) >= 0) return v;
    const Version* last = Last();
    if (compare(last->Entry(), key) < 0) return nullptr;
    return Find(key, compare, /*through=*/false).next;
  }

  /// The last version at or before `key`, null if none. As quick as FirstAtOrAfter at both ends.
  template <typename Compare>
  const Version* LastAtOrBefore(const typename Compare::Key& key, const Compare& compare) const {
    const Version* v = First();
    if (v == nullptr || compare(v->Entry(), key) > 0) return nullptr;
    const Version* last = Last();
    if (compare(last->Entry(), key) <= 0) return last;
    return Find(key, compare, /*through=*/true).before;
  }

 private:
  struct Place {
    Version* before;  // null: none
    Version* next;    // the version after `before` (or the first), null if none
    bool next_equal;  // `next` equals the key
  };

  /// The last version before `key` (`through`: at or before it), and the one after it. Jumps
  /// along the far links that land before the key, so a key among n versions takes about
  /// n / kFarSpan + 2 kFarSpan comparisons, not n.
  template <typename Compare>
  Place Find(const typename Compare::Key& key, const Compare& compare, bool through) const {
    bool equal = false;
    auto before_key = [&](const Version* v) {
      const int cmp = compare(v->Entry(), key);
      equal = cmp == 0;
      return through ? cmp <= 0 : cmp < 0;
    };
    Version* before = nullptr;
    Version* next = first.load(std::memory_order_acquire);
    const Version* not_before = nullptr;  // a far version known not to be before the key
    while (next != nullptr && before_key(next)) {
      before = next;
      for (Version* far = before->Far(); far != nullptr && far != not_before; far = before->Far()) {
        if (!before_key(far)) {
          not_before = far;
          break;
        }
        before = far;
      }
      next = before->next.load(std::memory_order_acquire);
    }
    return {before, next, next != nullptr && equal};
  }
};
static_assert(sizeof(VersionChain) == 2 * sizeof(void*));

/// Memory for a memtable's key tables, one after another: from the third on, each mapped with its
/// pages in (MappedMemory::kPopulated) on a thread of its own while the table before it filled.
/// RocksDB makes a memtable on its write path (SwitchMemtable, at the head of the write queue:
/// every writer waits), so mapping it populated there would hold them all (2.3 ms for the 8 MiB of
/// a 64 MiB write buffer's table); faulting the pages in as the inserts touch them costs those
/// inserts twice that (MappedMemory::kLazy: 3% of a bulk load's CPU). The first two tables fault
/// lazily, so a store that never fills a memtable (an idle node, most tests) keeps no spare; once
/// one has filled, one table's memory (`bytes`) is kept ready beyond the memtables', which
/// RocksDB's memory figures do not count.
class SpareSlots {
 public:
  explicit SpareSlots(size_t bytes) : bytes_(bytes) {}

  /// Memory for a new table: the spare, waited for if it is still being mapped (which began when
  /// the table before was taken); else (the first two, or no thread could be started, or the
  /// spare could not be mapped) memory mapped now, faulted in lazily. From the second table on,
  /// starts mapping the next spare. Empty (data() null) if no memory can be mapped.
  MappedMemory Take() {
    std::lock_guard lock(mutex_);
    MappedMemory memory;
    if (spare_.valid()) memory = spare_.get();
    if (memory.data() == nullptr) memory = MappedMemory::Map(bytes_, MappedMemory::kLazy);
    if (taken_++ > 0) {
      try {
        spare_ = std::async(std::launch::async, [bytes = bytes_] {
          return MappedMemory::Map(bytes, MappedMemory::kPopulated);
        });
      } catch (...) {  // no thread (std::system_error) or no memory for its state: none spare
      }
    }
    return memory;
  }

  /// Bytes kept beyond the tables taken: `bytes` once a spare is being mapped or ready (from the
  /// second Take on), else 0. Thread-safe.
  size_t held() {
    std::lock_guard lock(mutex_);
    return spare_.valid() ? bytes_ : 0;
  }

 private:
  const size_t bytes_;
  std::mutex mutex_;
  uint64_t taken_ = 0;
  std::future<MappedMemory> spare_;  // its destructor waits for the thread
};

/// From a key to its `Header` (above). `KeyOf`: `std::string_view operator()(const Header*)`, the
/// key a header holds. Hashes are the caller's, 64 bits.
template <typename Header, typename KeyOf>
class KeyIndex {
 public:
  static constexpr int kMaxProbes = 32;

  /// `slots`: a power of two. `memory`: zeroed, for `slots` slots (MappedMemory::Map); without
  /// it (the memory could not be mapped, or is of another size) the table holds nothing and is
  /// incomplete from the start: slower, never wrong.
  KeyIndex(size_t slots, KeyOf key_of, MappedMemory memory)
      : mask_(slots - 1), memory_(std::move(memory)), key_of_(std::move(key_of)) {
    if (memory_.bytes() != slots * sizeof(uintptr_t)) memory_ = MappedMemory();
    slots_ = static_cast<std::atomic<uintptr_t>*>(memory_.data());
    if (slots_ == nullptr) incomplete_.store(true, std::memory_order_relaxed);
  }
  /// The same, with memory mapped for it now, its pages faulted in as they are touched.
  KeyIndex(size_t slots, KeyOf key_of)
      : KeyIndex(slots, std::move(key_of),
                 MappedMemory::Map(slots * sizeof(uintptr_t), MappedMemory::kLazy)) {}
  KeyIndex(const KeyIndex&) = delete;
  KeyIndex& operator=(const KeyIndex&) = delete;

  /// The table's memory, and its filter's once made (MayHoldElsewhere).
  size_t bytes() const {
    const bool filtered = filter_.load(std::memory_order_relaxed) != nullptr;
    return memory_.bytes() + (filtered ? FilterWords() * sizeof(uint64_t) : 0);
  }

  /// Headers entered so far.
  size_t entered() const { return used_.load(std::memory_order_relaxed); }

  /// True once some header could not be entered (MayHoldElsewhere says for which keys that may
  /// matter). Set before the Enter that could not enter its header returns.
  bool incomplete() const { return incomplete_.load(std::memory_order_acquire); }

  /// Whether a key of hash `hash` that the table lacks may be held elsewhere: true for every key
  /// that some Enter (returned) could not enter, and for a few others (false positives). False
  /// while no Enter was refused; after that, false unless the key's two bits are set in a filter of
  /// the refused keys' hashes (four bits per slot: a table refusing as many keys as it holds
  /// passes about 1 in 20 others). So once the table is full, a lookup of a key held nowhere still
  /// mostly skips the search elsewhere, as a bloom filter in front of the memtable would. True for
  /// every key if the table has no memory and no filter yet, or the filter's memory could not be
  /// had.
  bool MayHoldElsewhere(uint64_t hash) const {
    if (!incomplete()) return false;
    const std::atomic<uint64_t>* filter = filter_.load(std::memory_order_acquire);
    if (filter == nullptr || filter_unmade_.load(std::memory_order_acquire)) return true;
    const auto [word_a, bit_a, word_b, bit_b] = FilterBits(hash);
    return (filter[word_a].load(std::memory_order_acquire) & bit_a) != 0 &&
           (filter[word_b].load(std::memory_order_acquire) & bit_b) != 0;
  }
  ~KeyIndex() { delete[] filter_.load(std::memory_order_relaxed); }

  /// The header of `key` (hash `hash`), null if the table holds none.
  Header* Find(std::string_view key, uint64_t hash) const {
    if (slots_ == nullptr) return nullptr;
    size_t at = hash & mask_;
    for (int probe = 0; probe < kMaxProbes; ++probe, at = (at + 1) & mask_) {
      const uintptr_t slot = slots_[at].load(std::memory_order_acquire);
      if (slot == 0) return nullptr;
      if (Holds(slot, key, hash)) return Unpack(slot);
    }
    return nullptr;
  }

  /// Brings the first slot of `hash` towards the cache, for a Find or Enter soon after.
  void Prefetch(uint64_t hash) const {
    if (slots_ != nullptr) __builtin_prefetch(&slots_[hash & mask_], 1);
  }

  /// Enters `header` (of `key`, hash `hash`) unless the table holds a header of `key` already
  /// (the same one: the caller keeps one header per key), or marks the table incomplete.
  void Enter(Header* header, std::string_view key, uint64_t hash) {
    const auto address = reinterpret_cast<uintptr_t>(header);
    if (slots_ == nullptr || (address >> kTagShift) != 0 ||
        used_.load(std::memory_order_relaxed) >= Limit()) {
      NotEntered(hash);
      return;
    }
    const uintptr_t packed = (Tag(hash) << kTagShift) | address;
    size_t at = hash & mask_;
    for (int probe = 0; probe < kMaxProbes; ++probe, at = (at + 1) & mask_) {
      uintptr_t slot = slots_[at].load(std::memory_order_acquire);
      if (slot == 0) {
        if (slots_[at].compare_exchange_strong(slot, packed, std::memory_order_release,
                                               std::memory_order_acquire)) {
          used_.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        // Another header took the slot meanwhile (`slot` is now it): it may be of this key.
      }
      if (Holds(slot, key, hash)) return;
    }
    NotEntered(hash);
  }

 private:
  // x86-64 and AArch64 user-space addresses fit in 48 bits; a header elsewhere is not entered.
  static constexpr int kTagShift = 48;
  static uintptr_t Tag(uint64_t hash) { return hash >> kTagShift; }
  static Header* Unpack(uintptr_t slot) {
    return reinterpret_cast<Header*>(slot & ((uintptr_t{1} << kTagShift) - 1));
  }
  // Half full: a miss probes ~2.5 slots there (linear probing), and a key seldom finds its
  // kMaxProbes taken.
  size_t Limit() const { return (mask_ + 1) / 2; }
  // A header of hash `hash` was not entered: its bits go into the filter (made by the first
  // such header), then the table is incomplete. Bits already set and the flag once set are only
  // read (every insert of a refused or new key after that comes here, on every core; a bit is
  // never cleared, so a reader after this insert sees it either way).
  void NotEntered(uint64_t hash) {
    std::atomic<uint64_t>* filter = filter_.load(std::memory_order_acquire);
    if (filter == nullptr) {
      std::atomic<uint64_t>* made = new (std::nothrow) std::atomic<uint64_t>[FilterWords()]();
      if (made != nullptr &&
          !filter_.compare_exchange_strong(filter, made, std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
        delete[] made;  // another insert made one first: `filter` is it
      } else {
        filter = made;  // null without memory: every key may then be held elsewhere
      }
    }
    if (filter != nullptr) {
      const auto [word_a, bit_a, word_b, bit_b] = FilterBits(hash);
      if ((filter[word_a].load(std::memory_order_relaxed) & bit_a) == 0) {
        filter[word_a].fetch_or(bit_a, std::memory_order_release);
      }
      if ((filter[word_b].load(std::memory_order_relaxed) & bit_b) == 0) {
        filter[word_b].fetch_or(bit_b, std::memory_order_release);
      }
    } else {
      filter_unmade_.store(true, std::memory_order_release);
    }
    if (!incomplete_.load(std::memory_order_relaxed)) {
      incomplete_.store(true, std::memory_order_release);
    }
  }
  // Four bits per slot.
  size_t FilterWords() const { return std::max<size_t>(8, (mask_ + 1) / 16); }
  // Two bits of a remix of the hash (the table's index and tag use its low and high bits).
  struct Bits {
    size_t word_a;
    uint64_t bit_a;
    size_t word_b;
    uint64_t bit_b;
  };
  Bits FilterBits(uint64_t hash) const {
    const uint64_t mixed = hash * 0x9e3779b97f4a7c15ull;
    const size_t bits = FilterWords() * 64;  // a power of two
    const size_t a = (mixed >> 32) & (bits - 1);
    const size_t b = (mixed >> 8) & (bits - 1);
    return {a / 64, uint64_t{1} << (a % 64), b / 64, uint64_t{1} << (b % 64)};
  }
  bool Holds(uintptr_t slot, std::string_view key, uint64_t hash) const {
    return (slot >> kTagShift) == Tag(hash) && key_of_(Unpack(slot)) == key;
  }

  static_assert(std::is_trivially_default_constructible_v<std::atomic<uintptr_t>> &&
                    std::is_trivially_destructible_v<std::atomic<uintptr_t>> &&
                    sizeof(std::atomic<uintptr_t>) == sizeof(uintptr_t) &&
                    std::atomic<uintptr_t>::is_always_lock_free,
                "a zeroed uintptr_t is an empty slot");

  const size_t mask_;
  MappedMemory memory_;
  std::atomic<uintptr_t>* slots_;  // memory_'s, null without it
  const KeyOf key_of_;
  // Written by inserts of new keys; apart from what every Find reads.
  alignas(64) std::atomic<size_t> used_{0};
  std::atomic<bool> incomplete_{false};
  // The hashes of the headers not entered (NotEntered), null until the first; and whether one
  // of them found no memory for it (a filter made later would lack its bits).
  std::atomic<std::atomic<uint64_t>*> filter_{nullptr};
  std::atomic<bool> filter_unmade_{false};
};

}  // namespace kvmesh::storage
