// Internal to storage/: RocksDB status to kvmesh Status.
#pragma once

#include <rocksdb/status.h>

#include <string>

#include "kvmesh/status.hpp"

namespace kvmesh::storage {

/// Corruption stays corruption; a full disk is Code::kNoSpace (like the low-space state that
/// normally comes first, storage/space_monitor.hpp); everything else (permissions, a lock held by
/// another process) is Code::kIOError. The message is "`context`: <RocksDB's text>".
inline Status FromRocksStatus(const rocksdb::Status& s, const std::string& context) {
  if (s.ok()) return Status::OK();
  std::string message = context + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(std::move(message));
  if (s.IsNoSpace()) return Status::NoSpace(std::move(message));
  return Status::IOError(std::move(message));
}

}  // namespace kvmesh::storage
