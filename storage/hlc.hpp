// The layout of the hybrid-logical-clock timestamps that order writes (storage::Store assigns
// them; replication compares them with wall-clock horizons). Known here only.
//
// A timestamp is wall-clock milliseconds since the Unix epoch shifted left by kSubMsBits, with
// the time below the millisecond scaled into the low bits. Store::NextTimestamps keeps them
// strictly increasing per node (taking the last one plus one when the clock has not moved) and
// Store::ObserveTimestamp pulls them past any seen from other nodes, so a later write wins also
// within one millisecond.
#pragma once

#include <chrono>
#include <cstdint>

namespace kvmesh::storage::hlc {

/// Bits below the millisecond.
inline constexpr int kSubMsBits = 16;

/// Timestamps from other nodes must be below this (the year 4200 or so): a clock pulled past it
/// (Store::ObserveTimestamp) would bring the counting above it (Store::NextTimestamps, expiry
/// times) within reach of wrapping around, after which a write would order before the record it
/// replaces on every replica.
inline constexpr uint64_t kMaxTimestamp = uint64_t{1} << 62;

/// The timestamp of `time` (nanosecond resolution, scaled into the low bits).
inline uint64_t FromTime(std::chrono::system_clock::time_point time) {
  const uint64_t ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
  const uint64_t ms = ns / 1000000;
  return (ms << kSubMsBits) + ((ns % 1000000) << kSubMsBits) / 1000000;
}

/// The smallest timestamp of wall-clock millisecond `ms` (since the epoch, not negative).
inline uint64_t FromMillis(int64_t ms) {
  return static_cast<uint64_t>(ms) << kSubMsBits;
}

}  // namespace kvmesh::storage::hlc
