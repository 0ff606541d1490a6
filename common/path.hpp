// The rules for keys and database paths. Both are '/'-separated paths; they are normalised once,
// where they enter, so that every layer below sees exactly one spelling of each key:
//   - database paths where a process takes them in: Node::open (embedded), client::Client::open
//     (client library), the client gateway (network input, from any peer; it skips paths it
//     already routes, which are normalised), and the membership actor (a peer's replica
//     request). The supervisor and the database actors take normalised paths;
//     storage::Store::OpenDatabase refuses any other (a check, not a second normalisation).
//   - keys, list prefixes and batch keys in storage::DatabaseStore (Get, List, Apply), the one
//     place every read and write passes; replicated entries must arrive normalised and are
//     rejected otherwise.
//
// Normalisation (keys, database paths and list prefixes alike):
//   - a leading '/' is added if missing:          "users/1"   -> "/users/1"
//   - runs of '/' collapse to one:                "/a//b"     -> "/a/b"
//   - a trailing '/' is dropped:                  "/a/b/"     -> "/a/b"
// So "test", "/test", "test/" and "//test//" are one key, "/test".
// Rejected (Code::kInvalidKey):
//   - an empty key, or one made only of '/';
//   - a "." or ".." segment: kvmesh does not resolve them, because "/a/../b" silently aliasing
//     "/b" would let one key overwrite another;
//   - a key longer than kMaxKeyBytes after normalisation.
// Any other byte is allowed in a key segment, NUL and 0xFF included. Database paths are stricter:
// no control characters (they appear in logs, errors and the CLI), at most kMaxDatabasePathBytes.
//
// Keys sort and list in plain byte order. A list prefix matches whole segments: prefix "/test"
// lists the key "/test" itself and every key below "/test/", but not "/testing".
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "kvmesh/status.hpp"

namespace kvmesh {

/// Longest key accepted, in bytes, after normalisation.
inline constexpr size_t kMaxKeyBytes = 4096;
/// Longest database path accepted, in bytes, after normalisation.
inline constexpr size_t kMaxDatabasePathBytes = 1024;

/// Normalises `raw` as a key into `*out`. On error `*out` is unspecified.
Status NormalizeKey(std::string_view raw, std::string* out);

/// Normalises `raw` as a database path (key rules plus: no control characters).
Status NormalizeDatabasePath(std::string_view raw, std::string* out);

/// Normalises a list prefix. "" and "/" mean "every key" and normalise to "".
Status NormalizePrefix(std::string_view raw, std::string* out);

/// `text` in double quotes for error messages and logs: printable ASCII as is, '"' and '\\' and
/// every other byte escaped (\n, \xNN), cut after 120 bytes with "...".
std::string Quote(std::string_view text);

/// True if the normalised `key` lies under the normalised `prefix` by the segment rule above.
bool KeyHasPrefix(std::string_view key, std::string_view prefix);

}  // namespace kvmesh
