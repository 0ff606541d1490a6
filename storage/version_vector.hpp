// VersionVector: which writes ("dots") a database replica has applied.
//
// Every write gets a dot: (origin node id, counter), where the counter counts the writes that
// origin accepted for the database (1, 2, 3, ...). A replica records, per origin, a base (every
// counter up to it is applied, or superseded by a newer write of the same key that is applied)
// and the counters above the base that arrived out of order. Comparing two vectors tells exactly
// which writes one replica must send the other (DatabaseStore::DeltaSince), and the minimum of
// every replica's vector tells which tombstones all have seen (DatabaseStore::CollectTombstones).
//
// A plain value type; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kvmesh::storage {

/// The identity of one write: who accepted it and its position in that origin's history.
struct Dot {
  uint64_t origin = 0;
  uint64_t counter = 0;
};

class VersionVector {
 public:
  /// Out-of-order counters kept per origin; beyond this the highest are dropped (anti-entropy
  /// sends those writes again, so dropping is safe, merely wasteful).
  static constexpr size_t kMaxExtrasPerOrigin = 4096;

  /// True if the write `dot` is applied here (at or below the base, or among the extras).
  bool Covers(Dot dot) const;

  /// Records that the write `dot` is applied; extends the base over extras it now reaches.
  void Add(Dot dot);

  /// Applies a sender's coverage claim (origin, after, through] (see proto CoveredRange): when
  /// this vector's base for `origin` is at least `after`, the base becomes at least `through`.
  /// Otherwise nothing changes (the gap below `after` is still missing).
  void AddRange(uint64_t origin, uint64_t after, uint64_t through);

  /// Every counter of `origin` up to the result is applied; 0 if none.
  uint64_t Base(uint64_t origin) const;

  /// The origins this vector knows, ascending.
  std::vector<uint64_t> Origins() const;

  /// True if this vector has seen every write `other` has seen (bases and extras).
  bool Includes(const VersionVector& other) const;

  /// The origins of which `other` has seen a write this vector has not, ascending: what a
  /// replica with this vector may pull from one with `other`.
  std::vector<uint64_t> OriginsLacking(const VersionVector& other) const;

  /// Component-wise minimum of the bases (extras dropped): the writes both have surely seen.
  static VersionVector Min(const VersionVector& a, const VersionVector& b);

  /// Sum of the bases plus the number of extras: how many writes are applied. Two replicas
  /// with equal vectors have applied the same writes.
  uint64_t Total() const;

  /// Binary form: a serialized proto::VersionVector.
  std::string Serialize() const;
  /// Parses the binary form; false (and *out unchanged) if `bytes` is not a valid vector.
  static bool Parse(std::string_view bytes, VersionVector* out);

  /// A 64-bit hash of the canonical binary form (Serialize), the same on every node for equal
  /// vectors; 0 for an empty vector and never 0 otherwise. What the node-level anti-entropy
  /// (replication/node_summary.hpp) compares instead of whole vectors.
  uint64_t Digest() const;

  /// Human form for logs and status: "{origin:base(+extras), ...}" with origins in hex.
  std::string ToString() const;

  bool operator==(const VersionVector& other) const;
  bool operator!=(const VersionVector& other) const { return !(*this == other); }

 private:
  struct Entry {
    uint64_t base = 0;
    std::set<uint64_t> extras;
    bool operator==(const Entry& o) const { return base == o.base && extras == o.extras; }
  };
  std::map<uint64_t, Entry> entries_;
};

}  // namespace kvmesh::storage
