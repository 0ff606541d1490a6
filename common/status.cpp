#include "kvmesh/status.hpp"

#include <ctime>
#include "common/hex.hpp"

#include <cstdio>

#include <array>

namespace kvmesh {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kNotFound:
      return "not_found";
    case Code::kNoMatchingConfig:
      return "no_matching_config";
    case Code::kSizeLimitExceeded:
      return "size_limit_exceeded";
    case Code::kValueTooLarge:
      return "value_too_large";
    case Code::kInvalidKey:
      return "invalid_key";
    case Code::kInvalidArgument:
      return "invalid_argument";
    case Code::kInvalidConfig:
      return "invalid_config";
    case Code::kIOError:
      return "io_error";
    case Code::kCorruption:
      return "corruption";
    case Code::kTimeout:
      return "timeout";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kInternal:
      return "internal";
    case Code::kNoSpace:
      return "no_space";
    case Code::kPermissionDenied:
      return "permission_denied";
    case Code::kConditionFailed:
      return "condition_failed";
    case Code::kTooManyInstances:
      return "too_many_instances";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out = CodeName(code_);
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

namespace {
constexpr uint64_t kKi = 1024;
}  // namespace

std::string FormatUtcTime(int64_t time_ms) {
  std::time_t seconds = static_cast<std::time_t>(time_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string FormatNodeId(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

bool ParseNodeId(std::string_view text, uint64_t* id) {
  if (text.empty() || text.size() > 16) return false;
  uint64_t out = 0;
  for (char c : text) {
    const int digit = HexDigit(c);
    if (digit < 0) return false;
    out = out << 4 | static_cast<uint64_t>(digit);
  }
  *id = out;
  return true;
}

std::string FormatNodeIds(const std::vector<uint64_t>& ids) {
  std::string out;
  for (uint64_t id : ids) out += (out.empty() ? "" : ", ") + FormatNodeId(id);
  return out;
}

std::string FormatSize(uint64_t bytes) {
  std::string exact = std::to_string(bytes) + " B";
  if (bytes < kKi) return exact;  // "512 B (512 B)" would say nothing more.

  static constexpr std::array<const char*, 6> kNames = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  size_t index = 0;
  uint64_t unit = kKi;
  while (index + 1 < kNames.size() && bytes / unit >= kKi) {
    unit *= kKi;
    ++index;
  }
  // Tenths of the unit, rounded half up. Split into quotient and remainder so nothing overflows.
  uint64_t tenths = bytes / unit * 10 + (bytes % unit * 10 + unit / 2) / unit;
  if (tenths >= kKi * 10 && index + 1 < kNames.size()) {
    // Rounding carried into the next unit: 1048575 B is "1 MiB", not "1024 KiB".
    unit *= kKi;
    ++index;
    tenths = bytes / unit * 10 + (bytes % unit * 10 + unit / 2) / unit;
  }
  std::string human = std::to_string(tenths / 10);
  if (tenths % 10 != 0) human += "." + std::to_string(tenths % 10);
  return exact + " (" + human + " " + kNames[index] + ")";
}

}  // namespace kvmesh
