#include "config/size.hpp"

#include <array>
#include <cctype>
#include <utility>

#include "common/path.hpp"

namespace kvmesh::config {
namespace {

struct Unit {
  const char* name;  // Canonical spelling, used in error messages.
  uint64_t multiplier;
};

constexpr uint64_t kKi = 1024;
constexpr uint64_t kK = 1000;

// Compared case-insensitively, so "kib", "KIB" and "KiB" are the same unit.
constexpr std::array<Unit, 9> kUnits = {{
    {"B", 1},
    {"KB", kK},
    {"MB", kK* kK},
    {"GB", kK* kK* kK},
    {"TB", kK* kK* kK* kK},
    {"KiB", kKi},
    {"MiB", kKi* kKi},
    {"GiB", kKi* kKi* kKi},
    {"TiB", kKi* kKi* kKi* kKi},
}};

bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}
bool IsSpace(char c) {
  return c == ' ' || c == '\t';
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

const Unit* FindUnit(std::string_view name) {
  if (name.empty()) return &kUnits[0];  // A bare number is bytes.
  for (const Unit& unit : kUnits) {
    if (EqualsIgnoreCase(name, unit.name)) return &unit;
  }
  return nullptr;
}

Status SizeError(std::string_view text, const std::string& why) {
  return Status::InvalidConfig("invalid size " + Quote(text) + ": " + why);
}

// floor(0.<digits> * multiplier), exactly: long multiplication of the decimal digit string by
// `multiplier` from the last digit up; the carry left after the last digit is the integer part.
// No floating point, so "1.1MB" is exactly 1100000 and not 1099999.
uint64_t FractionTimes(std::string_view digits, uint64_t multiplier) {
  uint64_t carry = 0;  // Stays below multiplier (<= 2^40), so 9 * multiplier + carry fits.
  for (size_t i = digits.size(); i-- > 0;) {
    carry = (static_cast<uint64_t>(digits[i] - '0') * multiplier + carry) / 10;
  }
  return carry;
}

// Parses a run of decimal digits into `*value`; false on overflow.
bool ParseDigits(std::string_view digits, uint64_t* value) {
  uint64_t v = 0;
  for (char c : digits) {
    if (__builtin_mul_overflow(v, 10, &v) ||
        __builtin_add_overflow(v, static_cast<uint64_t>(c - '0'), &v)) {
      return false;
    }
  }
  *value = v;
  return true;
}

}  // namespace

Status ParseSize(std::string_view text, uint64_t* bytes) {
  std::string_view rest = Trim(text);
  if (rest.empty()) return SizeError(text, "empty");

  // The number is the leading run of digits and dots; its shape is checked afterwards, so that
  // "1.2.3MB" is reported as a malformed number rather than as an unknown unit ".3MB".
  size_t number_end = 0;
  while (number_end < rest.size() && (IsDigit(rest[number_end]) || rest[number_end] == '.')) {
    ++number_end;
  }
  std::string_view number = rest.substr(0, number_end);
  std::string_view unit_name = Trim(rest.substr(number_end));
  if (number.empty()) {
    return SizeError(text, "expected a non-negative number, optionally followed by a unit");
  }
  size_t dot = number.find('.');
  std::string_view integer = number.substr(0, dot);
  std::string_view fraction =
      dot == std::string_view::npos ? std::string_view() : number.substr(dot + 1);
  if (integer.empty() || (dot != std::string_view::npos && fraction.empty()) ||
      fraction.find('.') != std::string_view::npos) {
    return SizeError(text, "malformed number " + Quote(number));
  }

  const Unit* unit = FindUnit(unit_name);
  if (unit == nullptr) {
    return SizeError(text, "unknown unit " + Quote(unit_name) +
                               " (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)");
  }

  uint64_t whole = 0;
  uint64_t total = 0;
  if (!ParseDigits(integer, &whole) || __builtin_mul_overflow(whole, unit->multiplier, &total) ||
      __builtin_add_overflow(total, FractionTimes(fraction, unit->multiplier), &total)) {
    return SizeError(text, "too large (the maximum is " + std::to_string(UINT64_MAX) + " bytes)");
  }
  *bytes = total;
  return Status::OK();
}

std::string FormatConfigSize(uint64_t bytes) {
  static constexpr std::pair<uint64_t, const char*> kUnits[] = {
      {1000ull * 1000 * 1000 * 1000, "TB"},
      {1ull << 40, "TiB"},
      {1000ull * 1000 * 1000, "GB"},
      {1ull << 30, "GiB"},
      {1000ull * 1000, "MB"},
      {1ull << 20, "MiB"},
      {1000, "KB"},
      {1ull << 10, "KiB"}};
  for (const auto& [unit, name] : kUnits) {
    if (bytes >= unit && bytes % unit == 0) return std::to_string(bytes / unit) + name;
  }
  return std::to_string(bytes);
}

}  // namespace kvmesh::config
