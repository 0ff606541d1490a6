#include "storage/memtable.hpp"

#include <rocksdb/comparator.h>
#include <rocksdb/slice.h>
#include <rocksdb/version.h>
#include <xxhash.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>

#include "storage/skip_list.hpp"
#include "storage/version_chain.hpp"

// RocksDB's arena (memory/arena.h) is not among its installed headers; the one member function
// kvmesh calls is exported by the library. An iterator RocksDB asks for with an arena must live
// in it: RocksDB destroys it in place and frees the arena later.
namespace rocksdb {
class Arena {
 public:
  char* AllocateAligned(size_t bytes, size_t huge_page_size, Logger* logger);
};
}  // namespace rocksdb

// Both reliances above, and LookupKey's layout (MemtableKeyOf), were checked against RocksDB
// 7.8.3's sources; the library's soname (librocksdb.so.7.8) pins the minor version at run time.
static_assert(ROCKSDB_MAJOR == 7 && ROCKSDB_MINOR == 8,
              "check rocksdb::Arena::AllocateAligned and LookupKey's layout for this RocksDB");

namespace kvmesh::storage {
namespace {

/// A user key's node in the skip list: the chain of its versions (storage/version_chain.hpp:
/// the entries RocksDB wrote, in RocksDB's order, by sequence number, newest first), then the
/// length-prefixed user key it is ordered by (bytewise, as NewMemTableFactory requires).
struct Header {
  VersionChain chain;

  const char* Key() const { return reinterpret_cast<const char*>(this + 1); }
  static Header* Of(const char* entry) {
    return reinterpret_cast<Header*>(const_cast<char*>(entry));
  }
};
static_assert(sizeof(Header) == sizeof(VersionChain), "the key follows the chain");

/// The user key of an internal key (its last 8 bytes are the sequence number and type).
rocksdb::Slice UserKeyOf(const rocksdb::Slice& internal_key) {
  return rocksdb::Slice(internal_key.data(), internal_key.size() - 8);
}

/// A header's user key.
rocksdb::Slice UserKeyOfHeader(const char* entry) {
  return rocksdb::GetLengthPrefixedSlice(Header::Of(entry)->Key());
}

/// The skip list's order: headers by their user key's bytes.
struct HeaderOrder {
  using Key = rocksdb::Slice;
  int operator()(const char* entry, const rocksdb::Slice& user_key) const {
    return UserKeyOfHeader(entry).compare(user_key);
  }
  rocksdb::Slice Decode(const char* entry) const { return UserKeyOfHeader(entry); }
};
using List = SkipList<HeaderOrder>;

/// What LookupKey (db/dbformat.h, not installed) starts with: where its memtable key begins.
const char* MemtableKeyOf(const rocksdb::LookupKey& key) {
  const char* start = nullptr;
  std::memcpy(&start, &key, sizeof(start));
  return start;
}

/// A header's user key, for the key index.
struct HeaderUserKey {
  std::string_view operator()(const Header* header) const {
    const rocksdb::Slice key = UserKeyOfHeader(reinterpret_cast<const char*>(header));
    return std::string_view(key.data(), key.size());
  }
};
using Index = KeyIndex<Header, HeaderUserKey>;

uint64_t HashOf(const rocksdb::Slice& user_key) {
  return XXH3_64bits(user_key.data(), user_key.size());
}

class Rep final : public rocksdb::MemTableRep {
 public:
  Rep(const rocksdb::MemTableRep::KeyComparator& compare, rocksdb::Allocator* allocator,
      size_t index_slots, MappedMemory index_memory)
      : rocksdb::MemTableRep(allocator),
        compare_(compare),
        index_(index_slots, HeaderUserKey{}, std::move(index_memory)) {}

  rocksdb::KeyHandle Allocate(const size_t len, char** buf) override {
    char* memory = nullptr;
    rocksdb::MemTableRep::Allocate(Version::Bytes(len), &memory);
    *buf = Version::Make(memory);
    return *buf;
  }

  // RocksDB calls the Insert... of its one writer (`alone`) or of writers inserting at once.
  void Insert(rocksdb::KeyHandle handle) override { Add(handle, /*alone=*/true); }
  bool InsertKey(rocksdb::KeyHandle handle) override { return Add(handle, true); }
  void InsertWithHint(rocksdb::KeyHandle handle, void**) override { Add(handle, true); }
  bool InsertKeyWithHint(rocksdb::KeyHandle handle, void**) override { return Add(handle, true); }
  void InsertConcurrently(rocksdb::KeyHandle handle) override { Add(handle, /*alone=*/false); }
  bool InsertKeyConcurrently(rocksdb::KeyHandle handle) override { return Add(handle, false); }
  void InsertWithHintConcurrently(rocksdb::KeyHandle handle, void**) override {
    Add(handle, false);
  }
  bool InsertKeyWithHintConcurrently(rocksdb::KeyHandle handle, void**) override {
    return Add(handle, false);
  }

  bool Contains(const char* entry) const override {
    const rocksdb::Slice key = compare_.decode_key(entry);
    const Header* header = FindHeader(UserKeyOf(key));
    if (header == nullptr) return false;
    const Version* v = header->chain.FirstAtOrAfter(key, order_);
    return v != nullptr && compare_(v->Entry(), key) == 0;
  }

  // Calls back with the versions of the lookup key's user key from the first at or after it (at
  // or below its sequence number), and stops at the last: RocksDB's callback (SaveValue) stops
  // at the first entry of another user key without looking at it further.
  void Get(const rocksdb::LookupKey& lookup, void* callback_args,
           bool (*callback)(void* arg, const char* entry)) override {
    const rocksdb::Slice key = compare_.decode_key(MemtableKeyOf(lookup));
    const Header* header = FindHeader(UserKeyOf(key));
    if (header == nullptr) return;
    for (const Version* v = header->chain.FirstAtOrAfter(key, order_);
         v != nullptr && callback(callback_args, v->Entry());
         v = v->next.load(std::memory_order_acquire)) {
    }
  }

  // The arena RocksDB counts holds the rest.
  size_t ApproximateMemoryUsage() override { return index_.bytes(); }

  rocksdb::MemTableRep::Iterator* GetIterator(rocksdb::Arena* arena) override {
    if (arena == nullptr) return new Iter(this);
    void* memory = arena->AllocateAligned(sizeof(Iter), 0, nullptr);
    return new (memory) Iter(this);
  }

 private:
  /// RocksDB's memtable order of a version's entry and a decoded internal key.
  struct VersionOrder {
    using Key = rocksdb::Slice;
    const rocksdb::MemTableRep::KeyComparator* compare;
    int operator()(const char* entry, const rocksdb::Slice& key) const {
      return (*compare)(entry, key);
    }
  };

  bool Add(rocksdb::KeyHandle handle, bool alone) {
    const char* entry = static_cast<const char*>(handle);
    const rocksdb::Slice key = compare_.decode_key(entry);
    const rocksdb::Slice user_key = UserKeyOf(key);
    bool fresh = false;
    Header* header = alone ? NextToCursor(user_key, &fresh) : nullptr;
    if (header == nullptr) {
      const std::string_view user_view(user_key.data(), user_key.size());
      const uint64_t hash = HashOf(user_key);
      if (fresh) {
        index_.Prefetch(hash);  // read while the header is linked
      } else {
        header = index_.Find(user_view, hash);
      }
      if (header == nullptr) {
        // Once the table is full, a key it lacks may still be held: a search for it where the
        // filter of the keys not entered says so, and a new key's header a second one (the table
        // does not fill with 100-byte values; see NewMemTableFactory).
        if (!fresh && index_.MayHoldElsewhere(hash)) header = SearchHeader(user_key);
        if (header == nullptr) header = LinkHeader(user_key, alone);
        // Entered before this insert returns, so before RocksDB shows the write to readers; a
        // header linked by another insert and not entered yet is entered here too.
        index_.Enter(header, user_view, hash);
      }
    }
    if (alone) cursor_ = List::NodeOf(reinterpret_cast<const char*>(header));
    return header->chain.Add(Version::Of(entry), key, order_);
  }

  /// For an insert made alone (no other insert runs meanwhile, so the skip list's level 0 holds
  /// still): the header of `user_key` if it is the cursor's or the next one; else, with `fresh`
  /// set, null if the key falls between those two (it has no header yet); else null. A sorted
  /// run (a batch as DatabaseStore::Stage lays it out, a bulk load) goes from one header to the
  /// next: found there, a key needs no read of the table at a random place (the cost of a
  /// sorted run's inserts), and a new one's read is made while its header is linked. A random
  /// run would pay a cache miss for the look next door: after one that finds nothing, the next
  /// kCursorRest inserts do not look.
  Header* NextToCursor(const rocksdb::Slice& user_key, bool* fresh) {
    if (cursor_ == nullptr) return nullptr;
    if (cursor_rest_ > 0) {
      --cursor_rest_;
      return nullptr;
    }
    const int at = UserKeyAt(cursor_).compare(user_key);
    if (at == 0) return Header::Of(cursor_->Entry());
    if (at < 0) {
      List::Node* next = cursor_->Next(0);
      const int cmp = next == nullptr ? 1 : UserKeyAt(next).compare(user_key);
      if (cmp == 0) return Header::Of(next->Entry());
      if (cmp > 0) {
        *fresh = true;
        return nullptr;
      }
    }
    cursor_rest_ = kCursorRest;
    return nullptr;
  }

  /// Links a header for `user_key`, or finds the one another insert linked first.
  Header* LinkHeader(const rocksdb::Slice& user_key, bool alone) {
    char length[5];
    const size_t length_bytes = PutVarint32(length, static_cast<uint32_t>(user_key.size()));
    const int height = List::RandomHeight();
    char* memory = nullptr;
    rocksdb::MemTableRep::Allocate(
        List::NodeBytes(height, sizeof(Header) + length_bytes + user_key.size()), &memory);
    char* entry = List::MakeNode(memory, height);
    new (entry) Header{};
    char* p = entry + sizeof(Header);
    std::memcpy(p, length, length_bytes);
    std::memcpy(p + length_bytes, user_key.data(), user_key.size());
    return Header::Of(list_.Insert(entry, alone));
  }

  /// The header of `user_key` in the skip list, null if none.
  Header* SearchHeader(const rocksdb::Slice& user_key) const {
    List::Node* node = list_.Seek(user_key);
    if (node == nullptr || UserKeyAt(node) != user_key) return nullptr;
    return Header::Of(node->Entry());
  }

  /// The header of `user_key`, null if none.
  const Header* FindHeader(const rocksdb::Slice& user_key) const {
    const uint64_t hash = HashOf(user_key);
    const Header* header = index_.Find(std::string_view(user_key.data(), user_key.size()), hash);
    if (header == nullptr && index_.MayHoldElsewhere(hash)) header = SearchHeader(user_key);
    return header;
  }

  static rocksdb::Slice UserKeyAt(const List::Node* node) { return UserKeyOfHeader(node->Entry()); }

  static size_t PutVarint32(char* out, uint32_t value) {
    size_t n = 0;
    while (value >= 0x80) {
      out[n++] = static_cast<char>(value | 0x80);
      value >>= 7;
    }
    out[n++] = static_cast<char>(value);
    return n;
  }

  /// Walks the versions in RocksDB's order: headers along the skip list, each one's chain.
  /// Headers whose chain is still empty (an insert between linking the header and its version)
  /// are passed over.
  class Iter final : public rocksdb::MemTableRep::Iterator {
   public:
    explicit Iter(const Rep* rep) : rep_(rep) {}
    bool Valid() const override { return version_ != nullptr; }
    const char* key() const override { return version_->Entry(); }
    void Next() override {
      version_ = version_->next.load(std::memory_order_acquire);
      if (version_ == nullptr) Forward(node_->Next(0));
    }
    void Prev() override {
      const Version* before = ChainOf(node_).Before(version_);
      if (before != nullptr) {
        version_ = before;
      } else {
        Backward(rep_->list_.Before(UserKeyAt(node_)));
      }
    }
    void Seek(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      const rocksdb::Slice target = Target(internal_key, memtable_key);
      const rocksdb::Slice user_key = UserKeyOf(target);
      node_ = rep_->list_.Seek(user_key);
      if (node_ != nullptr && UserKeyAt(node_) == user_key) {
        version_ = ChainOf(node_).FirstAtOrAfter(target, rep_->order_);
        if (version_ == nullptr) Forward(node_->Next(0));
      } else {
        Forward(node_);
      }
    }
    void SeekForPrev(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      const rocksdb::Slice target = Target(internal_key, memtable_key);
      const rocksdb::Slice user_key = UserKeyOf(target);
      List::Node* at = rep_->list_.Seek(user_key);
      if (at != nullptr && UserKeyAt(at) == user_key) {
        if (const Version* last = ChainOf(at).LastAtOrBefore(target, rep_->order_)) {
          node_ = at;
          version_ = last;
          return;
        }
      }
      // Every version before `target` is under a header before the one of its user key.
      Backward(rep_->list_.Before(user_key));
    }
    void SeekToFirst() override { Forward(rep_->list_.First()); }
    void SeekToLast() override { Backward(rep_->list_.Last()); }

   private:
    static const VersionChain& ChainOf(const List::Node* node) {
      return Header::Of(node->Entry())->chain;
    }
    /// At the first version of `node` or of the first header after it with one.
    void Forward(List::Node* node) {
      for (; node != nullptr; node = node->Next(0)) {
        if (const Version* v = ChainOf(node).First()) {
          node_ = node;
          version_ = v;
          return;
        }
      }
      node_ = nullptr;
      version_ = nullptr;
    }
    /// At the last version of `node` or of the last header before it with one.
    void Backward(List::Node* node) {
      for (; node != nullptr; node = rep_->list_.Before(UserKeyAt(node))) {
        if (const Version* v = ChainOf(node).Last()) {
          node_ = node;
          version_ = v;
          return;
        }
      }
      node_ = nullptr;
      version_ = nullptr;
    }
    rocksdb::Slice Target(const rocksdb::Slice& internal_key, const char* memtable_key) const {
      return memtable_key != nullptr ? rep_->compare_.decode_key(memtable_key) : internal_key;
    }

    const Rep* rep_;
    List::Node* node_ = nullptr;
    const Version* version_ = nullptr;
  };

  static constexpr int kCursorRest = 8;

  const rocksdb::MemTableRep::KeyComparator& compare_;
  const VersionOrder order_{&compare_};
  List list_{HeaderOrder{}};
  Index index_;
  // For inserts made alone (NextToCursor): the node of the header the last one went to, and how
  // many more inserts do not look next to it.
  List::Node* cursor_ = nullptr;
  int cursor_rest_ = 0;
};

class Factory final : public rocksdb::MemTableRepFactory {
 public:
  explicit Factory(size_t index_slots)
      : index_slots_(index_slots), spare_(index_slots * sizeof(uintptr_t)) {}
  rocksdb::MemTableRep* CreateMemTableRep(const rocksdb::MemTableRep::KeyComparator& compare,
                                          rocksdb::Allocator* allocator,
                                          const rocksdb::SliceTransform*,
                                          rocksdb::Logger*) override {
    return new Rep(compare, allocator, index_slots_, spare_.Take());
  }
  const char* Name() const override { return "KvmeshSkipList"; }
  size_t spare_bytes() { return spare_.held(); }
  bool IsInsertConcurrentlySupported() const override { return true; }
  bool CanHandleDuplicatedKey() const override { return false; }

 private:
  const size_t index_slots_;
  SpareSlots spare_;
};

}  // namespace

size_t SpareKeyTableBytes(rocksdb::MemTableRepFactory& factory) {
  auto* ours = dynamic_cast<Factory*>(&factory);
  return ours != nullptr ? ours->spare_bytes() : 0;
}

std::shared_ptr<rocksdb::MemTableRepFactory> NewMemTableFactory(
    size_t write_buffer_size, const rocksdb::Comparator* comparator) {
  // The key table finds a user key by its bytes, and a sorted run's look next door compares
  // bytes: equal keys must be equal bytes, ordered bytewise, and a key must not carry a
  // timestamp that a lookup's would differ from. (Decided here: a comparator set after the
  // factory was made needs a new one.)
  if (comparator != rocksdb::BytewiseComparator() || comparator->timestamp_size() != 0) {
    return std::make_shared<rocksdb::SkipListFactory>();
  }
  // A slot (8 bytes) per 48 to 96 bytes of memtable (a power of two): the table is half full at
  // a key per 96 to 192 bytes, and a new key of a 100-byte value takes ~230 with its header and
  // links. Keys of small values in a write buffer just below a power of two can fill it (and are
  // then found through the skip list).
  size_t slots = 1024;
  while (slots < write_buffer_size / 96) slots *= 2;
  return std::make_shared<Factory>(slots);
}

}  // namespace kvmesh::storage
