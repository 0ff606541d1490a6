// Hex text of bytes: cursors of the HTTP API, token digests of the ACL, config ids in keys.
#pragma once

#include <string>
#include <string_view>

namespace kvmesh {

/// The value of hex digit `c` (either case), or -1.
int HexDigit(char c);

/// Two lowercase hex digits per byte.
std::string HexEncode(std::string_view bytes);

/// The reverse of HexEncode (digits of either case); false (and `*out` unspecified) on an odd
/// length or a character that is not a hex digit.
bool HexDecode(std::string_view text, std::string* out);

}  // namespace kvmesh
