// The memtable representation a Store opens with.
//
// Why not RocksDB's own: Debian's librocksdb (7.8.3) is built with assertions on, and its skip
// list's insert checks its whole search path after every insert: about four key comparisons per
// level, so O(log n) comparisons per insert even when the insert hint (or the sequential
// splice) has already found the place in O(1). That made an append cost ~17 comparisons at 100k
// entries and the memtable insert the largest part of a batch write. This is the same skip
// list (RocksDB's code, storage/rocksdb_inlineskiplist.h) compiled with kvmesh's flags: an
// append with a hint costs ~3 comparisons. The memtable's format, and the files on disk, are
// unchanged; a store written with either opens with the other.
#pragma once

#include <rocksdb/memtablerep.h>

#include <memory>

namespace kvmesh::storage {

/// The memtable factory for a Store: RocksDB's skip list compiled into kvmesh when built against
/// RocksDB 7.8 (whose internal interfaces it relies on), else RocksDB's own SkipListFactory.
std::shared_ptr<rocksdb::MemTableRepFactory> NewMemtableFactory();

/// True if NewMemtableFactory returns kvmesh's copy (built against RocksDB 7.8).
bool MemtableIsKvmeshCopy();

}  // namespace kvmesh::storage
