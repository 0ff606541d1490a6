#include "config/matcher.hpp"

#include <re2/re2.h>

#include <array>
#include <vector>

#include "common/path.hpp"

namespace kvmesh::config {

// Holds the compiled RE2 so that <re2/re2.h> stays out of matcher.hpp. RE2 is thread-safe for
// matching, so one compiled regex is shared by every copy of the Matcher.
struct Matcher::Regex {
  Regex(std::string_view pattern, const RE2::Options& options) : re(pattern, options) {}
  RE2 re;
};

namespace {

// Characters that make a pattern a regex (header comment); '*' is handled separately because a
// whole "*" or "**" segment makes a wildcard instead.
constexpr std::string_view kRegexSignals = "\\()[]{}+?|^$";
// Characters that end a regex's literal prefix: the signals plus '.' and '*', which match more
// than themselves in a regex.
constexpr std::string_view kRegexMeta = "\\()[]{}+?|^$.*";
constexpr std::string_view kQuantifiers = "*+?{";

bool IsWildcardSegment(std::string_view segment) {
  return segment == "*" || segment == "**";
}

// Calls `fn(segment)` for every non-empty '/'-separated segment of `path`.
template <typename Fn>
void ForEachSegment(std::string_view path, Fn fn) {
  size_t i = 0;
  while (i < path.size()) {
    size_t end = path.find('/', i);
    if (end == std::string_view::npos) end = path.size();
    if (end > i) fn(path.substr(i, end - i));
    i = end + 1;
  }
}

bool LooksLikeRegex(std::string_view pattern) {
  if (pattern.find_first_of(kRegexSignals) != std::string_view::npos) return true;
  bool stray_star = false;
  ForEachSegment(pattern, [&](std::string_view segment) {
    if (segment.find('*') != std::string_view::npos && !IsWildcardSegment(segment)) {
      stray_star = true;
    }
  });
  return stray_star;
}

bool HasWildcardSegment(std::string_view normalized) {
  bool found = false;
  ForEachSegment(normalized, [&](std::string_view s) { found = found || IsWildcardSegment(s); });
  return found;
}

size_t WildcardPrefixLength(std::string_view normalized) {
  size_t star = normalized.find("/*");
  return star == std::string_view::npos ? normalized.size() : star + 1;  // Keeps the '/'.
}

size_t RegexPrefixLength(std::string_view pattern) {
  size_t end = pattern.find_first_of(kRegexMeta);
  if (end == std::string_view::npos) return pattern.size();
  // In "/ab*" the quantifier applies to 'b', so only "/a" is certain to be in every match.
  if (end > 0 && kQuantifiers.find(pattern[end]) != std::string_view::npos) --end;
  return end;
}

// A wildcard pattern or a path as a list of tokens, one per segment, except that "**" (one or
// more segments) becomes kOne followed by kMany (zero or more), which keeps the matcher below to
// three simple cases.
enum class TokenKind { kLiteral, kOne, kMany };
struct Token {
  TokenKind kind;
  std::string_view text;  // The segment, for kLiteral.
};

// With `wildcards` false every segment is literal: that is how a path is tokenised.
std::vector<Token> Tokenize(std::string_view normalized, bool wildcards) {
  std::vector<Token> tokens;
  ForEachSegment(normalized, [&](std::string_view segment) {
    if (wildcards && segment == "*") {
      tokens.push_back({TokenKind::kOne, {}});
    } else if (wildcards && segment == "**") {
      tokens.push_back({TokenKind::kOne, {}});
      tokens.push_back({TokenKind::kMany, {}});
    } else {
      tokens.push_back({TokenKind::kLiteral, segment});
    }
  });
  return tokens;
}

// True if some sequence of segments is matched by both token lists. This is a walk of the product
// of the two patterns' automata: can[i][j] says whether a[i..] and b[j..] share a match. Matching
// a path against a wildcard is the special case where one side is all literals, so both Matches
// and Overlaps use it. O(|a| * |b|) time, O(|b|) memory.
bool Intersect(const std::vector<Token>& a, const std::vector<Token>& b) {
  const size_t na = a.size();
  const size_t nb = b.size();
  std::vector<char> next_row(nb + 1, false);  // can[i + 1][*]
  std::vector<char> row(nb + 1, false);       // can[i][*]
  for (size_t i = na + 1; i-- > 0;) {
    for (size_t j = nb + 1; j-- > 0;) {
      bool can = false;
      if (i == na && j == nb) {
        can = true;
      } else if (i < na && a[i].kind == TokenKind::kMany) {
        // Match nothing more, or take the segment that b[j] takes (or let b's kMany be empty).
        can = next_row[j] || (j < nb && row[j + 1]);
      } else if (j < nb && b[j].kind == TokenKind::kMany) {
        can = row[j + 1] || (i < na && next_row[j]);
      } else if (i < na && j < nb) {
        // Both take exactly one segment: compatible unless both are different literals.
        bool both_literal = a[i].kind == TokenKind::kLiteral && b[j].kind == TokenKind::kLiteral;
        can = (!both_literal || a[i].text == b[j].text) && next_row[j + 1];
      }
      row[j] = can;
    }
    row.swap(next_row);
  }
  return next_row[0];
}

// One path that the wildcard matches: each "*" or "**" replaced by the single segment `filler`.
std::string SamplePath(std::string_view normalized, std::string_view filler) {
  std::string path;
  ForEachSegment(normalized, [&](std::string_view segment) {
    path += '/';
    path += IsWildcardSegment(segment) ? filler : segment;
  });
  return path;
}

}  // namespace

const char* MatcherKindName(MatcherKind kind) {
  switch (kind) {
    case MatcherKind::kLiteral:
      return "literal";
    case MatcherKind::kWildcard:
      return "wildcard";
    case MatcherKind::kRegex:
      return "regex";
  }
  return "unknown";
}

Status Matcher::Compile(std::string_view pattern, Matcher* out) {
  const std::string quoted = Quote(pattern);
  if (pattern.empty()) return Status::InvalidConfig("matcher pattern is empty");

  Matcher m;
  if (LooksLikeRegex(pattern)) {
    RE2::Options options;
    options.set_log_errors(false);  // The error goes into the Status instead of the log.
    auto regex = std::make_shared<Regex>(pattern, options);
    if (!regex->re.ok()) {
      return Status::InvalidConfig("invalid regex " + quoted + ": " + regex->re.error());
    }
    m.kind_ = MatcherKind::kRegex;
    m.pattern_ = std::string(pattern);
    m.literal_prefix_length_ = RegexPrefixLength(pattern);
    m.regex_ = std::move(regex);
  } else {
    Status s = NormalizeDatabasePath(pattern, &m.pattern_);
    if (!s.ok()) return Status::InvalidConfig("invalid matcher " + quoted + ": " + s.message());
    if (HasWildcardSegment(m.pattern_)) {
      m.kind_ = MatcherKind::kWildcard;
      m.literal_prefix_length_ = WildcardPrefixLength(m.pattern_);
    } else {
      m.kind_ = MatcherKind::kLiteral;
      m.literal_prefix_length_ = m.pattern_.size();
    }
  }
  *out = std::move(m);
  return Status::OK();
}

bool Matcher::Matches(std::string_view path) const {
  switch (kind_) {
    case MatcherKind::kLiteral:
      return path == pattern_;
    case MatcherKind::kWildcard:
      return Intersect(Tokenize(pattern_, /*wildcards=*/true), Tokenize(path, false));
    case MatcherKind::kRegex:
      return regex_ != nullptr &&
             RE2::FullMatch(re2::StringPiece(path.data(), path.size()), regex_->re);
  }
  return false;
}

bool Matcher::Overlaps(const Matcher& other) const {
  if (kind_ == MatcherKind::kLiteral) return other.Matches(pattern_);
  if (other.kind_ == MatcherKind::kLiteral) return Matches(other.pattern_);
  if (kind_ == MatcherKind::kWildcard && other.kind_ == MatcherKind::kWildcard) {
    return Intersect(Tokenize(pattern_, true), Tokenize(other.pattern_, true));
  }
  if (kind_ == MatcherKind::kRegex && other.kind_ == MatcherKind::kRegex) {
    return pattern_ == other.pattern_;
  }
  // Wildcard against regex. Deciding it exactly needs an automaton intersection, which RE2 does
  // not offer; instead try a couple of sample paths of the wildcard. A true answer is certain, a
  // false one may miss an overlap. Precedence never ties across kinds, so ConfigSet's ambiguity
  // check does not depend on this case.
  const Matcher& wildcard = kind_ == MatcherKind::kWildcard ? *this : other;
  const Matcher& regex = kind_ == MatcherKind::kWildcard ? other : *this;
  static constexpr std::array<std::string_view, 2> kFillers = {"x", "0"};
  for (std::string_view filler : kFillers) {
    if (regex.Matches(SamplePath(wildcard.pattern_, filler))) return true;
  }
  return false;
}

int ComparePrecedence(const Matcher& a, const Matcher& b) {
  if (a.kind() != b.kind()) return a.kind() < b.kind() ? -1 : 1;
  if (a.literal_prefix_length() != b.literal_prefix_length()) {
    return a.literal_prefix_length() > b.literal_prefix_length() ? -1 : 1;
  }
  return 0;
}

}  // namespace kvmesh::config
