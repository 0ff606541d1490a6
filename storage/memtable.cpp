#include "storage/memtable.hpp"

#include <rocksdb/slice.h>
#include <rocksdb/version.h>

#include <cstring>
#include <new>

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

/// RocksDB's memtable key order for the skip list: entries are length-prefixed internal keys
/// (then the value), compared with a decoded internal key.
struct EntryOrder {
  using Key = rocksdb::Slice;
  const rocksdb::MemTableRep::KeyComparator* compare;
  int operator()(const char* entry, const rocksdb::Slice& key) const {
    return (*compare)(entry, key);
  }
  rocksdb::Slice Decode(const char* entry) const { return compare->decode_key(entry); }
};
using List = SkipList<EntryOrder>;

/// What LookupKey (db/dbformat.h, not installed) starts with: where its memtable key begins.
const char* MemtableKeyOf(const rocksdb::LookupKey& key) {
  const char* start = nullptr;
  std::memcpy(&start, &key, sizeof(start));
  return start;
}

class Rep final : public rocksdb::MemTableRep {
 public:
  Rep(const rocksdb::MemTableRep::KeyComparator& compare, rocksdb::Allocator* allocator)
      : rocksdb::MemTableRep(allocator), list_(EntryOrder{&compare}) {}

  rocksdb::KeyHandle Allocate(const size_t len, char** buf) override {
    const int height = List::RandomHeight();
    char* memory = nullptr;
    rocksdb::MemTableRep::Allocate(List::NodeBytes(height, len), &memory);
    *buf = List::MakeNode(memory, height);
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
    const rocksdb::Slice key = list_.compare().Decode(entry);
    List::Node* x = list_.Seek(key);
    return x != nullptr && list_.compare()(x->Entry(), key) == 0;
  }

  void Get(const rocksdb::LookupKey& lookup, void* callback_args,
           bool (*callback)(void* arg, const char* entry)) override {
    const rocksdb::Slice key = list_.compare().Decode(MemtableKeyOf(lookup));
    for (List::Node* x = list_.Seek(key); x != nullptr && callback(callback_args, x->Entry());
         x = x->Next(0)) {
    }
  }

  // Everything it holds is in the arena, which RocksDB counts.
  size_t ApproximateMemoryUsage() override { return 0; }

  rocksdb::MemTableRep::Iterator* GetIterator(rocksdb::Arena* arena) override {
    if (arena == nullptr) return new Iter(&list_);
    void* memory = arena->AllocateAligned(sizeof(Iter), 0, nullptr);
    return new (memory) Iter(&list_);
  }

 private:
  bool Add(rocksdb::KeyHandle handle, bool alone) {
    list_.Insert(static_cast<char*>(handle), alone);
    return true;
  }

  class Iter final : public rocksdb::MemTableRep::Iterator {
   public:
    explicit Iter(const List* list) : list_(list) {}
    bool Valid() const override { return node_ != nullptr; }
    const char* key() const override { return node_->Entry(); }
    void Next() override { node_ = node_->Next(0); }
    void Prev() override { node_ = list_->Before(list_->compare().Decode(node_->Entry())); }
    void Seek(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      node_ = list_->Seek(Target(internal_key, memtable_key));
    }
    void SeekForPrev(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      const rocksdb::Slice target = Target(internal_key, memtable_key);
      node_ = list_->Seek(target);
      if (node_ == nullptr) node_ = list_->Last();
      // Backs off while an entry linked meanwhile (after the Seek) still lies after `target`.
      while (node_ != nullptr && list_->compare()(node_->Entry(), target) > 0) Prev();
    }
    void SeekToFirst() override { node_ = list_->First(); }
    void SeekToLast() override { node_ = list_->Last(); }

   private:
    rocksdb::Slice Target(const rocksdb::Slice& internal_key, const char* memtable_key) const {
      return memtable_key != nullptr ? list_->compare().Decode(memtable_key) : internal_key;
    }
    const List* list_;
    List::Node* node_ = nullptr;
  };

  List list_;
};

class Factory final : public rocksdb::MemTableRepFactory {
 public:
  rocksdb::MemTableRep* CreateMemTableRep(const rocksdb::MemTableRep::KeyComparator& compare,
                                          rocksdb::Allocator* allocator,
                                          const rocksdb::SliceTransform*,
                                          rocksdb::Logger*) override {
    return new Rep(compare, allocator);
  }
  const char* Name() const override { return "KvmeshSkipList"; }
  bool IsInsertConcurrentlySupported() const override { return true; }
  bool CanHandleDuplicatedKey() const override { return false; }
};

}  // namespace

std::shared_ptr<rocksdb::MemTableRepFactory> NewMemTableFactory() {
  return std::make_shared<Factory>();
}

}  // namespace kvmesh::storage
