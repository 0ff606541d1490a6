#include "common/read_levels.hpp"

#include <algorithm>
#include <cstdio>

namespace kvmesh {

Status ParseReadLevel(std::string_view text, ReadConsistency* out) {
  if (ParseReadConsistency(text, out)) return Status::OK();
  return Status::InvalidArgument("unknown read level \"" + std::string(text) +
                                 "\": use eventual, read_your_writes or quorum");
}

void SessionToken::Add(uint64_t origin, uint64_t counter) {
  uint64_t& held = dots_[origin];
  held = std::max(held, counter);
}

void SessionToken::Merge(const SessionToken& other) {
  for (const auto& [origin, counter] : other.dots_) Add(origin, counter);
}

std::string SessionToken::ToString() const {
  std::string out;
  char buffer[40];
  for (const auto& [origin, counter] : dots_) {
    if (!out.empty()) out += ',';
    std::snprintf(buffer, sizeof(buffer), "%llx:%llx", static_cast<unsigned long long>(origin),
                  static_cast<unsigned long long>(counter));
    out += buffer;
  }
  return out;
}

namespace {

/// One hex number of 1 to 16 digits.
bool ParseHex(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 16) return false;
  uint64_t value = 0;
  for (char c : text) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return false;
    }
    value = value << 4 | static_cast<uint64_t>(digit);
  }
  *out = value;
  return true;
}

}  // namespace

std::string SessionToken::Shown(std::string_view text) {
  if (text.size() <= 64) return std::string(text);
  return std::string(text.substr(0, 64)) + "... (" + std::to_string(text.size()) + " bytes)";
}

bool SessionToken::Parse(std::string_view text, SessionToken* out, std::string* error) {
  if (text.size() > kMaxBytes) {
    *error = "session token is " + std::to_string(text.size()) + " bytes, more than the " +
             std::to_string(kMaxBytes) + " a token of " + std::to_string(kMaxDots) +
             " dots takes; not a token Database::session_token() gave";
    return false;
  }
  SessionToken token;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view pair = text.substr(start, end - start);
    const size_t colon = pair.find(':');
    uint64_t origin = 0;
    uint64_t counter = 0;
    if (colon == std::string_view::npos || !ParseHex(pair.substr(0, colon), &origin) ||
        !ParseHex(pair.substr(colon + 1), &counter) || counter == 0) {
      *error = "session token \"" + Shown(text) +
               "\" is malformed: expected hex origin:counter pairs joined by ',' (as "
               "Database::session_token() gives), at \"" +
               Shown(pair) + "\"";
      return false;
    }
    token.Add(origin, counter);
    if (token.dots().size() > kMaxDots) {
      *error = "session token \"" + Shown(text) + "\" holds more than " + std::to_string(kMaxDots) +
               " dots; not a token Database::session_token() gave";
      return false;
    }
    start = end + 1;
    if (end + 1 == text.size()) {
      *error = "session token \"" + Shown(text) + "\" is malformed: it ends with ','";
      return false;
    }
  }
  *out = std::move(token);
  return true;
}

}  // namespace kvmesh
