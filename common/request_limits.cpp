#include "common/request_limits.hpp"

#include <string>

#include "common/path.hpp"

namespace kvmesh {

bool HasChecks(const WriteBatch& batch) {
  for (const WriteOp& op : batch.ops) {
    if (op.kind == WriteOp::Kind::kCheck) return true;
  }
  return false;
}

size_t BatchBytes(const WriteBatch& batch) {
  size_t bytes = 0;
  for (const WriteOp& op : batch.ops) {
    bytes += op.key.size() + (op.kind != WriteOp::Kind::kErase ? op.value.size() : 0);
  }
  return bytes;
}

Status CheckBatchLimits(const WriteBatch& batch) {
  if (batch.ops.size() > kMaxBatchOps) {
    return Status::InvalidArgument("batch has " + std::to_string(batch.ops.size()) +
                                   " operations; the maximum is " + std::to_string(kMaxBatchOps));
  }
  const size_t bytes = BatchBytes(batch);
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

Status ParseTtl(std::string_view text, std::chrono::milliseconds* ttl) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("ttl " + Quote(text) + " " + why +
                                   " (give a positive number with ms, s, m, h or d, e.g. 30s)");
  };
  size_t digits = 0;
  uint64_t number = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    if (number > kMaxTtlMs) return bad("is too long");
    number = number * 10 + static_cast<uint64_t>(text[digits] - '0');
    ++digits;
  }
  if (digits == 0) return bad("is not a duration");
  const std::string_view unit = text.substr(digits);
  uint64_t scale = 0;
  if (unit == "ms") {
    scale = 1;
  } else if (unit.empty() || unit == "s") {
    scale = 1000;
  } else if (unit == "m") {
    scale = 60 * 1000;
  } else if (unit == "h") {
    scale = 3600 * 1000;
  } else if (unit == "d") {
    scale = 24 * 3600 * 1000;
  } else {
    return bad("has an unknown unit");
  }
  if (number == 0) return bad("is zero");
  if (number > kMaxTtlMs / scale) return bad("is longer than the maximum of about 100 years");
  *ttl = std::chrono::milliseconds(number * scale);
  return Status::OK();
}

}  // namespace kvmesh
