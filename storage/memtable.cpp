#include "storage/memtable.hpp"

#include <rocksdb/slice.h>
#include <rocksdb/version.h>
#include <xxhash.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

#include "storage/skip_list.hpp"

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

constexpr size_t kLinkBytes = sizeof(void*);

/// An entry RocksDB wrote (length-prefixed internal key, then the value), with its links in its
/// user key's chain of versions in front of it: `next`, the next older version; `before`, a hint
/// for going backwards: some version before this one (null: start from the chain's first).
struct Version {
  std::atomic<Version*> before;
  std::atomic<Version*> next;

  const char* Entry() const { return reinterpret_cast<const char*>(this + 1); }
  static Version* Of(const char* entry) {
    return reinterpret_cast<Version*>(const_cast<char*>(entry)) - 1;
  }
};
static_assert(sizeof(Version) == 2 * kLinkBytes, "the entry follows the links");

/// A user key's node in the skip list: its newest version (the chain, in RocksDB's order: by
/// sequence number, newest first), a hint for its oldest (some version at or before the chain's
/// end; null: start from the first), then the length-prefixed internal key (user key,
/// kHeaderTag) it is ordered by, which sorts before every version of that user key.
///
/// The hints keep a backward step O(1) on a long chain (a database's meta record is rewritten by
/// every commit): each only ever names a version before the one it is kept in, or at or before
/// the end, so a stale one costs a few steps forward, never a wrong answer.
struct Header {
  std::atomic<Version*> versions;
  std::atomic<Version*> oldest;

  const char* Key() const { return reinterpret_cast<const char*>(this + 1); }
  static Header* Of(const char* entry) {
    return reinterpret_cast<Header*>(const_cast<char*>(entry));
  }
};
static_assert(sizeof(Header) == 2 * kLinkBytes, "the key follows the links");

/// The internal key trailer of a header: the largest sequence number (RocksDB's
/// kMaxSequenceNumber, never a write's), so a header sorts before its user key's versions.
constexpr uint64_t kHeaderTag = (((uint64_t{1} << 56) - 1) << 8) | 0x1;

/// The user key of an internal key (its last 8 bytes are the sequence number and type).
rocksdb::Slice UserKeyOf(const rocksdb::Slice& internal_key) {
  return rocksdb::Slice(internal_key.data(), internal_key.size() - 8);
}

/// The skip list's order: headers by their internal key (so by user key), compared with a
/// decoded internal key by RocksDB's memtable comparator.
struct HeaderOrder {
  using Key = rocksdb::Slice;
  const rocksdb::MemTableRep::KeyComparator* compare;
  int operator()(const char* entry, const rocksdb::Slice& key) const {
    return (*compare)(Header::Of(entry)->Key(), key);
  }
  rocksdb::Slice Decode(const char* entry) const {
    return compare->decode_key(Header::Of(entry)->Key());
  }
};
using List = SkipList<HeaderOrder>;

/// What LookupKey (db/dbformat.h, not installed) starts with: where its memtable key begins.
const char* MemtableKeyOf(const rocksdb::LookupKey& key) {
  const char* start = nullptr;
  std::memcpy(&start, &key, sizeof(start));
  return start;
}

/// A user key's header internal key (user key, kHeaderTag), built where it is needed: on the
/// stack for keys up to kInline bytes.
class HeaderKey {
 public:
  explicit HeaderKey(const rocksdb::Slice& user_key) : size_(user_key.size() + 8) {
    char* p = inline_;
    if (size_ > sizeof(inline_)) {
      heap_.reset(new char[size_]);
      p = heap_.get();
    }
    std::memcpy(p, user_key.data(), user_key.size());
    for (int i = 0; i < 8; ++i) p[user_key.size() + i] = static_cast<char>(kHeaderTag >> (8 * i));
  }
  HeaderKey(const HeaderKey&) = delete;
  HeaderKey& operator=(const HeaderKey&) = delete;
  rocksdb::Slice slice() const { return rocksdb::Slice(heap_ ? heap_.get() : inline_, size_); }

 private:
  static constexpr size_t kInline = 256;
  const size_t size_;
  char inline_[kInline];
  std::unique_ptr<char[]> heap_;
};

/// From a user key to its header: a table of fixed size, open addressing, lock-free. A slot holds
/// a header's address and 16 bits of its key's hash; slots are only ever filled. When a header
/// finds no free slot within kMaxProbes, or the table is three quarters full, it is not entered,
/// and the table says it is incomplete from then on (readers then search the skip list for the
/// keys it does not hold).
class KeyIndex {
 public:
  /// `slots`: a power of two. The memory comes zeroed from calloc, which for a table this size
  /// maps pages the kernel zeroes when first touched: a new memtable (made on the write path)
  /// does not wait for megabytes to be cleared.
  explicit KeyIndex(size_t slots)
      : mask_(slots - 1),
        slots_(static_cast<std::atomic<uintptr_t>*>(std::calloc(slots, sizeof(uintptr_t)))) {
    if (slots_ == nullptr) throw std::bad_alloc();
  }

  size_t bytes() const { return (mask_ + 1) * sizeof(std::atomic<uintptr_t>); }

  /// True once some header could not be entered: a key the table lacks may still be held.
  /// Set before the insert that could not enter its header returns, so before RocksDB makes
  /// that write visible.
  bool incomplete() const { return incomplete_.load(std::memory_order_acquire); }

  /// The header of `user_key` (hash `hash`), null if the table holds none.
  Header* Find(const rocksdb::Slice& user_key, uint64_t hash) const {
    size_t at = hash & mask_;
    for (int probe = 0; probe < kMaxProbes; ++probe, at = (at + 1) & mask_) {
      const uintptr_t slot = slots_[at].load(std::memory_order_acquire);
      if (slot == 0) return nullptr;
      if (Matches(slot, user_key, hash)) return Unpack(slot);
    }
    return nullptr;
  }

  /// Enters `header` (of `user_key`, hash `hash`), unless the table holds it already.
  void Enter(Header* header, const rocksdb::Slice& user_key, uint64_t hash) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(header);
    if ((address >> kTagShift) != 0 || used_.load(std::memory_order_relaxed) >= limit()) {
      incomplete_.store(true, std::memory_order_release);
      return;
    }
    const uintptr_t packed = (Tag(hash) << kTagShift) | address;
    size_t at = hash & mask_;
    for (int probe = 0; probe < kMaxProbes; ++probe, at = (at + 1) & mask_) {
      uintptr_t slot = slots_[at].load(std::memory_order_acquire);
      if (slot == 0) {
        if (slots_[at].compare_exchange_strong(slot, packed, std::memory_order_release,
                                               std::memory_order_acquire)) {
          used_.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        // Another header took the slot meanwhile: it may be this one.
      }
      if (Matches(slot, user_key, hash)) return;
    }
    incomplete_.store(true, std::memory_order_release);
  }

 private:
  static constexpr int kMaxProbes = 32;
  // x86-64 and AArch64 user-space addresses fit in 48 bits; another one is not entered.
  static constexpr int kTagShift = 48;

  static uintptr_t Tag(uint64_t hash) { return hash >> kTagShift; }
  static Header* Unpack(uintptr_t slot) {
    return reinterpret_cast<Header*>(slot & ((uintptr_t{1} << kTagShift) - 1));
  }
  size_t limit() const { return (mask_ + 1) / 4 * 3; }

  bool Matches(uintptr_t slot, const rocksdb::Slice& user_key, uint64_t hash) const {
    if ((slot >> kTagShift) != Tag(hash)) return false;
    return UserKeyOf(GetLengthPrefixed(Unpack(slot)->Key())) == user_key;
  }
  static rocksdb::Slice GetLengthPrefixed(const char* p) {
    uint32_t length = 0;
    int shift = 0;
    for (;; shift += 7) {
      const uint8_t byte = static_cast<uint8_t>(*p++);
      length |= static_cast<uint32_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) break;
    }
    return rocksdb::Slice(p, length);
  }

  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  static_assert(std::is_trivially_default_constructible_v<std::atomic<uintptr_t>> &&
                    std::is_trivially_destructible_v<std::atomic<uintptr_t>> &&
                    sizeof(std::atomic<uintptr_t>) == sizeof(uintptr_t) &&
                    std::atomic<uintptr_t>::is_always_lock_free,
                "a zeroed uintptr_t is an empty slot");

  const size_t mask_;
  const std::unique_ptr<std::atomic<uintptr_t>[], Free> slots_;
  std::atomic<size_t> used_{0};
  std::atomic<bool> incomplete_{false};
};

uint64_t HashOf(const rocksdb::Slice& user_key) {
  return XXH3_64bits(user_key.data(), user_key.size());
}

class Rep final : public rocksdb::MemTableRep {
 public:
  Rep(const rocksdb::MemTableRep::KeyComparator& compare, rocksdb::Allocator* allocator,
      size_t index_slots)
      : rocksdb::MemTableRep(allocator),
        compare_(compare),
        list_(HeaderOrder{&compare}),
        index_(index_slots) {}

  rocksdb::KeyHandle Allocate(const size_t len, char** buf) override {
    char* memory = nullptr;
    rocksdb::MemTableRep::Allocate(sizeof(Version) + len + alignof(Version) - 1, &memory);
    auto* version = reinterpret_cast<Version*>(
        (reinterpret_cast<uintptr_t>(memory) + alignof(Version) - 1) & ~(alignof(Version) - 1));
    new (version) Version{{nullptr}, {nullptr}};
    *buf = const_cast<char*>(version->Entry());
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
    const Version* v = FirstAtOrAfter(header, key);
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
    for (const Version* v = FirstAtOrAfter(header, key);
         v != nullptr && callback(callback_args, v->Entry());
         v = v->next.load(std::memory_order_acquire)) {
    }
  }

  size_t ApproximateMemoryUsage() override { return index_.bytes(); }

  rocksdb::MemTableRep::Iterator* GetIterator(rocksdb::Arena* arena) override {
    if (arena == nullptr) return new Iter(this);
    void* memory = arena->AllocateAligned(sizeof(Iter), 0, nullptr);
    return new (memory) Iter(this);
  }

 private:
  bool Add(rocksdb::KeyHandle handle, bool alone) {
    const char* entry = static_cast<const char*>(handle);
    const rocksdb::Slice key = compare_.decode_key(entry);
    const rocksdb::Slice user_key = UserKeyOf(key);
    const uint64_t hash = HashOf(user_key);
    Header* header = index_.Find(user_key, hash);
    if (header == nullptr) {
      header = index_.incomplete() ? SearchHeader(user_key) : nullptr;
      if (header == nullptr) header = LinkHeader(user_key, alone);
      // Entered before this insert returns, so before RocksDB shows the write to readers; a
      // header linked by another insert not yet entered is entered here too.
      index_.Enter(header, user_key, hash);
    }
    return AddVersion(header, Version::Of(entry), key);
  }

  /// Links a header for `user_key`, or finds the one another insert linked first.
  Header* LinkHeader(const rocksdb::Slice& user_key, bool alone) {
    const HeaderKey key(user_key);
    const rocksdb::Slice internal = key.slice();
    char length[5];
    const size_t length_bytes = PutVarint32(length, static_cast<uint32_t>(internal.size()));
    const size_t entry_bytes = sizeof(Header) + length_bytes + internal.size();
    const int height = List::RandomHeight();
    char* memory = nullptr;
    rocksdb::MemTableRep::Allocate(List::NodeBytes(height, entry_bytes), &memory);
    char* entry = List::MakeNode(memory, height);
    auto* header = new (entry) Header{{nullptr}, {nullptr}};
    char* p = entry + sizeof(Header);
    std::memcpy(p, length, length_bytes);
    std::memcpy(p + length_bytes, internal.data(), internal.size());
    (void)header;
    return Header::Of(list_.Insert(entry, alone));
  }

  /// The header of `user_key` in the skip list, null if none.
  Header* SearchHeader(const rocksdb::Slice& user_key) const {
    const HeaderKey key(user_key);
    List::Node* node = list_.Seek(key.slice());
    if (node == nullptr || UserKeyOfHeader(node->Entry()) != user_key) return nullptr;
    return Header::Of(node->Entry());
  }

  /// The header of `user_key`, null if none.
  const Header* FindHeader(const rocksdb::Slice& user_key) const {
    const Header* header = index_.Find(user_key, HashOf(user_key));
    if (header == nullptr && index_.incomplete()) header = SearchHeader(user_key);
    return header;
  }

  rocksdb::Slice UserKeyOfHeader(const char* entry) const {
    return UserKeyOf(compare_.decode_key(Header::Of(entry)->Key()));
  }

  /// Links `version` into its user key's chain at its place (a new one first: one comparison);
  /// false if an equal entry is there.
  bool AddVersion(Header* header, Version* version, const rocksdb::Slice& key) const {
    std::atomic<Version*>* link = &header->versions;
    Version* before = nullptr;
    Version* next = link->load(std::memory_order_acquire);
    while (true) {
      for (; next != nullptr; next = link->load(std::memory_order_acquire)) {
        const int cmp = compare_(next->Entry(), key);
        if (cmp == 0) return false;
        if (cmp > 0) break;
        before = next;
        link = &next->next;
      }
      version->before.store(before, std::memory_order_relaxed);
      version->next.store(next, std::memory_order_relaxed);
      if (link->compare_exchange_weak(next, version, std::memory_order_release,
                                      std::memory_order_acquire)) {
        break;
      }
      // Another version was linked here meanwhile: `next` is it; go on from `link`.
    }
    // The hints (Header): `version` is before `next`, and was at the end if nothing follows it.
    if (next != nullptr) {
      next->before.store(version, std::memory_order_release);
    } else {
      header->oldest.store(version, std::memory_order_release);
    }
    return true;
  }

  /// The first version of `header`'s chain at or after `key`, null if none.
  const Version* FirstAtOrAfter(const Header* header, const rocksdb::Slice& key) const {
    const Version* v = header->versions.load(std::memory_order_acquire);
    while (v != nullptr && compare_(v->Entry(), key) < 0) {
      v = v->next.load(std::memory_order_acquire);
    }
    return v;
  }

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
      // From the hint (a version before this one, or the first) to the one right before it.
      const Version* before = version_->before.load(std::memory_order_acquire);
      for (const Version* v = before != nullptr ? before->next.load(std::memory_order_acquire)
                                                : Chain(node_);
           v != version_; v = v->next.load(std::memory_order_acquire)) {
        before = v;
      }
      if (before != nullptr) {
        version_ = before;
      } else {
        Backward(rep_->list_.Before(rep_->list_.compare().Decode(node_->Entry())));
      }
    }
    void Seek(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      const rocksdb::Slice target = Target(internal_key, memtable_key);
      const rocksdb::Slice user_key = UserKeyOf(target);
      const HeaderKey header_key(user_key);
      node_ = rep_->list_.Seek(header_key.slice());
      if (node_ != nullptr && rep_->UserKeyOfHeader(node_->Entry()) == user_key) {
        version_ = rep_->FirstAtOrAfter(Header::Of(node_->Entry()), target);
        if (version_ == nullptr) Forward(node_->Next(0));
      } else {
        Forward(node_);
      }
    }
    void SeekForPrev(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      const rocksdb::Slice target = Target(internal_key, memtable_key);
      const rocksdb::Slice user_key = UserKeyOf(target);
      const HeaderKey header_key(user_key);
      List::Node* at = rep_->list_.Seek(header_key.slice());
      if (at != nullptr && rep_->UserKeyOfHeader(at->Entry()) == user_key) {
        const Version* last = nullptr;
        for (const Version* v = Chain(at); v != nullptr && rep_->compare_(v->Entry(), target) <= 0;
             v = v->next.load(std::memory_order_acquire)) {
          last = v;
        }
        if (last != nullptr) {
          node_ = at;
          version_ = last;
          return;
        }
      }
      // Every version before `target` is under a header before the one of its user key.
      Backward(rep_->list_.Before(header_key.slice()));
    }
    void SeekToFirst() override { Forward(rep_->list_.First()); }
    void SeekToLast() override { Backward(rep_->list_.Last()); }

   private:
    static const Version* Chain(const List::Node* node) {
      return Header::Of(node->Entry())->versions.load(std::memory_order_acquire);
    }
    /// At the first version of `node` or of the first header after it with one.
    void Forward(List::Node* node) {
      for (; node != nullptr; node = node->Next(0)) {
        if (const Version* v = Chain(node)) {
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
      while (node != nullptr) {
        const Header* header = Header::Of(node->Entry());
        const Version* v = header->oldest.load(std::memory_order_acquire);
        if (v == nullptr) v = Chain(node);
        if (v != nullptr) {
          for (const Version* next = v->next.load(std::memory_order_acquire); next != nullptr;
               next = next->next.load(std::memory_order_acquire)) {
            v = next;
          }
          node_ = node;
          version_ = v;
          return;
        }
        node = rep_->list_.Before(rep_->list_.compare().Decode(node->Entry()));
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

  const rocksdb::MemTableRep::KeyComparator& compare_;
  List list_;
  KeyIndex index_;
};

class Factory final : public rocksdb::MemTableRepFactory {
 public:
  explicit Factory(size_t index_slots) : index_slots_(index_slots) {}
  rocksdb::MemTableRep* CreateMemTableRep(const rocksdb::MemTableRep::KeyComparator& compare,
                                          rocksdb::Allocator* allocator,
                                          const rocksdb::SliceTransform*,
                                          rocksdb::Logger*) override {
    return new Rep(compare, allocator, index_slots_);
  }
  const char* Name() const override { return "KvmeshSkipList"; }
  bool IsInsertConcurrentlySupported() const override { return true; }
  bool CanHandleDuplicatedKey() const override { return false; }

 private:
  const size_t index_slots_;
};

}  // namespace

std::shared_ptr<rocksdb::MemTableRepFactory> NewMemTableFactory(size_t write_buffer_size) {
  // A slot (8 bytes) per 64 bytes of memtable: an entry of a 100-byte value takes ~170, so the
  // table stays under half full there; smaller entries of many distinct keys may fill it, and the
  // keys past it are found by the skip list.
  size_t slots = 1024;
  while (slots < write_buffer_size / 64) slots *= 2;
  return std::make_shared<Factory>(slots);
}

}  // namespace kvmesh::storage
