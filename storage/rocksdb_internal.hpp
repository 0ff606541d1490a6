// The few pieces of RocksDB's internal (not installed) headers that storage/memtable_rep.cpp and
// its copy of RocksDB's skip list (storage/rocksdb_inlineskiplist.h) need, written to match
// RocksDB v7.8 exactly: storage/memtable_rep.cpp uses them only when built against 7.8.
#pragma once

#include <rocksdb/slice.h>

#include <cstddef>
#include <cstdint>
#include <random>

namespace rocksdb {

class Logger;

// memory/allocator.h of RocksDB 7.8: the interface of the memtable's arena. rocksdb/memtablerep.h
// only declares it, and a memtable representation allocates its nodes through it. Declared here
// token for token as RocksDB declares it (one definition rule: the library holds its vtable).
class Allocator {
 public:
  virtual ~Allocator() {}

  virtual char* Allocate(size_t bytes) = 0;
  virtual char* AllocateAligned(size_t bytes, size_t huge_page_size = 0,
                                Logger* logger = nullptr) = 0;

  virtual size_t BlockSize() const = 0;
};

}  // namespace rocksdb

// port/likely.h and port/port_posix.h of RocksDB.
#ifndef LIKELY
#define LIKELY(x) (__builtin_expect((x), 1))
#endif
#ifndef UNLIKELY
#define UNLIKELY(x) (__builtin_expect((x), 0))
#endif
#ifndef PREFETCH
#define PREFETCH(addr, rw, locality) __builtin_prefetch(addr, rw, locality)
#endif

namespace kvmesh::storage::rocksdb_copy {

using ::rocksdb::Allocator;
using ::rocksdb::Slice;

// util/random.h of RocksDB (the part the skip list uses): the node heights' random numbers.
class Random {
 public:
  enum : uint32_t { kMaxNext = 2147483647u };  // 2^31-1, the largest value Next() returns

  explicit Random(uint32_t s) : seed_(GoodSeed(s)) {}

  uint32_t Next() {
    // seed_ = (seed_ * A) % M, computed with ((x << 31) % M) == x.
    const uint64_t product = seed_ * kA;
    seed_ = static_cast<uint32_t>((product >> 31) + (product & kMaxNext));
    if (seed_ > kMaxNext) seed_ -= kMaxNext;
    return seed_;
  }

  /// One generator per thread, seeded at random (RocksDB's own is per thread too).
  static Random* GetTLSInstance() {
    thread_local Random instance(std::random_device{}());
    return &instance;
  }

 private:
  static constexpr uint64_t kA = 16807;
  static uint32_t GoodSeed(uint32_t s) { return (s & kMaxNext) != 0 ? (s & kMaxNext) : 1; }
  uint32_t seed_;
};

}  // namespace kvmesh::storage::rocksdb_copy
