#include "storage/database_store.hpp"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <unordered_map>
#include <vector>

#include "common/path.hpp"
#include "messages/storage.pb.h"
#include "storage/keys.hpp"
#include "storage/rocks_status.hpp"
#include "storage/store.hpp"

namespace kvmesh::storage {
namespace {

/// The cost of the record stored under `data_key`, or 0 if there is none (or a tombstone).
Status LiveCost(rocksdb::DB* db, const std::string& data_key, size_t user_key_size,
                uint64_t* cost) {
  rocksdb::PinnableSlice bytes;
  rocksdb::Status rs = db->Get(rocksdb::ReadOptions(), db->DefaultColumnFamily(), data_key, &bytes);
  if (rs.IsNotFound()) {
    *cost = 0;
    return Status::OK();
  }
  if (!rs.ok()) return FromRocksStatus(rs, "cannot read previous value");
  proto::Record record;
  if (!record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Status::Corruption("stored record is unreadable");
  }
  *cost = record.tombstone() ? 0 : user_key_size + record.value().size();
  return Status::OK();
}

Status ClosedError(const std::string& path) {
  return Status::Unavailable("the store of database " + Quote(path) + " is closed");
}

}  // namespace

/// An operation as the write path sees it: borrowed key and value, so Put copies nothing.
struct DatabaseStore::OpView {
  WriteOp::Kind kind;
  std::string_view key;
  std::string_view value;
};

DatabaseStore::DatabaseStore(std::shared_ptr<Store> store, std::string path, std::string config_id,
                             uint64_t id, uint64_t limit_bytes)
    : store_(std::move(store)),
      path_(std::move(path)),
      config_id_(std::move(config_id)),
      id_(id),
      limit_bytes_(limit_bytes),
      data_prefix_(keys::DataPrefix(id)),
      meta_key_(keys::DatabaseMetaKey(id)) {}

DatabaseStore::~DatabaseStore() = default;

Status DatabaseStore::LoadMeta() {
  std::string bytes;
  rocksdb::Status rs = store_->db()->Get(rocksdb::ReadOptions(), meta_key_, &bytes);
  if (rs.IsNotFound()) return Status::OK();
  if (!rs.ok()) return FromRocksStatus(rs, "cannot read metadata of database " + Quote(path_));
  proto::DatabaseMeta meta;
  if (!meta.ParseFromString(bytes)) {
    return Status::Corruption("metadata of database " + Quote(path_) + " is unreadable");
  }
  used_bytes_ = meta.used_bytes();
  key_count_ = meta.key_count();
  local_counter_ = meta.local_counter();
  return Status::OK();
}

Status DatabaseStore::Put(std::string_view key, std::string_view value) {
  OpView op{WriteOp::Kind::kPut, key, value};
  return Apply(&op, 1);
}

Status DatabaseStore::Erase(std::string_view key) {
  OpView op{WriteOp::Kind::kErase, key, {}};
  return Apply(&op, 1);
}

Status DatabaseStore::Write(const WriteBatch& batch) {
  if (batch.ops.size() > kMaxBatchOps) {
    return Status::InvalidArgument("batch has " + std::to_string(batch.ops.size()) +
                                   " operations; the maximum is " + std::to_string(kMaxBatchOps));
  }
  std::vector<OpView> ops;
  ops.reserve(batch.ops.size());
  size_t bytes = 0;
  for (const WriteOp& op : batch.ops) {
    ops.push_back({op.kind, op.key, op.value});
    bytes += op.key.size() + (op.kind == WriteOp::Kind::kPut ? op.value.size() : 0);
  }
  if (bytes > kMaxBatchBytes) {
    return Status::InvalidArgument("batch holds " + FormatSize(bytes) +
                                   " of keys and values; the maximum is " +
                                   FormatSize(kMaxBatchBytes));
  }
  return Apply(ops.data(), ops.size());
}

// Validates every operation, computes the exact usage after all of them, checks the budget, and
// only then writes data and meta in one RocksDB batch: a failure at any step stores nothing.
Status DatabaseStore::Apply(const OpView* ops, size_t count) {
  if (store_->closed()) return ClosedError(path_);
  const size_t max_value = store_->options().max_value_bytes;
  std::vector<std::string> data_keys(count);
  std::string key;
  for (size_t i = 0; i < count; ++i) {
    Status s = NormalizeKey(ops[i].key, &key);
    if (!s.ok()) {
      return Status(s.code(),
                    s.message() + ": " + Quote(ops[i].key) + " (database " + Quote(path_) + ")");
    }
    if (ops[i].kind == WriteOp::Kind::kPut && ops[i].value.size() > max_value) {
      return Status::ValueTooLarge("value for key " + Quote(key) + " in database " + Quote(path_) +
                                   " is " + FormatSize(ops[i].value.size()) +
                                   "; the maximum value size is " + FormatSize(max_value));
    }
    data_keys[i] = data_prefix_ + key;
  }

  // Live cost of each touched key as the batch progresses; a key touched twice is read once.
  // A live entry always costs at least its (non-empty) key, so cost 0 means absent.
  std::unordered_map<std::string_view, uint64_t> cost_after;
  std::vector<bool> live_before(count);
  int64_t used_delta = 0;
  int64_t count_delta = 0;
  for (size_t i = 0; i < count; ++i) {
    const std::string& data_key = data_keys[i];
    const size_t user_key_size = data_key.size() - data_prefix_.size();
    uint64_t before = 0;
    auto it = cost_after.find(data_key);
    if (it != cost_after.end()) {
      before = it->second;
    } else {
      Status s = LiveCost(store_->db(), data_key, user_key_size, &before);
      if (!s.ok()) return s;
    }
    const bool is_put = ops[i].kind == WriteOp::Kind::kPut;
    const uint64_t after = is_put ? user_key_size + ops[i].value.size() : 0;
    used_delta += static_cast<int64_t>(after) - static_cast<int64_t>(before);
    count_delta += (is_put ? 1 : 0) - (before > 0 ? 1 : 0);
    live_before[i] = before > 0;
    cost_after[data_key] = after;
  }

  const uint64_t used_after = used_bytes_ + used_delta;
  if (used_delta > 0 && used_after > limit_bytes_) {
    return Status::SizeLimitExceeded(
        "database " + Quote(path_) + " is limited to " + FormatSize(limit_bytes_) + " and holds " +
        FormatSize(used_bytes_) + "; this write needs " +
        FormatSize(static_cast<uint64_t>(used_delta)) + " more. Nothing was written");
  }

  rocksdb::WriteBatch batch;
  uint64_t counter = local_counter_;
  bool changed = false;
  proto::Record record;
  for (size_t i = 0; i < count; ++i) {
    if (ops[i].kind == WriteOp::Kind::kPut) {
      record.set_value(ops[i].value.data(), ops[i].value.size());
      proto::Version* version = record.mutable_version();
      version->set_origin(store_->node_id());
      version->set_counter(++counter);
      version->set_hlc(store_->NextTimestamp());
      batch.Put(data_keys[i], record.SerializeAsString());
      changed = true;
    } else if (live_before[i]) {
      // Single node: an erase removes the record. Replication will write a tombstone here.
      batch.Delete(data_keys[i]);
      changed = true;
    }
  }
  if (!changed) return Status::OK();
  proto::DatabaseMeta meta;
  meta.set_used_bytes(used_after);
  meta.set_key_count(key_count_ + count_delta);
  meta.set_local_counter(counter);
  batch.Put(meta_key_, meta.SerializeAsString());
  rocksdb::Status rs = store_->db()->Write(store_->write_options(), &batch);
  if (!rs.ok()) return FromRocksStatus(rs, "cannot write to database " + Quote(path_));
  used_bytes_ = used_after;
  key_count_ += count_delta;
  local_counter_ = counter;
  return Status::OK();
}

Status DatabaseStore::Get(std::string_view raw_key, std::string* value) const {
  if (store_->closed()) return ClosedError(path_);
  std::string key;
  Status s = NormalizeKey(raw_key, &key);
  if (!s.ok()) return Status(s.code(), s.message() + ": " + Quote(raw_key));
  rocksdb::PinnableSlice bytes;
  rocksdb::DB* db = store_->db();
  rocksdb::Status rs =
      db->Get(rocksdb::ReadOptions(), db->DefaultColumnFamily(), data_prefix_ + key, &bytes);
  proto::Record record;
  if (rs.ok()) {
    if (!record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return Status::Corruption("record of key " + Quote(key) + " in database " + Quote(path_) +
                                " is unreadable");
    }
  } else if (!rs.IsNotFound()) {
    return FromRocksStatus(rs, "cannot read key " + Quote(key) + " of database " + Quote(path_));
  }
  if (rs.IsNotFound() || record.tombstone()) {
    return Status::NotFound("key " + Quote(key) + " not found in database " + Quote(path_));
  }
  *value = std::move(*record.mutable_value());
  return Status::OK();
}

// Keys under prefix P (segment rule): P itself, then the contiguous byte range [P + "/", P + "0")
// ('0' follows '/'). Keys like P + "!" sort between the two and are not under P, so the list
// reads the exact key first and then scans the range; the result stays in byte order.
Status DatabaseStore::List(const ListOptions& options, ListPage* page) const {
  if (store_->closed()) return ClosedError(path_);
  page->keys.clear();
  page->values.clear();
  page->next_token.clear();
  std::string prefix;
  Status s = NormalizePrefix(options.prefix, &prefix);
  if (!s.ok()) return s;
  const uint32_t limit =
      options.limit == 0 ? kDefaultListLimit : std::min<uint32_t>(options.limit, kMaxListLimit);
  const std::string& after = options.start_after;
  size_t page_bytes = 0;
  bool full = false;
  proto::Record record;

  // Adds one stored record to the page; returns false when the page is full.
  auto take = [&](std::string_view user_key, const rocksdb::Slice& bytes) -> Status {
    if (!record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return Status::Corruption("record of key " + Quote(user_key) + " in database " +
                                Quote(path_) + " is unreadable");
    }
    if (record.tombstone()) return Status::OK();
    if (page->keys.size() >= limit || (page_bytes > 0 && page_bytes >= kMaxListPageBytes)) {
      full = true;
      return Status::OK();
    }
    page->keys.emplace_back(user_key);
    page_bytes += user_key.size();
    if (options.with_values) {
      page_bytes += record.value().size();
      page->values.push_back(std::move(*record.mutable_value()));
    }
    return Status::OK();
  };

  rocksdb::DB* db = store_->db();
  std::string range_begin = data_prefix_ + prefix;
  std::string range_end;
  if (prefix.empty()) {
    range_end = keys::DataPrefixEnd(id_);
  } else {
    if (after.empty() || after < prefix) {
      rocksdb::PinnableSlice bytes;
      rocksdb::Status rs =
          db->Get(rocksdb::ReadOptions(), db->DefaultColumnFamily(), range_begin, &bytes);
      if (rs.ok()) {
        s = take(prefix, bytes);
        if (!s.ok()) return s;
      } else if (!rs.IsNotFound()) {
        return FromRocksStatus(rs, "cannot list database " + Quote(path_));
      }
    }
    range_end = range_begin + '0';
    range_begin += '/';
  }
  rocksdb::Slice upper(range_end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options));
  const std::string resume = data_prefix_ + after;
  if (!after.empty() && resume >= range_begin) {
    it->Seek(resume);
    if (it->Valid() && it->key() == rocksdb::Slice(resume)) it->Next();
  } else {
    it->Seek(range_begin);
  }
  for (; it->Valid() && !full; it->Next()) {
    rocksdb::Slice k = it->key();
    std::string_view user_key(k.data() + data_prefix_.size(), k.size() - data_prefix_.size());
    s = take(user_key, it->value());
    if (!s.ok()) return s;
  }
  if (!it->status().ok()) return FromRocksStatus(it->status(), "cannot list " + Quote(path_));
  if (full && !page->keys.empty()) page->next_token = page->keys.back();
  return Status::OK();
}

DatabaseStats DatabaseStore::Stats() const {
  DatabaseStats stats;
  stats.path = path_;
  stats.config_id = config_id_;
  stats.database_id = id_;
  stats.key_count = key_count_;
  stats.used_bytes = used_bytes_;
  stats.limit_bytes = limit_bytes_;
  return stats;
}

}  // namespace kvmesh::storage
