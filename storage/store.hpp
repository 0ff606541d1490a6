// Store: the node's single RocksDB instance and its catalog of instantiated databases.
// Thread-safe. Each database's data is reached through a DatabaseStore (database_store.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"
#include "storage/record_cache.hpp"
#include "storage/space_monitor.hpp"

namespace rocksdb {
class DB;
class MemTableRepFactory;
class Status;
class WriteBatch;
struct WriteOptions;
}  // namespace rocksdb

namespace kvmesh::proto {
class CatalogEntry;
}  // namespace kvmesh::proto

namespace kvmesh::storage {

class DatabaseStore;

/// Stale dot range members the databases of one node list in memory at most, all together
/// (16 bytes each: 64 MiB); see DatabaseStore::SweepDotRanges.
inline constexpr size_t kMaxListedStaleDotsPerNode = size_t{1} << 22;

/// A random nonzero 64-bit id (node ids, the origins of database copies).
uint64_t RandomId();

struct StoreOptions {
  /// Directory of the RocksDB instance; created if missing. Required.
  std::string path;
  /// When writes reach the disk (kvmesh::SyncMode). kNone (default here; the node's default is
  /// NodeOptions::sync): an acknowledged write survives a crash of the process (kill -9) but
  /// not of the machine. kPeriodic: the store syncs its write-ahead log every `sync_period`
  /// on a thread of its own. kAlways: every write is synced before it returns (a database
  /// actor's writes that arrive together are one write, DatabaseStore::WriteGroup).
  SyncMode sync = SyncMode::kNone;
  /// Period of kPeriodic's syncs. Default 100 ms.
  std::chrono::milliseconds sync_period = std::chrono::milliseconds(100);
  /// RocksDB block cache for reads. Default 64 MiB.
  size_t block_cache_bytes = 64u << 20;
  /// Largest value accepted; larger ones fail with Code::kValueTooLarge. Default 16 MiB.
  size_t max_value_bytes = 16u << 20;
  /// What the databases' write paths may keep of the records they replace next, all databases
  /// together (storage/record_cache.hpp): about 128 bytes per key. 0 keeps nothing (every write
  /// reads the records it replaces). Default 64 MiB.
  size_t record_cache_bytes = 64u << 20;
  /// The low-space state (storage/space_monitor.hpp). Defaults as documented there.
  SpaceOptions space;
  /// The wall clock behind timestamps and expiry; tests set a clock they move. Default (unset):
  /// std::chrono::system_clock::now.
  std::function<std::chrono::system_clock::time_point()> wall_clock;
};

class Store : public std::enable_shared_from_this<Store> {
 public:
  /// Opens (or creates) the store at options.path. Fails with a message naming the directory if
  /// it cannot be created, is locked by another process, or holds a newer storage format.
  static Status Open(const StoreOptions& options, std::shared_ptr<Store>* out);

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  /// Closes RocksDB. Every DatabaseStore holds a reference, so this runs after the last one.
  ~Store();

  /// Syncs the write-ahead log and closes RocksDB now (releasing the data dir's lock), even
  /// while DatabaseStore handles still exist; their later calls fail with kUnavailable. Stops
  /// the periodic syncs first. Call only when no other thread uses the store.
  void Close();

  /// Makes every write made so far durable (fsyncs the write-ahead log), whatever the mode.
  /// Thread-safe. Errors: kIOError.
  Status SyncLog();
  /// Writes `batch` with write_options(): synced in SyncMode::kAlways. Thread-safe.
  rocksdb::Status Write(rocksdb::WriteBatch* batch);
  /// Write-ahead-log syncs since the store was opened: by SyncLog, the periodic thread, and the
  /// synced writes of Write (SyncMode::kAlways).
  uint64_t log_syncs() const { return log_syncs_.load(std::memory_order_relaxed); }
  bool closed() const { return db_ == nullptr; }

  /// Stable random id of this node, created with the store and kept in it.
  uint64_t node_id() const { return node_id_; }
  /// Wall-clock milliseconds when the store was last marked in use (MarkInUse) before this
  /// open; 0 if never. A clustered node uses it to notice it was away too long.
  uint64_t last_in_use_ms() const { return last_in_use_ms_; }
  /// Records now as the last time the store was in use.
  Status MarkInUse();
  const StoreOptions& options() const { return options_; }

  /// OK, or kNoSpace while the node is low on disk space (storage/space_monitor.hpp): for writes
  /// that add data. Deletes skip this check.
  Status CheckRoomForData() const;
  /// The low-space state and free space at the last check.
  SpaceStatus space() const;
  /// Records that a write freeing space (delete, drop, tombstone collection) was made.
  void NoteFreeingWrite();
  /// Records that a write added about `bytes` (may check free space at once).
  void NoteDataWritten(uint64_t bytes);

  /// Returns a handle on the database instantiated at the normalised `path`, creating its catalog
  /// entry (and namespace id) on first use; `config_id` is recorded then. `size_limit` is the
  /// budget enforced by the handle's writes. With `max_instances` > 0, creating an entry fails
  /// with kTooManyInstances (naming the config and the bound, nothing written) when the catalog
  /// already holds that many databases of `config_id`; existing entries always open.
  Status OpenDatabase(const std::string& path, const std::string& config_id, uint64_t size_limit,
                      std::unique_ptr<DatabaseStore>* out, uint64_t max_instances = 0);

  /// Databases of `config_id` in the catalog. O(1): kept in memory with the catalog (counted
  /// once when the store opens, then changed with every entry created or deleted). Thread-safe.
  uint64_t InstanceCount(const std::string& config_id) const;

  /// Records `ms` (wall-clock milliseconds) as the last access of the database at `path`, if it
  /// is still in the catalog. One catalog read and write: callers do it once per activation.
  Status RecordAccess(const std::string& path, uint64_t ms);

  /// One page of the catalog entries of `config_id`, in path order, after `options.cursor` (a
  /// path). Reads at most about `max_scanned` catalog entries (other configs' included) and one
  /// meta record per instance returned, so a page costs the same whatever the catalog holds; the
  /// page may then be short (or empty) with a next cursor. Fills every field of InstanceInfo but
  /// `active` and `replicas`. Errors: kCorruption, kIOError.
  Status ListInstances(const std::string& config_id, const InstanceOptions& options,
                       size_t max_scanned, InstancePage* page) const;

  /// The catalog: every database path instantiated on this node, in path order.
  Status ListDatabases(std::vector<DatabaseInfo>* out) const;

  /// Called with a database's path and its version vector's digest (VersionVector::Digest; 0
  /// once its copy is dropped) whenever a write, local or replicated, changed its meta record.
  /// Runs on the writing thread, so it must be thread-safe and quick. Set it before databases
  /// are opened; null: none.
  using VectorObserver = std::function<void(const std::string& path, uint64_t digest)>;
  void set_vector_observer(VectorObserver observer) { vector_observer_ = std::move(observer); }
  const VectorObserver& vector_observer() const { return vector_observer_; }
  /// The budget of the databases' record caches (StoreOptions::record_cache_bytes).
  SharedBudget& record_cache_budget() { return record_cache_budget_; }
  /// Calls `fn` with the path and version-vector digest of every database in the catalog, in
  /// path order (0 for one nothing was written to): one catalog scan and one meta read per
  /// database. Errors: kCorruption, kIOError.
  Status ForEachVectorDigest(const std::function<void(const std::string&, uint64_t)>& fn) const;

  /// What the databases of one config take on this node.
  struct ConfigUsage {
    /// Databases instantiated (in the catalog).
    uint64_t databases = 0;
    /// Their used bytes, from their meta records (written with every write, so current).
    uint64_t used_bytes = 0;
  };
  /// ConfigUsage by config id, for metrics: one catalog scan and one read per database.
  /// Thread-safe.
  Status UsageByConfig(std::map<std::string, ConfigUsage>* out) const;
  /// Writes a RocksDB checkpoint of the whole store to `dir` (which must not exist): a
  /// consistent copy, hard-linked where the file system allows, that a node can be started on.
  /// Writes go on meanwhile. Errors: kInvalidArgument (`dir` exists), kIOError.
  Status Checkpoint(const std::string& dir);

  /// RocksDB's integer property `name` ("rocksdb.cur-size-all-mem-tables", ...); false if
  /// RocksDB does not know it. Thread-safe.
  bool IntProperty(const std::string& name, uint64_t* value) const;
  /// Memory kept ready for the next memtable's key table (storage/memtable.hpp's
  /// SpareKeyTableBytes), beyond RocksDB's "rocksdb.cur-size-all-mem-tables". Thread-safe.
  uint64_t SpareKeyTableBytes() const;

  /// A hybrid-logical-clock timestamp greater than every one returned before by this store:
  /// wall-clock milliseconds << 16 with the sub-millisecond part in the low 16 bits
  /// (storage/hlc.hpp), or one more than the last timestamp if that is not smaller. Thread-safe.
  uint64_t NextTimestamp() { return NextTimestamps(1, 0); }
  /// `count` (at least 1) timestamps at once, each greater than every one returned before and
  /// than `floor`: the first is returned, the others are the `count - 1` after it. A write of
  /// many keys takes its timestamps with one read of the clock and one update of what all of
  /// the node's databases share, not one per key. Thread-safe.
  uint64_t NextTimestamps(size_t count, uint64_t floor);
  /// The wall clock now (StoreOptions::wall_clock), in timestamp ticks: what expiry is measured
  /// against (a record whose Record.expires is at most this reads as missing). Thread-safe.
  uint64_t WallTicks() const;

  /// Hybrid-logical-clock receive rule: later NextTimestamp() results exceed `remote` (a
  /// timestamp seen in a peer's write). Thread-safe.
  void ObserveTimestamp(uint64_t remote);

  // -- for DatabaseStore --
  /// The catalog entry of a database of `config_id` was deleted (DatabaseStore::Drop).
  void NoteCatalogEntryDeleted(const std::string& config_id);
  /// The node-wide bound on the stale dot range members the databases list in memory
  /// (DatabaseStore::SweepDotRanges), so that many databases together stay bounded too: takes
  /// room for `count` more if the bound allows (true), or takes nothing (false). Thread-safe.
  bool ReserveListedStaleDots(size_t count) { return stale_dot_budget_.Take(count); }
  /// Gives back room taken by ReserveListedStaleDots. Thread-safe.
  void ReleaseListedStaleDots(size_t count) { stale_dot_budget_.Give(count); }
  /// Stale dots listed in memory by all databases now (for tests and metrics).
  size_t listed_stale_dots() const {
    return kMaxListedStaleDotsPerNode - static_cast<size_t>(stale_dot_budget_.left());
  }
  rocksdb::DB* db() const { return db_.get(); }
  const rocksdb::WriteOptions& write_options() const { return *write_options_; }
  /// write_options() without the sync flag: for writes whose sync the caller makes (SyncLog).
  const rocksdb::WriteOptions& unsynced_write_options() const { return *unsynced_write_options_; }

 private:
  explicit Store(StoreOptions options);
  Status Init();
  /// Calls `fn` on each catalog entry after the path `after` ("" from the first) in path order
  /// until it returns false. Errors: kCorruption (an unreadable entry), kIOError.
  Status ScanCatalog(std::string_view after,
                     const std::function<bool(const proto::CatalogEntry&)>& fn) const;
  /// kPeriodic: the thread that syncs the log every period while something was written.
  void StartPeriodicSync();
  void StopPeriodicSync();

  StoreOptions options_;
  /// The memtable factory RocksDB was opened with (for SpareKeyTableBytes).
  std::shared_ptr<rocksdb::MemTableRepFactory> memtable_factory_;
  std::unique_ptr<rocksdb::DB> db_;
  std::unique_ptr<rocksdb::WriteOptions> write_options_;
  std::unique_ptr<rocksdb::WriteOptions> unsynced_write_options_;
  std::atomic<uint64_t> log_syncs_{0};
  std::thread periodic_sync_;
  std::mutex periodic_mutex_;
  std::condition_variable periodic_cv_;
  bool periodic_stop_ = false;
  uint64_t last_in_use_ms_ = 0;
  uint64_t node_id_ = 0;
  std::atomic<uint64_t> last_timestamp_{0};
  SharedBudget stale_dot_budget_{kMaxListedStaleDotsPerNode};
  /// Serialises catalog creation (read next id, write entry and NodeMeta).
  mutable std::mutex catalog_mutex_;
  uint64_t next_database_id_ = 1;
  /// Catalog entries by config id (InstanceCount); guarded by catalog_mutex_.
  std::unordered_map<std::string, uint64_t> instances_by_config_;
  VectorObserver vector_observer_;
  SharedBudget record_cache_budget_;
  /// Set by Init; stopped by Close before RocksDB closes.
  std::unique_ptr<SpaceMonitor> space_monitor_;
};

}  // namespace kvmesh::storage
