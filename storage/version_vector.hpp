// VersionVector: which writes ("dots") a database replica has applied.
//
// Every write gets a dot: (origin node id, counter), where the counter counts the writes that
// origin accepted for the database (1, 2, 3, ...). A replica records, per origin, a base (every
// counter up to it is applied, or superseded by a newer write of the same key that is applied)
// and the counters above the base that arrived out of order. Comparing two vectors tells exactly
// which writes one replica must send the other (DatabaseStore::DeltaSince), and the minimum of
// every replica's vector tells which tombstones all have seen (DatabaseStore::CollectTombstones).
//
// Retired origins (issue 19). The origin is random per copy of a database, so every copy ever
// made (joins, drains, rebalancing) would leave an entry in the vector forever, and vectors
// travel in every pull and answer. A copy that placement moved away drops itself only once every
// new replica's vector includes its own (replication/replicator.hpp), and writes nothing after:
// at that moment its origin's last counter F is known (its local counter) and every new replica
// covers the origin through F. It announces (origin, F) to them (proto Delta.retired). A
// replica that learns (origin, F) keeps the origin as a plain entry until it covers it through
// F (base F, no extras), then moves it into the retired set (origin -> F); until then the fact
// waits in `retiring` (stored, not coverage) and Add/AddRange move it once they reach F. Nothing
// of the meaning changes: every query below (Covers, Base, Origins, Includes, OriginsLacking,
// Min, Total, Digest) treats a retired origin as an entry with base F, so callers do not care,
// two replicas with equal coverage have equal digests however far each has compacted (and equal
// to those of nodes that predate retired origins), and a replica that never saw R's writes
// still lacks them by every comparison, so R's records still flow to it from the dot index,
// which compaction does not touch. Safety rests on F being final: a dot of a retired origin
// above F can only come from a false announcement; it turns the origin back into an entry.
// Between replicas a vector carries its entries and the digest of its retired set, plus the set
// itself only when the receiver is not known to hold the same one (SerializeForPeer; the
// replicator decides and fills in a set it knows by its digest, else it takes the peer to cover
// none of them: more is sent, nothing is lost).
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

/// Sorts `dots` by (origin, counter), the order std::sort by that pair gives, in time linear in
/// their number (a radix sort on the counters, then by origin). A sweep of the dot ranges sorts
/// a database's listed stale dots (up to 262,144) in one actor turn: with std::sort that was
/// 6-11 ms of a node under sustained overwrites, every write to the database waiting.
void SortDots(std::vector<Dot>* dots);

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

  /// Complete binary form (the database's meta, watch positions): a serialized
  /// proto::VersionVector with entries, retired origins and those retiring.
  std::string Serialize() const;
  /// The form sent to a peer: entries and the retired set's digest, plus the retired set
  /// itself if `with_retired` (nothing retiring). Origins retired here that `receiver` (the
  /// peer's vector as last known; may be null) holds as entries are written as entries too
  /// (base = last counter): a peer that has not retired them, or predates retired origins, then
  /// sees them covered without the list.
  std::string SerializeForPeer(bool with_retired, const VersionVector* receiver = nullptr) const;
  /// What a parsed vector said about its retired set.
  struct WireRetired {
    /// RetiredDigest of the set it stands for (computed when the list came along).
    uint64_t digest = 0;
    /// The list came along (or the set is empty): the parsed vector is complete. Otherwise it
    /// lacks the retired set whose digest is `digest` (see AdoptRetired).
    bool complete = true;
  };
  /// Parses any binary form (or a serialized proto::SyncRequest); false (and *out unchanged) if
  /// `bytes` is not a valid vector. `wire` (may be null) gets what it said of its retired set.
  static bool Parse(std::string_view bytes, VersionVector* out, WireRetired* wire = nullptr);

  // -- Retired origins (see the header comment) --

  /// Origin `origin` will never write again and `last_counter` was its last write. Compacts it
  /// if this vector covers it through `last_counter`, else remembers it until Add or AddRange
  /// get there. Ignored if either is 0, if it is known already, or if this vector holds a
  /// counter of it above `last_counter` (then the claim is false). True if anything changed.
  bool Retire(uint64_t origin, uint64_t last_counter);
  /// Retired origins (compacted) -> their last counter.
  const std::map<uint64_t, uint64_t>& retired() const { return retired_; }
  /// Origins known to be retired but not covered through their last counter yet.
  const std::map<uint64_t, uint64_t>& retiring() const { return retiring_; }
  /// Origins held as entries (not retired).
  size_t entry_count() const { return entries_.size(); }
  /// A 64-bit hash of the retired set, the same on every node for equal sets; 0 if empty.
  uint64_t RetiredDigest() const { return retired_digest_; }
  /// Completes a vector parsed without its retired list (WireRetired::complete false) with
  /// `from`'s retired set, when its digest is the one the vector stood for. Origins held as
  /// entries here stay entries. Drops what is retiring here (a peer's vector).
  void AdoptRetired(const VersionVector& from);
  /// Forgets the retired set and what is retiring: what a peer's vector parsed without its list
  /// is known to cover for sure.
  void DropRetired();
  /// The highest counter of `origin` covered (its base or its highest extra); 0 if none.
  uint64_t Highest(uint64_t origin) const;

  /// A 64-bit hash of the canonical binary form (Serialize), the same on every node for equal
  /// vectors; 0 for an empty vector and never 0 otherwise. What the node-level anti-entropy
  /// (replication/node_summary.hpp) compares instead of whole vectors.
  uint64_t Digest() const;

  /// Human form for logs and status: "{origin:base(+extras), ...}" with origins in hex,
  /// followed by " +N retired" when origins are retired (not listed).
  std::string ToString() const;

  /// Same representation: entries, retired and retiring origins (not just the same coverage).
  bool operator==(const VersionVector& other) const;
  bool operator!=(const VersionVector& other) const { return !(*this == other); }

 private:
  struct Entry {
    uint64_t base = 0;
    std::set<uint64_t> extras;
    bool operator==(const Entry& o) const { return base == o.base && extras == o.extras; }
  };
  /// What this vector has seen of one origin, whether an entry or retired (extras never null).
  struct View {
    bool known = false;
    uint64_t base = 0;
    const std::set<uint64_t>* extras = nullptr;
  };
  View ViewOf(uint64_t origin) const;
  /// True if `mine` has seen every write of one origin that `theirs` (known) has.
  static bool ViewIncludes(const View& mine, const View& theirs);

  /// Moves `origin` from retiring_ into retired_ if its entry now reaches the last counter
  /// (forgets the claim if the entry went past it).
  void CompactIfDue(uint64_t origin);
  /// A retired origin receiving a counter above its last one: back to an entry.
  void Unretire(uint64_t origin);

  std::map<uint64_t, Entry> entries_;
  /// Disjoint from entries_.
  std::map<uint64_t, uint64_t> retired_;
  /// Disjoint from retired_.
  std::map<uint64_t, uint64_t> retiring_;
  /// RetiredDigest, recomputed whenever retired_ changes (rarely; read every sync round).
  uint64_t retired_digest_ = 0;
  void RetiredChanged();
};

}  // namespace kvmesh::storage
