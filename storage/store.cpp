#include "storage/store.hpp"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>

#include "common/path.hpp"
#include "messages/storage.pb.h"
#include "storage/database_store.hpp"
#include "storage/hlc.hpp"
#include "storage/keys.hpp"
#include "storage/memtable.hpp"
#include "storage/rocks_options.hpp"
#include "storage/rocks_status.hpp"

namespace kvmesh::storage {
namespace {

/// Bumped when the layout in keys.hpp or the records in storage.proto change incompatibly.
/// 2: the dot index by ranges ("p", proto DotRange; storage/database_store.cpp Stage). A build
/// of format 1 would leave those entries out of its deltas, so it must refuse such a store.
constexpr uint32_t kFormatVersion = 2;

uint64_t NowMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Wall-clock time in timestamp units (storage/hlc.hpp: milliseconds << 16, with the time below the
/// millisecond in the low 16 bits, units of 1/65536 ms, about 15 ns). Millisecond timestamps from
/// older data compare correctly with these. Without the sub-millisecond part, two writes of one key
/// through different nodes in the same millisecond were ordered by how many writes each node had
/// taken in that millisecond, not by which came first (the chaos check lost an acknowledged delete
/// to a put acknowledged just before it through another node).
uint64_t NowTicks() {
  return hlc::FromTime(std::chrono::system_clock::now());
}

}  // namespace

uint64_t RandomId() {
  std::random_device rd;
  uint64_t id = 0;
  while (id == 0) id = (uint64_t{rd()} << 32) ^ rd();
  return id;
}

Store::Store(StoreOptions options)
    : options_(std::move(options)),
      write_options_(std::make_unique<rocksdb::WriteOptions>(RocksWriteOptions(options_))),
      unsynced_write_options_(std::make_unique<rocksdb::WriteOptions>(*write_options_)),
      record_cache_budget_(options_.record_cache_bytes) {
  unsynced_write_options_->sync = false;
}

Store::~Store() {
  Close();
}

void Store::Close() {
  if (space_monitor_) space_monitor_->Stop();
  if (!db_) return;
  StopPeriodicSync();
  // A clean stop leaves every write durable in every mode: a power loss right after a shutdown
  // must not take what the node acknowledged before it.
  Status s = SyncLog();
  if (!s.ok()) spdlog::error("{}", s.ToString());
  db_->Close();
  db_.reset();
}

Status Store::Open(const StoreOptions& options, std::shared_ptr<Store>* out) {
  if (options.path.empty()) return Status::InvalidArgument("store path is empty");
  std::shared_ptr<Store> store(new Store(options));
  Status s = store->Init();
  if (!s.ok()) return s;
  *out = std::move(store);
  return Status::OK();
}

rocksdb::Options RocksOptions(const StoreOptions& options) {
  rocksdb::Options rocks;
  rocks.create_if_missing = true;
  rocks.IncreaseParallelism(2);
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  // Point lookups dominate (every write reads the previous record for size accounting), so a
  // bloom filter saves a disk read for every new key.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  rocks.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // No bloom filter for the memtable (RocksDB's default): kvmesh's memtable answers a lookup of a
  // key it lacks from its hash table, a slot or two that the write of that key then fills, so a
  // filter only added a cache line written per insert. Without one (tools/bench-compare, 3
  // rounds): bulk batches 1.08x, puts 1.03-1.04x, gets 0.98-1.00x (5 rounds). Once a memtable's
  // key table is full (past a key per ~112 bytes of write buffer, e.g. mass deletes of short
  // keys), a filter of the keys it could not enter answers most lookups of keys it lacks.
  // Writes of different databases (database actors on several worker threads) meet in RocksDB's
  // write groups: with pipelined writes the next group appends to the log while the previous
  // one inserts into the memtable, instead of waiting for it.
  rocks.enable_pipelined_write = true;
  // A memtable flush must fit in the room the low-space state keeps (storage/space_monitor.hpp),
  // or a node low on space could not flush the deletes that free it: at most a quarter of the
  // threshold, and never more than RocksDB's usual 64 MiB.
  if (options.space.low_bytes > 0) {
    rocks.write_buffer_size =
        std::clamp<size_t>(options.space.low_bytes / 4, 1u << 20, rocks.write_buffer_size);
  }
  // kvmesh's own memtable (storage/memtable.hpp): a user key's versions found through a hash
  // table, where RocksDB's skip list searched ~30 nodes for every write and lookup. It needs no
  // insert hints: inserts that RocksDB makes alone continue from the previous one when the key
  // follows it. Its table is sized by the write buffer.
  rocks.memtable_factory = NewMemTableFactory(rocks.write_buffer_size, rocks.comparator);
  return rocks;
}

rocksdb::WriteOptions RocksWriteOptions(const StoreOptions& options) {
  rocksdb::WriteOptions write;
  write.sync = options.sync == SyncMode::kAlways;
  return write;
}

rocksdb::Status Store::Write(rocksdb::WriteBatch* batch) {
  rocksdb::Status rs = db_->Write(*write_options_, batch);
  if (rs.ok() && write_options_->sync) log_syncs_.fetch_add(1, std::memory_order_relaxed);
  return rs;
}

Status Store::SyncLog() {
  if (closed()) return Status::Unavailable("store " + Quote(options_.path) + " is closed");
  // SyncWAL syncs every log file written so far; with manual_wal_flush off (the default) each
  // Write has already handed its record to the OS, so this covers every write that returned.
  rocksdb::Status rs = db_->SyncWAL();
  if (!rs.ok()) {
    return FromRocksStatus(rs, "cannot sync the write-ahead log of " + Quote(options_.path));
  }
  log_syncs_.fetch_add(1, std::memory_order_relaxed);
  return Status::OK();
}

void Store::StartPeriodicSync() {
  periodic_sync_ = std::thread([this] {
    uint64_t synced = db_->GetLatestSequenceNumber();
    bool failing = false;
    std::unique_lock<std::mutex> lock(periodic_mutex_);
    while (!periodic_cv_.wait_for(lock, options_.sync_period, [this] { return periodic_stop_; })) {
      // An idle store is not synced: many nodes in one test process must not spin the disk.
      const uint64_t latest = db_->GetLatestSequenceNumber();
      if (latest == synced) continue;
      lock.unlock();
      Status s = SyncLog();
      lock.lock();
      // Each failure streak is logged once, and its end: the loss window is unbounded meanwhile.
      if (!s.ok()) {
        if (!failing) spdlog::error("{}; periodic syncs keep trying", s.ToString());
        failing = true;
        continue;
      }
      if (failing) spdlog::info("periodic syncs of {} succeed again", Quote(options_.path));
      failing = false;
      synced = latest;
    }
  });
}

void Store::StopPeriodicSync() {
  {
    std::lock_guard<std::mutex> lock(periodic_mutex_);
    periodic_stop_ = true;
  }
  periodic_cv_.notify_all();
  if (periodic_sync_.joinable()) periodic_sync_.join();
}

Status Store::Init() {
  rocksdb::Options rocks = RocksOptions(options_);
  memtable_factory_ = rocks.memtable_factory;
  // Before RocksDB opens: replaying its log needs room, and its errors go to the monitor.
  space_monitor_ = std::make_unique<SpaceMonitor>(options_.path, options_.space);
  std::error_code ec;
  if (std::filesystem::is_directory(options_.path, ec)) space_monitor_->ReleaseReserveIfTight();
  rocks.listeners.push_back(space_monitor_->listener());
  rocks.sst_file_manager = space_monitor_->sst_file_manager();
  rocksdb::DB* raw = nullptr;
  rocksdb::Status rs = rocksdb::DB::Open(rocks, options_.path, &raw);
  if (!rs.ok()) return FromRocksStatus(rs, "cannot open data dir " + Quote(options_.path));
  db_.reset(raw);

  std::string bytes;
  rs = db_->Get(rocksdb::ReadOptions(), keys::NodeMetaKey(), &bytes);
  proto::NodeMeta meta;
  if (rs.IsNotFound()) {
    meta.set_node_id(RandomId());
    meta.set_next_database_id(1);
    meta.set_format_version(kFormatVersion);
    rs = db_->Put(*write_options_, keys::NodeMetaKey(), meta.SerializeAsString());
    if (!rs.ok()) return FromRocksStatus(rs, "cannot initialise store " + Quote(options_.path));
  } else if (!rs.ok()) {
    return FromRocksStatus(rs, "cannot read store " + Quote(options_.path));
  } else if (!meta.ParseFromString(bytes)) {
    return Status::Corruption("node metadata of store " + Quote(options_.path) + " is unreadable");
  } else if (meta.format_version() > kFormatVersion) {
    return Status::Corruption("store " + Quote(options_.path) + " has storage format " +
                              std::to_string(meta.format_version()) + "; this build reads up to " +
                              std::to_string(kFormatVersion));
  } else if (meta.format_version() < kFormatVersion) {
    // An older store opens as it is (format 1's per-dot index entries go on serving deltas
    // until their records are replaced), but it is marked with this format now, before any
    // database is opened and so before this build writes anything an older one cannot read
    // (a dot range): an older build then refuses the store instead of sending incomplete
    // deltas from it. Going back needs a backup made before the upgrade.
    meta.set_format_version(kFormatVersion);
    rs = db_->Put(*write_options_, keys::NodeMetaKey(), meta.SerializeAsString());
    if (!rs.ok()) {
      return FromRocksStatus(rs,
                             "cannot upgrade the storage format of store " + Quote(options_.path));
    }
  }
  node_id_ = meta.node_id();
  next_database_id_ = meta.next_database_id();
  // One scan per open (about 50 ms per 100k databases) keeps InstanceCount O(1) afterwards
  // without a second record to keep consistent with the catalog.
  Status counted = ScanCatalog("", [this](const proto::CatalogEntry& entry) {
    ++instances_by_config_[entry.config_id()];
    return true;
  });
  if (!counted.ok()) return counted;
  rs = db_->Get(rocksdb::ReadOptions(), keys::NodeInUseKey(), &bytes);
  if (rs.ok() && bytes.size() == 8) {
    last_in_use_ms_ = keys::DecodeBigEndian64(bytes.data());
  } else if (!rs.ok() && !rs.IsNotFound()) {
    return FromRocksStatus(rs, "cannot read store " + Quote(options_.path));
  }
  if (options_.sync == SyncMode::kPeriodic) StartPeriodicSync();
  space_monitor_->Start(db_.get(), node_id_);
  return Status::OK();
}

Status Store::CheckRoomForData() const {
  return space_monitor_ ? space_monitor_->CheckRoomForData() : Status::OK();
}

SpaceStatus Store::space() const {
  return space_monitor_ ? space_monitor_->status() : SpaceStatus{};
}

void Store::NoteFreeingWrite() {
  if (space_monitor_) space_monitor_->NoteFreeingWrite();
}

void Store::NoteDataWritten(uint64_t bytes) {
  if (space_monitor_) space_monitor_->NoteDataWritten(bytes);
}

Status Store::MarkInUse() {
  if (closed()) return Status::Unavailable("store " + Quote(options_.path) + " is closed");
  std::string bytes;
  keys::AppendBigEndian64(NowMillis(), &bytes);
  rocksdb::Status rs = db_->Put(*write_options_, keys::NodeInUseKey(), bytes);
  if (!rs.ok()) return FromRocksStatus(rs, "cannot write store " + Quote(options_.path));
  return Status::OK();
}

uint64_t Store::WallTicks() const {
  return options_.wall_clock ? hlc::FromTime(options_.wall_clock()) : NowTicks();
}

uint64_t Store::NextTimestamps(size_t count, uint64_t floor) {
  const uint64_t physical = WallTicks();
  const uint64_t above = std::max(physical, floor + 1);
  uint64_t last = last_timestamp_.load(std::memory_order_relaxed);
  uint64_t first;
  do {
    first = std::max(above, last + 1);
  } while (!last_timestamp_.compare_exchange_weak(last, first + std::max<size_t>(count, 1) - 1,
                                                  std::memory_order_relaxed));
  return first;
}

void Store::ObserveTimestamp(uint64_t remote) {
  uint64_t last = last_timestamp_.load(std::memory_order_relaxed);
  while (remote > last &&
         !last_timestamp_.compare_exchange_weak(last, remote, std::memory_order_relaxed)) {
  }
}

Status Store::OpenDatabase(const std::string& path, const std::string& config_id,
                           uint64_t size_limit, std::unique_ptr<DatabaseStore>* out,
                           uint64_t max_instances) {
  // Paths are normalised once, where they enter the node (common/path.hpp); this only checks
  // that they were, so that no caller can make a second namespace for one database.
  std::string normalized;
  Status s = NormalizeDatabasePath(path, &normalized);
  if (!s.ok() || normalized != path) {
    return Status::InvalidKey("database path " + Quote(path) + " is not normalised" +
                              (s.ok() ? " (it is " + Quote(normalized) + ")" : ": " + s.message()));
  }
  const std::string catalog_key = keys::CatalogKey(path);
  proto::CatalogEntry entry;
  {
    std::lock_guard<std::mutex> lock(catalog_mutex_);
    std::string bytes;
    rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), catalog_key, &bytes);
    if (rs.ok()) {
      if (!entry.ParseFromString(bytes)) {
        return Status::Corruption("catalog entry of database " + Quote(path) + " is unreadable");
      }
    } else if (rs.IsNotFound()) {
      uint64_t& count = instances_by_config_[config_id];
      if (max_instances > 0 && count >= max_instances) {
        return Status::TooManyInstances(
            "cannot instantiate database " + Quote(path) + ": config " + Quote(config_id) +
            " allows at most " + std::to_string(max_instances) +
            " databases per node (max_instances) and this node holds " + std::to_string(count));
      }
      entry.set_path(path);
      entry.set_id(next_database_id_);
      entry.set_config_id(config_id);
      entry.set_created_ms(NowMillis());
      proto::NodeMeta meta;
      meta.set_node_id(node_id_);
      meta.set_next_database_id(next_database_id_ + 1);
      meta.set_format_version(kFormatVersion);
      rocksdb::WriteBatch batch;
      batch.Put(catalog_key, entry.SerializeAsString());
      batch.Put(keys::NodeMetaKey(), meta.SerializeAsString());
      rs = db_->Write(*write_options_, &batch);
      if (!rs.ok()) return FromRocksStatus(rs, "cannot create database " + Quote(path));
      ++next_database_id_;
      ++count;
    } else {
      return FromRocksStatus(rs, "cannot read catalog for " + Quote(path));
    }
  }
  std::unique_ptr<DatabaseStore> handle(
      new DatabaseStore(shared_from_this(), path, entry.config_id(), entry.id(), size_limit));
  s = handle->LoadMeta();
  if (!s.ok()) return s;
  *out = std::move(handle);
  return Status::OK();
}

Status Store::ScanCatalog(std::string_view after,
                          const std::function<bool(const proto::CatalogEntry&)>& fn) const {
  if (closed()) return Status::Unavailable("store " + Quote(options_.path) + " is closed");
  const rocksdb::Slice prefix(keys::kCatalogPrefix.data(), keys::kCatalogPrefix.size());
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  const std::string start = keys::CatalogKey(after);
  it->Seek(start);
  // Strictly after `after`: a cursor names the last path already returned.
  if (!after.empty() && it->Valid() && it->key() == rocksdb::Slice(start)) it->Next();
  proto::CatalogEntry entry;
  for (; it->Valid() && it->key().starts_with(prefix); it->Next()) {
    if (!entry.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Status::Corruption("catalog entry " + Quote(it->key().ToStringView()) +
                                " is unreadable");
    }
    if (!fn(entry)) break;
  }
  return FromRocksStatus(it->status(), "cannot list catalog");
}

Status Store::ListDatabases(std::vector<DatabaseInfo>* out) const {
  out->clear();
  return ScanCatalog("", [out](const proto::CatalogEntry& entry) {
    out->push_back({entry.path(), entry.config_id(), entry.id(), entry.created_ms()});
    return true;
  });
}

Status Store::ForEachVectorDigest(
    const std::function<void(const std::string&, uint64_t)>& fn) const {
  Status meta_error;
  Status s = ScanCatalog("", [&](const proto::CatalogEntry& entry) {
    std::string bytes;
    rocksdb::Status rs =
        db_->Get(rocksdb::ReadOptions(), keys::DatabaseMetaKey(entry.id()), &bytes);
    proto::DatabaseMeta meta;
    VersionVector vector;
    if (rs.ok() && (!meta.ParseFromString(bytes) ||
                    (meta.has_version_vector() &&
                     !VersionVector::Parse(meta.version_vector().SerializeAsString(), &vector)))) {
      meta_error =
          Status::Corruption("the meta record of " + Quote(entry.path()) + " is unreadable");
      return false;
    }
    if (!rs.ok() && !rs.IsNotFound()) {  // not found: instantiated, nothing written yet
      meta_error = FromRocksStatus(rs, "cannot read the meta record of " + Quote(entry.path()));
      return false;
    }
    fn(entry.path(), vector.Digest());
    return true;
  });
  if (!s.ok()) return s;
  return meta_error;
}

uint64_t Store::InstanceCount(const std::string& config_id) const {
  std::lock_guard<std::mutex> lock(catalog_mutex_);
  auto it = instances_by_config_.find(config_id);
  return it == instances_by_config_.end() ? 0 : it->second;
}

void Store::NoteCatalogEntryDeleted(const std::string& config_id) {
  std::lock_guard<std::mutex> lock(catalog_mutex_);
  auto it = instances_by_config_.find(config_id);
  if (it == instances_by_config_.end()) return;
  if (--it->second == 0) instances_by_config_.erase(it);
}

Status Store::RecordAccess(const std::string& path, uint64_t ms) {
  if (closed()) return Status::Unavailable("store " + Quote(options_.path) + " is closed");
  const std::string catalog_key = keys::CatalogKey(path);
  // Under the catalog lock: a drop or creation of the entry cannot interleave, so a dropped
  // database never gets its entry back from here.
  std::lock_guard<std::mutex> lock(catalog_mutex_);
  std::string bytes;
  rocksdb::Status rs = db_->Get(rocksdb::ReadOptions(), catalog_key, &bytes);
  if (rs.IsNotFound()) return Status::OK();
  if (!rs.ok()) return FromRocksStatus(rs, "cannot read catalog for " + Quote(path));
  proto::CatalogEntry entry;
  if (!entry.ParseFromString(bytes)) {
    return Status::Corruption("catalog entry of database " + Quote(path) + " is unreadable");
  }
  if (entry.last_access_ms() >= ms) return Status::OK();
  entry.set_last_access_ms(ms);
  // Unsynced: losing an access time in a machine crash costs nothing worth a sync.
  rs = db_->Put(*unsynced_write_options_, catalog_key, entry.SerializeAsString());
  return FromRocksStatus(rs, "cannot record the last access of " + Quote(path));
}

Status Store::ListInstances(const std::string& config_id, const InstanceOptions& options,
                            size_t max_scanned, InstancePage* page) const {
  page->instances.clear();
  page->next_cursor.clear();
  const size_t limit = options.limit == 0 ? kDefaultInstanceLimit
                                          : std::min<size_t>(options.limit, kMaxInstanceLimit);
  size_t scanned = 0;
  std::string last;
  Status meta_error;
  Status s = ScanCatalog(options.cursor, [&](const proto::CatalogEntry& entry) {
    if (page->instances.size() >= limit || scanned >= std::max<size_t>(max_scanned, 1)) {
      page->next_cursor = last;  // something remains after the last path examined
      return false;
    }
    ++scanned;
    last = entry.path();
    if (entry.config_id() != config_id) return true;
    InstanceInfo info;
    info.path = entry.path();
    info.config_id = entry.config_id();
    info.database_id = entry.id();
    info.created_ms = entry.created_ms();
    info.last_access_ms = entry.last_access_ms();
    std::string bytes;
    rocksdb::Status rs =
        db_->Get(rocksdb::ReadOptions(), keys::DatabaseMetaKey(entry.id()), &bytes);
    proto::DatabaseMeta meta;
    if (rs.ok() && !meta.ParseFromString(bytes)) {
      meta_error = Status::Corruption("the meta record of " + Quote(info.path) + " is unreadable");
      return false;
    }
    if (!rs.ok() && !rs.IsNotFound()) {  // not found: instantiated, nothing written yet
      meta_error = FromRocksStatus(rs, "cannot read the meta record of " + Quote(info.path));
      return false;
    }
    info.key_count = meta.key_count();
    info.used_bytes = meta.used_bytes();
    page->instances.push_back(std::move(info));
    return true;
  });
  if (!s.ok()) return s;
  return meta_error;
}

Status Store::UsageByConfig(std::map<std::string, ConfigUsage>* out) const {
  out->clear();
  std::vector<DatabaseInfo> databases;
  if (Status s = ListDatabases(&databases); !s.ok()) return s;
  for (const DatabaseInfo& info : databases) {
    ConfigUsage& usage = (*out)[info.config_id];
    ++usage.databases;
    std::string bytes;
    rocksdb::Status rs =
        db_->Get(rocksdb::ReadOptions(), keys::DatabaseMetaKey(info.database_id), &bytes);
    if (rs.IsNotFound()) continue;  // instantiated, nothing written yet
    if (!rs.ok()) return FromRocksStatus(rs, "cannot read the meta record of " + Quote(info.path));
    proto::DatabaseMeta meta;
    if (!meta.ParseFromString(bytes)) {
      return Status::Corruption("the meta record of " + Quote(info.path) + " is unreadable");
    }
    usage.used_bytes += meta.used_bytes();
  }
  return Status::OK();
}

Status Store::Checkpoint(const std::string& dir) {
  if (closed()) return Status::Unavailable("store " + Quote(options_.path) + " is closed");
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    return Status::InvalidArgument("checkpoint directory " + Quote(dir) +
                                   " already exists; name a new one");
  }
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status rs = rocksdb::Checkpoint::Create(db_.get(), &raw);
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  if (rs.ok()) rs = checkpoint->CreateCheckpoint(dir);
  return FromRocksStatus(
      rs, "cannot write a checkpoint of " + Quote(options_.path) + " to " + Quote(dir));
}

bool Store::IntProperty(const std::string& name, uint64_t* value) const {
  return db_->GetIntProperty(name, value);
}

uint64_t Store::SpareKeyTableBytes() const {
  return memtable_factory_ ? storage::SpareKeyTableBytes(*memtable_factory_) : 0;
}

}  // namespace kvmesh::storage
