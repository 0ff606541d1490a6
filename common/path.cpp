#include "common/path.hpp"

namespace kvmesh {
namespace {

// Shared by keys, database paths and prefixes; `what` names the input in error messages.
Status Normalize(std::string_view raw, const char* what, size_t max_bytes, bool allow_empty,
                 bool allow_control, std::string* out) {
  out->clear();
  out->reserve(raw.size() + 1);
  size_t i = 0;
  while (i < raw.size()) {
    while (i < raw.size() && raw[i] == '/') ++i;
    if (i == raw.size()) break;
    size_t end = raw.find('/', i);
    if (end == std::string_view::npos) end = raw.size();
    std::string_view segment = raw.substr(i, end - i);
    if (segment == "." || segment == "..") {
      return Status::InvalidKey(std::string(what) + " has a '" + std::string(segment) +
                                "' segment; kvmesh does not resolve relative segments");
    }
    if (!allow_control) {
      for (unsigned char c : segment) {
        if (c < 0x20 || c == 0x7f) {
          return Status::InvalidKey(std::string(what) + " contains a control character");
        }
      }
    }
    out->push_back('/');
    out->append(segment);
    i = end;
  }
  if (out->empty() && !allow_empty) {
    return Status::InvalidKey(std::string(what) + " is empty");
  }
  if (out->size() > max_bytes) {
    return Status::InvalidKey(std::string(what) + " is " + std::to_string(out->size()) +
                              " bytes; the maximum is " + std::to_string(max_bytes));
  }
  return Status::OK();
}

}  // namespace

Status NormalizeKey(std::string_view raw, std::string* out) {
  return Normalize(raw, "key", kMaxKeyBytes, /*allow_empty=*/false, /*allow_control=*/true, out);
}

Status NormalizeDatabasePath(std::string_view raw, std::string* out) {
  return Normalize(raw, "database path", kMaxDatabasePathBytes, false, false, out);
}

Status NormalizePrefix(std::string_view raw, std::string* out) {
  return Normalize(raw, "list prefix", kMaxKeyBytes, /*allow_empty=*/true, true, out);
}

std::string Quote(std::string_view text) {
  constexpr size_t kMaxShown = 120;
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (text.size() > kMaxShown) out += "...";
  out += '"';
  return out;
}

bool KeyHasPrefix(std::string_view key, std::string_view prefix) {
  if (prefix.empty()) return true;
  if (key.size() < prefix.size() || key.compare(0, prefix.size(), prefix) != 0) return false;
  return key.size() == prefix.size() || key[prefix.size()] == '/';
}

}  // namespace kvmesh
