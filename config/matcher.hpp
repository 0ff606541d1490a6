// Matchers decide which database config serves a requested database path.
//
// The kind is read from the pattern text:
//   - regex    if it contains any of \ ( ) [ ] { } + ? | ^ $ , or a '*' that is not a whole
//              path segment ("/logs/.*" is a regex). Anchored: it must match the WHOLE path.
//              Compiled with RE2 (linear time, so a user's pattern cannot hang a node).
//   - wildcard otherwise, if some segment is exactly "*" (one segment) or "**" (one or more
//              segments): "/data/*" matches "/data/x" but not "/data" or "/data/x/y".
//   - literal  otherwise: the path must be equal ("." is an ordinary character here).
// Patterns are normalised with the database path rules (common/path.hpp) before classification,
// except that a regex is kept byte for byte.
//
// Precedence when several configs match one path: literal beats wildcard beats regex; then the
// longer literal prefix (the text before the first wildcard segment or regex metacharacter);
// then the earlier config (files sorted by name, then order within the file).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "kvmesh/status.hpp"

namespace kvmesh::config {

enum class MatcherKind { kLiteral = 0, kWildcard = 1, kRegex = 2 };

/// "literal", "wildcard" or "regex".
const char* MatcherKindName(MatcherKind kind);

class Matcher {
 public:
  Matcher() = default;

  /// Classifies and compiles `pattern`. Errors (Code::kInvalidConfig) name the problem: empty
  /// pattern, invalid regex (with RE2's message), a path that breaks the path rules.
  static Status Compile(std::string_view pattern, Matcher* out);

  /// True if the normalised database path `path` is served by this matcher.
  bool Matches(std::string_view path) const;

  MatcherKind kind() const { return kind_; }
  /// The pattern as compiled (normalised for literal and wildcard matchers).
  const std::string& pattern() const { return pattern_; }
  /// Length of the literal text before the first wildcard segment or regex metacharacter; the
  /// whole pattern for a literal. Used for "most specific wins".
  size_t literal_prefix_length() const { return literal_prefix_length_; }

  /// True if some path is matched by both `*this` and `other`. Exact when either side is a
  /// literal or both are wildcards. Wildcard against regex: true only if the regex matches a
  /// sample path of the wildcard (each "*"/"**" replaced by one segment "x" or "0"), otherwise
  /// false, which may miss an overlap. Two regexes: true only for identical pattern text
  /// (regular-language intersection is not attempted).
  bool Overlaps(const Matcher& other) const;

 private:
  struct Regex;  // RE2 stays out of this header.
  MatcherKind kind_ = MatcherKind::kLiteral;
  std::string pattern_;
  size_t literal_prefix_length_ = 0;
  std::shared_ptr<const Regex> regex_;
};

/// Orders two matchers by precedence: negative if `a` wins over `b`, positive if `b` wins, 0 if
/// the rule above cannot separate them (then file order decides).
int ComparePrecedence(const Matcher& a, const Matcher& b);

}  // namespace kvmesh::config
