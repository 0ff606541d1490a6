// The memtable every Store opens with: a skip list of RocksDB's memtable entries, as RocksDB's
// default one (SkipListFactory) is, without the cost Debian's package adds to it.
//
// Why: Debian's librocksdb (7.8.3) is built with assertions on, and its skip list checks every
// step of every search with two more key comparisons (and every insert's new links with two per
// level): a memtable insert compared ~25 keys per appended entry and ~40 per overwriting one
// (tests/memtable_test.cpp), three times what the search itself needs. Memtable inserts were 35%
// of a follower's CPU in a 3-node cluster and the largest part of a bulk load's, and every point
// lookup in the memtable (each write reads the record it replaces) paid the same.
//
// What it is: a skip list (height up to 12, a quarter of the nodes one level higher) of the
// entries RocksDB encodes (length-prefixed internal key, then the value), each node allocated
// from the memtable's arena with its links in front of the entry. Readers never lock; inserts
// link a node bottom-up with a compare-and-swap per level, so RocksDB's concurrent memtable
// writes (allow_concurrent_memtable_write, on by default) stay on. A write that RocksDB makes
// alone (the usual case: one writer per write group) starts its search from where the previous
// such insert went when its key comes after that one's, so a sorted batch inserts each entry a
// few comparisons from the last instead of searching from the top. It takes no insert hints
// (memtable_insert_with_hint_prefix_extractor): that finger does their work for sorted runs.
//
// What it relies on of RocksDB beyond its public headers (both checked by every test that reads
// a memtable, tests/memtable_test.cpp first): the layout of LookupKey (its first member points at
// the memtable key, as since LevelDB), and rocksdb::Arena::AllocateAligned, which the library
// exports, to place an iterator in the arena RocksDB hands over.
#pragma once

#include <rocksdb/memtablerep.h>

#include <memory>

namespace kvmesh::storage {

/// A factory of kvmesh's memtable (above) for rocksdb::Options::memtable_factory.
std::shared_ptr<rocksdb::MemTableRepFactory> NewMemTableFactory();

}  // namespace kvmesh::storage
