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
// Not thread-safe: one owner at a time (the database actor).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.hpp"
#include "common/types.hpp"

namespace kvmesh::storage {

class Store;

class DatabaseStore {
 public:
  DatabaseStore(const DatabaseStore&) = delete;
  DatabaseStore& operator=(const DatabaseStore&) = delete;
  ~DatabaseStore();

  /// Stores `value` under `key`, replacing any previous value.
  /// Errors: kInvalidKey, kValueTooLarge, kSizeLimitExceeded, kIOError.
  Status Put(std::string_view key, std::string_view value);

  /// Reads `key` into `*value`. A missing key is Code::kNotFound (not a failure of the store).
  Status Get(std::string_view key, std::string* value) const;

  /// Removes `key`. Removing a missing key succeeds and writes nothing.
  Status Erase(std::string_view key);

  /// Applies every operation of `batch` atomically, in order (see WriteBatch). The size limit is
  /// checked against the state after the whole batch. Any invalid key or value fails the whole
  /// batch before anything is written.
  Status Write(const WriteBatch& batch);

  /// Lists one page of keys under options.prefix, after options.start_after.
  Status List(const ListOptions& options, ListPage* page) const;

  /// Current counters (no I/O).
  DatabaseStats Stats() const;

  /// Changes the size budget (a reloaded config). Existing data is kept even if it is over.
  void set_size_limit(uint64_t bytes) { limit_bytes_ = bytes; }

  const std::string& path() const { return path_; }
  uint64_t id() const { return id_; }

 private:
  friend class Store;
  DatabaseStore(std::shared_ptr<Store> store, std::string path, std::string config_id, uint64_t id,
                uint64_t limit_bytes);
  Status LoadMeta();
  struct OpView;
  /// The single write path behind Put, Erase and Write.
  Status Apply(const OpView* ops, size_t count);

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
};

}  // namespace kvmesh::storage
