// Read levels without a cluster: the session token's text form and merging, its coverage by a
// replica's version vector, and the conflict rule a quorum read compares records by.
#include <gtest/gtest.h>

#include "common/read_levels.hpp"
#include "storage/database_store.hpp"

namespace kvmesh {
namespace {

TEST(SessionTokenTest, MergesToTheHighestCounterPerOriginAndRoundTripsAsText) {
  SessionToken a;
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(a.ToString(), "");
  a.Add(0xab, 3);
  a.Add(0xab, 2);  // an older write of the same origin adds nothing
  a.Add(0x1, 7);
  SessionToken b;
  b.Add(0xab, 5);
  b.Add(0xff, 1);
  a.Merge(b);
  EXPECT_EQ(a.ToString(), "1:7,ab:5,ff:1");
  SessionToken parsed;
  std::string error;
  ASSERT_TRUE(SessionToken::Parse(a.ToString(), &parsed, &error)) << error;
  EXPECT_EQ(parsed, a);
  ASSERT_TRUE(SessionToken::Parse("", &parsed, &error)) << error;
  EXPECT_TRUE(parsed.empty());
}

TEST(SessionTokenTest, MalformedTextIsRefusedNamingThePart) {
  for (const char* bad :
       {"x", "1", "1:", ":1", "1:0", "1:2,", "1:2,,3:4", "12345678901234567:1", "1:2;3:4", "g:1"}) {
    SessionToken out;
    out.Add(9, 9);
    std::string error;
    EXPECT_FALSE(SessionToken::Parse(bad, &out, &error)) << bad;
    EXPECT_NE(error.find("session token \"" + std::string(bad) + "\" is malformed"),
              std::string::npos)
        << error;
    EXPECT_EQ(out.ToString(), "9:9") << "left unchanged on error";
  }
}

// A token is small (a dot per database copy the session wrote through): a huge one is refused
// at once, before it is parsed into a map, and the error does not echo it back.
TEST(SessionTokenTest, AnOversizedTokenIsRefusedNamingTheLimit) {
  std::string huge;
  for (int i = 1; huge.size() < (1u << 20); ++i) huge += std::to_string(i) + ":1,";
  huge += "1:1";
  SessionToken out;
  std::string error;
  EXPECT_FALSE(SessionToken::Parse(huge, &out, &error));
  EXPECT_NE(error.find(std::to_string(SessionToken::kMaxBytes)), std::string::npos) << error;
  EXPECT_LT(error.size(), 300u);
  // Short pairs fit the byte limit but not the dot limit.
  std::string many;
  for (size_t i = 1; i <= SessionToken::kMaxDots + 1; ++i) {
    many += (i > 1 ? "," : "") + std::to_string(i) + ":1";
  }
  ASSERT_LE(many.size(), SessionToken::kMaxBytes);
  EXPECT_FALSE(SessionToken::Parse(many, &out, &error));
  EXPECT_NE(error.find("more than " + std::to_string(SessionToken::kMaxDots) + " dots"),
            std::string::npos)
      << error;
  EXPECT_LT(error.size(), 300u);
}

TEST(SessionTokenTest, AVectorCoversATokenWhenItsBaseReachesEveryOrigin) {
  SessionToken token;
  token.Add(1, 3);
  token.Add(2, 1);
  storage::VersionVector vector;
  EXPECT_FALSE(storage::CoversToken(vector, token));
  EXPECT_TRUE(storage::CoversToken(vector, SessionToken()));
  for (uint64_t c = 1; c <= 3; ++c) vector.Add({1, c});
  EXPECT_FALSE(storage::CoversToken(vector, token));  // nothing of origin 2 yet
  vector.Add({2, 2});  // out of order: counter 1 of origin 2 is still missing
  EXPECT_FALSE(storage::CoversToken(vector, token));
  vector.Add({2, 1});
  EXPECT_TRUE(storage::CoversToken(vector, token));
  token.Add(1, 4);
  EXPECT_FALSE(storage::CoversToken(vector, token));
}

TEST(ReadLevelsTest, ReadLevelsParseWithAClearError) {
  ReadConsistency level = ReadConsistency::kEventual;
  EXPECT_TRUE(ParseReadLevel("quorum", &level).ok());
  EXPECT_EQ(level, ReadConsistency::kQuorum);
  EXPECT_TRUE(ParseReadLevel("read_your_writes", &level).ok());
  EXPECT_EQ(level, ReadConsistency::kReadYourWrites);
  Status bad = ParseReadLevel("Quorum", &level);
  EXPECT_EQ(bad.code(), Code::kInvalidArgument);
  EXPECT_EQ(bad.message(),
            "unknown read level \"Quorum\": use eventual, read_your_writes or quorum");
  EXPECT_EQ(level, ReadConsistency::kReadYourWrites);
}

TEST(ReadLevelsTest, QuorumComparesRecordsByTheConflictRule) {
  KeyRecord missing;
  KeyRecord old_value{true, true, "old", 100, 7, 1};
  KeyRecord newer_delete{true, false, "", 200, 3, 1};
  KeyRecord same_time_higher_origin{true, true, "x", 100, 8, 1};
  EXPECT_TRUE(storage::NewerRecord(old_value, missing));
  EXPECT_FALSE(storage::NewerRecord(missing, old_value));
  EXPECT_TRUE(storage::NewerRecord(newer_delete, old_value));
  EXPECT_FALSE(storage::NewerRecord(old_value, newer_delete));
  EXPECT_TRUE(storage::NewerRecord(same_time_higher_origin, old_value));
  EXPECT_FALSE(storage::NewerRecord(old_value, old_value));
}

}  // namespace
}  // namespace kvmesh
