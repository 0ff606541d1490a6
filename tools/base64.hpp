// Base64 (RFC 4648, with padding) for the CLI's JSON-lines import and export, on OpenSSL.
#pragma once

#include <string>
#include <string_view>

namespace kvmesh::tools {

std::string Base64Encode(std::string_view bytes);

/// Decodes `text` into `*bytes`; false if it is not valid padded base64.
bool Base64Decode(std::string_view text, std::string* bytes);

}  // namespace kvmesh::tools
