// Internal to storage/: RocksDB status to kvmesh Status.
#pragma once

#include <rocksdb/status.h>

#include <string>

#include "kvmesh/status.hpp"

namespace kvmesh::storage {

/// Corruption stays corruption; everything else (disk full, permissions, a lock held by another
/// process) is Code::kIOError. The message is "`context`: <RocksDB's text>".
inline Status FromRocksStatus(const rocksdb::Status& s, const std::string& context) {
  if (s.ok()) return Status::OK();
  std::string message = context + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(std::move(message));
  return Status::IOError(std::move(message));
}

}  // namespace kvmesh::storage
