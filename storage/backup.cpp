#include "storage/backup.hpp"

#include <rocksdb/db.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/path.hpp"
#include "messages/storage.pb.h"
#include "storage/database_store.hpp"
#include "storage/hlc.hpp"
#include "storage/keys.hpp"
#include "storage/rocks_status.hpp"
#include "storage/store.hpp"

namespace kvmesh::storage {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kMagic = "KVMESHBK2\n";
/// A frame longer than this is not from a backup (values are at most 64 MiB, paths and keys far
/// less): refuse it rather than allocate it.
// A value is at most 64 MiB (common/request_limits.hpp); a frame is a key or a value.
constexpr uint64_t kMaxFrame = (64u << 20) + 4096;

uint64_t Fnv(std::string_view bytes, uint64_t h) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser: spreads every bit over the result
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void PutFrame(std::string_view bytes, std::ofstream* out) {
  std::string length;
  keys::AppendBigEndian64(bytes.size(), &length);
  out->write(length.data(), static_cast<std::streamsize>(length.size()));
  out->write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Reads one frame; false at a clean end of file, an error for a broken one.
Status GetFrame(std::ifstream* in, const std::string& file, std::string* bytes, bool* got) {
  char length[8];
  in->read(length, 8);
  if (in->gcount() == 0 && in->eof()) {
    *got = false;
    return Status::OK();
  }
  if (in->gcount() != 8) return Status::Corruption("backup " + Quote(file) + " is truncated");
  const uint64_t n = keys::DecodeBigEndian64(length);
  if (n > kMaxFrame) return Status::Corruption("backup " + Quote(file) + " is not a backup");
  bytes->resize(n);
  in->read(bytes->data(), static_cast<std::streamsize>(n));
  if (static_cast<uint64_t>(in->gcount()) != n) {
    return Status::Corruption("backup " + Quote(file) + " is truncated");
  }
  *got = true;
  return Status::OK();
}

}  // namespace

uint64_t ContentHash(std::string_view key, std::string_view value) {
  // The key's length goes in first, so ("ab", "c") and ("a", "bc") differ.
  uint64_t h = Fnv(std::to_string(key.size()), 0xcbf29ce484222325ull);
  return Mix(Fnv(value, Fnv(key, h)));
}

DatabaseSnapshot::DatabaseSnapshot(std::shared_ptr<Store> store, std::string path, uint64_t id,
                                   const rocksdb::Snapshot* snapshot)
    : store_(std::move(store)), path_(std::move(path)), id_(id), snapshot_(snapshot) {}

DatabaseSnapshot::~DatabaseSnapshot() {
  if (snapshot_ != nullptr && !store_->closed()) store_->db()->ReleaseSnapshot(snapshot_);
}

std::unique_ptr<DatabaseSnapshot> DatabaseSnapshot::Take(const DatabaseStore& db) {
  std::shared_ptr<Store> store = db.node_store().shared_from_this();
  const rocksdb::Snapshot* snapshot = store->closed() ? nullptr : store->db()->GetSnapshot();
  return std::unique_ptr<DatabaseSnapshot>(
      new DatabaseSnapshot(std::move(store), db.path(), db.id(), snapshot));
}

Status DatabaseSnapshot::WriteTo(const std::string& dir, BackupSummary* summary) const {
  if (snapshot_ == nullptr || store_->closed()) {
    return Status::Unavailable("the store of " + Quote(path_) + " is closed");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return Status::IOError("cannot create backup directory " + Quote(dir) + ": " + ec.message());
  const std::string file = (fs::path(dir) / kBackupFileName).string();
  if (fs::exists(file, ec)) {
    return Status::InvalidArgument("backup " + Quote(file) +
                                   " already exists; choose an empty directory");
  }
  const std::string temporary = file + ".tmp";
  std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
  if (!out) return Status::IOError("cannot write " + Quote(temporary));
  out.write(kMagic.data(), static_cast<std::streamsize>(kMagic.size()));
  PutFrame(path_, &out);

  const std::string begin = keys::DataPrefix(id_);
  const std::string end = keys::DataPrefixEnd(id_);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot_;
  read_options.iterate_upper_bound = &upper;
  read_options.fill_cache = false;  // a backup must not evict what serves requests
  std::unique_ptr<rocksdb::Iterator> it(store_->db()->NewIterator(read_options));
  BackupSummary s;
  s.path = path_;
  proto::Record record;
  // Keys expired by now are not backed up (a restore must not bring them back); the others keep
  // their expiry time.
  const uint64_t now = store_->WallTicks();
  for (it->Seek(begin); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data() + begin.size(), it->key().size() - begin.size());
    if (!record.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Status::Corruption("record of key " + Quote(key) + " in database " + Quote(path_) +
                                " is unreadable");
    }
    if (record.tombstone()) continue;
    if (record.expires() != 0 && record.expires() <= now) continue;
    PutFrame(key, &out);
    PutFrame(record.value(), &out);
    std::string expires;
    keys::AppendBigEndian64(record.expires() >> hlc::kSubMsBits, &expires);
    PutFrame(expires, &out);
    ++s.records;
    s.bytes += key.size() + record.value().size();
    s.content_digest += ContentHash(key, record.value());
  }
  if (!it->status().ok()) {
    return FromRocksStatus(it->status(), "cannot read database " + Quote(path_));
  }
  PutFrame("", &out);
  std::string trailer;
  keys::AppendBigEndian64(s.records, &trailer);
  keys::AppendBigEndian64(s.content_digest, &trailer);
  out.write(trailer.data(), static_cast<std::streamsize>(trailer.size()));
  out.flush();
  out.close();
  if (!out) return Status::IOError("cannot write " + Quote(temporary));
  fs::rename(temporary, file, ec);
  if (ec) return Status::IOError("cannot rename " + Quote(temporary) + ": " + ec.message());
  *summary = std::move(s);
  return Status::OK();
}

Status ReadBackup(
    const std::string& dir, BackupSummary* summary,
    const std::function<Status(std::string key, std::string value, uint64_t expires_ms)>& record) {
  const std::string file = (fs::path(dir) / kBackupFileName).string();
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::NotFound("no backup at " + Quote(file));
  std::string magic(kMagic.size(), '\0');
  in.read(magic.data(), static_cast<std::streamsize>(magic.size()));
  if (magic != kMagic) return Status::Corruption(Quote(file) + " is not a kvmesh backup");
  BackupSummary s;
  bool got = false;
  Status st = GetFrame(&in, file, &s.path, &got);
  if (!st.ok()) return st;
  if (!got) return Status::Corruption("backup " + Quote(file) + " is truncated");
  std::string key, value, expires;
  for (;;) {
    st = GetFrame(&in, file, &key, &got);
    if (!st.ok()) return st;
    if (!got) return Status::Corruption("backup " + Quote(file) + " is truncated");
    if (key.empty()) break;  // the end marker
    st = GetFrame(&in, file, &value, &got);
    if (!st.ok()) return st;
    if (!got) return Status::Corruption("backup " + Quote(file) + " is truncated");
    st = GetFrame(&in, file, &expires, &got);
    if (!st.ok()) return st;
    if (!got || expires.size() != 8) {
      return Status::Corruption("backup " + Quote(file) + " is truncated");
    }
    ++s.records;
    s.bytes += key.size() + value.size();
    s.content_digest += ContentHash(key, value);
    st = record(std::move(key), std::move(value), keys::DecodeBigEndian64(expires.data()));
    if (!st.ok()) return st;
    key.clear();
    value.clear();
  }
  char trailer[16];
  in.read(trailer, 16);
  if (in.gcount() != 16) return Status::Corruption("backup " + Quote(file) + " is truncated");
  if (keys::DecodeBigEndian64(trailer) != s.records ||
      keys::DecodeBigEndian64(trailer + 8) != s.content_digest) {
    return Status::Corruption("backup " + Quote(file) + " does not match its own count or digest");
  }
  *summary = std::move(s);
  return Status::OK();
}

}  // namespace kvmesh::storage
