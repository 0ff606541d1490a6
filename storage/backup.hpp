// Backups of one database (kvmesh backup DB DIR) and of a whole node (kvmesh backup --all DIR).
//
// A database backup is the live records of one database at one point in time: a RocksDB snapshot
// taken by the database's owner between two of its writes (O(1)), then read on another thread
// while the database goes on taking writes. It is written to DIR/database.kvbackup:
//   "KVMESHBK2\n", then frames of an 8-byte big-endian length and that many bytes: the database
//   path, then per live record its key, its value and its expiry time (8 bytes, wall-clock ms
//   since the epoch, 0 for none; keys already expired are left out), in key order, then an empty
//   frame and a
//   16-byte trailer (record count, content digest), so a truncated file is detected.
// Written to a temporary name and renamed, so DIR/database.kvbackup is always whole.
// Versions are not kept: a restore writes the records as new writes (new versions) that
// replicate, so restoring into any cluster, or over a database that moved on, is well ordered.
//
// A node backup is a RocksDB checkpoint of the node's store (Store::Checkpoint): a directory a
// node can be started on (kvmeshd --data-dir) to rebuild it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "kvmesh/status.hpp"

namespace rocksdb {
class Snapshot;
}  // namespace rocksdb

namespace kvmesh::storage {

class DatabaseStore;
class Store;

/// The name of a database backup's file inside its directory.
inline constexpr const char* kBackupFileName = "database.kvbackup";

/// What a database backup holds.
struct BackupSummary {
  std::string path;
  /// Live records.
  uint64_t records = 0;
  /// Key bytes plus value bytes.
  uint64_t bytes = 0;
  /// ContentDigest of the records: equal for equal keys and values, whatever their versions.
  uint64_t content_digest = 0;
};

/// Order-independent digest of key-value contents: the sum (mod 2^64) of ContentHash over the
/// live keys. Unlike DatabaseStore::digest it ignores versions, so a restored database (new
/// versions) compares equal to its backup.
uint64_t ContentHash(std::string_view key, std::string_view value);

/// One database as it was when Take ran.
class DatabaseSnapshot {
 public:
  /// Snapshots `db` now (O(1)); call on the thread that owns `db`. The snapshot keeps the store
  /// open until it is destroyed.
  static std::unique_ptr<DatabaseSnapshot> Take(const DatabaseStore& db);
  ~DatabaseSnapshot();
  DatabaseSnapshot(const DatabaseSnapshot&) = delete;
  DatabaseSnapshot& operator=(const DatabaseSnapshot&) = delete;

  /// Writes the snapshot's live records to `dir`/database.kvbackup; `dir` is created if
  /// missing. Any thread. Errors: kInvalidArgument (a backup already there: nothing is
  /// overwritten), kIOError, kCorruption, kUnavailable (the store closed).
  Status WriteTo(const std::string& dir, BackupSummary* summary) const;

 private:
  DatabaseSnapshot(std::shared_ptr<Store> store, std::string path, uint64_t id,
                   const rocksdb::Snapshot* snapshot);
  std::shared_ptr<Store> store_;
  std::string path_;
  uint64_t id_;
  const rocksdb::Snapshot* snapshot_;
};

/// Reads the backup in `dir`, calling `record` for each key, value and expiry time (wall-clock
/// ms, 0: none) in key order; stops at the first error `record` returns. `*summary` gets the header
/// and trailer. Errors: kNotFound (no backup there), kCorruption (not a backup, truncated, or its
/// count or digest does not match), kIOError.
Status ReadBackup(
    const std::string& dir, BackupSummary* summary,
    const std::function<Status(std::string key, std::string value, uint64_t expires_ms)>& record);

}  // namespace kvmesh::storage
