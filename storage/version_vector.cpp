#include "storage/version_vector.hpp"

#include <algorithm>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <new>

#include "messages/storage.pb.h"

namespace kvmesh::storage {

namespace {

const std::set<uint64_t> kNoExtras;

// Moves `base` over the extras that continue it, and drops the extras at or below it.
template <class EntryT>
void Absorb(EntryT* entry) {
  auto& extras = entry->extras;
  while (!extras.empty() && *extras.begin() <= entry->base + 1) {
    entry->base = std::max(entry->base, *extras.begin());
    extras.erase(extras.begin());
  }
}

/// FNV-1a over `bytes`, then a splitmix64 finaliser: fixed across builds and platforms
/// (std::hash is not), as nodes compare each other's digests. Never 0.
uint64_t Hash(const std::string& bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
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

/// Reads a list of retired origins: origins non-zero and strictly ascending, counters non-zero.
template <class List>
bool ParseRetired(const List& in, std::map<uint64_t, uint64_t>* out) {
  uint64_t previous = 0;
  for (const proto::RetiredOrigin& r : in) {
    if (r.origin() == 0 || r.origin() <= previous || r.last_counter() == 0) return false;
    previous = r.origin();
    out->emplace_hint(out->end(), r.origin(), r.last_counter());
  }
  return true;
}

}  // namespace

// -- Lookups treat a retired origin as an entry with base = its last counter --

VersionVector::View VersionVector::ViewOf(uint64_t origin) const {
  auto e = entries_.find(origin);
  if (e != entries_.end()) return View{true, e->second.base, &e->second.extras};
  auto r = retired_.find(origin);
  if (r != retired_.end()) return View{true, r->second, &kNoExtras};
  return View{false, 0, &kNoExtras};
}

bool VersionVector::ViewIncludes(const View& mine, const View& theirs) {
  if (!mine.known) return false;  // `theirs` is never empty
  if (mine.base < theirs.base) return false;
  for (uint64_t extra : *theirs.extras) {
    if (extra > mine.base && mine.extras->count(extra) == 0) return false;
  }
  return true;
}

bool VersionVector::Covers(Dot dot) const {
  const View v = ViewOf(dot.origin);
  if (!v.known) return dot.counter == 0;
  return dot.counter <= v.base || v.extras->count(dot.counter) > 0;
}

void VersionVector::Unretire(uint64_t origin) {
  auto r = retired_.find(origin);
  if (r == retired_.end()) return;
  entries_[origin].base = r->second;
  retired_.erase(r);
  RetiredChanged();
}

void VersionVector::CompactIfDue(uint64_t origin) {
  auto pending = retiring_.find(origin);
  if (pending == retiring_.end()) return;
  auto it = entries_.find(origin);
  if (it == entries_.end()) return;
  const uint64_t last = pending->second;
  const Entry& entry = it->second;
  const uint64_t highest = entry.extras.empty() ? entry.base : *entry.extras.rbegin();
  if (highest > last) {  // a counter above the last one: the claim was false
    retiring_.erase(pending);
  } else if (entry.base == last) {
    retired_[origin] = last;
    entries_.erase(it);
    retiring_.erase(pending);
    RetiredChanged();
  }
}

void VersionVector::Add(Dot dot) {
  if (dot.counter == 0) return;
  auto r = retired_.find(dot.origin);
  if (r != retired_.end()) {
    if (dot.counter <= r->second) return;
    Unretire(dot.origin);
  }
  auto it = entries_.find(dot.origin);
  if (it != entries_.end() && dot.counter <= it->second.base) return;
  Entry& entry = it != entries_.end() ? it->second : entries_[dot.origin];
  if (dot.counter == entry.base + 1) {
    entry.base = dot.counter;
    Absorb(&entry);
    CompactIfDue(dot.origin);
    return;
  }
  entry.extras.insert(dot.counter);
  if (entry.extras.size() > kMaxExtrasPerOrigin) entry.extras.erase(std::prev(entry.extras.end()));
  // The entry was new and its only extra was dropped at once (kMaxExtrasPerOrigin == 0 only);
  // keep the map free of empty entries so equal vectors compare equal.
  if (entry.base == 0 && entry.extras.empty()) {
    entries_.erase(dot.origin);
    return;
  }
  CompactIfDue(dot.origin);
}

void VersionVector::AddRange(uint64_t origin, uint64_t after, uint64_t through) {
  const uint64_t base = Base(origin);
  if (base < after || through <= base) return;
  Unretire(origin);  // only reached by a false claim: a retired origin has nothing above it
  auto it = entries_.find(origin);
  Entry& entry = it != entries_.end() ? it->second : entries_[origin];
  entry.base = through;
  Absorb(&entry);
  CompactIfDue(origin);
}

uint64_t VersionVector::Base(uint64_t origin) const {
  return ViewOf(origin).base;
}

uint64_t VersionVector::Highest(uint64_t origin) const {
  const View v = ViewOf(origin);
  return v.extras->empty() ? v.base : *v.extras->rbegin();
}

std::vector<uint64_t> VersionVector::Origins() const {
  std::vector<uint64_t> out;
  out.reserve(entries_.size() + retired_.size());
  for (const auto& [origin, entry] : entries_) out.push_back(origin);
  for (const auto& [origin, last] : retired_) out.push_back(origin);
  std::inplace_merge(out.begin(), out.begin() + entries_.size(), out.end());
  return out;
}

bool VersionVector::Includes(const VersionVector& other) const {
  for (const auto& [origin, theirs] : other.entries_) {
    if (!ViewIncludes(ViewOf(origin), View{true, theirs.base, &theirs.extras})) {
      return false;
    }
  }
  for (const auto& [origin, last] : other.retired_) {
    if (Base(origin) < last) return false;
  }
  return true;
}

std::vector<uint64_t> VersionVector::OriginsLacking(const VersionVector& other) const {
  std::vector<uint64_t> out;
  for (const auto& [origin, theirs] : other.entries_) {
    if (!ViewIncludes(ViewOf(origin), View{true, theirs.base, &theirs.extras})) {
      out.push_back(origin);
    }
  }
  const size_t from_entries = out.size();
  for (const auto& [origin, last] : other.retired_) {
    if (Base(origin) < last) out.push_back(origin);
  }
  std::inplace_merge(out.begin(), out.begin() + from_entries, out.end());
  return out;
}

VersionVector VersionVector::Min(const VersionVector& a, const VersionVector& b) {
  VersionVector out;
  for (uint64_t origin : a.Origins()) {
    const uint64_t base = std::min(a.Base(origin), b.Base(origin));
    if (base > 0) out.entries_[origin].base = base;
  }
  return out;
}

uint64_t VersionVector::Total() const {
  uint64_t total = 0;
  for (const auto& [origin, entry] : entries_) total += entry.base + entry.extras.size();
  for (const auto& [origin, last] : retired_) total += last;
  return total;
}

namespace {

void AddRetired(const std::map<uint64_t, uint64_t>& in,
                google::protobuf::RepeatedPtrField<proto::RetiredOrigin>* out) {
  out->Reserve(static_cast<int>(in.size()));
  for (const auto& [origin, last] : in) {
    proto::RetiredOrigin* r = out->Add();
    r->set_origin(origin);
    r->set_last_counter(last);
  }
}

}  // namespace

std::string VersionVector::Serialize() const {
  proto::VersionVector message;
  for (const auto& [origin, entry] : entries_) {
    proto::VersionVectorEntry* out = message.add_entries();
    out->set_origin(origin);
    out->set_base(entry.base);
    for (uint64_t extra : entry.extras) out->add_extras(extra);
  }
  AddRetired(retired_, message.mutable_retired());
  AddRetired(retiring_, message.mutable_retiring());
  return message.SerializeAsString();
}

std::string VersionVector::SerializeForPeer(bool with_retired,
                                            const VersionVector* receiver) const {
  proto::VersionVector message;
  auto retired = retired_.begin();
  // Retired origins below `limit` (all if `all`), in order between the entries.
  auto mirror_retired_below = [&](uint64_t limit, bool all) {
    for (; receiver != nullptr && retired != retired_.end() && (all || retired->first < limit);
         ++retired) {
      if (receiver->entries_.count(retired->first) == 0) continue;
      proto::VersionVectorEntry* out = message.add_entries();
      out->set_origin(retired->first);
      out->set_base(retired->second);
    }
  };
  for (const auto& [origin, entry] : entries_) {
    mirror_retired_below(origin, false);
    proto::VersionVectorEntry* out = message.add_entries();
    out->set_origin(origin);
    out->set_base(entry.base);
    for (uint64_t extra : entry.extras) out->add_extras(extra);
  }
  mirror_retired_below(0, true);
  message.set_retired_digest(RetiredDigest());
  if (with_retired) AddRetired(retired_, message.mutable_retired());
  return message.SerializeAsString();
}

// The digest of the coverage: the canonical bytes of the vector with every retired origin
// written as the entry it stands for (base = its last counter), so it is the same however far a
// replica has compacted, and the same as nodes that predate retired origins compute.
uint64_t VersionVector::Digest() const {
  if (entries_.empty() && retired_.empty()) return 0;
  proto::VersionVector message;
  auto add = [&message](uint64_t origin, uint64_t base, const std::set<uint64_t>& extras) {
    proto::VersionVectorEntry* out = message.add_entries();
    out->set_origin(origin);
    out->set_base(base);
    for (uint64_t extra : extras) out->add_extras(extra);
  };
  auto retired = retired_.begin();
  for (const auto& [origin, entry] : entries_) {
    for (; retired != retired_.end() && retired->first < origin; ++retired) {
      add(retired->first, retired->second, kNoExtras);
    }
    add(origin, entry.base, entry.extras);
  }
  for (; retired != retired_.end(); ++retired) add(retired->first, retired->second, kNoExtras);
  return Hash(message.SerializeAsString());
}

void VersionVector::RetiredChanged() {
  if (retired_.empty()) {
    retired_digest_ = 0;
    return;
  }
  proto::VersionVector message;
  AddRetired(retired_, message.mutable_retired());
  retired_digest_ = Hash(message.SerializeAsString());
}

bool VersionVector::Retire(uint64_t origin, uint64_t last_counter) {
  if (origin == 0 || last_counter == 0 || retired_.count(origin) > 0 ||
      retiring_.count(origin) > 0 || Highest(origin) > last_counter) {
    return false;
  }
  retiring_.emplace(origin, last_counter);
  CompactIfDue(origin);
  return true;
}

void VersionVector::AdoptRetired(const VersionVector& from) {
  retiring_.clear();
  retired_.clear();
  for (const auto& [origin, last] : from.retired_) {
    if (entries_.count(origin) == 0) retired_.emplace_hint(retired_.end(), origin, last);
  }
  RetiredChanged();
}

void VersionVector::DropRetired() {
  retired_.clear();
  retiring_.clear();
  RetiredChanged();
}

// Accepts only the canonical form Serialize writes (up to extras that continue the base, which
// are absorbed): origins non-zero and strictly ascending, extras strictly ascending above the
// base and at most kMaxExtrasPerOrigin of them; retired origins likewise ascending, and an
// entry of one only if it says the same (SerializeForPeer); retiring ones ascending and none
// also retired. Entries with nothing in them
// are skipped.
bool VersionVector::Parse(std::string_view bytes, VersionVector* out, WireRetired* wire) {
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
  if (!ParseRetired(message.retired(), &parsed.retired_) ||
      !ParseRetired(message.retiring(), &parsed.retiring_)) {
    return false;
  }
  for (const auto& [origin, last] : parsed.retired_) {
    // Also an entry only as SerializeForPeer mirrors it: the same coverage.
    auto entry = parsed.entries_.find(origin);
    if (entry == parsed.entries_.end()) continue;
    if (entry->second.base != last || !entry->second.extras.empty()) return false;
    parsed.entries_.erase(entry);
  }
  parsed.RetiredChanged();
  for (const auto& [origin, last] : parsed.retiring_) {
    if (parsed.retired_.count(origin) > 0) return false;
  }
  if (wire != nullptr) {
    const bool listed = !parsed.retired_.empty();
    if (listed && message.retired_digest() != 0 &&
        message.retired_digest() != parsed.RetiredDigest()) {
      return false;  // the list is not the set the digest names
    }
    wire->digest = listed ? parsed.RetiredDigest() : message.retired_digest();
    wire->complete = listed || message.retired_digest() == 0;
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
  if (!retired_.empty()) out += " +" + std::to_string(retired_.size()) + " retired";
  return out;
}

bool VersionVector::operator==(const VersionVector& other) const {
  return entries_ == other.entries_ && retired_ == other.retired_ && retiring_ == other.retiring_;
}

void SortDots(std::vector<Dot>* dots) {
  auto by_dot = [](const Dot& a, const Dot& b) {
    return a.origin != b.origin ? a.origin < b.origin : a.counter < b.counter;
  };
  const size_t n = dots->size();
  // The origins: the replicas that wrote, a handful. Many of them, or few dots: std::sort.
  constexpr size_t kMaxOrigins = 64;
  std::vector<uint64_t> origins;
  uint64_t low = UINT64_MAX;
  uint64_t high = 0;
  for (const Dot& dot : *dots) {
    low = std::min(low, dot.counter);
    high = std::max(high, dot.counter);
    if (origins.size() <= kMaxOrigins &&
        std::find(origins.begin(), origins.end(), dot.origin) == origins.end()) {
      origins.push_back(dot.origin);
    }
  }
  if (n < 1024 || origins.size() > kMaxOrigins) {
    std::sort(dots->begin(), dots->end(), by_dot);
    return;
  }
  std::sort(origins.begin(), origins.end());
  // Stable passes of kDigitBits bits of the counter above `low` (least significant first),
  // then one by origin: each keeps the order of the ones before among equals.
  constexpr int kDigitBits = 11;
  constexpr size_t kBuckets = size_t{1} << kDigitBits;
  std::vector<Dot> other;
  try {
    other.resize(n);
  } catch (const std::bad_alloc&) {
    // A sweep runs on the database actor: short of memory, the sort that needs none.
    std::sort(dots->begin(), dots->end(), by_dot);
    return;
  }
  std::vector<size_t> starts(std::max(kBuckets, origins.size()) + 1);
  auto pass = [&](auto bucket_of, size_t buckets) {
    std::fill(starts.begin(), starts.begin() + static_cast<ptrdiff_t>(buckets) + 1, 0);
    for (const Dot& dot : *dots) ++starts[bucket_of(dot) + 1];
    for (size_t b = 0; b < buckets; ++b) starts[b + 1] += starts[b];
    for (const Dot& dot : *dots) other[starts[bucket_of(dot)]++] = dot;
    dots->swap(other);
  };
  const uint64_t span = high - low;
  for (int shift = 0; shift < 64 && (span >> shift) != 0; shift += kDigitBits) {
    pass([low, shift](const Dot& dot) { return ((dot.counter - low) >> shift) & (kBuckets - 1); },
         kBuckets);
  }
  if (origins.size() > 1) {
    pass(
        [&origins](const Dot& dot) {
          return static_cast<size_t>(std::lower_bound(origins.begin(), origins.end(), dot.origin) -
                                     origins.begin());
        },
        origins.size());
  }
}

}  // namespace kvmesh::storage
