#include "storage/version_vector.hpp"

#include <algorithm>
#include <cinttypes>
#include <climits>
#include <cstdio>

#include "messages/storage.pb.h"

namespace kvmesh::storage {

bool VersionVector::Covers(Dot dot) const {
  auto it = entries_.find(dot.origin);
  if (it == entries_.end()) return dot.counter == 0;
  return dot.counter <= it->second.base || it->second.extras.count(dot.counter) > 0;
}

namespace {

// Moves `base` over the extras that continue it, and drops the extras at or below it.
template <class EntryT>
void Absorb(EntryT* entry) {
  auto& extras = entry->extras;
  while (!extras.empty() && *extras.begin() <= entry->base + 1) {
    entry->base = std::max(entry->base, *extras.begin());
    extras.erase(extras.begin());
  }
}

}  // namespace

void VersionVector::Add(Dot dot) {
  if (dot.counter == 0) return;
  auto it = entries_.find(dot.origin);
  if (it != entries_.end() && dot.counter <= it->second.base) return;
  Entry& entry = it != entries_.end() ? it->second : entries_[dot.origin];
  if (dot.counter == entry.base + 1) {
    entry.base = dot.counter;
    Absorb(&entry);
    return;
  }
  entry.extras.insert(dot.counter);
  if (entry.extras.size() > kMaxExtrasPerOrigin) entry.extras.erase(std::prev(entry.extras.end()));
  // The entry was new and its only extra was dropped at once (kMaxExtrasPerOrigin == 0 only);
  // keep the map free of empty entries so equal vectors compare equal.
  if (entry.base == 0 && entry.extras.empty()) entries_.erase(dot.origin);
}

void VersionVector::AddRange(uint64_t origin, uint64_t after, uint64_t through) {
  auto it = entries_.find(origin);
  const uint64_t base = it == entries_.end() ? 0 : it->second.base;
  if (base < after || through <= base) return;
  Entry& entry = it != entries_.end() ? it->second : entries_[origin];
  entry.base = through;
  Absorb(&entry);
}

uint64_t VersionVector::Base(uint64_t origin) const {
  auto it = entries_.find(origin);
  return it == entries_.end() ? 0 : it->second.base;
}

std::vector<uint64_t> VersionVector::Origins() const {
  std::vector<uint64_t> out;
  out.reserve(entries_.size());
  for (const auto& [origin, entry] : entries_) out.push_back(origin);
  return out;
}

namespace {

/// True if `mine` (null: nothing seen) has seen every write of one origin that `theirs` has.
template <class EntryT>
bool EntryIncludes(const EntryT* mine, const EntryT& theirs) {
  if (mine == nullptr) return false;  // `theirs` is never empty
  if (mine->base < theirs.base) return false;
  for (uint64_t extra : theirs.extras) {
    if (extra > mine->base && mine->extras.count(extra) == 0) return false;
  }
  return true;
}

}  // namespace

bool VersionVector::Includes(const VersionVector& other) const {
  for (const auto& [origin, theirs] : other.entries_) {
    auto it = entries_.find(origin);
    if (!EntryIncludes(it == entries_.end() ? nullptr : &it->second, theirs)) return false;
  }
  return true;
}

std::vector<uint64_t> VersionVector::OriginsLacking(const VersionVector& other) const {
  std::vector<uint64_t> out;
  for (const auto& [origin, theirs] : other.entries_) {
    auto it = entries_.find(origin);
    if (!EntryIncludes(it == entries_.end() ? nullptr : &it->second, theirs)) {
      out.push_back(origin);
    }
  }
  return out;
}

VersionVector VersionVector::Min(const VersionVector& a, const VersionVector& b) {
  VersionVector out;
  for (const auto& [origin, entry] : a.entries_) {
    const uint64_t base = std::min(entry.base, b.Base(origin));
    if (base > 0) out.entries_[origin].base = base;
  }
  return out;
}

uint64_t VersionVector::Total() const {
  uint64_t total = 0;
  for (const auto& [origin, entry] : entries_) total += entry.base + entry.extras.size();
  return total;
}

std::string VersionVector::Serialize() const {
  proto::VersionVector message;
  for (const auto& [origin, entry] : entries_) {
    proto::VersionVectorEntry* out = message.add_entries();
    out->set_origin(origin);
    out->set_base(entry.base);
    for (uint64_t extra : entry.extras) out->add_extras(extra);
  }
  return message.SerializeAsString();
}

uint64_t VersionVector::Digest() const {
  if (entries_.empty()) return 0;
  // FNV-1a over the canonical bytes, then a splitmix64 finaliser: fixed across builds and
  // platforms (std::hash is not), as nodes compare each other's digests.
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : Serialize()) {
    h ^= c;
    h *= 1099511628211ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h == 0 ? 1 : h;
}

// Accepts only the canonical form Serialize writes (up to extras that continue the base, which
// are absorbed): origins non-zero and strictly ascending, extras strictly ascending above the
// base and at most kMaxExtrasPerOrigin of them. Entries with nothing in them are skipped.
bool VersionVector::Parse(std::string_view bytes, VersionVector* out) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) return false;
  proto::VersionVector message;
  if (!message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  VersionVector parsed;
  uint64_t previous_origin = 0;
  for (const proto::VersionVectorEntry& in : message.entries()) {
    if (in.origin() == 0 || in.origin() <= previous_origin) return false;
    previous_origin = in.origin();
    if (static_cast<size_t>(in.extras_size()) > kMaxExtrasPerOrigin) return false;
    Entry entry;
    entry.base = in.base();
    uint64_t previous = in.base();
    for (uint64_t extra : in.extras()) {
      if (extra <= previous) return false;
      previous = extra;
      entry.extras.insert(entry.extras.end(), extra);
    }
    Absorb(&entry);
    if (entry.base == 0 && entry.extras.empty()) continue;
    parsed.entries_.emplace(in.origin(), std::move(entry));
  }
  *out = std::move(parsed);
  return true;
}

std::string VersionVector::ToString() const {
  std::string out = "{";
  char buffer[64];
  for (const auto& [origin, entry] : entries_) {
    if (out.size() > 1) out += ", ";
    std::snprintf(buffer, sizeof(buffer), "%016" PRIx64 ":%" PRIu64, origin, entry.base);
    out += buffer;
    if (!entry.extras.empty()) out += "(+" + std::to_string(entry.extras.size()) + ")";
  }
  out += "}";
  return out;
}

bool VersionVector::operator==(const VersionVector& other) const {
  return entries_ == other.entries_;
}

}  // namespace kvmesh::storage
