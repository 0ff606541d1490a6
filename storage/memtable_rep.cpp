#include "storage/memtable_rep.hpp"

#include <rocksdb/version.h>

#if ROCKSDB_MAJOR == 7 && ROCKSDB_MINOR == 8
#define KVMESH_MEMTABLE_COPY 1
#include <new>
#include <string>

#include "storage/rocksdb_inlineskiplist.h"
#endif

namespace kvmesh::storage {

#if KVMESH_MEMTABLE_COPY
namespace {

using rocksdb_copy::InlineSkipList;
using List = InlineSkipList<const rocksdb::MemTableRep::KeyComparator&>;

// The length-prefixed (varint32) form in which the memtable stores and compares keys
// (RocksDB's EncodeKey in db/memtable.cc, not exported).
const char* EncodeKey(std::string* scratch, const rocksdb::Slice& target) {
  scratch->clear();
  auto size = static_cast<uint32_t>(target.size());
  while (size >= 0x80) {
    scratch->push_back(static_cast<char>(size | 0x80));
    size >>= 7;
  }
  scratch->push_back(static_cast<char>(size));
  scratch->append(target.data(), target.size());
  return scratch->data();
}

// RocksDB 7.8's LookupKey (db/lookup_key.h) begins with the pointer to its memtable key; its
// accessor is inline in an internal header. The base MemTableRep::Get that needs no such access
// leaks the iterator it makes (7.8's db/memtable.cc), so Get reads the pointer itself.
struct LookupKeyLayout {
  const char* start;  // memtable key: varint32 length, user key, 8-byte sequence and type
  const char* kstart;
  const char* end;
};
const char* MemtableKey(const rocksdb::LookupKey& key) {
  return reinterpret_cast<const LookupKeyLayout*>(&key)->start;
}

// RocksDB 7.8's memtable/skiplistrep.cc without its lookahead iterator (a factory option kvmesh
// does not use) and without UniqueRandomSample (only for the experimental mempurge).
class SkipListRep final : public rocksdb::MemTableRep {
 public:
  SkipListRep(const KeyComparator& compare, rocksdb::Allocator* allocator)
      : MemTableRep(allocator), list_(compare, allocator) {}

  rocksdb::KeyHandle Allocate(const size_t len, char** buf) override {
    *buf = list_.AllocateKey(len);
    return static_cast<rocksdb::KeyHandle>(*buf);
  }
  void Insert(rocksdb::KeyHandle handle) override { list_.Insert(static_cast<char*>(handle)); }
  bool InsertKey(rocksdb::KeyHandle handle) override {
    return list_.Insert(static_cast<char*>(handle));
  }
  void InsertWithHint(rocksdb::KeyHandle handle, void** hint) override {
    list_.InsertWithHint(static_cast<char*>(handle), hint);
  }
  bool InsertKeyWithHint(rocksdb::KeyHandle handle, void** hint) override {
    return list_.InsertWithHint(static_cast<char*>(handle), hint);
  }
  void InsertWithHintConcurrently(rocksdb::KeyHandle handle, void** hint) override {
    list_.InsertWithHintConcurrently(static_cast<char*>(handle), hint);
  }
  bool InsertKeyWithHintConcurrently(rocksdb::KeyHandle handle, void** hint) override {
    return list_.InsertWithHintConcurrently(static_cast<char*>(handle), hint);
  }
  void InsertConcurrently(rocksdb::KeyHandle handle) override {
    list_.InsertConcurrently(static_cast<char*>(handle));
  }
  bool InsertKeyConcurrently(rocksdb::KeyHandle handle) override {
    return list_.InsertConcurrently(static_cast<char*>(handle));
  }
  bool Contains(const char* key) const override { return list_.Contains(key); }
  // All memory comes from the allocator, which RocksDB accounts for itself.
  size_t ApproximateMemoryUsage() override { return 0; }

  void Get(const rocksdb::LookupKey& key, void* callback_args,
           bool (*callback_func)(void* arg, const char* entry)) override {
    List::Iterator it(&list_);
    for (it.Seek(MemtableKey(key)); it.Valid() && callback_func(callback_args, it.key());
         it.Next()) {
    }
  }

  uint64_t ApproximateNumEntries(const rocksdb::Slice& start_ikey,
                                 const rocksdb::Slice& end_ikey) override {
    std::string scratch;
    const uint64_t start = list_.EstimateCount(EncodeKey(&scratch, start_ikey));
    const uint64_t end = list_.EstimateCount(EncodeKey(&scratch, end_ikey));
    return end >= start ? end - start : 0;
  }

  class Iterator final : public rocksdb::MemTableRep::Iterator {
   public:
    explicit Iterator(const List* list) : it_(list) {}
    bool Valid() const override { return it_.Valid(); }
    const char* key() const override { return it_.key(); }
    void Next() override { it_.Next(); }
    void Prev() override { it_.Prev(); }
    void Seek(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      it_.Seek(memtable_key != nullptr ? memtable_key : EncodeKey(&scratch_, internal_key));
    }
    void SeekForPrev(const rocksdb::Slice& internal_key, const char* memtable_key) override {
      it_.SeekForPrev(memtable_key != nullptr ? memtable_key : EncodeKey(&scratch_, internal_key));
    }
    void RandomSeek() override { it_.RandomSeek(); }
    void SeekToFirst() override { it_.SeekToFirst(); }
    void SeekToLast() override { it_.SeekToLast(); }

   private:
    List::Iterator it_;
    std::string scratch_;
  };

  // With an arena, RocksDB destroys the iterator without freeing it: it must live in the arena.
  // RocksDB 7.8's Arena (memory/arena.h) is a plain subclass of Allocator, so the cast is exact.
  rocksdb::MemTableRep::Iterator* GetIterator(rocksdb::Arena* arena) override {
    if (arena == nullptr) return new Iterator(&list_);
    void* memory = reinterpret_cast<rocksdb::Allocator*>(arena)->AllocateAligned(sizeof(Iterator));
    return new (memory) Iterator(&list_);
  }

 private:
  List list_;
};

class SkipListFactory final : public rocksdb::MemTableRepFactory {
 public:
  using MemTableRepFactory::CreateMemTableRep;
  rocksdb::MemTableRep* CreateMemTableRep(const rocksdb::MemTableRep::KeyComparator& compare,
                                          rocksdb::Allocator* allocator,
                                          const rocksdb::SliceTransform* /*transform*/,
                                          rocksdb::Logger* /*logger*/) override {
    return new SkipListRep(compare, allocator);
  }
  const char* Name() const override { return "KvmeshSkipListFactory"; }
  bool IsInsertConcurrentlySupported() const override { return true; }
  bool CanHandleDuplicatedKey() const override { return true; }
};

}  // namespace

std::shared_ptr<rocksdb::MemTableRepFactory> NewMemtableFactory() {
  return std::make_shared<SkipListFactory>();
}
bool MemtableIsKvmeshCopy() {
  return true;
}

#else

std::shared_ptr<rocksdb::MemTableRepFactory> NewMemtableFactory() {
  return std::make_shared<rocksdb::SkipListFactory>();
}
bool MemtableIsKvmeshCopy() {
  return false;
}

#endif

}  // namespace kvmesh::storage
