// The key and database path rules of common/path.hpp: one spelling per key, no aliasing.
#include "common/path.hpp"
#include "common/address.hpp"

#include <gtest/gtest.h>

#include <string>

namespace kvmesh {
namespace {

std::string Key(std::string_view raw) {
  std::string out;
  Status s = NormalizeKey(raw, &out);
  EXPECT_TRUE(s.ok()) << "key \"" << raw << "\": " << s;
  return out;
}

std::string DbPath(std::string_view raw) {
  std::string out;
  Status s = NormalizeDatabasePath(raw, &out);
  EXPECT_TRUE(s.ok()) << "database path \"" << raw << "\": " << s;
  return out;
}

Code KeyError(std::string_view raw) {
  std::string out;
  return NormalizeKey(raw, &out).code();
}

Code DbPathError(std::string_view raw) {
  std::string out;
  return NormalizeDatabasePath(raw, &out).code();
}

TEST(PathTest, AddsLeadingSlash) {
  EXPECT_EQ(Key("users/1"), "/users/1");
  EXPECT_EQ(DbPath("profile/history"), "/profile/history");
}

TEST(PathTest, CollapsesRepeatedSlashes) {
  EXPECT_EQ(Key("/a//b"), "/a/b");
  EXPECT_EQ(Key("///a///b"), "/a/b");
}

TEST(PathTest, DropsTrailingSlash) {
  EXPECT_EQ(Key("/a/b/"), "/a/b");
  EXPECT_EQ(Key("/a/b///"), "/a/b");
}

TEST(PathTest, AllSpellingsOfOneKeyAreEqual) {
  EXPECT_EQ(Key("test"), "/test");
  EXPECT_EQ(Key("/test"), "/test");
  EXPECT_EQ(Key("test/"), "/test");
  EXPECT_EQ(Key("//test//"), "/test");
}

TEST(PathTest, RejectsDotSegments) {
  EXPECT_EQ(KeyError("/a/./b"), Code::kInvalidKey);
  EXPECT_EQ(KeyError("/a/../b"), Code::kInvalidKey);
  EXPECT_EQ(KeyError(".."), Code::kInvalidKey);
  EXPECT_EQ(DbPathError("/db/."), Code::kInvalidKey);
}

TEST(PathTest, DotsInsideSegmentsAreOrdinary) {
  EXPECT_EQ(Key("/a.b/..c/d..."), "/a.b/..c/d...");
}

TEST(PathTest, RejectsEmptyAndSlashOnly) {
  EXPECT_EQ(KeyError(""), Code::kInvalidKey);
  EXPECT_EQ(KeyError("/"), Code::kInvalidKey);
  EXPECT_EQ(KeyError("///"), Code::kInvalidKey);
  EXPECT_EQ(DbPathError(""), Code::kInvalidKey);
}

TEST(PathTest, KeysKeepNulAndHighBytes) {
  const std::string raw("/a\0b/\xff", 6);
  std::string out;
  ASSERT_TRUE(NormalizeKey(raw, &out).ok());
  EXPECT_EQ(out, raw);
  EXPECT_EQ(out.size(), 6u);
}

TEST(PathTest, KeysAllowControlCharactersButDatabasePathsDoNot) {
  EXPECT_EQ(Key("/a\nb"), "/a\nb");
  EXPECT_EQ(DbPathError("/a\nb"), Code::kInvalidKey);
  EXPECT_EQ(DbPathError(std::string("/a\0b", 4)), Code::kInvalidKey);
  EXPECT_EQ(DbPathError("/a\x7f"), Code::kInvalidKey);
  EXPECT_EQ(DbPath("/caf\xc3\xa9"), "/caf\xc3\xa9");  // UTF-8 is not a control character.
}

TEST(PathTest, KeyLengthLimitAppliesAfterNormalisation) {
  std::string longest = "/" + std::string(kMaxKeyBytes - 1, 'k');
  EXPECT_EQ(Key(longest), longest);
  EXPECT_EQ(KeyError(longest + "k"), Code::kInvalidKey);
  // Extra slashes that normalisation removes do not count.
  EXPECT_EQ(Key("//" + longest.substr(1) + "//"), longest);
}

TEST(PathTest, DatabasePathLengthLimit) {
  std::string longest = "/" + std::string(kMaxDatabasePathBytes - 1, 'd');
  EXPECT_EQ(DbPath(longest), longest);
  EXPECT_EQ(DbPathError(longest + "d"), Code::kInvalidKey);
}

TEST(PathTest, PrefixEmptyAndSlashMeanEverything) {
  std::string out = "unchanged";
  ASSERT_TRUE(NormalizePrefix("", &out).ok());
  EXPECT_EQ(out, "");
  ASSERT_TRUE(NormalizePrefix("/", &out).ok());
  EXPECT_EQ(out, "");
  ASSERT_TRUE(NormalizePrefix("test/", &out).ok());
  EXPECT_EQ(out, "/test");
}

TEST(PathTest, KeyHasPrefixMatchesWholeSegments) {
  EXPECT_TRUE(KeyHasPrefix("/test", "/test"));
  EXPECT_TRUE(KeyHasPrefix("/test/a", "/test"));
  EXPECT_TRUE(KeyHasPrefix("/test/a/b", "/test/a"));
  EXPECT_FALSE(KeyHasPrefix("/testing", "/test"));
  EXPECT_FALSE(KeyHasPrefix("/tes", "/test"));
  EXPECT_FALSE(KeyHasPrefix("/other/test", "/test"));
}

TEST(PathTest, EmptyPrefixMatchesEveryKey) {
  EXPECT_TRUE(KeyHasPrefix("/a", ""));
  EXPECT_TRUE(KeyHasPrefix(std::string("/\0", 2), ""));
}

TEST(PathTest, QuoteKeepsPrintableAsciiAndEscapesTheRest) {
  EXPECT_EQ(Quote("/users/1"), "\"/users/1\"");
  EXPECT_EQ(Quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(Quote(std::string("a\nb\0\xff", 5)), "\"a\\nb\\x00\\xff\"");
}

TEST(PathTest, QuoteCutsLongText) {
  EXPECT_EQ(Quote(std::string(200, 'k')), "\"" + std::string(120, 'k') + "...\"");
  EXPECT_EQ(Quote(std::string(120, 'k')), "\"" + std::string(120, 'k') + "\"");
}

}  // namespace
}  // namespace kvmesh

namespace kvmesh {
namespace {

TEST(AddressTest, ParsesHostPortAndSaysWhatIsWrong) {
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:7370", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 7370);
  ASSERT_TRUE(ParseHostPort("[::1]:80", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  for (const char* bad : {"", "7370", ":7370", "host:", "host:0", "host:65536", "host:12x"}) {
    Status s = ParseHostPort(bad, &host, &port);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("expected host:port"), std::string::npos) << s;
  }
}

// Only loopback keeps a plaintext port private; anything else counts as exposed.
TEST(AddressTest, LoopbackHostsAreOnlyThoseOfThisMachine) {
  for (const char* local :
       {"127.0.0.1", "127.1.2.3", "localhost", "LocalHost", "::1", "[::1]", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(IsLoopbackHost(local)) << local;
  }
  for (const char* exposed :
       {"0.0.0.0", "::", "[::]", "10.0.0.1", "128.0.0.1", "192.168.1.2", "::2", "::ffff:10.0.0.1",
        "example.com", "localhost.example.com", "127.0.0.1.example.com", ""}) {
    EXPECT_FALSE(IsLoopbackHost(exposed)) << exposed;
  }
}

}  // namespace
}  // namespace kvmesh
