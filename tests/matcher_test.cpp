// Matchers: which config serves a database path, and which wins when several could.
#include "config/matcher.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <new>
#include <string>

// Counts this thread's heap allocations, so that a test can show that an operation allocates
// nothing. Replacing the global operator new affects the whole test binary; it only counts.
namespace {
thread_local uint64_t allocations = 0;
}  // namespace

void* operator new(std::size_t size) {
  ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

namespace kvmesh::config {
namespace {

Matcher Compile(std::string_view pattern) {
  Matcher m;
  Status s = Matcher::Compile(pattern, &m);
  EXPECT_TRUE(s.ok()) << "\"" << pattern << "\": " << s;
  return m;
}

Status CompileError(std::string_view pattern) {
  Matcher m;
  return Matcher::Compile(pattern, &m);
}

MatcherKind KindOf(std::string_view pattern) {
  return Compile(pattern).kind();
}

bool Overlap(std::string_view a, std::string_view b) {
  bool ab = Compile(a).Overlaps(Compile(b));
  // Overlap is symmetric whatever the argument order; a mismatch is a bug.
  EXPECT_EQ(ab, Compile(b).Overlaps(Compile(a))) << a << " vs " << b;
  return ab;
}

TEST(MatcherTest, KindNames) {
  EXPECT_STREQ(MatcherKindName(MatcherKind::kLiteral), "literal");
  EXPECT_STREQ(MatcherKindName(MatcherKind::kWildcard), "wildcard");
  EXPECT_STREQ(MatcherKindName(MatcherKind::kRegex), "regex");
}

TEST(MatcherTest, ClassifiesLiterals) {
  EXPECT_EQ(KindOf("/example/kv"), MatcherKind::kLiteral);
  EXPECT_EQ(KindOf("/a.b"), MatcherKind::kLiteral);  // '.' alone is not a regex signal.
  EXPECT_EQ(KindOf("/a-b_c,d"), MatcherKind::kLiteral);
}

TEST(MatcherTest, ClassifiesWildcards) {
  EXPECT_EQ(KindOf("/data/*"), MatcherKind::kWildcard);
  EXPECT_EQ(KindOf("/data/**"), MatcherKind::kWildcard);
  EXPECT_EQ(KindOf("/*/x"), MatcherKind::kWildcard);
  EXPECT_EQ(KindOf("**"), MatcherKind::kWildcard);
}

TEST(MatcherTest, ClassifiesRegexes) {
  for (const char* pattern : {"/logs/.*", "/a\\.b", "/(a|b)", "/[ab]", "/a{2}", "/a+", "/a?", "^/a",
                              "/a$", "/a*", "/a/*b", "/a/b*/c"}) {
    EXPECT_EQ(KindOf(pattern), MatcherKind::kRegex) << pattern;
  }
  // "***" is not a wildcard segment, so the pattern goes to RE2, which rejects "**".
  EXPECT_NE(CompileError("/a/***").message().find("invalid regex"), std::string::npos);
}

TEST(MatcherTest, LiteralAndWildcardPatternsAreNormalised) {
  EXPECT_EQ(Compile("example//kv/").pattern(), "/example/kv");
  EXPECT_EQ(Compile("data/*/").pattern(), "/data/*");
}

TEST(MatcherTest, RegexIsKeptByteForByte) {
  EXPECT_EQ(Compile("/logs//.*").pattern(), "/logs//.*");
}

TEST(MatcherTest, RejectsEmptyPattern) {
  EXPECT_EQ(CompileError("").code(), Code::kInvalidConfig);
}

TEST(MatcherTest, RejectsPathsThatBreakPathRules) {
  EXPECT_EQ(CompileError("/a/../b").code(), Code::kInvalidConfig);
  EXPECT_EQ(CompileError("/").code(), Code::kInvalidConfig);
  EXPECT_EQ(CompileError("/a\tb").code(), Code::kInvalidConfig);
}

TEST(MatcherTest, RejectsBadRegexWithRe2Message) {
  Status s = CompileError("/a/(b");
  EXPECT_EQ(s.code(), Code::kInvalidConfig);
  EXPECT_NE(s.message().find("/a/(b"), std::string::npos) << s;
  EXPECT_NE(s.message().find("missing )"), std::string::npos) << s;  // RE2's own words.
}

TEST(MatcherTest, LiteralMatchesOnlyItself) {
  Matcher m = Compile("/example/kv");
  EXPECT_TRUE(m.Matches("/example/kv"));
  EXPECT_FALSE(m.Matches("/example/kv/x"));
  EXPECT_FALSE(m.Matches("/example"));
  EXPECT_FALSE(Compile("/a.b").Matches("/axb"));
}

TEST(MatcherTest, RegexIsAnchoredAtBothEnds) {
  Matcher m = Compile("/profile/history/[^/]+");
  EXPECT_TRUE(m.Matches("/profile/history/alice"));
  EXPECT_FALSE(m.Matches("/profile/history/alice/x"));
  EXPECT_FALSE(m.Matches("/x/profile/history/alice"));
  EXPECT_FALSE(m.Matches("/profile/history/"));
}

TEST(MatcherTest, StarMatchesExactlyOneSegment) {
  Matcher m = Compile("/data/*");
  EXPECT_TRUE(m.Matches("/data/x"));
  EXPECT_FALSE(m.Matches("/data"));
  EXPECT_FALSE(m.Matches("/data/x/y"));
  EXPECT_FALSE(m.Matches("/other/x"));
  EXPECT_TRUE(Compile("/*/b").Matches("/a/b"));
  EXPECT_FALSE(Compile("/*/b").Matches("/a/c"));
}

TEST(MatcherTest, DoubleStarMatchesOneOrMoreSegments) {
  Matcher tail = Compile("/data/**");
  EXPECT_TRUE(tail.Matches("/data/x"));
  EXPECT_TRUE(tail.Matches("/data/x/y/z"));
  EXPECT_FALSE(tail.Matches("/data"));

  Matcher middle = Compile("/a/**/b");
  EXPECT_TRUE(middle.Matches("/a/x/b"));
  EXPECT_TRUE(middle.Matches("/a/x/y/b"));
  EXPECT_TRUE(middle.Matches("/a/b/b"));
  EXPECT_FALSE(middle.Matches("/a/b"));
  EXPECT_FALSE(middle.Matches("/a/x/b/c"));
}

TEST(MatcherTest, WildcardLiteralSegmentsAreLiteral) {
  Matcher m = Compile("/a.b/*");
  EXPECT_TRUE(m.Matches("/a.b/x"));
  EXPECT_FALSE(m.Matches("/axb/x"));
}

TEST(MatcherTest, LiteralPrefixLength) {
  EXPECT_EQ(Compile("/example/kv").literal_prefix_length(), 11u);
  EXPECT_EQ(Compile("/data/*").literal_prefix_length(), 6u);  // "/data/"
  EXPECT_EQ(Compile("/a/**/b").literal_prefix_length(), 3u);
  EXPECT_EQ(Compile("/**").literal_prefix_length(), 1u);
  EXPECT_EQ(Compile("/profile/history/[^/]+").literal_prefix_length(), 17u);
  EXPECT_EQ(Compile("/logs/.*").literal_prefix_length(), 6u);  // '.' ends the prefix.
  EXPECT_EQ(Compile("/logs*").literal_prefix_length(), 4u);    // 's' is optional: "/log".
  EXPECT_EQ(Compile("/ab+").literal_prefix_length(), 2u);
  EXPECT_EQ(Compile("/ab{2}").literal_prefix_length(), 2u);
  EXPECT_EQ(Compile("^/a").literal_prefix_length(), 0u);
}

TEST(MatcherTest, LiteralBeatsWildcardBeatsRegex) {
  Matcher literal = Compile("/a/b");
  Matcher wildcard = Compile("/a/b/c/d/*");  // A longer prefix does not beat a better kind.
  Matcher regex = Compile("/a/b/c/d/e/.*");
  EXPECT_LT(ComparePrecedence(literal, wildcard), 0);
  EXPECT_GT(ComparePrecedence(wildcard, literal), 0);
  EXPECT_LT(ComparePrecedence(wildcard, regex), 0);
  EXPECT_LT(ComparePrecedence(literal, regex), 0);
}

TEST(MatcherTest, LongerLiteralPrefixWins) {
  EXPECT_LT(ComparePrecedence(Compile("/data/logs/*"), Compile("/data/*")), 0);
  EXPECT_GT(ComparePrecedence(Compile("/**"), Compile("/data/**")), 0);
  EXPECT_LT(ComparePrecedence(Compile("/data/[a-z]+"), Compile("/da.*")), 0);
}

TEST(MatcherTest, EqualPrecedenceIsATie) {
  EXPECT_EQ(ComparePrecedence(Compile("/a/*"), Compile("/b/*")), 0);
  EXPECT_EQ(ComparePrecedence(Compile("/a/.*"), Compile("/b/.+")), 0);
}

TEST(MatcherTest, LiteralOverlapsIsExact) {
  EXPECT_TRUE(Overlap("/a/b", "/a/b"));
  EXPECT_FALSE(Overlap("/a/b", "/a/c"));
  EXPECT_TRUE(Overlap("/a/b", "/a/*"));
  EXPECT_FALSE(Overlap("/a", "/a/*"));
  EXPECT_TRUE(Overlap("/a/b", "/a/[a-z]"));
  EXPECT_FALSE(Overlap("/a/1", "/a/[a-z]"));
}

TEST(MatcherTest, WildcardOverlapsIsExact) {
  EXPECT_TRUE(Overlap("/a/*", "/*/b"));  // "/a/b"
  EXPECT_FALSE(Overlap("/a/*", "/b/*"));
  EXPECT_FALSE(Overlap("/a/*", "/a/*/*"));  // Different segment counts.
  EXPECT_TRUE(Overlap("/a/**", "/*/x/y"));  // "/a/x/y"
  EXPECT_FALSE(Overlap("/a/**", "/*"));     // "/a/**" needs two segments.
  EXPECT_TRUE(Overlap("/**/z", "/a/**"));   // "/a/z"
  EXPECT_FALSE(Overlap("/**/z", "/a/**/y"));
  EXPECT_TRUE(Overlap("/**/b/**", "/a/**/c"));  // "/a/b/x/c"
  EXPECT_FALSE(Overlap("/a/**/b", "/a/b"));
}

TEST(MatcherTest, RegexOverlapsRegexOnlyWhenIdentical) {
  EXPECT_TRUE(Overlap("/a/.*", "/a/.*"));
  // They do overlap ("/a/b"), but regex intersection is not attempted: documented limitation.
  EXPECT_FALSE(Overlap("/a/.*", "/a/[a-z]+"));
}

TEST(MatcherTest, WildcardOverlapsRegexWhenASamplePathMatches) {
  EXPECT_TRUE(Overlap("/logs/*", "/logs/.*"));
  EXPECT_TRUE(Overlap("/users/*", "/users/[0-9]+"));
  EXPECT_FALSE(Overlap("/logs/*", "/metrics/.*"));
}

TEST(MatcherTest, CopiesShareTheCompiledRegex) {
  // A short pattern, so that copying the pattern text allocates nothing either (small-string
  // storage): what is left to allocate is the compiled regex.
  Matcher original = Compile("/a/[0-9]+");
  const uint64_t before = allocations;
  Matcher copy = original;
  EXPECT_EQ(allocations - before, 0u) << "copying a regex matcher compiled or copied the regex";
  // The copy holds the regex on its own, not through the original.
  original = Compile("/other");
  EXPECT_TRUE(copy.Matches("/a/12"));
  EXPECT_FALSE(copy.Matches("/a/x"));
  EXPECT_EQ(copy.kind(), MatcherKind::kRegex);
}

}  // namespace
}  // namespace kvmesh::config
