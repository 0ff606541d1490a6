// Node-level anti-entropy: what one node knows of all its databases' version vectors, and how
// two nodes find the databases they disagree on without each database checking in.
//
// Every database of the node's catalog has an entry: the digest of its version vector
// (storage::VersionVector::Digest, 0 while nothing was written) and its replica set under the
// current placement. For each peer the node keeps, incrementally, an order-independent total
// (XOR of a hash of path and digest, and a count) over the databases placed on both nodes. Once
// per round each node sends each peer its total for that pair: equal totals end the round
// (O(1) whatever the number of databases). Otherwise the asker sends its entries in pages of
// path ranges; the answerer compares each page against its own entries of the same range and
// answers the paths whose digests differ (or that only one side holds), bounded too. The asker
// then wakes those databases, which run the per-database delta sync (replication/replicator.hpp)
// and passivate again once in sync.
//
// Equal vectors give equal digests, and two replicas in sync have equal vectors, so an idle,
// converged cluster exchanges one small message per peer pair per round. A database with an
// empty vector counts as absent: instantiating an empty replica changes nothing to compare.
//
// Thread-safe: the storage layer reports digests from database actors' threads
// (storage::Store::set_vector_observer), the supervisor sets placements, and the membership
// actor runs the exchange. A reported digest only lands in one of kDigestShards small maps (by
// the path's hash, under that map's own mutex); every reader folds them into the summary first.
// So the commits of different databases do not queue behind one mutex, nor behind a page scan,
// which holds the summary's mutex over up to kSummaryMaxScan entries.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvmesh/status.hpp"

namespace kvmesh::replication {

/// Entries (path, digest) one summary page carries at most.
inline constexpr size_t kSummaryPageEntries = 512;
/// Paths one answer names as different at most (the asker resumes after the last compared).
inline constexpr size_t kSummaryMaxDiffer = 512;
/// Entries of its own one side examines at most per page or answer (skipping databases not
/// shared with the peer), so every step costs the same whatever the catalog holds.
inline constexpr size_t kSummaryMaxScan = 8192;
/// Pages the asker sends one peer in one round at most; the next round goes on.
inline constexpr int kSummaryPagesPerRound = 8;

class NodeSummary {
 public:
  /// The summary of node `self_id`.
  explicit NodeSummary(uint64_t self_id);

  NodeSummary(const NodeSummary&) = delete;
  NodeSummary& operator=(const NodeSummary&) = delete;

  uint64_t self_id() const { return self_id_; }

  /// The digest of the version vector of database `path` (0: nothing written, or the copy was
  /// dropped). Called by every commit: takes only one digest shard's mutex (the latest digest
  /// of a path wins; calls for one path must come in order, as one database actor makes them).
  void SetDigest(const std::string& path, uint64_t digest);

  /// The replica set of database `path` under the current placement; empty: none (no config
  /// matches it, or it is kvmesh's own). Only databases whose set holds this node and a peer
  /// count for that peer.
  void SetPlacement(const std::string& path, std::vector<uint64_t> nodes);

  /// True if this node has `path` in its catalog (a digest or a placement was set for it).
  bool Holds(const std::string& path) const;

  /// The total over the databases this node shares with `peer`.
  struct Totals {
    uint64_t hash = 0;
    uint64_t count = 0;
    bool operator==(const Totals& o) const { return hash == o.hash && count == o.count; }
  };
  Totals TotalsWith(uint64_t peer) const;

  /// One page of the entries this node shares with `peer` whose paths sort after `after`: at
  /// most kSummaryPageEntries, examining at most kSummaryMaxScan entries. `*until` is the last
  /// path examined; `*to_end` is true if nothing remains after it (the page then covers every
  /// path after `after`).
  struct Entry {
    std::string path;
    uint64_t digest = 0;
  };
  std::vector<Entry> Page(uint64_t peer, const std::string& after, std::string* until,
                          bool* to_end) const;

  /// Compares a page of peer `peer` covering the paths after `after` up to `until` (or every
  /// path after `after` if `to_end`) with this node's entries shared with it. Sets `*differ`
  /// to the paths whose digests differ or that one side lacks (at most kSummaryMaxDiffer) and
  /// `*compared_until` to the last path compared if the range was not compared whole (empty if
  /// it was). kInvalidArgument if the page is not sorted, strictly after `after` and within
  /// `until`, or is too long.
  Status Compare(uint64_t peer, const std::string& after, const std::string& until, bool to_end,
                 const std::vector<Entry>& theirs, std::vector<std::string>* differ,
                 std::string* compared_until) const;

  /// Databases with an entry (placed or written).
  size_t size() const;

  /// Tests only: called by Page while it holds the summary's mutex, before it scans.
  void set_page_hook_for_testing(std::function<void()> hook) { page_hook_ = std::move(hook); }

  // -- Counters, for metrics and tests --
  /// Totals sent (one per peer per round), pages sent, and per-database pulls sent by
  /// replicas (replication::Replicator).
  void CountTotals() { totals_sent_.fetch_add(1, std::memory_order_relaxed); }
  void CountPage() { pages_sent_.fetch_add(1, std::memory_order_relaxed); }
  void CountDatabasePull() { pulls_sent_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t totals_sent() const { return totals_sent_.load(std::memory_order_relaxed); }
  uint64_t pages_sent() const { return pages_sent_.load(std::memory_order_relaxed); }
  uint64_t database_pulls_sent() const { return pulls_sent_.load(std::memory_order_relaxed); }
  /// Databases woken because a page showed a difference.
  void CountWoken(uint64_t n) { woken_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t woken() const { return woken_.load(std::memory_order_relaxed); }
  /// Stale repairs (replication::Replicator::StartFullSync): members that came back after
  /// being out of this node's placement view, databases whose repair with one finished, and
  /// the keys those repairs deleted here.
  void CountStaleMember() { stale_members_.fetch_add(1, std::memory_order_relaxed); }
  void CountStaleRepair() { stale_repairs_.fetch_add(1, std::memory_order_relaxed); }
  void CountStaleKeysRemoved(uint64_t n) {
    stale_keys_removed_.fetch_add(n, std::memory_order_relaxed);
  }
  uint64_t stale_members() const { return stale_members_.load(std::memory_order_relaxed); }
  uint64_t stale_repairs() const { return stale_repairs_.load(std::memory_order_relaxed); }
  uint64_t stale_keys_removed() const {
    return stale_keys_removed_.load(std::memory_order_relaxed);
  }

 private:
  struct Record {
    uint64_t digest = 0;
    std::vector<uint64_t> nodes;
  };
  /// True if `r` counts for `peer`.
  bool Shared(const Record& r, uint64_t peer) const;
  /// Adds (`add`) or removes the contribution of `path` with `r` to every peer's total.
  void Toggle(const std::string& path, const Record& r, bool add) const;
  /// Applies a digest to records_ and totals_; under mutex_.
  void ApplyDigest(const std::string& path, uint64_t digest) const;
  /// Applies the digests reported since the last fold; under mutex_ (which orders the folds, so
  /// an older digest of a path never lands after a newer one).
  void Fold() const;

  static constexpr size_t kDigestShards = 64;
  struct alignas(64) DigestShard {
    std::mutex mutex;
    /// Latest digest by path, reported since the last fold.
    std::unordered_map<std::string, uint64_t> pending;
  };

  const uint64_t self_id_;
  mutable std::array<DigestShard, kDigestShards> shards_;
  /// Set after a digest is reported, cleared by the fold that takes it: readers skip the shards
  /// while nothing was reported.
  mutable std::atomic<bool> pending_{false};
  mutable std::mutex mutex_;
  // Folding changes these; mutable so that the const readers can fold first.
  mutable std::map<std::string, Record> records_;
  mutable std::unordered_map<uint64_t, Totals> totals_;
  std::function<void()> page_hook_;
  std::atomic<uint64_t> totals_sent_{0};
  std::atomic<uint64_t> pages_sent_{0};
  std::atomic<uint64_t> pulls_sent_{0};
  std::atomic<uint64_t> woken_{0};
  std::atomic<uint64_t> stale_members_{0};
  std::atomic<uint64_t> stale_repairs_{0};
  std::atomic<uint64_t> stale_keys_removed_{0};
};

}  // namespace kvmesh::replication
