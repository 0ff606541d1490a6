// The memtable every Store opens with, in place of RocksDB's default one (SkipListFactory).
//
// Why: Debian's librocksdb (7.8.3) is built with assertions on, and its skip list checks every
// step of every search with two more key comparisons (and every insert's new links with two per
// level): a memtable insert compared ~25 keys per appended entry and ~40 per overwriting one
// (tests/memtable_test.cpp), three times what the search itself needs. Memtable inserts were 35%
// of a follower's CPU in a 3-node cluster and the largest part of a bulk load's, and every point
// lookup in the memtable (each write reads the record it replaces) paid the same. Even without
// those checks, a skip list of every version searches ~30 nodes for a key among 400k entries.
//
// What it is: a skip list with one node per user key (its header), each with the chain of that
// key's versions (the entries RocksDB encodes: length-prefixed internal key, then the value),
// newest first, and a hash table from user key to header. A write of a key the memtable holds
// (every overwrite, and a database's meta record at every commit) finds the header in the table
// and links its version first in the chain: one comparison, where a skip list of every version
// searched ~30 nodes, each a likely cache miss (~3 us of a follower's put in a 3-node cluster). A
// point lookup (RocksDB's Get, and each write's read of the record it replaces) goes the same
// way. Scans walk the headers and their chains in RocksDB's order.
//
// The skip list (storage/skip_list.hpp, height up to 12, a quarter of the nodes one level higher)
// and the chains (storage/version_chain.hpp, with the hash table) are allocated from the
// memtable's arena with their links in front of the entry.
// Readers never lock; inserts link with a compare-and-swap per level or chain link, so RocksDB's
// concurrent memtable writes (allow_concurrent_memtable_write, on by default) stay on, and two
// inserts of the same new key link one header between them. A header that RocksDB inserts alone
// (one writer per write group, the usual case) starts its search from where the previous one went
// when its key comes after that one's, so a sorted batch of new keys inserts each a few
// comparisons from the last; it takes no insert hints (memtable_insert_with_hint_prefix_extractor).
//
// The hash table has a fixed size: a slot of 8 bytes per 48 to 96 bytes of write buffer (a
// twelfth to a sixth of it, counted in the memtable's memory, so RocksDB flushes that much
// earlier). From a store's third memtable on, each comes with its pages in, mapped on a thread of
// its own while the memtable before filled (one table's memory is kept spare:
// storage/version_chain.hpp's SpareSlots). Past half full, the keys it cannot hold are found by
// the skip list instead, and a filter of their hashes (four bits per slot, counted too) says which
// keys it lacks may be among them. Keys must compare bytewise (RocksDB's default comparator, the
// Store's) without timestamps: the table finds a key by its bytes. For any other comparator the
// factory is RocksDB's own skip list.
//
// What it relies on of RocksDB beyond its public headers (both checked by every test that reads
// a memtable, tests/memtable_test.cpp first): the layout of LookupKey (its first member points at
// the memtable key, as since LevelDB), and rocksdb::Arena::AllocateAligned, which the library
// exports, to place an iterator in the arena RocksDB hands over.
#pragma once

#include <rocksdb/comparator.h>
#include <rocksdb/memtablerep.h>

#include <memory>

namespace kvmesh::storage {

/// A factory of kvmesh's memtable (above) for rocksdb::Options::memtable_factory, whose hash
/// tables are sized for memtables of `write_buffer_size` bytes (rocksdb::Options's); RocksDB's
/// own skip list unless `comparator` (rocksdb::Options's) is rocksdb::BytewiseComparator().
std::shared_ptr<rocksdb::MemTableRepFactory> NewMemTableFactory(
    size_t write_buffer_size, const rocksdb::Comparator* comparator);

/// The memory a factory from NewMemTableFactory keeps ready for its next memtable's key table
/// (storage/version_chain.hpp's SpareSlots): none until a second memtable was made, then one
/// table's. RocksDB's memory figures do not count it. 0 for any other factory. Thread-safe.
size_t SpareKeyTableBytes(rocksdb::MemTableRepFactory& factory);

}  // namespace kvmesh::storage
