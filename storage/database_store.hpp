// DatabaseStore: one instantiated database's namespace inside the node's Store.
//
// Keys are normalised here (common/path.hpp), on entry to the engine, so every caller gets the
// same rules. Size accounting: used bytes = sum over live keys of (key bytes + value bytes). It
// is kept in memory and in the database's meta record, and the meta record is written in the
// same RocksDB write batch as the data it describes, so it is O(1) per write, exact across
// overwrites and deletes, and survives a crash. A write that would raise usage above the limit
// fails with Code::kSizeLimitExceeded and writes nothing; writes that do not raise usage (an
// erase, a smaller overwrite) are always accepted, even over a limit that was since lowered.
//
// Replication (see storage/version_vector.hpp and messages/replication.proto): every write gets
// a dot (this node's id, the next per-database counter) and a hybrid-logical-clock timestamp,
// and an erase writes a tombstone instead of removing the key, so that replicas can agree on
// it. Of two records of one key, the one with the higher (hlc, origin) wins, on every replica
// and whatever the order they arrive in. Besides the records the namespace keeps a dot index
// (origin, counter) -> key of the records that are current, so the writes a peer lacks are found
// without scanning the database (since storage format 2 one entry per run of consecutive
// counters a write assigns, whose members of replaced records stay behind, stale: see Stage),
// and a tombstone index so tombstones are collected cheaply.
// Size limits are enforced on writes accepted here; deltas from peers are applied whatever
// their size, or replicas could never converge (so concurrent writes accepted by different
// replicas during a partition can take a database over its budget; it then refuses writes
// that grow it until it shrinks below).
//
// Expiry (WriteOp::ttl_ms): a put with a ttl stores Record.expires = its timestamp + ttl, part
// of the record, so every replica holding that write agrees on the moment. Reads (Get, List,
// the checks of conditional writes) treat a record expired by the local wall clock
// (Store::WallTicks) as missing; replicas whose clocks differ by d disagree for at most d about
// whether it has expired. An expiry index ordered by time ("x", storage/keys.hpp) finds the
// expired records without a scan (CollectExpired, O(expired)). The removal rule: an expired
// record is turned, locally and without a new dot, into a tombstone of the same version
// (origin, counter, hlc) if it is still the current record of its key; the removal is not
// replicated (each replica removes its own copy when it sees it expired). Because the version is
// unchanged, the removal can never win against or lose to any other write differently than the
// live record would have: a newer write replaces it, an older one loses to it, on every replica,
// and a replica that never saw the live record may receive the tombstone instead, which reads
// the same. The tombstone is then collected like any other (CollectTombstones). A removal that
// wrote a new version could instead overwrite a newer put made elsewhere meanwhile. Size
// accounting counts an expired record until it is removed. Digests of two replicas may differ
// while one has removed an expired record the other has not yet.
//
// Versions and conditional writes: a record's version token (VersionToken) is its hlc, origin
// and counter in hex: equal tokens, same write. A WriteOp::kCheck in a batch (what put/erase
// with if_version or if_absent become) is judged here, in Apply, atomically with the writes of
// its batch: on this replica, against what this replica holds. Which replica judges it in a
// cluster is the database actor's rule (actors/database_actor.cpp CheckingReplica): the first
// replica in placement order; the others forward to it, and refuse (unavailable) while
// membership sees it as down. What holds (README "Versions and conditional writes"): while the
// nodes agree on the replica set, of the conditional writes expecting one version at most one
// succeeds; around a membership change, or in a partition longer than the replica grace, two
// replicas may each judge, and plain writes of the key through other replicas are not seen
// until they reach the judging one (the conflict rule then decides, as for any two writes).
//
// Not thread-safe: one owner at a time (the database actor). The exceptions are Get and List,
// which may run on other threads concurrently with the owner's calls: they read only RocksDB,
// fields fixed at construction and the atomic dropped flag (see actors/direct_reads.hpp; the
// supervisor lists the system database of cluster-wide configs this way).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/read_levels.hpp"
#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"
#include "storage/record_cache.hpp"
#include "storage/version_vector.hpp"

namespace kvmesh::proto {
class DotRange;
class Record;
class Version;
}  // namespace kvmesh::proto

namespace kvmesh::storage {

class Store;

/// The version token of a record (hlc, origin and counter in hex, joined by '-'): what a list
/// with versions returns and conditional writes compare.
std::string VersionToken(const proto::Version& version);

/// True if `a` wins over `b` by the conflict rule replicas converge by (the same function that
/// decides which of two records of a key a replica keeps): what a quorum read returns.
/// A record that does not exist loses to any that does.
bool NewerRecord(const KeyRecord& a, const KeyRecord& b);

/// The version token of a record (as VersionToken).
std::string VersionToken(const KeyRecord& record);

/// True if `vector` covers every write of `token` (README "Read levels"): for each origin its
/// base reaches the token's counter (so every earlier write of that origin is applied here, or
/// superseded by a newer write of the same key that is).
bool CoversToken(const VersionVector& vector, const SessionToken& token);

class DatabaseStore {
 public:
  DatabaseStore(const DatabaseStore&) = delete;
  DatabaseStore& operator=(const DatabaseStore&) = delete;
  ~DatabaseStore();

  // Local writes. On success, if `delta` is not null, the records written (with their dots) are
  // appended to it as a serialized proto::Delta, ready to push to the other replicas; appending
  // keeps it one valid Delta, so pushes can be batched by concatenation.

  /// Stores `value` under `key`, replacing any previous value.
  /// Errors: kInvalidKey, kValueTooLarge, kSizeLimitExceeded, kIOError.
  Status Put(std::string_view key, std::string_view value, std::string* delta = nullptr);

  /// Reads `key` into `*value`. A missing key is Code::kNotFound (not a failure of the store).
  Status Get(std::string_view key, std::string* value) const;
  /// Reads the keys of `keys` in order as Get would, `(*statuses)[i]` and `(*values)[i]` being
  /// what Get(keys[i]) gives, while their values stay within `max_bytes` in all: returns how many
  /// it answers (all of them, or up to the one that would pass the budget; always the first).
  /// One key at a time, not a MultiGet: what a request holds is bounded by the budget plus one
  /// value, where a MultiGet copies every value first (256 keys naming one 16 MiB value: 4 GiB
  /// from one small message). Thread-safe like Get.
  size_t GetMany(const std::vector<std::string_view>& keys, size_t max_bytes,
                 std::vector<Status>* statuses, std::vector<std::string>* values) const;
  /// The record of `key` as it is stored here, tombstones and expired values included (for
  /// quorum reads, which compare records across replicas). `key` is normalised first.
  Status GetRecord(std::string_view key, KeyRecord* out) const;
  /// The dot of the latest write accepted here: (origin(), its counter). What a session token
  /// records for a write acknowledged by this replica (read right after the write's commit).
  uint64_t local_counter() const { return local_counter_; }

  /// Removes `key`: writes a tombstone, so the delete replicates and wins over older writes of
  /// the key on every replica. A key that is already a tombstone here writes nothing; a key
  /// never seen here still gets a tombstone (another replica may hold it).
  Status Erase(std::string_view key, std::string* delta = nullptr);

  /// Applies every operation of `batch` atomically, in order (see WriteBatch). The size limit is
  /// checked against the state after the whole batch. Any invalid key or value fails the whole
  /// batch before anything is written.
  Status Write(const WriteBatch& batch, std::string* delta = nullptr);

  /// Group commit: applies `count` batches as if each were written by Write after the ones before
  /// it (each sees their changes; conditions, validity and the size limit are judged for each
  /// as they would be alone), in one atomic RocksDB write with one meta update, and appends the
  /// delta of them all. OK only if every one of them would have succeeded; otherwise nothing is
  /// written and the first error found is returned (perhaps less precise than the one that
  /// write alone gives): write them one by one with Write to learn each one's answer (exact, as
  /// a failed write changes nothing).
  Status WriteGroup(const WriteBatch* const* writes, size_t count, std::string* delta = nullptr);

  // Replication.

  /// What ApplyDelta did.
  struct ApplyResult {
    /// Entries that changed a key here (they won against the record stored).
    uint64_t applied = 0;
    /// Entries already seen here (their dot is covered) or older than the record stored.
    uint64_t skipped = 0;
  };

  /// Applies a serialized proto::Delta from another replica in one atomic RocksDB write:
  /// entries by the rule above, then coverage ranges. Idempotent and order-independent. The
  /// store's clock observes every timestamp received, so later local writes order after them.
  /// Errors: kInvalidArgument (unparsable delta, invalid key or version), kIOError; on error
  /// nothing is applied.
  Status ApplyDelta(std::string_view delta, ApplyResult* result = nullptr);

  /// Appends to `*delta` (a serialized proto::Delta) what a replica whose version vector is
  /// `remote` lacks: the current records of dots it does not cover and, for each origin where
  /// this replica's base is higher, a coverage range. Stops near `max_bytes` (at least one entry
  /// is always included); `*more` tells whether anything was left out, in which case the peer
  /// asks again with its updated vector. `only` (null: every origin) limits the records and
  /// ranges to those origins. Cost: proportional to what is sent, not to the size of the
  /// database.
  Status DeltaSince(const VersionVector& remote, size_t max_bytes, std::string* delta, bool* more,
                    const std::set<uint64_t>* only = nullptr) const;

  /// Deletes every tombstone whose dot `stable` covers (every replica has seen it; so no older
  /// write of that key can come back) and whose timestamp is at most `max_hlc` (the tombstone
  /// grace period: a replica that was away and comes back still gets the tombstone, not just
  /// a coverage range, so its stale copy of the key is deleted). `*collected` (may be null)
  /// gets how many.
  Status CollectTombstones(const VersionVector& stable, uint64_t max_hlc, uint64_t* collected);

  /// Records that the origins of `retired` (origin -> last counter, as a peer's vector lists
  /// them) will never write again: each is compacted out of this replica's vector once it
  /// covers it through its last counter (VersionVector::Retire). Writes the meta record if the
  /// vector changed. Coverage, and so the digest, does not change.
  Status LearnRetired(const std::map<uint64_t, uint64_t>& retired);

  // Stale repair (README "Convergence"): a replica compares its records with another replica's
  // after one of them was out of the other's placement view (replication/replicator.hpp).

  /// A record's key and the dot of its current version (value or tombstone).
  struct KeyDot {
    std::string key;
    Dot dot;
  };

  /// Lists the records (tombstones included) whose keys sort after `after`, ascending: at most
  /// `max_entries`, and stopping once the keys listed reach `max_bytes` (at least one is
  /// listed). `*more` is true if records after the last one listed were left out. Cost:
  /// proportional to what is listed.
  Status ListKeyDots(std::string_view after, size_t max_entries, size_t max_bytes,
                     std::vector<KeyDot>* out, bool* more) const;

  /// The page comparison rule of the stale repair. `theirs` is a page of another replica's
  /// records (ListKeyDots) covering the keys in (`after`, `last`], or every key after `after` if
  /// `to_end`, read together with that replica's vector `their_vector`. Deletes here, without a
  /// new dot, every record in that range whose dot `their_vector` covers and whose key `theirs`
  /// lacks: the other replica applied that write (or a newer one of the key), and no record of
  /// the key is left there, so its newest record was a tombstone since collected (or an expired
  /// value removed); this copy merely missed the tombstone. Records whose dot it does not cover
  /// (writes it has not seen) are kept: they reach it by the delta sync. Examines at most
  /// `max_scan` local records: `*compared_until` is then the last key examined (empty if the
  /// whole range was compared). `*removed` (may be null) gets how many were deleted.
  /// kInvalidArgument if `theirs` is not ascending, strictly after `after` and within `last`.
  Status RemoveCollectedElsewhere(std::string_view after, std::string_view last, bool to_end,
                                  const std::vector<KeyDot>& theirs,
                                  const VersionVector& their_vector, size_t max_scan,
                                  std::string* compared_until, uint64_t* removed);

  /// Removes up to `limit` records (index entries examined) whose expiry is at most `now`
  /// (timestamp ticks, Store::WallTicks): each still-current one becomes a tombstone of the
  /// same version (see the header comment), leaving size accounting and digest exact.
  /// `*removed` (may be null) gets how many. Cost: proportional to the entries examined.
  Status CollectExpired(uint64_t now, size_t limit, uint64_t* removed);
  /// The store's wall clock now, in timestamp ticks (Store::WallTicks).
  uint64_t WallTicks() const;

  /// Deletes all data of this database here (records, indexes, meta and catalog entry): used
  /// when this node stops being one of its replicas. The handle is unusable afterwards: every
  /// later call fails with kUnavailable. Reopening the path creates a new, empty database.
  Status Drop();

  /// The writes applied here.
  const VersionVector& version_vector() const { return version_vector_; }

  /// Order-independent digest of the live records (key, value, version), maintained on every
  /// change: replicas with the same contents have the same digest.
  uint64_t digest() const { return digest_; }

  /// Recomputes the digest by scanning every record (a check of the maintained one; O(n)).
  Status ComputeDigest(uint64_t* digest) const;

  /// Tombstones stored (not yet collected).
  uint64_t tombstone_count() const { return tombstone_count_; }

  /// Members in the dot ranges (storage/keys.hpp "p") and how many of them are stale: their
  /// record was since replaced or removed. Counters for the cleanup of the ranges; O(1).
  uint64_t range_members() const { return range_members_; }
  uint64_t stale_members() const { return stale_members_; }
  /// True when SweepDotRanges is due: more than half of the members in dot ranges are stale, or
  /// every stale member is listed in memory and the list fills half its bound (a listed pass
  /// reads no record, so it may come sooner: a database whose stale members outnumber the bound
  /// before they reach half would otherwise always lose its list and sweep by reading records).
  bool DotRangesNeedSweep() const {
    return stale_members_ > 0 && (stale_members_ > range_members_ / 2 ||
                                  (listing_ == StaleListing::kComplete &&
                                   listed_stale_dots() >= max_listed_stale_dots_ / 2));
  }
  /// Rewrites dot ranges without their stale members (deleting a range left with none), from
  /// where the previous call stopped, examining at most about `max_members` members (whole
  /// ranges: up to one range more) if it reads their records, 8 times as many if it reads none
  /// (a listed pass, below: a round of either takes about as long). Each RocksDB write covers at
  /// most 4096 members, with the meta record; the stale count goes down by what was removed.
  /// Records, accounting, digest and deltas are unchanged. `*removed` (may be null) gets how many
  /// members were removed; `*more` (may be null) whether the pass stopped before its end. Two kinds
  /// of pass. While every stale member is listed in memory (the dots the writes of this handle
  /// replaced since the last pass; see listed_stale_dots()), a pass takes the dots listed when it
  /// starts and visits only the ranges holding them: one seek per range, no record read. Otherwise
  /// (after a reopen, or once the list outgrew its bound) a pass walks every range from the first
  /// and reads the records of its members (one MultiGet per range) to tell which are stale; the
  /// list is rebuilt meanwhile, complete again when that pass ends.
  Status SweepDotRanges(size_t max_members, uint64_t* removed, bool* more = nullptr);
  /// Stale members whose dots this handle lists in memory (a pass in progress included), and
  /// whether they are all the stale members (the next pass needs no record reads). O(1).
  size_t listed_stale_dots() const { return stale_dots_.size() + sweep_dots_.size(); }
  bool stale_dots_complete() const { return listing_ == StaleListing::kComplete; }
  /// Lists at most `count` stale dots in memory (default kMaxListedStaleDots): beyond, the list
  /// is dropped and the sweep reads records until it is rebuilt. For tests.
  void set_max_listed_stale_dots(size_t count) { max_listed_stale_dots_ = count; }
  /// The default bound of set_max_listed_stale_dots (16 bytes a dot: 4 MiB); the node's
  /// databases together list at most kMaxListedStaleDotsPerNode (storage/store.hpp).
  static constexpr size_t kMaxListedStaleDots = size_t{1} << 18;

  /// No record here expires before this time (timestamp ticks); UINT64_MAX: none expires. A
  /// lower bound, exact after CollectExpired: 0 for a database loaded from disk until its first
  /// CollectExpired, which finds it. CollectExpired reads nothing while it lies ahead, so an
  /// idle database without expiring keys costs no read per round.
  uint64_t next_expiry() const { return next_expiry_; }

  /// Lists one page of keys under options.prefix in [options.start, options.end), after
  /// options.start_after in the listing's order (ListOptions has the rules).
  Status List(const ListOptions& options, ListPage* page) const;

  /// Current counters (no I/O).
  DatabaseStats Stats() const;

  /// Changes the size budget (a reloaded config). Existing data is kept even if it is over.
  void set_size_limit(uint64_t bytes) { limit_bytes_ = bytes; }

  /// Called on the owner's thread after each write that changed data (local or replicated).
  /// The system database of cluster-wide configs uses it to tell the supervisor. Default none.
  void set_commit_observer(std::function<void()> observer) { observer_ = std::move(observer); }
  /// The observer set (empty if none), so that another can be chained before it is replaced.
  const std::function<void()>& commit_observer() const { return observer_; }

  const std::string& path() const { return path_; }
  uint64_t id() const { return id_; }
  /// The node's store this database lives in.
  Store& node_store() const { return *store_; }
  /// The origin of the writes this copy accepts: random per copy, so a copy dropped and created
  /// again writes under a new origin and its counters are never taken for the old copy's
  /// (which the other replicas have seen). The node id for data from before origins.
  uint64_t origin() const { return origin_; }

  /// The heap bytes the calling thread keeps for its next write's per-key state (the write
  /// pool; at most 4 MiB). For tests.
  static size_t WritePoolBytesForTesting();
  /// Records that writes replaced or judged without reading them, their summary kept in the
  /// record cache (storage/record_cache.hpp), since this handle was opened. For tests.
  uint64_t records_not_read() const { return records_not_read_; }

 private:
  friend class Store;
  DatabaseStore(std::shared_ptr<Store> store, std::string path, std::string config_id, uint64_t id,
                uint64_t limit_bytes);
  Status LoadMeta();
  struct OpView;
  /// The records of the keys one write touches: as stored before it and as it leaves them.
  struct Pending;
  struct Touched;
  /// A RocksDB batch ready to write and the change it makes to the counters.
  struct Staged;
  struct Removal;
  /// Writes the removals of `r` with the meta record they change, takes their counters into
  /// this handle and empties `r` (its digest stays the current one). `failure` names what failed.
  Status WriteRemoval(Removal* r, const std::string& failure);
  /// Appends the operations of `batch` to `ops` (views into it), or says why it cannot apply.
  static Status AddOps(const WriteBatch& batch, std::vector<OpView>* ops);
  /// The single write path behind Put, Erase, Write and WriteGroup. With `segments` > 0, the ops
  /// are that many writes, write k ending before ops[ends[k]], each checked against the size
  /// limit as if applied alone after the ones before it.
  Status Apply(const OpView* ops, size_t count, std::string* delta, const size_t* ends = nullptr,
               size_t segments = 0);
  /// OK, or kUnavailable if the store is closed or this database was dropped.
  Status CheckUsable() const;
  /// Reads the record of the normalised `key`; *found is false if there is none.
  Status ReadRecord(std::string_view key, bool* found, proto::Record* record) const;
  /// The same for a key as a caller gave it: normalised into `*key` (errors quote it), on a
  /// usable store.
  Status ReadUserKey(std::string_view raw_key, std::string* key, bool* found,
                     proto::Record* record) const;
  /// The pending state of `key` in `touched`, reading its stored record on first use.
  Status Touch(std::string_view key, Touched* touched, Pending** out) const;
  /// Touches every key of `keys` (normalised; repeats allowed) in an empty `touched`, reading
  /// their stored records in one MultiGet. `out` (may be null) gets the pending state of each key.
  Status TouchAll(const std::string* keys, size_t count, Touched* touched, Pending** out = nullptr);
  /// Makes max_key_ known (one read of the last data key, the first time).
  Status KnowMaxKey();
  /// OK if the key of `p` has version `expected` (or is absent, if `expected` is empty) at `now`;
  /// otherwise kConditionFailed naming the key.
  Status CheckCondition(const Pending& p, std::string_view expected, uint64_t now) const;
  /// Adds the record and index changes of every changed key of `touched` to `staged`.
  /// `vector_after` is the version vector as the write leaves it: a record whose dot its base
  /// covers goes into a dot range, any other into the per-dot index (see Stage).
  void Stage(Touched* touched, const VersionVector& vector_after, Staged* staged) const;
  /// Writes `staged` with the meta record the counters will have after it (`version_vector`,
  /// `local_counter`), then updates the counters in memory (taking `version_vector` over rather
  /// than copying it: it may be large). Nothing changes on failure.
  Status Commit(Staged* staged, VersionVector&& version_vector, uint64_t local_counter);
  /// The serialized DatabaseMeta for the given counters; the dot range counters are
  /// range_members_ and stale_members_ plus the changes given.
  std::string MetaBytes(uint64_t used_bytes, uint64_t key_count, uint64_t local_counter,
                        uint64_t tombstone_count, uint64_t digest,
                        const VersionVector& version_vector, int64_t new_range_members = 0,
                        int64_t new_stale_members = 0) const;

  std::shared_ptr<Store> store_;
  std::string path_;
  std::string config_id_;
  uint64_t id_;
  uint64_t limit_bytes_;
  std::string data_prefix_;
  std::string meta_key_;
  uint64_t used_bytes_ = 0;
  uint64_t key_count_ = 0;
  uint64_t local_counter_ = 0;
  uint64_t origin_ = 0;
  uint64_t tombstone_count_ = 0;
  uint64_t digest_ = 0;
  /// Members written into dot ranges and how many of them are stale (proto DatabaseMeta).
  uint64_t range_members_ = 0;
  uint64_t stale_members_ = 0;
  /// Where the next SweepDotRanges that reads records starts: the key after the last range it
  /// examined ("": no such pass in progress; the next starts at the first range).
  std::string sweep_from_;
  /// What the stale dots listed in memory (stale_dots_, sweep_dots_) hold. kComplete: every
  /// stale member still in a range (and perhaps dots since removed by a pass that read records;
  /// never a live member: a dot once replaced never becomes current again). kSincePass: a pass
  /// reading records is under way, and every dot made stale since it began is listed. kLost:
  /// neither (nothing is listed).
  enum class StaleListing { kComplete, kSincePass, kLost };
  StaleListing listing_ = StaleListing::kLost;
  /// Dots made stale since the current listed pass began, in the order listed.
  std::vector<Dot> stale_dots_;
  /// The dots of the listed pass in progress, sorted by (origin, counter); those before
  /// sweep_dot_next_ are done.
  std::vector<Dot> sweep_dots_;
  size_t sweep_dot_next_ = 0;
  size_t max_listed_stale_dots_ = kMaxListedStaleDots;
  /// Lists `dots` (emptied), made stale by a write just committed, or drops the list (kLost) if
  /// it would pass its bound or the node's.
  void ListStaleDots(std::vector<Dot>* dots) noexcept;
  /// Empties the lists, giving their room back to the node, and sets listing_ to `listing`.
  void ForgetStaleDots(StaleListing listing);
  /// The listed pass of SweepDotRanges (its contract), from sweep_dot_next_.
  Status SweepListedDots(size_t max_members, uint64_t* removed, bool* more);
  /// The pass of SweepDotRanges that reads records, from sweep_from_.
  Status SweepByRecords(size_t max_members, uint64_t* removed, bool* more);
  struct SweepWrites;
  /// Parses a dot range index entry ("p", storage/keys.hpp) into `range`, its origin and its
  /// first counter; kCorruption naming the database if it is malformed.
  Status ParseRangeEntry(std::string_view key, std::string_view value, proto::DotRange* range,
                         uint64_t* origin, uint64_t* first) const;
  /// Adds to `writes` the rewrite of the range at `range_key` holding `members` members down to
  /// `kept` (a delete if none is kept; nothing if all are); writes them once they are enough.
  Status SweepRange(std::string_view range_key, size_t members, const proto::DotRange& kept,
                    SweepWrites* writes);
  /// Writes the rewrites in `writes` with the meta record they change, takes the counters down
  /// by the members they remove and empties them.
  Status WriteSweep(SweepWrites* writes);
  /// Members the current sweep pass removed so far.
  uint64_t sweep_pass_removed_ = 0;
  uint64_t next_expiry_ = 0;  // next_expiry(); 0: not known yet
  /// Once max_key_known_: no record is stored under a key above max_key_ (a bound, not always
  /// the last key: removals leave it). A write of keys above it reads no previous records.
  bool max_key_known_ = false;
  std::string max_key_;
  VersionVector version_vector_;
  /// Set by Drop: the namespace is gone and every later call fails. Atomic: Get may run on other
  /// threads.
  std::atomic<bool> dropped_{false};
  std::function<void()> observer_;
  /// Summaries of the records last written or read by writes (storage/record_cache.hpp), so a
  /// write need not read what it replaces. Mutable: a const read of a record keeps its summary.
  mutable RecordCache cache_;
  mutable uint64_t records_not_read_ = 0;
};

}  // namespace kvmesh::storage
