// Read levels (README "Read levels"): the session token a Database handle keeps for
// read_your_writes, and the record a replica reports for a quorum read. No CAF, no storage: the
// client library uses the token too; storage compares records by its conflict rule
// (storage::NewerRecord) and checks a token against a version vector (storage::CoversToken).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"

namespace kvmesh {

/// Reads a read level as the CLI (--consistency) and HTTP (?consistency=) take it: "eventual",
/// "read_your_writes" or "quorum"; invalid_argument naming the bad value and the levels.
Status ParseReadLevel(std::string_view text, ReadConsistency* out);

/// The writes a session has had acknowledged, as dots (origin, counter): for each origin (a
/// database copy that accepted writes) the highest counter acknowledged. A replica covers it when
/// its version vector's base reaches that counter for every origin: it then holds every write
/// of the session (or a newer write of the same keys, which wins over it on every replica).
/// Text form: "origin:counter" pairs in hex joined by ','; "" for no writes.
class SessionToken {
 public:
  /// Most dots a token may hold: one per database copy that accepted the session's writes, so a
  /// real token stays far below it. Parse refuses longer text (kMaxBytes), so a client cannot
  /// make every replica parse megabytes per read.
  static constexpr size_t kMaxDots = 256;
  /// 16 hex digits, ':', 16 hex digits and ',' per dot.
  static constexpr size_t kMaxBytes = kMaxDots * 34;
  /// `text` for an error message: at most 64 bytes of it, then how long it is.
  static std::string Shown(std::string_view text);

  /// Adds the dot (origin, counter): the counter is kept if higher than the one held.
  void Add(uint64_t origin, uint64_t counter);
  /// Adds every dot of `other` (component-wise maximum).
  void Merge(const SessionToken& other);
  bool empty() const { return dots_.empty(); }
  /// Highest counter per origin, ascending by origin.
  const std::map<uint64_t, uint64_t>& dots() const { return dots_; }
  std::string ToString() const;
  /// Parses the text form; an error (naming the problem, `*out` unchanged) for anything else.
  static bool Parse(std::string_view text, SessionToken* out, std::string* error);
  bool operator==(const SessionToken& other) const { return dots_ == other.dots_; }

 private:
  std::map<uint64_t, uint64_t> dots_;
};

/// One replica's record of one key, as a quorum read gathers them.
struct KeyRecord {
  /// False: the replica holds nothing for the key (never written, or its tombstone collected).
  bool exists = false;
  /// True if the record is a live, unexpired value (else a tombstone or an expired value).
  bool live = false;
  std::string value;
  /// The version of the write that made the record (see messages/storage.proto Version).
  uint64_t hlc = 0;
  uint64_t origin = 0;
  uint64_t counter = 0;
};

}  // namespace kvmesh
