// Human-readable byte sizes, as written in database configs ("size: 100MB").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kvmesh/status.hpp"

// FormatSize (the reverse, for messages) lives in kvmesh/status.hpp: every layer needs it.

namespace kvmesh::config {

/// Parses `text` into a byte count. Accepted: a non-negative number (integer or decimal, e.g.
/// "1.5") optionally followed by spaces and a unit: B, KB, MB, GB, TB (powers of 1000) or KiB,
/// MiB, GiB, TiB (powers of 1024); unit letters are case-insensitive except that the "i" form is
/// what selects 1024. A bare number is bytes. A fractional result is rounded down to whole bytes.
/// Errors (Code::kInvalidConfig): empty text, unknown unit, malformed number, overflow of 64 bits.
Status ParseSize(std::string_view text, uint64_t* bytes);

/// `bytes` as a config would write it, exactly (ParseSize gives `bytes` back): the largest unit
/// that divides it among GB, GiB, MB, MiB, KB, KiB ("100MB", "64MiB"), else a bare number.
std::string FormatConfigSize(uint64_t bytes);

}  // namespace kvmesh::config
