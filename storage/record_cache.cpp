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

const RecordSummary* RecordCache::Find(std::string_view key) const {
  if (key.size() > kMaxKeyBytes) return nullptr;
  ++finds_;
  if (slots_ == 0) return nullptr;
  const uint64_t hash = HashKey(key);
  const Slot& slot = SlotOf(hash);
  return Holds(slot, key, hash) ? &slot.summary : nullptr;
}

void RecordCache::Put(std::string_view key, const RecordSummary& summary) {
  if (key.size() > kMaxKeyBytes) return;
  // No table before a first few lookups: most of a node's many databases write a key now and
  // then, and 100,000 first tables were 200 MiB.
  if (slots_ == 0 && (finds_ < kFirstSlots || !Resize(kFirstSlots))) return;
  const uint64_t hash = HashKey(key);
  Slot* slot = &SlotOf(hash);
  if (slot->key_hash != 0 && !Holds(*slot, key, hash)) ++collisions_;
  // Over a quarter table's worth of lookups, keys took slots from each other more than a quarter
  // as often: twice the slots (four times, more than half as often), if the budget has room.
  // Direct-mapped, a table of twice the keys in use keeps about four in five of them (uniformly
  // used); keys lost meanwhile are read again. Counted per lookup, not per put: a write puts each
  // key it read once more, and a bulk load of new keys (which looks nothing up) needs no table.
  if (finds_ >= std::max<size_t>(slots_ / 4, kFirstSlots)) {
    const size_t factor = collisions_ * 2 > finds_ ? 4 : collisions_ * 4 > finds_ ? 2 : 1;
    if (factor > 1 && slots_ < kMaxSlots &&
        (Resize(std::min(factor * slots_, kMaxSlots)) || (factor > 2 && Resize(2 * slots_)))) {
      slot = &SlotOf(hash);
    }
    finds_ = collisions_ = 0;
  }
  slot->key_hash = hash;
  slot->summary = summary;
  slot->key_size = static_cast<uint8_t>(key.size());
  std::memcpy(slot->key, key.data(), key.size());
}

void RecordCache::Erase(std::string_view key) {
  if (slots_ == 0 || key.size() > kMaxKeyBytes) return;
  const uint64_t hash = HashKey(key);
  Slot& slot = SlotOf(hash);
  if (Holds(slot, key, hash)) slot.key_hash = 0;
}

void RecordCache::Clear() {
  if (slots_ == 0) return;
  table_.reset();
  budget_->Give(slots_ * kSlotBytes);
  slots_ = 0;
  finds_ = collisions_ = 0;
}

bool RecordCache::Resize(size_t slots) {
  const size_t bytes = slots * kSlotBytes;
  // A first table takes what it needs; a larger one leaves as much again to the others.
  if (budget_ == nullptr || !budget_->Take(bytes, slots_ == 0 ? 0 : bytes)) return false;
  // No exception from here: Put runs after a write committed (an allocation that fails keeps
  // the table it has).
  std::unique_ptr<Slot[]> table(new (std::nothrow) Slot[slots]);
  if (!table) {
    budget_->Give(bytes);
    return false;
  }
  std::unique_ptr<Slot[]> old = std::move(table_);
  const size_t old_slots = slots_;
  table_ = std::move(table);
  slots_ = slots;
  finds_ = collisions_ = 0;
  for (size_t i = 0; i < old_slots; ++i) {
    if (old[i].key_hash != 0) SlotOf(old[i].key_hash) = old[i];
  }
  if (old_slots > 0) budget_->Give(old_slots * kSlotBytes);
  return true;
}

}  // namespace kvmesh::storage
