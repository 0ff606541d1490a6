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
// - KeyIndex: from a key to the header holding its chain; a fixed table of slots, open
//   addressing, lock-free, filled and never emptied. A slot holds a header's address and 16 bits
//   of its key's hash, so a probe past another key seldom reads that key. A header that finds no
//   free slot within kMaxProbes, or comes when the table is three quarters full, is not entered,
//   and the table says it is incomplete from then on: a key it lacks must then be searched for
//   elsewhere (the memtable's skip list).
//
// `Compare` (as SkipList's): `using Key`, `int operator()(const char* entry, const Key& key)`.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string_view>
#include <type_traits>

namespace kvmesh::storage {

/// An entry with its links in its key's chain in front of it: `next`, the version after it;
/// `before`, a hint for going backwards: some version before it (null: start from the first).
struct Version {
  std::atomic<Version*> before;
  std::atomic<Version*> next;

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
    new (version) Version{{nullptr}, {nullptr}};
    return const_cast<char*>(version->Entry());
  }
};
static_assert(sizeof(Version) == 2 * sizeof(void*), "the entry follows the links");

/// A key's versions in order (above).
struct VersionChain {
  std::atomic<Version*> first{nullptr};
  /// A hint: some version at or before the end (null: start from the first).
  std::atomic<Version*> oldest{nullptr};

  /// Links `version` (entry `key`) at its place: after a single comparison when it comes first;
  /// false, linking nothing, if an equal entry is there.
  template <typename Compare>
  bool Add(Version* version, const typename Compare::Key& key, const Compare& compare) {
    std::atomic<Version*>* link = &first;
    Version* before = nullptr;
    Version* next = link->load(std::memory_order_acquire);
    while (true) {
      for (; next != nullptr; next = link->load(std::memory_order_acquire)) {
        const int cmp = compare(next->Entry(), key);
        if (cmp == 0) return false;
        if (cmp > 0) break;
        before = next;
        link = &next->next;
      }
      version->before.store(before, std::memory_order_relaxed);
      version->next.store(next, std::memory_order_relaxed);
      if (link->compare_exchange_weak(next, version, std::memory_order_release,
                                      std::memory_order_acquire)) {
        break;
      }
      // Another version was linked here meanwhile (`next` is now it): go on from `link`.
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

  /// The first version at or after `key`, null if none.
  template <typename Compare>
  const Version* FirstAtOrAfter(const typename Compare::Key& key, const Compare& compare) const {
    const Version* v = First();
    while (v != nullptr && compare(v->Entry(), key) < 0) {
      v = v->next.load(std::memory_order_acquire);
    }
    return v;
  }

  /// The last version at or before `key`, null if none.
  template <typename Compare>
  const Version* LastAtOrBefore(const typename Compare::Key& key, const Compare& compare) const {
    const Version* last = nullptr;
    for (const Version* v = First(); v != nullptr && compare(v->Entry(), key) <= 0;
         v = v->next.load(std::memory_order_acquire)) {
      last = v;
    }
    return last;
  }
};
static_assert(sizeof(VersionChain) == 2 * sizeof(void*));

/// From a key to its `Header` (above). `KeyOf`: `std::string_view operator()(const Header*)`, the
/// key a header holds. Hashes are the caller's, 64 bits.
template <typename Header, typename KeyOf>
class KeyIndex {
 public:
  static constexpr int kMaxProbes = 32;

  /// `slots`: a power of two. The memory comes zeroed from calloc, which for a large table maps
  /// pages the kernel zeroes when first touched: a new table does not wait for megabytes to be
  /// cleared (a memtable is made on RocksDB's write path).
  KeyIndex(size_t slots, KeyOf key_of)
      : mask_(slots - 1),
        slots_(static_cast<std::atomic<uintptr_t>*>(std::calloc(slots, sizeof(uintptr_t)))),
        key_of_(std::move(key_of)) {
    if (slots_ == nullptr) throw std::bad_alloc();
  }

  size_t bytes() const { return (mask_ + 1) * sizeof(uintptr_t); }

  /// Headers entered so far.
  size_t entered() const { return used_.load(std::memory_order_relaxed); }

  /// True once some header could not be entered: a key the table lacks may be held elsewhere.
  /// Set before the Enter that could not enter its header returns.
  bool incomplete() const { return incomplete_.load(std::memory_order_acquire); }

  /// The header of `key` (hash `hash`), null if the table holds none.
  Header* Find(std::string_view key, uint64_t hash) const {
    size_t at = hash & mask_;
    for (int probe = 0; probe < kMaxProbes; ++probe, at = (at + 1) & mask_) {
      const uintptr_t slot = slots_[at].load(std::memory_order_acquire);
      if (slot == 0) return nullptr;
      if (Holds(slot, key, hash)) return Unpack(slot);
    }
    return nullptr;
  }

  /// Enters `header` (of `key`, hash `hash`) unless the table holds a header of `key` already
  /// (the same one: the caller keeps one header per key), or marks the table incomplete.
  void Enter(Header* header, std::string_view key, uint64_t hash) {
    const auto address = reinterpret_cast<uintptr_t>(header);
    if ((address >> kTagShift) != 0 || used_.load(std::memory_order_relaxed) >= Limit()) {
      incomplete_.store(true, std::memory_order_release);
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
    incomplete_.store(true, std::memory_order_release);
  }

 private:
  // x86-64 and AArch64 user-space addresses fit in 48 bits; a header elsewhere is not entered.
  static constexpr int kTagShift = 48;
  static uintptr_t Tag(uint64_t hash) { return hash >> kTagShift; }
  static Header* Unpack(uintptr_t slot) {
    return reinterpret_cast<Header*>(slot & ((uintptr_t{1} << kTagShift) - 1));
  }
  size_t Limit() const { return (mask_ + 1) / 4 * 3; }
  bool Holds(uintptr_t slot, std::string_view key, uint64_t hash) const {
    return (slot >> kTagShift) == Tag(hash) && key_of_(Unpack(slot)) == key;
  }

  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  static_assert(std::is_trivially_default_constructible_v<std::atomic<uintptr_t>> &&
                    std::is_trivially_destructible_v<std::atomic<uintptr_t>> &&
                    sizeof(std::atomic<uintptr_t>) == sizeof(uintptr_t) &&
                    std::atomic<uintptr_t>::is_always_lock_free,
                "a zeroed uintptr_t is an empty slot");

  const size_t mask_;
  const std::unique_ptr<std::atomic<uintptr_t>[], Free> slots_;
  const KeyOf key_of_;
  std::atomic<size_t> used_{0};
  std::atomic<bool> incomplete_{false};
};

}  // namespace kvmesh::storage
