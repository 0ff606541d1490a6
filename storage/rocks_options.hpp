// The RocksDB options a Store opens with, for the store itself and for tools that must measure
// raw RocksDB "with the same options" (kvmesh-bench's baseline).
#pragma once

#include <rocksdb/options.h>

#include "storage/store.hpp"

namespace kvmesh::storage {

/// DB options for a store opened with `options` (create if missing, bloom filters, block cache).
rocksdb::Options RocksOptions(const StoreOptions& options);

/// Write options for a store opened with `options` (sync as configured).
rocksdb::WriteOptions RocksWriteOptions(const StoreOptions& options);

}  // namespace kvmesh::storage
