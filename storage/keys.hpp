// The key layout inside the node's single RocksDB instance.
//
// Why key prefixes and not a column family per database: RocksDB column families each carry a
// memtable, options and files of their own and are meant to number in the tens; 100k instantiated
// databases would cost gigabytes before storing a byte. A fixed-width prefix costs 10 bytes per
// key, keeps every database's keys contiguous (cheap list and drop), and lets one write batch span
// data and bookkeeping.
//
//   "n"                                      -> proto::NodeMeta      node id, next namespace id
//   "a"                                      -> 8 bytes big-endian   last time in use (ms)
//   "c" <database path>                      -> proto::CatalogEntry  path -> namespace id
//   "d" <id> "m"                             -> proto::DatabaseMeta  usage, version vector, digest
//   "d" <id> "k" <key>                       -> proto::Record        one user key (or tombstone)
//   "d" <id> "o" <origin> <counter>          -> <key>                dot index, one dot (format 1)
//   "d" <id> "p" <origin> <first counter>    -> proto::DotRange      dot index, a run of dots
//   "d" <id> "t" <origin> <counter>          -> <key>                tombstone index (tombstones)
//   "d" <id> "x" <expires> <origin> <counter> -> <key>               expiry index (live, with ttl)
// where <id>, <expires>, <origin> and <counter> are 8 bytes big-endian and <key> is the normalised
// user key.
//
// The dot index is ordered by (origin, counter), so the writes of one origin after a counter are
// one contiguous range (DatabaseStore::DeltaSince). Since storage format 2 a write indexes its
// records by runs of consecutive counters, one "p" entry per run (a bulk write of N keys adds
// one index entry, not N; a replaced record leaves a stale member instead of a deletion), and
// "o" holds one dot per entry only for records applied above a gap in the version vector
// (their dot may be applied again) and those written by format 1; DeltaSince merges the two.
// The tombstone index likewise per origin
// (DatabaseStore::CollectTombstones). A record and its index entries change in one write batch.
// The expiry index is ordered by time, so the records expired by now are one range from its
// start (DatabaseStore::CollectExpired).
// The tags sort 'k' < 'l' (DataPrefixEnd) < 'm' < 'o' < 'p' < 't' < 'x', so a scan of the data
// range never meets meta or index keys, and all of a database's keys lie in [DatabasePrefix(id),
// DatabasePrefixEnd(id)), which is how Drop deletes them with one range deletion.
//
// Isolation: every data key starts with the fixed 10-byte "d<id>k" prefix and every scan is
// bounded by [prefix, prefix-successor), so no user key, whatever bytes it holds (NUL, 0xFF,
// "..", another database's id), can name or reach a key outside its own namespace: the id is
// fixed-width, so no id is a byte prefix of another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvmesh::storage::keys {

/// Key of the node-wide NodeMeta record.
std::string NodeMetaKey();
/// Key of the time the store was last in use (Store::MarkInUse).
std::string NodeInUseKey();
/// Prefix of all catalog entries.
inline constexpr std::string_view kCatalogPrefix = "c";
/// Catalog key of a normalised database path.
std::string CatalogKey(std::string_view path);
/// Key of a database's DatabaseMeta record.
std::string DatabaseMetaKey(uint64_t id);
/// "d<id>k": the prefix of every data key of database `id`.
std::string DataPrefix(uint64_t id);
/// The exclusive upper bound of DataPrefix(id): "d<id>l".
std::string DataPrefixEnd(uint64_t id);

/// "d<id>": the prefix of every key of database `id` (meta, data and indexes).
std::string DatabasePrefix(uint64_t id);
/// The exclusive upper bound of DatabasePrefix(id): "d<id + 1>" ("e" for the largest id).
std::string DatabasePrefixEnd(uint64_t id);

/// "d<id>o<origin><counter>": the dot index entry of the current record written as
/// (origin, counter). Its value is the user key.
std::string DotIndexKey(uint64_t id, uint64_t origin, uint64_t counter);
/// "d<id>o<origin>": the prefix of the dot index entries of one origin.
std::string DotIndexPrefix(uint64_t id, uint64_t origin);

/// "d<id>p<origin><first counter>": the dot range entry of a run of records written as
/// (origin, first counter), (origin, first counter + 1), ... Its value is a proto::DotRange.
std::string DotRangeKey(uint64_t id, uint64_t origin, uint64_t first_counter);
/// "d<id>p<origin>": the prefix of the dot range entries of one origin.
std::string DotRangePrefix(uint64_t id, uint64_t origin);
/// "d<id>p": the prefix of every dot range entry of database `id`.
std::string DotRangePrefix(uint64_t id);

/// "d<id>t<origin><counter>": the tombstone index entry of the tombstone written as
/// (origin, counter). Its value is the user key.
std::string TombstoneIndexKey(uint64_t id, uint64_t origin, uint64_t counter);
/// "d<id>t": the prefix of every tombstone index entry of database `id`.
std::string TombstoneIndexPrefix(uint64_t id);
/// "d<id>t<origin>": the prefix of the tombstone index entries of one origin.
std::string TombstoneIndexPrefix(uint64_t id, uint64_t origin);

/// "d<id>x<expires><origin><counter>": the expiry index entry of the live record written as
/// (origin, counter) that expires at `expires` (Record.expires). Its value is the user key.
/// Ordered by time, so the records expired by a moment are one range from the prefix.
std::string ExpiryIndexKey(uint64_t id, uint64_t expires, uint64_t origin, uint64_t counter);
/// "d<id>x": the prefix of every expiry index entry of database `id`.
std::string ExpiryIndexPrefix(uint64_t id);
/// Size of an expiry index key.
inline constexpr size_t kExpiryIndexKeySize = 34;

/// Size of a dot, dot range or tombstone index key; the counter is its last 8 bytes.
inline constexpr size_t kIndexKeySize = 26;
/// Bytes of "d" <id> <tag>, the prefix shared by a database's keys of one kind.
inline constexpr size_t kDatabaseKeyPrefixSize = 10;
/// The 8-byte big-endian number at `bytes` (which must hold 8 bytes).
uint64_t DecodeBigEndian64(const char* bytes);
/// Appends `n` as 8 bytes big-endian.
void AppendBigEndian64(uint64_t n, std::string* out);

/// The smallest key greater than every key that starts with `prefix`: the last byte that is
/// not 0xff incremented, the rest dropped. "" (no bound) if `prefix` is all 0xff.
std::string PrefixSuccessor(std::string_view prefix);

}  // namespace kvmesh::storage::keys
