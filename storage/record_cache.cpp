#include "storage/record_cache.hpp"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace kvmesh::storage {

uint64_t RecordCache::HashKey(std::string_view key) {
  return XXH3_64bits(key.data(), key.size()) | 1;  // never 0, the empty slot's mark
}

bool RecordCache::Holds(const Slot& slot, std::string_view key, uint64_t hash) {
  return slot.key_hash == hash && slot.key_size == key.size() &&
         std::memcmp(slot.key, key.data(), key.size()) == 0;
}

RecordCache::Slot* RecordCache::Find(Slot* set, std::string_view key, uint64_t hash) {
  for (size_t i = 0; i < kWays; ++i) {
    if (Holds(set[i], key, hash)) return &set[i];
  }
  return nullptr;
}

RecordCache::Table RecordCache::Table::Make(size_t slots) {
  Table table;
  const size_t bytes = slots * sizeof(Slot);
  if (bytes < MappedMemory::kHugePageBytes) {
    table.heap_.reset(new (std::nothrow) Slot[slots]);
    table.slots_ = table.heap_.get();
  } else {
    // With its pages in: a lazy one's pages, read before they are written, would lose their
    // huge pages on kernels before 6.13 (storage/mapped_memory.hpp). Zeroing it all now costs
    // what constructing a heap table did.
    table.mapped_ = MappedMemory::Map(bytes, MappedMemory::kPopulated);
    table.slots_ = static_cast<Slot*>(table.mapped_.data());
  }
  return table;
}

const RecordSummary* RecordCache::Find(std::string_view key) const {
  if (key.size() > kMaxKeyBytes) return nullptr;
  ++finds_;
  if (slots_ == 0) return nullptr;
  const uint64_t hash = HashKey(key);
  const Slot* slot = Find(SetAt(hash), key, hash);
  if (slot == nullptr) slot = FindUnmoved(key, hash);
  return slot != nullptr ? &slot->summary : nullptr;
}

void RecordCache::Prefetch(std::string_view key) const {
  if (slots_ == 0 || key.size() > kMaxKeyBytes) return;
  const char* set = reinterpret_cast<const char*>(SetAt(HashKey(key)));
  for (size_t line = 0; line < kWays * sizeof(Slot); line += 64) __builtin_prefetch(set + line);
}

RecordCache::Slot* RecordCache::FindUnmoved(std::string_view key, uint64_t hash) const {
  if (old_slots_ == 0) return nullptr;
  const size_t set = SetIndex(hash, old_slots_);
  return set < moved_sets_ ? nullptr : Find(&old_table()[set * kWays], key, hash);
}

void RecordCache::PlaceMoved(const Slot& moved) {
  Slot* set = SetAt(moved.key_hash);
  for (size_t i = 0; i < kWays; ++i) {
    if (set[i].key_hash == 0) {
      set[i] = moved;
      set[i].recent = false;
      return;
    }
  }
}

void RecordCache::MoveSets(size_t sets) {
  const size_t old_sets = old_slots_ / kWays;
  for (size_t end = std::min(old_sets, moved_sets_ + sets); moved_sets_ < end; ++moved_sets_) {
    const Slot* set = &old_table()[moved_sets_ * kWays];
    // The key put more recently first, should only one slot be free for them.
    for (bool recent : {true, false}) {
      for (size_t i = 0; i < kWays; ++i) {
        if (set[i].key_hash != 0 && set[i].recent == recent) PlaceMoved(set[i]);
      }
    }
  }
  if (moved_sets_ == old_sets) {
    old_table_ = Table();
    budget_->Give(old_slots_ * kSlotBytes);
    old_slots_ = 0;
    moved_sets_ = 0;
  }
}

bool RecordCache::Place(Slot* set, std::string_view key, uint64_t hash,
                        const RecordSummary& summary) {
  Slot* slot = Find(set, key, hash);
  bool took_over = false;
  if (slot == nullptr) {
    // An empty slot, else the one put less recently.
    for (size_t i = 0; i < kWays; ++i) {
      if (set[i].key_hash == 0) {
        slot = &set[i];
        break;
      }
      if (slot == nullptr && !set[i].recent) slot = &set[i];
    }
    if (slot == nullptr) slot = &set[0];
    took_over = slot->key_hash != 0;
  }
  for (size_t i = 0; i < kWays; ++i) set[i].recent = false;
  slot->recent = true;
  slot->key_hash = hash;
  slot->summary = summary;
  slot->key_size = static_cast<uint8_t>(key.size());
  std::memcpy(slot->key, key.data(), key.size());
  return took_over;
}

void RecordCache::Put(std::string_view key, const RecordSummary& summary) {
  if (key.size() > kMaxKeyBytes) return;
  // No table before a first few lookups: most of a node's many databases write a key now and
  // then, and 100,000 first tables were 200 MiB.
  if (slots_ == 0 && (finds_ < kFirstSlots || !Resize(kFirstSlots))) return;
  if (old_slots_ != 0) MoveSets(kSetsMovedPerCall);
  // Over a quarter table's worth of lookups, keys took slots from each other more than an eighth
  // as often: twice the slots (four times, more than a quarter as often), if the budget has room.
  // Uniformly used, a table of 4/3 slots per key keeps about 81% of them, one of 8/3 about 93%,
  // where keys take slots from each other about 7% as often; keys lost meanwhile are read again.
  // Counted per lookup, not per put: a write puts each key it read once more, and a bulk load of
  // new keys (which looks nothing up) needs no table.
  // (Not while the last growth's summaries still move.)
  if (old_slots_ == 0 && finds_ >= std::max<size_t>(slots_ / 4, kFirstSlots)) {
    const size_t factor = collisions_ * 4 > finds_ ? 4 : collisions_ * 8 > finds_ ? 2 : 1;
    if (factor > 1 && slots_ < kMaxSlots) {
      if (!Resize(std::min(factor * slots_, kMaxSlots)) && factor > 2) Resize(2 * slots_);
    }
    finds_ = collisions_ = 0;
  }
  const uint64_t hash = HashKey(key);
  if (Slot* stale = FindUnmoved(key, hash)) stale->key_hash = 0;
  if (Place(SetAt(hash), key, hash, summary)) ++collisions_;
}

void RecordCache::Erase(std::string_view key) {
  if (slots_ == 0 || key.size() > kMaxKeyBytes) return;
  const uint64_t hash = HashKey(key);
  if (Slot* slot = Find(SetAt(hash), key, hash)) slot->key_hash = 0;
  if (Slot* slot = FindUnmoved(key, hash)) slot->key_hash = 0;
  if (old_slots_ != 0) MoveSets(kSetsMovedPerCall);
}

void RecordCache::Clear() {
  if (slots_ == 0) return;
  table_ = Table();
  budget_->Give((slots_ + old_slots_) * kSlotBytes);
  old_table_ = Table();
  slots_ = old_slots_ = moved_sets_ = 0;
  finds_ = collisions_ = 0;
}

bool RecordCache::Resize(size_t slots) {
  if (old_slots_ != 0) return false;  // the last growth's summaries still move
  const size_t bytes = slots * kSlotBytes;
  const size_t old_bytes = slots_ * kSlotBytes;
  // A first table takes what it needs; a larger one leaves as much again to the others once the
  // table it replaces is given back.
  if (budget_ == nullptr || !budget_->Take(bytes, slots_ == 0 ? 0 : bytes - old_bytes)) {
    return false;
  }
  // No exception from here: Put runs after a write committed (an allocation that fails keeps
  // the table it has).
  Table table = Table::Make(slots);
  if (table.get() == nullptr) {
    budget_->Give(bytes);
    return false;
  }
  // A larger table splits every set: each key finds room as its set moves (MoveSets).
  old_table_ = std::move(table_);
  old_slots_ = slots_;
  moved_sets_ = 0;
  table_ = std::move(table);
  slots_ = slots;
  finds_ = collisions_ = 0;
  if (old_slots_ != 0) MoveSets(kSetsMovedPerCall);  // a first table has nothing to move
  return true;
}

}  // namespace kvmesh::storage
