#include "common/request_limits.hpp"

#include <string>

#include "common/path.hpp"

namespace kvmesh {

Status CheckBatchLimits(const WriteBatch& batch) {
  if (batch.ops.size() > kMaxBatchOps) {
    return Status::InvalidArgument("batch has " + std::to_string(batch.ops.size()) +
                                   " operations; the maximum is " + std::to_string(kMaxBatchOps));
  }
  size_t bytes = 0;
  for (const WriteOp& op : batch.ops) {
    bytes += op.key.size() + (op.kind != WriteOp::Kind::kErase ? op.value.size() : 0);
  }
  if (bytes > kMaxBatchBytes) {
    return Status::InvalidArgument("batch holds " + FormatSize(bytes) +
                                   " of keys and values; the maximum is " +
                                   FormatSize(kMaxBatchBytes));
  }
  return Status::OK();
}

Status CheckValueFitsRequest(std::string_view key, size_t value_bytes) {
  if (value_bytes <= kMaxBatchBytes) return Status::OK();
  return Status::ValueTooLarge("value for key " + Quote(key) + " is " + FormatSize(value_bytes) +
                               "; no kvmesh node accepts values over " +
                               FormatSize(kMaxBatchBytes) + " (nothing was sent)");
}

}  // namespace kvmesh
