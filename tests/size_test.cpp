// Byte sizes as written in database configs ("size: 100MB").
#include "config/size.hpp"

#include <gtest/gtest.h>

#include <string>

namespace kvmesh::config {
namespace {

uint64_t Parse(std::string_view text) {
  uint64_t bytes = 0xdeadbeef;
  Status s = ParseSize(text, &bytes);
  EXPECT_TRUE(s.ok()) << "\"" << text << "\": " << s;
  return bytes;
}

// Asserts that `text` is rejected as an invalid config naming the text; returns the message.
std::string ParseError(std::string_view text) {
  uint64_t bytes = 0;
  Status s = ParseSize(text, &bytes);
  EXPECT_EQ(s.code(), Code::kInvalidConfig) << "\"" << text << "\" parsed as " << bytes;
  EXPECT_NE(s.message().find("\"" + std::string(text) + "\""), std::string::npos) << s;
  return s.message();
}

TEST(SizeTest, DecimalUnits) {
  EXPECT_EQ(Parse("100MB"), 100'000'000u);
  EXPECT_EQ(Parse("1KB"), 1'000u);
  EXPECT_EQ(Parse("3GB"), 3'000'000'000u);
  EXPECT_EQ(Parse("2TB"), 2'000'000'000'000u);
}

TEST(SizeTest, BinaryUnits) {
  EXPECT_EQ(Parse("1KiB"), 1024u);
  EXPECT_EQ(Parse("100MiB"), 100u * 1024 * 1024);
  EXPECT_EQ(Parse("1GiB"), 1024u * 1024 * 1024);
  EXPECT_EQ(Parse("2TiB"), 2ull * 1024 * 1024 * 1024 * 1024);
}

TEST(SizeTest, BareNumberAndBAreBytes) {
  EXPECT_EQ(Parse("10"), 10u);
  EXPECT_EQ(Parse("10B"), 10u);
  EXPECT_EQ(Parse("0"), 0u);  // Parses; ConfigSet is what requires a size > 0.
}

TEST(SizeTest, SpacesBetweenNumberAndUnit) {
  EXPECT_EQ(Parse("100 MB"), 100'000'000u);
  EXPECT_EQ(Parse("1  KiB"), 1024u);
}

TEST(SizeTest, UnitsAreCaseInsensitive) {
  EXPECT_EQ(Parse("100mb"), 100'000'000u);
  EXPECT_EQ(Parse("1kib"), 1024u);
  EXPECT_EQ(Parse("1KIB"), 1024u);
  EXPECT_EQ(Parse("5b"), 5u);
}

TEST(SizeTest, FractionsAreExactAndRoundDown) {
  EXPECT_EQ(Parse("1.5KiB"), 1536u);
  EXPECT_EQ(Parse("1.1MB"), 1'100'000u);  // Would be 1099999 with binary floating point.
  EXPECT_EQ(Parse("0.5KB"), 500u);
  EXPECT_EQ(Parse("1.9B"), 1u);
  EXPECT_EQ(Parse("0.001KiB"), 1u);  // 1.024 bytes.
}

TEST(SizeTest, LargestValue) {
  EXPECT_EQ(Parse("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(Parse("16777215TiB"), 16777215ull << 40);
}

TEST(SizeTest, RejectsEmpty) {
  EXPECT_NE(ParseError("").find("empty"), std::string::npos);
  ParseError("   ");
}

TEST(SizeTest, RejectsMissingNumber) {
  ParseError("MB");
  ParseError("-1MB");
  ParseError(".5MB");
}

TEST(SizeTest, RejectsMalformedNumber) {
  EXPECT_NE(ParseError("1.2.3MB").find("malformed number"), std::string::npos);
  ParseError("1.MB");
}

TEST(SizeTest, RejectsUnknownUnit) {
  EXPECT_NE(ParseError("12XB").find("unknown unit \"XB\""), std::string::npos);
  ParseError("12 K");
  ParseError("12MBB");
  ParseError("1 2MB");
}

TEST(SizeTest, RejectsOverflow) {
  EXPECT_NE(ParseError("99999999999TB").find("too large"), std::string::npos);
  ParseError("18446744073709551616");
  ParseError("16777216TiB");  // 2^64 exactly.
  ParseError("99999999999999999999999999");
}

TEST(SizeTest, FormatSmallSizesAreJustBytes) {
  EXPECT_EQ(FormatSize(0), "0 B");
  EXPECT_EQ(FormatSize(1000), "1000 B");
  EXPECT_EQ(FormatSize(1023), "1023 B");
}

TEST(SizeTest, FormatAddsBinaryUnit) {
  EXPECT_EQ(FormatSize(1024), "1024 B (1 KiB)");
  EXPECT_EQ(FormatSize(1536), "1536 B (1.5 KiB)");
  EXPECT_EQ(FormatSize(104857600), "104857600 B (100 MiB)");
  EXPECT_EQ(FormatSize(100'000'000), "100000000 B (95.4 MiB)");
  EXPECT_EQ(FormatSize(1ull << 40), "1099511627776 B (1 TiB)");
}

TEST(SizeTest, FormatRoundingCarriesIntoNextUnit) {
  EXPECT_EQ(FormatSize(1024 * 1024 - 1), "1048575 B (1 MiB)");
}

TEST(SizeTest, FormatLargestValue) {
  EXPECT_EQ(FormatSize(UINT64_MAX), "18446744073709551615 B (16 EiB)");
}

}  // namespace
}  // namespace kvmesh::config
