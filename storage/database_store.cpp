#include "storage/database_store.hpp"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <google/protobuf/io/coded_stream.h>

#include <algorithm>
#include <climits>
#include <deque>
#include <new>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "common/path.hpp"
#include "common/request_limits.hpp"
#include "messages/replication.pb.h"
#include "messages/storage.pb.h"
#include "storage/hlc.hpp"
#include "storage/keys.hpp"
#include "storage/rocks_status.hpp"
#include "storage/store.hpp"

namespace kvmesh::storage {
namespace {

/// Tag of DatabaseMeta.version_vector (field 4, length-delimited) in the wire format.
constexpr char kMetaVersionVectorTag = (4 << 3) | 2;
/// Tags of Delta.entries (field 1), DeltaEntry.key (1) and DeltaEntry.record (2), all
/// length-delimited, in the wire format.
constexpr char kDeltaEntriesTag = (1 << 3) | 2;
constexpr char kEntryKeyTag = (1 << 3) | 2;
constexpr char kEntryRecordTag = (2 << 3) | 2;
/// Tombstones deleted per RocksDB write by CollectTombstones.
constexpr size_t kCollectBatch = 4096;
/// Most members of one dot range: a run longer than this is split. Bounds what DeltaSince parses
/// again when a pull resumes inside a range (a group commit can assign many thousand counters).
constexpr size_t kMaxRangeMembers = 1024;
/// A listed sweep pass examines this many times the members a pass reading records would: it
/// reads no record, and a member costs it about an eighth (rewriting its range), so a round of
/// either takes about as long.
constexpr size_t kListedSweepFactor = 8;
/// Ranges a listed sweep pass steps over towards the next listed dot's before it seeks.
constexpr size_t kMaxSweepSteps = 16;
/// Keys ahead whose record cache sets a loop over a write's keys prefetches (CacheLookahead):
/// enough misses in flight to cover one's latency, few enough that none is evicted before use.
constexpr size_t kCacheLookahead = 8;

/// Prefetches the record cache sets of a loop's keys kCacheLookahead keys ahead of it
/// (RecordCache::Prefetch): a set is a likely cache miss, and a write finds or puts many keys one
/// after another. `KeyAt`: `const std::string*(size_t i)`, item i's key, or null to skip it.
template <class KeyAt>
class CacheLookahead {
 public:
  /// Prefetches the first keys' sets.
  CacheLookahead(const RecordCache& cache, size_t count, KeyAt key_at)
      : cache_(cache), count_(count), key_at_(std::move(key_at)) {
    for (size_t i = 0; i < kCacheLookahead; ++i) Fetch(i);
  }
  /// At the start of the loop's step `i`.
  void Step(size_t i) { Fetch(i + kCacheLookahead); }

 private:
  void Fetch(size_t i) {
    if (i >= count_) return;
    if (const std::string* key = key_at_(i)) cache_.Prefetch(*key);
  }
  const RecordCache& cache_;
  const size_t count_;
  KeyAt key_at_;
};
/// Tags of DotRange.members (field 1, length-delimited), Member.offset (1, varint) and
/// Member.key (2, length-delimited) in the wire format.
constexpr char kRangeMembersTag = (1 << 3) | 2;
constexpr char kMemberOffsetTag = (1 << 3) | 0;
constexpr char kMemberKeyTag = (2 << 3) | 2;
/// Tag of Record.dot_ranged (field 5, varint) in the wire format.
constexpr char kRecordDotRangedTag = (5 << 3) | 0;

Status ClosedError(const std::string& path) {
  return Status::Unavailable("the store of database " + Quote(path) + " is closed");
}

void AppendVarint(uint64_t n, std::string* out) {
  while (n >= 0x80) {
    out->push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out->push_back(static_cast<char>(n));
}

size_t VarintSize(uint64_t n) {
  size_t size = 1;
  while (n >= 0x80) {
    n >>= 7;
    ++size;
  }
  return size;
}

/// Bytes a length-delimited field of `payload` bytes takes (field numbers below 16).
size_t FieldSize(size_t payload) {
  return 1 + VarintSize(payload) + payload;
}

/// The hash a live record adds to the digest: XXH3-64 of its key, value and version, encoded as
/// five little-endian 64-bit words (key size, value size, origin, counter, hlc) followed by the
/// key and the value bytes, so no two different records share an encoding.
uint64_t RecordHash(std::string_view key, const proto::Record& record) {
  const proto::Version& version = record.version();
  const uint64_t words[5] = {key.size(), record.value().size(), version.origin(), version.counter(),
                             version.hlc()};
  unsigned char header[sizeof(words)];
  for (size_t w = 0; w < 5; ++w) {
    for (size_t b = 0; b < 8; ++b)
      header[8 * w + b] = static_cast<unsigned char>(words[w] >> (8 * b));
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, header, sizeof(header));
  XXH3_64bits_update(&state, key.data(), key.size());
  XXH3_64bits_update(&state, record.value().data(), record.value().size());
  return XXH3_64bits_digest(&state);
}

/// Bytes a record counts for in used_bytes: key plus value if live, 0 for a tombstone.
uint64_t LiveCost(std::string_view key, const proto::Record& record) {
  return record.tombstone() ? 0 : key.size() + record.value().size();
}

/// The conflict rule: of two records of one key, the higher (hlc, origin) wins. The counter
/// breaks the remaining tie (one origin reusing an hlc, which its clock rules out), so the
/// order is total and every replica picks the same winner.
bool Newer(const proto::Version& a, const proto::Version& b) {
  return std::make_tuple(a.hlc(), a.origin(), a.counter()) >
         std::make_tuple(b.hlc(), b.origin(), b.counter());
}

/// True if `record` is live but expired at `now` (timestamp ticks): it reads as missing.
bool Expired(const proto::Record& record, uint64_t now) {
  return !record.tombstone() && record.expires() != 0 && record.expires() <= now;
}

/// True if `record` reads as a value at `now`: not a tombstone, not expired.
bool Present(const proto::Record& record, uint64_t now) {
  return !record.tombstone() && !Expired(record, now);
}

void AppendHex(uint64_t n, std::string* out) {
  static const char kDigits[] = "0123456789abcdef";
  char buffer[16];
  int length = 0;
  do {
    buffer[length++] = kDigits[n & 0xf];
    n >>= 4;
  } while (n != 0);
  while (length > 0) out->push_back(buffer[--length]);
}

/// True if `token` has the shape VersionToken gives: three lower-case hex numbers of 1 to 16
/// digits joined by '-'.
bool WellFormedToken(std::string_view token) {
  int fields = 0;
  size_t digits = 0;
  for (char c : token) {
    if (c == '-') {
      if (digits == 0 || ++fields > 2) return false;
      digits = 0;
    } else if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
      if (++digits > 16) return false;
    } else {
      return false;
    }
  }
  return fields == 2 && digits > 0;
}

/// Empties `record` as its Clear would, but keeps its Version message (Clear deletes it, and the
/// next write or parse allocates another): a reused record then allocates nothing. has_version()
/// stays true, so only for records that get a version again (every stored record has one).
void ResetRecord(proto::Record* record) {
  record->clear_value();  // keeps the capacity
  record->set_tombstone(false);
  record->set_expires(0);
  record->set_dot_ranged(false);
  if (record->has_version()) record->mutable_version()->Clear();
  // The reflection looked up once: GetReflection() assigns the descriptors (a call_once) at
  // every call, 1.7% of the node's port thread in a remote bulk load (two Pendings a key).
  static const google::protobuf::Reflection* const reflection = proto::Record::GetReflection();
  if (!reflection->GetUnknownFields(*record).empty()) {
    reflection->MutableUnknownFields(record)->Clear();
  }
}

}  // namespace

std::string VersionToken(const proto::Version& version) {
  std::string out;
  AppendHex(version.hlc(), &out);
  out.push_back('-');
  AppendHex(version.origin(), &out);
  out.push_back('-');
  AppendHex(version.counter(), &out);
  return out;
}

namespace {}  // namespace

/// An operation as the write path sees it: borrowed key and value, so Put copies nothing.
struct DatabaseStore::OpView {
  WriteOp::Kind kind;
  std::string_view key;
  std::string_view value;
  uint64_t ttl_ms = 0;
};

struct DatabaseStore::Pending {
  /// The normalised user key.
  std::string key;
  /// A record was stored before the write; it is `before`, without its value when it came from
  /// the record cache: its value's size and digest hash are `before_value_size` and
  /// `before_hash`, which are what the write needs of it (BeforeCost).
  bool had = false;
  proto::Record before;
  uint64_t before_value_size = 0;
  uint64_t before_hash = 0;
  /// The write replaced the record with `after`.
  bool changed = false;
  proto::Record after;
  /// `after` serialized (by Stage): the bytes stored; their first `wire_size` bytes are the
  /// record as sent in the delta (without Record.dot_ranged, which is this replica's own).
  std::string after_bytes;
  size_t wire_size = 0;
  /// RecordHash of `after` if it is live (by Stage).
  uint64_t after_hash = 0;

  bool exists() const { return changed || had; }
  /// The current record's version, tombstone and expiry (not its value: see `before`).
  const proto::Record& current() const { return changed ? after : before; }
  /// LiveCost of the current record.
  uint64_t CurrentCost() const { return changed ? LiveCost(key, after) : BeforeCost(); }
  /// LiveCost of `before`.
  uint64_t BeforeCost() const { return before.tombstone() ? 0 : key.size() + before_value_size; }
  /// `before` is the record read from the store: its value's size and hash are noted.
  void NoteReadBefore() {
    had = true;
    before_value_size = before.value().size();
    before_hash = before.tombstone() ? 0 : RecordHash(key, before);
  }
  /// `before` is the record `summary` describes (see `before`).
  void TakeBefore(const RecordSummary& summary) {
    had = true;
    proto::Version* version = before.mutable_version();
    version->set_origin(summary.origin);
    version->set_counter(summary.counter);
    version->set_hlc(summary.hlc);
    before.set_tombstone(summary.tombstone);
    before.set_expires(summary.expires);
    before.set_dot_ranged(summary.dot_ranged);
    before_value_size = summary.value_size;
    before_hash = summary.hash;
  }
  /// What the record cache keeps of `before` (as read) or of `after` (as staged).
  RecordSummary BeforeSummary() const { return Summary(before, before_value_size, before_hash); }
  RecordSummary AfterSummary() const { return Summary(after, after.value().size(), after_hash); }
  /// Makes this the untouched state of `k`, keeping the capacity of its strings and the Version
  /// messages of its records (ResetRecord), so a reused Pending allocates nothing.
  void Reset(std::string_view k) {
    key.assign(k.data(), k.size());
    had = false;
    ResetRecord(&before);
    before_value_size = before_hash = 0;
    changed = false;
    ResetRecord(&after);
    after_bytes.clear();
    wire_size = 0;
    after_hash = 0;
  }
  /// Heap bytes it keeps (about).
  size_t Bytes() const {
    return sizeof(Pending) + key.capacity() + before.value().capacity() + after.value().capacity() +
           after_bytes.capacity();
  }
  /// Frees its strings' buffers (a large value is not worth keeping for the next write).
  void Release() {
    std::string().swap(key);
    std::string().swap(*before.mutable_value());
    std::string().swap(*after.mutable_value());
    std::string().swap(after_bytes);
  }

 private:
  static RecordSummary Summary(const proto::Record& record, uint64_t value_size, uint64_t hash) {
    RecordSummary summary;
    summary.origin = record.version().origin();
    summary.counter = record.version().counter();
    summary.hlc = record.version().hlc();
    summary.expires = record.expires();
    summary.value_size = value_size;
    summary.hash = hash;
    summary.tombstone = record.tombstone();
    summary.dot_ranged = record.dot_ranged();
    return summary;
  }
};

/// The keys one write touches, in first-touch order, and the same sorted by key.
///
/// Their Pending states come from a pool kept by the thread between writes: a write of N keys
/// made ~8 allocations per key (the key, each record's Version and value, the serialized record,
/// the deque's blocks, the map's nodes), about a tenth of a bulk write's CPU with their frees
/// (perf, kvmesh-bench batch of 1000 keys). Per thread, not per database, so thousands of
/// databases keep nothing; bounded (Trim); a write that starts while the thread's pool is in use
/// (an observer writing another database) takes a pool of its own.
struct DatabaseStore::Touched {
  struct Pool {
    std::deque<Pending> pendings;  // a deque: Pending* stay valid as it grows
    std::vector<std::string> keys;
    /// The heap bytes of each state and key string as Trim last measured them (when last used:
    /// unused ones have not changed since), and their sum.
    std::vector<size_t> pending_bytes;
    std::vector<size_t> key_bytes;
    size_t bytes = 0;
    bool busy = false;
  };
  /// What a pool keeps between writes: states and key strings of up to this many bytes in all
  /// (strings' capacity included), at most this many of each, and no state over
  /// kMaxStateBytes; the rest is freed.
  static constexpr size_t kPoolBytes = 4u << 20;
  static constexpr size_t kPoolEntries = 8192;
  static constexpr size_t kMaxStateBytes = 64u << 10;

  /// This thread's pool's heap bytes, counted afresh (tests check the bound with it).
  static size_t ThreadPoolBytes() {
    const Pool& pool = ThreadPool();
    size_t bytes = 0;
    for (const Pending& p : pool.pendings) bytes += p.Bytes();
    for (const std::string& key : pool.keys) bytes += key.capacity();
    return bytes;
  }

  Touched() {
    Pool& thread_pool = ThreadPool();
    pool_ = thread_pool.busy ? &own_ : &thread_pool;
    pool_->busy = true;
  }
  ~Touched() {
    Trim();
    pool_->busy = false;
  }
  Touched(const Touched&) = delete;
  Touched& operator=(const Touched&) = delete;

  size_t size() const { return count_; }
  Pending& operator[](size_t i) { return pool_->pendings[i]; }
  const Pending& operator[](size_t i) const { return pool_->pendings[i]; }
  /// The state of `key`, not read yet, last in first-touch order (not in `sorted`).
  Pending& Add(std::string_view key) {
    if (count_ == pool_->pendings.size()) pool_->pendings.emplace_back();
    Pending& p = pool_->pendings[count_++];
    p.Reset(key);
    return p;
  }
  /// Room for `n` strings (the normalised keys of a write), valid while this lives.
  std::string* Keys(size_t n) {
    if (pool_->keys.size() < n) pool_->keys.resize(n);
    keys_used_ = std::max(keys_used_, n);
    return pool_->keys.data();
  }
  /// Every touched key's state, ascending by key (TouchAll and Touch keep it).
  std::vector<Pending*> sorted;

 private:
  static Pool& ThreadPool() {
    static thread_local Pool pool;
    return pool;
  }

  // Measures what this write used (what it did not use is as last measured), frees a state
  // over kMaxStateBytes, then drops states and key strings from the end while the pool is over
  // its bounds. O(what this write used), plus what is freed.
  void Trim() {
    Pool& pool = *pool_;
    std::deque<Pending>& pendings = pool.pendings;
    pool.pending_bytes.resize(pendings.size(), 0);
    for (size_t i = 0; i < count_; ++i) {
      if (pendings[i].Bytes() > kMaxStateBytes) pendings[i].Release();
      pool.bytes += pendings[i].Bytes();
      pool.bytes -= pool.pending_bytes[i];
      pool.pending_bytes[i] = pendings[i].Bytes();
    }
    std::vector<std::string>& keys = pool.keys;
    pool.key_bytes.resize(keys.size(), 0);
    for (size_t i = 0; i < keys_used_; ++i) {
      pool.bytes += keys[i].capacity();
      pool.bytes -= pool.key_bytes[i];
      pool.key_bytes[i] = keys[i].capacity();
    }
    bool dropped = false;
    while (!pendings.empty() && (pool.bytes > kPoolBytes || pendings.size() > kPoolEntries)) {
      pool.bytes -= pool.pending_bytes.back();
      pool.pending_bytes.pop_back();
      pendings.pop_back();
      dropped = true;
    }
    if (dropped) pendings.shrink_to_fit();
    while (!keys.empty() && (pool.bytes > kPoolBytes || keys.size() > kPoolEntries)) {
      pool.bytes -= pool.key_bytes.back();
      pool.key_bytes.pop_back();
      keys.pop_back();
    }
  }

  Pool own_;
  Pool* pool_;
  size_t count_ = 0;
  size_t keys_used_ = 0;
};

size_t DatabaseStore::WritePoolBytesForTesting() {
  return Touched::ThreadPoolBytes();
}

struct DatabaseStore::Staged {
  rocksdb::WriteBatch batch;
  bool changed = false;
  int64_t used_bytes = 0;
  int64_t key_count = 0;
  int64_t tombstone_count = 0;
  /// The digest after the change.
  uint64_t digest = 0;
  /// The earliest expiry among the expiry index entries written (UINT64_MAX: none).
  uint64_t min_expires = UINT64_MAX;
  /// The largest key of the records written (null: none).
  const std::string* max_key = nullptr;
  /// The keys whose records the batch writes, in key order (their `after`).
  std::vector<Pending*> records;
  /// Members written into dot ranges, and the dots of members of earlier ranges made stale.
  int64_t range_members = 0;
  std::vector<Dot> stale_dots;
};

/// A batch that removes records (CollectExpired, RemoveCollectedElsewhere), with the changes of
/// the counters it makes; WriteRemoval writes it with the meta record.
struct DatabaseStore::Removal {
  explicit Removal(uint64_t digest) : digest(digest) {}
  rocksdb::WriteBatch batch;
  size_t entries = 0;
  int64_t used_bytes = 0;
  int64_t key_count = 0;
  int64_t tombstone_count = 0;
  /// The dots of dot range members made stale (records removed whose dot is in a range).
  std::vector<Dot> stale_dots;
  /// The digest after the removals.
  uint64_t digest;
};

Status DatabaseStore::WriteRemoval(Removal* r, const std::string& failure) {
  if (r->entries == 0) return Status::OK();
  const uint64_t new_used = used_bytes_ + r->used_bytes;
  const uint64_t new_keys = key_count_ + r->key_count;
  const uint64_t new_tombstones = tombstone_count_ + r->tombstone_count;
  r->batch.Put(meta_key_,
               MetaBytes(new_used, new_keys, local_counter_, new_tombstones, r->digest,
                         version_vector_, 0, static_cast<int64_t>(r->stale_dots.size())));
  rocksdb::Status rs = store_->Write(&r->batch);
  if (!rs.ok()) return FromRocksStatus(rs, failure);
  used_bytes_ = new_used;
  key_count_ = new_keys;
  tombstone_count_ = new_tombstones;
  digest_ = r->digest;
  stale_members_ += r->stale_dots.size();
  ListStaleDots(&r->stale_dots);
  store_->NoteFreeingWrite();
  r->batch.Clear();
  r->entries = 0;
  r->used_bytes = r->key_count = r->tombstone_count = 0;
  return Status::OK();
}

DatabaseStore::DatabaseStore(std::shared_ptr<Store> store, std::string path, std::string config_id,
                             uint64_t id, uint64_t limit_bytes)
    : store_(std::move(store)),
      path_(std::move(path)),
      config_id_(std::move(config_id)),
      id_(id),
      limit_bytes_(limit_bytes),
      data_prefix_(keys::DataPrefix(id)),
      meta_key_(keys::DatabaseMetaKey(id)),
      cache_(&store_->record_cache_budget()) {}

DatabaseStore::~DatabaseStore() {
  ForgetStaleDots(StaleListing::kLost);
}

Status DatabaseStore::CheckUsable() const {
  if (dropped_) {
    return Status::Unavailable("database " + Quote(path_) + " was dropped from this node");
  }
  if (store_->closed()) return ClosedError(path_);
  return Status::OK();
}

// A meta record written before replication has no version vector, digest or tombstone count:
// they load as empty and zero (the format is pre-release; such data is not carried over).
Status DatabaseStore::LoadMeta() {
  std::string bytes;
  rocksdb::Status rs = store_->db()->Get(rocksdb::ReadOptions(), meta_key_, &bytes);
  if (rs.IsNotFound()) {
    // A new copy writes under a new origin (see proto DatabaseMeta.origin).
    origin_ = RandomId();
    next_expiry_ = UINT64_MAX;           // nothing stored, so nothing to expire
    listing_ = StaleListing::kComplete;  // nothing stale
    return Status::OK();
  }
  if (!rs.ok()) return FromRocksStatus(rs, "cannot read metadata of database " + Quote(path_));
  proto::DatabaseMeta meta;
  if (!meta.ParseFromString(bytes)) {
    return Status::Corruption("metadata of database " + Quote(path_) + " is unreadable");
  }
  VersionVector version_vector;
  if (meta.has_version_vector() &&
      !VersionVector::Parse(meta.version_vector().SerializeAsString(), &version_vector)) {
    return Status::Corruption("version vector of database " + Quote(path_) + " is unreadable");
  }
  used_bytes_ = meta.used_bytes();
  key_count_ = meta.key_count();
  local_counter_ = meta.local_counter();
  origin_ = meta.origin() != 0 ? meta.origin() : store_->node_id();
  tombstone_count_ = meta.tombstone_count();
  digest_ = meta.digest();
  range_members_ = meta.range_members();
  stale_members_ = meta.stale_members();
  // The dots made stale before are not known; a sweep reading records finds them.
  listing_ = stale_members_ == 0 ? StaleListing::kComplete : StaleListing::kLost;
  version_vector_ = std::move(version_vector);
  return Status::OK();
}

// The meta fields, then the version vector appended as field 4: the wire format allows fields in
// any order, and this spares converting the vector into a message and serializing it twice.
std::string DatabaseStore::MetaBytes(uint64_t used_bytes, uint64_t key_count,
                                     uint64_t local_counter, uint64_t tombstone_count,
                                     uint64_t digest, const VersionVector& version_vector,
                                     int64_t new_range_members, int64_t new_stale_members) const {
  proto::DatabaseMeta meta;
  meta.set_used_bytes(used_bytes);
  meta.set_key_count(key_count);
  meta.set_local_counter(local_counter);
  meta.set_tombstone_count(tombstone_count);
  meta.set_digest(digest);
  meta.set_origin(origin_);
  meta.set_range_members(range_members_ + new_range_members);
  meta.set_stale_members(stale_members_ + new_stale_members);
  std::string out = meta.SerializeAsString();
  const std::string vector_bytes = version_vector.Serialize();
  out.push_back(kMetaVersionVectorTag);
  AppendVarint(vector_bytes.size(), &out);
  out += vector_bytes;
  return out;
}

Status DatabaseStore::ReadRecord(std::string_view key, bool* found, proto::Record* record) const {
  rocksdb::PinnableSlice bytes;
  rocksdb::DB* db = store_->db();
  std::string data_key = data_prefix_;
  data_key.append(key);
  rocksdb::Status rs = db->Get(rocksdb::ReadOptions(), db->DefaultColumnFamily(), data_key, &bytes);
  if (rs.IsNotFound()) {
    *found = false;
    return Status::OK();
  }
  if (!rs.ok()) {
    return FromRocksStatus(rs, "cannot read key " + Quote(key) + " of database " + Quote(path_));
  }
  if (!record->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Status::Corruption("record of key " + Quote(key) + " in database " + Quote(path_) +
                              " is unreadable");
  }
  *found = true;
  return Status::OK();
}

Status DatabaseStore::Touch(std::string_view key, Touched* touched, Pending** out) const {
  auto by_key = [](const Pending* p, std::string_view k) { return p->key < k; };
  auto at = std::lower_bound(touched->sorted.begin(), touched->sorted.end(), key, by_key);
  if (at != touched->sorted.end() && (*at)->key == key) {
    *out = *at;
    return Status::OK();
  }
  Pending& pending = touched->Add(key);
  if (const RecordSummary* summary = cache_.Find(key)) {
    pending.TakeBefore(*summary);
    ++records_not_read_;
  } else {
    bool found = false;
    Status s = ReadRecord(key, &found, &pending.before);
    if (!s.ok()) return s;
    if (found) {
      pending.NoteReadBefore();
      cache_.Put(key, pending.BeforeSummary());
    }
  }
  touched->sorted.insert(at, &pending);
  *out = &pending;
  return Status::OK();
}

// One MultiGet, keys sorted, for every key: RocksDB then probes each memtable and file once for
// the whole batch (and batches the filter and index lookups), where a Get per key searched them
// all again for every key. Keys above max_key_ are not read at all: no record of them exists (a
// bulk load of ascending keys reads nothing). Repeated keys are found by sorting (which the
// MultiGet and Stage need anyway), not by a hash map: a node and a hash per key.
Status DatabaseStore::TouchAll(const std::string* keys, size_t count, Touched* touched,
                               Pending** out) {
  // Callers start from an empty `touched`.
  if (count == 0) return Status::OK();
  // The operations in key order; the first operation of each key first among its equals.
  std::vector<size_t> by_key(count);
  for (size_t i = 0; i < count; ++i) by_key[i] = i;
  // Bulk writes mostly come sorted already.
  if (!std::is_sorted(keys, keys + count)) {
    std::stable_sort(by_key.begin(), by_key.end(),
                     [keys](size_t a, size_t b) { return keys[a] < keys[b]; });
  }
  // first[i]: the first operation with the key of operation i.
  std::vector<size_t> first(count);
  for (size_t j = 0; j < count;) {
    const size_t head = by_key[j];
    for (; j < count && keys[by_key[j]] == keys[head]; ++j) first[by_key[j]] = head;
  }
  // The states in first-touch order (the delta's order).
  std::vector<Pending*> state(count);
  for (size_t i = 0; i < count; ++i) {
    state[i] = first[i] == i ? &touched->Add(keys[i]) : state[first[i]];
  }
  if (out != nullptr) std::copy(state.begin(), state.end(), out);
  std::vector<Pending*>& order = touched->sorted;
  order.reserve(touched->size());
  for (size_t j = 0; j < count; ++j) {
    if (first[by_key[j]] == by_key[j]) order.push_back(state[by_key[j]]);
  }
  Status s = KnowMaxKey();
  if (!s.ok()) return s;
  // Keys above every stored key (a sorted tail) have no record stored.
  const size_t n = static_cast<size_t>(
      std::upper_bound(order.begin(), order.end(), max_key_,
                       [](const std::string& k, const Pending* p) { return k < p->key; }) -
      order.begin());
  // The keys whose records the cache knows are not read (storage/record_cache.hpp); `unread`
  // holds the others, still in key order.
  std::vector<Pending*> unread;
  unread.reserve(n);
  CacheLookahead finds(cache_, n, [&](size_t i) { return &order[i]->key; });
  for (size_t i = 0; i < n; ++i) {
    finds.Step(i);
    if (const RecordSummary* summary = cache_.Find(order[i]->key)) {
      order[i]->TakeBefore(*summary);
      ++records_not_read_;
    } else {
      unread.push_back(order[i]);
    }
  }
  const size_t reads = unread.size();
  if (reads == 0) return Status::OK();
  // The data keys side by side in one buffer (reserved, so the slices into it stay valid).
  size_t bytes = 0;
  for (const Pending* p : unread) bytes += data_prefix_.size() + p->key.size();
  std::string data_keys;
  data_keys.reserve(bytes);
  std::vector<rocksdb::Slice> slices(reads);
  for (size_t i = 0; i < reads; ++i) {
    const size_t at = data_keys.size();
    data_keys.append(data_prefix_).append(unread[i]->key);
    slices[i] = rocksdb::Slice(data_keys.data() + at, data_keys.size() - at);
  }
  std::vector<rocksdb::PinnableSlice> values(reads);
  std::vector<rocksdb::Status> statuses(reads);
  rocksdb::DB* db = store_->db();
  db->MultiGet(rocksdb::ReadOptions(), db->DefaultColumnFamily(), reads, slices.data(),
               values.data(), statuses.data(), /*sorted_input=*/true);
  // Only the records found are put (a new key's is put by Commit).
  CacheLookahead puts(cache_, reads,
                      [&](size_t i) { return statuses[i].ok() ? &unread[i]->key : nullptr; });
  for (size_t i = 0; i < reads; ++i) {
    puts.Step(i);
    Pending& p = *unread[i];
    if (statuses[i].IsNotFound()) continue;
    if (!statuses[i].ok()) {
      return FromRocksStatus(statuses[i],
                             "cannot read key " + Quote(p.key) + " of database " + Quote(path_));
    }
    // Merged into the emptied record (Reset): as a parse, keeping its Version message.
    google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(values[i].data()),
                                              static_cast<int>(values[i].size()));
    if (!p.before.MergeFromCodedStream(&in) || !in.ConsumedEntireMessage()) {
      return Status::Corruption("record of key " + Quote(p.key) + " in database " + Quote(path_) +
                                " is unreadable");
    }
    p.NoteReadBefore();
    cache_.Put(p.key, p.BeforeSummary());
  }
  return Status::OK();
}

// The last key of the data range, read once per handle; Commit keeps it from then on. Records
// are only ever added by Commit (Stage's batch), so a bound taken when the handle first needs it
// and raised with every key written stays at or above every stored key; removals (collection,
// expiry, stale repair) can only leave it higher than needed, which costs a read, never a miss.
Status DatabaseStore::KnowMaxKey() {
  if (max_key_known_) return Status::OK();
  const std::string end = keys::DataPrefixEnd(id_);
  rocksdb::Slice lower(data_prefix_);
  rocksdb::ReadOptions read_options;
  read_options.iterate_lower_bound = &lower;
  std::unique_ptr<rocksdb::Iterator> it(store_->db()->NewIterator(read_options));
  it->SeekForPrev(end);
  if (it->Valid() && it->key().starts_with(data_prefix_) && it->key().compare(end) < 0) {
    max_key_.assign(it->key().data() + data_prefix_.size(), it->key().size() - data_prefix_.size());
  } else if (!it->status().ok()) {
    return FromRocksStatus(it->status(), "cannot read database " + Quote(path_));
  } else {
    max_key_.clear();  // no record: every key is above it
  }
  max_key_known_ = true;
  return Status::OK();
}

// Per changed key: the record replaced (its dot index entry, its tombstone index entry, its
// share of the counters) goes, the new one comes in. Only the final record of a key is indexed,
// so a dot overwritten within the same write never reaches the index.
//
// The dot index (storage/keys.hpp): the records whose dot `vector_after`'s base covers are
// indexed by runs of consecutive counters, one "p" entry per run, and the dot of a record they
// replace is not deleted but counted stale (Record.dot_ranged says where a record's dot is): a
// bulk write of N keys adds N records and about one index entry, where one entry per dot added
// N more and deleted N more when overwriting. A dot the base covers can never be applied again
// (the base only grows), so no counter is ever a member of two ranges: the spans of two ranges
// never overlap, which DeltaSince's SeekForPrev relies on. A dot above a gap (an out-of-order
// delta entry) may be: the vector drops out-of-order counters beyond a bound, and a record
// since removed here would then be stored again; such dots go into the per-dot index "o", whose
// entries are deleted with their record as before format 2.
//
// The batch is built in key order (records by key, then index entries by dot): RocksDB inserts
// a batch into the memtable's skip list entry by entry, and an insert next to the previous one
// reuses its search path, where an insert elsewhere searches from the top. Interleaving each
// record with its index entries (three key ranges) made every insert a full search: most of
// the time of a batch. Every key of the batch is distinct (one record per key; a new dot is
// never an old one; a range's first counter is a new dot), so the order changes nothing else.
void DatabaseStore::Stage(Touched* touched, const VersionVector& vector_after,
                          Staged* staged) const {
  staged->digest = digest_;
  std::vector<Pending*>& changed = staged->records;
  changed.reserve(touched->sorted.size());
  for (Pending* p : touched->sorted) {
    if (p->changed) changed.push_back(p);
  }
  if (changed.empty()) return;
  staged->changed = true;
  staged->max_key = &changed.back()->key;

  // An index entry: its key sorts as (tag, expires, origin, counter) (big-endian fields;
  // expires is 0 for the dot and tombstone indexes, which do not hold it).
  struct IndexOp {
    char tag;
    uint64_t expires;
    uint64_t origin;
    uint64_t counter;
    /// The entry's value (the indexed key, or a DotRange), or null to delete the entry.
    const std::string* value;
  };
  std::vector<IndexOp> index;
  index.reserve(2 * changed.size() + 1);
  /// A record to index in a dot range.
  struct Member {
    uint64_t origin;
    uint64_t counter;
    const std::string* key;
  };
  std::vector<Member> members;
  members.reserve(changed.size());
  std::string data_key = data_prefix_;
  for (Pending* p : changed) {
    if (p->had) {
      const proto::Version& old = p->before.version();
      if (p->before.dot_ranged()) {
        staged->stale_dots.push_back({old.origin(), old.counter()});
      } else {
        index.push_back({'o', 0, old.origin(), old.counter(), nullptr});
      }
      if (p->before.tombstone()) {
        index.push_back({'t', 0, old.origin(), old.counter(), nullptr});
        --staged->tombstone_count;
      } else {
        staged->used_bytes -= static_cast<int64_t>(p->BeforeCost());
        --staged->key_count;
        staged->digest -= p->before_hash;
        if (p->before.expires() != 0) {
          index.push_back({'x', p->before.expires(), old.origin(), old.counter(), nullptr});
        }
      }
    }
    const proto::Version& now = p->after.version();
    const bool ranged = now.counter() <= vector_after.Base(now.origin());
    // Record.dot_ranged is appended to the record as sent (a field may come in any order in the
    // wire format): the stored bytes and the delta's share one serialization.
    p->after.clear_dot_ranged();
    data_key.resize(data_prefix_.size());
    data_key.append(p->key);
    p->after.SerializeToString(&p->after_bytes);  // into the capacity it kept
    p->wire_size = p->after_bytes.size();
    if (ranged) {
      p->after.set_dot_ranged(true);
      p->after_bytes.push_back(kRecordDotRangedTag);
      p->after_bytes.push_back(1);
    }
    staged->batch.Put(data_key, p->after_bytes);
    if (ranged) {
      members.push_back({now.origin(), now.counter(), &p->key});
    } else {
      index.push_back({'o', 0, now.origin(), now.counter(), &p->key});
    }
    if (p->after.tombstone()) {
      index.push_back({'t', 0, now.origin(), now.counter(), &p->key});
      ++staged->tombstone_count;
    } else {
      staged->used_bytes += static_cast<int64_t>(LiveCost(p->key, p->after));
      ++staged->key_count;
      p->after_hash = RecordHash(p->key, p->after);
      staged->digest += p->after_hash;
      if (p->after.expires() != 0) {
        index.push_back({'x', p->after.expires(), now.origin(), now.counter(), &p->key});
        staged->min_expires = std::min(staged->min_expires, p->after.expires());
      }
    }
  }
  // The runs of consecutive counters, each one DotRange written by hand (as protobuf would):
  // building Member messages would copy every key again.
  auto by_dot = [](const Member& a, const Member& b) {
    return std::tie(a.origin, a.counter) < std::tie(b.origin, b.counter);
  };
  if (!std::is_sorted(members.begin(), members.end(), by_dot)) {
    std::sort(members.begin(), members.end(), by_dot);
  }
  std::deque<std::string> ranges;  // a deque: the index ops point into it
  for (size_t i = 0; i < members.size();) {
    const Member& first = members[i];
    std::string& range = ranges.emplace_back();
    size_t n = 0;
    for (; i < members.size() && n < kMaxRangeMembers && members[i].origin == first.origin &&
           members[i].counter == first.counter + n;
         ++i, ++n) {
      const uint64_t offset = n;
      const std::string& key = *members[i].key;
      const size_t member_bytes =
          (offset == 0 ? 0 : 1 + VarintSize(offset)) + FieldSize(key.size());
      range.push_back(kRangeMembersTag);
      AppendVarint(member_bytes, &range);
      if (offset != 0) {
        range.push_back(kMemberOffsetTag);
        AppendVarint(offset, &range);
      }
      range.push_back(kMemberKeyTag);
      AppendVarint(key.size(), &range);
      range.append(key);
    }
    staged->range_members += static_cast<int64_t>(n);
    index.push_back({'p', 0, first.origin, first.counter, &range});
  }
  std::sort(index.begin(), index.end(), [](const IndexOp& a, const IndexOp& b) {
    return std::tie(a.tag, a.expires, a.origin, a.counter) <
           std::tie(b.tag, b.expires, b.origin, b.counter);
  });
  // Each index key built in one buffer, as keys::DotIndexKey, DotRangeKey, TombstoneIndexKey and
  // ExpiryIndexKey lay them out (a string per entry was an allocation per key written).
  const std::string database_prefix = keys::DatabasePrefix(id_);
  std::string key;
  key.reserve(keys::kExpiryIndexKeySize);
  for (const IndexOp& op : index) {
    key.assign(database_prefix);
    key.push_back(op.tag);
    if (op.tag == 'x') keys::AppendBigEndian64(op.expires, &key);
    keys::AppendBigEndian64(op.origin, &key);
    keys::AppendBigEndian64(op.counter, &key);
    if (op.value == nullptr) {
      staged->batch.Delete(key);
    } else {
      staged->batch.Put(key, *op.value);
    }
  }
}

Status DatabaseStore::Commit(Staged* staged, VersionVector&& version_vector,
                             uint64_t local_counter) {
  const uint64_t used_bytes = used_bytes_ + staged->used_bytes;
  const uint64_t key_count = key_count_ + staged->key_count;
  const uint64_t tombstone_count = tombstone_count_ + staged->tombstone_count;
  staged->batch.Put(meta_key_, MetaBytes(used_bytes, key_count, local_counter, tombstone_count,
                                         staged->digest, version_vector, staged->range_members,
                                         static_cast<int64_t>(staged->stale_dots.size())));
  rocksdb::Status rs = store_->Write(&staged->batch);
  if (!rs.ok()) return FromRocksStatus(rs, "cannot write to database " + Quote(path_));
  used_bytes_ = used_bytes;
  key_count_ = key_count;
  tombstone_count_ = tombstone_count;
  digest_ = staged->digest;
  range_members_ += staged->range_members;
  stale_members_ += staged->stale_dots.size();
  ListStaleDots(&staged->stale_dots);
  next_expiry_ = std::min(next_expiry_, staged->min_expires);
  if (max_key_known_ && staged->max_key != nullptr && *staged->max_key > max_key_) {
    max_key_ = *staged->max_key;
  }
  local_counter_ = local_counter;
  if (&version_vector != &version_vector_) version_vector_ = std::move(version_vector);
  // Before the observers: a write one of them makes to this database comes after this one.
  const std::vector<Pending*>& records = staged->records;
  CacheLookahead puts(cache_, records.size(), [&](size_t i) { return &records[i]->key; });
  for (size_t i = 0; i < records.size(); ++i) {
    puts.Step(i);
    cache_.Put(records[i]->key, records[i]->AfterSummary());
  }
  if (const auto& observe = store_->vector_observer()) observe(path_, version_vector_.Digest());
  if (observer_) observer_();
  return Status::OK();
}

uint64_t DatabaseStore::WallTicks() const {
  return store_->WallTicks();
}

Status DatabaseStore::Put(std::string_view key, std::string_view value, std::string* delta) {
  OpView op{WriteOp::Kind::kPut, key, value, 0};
  return Apply(&op, 1, delta);
}

Status DatabaseStore::Erase(std::string_view key, std::string* delta) {
  OpView op{WriteOp::Kind::kErase, key, {}, 0};
  return Apply(&op, 1, delta);
}

Status DatabaseStore::Write(const WriteBatch& batch, std::string* delta) {
  std::vector<OpView> ops;
  Status s = AddOps(batch, &ops);
  if (!s.ok()) return s;
  return Apply(ops.data(), ops.size(), delta);
}

Status DatabaseStore::WriteGroup(const WriteBatch* const* writes, size_t count,
                                 std::string* delta) {
  std::vector<OpView> ops;
  std::vector<size_t> ends;
  ends.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    Status s = AddOps(*writes[i], &ops);
    if (!s.ok()) return s;
    ends.push_back(ops.size());
  }
  return Apply(ops.data(), ops.size(), delta, ends.data(), ends.size());
}

Status DatabaseStore::AddOps(const WriteBatch& batch, std::vector<OpView>* ops) {
  // A single operation (what a put or an erase becomes in a group) is bounded by Apply's own
  // checks, which name the problem precisely (value_too_large against the node's maximum).
  if (batch.ops.size() > 1) {
    Status s = CheckBatchLimits(batch);
    if (!s.ok()) return s;
  }
  ops->reserve(ops->size() + batch.ops.size());
  size_t index = 0;
  for (const WriteOp& op : batch.ops) {
    // A batch from the network may carry any byte as its kind; only put and erase exist.
    if (op.kind != WriteOp::Kind::kPut && op.kind != WriteOp::Kind::kErase &&
        op.kind != WriteOp::Kind::kCheck) {
      return Status::InvalidArgument(
          "batch operation " + std::to_string(index) + " has the unknown kind " +
          std::to_string(static_cast<int>(op.kind)) + "; nothing was written");
    }
    ops->push_back({op.kind, op.key, op.value, op.ttl_ms});
    ++index;
  }
  return Status::OK();
}

// Validates every operation, builds the final record of each touched key with a fresh dot,
// computes the exact usage after all of them, checks the budget, and only then writes records,
// indexes and meta in one RocksDB batch: a failure at any step stores nothing.
Status DatabaseStore::Apply(const OpView* ops, size_t count, std::string* delta, const size_t* ends,
                            size_t segments) {
  Status s = CheckUsable();
  if (!s.ok()) return s;
  const size_t max_value = store_->options().max_value_bytes;
  Touched touched;
  std::string* keys = touched.Keys(count);
  for (size_t i = 0; i < count; ++i) {
    s = NormalizeKey(ops[i].key, &keys[i]);
    if (!s.ok()) {
      return Status(s.code(),
                    s.message() + ": " + Quote(ops[i].key) + " (database " + Quote(path_) + ")");
    }
    if (ops[i].kind == WriteOp::Kind::kPut && ops[i].value.size() > max_value) {
      return Status::ValueTooLarge("value for key " + Quote(keys[i]) + " in database " +
                                   Quote(path_) + " is " + FormatSize(ops[i].value.size()) +
                                   "; the maximum value size is " + FormatSize(max_value));
    }
    if (ops[i].kind == WriteOp::Kind::kPut && ops[i].ttl_ms > kMaxTtlMs) {
      return Status::InvalidArgument("ttl for key " + Quote(keys[i]) + " is " +
                                     std::to_string(ops[i].ttl_ms) + " ms; the maximum is " +
                                     std::to_string(kMaxTtlMs) + " ms. Nothing was written");
    }
    if (ops[i].kind == WriteOp::Kind::kCheck && !ops[i].value.empty() &&
        !WellFormedToken(ops[i].value)) {
      return Status::InvalidArgument("the version expected for key " + Quote(keys[i]) + ", " +
                                     Quote(ops[i].value) +
                                     ", is not a version token (as get --version prints "
                                     "them). Nothing was written");
    }
  }

  // Low on disk space: writes that add data are refused; deletes go on (they are what frees it).
  bool adds_data = false;
  for (size_t i = 0; i < count; ++i) adds_data = adds_data || ops[i].kind == WriteOp::Kind::kPut;
  if (adds_data) {
    s = store_->CheckRoomForData();
    if (!s.ok()) return s;
  }

  // Every assigned counter is added to the vector, even when a later operation of the batch
  // overwrites its record, so this node's base stays contiguous. A counter the vector already
  // covers (this node's own writes to an earlier incarnation of the database, learnt back from
  // a peer) is never reused: peers would take the new write for one they have.
  const uint64_t node = origin_;
  const uint64_t first_counter = local_counter_;
  VersionVector version_vector = version_vector_;
  uint64_t counter = local_counter_;
  // The counters this write assigns are (local_counter_, counter] unless one had to be skipped.
  bool one_run = true;
  // The pending state of each operation's key.
  std::vector<Pending*> pending(count);
  s = TouchAll(keys, count, &touched, pending.data());
  if (!s.ok()) return s;
  // Checks and expiry are judged at one moment for the whole write.
  const uint64_t now = store_->WallTicks();
  // The write's timestamps, taken at once (Store::NextTimestamps) and given out in the order of
  // its operations: one read of the clock and one update of what the node's databases share per
  // write, not per key.
  size_t timestamps_left = 0;
  for (size_t i = 0; i < count; ++i) timestamps_left += ops[i].kind != WriteOp::Kind::kCheck;
  uint64_t next_hlc = timestamps_left > 0 ? store_->NextTimestamps(timestamps_left, 0) : 0;
  // Group commit (WriteGroup): the size rule is applied to each write of the group as it would
  // be alone, from the usage the earlier ones leave: LiveCost of what each operation replaces and
  // of what it stores, summed as Stage sums them for the whole batch.
  int64_t usage = 0;
  int64_t segment_start_usage = 0;
  size_t segment = 0;
  for (size_t i = 0; i < count; ++i) {
    Pending* p = pending[i];
    if (ops[i].kind == WriteOp::Kind::kCheck) {
      s = CheckCondition(*p, ops[i].value, now);
      if (!s.ok()) return s;
    } else {
      const bool is_put = ops[i].kind == WriteOp::Kind::kPut;
      // An erase always writes a new tombstone, even over a tombstone: another replica may hold
      // a put this one has not seen yet, and only a newer tombstone overrides it there. (Found by
      // the chaos check: an acknowledged delete lost to an earlier put.)
      // The new record must win against the one it replaces on every replica, even if this
      // node's clock has gone back since that one was written (the clock is not persisted): if
      // the timestamp next in turn is not above it, the rest are taken again above it.
      if (p->exists()) {
        usage -= static_cast<int64_t>(p->CurrentCost());
        const uint64_t replaced = p->current().version().hlc();
        if (next_hlc <= replaced) next_hlc = store_->NextTimestamps(timestamps_left, replaced);
      }
      // Built in place (what it replaces was used above): `after` keeps its buffers from the
      // pool's earlier writes.
      proto::Record& record = p->after;
      ResetRecord(&record);
      if (is_put) {
        record.set_value(ops[i].value.data(), ops[i].value.size());
      } else {
        record.set_tombstone(true);
      }
      ++counter;
      while (version_vector.Covers({node, counter})) {
        ++counter;
        one_run = false;
      }
      proto::Version* version = record.mutable_version();
      version->set_origin(node);
      version->set_counter(counter);
      version->set_hlc(next_hlc++);
      --timestamps_left;
      if (is_put && ops[i].ttl_ms != 0) {
        record.set_expires(version->hlc() + (ops[i].ttl_ms << hlc::kSubMsBits));
      }
      if (is_put) usage += static_cast<int64_t>(LiveCost(p->key, record));
      version_vector.Add({node, counter});
      p->changed = true;
    }
    for (; segment < segments && ends[segment] <= i + 1; ++segment) {
      if (usage > segment_start_usage &&
          static_cast<int64_t>(used_bytes_) + usage > static_cast<int64_t>(limit_bytes_)) {
        return Status::SizeLimitExceeded("database " + Quote(path_) + " is limited to " +
                                         FormatSize(limit_bytes_) +
                                         "; a write of the group would take it over");
      }
      segment_start_usage = usage;
    }
  }

  Staged staged;
  Stage(&touched, version_vector, &staged);
  if (!staged.changed) return Status::OK();
  // A group was checked write by write above; its total alone says nothing about them.
  if (segments == 0 && staged.used_bytes > 0 && used_bytes_ + staged.used_bytes > limit_bytes_) {
    return Status::SizeLimitExceeded(
        "database " + Quote(path_) + " is limited to " + FormatSize(limit_bytes_) + " and holds " +
        FormatSize(used_bytes_) + "; this write needs " +
        FormatSize(static_cast<uint64_t>(staged.used_bytes)) + " more. Nothing was written");
  }
  const uint64_t written = staged.batch.GetDataSize();
  s = Commit(&staged, std::move(version_vector), counter);
  if (!s.ok()) return s;
  if (adds_data) {
    store_->NoteDataWritten(written);
  } else {
    store_->NoteFreeingWrite();
  }
  // The delta is written from the records already serialized for the batch, with the framing
  // of proto::Delta.entries (field 1) and DeltaEntry.key (1) and .record (2): building and
  // serializing DeltaEntry messages would copy every value twice more.
  if (delta != nullptr) {
    uint64_t entries = 0;
    for (size_t i = 0; i < touched.size(); ++i) {
      const Pending& p = touched[i];
      if (!p.changed) continue;
      ++entries;
      const size_t entry_bytes = FieldSize(p.key.size()) + FieldSize(p.wire_size);
      delta->push_back(kDeltaEntriesTag);
      AppendVarint(entry_bytes, delta);
      delta->push_back(kEntryKeyTag);
      AppendVarint(p.key.size(), delta);
      delta->append(p.key);
      delta->push_back(kEntryRecordTag);
      AppendVarint(p.wire_size, delta);
      delta->append(p.after_bytes, 0, p.wire_size);
    }
    // A counter whose record a later operation of this write replaced (the same key twice in
    // a batch or a group commit) is in no entry. A receiver would hold it as a gap, and every
    // later dot of this origin as an out-of-order extra, until anti-entropy's next range closed
    // it: up to VersionVector::kMaxExtrasPerOrigin of them, copied, serialized into the meta
    // record and digested with every delta it applied (most of a replica's time under load,
    // where such a write comes every second or two). So the delta claims the write's counters
    // as a range (proto CoveredRange): each is in an entry or was replaced by a newer write of
    // the same key that is. Not when a covered counter was skipped: that one's record is not here.
    if (one_run && entries < counter - first_counter) {
      proto::Delta claim;
      proto::CoveredRange* range = claim.add_ranges();
      range->set_origin(node);
      range->set_after(first_counter);
      range->set_through(counter);
      delta->append(claim.SerializeAsString());  // concatenated: merged into the same Delta
    }
  }
  return Status::OK();
}

Status DatabaseStore::CheckCondition(const Pending& p, std::string_view expected,
                                     uint64_t now) const {
  const bool present = p.exists() && Present(p.current(), now);
  const std::string where = "key " + Quote(p.key) + " of database " + Quote(path_);
  if (expected.empty()) {
    if (!present) return Status::OK();
    return Status::ConditionFailed(where + " exists (version " +
                                   VersionToken(p.current().version()) +
                                   ") but had to be absent; nothing was written");
  }
  if (!present) {
    return Status::ConditionFailed(where + " is absent but had to have version " +
                                   std::string(expected) + "; nothing was written");
  }
  const std::string actual = VersionToken(p.current().version());
  if (actual == expected) return Status::OK();
  return Status::ConditionFailed(where + " has version " + actual + ", not " +
                                 std::string(expected) + "; nothing was written");
}

// The index range [prefix, prefix + (now + 1)) holds exactly the records expired by `now`. Each
// one still current (same dot, still live) becomes a tombstone of the same version; see the
// header for why. Each RocksDB write handles at most kCollectBatch entries, with the meta record.
Status DatabaseStore::CollectExpired(uint64_t now, size_t limit, uint64_t* removed) {
  if (removed != nullptr) *removed = 0;
  Status s = CheckUsable();
  if (!s.ok()) return s;
  rocksdb::DB* db = store_->db();
  if (next_expiry_ > now) return Status::OK();  // nothing due: no read at all
  // The whole index, not just up to `now`: the first entry not yet due is the next expiry.
  const std::string begin = keys::ExpiryIndexPrefix(id_);
  const std::string end = keys::PrefixSuccessor(begin);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options));
  Removal r(digest_);
  size_t seen = 0;
  uint64_t total = 0;
  uint64_t batch_removed = 0;
  auto flush = [&]() -> Status {
    Status written = WriteRemoval(&r, "cannot remove expired keys of database " + Quote(path_));
    if (written.ok()) total += batch_removed;
    batch_removed = 0;
    return written;
  };
  // Unless the limit stops the scan first, what it ends on is the next expiry.
  uint64_t next_expiry = UINT64_MAX;
  for (it->Seek(begin); it->Valid(); it->Next(), ++seen) {
    const rocksdb::Slice index_key = it->key();
    if (index_key.size() != keys::kExpiryIndexKeySize) {
      return Status::Corruption("expiry index of database " + Quote(path_) +
                                " holds a malformed key");
    }
    const uint64_t expires = keys::DecodeBigEndian64(index_key.data() + 10);
    if (expires > now) {
      next_expiry = expires;
      break;
    }
    if (seen >= limit) {
      next_expiry = expires;  // a backlog: still due
      break;
    }
    const uint64_t origin = keys::DecodeBigEndian64(index_key.data() + 18);
    const uint64_t counter = keys::DecodeBigEndian64(index_key.data() + 26);
    const std::string key(it->value().data(), it->value().size());
    proto::Record record;
    bool found = false;
    s = ReadRecord(key, &found, &record);
    if (!s.ok()) return s;
    r.batch.Delete(index_key);
    ++r.entries;
    const bool current = found && !record.tombstone() && record.expires() == expires &&
                         record.version().origin() == origin &&
                         record.version().counter() == counter;
    // A stale entry (the record was since replaced) only loses its index entry.
    if (current) {
      r.used_bytes -= static_cast<int64_t>(LiveCost(key, record));
      --r.key_count;
      ++r.tombstone_count;
      r.digest -= RecordHash(key, record);
      proto::Record tombstone;
      tombstone.set_tombstone(true);
      *tombstone.mutable_version() = record.version();
      tombstone.set_dot_ranged(record.dot_ranged());  // same dot, same index entry
      r.batch.Put(data_prefix_ + key, tombstone.SerializeAsString());
      cache_.Erase(key);
      r.batch.Put(keys::TombstoneIndexKey(id_, origin, counter), key);
      ++batch_removed;
    }
    if (r.entries >= kCollectBatch) {
      s = flush();
      if (!s.ok()) return s;
      if (removed != nullptr) *removed = total;
    }
  }
  if (!it->status().ok()) {
    return FromRocksStatus(it->status(), "cannot read expiry index of database " + Quote(path_));
  }
  s = flush();
  if (removed != nullptr) *removed = total;
  if (s.ok()) next_expiry_ = next_expiry;
  return s;
}

// Everything is validated before anything is looked up, so a bad entry anywhere rejects the
// whole delta. Entries are then resolved in order against the stored record or the record an
// earlier entry of the same delta left, and the result is written in one batch.
Status DatabaseStore::ApplyDelta(std::string_view bytes, ApplyResult* result) {
  Status s = CheckUsable();
  if (!s.ok()) return s;
  const std::string where = " (delta for database " + Quote(path_) + "; nothing was applied)";
  proto::Delta delta;
  if (bytes.size() > static_cast<size_t>(INT_MAX) ||
      !delta.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Status::InvalidArgument("unparsable delta of " + FormatSize(bytes.size()) + where);
  }
  const size_t max_value = store_->options().max_value_bytes;
  std::string normal;
  for (int i = 0; i < delta.entries_size(); ++i) {
    const proto::DeltaEntry& entry = delta.entries(i);
    // Named in an error only: not made for every entry of every delta.
    auto prefix = [i] { return "entry " + std::to_string(i) + " "; };
    if (!entry.has_record() || !entry.record().has_version()) {
      return Status::InvalidArgument(prefix() + "has no version" + where);
    }
    const proto::Version& version = entry.record().version();
    if (version.origin() == 0 || version.counter() == 0) {
      return Status::InvalidArgument(prefix() + "has origin " + std::to_string(version.origin()) +
                                     " and counter " + std::to_string(version.counter()) +
                                     "; both must be positive" + where);
    }
    if (version.hlc() >= hlc::kMaxTimestamp) {
      return Status::InvalidArgument(
          prefix() + "has the timestamp " + std::to_string(version.hlc()) +
          ", past any clock's (at most " + std::to_string(hlc::kMaxTimestamp - 1) + ")" + where);
    }
    s = NormalizeKey(entry.key(), &normal);
    if (!s.ok()) {
      return Status::InvalidArgument(prefix() + "has an invalid key " + Quote(entry.key()) + ": " +
                                     s.message() + where);
    }
    if (normal != entry.key()) {
      return Status::InvalidArgument(prefix() + "has the key " + Quote(entry.key()) +
                                     ", which is not normalised (" + Quote(normal) + ")" + where);
    }
    const std::string& value = entry.record().value();
    if (entry.record().tombstone() && !value.empty()) {
      return Status::InvalidArgument(prefix() + "is a tombstone with a value" + where);
    }
    if (value.size() > max_value) {
      return Status::InvalidArgument(prefix() + "has a value of " + FormatSize(value.size()) +
                                     "; the maximum value size is " + FormatSize(max_value) +
                                     where);
    }
  }
  for (int i = 0; i < delta.ranges_size(); ++i) {
    const proto::CoveredRange& range = delta.ranges(i);
    if (range.origin() == 0 || range.through() < range.after()) {
      return Status::InvalidArgument("range " + std::to_string(i) + " (origin " +
                                     std::to_string(range.origin()) + ", after " +
                                     std::to_string(range.after()) + ", through " +
                                     std::to_string(range.through()) + ") is invalid" + where);
    }
  }

  for (int i = 0; i < delta.retired_size(); ++i) {
    const proto::RetiredOrigin& retired = delta.retired(i);
    if (retired.origin() == 0 || retired.last_counter() == 0) {
      return Status::InvalidArgument(
          "retired origin " + std::to_string(i) + " (origin " + std::to_string(retired.origin()) +
          ", last counter " + std::to_string(retired.last_counter()) + ") is invalid" + where);
    }
  }

  // A replica low on disk space takes deletes but not new values: the sender keeps them and
  // anti-entropy brings them once space is back (nothing acknowledged is lost; a write waiting
  // for this replica's acknowledgement fails or waits for others).
  for (const proto::DeltaEntry& entry : delta.entries()) {
    const proto::Version& version = entry.record().version();
    if (!entry.record().tombstone() &&
        !version_vector_.Covers({version.origin(), version.counter()})) {
      s = store_->CheckRoomForData();
      if (!s.ok()) return Status(s.code(), s.message() + where);
      break;
    }
  }

  ApplyResult counts;
  VersionVector version_vector = version_vector_;
  Touched touched;
  {
    // The entries not seen yet will be resolved against their stored records: read them at once.
    std::vector<std::string> unseen;
    unseen.reserve(delta.entries_size());
    // The timestamps received (the hybrid logical clock's receive rule), once for the delta:
    // later local writes order after every one.
    uint64_t newest = 0;
    for (const proto::DeltaEntry& entry : delta.entries()) {
      const proto::Version& version = entry.record().version();
      newest = std::max(newest, version.hlc());
      if (!version_vector.Covers({version.origin(), version.counter()})) {
        unseen.push_back(entry.key());
      }
    }
    store_->ObserveTimestamp(newest);
    s = TouchAll(unseen.data(), unseen.size(), &touched);
    if (!s.ok()) return s;
  }
  for (proto::DeltaEntry& entry : *delta.mutable_entries()) {
    const proto::Version& version = entry.record().version();
    const Dot dot{version.origin(), version.counter()};
    if (version_vector.Covers(dot)) {
      ++counts.skipped;
      continue;
    }
    version_vector.Add(dot);
    Pending* p = nullptr;
    s = Touch(entry.key(), &touched, &p);
    if (!s.ok()) return s;
    if (p->exists() && !Newer(version, p->current().version())) {
      ++counts.skipped;
      continue;
    }
    p->after = std::move(*entry.mutable_record());
    p->changed = true;
    ++counts.applied;
  }
  for (const proto::CoveredRange& range : delta.ranges()) {
    version_vector.AddRange(range.origin(), range.after(), range.through());
  }
  for (const proto::RetiredOrigin& retired : delta.retired()) {
    version_vector.Retire(retired.origin(), retired.last_counter());
  }

  Staged staged;
  Stage(&touched, version_vector, &staged);
  if (staged.changed || version_vector != version_vector_) {
    const uint64_t written = staged.batch.GetDataSize();
    s = Commit(&staged, std::move(version_vector), local_counter_);
    if (!s.ok()) return s;
    store_->NoteDataWritten(written);
  }
  if (result != nullptr) *result = counts;
  return Status::OK();
}

// Walks the dot index of each origin from the first counter `remote` lacks; the index holds only
// current records, so superseded writes cost nothing, and the coverage range tells the peer it
// need not wait for them. Two ordered streams are merged in counter order: the per-dot entries
// ("o") from that counter, and the ranges ("p") from the last one starting at or below it (it
// may hold later members; the spans of two ranges never overlap, see Stage, so no earlier range
// does). A member or entry is served only if its key's record still has exactly its dot (a range
// keeps the dots of replaced records, stale; so may an "o" entry, in damaged data).
Status DatabaseStore::DeltaSince(const VersionVector& remote, size_t max_bytes, std::string* out,
                                 bool* more, const std::set<uint64_t>* only) const {
  Status s = CheckUsable();
  if (!s.ok()) return s;
  *more = false;
  proto::Delta delta;
  size_t bytes = 0;
  rocksdb::DB* db = store_->db();
  const auto corrupt = [this](const char* what) {
    return Status::Corruption(std::string(what) + " of database " + Quote(path_) +
                              " holds a malformed entry");
  };
  for (uint64_t origin : version_vector_.Origins()) {
    if (only != nullptr && only->count(origin) == 0) continue;
    const uint64_t from = remote.Base(origin);
    const uint64_t base = version_vector_.Base(origin);
    // Nothing here above what the peer covers (the index holds only applied dots): no seek.
    // Spares one per retired origin the peer shares.
    if (from >= version_vector_.Highest(origin)) continue;
    // How far the coverage claim for this origin reaches: the local base, or just below the
    // first entry left out.
    uint64_t claim = base;
    bool stopped = false;
    if (from < UINT64_MAX) {
      const std::string dot_end = keys::PrefixSuccessor(keys::DotIndexPrefix(id_, origin));
      rocksdb::Slice dot_upper(dot_end);
      rocksdb::ReadOptions dot_options;
      dot_options.iterate_upper_bound = &dot_upper;
      std::unique_ptr<rocksdb::Iterator> dots(db->NewIterator(dot_options));
      dots->Seek(keys::DotIndexKey(id_, origin, from + 1));

      const std::string range_begin = keys::DotRangePrefix(id_, origin);
      const std::string range_end = keys::PrefixSuccessor(range_begin);
      rocksdb::Slice range_lower(range_begin);
      rocksdb::Slice range_upper(range_end);
      rocksdb::ReadOptions range_options;
      range_options.iterate_lower_bound = &range_lower;
      range_options.iterate_upper_bound = &range_upper;
      std::unique_ptr<rocksdb::Iterator> ranges(db->NewIterator(range_options));
      ranges->SeekForPrev(keys::DotRangeKey(id_, origin, from + 1));
      if (!ranges->Valid() && ranges->status().ok()) ranges->Seek(range_begin);
      proto::DotRange range;  // the range being read (members from `member` on)
      int member = 0;
      uint64_t range_first = 0;
      uint64_t member_counter = 0;
      // Moves to the next member above `from`, loading ranges as needed; at the end, `member`
      // is past the last one.
      auto settle = [&]() -> Status {
        for (;;) {
          if (member < range.members_size()) {
            member_counter = range_first + range.members(member).offset();
            if (member_counter > from) return Status::OK();
            ++member;
            continue;
          }
          if (!ranges->Valid()) return Status::OK();
          const rocksdb::Slice range_key = ranges->key();
          if (range_key.size() != keys::kIndexKeySize ||
              !range.ParseFromArray(ranges->value().data(),
                                    static_cast<int>(ranges->value().size()))) {
            return corrupt("dot range index");
          }
          for (int i = 1; i < range.members_size(); ++i) {
            if (range.members(i).offset() <= range.members(i - 1).offset()) {
              return corrupt("dot range index");
            }
          }
          range_first = keys::DecodeBigEndian64(range_key.data() + 18);
          member = 0;
          ranges->Next();
        }
      };
      for (;;) {
        s = settle();
        if (!s.ok()) return s;
        const bool have_member = member < range.members_size();
        uint64_t dot_counter = 0;
        if (dots->Valid()) {
          if (dots->key().size() != keys::kIndexKeySize) return corrupt("dot index");
          dot_counter = keys::DecodeBigEndian64(dots->key().data() + 18);
        }
        if (!have_member && !dots->Valid()) break;
        const bool from_range = have_member && (!dots->Valid() || member_counter <= dot_counter);
        // Both streams name the same dot only in damaged data: served once.
        const bool both = from_range && dots->Valid() && member_counter == dot_counter;
        const uint64_t counter = from_range ? member_counter : dot_counter;
        const std::string_view key =
            from_range ? std::string_view(range.members(member).key())
                       : std::string_view(dots->value().data(), dots->value().size());
        bool take = !remote.Covers({origin, counter});
        proto::DeltaEntry entry;
        if (take) {
          bool found = false;
          s = ReadRecord(key, &found, entry.mutable_record());
          if (!s.ok()) return s;
          const proto::Version& version = entry.record().version();
          take = found && version.origin() == origin && version.counter() == counter;
        }
        if (take) {
          entry.mutable_record()->clear_dot_ranged();  // this replica's own, not sent
          entry.set_key(key.data(), key.size());
          const size_t entry_bytes = FieldSize(entry.ByteSizeLong());
          if (delta.entries_size() > 0 && bytes + entry_bytes > max_bytes) {
            stopped = true;
            claim = std::min(base, counter - 1);
            break;
          }
          *delta.add_entries() = std::move(entry);
          bytes += entry_bytes;
        }
        if (from_range) ++member;
        if (!from_range || both) dots->Next();
      }
      if (!dots->status().ok()) {
        return FromRocksStatus(dots->status(), "cannot read dot index of database " + Quote(path_));
      }
      if (!ranges->status().ok()) {
        return FromRocksStatus(ranges->status(),
                               "cannot read dot range index of database " + Quote(path_));
      }
    }
    if (claim > from) {
      proto::CoveredRange* range = delta.add_ranges();
      range->set_origin(origin);
      range->set_after(from);
      range->set_through(claim);
      bytes += FieldSize(range->ByteSizeLong());
    }
    if (stopped) {
      *more = true;
      break;
    }
  }
  out->append(delta.SerializeAsString());
  return Status::OK();
}

// Per origin, the tombstone index entries up to stable's base are exactly the candidates. Each
// RocksDB write removes at most kCollectBatch of them, with the meta record, so memory stays
// bounded; a failure part-way leaves a consistent state with some tombstones collected.
Status DatabaseStore::CollectTombstones(const VersionVector& stable, uint64_t max_hlc,
                                        uint64_t* collected) {
  if (collected != nullptr) *collected = 0;
  Status s = CheckUsable();
  if (!s.ok()) return s;
  rocksdb::DB* db = store_->db();
  rocksdb::WriteBatch batch;
  size_t batch_entries = 0;
  uint64_t batch_collected = 0;
  std::vector<Dot> batch_stale;  // the dots of range members it makes stale
  uint64_t total = 0;
  auto flush = [&]() -> Status {
    if (batch_entries == 0) return Status::OK();
    const uint64_t tombstone_count = tombstone_count_ - batch_collected;
    batch.Put(meta_key_,
              MetaBytes(used_bytes_, key_count_, local_counter_, tombstone_count, digest_,
                        version_vector_, 0, static_cast<int64_t>(batch_stale.size())));
    rocksdb::Status rs = store_->Write(&batch);
    if (!rs.ok()) {
      return FromRocksStatus(rs, "cannot collect tombstones of database " + Quote(path_));
    }
    tombstone_count_ = tombstone_count;
    stale_members_ += batch_stale.size();
    ListStaleDots(&batch_stale);
    total += batch_collected;
    store_->NoteFreeingWrite();
    batch.Clear();
    batch_entries = 0;
    batch_collected = 0;
    return Status::OK();
  };
  for (uint64_t origin : stable.Origins()) {
    const uint64_t through = stable.Base(origin);
    if (through == 0) continue;
    const std::string begin = keys::TombstoneIndexPrefix(id_, origin);
    const std::string end = through == UINT64_MAX
                                ? keys::PrefixSuccessor(begin)
                                : keys::TombstoneIndexKey(id_, origin, through + 1);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions read_options;
    read_options.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options));
    for (it->Seek(begin); it->Valid(); it->Next()) {
      const rocksdb::Slice index_key = it->key();
      if (index_key.size() != keys::kIndexKeySize) {
        return Status::Corruption("tombstone index of database " + Quote(path_) +
                                  " holds a malformed key");
      }
      const uint64_t counter = keys::DecodeBigEndian64(index_key.data() + 18);
      const std::string_view key(it->value().data(), it->value().size());
      proto::Record record;
      bool found = false;
      s = ReadRecord(key, &found, &record);
      if (!s.ok()) return s;
      const bool current = found && record.tombstone() && record.version().origin() == origin &&
                           record.version().counter() == counter;
      if (current && record.version().hlc() > max_hlc) continue;  // within its grace period
      batch.Delete(index_key);
      ++batch_entries;
      // A stale entry (the tombstone was since replaced) only loses its index entry.
      if (current) {
        batch.Delete(data_prefix_ + std::string(key));
        cache_.Erase(key);
        // A dot in a range stays there, stale (see Stage).
        if (record.dot_ranged()) {
          batch_stale.push_back({origin, counter});
        } else {
          batch.Delete(keys::DotIndexKey(id_, origin, counter));
        }
        ++batch_collected;
      }
      if (batch_entries >= kCollectBatch) {
        s = flush();
        if (!s.ok()) return s;
        if (collected != nullptr) *collected = total;
      }
    }
    if (!it->status().ok()) {
      return FromRocksStatus(it->status(),
                             "cannot read tombstone index of database " + Quote(path_));
    }
  }
  s = flush();
  if (collected != nullptr) *collected = total;
  return s;
}

// The writes of one SweepDotRanges call: each RocksDB write covers at most kCollectBatch members
// examined, with the meta record.
struct DatabaseStore::SweepWrites {
  explicit SweepWrites(uint64_t* report) : report(report) {
    if (report != nullptr) *report = 0;
  }
  rocksdb::WriteBatch batch;
  /// Members examined and removed in `batch`.
  size_t members = 0;
  uint64_t removed = 0;
  /// Members examined by the call, and removed by its writes so far (also into *report).
  size_t examined = 0;
  uint64_t total = 0;
  uint64_t* report;
};

Status DatabaseStore::ParseRangeEntry(std::string_view key, std::string_view value,
                                      proto::DotRange* range, uint64_t* origin,
                                      uint64_t* first) const {
  if (key.size() != keys::kIndexKeySize ||
      !range->ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return Status::Corruption("dot range index of database " + Quote(path_) +
                              " holds a malformed entry");
  }
  *origin = keys::DecodeBigEndian64(key.data() + 10);
  *first = keys::DecodeBigEndian64(key.data() + 18);
  return Status::OK();
}

Status DatabaseStore::SweepRange(std::string_view range_key, size_t members,
                                 const proto::DotRange& kept, SweepWrites* w) {
  const size_t dead = members - static_cast<size_t>(kept.members_size());
  if (dead > 0) {
    const rocksdb::Slice key(range_key.data(), range_key.size());
    if (kept.members_size() == 0) {
      w->batch.Delete(key);
    } else {
      w->batch.Put(key, kept.SerializeAsString());
    }
  }
  w->examined += members;
  w->members += members;
  w->removed += dead;
  return w->members >= kCollectBatch ? WriteSweep(w) : Status::OK();
}

Status DatabaseStore::WriteSweep(SweepWrites* w) {
  if (w->removed > 0) {
    // The counters are exact, but never let a count go below zero.
    const int64_t stale_drop = static_cast<int64_t>(std::min(w->removed, stale_members_));
    const int64_t member_drop = static_cast<int64_t>(std::min(w->removed, range_members_));
    w->batch.Put(meta_key_, MetaBytes(used_bytes_, key_count_, local_counter_, tombstone_count_,
                                      digest_, version_vector_, -member_drop, -stale_drop));
    rocksdb::Status rs = store_->Write(&w->batch);
    if (!rs.ok()) {
      // The pass goes on past the ranges this write left stale: the list no longer has them all.
      ForgetStaleDots(StaleListing::kLost);
      return FromRocksStatus(rs, "cannot sweep the dot ranges of database " + Quote(path_));
    }
    range_members_ -= member_drop;
    stale_members_ -= stale_drop;
    store_->NoteFreeingWrite();
  }
  w->total += w->removed;
  if (w->report != nullptr) *w->report = w->total;
  w->batch.Clear();
  w->members = 0;
  w->removed = 0;
  return Status::OK();
}

void DatabaseStore::ListStaleDots(std::vector<Dot>* dots) noexcept {
  if (!dots->empty() && listing_ != StaleListing::kLost) {
    if (dots->size() <=
            max_listed_stale_dots_ - std::min(max_listed_stale_dots_, listed_stale_dots()) &&
        store_->ReserveListedStaleDots(dots->size())) {
      // No exception from here: a write listing its dots has committed (its counters must follow
      // it). A list that cannot grow is lost instead; the next pass reads records.
      try {
        stale_dots_.insert(stale_dots_.end(), dots->begin(), dots->end());
      } catch (const std::bad_alloc&) {
        store_->ReleaseListedStaleDots(dots->size());
        ForgetStaleDots(StaleListing::kLost);
      }
    } else {
      // Too many to keep: the next pass reads records instead (and lists anew meanwhile).
      ForgetStaleDots(StaleListing::kLost);
    }
  }
  dots->clear();
}

void DatabaseStore::ForgetStaleDots(StaleListing listing) {
  store_->ReleaseListedStaleDots(listed_stale_dots());
  std::vector<Dot>().swap(stale_dots_);
  std::vector<Dot>().swap(sweep_dots_);
  sweep_dot_next_ = 0;
  listing_ = listing;
}

Status DatabaseStore::SweepDotRanges(size_t max_members, uint64_t* removed, bool* more) {
  if (removed != nullptr) *removed = 0;
  if (more != nullptr) *more = false;
  Status s = CheckUsable();
  if (!s.ok()) return s;
  // A pass stopped by an error may have moved past members it had not removed yet: the next pass
  // starts over from the first range, reading records (which finds every stale member).
  auto finish = [this](Status status) {
    if (!status.ok()) {
      ForgetStaleDots(StaleListing::kLost);
      sweep_from_.clear();
      sweep_pass_removed_ = 0;
    }
    return status;
  };
  if (listing_ == StaleListing::kComplete) {
    if (sweep_dots_.empty()) {
      // A new listed pass: the dots listed so far, in range order.
      sweep_dots_.swap(stale_dots_);
      sweep_dot_next_ = 0;
      SortDots(&sweep_dots_);
    }
    if (!sweep_dots_.empty()) {
      const size_t budget =
          max_members > SIZE_MAX / kListedSweepFactor ? SIZE_MAX : max_members * kListedSweepFactor;
      return finish(SweepListedDots(budget, removed, more));
    }
    if (stale_members_ == 0) return Status::OK();
    // Members counted stale while none is listed: the count is wrong (it is never meant to be).
    // The pass reading records removes what is stale, and corrects the count if nothing is.
    ForgetStaleDots(StaleListing::kLost);
  }
  return finish(SweepByRecords(max_members, removed, more));
}

// The range holding a dot is the one with the greatest key at or below it, if it is of the dot's
// origin and has a member at its offset (ranges never overlap, see Stage). A listed dot is stale
// for good: its record was replaced by a write committed here, and a dot once replaced never
// becomes current again (the base covers it), so each member found goes without a record read.
// A listed dot found in no range was already removed (by a pass reading records).
Status DatabaseStore::SweepListedDots(size_t max_members, uint64_t* removed, bool* more) {
  const std::string begin = keys::DotRangePrefix(id_);
  const std::string end = keys::PrefixSuccessor(begin);
  rocksdb::Slice lower(begin);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_lower_bound = &lower;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(store_->db()->NewIterator(read_options));
  SweepWrites w(removed);
  proto::DotRange range;
  proto::DotRange kept;
  const std::vector<Dot>& dots = sweep_dots_;
  auto listed_below = [&dots](size_t i, uint64_t origin, uint64_t counter) {
    return i < dots.size() && dots[i].origin == origin && dots[i].counter < counter;
  };
  // The range at or below each dot's key, copied (the iterator stays one range ahead of it). The
  // dots come in key order, so it mostly steps forward from the one found last; after
  // kMaxSweepSteps steps it seeks forward to the least key a range holding the dot can have (a
  // range spans fewer than kMaxRangeMembers counters) and steps from there. Not SeekForPrev: it
  // walks back over every range deleted before the dot (tombstones until compaction), which was
  // nearly all of this pass's time in a node's profile.
  std::string range_key;
  std::string range_value;
  bool found = false;  // range_key and range_value hold a range at or below the last target
  bool positioned = false;
  auto step_to = [&](const std::string& target, size_t max_steps) {
    size_t steps = 0;
    for (; steps < max_steps && it->Valid() && it->key().compare(target) <= 0; ++steps) {
      range_key.assign(it->key().data(), it->key().size());
      range_value.assign(it->value().data(), it->value().size());
      found = true;
      it->Next();
    }
    return steps < max_steps;  // at the first range above the target, or the end
  };
  auto locate = [&](const Dot& dot, const std::string& target) {
    if (positioned && step_to(target, kMaxSweepSteps)) return;
    positioned = true;
    found = false;
    const uint64_t lowest =
        dot.counter >= kMaxRangeMembers ? dot.counter - (kMaxRangeMembers - 1) : 0;
    it->Seek(keys::DotRangeKey(id_, dot.origin, lowest));
    step_to(target, SIZE_MAX);
  };
  Status s;
  while (sweep_dot_next_ < dots.size() && w.examined < max_members) {
    const Dot dot = dots[sweep_dot_next_];
    locate(dot, keys::DotRangeKey(id_, dot.origin, dot.counter));
    if (!it->status().ok()) break;
    if (!found) {
      ++sweep_dot_next_;
      continue;
    }
    uint64_t origin = 0;
    uint64_t first = 0;
    s = ParseRangeEntry(range_key, range_value, &range, &origin, &first);
    if (!s.ok()) return s;
    if (origin != dot.origin || range.members_size() == 0) {
      ++sweep_dot_next_;
      continue;
    }
    // Members and listed dots, both in counter order: the members listed go.
    size_t next = sweep_dot_next_;
    kept.Clear();
    for (const proto::DotRange::Member& member : range.members()) {
      const uint64_t counter = first + member.offset();
      while (listed_below(next, origin, counter)) ++next;
      const bool stale =
          next < dots.size() && dots[next].origin == origin && dots[next].counter == counter;
      if (!stale) *kept.add_members() = member;
    }
    // Every listed dot up to the range's last member is done.
    const uint64_t last = first + range.members(range.members_size() - 1).offset();
    while (listed_below(next, origin, last + 1)) ++next;
    sweep_dot_next_ = std::max(next, sweep_dot_next_ + 1);
    s = SweepRange(range_key, static_cast<size_t>(range.members_size()), kept, &w);
    if (!s.ok()) return s;
  }
  if (!it->status().ok()) {
    return FromRocksStatus(it->status(), "cannot read dot range index of database " + Quote(path_));
  }
  s = WriteSweep(&w);
  if (!s.ok()) return s;
  if (sweep_dot_next_ < dots.size()) {
    if (more != nullptr) *more = true;
  } else {
    store_->ReleaseListedStaleDots(sweep_dots_.size());
    std::vector<Dot>().swap(sweep_dots_);
    sweep_dot_next_ = 0;
  }
  return Status::OK();
}

// A member is live if its key's record has exactly its dot (what DeltaSince serves); the others
// go. A range keeps its key (its first counter) when members are dropped, so its span only
// shrinks and still overlaps no other (in both passes).
Status DatabaseStore::SweepByRecords(size_t max_members, uint64_t* removed, bool* more) {
  if (sweep_from_.empty() && listing_ != StaleListing::kComplete) {
    // A new pass: it finds the members stale now; the list takes those made stale from now on.
    ForgetStaleDots(StaleListing::kSincePass);
  }
  rocksdb::DB* db = store_->db();
  const std::string begin = keys::DotRangePrefix(id_);
  const std::string end = keys::PrefixSuccessor(begin);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options));
  SweepWrites w(removed);
  proto::DotRange range;
  proto::DotRange kept;
  proto::Record record;
  std::string data_keys;
  std::vector<rocksdb::Slice> slices;
  std::vector<rocksdb::PinnableSlice> values;
  std::vector<rocksdb::Status> statuses;
  Status s;
  for (it->Seek(sweep_from_.empty() ? begin : sweep_from_); it->Valid(); it->Next()) {
    if (w.examined >= max_members) break;
    const rocksdb::Slice range_key = it->key();
    uint64_t origin = 0;
    uint64_t first = 0;
    s = ParseRangeEntry(range_key.ToStringView(), it->value().ToStringView(), &range, &origin,
                        &first);
    if (!s.ok()) return s;
    const size_t n = static_cast<size_t>(range.members_size());
    // The members' records in one MultiGet (the data keys side by side in one buffer).
    size_t bytes = 0;
    for (const auto& member : range.members()) bytes += data_prefix_.size() + member.key().size();
    data_keys.clear();
    data_keys.reserve(bytes);
    slices.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const size_t at = data_keys.size();
      data_keys.append(data_prefix_).append(range.members(static_cast<int>(i)).key());
      slices[i] = rocksdb::Slice(data_keys.data() + at, data_keys.size() - at);
    }
    values.clear();
    values.resize(n);
    statuses.assign(n, rocksdb::Status());
    if (n > 0) {
      db->MultiGet(rocksdb::ReadOptions(), db->DefaultColumnFamily(), n, slices.data(),
                   values.data(), statuses.data());
    }
    kept.Clear();
    for (size_t i = 0; i < n; ++i) {
      const proto::DotRange::Member& member = range.members(static_cast<int>(i));
      bool live = false;
      if (statuses[i].ok()) {
        if (!record.ParseFromArray(values[i].data(), static_cast<int>(values[i].size()))) {
          return Status::Corruption("record of key " + Quote(member.key()) + " in database " +
                                    Quote(path_) + " is unreadable");
        }
        live = record.version().origin() == origin &&
               record.version().counter() == first + member.offset();
      } else if (!statuses[i].IsNotFound()) {
        return FromRocksStatus(
            statuses[i], "cannot read key " + Quote(member.key()) + " of database " + Quote(path_));
      }
      if (live) *kept.add_members() = member;
    }
    sweep_from_.assign(range_key.data(), range_key.size());
    sweep_from_.push_back('\0');  // the least key after this range's
    s = SweepRange(std::string_view(range_key.data(), range_key.size()), n, kept, &w);
    if (!s.ok()) return s;
  }
  if (!it->status().ok()) {
    return FromRocksStatus(it->status(), "cannot read dot range index of database " + Quote(path_));
  }
  const bool finished = !it->Valid();
  s = WriteSweep(&w);
  if (!s.ok()) return s;
  sweep_pass_removed_ += w.total;
  if (finished) {
    // Every member stale when the pass began is gone; those made stale since are listed (unless
    // the list outgrew its bound meanwhile).
    const uint64_t listed = listing_ == StaleListing::kSincePass ? stale_dots_.size() : 0;
    // A whole pass that found nothing stale while the count says more than the dots listed
    // since it began: the count is wrong (it is never meant to be), and would trigger a sweep
    // every round. It is reset to those.
    if (sweep_pass_removed_ == 0 && stale_members_ > listed) {
      rocksdb::WriteBatch reset;
      reset.Put(meta_key_,
                MetaBytes(used_bytes_, key_count_, local_counter_, tombstone_count_, digest_,
                          version_vector_, 0, -static_cast<int64_t>(stale_members_ - listed)));
      rocksdb::Status rs = store_->Write(&reset);
      if (!rs.ok()) {
        return FromRocksStatus(rs, "cannot sweep the dot ranges of database " + Quote(path_));
      }
      stale_members_ = listed;
    }
    if (listing_ == StaleListing::kSincePass) listing_ = StaleListing::kComplete;
    sweep_from_.clear();
    sweep_pass_removed_ = 0;
  }
  if (more != nullptr) *more = !finished;
  return Status::OK();
}

Status DatabaseStore::ListKeyDots(std::string_view after, size_t max_entries, size_t max_bytes,
                                  std::vector<KeyDot>* out, bool* more) const {
  out->clear();
  *more = false;
  Status s = CheckUsable();
  if (!s.ok()) return s;
  const std::string end = keys::DataPrefixEnd(id_);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(store_->db()->NewIterator(read_options));
  std::string start = data_prefix_;
  start.append(after);
  size_t bytes = 0;
  proto::Record record;
  for (it->Seek(start); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data() + data_prefix_.size(),
                               it->key().size() - data_prefix_.size());
    if (key <= after) continue;  // `after` itself
    if (!out->empty() && (out->size() >= max_entries || bytes + key.size() > max_bytes)) {
      *more = true;
      break;
    }
    if (!record.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Status::Corruption("record of key " + Quote(key) + " in database " + Quote(path_) +
                                " is unreadable");
    }
    out->push_back(
        KeyDot{std::string(key), Dot{record.version().origin(), record.version().counter()}});
    bytes += key.size();
  }
  if (!it->status().ok()) {
    return FromRocksStatus(it->status(), "cannot scan database " + Quote(path_));
  }
  return Status::OK();
}

// Like CollectTombstones: each RocksDB write deletes at most kCollectBatch records, with the meta
// record, so a failure part-way leaves a consistent state with some records deleted. The version
// vector does not change: it covers the deleted dots, as the other replica's does, so no delta
// sync brings them back (the state is exactly the one tombstone collection leaves).
Status DatabaseStore::RemoveCollectedElsewhere(std::string_view after, std::string_view last,
                                               bool to_end, const std::vector<KeyDot>& theirs,
                                               const VersionVector& their_vector, size_t max_scan,
                                               std::string* compared_until, uint64_t* removed) {
  if (removed != nullptr) *removed = 0;
  compared_until->clear();
  Status s = CheckUsable();
  if (!s.ok()) return s;
  for (size_t i = 0; i < theirs.size(); ++i) {
    const std::string& key = theirs[i].key;
    if (key <= after || (i > 0 && key <= theirs[i - 1].key) || (!to_end && key > last)) {
      return Status::InvalidArgument("full sync page of database " + Quote(path_) +
                                     " is not ascending within its range");
    }
  }
  std::string end;
  if (to_end) {
    end = keys::DataPrefixEnd(id_);
  } else {
    end = data_prefix_;
    end.append(last);
    end.push_back('\0');  // the smallest key after `last`
  }
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(store_->db()->NewIterator(read_options));
  std::string start = data_prefix_;
  start.append(after);
  Removal r(digest_);
  uint64_t total = 0;
  auto flush = [&]() -> Status {
    const size_t entries = r.entries;
    Status written = WriteRemoval(
        &r, "cannot remove keys of database " + Quote(path_) + " deleted on another replica");
    if (!written.ok() || entries == 0) return written;
    total += entries;
    if (observer_) observer_();
    return written;
  };
  size_t j = 0;  // the first of `theirs` not below the local key examined
  size_t scanned = 0;
  proto::Record record;
  for (it->Seek(start); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data() + data_prefix_.size(),
                               it->key().size() - data_prefix_.size());
    if (key <= after) continue;
    if (scanned >= max_scan) {
      // Bounded: the asker resumes after the last key examined.
      break;
    }
    ++scanned;
    *compared_until = std::string(key);
    while (j < theirs.size() && theirs[j].key < key) ++j;
    if (j < theirs.size() && theirs[j].key == key) continue;  // held there: the delta sync's
    if (!record.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Status::Corruption("record of key " + Quote(key) + " in database " + Quote(path_) +
                                " is unreadable");
    }
    const proto::Version& version = record.version();
    if (!their_vector.Covers({version.origin(), version.counter()})) continue;  // news to them
    r.batch.Delete(it->key());
    cache_.Erase(key);
    if (record.dot_ranged()) {
      // Left in its range, stale (see Stage).
      r.stale_dots.push_back({version.origin(), version.counter()});
    } else {
      r.batch.Delete(keys::DotIndexKey(id_, version.origin(), version.counter()));
    }
    if (record.tombstone()) {
      r.batch.Delete(keys::TombstoneIndexKey(id_, version.origin(), version.counter()));
      --r.tombstone_count;
    } else {
      r.used_bytes -= static_cast<int64_t>(LiveCost(key, record));
      --r.key_count;
      r.digest -= RecordHash(key, record);
      if (record.expires() != 0) {
        r.batch.Delete(
            keys::ExpiryIndexKey(id_, record.expires(), version.origin(), version.counter()));
      }
    }
    ++r.entries;
    if (r.entries >= kCollectBatch) {
      s = flush();
      if (!s.ok()) return s;
    }
  }
  if (!it->status().ok()) {
    return FromRocksStatus(it->status(), "cannot scan database " + Quote(path_));
  }
  // Stopped before the end of the range: say where; otherwise the whole range was compared.
  if (!(it->Valid() && scanned >= max_scan)) compared_until->clear();
  s = flush();
  if (removed != nullptr) *removed = total;
  return s;
}

Status DatabaseStore::LearnRetired(const std::map<uint64_t, uint64_t>& retired) {
  Status s = CheckUsable();
  if (!s.ok()) return s;
  VersionVector version_vector = version_vector_;
  bool changed = false;
  for (const auto& [origin, last] : retired) changed |= version_vector.Retire(origin, last);
  if (!changed) return Status::OK();
  rocksdb::WriteBatch batch;
  batch.Put(meta_key_, MetaBytes(used_bytes_, key_count_, local_counter_, tombstone_count_, digest_,
                                 version_vector));
  rocksdb::Status rs = store_->Write(&batch);
  if (!rs.ok()) return FromRocksStatus(rs, "cannot write to database " + Quote(path_));
  // Same coverage, so the same Digest: the node's summary needs no news.
  version_vector_ = std::move(version_vector);
  return Status::OK();
}

Status DatabaseStore::Drop() {
  Status s = CheckUsable();
  if (!s.ok()) return s;
  rocksdb::WriteBatch batch;
  batch.DeleteRange(keys::DatabasePrefix(id_), keys::DatabasePrefixEnd(id_));
  batch.Delete(keys::CatalogKey(path_));
  rocksdb::Status rs = store_->Write(&batch);
  if (!rs.ok()) return FromRocksStatus(rs, "cannot drop database " + Quote(path_));
  store_->NoteFreeingWrite();
  store_->NoteCatalogEntryDeleted(config_id_);
  dropped_ = true;
  cache_.Clear();
  used_bytes_ = 0;
  key_count_ = 0;
  local_counter_ = 0;
  tombstone_count_ = 0;
  digest_ = 0;
  range_members_ = 0;
  stale_members_ = 0;
  ForgetStaleDots(StaleListing::kLost);
  version_vector_ = VersionVector();
  if (const auto& observe = store_->vector_observer()) observe(path_, 0);
  return Status::OK();
}

Status DatabaseStore::ComputeDigest(uint64_t* digest) const {
  Status s = CheckUsable();
  if (!s.ok()) return s;
  const std::string end = keys::DataPrefixEnd(id_);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(store_->db()->NewIterator(read_options));
  uint64_t sum = 0;
  proto::Record record;
  for (it->Seek(data_prefix_); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data() + data_prefix_.size(),
                               it->key().size() - data_prefix_.size());
    if (!record.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return Status::Corruption("record of key " + Quote(key) + " in database " + Quote(path_) +
                                " is unreadable");
    }
    if (!record.tombstone()) sum += RecordHash(key, record);
  }
  if (!it->status().ok()) {
    return FromRocksStatus(it->status(), "cannot scan database " + Quote(path_));
  }
  *digest = sum;
  return Status::OK();
}

bool NewerRecord(const KeyRecord& a, const KeyRecord& b) {
  if (!a.exists || !b.exists) return a.exists && !b.exists;
  proto::Version va;
  va.set_hlc(a.hlc);
  va.set_origin(a.origin);
  va.set_counter(a.counter);
  proto::Version vb;
  vb.set_hlc(b.hlc);
  vb.set_origin(b.origin);
  vb.set_counter(b.counter);
  return Newer(va, vb);
}

std::string VersionToken(const KeyRecord& record) {
  proto::Version version;
  version.set_hlc(record.hlc);
  version.set_origin(record.origin);
  version.set_counter(record.counter);
  return VersionToken(version);
}

bool CoversToken(const VersionVector& vector, const SessionToken& token) {
  for (const auto& [origin, counter] : token.dots()) {
    if (vector.Base(origin) < counter) return false;
  }
  return true;
}

Status DatabaseStore::ReadUserKey(std::string_view raw_key, std::string* key, bool* found,
                                  proto::Record* record) const {
  Status s = CheckUsable();
  if (!s.ok()) return s;
  s = NormalizeKey(raw_key, key);
  if (!s.ok()) return Status(s.code(), s.message() + ": " + Quote(raw_key));
  return ReadRecord(*key, found, record);
}

Status DatabaseStore::GetRecord(std::string_view raw_key, KeyRecord* out) const {
  std::string key;
  proto::Record record;
  bool found = false;
  Status s = ReadUserKey(raw_key, &key, &found, &record);
  if (!s.ok()) return s;
  *out = KeyRecord();
  if (!found) return Status::OK();
  out->exists = true;
  out->live = Present(record, store_->WallTicks());
  if (out->live) out->value = std::move(*record.mutable_value());
  out->hlc = record.version().hlc();
  out->origin = record.version().origin();
  out->counter = record.version().counter();
  return Status::OK();
}

Status DatabaseStore::Get(std::string_view raw_key, std::string* value) const {
  std::string key;
  proto::Record record;
  bool found = false;
  Status s = ReadUserKey(raw_key, &key, &found, &record);
  if (!s.ok()) return s;
  if (!found || !Present(record, store_->WallTicks())) {
    return Status::NotFound("key " + Quote(key) + " not found in database " + Quote(path_));
  }
  *value = std::move(*record.mutable_value());
  return Status::OK();
}

size_t DatabaseStore::GetMany(const std::vector<std::string_view>& keys, size_t max_bytes,
                              std::vector<Status>* statuses,
                              std::vector<std::string>* values) const {
  statuses->clear();
  values->clear();
  size_t bytes = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    std::string value;
    Status s = Get(keys[i], &value);
    bytes += value.size();
    if (i > 0 && bytes > max_bytes) break;  // the keys from here on are not read
    statuses->push_back(std::move(s));
    values->push_back(std::move(value));
  }
  return statuses->size();
}

namespace {

// A bound of ListOptions: "" (none) or normalised like a key.
Status NormalizeListBound(const char* name, std::string_view raw, const std::string& prefix,
                          std::string* out) {
  out->clear();
  if (raw.empty()) return Status::OK();
  Status s = NormalizeKey(raw, out);
  if (!s.ok()) {
    return Status::InvalidArgument(std::string("list ") + name + " bound " + Quote(raw) +
                                   " is not a valid key: " + s.message());
  }
  if (!KeyHasPrefix(*out, prefix)) {
    return Status::InvalidArgument(std::string("list ") + name + " bound " + Quote(*out) +
                                   " is not under the prefix " + Quote(prefix));
  }
  return Status::OK();
}

}  // namespace

// Keys under prefix P (segment rule): P itself, then the contiguous byte range [P + "/", P + "0")
// ('0' follows '/'). Keys like P + "!" sort between the two and are not under P, so the list
// reads the exact key with a point lookup and scans only the range, never the keys between;
// forward the exact key comes first, in reverse last, so the result stays in order. The range
// scan is bounded on both sides (iterate bounds): the listing's [start, end) narrowed by the
// resume token, so it reads only what the page returns plus the deleted or expired keys it skips.
Status DatabaseStore::List(const ListOptions& options, ListPage* page) const {
  Status s = CheckUsable();
  if (!s.ok()) return s;
  page->keys.clear();
  page->values.clear();
  page->versions.clear();
  page->next_token.clear();
  std::string prefix;
  s = NormalizePrefix(options.prefix, &prefix);
  if (!s.ok()) return s;
  std::string start, end;  // user-key bounds, "" for none
  s = NormalizeListBound("start", options.start, prefix, &start);
  if (!s.ok()) return s;
  s = NormalizeListBound("end", options.end, prefix, &end);
  if (!s.ok()) return s;
  if (!start.empty() && !end.empty() && start > end) {
    return Status::InvalidArgument("list start bound " + Quote(start) + " is after the end bound " +
                                   Quote(end));
  }
  // The resume token is the last key of the previous page: a normalised key of this listing.
  const std::string& after = options.start_after;
  if (!after.empty()) {
    std::string normal;
    if (!NormalizeKey(after, &normal).ok() || normal != after || !KeyHasPrefix(after, prefix) ||
        after < start || (!end.empty() && after >= end)) {
      return Status::InvalidArgument(
          "list token " + Quote(after) +
          " is not a key of this listing (pass the next_token of a page listed with the same "
          "prefix, start and end)");
    }
  }
  // What is left to list: [lo, hi) in user-key space, hi "" for unbounded. Forward the token
  // raises lo to just after it (after + '\0' is the least key above it); in reverse it is hi.
  std::string lo = start;
  std::string hi = end;
  if (!after.empty()) {
    if (options.reverse) {
      hi = after;
    } else {
      lo = after;
      lo.push_back('\0');
    }
  }
  const uint32_t limit =
      options.limit == 0 ? kDefaultListLimit : std::min<uint32_t>(options.limit, kMaxListLimit);
  size_t page_bytes = 0;
  bool full = false;
  proto::Record record;
  const uint64_t now = store_->WallTicks();

  // Adds one stored record to the page; sets `full` instead when the page has no room left.
  auto take = [&](std::string_view user_key, const rocksdb::Slice& bytes) -> Status {
    if (!record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return Status::Corruption("record of key " + Quote(user_key) + " in database " +
                                Quote(path_) + " is unreadable");
    }
    if (!Present(record, now)) return Status::OK();
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
    if (options.with_versions) page->versions.push_back(VersionToken(record.version()));
    return Status::OK();
  };

  rocksdb::DB* db = store_->db();
  auto in_range = [&](const std::string& key) { return key >= lo && (hi.empty() || key < hi); };
  // The exact key P (only for a non-empty prefix).
  auto take_exact = [&]() -> Status {
    if (prefix.empty() || full || !in_range(prefix)) return Status::OK();
    rocksdb::PinnableSlice bytes;
    rocksdb::Status rs =
        db->Get(rocksdb::ReadOptions(), db->DefaultColumnFamily(), data_prefix_ + prefix, &bytes);
    if (rs.IsNotFound()) return Status::OK();
    if (!rs.ok()) return FromRocksStatus(rs, "cannot list database " + Quote(path_));
    return take(prefix, bytes);
  };
  // The range of keys below P: [P + "/", P + "0") (every key of the database for P = "")
  // intersected with [lo, hi).
  auto scan_range = [&]() -> Status {
    if (full) return Status::OK();
    std::string range_lo = prefix.empty() ? std::string() : prefix + '/';
    std::string range_hi = prefix.empty() ? std::string() : prefix + '0';
    if (lo > range_lo) range_lo = lo;
    if (!hi.empty() && (range_hi.empty() || hi < range_hi)) range_hi = hi;
    if (!range_hi.empty() && range_lo >= range_hi) return Status::OK();
    const std::string lower_key = data_prefix_ + range_lo;
    const std::string upper_key =
        range_hi.empty() ? keys::DataPrefixEnd(id_) : data_prefix_ + range_hi;
    rocksdb::Slice lower(lower_key);
    rocksdb::Slice upper(upper_key);
    rocksdb::ReadOptions read_options;
    read_options.iterate_lower_bound = &lower;
    read_options.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options));
    if (options.reverse) {
      // The last key below the exclusive upper bound.
      it->SeekForPrev(upper);
      if (it->Valid() && it->key().compare(upper) >= 0) it->Prev();
    } else {
      it->Seek(lower);
    }
    for (; it->Valid() && !full; options.reverse ? it->Prev() : it->Next()) {
      rocksdb::Slice k = it->key();
      std::string_view user_key(k.data() + data_prefix_.size(), k.size() - data_prefix_.size());
      Status taken = take(user_key, it->value());
      if (!taken.ok()) return taken;
    }
    if (!it->status().ok()) return FromRocksStatus(it->status(), "cannot list " + Quote(path_));
    return Status::OK();
  };
  if (options.reverse) {
    s = scan_range();
    if (s.ok()) s = take_exact();
  } else {
    s = take_exact();
    if (s.ok()) s = scan_range();
  }
  if (!s.ok()) return s;
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
