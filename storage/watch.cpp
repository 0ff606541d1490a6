#include "storage/watch.hpp"

#include <algorithm>
#include <tuple>

#include "common/hex.hpp"
#include "common/path.hpp"
#include "messages/replication.pb.h"
#include "messages/storage.pb.h"
#include "storage/database_store.hpp"
#include "storage/hlc.hpp"

namespace kvmesh::storage {

namespace {

/// Leads the binary form, so another format (or another kind of token) is told apart.
constexpr char kPositionMagic[] = {'k', 'w', '1'};
constexpr size_t kMagicSize = sizeof(kPositionMagic);

uint64_t WallMillis(const DatabaseStore& db) {
  return db.WallTicks() >> hlc::kSubMsBits;
}

}  // namespace

WatchPosition WatchPositionNow(const DatabaseStore& db) {
  WatchPosition position;
  position.seen = db.version_vector();
  position.caught_up_ms = WallMillis(db);
  return position;
}

std::string EncodeWatchPosition(const WatchPosition& position) {
  std::string bytes(kPositionMagic, kMagicSize);
  for (int shift = 56; shift >= 0; shift -= 8) {
    bytes.push_back(static_cast<char>((position.caught_up_ms >> shift) & 0xff));
  }
  bytes += position.seen.Serialize();
  return HexEncode(bytes);
}

Status DecodeWatchPosition(std::string_view text, WatchPosition* out) {
  std::string bytes;
  if (!HexDecode(text, &bytes) || bytes.size() < kMagicSize + 8 ||
      bytes.compare(0, kMagicSize, kPositionMagic, kMagicSize) != 0) {
    return Status::InvalidArgument("watch position " + Quote(text.substr(0, 40)) +
                                   (text.size() > 40 ? "..." : "") +
                                   " is not a position a watch gave");
  }
  WatchPosition position;
  for (size_t i = 0; i < 8; ++i) {
    position.caught_up_ms =
        (position.caught_up_ms << 8) | static_cast<uint8_t>(bytes[kMagicSize + i]);
  }
  if (!VersionVector::Parse(std::string_view(bytes).substr(kMagicSize + 8), &position.seen)) {
    return Status::InvalidArgument("watch position holds a malformed version vector");
  }
  *out = std::move(position);
  return Status::OK();
}

Status CheckWatchPosition(const WatchPosition& position, uint64_t now_ms, uint64_t grace_ms) {
  const uint64_t max_age_ms = grace_ms / 2;
  if (now_ms <= position.caught_up_ms || now_ms - position.caught_up_ms <= max_age_ms) {
    return Status::OK();
  }
  return Status::InvalidArgument(
      "watch position expired: its watcher was last caught up " +
      std::to_string((now_ms - position.caught_up_ms) / 1000) +
      " s ago, longer than half the tombstone grace (" + std::to_string(max_age_ms / 1000) +
      " s), so deletes since may be forgotten; read the database again (list) and watch from "
      "now");
}

Status NextWatchEvents(const DatabaseStore& db, std::string_view prefix, bool with_values,
                       size_t page_bytes, int max_pages, WatchPosition* position,
                       std::vector<WatchEvent>* events, bool* more) {
  *more = false;
  // (hlc, origin, counter) of each event, to order them by time.
  std::vector<std::tuple<uint64_t, uint64_t, uint64_t, WatchEvent>> found;
  const uint64_t now_ticks = db.WallTicks();
  for (int page = 0; page < max_pages; ++page) {
    std::string bytes;
    Status s = db.DeltaSince(position->seen, page_bytes, &bytes, more);
    if (!s.ok()) return s;
    proto::Delta delta;
    if (!delta.ParseFromString(bytes)) {
      return Status::Internal("watch of " + Quote(db.path()) + " made an unparsable delta");
    }
    for (const proto::DeltaEntry& entry : delta.entries()) {
      const proto::Version& version = entry.record().version();
      position->seen.Add({version.origin(), version.counter()});
      if (!KeyHasPrefix(entry.key(), prefix)) continue;
      const proto::Record& record = entry.record();
      // An expired record reads as missing: it is reported as the delete it becomes (the
      // sweep later turns it into a tombstone of this same version, which is not reported).
      const bool gone =
          record.tombstone() || (record.expires() != 0 && record.expires() <= now_ticks);
      WatchEvent event;
      event.kind = gone ? WatchEvent::Kind::kErase : WatchEvent::Kind::kPut;
      event.key = entry.key();
      if (with_values && !gone) event.value = record.value();
      event.version = VersionToken(version);
      found.emplace_back(version.hlc(), version.origin(), version.counter(), std::move(event));
    }
    for (const proto::CoveredRange& range : delta.ranges()) {
      position->seen.AddRange(range.origin(), range.after(), range.through());
    }
    if (!*more) position->caught_up_ms = WallMillis(db);
    if (!found.empty() || !*more) break;
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return std::tie(std::get<0>(a), std::get<1>(a), std::get<2>(a)) <
           std::tie(std::get<0>(b), std::get<1>(b), std::get<2>(b));
  });
  for (auto& f : found) events->push_back(std::move(std::get<3>(f)));
  return Status::OK();
}

}  // namespace kvmesh::storage
