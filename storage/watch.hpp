// Watch pages: what a watcher at a position has not seen of one database replica yet.
//
// A watch position is a version vector (storage/version_vector.hpp) plus the time the watcher
// was last caught up. "What changed since position P" is DatabaseStore::DeltaSince(P): the
// current records whose dots P does not cover, paged, at a cost proportional to what is sent.
// So a key written several times since P is reported once, with its latest write (intermediate
// overwrites are collapsed), and a delete is its tombstone. Since dots name writes
// cluster-wide, a position taken on one replica resumes on any other: what the new replica has
// and P lacks comes, nothing P covers comes again.
//
// Deletes are only reported while their tombstones exist: a tombstone is collected once every
// replica has it and it is older than the tombstone grace. A position whose watcher was last
// caught up longer ago than half the grace is therefore refused (CheckWatchPosition) rather
// than resumed with deletes silently missing; the margin covers clock skew between replicas.
//
// Plain functions over a DatabaseStore; they read only (the owner's thread, like DeltaSince).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kvmesh/status.hpp"
#include "kvmesh/types.hpp"
#include "storage/version_vector.hpp"

namespace kvmesh::storage {

class DatabaseStore;

struct WatchPosition {
  /// The writes the watcher has seen (or that were superseded by writes it has seen).
  VersionVector seen;
  /// Wall-clock ms (the serving store's clock) when it last had every change: positions older
  /// than half the tombstone grace are refused.
  uint64_t caught_up_ms = 0;
};

/// The position of a watcher starting now on `db`: everything applied there is seen.
WatchPosition WatchPositionNow(const DatabaseStore& db);

/// Text form (hex), what clients hold.
std::string EncodeWatchPosition(const WatchPosition& position);
/// Parses the text form. Errors: kInvalidArgument naming the problem.
Status DecodeWatchPosition(std::string_view text, WatchPosition* out);

/// OK if `position` may resume at `now_ms` with a tombstone grace of `grace_ms`; else
/// kInvalidArgument "watch position expired ..." telling the caller to resync.
Status CheckWatchPosition(const WatchPosition& position, uint64_t now_ms, uint64_t grace_ms);

/// Appends to `*events` the changes to keys under the normalised `prefix` that `*position` has
/// not seen, and advances `*position` past them (and past the changes to other keys read on
/// the way). Reads pages of about `page_bytes` until one holds an event for the prefix, or
/// `max_pages` were read, or everything was. `*more`: something is left. Events come in the
/// order of their timestamps (hlc, origin), at most one per key per call.
Status NextWatchEvents(const DatabaseStore& db, std::string_view prefix, bool with_values,
                       size_t page_bytes, int max_pages, WatchPosition* position,
                       std::vector<WatchEvent>* events, bool* more);

}  // namespace kvmesh::storage
