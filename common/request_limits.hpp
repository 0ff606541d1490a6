// The size limits every request must meet, checked where a request is made (the client library,
// before anything is sent) and where it is applied (storage). No CAF.
#pragma once

#include <chrono>
#include <cstddef>
#include <string_view>

#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh {

/// Bytes of keys and put values in `batch`: what kMaxBatchBytes bounds (an erase's value is
/// ignored).
size_t BatchBytes(const WriteBatch& batch);

/// OK if `batch` has at most kMaxBatchOps operations and at most kMaxBatchBytes of keys and put
/// values; otherwise kInvalidArgument saying which limit and by how much.
Status CheckBatchLimits(const WriteBatch& batch);

/// True if `batch` holds a check (a conditional write): such a batch is judged by one replica
/// and always travels alone.
bool HasChecks(const WriteBatch& batch);

/// OK if a value of `value_bytes` for `key` fits in a request any node accepts (at most
/// kMaxBatchBytes, the cap of NodeOptions::max_value_bytes); otherwise kValueTooLarge naming the
/// key and both sizes. A node's own max_value_bytes may be smaller: it checks that itself.
Status CheckValueFitsRequest(std::string_view key, size_t value_bytes);

/// Reads a ttl as the CLI and the HTTP API take it: a positive whole number with a unit, ms, s,
/// m, h or d ("500ms", "30s", "2h"), a bare number meaning seconds; at most kMaxTtlMs.
/// Otherwise kInvalidArgument quoting the text.
Status ParseTtl(std::string_view text, std::chrono::milliseconds* ttl);

}  // namespace kvmesh
