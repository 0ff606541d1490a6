// The key layout inside the node's single RocksDB instance.
//
// Why key prefixes and not a column family per database: RocksDB column families each carry a
// memtable, options and files of their own and are meant to number in the tens; 100k instantiated
// databases would cost gigabytes before storing a byte. A fixed-width prefix costs 10 bytes per
// key, keeps every database's keys contiguous (cheap list and drop), and lets one write batch span
// data and bookkeeping.
//
//   "n"                                   -> proto::NodeMeta        node id, next namespace id
//   "c" <database path>                   -> proto::CatalogEntry    path -> namespace id
//   "d" <id: 8 bytes big-endian> "m"      -> proto::DatabaseMeta    used bytes, key count
//   "d" <id: 8 bytes big-endian> "k" <key> -> proto::Record          one user key
//
// Isolation: every data key starts with the fixed 10-byte "d<id>k" prefix and every scan is
// bounded by [prefix, prefix-successor), so no user key, whatever bytes it holds (NUL, 0xFF,
// "..", another database's id), can name or reach a key outside its own namespace: the id is
// fixed-width, so no id is a byte prefix of another.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kvmesh::storage::keys {

/// Key of the node-wide NodeMeta record.
std::string NodeMetaKey();
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

}  // namespace kvmesh::storage::keys
